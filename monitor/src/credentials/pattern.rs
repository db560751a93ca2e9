//! The small path-pattern language shared by the credential catalogue and the persistence
//! table.
//!
//! A pattern is anchored one of three ways:
//! - `/etc/shadow`: an absolute path;
//! - `~/.aws/credentials`: relative to a home directory;
//! - `.git/hooks/*`: a tail, matched against the last components of any path.
//!
//! Components are matched one at a time: `*` matches any run of bytes (dots included)
//! inside one component, `?` one byte, and a whole component `**` matches up to
//! [`MAX_ANY_DEPTH`] directories. There are no character classes or braces: the catalogue
//! does not need them, and a smaller language is easier to audit.

use std::{
    fmt,
    os::unix::ffi::OsStrExt,
    path::{Component, Path},
};

/// Most directories one `**` stands for, so expansion on disk stays bounded.
pub const MAX_ANY_DEPTH: usize = 4;

/// Where a pattern starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// At the file-system root.
    Root,
    /// At a home directory (`~/`).
    Home,
    /// Anywhere: the pattern matches the last components of a path.
    Tail,
}

/// One path component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<[u8]>),
    Glob(Box<[u8]>),
    /// `**`: zero to [`MAX_ANY_DEPTH`] directories.
    AnyDepth,
}

impl Segment {
    /// Whether this single-component segment accepts `name` (`**` accepts anything).
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            Self::Literal(l) => **l == *name,
            Self::Glob(g) => glob_match(g, name),
            Self::AnyDepth => true,
        }
    }

    fn literal(&self) -> Option<&[u8]> {
        match self {
            Self::Literal(l) => Some(l),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid path pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

/// A parsed path pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    anchor: Anchor,
    segments: Vec<Segment>,
    text: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_owned(),
            reason,
        };
        let (anchor, rest) = if let Some(rest) = text.strip_prefix("~/") {
            (Anchor::Home, rest)
        } else if text.starts_with('~') {
            return Err(err(
                "only `~/` (every home directory) is supported, not `~user/`",
            ));
        } else if let Some(rest) = text.strip_prefix('/') {
            (Anchor::Root, rest)
        } else {
            (Anchor::Tail, text)
        };
        let mut segments: Vec<Segment> = Vec::new();
        for c in rest.split('/').filter(|c| !c.is_empty()) {
            let segment = match c {
                "." | ".." => return Err(err("`.` and `..` components are not allowed")),
                "**" if segments.last() == Some(&Segment::AnyDepth) => continue,
                "**" => Segment::AnyDepth,
                c if c.contains("**") => return Err(err("`**` must be a whole component")),
                c if c.contains('\0') => return Err(err("a pattern cannot contain NUL")),
                c if c.contains(['*', '?']) => Segment::Glob(c.as_bytes().into()),
                c => Segment::Literal(c.as_bytes().into()),
            };
            segments.push(segment);
        }
        match segments.last() {
            None => Err(err("the pattern names no file")),
            Some(Segment::AnyDepth) => Err(err("`**` must be followed by a file name pattern")),
            Some(_) => Ok(Self {
                anchor,
                segments,
                text: text.to_owned(),
            }),
        }
    }

    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exact (leaf, parent) names the kernel can match for this pattern, if it has
    /// them: `None` as parent means "any parent directory".
    pub fn kernel_name(&self) -> Option<(&[u8], Option<&[u8]>)> {
        let (leaf, rest) = self.segments.split_last()?;
        let leaf = leaf.literal()?;
        match (rest.last(), self.anchor) {
            (Some(parent), _) => Some((leaf, Some(parent.literal()?))),
            // The kernel names the root directory `/`.
            (None, Anchor::Root) => Some((leaf, Some(b"/"))),
            // A file directly in a home, or a bare name: any parent.
            (None, Anchor::Home | Anchor::Tail) => Some((leaf, None)),
        }
    }

    /// Whether a path (given as its components, see [`components`]) matches.
    ///
    /// Home patterns match under any of `homes`, under `/root` and `/home/<user>`, and,
    /// when their first component is a dot-name (`~/.aws/...`: distinctive enough to
    /// stand on its own), under any directory at all. That last rule is what catches
    /// isolated homes (`HOME=/tmp/x/home`), container roots seen from the host
    /// (`/var/lib/docker/overlay2/<id>/merged/root/...`) and homes missing from passwd.
    pub fn matches(&self, comps: &[&[u8]], homes: &[Vec<&[u8]>]) -> bool {
        let (Some(leaf), Some(name)) = (self.segments.last(), comps.last()) else {
            return false;
        };
        if !leaf.matches(name) {
            return false;
        }
        match self.anchor {
            Anchor::Root => match_segments(&self.segments, comps),
            Anchor::Tail => self.matches_tail(comps),
            Anchor::Home if self.dot_led() => self.matches_tail(comps),
            Anchor::Home => {
                homes.iter().any(|h| {
                    comps.starts_with(h) && match_segments(&self.segments, &comps[h.len()..])
                }) || home_like_offsets(comps).any(|i| match_segments(&self.segments, &comps[i..]))
            }
        }
    }

    fn dot_led(&self) -> bool {
        self.segments
            .first()
            .and_then(Segment::literal)
            .is_some_and(|l| l.first() == Some(&b'.'))
    }

    fn matches_tail(&self, comps: &[&[u8]]) -> bool {
        (0..comps.len()).any(|i| match_segments(&self.segments, &comps[i..]))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a home directory could end in `comps`: after `/root` and after `/home/<user>`.
fn home_like_offsets(comps: &[&[u8]]) -> impl Iterator<Item = usize> {
    let root = comps.first() == Some(&&b"root"[..]);
    let home = comps.len() > 2 && comps[0] == b"home";
    root.then_some(1).into_iter().chain(home.then_some(2))
}

/// Whether `segments` match exactly the components `comps`.
pub fn match_segments(segments: &[Segment], comps: &[&[u8]]) -> bool {
    match segments.split_first() {
        None => comps.is_empty(),
        Some((Segment::AnyDepth, rest)) => {
            (0..=MAX_ANY_DEPTH.min(comps.len())).any(|skip| match_segments(rest, &comps[skip..]))
        }
        Some((segment, rest)) => comps
            .split_first()
            .is_some_and(|(c, cs)| segment.matches(c) && match_segments(rest, cs)),
    }
}

/// Glob match of one component: `*` is any run of bytes, `?` one byte.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Position of the last `*` and of the name byte it was tried against.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry.
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The normal components of a path as bytes, with `.` dropped and `..` applied lexically
/// (the kernel reports resolved paths; this only guards against hand-made ones).
pub fn components(path: &Path) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s.as_bytes()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str, homes: &[&str]) -> bool {
        let homes: Vec<Vec<&[u8]>> = homes.iter().map(|h| components(Path::new(h))).collect();
        Pattern::parse(pattern)
            .unwrap()
            .matches(&components(Path::new(path)), &homes)
    }

    #[test]
    fn glob_matches_within_one_component() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*", b".hidden"));
        assert!(glob_match(b"id_*", b"id_ed25519"));
        assert!(!glob_match(b"id_*", b"xid_rsa"));
        assert!(glob_match(b"*.pub", b"id_rsa.pub"));
        assert!(!glob_match(b"*.pub", b"id_rsa.pubx"));
        assert!(glob_match(b"ssh_host_*_key", b"ssh_host_ed25519_key"));
        assert!(!glob_match(b"ssh_host_*_key", b"ssh_host_ed25519_key.pub"));
        assert!(glob_match(b"privkey*.pem", b"privkey12.pem"));
        assert!(glob_match(b"a*b*c", b"aXXbYYbZZc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYYbZZ"));
        assert!(glob_match(b"?.env", b"x.env"));
        assert!(!glob_match(b"?.env", b".env"));
        assert!(glob_match(b"**x", b"abx"));
        assert!(glob_match(b"exact", b"exact"));
        assert!(!glob_match(b"exact", b"exac"));
    }

    #[test]
    fn double_star_spans_bounded_directories() {
        let p = "/etc/letsencrypt/**/privkey*.pem";
        assert!(matches(p, "/etc/letsencrypt/privkey.pem", &[]));
        assert!(matches(
            p,
            "/etc/letsencrypt/live/example.com/privkey.pem",
            &[]
        ));
        assert!(matches(p, "/etc/letsencrypt/a/b/c/d/privkey1.pem", &[]));
        assert!(!matches(p, "/etc/letsencrypt/a/b/c/d/e/privkey1.pem", &[]));
        assert!(!matches(
            p,
            "/etc/letsencrypt/live/example.com/cert.pem",
            &[]
        ));
    }

    #[test]
    fn anchors() {
        assert!(matches("/etc/shadow", "/etc/shadow", &[]));
        assert!(!matches("/etc/shadow", "/chroot/etc/shadow", &[]));
        assert!(matches(
            ".git/hooks/*",
            "/src/app/.git/hooks/pre-commit",
            &[]
        ));
        assert!(!matches(".git/hooks/*", "/src/app/.git/hooks", &[]));
        // Home patterns led by a dot-name match under any directory.
        assert!(matches(
            "~/.aws/credentials",
            "/tmp/pthwatch-test-1/home/.aws/credentials",
            &[]
        ));
        // Others need a home.
        assert!(matches("~/secrets/t", "/home/u/secrets/t", &[]));
        assert!(matches("~/secrets/t", "/root/secrets/t", &[]));
        assert!(matches("~/secrets/t", "/srv/u/secrets/t", &["/srv/u"]));
        assert!(!matches("~/secrets/t", "/srv/u/secrets/t", &[]));
        assert!(!matches("~/secrets/t", "/home/secrets/t", &[]));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "",
            "/",
            "~/",
            "~bob/.ssh/id_rsa",
            "/etc/../shadow",
            "/etc/**",
            "/a**/b",
            "~/./x",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Pattern::parse("/etc//**/**/x").unwrap().segments().len(), 3);
    }

    #[test]
    fn kernel_names() {
        let name = |p: &str| {
            let p = Pattern::parse(p).unwrap();
            p.kernel_name()
                .map(|(n, p)| (n.to_vec(), p.map(<[u8]>::to_vec)))
        };
        assert_eq!(
            name("~/.aws/credentials"),
            Some((b"credentials".to_vec(), Some(b".aws".to_vec())))
        );
        assert_eq!(name("~/.netrc"), Some((b".netrc".to_vec(), None)));
        assert_eq!(
            name("/shadow"),
            Some((b"shadow".to_vec(), Some(b"/".to_vec())))
        );
        assert_eq!(name("~/.ssh/id_*"), None);
        assert_eq!(name("~/.gcloud/*/adc.json"), None);
    }

    #[test]
    fn components_are_lexically_normalised() {
        let c = components(Path::new("/home/u/./.aws/../.aws/credentials"));
        assert_eq!(c, [&b"home"[..], b"u", b".aws", b"credentials"]);
    }
}
