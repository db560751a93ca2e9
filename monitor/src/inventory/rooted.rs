//! Paths inside another root (a container seen through `/proc/<pid>/root`, or a test
//! tree). Paths recorded in the inventory are always in-root paths (what the interpreter
//! inside sees); only file access goes through the host path.
//!
//! Symlinks are resolved by hand: the kernel resolves an absolute link target found under
//! `/proc/<pid>/root` against the *caller's* root, which would silently read the host's
//! `/usr/bin/python3` instead of the container's.
use std::{
    collections::VecDeque,
    ffi::OsString,
    fs, io,
    path::{Component, Path, PathBuf},
};

/// Most symlinks followed while resolving one path, as the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

#[derive(Clone, Debug)]
pub(crate) struct Root {
    host: PathBuf,
}

impl Root {
    pub(crate) fn new(host: &Path) -> Self {
        Self {
            host: host.to_owned(),
        }
    }

    pub(crate) fn is_host_root(&self) -> bool {
        self.host == Path::new("/")
    }

    /// The root directory on the host (`/`, `/proc/<pid>/root`, a test tree).
    pub(crate) fn host(&self) -> &Path {
        &self.host
    }

    /// Where an in-root path is on the host.
    pub(crate) fn host_path(&self, inner: &Path) -> PathBuf {
        if self.is_host_root() {
            return Path::new("/").join(inner);
        }
        let rel = inner.strip_prefix("/").unwrap_or(inner);
        self.host.join(rel)
    }

    /// The canonical in-root path of `inner`, every symlink resolved inside the root.
    pub(crate) fn canonicalize(&self, inner: &Path) -> io::Result<PathBuf> {
        if self.is_host_root() {
            return fs::canonicalize(Path::new("/").join(inner));
        }
        let mut pending: VecDeque<OsString> = components(inner).collect();
        let mut resolved = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&part);
            let meta = fs::symlink_metadata(self.host_path(&candidate))?;
            if !meta.file_type().is_symlink() {
                resolved = candidate;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!(
                    "more than {MAX_LINKS} symbolic links resolving {}",
                    inner.display()
                )));
            }
            let target = fs::read_link(self.host_path(&candidate))?;
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(c);
            }
        }
        Ok(resolved)
    }
}

/// Normal and `..` components as strings (`.` and the root dropped).
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let host = std::env::temp_dir().join(format!("pthwatch-root-{}", std::process::id()));
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(host.join("usr/bin")).unwrap();
        fs::write(host.join("usr/bin/python3.12"), b"").unwrap();
        symlink("/usr/bin/python3.12", host.join("usr/bin/python3")).unwrap();
        symlink("usr/bin", host.join("bin")).unwrap();
        symlink("/loop", host.join("loop")).unwrap();
        let root = Root::new(&host);
        assert_eq!(
            root.canonicalize(Path::new("/bin/python3")).unwrap(),
            Path::new("/usr/bin/python3.12")
        );
        assert_eq!(
            root.canonicalize(Path::new("/usr/../bin/../../usr/bin"))
                .unwrap(),
            Path::new("/usr/bin")
        );
        assert!(root.canonicalize(Path::new("/loop")).is_err());
        assert_eq!(root.host_path(Path::new("/usr/bin")), host.join("usr/bin"));
        fs::remove_dir_all(&host).unwrap();
    }
}
