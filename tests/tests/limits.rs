//! Input at the edges, end to end on the real kernel: a credential read through a path
//! longer than `PATH_MAX`, a startup hook whose file name is not UTF-8, a host with no
//! tracefs or bpffs mounted, and a host with no cgroup v2 mount (cgroup v1 only). Each is
//! still caught and blocked, and reported in a form a person can act on. Every wait is
//! bounded; payloads are guarded by `PTHW_CHILD`.
use std::{os::unix::ffi::OsStrExt as _, time::Duration};

use integration_tests::{
    Daemon, Sandbox, TcpSink, can_run,
    payload::{
        exfil_alert, exfiltrate, run_hook_once, send_and_record, spawning_pth_line, strings,
    },
    real, run_bounded,
};
use serde_json::Value;

/// Components of the deep tree, each `NAME_LEN` bytes: 24 * 201 bytes is past `PATH_MAX`
/// (4096) before the sandbox's own prefix is counted.
const DEPTH: usize = 24;
const NAME_LEN: usize = 200;

#[test]
fn a_credential_read_through_a_path_longer_than_path_max_is_caught_and_blocked() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("pathmax");
    let sink = TcpSink::start();
    // The tree is made one directory at a time, relative to the last: no single path
    // the kernel is given is long, only the file's full path is.
    let make = format!(
        "import os\nos.chdir(os.path.expanduser('~'))\nos.mkdir('deep')\nos.chdir('deep')\n\
         for _ in range({DEPTH}):\n    os.mkdir('d' * {NAME_LEN})\n    os.chdir('d' * {NAME_LEN})\n\
         os.mkdir('.aws')\nwith open('.aws/credentials', 'w') as f:\n    f.write('[deep]\\naws_secret_access_key = {}\\n')\n\
         print(len(os.getcwd()))\n",
        sb.canary
    );
    let (code, out) = sb.python(&["-c", &make]);
    assert_eq!(code, 0, "{out}");
    let depth: usize = out.trim().parse().expect("cwd length");
    assert!(
        depth > 4096,
        "the tree must be deeper than PATH_MAX: {depth}"
    );

    let payload = format!(
        "import os\nhome = os.path.expanduser('~')\nos.chdir(os.path.join(home, 'deep'))\n\
         for _ in range({DEPTH}):\n    os.chdir('d' * {NAME_LEN})\n\
         blob = open('.aws/credentials', 'rb').read()\n{}",
        send_and_record(sink.port)
    );
    let pth = sb.pth("deep_init.pth", &spawning_pth_line(&payload));
    let daemon = Daemon::start("block", &[]);
    let alert = run_blocked(&sb, &sink, daemon, "the deep read");
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*real(&pth).to_string_lossy()),
        "{alert:#}"
    );
    // The kernel walked as far as its buffer goes: the path is shown as the tail it has,
    // marked as partial, never as if it started at the root.
    let creds = strings(&alert["credentials"]);
    let deep = creds
        .iter()
        .find(|c| c.ends_with(&format!("{}/.aws/credentials", "d".repeat(NAME_LEN))))
        .unwrap_or_else(|| panic!("the deep credential is missing from {creds:?}"));
    assert!(
        deep.starts_with(".../"),
        "a partial path must say so: {deep}"
    );
    assert!(deep.len() < depth, "{deep}");
}

#[test]
fn a_hook_whose_name_is_not_utf8_is_named_exactly_and_blocked() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("nonutf8");
    let sink = TcpSink::start();
    // The credentials also live under a directory whose name is not UTF-8.
    let odd_dir = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let aws = sb.home.join(odd_dir).join(".aws");
    std::fs::create_dir_all(&aws).expect("mkdir");
    std::fs::write(
        aws.join("credentials"),
        format!("[odd]\nkey = {}\n", sb.canary),
    )
    .expect("write");
    let payload = format!(
        "import os\nhome = os.path.expanduser('~')\n\
         blob = open(os.path.join(os.fsencode(home), b'caf\\xe9', b'.aws', b'credentials'), 'rb').read()\n{}",
        send_and_record(sink.port)
    );
    let name = std::ffi::OsStr::from_bytes(b"init_\xff\xfe.pth");
    let pth = sb.site.join(name);
    std::fs::write(&pth, spawning_pth_line(&payload)).expect("write .pth");
    let daemon = Daemon::start("block", &[]);
    let alert = run_blocked(&sb, &sink, daemon, "the payload");
    // Invalid bytes are escaped, not replaced: two such names never print the same.
    let site = real(&sb.site).to_string_lossy().into_owned();
    assert_eq!(
        alert["startup_hook"]["path"].as_str(),
        Some(&*format!("{site}/init_\\xff\\xfe.pth")),
        "{alert:#}"
    );
    let home = real(&sb.home).to_string_lossy().into_owned();
    let want = format!("{home}/caf\\xe9/.aws/credentials");
    assert!(
        strings(&alert["credentials"]).contains(&want),
        "{want} missing: {alert:#}"
    );
}

/// `unshare` and `sh` that hide the cgroup v2 mount from what they exec, as on a host
/// booted with cgroup v1 only (the v1 controllers stay mounted).
fn without_cgroup2() -> Option<Vec<&'static str>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let v2: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split(' ').nth(2) == Some("cgroup2"))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    if v2.as_slice() != ["/sys/fs/cgroup/unified"] {
        eprintln!(
            "skipped: needs the hybrid layout (cgroup2 only at /sys/fs/cgroup/unified): {v2:?}"
        );
        return None;
    }
    in_private_mounts("umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"")
}

/// `unshare` and `sh` that run `script` in a private mount namespace; the script ends by
/// exec'ing the rest of the command line there. `None` (skipped) without unshare(1).
fn in_private_mounts(script: &'static str) -> Option<Vec<&'static str>> {
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipped: unshare(1) not installed");
        return None;
    }
    Some(vec![
        "/usr/bin/unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
    ])
}

/// Runs one interpreter in the sandbox under `daemon` (block mode), then stops it: the
/// hook's send (`what`) must have been refused and nothing may have arrived. Returns the
/// exfiltration alert.
fn run_blocked(sb: &Sandbox, sink: &TcpSink, daemon: Daemon, what: &str) -> Value {
    let done = run_hook_once(sb);
    let alert = exfil_alert(&daemon);
    let alerts = daemon.stop();
    assert_eq!(done.as_deref(), Some("error 1"), "{what} got through");
    assert_eq!(sink.bytes(), 0);
    alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"))
}

#[test]
fn a_host_without_tracefs_or_bpffs_mounted_gets_them_and_is_protected() {
    if !can_run() {
        return;
    }
    // Every tracefs and bpffs mount hidden, deepest first, as on a host that never
    // mounted them.
    let Some(wrapper) = in_private_mounts(
        "awk '$3 == \"tracefs\" || $3 == \"bpf\" { print $2 }' /proc/self/mounts | sort -r \
         | while read -r m; do umount \"$m\" || exit 1; done && exec \"$0\" \"$@\"",
    ) else {
        return;
    };
    let sb = Sandbox::new("nomounts");
    let sink = TcpSink::start();
    sb.pth(
        "nomounts_init.pth",
        &spawning_pth_line(&exfiltrate(sink.port)),
    );
    let daemon = Daemon::start_via(&wrapper, &["--mode", "block"]);
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", daemon.pid())).expect("mountinfo");
    let mounted = |fstype: &str, at: &str| {
        mountinfo
            .lines()
            .any(|l| l.contains(&format!(" {at} ")) && l.contains(&format!(" - {fstype} ")))
    };
    assert!(
        mounted("tracefs", "/sys/kernel/tracing"),
        "the daemon should have mounted tracefs:\n{mountinfo}"
    );
    assert!(
        mounted("bpf", "/sys/fs/bpf"),
        "the daemon should have mounted bpffs:\n{mountinfo}"
    );
    run_blocked(&sb, &sink, daemon, "the payload");
}

#[test]
fn a_host_without_cgroup2_mounted_is_reported_and_still_protected() {
    if !can_run() {
        return;
    }
    let Some(wrapper) = without_cgroup2() else {
        return;
    };
    // `check` says what is missing and what `run` will do about it.
    let (code, out) = run_bounded(
        std::process::Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(integration_tests::pthwatch_bin())
            .args(["check", "--json"]),
        Duration::from_secs(60),
    );
    let json = out.find('{').map(|i| &out[i..]).unwrap_or("");
    let report: Value = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("check --json (exit {code}) printed no report: {out}"));
    let cgroup = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "mount.cgroup2"))
        .unwrap_or_else(|| panic!("no mount.cgroup2 check: {report:#}"));
    assert_eq!(cgroup["status"], "no", "{cgroup:#}");
    assert!(
        cgroup["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/run/pthwatch/cgroup2")),
        "{cgroup:#}"
    );
    assert!(!report["backend"].is_null(), "{report:#}");

    // `run` mounts its own cgroup v2 in its namespace and denies from its root.
    let sb = Sandbox::new("cgroupv1");
    let sink = TcpSink::start();
    sb.pth("v1_init.pth", &spawning_pth_line(&exfiltrate(sink.port)));
    let daemon = Daemon::start_via(&wrapper, &["--mode", "block"]);
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", daemon.pid())).expect("mountinfo");
    let own: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .collect();
    assert!(
        own.iter().any(|l| l.contains(" /run/pthwatch/cgroup2 ")),
        "the daemon should have mounted its own cgroup v2: {own:?}"
    );
    assert!(
        !own.iter().any(|l| l.contains(" /sys/fs/cgroup/unified ")),
        "{own:?}"
    );
    run_blocked(&sb, &sink, daemon, "the payload");
    // The host's own mount table is untouched.
    let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !host.contains(" /run/pthwatch/cgroup2 "),
        "the mount leaked"
    );
}
