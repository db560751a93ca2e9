//! The event log's stories: a log written, then tampered with in each way an attacker or a
//! crash could, and what verify says; queries; an incident drawn.
use std::{
    fs,
    io::Cursor,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    hmac::hmac_sha256,
    query::{QueryFilter, Since, parse_rfc3339_ms, parse_since, query, table_header, table_row},
    show::{FindError, find_alert, related_records, render_incident},
    verify::{ProblemKind, VerifyOptions, VerifyReport, verify},
    writer::{Head, head_path, read_head},
    *,
};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-eventlog-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn key() -> CheckpointKey {
    CheckpointKey::from_bytes(b"a test checkpoint key, 32 bytes.")
}

fn options(key: Option<CheckpointKey>) -> EventLogOptions {
    EventLogOptions {
        checkpoint_key: key,
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(3600),
        sync_interval: Duration::ZERO,
        max_bytes: u64::MAX,
    }
}

const SHA_LITELLM: &str = "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const SHA_OTHER: &str = "9b0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80";

/// An alert shaped like `schema/alert.schema.json`.
fn alert(n: u64, rule: &str, pid: u32, hook: &str, sha: &str) -> Value {
    json!({
        "id": format!("a1e7{n:028x}"),
        "time": "2026-03-24T10:15:02.123Z",
        "rule": rule,
        "severity": "critical",
        "action": "blocked",
        "summary": "litellm_init.pth read credentials and connected to 203.0.113.9:443",
        "host": "build-3",
        "process": {"pid": pid, "ppid": 812, "uid": 1000, "exe": "/usr/bin/python3.12",
                    "cmdline": ["python3", "-c", "pass"]},
        "lineage": [{"pid": pid, "exe": "/usr/bin/python3.12"},
                    {"pid": 812, "exe": "/usr/bin/bash"},
                    {"pid": 1, "exe": "/usr/lib/systemd/systemd"}],
        "startup_hook": {"kind": "pth", "path": hook, "sha256": sha,
                         "line": "import os, base64; exec(base64.b64decode('aW1wb3J0'))",
                         "line_number": 1, "distribution": "litellm==1.82.8", "class": "risky",
                         "findings": ["base64 decode", "exec"]},
        "credentials": ["/root/.aws/credentials", "/root/.ssh/id_rsa"],
        "destination": {"address": "203.0.113.9", "port": 443, "protocol": "tcp"},
        "container": {"cgroup_id": 0},
        "lineage_id": 77 + n,
    })
}

/// A log of 52 records written by the writer (key, checkpoint every 10): start, checkpoint,
/// 44 process/decision/hook/alert records with checkpoints among them, stop, checkpoint.
fn write_sample(path: &Path, key: Option<CheckpointKey>) {
    let mut log = EventLog::open(path, options(key)).unwrap();
    for i in 0..44u64 {
        let pid = 5000 + u32::try_from(i).unwrap();
        let (kind, data) = match i % 4 {
            0 => (
                Kind::Process,
                json!({"pid": pid, "ppid": 4242, "exe": "/usr/bin/curl", "event": "exec",
                       "lineage_id": 77}),
            ),
            1 => (
                Kind::Decision,
                json!({"pid": pid, "action": "blocked", "what": "connect", "lineage_id": 77,
                       "rule": "hook_credential_exfiltration"}),
            ),
            2 => (
                Kind::Hook,
                json!({"path": "/usr/lib/python3/site-packages/x.pth", "sha256": SHA_OTHER,
                       "class": "benign", "kind": "pth"}),
            ),
            _ => (
                Kind::Alert,
                alert(
                    i,
                    "hook_credential_exfiltration",
                    pid,
                    "/site/litellm_init.pth",
                    SHA_LITELLM,
                ),
            ),
        };
        log.append(kind, data).unwrap();
    }
    log.close().unwrap();
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn record(line: &str) -> Record {
    parse_line(line.as_bytes()).unwrap().record
}

fn check(lines: &[String], head: Option<Head>, key: Option<&CheckpointKey>) -> VerifyReport {
    let mut text = lines.join("\n");
    text.push('\n');
    check_bytes(text.as_bytes(), head, key)
}

fn check_bytes(bytes: &[u8], head: Option<Head>, key: Option<&CheckpointKey>) -> VerifyReport {
    verify(Cursor::new(bytes), &VerifyOptions { key, head }).unwrap()
}

/// The only problem, with its kind and line.
fn only_problem(report: &VerifyReport) -> &verify::Problem {
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    &report.problems[0]
}

/// Re-encodes `lines[from..]` so the chain is consistent again (seqs renumbered): what an
/// attacker without the key can always do.
fn rechain(lines: &mut [String], from: usize) {
    let (mut seq, mut prev) = if from == 0 {
        (0, GENESIS.to_owned())
    } else {
        let r = record(&lines[from - 1]);
        (r.seq + 1, r.hash)
    };
    for line in &mut lines[from..] {
        let r = record(line);
        let (text, hash) = encode(seq, &r.time, &prev, r.kind, &r.data);
        *line = text;
        prev = hash;
        seq += 1;
    }
}

/// A log with a head file, and its lines.
struct Sample {
    _dir: Scratch,
    path: PathBuf,
    lines: Vec<String>,
    head: Head,
}

fn sample(name: &str, key: Option<CheckpointKey>) -> Sample {
    let dir = Scratch::new(name);
    let path = dir.file("events.jsonl");
    write_sample(&path, key);
    let lines = lines_of(&path);
    let head = read_head(&head_path(&path)).unwrap().unwrap();
    Sample {
        _dir: dir,
        path,
        lines,
        head,
    }
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    let cases: [(&[u8], &[u8], &str); 6] = [
        (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (&[0xaa; 20], &[0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        (
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
            &[0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First", "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        (
            &[0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (k, msg, want) in cases {
        assert_eq!(hex(&hmac_sha256(k, msg)), want);
    }
    // Test case 5 is truncated to 128 bits.
    let mac = hmac_sha256(&[0x0c; 20], b"Test With Truncation");
    assert_eq!(hex(&mac[..16]), "a3b6167473100ee06e0c796c2955552b");
}

#[test]
fn a_record_hashes_its_exact_canonical_body() {
    let data = json!({"b": 1, "a": {"d": 2.5, "c": [3, {"f": "x\"y", "e": null}]}});
    assert_eq!(
        canonical_json(&data),
        r#"{"a":{"c":[3,{"e":null,"f":"x\"y"}],"d":2.5},"b":1}"#
    );
    let (line, hash) = encode(7, "2026-03-24T10:15:02.123Z", GENESIS, Kind::Alert, &data);
    assert!(line.starts_with(r#"{"seq":7,"time":"2026-03-24T10:15:02.123Z","prev":"000"#));
    assert!(line.ends_with(&format!(r#","hash":"{hash}"}}"#)));
    let parsed = parse_line(line.as_bytes()).unwrap();
    assert!(parsed.hash_ok);
    assert_eq!(parsed.record.seq, 7);
    assert_eq!(parsed.record.data, data);
    // Any byte changed, even only reformatting, breaks the hash.
    assert!(
        !parse_line(line.replace("2.5", "2.6").as_bytes())
            .unwrap()
            .hash_ok
    );
    assert!(
        !parse_line(line.replace(r#""seq":7"#, r#""seq": 7"#).as_bytes())
            .unwrap()
            .hash_ok
    );
    assert!(parse_line(b"{\"seq\":1}").is_err());
}

#[test]
fn an_intact_log_verifies_with_and_without_the_key() {
    let s = sample("intact", Some(key()));
    assert_eq!(s.lines.len(), 52);
    assert_eq!(s.head.seq, 51);
    let report = check(&s.lines, Some(s.head.clone()), Some(&key()));
    assert!(report.intact(), "{:#?}", report.problems);
    assert_eq!(report.records, 52);
    assert_eq!(report.checkpoints_verified, 6);
    assert_eq!(report.last, Some((51, s.head.hash.clone())));

    let report = check(&s.lines, Some(s.head.clone()), None);
    assert!(report.intact());
    assert_eq!(report.checkpoints_unchecked, 6);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("6 checkpoints not checked"))
    );

    let plain = sample("intact-plain", None);
    assert_eq!(plain.lines.len(), 46);
    assert!(check(&plain.lines, Some(plain.head.clone()), None).intact());
    // The records carry what the writer was given, kinds and all.
    let kinds: Vec<Kind> = plain.lines.iter().map(|l| record(l).kind).collect();
    assert_eq!(kinds[0], Kind::Start);
    assert_eq!(
        kinds[1..5],
        [Kind::Process, Kind::Decision, Kind::Hook, Kind::Alert]
    );
    assert_eq!(kinds[45], Kind::Stop);
}

#[test]
fn an_edited_field_is_found_on_its_line() {
    let s = sample("edit", Some(key()));
    let mut lines = s.lines.clone();
    let i = 20;
    assert!(lines[i].contains(r#""pid":50"#), "{}", lines[i]);
    lines[i] = lines[i].replacen(r#""pid":50"#, r#""pid":60"#, 1);
    let report = check(&lines, Some(s.head.clone()), Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Edited);
    assert_eq!(p.line, Some(21));
    assert_eq!(p.message, "line 21 (seq 20): hash mismatch — record edited");
}

#[test]
fn a_deleted_record_is_counted_and_located() {
    let s = sample("delete", Some(key()));
    let mut lines = s.lines.clone();
    lines.remove(25);
    let report = check(&lines, Some(s.head.clone()), Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Deleted);
    assert_eq!(p.line, Some(26));
    assert_eq!(
        p.message,
        "seq jumps from 24 to 26 at line 26 — 1 record deleted"
    );

    lines.drain(30..32);
    let report = check(&lines, Some(s.head.clone()), None);
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
    assert_eq!(
        report.problems[1].message,
        "seq jumps from 30 to 33 at line 31 — 2 records deleted"
    );

    // The first records gone.
    let report = check(&s.lines[3..], Some(s.head.clone()), None);
    assert_eq!(
        only_problem(&report).message,
        "line 1: the log starts at seq 3 — 3 earlier records deleted, or the start of the file \
         was cut"
    );
}

#[test]
fn swapped_records_are_reordered_not_deleted() {
    let s = sample("swap", Some(key()));
    let mut lines = s.lines.clone();
    lines.swap(30, 31);
    let report = check(&lines, Some(s.head.clone()), Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Reordered);
    assert_eq!(p.line, Some(31));
    assert_eq!(
        p.message,
        "lines 31–33: records out of order (seq 31, 30, 32) — reordered"
    );

    // Far apart: two places, nothing deleted.
    let mut lines = s.lines.clone();
    lines.swap(10, 40);
    let report = check(&lines, Some(s.head.clone()), None);
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::Reordered)
    );
    assert_eq!(report.problems[0].line, Some(11));
    assert_eq!(report.problems[1].line, Some(41));
}

#[test]
fn a_cut_tail_is_truncation_against_the_head_file() {
    let s = sample("truncate", Some(key()));
    let lines = &s.lines[..47];
    let report = check(lines, Some(s.head.clone()), Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.line, None);
    assert_eq!(
        p.message,
        "file ends at seq 46 but the head file records seq 51 — truncated (5 records lost)"
    );
    // Without the head file a clean cut cannot be seen.
    assert!(check(lines, None, None).intact());
}

#[test]
fn a_torn_last_line_is_named() {
    let s = sample("torn", None);
    let mut bytes = fs::read(&s.path).unwrap();
    let partial = s.lines[5].as_bytes()[..40].to_vec();
    bytes.extend_from_slice(&partial);
    let report = check_bytes(&bytes, Some(s.head.clone()), None);
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Torn);
    assert_eq!(p.line, Some(47));
    assert!(
        p.message
            .starts_with("line 47: torn last line (40 bytes, no newline)"),
        "{}",
        p.message
    );

    // A line in the middle that is not a record is not a torn write.
    let mut lines = s.lines.clone();
    lines.insert(9, "{\"seq\":".to_owned());
    let report = check(&lines, None, None);
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::NotARecord);
    assert_eq!(p.line, Some(10));
    assert!(p.message.starts_with("line 10: not a pthwatch record ("));
}

#[test]
fn a_crash_mid_write_is_acknowledged_when_pthwatch_restarts() {
    let dir = Scratch::new("crash");
    let path = dir.file("events.jsonl");
    write_sample(&path, Some(key()));
    let torn = lines_of(&path)[7].as_bytes()[..40].to_vec();
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    drop(f);

    let mut log = EventLog::open(&path, options(Some(key()))).unwrap();
    assert_eq!(log.next_seq(), 54, "start (52) and checkpoint (53) written");
    assert_eq!(log.append(Kind::Decision, json!({"pid": 1})).unwrap(), 54);
    drop(log);

    let lines = lines_of(&path);
    assert_eq!(
        lines[52].as_bytes(),
        &torn[..],
        "the fragment stays, terminated"
    );
    let start = record(&lines[53]);
    assert_eq!(start.kind, Kind::Start);
    assert_eq!(start.seq, 52);
    assert_eq!(start.data["torn_tail"]["bytes"], 41);
    assert_eq!(start.data["resumed_after_seq"], 51);

    let head = read_head(&head_path(&path)).unwrap();
    let report = check(&lines, head, Some(&key()));
    assert!(report.intact(), "{:#?}", report.problems);
    assert!(
        report.notes.iter().any(|n| n.starts_with(
            "line 53: torn record of 41 bytes (pthwatch stopped mid-write), acknowledged by \
             the start record at line 54"
        )),
        "{:#?}",
        report.notes
    );

    // Swapping the fragment for other bytes is not acknowledged.
    let mut forged = lines.clone();
    forged[52] = "X".repeat(40);
    let report = check(&forged, None, Some(&key()));
    assert_eq!(only_problem(&report).kind, ProblemKind::NotARecord);
    assert_eq!(only_problem(&report).line, Some(53));
}

#[test]
fn a_bad_checkpoint_signature_is_found() {
    let s = sample("badsig", Some(key()));
    let mut lines = s.lines.clone();
    let last = lines.len() - 1;
    let mut cp = record(&lines[last]);
    assert_eq!(cp.kind, Kind::Checkpoint);
    cp.data["mac"] = Value::from("00".repeat(32));
    lines[last] = encode(cp.seq, &cp.time, &cp.prev, cp.kind, &cp.data).0;
    let report = check(&lines, None, Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::BadSignature);
    assert_eq!(p.line, Some(52));
    assert!(
        p.message.starts_with("checkpoint at seq 51: bad signature"),
        "{}",
        p.message
    );

    // Another key: every checkpoint and the head file say so.
    let other = CheckpointKey::from_bytes(b"another key of enough length!!");
    let report = check(&s.lines, Some(s.head.clone()), Some(&other));
    assert_eq!(report.problems[0].kind, ProblemKind::WrongKey);
    assert!(
        report.problems[0]
            .message
            .starts_with("checkpoint at seq 1 (line 2): signed with key ")
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.starts_with("head file: bad signature"))
    );
}

#[test]
fn a_forged_record_is_caught_by_seq_prev_or_checkpoint() {
    let s = sample("forge", Some(key()));
    let prev = record(&s.lines[20]);
    let (forged, _) = encode(
        prev.seq + 1,
        &prev.time,
        &prev.hash,
        Kind::Decision,
        &json!({"pid": 1, "action": "allowed"}),
    );

    // Inserted with a correct hash and prev: its seq is then used twice.
    let mut lines = s.lines.clone();
    lines.insert(21, forged.clone());
    let report = check(&lines, Some(s.head.clone()), None);
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Duplicated);
    assert_eq!(p.line, Some(23));
    assert_eq!(
        p.message,
        "line 23 (seq 21): seq 21 appears a second time (first at line 22) — a record was \
         inserted or duplicated"
    );

    // Replacing a record keeps the seqs but breaks the next link.
    let mut lines = s.lines.clone();
    lines[21] = forged.clone();
    let report = check(&lines, Some(s.head.clone()), None);
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Spliced);
    assert!(
        p.message
            .starts_with("line 23: prev does not match line 22 — reordered or spliced")
    );

    // Inserted, then every later record rewritten: self-consistent. Only the key (and the
    // head file) can tell.
    let mut lines = s.lines.clone();
    lines.insert(21, forged);
    rechain(&mut lines, 22);
    assert!(
        check(&lines, None, None).intact(),
        "the documented limit of a keyless chain"
    );
    let report = check(&lines, None, Some(&key()));
    assert!(!report.intact());
    // One record too many before the next checkpoint, which no longer verifies.
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds[..2],
        [ProblemKind::MissingCheckpoints, ProblemKind::BadSignature]
    );
    assert_eq!(report.problems[0].line, Some(24));
    assert!(
        report.problems[1]
            .message
            .starts_with("checkpoint at seq 24: bad signature (line 25)")
    );
    let report = check(&lines, Some(s.head.clone()), None);
    assert_eq!(only_problem(&report).kind, ProblemKind::HeadMismatch);
    assert_eq!(only_problem(&report).line, Some(52));
}

#[test]
fn checkpoints_stripped_by_someone_without_the_key_are_noticed() {
    let s = sample("strip", Some(key()));
    // All of them: nothing is signed any more.
    let mut lines: Vec<String> = s
        .lines
        .iter()
        .filter(|l| record(l).kind != Kind::Checkpoint)
        .cloned()
        .collect();
    rechain(&mut lines, 0);
    let report = check(&lines, None, Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::MissingCheckpoints);
    assert!(
        p.message
            .starts_with("no checkpoint signed with this key in 46 records")
    );

    // All but the first: the first promised one every 10 records.
    let mut lines: Vec<String> = s
        .lines
        .iter()
        .enumerate()
        .filter(|(i, l)| *i == 1 || record(l).kind != Kind::Checkpoint)
        .map(|(_, l)| l.clone())
        .collect();
    rechain(&mut lines, 2);
    let report = check(&lines, None, Some(&key()));
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::MissingCheckpoints);
    assert_eq!(p.line, Some(13));
    assert!(
        p.message
            .starts_with("line 13 (seq 12): 11 records since the checkpoint at seq 1"),
        "{}",
        p.message
    );
}

#[test]
fn a_restart_continues_the_chain() {
    let dir = Scratch::new("restart");
    let path = dir.file("state/events.jsonl");
    let mut log = EventLog::open(&path, EventLogOptions::default()).unwrap();
    assert_eq!(
        log.append(Kind::Hook, json!({"path": "/a.pth"})).unwrap(),
        1
    );
    assert_eq!(log.append(Kind::Decision, json!({"pid": 2})).unwrap(), 2);
    drop(log);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut log = EventLog::open(&path, EventLogOptions::default()).unwrap();
    assert_eq!(log.next_seq(), 4, "seq 3 is the new start record");
    assert_eq!(log.append(Kind::Alert, json!({"id": "x"})).unwrap(), 4);
    log.close().unwrap();

    let lines = lines_of(&path);
    let seqs: Vec<u64> = lines.iter().map(|l| record(l).seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    let restart = record(&lines[3]);
    assert_eq!(restart.kind, Kind::Start);
    assert_eq!(restart.data["resumed_after_seq"], 2);
    assert_eq!(record(&lines[5]).kind, Kind::Stop);
    let head = read_head(&head_path(&path)).unwrap().unwrap();
    assert_eq!(head.seq, 5);
    let report = check(&lines, Some(head), None);
    assert!(report.intact(), "{:#?}", report.problems);
}

#[test]
fn a_log_cut_while_pthwatch_was_down_is_recorded_when_it_restarts() {
    let dir = Scratch::new("cut-down");
    let path = dir.file("events.jsonl");
    let mut log = EventLog::open(&path, options(None)).unwrap();
    for pid in 0..5 {
        log.append(Kind::Decision, json!({ "pid": pid })).unwrap();
    }
    drop(log);
    let lines = lines_of(&path);
    fs::write(&path, format!("{}\n", lines[..4].join("\n"))).unwrap();

    drop(EventLog::open(&path, options(None)).unwrap());
    let lines = lines_of(&path);
    let start = record(&lines[4]);
    assert_eq!(start.data["head_mismatch"]["head_seq"], 5);
    let head = read_head(&head_path(&path)).unwrap();
    let report = check(&lines, head, None);
    let p = only_problem(&report);
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.line, Some(5));
    assert_eq!(
        p.message,
        "line 5 (seq 4): when pthwatch restarted, the log ended at seq 3 but the head file \
         recorded seq 5 — truncated while pthwatch was down"
    );
}

#[test]
fn one_writer_at_a_time_and_reserved_kinds() {
    let dir = Scratch::new("lock");
    let path = dir.file("events.jsonl");
    let mut log = EventLog::open(&path, options(None)).unwrap();
    assert!(matches!(
        EventLog::open(&path, options(None)),
        Err(LogError::Locked(_))
    ));
    assert!(matches!(
        log.append(Kind::Checkpoint, json!({})),
        Err(LogError::ReservedKind(Kind::Checkpoint))
    ));
    let big = "x".repeat(MAX_LINE);
    assert!(matches!(
        log.append(Kind::Hook, json!({ "line": big })),
        Err(LogError::TooLarge(_))
    ));
    assert_eq!(log.append(Kind::Hook, json!({})).unwrap(), 1);

    fs::write(dir.file("not-a-log"), "{\"hello\": 1}\n{\"world\": 2}\n").unwrap();
    assert!(matches!(
        EventLog::open(&dir.file("not-a-log"), options(None)),
        Err(LogError::NoIntactRecord(_))
    ));
}

#[test]
fn key_files_must_be_private_and_long_enough() {
    let dir = Scratch::new("key");
    let path = dir.file("key");
    fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = CheckpointKey::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let k = CheckpointKey::load(&path).unwrap();
    assert_eq!(
        k.id(),
        CheckpointKey::from_bytes(b"0123456789abcdef0123456789abcdef").id(),
        "the trailing newline is not part of the key"
    );
    fs::write(&path, "short\n").unwrap();
    let err = CheckpointKey::load(&path).unwrap_err().to_string();
    assert!(err.contains("at least 16"), "{err}");
}

/// A hand-made log (valid chain) with chosen times, for queries and `show`.
fn chain(records: &[(Kind, &str, Value)]) -> String {
    let mut prev = GENESIS.to_owned();
    let mut out = String::new();
    for (seq, (kind, time, data)) in records.iter().enumerate() {
        let (line, hash) = encode(seq as u64, time, &prev, *kind, data);
        out.push_str(&line);
        out.push('\n');
        prev = hash;
    }
    out
}

fn incident_log() -> String {
    let mut other = alert(9, "hook_persistence", 5000, "/site/other.pth", SHA_OTHER);
    other["lineage"] = json!([{"pid": 5000, "exe": "/usr/bin/python3"},
                              {"pid": 4242, "exe": "/usr/bin/python3.12"}]);
    other["action"] = "alert".into();
    other["id"] = "b0b05eed000000000000000000000000".into();
    chain(&[
        (Kind::Start, "2026-03-24T09:00:00.000Z", json!({"pid": 300})),
        (
            Kind::Process,
            "2026-03-24T10:15:01.900Z",
            json!({"pid": 4250, "ppid": 4242, "exe": "/usr/bin/curl", "event": "exec",
                   "lineage_id": 77}),
        ),
        (
            Kind::Alert,
            "2026-03-24T10:15:02.123Z",
            alert(
                0,
                "hook_credential_exfiltration",
                4242,
                "/site/litellm_init.pth",
                SHA_LITELLM,
            ),
        ),
        (
            Kind::Decision,
            "2026-03-24T12:30:00.000Z",
            json!({"pid": 4250, "action": "blocked", "what": "connect", "lineage_id": 77,
                   "rule": "hook_credential_exfiltration",
                   "destination": {"address": "203.0.113.9", "port": 443, "protocol": "tcp"}}),
        ),
        (
            Kind::Process,
            "2026-03-24T12:31:00.000Z",
            json!({"pid": 4300, "ppid": 9999, "exe": "/bin/sh\u{1b}[2J", "event": "exec",
                   "lineage_id": 77}),
        ),
        (Kind::Alert, "2026-03-24T12:00:00.000Z", other),
        (
            Kind::Hook,
            "2026-03-24T13:00:00.000Z",
            json!({"path": "/site/litellm_init.pth", "sha256": SHA_LITELLM, "kind": "pth",
                   "class": "risky"}),
        ),
    ])
}

fn run_query(log: &str, filter: &QueryFilter) -> Vec<u64> {
    let mut seqs = Vec::new();
    query(Cursor::new(log), filter, |r| {
        seqs.push(r.seq);
        Ok(())
    })
    .unwrap();
    seqs
}

#[test]
fn queries_filter_by_time_pid_hook_rule_and_kind() {
    let log = incident_log();
    assert!(check_bytes(log.as_bytes(), None, None).intact());
    let all = run_query(&log, &QueryFilter::default());
    assert_eq!(all, [0, 1, 2, 3, 4, 5, 6]);

    let rule = QueryFilter {
        rule: Some("hook_credential_exfiltration".into()),
        ..QueryFilter::default()
    };
    assert_eq!(run_query(&log, &rule), [2, 3]);

    // The process itself, a child it forked, or an alert whose lineage passes through it.
    let pid = |p| QueryFilter {
        pid: Some(p),
        ..QueryFilter::default()
    };
    assert_eq!(run_query(&log, &pid(4242)), [2, 5]);
    assert_eq!(run_query(&log, &pid(4250)), [1, 3]);
    assert_eq!(run_query(&log, &pid(1)), [2]);

    let hook = |h: &str| QueryFilter {
        hook: Some(h.into()),
        ..QueryFilter::default()
    };
    assert_eq!(run_query(&log, &hook("litellm_init.pth")), [2, 6]);
    assert_eq!(run_query(&log, &hook("/site/litellm_init.pth")), [2, 6]);
    assert_eq!(run_query(&log, &hook("3F2A9C")), [2, 6]);
    assert_eq!(run_query(&log, &hook("9b0c")), [5]);
    assert_eq!(
        run_query(&log, &hook("3f2")),
        Vec::<u64>::new(),
        "too short a prefix"
    );

    let since = |s: &str, now: &str| QueryFilter {
        since_ms: Some(
            parse_since(s)
                .unwrap()
                .resolve(parse_rfc3339_ms(now).unwrap()),
        ),
        ..QueryFilter::default()
    };
    let now = "2026-03-24T13:30:00Z";
    assert_eq!(
        run_query(&log, &since("2026-03-24T12:00:00Z", now)),
        [3, 4, 5, 6]
    );
    assert_eq!(run_query(&log, &since("1h30m", now)), [3, 4, 5, 6]);
    assert_eq!(
        run_query(&log, &since("2026-03-24T12:30:00+03:00", now)),
        [1, 2, 3, 4, 5, 6]
    );

    let combined = QueryFilter {
        kinds: vec![Kind::Alert],
        hook: Some("litellm_init.pth".into()),
        pid: Some(4242),
        ..QueryFilter::default()
    };
    assert_eq!(run_query(&log, &combined), [2]);
}

#[test]
fn the_query_table_lines_up_and_json_round_trips() {
    let log = incident_log();
    let alert = record(log.lines().nth(2).unwrap());
    let row = table_row(&alert);
    let header = table_header();
    for (title, value) in [
        ("RULE", "hook_credential_exfiltration"),
        ("ACTION", "blocked"),
        ("DESTINATION", "203.0.113.9:443"),
        ("HOOK", "/site/litellm_init.pth"),
    ] {
        assert_eq!(
            header.find(title),
            row.find(value),
            "{title}\n{header}\n{row}"
        );
    }
    assert!(row.starts_with("2026-03-24T10:15:02.123Z  alert "));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[4..7], ["4242", "2", "203.0.113.9:443"]);
    // Control characters from a hostile executable name are escaped.
    let hostile = record(log.lines().nth(4).unwrap());
    assert!(render_incident(&alert, 1, &[hostile]).contains("/bin/sh\\u{1b}[2J"));
    // The container, its image and the pod, when the alert names them.
    let mut in_pod = alert.clone();
    in_pod.data["container"] = json!({
        "cgroup_id": 7, "container_id": "4f7e", "image": "registry.example.com/ci/python:3.12",
        "pod_uid": "0d1c2b3a-4e5f-4a6b-8c7d-9e8f7a6b5c4d", "pod_name": "runner-7f9c",
        "pod_namespace": "ci",
    });
    let text = render_incident(&in_pod, 1, &[]);
    assert!(
        text.contains("\n  container 4f7e (registry.example.com/ci/python:3.12)\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  pod       ci/runner-7f9c (uid 0d1c2b3a-4e5f-4a6b-8c7d-9e8f7a6b5c4d)\n"),
        "{text}"
    );

    let dir = Scratch::new("query-cli");
    let path = dir.file("events.jsonl");
    fs::write(&path, &log).unwrap();
    let args = cli::QueryArgs {
        file: path,
        since: None,
        pid: None,
        hook: Some("litellm_init.pth".into()),
        rule: None,
        kind: vec![],
        json: true,
    };
    let mut out = Vec::new();
    assert_eq!(cli::query_to(&args, &mut out, 0).unwrap(), 0);
    let out = String::from_utf8(out).unwrap();
    let records: Vec<Record> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The two records about the hook, and what the lineages that ran it did.
    assert_eq!(records.len(), 5, "{out}");
    assert!(records.contains(&alert));
    let lineage = alert.data["lineage_id"].as_u64().unwrap();
    for r in &records {
        assert!(
            query::hook_of(r).is_some() || r.data["lineage_id"].as_u64() == Some(lineage),
            "{r:?}"
        );
    }
}

#[test]
fn since_accepts_durations_and_rfc_3339() {
    assert_eq!(parse_since("2h"), Ok(Since::Ago(Duration::from_secs(7200))));
    assert_eq!(
        parse_since("1h30m"),
        Ok(Since::Ago(Duration::from_secs(5400)))
    );
    assert_eq!(
        parse_since("7d"),
        Ok(Since::Ago(Duration::from_secs(7 * 86_400)))
    );
    for ms in [0, 951_782_400_000, 1_774_347_302_123, 4_102_444_799_999] {
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(parse_rfc3339_ms(&crate::alert::rfc3339(t)), Some(ms as i64));
    }
    assert_eq!(
        parse_rfc3339_ms("2026-03-24T12:15:02+02:00"),
        parse_rfc3339_ms("2026-03-24T10:15:02Z")
    );
    assert_eq!(
        parse_rfc3339_ms("2026-03-24"),
        parse_rfc3339_ms("2026-03-24T00:00:00.000Z")
    );
    assert_eq!(
        parse_rfc3339_ms("2026-03-24T10:15:02.5Z"),
        Some(1_774_347_302_500)
    );
    for bad in [
        "",
        "yesterday",
        "2h5",
        "2026-13-01",
        "2026-02-30",
        "2026-03-24T25:00:00Z",
        "2026-03-24T10:15:02",
    ] {
        assert!(parse_since(bad).is_err(), "{bad}");
    }
}

#[test]
fn show_draws_the_incident_tree() {
    let log = incident_log();
    let found = find_alert(Cursor::new(&log), "a1e7").unwrap().unwrap();
    assert_eq!(found.alert.seq, 2);
    assert_eq!(found.reports, 1);
    assert!(matches!(
        find_alert(Cursor::new(&log), "ffff").unwrap(),
        Err(FindError::NotFound)
    ));
    let two = chain(&[
        (
            Kind::Alert,
            "2026-03-24T10:00:00Z",
            alert(1, "r", 1, "/a.pth", SHA_OTHER),
        ),
        (
            Kind::Alert,
            "2026-03-24T10:00:01Z",
            alert(2, "r", 1, "/a.pth", SHA_OTHER),
        ),
        (
            Kind::Alert,
            "2026-03-24T10:00:02Z",
            alert(2, "r", 1, "/a.pth", SHA_OTHER),
        ),
    ]);
    assert!(matches!(
        find_alert(Cursor::new(&two), "a1e7").unwrap(),
        Err(FindError::Ambiguous(ids)) if ids.len() == 2
    ));
    let again = find_alert(Cursor::new(&two), &format!("a1e7{:028x}", 2))
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.alert.seq, again.reports),
        (2, 2),
        "the last report of the incident"
    );

    let related = related_records(Cursor::new(&log), 77, found.alert.seq).unwrap();
    let kinds: Vec<Kind> = related.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::Process, Kind::Decision, Kind::Process]);
    let text = render_incident(&found.alert, found.reports, &related);

    let section = |title: &str| -> Vec<&str> {
        text.split("\n\n")
            .find(|s| s.starts_with(title))
            .unwrap_or_else(|| panic!("no section {title} in\n{text}"))
            .lines()
            .collect()
    };
    assert_eq!(
        text.lines().next().unwrap(),
        "Incident a1e70000000000000000000000000000: hook_credential_exfiltration (critical), \
         blocked"
    );
    assert_eq!(
        section("Process tree"),
        [
            "Process tree",
            "  1 /usr/lib/systemd/systemd",
            "  └─ 812 /usr/bin/bash",
            "     └─ 4242 /usr/bin/python3.12  ◀ acting process",
            "        │  cmdline: python3 -c pass",
            "        ├─ 4250 /usr/bin/curl",
            "        │     · exec /usr/bin/curl",
            "        │     ✗ blocked connect 203.0.113.9:443 (hook_credential_exfiltration)",
            "        └─ 4300 /bin/sh\\u{1b}[2J",
            "              · exec /bin/sh\\u{1b}[2J",
            "              (parent 9999 is not in the log)",
        ]
    );
    assert_eq!(
        section("Startup hook"),
        [
            "Startup hook",
            "  path      /site/litellm_init.pth",
            "  kind      pth, class risky",
            "  sha256    3f2a9c1b0d4e…",
            "  line 1    import os, base64; exec(base64.b64decode('aW1wb3J0'))",
            "  package   litellm==1.82.8",
            "  findings  base64 decode, exec",
        ]
    );
    assert_eq!(
        section("Credential reads"),
        [
            "Credential reads (2)",
            "  /root/.aws/credentials",
            "  /root/.ssh/id_rsa"
        ]
    );
    assert_eq!(
        section("Destination"),
        ["Destination", "  203.0.113.9:443 (tcp)"]
    );
    assert_eq!(
        section("Action"),
        [
            "Action",
            "  blocked: the kernel denied the lineage's network attempt"
        ]
    );
    assert_eq!(section("Related records (lineage 77)").len(), 4);
}

#[test]
fn verify_exits_0_intact_1_tampered_2_unreadable() {
    let s = sample("cli", Some(key()));
    let dir = Scratch::new("cli-key");
    let key_file = dir.file("key");
    fs::write(&key_file, "a test checkpoint key, 32 bytes.").unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    let args = |file: PathBuf| cli::VerifyArgs {
        file,
        head: Some(head_path(&s.path)),
        key: Some(key_file.clone()),
    };
    let mut out = Vec::new();
    assert_eq!(cli::verify_to(&args(s.path.clone()), &mut out).unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("intact\n"), "{text}");
    assert!(text.contains("52 records in 52 lines, 6 checkpoints verified"));
    assert!(text.contains(&format!("anchor: seq 51 hash {}", s.head.hash)));

    let tampered = dir.file("tampered.jsonl");
    let mut lines = s.lines.clone();
    lines.remove(10);
    fs::write(&tampered, format!("{}\n", lines.join("\n"))).unwrap();
    let mut out = Vec::new();
    assert_eq!(cli::verify_to(&args(tampered), &mut out).unwrap(), 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("seq jumps from 9 to 11 at line 11 — 1 record deleted\n"));
    assert!(text.ends_with("NOT INTACT: 1 problem(s)\n"), "{text}");

    let err = cli::verify_to(&args(dir.file("missing")), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }));

    // A damaged head file is damage, not an error.
    let head = dir.file("bad.head");
    fs::write(&head, "garbage").unwrap();
    let a = cli::VerifyArgs {
        head: Some(head),
        ..args(s.path.clone())
    };
    assert_eq!(cli::verify_to(&a, &mut Vec::new()).unwrap(), 1);
}

#[test]
fn the_log_subcommands_parse() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from([
        "pthwatch",
        "log",
        "query",
        "--since",
        "2h",
        "--pid",
        "42",
        "--hook",
        "x.pth",
        "--rule",
        "hook_persistence",
        "--kind",
        "alert",
        "--kind",
        "decision",
        "--json",
    ])
    .unwrap();
    let crate::cli::Command::Log(cli::LogArgs {
        command: cli::LogCommand::Query(q),
    }) = cli.command
    else {
        panic!("not log query");
    };
    assert_eq!(q.file, Path::new(DEFAULT_PATH));
    assert_eq!(q.since, Some(Since::Ago(Duration::from_secs(7200))));
    assert_eq!(q.kind, [Kind::Alert, Kind::Decision]);
    assert!(
        crate::cli::Cli::try_parse_from(["pthwatch", "log", "query", "--since", "soon"]).is_err()
    );
    assert!(
        crate::cli::Cli::try_parse_from(["pthwatch", "log", "show", "a1e7", "--file", "/x"])
            .is_ok()
    );
    assert!(crate::cli::Cli::try_parse_from(["pthwatch", "log", "verify", "--key", "/k"]).is_ok());
}

#[test]
fn alerts_are_synced_at_once_and_other_records_by_flush() {
    let dir = Scratch::new("sync");
    let path = dir.file("events.jsonl");
    let head_seq = || read_head(&head_path(&path)).unwrap().unwrap().seq;
    let opts = EventLogOptions {
        sync_interval: Duration::from_secs(3600),
        ..options(None)
    };
    let mut log = EventLog::open(&path, opts).unwrap();
    assert_eq!(log.path(), path);
    assert_eq!(head_seq(), 0, "the start record is synced");
    log.append(Kind::Decision, json!({"pid": 1})).unwrap();
    log.append(Kind::Process, json!({"pid": 1})).unwrap();
    assert_eq!(head_seq(), 0, "decisions wait for the next sync");
    assert_eq!(lines_of(&path).len(), 3, "but are written at once");
    log.append(Kind::Alert, json!({"id": "x"})).unwrap();
    assert_eq!(head_seq(), 3, "an alert is synced before append returns");
    log.append(Kind::Decision, json!({"pid": 2})).unwrap();
    log.flush().unwrap();
    assert_eq!(head_seq(), 4);

    // With a key and a checkpoint interval that has passed, flush signs the chain.
    drop(log);
    let opts = EventLogOptions {
        checkpoint_interval: Duration::ZERO,
        sync_interval: Duration::from_secs(3600),
        ..options(Some(key()))
    };
    let mut log = EventLog::open(&path, opts).unwrap();
    let before = log.next_seq();
    log.flush().unwrap();
    assert_eq!(
        log.next_seq(),
        before,
        "nothing to sign since the last checkpoint"
    );
    log.append(Kind::Decision, json!({"pid": 3})).unwrap();
    assert_eq!(log.next_seq(), before + 2, "the record and its checkpoint");
    drop(log);
    let lines = lines_of(&path);
    assert_eq!(record(lines.last().unwrap()).kind, Kind::Checkpoint);
    let head = read_head(&head_path(&path)).unwrap();
    let report = check(&lines, head, Some(&key()));
    // The first session ran without the key: its records are not signed, but the key's
    // checkpoints that follow do verify.
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.checkpoints_verified, 2);
}
