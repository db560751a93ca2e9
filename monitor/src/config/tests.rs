use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

use super::{settings::RuleEntry, sink::SinkEntry, *};
use crate::{alert::Severity, credentials::Category, detect::RULES};

const FILE: &str = "t.toml";

/// The diagnostics of `text`, one `Display` line each (file checks off).
fn diagnostics(text: &str) -> Vec<String> {
    match Config::from_toml(text, Path::new(FILE), false) {
        Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    }
}

/// The one diagnostic of `text`.
fn only(text: &str) -> String {
    let mut d = diagnostics(text);
    assert_eq!(d.len(), 1, "{text}\n→ {d:#?}");
    d.remove(0)
}

fn config(text: &str) -> Config {
    match Config::from_toml(text, Path::new(FILE), false) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{text}\n→ {e}"),
    }
}

// ---- the shipped default file ----

#[test]
fn config_default_file_is_the_default() {
    let loaded = Config::from_toml(DEFAULT_TOML, Path::new("pthwatch.toml"), true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    assert_eq!(loaded.config, Config::default());
}

/// The keys a section type takes, as serde lists them for an unknown one.
fn keys_of<T: DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let e = toml::from_str::<T>("zz_probe = 1").unwrap_err();
    let message = e.message();
    let (_, allowed) = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("{message}"));
    allowed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn config_default_file_documents_every_key() {
    let documented = |key: &str| {
        DEFAULT_TOML.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} ="))
        })
    };
    let sections = [
        ("daemon", keys_of::<DaemonSettings>()),
        ("rules", keys_of::<RuleEntry>()),
        ("allow", keys_of::<AllowEntry>()),
        ("alerts.sink", keys_of::<SinkEntry>()),
        ("event_log", keys_of::<EventLogSettings>()),
        ("metrics", keys_of::<MetricsSettings>()),
        ("credentials", keys_of::<CredentialSettings>()),
        ("containers", keys_of::<ContainerSettings>()),
    ];
    for (section, keys) in sections {
        assert!(!keys.is_empty());
        for key in keys {
            assert!(
                documented(&key),
                "{section}.{key} is not in packaging/pthwatch.toml"
            );
        }
    }
    for rule in RULES {
        assert!(
            DEFAULT_TOML.contains(&format!("\n[rules.{rule}]\n")),
            "rule {rule} has no section in packaging/pthwatch.toml"
        );
    }
    let categories = " ".to_owned()
        + &DEFAULT_TOML
            .split_once("# Built-in categories to leave out: ")
            .unwrap()
            .1
            .lines()
            .take_while(|l| l.starts_with("# ") || !l.starts_with('#'))
            .map(|l| l.trim_start_matches('#'))
            .collect::<Vec<_>>()
            .join(" ");
    for c in Category::ALL {
        assert!(
            categories.contains(&format!(" {c},")) || categories.contains(&format!(" {c} ")),
            "category {c} is not listed in packaging/pthwatch.toml"
        );
    }
}

/// The commented-out examples (`# [[...]]` blocks) are valid as written.
#[test]
fn config_default_file_examples_are_valid() {
    let mut examples = String::new();
    let mut inside = false;
    for line in DEFAULT_TOML.lines() {
        if let Some(header) = line.strip_prefix("# [[") {
            inside = true;
            examples.push_str(&format!("[[{header}\n"));
        } else if let Some(kv) = line
            .strip_prefix("# ")
            .filter(|l| inside && l.contains(" = "))
        {
            examples.push_str(kv);
            examples.push('\n');
        } else {
            inside = false;
        }
    }
    let c = config(&examples);
    assert_eq!(c.allow.entries().len(), 1);
    assert_eq!(c.allow.entries()[0].matchers().len(), 7);
    let kinds: Vec<&str> = c.alerts.sinks.iter().map(Sink::kind).collect();
    assert_eq!(kinds, ["file", "webhook"]);
    let Sink::Webhook(w) = &c.alerts.sinks[1] else {
        unreachable!()
    };
    assert_eq!(w.headers["Authorization"], "Bearer change-me");
    assert_eq!(w.format, WebhookFormat::Pthwatch);
    assert_eq!(w.min_severity, Severity::High);
}

// ---- reading settings ----

#[test]
fn a_disabled_rule_is_not_enforced_in_the_kernel() {
    let c = config(
        r#"
[daemon]
mode = "block"

[rules.hook_exec_written_file]
enabled = false
mode = "kill"
"#,
    );
    let modes = c.rule_modes();
    assert_eq!(modes.get("hook_exec_written_file"), Mode::Alert);
    assert_eq!(modes.get("hook_persistence"), Mode::Block);
}

#[test]
fn config_sections_read_and_rules_inherit() {
    let c = config(
        r#"
[daemon]
mode = "block"
probation_opens = 0
ringbuf_bytes = 65536
fail_closed_on_lost_events = false
state_dir = "/srv/pthwatch"

[rules.hook_persistence]
mode = "kill"

[rules.unknown_startup_hook]
enabled = false

[rules.hook_credential_access]
mode = "inherit"

[metrics]
enabled = true
listen = "[::1]:9000"

[credentials]
extra_names = [".app-token", "app/token"]
disable_categories = ["history", "dot_env"]
"#,
    );
    assert_eq!(c.daemon.mode, Mode::Block);
    assert_eq!(c.daemon.ringbuf_bytes, 65536);
    assert!(!c.daemon.fail_closed_on_lost_events);
    let modes = c.rule_modes();
    assert_eq!(modes.get("hook_persistence"), Mode::Kill);
    assert_eq!(modes.get("hook_credential_access"), Mode::Block);
    assert_eq!(modes.get("hook_credential_exfiltration"), Mode::Block);
    // Only `enabled` was given: the rule keeps its own default mode.
    assert_eq!(modes.get("unknown_startup_hook"), Mode::Alert);
    assert!(!c.rule_enabled("unknown_startup_hook"));
    assert!(c.rule_enabled("hook_persistence"));
    assert_eq!(c.metrics.listen.to_string(), "[::1]:9000");
    let cat = c.credentials.catalog_config();
    assert_eq!(
        cat.extra_names,
        [
            (".app-token".to_owned(), None),
            ("token".to_owned(), Some("app".to_owned()))
        ]
    );
    assert!(!c.credentials.category_enabled(Category::History));
    assert!(c.credentials.category_enabled(Category::Ssh));
}

#[test]
fn config_unknown_startup_hook_inherits_when_told() {
    let c = config("[daemon]\nmode = \"kill\"\n[rules.unknown_startup_hook]\nmode = \"inherit\"\n");
    assert_eq!(c.rule_modes().get("unknown_startup_hook"), Mode::Kill);
    assert_eq!(
        Config::default().rule_modes().get("unknown_startup_hook"),
        Mode::Alert
    );
}

#[test]
fn config_sinks_replace_the_default_and_take_defaults() {
    let c = config(
        r#"
[[alerts.sink]]
type = "file"
path = "/var/log/pthwatch/alerts.jsonl"
min_severity = "high"

[[alerts.sink]]
type = "webhook"
url = "http://127.0.0.1:2801/"
format = "falcosidekick"
"#,
    );
    assert_eq!(
        c.alerts.sinks[0],
        Sink::File(FileSink {
            min_severity: Severity::High,
            path: PathBuf::from("/var/log/pthwatch/alerts.jsonl"),
            max_bytes: FileSink::DEFAULT_MAX_BYTES,
            keep: FileSink::DEFAULT_KEEP,
        })
    );
    let Sink::Webhook(w) = &c.alerts.sinks[1] else {
        panic!("not a webhook")
    };
    assert_eq!(w.format, WebhookFormat::Falcosidekick);
    assert_eq!(w.min_severity, Severity::Info);
    assert_eq!(w.timeout_ms, WebhookSink::DEFAULT_TIMEOUT_MS);
    assert_eq!(w.spool_dir, Path::new(WebhookSink::DEFAULT_SPOOL_DIR));
}

// ---- errors: where, which key, what is allowed ----

#[test]
fn config_unknown_key_names_it_and_the_allowed_keys() {
    assert_eq!(
        only("[daemon]\nprobaton_opens = 3\n"),
        "t.toml:2:1: error: daemon.probaton_opens: unknown key `probaton_opens` (did you mean `probation_opens`?); keys are: mode, probation_opens, probation_exemptions, ringbuf_bytes, fail_closed_on_lost_events, state_dir"
    );
    assert_eq!(
        only("[metric]\nenabled = true\n"),
        "t.toml:1:2: error: metric: unknown section `metric` (did you mean `metrics`?); sections are: daemon, rules, allow, alerts, event_log, metrics, credentials, containers"
    );
    assert_eq!(
        only("[rules.hook_persistance]\nmode = \"kill\"\n"),
        "t.toml:1:8: error: rules.hook_persistance: unknown rule `hook_persistance` (did you mean `hook_persistence`?); rules are: hook_credential_exfiltration, hook_credential_access, hook_persistence, hook_exec_written_file, unknown_startup_hook, hook_runaway_respawn"
    );
    assert_eq!(
        only("[rules.hook_persistence]\nmodes = \"kill\"\n"),
        "t.toml:2:1: error: rules.hook_persistence.modes: unknown key `modes` (did you mean `mode`?); keys are: enabled, mode"
    );
    assert_eq!(
        only("[alerts]\nsinks = []\n"),
        "t.toml:2:1: error: alerts.sinks: unknown key `sinks` (did you mean `sink`?); keys are: sink"
    );
    let e = only("[[alerts.sink]]\ntype = \"file\"\npath = \"/x\"\nrotate = 3\n");
    assert!(
        e.starts_with("t.toml:4:1: error: alerts.sink[0].rotate: unknown key `rotate`; keys are: type, min_severity, path, max_bytes, keep, url,"),
        "{e}"
    );
}

#[test]
fn config_values_out_of_their_set() {
    let cases = [
        (
            "[daemon]\nmode = \"stop\"\n",
            "t.toml:2:8: error: daemon.mode: unknown value `stop`; allowed: alert, block, kill",
        ),
        (
            "[rules.hook_persistence]\nmode = \"blok\"\n",
            "t.toml:2:8: error: rules.hook_persistence.mode: unknown value `blok` (did you mean `block`?); allowed: alert, block, kill, inherit",
        ),
        (
            "[containers]\nmax_file_bytes = 10\n",
            "t.toml:2:18: error: containers.max_file_bytes: 10 is out of range; allowed: 4096 (4 KiB) to 67108864 (64 MiB), e.g. 1048576 (1 MiB)",
        ),
        (
            "[containers]\ncache_entries = 0\n",
            "t.toml:2:17: error: containers.cache_entries: 0 is out of range; allowed: 1 to 65536 containers",
        ),
        (
            "[containers]\ncontainerd_tasks = \"run/containerd\"\n",
            "t.toml:2:20: error: containers.containerd_tasks: `run/containerd` is relative; give an absolute path (pthwatch does not run from a fixed directory)",
        ),
        (
            "[containers]\nmetdata = false\n",
            "t.toml:2:1: error: containers.metdata: unknown key `metdata` (did you mean `metadata`?); keys are: metadata, containerd_tasks, crio_containers, docker_containers, pod_logs, max_file_bytes, cache_entries",
        ),
        (
            "[daemon]\nprobation_opens = 5000\n",
            "t.toml:2:19: error: daemon.probation_opens: 5000 is out of range; allowed: 0 (recognise interpreters by name only) to 4096",
        ),
        (
            "[daemon]\nprobation_opens = -1\n",
            "t.toml:2:19: error: daemon.probation_opens: invalid value: integer `-1`, expected u32",
        ),
        (
            "[daemon]\nringbuf_bytes = 100000\n",
            "t.toml:2:17: error: daemon.ringbuf_bytes: 100000 is not a power of two; allowed: a power of two from 65536 (64 KiB) to 268435456 (256 MiB), e.g. 8388608 (8 MiB)",
        ),
        (
            "[daemon]\nringbuf_bytes = 32768\n",
            "t.toml:2:17: error: daemon.ringbuf_bytes: 32768 is out of range; allowed: a power of two from 65536 (64 KiB) to 268435456 (256 MiB), e.g. 8388608 (8 MiB)",
        ),
        (
            "[daemon]\nstate_dir = \"var/lib/pthwatch\"\n",
            "t.toml:2:13: error: daemon.state_dir: `var/lib/pthwatch` is relative; give an absolute path (pthwatch does not run from a fixed directory)",
        ),
        (
            "[daemon]\nfail_closed_on_lost_events = \"yes\"\n",
            "t.toml:2:30: error: daemon.fail_closed_on_lost_events: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "daemon = 3\n",
            "t.toml:1:10: error: daemon: invalid type: integer `3`, expected a table",
        ),
        (
            "[event_log]\ncheckpoint_every = 0\n",
            "t.toml:2:20: error: event_log.checkpoint_every: 0 is out of range; allowed: 1 to 1000000 records between checkpoints",
        ),
        (
            "[metrics]\nlisten = \"localhost:9847\"\n",
            "t.toml:2:10: error: metrics.listen: invalid socket address syntax",
        ),
        (
            "[metrics]\nenabled = true\nlisten = \"0.0.0.0:9847\"\n",
            "t.toml:3:10: warning: metrics.listen: metrics on `0.0.0.0:9847` are open to the network without authentication; keep them on 127.0.0.1 or put a proxy in front",
        ),
        (
            "[credentials]\nextra_paths = [\"/etc/app/key\", \"app/key\"]\n",
            "t.toml:2:32: error: credentials.extra_paths[1]: `app/key` must start with `/` or `~/` (every home); to match a file name anywhere, add it to credentials.extra_names",
        ),
        (
            "[credentials]\nextra_names = [\"*.key\"]\n",
            "t.toml:2:16: error: credentials.extra_names[0]: `*.key`: the kernel matches exact names; put patterns in credentials.extra_paths (write `name`, or `dir/name` for a name in a directory so named)",
        ),
        (
            "[credentials]\nexclude = [\"~bob/.ssh\"]\n",
            "t.toml:2:12: error: credentials.exclude[0]: only `~/` (every home directory) is supported, not `~user/`",
        ),
        (
            "[credentials]\ndisable_categories = [\"ssh\", \"histroy\"]\n",
            "t.toml:2:30: error: credentials.disable_categories[1]: unknown value `histroy` (did you mean `history`?); allowed: ssh, aws, gcp, azure, oci, kubernetes, docker, git, netrc, package_registry, vault, database, dot_env, history, tls_key, wallet, system, ci_tokens, custom, process_environment, browser, keyring, data_platform",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(only(text), want, "{text}");
    }
}

#[test]
fn config_allow_entries_are_checked() {
    let cases = [
        (
            "[[allow]]\nrules = [\"*\"]\nreason = \"x\"\n",
            "t.toml:1:1: error: allow[0]: this entry has no matcher and would allow everything; give at least one of executable, hook_sha256, distribution, destination, port, container_image, k8s_namespace",
        ),
        (
            "[[allow]]\nexecutable = \"/usr/bin/python3\"\n",
            "t.toml:1:1: error: allow[0].rules: say which rules this exception applies to: rule names, or [\"*\"] for every rule; rules are: hook_credential_exfiltration, hook_credential_access, hook_persistence, hook_exec_written_file, unknown_startup_hook, hook_runaway_respawn",
        ),
        (
            "[[allow]]\nrules = [\"hook_persistence\", \"persistence\"]\nexecutable = \"/usr/bin/python3\"\n",
            "t.toml:2:30: error: allow[0].rules[1]: unknown rule `persistence`; allowed: \"*\" or one of hook_credential_exfiltration, hook_credential_access, hook_persistence, hook_exec_written_file, unknown_startup_hook, hook_runaway_respawn",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\nexecutable = \"python3\"\n",
            "t.toml:3:14: error: allow[0].executable: `python3` is not absolute; give the executable's full path, e.g. `/usr/bin/python3` or `/opt/*/bin/python3`",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\nhook_sha256 = \"abc\"\n",
            "t.toml:3:15: error: allow[0].hook_sha256: `abc` is not a sha256: 64 hexadecimal digits, as `sha256sum` prints them",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\ndistribution = \"litellm>=1.0\"\n",
            "t.toml:3:16: error: allow[0].distribution: `litellm>=1.0` is not `name` or `name==version`: a distribution name is letters, digits, `.`, `_` and `-` (other version operators are not supported)",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\ndestination = \"10.0.0.1/8\"\n",
            "t.toml:3:15: error: allow[0].destination: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\ndestination = \"10.0.0.0/33\"\n",
            "t.toml:3:15: error: allow[0].destination: `10.0.0.0/33`: an IPv4 prefix length is 0 to 32",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\ndestination = \"10.0.0/8\"\n",
            "t.toml:3:15: error: allow[0].destination: `10.0.0/8` is not an IP address or network; write it as `10.0.0.0/8` or `2001:db8::/32`",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\nexecutable = \"/bin/x\"\nport = \"9000-8000\"\n",
            "t.toml:4:8: error: allow[0].port: `9000-8000`: a range goes from low to high; did you mean \"8000-9000\"?",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\nexecutable = \"/bin/x\"\nport = 70000\n",
            "t.toml:4:8: error: allow[0].port: `70000` is not a port; ports are 1 to 65535",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\nk8s_namespace = \"Kube_System\"\n",
            "t.toml:3:17: error: allow[0].k8s_namespace: `Kube_System` is not a Kubernetes namespace: 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
        ),
        (
            "[[allow]]\nrules = [\"*\"]\ncontainer_image = \"*\"\n",
            "t.toml:3:19: error: allow[0].container_image: `*` would match every image; name a registry or repository, e.g. `registry.example.com/ci/*`",
        ),
        (
            "[[allow]]\nrules = [\"hook_credential_exfiltration\"]\nport = 443\n",
            "t.toml:1:1: warning: allow[0]: this entry exempts any hook that reads credentials and sends them out this way; narrow it with destination, executable, hook_sha256 or distribution",
        ),
        (
            "allow = { rules = [\"*\"] }\n",
            "t.toml:1:9: error: allow: expected `[[allow]]` entries (an array of tables), found table",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(only(text), want, "{text}");
    }
}

#[test]
fn config_sinks_are_checked() {
    let cases = [
        (
            "[[alerts.sink]]\nmin_severity = \"high\"\n",
            "t.toml:1:1: error: alerts.sink[0].type: every sink needs a `type`; allowed: \"stdout\", \"file\", \"webhook\"",
        ),
        (
            "[[alerts.sink]]\ntype = \"syslog\"\n",
            "t.toml:2:8: error: alerts.sink[0].type: unknown value `syslog`; allowed: stdout, file, webhook",
        ),
        (
            "[[alerts.sink]]\ntype = \"stdout\"\nmin_severity = \"urgent\"\n",
            "t.toml:3:16: error: alerts.sink[0].min_severity: unknown value `urgent`; allowed: critical, high, medium, low, info",
        ),
        (
            "[[alerts.sink]]\ntype = \"file\"\n",
            "t.toml:1:1: error: alerts.sink[0].path: a file sink needs a `path`, e.g. \"/var/log/pthwatch/alerts.jsonl\"",
        ),
        (
            "[[alerts.sink]]\ntype = \"file\"\npath = \"/var/log/a\"\nurl = \"https://x\"\n",
            "t.toml:4:7: error: alerts.sink[0].url: `url` is a key of type = \"webhook\" sinks, not of \"file\" ones",
        ),
        (
            "[[alerts.sink]]\ntype = \"file\"\npath = \"alerts.jsonl\"\n",
            "t.toml:3:8: error: alerts.sink[0].path: `alerts.jsonl` is relative; give an absolute path (pthwatch does not run from a fixed directory)",
        ),
        (
            "[[alerts.sink]]\ntype = \"file\"\npath = \"/a\"\nmax_bytes = 1000\n",
            "t.toml:4:13: error: alerts.sink[0].max_bytes: 1000 is too small to hold a few alerts; allowed: 0 (never rotate) or at least 65536",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"ftp://alerts.example.com/\"\n",
            "t.toml:3:7: error: alerts.sink[0].url: `ftp://alerts.example.com/` has scheme `ftp`; allowed: https, http",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://user:pw@alerts.example.com/\"\n",
            "t.toml:3:7: error: alerts.sink[0].url: `https://user:pw@alerts.example.com/` carries credentials; put them in `headers` (e.g. Authorization) instead",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://:443/\"\n",
            "t.toml:3:7: error: alerts.sink[0].url: `https://:443/` names no host",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"http://alerts.example.com/\"\n",
            "t.toml:3:7: warning: alerts.sink[0].url: alerts to this host travel unencrypted; use https:// unless the network is trusted",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nclient_cert = \"/etc/pthwatch/c.pem\"\n",
            "t.toml:4:15: error: alerts.sink[0].client_cert: a client certificate needs its `client_key`",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nheaders = { Host = \"x\" }\n",
            "t.toml:4:20: error: alerts.sink[0].headers.Host: pthwatch sets `Host` itself; remove it",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nheaders = { \"X Key\" = \"x\" }\n",
            "t.toml:4:23: error: alerts.sink[0].headers.\"X Key\": `X Key` is not an HTTP header name: letters, digits and !#$%&'*+-.^_`|~",
        ),
        (
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\ntimeout_ms = 0\n",
            "t.toml:4:14: error: alerts.sink[0].timeout_ms: 0 is out of range; allowed: 100 to 120000",
        ),
        (
            "[alerts]\nsink = []\n",
            "t.toml:2:8: warning: alerts.sink: no sink: alerts go nowhere; add a [[alerts.sink]] (type = \"stdout\" is the default)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(only(text), want, "{text}");
    }
    assert_eq!(
        diagnostics(
            "[[alerts.sink]]\ntype = \"file\"\npath = \"/a\"\n[[alerts.sink]]\ntype = \"file\"\npath = \"/a\"\n"
        ),
        [
            "t.toml:6:8: error: alerts.sink[1].path: `/a` is already the path of alerts.sink[0]; give each file sink its own file"
        ]
    );
}

#[test]
fn config_collects_every_error_in_file_order() {
    let text = r#"
[daemon]
mode = "stop"
probation_opens = 9999

[[allow]]
rules = ["*"]
port = "x"
destination = "10.0.0.0/40"

[[allow]]
rules = ["nope"]
executable = "/bin/x"

[[alerts.sink]]
type = "webhook"
url = "gopher://x"
timeout_ms = 1
"#;
    let d = diagnostics(text);
    let places: Vec<&str> = d
        .iter()
        .map(|l| {
            l.split(": error: ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap()
        })
        .collect();
    // Two refused values in one table are both reported, what is left of `[daemon]` is
    // still judged, and the second `[[allow]]` keeps its index though the first failed.
    assert_eq!(
        places,
        [
            "daemon.mode",
            "daemon.probation_opens",
            "allow[0].port",
            "allow[0].destination",
            "allow[1].rules[0]",
            "alerts.sink[0].url",
            "alerts.sink[0].timeout_ms"
        ],
        "{d:#?}"
    );
    assert!(d[0].starts_with("t.toml:3:8: "), "{}", d[0]);
    assert!(d[2].starts_with("t.toml:8:8: "), "{}", d[2]);
}

#[test]
fn config_syntax_errors_are_placed() {
    let d = diagnostics("[daemon]\nmode = \"alert\"\nmode = \"block\"\n");
    assert_eq!(d, ["t.toml:3:1: error: duplicate key"]);
    let d = diagnostics("[daemon\nmode = 1\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("t.toml:1:8: error: "), "{d:?}");
}

#[test]
fn config_error_report_reads_well() {
    let e = Config::from_toml(
        "[daemon]\nmode = \"stop\"\n",
        Path::new("/etc/p.toml"),
        false,
    )
    .unwrap_err();
    assert_eq!(e.error_count(), 1);
    assert_eq!(
        e.to_string(),
        "the configuration /etc/p.toml is invalid (1 error)\n  /etc/p.toml:2:8: error: daemon.mode: unknown value `stop`; allowed: alert, block, kill"
    );
    assert_eq!(
        e.diagnostics()[0].excerpt().unwrap(),
        " 2 | mode = \"stop\"\n   |        ^^^^^^"
    );
}

// ---- files the configuration names ----

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_files(text: &str) -> Vec<String> {
    match Config::from_toml(text, Path::new(FILE), true) {
        Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn config_secret_files_must_be_private() {
    let dir = TempDir::new("secrets");
    let private = dir.file("private.key", "k", 0o600);
    let group = dir.file("group.key", "k", 0o640);
    let world = dir.file("world.key", "k", 0o644);
    let empty = dir.file("empty.key", "", 0o600);
    let missing = dir.0.join("missing.key");
    let webhook = |secret: &Path| {
        format!(
            "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nsecret_file = \"{}\"\n",
            secret.display()
        )
    };
    assert!(with_files(&webhook(&private)).is_empty());
    let d = with_files(&webhook(&group));
    assert_eq!(
        d,
        [format!(
            "t.toml:4:15: warning: alerts.sink[0].secret_file: `{0}` is readable by its group (mode 0640); chmod 600 {0} unless that group is meant to read the secret",
            group.display()
        )]
    );
    let d = with_files(&webhook(&world));
    assert_eq!(
        d,
        [format!(
            "t.toml:4:15: error: alerts.sink[0].secret_file: `{0}` is readable by every user (mode 0644); a secret must not be: chmod 600 {0}",
            world.display()
        )]
    );
    let d = with_files(&webhook(&empty));
    assert_eq!(
        d,
        [format!(
            "t.toml:4:15: error: alerts.sink[0].secret_file: `{}` is empty",
            empty.display()
        )]
    );
    let d = with_files(&webhook(&missing));
    assert_eq!(
        d,
        [format!(
            "t.toml:4:15: error: alerts.sink[0].secret_file: `{}` does not exist",
            missing.display()
        )]
    );
    let d = with_files(&format!(
        "[event_log]\ncheckpoint_key_file = \"{}\"\n",
        world.display()
    ));
    assert!(
        d[0].starts_with("t.toml:2:23: error: event_log.checkpoint_key_file: "),
        "{d:?}"
    );
    // Certificates are public, but must exist.
    let cert = dir.file("ca.pem", "pem", 0o644);
    let text = format!(
        "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert.display(),
        missing.display(),
        private.display()
    );
    assert_eq!(
        with_files(&text),
        [format!(
            "t.toml:5:15: error: alerts.sink[0].client_cert: `{}` does not exist",
            missing.display()
        )]
    );
}

#[test]
fn config_credential_headers_in_a_world_readable_file() {
    let dir = TempDir::new("headers");
    let text = "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://a.example\"\nheaders = { Authorization = \"Bearer x\", X-Source = \"pthwatch\" }\n";
    let open = dir.file("open.toml", text, 0o644);
    let loaded = Config::load_checked(Some(&open)).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [format!(
            "{0}:4:29: warning: alerts.sink[0].headers.Authorization: `Authorization` looks like a credential and every user can read {0}; chmod 600 it, or sign with secret_file instead",
            open.display()
        )]
    );
    let closed = dir.file("closed.toml", text, 0o600);
    assert!(
        Config::load_checked(Some(&closed))
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn config_load_and_reload() {
    let dir = TempDir::new("load");
    let path = dir.file("pthwatch.toml", "[daemon]\nmode = \"block\"\n", 0o644);
    let loaded = Config::load_checked(Some(&path)).unwrap();
    assert_eq!(loaded.source.as_deref(), Some(path.as_path()));
    assert_eq!(loaded.config.daemon.mode, Mode::Block);

    let missing = dir.0.join("absent.toml");
    let e = Config::load(Some(&missing)).unwrap_err();
    assert!(matches!(e, ConfigErrors::Unreadable { .. }), "{e}");
    assert!(
        e.to_string().starts_with("cannot read the configuration "),
        "{e}"
    );

    let running = loaded.config;
    // A valid change applies, except what needs a restart.
    std::fs::write(
        &path,
        "[daemon]\nmode = \"kill\"\nringbuf_bytes = 65536\n[metrics]\nenabled = true\n",
    )
    .unwrap();
    let next = reload(Some(&path), &running).unwrap();
    assert_eq!(next.daemon.mode, Mode::Kill);
    assert_eq!(next.daemon.ringbuf_bytes, running.daemon.ringbuf_bytes);
    assert!(!next.metrics.enabled);
    // An invalid one is refused as a whole: the caller keeps `running`.
    std::fs::write(
        &path,
        "[daemon]\nmode = \"kill\"\nprobation_opens = 99999\n",
    )
    .unwrap();
    let e = reload(Some(&path), &running).unwrap_err();
    assert_eq!(e.error_count(), 1, "{e}");

    std::fs::write(&path, b"mode = \"\xff\"\n").unwrap();
    let e = Config::load(Some(&path)).unwrap_err();
    assert!(
        e.diagnostics()[0]
            .to_string()
            .ends_with(":1:9: error: the file is not UTF-8 text"),
        "{e}"
    );
}

#[test]
fn config_check_summary_and_command_line() {
    let c = config(
        r#"
[daemon]
mode = "block"
[rules.hook_persistence]
enabled = false
[[alerts.sink]]
type = "file"
path = "/var/log/pthwatch/alerts.jsonl"
min_severity = "high"
[credentials]
disable_categories = ["history"]
"#,
    );
    let s = command::summary(&c);
    assert!(s.contains("  mode         block\n"), "{s}");
    assert!(
        s.contains("hook_credential_access: block (inherited)\n"),
        "{s}"
    );
    assert!(s.contains("hook_persistence: disabled\n"), "{s}");
    assert!(s.contains("unknown_startup_hook: alert\n"), "{s}");
    assert!(
        s.contains("  alerts       file /var/log/pthwatch/alerts.jsonl (high+)\n"),
        "{s}"
    );
    assert!(s.contains("disabled: history\n"), "{s}");

    use clap::Parser as _;
    let cli =
        crate::cli::Cli::try_parse_from(["pthwatch", "config", "check", "/tmp/p.toml"]).unwrap();
    let crate::cli::Command::Config(ConfigArgs {
        action: command::ConfigAction::Check { path },
    }) = cli.command
    else {
        panic!("not `config check`");
    };
    assert_eq!(path.as_deref(), Some(Path::new("/tmp/p.toml")));
    let cli = crate::cli::Cli::try_parse_from(["pthwatch", "config", "default"]).unwrap();
    assert!(matches!(
        cli.command,
        crate::cli::Command::Config(ConfigArgs {
            action: command::ConfigAction::Default
        })
    ));
}

/// `pthwatch run` without flags leaves every setting to the file (or its defaults).
#[test]
fn run_flags_default_to_the_file() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from(["pthwatch", "run"]).unwrap();
    let crate::cli::Command::Run {
        config,
        mode,
        probation_opens,
        ringbuf_bytes,
        fail_open_on_lost_events,
        rule_modes,
        ..
    } = cli.command
    else {
        panic!("not `run`");
    };
    assert_eq!(config, None);
    assert_eq!(mode, None);
    assert_eq!(probation_opens, None);
    assert_eq!(ringbuf_bytes, None);
    assert!(!fail_open_on_lost_events);
    assert!(rule_modes.is_empty());
}
