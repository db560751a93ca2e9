//! Decoding of ring-buffer records into owned events.
use std::{
    ffi::OsString,
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStringExt,
    path::PathBuf,
};

use monitor_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, IoUringEvent, NetEvent, OpenEvent,
    PATH_STORE_LEN, exec_flags,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {len} bytes is shorter than its fixed part")]
    Truncated { kind: EventKind, len: usize },
}

#[derive(Clone, Debug)]
pub enum Event {
    Exec(Exec),
    Fork(Fork),
    Exit(EventHeader),
    Open(Open),
    Net(Net),
    IoUring(IoUring),
    StartupDone(EventHeader),
    /// The first run of an executable not checked yet (see `crate::probation`).
    NewExecutable(Exec),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Exec(e) | Self::NewExecutable(e) => &e.header,
            Self::Fork(e) => &e.header,
            Self::Open(e) => &e.header,
            Self::Net(e) => &e.header,
            Self::IoUring(e) => &e.header,
            Self::Exit(h) | Self::StartupDone(h) => h,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Exec {
    pub header: EventHeader,
    pub exe: PathBuf,
    pub exe_truncated: bool,
    /// The kernel refused the exec (`exec_flags::DENIED`): the program never ran.
    pub denied: bool,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Fork {
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tgid: u32,
    pub child_start_ns: u64,
}

#[derive(Clone, Debug)]
pub struct Open {
    pub header: EventHeader,
    pub path: PathBuf,
    pub ino: u64,
    pub dev: u32,
    pub flags: u32,
    pub mode: u32,
    pub fd: i32,
    pub source: u32,
    pub match_flags: u32,
    pub hook_class: u32,
}

impl Open {
    /// The path for alerts, logs and traces: non-UTF-8 bytes as `\xNN`, and a path the
    /// kernel could not walk to the root (deeper than `PATH_MAX` or than the walk's depth
    /// limit) shown as `.../` and the components it did reach, never as if it were whole.
    pub fn shown_path(&self) -> String {
        let shown = crate::inventory::display_path(&self.path);
        if self.match_flags & monitor_common::open_match::PATH_TRUNCATED != 0 {
            format!("...{shown}")
        } else {
            shown
        }
    }
}

#[derive(Clone, Debug)]
pub struct Net {
    pub header: EventHeader,
    pub family: u16,
    pub port: u16,
    pub protocol: u32,
    pub addr: Option<IpAddr>,
    /// Socket cookie, where the kernel program had the socket (0 otherwise).
    pub cookie: u64,
    pub source: u32,
    pub verdict: u32,
    /// The caller's descriptor, where a syscall tracepoint reported it.
    pub fd: Option<i32>,
}

#[derive(Clone, Debug)]
pub struct IoUring {
    pub header: EventHeader,
    pub kind: u32,
    pub opcode: u32,
    pub fd: i32,
}

/// Reads a `T` from the start of `bytes`, which must be long enough.
fn read_struct<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; T is a plain #[repr(C)] type valid for any bit pattern;
    // read_unaligned copes with the ring buffer's alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Reads a fixed-size event, or the fixed part of a variable-size one.
fn fixed<T: Copy>(bytes: &[u8], kind: EventKind, fixed_len: usize) -> Result<T, DecodeError> {
    if bytes.len() < fixed_len {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
        });
    }
    if bytes.len() >= size_of::<T>() {
        return Ok(read_struct(bytes));
    }
    // Variable-size record: pad to the full struct with zeros.
    let mut full = vec![0u8; size_of::<T>()];
    full[..bytes.len()].copy_from_slice(bytes);
    Ok(read_struct(&full))
}

/// Turns the kernel's path buffer (components leaf first, each NUL-terminated) into a
/// path, root first. Bytes are kept as they are (paths need not be UTF-8).
pub fn decode_path(buf: &[u8]) -> PathBuf {
    let mut parts: Vec<&[u8]> = buf.split(|b| *b == 0).filter(|c| !c.is_empty()).collect();
    parts.retain(|c| *c != b"/");
    parts.reverse();
    let mut out = Vec::with_capacity(buf.len() + 1);
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    PathBuf::from(OsString::from_vec(out))
}

fn path_slice(buf: &[u8; PATH_STORE_LEN], len: u32, available: usize) -> &[u8] {
    let len = (len as usize).min(PATH_STORE_LEN).min(available);
    &buf[..len]
}

fn argv(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn cstr(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn ip(family: u16, addr: [u8; 16]) -> Option<IpAddr> {
    match family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        10 => Some(IpAddr::V6(Ipv6Addr::from(addr))),
        _ => None,
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read_struct(bytes);
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    Ok(match kind {
        EventKind::Exec | EventKind::NewExecutable => {
            let fixed_len = offset_of!(ExecEvent, path);
            let e: ExecEvent = fixed(bytes, kind, fixed_len)?;
            let path = path_slice(&e.path, e.path_len, bytes.len() - fixed_len);
            let argv_len = (e.argv_len as usize).min(e.argv.len());
            let exec = Exec {
                header,
                exe: decode_path(path),
                exe_truncated: e.path_flags & exec_flags::PATH_TRUNCATED != 0,
                denied: e.path_flags & exec_flags::DENIED != 0,
                exe_ino: e.exe_ino,
                exe_dev: e.exe_dev,
                comm: cstr(&e.comm),
                argv: argv(&e.argv[..argv_len]),
            };
            if kind == EventKind::Exec {
                Event::Exec(exec)
            } else {
                Event::NewExecutable(exec)
            }
        }
        EventKind::Fork => {
            let e: ForkEvent = fixed(bytes, kind, size_of::<ForkEvent>())?;
            Event::Fork(Fork {
                header,
                child_pid: e.child_pid,
                child_tgid: e.child_tgid,
                child_start_ns: e.child_start_ns,
            })
        }
        EventKind::Exit => {
            let _e: ExitEvent = fixed(bytes, kind, size_of::<ExitEvent>())?;
            Event::Exit(header)
        }
        EventKind::Open => {
            let fixed_len = offset_of!(OpenEvent, path);
            let e: OpenEvent = fixed(bytes, kind, fixed_len)?;
            let path = path_slice(&e.path, e.path_len, bytes.len() - fixed_len);
            Event::Open(Open {
                header,
                path: decode_path(path),
                ino: e.ino,
                dev: e.dev,
                flags: e.flags,
                mode: e.mode,
                fd: e.fd,
                source: e.source,
                match_flags: e.match_flags,
                hook_class: e.hook_class,
            })
        }
        EventKind::Net => {
            let e: NetEvent = fixed(bytes, kind, size_of::<NetEvent>())?;
            Event::Net(Net {
                header,
                family: e.family,
                port: e.port,
                protocol: e.protocol,
                addr: ip(e.family, e.addr),
                cookie: e.cookie,
                source: e.source,
                verdict: e.verdict,
                fd: (e.fd >= 0).then_some(e.fd),
            })
        }
        EventKind::IoUring => {
            let e: IoUringEvent = fixed(bytes, kind, size_of::<IoUringEvent>())?;
            Event::IoUring(IoUring {
                header,
                kind: e.kind,
                opcode: e.opcode,
                fd: e.fd,
            })
        }
        EventKind::StartupDone => Event::StartupDone(header),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_are_reversed_and_joined() {
        let buf = b"credentials\0.aws\0home\0/\0";
        assert_eq!(decode_path(buf), PathBuf::from("/home/.aws/credentials"));
    }

    #[test]
    fn empty_path_is_root() {
        assert_eq!(decode_path(b""), PathBuf::from("/"));
    }

    #[test]
    fn non_utf8_components_survive() {
        let buf = b"f\xff\0tmp\0";
        let p = decode_path(buf);
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(p.as_os_str().as_bytes(), b"/tmp/f\xff");
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[0u8; 10]).unwrap_err(), DecodeError::Short(10));
        let mut h = [0u8; size_of::<EventHeader>()];
        h[0] = 99;
        assert_eq!(decode(&h).unwrap_err(), DecodeError::UnknownKind(99));
    }

    #[test]
    fn a_truncated_open_record_is_an_error() {
        let mut h = [0u8; size_of::<EventHeader>() + 4];
        h[0] = EventKind::Open as u8;
        assert!(matches!(decode(&h), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn open_record_with_partial_path_decodes() {
        let fixed_len = offset_of!(OpenEvent, path);
        let mut rec = vec![0u8; fixed_len];
        rec[0] = EventKind::Open as u8;
        let path = b"passwd\0etc\0";
        let len_off = offset_of!(OpenEvent, path_len);
        rec[len_off..len_off + 4].copy_from_slice(&(path.len() as u32).to_ne_bytes());
        rec.extend_from_slice(path);
        match decode(&rec).unwrap() {
            Event::Open(o) => assert_eq!(o.path, PathBuf::from("/etc/passwd")),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn open_at(path: &[u8], match_flags: u32) -> Open {
        use std::os::unix::ffi::OsStrExt;
        Open {
            header: read_struct(&[0u8; size_of::<EventHeader>()]),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            ino: 1,
            dev: 1,
            flags: 0,
            mode: 0o100_644,
            fd: 3,
            source: 0,
            match_flags,
            hook_class: 0,
        }
    }

    #[test]
    fn shown_paths_escape_invalid_bytes_and_mark_a_partial_walk() {
        use monitor_common::open_match::{CRED_NAME, PATH_TRUNCATED};
        let whole = open_at(b"/home/u/caf\xe9/.aws/credentials", CRED_NAME);
        assert_eq!(whole.shown_path(), "/home/u/caf\\xe9/.aws/credentials");
        let partial = open_at(b"/dddd/.aws/credentials", CRED_NAME | PATH_TRUNCATED);
        assert_eq!(partial.shown_path(), ".../dddd/.aws/credentials");
    }
}
