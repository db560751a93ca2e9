//! The webhook sink: each alert is spooled, then POSTed by a delivery thread of its own,
//! one request at a time, oldest first, until the receiver answers 2xx.
//!
//! # What a receiver gets
//! `POST <url>` with `Content-Type: application/json`, the body in the configured format,
//! the configured `headers`, and:
//! - `X-Pthwatch-Delivery: <alert id>`: the same on every attempt of one alert. An alert is
//!   removed from the spool only after a 2xx, so if pthwatch dies between the receiver's
//!   2xx and that removal, the alert is sent once more after the restart. A receiver that
//!   must see each alert exactly once, even across a crash, keeps the ids it has accepted
//!   (a day's worth is plenty) and answers 2xx to a repeat without acting on it.
//! - `X-Pthwatch-Timestamp: <t>`: the Unix time (seconds) of this attempt.
//! - `X-Pthwatch-Signature: t=<t>,v1=<hex>`, when the sink has a `secret_file`: `<hex>` is
//!   HMAC-SHA256, keyed with the secret, of the bytes `<t>` `.` `<body>` (the timestamp as
//!   decimal text, a dot, then the raw request body, exactly as received, before any JSON
//!   parsing). The secret is the file's content without trailing whitespace.
//!
//! # Verifying a request
//! 1. Split the header on `,` and each part on the first `=`; take `t` and `v1`.
//! 2. Refuse the request if `|now - t| > 300` seconds (a replay, or a badly wrong clock).
//! 3. Compute `hex(hmac_sha256(secret, t + "." + raw_body))` and compare it with `v1` in
//!    constant time (`hmac.compare_digest` in Python, `crypto.timingSafeEqual` in Node,
//!    `hmac.Equal` in Go). Refuse on mismatch.
//! 4. Answer 2xx only once the alert is stored: pthwatch forgets it on a 2xx.
//!
//! # Answers
//! 2xx: delivered. 4xx other than 408 and 429: refused for good; the alert is logged,
//! counted as `dropped_permanent` and removed, so one bad alert cannot hold back the rest.
//! Anything else (3xx, 408, 429, 5xx, no answer, a TLS failure, a timeout): retried with
//! exponential backoff from 500 ms, doubling up to `retry_max_ms`, with full jitter (a
//! random delay between 0 and the current step) so that many hosts coming back at once do
//! not all call together; a `Retry-After` in seconds is honoured up to `retry_max_ms`.
//! Redirects are not followed: give the final URL.

use std::{
    net::TcpStream,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use super::{
    LATENCY_BUCKETS, Latency, SinkStats,
    backoff::Backoff,
    http::{self, AttemptError, Client, Endpoint, Response, TlsSetupError, Verdict},
    payload, signature,
    spool::{DirLock, Entry, Pushed, Spool, SpoolError},
};
use crate::{alert::Alert, config};

/// `spool_max_bytes = 0`: alerts still wait in memory, up to this much, while the receiver
/// is unreachable; they are lost at exit.
pub const MEMORY_SPOOL_BYTES: u64 = 1 << 20;
/// How long a spool that cannot be read is left alone before the next try.
const SPOOL_READ_RETRY: Duration = Duration::from_secs(5);
/// How often a delivery thread waiting for another process's spool lock looks again.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// During an outage, how often the warning is repeated.
const REMIND_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("url: {0}")]
    Url(String),
    #[error("secret_file {path}: {source}; it must be readable by pthwatch")]
    Secret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("secret_file {0} is empty; put the shared HMAC key in it")]
    EmptySecret(std::path::PathBuf),
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("starting the delivery thread: {0}")]
    Thread(std::io::Error),
}

/// Delivery counters of one webhook.
#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped_spool_full: AtomicU64,
    dropped_permanent: AtomicU64,
    spooled_now: AtomicU64,
    write_errors: AtomicU64,
    failed: AtomicU64,
    /// Requests answered 2xx, per latency bucket (`Latency::counts`).
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_micros: AtomicU64,
}

impl Counters {
    /// A request answered 2xx after `took`.
    fn record_latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency[Latency::bucket(micros)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// What the sender thread and [`WebhookSink::send`] share.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    counters: Counters,
    /// The socket of the request in flight, so that a shutdown past its deadline can cut it.
    inflight: Mutex<Option<TcpStream>>,
    url: String,
}

struct State {
    spool: Spool,
    /// Set by shutdown: deliver what can be delivered until then, and stop at the first
    /// failure.
    stop_by: Option<Instant>,
}

pub struct WebhookSink {
    shared: Arc<Shared>,
    format: config::WebhookFormat,
    done: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebhookSink {
    /// Reads the secret, loads the TLS settings and the spool, and starts delivering what
    /// the spool already holds.
    pub fn start(cfg: &config::WebhookSink) -> Result<Self, WebhookError> {
        let endpoint = Endpoint::parse(&cfg.url).map_err(WebhookError::Url)?;
        let secret = match &cfg.secret_file {
            None => None,
            Some(path) => {
                let mut bytes = std::fs::read(path).map_err(|source| WebhookError::Secret {
                    path: path.clone(),
                    source,
                })?;
                bytes.truncate(bytes.trim_ascii_end().len());
                if bytes.is_empty() {
                    return Err(WebhookError::EmptySecret(path.clone()));
                }
                Some(bytes)
            }
        };
        let tls = if endpoint.https {
            let client = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
            Some(http::tls_config(cfg.ca_file.as_deref(), client)?)
        } else {
            None
        };
        let headers = cfg
            .headers
            .iter()
            .filter(|(k, _)| {
                let ours = k.to_ascii_lowercase().starts_with("x-pthwatch-")
                    || k.eq_ignore_ascii_case("user-agent");
                if ours {
                    tracing::warn!(url = %cfg.url, header = %k, "header ignored: pthwatch sets it itself");
                }
                !ours
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let spool = if cfg.spool_max_bytes == 0 {
            Spool::in_memory(MEMORY_SPOOL_BYTES)
        } else {
            Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)?
        };
        let client = Client {
            endpoint,
            tls,
            timeout: Duration::from_millis(cfg.timeout_ms),
            headers,
        };
        Self::with_parts(
            client,
            secret,
            spool,
            cfg.format,
            &cfg.url,
            Duration::from_millis(cfg.retry_max_ms),
        )
    }

    fn with_parts(
        client: Client,
        secret: Option<Vec<u8>>,
        spool: Spool,
        format: config::WebhookFormat,
        url: &str,
        retry_max: Duration,
    ) -> Result<Self, WebhookError> {
        let waiting = spool.len();
        if waiting > 0 {
            tracing::info!(
                url,
                waiting,
                "alerts spooled before the restart will be delivered first"
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                spool,
                stop_by: None,
            }),
            wake: Condvar::new(),
            counters: Counters::default(),
            inflight: Mutex::new(None),
            url: url.to_owned(),
        });
        shared
            .counters
            .spooled_now
            .store(waiting as u64, Ordering::Relaxed);
        let (done_tx, done) = mpsc::channel();
        let sender = Sender {
            shared: Arc::clone(&shared),
            client,
            secret,
            backoff: Backoff::new(retry_max),
        };
        let thread = thread::Builder::new()
            .name("pthwatch-webhook".into())
            .spawn(move || {
                sender.run();
                let _ = done_tx.send(());
            })
            .map_err(WebhookError::Thread)?;
        Ok(Self {
            shared,
            format,
            done,
            thread: Some(thread),
        })
    }

    /// Spools `alert` and wakes the delivery thread. Touches the disk, never the network.
    /// Returns false when the alert could not be spooled (it is counted and logged).
    pub fn send(&self, alert: &Alert) -> bool {
        let c = &self.shared.counters;
        let body = match payload::body(self.format, alert) {
            Ok(b) => b,
            Err(e) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %self.shared.url, alert_id = %alert.id, error = %e, "cannot encode the alert");
                return false;
            }
        };
        let id = header_safe(&alert.id);
        let mut st = self.shared.lock();
        match st.spool.push(&id, &body) {
            Ok(Pushed::Stored(_)) => {
                c.spooled_now
                    .store(st.spool.len() as u64, Ordering::Relaxed);
                drop(st);
                self.shared.wake.notify_all();
                true
            }
            Ok(Pushed::Full) => {
                let total = c.dropped_spool_full.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    url = %self.shared.url,
                    alert_id = %alert.id,
                    rule = alert.rule,
                    spooled = st.spool.len(),
                    spool_bytes = st.spool.bytes(),
                    dropped_spool_full = total,
                    "webhook spool full: alert dropped (the receiver has been unreachable; raise spool_max_bytes to hold more)"
                );
                false
            }
            Err(e) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url = %self.shared.url, alert_id = %alert.id, error = %e, "cannot spool the alert");
                false
            }
        }
    }

    pub fn stats(&self) -> SinkStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkStats {
            delivered: get(&c.delivered),
            retried: get(&c.retried),
            dropped_spool_full: get(&c.dropped_spool_full),
            dropped_permanent: get(&c.dropped_permanent),
            spooled_now: get(&c.spooled_now),
            write_errors: get(&c.write_errors),
            failed: get(&c.failed),
            latency: Latency {
                counts: std::array::from_fn(|i| get(&c.latency[i])),
                sum_micros: get(&c.latency_sum_micros),
            },
        }
    }

    /// Delivers what it can until `deadline` (stopping at the first failure), then stops
    /// the thread. A request still running at the deadline is cut off; its alert stays
    /// spooled. Returns the final counters.
    pub fn shutdown(mut self, deadline: Instant) -> SinkStats {
        self.stop(deadline);
        self.stats()
    }

    fn stop(&mut self, deadline: Instant) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.lock().stop_by = Some(deadline);
        self.shared.wake.notify_all();
        let left = deadline.saturating_duration_since(Instant::now());
        if self.done.recv_timeout(left).is_err() {
            if let Some(sock) = lock(&self.shared.inflight).take() {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            // The cut request ends at once; DNS or connect() may not, and then the thread is
            // left behind (its alert stays spooled).
            if self.done.recv_timeout(Duration::from_millis(500)).is_err() {
                tracing::warn!(url = %self.shared.url, "webhook delivery still busy at shutdown; left behind");
                return;
            }
        }
        let _ = thread.join();
        let waiting = self.shared.lock().spool.len();
        if waiting > 0 {
            tracing::info!(url = %self.shared.url, waiting, "alerts stay spooled for the next start");
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Instant::now());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An alert id as a header value: visible ASCII only (ids are hex; this is a safeguard).
fn header_safe(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The delivery thread.
struct Sender {
    shared: Arc<Shared>,
    client: Client,
    secret: Option<Vec<u8>>,
    backoff: Backoff,
}

/// Held by the delivery thread for its whole life.
enum SpoolLock {
    Held(#[expect(dead_code, reason = "held for its flock, released on drop")] DirLock),
    /// A memory spool, or a directory where no lock file can be made.
    Unneeded,
}

enum Next {
    Deliver(Entry),
    Stop,
}

impl Sender {
    fn run(mut self) {
        let Some(_lock) = self.acquire_lock() else {
            return;
        };
        let mut failing_since: Option<Instant> = None;
        let mut last_warning: Option<Instant> = None;
        loop {
            let entry = match self.next() {
                Next::Deliver(e) => e,
                Next::Stop => return,
            };
            let started = Instant::now();
            let outcome = self.attempt(&entry);
            let took = started.elapsed();
            match outcome {
                Ok(r) if http::verdict(r.status) == Verdict::Delivered => {
                    self.forget(entry.seq);
                    let c = &self.shared.counters;
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    c.record_latency(took);
                    self.backoff.reset();
                    last_warning = None;
                    if let Some(since) = failing_since.take() {
                        tracing::info!(url = %self.shared.url, down_for_s = since.elapsed().as_secs(), waiting = self.shared.lock().spool.len(), "webhook receiver reachable again");
                    }
                }
                Ok(r) if http::verdict(r.status) == Verdict::Permanent => {
                    self.forget(entry.seq);
                    self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let total = self
                        .shared
                        .counters
                        .dropped_permanent
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    tracing::error!(url = %self.shared.url, alert_id = %entry.id, status = r.status, answer = %r.snippet, dropped_permanent = total, "webhook refused the alert; it is dropped");
                }
                outcome => {
                    self.shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                    self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let retry_after = outcome.as_ref().ok().and_then(|r| r.retry_after);
                    let why = match &outcome {
                        Ok(r) => format!("HTTP {} {}", r.status, r.snippet.trim()),
                        Err(e) => e.to_string(),
                    };
                    let now = Instant::now();
                    if failing_since.is_none() {
                        failing_since = Some(now);
                    }
                    // A warning when an outage starts, then a reminder now and then.
                    if last_warning.is_none_or(|w| now.duration_since(w) >= REMIND_EVERY) {
                        last_warning = Some(now);
                        let waiting = self.shared.lock().spool.len();
                        let down_for_s =
                            failing_since.map_or(0, |s| now.duration_since(s).as_secs());
                        tracing::warn!(url = %self.shared.url, alert_id = %entry.id, error = %why, waiting, down_for_s, "webhook delivery failing; alerts are spooled and retried");
                    } else {
                        tracing::debug!(url = %self.shared.url, alert_id = %entry.id, error = %why, "webhook delivery failed again");
                    }
                    let delay = self.backoff.next_delay(retry_after);
                    if !self.sleep(delay) {
                        return;
                    }
                }
            }
        }
    }

    /// Takes the spool's lock (waiting while another process has it). `None`: told to stop
    /// before that.
    fn acquire_lock(&self) -> Option<SpoolLock> {
        let Some(dir) = self.shared.lock().spool.dir().map(ToOwned::to_owned) else {
            return Some(SpoolLock::Unneeded);
        };
        let mut warned = false;
        loop {
            match DirLock::try_acquire(&dir) {
                Ok(Some(l)) => {
                    let mut st = self.shared.lock();
                    if let Err(e) = st.spool.rescan() {
                        tracing::error!(url = %self.shared.url, error = %e, "rereading the spool");
                    }
                    self.shared
                        .counters
                        .spooled_now
                        .store(st.spool.len() as u64, Ordering::Relaxed);
                    return Some(SpoolLock::Held(l));
                }
                Ok(None) if !warned => {
                    warned = true;
                    tracing::warn!(url = %self.shared.url, spool = %dir.display(), "another process delivers from this spool; waiting for it to stop");
                }
                Ok(None) => {}
                Err(e) => {
                    // Without a lock file (a read-only directory) deliver anyway: one daemon
                    // per spool is the normal case.
                    tracing::warn!(url = %self.shared.url, spool = %dir.display(), error = %e, "cannot lock the spool; delivering without the lock");
                    return Some(SpoolLock::Unneeded);
                }
            }
            let st = self.shared.lock();
            if st.stop_by.is_some() {
                return None;
            }
            drop(self.shared.wake.wait_timeout(st, LOCK_POLL));
        }
    }

    /// Waits for the oldest alert, or for the order to stop.
    fn next(&self) -> Next {
        let mut st = self.shared.lock();
        loop {
            if let Some(by) = st.stop_by
                && (Instant::now() >= by || st.spool.is_empty())
            {
                return Next::Stop;
            }
            match st.spool.head() {
                Ok(Some(e)) => return Next::Deliver(e),
                Ok(None) => {
                    st = self
                        .shared
                        .wake
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Err(SpoolError::Damaged { seq, path }) => {
                    tracing::error!(url = %self.shared.url, path = %path.display(), "damaged spool file removed");
                    let _ = st.spool.remove(seq);
                    self.shared
                        .counters
                        .dropped_permanent
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(url = %self.shared.url, error = %e, "reading the spool; retrying");
                    let wait = SPOOL_READ_RETRY;
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    fn attempt(&self, entry: &Entry) -> Result<Response, AttemptError> {
        let t = unix_now();
        let t_text = t.to_string();
        let sig = self
            .secret
            .as_deref()
            .map(|s| signature::header(s, t, &entry.body));
        let mut headers = vec![
            ("X-Pthwatch-Delivery", entry.id.as_str()),
            ("X-Pthwatch-Timestamp", t_text.as_str()),
        ];
        if let Some(sig) = &sig {
            headers.push(("X-Pthwatch-Signature", sig.as_str()));
        }
        self.client
            .post(&headers, &entry.body, &self.shared.inflight)
    }

    fn forget(&self, seq: u64) {
        let mut st = self.shared.lock();
        if let Err(e) = st.spool.remove(seq) {
            // Left on disk, it would be sent again after a restart: say so.
            tracing::error!(url = %self.shared.url, error = %e, "cannot remove a delivered alert from the spool; it may be sent again after a restart");
        }
        self.shared
            .counters
            .spooled_now
            .store(st.spool.len() as u64, Ordering::Relaxed);
    }

    /// Sleeps for `delay`; false when told to stop (no retry during a shutdown).
    fn sleep(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut st = self.shared.lock();
        loop {
            if st.stop_by.is_some() {
                return false;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return true;
            };
            st = self
                .shared
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
impl WebhookSink {
    /// A sink on a spool the test controls, with a short retry ceiling.
    pub fn for_test(
        url: &str,
        secret: Option<&[u8]>,
        spool: Spool,
        format: config::WebhookFormat,
        timeout: Duration,
        retry_max: Duration,
    ) -> Self {
        let client = Client {
            endpoint: Endpoint::parse(url).expect("test url"),
            tls: None,
            timeout,
            headers: vec![("X-Test".into(), "yes".into())],
        };
        Self::with_parts(
            client,
            secret.map(<[u8]>::to_vec),
            spool,
            format,
            url,
            retry_max,
        )
        .expect("start webhook")
    }
}
