//! The bodies a webhook receives: the alert itself, or Falcosidekick's input form.

use serde_json::{Map, Value, json};

use crate::{
    alert::{Action, Alert, Severity},
    config::WebhookFormat,
};

/// The request body for `alert` in `format` (compact JSON).
pub fn body(format: WebhookFormat, alert: &Alert) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        WebhookFormat::Pthwatch => serde_json::to_vec(alert),
        WebhookFormat::Falcosidekick => serde_json::to_vec(&falcosidekick(alert)),
    }
}

/// Falco's priority names, which Falcosidekick filters and routes on.
pub fn priority(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "Critical",
        Severity::High => "Error",
        Severity::Medium => "Warning",
        Severity::Low => "Notice",
        Severity::Info => "Informational",
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Alert => "alert",
        Action::Blocked => "blocked",
        Action::Killed => "killed",
    }
}

/// The alert as Falcosidekick's `POST /` input. Nested alert fields are flattened into
/// `output_fields` under Falco-style dotted names; fields the alert lacks are left out.
pub fn falcosidekick(alert: &Alert) -> Value {
    let mut f = Map::new();
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_owned(), v);
    };
    put("pthwatch.alert_id", json!(alert.id));
    put("pthwatch.severity", json!(alert.severity));
    put("pthwatch.action", json!(action_name(alert.action)));
    put("pthwatch.lineage_id", json!(alert.lineage_id));
    let p = &alert.process;
    put("proc.pid", json!(p.pid));
    put("proc.ppid", json!(p.ppid));
    put("user.uid", json!(p.uid));
    put("proc.exepath", json!(p.exe));
    put("proc.cmdline", json!(p.cmdline.join(" ")));
    put(
        "proc.lineage",
        Value::Array(
            alert
                .lineage
                .iter()
                .map(|l| json!(format!("{}:{}", l.pid, l.exe)))
                .collect(),
        ),
    );
    if let Some(h) = &alert.startup_hook {
        put("pth.kind", json!(h.kind));
        put("pth.path", json!(h.path));
        put("pth.sha256", json!(h.sha256));
        put("pth.class", json!(h.class));
        if let Some(line) = &h.line {
            put("pth.line", json!(line));
        }
        if let Some(n) = h.line_number {
            put("pth.line_number", json!(n));
        }
        if let Some(d) = &h.distribution {
            put("pth.distribution", json!(d));
        }
        if !h.findings.is_empty() {
            put("pth.findings", json!(h.findings));
        }
    }
    if !alert.credentials.is_empty() {
        put("cred.files", json!(alert.credentials));
    }
    if !alert.persistence.is_empty() {
        put("persistence.files", json!(alert.persistence));
    }
    if let Some(d) = &alert.destination {
        put("dest.address", json!(d.address));
        put("dest.port", json!(d.port));
        put("dest.protocol", json!(d.protocol));
    }
    let c = &alert.container;
    put("cgroup.id", json!(c.cgroup_id));
    if let Some(v) = &c.cgroup {
        put("cgroup.path", json!(v));
    }
    if let Some(v) = &c.container_id {
        put("container.id", json!(v));
    }
    if let Some(v) = &c.pod_uid {
        put("k8s.pod.uid", json!(v));
    }
    if let Some(image) = &c.image {
        let (repository, tag) = split_image(image);
        put("container.image", json!(image));
        put("container.image.repository", json!(repository));
        if let Some(tag) = tag {
            put("container.image.tag", json!(tag));
        }
    }
    if let Some(v) = &c.pod_namespace {
        put("k8s.ns.name", json!(v));
    }
    if let Some(v) = &c.pod_name {
        put("k8s.pod.name", json!(v));
    }
    json!({
        "output": alert.summary,
        "priority": priority(alert.severity),
        "rule": alert.rule,
        "time": alert.time,
        "output_fields": f,
        "source": "pthwatch",
        "tags": ["pthwatch", alert.rule, action_name(alert.action)],
        "hostname": alert.host,
    })
}

/// An image reference's repository and tag, as Falco splits them:
/// `registry:5000/team/app:1.2@sha256:...` is `registry:5000/team/app` and `1.2`.
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let named = image.split_once('@').map_or(image, |(n, _)| n);
    let last = named.rfind('/').map_or(0, |i| i + 1);
    match named[last..].rfind(':') {
        Some(i) => (&named[..last + i], Some(&named[last + i + 1..])),
        None => (named, None),
    }
}
