//! Where interpreters live, found from the filesystem alone. Running an interpreter to ask
//! (`python -c 'import site'`) would execute the very hooks being inspected.
use std::{
    collections::HashSet,
    fs,
    io::ErrorKind,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::{rooted::Root, text::display_path};

/// How deep below a home, `/opt` or `/srv` virtual environments are looked for.
const VENV_DEPTH: usize = 4;
/// Directories read per search root, so a huge tree cannot stall discovery.
const VENV_DIR_BUDGET: usize = 20_000;
/// Unreadable-directory messages kept per search (the rest are counted).
const MAX_WALK_ERRORS: usize = 10;
/// Never descended into: large, and never holding a venv worth finding (tool-managed
/// venvs under `.local`/`.cache` are looked up at their known places instead).
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "site-packages",
    "dist-packages",
    ".cache",
    ".pyenv",
    ".cargo",
    ".rustup",
    ".npm",
    ".nvm",
    ".m2",
    ".gradle",
    ".local",
    ".vscode-server",
    "target",
    "proc",
    "sys",
    "snap",
    "go",
];
/// Conda-style installs in a home directory.
const CONDA_DIRS: &[&str] = &[
    "miniconda3",
    "anaconda3",
    "miniforge3",
    "mambaforge",
    "micromamba",
    "conda",
];
/// Tool-managed venv parents in a home (pipx, uv tools, poetry, pdm, virtualenvwrapper).
const HOME_VENV_PARENTS: &[&str] = &[
    ".local/share/pipx/venvs",
    ".local/pipx/venvs",
    ".local/share/uv/tools",
    ".cache/pypoetry/virtualenvs",
    ".local/share/pdm/venvs",
    ".virtualenvs",
];

/// An interpreter executable to look at (in-root path, not resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub exe: PathBuf,
}

/// The interpreter executables worth looking at: system and `/opt` installs, pyenv, conda,
/// uv-managed Pythons, CI tool caches, and every virtual environment found.
pub(crate) fn candidates(
    root: &Root,
    homes: &[PathBuf],
    errors: &mut Vec<String>,
) -> Vec<Candidate> {
    let mut bins: Vec<PathBuf> = ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(PathBuf::from)
        .collect();
    bins.extend(glob(root, Path::new("/"), "opt/*/bin"));
    bins.extend(glob(root, Path::new("/"), "opt/*/envs/*/bin"));
    bins.extend(glob(
        root,
        Path::new("/"),
        "opt/hostedtoolcache/Python/*/*/bin",
    ));
    bins.push("/usr/share/miniconda/bin".into());
    bins.extend(glob(root, Path::new("/"), "usr/share/miniconda/envs/*/bin"));
    if let Some(pyenv) = std::env::var_os("PYENV_ROOT") {
        bins.extend(glob(root, Path::new(&pyenv), "versions/*/bin"));
    }
    for home in homes {
        bins.extend(glob(root, home, ".pyenv/versions/*/bin"));
        bins.extend(glob(root, home, ".local/share/uv/python/*/bin"));
        bins.extend(glob(root, home, ".conda/envs/*/bin"));
        for conda in CONDA_DIRS {
            bins.push(home.join(conda).join("bin"));
            bins.extend(glob(root, &home.join(conda), "envs/*/bin"));
        }
    }
    let mut out: Vec<Candidate> = bins
        .iter()
        .flat_map(|bin| {
            list(root, bin)
                .into_iter()
                .filter(|n| interpreter_name(n).is_some())
                .map(|n| bin.join(n))
        })
        .map(|exe| Candidate { exe })
        .collect();
    for venv in venvs(root, homes, errors) {
        let bin = venv.join("bin");
        if let Some(name) = ["python3", "python"]
            .into_iter()
            .find(|n| root.host_path(&bin.join(n)).exists())
        {
            out.push(Candidate {
                exe: bin.join(name),
            });
        }
    }
    out
}

/// `pythonX[.Y][suffix]` -> (`X.Y`, `pythonX.Y[t]`, the library directory name). `python`
/// and `python3` give neither (resolved later); `python3.11-config` is not an interpreter.
pub(crate) fn interpreter_name(name: &str) -> Option<(Option<String>, Option<String>)> {
    let rest = name.strip_prefix("python")?;
    if rest.is_empty() {
        return Some((None, None));
    }
    let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if major != "2" && major != "3" {
        return None;
    }
    let rest = &rest[major.len()..];
    let Some(rest) = rest.strip_prefix('.') else {
        return rest.is_empty().then_some((None, None));
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let suffix = &rest[minor.len()..];
    if minor.is_empty() || !suffix.chars().all(|c| matches!(c, 'd' | 'm' | 't' | 'u')) {
        return None;
    }
    let version = format!("{major}.{minor}");
    let lib = if suffix.contains('t') {
        format!("python{version}t")
    } else {
        format!("python{version}")
    };
    Some((Some(version), Some(lib)))
}

/// Home directories: `/root`, `/home/*`, and accounts in `/etc/passwd` with a login shell
/// (CI users such as `/var/lib/jenkins` or `/home/runner`).
pub(crate) fn default_homes(root: &Root) -> Vec<PathBuf> {
    let mut homes = vec![PathBuf::from("/root")];
    homes.extend(glob(root, Path::new("/home"), "*"));
    let passwd = fs::read(root.host_path(Path::new("/etc/passwd"))).unwrap_or_default();
    for line in String::from_utf8_lossy(&passwd).lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(home), Some(shell)) = (fields.get(5), fields.get(6)) else {
            continue;
        };
        let login =
            !(shell.ends_with("nologin") || shell.ends_with("false") || shell.ends_with("sync"));
        if login && home.starts_with('/') && *home != "/" {
            homes.push(PathBuf::from(home));
        }
    }
    let mut seen = HashSet::new();
    homes.retain(|h| seen.insert(h.clone()) && root.host_path(h).is_dir());
    homes
}

/// Virtual environments (directories holding `pyvenv.cfg`) under homes, `/opt`, `/srv`
/// to a bounded depth, plus the places tools keep theirs.
fn venvs(root: &Root, homes: &[PathBuf], errors: &mut Vec<String>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let starts = homes.iter().cloned().chain(["/opt".into(), "/srv".into()]);
    for start in starts {
        walk_for_venvs(root, &start, &mut found, errors);
    }
    for home in homes {
        for parent in HOME_VENV_PARENTS {
            let parent = home.join(parent);
            found.extend(
                list(root, &parent)
                    .into_iter()
                    .map(|n| parent.join(n))
                    .filter(|d| root.host_path(&d.join("pyvenv.cfg")).is_file()),
            );
        }
    }
    found
}

fn walk_for_venvs(root: &Root, start: &Path, found: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let mut stack = vec![(start.to_owned(), 0usize)];
    let mut budget = VENV_DIR_BUDGET;
    let mut unreadable = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        if budget == 0 {
            errors.push(format!(
                "stopped looking for virtual environments under {} after {VENV_DIR_BUDGET} directories; \
                 name deeper ones with --site-dir/--interpreter",
                display_path(start)
            ));
            break;
        }
        budget -= 1;
        let entries = match fs::read_dir(root.host_path(&dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable += 1;
                if unreadable <= MAX_WALK_ERRORS {
                    errors.push(format!(
                        "cannot list {} while looking for virtual environments: {e}",
                        display_path(&dir)
                    ));
                }
                continue;
            }
        };
        let mut subdirs = Vec::new();
        let mut is_venv = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == "pyvenv.cfg" {
                is_venv = true;
            } else if depth < VENV_DEPTH
                && entry.file_type().is_ok_and(|t| t.is_dir())
                && !SKIP_DIRS.iter().any(|s| name.as_bytes() == s.as_bytes())
            {
                subdirs.push(dir.join(name));
            }
        }
        if is_venv {
            found.push(dir);
            continue;
        }
        subdirs.sort();
        stack.extend(subdirs.into_iter().rev().map(|d| (d, depth + 1)));
    }
    if unreadable > MAX_WALK_ERRORS {
        errors.push(format!(
            "{} more unreadable directories under {} were skipped",
            unreadable - MAX_WALK_ERRORS,
            display_path(start)
        ));
    }
}

/// Sorted UTF-8 names in an in-root directory (empty when it is missing or unreadable).
/// Interpreter and venv names are ASCII in practice; hooks are listed elsewhere as bytes.
pub(crate) fn list(root: &Root, dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.host_path(dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Expands `*` components (whole-component wildcards only) of `pattern` below `base`.
pub(crate) fn glob(root: &Root, base: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![base.to_owned()];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        paths = if part == "*" {
            paths
                .iter()
                .flat_map(|p| list(root, p).into_iter().map(move |n| p.join(n)))
                .collect()
        } else {
            paths.into_iter().map(|p| p.join(part)).collect()
        };
    }
    paths.retain(|p| root.host_path(p).exists());
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_names() {
        assert_eq!(
            interpreter_name("python3.11"),
            Some((Some("3.11".into()), Some("python3.11".into())))
        );
        assert_eq!(
            interpreter_name("python3.13t"),
            Some((Some("3.13".into()), Some("python3.13t".into())))
        );
        assert_eq!(
            interpreter_name("python3.6m"),
            Some((Some("3.6".into()), Some("python3.6".into())))
        );
        assert_eq!(interpreter_name("python3"), Some((None, None)));
        assert_eq!(interpreter_name("python"), Some((None, None)));
        assert_eq!(interpreter_name("python3.11-config"), None);
        assert_eq!(interpreter_name("python3-futurize"), None);
        assert_eq!(interpreter_name("python4.0"), None);
    }
}
