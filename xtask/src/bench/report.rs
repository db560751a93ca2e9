//! Everything one bench run found, as the JSON document (`--json`) and the input of the
//! table, the Markdown report and the chart.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    condition::Condition,
    stats::{added_us_per_op, ratio, summarize},
    workloads::{Sizes, Workload},
};

#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub workloads: Vec<WorkloadInfo>,
    pub conditions: Vec<ConditionInfo>,
    /// One per (workload, condition) measured.
    pub results: Vec<Cell>,
    pub monitors: Vec<MonitorUsage>,
    pub kernel_programs: Vec<ProgramCost>,
    pub idle: Option<IdleUsage>,
    pub rate: Option<RateCheck>,
    pub restart: Option<RestartGap>,
    pub scaling: Vec<ScalingSeries>,
    pub targets: Vec<TargetCheck>,
    /// What restoring the machine did.
    pub restored: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    /// Version of this document's layout; bumped when a field changes meaning.
    pub format: u32,
    pub kernel: String,
    pub cpus: usize,
    pub started_unix: u64,
    pub duration_s: f64,
    pub quick: bool,
    pub sizes: Sizes,
    pub pthwatch: String,
    /// `pthwatch --version`.
    pub pthwatch_version: String,
    pub bpf_stats: bool,
    /// `/proc/loadavg` before and after: a busy host makes every number noisier.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

#[derive(Debug, Serialize)]
pub struct WorkloadInfo {
    pub id: &'static str,
    pub title: &'static str,
    pub description: String,
    pub ops: u64,
    pub unit: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ConditionInfo {
    pub id: &'static str,
    pub label: &'static str,
    /// `None` when it was measured; else why not ("unavailable: ...").
    pub unavailable: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub workload: &'static str,
    pub condition: &'static str,
    /// Wall time of each round, in order.
    pub samples_s: Vec<f64>,
    pub min_s: f64,
    pub median_s: f64,
    /// `min / min(no monitor)`.
    pub ratio_min: Option<f64>,
    /// `median / median(no monitor)`: the headline number.
    pub ratio_median: Option<f64>,
    /// `(median - median(no monitor)) / ops`, in microseconds.
    pub added_us_per_op: Option<f64>,
    /// pthwatch only: median kernel (BPF) time per unit of work, in nanoseconds.
    pub kernel_ns_per_op: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MonitorUsage {
    pub condition: &'static str,
    pub processes: Vec<String>,
    /// CPU used while the workloads ran, all rounds together.
    pub cpu_s: f64,
    /// Wall time of those windows.
    pub window_s: f64,
    pub cpu_share_of_core: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Median seconds from start to ready (pthwatch: READY=1).
    pub ready_s: Option<f64>,
    /// Median CPU seconds spent getting ready (loading sensors, inventory).
    pub startup_cpu_s: Option<f64>,
    /// pthwatch only: ring buffer drops, all rounds together.
    pub events_lost: Option<u64>,
    pub alerts: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub condition: &'static str,
    pub program: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub ns_per_run: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct IdleUsage {
    pub mode: &'static str,
    pub seconds: f64,
    pub cpu_s: f64,
    pub cpu_share_of_core: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub loadavg: String,
}

#[derive(Debug, Serialize)]
pub struct RateCheck {
    pub mode: &'static str,
    pub target_per_sec: u64,
    pub achieved_per_sec: f64,
    pub starts: u64,
    pub failures: u64,
    pub events_lost: Option<u64>,
}

/// Medians over `restarts` restarts, in milliseconds.
#[derive(Debug, Serialize)]
pub struct RestartGap {
    pub mode: &'static str,
    pub restarts: usize,
    /// SIGTERM to exit of the old daemon.
    pub stop_ms: f64,
    /// Spawn to READY=1 of the new one.
    pub start_ms: f64,
    /// SIGTERM to READY=1: the host is not enforced for this long.
    pub gap_ms: f64,
    pub gap_ms_max: f64,
}

#[derive(Debug, Serialize)]
pub struct ScalingSeries {
    pub dimension: &'static str,
    pub title: &'static str,
    /// Why it was not measured, or a caveat.
    pub note: Option<String>,
    pub points: Vec<ScalingPoint>,
}

#[derive(Debug, Serialize)]
pub struct ScalingPoint {
    pub factor: u64,
    /// What that factor means here ("100 idle interpreters", "1000 hooks in 100 site dirs").
    pub size: String,
    pub w2_none_s: Option<f64>,
    pub w2_pthwatch_s: Option<f64>,
    pub ratio: Option<f64>,
    pub added_us_per_start: Option<f64>,
    pub ready_s: Option<f64>,
    pub daemon_cpu_ms_per_start: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub kernel_ns_per_start: Option<f64>,
    pub events_lost: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// Raw timings: (workload, condition) -> seconds per round, plus kernel ns per run.
#[derive(Default)]
pub struct Samples {
    pub wall: BTreeMap<(Workload, Condition), Vec<f64>>,
    pub kernel_ns: BTreeMap<(Workload, Condition), Vec<f64>>,
}

/// The result cells, with ratios to the no-monitor cell of the same workload.
pub fn cells(samples: &Samples, sizes: &Sizes) -> Vec<Cell> {
    let mut out = Vec::new();
    for (&(w, c), wall) in &samples.wall {
        let Some(s) = summarize(wall) else { continue };
        let base = samples
            .wall
            .get(&(w, Condition::None))
            .and_then(|b| summarize(b));
        let ops = sizes.ops(w);
        let kernel = samples
            .kernel_ns
            .get(&(w, c))
            .and_then(|k| summarize(k))
            .map(|k| k.median / ops.max(1) as f64);
        out.push(Cell {
            workload: w.id(),
            condition: c.id(),
            samples_s: wall.clone(),
            min_s: s.min,
            median_s: s.median,
            ratio_min: base.and_then(|b| ratio(s.min, b.min)),
            ratio_median: base.and_then(|b| ratio(s.median, b.median)),
            added_us_per_op: base
                .filter(|_| c != Condition::None)
                .and_then(|b| added_us_per_op(s.median, b.median, ops)),
            kernel_ns_per_op: kernel,
        });
    }
    out
}

impl Report {
    pub fn cell(&self, w: &str, c: &str) -> Option<&Cell> {
        self.results
            .iter()
            .find(|x| x.workload == w && x.condition == c)
    }

    pub fn monitor(&self, c: &str) -> Option<&MonitorUsage> {
        self.monitors.iter().find(|m| m.condition == c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_carry_ratios_to_no_monitor() {
        let mut s = Samples::default();
        s.wall
            .insert((Workload::W2, Condition::None), vec![3.0, 3.2, 3.1]);
        s.wall
            .insert((Workload::W2, Condition::Block), vec![3.3, 3.1, 3.2]);
        s.wall.insert((Workload::W4, Condition::Alert), vec![1.0]);
        s.kernel_ns
            .insert((Workload::W2, Condition::Block), vec![3e6, 6e6, 9e6]);
        let sizes = Sizes::quick();
        let cells = cells(&s, &sizes);
        assert_eq!(cells.len(), 3);
        let none = cells
            .iter()
            .find(|c| c.workload == "W2" && c.condition == "none")
            .unwrap();
        assert_eq!(none.ratio_median, Some(1.0));
        assert_eq!(none.added_us_per_op, None);
        let block = cells
            .iter()
            .find(|c| c.workload == "W2" && c.condition == "block")
            .unwrap();
        assert!((block.ratio_median.unwrap() - 3.2 / 3.1).abs() < 1e-12);
        assert!((block.ratio_min.unwrap() - 3.1 / 3.0).abs() < 1e-12);
        // 0.1 s over 10 starts.
        assert!((block.added_us_per_op.unwrap() - 10_000.0).abs() < 1e-6);
        assert_eq!(block.kernel_ns_per_op, Some(6e6 / 10.0));
        // No baseline for W4: no ratio.
        let w4 = cells.iter().find(|c| c.workload == "W4").unwrap();
        assert_eq!(w4.ratio_median, None);
    }
}
