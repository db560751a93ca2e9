//! `.pth` parsing with CPython's `site.addpackage` semantics: a line starting with `#` is a
//! comment, a blank line is skipped, a line starting with `import` and a space or a tab is
//! passed to `exec`, every other line is a path appended to `sys.path`.
//!
//! Where CPython versions disagree, the parser takes the union, so that no line any
//! version would execute is missed: before 3.13 the file is read with universal newlines
//! (`\n`, `\r`, `\r\n`) and no BOM handling; from 3.13 it is decoded with `utf-8-sig` and
//! split with `str.splitlines`, which also breaks at `\v`, `\f`, `\x1c`-`\x1e`, NEL, LS
//! and PS. A payload hidden behind a form feed is therefore still an executable line.
use serde::Serialize;

use super::{LINE_KEEP, text::lossy_prefix};

/// What CPython does with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PthLineKind {
    /// Passed to `exec()` at every interpreter start.
    Exec,
    /// Joined to the site dir and appended to `sys.path` if it exists.
    Path,
}

/// One meaningful line of a `.pth` file (comments and blank lines are dropped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PthLine {
    /// 1-based, counting every line break any CPython version honours.
    pub lineno: usize,
    pub kind: PthLineKind,
    /// At most `LINE_KEEP` bytes, lossy UTF-8 (path lines without trailing whitespace).
    pub text: String,
    /// Real length in bytes.
    pub length: usize,
}

/// A line as bytes, before any lossy decoding: classification needs all of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawLine<'a> {
    pub lineno: usize,
    pub bytes: &'a [u8],
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// Parses `.pth` content. Never fails: any byte sequence is some sequence of lines.
pub fn parse_pth(content: &[u8]) -> Vec<PthLine> {
    split_lines(content)
        .into_iter()
        .filter(|l| !is_comment_or_blank(l.bytes))
        .map(|l| {
            let kind = if is_exec(l.bytes) {
                PthLineKind::Exec
            } else {
                PthLineKind::Path
            };
            let shown = match kind {
                PthLineKind::Exec => l.bytes,
                PthLineKind::Path => l.bytes.trim_ascii_end(),
            };
            PthLine {
                lineno: l.lineno,
                kind,
                text: lossy_prefix(shown, LINE_KEEP),
                length: l.bytes.len(),
            }
        })
        .collect()
}

/// `line.startswith(("import ", "import\t"))`.
pub(crate) fn is_exec(line: &[u8]) -> bool {
    line.starts_with(b"import ") || line.starts_with(b"import\t")
}

/// Comment or whitespace-only line, both skipped by `site`.
pub(crate) fn is_comment_or_blank(line: &[u8]) -> bool {
    line.starts_with(b"#") || line.iter().all(u8::is_ascii_whitespace)
}

/// Splits at every line break any CPython version honours (see the module docs). A
/// leading BOM is dropped: 3.13+ decodes with `utf-8-sig`, so `\ufeffimport os` runs there.
pub(crate) fn split_lines(content: &[u8]) -> Vec<RawLine<'_>> {
    let content = content.strip_prefix(BOM).unwrap_or(content);
    // A lone 0x85 is NEL only when 3.13 falls back to a Latin-1 style locale decode.
    let latin1_nel = std::str::from_utf8(content).is_err();
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < content.len() {
        let brk = break_len(&content[i..], latin1_nel);
        if brk == 0 {
            i += 1;
            continue;
        }
        lines.push(RawLine {
            lineno: lines.len() + 1,
            bytes: &content[start..i],
        });
        i += brk;
        start = i;
    }
    if start < content.len() {
        lines.push(RawLine {
            lineno: lines.len() + 1,
            bytes: &content[start..],
        });
    }
    lines
}

/// Length of the line break at the start of `rest`, 0 if there is none.
fn break_len(rest: &[u8], latin1_nel: bool) -> usize {
    match rest {
        [b'\r', b'\n', ..] => 2,
        [b'\n' | b'\r' | 0x0b | 0x0c | 0x1c | 0x1d | 0x1e, ..] => 1,
        [0xc2, 0x85, ..] => 2,
        [0xe2, 0x80, 0xa8 | 0xa9, ..] => 3,
        [0x85, ..] if latin1_nel => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(content: &[u8]) -> Vec<(usize, PthLineKind, String)> {
        parse_pth(content)
            .into_iter()
            .map(|l| (l.lineno, l.kind, l.text))
            .collect()
    }

    #[test]
    fn comments_blanks_paths_and_imports() {
        let got =
            kinds(b"# comment\n\n   \n/opt/lib\nimport os\nimport\tsys\nimportlib\n  import x\n");
        assert_eq!(
            got,
            vec![
                (4, PthLineKind::Path, "/opt/lib".into()),
                (5, PthLineKind::Exec, "import os".into()),
                (6, PthLineKind::Exec, "import\tsys".into()),
                // `importlib` and an indented import are paths to CPython, not code.
                (7, PthLineKind::Path, "importlib".into()),
                (8, PthLineKind::Path, "  import x".into()),
            ]
        );
    }

    #[test]
    fn crlf_and_lone_cr_break_lines() {
        let got = kinds(b"/a\r\nimport os\r/b\r\n");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (2, PthLineKind::Exec, "import os".into()));
        assert_eq!(got[2].2, "/b");
    }

    #[test]
    fn payload_behind_a_form_feed_is_still_executable() {
        let got = kinds(b"/harmless/path\x0cimport os; os.system('id')\n");
        assert_eq!(got[1].1, PthLineKind::Exec);
        let got = kinds("/p\u{2028}import os\n".as_bytes());
        assert_eq!(got[1].1, PthLineKind::Exec);
    }

    #[test]
    fn bom_is_dropped() {
        let got = kinds(b"\xef\xbb\xbfimport os\n");
        assert_eq!(got, vec![(1, PthLineKind::Exec, "import os".into())]);
    }

    #[test]
    fn non_utf8_bytes_are_lossy_not_fatal() {
        let got = parse_pth(b"import os # \xff\xfe\n/p\xff\n\x85import x");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].kind, PthLineKind::Exec);
        assert!(got[0].text.contains('\u{fffd}'));
        // Not valid UTF-8, so a lone 0x85 (NEL in Latin-1) breaks the line too.
        assert_eq!(got[2].kind, PthLineKind::Exec);
    }

    #[test]
    fn long_lines_keep_their_real_length() {
        let mut line = b"import os; x = '".to_vec();
        line.extend(std::iter::repeat_n(b'A', 10_000));
        line.extend(b"'\n");
        let got = parse_pth(&line);
        assert_eq!(got[0].length, line.len() - 1);
        assert_eq!(got[0].text.len(), LINE_KEEP);
    }

    #[test]
    fn empty_and_garbage_input() {
        assert!(parse_pth(b"").is_empty());
        assert!(parse_pth(b"\n\n\r\n").is_empty());
        assert_eq!(parse_pth(&[0u8, 159, 146, 150]).len(), 1);
    }
}
