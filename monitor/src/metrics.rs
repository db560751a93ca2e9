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

/// An event loop that has not ticked for this long is unhealthy (it ticks every second).
const STALE: Duration = Duration::from_secs(10);
/// A request must arrive whole within this long, and fit in this many bytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_MAX: usize = 8192;

/// What the daemon reports, as of its last tick.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub started: Instant,
    pub last_tick: Option<Instant>,
    /// The kernel's counters (`monitor_common::counter`), summed over CPUs.
    pub kernel: [u64; counter::COUNT as usize],
    pub alerts_by_rule: BTreeMap<&'static str, u64>,
    pub alerts_allowed: u64,
    pub alert_errors: u64,
    pub lineages: u64,
    pub tracked_processes: u64,
    pub hooks_known: u64,
    /// Delivery counters of the alert sinks, by name (`delivered`, `dropped_spool_full`...).
    pub delivery: BTreeMap<String, u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_tick: None,
            kernel: [0; counter::COUNT as usize],
            alerts_by_rule: BTreeMap::new(),
            alerts_allowed: 0,
            alert_errors: 0,
            lineages: 0,
            tracked_processes: 0,
            hooks_known: 0,
            delivery: BTreeMap::new(),
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

/// Kernel counters as metrics: (index, name, help, is a counter).
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

/// The Prometheus text exposition of `s` at `now`.
pub fn render(s: &Snapshot, now: Instant) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "pthwatch_up",
        "gauge",
        "1 while the event loop is ticking.",
        &[(String::new(), u64::from(healthy(s, now)))],
    );
    metric(
        "pthwatch_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &[(String::new(), now.duration_since(s.started).as_secs())],
    );
    for &(index, name, help) in KERNEL {
        metric(
            name,
            "counter",
            help,
            &[(String::new(), s.kernel[index as usize])],
        );
    }
    let by_rule: Vec<(String, u64)> = s
        .alerts_by_rule
        .iter()
        .map(|(rule, n)| (format!("{{rule=\"{}\"}}", escape(rule)), *n))
        .collect();
    metric(
        "pthwatch_alerts_total",
        "counter",
        "Alerts written, by rule.",
        &by_rule,
    );
    metric(
        "pthwatch_alerts_allowed_total",
        "counter",
        "Reports suppressed by an allow entry or a disabled rule.",
        &[(String::new(), s.alerts_allowed)],
    );
    metric(
        "pthwatch_alert_write_errors_total",
        "counter",
        "Alerts that could not be written.",
        &[(String::new(), s.alert_errors)],
    );
    metric(
        "pthwatch_lineages",
        "gauge",
        "Startup-hook lineages being followed.",
        &[(String::new(), s.lineages)],
    );
    metric(
        "pthwatch_tracked_processes",
        "gauge",
        "Processes in the daemon's process table.",
        &[(String::new(), s.tracked_processes)],
    );
    metric(
        "pthwatch_hooks_known",
        "gauge",
        "Startup hooks in the inventory.",
        &[(String::new(), s.hooks_known)],
    );
    let delivery: Vec<(String, u64)> = s
        .delivery
        .iter()
        .map(|(what, n)| (format!("{{what=\"{}\"}}", escape(what)), *n))
        .collect();
    metric(
        "pthwatch_alert_delivery",
        "gauge",
        "Alert delivery to the configured sinks, by outcome.",
        &delivery,
    );
    out
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
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        s.last_tick = Some(s.started);
        s.kernel[counter::NET_DENIED as usize] = 3;
        s.alerts_by_rule.insert("hook_credential_exfiltration", 2);
        s.delivery.insert("delivered".into(), 5);
        s
    }

    /// Every sample line is `name{labels} value` with a declared TYPE before it.
    #[test]
    fn exposition_is_well_formed() {
        let s = sample();
        let text = render(&s, s.started + Duration::from_secs(1));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                typed.insert(it.next().unwrap().to_owned());
                assert!(matches!(it.next(), Some("counter" | "gauge")), "{line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect(line);
            value.parse::<u64>().expect(line);
            let name = name_labels.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
        assert!(text.contains("pthwatch_kernel_network_denied_total 3\n"));
        assert!(text.contains("pthwatch_alerts_total{rule=\"hook_credential_exfiltration\"} 2\n"));
        assert!(text.contains("pthwatch_up 1\n"));
    }

    #[test]
    fn health_follows_the_tick() {
        let s = sample();
        let fresh = s.started + Duration::from_secs(2);
        let stale = s.started + STALE + Duration::from_secs(1);
        assert_eq!(
            route(b"GET /healthz HTTP/1.1\r\n\r\n", &s, fresh).0,
            "200 OK"
        );
        assert_eq!(
            route(b"GET /healthz HTTP/1.1\r\n\r\n", &s, stale).0,
            "503 Service Unavailable"
        );
        assert!(render(&s, stale).contains("pthwatch_up 0\n"));
        assert_eq!(
            route(b"GET /nope HTTP/1.1\r\n\r\n", &s, fresh).0,
            "404 Not Found"
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &s, fresh).0,
            "405 Method Not Allowed"
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", &s, fresh).0,
            "200 OK"
        );
        assert_eq!(
            route(b"\xff\xfe garbage", &s, fresh).0,
            "405 Method Not Allowed"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
