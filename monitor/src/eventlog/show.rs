//! `log show`: one incident for people: its process tree, hook, credential reads,
//! destination and what pthwatch did.
//!
//! The tree comes from the alert's `lineage` (root at the top). `process` records with the
//! same `lineage_id` add processes (`pid`, `ppid`, `exe`, `event`) and `decision` records add
//! what was decided about one (`pid`, `action`, `what`, `destination`, `rule`, `reason`).
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io,
};

use serde_json::Value;

use super::{Kind, Record, canonical_json, for_each_record, printable, query::destination};

/// The alert an id (or an unambiguous prefix of one) names.
#[derive(Clone, Debug)]
pub struct Found {
    /// The last record of the alert (an incident reported again keeps its id).
    pub alert: Record,
    /// How many alert records carry the id.
    pub reports: u64,
}

/// Why no alert was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindError {
    NotFound,
    /// The prefix names several alerts (some of their ids).
    Ambiguous(Vec<String>),
}

/// Finds the alert `id` names: an exact id, else a unique prefix of one.
pub fn find_alert(reader: impl io::BufRead, id: &str) -> io::Result<Result<Found, FindError>> {
    let id = id.to_ascii_lowercase();
    let mut matches: HashMap<String, Found> = HashMap::new();
    for_each_record(reader, |_, r| {
        if r.kind != Kind::Alert {
            return Ok(());
        }
        let Some(rid) = r.data.get("id").and_then(Value::as_str) else {
            return Ok(());
        };
        if !id.is_empty() && rid.starts_with(&id) {
            let rid = rid.to_owned();
            let reports = matches.get(&rid).map_or(0, |f| f.reports) + 1;
            matches.insert(rid, Found { alert: r, reports });
        }
        Ok(())
    })?;
    if let Some(exact) = matches.remove(&id) {
        return Ok(Ok(exact));
    }
    let mut ids: Vec<String> = matches.keys().cloned().collect();
    Ok(match ids.len() {
        0 => Err(FindError::NotFound),
        1 => Ok(matches.into_values().next().expect("one match")),
        _ => {
            ids.sort();
            ids.truncate(10);
            Err(FindError::Ambiguous(ids))
        }
    })
}

/// Process, decision and other alert records of lineage `lineage_id`, except the record
/// with seq `except`.
pub fn related_records(
    reader: impl io::BufRead,
    lineage_id: u64,
    except: u64,
) -> io::Result<Vec<Record>> {
    let mut related = Vec::new();
    for_each_record(reader, |_, r| {
        let same_lineage = r.data.get("lineage_id").and_then(Value::as_u64) == Some(lineage_id);
        let kind_fits = matches!(r.kind, Kind::Process | Kind::Decision | Kind::Alert);
        if same_lineage && kind_fits && r.seq != except {
            related.push(r);
        }
        Ok(())
    })?;
    Ok(related)
}

/// A process in the drawn tree.
#[derive(Debug, Default)]
struct Node {
    exe: String,
    parent: Option<u32>,
    acting: bool,
    notes: Vec<String>,
}

/// The incident as text for a terminal. Every string from the log is made printable.
pub fn render_incident(alert: &Record, reports: u64, related: &[Record]) -> String {
    let d = &alert.data;
    let text = |ptr: &str| d.pointer(ptr).and_then(Value::as_str).map(printable);
    let action = text("/action").unwrap_or_else(|| "?".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Incident {}: {} ({}), {action}",
        text("/id").unwrap_or_else(|| "?".into()),
        text("/rule").unwrap_or_else(|| "?".into()),
        text("/severity").unwrap_or_else(|| "?".into()),
    );
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<9} {value}");
    };
    field(
        "time",
        text("/time").unwrap_or_else(|| printable(&alert.time)),
    );
    if let Some(host) = text("/host") {
        field("host", host);
    }
    if let Some(summary) = text("/summary") {
        field("summary", summary);
    }
    let lineage_id = d.get("lineage_id").and_then(Value::as_u64).unwrap_or(0);
    field("lineage", lineage_id.to_string());
    if let Some(c) = text("/container/container_id") {
        let image = text("/container/image").map_or(String::new(), |i| format!(" ({i})"));
        field("container", format!("{c}{image}"));
    }
    let pod = match (
        text("/container/pod_namespace"),
        text("/container/pod_name"),
    ) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        (None, Some(name)) => Some(name),
        _ => None,
    };
    match (pod, text("/container/pod_uid")) {
        (Some(pod), Some(uid)) => field("pod", format!("{pod} (uid {uid})")),
        (Some(pod), None) => field("pod", pod),
        (None, Some(uid)) => field("pod", uid),
        (None, None) => {}
    }
    let again = if reports > 1 {
        format!(" (reported {reports} times; this is the last)")
    } else {
        String::new()
    };
    field("record", format!("seq {}{again}", alert.seq));

    out.push_str("\nProcess tree\n");
    draw_tree(&mut out, d, related);

    out.push_str("\nStartup hook\n");
    hook_section(&mut out, d.get("startup_hook"));

    let creds = strings(d.get("credentials"));
    let _ = writeln!(out, "\nCredential reads ({})", creds.len());
    list(&mut out, &creds, "none");

    out.push_str("\nDestination\n");
    match destination(d.get("destination")) {
        Some(dest) => {
            let proto = text("/destination/protocol").unwrap_or_else(|| "?".into());
            let _ = writeln!(out, "  {dest} ({proto})");
        }
        None => out.push_str("  none (no network attempt)\n"),
    }

    let persistence = strings(d.get("persistence"));
    if !persistence.is_empty() {
        let _ = writeln!(out, "\nPersistence ({})", persistence.len());
        list(&mut out, &persistence, "none");
    }

    out.push_str("\nAction\n");
    let what = match action.as_str() {
        "blocked" => "blocked: the kernel denied the lineage's network attempt",
        "killed" => "killed: the kernel denied the network attempt and killed the lineage",
        "alert" => "alerted only: nothing was stopped",
        other => other,
    };
    let _ = writeln!(out, "  {what}");

    if !related.is_empty() {
        let _ = writeln!(out, "\nRelated records (lineage {lineage_id})");
        for r in related {
            let _ = writeln!(
                out,
                "  {}  {:<8}  {}",
                printable(&r.time),
                r.kind.as_str(),
                describe(r)
            );
        }
    }
    out
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(printable)
        .collect()
}

fn list(out: &mut String, items: &[String], empty: &str) {
    if items.is_empty() {
        let _ = writeln!(out, "  {empty}");
    }
    for item in items {
        let _ = writeln!(out, "  {item}");
    }
}

/// At most `n` characters, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(n).collect();
    cut.push('…');
    cut
}

fn hook_section(out: &mut String, hook: Option<&Value>) {
    let Some(h) = hook.filter(|h| h.is_object()) else {
        out.push_str("  none (the lineage could not be tied to a hook that is still known)\n");
        return;
    };
    let text = |name: &str| h.get(name).and_then(Value::as_str).map(printable);
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<9} {value}");
    };
    row("path", text("path").unwrap_or_else(|| "?".into()));
    let class = text("class").map_or_else(String::new, |c| format!(", class {c}"));
    row(
        "kind",
        format!("{}{class}", text("kind").unwrap_or_else(|| "?".into())),
    );
    if let Some(sha) = text("sha256") {
        row("sha256", clip(&sha, 12));
    }
    if let Some(line) = text("line") {
        let number = h
            .get("line_number")
            .and_then(Value::as_u64)
            .map_or_else(|| "line".to_owned(), |n| format!("line {n}"));
        row(&number, clip(&line, 160));
    }
    if let Some(dist) = text("distribution") {
        row("package", dist);
    }
    let findings = strings(h.get("findings"));
    if !findings.is_empty() {
        row("findings", findings.join(", "));
    }
}

/// One line about a related record.
fn describe(r: &Record) -> String {
    let d = &r.data;
    let text = |name: &str| d.get(name).and_then(Value::as_str).map(printable);
    let pid = d
        .get("pid")
        .or_else(|| d.pointer("/process/pid"))
        .and_then(Value::as_u64)
        .map(|p| format!("pid {p}"));
    let parts: Vec<String> = match r.kind {
        Kind::Alert => vec![
            text("rule").unwrap_or_default(),
            text("action").unwrap_or_default(),
            text("id").map(|id| clip(&id, 12)).unwrap_or_default(),
        ],
        Kind::Process => vec![
            pid.unwrap_or_default(),
            text("event").unwrap_or_default(),
            text("exe").unwrap_or_default(),
        ],
        _ => vec![pid.unwrap_or_default(), describe_decision(r)],
    };
    let line = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        clip(&printable(&canonical_json(d)), 160)
    } else {
        line
    }
}

/// Builds the process tree from the lineage and the related records, and draws it.
fn draw_tree(out: &mut String, d: &Value, related: &[Record]) {
    let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
    let pid_of = |v: &Value, name: &str| {
        v.get(name)
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
    };
    // The lineage runs from the process up towards init.
    let lineage: Vec<(u32, String)> = d
        .get("lineage")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let exe = e.get("exe").and_then(Value::as_str).unwrap_or_default();
            Some((pid_of(e, "pid")?, printable(exe)))
        })
        .collect();
    for (i, (pid, exe)) in lineage.iter().enumerate() {
        let parent = lineage.get(i + 1).map(|p| p.0);
        nodes.entry(*pid).or_insert_with(|| Node {
            exe: exe.clone(),
            parent: parent.filter(|p| p != pid),
            ..Node::default()
        });
    }
    let process = d.get("process").unwrap_or(&Value::Null);
    let acting = pid_of(process, "pid");
    if let Some(pid) = acting {
        let below = lineage.first().map(|l| l.0).filter(|&p| p != pid);
        let node = nodes.entry(pid).or_insert_with(|| Node {
            parent: below,
            ..Node::default()
        });
        node.acting = true;
        if node.exe.is_empty() {
            node.exe = printable(
                process
                    .get("exe")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
        }
        let argv = strings(process.get("cmdline"));
        if !argv.is_empty() {
            node.notes
                .push(format!("cmdline: {}", clip(&argv.join(" "), 200)));
        }
    }

    // Processes the log adds, linked to their parent once all are known.
    let mut unlinked: Vec<(u32, Option<u32>)> = Vec::new();
    for r in related {
        let Some(pid) =
            pid_of(&r.data, "pid").or_else(|| r.data.get("process").and_then(|p| pid_of(p, "pid")))
        else {
            continue;
        };
        match r.kind {
            Kind::Process => {
                let exe = printable(
                    r.data
                        .get("exe")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                let event = r.data.get("event").and_then(Value::as_str).map(printable);
                let node = nodes.entry(pid).or_insert_with(|| {
                    unlinked.push((pid, pid_of(&r.data, "ppid")));
                    Node::default()
                });
                if !exe.is_empty() && (node.exe.is_empty() || event.as_deref() == Some("exec")) {
                    node.exe = exe.clone();
                }
                let event = event.unwrap_or_else(|| "seen".into());
                // A file the process touched (a credential read, a persistence write).
                let path = r.data.get("path").and_then(Value::as_str).map(printable);
                let what = path.unwrap_or(exe);
                node.notes
                    .push(format!("· {event} {what}").trim_end().to_owned());
            }
            Kind::Decision => {
                if let Some(node) = nodes.get_mut(&pid) {
                    let action = r.data.get("action").and_then(Value::as_str).unwrap_or("");
                    let mark = if matches!(action, "blocked" | "killed" | "denied") {
                        "✗"
                    } else {
                        "·"
                    };
                    node.notes.push(format!("{mark} {}", describe_decision(r)));
                }
            }
            _ => {}
        }
    }
    for (pid, ppid) in unlinked {
        let parent = match ppid {
            Some(pp) if pp != pid && nodes.contains_key(&pp) && !is_ancestor(&nodes, pid, pp) => {
                Some(pp)
            }
            _ => {
                if let (Some(pp), Some(node)) = (ppid, nodes.get_mut(&pid)) {
                    node.notes.push(format!("(parent {pp} is not in the log)"));
                }
                acting.filter(|&a| a != pid && !is_ancestor(&nodes, pid, a))
            }
        };
        if let Some(node) = nodes.get_mut(&pid) {
            node.parent = parent;
        }
    }

    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (&pid, node) in &nodes {
        match node.parent.filter(|p| nodes.contains_key(p)) {
            Some(p) => children.entry(p).or_default().push(pid),
            None => roots.push(pid),
        }
    }
    if roots.is_empty() {
        out.push_str("  (no lineage in the alert)\n");
    }
    for root in roots {
        draw_node(out, &nodes, &children, root, "  ", "", "  ");
    }
}

/// Whether `candidate` is `pid` or one of its descendants (linking would make a cycle).
fn is_ancestor(nodes: &BTreeMap<u32, Node>, pid: u32, candidate: u32) -> bool {
    let mut cur = Some(candidate);
    for _ in 0..=nodes.len() {
        match cur {
            Some(c) if c == pid => return true,
            Some(c) => cur = nodes.get(&c).and_then(|n| n.parent),
            None => return false,
        }
    }
    true
}

fn draw_node(
    out: &mut String,
    nodes: &BTreeMap<u32, Node>,
    children: &BTreeMap<u32, Vec<u32>>,
    pid: u32,
    prefix: &str,
    connector: &str,
    child_prefix: &str,
) {
    let node = &nodes[&pid];
    let exe = if node.exe.is_empty() { "?" } else { &node.exe };
    let mark = if node.acting {
        "  ◀ acting process"
    } else {
        ""
    };
    let _ = writeln!(out, "{prefix}{connector}{pid} {exe}{mark}");
    let kids = children.get(&pid).map_or(&[][..], Vec::as_slice);
    let bar = if kids.is_empty() { "   " } else { "│  " };
    for note in &node.notes {
        let _ = writeln!(out, "{child_prefix}{bar}{note}");
    }
    for (i, &kid) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        let (conn, more) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        draw_node(
            out,
            nodes,
            children,
            kid,
            child_prefix,
            conn,
            &format!("{child_prefix}{more}"),
        );
    }
}

fn describe_decision(r: &Record) -> String {
    let d = &r.data;
    let text = |name: &str| d.get(name).and_then(Value::as_str).map(printable);
    [
        text("action").or_else(|| text("decision")),
        text("what"),
        destination(d.get("destination")),
        text("rule").map(|r| format!("({r})")),
        text("reason").map(|r| format!("— {r}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}
