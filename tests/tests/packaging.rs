//! Packaging: the systemd unit, the Kubernetes manifests and the Containerfile, checked
//! without systemd as PID 1, a cluster or a container engine.
//!
//! - `systemd-analyze` verifies the unit and rates its sandbox;
//! - the daemon starts under the unit's capability set and read-only mounts, and every
//!   system call of that start is in the unit's filter (root only);
//! - every command line shipped (unit, image, DaemonSet) parses with the real CLI;
//! - Debian's python3 (python3-yaml, tomllib) turns the manifests into JSON, which the
//!   checks walk: what a DaemonSet of a node monitor must hold, and that it grants what
//!   the unit grants;
//! - the Containerfile is read instruction by instruction.
//!
//! A test whose tool is missing skips with a printed reason.
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    io::Write as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::run_bounded;
use serde_json::Value;

const UNIT: &str = "systemd/pthwatch.service";
const CONTAINERFILE: &str = "Containerfile";
const KUBERNETES: &str = "deploy/kubernetes";
/// Where the unit and the image install the binary.
const INSTALLED_BIN: &str = "/usr/bin/pthwatch";
/// The capabilities pthwatch needs, each explained in the unit.
const CAPABILITIES: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
    "CAP_KILL",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_PTRACE",
];
/// The metrics and health endpoint (`[metrics] listen` by default).
const METRICS_PORT: u64 = 9847;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An executable on PATH or in the sbin directories minimal environments leave out.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The release binary (`PTHWATCH_BIN`, or the workspace's), if it was built.
fn built_pthwatch() -> Option<PathBuf> {
    let path = std::env::var_os("PTHWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/pthwatch"));
    path.is_file().then_some(path)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pthwatch-packaging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// --- the systemd unit -------------------------------------------------------------------

/// `(section, key, value)` for every assignment of the unit, in order.
fn unit_entries() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in read(UNIT).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}: not an assignment: {line}"));
        entries.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    entries
}

/// Every value of `key` in `[Service]`.
fn service_values(key: &str) -> Vec<String> {
    unit_entries()
        .into_iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v)
        .collect()
}

fn service_value(key: &str) -> String {
    let values = service_values(key);
    assert_eq!(values.len(), 1, "{UNIT}: {key}= set {} times", values.len());
    values.into_iter().next().expect("one value")
}

/// The union of a list setting's lines (CapabilityBoundingSet= lines add up).
fn service_set(key: &str) -> BTreeSet<String> {
    service_values(key)
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

fn exec_start() -> Vec<String> {
    service_value("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_grants_exactly_the_needed_capabilities_each_with_a_reason() {
    let expected: BTreeSet<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(service_set("CapabilityBoundingSet"), expected);
    assert_eq!(
        service_set("AmbientCapabilities"),
        expected,
        "the ambient set repeats the bounding set"
    );
    // The comment line right above each capability's bounding-set line says why.
    let text = read(UNIT);
    let lines: Vec<&str> = text.lines().collect();
    for cap in CAPABILITIES {
        let at = lines
            .iter()
            .position(|l| *l == format!("CapabilityBoundingSet={cap}"))
            .unwrap_or_else(|| panic!("{UNIT}: no `CapabilityBoundingSet={cap}` line of its own"));
        let reason = lines[..at]
            .iter()
            .rev()
            .find(|l| l.starts_with('#'))
            .expect("a comment above");
        assert!(
            reason.starts_with(&format!("# {cap}: ")) && reason.len() > cap.len() + 12,
            "{UNIT}: `{cap}` needs a `# {cap}: why` line above it, found `{reason}`"
        );
    }
    assert_eq!(service_value("NoNewPrivileges"), "yes");
}

#[test]
fn the_unit_is_a_notify_service_whose_sandbox_keeps_ebpf_working() {
    assert_eq!(service_value("Type"), "notify");
    assert_eq!(service_value("NotifyAccess"), "main");
    assert!(!service_value("WatchdogSec").is_empty());
    assert_eq!(service_value("Restart"), "on-failure");
    assert_eq!(exec_start()[..2], [INSTALLED_BIN, "run"]);
    assert_eq!(service_value("ProtectSystem"), "strict");
    assert_eq!(service_value("ProtectHome"), "read-only");
    assert_eq!(service_value("StateDirectory"), "pthwatch");
    assert_eq!(service_value("LogsDirectory"), "pthwatch");
    assert_eq!(service_value("OOMScoreAdjust"), "-900");
    assert_eq!(service_value("LimitMEMLOCK"), "infinity");
    // Settings that would break loading or reporting.
    let filter = service_set("SystemCallFilter");
    if !filter.is_empty() {
        for needed in ["bpf", "perf_event_open"] {
            assert!(filter.contains(needed), "SystemCallFilter= lacks {needed}");
        }
        assert!(filter.contains("@mount") || filter.contains("mount"));
        assert_eq!(service_value("SystemCallErrorNumber"), "EPERM");
    }
    for (key, bad) in [
        ("PrivateUsers", "yes"),
        ("PrivateNetwork", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
    ] {
        assert!(
            !service_values(key).iter().any(|v| v == bad),
            "{key}={bad} keeps pthwatch from doing its job (see the unit's comments)"
        );
    }
    let families = service_set("RestrictAddressFamilies");
    assert!(families.contains("AF_UNIX"), "sd_notify needs AF_UNIX");
    assert!(families.contains("AF_INET") && families.contains("AF_INET6"));
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return skip("systemd-analyze not installed (Debian package systemd)");
    };
    // `verify` wants the ExecStart binary to exist: point it at this test binary.
    let dir = temp_dir("verify");
    let exe = std::env::current_exe().expect("test binary");
    let unit: String = read(UNIT)
        .lines()
        .map(
            |l| match l.strip_prefix(&format!("ExecStart={INSTALLED_BIN} ")) {
                Some(args) => format!("ExecStart={} {args}\n", exe.display()),
                None => format!("{l}\n"),
            },
        )
        .collect();
    let path = dir.join("pthwatch.service");
    std::fs::write(&path, unit).expect("write unit");
    let (code, output) = run_bounded(
        Command::new(&analyze).arg("verify").arg(&path),
        Duration::from_secs(60),
    );
    // Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert!(
        code == 0 && output.trim().is_empty(),
        "systemd-analyze verify (exit {code}):\n{output}"
    );

    // The sandbox's exposure rating (0-100, printed as 0.0-10.0): 3.5 today.
    let (code, output) = run_bounded(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=40", "--no-pager"])
            .arg(&path),
        Duration::from_secs(60),
    );
    if output.contains("unrecognized option") {
        skip("systemd-analyze too old for `security --offline` (systemd 250+)");
    } else {
        let overall = output
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("");
        assert_eq!(code, 0, "exposure above 4.0: {overall}\n{output}");
        eprintln!("{}", overall.trim());
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `pthwatch ARGS --help` exits 0 only when ARGS parse: a check of a command line
/// without running it.
fn assert_cli_accepts(bin: &Path, origin: &str, args: &[String]) {
    let (code, output) = run_bounded(
        Command::new(bin).args(args).arg("--help"),
        Duration::from_secs(30),
    );
    assert_eq!(
        code,
        0,
        "{origin}: `pthwatch {}` does not parse:\n{output}",
        args.join(" ")
    );
}

#[test]
fn every_shipped_command_line_parses_with_the_real_cli() {
    let Some(bin) = built_pthwatch() else {
        return skip("no release build of pthwatch (cargo xtask build, or PTHWATCH_BIN)");
    };
    assert_cli_accepts(&bin, UNIT, &exec_start()[1..]);
    let image = containerfile();
    let mut entrypoint = image.json_array("ENTRYPOINT");
    assert_eq!(entrypoint.remove(0), INSTALLED_BIN);
    let mut with_cmd = entrypoint.clone();
    with_cmd.extend(image.json_array("CMD"));
    assert_cli_accepts(&bin, CONTAINERFILE, &with_cmd);
    if python_with_yaml().is_none() {
        return skip("daemonset.yaml not checked: python3 with PyYAML missing (python3-yaml)");
    }
    let daemonset = manifests().daemonset();
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let mut args = entrypoint;
    args.extend(strings(&container["args"]));
    assert_cli_accepts(&bin, "daemonset.yaml", &args);
}

/// A temporary directory removed on drop, also when an assertion fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `READY=1` on a notify socket; false on timeout.
fn wait_ready(sock: &UnixDatagram, limit: Duration, mut alive: impl FnMut() -> bool) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < limit && alive() {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            return true;
        }
    }
    false
}

/// SIGTERM, a second after READY=1: the daemon says READY before its event loop installs
/// the SIGTERM handler, and a signal in between ends it by the default action.
fn sigterm(pid: u32) {
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

/// Makes every mount read-only but /proc, /dev and the directory given first (what
/// ProtectSystem=strict, ProtectHome=read-only, ProtectKernelTunables= and
/// ProtectControlGroups= leave writable), then runs the rest with only the capabilities
/// given second, as the unit does. Runs inside `unshare --mount`: the host's mounts stay
/// as they are.
const SANDBOX_SCRIPT: &str = r#"
set -e
dir="$1"; caps="$2"; shift 2
mount --bind "$dir" "$dir"
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in /proc|/proc/*|/dev|/dev/*|"$dir") continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || echo "sandbox: $m stays writable" >&2
done
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
exec setpriv --bounding-set="-all,$caps" --inh-caps="-all,$caps" --ambient-caps="-all,$caps" \
  --no-new-privs "$@"
"#;

/// Runs `pthwatch run --mode alert` through `wrapper` (empty: directly) until READY=1,
/// stops it with SIGTERM, asserts a clean exit and returns its log. Alert mode: a test
/// must not deny or kill anything on the machine it runs on.
fn start_and_stop(bin: &Path, wrapper: &[&OsStr], dir: &Path) -> String {
    let sock_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let alert_log = dir.join("alerts.jsonl");
    let stderr_path = dir.join("stderr.log");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(["run", "--mode", "alert", "--alert-log"])
        .arg(&alert_log)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn pthwatch");
    // Wrappers exec the next program: the child's pid ends up pthwatch's.
    let ready = wait_ready(&sock, Duration::from_secs(90), || {
        child.try_wait().expect("wait").is_none()
    });
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no READY=1:\n{}", log());
    }
    sigterm(child.id());
    let status = child.wait().expect("wait pthwatch");
    let log = log();
    assert!(status.success(), "exit {status} after SIGTERM:\n{log}");
    assert!(alert_log.exists(), "the alert log was not opened");
    log
}

/// The warnings and errors of a log, with timestamps dropped and numbers blanked, so two
/// runs can be compared. Alerts (also warnings) are about other processes: left out.
fn complaints(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains(" pthwatch::detect: "))
        .map(|l| {
            let l = l.split_once(' ').map_or(l, |(_, rest)| rest);
            l.chars()
                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn the_daemon_starts_with_only_the_units_capabilities_and_read_only_mounts() {
    if !is_root() {
        return skip("needs root (loads eBPF programs)");
    }
    let Some(bin) = built_pthwatch() else {
        return skip("no release build of pthwatch (cargo xtask build, or PTHWATCH_BIN)");
    };
    for t in ["unshare", "setpriv", "mount"] {
        if tool(t).is_none() {
            return skip(&format!("{t} not installed (Debian package util-linux)"));
        }
    }
    let caps: Vec<String> = service_set("CapabilityBoundingSet")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let dir = Scratch(temp_dir("sandbox"));
    // The baseline: what this machine makes pthwatch warn about anyway.
    let plain = start_and_stop(&bin, &[], &dir.0);
    // sh -c SCRIPT $0 $1(dir) $2(caps) then pthwatch and its arguments.
    let script = [
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        SANDBOX_SCRIPT,
        "sandbox",
    ];
    let wrapper: Vec<&OsStr> = script
        .into_iter()
        .map(OsStr::new)
        .chain([dir.0.as_os_str(), OsStr::new(&caps)])
        .collect();
    let sandboxed = start_and_stop(&bin, &wrapper, &dir.0);
    let baseline = complaints(&plain);
    let new: Vec<String> = complaints(&sandboxed)
        .into_iter()
        .filter(|c| !baseline.contains(c))
        .collect();
    assert!(
        new.is_empty(),
        "warnings only under the unit's capabilities and read-only mounts (a capability or \
         a writable path is missing):\n{}\n\nfull log:\n{sandboxed}",
        new.join("\n")
    );
    for symptom in [
        "Permission denied",
        "Operation not permitted",
        "Read-only file system",
    ] {
        assert!(
            plain.contains(symptom) || !sandboxed.contains(symptom),
            "`{symptom}` under the unit's sandbox:\n{sandboxed}"
        );
    }
}

/// systemd's system call groups as `systemd-analyze syscall-filter` lists them: each
/// `@group` with its members, which may name other groups.
fn syscall_groups(analyze: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(analyze)
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('@') {
            current = line.trim().to_owned();
            groups.entry(current.clone()).or_default();
        } else {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') && !current.is_empty() {
                groups
                    .entry(current.clone())
                    .or_default()
                    .insert(item.to_owned());
            }
        }
    }
    groups
}

/// Adds the system calls `name` stands for (a call, or a group expanded) to `out`.
fn expand(name: &str, groups: &BTreeMap<String, BTreeSet<String>>, out: &mut BTreeSet<String>) {
    match groups.get(name) {
        Some(members) => {
            for m in members {
                expand(m, groups, out);
            }
        }
        None => {
            out.insert(name.to_owned());
        }
    }
}

#[test]
fn every_system_call_of_a_start_and_stop_is_in_the_units_filter() {
    if !is_root() {
        return skip("needs root (loads eBPF programs)");
    }
    let Some(bin) = built_pthwatch() else {
        return skip("no release build of pthwatch (cargo xtask build, or PTHWATCH_BIN)");
    };
    let Some(strace) = tool("strace") else {
        return skip("strace not installed (Debian package strace)");
    };
    let Some(analyze) = tool("systemd-analyze") else {
        return skip("systemd-analyze not installed (Debian package systemd)");
    };
    let filter = service_set("SystemCallFilter");
    if filter.is_empty() || filter.iter().any(|f| f.starts_with('~')) {
        return skip("the unit has no allow-list SystemCallFilter=");
    }
    let groups = syscall_groups(&analyze);
    let mut allowed = BTreeSet::new();
    for entry in &filter {
        expand(entry, &groups, &mut allowed);
    }

    let dir = Scratch(temp_dir("strace"));
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let trace = dir.0.join("strace.out");
    let mut tracer = Command::new(&strace)
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(&bin)
        .args(["run", "--mode", "alert", "--alert-log"])
        .arg(dir.0.join("alerts.jsonl"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strace");
    let ready = wait_ready(&sock, Duration::from_secs(120), || {
        tracer.try_wait().expect("wait").is_none()
    });
    // SIGTERM goes to pthwatch, strace's child, not to strace (which would detach).
    let children = format!("/proc/{0}/task/{0}/children", tracer.id());
    let daemon: Option<u32> = std::fs::read_to_string(&children)
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
    match (ready, daemon) {
        (true, Some(pid)) => sigterm(pid),
        _ => {
            let _ = tracer.kill();
            let _ = tracer.wait();
            panic!("pthwatch under strace did not get ready");
        }
    }
    let status = tracer.wait().expect("wait strace");
    assert!(
        status.success(),
        "pthwatch under strace exited with {status}"
    );

    let text = std::fs::read_to_string(&trace).expect("strace output");
    let mut used = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        // `PID name(args) = ret` or `PID <... name resumed>`.
        let rest = line.split_once(' ').map_or("", |(_, r)| r.trim_start());
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !rest.starts_with("+++") && !rest.starts_with("---") {
            used.insert(name.clone());
        }
        if name == "socket"
            && let Some(args) = rest.strip_prefix("socket(")
        {
            families.insert(args.split([',', ')']).next().unwrap_or("").to_owned());
        }
        if (name == "mmap" || name == "mprotect")
            && line.contains("PROT_WRITE")
            && line.contains("PROT_EXEC")
        {
            panic!("writable and executable memory breaks MemoryDenyWriteExecute=yes: {line}");
        }
    }
    assert!(
        used.contains("bpf"),
        "the trace holds no bpf(2): {}",
        trace.display()
    );
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "system calls outside SystemCallFilter= (they would fail with EPERM): {outside:?}"
    );
    let restricted = service_set("RestrictAddressFamilies");
    let families: Vec<&String> = families.difference(&restricted).collect();
    assert!(
        families.is_empty(),
        "socket families outside RestrictAddressFamilies=: {families:?}"
    );
}

// --- YAML and TOML, through Debian's python3 -------------------------------------------

/// A python3 that has PyYAML and tomllib (Debian's python3-yaml, Python 3.11+).
fn python_with_yaml() -> Option<PathBuf> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|py| {
            Command::new(py)
                .args(["-c", "import yaml, tomllib"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Every YAML document of each file, or a TOML file as one document, as JSON.
const TO_JSON: &str = r#"
import json, sys, tomllib, yaml
out = {}
for path in sys.argv[1:]:
    if path.endswith(".toml"):
        with open(path, "rb") as f:
            out[path] = [tomllib.load(f)]
    elif path == "-":
        out[path] = [tomllib.loads(sys.stdin.read())]
    else:
        with open(path) as f:
            out[path] = [d for d in yaml.safe_load_all(f) if d is not None]
json.dump(out, sys.stdout)
"#;

fn to_json(py: &Path, paths: &[PathBuf], stdin: &str) -> BTreeMap<String, Vec<Value>> {
    let mut child = Command::new(py)
        .args(["-c", TO_JSON])
        .args(paths)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "parsing {paths:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

fn toml_text(py: &Path, text: &str) -> Value {
    let mut docs = to_json(py, &[PathBuf::from("-")], text);
    docs.remove("-").expect("parsed").remove(0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

fn assert_config(origin: &str, config: &Value) {
    let mode = config["daemon"]["mode"].as_str().unwrap_or("");
    assert!(
        ["alert", "block", "kill"].contains(&mode),
        "{origin}: [daemon] mode must be alert, block or kill, is `{mode}`"
    );
}

/// Every document of deploy/kubernetes/*.yaml, by file.
struct Manifests {
    files: BTreeMap<String, Vec<Value>>,
    python: PathBuf,
}

fn manifests() -> Manifests {
    let python = python_with_yaml().expect(
        "python3 with PyYAML is needed to read the manifests: apt-get install python3-yaml",
    );
    let dir = repo().join(KUBERNETES);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let files = to_json(&python, &paths, "")
        .into_iter()
        .map(|(path, docs)| {
            let name = Path::new(&path).file_name().expect("file name");
            (name.to_string_lossy().into_owned(), docs)
        })
        .collect();
    Manifests { files, python }
}

impl Manifests {
    /// Every resource (not the kustomization).
    fn resources(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.files
            .iter()
            .filter(|(name, _)| *name != "kustomization.yaml")
            .flat_map(|(name, docs)| docs.iter().map(move |d| (name, d)))
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.resources()
            .map(|(_, d)| d)
            .filter(|d| d["kind"] == kind)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.of_kind(kind);
        assert_eq!(all.len(), 1, "expected one {kind}, found {}", all.len());
        all[0]
    }

    fn daemonset(&self) -> Value {
        self.one("DaemonSet").clone()
    }
}

#[test]
fn every_manifest_is_a_named_resource_listed_in_the_kustomization() {
    if python_with_yaml().is_none() {
        return skip("python3 with PyYAML missing (Debian package python3-yaml)");
    }
    let m = manifests();
    let kustomization = &m.files["kustomization.yaml"][0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = m
        .files
        .keys()
        .filter(|n| *n != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources vs the files");
    let namespace = m.one("Namespace")["metadata"]["name"].clone();
    assert_eq!(kustomization["namespace"], namespace);
    for (file, doc) in m.resources() {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].is_string(), "{file}: no {field}");
        }
        assert!(
            doc["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{file}: no metadata.name"
        );
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], namespace, "{file}: namespace");
        }
    }
    // Pod Security Admission must let hostPID and hostPath in, here only.
    assert_eq!(
        m.one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn the_daemonset_watches_every_node_with_the_units_capabilities() {
    if python_with_yaml().is_none() {
        return skip("python3 with PyYAML missing (Debian package python3-yaml)");
    }
    let m = manifests();
    let ds = m.daemonset();
    let template = &ds["spec"]["template"];
    let pod = &template["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "host pids are what the kernel reports"
    );
    assert_ne!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null())),
        "a toleration `operator: Exists` without a key (every taint)"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["serviceAccountName"],
        m.one("ServiceAccount")["metadata"]["name"]
    );
    for (key, value) in ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "selector label {key}"
        );
    }

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_ne!(
        sc["allowPrivilegeEscalation"], false,
        "Kubernetes rejects allowPrivilegeEscalation: false next to CAP_SYS_ADMIN"
    );
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"])
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    assert_eq!(
        added,
        service_set("CapabilityBoundingSet"),
        "the DaemonSet grants what the systemd unit grants"
    );

    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    let port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["containerPort"] == METRICS_PORT)
        .expect("the metrics port");
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert!(get["path"].is_string(), "{probe}: httpGet path");
        assert!(
            get["port"] == METRICS_PORT || get["port"] == port["name"],
            "{probe} probes the metrics port"
        );
    }
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name"), e))
        .collect();
    assert_eq!(
        env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // Volumes: each mount has its volume and each volume a mount.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mut used = BTreeSet::new();
    let mut host_mounts = BTreeMap::new();
    for mount in mounts {
        let name = mount["name"].as_str().expect("mount name");
        let volume = volumes
            .get(name)
            .unwrap_or_else(|| panic!("volumeMount `{name}` has no volume"));
        used.insert(name);
        if let Some(host) = volume["hostPath"]["path"].as_str() {
            host_mounts.insert(host.to_owned(), mount);
        }
        assert_ne!(
            mount["mountPropagation"], "Bidirectional",
            "Bidirectional propagation needs privileged: true"
        );
    }
    let unused: Vec<&&str> = volumes.keys().filter(|v| !used.contains(*v)).collect();
    assert!(unused.is_empty(), "volumes without a mount: {unused:?}");
    // The host's cgroup root, over the pod's own cgroup namespace view, read-only.
    for (host, read_only) in [
        ("/sys/fs/cgroup", true),
        ("/sys/kernel/btf", true),
        ("/sys/kernel/tracing", true),
        ("/sys/fs/bpf", true),
        ("/home", true),
        ("/root", true),
        ("/var/lib/pthwatch", false),
        // Container awareness: the runtimes' and kubelet's state, where [containers]
        // looks by default.
        ("/run/containerd/io.containerd.runtime.v2.task", true),
        ("/run/containers/storage/overlay-containers", true),
        ("/var/lib/docker/containers", true),
        ("/var/log/pods", true),
    ] {
        let mount = host_mounts
            .get(host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        assert_eq!(
            mount["mountPath"], host,
            "{host} is mounted at the same path"
        );
        assert_eq!(mount["readOnly"] == true, read_only, "{host} readOnly");
    }

    // The ConfigMap and Secret it mounts exist; the config parses as TOML.
    let config_name = volumes
        .values()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a configMap volume");
    let config = m
        .of_kind("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == config_name)
        .expect("the mounted ConfigMap");
    let toml = config["data"]["pthwatch.toml"]
        .as_str()
        .expect("data.pthwatch.toml");
    assert_config("configmap.yaml", &toml_text(&m.python, toml));
    let secret_name = volumes
        .values()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("a secret volume");
    let secret = m.one("Secret");
    assert_eq!(secret["metadata"]["name"], secret_name);
    assert!(
        secret["stringData"].is_object(),
        "the Secret uses stringData"
    );
}

#[test]
fn the_configmaps_config_passes_config_check() {
    let Some(bin) = built_pthwatch() else {
        return skip("no release build of pthwatch (cargo xtask build, or PTHWATCH_BIN)");
    };
    let has_config_check = Command::new(&bin)
        .args(["config", "check", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_config_check {
        return skip("this pthwatch build has no `config check`");
    }
    if python_with_yaml().is_none() {
        return skip("python3 with PyYAML missing (Debian package python3-yaml)");
    }
    let m = manifests();
    let toml = m.one("ConfigMap")["data"]["pthwatch.toml"]
        .as_str()
        .expect("data.pthwatch.toml")
        .to_owned();
    let dir = Scratch(temp_dir("config"));
    let path = dir.0.join("pthwatch.toml");
    std::fs::write(&path, toml).expect("write config");
    let (code, output) = run_bounded(
        Command::new(&bin).args(["config", "check"]).arg(&path),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "pthwatch config check:\n{output}");
}

#[test]
fn kustomize_renders_the_manifests() {
    let Some(kubectl) = tool("kubectl") else {
        return skip("kubectl not installed");
    };
    let (code, output) = run_bounded(
        Command::new(kubectl)
            .arg("kustomize")
            .arg(repo().join(KUBERNETES)),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "kubectl kustomize:\n{output}");
    let kinds: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "no {kind} rendered: {kinds:?}");
    }
}

// --- the Containerfile ------------------------------------------------------------------

/// The Containerfile as instructions (continuation lines joined, comments dropped),
/// split into build stages.
struct Containerfile {
    stages: Vec<Vec<(String, String)>>,
}

fn containerfile() -> Containerfile {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read(CONTAINERFILE).lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (op, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        instructions.push((op.to_uppercase(), args.trim().to_owned()));
    }
    assert!(pending.is_empty(), "{CONTAINERFILE} ends in a continuation");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for (op, args) in instructions {
        if op == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .unwrap_or_else(|| panic!("{CONTAINERFILE}: `{op}` before the first FROM"))
            .push((op, args));
    }
    Containerfile { stages }
}

impl Containerfile {
    fn last(&self, op: &str) -> Option<&str> {
        self.stages
            .last()?
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
    }

    /// The exec (JSON) form of ENTRYPOINT or CMD in the final stage.
    fn json_array(&self, op: &str) -> Vec<String> {
        let args = self
            .last(op)
            .unwrap_or_else(|| panic!("{CONTAINERFILE}: no {op}"));
        let value: Value = serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{CONTAINERFILE}: {op} not in exec form ({e}): {args}"));
        strings(&value)
    }
}

#[test]
fn the_containerfile_builds_in_one_stage_and_ships_only_the_binary() {
    let file = containerfile();
    assert_eq!(file.stages.len(), 2, "a build stage and a runtime stage");
    let from = |stage: &Vec<(String, String)>| stage[0].1.clone();
    let build = from(&file.stages[0]);
    let (build_image, build_name) = build
        .split_once(" AS ")
        .or_else(|| build.split_once(" as "))
        .expect("the build stage is named (FROM ... AS name)");
    assert_eq!(build_image, "debian:bookworm");
    assert_eq!(from(&file.stages[1]), "debian:bookworm-slim");

    let runs_build = file.stages[0]
        .iter()
        .any(|(op, a)| op == "RUN" && a.contains("cargo build --release"));
    assert!(runs_build, "the build stage runs `cargo build --release`");
    let runtime = &file.stages[1];
    let copies_binary = runtime.iter().any(|(op, a)| {
        op == "COPY"
            && a.starts_with(&format!("--from={build_name} "))
            && a.contains("release/pthwatch")
            && a.ends_with(INSTALLED_BIN)
    });
    assert!(
        copies_binary,
        "COPY --from={build_name} of the binary to {INSTALLED_BIN}"
    );
    assert!(
        !runtime
            .iter()
            .any(|(op, a)| op == "RUN" && (a.contains("cargo") || a.contains("rustup"))),
        "no toolchain in the runtime image"
    );
    assert_eq!(file.last("USER"), Some("root"));
    assert_eq!(file.json_array("ENTRYPOINT"), [INSTALLED_BIN, "run"]);

    // Files copied from the build context exist in the repository.
    for stage in &file.stages {
        for (op, args) in stage {
            if (op == "COPY" || op == "ADD") && !args.starts_with("--from") {
                let mut parts: Vec<&str> = args.split_whitespace().collect();
                parts.pop();
                for source in parts.into_iter().filter(|p| !p.starts_with("--")) {
                    assert!(
                        repo().join(source).exists(),
                        "{CONTAINERFILE}: {op} source `{source}` does not exist"
                    );
                }
            }
        }
    }
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore keeps target/ out of the build context"
    );
}
