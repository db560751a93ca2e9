//! Keeps the hook inventory current at run time. An inotify watch on every site dir
//! reports a hook that is created, rewritten or renamed into place (`pip install` writes a
//! temporary file and renames it), so it is read, classified and given to the kernel
//! before the next interpreter runs it, not only when one opens it.
//!
//! inotify is not recursive: only files directly in a watched directory are seen, which
//! is where `site` looks for `.pth`/`.start` files. A `lib/python3.X` directory can be
//! watched too, to learn of a `site-packages` created under it.
use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    fs, io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use monitor_common::FileKey;

use crate::{
    hookbook::{HookBook, kernel_keys},
    inventory::{Hook, hook_kind_for},
    sensors::Sensors,
};

/// Events on the files of a site dir, and on the directory itself.
const SITE_MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    // A hook rewritten in place keeps its inode, and so its old class in the kernel,
    // until the writer closes it; every write is reported so the window is one tick.
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE_SELF
    // Renamed away: the path no longer names what the watch follows.
    | libc::IN_MOVE_SELF;
/// Events on a `lib/python3.X` directory: a subdirectory appearing.
const PARENT_MASK: u32 =
    libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
/// `struct inotify_event` without its name.
const EVENT_HEADER: usize = size_of::<libc::inotify_event>();
const _: () = assert!(EVENT_HEADER == 16);
/// Room for many events per read; one needs at most `EVENT_HEADER + NAME_MAX + 1`.
const READ_BUF: usize = 16 * 1024;

/// What changed in the watched directories, de-duplicated per drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteChange {
    /// A hook was created, written or renamed into place.
    Written(PathBuf),
    /// A hook was deleted or renamed away.
    Removed(PathBuf),
    /// A watched site dir was deleted, renamed or unmounted; its watch is gone.
    DirGone(PathBuf),
    /// A `site-packages`/`dist-packages` dir appeared in a watched `lib/python3.X`.
    NewSiteDir(PathBuf),
    /// The kernel dropped events (queue full): every watched dir must be rescanned.
    Overflow,
}

/// Whether a file named `name`, directly in a site dir, is a startup hook: `*.pth`,
/// `*.start`, and the `sitecustomize`/`usercustomize` module files. The rules are
/// `inventory::hook_kind_for`'s, asked about a file in a `site-packages` dir.
///
/// A hidden `.pth` (even one named just `.pth`) counts: CPython skips them since
/// gh-113659 (January 2024), but interpreters built before that still run them.
pub fn is_hook_name(name: &OsStr) -> bool {
    !name.as_bytes().contains(&b'/')
        && hook_kind_for(&Path::new("site-packages").join(name)).is_some()
}

/// `site-packages` or `dist-packages`.
fn is_site_dir_name(name: &[u8]) -> bool {
    name == b"site-packages" || name == b"dist-packages"
}

/// One watched directory.
struct Watched {
    path: PathBuf,
    /// (dev, inode) when the watch was added, to notice a directory replaced at its path.
    id: (u64, u64),
    /// Its hooks are reported.
    site: bool,
    /// New site dirs below it are reported.
    parent: bool,
}

impl Watched {
    fn mask(&self) -> u32 {
        let mut mask = libc::IN_ONLYDIR;
        if self.site {
            mask |= SITE_MASK;
        }
        if self.parent {
            mask |= PARENT_MASK;
        }
        mask
    }
}

/// An inotify instance watching site dirs (non-blocking, close-on-exec).
pub struct SiteWatcher {
    fd: OwnedFd,
    by_wd: HashMap<i32, Watched>,
    by_path: HashMap<PathBuf, i32>,
    buf: Vec<u8>,
}

impl SiteWatcher {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EMFILE) {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create an inotify instance: {e}; the per-user limit \
                         fs.inotify.max_user_instances is reached, raise it (sysctl -w \
                         fs.inotify.max_user_instances=1024)"
                    ),
                ));
            }
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create an inotify instance: {e}"),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            by_wd: HashMap::new(),
            by_path: HashMap::new(),
            buf: vec![0; READ_BUF],
        })
    }

    /// Watches a site dir for hooks. Watching the same dir again does nothing.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        self.add(dir, true, false)
    }

    /// Watches a `lib/python3.X` dir for a `site-packages`/`dist-packages` created in it
    /// (reported as `SiteChange::NewSiteDir`; the caller then watches and scans it).
    pub fn watch_for_site_dirs(&mut self, dir: &Path) -> io::Result<()> {
        self.add(dir, false, true)
    }

    /// The watched site dirs.
    pub fn site_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .by_wd
            .values()
            .filter(|w| w.site)
            .map(|w| w.path.clone())
            .collect();
        dirs.sort();
        dirs
    }

    fn add(&mut self, dir: &Path, site: bool, parent: bool) -> io::Result<()> {
        let known = self.by_path.get(dir).and_then(|wd| self.by_wd.get(wd));
        if known.is_some_and(|w| (w.site || !site) && (w.parent || !parent)) {
            return Ok(());
        }
        let meta = fs::metadata(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot watch {}: {e}", dir.display()))
        })?;
        let watched = Watched {
            path: dir.to_owned(),
            id: (meta.dev(), meta.ino()),
            site,
            parent,
        };
        let c_path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot watch {}: the path contains a NUL byte",
                    dir.display()
                ),
            )
        })?;
        // IN_MASK_ADD: a directory watched in both roles, or under two paths (a
        // symlink), is one watch whose mask is the union.
        let mask = watched.mask() | libc::IN_MASK_ADD;
        // SAFETY: a valid NUL-terminated path; the result is checked.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c_path.as_ptr(), mask) };
        if wd < 0 {
            return Err(add_watch_error(dir, io::Error::last_os_error()));
        }
        if let Some(existing) = self.by_wd.get_mut(&wd) {
            // Events keep naming the directory through the path it was first watched as.
            existing.site |= site;
            existing.parent |= parent;
        } else {
            if let Some(old) = self.by_path.get(dir).copied() {
                // The path names another directory now; the old watch follows the old one.
                self.forget_wd(old, true);
            }
            self.by_wd.insert(wd, watched);
        }
        self.by_path.insert(dir.to_owned(), wd);
        Ok(())
    }

    /// Drops the bookkeeping of a watch, and the kernel's watch when `remove`.
    fn forget_wd(&mut self, wd: i32, remove: bool) -> Option<Watched> {
        let watched = self.by_wd.remove(&wd)?;
        self.by_path.retain(|_, w| *w != wd);
        if remove {
            // SAFETY: no pointers. EINVAL if the kernel already dropped it: nothing to do.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
        Some(watched)
    }

    /// Reads every pending event without blocking; the changes, de-duplicated.
    pub fn drain(&mut self) -> Vec<SiteChange> {
        let mut pending = Pending::default();
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; the result is checked.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        // Events may be lost: rescan rather than trust what was read.
                        tracing::warn!(error = %e, "reading inotify events failed");
                        pending.push(SiteChange::Overflow);
                        break;
                    }
                }
            }
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            self.take(&buf[..n], &mut pending);
        }
        self.buf = buf;
        pending.finish()
    }

    /// Interprets one read's worth of events.
    fn take(&mut self, buf: &[u8], pending: &mut Pending) {
        for event in parse_events(buf) {
            if let Some(change) = self.interpret(&event) {
                pending.push(change);
            }
        }
    }

    fn interpret(&mut self, event: &RawEvent<'_>) -> Option<SiteChange> {
        let mask = event.mask;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            return Some(SiteChange::Overflow);
        }
        // Events still queued for a watch already dropped are stale.
        let watched = self.by_wd.get(&event.wd)?;
        let self_gone =
            libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT | libc::IN_IGNORED;
        if mask & self_gone != 0 {
            // Deleted or unmounted: the kernel drops the watch (IN_IGNORED follows).
            // Renamed: it would follow the directory to its new name, so drop it here.
            let remove = mask & libc::IN_MOVE_SELF != 0;
            let watched = self.forget_wd(event.wd, remove)?;
            return watched.site.then_some(SiteChange::DirGone(watched.path));
        }
        if event.name.is_empty() {
            return None;
        }
        let path = watched.path.join(OsStr::from_bytes(event.name));
        if mask & libc::IN_ISDIR != 0 {
            let appeared = mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
            return (watched.parent && appeared && is_site_dir_name(event.name))
                .then_some(SiteChange::NewSiteDir(path));
        }
        if !watched.site || !is_hook_name(OsStr::from_bytes(event.name)) {
            return None;
        }
        let written = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_MODIFY;
        if mask & written != 0 {
            Some(SiteChange::Written(path))
        } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
            Some(SiteChange::Removed(path))
        } else {
            None
        }
    }

    /// Changes the filesystem shows but events may not have (after an overflow): a
    /// watched site dir deleted or replaced, a site dir created below a watched parent.
    fn recheck(&mut self) -> Vec<SiteChange> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (wd, w) in &self.by_wd {
            let now = fs::metadata(&w.path).ok().map(|m| (m.dev(), m.ino()));
            if now != Some(w.id) {
                gone.push(*wd);
            }
        }
        for wd in gone {
            if let Some(w) = self.forget_wd(wd, true)
                && w.site
            {
                out.push(SiteChange::DirGone(w.path));
            }
        }
        let parents: Vec<PathBuf> = self
            .by_wd
            .values()
            .filter(|w| w.parent)
            .map(|w| w.path.clone())
            .collect();
        for parent in parents {
            for name in ["site-packages", "dist-packages"] {
                let dir = parent.join(name);
                let watched = self
                    .by_path
                    .get(&dir)
                    .and_then(|wd| self.by_wd.get(wd))
                    .is_some_and(|w| w.site);
                if !watched && dir.is_dir() {
                    out.push(SiteChange::NewSiteDir(dir));
                }
            }
        }
        out
    }
}

impl AsRawFd for SiteWatcher {
    /// For `tokio::io::unix::AsyncFd`: readable when events are pending.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SiteWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An `inotify_add_watch` failure, saying what to do about the limits.
fn add_watch_error(dir: &Path, e: io::Error) -> io::Error {
    let what = match e.raw_os_error() {
        Some(libc::ENOSPC) => format!(
            "cannot watch {}: the inotify watch limit is reached; raise \
             fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=524288). \
             New or rewritten hooks there are read only when an interpreter opens them",
            dir.display()
        ),
        Some(libc::ENOTDIR) => format!("cannot watch {}: not a directory", dir.display()),
        _ => format!("cannot watch {}: {e}", dir.display()),
    };
    io::Error::new(e.kind(), what)
}

/// One `struct inotify_event`, its name without the NUL padding.
#[derive(Debug, PartialEq, Eq)]
struct RawEvent<'a> {
    wd: i32,
    mask: u32,
    name: &'a [u8],
}

/// Splits a `read(2)` from an inotify fd into events. The kernel only returns whole
/// events; a short tail would be a kernel bug and is dropped.
fn parse_events(mut buf: &[u8]) -> Vec<RawEvent<'_>> {
    let mut out = Vec::new();
    while buf.len() >= EVENT_HEADER {
        let field = |at: usize| [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        // field(8) is the rename cookie: renames are handled as a removal and a write.
        let Ok(len) = usize::try_from(u32::from_ne_bytes(field(12))) else {
            break;
        };
        let Some(name) = buf.get(EVENT_HEADER..EVENT_HEADER + len) else {
            break;
        };
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(RawEvent {
            wd,
            mask,
            name: &name[..end],
        });
        buf = &buf[EVENT_HEADER + len..];
    }
    out
}

/// Changes of one drain: the last state of each path wins, in the order of last events.
#[derive(Default)]
struct Pending {
    changes: Vec<SiteChange>,
    overflow: bool,
}

impl Pending {
    fn push(&mut self, change: SiteChange) {
        match &change {
            SiteChange::Overflow => {
                self.overflow = true;
                return;
            }
            SiteChange::Written(p) | SiteChange::Removed(p) => self.changes.retain(
                |c| !matches!(c, SiteChange::Written(q) | SiteChange::Removed(q) if q == p),
            ),
            // The directory's hooks are forgotten as a whole: per-file changes are moot.
            SiteChange::DirGone(d) => self.changes.retain(|c| match c {
                SiteChange::Written(p) | SiteChange::Removed(p) => p.parent() != Some(d),
                SiteChange::DirGone(e) => e != d,
                _ => true,
            }),
            SiteChange::NewSiteDir(d) => self
                .changes
                .retain(|c| !matches!(c, SiteChange::NewSiteDir(e) if e == d)),
        }
        self.changes.push(change);
    }

    /// After an overflow, a rescan replaces the per-file changes; the watches already
    /// dropped must still be reported, the rescan cannot see them.
    fn finish(self) -> Vec<SiteChange> {
        if !self.overflow {
            return self.changes;
        }
        let mut out: Vec<SiteChange> = self
            .changes
            .into_iter()
            .filter(|c| matches!(c, SiteChange::DirGone(_)))
            .collect();
        out.push(SiteChange::Overflow);
        out
    }
}

/// One update of the kernel's HOOKS map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookUpdate {
    /// This file is a hook: what the kernel keeps for it (class and flags).
    Set {
        key: FileKey,
        info: monitor_common::HookInfo,
    },
    /// This file no longer names a hook (deleted, replaced, its directory gone).
    Clear(FileKey),
}

/// Drains the watcher and brings the book and the kernel up to date. Called once a tick.
pub fn apply(watcher: &mut SiteWatcher, book: &mut HookBook, sensors: &mut Sensors) {
    let changes = watcher.drain();
    if !changes.is_empty() {
        push(&plan(watcher, changes, book), sensors);
    }
}

/// After the watches are set up: what changed between the inventory scan and the
/// watches (nothing was reported then), found by rescanning every watched dir.
pub fn catch_up(watcher: &mut SiteWatcher, book: &mut HookBook, sensors: &mut Sensors) {
    let changes = watcher.drain();
    let mut updates = plan(watcher, changes, book);
    rescan(watcher, book, &mut updates);
    push(&compact(updates), sensors);
}

/// The book updates for `changes`, and the kernel updates they need (the pure part of
/// `apply`). Watches new site dirs, and re-watches a site dir replaced at its path.
pub fn plan(
    watcher: &mut SiteWatcher,
    changes: Vec<SiteChange>,
    book: &mut HookBook,
) -> Vec<HookUpdate> {
    let mut out = Vec::new();
    for change in changes {
        match change {
            SiteChange::Written(path) => written(book, &path, &mut out),
            SiteChange::Removed(path) => removed(&book.forget_path(&path), &mut out),
            SiteChange::DirGone(dir) => dir_gone(watcher, book, &dir, &mut out),
            SiteChange::NewSiteDir(dir) => new_site_dir(watcher, book, &dir, &mut out),
            SiteChange::Overflow => {
                tracing::warn!(
                    "inotify dropped events (queue full): rescanning every site dir; raise \
                     fs.inotify.max_queued_events if this repeats"
                );
                rescan(watcher, book, &mut out);
            }
        }
    }
    compact(out)
}

/// The last update of each key, in the order of last updates.
fn compact(updates: Vec<HookUpdate>) -> Vec<HookUpdate> {
    let key = |u: &HookUpdate| match *u {
        HookUpdate::Set { key, .. } | HookUpdate::Clear(key) => key,
    };
    let mut out: Vec<HookUpdate> = Vec::with_capacity(updates.len());
    for u in updates {
        out.retain(|o| key(o) != key(&u));
        out.push(u);
    }
    out
}

/// Writes the updates into the kernel's HOOKS map.
fn push(updates: &[HookUpdate], sensors: &mut Sensors) {
    for update in updates {
        let (key, result) = match *update {
            HookUpdate::Set { key, info } => (key, sensors.set_hook(key, info)),
            HookUpdate::Clear(key) => (key, sensors.remove_hook(key)),
        };
        if let Err(e) = result {
            tracing::warn!(dev = key.dev, ino = key.ino, error = %e, "could not update a hook in the kernel");
        }
    }
}

fn written(book: &mut HookBook, path: &Path, out: &mut Vec<HookUpdate>) {
    let Some(r) = book.refresh(path) else {
        return;
    };
    out.extend(r.stale.iter().copied().map(HookUpdate::Clear));
    let info = r.hook.kernel_info();
    out.extend(
        kernel_keys(&r.hook)
            .into_iter()
            .map(|key| HookUpdate::Set { key, info }),
    );
    match &r.previous {
        Some(p) if Arc::ptr_eq(p, &r.hook) => {
            tracing::debug!(path = %path.display(), "startup hook unchanged");
        }
        previous => log_written(&r.hook, previous.as_deref()),
    }
}

fn log_written(hook: &Hook, previous: Option<&Hook>) {
    let path = hook.path.display();
    let class = hook.class.name();
    let was = previous.map_or("new", |p| p.class.name());
    let distribution = hook.distribution.as_deref().unwrap_or("-");
    if hook.class.is_unknown_executable() {
        tracing::warn!(
            %path, class, was, kind = hook.kind.as_str(), sha256 = %hook.sha256, distribution,
            "startup hook written: it runs code that is not a known-benign form"
        );
    } else {
        tracing::info!(
            %path, class, was, kind = hook.kind.as_str(), sha256 = %hook.sha256, distribution,
            "startup hook written"
        );
    }
}

fn removed(hooks: &[Arc<Hook>], out: &mut Vec<HookUpdate>) {
    for hook in hooks {
        tracing::info!(path = %hook.path.display(), class = hook.class.name(), "startup hook removed");
        out.extend(kernel_keys(hook).into_iter().map(HookUpdate::Clear));
    }
}

fn dir_gone(watcher: &mut SiteWatcher, book: &mut HookBook, dir: &Path, out: &mut Vec<HookUpdate>) {
    tracing::info!(dir = %dir.display(), "site dir gone");
    removed(&book.forget_dir(dir), out);
    // Replaced at its path (a venv rebuilt in place): watch the new one.
    if dir.is_dir() {
        new_site_dir(watcher, book, dir, out);
    }
}

fn new_site_dir(
    watcher: &mut SiteWatcher,
    book: &mut HookBook,
    dir: &Path,
    out: &mut Vec<HookUpdate>,
) {
    tracing::info!(dir = %dir.display(), "watching a new site dir");
    if let Err(e) = watcher.watch(dir) {
        tracing::warn!(error = %e, "new site dir not watched");
    }
    // Hooks may have been written before the watch: read what is there now.
    scan_dir(book, dir, out);
}

/// Every watched dir compared with the book: after an overflow, or at start.
fn rescan(watcher: &mut SiteWatcher, book: &mut HookBook, out: &mut Vec<HookUpdate>) {
    for change in watcher.recheck() {
        match change {
            SiteChange::DirGone(dir) => dir_gone(watcher, book, &dir, out),
            SiteChange::NewSiteDir(dir) => new_site_dir(watcher, book, &dir, out),
            _ => {}
        }
    }
    for dir in watcher.site_dirs() {
        scan_dir(book, &dir, out);
    }
}

/// Reads the hooks in `dir` that are new or changed, forgets the ones no longer there.
fn scan_dir(book: &mut HookBook, dir: &Path, out: &mut Vec<HookUpdate>) {
    let present: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| is_hook_name(&e.file_name()))
            .map(|e| e.path())
            .collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list a site dir");
            return;
        }
    };
    for path in &present {
        written(book, path, out);
    }
    for path in book.paths_in(dir) {
        if !present.contains(&path) {
            removed(&book.forget_path(&path), out);
        }
    }
}

#[cfg(test)]
mod tests;
