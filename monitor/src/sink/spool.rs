//! The webhook's bounded queue of undelivered alerts, on disk so that it survives a restart.
//!
//! Each alert is one file, `<seq>.alert`, the sequence number zero-padded to 20 digits so
//! that name order is delivery order. A file holds the alert id, a newline, and the exact
//! request body. It is written under a temporary name, synced and renamed, so a crash
//! leaves either the whole file or a `.tmp-*` leftover, which the next open removes. The
//! sequence continues after a restart from the highest name present.
//!
//! When the spool is full a new alert is refused: dropping the newest keeps the alerts
//! that do arrive in the order they happened, with one gap at the end.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

const SUFFIX: &str = ".alert";
const TMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}; create it writable by pthwatch or set `spool_dir`")]
    Dir { path: PathBuf, source: io::Error },
    #[error("spooled alert {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spooled alert {path} is damaged (no alert id line); it is removed")]
    Damaged { seq: u64, path: PathBuf },
}

/// One alert waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// The alert id, sent as `X-Pthwatch-Delivery`.
    pub id: String,
    pub body: Vec<u8>,
}

/// What [`Spool::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored(u64),
    /// Over `max_bytes`: the alert was not stored.
    Full,
}

pub struct Spool {
    backing: Backing,
    max_bytes: u64,
    /// Size of every stored entry, by sequence.
    sizes: BTreeMap<u64, u64>,
    bytes: u64,
    next_seq: u64,
}

enum Backing {
    Disk(PathBuf),
    /// `spool_max_bytes = 0`: nothing on disk; alerts wait in memory and die with the process.
    Memory(BTreeMap<u64, Vec<u8>>),
}

impl Spool {
    /// Opens (creating it, mode 0700) the spool in `dir`, removing torn temporary files.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let mut spool = Self {
            backing: Backing::Disk(dir.to_owned()),
            max_bytes,
            sizes: BTreeMap::new(),
            bytes: 0,
            next_seq: 1,
        };
        spool.rescan()?;
        Ok(spool)
    }

    pub fn in_memory(max_bytes: u64) -> Self {
        Self {
            backing: Backing::Memory(BTreeMap::new()),
            max_bytes,
            sizes: BTreeMap::new(),
            bytes: 0,
            next_seq: 1,
        }
    }

    /// Re-reads the directory (another process may have added alerts before this one held
    /// the lock).
    pub fn rescan(&mut self) -> Result<(), SpoolError> {
        let Backing::Disk(dir) = &self.backing else {
            return Ok(());
        };
        let dir_err = |source| SpoolError::Dir {
            path: dir.clone(),
            source,
        };
        self.sizes.clear();
        for item in std::fs::read_dir(dir).map_err(dir_err)? {
            let item = item.map_err(dir_err)?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                // A write torn by a crash: never renamed, so never promised to anyone.
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let Some(seq) = parse_name(name) else {
                continue;
            };
            let size = item.metadata().map_err(dir_err)?.len();
            self.sizes.insert(seq, size);
        }
        self.bytes = self.sizes.values().sum();
        let last = self.sizes.last_key_value().map_or(0, |(s, _)| *s);
        self.next_seq = self.next_seq.max(last + 1);
        Ok(())
    }

    /// The directory, for a disk spool.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Disk(d) => Some(d),
            Backing::Memory(_) => None,
        }
    }

    /// Stores an alert behind all others.
    pub fn push(&mut self, id: &str, body: &[u8]) -> Result<Pushed, SpoolError> {
        let mut data = Vec::with_capacity(id.len() + 1 + body.len());
        data.extend_from_slice(id.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(body);
        let size = data.len() as u64;
        if self.bytes + size > self.max_bytes {
            return Ok(Pushed::Full);
        }
        let seq = match &mut self.backing {
            Backing::Memory(m) => {
                let seq = self.next_seq;
                m.insert(seq, data);
                seq
            }
            Backing::Disk(dir) => write_new(dir, self.next_seq, &data)?,
        };
        self.next_seq = seq + 1;
        self.sizes.insert(seq, size);
        self.bytes += size;
        Ok(Pushed::Stored(seq))
    }

    /// The oldest alert, if any.
    pub fn head(&self) -> Result<Option<Entry>, SpoolError> {
        let Some(&seq) = self.sizes.keys().next() else {
            return Ok(None);
        };
        let data = match &self.backing {
            Backing::Memory(m) => m.get(&seq).cloned().unwrap_or_default(),
            Backing::Disk(dir) => {
                let path = dir.join(file_name(seq));
                std::fs::read(&path).map_err(|source| SpoolError::Io { path, source })?
            }
        };
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return Err(SpoolError::Damaged {
                seq,
                path: self.path_of(seq),
            });
        };
        Ok(Some(Entry {
            seq,
            id: String::from_utf8_lossy(&data[..nl]).into_owned(),
            body: data[nl + 1..].to_vec(),
        }))
    }

    /// Forgets a delivered (or undeliverable) alert.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        match &mut self.backing {
            Backing::Memory(m) => {
                m.remove(&seq);
            }
            Backing::Disk(dir) => {
                let path = dir.join(file_name(seq));
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(SpoolError::Io { path, source: e });
                    }
                    _ => {}
                }
            }
        }
        if let Some(size) = self.sizes.remove(&seq) {
            self.bytes -= size;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        match &self.backing {
            Backing::Disk(dir) => dir.join(file_name(seq)),
            Backing::Memory(_) => PathBuf::from(format!("(memory)/{}", file_name(seq))),
        }
    }
}

pub fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Writes `data` as the spool file for `seq` or, when that name is taken (another process
/// wrote it), the next free one; returns the sequence used.
fn write_new(dir: &Path, mut seq: u64, data: &[u8]) -> Result<u64, SpoolError> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Io { path, source }
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        // A hard link, unlike rename, never replaces a file already there.
        loop {
            let path = dir.join(file_name(seq));
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq += 1,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        // The directory entry itself must reach the disk too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(seq)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// An exclusive `flock` on the spool directory's lock file: one delivering process per
/// spool, so two daemons (an old pod still stopping, a new one starting) never send the
/// same alert twice. Released when dropped.
pub struct DirLock {
    _held: File,
}

impl DirLock {
    /// `Ok(None)` while another process holds it.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<Self>> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))?;
        use std::os::fd::AsRawFd as _;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(Self { _held: f }));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        }
    }
}
