//! The configuration parser on arbitrary text (`Config::from_toml`, the path `pthwatch
//! config check` and a SIGHUP reload take).
//!
//! Properties: nothing panics; a refused file has at least one error, and every error
//! points at a line of the input (1-based, within the text, with that line's text and a
//! column inside it); warnings that carry a place obey the same rules; an accepted file
//! gives rule modes for every rule.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use monitor::config::{Config, ConfigErrors, Diagnostic, Level};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    match Config::from_toml(text, file, false) {
        Ok(loaded) => {
            assert_eq!(loaded.source.as_deref(), Some(file));
            for w in &loaded.warnings {
                assert_eq!(w.level, Level::Warning, "{w}");
                check_place(text, w, false);
            }
            let _ = loaded.config.rule_modes();
        }
        Err(e) => {
            let ConfigErrors::Invalid { path, diagnostics } = &e else {
                panic!("no file is read, yet: {e}");
            };
            assert_eq!(path, file);
            assert!(e.error_count() >= 1, "{e}");
            for d in diagnostics {
                check_place(text, d, d.level == Level::Error);
            }
            let _ = e.to_string();
        }
    }
});

/// A diagnostic names a real line of `text` and a column inside it.
fn check_place(text: &str, d: &Diagnostic, required: bool) {
    assert_eq!(d.file, Path::new("fuzz.toml"));
    let Some(l) = &d.location else {
        assert!(!required, "error without a line: {d}");
        return;
    };
    // Lines as the parser counts them: split at `\n`, a trailing `\r` is not shown.
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        l.line >= 1 && l.line <= lines.len(),
        "line {} of {}: {d}",
        l.line,
        lines.len()
    );
    let line = lines[l.line - 1].trim_end_matches('\r');
    assert_eq!(l.source_line, line, "{d}");
    let chars = text
        .split('\n')
        .nth(l.line - 1)
        .map_or(0, |s| s.chars().count());
    assert!(
        l.column >= 1 && l.column <= chars + 1,
        "column {} of {chars}: {d}",
        l.column
    );
    assert!(l.width >= 1);
    assert!(d.excerpt().is_some());
}
