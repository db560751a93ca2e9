//! `cargo xtask test`: the project's test command. In order: the release build (kernel
//! programs included), the unit tests, then the root-only integration tests against the
//! real kernel with `PTHWATCH_BIN` set to the binary just built. Prints a summary and
//! fails if any step failed.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build::{preflight, release_binary},
    util::{cargo, display, fmt_duration, is_root, run_inherit},
};

#[derive(clap::Args)]
pub struct Args {
    /// Build and run the unit tests only (no root needed).
    #[arg(long, conflicts_with = "filter")]
    unit_only: bool,
    /// Run only the integration tests whose name contains SUBSTRING.
    #[arg(long, value_name = "SUBSTRING")]
    filter: Option<String>,
}

/// The eBPF crate builds only for bpfel (through `monitor/build.rs`); built for the host,
/// it fails (`no_std` binary without panic=abort), so `--workspace` must leave it out.
const EBPF_CRATE: &str = "monitor-ebpf";
const INTEGRATION_CRATE: &str = "integration-tests";

/// Totals from libtest's `test result:` lines.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

enum Outcome {
    Passed,
    Failed(String),
    NotRun(&'static str),
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    took: Duration,
    counts: Option<Counts>,
}

pub fn run(args: &Args) -> Result<()> {
    if !args.unit_only && !is_root() {
        bail!(
            "the integration tests load eBPF programs into the kernel and so need root \
             (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN): rerun as root, e.g. \
             `sudo env \"PATH=$PATH\" cargo xtask test`, or pass --unit-only to run only the unit tests"
        );
    }
    let start = Instant::now();
    let mut steps = Vec::new();

    let t = Instant::now();
    let build = preflight().and_then(|()| {
        run_inherit(cargo().args(["build", "--release", "--workspace", "--exclude", EBPF_CRATE]))
    });
    let built = build.is_ok();
    steps.push(Step {
        name: "build",
        outcome: outcome(build),
        took: t.elapsed(),
        counts: None,
    });

    if built {
        let t = Instant::now();
        let mut cmd = cargo();
        cmd.args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            INTEGRATION_CRATE,
            "--exclude",
            EBPF_CRATE,
        ]);
        let (result, counts) = run_tests(&mut cmd);
        steps.push(Step {
            name: "unit tests",
            outcome: outcome(result),
            took: t.elapsed(),
            counts: Some(counts),
        });
    } else {
        steps.push(not_run("unit tests", "the build failed"));
    }

    if args.unit_only {
        steps.push(not_run("integration tests", "--unit-only"));
    } else if !built {
        steps.push(not_run("integration tests", "the build failed"));
    } else {
        let t = Instant::now();
        let (result, counts) = match release_binary() {
            Ok(bin) => {
                let mut cmd = cargo();
                cmd.args([
                    "test",
                    "--release",
                    "--package",
                    INTEGRATION_CRATE,
                    "--",
                    "--test-threads=1",
                ]);
                if let Some(filter) = &args.filter {
                    cmd.arg(filter);
                }
                cmd.env("PTHWATCH_BIN", &bin);
                eprintln!("+ PTHWATCH_BIN={}", bin.display());
                let (mut result, counts) = run_tests(&mut cmd);
                if let Some(filter) = &args.filter
                    && result.is_ok()
                    && counts.passed + counts.failed == 0
                {
                    result = Err(anyhow::anyhow!(
                        "no integration test name contains `{filter}`"
                    ));
                }
                (result, counts)
            }
            Err(e) => (Err(e), Counts::default()),
        };
        steps.push(Step {
            name: "integration tests",
            outcome: outcome(result),
            took: t.elapsed(),
            counts: Some(counts),
        });
    }

    let mut total = Counts::default();
    println!();
    println!("xtask test summary ({}):", fmt_duration(start.elapsed()));
    for step in &steps {
        let (word, why) = match &step.outcome {
            Outcome::Passed => ("ok", String::new()),
            Outcome::Failed(e) => ("FAILED", format!("  {e}")),
            Outcome::NotRun(why) => ("not run", format!("  ({why})")),
        };
        let took = match step.outcome {
            Outcome::NotRun(_) => String::new(),
            _ => fmt_duration(step.took),
        };
        let counts = step.counts.map_or(String::new(), |c| {
            total.add(c);
            format!(
                "  {} passed, {} failed, {} ignored",
                c.passed, c.failed, c.ignored
            )
        });
        println!("  {:<18} {word:<7} {took:>7}{counts}{why}", step.name);
    }
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .map(|s| s.name)
        .collect();
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn outcome(result: Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

fn not_run(name: &'static str, why: &'static str) -> Step {
    Step {
        name,
        outcome: Outcome::NotRun(why),
        took: Duration::ZERO,
        counts: None,
    }
}

/// Runs a `cargo test` command, echoing its stdout while adding up libtest's results.
fn run_tests(cmd: &mut Command) -> (Result<()>, Counts) {
    eprintln!("+ {}", display(cmd));
    let mut counts = Counts::default();
    let result = (|| {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{}`", display(cmd)))?;
        let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut stdout = std::io::stdout();
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            stdout.write_all(&line)?;
            stdout.flush()?;
            if let Some(c) = parse_result_line(&String::from_utf8_lossy(&line)) {
                counts.add(c);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`{}` failed ({status})", display(cmd));
        }
        Ok(())
    })();
    (result, counts)
}

/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`
fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result:")?;
    let mut counts = Counts::default();
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let n = words
            .iter()
            .rev()
            .nth(1)
            .and_then(|w| w.parse::<u64>().ok());
        match (words.last(), n) {
            (Some(&"passed"), Some(n)) => counts.passed = n,
            (Some(&"failed"), Some(n)) => counts.failed = n,
            (Some(&"ignored"), Some(n)) => counts.ignored = n,
            _ => {}
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_result_lines() {
        let ok = "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(
            parse_result_line(ok),
            Some(Counts {
                passed: 3,
                failed: 0,
                ignored: 1
            })
        );
        let bad = "test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s\n";
        assert_eq!(
            parse_result_line(bad),
            Some(Counts {
                passed: 10,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
