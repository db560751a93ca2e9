//! Tests of the catalogue: classification, kernel names, resolution on a fake host.

use std::{
    fs,
    os::unix::fs::{MetadataExt, symlink},
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use monitor_common::{NameKey, name_hash};

use super::{resolve::file_key, *};

fn classify(path: &str) -> Option<Category> {
    CredentialCatalog::default().classify_path(Path::new(path), &[])
}

#[test]
fn builtin_patterns_parse() {
    let catalog = CredentialCatalog::default();
    assert_eq!(catalog.entries().len(), defaults::ENTRIES.len());
}

#[test]
fn classifies_credentials() {
    use Category::*;
    let cases = [
        ("/home/alice/.aws/credentials", Aws),
        ("/home/alice/.aws/config", Aws),
        ("/home/alice/.aws/sso/cache/0123abcd.json", Aws),
        ("/home/alice/.aws/cli/cache/abc.json", Aws),
        ("/root/.ssh/id_ed25519", Ssh),
        ("/root/.ssh/id_rsa", Ssh),
        ("/home/bob/.ssh/deploy_key", Ssh),
        ("/home/bob/.ssh/config", Ssh),
        // An isolated HOME, as integration tests use.
        ("/tmp/pthwatch-test-xyz/home/.aws/credentials", Aws),
        ("/tmp/pthwatch-test-xyz/home/.ssh/id_ed25519", Ssh),
        // A container's root seen from the host.
        (
            "/var/lib/docker/overlay2/abc/merged/root/.kube/config",
            Kubernetes,
        ),
        (
            "/home/u/.config/gcloud/application_default_credentials.json",
            Gcp,
        ),
        (
            "/home/u/.config/gcloud/legacy_credentials/me@example.com/adc.json",
            Gcp,
        ),
        ("/home/u/.config/gcloud/credentials.db", Gcp),
        ("/home/u/.azure/msal_token_cache.json", Azure),
        ("/home/u/.oci/oci_api_key.pem", Oci),
        ("/home/u/.kube/config", Kubernetes),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            Kubernetes,
        ),
        (
            "/run/secrets/kubernetes.io/serviceaccount/..2026_03_24_10_00_00.123456789/token",
            Kubernetes,
        ),
        (
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access-x/..2026_03_24/token",
            Kubernetes,
        ),
        ("/etc/kubernetes/admin.conf", Kubernetes),
        ("/home/u/.docker/config.json", Docker),
        ("/home/u/.git-credentials", Git),
        ("/home/u/.config/git/credentials", Git),
        ("/home/u/.netrc", Netrc),
        ("/home/u/.pypirc", PackageRegistry),
        ("/home/u/project/.npmrc", PackageRegistry),
        ("/home/u/.cargo/credentials.toml", PackageRegistry),
        ("/home/u/.vault-token", Vault),
        ("/home/u/.pgpass", Database),
        ("/home/u/.my.cnf", Database),
        ("/home/u/.env", DotEnv),
        ("/home/u/code/app/.env", DotEnv),
        ("/srv/app/.env.production", DotEnv),
        ("/home/u/.bash_history", History),
        ("/home/u/.zsh_history", History),
        ("/home/u/.psql_history", History),
        ("/home/u/.python_history", History),
        ("/etc/ssl/private/ssl-cert-snakeoil.key", TlsKey),
        ("/etc/letsencrypt/live/example.com/privkey.pem", TlsKey),
        ("/etc/letsencrypt/archive/example.com/privkey3.pem", TlsKey),
        ("/home/u/certs/server.key", TlsKey),
        ("/home/u/.bitcoin/wallet.dat", Wallet),
        ("/home/u/.bitcoin/wallets/main/wallet.dat", Wallet),
        ("/home/u/.ethereum/keystore/UTC--2020", Wallet),
        ("/home/u/.config/solana/id.json", Wallet),
        (
            "/home/u/.local/share/io.parity.ethereum/keys/ethereum/key1",
            Wallet,
        ),
        ("/etc/shadow", System),
        ("/etc/gshadow", System),
        ("/etc/ssh/ssh_host_ed25519_key", System),
        ("/home/u/.config/gh/hosts.yml", CiTokens),
        ("/home/u/.terraform.d/credentials.tfrc.json", CiTokens),
        // Paths a caller did not normalise.
        ("/home/u/./.aws/../.aws/credentials", Aws),
    ];
    for (path, expected) in cases {
        assert_eq!(classify(path), Some(expected), "{path}");
    }
}

#[test]
fn does_not_classify_non_secrets() {
    for path in [
        "/home/u/.ssh/known_hosts",
        "/home/u/.ssh/known_hosts.old",
        "/home/u/.ssh/id_ed25519.pub",
        "/home/u/.ssh/id_rsa-cert.pub",
        "/home/u/.ssh/authorized_keys",
        "/etc/passwd",
        "/etc/group",
        "/etc/ssh/ssh_host_rsa_key.pub",
        "/etc/ssh/sshd_config",
        "/home/u/.env.example",
        "/home/u/project/.env.sample",
        "/home/u/.kube/cache/discovery/x/serverresources.json",
        "/home/u/.aws/cli/alias",
        "/home/u/.config/gcloud/configurations/config_default",
        "/usr/lib/python3.12/site-packages/litellm/__init__.py",
        "/usr/lib/python3.12/site-packages/litellm_init.pth",
        "/home/u/.bashrc",
        "/home/u/credentials",
        "/etc/letsencrypt/live/example.com/cert.pem",
        "/",
        "",
    ] {
        assert_eq!(classify(path), None, "{path:?}");
    }
}

#[test]
fn config_adds_and_excludes() {
    let config = CredentialConfig {
        extra_paths: vec!["~/secrets/token.txt".into(), "/etc/app/*.secret".into()],
        extra_names: vec![
            ("token.txt".into(), Some("secrets".into())),
            ("api.key".into(), None),
        ],
        exclude: vec!["~/.npmrc".into(), ".env.ci".into()],
        ..CredentialConfig::default()
    };
    let catalog = CredentialCatalog::from_config(&config).unwrap();
    let class = |p: &str, homes: &[PathBuf]| catalog.classify_path(Path::new(p), homes);
    assert_eq!(
        class("/home/u/secrets/token.txt", &[]),
        Some(Category::Custom)
    );
    // Not dot-led: only under a home.
    assert_eq!(class("/srv/users/u/secrets/token.txt", &[]), None);
    assert_eq!(
        class("/srv/users/u/secrets/token.txt", &["/srv/users/u".into()]),
        Some(Category::Custom)
    );
    assert_eq!(class("/etc/app/db.secret", &[]), Some(Category::Custom));
    assert_eq!(class("/home/u/.npmrc", &[]), None);
    assert_eq!(class("/home/u/app/.env.ci", &[]), None);
    assert_eq!(class("/home/u/.aws/credentials", &[]), Some(Category::Aws));

    let keys = catalog.name_keys();
    let has = |name: &str, parent: Option<&str>| {
        let key = NameKey {
            name: name_hash(name.as_bytes()),
            parent: parent.map_or(0, |p| name_hash(p.as_bytes())),
        };
        keys.iter().any(|(k, _)| *k == key)
    };
    assert!(has("token.txt", Some("secrets")));
    assert!(has("api.key", None));
    assert!(
        !has(".npmrc", None),
        "an excluded name must not reach the kernel"
    );

    let no_defaults = CredentialCatalog::from_config(&CredentialConfig {
        defaults: false,
        ..config
    })
    .unwrap();
    assert!(
        no_defaults
            .classify_path(Path::new("/home/u/.aws/credentials"), &[])
            .is_none()
    );
}

#[test]
fn config_errors_say_what_to_do() {
    let bad = |config: CredentialConfig| {
        CredentialCatalog::from_config(&config)
            .unwrap_err()
            .to_string()
    };
    let e = bad(CredentialConfig {
        extra_paths: vec!["secrets.json".into()],
        ..Default::default()
    });
    assert!(e.contains("must start with `/` or `~/`"), "{e}");
    let e = bad(CredentialConfig {
        extra_names: vec![("*.key".into(), None)],
        ..Default::default()
    });
    assert!(e.contains("exact names"), "{e}");
    let e = bad(CredentialConfig {
        exclude: vec!["~bob/.ssh".into()],
        ..Default::default()
    });
    assert!(e.contains("~bob/.ssh"), "{e}");
}

#[test]
fn config_deserialises_with_defaults() {
    let config: CredentialConfig =
        serde_json::from_str(r#"{"extra_paths": ["~/.config/app/token"]}"#).unwrap();
    assert!(config.defaults);
    assert_eq!(config.extra_paths, ["~/.config/app/token"]);
    let config: CredentialConfig =
        serde_json::from_str(r#"{"extra_names": [[".secret", null], ["t", "d"]]}"#).unwrap();
    assert_eq!(
        config.extra_names,
        [
            (".secret".to_owned(), None),
            ("t".to_owned(), Some("d".to_owned()))
        ]
    );
    assert!(serde_json::from_str::<CredentialConfig>(r#"{"extra_path": []}"#).is_err());
}

#[test]
fn name_keys_cover_the_usual_targets() {
    let keys = CredentialCatalog::default().name_keys();
    let category = |name: &str, parent: Option<&str>| {
        let key = NameKey {
            name: name_hash(name.as_bytes()),
            parent: parent.map_or(0, |p| name_hash(p.as_bytes())),
        };
        keys.iter().find(|(k, _)| *k == key).map(|(_, c)| *c)
    };
    use Category::*;
    assert_eq!(category("credentials", Some(".aws")), Some(Aws));
    assert_eq!(category("id_rsa", Some(".ssh")), Some(Ssh));
    assert_eq!(category("id_ed25519", Some(".ssh")), Some(Ssh));
    assert_eq!(category("id_ecdsa", Some(".ssh")), Some(Ssh));
    assert_eq!(category("config", Some(".kube")), Some(Kubernetes));
    assert_eq!(category("config.json", Some(".docker")), Some(Docker));
    assert_eq!(category(".git-credentials", None), Some(Git));
    assert_eq!(category(".netrc", None), Some(Netrc));
    assert_eq!(category(".pypirc", None), Some(PackageRegistry));
    assert_eq!(category(".npmrc", None), Some(PackageRegistry));
    assert_eq!(category(".env", None), Some(DotEnv));
    assert_eq!(category("token", Some("serviceaccount")), Some(Kubernetes));
    assert_eq!(category("shadow", Some("etc")), Some(System));
    assert_eq!(category(".vault-token", None), Some(Vault));
    assert_eq!(category(".pgpass", None), Some(Database));
    assert_eq!(category(".my.cnf", None), Some(Database));
    assert_eq!(
        category("application_default_credentials.json", Some("gcloud")),
        Some(Gcp)
    );
    assert_eq!(category(".bash_history", None), Some(History));
    // Never a bare generic name under any parent.
    for generic in ["config", "token", "credentials", "config.json", "id_rsa"] {
        assert_eq!(
            category(generic, None),
            None,
            "{generic} must not match under any parent"
        );
    }
    let mut unique = keys.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    unique.sort_by_key(|k| (k.name, k.parent));
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "pthwatch-cred-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "secret").unwrap();
        path
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn resolves_a_fake_host() {
    let t = TempTree::new("resolve");
    let home = t.dir("home/alice");
    let aws = t.file("home/alice/.aws/credentials");
    t.file("home/alice/.aws/config");
    let ssh = t.file("home/alice/.ssh/id_ed25519");
    t.file("home/alice/.ssh/id_ed25519.pub");
    t.file("home/alice/.ssh/known_hosts");
    fs::hard_link(&ssh, home.join(".ssh/id_ed25519_copy")).unwrap();
    t.file("home/alice/.kube/config");
    t.dir("home/alice/.kube/cache");
    // A symlinked credential resolves to its target's identity.
    let docker_target = t.file("home/alice/dotfiles/docker.json");
    fs::create_dir_all(home.join(".docker")).unwrap();
    symlink(&docker_target, home.join(".docker/config.json")).unwrap();
    // A directory where a file is expected, and a link loop: skipped, never fatal.
    t.dir("home/alice/.netrc");
    symlink(home.join(".azure"), home.join(".azure")).unwrap();
    let shadow = t.file("etc/shadow");
    t.file("etc/passwd");
    t.file("etc/letsencrypt/archive/example.com/privkey1.pem");
    t.dir("etc/letsencrypt/live/example.com");
    symlink(
        "../../archive/example.com/privkey1.pem",
        t.0.join("etc/letsencrypt/live/example.com/privkey.pem"),
    )
    .unwrap();
    t.file("srv/app/.env");

    let catalog = CredentialCatalog::default();
    let start = Instant::now();
    let r = catalog.resolve_in(&t.0, &[home.clone()]);
    let elapsed = start.elapsed();
    let found = |p: &Path| {
        r.credentials
            .iter()
            .find(|c| c.path == p)
            .map(|c| (c.category, c.key))
    };
    let key = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        file_key(m.dev(), m.ino())
    };
    assert_eq!(found(&aws), Some((Category::Aws, key(&aws))));
    assert_eq!(
        found(&home.join(".aws/config")).map(|f| f.0),
        Some(Category::Aws)
    );
    // A hard link is the same file: one entry, under whichever name was listed first.
    let copy = home.join(".ssh/id_ed25519_copy");
    let ssh_found: Vec<_> = [&ssh, &copy].into_iter().filter_map(|p| found(p)).collect();
    assert_eq!(ssh_found, [(Category::Ssh, key(&ssh))]);
    assert_eq!(
        found(&home.join(".docker/config.json")),
        Some((Category::Docker, key(&docker_target)))
    );
    assert_eq!(
        found(&home.join(".kube/config")).map(|f| f.0),
        Some(Category::Kubernetes)
    );
    assert_eq!(found(&shadow).map(|f| f.0), Some(Category::System));
    assert_eq!(
        found(&t.0.join("srv/app/.env")).map(|f| f.0),
        Some(Category::DotEnv)
    );
    assert!(found(&t.0.join("etc/passwd")).is_none());
    assert!(found(&home.join(".ssh/id_ed25519.pub")).is_none());
    assert!(found(&home.join(".ssh/known_hosts")).is_none());
    // Reached through `live/` and `archive/`: one entry.
    let keys = r
        .credentials
        .iter()
        .filter(|c| c.category == Category::TlsKey)
        .count();
    assert_eq!(keys, 1, "{:#?}", r.credentials);
    assert!(
        r.errors.iter().any(|e| e.contains(".azure")),
        "{:?}",
        r.errors
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(elapsed.as_millis() < 1000, "took {elapsed:?}");

    // The kernel's device encoding: major << 20 | minor.
    let st_dev = fs::metadata(&aws).unwrap().dev();
    let k = found(&aws).unwrap().1;
    assert_eq!(k.dev, (libc::major(st_dev) << 20) | libc::minor(st_dev));
}

#[test]
fn dotenv_search_is_bounded() {
    let t = TempTree::new("dotenv");
    let home = t.dir("home/u");
    let expect_found = [
        t.file("home/u/.env"),
        t.file("home/u/.envrc"),
        t.file("home/u/proj/.env"),
        t.file("home/u/code/app/.env.local"),
        t.file("home/u/code/app/server.key"),
        t.file("home/u/code/api/.env.production"),
    ];
    let expect_missed = [
        // Three levels down.
        t.file("home/u/code/app/deep/.env"),
        t.file("home/u/code/app/tls/server.key"),
        // Dependencies, hidden directories, virtual environments.
        t.file("home/u/proj/node_modules/.env"),
        t.file("home/u/node_modules/pkg/.env"),
        t.file("home/u/.cache/x/.env"),
        t.file("home/u/.local/.env"),
        t.file("home/u/proj/.git/.env"),
        t.file("home/u/myenv/pyvenv.cfg"),
        t.file("home/u/myenv/.env"),
        t.file("home/u/proj/.env.example"),
    ];
    let r = CredentialCatalog::default().resolve_home(&home);
    let paths: Vec<&Path> = r.credentials.iter().map(|c| c.path.as_path()).collect();
    for p in &expect_found {
        assert!(
            paths.contains(&p.as_path()),
            "{} not found in {paths:?}",
            p.display()
        );
    }
    for p in &expect_missed {
        assert!(
            !paths.contains(&p.as_path()),
            "{} should not be searched",
            p.display()
        );
    }
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn follows_new_homes() {
    let t = TempTree::new("addhome");
    let home = t.dir("data/users/carol");
    let token = t.file("data/users/carol/tokens/api");
    let config = CredentialConfig {
        extra_paths: vec!["~/tokens/api".into()],
        ..Default::default()
    };
    let mut catalog = CredentialCatalog::from_config(&config).unwrap();
    assert_eq!(catalog.classify_path(&token, &[]), None);
    assert!(catalog.add_home(home.clone()));
    assert!(!catalog.add_home(home.clone()));
    assert_eq!(catalog.classify_path(&token, &[]), Some(Category::Custom));
    let r = catalog.resolve_home(&home);
    assert_eq!(
        r.credentials.iter().map(|c| &c.path).collect::<Vec<_>>(),
        [&token]
    );
    let r = catalog.resolve_in(&t.0, &[]);
    assert!(r.credentials.iter().any(|c| c.path == token));
}

#[test]
fn discovers_homes_from_passwd_and_home() {
    let t = TempTree::new("homes");
    t.dir("root");
    t.dir("home/alice");
    t.dir("home/carol");
    t.dir("var/lib/jenkins");
    t.dir("usr/sbin");
    fs::write(
        t.0.join("etc/passwd").tap_parent(),
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
         alice:x:1000:1000::/home/alice/:/bin/bash\n\
         bob:x:1001:1001::/home/bob:/bin/bash\n\
         jenkins:x:110:110::/var/lib/jenkins:/bin/bash\n\
         broken line\n",
    )
    .unwrap();
    let homes = discover_homes(&t.0);
    let expected: Vec<PathBuf> = ["root", "home/alice", "var/lib/jenkins", "home/carol"]
        .iter()
        .map(|h| t.0.join(h))
        .collect();
    assert_eq!(homes, expected);

    // No passwd at all still gives /root and /home.
    fs::remove_file(t.0.join("etc/passwd")).unwrap();
    assert_eq!(
        discover_homes(&t.0),
        [
            t.0.join("root"),
            t.0.join("home/alice"),
            t.0.join("home/carol")
        ]
    );
}

trait TapParent {
    fn tap_parent(self) -> Self;
}

impl TapParent for PathBuf {
    /// Creates the parent directory and returns the path.
    fn tap_parent(self) -> Self {
        fs::create_dir_all(self.parent().unwrap()).unwrap();
        self
    }
}

/// How long the real host takes: `cargo test -- --ignored resolve_real_host --nocapture`.
#[test]
#[ignore = "depends on the host"]
fn resolve_real_host() {
    let start = Instant::now();
    let homes = discover_homes(Path::new("/"));
    let r = CredentialCatalog::default().resolve_in(Path::new("/"), &homes);
    println!(
        "{} homes, {} credentials, {} errors in {:?}",
        homes.len(),
        r.credentials.len(),
        r.errors.len(),
        start.elapsed()
    );
    for c in &r.credentials {
        println!("{:>16} {}", c.category, c.path.display());
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}
