//! Hooks seen through another mount namespace, as in a container: the interpreter opens a
//! `.pth` at a path that names a different file (or nothing) on the host, so pthwatch
//! must read it through `/proc/<pid>/root` to name and hash what really ran.
use std::time::Duration;

use integration_tests::{
    Daemon, PYTHON, Sandbox, TcpSink, can_run,
    payload::{exfiltrate, spawning_pth_line, wait_marker},
    run_bounded,
};

#[test]
fn a_hook_inside_another_mount_namespace_is_read_there_and_blocked() {
    if !can_run() {
        return;
    }
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipped: unshare(1) not installed");
        return;
    }
    let sb = Sandbox::new("mntns");
    let sink = TcpSink::start();
    // The container's site dir: on the host it lives elsewhere; inside the namespace it is
    // mounted over the user site dir, where the host has only a harmless path file.
    let inner = sb.root.join("container-site");
    std::fs::create_dir_all(&inner).expect("mkdir");
    sb.pth("host_only.pth", "/nonexistent/path\n");
    let child = exfiltrate(sink.port);
    let line = spawning_pth_line(&child);
    std::fs::write(inner.join("container_init.pth"), &line).expect("write");
    let inside = sb.site.join("container_init.pth");
    assert!(
        !inside.exists(),
        "the host must not have the container's hook"
    );
    let daemon = Daemon::start("block", &[]);
    let script = format!(
        "mount --bind {} {} && exec {PYTHON} -c 'import time; time.sleep(0.5)'",
        inner.display(),
        sb.site.display()
    );
    let (code, out) = run_bounded(
        sb.command("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(&script),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_credential_exfiltration"
    });
    let alerts = daemon.stop();
    assert_eq!(
        done.as_deref(),
        Some("error 1"),
        "the container hook got through"
    );
    assert_eq!(sink.bytes(), 0);
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    let hook = &alert["startup_hook"];
    // Named as the container sees it, hashed from the file that really ran.
    let real_site = integration_tests::real(&sb.site);
    assert_eq!(
        hook["path"].as_str(),
        Some(&*real_site.join("container_init.pth").to_string_lossy()),
        "{alert:#}"
    );
    let digest = sha256_hex(line.as_bytes());
    assert_eq!(hook["sha256"].as_str(), Some(digest.as_str()), "{alert:#}");
    assert!(
        hook["line"]
            .as_str()
            .is_some_and(|l| l.contains("subprocess.Popen"))
    );
}

/// sha256 via coreutils (the test crate keeps its dependencies minimal).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
