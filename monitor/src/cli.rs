//! Command-line interface: one function per subcommand.
use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    daemon::{self, EventSink, RuntimeParts},
    events::Event,
    sensors::SensorOptions,
};

#[derive(Parser, Debug)]
#[command(
    name = "pthwatch",
    version,
    about = "Stops malicious Python startup hooks before they exfiltrate credentials"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `pthwatch=debug`.
    #[arg(long, global = true, env = "PTHWATCH_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// Report only.
    Alert,
    /// Deny the network attempts of a hook lineage that read credentials.
    Block,
    /// Deny, and SIGKILL the hook lineage.
    Kill,
}

impl Mode {
    pub fn kernel(self) -> u32 {
        match self {
            Self::Alert => monitor_common::mode::ALERT,
            Self::Block => monitor_common::mode::BLOCK,
            Self::Kill => monitor_common::mode::KILL,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print what this kernel offers and which sensor backend pthwatch would use.
    Check {
        /// JSON instead of a report for people.
        #[arg(long)]
        json: bool,
    },
    /// Watch the host: detect, and in block/kill mode stop, startup hooks that read
    /// credentials and reach the network.
    Run {
        /// The configuration file (default /etc/pthwatch/pthwatch.toml; built-in defaults
        /// when that is absent). Flags given here override it. SIGHUP reloads it.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// What to do when a hook's lineage read credentials and attempts the network
        /// (default: the file's `daemon.mode`, else alert).
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Also write alerts (JSON Lines, rotated) to this file. It replaces the default
        /// stdout sink when the configuration names no sinks of its own.
        #[arg(long)]
        alert_log: Option<PathBuf>,
        /// Keep the hash-chained event log (alerts and decisions) in this file (default:
        /// the file's `[event_log]`, off unless enabled there).
        #[arg(long, value_name = "PATH")]
        event_log: Option<PathBuf>,
        /// Opens a freshly exec'd process may make before it is ruled out as a renamed
        /// interpreter (0 disables recognition by behaviour; default 64).
        #[arg(long)]
        probation_opens: Option<u32>,
        /// Per-rule mode, overriding --mode for that rule (repeatable), e.g.
        /// `--rule-mode unknown_startup_hook=block` to deny any unknown hook the network.
        #[arg(long = "rule-mode", value_name = "RULE=MODE", value_parser = parse_rule_mode)]
        rule_modes: Vec<(String, Mode)>,
        /// Also treat DIR as a home directory whose credentials are catalogued by identity
        /// (repeatable): CI runners and services often run with a HOME outside /home.
        #[arg(long = "home", value_name = "DIR")]
        extra_homes: Vec<PathBuf>,
        /// Size of the kernel's event ring buffer: a power of two, 4 KiB to 256 MiB
        /// (default 8 MiB).
        #[arg(long, value_parser = parse_ringbuf_bytes)]
        ringbuf_bytes: Option<u32>,
        /// In block and kill mode a lineage whose events were lost (full ring buffer) is
        /// denied the network; this lets it through instead.
        #[arg(long)]
        fail_open_on_lost_events: bool,
        /// Serve /metrics (Prometheus) and /healthz on this address (default: the file's
        /// `[metrics]`, off unless enabled there).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Stream the events of tracked (Python) lineages as JSON Lines.
    Trace {
        /// Only this process and its descendants.
        #[arg(long)]
        pid: Option<u32>,
        /// Every open of every tracked process, not only what detection looks at.
        #[arg(long)]
        all: bool,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Inventory the Python startup hooks under a root (this host or an unpacked image) and
    /// exit 1 when one runs code that is not a known-benign form: a gate for build hosts.
    Scan(crate::scan::ScanArgs),
    /// Check a configuration file (/etc/pthwatch/pthwatch.toml by default), or print the
    /// documented default one.
    Config(crate::config::ConfigArgs),
    /// Audit the event log: verify its hash chain, query it, show an incident.
    Log(crate::eventlog::cli::LogArgs),
}

/// A ring buffer size the kernel accepts: a power of two of at least a page.
fn parse_ringbuf_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if !n.is_power_of_two() || !(4096..=256 << 20).contains(&n) {
        return Err(format!(
            "{n} is not a power of two between 4096 and {}",
            256 << 20
        ));
    }
    Ok(n)
}

/// `RULE=MODE` for `--rule-mode`.
fn parse_rule_mode(s: &str) -> Result<(String, Mode), String> {
    let (rule, mode) = s
        .split_once('=')
        .ok_or_else(|| format!("expected RULE=MODE, got `{s}`"))?;
    let mode = Mode::from_str(mode, true).map_err(|_| {
        format!("unknown mode `{mode}` for rule `{rule}`; modes are alert, block, kill")
    })?;
    let mut probe = crate::detect::RuleModes::new(Mode::Alert);
    probe.set(rule, mode)?;
    Ok((rule.to_owned(), mode))
}

pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal. Under systemd (JOURNAL_STREAM names the
    // journal's stream) the journal stamps each line itself: no timestamp of our own.
    let ansi = std::io::stderr().is_terminal();
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match (cli.log_format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { json } => {
            let report = crate::check::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(ExitCode::from(crate::check::exit_code(&report)))
        }
        Command::Run {
            config,
            mode,
            alert_log,
            event_log,
            probation_opens,
            rule_modes,
            extra_homes,
            ringbuf_bytes,
            fail_open_on_lost_events,
            metrics_listen,
        } => crate::run::run(crate::run::RunOptions {
            metrics_listen,
            config_path: config,
            mode,
            alert_log,
            event_log,
            probation_opens,
            rule_modes,
            extra_homes,
            ringbuf_bytes,
            fail_open: fail_open_on_lost_events,
        }),
        Command::Trace { pid, all, duration } => trace(pid, all, duration.map(Duration::from_secs)),
        Command::Scan(args) => Ok(crate::scan::scan(&args)?),
        Command::Config(args) => Ok(crate::config::command(&args)?),
        Command::Log(args) => Ok(crate::eventlog::cli::command(&args)?),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints events as JSON Lines, optionally limited to one process tree.
struct TraceSink {
    root: Option<u32>,
    members: std::collections::HashSet<u32>,
    out: std::io::BufWriter<std::io::Stdout>,
    /// Names the container of events from one (default `[containers]` paths).
    containers: crate::containers::Resolver,
}

impl EventSink for TraceSink {
    fn on_event(&mut self, _rt: &mut RuntimeParts<'_>, event: Event) {
        if let Some(root) = self.root {
            let h = event.header();
            if let Event::Fork(f) = &event
                && self.members.contains(&h.tgid)
            {
                self.members.insert(f.child_tgid);
            }
            if h.tgid != root && !self.members.contains(&h.tgid) {
                return;
            }
        }
        let mut line = crate::trace::event_json(&event);
        let h = event.header();
        if let Some(c) = self.containers.container_of(h.cgroup_id, h.tgid) {
            line["container"] = serde_json::json!(c);
        }
        let _ = writeln!(self.out, "{line}");
    }

    fn on_tick(&mut self, _rt: &mut RuntimeParts<'_>) {
        let _ = self.out.flush();
    }
}

fn trace(pid: Option<u32>, all: bool, duration: Option<Duration>) -> Result<ExitCode> {
    let opts = SensorOptions {
        trace_all: all,
        ..SensorOptions::default()
    };
    let mut rt = daemon::start(&opts)?;
    // What the kernel knows under `run`, so a trace shows what detection would see: known
    // hooks' classes (a benign one starts no lineage), where each interpreter's start-up
    // ends (after it, the main program acts for itself), and the credential files.
    let homes = crate::credentials::discover_homes(std::path::Path::new("/"));
    let _ = crate::run::teach_inventory(&mut rt, &homes);
    crate::run::load_catalog(
        &mut rt,
        &crate::credentials::CredentialCatalog::default(),
        &homes,
    );
    let mut sink = TraceSink {
        root: pid,
        members: pid.into_iter().collect(),
        out: std::io::BufWriter::new(std::io::stdout()),
        containers: crate::containers::Resolver::new(crate::config::ContainerSettings::default()),
    };
    let ready = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"event": "ready", "pid": std::process::id()})
        );
        let _ = out.flush();
        let _ = crate::notify::notify("READY=1");
    };
    let (stop, sensors) =
        runtime()?.block_on(daemon::event_loop(rt, &mut sink, duration, ready))?;
    let counters = sensors.counters();
    tracing::info!(
        ?stop,
        ringbuf_drops = counters[monitor_common::counter::RINGBUF_DROPS as usize],
        "trace stopped"
    );
    drop(sensors);
    let _ = sink.out.flush();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_mode_arguments() {
        assert_eq!(
            parse_rule_mode("hook_persistence=kill").unwrap(),
            ("hook_persistence".to_owned(), Mode::Kill)
        );
        assert!(
            parse_rule_mode("hook_persistence")
                .unwrap_err()
                .contains("RULE=MODE")
        );
        assert!(
            parse_rule_mode("hook_persistence=stop")
                .unwrap_err()
                .contains("modes are")
        );
        assert!(
            parse_rule_mode("nope=block")
                .unwrap_err()
                .contains("unknown rule")
        );
        assert_eq!(parse_ringbuf_bytes("4096"), Ok(4096));
        assert!(parse_ringbuf_bytes("5000").is_err());
        assert!(parse_ringbuf_bytes("2048").is_err());
        let cli = Cli::try_parse_from([
            "pthwatch",
            "run",
            "--mode",
            "alert",
            "--rule-mode",
            "unknown_startup_hook=block",
        ])
        .unwrap();
        let Command::Run { rule_modes, .. } = cli.command else {
            panic!("not run");
        };
        assert_eq!(
            rule_modes,
            [("unknown_startup_hook".to_owned(), Mode::Block)]
        );
    }
}
