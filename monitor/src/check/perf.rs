//! What tracefs and the perf PMUs offer: syscall and io_uring tracepoints (opened and given
//! a program), kprobes and uprobes.
use std::path::Path;

use super::{
    Status,
    mounts::{self, TRACEFS},
    probes::Checks,
    syscalls,
};
use crate::sensors::{FILE_OPEN_FUNCTION, IOURING_SUBMIT_EVENTS};

/// The syscall tracepoints the tracepoint backend cannot do without.
const REQUIRED_SYSCALLS: [&str; 2] = ["sys_exit_openat", "sys_enter_connect"];
/// Syscall tracepoints it uses where they exist (`open` and `creat` are x86-only).
const OPTIONAL_SYSCALLS: [&str; 6] = [
    "sys_exit_openat2",
    "sys_exit_open",
    "sys_exit_creat",
    "sys_enter_sendto",
    "sys_enter_sendmsg",
    "sys_enter_sendmmsg",
];
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe/type";

/// What tracefs and the perf PMUs offer: syscall and io_uring tracepoints, kprobes, uprobes.
pub(super) fn perf_hooks(c: &mut Checks) {
    let found = mounts::with_mounted("tracefs", Path::new(TRACEFS), |tracefs| {
        let mut c = Checks::default();
        let id_of = |event: &str| -> Option<u64> {
            let path = tracefs.join("events/syscalls").join(event).join("id");
            std::fs::read_to_string(path).ok()?.trim().parse().ok()
        };
        let required = REQUIRED_SYSCALLS
            .iter()
            .try_for_each(|event| match id_of(event) {
                Some(id) => syscalls::attach_tracepoint(id).map_err(|r| format!("{event}: {r}")),
                None => Err(format!(
                    "no tracepoint syscalls/{event} (CONFIG_FTRACE_SYSCALLS is off)"
                )),
            });
        match required {
            Ok(()) => c.push(
                "hook.syscall_tracepoints",
                "syscall tracepoints",
                Status::Yes,
                "openat and connect attach",
            ),
            Err(e) => c.push(
                "hook.syscall_tracepoints",
                "syscall tracepoints",
                Status::No,
                e,
            ),
        }
        let missing: Vec<&str> = OPTIONAL_SYSCALLS
            .iter()
            .copied()
            .filter(|e| id_of(e).is_none())
            .collect();
        let detail = if missing.is_empty() {
            "all present".to_owned()
        } else {
            format!("missing {}", missing.join(", "))
        };
        c.yes_no(
            "hook.syscall_optional",
            "other syscall tracepoints",
            missing.is_empty(),
            detail,
        );
        let has = |e: &str| tracefs.join("events/io_uring").join(e).exists();
        let submit = IOURING_SUBMIT_EVENTS.iter().copied().find(|e| has(e));
        let mut absent = Vec::new();
        if !has("io_uring_create") {
            absent.push("io_uring_create");
        }
        if submit.is_none() {
            absent.push(IOURING_SUBMIT_EVENTS[0]);
        }
        let detail = match submit {
            Some(submit) if absent.is_empty() => format!("io_uring_create, {submit}"),
            _ => format!("missing {}", absent.join(", ")),
        };
        c.yes_no(
            "hook.io_uring",
            "io_uring tracepoints",
            absent.is_empty(),
            detail,
        );
        let kprobe_events = tracefs.join("kprobe_events").exists();
        (c, kprobe_events)
    });
    let kprobe_events = match found {
        Ok((found, kprobe_events)) => {
            c.0.extend(found.0);
            kprobe_events
        }
        Err(e) => {
            c.push(
                "hook.syscall_tracepoints",
                "syscall tracepoints",
                Status::Error,
                format!("tracefs: {e}"),
            );
            false
        }
    };
    let io_uring_sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let io_uring_open = io_uring_sysctl.as_deref().map(str::trim) != Some("2");
    let detail = match io_uring_sysctl {
        Some(v) => format!("kernel.io_uring_disabled = {}", v.trim()),
        None => "no kernel.io_uring_disabled (io_uring is open to all)".to_owned(),
    };
    c.yes_no(
        "kernel.io_uring",
        "io_uring open to processes",
        io_uring_open,
        detail,
    );

    const KPROBE_OPEN: (&str, &str) = ("hook.kprobe_file_open", "kprobe security_file_open");
    match std::fs::read_to_string(KPROBE_PMU)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        Some(pmu) => {
            c.attach(
                "hook.kprobe",
                "kprobes",
                syscalls::attach_kprobe(pmu, "do_sys_openat2"),
                "attaches",
            );
            c.attach(
                KPROBE_OPEN.0,
                KPROBE_OPEN.1,
                syscalls::attach_kprobe(pmu, FILE_OPEN_FUNCTION),
                "attaches: the open sensor where fentry does not",
            );
        }
        None => {
            let detail = format!(
                "no kprobe PMU ({KPROBE_PMU}){} (CONFIG_KPROBE_EVENTS is off; pthwatch uses kprobes only for opens, where neither the BPF LSM nor fentry works)",
                if kprobe_events {
                    ""
                } else {
                    " and no kprobe_events in tracefs"
                }
            );
            c.push("hook.kprobe", "kprobes", Status::No, detail);
            c.push(KPROBE_OPEN.0, KPROBE_OPEN.1, Status::No, "no kprobes");
        }
    }
    let uprobe = Path::new(UPROBE_PMU).exists();
    c.yes_no(
        "hook.uprobe",
        "uprobes",
        uprobe,
        if uprobe {
            "uprobe PMU present"
        } else {
            "no uprobe PMU (CONFIG_UPROBE_EVENTS is off)"
        },
    );
}
