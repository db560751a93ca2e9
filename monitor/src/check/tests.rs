use std::time::{Duration, Instant};

use super::*;

/// Every check a fully capable kernel passes.
fn capable() -> Vec<Check> {
    [
        "privileges.bpf",
        "privileges.net_admin",
        "btf.vmlinux",
        "btf.offsets",
        "program.tracepoint",
        "program.cgroup_sock_addr",
        "program.cgroup_skb",
        "program.own_sock_addr",
        "program.own_egress",
        "program.own_accept",
        "helper.send_signal",
        "helper.get_socket_cookie",
        "map.ringbuf",
        "hook.tp_btf",
        "hook.syscall_tracepoints",
        "hook.syscall_optional",
        "hook.io_uring",
        "hook.uprobe",
        "lsm.active",
        "lsm.file_open",
        "lsm.own_programs",
        "kernel.io_uring",
    ]
    .into_iter()
    .map(|id| Check {
        id,
        what: id,
        status: Status::Yes,
        detail: "fine".into(),
        errno: None,
    })
    .collect()
}

fn with(mut checks: Vec<Check>, id: &str, status: Status, detail: &str) -> Vec<Check> {
    let c = checks.iter_mut().find(|c| c.id == id).expect("known id");
    c.status = status;
    c.detail = detail.into();
    checks
}

#[test]
fn a_capable_kernel_gets_the_lsm_backend() {
    let (backend, degraded, cannot) = verdict(&capable());
    assert_eq!(backend, Some(Backend::Lsm));
    assert!(degraded.is_empty(), "{degraded:?}");
    assert!(cannot.is_empty(), "{cannot:?}");
}

#[test]
fn a_refused_lsm_falls_back_to_tracepoints_and_says_why() {
    let checks = with(
        capable(),
        "lsm.file_open",
        Status::Error,
        "BPF_PROG_LOAD refused: EPERM",
    );
    let (backend, degraded, cannot) = verdict(&checks);
    assert_eq!(backend, Some(Backend::Tracepoint));
    assert!(cannot.is_empty());
    assert!(
        degraded[0].starts_with("no BPF LSM: io_uring opens"),
        "{degraded:?}"
    );
    assert!(
        degraded[0].ends_with(". lsm.file_open: BPF_PROG_LOAD refused: EPERM"),
        "{degraded:?}"
    );

    let checks = with(
        capable(),
        "lsm.active",
        Status::No,
        "not in capability,yama",
    );
    let (backend, degraded, _) = verdict(&checks);
    assert_eq!(
        backend,
        Some(Backend::Tracepoint),
        "an LSM that loads but is not active does not count"
    );
    assert!(degraded[0].contains("not in capability,yama"));
}

/// Without the BPF LSM, opens come from fentry, else kprobe, on `security_file_open`
/// when either attaches, and the LSM's absence then costs only the network decision.
#[test]
fn without_the_lsm_opens_come_from_security_file_open_where_it_attaches() {
    let no_lsm = with(
        capable(),
        "lsm.active",
        Status::No,
        "not in capability,yama",
    );
    let probe = |id, status| Check {
        id,
        what: id,
        status,
        detail: "x".into(),
        errno: None,
    };
    for (fentry, kprobe, want) in [
        (Status::Yes, Status::Yes, OpenSensor::Fentry),
        (Status::Refused, Status::Yes, OpenSensor::Kprobe),
        (Status::Refused, Status::No, OpenSensor::Tracepoints),
    ] {
        let mut checks = no_lsm.clone();
        checks.push(probe("hook.fentry_file_open", fentry));
        checks.push(probe("program.own_fentry_file_open", Status::Yes));
        checks.push(probe("program.own_fentry_network", Status::Yes));
        checks.push(probe("hook.kprobe_file_open", kprobe));
        checks.push(probe("program.own_kprobe_file_open", Status::Yes));
        let (backend, degraded, _) = verdict(&checks);
        assert_eq!(backend, Some(Backend::Tracepoint));
        assert_eq!(open_sensor(&checks, Backend::Tracepoint), want);
        assert_eq!(
            degraded[0].starts_with("no BPF LSM: io_uring opens are reported as io_uring"),
            want == OpenSensor::Tracepoints,
            "{degraded:?}"
        );
        if want != OpenSensor::Tracepoints {
            assert!(degraded[0].contains(want.describe()), "{degraded:?}");
        }
        // Only fentry takes network attempts too: then no syscall tracepoint is left.
        assert_eq!(
            degraded
                .iter()
                .any(|d| d.starts_with("syscall tracepoints are attached")),
            want != OpenSensor::Fentry,
            "{degraded:?}"
        );
    }
    // Opens by fentry, but pthwatch's network fentry programs are refused: the daemon
    // keeps the network syscall tracepoints, and says so.
    let mut checks = no_lsm.clone();
    checks.push(probe("hook.fentry_file_open", Status::Yes));
    checks.push(probe("program.own_fentry_file_open", Status::Yes));
    checks.push(probe("program.own_fentry_network", Status::No));
    assert_eq!(
        open_sensor(&checks, Backend::Tracepoint),
        OpenSensor::Fentry
    );
    let (_, degraded, _) = verdict(&checks);
    let line = degraded
        .iter()
        .find(|d| d.starts_with("syscall tracepoints are attached"))
        .expect("the network tracepoints are named");
    assert!(line.contains("program.own_fentry_network"), "{line}");
    // The kernel attaches a trivial fentry program, the verifier rejects pthwatch's own:
    // the kprobe, as the daemon would fall back to.
    let mut checks = no_lsm.clone();
    checks.push(probe("hook.fentry_file_open", Status::Yes));
    checks.push(probe("program.own_fentry_file_open", Status::No));
    checks.push(probe("hook.kprobe_file_open", Status::Yes));
    checks.push(probe("program.own_kprobe_file_open", Status::Yes));
    assert_eq!(
        open_sensor(&checks, Backend::Tracepoint),
        OpenSensor::Kprobe
    );
    let mut checks = capable();
    checks.push(probe("hook.fentry_file_open", Status::Yes));
    assert_eq!(open_sensor(&checks, Backend::Lsm), OpenSensor::Lsm);
}

#[test]
fn pthwatch_lsm_programs_the_verifier_rejects_mean_tracepoints() {
    let checks = with(
        capable(),
        "lsm.own_programs",
        Status::No,
        "net_lsm_connect: rejected: R1 type=scalar expected=ptr_",
    );
    let (backend, degraded, cannot) = verdict(&checks);
    assert_eq!(backend, Some(Backend::Tracepoint));
    assert!(cannot.is_empty());
    assert!(
        degraded[0].ends_with(
            ". lsm.own_programs: net_lsm_connect: rejected: R1 type=scalar expected=ptr_"
        ),
        "{degraded:?}"
    );
}

#[test]
fn missing_pieces_are_degraded_or_blocking() {
    let checks = with(capable(), "helper.send_signal", Status::No, "not available");
    let checks = with(checks, "program.cgroup_sock_addr", Status::No, "");
    let (backend, degraded, _) = verdict(&checks);
    assert_eq!(backend, Some(Backend::Lsm));
    assert!(
        degraded
            .iter()
            .any(|d| d.starts_with("kill mode unavailable"))
    );
    // The LSM socket hooks deny; the cgroup programs are the tracepoint backend's.
    assert!(
        !degraded
            .iter()
            .any(|d| d.contains("cannot be denied in the kernel")),
        "{degraded:?}"
    );
    let checks = with(checks, "lsm.file_open", Status::Refused, "EPERM");
    let (backend, degraded, _) = verdict(&checks);
    assert_eq!(backend, Some(Backend::Tracepoint));
    assert!(
        degraded
            .iter()
            .any(|d| d.contains("cannot be denied in the kernel"))
    );

    for id in [
        "btf.offsets",
        "map.ringbuf",
        "privileges.bpf",
        "hook.tp_btf",
    ] {
        let (backend, _, cannot) = verdict(&with(capable(), id, Status::No, "x"));
        assert_eq!(backend, None, "{id}");
        assert_eq!(cannot.len(), 1, "{id}: {cannot:?}");
    }
    let no_sensors = with(
        with(capable(), "lsm.file_open", Status::No, "x"),
        "hook.syscall_tracepoints",
        Status::No,
        "x",
    );
    let (backend, _, cannot) = verdict(&no_sensors);
    assert_eq!(backend, None);
    assert!(cannot[0].starts_with("file opens and connects cannot be seen"));
}

#[test]
fn a_rejected_egress_program_is_one_degradation_naming_the_verifier() {
    let checks = with(
        capable(),
        "program.own_egress",
        Status::No,
        "net_cg_egress: rejected: unknown func bpf_get_current_uid_gid#15",
    );
    let (backend, degraded, cannot) = verdict(&checks);
    assert_eq!(backend, Some(Backend::Lsm));
    assert!(cannot.is_empty(), "{cannot:?}");
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert!(
        degraded[0].starts_with("packets of sockets a hook used cannot be dropped at egress.")
            && degraded[0].ends_with("unknown func bpf_get_current_uid_gid#15"),
        "{degraded:?}"
    );
    // Several causes of one loss: the first is named, once.
    let checks = with(checks, "program.cgroup_skb", Status::No, "not supported");
    let (_, degraded, _) = verdict(&checks);
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert!(degraded[0].ends_with("program.cgroup_skb: not supported"));
}

#[test]
fn the_verifier_reason_is_its_last_complaint() {
    let log = "0: R1=ctx() R10=fp0\n; let len = ...\n12: (85) call bpf_ringbuf_output#130\nR3 unbounded memory access, use 'var &= const' or 'if (var < const)'\nprocessed 120 insns (limit 1000000) max_states_per_insn 0\n\n";
    assert_eq!(
        own::verifier_reason(log),
        Some("R3 unbounded memory access, use 'var &= const' or 'if (var < const)'")
    );
    assert_eq!(own::verifier_reason("\n"), None);
}

fn report(checks: Vec<Check>) -> CapabilityReport {
    let (backend, degraded, cannot_protect) = verdict(&checks);
    let opens = backend.map(|b| open_sensor(&checks, b));
    CapabilityReport {
        kernel: "6.1.0".into(),
        machine: "x86_64".into(),
        checks,
        backend,
        opens,
        degraded,
        cannot_protect,
    }
}

#[test]
fn the_report_is_aligned_and_grouped() {
    let mut checks = vec![
        Check {
            id: "privileges.bpf",
            what: "may load BPF programs",
            status: Status::Yes,
            detail: "ok".into(),
            errno: None,
        },
        Check {
            id: "lsm.file_open",
            what: "lsm/file_open",
            status: Status::Refused,
            detail: "EPERM".into(),
            errno: Some("EPERM"),
        },
    ];
    checks.extend(
        capable()
            .into_iter()
            .filter(|c| !c.id.starts_with("privileges.bpf") && c.id != "lsm.file_open"),
    );
    let r = report(checks);
    let text = r.to_string();
    assert!(
        text.starts_with("pthwatch check: kernel 6.1.0 (x86_64)\n\nprivileges\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  may load BPF programs     yes      ok\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  lsm/file_open             REFUSED  EPERM\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\nbackend: tracepoints\nopens: open syscall tracepoints\ndegraded:\n  - no BPF LSM: "
        ),
        "{text}"
    );
    assert!(text.contains(". lsm/file_open: EPERM\n"), "{text}");
    assert!(
        text.ends_with("pthwatch can protect this host.\n"),
        "{text}"
    );
    assert_eq!(exit_code(&r), 0);

    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["backend"], "tracepoint");
    assert_eq!(json["opens"], "tracepoints");
    assert_eq!(json["checks"][1]["errno"], "EPERM");
    assert!(json["checks"][0].get("errno").is_none());

    let blocked = report(with(capable(), "map.ringbuf", Status::No, "x"));
    assert!(
        blocked
            .to_string()
            .contains("backend: none\ncannot protect this host:\n  - events cannot reach")
    );
    assert_eq!(exit_code(&blocked), 1);
}

#[test]
fn this_host_uses_tracepoints_because_lsm_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: probing the kernel needs root");
        return;
    }
    let started = Instant::now();
    let r = probe();
    let took = started.elapsed();
    eprintln!("{r}\n(probed in {took:?})");
    assert!(took < Duration::from_secs(5), "probe took {took:?}");
    assert!(
        r.check("btf.offsets")
            .is_some_and(|c| c.status == Status::Yes)
    );
    assert!(
        r.check("hook.tp_btf")
            .is_some_and(|c| c.status == Status::Yes),
        "{r}"
    );
    if r.check("lsm.file_open")
        .is_some_and(|c| c.status == Status::Yes)
    {
        eprintln!("skipped the rest: BPF LSM works on this kernel");
        return;
    }
    assert_eq!(r.backend, Some(Backend::Tracepoint), "{r}");
    assert_eq!(exit_code(&r), 0, "{r}");
    let lsm = r.check("lsm.file_open").unwrap();
    assert!(lsm.errno.is_some(), "a refusal names its errno: {lsm:?}");
    assert_ne!(lsm.status, Status::Yes);
    assert!(r.degraded[0].starts_with("no BPF LSM"), "{r}");
}
