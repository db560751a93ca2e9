//! Hooks in containers.
//!
//! - Seen through another mount namespace: the interpreter opens a `.pth` at a path that
//!   names a different file (or nothing) on the host, so pthwatch must read it through
//!   `/proc/<pid>/root` to name and hash what really ran.
//! - In a Kubernetes pod's cgroup: the alert names the container, its image, the pod and
//!   its namespace (from a containerd bundle), and `[[allow]]` by namespace silences it.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
/// hosts).
fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found.into_iter().next()
}

/// A kubelet-shaped cgroup tree made for the test, removed (deepest first) when dropped,
/// whatever happened: processes still in it are moved back to the root first.
struct PodCgroup {
    root: PathBuf,
    /// Created directories, outermost first.
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    fn create(root: &Path, pod_uid: &str, container_id: &str) -> Self {
        let names = [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut cg = Self {
            root: root.to_owned(),
            dirs: Vec::new(),
        };
        let mut dir = root.to_owned();
        for name in names {
            dir.push(name);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                cg.dirs.push(dir.clone());
            }
        }
        cg
    }

    /// The container's cgroup.
    fn leaf(&self) -> &Path {
        self.dirs.last().expect("created")
    }

    /// The leaf as `/proc/<pid>/cgroup` shows it.
    fn path(&self) -> String {
        format!(
            "/{}",
            self.leaf()
                .strip_prefix(&self.root)
                .expect("under the root")
                .display()
        )
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.split_whitespace() {
                        let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
                    }
                }
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("could not remove {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// Runs `python3 -c ...` (its hooks run) inside the cgroup `procs` names: the shell moves
/// itself there, then becomes the interpreter.
fn python_in_cgroup(sb: &Sandbox, cgroup: &Path) -> (i32, String) {
    let procs = cgroup.join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec {PYTHON} -c 'import time; time.sleep(0.5)'",
        procs.display()
    );
    run_bounded(
        sb.command("/bin/sh").arg("-c").arg(&script),
        Duration::from_secs(60),
    )
}

#[test]
fn an_alert_in_a_kubernetes_pod_names_image_pod_and_namespace_and_allow_by_namespace_silences_it() {
    if !can_run() {
        return;
    }
    let Some(cgroot) = cgroup2_root() else {
        eprintln!("skipped: no cgroup v2 mount");
        return;
    };
    let sb = Sandbox::new("k8spod");
    let me = std::process::id();
    let pod_uid = format!("7e1f0c2d-3b4a-4c5d-8e6f-{me:012x}");
    let container_id = format!("{:064x}", (u128::from(me) << 32) | 0xc0de);
    let namespace = "pthwatch-test-ci";
    let pod_name = format!("runner-{me}");
    let image = "registry.example.com/ci/python:3.11";

    // The node's runtime state, as containerd's CRI plugin writes it, under a fixture
    // root the daemon is pointed at.
    let node = sb.root.join("node");
    let bundle = node.join("containerd/k8s.io").join(&container_id);
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    let config_json = serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["python3"], "env": ["PATH=/usr/bin"]},
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "runner",
            "io.kubernetes.cri.image-name": image,
            "io.kubernetes.cri.sandbox-namespace": namespace,
            "io.kubernetes.cri.sandbox-name": pod_name,
            "io.kubernetes.cri.sandbox-uid": pod_uid,
        },
    });
    std::fs::write(bundle.join("config.json"), config_json.to_string()).expect("config.json");
    let containers = format!(
        "[containers]\ncontainerd_tasks = \"{}\"\ncrio_containers = \"{}\"\ndocker_containers = \"{}\"\npod_logs = \"{}\"\n",
        node.join("containerd").display(),
        node.join("crio").display(),
        node.join("docker").display(),
        node.join("pods").display(),
    );
    let plain = sb.root.join("plain.toml");
    std::fs::write(&plain, &containers).expect("config");
    let allowing = sb.root.join("allow.toml");
    std::fs::write(
        &allowing,
        format!(
            "{containers}\n[[allow]]\nrules = [\"*\"]\nk8s_namespace = \"{namespace}\"\nreason = \"the test's CI namespace\"\n"
        ),
    )
    .expect("config");

    let sink = TcpSink::start();
    let hook = sb.pth("k8s_init.pth", &spawning_pth_line(&exfiltrate(sink.port)));
    let hook_path = integration_tests::real(&hook);
    let cgroup = PodCgroup::create(&cgroot, &pod_uid, &container_id);
    let about_us = |a: &serde_json::Value| {
        a["container"]["container_id"] == container_id.as_str()
            || a["startup_hook"]["path"].as_str() == Some(&*hook_path.to_string_lossy())
    };

    // 1. Reported, with the pod.
    let cfg = plain.to_string_lossy().into_owned();
    let log = sb.root.join("events.log");
    let log_arg = log.to_string_lossy().into_owned();
    let daemon = Daemon::start("block", &["--config", &cfg, "--event-log", &log_arg]);
    let (code, out) = python_in_cgroup(&sb, cgroup.leaf());
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    let alert = daemon.wait_alert(Duration::from_secs(10), |a| {
        a["rule"] == "hook_credential_exfiltration" && about_us(a)
    });
    let alerts = daemon.stop();
    assert_eq!(done.as_deref(), Some("error 1"), "the hook got through");
    assert_eq!(sink.bytes(), 0);
    let alert = alert.unwrap_or_else(|| panic!("no exfiltration alert in {alerts:#?}"));
    let c = &alert["container"];
    assert_eq!(c["container_id"], container_id.as_str(), "{alert:#}");
    assert_eq!(c["pod_uid"], pod_uid.as_str(), "{alert:#}");
    assert_eq!(c["cgroup"], cgroup.path().as_str(), "{alert:#}");
    assert_eq!(c["image"], image, "{alert:#}");
    assert_eq!(c["pod_name"], pod_name.as_str(), "{alert:#}");
    assert_eq!(c["pod_namespace"], namespace, "{alert:#}");
    assert!(
        c["cgroup_id"].as_u64().is_some_and(|id| id > 1),
        "{alert:#}"
    );
    // The event log's record of the hook's child names the pod too.
    let text = std::fs::read_to_string(&log).expect("event log");
    let exec = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["data"]["event"] == "exec" && r["data"]["container"].is_object())
        .unwrap_or_else(|| panic!("no exec record with its container in:\n{text}"));
    let c = &exec["data"]["container"];
    assert_eq!(c["container_id"], container_id.as_str(), "{exec:#}");
    assert_eq!(c["pod_namespace"], namespace, "{exec:#}");

    // 2. Silenced by an exception for the namespace (the kernel still blocks: allow
    // entries silence reports, they do not undo rule 1's block).
    let _ = std::fs::remove_file(integration_tests::payload::marker(&sb));
    let cfg = allowing.to_string_lossy().into_owned();
    let daemon = Daemon::start("block", &["--config", &cfg]);
    let (code, out) = python_in_cgroup(&sb, cgroup.leaf());
    assert_eq!(code, 0, "{out}");
    let done = wait_marker(&sb, Duration::from_secs(20));
    assert!(done.is_some(), "the hook's payload did not finish");
    // Rule 2's quiet period and rule 1's settling are well inside this.
    std::thread::sleep(Duration::from_secs(5));
    let alerts = daemon.stop();
    let reported: Vec<_> = alerts.iter().filter(|a| about_us(a)).collect();
    assert!(
        reported.is_empty(),
        "alerts the namespace exception should have silenced: {reported:#?}"
    );
    drop(cgroup);
}
