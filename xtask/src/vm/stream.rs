//! Runs a test run (QEMU, or the host's test script) in its own process group, echoing
//! its output line by line to the terminal and a log file while the caller reads it, and
//! stops the whole group on timeout or Ctrl-C.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::util::display;

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// No line showed the awaited progress in time (see [`Progress`]).
    Stalled,
    Interrupted,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM stop the run (and its process group) instead of leaving a guest or
/// tests running behind a dead xtask.
pub fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A line that must show up early, e.g. a guest's "booted" line.
pub struct Progress<'a> {
    pub within: Duration,
    pub seen: &'a dyn Fn(&str) -> bool,
}

/// Runs `cmd` (stdout and stderr together), calling `on_line` for each line, with a
/// deadline, and an earlier one for `progress` when given.
pub fn run(
    cmd: &mut Command,
    timeout: Duration,
    progress: Option<Progress<'_>>,
    log: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<Ended> {
    eprintln!("+ {}", display(cmd));
    let mut log = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    let spawned = cmd.spawn();
    // The command holds the pipe's write end: replace it so the read end sees EOF when
    // the child exits.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawned.with_context(|| format!("could not start `{}`", display(cmd)))?;
    let pgid = i32::try_from(child.id()).expect("pids fit in i32");

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let started = Instant::now();
    let deadline = started + timeout;
    let mut awaiting = progress;
    let mut stdout = std::io::stdout();
    // Set when the child has exited but something it started still holds the output open.
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let ended = loop {
        if interrupted() {
            break Ended::Interrupted;
        }
        let now = Instant::now();
        if now >= deadline {
            break Ended::TimedOut;
        }
        if awaiting
            .as_ref()
            .is_some_and(|p| now.duration_since(started) >= p.within)
        {
            break Ended::Stalled;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(250))) {
            Ok(line) => {
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
                writeln!(log, "{line}")?;
                if awaiting.as_ref().is_some_and(|p| (p.seen)(&line)) {
                    awaiting = None;
                }
                on_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => match exited {
                Some((status, at)) if at.elapsed() > Duration::from_secs(2) => {
                    break Ended::Exited(status);
                }
                Some(_) => {}
                None => exited = child.try_wait()?.map(|s| (s, Instant::now())),
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => match exited {
                Some((status, _)) => break Ended::Exited(status),
                None => {
                    // The child is unreaped (a zombie at worst), so its group id is still
                    // its own: end the rest of the group, then reap it.
                    kill_group(pgid);
                    break Ended::Exited(child.wait()?);
                }
            },
        }
    };
    // Whatever is left in the group (the guest on timeout, a test's stray child) goes.
    // The group still exists: the child is unreaped, or a member kept the output open.
    kill_group(pgid);
    let _ = child.wait();
    if !matches!(ended, Ended::Exited(_)) {
        let why = match ended {
            Ended::TimedOut => format!("timed out after {}s", timeout.as_secs()),
            Ended::Stalled => "no progress".to_owned(),
            _ => "interrupted".to_owned(),
        };
        writeln!(log, "xtask: {why}: killed `{}`", display(cmd))?;
    }
    Ok(ended)
}

fn kill_group(pgid: i32) {
    // SAFETY: kill has no memory preconditions; callers pass a group that is still theirs.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}
