//! `cargo xtask build`: the release binary, with the kernel programs built by
//! `monitor/build.rs` (aya-build, nightly, bpf-linker).
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::util::{cargo, run_inherit, target_dir};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<PathBuf> {
    let bin = build_release()?;
    // stdout carries only the path, so `$(cargo xtask build)` works.
    println!("{}", bin.display());
    Ok(bin)
}

/// `cargo build --release -p monitor`; returns the absolute path of `pthwatch`.
pub fn build_release() -> Result<PathBuf> {
    preflight()?;
    run_inherit(cargo().args([
        "build",
        "--release",
        "--package",
        "monitor",
        "--bin",
        "pthwatch",
    ]))?;
    release_binary()
}

/// Where the release `pthwatch` is; an error if it was not built.
pub fn release_binary() -> Result<PathBuf> {
    let bin = target_dir()?.join("release").join("pthwatch");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// Fails early, with what to do, when the eBPF build cannot work (aya-build's own error is
/// buried in build-script warnings).
pub fn preflight() -> Result<()> {
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        eprintln!(
            "xtask: AYA_BUILD_SKIP is set: the kernel programs are not built, the binary cannot load sensors"
        );
        return Ok(());
    }
    if which::which("bpf-linker").is_err() {
        bail!("bpf-linker is not on PATH: run `cargo xtask setup` first");
    }
    if which::which("rustup").is_err() {
        bail!(
            "rustup is not on PATH: the eBPF build drives the nightly toolchain through `rustup run nightly`"
        );
    }
    Ok(())
}
