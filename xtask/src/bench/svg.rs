//! A grouped bar chart of the ratios to no monitor, as a self-contained SVG (no fonts or
//! scripts to load, so it renders on GitHub and in any browser). Bars start at 1.0, the
//! cost of no monitor; a dashed line marks each workload's target.
use std::fmt::Write as _;

use super::report::Report;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// One value per group; `None` draws nothing.
    pub values: Vec<Option<f64>>,
}

pub struct Chart {
    pub title: String,
    pub groups: Vec<String>,
    pub series: Vec<Series>,
    /// A target per group, drawn as a dashed line.
    pub limits: Vec<Option<f64>>,
    /// Values above this are drawn as broken bars reaching the top, labelled with their
    /// value, so a costly monitor does not flatten the others into the baseline.
    pub clip: Option<f64>,
}

/// Colours by condition, readable on white and by most colour-blind readers.
fn color(condition: &str) -> &'static str {
    match condition {
        "alert" => "#4c78a8",
        "block" => "#1b3a5c",
        "auditd" => "#e45756",
        "bpftrace" => "#f2a93b",
        "floor" => "#b9b9b9",
        _ => "#888888",
    }
}

/// The chart of a report: one group per workload, one bar per monitor condition.
pub fn from_report(r: &Report) -> Chart {
    let groups: Vec<&str> = r.workloads.iter().map(|w| w.id).collect();
    let series: Vec<Series> = r
        .conditions
        .iter()
        .filter(|c| c.id != "none" && c.unavailable.is_none())
        .map(|c| Series {
            name: c.id.to_owned(),
            color: color(c.id),
            values: groups
                .iter()
                .map(|w| r.cell(w, c.id).and_then(|x| x.ratio_median))
                .collect(),
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    let focus = series
        .iter()
        .filter(|s| s.name == "alert" || s.name == "block")
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(groups.iter().filter_map(|w| super::targets::ratio_limit(w)))
        .fold(1.0f64, f64::max);
    Chart {
        title: "Median time relative to no monitor (1.0 = no cost)".into(),
        clip: Some(clip_for(focus)),
        groups: r
            .workloads
            .iter()
            .map(|w| format!("{} {}", w.id, w.title))
            .collect(),
        series,
        limits: groups
            .iter()
            .map(|w| super::targets::ratio_limit(w))
            .collect(),
    }
}

/// Where to cut the axis: twice the distance to 1.0 of what matters most (pthwatch and
/// the targets), at least 1.2.
pub fn clip_for(focus: f64) -> f64 {
    (1.0 + (focus - 1.0) * 2.0).max(1.2)
}

/// Splits `text` into lines of at most `width` characters, at spaces.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.len() + 1 + word.len() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 0.01;
    }
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw * (1.0 - 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

/// Axis bounds and step covering `lo..hi` (always including 1.0) in about five ticks.
pub fn axis(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (1.0f64, 1.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let span = (hi - lo).max(0.02);
    let step = nice_step(span / 5.0);
    // The tolerances keep exact multiples (1.0 itself) on the axis ends.
    let lo = ((lo / step) + 1e-9).floor() * step;
    let mut hi = ((hi / step) - 1e-9).ceil() * step;
    if hi - lo < step * 1.5 {
        hi += step;
    }
    (lo, hi, step)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(c: &Chart) -> String {
    const W: f64 = 760.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 92.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let clip = c.clip.unwrap_or(f64::INFINITY);
    let all = c
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(c.limits.iter().flatten().copied())
        .map(|v| v.min(clip));
    let (lo, hi, step) = axis(all);
    let y = |v: f64| TOP + plot_h * (1.0 - (v - lo) / (hi - lo));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(&c.title)
    );
    // Grid and y labels.
    let ticks = ((hi - lo) / step).round() as i64;
    for i in 0..=ticks {
        let v = lo + step * i as f64;
        let yy = y(v);
        let stroke = if (v - 1.0).abs() < step / 1000.0 {
            r##"stroke="#333" stroke-width="1.2""##
        } else {
            r##"stroke="#ddd" stroke-width="1""##
        };
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" {stroke}/>"#,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yy + 4.0,
            format_tick(v, step)
        );
    }
    // Bars.
    let groups = c.groups.len().max(1) as f64;
    let group_w = plot_w / groups;
    let n = c.series.len().max(1) as f64;
    let bar_w = (group_w * 0.75 / n).min(40.0);
    let base = y(1.0);
    for (g, label) in c.groups.iter().enumerate() {
        let x0 = LEFT + group_w * g as f64 + (group_w - bar_w * n) / 2.0;
        for (k, series) in c.series.iter().enumerate() {
            let Some(v) = series.values.get(g).copied().flatten() else {
                continue;
            };
            let x = x0 + bar_w * k as f64;
            let shown = v.min(hi);
            let (top, h) = if shown >= 1.0 {
                (y(shown), base - y(shown))
            } else {
                (base, y(shown) - base)
            };
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.3}</title></rect>"#,
                bar_w - 2.0,
                h.max(0.5),
                series.color,
                esc(label),
                esc(&series.name)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{v:.2}</text>"#,
                x + bar_w / 2.0 - 1.0,
                if v >= 1.0 { top - 3.0 } else { top + h + 10.0 }
            );
            if v > hi {
                // The break: a slanted white band across the bar near its top.
                let (x1, x2) = (x - 1.0, x + bar_w - 1.0);
                let _ = writeln!(
                    s,
                    r#"<polygon points="{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{:.1} {x1:.1},{:.1}" fill="white"/>"#,
                    top + 14.0,
                    top + 9.0,
                    top + 13.0,
                    top + 18.0
                );
            }
        }
        if let Some(limit) = c.limits.get(g).copied().flatten() {
            let yy = y(limit);
            let gx = LEFT + group_w * g as f64;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#c00" stroke-width="1.5" stroke-dasharray="5,3"><title>target {limit:.2}</title></line>"##,
                gx + 6.0,
                gx + group_w - 6.0
            );
        }
        let cx = LEFT + group_w * (g as f64 + 0.5);
        let chars = ((group_w - 8.0) / 6.0).max(8.0) as usize;
        for (i, text) in wrap(label, chars).iter().take(3).enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h + 16.0 + 13.0 * i as f64,
                esc(text)
            );
        }
    }
    // Legend.
    let mut lx = LEFT;
    let ly = H - 28.0;
    for series in &c.series {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            series.color,
            lx + 16.0,
            esc(&series.name)
        );
        lx += 28.0 + 7.0 * series.name.len() as f64;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c00" stroke-width="1.5" stroke-dasharray="5,3"/><text x="{:.1}" y="{ly:.1}">target</text>"##,
        ly - 4.0,
        lx + 20.0,
        ly - 4.0,
        lx + 24.0
    );
    s.push_str("</svg>\n");
    s
}

fn format_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_numbers() {
        assert_eq!(nice_step(0.013), 0.02);
        assert_eq!(nice_step(0.04), 0.05);
        assert_eq!(nice_step(0.1), 0.1);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.0), 0.01);
    }

    #[test]
    fn axis_always_shows_one() {
        let (lo, hi, step) = axis([1.01, 1.04, 1.10].into_iter());
        assert!((lo - 1.0).abs() < 1e-9 && hi >= 1.10, "{lo} {hi}");
        assert!((step - 0.02).abs() < 1e-12);
        let (lo, hi, _) = axis([0.97].into_iter());
        assert!(lo <= 0.97 && hi >= 1.0);
        let (lo, hi, _) = axis(std::iter::empty());
        assert!(lo <= 1.0 && hi > 1.0);
    }

    #[test]
    fn one_bar_per_value_and_a_target_line_per_group() {
        let chart = Chart {
            title: "a < b & c".into(),
            groups: vec!["W1 x".into(), "W2 y".into()],
            series: vec![
                Series {
                    name: "alert".into(),
                    color: "#000",
                    values: vec![Some(1.01), Some(0.99)],
                },
                Series {
                    name: "auditd".into(),
                    color: "#f00",
                    values: vec![Some(1.5), None],
                },
            ],
            limits: vec![Some(1.02), None],
            clip: Some(1.2),
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        // 3 bars + the white background + 2 legend swatches, and 1 break (1.5 > 1.2).
        assert_eq!(svg.matches("<rect ").count(), 6);
        assert_eq!(svg.matches("<polygon ").count(), 1);
        assert!(
            svg.contains(">1.50</text>"),
            "the clipped bar keeps its value"
        );
        assert_eq!(svg.matches("<title>target").count(), 1);
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn labels_wrap_at_spaces() {
        assert_eq!(
            wrap("W1 syscall storm (non-Python)", 20),
            vec!["W1 syscall storm", "(non-Python)"]
        );
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }

    #[test]
    fn axis_is_cut_around_what_matters() {
        assert!((clip_for(1.1) - 1.2).abs() < 1e-12);
        assert!((clip_for(1.3) - 1.6).abs() < 1e-12);
    }

    #[test]
    fn ticks_have_enough_decimals() {
        assert_eq!(format_tick(1.02, 0.02), "1.02");
        assert_eq!(format_tick(1.5, 0.5), "1.5");
        assert_eq!(format_tick(3.0, 1.0), "3");
    }
}
