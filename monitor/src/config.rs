//! The configuration file (`/etc/pthwatch/pthwatch.toml`): one TOML file holding every
//! setting, each with a default, so an absent file means a working daemon.
//!
//! Loading never stops at the first problem: every section and every `[[allow]]` and
//! `[[alerts.sink]]` entry is read on its own, then checked as a whole, and each problem is
//! reported with its file, line, column, dotted key and what is allowed there. A reload that
//! does not validate is refused, so the configuration in force is always a valid one.
//!
//! `packaging/pthwatch.toml` is the documented default; a test holds it equal to
//! [`Config::default`], so the documentation and the code cannot drift apart.

// Until the daemon loads the file at start, reloads it on SIGHUP and consults the
// allowlist, only `pthwatch config` uses this module.
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        unused_imports,
        reason = "wired into `run` separately; remove once the daemon uses the configuration"
    )
)]

mod allow;
mod cidr;
mod command;
mod diag;
mod parse;
mod settings;
mod sink;
mod validate;

#[cfg(test)]
mod allow_tests;
#[cfg(test)]
mod tests;

use std::{
    io,
    path::{Path, PathBuf},
};

pub use self::{
    allow::{AlertFacts, AllowEntry, Allowlist, DistributionSpec, ExePattern, PortRange},
    cidr::{Cidr, CidrError},
    command::{ConfigArgs, command},
    diag::{ConfigErrors, Diagnostic, Level},
    settings::{
        ContainerSettings, CredentialSettings, DaemonSettings, EventLogSettings, MetricsSettings,
        RuleTable,
    },
    sink::{AlertSettings, FileSink, Sink, WebhookFormat, WebhookSink},
};
use crate::{cli::Mode, detect::RuleModes};

/// Where the daemon and `pthwatch config check` look when no path is given.
pub const DEFAULT_PATH: &str = "/etc/pthwatch/pthwatch.toml";

/// The shipped, documented default file (`pthwatch config default` prints it).
pub const DEFAULT_TOML: &str = include_str!("../../packaging/pthwatch.toml");

/// Every setting of pthwatch. `Default` is the configuration of an absent file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonSettings,
    pub rules: RuleTable,
    pub allow: Allowlist,
    pub alerts: AlertSettings,
    pub event_log: EventLogSettings,
    pub metrics: MetricsSettings,
    pub credentials: CredentialSettings,
    pub containers: ContainerSettings,
}

/// A configuration that validated, with what was read and the warnings it raised.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file read, or `None` when the default path was absent and the defaults apply.
    pub source: Option<PathBuf>,
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// Reads and validates the configuration. Without `path`, reads [`DEFAULT_PATH`] and
    /// falls back to the defaults when it does not exist; a `path` given must exist.
    /// Warnings are logged.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigErrors> {
        let loaded = Self::load_checked(path)?;
        for w in &loaded.warnings {
            tracing::warn!(key = %w.key, "configuration: {w}");
        }
        Ok(loaded.config)
    }

    /// [`Config::load`] that hands the warnings back instead of logging them.
    pub fn load_checked(path: Option<&Path>) -> Result<Loaded, ConfigErrors> {
        let file = path.unwrap_or(Path::new(DEFAULT_PATH));
        let text = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if path.is_none() && e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    config: Self::default(),
                    source: None,
                    warnings: Vec::new(),
                });
            }
            Err(error) => {
                return Err(ConfigErrors::Unreadable {
                    path: file.to_owned(),
                    error,
                });
            }
        };
        let text = String::from_utf8(text).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            ConfigErrors::Invalid {
                path: file.to_owned(),
                diagnostics: vec![Diagnostic::not_utf8(file, e.as_bytes(), at)],
            }
        })?;
        let mut loaded = Self::from_toml(&text, file, true)?;
        loaded.source = Some(file.to_owned());
        Ok(loaded)
    }

    /// Parses and validates `text` as if read from `file` (which only names it in
    /// diagnostics). `check_files` also checks the files the configuration refers to
    /// (secrets, certificates): off, only the text is judged.
    pub fn from_toml(text: &str, file: &Path, check_files: bool) -> Result<Loaded, ConfigErrors> {
        let (config, diagnostics) = parse::analyse(text, file, check_files);
        if diagnostics.iter().any(|d| d.level == Level::Error) {
            return Err(ConfigErrors::Invalid {
                path: file.to_owned(),
                diagnostics,
            });
        }
        Ok(Loaded {
            config,
            source: Some(file.to_owned()),
            warnings: diagnostics,
        })
    }

    /// The response mode of every rule, as detection uses it: `mode = "inherit"` takes
    /// `daemon.mode`.
    pub fn rule_modes(&self) -> RuleModes {
        let mut modes = RuleModes::new(self.daemon.mode);
        for (rule, settings) in self.rules.iter() {
            // Every rule is set, `inherit` ones included: `RuleModes` would otherwise keep
            // its own default for unknown_startup_hook. The table only holds names from
            // `detect::RULES`, which `set` accepts. A disabled rule neither reports nor
            // acts: the kernel must not block for it either.
            let mode = if settings.enabled {
                settings.mode.unwrap_or(self.daemon.mode)
            } else {
                Mode::Alert
            };
            let _ = modes.set(rule, mode);
        }
        modes
    }

    /// Whether a rule reports and acts at all (`[rules.<name>] enabled`).
    pub fn rule_enabled(&self, rule: &str) -> bool {
        self.rules.get(rule).is_none_or(|r| r.enabled)
    }

    /// Replaces the settings a running daemon cannot change (the ring buffer is sized at
    /// load, the state directory and the metrics listener are opened once) with
    /// `running`'s, and names those that differed.
    fn keep_restart_only(&mut self, running: &Self) -> Vec<&'static str> {
        let (d, m) = (&running.daemon, &running.metrics);
        let changed = [
            (
                "daemon.ringbuf_bytes",
                self.daemon.ringbuf_bytes != d.ringbuf_bytes,
            ),
            ("daemon.state_dir", self.daemon.state_dir != d.state_dir),
            ("metrics.enabled", self.metrics.enabled != m.enabled),
            ("metrics.listen", self.metrics.listen != m.listen),
            ("alerts", self.alerts != running.alerts),
            ("event_log", self.event_log != running.event_log),
            ("credentials", self.credentials != running.credentials),
        ];
        self.daemon.ringbuf_bytes = d.ringbuf_bytes;
        self.daemon.state_dir.clone_from(&d.state_dir);
        self.metrics = m.clone();
        self.alerts.clone_from(&running.alerts);
        self.event_log.clone_from(&running.event_log);
        self.credentials.clone_from(&running.credentials);
        changed
            .into_iter()
            .filter_map(|(key, differs)| differs.then_some(key))
            .collect()
    }
}

/// The SIGHUP reload: reads and validates the file again. On `Err` the caller keeps
/// `running` (enforcement never drops). On `Ok`, settings that need a restart keep their
/// running value, with a warning for each that changed.
pub fn reload(path: Option<&Path>, running: &Config) -> Result<Config, ConfigErrors> {
    let mut next = Config::load(path)?;
    for key in next.keep_restart_only(running) {
        tracing::warn!(
            key,
            "changed in the configuration file; takes effect at the next start"
        );
    }
    Ok(next)
}

/// `daemon.mode` text, for summaries and messages.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Alert => "alert",
        Mode::Block => "block",
        Mode::Kill => "kill",
    }
}
