//! The cgroup a process runs in, and what its path says: the container id (the runtime's
//! scope or directory) and the Kubernetes pod UID (the kubelet's pod slice or directory).
//!
//! Paths the kubelet and the runtimes make, with the systemd cgroup driver and with
//! cgroupfs:
//!
//! - `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid, _ for ->.slice/cri-containerd-<id>.scope`
//!   (also `crio-<id>.scope`, `docker-<id>.scope`);
//! - `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`;
//! - outside Kubernetes: `/system.slice/docker-<id>.scope`, `/docker/<id>`,
//!   `/machine.slice/libpod-<id>.scope`.
//!
//! Inside a cgroup namespace the path may start with `/..` components; only the
//! components are read, so that does not matter.

use std::{
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// `/proc/<pid>/cgroup` is a few lines; more than this is not one.
const MAX_PROC_CGROUP: u64 = 64 << 10;
/// The walk that finds a cgroup by id gives up after this many directories...
const MAX_WALK_DIRS: usize = 16_384;
/// ...or this deep (kubepods paths are 4 to 5 deep).
const MAX_WALK_DEPTH: usize = 12;

/// What a cgroup path names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupRef {
    /// The path in the cgroup v2 hierarchy, as `/proc/<pid>/cgroup` shows it.
    pub path: String,
    /// Set when the path was checked against the cgroup id (the directory exists and
    /// its inode is the id): then its disappearance means the cgroup is gone.
    pub verified: bool,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

impl CgroupRef {
    pub fn from_path(path: String, verified: bool) -> Self {
        let (container_id, pod_uid) = parse_path(&path);
        Self {
            path,
            verified,
            container_id,
            pod_uid,
        }
    }
}

/// The container id and pod UID a cgroup path names, each when it names one.
pub fn parse_path(path: &str) -> (Option<String>, Option<String>) {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let container = components.iter().rev().find_map(|c| container_id(c));
    let pod = components.iter().rev().find_map(|c| pod_uid(c));
    (container, pod)
}

/// A container's cgroup directory name: `<runtime>-<64 hex>.scope` or the bare id.
fn container_id(component: &str) -> Option<String> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // conmon (CRI-O's monitor) has a scope of its own next to the container's; the
    // processes in it are not the container's.
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = [
        "cri-containerd-",
        "crio-",
        "docker-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    is_hex_id(id).then(|| id.to_owned())
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod's cgroup directory name: `kubepods-<class>-pod<uid with _>.slice`,
/// `kubepods-pod<uid>.slice` (systemd driver) or `pod<uid>` (cgroupfs driver).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let tail = if name.starts_with("kubepods-") {
        name.rsplit('-').next()?
    } else {
        name
    };
    let uid = tail.strip_prefix("pod")?.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A pod UID: a UUID (`8-4-4-4-12` hex), or the 32 hex digits of a static pod's.
pub fn is_pod_uid(s: &str) -> bool {
    let hex = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit());
    match s.len() {
        32 => hex(s),
        36 => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.len() == 5
                && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts.iter().all(|p| hex(p))
        }
        _ => false,
    }
}

/// The process's cgroup v2 path from `<proc>/<pid>/cgroup` (its `0::` line).
pub fn of_process(proc_root: &Path, pid: u32) -> Option<String> {
    let file = std::fs::File::open(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_CGROUP).read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The directory of `path` under the hierarchy mounted at `root`, unless the path
/// leaves it (`..`, from inside another cgroup namespace).
pub fn dir_of(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    Some(root.join(rel))
}

/// Whether the cgroup directory for `path` under `root` has inode `id`.
pub fn has_id(root: &Path, path: &str, id: u64) -> Option<bool> {
    let dir = dir_of(root, path)?;
    let meta = std::fs::metadata(dir).ok()?;
    Some(meta.is_dir() && meta.ino() == id)
}

/// The path of the cgroup whose directory has inode `id` (the kernel's cgroup id), by a
/// bounded walk of the hierarchy mounted at `root`.
pub fn find_by_id(root: &Path, id: u64) -> Option<String> {
    if std::fs::metadata(root).ok()?.ino() == id {
        return Some("/".to_owned());
    }
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_owned(), 0)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            seen += 1;
            if seen > MAX_WALK_DIRS {
                tracing::debug!(id, "cgroup not found within the walk's bound");
                return None;
            }
            let path = entry.path();
            if entry.metadata().is_ok_and(|m| m.ino() == id) {
                let rel = path.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.to_string_lossy()));
            }
            if depth + 1 < MAX_WALK_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    None
}
