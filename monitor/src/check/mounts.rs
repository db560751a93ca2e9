//! Finding, and where missing mounting, the pseudo-filesystems the sensors need.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "mounting {fstype} at {target} failed: {source}; run as root, or mount it yourself: mount -t {fstype} {fstype} {target}"
    )]
    Mount {
        fstype: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
}

/// One line of `/proc/self/mountinfo`: (mount point, filesystem type).
pub fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let rest: Vec<&str> = fields.collect();
    let sep = rest.iter().position(|f| *f == "-")?;
    let fstype = rest.get(sep + 1)?;
    Some((PathBuf::from(unescape(mount_point)), (*fstype).to_owned()))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() + 0 && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Mount points of a filesystem type, in mount order.
pub fn mounts_of(fstype: &str) -> Result<Vec<PathBuf>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(text
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|(_, t)| t == fstype)
        .map(|(p, _)| p)
        .collect())
}

fn mount(fstype: &'static str, target: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Mount { fstype, target: target.display().to_string(), source };
    std::fs::create_dir_all(target).map_err(err)?;
    let c_type = CString::new(fstype).expect("static");
    let c_target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| err(std::io::Error::other(e)))?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(c_type.as_ptr(), c_target.as_ptr(), c_type.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    tracing::info!(fstype, target = %target.display(), "mounted");
    Ok(())
}

fn ensure(fstype: &'static str, preferred: &[&str]) -> Result<PathBuf, MountError> {
    if let Some(p) = mounts_of(fstype)?.into_iter().find(|p| preferred.iter().any(|want| p == Path::new(want))) {
        return Ok(p);
    }
    if let Some(p) = mounts_of(fstype)?.into_iter().next() {
        return Ok(p);
    }
    let target = Path::new(preferred[0]);
    mount(fstype, target)?;
    Ok(target.to_owned())
}

/// tracefs (the syscall tracepoints are attached through it).
pub fn ensure_tracefs() -> Result<PathBuf, MountError> {
    ensure("tracefs", &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"])
}

/// bpffs (pinning).
pub fn ensure_bpffs() -> Result<PathBuf, MountError> {
    ensure("bpf", &["/sys/fs/bpf"])
}

/// securityfs (the active LSM list).
pub fn ensure_securityfs() -> Result<PathBuf, MountError> {
    ensure("securityfs", &["/sys/kernel/security"])
}

/// The cgroup v2 root: where it is mounted (unified or hybrid layout), or a private mount
/// when the host has none.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    ensure("cgroup2", &["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/run/pthwatch/cgroup2"])
        .or_else(|_| {
            let target = Path::new("/run/pthwatch/cgroup2");
            mount("cgroup2", target)?;
            Ok(target.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = "35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw";
        assert_eq!(parse_mountinfo_line(line), Some((PathBuf::from("/sys/fs/cgroup/unified"), "cgroup2".into())));
        let spaced = r"36 24 0:31 / /mnt/with\040space rw - tmpfs tmpfs rw";
        assert_eq!(parse_mountinfo_line(spaced).unwrap().0, PathBuf::from("/mnt/with space"));
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }
}
