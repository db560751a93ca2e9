//! Classification of a hook's content: inert (nothing runs), benign (every executable
//! line is a known form, shipped by the distribution that form belongs to), risky (named
//! findings), or unknown (runs, not recognised, nothing risky seen).
use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _, path::PathBuf};

use serde::Serialize;

use super::{
    LINE_KEEP,
    benign::{self, Expect},
    findings::{Finding, FindingKind, Scanner},
    kind::HookKind,
    owners::Owner,
    pth::{is_comment_or_blank, is_exec, split_lines},
    text::{lossy_prefix, normalize_dist_name},
};

/// Path entries kept per `.pth` (they are searched for `sitecustomize` later).
const MAX_PATH_ENTRIES: usize = 256;
/// Findings kept per hook.
const MAX_FINDINGS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum HookClass {
    /// Every executable line is a known-benign form (`form` names them).
    Benign { form: String },
    /// No executable line (only path entries or comments).
    Inert,
    /// Executable, not recognised, nothing risky found.
    Unknown,
    /// Executable with risky constructs.
    Risky { findings: Vec<Finding> },
}

impl HookClass {
    /// What the kernel keeps for this hook's inode: its class, and whether it may defer
    /// work to the interpreter's exit (`hook_flags::DEFERS`: its code is hidden, or it
    /// registers exit handlers) or plants code in the program (`PLANTS`, with `DEFERS`).
    pub fn kernel_info(&self) -> monitor_common::HookInfo {
        let flags = match self {
            Self::Risky { findings } => findings.iter().fold(0, |acc, f| acc | hook_flags(f.kind)),
            _ => 0,
        };
        monitor_common::HookInfo {
            class: self.kernel_class(),
            flags,
        }
    }

    /// The `monitor_common::hook_class` value the kernel keeps for this hook's inode.
    pub fn kernel_class(&self) -> u32 {
        use monitor_common::hook_class;
        match self {
            Self::Benign { .. } => hook_class::BENIGN,
            Self::Inert => hook_class::INERT,
            Self::Unknown => hook_class::UNKNOWN,
            Self::Risky { .. } => hook_class::RISKY,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Benign { .. } => "benign",
            Self::Inert => "inert",
            Self::Unknown => "unknown",
            Self::Risky { .. } => "risky",
        }
    }

    /// Runs code that is not a known-benign form.
    pub fn is_unknown_executable(&self) -> bool {
        matches!(self, Self::Unknown | Self::Risky { .. })
    }
}

/// One line that runs at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecLine {
    /// 1-based.
    pub lineno: usize,
    /// At most `LINE_KEEP` bytes, lossy UTF-8.
    pub text: String,
    /// Real length in bytes.
    pub length: usize,
    pub findings: Vec<Finding>,
    /// The known-benign form this line is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
}

/// Whether the distribution that ships a benign-looking hook is the one its form belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OwnerCheck {
    /// No benign form, or one that anyone may write.
    NotApplicable,
    /// The expected distribution (or, for installer-written files, none) owns it.
    Expected { expected: String },
    /// No installer record lists the file, so the owner cannot be confirmed.
    Unverified { expected: String },
    /// The form needs a known owner (an editable install) and there is none: not benign.
    Missing { expected: String },
    /// Another distribution ships it: not benign.
    Mismatch { expected: String, found: String },
}

impl OwnerCheck {
    fn rank(&self) -> u8 {
        match self {
            Self::NotApplicable => 0,
            Self::Expected { .. } => 1,
            Self::Unverified { .. } => 2,
            Self::Missing { .. } => 3,
            Self::Mismatch { .. } => 4,
        }
    }

    /// Rules out `Benign`.
    pub fn fails(&self) -> bool {
        self.rank() >= 3
    }
}

/// What classification needs to know about a hook file.
pub struct Input<'a> {
    pub kind: HookKind,
    pub file_name: &'a OsStr,
    /// The first `READ_CAP` bytes.
    pub content: &'a [u8],
    pub owner: Option<&'a Owner>,
    /// The file is larger than what `content` holds.
    pub truncated: bool,
    /// Compiled code (`.pyc` without source, extension module): nothing to read.
    pub opaque: bool,
}

/// The verdict on a hook's content, with the lines that run and what they add to `sys.path`.
#[derive(Debug)]
pub struct Classified {
    pub exec_lines: Vec<ExecLine>,
    pub class: HookClass,
    pub owner_check: OwnerCheck,
    /// Directories a `.pth` adds to `sys.path` (raw, relative ones unresolved).
    pub path_entries: Vec<PathBuf>,
}

/// Classifies a hook's content. Never fails and never panics: the bytes are whatever the
/// file's author wrote (any encoding, any line length).
pub fn classify(input: &Input<'_>) -> Classified {
    let mut file_findings = Vec::new();
    if input.truncated {
        file_findings.push(Finding::new(
            FindingKind::OversizedFile,
            "larger than the read limit",
        ));
    }
    let (exec_lines, owner_check, path_entries) = if input.opaque {
        let what = if input.file_name.as_bytes().ends_with(b".so") {
            "extension module"
        } else {
            "bytecode without source"
        };
        file_findings.push(Finding::new(FindingKind::OpaqueCode, what));
        (Vec::new(), OwnerCheck::NotApplicable, Vec::new())
    } else if input.kind.is_source() {
        let (lines, check) = source_lines(input);
        (lines, check, Vec::new())
    } else {
        pth_lines(input)
    };
    let class = decide(&exec_lines, &owner_check, file_findings);
    Classified {
        exec_lines,
        class,
        owner_check,
        path_entries,
    }
}

fn decide(lines: &[ExecLine], check: &OwnerCheck, mut findings: Vec<Finding>) -> HookClass {
    findings.extend(lines.iter().flat_map(|l| l.findings.iter().cloned()));
    let mut seen = std::collections::HashSet::new();
    findings.retain(|f| seen.insert((f.kind, f.matched.clone())));
    findings.truncate(MAX_FINDINGS);
    if !findings.is_empty() {
        return HookClass::Risky { findings };
    }
    if lines.is_empty() {
        return HookClass::Inert;
    }
    let mut forms: Vec<&str> = Vec::new();
    for line in lines {
        match &line.form {
            Some(f) if !forms.contains(&f.as_str()) => forms.push(f),
            Some(_) => {}
            None => return HookClass::Unknown,
        }
    }
    if check.fails() {
        HookClass::Unknown
    } else {
        HookClass::Benign {
            form: forms.join(", "),
        }
    }
}

/// `.pth`: import lines run, everything else is a path.
fn pth_lines(input: &Input<'_>) -> (Vec<ExecLine>, OwnerCheck, Vec<PathBuf>) {
    let mut lines = Vec::new();
    let mut paths = Vec::new();
    let mut check = OwnerCheck::NotApplicable;
    let mut scanner = Scanner::default();
    for raw in split_lines(input.content) {
        if is_comment_or_blank(raw.bytes) {
            continue;
        }
        if !is_exec(raw.bytes) {
            if paths.len() < MAX_PATH_ENTRIES {
                paths.push(PathBuf::from(OsStr::from_bytes(raw.bytes.trim_ascii_end())));
            }
            continue;
        }
        let full = String::from_utf8_lossy(raw.bytes);
        let mut line = exec_line(raw.lineno, raw.bytes);
        match benign::match_line(&full) {
            Some(m) => {
                let c = check_owner(
                    m.form.expect,
                    m.ident.as_deref(),
                    input.file_name,
                    input.owner,
                );
                if c.rank() > check.rank() {
                    check = c;
                }
                line.form = Some(m.form.name.to_owned());
            }
            None => line.findings = scanner.line(&full, raw.bytes.len()),
        }
        lines.push(line);
    }
    (lines, check, paths)
}

/// `sitecustomize`/`usercustomize`/`.start`: Python source (PEP 829 entry points for
/// `.start`), every statement runs. Benign only as Debian's apport hook.
fn source_lines(input: &Input<'_>) -> (Vec<ExecLine>, OwnerCheck) {
    let statements: Vec<_> = split_lines(input.content)
        .into_iter()
        .filter(|l| !is_comment_or_blank(l.bytes.trim_ascii_start()))
        .collect();
    let texts: Vec<String> = statements
        .iter()
        .map(|l| String::from_utf8_lossy(l.bytes).into_owned())
        .collect();
    let debian = input.kind == HookKind::Sitecustomize && benign::is_debian_sitecustomize(&texts);
    let check = if debian {
        check_owner(Expect::Unowned, None, input.file_name, input.owner)
    } else {
        OwnerCheck::NotApplicable
    };
    let mut scanner = Scanner::default();
    let lines = statements
        .iter()
        .zip(&texts)
        .map(|(raw, full)| {
            let mut line = exec_line(raw.lineno, raw.bytes);
            if debian {
                line.form = Some(benign::DEBIAN_SITECUSTOMIZE_NAME.to_owned());
            } else {
                line.findings = scanner.line(full, raw.bytes.len());
            }
            line
        })
        .collect();
    (lines, check)
}

fn exec_line(lineno: usize, bytes: &[u8]) -> ExecLine {
    ExecLine {
        lineno,
        text: lossy_prefix(bytes, LINE_KEEP),
        length: bytes.len(),
        findings: Vec::new(),
        form: None,
    }
}

/// Whether `owner` is who the matched form says ships it.
fn check_owner(
    expect: Expect,
    ident: Option<&str>,
    file_name: &OsStr,
    owner: Option<&Owner>,
) -> OwnerCheck {
    const INSTALLER: &str = "no distribution (written by an installer)";
    match (expect, owner) {
        (Expect::Anyone, _) => OwnerCheck::NotApplicable,
        (Expect::Named(name), owner) => check_named(name, owner),
        (Expect::Unowned, None) => OwnerCheck::Expected {
            expected: INSTALLER.to_owned(),
        },
        (Expect::Unowned, Some(o)) => OwnerCheck::Mismatch {
            expected: INSTALLER.to_owned(),
            found: o.label(),
        },
        (Expect::Editable, owner) => check_editable(ident.unwrap_or(""), owner),
        (Expect::NspkgFileName, owner) => match nspkg_dist(file_name) {
            Some(name) => check_named(&name, owner),
            None => OwnerCheck::NotApplicable,
        },
    }
}

fn check_named(expected: &str, owner: Option<&Owner>) -> OwnerCheck {
    let expected = expected.to_owned();
    match owner {
        None => OwnerCheck::Unverified { expected },
        Some(o) if normalize_dist_name(&o.name) == normalize_dist_name(&expected) => {
            OwnerCheck::Expected { expected }
        }
        Some(o) => OwnerCheck::Mismatch {
            expected,
            found: o.label(),
        },
    }
}

/// An editable-install hook is benign only if the distribution named in it installed it
/// in editable mode: any wheel could otherwise ship `import _<itself>_editable`.
fn check_editable(ident: &str, owner: Option<&Owner>) -> OwnerCheck {
    let expected = format!("an editable install matching {ident}");
    let Some(o) = owner else {
        return OwnerCheck::Missing { expected };
    };
    let name = normalize_dist_name(&o.name);
    let ident = normalize_dist_name(ident);
    let matches = ident == name || ident.starts_with(&format!("{name}_"));
    if matches && o.editable {
        OwnerCheck::Expected { expected }
    } else {
        let found = if o.editable {
            o.label()
        } else {
            format!("{} (not editable)", o.label())
        };
        OwnerCheck::Mismatch { expected, found }
    }
}

/// `google_api_core-2.0-py3.9-nspkg.pth` -> `google_api_core`.
fn nspkg_dist(file_name: &OsStr) -> Option<String> {
    let name = file_name.to_str()?.strip_suffix("-nspkg.pth")?;
    Some(name.split('-').next().unwrap_or(name).to_owned())
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;

/// The `monitor_common::hook_flags` a finding in a hook's own text calls for. Hidden code
/// may have registered anything: its exit handlers are the hook's, but the program is not
/// put on its account for what it cannot be seen to plant.
pub(crate) fn hook_flags(kind: FindingKind) -> u32 {
    use monitor_common::hook_flags::{DEFERS, PLANTS};
    match kind {
        FindingKind::Planted => DEFERS | PLANTS,
        FindingKind::Decoding
        | FindingKind::EncodedBlob
        | FindingKind::OpaqueCode
        | FindingKind::Deferred => DEFERS,
        _ => 0,
    }
}
