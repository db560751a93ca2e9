//! The sensor backend, against the real kernel: where the kernel runs the BPF LSM and lets
//! pthwatch load LSM programs, pthwatch must really use them (not fall back to tracepoints
//! without anyone noticing); without it, where an fentry or kprobe on `security_file_open`
//! attaches, that must report opens. What only these see must show: a hook's io_uring
//! open of a credential is reported as the credential it read.
use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    Daemon, Sandbox, Tracer, can_run, loaded_programs, opens_of,
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

/// How many of pthwatch's LSM, fentry and kprobe programs the kernel has loaded
/// (`None` without bpftool).
fn lsm_programs_loaded() -> Option<usize> {
    Some(
        loaded_programs()?
            .iter()
            .filter(|n| {
                matches!(
                    n.as_str(),
                    "open_lsm" | "open_fentry" | "open_kprobe" | "exec_lsm"
                ) || n.starts_with("net_lsm_")
                    || n.starts_with("net_fentry_")
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

/// How a hook's child gets a program of its own to run: a copy of `/usr/bin/touch` it
/// writes to disk, or the same bytes in a memfd. Leaves the path to exec in `stage`.
const COPY_TO_DISK: &str = "import shutil
stage = os.path.join(home, '.cache', 'helper')
os.makedirs(os.path.dirname(stage), exist_ok=True)
shutil.copy('/usr/bin/touch', stage)
os.chmod(stage, 0o755)
fds = ()
";
const COPY_TO_MEMFD: &str = "m = os.memfd_create('helper', 0)
with open('/usr/bin/touch', 'rb') as f:
    os.write(m, f.read())
stage = '/proc/self/fd/%d' % m
fds = (m,)
";

/// A hook's child writes a program (`stage`, see above) and runs it to create
/// `~/ran`. In block mode the program must never run: where the LSM backend is in use,
/// `bprm_check_security` refuses the exec (EPERM); elsewhere the new program is killed
/// at exec, before its first instruction. Either way `hook_exec_written_file` reports
/// it, blocked. In alert mode it runs and is reported.
fn run_written_program(name: &str, stage: &str, mode: &str) {
    let report = check();
    let sb = Sandbox::new(name);
    let ran = sb.home.join("ran");
    let child = format!(
        "import os, subprocess
home = os.path.expanduser('~')
{stage}
try:
    r = 'exit %d' % subprocess.run([stage, {ran:?}], pass_fds=fds, timeout=20).returncode
except OSError as e:
    r = 'refused %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
",
        ran = ran.display().to_string(),
    );
    let pth = sb.pth("dropper.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start(mode, &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(30));
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_exec_written_file"
    });
    let alerts = daemon.stop();
    let alert =
        alert.unwrap_or_else(|| panic!("{name}: no hook_exec_written_file alert in {alerts:#?}"));
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(&pth).to_string_lossy()),
        "{name}: {alert:#}"
    );
    let summary = alert["summary"].as_str().unwrap_or_default();
    if mode == "alert" {
        assert_eq!(
            done.as_deref(),
            Some("exit 0"),
            "{name}: the program must run"
        );
        assert!(ran.exists(), "{name}: the program must have run");
        assert_eq!(alert["action"], "alert", "{name}: {alert:#}");
        return;
    }
    let want = if lsm_expected(&report) {
        "refused 1"
    } else {
        "exit -9"
    };
    assert_eq!(
        done.as_deref(),
        Some(want),
        "{name}: backend {}",
        report["backend"]
    );
    assert!(!ran.exists(), "{name}: the written program ran");
    assert_eq!(alert["action"], "blocked", "{name}: {alert:#}");
    assert!(summary.contains("the kernel refused"), "{name}: {alert:#}");
    // The alert names what was run: the file, or the memfd by its name.
    let shown = if stage.contains("memfd_create") {
        "/memfd:helper".to_owned()
    } else {
        real(&sb.home.join(".cache/helper"))
            .to_string_lossy()
            .into_owned()
    };
    assert!(summary.ends_with(&shown), "{name}: want {shown}: {alert:#}");
}

#[test]
fn a_hook_lineage_cannot_run_a_program_it_wrote_to_disk() {
    if can_run() {
        run_written_program("exec-written", COPY_TO_DISK, "block");
    }
}

#[test]
fn a_hook_lineage_cannot_run_a_program_from_a_memfd() {
    if can_run() {
        run_written_program("exec-memfd", COPY_TO_MEMFD, "block");
    }
}

/// Alert mode reports the same exec and lets it run: the refusal is the rule's mode.
#[test]
fn in_alert_mode_a_written_program_runs_and_is_reported() {
    if can_run() {
        run_written_program("exec-written-alert", COPY_TO_DISK, "alert");
    }
}
