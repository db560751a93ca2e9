//! `cargo xtask sbom`: a CycloneDX 1.5 JSON SBOM of pthwatch, written from
//! `cargo metadata --locked` (packages, licenses, the resolved graph, filtered to Linux and
//! the BPF target) and `Cargo.lock` (the sha256 of each crates.io archive). No extra tool.
//!
//! What it lists: every crate reachable from the `monitor` package through normal and
//! build dependencies (not dev). Build dependencies stay in because one of them,
//! `monitor-ebpf` and its crates, is compiled into the binary as the kernel object; the
//! others (aya-build, proc macros) ran when it was built. The timestamp is
//! `SOURCE_DATE_EPOCH` (else the commit time), so the file is reproducible too.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Map, Value, json};

use super::{rfc3339, source_date_epoch};
use crate::util::{cargo, output, target_dir, workspace_root};

/// The package the SBOM describes, and its binary.
pub const PACKAGE: &str = "monitor";
pub const BINARY: &str = "pthwatch";
/// Where the kernel programs are built for (`monitor/build.rs`, aya-build).
const BPF_TARGET: &str = "bpfel-unknown-none";
const CRATES_IO: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

#[derive(clap::Args)]
pub struct Args {
    /// Where to write it [default: target/release-artifacts/pthwatch.cdx.json].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let path = match &args.output {
        Some(p) => p.clone(),
        None => target_dir()?.join("release-artifacts").join(file_name()),
    };
    let count = write(&path, source_date_epoch())?;
    eprintln!("xtask: SBOM of {PACKAGE} ({count} components): CycloneDX 1.5 JSON");
    println!("{}", path.display());
    Ok(())
}

pub fn file_name() -> String {
    format!("{BINARY}.cdx.json")
}

/// Writes the SBOM to `path`; returns the number of components.
pub fn write(path: &Path, epoch: Option<u64>) -> Result<usize> {
    let host = output(Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` printed no host line")?;
    let metadata = output(cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        &host,
        "--filter-platform",
        BPF_TARGET,
    ]))?;
    let metadata: Value =
        serde_json::from_str(&metadata).context("parsing `cargo metadata` output")?;
    let lock_path = workspace_root().join("Cargo.lock");
    let lock = fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let bom = build(&metadata, &lock_checksums(&lock), PACKAGE, epoch)?;
    validate(&bom).context("the generated SBOM is malformed (a bug in xtask)")?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(&bom)?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(bom["components"].as_array().map_or(0, Vec::len))
}

type LockKey = (String, String, String);

/// (name, version, source) to the `checksum` of each `[[package]]` in a v3/v4 Cargo.lock.
pub fn lock_checksums(lock: &str) -> BTreeMap<LockKey, String> {
    fn flush(fields: &mut BTreeMap<&str, String>, out: &mut BTreeMap<LockKey, String>) {
        if let (Some(name), Some(version), Some(source), Some(sum)) = (
            fields.get("name"),
            fields.get("version"),
            fields.get("source"),
            fields.get("checksum"),
        ) {
            out.insert((name.clone(), version.clone(), source.clone()), sum.clone());
        }
        fields.clear();
    }
    let mut out = BTreeMap::new();
    let mut fields = BTreeMap::new();
    for line in lock.lines() {
        if line.starts_with('[') {
            flush(&mut fields, &mut out);
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if let key @ ("name" | "version" | "source" | "checksum") = key
            && let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'))
        {
            fields.insert(key, v.to_owned());
        }
    }
    flush(&mut fields, &mut out);
    out
}

/// `pkg:cargo/name@version`, the version percent-encoded (`+` in build metadata is `%2B`).
pub fn purl(name: &str, version: &str) -> String {
    let mut v = String::new();
    for b in version.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            v.push(char::from(b));
        } else {
            v.push_str(&format!("%{b:02X}"));
        }
    }
    format!("pkg:cargo/{name}@{v}")
}

fn str_field<'a>(pkg: &'a Value, key: &str) -> Option<&'a str> {
    pkg[key].as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn component(pkg: &Value, kind: &str, checksums: &BTreeMap<LockKey, String>) -> Result<Value> {
    let name = str_field(pkg, "name").ok_or_else(|| anyhow!("package without a name"))?;
    let version = str_field(pkg, "version").ok_or_else(|| anyhow!("{name} has no version"))?;
    let mut c = Map::new();
    c.insert("type".into(), kind.into());
    c.insert("bom-ref".into(), format!("{name}@{version}").into());
    c.insert("name".into(), name.into());
    c.insert("version".into(), version.into());
    if let Some(d) = str_field(pkg, "description") {
        // Cargo descriptions may wrap; one line reads better in a table.
        c.insert(
            "description".into(),
            d.split_whitespace().collect::<Vec<_>>().join(" ").into(),
        );
    }
    if let Some(authors) = pkg["authors"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = authors.iter().filter_map(Value::as_str).collect();
        c.insert("author".into(), names.join(", ").into());
    }
    if let Some(expr) = str_field(pkg, "license") {
        c.insert("licenses".into(), json!([{ "expression": expr }]));
    } else if let Some(file) = str_field(pkg, "license_file") {
        let file = Path::new(file)
            .file_name()
            .map_or_else(|| file.to_owned(), |f| f.to_string_lossy().into_owned());
        c.insert(
            "licenses".into(),
            json!([{ "license": { "name": format!("see {file} in the crate") } }]),
        );
    }
    let source = str_field(pkg, "source");
    if let Some(source) = source.filter(|s| CRATES_IO.contains(s)) {
        c.insert("purl".into(), purl(name, version).into());
        let key = (name.to_owned(), version.to_owned(), source.to_owned());
        if let Some(sum) = checksums.get(&key) {
            c.insert(
                "hashes".into(),
                json!([{ "alg": "SHA-256", "content": sum }]),
            );
        }
    }
    let mut refs = Vec::new();
    for (key, kind) in [
        ("repository", "vcs"),
        ("homepage", "website"),
        ("documentation", "documentation"),
    ] {
        if let Some(url) = str_field(pkg, key) {
            refs.push(json!({ "type": kind, "url": url }));
        }
    }
    if !refs.is_empty() {
        c.insert("externalReferences".into(), refs.into());
    }
    if source.is_none() {
        // A workspace crate: built from this repository, not downloaded.
        c.insert(
            "properties".into(),
            json!([{ "name": "pthwatch:source", "value": "workspace" }]),
        );
    }
    Ok(Value::Object(c))
}

/// The CycloneDX document for `root` from `cargo metadata` output and lock checksums.
pub fn build(
    metadata: &Value,
    checksums: &BTreeMap<LockKey, String>,
    root: &str,
    epoch: Option<u64>,
) -> Result<Value> {
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph (was --no-deps given?)")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let root_id = packages
        .iter()
        .find(|(id, p)| p["name"] == root && members.contains(*id))
        .map(|(id, _)| *id)
        .with_context(|| format!("no workspace package named {root}"))?;

    // Reachable through normal and build edges, and each node's edges.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut queue = VecDeque::from([root_id]);
    while let Some(id) = queue.pop_front() {
        if edges.contains_key(id) {
            continue;
        }
        let node = nodes
            .get(id)
            .with_context(|| format!("{id} missing from the resolve graph"))?;
        let mut deps = BTreeSet::new();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let ships = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if let (true, Some(pkg)) = (ships, dep["pkg"].as_str()) {
                deps.insert(pkg);
                queue.push_back(pkg);
            }
        }
        edges.insert(id, deps);
    }

    let bom_ref = |id: &str| -> Result<String> {
        let p = packages
            .get(id)
            .with_context(|| format!("{id} missing from packages"))?;
        Ok(format!(
            "{}@{}",
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or("")
        ))
    };
    let mut components = Vec::new();
    let mut refs_seen = BTreeSet::new();
    let mut ordered: Vec<&str> = edges.keys().copied().filter(|id| *id != root_id).collect();
    ordered.sort_by_key(|id| bom_ref(id).unwrap_or_default());
    for id in &ordered {
        components.push(component(packages[id], "library", checksums)?);
    }
    let mut dependencies = Vec::new();
    for id in std::iter::once(root_id).chain(ordered.iter().copied()) {
        let r = bom_ref(id)?;
        if !refs_seen.insert(r.clone()) {
            bail!(
                "two packages share the reference {r} (same name and version, different sources)"
            );
        }
        let depends_on: BTreeSet<String> = edges[id]
            .iter()
            .map(|d| bom_ref(d))
            .collect::<Result<_>>()?;
        dependencies.push(json!({ "ref": r, "dependsOn": depends_on }));
    }

    let mut meta = Map::new();
    if let Some(epoch) = epoch {
        meta.insert("timestamp".into(), rfc3339(epoch).into());
    }
    meta.insert(
        "tools".into(),
        json!({ "components": [{
            "type": "application",
            "name": "xtask",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "pthwatch's `cargo xtask sbom`: cargo metadata and Cargo.lock to CycloneDX",
        }]}),
    );
    let mut app = component(packages[root_id], "application", checksums)?;
    app["properties"] = json!([
        { "name": "pthwatch:source", "value": "workspace" },
        { "name": "pthwatch:binary", "value": BINARY },
    ]);
    meta.insert("component".into(), app);

    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": meta,
        "components": components,
        "dependencies": dependencies,
    }))
}

/// The structure CycloneDX 1.5 requires of what `build` writes: the fields, their types
/// and formats, unique references, and a dependency graph that names only components.
pub fn validate(bom: &Value) -> Result<()> {
    ensure!(
        bom["bomFormat"] == "CycloneDX",
        "bomFormat must be CycloneDX"
    );
    ensure!(bom["specVersion"] == "1.5", "specVersion must be 1.5");
    ensure!(
        bom["version"].as_u64().is_some_and(|v| v >= 1),
        "version must be an integer >= 1"
    );
    if let Some(ts) = bom["metadata"].get("timestamp") {
        let ts = ts.as_str().context("timestamp must be a string")?;
        ensure!(
            ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "timestamp {ts} is not RFC 3339 UTC"
        );
    }
    let root = &bom["metadata"]["component"];
    ensure!(root.is_object(), "metadata.component missing");
    let components = bom["components"]
        .as_array()
        .context("components must be an array")?;
    let mut refs = BTreeSet::new();
    for c in std::iter::once(root).chain(components) {
        let name = c["name"].as_str().filter(|n| !n.is_empty());
        let name = name.context("every component needs a name")?;
        ensure!(
            matches!(
                c["type"].as_str(),
                Some("application" | "framework" | "library" | "container" | "file")
            ),
            "{name}: unexpected component type {}",
            c["type"]
        );
        let r = c["bom-ref"]
            .as_str()
            .context("every component needs a bom-ref")?;
        ensure!(refs.insert(r.to_owned()), "duplicate bom-ref {r}");
        if let Some(p) = c.get("purl") {
            let version = c["version"].as_str().unwrap_or_default();
            ensure!(
                p.as_str() == Some(purl(name, version).as_str()),
                "{name}: purl {p} does not match its name and version"
            );
        }
        for h in c["hashes"].as_array().into_iter().flatten() {
            ensure!(h["alg"] == "SHA-256", "{name}: unexpected hash algorithm");
            ensure!(
                h["content"].as_str().is_some_and(super::is_sha256),
                "{name}: a SHA-256 is 64 lowercase hex digits"
            );
        }
        if let Some(licenses) = c.get("licenses") {
            let licenses = licenses.as_array().context("licenses must be an array")?;
            for l in licenses {
                let expression = l["expression"].as_str().is_some_and(|e| !e.is_empty());
                let named = l["license"]["id"].is_string() || l["license"]["name"].is_string();
                ensure!(
                    expression != named,
                    "{name}: a license entry is an expression or a license"
                );
                ensure!(
                    !expression || licenses.len() == 1,
                    "{name}: an expression must be the only license entry"
                );
            }
        }
        for e in c["externalReferences"].as_array().into_iter().flatten() {
            ensure!(
                e["url"].as_str().is_some_and(|u| !u.is_empty()) && e["type"].is_string(),
                "{name}: external references need a type and a url"
            );
        }
    }
    let deps = bom["dependencies"]
        .as_array()
        .context("dependencies must be an array")?;
    let mut described = BTreeSet::new();
    for d in deps {
        let r = d["ref"].as_str().context("dependency without ref")?;
        ensure!(refs.contains(r), "dependency ref {r} names no component");
        ensure!(described.insert(r), "{r} has two dependency entries");
        for on in d["dependsOn"].as_array().into_iter().flatten() {
            let on = on.as_str().context("dependsOn entries are strings")?;
            ensure!(
                refs.contains(on),
                "{r} depends on {on}, which names no component"
            );
        }
    }
    ensure!(
        root["bom-ref"]
            .as_str()
            .is_some_and(|r| described.contains(r)),
        "the described component has no dependency entry"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRATES: &str = "registry+https://github.com/rust-lang/crates.io-index";

    fn fake_metadata() -> Value {
        let pkg = |id: &str, name: &str, version: &str, source: Option<&str>, license: &str| {
            json!({
                "id": id, "name": name, "version": version, "source": source,
                "license": license, "license_file": null,
                "description": "A  test\n crate", "authors": [],
                "repository": format!("https://example.invalid/{name}"),
            })
        };
        let dep = |pkg: &str, kind: Option<&str>| json!({ "pkg": pkg, "dep_kinds": [{ "kind": kind, "target": null }] });
        json!({
            "workspace_members": ["path+file:///w/monitor#0.1.0", "path+file:///w/xtask#0.1.0"],
            "packages": [
                pkg("path+file:///w/monitor#0.1.0", "monitor", "0.1.0", None, "MIT OR Apache-2.0"),
                pkg("path+file:///w/xtask#0.1.0", "xtask", "0.1.0", None, "MIT"),
                pkg(&format!("{CRATES}#serde@1.0.229"), "serde", "1.0.229", Some(CRATES), "MIT OR Apache-2.0"),
                pkg(&format!("{CRATES}#toml@1.2.2+spec-1.1.0"), "toml", "1.2.2+spec-1.1.0", Some(CRATES), "MIT OR Apache-2.0"),
                pkg(&format!("{CRATES}#cc@1.11.3"), "cc", "1.11.3", Some(CRATES), "MIT OR Apache-2.0"),
                pkg(&format!("{CRATES}#assert_matches@1.5.0"), "assert_matches", "1.5.0", Some(CRATES), "MIT"),
                {
                    "id": format!("{CRATES}#odd@0.1.0"), "name": "odd", "version": "0.1.0",
                    "source": CRATES, "license": null, "license_file": "/reg/odd-0.1.0/LICENSE",
                    "description": null, "authors": ["A <a@example.invalid>"],
                },
            ],
            "resolve": { "nodes": [
                { "id": "path+file:///w/monitor#0.1.0", "deps": [
                    dep(&format!("{CRATES}#serde@1.0.229"), None),
                    dep(&format!("{CRATES}#toml@1.2.2+spec-1.1.0"), None),
                    dep(&format!("{CRATES}#cc@1.11.3"), Some("build")),
                    dep(&format!("{CRATES}#assert_matches@1.5.0"), Some("dev")),
                ]},
                { "id": "path+file:///w/xtask#0.1.0", "deps": [dep(&format!("{CRATES}#serde@1.0.229"), None)] },
                { "id": format!("{CRATES}#serde@1.0.229"), "deps": [] },
                { "id": format!("{CRATES}#toml@1.2.2+spec-1.1.0"), "deps": [
                    dep(&format!("{CRATES}#serde@1.0.229"), None),
                    dep(&format!("{CRATES}#odd@0.1.0"), None),
                ]},
                { "id": format!("{CRATES}#cc@1.11.3"), "deps": [] },
                { "id": format!("{CRATES}#assert_matches@1.5.0"), "deps": [] },
                { "id": format!("{CRATES}#odd@0.1.0"), "deps": [] },
            ]},
        })
    }

    const LOCK: &str = r#"# This file is automatically @generated by Cargo.
version = 4

[[package]]
name = "monitor"
version = "0.1.0"
dependencies = [
 "serde",
]

[[package]]
name = "serde"
version = "1.0.229"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0000000000000000000000000000000000000000000000000000000000000001"

[[package]]
name = "toml"
version = "1.2.2+spec-1.1.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00000000000000000000000000000000000000000000000000000000000000aa"
dependencies = [
 "serde",
]
"#;

    #[test]
    fn reads_lock_checksums() {
        let sums = lock_checksums(LOCK);
        assert_eq!(sums.len(), 2, "path packages have no checksum");
        let key = (
            "toml".to_owned(),
            "1.2.2+spec-1.1.0".to_owned(),
            CRATES.to_owned(),
        );
        assert!(sums[&key].ends_with("aa"));
    }

    #[test]
    fn encodes_purl_versions() {
        assert_eq!(purl("serde", "1.0.229"), "pkg:cargo/serde@1.0.229");
        assert_eq!(
            purl("toml", "1.2.2+spec-1.1.0"),
            "pkg:cargo/toml@1.2.2%2Bspec-1.1.0"
        );
    }

    #[test]
    fn builds_a_valid_cyclonedx_document() {
        let bom = build(
            &fake_metadata(),
            &lock_checksums(LOCK),
            "monitor",
            Some(1_787_184_000),
        )
        .unwrap();
        validate(&bom).unwrap();
        assert_eq!(bom["metadata"]["timestamp"], "2026-08-20T00:00:00Z");
        let app = &bom["metadata"]["component"];
        assert_eq!(app["type"], "application");
        assert_eq!(app["bom-ref"], "monitor@0.1.0");
        assert!(
            app.get("purl").is_none(),
            "workspace crates are not on crates.io"
        );

        let names: Vec<&str> = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["bom-ref"].as_str().unwrap())
            .collect();
        // Build dependencies count, dev dependencies and other members' crates do not;
        // sorted by reference.
        assert_eq!(
            names,
            [
                "cc@1.11.3",
                "odd@0.1.0",
                "serde@1.0.229",
                "toml@1.2.2+spec-1.1.0"
            ]
        );
        let toml = &bom["components"][3];
        assert_eq!(toml["purl"], "pkg:cargo/toml@1.2.2%2Bspec-1.1.0");
        assert_eq!(toml["hashes"][0]["alg"], "SHA-256");
        assert_eq!(toml["licenses"][0]["expression"], "MIT OR Apache-2.0");
        assert_eq!(toml["description"], "A test crate");
        assert_eq!(toml["externalReferences"][0]["type"], "vcs");
        let odd = &bom["components"][1];
        assert_eq!(
            odd["licenses"][0]["license"]["name"],
            "see LICENSE in the crate"
        );
        assert_eq!(odd["author"], "A <a@example.invalid>");
        assert!(
            odd.get("hashes").is_none(),
            "not in the lock: no hash rather than a wrong one"
        );

        let deps = bom["dependencies"].as_array().unwrap();
        assert_eq!(deps.len(), 5);
        assert_eq!(deps[0]["ref"], "monitor@0.1.0");
        assert_eq!(
            deps[0]["dependsOn"],
            json!(["cc@1.11.3", "serde@1.0.229", "toml@1.2.2+spec-1.1.0"])
        );
        // Same input, same bytes.
        let again = build(
            &fake_metadata(),
            &lock_checksums(LOCK),
            "monitor",
            Some(1_787_184_000),
        )
        .unwrap();
        assert_eq!(bom.to_string(), again.to_string());
    }

    #[test]
    fn validation_catches_broken_documents() {
        let good = build(&fake_metadata(), &lock_checksums(LOCK), "monitor", None).unwrap();
        validate(&good).unwrap();
        assert!(good["metadata"].get("timestamp").is_none());

        let mut bad = good.clone();
        bad["dependencies"][0]["dependsOn"] = json!(["nothing@1.0.0"]);
        assert!(validate(&bad).is_err());
        let mut bad = good.clone();
        bad["components"][0]["bom-ref"] = json!("monitor@0.1.0");
        assert!(validate(&bad).is_err());
        let mut bad = good.clone();
        bad["components"][2]["hashes"][0]["content"] = json!("XYZ");
        assert!(validate(&bad).is_err());
        let mut bad = good.clone();
        bad["components"][2]["purl"] = json!("pkg:cargo/serde@9.9.9");
        assert!(validate(&bad).is_err());
        let mut bad = good;
        bad["specVersion"] = json!("1.4");
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn refuses_an_unknown_root() {
        assert!(build(&fake_metadata(), &BTreeMap::new(), "nope", None).is_err());
        // xtask is a member but serde is not: only members can be described.
        assert!(build(&fake_metadata(), &BTreeMap::new(), "serde", None).is_err());
    }
}
