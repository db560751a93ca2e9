//! A storm of process starts: tens of thousands of short-lived processes (and Python
//! starts with hooks among them) while pthwatch runs in block mode. It must stay up,
//! keep its memory bounded, clean its process table (in the kernel and in userspace)
//! as the processes exit, and still stop the exfiltrating hook started in the middle of
//! the storm.
use std::{process::Command, time::Duration};

use integration_tests::{
    Daemon, PYTHON, Sandbox, TcpSink, can_run,
    payload::{exfil_alert, exfiltrate, spawning_pth_line, wait_marker},
    wait_until,
};
use serde_json::Value;

/// Entries of the daemon's kernel process table (`PROCS`), by `bpftool`.
fn kernel_processes() -> Option<usize> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "PROCS"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array().map(Vec::len)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `workers` Python loops, each spawning and reaping `/bin/true` `per_worker` times.
fn storm(sb: &Sandbox, workers: usize, per_worker: usize) -> Vec<std::process::Child> {
    let code = format!(
        "import os
for _ in range({per_worker}):
    pid = os.posix_spawn('/bin/true', ['true'], {{}})
    os.waitpid(pid, 0)
"
    );
    (0..workers)
        .map(|_| {
            // -S: no site, so the storm's own interpreters run no hook.
            sb.command(PYTHON)
                .args(["-S", "-c", &code])
                .spawn()
                .expect("start a storm worker")
        })
        .collect()
}

#[test]
fn a_storm_of_process_starts_leaves_pthwatch_up_bounded_and_still_blocking() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("storm");
    let sink = TcpSink::start();
    let child = exfiltrate(sink.port);
    sb.pth("storm_init.pth", &spawning_pth_line(&child));
    let mut daemon = Daemon::start("block", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(daemon.pid());
    let procs_before = kernel_processes();

    let started = std::time::Instant::now();
    let workers = storm(&sb, 4, 5000);
    // Python starts with the hook, in the middle of the storm; only the first one's
    // payload writes the marker the test waits for, every one of them must be denied.
    for _ in 0..20 {
        let (code, out) = sb.python(&["-c", "pass"]);
        assert_eq!(code, 0, "{out}");
    }
    let done = wait_marker(&sb, Duration::from_secs(30));
    for mut w in workers {
        let status = w.wait().expect("storm worker");
        assert!(status.success(), "a storm worker failed");
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "storm: 20000 process starts and 20 Python starts in {elapsed:.1} s ({:.0}/s)",
        20_000.0 / elapsed
    );

    assert!(daemon.alive(), "pthwatch died during the storm");
    // Exits are reported within a tick or two; give the tables time to drain.
    let drained = wait_until(Duration::from_secs(10), || {
        match (procs_before, kernel_processes()) {
            (Some(b), Some(a)) => a <= b + 64,
            _ => true,
        }
    });
    let procs_after = kernel_processes();
    let rss_after = rss_kib(daemon.pid());
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert!(
        drained,
        "the kernel's process table keeps exited processes: {procs_before:?} before, {procs_after:?} after"
    );
    eprintln!("storm: daemon RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "the daemon's memory grew by more than 32 MiB: {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the hook's upload is denied mid-storm"
    );
    assert_eq!(sink.bytes(), 0, "bytes got out during the storm");
    assert!(alert.is_some(), "the exfiltration is reported: {alerts:#?}");
}
