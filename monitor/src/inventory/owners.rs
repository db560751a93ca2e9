//! Which installed distribution ships a hook, from the installers' own records:
//! `*.dist-info/RECORD` (wheels, PEP 376) and `*.egg-info/installed-files.txt` (legacy pip).
//! A hook nobody lists was dropped there by something other than an installer.
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Read as _,
    path::{Component, Path, PathBuf},
};

use super::{kind::is_hook_name, rooted::Root, text::display_path};

/// Most bytes read from a `METADATA`/`PKG-INFO` (the headers come first).
const METADATA_CAP: u64 = 64 * 1024;
/// Most bytes read from one `RECORD` (the largest real ones are a few MiB).
const RECORD_CAP: u64 = 64 * 1024 * 1024;

/// An installed distribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub version: String,
    /// `direct_url.json` says `"editable": true` (PEP 610): installed with `pip install -e`.
    pub editable: bool,
}

impl Owner {
    /// `name==version`.
    pub fn label(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// Hook path (in-root, normalised) -> owning distribution, built once per site dir.
#[derive(Debug, Default)]
pub(crate) struct OwnerIndex {
    files: HashMap<PathBuf, Owner>,
    /// (site dir, top-level module or package name) -> the distribution that installed it.
    tops: HashMap<(PathBuf, String), Owner>,
    indexed: HashSet<PathBuf>,
    /// Records that exist but could not be read, each a message for the inventory.
    pub errors: Vec<String>,
}

impl OwnerIndex {
    /// The distribution listing `hook` (an in-root path). Indexes the hook's directory
    /// first if that has not been done; records elsewhere that reach it with `../` count
    /// once their own site dir has been indexed.
    pub(crate) fn owner_of(&mut self, root: &Root, hook: &Path) -> Option<&Owner> {
        let mut dir = hook.parent()?;
        // `sitecustomize/__init__.py` is listed relative to the dir holding the package.
        if hook.file_name().is_some_and(|n| n == "__init__.py") {
            dir = dir.parent()?;
        }
        self.index_site_dir(root, dir);
        self.files.get(&normalize(hook))
    }

    /// The distribution that installed the top-level module or package `top` in
    /// `site_dir` (an in-root path), by its record.
    pub(crate) fn module_owner(
        &mut self,
        root: &Root,
        site_dir: &Path,
        top: &str,
    ) -> Option<&Owner> {
        self.index_site_dir(root, site_dir);
        self.tops.get(&(normalize(site_dir), top.to_owned()))
    }

    /// Reads every record in `site_dir` (once).
    pub(crate) fn index_site_dir(&mut self, root: &Root, site_dir: &Path) {
        if !self.indexed.insert(site_dir.to_owned()) {
            return;
        }
        let Ok(entries) = fs::read_dir(root.host_path(site_dir)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let meta_dir = site_dir.join(entry.file_name());
            if let Some(stem) = name.strip_suffix(".dist-info") {
                self.index_record(
                    root, site_dir, site_dir, &meta_dir, stem, "RECORD", "METADATA",
                );
            } else if let Some(stem) = name.strip_suffix(".egg-info") {
                // installed-files.txt paths are relative to the egg-info dir itself.
                self.index_record(
                    root,
                    site_dir,
                    &meta_dir,
                    &meta_dir,
                    stem,
                    "installed-files.txt",
                    "PKG-INFO",
                );
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one record's coordinates")]
    fn index_record(
        &mut self,
        root: &Root,
        site_dir: &Path,
        base: &Path,
        meta_dir: &Path,
        stem: &str,
        record: &str,
        metadata: &str,
    ) {
        let host_meta = root.host_path(meta_dir);
        let text = match read_capped(&host_meta.join(record), RECORD_CAP) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                let at = display_path(&meta_dir.join(record));
                self.errors
                    .push(format!("cannot read installer record {at}: {e}"));
                return;
            }
        };
        let owner = read_owner(&host_meta, stem, metadata);
        let site = normalize(site_dir);
        for line in text.lines() {
            let rel = first_csv_field(line);
            if rel.is_empty() {
                continue;
            }
            let path = normalize(&base.join(rel));
            if let Some(top) = top_level_name(&path, &site) {
                self.tops.insert((site.clone(), top), owner.clone());
            }
            if is_hook_name(&path) {
                self.files.insert(path, owner.clone());
            }
        }
    }
}

/// The top-level module or package a recorded file (normalised, in-root) belongs to, when
/// it is inside `site_dir` (normalised): `six.py` is `six`, `click/core.py` is `click`. Metadata,
/// caches and scripts are not modules.
fn top_level_name(path: &Path, site_dir: &Path) -> Option<String> {
    let rel = path.strip_prefix(site_dir).ok()?;
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str()?;
    let nested = parts.next().is_some();
    let name = if nested {
        first
    } else {
        first.strip_suffix(".py").or_else(|| {
            first
                .split_once('.')
                .filter(|(_, ext)| ext.ends_with("so"))
                .map(|(n, _)| n)
        })?
    };
    let module = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    module.then(|| name.to_owned())
}

/// Name and version from the metadata headers, else from the directory name
/// (`name-version.dist-info`; names there never contain `-`).
fn read_owner(host_meta: &Path, stem: &str, metadata: &str) -> Owner {
    let (dir_name, rest) = stem.split_once('-').unwrap_or((stem, ""));
    let dir_version = rest.split('-').next().unwrap_or("");
    let headers = read_capped(&host_meta.join(metadata), METADATA_CAP).unwrap_or_default();
    let header = |key: &str| {
        headers
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
            .filter(|v| !v.is_empty())
    };
    Owner {
        name: header("Name:").unwrap_or_else(|| dir_name.to_owned()),
        version: header("Version:").unwrap_or_else(|| dir_version.to_owned()),
        editable: is_editable(&host_meta.join("direct_url.json")),
    }
}

/// PEP 610: `{"dir_info": {"editable": true}, ...}`.
fn is_editable(direct_url: &Path) -> bool {
    let Ok(text) = read_capped(direct_url, METADATA_CAP) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("dir_info")?.get("editable")?.as_bool())
        .unwrap_or(false)
}

fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The path column of a `RECORD` row (CSV: quoted when it holds a comma or a quote).
fn first_csv_field(line: &str) -> String {
    let Some(rest) = line.strip_prefix('"') else {
        return line.split(',').next().unwrap_or("").trim().to_owned();
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.peek() == Some(&'"') => {
                out.push('"');
                chars.next();
            }
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// Lexical normalisation (`a/b/../c` -> `a/c`), never above `/`: records may reach out of
/// the site dir with `../` (scripts, data files), and must not be followed on disk.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields() {
        assert_eq!(first_csv_field("a.pth,sha256=x,10"), "a.pth");
        assert_eq!(
            first_csv_field("\"we,ird\"\"name.pth\",sha256=x,1"),
            "we,ird\"name.pth"
        );
        assert_eq!(first_csv_field(""), "");
    }

    #[test]
    fn normalisation_stays_under_root() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/a/../../..")), Path::new("/"));
    }

    #[test]
    fn indexes_records_and_metadata() {
        let dir = std::env::temp_dir().join(format!("pthwatch-owners-{}", std::process::id()));
        let site = dir.join("lib/python3.11/site-packages");
        let info = site.join("Foo_Bar-2.0.dist-info");
        fs::create_dir_all(&info).unwrap();
        fs::write(
            info.join("METADATA"),
            "Metadata-Version: 2.1\nName: foo-bar\nVersion: 2.0.1\n\nName: body\n",
        )
        .unwrap();
        fs::write(
            info.join("RECORD"),
            "foo.pth,sha256=x,1\nfoo/__init__.py,,\n../../../etc/x.pth,,\nfoo_util.py,,\n_foo.cpython-311-x86_64-linux-gnu.so,,\nFoo_Bar-2.0.dist-info/RECORD,,\n../../../bin/foo,,\n",
        )
        .unwrap();
        fs::write(
            info.join("direct_url.json"),
            r#"{"url":"file:///s","dir_info":{"editable":true}}"#,
        )
        .unwrap();
        let root = Root::new(Path::new("/"));
        let mut index = OwnerIndex::default();
        let owner = index
            .owner_of(&root, &site.join("foo.pth"))
            .cloned()
            .unwrap();
        assert_eq!(owner.label(), "foo-bar==2.0.1");
        assert!(owner.editable);
        assert!(index.owner_of(&root, &site.join("other.pth")).is_none());
        assert!(index.files.contains_key(&dir.join("etc/x.pth")));
        // Top-level modules and packages, by name; metadata and scripts are none.
        for top in ["foo", "foo_util", "_foo"] {
            let o = index.module_owner(&root, &site, top).map(Owner::label);
            assert_eq!(o.as_deref(), Some("foo-bar==2.0.1"), "{top}");
        }
        for other in ["Foo_Bar-2", "bin", "six"] {
            assert!(index.module_owner(&root, &site, other).is_none(), "{other}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
