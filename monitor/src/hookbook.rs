//! Startup hooks by file identity: the start-up inventory plus every hook read at run
//! time (a new `.pth`, one in a site dir the inventory did not know, one inside a
//! container, read through `/proc/<pid>/root`). Re-read when the file changed.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use monitor_common::FileKey;

use crate::{
    inventory::{self, Hook},
    sensors::file_key_of,
};

struct Entry {
    hook: Arc<Hook>,
    /// (mtime ns, size) when read: a rewrite in place keeps the inode.
    stamp: (i64, u64),
}

#[derive(Default)]
pub struct HookBook {
    by_key: HashMap<FileKey, Entry>,
}

fn stamp(meta: &std::fs::Metadata) -> (i64, u64) {
    (
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.size(),
    )
}

impl HookBook {
    pub fn insert(&mut self, hook: Hook) {
        let key = file_key_of(hook.dev, hook.ino);
        let stamp = std::fs::metadata(&hook.path)
            .map(|m| stamp(&m))
            .unwrap_or_default();
        self.by_key.insert(
            key,
            Entry {
                hook: Arc::new(hook),
                stamp,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FileKey, &Arc<Hook>)> {
        self.by_key.iter().map(|(k, e)| (k, &e.hook))
    }

    /// The hook behind `key`, opened by process `tgid` at `path` (a path in that process's
    /// mount namespace). Read and classified when new or changed.
    pub fn get_or_read(&mut self, key: FileKey, path: &Path, tgid: u32) -> Option<Arc<Hook>> {
        let candidates = host_paths(path, tgid);
        for host_path in &candidates {
            let Ok(meta) = std::fs::metadata(host_path) else {
                continue;
            };
            if file_key_of(meta.dev(), meta.ino()) != key {
                continue;
            }
            let st = stamp(&meta);
            if let Some(e) = self.by_key.get(&key) {
                if e.stamp == st {
                    return Some(Arc::clone(&e.hook));
                }
            }
            let root = (host_path != path).then(|| PathBuf::from(format!("/proc/{tgid}/root")));
            match inventory::read_hook(path, root.as_deref()) {
                Ok(hook) => {
                    let hook = Arc::new(hook);
                    self.by_key.insert(
                        key,
                        Entry {
                            hook: Arc::clone(&hook),
                            stamp: st,
                        },
                    );
                    return Some(hook);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not read a startup hook");
                    return None;
                }
            }
        }
        // Gone or unreadable now: what was read before still describes it.
        let known = self.by_key.get(&key).map(|e| Arc::clone(&e.hook));
        if known.is_none() {
            tracing::warn!(path = %path.display(), tgid, "startup hook vanished before it could be read");
        }
        known
    }
}

/// Where a path seen by process `tgid` can be read from here: through its root first
/// (containers), then as is.
fn host_paths(path: &Path, tgid: u32) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    vec![
        PathBuf::from(format!("/proc/{tgid}/root")).join(rel),
        path.to_owned(),
    ]
}
