//! `[[allow]]`: per-rule exceptions, and the pure matcher deciding whether an incident
//! falls under one.
//!
//! An entry matches when it covers the rule and every matcher it gives matches the
//! incident. A matcher whose fact is unknown (no container, no destination yet) does not
//! match: an exception never widens because pthwatch knows less.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Deserializer, de};

use super::cidr::Cidr;
use crate::credentials::{Anchor, Pattern};

/// One `[[allow]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowEntry {
    /// Rule names, or `*` for every rule.
    pub rules: Vec<String>,
    /// Why the exception exists; logged when it applies.
    pub reason: Option<String>,
    pub executable: Option<ExePattern>,
    /// Lowercase hex.
    #[serde(deserialize_with = "sha256")]
    pub hook_sha256: Option<String>,
    pub distribution: Option<DistributionSpec>,
    pub destination: Option<Cidr>,
    pub port: Option<PortRange>,
    pub container_image: Option<ImageGlob>,
    #[serde(deserialize_with = "namespace")]
    pub k8s_namespace: Option<String>,
}

/// What is known about an incident when its rule fires.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlertFacts<'a> {
    /// The process's executable, as an absolute path.
    pub exe: Option<&'a str>,
    pub hook_sha256: Option<&'a str>,
    /// The hook's owning distribution, `name==version` or `name`.
    pub distribution: Option<&'a str>,
    pub dest: Option<IpAddr>,
    pub port: Option<u16>,
    pub container_image: Option<&'a str>,
    pub k8s_namespace: Option<&'a str>,
}

/// The matcher keys, as the file spells them.
pub(super) const MATCHERS: [&str; 7] = [
    "executable",
    "hook_sha256",
    "distribution",
    "destination",
    "port",
    "container_image",
    "k8s_namespace",
];

impl AllowEntry {
    /// Whether the entry applies to `rule` at all.
    pub fn covers(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r == "*" || r == rule)
    }

    /// The matchers the entry gives, by key.
    pub fn matchers(&self) -> Vec<&'static str> {
        let given = [
            self.executable.is_some(),
            self.hook_sha256.is_some(),
            self.distribution.is_some(),
            self.destination.is_some(),
            self.port.is_some(),
            self.container_image.is_some(),
            self.k8s_namespace.is_some(),
        ];
        MATCHERS
            .into_iter()
            .zip(given)
            .filter_map(|(k, g)| g.then_some(k))
            .collect()
    }

    /// Whether the entry exempts this incident of `rule`. An entry without a matcher never
    /// does (validation refuses it; this keeps a hand-built one from allowing everything).
    pub fn matches(&self, rule: &str, f: &AlertFacts<'_>) -> bool {
        fn check<T, F>(want: Option<&T>, fact: Option<F>, ok: impl Fn(&T, F) -> bool) -> bool {
            want.is_none_or(|w| fact.is_some_and(|f| ok(w, f)))
        }
        self.covers(rule)
            && !self.matchers().is_empty()
            && check(self.executable.as_ref(), f.exe, ExePattern::matches)
            && check(self.hook_sha256.as_ref(), f.hook_sha256, |w, h| {
                w.eq_ignore_ascii_case(h)
            })
            && check(
                self.distribution.as_ref(),
                f.distribution,
                DistributionSpec::matches,
            )
            && check(self.destination.as_ref(), f.dest, Cidr::contains)
            && check(self.port.as_ref(), f.port, PortRange::contains)
            && check(
                self.container_image.as_ref(),
                f.container_image,
                ImageGlob::matches,
            )
            && check(self.k8s_namespace.as_ref(), f.k8s_namespace, |w, n| w == n)
    }
}

/// Every `[[allow]]` entry, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
}

impl Allowlist {
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// The first entry exempting this incident of `rule`, if any.
    pub fn allows(&self, rule: &str, facts: &AlertFacts<'_>) -> Option<&AllowEntry> {
        self.entries.iter().find(|e| e.matches(rule, facts))
    }
}

/// `executable`: an absolute path, or a pattern of one in the credential catalogue's
/// language (`*` and `?` inside one component, `**` for up to 4 directories).
#[derive(Clone, Debug)]
pub struct ExePattern(Pattern);

impl ExePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern = Pattern::parse(text).map_err(|e| e.to_string())?;
        if pattern.anchor() != Anchor::Root {
            return Err(format!(
                "`{text}` is not absolute; give the executable's full path, e.g. `/usr/bin/python3` or `/opt/*/bin/python3`"
            ));
        }
        Ok(Self(pattern))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn matches(&self, exe: &str) -> bool {
        let Some(rest) = exe.strip_prefix('/') else {
            return false;
        };
        let comps: Vec<&[u8]> = rest
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::as_bytes)
            .collect();
        // The kernel reports resolved paths; a hand-made `..` must not walk out of a `*`.
        if comps.iter().any(|c| *c == b"." || *c == b"..") {
            return false;
        }
        self.0.matches(&comps, &[])
    }
}

impl PartialEq for ExePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ExePattern {}

impl<'de> Deserialize<'de> for ExePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `container_image`: an image reference where `*` stands for any run of characters,
/// `/` and `:` included (`ghcr.io/acme/*` is every image and tag under ghcr.io/acme).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGlob(String);

impl ImageGlob {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.chars().all(|c| c == '*') {
            return Err(format!(
                "`{text}` would match every image; name a registry or repository, e.g. `registry.example.com/ci/*`"
            ));
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{text}` contains {c:?}; an image reference has no spaces or control characters"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, image: &str) -> bool {
        wildcard_match(self.0.as_bytes(), image.as_bytes())
    }
}

impl<'de> Deserialize<'de> for ImageGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p, t));
            p += 1;
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `distribution`: `name` (any version) or `name==version`. Names compare as Python
/// packaging normalises them (`Foo_Bar` is `foo-bar`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributionSpec {
    /// Normalised.
    pub name: String,
    pub version: Option<String>,
}

impl DistributionSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, version) = match text.split_once("==") {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (text.trim(), None),
        };
        let valid_name = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid_name {
            return Err(format!(
                "`{text}` is not `name` or `name==version`: a distribution name is letters, digits, `.`, `_` and `-` (other version operators are not supported)"
            ));
        }
        if let Some(v) = version
            && (v.is_empty() || v.contains(|c: char| c.is_whitespace() || "=<>!~,;".contains(c)))
        {
            return Err(format!(
                "`{text}`: give one exact version after `==`, e.g. `{name}==1.2.3`"
            ));
        }
        Ok(Self {
            name: normalise_name(name),
            version: version.map(str::to_owned),
        })
    }

    /// Whether a hook's distribution (`name==version` or `name`) is this one.
    pub fn matches(&self, distribution: &str) -> bool {
        let (name, version) = match distribution.split_once("==") {
            Some((n, v)) => (n, Some(v)),
            None => (distribution, None),
        };
        normalise_name(name) == self.name
            && self
                .version
                .as_deref()
                .is_none_or(|want| version.is_some_and(|v| v.trim().eq_ignore_ascii_case(want)))
    }
}

impl fmt::Display for DistributionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.version {
            Some(v) => write!(f, "=={v}"),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for DistributionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// Lowercase, with each run of `-`, `_` and `.` made one `-`.
fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// `port`: one port, or an inclusive range `"low-high"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            let p = p.trim();
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{text}` is not a port (1-65535) or a range such as \"8000-8999\""
                ));
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{p}` is not a port; ports are 1 to 65535")),
                Ok(n) => Ok(n),
            }
        };
        let (low, high) = match text.split_once('-') {
            Some((l, h)) => (port(l)?, port(h)?),
            None => {
                let p = port(text)?;
                (p, p)
            }
        };
        if low > high {
            return Err(format!(
                "`{text}`: a range goes from low to high; did you mean \"{high}-{low}\"?"
            ));
        }
        Ok(Self { low, high })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (443) or a range (\"8000-8999\")")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                PortRange::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                PortRange::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                PortRange::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn sha256<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(de::Error::custom(format!(
            "`{text}` is not a sha256: 64 hexadecimal digits, as `sha256sum` prints them"
        )));
    }
    Ok(Some(text.to_ascii_lowercase()))
}

fn namespace<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    let valid = (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if !valid {
        return Err(de::Error::custom(format!(
            "`{text}` is not a Kubernetes namespace: 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
        )));
    }
    Ok(Some(text))
}
