//! What the benchmark changes on the machine, and putting it back.
//!
//! [`Host`] owns the scratch directory and every setting the bench changes
//! (`kernel.bpf_stats_enabled`, the audit state). Its `Drop` restores whatever is still
//! changed, so an error, a panic or Ctrl-C (caught by [`install_signal_handlers`], which
//! only sets a flag the loops check) all leave the machine as it was. Child processes are
//! owned by their own handles ([`Spawned`]), which kill them on drop, and carry
//! `PR_SET_PDEATHSIG` so they die with xtask even if it is killed outright.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::audit::{self, AuditOriginal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag instead of killing xtask, so it can restore the
/// machine first. The monitors run in their own process groups: Ctrl-C at the terminal
/// reaches only xtask and the workload running in the foreground.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether a stop was asked for.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once a stop was asked for, so `?` unwinds to the guards.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted: stopping and restoring the machine");
    }
    Ok(())
}

/// Sleeps, waking early when interrupted.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while !interrupted() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A command for a long-lived helper (a monitor, an idle interpreter): its own process
/// group (Ctrl-C at the terminal does not reach it) and SIGTERM when xtask dies.
pub fn detached(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless it was
/// stopped on purpose first.
pub struct Spawned {
    pub name: String,
    child: Option<Child>,
}

impl Spawned {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Sends `sig`, then waits up to `grace` before SIGKILL. Returns the exit status and
    /// whether it exited within the grace period.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Result<(ExitStatus, bool)> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok((status, true));
        }
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, sig) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().context("waiting")? {
                return Ok((status, true));
            }
            if start.elapsed() > grace {
                let _ = child.kill();
                let status = child.wait().context("waiting after SIGKILL")?;
                return Ok((status, false));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The machine's state as the bench found it, and what it changed.
pub struct Host {
    /// Scratch directory, removed at the end.
    pub dir: PathBuf,
    /// `kernel.bpf_stats_enabled` before the bench, while it is changed.
    bpf_stats_before: Option<String>,
    /// The audit state before the first auditd condition.
    pub audit: Option<AuditOriginal>,
    /// What restoring did, for the report.
    pub restored: Vec<String>,
    keep_dir: bool,
}

impl Host {
    pub fn new(keep_dir: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("pthbench-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            bpf_stats_before: None,
            audit: None,
            restored: Vec::new(),
            keep_dir,
        })
    }

    /// A fresh subdirectory of the scratch directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// `kernel.bpf_stats_enabled=1` (run time and count per BPF program) until
    /// [`Host::bpf_stats_off`]. It costs the BPF programs a clock read per run.
    pub fn bpf_stats_on(&mut self) -> Result<()> {
        let now = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        if self.bpf_stats_before.is_none() {
            self.bpf_stats_before = Some(now.trim().to_owned());
        }
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))
    }

    /// Puts `kernel.bpf_stats_enabled` back as it was.
    pub fn bpf_stats_off(&mut self) {
        if let Some(before) = self.bpf_stats_before.take()
            && let Err(e) = fs::write(BPF_STATS, &before)
        {
            eprintln!("bench: warning: could not restore {BPF_STATS} to {before}: {e}");
        }
    }

    /// Records what a restore step did (each message once).
    pub fn note_restored(&mut self, done: Vec<String>) {
        for d in done {
            if !self.restored.contains(&d) {
                self.restored.push(d);
            }
        }
    }

    /// Restores everything still changed; safe to call more than once.
    pub fn restore(&mut self) {
        if let Some(before) = self.bpf_stats_before.clone() {
            self.bpf_stats_off();
            self.note_restored(vec![format!("kernel.bpf_stats_enabled back to {before}")]);
        }
        if let Some(orig) = self.audit.take() {
            let done = audit::restore(&orig);
            self.note_restored(done);
        }
        if !self.keep_dir && self.dir.exists() {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => self
                    .restored
                    .push(format!("removed {}", self.dir.display())),
                Err(e) => eprintln!(
                    "bench: warning: could not remove {}: {e}",
                    self.dir.display()
                ),
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.restore();
        // On the normal path the report took these; here the bench ended early.
        if !self.restored.is_empty() {
            eprintln!("bench: restored: {}", self.restored.join("; "));
        }
    }
}

/// Writes `text` to `path`, saying which file failed.
pub fn write(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
