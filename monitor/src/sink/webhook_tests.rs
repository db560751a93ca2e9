//! The webhook end to end against a receiver on 127.0.0.1: down, alerts, a daemon
//! restart (a second sink on the same spool), back up; refusals; a full spool; TLS with
//! a client certificate; a shutdown that cuts a hung request.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::{
    Sinks, WebhookSink, signature,
    spool::Spool,
    tests::{sample_alert, scratch},
};
use crate::{
    alert::Severity,
    config::{self, WebhookFormat},
};

const SECRET: &[u8] = b"shared-webhook-key";

/// One request as the receiver saw it: headers (lower-case names) and body.
#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn id(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON body");
        v["id"]
            .as_str()
            .or_else(|| v["output_fields"]["pthwatch.alert_id"].as_str())
            .expect("alert id")
            .to_owned()
    }

    /// What a receiver does with `X-Pthwatch-Signature`.
    fn signed(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let sig = self.header("x-pthwatch-signature");
        let ts = self.header("x-pthwatch-timestamp");
        sig.starts_with(&format!("t={ts},")) && signature::verify(SECRET, sig, &self.body, now, 300)
    }
}

/// A webhook receiver answering each request with the next status of `statuses` (the last
/// one repeats). Bounded: it stops when dropped, and after two minutes in any case.
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, statuses: &[u16], tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        let statuses = statuses.to_vec();
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            let mut n = 0;
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                let Ok((sock, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                sock.set_nonblocking(false).expect("blocking");
                sock.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let status = statuses[n.min(statuses.len() - 1)];
                let served = match &tls {
                    None => serve(sock, status),
                    Some(cfg) => {
                        let conn = ServerConnection::new(Arc::clone(cfg)).expect("tls server");
                        serve(StreamOwned::new(conn, sock), status)
                    }
                };
                if let Some(r) = served {
                    n += 1;
                    if (200..300).contains(&status) {
                        g.lock().expect("lock").push(r);
                    }
                }
            }
        });
        Self {
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let end = Instant::now() + timeout;
        while self.received().len() < n && Instant::now() < end {
            thread::sleep(Duration::from_millis(20));
        }
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers `status`; `None` when no whole request came.
fn serve(mut s: impl Read + Write, status: u16) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (end, len) = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())?;
            break (end, len);
        }
    };
    while buf.len() < end + 4 + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = s.write_all(answer.as_bytes());
    let _ = s.flush();
    Some(Received {
        headers,
        body: buf[end + 4..end + 4 + len].to_vec(),
    })
}

/// A port nobody listens on (until a receiver takes it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spooled_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("spool dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".alert"))
        })
        .count()
}

/// A daemon's webhook, as `run` would build it, retrying every ≤ 200 ms.
fn daemon(port: u16, spool: &Path, max_bytes: u64) -> WebhookSink {
    WebhookSink::for_test(
        &format!("http://127.0.0.1:{port}/alerts"),
        Some(SECRET),
        Spool::open(spool, max_bytes).expect("spool"),
        WebhookFormat::Pthwatch,
        Duration::from_secs(2),
        Duration::from_millis(200),
    )
}

fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    pred()
}

#[test]
fn alerts_sent_while_the_receiver_is_down_arrive_once_in_order_after_a_restart() {
    let dir = scratch("webhook-restart");
    let port = free_port();

    // The receiver is down: alerts are spooled and retried.
    let first = daemon(port, &dir, 1 << 20);
    for i in 0..5 {
        assert!(first.send(&sample_alert(&format!("a{i}"), Severity::High)));
    }
    assert!(wait_until(Duration::from_secs(5), || first.stats().retried >= 2));
    assert_eq!(first.stats().spooled_now, 5);

    // SIGTERM: the daemon stops at once (the receiver is still down), alerts stay on disk.
    let started = Instant::now();
    let stats = first.shutdown(Instant::now() + Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited on a dead receiver"
    );
    assert_eq!((stats.delivered, stats.spooled_now), (0, 5));
    assert_eq!(spooled_files(&dir), 5);

    // The restarted daemon finds them, and more alerts come in.
    let second = daemon(port, &dir, 1 << 20);
    assert_eq!(second.stats().spooled_now, 5);
    for i in 5..7 {
        assert!(second.send(&sample_alert(&format!("a{i}"), Severity::Critical)));
    }

    // The receiver is back.
    let receiver = Receiver::start(port, &[200], None);
    let got = receiver.wait_for(7, Duration::from_secs(15));
    assert!(wait_until(Duration::from_secs(2), || spooled_files(&dir) == 0));
    // Nothing more comes later.
    thread::sleep(Duration::from_millis(500));
    let got_after = receiver.received();
    assert_eq!(got_after.len(), got.len(), "a duplicate arrived late");

    let ids: Vec<String> = got.iter().map(Received::id).collect();
    let want: Vec<String> = (0..7).map(|i| format!("a{i}")).collect();
    assert_eq!(ids, want, "every alert exactly once, in order");
    for r in &got {
        assert!(r.signed(), "bad signature on {:?}", r.headers);
        assert_eq!(r.header("x-pthwatch-delivery"), r.id());
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-test"), "yes", "configured headers sent");
    }
    let stats = second.shutdown(Instant::now() + Duration::from_secs(2));
    assert_eq!(
        (stats.delivered, stats.spooled_now, stats.dropped_permanent),
        (7, 0, 0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_alert_is_dropped_and_the_rest_still_go_in_order() {
    let dir = scratch("webhook-refused");
    let port = free_port();
    // 503 (retry), then 400 (refused for good), then 200 for everything.
    let receiver = Receiver::start(port, &[503, 400, 200], None);
    let sink = daemon(port, &dir, 1 << 20);
    for i in 0..3 {
        sink.send(&sample_alert(&format!("r{i}"), Severity::High));
    }
    let got = receiver.wait_for(2, Duration::from_secs(10));
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(
        ids,
        ["r1", "r2"],
        "r0 was refused with a 400 after one retry"
    );
    assert!(wait_until(Duration::from_secs(2), || sink
        .stats()
        .delivered
        == 2));
    let stats = sink.shutdown(Instant::now() + Duration::from_secs(2));
    assert_eq!(
        (stats.retried, stats.dropped_permanent, stats.spooled_now),
        (1, 1, 0)
    );
    // The 503 and the 400 failed; only the two 2xx answers are timed.
    assert_eq!(stats.failed, 2);
    assert_eq!(stats.latency.count(), 2);
    assert!(stats.latency.sum_micros > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_spool_drops_the_newest_and_keeps_order() {
    let dir = scratch("webhook-full");
    let port = free_port();
    let one = serde_json::to_vec(&sample_alert("f0", Severity::High))
        .expect("json")
        .len() as u64;
    // Room for three alerts (each spool file is the id line plus the body).
    let sink = daemon(port, &dir, 3 * (one + 3) + 1);
    let accepted: Vec<bool> = (0..5)
        .map(|i| sink.send(&sample_alert(&format!("f{i}"), Severity::High)))
        .collect();
    assert_eq!(accepted, [true, true, true, false, false]);
    assert_eq!(sink.stats().dropped_spool_full, 2);
    let receiver = Receiver::start(port, &[200], None);
    let got = receiver.wait_for(3, Duration::from_secs(10));
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["f0", "f1", "f2"]);
    let _ = sink.shutdown(Instant::now() + Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shutdown_cuts_a_hung_request_and_keeps_its_alert() {
    let dir = scratch("webhook-hung");
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        thread::sleep(Duration::from_secs(4));
        drop(s);
    });
    let sink = WebhookSink::for_test(
        &format!("http://127.0.0.1:{port}/"),
        None,
        Spool::open(&dir, 1 << 20).expect("spool"),
        WebhookFormat::Pthwatch,
        Duration::from_secs(30),
        Duration::from_millis(200),
    );
    sink.send(&sample_alert("h0", Severity::High));
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let stats = sink.shutdown(Instant::now() + Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((stats.delivered, stats.spooled_now), (0, 1));
    assert_eq!(spooled_files(&dir), 1, "no 2xx, so the alert stays");
    let _ = hold.join();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_spool_alerts_wait_in_memory_only() {
    let dir = scratch("webhook-memory");
    let port = free_port();
    let spool_dir = dir.join("never-created");
    let sink = config::Sink::Webhook(config::WebhookSink {
        min_severity: Severity::Info,
        url: format!("http://127.0.0.1:{port}/"),
        format: WebhookFormat::Pthwatch,
        secret_file: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        headers: BTreeMap::new(),
        timeout_ms: 2000,
        retry_max_ms: 200,
        spool_dir: spool_dir.clone(),
        spool_max_bytes: 0,
    });
    let mut sinks = Sinks::from_config(&[sink]).expect("sinks");
    sinks.emit(&sample_alert("m0", Severity::Info));
    assert_eq!(sinks.stats().spooled_now, 1);
    let receiver = Receiver::start(port, &[200], None);
    let got = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].header("x-pthwatch-signature").is_empty(),
        "no secret, no signature"
    );
    assert!(!spool_dir.exists(), "nothing written to disk");
    let stats = sinks.shutdown(Instant::now() + Duration::from_secs(2));
    assert_eq!((stats.delivered, stats.spooled_now), (1, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// `openssl` command; `None` (and a printed reason) without it.
fn make_pki(dir: &Path) -> Option<()> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            })
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pthwatch test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat();
    if let Err(e) = run(&ca) {
        eprintln!("skipped: cannot run openssl ({e})");
        return None;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        let subj = format!("/CN=pthwatch test {who}");
        run(&[
            &["req"][..],
            &ec,
            &["-keyout", &key, "-out", &csr, "-subj", &subj],
        ]
        .concat())
        .expect("openssl");
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])
        .expect("openssl");
    }
    Some(())
}

/// The receiver's TLS: its certificate, and client certificates required from `ca.pem`.
fn server_tls(dir: &Path) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("client verifier");
    let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config"),
    )
}

fn https_sink(dir: &Path, port: u16, ca_file: Option<&Path>, spool: &str) -> config::Sink {
    let mut headers = BTreeMap::new();
    headers.insert("Authorization".to_owned(), "Bearer t0ken".to_owned());
    config::Sink::Webhook(config::WebhookSink {
        min_severity: Severity::Medium,
        url: format!("https://127.0.0.1:{port}/falco"),
        format: WebhookFormat::Falcosidekick,
        secret_file: Some(dir.join("secret")),
        ca_file: ca_file.map(Path::to_owned),
        client_cert: Some(dir.join("client.pem")),
        client_key: Some(dir.join("client.key")),
        headers,
        timeout_ms: 3000,
        retry_max_ms: 200,
        spool_dir: dir.join(spool),
        spool_max_bytes: 1 << 20,
    })
}

#[test]
fn https_with_a_private_ca_and_a_client_certificate() {
    let dir = scratch("webhook-tls");
    if make_pki(&dir).is_none() {
        return;
    }
    // A trailing newline in the secret file is not part of the key.
    std::fs::write(dir.join("secret"), [SECRET, b"\n"].concat()).expect("secret");
    let port = free_port();
    let receiver = Receiver::start(port, &[200], Some(server_tls(&dir)));
    let mut sinks =
        Sinks::from_config(&[https_sink(&dir, port, Some(&dir.join("ca.pem")), "spool")])
            .expect("sinks");
    sinks.emit(&sample_alert("low", Severity::Low)); // below min_severity: not sent
    sinks.emit(&sample_alert("t0", Severity::High));
    sinks.emit(&sample_alert("t1", Severity::Critical));
    let got = receiver.wait_for(2, Duration::from_secs(10));
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["t0", "t1"]);
    for r in &got {
        assert!(r.signed(), "bad signature: {:?}", r.headers);
        assert_eq!(r.header("authorization"), "Bearer t0ken");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["source"], "pthwatch", "Falcosidekick form");
    }
    assert!(wait_until(Duration::from_secs(2), || sinks
        .stats()
        .delivered
        == 2));
    let stats = sinks.shutdown(Instant::now() + Duration::from_secs(2));
    assert_eq!((stats.delivered, stats.retried), (2, 0));
    drop(receiver);

    // Against the system's CAs the private server is not trusted: retried, never sent.
    if !Path::new(super::http::SYSTEM_CA_BUNDLE).exists() {
        eprintln!("skipped the untrusted-server half: no system CA bundle");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let receiver = Receiver::start(port, &[200], Some(server_tls(&dir)));
    let mut sinks = Sinks::from_config(&[https_sink(&dir, port, None, "spool2")]).expect("sinks");
    sinks.emit(&sample_alert("u0", Severity::High));
    assert!(wait_until(Duration::from_secs(5), || sinks.stats().retried >= 2));
    let stats = sinks.shutdown(Instant::now() + Duration::from_secs(2));
    assert_eq!((stats.delivered, stats.spooled_now), (0, 1));
    assert!(receiver.received().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that answers garbage (not HTTP), then one that answers properly: the garbage
/// is a failed attempt (retried, counted), never a crash or a lost alert.
#[test]
fn a_receiver_answering_garbage_is_retried_and_the_alert_kept() {
    let dir = scratch("webhook-garbage");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        // Two answers of junk (binary, then an endless header line), then a real 200.
        for junk in [
            &b"\x00\xff\xfeNOT HTTP AT ALL\r\n\r\n"[..],
            &[b'A'; 70_000][..],
        ] {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(junk);
        }
        let (s, _) = listener.accept().expect("accept");
        serve(s, 200)
    });
    let sink = daemon(port, &dir, 1 << 20);
    sink.send(&sample_alert("g0", Severity::Critical));
    let got = server.join().expect("server thread");
    assert!(got.is_some(), "the alert arrives once the receiver behaves");
    assert!(
        wait_until(Duration::from_secs(5), || spooled_files(&dir) == 0),
        "delivered, so no longer spooled"
    );
    let stats = sink.shutdown(Instant::now() + Duration::from_secs(1));
    assert_eq!(stats.delivered, 1);
    assert!(
        stats.retried >= 2,
        "both junk answers count as failures: {stats:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
