//! The targets, checked against one run. Reported, never asserted: a benchmark
//! on a shared VM is not a test.
use super::report::{Report, TargetCheck, Verdict};

/// Ratio limits per workload (pthwatch, either mode, to no monitor, same run).
pub const RATIO_LIMITS: [(&str, f64); 5] = [
    ("W1", 1.02),
    ("W2", 1.05),
    ("W3", 1.10),
    ("W4", 1.03),
    ("W5", 1.10),
];
/// Added time per interpreter start (W2), in microseconds.
pub const W2_ADDED_US: f64 = 1000.0;
pub const IDLE_CPU_SHARE: f64 = 0.01;
pub const IDLE_RSS_MB: f64 = 40.0;
/// pthwatch's overhead may be at most this fraction of auditd's.
pub const AUDITD_FRACTION: f64 = 0.2;

const PTHWATCH: [&str; 2] = ["alert", "block"];

/// The limit for `workload`, if it has one.
pub fn ratio_limit(workload: &str) -> Option<f64> {
    RATIO_LIMITS
        .iter()
        .find(|(w, _)| *w == workload)
        .map(|(_, l)| *l)
}

fn check(target: String, measured: String, verdict: Verdict) -> TargetCheck {
    TargetCheck {
        target,
        measured,
        verdict,
    }
}

fn not_measured(target: String, why: &str) -> TargetCheck {
    check(target, why.to_owned(), Verdict::NotMeasured)
}

/// `(mode, value)` of the pthwatch cells of `workload` that have `field`.
fn pthwatch_values(
    r: &Report,
    workload: &str,
    field: impl Fn(&super::report::Cell) -> Option<f64>,
) -> Vec<(&'static str, f64)> {
    PTHWATCH
        .iter()
        .filter_map(|m| r.cell(workload, m).and_then(&field).map(|v| (*m, v)))
        .collect()
}

pub fn evaluate(r: &Report) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for (w, limit) in RATIO_LIMITS {
        let target = format!("{w} ratio <= {limit:.2}");
        let vals = pthwatch_values(r, w, |c| c.ratio_median);
        if vals.is_empty() {
            out.push(not_measured(target, "no pthwatch run of this workload"));
            continue;
        }
        let worst = vals.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
        let mut measured = vals
            .iter()
            .map(|(m, v)| format!("{m} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(floor) = r.cell(w, "floor").and_then(|c| c.ratio_median) {
            measured.push_str(&format!("; floor {floor:.3}"));
        }
        let verdict = if worst <= limit {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        out.push(check(target, measured, verdict));
    }

    let target = format!(
        "W2 adds < {:.0} ms per interpreter start",
        W2_ADDED_US / 1000.0
    );
    let vals = pthwatch_values(r, "W2", |c| c.added_us_per_op);
    if vals.is_empty() {
        out.push(not_measured(target, "no pthwatch run of W2"));
    } else {
        let worst = vals.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
        let measured = vals
            .iter()
            .map(|(m, v)| format!("{m} {:.3} ms", v / 1000.0))
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = if worst < W2_ADDED_US {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        out.push(check(target, measured, verdict));
    }

    out.push(rate_check(r));

    let target = "no events lost during the workloads".to_owned();
    let lost: Vec<(&str, u64)> = PTHWATCH
        .iter()
        .filter_map(|m| r.monitor(m).and_then(|u| u.events_lost).map(|l| (*m, l)))
        .collect();
    if lost.is_empty() {
        out.push(not_measured(target, "no pthwatch condition ran"));
    } else {
        let measured = lost
            .iter()
            .map(|(m, l)| format!("{m} {l}"))
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = if lost.iter().all(|(_, l)| *l == 0) {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        out.push(check(target, measured, verdict));
    }

    let cpu_target = format!("idle daemon CPU < {:.0}% of a core", IDLE_CPU_SHARE * 100.0);
    let rss_target = format!("idle daemon RSS < {IDLE_RSS_MB:.0} MB");
    match &r.idle {
        Some(idle) => {
            out.push(check(
                cpu_target,
                format!(
                    "{:.2}% over {:.0} s",
                    idle.cpu_share_of_core * 100.0,
                    idle.seconds
                ),
                if idle.cpu_share_of_core < IDLE_CPU_SHARE {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            ));
            let mb = idle.rss_mib * 1_048_576.0 / 1e6;
            out.push(check(
                rss_target,
                format!(
                    "{mb:.1} MB (peak {:.1} MB)",
                    idle.peak_rss_mib * 1_048_576.0 / 1e6
                ),
                if mb < IDLE_RSS_MB {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            ));
        }
        None => {
            out.push(not_measured(cpu_target, "idle check not run"));
            out.push(not_measured(rss_target, "idle check not run"));
        }
    }

    out.push(auditd_check(r));
    out
}

fn rate_check(r: &Report) -> TargetCheck {
    let target = "no events lost at 100 Python starts a second".to_owned();
    let Some(rate) = &r.rate else {
        return not_measured(target, "rate check not run");
    };
    let Some(lost) = rate.events_lost else {
        return not_measured(target, "the daemon logged no counters");
    };
    let measured = format!(
        "{lost} lost, {} starts at {:.0}/s ({} failed)",
        rate.starts, rate.achieved_per_sec, rate.failures
    );
    if rate.achieved_per_sec < 0.9 * rate.target_per_sec as f64 {
        return check(
            target,
            format!("{measured}: the host could not keep up the rate"),
            Verdict::NotMeasured,
        );
    }
    check(
        target,
        measured,
        if lost == 0 {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    )
}

/// pthwatch's overhead (worst mode) against auditd's, per workload where auditd's
/// overhead stands out of the noise (ratio above 1).
fn auditd_check(r: &Report) -> TargetCheck {
    let target = format!("overhead <= {:.0}% of auditd's", AUDITD_FRACTION * 100.0);
    let mut parts = Vec::new();
    let mut all_met = true;
    for (w, _) in RATIO_LIMITS {
        let Some(aud) = r.cell(w, "auditd").and_then(|c| c.ratio_median) else {
            continue;
        };
        let vals = pthwatch_values(r, w, |c| c.ratio_median);
        if vals.is_empty() || aud <= 1.0 {
            continue;
        }
        let pth = vals.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
        let share = (pth - 1.0).max(0.0) / (aud - 1.0);
        all_met &= share <= AUDITD_FRACTION;
        parts.push(format!(
            "{w} {:+.1}% vs {:+.1}% ({:.0}%)",
            (pth - 1.0) * 100.0,
            (aud - 1.0) * 100.0,
            share * 100.0
        ));
    }
    if parts.is_empty() {
        return not_measured(target, "auditd not measured (or no overhead above noise)");
    }
    check(
        target,
        parts.join("; "),
        if all_met {
            Verdict::Met
        } else {
            Verdict::Missed
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Cell, IdleUsage, Meta, MonitorUsage, RateCheck};
    use crate::bench::workloads::Sizes;

    fn cell(w: &'static str, c: &'static str, ratio: f64, added: f64) -> Cell {
        Cell {
            workload: w,
            condition: c,
            samples_s: vec![1.0],
            min_s: 1.0,
            median_s: 1.0,
            ratio_min: Some(ratio),
            ratio_median: Some(ratio),
            added_us_per_op: Some(added),
            kernel_ns_per_op: None,
        }
    }

    fn report(results: Vec<Cell>) -> Report {
        Report {
            meta: Meta {
                format: 1,
                kernel: String::new(),
                cpus: 2,
                started_unix: 0,
                duration_s: 0.0,
                quick: true,
                sizes: Sizes::quick(),
                pthwatch: String::new(),
                pthwatch_version: String::new(),
                bpf_stats: true,
                loadavg_start: String::new(),
                loadavg_end: String::new(),
            },
            workloads: Vec::new(),
            conditions: Vec::new(),
            results,
            monitors: vec![MonitorUsage {
                condition: "block",
                processes: vec![],
                cpu_s: 0.0,
                window_s: 1.0,
                cpu_share_of_core: None,
                peak_rss_mib: None,
                ready_s: None,
                startup_cpu_s: None,
                events_lost: Some(0),
                alerts: None,
            }],
            kernel_programs: Vec::new(),
            idle: Some(IdleUsage {
                mode: "alert",
                seconds: 30.0,
                cpu_s: 0.06,
                cpu_share_of_core: 0.002,
                rss_mib: 20.0,
                peak_rss_mib: 30.0,
                loadavg: String::new(),
            }),
            rate: Some(RateCheck {
                mode: "block",
                target_per_sec: 100,
                achieved_per_sec: 60.0,
                starts: 1000,
                failures: 0,
                events_lost: Some(0),
            }),
            restart: None,
            scaling: Vec::new(),
            targets: Vec::new(),
            restored: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn verdict_of(checks: &[TargetCheck], prefix: &str) -> Verdict {
        checks
            .iter()
            .find(|c| c.target.starts_with(prefix))
            .unwrap()
            .verdict
    }

    #[test]
    fn worst_mode_decides_each_ratio_target() {
        let r = report(vec![
            cell("W1", "alert", 1.01, 0.0),
            cell("W1", "block", 1.03, 0.0),
            cell("W2", "block", 1.04, 900.0),
            cell("W2", "auditd", 1.30, 0.0),
            cell("W1", "auditd", 1.20, 0.0),
        ]);
        let checks = evaluate(&r);
        assert_eq!(verdict_of(&checks, "W1 ratio"), Verdict::Missed);
        assert_eq!(verdict_of(&checks, "W2 ratio"), Verdict::Met);
        assert_eq!(verdict_of(&checks, "W3 ratio"), Verdict::NotMeasured);
        assert_eq!(verdict_of(&checks, "W2 adds"), Verdict::Met);
        assert_eq!(verdict_of(&checks, "no events lost during"), Verdict::Met);
        assert_eq!(verdict_of(&checks, "idle daemon CPU"), Verdict::Met);
        assert_eq!(verdict_of(&checks, "idle daemon RSS"), Verdict::Met);
        // 60/s is not 100/s: the loss check does not count.
        assert_eq!(
            verdict_of(&checks, "no events lost at"),
            Verdict::NotMeasured
        );
        // W1: 3% of 20% is 15% (met); W2: 4% of 30% is 13% (met).
        assert_eq!(verdict_of(&checks, "overhead"), Verdict::Met);
    }

    #[test]
    fn a_measured_floor_is_shown_next_to_the_ratio_without_changing_the_verdict() {
        let r = report(vec![
            cell("W1", "alert", 1.12, 0.0),
            cell("W1", "floor", 1.10, 0.0),
            cell("W4", "alert", 1.01, 0.0),
        ]);
        let checks = evaluate(&r);
        let w1 = checks
            .iter()
            .find(|c| c.target.starts_with("W1 ratio"))
            .unwrap();
        assert_eq!(w1.measured, "alert 1.120; floor 1.100");
        assert_eq!(w1.verdict, Verdict::Missed);
        let w4 = checks
            .iter()
            .find(|c| c.target.starts_with("W4 ratio"))
            .unwrap();
        assert_eq!(w4.measured, "alert 1.010");
    }

    #[test]
    fn overhead_beyond_a_fifth_of_auditd_is_missed() {
        let r = report(vec![
            cell("W3", "alert", 1.05, 0.0),
            cell("W3", "auditd", 1.10, 0.0),
        ]);
        assert_eq!(verdict_of(&evaluate(&r), "overhead"), Verdict::Missed);
        let r = report(vec![cell("W3", "alert", 1.05, 0.0)]);
        assert_eq!(verdict_of(&evaluate(&r), "overhead"), Verdict::NotMeasured);
    }
}
