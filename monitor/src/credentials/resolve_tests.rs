//! Tests of resolution and home discovery, on fake hosts built under the temp dir.

use std::{
    fs,
    os::unix::fs::{MetadataExt, symlink},
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{resolve::file_key, *};

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
    let r = catalog.resolve_in(&t.0, std::slice::from_ref(&home));
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
