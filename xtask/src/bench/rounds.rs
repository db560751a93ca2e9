//! The main measurement: every condition in turn, each round (none, floor, alert, block,
//! auditd, bpftrace, none, floor, ...), every workload once per condition and round. A
//! monitor is started fresh for each round and stopped completely before the next
//! condition, so slow drifts of the host (other jobs, caches) spread evenly over the
//! conditions instead of favouring one.
//!
//! The timed rounds run as a user would, without `kernel.bpf_stats_enabled` (which adds
//! clock reads to every BPF program run, pthwatch's and the floor's alike). The
//! kernel-side cost per program comes from a separate, untimed pass afterwards: each
//! pthwatch condition once more, with the statistics on, every workload
//! `STATS_PASS_RUNS` times.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    bpfstats,
    condition::{Active, Condition, StartContext},
    host::{Host, check_interrupted, sleep},
    procstat::{cpu_seconds, cpu_seconds_all, memory_kib},
    report::{MonitorUsage, ProgramCost, Samples},
    stats::{core_fraction, median},
    workloads::{self, Fixtures, Sizes, Workload},
};

/// What the rounds need.
pub struct Plan<'a> {
    pub pthwatch: &'a Path,
    pub fixtures: &'a Fixtures,
    pub sizes: &'a Sizes,
    pub workloads: &'a [Workload],
    pub conditions: &'a [Condition],
    /// Run the kernel-cost pass (`kernel.bpf_stats_enabled`) after the rounds.
    pub bpf_stats: bool,
    /// Pause after a monitor is ready, and after it stopped.
    pub settle: Duration,
}

pub struct Measured {
    pub samples: Samples,
    pub monitors: Vec<MonitorUsage>,
    pub programs: Vec<ProgramCost>,
    /// Conditions that could not run here, with the reason.
    pub unavailable: BTreeMap<Condition, String>,
    pub notes: Vec<String>,
}

/// Running totals of one condition's monitor.
#[derive(Default)]
struct Usage {
    processes: Vec<String>,
    cpu_s: f64,
    window_s: f64,
    peak_rss_kib: Option<u64>,
    ready_s: Vec<f64>,
    startup_cpu_s: Vec<f64>,
    events_lost: Option<u64>,
    alerts: Option<u64>,
    programs: BTreeMap<String, (u64, u64)>,
}

/// How often the kernel-cost pass runs each workload.
const STATS_PASS_RUNS: usize = 2;

pub fn homes_for_rounds(fx: &Fixtures) -> Vec<PathBuf> {
    // The W5 home, so its hooks are in the inventory as on a real host.
    vec![fx.hook_home.clone()]
}

pub fn run(host: &mut Host, plan: &Plan<'_>) -> Result<Measured> {
    let mut out = Measured {
        samples: Samples::default(),
        monitors: Vec::new(),
        programs: Vec::new(),
        unavailable: BTreeMap::new(),
        notes: Vec::new(),
    };
    eprintln!("bench: warm-up (one untimed run of each workload, no monitor)");
    for &w in plan.workloads {
        workloads::run(w, plan.fixtures, plan.sizes)?;
    }
    let homes = homes_for_rounds(plan.fixtures);
    let mut usage: BTreeMap<Condition, Usage> = BTreeMap::new();
    let rounds = plan.sizes.rounds;
    for round in 1..=rounds {
        for &cond in plan.conditions {
            if out.unavailable.contains_key(&cond) {
                continue;
            }
            check_interrupted()?;
            eprintln!("bench: round {round}/{rounds}: {}", cond.label());
            let cx = StartContext {
                pthwatch_bin: plan.pthwatch,
                homes: &homes,
                tag: format!("{cond}-r{round}"),
                bpf_stats: false,
            };
            let active = match Active::start(cond, host, &cx) {
                Ok(a) => a,
                Err(e) if cond.is_optional() => {
                    check_interrupted()?;
                    let why = format!("unavailable: {e:#}");
                    eprintln!("bench: {cond} {why}");
                    out.unavailable.insert(cond, why);
                    continue;
                }
                Err(e) => return Err(e.context(format!("starting {}", cond.label()))),
            };
            sleep(plan.settle);
            let u = usage.entry(cond).or_default();
            let pids = active.pids();
            if u.processes.is_empty() {
                u.processes = pids.iter().map(|(n, _)| n.clone()).collect();
                u.processes.dedup();
            }
            let pid_list: Vec<u32> = pids.iter().map(|(_, p)| *p).collect();
            if let Some(r) = active.ready_s() {
                u.ready_s.push(r);
            }
            let main = active.main_pid();
            if cond.is_pthwatch()
                && let Some(c) = main.and_then(cpu_seconds)
            {
                u.startup_cpu_s.push(c);
            }
            let cpu0 = cpu_seconds_all(&pid_list);
            let t0 = Instant::now();
            for &w in plan.workloads {
                let took = workloads::run(w, plan.fixtures, plan.sizes)?;
                out.samples
                    .wall
                    .entry((w, cond))
                    .or_default()
                    .push(took.as_secs_f64());
            }
            u.cpu_s += cpu_seconds_all(&pid_list) - cpu0;
            u.window_s += t0.elapsed().as_secs_f64();
            if let Some((hwm, _)) = main.and_then(memory_kib) {
                u.peak_rss_kib = Some(u.peak_rss_kib.unwrap_or(0).max(hwm));
            }
            stop(host, active, cond, round, u, &mut out.notes)?;
            sleep(plan.settle / 2);
        }
    }
    if plan.bpf_stats {
        for &cond in plan.conditions.iter().filter(|c| c.is_pthwatch()) {
            check_interrupted()?;
            eprintln!(
                "bench: kernel-cost pass (kernel.bpf_stats_enabled=1, untimed): {}",
                cond.label()
            );
            let cx = StartContext {
                pthwatch_bin: plan.pthwatch,
                homes: &homes,
                tag: format!("{cond}-stats"),
                bpf_stats: true,
            };
            let active = Active::start(cond, host, &cx)
                .map_err(|e| e.context(format!("starting {}", cond.label())))?;
            sleep(plan.settle);
            let u = usage.entry(cond).or_default();
            let main = active.main_pid();
            for _ in 0..STATS_PASS_RUNS {
                for &w in plan.workloads {
                    let snap = || main.and_then(|p| bpfstats::snapshot(p).ok());
                    let before = snap();
                    workloads::run(w, plan.fixtures, plan.sizes)?;
                    if let (Some(b), Some(a)) = (before, snap()) {
                        let d = bpfstats::delta(&b, &a);
                        out.samples
                            .kernel_ns
                            .entry((w, cond))
                            .or_default()
                            .push(bpfstats::total_ns(&d) as f64);
                        bpfstats::accumulate(&mut u.programs, &d);
                    }
                }
            }
            stop(host, active, cond, 0, u, &mut out.notes)?;
            sleep(plan.settle / 2);
        }
    }
    for (cond, u) in usage {
        for (name, (cnt, ns)) in &u.programs {
            out.programs.push(ProgramCost {
                condition: cond.id(),
                program: name.clone(),
                run_cnt: *cnt,
                run_time_ns: *ns,
                ns_per_run: (*cnt > 0).then(|| *ns as f64 / *cnt as f64),
            });
        }
        if cond == Condition::None {
            continue;
        }
        out.monitors.push(MonitorUsage {
            condition: cond.id(),
            processes: u.processes,
            cpu_s: u.cpu_s,
            window_s: u.window_s,
            cpu_share_of_core: core_fraction(u.cpu_s, u.window_s),
            peak_rss_mib: u.peak_rss_kib.map(|k| k as f64 / 1024.0),
            ready_s: median(&u.ready_s),
            startup_cpu_s: median(&u.startup_cpu_s),
            events_lost: u.events_lost,
            alerts: u.alerts,
        });
    }
    out.programs.retain(|p| p.run_cnt > 0);
    Ok(out)
}

/// Stops a condition after a round (`round` 0: the kernel-cost pass), adding pthwatch's
/// counters to its totals.
fn stop(
    host: &mut Host,
    active: Active,
    cond: Condition,
    round: usize,
    u: &mut Usage,
    notes: &mut Vec<String>,
) -> Result<()> {
    let when = if round == 0 {
        "kernel-cost pass".to_owned()
    } else {
        format!("round {round}")
    };
    match active.stop(host) {
        Ok(Some(log)) => {
            if let Some(l) = log.events_lost {
                u.events_lost = Some(u.events_lost.unwrap_or(0) + l);
            }
            if let Some(a) = log.alerts {
                u.alerts = Some(u.alerts.unwrap_or(0) + a);
            }
            if log.events_lost.is_none() {
                notes.push(format!(
                    "{cond} {when}: pthwatch logged no counters at stop"
                ));
            }
        }
        Ok(None) => {}
        Err(e) if cond.is_pthwatch() => {
            return Err(e.context(format!("stopping {}", cond.label())));
        }
        Err(e) => notes.push(format!("{cond} {when}: {e:#}")),
    }
    Ok(())
}
