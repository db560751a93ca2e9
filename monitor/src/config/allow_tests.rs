//! The allowlist's matchers and CIDR matching.

use std::net::IpAddr;

use super::{allow::ImageGlob, *};
use crate::detect::RULES;

fn config(text: &str) -> Config {
    match Config::from_toml(text, Path::new("t.toml"), false) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{text}\n→ {e}"),
    }
}

// ---- the allowlist ----

fn entry(text: &str) -> AllowEntry {
    config(&format!("[[allow]]\n{text}\n")).allow.entries()[0].clone()
}

#[test]
fn config_allow_matches_each_matcher() {
    let facts = AlertFacts {
        exe: Some("/opt/ci/3.12/bin/python3"),
        hook_sha256: Some("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
        distribution: Some("Coverage_Py==7.6.1"),
        dest: Some("10.1.2.3".parse().unwrap()),
        port: Some(8443),
        container_image: Some("registry.example.com/ci/python:3.12"),
        k8s_namespace: Some("ci"),
    };
    let rule = "unknown_startup_hook";
    let yes = [
        "executable = \"/opt/ci/*/bin/python3\"",
        "executable = \"/opt/**/python3\"",
        "hook_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
        "distribution = \"coverage-py\"",
        "distribution = \"coverage.py==7.6.1\"",
        "destination = \"10.0.0.0/8\"",
        "destination = \"::ffff:10.1.0.0/112\"",
        "port = 8443",
        "port = \"8000-8999\"",
        "container_image = \"registry.example.com/ci/*\"",
        "container_image = \"*/ci/python:*\"",
        "k8s_namespace = \"ci\"",
    ];
    let no = [
        "executable = \"/opt/ci/bin/python3\"",
        "executable = \"/opt/ci/*/python3\"",
        "hook_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
        "distribution = \"coverage\"",
        "distribution = \"coverage-py==7.6.2\"",
        "destination = \"10.1.3.0/24\"",
        "destination = \"2001:db8::/32\"",
        "port = 443",
        "port = \"9000-9999\"",
        "container_image = \"registry.example.com/ci\"",
        "container_image = \"docker.io/*\"",
        "k8s_namespace = \"kube-system\"",
    ];
    for m in yes {
        let e = entry(&format!("rules = [\"{rule}\"]\n{m}"));
        assert!(e.matches(rule, &facts), "{m} should match");
        // A fact that is not known does not match.
        assert!(
            !e.matches(rule, &AlertFacts::default()),
            "{m} matched nothing"
        );
    }
    for m in no {
        let e = entry(&format!("rules = [\"{rule}\"]\n{m}"));
        assert!(!e.matches(rule, &facts), "{m} should not match");
    }
}

#[test]
fn config_allow_needs_the_rule_and_every_matcher() {
    let list = config(
        r#"
[[allow]]
rules = ["hook_persistence"]
executable = "/usr/bin/python3"
destination = "192.0.2.0/24"

[[allow]]
rules = ["*"]
hook_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
reason = "vendored hook"
"#,
    )
    .allow;
    let exe = AlertFacts {
        exe: Some("/usr/bin/python3"),
        dest: Some("192.0.2.7".parse().unwrap()),
        ..AlertFacts::default()
    };
    assert!(list.allows("hook_persistence", &exe).is_some());
    // Another rule: not covered by the first entry.
    assert!(list.allows("hook_credential_access", &exe).is_none());
    // Both matchers must hold.
    let elsewhere = AlertFacts {
        dest: Some("198.51.100.1".parse().unwrap()),
        ..exe
    };
    assert!(list.allows("hook_persistence", &elsewhere).is_none());
    let no_dest = AlertFacts { dest: None, ..exe };
    assert!(list.allows("hook_persistence", &no_dest).is_none());
    // "*" covers every rule.
    let hook = AlertFacts {
        hook_sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ..AlertFacts::default()
    };
    for rule in RULES {
        let hit = list.allows(rule, &hook).unwrap();
        assert_eq!(hit.reason.as_deref(), Some("vendored hook"));
    }
    // A hand-built entry without a matcher never matches.
    let bare = Allowlist::new(vec![AllowEntry {
        rules: vec!["*".into()],
        ..AllowEntry::default()
    }]);
    assert!(bare.allows("hook_persistence", &exe).is_none());
}

#[test]
fn config_exe_patterns_refuse_dot_dot() {
    let e = ExePattern::parse("/opt/app/*/python3").unwrap();
    assert!(e.matches("/opt/app/venv/python3"));
    assert!(!e.matches("/opt/app/../python3"));
    assert!(!e.matches("opt/app/venv/python3"));
    assert_eq!(e.as_str(), "/opt/app/*/python3");
    let image = ImageGlob::parse("ghcr.io/acme/*").unwrap();
    assert_eq!(image.as_str(), "ghcr.io/acme/*");
    assert!(image.matches("ghcr.io/acme/tools/app:1.2@sha256:00"));
    assert!(!image.matches("ghcr.io/acmecorp/app:1.2"));
}

#[test]
fn config_ports_and_distributions_parse() {
    assert_eq!(
        PortRange::parse("443").unwrap(),
        PortRange {
            low: 443,
            high: 443
        }
    );
    assert_eq!(PortRange::parse("1-65535").unwrap().to_string(), "1-65535");
    assert!(PortRange::parse("0").is_err());
    assert!(PortRange::parse("80-").is_err());
    assert!(PortRange::parse("+80").is_err());
    let d = DistributionSpec::parse("Foo__Bar.baz==1.0rc1").unwrap();
    assert_eq!(d.to_string(), "foo-bar-baz==1.0rc1");
    assert!(d.matches("foo-bar-baz==1.0RC1"));
    assert!(!d.matches("foo-bar-baz"));
    assert!(DistributionSpec::parse("foo==").is_err());
    assert!(DistributionSpec::parse("-foo").is_err());
}

// ---- CIDR ----

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn config_cidr_v4() {
    let net = cidr("192.168.0.0/16");
    assert!(net.contains(ip("192.168.0.0")));
    assert!(net.contains(ip("192.168.255.255")));
    assert!(!net.contains(ip("192.169.0.0")));
    assert!(!net.contains(ip("10.0.0.1")));
    assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    let host = cidr("203.0.113.9");
    assert_eq!((host.addr(), host.prefix()), (ip("203.0.113.9"), 32));
    assert_eq!(host.to_string(), "203.0.113.9/32");
    assert!(host.contains(ip("203.0.113.9")));
    assert!(!host.contains(ip("203.0.113.8")));
    // An IPv4 network says nothing about native IPv6 addresses.
    assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    assert!(cidr("10.0.0.0/31").contains(ip("10.0.0.1")));
}

#[test]
fn config_cidr_v6() {
    let net = cidr("2001:db8::/32");
    assert!(net.contains(ip("2001:db8::1")));
    assert!(net.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!net.contains(ip("2001:db9::")));
    assert!(!net.contains(ip("10.0.0.1")));
    assert!(cidr("::/0").contains(ip("fe80::1")));
    assert!(cidr("::1/128").contains(ip("::1")));
    assert!(!cidr("::1/128").contains(ip("::2")));
    assert_eq!(cidr("2001:DB8::/48").to_string(), "2001:db8::/48");
    assert!(cidr("2001:db8::/127").contains(ip("2001:db8::1")));
}

#[test]
fn config_cidr_ipv4_mapped() {
    // A v4 network holds the v4-mapped form of its addresses (dual-stack sockets)...
    let v4 = cidr("10.0.0.0/8");
    assert!(v4.contains(ip("::ffff:10.20.30.40")));
    assert!(!v4.contains(ip("::ffff:11.0.0.1")));
    // ...and a mapped v6 network holds the plain v4 addresses.
    let mapped = cidr("::ffff:10.0.0.0/104");
    assert!(mapped.contains(ip("10.9.9.9")));
    assert!(mapped.contains(ip("::ffff:10.9.9.9")));
    assert!(!mapped.contains(ip("11.0.0.0")));
    assert!(cidr("::ffff:0:0/96").contains(ip("198.51.100.7")));
    // `::/0` is every address, v4 included; a v6 network outside ::ffff:0:0/96 holds none.
    assert!(cidr("::/0").contains(ip("198.51.100.7")));
    assert!(!cidr("2001:db8::/32").contains(ip("198.51.100.7")));
    // The deprecated IPv4-compatible form `::a.b.c.d` is not the v4 address.
    assert!(!v4.contains(ip("::10.0.0.1")));
}

#[test]
fn config_cidr_errors() {
    let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
    assert_eq!(
        err("10.0.0.1/8"),
        "`10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?"
    );
    assert_eq!(
        err("2001:db8::1/32"),
        "`2001:db8::1/32` has host bits set; did you mean `2001:db8::/32`?"
    );
    assert_eq!(
        err("10.0.0.0/33"),
        "`10.0.0.0/33`: an IPv4 prefix length is 0 to 32"
    );
    assert_eq!(err("::/129"), "`::/129`: an IPv6 prefix length is 0 to 128");
    assert_eq!(err("::/999"), "`::/999`: an IPv6 prefix length is 0 to 128");
    for bad in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "host/8",
        " 10.0.0.0/8",
    ] {
        assert!(
            matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
            "{bad:?}"
        );
    }
}
