//! `cargo xtask setup`: everything building and testing pthwatch needs, installed only
//! when missing, so a second run takes seconds and changes nothing.
//!
//! Steps, one line of output each: the nightly toolchain (it must already be there: rustup
//! cannot download toolchains on machines that reach only package registries), its
//! `rust-src`, Debian packages the tests and benchmarks use, `bpf-linker` built from
//! source against the nightly toolchain's own LLVM, and the kernel mounts (tracefs, bpffs,
//! securityfs). Then two read-only kernel checks (BTF, BPF LSM).
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{cargo, fmt_duration, install_bin_dir, is_root, output, run_inherit};

#[derive(clap::Args)]
pub struct Args {
    /// Rebuild bpf-linker even when the installed one runs (e.g. after a nightly update
    /// changed the LLVM version).
    #[arg(long)]
    reinstall_bpf_linker: bool,
}

/// Debian packages: (name, required, why).
const PACKAGES: &[(&str, bool, &str)] = &[
    (
        "curl",
        true,
        "tests and benchmarks: HTTP clients as exfiltration stand-ins",
    ),
    ("python3", true, "the interpreter whose start-up is watched"),
    (
        "python3-venv",
        true,
        "tests build real virtual environments with .pth files",
    ),
    ("iproute2", true, "`ip netns` test hosts, `ss`"),
    (
        "python3-yaml",
        true,
        "tests read the Kubernetes manifests (PyYAML)",
    ),
    (
        "perl",
        true,
        "a non-interpreter stand-in (an indexer) in the tests",
    ),
    ("systemd", false, "systemd-analyze verify of the unit"),
    ("procps", true, "ps/pgrep for process-tree checks"),
    ("util-linux", true, "mount, unshare, setpriv"),
    ("kmod", true, "modprobe/lsmod for kernel feature checks"),
    (
        "gcc",
        true,
        "linker for cargo builds (bpf-linker from source)",
    ),
    ("libc6-dev", true, "C runtime for linking"),
    ("g++", true, "libFuzzer's C++ runtime (`cargo xtask fuzz`)"),
    (
        "bpftool",
        false,
        "inspecting loaded programs and maps while debugging",
    ),
];

const MOUNTS: &[(&str, &str)] = &[
    ("tracefs", "/sys/kernel/tracing"),
    ("bpf", "/sys/fs/bpf"),
    ("securityfs", "/sys/kernel/security"),
];

/// The outcome of one step.
enum Status {
    Ok(String),
    Installed(String),
    Warn(String),
}

#[derive(Default)]
struct Report {
    errors: usize,
    warnings: usize,
}

impl Report {
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(Status, T)>) -> Option<T> {
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        let took = if took.as_secs() >= 1 {
            format!(" [{}]", fmt_duration(took))
        } else {
            String::new()
        };
        let detail = |d: &str| {
            if d.is_empty() {
                String::new()
            } else {
                format!(" ({d})")
            }
        };
        match result {
            Ok((status, value)) => {
                match status {
                    Status::Ok(d) => println!("{name:<22} ok{}{took}", detail(&d)),
                    Status::Installed(d) => println!("{name:<22} installed{}{took}", detail(&d)),
                    Status::Warn(d) => {
                        self.warnings += 1;
                        println!("{name:<22} warning: {d}{took}");
                    }
                }
                Some(value)
            }
            Err(e) => {
                self.errors += 1;
                println!("{name:<22} error: {e:#}{took}");
                None
            }
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let root = is_root();
    let mut report = Report::default();
    if !root {
        println!(
            "{:<22} warning: not root: Debian packages and kernel mounts are only checked; \
             rerun `cargo xtask setup` as root to install or mount them",
            "privileges"
        );
        report.warnings += 1;
    }

    let nightly = report.step("nightly toolchain", || {
        let n = nightly()?;
        Ok((
            Status::Ok(format!("{}, LLVM {}", n.release, n.llvm_major)),
            n,
        ))
    });
    if nightly.is_some() {
        report.step("rust-src (nightly)", || rust_src().map(|s| (s, ())));
    }
    let mut apt = apt_packages(root);
    apt.sort_by_key(|(name, _)| PACKAGES.iter().position(|p| p.0 == *name));
    for (name, result) in apt {
        report.step(&format!("apt {name}"), || result.map(|s| (s, ())));
    }
    match &nightly {
        Some(n) => {
            report.step("bpf-linker", || {
                bpf_linker(n, args.reinstall_bpf_linker).map(|s| (s, ()))
            });
        }
        None => {
            report.step("bpf-linker", || -> Result<(Status, ())> {
                bail!("skipped: it is built against the nightly toolchain's LLVM, which is missing")
            });
        }
    }
    for &(fstype, target) in MOUNTS {
        let step = format!("mount {fstype}");
        report.step(&step, || {
            mount_fs(fstype, Path::new(target), root).map(|s| (s, ()))
        });
    }
    report.step("kernel BTF", || kernel_btf().map(|s| (s, ())));
    report.step("BPF LSM", || bpf_lsm().map(|s| (s, ())));

    println!(
        "setup: {} error(s), {} warning(s) in {}",
        report.errors,
        report.warnings,
        fmt_duration(start.elapsed())
    );
    if report.errors > 0 {
        bail!("setup incomplete: fix the errors above and rerun `cargo xtask setup`");
    }
    Ok(())
}

/// The nightly toolchain, as the eBPF build uses it (`rustup run nightly`).
struct Nightly {
    release: String,
    llvm_major: u32,
}

fn rustup_nightly(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", program]);
    cmd
}

fn nightly() -> Result<Nightly> {
    let out = output(rustup_nightly("rustc").arg("-vV")).map_err(|e| {
        anyhow!(
            "{e:#}\n    the eBPF build needs a nightly toolchain: `rustup toolchain install nightly` \
             (it cannot be downloaded on machines that reach only package registries: it must be \
             preinstalled there)"
        )
    })?;
    parse_rustc_vv(&out)
}

fn parse_rustc_vv(out: &str) -> Result<Nightly> {
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .ok_or_else(|| anyhow!("`rustc -vV` printed no `{key}` line"))
    };
    let release = field("release:")?.to_owned();
    let llvm = field("LLVM version:")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("unparsable LLVM version `{llvm}`"))?;
    Ok(Nightly {
        release,
        llvm_major,
    })
}

fn rust_src() -> Result<Status> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.trim().starts_with("rust-src-"))
    {
        return Ok(Status::Ok(String::new()));
    }
    run_inherit(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("the eBPF build rebuilds `core` from rust-src (-Z build-std)")?;
    Ok(Status::Installed(String::new()))
}

fn dpkg_installed(name: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .context("could not run dpkg-query (is this Debian or Ubuntu?)")?;
    // Exit status 1 with "no packages found" means never installed.
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn apt_get_install(names: &[&str]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "install", "-y", "--no-install-recommends"])
        .args(names)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(&mut cmd)
}

/// Installs the missing packages in one `apt-get install`; refreshes the package lists
/// only when that fails (missing or stale lists), then falls back to one package at a time
/// so an unavailable optional package cannot block the others.
fn apt_packages(root: bool) -> Vec<(&'static str, Result<Status>)> {
    let mut missing = Vec::new();
    let mut results = Vec::new();
    for &(name, required, _) in PACKAGES {
        match dpkg_installed(name) {
            Ok(true) => results.push((name, Ok(Status::Ok(String::new())))),
            Ok(false) => missing.push((name, required)),
            Err(e) => results.push((name, Err(e))),
        }
    }
    if missing.is_empty() {
        return results;
    }
    if !root {
        for (name, required) in missing {
            let msg =
                format!("missing; rerun `cargo xtask setup` as root, or `apt-get install {name}`");
            results.push((
                name,
                if required {
                    Err(anyhow!(msg))
                } else {
                    Ok(Status::Warn(msg))
                },
            ));
        }
        return results;
    }
    let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
    let start = Instant::now();
    let mut batch = apt_get_install(&names);
    if batch.is_err() {
        eprintln!("xtask: apt-get install failed; refreshing the package lists and retrying");
        batch = run_inherit(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .and_then(|()| apt_get_install(&names));
    }
    let took = fmt_duration(start.elapsed());
    for (name, required) in missing {
        let result = match &batch {
            Ok(()) => Ok(()),
            Err(_) => apt_get_install(&[name]),
        };
        let status = match result {
            Ok(()) if dpkg_installed(name).unwrap_or(false) => {
                Ok(Status::Installed(format!("apt-get, {took}")))
            }
            Ok(()) => Err(anyhow!(
                "apt-get reported success but {name} is not installed"
            )),
            Err(e) if !required => Ok(Status::Warn(format!("not available here, skipped ({e:#})"))),
            Err(e) => Err(e.context(format!(
                "installing {name}: check the apt sources and the network"
            ))),
        };
        results.push((name, status));
    }
    results
}

fn bpf_linker(nightly: &Nightly, reinstall: bool) -> Result<Status> {
    if !reinstall && let Ok(path) = which::which("bpf-linker") {
        match output(Command::new(&path).arg("--version")) {
            Ok(v) => return Ok(Status::Ok(format!("{} at {}", v.trim(), path.display()))),
            Err(e) => eprintln!(
                "xtask: {} does not run ({e:#}); rebuilding it",
                path.display()
            ),
        }
    }
    let sysroot = output(rustup_nightly("rustc").args(["--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    let linked = link_libllvm(&sysroot.join("lib"))?;
    let feature = format!("llvm-{}", nightly.llvm_major);
    eprintln!(
        "xtask: building bpf-linker ({feature}) against {} (about 70 s)",
        sysroot.display()
    );
    let mut cmd = cargo();
    cmd.args([
        "install",
        "bpf-linker",
        "--force",
        "--no-default-features",
        "--features",
    ])
    .arg(&feature)
    .env("LLVM_PREFIX", &sysroot)
    // Outside the workspace, so its .cargo/config.toml cannot change the build.
    .current_dir(std::env::temp_dir());
    run_inherit(&mut cmd).with_context(|| {
        format!(
            "building bpf-linker with `{feature}` failed: does bpf-linker have that feature for \
             the nightly toolchain's LLVM {}?",
            nightly.llvm_major
        )
    })?;
    let bin = install_bin_dir()
        .map(|d| d.join("bpf-linker"))
        .filter(|p| p.is_file())
        .or_else(|| which::which("bpf-linker").ok())
        .context("bpf-linker installed but not found in cargo's bin directory")?;
    let version = output(Command::new(&bin).arg("--version"))?;
    let mut detail = format!("{} at {}", version.trim(), bin.display());
    if linked {
        detail.push_str(", libLLVM.so symlink created");
    }
    Ok(Status::Installed(detail))
}

/// `lib/libLLVM.so -> libLLVM.so.<ver>-rust-<release>` in the nightly sysroot, so the
/// bpf-linker build can link `-lLLVM`. Returns whether the link was (re)created.
fn link_libllvm(lib: &Path) -> Result<bool> {
    let mut candidates: Vec<String> = fs::read_dir(lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("libLLVM.so."))
        .collect();
    candidates.sort();
    let target = candidates.pop().ok_or_else(|| {
        anyhow!(
            "no libLLVM.so.* in {}: is the nightly toolchain complete?",
            lib.display()
        )
    })?;
    let link = lib.join("libLLVM.so");
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(&target)) {
        return Ok(false);
    }
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing stale {}", link.display()))?;
    }
    symlink(&target, &link).with_context(|| format!("creating {} -> {target}", link.display()))?;
    Ok(true)
}

/// Mount points by file system type, from `/proc/self/mounts`.
fn mounted(fstype: &str, target: &Path) -> Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut f = line.split(' ');
        let (_dev, point, ty) = (f.next(), f.next(), f.next());
        ty == Some(fstype) && point.is_some_and(|p| Path::new(&unescape_mount(p)) == target)
    }))
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_fs(fstype: &str, target: &Path, root: bool) -> Result<Status> {
    if mounted(fstype, target)? {
        return Ok(Status::Ok(target.display().to_string()));
    }
    if !root {
        return Ok(Status::Warn(format!(
            "not mounted at {}; rerun `cargo xtask setup` as root (pthwatch also mounts it at start)",
            target.display()
        )));
    }
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let c_type = CString::new(fstype)?;
    let c_target = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "mount -t {fstype} {fstype} {}: {e} (is {fstype} enabled in this kernel? in a container, \
             run it privileged)",
            target.display()
        );
    }
    Ok(Status::Installed(format!(
        "mounted at {}",
        target.display()
    )))
}

fn kernel_btf() -> Result<Status> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    if path.is_file() {
        Ok(Status::Ok(path.display().to_string()))
    } else {
        bail!(
            "{} missing: pthwatch reads kernel structure offsets from BTF; use a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y",
            path.display()
        )
    }
}

fn bpf_lsm() -> Result<Status> {
    let path = Path::new("/sys/kernel/security/lsm");
    let Ok(lsms) = fs::read_to_string(path) else {
        return Ok(Status::Warn(format!(
            "{} unreadable (securityfs not mounted?)",
            path.display()
        )));
    };
    let lsms = lsms.trim().trim_end_matches(',');
    if lsms.split(',').any(|l| l == "bpf") {
        Ok(Status::Ok(format!("active: {lsms}")))
    } else {
        Ok(Status::Warn(format!(
            "not active (active: {lsms}); boot with `lsm={lsms},bpf` for the LSM hooks; \
             pthwatch falls back to its tracepoint sensors"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nightly_version() {
        let out = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                   release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        let n = parse_rustc_vv(out).unwrap();
        assert_eq!(n.release, "1.97.0-nightly");
        assert_eq!(n.llvm_major, 22);
        assert!(parse_rustc_vv("release: 1\n").is_err());
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_mount("/sys/fs/bpf"), "/sys/fs/bpf");
        assert_eq!(unescape_mount(r"/odd\04"), r"/odd\04");
    }

    #[test]
    fn links_libllvm_once() {
        let dir = std::env::temp_dir().join(format!("xtask-llvm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("libLLVM.so.22.1-rust-1.97.0-nightly"), b"").unwrap();
        fs::write(dir.join("libLLVM-22-rust-1.97.0-nightly.so"), b"").unwrap();
        assert!(link_libllvm(&dir).unwrap());
        assert!(!link_libllvm(&dir).unwrap());
        assert_eq!(
            fs::read_link(dir.join("libLLVM.so")).unwrap(),
            Path::new("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
