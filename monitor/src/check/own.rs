//! pthwatch's own in-kernel network decision programs and BPF LSM programs, loaded (never
//! attached) from the object this binary embeds. A kernel can offer the program type and each helper a
//! generic probe asks about and still refuse one of pthwatch's programs (a helper that
//! program type may not call on that kernel, a verifier limit); what the daemon would
//! lose then shows here before it runs.
use aya::{
    EbpfLoader,
    programs::{CgroupSkb, CgroupSock, CgroupSockAddr, FEntry, KProbe, Lsm, ProgramError, SockOps},
};
use monitor_common::{OFFSETS_GLOBAL, Offsets, maps as map_names};

use super::{Status, probes::Checks};
use crate::sensors::{
    ACCEPT_PROGRAMS, EBPF_OBJECT, EGRESS_PROGRAM, FENTRY_FILE_OPEN_PROGRAM, FILE_OPEN_FUNCTION,
    KPROBE_FILE_OPEN_PROGRAM, LSM_PROGRAMS, NETWORK_FENTRY, SOCK_ADDR_PROGRAMS,
};

/// The ring buffer's size for this probe: one page, nothing is sent.
const PROBE_RINGBUF_BYTES: u32 = 4096;

pub(super) fn network_programs(c: &mut Checks) {
    const SOCK_ADDR: (&str, &str) = ("program.own_sock_addr", "pthwatch connect/sendmsg programs");
    const EGRESS: (&str, &str) = ("program.own_egress", "pthwatch egress program");
    const ACCEPT: (&str, &str) = (
        "program.own_accept",
        "pthwatch accepted-connection programs",
    );
    if EBPF_OBJECT.is_empty() {
        for (id, what) in [SOCK_ADDR, EGRESS, ACCEPT] {
            c.push(
                id,
                what,
                Status::Error,
                "this binary has no kernel programs (AYA_BUILD_SKIP)",
            );
        }
        return;
    }
    let mut ebpf = match load_object(&mut EbpfLoader::new()) {
        Ok(ebpf) => ebpf,
        Err((status, detail)) => {
            for (id, what) in [SOCK_ADDR, EGRESS, ACCEPT] {
                c.push(id, what, status, detail.clone());
            }
            return;
        }
    };
    let mut failures = Vec::new();
    for &name in SOCK_ADDR_PROGRAMS {
        let result = match ebpf.program_mut(name) {
            Some(p) => <&mut CgroupSockAddr>::try_from(p).and_then(|p| p.load()),
            None => Err(ProgramError::UnexpectedProgramType),
        };
        if let Err(e) = result {
            failures.push((name, e));
        }
    }
    row(c, SOCK_ADDR, &failures);
    let result = match ebpf.program_mut(EGRESS_PROGRAM) {
        Some(p) => <&mut CgroupSkb>::try_from(p).and_then(|p| p.load()),
        None => Err(ProgramError::UnexpectedProgramType),
    };
    let failures: Vec<_> = result
        .err()
        .map(|e| (EGRESS_PROGRAM, e))
        .into_iter()
        .collect();
    row(c, EGRESS, &failures);
    let mut failures = Vec::new();
    for &name in ACCEPT_PROGRAMS {
        let result = match ebpf.program_mut(name) {
            Some(p) if name == "net_sockops" => <&mut SockOps>::try_from(p).and_then(|p| p.load()),
            Some(p) => <&mut CgroupSock>::try_from(p).and_then(|p| p.load()),
            None => Err(ProgramError::UnexpectedProgramType),
        };
        if let Err(e) = result {
            failures.push((name, e));
        }
    }
    row(c, ACCEPT, &failures);
}

/// The LSM backend's programs (`file_open`, `socket_connect`, `socket_sendmsg`), loaded
/// on their hooks with this kernel's offsets: the verifier checks their reads of kernel
/// structures against its own layout, so they are only meaningful with the real offsets.
/// Probed only where a `file_open` program attaches at all.
pub(super) fn lsm_programs(c: &mut Checks, offsets: Option<&Offsets>) {
    const ID: (&str, &str) = ("lsm.own_programs", "pthwatch LSM programs");
    let usable =
        c.0.iter()
            .any(|check| check.id == "lsm.file_open" && check.status == Status::Yes);
    if !usable {
        c.push(
            ID.0,
            ID.1,
            Status::No,
            "not probed: lsm/file_open does not attach",
        );
        return;
    }
    let (mut ebpf, btf) = match load_with_offsets(offsets) {
        Ok(loaded) => loaded,
        Err((status, detail)) => {
            c.push(ID.0, ID.1, status, detail);
            return;
        }
    };
    let mut failures = Vec::new();
    for &(name, hook) in LSM_PROGRAMS {
        let result = match ebpf.program_mut(name) {
            Some(p) => <&mut Lsm>::try_from(p).and_then(|p| p.load(hook, &btf)),
            None => Err(ProgramError::UnexpectedProgramType),
        };
        if let Err(e) = result {
            failures.push((name, e));
        }
    }
    row(c, ID, &failures);
}

/// The open sensor's own programs for kernels without the BPF LSM (`open_fentry` on
/// `security_file_open`, `open_kprobe`), loaded (not attached) with this kernel's offsets,
/// for the same reason as the LSM programs. Each is probed only where its program type
/// loads at all; whether it attaches is `hook.fentry_file_open` / `hook.kprobe_file_open`.
pub(super) fn open_programs(c: &mut Checks, offsets: Option<&Offsets>) {
    const FENTRY: (&str, &str) = (
        "program.own_fentry_file_open",
        "pthwatch fentry open program",
    );
    const KPROBE: (&str, &str) = (
        "program.own_kprobe_file_open",
        "pthwatch kprobe open program",
    );
    // Where opens are taken by fentry, these take the network syscall tracepoints' place.
    const FENTRY_NETWORK: (&str, &str) = (
        "program.own_fentry_network",
        "pthwatch fentry network programs",
    );
    let status = |c: &Checks, id: &str| {
        c.0.iter()
            .find(|check| check.id == id)
            .map(|check| check.status)
    };
    let fentry = status(c, "hook.fentry_file_open") == Some(Status::Yes);
    let kprobe = status(c, "program.kprobe") == Some(Status::Yes);
    if !fentry {
        for (id, what) in [FENTRY, FENTRY_NETWORK] {
            c.push(
                id,
                what,
                Status::No,
                "not probed: fentry security_file_open does not attach",
            );
        }
    }
    if !kprobe {
        c.push(
            KPROBE.0,
            KPROBE.1,
            Status::No,
            "not probed: kprobe programs do not load",
        );
    }
    if !fentry && !kprobe {
        return;
    }
    let probes: Vec<_> = [(fentry, FENTRY), (fentry, FENTRY_NETWORK), (kprobe, KPROBE)]
        .into_iter()
        .filter_map(|(probe, row)| probe.then_some(row))
        .collect();
    let (mut ebpf, btf) = match load_with_offsets(offsets) {
        Ok(loaded) => loaded,
        Err((status, detail)) => {
            for (id, what) in probes {
                c.push(id, what, status, detail.clone());
            }
            return;
        }
    };
    if fentry {
        // Each (program, kernel function) loaded as fentry; the failures, by program.
        let mut load_fentry = |programs: &[(&'static str, &'static str)]| -> Vec<_> {
            programs
                .iter()
                .filter_map(|&(name, function)| {
                    let result = match ebpf.program_mut(name) {
                        Some(p) => <&mut FEntry>::try_from(p).and_then(|p| p.load(function, &btf)),
                        None => Err(ProgramError::UnexpectedProgramType),
                    };
                    result.err().map(|e| (name, e))
                })
                .collect()
        };
        let failures = load_fentry(&[(FENTRY_FILE_OPEN_PROGRAM, FILE_OPEN_FUNCTION)]);
        row(c, FENTRY, &failures);
        let failures = load_fentry(NETWORK_FENTRY);
        row(c, FENTRY_NETWORK, &failures);
    }
    if kprobe {
        let result = match ebpf.program_mut(KPROBE_FILE_OPEN_PROGRAM) {
            Some(p) => <&mut KProbe>::try_from(p).and_then(|p| p.load()),
            None => Err(ProgramError::UnexpectedProgramType),
        };
        let failures: Vec<_> = result
            .err()
            .map(|e| (KPROBE_FILE_OPEN_PROGRAM, e))
            .into_iter()
            .collect();
        row(c, KPROBE, &failures);
    }
}

/// The embedded object loaded with this kernel's structure offsets, and the kernel's BTF
/// (what LSM, fentry and kprobe programs need), or the status and detail of the failure.
fn load_with_offsets(offsets: Option<&Offsets>) -> Result<(aya::Ebpf, aya::Btf), (Status, String)> {
    let (Some(offsets), false) = (offsets, EBPF_OBJECT.is_empty()) else {
        return Err((
            Status::Error,
            "no kernel offsets, or this binary has no kernel programs".to_owned(),
        ));
    };
    let btf = aya::Btf::from_sys_fs().map_err(|e| (Status::Error, format!("kernel BTF: {e}")))?;
    let ebpf = load_object(EbpfLoader::new().btf(Some(&btf)).override_global(
        OFFSETS_GLOBAL,
        offsets,
        true,
    ))?;
    Ok((ebpf, btf))
}

/// The embedded object loaded for probing (a one-page ring buffer: nothing is sent), or
/// the status and detail of its refusal.
fn load_object(loader: &mut EbpfLoader<'_>) -> Result<aya::Ebpf, (Status, String)> {
    loader
        .map_max_entries(map_names::EVENTS, PROBE_RINGBUF_BYTES)
        .load(EBPF_OBJECT)
        .map_err(|e| {
            let status = refusal_status(e.to_string().contains("Operation not permitted"));
            (status, format!("creating the maps: {e}"))
        })
}

fn refusal_status(permission: bool) -> Status {
    if permission {
        Status::Refused
    } else {
        Status::No
    }
}

fn row(
    c: &mut Checks,
    (id, what): (&'static str, &'static str),
    failures: &[(&str, ProgramError)],
) {
    if failures.is_empty() {
        c.push(id, what, Status::Yes, "load (not attached)");
        return;
    }
    let permission = failures.iter().any(|(_, e)| match e {
        ProgramError::LoadError { io_error, .. } => {
            matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        }
        _ => false,
    });
    let detail: Vec<String> = failures
        .iter()
        .map(|(name, e)| format!("{name}: {}", short_error(e)))
        .collect();
    c.push(id, what, refusal_status(permission), detail.join("; "));
}

/// A load error in one line: the errno and the verifier's reason, not its whole log.
pub(crate) fn short_error(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            match verifier_reason(&log) {
                Some(reason) => format!("rejected ({io_error}): {reason}"),
                None => format!("rejected ({io_error})"),
            }
        }
        other => other.to_string(),
    }
}

/// The verifier's complaint: the last line of its log that is not a statistic.
pub(crate) fn verifier_reason(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rev().find(|l| {
        !l.is_empty()
            && !l.starts_with("processed ")
            && !l.starts_with("verification time")
            && !l.starts_with("stack depth")
            && !l.starts_with("-- END PROG LOAD LOG --")
    })
}
