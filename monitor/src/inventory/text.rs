//! Text helpers for untrusted bytes. Hook contents and file names come from whoever wrote
//! the file, so nothing here may panic on odd input, and nothing shown to a person may
//! carry terminal control sequences.
use std::{
    fmt::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use serde::{Serializer, ser::SerializeSeq as _};

/// Lossy UTF-8 of at most `max` bytes of `bytes` (a cut inside a character shows as U+FFFD).
pub(crate) fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// A path for people and JSON: valid UTF-8 as is, every invalid byte as `\xNN`, so two
/// different non-UTF-8 names never print the same (lossy U+FFFD would merge them).
pub fn display_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `s` with control characters escaped, for terminals: a hook line may hold ANSI escapes
/// meant to hide itself from whoever reads the table.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// PEP 503 name normalisation with `_` (the form used in file and module names), so
/// `Foo.Bar-baz` and `foo_bar_baz` compare equal.
pub(crate) fn normalize_dist_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('_');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// Python text with the whitespace that carries no meaning removed: runs of blanks become
/// one space, and blanks next to punctuation go. `import os ;  x = f( a )` and
/// `import os; x=f(a)` compare equal, so known-benign forms match however they are spaced,
/// while `import os` never becomes `importos`.
pub(crate) fn squash(s: &str) -> String {
    const PUNCT: &[char] = &[
        ';', ',', '(', ')', '[', ']', '=', ':', '.', '+', '-', '*', '/', '<', '>', '!', '%', '&',
        '|', '^', '~', '@',
    ];
    let mut out = String::with_capacity(s.len());
    let mut blank = false;
    for c in s.chars() {
        if matches!(c, ' ' | '\t' | '\x0c') {
            blank = !out.is_empty();
            continue;
        }
        if blank && !PUNCT.contains(&c) && !out.ends_with(PUNCT) {
            out.push(' ');
        }
        blank = false;
        out.push(c);
    }
    out
}

pub(crate) fn serialize_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&display_path(path))
}

pub(crate) fn serialize_opt_path<S: Serializer>(
    path: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&display_path(p)),
        None => s.serialize_none(),
    }
}

pub(crate) fn serialize_paths<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(paths.len()))?;
    for p in paths {
        seq.serialize_element(&display_path(p))?;
    }
    seq.end()
}

/// Cached bytecode as `{path, dev, ino}` objects (the tuple form is for the daemon).
pub(crate) fn serialize_bytecode<S: Serializer>(
    files: &[(PathBuf, u64, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Cached<'a> {
        #[serde(serialize_with = "serialize_path")]
        path: &'a Path,
        dev: u64,
        ino: u64,
    }
    let mut seq = s.serialize_seq(Some(files.len()))?;
    for (path, dev, ino) in files {
        seq.serialize_element(&Cached {
            path,
            dev: *dev,
            ino: *ino,
        })?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _};

    use super::*;

    #[test]
    fn non_utf8_paths_print_escaped_and_distinct() {
        let a = Path::new(OsStr::from_bytes(b"/s/\xff.pth"));
        let b = Path::new(OsStr::from_bytes(b"/s/\xfe.pth"));
        assert_eq!(display_path(a), "/s/\\xff.pth");
        assert_ne!(display_path(a), display_path(b));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\x1b[2Kb\n"), "a\\u{1b}[2Kb\\n");
    }

    #[test]
    fn squash_drops_meaningless_blanks_only() {
        assert_eq!(
            squash("  import os ;  x = f( a , b )  "),
            "import os;x=f(a,b)"
        );
        assert_eq!(squash("import\tos"), "import os");
        assert_eq!(squash("a  and  b"), "a and b");
    }

    #[test]
    fn dist_names_normalise() {
        assert_eq!(normalize_dist_name("Foo.Bar--baz"), "foo_bar_baz");
        assert_eq!(normalize_dist_name("pytest-cov"), "pytest_cov");
    }
}
