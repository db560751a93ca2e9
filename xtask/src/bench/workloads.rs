//! The workloads: each a fixed amount of work whose wall time is measured.
//!
//! - W1: non-Python syscall storm (`bench-load syscalls`: open/read/close + loopback
//!   connects). What every process on a monitored host pays.
//! - W2: Python start-up, `python3.11 -c pass`, sequential.
//! - W3: a Python program that opens many small files and makes loopback connections.
//! - W4: fork/exec storm (`bench-load forkexec`, `/bin/true`).
//! - W5: a burst of Python starts with startup hooks present (a path-only `.pth`, a
//!   known-benign one, an unknown executable one): pthwatch's inventory and attribution
//!   path.
//!
//! Interpreters run with a clean environment and a home of the bench's own, so the
//! invoking user's site-packages and hooks do not change the numbers.
use std::{
    fmt, fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::host::{Spawned, check_interrupted, detached, write};

/// The system interpreter, by absolute path: `python3.11` on `PATH` may be a pyenv shim.
pub const PYTHON: &str = "/usr/bin/python3.11";
/// Where a user site dir lives, below a home, for [`PYTHON`].
pub const USER_SITE: &str = ".local/lib/python3.11/site-packages";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
}

impl Workload {
    pub const ALL: [Self; 5] = [Self::W1, Self::W2, Self::W3, Self::W4, Self::W5];

    pub fn id(self) -> &'static str {
        match self {
            Self::W1 => "W1",
            Self::W2 => "W2",
            Self::W3 => "W3",
            Self::W4 => "W4",
            Self::W5 => "W5",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::W1 => "syscall storm (non-Python)",
            Self::W2 => "Python start-up",
            Self::W3 => "Python files + connects",
            Self::W4 => "fork/exec storm",
            Self::W5 => "Python starts with hooks",
        }
    }

    /// The unit of [`Sizes::ops`].
    pub fn unit(self) -> &'static str {
        match self {
            Self::W1 => "open/read/close",
            Self::W2 | Self::W5 => "interpreter start",
            Self::W3 => "file open or connect",
            Self::W4 => "fork+exec",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.id().eq_ignore_ascii_case(s.trim()))
            .with_context(|| format!("unknown workload `{s}`; workloads are W1 to W5"))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How much work each workload does, and how long the side measurements last.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sizes {
    pub rounds: usize,
    pub w1_iterations: u64,
    pub w1_connects: u64,
    pub w2_starts: u64,
    pub w3_files: u64,
    pub w3_connects: u64,
    pub w4_execs: u64,
    pub w5_starts: u64,
    /// W5 runs this many start loops in parallel (a burst).
    pub w5_jobs: u64,
    /// Seconds the daemon is watched on an otherwise idle host.
    pub idle_secs: u64,
    /// Interpreter starts a second, and for how long, for the lost-events check.
    pub rate_per_sec: u64,
    pub rate_secs: u64,
    /// Scaling: how many times each point is measured, and the levels (multiples).
    pub scaling_reps: usize,
    pub scaling_levels: Vec<u64>,
}

impl Sizes {
    /// The issue's sizes.
    pub fn full() -> Self {
        Self {
            rounds: 5,
            w1_iterations: 200_000,
            w1_connects: 2_000,
            w2_starts: 300,
            w3_files: 20_000,
            w3_connects: 500,
            w4_execs: 3_000,
            w5_starts: 300,
            w5_jobs: 2,
            idle_secs: 30,
            rate_per_sec: 100,
            rate_secs: 10,
            scaling_reps: 3,
            scaling_levels: vec![1, 10, 100],
        }
    }

    /// Tiny sizes that keep the tool working (CI smoke run); the numbers mean little.
    pub fn quick() -> Self {
        Self {
            rounds: 2,
            w1_iterations: 2_000,
            w1_connects: 20,
            w2_starts: 10,
            w3_files: 200,
            w3_connects: 10,
            w4_execs: 50,
            w5_starts: 10,
            w5_jobs: 2,
            idle_secs: 2,
            rate_per_sec: 100,
            rate_secs: 1,
            scaling_reps: 1,
            scaling_levels: vec![1, 2],
        }
    }

    /// Units of work in one run of `w`.
    pub fn ops(&self, w: Workload) -> u64 {
        match w {
            Workload::W1 => self.w1_iterations,
            Workload::W2 => self.w2_starts,
            Workload::W3 => self.w3_files + self.w3_connects,
            Workload::W4 => self.w4_execs,
            Workload::W5 => self.w5_starts,
        }
    }

    pub fn describe(&self, w: Workload) -> String {
        match w {
            Workload::W1 => format!(
                "bench-load: {} open/read/close of a 4 KiB file + {} loopback connects",
                self.w1_iterations, self.w1_connects
            ),
            Workload::W2 => format!("`{PYTHON} -c pass` x {}, sequential", self.w2_starts),
            Workload::W3 => format!(
                "{PYTHON} reading {} small files, then {} loopback connects",
                self.w3_files, self.w3_connects
            ),
            Workload::W4 => format!("bench-load: /bin/true x {}, sequential", self.w4_execs),
            Workload::W5 => format!(
                "`{PYTHON} -c pass` x {} in {} parallel loops, 3 .pth hooks in the user site",
                self.w5_starts, self.w5_jobs
            ),
        }
    }
}

/// Files the workloads need, made once per bench.
pub struct Fixtures {
    pub bench_load: PathBuf,
    /// A home without hooks (W2, W3, scaling).
    pub plain_home: PathBuf,
    /// A home whose user site holds the W5 hooks.
    pub hook_home: PathBuf,
    w3_dir: PathBuf,
    w3_script: PathBuf,
}

const W3_SCRIPT: &str = r#"# cargo xtask bench, W3: open small files, then loopback connections.
import os, socket, sys

files_dir, n_files, n_conn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = 0
for i in range(n_files):
    with open(os.path.join(files_dir, "f%05d" % i), "rb") as f:
        total += len(f.read())
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
addr = srv.getsockname()
for _ in range(n_conn):
    c = socket.create_connection(addr)
    s, _ = srv.accept()
    c.close()
    s.close()
srv.close()
assert total == 64 * n_files
"#;

impl Fixtures {
    pub fn create(dir: &Path, sizes: &Sizes, bench_load: PathBuf) -> Result<Self> {
        let plain_home = dir.join("home-plain");
        fs::create_dir_all(&plain_home)?;
        let hook_home = dir.join("home-hooks");
        let site = hook_home.join(USER_SITE);
        fs::create_dir_all(&site)?;
        let extra = hook_home.join("extra-path");
        fs::create_dir_all(&extra)?;
        // Path-only: puts a directory on sys.path, runs nothing.
        write(
            &site.join("bench_paths.pth"),
            format!("{}\n", extra.display()),
        )?;
        // The virtualenv form, known-benign by content; its module must exist.
        write(&site.join("_virtualenv.pth"), "import _virtualenv\n")?;
        write(&site.join("_virtualenv.py"), "# bench stand-in\n")?;
        // Unknown executable line, harmless: attribution starts a hook lineage for it.
        write(&site.join("bench_unknown.pth"), "import os; os.getpid()\n")?;
        let w3_dir = dir.join("w3-files");
        fs::create_dir_all(&w3_dir)?;
        for i in 0..sizes.w3_files {
            write(&w3_dir.join(format!("f{i:05}")), [b'.'; 64])?;
        }
        let w3_script = dir.join("w3.py");
        write(&w3_script, W3_SCRIPT)?;
        Ok(Self {
            bench_load,
            plain_home,
            hook_home,
            w3_dir,
            w3_script,
        })
    }
}

/// `python3.11` with a clean environment and `home` as its home.
pub fn python(home: &Path) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Runs `cmd` to completion; on failure reruns nothing but says how it ended.
fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        check_interrupted()?;
        let hint = explain(cmd);
        bail!("{what} failed ({status}){hint}");
    }
    Ok(())
}

/// Reruns a failed command with stderr captured, for the error message.
fn explain(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::piped());
    match cmd.output() {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        }
        Err(_) => String::new(),
    }
}

fn python_starts(home: &Path, n: u64) -> Result<()> {
    for _ in 0..n {
        run_ok(python(home).args(["-c", "pass"]), "python3.11 -c pass")?;
    }
    Ok(())
}

/// One timed run of `w`.
pub fn run(w: Workload, fx: &Fixtures, sizes: &Sizes) -> Result<Duration> {
    let start = Instant::now();
    match w {
        Workload::W1 => run_ok(
            Command::new(&fx.bench_load)
                .arg("syscalls")
                .arg(sizes.w1_iterations.to_string())
                .arg(sizes.w1_connects.to_string())
                .stdin(Stdio::null()),
            "bench-load syscalls",
        )?,
        Workload::W2 => python_starts(&fx.plain_home, sizes.w2_starts)?,
        Workload::W3 => run_ok(
            python(&fx.plain_home)
                .arg(&fx.w3_script)
                .arg(&fx.w3_dir)
                .arg(sizes.w3_files.to_string())
                .arg(sizes.w3_connects.to_string()),
            "the W3 Python program",
        )?,
        Workload::W4 => run_ok(
            Command::new(&fx.bench_load)
                .arg("forkexec")
                .arg(sizes.w4_execs.to_string())
                .stdin(Stdio::null()),
            "bench-load forkexec",
        )?,
        Workload::W5 => {
            let jobs = sizes.w5_jobs.max(1);
            let home = fx.hook_home.clone();
            let per_job = |j: u64| sizes.w5_starts / jobs + u64::from(j < sizes.w5_starts % jobs);
            let results: Vec<Result<()>> = thread::scope(|s| {
                let handles: Vec<_> = (0..jobs)
                    .map(|j| {
                        let home = &home;
                        s.spawn(move || python_starts(home, per_job(j)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| bail!("a W5 loop panicked")))
                    .collect()
            });
            results.into_iter().collect::<Result<Vec<()>>>()?;
        }
    }
    let took = start.elapsed();
    check_interrupted()?;
    Ok(took)
}

/// Idle interpreters, each already past its start-up, killed on drop.
pub struct IdlePythons {
    procs: Vec<Spawned>,
}

impl IdlePythons {
    pub fn start(home: &Path, n: u64) -> Result<Self> {
        let mut procs = Vec::new();
        for _ in 0..n {
            let child = detached(PYTHON)
                .args([
                    "-c",
                    "import sys, time; sys.stdout.write('r'); sys.stdout.flush(); time.sleep(3600)",
                ])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", home)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting an idle python3.11")?;
            procs.push(Spawned::new("idle python3.11", child));
        }
        // Each writes one byte once its start-up is over.
        for p in &mut procs {
            let mut b = [0u8; 1];
            let out = p
                .child_mut()
                .and_then(|c: &mut Child| c.stdout.as_mut())
                .context("idle python without stdout")?;
            out.read_exact(&mut b)
                .context("an idle python3.11 exited during start-up")?;
        }
        Ok(Self { procs })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }
}

/// Starts interpreters (with the hook home) at `rate` a second for `secs` seconds, on a
/// fixed schedule and without waiting for each, as a busy CI host or a fan-out job
/// would. Returns (starts, achieved starts a second, failures).
pub fn paced_starts(fx: &Fixtures, rate: u64, secs: u64) -> Result<(u64, f64, u64)> {
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let mut running: Vec<Child> = Vec::new();
    let mut failures = 0u64;
    let reap = |running: &mut Vec<Child>, failures: &mut u64| {
        running.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                *failures += u64::from(!st.success());
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    };
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        running.push(
            python(&fx.hook_home)
                .args(["-c", "pass"])
                .spawn()
                .context("starting python3.11")?,
        );
        reap(&mut running, &mut failures);
        check_interrupted()?;
    }
    let spawned_in = start.elapsed().as_secs_f64();
    for mut c in running {
        failures += u64::from(!c.wait()?.success());
    }
    Ok((total, total as f64 / spawned_in.max(1e-9), failures))
}

/// `/usr/bin/python3.11` must be there (W2, W3, W5 and the scaling runs need it).
pub fn check_python() -> Result<()> {
    if !Path::new(PYTHON).is_file() {
        bail!("{PYTHON} is missing: install Debian's python3.11 (`cargo xtask setup` does)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_by_id() {
        assert_eq!(Workload::parse("w3").unwrap(), Workload::W3);
        assert!(Workload::parse("W9").is_err());
    }

    #[test]
    fn quick_sizes_are_smaller() {
        let (q, f) = (Sizes::quick(), Sizes::full());
        for w in Workload::ALL {
            assert!(q.ops(w) < f.ops(w), "{w}");
        }
        assert!(f.rounds >= 5);
        assert_eq!(f.ops(Workload::W3), 20_500);
    }
}
