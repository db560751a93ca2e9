//! `[alerts]`: where alerts go. Each `[[alerts.sink]]` is read flat (every key of every
//! type is optional) and then made into a [`Sink`], so a key given to the wrong type is
//! named as such and every problem of an entry is reported, not only the first.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Deserializer, de};

use super::diag::{Finding, KeyPath};
use crate::alert::Severity;

/// `[alerts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    pub sinks: Vec<Sink>,
}

impl Default for AlertSettings {
    /// One sink: stdout, every severity.
    fn default() -> Self {
        Self {
            sinks: vec![Sink::Stdout(StdoutSink {
                min_severity: Severity::Info,
            })],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Stdout(StdoutSink),
    File(FileSink),
    Webhook(WebhookSink),
}

impl Sink {
    /// The lowest severity this sink receives.
    pub fn min_severity(&self) -> Severity {
        match self {
            Self::Stdout(s) => s.min_severity,
            Self::File(s) => s.min_severity,
            Self::Webhook(s) => s.min_severity,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            Self::Webhook(_) => "webhook",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdoutSink {
    pub min_severity: Severity,
}

/// JSON Lines in a file, rotated by size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSink {
    pub min_severity: Severity,
    pub path: PathBuf,
    /// Rotate past this size; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.keep`).
    pub keep: u32,
}

impl FileSink {
    pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
    pub const DEFAULT_KEEP: u32 = 5;
    const MIN_MAX_BYTES: u64 = 64 << 10;
    const MAX_KEEP: u32 = 1000;
}

/// One HTTP POST per alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSink {
    pub min_severity: Severity,
    pub url: String,
    pub format: WebhookFormat,
    /// HMAC-SHA256 key signing each body.
    pub secret_file: Option<PathBuf>,
    /// CA bundle trusted for the server instead of the system's.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// Retries back off exponentially up to this delay.
    pub retry_max_ms: u64,
    /// Alerts not yet delivered wait here, across restarts.
    pub spool_dir: PathBuf,
    /// 0: no spool, undelivered alerts are dropped (and counted).
    pub spool_max_bytes: u64,
}

impl WebhookSink {
    pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
    pub const DEFAULT_RETRY_MAX_MS: u64 = 300_000;
    pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/pthwatch/spool";
    pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 << 20;
    const TIMEOUT_MS: (u64, u64) = (100, 120_000);
    const RETRY_MAX_MS: (u64, u64) = (100, 86_400_000);
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The alert object itself, as in the alert log.
    Pthwatch,
    /// Falcosidekick's input (`output`, `priority`, `rule`, `time`, `output_fields`).
    Falcosidekick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SinkType {
    Stdout,
    File,
    Webhook,
}

/// One `[[alerts.sink]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct SinkEntry {
    #[serde(rename = "type")]
    kind: Option<SinkType>,
    #[serde(deserialize_with = "severity")]
    min_severity: Option<Severity>,
    path: Option<PathBuf>,
    max_bytes: Option<u64>,
    keep: Option<u32>,
    url: Option<String>,
    format: Option<WebhookFormat>,
    secret_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    headers: Option<BTreeMap<String, String>>,
    timeout_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: Option<u64>,
}

const FILE_KEYS: [&str; 3] = ["path", "max_bytes", "keep"];
const WEBHOOK_KEYS: [&str; 11] = [
    "url",
    "format",
    "secret_file",
    "ca_file",
    "client_cert",
    "client_key",
    "headers",
    "timeout_ms",
    "retry_max_ms",
    "spool_dir",
    "spool_max_bytes",
];
/// Headers pthwatch sets itself.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
];

impl SinkEntry {
    fn given(&self) -> Vec<&'static str> {
        let given = [
            ("path", self.path.is_some()),
            ("max_bytes", self.max_bytes.is_some()),
            ("keep", self.keep.is_some()),
            ("url", self.url.is_some()),
            ("format", self.format.is_some()),
            ("secret_file", self.secret_file.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("headers", self.headers.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("retry_max_ms", self.retry_max_ms.is_some()),
            ("spool_dir", self.spool_dir.is_some()),
            ("spool_max_bytes", self.spool_max_bytes.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(k, g)| g.then_some(k))
            .collect()
    }

    /// The sink this entry describes; problems go to `out` (`None`: too little to build one).
    pub(super) fn build(self, at: &KeyPath, out: &mut Vec<Finding>) -> Option<Sink> {
        let Some(kind) = self.kind else {
            out.push(Finding::error(
                at.key("type"),
                "every sink needs a `type`; allowed: \"stdout\", \"file\", \"webhook\"",
            ));
            return None;
        };
        let (name, allowed): (&str, &[&str]) = match kind {
            SinkType::Stdout => ("stdout", &[]),
            SinkType::File => ("file", &FILE_KEYS),
            SinkType::Webhook => ("webhook", &WEBHOOK_KEYS),
        };
        for key in self.given().into_iter().filter(|k| !allowed.contains(k)) {
            let owner = if FILE_KEYS.contains(&key) {
                "file"
            } else {
                "webhook"
            };
            out.push(Finding::error(
                at.key(key),
                format!("`{key}` is a key of type = \"{owner}\" sinks, not of \"{name}\" ones"),
            ));
        }
        let min_severity = self.min_severity.unwrap_or(Severity::Info);
        Some(match kind {
            SinkType::Stdout => Sink::Stdout(StdoutSink { min_severity }),
            SinkType::File => Sink::File(self.file(min_severity, at, out)?),
            SinkType::Webhook => Sink::Webhook(self.webhook(min_severity, at, out)?),
        })
    }

    fn file(
        self,
        min_severity: Severity,
        at: &KeyPath,
        out: &mut Vec<Finding>,
    ) -> Option<FileSink> {
        let Some(path) = self.path else {
            out.push(Finding::error(
                at.key("path"),
                "a file sink needs a `path`, e.g. \"/var/log/pthwatch/alerts.jsonl\"",
            ));
            return None;
        };
        absolute(&path, &at.key("path"), out);
        let max_bytes = self.max_bytes.unwrap_or(FileSink::DEFAULT_MAX_BYTES);
        if max_bytes != 0 && max_bytes < FileSink::MIN_MAX_BYTES {
            out.push(Finding::error(
                at.key("max_bytes"),
                format!(
                    "{max_bytes} is too small to hold a few alerts; allowed: 0 (never rotate) or at least {}",
                    FileSink::MIN_MAX_BYTES
                ),
            ));
        }
        let keep = self.keep.unwrap_or(FileSink::DEFAULT_KEEP);
        if keep > FileSink::MAX_KEEP {
            out.push(Finding::error(
                at.key("keep"),
                format!(
                    "{keep} rotated files is too many; allowed: 0 to {}",
                    FileSink::MAX_KEEP
                ),
            ));
        }
        Some(FileSink {
            min_severity,
            path,
            max_bytes,
            keep,
        })
    }

    fn webhook(
        self,
        min_severity: Severity,
        at: &KeyPath,
        out: &mut Vec<Finding>,
    ) -> Option<WebhookSink> {
        let Some(url) = self.url else {
            out.push(Finding::error(
                at.key("url"),
                "a webhook sink needs a `url`, e.g. \"https://alerts.example.com/pthwatch\"",
            ));
            return None;
        };
        match check_url(&url) {
            Err(e) => out.push(Finding::error(at.key("url"), e)),
            Ok(u) if !u.https => {
                for (key, given) in [
                    ("ca_file", self.ca_file.is_some()),
                    ("client_cert", self.client_cert.is_some()),
                    ("client_key", self.client_key.is_some()),
                ] {
                    if given {
                        out.push(Finding::error(
                            at.key(key),
                            format!(
                                "`{key}` is a TLS setting and the url is http://; use https://"
                            ),
                        ));
                    }
                }
                if !u.loopback {
                    out.push(Finding::warning(
                        at.key("url"),
                        "alerts to this host travel unencrypted; use https:// unless the network is trusted",
                    ));
                }
            }
            Ok(_) => {}
        }
        for (key, path) in [
            ("secret_file", &self.secret_file),
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(p) = path {
                absolute(p, &at.key(key), out);
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => out.push(Finding::error(
                at.key("client_cert"),
                "a client certificate needs its `client_key`",
            )),
            (None, Some(_)) => out.push(Finding::error(
                at.key("client_key"),
                "a client key needs its `client_cert`",
            )),
            _ => {}
        }
        let headers = self.headers.unwrap_or_default();
        for (name, value) in &headers {
            let key = at.key("headers").key(name);
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                out.push(Finding::error(
                    key,
                    format!(
                        "`{name}` is not an HTTP header name: letters, digits and !#$%&'*+-.^_`|~"
                    ),
                ));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                out.push(Finding::error(
                    key,
                    format!("pthwatch sets `{name}` itself; remove it"),
                ));
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                out.push(Finding::error(
                    key,
                    "a header value cannot hold line breaks or control characters",
                ));
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(WebhookSink::DEFAULT_TIMEOUT_MS);
        in_range(
            timeout_ms,
            WebhookSink::TIMEOUT_MS,
            &at.key("timeout_ms"),
            out,
        );
        let retry_max_ms = self
            .retry_max_ms
            .unwrap_or(WebhookSink::DEFAULT_RETRY_MAX_MS);
        in_range(
            retry_max_ms,
            WebhookSink::RETRY_MAX_MS,
            &at.key("retry_max_ms"),
            out,
        );
        let spool_dir = self
            .spool_dir
            .unwrap_or_else(|| PathBuf::from(WebhookSink::DEFAULT_SPOOL_DIR));
        absolute(&spool_dir, &at.key("spool_dir"), out);
        Some(WebhookSink {
            min_severity,
            url,
            format: self.format.unwrap_or(WebhookFormat::Pthwatch),
            secret_file: self.secret_file,
            ca_file: self.ca_file,
            client_cert: self.client_cert,
            client_key: self.client_key,
            headers,
            timeout_ms,
            retry_max_ms,
            spool_dir,
            spool_max_bytes: self
                .spool_max_bytes
                .unwrap_or(WebhookSink::DEFAULT_SPOOL_MAX_BYTES),
        })
    }
}

pub(super) fn absolute(path: &std::path::Path, at: &KeyPath, out: &mut Vec<Finding>) {
    if !path.is_absolute() {
        out.push(Finding::error(
            at.clone(),
            format!(
                "`{}` is relative; give an absolute path (pthwatch does not run from a fixed directory)",
                path.display()
            ),
        ));
    }
}

fn in_range(v: u64, (lo, hi): (u64, u64), at: &KeyPath, out: &mut Vec<Finding>) {
    if !(lo..=hi).contains(&v) {
        out.push(Finding::error(
            at.clone(),
            format!("{v} is out of range; allowed: {lo} to {hi}"),
        ));
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the sink needs to know of a webhook URL.
pub(super) struct UrlFacts {
    pub https: bool,
    pub loopback: bool,
}

/// Checks an http(s) URL.
pub(super) fn check_url(url: &str) -> Result<UrlFacts, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL; write it as https://host[:port]/path"
        ));
    };
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(format!(
                "`{url}` has scheme `{scheme}`; allowed: https, http"
            ));
        }
    };
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` contains {c:?}; percent-encode it"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "`{url}` carries credentials; put them in `headers` (e.g. Authorization) instead"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed `[` in the host"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{url}`: `{host}` is not an IPv6 address"));
        }
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if let Some(p) = port
        && (!p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)))
    {
        return Err(format!("`{url}`: `{p}` is not a port (1 to 65535)"));
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(UrlFacts { https, loopback })
}

pub(super) fn parse_severity(text: &str) -> Option<Severity> {
    Some(match text {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        "info" => Severity::Info,
        _ => return None,
    })
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}

fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Severity>, D::Error> {
    const ALLOWED: [&str; 5] = ["critical", "high", "medium", "low", "info"];
    let text = String::deserialize(d)?;
    parse_severity(&text)
        .map(Some)
        .ok_or_else(|| de::Error::unknown_variant(&text, &ALLOWED))
}
