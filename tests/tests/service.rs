//! pthwatch as a service: the configuration file and SIGHUP, allow entries, a clean stop
//! right after READY, and systemd's watchdog. Real daemon, real kernel, real interpreters.
use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Daemon, Sandbox, TcpSink, can_run,
    payload::{exfiltrate, run_hook_once, spawning_pth_line},
    pthwatch_bin,
};

/// A hook child that reads the sandbox's credentials and sends them to `port`,
/// recording the outcome in the payload marker.
fn exfil_hook(sb: &Sandbox, port: u16) {
    let child = exfiltrate(port);
    sb.pth("svc_init.pth", &spawning_pth_line(&child));
}

#[test]
fn sighup_applies_a_valid_file_and_refuses_an_invalid_one() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("reload");
    let sink = TcpSink::start();
    exfil_hook(&sb, sink.port);
    let config = sb.root.join("pthwatch.toml");
    std::fs::write(&config, "[daemon]\nmode = \"alert\"\n").expect("write config");
    let cfg = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::start_without_mode(&["--config", &cfg]);
    assert_eq!(
        run_hook_once(&sb).as_deref(),
        Some("sent"),
        "alert mode lets it through"
    );

    std::fs::write(&config, "[daemon]\nmode = \"block\"\n").expect("rewrite config");
    daemon.hup();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        run_hook_once(&sb).as_deref(),
        Some("error 1"),
        "block after reload"
    );

    // An invalid file is refused: block stays in force and the daemon keeps running.
    std::fs::write(&config, "[daemon]\nmode = \"off\"\n").expect("break config");
    daemon.hup();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(daemon.alive(), "an invalid reload must not stop the daemon");
    assert_eq!(
        run_hook_once(&sb).as_deref(),
        Some("error 1"),
        "the running config stays"
    );
    daemon.stop();
}

#[test]
fn an_allow_entry_silences_a_rule_for_one_hook() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("allow");
    // A home-grown hook the team knows: executable, unknown to pthwatch, harmless.
    let pth = sb.pth(
        "team_tools.pth",
        "import os; os.environ.setdefault('TEAM', '1')\n",
    );
    let sha = integration_tests::sha256_file(&pth);
    let config = sb.root.join("pthwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[allow]]\nrules = [\"unknown_startup_hook\"]\nhook_sha256 = \"{sha}\"\nreason = \"our own tooling hook\"\n"
        ),
    )
    .expect("write config");
    let cfg = config.to_string_lossy().into_owned();
    let daemon = Daemon::start("alert", &["--config", &cfg]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    let alerts = daemon.stop();
    let about_it: Vec<_> = alerts
        .iter()
        .filter(|a| a["startup_hook"]["sha256"] == *sha)
        .collect();
    assert!(
        about_it.is_empty(),
        "the allowed hook was reported: {about_it:#?}"
    );
}

/// Under systemd: a stop right after READY is a clean exit, and the watchdog is pinged
/// at half the interval systemd asked for.
#[test]
fn a_stop_right_after_ready_is_clean_and_the_watchdog_is_fed() {
    if !can_run() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pthwatch-svc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut child = Command::new(pthwatch_bin())
        .args(["run", "--mode", "alert", "--alert-log"])
        .arg(dir.join("alerts.jsonl"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let mut ready = false;
    let mut pings = 0;
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(90) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == "READY=1") {
                ready = true;
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
            if msg.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(ready, "exited before READY: {status}");
            assert!(status.success(), "SIGTERM right after READY: {status}");
            break;
        }
    }
    assert!(ready, "never ready");
    let _ = child.kill();
    let _ = child.wait();
    // Now feed the dog for a while.
    let mut child = Command::new(pthwatch_bin())
        .args(["run", "--mode", "alert", "--alert-log"])
        .arg(dir.join("alerts2.jsonl"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let mut ready_at = None;
    while start.elapsed() < Duration::from_secs(90) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == "READY=1") {
                ready_at = Some(Instant::now());
            }
            if ready_at.is_some() && msg.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
        }
        if ready_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}");
    assert!(
        pings >= 3,
        "only {pings} watchdog pings in 2 s at a 400 ms interval"
    );
}

/// One HTTP GET against the daemon's metrics listener: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// A free loopback port (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn the_metrics_endpoint_scrapes_and_counts_what_the_kernel_did() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("metrics");
    let sink = TcpSink::start();
    exfil_hook(&sb, sink.port);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start("block", &["--metrics-listen", &listen]);
    assert_eq!(run_hook_once(&sb).as_deref(), Some("error 1"));
    std::thread::sleep(Duration::from_millis(2500));
    let (status, health) = get(port, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "{health}");
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Parse the exposition: every sample is `name{labels} value` under a TYPE line.
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (key, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = key.split('{').next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE line");
            // Counts are whole numbers; only a histogram's _sum (seconds) has a fraction.
            if !name.ends_with("_sum") {
                assert_eq!(value.fract(), 0.0, "{line}");
            }
            samples.insert(key.to_owned(), value as u64);
        }
    }
    assert_eq!(samples.get("pthwatch_up"), Some(&1));
    assert!(
        samples
            .get("pthwatch_kernel_network_denied_total")
            .is_some_and(|&n| n >= 1),
        "{body}"
    );
    // In block mode the exfiltration was blocked: counted under its rule and action.
    assert!(
        samples
            .get("pthwatch_alerts_total{rule=\"hook_credential_exfiltration\",action=\"blocked\"}")
            .is_some_and(|&n| n >= 1),
        "{body}"
    );
    // The hook started a child (fork, exec) that read credentials (open) and connected
    // (net): events are counted by kind.
    for kind in ["exec", "fork", "open", "net"] {
        assert!(
            samples
                .get(&format!("pthwatch_events_total{{kind=\"{kind}\"}}"))
                .is_some_and(|&n| n >= 1),
            "no {kind} events counted: {body}"
        );
    }
    // Every program the daemon tried is listed; the required ones are attached.
    let probes: Vec<(&String, &u64)> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("pthwatch_probe_attached{program="))
        .collect();
    assert!(!probes.is_empty(), "{body}");
    assert!(probes.iter().all(|(_, v)| **v <= 1), "{body}");
    assert_eq!(
        samples.get("pthwatch_probe_attached{program=\"process_exec\"}"),
        Some(&1),
        "{body}"
    );
    // No webhook configured: the delivery metrics are there, at zero.
    assert_eq!(samples.get("pthwatch_webhook_queue_depth"), Some(&0));
    assert_eq!(samples.get("pthwatch_webhook_failures_total"), Some(&0));
    assert_eq!(
        samples.get("pthwatch_webhook_request_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(&0)
    );
    assert_eq!(get(port, "/nothing").0, "HTTP/1.1 404 Not Found");
    daemon.stop();
}
