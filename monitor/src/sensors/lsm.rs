//! The BPF LSM backend's own programs: `file_open` (every open, resolved from the file
//! the kernel hands over, io_uring's included), `socket_connect` / `socket_sendmsg`
//! (the network decision, by return value) and `bprm_check_security` (a hook lineage's
//! exec of a file it wrote is refused before it happens). They take the place of the
//! open syscall tracepoints and of the `cgroup_sock_addr` programs; everything else is
//! shared with the tracepoint backend.
use aya::{Btf, Ebpf, programs::Lsm};

use super::{Attachment, SensorError, tracepoint::program};

/// (program, LSM hook). All or none: a backend half on LSM would see some opens twice
/// and some connects not at all.
pub(crate) const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("open_lsm", "file_open"),
    ("net_lsm_connect", "socket_connect"),
    ("net_lsm_sendmsg", "socket_sendmsg"),
    ("exec_lsm", "bprm_check_security"),
];

/// The LSM program that decides connects.
pub(crate) const LSM_CONNECT_PROGRAM: &str = "net_lsm_connect";

/// Loads and attaches every LSM program. On the first failure the ones already attached
/// are detached again and the error is returned: the caller falls back to tracepoints.
pub(super) fn attach(ebpf: &mut Ebpf, btf: &Btf) -> Result<Vec<Attachment>, SensorError> {
    let mut attached = Vec::new();
    for &(name, hook) in LSM_PROGRAMS {
        let result = (|| {
            let err = |source| SensorError::Program { name, source };
            let program: &mut Lsm = program(ebpf, name)?;
            program.load(hook, btf).map_err(err)?;
            program.attach().map_err(err)?;
            Ok(())
        })();
        match result {
            Ok(()) => attached.push(Attachment {
                program: name,
                target: format!("lsm/{hook}"),
                error: None,
                required: true,
            }),
            Err(e) => {
                for a in &attached {
                    if let Ok(p) = program::<Lsm>(ebpf, a.program)
                        && let Err(e) = p.unload()
                    {
                        tracing::debug!(program = a.program, error = %e, "detaching an LSM program");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(attached)
}
