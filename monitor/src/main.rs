//! pthwatch: watches Python interpreter start-up and stops startup hooks (`.pth`,
//! `sitecustomize`, `usercustomize`, `.start`) that read credentials and reach the network.

mod alert;
mod btf;
mod check;
mod cli;
mod config;
mod credentials;
mod daemon;
mod detect;
mod eventlog;
mod events;
mod hookbook;
mod inventory;
mod metrics;
mod notify;
mod proctable;
mod run;
mod scan;
mod sensors;
mod sink;
mod trace;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
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
