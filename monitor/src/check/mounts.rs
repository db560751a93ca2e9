//! Finding, and where missing mounting, the pseudo-filesystems the sensors need: tracefs
//! (tracepoint ids and formats), bpffs (pinning), securityfs (the active LSM list) and the
//! cgroup v2 hierarchy (where the socket programs attach).
use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use super::syscalls::{describe, errno_name};

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";
pub const SECURITYFS: &str = "/sys/kernel/security";
/// Where pthwatch mounts its own cgroup v2 view on hosts that have none.
pub const PRIVATE_CGROUP2: &str = "/run/pthwatch/cgroup2";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "mount {fstype} at {target} failed: {errno} ({reason}); run as root or mount it yourself: mount -t {fstype} {fstype} {target}"
    )]
    Mount {
        fstype: &'static str,
        target: String,
        errno: &'static str,
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("creating a private mount namespace to look at {fstype}: {source} (run as root)")]
    Private {
        fstype: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of the filesystem that is mounted (not `/` for a bind mount or a
    /// cgroup namespace).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parses `36 35 98:0 /root /mnt/point opts [optional fields...] - fstype source opts`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    let mut after_separator = fields.skip_while(|f| *f != "-").skip(1);
    let fstype = after_separator.next().filter(|t| !t.is_empty())?;
    Some(MountEntry {
        root: PathBuf::from(unescape(root)),
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: fstype.to_owned(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\` and three octal digits.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of this process's mount namespace, in mount order.
pub fn mounts() -> Result<Vec<MountEntry>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// Where `fstype` is mounted, preferring the mount points in `preferred`, then whole
/// filesystems (root `/`) over bind mounts of a part.
pub fn find_in(entries: &[MountEntry], fstype: &str, preferred: &[&str]) -> Option<PathBuf> {
    let of_type = || entries.iter().filter(|e| e.fstype == fstype);
    preferred
        .iter()
        .find_map(|want| {
            of_type().find(|e| e.mount_point == Path::new(want) && e.root == Path::new("/"))
        })
        .or_else(|| of_type().find(|e| e.root == Path::new("/")))
        .or_else(|| of_type().next())
        .map(|e| e.mount_point.clone())
}

fn sys_mount(fstype: &'static str, target: &Path) -> Result<(), MountError> {
    let err = |source: io::Error| MountError::Mount {
        fstype,
        target: target.display().to_string(),
        errno: errno_name(source.raw_os_error().unwrap_or(0)),
        reason: describe(&source),
        source,
    };
    std::fs::create_dir_all(target).map_err(err)?;
    let c_type = CString::new(fstype).map_err(|e| err(io::Error::other(e)))?;
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| err(io::Error::other(e)))?;
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

fn mount(fstype: &'static str, target: &Path) -> Result<(), MountError> {
    sys_mount(fstype, target)?;
    tracing::info!(fstype, target = %target.display(), "mounted");
    Ok(())
}

/// The mount point of `fstype`, mounting it at `preferred[0]` when it is mounted nowhere.
fn ensure(fstype: &'static str, preferred: &[&str]) -> Result<PathBuf, MountError> {
    if let Some(found) = find_in(&mounts()?, fstype, preferred) {
        return Ok(found);
    }
    let target = Path::new(preferred[0]);
    mount(fstype, target)?;
    Ok(target.to_owned())
}

/// tracefs: tracepoint ids and record formats.
pub fn ensure_tracefs() -> Result<PathBuf, MountError> {
    ensure("tracefs", &[TRACEFS, "/sys/kernel/debug/tracing"])
}

/// bpffs: pinned maps and links.
pub fn ensure_bpffs() -> Result<PathBuf, MountError> {
    ensure("bpf", &[BPFFS])
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` (unified layout), `/sys/fs/cgroup/unified`
/// (hybrid layout) or wherever it is mounted. A host with none gets one at
/// `/run/pthwatch/cgroup2`: never over `/sys/fs/cgroup`, which would hide cgroup v1.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", PRIVATE_CGROUP2];
    if let Some(found) = find_in(&mounts()?, "cgroup2", &preferred) {
        return Ok(found);
    }
    tracing::warn!(
        target = PRIVATE_CGROUP2,
        "no cgroup v2 mount on this host: mounting one"
    );
    mount("cgroup2", Path::new(PRIVATE_CGROUP2))?;
    Ok(PathBuf::from(PRIVATE_CGROUP2))
}

/// Where the cgroup v2 hierarchy is mounted, without mounting one when there is none.
pub fn cgroup2_mounted() -> Option<PathBuf> {
    let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", PRIVATE_CGROUP2];
    find_in(&mounts().ok()?, "cgroup2", &preferred)
}

/// Runs `f` with `fstype` visible: at its mount point when it is mounted, otherwise mounted
/// at `target` in a private mount namespace of a helper thread, so that looking leaves no
/// mount behind (the namespace dies with the thread).
pub fn with_mounted<T: Send>(
    fstype: &'static str,
    target: &Path,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, MountError> {
    if let Some(found) = find_in(&mounts()?, fstype, &[]) {
        return Ok(f(&found));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let private = |source| MountError::Private { fstype, source };
                // SAFETY: plain syscalls; unsharing CLONE_NEWNS (and so CLONE_FS) affects only
                // this thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                    return Err(private(io::Error::last_os_error()));
                }
                // SAFETY: NUL-terminated literal; null source, type and data are allowed here.
                let rc = unsafe {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                };
                if rc != 0 {
                    return Err(private(io::Error::last_os_error()));
                }
                sys_mount(fstype, target)?;
                Ok(f(target))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &str, mount_point: &str, fstype: &str) -> MountEntry {
        MountEntry {
            root: root.into(),
            mount_point: mount_point.into(),
            fstype: fstype.into(),
        }
    }

    #[test]
    fn parses_mountinfo_lines() {
        let line = "35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_mountinfo_line(line),
            Some(entry("/", "/sys/fs/cgroup/unified", "cgroup2"))
        );
        let no_optional = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(parse_mountinfo_line(no_optional).unwrap().fstype, "cgroup2");
        let two_optional = "50 24 0:40 /sub /mnt rw shared:3 master:1 - ext4 /dev/sda1 rw";
        assert_eq!(
            parse_mountinfo_line(two_optional),
            Some(entry("/sub", "/mnt", "ext4"))
        );
        let spaced = r"36 24 0:31 / /mnt/with\040space\134x rw - tmpfs tmpfs rw";
        assert_eq!(
            parse_mountinfo_line(spaced).unwrap().mount_point,
            PathBuf::from(r"/mnt/with space\x")
        );
        let utf8 = r"37 24 0:32 / /mnt/caf\303\251 rw - tmpfs tmpfs rw";
        assert_eq!(
            parse_mountinfo_line(utf8).unwrap().mount_point,
            PathBuf::from("/mnt/café")
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
        assert_eq!(
            parse_mountinfo_line("1 2 3:4 / /x rw shared:1"),
            None,
            "no separator"
        );
    }

    #[test]
    fn finds_the_preferred_whole_mount() {
        let entries = [
            entry("/", "/sys/fs/cgroup", "tmpfs"),
            entry("/kubepods/pod1", "/var/lib/x/cgroup", "cgroup2"),
            entry("/", "/sys/fs/cgroup/unified", "cgroup2"),
            entry("/", "/elsewhere", "cgroup2"),
        ];
        let prefer = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
        assert_eq!(
            find_in(&entries, "cgroup2", &prefer),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(
            find_in(&entries, "cgroup2", &[]),
            Some("/sys/fs/cgroup/unified".into()),
            "whole mounts first"
        );
        assert_eq!(
            find_in(&entries[..2], "cgroup2", &prefer),
            Some("/var/lib/x/cgroup".into())
        );
        assert_eq!(find_in(&entries, "tracefs", &prefer), None);
    }

    #[test]
    fn mount_errors_say_what_to_do() {
        let e = MountError::Mount {
            fstype: "tracefs",
            target: TRACEFS.into(),
            errno: "EPERM",
            reason: "Operation not permitted".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("mount tracefs at /sys/kernel/tracing failed: EPERM"),
            "{text}"
        );
        assert!(
            text.ends_with("mount -t tracefs tracefs /sys/kernel/tracing"),
            "{text}"
        );
    }

    #[test]
    fn looking_at_securityfs_leaves_no_mount_behind() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to mount");
            return;
        }
        let before = mounts()
            .unwrap()
            .iter()
            .filter(|e| e.fstype == "securityfs")
            .count();
        let lsm = with_mounted("securityfs", Path::new(SECURITYFS), |p| {
            std::fs::read_to_string(p.join("lsm"))
        })
        .expect("securityfs visible");
        assert!(lsm.is_ok_and(|l| !l.is_empty()));
        let after = mounts()
            .unwrap()
            .iter()
            .filter(|e| e.fstype == "securityfs")
            .count();
        assert_eq!(before, after);
    }
}
