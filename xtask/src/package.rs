//! `cargo xtask package`: a Debian package of the release build, made with `dpkg-deb`
//! (no packaging tool to install): the binary, the systemd unit, and the documented
//! default configuration as a conffile (an edited `/etc/pthwatch/pthwatch.toml` survives
//! upgrades).
//!
//! The package does not start pthwatch: a monitor that can deny the network should be
//! enabled on purpose (`systemctl enable --now pthwatch`), after a look at its mode.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{output, run_inherit, target_dir, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Package this binary instead of building the release one.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Where the `.deb` goes (default: target/package).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => crate::build::build_release()?,
    };
    let out = match &args.out {
        Some(d) => d.clone(),
        None => target_dir()?.join("package"),
    };
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg --print-architecture (a Debian or Ubuntu host is needed)")?;
    let deb = build(
        &binary,
        &workspace_root(),
        &out,
        env!("CARGO_PKG_VERSION"),
        arch.trim(),
    )?;
    println!("{}", deb.display());
    Ok(())
}

/// The files the package installs: (source in the workspace, path on the host, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "systemd/pthwatch.service",
        "usr/lib/systemd/system/pthwatch.service",
        0o644,
    ),
    (
        "packaging/pthwatch.toml",
        "etc/pthwatch/pthwatch.toml",
        0o640,
    ),
    ("README.md", "usr/share/doc/pthwatch/README.md", 0o644),
    (
        "schema/alert.schema.json",
        "usr/share/doc/pthwatch/alert.schema.json",
        0o644,
    ),
];

const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -z \"${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if systemctl is-active --quiet pthwatch; then
        systemctl try-restart pthwatch || true
    else
        echo 'pthwatch: review /etc/pthwatch/pthwatch.toml, then: systemctl enable --now pthwatch'
    fi
fi
exit 0
";

const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -z \"${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now pthwatch >/dev/null 2>&1 || true
fi
exit 0
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ -z \"${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
";

/// Stages the package tree under `out` and builds `pthwatch_<version>_<arch>.deb` there.
pub fn build(binary: &Path, root: &Path, out: &Path, version: &str, arch: &str) -> Result<PathBuf> {
    if !binary.is_file() {
        bail!("{} is not a file", binary.display());
    }
    let name = format!("pthwatch_{version}_{arch}");
    let stage = out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let install = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().expect("a path under the stage"))?;
        fs::copy(from, &dest)
            .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    install(binary, "usr/bin/pthwatch", 0o755)?;
    for (from, to, mode) in FILES {
        install(&root.join(from), to, *mode)?;
    }
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    fs::set_permissions(&debian, fs::Permissions::from_mode(0o755))?;
    let installed_kib = dir_size(&stage)?.div_ceil(1024);
    let depends = shlib_depends(binary);
    let control = format!(
        "Package: pthwatch
Version: {version}
Architecture: {arch}
Maintainer: pthwatch developers <pthwatch@example.invalid>
Section: admin
Priority: optional
Installed-Size: {installed_kib}
Depends: {depends}
Recommends: systemd
Homepage: https://example.invalid/pthwatch
Description: eBPF monitor that stops malicious Python startup hooks
 pthwatch watches Python interpreters start up and stops a startup hook (.pth,
 sitecustomize, usercustomize) that reads credentials and then reaches the network,
 in the kernel, before the first byte leaves. Needs Linux 5.17 or later with BTF.
"
    );
    let write = |name: &str, text: &str, mode: u32| -> Result<()> {
        let p = debian.join(name);
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    write("control", &control, 0o644)?;
    write("conffiles", "/etc/pthwatch/pthwatch.toml\n", 0o644)?;
    write("postinst", POSTINST, 0o755)?;
    write("prerm", PRERM, 0o755)?;
    write("postrm", POSTRM, 0o755)?;
    let deb = out.join(format!("{name}.deb"));
    run_inherit(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )
    .context("dpkg-deb --build")?;
    Ok(deb)
}

/// Packages the binary's shared libraries come from, with the versions its symbols need,
/// as `dpkg-shlibdeps` (dpkg-dev) works them out. Without dpkg-dev, or for a binary it
/// cannot read: the two libraries every Rust binary links, unversioned.
fn shlib_depends(binary: &Path) -> String {
    const FALLBACK: &str = "libc6, libgcc-s1";
    let Ok(dir) = tempdir("shlibdeps") else {
        return FALLBACK.to_owned();
    };
    // dpkg-shlibdeps reads the package names from a debian/control beside it.
    let control = "Source: pthwatch\n\nPackage: pthwatch\nArchitecture: any\n";
    let found = fs::create_dir_all(dir.join("debian"))
        .and_then(|()| fs::write(dir.join("debian/control"), control))
        .ok()
        .and_then(|()| {
            Command::new("dpkg-shlibdeps")
                .arg("-O")
                .arg(binary)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
        })
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("shlibs:Depends="))
                .map(|d| d.trim().to_owned())
        })
        .filter(|d| !d.is_empty());
    let _ = fs::remove_dir_all(&dir);
    found.unwrap_or_else(|| FALLBACK.to_owned())
}

/// A fresh directory of this process's own (calls may run at once, in tests).
fn tempdir(what: &str) -> std::io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pthwatch-{what}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a package around a stand-in binary and reads it back with dpkg-deb.
    #[test]
    fn the_package_installs_the_binary_the_unit_and_the_config_as_a_conffile() {
        if which::which("dpkg-deb").is_err() {
            eprintln!("skipped: dpkg-deb is not installed (not a Debian host)");
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("pthwatch-package-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("pthwatch");
        fs::write(&bin, b"#!/bin/sh\necho stand-in\n").unwrap();
        let deb = build(&bin, &workspace_root(), &dir.join("out"), "9.8.7", "amd64").unwrap();
        assert!(deb.ends_with("pthwatch_9.8.7_amd64.deb"));

        let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb)).unwrap();
        for (path, mode) in [
            ("./usr/bin/pthwatch", "-rwxr-xr-x root/root"),
            (
                "./usr/lib/systemd/system/pthwatch.service",
                "-rw-r--r-- root/root",
            ),
            ("./etc/pthwatch/pthwatch.toml", "-rw-r----- root/root"),
        ] {
            let line = contents
                .lines()
                .find(|l| l.ends_with(path))
                .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"));
            assert!(line.starts_with(mode), "{line}");
        }
        let field =
            |f: &str| output(Command::new("dpkg-deb").args(["--field"]).arg(&deb).arg(f)).unwrap();
        assert_eq!(field("Package").trim(), "pthwatch");
        assert_eq!(field("Version").trim(), "9.8.7");
        assert_eq!(field("Architecture").trim(), "amd64");

        // The conffile and the maintainer scripts, as dpkg will see them.
        let ctrl = dir.join("control");
        run_inherit(
            Command::new("dpkg-deb")
                .arg("--control")
                .arg(&deb)
                .arg(&ctrl),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(ctrl.join("conffiles")).unwrap(),
            "/etc/pthwatch/pthwatch.toml\n"
        );
        for script in ["postinst", "prerm", "postrm"] {
            let mode = fs::metadata(ctrl.join(script))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{script}");
            let (ok, err) = {
                let o = Command::new("sh")
                    .arg("-n")
                    .arg(ctrl.join(script))
                    .output()
                    .unwrap();
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            };
            assert!(ok, "{script} is not valid sh: {err}");
        }
        // The packaged configuration is the documented default, byte for byte.
        let extracted = dir.join("root");
        run_inherit(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted)).unwrap();
        assert_eq!(
            fs::read(extracted.join("etc/pthwatch/pthwatch.toml")).unwrap(),
            fs::read(workspace_root().join("packaging/pthwatch.toml")).unwrap()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// dpkg itself, into a scratch root of its own: install, an upgrade that keeps a
    /// local edit of the configuration, remove (the configuration stays), purge.
    #[test]
    fn dpkg_installs_upgrades_removes_and_purges_it() {
        // SAFETY: geteuid has no preconditions.
        if which::which("dpkg").is_err() || unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs dpkg and root");
            return;
        }
        let dir = tempdir("dpkg-test").unwrap();
        let root = dir.join("root");
        let admin = root.join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            fs::create_dir_all(admin.join(sub)).unwrap();
        }
        fs::write(admin.join("status"), "").unwrap();
        fs::write(admin.join("available"), "").unwrap();
        let dpkg = |args: &[&str]| {
            let o = Command::new("dpkg")
                .arg(format!("--root={}", root.display()))
                // Scripts run on the host with DPKG_ROOT set (there is no shell in the
                // root); they then leave systemd alone. libc6 is not in the scratch root.
                .args([
                    "--force-script-chrootless",
                    "--force-depends",
                    "--log=/dev/null",
                ])
                .args(args)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(o.status.success(), "dpkg {args:?}: {text}");
            text
        };
        let package = |version: &str| {
            let bin = dir.join(format!("pthwatch-{version}"));
            fs::write(&bin, format!("#!/bin/sh\necho stand-in {version}\n")).unwrap();
            build(
                &bin,
                &workspace_root(),
                &dir.join(version),
                version,
                "amd64",
            )
            .unwrap()
        };
        let status = || {
            let o = Command::new("dpkg-query")
                .arg(format!("--admindir={}", admin.display()))
                .args(["-W", "-f", "${Status} ${Version}", "pthwatch"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let config = root.join("etc/pthwatch/pthwatch.toml");
        let run_bin = || output(&mut Command::new(root.join("usr/bin/pthwatch"))).unwrap();

        dpkg(&["-i", package("1.0.0").to_str().unwrap()]);
        assert_eq!(status(), "install ok installed 1.0.0");
        assert_eq!(run_bin().trim(), "stand-in 1.0.0");
        assert!(
            root.join("usr/lib/systemd/system/pthwatch.service")
                .is_file()
        );
        let shipped = fs::read_to_string(&config).unwrap();

        let edited = format!("{shipped}\n# edited on this host\n");
        fs::write(&config, &edited).unwrap();
        dpkg(&["--force-confold", "-i", package("1.0.1").to_str().unwrap()]);
        assert_eq!(status(), "install ok installed 1.0.1");
        assert_eq!(run_bin().trim(), "stand-in 1.0.1");
        assert_eq!(fs::read_to_string(&config).unwrap(), edited);

        dpkg(&["--remove", "pthwatch"]);
        assert_eq!(status(), "deinstall ok config-files 1.0.1");
        assert!(!root.join("usr/bin/pthwatch").exists());
        assert_eq!(fs::read_to_string(&config).unwrap(), edited);

        dpkg(&["--purge", "pthwatch"]);
        assert!(!config.exists(), "purge leaves no configuration");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn depends_name_the_libraries_the_binary_links() {
        let deps = shlib_depends(&std::env::current_exe().unwrap());
        assert!(deps.contains("libc6"), "{deps}");
        assert!(deps.contains("libgcc-s1"), "{deps}");
        if which::which("dpkg-shlibdeps").is_ok() {
            assert!(
                deps.contains("libc6 (>= 2."),
                "versioned from the symbols: {deps}"
            );
        }
    }
}
