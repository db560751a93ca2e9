//! `pthwatch check`: what this kernel offers, which sensor backend pthwatch will use, and
//! what is degraded or missing.
//!
//! Every "yes" is the kernel doing it: programs are really loaded and, where the hook needs
//! a BTF target or a perf event, attached and detached again. Nothing is inferred from
//! version numbers or kernel config files. Missing filesystems are looked at in a private
//! mount namespace, so the check leaves the host as it found it.
pub mod mounts;
mod own;
mod perf;
mod probes;
mod syscalls;

use std::fmt;

use serde::Serialize;

pub(crate) use self::own::short_error;
use self::probes::Checks;
use crate::sensors::{Backend, OpenSensor};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Yes,
    No,
    /// The kernel has the feature but will not let this process use it (EPERM, EACCES:
    /// privileges, lockdown, a security policy); treated as "no".
    Refused,
    /// The probe itself failed in an unexpected way; treated as "no".
    Error,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable id, `<section>.<name>`, for scripts reading `--json`.
    pub id: &'static str,
    pub what: &'static str,
    pub status: Status,
    pub detail: String,
    /// The errno of a refusal (`"EPERM"`), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapabilityReport {
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`.
    pub machine: String,
    pub checks: Vec<Check>,
    /// The sensor backend pthwatch would use; `None` when it cannot protect this host.
    pub backend: Option<Backend>,
    /// What the daemon would take opens from (`None` with no backend): the LSM hook, an
    /// fentry or kprobe on `security_file_open`, or the open tracepoints.
    pub opens: Option<OpenSensor>,
    /// What works less well than on a fully capable kernel, and why.
    pub degraded: Vec<String>,
    /// Why pthwatch cannot protect this host at all; empty when it can.
    pub cannot_protect: Vec<String>,
}

#[cfg(test)]
impl CapabilityReport {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Non-zero when pthwatch cannot protect this host.
pub fn exit_code(report: &CapabilityReport) -> u8 {
    u8::from(!report.cannot_protect.is_empty())
}

/// Probes this kernel. Takes well under a few seconds; needs root for meaningful answers.
pub fn probe() -> CapabilityReport {
    let (kernel, machine) = probes::uname();
    let mut c = Checks::default();
    probes::privileges(&mut c);
    let btf = probes::kernel_btf(&mut c);
    probes::programs(&mut c);
    own::network_programs(&mut c);
    if let Some(btf) = &btf {
        probes::btf_hooks(&mut c, btf);
        probes::file_open_fentry(&mut c, btf);
    }
    probes::lsm(&mut c, btf.as_ref());
    let offsets = btf.as_ref().and_then(|b| b.kernel_offsets().ok());
    own::lsm_programs(&mut c, offsets.as_ref());
    perf::perf_hooks(&mut c);
    own::open_programs(&mut c, offsets.as_ref());
    probes::filesystems(&mut c);
    c.0.sort_by_key(|check| section_of(check.id).0);
    let (backend, degraded, cannot_protect) = verdict(&c.0);
    let opens = backend.map(|b| open_sensor(&c.0, b));
    CapabilityReport {
        kernel,
        machine,
        checks: c.0,
        backend,
        opens,
        degraded,
        cannot_protect,
    }
}

/// The backend the daemon should try at start-up, by the same BPF LSM checks and rule
/// as `pthwatch check` (bpf in the active LSM list, a `file_open` program loads and
/// attaches), with the reason when it is the tracepoint backend.
pub fn preferred_backend(btf: &crate::btf::Btf) -> (Backend, String) {
    let mut c = Checks::default();
    probes::lsm(&mut c, Some(btf));
    let find = |id: &str| c.0.iter().find(|check| check.id == id);
    let active = find("lsm.active");
    let attach = find("lsm.file_open");
    let listed = active.is_none_or(|a| a.status != Status::No);
    match attach {
        Some(a) if listed && a.status == Status::Yes => (Backend::Lsm, a.detail.clone()),
        _ => {
            let why = [active, attach]
                .into_iter()
                .flatten()
                .find(|check| check.status != Status::Yes)
                .map_or_else(String::new, |check| {
                    format!("{}: {}", check.what, check.detail)
                });
            (Backend::Tracepoint, why)
        }
    }
}

/// What reports opens under `backend`: without the BPF LSM, the first of fentry and
/// kprobe on `security_file_open` that attaches and whose pthwatch program loads (the
/// daemon tries them in that order).
fn open_sensor(checks: &[Check], backend: Backend) -> OpenSensor {
    let ok = |id: &str| checks.iter().any(|c| c.id == id && c.status == Status::Yes);
    if backend == Backend::Lsm {
        OpenSensor::Lsm
    } else if ok("hook.fentry_file_open") && ok("program.own_fentry_file_open") {
        OpenSensor::Fentry
    } else if ok("hook.kprobe_file_open") && ok("program.own_kprobe_file_open") {
        OpenSensor::Kprobe
    } else {
        OpenSensor::Tracepoints
    }
}

/// Picks the backend and explains what is degraded or blocking, from the checks alone.
/// Each message says what pthwatch cannot do, then its cause.
fn verdict(checks: &[Check]) -> (Option<Backend>, Vec<String>, Vec<String>) {
    let find = |id: &str| checks.iter().find(|c| c.id == id);
    let ok = |id: &str| find(id).is_some_and(|c| c.status == Status::Yes);
    let cause = |id: &str| {
        find(id).map_or_else(
            || format!("cause: {id} was not probed"),
            |c| format!("{}: {}", c.what, c.detail),
        )
    };

    let mut cannot = Vec::new();
    if !ok("privileges.bpf") {
        cannot.push(format!(
            "cannot load BPF programs; run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN. {}",
            cause("privileges.bpf")
        ));
    }
    if !ok("btf.offsets") {
        let id = if ok("btf.vmlinux") {
            "btf.offsets"
        } else {
            "btf.vmlinux"
        };
        cannot.push(format!(
            "kernel structure offsets are unknown. {}",
            cause(id)
        ));
    }
    if !ok("map.ringbuf") {
        cannot.push(format!(
            "events cannot reach the daemon (ring buffers need Linux 5.8+). {}",
            cause("map.ringbuf")
        ));
    }
    if !ok("hook.tp_btf") {
        cannot.push(format!(
            "process exec, fork and exit cannot be followed. {}",
            cause("hook.tp_btf")
        ));
    }
    let lsm = ok("lsm.file_open")
        && find("lsm.active").is_none_or(|c| c.status != Status::No)
        && find("lsm.own_programs").is_none_or(|c| c.status == Status::Yes);
    let tracepoints = ok("program.tracepoint") && ok("hook.syscall_tracepoints");
    if !lsm && !tracepoints {
        cannot.push(format!(
            "file opens and connects cannot be seen: no BPF LSM and no syscall tracepoints. {}",
            cause("hook.syscall_tracepoints")
        ));
    }

    let mut degraded = Vec::new();
    if !lsm {
        let id = if find("lsm.active").is_some_and(|c| c.status == Status::No) {
            "lsm.active"
        } else if ok("lsm.file_open") {
            "lsm.own_programs"
        } else {
            "lsm.file_open"
        };
        let opens = open_sensor(checks, Backend::Tracepoint);
        if opens.sees_files() {
            degraded.push(format!(
                "no BPF LSM: opens are taken by {} (io_uring's included), connects decided by the cgroup programs. {}",
                opens.describe(),
                cause(id)
            ));
        } else {
            degraded.push(format!(
                "no BPF LSM: io_uring opens are reported as io_uring activity, not resolved to files, and opens are seen as the paths processes pass, not the files they reach. {}",
                cause(id)
            ));
        }
        // Network attempts go to fentry programs along with opens, when those load too;
        // otherwise opens, network attempts or both come from syscall tracepoints.
        let network_fentry = opens == OpenSensor::Fentry && ok("program.own_fentry_network");
        if !network_fentry {
            let id = if opens == OpenSensor::Fentry {
                "program.own_fentry_network"
            } else {
                "hook.fentry_file_open"
            };
            degraded.push(format!(
                "syscall tracepoints are attached: every system call on the host takes the kernel's traced path (a syscall storm runs about 15% slower on the development VM; the BPF LSM, or fentry on security_file_open and the socket functions, avoids it). {}",
                cause(id)
            ));
        }
        if ok("kernel.io_uring") && !ok("hook.io_uring") {
            degraded.push(format!(
                "io_uring use goes unseen. {}",
                cause("hook.io_uring")
            ));
        }
        if !ok("hook.syscall_optional") {
            degraded.push(format!(
                "some opens and sends go unseen. {}",
                cause("hook.syscall_optional")
            ));
        }
    }
    // One line per lost capability: its first cause.
    let first_missing = |ids: &[&'static str]| ids.iter().copied().find(|id| !ok(id));
    // Under the LSM backend the socket hooks deny; the cgroup programs are not used.
    if !lsm
        && let Some(id) = first_missing(&[
            "privileges.net_admin",
            "program.cgroup_sock_addr",
            "program.own_sock_addr",
        ])
    {
        degraded.push(format!(
            "network attempts are reported but cannot be denied in the kernel. {}",
            cause(id)
        ));
    }
    if let Some(id) = first_missing(&[
        "program.cgroup_skb",
        "helper.get_socket_cookie",
        "program.own_egress",
    ]) {
        degraded.push(format!(
            "packets of sockets a hook used cannot be dropped at egress. {}",
            cause(id)
        ));
    } else if let Some(id) = first_missing(&["program.own_accept"]) {
        degraded.push(format!(
            "connections a hook accepts on a socket it listens on cannot be dropped at egress{}. {}",
            if lsm {
                " (the LSM still refuses sends on them)"
            } else {
                ""
            },
            cause(id)
        ));
    }
    if !ok("helper.send_signal") {
        degraded.push(format!(
            "kill mode unavailable (alert and block still work). {}",
            cause("helper.send_signal")
        ));
    }
    if !ok("hook.uprobe") {
        degraded.push(format!(
            "the end of interpreter start-up (Py_RunMain) is not seen. {}",
            cause("hook.uprobe")
        ));
    }
    let backend = match (cannot.is_empty(), lsm) {
        (false, _) => None,
        (true, true) => Some(Backend::Lsm),
        (true, false) => Some(Backend::Tracepoint),
    };
    (backend, degraded, cannot)
}

impl fmt::Display for CapabilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pthwatch check: kernel {} ({})",
            self.kernel, self.machine
        )?;
        let width = self.checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
        let mut section = None;
        for c in &self.checks {
            let (rank, title) = section_of(c.id);
            if section != Some(rank) {
                section = Some(rank);
                writeln!(f, "\n{title}")?;
            }
            let status = match c.status {
                Status::Yes => "yes",
                Status::No => "no",
                Status::Refused => "REFUSED",
                Status::Error => "ERROR",
            };
            writeln!(f, "  {:<width$}  {status:<7}  {}", c.what, c.detail)?;
        }
        let backend = self.backend.map_or("none", Backend::describe);
        writeln!(f, "\nbackend: {backend}")?;
        if let Some(opens) = self.opens {
            writeln!(f, "opens: {}", opens.describe())?;
        }
        for (title, items) in [
            ("degraded", &self.degraded),
            ("cannot protect this host", &self.cannot_protect),
        ] {
            if !items.is_empty() {
                writeln!(f, "{title}:")?;
                for item in items {
                    writeln!(f, "  - {item}")?;
                }
            }
        }
        if self.cannot_protect.is_empty() {
            writeln!(f, "pthwatch can protect this host.")?;
        }
        Ok(())
    }
}

/// Report sections, in display order: (id prefix, title).
const SECTIONS: [(&str, &str); 9] = [
    ("privileges", "privileges"),
    ("btf", "BTF"),
    ("program", "program types (loaded)"),
    ("helper", "helpers"),
    ("map", "maps"),
    ("hook", "hooks (loaded and attached)"),
    ("lsm", "BPF LSM"),
    ("kernel", "kernel settings"),
    ("mount", "filesystems"),
];

fn section_of(id: &str) -> (usize, &'static str) {
    let prefix = id.split('.').next().unwrap_or_default();
    SECTIONS
        .iter()
        .enumerate()
        .find(|(_, (p, _))| *p == prefix)
        .map_or((SECTIONS.len(), "other"), |(i, (_, title))| (i, *title))
}

#[cfg(test)]
mod tests;
