//! Checks beyond what the types say: ranges, absolute paths, rule names, entries that
//! would allow everything, and the files the configuration names (secrets must not be
//! readable by other users).

use std::{fs, io, os::unix::fs::PermissionsExt as _, path::Path};

use super::{
    allow::{AllowEntry, MATCHERS},
    diag::{Finding, KeyPath},
    settings::{
        ContainerSettings, CredentialSettings, DaemonSettings, EventLogSettings, MetricsSettings,
        split_name,
    },
    sink::{Sink, absolute},
};
use crate::{
    credentials::{
        Anchor, Category, CredentialCatalog, CredentialConfig, CredentialError, Pattern,
    },
    detect::{EXFIL, RULES},
};

pub(super) fn daemon(d: &DaemonSettings, out: &mut Vec<Finding>) {
    let at = KeyPath::root().key("daemon");
    if d.probation_opens > DaemonSettings::MAX_PROBATION_OPENS {
        out.push(Finding::error(
            at.key("probation_opens"),
            format!(
                "{} is out of range; allowed: 0 (recognise interpreters by name only) to {}",
                d.probation_opens,
                DaemonSettings::MAX_PROBATION_OPENS
            ),
        ));
    }
    let bytes = d.ringbuf_bytes;
    let range = DaemonSettings::MIN_RINGBUF_BYTES..=DaemonSettings::MAX_RINGBUF_BYTES;
    if !bytes.is_power_of_two() || !range.contains(&bytes) {
        let why = if bytes.is_power_of_two() {
            "is out of range"
        } else {
            "is not a power of two"
        };
        out.push(Finding::error(
            at.key("ringbuf_bytes"),
            format!(
                "{bytes} {why}; allowed: a power of two from {} (64 KiB) to {} (256 MiB), e.g. 8388608 (8 MiB)",
                range.start(),
                range.end()
            ),
        ));
    }
    absolute(&d.state_dir, &at.key("state_dir"), out);
}

pub(super) fn allow_entry(e: &AllowEntry, at: &KeyPath, out: &mut Vec<Finding>) {
    if e.rules.is_empty() {
        out.push(Finding::error(
            at.key("rules"),
            format!(
                "say which rules this exception applies to: rule names, or [\"*\"] for every rule; rules are: {}",
                RULES.join(", ")
            ),
        ));
    }
    for (i, rule) in e.rules.iter().enumerate() {
        if rule != "*" && !RULES.contains(&rule.as_str()) {
            out.push(Finding::error(
                at.key("rules").index(i),
                format!(
                    "unknown rule `{rule}`; allowed: \"*\" or one of {}",
                    RULES.join(", ")
                ),
            ));
        }
    }
    if e.rules.len() > 1 && e.rules.iter().any(|r| r == "*") {
        out.push(Finding::warning(
            at.key("rules"),
            "\"*\" already covers every rule; the other names add nothing",
        ));
    }
    let matchers = e.matchers();
    if matchers.is_empty() {
        out.push(Finding::error(
            at.clone(),
            format!(
                "this entry has no matcher and would allow everything; give at least one of {}",
                MATCHERS.join(", ")
            ),
        ));
    } else if e.covers(EXFIL)
        && matchers.iter().all(|m| *m == "port" || *m == "destination")
        && e.destination.is_none_or(|d| d.prefix() == 0)
    {
        out.push(Finding::warning(
            at.clone(),
            "this entry exempts any hook that reads credentials and sends them out this way; narrow it with destination, executable, hook_sha256 or distribution",
        ));
    }
}

pub(super) fn event_log(e: &EventLogSettings, out: &mut Vec<Finding>) {
    let at = KeyPath::root().key("event_log");
    absolute(&e.path, &at.key("path"), out);
    if let Some(key) = &e.checkpoint_key_file {
        absolute(key, &at.key("checkpoint_key_file"), out);
    }
    if !(1..=EventLogSettings::MAX_CHECKPOINT_EVERY).contains(&e.checkpoint_every) {
        out.push(Finding::error(
            at.key("checkpoint_every"),
            format!(
                "{} is out of range; allowed: 1 to {} records between checkpoints",
                e.checkpoint_every,
                EventLogSettings::MAX_CHECKPOINT_EVERY
            ),
        ));
    }
}

pub(super) fn metrics(m: &MetricsSettings, out: &mut Vec<Finding>) {
    let at = KeyPath::root().key("metrics").key("listen");
    if m.listen.port() == 0 {
        out.push(Finding::error(
            at,
            format!("`{}` has port 0; give a port (1 to 65535)", m.listen),
        ));
    } else if m.enabled && !m.listen.ip().is_loopback() {
        out.push(Finding::warning(
            at,
            format!(
                "metrics on `{}` are open to the network without authentication; keep them on 127.0.0.1 or put a proxy in front",
                m.listen
            ),
        ));
    }
}

pub(super) fn credentials(c: &CredentialSettings, out: &mut Vec<Finding>) {
    let at = KeyPath::root().key("credentials");
    for (i, text) in c.extra_paths.iter().enumerate() {
        match Pattern::parse(text) {
            Err(e) => out.push(Finding::error(at.key("extra_paths").index(i), e.reason)),
            Ok(p) if p.anchor() == Anchor::Tail => out.push(Finding::error(
                at.key("extra_paths").index(i),
                format!(
                    "`{text}` must start with `/` or `~/` (every home); to match a file name anywhere, add it to credentials.extra_names"
                ),
            )),
            Ok(_) => {}
        }
    }
    for (i, text) in c.extra_names.iter().enumerate() {
        // The catalogue's own check, so the two can never disagree.
        let one = CredentialConfig {
            defaults: false,
            extra_names: vec![split_name(text)],
            ..CredentialConfig::default()
        };
        if let Err(e) = CredentialCatalog::from_config(&one) {
            let reason = match e {
                CredentialError::InvalidName { name, reason } => format!("`{name}`: {reason}"),
                other => other.to_string(),
            };
            out.push(Finding::error(
                at.key("extra_names").index(i),
                format!(
                    "{reason} (write `name`, or `dir/name` for a name in a directory so named)"
                ),
            ));
        }
    }
    for (i, text) in c.exclude.iter().enumerate() {
        if let Err(e) = Pattern::parse(text) {
            out.push(Finding::error(at.key("exclude").index(i), e.reason));
        }
    }
    for (i, category) in c.disable_categories.iter().enumerate() {
        if c.disable_categories[..i].contains(category) {
            out.push(Finding::warning(
                at.key("disable_categories").index(i),
                format!("`{category}` is listed twice"),
            ));
        }
    }
    let custom = !c.extra_paths.is_empty() || !c.extra_names.is_empty();
    if custom && c.disable_categories.contains(&Category::Custom) {
        out.push(Finding::warning(
            at.key("disable_categories"),
            "`custom` is the category of extra_paths and extra_names: disabling it ignores them",
        ));
    }
}

pub(super) fn containers(c: &ContainerSettings, out: &mut Vec<Finding>) {
    let at = KeyPath::root().key("containers");
    for (key, path) in [
        ("containerd_tasks", &c.containerd_tasks),
        ("crio_containers", &c.crio_containers),
        ("docker_containers", &c.docker_containers),
        ("pod_logs", &c.pod_logs),
    ] {
        absolute(path, &at.key(key), out);
    }
    let bytes = (
        ContainerSettings::MIN_FILE_BYTES,
        ContainerSettings::MAX_FILE_BYTES,
    );
    if !(bytes.0..=bytes.1).contains(&c.max_file_bytes) {
        out.push(Finding::error(
            at.key("max_file_bytes"),
            format!(
                "{} is out of range; allowed: {} (4 KiB) to {} (64 MiB), e.g. 1048576 (1 MiB)",
                c.max_file_bytes, bytes.0, bytes.1
            ),
        ));
    }
    if !(1..=ContainerSettings::MAX_CACHE_ENTRIES).contains(&c.cache_entries) {
        out.push(Finding::error(
            at.key("cache_entries"),
            format!(
                "{} is out of range; allowed: 1 to {} containers",
                c.cache_entries,
                ContainerSettings::MAX_CACHE_ENTRIES
            ),
        ));
    }
}

/// The files a sink names; `config_file` is the configuration itself, which holds the
/// sink's headers.
pub(super) fn sink_files(sink: &Sink, at: &KeyPath, config_file: &Path, out: &mut Vec<Finding>) {
    let Sink::Webhook(w) = sink else {
        return;
    };
    let mut secret_headers = w.headers.keys().filter(|name| {
        let name = name.to_ascii_lowercase();
        ["auth", "cookie", "token", "key", "secret", "password"]
            .iter()
            .any(|word| name.contains(word))
    });
    if let Some(name) = secret_headers.next()
        && fs::metadata(config_file).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
    {
        out.push(Finding::warning(
            at.key("headers").key(name),
            format!(
                "`{name}` looks like a credential and every user can read {}; chmod 600 it, or sign with secret_file instead",
                config_file.display()
            ),
        ));
    }
    if let Some(p) = &w.secret_file {
        secret_file(p, &at.key("secret_file"), out);
    }
    if let Some(p) = &w.client_key {
        secret_file(p, &at.key("client_key"), out);
    }
    for (key, path) in [("ca_file", &w.ca_file), ("client_cert", &w.client_cert)] {
        if let Some(p) = path {
            public_file(p, &at.key(key), out);
        }
    }
}

pub(super) fn event_log_files(e: &EventLogSettings, out: &mut Vec<Finding>) {
    if let Some(p) = &e.checkpoint_key_file {
        let at = KeyPath::root().key("event_log").key("checkpoint_key_file");
        secret_file(p, &at, out);
    }
}

/// A key: it must exist, hold something, and be kept from other users. Readable by the
/// group is a warning (some sites share keys through a group on purpose).
fn secret_file(path: &Path, at: &KeyPath, out: &mut Vec<Finding>) {
    let Some(meta) = regular_file(path, at, out) else {
        return;
    };
    let shown = path.display();
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o006 != 0 {
        let how = if mode & 0o004 != 0 {
            "readable"
        } else {
            "writable"
        };
        out.push(Finding::error(
            at.clone(),
            format!(
                "`{shown}` is {how} by every user (mode {mode:04o}); a secret must not be: chmod 600 {shown}"
            ),
        ));
    } else if mode & 0o060 != 0 {
        out.push(Finding::warning(
            at.clone(),
            format!(
                "`{shown}` is readable by its group (mode {mode:04o}); chmod 600 {shown} unless that group is meant to read the secret"
            ),
        ));
    }
    if meta.len() == 0 {
        out.push(Finding::error(at.clone(), format!("`{shown}` is empty")));
    }
    readable(path, at, out);
}

/// A certificate or CA bundle: public, but it must be there.
fn public_file(path: &Path, at: &KeyPath, out: &mut Vec<Finding>) {
    if regular_file(path, at, out).is_some() {
        readable(path, at, out);
    }
}

fn regular_file(path: &Path, at: &KeyPath, out: &mut Vec<Finding>) -> Option<fs::Metadata> {
    if !path.is_absolute() {
        return None; // Already reported.
    }
    let shown = path.display();
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => {
            out.push(Finding::error(
                at.clone(),
                format!("`{shown}` is not a regular file"),
            ));
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            out.push(Finding::error(
                at.clone(),
                format!("`{shown}` does not exist"),
            ));
            None
        }
        Err(e) => {
            out.push(Finding::error(
                at.clone(),
                format!("`{shown}` cannot be examined: {e}"),
            ));
            None
        }
    }
}

fn readable(path: &Path, at: &KeyPath, out: &mut Vec<Finding>) {
    match fs::File::open(path) {
        Ok(_) => {}
        // `config check` as a user: the daemon, as root, may well read it.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => out.push(Finding::warning(
            at.clone(),
            format!(
                "`{}` cannot be read by this user; the daemon (root) may; run the check as root to be sure",
                path.display()
            ),
        )),
        Err(e) => out.push(Finding::error(
            at.clone(),
            format!("`{}` cannot be read: {e}", path.display()),
        )),
    }
}
