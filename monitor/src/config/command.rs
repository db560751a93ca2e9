//! `pthwatch config`: check a configuration file, or print the documented default.

use std::{
    fmt::Write as _,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{
    Config, ConfigErrors, DEFAULT_PATH, DEFAULT_TOML, Diagnostic, Level, Sink, diag::plural,
    mode_name, sink::severity_name,
};

/// The configuration is invalid. (2, for a file that cannot be read, is what `main`
/// returns for any `Err`.)
const INVALID: u8 = 1;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the configuration is valid (warnings may have been printed), or PATH was not given
     and /etc/pthwatch/pthwatch.toml does not exist, so the built-in defaults apply
  1  the configuration is invalid: every error is printed as file:line:column, the key
     and what is allowed there
  2  the file cannot be read";

// No doc comment here: clap would take it as the subcommand's `about`, which `cli.rs` sets.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Validate a configuration file and list every problem: where it is, which key, and
    /// what is allowed there.
    #[command(after_help = EXIT_STATUS_HELP)]
    Check {
        /// The file to check [default: /etc/pthwatch/pthwatch.toml]
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// Print the default configuration file, every setting with its default and what it
    /// does.
    Default,
}

pub fn command(args: &ConfigArgs) -> Result<ExitCode, ConfigErrors> {
    match &args.action {
        ConfigAction::Default => {
            let _ = io::stdout().lock().write_all(DEFAULT_TOML.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        ConfigAction::Check { path } => check(path.as_deref()),
    }
}

fn check(path: Option<&Path>) -> Result<ExitCode, ConfigErrors> {
    let mut report = String::new();
    let code = match Config::load_checked(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                push_diagnostic(&mut report, w);
            }
            match &loaded.source {
                Some(p) => {
                    let _ = writeln!(report, "ok: {}", p.display());
                }
                None => {
                    let _ = writeln!(
                        report,
                        "ok: {DEFAULT_PATH} does not exist: the built-in defaults apply (`pthwatch config default` prints them)"
                    );
                }
            }
            report.push_str(&summary(&loaded.config));
            ExitCode::SUCCESS
        }
        Err(ConfigErrors::Invalid { path, diagnostics }) => {
            for d in &diagnostics {
                push_diagnostic(&mut report, d);
            }
            let count = |level| diagnostics.iter().filter(|d| d.level == level).count();
            let _ = writeln!(
                report,
                "invalid: {} ({}, {})",
                path.display(),
                plural(count(Level::Error), "error"),
                plural(count(Level::Warning), "warning")
            );
            ExitCode::from(INVALID)
        }
        Err(e) => return Err(e),
    };
    let _ = io::stdout().lock().write_all(report.as_bytes());
    Ok(code)
}

fn push_diagnostic(out: &mut String, d: &Diagnostic) {
    let _ = writeln!(out, "{d}");
    if let Some(excerpt) = d.excerpt() {
        let _ = writeln!(out, "{excerpt}");
    }
}

/// What the configuration amounts to, in a few lines.
pub(super) fn summary(c: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "  mode         {}", mode_name(c.daemon.mode));
    for (rule, r) in c.rules.iter() {
        let mode = match r.mode {
            Some(m) => mode_name(m).to_owned(),
            None => format!("{} (inherited)", mode_name(c.daemon.mode)),
        };
        let state = if r.enabled {
            mode
        } else {
            "disabled".to_owned()
        };
        let _ = writeln!(s, "  rule         {rule}: {state}");
    }
    let _ = writeln!(
        s,
        "  allow        {}",
        plural(c.allow.entries().len(), "exception")
    );
    let sinks: Vec<String> = c
        .alerts
        .sinks
        .iter()
        .map(|sink| {
            let target = match sink {
                Sink::Stdout(_) => String::new(),
                Sink::File(f) => format!(" {}", f.path.display()),
                Sink::Webhook(w) => format!(" {}", w.url),
            };
            format!(
                "{}{target} ({}+)",
                sink.kind(),
                severity_name(sink.min_severity())
            )
        })
        .collect();
    let sinks = if sinks.is_empty() {
        "none".to_owned()
    } else {
        sinks.join(", ")
    };
    let _ = writeln!(s, "  alerts       {sinks}");
    let event_log = if c.event_log.enabled {
        c.event_log.path.display().to_string()
    } else {
        "off".to_owned()
    };
    let _ = writeln!(s, "  event log    {event_log}");
    let metrics = if c.metrics.enabled {
        format!("http://{}/metrics", c.metrics.listen)
    } else {
        "off".to_owned()
    };
    let _ = writeln!(s, "  metrics      {metrics}");
    let cr = &c.credentials;
    let base = if cr.defaults {
        "built-in catalogue"
    } else {
        "no built-in catalogue"
    };
    let _ = write!(
        s,
        "  credentials  {base}, {} and {} added, {} excluded",
        plural(cr.extra_paths.len(), "path"),
        plural(cr.extra_names.len(), "name"),
        plural(cr.exclude.len(), "path")
    );
    if !cr.disable_categories.is_empty() {
        let names: Vec<&str> = cr.disable_categories.iter().map(|c| c.as_str()).collect();
        let _ = write!(s, ", disabled: {}", names.join(", "));
    }
    s.push('\n');
    let containers = if c.containers.metadata {
        "cgroup, image and pod from the node's runtime files"
    } else {
        "cgroup only (metadata = false)"
    };
    let _ = writeln!(s, "  containers   {containers}");
    s
}
