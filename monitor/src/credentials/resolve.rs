//! Resolving the catalogue to the files that exist now, by device and inode.
//!
//! Globs are expanded directory by directory: literal components are joined without
//! listing anything, `*` lists one directory, `**` at most four levels. Tails such as
//! `.env` or `*.key` are searched for only in homes and in the project directories one
//! and two levels below them (and below `/srv`, `/opt`, ...), skipping dependency trees,
//! virtual environments and hidden directories: files elsewhere are still caught by name
//! in the kernel and by path in userspace. One unreadable directory costs only what is
//! inside it; its error is collected, never fatal.

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    fs::{self, FileType},
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    time::Instant,
};

use monitor_common::{FileKey, kernel_dev};

use super::{
    Anchor, Category, CredentialCatalog,
    pattern::{MAX_ANY_DEPTH, Segment, components},
};

/// Entries read from one directory at most (a runaway directory must not stall start-up).
const MAX_DIR_ENTRIES: usize = 4096;
/// Directory levels below a home or project root searched for tails (`.env`, `*.key`).
const PROJECT_DEPTH: usize = 2;
/// Directories listed at most per search root.
const MAX_PROJECT_DIRS: usize = 2000;
/// Directories outside homes where projects and deployed apps usually live.
const PROJECT_ROOTS: &[&str] = &["srv", "opt", "app", "workspace", "var/www", "builds"];
/// Directories never searched for tails: dependencies and build output, not projects.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    "__pycache__",
    "site-packages",
    "dist-packages",
    "venv",
    "env",
    "target",
    "vendor",
    "snap",
];

/// A catalogued credential that exists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCredential {
    pub path: PathBuf,
    pub category: Category,
    pub key: FileKey,
}

/// What a resolution found, and what it could not look at.
#[derive(Debug, Default)]
pub struct Resolution {
    pub credentials: Vec<ResolvedCredential>,
    /// One message per directory or file that could not be read.
    pub errors: Vec<String>,
}

impl CredentialCatalog {
    /// The credential files that exist now on this host, under `homes` and the
    /// catalogue's own homes. Errors are logged, not returned: see [`Self::resolve_in`].
    pub fn resolve(&self, homes: &[PathBuf]) -> Vec<ResolvedCredential> {
        let start = Instant::now();
        let resolution = self.resolve_in(Path::new("/"), homes);
        if !resolution.errors.is_empty() {
            tracing::warn!(
                count = resolution.errors.len(),
                first = %resolution.errors[0],
                "some credential locations could not be read; files there are matched by name only"
            );
        }
        for e in &resolution.errors {
            tracing::debug!(error = %e, "credential location not readable");
        }
        tracing::debug!(
            files = resolution.credentials.len(),
            elapsed_ms = start.elapsed().as_millis(),
            "credentials resolved"
        );
        resolution.credentials
    }

    /// Resolves absolute patterns under `root` (`/` on a host, a container or test root
    /// otherwise) and home patterns under each of `homes` (full paths, `root` included)
    /// and the catalogue's own homes.
    pub fn resolve_in(&self, root: &Path, homes: &[PathBuf]) -> Resolution {
        let mut all_homes: Vec<&PathBuf> = Vec::new();
        for h in homes.iter().chain(&self.homes) {
            if !all_homes.contains(&h) {
                all_homes.push(h);
            }
        }
        let mut r = Resolver::new(self, &all_homes);
        for entry in &self.entries {
            let segments = entry.pattern.segments();
            match entry.pattern.anchor() {
                Anchor::Root => r.expand(root.to_path_buf(), segments, entry.category),
                Anchor::Home => {
                    for home in &all_homes {
                        r.expand((*home).clone(), segments, entry.category);
                    }
                }
                Anchor::Tail => {}
            }
        }
        let project_roots = PROJECT_ROOTS.iter().map(|p| root.join(p));
        for base in all_homes.iter().map(|h| (*h).clone()).chain(project_roots) {
            r.search_tails(&base);
        }
        r.finish()
    }

    /// The credential files under one home (home patterns and the bounded tail search),
    /// for a home that appeared after start.
    pub fn resolve_home(&self, home: &Path) -> Resolution {
        let home = home.to_path_buf();
        let mut r = Resolver::new(self, &[&home]);
        for entry in self
            .entries
            .iter()
            .filter(|e| e.pattern.anchor() == Anchor::Home)
        {
            r.expand(home.clone(), entry.pattern.segments(), entry.category);
        }
        r.search_tails(&home);
        r.finish()
    }
}

struct Resolver<'a> {
    catalog: &'a CredentialCatalog,
    homes: Vec<Vec<&'a [u8]>>,
    /// Single-component tail patterns, searched for in project directories.
    tails: Vec<(&'a Segment, Category)>,
    seen: HashSet<FileKey>,
    /// Directories already reported unreadable: one message each, not one per pattern.
    failed: HashSet<PathBuf>,
    out: Resolution,
}

impl<'a> Resolver<'a> {
    fn new(catalog: &'a CredentialCatalog, homes: &[&'a PathBuf]) -> Self {
        let tails = catalog
            .entries
            .iter()
            .filter(|e| e.pattern.anchor() == Anchor::Tail && e.pattern.segments().len() == 1)
            .map(|e| (&e.pattern.segments()[0], e.category))
            .collect();
        Self {
            catalog,
            homes: homes.iter().map(|h| components(h)).collect(),
            tails,
            seen: HashSet::new(),
            failed: HashSet::new(),
            out: Resolution::default(),
        }
    }

    fn finish(self) -> Resolution {
        self.out
    }

    /// Expands `segments` below `dir`, recording the regular files found.
    fn expand(&mut self, dir: PathBuf, segments: &[Segment], category: Category) {
        self.expand_bounded(dir, segments, category, MAX_ANY_DEPTH);
    }

    fn expand_bounded(
        &mut self,
        dir: PathBuf,
        segments: &[Segment],
        category: Category,
        depth_left: usize,
    ) {
        let Some((segment, rest)) = segments.split_first() else {
            self.consider(dir, category);
            return;
        };
        match segment {
            Segment::Literal(name) => {
                let next = dir.join(OsStr::from_bytes(name));
                self.expand_bounded(next, rest, category, depth_left);
            }
            Segment::Glob(_) => {
                for (name, _) in self.list(&dir) {
                    if segment.matches(name.as_encoded_bytes()) {
                        self.expand_bounded(dir.join(&name), rest, category, depth_left);
                    }
                }
            }
            Segment::AnyDepth => {
                // Zero directories, then one more level while the budget lasts. Symlinked
                // directories are not followed here, so a link loop cannot multiply work.
                self.expand_bounded(dir.clone(), rest, category, depth_left);
                if depth_left > 0 {
                    for (name, file_type) in self.list(&dir) {
                        if file_type.is_dir() {
                            self.expand_bounded(
                                dir.join(&name),
                                segments,
                                category,
                                depth_left - 1,
                            );
                        }
                    }
                }
            }
        }
    }

    /// Searches `base` and the project directories below it for single-component tails.
    fn search_tails(&mut self, base: &Path) {
        if self.tails.is_empty() {
            return;
        }
        let mut queue = vec![(base.to_path_buf(), 0)];
        let mut listed = 0;
        while let Some((dir, level)) = queue.pop() {
            if listed == MAX_PROJECT_DIRS {
                self.out.errors.push(format!(
                    "stopped searching {} for .env and key files after {MAX_PROJECT_DIRS} directories",
                    base.display()
                ));
                return;
            }
            listed += 1;
            for (name, file_type) in self.list(&dir) {
                let bytes = name.as_encoded_bytes();
                if file_type.is_dir() {
                    if level < PROJECT_DEPTH && is_project_dir(&dir, &name) {
                        queue.push((dir.join(&name), level + 1));
                    }
                } else if let Some(&(_, category)) =
                    self.tails.iter().find(|(s, _)| s.matches(bytes))
                {
                    self.consider(dir.join(&name), category);
                }
            }
        }
    }

    /// Records `path` if it is a regular file (after symlinks), not excluded and not
    /// already recorded under another name.
    fn consider(&mut self, path: PathBuf, category: Category) {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if is_absent(&e) => return,
            Err(e) => {
                if let Some(dir) = path.parent() {
                    self.fail(dir, || format!("cannot stat {}: {e}", path.display()));
                }
                return;
            }
        };
        if !meta.is_file() || self.catalog.is_excluded(&components(&path), &self.homes) {
            return;
        }
        let key = file_key(meta.dev(), meta.ino());
        if self.seen.insert(key) {
            self.out.credentials.push(ResolvedCredential {
                path,
                category,
                key,
            });
        }
    }

    /// Records an error about `dir`, unless it or a directory above it was reported.
    fn fail(&mut self, dir: &Path, message: impl FnOnce() -> String) {
        if dir.ancestors().any(|a| self.failed.contains(a)) {
            return;
        }
        self.failed.insert(dir.to_path_buf());
        self.out.errors.push(message());
    }

    /// The entries of `dir` (at most `MAX_DIR_ENTRIES`), with their own type (symlinks
    /// not followed). A missing directory is empty; other errors are collected.
    fn list(&mut self, dir: &Path) -> Vec<(OsString, FileType)> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => return Vec::new(),
            Err(e) => {
                self.fail(dir, || format!("cannot list {}: {e}", dir.display()));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            if out.len() == MAX_DIR_ENTRIES {
                self.out.errors.push(format!(
                    "{} has more than {MAX_DIR_ENTRIES} entries; only the first were checked",
                    dir.display()
                ));
                break;
            }
            match entry.and_then(|e| Ok((e.file_name(), e.file_type()?))) {
                Ok(item) => out.push(item),
                Err(e) => self
                    .out
                    .errors
                    .push(format!("cannot read an entry of {}: {e}", dir.display())),
            }
        }
        out
    }
}

/// Whether a directory found during the tail search may hold a project: not hidden, not a
/// dependency or build tree, not a virtual environment.
fn is_project_dir(parent: &Path, name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    if bytes.first() == Some(&b'.') || SKIP_DIRS.iter().any(|s| s.as_bytes() == bytes) {
        return false;
    }
    !parent.join(name).join("pyvenv.cfg").exists()
}

/// Errors that mean "nothing there" rather than "could not look".
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The kernel's identity of a file from a userspace `st_dev` and inode number.
pub fn file_key(st_dev: u64, ino: u64) -> FileKey {
    FileKey::new(kernel_dev(libc::major(st_dev), libc::minor(st_dev)), ino)
}
