//! From text to [`Config`]: the document is parsed once with spans, then each section and
//! each array entry is deserialised on its own, so one mistake does not hide the next.

use std::{collections::BTreeMap, path::Path};

use serde::de::DeserializeOwned;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{
    Config,
    allow::{AllowEntry, Allowlist},
    diag::{Diagnostic, Finding, KeyPath, key_at, locate},
    settings::RuleEntry,
    sink::{Sink, SinkEntry},
    validate,
};
use crate::detect::RULES;

const SECTIONS: [&str; 8] = [
    "daemon",
    "rules",
    "allow",
    "alerts",
    "event_log",
    "metrics",
    "credentials",
    "containers",
];

/// The configuration `text` describes (defaults where it is wrong) and every problem found.
pub(super) fn analyse(text: &str, file: &Path, check_files: bool) -> (Config, Vec<Diagnostic>) {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let mut findings = Vec::new();
    if !syntax.is_empty() {
        // A document with syntax errors is not read further: what it means is uncertain.
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            findings.push(Finding::error(KeyPath::root(), tidy(e.message())).at(span));
        }
        return (Config::default(), locate(text, Some(&doc), file, findings));
    }
    let mut config = Config::default();
    let out = &mut findings;
    for (key, value) in doc.get_ref() {
        let at = KeyPath::root().key(key.get_ref());
        match key.get_ref().as_ref() {
            "daemon" => read_into(value, &at, out, &mut config.daemon),
            "rules" => rules(value, &at, out, &mut config),
            "allow" => allowlist(value, &at, out, &mut config),
            "alerts" => alerts(value, &at, out, check_files.then_some(file), &mut config),
            "event_log" => read_into(value, &at, out, &mut config.event_log),
            "metrics" => read_into(value, &at, out, &mut config.metrics),
            "credentials" => read_into(value, &at, out, &mut config.credentials),
            "containers" => read_into(value, &at, out, &mut config.containers),
            other => out.push(unknown("section", other, &SECTIONS, at.clone()).at(key.span())),
        }
    }
    validate::daemon(&config.daemon, out);
    validate::event_log(&config.event_log, out);
    validate::metrics(&config.metrics, out);
    validate::credentials(&config.credentials, out);
    validate::containers(&config.containers, out);
    if check_files {
        validate::event_log_files(&config.event_log, out);
    }
    (config, locate(text, Some(&doc), file, findings))
}

/// Deserialises one table, reporting every key serde refuses: each refused key is
/// reported, dropped and the rest tried again. `Some` only when nothing was refused.
fn read<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    out: &mut Vec<Finding>,
) -> Option<T> {
    match read_partial(value, at, out) {
        (Some(v), true) => Some(v),
        _ => None,
    }
}

/// [`read`] that also returns what was left after dropping the refused keys, with
/// whether nothing was refused: later checks can still judge the other keys.
fn read_partial<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    out: &mut Vec<Finding>,
) -> (Option<T>, bool) {
    let mut value = value.clone();
    let mut clean = true;
    loop {
        let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => return (Some(v), clean),
            Err(e) => e,
        };
        clean = false;
        let span = e.span().unwrap_or_else(|| value.span());
        let key = key_at(&value, &span, &KeyPath::root());
        out.push(Finding::error(at.join(&key), tidy(e.message())).at(span));
        let dropped = match (value.get_mut(), key.first_key()) {
            (DeValue::Table(t), Some(k)) => t.remove(k).is_some(),
            _ => false,
        };
        if !dropped {
            return (None, false);
        }
    }
}

/// A section: what it says, less the keys refused (which make the file invalid anyway).
fn read_into<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    out: &mut Vec<Finding>,
    slot: &mut T,
) {
    if let (Some(v), _) = read_partial(value, at, out) {
        *slot = v;
    }
}

fn table<'a, 'i>(
    value: &'a Spanned<DeValue<'i>>,
    at: &KeyPath,
    example: &str,
    out: &mut Vec<Finding>,
) -> Option<&'a DeTable<'i>> {
    let t = value.get_ref().as_table();
    if t.is_none() {
        out.push(
            Finding::error(
                at.clone(),
                format!(
                    "expected a table, e.g. `{example}`, found {}",
                    value.get_ref().type_str()
                ),
            )
            .at(value.span()),
        );
    }
    t
}

fn entries<'a, 'i>(
    value: &'a Spanned<DeValue<'i>>,
    at: &KeyPath,
    header: &str,
    out: &mut Vec<Finding>,
) -> &'a [Spanned<DeValue<'i>>] {
    match value.get_ref().as_array() {
        Some(a) => a,
        None => {
            out.push(
                Finding::error(
                    at.clone(),
                    format!(
                        "expected `{header}` entries (an array of tables), found {}",
                        value.get_ref().type_str()
                    ),
                )
                .at(value.span()),
            );
            &[]
        }
    }
}

fn rules(value: &Spanned<DeValue<'_>>, at: &KeyPath, out: &mut Vec<Finding>, config: &mut Config) {
    let Some(t) = table(value, at, "[rules.hook_persistence]", out) else {
        return;
    };
    for (name, v) in t {
        let rule_at = at.key(name.get_ref());
        if !RULES.contains(&name.get_ref().as_ref()) {
            out.push(unknown("rule", name.get_ref(), &RULES, rule_at).at(name.span()));
            continue;
        }
        if let Some(entry) = read::<RuleEntry>(v, &rule_at, out) {
            config.rules.apply(name.get_ref(), entry);
        }
    }
}

fn allowlist(
    value: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    out: &mut Vec<Finding>,
    config: &mut Config,
) {
    let mut list = Vec::new();
    for (i, v) in entries(value, at, "[[allow]]", out).iter().enumerate() {
        let entry_at = at.index(i);
        if let Some(entry) = read::<AllowEntry>(v, &entry_at, out) {
            validate::allow_entry(&entry, &entry_at, out);
            list.push(entry);
        }
    }
    config.allow = Allowlist::new(list);
}

/// `[alerts]`. `config_file`: the file read, when the files it names are to be checked.
fn alerts(
    value: &Spanned<DeValue<'_>>,
    at: &KeyPath,
    out: &mut Vec<Finding>,
    config_file: Option<&Path>,
    config: &mut Config,
) {
    let Some(t) = table(value, at, "[[alerts.sink]]", out) else {
        return;
    };
    for (key, v) in t {
        if key.get_ref() != "sink" {
            let key_at = at.key(key.get_ref());
            out.push(unknown("key", key.get_ref(), &["sink"], key_at).at(key.span()));
            continue;
        }
        let sinks_at = at.key("sink");
        let mut sinks = Vec::new();
        // Two file sinks on one path would interleave and rotate each other's lines.
        let mut paths = BTreeMap::new();
        let items = entries(v, &sinks_at, "[[alerts.sink]]", out);
        for (i, v) in items.iter().enumerate() {
            let sink_at = sinks_at.index(i);
            let Some(sink) =
                read::<SinkEntry>(v, &sink_at, out).and_then(|e| e.build(&sink_at, out))
            else {
                continue;
            };
            if let Sink::File(f) = &sink
                && let Some(first) = paths.insert(f.path.clone(), i)
            {
                out.push(Finding::error(
                    sink_at.key("path"),
                    format!(
                        "`{}` is already the path of alerts.sink[{first}]; give each file sink its own file",
                        f.path.display()
                    ),
                ));
            }
            if let Some(file) = config_file {
                validate::sink_files(&sink, &sink_at, file, out);
            }
            sinks.push(sink);
        }
        if items.is_empty() && v.get_ref().is_array() {
            out.push(Finding::warning(
                sinks_at,
                "no sink: alerts go nowhere; add a [[alerts.sink]] (type = \"stdout\" is the default)",
            ));
        }
        config.alerts.sinks = sinks;
    }
}

/// An unknown name, with the allowed ones and the likeliest meant.
fn unknown(what: &str, name: &str, allowed: &[&str], at: KeyPath) -> Finding {
    let intro = format!("{what}s are:");
    Finding::error(at, unknown_message(what, name, &intro, allowed))
}

fn unknown_message(what: &str, name: &str, intro: &str, allowed: &[&str]) -> String {
    let hint = closest(name, allowed).map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
    format!(
        "unknown {what} `{name}`{hint}; {intro} {}",
        allowed.join(", ")
    )
}

/// Rewords serde's messages in the file's terms: keys and values, not fields and variants.
fn tidy(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    let named = |rest: &str| -> Option<(String, Vec<String>)> {
        let (name, rest) = rest.strip_prefix('`')?.split_once('`')?;
        let allowed = rest
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        Some((name.to_owned(), allowed))
    };
    if let Some((name, allowed)) = message.strip_prefix("unknown field ").and_then(named) {
        if allowed.is_empty() {
            return format!("unknown key `{name}`; this table takes no keys");
        }
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        return unknown_message("key", &name, "keys are:", &allowed);
    }
    if let Some((name, allowed)) = message.strip_prefix("unknown variant ").and_then(named) {
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        return unknown_message("value", &name, "allowed:", &allowed);
    }
    // "expected struct DaemonSettings" says nothing to someone editing a file.
    match message.find("expected struct ") {
        Some(i) => format!("{}expected a table", &message[..i]),
        None => message.replace("expected a sequence", "expected an array"),
    }
}

/// The allowed name within a small edit distance of `name`.
fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, a)| *d <= (a.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
