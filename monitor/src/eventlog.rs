//! The event log: an append-only, hash-chained local record of every alert and every
//! decision, with `pthwatch log verify|query|show` to audit it.
//!
//! # Format
//! JSON Lines (default [`DEFAULT_PATH`]), one record per line:
//!
//! ```text
//! {"seq":7,"time":"2026-03-24T10:15:02.123Z","prev":"<hex>","kind":"alert","data":{...},"hash":"<hex>"}
//! ```
//!
//! - `seq` counts from 0 with no gaps; `kind` is one of [`Kind`].
//! - The record's *body* is the line without its `hash` field, exactly as written:
//!   `{"seq":N,"time":"T","prev":"P","kind":"K","data":D}` with no whitespace and `data` in
//!   canonical form (object keys sorted bytewise, compact). `hash` is the hex SHA-256 of the
//!   body, so it covers every other field; the verifier hashes the bytes of the line itself,
//!   never a re-serialisation, so the check does not depend on how numbers round-trip.
//! - `prev` is the previous record's `hash` (64 zeros for seq 0): deleting, reordering or
//!   splicing records breaks the links and the seq sequence.
//! - `<log>.head` (the head file) holds the last synced seq and hash, replaced atomically
//!   (write, fsync, rename) after each sync, so a log cut at its tail is noticed.
//! - With a checkpoint key, a `checkpoint` record signs the chain (HMAC-SHA256 over its seq,
//!   time, prev and the signing interval) right after each start, every N records and every T
//!   seconds; the head file is signed too.
//! - A crash mid-write leaves a torn last line. The next writer terminates it with a newline
//!   and writes a `start` record that names its length and SHA-256, so verify can tell a
//!   torn write from an edit.
//!
//! # What is protected, and what is not
//! - **Without a key**, the chain proves the file is *self-consistent*: an edit, a deletion, a
//!   reordering or an insertion that is not followed by rewriting every later record is
//!   found and located. Anyone who can write the file (root on this host) can rewrite it
//!   from any point on with fresh hashes, head file included: the chain alone is no proof
//!   against them. Copy the `anchor` line that `log verify` prints (seq and hash) off the host
//!   to pin a prefix.
//! - **With a key** (readable only by pthwatch), someone without the key cannot forge
//!   checkpoints: rewriting any record before the last checkpoint is found, as is stripping
//!   checkpoints (more than N records in a row without one). They can still cut the log
//!   back to an older state together with an older head file they kept (a replay), and
//!   rewrite or drop up to N records after the last checkpoint. Root can read the key, so
//!   against root only checkpoints shipped elsewhere (a log collector) protect the past.
//! - With `--key`, verify also reports a session written without the key after one written
//!   with it (more records than the last checkpoint promised): a downgrade looks the same
//!   as stripped checkpoints.
//! - Archive the log together with its head file; a writer that finds a head file naming
//!   records its log does not hold notes it in its `start` record, and verify reports it.
//! - Verifying a log while the daemon appends to it can show a torn last line: the record
//!   being written. Verify again, or verify a copy taken after `systemctl stop`.
//! - Writes are flushed to the kernel per record; `fdatasync` runs per alert and at most a
//!   second after any other record (the daemon calls [`EventLog::flush`] from its tick). A
//!   power loss can lose the records of that last second, never records the head file names.

pub mod cli;
mod hmac;
mod query;
mod show;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    io::{self, BufRead},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub use self::hmac::CheckpointKey;
pub use self::writer::{EventLog, EventLogOptions};

/// Where the daemon keeps the event log unless configured otherwise.
pub const DEFAULT_PATH: &str = "/var/log/pthwatch/events.jsonl";

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The longest record the writer writes and the readers accept (an alert is a few KiB).
const MAX_LINE: usize = 1 << 20;

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An alert, as written to the alert log (`data` is the alert object).
    Alert,
    /// Something the daemon decided: a quarantine, a kill, an exception that silenced a report.
    Decision,
    /// A startup hook seen or classified.
    Hook,
    /// A process event of a tracked lineage (fork, exec, exit).
    Process,
    /// A signature over the chain so far (written by the log itself).
    Checkpoint,
    /// A writer started (written by the log itself).
    Start,
    /// A writer stopped cleanly.
    Stop,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Decision => "decision",
            Self::Hook => "hook",
            Self::Process => "process",
            Self::Checkpoint => "checkpoint",
            Self::Start => "start",
            Self::Stop => "stop",
        }
    }
}

/// One record of the log, as read back.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    pub kind: Kind,
    pub data: Value,
    pub hash: String,
}

/// Errors of the event log and its commands.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The IO error is part of the message (not a `source`), so `main`'s `{:#}` does not
    /// print it twice.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "{} is locked by another writer (is a second pthwatch running with the same event log?)",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("checkpoint key {}: {problem}", path.display())]
    Key { path: PathBuf, problem: String },
    #[error(
        "{} holds no intact pthwatch record near its end: it is not an event log, or it is \
         damaged. Run `pthwatch log verify --file {}`, then move it aside to start a new log",
        .0.display(), .0.display()
    )]
    NoIntactRecord(PathBuf),
    #[error("{} records are written by the event log itself, not by callers", .0.as_str())]
    ReservedKind(Kind),
    #[error("a record of {0} bytes is over the {MAX_LINE}-byte limit; it was not written")]
    TooLarge(usize),
    /// The head file exists but is not one (checked by verify, which reports it as damage).
    #[error("{0}")]
    HeadFile(String),
    #[error("{0}")]
    Usage(String),
}

impl LogError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |error| Self::Io { path, error }
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `v` as compact JSON with object keys sorted bytewise, at every depth.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The line (without its newline) and hash of a record.
pub fn encode(seq: u64, time: &str, prev: &str, kind: Kind, data: &Value) -> (String, String) {
    let mut body = format!(
        r#"{{"seq":{seq},"time":{},"prev":{},"kind":"{}","data":"#,
        Value::from(time),
        Value::from(prev),
        kind.as_str()
    );
    write_canonical(data, &mut body);
    body.push('}');
    let hash = sha256_hex(body.as_bytes());
    body.pop();
    let _ = write!(body, r#","hash":"{hash}"}}"#);
    (body, hash)
}

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// The SHA-256 (hex) of a line's body, or `None` when the line does not end in the
/// `,"hash":"…"}` the writer puts there (then it was reformatted: an edit).
fn body_hash(line: &[u8]) -> Option<String> {
    let split = line.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (body, suffix) = line.split_at(split);
    if !suffix.starts_with(br#","hash":""#) || !suffix.ends_with(br#""}"#) {
        return None;
    }
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    Some(hex(&h.finalize()))
}

/// A line of the log that parsed as a record.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub record: Record,
    /// Whether `hash` is the SHA-256 of the line's body.
    pub hash_ok: bool,
}

/// Parses one line (a trailing newline is allowed). `Err` says why it is not a record.
pub fn parse_line(line: &[u8]) -> Result<Parsed, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let record: Record = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let hash_ok = body_hash(line).is_some_and(|h| h == record.hash);
    Ok(Parsed { record, hash_ok })
}

/// One line as read from the file.
#[derive(Clone, Debug)]
pub struct RawLine {
    /// 1-based.
    pub number: u64,
    /// The bytes, with the newline when there is one (cut at [`MAX_LINE`] + 1).
    pub bytes: Vec<u8>,
    /// Ends with a newline.
    pub terminated: bool,
    /// Longer than [`MAX_LINE`]; `bytes` holds only its start.
    pub overlong: bool,
}

/// Reads a log line by line, without holding more than one line in memory.
pub struct LineReader<R> {
    reader: R,
    number: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(reader: R) -> Self {
        Self { reader, number: 0 }
    }

    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let limit = MAX_LINE as u64 + 1;
        let n = io::Read::take(&mut self.reader, limit).read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut terminated = bytes.ends_with(b"\n");
        let overlong = !terminated && bytes.len() > MAX_LINE;
        if overlong {
            terminated = self.skip_rest_of_line()?;
        }
        Ok(Some(RawLine {
            number: self.number,
            bytes,
            terminated,
            overlong,
        }))
    }

    /// Consumes up to the next newline; whether there was one.
    fn skip_rest_of_line(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                self.reader.consume(i + 1);
                return Ok(true);
            }
            let len = buf.len();
            self.reader.consume(len);
        }
    }
}

/// Calls `f` with each line that parses as a record (whatever its hash) and returns the
/// number of lines that did not: for commands that read the log, not audit it.
pub fn for_each_record<R: BufRead>(
    reader: R,
    mut f: impl FnMut(u64, Record) -> io::Result<()>,
) -> io::Result<u64> {
    let mut lines = LineReader::new(reader);
    let mut unreadable = 0;
    while let Some(line) = lines.next_line()? {
        match parse_line(&line.bytes) {
            Ok(p) if !line.overlong => f(line.number, p.record)?,
            _ => unreadable += 1,
        }
    }
    Ok(unreadable)
}

/// Replaces control and bidirectional-override characters, which a hostile hook or process
/// name could use to rewrite the terminal, with escapes.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
