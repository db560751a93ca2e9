//! The sensors, against the real kernel: what `pthwatch trace` reports when real Python
//! interpreters (with a real `.pth` in an isolated user site dir) open files, start
//! children and touch the network.
use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    PYTHON, Sandbox, TcpSink, Tracer, UdpSink, can_run, loaded_programs, of_kind, opens_of, real,
    run_bounded,
};
use serde_json::Value;

fn with_inert_pth(sb: &Sandbox) {
    // A path-only .pth, as many packages ship: present, read at start-up, never executed.
    sb.pth(
        "extra_paths.pth",
        &format!("{}\n", sb.home.join("lib").display()),
    );
}

fn tgid(e: &Value) -> u64 {
    e["tgid"].as_u64().expect("tgid")
}

#[test]
fn every_way_of_naming_a_file_resolves_to_the_file_really_opened() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("resolve");
    with_inert_pth(&sb);
    let target = real(&sb.write("data/secret.txt", "s3cret\n"));
    let link = sb.home.join("data/link.txt");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let hard = sb.home.join("hard.txt");
    std::fs::hard_link(&target, &hard).expect("hardlink");
    let script = r#"
import os, sys
target, link, hard = sys.argv[1:4]
d, b = os.path.split(target)
os.chdir(d)
open(b).close()                                        # relative path
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open(b, os.O_RDONLY, dir_fd=dfd))          # openat(dirfd)
open(link).close()                                     # symlink
open("/proc/self/root" + target).close()               # /proc/self/root
open(hard).close()                                     # hardlink
print(os.getpid())
"#;
    let tracer = Tracer::start();
    let (code, out) = sb.python(&[
        "-c",
        script,
        &target.to_string_lossy(),
        &link.to_string_lossy(),
        &hard.to_string_lossy(),
    ]);
    let events = tracer.stop();
    assert_eq!(code, 0, "python failed: {out}");
    let pid: u64 = out.trim().parse().expect("pid printed");
    let opens: Vec<&Value> = opens_of(&events, &target)
        .into_iter()
        .filter(|e| tgid(e) == pid)
        .collect();
    assert!(
        opens.len() >= 4,
        "relative, dirfd, symlink and /proc/self/root opens must all resolve to {}: got {opens:#?}",
        target.display()
    );
    let ino = opens[0]["ino"].clone();
    assert!(
        opens
            .iter()
            .all(|e| e["ino"] == ino && e["dev"] == opens[0]["dev"])
    );
    let hard_opens = opens_of(&events, &real(&hard));
    assert!(!hard_opens.is_empty(), "hardlink open missing");
    assert_eq!(hard_opens[0]["ino"], ino, "a hardlink is the same inode");
}

#[test]
fn a_renamed_copy_of_the_interpreter_is_tracked() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("renamed");
    with_inert_pth(&sb);
    let copy = sb.home.join("bin/definitely-not-py");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(PYTHON, &copy).expect("copy interpreter");
    let target = real(&sb.write("data/renamed.txt", "x\n"));
    let tracer = Tracer::start();
    let (code, out) = run_bounded(
        sb.command(&copy).args([
            "-c",
            &format!("import os; open({:?}).close(); print(os.getpid())", target),
        ]),
        Duration::from_secs(60),
    );
    let events = tracer.stop();
    assert_eq!(code, 0, "renamed interpreter failed: {out}");
    let pid: u64 = out
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("pid printed");
    let opens: Vec<&Value> = opens_of(&events, &target)
        .into_iter()
        .filter(|e| tgid(e) == pid)
        .collect();
    assert_eq!(
        opens.len(),
        1,
        "the renamed interpreter's open must be traced: {opens:#?}"
    );
    let flags = opens[0]["flags"].as_array().unwrap();
    assert!(flags.contains(&Value::from("python")));
    assert!(
        flags.contains(&Value::from("by_behaviour")),
        "recognised by behaviour: {flags:?}"
    );
}

#[test]
fn python_sh_cat_stays_in_the_lineage_and_other_processes_do_not_appear() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("lineage");
    with_inert_pth(&sb);
    let target = real(&sb.write("data/chain.txt", "chain\n"));
    // The hook (not the main program: start-up ends before it) starts the chain.
    sb.pth(
        "zz_chain.pth",
        &format!(
            "import os; os.system('cat {} >/dev/null')\n",
            target.display()
        ),
    );
    let tracer = Tracer::start();
    let (code, out) = sb.python(&["-c", "pass"]);
    // The same file, opened by a process with no Python in its ancestry.
    let (cat_code, _) = run_bounded(
        Command::new("/bin/cat").arg(&target),
        Duration::from_secs(10),
    );
    let events = tracer.stop();
    assert_eq!(code, 0, "{out}");
    assert_eq!(cat_code, 0);
    let opens = opens_of(&events, &target);
    assert_eq!(opens.len(), 1, "only the cat started by python: {opens:#?}");
    let cat_pid = tgid(opens[0]);
    let execs = of_kind(&events, "exec");
    let cat_exec = execs
        .iter()
        .find(|e| tgid(e) == cat_pid)
        .expect("exec of cat traced");
    assert_eq!(cat_exec["exe"], "/usr/bin/cat");
    let flags = opens[0]["flags"].as_array().unwrap();
    assert!(flags.contains(&Value::from("lineage")), "{flags:?}");
    // python -> sh -> cat: the shell is the parent, python its parent.
    let sh_pid = cat_exec["ppid"].as_u64().unwrap();
    let sh_exec = execs
        .iter()
        .find(|e| tgid(e) == sh_pid)
        .expect("exec of sh traced");
    assert!(
        sh_exec["exe"].as_str().unwrap().ends_with("sh"),
        "{sh_exec}"
    );
}

/// `trace` knows where start-up ends, as `run` does: what an unknown hook opens is in its
/// lineage, what the main program opens afterwards is not.
#[test]
fn trace_ends_start_up_at_the_main_program() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("trace-end");
    let by_hook = real(&sb.write("data/by_hook.txt", "hook\n"));
    let by_main = real(&sb.write("data/by_main.txt", "main\n"));
    sb.pth(
        "opener.pth",
        &format!(
            "import os; open({:?}).close()\n",
            by_hook.display().to_string()
        ),
    );
    let tracer = Tracer::start();
    let (code, out) = sb.python(&[
        "-c",
        &format!(
            "import os; open({:?}).close(); print(os.getpid())",
            by_main.display().to_string()
        ),
    ]);
    let events = tracer.stop();
    assert_eq!(code, 0, "{out}");
    let pid: u64 = out.trim().parse().expect("pid printed");
    let lineage_of = |path: &Path| -> Vec<bool> {
        opens_of(&events, path)
            .iter()
            .filter(|e| tgid(e) == pid)
            .map(|e| e["lineage"].as_u64().is_some_and(|l| l != 0))
            .collect()
    };
    assert_eq!(lineage_of(&by_hook), [true], "the hook's open: {events:#?}");
    assert_eq!(lineage_of(&by_main), [false], "the main program's open");
}

/// What `pthwatch check --json` says takes opens here (`lsm`, `fentry`, `kprobe` or
/// `tracepoints`), and whether it says syscall tracepoints are attached (a `degraded`
/// line): not where opens are `lsm`, nor `fentry` with its network programs, which then
/// take network attempts too.
fn check_sensors() -> (String, bool) {
    let out = Command::new(integration_tests::pthwatch_bin())
        .args(["check", "--json"])
        .output()
        .expect("run pthwatch check");
    let report: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    let opens = report["opens"].as_str().unwrap_or("missing").to_owned();
    let tracepoints = report["degraded"].as_array().is_some_and(|lines| {
        lines.iter().any(|l| {
            l.as_str()
                .is_some_and(|l| l.starts_with("syscall tracepoints are attached"))
        })
    });
    (opens, tracepoints)
}

/// pthwatch's syscall tracepoint programs the kernel has loaded (`open_exit_*`,
/// `net_enter_*`: it loads only what it attaches), by name (`None` without bpftool).
fn syscall_tracepoint_programs() -> Option<Vec<String>> {
    let mut names = loaded_programs()?;
    names.retain(|n| n.starts_with("open_exit_") || n.starts_with("net_enter_"));
    Some(names)
}

/// A traced interpreter's TCP connect, UDP send without connect and local-socket connect
/// are reported with their destinations, by the syscall tracepoints or, where opens are
/// taken by the BPF LSM or fentry, by LSM or fentry programs on the socket security
/// functions alone: then no syscall tracepoint is attached (one would put every system
/// call on the host on the kernel's traced path).
#[test]
fn loopback_connect_and_udp_sendto_are_reported_with_their_destination() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("net");
    with_inert_pth(&sb);
    let tcp = TcpSink::start();
    let udp = UdpSink::start();
    let local = sb.home.join("no-such.sock");
    let script = format!(
        r#"
import os, socket
s = socket.create_connection(("127.0.0.1", {tcp}), timeout=5); s.sendall(b"hi"); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"ping", ("127.0.0.1", {udp})); u.close()
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    l.connect({local:?})
except OSError:
    pass
l.close()
print(os.getpid())
"#,
        tcp = tcp.port,
        udp = udp.port,
        local = local.display().to_string(),
    );
    let (sensor, tracepoints) = check_sensors();
    let untraced = !tracepoints;
    let tracer = Tracer::start();
    let attached = syscall_tracepoint_programs();
    let (code, out) = sb.python(&["-c", &script]);
    let events = tracer.stop();
    assert_eq!(code, 0, "{out}");
    // What check predicts is what the daemon did.
    if let Some(attached) = attached {
        if untraced {
            assert!(
                attached.is_empty(),
                "syscall tracepoints with opens taken by {sensor}: {attached:?}"
            );
        } else {
            assert!(
                attached.iter().any(|t| t.starts_with("net_enter_conn")),
                "{attached:?}"
            );
        }
    }
    // Which probes may report each attempt. With fentry, a lineage member's Internet
    // attempts are reported by the cgroup programs that decide them; the fentry programs
    // report the rest.
    let (connect, send): (&[&str], &[&str]) = match sensor.as_str() {
        "lsm" => (&["lsm_socket_connect"], &["lsm_socket_sendmsg"]),
        "fentry" if untraced => (
            &["fentry_socket_connect", "cgroup_connect4"],
            &["fentry_socket_sendmsg", "cgroup_sendmsg4"],
        ),
        _ => (&["connect"], &["sendto"]),
    };
    let by = |e: &Value, probes: &[&str]| probes.iter().any(|p| e["probe"] == *p);
    let pid: u64 = out.trim().parse().unwrap();
    let nets: Vec<&Value> = of_kind(&events, "net")
        .into_iter()
        .filter(|e| tgid(e) == pid)
        .collect();
    assert!(
        nets.iter()
            .any(|e| by(e, connect) && e["address"] == "127.0.0.1" && e["port"] == tcp.port),
        "TCP connect missing: {nets:#?}"
    );
    assert!(
        nets.iter()
            .any(|e| by(e, send) && e["address"] == "127.0.0.1" && e["port"] == udp.port),
        "UDP sendto without connect missing: {nets:#?}"
    );
    assert!(
        nets.iter()
            .any(|e| by(e, &connect[..1]) && e["family"] == "unix"),
        "local-socket connect missing: {nets:#?}"
    );
    let tcp_connect = nets
        .iter()
        .find(|e| by(e, connect) && e["port"] == tcp.port)
        .expect("connect");
    if !untraced {
        // The syscall tracepoints know the caller's descriptor, not the socket's cookie.
        assert!(
            tcp_connect["fd"].as_i64().is_some_and(|fd| fd >= 3),
            "{tcp_connect:#}"
        );
        assert!(tcp_connect.get("cookie").is_none(), "{tcp_connect:#}");
    }
}

/// An interpreter that was already running when pthwatch started is tracked from then
/// on (seeded from procfs), and pthwatch leaves nothing attached when it stops.
#[test]
fn a_python_started_before_pthwatch_is_tracked_and_nothing_stays_attached() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("seed");
    with_inert_pth(&sb);
    let target = real(&sb.write("data/later.txt", "late\n"));
    let go = sb.home.join("go");
    let script = format!(
        "import os, time
deadline = time.time() + 60
while not os.path.exists({go:?}) and time.time() < deadline:
    time.sleep(0.05)
open({target:?}).close()
print(os.getpid())
",
        go = go.display().to_string(),
        target = target.display().to_string()
    );
    let ours_before = pthwatch_programs();
    let mut early = sb.command(PYTHON);
    early
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped());
    let child = early.spawn().expect("spawn python");
    std::thread::sleep(Duration::from_millis(500));
    let tracer = Tracer::start();
    std::fs::write(&go, "").expect("go");
    let out = child.wait_with_output().expect("wait python");
    let events = tracer.stop();
    let pid: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    assert!(
        opens_of(&events, &target).iter().any(|e| tgid(e) == pid),
        "the already-running interpreter's open was not reported"
    );
    assert_eq!(
        pthwatch_programs(),
        ours_before,
        "programs stayed loaded after pthwatch stopped"
    );
}

/// How many of pthwatch's programs (by name) the kernel has loaded.
fn pthwatch_programs() -> usize {
    const PREFIXES: [&str; 9] = [
        "process_exec",
        "open_exit_",
        "open_fentry",
        "open_kprobe",
        "net_cg_",
        "net_enter_",
        "net_fentry_",
        "iouring_",
        "startup_py",
    ];
    loaded_programs().map_or(0, |names| {
        names
            .iter()
            .filter(|n| PREFIXES.iter().any(|p| n.starts_with(p)))
            .count()
    })
}

#[test]
fn an_io_uring_open_is_reported_as_io_uring_activity() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("iouring");
    with_inert_pth(&sb);
    let target = real(&sb.write("data/ring.txt", "ring\n"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/iouring_open.py");
    let tracer = Tracer::start();
    let (code, out) = sb.python(&[&fixture.to_string_lossy(), &target.to_string_lossy()]);
    let events = tracer.stop();
    assert_eq!(code, 0, "{out}");
    let rings = of_kind(&events, "io_uring");
    assert!(
        rings.iter().any(|e| e["kind"] == "create"),
        "ring creation missing: {rings:#?}"
    );
    assert!(
        rings
            .iter()
            .any(|e| e["kind"] == "submit" && e["opcode"] == 18),
        "IORING_OP_OPENAT submission missing: {rings:#?}"
    );
}
