//! The report for people: a terminal table and a Markdown document (with the chart).
use std::fmt::Write as _;

use super::report::{Report, Verdict};

/// Text table with aligned columns; `right[i]` right-aligns column i (numbers).
pub fn grid(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let n = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < n {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    let dashes: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(dashes.iter().map(String::as_str).collect()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Markdown table; `|` in cells is escaped.
pub fn md_table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n|{}|\n",
        headers.join(" | "),
        (0..headers.len())
            .map(|i| if right.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        out.push_str(&format!(
            "| {} |\n",
            row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Met => "met",
        Verdict::Missed => "MISSED",
        Verdict::NotMeasured => "not measured",
    }
}

/// One table of the report: headers, rows, which columns are numbers.
struct Table {
    title: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
    /// Lines printed under the table.
    after: Vec<String>,
}

fn tables(r: &Report) -> Vec<Table> {
    let mut out = Vec::new();

    let mut rows = Vec::new();
    for w in &r.workloads {
        let mut first = true;
        for c in r.results.iter().filter(|c| c.workload == w.id) {
            rows.push(vec![
                if first {
                    format!("{} {}", w.id, w.title)
                } else {
                    String::new()
                },
                c.condition.to_owned(),
                c.samples_s.len().to_string(),
                format!("{:.3}", c.min_s),
                format!("{:.3}", c.median_s),
                opt(c.ratio_min, 3),
                opt(c.ratio_median, 3),
                opt(c.added_us_per_op, 1),
                opt(c.kernel_ns_per_op, 0),
            ]);
            first = false;
        }
    }
    let after = r
        .conditions
        .iter()
        .filter_map(|c| c.unavailable.as_ref().map(|why| format!("{}: {why}", c.id)))
        .collect();
    out.push(Table {
        title: "Wall time per workload run (seconds), ratio to no monitor".into(),
        headers: vec![
            "workload",
            "condition",
            "runs",
            "min s",
            "median s",
            "ratio min",
            "ratio median",
            "+us/op",
            "bpf ns/op",
        ],
        rows,
        right: vec![false, false, true, true, true, true, true, true, true],
        after,
    });

    let rows = r
        .monitors
        .iter()
        .map(|m| {
            vec![
                m.condition.to_owned(),
                m.processes.join("+"),
                format!("{:.2}", m.cpu_s),
                opt(m.cpu_share_of_core.map(|s| s * 100.0), 2),
                opt(m.peak_rss_mib, 1),
                opt(m.ready_s, 2),
                opt(m.startup_cpu_s, 2),
                opt_u(m.events_lost),
                opt_u(m.alerts),
            ]
        })
        .collect();
    out.push(Table {
        title: "Monitor cost while the workloads ran (all rounds)".into(),
        headers: vec![
            "condition",
            "processes",
            "cpu s",
            "% of a core",
            "peak RSS MiB",
            "ready s",
            "start cpu s",
            "events lost",
            "alerts",
        ],
        rows,
        right: vec![false, false, true, true, true, true, true, true, true],
        after: Vec::new(),
    });

    if !r.kernel_programs.is_empty() {
        let rows = r
            .kernel_programs
            .iter()
            .map(|p| {
                vec![
                    p.condition.to_owned(),
                    p.program.clone(),
                    p.run_cnt.to_string(),
                    opt(p.ns_per_run, 0),
                    format!("{:.1}", p.run_time_ns as f64 / 1e6),
                ]
            })
            .collect();
        out.push(Table {
            title: "pthwatch kernel programs (kernel.bpf_stats_enabled)".into(),
            headers: vec!["condition", "program", "runs", "ns/run", "total ms"],
            rows,
            right: vec![false, false, true, true, true],
            after: Vec::new(),
        });
    }

    let mut rows = Vec::new();
    if let Some(i) = &r.idle {
        rows.push(vec![
            format!("idle host, pthwatch --mode {}", i.mode),
            format!(
                "{:.2}% of a core over {:.0} s, RSS {:.1} MiB (peak {:.1}), load {}",
                i.cpu_share_of_core * 100.0,
                i.seconds,
                i.rss_mib,
                i.peak_rss_mib,
                i.loadavg
            ),
        ]);
    }
    if let Some(x) = &r.rate {
        rows.push(vec![
            format!(
                "{} Python starts/s with hooks, --mode {}",
                x.target_per_sec, x.mode
            ),
            format!(
                "{} starts at {:.0}/s, {} failed, events lost {}",
                x.starts,
                x.achieved_per_sec,
                x.failures,
                opt_u(x.events_lost)
            ),
        ]);
    }
    if let Some(g) = &r.restart {
        rows.push(vec![
            format!("restart (SIGTERM, then start), --mode {}", g.mode),
            format!(
                "no enforcement for {:.0} ms (median of {}, max {:.0}): stop {:.0} ms, start to READY {:.0} ms",
                g.gap_ms, g.restarts, g.gap_ms_max, g.stop_ms, g.start_ms
            ),
        ]);
    }
    if !rows.is_empty() {
        out.push(Table {
            title: "Daemon on an idle host, under a start rate, and restarted".into(),
            headers: vec!["check", "result"],
            rows,
            right: vec![false, false],
            after: Vec::new(),
        });
    }

    for s in &r.scaling {
        let rows = s
            .points
            .iter()
            .map(|p| {
                vec![
                    format!("{}x", p.factor),
                    p.size.clone(),
                    opt(p.w2_none_s, 3),
                    opt(p.w2_pthwatch_s, 3),
                    opt(p.ratio, 3),
                    opt(p.added_us_per_start, 0),
                    opt(p.ready_s, 2),
                    opt(p.daemon_cpu_ms_per_start, 3),
                    opt(p.peak_rss_mib, 1),
                    opt(p.kernel_ns_per_start, 0),
                    opt_u(p.events_lost),
                ]
            })
            .collect();
        out.push(Table {
            title: format!("Scaling: {} (W2 under pthwatch)", s.title),
            headers: vec![
                "level",
                "size",
                "W2 none s",
                "W2 pthwatch s",
                "ratio",
                "+us/start",
                "ready s",
                "daemon cpu ms/start",
                "peak RSS MiB",
                "bpf ns/start",
                "lost",
            ],
            rows,
            right: vec![
                false, false, true, true, true, true, true, true, true, true, true,
            ],
            after: s.note.iter().cloned().collect(),
        });
    }

    let rows = r
        .targets
        .iter()
        .map(|t| {
            vec![
                t.target.clone(),
                t.measured.clone(),
                verdict(t.verdict).to_owned(),
            ]
        })
        .collect();
    out.push(Table {
        title: "Targets (reported, not asserted)".into(),
        headers: vec!["target", "measured", "verdict"],
        rows,
        right: vec![false, false, false],
        after: Vec::new(),
    });
    out
}

fn header_line(r: &Report) -> String {
    let m = &r.meta;
    format!(
        "kernel {}, {} CPUs, {} rounds{}, {:.0} s; load average {} before, {} after",
        m.kernel,
        m.cpus,
        m.sizes.rounds,
        if m.quick {
            " (--quick: tiny sizes)"
        } else {
            ""
        },
        m.duration_s,
        m.loadavg_start,
        m.loadavg_end
    )
}

/// The terminal report.
pub fn terminal(r: &Report) -> String {
    let mut out = format!("pthwatch benchmark: {}\n", header_line(r));
    for t in tables(r) {
        let _ = write!(
            out,
            "\n{}\n{}",
            t.title,
            grid(&t.headers, &t.rows, &t.right)
        );
        for a in &t.after {
            let _ = writeln!(out, "  {a}");
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// The Markdown report; `chart` is the SVG's file name, next to it.
pub fn markdown(r: &Report, chart: &str) -> String {
    let mut out = String::from("# pthwatch benchmark results\n\n");
    let _ = writeln!(out, "{}.\n", header_line(r));
    let _ = writeln!(
        out,
        "Generated by `cargo xtask bench{}`. The method and every column are described in \
         `docs/benchmarks.md` of the pthwatch repository.\n",
        if r.meta.quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "![Ratio of each workload's median time to no monitor]({chart})\n"
    );
    let _ = writeln!(out, "## Workloads\n");
    for w in &r.workloads {
        let _ = writeln!(out, "- **{}** {}: {}.", w.id, w.title, w.description);
    }
    out.push('\n');
    for t in tables(r) {
        let _ = write!(
            out,
            "## {}\n\n{}",
            t.title,
            md_table(&t.headers, &t.rows, &t.right)
        );
        for a in &t.after {
            let _ = writeln!(out, "\n- {a}");
        }
        out.push('\n');
    }
    if !r.notes.is_empty() {
        out.push_str("## Notes\n\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_aligns_numbers_right() {
        let rows = vec![
            vec!["W1".to_owned(), "1.5".to_owned()],
            vec!["W10".to_owned(), "12.25".to_owned()],
        ];
        let t = grid(&["workload", "s"], &rows, &[false, true]);
        assert_eq!(
            t,
            "workload      s\n--------  -----\nW1          1.5\nW10       12.25\n"
        );
    }

    #[test]
    fn markdown_tables_escape_pipes() {
        let t = md_table(
            &["a", "b"],
            &[vec!["x|y".into(), "2".into()]],
            &[false, true],
        );
        assert_eq!(t, "| a | b |\n|---|---:|\n| x\\|y | 2 |\n");
    }

    #[test]
    fn missing_values_show_a_dash() {
        assert_eq!(opt(None, 3), "-");
        assert_eq!(opt(Some(1.23456), 2), "1.23");
    }
}
