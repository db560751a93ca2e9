//! One interpreter: its real executable, prefixes, version, the directories its `site`
//! module reads hooks from, and where `Py_RunMain` is. All derived the way CPython's
//! `getpath` and `site` do it, from files, without running anything.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    elf::runmain_target_in,
    locate::{interpreter_name, list},
    rooted::Root,
    text::{display_path, serialize_opt_path, serialize_path, serialize_paths},
};

/// A Python interpreter found on the host (or in the root being inspected).
#[derive(Clone, Debug, Serialize)]
pub struct Interpreter {
    /// Canonical path of the executable: the file the kernel sees being executed.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Where it was found (`/usr/bin/python3`, a venv's `bin/python`).
    #[serde(serialize_with = "serialize_path")]
    pub found_as: PathBuf,
    /// `3.X`.
    pub version: Option<String>,
    /// `sys.prefix`: the venv directory for a venv.
    #[serde(serialize_with = "serialize_path")]
    pub prefix: PathBuf,
    /// `sys.base_prefix`: the installation a venv was made from.
    #[serde(serialize_with = "serialize_path")]
    pub base_prefix: PathBuf,
    pub venv: bool,
    /// Directories whose `.pth`/`.start` files this interpreter runs (user sites included).
    #[serde(serialize_with = "serialize_paths")]
    pub site_dirs: Vec<PathBuf>,
    /// The ELF file exporting `Py_RunMain` (the binary, or its `libpython3.X.so`).
    #[serde(serialize_with = "serialize_opt_path")]
    pub runmain_target: Option<PathBuf>,
    /// Every directory searched for hooks, with its role.
    #[serde(skip)]
    pub(crate) dirs: Vec<(PathBuf, DirRole)>,
    /// (dev, inode) of the executable: hard links such as `python3.6`/`python3.6m` are one.
    #[serde(skip)]
    pub(crate) file_id: (u64, u64),
}

/// What `site` does with a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DirRole {
    /// A site dir: `.pth`/`.start` processed, `sitecustomize`/`usercustomize` importable.
    Site,
    /// The per-user site dir (`~/.local/lib/python3.X/site-packages`).
    User,
    /// On `sys.path` only: `sitecustomize`/`usercustomize` importable, `.pth` ignored.
    Module,
}

/// `pyvenv.cfg`, as `getpath` reads it.
#[derive(Debug, Default)]
struct VenvConfig {
    dir: PathBuf,
    home: Option<PathBuf>,
    version: Option<String>,
    system_site: bool,
}

/// Builds the interpreter for a candidate executable; `None` when it is missing or not an
/// executable file. `runmain` memoises ELF lookups by canonical binary (venvs share one).
pub(crate) fn interpreter(
    root: &Root,
    exe: &Path,
    homes: &[PathBuf],
    runmain: &mut HashMap<PathBuf, Option<PathBuf>>,
) -> Result<Option<Interpreter>, String> {
    let canonical = match root.canonicalize(exe) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot resolve interpreter {}: {e}",
                display_path(exe)
            ));
        }
    };
    let Ok(meta) = fs::metadata(root.host_path(&canonical)) else {
        return Ok(None);
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Ok(None);
    }
    let venv = venv_config(root, exe);
    let install = canonical
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"))
        .to_owned();
    let (prefix, base_prefix) = match &venv {
        Some(cfg) => {
            let base = cfg
                .home
                .as_deref()
                .and_then(Path::parent)
                .map_or(install, Path::to_owned);
            (cfg.dir.clone(), base)
        }
        None => (install.clone(), install),
    };
    let (version, libs) = version_and_libs(root, exe, &canonical, venv.as_ref(), &prefix);
    let mut dirs = Vec::new();
    for lib in &libs {
        dirs.extend(dirs_for(&prefix, &base_prefix, lib, venv.as_ref(), homes));
    }
    dirs.retain(|(d, _)| root.host_path(d).is_dir());
    let runmain_target = runmain
        .entry(canonical.clone())
        .or_insert_with(|| runmain_target_in(root, &canonical, &base_prefix))
        .clone();
    Ok(Some(Interpreter {
        path: canonical,
        found_as: exe.to_owned(),
        version,
        prefix,
        base_prefix,
        venv: venv.is_some(),
        site_dirs: dirs
            .iter()
            .filter(|(_, r)| *r != DirRole::Module)
            .map(|(d, _)| d.clone())
            .collect(),
        runmain_target,
        dirs,
        file_id: (meta.dev(), meta.ino()),
    }))
}

/// `pyvenv.cfg` beside the executable or one level up, as `getpath` looks for it (before
/// resolving symlinks: a venv's `bin/python` links to the base interpreter).
fn venv_config(root: &Root, exe: &Path) -> Option<VenvConfig> {
    let bin = exe.parent()?;
    [bin, bin.parent()?].into_iter().find_map(|dir| {
        let text = fs::read(root.host_path(&dir.join("pyvenv.cfg"))).ok()?;
        let mut cfg = VenvConfig {
            dir: dir.to_owned(),
            ..VenvConfig::default()
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "home" => cfg.home = Some(PathBuf::from(value)),
                "version" | "version_info" => {
                    let mut parts = value.split('.');
                    if let (Some(a), Some(b)) = (parts.next(), parts.next()) {
                        cfg.version = Some(format!("{a}.{b}"));
                    }
                }
                "include-system-site-packages" => {
                    cfg.system_site = value.eq_ignore_ascii_case("true")
                }
                _ => {}
            }
        }
        Some(cfg)
    })
}

/// The version and library directory names (`python3.11`, `python3.13t`): from the file
/// name, the resolved file name, `pyvenv.cfg`, or else every `lib/pythonX.Y` present.
fn version_and_libs(
    root: &Root,
    exe: &Path,
    canonical: &Path,
    venv: Option<&VenvConfig>,
    prefix: &Path,
) -> (Option<String>, Vec<String>) {
    let named = [exe, canonical]
        .iter()
        .filter_map(|p| p.file_name()?.to_str())
        .find_map(|n| match interpreter_name(n) {
            Some((Some(v), Some(l))) => Some((v, l)),
            _ => None,
        });
    if let Some((version, lib)) = named {
        return (Some(version), vec![lib]);
    }
    if let Some(v) = venv.and_then(|c| c.version.clone()) {
        return (Some(v.clone()), vec![format!("python{v}")]);
    }
    let libs: Vec<String> = list(root, &prefix.join("lib"))
        .into_iter()
        .filter(|n| matches!(interpreter_name(n), Some((Some(_), Some(_)))))
        .collect();
    let version = match libs.as_slice() {
        [only] => interpreter_name(only).and_then(|(v, _)| v),
        _ => None,
    };
    (version, libs)
}

/// Every directory `site` may read for this interpreter, before checking existence.
fn dirs_for(
    prefix: &Path,
    base: &Path,
    lib: &str,
    venv: Option<&VenvConfig>,
    homes: &[PathBuf],
) -> Vec<(PathBuf, DirRole)> {
    let site = |p: &Path, libdir: &str| {
        (
            p.join(libdir).join(lib).join("site-packages"),
            DirRole::Site,
        )
    };
    let mut dirs = vec![site(prefix, "lib"), site(prefix, "lib64")];
    let system = venv.is_none_or(|c| c.system_site);
    if system {
        if venv.is_some() {
            dirs.extend([site(base, "lib"), site(base, "lib64")]);
        }
        if base == Path::new("/usr") {
            // Debian's layout, plus `/usr/local` as Debian and Fedora both add it.
            for d in [
                format!("/usr/local/lib/{lib}/dist-packages"),
                "/usr/lib/python3/dist-packages".to_owned(),
                format!("/usr/lib/{lib}/dist-packages"),
                format!("/usr/local/lib/{lib}/site-packages"),
                format!("/usr/local/lib64/{lib}/site-packages"),
            ] {
                dirs.push((PathBuf::from(d), DirRole::Site));
            }
        }
        // A venv without system site packages disables the user site too.
        for home in homes {
            dirs.push((
                home.join(".local/lib").join(lib).join("site-packages"),
                DirRole::User,
            ));
        }
    }
    dirs.push((base.join("lib").join(lib), DirRole::Module));
    if base == Path::new("/usr") {
        dirs.push((PathBuf::from("/etc").join(lib), DirRole::Module));
    }
    dirs
}
