//! apt, used two ways: `apt-get install` for the host tools QEMU runs with, and
//! `apt-get download` + `dpkg-deb -x` into a cache for what only the guest uses (its
//! kernels, busybox), so those never touch the host's system.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow};

use crate::util::{is_root, output, run_inherit};

/// `apt-cache show` for apt's candidate of `package` (empty when apt knows none).
pub fn show(package: &str) -> Result<String> {
    output(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions", package])
            .env("LC_ALL", "C"),
    )
}

/// Like [`show`], refreshing the package lists once when apt knows nothing of `package`.
pub fn show_refreshing(package: &str) -> Result<String> {
    if let Ok(text) = show(package)
        && !text.trim().is_empty()
    {
        return Ok(text);
    }
    eprintln!("xtask: apt knows no {package}; refreshing the package lists");
    run_inherit(
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update (as root)")?;
    let text = show(package)?;
    if text.trim().is_empty() {
        anyhow::bail!("apt knows no {package}");
    }
    Ok(text)
}

/// A field of the first record of `apt-cache show` output.
pub fn field<'a>(show: &'a str, key: &str) -> Option<&'a str> {
    show.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// A package at one version, as apt names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
}

impl Package {
    /// apt's candidate of `name`.
    pub fn candidate(name: &str) -> Result<Self> {
        let text = show_refreshing(name)?;
        let version = field(&text, "Version")
            .ok_or_else(|| anyhow!("`apt-cache show {name}` printed no Version"))?;
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    /// Its directory in a cache: one per package and version.
    pub fn cache_dir(&self, cache: &Path) -> PathBuf {
        let version = self.version.replace(':', "_");
        cache.join(format!("{}_{version}", self.name))
    }
}

const READY: &str = ".ready";

/// The package was unpacked (and post-processed) completely before.
pub fn is_ready(cache: &Path, package: &Package) -> bool {
    package.cache_dir(cache).join(READY).is_file()
}

/// The package's files, unpacked under `<cache dir>/root`; downloads and unpacks them
/// unless that was done before. Returns the root and whether it was fetched just now.
pub fn unpack(cache: &Path, package: &Package) -> Result<(PathBuf, bool)> {
    let dir = package.cache_dir(cache);
    let root = dir.join("root");
    if is_ready(cache, package) {
        return Ok((root, false));
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let download = dir.join("download");
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    let mut get = Command::new("apt-get");
    get.args(["-q", "download"]);
    if is_root() {
        // apt's `_apt` sandbox user cannot write to a root-owned directory: say so
        // rather than have apt warn about it.
        get.args(["-o", "APT::Sandbox::User=root"]);
    }
    run_inherit(
        get.arg(format!("{}={}", package.name, package.version))
            .current_dir(&download),
    )
    .with_context(|| format!("downloading {} {}", package.name, package.version))?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", download.display()))?;
    run_inherit(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_dir_all(&download)?;
    Ok((root, true))
}

/// Marks an unpacked package as complete (after any post-processing of its files).
pub fn mark_ready(cache: &Path, package: &Package) -> Result<()> {
    let dir = package.cache_dir(cache);
    fs::write(
        dir.join(READY),
        format!("{} {}\n", package.name, package.version),
    )
    .with_context(|| format!("writing {}", dir.join(READY).display()))
}

/// Installs, with `apt-get install --no-install-recommends`, the packages of the tools
/// (`(program, package)`) that are not on `PATH`. Returns what it installed.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<Vec<String>> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(program, _)| which::which(program).is_err())
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !is_root() {
        anyhow::bail!(
            "missing: {}; install them (`apt-get install {}`) or rerun as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    let install = |names: &[&str]| {
        run_inherit(
            Command::new("apt-get")
                .args(["-q", "install", "-y", "--no-install-recommends"])
                .args(names)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install(&missing).is_err() {
        eprintln!("xtask: apt-get install failed; refreshing the package lists and retrying");
        run_inherit(
            Command::new("apt-get")
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        install(&missing)?;
    }
    Ok(missing.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_the_first_record_only() {
        let show = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nDepends: libc6\n\n\
                    Package: busybox-static\nVersion: 1:1.30\n";
        assert_eq!(field(show, "Version"), Some("1:1.35.0-4+deb12u1+b1"));
        assert_eq!(field(show, "Depends"), Some("libc6"));
        assert_eq!(field(show, "Source"), None);
    }

    #[test]
    fn cache_dirs_are_per_version() {
        let p = Package {
            name: "busybox-static".to_owned(),
            version: "1:1.35.0-4".to_owned(),
        };
        assert_eq!(
            p.cache_dir(Path::new("/c")),
            Path::new("/c/busybox-static_1_1.35.0-4")
        );
    }
}
