use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, fs::symlink},
    time::Instant,
};

use super::*;
use crate::inventory::{HookClass, has_unknown_executable, render_table};

const SETUPTOOLS: &str = "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n";
const DEBIAN: &str = "# install the apport exception handler if available\ntry:\n    import apport_python_hook\nexcept ImportError:\n    pass\nelse:\n    apport_python_hook.install()\n";
const LITELLM: &str = r#"import os, subprocess, sys; subprocess.Popen([sys.executable, "-c", "import base64; exec(base64.b64decode('aW1wb3J0IG9z'))"])"#;

/// A scratch tree standing in for a host root.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-discover-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn at(&self, inner: &str) -> PathBuf {
        self.0.join(inner.trim_start_matches('/'))
    }

    fn write(&self, inner: &str, content: &[u8]) {
        let p = self.at(inner);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }

    fn exe(&self, inner: &str) {
        self.write(inner, b"\x7fELF not really");
        fs::set_permissions(self.at(inner), fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn link(&self, target: &str, inner: &str) {
        let p = self.at(inner);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn build_host() -> Tree {
    let t = Tree::new("host");
    // Debian-style system Python; absolute links must resolve inside the tree.
    t.exe("/usr/bin/python3.11");
    t.link("/usr/bin/python3.11", "/usr/bin/python3");
    t.exe("/usr/bin/python3.11-config");
    t.write(
        "/usr/lib/python3/dist-packages/distutils-precedence.pth",
        SETUPTOOLS.as_bytes(),
    );
    t.write("/etc/python3.11/sitecustomize.py", DEBIAN.as_bytes());
    t.link(
        "/etc/python3.11/sitecustomize.py",
        "/usr/lib/python3.11/sitecustomize.py",
    );
    // Timestamp bytecode (PEP 552) recording the source's mtime and size.
    let src = fs::metadata(t.at("/etc/python3.11/sitecustomize.py")).unwrap();
    let mut pyc = vec![0xa7, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0];
    pyc.extend((std::os::unix::fs::MetadataExt::mtime(&src) as u32).to_le_bytes());
    pyc.extend((src.len() as u32).to_le_bytes());
    t.write(
        "/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc",
        &pyc,
    );
    // A user site with a path-only .pth that adds a directory holding a usercustomize.
    t.write(
        "/home/u/.local/lib/python3.11/site-packages/paths.pth",
        b"/srv/added\n",
    );
    t.write("/srv/added/usercustomize.py", b"import socket\n");
    // A model checkpoint is not a hook.
    t.write("/home/u/models/model.pth", b"\x80\x02PK");
    // A project venv with the poisoned wheel installed.
    let site = "/home/u/proj/.venv/lib/python3.11/site-packages";
    t.write(
        "/home/u/proj/.venv/pyvenv.cfg",
        b"home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
    );
    t.link("/usr/bin/python3.11", "/home/u/proj/.venv/bin/python3");
    t.write(&format!("{site}/_virtualenv.pth"), b"import _virtualenv\n");
    t.write(&format!("{site}/litellm_init.pth"), LITELLM.as_bytes());
    t.write(
        &format!("{site}/litellm-1.82.8.dist-info/METADATA"),
        b"Metadata-Version: 2.1\nName: litellm\nVersion: 1.82.8\n\n",
    );
    t.write(
        &format!("{site}/litellm-1.82.8.dist-info/RECORD"),
        b"litellm/__init__.py,sha256=x,1\nlitellm_init.pth,sha256=y,2\n",
    );
    fs::write(
        t.at(site).join(OsStr::from_bytes(b"\xff\xfe.pth")),
        b"import os; os.system('id')\n",
    )
    .unwrap();
    t
}

fn find<'a>(inv: &'a Inventory, inner: &str) -> &'a Hook {
    inv.hooks
        .iter()
        .find(|h| h.path == Path::new(inner))
        .unwrap_or_else(|| {
            panic!(
                "{inner} not found in {:?}",
                inv.hooks.iter().map(|h| &h.path).collect::<Vec<_>>()
            )
        })
}

#[test]
fn discovers_a_fake_host() {
    let t = build_host();
    let inv = Inventory::discover(&DiscoverOptions {
        root: t.0.clone(),
        homes: vec!["/home/u".into()],
        extra_site_dirs: Vec::new(),
        extra_interpreters: Vec::new(),
    });
    assert!(inv.errors.is_empty(), "{:?}", inv.errors);

    let interps: Vec<_> = inv
        .interpreters
        .iter()
        .map(|i| (i.path.clone(), i.prefix.clone(), i.venv))
        .collect();
    assert_eq!(
        interps,
        vec![
            ("/usr/bin/python3.11".into(), "/usr".into(), false),
            (
                "/usr/bin/python3.11".into(),
                "/home/u/proj/.venv".into(),
                true
            ),
        ]
    );
    assert!(
        inv.interpreters
            .iter()
            .all(|i| i.version.as_deref() == Some("3.11"))
    );
    assert_eq!(inv.interpreters[1].base_prefix, Path::new("/usr"));

    let user: Vec<_> = inv
        .site_dirs
        .iter()
        .filter(|d| d.user)
        .map(|d| d.path.clone())
        .collect();
    assert_eq!(
        user,
        vec![PathBuf::from("/home/u/.local/lib/python3.11/site-packages")]
    );

    let setuptools = find(
        &inv,
        "/usr/lib/python3/dist-packages/distutils-precedence.pth",
    );
    assert!(matches!(setuptools.class, HookClass::Benign { .. }));

    // Found through the symlink, read once, with its cached bytecode.
    let sc: Vec<_> = inv
        .hooks
        .iter()
        .filter(|h| h.kind == HookKind::Sitecustomize)
        .collect();
    assert_eq!(sc.len(), 1);
    assert_eq!(
        sc[0].path,
        Path::new("/usr/lib/python3.11/sitecustomize.py")
    );
    assert_eq!(
        sc[0].class,
        HookClass::Benign {
            form: "Debian apport sitecustomize".into()
        }
    );
    assert_eq!(sc[0].bytecode.len(), 1);

    let site = "/home/u/proj/.venv/lib/python3.11/site-packages";
    let evil = find(&inv, &format!("{site}/litellm_init.pth"));
    assert_eq!(evil.distribution.as_deref(), Some("litellm==1.82.8"));
    assert!(matches!(evil.class, HookClass::Risky { .. }));
    assert!(matches!(
        find(&inv, &format!("{site}/_virtualenv.pth")).class,
        HookClass::Benign { .. }
    ));
    assert_eq!(
        find(
            &inv,
            "/home/u/.local/lib/python3.11/site-packages/paths.pth"
        )
        .class,
        HookClass::Inert
    );
    assert!(matches!(
        find(&inv, "/srv/added/usercustomize.py").class,
        HookClass::Risky { .. }
    ));

    let odd = Path::new(site).join(OsStr::from_bytes(b"\xff\xfe.pth"));
    assert!(
        inv.hooks
            .iter()
            .any(|h| h.path == odd && matches!(h.class, HookClass::Risky { .. }))
    );
    assert!(!inv.hooks.iter().any(|h| h.path.ends_with("model.pth")));
    assert_eq!(inv.hooks.len(), 7);

    assert!(has_unknown_executable(&inv));
    let table = render_table(&inv);
    assert!(table.contains("litellm==1.82.8"), "{table}");
    assert!(table.contains("\\xff\\xfe.pth"), "{table}");
    let json = serde_json::to_value(&inv).unwrap();
    assert_eq!(json["hooks"].as_array().map(Vec::len), Some(7));
}

#[test]
fn extra_dirs_and_interpreters_and_a_clean_host() {
    let t = Tree::new("extra");
    t.write("/srv/app/libs/ok.pth", b"import _virtualenv\n/x\n");
    t.exe("/opt/bundled/python/bin/python3.12");
    let inv = Inventory::discover(&DiscoverOptions {
        root: t.0.clone(),
        homes: vec!["/nobody".into()],
        extra_site_dirs: vec!["/srv/app/libs".into(), "/missing".into()],
        extra_interpreters: vec![
            "/opt/bundled/python/bin/python3.12".into(),
            "/nope/python3".into(),
        ],
    });
    assert_eq!(inv.interpreters.len(), 1);
    assert_eq!(inv.interpreters[0].version.as_deref(), Some("3.12"));
    assert_eq!(inv.hooks.len(), 1);
    assert!(!has_unknown_executable(&inv));
    assert_eq!(inv.errors.len(), 2, "{:?}", inv.errors);
    assert!(inv.errors.iter().any(|e| e.contains("/missing")));
}

/// On this machine, root `/`: must not panic and must be quick.
#[test]
fn discovers_the_real_host() {
    let started = Instant::now();
    let inv = Inventory::discover(&DiscoverOptions::default());
    let took = started.elapsed();
    let json = serde_json::to_string(&inv).unwrap();
    let _ = render_table(&inv);
    eprintln!(
        "real host: {} interpreters, {} dirs, {} hooks, {} errors, {} bytes of JSON in {took:?}",
        inv.interpreters.len(),
        inv.site_dirs.len(),
        inv.hooks.len(),
        inv.errors.len(),
        json.len()
    );
    if Path::new("/usr/bin/python3").exists() {
        assert!(!inv.interpreters.is_empty());
    }
    // Generous for unoptimised test builds on a loaded machine.
    assert!(took.as_secs() < 10, "discovery took {took:?}");
}

/// A site dir that cannot be listed (here a file where the directory should be: root
/// can list any directory) is one clear error in the report; the other dirs are still
/// read.
#[test]
fn an_unlistable_site_dir_is_reported_and_the_rest_still_read() {
    let t = Tree::new("unlistable");
    t.write("/srv/app/libs/evil.pth", b"import os; os.system('id')\n");
    t.write("/srv/blocked", b"not a directory\n");
    let inv = Inventory::discover(&DiscoverOptions {
        root: t.0.clone(),
        homes: vec!["/nobody".into()],
        extra_site_dirs: vec!["/srv/blocked".into(), "/srv/app/libs".into()],
        extra_interpreters: Vec::new(),
    });
    assert_eq!(inv.hooks.len(), 1, "{:?}", inv.hooks);
    assert!(has_unknown_executable(&inv));
    assert!(
        inv.errors
            .iter()
            .any(|e| e == "extra site dir /srv/blocked is not a directory"),
        "{:?}",
        inv.errors
    );
}
