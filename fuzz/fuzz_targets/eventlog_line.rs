//! The event-log line parser (`pthwatch log verify|query|show` read every line with it)
//! on arbitrary bytes.
//!
//! Properties: nothing panics; a line that parses, written again with the log's encoder,
//! parses back to the same record with an intact hash; the encoder's output is canonical
//! (encoding the re-parsed record gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::eventlog_format::{encode, parse_line};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_line(data) else {
        return;
    };
    let r = &parsed.record;
    let (line, hash) = encode(r.seq, &r.time, &r.prev, r.kind, &r.data);
    assert!(!line.contains('\n'), "{line}");
    let again = parse_line(line.as_bytes()).expect("an encoded record parses");
    assert!(again.hash_ok, "{line}");
    assert_eq!(again.record.hash, hash);
    assert_eq!(again.record.seq, r.seq);
    assert_eq!(again.record.time, r.time);
    assert_eq!(again.record.prev, r.prev);
    assert_eq!(again.record.kind, r.kind);
    assert_eq!(again.record.data, r.data, "{line}");
    let a = &again.record;
    let (line2, _) = encode(a.seq, &a.time, &a.prev, a.kind, &a.data);
    assert_eq!(line, line2);
});
