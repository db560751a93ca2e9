//! The sensor backend, against the real kernel: where the kernel runs the BPF LSM and lets
//! pthwatch load LSM programs, pthwatch must really use them (not fall back to tracepoints
//! without anyone noticing); without it, where an fentry or kprobe on `security_file_open`
//! attaches, that must report opens. What only these see must show: a hook's io_uring
//! open of a credential is reported as the credential it read.
use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    Daemon, Sandbox, Tracer, can_run, opens_of,
    payload::{spawning_pth_line, strings, wait_marker},
    pthwatch_bin, real,
};
use serde_json::Value;

/// `pthwatch check --json`.
fn check() -> Value {
    let out = Command::new(pthwatch_bin())
        .args(["check", "--json"])
        .output()
        .expect("run pthwatch check");
    serde_json::from_slice(&out.stdout).expect("check --json prints JSON")
}

fn check_status<'a>(report: &'a Value, id: &str) -> &'a str {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("missing")
}

/// Whether this kernel runs the BPF LSM (boot parameter `lsm=...,bpf`).
fn bpf_lsm_active() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.trim().split(',').any(|m| m == "bpf"))
}

/// What must report opens here, by `pthwatch check --json`'s probes: `lsm`, `fentry`,
/// `kprobe` or `tracepoints`.
fn open_sensor(report: &Value) -> &str {
    report["opens"].as_str().unwrap_or("missing")
}

/// Whether the open sensor is handed the opened file, and so names io_uring's opens.
fn opens_resolve_files(report: &Value) -> bool {
    matches!(open_sensor(report), "lsm" | "fentry" | "kprobe")
}

/// Whether the LSM backend is what pthwatch must use here: the kernel runs the BPF LSM
/// and lets a `file_open` program attach.
fn lsm_expected(report: &Value) -> bool {
    bpf_lsm_active() && check_status(report, "lsm.file_open") == "yes"
}

#[test]
fn the_lsm_backend_is_used_wherever_the_kernel_allows_it() {
    if !can_run() {
        return;
    }
    let report = check();
    let expected = if lsm_expected(&report) {
        "lsm"
    } else {
        "tracepoint"
    };
    assert_eq!(
        report["backend"],
        expected,
        "active LSMs {:?}, lsm.file_open {}: {report:#}",
        std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default(),
        check_status(&report, "lsm.file_open")
    );
    let opens = if expected == "lsm" {
        "lsm"
    } else if check_status(&report, "hook.fentry_file_open") == "yes" {
        "fentry"
    } else if check_status(&report, "hook.kprobe_file_open") == "yes" {
        "kprobe"
    } else {
        "tracepoints"
    };
    assert_eq!(open_sensor(&report), opens, "{report:#}");
    // The daemon's own choice shows in what reports its opens: the LSM hook, the fentry
    // or kprobe on security_file_open, or the open syscalls' tracepoints, never two.
    let sb = Sandbox::new("backend");
    let target = real(&sb.write("data/which.txt", "which\n"));
    let tracer = Tracer::start();
    let (code, out) = sb.python(&["-c", &format!("open({:?}).close()", target)]);
    let events = tracer.stop();
    assert_eq!(code, 0, "{out}");
    let opens = opens_of(&events, &target);
    assert_eq!(opens.len(), 1, "one open, one event: {opens:#?}");
    let reported_by = opens[0]["syscall"].as_str().unwrap_or_default();
    let want = match open_sensor(&report) {
        "lsm" => "lsm_file_open",
        "fentry" => "fentry_file_open",
        "kprobe" => "kprobe_file_open",
        _ => "openat",
    };
    assert_eq!(reported_by, want, "{:#}", opens[0]);
    if want != "openat" {
        // Handed the file before it has a descriptor.
        assert!(opens[0].get("fd").is_none(), "{:#}", opens[0]);
    }
    if let Some(left) = lsm_programs_loaded() {
        assert_eq!(
            left, 0,
            "pthwatch's LSM or security_file_open programs stayed loaded after it stopped"
        );
    }
}

/// How many of pthwatch's LSM and `security_file_open` programs the kernel has loaded
/// (`None` without bpftool).
fn lsm_programs_loaded() -> Option<usize> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .ok()?;
    let progs: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        progs
            .as_array()?
            .iter()
            .filter(|p| {
                p["name"].as_str().is_some_and(|n| {
                    matches!(n, "open_lsm" | "open_fentry" | "open_kprobe")
                        || n.starts_with("net_lsm_")
                })
            })
            .count(),
    )
}

/// A hook's child opens `~/.aws/credentials` through io_uring (IORING_OP_OPENAT), which
/// no open syscall sees. Where opens are taken from the file (the LSM backend, or fentry or
/// kprobe on `security_file_open`) it is a credential read like any other, named in a
/// `hook_credential_access` alert; the open tracepoints see only the ring (the lineage is
/// tainted all the same, so its sends are denied).
#[test]
fn an_io_uring_open_of_a_credential_by_a_hook_is_a_credential_read() {
    if !can_run() {
        return;
    }
    let report = check();
    io_uring_credential_read(&[], open_sensor(&report), opens_resolve_files(&report));
}

/// The same through the kprobe on `security_file_open`, which the daemon falls back to
/// where fentry does not attach: run wherever kprobes can take that function (the daemon
/// told to skip fentry), so the fallback is proven on kernels that also offer fentry.
#[test]
fn the_kprobe_fallback_names_an_io_uring_credential_read() {
    if !can_run() {
        return;
    }
    let report = check();
    let usable = open_sensor(&report) != "lsm"
        && check_status(&report, "hook.kprobe_file_open") == "yes"
        && check_status(&report, "program.own_kprobe_file_open") == "yes";
    if !usable {
        eprintln!("skipped: no kprobe open sensor here (or the LSM backend takes opens)");
        return;
    }
    io_uring_credential_read(&["env", "PTHWATCH_OPEN_SENSOR=kprobe"], "kprobe", true);
}

/// A hook's child opens `~/.aws/credentials` through io_uring under a daemon started
/// through `wrapper`; with `named`, the alert must name it (`sensor` says why it should).
fn io_uring_credential_read(wrapper: &[&str], sensor: &str, named: bool) {
    let sb = Sandbox::new("uring-cred");
    let cred = sb.home.join(".aws/credentials");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/iouring_open.py");
    let child = format!(
        "import os, sys, runpy
home = os.path.expanduser('~')
sys.argv = ['iouring_open', {cred:?}]
r = 'none'
try:
    runpy.run_path({fixture:?}, run_name='__main__')
except SystemExit as e:
    r = str(e.code)
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
",
        cred = cred.display().to_string(),
        fixture = fixture.display().to_string(),
    );
    let pth = sb.pth("uring_reader.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start_via(wrapper, &["--mode", "alert"]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    assert_eq!(done.as_deref(), Some("0"), "the io_uring open failed");
    if !named {
        // Tracepoints see the ring, not the file: the lineage is tainted (what it sends
        // next is denied, see attribution.rs), but no credential can be named.
        daemon.stop();
        return;
    }
    let alert = daemon.wait_alert(Duration::from_secs(20), |a| {
        a["rule"] == "hook_credential_access"
            && a["startup_hook"]["path"].as_str() == Some(&*real(&pth).to_string_lossy())
    });
    let alerts = daemon.stop();
    let alert = alert.unwrap_or_else(|| panic!("no credential access alert in {alerts:#?}"));
    let read = strings(&alert["credentials"]);
    let want = real(&cred).to_string_lossy().into_owned();
    assert!(
        read.contains(&want),
        "with opens taken by {sensor} the io_uring open names {want}: {alert:#}"
    );
}
