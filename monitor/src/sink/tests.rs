//! Pure logic of the sinks: HMAC, signature, spool, rotation, payloads, HTTP answers.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::Duration,
};

use super::{
    Sinks,
    backoff::Backoff,
    file::RotatingFile,
    http::{self, AttemptError, Client, Endpoint, Verdict},
    payload, signature,
    spool::{Pushed, Spool, file_name},
};
use crate::{
    alert::{
        Action, Alert, ContainerRef, Destination, HookRef, LineageEntry, ProcessRef, Severity,
    },
    config::{self, WebhookFormat},
};

/// A fresh, empty directory for one test.
pub(super) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pthwatch-sink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub(super) fn sample_alert(id: &str, severity: Severity) -> Alert {
    Alert {
        id: id.to_owned(),
        time: "2026-03-24T10:00:00.123Z".into(),
        rule: "hook_credential_exfiltration",
        severity,
        action: Action::Blocked,
        summary: "litellm_init.pth read ~/.aws/credentials and connected to 203.0.113.7:443".into(),
        host: "build-3".into(),
        process: ProcessRef {
            pid: 4242,
            ppid: 4200,
            uid: 1000,
            exe: "/usr/bin/python3.11".into(),
            cmdline: vec!["python3".into(), "-c".into(), "import x".into()],
        },
        lineage: vec![
            LineageEntry {
                pid: 4242,
                exe: "/usr/bin/python3.11".into(),
            },
            LineageEntry {
                pid: 1,
                exe: "/sbin/init".into(),
            },
        ],
        startup_hook: Some(HookRef {
            kind: "pth".into(),
            path: "/usr/lib/python3/dist-packages/litellm_init.pth".into(),
            sha256: "ab".repeat(32),
            line: Some("import base64; exec(...)".into()),
            line_number: Some(1),
            distribution: Some("litellm==1.82.8".into()),
            class: "risky".into(),
            findings: vec!["exec of decoded data".into()],
            deferral: "exit",
        }),
        credentials: vec!["/home/dev/.aws/credentials".into()],
        destination: Some(Destination {
            address: "203.0.113.7".into(),
            port: 443,
            protocol: "tcp".into(),
        }),
        persistence: Vec::new(),
        container: ContainerRef {
            cgroup_id: 77,
            container_id: Some("c0ffee".into()),
            ..ContainerRef::default()
        },
        lineage_id: 9,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    let key4: Vec<u8> = (1..=25).collect();
    let big_key = [0xaa; 131];
    let cases: [(&[u8], &[u8], &str); 6] = [
        (
            &[0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            &[0xaa; 20],
            &[0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            &key4,
            &[0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            &big_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            &big_key,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (key, data, want) in cases {
        assert_eq!(signature::hmac_sha256(key, &[data]).to_vec(), unhex(want));
        // Split input gives the same MAC as one piece.
        let (a, b) = data.split_at(data.len() / 2);
        assert_eq!(
            signature::hmac_sha256(key, &[a, b]),
            signature::hmac_sha256(key, &[data])
        );
    }
    // Test case 5: output truncated to 128 bits.
    let mac = signature::hmac_sha256(&[0x0c; 20], &[b"Test With Truncation"]);
    assert_eq!(
        mac[..16].to_vec(),
        unhex("a3b6167473100ee06e0c796c2955552b")
    );
}

#[test]
fn the_signature_covers_timestamp_and_body() {
    let secret = b"s3cret";
    let body = br#"{"id":"a1"}"#;
    let h = signature::header(secret, 1_774_350_000, body);
    let mac = signature::hmac_sha256(secret, &[b"1774350000.{\"id\":\"a1\"}"]);
    assert_eq!(
        h,
        format!("t=1774350000,v1={}", signature::hex(&mac)),
        "t=<unix>,v1=<hex hmac(secret, \"<t>.<body>\")>"
    );
    assert!(signature::verify(secret, &h, body, 1_774_350_100, 300));
    // Replayed later, another body, another key, another time in the header: refused.
    assert!(!signature::verify(
        secret,
        &h,
        body,
        1_774_350_000 + 301,
        300
    ));
    assert!(!signature::verify(
        secret,
        &h,
        br#"{"id":"a2"}"#,
        1_774_350_000,
        300
    ));
    assert!(!signature::verify(b"other", &h, body, 1_774_350_000, 300));
    let moved = h.replace("t=1774350000", "t=1774350001");
    assert!(!signature::verify(secret, &moved, body, 1_774_350_000, 300));
    assert!(!signature::verify(secret, "v1=00", body, 0, 300));
}

#[test]
fn the_spool_delivers_oldest_first_and_survives_a_reopen() {
    let dir = scratch("spool-order");
    let mut s = Spool::open(&dir, 1 << 20).expect("open");
    for i in 0..5 {
        let r = s.push(&format!("id{i}"), format!("body{i}").as_bytes());
        assert_eq!(r.expect("push"), Pushed::Stored(i + 1));
    }
    let head = s.head().expect("head").expect("some");
    assert_eq!(
        (head.seq, head.id.as_str(), head.body.as_slice()),
        (1, "id0", &b"body0"[..])
    );
    s.remove(1).expect("remove");
    drop(s);

    // A restart: the same four, in the same order, and numbering goes on after them.
    let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
    assert_eq!(s.len(), 4);
    assert_eq!(s.push("id5", b"body5").expect("push"), Pushed::Stored(6));
    let mut seen = Vec::new();
    while let Some(e) = s.head().expect("head") {
        seen.push(e.id.clone());
        s.remove(e.seq).expect("remove");
    }
    assert_eq!(seen, ["id1", "id2", "id3", "id4", "id5"]);
    assert_eq!(s.bytes(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_spool_refuses_the_newest_alert() {
    let dir = scratch("spool-full");
    // Each entry is "idN\n" + 96 bytes = 100 bytes; 350 bytes hold three.
    let mut s = Spool::open(&dir, 350).expect("open");
    let body = [b'x'; 96];
    let results: Vec<_> = (0..5)
        .map(|i| s.push(&format!("id{i}"), &body).expect("push"))
        .collect();
    assert_eq!(
        results,
        [
            Pushed::Stored(1),
            Pushed::Stored(2),
            Pushed::Stored(3),
            Pushed::Full,
            Pushed::Full
        ]
    );
    assert_eq!((s.len(), s.bytes()), (3, 300));
    // Room again once the oldest is delivered; the order still holds.
    s.remove(1).expect("remove");
    assert_eq!(s.push("id5", &body).expect("push"), Pushed::Stored(4));
    drop(s);
    let s = Spool::open(&dir, 350).expect("reopen");
    assert_eq!(s.bytes(), 300, "the bound counts what was on disk before");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_writes_are_removed_and_other_files_left_alone_on_reopen() {
    let dir = scratch("spool-torn");
    let mut s = Spool::open(&dir, 1 << 20).expect("open");
    s.push("id0", b"{}").expect("push");
    drop(s);
    // What a crash in the middle of a push leaves, and files that are not the spool's.
    std::fs::write(dir.join(".tmp-999-2"), b"id1\n{\"trunc").expect("tmp");
    std::fs::write(dir.join("README"), b"not an alert").expect("other");
    std::fs::write(dir.join("123.alert"), b"short name").expect("other");
    let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
    assert_eq!(s.len(), 1);
    assert!(!dir.join(".tmp-999-2").exists(), "torn file removed");
    assert!(dir.join("README").exists());
    assert_eq!(s.push("id1", b"{}").expect("push"), Pushed::Stored(2));
    // A complete file without the id line is reported as damaged, not sent.
    std::fs::write(dir.join(file_name(1)), b"garbage").expect("damage");
    assert!(matches!(
        s.head(),
        Err(super::spool::SpoolError::Damaged { seq: 1, .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_memory_spool_is_bounded_too() {
    let mut s = Spool::in_memory(20);
    assert_eq!(s.push("a", b"0123456789").expect("push"), Pushed::Stored(1));
    assert_eq!(s.push("b", b"0123456789").expect("push"), Pushed::Full);
    assert_eq!(s.head().expect("head").expect("some").body, b"0123456789");
    assert!(s.dir().is_none());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_file_rotates_before_a_line_would_overflow_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch("rotate");
    let path = dir.join("alerts.jsonl");
    let mut f = RotatingFile::open(&path, 25, 2).expect("open");
    for i in 0..7 {
        f.write_line(format!("line-{i}-padding\n").as_bytes())
            .expect("write");
    }
    // 16-byte lines, 25-byte files: one line per file, two rotated files kept.
    assert_eq!(read(&path), "line-6-padding\n");
    assert_eq!(read(&dir.join("alerts.jsonl.1")), "line-5-padding\n");
    assert_eq!(read(&dir.join("alerts.jsonl.2")), "line-4-padding\n");
    assert!(!dir.join("alerts.jsonl.3").exists());
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // An existing file's size counts; max_bytes 0 never rotates.
    drop(f);
    let mut f = RotatingFile::open(&path, 0, 2).expect("reopen");
    f.write_line(b"more\n").expect("write");
    assert_eq!(read(&path), "line-6-padding\nmore\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_sink_takes_the_severities_it_asked_for() {
    let dir = scratch("fanout");
    let file = |name: &str, min_severity| {
        config::Sink::File(config::FileSink {
            min_severity,
            path: dir.join(name),
            max_bytes: 0,
            keep: 1,
        })
    };
    let mut sinks = Sinks::from_config(&[
        file("all.jsonl", Severity::Info),
        file("high.jsonl", Severity::High),
    ])
    .expect("sinks");
    assert!(sinks.emit(&sample_alert("m1", Severity::Medium)));
    assert!(sinks.emit(&sample_alert("c1", Severity::Critical)));
    let ids = |name: &str| -> Vec<String> {
        read(&dir.join(name))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["id"].as_str().expect("id").to_owned()
            })
            .collect()
    };
    assert_eq!(ids("all.jsonl"), ["m1", "c1"]);
    assert_eq!(ids("high.jsonl"), ["c1"]);
    let stats = sinks.shutdown(std::time::Instant::now());
    assert_eq!((stats.delivered, stats.write_errors), (3, 0));
    assert!(stats.pairs().contains(&("delivered", 3)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_webhooks_cannot_share_a_spool() {
    let dir = scratch("shared-spool");
    let hook = |url: &str| {
        config::Sink::Webhook(config::WebhookSink {
            min_severity: Severity::Info,
            url: url.into(),
            format: WebhookFormat::Pthwatch,
            secret_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            headers: Default::default(),
            timeout_ms: 1000,
            retry_max_ms: 1000,
            spool_dir: dir.clone(),
            spool_max_bytes: 1 << 20,
        })
    };
    let err = Sinks::from_config(&[hook("http://127.0.0.1:9/a"), hook("http://127.0.0.1:9/b")])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("give each its own"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn falcosidekick_form_maps_priority_and_flattens_fields() {
    let a = sample_alert("a1", Severity::Critical);
    let v = payload::falcosidekick(&a);
    assert_eq!(v["output"], a.summary.as_str());
    assert_eq!(v["priority"], "Critical");
    assert_eq!(v["rule"], "hook_credential_exfiltration");
    assert_eq!(v["time"], "2026-03-24T10:00:00.123Z");
    assert_eq!(v["source"], "pthwatch");
    assert_eq!(v["hostname"], "build-3");
    assert_eq!(
        v["tags"],
        serde_json::json!(["pthwatch", "hook_credential_exfiltration", "blocked"])
    );
    let f = &v["output_fields"];
    assert_eq!(f["proc.pid"], 4242);
    assert_eq!(f["proc.cmdline"], "python3 -c import x");
    assert_eq!(f["proc.exepath"], "/usr/bin/python3.11");
    assert_eq!(
        f["pth.path"],
        "/usr/lib/python3/dist-packages/litellm_init.pth"
    );
    assert_eq!(f["pth.sha256"], "ab".repeat(32));
    assert_eq!(f["pth.distribution"], "litellm==1.82.8");
    assert_eq!(f["dest.address"], "203.0.113.7");
    assert_eq!(f["dest.port"], 443);
    assert_eq!(
        f["cred.files"],
        serde_json::json!(["/home/dev/.aws/credentials"])
    );
    assert_eq!(f["container.id"], "c0ffee");
    assert_eq!(f["pthwatch.alert_id"], "a1");
    assert!(f.get("k8s.pod.uid").is_none(), "absent facts are left out");
    assert!(f.get("container.image").is_none());
    assert!(f.get("k8s.ns.name").is_none());
    let names = [
        (Severity::Critical, "Critical"),
        (Severity::High, "Error"),
        (Severity::Medium, "Warning"),
        (Severity::Low, "Notice"),
        (Severity::Info, "Informational"),
    ];
    for (s, p) in names {
        assert_eq!(payload::priority(s), p);
    }
    // The pthwatch format is the alert object itself.
    let body = payload::body(WebhookFormat::Pthwatch, &a).expect("body");
    assert_eq!(body, serde_json::to_vec(&a).expect("json"));
}

#[test]
fn falcosidekick_form_names_the_image_pod_and_namespace_as_falco_does() {
    let mut a = sample_alert("a2", Severity::High);
    a.container.pod_uid = Some("0d1c2b3a-4e5f-4a6b-8c7d-000000001234".into());
    a.container.image = Some("registry.example.com:5000/ci/python:3.12@sha256:00ff".into());
    a.container.pod_name = Some("runner-7f9c".into());
    a.container.pod_namespace = Some("ci".into());
    let v = payload::falcosidekick(&a);
    let f = &v["output_fields"];
    assert_eq!(
        f["container.image"],
        "registry.example.com:5000/ci/python:3.12@sha256:00ff"
    );
    assert_eq!(
        f["container.image.repository"],
        "registry.example.com:5000/ci/python"
    );
    assert_eq!(f["container.image.tag"], "3.12");
    assert_eq!(f["k8s.ns.name"], "ci");
    assert_eq!(f["k8s.pod.name"], "runner-7f9c");
    assert_eq!(f["k8s.pod.uid"], "0d1c2b3a-4e5f-4a6b-8c7d-000000001234");
    for (image, repo, tag) in [
        ("python", "python", None),
        ("python:3.12", "python", Some("3.12")),
        ("localhost:5000/app", "localhost:5000/app", None),
        (
            "docker.io/library/python@sha256:ab",
            "docker.io/library/python",
            None,
        ),
    ] {
        assert_eq!(payload::split_image(image), (repo, tag), "{image}");
    }
}

#[test]
fn urls_become_endpoints() {
    let e = Endpoint::parse("https://alerts.example.com/pthwatch?x=1#frag").expect("url");
    assert_eq!(
        (
            e.https,
            e.host.as_str(),
            e.port,
            e.target.as_str(),
            e.authority.as_str()
        ),
        (
            true,
            "alerts.example.com",
            443,
            "/pthwatch?x=1",
            "alerts.example.com"
        )
    );
    let e = Endpoint::parse("http://[::1]:8080").expect("url");
    assert_eq!(
        (e.host.as_str(), e.port, e.target.as_str()),
        ("::1", 8080, "/")
    );
    assert_eq!(e.authority, "[::1]:8080");
    assert!(Endpoint::parse("ftp://x/").is_err());
    assert!(Endpoint::parse("http://x:0/").is_err());
}

#[test]
fn answers_decide_delivered_permanent_or_retry() {
    for (status, v) in [
        (200, Verdict::Delivered),
        (204, Verdict::Delivered),
        (301, Verdict::Retry),
        (400, Verdict::Permanent),
        (401, Verdict::Permanent),
        (404, Verdict::Permanent),
        (408, Verdict::Retry),
        (429, Verdict::Retry),
        (500, Verdict::Retry),
        (503, Verdict::Retry),
    ] {
        assert_eq!(http::verdict(status), v, "{status}");
    }
}

#[test]
fn backoff_doubles_up_to_the_ceiling_with_jitter() {
    let mut b = Backoff::new(Duration::from_secs(4));
    let mut ceilings = Vec::new();
    for _ in 0..6 {
        let cap = b.ceiling();
        ceilings.push(cap.as_millis());
        let d = b.next_delay(None);
        assert!(d <= cap, "{d:?} > {cap:?}");
    }
    assert_eq!(ceilings, [500, 1000, 2000, 4000, 4000, 4000]);
    // Retry-After raises the delay, never past the maximum.
    let d = b.next_delay(Some(Duration::from_secs(3)));
    assert!(
        (Duration::from_secs(3)..=Duration::from_secs(4)).contains(&d),
        "{d:?}"
    );
    assert_eq!(
        b.next_delay(Some(Duration::from_secs(60))),
        Duration::from_secs(4)
    );
    b.reset();
    assert_eq!(b.ceiling(), Duration::from_millis(500));
    // Jitter spreads: not every delay is the same.
    let mut b = Backoff::new(Duration::from_secs(1000));
    let delays: Vec<_> = (0..8)
        .map(|_| {
            b.reset();
            b.next_delay(None)
        })
        .collect();
    assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
}

/// Answers one connection with `answer` (after reading the request) and hands the
/// request back.
fn one_shot(answer: &'static [u8], delay: Duration) -> (u16, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then Content-Length bytes of body.
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
            if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if req.len() >= end + 4 + len {
                    break;
                }
            }
        }
        thread::sleep(delay);
        let _ = s.write_all(answer);
        req
    });
    (port, handle)
}

fn client(port: u16, timeout: Duration) -> Client {
    Client {
        endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}/hook?k=v")).expect("url"),
        tls: None,
        timeout,
        headers: vec![("Authorization".into(), "Bearer t0ken".into())],
    }
}

fn post(answer: &'static [u8], delay: Duration) -> (Result<http::Response, AttemptError>, String) {
    let (port, server) = one_shot(answer, delay);
    let inflight = Mutex::new(None);
    let r = client(port, Duration::from_millis(700)).post(
        &[("X-Pthwatch-Delivery", "a1")],
        br#"{"id":"a1"}"#,
        &inflight,
    );
    assert!(inflight.lock().expect("lock").is_none(), "socket released");
    let req = String::from_utf8(server.join().expect("server")).expect("utf8");
    (r, req)
}

#[test]
fn a_post_is_well_formed_http_1_1() {
    let (r, req) = post(b"HTTP/1.1 204 No Content\r\n\r\n", Duration::ZERO);
    assert_eq!(r.expect("answer").status, 204);
    let (head, body) = req.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST /hook?k=v HTTP/1.1"));
    let lines: Vec<_> = lines.collect();
    for want in [
        "Content-Type: application/json",
        "Content-Length: 11",
        "Connection: close",
        "X-Pthwatch-Delivery: a1",
        "Authorization: Bearer t0ken",
    ] {
        assert!(lines.contains(&want), "{want} missing from {lines:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("Host: 127.0.0.1:")));
    assert_eq!(body, r#"{"id":"a1"}"#);
}

#[test]
fn error_answers_keep_status_retry_after_and_body() {
    let (r, _) = post(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\nbad json!!!!",
        Duration::ZERO,
    );
    let r = r.expect("answer");
    assert_eq!((r.status, r.snippet.as_str()), (400, "bad json!!!!"));
    let (r, _) = post(
        b"HTTP/1.0 503 Service Unavailable\r\nretry-after: 7\r\nContent-Length: 0\r\n\r\n",
        Duration::ZERO,
    );
    let r = r.expect("answer");
    assert_eq!(
        (r.status, r.retry_after),
        (503, Some(Duration::from_secs(7)))
    );
    // An interim 100 Continue is skipped.
    let (r, _) = post(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n\r\n",
        Duration::ZERO,
    );
    assert_eq!(r.expect("answer").status, 202);
}

#[test]
fn garbage_silence_and_hangups_are_attempt_errors() {
    let (r, _) = post(b"SSH-2.0-OpenSSH_9.2\r\n", Duration::ZERO);
    assert!(matches!(r, Err(AttemptError::Malformed(_))), "{r:?}");
    let (r, _) = post(b"HTTP/1.1 2000 OK\r\n\r\n", Duration::ZERO);
    assert!(matches!(r, Err(AttemptError::Malformed(_))), "{r:?}");
    let (r, _) = post(b"", Duration::ZERO);
    assert!(matches!(r, Err(AttemptError::Closed)), "{r:?}");
    let (r, _) = post(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_millis(1500));
    assert!(matches!(r, Err(AttemptError::Timeout)), "{r:?}");
    // Nobody listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r = client(port, Duration::from_millis(500)).post(&[], b"{}", &Mutex::new(None));
    assert!(matches!(r, Err(AttemptError::Connect(..))), "{r:?}");
}

#[test]
fn latency_buckets_are_inclusive_upper_bounds_and_add_up() {
    use super::{LATENCY_BOUNDS_MICROS, Latency, SinkStats};
    let mut l = Latency::default();
    // On a bound, just past it, below every bound, past every bound.
    for micros in [5_000, 5_001, 1, 60_000_000] {
        l.record(micros);
    }
    assert_eq!(l.counts[0], 2);
    assert_eq!(l.counts[1], 1);
    assert_eq!(l.counts[LATENCY_BOUNDS_MICROS.len()], 1);
    assert_eq!(l.count(), 4);
    assert_eq!(l.sum_micros, 5_000 + 5_001 + 1 + 60_000_000);
    let cumulative: Vec<(Option<u64>, u64)> = l.cumulative().collect();
    assert_eq!(cumulative.len(), LATENCY_BOUNDS_MICROS.len() + 1);
    assert_eq!(cumulative[0], (Some(5_000), 2));
    assert_eq!(cumulative[1], (Some(10_000), 3));
    assert_eq!(cumulative.last(), Some(&(None, 4)));
    assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));

    // Summed over sinks, bucket by bucket.
    let one = SinkStats {
        failed: 1,
        latency: l,
        ..SinkStats::default()
    };
    let mut total = SinkStats::default();
    total.add(&one);
    total.add(&one);
    assert_eq!(total.failed, 2);
    assert_eq!(total.latency.count(), 8);
    assert_eq!(total.latency.counts[0], 4);
    assert_eq!(total.latency.sum_micros, 2 * l.sum_micros);
}
