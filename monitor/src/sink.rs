//! Alert delivery: every `[[alerts.sink]]` at once, each with its own minimum severity.
//!
//! - `stdout`: one JSON line per alert.
//! - `file`: JSON Lines, rotated by size (`alerts.jsonl` → `alerts.jsonl.1` …).
//! - `webhook`: an HTTP(S) POST per alert, signed, retried, and spooled on disk while the
//!   receiver is unreachable (see [`webhook`] for what a receiver gets and how it checks
//!   the signature).
//!
//! [`Sinks::emit`] is called from the daemon's event loop and never waits on the network:
//! the file and stdout sinks write at once, a webhook only spools the alert (a small file
//! write) and its own thread does the sending.

mod backoff;
mod file;
mod http;
mod payload;
mod signature;
mod spool;
mod webhook;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;

use std::{io, path::PathBuf, time::Instant};

pub use self::webhook::WebhookSink;
use self::{file::RotatingFile, webhook::WebhookError};
use crate::{
    alert::{Alert, Severity},
    config,
};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "alert sink {index} (file {path}): {source}; check that pthwatch can create and write it"
    )]
    File {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("alert sink {index} (webhook {url}): {source}")]
    Webhook {
        index: usize,
        url: String,
        source: WebhookError,
    },
    #[error(
        "alert sinks {first} and {second} are webhooks sharing spool_dir {dir}; give each its own"
    )]
    SharedSpool {
        first: usize,
        second: usize,
        dir: PathBuf,
    },
}

/// Delivery counters, summed over the sinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Alerts written (file, stdout) or acknowledged with a 2xx (webhook).
    pub delivered: u64,
    /// Webhook attempts that failed and will be tried again.
    pub retried: u64,
    /// Alerts a webhook refused to spool because its spool was full.
    pub dropped_spool_full: u64,
    /// Alerts a webhook receiver refused for good (4xx), or damaged spool files.
    pub dropped_permanent: u64,
    /// Alerts waiting in webhook spools.
    pub spooled_now: u64,
    /// Alerts a file or stdout sink could not write, or a webhook could not spool.
    pub write_errors: u64,
    /// Webhook attempts not answered 2xx: retried ones and refused ones.
    pub failed: u64,
    /// Round-trip times of webhook requests answered 2xx.
    pub latency: Latency,
}

impl SinkStats {
    /// `(name, value)` pairs, as the metrics endpoint labels them.
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            ("delivered", self.delivered),
            ("retried", self.retried),
            ("dropped_spool_full", self.dropped_spool_full),
            ("dropped_permanent", self.dropped_permanent),
            ("spooled_now", self.spooled_now),
            ("write_errors", self.write_errors),
        ]
    }

    fn add(&mut self, o: &Self) {
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.dropped_spool_full += o.dropped_spool_full;
        self.dropped_permanent += o.dropped_permanent;
        self.spooled_now += o.spooled_now;
        self.write_errors += o.write_errors;
        self.failed += o.failed;
        self.latency.add(&o.latency);
    }
}

/// Upper bounds, in microseconds, of the webhook latency buckets (a last, unbounded
/// bucket follows them).
pub const LATENCY_BOUNDS_MICROS: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
/// Buckets of [`Latency`]: one per bound, and one for longer requests.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// A fixed-bucket histogram of request durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Requests per bucket (not cumulative): `counts[i]` took at most
    /// `LATENCY_BOUNDS_MICROS[i]` and more than the bound before it; the last one, longer
    /// than every bound.
    pub counts: [u64; LATENCY_BUCKETS],
    /// Every request's duration added up, in microseconds.
    pub sum_micros: u64,
}

impl Latency {
    /// The bucket a request of `micros` falls in.
    pub fn bucket(micros: u64) -> usize {
        LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BOUNDS_MICROS.len())
    }

    /// The webhook records into atomics (`Counters::record_latency`); tests into this.
    #[cfg(test)]
    pub fn record(&mut self, micros: u64) {
        self.counts[Self::bucket(micros)] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Requests recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in microseconds, requests that took at most that long)`, bound by
    /// bound, then `(None, every request)`: the cumulative form Prometheus expects.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = LATENCY_BOUNDS_MICROS
            .iter()
            .copied()
            .map(Some)
            .chain([None]);
        bounds
            .zip(self.counts.iter())
            .scan(0u64, |total, (bound, n)| {
                *total += n;
                Some((bound, *total))
            })
    }

    fn add(&mut self, o: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(o.counts) {
            *mine += theirs;
        }
        self.sum_micros = self.sum_micros.saturating_add(o.sum_micros);
    }
}

enum Output {
    Stdout,
    File(RotatingFile),
    Webhook(WebhookSink),
}

struct Target {
    min_severity: Severity,
    output: Output,
    /// Counters of the synchronous outputs (a webhook keeps its own).
    stats: SinkStats,
}

/// Every configured sink.
pub struct Sinks {
    targets: Vec<Target>,
}

impl Sinks {
    /// Opens the files, reads the secrets and certificates, loads each webhook's spool and
    /// starts its delivery thread (which first sends what the spool held from before).
    pub fn from_config(sinks: &[config::Sink]) -> Result<Self, SinkError> {
        let mut spools: Vec<(usize, &std::path::Path)> = Vec::new();
        for (index, s) in sinks.iter().enumerate() {
            if let config::Sink::Webhook(w) = s
                && w.spool_max_bytes > 0
            {
                if let Some((first, _)) = spools.iter().find(|(_, d)| *d == w.spool_dir) {
                    return Err(SinkError::SharedSpool {
                        first: *first,
                        second: index,
                        dir: w.spool_dir.clone(),
                    });
                }
                spools.push((index, &w.spool_dir));
            }
        }
        let mut targets = Vec::with_capacity(sinks.len());
        for (index, s) in sinks.iter().enumerate() {
            let output = match s {
                config::Sink::Stdout(_) => Output::Stdout,
                config::Sink::File(f) => {
                    Output::File(RotatingFile::open(&f.path, f.max_bytes, f.keep).map_err(
                        |source| SinkError::File {
                            index,
                            path: f.path.clone(),
                            source,
                        },
                    )?)
                }
                config::Sink::Webhook(w) => {
                    Output::Webhook(WebhookSink::start(w).map_err(|source| SinkError::Webhook {
                        index,
                        url: w.url.clone(),
                        source,
                    })?)
                }
            };
            targets.push(Target {
                min_severity: s.min_severity(),
                output,
                stats: SinkStats::default(),
            });
        }
        Ok(Self { targets })
    }

    /// Hands `alert` to every sink whose `min_severity` it reaches. Never waits on the
    /// network. Returns false when a sink could not take it (logged and counted).
    pub fn emit(&mut self, alert: &Alert) -> bool {
        let line = serde_json::to_vec(alert).map(|mut l| {
            l.push(b'\n');
            l
        });
        let mut ok = true;
        for t in &mut self.targets {
            if alert.severity < t.min_severity {
                continue;
            }
            let (path, written) = match (&mut t.output, &line) {
                (Output::Webhook(w), _) => {
                    ok &= w.send(alert);
                    continue;
                }
                (Output::File(f), Ok(line)) => (Some(f.path().to_owned()), f.write_line(line)),
                (Output::File(f), Err(e)) => (
                    Some(f.path().to_owned()),
                    Err(io::Error::other(e.to_string())),
                ),
                (Output::Stdout, Ok(line)) => (None, file::write_stdout(line)),
                (Output::Stdout, Err(e)) => (None, Err(io::Error::other(e.to_string()))),
            };
            match written {
                Ok(()) => t.stats.delivered += 1,
                Err(e) => {
                    ok = false;
                    t.stats.write_errors += 1;
                    let path =
                        path.map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
                    tracing::error!(alert_id = %alert.id, path, error = %e, "cannot write the alert");
                }
            }
        }
        ok
    }

    /// The counters of every sink, summed.
    pub fn stats(&self) -> SinkStats {
        let mut total = SinkStats::default();
        for t in &self.targets {
            match &t.output {
                Output::Webhook(w) => total.add(&w.stats()),
                _ => total.add(&t.stats),
            }
        }
        total
    }

    /// Stops the webhooks: each delivers what it can until `deadline` (stopping at its
    /// first failure); what is left stays spooled for the next start. Returns the final
    /// counters.
    pub fn shutdown(&mut self, deadline: Instant) -> SinkStats {
        let mut total = SinkStats::default();
        let targets = std::mem::take(&mut self.targets);
        // Every webhook gets the same deadline: stop them in parallel.
        let stats: Vec<SinkStats> = std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .into_iter()
                .map(|t| {
                    s.spawn(move || match t.output {
                        Output::Webhook(w) => w.shutdown(deadline),
                        _ => t.stats,
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for s in &stats {
            total.add(s);
        }
        total
    }
}
