//! `cargo xtask repro`: is the release build reproducible? Two clean builds, exactly as
//! `cargo xtask release` builds (cargo-auditable, remapped paths, `SOURCE_DATE_EPOCH`), in
//! `target/repro-a` and `target/repro-b`, one after the other; then the sha256 of both
//! binaries and of the kernel objects `monitor/build.rs` embedded. When they differ, the
//! ELF sections that differ are listed. Each clean build takes minutes; the directories
//! are kept for a closer look (delete them with `rm -rf target/repro-*`).
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{elf, release_build, require_ebpf_build, sha256_files, source_date_epoch, tools};
use crate::util::{fmt_duration, target_dir};

#[derive(clap::Args)]
pub struct Args {}

struct Build {
    dir: PathBuf,
    bin: PathBuf,
    ebpf: PathBuf,
    took: Duration,
}

pub fn run(_args: &Args) -> Result<()> {
    require_ebpf_build()?;
    eprintln!("xtask: {}", tools::ensure(&tools::CARGO_AUDITABLE)?);
    let target = target_dir()?;
    let epoch = source_date_epoch();
    let mut builds = Vec::new();
    for name in ["repro-a", "repro-b"] {
        let dir = target.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        eprintln!("xtask: clean release build in {}", dir.display());
        let start = Instant::now();
        let bin = release_build(&dir, epoch)?;
        let took = start.elapsed();
        let ebpf = ebpf_object(&dir)?;
        builds.push(Build {
            dir,
            bin,
            ebpf,
            took,
        });
    }
    let (a, b) = (&builds[0], &builds[1]);
    let sums = sha256_files(&[&a.bin, &b.bin, &a.ebpf, &b.ebpf])?;

    println!(
        "xtask: reproducibility (two clean builds, SOURCE_DATE_EPOCH={})",
        epoch.map_or_else(|| "unset".to_owned(), |e| e.to_string())
    );
    for (i, build) in builds.iter().enumerate() {
        println!(
            "  {}: built in {}\n    pthwatch     {}\n    eBPF object  {}",
            build.dir.display(),
            fmt_duration(build.took),
            sums[i],
            sums[i + 2]
        );
    }
    let ebpf_same = sums[2] == sums[3];
    if !ebpf_same {
        println!("  the embedded eBPF objects differ:");
        for d in elf_differences(&a.ebpf, &b.ebpf)? {
            println!("    {d}");
        }
    }
    if sums[0] == sums[1] {
        println!("xtask: reproducible: yes, pthwatch sha256 {}", sums[0]);
        return Ok(());
    }
    println!("  pthwatch differs:");
    for d in elf_differences(&a.bin, &b.bin)? {
        println!("    {d}");
    }
    bail!(
        "not reproducible: the two builds of pthwatch differ ({}); compare {} and {}",
        if ebpf_same {
            "the eBPF objects are identical, so the host code differs"
        } else {
            "the eBPF objects differ too, see above"
        },
        a.bin.display(),
        b.bin.display()
    )
}

fn elf_differences(a: &Path, b: &Path) -> Result<Vec<String>> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    elf::differences(&read(a)?, &read(b)?)
}

/// The kernel object aya-build left in monitor's `OUT_DIR` (`release/build/monitor-*/out/
/// monitor`); a clean build has exactly one.
fn ebpf_object(dir: &Path) -> Result<PathBuf> {
    let build = dir.join("release").join("build");
    let found: Vec<PathBuf> = fs::read_dir(&build)
        .with_context(|| format!("reading {}", build.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("monitor-")
                .is_some_and(|hash| hash.bytes().all(|c| c.is_ascii_hexdigit()))
        })
        .map(|e| e.path().join("out").join("monitor"))
        .filter(|p| p.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no eBPF object under {}/monitor-*/out/", build.display()),
        many => bail!(
            "{} eBPF objects under {}: not a clean build",
            many.len(),
            build.display()
        ),
    }
}
