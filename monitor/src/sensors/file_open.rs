//! The open sensor of the tracepoint backend, where the kernel has no BPF LSM: an `fentry`
//! program on `security_file_open`, or a `kprobe` on it where `fentry` does not attach,
//! in place of the open syscalls' exit tracepoints.
//!
//! `security_file_open(struct file *)` is the function that calls every LSM's `file_open`
//! hook, so a program there sees what the LSM backend's `open_lsm` sees: the file itself,
//! for every open, io_uring's (on the submitter or an `iou-wrk` thread) and exec's
//! included. It *replaces* the open tracepoints rather than adding to them:
//!
//! - events stay one per open, with the same decision (`try_open`) and the same fields as
//!   under the LSM backend (no descriptor yet, `fd` -1, which nothing in the daemon needs);
//! - one program per open costs less than four exit tracepoints plus a program that would
//!   have to tell io_uring's opens from the syscalls' (the submitter's inline opens run
//!   in `io_uring_enter`, on the same task as its syscalls);
//! - no fd table walk: the file is handed over.
//!
//! Where neither attaches (the program refused, no trampolines, no kprobes), the open
//! tracepoints are used as before, and io_uring opens are seen only as io_uring activity.
use aya::{
    Btf, Ebpf,
    programs::{FEntry, KProbe, ProgramError},
};
use serde::Serialize;

use super::{Attachment, SensorError, tracepoint::program};

/// The kernel function both programs attach to.
pub(crate) const FUNCTION: &str = "security_file_open";
pub(crate) const FENTRY_PROGRAM: &str = "open_fentry";
pub(crate) const KPROBE_PROGRAM: &str = "open_kprobe";

/// What reports file opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenSensor {
    /// The BPF LSM `file_open` hook (LSM backend).
    Lsm,
    /// An `fentry` program on `security_file_open`.
    Fentry,
    /// A `kprobe` on `security_file_open`.
    Kprobe,
    /// The open syscalls' exit tracepoints.
    Tracepoints,
}

impl OpenSensor {
    /// How the logs and `pthwatch check` name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Lsm => "lsm/file_open",
            Self::Fentry => "fentry security_file_open",
            Self::Kprobe => "kprobe security_file_open",
            Self::Tracepoints => "open syscall tracepoints",
        }
    }

    /// Whether it is handed the opened file (and so names io_uring's opens).
    pub fn sees_files(self) -> bool {
        !matches!(self, Self::Tracepoints)
    }
}

/// Skips the better open sensors, to run (and test) a fallback where the kernel offers
/// more: `kprobe` skips fentry, `tracepoints` both. Unset in normal use.
const OVERRIDE_ENV: &str = "PTHWATCH_OPEN_SENSOR";

/// Attaches `open_fentry`, or `open_kprobe` when that fails. Returns the sensor and its
/// attachment, or the reason each was not attached (fentry's, kprobe's). A program that
/// loaded and did not attach is unloaded again.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
) -> Result<(OpenSensor, Attachment), (String, String)> {
    let skip = std::env::var(OVERRIDE_ENV).unwrap_or_default();
    let skipped = || format!("skipped ({OVERRIDE_ENV}={skip})");
    match skip.as_str() {
        "" => {}
        "kprobe" | "tracepoints" => {
            tracing::warn!("{OVERRIDE_ENV}={skip}: not using the better open sensors")
        }
        other => tracing::warn!("{OVERRIDE_ENV}={other} ignored: expected kprobe or tracepoints"),
    }
    if skip == "tracepoints" {
        return Err((skipped(), skipped()));
    }
    if skip != "kprobe" {
        match attach_fentry(ebpf, btf) {
            Ok(()) => return Ok((OpenSensor::Fentry, attachment(FENTRY_PROGRAM, "fentry"))),
            Err(e) => return attach_kprobe(ebpf).map_err(|k| (reason(&e), k)),
        }
    }
    attach_kprobe(ebpf).map_err(|k| (skipped(), k))
}

fn attach_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), SensorError> {
    let err = |source| SensorError::Program {
        name: FENTRY_PROGRAM,
        source,
    };
    let program: &mut FEntry = program(ebpf, FENTRY_PROGRAM)?;
    program.load(FUNCTION, btf).map_err(err)?;
    if let Err(e) = program.attach() {
        let _ = program.unload();
        return Err(err(e));
    }
    Ok(())
}

/// Attaches `open_kprobe`; the reason in one line when it does not.
fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(OpenSensor, Attachment), String> {
    let err = |source| SensorError::Program {
        name: KPROBE_PROGRAM,
        source,
    };
    let attached = program::<KProbe>(ebpf, KPROBE_PROGRAM).and_then(|program| {
        program.load().map_err(err)?;
        if let Err(e) = program.attach(FUNCTION, 0) {
            let _ = program.unload();
            return Err(err(e));
        }
        Ok(())
    });
    match attached {
        Ok(()) => Ok((OpenSensor::Kprobe, attachment(KPROBE_PROGRAM, "kprobe"))),
        Err(e) => Err(reason(&e)),
    }
}

/// The network programs that replace the network syscall tracepoints where opens are
/// taken by fentry: (program, kernel function). They report and kill as those did; the
/// cgroup programs still decide.
pub(crate) const NETWORK_FENTRY: &[(&str, &str)] = &[
    ("net_fentry_connect", "security_socket_connect"),
    ("net_fentry_sendmsg", "security_socket_sendmsg"),
];

/// Attaches every `NETWORK_FENTRY` program, or none: on the first failure the ones
/// attached are unloaded again and the reason is returned (the caller keeps the network
/// tracepoints).
pub(super) fn attach_network(ebpf: &mut Ebpf, btf: &Btf) -> Result<Vec<Attachment>, String> {
    let mut attached = Vec::new();
    for &(name, function) in NETWORK_FENTRY {
        let result = program::<FEntry>(ebpf, name).and_then(|program| {
            let err = |source| SensorError::Program { name, source };
            program.load(function, btf).map_err(err)?;
            if let Err(e) = program.attach() {
                let _ = program.unload();
                return Err(err(e));
            }
            Ok(())
        });
        match result {
            Ok(()) => attached.push(Attachment {
                program: name,
                target: format!("fentry/{function}"),
                error: None,
                required: true,
            }),
            Err(e) => {
                for a in &attached {
                    if let Ok(p) = program::<FEntry>(ebpf, a.program) {
                        let _ = p.unload();
                    }
                }
                return Err(reason(&e));
            }
        }
    }
    Ok(attached)
}

/// Why a program did not attach, in one line: the verifier's reason for a rejected
/// program, else the error with its causes (a missing kprobe PMU says which file).
fn reason(e: &SensorError) -> String {
    let mut text = super::tracepoint::short(e);
    if let SensorError::Program { source, .. } = e
        && !matches!(source, ProgramError::LoadError { .. })
    {
        let mut cause = std::error::Error::source(source);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
    }
    text
}

fn attachment(program: &'static str, kind: &str) -> Attachment {
    Attachment {
        program,
        target: format!("{kind}/{FUNCTION}"),
        error: None,
        required: true,
    }
}
