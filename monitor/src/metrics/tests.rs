//! The exposition, parsed strictly (HELP and TYPE before samples, label syntax and
//! escaping, histogram shape), each metric's samples, the HTTP routes, and the Grafana
//! dashboard's queries against what the daemon exports.
use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A snapshot where every metric has samples, and label values need escaping.
fn populated() -> Snapshot {
    let mut s = Snapshot::default();
    s.last_tick = Some(s.started);
    s.kernel[counter::NET_DENIED as usize] = 3;
    s.kernel[counter::RINGBUF_DROPS as usize] = 4;
    for (i, n) in s.events.iter_mut().enumerate() {
        *n = 10 + i as u64;
    }
    s.alerts
        .insert(("hook_credential_exfiltration", "blocked"), 2);
    s.alerts
        .insert(("hook_credential_exfiltration", "alert"), 1);
    s.alerts.insert(("odd \"rule\"\\\nname", "killed"), 7);
    s.alerts_allowed = 1;
    s.lineages = 2;
    s.tracked_processes = 40;
    s.hooks_known = 12;
    s.sinks.delivered = 5;
    s.sinks.dropped_spool_full = 1;
    s.sinks.spooled_now = 6;
    s.sinks.failed = 8;
    for micros in [1_000, 7_000, 40_000, 40_000, 3_000_000, 90_000_000] {
        s.sinks.latency.record(micros);
    }
    s.event_log_records = 30;
    s.event_log_errors = 2;
    s.probes.insert("process_exec", true);
    s.probes.insert("net_cg_egress", false);
    s
}

fn text_of(s: &Snapshot) -> String {
    render(s, s.started + Duration::from_secs(1))
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

/// `name{key="value",...} value`, label values unescaped; panics on anything else.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        name.chars().next().is_some_and(|c| !c.is_ascii_digit()),
        "{line}"
    );
    let mut rest = line[name_end..].chars().peekable();
    let mut labels = Vec::new();
    if rest.peek() == Some(&'{') {
        rest.next();
        loop {
            let key: String = std::iter::from_fn(|| rest.next_if(|&c| c != '=')).collect();
            assert!(
                !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !key.starts_with(|c: char| c.is_ascii_digit()),
                "label name {key:?} in {line}"
            );
            assert_eq!(rest.next(), Some('='), "{line}");
            assert_eq!(rest.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match rest.next() {
                    Some('\\') => match rest.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value in {line}"),
                }
            }
            labels.push((key, value));
            match rest.next() {
                Some(',') => {}
                Some('}') => break,
                other => panic!("{other:?} after a label in {line}"),
            }
        }
    }
    assert_eq!(rest.next(), Some(' '), "{line}");
    let value: String = rest.collect();
    let value = match value.as_str() {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// The exposition by family. Every family has HELP then TYPE, once, before its samples;
/// every sample belongs to the family declared last (a histogram's `_bucket`, `_sum` and
/// `_count` to it); no series twice.
fn parse(text: &str) -> BTreeMap<String, Family> {
    assert!(text.ends_with('\n'));
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut help: Option<(String, String)> = None;
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').expect(line);
            assert!(!h.is_empty(), "{line}");
            assert!(!families.contains_key(name), "{name} declared twice");
            help = Some((name.to_owned(), h.to_owned()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            let (helped, h) = help
                .take()
                .unwrap_or_else(|| panic!("no HELP before {line}"));
            assert_eq!(helped, name, "HELP and TYPE of different families");
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            }
            families.insert(
                name.to_owned(),
                Family {
                    kind: kind.to_owned(),
                    help: h,
                    samples: Vec::new(),
                },
            );
            current = Some(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let sample = parse_sample(line);
        let family = current.as_deref().expect("a sample before any TYPE");
        let f = families.get_mut(family).expect("declared");
        let belongs = if f.kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| sample.name == format!("{family}{suffix}"))
        } else {
            sample.name == family
        };
        assert!(belongs, "{} under the TYPE of {family}", sample.name);
        assert!(
            series.insert(line.rsplit_once(' ').expect(line).0.to_owned()),
            "series twice: {line}"
        );
        f.samples.push(sample);
    }
    assert!(help.is_none(), "a HELP without a TYPE");
    families
}

/// The value of the sample of `family` named `name` with exactly `labels`.
fn value(f: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|b| f.contains_key(*b)))
        .unwrap_or(name);
    f.get(family)?
        .samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

#[test]
fn exposition_is_well_formed() {
    for s in [populated(), Snapshot::default()] {
        let f = parse(&text_of(&s));
        for (name, family) in &f {
            assert!(name.starts_with("pthwatch_"), "{name}");
            assert!(family.help.ends_with('.'), "{name}: {}", family.help);
            if family.kind == "counter" {
                assert!(family.samples.iter().all(|x| x.value >= 0.0));
            }
        }
    }
    let f = parse(&text_of(&populated()));
    assert_eq!(value(&f, "pthwatch_up", &[]), Some(1.0));
    assert_eq!(
        value(&f, "pthwatch_kernel_network_denied_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        value(&f, "pthwatch_kernel_events_lost_total", &[]),
        Some(4.0)
    );
    assert_eq!(value(&f, "pthwatch_tracked_processes", &[]), Some(40.0));
    assert_eq!(value(&f, "pthwatch_lineages", &[]), Some(2.0));
    assert_eq!(value(&f, "pthwatch_hooks_known", &[]), Some(12.0));
    assert_eq!(
        value(&f, "pthwatch_alert_delivery", &[("what", "delivered")]),
        Some(5.0)
    );
}

#[test]
fn events_are_counted_by_kind_every_kind_always_present() {
    let f = parse(&text_of(&populated()));
    let family = &f["pthwatch_events_total"];
    assert_eq!(family.kind, "counter");
    assert_eq!(family.samples.len(), EVENT_KINDS.len());
    for (i, kind) in EVENT_KINDS.iter().enumerate() {
        assert_eq!(
            value(&f, "pthwatch_events_total", &[("kind", kind)]),
            Some(10.0 + i as f64),
            "{kind}"
        );
    }
    // Before any event: every kind at zero, so rates start from the first scrape.
    let f = parse(&text_of(&Snapshot::default()));
    assert_eq!(
        value(&f, "pthwatch_events_total", &[("kind", "io_uring")]),
        Some(0.0)
    );
    assert_eq!(event_kind_index("exec"), 0);
    assert_eq!(event_kind_index("new_executable"), EVENT_KINDS.len() - 1);
}

#[test]
fn alerts_are_counted_by_rule_and_action_with_labels_escaped() {
    let text = text_of(&populated());
    assert!(text.contains(
        "pthwatch_alerts_total{rule=\"hook_credential_exfiltration\",action=\"blocked\"} 2\n"
    ));
    // Backslash, quote and newline escaped in the text, and read back as they were.
    assert!(
        text.contains(
            "pthwatch_alerts_total{rule=\"odd \\\"rule\\\"\\\\\\nname\",action=\"killed\"} 7\n"
        ),
        "{text}"
    );
    let f = parse(&text);
    assert_eq!(f["pthwatch_alerts_total"].kind, "counter");
    assert_eq!(f["pthwatch_alerts_total"].samples.len(), 3);
    assert_eq!(
        value(
            &f,
            "pthwatch_alerts_total",
            &[
                ("rule", "hook_credential_exfiltration"),
                ("action", "alert")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &f,
            "pthwatch_alerts_total",
            &[("rule", "odd \"rule\"\\\nname"), ("action", "killed")]
        ),
        Some(7.0)
    );
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn webhook_queue_failures_and_latency_histogram() {
    let s = populated();
    let f = parse(&text_of(&s));
    assert_eq!(f["pthwatch_webhook_queue_depth"].kind, "gauge");
    assert_eq!(value(&f, "pthwatch_webhook_queue_depth", &[]), Some(6.0));
    assert_eq!(f["pthwatch_webhook_failures_total"].kind, "counter");
    assert_eq!(value(&f, "pthwatch_webhook_failures_total", &[]), Some(8.0));

    let name = "pthwatch_webhook_request_duration_seconds";
    assert_eq!(f[name].kind, "histogram");
    let buckets: Vec<(f64, f64)> = f[name]
        .samples
        .iter()
        .filter(|x| x.name == format!("{name}_bucket"))
        .map(|x| {
            assert_eq!(x.labels.len(), 1);
            assert_eq!(x.labels[0].0, "le");
            let le = match x.labels[0].1.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("le is a number"),
            };
            (le, x.value)
        })
        .collect();
    assert_eq!(buckets.len(), crate::sink::LATENCY_BUCKETS);
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "bounds increase and counts are cumulative: {buckets:?}"
    );
    let count = value(&f, &format!("{name}_count"), &[]).expect("_count");
    assert_eq!(count, 6.0);
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    // 1 ms and 7 ms, then two of 40 ms, 3 s, then 90 s past every bound.
    assert_eq!(
        value(&f, &format!("{name}_bucket"), &[("le", "0.005")]),
        Some(1.0)
    );
    assert_eq!(
        value(&f, &format!("{name}_bucket"), &[("le", "0.01")]),
        Some(2.0)
    );
    assert_eq!(
        value(&f, &format!("{name}_bucket"), &[("le", "0.05")]),
        Some(4.0)
    );
    assert_eq!(
        value(&f, &format!("{name}_bucket"), &[("le", "5")]),
        Some(5.0)
    );
    assert_eq!(
        value(&f, &format!("{name}_bucket"), &[("le", "10")]),
        Some(5.0)
    );
    let sum = value(&f, &format!("{name}_sum"), &[]).expect("_sum");
    assert!((sum - 93.088).abs() < 1e-9, "{sum}");

    // Nothing delivered yet: every bucket, the sum and the count at zero.
    let f = parse(&text_of(&Snapshot::default()));
    assert!(f[name].samples.iter().all(|x| x.value == 0.0));
    assert_eq!(f[name].samples.len(), crate::sink::LATENCY_BUCKETS + 2);
}

#[test]
fn seconds_are_exact_decimals() {
    assert_eq!(seconds(0), "0");
    assert_eq!(seconds(5_000), "0.005");
    assert_eq!(seconds(250_000), "0.25");
    assert_eq!(seconds(1_000_000), "1");
    assert_eq!(seconds(2_500_000), "2.5");
    assert_eq!(seconds(93_088_000), "93.088");
    assert_eq!(seconds(1), "0.000001");
}

#[test]
fn event_log_and_probe_status_have_their_own_metrics() {
    let f = parse(&text_of(&populated()));
    assert_eq!(f["pthwatch_event_log_records_total"].kind, "counter");
    assert_eq!(
        value(&f, "pthwatch_event_log_records_total", &[]),
        Some(30.0)
    );
    assert_eq!(value(&f, "pthwatch_event_log_errors_total", &[]), Some(2.0));
    // No longer mixed into the sinks' delivery counters.
    assert!(
        f["pthwatch_alert_delivery"]
            .samples
            .iter()
            .all(|x| !x.labels[0].1.starts_with("event_log"))
    );
    assert_eq!(f["pthwatch_probe_attached"].kind, "gauge");
    assert_eq!(
        value(
            &f,
            "pthwatch_probe_attached",
            &[("program", "process_exec")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &f,
            "pthwatch_probe_attached",
            &[("program", "net_cg_egress")]
        ),
        Some(0.0)
    );
}

#[test]
fn health_follows_the_tick() {
    let s = populated();
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

/// The shipped dashboard.
const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/pthwatch-dashboard.json"
));

/// Every PromQL query of the dashboard (panel targets and template variables), with
/// where it is.
fn dashboard_queries(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let here = format!("{at}/{k}");
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(q)) => {
                        out.push((here, q.clone()))
                    }
                    _ => dashboard_queries(x, &here, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                dashboard_queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `query` with its string literals blanked, so that only names remain.
fn without_strings(query: &str) -> String {
    let mut out = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in query.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => {}
            None => {
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// The identifiers of a query (metric, label and function names, keywords); not the
/// durations of ranges (`[5m]`) nor Grafana variables (`$__rate_interval`).
fn identifiers(bare: &str) -> Vec<String> {
    let chars: Vec<char> = bare.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let prev = start.checked_sub(1).map(|p| chars[p]);
            if !prev.is_some_and(|p| p.is_ascii_digit() || p == '$' || p == '.') {
                out.push(chars[start..i].iter().collect());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Each `open`, with the text from it to the next `close`.
fn bracketed(bare: &str, open: char, close: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in bare.match_indices(open) {
        let inner = &bare[at + 1..];
        let end = inner.find(close).expect("brackets are closed");
        out.push((at, inner[..end].to_owned()));
    }
    out
}

/// The label names a query selects on (`{label="..."}`) or groups by (`by (...)`,
/// `without (...)`).
fn query_labels(bare: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for (_, inside) in bracketed(bare, '{', '}') {
        for matcher in inside.split(',').filter(|m| !m.trim().is_empty()) {
            let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            labels.push(name.to_owned());
        }
    }
    for (at, inside) in bracketed(bare, '(', ')') {
        let before = bare[..at].trim_end();
        if before.ends_with(" by") || before.ends_with(" without") || before == "by" {
            labels.extend(inside.split(',').map(|l| l.trim().to_owned()));
        }
    }
    labels
}

/// Series names and the labels of each, from the exposition of `populated()`.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for family in parse(&text_of(&populated())).into_values() {
        for s in family.samples {
            names
                .entry(s.name)
                .or_default()
                .extend(s.labels.into_iter().map(|(k, _)| k));
        }
    }
    names
}

/// The label names a Prometheus server adds to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The `pthwatch_*` series `query` reads, if each is exported and every label it selects
/// on or groups by is one of theirs; what is wrong otherwise.
fn check_query(
    query: &str,
    exported: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, String> {
    let bare = without_strings(query);
    let metrics: Vec<String> = identifiers(&bare)
        .into_iter()
        .filter(|w| w.starts_with("pthwatch_"))
        .collect();
    if metrics.is_empty() {
        return Err("queries no pthwatch metric".into());
    }
    let mut labels: BTreeSet<&str> = TARGET_LABELS.into();
    for m in &metrics {
        let Some(theirs) = exported.get(m) else {
            return Err(format!("{m} is not exported"));
        };
        labels.extend(theirs.iter().map(String::as_str));
    }
    for l in query_labels(&bare) {
        if !labels.contains(l.as_str()) {
            return Err(format!("label {l} is on none of {metrics:?}"));
        }
    }
    Ok(metrics)
}

/// Every `pthwatch_*` name the dashboard queries is a series the daemon exports, and every
/// label it selects on or groups by is one those series carry.
#[test]
fn the_dashboard_queries_only_metrics_the_daemon_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let exported = exported();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, "", &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = BTreeSet::new();
    for (at, query) in &queries {
        match check_query(query, &exported) {
            Ok(metrics) => used.extend(metrics),
            Err(why) => panic!("{at}: `{query}`: {why}"),
        }
    }
    // The panels the issue asks for are there.
    for needed in [
        "pthwatch_up",
        "pthwatch_alerts_total",
        "pthwatch_events_total",
        "pthwatch_kernel_events_lost_total",
        "pthwatch_kernel_network_denied_total",
        "pthwatch_kernel_kills_total",
        "pthwatch_tracked_processes",
        "pthwatch_lineages",
        "pthwatch_hooks_known",
        "pthwatch_webhook_queue_depth",
        "pthwatch_webhook_failures_total",
        "pthwatch_webhook_request_duration_seconds_bucket",
        "pthwatch_probe_attached",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    // Every panel reads the templated data source.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource")
    );
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{}",
                panel["title"]
            );
        }
    }
}

/// The check itself fails a query of a metric or a label that does not exist.
#[test]
fn the_dashboard_check_catches_unknown_names() {
    let exported = exported();
    let check = |q: &str| check_query(q, &exported);
    assert_eq!(
        check("sum(rate(pthwatch_alerts_by_rule_total[5m]))"),
        Err("pthwatch_alerts_by_rule_total is not exported".into())
    );
    assert!(
        check("rate(pthwatch_webhook_request_duration_seconds[5m])").is_err(),
        "a histogram is queried by its _bucket, _sum or _count series"
    );
    assert!(check(r#"pthwatch_alerts_total{severity="high"}"#).is_err());
    assert!(check("sum by (rule, severity) (rate(pthwatch_alerts_total[5m]))").is_err());
    assert!(check("sum by (kind) (rate(pthwatch_alerts_total[5m]))").is_err());
    assert!(check("rate(up[5m])").is_err());
    assert_eq!(
        check(r#"pthwatch_alerts_total{rule="pthwatch_nothing",instance=~"$instance"}"#),
        Ok(vec!["pthwatch_alerts_total".to_owned()]),
        "names inside strings are values, not metrics"
    );
    assert_eq!(
        check(
            "histogram_quantile(0.95, sum by (le) (rate(pthwatch_webhook_request_duration_seconds_bucket[$__rate_interval])))"
        ),
        Ok(vec![
            "pthwatch_webhook_request_duration_seconds_bucket".to_owned()
        ])
    );
}
