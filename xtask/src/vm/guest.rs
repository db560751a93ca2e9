//! What runs inside the guest: the root it sees, its `/init`, the test script and the
//! kernel command line.
//!
//! The guest's root is a tmpfs built by `/init`: the host's `/usr` and `/etc` and the
//! workspace (target directory included) arrive read-only over 9p at their host paths,
//! `/bin`, `/lib`... are the same symlinks as on the host (merged `/usr`), and `/tmp`,
//! `/run`, `/var` and `/root` are empty and writable. Nothing else of the host is shared.
//! `/init` then switches to that root, where the tests run with the host's own `/bin/sh`,
//! Python and tools.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

/// Lines the guest prints for the host to read on the serial console.
pub const KERNEL_LINE: &str = "PTHWATCH-VM-KERNEL";
pub const ERROR_LINE: &str = "PTHWATCH-VM-ERROR";
pub const BEGIN_LINE: &str = "PTHWATCH-VM-BEGIN";
pub const END_LINE: &str = "PTHWATCH-VM-END";
pub const EXIT_LINE: &str = "PTHWATCH-VM-EXIT=";

/// One host directory shared read-only over 9p, mounted at the same path in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The 9p mount tag (at most 31 bytes).
    pub tag: String,
    pub path: PathBuf,
}

/// The guest's root: shared directories and top-level symlinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootLayout {
    pub shares: Vec<Share>,
    /// `(name, target)` such as `("bin", "usr/bin")`.
    pub symlinks: Vec<(String, String)>,
}

/// What a top-level host entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Missing,
    Dir,
    Symlink(String),
}

/// Top-level directories the guest takes from the host, as symlinks or shares.
const SYSTEM_DIRS: &[&str] = &[
    "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc",
];

/// Plans the guest root: the system directories as the host has them, then each extra
/// directory (the workspace, a target directory outside it) unless a share already holds it.
pub fn root_layout(host: impl Fn(&str) -> HostEntry, extra: &[PathBuf]) -> RootLayout {
    let mut layout = RootLayout::default();
    for &name in SYSTEM_DIRS {
        match host(name) {
            HostEntry::Missing => {}
            HostEntry::Symlink(target) => layout.symlinks.push((name.to_owned(), target)),
            HostEntry::Dir => layout.shares.push(Share {
                tag: name.to_owned(),
                path: Path::new("/").join(name),
            }),
        }
    }
    for (i, dir) in extra.iter().enumerate() {
        if layout.shares.iter().any(|s| dir.starts_with(&s.path)) {
            continue;
        }
        layout.shares.push(Share {
            tag: format!("extra{i}"),
            path: dir.clone(),
        });
    }
    layout
}

/// The host's own top-level entry `name`.
pub fn probe_host(name: &str) -> HostEntry {
    let path = Path::new("/").join(name);
    match std::fs::symlink_metadata(&path) {
        Err(_) => HostEntry::Missing,
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&path)
            .map_or(HostEntry::Missing, |t| {
                HostEntry::Symlink(t.to_string_lossy().into_owned())
            }),
        Ok(m) if m.is_dir() => HostEntry::Dir,
        Ok(_) => HostEntry::Missing,
    }
}

/// Quotes a word for `sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// The kernel command line: serial console, our init, no reboot loop on panic, the LSMs.
pub fn cmdline(lsm: &str) -> String {
    format!("console=ttyS0 rdinit=/init panic=-1 loglevel=4 lsm={lsm}")
}

/// 9p mount options: read-only, and cached (`loose`: the host does not change the files
/// under the guest while the tests run), which keeps exec and Python's imports fast.
const NINEP_OPTS: &str = "ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144";

/// The guest's `/init` (busybox sh): modules, the new root and its kernel filesystems, then
/// `switch_root` to [`stage2_script`]. A setup failure prints an error line and exit 125.
pub fn init_script(layout: &RootLayout, modules_dir: &Path, release: &str) -> String {
    let mut s = String::new();
    s.push_str(
        "#!/bin/busybox sh\n\
         # Written by `cargo xtask vm-test`: the pthwatch test guest's init.\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n",
    );
    let _ = writeln!(
        s,
        "finish() {{ echo \"{EXIT_LINE}$1\"; sync; poweroff -f; echo o > /proc/sysrq-trigger; sleep 5; }}"
    );
    let _ = writeln!(s, "fail() {{ echo \"{ERROR_LINE} $*\"; finish 125; }}");
    s.push_str(
        "mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev \
         || fail 'mounting proc, sysfs, devtmpfs'\n\
         for m in $(cat /modules); do insmod /lib/modules/$m || fail \"insmod $m\"; done\n\
         R=/newroot\n\
         mount -t tmpfs -o mode=0755 root $R || fail 'tmpfs root'\n\
         cd $R\n\
         mkdir -p proc sys dev tmp run root home var/tmp var/lib var/log var/cache mnt opt srv\n\
         chmod 1777 tmp var/tmp && chmod 0700 root\n\
         ln -s ../run var/run && ln -s ../run/lock var/lock\n",
    );
    for (name, target) in &layout.symlinks {
        let _ = writeln!(s, "ln -s {} {}", shell_quote(target), shell_quote(name));
    }
    for share in &layout.shares {
        let at = format!("$R{}", q(&share.path));
        let _ = writeln!(
            s,
            "mkdir -p {at} && mount -t 9p -o {NINEP_OPTS} {} {at} || fail 'mounting 9p share {}'",
            share.tag, share.tag
        );
    }
    s.push_str(
        "mount -t proc proc $R/proc && mount -t sysfs sysfs $R/sys && mount -t devtmpfs devtmpfs $R/dev \
         || fail 'kernel filesystems in the new root'\n\
         mkdir -p $R/dev/pts $R/dev/shm\n\
         mount -t devpts devpts $R/dev/pts && mount -t tmpfs -o mode=1777 shm $R/dev/shm \
         || fail 'devpts, /dev/shm'\n\
         mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail 'cgroup2'\n\
         mount -t bpf bpf $R/sys/fs/bpf || fail 'bpffs'\n\
         mount -t tracefs tracefs $R/sys/kernel/tracing || fail 'tracefs'\n\
         mount -t debugfs debugfs $R/sys/kernel/debug || fail 'debugfs'\n\
         mount -t securityfs securityfs $R/sys/kernel/security || fail 'securityfs'\n\
         mount -t tmpfs -o mode=0755 run $R/run || fail '/run'\n",
    );
    // The guest kernel's own modules at /lib/modules/<release>, for `modprobe` in the tests
    // (the host's modules would not load). Skipped when the host has no /usr/lib/modules.
    let _ = writeln!(
        s,
        "if [ -d $R/usr/lib/modules ]; then\n  \
         mount -t tmpfs -o mode=0755 modules $R/usr/lib/modules && mkdir $R/usr/lib/modules/{rel} \
         && mount -o bind $R{mods} $R/usr/lib/modules/{rel} || fail 'guest modules'\nfi",
        rel = shell_quote(release),
        mods = q(modules_dir),
    );
    // switch_root, not chroot: the kernel (and so pthwatch's path walk) must see the new
    // root as the namespace's `/`, as on a booted system; under a chroot every path would
    // read `/newroot/...`.
    let _ = writeln!(
        s,
        "ip link set lo up || fail 'loopback'\n\
         hostname pthwatch-vm\n\
         echo \"{KERNEL_LINE} $(uname -r) lsm=$(cat $R/sys/kernel/security/lsm) \
         btf=$([ -f /sys/kernel/btf/vmlinux ] && echo yes || echo no) cpus=$(nproc)\"\n\
         mkdir -p $R{STAGE_DIR} && cp /bin/busybox {INITRAMFS_DIR}/* $R{STAGE_DIR}/ \
         || fail 'copying the second stage'\n\
         cd /\n\
         exec switch_root $R {STAGE_DIR}/busybox sh {STAGE_DIR}/{STAGE2}\n\
         fail 'switch_root'"
    );
    s
}

/// Where the initramfs keeps the second stage and the test script.
pub const INITRAMFS_DIR: &str = "/pthwatch";
/// Where they are in the new root (a tmpfs), with a copy of busybox.
pub const STAGE_DIR: &str = "/run/pthwatch-vm";
pub const STAGE2: &str = "stage2.sh";
pub const TESTS: &str = "tests.sh";

/// PID 1 after `switch_root` (busybox sh): the tests with the host's `/bin/sh`, the exit
/// line, power off.
pub fn stage2_script() -> String {
    format!(
        "# Written by `cargo xtask vm-test`: the test guest's second stage, PID 1 in the new root.\n\
         cd /\n\
         /bin/sh {STAGE_DIR}/{TESTS}\n\
         echo \"{EXIT_LINE}$?\"\n\
         {STAGE_DIR}/busybox sync\n\
         {STAGE_DIR}/busybox poweroff -f\n\
         echo o > /proc/sysrq-trigger\n"
    )
}

/// One integration test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// The test target's name (`sensors`).
    pub name: String,
    pub path: PathBuf,
}

/// What the test script runs, and where.
pub struct TestRun<'a> {
    pub binaries: &'a [TestBinary],
    pub pthwatch: &'a Path,
    /// `cargo test` runs a package's tests in the package's directory.
    pub cwd: &'a Path,
    /// libtest's name filter.
    pub filter: Option<&'a str>,
}

/// The test script (plain `sh`, used in the guest and on the host): each binary with
/// `--test-threads=1` between a begin and an end line; exit status 1 if any failed.
/// Colours are off: the guest's console is a terminal, but its reader is not.
pub fn tests_script(run: &TestRun<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#!/bin/sh\n\
         # Written by `cargo xtask vm-test`: pthwatch's integration tests.\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root LANG=C.UTF-8 TMPDIR=/tmp RUST_BACKTRACE=1\n\
         export PTHWATCH_BIN={}\n\
         cd {} || exit 125\n\
         status=0\n\
         run_test() {{\n  \
           name=$1; shift\n  \
           echo \"{BEGIN_LINE} $name\"\n  \
           \"$@\"; rc=$?\n  \
           echo \"{END_LINE} $name $rc\"\n  \
           [ \"$rc\" -eq 0 ] || status=1\n\
         }}",
        q(run.pthwatch),
        q(run.cwd),
    );
    for bin in run.binaries {
        let _ = write!(
            s,
            "run_test {} {} --test-threads=1 --color=never",
            shell_quote(&bin.name),
            q(&bin.path)
        );
        if let Some(filter) = run.filter {
            let _ = write!(s, " {}", shell_quote(filter));
        }
        s.push('\n');
    }
    s.push_str("exit $status\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(shell_quote("/work/main/target"), "/work/main/target");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn the_guest_root_mirrors_merged_usr_and_shares_the_workspace_once() {
        let host = |name: &str| match name {
            "bin" => HostEntry::Symlink("usr/bin".into()),
            "lib" => HostEntry::Symlink("usr/lib".into()),
            "usr" | "etc" => HostEntry::Dir,
            _ => HostEntry::Missing,
        };
        let layout = root_layout(
            host,
            &[
                PathBuf::from("/work/main"),
                PathBuf::from("/work/main/target"),
                PathBuf::from("/srv/target"),
            ],
        );
        assert_eq!(
            layout.symlinks,
            [
                ("bin".to_owned(), "usr/bin".to_owned()),
                ("lib".to_owned(), "usr/lib".to_owned())
            ]
        );
        let shares: Vec<(&str, &Path)> = layout
            .shares
            .iter()
            .map(|s| (s.tag.as_str(), s.path.as_path()))
            .collect();
        assert_eq!(
            shares,
            [
                ("usr", Path::new("/usr")),
                ("etc", Path::new("/etc")),
                ("extra0", Path::new("/work/main")),
                ("extra2", Path::new("/srv/target")),
            ]
        );
    }

    #[test]
    fn boots_with_the_asked_lsms_on_the_serial_console() {
        let c = cmdline("landlock,lockdown,yama,integrity,apparmor,bpf");
        assert!(c.contains("console=ttyS0"));
        assert!(c.contains("rdinit=/init"));
        assert!(c.ends_with("lsm=landlock,lockdown,yama,integrity,apparmor,bpf"));
    }

    #[test]
    fn the_init_mounts_shares_and_ends_with_the_exit_line() {
        let layout = RootLayout {
            shares: vec![Share {
                tag: "usr".into(),
                path: "/usr".into(),
            }],
            symlinks: vec![("bin".into(), "usr/bin".into())],
        };
        let init = init_script(
            &layout,
            Path::new("/w/target/vm/k/lib/modules/6.1.0-56-amd64"),
            "6.1.0-56-amd64",
        );
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("ln -s usr/bin bin\n"));
        assert!(init.contains("mount -t 9p -o ro,trans=virtio"));
        assert!(init.contains(" usr $R/usr "));
        assert!(init.contains("mount -o bind $R/w/target/vm/k/lib/modules/6.1.0-56-amd64 $R/usr/lib/modules/6.1.0-56-amd64"));
        assert!(init.contains("echo \"PTHWATCH-VM-EXIT=$1\""));
        assert!(init.contains(
            "exec switch_root $R /run/pthwatch-vm/busybox sh /run/pthwatch-vm/stage2.sh\n"
        ));
        let stage2 = stage2_script();
        assert!(stage2.contains("/bin/sh /run/pthwatch-vm/tests.sh\n"));
        assert!(stage2.contains("echo \"PTHWATCH-VM-EXIT=$?\"\n"));
    }

    #[test]
    fn the_test_script_runs_each_binary_single_threaded() {
        let bins = [
            TestBinary {
                name: "sensors".into(),
                path: "/t/release/deps/sensors-abc".into(),
            },
            TestBinary {
                name: "detection".into(),
                path: "/t/release/deps/detection-def".into(),
            },
        ];
        let script = tests_script(&TestRun {
            binaries: &bins,
            pthwatch: Path::new("/t/release/pthwatch"),
            cwd: Path::new("/w/tests"),
            filter: Some("every way"),
        });
        assert!(script.contains("export PTHWATCH_BIN=/t/release/pthwatch\n"));
        assert!(script.contains("cd /w/tests || exit 125\n"));
        assert!(script.contains(
            "run_test sensors /t/release/deps/sensors-abc --test-threads=1 --color=never 'every way'\n"
        ));
        assert!(script.contains("run_test detection /t/release/deps/detection-def"));
        assert!(script.ends_with("exit $status\n"));
    }
}
