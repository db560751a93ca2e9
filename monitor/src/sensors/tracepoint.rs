//! Loading and attaching the sensors. The tracepoint backend is what every kernel pthwatch
//! supports offers; the BPF LSM backend (`super::lsm`) replaces its open and network
//! syscall tracepoints and its `cgroup_sock_addr` deciders where the kernel allows LSM
//! programs, and keeps the rest (scheduler `tp_btf`, io_uring tracepoints, egress, the
//! accept programs, `Py_RunMain`).
//! Without the BPF LSM, an fentry or kprobe on `security_file_open` (`super::file_open`)
//! replaces the open tracepoints where it attaches.
use std::{fs::File, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, SockOps, TracePoint,
    },
};
use monitor_common::{OFFSETS_GLOBAL, Offsets, maps as map_names};

use super::{Attachment, Backend, EBPF_OBJECT, OpenSensor, SensorError, SensorOptions, Sensors};

/// Scheduler tracepoints (`tp_btf`): process lifecycle. Required.
const SCHED: &[(&str, &str)] = &[
    ("process_exec", "sched_process_exec"),
    ("process_fork", "sched_process_fork"),
    ("process_exit", "sched_process_exit"),
];

/// `io_uring:io_uring_submit_req`, called `io_uring_submit_sqe` before Linux 6.2 (same
/// record layout for what pthwatch reads).
pub(crate) const IOURING_SUBMIT_EVENTS: &[&str] = &["io_uring_submit_req", "io_uring_submit_sqe"];

/// Syscall and io_uring tracepoints: (program, category, events, required). The program
/// attaches to the first of `events` this kernel has.
const TRACEPOINTS: &[(&str, &str, &[&str], bool)] = &[
    ("open_exit_openat", "syscalls", &["sys_exit_openat"], true),
    ("open_exit_open", "syscalls", &["sys_exit_open"], false),
    (
        "open_exit_openat2",
        "syscalls",
        &["sys_exit_openat2"],
        false,
    ),
    ("open_exit_creat", "syscalls", &["sys_exit_creat"], false),
    (
        "net_enter_connect",
        "syscalls",
        &["sys_enter_connect"],
        true,
    ),
    ("net_enter_sendto", "syscalls", &["sys_enter_sendto"], false),
    (
        "net_enter_sendmsg",
        "syscalls",
        &["sys_enter_sendmsg"],
        false,
    ),
    (
        "net_enter_sendmmsg",
        "syscalls",
        &["sys_enter_sendmmsg"],
        false,
    ),
    ("iouring_create", "io_uring", &["io_uring_create"], false),
    (
        "iouring_submit_req",
        "io_uring",
        IOURING_SUBMIT_EVENTS,
        false,
    ),
];

/// `cgroup_sock_addr` programs at the cgroup v2 root: the in-kernel network decision.
/// Attached as BPF links (kernel 5.7+), which coexist with other programs whatever the
/// attach mode says; `Single` is what link creation accepts (flags 0).
pub(crate) const SOCK_ADDR_PROGRAMS: &[&str] = &[
    "net_cg_connect4",
    "net_cg_connect6",
    "net_cg_sendmsg4",
    "net_cg_sendmsg6",
];

/// The `cgroup_skb` egress program: drops packets of sockets a tainted lineage holds.
pub(crate) const EGRESS_PROGRAM: &str = "net_cg_egress";

/// The programs that make connections a lineage accepts on its listening sockets its own
/// (`SOCKETS`), so that the egress program drops them too: `cgroup/sock_create` and
/// `sock_ops` at the cgroup v2 root. Both are needed; they attach under either backend
/// (under the LSM backend they also report such connections in alert mode).
pub(crate) const ACCEPT_PROGRAMS: &[&str] = &["net_cg_sock_create", "net_sockops"];

/// Without these, nothing denies a connect in the kernel: a run that is to block or kill
/// refuses to start rather than pretend.
const CONNECT_PROGRAMS: &[&str] = &["net_cg_connect4", "net_cg_connect6"];

/// The open tracepoints, which the LSM `file_open` program, or the fentry or kprobe on
/// `security_file_open`, replaces.
fn is_open_tracepoint(name: &str) -> bool {
    name.starts_with("open_exit_")
}

/// The network syscall tracepoints, which the LSM `socket_connect` and `socket_sendmsg`
/// programs replace (or, without the BPF LSM, fentry programs on the same functions where
/// opens are taken by fentry): then no syscall tracepoint is attached at all, so the
/// host's system calls stay off the kernel's traced path (any program on a syscall
/// tracepoint puts every system call of every task on it).
fn is_net_syscall_tracepoint(name: &str) -> bool {
    name.starts_with("net_enter_")
}

/// Loads the kernel object with offsets for this kernel, attaches the programs of the
/// backend `want` (falling back to the tracepoint backend, with an error in the log, when
/// the LSM programs do not load or attach), and records what attached.
pub fn load_sensors(
    opts: &SensorOptions,
    offsets: &Offsets,
    tracefs: &Path,
    cgroup_root: Option<&Path>,
    want: Backend,
) -> Result<Sensors, SensorError> {
    if EBPF_OBJECT.is_empty() {
        return Err(SensorError::NoObject);
    }
    let btf = Btf::from_sys_fs().map_err(|e| SensorError::Btf(e.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(OFFSETS_GLOBAL, offsets, true)
        .map_max_entries(map_names::EVENTS, opts.ringbuf_bytes)
        .load(EBPF_OBJECT)
        .map_err(SensorError::Load)?;
    let mut attachments = Vec::new();
    let mut backend = Backend::Tracepoint;
    if want == Backend::Lsm {
        match super::lsm::attach(&mut ebpf, &btf) {
            Ok(attached) => {
                attachments.extend(attached);
                backend = Backend::Lsm;
            }
            Err(e) => tracing::error!(
                error = %short(&e),
                "FALLBACK: the BPF LSM programs did not load or attach; using the tracepoint backend (opens seen at security_file_open where fentry or a kprobe attaches, else at the open syscalls; connects decided by the cgroup programs)",
            ),
        }
    }

    // Without the BPF LSM, opens are taken at `security_file_open` where the kernel
    // allows it (see `super::file_open`), in place of the open tracepoints.
    let mut opens = if backend == Backend::Lsm {
        OpenSensor::Lsm
    } else {
        OpenSensor::Tracepoints
    };
    if backend == Backend::Tracepoint {
        match super::file_open::attach(&mut ebpf, &btf) {
            Ok((sensor, attached)) => {
                tracing::info!(
                    sensor = sensor.describe(),
                    "open sensor: opens are taken at security_file_open, in place of the open syscall tracepoints (io_uring opens are resolved to files)",
                );
                attachments.push(attached);
                opens = sensor;
            }
            Err((fentry, kprobe)) => tracing::info!(
                fentry = %fentry,
                kprobe = %kprobe,
                "open sensor: no fentry or kprobe on security_file_open here; using the open syscall tracepoints (io_uring opens seen only as io_uring activity)",
            ),
        }
    }

    // Where opens are taken by fentry, network attempts are too (`super::file_open::
    // attach_network`): then no syscall tracepoint is attached at all.
    let mut net_tracepoints = backend != Backend::Lsm;
    if opens == OpenSensor::Fentry {
        match super::file_open::attach_network(&mut ebpf, &btf) {
            Ok(attached) => {
                tracing::info!(
                    "network sensor: connects and sends are taken at security_socket_connect and security_socket_sendmsg (fentry), in place of the network syscall tracepoints: no syscall tracepoint is attached",
                );
                attachments.extend(attached);
                net_tracepoints = false;
            }
            Err(e) => tracing::info!(
                error = %e,
                "network sensor: no fentry on the socket security functions here; using the network syscall tracepoints",
            ),
        }
    }

    for &(name, tp) in SCHED {
        let result = attach_btf_tracepoint(&mut ebpf, name, tp, &btf);
        record(&mut attachments, name, tp.to_owned(), true, false, result)?;
    }
    for &(name, category, events, required) in TRACEPOINTS {
        if opens != OpenSensor::Tracepoints && is_open_tracepoint(name) {
            continue;
        }
        if !net_tracepoints && is_net_syscall_tracepoint(name) {
            continue;
        }
        let event = first_event(tracefs, category, events);
        let result = check_format(tracefs, category, event)
            .and_then(|()| attach_tracepoint(&mut ebpf, name, category, event));
        record(
            &mut attachments,
            name,
            format!("{category}/{event}"),
            required,
            false,
            result,
        )?;
    }
    let cgroup = cgroup_root
        .map(|root| {
            File::open(root).map_err(|source| SensorError::Cgroup {
                path: root.to_owned(),
                source,
            })
        })
        .transpose()?;
    let cgroup_target = cgroup_root.map_or_else(
        || "(no cgroup v2 hierarchy)".to_owned(),
        |root| root.display().to_string(),
    );
    let enforcing = opts.enforcing();
    // Under the LSM backend the socket hooks decide; the cgroup programs would only
    // repeat their decisions.
    let sock_addr = if backend == Backend::Lsm {
        &[][..]
    } else {
        SOCK_ADDR_PROGRAMS
    };
    for &name in sock_addr {
        let required = enforcing && CONNECT_PROGRAMS.contains(&name);
        let result = match &cgroup {
            Some(cgroup) => attach_sock_addr(&mut ebpf, name, cgroup),
            None => Err(SensorError::NoCgroup2),
        };
        let result = result.map_err(|e| {
            if required {
                SensorError::Enforcement {
                    program: name,
                    detail: short(&e),
                }
            } else {
                e
            }
        });
        let explained = enforcing && !required && result.is_err();
        if explained && let Err(e) = &result {
            tracing::error!(
                program = name,
                error = %short(e),
                "DEGRADED: UDP sends without connect are reported but not denied in the kernel; connects still are",
            );
        }
        record(
            &mut attachments,
            name,
            cgroup_target.clone(),
            required,
            explained,
            result,
        )?;
    }
    let result = match &cgroup {
        Some(cgroup) => attach_egress(&mut ebpf, cgroup),
        None => Err(SensorError::NoCgroup2),
    };
    record_optional(
        &mut attachments,
        EGRESS_PROGRAM,
        &cgroup_target,
        enforcing,
        "packets on sockets a hook opened before it read credentials are not dropped; new connects and sendmsg are still denied in the kernel, and kill mode still kills (`pthwatch check` reports this as program.own_egress)",
        result,
    )?;
    for &name in ACCEPT_PROGRAMS {
        let result = match &cgroup {
            Some(cgroup) => attach_accept(&mut ebpf, name, cgroup),
            None => Err(SensorError::NoCgroup2),
        };
        record_optional(
            &mut attachments,
            name,
            &cgroup_target,
            enforcing,
            "connections a hook accepts on a socket it listens on are not dropped at egress; connects and sendmsg are still denied in the kernel (under the BPF LSM backend, sends on them too), and kill mode still kills",
            result,
        )?;
    }

    for &(name, _) in super::STARTUP_UPROBES {
        let uprobe: &mut aya::programs::UProbe = program(&mut ebpf, name)?;
        uprobe
            .load()
            .map_err(|source| SensorError::Program { name, source })?;
    }

    Sensors::from_loaded(ebpf, backend, opens, attachments, opts)
}

/// Records an optional cgroup program. When a rule enforces and it did not attach, what
/// that costs (`degraded`) is logged at error level, which explains the failure.
fn record_optional(
    attachments: &mut Vec<Attachment>,
    program: &'static str,
    target: &str,
    enforcing: bool,
    degraded: &str,
    result: Result<(), SensorError>,
) -> Result<(), SensorError> {
    if enforcing && let Err(e) = &result {
        tracing::error!(program, error = %short(e), "DEGRADED: {degraded}");
    }
    record(
        attachments,
        program,
        target.to_owned(),
        false,
        enforcing,
        result,
    )
}

/// Records what attached. An optional probe that did not is logged as running degraded,
/// unless the caller already said what that costs (`explained`).
fn record(
    attachments: &mut Vec<Attachment>,
    program: &'static str,
    target: String,
    required: bool,
    explained: bool,
    result: Result<(), SensorError>,
) -> Result<(), SensorError> {
    match result {
        Ok(()) => {
            attachments.push(Attachment {
                program,
                target,
                error: None,
                required,
            });
            Ok(())
        }
        Err(e) if !required => {
            if !explained {
                tracing::warn!(program, %target, error = %e, "optional probe not attached; running degraded");
            }
            attachments.push(Attachment {
                program,
                target,
                error: Some(e.to_string()),
                required,
            });
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The program `name` of the object, as its concrete type.
pub(super) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, SensorError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(SensorError::MissingProgram(name))?
        .try_into()
        .map_err(|source| SensorError::Program { name, source })
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    tp: &str,
    btf: &Btf,
) -> Result<(), SensorError> {
    let err = |source| SensorError::Program { name, source };
    let program: &mut BtfTracePoint = program(ebpf, name)?;
    program.load(tp, btf).map_err(err)?;
    program.attach().map_err(err)?;
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    event: &str,
) -> Result<(), SensorError> {
    let err = |source| SensorError::Program { name, source };
    let program: &mut TracePoint = program(ebpf, name)?;
    program.load().map_err(err)?;
    program.attach(category, event).map_err(err)?;
    Ok(())
}

fn attach_sock_addr(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<(), SensorError> {
    let err = |source| SensorError::Program { name, source };
    let program: &mut CgroupSockAddr = program(ebpf, name)?;
    program.load().map_err(err)?;
    program
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(err)?;
    Ok(())
}

/// A program error in one line (a rejected program: the verifier's reason, not its log).
pub(super) fn short(e: &SensorError) -> String {
    match e {
        SensorError::Program { name, source } => {
            format!("{name}: {}", crate::check::short_error(source))
        }
        other => other.to_string(),
    }
}

fn attach_egress(ebpf: &mut Ebpf, cgroup: &File) -> Result<(), SensorError> {
    let name = EGRESS_PROGRAM;
    let err = |source| SensorError::Program { name, source };
    let program: &mut CgroupSkb = program(ebpf, name)?;
    program.load().map_err(err)?;
    program
        .attach(
            cgroup,
            CgroupSkbAttachType::Egress,
            CgroupAttachMode::Single,
        )
        .map_err(err)?;
    Ok(())
}

/// One of `ACCEPT_PROGRAMS`, as a BPF link at the cgroup v2 root.
fn attach_accept(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<(), SensorError> {
    let err = |source| SensorError::Program { name, source };
    if name == "net_sockops" {
        let program: &mut SockOps = program(ebpf, name)?;
        program.load().map_err(err)?;
        program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(err)?;
    } else {
        let program: &mut CgroupSock = program(ebpf, name)?;
        program.load().map_err(err)?;
        program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(err)?;
    }
    Ok(())
}

/// The first of `events` this kernel has (the first one when it has none, for the error).
fn first_event<'a>(tracefs: &Path, category: &str, events: &[&'a str]) -> &'a str {
    events
        .iter()
        .copied()
        .find(|e| tracefs.join("events").join(category).join(e).exists())
        .unwrap_or(events[0])
}

/// The programs read tracepoint records at fixed offsets; refuse to attach where this
/// kernel's record layout differs.
fn check_format(tracefs: &Path, category: &str, event: &str) -> Result<(), SensorError> {
    let expected: &[(&str, usize)] = match (category, event) {
        ("io_uring", "io_uring_submit_req" | "io_uring_submit_sqe") => &[("opcode", 32)],
        ("io_uring", "io_uring_create") => &[("fd", 8)],
        ("syscalls", e) if e.starts_with("sys_exit_") => &[("ret", 16)],
        _ => &[],
    };
    if expected.is_empty() {
        return Ok(());
    }
    let path = tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| SensorError::Mount(format!("reading {}: {e}", path.display())))?;
    for &(field, offset) in expected {
        let found = text.lines().find_map(|line| {
            let decl = line.trim().strip_prefix("field:")?;
            let (decl, rest) = decl.split_once(';')?;
            let name = decl.rsplit([' ', '*']).next()?;
            if name != field {
                return None;
            }
            rest.trim()
                .strip_prefix("offset:")?
                .split(';')
                .next()?
                .parse::<usize>()
                .ok()
        });
        if found != Some(offset) {
            return Err(SensorError::Mount(format!(
                "{category}/{event}: field {field} at offset {found:?}, the program expects {offset}"
            )));
        }
    }
    Ok(())
}
