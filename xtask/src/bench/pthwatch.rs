//! The pthwatch conditions: `pthwatch run` started as a service would be (READY=1 over
//! `$NOTIFY_SOCKET`), stopped with SIGTERM, its counters read from its JSON log.
use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

use super::host::{Spawned, check_interrupted, detached};

/// How long the daemon may take to load its sensors and inventory.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct PthwatchOptions<'a> {
    pub bin: &'a Path,
    /// `alert` or `block`.
    pub mode: &'a str,
    /// `--home` directories (hook homes, scaling fixtures).
    pub homes: &'a [PathBuf],
    /// A fresh directory for its socket, configuration, log and alerts.
    pub dir: PathBuf,
}

pub struct Pthwatch {
    daemon: Spawned,
    dir: PathBuf,
    /// From spawn to READY=1.
    pub ready_s: f64,
}

/// What the daemon said about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonLog {
    /// Ring buffer drops counted by the kernel (`ringbuf_drops` at stop).
    pub events_lost: Option<u64>,
    pub alerts: Option<u64>,
    pub interpreters: Option<u64>,
    pub site_dirs: Option<u64>,
    pub hooks: Option<u64>,
    /// Credential files catalogued by identity.
    pub credential_files: Option<u64>,
    pub credential_names: Option<u64>,
    /// WARN and ERROR messages (first few), to explain odd numbers.
    pub warnings: Vec<String>,
}

impl Pthwatch {
    pub fn start(o: &PthwatchOptions<'_>) -> Result<Self> {
        fs::create_dir_all(&o.dir)?;
        let sock_path = o.dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path)
            .with_context(|| format!("binding {}", sock_path.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        // Its own configuration, so a host's /etc/pthwatch/pthwatch.toml cannot change the
        // numbers, and its state stays in the scratch directory.
        let config = o.dir.join("pthwatch.toml");
        fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = {}\n",
                toml_string(&o.dir.join("state").display().to_string())
            ),
        )?;
        let mut cmd = detached(o.bin);
        cmd.args([
            "--log-format",
            "json",
            "--log",
            "info",
            "run",
            "--mode",
            o.mode,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--alert-log")
        .arg(o.dir.join("alerts.jsonl"));
        for home in o.homes {
            cmd.arg("--home").arg(home);
        }
        let started = Instant::now();
        let child = cmd
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(o.dir.join("stderr.jsonl"))?)
            .spawn()
            .with_context(|| format!("starting {}", o.bin.display()))?;
        let mut daemon = Spawned::new("pthwatch", child);
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = sock.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                break;
            }
            if let Some(status) = daemon.exited() {
                let log = fs::read_to_string(o.dir.join("stderr.jsonl")).unwrap_or_default();
                let why = parse_log(&log).warnings.last().cloned().unwrap_or_default();
                bail!("pthwatch run exited with {status} before READY=1: {why}");
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("pthwatch run sent no READY=1 in {READY_TIMEOUT:?}");
            }
            check_interrupted()?;
        }
        Ok(Self {
            daemon,
            dir: o.dir.clone(),
            ready_s: started.elapsed().as_secs_f64(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// SIGTERM; an error unless it exits 0 within 30 s. Returns what its log says.
    pub fn stop(mut self) -> Result<DaemonLog> {
        let (status, in_time) = self.daemon.stop(libc::SIGTERM, Duration::from_secs(30))?;
        let log = fs::read_to_string(self.dir.join("stderr.jsonl")).unwrap_or_default();
        let parsed = parse_log(&log);
        if !in_time {
            bail!("pthwatch did not stop within 30 s of SIGTERM (killed)");
        }
        if !status.success() {
            bail!(
                "pthwatch exited with {status} on SIGTERM: {}",
                parsed.warnings.last().cloned().unwrap_or_default()
            );
        }
        Ok(parsed)
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads the daemon's JSON log (`--log-format json`): the counters logged at stop, and
/// the sizes logged when the inventory and the catalogue were loaded.
pub fn parse_log(text: &str) -> DaemonLog {
    let mut out = DaemonLog::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(fields) = v["fields"].as_object() else {
            continue;
        };
        let num = |k: &str| fields.get(k).and_then(Value::as_u64);
        match fields.get("message").and_then(Value::as_str).unwrap_or("") {
            "pthwatch stopped" => {
                out.events_lost = num("ringbuf_drops");
                out.alerts = num("alerts");
            }
            "inventory loaded" => {
                out.interpreters = num("interpreters");
                out.site_dirs = num("site_dirs");
                out.hooks = num("hooks");
            }
            "credential catalogue loaded" => {
                out.credential_files = num("files");
                out.credential_names = num("names");
            }
            msg => {
                let level = v["level"].as_str().unwrap_or("");
                if (level == "WARN" || level == "ERROR") && out.warnings.len() < 20 {
                    out.warnings.push(describe(msg, fields));
                }
            }
        }
    }
    out
}

fn describe(msg: &str, fields: &Map<String, Value>) -> String {
    let extra: Vec<String> = fields
        .iter()
        .filter(|(k, _)| *k != "message")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if extra.is_empty() {
        msg.to_owned()
    } else {
        format!("{msg} ({})", extra.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_sizes_from_the_log() {
        let log = r#"{"timestamp":"t","level":"INFO","fields":{"message":"inventory loaded","interpreters":3,"site_dirs":12,"hooks":40},"target":"pthwatch::run"}
{"timestamp":"t","level":"INFO","fields":{"message":"credential catalogue loaded","files":7,"names":90},"target":"pthwatch::run"}
{"timestamp":"t","level":"WARN","fields":{"message":"inventory","error":"cannot list x"},"target":"pthwatch::run"}
not json
{"timestamp":"t","level":"INFO","fields":{"message":"pthwatch stopped","stop":"Signal","alerts":1,"ringbuf_drops":0},"target":"pthwatch::run"}"#;
        let d = parse_log(log);
        assert_eq!(d.events_lost, Some(0));
        assert_eq!(d.alerts, Some(1));
        assert_eq!((d.site_dirs, d.hooks), (Some(12), Some(40)));
        assert_eq!(d.credential_files, Some(7));
        assert_eq!(d.warnings, vec![r#"inventory (error="cannot list x")"#]);
        assert_eq!(parse_log("").events_lost, None);
    }

    #[test]
    fn toml_strings_are_quoted() {
        assert_eq!(toml_string(r#"/tmp/a"b\c"#), r#""/tmp/a\"b\\c""#);
    }
}
