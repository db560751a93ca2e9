//! `pthwatch trace`: the events of tracked lineages as JSON Lines, for debugging and tests.
use std::net::IpAddr;

use monitor_common::{
    EventHeader, iouring_kind, net_source, open_match, open_source, proc_flags, verdict,
};
use serde_json::{Value, json};

use crate::{events::Event, sensors::split_kernel_dev};

/// Names of the set bits of a flag word, from a table.
fn flag_names(value: u32, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

const PROC_FLAGS: &[(u32, &str)] = &[
    (proc_flags::PYTHON, "python"),
    (proc_flags::STARTUP, "startup"),
    (proc_flags::ATTRIBUTED, "attributed"),
    (proc_flags::HAS_HOOK_THREADS, "hook_threads"),
    (proc_flags::CANDIDATE, "candidate"),
    (proc_flags::LINEAGE, "lineage"),
    (proc_flags::BY_NAME, "by_name"),
    (proc_flags::BY_INODE, "by_inode"),
    (proc_flags::BY_BEHAVIOUR, "by_behaviour"),
    (proc_flags::PLANTED, "planted"),
];

const OPEN_MATCH: &[(u32, &str)] = &[
    (open_match::CRED_INODE, "credential"),
    (open_match::CRED_NAME, "credential_name"),
    (open_match::HOOK, "hook"),
    (open_match::SITE_DIR, "site_dir"),
    (open_match::HOOK_KNOWN, "hook_known"),
    (open_match::PATH_TRUNCATED, "path_truncated"),
];

fn open_source_name(s: u32) -> &'static str {
    match s {
        open_source::OPEN => "open",
        open_source::OPENAT => "openat",
        open_source::OPENAT2 => "openat2",
        open_source::CREAT => "creat",
        open_source::LSM_FILE_OPEN => "lsm_file_open",
        open_source::FENTRY_FILE_OPEN => "fentry_file_open",
        open_source::KPROBE_FILE_OPEN => "kprobe_file_open",
        _ => "unknown",
    }
}

pub fn net_source_name(s: u32) -> &'static str {
    match s {
        net_source::TP_CONNECT => "connect",
        net_source::TP_SENDTO => "sendto",
        net_source::TP_SENDMSG => "sendmsg",
        net_source::TP_SENDMMSG => "sendmmsg",
        net_source::CG_CONNECT4 => "cgroup_connect4",
        net_source::CG_CONNECT6 => "cgroup_connect6",
        net_source::CG_SENDMSG4 => "cgroup_sendmsg4",
        net_source::CG_SENDMSG6 => "cgroup_sendmsg6",
        net_source::CG_EGRESS => "cgroup_egress",
        net_source::SOCKOPS_ACCEPT => "sockops_accept",
        net_source::LSM_CONNECT => "lsm_socket_connect",
        net_source::LSM_SENDMSG => "lsm_socket_sendmsg",
        net_source::FENTRY_CONNECT => "fentry_socket_connect",
        net_source::FENTRY_SENDMSG => "fentry_socket_sendmsg",
        _ => "unknown",
    }
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        verdict::ALLOWED => "allowed",
        verdict::DENIED => "denied",
        verdict::KILLED => "killed",
        _ => "unknown",
    }
}

fn access_name(flags: u32) -> &'static str {
    match flags as i32 & libc::O_ACCMODE {
        libc::O_RDONLY => "read",
        libc::O_WRONLY => "write",
        _ => "read_write",
    }
}

fn family_name(f: u16) -> &'static str {
    match i32::from(f) {
        libc::AF_INET => "inet",
        libc::AF_INET6 => "inet6",
        libc::AF_UNIX => "unix",
        libc::AF_NETLINK => "netlink",
        _ => "other",
    }
}

fn header_json(kind: &str, h: &EventHeader) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("event".into(), json!(kind));
    m.insert("ts_ns".into(), json!(h.ts_ns));
    m.insert("pid".into(), json!(h.pid));
    m.insert("tgid".into(), json!(h.tgid));
    m.insert("ppid".into(), json!(h.ppid));
    m.insert("uid".into(), json!(h.uid));
    m.insert("start_ns".into(), json!(h.start_ns));
    m.insert("cgroup_id".into(), json!(h.cgroup_id));
    m.insert("lineage".into(), json!(h.lineage));
    m.insert("flags".into(), json!(flag_names(h.flags, PROC_FLAGS)));
    m
}

/// One event as a JSON object.
pub fn event_json(event: &Event) -> Value {
    let mut m;
    match event {
        Event::Exec(e) | Event::NewExecutable(e) => {
            let kind = if matches!(event, Event::Exec(_)) {
                "exec"
            } else {
                "new_executable"
            };
            m = header_json(kind, &e.header);
            m.insert("exe".into(), json!(crate::inventory::display_path(&e.exe)));
            m.insert("exe_truncated".into(), json!(e.exe_truncated));
            if e.denied {
                m.insert("refused".into(), json!(true));
            }
            m.insert("exe_ino".into(), json!(e.exe_ino));
            m.insert("exe_dev".into(), json!(dev_string(e.exe_dev)));
            m.insert("comm".into(), json!(e.comm));
            m.insert("argv".into(), json!(e.argv));
        }
        Event::Fork(e) => {
            m = header_json("fork", &e.header);
            m.insert("child_pid".into(), json!(e.child_pid));
            m.insert("child_tgid".into(), json!(e.child_tgid));
            m.insert("thread".into(), json!(e.child_tgid == e.header.tgid));
        }
        Event::Exit(h) => m = header_json("exit", h),
        Event::StartupDone(h) => m = header_json("startup_done", h),
        Event::Open(e) => {
            m = header_json("open", &e.header);
            m.insert("path".into(), json!(e.shown_path()));
            m.insert("ino".into(), json!(e.ino));
            m.insert("dev".into(), json!(dev_string(e.dev)));
            m.insert("access".into(), json!(access_name(e.flags)));
            m.insert("create".into(), json!(e.flags as i32 & libc::O_CREAT != 0));
            m.insert(
                "truncate".into(),
                json!(e.flags as i32 & libc::O_TRUNC != 0),
            );
            m.insert("directory".into(), json!(e.mode & 0o170_000 == 0o040_000));
            // The LSM `file_open` hook runs before there is a descriptor (-1).
            if e.fd >= 0 {
                m.insert("fd".into(), json!(e.fd));
            }
            m.insert("syscall".into(), json!(open_source_name(e.source)));
            m.insert("match".into(), json!(flag_names(e.match_flags, OPEN_MATCH)));
        }
        Event::Net(e) => {
            m = header_json("net", &e.header);
            m.insert("family".into(), json!(family_name(e.family)));
            m.insert(
                "address".into(),
                json!(e.addr.map(|a: IpAddr| a.to_string())),
            );
            m.insert("port".into(), json!(e.port));
            m.insert("protocol".into(), json!(protocol_name(e.protocol)));
            if e.cookie != 0 {
                m.insert("cookie".into(), json!(e.cookie));
            }
            if let Some(fd) = e.fd {
                m.insert("fd".into(), json!(fd));
            }
            m.insert("probe".into(), json!(net_source_name(e.source)));
            m.insert("verdict".into(), json!(verdict_name(e.verdict)));
        }
        Event::IoUring(e) => {
            m = header_json("io_uring", &e.header);
            let kind = if e.kind == iouring_kind::CREATE {
                "create"
            } else {
                "submit"
            };
            m.insert("kind".into(), json!(kind));
            m.insert("opcode".into(), json!(e.opcode));
            m.insert("fd".into(), json!(e.fd));
        }
    }
    Value::Object(m)
}

pub fn protocol_name(p: u32) -> &'static str {
    match p as i32 {
        libc::IPPROTO_TCP => "tcp",
        libc::IPPROTO_UDP => "udp",
        0 => "unspecified",
        _ => "other",
    }
}

fn dev_string(dev: u32) -> String {
    let (major, minor) = split_kernel_dev(dev);
    format!("{major}:{minor}")
}
