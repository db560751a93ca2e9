//! pthwatch: watches Python interpreter start-up and stops startup hooks (`.pth`,
//! `sitecustomize`, `usercustomize`, `.start`) that read credentials and reach the network.
//!
//! The `pthwatch` binary is [`main`]. The library exists so that the parsers of untrusted
//! input can be driven from outside the crate (the fuzz targets in `fuzz/`); only those
//! are public:
//!
//! - [`inventory`]: reading and classifying startup hooks (`.pth` lines, `sitecustomize`);
//! - [`config`]: the configuration file ([`config::Config::from_toml`]);
//! - [`events`]: decoding ring-buffer records;
//! - [`eventlog_format`]: one line of the event log, parsed and encoded.
//!
//! Everything else is the daemon's and stays private.

mod alert;
mod btf;
mod check;
mod cli;
pub mod config;
mod containers;
mod credentials;
mod daemon;
mod detect;
mod eventlog;
pub mod events;
mod hookbook;
pub mod inventory;
mod metrics;
mod notify;
mod probation;
mod proctable;
mod run;
mod scan;
mod sensors;
mod sink;
mod sockdiag;
mod trace;
mod watch;

#[cfg(test)]
mod fuzz_regressions;

use std::process::ExitCode;

use clap::Parser as _;

/// The event log's line format (the rest of the event log is the daemon's).
pub mod eventlog_format {
    pub use crate::eventlog::{GENESIS, Kind, Parsed, Record, encode, parse_line};
}

/// The `pthwatch` command line: parses the arguments, runs the command and returns its
/// exit status (2 on an error, which is printed).
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli);
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pthwatch: {e:#}");
            ExitCode::from(2)
        }
    }
}
