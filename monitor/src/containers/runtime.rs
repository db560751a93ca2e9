//! What the container runtimes and the kubelet leave on the node about a container: its
//! image and its pod. Read from files only (no runtime socket, no API server):
//!
//! - containerd: the task's OCI bundle, `<containerd_tasks>/<namespace>/<id>/config.json`,
//!   whose `annotations` the CRI plugin fills (`io.kubernetes.cri.image-name`,
//!   `io.kubernetes.cri.sandbox-namespace`, `-name`, `-uid`, `container-type`);
//! - CRI-O: `<crio_containers>/<id>/userdata/config.json`, annotations
//!   `io.kubernetes.cri-o.ImageName`, `io.kubernetes.pod.namespace`, `.name`, `.uid`;
//! - Docker: `<docker_containers>/<id>/config.v2.json`, `Config.Image`, and under
//!   dockershim or cri-dockerd the pod in `Config.Labels`;
//! - the kubelet: `<pod_logs>/<namespace>_<name>_<uid>/`, for a pod known by UID only.
//!
//! These files also hold a container's environment: only the fields above are taken, and
//! nothing of them is logged.

use std::{fs::OpenOptions, io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use serde_json::Value;

use super::cgroup::is_pod_uid;
use crate::config::ContainerSettings;

/// containerd namespaces looked in (`k8s.io`, `moby`, a few more); a bound, not a limit
/// real nodes reach.
const MAX_NAMESPACES: usize = 64;
/// Pod log directories looked through for one UID.
const MAX_POD_DIRS: usize = 65_536;

/// What the node's files say about one container (or pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The image reference the container was created from, as the pod spec (or `docker
    /// run`) named it, e.g. `registry.example.com/ci/python:3.12`.
    pub image: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
}

impl ContainerMeta {
    fn names_something(&self) -> bool {
        self.image.is_some() || self.pod_name.is_some() || self.pod_namespace.is_some()
    }

    /// Fills what is still unknown from `other`.
    fn merge(&mut self, other: Self) {
        let fill = |slot: &mut Option<String>, v: Option<String>| {
            if slot.is_none() {
                *slot = v;
            }
        };
        fill(&mut self.image, other.image);
        fill(&mut self.pod_name, other.pod_name);
        fill(&mut self.pod_namespace, other.pod_namespace);
        fill(&mut self.pod_uid, other.pod_uid);
    }

    fn complete(&self) -> bool {
        self.image.is_some()
            && self.pod_name.is_some()
            && self.pod_namespace.is_some()
            && self.pod_uid.is_some()
    }
}

/// Everything the node's files say about container `id` (in pod `pod_uid`, when the
/// cgroup path named it); `None` when they say nothing.
pub fn lookup(s: &ContainerSettings, id: &str, pod_uid: Option<&str>) -> Option<ContainerMeta> {
    if !is_safe_id(id) {
        return None;
    }
    let mut meta = ContainerMeta::default();
    let sources: [fn(&ContainerSettings, &str) -> Option<ContainerMeta>; 3] =
        [containerd, crio, docker];
    for source in sources {
        if let Some(found) = source(s, id) {
            meta.merge(found);
        }
        if meta.complete() {
            break;
        }
    }
    if meta.pod_uid.is_none() {
        meta.pod_uid = pod_uid.map(str::to_owned);
    }
    fill_pod(s, &mut meta);
    // The pod UID alone is what the cgroup path already said: nothing found.
    meta.names_something().then_some(meta)
}

/// The pod `uid` from the kubelet's log directories alone (a process in a pod's cgroup
/// but in no container's).
pub fn lookup_pod(s: &ContainerSettings, uid: &str) -> Option<ContainerMeta> {
    let mut meta = ContainerMeta {
        pod_uid: Some(uid.to_owned()),
        ..ContainerMeta::default()
    };
    fill_pod(s, &mut meta);
    meta.pod_name.is_some().then_some(meta)
}

/// Names the pod from `<pod_logs>` when the runtime's files did not.
fn fill_pod(s: &ContainerSettings, meta: &mut ContainerMeta) {
    if meta.pod_name.is_some() && meta.pod_namespace.is_some() {
        return;
    }
    let Some(uid) = meta.pod_uid.as_deref() else {
        return;
    };
    if let Some((namespace, name)) = pod_from_logs(&s.pod_logs, uid) {
        meta.pod_namespace.get_or_insert(namespace);
        meta.pod_name.get_or_insert(name);
    }
}

/// Runtime ids are hex (containerd, CRI-O, Docker) or names of letters, digits, `-`, `_`
/// and `.`: nothing that could leave the runtime's directory.
fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn containerd(s: &ContainerSettings, id: &str) -> Option<ContainerMeta> {
    let namespaces = std::fs::read_dir(&s.containerd_tasks).ok()?;
    for ns in namespaces.flatten().take(MAX_NAMESPACES) {
        let bundle = ns.path().join(id).join("config.json");
        if !bundle.exists() {
            continue;
        }
        let doc = read_json(&bundle, s.max_file_bytes)?;
        let a = doc.get("annotations");
        let text = |key: &str| string(a.and_then(|a| a.get(key)));
        let sandbox = text("io.kubernetes.cri.container-type").as_deref() == Some("sandbox");
        return Some(ContainerMeta {
            // A sandbox is the pod's pause container: its image says nothing.
            image: text("io.kubernetes.cri.image-name").filter(|_| !sandbox),
            pod_name: text("io.kubernetes.cri.sandbox-name"),
            pod_namespace: text("io.kubernetes.cri.sandbox-namespace"),
            pod_uid: text("io.kubernetes.cri.sandbox-uid"),
        });
    }
    None
}

fn crio(s: &ContainerSettings, id: &str) -> Option<ContainerMeta> {
    let path = s.crio_containers.join(id).join("userdata/config.json");
    if !path.exists() {
        return None;
    }
    let doc = read_json(&path, s.max_file_bytes)?;
    let a = doc.get("annotations");
    let text = |key: &str| string(a.and_then(|a| a.get(key)));
    let sandbox = text("io.kubernetes.cri-o.ContainerType").as_deref() == Some("sandbox");
    Some(ContainerMeta {
        image: text("io.kubernetes.cri-o.ImageName").filter(|_| !sandbox),
        pod_name: text("io.kubernetes.pod.name"),
        pod_namespace: text("io.kubernetes.pod.namespace"),
        pod_uid: text("io.kubernetes.pod.uid"),
    })
}

fn docker(s: &ContainerSettings, id: &str) -> Option<ContainerMeta> {
    let path = s.docker_containers.join(id).join("config.v2.json");
    if !path.exists() {
        return None;
    }
    let doc = read_json(&path, s.max_file_bytes)?;
    let config = doc.get("Config");
    let labels = config.and_then(|c| c.get("Labels"));
    let label = |key: &str| string(labels.and_then(|l| l.get(key)));
    let sandbox = label("io.kubernetes.docker.type").as_deref() == Some("podsandbox");
    Some(ContainerMeta {
        image: string(config.and_then(|c| c.get("Image"))).filter(|_| !sandbox),
        pod_name: label("io.kubernetes.pod.name"),
        pod_namespace: label("io.kubernetes.pod.namespace"),
        pod_uid: label("io.kubernetes.pod.uid"),
    })
}

/// A non-empty string value, at most 1 KiB (an image reference or a Kubernetes name is
/// far shorter; anything longer is not one).
fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 1024)
        .map(str::to_owned)
}

/// The pod with `uid` among the kubelet's `<namespace>_<name>_<uid>` log directories.
pub fn pod_from_logs(root: &Path, uid: &str) -> Option<(String, String)> {
    if !is_pod_uid(uid) {
        return None;
    }
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten().take(MAX_POD_DIRS) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Namespaces and pod names never hold `_`: exactly three parts.
        let mut parts = name.split('_');
        let (Some(ns), Some(pod), Some(u), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if u == uid && !ns.is_empty() && !pod.is_empty() {
            return Some((ns.to_owned(), pod.to_owned()));
        }
    }
    None
}

/// A JSON document of at most `max` bytes. Anything else (missing, not a regular file,
/// too big, not UTF-8, not JSON) is `None`, with a debug log naming the file only.
pub fn read_json(path: &Path, max: u64) -> Option<Value> {
    let why = |what: &str| {
        tracing::debug!(path = %path.display(), "container metadata not read: {what}");
    };
    // O_NONBLOCK: a FIFO put where a file is expected must not stall the daemon.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            why(&e.to_string());
            return None;
        }
    };
    match file.metadata() {
        Ok(m) if !m.is_file() => {
            why("not a regular file");
            return None;
        }
        Ok(m) if m.len() > max => {
            why(&format!(
                "{} bytes, more than max_file_bytes ({max})",
                m.len()
            ));
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            why(&e.to_string());
            return None;
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.take(max + 1).read_to_end(&mut bytes) {
        why(&e.to_string());
        return None;
    }
    if bytes.len() as u64 > max {
        why("grew past max_file_bytes while read");
        return None;
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        why("not UTF-8");
        return None;
    };
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            // The position only: serde's message never quotes the input.
            why(&format!("not JSON ({e})"));
            None
        }
    }
}
