//! The QEMU command line: KVM when `/dev/kvm` opens (software emulation otherwise), the
//! serial console on stdout, no network device at all, and the host directories shared
//! read-only over 9p.
use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Command,
};

use super::guest::Share;

pub const QEMU: &str = "qemu-system-x86_64";

/// `--accel`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when it can run the guest, else software emulation.
    Auto,
    Kvm,
    Tcg,
}

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation (TCG): several times slower.
    Tcg,
}

impl Accel {
    /// The accelerator for `choice` on this host, with the reason when `auto` could not
    /// use KVM.
    pub fn detect(choice: AccelChoice) -> (Self, Option<String>) {
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| format!("/dev/kvm: {e}"));
        let pvm = Path::new("/sys/module/kvm_pvm").exists();
        choose(choice, kvm, pvm)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg (software emulation)",
        }
    }
}

/// `/dev/kvm` served by PVM (`kvm_pvm`, hardware-less nested virtualization) runs only
/// guest kernels built for PVM: Debian's kernel never gets past its decompressor there.
fn choose(choice: AccelChoice, kvm: Result<(), String>, pvm: bool) -> (Accel, Option<String>) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, None),
        AccelChoice::Tcg => (Accel::Tcg, None),
        AccelChoice::Auto => match kvm {
            Err(why) => (Accel::Tcg, Some(why)),
            Ok(()) if pvm => (
                Accel::Tcg,
                Some(
                    "/dev/kvm is PVM (module kvm_pvm), which boots only PVM-enabled guest \
                     kernels; Debian's stall in their decompressor"
                        .to_owned(),
                ),
            ),
            Ok(()) => (Accel::Kvm, None),
        },
    }
}

/// One guest boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub shares: Vec<Share>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
}

pub fn command(cfg: &VmConfig) -> Command {
    let mut cmd = Command::new(QEMU);
    match cfg.accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        // One host thread for all vCPUs: the guests' self-modifying kernel code (jump
        // labels patched when pthwatch attaches) once hit a stale int3 under multi-threaded
        // TCG, and on 2-core hosts the single thread is as fast.
        Accel::Tcg => cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]),
    };
    cmd.args(["-m", &cfg.memory_mib.to_string()])
        .args(["-smp", &cfg.cpus.to_string()])
        // No default devices (VGA, NIC, floppy...), no monitor: only what is listed here.
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-nic", "none"])
        .args(["-serial", "stdio"])
        // A guest power-off or panic ends QEMU instead of rebooting.
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&cfg.vmlinuz)
        .arg("-initrd")
        .arg(&cfg.initrd)
        .args(["-append", &cfg.cmdline]);
    for share in &cfg.shares {
        cmd.arg("-virtfs").arg(virtfs(&share.tag, &share.path));
    }
    cmd
}

/// `-virtfs` for a read-only share. `multidevs=remap` keeps inode numbers unique when
/// the shared tree spans several host filesystems.
fn virtfs(tag: &str, path: &Path) -> String {
    // QEMU's option parser splits on commas; a doubled comma is a literal one.
    let path = path.to_string_lossy().replace(',', ",,");
    format!("local,path={path},mount_tag={tag},security_model=none,readonly=on,multidevs=remap")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::display;

    #[test]
    fn boots_with_kvm_no_network_and_read_only_shares() {
        let cfg = VmConfig {
            vmlinuz: "/c/vmlinuz".into(),
            initrd: "/c/initrd".into(),
            cmdline: "console=ttyS0 lsm=bpf".into(),
            shares: vec![Share {
                tag: "usr".into(),
                path: "/usr".into(),
            }],
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Kvm,
        };
        let shown = display(&command(&cfg));
        assert!(shown.starts_with("qemu-system-x86_64 -accel kvm -cpu host -m 2048 -smp 2"));
        assert!(shown.contains(" -nodefaults "));
        assert!(shown.contains(" -nic none "));
        assert!(shown.contains(" -no-reboot "));
        assert!(shown.contains(" -append 'console=ttyS0 lsm=bpf'"));
        assert!(shown.ends_with(
            "-virtfs local,path=/usr,mount_tag=usr,security_model=none,readonly=on,multidevs=remap"
        ));
        let tcg = display(&command(&VmConfig {
            accel: Accel::Tcg,
            ..cfg
        }));
        assert!(tcg.starts_with("qemu-system-x86_64 -accel tcg,thread=single -cpu max "));
    }

    #[test]
    fn auto_uses_kvm_only_where_it_can_boot_debian_kernels() {
        assert_eq!(choose(AccelChoice::Auto, Ok(()), false), (Accel::Kvm, None));
        let (accel, why) = choose(AccelChoice::Auto, Ok(()), true);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.unwrap().contains("kvm_pvm"));
        let (accel, why) = choose(AccelChoice::Auto, Err("/dev/kvm: denied".into()), false);
        assert_eq!(
            (accel, why.as_deref()),
            (Accel::Tcg, Some("/dev/kvm: denied"))
        );
        assert_eq!(choose(AccelChoice::Kvm, Ok(()), true), (Accel::Kvm, None));
        assert_eq!(choose(AccelChoice::Tcg, Ok(()), false), (Accel::Tcg, None));
    }

    #[test]
    fn commas_in_shared_paths_are_escaped() {
        assert!(virtfs("w", Path::new("/a,b")).starts_with("local,path=/a,,b,mount_tag=w,"));
    }
}
