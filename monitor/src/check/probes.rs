//! The checks themselves: privileges, BTF, program types, helpers and maps, BTF-attached
//! hooks, BPF LSM and filesystems. Each appends rows to `Checks`; none decides anything.
use std::{error::Error, io, path::Path};

use aya::{
    maps::MapType,
    programs::{LsmAttachType, ProgramType},
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

use super::{
    Check, Status,
    mounts::{self, BPFFS, MountEntry, PRIVATE_CGROUP2, SECURITYFS, TRACEFS},
    syscalls::{self, BtfHook, Refusal},
};
use crate::{
    btf::{Btf, BtfKind, VMLINUX_BTF},
    sensors::FILE_OPEN_FUNCTION,
};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks are collected in report order.
#[derive(Default)]
pub(super) struct Checks(pub(super) Vec<Check>);

impl Checks {
    pub(super) fn push(
        &mut self,
        id: &'static str,
        what: &'static str,
        status: Status,
        detail: impl Into<String>,
    ) {
        self.0.push(Check {
            id,
            what,
            status,
            detail: detail.into(),
            errno: None,
        });
    }

    pub(super) fn yes_no(
        &mut self,
        id: &'static str,
        what: &'static str,
        yes: bool,
        detail: impl Into<String>,
    ) {
        self.push(id, what, if yes { Status::Yes } else { Status::No }, detail);
    }

    /// Sets the errno of the last check; a permission errno makes it "refused".
    fn set_errno(&mut self, errno: Option<i32>) {
        let last = self.0.last_mut().expect("a check was pushed");
        last.errno = errno.map(syscalls::errno_name);
        if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
            last.status = Status::Refused;
        }
    }

    /// A raw load/attach probe: "no" when the kernel lacks the feature, "refused" when it
    /// will not let this process, "error" otherwise.
    pub(super) fn attach(
        &mut self,
        id: &'static str,
        what: &'static str,
        result: Result<(), Refusal>,
        ok: &str,
    ) {
        match result {
            Ok(()) => self.push(id, what, Status::Yes, ok),
            Err(r) => {
                let status = if r.is_unsupported() {
                    Status::No
                } else {
                    Status::Error
                };
                self.push(id, what, status, r.to_string());
                self.set_errno(Some(r.errno));
            }
        }
    }

    /// An aya feature probe.
    fn feature<E: Error + 'static>(
        &mut self,
        id: &'static str,
        what: &'static str,
        result: Result<bool, E>,
        ok: &str,
        no: &str,
    ) {
        match result {
            Ok(yes) => self.yes_no(id, what, yes, if yes { ok } else { no }),
            Err(e) => {
                self.push(id, what, Status::Error, error_chain(&e));
                self.set_errno(errno_in(&e));
            }
        }
    }
}

/// `e: source: source`, OS errors as `EPERM (Operation not permitted)`.
fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = match s
            .downcast_ref::<io::Error>()
            .and_then(|io| Some((io, io.raw_os_error()?)))
        {
            Some((io, errno)) => format!(
                "{} ({})",
                syscalls::errno_name(errno),
                syscalls::describe(io)
            ),
            None => s.to_string(),
        };
        text = format!("{text}: {next}");
        source = s.source();
    }
    text
}

/// The first OS errno in an error chain.
fn errno_in(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut source: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(errno) = s
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(errno);
        }
        source = s.source();
    }
    None
}

pub(super) fn uname() -> (String, String) {
    // SAFETY: `utsname` is plain data, and uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.machine))
}
pub(super) fn privileges(c: &mut Checks) {
    let Some(caps) = syscalls::effective_caps() else {
        c.push(
            "privileges.bpf",
            "may load BPF programs",
            Status::Error,
            "cannot read /proc/self/status",
        );
        return;
    };
    let has = |cap: u32| caps & (1 << cap) != 0;
    let bpf = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    let names = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ];
    let missing: Vec<&str> = names
        .iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, n)| *n)
        .collect();
    let detail = if missing.is_empty() {
        "all needed capabilities".to_owned()
    } else {
        format!("missing {}", missing.join(", "))
    };
    c.yes_no("privileges.bpf", "may load BPF programs", bpf, detail);
    c.yes_no(
        "privileges.net_admin",
        "may attach cgroup programs",
        has(CAP_NET_ADMIN),
        if has(CAP_NET_ADMIN) {
            "CAP_NET_ADMIN"
        } else {
            "missing CAP_NET_ADMIN"
        },
    );
}

pub(super) fn kernel_btf(c: &mut Checks) -> Option<Btf> {
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            c.push("btf.vmlinux", "kernel BTF", Status::No, e.to_string());
            return None;
        }
    };
    c.push(
        "btf.vmlinux",
        "kernel BTF",
        Status::Yes,
        format!("{VMLINUX_BTF}, {} types", btf.type_count()),
    );
    match btf.kernel_offsets() {
        Ok(o) => c.push(
            "btf.offsets",
            "structure offsets",
            Status::Yes,
            format!(
                "all resolved (task_struct.tgid +{}, file.f_path +{}, mount.mnt +{})",
                o.task_tgid, o.file_f_path, o.mount_mnt
            ),
        ),
        Err(e) => c.push(
            "btf.offsets",
            "structure offsets",
            Status::No,
            e.to_string(),
        ),
    }
    Some(btf)
}

pub(super) fn programs(c: &mut Checks) {
    let types: [(&'static str, &'static str, ProgramType); 7] = [
        (
            "program.tracepoint",
            "tracepoint programs",
            ProgramType::TracePoint,
        ),
        (
            "program.raw_tracepoint",
            "raw tracepoint programs",
            ProgramType::RawTracePoint,
        ),
        (
            "program.tracing",
            "tracing programs (fentry probe)",
            ProgramType::Tracing,
        ),
        (
            "program.lsm",
            "LSM programs",
            ProgramType::Lsm(LsmAttachType::Mac),
        ),
        (
            "program.cgroup_sock_addr",
            "cgroup_sock_addr programs",
            ProgramType::CgroupSockAddr,
        ),
        (
            "program.cgroup_skb",
            "cgroup_skb programs",
            ProgramType::CgroupSkb,
        ),
        ("program.kprobe", "kprobe programs", ProgramType::KProbe),
    ];
    for (id, what, ty) in types {
        c.feature(
            id,
            what,
            is_program_supported(ty),
            "loads",
            "not supported by this kernel",
        );
    }
    let helpers = [
        (
            "helper.probe_read_kernel",
            "bpf_probe_read_kernel",
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_probe_read_kernel,
        ),
        (
            "helper.send_signal",
            "bpf_send_signal",
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_send_signal,
        ),
        (
            "helper.get_socket_cookie",
            "bpf_get_socket_cookie (sock_addr)",
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_get_socket_cookie,
        ),
    ];
    for (id, what, ty, helper) in helpers {
        c.feature(
            id,
            what,
            is_helper_supported(ty, helper),
            "available",
            "not available",
        );
    }
    c.feature(
        "map.ringbuf",
        "ring buffer map",
        is_map_supported(MapType::RingBuf),
        "available",
        "not supported (Linux 5.8+)",
    );
}

/// `tp_btf` and `fentry`: loaded on their BTF target and attached.
pub(super) fn btf_hooks(c: &mut Checks, btf: &Btf) {
    let tp = "btf_trace_sched_process_exec";
    match btf.type_id(tp, BtfKind::Typedef) {
        Some(id) => c.attach(
            "hook.tp_btf",
            "tp_btf sched_process_exec",
            syscalls::load_and_attach_btf(BtfHook::TpBtf, id),
            "attaches",
        ),
        None => c.push(
            "hook.tp_btf",
            "tp_btf sched_process_exec",
            Status::No,
            format!("no {tp} in the kernel BTF"),
        ),
    }
    let func = "do_sys_openat2";
    match btf.type_id(func, BtfKind::Func) {
        Some(id) => c.attach(
            "hook.fentry",
            "fentry do_sys_openat2",
            syscalls::load_and_attach_btf(BtfHook::Fentry, id),
            "attaches",
        ),
        None => c.push(
            "hook.fentry",
            "fentry do_sys_openat2",
            Status::No,
            format!("no {func} in the kernel BTF"),
        ),
    }
}

/// The open sensor without the BPF LSM: an `fentry` on `security_file_open`, loaded and
/// attached (the kprobe on it is probed with the other perf hooks).
pub(super) fn file_open_fentry(c: &mut Checks, btf: &Btf) {
    const ID: (&str, &str) = ("hook.fentry_file_open", "fentry security_file_open");
    match btf.type_id(FILE_OPEN_FUNCTION, BtfKind::Func) {
        Some(id) => c.attach(
            ID.0,
            ID.1,
            syscalls::load_and_attach_btf(BtfHook::Fentry, id),
            "attaches: opens without the BPF LSM are resolved to files, io_uring's included",
        ),
        None => c.push(
            ID.0,
            ID.1,
            Status::No,
            format!("no {FILE_OPEN_FUNCTION} in the kernel BTF"),
        ),
    }
}

/// BPF LSM: listed as active in securityfs, and a `file_open` program loads and attaches.
pub(super) fn lsm(c: &mut Checks, btf: Option<&Btf>) {
    let list = mounts::with_mounted("securityfs", Path::new(SECURITYFS), |p| {
        std::fs::read_to_string(p.join("lsm"))
    });
    match list {
        Ok(Ok(list)) => {
            let listed = list.trim().split(',').any(|l| l == "bpf");
            let detail = if listed {
                format!("active LSMs: {}", list.trim())
            } else {
                format!("not in {} (boot with lsm=...,bpf)", list.trim())
            };
            c.yes_no("lsm.active", "bpf in the active LSM list", listed, detail);
        }
        Ok(Err(e)) => c.push(
            "lsm.active",
            "bpf in the active LSM list",
            Status::Error,
            format!("reading the LSM list: {e}"),
        ),
        Err(e) => c.push(
            "lsm.active",
            "bpf in the active LSM list",
            Status::Error,
            e.to_string(),
        ),
    }
    let hook = "bpf_lsm_file_open";
    match btf.map(|b| b.type_id(hook, BtfKind::Func)) {
        Some(Some(id)) => c.attach(
            "lsm.file_open",
            "lsm/file_open",
            syscalls::load_and_attach_btf(BtfHook::Lsm, id),
            "loads and attaches",
        ),
        Some(None) => c.push(
            "lsm.file_open",
            "lsm/file_open",
            Status::No,
            format!("no {hook} in the kernel BTF (CONFIG_BPF_LSM is off)"),
        ),
        None => c.push(
            "lsm.file_open",
            "lsm/file_open",
            Status::No,
            "needs kernel BTF",
        ),
    }
}

pub(super) fn filesystems(c: &mut Checks) {
    let entries = match mounts::mounts() {
        Ok(e) => e,
        Err(e) => {
            c.push("mount.tracefs", "tracefs", Status::Error, e.to_string());
            return;
        }
    };
    let mut fs = |id, what, fstype, preferred: &[&str], target: &str| match mounts::find_in(
        &entries, fstype, preferred,
    ) {
        Some(p) => c.push(id, what, Status::Yes, format!("at {}", p.display())),
        None => c.push(
            id,
            what,
            Status::No,
            format!("not mounted; `pthwatch run` mounts it at {target}"),
        ),
    };
    fs("mount.tracefs", "tracefs", "tracefs", &[TRACEFS], TRACEFS);
    fs("mount.bpffs", "bpffs", "bpf", &[BPFFS], BPFFS);
    fs(
        "mount.securityfs",
        "securityfs",
        "securityfs",
        &[SECURITYFS],
        SECURITYFS,
    );
    let cgroup2 = mounts::find_in(
        &entries,
        "cgroup2",
        &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
    );
    match cgroup2 {
        Some(p) => {
            let layout = cgroup_layout(&entries, &p);
            c.push(
                "mount.cgroup2",
                "cgroup v2",
                Status::Yes,
                format!("at {} ({layout})", p.display()),
            );
        }
        None => c.push(
            "mount.cgroup2",
            "cgroup v2",
            Status::No,
            format!("not mounted; `pthwatch run` mounts it at {PRIVATE_CGROUP2}"),
        ),
    }
}

fn cgroup_layout(entries: &[MountEntry], cgroup2: &Path) -> &'static str {
    if entries.iter().any(|e| e.fstype == "cgroup") {
        "hybrid layout: cgroup v1 controllers beside it"
    } else if cgroup2 == Path::new("/sys/fs/cgroup") {
        "unified layout"
    } else {
        "cgroup v2 only"
    }
}
