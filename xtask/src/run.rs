//! `cargo xtask run -- <args>`: release build, then exec `pthwatch <args>`, so signals
//! (Ctrl-C, SIGTERM) reach the daemon directly.
use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::build::build_release;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for `pthwatch`, e.g. `-- run --mode alert`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

pub fn run(args: &Args) -> Result<()> {
    let bin = build_release()?;
    let mut cmd = Command::new(&bin);
    cmd.args(&args.args);
    let shown: Vec<_> = args.args.iter().map(|a| a.to_string_lossy()).collect();
    eprintln!("+ {} {}", bin.display(), shown.join(" "));
    // exec only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not exec {}", bin.display()))
}
