//! The bpftrace conditions.
//!
//! - `bpftrace`: a script on the syscall tracepoints pthwatch also uses (openat, execve,
//!   connect), filtered to processes named `python*`, printing every event (to
//!   /dev/null). It is what a quick hand-made tracer for the same problem costs.
//! - `floor`: the syscall tracepoints pthwatch's tracepoint backend attaches, each with a
//!   program that does nothing. Enabling any syscall tracepoint sends every system call
//!   of every task through the kernel's traced slow path, and each event through the
//!   tracepoint's dispatch; that is the least a monitor built on these tracepoints costs,
//!   whatever its programs do. pthwatch's own share is what it adds over the floor.
use std::{
    fs,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::host::{Spawned, check_interrupted, detached, sleep};
use crate::util::output;

/// A bpftrace script and how many tracepoints it attaches (to know when it is ready).
pub struct Script {
    pub name: &'static str,
    pub text: &'static str,
    pub probes: usize,
}

pub const PYTHON_TRACER: Script = Script {
    name: "bench.bt",
    text: r#"// cargo xtask bench: the same tracepoints as pthwatch, Python processes only.
tracepoint:syscalls:sys_enter_openat /strncmp(comm, "python", 6) == 0/
{
  printf("open %d %s %s\n", pid, comm, str(args->filename));
}
tracepoint:syscalls:sys_enter_execve /strncmp(comm, "python", 6) == 0/
{
  printf("exec %d %s %s\n", pid, comm, str(args->filename));
}
tracepoint:syscalls:sys_enter_connect /strncmp(comm, "python", 6) == 0/
{
  printf("connect %d %s\n", pid, comm);
}
"#,
    probes: 3,
};

/// The syscall tracepoints of pthwatch's tracepoint backend (`monitor/src/sensors/
/// tracepoint.rs`, `TRACEPOINTS`), with an empty program each.
pub const FLOOR: Script = Script {
    name: "floor.bt",
    text: r#"// cargo xtask bench: pthwatch's syscall tracepoints, doing nothing.
tracepoint:syscalls:sys_exit_openat,
tracepoint:syscalls:sys_exit_open,
tracepoint:syscalls:sys_exit_openat2,
tracepoint:syscalls:sys_exit_creat,
tracepoint:syscalls:sys_enter_connect,
tracepoint:syscalls:sys_enter_sendto,
tracepoint:syscalls:sys_enter_sendmsg,
tracepoint:syscalls:sys_enter_sendmmsg
{
}
"#,
    probes: 8,
};

pub struct Bpftrace {
    tracer: Spawned,
}

impl Bpftrace {
    /// Starts bpftrace and waits until its probes are attached. An error means the
    /// condition is unavailable here; its text says why.
    pub fn start(dir: &Path, script: &Script) -> Result<Self> {
        if which::which("bpftrace").is_err() {
            bail!("bpftrace is not installed (apt-get install bpftrace)");
        }
        fs::create_dir_all(dir)?;
        let path = dir.join(script.name);
        fs::write(&path, script.text)?;
        let err_path = dir.join("bpftrace.stderr");
        let child = detached("bpftrace")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path)?)
            .spawn()
            .context("starting bpftrace")?;
        let mut tracer = Spawned::new("bpftrace", child);
        let pid = tracer.pid();
        let start = Instant::now();
        let bpftool = which::which("bpftool").is_ok();
        loop {
            if let Some(st) = tracer.exited() {
                let err = fs::read_to_string(&err_path).unwrap_or_default();
                let why = err
                    .lines()
                    .rev()
                    .find(|l| l.contains("ERROR") && !l.contains("RLIMIT_MEMLOCK"))
                    .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("")
                    .trim();
                bail!("bpftrace exited at start ({st}): {why}");
            }
            if bpftool {
                if attached(pid)? >= script.probes {
                    break;
                }
            } else if start.elapsed() > Duration::from_secs(5) {
                // Without bpftool there is no way to see the attachment: compiling and
                // attaching a few probes takes well under 5 s.
                break;
            }
            if start.elapsed() > Duration::from_secs(90) {
                bail!("bpftrace did not attach its probes in 90 s");
            }
            sleep(Duration::from_millis(100));
            check_interrupted()?;
        }
        Ok(Self { tracer })
    }

    pub fn pid(&self) -> u32 {
        self.tracer.pid()
    }

    pub fn stop(mut self) -> Result<()> {
        // SIGINT is bpftrace's normal way out (it detaches and prints its maps).
        let (_, in_time) = self.tracer.stop(libc::SIGINT, Duration::from_secs(15))?;
        if !in_time {
            bail!("bpftrace did not stop within 15 s of SIGINT (killed)");
        }
        Ok(())
    }
}

/// How many tracepoints `pid` has attached, from `bpftool perf show --json`.
fn attached(pid: u32) -> Result<usize> {
    let json = output(std::process::Command::new("bpftool").args(["perf", "show", "--json"]))?;
    Ok(count_tracepoints(&json, pid))
}

pub fn count_tracepoints(json: &str, pid: u32) -> usize {
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(json) else {
        return 0;
    };
    list.iter()
        .filter(|e| e["pid"].as_u64() == Some(u64::from(pid)) && e["fd_type"] == "tracepoint")
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_attached_tracepoints_of_one_process() {
        let json = r#"[{"pid":10,"fd":7,"prog_id":1,"fd_type":"tracepoint","tracepoint":"sys_enter_openat"},
                       {"pid":10,"fd":9,"prog_id":2,"fd_type":"tracepoint","tracepoint":"sys_enter_execve"},
                       {"pid":11,"fd":9,"prog_id":3,"fd_type":"tracepoint","tracepoint":"sys_enter_execve"},
                       {"pid":10,"fd":4,"prog_id":4,"fd_type":"kprobe","func":"x"}]"#;
        assert_eq!(count_tracepoints(json, 10), 2);
        assert_eq!(count_tracepoints("garbage", 10), 0);
    }

    #[test]
    fn script_filters_to_python() {
        assert_eq!(
            PYTHON_TRACER
                .text
                .matches("strncmp(comm, \"python\", 6)")
                .count(),
            PYTHON_TRACER.probes
        );
    }

    #[test]
    fn the_floor_attaches_each_syscall_tracepoint_with_an_empty_program() {
        let probes: Vec<&str> = FLOOR
            .text
            .lines()
            .filter_map(|l| {
                l.trim()
                    .trim_end_matches(',')
                    .strip_prefix("tracepoint:syscalls:")
            })
            .collect();
        assert_eq!(probes.len(), FLOOR.probes);
        assert!(probes.iter().all(|p| p.starts_with("sys_exit_open")
            || p.starts_with("sys_exit_creat")
            || p.starts_with("sys_enter_")));
        let body = FLOOR.text.split_once('{').unwrap().1;
        assert_eq!(body.trim(), "}");
    }
}
