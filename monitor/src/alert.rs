//! Alerts: the JSON object a security engineer receives (schema in
//! `schema/alert.schema.json`); `crate::sink` delivers them.
use std::time::SystemTime;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// What pthwatch did about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Alert,
    Blocked,
    Killed,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub cmdline: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LineageEntry {
    pub pid: u32,
    pub exe: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HookRef {
    /// `pth`, `sitecustomize`, `usercustomize` or `start`.
    pub kind: String,
    pub path: String,
    pub sha256: String,
    /// The executable line (for `.pth`), or the first risky line of a module hook.
    pub line: Option<String>,
    pub line_number: Option<usize>,
    /// Owning distribution (`name==version`) from `*.dist-info/RECORD`.
    pub distribution: Option<String>,
    /// `benign`, `inert`, `unknown` or `risky`.
    pub class: String,
    /// What made the hook risky.
    pub findings: Vec<String>,
    /// Code the hook (or a module it imports) leaves behind to run later, on whose account
    /// the interpreter's main thread then acts: `none`, `exit` (exit handlers, after the
    /// program) or `program` (planted in the program itself: the whole program is the
    /// hook's).
    pub deferral: &'static str,
}

impl HookRef {
    /// `deferral` for a hook's kernel flags (`monitor_common::hook_flags`).
    pub fn deferral_of(flags: u32) -> &'static str {
        use monitor_common::hook_flags::{DEFERS, PLANTS};
        if flags & PLANTS != 0 {
            "program"
        } else if flags & DEFERS != 0 {
            "exit"
        } else {
            "none"
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Destination {
    pub address: String,
    pub port: u16,
    pub protocol: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ContainerRef {
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The image the container was created from, as its pod spec (or `docker run`)
    /// named it, from the runtime's files on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub rule: &'static str,
    pub severity: Severity,
    pub action: Action,
    pub summary: String,
    pub host: String,
    pub process: ProcessRef,
    /// From the process up towards init.
    pub lineage: Vec<LineageEntry>,
    pub startup_hook: Option<HookRef>,
    /// Credential files the hook's lineage read.
    pub credentials: Vec<String>,
    pub destination: Option<Destination>,
    /// Files the lineage wrote where programs start themselves (rule 2).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub persistence: Vec<String>,
    pub container: ContainerRef,
    /// Kernel attribution lineage id, to correlate with `pthwatch trace`.
    pub lineage_id: u64,
}

/// RFC 3339 (UTC, millisecond precision) without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// The host's name as the kernel knows it.
/// The host an alert is about. In a Kubernetes pod the UTS name is the pod's, so the
/// node name the DaemonSet passes (`NODE_NAME`) wins; `PTHWATCH_HOSTNAME` overrides both.
pub fn hostname() -> String {
    host_from(
        std::env::var("PTHWATCH_HOSTNAME").ok(),
        std::env::var("NODE_NAME").ok(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
    )
}

fn host_from(explicit: Option<String>, node: Option<String>, uts: Option<String>) -> String {
    [explicit, node, uts]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
#[test]
fn the_node_name_wins_over_the_pods_hostname() {
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(host_from(None, s("node-7"), s("pthwatch-x1z\n")), "node-7");
    assert_eq!(host_from(s("build-3"), s("node-7"), s("pod")), "build-3");
    assert_eq!(host_from(None, s(" "), s("vm\n")), "vm");
    assert_eq!(host_from(None, None, None), "unknown");
}

#[cfg(test)]
mod schema_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_774_310_400_123);
        assert_eq!(rfc3339(t), "2026-03-24T00:00:00.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn severities_order() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Medium > Severity::Low);
    }
}
