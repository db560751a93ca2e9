//! Problems found in a configuration and where they are: file, line, column, the dotted
//! key (`alerts.sink[1].url`) and a message saying what is allowed.

use std::{
    fmt, io,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The configuration is refused.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// A key inside the document, e.g. `alerts.sink[1].url`; empty for the whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Step::Key(key.to_owned()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Step::Index(index));
        next
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` followed by `rest`.
    pub(super) fn join(&self, rest: &Self) -> Self {
        let mut next = self.clone();
        next.0.extend(rest.0.iter().cloned());
        next
    }

    pub(super) fn first_key(&self) -> Option<&str> {
        match self.0.first()? {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A position in the file, with its line for an excerpt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Characters underlined, at least 1.
    pub width: usize,
    pub source_line: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub file: PathBuf,
    /// `None` for a problem with no place in the text (a file the configuration names).
    pub location: Option<Location>,
    pub key: KeyPath,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: key: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = &self.location {
            write!(f, ":{}:{}", l.line, l.column)?;
        }
        write!(f, ": {}: ", self.level)?;
        if !self.key.is_root() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl Diagnostic {
    /// The source line with the place underlined, for people.
    pub fn excerpt(&self) -> Option<String> {
        let l = self.location.as_ref()?;
        let number = l.line.to_string();
        let pad = " ".repeat(number.len());
        Some(format!(
            " {number} | {}\n {pad} | {}{}",
            l.source_line.replace('\t', " "),
            " ".repeat(l.column - 1),
            "^".repeat(l.width)
        ))
    }

    pub(super) fn not_utf8(file: &Path, bytes: &[u8], valid_up_to: usize) -> Self {
        let text = String::from_utf8_lossy(bytes);
        // Lossy decoding keeps the valid prefix byte for byte.
        Self {
            level: Level::Error,
            file: file.to_owned(),
            location: Some(location(&text, &(valid_up_to..valid_up_to + 1))),
            key: KeyPath::root(),
            message: "the file is not UTF-8 text".to_owned(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    /// The file could not be read at all (`pthwatch config check` exits 2).
    #[error("cannot read the configuration {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    /// The file was read and does not validate: every error, and the warnings.
    #[error("{}", Report(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigErrors {
    /// Errors and warnings, in file order; empty for `Unreadable`.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Unreadable { .. } => &[],
            Self::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    pub fn error_count(&self) -> usize {
        match self {
            Self::Unreadable { .. } => 1,
            Self::Invalid { diagnostics, .. } => diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .count(),
        }
    }
}

struct Report<'a>(&'a Path, &'a [Diagnostic]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.1.iter().filter(|d| d.level == Level::Error).count();
        write!(
            f,
            "the configuration {} is invalid ({})",
            self.0.display(),
            plural(errors, "error")
        )?;
        for d in self.1 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A problem before it is placed in the file.
#[derive(Clone, Debug)]
pub(super) struct Finding {
    pub level: Level,
    pub key: KeyPath,
    pub message: String,
    /// Where, when known at the time; otherwise found from `key`.
    pub span: Option<Range<usize>>,
}

impl Finding {
    pub fn error(key: KeyPath, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            key,
            message: message.into(),
            span: None,
        }
    }

    pub fn warning(key: KeyPath, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            ..Self::error(key, message)
        }
    }

    pub fn at(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }
}

/// Places findings in the file: by their own span, else by their key (the nearest key
/// the file has, for a setting left to its default), and sorts them in file order.
pub(super) fn locate(
    text: &str,
    doc: Option<&Spanned<DeTable<'_>>>,
    file: &Path,
    findings: Vec<Finding>,
) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| {
            let span = f.span.or_else(|| doc.and_then(|d| span_of(d, &f.key)));
            Diagnostic {
                level: f.level,
                file: file.to_owned(),
                location: span.map(|s| location(text, &s)),
                key: f.key,
                message: f.message,
            }
        })
        .collect();
    out.sort_by_key(|d| {
        d.location
            .as_ref()
            .map_or((usize::MAX, 0), |l| (l.line, l.column))
    });
    out
}

/// The span of the value at `key`, or of its nearest ancestor present in the file.
fn span_of(doc: &Spanned<DeTable<'_>>, key: &KeyPath) -> Option<Range<usize>> {
    let mut steps = key.0.iter();
    let Some(Step::Key(first)) = steps.next() else {
        return None;
    };
    let mut value = doc.get_ref().get(first.as_str())?;
    for step in steps {
        let next = match (step, value.get_ref()) {
            (Step::Key(k), DeValue::Table(t)) => t.get(k.as_str()),
            (Step::Index(i), DeValue::Array(a)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(next) => value = next,
            None => break,
        }
    }
    Some(value.span())
}

/// The deepest key under `value` whose key or value holds `at` (a serde error's span).
pub(super) fn key_at(value: &Spanned<DeValue<'_>>, at: &Range<usize>, base: &KeyPath) -> KeyPath {
    find_key(value, at, base).unwrap_or_else(|| base.clone())
}

fn find_key(value: &Spanned<DeValue<'_>>, at: &Range<usize>, base: &KeyPath) -> Option<KeyPath> {
    let holds = |s: Range<usize>| s.start <= at.start && at.end <= s.end;
    match value.get_ref() {
        DeValue::Table(t) => t.iter().find_map(|(k, v)| {
            let path = base.key(k.get_ref());
            if holds(k.span()) {
                return Some(path);
            }
            find_key(v, at, &path).or_else(|| holds(v.span()).then_some(path))
        }),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
            let path = base.index(i);
            find_key(v, at, &path).or_else(|| holds(v.span()).then_some(path))
        }),
        _ => None,
    }
}

/// Line, column and underline width of a byte span.
pub(super) fn location(text: &str, span: &Range<usize>) -> Location {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let mut end = span.end.clamp(start, line_end);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Location {
        line: before.matches('\n').count() + 1,
        column: text[line_start..start].chars().count() + 1,
        width: text[start..end].chars().count().max(1),
        source_line: text[line_start..line_end].trim_end_matches('\r').to_owned(),
    }
}
