//! Building the inventory: interpreters, the directories their `site` module reads, and
//! every hook in them, deduplicated by canonical path.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    interpreters::{DirRole, Interpreter, interpreter},
    kind::{HookKind, ModuleForm, module_entry, site_file_kind},
    locate::{candidates, default_homes},
    owners::{OwnerIndex, normalize},
    record::{Hook, read_hook_in},
    rooted::Root,
    text::{display_path, serialize_path},
};

/// Directories added by `.pth` path lines that are searched for `sitecustomize`.
const MAX_PTH_DIRS: usize = 512;

/// What to inspect.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// `/` normally; `/proc/<pid>/root` for a container, or a test tree.
    pub root: PathBuf,
    /// Home directories (user sites, pyenv, conda, venvs). Empty: `/root`, `/home/*` and
    /// login accounts from `/etc/passwd` under `root`.
    pub homes: Vec<PathBuf>,
    /// More site dirs (their `.pth` files are read whatever the directory is called).
    pub extra_site_dirs: Vec<PathBuf>,
    /// More interpreter executables (bundled Pythons in unusual places).
    pub extra_interpreters: Vec<PathBuf>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            homes: Vec::new(),
            extra_site_dirs: Vec::new(),
            extra_interpreters: Vec::new(),
        }
    }
}

/// A directory searched for hooks.
#[derive(Clone, Debug, Serialize)]
pub struct SiteDir {
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// `3.X` of the first interpreter that reads it (`/usr/lib/python3/dist-packages` is
    /// shared), `None` for extra dirs.
    pub interpreter_version: Option<String>,
    /// A per-user site dir.
    pub user: bool,
    /// `.pth`/`.start` files here run. `false` for directories that are only on `sys.path`
    /// (the stdlib dir, `/etc/python3.X`, dirs added by `.pth` lines), where only
    /// `sitecustomize`/`usercustomize` matter.
    pub pth: bool,
}

/// Everything found, for `pthwatch scan` and for the daemon's kernel maps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inventory {
    pub interpreters: Vec<Interpreter>,
    pub site_dirs: Vec<SiteDir>,
    pub hooks: Vec<Hook>,
    /// Unreadable directories and files, each a message saying what and where.
    pub errors: Vec<String>,
}

impl Inventory {
    /// Inspects the filesystem under `opts.root`. Never runs an interpreter (that would
    /// execute the very hooks being inspected) and never fails: what cannot be read is
    /// listed in `errors`.
    pub fn discover(opts: &DiscoverOptions) -> Self {
        let root = Root::new(&opts.root);
        let mut inv = Self::default();
        let homes = if opts.homes.is_empty() {
            default_homes(&root)
        } else {
            opts.homes.clone()
        };
        inv.interpreters =
            find_interpreters(&root, &homes, &opts.extra_interpreters, &mut inv.errors);
        let mut dirs = DirSet::default();
        for interp in &inv.interpreters {
            for (dir, role) in &interp.dirs {
                dirs.add(&root, dir, *role, interp.version.clone());
            }
        }
        for dir in &opts.extra_site_dirs {
            if root.host_path(dir).is_dir() {
                dirs.add(&root, dir, DirRole::Site, None);
            } else {
                inv.errors.push(format!(
                    "extra site dir {} is not a directory",
                    display_path(dir)
                ));
            }
        }
        let mut scan = Scan {
            root: &root,
            owners: OwnerIndex::default(),
            seen: HashSet::new(),
            hooks: Vec::new(),
            errors: Vec::new(),
        };
        for dir in &dirs.list {
            scan.dir(dir);
        }
        // A `.pth` path line puts its directory on `sys.path` before `sitecustomize` is
        // imported, so an inert-looking `.pth` can bring in a `sitecustomize` from anywhere.
        let added = pth_added_dirs(&scan.hooks, &dirs);
        for (dir, version) in added.into_iter().take(MAX_PTH_DIRS) {
            if let Some(i) = dirs.add(&root, &dir, DirRole::Module, version) {
                let entry = dirs.list[i].clone();
                scan.dir(&entry);
            }
        }
        inv.site_dirs = dirs.list;
        scan.hooks.sort_by(|a, b| a.path.cmp(&b.path));
        inv.hooks = scan.hooks;
        inv.errors.extend(scan.errors);
        inv.errors.extend(scan.owners.errors);
        inv
    }
}

/// Interpreters, deduplicated by (executable inode, prefix): `/usr/bin/python3` and
/// `/usr/bin/python3.11` are one, a venv on top of it is another.
fn find_interpreters(
    root: &Root,
    homes: &[PathBuf],
    extra: &[PathBuf],
    errors: &mut Vec<String>,
) -> Vec<Interpreter> {
    let mut exes: Vec<PathBuf> = candidates(root, homes, errors)
        .into_iter()
        .map(|c| c.exe)
        .collect();
    exes.extend(extra.iter().cloned());
    let mut runmain = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for exe in exes {
        match interpreter(root, &exe, homes, &mut runmain) {
            Ok(Some(i)) => {
                if seen.insert((i.file_id, i.prefix.clone())) {
                    out.push(i);
                }
            }
            Ok(None) if extra.contains(&exe) => {
                errors.push(format!(
                    "extra interpreter {} is not an executable file",
                    display_path(&exe)
                ));
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Site dirs deduplicated by canonical path, in discovery order.
#[derive(Default)]
struct DirSet {
    list: Vec<SiteDir>,
    by_canonical: HashMap<PathBuf, usize>,
}

impl DirSet {
    /// Adds `dir` (which must exist); returns its index when it is new.
    fn add(
        &mut self,
        root: &Root,
        dir: &Path,
        role: DirRole,
        version: Option<String>,
    ) -> Option<usize> {
        let canonical = root.canonicalize(dir).ok()?;
        if let Some(&i) = self.by_canonical.get(&canonical) {
            let known = &mut self.list[i];
            known.pth |= role != DirRole::Module;
            known.user |= role == DirRole::User;
            return None;
        }
        self.by_canonical.insert(canonical, self.list.len());
        self.list.push(SiteDir {
            path: dir.to_owned(),
            interpreter_version: version,
            user: role == DirRole::User,
            pth: role != DirRole::Module,
        });
        Some(self.list.len() - 1)
    }
}

/// Directories named by `.pth` path lines (relative ones joined to the site dir, as
/// `site.makepath` does), with the version of the site dir they came from.
fn pth_added_dirs(hooks: &[Hook], dirs: &DirSet) -> Vec<(PathBuf, Option<String>)> {
    let version_of = |site: &Path| {
        dirs.list
            .iter()
            .find(|d| d.path == site)
            .and_then(|d| d.interpreter_version.clone())
    };
    hooks
        .iter()
        .filter(|h| h.kind == HookKind::Pth)
        .flat_map(|h| {
            let site = h.path.parent().unwrap_or(Path::new("/")).to_owned();
            let version = version_of(&site);
            h.path_entries
                .iter()
                .map(move |e| (normalize(&site.join(e)), version.clone()))
        })
        .collect()
}

/// State of one pass over the site dirs.
struct Scan<'a> {
    root: &'a Root,
    owners: OwnerIndex,
    /// Canonical paths of hooks already read.
    seen: HashSet<PathBuf>,
    hooks: Vec<Hook>,
    errors: Vec<String>,
}

impl Scan<'_> {
    fn dir(&mut self, dir: &SiteDir) {
        let entries = match fs::read_dir(self.root.host_path(&dir.path)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => {
                self.errors.push(format!(
                    "cannot list site dir {}: {e}",
                    display_path(&dir.path)
                ));
                return;
            }
        };
        let mut names: Vec<OsString> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            if let Some((kind, path)) = self.hook_at(dir, &name) {
                self.read(&path, kind);
            }
        }
    }

    /// Whether `name` in `dir` is a hook, and the file to read for it.
    fn hook_at(&self, dir: &SiteDir, name: &std::ffi::OsStr) -> Option<(HookKind, PathBuf)> {
        let path = dir.path.join(name);
        if dir.pth
            && let Some(kind) = site_file_kind(name)
        {
            return Some((kind, path));
        }
        let (kind, form) = module_entry(name)?;
        if form != ModuleForm::Package {
            return Some((kind, path));
        }
        let init = path.join("__init__.py");
        self.root.host_path(&init).is_file().then_some((kind, init))
    }

    fn read(&mut self, path: &Path, kind: HookKind) {
        let canonical = self
            .root
            .canonicalize(path)
            .unwrap_or_else(|_| path.to_owned());
        if !self.seen.insert(canonical) {
            return;
        }
        match read_hook_in(self.root, path, kind, &mut self.owners) {
            Ok(hook) => self.hooks.push(hook),
            Err(e) => self.errors.push(e.to_string()),
        }
    }
}

#[cfg(test)]
#[path = "discover_tests.rs"]
mod tests;
