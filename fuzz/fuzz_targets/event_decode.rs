//! The ring-buffer record decoder on arbitrary bytes: what the kernel programs write, cut
//! at any length and with any field values.
//!
//! Properties: nothing panics; an error names the real length; a decoded event keeps the
//! record's header; paths are absolute with no empty or NUL component; and a decoded event,
//! written back as a record (the encoder below, the layout of `monitor-common`), decodes to
//! the same event.
#![no_main]

use std::{
    mem::{offset_of, size_of},
    net::IpAddr,
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use libfuzzer_sys::fuzz_target;
use monitor::events::{DecodeError, Event, decode};
use monitor_common::{
    ARGV_LEN, COMM_LEN, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, IoUringEvent,
    NetEvent, OpenEvent, PATH_STORE_LEN, exec_flags,
};

fuzz_target!(|data: &[u8]| {
    let event = match decode(data) {
        Ok(event) => event,
        Err(DecodeError::Short(n)) => {
            assert_eq!(n, data.len());
            assert!(n < size_of::<EventHeader>());
            return;
        }
        Err(DecodeError::UnknownKind(k)) => {
            assert!(EventKind::from_u32(k).is_none());
            assert_eq!(k.to_ne_bytes(), data[..4]);
            return;
        }
        Err(DecodeError::Truncated { len, .. }) => {
            assert_eq!(len, data.len());
            return;
        }
    };
    assert_eq!(
        header_bytes(event.header()),
        data[..size_of::<EventHeader>()]
    );
    match &event {
        Event::Exec(e) | Event::NewExecutable(e) => {
            check_path(&e.exe);
            assert!(e.argv.iter().all(|a| !a.is_empty() && !a.contains('\0')));
            assert!(!e.comm.contains('\0'));
        }
        Event::Open(o) => check_path(&o.path),
        Event::Net(n) => {
            assert_eq!(n.addr.is_some(), matches!(n.family, 2 | 10));
            assert!(n.fd.is_none_or(|fd| fd >= 0));
        }
        _ => {}
    }

    // Round trip: encode the event, decode it again.
    let Some(record) = encode(&event) else {
        return;
    };
    let again = decode(&record).expect("a record written from a decoded event decodes");
    assert_eq!(format!("{again:?}"), format!("{event:?}"));
});

fn check_path(p: &Path) {
    let bytes = p.as_os_str().as_bytes();
    assert!(bytes.starts_with(b"/"), "{p:?}");
    assert!(!bytes.contains(&0), "{p:?}");
    assert!(bytes.len() <= PATH_STORE_LEN + 1, "{p:?}");
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn header_bytes(h: &EventHeader) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<EventHeader>()];
    put(&mut b, offset_of!(EventHeader, kind), &h.kind.to_ne_bytes());
    put(
        &mut b,
        offset_of!(EventHeader, flags),
        &h.flags.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(EventHeader, ts_ns),
        &h.ts_ns.to_ne_bytes(),
    );
    put(&mut b, offset_of!(EventHeader, pid), &h.pid.to_ne_bytes());
    put(&mut b, offset_of!(EventHeader, tgid), &h.tgid.to_ne_bytes());
    put(&mut b, offset_of!(EventHeader, ppid), &h.ppid.to_ne_bytes());
    put(&mut b, offset_of!(EventHeader, uid), &h.uid.to_ne_bytes());
    put(
        &mut b,
        offset_of!(EventHeader, start_ns),
        &h.start_ns.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(EventHeader, cgroup_id),
        &h.cgroup_id.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(EventHeader, lineage),
        &h.lineage.to_ne_bytes(),
    );
    b
}

/// A path as the kernel programs write it: components leaf first, each NUL-terminated.
/// `None` for a path no dentry walk gives: a kernel name never holds a `/`, but a
/// record's bytes can, and then the decoded path has an empty component.
fn kernel_path(p: &Path) -> Option<Vec<u8>> {
    let bytes = p.as_os_str().as_bytes();
    if bytes == b"/" {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in bytes.strip_prefix(b"/")?.rsplit(|b| *b == b'/') {
        if part.is_empty() {
            return None;
        }
        out.extend_from_slice(part);
        out.push(0);
    }
    (out.len() <= PATH_STORE_LEN).then_some(out)
}

/// A full record for `event`; `None` when a field no longer fits (lossy decoding of
/// non-UTF-8 text can make it longer than the kernel's buffer).
fn encode(event: &Event) -> Option<Vec<u8>> {
    let record = |size: usize| {
        let mut b = vec![0u8; size];
        put(&mut b, 0, &header_bytes(event.header()));
        b
    };
    Some(match event {
        Event::Exec(e) | Event::NewExecutable(e) => {
            let mut b = record(size_of::<ExecEvent>());
            put(
                &mut b,
                offset_of!(ExecEvent, exe_ino),
                &e.exe_ino.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(ExecEvent, exe_dev),
                &e.exe_dev.to_ne_bytes(),
            );
            let mut flags = 0;
            if e.exe_truncated {
                flags |= exec_flags::PATH_TRUNCATED;
            }
            if e.denied {
                flags |= exec_flags::DENIED;
            }
            put(
                &mut b,
                offset_of!(ExecEvent, path_flags),
                &flags.to_ne_bytes(),
            );
            if e.comm.len() > COMM_LEN {
                return None;
            }
            put(&mut b, offset_of!(ExecEvent, comm), e.comm.as_bytes());
            let path = kernel_path(&e.exe)?;
            put(&mut b, offset_of!(ExecEvent, path), &path);
            let len = u32::try_from(path.len()).ok()?;
            put(&mut b, offset_of!(ExecEvent, path_len), &len.to_ne_bytes());
            let argv: Vec<u8> = e.argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
            if argv.len() > ARGV_LEN {
                return None;
            }
            put(&mut b, offset_of!(ExecEvent, argv), &argv);
            let len = u32::try_from(argv.len()).ok()?;
            put(&mut b, offset_of!(ExecEvent, argv_len), &len.to_ne_bytes());
            b
        }
        Event::Fork(f) => {
            let mut b = record(size_of::<ForkEvent>());
            put(
                &mut b,
                offset_of!(ForkEvent, child_pid),
                &f.child_pid.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(ForkEvent, child_tgid),
                &f.child_tgid.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(ForkEvent, child_start_ns),
                &f.child_start_ns.to_ne_bytes(),
            );
            b
        }
        Event::Exit(_) => record(size_of::<ExitEvent>()),
        Event::StartupDone(_) => record(size_of::<EventHeader>()),
        Event::Open(o) => {
            let mut b = record(size_of::<OpenEvent>());
            put(&mut b, offset_of!(OpenEvent, ino), &o.ino.to_ne_bytes());
            put(&mut b, offset_of!(OpenEvent, dev), &o.dev.to_ne_bytes());
            put(&mut b, offset_of!(OpenEvent, flags), &o.flags.to_ne_bytes());
            put(&mut b, offset_of!(OpenEvent, fd), &o.fd.to_ne_bytes());
            put(
                &mut b,
                offset_of!(OpenEvent, source),
                &o.source.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(OpenEvent, match_flags),
                &o.match_flags.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(OpenEvent, hook_class),
                &o.hook_class.to_ne_bytes(),
            );
            put(&mut b, offset_of!(OpenEvent, mode), &o.mode.to_ne_bytes());
            let path = kernel_path(&o.path)?;
            put(&mut b, offset_of!(OpenEvent, path), &path);
            let len = u32::try_from(path.len()).ok()?;
            put(&mut b, offset_of!(OpenEvent, path_len), &len.to_ne_bytes());
            b
        }
        Event::Net(n) => {
            let mut b = record(size_of::<NetEvent>());
            put(
                &mut b,
                offset_of!(NetEvent, family),
                &n.family.to_ne_bytes(),
            );
            put(&mut b, offset_of!(NetEvent, port), &n.port.to_ne_bytes());
            put(
                &mut b,
                offset_of!(NetEvent, protocol),
                &n.protocol.to_ne_bytes(),
            );
            match n.addr {
                Some(IpAddr::V4(a)) => put(&mut b, offset_of!(NetEvent, addr), &a.octets()),
                Some(IpAddr::V6(a)) => put(&mut b, offset_of!(NetEvent, addr), &a.octets()),
                None => {}
            }
            put(
                &mut b,
                offset_of!(NetEvent, cookie),
                &n.cookie.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(NetEvent, source),
                &n.source.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(NetEvent, verdict),
                &n.verdict.to_ne_bytes(),
            );
            let fd = n.fd.unwrap_or(-1);
            put(&mut b, offset_of!(NetEvent, fd), &fd.to_ne_bytes());
            b
        }
        Event::IoUring(u) => {
            let mut b = record(size_of::<IoUringEvent>());
            put(
                &mut b,
                offset_of!(IoUringEvent, kind),
                &u.kind.to_ne_bytes(),
            );
            put(
                &mut b,
                offset_of!(IoUringEvent, opcode),
                &u.opcode.to_ne_bytes(),
            );
            put(&mut b, offset_of!(IoUringEvent, fd), &u.fd.to_ne_bytes());
            b
        }
    })
}
