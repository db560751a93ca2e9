//! Container awareness: the cgroup, container, pod and image an alert's process runs in.
//!
//! The cgroup path (from `/proc/<pid>/cgroup`, or found by the kernel's cgroup id when the
//! process is gone) names the container id and pod UID; the runtimes' and the kubelet's
//! files on the node name the image, the pod and its namespace ([`runtime`]). No network,
//! no runtime socket: a lookup costs a few small file reads, and its answer is cached per
//! cgroup and per container, so frequent alerts read nothing again.

mod cgroup;
mod runtime;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    hash::Hash,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use self::{cgroup::CgroupRef, runtime::ContainerMeta};
use crate::{alert::ContainerRef, config::ContainerSettings};

/// A container whose files said nothing is asked again after this long (its bundle may
/// not have been written yet, or a file was briefly unreadable).
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// A bounded map that forgets its least recently used entry when full.
struct Lru<K, V> {
    capacity: usize,
    clock: u64,
    entries: HashMap<K, (V, u64, Instant)>,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The value and when it was stored; marks it used.
    fn get(&mut self, key: &K) -> Option<(&V, Instant)> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used, stored)| {
            *used = clock;
            (&*v, *stored)
        })
    }

    fn insert(&mut self, key: K, value: V) {
        self.clock += 1;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // O(capacity) at most once per insertion into a full cache: lookups are per
            // alert, not per event.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries
            .insert(key, (value, self.clock, Instant::now()));
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.retain(|k, (v, _, _)| keep(k, v));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Finds and caches what the node knows about the container of a process.
pub struct Resolver {
    settings: ContainerSettings,
    /// `/proc`, or a fixture tree in tests.
    proc_root: PathBuf,
    /// Where the cgroup v2 hierarchy is mounted, when it is.
    cgroup_root: Option<PathBuf>,
    /// By kernel cgroup id (never reused while the system runs).
    /// `None`: not found (the walk is not repeated for each alert about it).
    by_cgroup: Lru<u64, Option<Arc<CgroupRef>>>,
    /// By container id, or `pod:<uid>` for a pod-level cgroup; `None`: nothing known.
    by_container: Lru<String, Option<Arc<ContainerMeta>>>,
}

impl Resolver {
    /// A resolver for this host: `/proc` and the mounted cgroup v2 hierarchy.
    pub fn new(settings: ContainerSettings) -> Self {
        let cgroup_root = crate::check::mounts::cgroup2_mounted();
        if settings.metadata {
            tracing::info!(
                containerd = describe(&settings.containerd_tasks),
                crio = describe(&settings.crio_containers),
                docker = describe(&settings.docker_containers),
                pod_logs = describe(&settings.pod_logs),
                "container metadata: the node's runtime directories"
            );
        }
        Self::with_roots(settings, PathBuf::from("/proc"), cgroup_root)
    }

    pub fn with_roots(
        settings: ContainerSettings,
        proc_root: PathBuf,
        cgroup_root: Option<PathBuf>,
    ) -> Self {
        let capacity = settings.cache_entries as usize;
        Self {
            settings,
            proc_root,
            cgroup_root,
            by_cgroup: Lru::new(capacity),
            by_container: Lru::new(capacity),
        }
    }

    pub fn settings(&self) -> &ContainerSettings {
        &self.settings
    }

    /// Completes `c` (whose `cgroup_id` the kernel gave, 0 when unknown) for process
    /// `pid`: cgroup path, container id, pod UID, and, from the node's files, image, pod
    /// name and namespace. What cannot be found stays `None`.
    pub fn fill(&mut self, c: &mut ContainerRef, pid: u32) {
        let Some(cg) = self.cgroup(pid, c.cgroup_id) else {
            return;
        };
        c.cgroup = Some(cg.path.clone());
        c.container_id.clone_from(&cg.container_id);
        c.pod_uid.clone_from(&cg.pod_uid);
        if let Some(meta) = self.meta(cg.container_id.as_deref(), cg.pod_uid.as_deref()) {
            c.image.clone_from(&meta.image);
            c.pod_name.clone_from(&meta.pod_name);
            c.pod_namespace.clone_from(&meta.pod_namespace);
            if c.pod_uid.is_none() {
                c.pod_uid.clone_from(&meta.pod_uid);
            }
        }
    }

    /// The container process `pid` (in kernel cgroup `cgroup_id`) runs in, filled as
    /// [`Self::fill`] does; `None` when it runs in none.
    pub fn container_of(&mut self, cgroup_id: u64, pid: u32) -> Option<ContainerRef> {
        let mut c = ContainerRef {
            cgroup_id,
            ..ContainerRef::default()
        };
        self.fill(&mut c, pid);
        c.container_id.is_some().then_some(c)
    }

    /// The cgroup of `pid`, whose kernel cgroup id is `id` (0: unknown).
    fn cgroup(&mut self, pid: u32, id: u64) -> Option<Arc<CgroupRef>> {
        if id != 0
            && let Some((cg, stored)) = self.by_cgroup.get(&id)
            && (cg.is_some() || stored.elapsed() < NEGATIVE_TTL)
        {
            return cg.clone();
        }
        let from_proc = (pid != 0)
            .then(|| cgroup::of_process(&self.proc_root, pid))
            .flatten();
        if id == 0 {
            // Nothing to check it against, and nothing to cache it under.
            return from_proc.map(|p| Arc::new(CgroupRef::from_path(p, false)));
        }
        let root = self.cgroup_root.clone();
        let checked = match (&from_proc, &root) {
            (Some(p), Some(r)) => cgroup::has_id(r, p, id),
            _ => None,
        };
        let found = match checked {
            Some(true) => from_proc.map(|p| CgroupRef::from_path(p, true)),
            // The process moved, or its pid is another's now: find the cgroup by id.
            Some(false) => root
                .as_deref()
                .and_then(|r| cgroup::find_by_id(r, id))
                .map(|p| CgroupRef::from_path(p, true)),
            // Not checkable here (the process is gone, or its path is relative to another
            // cgroup namespace): the walk decides when it finds the id, else the path
            // the process showed stands.
            None => root
                .as_deref()
                .and_then(|r| cgroup::find_by_id(r, id))
                .map(|p| CgroupRef::from_path(p, true))
                .or_else(|| from_proc.map(|p| CgroupRef::from_path(p, false))),
        };
        let found = found.map(Arc::new);
        self.by_cgroup.insert(id, found.clone());
        found
    }

    /// What the node's files say about the container (or, without one, the pod).
    fn meta(
        &mut self,
        container: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<Arc<ContainerMeta>> {
        if !self.settings.metadata {
            return None;
        }
        let key = match (container, pod_uid) {
            (Some(id), _) => id.to_owned(),
            (None, Some(uid)) => format!("pod:{uid}"),
            (None, None) => return None,
        };
        if let Some((cached, stored)) = self.by_container.get(&key)
            && (cached.is_some() || stored.elapsed() < NEGATIVE_TTL)
        {
            return cached.clone();
        }
        let found = match container {
            Some(id) => runtime::lookup(&self.settings, id, pod_uid),
            None => pod_uid.and_then(|uid| runtime::lookup_pod(&self.settings, uid)),
        }
        .map(Arc::new);
        if found.is_none() {
            tracing::debug!(key, "no container metadata found on the node");
        }
        self.by_container.insert(key, found.clone());
        found
    }

    /// Forgets cgroups that are gone (their directory no longer exists) and the containers
    /// no remaining cgroup names.
    pub fn prune(&mut self) {
        if let Some(root) = &self.cgroup_root {
            self.by_cgroup.retain(|_, cg| {
                let Some(cg) = cg else {
                    return false;
                };
                !cg.verified || cgroup::dir_of(root, &cg.path).is_none_or(|d| d.is_dir())
            });
        }
        let mut named = std::collections::HashSet::new();
        for cg in self
            .by_cgroup
            .entries
            .values()
            .filter_map(|(cg, _, _)| cg.as_ref())
        {
            if let Some(id) = &cg.container_id {
                named.insert(id.clone());
            } else if let Some(uid) = &cg.pod_uid {
                named.insert(format!("pod:{uid}"));
            }
        }
        self.by_container.retain(|k, _| named.contains(k));
    }

    /// Entries cached (cgroups, containers).
    #[cfg(test)]
    pub fn cached(&self) -> (usize, usize) {
        (self.by_cgroup.len(), self.by_container.len())
    }
}

/// Whether a runtime's directory is there (in a pod: mounted), for the start-up log.
fn describe(path: &Path) -> &'static str {
    if path.is_dir() {
        "present"
    } else {
        "absent on this node"
    }
}
