use std::{
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
};

use clap::{CommandFactory as _, Parser as _};
use serde_json::Value;

use super::*;
use crate::cli::Cli;

const SITE: &str = "/usr/lib/python3/dist-packages";
const SETUPTOOLS: &str = "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n";
/// The LiteLLM shape: a second interpreter running a base64 payload (`print('pwned')`).
const EVIL: &str = "import subprocess,sys,base64; subprocess.Popen([sys.executable,\"-c\",base64.b64decode(\"cHJpbnQoJ3B3bmVkJyk=\")])\n";

/// A scratch directory standing in for an unpacked image, removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pthwatch-scan-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn at(&self, inner: &str) -> PathBuf {
        self.0.join(inner.trim_start_matches('/'))
    }

    fn write(&self, inner: &str, content: &[u8]) {
        let p = self.at(inner);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Debian-style system Python with a benign, a path-only and (optionally) an evil `.pth`.
    fn debian(tag: &str, evil: bool) -> Self {
        let t = Self::new(tag);
        t.write("/usr/bin/python3.11", b"\x7fELF not really");
        fs::set_permissions(
            t.at("/usr/bin/python3.11"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        t.write("/usr/lib/python3.11/os.py", b"");
        t.write(
            &format!("{SITE}/distutils-precedence.pth"),
            SETUPTOOLS.as_bytes(),
        );
        t.write(&format!("{SITE}/paths.pth"), b"# vendored\n/opt/vendor\n");
        if evil {
            t.write(&format!("{SITE}/evil.pth"), EVIL.as_bytes());
        }
        t
    }

    fn args(&self, fail_on: FailOn) -> ScanArgs {
        ScanArgs {
            json: true,
            root: self.0.clone(),
            site_dirs: Vec::new(),
            fail_on,
        }
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What `pthwatch scan --json` prints, parsed, and its exit status.
fn run_json(args: &ScanArgs) -> (Value, u8) {
    let mut out = Vec::new();
    let status = scan_to(args, &mut out).unwrap();
    let json = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out));
    });
    (json, status)
}

fn hook<'a>(json: &'a Value, inner: &str) -> &'a Value {
    json["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == inner)
        .unwrap_or_else(|| panic!("{inner} not in {:#}", json["hooks"]))
}

#[test]
fn scan_json_lists_the_hooks_with_their_classes_and_fails_on_evil() {
    let t = FakeRoot::debian("evil", true);
    let (json, status) = run_json(&t.args(FailOn::Unknown));
    assert_eq!(status, 1, "{json:#}");
    assert_eq!(json["errors"], serde_json::json!([]), "{json:#}");
    assert_eq!(json["interpreters"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["interpreters"][0]["path"], "/usr/bin/python3.11");
    assert!(
        json["site_dirs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == SITE)
    );

    let benign = hook(&json, &format!("{SITE}/distutils-precedence.pth"));
    assert_eq!(benign["class"], "benign");
    assert_eq!(benign["kind"], "pth");
    assert_eq!(benign["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(benign["size"], SETUPTOOLS.len());
    assert_eq!(hook(&json, &format!("{SITE}/paths.pth"))["class"], "inert");

    let evil = hook(&json, &format!("{SITE}/evil.pth"));
    assert_eq!(evil["class"], "risky");
    assert_eq!(evil["kind"], "pth");
    assert_eq!(evil["distribution"], Value::Null);
    assert_eq!(evil["exec_lines"][0]["lineno"], 1);
    assert!(
        evil["exec_lines"][0]["text"]
            .as_str()
            .unwrap()
            .contains("subprocess.Popen")
    );
    let kinds: Vec<&str> = evil["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"process_spawn"), "{kinds:?}");
    assert!(kinds.contains(&"decoding"), "{kinds:?}");

    assert_eq!(json["gate"]["failed"], true);
    assert_eq!(json["gate"]["exit_status"], 1);
    assert_eq!(json["gate"]["fail_on"], "unknown");
    assert_eq!(
        json["gate"]["failing"],
        serde_json::json!([format!("{SITE}/evil.pth")])
    );
    assert_eq!(
        json["summary"],
        serde_json::json!({
            "hooks": 3, "executable": 2, "benign": 1, "inert": 1,
            "unknown": 0, "risky": 1, "warnings": 0
        })
    );
}

#[test]
fn scan_passes_a_clean_root() {
    let t = FakeRoot::debian("clean", false);
    let (json, status) = run_json(&t.args(FailOn::Unknown));
    assert_eq!(status, 0, "{json:#}");
    assert_eq!(json["hooks"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["gate"]["failed"], false);
    assert_eq!(json["gate"]["failing"], serde_json::json!([]));
}

#[test]
fn scan_fail_on_risky_ignores_unknown_hooks_and_never_always_passes() {
    let t = FakeRoot::debian("failon", false);
    // Runs code, recognised as nothing, with no risky construct: unknown.
    t.write(&format!("{SITE}/local.pth"), b"import mycompany_tweaks\n");
    let unknown = inspect(&t.args(FailOn::Unknown)).unwrap();
    assert_eq!(
        hook(
            &serde_json::to_value(&unknown).unwrap(),
            &format!("{SITE}/local.pth")
        )["class"],
        "unknown"
    );
    assert_eq!(unknown.gate.exit_status, 1);
    assert_eq!(unknown.gate.failing, vec![format!("{SITE}/local.pth")]);
    assert_eq!(inspect(&t.args(FailOn::Risky)).unwrap().gate.exit_status, 0);
    assert_eq!(inspect(&t.args(FailOn::Never)).unwrap().gate.exit_status, 0);

    t.write(&format!("{SITE}/evil.pth"), EVIL.as_bytes());
    let risky = inspect(&t.args(FailOn::Risky)).unwrap();
    assert_eq!(risky.gate.exit_status, 1);
    assert_eq!(risky.gate.failing, vec![format!("{SITE}/evil.pth")]);
    let unknown = inspect(&t.args(FailOn::Unknown)).unwrap();
    assert_eq!(unknown.gate.failing.len(), 2, "{:?}", unknown.gate.failing);
    let never = inspect(&t.args(FailOn::Never)).unwrap();
    assert_eq!(never.gate.exit_status, 0);
    assert!(!never.gate.failed);
    assert_eq!(never.summary.risky, 1);
}

#[test]
fn scan_reads_extra_site_dirs_inside_the_root() {
    let t = FakeRoot::new("sitedir");
    t.write("/srv/app/libs/evil.pth", EVIL.as_bytes());
    let mut args = t.args(FailOn::Unknown);
    let (json, status) = run_json(&args);
    assert_eq!(
        (json["hooks"].as_array().map(Vec::len), status),
        (Some(0), 0)
    );

    args.site_dirs = vec!["/srv/app/libs".into()];
    let (json, status) = run_json(&args);
    assert_eq!(status, 1);
    assert_eq!(hook(&json, "/srv/app/libs/evil.pth")["class"], "risky");

    // A typo must not pass as "no hooks there".
    args.site_dirs = vec!["/srv/app/lib".into()];
    let err = inspect(&args).unwrap_err();
    assert!(matches!(err, ScanError::SiteDir { .. }), "{err}");
    args.site_dirs = vec!["srv/app/libs".into()];
    let err = inspect(&args).unwrap_err();
    assert!(matches!(err, ScanError::RelativeSiteDir(_)), "{err}");
}

#[test]
fn scan_refuses_a_missing_root() {
    let t = FakeRoot::new("noroot");
    let mut args = t.args(FailOn::Unknown);
    args.root = t.at("does/not/exist");
    let err = inspect(&args).unwrap_err();
    assert!(matches!(err, ScanError::Root { .. }), "{err}");
    assert!(err.to_string().contains("--root"), "{err}");
    t.write("/file", b"");
    args.root = t.at("/file");
    assert!(matches!(
        inspect(&args).unwrap_err(),
        ScanError::RootNotDirectory(_)
    ));
}

#[test]
fn scan_survives_paths_that_are_not_utf8() {
    let t = FakeRoot::debian("utf8", false);
    fs::write(
        t.at(SITE).join(OsStr::from_bytes(b"\xff\xfe.pth")),
        EVIL.as_bytes(),
    )
    .unwrap();
    let mut args = t.args(FailOn::Unknown);
    let (json, status) = run_json(&args);
    assert_eq!(status, 1);
    assert_eq!(
        hook(&json, &format!("{SITE}/\\xff\\xfe.pth"))["class"],
        "risky"
    );

    args.json = false;
    let mut out = Vec::new();
    assert_eq!(scan_to(&args, &mut out).unwrap(), 1);
    let table = String::from_utf8(out).unwrap();
    assert!(table.contains("\\xff\\xfe.pth"), "{table}");
}

#[test]
fn scan_table_shows_rows_lines_findings_and_the_verdict() {
    let t = FakeRoot::debian("table", true);
    let mut args = t.args(FailOn::Unknown);
    args.json = false;
    let mut out = Vec::new();
    assert_eq!(scan_to(&args, &mut out).unwrap(), 1);
    let table = String::from_utf8(out).unwrap();
    let row = table
        .lines()
        .find(|l| l.ends_with("/evil.pth"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.starts_with("risky") && row.contains(" pth "), "{row}");
    assert!(table.contains("line 1: import subprocess"), "{table}");
    assert!(table.contains("findings: "), "{table}");
    assert!(
        table.ends_with(
            "gate (--fail-on unknown): FAILED; 3 hooks, 2 executable, 0 unknown, 1 risky\n"
        ),
        "{table}"
    );
}

#[test]
fn scan_command_line_and_help() {
    let cli = Cli::try_parse_from(["pthwatch", "scan"]).unwrap();
    let crate::cli::Command::Scan(args) = cli.command else {
        panic!("not scan: {:?}", cli.command);
    };
    assert_eq!(
        (args.json, args.root, args.fail_on),
        (false, PathBuf::from("/"), FailOn::Unknown)
    );
    let cli = Cli::try_parse_from([
        "pthwatch",
        "scan",
        "--json",
        "--root",
        "/img",
        "--site-dir",
        "/a",
        "--site-dir",
        "/b",
        "--fail-on",
        "risky",
    ])
    .unwrap();
    let crate::cli::Command::Scan(args) = cli.command else {
        panic!("not scan");
    };
    assert!(args.json);
    assert_eq!(args.site_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(args.fail_on, FailOn::Risky);

    let err = Cli::try_parse_from(["pthwatch", "scan", "--fail-on", "sometimes"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);

    let mut cmd = Cli::command();
    let help = cmd
        .find_subcommand_mut("scan")
        .unwrap()
        .render_long_help()
        .to_string();
    for want in [
        "Exit status:",
        "  0  clean",
        "  1  a hook fails",
        "  2  usage error",
    ] {
        assert!(help.contains(want), "{want:?} missing from:\n{help}");
    }
}
