//! The test binaries the guests run: `pthwatch` and the integration tests, built on the
//! host in release mode (`cargo test --no-run` names the executables).
use std::{path::PathBuf, process::Stdio};

use anyhow::{Context as _, Result, bail};

use super::guest::TestBinary;
use crate::{
    build::build_release,
    util::{cargo, display},
};

/// Builds `pthwatch` and the integration test binaries; returns their paths (only the
/// binaries named in `only`, when given).
pub fn build(only: &[String]) -> Result<(PathBuf, Vec<TestBinary>)> {
    let pthwatch = build_release()?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "integration-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("+ {}", display(&cmd));
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(&cmd), out.status);
    }
    let mut binaries = test_executables(&String::from_utf8_lossy(&out.stdout));
    if !only.is_empty() {
        let known: Vec<String> = binaries.iter().map(|b| b.name.clone()).collect();
        if let Some(unknown) = only.iter().find(|n| !known.contains(n)) {
            bail!(
                "no integration test binary `{unknown}`: there are {}",
                known.join(", ")
            );
        }
        binaries.retain(|b| only.contains(&b.name));
    }
    if binaries.is_empty() {
        bail!("cargo built no integration test binary");
    }
    Ok((pthwatch, binaries))
}

/// The test executables in cargo's `--message-format=json` output, by target name.
fn test_executables(json_lines: &str) -> Vec<TestBinary> {
    let mut out: Vec<TestBinary> = json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            Some(TestBinary {
                name: m["target"]["name"].as_str()?.to_owned(),
                path: PathBuf::from(m["executable"].as_str()?),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn finds_test_executables_in_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"libc","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"name":"sensors","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/sensors-1"}
{"reason":"compiler-artifact","target":{"name":"integration_tests","kind":["lib"]},"profile":{"test":true},"executable":"/t/release/deps/integration_tests-2"}
{"reason":"build-finished","success":true}"#;
        let found = test_executables(json);
        let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["integration_tests", "sensors"]);
        assert_eq!(found[1].path, Path::new("/t/release/deps/sensors-1"));
    }
}
