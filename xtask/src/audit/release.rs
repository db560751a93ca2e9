//! `cargo xtask release`: what ships, in `target/release-artifacts/`:
//!
//! - `pthwatch`, built by `cargo auditable build --release --locked` (cargo-auditable
//!   pinned, from crates.io) in its own target directory (`target/release-build`, so the
//!   remapped flags do not invalidate the everyday `target/release`); its `.dep-v0`
//!   section lists every crate compiled into it (`cargo audit bin`, syft and trivy read it);
//! - `pthwatch.cdx.json`, the CycloneDX SBOM (`cargo xtask sbom`);
//! - `SHA256SUMS` of both, in `sha256sum -c` format.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{release_build, require_ebpf_build, sbom, sha256_files, source_date_epoch, tools};
use crate::util::{fmt_duration, target_dir};

#[derive(clap::Args)]
pub struct Args {}

/// The section cargo-auditable adds.
const AUDIT_SECTION: &str = ".dep-v0";

pub fn run(_args: &Args) -> Result<()> {
    require_ebpf_build()?;
    eprintln!("xtask: {}", tools::ensure(&tools::CARGO_AUDITABLE)?);
    let target = target_dir()?;
    let epoch = source_date_epoch();
    let start = Instant::now();
    let bin = release_build(&target.join("release-build"), epoch)?;
    let took = start.elapsed();
    let bytes = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if !has_audit_section(&bytes) {
        bail!(
            "{} has no {AUDIT_SECTION} section: did cargo-auditable run?",
            bin.display()
        );
    }

    let out = target.join("release-artifacts");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let shipped = out.join(sbom::BINARY);
    // Replace, never write through: a running copy may be open.
    let _ = fs::remove_file(&shipped);
    fs::copy(&bin, &shipped).with_context(|| format!("copying to {}", shipped.display()))?;
    let sbom_name = sbom::file_name();
    let components = sbom::write(&out.join(&sbom_name), epoch)?;

    let names = [sbom::BINARY.to_owned(), sbom_name];
    let paths: Vec<_> = names.iter().map(|n| out.join(n)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let sums = sha256_files(&refs)?;
    let lines: Vec<String> = sums
        .iter()
        .zip(&names)
        .map(|(sum, name)| format!("{sum}  {name}"))
        .collect();
    fs::write(out.join("SHA256SUMS"), lines.join("\n") + "\n")?;

    println!("xtask: release artifacts in {}", out.display());
    println!(
        "  {}  cargo-auditable {}, built in {}, SOURCE_DATE_EPOCH={}",
        sbom::BINARY,
        tools::CARGO_AUDITABLE.version,
        fmt_duration(took),
        epoch.map_or_else(|| "unset".to_owned(), |e| e.to_string())
    );
    println!("  {}  CycloneDX 1.5, {components} components", names[1]);
    println!("  SHA256SUMS:");
    for line in &lines {
        println!("    {line}");
    }
    Ok(())
}

fn has_audit_section(elf: &[u8]) -> bool {
    super::elf::sections(elf).is_ok_and(|s| s.iter().any(|s| s.name == AUDIT_SECTION))
}
