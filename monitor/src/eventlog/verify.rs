//! Verification: reads a log once, front to back, and says where it was edited, cut,
//! reordered or spliced.
//!
//! Checks, per line: the record parses; its hash is the SHA-256 of its body (else: edited);
//! its seq follows the previous record's (else: a jump, resolved at the end into deletions
//! or a reordering, or a duplicate); its `prev` is the previous record's hash (else:
//! spliced). At the end: the head file's seq is in the file (else: truncated). With a key:
//! each checkpoint's signature, and no run of records longer than the checkpoint promised.
use std::{fmt, io};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    CheckpointKey, GENESIS, Kind, LineReader, MAX_LINE, RawLine, Record, hex,
    hmac::{checkpoint_message, head_message},
    parse_line,
    writer::Head,
};

/// What to check the log against.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// Check checkpoint and head signatures with this key.
    pub key: Option<&'a CheckpointKey>,
    /// The head file, read *before* the log (a writer may append meanwhile).
    pub head: Option<Head>,
}

/// The kinds of damage verify finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's hash is not the hash of its content.
    Edited,
    /// Seqs are missing.
    Deleted,
    /// Records are not in seq order.
    Reordered,
    /// A seq appears twice.
    Duplicated,
    /// A record's `prev` is not the previous record's hash.
    Spliced,
    /// The log ends before the record the head file names.
    Truncated,
    /// The last line is an incomplete record.
    Torn,
    /// A line that is not a record.
    NotARecord,
    /// A checkpoint or the head file fails its signature.
    BadSignature,
    /// A checkpoint signed by another key.
    WrongKey,
    /// More records without a checkpoint than the last checkpoint promised, or none at all.
    MissingCheckpoints,
    /// The head file disagrees with the record it names, or is unsigned.
    HeadMismatch,
}

/// One finding, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the problem has one.
    pub line: Option<u64>,
    pub kind: ProblemKind,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub lines: u64,
    pub records: u64,
    /// seq and hash of the last record in the file: an anchor to keep elsewhere.
    pub last: Option<(u64, String)>,
    pub checkpoints_verified: u64,
    pub checkpoints_unchecked: u64,
    /// Sorted by line.
    pub problems: Vec<Problem>,
    /// Findings that are not damage (acknowledged torn writes, what was not checked).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a whole log. IO errors are returned; everything about the content is in the
/// report.
pub fn verify(reader: impl io::BufRead, opts: &VerifyOptions<'_>) -> io::Result<VerifyReport> {
    let mut v = Verifier {
        opts,
        report: VerifyReport::default(),
        prev: None,
        max_seq: None,
        garbage: Vec::new(),
        runs: Vec::new(),
        jumps: Vec::new(),
        out_of_order: Vec::new(),
        checkpoint: None,
        since_checkpoint: 0,
        run_reported: false,
    };
    let mut lines = LineReader::new(reader);
    while let Some(line) = lines.next_line()? {
        v.report.lines = line.number;
        match parse_line(&line.bytes) {
            Ok(p) if !line.overlong => {
                v.acknowledge_garbage(Some((line.number, &p.record)));
                v.record(line.number, &p.record, p.hash_ok);
            }
            _ => v.garbage.push(line),
        }
    }
    v.acknowledge_garbage(None);
    Ok(v.finish())
}

/// Consecutive records whose seqs and lines both go up by one.
#[derive(Clone, Copy, Debug)]
struct Run {
    seq: u64,
    line: u64,
    len: u64,
}

/// A seq step forward by more than one.
#[derive(Clone, Copy, Debug)]
struct Jump {
    line: u64,
    /// `None`: the first record's seq is not 0.
    from: Option<u64>,
    to: u64,
}

struct Verifier<'a> {
    opts: &'a VerifyOptions<'a>,
    report: VerifyReport,
    /// The previous record: line, seq, hash (as stored).
    prev: Option<(u64, u64, String)>,
    max_seq: Option<u64>,
    /// Lines that are not records, since the last record.
    garbage: Vec<RawLine>,
    runs: Vec<Run>,
    jumps: Vec<Jump>,
    /// (line, seq, seq of the record before it)
    out_of_order: Vec<(u64, u64, Option<u64>)>,
    /// seq and promised interval of the last authentic checkpoint.
    checkpoint: Option<(u64, u64)>,
    since_checkpoint: u64,
    run_reported: bool,
}

impl Verifier<'_> {
    fn problem(&mut self, line: Option<u64>, kind: ProblemKind, message: String) {
        self.report.problems.push(Problem {
            line,
            kind,
            message,
        });
    }

    fn record(&mut self, line: u64, r: &Record, hash_ok: bool) {
        let seq = r.seq;
        self.report.records += 1;
        if !hash_ok {
            self.problem(
                Some(line),
                ProblemKind::Edited,
                format!("line {line} (seq {seq}): hash mismatch — record edited"),
            );
        }
        let prev_seq = self.prev.as_ref().map(|p| p.1);
        let duplicate_of = match self.max_seq {
            Some(max) if seq <= max => self.line_of(seq),
            _ => None,
        };
        let in_step = prev_seq.map_or(seq == 0, |p| p.checked_add(1) == Some(seq));
        if let Some(first) = duplicate_of {
            self.problem(
                Some(line),
                ProblemKind::Duplicated,
                format!(
                    "line {line} (seq {seq}): seq {seq} appears a second time (first at line \
                     {first}) — a record was inserted or duplicated"
                ),
            );
        } else if !in_step {
            match prev_seq {
                Some(p) if seq <= p => self.out_of_order.push((line, seq, Some(p))),
                from => self.jumps.push(Jump {
                    line,
                    from,
                    to: seq,
                }),
            }
        } else {
            let expected = self.prev.as_ref().map_or(GENESIS, |p| p.2.as_str());
            if r.prev != expected {
                let message = match &self.prev {
                    Some((prev_line, ..)) => format!(
                        "line {line}: prev does not match line {prev_line} — reordered or spliced \
                         (or line {prev_line} was edited and its hash recomputed)"
                    ),
                    None => format!(
                        "line {line}: prev is not the genesis value — the start of the log was \
                         cut or spliced"
                    ),
                };
                self.problem(Some(line), ProblemKind::Spliced, message);
            }
        }
        self.add_to_runs(line, seq);
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        self.prev = Some((line, seq, r.hash.clone()));
        self.report.last = Some((seq, r.hash.clone()));

        if let Some(head) = &self.opts.head
            && head.seq == seq
            && head.hash != r.hash
        {
            self.problem(
                Some(line),
                ProblemKind::HeadMismatch,
                format!(
                    "line {line} (seq {seq}): the head file records another hash for seq {seq} \
                     — the log was rewritten after pthwatch last synced it"
                ),
            );
        }
        match r.kind {
            Kind::Checkpoint => self.checkpoint(line, r),
            Kind::Start => {
                self.start(line, r);
                self.count_unsigned(line, seq);
            }
            _ => self.count_unsigned(line, seq),
        }
    }

    /// Where `seq` was seen, if it was.
    fn line_of(&self, seq: u64) -> Option<u64> {
        self.runs
            .iter()
            .find(|r| (r.seq..r.seq + r.len).contains(&seq))
            .map(|r| r.line + (seq - r.seq))
    }

    fn add_to_runs(&mut self, line: u64, seq: u64) {
        match self.runs.last_mut() {
            Some(r) if r.seq + r.len == seq && r.line + r.len == line => r.len += 1,
            _ => self.runs.push(Run { seq, line, len: 1 }),
        }
    }

    /// How many seqs of `range` are in the file.
    fn present(&self, range: std::ops::Range<u64>) -> u64 {
        self.runs
            .iter()
            .map(|r| {
                let lo = r.seq.max(range.start);
                let hi = (r.seq + r.len).min(range.end);
                hi.saturating_sub(lo)
            })
            .sum()
    }

    fn checkpoint(&mut self, line: u64, r: &Record) {
        let Some(key) = self.opts.key else {
            self.report.checkpoints_unchecked += 1;
            self.count_unsigned(line, r.seq);
            return;
        };
        let field = |name: &str| r.data.get(name).and_then(Value::as_str).unwrap_or_default();
        let every = r.data.get("every").and_then(Value::as_u64).unwrap_or(0);
        let seq = r.seq;
        if field("key_id") != key.id() {
            self.problem(
                Some(line),
                ProblemKind::WrongKey,
                format!(
                    "checkpoint at seq {seq} (line {line}): signed with key {}, not with the \
                     given key {}",
                    field("key_id"),
                    key.id()
                ),
            );
        } else if !key.verify(
            &checkpoint_message(seq, &r.time, &r.prev, every),
            field("mac"),
        ) {
            self.problem(
                Some(line),
                ProblemKind::BadSignature,
                format!(
                    "checkpoint at seq {seq}: bad signature (line {line}) — the records before \
                     it were rewritten, or the checkpoint was forged"
                ),
            );
        } else {
            self.report.checkpoints_verified += 1;
            self.checkpoint = Some((seq, every.max(1)));
            self.since_checkpoint = 0;
            self.run_reported = false;
            return;
        }
        self.count_unsigned(line, seq);
    }

    /// A record not covered by a new checkpoint: too many in a row means checkpoints were
    /// removed (only checkable with the key).
    fn count_unsigned(&mut self, line: u64, seq: u64) {
        self.since_checkpoint += 1;
        let (Some(_), Some((cp, every))) = (self.opts.key, self.checkpoint) else {
            return;
        };
        if self.since_checkpoint > every && !self.run_reported {
            self.run_reported = true;
            self.problem(
                Some(line),
                ProblemKind::MissingCheckpoints,
                format!(
                    "line {line} (seq {seq}): {} records since the checkpoint at seq {cp}, which \
                     promised one every {every} — checkpoints were removed or records inserted",
                    self.since_checkpoint
                ),
            );
        }
    }

    fn start(&mut self, line: u64, r: &Record) {
        let seq = r.seq;
        if let Some(m) = r.data.get("head_mismatch") {
            let head_seq = m.get("head_seq").and_then(Value::as_u64).unwrap_or(0);
            let log_end = m
                .get("log_seq")
                .and_then(Value::as_u64)
                .map_or_else(|| "no record".to_owned(), |s| format!("seq {s}"));
            self.problem(
                Some(line),
                ProblemKind::Truncated,
                format!(
                    "line {line} (seq {seq}): when pthwatch restarted, the log ended at {log_end} \
                     but the head file recorded seq {head_seq} — truncated while pthwatch was down"
                ),
            );
        }
    }

    /// Lines that were not records, now followed by `next` (or the end of the file).
    fn acknowledge_garbage(&mut self, next: Option<(u64, &Record)>) {
        let torn_note = next
            .filter(|(_, r)| r.kind == Kind::Start)
            .and_then(|(line, r)| Some((line, r.data.get("torn_tail")?)));
        let garbage = std::mem::take(&mut self.garbage);
        if garbage.is_empty() {
            if let (Some((line, note)), Some((_, r))) = (torn_note, next) {
                let bytes = note.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                self.problem(
                    Some(line),
                    ProblemKind::Deleted,
                    format!(
                        "line {line} (seq {}): the start record notes a torn line of {bytes} \
                         bytes that is not in the file — lines removed",
                        r.seq
                    ),
                );
            }
            return;
        }
        if let Some((line, note)) = torn_note {
            let mut h = Sha256::new();
            let mut total = 0u64;
            for g in &garbage {
                h.update(&g.bytes);
                total += g.bytes.len() as u64;
            }
            let matches = note.get("bytes").and_then(Value::as_u64) == Some(total)
                && note.get("sha256").and_then(Value::as_str) == Some(hex(&h.finalize()).as_str())
                && garbage.iter().all(|g| g.terminated && !g.overlong);
            if matches {
                let first = garbage[0].number;
                let last = garbage[garbage.len() - 1].number;
                let lines = if first == last {
                    format!("line {first}")
                } else {
                    format!("lines {first}–{last}")
                };
                self.report.notes.push(format!(
                    "{lines}: torn record of {total} bytes (pthwatch stopped mid-write), \
                     acknowledged by the start record at line {line}"
                ));
                return;
            }
        }
        let count = garbage.len();
        for (i, g) in garbage.into_iter().enumerate() {
            let n = g.number;
            if next.is_none() && i + 1 == count && !g.terminated {
                self.problem(
                    Some(n),
                    ProblemKind::Torn,
                    format!(
                        "line {n}: torn last line ({} bytes, no newline) — pthwatch stopped \
                         mid-record (a crash), or the file was cut",
                        g.bytes.len()
                    ),
                );
                continue;
            }
            let why = if g.overlong {
                format!("longer than {MAX_LINE} bytes")
            } else if g.bytes.trim_ascii().is_empty() {
                "empty".to_owned()
            } else {
                parse_line(&g.bytes).err().unwrap_or_default()
            };
            self.problem(
                Some(n),
                ProblemKind::NotARecord,
                format!("line {n}: not a pthwatch record ({why}) — corrupted or edited"),
            );
        }
    }

    fn finish(mut self) -> VerifyReport {
        for jump in std::mem::take(&mut self.jumps) {
            let Jump { line, from, to } = jump;
            let lo = from.map_or(0, |f| f + 1);
            let missing = (to - lo) - self.present(lo..to);
            match from {
                _ if missing == 0 => self.out_of_order.push((line, to, from)),
                Some(from) => self.problem(
                    Some(line),
                    ProblemKind::Deleted,
                    format!(
                        "seq jumps from {from} to {to} at line {line} — {missing} {} deleted",
                        plural(missing, "record", "records")
                    ),
                ),
                None => self.problem(
                    Some(line),
                    ProblemKind::Deleted,
                    format!(
                        "line {line}: the log starts at seq {to} — {missing} earlier {} deleted, \
                         or the start of the file was cut",
                        plural(missing, "record", "records")
                    ),
                ),
            }
        }
        self.reorder_problems();
        self.head_problems();
        self.checkpoint_notes();
        self.report
            .problems
            .sort_by_key(|p| p.line.unwrap_or(u64::MAX));
        self.report
    }

    /// Out-of-order records on neighbouring lines become one problem.
    fn reorder_problems(&mut self) {
        let mut items = std::mem::take(&mut self.out_of_order);
        items.sort_unstable();
        let mut groups: Vec<Vec<(u64, u64, Option<u64>)>> = Vec::new();
        for item in items {
            match groups.last_mut() {
                Some(g) if g.last().is_some_and(|l| l.0 + 1 == item.0) => g.push(item),
                _ => groups.push(vec![item]),
            }
        }
        for g in groups {
            let (first, seq, before) = g[0];
            let message = if g.len() == 1 {
                let after = before.map_or_else(|| "the start".to_owned(), |b| format!("seq {b}"));
                format!("line {first} (seq {seq}): out of order after {after} — records reordered")
            } else {
                let last = g[g.len() - 1].0;
                let mut seqs: Vec<String> = g.iter().take(8).map(|i| i.1.to_string()).collect();
                if g.len() > 8 {
                    seqs.push("…".into());
                }
                format!(
                    "lines {first}–{last}: records out of order (seq {}) — reordered",
                    seqs.join(", ")
                )
            };
            self.problem(Some(first), ProblemKind::Reordered, message);
        }
    }

    fn head_problems(&mut self) {
        let Some(head) = self.opts.head.clone() else {
            return;
        };
        match self.report.last.clone() {
            None => self.problem(
                None,
                ProblemKind::Truncated,
                format!(
                    "the file holds no record but the head file records seq {} — truncated",
                    head.seq
                ),
            ),
            Some((last, _)) if head.seq > self.max_seq.unwrap_or(last) => {
                let lost = head.seq - self.max_seq.unwrap_or(last);
                self.problem(
                    None,
                    ProblemKind::Truncated,
                    format!(
                        "file ends at seq {last} but the head file records seq {} — truncated \
                         ({lost} {} lost)",
                        head.seq,
                        plural(lost, "record", "records")
                    ),
                );
            }
            _ => {}
        }
        if let Some(key) = self.opts.key {
            match &head.mac {
                None => self.problem(
                    None,
                    ProblemKind::HeadMismatch,
                    "the head file is not signed — it was written without the key, or replaced"
                        .to_owned(),
                ),
                Some(mac) if !key.verify(&head_message(head.seq, &head.hash, &head.time), mac) => {
                    self.problem(
                        None,
                        ProblemKind::BadSignature,
                        "head file: bad signature — it was not written with this key".to_owned(),
                    );
                }
                Some(_) => {}
            }
        }
    }

    fn checkpoint_notes(&mut self) {
        let records = self.report.records;
        match (self.opts.key, self.checkpoint) {
            (Some(_), None) if records > 0 && self.report.checkpoints_verified == 0 => {
                self.problem(
                    None,
                    ProblemKind::MissingCheckpoints,
                    format!(
                        "no checkpoint signed with this key in {records} records — the log was \
                         written without it, or its checkpoints were removed"
                    ),
                );
            }
            (Some(_), Some((cp, _))) if self.since_checkpoint > 0 => {
                self.report.notes.push(format!(
                    "{} records after the checkpoint at seq {cp} are protected by the hash chain \
                     only (a checkpoint follows within the promised interval)",
                    self.since_checkpoint
                ));
            }
            _ => {}
        }
        let unchecked = self.report.checkpoints_unchecked;
        if unchecked > 0 {
            self.report.notes.push(format!(
                "{unchecked} {} not checked: give --key to check {}",
                plural(unchecked, "checkpoint", "checkpoints"),
                plural(unchecked, "it", "them")
            ));
        }
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
