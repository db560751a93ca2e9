//! `pthwatch scan`: the startup-hook inventory as a gate for build hosts and unpacked
//! images. It only reads files: running an interpreter to ask for its paths would execute
//! the very hooks being judged.
use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde::Serialize;

use crate::inventory::{
    DiscoverOptions, HookClass, Inventory, display_path, has_unknown_executable, render_table,
};

/// No hook fails the gate.
const CLEAN: u8 = 0;
/// A hook fails the gate. (2, for errors, is what `main` returns for any `Err`.)
const FAILED: u8 = 1;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  clean: no hook fails the gate chosen by --fail-on
  1  a hook fails the gate: with --fail-on unknown (the default), an executable hook that
     is not a known-benign form (class unknown or risky); with --fail-on risky, a hook
     classified risky; never with --fail-on never
  2  usage error, or the root or a --site-dir cannot be used, or the report cannot be
     written

Files and directories inside the root that cannot be read are listed as warnings (the
`errors` array in JSON) and do not change the exit status.";

// No doc comment here: clap would take it as the subcommand's `about`, which `cli.rs` sets.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct ScanArgs {
    /// Print JSON (interpreters, site dirs, hooks with their executable lines and
    /// findings, warnings, and the gate's verdict) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Inspect this directory as the root filesystem, e.g. a container image unpacked on
    /// disk. Paths in the report are the ones seen inside it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also read the `.pth`/`.start` files of this directory, whatever it is called
    /// (repeatable). A path inside --root; relative paths are allowed only with --root /.
    #[arg(long = "site-dir", value_name = "DIR")]
    pub site_dirs: Vec<PathBuf>,
    /// Which hooks make the exit status 1.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = FailOn::Unknown)]
    pub fail_on: FailOn,
}

/// Which hooks fail the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOn {
    /// Any executable hook that is not a known-benign form (class unknown or risky).
    Unknown,
    /// Only hooks classified risky (named findings such as process spawn or decoding).
    Risky,
    /// None: report only, always exit 0.
    Never,
}

impl FailOn {
    fn fails(self, class: &HookClass) -> bool {
        match self {
            Self::Unknown => class.is_unknown_executable(),
            Self::Risky => matches!(class, HookClass::Risky { .. }),
            Self::Never => false,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Risky => "risky",
            Self::Never => "never",
        }
    }
}

/// Why a scan could not run. Each one is exit status 2. The underlying error is part of
/// the message (not a `source`), so `main`'s `{:#}` does not print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(
        "cannot use {} as the root to scan: {error}; pass an existing directory with --root",
        display_path(.path)
    )]
    Root { path: PathBuf, error: io::Error },
    #[error(
        "--root {} is not a directory; pass the directory a filesystem or image was unpacked into",
        display_path(.0)
    )]
    RootNotDirectory(PathBuf),
    #[error(
        "--site-dir {} is relative; with --root, give the absolute path an interpreter inside \
         the root would see",
        display_path(.0)
    )]
    RelativeSiteDir(PathBuf),
    #[error(
        "--site-dir {} is not a directory inside root {}; check the path (it is resolved inside --root)",
        display_path(.dir),
        display_path(.root)
    )]
    SiteDir { dir: PathBuf, root: PathBuf },
    #[error(
        "cannot find the working directory to resolve --site-dir {}: {error}",
        display_path(.dir)
    )]
    WorkingDir { dir: PathBuf, error: io::Error },
    #[error("cannot encode the scan report as JSON: {0}")]
    Json(serde_json::Error),
    #[error("cannot write the scan report: {0}")]
    Output(io::Error),
}

/// Hook counts by class. `executable` is every hook that runs something (all but inert).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub hooks: usize,
    pub executable: usize,
    pub benign: usize,
    pub inert: usize,
    pub unknown: usize,
    pub risky: usize,
    /// Unreadable files and directories (listed in `errors`).
    pub warnings: usize,
}

impl Summary {
    fn of(inv: &Inventory) -> Self {
        let mut s = Self {
            hooks: inv.hooks.len(),
            warnings: inv.errors.len(),
            ..Self::default()
        };
        for h in &inv.hooks {
            match h.class {
                HookClass::Benign { .. } => s.benign += 1,
                HookClass::Inert => s.inert += 1,
                HookClass::Unknown => s.unknown += 1,
                HookClass::Risky { .. } => s.risky += 1,
            }
        }
        s.executable = s.hooks - s.inert;
        s
    }
}

/// The verdict that decides the exit status.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub fail_on: FailOn,
    pub failed: bool,
    pub exit_status: u8,
    /// Paths (inside the root) of the hooks that fail it.
    pub failing: Vec<String>,
}

impl Gate {
    fn of(inv: &Inventory, fail_on: FailOn) -> Self {
        let failing: Vec<String> = inv
            .hooks
            .iter()
            .filter(|h| fail_on.fails(&h.class))
            .map(|h| display_path(&h.path))
            .collect();
        let failed = match fail_on {
            // The inventory's own gate.
            FailOn::Unknown => has_unknown_executable(inv),
            FailOn::Risky | FailOn::Never => !failing.is_empty(),
        };
        Self {
            fail_on,
            failed,
            exit_status: if failed { FAILED } else { CLEAN },
            failing,
        }
    }
}

/// Everything `scan` prints; the JSON form is this, serialised.
#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    /// The root inspected, as given after resolving symlinks.
    pub root: String,
    pub gate: Gate,
    pub summary: Summary,
    /// `interpreters`, `site_dirs`, `hooks`, `errors`.
    #[serde(flatten)]
    pub inventory: Inventory,
}

impl ScanReport {
    /// The table for people, then the gate's verdict.
    pub fn render_text(&self) -> String {
        let s = &self.summary;
        let verdict = if self.gate.failed { "FAILED" } else { "passed" };
        format!(
            "{}gate (--fail-on {}): {verdict}; {} hooks, {} executable, {} unknown, {} risky\n",
            render_table(&self.inventory),
            self.gate.fail_on.as_str(),
            s.hooks,
            s.executable,
            s.unknown,
            s.risky,
        )
    }
}

/// Runs the scan, prints the report on stdout, and returns the gate's exit status.
pub fn scan(args: &ScanArgs) -> Result<ExitCode, ScanError> {
    let status = scan_to(args, &mut io::stdout().lock())?;
    Ok(ExitCode::from(status))
}

/// `scan`, writing to `out`; returns the exit status (0 or 1).
fn scan_to(args: &ScanArgs, out: &mut impl Write) -> Result<u8, ScanError> {
    let report = inspect(args)?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(ScanError::Json)?;
        json.push('\n');
        json
    } else {
        report.render_text()
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ScanError::Output)?;
    Ok(report.gate.exit_status)
}

/// Checks the arguments and builds the report (no output).
pub fn inspect(args: &ScanArgs) -> Result<ScanReport, ScanError> {
    let root = resolve_root(&args.root)?;
    let extra_site_dirs = args
        .site_dirs
        .iter()
        .map(|d| site_dir(&root, d))
        .collect::<Result<Vec<_>, _>>()?;
    let inventory = Inventory::discover(&DiscoverOptions {
        homes: homes_inside(&root),
        root: root.clone(),
        extra_site_dirs,
        extra_interpreters: Vec::new(),
    });
    Ok(ScanReport {
        root: display_path(&root),
        gate: Gate::of(&inventory, args.fail_on),
        summary: Summary::of(&inventory),
        inventory,
    })
}

/// The root, absolute and with symlinks resolved, so that `//` or a link to `/` is still
/// the host root.
fn resolve_root(root: &Path) -> Result<PathBuf, ScanError> {
    let resolved = std::fs::canonicalize(root).map_err(|error| ScanError::Root {
        path: root.to_owned(),
        error,
    })?;
    if !resolved.is_dir() {
        return Err(ScanError::RootNotDirectory(root.to_owned()));
    }
    Ok(resolved)
}

/// A `--site-dir` as the in-root path discovery expects. Checked here because a typo in
/// a CI gate must not pass silently as "no hooks there".
fn site_dir(root: &Path, dir: &Path) -> Result<PathBuf, ScanError> {
    let host_root = root == Path::new("/");
    let inner = if dir.is_absolute() {
        dir.to_owned()
    } else if host_root {
        std::path::absolute(dir).map_err(|error| ScanError::WorkingDir {
            dir: dir.to_owned(),
            error,
        })?
    } else {
        return Err(ScanError::RelativeSiteDir(dir.to_owned()));
    };
    let on_host = root.join(inner.strip_prefix("/").unwrap_or(&inner));
    if !on_host.is_dir() {
        return Err(ScanError::SiteDir {
            dir: dir.to_owned(),
            root: root.to_owned(),
        });
    }
    Ok(inner)
}

/// Home directories (user sites, venvs), as in-root paths. On the host, the same list the
/// daemon uses, so both see the same hooks; in another root, none given, and discovery
/// takes `/root`, `/home/*` and login accounts from that root's `/etc/passwd` (without
/// warning when an image has no passwd file).
fn homes_inside(root: &Path) -> Vec<PathBuf> {
    if root == Path::new("/") {
        crate::credentials::discover_homes(root)
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
