//! Inputs the fuzz targets in `fuzz/` found, each kept as a test through the same public
//! API the target uses, next to the property it broke.

use crate::eventlog_format::{encode, parse_line};

/// `eventlog_line`: a number serde_json parsed one ulp off (its default, fast float
/// parsing), so a record read back encoded to different bytes, with another hash.
/// Fixed by serde_json's `float_roundtrip` feature.
#[test]
fn eventlog_numbers_round_trip_exactly() {
    for number in [
        "-233333333333300000000",
        "-2.3333333333330002e+20",
        "-2.333333333333e20",
        "1.5e3",
        "0.1",
        "5e-324",
        "1.7976931348623157e308",
    ] {
        let line = format!(
            r#"{{"seq":0,"time":"t","prev":"p","kind":"start","data":{{"n":{number}}},"hash":"h"}}"#
        );
        let r = parse_line(line.as_bytes()).unwrap().record;
        let (encoded, hash) = encode(r.seq, &r.time, &r.prev, r.kind, &r.data);
        let again = parse_line(encoded.as_bytes()).unwrap();
        assert!(again.hash_ok, "{encoded}");
        assert_eq!(again.record.hash, hash);
        assert_eq!(again.record.data, r.data, "{number} -> {encoded}");
        let (twice, _) = encode(0, "t", "p", again.record.kind, &again.record.data);
        assert_eq!(twice, encoded, "{number}");
    }
}
