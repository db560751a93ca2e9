//! The auditd condition: Debian's `auditd` with rules for execve, openat and connect, the
//! usual way a host records what processes do.
//!
//! The bench starts its own `auditd -n` (logging into the scratch directory, with bounded
//! log files) unless one is already running, which it then uses as is. Restoring removes
//! the rules it added (key `pthbench`), and puts back the kernel's audit `enabled` flag and
//! backlog limit.
//!
//! One kernel effect outlives auditd: once audit has been enabled, every task created
//! afterwards is audited at each system call (a slower entry path, about 45 ns a call on
//! the 2-core VM) until reboot, rules or not. A `-a never,task` rule turns that off for
//! new tasks. So after the auditd condition the bench adds it when audit was off before
//! (and leaves it: without it the machine would stay slower than it was), and while the
//! condition runs it takes away any such rule, which would otherwise exempt the workload.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::host::{Host, Spawned, detached, sleep};
use crate::util::output;

/// The key of every exit rule the bench adds.
pub const KEY: &str = "pthbench";
const NEVER_TASK: &str = "-a never,task";
/// Debian's `/etc/audit/rules.d/audit.rules` sets this backlog.
const BACKLOG: u32 = 8192;

/// What `auditctl -s` reports that the bench changes or needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditStatus {
    /// 0 off, 1 on, 2 locked (rules cannot change until reboot).
    pub enabled: u32,
    /// The audit daemon's pid, 0 when none.
    pub pid: u32,
    pub backlog_limit: u32,
}

/// The audit state before the bench touched it.
#[derive(Clone, Debug)]
pub struct AuditOriginal {
    pub status: AuditStatus,
    /// A `-a never,task` rule was present.
    pub never_task: bool,
}

pub fn parse_status(text: &str) -> Option<AuditStatus> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == key)
                .then(|| it.next()?.parse().ok())
                .flatten()
        })
    };
    Some(AuditStatus {
        enabled: field("enabled")?,
        pid: field("pid")?,
        backlog_limit: field("backlog_limit")?,
    })
}

fn auditctl() -> Command {
    Command::new("auditctl")
}

pub fn status() -> Result<AuditStatus> {
    let text = output(auditctl().arg("-s"))?;
    parse_status(&text).with_context(|| format!("unexpected `auditctl -s` output: {text}"))
}

/// The loaded rules, one per line as `auditctl -l` prints them.
pub fn rules() -> Result<Vec<String>> {
    let text = output(auditctl().arg("-l"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "No rules")
        .map(str::to_owned)
        .collect())
}

fn has_never_task(rules: &[String]) -> bool {
    rules.iter().any(|r| r == NEVER_TASK)
}

pub fn capture() -> Result<AuditOriginal> {
    Ok(AuditOriginal {
        status: status()?,
        never_task: has_never_task(&rules()?),
    })
}

/// Puts the audit state back (idempotent); returns what it changed, for the log.
pub fn restore(orig: &AuditOriginal) -> Vec<String> {
    let mut done = Vec::new();
    let quiet = |args: &[&str]| output(auditctl().args(args)).map(|_| ());
    if rules().is_ok_and(|r| r.iter().any(|l| l.contains(&format!("key={KEY}")))) {
        match quiet(&["-D", "-k", KEY]) {
            Ok(()) => done.push(format!("audit: removed the rules with key {KEY}")),
            Err(e) => eprintln!("bench: warning: removing audit rules: {e:#}"),
        }
    }
    if let Ok(now) = status() {
        if now.enabled != orig.status.enabled && now.enabled != 2 {
            let e = orig.status.enabled.to_string();
            if quiet(&["-e", &e]).is_ok() {
                done.push(format!("audit: enabled back to {e}"));
            }
        }
        if now.backlog_limit != orig.status.backlog_limit {
            let b = orig.status.backlog_limit.to_string();
            if quiet(&["-b", &b]).is_ok() {
                done.push(format!("audit: backlog_limit back to {b}"));
            }
        }
    }
    let we_enabled_audit = orig.status.enabled == 0 && orig.status.pid == 0;
    if (orig.never_task || we_enabled_audit) && rules().is_ok_and(|r| !has_never_task(&r)) {
        match quiet(&["-a", "never,task"]) {
            Ok(()) if orig.never_task => done.push("audit: `-a never,task` put back".into()),
            Ok(()) => done.push(
                "audit: added `-a never,task`: once audit has been on, the kernel audits every \
                 new task until reboot; this rule stops that (`auditctl -d never,task` removes it)"
                    .into(),
            ),
            Err(e) => eprintln!("bench: warning: adding `-a never,task`: {e:#}"),
        }
    }
    done
}

/// A running auditd with the bench's rules loaded.
pub struct Auditd {
    /// `None` when the host's own auditd is used.
    daemon: Option<Spawned>,
    pid: u32,
    kauditd: Vec<u32>,
}

impl Auditd {
    /// The processes whose CPU counts for this condition: auditd and the kernel's
    /// `kauditd` thread, which formats the records.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut v = vec![("auditd".to_owned(), self.pid)];
        v.extend(self.kauditd.iter().map(|&p| ("kauditd".to_owned(), p)));
        v
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts auditd if none runs and loads the rules. An error means the condition is
    /// unavailable on this host; its text says why.
    pub fn start(host: &mut Host) -> Result<Self> {
        for tool in ["auditd", "auditctl"] {
            if which::which(tool).is_err() {
                bail!("{tool} is not installed (apt-get install auditd)");
            }
        }
        if host.audit.is_none() {
            host.audit = Some(capture().context("the kernel's audit interface does not answer")?);
        }
        let orig = host.audit.clone().expect("captured above");
        if orig.status.enabled == 2 {
            bail!("audit rules are locked (enabled 2) until reboot");
        }
        let mut started = Self {
            daemon: None,
            pid: orig.status.pid,
            kauditd: super::procstat::pids_named("kauditd"),
        };
        if orig.status.pid == 0 || !Path::new(&format!("/proc/{}", orig.status.pid)).exists() {
            let dir = host.subdir("auditd")?;
            let (daemon, pid) = spawn_auditd(&dir)?;
            started.daemon = Some(daemon);
            started.pid = pid;
        }
        if has_never_task(&rules()?) {
            output(auditctl().args(["-d", "never,task"]))?;
        }
        output(auditctl().args(["-b", &BACKLOG.to_string()]))?;
        output(auditctl().args([
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "execve,openat,connect",
            "-k",
            KEY,
        ]))
        .context("loading the audit rules")?;
        Ok(started)
    }

    /// Removes the rules, stops the auditd the bench started, and restores the audit
    /// state, so the next condition runs on an unaudited kernel.
    pub fn stop(mut self, host: &mut Host) -> Result<()> {
        let removed = output(auditctl().args(["-D", "-k", KEY]));
        if let Some(mut d) = self.daemon.take() {
            let (_, clean) = d.stop(libc::SIGTERM, Duration::from_secs(15))?;
            if !clean {
                eprintln!("bench: warning: auditd did not stop on SIGTERM; killed");
            }
        }
        if let Some(orig) = host.audit.clone() {
            let mut done = restore(&orig);
            if removed.is_ok() {
                done.push(format!("audit: removed the rules with key {KEY}"));
            }
            if self.pid != orig.status.pid {
                done.push("auditd: the bench's own daemon stopped".into());
            }
            host.note_restored(done);
        }
        removed.map(|_| ())
    }
}

fn spawn_auditd(dir: &Path) -> Result<(Spawned, u32)> {
    let base = fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
    let plugins = dir.join("plugins");
    fs::create_dir_all(&plugins)?;
    let conf = dir.join("auditd.conf");
    fs::write(&conf, auditd_conf(&base, dir))?;
    // auditd refuses a configuration others can write.
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o640))?;
    let err_path = dir.join("auditd.stderr");
    let child = detached("auditd")
        .args(["-n", "-c"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path)?)
        .spawn()
        .context("starting auditd")?;
    let mut daemon = Spawned::new("auditd", child);
    let pid = daemon.pid();
    let start = Instant::now();
    loop {
        if let Some(st) = daemon.exited() {
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            bail!(
                "auditd exited at start ({st}){}",
                last_line(&err)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            );
        }
        if status().is_ok_and(|s| s.pid == pid) {
            return Ok((daemon, pid));
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("auditd did not register with the kernel in 15 s");
        }
        sleep(Duration::from_millis(100));
        super::host::check_interrupted()?;
    }
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// The host's `auditd.conf` with the log kept in `dir`, bounded (2 files of 50 MB: a
/// syscall storm under these rules writes hundreds of MB), no plugins, and no disk-space
/// action that could suspend auditing half-way through a run.
pub fn auditd_conf(base: &str, dir: &Path) -> String {
    let set: [(&str, String); 11] = [
        ("log_file", dir.join("audit.log").display().to_string()),
        ("max_log_file", "50".into()),
        ("max_log_file_action", "ROTATE".into()),
        ("num_logs", "2".into()),
        ("space_left", "2".into()),
        ("space_left_action", "IGNORE".into()),
        ("admin_space_left", "1".into()),
        ("admin_space_left_action", "IGNORE".into()),
        ("disk_full_action", "IGNORE".into()),
        ("disk_error_action", "IGNORE".into()),
        ("plugin_dir", dir.join("plugins").display().to_string()),
    ];
    let mut out = String::new();
    for line in base.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if !line.trim_start().starts_with('#') && set.iter().any(|(k, _)| *k == key) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (k, v) in &set {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auditctl_status() {
        let text = "enabled 1\nfailure 1\npid 15070\nrate_limit 0\nbacklog_limit 8192\nlost 0\n";
        assert_eq!(
            parse_status(text),
            Some(AuditStatus {
                enabled: 1,
                pid: 15070,
                backlog_limit: 8192
            })
        );
        assert_eq!(parse_status("enabled 1\n"), None);
    }

    #[test]
    fn config_keeps_the_log_in_the_scratch_dir() {
        let base = "# comment\nlog_file = /var/log/audit/audit.log\nflush = INCREMENTAL_ASYNC\n\
                    disk_full_action = SUSPEND\n";
        let conf = auditd_conf(base, Path::new("/tmp/x"));
        assert!(conf.contains("flush = INCREMENTAL_ASYNC"));
        assert!(conf.contains("log_file = /tmp/x/audit.log"));
        assert!(!conf.contains("/var/log/audit"));
        assert!(!conf.contains("SUSPEND"));
        assert_eq!(conf.matches("disk_full_action").count(), 1);
    }

    #[test]
    fn finds_never_task_rule() {
        assert!(has_never_task(&["-a never,task".into()]));
        assert!(!has_never_task(&[
            "-a always,exit -F arch=b64 -S openat -F key=x".into()
        ]));
    }
}
