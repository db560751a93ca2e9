//! `log query`: which records match a filter, and a table of them for people.
//!
//! Fields looked at in a record's `data` (alerts carry the alert object; decision, process
//! and hook records are expected to use the same names): `rule`, `action`, `pid`,
//! `process.pid`, `lineage[].pid`, `startup_hook.{path,sha256}` (or `hook.{…}`, or the
//! data itself for `hook` records), `credentials[]`, `destination.{address,port}`.
use std::{fmt::Write as _, io, time::Duration};

use serde_json::Value;

use super::{Kind, Record, for_each_record, printable};

/// `--since`: an instant, or how long ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Milliseconds since the Unix epoch.
    At(i64),
    Ago(Duration),
}

impl Since {
    /// Milliseconds since the epoch, given the current time.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            Self::At(ms) => ms,
            Self::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// `2h`, `1h30m`, `7d` or an RFC 3339 time (`2026-03-24T10:00:00Z`, or a date).
pub fn parse_since(s: &str) -> Result<Since, String> {
    if let Some(d) = parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    parse_rfc3339_ms(s).map(Since::At).ok_or_else(|| {
        format!(
            "`{s}` is neither a duration (30m, 2h, 1h30m, 7d) nor an RFC 3339 time \
             (2026-03-24T10:00:00Z, 2026-03-24T12:00:00+02:00, 2026-03-24)"
        )
    })
}

/// Numbers with units s, m, h, d, w, concatenated (`1h30m`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && !s.is_empty()).then(|| Duration::from_secs(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an RFC 3339 time; a bare date is midnight UTC.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !(1..=12).contains(&month) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=month_days[usize::try_from(month - 1).ok()?]).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..n.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[n..];
    }
    let offset_secs = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let secs = (digit(h1)? * 10 + digit(h2)?) * 3600 + (digit(m1)? * 10 + digit(m2)?) * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let secs = days * 86_400 + h * 3600 + m * 60 + sec.min(59) - offset_secs;
    Some(secs * 1000 + millis)
}

/// What `log query` selects; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct QueryFilter {
    /// Records at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    /// The process, or one of its ancestors in the record's lineage.
    pub pid: Option<u32>,
    /// A hook path, its file name, or a prefix (4+ hex digits) of its SHA-256.
    pub hook: Option<String>,
    pub rule: Option<String>,
    /// Any of these kinds (all when empty).
    pub kinds: Vec<Kind>,
    /// Lineages that ran the hook of `hook` ([`hook_lineages`]): their records match too,
    /// so a query by hook also answers what those processes did.
    pub hook_lineages: std::collections::HashSet<u64>,
}

impl QueryFilter {
    pub fn matches(&self, r: &Record) -> bool {
        let kind = self.kinds.is_empty() || self.kinds.contains(&r.kind);
        let since = self
            .since_ms
            .is_none_or(|since| parse_rfc3339_ms(&r.time).is_some_and(|t| t >= since));
        let rule = self
            .rule
            .as_deref()
            .is_none_or(|rule| r.data.get("rule").and_then(Value::as_str) == Some(rule));
        let pid = self
            .pid
            .is_none_or(|pid| pids(&r.data).any(|p| p == u64::from(pid)));
        let hook = self.hook.as_deref().is_none_or(|pattern| {
            hook_of(r).is_some_and(|(path, sha)| hook_matches(pattern, path, sha))
                || lineage_of(r).is_some_and(|l| self.hook_lineages.contains(&l))
        });
        kind && since && rule && pid && hook
    }
}

/// The pids a record is about: its process and that process's ancestors.
fn pids(data: &Value) -> impl Iterator<Item = u64> + '_ {
    let own = [data.get("pid"), data.pointer("/process/pid")];
    let lineage = data
        .get("lineage")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| e.get("pid"));
    own.into_iter()
        .chain(lineage)
        .filter_map(|v| v.and_then(Value::as_u64))
}

/// The hook a record names: (path, sha256).
fn lineage_of(r: &Record) -> Option<u64> {
    r.data
        .get("lineage_id")
        .and_then(Value::as_u64)
        .filter(|&l| l != 0)
}

/// The lineages of the records about a hook matching `pattern`: a first pass over the
/// log before [`query`] with [`QueryFilter::hook_lineages`] set.
pub fn hook_lineages(
    reader: impl io::BufRead,
    pattern: &str,
) -> io::Result<std::collections::HashSet<u64>> {
    let mut found = std::collections::HashSet::new();
    for_each_record(reader, |_, r| {
        if let (Some((path, sha)), Some(l)) = (hook_of(&r), lineage_of(&r))
            && hook_matches(pattern, path, sha)
        {
            found.insert(l);
        }
        Ok(())
    })?;
    Ok(found)
}

pub fn hook_of(r: &Record) -> Option<(&str, &str)> {
    let hook = match r.data.get("startup_hook").or_else(|| r.data.get("hook")) {
        Some(h) if h.is_object() => h,
        _ if r.kind == Kind::Hook => &r.data,
        _ => return None,
    };
    let field = |name| hook.get(name).and_then(Value::as_str).unwrap_or_default();
    Some((field("path"), field("sha256")))
}

fn hook_matches(pattern: &str, path: &str, sha: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let sha_prefix = pattern.len() >= 4
        && pattern.bytes().all(|b| b.is_ascii_hexdigit())
        && sha.starts_with(&pattern.to_ascii_lowercase());
    path == pattern || name == pattern || sha_prefix
}

/// Counts of a query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    pub matched: u64,
    /// Lines that are not records (see `log verify`).
    pub unreadable: u64,
}

/// Streams the matching records to `f`, in file order.
pub fn query(
    reader: impl io::BufRead,
    filter: &QueryFilter,
    mut f: impl FnMut(&Record) -> io::Result<()>,
) -> io::Result<QueryStats> {
    let mut matched = 0;
    let unreadable = for_each_record(reader, |_, r| {
        if filter.matches(&r) {
            matched += 1;
            f(&r)?;
        }
        Ok(())
    })?;
    Ok(QueryStats {
        matched,
        unreadable,
    })
}

/// The table's column titles, aligned with [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:<24}  {:<10}  {:<28}  {:<7}  {:>7}  {:>5}  {:<23}  HOOK",
        "TIME", "KIND", "RULE", "ACTION", "PID", "CREDS", "DESTINATION"
    )
}

/// One line of the table (fixed columns, the hook path last and whole).
pub fn table_row(r: &Record) -> String {
    let d = &r.data;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map_or("-".to_owned(), printable);
    let pid = d
        .pointer("/process/pid")
        .or_else(|| d.get("pid"))
        .and_then(Value::as_u64)
        .map_or("-".to_owned(), |p| p.to_string());
    let creds = d
        .get("credentials")
        .and_then(Value::as_array)
        .map_or("-".to_owned(), |c| c.len().to_string());
    let hook = hook_of(r).map_or("-".to_owned(), |(path, _)| printable(path));
    let mut row = String::new();
    let _ = write!(
        row,
        "{:<24}  {:<10}  {:<28}  {:<7}  {:>7}  {:>5}  {:<23}  {hook}",
        printable(&r.time),
        r.kind.as_str(),
        text(d.get("rule")),
        text(d.get("action")),
        pid,
        creds,
        destination(d.get("destination")).unwrap_or_else(|| "-".to_owned()),
    );
    row
}

/// `address:port` (`[v6]:port`), when the value is a destination.
pub fn destination(v: Option<&Value>) -> Option<String> {
    let v = v?;
    let addr = printable(v.get("address")?.as_str()?);
    let port = v.get("port").and_then(Value::as_u64).unwrap_or(0);
    Some(if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    })
}
