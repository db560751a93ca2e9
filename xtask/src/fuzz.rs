//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/` (pthwatch's parsers of untrusted
//! input), each run for a fixed time.
//!
//! - cargo-fuzz is installed from crates.io when missing (pinned, see `audit::tools`).
//! - The targets are built once with nightly (`cargo +nightly fuzz build`), with
//!   `AYA_BUILD_SKIP=1`: they never load the kernel programs, so the eBPF build is skipped.
//! - By default the build is optimised, with 16 codegen units and no sanitizer: cargo-fuzz's
//!   own default (AddressSanitizer, one codegen unit) takes twice as long to build cold on 2
//!   cores (10 minutes against 5 here) and runs 5 to 10 times fewer inputs a second. The
//!   targets are safe Rust checking properties with assertions, and the decoder's one
//!   unsafe read is bounds-checked, so a short run gains little from ASan. `--asan` turns
//!   cargo-fuzz's default back on for long runs.
//! - Each target starts from its committed seeds, `fuzz/corpus/<target>/` (read only), and
//!   keeps what it finds in `target/fuzz-corpus/<target>/`, so local runs build on each
//!   other without touching the seeds.
//! - A crash, a failed property (a panic), a timeout or running out of memory fails the
//!   run; libFuzzer's artifact (`fuzz/artifacts/<target>/…`) is named, with the command that
//!   replays it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    audit::tools,
    util::{display, fmt_duration, run_inherit, workspace_root},
};

/// Every target in `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[(&str, &str)] = &[
    (
        "hook_classify",
        ".pth / sitecustomize parser and classifier",
    ),
    ("config_toml", "configuration parser (Config::from_toml)"),
    ("event_decode", "ring-buffer record decoder, round trip"),
    ("eventlog_line", "event-log line parser and encoder"),
];

/// Longest time one input may take before libFuzzer calls it a hang. The slowest real
/// input (a 1 MiB hook) takes well under a second, even with AddressSanitizer.
const INPUT_TIMEOUT_SECS: u64 = 25;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Build with AddressSanitizer and one codegen unit (cargo-fuzz's default): slower to
    /// build and to run; for long runs.
    #[arg(long)]
    asan: bool,
    /// Run only this target (repeatable); default: all of them.
    #[arg(long = "target", value_name = "NAME", value_parser = target_name)]
    targets: Vec<String>,
}

fn target_name(s: &str) -> Result<String, String> {
    if TARGETS.iter().any(|(t, _)| *t == s) {
        Ok(s.to_owned())
    } else {
        let names: Vec<_> = TARGETS.iter().map(|(t, _)| *t).collect();
        Err(format!(
            "unknown fuzz target; targets: {}",
            names.join(", ")
        ))
    }
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.iter().map(|(t, _)| *t).collect()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };

    eprintln!("xtask: {}", tools::ensure(&tools::CARGO_FUZZ)?);
    if which::which("c++").is_err() {
        bail!("no C++ compiler (`c++`): libFuzzer is C++; run `cargo xtask setup` (installs g++)");
    }

    let build_start = Instant::now();
    let mut build = cargo_fuzz(&fuzz_dir, "build", args.asan);
    // `cargo fuzz build` takes one target or builds them all.
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    run_inherit(&mut build).context("building the fuzz targets failed")?;
    let build_time = build_start.elapsed();

    let work = target_dir(&root).join("fuzz-corpus");
    let mut results = Vec::new();
    for t in &targets {
        results.push((*t, run_target(&fuzz_dir, &work, t, args)?));
    }

    println!(
        "fuzz: build {}, {} target(s) at {} s each, {} in all",
        fmt_duration(build_time),
        targets.len(),
        args.seconds,
        fmt_duration(start.elapsed())
    );
    let mut failed = 0;
    for (t, r) in &results {
        match r {
            Outcome::Clean { runs, corpus } => {
                println!("  {t:<14} ok: {runs} inputs, corpus {corpus} files");
            }
            Outcome::Failed { artifact, log } => {
                failed += 1;
                match artifact {
                    Some(a) => println!(
                        "  {t:<14} FAILED: artifact {}\n  {:<14} replay: AYA_BUILD_SKIP=1 cargo +nightly fuzz run -s none {t} {}",
                        a.display(),
                        "",
                        a.display()
                    ),
                    None => println!("  {t:<14} FAILED: no artifact; see {}", log.display()),
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} fuzz target(s) failed");
    }
    Ok(())
}

enum Outcome {
    Clean {
        runs: String,
        corpus: usize,
    },
    Failed {
        artifact: Option<PathBuf>,
        log: PathBuf,
    },
}

/// `cargo +nightly fuzz SUBCOMMAND` for `fuzz_dir`, without the kernel build. Through
/// `rustup run`, which holds every nested cargo and rustc to nightly (`$CARGO`, the
/// stable cargo that runs xtask, knows no `+toolchain`).
/// `build` and `run` take the same build options, or `run` would build again.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str, asan: bool) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", "nightly", "cargo", "fuzz", subcommand])
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        .arg("--release")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("AYA_BUILD_SKIP", "1");
    if !asan {
        cmd.args(["--sanitizer", "none", "--codegen-units", "16"]);
    }
    cmd
}

fn run_target(fuzz_dir: &Path, work: &Path, target: &str, args: &Args) -> Result<Outcome> {
    let seconds = args.seconds;
    let corpus = work.join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let log = work.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let started = SystemTime::now();

    let mut cmd = cargo_fuzz(fuzz_dir, "run", args.asan);
    cmd.arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1");
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log.display()
    );
    eprintln!("+ {}", display(&cmd));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    if status.success() {
        return Ok(Outcome::Clean {
            runs: final_runs(&text).unwrap_or_else(|| "?".to_owned()),
            corpus: fs::read_dir(&corpus).map_or(0, Iterator::count),
        });
    }
    // The failure: the end of libFuzzer's report, then the artifact it wrote.
    let lines: Vec<&str> = text.lines().collect();
    eprintln!(
        "xtask: {target} failed ({status}); the end of {}:",
        log.display()
    );
    for l in &lines[lines.len().saturating_sub(60)..] {
        eprintln!("    {l}");
    }
    Ok(Outcome::Failed {
        artifact: artifact_in(&text, fuzz_dir).or_else(|| newest_since(&artifacts, started)),
        log,
    })
}

/// `Done 123456 runs in 20 second(s)`, or the `stat::number_of_executed_units` line.
fn final_runs(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")
            .and_then(|rest| rest.split_whitespace().next())
            .or_else(|| {
                l.strip_prefix("stat::number_of_executed_units:")
                    .map(str::trim)
            })
            .map(str::to_owned)
    })
}

/// `Test unit written to ./artifacts/…` (libFuzzer's words), resolved against `fuzz_dir`
/// when relative.
fn artifact_in(log: &str, fuzz_dir: &Path) -> Option<PathBuf> {
    let path = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))?;
    let path = Path::new(path);
    if path.is_absolute() {
        Some(path.to_owned())
    } else {
        let in_fuzz = fuzz_dir.join(path);
        Some(if in_fuzz.exists() {
            in_fuzz
        } else {
            workspace_root().join(path)
        })
    }
}

/// The newest file in `dir` written after `since`.
fn newest_since(dir: &Path, since: SystemTime) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(t, _)| *t >= since)
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// `$CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_built_and_seeded() {
        let fuzz = workspace_root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        let declared = manifest.matches("[[bin]]").count();
        assert_eq!(
            declared,
            TARGETS.len(),
            "fuzz/Cargo.toml and TARGETS differ"
        );
        for (t, _) in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(fuzz.join(format!("fuzz_targets/{t}.rs")).is_file(), "{t}");
            let seeds = fs::read_dir(fuzz.join("corpus").join(t)).unwrap().count();
            assert!(seeds > 0, "{t} has no seeds");
        }
    }

    #[test]
    fn reads_libfuzzer_output() {
        let log = "#1024 pulse cov: 10\nDone 123456 runs in 20 second(s)\nstat::number_of_executed_units: 123456\n";
        assert_eq!(final_runs(log).as_deref(), Some("123456"));
        let crash = "==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-abc\nBase64: AA==\n";
        assert_eq!(
            artifact_in(crash, Path::new("/w/fuzz")),
            Some(PathBuf::from("/w/fuzz/artifacts/x/crash-abc"))
        );
        assert_eq!(artifact_in("nothing", Path::new("/w/fuzz")), None);
    }
}
