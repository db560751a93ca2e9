//! The writer: appends records, keeps the head file, signs checkpoints, and resumes the
//! chain after a restart or a crash.
use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::{
        fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _},
        io::AsRawFd as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    CheckpointKey, GENESIS, Kind, LogError, MAX_LINE, encode,
    hmac::{checkpoint_message, head_message},
    parse_line, sha256_hex,
};

/// How the writer syncs, signs and warns.
#[derive(Clone, Debug)]
pub struct EventLogOptions {
    /// Sign checkpoints (and the head file) with this key.
    pub checkpoint_key: Option<CheckpointKey>,
    /// A checkpoint after at most this many records.
    pub checkpoint_every: u64,
    /// And at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// `fdatasync` at most this long after a record (alerts are synced at once).
    pub sync_interval: Duration,
    /// Warn (once per writer) when the log grows past this size; it is never rotated.
    pub max_bytes: u64,
}

impl Default for EventLogOptions {
    fn default() -> Self {
        Self {
            checkpoint_key: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(600),
            sync_interval: Duration::from_secs(1),
            max_bytes: 1 << 30,
        }
    }
}

/// The head file: the last record the writer synced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    /// HMAC of seq, hash and time, when the writer has a checkpoint key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `<log>.head`.
pub fn head_path(log: &Path) -> PathBuf {
    let mut s: OsString = log.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// The head file, or `None` when there is none.
pub fn read_head(path: &Path) -> Result<Option<Head>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            LogError::HeadFile(format!(
                "head file {}: not a pthwatch head file ({e})",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(path)(e)),
    }
}

/// Replaces the head file atomically: a reader sees the old one or the new one.
fn write_head(path: &Path, head: &Head) -> io::Result<()> {
    let mut tmp: OsString = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut bytes = serde_json::to_vec(head).map_err(io::Error::other)?;
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The end of the log as found on open.
#[derive(Debug, Default)]
struct Tail {
    /// seq and hash of the last intact record.
    last: Option<(u64, String)>,
    /// Bytes after the last intact record (a torn write), with their offset.
    torn: Option<(u64, Vec<u8>)>,
    /// The file does not end with a newline.
    unterminated: bool,
}

/// The most of the file's end read to find its last record.
const MAX_TAIL: u64 = 4 * MAX_LINE as u64;

/// Finds the last intact record by reading the file backwards, never the whole file.
fn scan_tail(file: &File, len: u64, path: &Path) -> Result<Tail, LogError> {
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0; usize::try_from(len - start).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, start)
            .map_err(LogError::io(path))?;
        // The first line of a window that does not start the file may be partial.
        let first = if start == 0 {
            Some(0)
        } else {
            buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
        };
        if let Some(first) = first {
            let mut starts = vec![first];
            starts.extend(
                buf[first..]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &b)| b == b'\n')
                    .map(|(i, _)| first + i + 1),
            );
            // Line spans, last first; the last may lack its newline and still be whole.
            let mut spans: Vec<(usize, usize)> =
                starts.windows(2).map(|pair| (pair[0], pair[1])).collect();
            if let Some(&s) = starts.last().filter(|&&s| s < buf.len()) {
                spans.push((s, buf.len()));
            }
            for &(s, e) in spans.iter().rev() {
                if let Some(p) = parse_line(&buf[s..e]).ok().filter(|p| p.hash_ok) {
                    let torn = (e < buf.len()).then(|| (start + e as u64, buf[e..].to_vec()));
                    return Ok(Tail {
                        last: Some((p.record.seq, p.record.hash)),
                        torn,
                        unterminated: !buf.ends_with(b"\n"),
                    });
                }
            }
        }
        if start == 0 {
            // No record at all: empty, or a first write torn before its newline.
            if len == 0 {
                return Ok(Tail::default());
            }
            if buf.contains(&b'\n') || buf.len() > MAX_LINE {
                return Err(LogError::NoIntactRecord(path.to_owned()));
            }
            return Ok(Tail {
                last: None,
                torn: Some((0, buf)),
                unterminated: true,
            });
        }
        if window >= MAX_TAIL {
            return Err(LogError::NoIntactRecord(path.to_owned()));
        }
        window *= 4;
    }
}

/// The append-only writer. One per log file (it holds an exclusive lock).
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    head_path: PathBuf,
    file: File,
    opts: EventLogOptions,
    next_seq: u64,
    prev: String,
    /// Records written but not yet `fdatasync`ed (and so not in the head file).
    unsynced: bool,
    last_sync: Instant,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A write failed part way: resume (as after a crash) before the next record.
    damaged: bool,
    size_warned: bool,
}

impl EventLog {
    /// Opens (creating, mode 0600) the log at `path` and continues its chain. A torn last
    /// line or a log shorter than its head file is recorded in the `start` record written
    /// here, not refused: the daemon must keep logging.
    pub fn open(path: &Path, opts: EventLogOptions) -> Result<Self, LogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(LogError::io(path))?;
        lock(&file, path)?;
        let mode = file
            .metadata()
            .map_err(LogError::io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:04o}", mode & 0o777),
                "the event log is readable by group or others; chmod 600 it"
            );
        }
        let now = Instant::now();
        let mut log = Self {
            path: path.to_owned(),
            head_path: head_path(path),
            file,
            opts,
            next_seq: 0,
            prev: GENESIS.to_owned(),
            unsynced: false,
            last_sync: now,
            since_checkpoint: 0,
            last_checkpoint: now,
            damaged: false,
            size_warned: false,
        };
        log.resume("open")?;
        Ok(log)
    }

    /// Appends a record; returns its seq. Alerts are synced before this returns; other
    /// records within `sync_interval` (call [`Self::flush`] from a periodic tick).
    pub fn append(&mut self, kind: Kind, data: Value) -> Result<u64, LogError> {
        if matches!(kind, Kind::Checkpoint | Kind::Start) {
            return Err(LogError::ReservedKind(kind));
        }
        if self.damaged {
            self.resume("write error")?;
        }
        let seq = self.write_record(kind, &data)?;
        if self.checkpoint_due() {
            self.checkpoint()?;
        } else if kind == Kind::Alert || self.last_sync.elapsed() >= self.opts.sync_interval {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Syncs what is pending and writes a checkpoint when one is due by time.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.damaged {
            self.resume("write error")?;
        }
        let late = self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval;
        if self.opts.checkpoint_key.is_some() && late {
            return self.checkpoint();
        }
        if self.unsynced {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes a `stop` record (and a checkpoint, with a key) and syncs.
    pub fn close(mut self) -> Result<(), LogError> {
        self.write_record(Kind::Stop, &json!({ "pid": std::process::id() }))?;
        if self.opts.checkpoint_key.is_some() {
            self.checkpoint()
        } else {
            self.sync()
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Continues the chain from the last intact record and writes a `start` record that
    /// notes a torn tail or a log shorter than its head file.
    fn resume(&mut self, reason: &str) -> Result<(), LogError> {
        let len = self
            .file
            .metadata()
            .map_err(LogError::io(&self.path))?
            .len();
        let tail = scan_tail(&self.file, len, &self.path)?;
        let head = match read_head(&self.head_path) {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the event log's head file");
                None
            }
        };
        let mut data = json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "reason": reason,
        });
        if let Some(key) = &self.opts.checkpoint_key {
            data["checkpoint_key_id"] = key.id().into();
        }
        if let Some((offset, mut torn)) = tail.torn {
            if tail.unterminated {
                torn.push(b'\n');
            }
            tracing::warn!(
                path = %self.path.display(), offset, bytes = torn.len(),
                "the event log ends in a torn record (a crash mid-write); noting it and continuing"
            );
            data["torn_tail"] = json!({
                "offset": offset,
                "bytes": torn.len(),
                "sha256": sha256_hex(&torn),
            });
        }
        if tail.unterminated {
            self.write_raw(b"\n")?;
        }
        let last_seq = tail.last.as_ref().map(|(seq, _)| *seq);
        if let Some(head) = head {
            let cut = match &tail.last {
                None => true,
                Some((seq, hash)) => head.seq > *seq || (head.seq == *seq && head.hash != *hash),
            };
            if cut {
                tracing::error!(
                    path = %self.path.display(), head_seq = head.seq, log_seq = ?last_seq,
                    "the event log is shorter than its head file says: records were removed"
                );
                data["head_mismatch"] = json!({
                    "head_seq": head.seq,
                    "head_hash": head.hash,
                    "log_seq": last_seq,
                });
            }
        }
        match tail.last {
            Some((seq, hash)) => {
                self.next_seq = seq + 1;
                self.prev = hash;
                data["resumed_after_seq"] = seq.into();
            }
            None => {
                self.next_seq = 0;
                self.prev = GENESIS.to_owned();
            }
        }
        self.damaged = false;
        self.write_record(Kind::Start, &data)?;
        // Each session starts signed, so a keyed log always holds a checkpoint.
        if self.opts.checkpoint_key.is_some() {
            self.checkpoint()
        } else {
            self.sync()
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.opts.checkpoint_key.is_some()
            && (self.since_checkpoint >= self.opts.checkpoint_every.max(1)
                || self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval)
    }

    /// Writes a checkpoint over the chain so far, then syncs (checkpoint and head together).
    fn checkpoint(&mut self) -> Result<(), LogError> {
        let Some(key) = self.opts.checkpoint_key.clone() else {
            return self.sync();
        };
        let every = self.opts.checkpoint_every.max(1);
        let time = crate::alert::rfc3339(SystemTime::now());
        let mac = key.sign(&checkpoint_message(self.next_seq, &time, &self.prev, every));
        let data = json!({
            "alg": "hmac-sha256",
            "key_id": key.id(),
            "every": every,
            "mac": mac,
        });
        self.write_record_at(Kind::Checkpoint, &data, &time)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.sync()
    }

    fn write_record(&mut self, kind: Kind, data: &Value) -> Result<u64, LogError> {
        let time = crate::alert::rfc3339(SystemTime::now());
        let seq = self.write_record_at(kind, data, &time)?;
        self.since_checkpoint += 1;
        Ok(seq)
    }

    fn write_record_at(&mut self, kind: Kind, data: &Value, time: &str) -> Result<u64, LogError> {
        let seq = self.next_seq;
        let (mut line, hash) = encode(seq, time, &self.prev, kind, data);
        if line.len() > MAX_LINE {
            return Err(LogError::TooLarge(line.len()));
        }
        line.push('\n');
        self.write_raw(line.as_bytes())?;
        self.prev = hash;
        self.next_seq += 1;
        Ok(seq)
    }

    /// One `write` per record on an `O_APPEND` descriptor: records never interleave.
    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.unsynced = true;
        self.file.write_all(bytes).map_err(|e| {
            self.damaged = true;
            LogError::io(&self.path)(e)
        })
    }

    /// `fdatasync`, then the head file: the head never names a record that is not on disk.
    fn sync(&mut self) -> Result<(), LogError> {
        self.file.sync_data().map_err(LogError::io(&self.path))?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        if let Some(seq) = self.next_seq.checked_sub(1) {
            let time = crate::alert::rfc3339(SystemTime::now());
            let mac = self
                .opts
                .checkpoint_key
                .as_ref()
                .map(|k| k.sign(&head_message(seq, &self.prev, &time)));
            let head = Head {
                seq,
                hash: self.prev.clone(),
                time,
                mac,
            };
            write_head(&self.head_path, &head).map_err(LogError::io(&self.head_path))?;
        }
        self.warn_when_large();
        Ok(())
    }

    fn warn_when_large(&mut self) {
        if self.size_warned {
            return;
        }
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        if meta.len() > self.opts.max_bytes {
            self.size_warned = true;
            tracing::warn!(
                path = %self.path.display(), bytes = meta.len(), max_bytes = self.opts.max_bytes,
                "the event log is over its size limit and is not rotated; archive it \
                 (verify it first) and let pthwatch start a new one"
            );
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if self.unsynced
            && !self.damaged
            && let Err(e) = self.sync()
        {
            tracing::warn!(error = %e, "syncing the event log on close");
        }
    }
}

/// An exclusive, non-blocking `flock`: two writers would fork the chain.
fn lock(file: &File, path: &Path) -> Result<(), LogError> {
    // SAFETY: flock on a descriptor this `File` owns for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(LogError::Locked(path.to_owned()))
    } else {
        Err(LogError::io(path)(err))
    }
}
