//! The startup-hook parser and classifier on arbitrary bytes: `.pth` files and Python
//! source hooks (`sitecustomize`, `usercustomize`, `.start`), in any encoding, with lines
//! of any length.
//!
//! Input: byte 0 picks the hook kind and file name, byte 1 the owner and flags, the rest
//! is the file's content. With the "huge" flag the content is repeated to 16 KiB, past
//! every length limit of the classifier (the lines kept, the forms compared, the long-line
//! and blob findings), so lines far longer than libFuzzer's inputs are classified too.
//! (Up to the 1 MiB read limit it would be a few inputs a second; a unit test covers that.)
//!
//! Properties: nothing panics; `parse_pth` and the classifier agree on which lines run;
//! line numbers rise; kept text is bounded; the class follows from the lines (risky iff
//! a finding, inert iff nothing runs, benign only when every line is a known form).
#![no_main]

use std::ffi::OsStr;

use libfuzzer_sys::fuzz_target;
use monitor::inventory::{
    ClassifyInput, HookClass, HookKind, LINE_KEEP, Owner, PthLineKind, classify, parse_pth,
};

/// What the "huge" flag grows the content to.
const HUGE: usize = 16 * 1024;
const NAMES: [&str; 8] = [
    "distutils-precedence.pth",
    "_virtualenv.pth",
    "__editable__.demo_pkg-1.0.pth",
    "google_api_core-2.0-py3.9-nspkg.pth",
    "litellm_init.pth",
    "coverage.pth",
    "x-nspkg.pth",
    "\u{fffd}.pth",
];
const OWNERS: [&str; 6] = [
    "setuptools",
    "demo-pkg",
    "google_api_core",
    "coverage",
    "pytest-cov",
    "litellm",
];

fuzz_target!(|data: &[u8]| {
    let [pick, flags, content @ ..] = data else {
        return;
    };
    let kind = match pick & 3 {
        0 | 1 => HookKind::Pth,
        2 => HookKind::Sitecustomize,
        _ => match pick >> 7 {
            0 => HookKind::Usercustomize,
            _ => HookKind::Start,
        },
    };
    let file_name = OsStr::new(NAMES[usize::from(pick >> 2) % NAMES.len()]);
    let owner = (flags & 1 != 0).then(|| Owner {
        name: OWNERS[usize::from(flags >> 4) % OWNERS.len()].to_owned(),
        version: "1.0".to_owned(),
        editable: flags & 2 != 0,
    });
    let huge;
    let content = if flags & 4 != 0 && !content.is_empty() {
        huge = content.repeat(HUGE / content.len());
        &huge[..]
    } else {
        content
    };
    let truncated = flags & 8 != 0;
    let c = classify(&ClassifyInput {
        kind,
        file_name,
        content,
        owner: owner.as_ref(),
        truncated,
        opaque: false,
    });

    // Lines: rising numbers, text bounded by LINE_KEEP bytes of input, real length kept.
    for pair in c.exec_lines.windows(2) {
        assert!(pair[0].lineno < pair[1].lineno, "{:?}", c.exec_lines);
    }
    for l in &c.exec_lines {
        assert!(l.lineno >= 1);
        assert!(l.length <= content.len());
        assert!(l.text.chars().count() <= LINE_KEEP.min(l.length));
    }

    // The class follows from the lines.
    let any_finding = truncated || c.exec_lines.iter().any(|l| !l.findings.is_empty());
    match &c.class {
        HookClass::Risky { findings } => {
            assert!(any_finding && !findings.is_empty(), "{c:?}");
        }
        HookClass::Inert => assert!(!any_finding && c.exec_lines.is_empty(), "{c:?}"),
        HookClass::Unknown => assert!(!any_finding && !c.exec_lines.is_empty(), "{c:?}"),
        HookClass::Benign { form } => {
            assert!(!any_finding && !form.is_empty(), "{c:?}");
            assert!(c.exec_lines.iter().all(|l| l.form.is_some()), "{c:?}");
            assert!(!c.owner_check.fails(), "{c:?}");
        }
    }
    assert_eq!(
        c.class.is_unknown_executable(),
        matches!(c.class, HookClass::Unknown | HookClass::Risky { .. })
    );

    if kind == HookKind::Pth {
        // The whole-file parser and the classifier see the same executable lines.
        let parsed = parse_pth(content);
        let exec: Vec<usize> = parsed
            .iter()
            .filter(|l| l.kind == PthLineKind::Exec)
            .map(|l| l.lineno)
            .collect();
        let classified: Vec<usize> = c.exec_lines.iter().map(|l| l.lineno).collect();
        assert_eq!(exec, classified);
        let paths = parsed
            .iter()
            .filter(|l| l.kind == PthLineKind::Path)
            .count();
        assert_eq!(c.path_entries.len(), paths.min(256));
        for l in &parsed {
            // CPython runs exactly the lines starting with `import` and a space or a tab.
            let runs = l.text.starts_with("import ") || l.text.starts_with("import\t");
            assert_eq!(runs, l.kind == PthLineKind::Exec, "{l:?}");
            assert!(!l.text.contains(['\n', '\r']), "{l:?}");
        }
    } else {
        assert!(c.path_entries.is_empty());
    }
});
