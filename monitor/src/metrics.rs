//! The metrics endpoint: `/metrics` in the Prometheus text format and `/healthz` for
//! liveness, served on a small HTTP/1.1 listener inside the daemon's event loop.
//!
//! The detector publishes a snapshot once a tick; the server only reads snapshots, so a
//! slow or hostile scraper can never stall event processing. `/healthz` answers 503
//! when the event loop has not ticked for `STALE`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use monitor_common::counter;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::sink::SinkStats;

/// An event loop that has not ticked for this long is unhealthy (it ticks every second).
const STALE: Duration = Duration::from_secs(10);
/// A request must arrive whole within this long, and fit in this many bytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_MAX: usize = 8192;

/// The kinds of event the detector receives, as `pthwatch_events_total` labels them
/// (`Snapshot::events` is indexed in this order).
pub const EVENT_KINDS: [&str; 8] = [
    "exec",
    "fork",
    "exit",
    "open",
    "net",
    "io_uring",
    "startup_done",
    "new_executable",
];

/// The index of `kind` in [`EVENT_KINDS`]; used in `const` blocks, so that a name that
/// is not there fails the build.
pub const fn event_kind_index(kind: &str) -> usize {
    let mut i = 0;
    while i < EVENT_KINDS.len() {
        let (a, b) = (EVENT_KINDS[i].as_bytes(), kind.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not an event kind of EVENT_KINDS")
}

/// What the daemon reports, as of its last tick.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub started: Instant,
    pub last_tick: Option<Instant>,
    /// The kernel's counters (`monitor_common::counter`), summed over CPUs.
    pub kernel: [u64; counter::COUNT as usize],
    /// Events received, by kind (in [`EVENT_KINDS`] order).
    pub events: [u64; EVENT_KINDS.len()],
    /// Alerts written, by (rule, action).
    pub alerts: BTreeMap<(&'static str, &'static str), u64>,
    pub alerts_allowed: u64,
    pub alert_errors: u64,
    pub lineages: u64,
    pub tracked_processes: u64,
    pub hooks_known: u64,
    /// Programs checked once and spared the probation (`crate::probation`).
    pub probation_exempt: u64,
    /// Delivery counters of the alert sinks, summed over them.
    pub sinks: SinkStats,
    /// Records written to the event log, and records it could not write.
    pub event_log_records: u64,
    pub event_log_errors: u64,
    /// Each kernel program pthwatch tried to attach: whether every attempt attached.
    pub probes: BTreeMap<&'static str, bool>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_tick: None,
            kernel: [0; counter::COUNT as usize],
            events: [0; EVENT_KINDS.len()],
            alerts: BTreeMap::new(),
            alerts_allowed: 0,
            alert_errors: 0,
            lineages: 0,
            tracked_processes: 0,
            hooks_known: 0,
            probation_exempt: 0,
            sinks: SinkStats::default(),
            event_log_records: 0,
            event_log_errors: 0,
            probes: BTreeMap::new(),
        }
    }
}

/// The shared snapshot.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Snapshot>>);

impl Metrics {
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
    }

    fn snapshot(&self) -> Snapshot {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Kernel counters as metrics: (index, name, help); all counters.
const KERNEL: &[(u32, &str, &str)] = &[
    (
        counter::RINGBUF_DROPS,
        "pthwatch_kernel_events_lost_total",
        "Kernel events lost because the ring buffer was full.",
    ),
    (
        counter::PROCS_FULL,
        "pthwatch_kernel_process_table_full_total",
        "Processes not tracked because the kernel process table was full.",
    ),
    (
        counter::NET_DENIED,
        "pthwatch_kernel_network_denied_total",
        "Network attempts denied in the kernel.",
    ),
    (
        counter::KILLS,
        "pthwatch_kernel_kills_total",
        "SIGKILLs sent from the kernel.",
    ),
    (
        counter::EGRESS_DROPS,
        "pthwatch_kernel_egress_drops_total",
        "Packets dropped at cgroup egress for tainted lineages.",
    ),
    (
        counter::TRACKED_EXECS,
        "pthwatch_kernel_tracked_execs_total",
        "Execs of processes pthwatch tracks.",
    ),
    (
        counter::READ_ERRORS,
        "pthwatch_kernel_read_errors_total",
        "Kernel structure reads that failed.",
    ),
    (
        counter::LOST_QUARANTINES,
        "pthwatch_kernel_lost_event_quarantines_total",
        "Lineages denied the network because their events were lost.",
    ),
];

/// Writes metric families in the Prometheus text format (0.0.4).
struct Exposition(String);

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; its samples follow.
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        self
    }

    /// One sample: `name{labels} value`, label values escaped.
    fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help).sample(name, &[], value);
    }
}

/// Microseconds as decimal seconds (`2500000` → `2.5`).
fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// The Prometheus text exposition of `s` at `now`.
pub fn render(s: &Snapshot, now: Instant) -> String {
    let mut out = Exposition(String::new());
    out.single(
        "pthwatch_up",
        "gauge",
        "1 while the event loop is ticking.",
        u64::from(healthy(s, now)),
    );
    out.single(
        "pthwatch_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        now.duration_since(s.started).as_secs(),
    );
    for &(index, name, help) in KERNEL {
        out.single(name, "counter", help, s.kernel[index as usize]);
    }
    let name = "pthwatch_events_total";
    out.family(
        name,
        "counter",
        "Kernel events the detector received, by kind.",
    );
    for (kind, n) in EVENT_KINDS.iter().zip(s.events) {
        out.sample(name, &[("kind", kind)], n);
    }
    let name = "pthwatch_alerts_total";
    out.family(
        name,
        "counter",
        "Alerts written, by rule and by action (alert, blocked, killed).",
    );
    for ((rule, action), n) in &s.alerts {
        out.sample(name, &[("rule", rule), ("action", action)], n);
    }
    out.single(
        "pthwatch_alerts_allowed_total",
        "counter",
        "Reports suppressed by an allow entry or a disabled rule.",
        s.alerts_allowed,
    );
    out.single(
        "pthwatch_alert_write_errors_total",
        "counter",
        "Alerts that could not be written.",
        s.alert_errors,
    );
    out.single(
        "pthwatch_lineages",
        "gauge",
        "Startup-hook lineages being followed.",
        s.lineages,
    );
    out.single(
        "pthwatch_tracked_processes",
        "gauge",
        "Processes in the daemon's process table.",
        s.tracked_processes,
    );
    out.single(
        "pthwatch_hooks_known",
        "gauge",
        "Startup hooks in the inventory.",
        s.hooks_known,
    );
    out.single(
        "pthwatch_probation_exempt_programs",
        "gauge",
        "Programs checked as unable to run Python and spared the probation.",
        s.probation_exempt,
    );
    let name = "pthwatch_alert_delivery";
    out.family(
        name,
        "gauge",
        "Alert delivery to the configured sinks, by outcome.",
    );
    for (what, n) in s.sinks.pairs() {
        out.sample(name, &[("what", what)], n);
    }
    out.single(
        "pthwatch_webhook_queue_depth",
        "gauge",
        "Alerts spooled and waiting for webhook delivery.",
        s.sinks.spooled_now,
    );
    out.single(
        "pthwatch_webhook_failures_total",
        "counter",
        "Webhook requests not answered 2xx (retried or refused).",
        s.sinks.failed,
    );
    let name = "pthwatch_webhook_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "Round-trip time of webhook requests answered 2xx.",
    );
    let bucket = format!("{name}_bucket");
    for (bound, n) in s.sinks.latency.cumulative() {
        let le = bound.map_or_else(|| "+Inf".to_owned(), seconds);
        out.sample(&bucket, &[("le", &le)], n);
    }
    out.sample(
        &format!("{name}_sum"),
        &[],
        seconds(s.sinks.latency.sum_micros),
    );
    out.sample(&format!("{name}_count"), &[], s.sinks.latency.count());
    out.single(
        "pthwatch_event_log_records_total",
        "counter",
        "Records written to the event log.",
        s.event_log_records,
    );
    out.single(
        "pthwatch_event_log_errors_total",
        "counter",
        "Event log records that could not be written.",
        s.event_log_errors,
    );
    let name = "pthwatch_probe_attached";
    out.family(
        name,
        "gauge",
        "1 when every attach of the kernel program succeeded, 0 when one failed (running degraded).",
    );
    for (program, attached) in &s.probes {
        out.sample(name, &[("program", program)], u64::from(*attached));
    }
    out.0
}

fn healthy(s: &Snapshot, now: Instant) -> bool {
    s.last_tick.is_some_and(|t| now.duration_since(t) < STALE)
}

/// Label values: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds the listener (at start-up, so a taken port is a clear start-up error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the runtime stops. Each connection gets one response.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &m)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > REQUEST_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let (status, body) = route(&buf, &metrics.snapshot(), Instant::now());
    respond(&mut stream, status, &body).await
}

/// The response to a raw request: (status line, body).
fn route(request: &[u8], s: &Snapshot, now: Instant) -> (&'static str, String) {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    if method != Some(b"GET".as_slice()) {
        return ("405 Method Not Allowed", String::new());
    }
    let path = target
        .unwrap_or_default()
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default();
    match path {
        b"/metrics" => ("200 OK", render(s, now)),
        b"/healthz" if healthy(s, now) => ("200 OK", "ok\n".to_owned()),
        b"/healthz" => ("503 Service Unavailable", "event loop stalled\n".to_owned()),
        _ => ("404 Not Found", String::new()),
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests;
