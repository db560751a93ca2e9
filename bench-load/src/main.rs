//! `bench-load`: the compiled workloads of `cargo xtask bench`. Each does a fixed amount
//! of work and exits 0, so its wall time is the cost of that work on this host.
//!
//! - `syscalls N CONNECTS`: opens, reads and closes a small file N times, and makes
//!   CONNECTS loopback TCP connections to a listener of its own, spread over the loop.
//! - `forkexec N [PROGRAM]`: starts PROGRAM (default `/bin/true`) N times, one after the
//!   other, waiting for each.
use std::{
    env,
    fs::{self, File},
    io::Read as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, ExitCode},
};

const USAGE: &str = "usage: bench-load syscalls N CONNECTS | bench-load forkexec N [PROGRAM]";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["syscalls", n, connects] => count(n).and_then(|n| syscalls(n, count(connects)?)),
        ["forkexec", n] => count(n).and_then(|n| forkexec(n, "/bin/true")),
        ["forkexec", n, program] => count(n).and_then(|n| forkexec(n, program)),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|e| format!("`{s}` is not a count ({e}); {USAGE}"))
}

/// Removes the scratch file even when the loop fails half-way.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn syscalls(n: u64, connects: u64) -> Result<(), String> {
    let path = env::temp_dir().join(format!("bench-load-{}", std::process::id()));
    fs::write(&path, [b'x'; 4096]).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let scratch = Scratch(path);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("binding a loopback listener: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    // One connect every `every` iterations, so both kinds of call are spread over the run.
    let every = n.checked_div(connects).map_or(0, |e| e.max(1));
    let mut made = 0u64;
    let mut buf = [0u8; 4096];
    for i in 0..n {
        let mut f =
            File::open(&scratch.0).map_err(|e| format!("opening {}: {e}", scratch.0.display()))?;
        let got = f
            .read(&mut buf)
            .map_err(|e| format!("reading {}: {e}", scratch.0.display()))?;
        if got == 0 {
            return Err(format!("{} is empty", scratch.0.display()));
        }
        drop(f);
        if every != 0 && made < connects && i % every == 0 {
            connect_once(&listener, addr)?;
            made += 1;
        }
    }
    while made < connects {
        connect_once(&listener, addr)?;
        made += 1;
    }
    Ok(())
}

/// A connect completes from the listen backlog, so one thread can do both ends.
fn connect_once(listener: &TcpListener, addr: std::net::SocketAddr) -> Result<(), String> {
    let client = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (server, _) = listener
        .accept()
        .map_err(|e| format!("accepting on {addr}: {e}"))?;
    drop(client);
    drop(server);
    Ok(())
}

fn forkexec(n: u64, program: &str) -> Result<(), String> {
    for _ in 0..n {
        let status = Command::new(program)
            .status()
            .map_err(|e| format!("starting {program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} exited with {status}"));
        }
    }
    Ok(())
}
