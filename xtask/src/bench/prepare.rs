//! Setup before measuring: the comparison monitors' Debian packages (installed when
//! missing, optional: a failure makes that condition "unavailable"), and the release
//! binaries (pthwatch, bench-load).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use super::{condition::Condition, procstat::pids_named};
use crate::{
    build::build_release,
    util::{cargo, output, run_inherit, target_dir},
};

pub struct Options<'a> {
    pub conditions: &'a [Condition],
    pub install: bool,
    pub pthwatch: Option<PathBuf>,
    pub rebuild: bool,
}

pub struct Prepared {
    pub pthwatch: PathBuf,
    pub bench_load: PathBuf,
    pub notes: Vec<String>,
}

pub fn prepare(o: &Options<'_>) -> Result<Prepared> {
    let mut notes = Vec::new();
    let mut packages = Vec::new();
    if o.conditions.contains(&Condition::Auditd) {
        packages.push("auditd");
    }
    if o.conditions.contains(&Condition::Bpftrace) || o.conditions.contains(&Condition::Floor) {
        packages.push("bpftrace");
    }
    if o.install {
        install_packages(&packages, &mut notes);
    }
    let pthwatch = match &o.pthwatch {
        Some(p) => {
            if !p.is_file() {
                bail!("--pthwatch {}: no such file", p.display());
            }
            p.clone()
        }
        None => {
            let default = target_dir()?.join("release").join("pthwatch");
            if o.rebuild || !default.is_file() {
                build_release()?
            } else {
                eprintln!(
                    "bench: using {} as built (--rebuild to build it again)",
                    default.display()
                );
                default
            }
        }
    };
    run_inherit(cargo().args(["build", "--release", "--package", "bench-load"]))?;
    let bench_load = target_dir()?.join("release").join("bench-load");
    if !bench_load.is_file() {
        bail!("{} is missing after the build", bench_load.display());
    }
    Ok(Prepared {
        pthwatch,
        bench_load,
        notes,
    })
}

fn installed(name: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_ok_and(|s| s.trim() == "install ok installed")
}

fn apt_install(names: &[&str]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "install", "-y", "--no-install-recommends"])
        .args(names)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(&mut cmd)
}

/// Installs the missing packages (idempotent). Never fails: what could not be installed
/// is noted, and its condition reports itself unavailable.
fn install_packages(names: &[&str], notes: &mut Vec<String>) {
    let missing: Vec<&str> = names.iter().copied().filter(|n| !installed(n)).collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("bench: installing {}", missing.join(" "));
    let auditd_before = pids_named("auditd");
    let mut result = apt_install(&missing);
    if result.is_err() {
        result = run_inherit(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .and_then(|()| apt_install(&missing));
    }
    if let Err(e) = result {
        // One at a time, so one unavailable package does not block the other.
        for name in &missing {
            if apt_install(&[name]).is_err() {
                notes.push(format!("apt-get install {name} failed: {e:#}"));
            }
        }
    }
    if missing.contains(&"auditd") {
        stop_auditd_started_by_apt(&auditd_before, notes);
    }
}

/// Debian's auditd package starts and enables its service where systemd runs. The bench
/// starts its own auditd when it needs one, so a service the install started is stopped
/// (and disabled) again: the host keeps running without auditd, as before.
fn stop_auditd_started_by_apt(before: &[u32], notes: &mut Vec<String>) {
    let new: Vec<u32> = pids_named("auditd")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if new.is_empty() {
        return;
    }
    if Path::new("/run/systemd/system").is_dir()
        && output(Command::new("systemctl").args(["disable", "--now", "auditd"])).is_ok()
    {
        notes.push(
            "installing auditd started its service: stopped and disabled again \
             (`systemctl enable --now auditd` to keep it)"
                .into(),
        );
        return;
    }
    for pid in new {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: plain signal to a process we just found by name.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
    notes.push("installing auditd started it: stopped again".into());
}
