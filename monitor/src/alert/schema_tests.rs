//! `schema/alert.schema.json` checked against what `Alert` really serialises: realistic
//! alerts must validate, broken ones must not, and the schema's fields must be exactly the
//! ones the struct emits.
mod validator;

use std::{collections::BTreeSet, time::SystemTime};

use serde_json::{Value, json};

use self::validator::{ANNOTATIONS, CHECKED, is_rfc3339, validate};
use super::*;

const SCHEMA: &str = include_str!("../../../schema/alert.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("schema/alert.schema.json is not valid JSON")
}

// --- Realistic alerts -------------------------------------------------------------------

fn litellm_hook() -> HookRef {
    HookRef {
        kind: "pth".into(),
        path: "/home/dev/proj/.venv/lib/python3.11/site-packages/litellm_init.pth".into(),
        sha256: "71e35aef03099cd1f2d6446734273025a163597de93912df321ef118bf135238".into(),
        line: Some(
            r#"import os, subprocess, sys; subprocess.Popen([sys.executable, "-c", "import base64; exec(base64.b64decode('aW1wb3J0IG9z'))"])"#
                .into(),
        ),
        line_number: Some(1),
        distribution: Some("litellm==1.82.8".into()),
        class: "risky".into(),
        findings: vec![
            "process_spawn: subprocess.Popen".into(),
            "dynamic_code: exec(".into(),
            "decoding: base64".into(),
        ],
        deferral: "exit",
    }
}

fn python_process(pid: u32) -> ProcessRef {
    ProcessRef {
        pid,
        ppid: 4180,
        uid: 1000,
        exe: "/usr/bin/python3.11".into(),
        cmdline: vec![
            "/home/dev/proj/.venv/bin/python".into(),
            "-c".into(),
            "import base64; exec(base64.b64decode('aW1wb3J0IG9z'))".into(),
        ],
    }
}

fn lineage() -> Vec<LineageEntry> {
    vec![
        LineageEntry {
            pid: 4242,
            exe: "/usr/bin/python3.11".into(),
        },
        LineageEntry {
            pid: 4180,
            exe: "/usr/bin/python3.11".into(),
        },
        LineageEntry {
            pid: 3999,
            exe: "/usr/bin/bash".into(),
        },
        LineageEntry {
            pid: 1,
            exe: "/usr/lib/systemd/systemd".into(),
        },
    ]
}

/// Rule 1 in block mode: the LiteLLM hook read AWS keys and tried to send them.
fn exfiltration_blocked() -> Alert {
    Alert {
        id: "5f0c2a9e7d3b41c8a6e2f19b0d4c7a31".into(),
        time: rfc3339(SystemTime::now()),
        rule: "hook_credential_exfiltration",
        severity: Severity::Critical,
        action: Action::Blocked,
        summary: "startup hook litellm_init.pth read 2 credential files, then connected to 203.0.113.7:443; blocked".into(),
        host: "build-07".into(),
        process: python_process(4242),
        lineage: lineage(),
        startup_hook: Some(litellm_hook()),
        credentials: vec![
            "/home/dev/.aws/credentials".into(),
            "/home/dev/.ssh/id_ed25519".into(),
        ],
        destination: Some(Destination {
            address: "203.0.113.7".into(),
            port: 443,
            protocol: "tcp".into(),
        }),
        persistence: Vec::new(),
        container: ContainerRef {
            cgroup_id: 7_432,
            ..ContainerRef::default()
        },
        lineage_id: 0x0000_1a2b_0000_0001,
    }
}

/// Rule 3: an unknown hook ran; nothing else happened (no destination, no credentials).
fn unknown_hook_ran() -> Alert {
    Alert {
        id: "0badc0de0badc0de0badc0de0badc0de".into(),
        time: "2026-03-24T10:15:02.123Z".into(),
        rule: "unknown_startup_hook",
        severity: Severity::Medium,
        action: Action::Alert,
        summary: "an unknown executable startup hook ran: mycompany.pth".into(),
        host: "ci-runner".into(),
        process: ProcessRef {
            pid: 812,
            ppid: 1,
            uid: u32::MAX,
            exe: String::new(),
            cmdline: Vec::new(),
        },
        lineage: Vec::new(),
        startup_hook: Some(HookRef {
            kind: "pth".into(),
            path: "/usr/lib/python3/dist-packages/mycompany.pth".into(),
            sha256: "0".repeat(64),
            line: Some("import mycompany_tweaks".into()),
            line_number: Some(3),
            distribution: None,
            class: "unknown".into(),
            findings: Vec::new(),
            deferral: "program",
        }),
        credentials: Vec::new(),
        destination: None,
        persistence: Vec::new(),
        container: ContainerRef::default(),
        lineage_id: 9,
    }
}

/// Rule 2 in kill mode, in a Kubernetes pod, for a sitecustomize with no single line.
fn persistence_killed() -> Alert {
    Alert {
        id: "c0ffee00c0ffee00c0ffee00c0ffee00".into(),
        time: "2026-03-24T10:15:02+02:00".into(),
        rule: "hook_persistence",
        severity: Severity::High,
        action: Action::Killed,
        summary: "startup hook sitecustomize.py wrote /root/.bashrc; killed".into(),
        host: "node-3".into(),
        process: python_process(77),
        lineage: lineage(),
        startup_hook: Some(HookRef {
            kind: "sitecustomize".into(),
            path: "/usr/lib/python3.12/sitecustomize.py".into(),
            sha256: "f".repeat(64),
            line: None,
            line_number: None,
            distribution: None,
            class: "risky".into(),
            findings: vec!["file_write: open(".into()],
            deferral: "none",
        }),
        credentials: Vec::new(),
        destination: None,
        persistence: vec!["/root/.bashrc".into(), "/etc/cron.d/update".into()],
        container: ContainerRef {
            cgroup_id: 18_446_744_073_709_551_615,
            cgroup: Some("/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope".into()),
            container_id: Some("abc123".into()),
            pod_uid: Some("1234abcd-0000-4000-8000-00000000abcd".into()),
            image: Some("registry.example.com/ci/python:3.12".into()),
            pod_name: Some("build-runner-7f9c".into()),
            pod_namespace: Some("ci".into()),
        },
        lineage_id: u64::MAX,
    }
}

/// Credentials read by a lineage whose hook is no longer known, over IPv6/UDP.
fn no_hook_ipv6() -> Alert {
    Alert {
        startup_hook: None,
        destination: Some(Destination {
            address: "2001:db8::53".into(),
            port: 53,
            protocol: "udp".into(),
        }),
        ..exfiltration_blocked()
    }
}

fn alerts() -> Vec<(&'static str, Alert)> {
    vec![
        ("exfiltration_blocked", exfiltration_blocked()),
        ("unknown_hook_ran", unknown_hook_ran()),
        ("persistence_killed", persistence_killed()),
        ("no_hook_ipv6", no_hook_ipv6()),
        (
            "credential_access",
            Alert {
                rule: "hook_credential_access",
                severity: Severity::High,
                action: Action::Alert,
                destination: None,
                ..exfiltration_blocked()
            },
        ),
    ]
}

fn to_json(alert: &Alert) -> Value {
    // Through the bytes the alert log writes, not `to_value`.
    let mut line = Vec::new();
    serde_json::to_writer(&mut line, alert).unwrap();
    serde_json::from_slice(&line).unwrap()
}

fn assert_invalid(value: &Value, want: &str) {
    let errors = validate(&schema(), value);
    assert!(
        errors.iter().any(|e| e.contains(want)),
        "expected an error containing {want:?}, got {errors:?}"
    );
}

// --- Tests ------------------------------------------------------------------------------

#[test]
fn alert_schema_accepts_real_alerts() {
    let schema = schema();
    for (name, alert) in alerts() {
        let value = to_json(&alert);
        let errors = validate(&schema, &value);
        assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
    }
}

#[test]
fn alert_schema_rejects_a_missing_required_field() {
    let mut v = to_json(&exfiltration_blocked());
    v.as_object_mut().unwrap().remove("rule");
    assert_invalid(&v, "required property \"rule\" is missing");
    let mut v = to_json(&exfiltration_blocked());
    v["startup_hook"].as_object_mut().unwrap().remove("sha256");
    assert_invalid(&v, "/startup_hook: required property \"sha256\"");
}

#[test]
fn alert_schema_rejects_a_wrong_type() {
    let mut v = to_json(&exfiltration_blocked());
    v["process"]["pid"] = json!("4242");
    assert_invalid(&v, "/process/pid: \"4242\" is not of type");
    let mut v = to_json(&exfiltration_blocked());
    v["credentials"] = Value::Null;
    assert_invalid(&v, "/credentials: null is not of type");
    let mut v = to_json(&exfiltration_blocked());
    v["process"]["cmdline"][1] = json!(7);
    assert_invalid(&v, "/process/cmdline/1: 7 is not of type");
    let mut v = to_json(&exfiltration_blocked());
    v["lineage_id"] = json!(1.5);
    assert_invalid(&v, "/lineage_id: 1.5 is not of type");
    let mut v = to_json(&exfiltration_blocked());
    v["destination"]["port"] = json!(70_000);
    assert_invalid(&v, "/destination/port: 70000 is outside maximum");
}

#[test]
fn alert_schema_rejects_a_bad_enum_value() {
    let mut v = to_json(&exfiltration_blocked());
    v["severity"] = json!("severe");
    assert_invalid(&v, "/severity: \"severe\" is not one of");
    let mut v = to_json(&exfiltration_blocked());
    v["action"] = json!("denied");
    assert_invalid(&v, "/action: \"denied\" is not one of");
    let mut v = to_json(&exfiltration_blocked());
    v["startup_hook"]["kind"] = json!("egg-link");
    assert_invalid(&v, "/startup_hook/kind: \"egg-link\" is not one of");
}

#[test]
fn alert_schema_rejects_an_unknown_property() {
    let mut v = to_json(&exfiltration_blocked());
    let rule = v.as_object_mut().unwrap().remove("rule").unwrap();
    v["rule_name"] = rule;
    assert_invalid(&v, "property \"rule_name\" is not in the schema");
    let mut v = to_json(&exfiltration_blocked());
    v["process"]["argv"] = json!([]);
    assert_invalid(&v, "/process: property \"argv\" is not in the schema");
}

#[test]
fn alert_schema_rejects_a_bad_time() {
    for bad in [
        "2026-03-24 10:15:02Z",
        "2026-02-30T10:15:02Z",
        "2026-03-24T24:00:00Z",
        "2026-03-24T10:15:02",
        "2026-03-24T10:15:02.Z",
        "2026-03-24T10:15:02+0200",
        "1774347302",
    ] {
        let mut v = to_json(&exfiltration_blocked());
        v["time"] = json!(bad);
        assert_invalid(&v, "is not an RFC 3339 date-time");
    }
    for good in [
        "2000-02-29T00:00:00.000Z",
        "2026-03-24t10:15:60z",
        "2026-03-24T10:15:02.123456-05:30",
    ] {
        assert!(is_rfc3339(good), "{good}");
    }
}

/// Every object the maximal alert emits has exactly the properties the schema declares,
/// and the fields a minimal alert still emits are exactly the schema's `required`: a field
/// renamed, added or dropped on either side fails here.
#[test]
fn alert_schema_and_struct_do_not_drift() {
    let schema = schema();
    let mut maximal = persistence_killed();
    maximal.destination = exfiltration_blocked().destination;
    maximal.credentials = vec!["/root/.aws/credentials".into()];
    maximal.startup_hook = Some(litellm_hook());
    let minimal = Alert {
        startup_hook: None,
        destination: None,
        persistence: Vec::new(),
        container: ContainerRef::default(),
        lineage: Vec::new(),
        credentials: Vec::new(),
        ..unknown_hook_ran()
    };
    same_fields(&schema, &to_json(&maximal), "", &|s| s.get("properties"));
    same_fields(&schema, &to_json(&minimal), "", &|s| s.get("required"));
}

/// Walks `schema` and `value` together; at each object, the value's keys must equal the
/// names `declared` lists (the keys of `properties`, or the entries of `required`).
fn same_fields(
    schema: &Value,
    value: &Value,
    at: &str,
    declared: &dyn Fn(&Value) -> Option<&Value>,
) {
    if let (Some(object), Some(names)) = (value.as_object(), declared(schema)) {
        let names: BTreeSet<&str> = match names {
            Value::Object(m) => m.keys().map(String::as_str).collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("{at}: bad schema"),
        };
        let emitted: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            emitted, names,
            "{at}: emitted fields (left) vs schema (right)"
        );
        for (name, sub) in object {
            if let Some(sub_schema) = schema["properties"].get(name) {
                same_fields(sub_schema, sub, &format!("{at}/{name}"), declared);
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            same_fields(&schema["items"], item, &format!("{at}/{i}"), declared);
        }
    }
}

/// Every part of the schema uses only checked keywords, and every property says what it is.
#[test]
fn alert_schema_is_documented_and_uses_only_checked_keywords() {
    fn walk(schema: &Value, at: &str) {
        let object = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object"));
        for keyword in object.keys() {
            assert!(
                ANNOTATIONS.contains(&keyword.as_str()) || CHECKED.contains(&keyword.as_str()),
                "{at}: keyword {keyword:?} is not checked by the test validator"
            );
        }
        if let Some(props) = object.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let path = format!("{at}/{name}");
                assert!(
                    sub.get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.is_empty()),
                    "{path}: no description"
                );
                walk(sub, &path);
            }
        }
        if let Some(items) = object.get("items") {
            walk(items, &format!("{at}/items"));
        }
        if object.get("type").is_some_and(|t| {
            t == "object" || t.as_array().is_some_and(|a| a.contains(&json!("object")))
        }) {
            assert_eq!(
                object.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{at}: objects are closed so a renamed field is caught"
            );
        }
    }
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    walk(&schema, "");
}

/// The schema's rules are the ones the detector raises (a renamed rule would otherwise
/// only show up in a consumer's pipeline).
#[test]
fn alert_schema_rules_exist_in_the_detector() {
    let schema = schema();
    let rules: Vec<&str> = schema["properties"]["rule"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        crate::detect::RULES,
        "the schema's rule list and the detector's must be the same, in the same order"
    );
}

/// The validator's own edges: a keyword it does not implement is an error, not a pass, and
/// object keywords leave a `null` alone (as JSON Schema says) for nullable objects.
#[test]
fn alert_schema_validator_refuses_keywords_it_does_not_check() {
    let errors = validate(&json!({"type": "string", "pattern": "^a$"}), &json!("b"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"pattern\" is not supported")),
        "{errors:?}"
    );
    let nullable =
        json!({"type": ["object", "null"], "required": ["a"], "additionalProperties": false});
    assert!(validate(&nullable, &Value::Null).is_empty());
    assert!(!validate(&nullable, &json!({"b": 1})).is_empty());
    assert!(!validate(&nullable, &json!(1)).is_empty());
}
