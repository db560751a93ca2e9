//! Startup hooks by file identity: the start-up inventory plus every hook read at run
//! time (a new `.pth`, one in a site dir the inventory did not know, one inside a
//! container, read through `/proc/<pid>/root`). Re-read when the file changed; kept
//! current by path when the site-dir watcher (`crate::watch`) reports a change.
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
    /// `hook.path` names this file in pthwatch's own mount namespace. A container's hook
    /// may have the same path as a host one; only host entries are matched by path.
    host: bool,
}

/// A hook read (or found unchanged) at a path, with what the kernel must forget.
pub struct Refreshed {
    pub hook: Arc<Hook>,
    /// What the book held for this path before: `None` for a new hook, the same `Arc`
    /// as `hook` when nothing changed.
    pub previous: Option<Arc<Hook>>,
    /// Kernel keys that no longer name a hook at this path: the file a rename replaced,
    /// bytecode that is gone.
    pub stale: Vec<FileKey>,
}

/// The kernel keys of a hook: its file, and the cached bytecode Python may run instead.
pub fn kernel_keys(hook: &Hook) -> Vec<FileKey> {
    std::iter::once(file_key_of(hook.dev, hook.ino))
        .chain(
            hook.bytecode
                .iter()
                .map(|(_, dev, ino)| file_key_of(*dev, *ino)),
        )
        .collect()
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
    /// Adds a hook read here (not in a container), under its own identity and that of
    /// each cached bytecode file CPython would run in its place.
    pub fn insert(&mut self, hook: Hook) -> Arc<Hook> {
        let hook = Arc::new(hook);
        self.index(&hook, &hook.path, file_key_of(hook.dev, hook.ino), true);
        hook
    }

    fn index(&mut self, hook: &Arc<Hook>, path: &Path, key: FileKey, host: bool) {
        let stamp_of = |p: &Path| std::fs::metadata(p).map(|m| stamp(&m)).unwrap_or_default();
        self.by_key.insert(
            key,
            Entry {
                hook: Arc::clone(hook),
                stamp: stamp_of(path),
                host,
            },
        );
        let base = path.parent().unwrap_or(Path::new("/"));
        for (pyc, dev, ino) in &hook.bytecode {
            // `pyc` is named as the hook is; here it is reached beside `path`.
            let here = base
                .join("__pycache__")
                .join(pyc.file_name().unwrap_or_default());
            self.by_key.insert(
                file_key_of(*dev, *ino),
                Entry {
                    hook: Arc::clone(hook),
                    stamp: stamp_of(&here),
                    host,
                },
            );
        }
    }

    /// For `.../__pycache__/<module>.<tag>.pyc`, the source hook whose validated bytecode
    /// it is; `None` when there is no such source or the pyc does not track it.
    fn source_of_bytecode(
        &mut self,
        key: FileKey,
        path: &Path,
        root: Option<&Path>,
    ) -> Option<Arc<Hook>> {
        let name = path.file_name()?.to_str()?;
        let cache = path.parent()?;
        if !name.ends_with(".pyc") || cache.file_name()? != "__pycache__" {
            return None;
        }
        let module = name.split('.').next()?;
        let source = cache.parent()?.join(format!("{module}.py"));
        let hook = inventory::read_hook(&source, root).ok()?;
        let tracks = hook
            .bytecode
            .iter()
            .any(|(_, dev, ino)| file_key_of(*dev, *ino) == key);
        if !tracks {
            return None;
        }
        let hook = Arc::new(hook);
        let own = file_key_of(hook.dev, hook.ino);
        self.index(&hook, &source, own, root.is_none());
        Some(hook)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only tests list the whole book today")
    )]
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
            if let Some(e) = self.by_key.get(&key)
                && e.stamp == st
            {
                return Some(Arc::clone(&e.hook));
            }
            let root = (host_path != path).then(|| PathBuf::from(format!("/proc/{tgid}/root")));
            // Through a process's root the path may still name the same file here.
            let host = root.is_none()
                || std::fs::metadata(path).is_ok_and(|m| file_key_of(m.dev(), m.ino()) == key);
            if let Some(hook) = self.source_of_bytecode(key, path, root.as_deref()) {
                return Some(hook);
            }
            match inventory::read_hook(path, root.as_deref()) {
                Ok(hook) => {
                    let hook = Arc::new(hook);
                    self.by_key.insert(
                        key,
                        Entry {
                            hook: Arc::clone(&hook),
                            stamp: st,
                            host,
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

    /// Reads the hook at `path` (a path here, not in a container) when it is new or
    /// changed, and drops what the book held for that path under another identity.
    /// `None` when `path` is not a hook by name and place, is gone, or cannot be read.
    pub fn refresh(&mut self, path: &Path) -> Option<Refreshed> {
        inventory::hook_kind_for(path)?;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                // Renamed or deleted since the change was seen: that event follows.
                tracing::debug!(path = %path.display(), error = %e, "startup hook gone before it could be read");
                return None;
            }
        };
        let mut key = file_key_of(meta.dev(), meta.ino());
        let mut st = stamp(&meta);
        let previous = self
            .by_key
            .get(&key)
            .filter(|e| e.host && e.hook.path == path)
            .or_else(|| self.by_key.values().find(|e| e.host && e.hook.path == path))
            .map(|e| Arc::clone(&e.hook));
        let unchanged = self.by_key.get(&key).filter(|e| e.stamp == st);
        let hook = match unchanged {
            // Same content; a hard link or a rename may have given it a new path.
            Some(e) if e.hook.path == path => Arc::clone(&e.hook),
            Some(e) => Arc::new(Hook {
                path: path.to_owned(),
                ..Hook::clone(&e.hook)
            }),
            None => match inventory::read_hook(path, None) {
                Ok(hook) => {
                    let read_key = file_key_of(hook.dev, hook.ino);
                    if read_key != key {
                        // Replaced between the stat and the read: re-read next time.
                        key = read_key;
                        st = (0, 0);
                    }
                    Arc::new(hook)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not read a startup hook");
                    return None;
                }
            },
        };
        let mut stale: Vec<FileKey> = Vec::new();
        let replaced: Vec<FileKey> = self
            .by_key
            .iter()
            .filter(|(k, e)| **k != key && e.host && e.hook.path == path)
            .map(|(k, _)| *k)
            .collect();
        for k in replaced {
            if let Some(e) = self.by_key.remove(&k) {
                stale.extend(kernel_keys(&e.hook));
            }
        }
        let keys = kernel_keys(&hook);
        if let Some(old) = self.by_key.get(&key) {
            stale.extend(kernel_keys(&old.hook));
        }
        stale.retain(|k| !keys.contains(k));
        stale.sort_by_key(|k| (k.dev, k.ino));
        stale.dedup();
        self.by_key.insert(
            key,
            Entry {
                hook: Arc::clone(&hook),
                stamp: st,
                host: true,
            },
        );
        Some(Refreshed {
            hook,
            previous,
            stale,
        })
    }

    /// Drops the hooks the book holds at `path` (deleted or renamed away); returns them
    /// so their kernel keys can be cleared.
    pub fn forget_path(&mut self, path: &Path) -> Vec<Arc<Hook>> {
        self.forget_where(|hook| hook.path == path)
    }

    /// Drops the hooks directly in `dir` (the directory is gone).
    pub fn forget_dir(&mut self, dir: &Path) -> Vec<Arc<Hook>> {
        self.forget_where(|hook| hook.path.parent() == Some(dir))
    }

    /// Paths of the hooks the book holds directly in `dir`.
    pub fn paths_in(&self, dir: &Path) -> Vec<PathBuf> {
        self.by_key
            .values()
            .filter(|e| e.host && e.hook.path.parent() == Some(dir))
            .map(|e| e.hook.path.clone())
            .collect()
    }

    fn forget_where(&mut self, matches: impl Fn(&Hook) -> bool) -> Vec<Arc<Hook>> {
        let keys: Vec<FileKey> = self
            .by_key
            .iter()
            .filter(|(_, e)| e.host && matches(&e.hook))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| self.by_key.remove(k))
            .map(|e| e.hook)
            .collect()
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
