//! Alert delivery to a webhook across an outage and a daemon restart: the receiver is
//! down while a hook is caught, the daemon is restarted, then the receiver comes back and
//! gets every alert exactly once, in order, signed. Real daemon, real kernel.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::{
    Daemon, Sandbox, TcpSink, can_run,
    payload::{exfiltrate, run_hook_once, spawning_pth_line},
    read_jsonl, wait_until,
    webhook_receiver::WebhookReceiver,
};

const SECRET: &[u8] = b"integration-webhook-key";

/// A hook whose child reads the sandbox's credentials and sends them to `port`.
fn exfil_hook(sb: &Sandbox, port: u16) {
    let child = exfiltrate(port);
    sb.pth("hook_init.pth", &spawning_pth_line(&child));
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".alert"))
        })
        .count()
    })
}

/// Waits until the alert file stops growing (the daemon has reported the incident).
fn settled_alerts(path: &Path, at_least: usize) -> usize {
    let mut last = usize::MAX;
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let n = read_jsonl(path).len();
        if n >= at_least && n == last {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {n} alerts in {}",
            path.display()
        );
        last = n;
    }
}

#[test]
fn webhook_alerts_survive_an_outage_and_a_restart_and_arrive_once_in_order_signed() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("webhook");
    let exfil = TcpSink::start();
    exfil_hook(&sb, exfil.port);
    let port = WebhookReceiver::reserve_port();
    let key = sb.root.join("webhook.key");
    std::fs::write(&key, SECRET).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let spool = sb.root.join("spool");
    let alert_file = sb.root.join("alerts.jsonl");
    let config = sb.root.join("pthwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
mode = "block"

[[alerts.sink]]
type = "file"
path = "{alerts}"

[[alerts.sink]]
type = "webhook"
min_severity = "info"
url = "http://127.0.0.1:{port}/pthwatch"
secret_file = "{key}"
spool_dir = "{spool}"
timeout_ms = 2000
retry_max_ms = 500
"#,
            alerts = alert_file.display(),
            key = key.display(),
            spool = spool.display(),
        ),
    )
    .expect("write config");
    let cfg = config.to_string_lossy().into_owned();

    // The receiver is down: the daemon catches the hook twice and spools the alerts.
    let daemon = Daemon::start_without_mode(&["--config", &cfg]);
    for _ in 0..2 {
        assert_eq!(run_hook_once(&sb).as_deref(), Some("error 1"), "blocked");
    }
    let before_restart = settled_alerts(&alert_file, 2);
    daemon.stop();
    assert_eq!(
        spooled(&spool),
        before_restart,
        "every alert waits in the spool across the stop"
    );

    // Restarted, still without a receiver: one more incident.
    let daemon = Daemon::start_without_mode(&["--config", &cfg]);
    assert_eq!(run_hook_once(&sb).as_deref(), Some("error 1"), "blocked");
    let total = settled_alerts(&alert_file, before_restart + 1);

    // The receiver is back: everything arrives, once, in the order it happened.
    let receiver = WebhookReceiver::start(port);
    let got = receiver.wait_for(total, Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(10), || spooled(&spool) == 0),
        "the spool empties once delivered"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.accepted().len(), got.len(), "a duplicate arrived");
    let want: Vec<String> = read_jsonl(&alert_file)
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect();
    let ids: Vec<String> = got.iter().map(|r| r.alert_id()).collect();
    assert_eq!(ids, want, "each alert exactly once, in order");
    for r in &got {
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/pthwatch")
        );
        assert!(r.signature_valid(SECRET), "bad signature: {:?}", r.headers);
        assert_eq!(r.header("x-pthwatch-delivery"), Some(r.alert_id().as_str()));
    }
    daemon.stop();
    assert_eq!(exfil.bytes(), 0, "the credentials never left");
}
