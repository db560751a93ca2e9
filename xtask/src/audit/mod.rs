//! pthwatch's own supply chain (docs/supply-chain.md):
//!
//! - `audit`: cargo-deny (pinned) against the offline RustSec copy: advisories, licenses,
//!   duplicate and wildcard bans, sources limited to crates.io.
//! - `sbom`: a CycloneDX 1.5 JSON SBOM of the `monitor` package, written from
//!   `cargo metadata` and `Cargo.lock`.
//! - `release`: the release binary built with `cargo auditable`, its SBOM and `SHA256SUMS`
//!   in `target/release-artifacts/`.
//! - `repro`: two clean release builds in separate target directories, compared by sha256.
use std::{
    path::{Path, PathBuf},
    process,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, cargo_home, output, run_inherit, workspace_root};

mod deny;
mod elf;
mod release;
mod repro;
mod sbom;
pub(crate) mod tools;
mod xxh64;

#[derive(clap::Subcommand)]
pub enum Command {
    /// cargo-deny against the offline RustSec copy (advisories, licenses, bans, sources);
    /// non-zero on any finding.
    Audit(deny::Args),
    /// Write a CycloneDX 1.5 JSON SBOM of pthwatch (the `monitor` package).
    Sbom(sbom::Args),
    /// `cargo auditable` release build, SBOM and SHA256SUMS in target/release-artifacts/.
    Release(release::Args),
    /// Two clean release builds (target/repro-a, target/repro-b); compares their sha256.
    Repro(repro::Args),
}

pub fn run(command: &Command) -> Result<()> {
    match command {
        Command::Audit(args) => deny::run(args),
        Command::Sbom(args) => sbom::run(args),
        Command::Release(args) => release::run(args),
        Command::Repro(args) => repro::run(args),
    }
}

/// The one timestamp a release may carry: `$SOURCE_DATE_EPOCH`, else the time of the
/// commit being built, else none (a tree without git history).
fn source_date_epoch() -> Option<u64> {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(epoch);
    }
    let out = output(
        process::Command::new("git")
            .arg("-C")
            .arg(workspace_root())
            .args(["log", "-1", "--format=%ct"]),
    )
    .ok()?;
    out.trim().parse().ok()
}

/// `--remap-path-prefix` flags that take the machine-specific prefixes out of the binary:
/// the checkout, cargo's home (registry sources) and the target directory (generated
/// code under `OUT_DIR`). rustc applies the last matching flag, so the target directory,
/// usually inside the checkout, comes last.
fn remap_flags(workspace: &Path, cargo_home: Option<&Path>, target: &Path) -> Vec<String> {
    let mut pairs = vec![(workspace, "/pthwatch")];
    if let Some(home) = cargo_home {
        pairs.push((home, "/cargo"));
    }
    pairs.push((target, "/target"));
    pairs
        .into_iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect()
}

/// The release build that ships: `cargo auditable build --release --locked` of `pthwatch`
/// into `target_dir`, with the path remapping and `SOURCE_DATE_EPOCH`, and `RUSTFLAGS`
/// from the environment ignored so two builds see the same flags. Returns the binary.
///
/// The kernel object is built by `monitor/build.rs` through aya-build, which runs its own
/// `cargo build` with a `CARGO_ENCODED_RUSTFLAGS` of its own (so these remaps do not reach
/// it) and without `RUSTC_WORKSPACE_WRAPPER` (so cargo-auditable does not touch it).
fn release_build(target_dir: &Path, epoch: Option<u64>) -> Result<PathBuf> {
    crate::build::preflight()?;
    let home = cargo_home();
    let flags = remap_flags(&workspace_root(), home.as_deref(), target_dir);
    let mut cmd = cargo();
    cmd.args([
        "auditable",
        "build",
        "--release",
        "--locked",
        "--package",
        sbom::PACKAGE,
        "--bin",
        sbom::BINARY,
    ])
    .env("CARGO_TARGET_DIR", target_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
    .env_remove("RUSTFLAGS")
    .env("CARGO_INCREMENTAL", "0");
    match epoch {
        Some(epoch) => cmd.env("SOURCE_DATE_EPOCH", epoch.to_string()),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    eprintln!("xtask: CARGO_ENCODED_RUSTFLAGS: {}", flags.join(" "));
    run_inherit(&mut cmd)?;
    let bin = target_dir.join("release").join(sbom::BINARY);
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// sha256 of each file, hex, through coreutils' `sha256sum` (no hashing crate needed).
fn sha256_files(files: &[&Path]) -> Result<Vec<String>> {
    let out = output(process::Command::new("sha256sum").arg("--").args(files))
        .context("sha256sum (coreutils) is needed for the checksums")?;
    let sums: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    if sums.len() != files.len() || sums.iter().any(|s| !is_sha256(s)) {
        bail!("unexpected sha256sum output: {out}");
    }
    Ok(sums)
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("day of month fits");
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("month fits");
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-08-21T00:00:00Z` for a Unix time.
fn rfc3339(epoch: u64) -> String {
    let secs = i64::try_from(epoch).unwrap_or(i64::MAX);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Fails with the command to run when the kernel object would not be built.
fn require_ebpf_build() -> Result<()> {
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        bail!("AYA_BUILD_SKIP is set: a release build without its kernel programs is no release");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_dates_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 8, 20), 20_685);
        for days in [-1, 0, 59, 60, 11_016, 20_685, 20_785] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_787_184_000 + 3_723), "2026-08-20T01:02:03Z");
    }

    #[test]
    fn remaps_the_target_directory_last() {
        let flags = remap_flags(
            Path::new("/src/pthwatch"),
            Some(Path::new("/root/.cargo")),
            Path::new("/src/pthwatch/target/repro-a"),
        );
        assert_eq!(
            flags,
            [
                "--remap-path-prefix=/src/pthwatch=/pthwatch",
                "--remap-path-prefix=/root/.cargo=/cargo",
                "--remap-path-prefix=/src/pthwatch/target/repro-a=/target",
            ]
        );
        assert_eq!(remap_flags(Path::new("/w"), None, Path::new("/t")).len(), 2);
    }

    #[test]
    fn recognises_sha256_hex() {
        assert!(is_sha256(&"ab".repeat(32)));
        assert!(!is_sha256(&"AB".repeat(32)));
        assert!(!is_sha256("abc"));
    }
}
