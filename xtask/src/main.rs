//! `cargo xtask <command>`: the project's developer and CI entry points.
//!
//! - `setup`: install and check what building and testing need (idempotent).
//! - `build`: release build of the daemon (eBPF included).
//! - `test`: release build, unit tests, then the root-only integration tests.
//! - `run`: release build, then exec `pthwatch` with the given arguments.
//! - `package`: a Debian package of the release build.
//! - `bench`: pthwatch's overhead against no monitor, auditd and bpftrace (root).
//! - `vm-test`: the integration tests on other kernels (Debian 6.1, 6.12) under QEMU.
//! - `fuzz`: the cargo-fuzz targets in `fuzz/`, each for a fixed time.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod bench;
mod build;
mod fuzz;
mod package;
mod run;
mod setup;
mod test;
mod util;
mod vm;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "pthwatch developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install and check the toolchain, system packages and kernel mounts (idempotent).
    Setup(setup::Args),
    /// Build the release binary (kernel programs included) and print its path.
    Build(build::Args),
    /// Build, run the unit tests, then the root-only integration tests.
    Test(test::Args),
    /// Build the release binary and exec it with the arguments after `--`.
    Run(run::Args),
    /// A Debian package (`.deb`) of the release build: binary, systemd unit, default
    /// configuration; prints its path.
    Package(package::Args),
    /// Measure pthwatch's overhead against no monitor, auditd and bpftrace (root); the
    /// machine is restored afterwards.
    Bench(bench::Args),
    /// Supply chain: `audit` (cargo-deny, offline), `sbom`, `release`, `repro`.
    #[command(flatten)]
    SupplyChain(audit::Command),
    /// Run the integration tests on other kernels (Debian 6.1 without BPF LSM, 6.12 with
    /// it), each booted under QEMU/KVM, or on `host`.
    VmTest(vm::Args),
    /// Run the fuzz targets in `fuzz/` (installs cargo-fuzz if missing; nightly);
    /// non-zero on a crash, with the artifact's path.
    Fuzz(fuzz::Args),
}

fn main() -> ExitCode {
    util::ensure_cargo_bin_on_path();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Build(args) => build::run(&args).map(|_| ()),
        Command::Test(args) => test::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Package(args) => package::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::SupplyChain(command) => audit::run(&command),
        Command::VmTest(args) => vm::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
