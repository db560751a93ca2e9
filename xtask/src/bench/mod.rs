//! `cargo xtask bench`: what pthwatch costs, measured against no monitor, auditd and a
//! bpftrace script, on fixed workloads, in one run that sets up, measures and restores
//! the machine. The method and every column are described in `docs/benchmarks.md`.
//!
//! Phases: setup (packages for the comparison monitors, the release binaries, the
//! workloads' files), the interleaved rounds ([`rounds`]), the idle and rate checks
//! ([`checks`]), the scaling series ([`scaling`]), then the outputs (terminal table,
//! JSON, Markdown + SVG). Whatever happens, [`host::Host`] puts the machine back.
mod audit;
mod bpfstats;
mod bpftrace;
mod checks;
mod condition;
mod host;
mod prepare;
mod procstat;
mod pthwatch;
mod render;
mod report;
mod rounds;
mod scaling;
mod stats;
mod svg;
mod targets;
mod workloads;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use self::{
    host::Host,
    report::{ConditionInfo, Meta, Report, WorkloadInfo},
    workloads::{Fixtures, Sizes, Workload},
};
use crate::util::is_root;

#[derive(clap::Args)]
pub struct Args {
    /// Tiny sizes and 2 rounds: checks that the benchmark works (CI smoke run). The
    /// numbers mean little.
    #[arg(long)]
    quick: bool,
    /// Workloads to run, e.g. `W1,W2` (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    only: Vec<String>,
    /// Conditions, e.g. `none,floor,alert,block,auditd,bpftrace` (the default). `none`
    /// is always measured: every ratio is to it.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "none,floor,alert,block,auditd,bpftrace"
    )]
    conditions: String,
    /// Rounds (default 5, or 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Print the JSON document on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the JSON document to FILE.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Write `benchmarks.md` and `ratios.svg` into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Skip the scaling series.
    #[arg(long)]
    no_scaling: bool,
    /// Skip the idle-host and start-rate checks.
    #[arg(long)]
    no_checks: bool,
    /// Leave `kernel.bpf_stats_enabled` alone: no kernel-side cost per program, and
    /// pthwatch's timings without the statistics' own small cost.
    #[arg(long)]
    no_bpf_stats: bool,
    /// The pthwatch binary (default: target/release/pthwatch, built if missing).
    #[arg(long, value_name = "PATH")]
    pthwatch: Option<PathBuf>,
    /// Rebuild pthwatch even when target/release/pthwatch exists.
    #[arg(long)]
    rebuild: bool,
    /// Do not apt-get install auditd and bpftrace when missing (those conditions are then
    /// reported unavailable).
    #[arg(long)]
    no_install: bool,
    /// Keep the scratch directory (daemon logs, auditd log) for inspection.
    #[arg(long)]
    keep_temp: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(r) = args.rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        sizes.rounds = r;
    }
    let workloads: Vec<Workload> = if args.only.is_empty() {
        Workload::ALL.to_vec()
    } else {
        let mut v = args
            .only
            .iter()
            .map(|s| Workload::parse(s))
            .collect::<Result<Vec<_>>>()?;
        v.sort();
        v.dedup();
        v
    };
    let conditions = condition::parse_list(&args.conditions)?;
    if !is_root() {
        bail!(
            "the benchmark loads eBPF programs, audit rules and sysctls, so it needs root: \
             rerun as root, e.g. `sudo env \"PATH=$PATH\" cargo xtask bench --quick`"
        );
    }
    workloads::check_python()?;
    host::install_signal_handlers();

    let mut notes = Vec::new();
    let others = procstat::pids_named("pthwatch");
    if !others.is_empty() {
        notes.push(format!(
            "another pthwatch was running during the bench (pid {others:?}): its sensors add \
             to every condition"
        ));
    }
    let loadavg_start = procstat::loadavg();
    let mut host = Host::new(args.keep_temp)?;
    let prepared = prepare::prepare(&prepare::Options {
        conditions: &conditions,
        install: !args.no_install,
        pthwatch: args.pthwatch.clone(),
        rebuild: args.rebuild,
    })?;
    notes.extend(prepared.notes.iter().cloned());
    let fixtures = Fixtures::create(&host.dir, &sizes, prepared.bench_load.clone())?;
    let bpf_stats = !args.no_bpf_stats && which::which("bpftool").is_ok();
    if !args.no_bpf_stats && !bpf_stats {
        notes.push("bpftool is missing: no kernel-side cost per program".into());
    }

    let plan = rounds::Plan {
        pthwatch: &prepared.pthwatch,
        fixtures: &fixtures,
        sizes: &sizes,
        workloads: &workloads,
        conditions: &conditions,
        bpf_stats,
        settle: if args.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(1)
        },
    };
    let measured = rounds::run(&mut host, &plan)?;
    notes.extend(measured.notes.iter().cloned());

    let (idle, rate, restart) = if args.no_checks {
        (None, None, None)
    } else {
        (
            Some(checks::idle(
                &mut host,
                &prepared.pthwatch,
                &fixtures,
                &sizes,
            )?),
            Some(checks::rate(
                &mut host,
                &prepared.pthwatch,
                &fixtures,
                &sizes,
            )?),
            Some(checks::restart(
                &mut host,
                &prepared.pthwatch,
                &fixtures,
                if args.quick { 2 } else { 5 },
            )?),
        )
    };
    let scaling = if args.no_scaling {
        Vec::new()
    } else {
        scaling::run(&mut host, &prepared.pthwatch, &fixtures, &sizes, bpf_stats)?
    };

    host.restore();
    let restored = std::mem::take(&mut host.restored);
    let results = report::cells(&measured.samples, &sizes);
    let mut r = Report {
        meta: Meta {
            format: 1,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            started_unix,
            duration_s: started.elapsed().as_secs_f64(),
            quick: args.quick,
            sizes: sizes.clone(),
            pthwatch: prepared.pthwatch.display().to_string(),
            pthwatch_version: crate::util::output(
                std::process::Command::new(&prepared.pthwatch).arg("--version"),
            )
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
            bpf_stats,
            loadavg_start,
            loadavg_end: procstat::loadavg(),
        },
        workloads: workloads
            .iter()
            .map(|&w| WorkloadInfo {
                id: w.id(),
                title: w.title(),
                description: sizes.describe(w),
                ops: sizes.ops(w),
                unit: w.unit(),
            })
            .collect(),
        conditions: conditions
            .iter()
            .map(|&c| ConditionInfo {
                id: c.id(),
                label: c.label(),
                unavailable: measured.unavailable.get(&c).cloned(),
            })
            .collect(),
        results,
        monitors: measured.monitors,
        kernel_programs: measured.programs,
        idle,
        rate,
        restart,
        scaling,
        targets: Vec::new(),
        restored,
        notes,
    };
    r.targets = targets::evaluate(&r);
    if r.meta.bpf_stats && conditions.iter().any(|c| c.is_pthwatch()) {
        r.notes.push(
            "the timed rounds ran without kernel.bpf_stats_enabled; the bpf ns/op column and \
             the kernel programs table come from a separate untimed pass with it on"
                .into(),
        );
    }
    if r.meta.bpf_stats && !args.no_scaling {
        r.notes.push(
            "the scaling series ran with kernel.bpf_stats_enabled=1 (its bpf ns/start \
             column), which adds a clock read to every program run of its pthwatch timings \
             (--no-bpf-stats to measure without it)"
                .into(),
        );
    }
    output(args, &r)
}

fn output(args: &Args, r: &Report) -> Result<()> {
    let table = render::terminal(r);
    let json = serde_json::to_string_pretty(r).context("serialising the report")?;
    if args.json {
        eprint!("{table}");
        println!("{json}");
    } else {
        print!("{table}");
    }
    if !r.restored.is_empty() {
        eprintln!("bench: restored: {}", r.restored.join("; "));
    }
    if let Some(path) = &args.json_out {
        fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: JSON written to {}", path.display());
    }
    if let Some(dir) = &args.report {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let svg = svg::render(&svg::from_report(r));
        fs::write(dir.join("ratios.svg"), svg)
            .with_context(|| format!("writing {}", dir.join("ratios.svg").display()))?;
        fs::write(dir.join("benchmarks.md"), render::markdown(r, "ratios.svg"))
            .with_context(|| format!("writing {}", dir.join("benchmarks.md").display()))?;
        eprintln!(
            "bench: report written to {} (benchmarks.md, ratios.svg)",
            dir.display()
        );
    }
    Ok(())
}
