//! The inventory for people (`pthwatch scan`), and the gate that decides its exit status.
//! Everything shown comes from files an attacker may have written, so control characters
//! are escaped before they reach a terminal.
use std::fmt::Write as _;

use super::{
    classify::{HookClass, OwnerCheck},
    discover::Inventory,
    text::{display_path, printable, truncate_chars},
};

const DIST_WIDTH: usize = 28;
const LINE_WIDTH: usize = 100;

/// Whether any hook runs code that is not a known-benign form (`Unknown` or `Risky`):
/// the gate `pthwatch scan` fails on.
pub fn has_unknown_executable(inv: &Inventory) -> bool {
    inv.hooks.iter().any(|h| h.class.is_unknown_executable())
}

/// One row per hook (class, kind, distribution, SHA-256 prefix, path), the first
/// executable line (the first risky one when there is one) and the findings below it,
/// then a summary line and the errors.
pub fn render_table(inv: &Inventory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<13} {:<DIST_WIDTH$} {:<12} PATH",
        "CLASS", "KIND", "DISTRIBUTION", "SHA256"
    );
    for h in &inv.hooks {
        let dist = h.distribution.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<8} {:<13} {:<DIST_WIDTH$} {:<12} {}",
            h.class.name(),
            h.kind.as_str(),
            truncate_chars(&printable(dist), DIST_WIDTH),
            h.sha256.get(..12).unwrap_or(&h.sha256),
            printable(&display_path(&h.path)),
        );
        let shown = h
            .exec_lines
            .iter()
            .find(|l| !l.findings.is_empty())
            .or_else(|| h.exec_lines.first());
        if let Some(line) = shown {
            let text = truncate_chars(&printable(&line.text), LINE_WIDTH);
            let _ = writeln!(out, "{:9}line {}: {text}", "", line.lineno);
        }
        match &h.class {
            HookClass::Risky { findings } => {
                let list: Vec<String> = findings.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "{:9}findings: {}",
                    "",
                    truncate_chars(&printable(&list.join("; ")), LINE_WIDTH)
                );
            }
            HookClass::Benign { form } => {
                let _ = writeln!(out, "{:9}form: {form}", "");
            }
            HookClass::Inert | HookClass::Unknown => {}
        }
        if let OwnerCheck::Mismatch { expected, found } = &h.owner_check {
            let _ = writeln!(
                out,
                "{:9}owner: expected {expected}, shipped by {}",
                "",
                printable(found)
            );
        } else if let OwnerCheck::Missing { expected } = &h.owner_check {
            let _ = writeln!(
                out,
                "{:9}owner: expected {}, none found",
                "",
                printable(expected)
            );
        }
    }
    let _ = writeln!(out, "\n{}", summary(inv));
    for e in &inv.errors {
        let _ = writeln!(out, "warning: {}", printable(e));
    }
    out
}

fn summary(inv: &Inventory) -> String {
    let count = |name: &str| inv.hooks.iter().filter(|h| h.class.name() == name).count();
    format!(
        "{} hooks ({} benign, {} inert, {} unknown, {} risky) in {} directories of {} interpreters; {} warnings",
        inv.hooks.len(),
        count("benign"),
        count("inert"),
        count("unknown"),
        count("risky"),
        inv.site_dirs.len(),
        inv.interpreters.len(),
        inv.errors.len(),
    )
}
