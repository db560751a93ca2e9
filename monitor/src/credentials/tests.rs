//! Tests of the catalogue: classification, kernel names, configuration.

use std::path::{Path, PathBuf};

use monitor_common::{NameKey, name_hash};

use super::*;

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
        ("/home/u/.config/google-chrome/Default/Login Data", Browser),
        ("/home/u/.config/chromium/Profile 1/Cookies", Browser),
        (
            "/home/u/.config/BraveSoftware/Brave-Browser/Default/Network/Cookies",
            Browser,
        ),
        (
            "/home/u/.mozilla/firefox/abcd.default-release/logins.json",
            Browser,
        ),
        (
            "/home/u/.mozilla/firefox/abcd.default-release/key4.db",
            Browser,
        ),
        (
            "/home/u/.config/discord/Local Storage/leveldb/000003.log",
            Browser,
        ),
        ("/home/u/.gnupg/private-keys-v1.d/ABCDEF.key", Keyring),
        ("/home/u/.password-store/work/github.gpg", Keyring),
        ("/home/u/.local/share/keyrings/login.keyring", Keyring),
        ("/home/u/.cache/huggingface/token", DataPlatform),
        ("/home/u/.kaggle/kaggle.json", DataPlatform),
        ("/home/u/.databrickscfg", DataPlatform),
        ("/home/u/.dbt/profiles.yml", DataPlatform),
        ("/home/u/.config/rclone/rclone.conf", DataPlatform),
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
        "/home/u/.config/google-chrome/Default/Preferences",
        "/home/u/.mozilla/firefox/abcd.default-release/prefs.js",
        "/home/u/.gnupg/pubring.kbx",
        "/home/u/.cache/huggingface/hub/models--gpt2/config.json",
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
    use Category::*;
    let keys = CredentialCatalog::default().name_keys();
    let category = |name: &str, parent: Option<&str>| {
        let key = NameKey {
            name: name_hash(name.as_bytes()),
            parent: parent.map_or(0, |p| name_hash(p.as_bytes())),
        };
        keys.iter().find(|(k, _)| *k == key).map(|(_, c)| *c)
    };
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
