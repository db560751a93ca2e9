//! The conditions a workload runs under, and starting and stopping each.
use std::{fmt, path::PathBuf};

use anyhow::{Context as _, Result};

use super::{
    audit::Auditd,
    bpftrace::{self, Bpftrace},
    host::Host,
    pthwatch::{DaemonLog, Pthwatch, PthwatchOptions},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    None,
    Floor,
    Alert,
    Block,
    Auditd,
    Bpftrace,
}

impl Condition {
    pub const ALL: [Self; 6] = [
        Self::None,
        Self::Floor,
        Self::Alert,
        Self::Block,
        Self::Auditd,
        Self::Bpftrace,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Floor => "floor",
            Self::Alert => "alert",
            Self::Block => "block",
            Self::Auditd => "auditd",
            Self::Bpftrace => "bpftrace",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no monitor",
            Self::Floor => "floor (pthwatch's syscall tracepoints, empty programs)",
            Self::Alert => "pthwatch --mode alert",
            Self::Block => "pthwatch --mode block",
            Self::Auditd => "auditd (execve, openat, connect)",
            Self::Bpftrace => "bpftrace (same tracepoints, python only)",
        }
    }

    pub fn is_pthwatch(self) -> bool {
        matches!(self, Self::Alert | Self::Block)
    }

    /// Conditions that need a package which may be missing: an error starting one means
    /// "unavailable here", not a failed run.
    pub fn is_optional(self) -> bool {
        matches!(self, Self::Floor | Self::Auditd | Self::Bpftrace)
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.id().eq_ignore_ascii_case(s.trim()))
            .with_context(|| {
                format!(
                    "unknown condition `{s}`; conditions are none, floor, alert, block, auditd, bpftrace"
                )
            })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A condition in force.
pub enum Active {
    None,
    Pthwatch(Pthwatch),
    Auditd(Auditd),
    Bpftrace(Bpftrace),
    Floor(Bpftrace),
}

/// What starting a condition needs.
pub struct StartContext<'a> {
    pub pthwatch_bin: &'a std::path::Path,
    pub homes: &'a [PathBuf],
    /// A name for this start's scratch directory (`alert-r2`).
    pub tag: String,
    /// Enable `kernel.bpf_stats_enabled` while pthwatch runs.
    pub bpf_stats: bool,
}

impl Active {
    /// Starts `cond`. For the optional conditions an error means "unavailable here".
    pub fn start(cond: Condition, host: &mut Host, cx: &StartContext<'_>) -> Result<Self> {
        Ok(match cond {
            Condition::None => Self::None,
            Condition::Alert | Condition::Block => {
                if cx.bpf_stats {
                    host.bpf_stats_on()?;
                }
                let started = Pthwatch::start(&PthwatchOptions {
                    bin: cx.pthwatch_bin,
                    mode: cond.id(),
                    homes: cx.homes,
                    dir: host.dir.join(format!("pthwatch-{}", cx.tag)),
                });
                match started {
                    Ok(p) => Self::Pthwatch(p),
                    Err(e) => {
                        host.bpf_stats_off();
                        return Err(e);
                    }
                }
            }
            Condition::Auditd => Self::Auditd(Auditd::start(host)?),
            Condition::Bpftrace => Self::Bpftrace(Bpftrace::start(
                &host.dir.join(format!("bpftrace-{}", cx.tag)),
                &bpftrace::PYTHON_TRACER,
            )?),
            Condition::Floor => Self::Floor(Bpftrace::start(
                &host.dir.join(format!("floor-{}", cx.tag)),
                &bpftrace::FLOOR,
            )?),
        })
    }

    /// The processes whose CPU and memory are the monitor's cost.
    pub fn pids(&self) -> Vec<(String, u32)> {
        match self {
            Self::None => Vec::new(),
            Self::Pthwatch(p) => vec![("pthwatch".into(), p.pid())],
            Self::Auditd(a) => a.pids(),
            Self::Bpftrace(b) | Self::Floor(b) => vec![("bpftrace".into(), b.pid())],
        }
    }

    /// The process whose peak RSS is reported.
    pub fn main_pid(&self) -> Option<u32> {
        match self {
            Self::None => None,
            Self::Pthwatch(p) => Some(p.pid()),
            Self::Auditd(a) => Some(a.pid()),
            Self::Bpftrace(b) | Self::Floor(b) => Some(b.pid()),
        }
    }

    /// Seconds from spawn to ready, for pthwatch.
    pub fn ready_s(&self) -> Option<f64> {
        match self {
            Self::Pthwatch(p) => Some(p.ready_s),
            _ => None,
        }
    }

    /// Stops the monitor and undoes what starting it changed. Returns pthwatch's log.
    pub fn stop(self, host: &mut Host) -> Result<Option<DaemonLog>> {
        match self {
            Self::None => Ok(None),
            Self::Pthwatch(p) => {
                let log = p.stop();
                host.bpf_stats_off();
                Ok(Some(log?))
            }
            Self::Auditd(a) => a.stop(host).map(|()| None),
            Self::Bpftrace(b) | Self::Floor(b) => b.stop().map(|()| None),
        }
    }
}

/// `--conditions none,alert,...`: `none` is always measured (every ratio needs it).
pub fn parse_list(s: &str) -> Result<Vec<Condition>> {
    let mut v = vec![Condition::None];
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let c = Condition::parse(part)?;
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_lists_always_measure_no_monitor() {
        assert_eq!(
            parse_list("block,alert").unwrap(),
            vec![Condition::None, Condition::Alert, Condition::Block]
        );
        assert_eq!(parse_list("none").unwrap(), vec![Condition::None]);
        assert!(parse_list("auditd,strace").is_err());
    }
}
