//! `cargo xtask vm-test [--kernel NAME]...`: pthwatch's integration tests on other kernels.
//!
//! Each kernel of the matrix is one of Debian's own image packages, booted under QEMU
//! (KVM when `/dev/kvm` works, software emulation otherwise) with a small initramfs. The
//! guest reads the host's `/usr`, `/etc` and the workspace over read-only 9p, so it runs
//! the very test binaries, `pthwatch` and Python of the host, and has no network device.
//! `host` runs the same binaries on the running kernel, without a VM.
//!
//! - `kernels`: the matrix, and fetching a kernel into `target/vm/kernels/`.
//! - `binaries`: building `pthwatch` and the integration test binaries on the host.
//! - `apt`: host tools (`apt-get install`) and guest packages (`apt-get download`).
//! - `initramfs`: the cpio archive; `guest`: its `/init`, the test script, the command line.
//! - `qemu`: the QEMU command; `stream`: running it with a deadline; `console`: reading it.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};

use crate::util::{fmt_duration, is_root, target_dir, workspace_root};

mod apt;
mod binaries;
mod console;
mod guest;
mod initramfs;
mod kernels;
mod qemu;
mod stream;

use console::RunReport;
use guest::TestBinary;
use kernels::KernelSpec;
use qemu::{Accel, AccelChoice};
use stream::Ended;

const HOST: &str = "host";
const BUSYBOX: &str = "busybox-static";
/// How long a KVM guest may take to print its "booted" line.
const KVM_BOOT_LIMIT: Duration = Duration::from_secs(90);

/// Host programs the VM runs need, with the Debian package of each.
const HOST_TOOLS: &[(&str, &str)] = &[
    (qemu::QEMU, "qemu-system-x86"),
    ("depmod", "kmod"),
    ("dpkg-deb", "dpkg"),
    ("xz", "xz-utils"),
];

#[derive(clap::Args)]
pub struct Args {
    /// A kernel to test on: `6.1` (no BPF LSM), `6.12` (BPF LSM on) or `host` (the running
    /// kernel, no VM). Repeatable; default: 6.1 and 6.12.
    #[arg(long = "kernel", value_name = "NAME", value_parser = parse_kernel)]
    kernels: Vec<String>,
    /// Print what would run (packages, cache, command lines) and stop.
    #[arg(long)]
    list: bool,
    /// Only this integration test binary (`sensors`, `detection`...). Repeatable.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Run only the tests whose name contains SUBSTRING.
    #[arg(long, value_name = "SUBSTRING")]
    filter: Option<String>,
    /// Time limit for each kernel (boot, tests, power-off), in minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 30)]
    timeout: u64,
    /// How the guest CPU runs: `kvm`, `tcg` (software emulation), or `auto` (KVM when
    /// /dev/kvm can boot Debian's kernels, else tcg with a warning).
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelChoice,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    memory: u32,
}

fn parse_kernel(name: &str) -> Result<String, String> {
    if name == HOST || kernels::spec(name).is_some() {
        return Ok(name.to_owned());
    }
    let known: Vec<&str> = kernels::KERNELS.iter().map(|k| k.name).collect();
    Err(format!(
        "unknown kernel `{name}`: expected one of {}, {HOST}",
        known.join(", ")
    ))
}

/// A kernel of this run.
#[derive(Clone, Copy)]
enum Target {
    Vm(&'static KernelSpec),
    Host,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Vm(spec) => spec.name,
            Self::Host => HOST,
        }
    }
}

fn targets(names: &[String]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let names: Vec<&str> = if names.is_empty() {
        kernels::KERNELS.iter().map(|k| k.name).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    for name in names {
        if out.iter().any(|t| t.name() == name) {
            continue;
        }
        out.push(match kernels::spec(name) {
            Some(spec) => Target::Vm(spec),
            None => Target::Host,
        });
    }
    out
}

/// Where everything of `vm-test` lives: `target/vm/`.
struct Dirs {
    kernels: PathBuf,
    packages: PathBuf,
    runs: PathBuf,
}

impl Dirs {
    fn new() -> Result<Self> {
        let base = target_dir()?.join("vm");
        Ok(Self {
            kernels: base.join("kernels"),
            packages: base.join("packages"),
            runs: base.join("runs"),
        })
    }
}

/// One kernel's outcome.
struct Outcome {
    target: &'static str,
    /// Package and version, or the host's release.
    what: String,
    took: Duration,
    report: RunReport,
    /// Why the run failed, if it did.
    failure: Option<String>,
    log: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let targets = targets(&args.kernels);
    let dirs = Dirs::new()?;
    let (mut accel, no_kvm) = Accel::detect(args.accel);
    if args.list {
        return list(&targets, &dirs, accel, no_kvm.as_deref(), args);
    }
    let vms = targets.iter().any(|t| matches!(t, Target::Vm(_)));
    if targets.iter().any(|t| matches!(t, Target::Host)) && !is_root() {
        bail!("`--kernel host` loads eBPF programs into this kernel: rerun as root");
    }
    if vms {
        let installed = apt::ensure_tools(HOST_TOOLS)?;
        if !installed.is_empty() {
            eprintln!("xtask: installed {}", installed.join(", "));
        }
        if let Some(why) = &no_kvm {
            eprintln!(
                "xtask: warning: no KVM ({why}): the guests run under software emulation, \
                 many times slower; raise --timeout (now {} min) if they run out of time",
                args.timeout
            );
        }
    }

    let (pthwatch, binaries) = binaries::build(&args.tests)?;
    stream::catch_interrupts();
    let mut outcomes = Vec::new();
    for target in targets {
        if stream::interrupted() {
            break;
        }
        let t = Instant::now();
        eprintln!("\n=== vm-test {}", target.name());
        let outcome = match target {
            Target::Vm(spec) => run_vm(spec, &dirs, &mut accel, &pthwatch, &binaries, args)
                .unwrap_or_else(|e| failed_before_start(spec.name, &e)),
            Target::Host => run_host(&dirs, &pthwatch, &binaries, args)
                .unwrap_or_else(|e| failed_before_start(HOST, &e)),
        };
        let outcome = Outcome {
            took: t.elapsed(),
            ..outcome
        };
        eprintln!(
            "=== vm-test {}: {} in {}",
            outcome.target,
            if outcome.failure.is_none() {
                "ok"
            } else {
                "FAILED"
            },
            fmt_duration(outcome.took)
        );
        outcomes.push(outcome);
    }
    summary(&outcomes, start.elapsed())
}

fn failed_before_start(target: &'static str, e: &anyhow::Error) -> Outcome {
    Outcome {
        target,
        what: String::new(),
        took: Duration::ZERO,
        report: RunReport::default(),
        failure: Some(format!("{e:#}")),
        log: None,
    }
}

/// `--list`: what each kernel would be, without downloading or building anything.
fn list(
    targets: &[Target],
    dirs: &Dirs,
    accel: Accel,
    no_kvm: Option<&str>,
    args: &Args,
) -> Result<()> {
    for target in targets {
        match target {
            Target::Vm(spec) => {
                let package = match kernels::resolve(spec) {
                    Ok(p) => p,
                    Err(e) => {
                        println!("{:<5} error: {e:#}", spec.name);
                        continue;
                    }
                };
                let cached = match kernels::cached(&dirs.kernels, &package) {
                    Some(k) => format!("cached: {}", k.vmlinuz.display()),
                    None => "not cached: `apt-get download` on first use".to_owned(),
                };
                println!(
                    "{:<5} {} {} ({cached})\n      {}\n      append: {}",
                    spec.name,
                    package.name,
                    package.version,
                    spec.why,
                    guest::cmdline(&spec.lsm())
                );
            }
            Target::Host => {
                let lsm = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
                println!(
                    "{HOST:<5} {} (the running kernel, no VM) lsm={}",
                    host_release(),
                    lsm.trim()
                );
            }
        }
    }
    let qemu = which::which(qemu::QEMU).map_or_else(
        |_| "not installed (qemu-system-x86 is installed on first use)".to_owned(),
        |p| p.display().to_string(),
    );
    println!(
        "qemu: {qemu}\naccel: {}{}\nguest: {} MiB, {} CPUs, {} min per kernel\ncache: {}",
        accel.name(),
        no_kvm.map_or(String::new(), |w| format!(" ({w})")),
        args.memory,
        guest_cpus(),
        args.timeout,
        dirs.kernels.display()
    );
    Ok(())
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |r| r.trim().to_owned())
}

/// Two CPUs, or one on a single-CPU host.
fn guest_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get().min(2)).unwrap_or(1))
}

fn tests_script(pthwatch: &Path, binaries: &[TestBinary], args: &Args) -> String {
    guest::tests_script(&guest::TestRun {
        binaries,
        pthwatch,
        cwd: &workspace_root().join("tests"),
        filter: args.filter.as_deref(),
    })
}

/// The guest's busybox, from Debian's static build, unpacked into the cache.
fn busybox(dirs: &Dirs) -> Result<PathBuf> {
    let package = apt::Package::candidate(BUSYBOX)?;
    let (root, fresh) = apt::unpack(&dirs.packages, &package)?;
    if fresh {
        apt::mark_ready(&dirs.packages, &package)?;
    }
    let bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{BUSYBOX} has no bin/busybox"))?;
    Ok(bin)
}

fn run_vm(
    spec: &'static KernelSpec,
    dirs: &Dirs,
    accel: &mut Accel,
    pthwatch: &Path,
    binaries: &[TestBinary],
    args: &Args,
) -> Result<Outcome> {
    let package = kernels::resolve(spec)?;
    let (kernel, fresh) = kernels::fetch(&dirs.kernels, &package)?;
    eprintln!(
        "xtask: kernel {} ({} {}, {})",
        kernel.release,
        package.name,
        package.version,
        if fresh { "downloaded" } else { "cached" }
    );
    let busybox = busybox(dirs)?;

    let workspace = workspace_root();
    let layout = guest::root_layout(guest::probe_host, &[workspace.clone(), target_dir()?]);
    let run_dir = dirs.runs.join(spec.name);
    fs::create_dir_all(&run_dir)?;
    let initrd = run_dir.join("initrd.cpio");
    initramfs::build(
        &initrd,
        &busybox,
        &kernel,
        &guest::init_script(&layout, &kernel.modules, &kernel.release),
        &tests_script(pthwatch, binaries, args),
    )?;
    let mut cfg = qemu::VmConfig {
        vmlinuz: kernel.vmlinuz.clone(),
        initrd,
        cmdline: guest::cmdline(&spec.lsm()),
        shares: layout.shares,
        memory_mib: args.memory,
        cpus: guest_cpus(),
        accel: *accel,
    };
    let log = run_dir.join("console.log");
    let timeout = Duration::from_secs(args.timeout * 60);
    let booted = |line: &str| line.starts_with(guest::KERNEL_LINE);
    let mut crashed = None;
    loop {
        let mut report = RunReport::default();
        // A KVM guest is up in seconds; one that is not after this is not running at all
        // (a /dev/kvm that cannot run this kernel), and gets a second try under TCG.
        let progress = (cfg.accel == Accel::Kvm).then_some(stream::Progress {
            within: KVM_BOOT_LIMIT,
            seen: &booted,
        });
        let ended = stream::run(&mut qemu::command(&cfg), timeout, progress, &log, |line| {
            report.feed(line);
        })?;
        if matches!(ended, Ended::Stalled) {
            eprintln!(
                "xtask: warning: the guest did not boot under KVM within {}s; \
                 retrying under software emulation (and using it for the next kernels)",
                KVM_BOOT_LIMIT.as_secs()
            );
            cfg.accel = Accel::Tcg;
            *accel = Accel::Tcg;
            continue;
        }
        // A guest kernel that crashed before its tests ended gets one more run, said
        // aloud: under software emulation 6.12 once died of a double fault while programs
        // were being detached (an emulator fault is the likely cause, a kernel one is not
        // ruled out). A second crash fails the kernel.
        if report.exit.is_none()
            && crashed.is_none()
            && let Some(panic) = report.kernel_panic.clone()
        {
            let first = run_dir.join("console-crashed.log");
            let _ = fs::rename(&log, &first);
            eprintln!(
                "xtask: warning: the {} guest kernel crashed ({panic}); running its tests \
                 once more (first run's console: {})",
                spec.name,
                first.display()
            );
            crashed = Some(panic);
            continue;
        }
        let mut what = format!("{} {}, {}", package.name, package.version, cfg.accel.name());
        if let Some(panic) = &crashed {
            let _ = write!(what, ", second run after a guest kernel crash ({panic})");
        }
        return Ok(Outcome {
            target: spec.name,
            what,
            took: Duration::ZERO,
            failure: vm_failure(&ended, &report, args.timeout),
            report,
            log: Some(log),
        });
    }
}

/// Why a guest run failed, or `None` when every test binary passed.
fn vm_failure(ended: &Ended, report: &RunReport, timeout_min: u64) -> Option<String> {
    let mut why = Vec::new();
    match ended {
        Ended::TimedOut => why.push(format!("timed out after {timeout_min} min")),
        Ended::Interrupted => why.push("interrupted".to_owned()),
        Ended::Stalled => why.push("the guest did not boot".to_owned()),
        Ended::Exited(status) if report.exit.is_none() => {
            why.push(format!("the guest stopped without reporting ({status})"));
        }
        Ended::Exited(_) => {}
    }
    why.extend(report.errors.iter().map(|e| format!("guest setup: {e}")));
    test_failures(report, &mut why);
    if why.is_empty() && report.exit != Some(0) {
        why.push(format!("the guest's tests exited {:?}", report.exit));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn test_failures(report: &RunReport, why: &mut Vec<String>) {
    let unfinished: Vec<&str> = report.unfinished().collect();
    if !unfinished.is_empty() {
        why.push(format!("did not finish: {}", unfinished.join(", ")));
    }
    let failed: Vec<String> = report
        .failed_binaries()
        .map(|(n, c)| format!("{n} (exit {c})"))
        .collect();
    if !failed.is_empty() {
        why.push(format!("failed: {}", failed.join(", ")));
    }
}

/// The same test script, on the running kernel.
fn run_host(dirs: &Dirs, pthwatch: &Path, binaries: &[TestBinary], args: &Args) -> Result<Outcome> {
    let run_dir = dirs.runs.join(HOST);
    fs::create_dir_all(&run_dir)?;
    let script = run_dir.join("tests.sh");
    fs::write(&script, tests_script(pthwatch, binaries, args))?;
    let log = run_dir.join("output.log");
    let mut report = RunReport::default();
    let ended = stream::run(
        Command::new("/bin/sh").arg(&script),
        Duration::from_secs(args.timeout * 60),
        None,
        &log,
        |line| report.feed(line),
    )?;
    let mut why = Vec::new();
    match &ended {
        Ended::TimedOut => why.push(format!("timed out after {} min", args.timeout)),
        Ended::Interrupted => why.push("interrupted".to_owned()),
        Ended::Stalled | Ended::Exited(_) => {}
    }
    test_failures(&report, &mut why);
    if let Ended::Exited(status) = ended
        && !status.success()
        && why.is_empty()
    {
        why.push(format!("the test script failed ({status})"));
    }
    Ok(Outcome {
        target: HOST,
        what: format!("{} (no VM)", host_release()),
        took: Duration::ZERO,
        report,
        failure: (!why.is_empty()).then(|| why.join("; ")),
        log: Some(log),
    })
}

fn summary(outcomes: &[Outcome], took: Duration) -> Result<()> {
    let mut text = String::new();
    let _ = writeln!(text, "\nxtask vm-test summary ({}):", fmt_duration(took));
    let mut failed = Vec::new();
    for o in outcomes {
        let r = &o.report;
        let _ = writeln!(
            text,
            "  {:<5} {:<7} {:>7}  {} passed, {} failed, {} ignored  {}",
            o.target,
            if o.failure.is_none() { "ok" } else { "FAILED" },
            fmt_duration(o.took),
            r.passed,
            r.failed,
            r.ignored,
            o.what
        );
        if let Some(kernel) = &r.kernel {
            let _ = writeln!(text, "        guest: {kernel}");
        }
        for t in &r.failed_tests {
            let _ = writeln!(text, "        failed test: {t}");
        }
        if let Some(why) = &o.failure {
            let _ = writeln!(text, "        {why}");
            failed.push(o.target);
        }
        if let Some(log) = &o.log {
            let _ = writeln!(text, "        log: {}", log.display());
        }
    }
    print!("{text}");
    if failed.is_empty() && !outcomes.is_empty() {
        Ok(())
    } else if outcomes.is_empty() {
        bail!("interrupted before any kernel ran")
    } else {
        bail!("failed on: {}", failed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_checked() {
        assert!(parse_kernel("6.1").is_ok());
        assert!(parse_kernel("host").is_ok());
        let e = parse_kernel("5.15").unwrap_err();
        assert!(e.contains("6.1, 6.12, host"), "{e}");
    }

    #[test]
    fn the_default_matrix_is_the_vm_kernels_once_each() {
        let names = |t: Vec<Target>| t.into_iter().map(Target::name).collect::<Vec<_>>();
        assert_eq!(names(targets(&[])), ["6.1", "6.12"]);
        let asked = ["host", "6.1", "host"].map(String::from);
        assert_eq!(names(targets(&asked)), ["host", "6.1"]);
    }

    #[test]
    fn a_guest_passes_only_when_it_reports_zero() {
        let mut ok = RunReport::default();
        for l in [
            "PTHWATCH-VM-BEGIN sensors",
            "PTHWATCH-VM-END sensors 0",
            "PTHWATCH-VM-EXIT=0",
        ] {
            ok.feed(l);
        }
        let exited = || Ended::Exited(std::process::ExitStatus::default());
        assert_eq!(vm_failure(&exited(), &ok, 20), None);
        assert!(
            vm_failure(&Ended::TimedOut, &ok, 20)
                .unwrap()
                .contains("timed out")
        );
        let silent = RunReport::default();
        assert!(
            vm_failure(&exited(), &silent, 20)
                .unwrap()
                .contains("without reporting")
        );
        let mut bad = RunReport::default();
        for l in [
            "PTHWATCH-VM-BEGIN sensors",
            "PTHWATCH-VM-END sensors 101",
            "PTHWATCH-VM-EXIT=1",
        ] {
            bad.feed(l);
        }
        assert!(
            vm_failure(&exited(), &bad, 20)
                .unwrap()
                .contains("sensors (exit 101)")
        );
    }
}
