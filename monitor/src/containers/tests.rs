use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::json;

use super::{cgroup, runtime, *};
use crate::{
    alert::{Action, Alert, ContainerRef, ProcessRef, Severity},
    config::{AlertFacts, Config},
};

const ID: &str = "4f7e2a9c1b3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
const UID: &str = "0d1c2b3a-4e5f-4a6b-8c7d-9e8f7a6b5c4d";

static N: AtomicUsize = AtomicUsize::new(0);

/// A fixture tree under the temp dir, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Self {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!(
            "pthwatch-containers-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self(root)
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Settings whose every root is inside this tree.
    fn settings(&self) -> ContainerSettings {
        ContainerSettings {
            containerd_tasks: self.0.join("containerd"),
            crio_containers: self.0.join("crio"),
            docker_containers: self.0.join("docker"),
            pod_logs: self.0.join("pods"),
            ..ContainerSettings::default()
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn containerd_bundle(t: &Tree, namespace: &str, id: &str, annotations: serde_json::Value) {
    let doc = json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["python3"], "env": ["AWS_SECRET_ACCESS_KEY=never-read"]},
        "annotations": annotations,
    });
    t.write(
        &format!("containerd/{namespace}/{id}/config.json"),
        doc.to_string(),
    );
}

fn cri_annotations(image: &str) -> serde_json::Value {
    json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.image-name": image,
        "io.kubernetes.cri.sandbox-namespace": "ci",
        "io.kubernetes.cri.sandbox-name": "runner-7f9c",
        "io.kubernetes.cri.sandbox-uid": UID,
    })
}

#[test]
fn cgroup_paths_name_the_container_and_pod() {
    let systemd = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
        UID.replace('-', "_")
    );
    let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
        (systemd.clone(), Some(ID), Some(UID)),
        (
            format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
                UID.replace('-', "_")
            ),
            Some(ID),
            Some(UID),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            Some(ID),
            Some(UID),
        ),
        (format!("/kubepods/pod{UID}/{ID}"), Some(ID), Some(UID)),
        // A pod-level cgroup: no container yet.
        (format!("/kubepods/pod{UID}"), None, Some(UID)),
        // Inside another cgroup namespace.
        (format!("/../../..{systemd}"), Some(ID), Some(UID)),
        (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
        (format!("/docker/{ID}"), Some(ID), None),
        (format!("/machine.slice/libpod-{ID}.scope"), Some(ID), None),
        // CRI-O's monitor is not the container.
        (
            format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
                UID.replace('-', "_")
            ),
            None,
            Some(UID),
        ),
        (
            "/user.slice/user-1000.slice/session-3.scope".into(),
            None,
            None,
        ),
        ("/".into(), None, None),
        // Not quite ids.
        (format!("/docker/{}", &ID[..63]), None, None),
        (format!("/docker/{}", ID.to_uppercase()), None, None),
        ("/kubepods/podnot-a-uid".into(), None, None),
    ];
    for (path, container, pod) in cases {
        let (c, p) = cgroup::parse_path(&path);
        assert_eq!((c.as_deref(), p.as_deref()), (container, pod), "{path}");
    }
    // A static pod's UID is 32 hex digits.
    let (_, p) = cgroup::parse_path("/kubepods/pod8c9b1d2e3f405162738495a6b7c8d9e0/x");
    assert_eq!(p.as_deref(), Some("8c9b1d2e3f405162738495a6b7c8d9e0"));
}

#[test]
fn containerd_bundles_name_image_pod_and_namespace() {
    let t = Tree::new("containerd");
    t.mkdir("containerd/moby");
    containerd_bundle(
        &t,
        "k8s.io",
        ID,
        cri_annotations("registry.example.com/ci/python:3.12"),
    );
    let meta = runtime::lookup(&t.settings(), ID, None).expect("found");
    assert_eq!(
        meta,
        ContainerMeta {
            image: Some("registry.example.com/ci/python:3.12".into()),
            pod_name: Some("runner-7f9c".into()),
            pod_namespace: Some("ci".into()),
            pod_uid: Some(UID.into()),
        }
    );
    // The pod's sandbox (pause) container: the pod, not the pause image.
    let sandbox = "aa".repeat(32);
    containerd_bundle(
        &t,
        "k8s.io",
        &sandbox,
        json!({
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-namespace": "ci",
            "io.kubernetes.cri.sandbox-name": "runner-7f9c",
            "io.kubernetes.cri.sandbox-uid": UID,
        }),
    );
    let meta = runtime::lookup(&t.settings(), &sandbox, None).expect("found");
    assert_eq!(meta.image, None);
    assert_eq!(meta.pod_namespace.as_deref(), Some("ci"));
}

#[test]
fn crio_config_names_image_pod_and_namespace() {
    let t = Tree::new("crio");
    t.write(
        &format!("crio/{ID}/userdata/config.json"),
        json!({
            "annotations": {
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.ImageName": "quay.io/team/worker:2.1",
                "io.kubernetes.pod.namespace": "batch",
                "io.kubernetes.pod.name": "worker-0",
                "io.kubernetes.pod.uid": UID,
            }
        })
        .to_string(),
    );
    let meta = runtime::lookup(&t.settings(), ID, None).expect("found");
    assert_eq!(meta.image.as_deref(), Some("quay.io/team/worker:2.1"));
    assert_eq!(meta.pod_namespace.as_deref(), Some("batch"));
    assert_eq!(meta.pod_name.as_deref(), Some("worker-0"));
    assert_eq!(meta.pod_uid.as_deref(), Some(UID));
}

#[test]
fn docker_config_names_the_image_and_a_dockershim_pod() {
    let t = Tree::new("docker");
    t.write(
        &format!("docker/{ID}/config.v2.json"),
        json!({
            "ID": ID,
            "Image": "sha256:0123",
            "Config": {
                "Image": "python:3.12-slim",
                "Env": ["TOKEN=never-read"],
                "Labels": {
                    "io.kubernetes.pod.namespace": "legacy",
                    "io.kubernetes.pod.name": "old-app-1",
                    "io.kubernetes.pod.uid": UID,
                }
            }
        })
        .to_string(),
    );
    let meta = runtime::lookup(&t.settings(), ID, None).expect("found");
    assert_eq!(meta.image.as_deref(), Some("python:3.12-slim"));
    assert_eq!(meta.pod_namespace.as_deref(), Some("legacy"));
    assert_eq!(meta.pod_name.as_deref(), Some("old-app-1"));
    // Plain docker: an image, no pod.
    let plain = "bb".repeat(32);
    t.write(
        &format!("docker/{plain}/config.v2.json"),
        json!({"Config": {"Image": "alpine:3.20", "Labels": null}}).to_string(),
    );
    let meta = runtime::lookup(&t.settings(), &plain, None).expect("found");
    assert_eq!(meta.image.as_deref(), Some("alpine:3.20"));
    assert_eq!((meta.pod_name, meta.pod_namespace), (None, None));
}

#[test]
fn pod_log_directories_name_a_pod_the_runtime_files_do_not() {
    let t = Tree::new("podlogs");
    t.mkdir("pods/kube-system_coredns-5d78c9869d-abcde_11111111-2222-4333-8444-555555555555");
    t.mkdir(&format!("pods/ci_runner-7f9c_{UID}"));
    t.mkdir("pods/not_a_pod_dir_at_all");
    t.write("pods/stray-file", "x");
    // The runtime's bundle knows the image only (containerd outside the CRI plugin).
    containerd_bundle(&t, "k8s.io", ID, json!({}));
    let meta = runtime::lookup(&t.settings(), ID, Some(UID)).expect("found");
    assert_eq!(meta.pod_namespace.as_deref(), Some("ci"));
    assert_eq!(meta.pod_name.as_deref(), Some("runner-7f9c"));
    assert_eq!(meta.pod_uid.as_deref(), Some(UID));
    assert_eq!(meta.image, None);
    // No runtime file at all: the pod still has a name.
    let other = "cc".repeat(32);
    let meta = runtime::lookup(&t.settings(), &other, Some(UID)).expect("found");
    assert_eq!(meta.pod_name.as_deref(), Some("runner-7f9c"));
    assert_eq!(
        runtime::pod_from_logs(&t.0.join("pods"), "99999999-2222-4333-8444-555555555555"),
        None
    );
    assert_eq!(runtime::pod_from_logs(&t.0.join("pods"), "../etc"), None);
    let pod = runtime::lookup_pod(&t.settings(), UID).expect("pod");
    assert_eq!(pod.pod_namespace.as_deref(), Some("ci"));
}

#[test]
fn missing_malformed_huge_and_strange_files_resolve_to_nothing() {
    let t = Tree::new("bad");
    let s = ContainerSettings {
        max_file_bytes: 4096,
        ..t.settings()
    };
    // Nothing on the node at all.
    assert_eq!(runtime::lookup(&s, ID, None), None);
    // Malformed JSON, JSON of the wrong shape, non-UTF-8, oversized, a directory, a FIFO.
    let cases: [(&str, Vec<u8>); 4] = [
        ("11", b"{\"annotations\": {".to_vec()),
        ("22", b"[1, 2, 3]".to_vec()),
        (
            "33",
            b"{\"annotations\": {\"io.kubernetes.cri.image-name\": \"\xff\xfe\"}}".to_vec(),
        ),
        (
            "44",
            format!(
                "{{\"annotations\": {{\"io.kubernetes.cri.image-name\": \"{}\"}}}}",
                "a".repeat(5000)
            )
            .into_bytes(),
        ),
    ];
    for (prefix, bytes) in cases {
        let id = prefix.repeat(32);
        t.write(&format!("containerd/k8s.io/{id}/config.json"), bytes);
        assert_eq!(runtime::lookup(&s, &id, None), None, "{prefix}");
    }
    let dir_id = "55".repeat(32);
    t.mkdir(&format!("containerd/k8s.io/{dir_id}/config.json"));
    assert_eq!(runtime::lookup(&s, &dir_id, None), None);
    let fifo_id = "66".repeat(32);
    let fifo = t
        .mkdir(&format!("crio/{fifo_id}/userdata"))
        .join("config.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    assert_eq!(runtime::lookup(&s, &fifo_id, None), None);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "a FIFO must not block"
    );
    // Values that are not strings, or absurdly long, are not names.
    let odd = "77".repeat(32);
    containerd_bundle(
        &t,
        "k8s.io",
        &odd,
        json!({"io.kubernetes.cri.image-name": 5, "io.kubernetes.cri.sandbox-name": ""}),
    );
    assert_eq!(runtime::lookup(&s, &odd, None), None);
    // Ids that could leave the runtime's directory are not looked up.
    t.write("containerd/k8s.io/config.json", "{}");
    for id in ["", "..", "../k8s.io", "a/b", ".hidden"] {
        assert_eq!(runtime::lookup(&s, id, None), None, "{id}");
    }
    assert!(runtime::read_json(Path::new("/nonexistent/config.json"), 4096).is_none());
}

/// A resolver over a fixture `/proc` and a fixture cgroup hierarchy (plain directories:
/// their inodes stand for cgroup ids).
fn fixture_resolver(t: &Tree, pid: u32, cgroup_path: &str) -> (Resolver, u64) {
    let cg_dir = t.mkdir(&format!("cgroup{cgroup_path}"));
    t.write(
        &format!("proc/{pid}/cgroup"),
        format!("12:memory:/x\n0::{cgroup_path}\n"),
    );
    let id = std::fs::metadata(&cg_dir).unwrap().ino();
    let r = Resolver::with_roots(t.settings(), t.0.join("proc"), Some(t.0.join("cgroup")));
    (r, id)
}

fn pod_cgroup() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
        UID.replace('-', "_")
    )
}

#[test]
fn alerts_are_filled_from_the_cgroup_and_cached() {
    let t = Tree::new("fill");
    containerd_bundle(
        &t,
        "k8s.io",
        ID,
        cri_annotations("registry.example.com/ci/python:3.12"),
    );
    let (mut r, id) = fixture_resolver(&t, 4242, &pod_cgroup());
    let mut c = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 4242);
    assert_eq!(c.cgroup.as_deref(), Some(pod_cgroup().as_str()));
    assert_eq!(c.container_id.as_deref(), Some(ID));
    assert_eq!(c.pod_uid.as_deref(), Some(UID));
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/ci/python:3.12")
    );
    assert_eq!(c.pod_name.as_deref(), Some("runner-7f9c"));
    assert_eq!(c.pod_namespace.as_deref(), Some("ci"));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["pod_namespace"], "ci");
    assert_eq!(r.cached(), (1, 1));

    // Cached: with the files gone, the same cgroup still resolves (no reads)...
    std::fs::remove_dir_all(t.0.join("containerd")).unwrap();
    std::fs::remove_file(t.0.join("proc/4242/cgroup")).unwrap();
    let mut again = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.fill(&mut again, 4242);
    assert_eq!(again.image, c.image);
    // ...until the cgroup is gone, when pruning forgets it and its container.
    r.prune();
    assert_eq!(r.cached(), (1, 1));
    std::fs::remove_dir(t.0.join(format!("cgroup{}", pod_cgroup()))).unwrap();
    r.prune();
    assert_eq!(r.cached(), (0, 0));
}

#[test]
fn a_process_already_gone_is_found_by_its_cgroup_id() {
    let t = Tree::new("gone");
    containerd_bundle(&t, "k8s.io", ID, cri_annotations("python:3.12"));
    let (mut r, id) = fixture_resolver(&t, 4242, &pod_cgroup());
    std::fs::remove_file(t.0.join("proc/4242/cgroup")).unwrap();
    let mut c = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 4242);
    assert_eq!(c.cgroup.as_deref(), Some(pod_cgroup().as_str()));
    assert_eq!(c.image.as_deref(), Some("python:3.12"));
    // A pid now another process's (in another cgroup): the id decides.
    t.mkdir("cgroup/user.slice");
    t.write("proc/4243/cgroup", "0::/user.slice\n");
    let mut c = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.by_cgroup = Lru::new(8);
    r.fill(&mut c, 4243);
    assert_eq!(c.container_id.as_deref(), Some(ID));
    // Outside containers: the cgroup path only.
    let host_id = std::fs::metadata(t.0.join("cgroup/user.slice"))
        .unwrap()
        .ino();
    let mut c = ContainerRef {
        cgroup_id: host_id,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 4243);
    assert_eq!(c.cgroup.as_deref(), Some("/user.slice"));
    assert_eq!(
        (c.container_id, c.image, c.pod_namespace),
        (None, None, None)
    );
    // Unknown cgroup id and no process: nothing.
    let mut c = ContainerRef::default();
    r.fill(&mut c, 0);
    assert_eq!(c.cgroup, None);
    // A cgroup id not found is remembered for a while (no walk per alert).
    let before = r.cached().0;
    let mut c = ContainerRef {
        cgroup_id: u64::MAX,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 0);
    assert_eq!(c.cgroup, None);
    assert_eq!(r.cached().0, before + 1);
    r.prune();
    assert_eq!(r.cached().0, before, "a miss is dropped by pruning");
}

#[test]
fn metadata_off_keeps_the_cgroup_facts_only() {
    let t = Tree::new("off");
    containerd_bundle(&t, "k8s.io", ID, cri_annotations("python:3.12"));
    let (_, id) = fixture_resolver(&t, 7, &pod_cgroup());
    let mut r = Resolver::with_roots(
        ContainerSettings {
            metadata: false,
            ..t.settings()
        },
        t.0.join("proc"),
        Some(t.0.join("cgroup")),
    );
    let mut c = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 7);
    assert_eq!(c.container_id.as_deref(), Some(ID));
    assert_eq!(c.image, None);
}

#[test]
fn the_cache_is_bounded_and_forgets_the_least_recently_used() {
    let mut lru: Lru<u32, u32> = Lru::new(3);
    for k in 0..3 {
        lru.insert(k, k);
    }
    assert!(lru.get(&0).is_some());
    lru.insert(3, 3);
    assert_eq!(lru.len(), 3);
    assert!(lru.get(&1).is_none(), "1 was the least recently used");
    assert!(lru.get(&0).is_some() && lru.get(&2).is_some() && lru.get(&3).is_some());
    // A container that said nothing is asked again, after a while.
    let t = Tree::new("negative");
    let (mut r, id) = fixture_resolver(&t, 9, &pod_cgroup());
    let mut c = ContainerRef {
        cgroup_id: id,
        ..ContainerRef::default()
    };
    r.fill(&mut c, 9);
    assert_eq!(c.image, None);
    containerd_bundle(&t, "k8s.io", ID, cri_annotations("python:3.12"));
    r.fill(&mut c, 9);
    assert_eq!(c.image, None, "cached for NEGATIVE_TTL");
    r.by_container.entries.get_mut(ID).unwrap().2 -= NEGATIVE_TTL;
    r.fill(&mut c, 9);
    assert_eq!(c.image.as_deref(), Some("python:3.12"));
}

#[test]
fn allow_entries_by_namespace_and_image_match_what_the_resolver_found() {
    let t = Tree::new("allow");
    containerd_bundle(
        &t,
        "k8s.io",
        ID,
        cri_annotations("registry.example.com/ci/python:3.12"),
    );
    let (mut r, id) = fixture_resolver(&t, 4242, &pod_cgroup());
    // The alert as detection builds it (only the kernel's cgroup id in its container),
    // completed by the resolver, then reduced to the facts allow entries match, as
    // `Detector::emit` and `Detector::suppressed` do.
    let mut alert = Alert {
        id: "0".repeat(32),
        time: "2026-03-24T10:00:00.000Z".into(),
        rule: "hook_credential_exfiltration",
        severity: Severity::Critical,
        action: Action::Blocked,
        summary: "a startup hook's lineage read credentials and then contacted 203.0.113.7:443"
            .into(),
        host: "node-1".into(),
        process: ProcessRef {
            pid: 4242,
            ppid: 1,
            uid: 0,
            exe: "/usr/bin/python3.12".into(),
            cmdline: vec!["python3".into()],
        },
        lineage: Vec::new(),
        startup_hook: None,
        credentials: vec!["/root/.aws/credentials".into()],
        destination: None,
        persistence: Vec::new(),
        container: ContainerRef {
            cgroup_id: id,
            ..ContainerRef::default()
        },
        lineage_id: 1,
    };
    r.fill(&mut alert.container, alert.process.pid);
    assert_eq!(alert.container.pod_namespace.as_deref(), Some("ci"));
    let facts = crate::detect::alert_facts(&alert);
    let config = |entry: &str| {
        Config::from_toml(entry, Path::new("t.toml"), false)
            .expect("valid")
            .config
    };
    let by_ns = config("[[allow]]\nrules = [\"*\"]\nk8s_namespace = \"ci\"\n");
    assert!(
        by_ns
            .allow
            .allows("hook_credential_exfiltration", &facts)
            .is_some()
    );
    let by_image = config(
        "[[allow]]\nrules = [\"hook_credential_access\"]\ncontainer_image = \"registry.example.com/ci/*\"\n",
    );
    assert!(
        by_image
            .allow
            .allows("hook_credential_access", &facts)
            .is_some()
    );
    let other_ns = config("[[allow]]\nrules = [\"*\"]\nk8s_namespace = \"prod\"\n");
    assert!(
        other_ns
            .allow
            .allows("hook_credential_exfiltration", &facts)
            .is_none()
    );
    let other_image = config("[[allow]]\nrules = [\"*\"]\ncontainer_image = \"docker.io/*\"\n");
    assert!(
        other_image
            .allow
            .allows("hook_persistence", &facts)
            .is_none()
    );
    // A process outside any container matches neither.
    let host = AlertFacts {
        exe: Some("/usr/bin/python3.12"),
        ..AlertFacts::default()
    };
    assert!(
        by_ns
            .allow
            .allows("hook_credential_exfiltration", &host)
            .is_none()
    );
    assert!(
        by_image
            .allow
            .allows("hook_credential_access", &host)
            .is_none()
    );
}

#[test]
fn the_process_cgroup_file_is_read_for_its_v2_line() {
    let t = Tree::new("proc");
    t.write("proc/1/cgroup", "0::/init.scope\n");
    t.write("proc/2/cgroup", "4:memory:/a\n1:name=systemd:/b\n");
    assert_eq!(
        cgroup::of_process(&t.0.join("proc"), 1).as_deref(),
        Some("/init.scope")
    );
    assert_eq!(cgroup::of_process(&t.0.join("proc"), 2), None);
    assert_eq!(cgroup::of_process(&t.0.join("proc"), 3), None);
    assert_eq!(cgroup::dir_of(Path::new("/r"), "/../x"), None);
    assert_eq!(
        cgroup::dir_of(Path::new("/r"), "/a/b"),
        Some(PathBuf::from("/r/a/b"))
    );
}
