//! `cargo xtask audit`: `cargo deny check` with the policy in `deny.toml`, fully offline.
//!
//! cargo-deny reads an advisory database from `<db-path>/advisory-db-<hash of its url>/`
//! and wants a `.git` directory there: the modification time of `.git/FETCH_HEAD` is the
//! database's age, checked against `maximum-db-staleness`. The offline RustSec copy is
//! plain files, read-only, so this prepares `target/advisory-dbs/` from it: its `crates/`
//! tree copied, and a `FETCH_HEAD` dated with the newest advisory in it, which is as old as
//! the copy really is. Then, after a `cargo fetch --locked` (crates.io only), `cargo deny
//! --offline --locked check` runs twice: once for people (the full report) and once as
//! JSON for the summary.
//!
//! Without an advisory database (`$PTHWATCH_ADVISORY_DB`, `../shared/advisory-db` beside
//! the workspace, `/work/shared/advisory-db`) the advisories check is skipped with a
//! warning; licenses, bans and sources still run.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{days_from_civil, tools, xxh64::xxh64};
use crate::util::{cargo, display, run_inherit, target_dir, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// The RustSec advisory database: a checkout or a plain-file copy with a `crates/`
    /// directory [default: ../shared/advisory-db beside the workspace, else
    /// /work/shared/advisory-db; skipped with a warning when neither exists].
    #[arg(long, value_name = "DIR", env = "PTHWATCH_ADVISORY_DB")]
    db: Option<PathBuf>,
}

/// The database cargo-deny uses when `db-urls` is not set, and so the one whose directory
/// name it derives (see [`db_dir_name`]).
const RUSTSEC_URL: &str = "https://github.com/rustsec/advisory-db";
/// The seed cargo-deny 0.20 hashes database urls with.
const DB_URL_SEED: u64 = 0xca80_de71;
/// Older than this, the summary warns that recent advisories are missing.
const STALE_AFTER_DAYS: i64 = 90;
/// deny.toml reads the prepared directory's location from this variable.
const DB_ROOT_ENV: &str = "PTHWATCH_DENY_DB_ROOT";
const CHECKS: [&str; 4] = ["advisories", "bans", "licenses", "sources"];

pub fn run(args: &Args) -> Result<()> {
    let tool = tools::ensure(&tools::CARGO_DENY)?;
    eprintln!("xtask: {tool}");
    let root = workspace_root();
    let candidates = [
        root.join("../shared/advisory-db"),
        PathBuf::from("/work/shared/advisory-db"),
    ];
    let source =
        find_advisory_db(args.db.as_deref(), &candidates)?.map(|p| p.canonicalize().unwrap_or(p));
    let db = match &source {
        Some(src) => Some(prepare_db(src, &target_dir()?.join("advisory-dbs"))?),
        None => {
            eprintln!(
                "xtask: warning: no RustSec advisory database (looked in {}; set \
                 PTHWATCH_ADVISORY_DB or pass --db): the advisories check is SKIPPED, \
                 licenses, bans and sources still run",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            None
        }
    };
    let checks: Vec<&str> = CHECKS
        .into_iter()
        .filter(|c| db.is_some() || *c != "advisories")
        .collect();

    let mut failed = Vec::new();
    for manifest in MANIFESTS {
        if let Err(e) = check_manifest(manifest, db.as_ref(), &checks) {
            eprintln!("xtask: audit of {manifest}: {e:#}");
            failed.push(manifest);
        }
    }
    if !failed.is_empty() {
        bail!("cargo deny found problems in {}", failed.join(" and "));
    }
    Ok(())
}

/// The workspace (what pthwatch ships and builds with), and the fuzz crate, which has its
/// own lock file outside the workspace.
const MANIFESTS: [&str; 2] = ["Cargo.toml", "fuzz/Cargo.toml"];

fn check_manifest(manifest: &str, db: Option<&PreparedDb>, checks: &[&str]) -> Result<()> {
    let manifest_path = workspace_root().join(manifest);
    println!();
    println!("xtask: auditing {manifest}");
    // cargo-deny runs `cargo metadata` offline, which needs every crate's sources: fetch
    // them first (from crates.io only, and nothing when they are already here).
    run_inherit(
        cargo()
            .args(["fetch", "--locked", "--manifest-path"])
            .arg(&manifest_path),
    )?;

    // The report people read, with inclusion graphs; its exit status decides.
    let mut human = deny_command(&manifest_path, db, checks, false);
    eprintln!("+ {}", display(&human));
    let status = human
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{}`", display(&human)))?;
    // The same check as JSON lines, for the summary.
    let json = deny_command(&manifest_path, db, checks, true)
        .stdin(Stdio::null())
        .output()
        .context("running cargo deny for the summary")?;
    let report = parse_report(&String::from_utf8_lossy(&json.stderr));

    println!();
    println!(
        "xtask: audit summary of {manifest} ({})",
        tool_version_line()
    );
    match &db {
        Some(db) => println!(
            "  advisory db: {} ({} advisories, newest {}, {} days old{})",
            db.source.display(),
            db.advisories,
            db.newest.as_deref().unwrap_or("undated"),
            db.age_days,
            if db.age_days > STALE_AFTER_DAYS {
                "; warning: advisories published since then are not checked"
            } else {
                ""
            }
        ),
        None => println!("  advisory db: none found: advisories SKIPPED"),
    }
    for check in CHECKS {
        let line = match report.totals.iter().find(|t| t.check == check) {
            _ if !checks.contains(&check) => "skipped".to_owned(),
            Some(t) => format!(
                "{:<6} {} errors, {} warnings",
                if t.errors == 0 { "ok" } else { "FAILED" },
                t.errors,
                t.warnings
            ),
            None => "no result".to_owned(),
        };
        println!("  {check:<11} {line}");
    }
    for f in &report.findings {
        println!("  {:<8} {:<31} {}", f.severity, f.code, f.message);
    }
    let errors: u64 = report.totals.iter().map(|t| t.errors).sum();
    let warnings: u64 = report.totals.iter().map(|t| t.warnings).sum();
    println!("xtask: audit of {manifest}: {errors} errors, {warnings} warnings");
    if report.totals.is_empty() {
        bail!("cargo deny printed no summary ({status}): see its output above");
    }
    if !status.success() || errors > 0 {
        bail!(
            "cargo deny found problems ({status}); the report above says where. Rerun by hand: \
             {DB_ROOT_ENV}={} cargo deny --offline --locked --manifest-path {manifest} check",
            db.map_or_else(|| "<none>".to_owned(), |d| d.root.display().to_string())
        );
    }
    Ok(())
}

fn tool_version_line() -> String {
    format!("cargo-deny {}", tools::CARGO_DENY.version)
}

fn deny_command(manifest: &Path, db: Option<&PreparedDb>, checks: &[&str], json: bool) -> Command {
    let mut cmd = cargo();
    cmd.args(["deny", "--offline", "--locked", "--color", "never"]);
    if json {
        cmd.args(["--format", "json"]);
    }
    let root = workspace_root();
    cmd.arg("--manifest-path")
        .arg(manifest)
        .arg("--config")
        .arg(root.join("deny.toml"))
        .arg("check")
        .args(checks);
    if let Some(db) = db {
        cmd.env(DB_ROOT_ENV, &db.root);
    }
    cmd
}

/// The explicit database if given (it must exist: a typo should not silently skip the
/// check), else the first candidate that has a `crates/` directory.
fn find_advisory_db(explicit: Option<&Path>, candidates: &[PathBuf]) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        if !path.join("crates").is_dir() {
            bail!(
                "{} has no crates/ directory: not a RustSec advisory database",
                path.display()
            );
        }
        return Ok(Some(path.to_path_buf()));
    }
    Ok(candidates
        .iter()
        .find(|c| c.join("crates").is_dir())
        .cloned())
}

/// `advisory-db-<xxh64>`: cargo-deny's directory for the default database.
fn db_dir_name() -> String {
    let url = RUSTSEC_URL.to_lowercase();
    let name = url.rsplit('/').next().unwrap_or("empty_");
    format!("{name}-{:016x}", xxh64(url.as_bytes(), DB_URL_SEED))
}

struct PreparedDb {
    /// Where it came from.
    source: PathBuf,
    /// What `db-path` points at.
    root: PathBuf,
    advisories: usize,
    newest: Option<String>,
    age_days: i64,
}

fn prepare_db(source: &Path, root: &Path) -> Result<PreparedDb> {
    let dir = root.join(db_dir_name());
    if dir.exists() {
        // The copy may be read-only (it came from a read-only tree).
        make_writable(&dir)?;
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join(".git")).with_context(|| format!("creating {}", dir.display()))?;
    let mut newest: Option<(i64, String)> = None;
    let mut advisories = 0;
    copy_tree(&source.join("crates"), &dir.join("crates"), &mut |text| {
        advisories += 1;
        if let Some(date) = advisory_date(text)
            && newest.as_ref().is_none_or(|(d, _)| date.0 > *d)
        {
            newest = Some(date);
        }
    })?;
    if advisories == 0 {
        bail!("{} holds no advisories", source.join("crates").display());
    }
    let now_days = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 86_400,
    )
    .unwrap_or(i64::MAX);
    let (fetched, age_days) = match &newest {
        Some((days, _)) => (
            UNIX_EPOCH + Duration::from_secs(u64::try_from(*days).unwrap_or(0) * 86_400),
            now_days - days,
        ),
        None => (SystemTime::now(), 0),
    };
    let fetch_head = dir.join(".git").join("FETCH_HEAD");
    fs::write(
        &fetch_head,
        format!(
            "plain-file copy of {} made by `cargo xtask audit`; dated with its newest advisory\n",
            source.display()
        ),
    )?;
    fs::File::options()
        .write(true)
        .open(&fetch_head)?
        .set_modified(fetched)
        .with_context(|| format!("dating {}", fetch_head.display()))?;
    Ok(PreparedDb {
        source: source.to_path_buf(),
        root: root.to_path_buf(),
        advisories,
        newest: newest.map(|(_, d)| d),
        age_days,
    })
}

/// Copies the `.md` advisories under `from`; `seen` gets each one's text.
fn copy_tree(from: &Path, to: &Path, seen: &mut dyn FnMut(&str)) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, seen)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            seen(&text);
            fs::write(&target, &text).with_context(|| format!("writing {}", target.display()))?;
        }
    }
    Ok(())
}

fn make_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            make_writable(&path)?;
        }
    }
    let mut perms = fs::metadata(dir)?.permissions();
    perms.set_mode(perms.mode() | 0o700);
    fs::set_permissions(dir, perms)?;
    Ok(())
}

/// The `date = "YYYY-MM-DD"` of an advisory's front matter, as (days since 1970, text).
fn advisory_date(text: &str) -> Option<(i64, String)> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("date"))?
        .trim_start()
        .strip_prefix('=')?
        .trim()
        .trim_matches('"');
    let mut parts = value.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((days_from_civil(y, m, d), value.to_owned()))
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    check: String,
    errors: u64,
    warnings: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Finding {
    severity: String,
    code: String,
    message: String,
}

#[derive(Debug, Default)]
struct Report {
    totals: Vec<Totals>,
    findings: Vec<Finding>,
}

/// cargo-deny's `--format json` output: one object per line, `diagnostic`s and a final
/// `summary` of counts per check. Notes and helps are not findings.
fn parse_report(lines: &str) -> Report {
    let mut report = Report::default();
    for line in lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        match v["type"].as_str() {
            Some("diagnostic") => {
                let severity = fields["severity"].as_str().unwrap_or("?");
                if matches!(severity, "note" | "help") {
                    continue;
                }
                let mut message = fields["message"].as_str().unwrap_or("").to_owned();
                if let Some(id) = fields["advisory"]["id"].as_str() {
                    message = format!("{id}: {message}");
                }
                report.findings.push(Finding {
                    severity: severity.to_owned(),
                    code: fields["code"].as_str().unwrap_or("").to_owned(),
                    message,
                });
            }
            Some("summary") => {
                if let Some(checks) = fields.as_object() {
                    for (check, counts) in checks {
                        report.totals.push(Totals {
                            check: check.clone(),
                            errors: counts["errors"].as_u64().unwrap_or(0),
                            warnings: counts["warnings"].as_u64().unwrap_or(0),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_database_directory_like_cargo_deny() {
        // cargo-deny 0.20.2 loads the database from this directory (checked by running it).
        assert_eq!(db_dir_name(), "advisory-db-3157b0e258782691");
    }

    #[test]
    fn reads_advisory_dates() {
        let text = "```toml\n[advisory]\nid = \"RUSTSEC-2026-0001\"\npackage = \"x\"\n\
                    date = \"2026-08-20\"\n```\n# Title\n";
        assert_eq!(advisory_date(text), Some((20_685, "2026-08-20".to_owned())));
        assert_eq!(advisory_date("date = \"2026-13-01\""), None);
        assert_eq!(advisory_date("no date here"), None);
    }

    #[test]
    fn summarises_cargo_deny_json() {
        let out = r#"{"type":"diagnostic","fields":{"severity":"warning","code":"duplicate","message":"found 2 duplicate entries for crate 'syn'"}}
{"type":"diagnostic","fields":{"severity":"error","code":"vulnerability","message":"Use after free","advisory":{"id":"RUSTSEC-2026-0001"}}}
{"type":"diagnostic","fields":{"severity":"help","code":"license-allowed","message":"fine"}}
not json
{"type":"summary","fields":{"advisories":{"errors":1,"warnings":0,"notes":0,"helps":0},"bans":{"errors":0,"warnings":1,"notes":0,"helps":0}}}"#;
        let r = parse_report(out);
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings[1].message, "RUSTSEC-2026-0001: Use after free");
        assert_eq!(
            r.totals,
            [
                Totals {
                    check: "advisories".into(),
                    errors: 1,
                    warnings: 0
                },
                Totals {
                    check: "bans".into(),
                    errors: 0,
                    warnings: 1
                },
            ]
        );
    }

    #[test]
    fn finds_the_database_or_nothing() {
        let dir = std::env::temp_dir().join(format!("xtask-advdb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let db = dir.join("db");
        fs::create_dir_all(db.join("crates")).unwrap();
        let absent = dir.join("absent");
        assert_eq!(
            find_advisory_db(None, &[absent.clone(), db.clone()]).unwrap(),
            Some(db.clone())
        );
        assert_eq!(
            find_advisory_db(None, std::slice::from_ref(&absent)).unwrap(),
            None
        );
        assert!(find_advisory_db(Some(&absent), std::slice::from_ref(&db)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
