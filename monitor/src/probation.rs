//! Sparing checked programs the probation.
//!
//! Every program a process execs is on probation: its first opens are inspected in case
//! it is a Python interpreter under another name. That costs every `/bin/true` of a
//! build host a process-table entry and a look at each of its first opens. The kernel
//! reports the first run of each executable it holds no verdict for
//! (`Event::NewExecutable`); this module checks that file once and, when it cannot run
//! Python and only root can change it, records it as not an interpreter. Its later runs
//! then cost the kernel one map lookup at exec.
//!
//! A verdict holds for one file identity (device, inode). It is dropped, and the next run
//! is on probation and reported again, when the file at its path changes (identity,
//! owner, mode, mtime or ctime; looked at every few seconds) and at once when a startup
//! hook's lineage opens it for writing.

use std::{
    collections::{HashMap, VecDeque},
    fs::{File, Metadata},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use monitor_common::{FileKey, exe_verdict};

use crate::{events::Exec, inventory::display_path, sensors::Sensors};

/// Exemptions held at most; the oldest goes first (its program is checked again at its
/// next run).
const MAX_EXEMPT: usize = 4096;
/// Executables left on probation that the kernel marked pending, at most: beyond that the
/// oldest entries are dropped from the kernel's map, which has room for 16384.
const MAX_PENDING: usize = 8192;
/// How often exempted files are looked at again.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Why a program stays on probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The kernel's path is cut short or relative (another mount namespace).
    NoPath,
    /// Nothing to open at the path (gone, or not visible from here).
    Gone,
    /// The path names another file now (moved, replaced, or another mount namespace).
    OtherFile,
    NotRegular,
    /// Not owned by root, or writable by group or others.
    NotRootOnly,
    /// Its directory is not root's alone: the file could be replaced by another.
    DirNotRootOnly,
    /// Linked with libpython, defines or imports Python C API symbols, or is static.
    MayRunPython,
    NotElf,
}

/// What must stay the same for an exemption to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    uid: u32,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            uid: m.uid(),
            mode: m.mode(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Checks the executable the kernel saw run as `key` at `path`: `Ok` with what must stay
/// the same when it cannot run Python and only root can change it.
pub fn check(path: &Path, key: FileKey) -> Result<Stamp, Refusal> {
    if !path.is_absolute() {
        return Err(Refusal::NoPath);
    }
    // The kernel's path is resolved: a symlink as its last component is another file.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|_| Refusal::Gone)?;
    let meta = file.metadata().map_err(|_| Refusal::Gone)?;
    if crate::sensors::file_key_of(meta.dev(), meta.ino()) != key {
        return Err(Refusal::OtherFile);
    }
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    if !root_only(&meta) {
        return Err(Refusal::NotRootOnly);
    }
    let dir = path.parent().ok_or(Refusal::NoPath)?;
    match std::fs::symlink_metadata(dir) {
        Ok(d) if d.is_dir() && root_only(&d) => {}
        _ => return Err(Refusal::DirNotRootOnly),
    }
    let stamp = Stamp::of(&meta);
    match crate::inventory::cannot_run_python(file) {
        Some(true) => Ok(stamp),
        Some(false) => Err(Refusal::MayRunPython),
        None => Err(Refusal::NotElf),
    }
}

/// Owned by root and writable by no one else.
fn root_only(m: &Metadata) -> bool {
    m.uid() == 0 && m.mode() & 0o022 == 0
}

/// The exemptions in force and the pending executables the kernel reported.
#[derive(Default)]
pub struct Probation {
    exempt: HashMap<FileKey, (PathBuf, Stamp)>,
    /// Exempted keys, oldest first (may hold keys revoked since).
    order: VecDeque<FileKey>,
    /// Keys the kernel marked pending and userspace left on probation, oldest first.
    pending: VecDeque<FileKey>,
    rechecked: Option<Instant>,
    pub exempted: u64,
    pub revoked: u64,
}

impl Probation {
    /// The kernel reported the first run of `e.exe`: exempt it, or leave it pending.
    pub fn on_new_executable(&mut self, sensors: &mut Sensors, e: &Exec, enabled: bool) {
        let key = FileKey::new(e.exe_dev, e.exe_ino);
        let verdict = if !enabled || e.exe_truncated {
            Err(Refusal::NoPath)
        } else {
            check(&e.exe, key)
        };
        match verdict {
            Ok(stamp) => self.exempt(sensors, key, e.exe.clone(), stamp),
            Err(why) => {
                if enabled {
                    tracing::debug!(exe = %display_path(&e.exe), ?why, "kept on probation");
                }
                self.keep_pending(sensors, key);
            }
        }
    }

    fn exempt(&mut self, sensors: &mut Sensors, key: FileKey, path: PathBuf, stamp: Stamp) {
        while self.exempt.len() >= MAX_EXEMPT {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.revoke(sensors, old);
        }
        if let Err(e) = sensors.set_not_interpreter(key) {
            tracing::warn!(exe = %display_path(&path), error = %e, "could not spare a checked program the probation");
            return;
        }
        tracing::debug!(exe = %display_path(&path), "checked: cannot run Python; its runs skip probation");
        self.exempt.insert(key, (path, stamp));
        self.order.push_back(key);
        self.exempted += 1;
    }

    fn keep_pending(&mut self, sensors: &mut Sensors, key: FileKey) {
        self.pending.push_back(key);
        while self.pending.len() > MAX_PENDING {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            // Only the kernel's own mark goes: a verdict given since (an interpreter
            // recognised by behaviour) stays.
            if sensors.exe_verdict(old) == Some(exe_verdict::PENDING) {
                let _ = sensors.forget_executable(old);
            }
        }
    }

    /// Drops the exemption of `key`, if it has one: its next run is on probation.
    pub fn revoke(&mut self, sensors: &mut Sensors, key: FileKey) {
        let Some((path, _)) = self.exempt.remove(&key) else {
            return;
        };
        match sensors.forget_executable(key) {
            Ok(()) => {
                tracing::debug!(exe = %display_path(&path), "exemption from probation dropped")
            }
            Err(e) => {
                tracing::warn!(exe = %display_path(&path), error = %e, "could not drop an exemption from probation")
            }
        }
        self.revoked += 1;
    }

    /// Every few seconds: drops the exemptions of files that changed, and all of them
    /// when exemptions were switched off.
    pub fn on_tick(&mut self, sensors: &mut Sensors, enabled: bool, now: Instant) {
        if self
            .rechecked
            .is_some_and(|t| now.duration_since(t) < RECHECK_EVERY)
        {
            return;
        }
        self.rechecked = Some(now);
        let changed: Vec<FileKey> = self
            .exempt
            .iter()
            .filter(|(_, (path, stamp))| {
                !enabled
                    || std::fs::symlink_metadata(path).map(|m| Stamp::of(&m)).ok() != Some(*stamp)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in changed {
            self.revoke(sensors, key);
        }
        if self.order.len() > 2 * MAX_EXEMPT {
            self.order.retain(|k| self.exempt.contains_key(k));
        }
    }

    pub fn exempt_count(&self) -> usize {
        self.exempt.len()
    }
}

#[cfg(test)]
mod tests;
