//! A webhook receiver on 127.0.0.1 for the delivery tests: plain HTTP/1.1, one request
//! per connection, each answered with a chosen status and recorded with its headers.
//! It can be stopped and started again on the same port (a receiver that goes down and
//! comes back), and checks `X-Pthwatch-Signature` the way a real receiver would, with
//! the `openssl` command (the test crate keeps its dependencies few).
use std::{
    collections::BTreeMap,
    io::Write as _,
    net::TcpListener,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The alert id, from either payload format.
    pub fn alert_id(&self) -> String {
        let v = self.json();
        v["id"]
            .as_str()
            .or_else(|| v["output_fields"]["pthwatch.alert_id"].as_str())
            .expect("the body names its alert id")
            .to_owned()
    }

    /// Whether `X-Pthwatch-Signature` is `t=<t>,v1=<hex>` with `<hex>` the HMAC-SHA256
    /// under `secret` of `"<t>.<body>"`, and `t` within five minutes of now.
    pub fn signature_valid(&self, secret: &[u8]) -> bool {
        let Some(sig) = self.header("x-pthwatch-signature") else {
            return false;
        };
        let mut t = None;
        let mut v1 = None;
        for part in sig.split(',') {
            match part.split_once('=') {
                Some(("t", v)) => t = Some(v),
                Some(("v1", v)) => v1 = Some(v),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let Ok(ts) = t.parse::<u64>() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        if ts.abs_diff(now) > 300 {
            return false;
        }
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(&self.body);
        hmac_sha256_hex(secret, &message) == v1
    }
}

/// HMAC-SHA256, hex, computed by `openssl dgst`.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let hexkey: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{hexkey}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// The receiver. Requests answered with a 2xx are kept in `accepted()`.
pub struct WebhookReceiver {
    pub port: u16,
    accepted: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// A port for a receiver that is down for now: nothing listens on it.
    pub fn reserve_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    /// Listens on `port` and answers every request with 200.
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[200])
    }

    /// Answers the n-th request with `statuses[n]` (the last one repeats). Bounded: the
    /// thread ends when the receiver is dropped, and after three minutes in any case.
    pub fn start_with(port: u16, statuses: &[u16]) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (Arc::clone(&accepted), Arc::clone(&stop));
        let statuses = statuses.to_vec();
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(180);
            let mut n = 0;
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                let Ok((mut sock, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = sock.set_nonblocking(false);
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(req) = read_request(&mut sock) else {
                    continue;
                };
                let status = statuses[n.min(statuses.len() - 1)];
                n += 1;
                let answer = format!(
                    "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = sock.write_all(answer.as_bytes());
                if (200..300).contains(&status) {
                    acc.lock().expect("lock").push(req);
                }
            }
        });
        Self {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> Vec<Request> {
        self.accepted.lock().expect("lock").clone()
    }

    /// Waits until `n` requests were accepted (or `timeout` passes); returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let end = Instant::now() + timeout;
        while self.accepted().len() < n && Instant::now() < end {
            thread::sleep(Duration::from_millis(50));
        }
        self.accepted()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(sock: &mut impl std::io::Read) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    while buf.len() < end + 4 + len {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body: buf[end + 4..end + 4 + len].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no openssl command");
            return;
        }
        assert_eq!(
            super::hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
