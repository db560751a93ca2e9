//! The cargo subcommands the supply-chain tasks use, pinned to one version each and built
//! from crates.io with `cargo install --locked` (the registry is the only thing CI may
//! download from). Installing is skipped when `cargo install --list` already shows the
//! pinned version and its binary is there.
use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, fmt_duration, install_bin_dir, output, run_inherit};

pub struct Tool {
    /// The crates.io package, which is also the binary's name.
    pub package: &'static str,
    pub version: &'static str,
    /// Roughly how long building it from source takes on 2 cores, to say while waiting.
    pub build_time: &'static str,
}

/// 0.20.2 is the newest release (it needs rustc 1.88; stable here is 1.95).
pub const CARGO_DENY: Tool = Tool {
    package: "cargo-deny",
    version: "0.20.2",
    build_time: "about 2.5 minutes",
};

/// Embeds the dependency list in the binary (`.dep-v0`), readable by `cargo audit bin`,
/// syft and trivy.
pub const CARGO_AUDITABLE: Tool = Tool {
    package: "cargo-auditable",
    version: "0.7.7",
    build_time: "about 35 seconds",
};

/// `cargo fuzz` for `cargo xtask fuzz`: builds and runs the libFuzzer targets in `fuzz/`.
pub const CARGO_FUZZ: Tool = Tool {
    package: "cargo-fuzz",
    version: "0.13.2",
    build_time: "about 50 seconds",
};

/// Makes sure the pinned version is installed; returns a one-line description of what was
/// found or done.
pub fn ensure(tool: &Tool) -> Result<String> {
    let bin_dir =
        install_bin_dir().context("neither CARGO_INSTALL_ROOT, CARGO_HOME nor HOME is set")?;
    let bin = bin_dir.join(tool.package);
    let listed = output(cargo().args(["install", "--list"]))?;
    let installed = installed_versions(&listed);
    let present = installed.get(tool.package).map(String::as_str);
    if present == Some(tool.version) && bin.is_file() {
        return Ok(format!(
            "{} {} ok ({})",
            tool.package,
            tool.version,
            bin.display()
        ));
    }
    eprintln!(
        "xtask: installing {}@{} from crates.io (found: {}); building it takes {}",
        tool.package,
        tool.version,
        present.unwrap_or("none"),
        tool.build_time
    );
    let start = Instant::now();
    let mut cmd = cargo();
    cmd.args(["install", "--locked", "--force"])
        .arg(format!("{}@{}", tool.package, tool.version))
        // Outside the workspace, so its .cargo/config.toml cannot change the build.
        .current_dir(std::env::temp_dir());
    run_inherit(&mut cmd).with_context(|| {
        format!(
            "installing {}@{} failed: is crates.io reachable?",
            tool.package, tool.version
        )
    })?;
    if !bin.is_file() {
        bail!(
            "{} installed but {} is missing",
            tool.package,
            bin.display()
        );
    }
    Ok(format!(
        "{} {} installed in {} ({})",
        tool.package,
        tool.version,
        fmt_duration(start.elapsed()),
        bin.display()
    ))
}

/// Package name to version from `cargo install --list`, whose package lines look like
/// `cargo-deny v0.20.2:` or `foo v0.1.0 (/path/to/foo):`; the indented lines under them
/// name the binaries.
pub fn installed_versions(list: &str) -> BTreeMap<String, String> {
    list.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.trim_end().strip_suffix(':'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some((name.to_owned(), version.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_install_list() {
        let list = "bpf-linker v0.9.15:\n    bpf-linker\ncargo-deny v0.20.2:\n    cargo-deny\n\
                    local-tool v0.1.0 (/src/local-tool):\n    local-tool\n";
        let v = installed_versions(list);
        assert_eq!(v.get("cargo-deny").map(String::as_str), Some("0.20.2"));
        assert_eq!(v.get("local-tool").map(String::as_str), Some("0.1.0"));
        assert_eq!(v.get("bpf-linker").map(String::as_str), Some("0.9.15"));
        assert_eq!(v.len(), 3);
        assert!(installed_versions("").is_empty());
        // A binary line never counts as a package, even one that ends in a colon.
        assert!(installed_versions("    odd:\n").is_empty());
    }

    #[test]
    fn pins_are_exact_versions() {
        for tool in [&CARGO_DENY, &CARGO_AUDITABLE, &CARGO_FUZZ] {
            let parts: Vec<_> = tool.version.split('.').collect();
            assert_eq!(parts.len(), 3, "{}", tool.package);
            assert!(
                parts.iter().all(|p| p.parse::<u32>().is_ok()),
                "{}",
                tool.package
            );
        }
    }
}
