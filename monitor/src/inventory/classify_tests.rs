use super::*;

const SETUPTOOLS: &str = "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n";
const LITELLM: &str = r#"import os, subprocess, sys; subprocess.Popen([sys.executable, "-c", "import base64; exec(base64.b64decode('aW1wb3J0IG9zLCBzdWJwcm9jZXNz'))"])"#;

fn owner(name: &str, editable: bool) -> Owner {
    Owner {
        name: name.into(),
        version: "1.0".into(),
        editable,
    }
}

fn run(kind: HookKind, name: &str, content: &[u8], owner: Option<&Owner>) -> Classified {
    classify(&Input {
        kind,
        file_name: OsStr::new(name),
        content,
        owner,
        truncated: false,
        opaque: false,
    })
}

fn pth(name: &str, content: &str, owner: Option<&Owner>) -> Classified {
    run(HookKind::Pth, name, content.as_bytes(), owner)
}

fn is_benign(c: &Classified) -> bool {
    matches!(c.class, HookClass::Benign { .. })
}

#[test]
fn litellm_hook_is_risky() {
    let c = pth("litellm_init.pth", LITELLM, Some(&owner("litellm", false)));
    let HookClass::Risky { findings } = &c.class else {
        panic!("{:?}", c.class)
    };
    let kinds: Vec<_> = findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FindingKind::ProcessSpawn), "{kinds:?}");
    assert!(kinds.contains(&FindingKind::DynamicCode), "{kinds:?}");
    assert!(kinds.contains(&FindingKind::Decoding), "{kinds:?}");
    assert_eq!(c.exec_lines.len(), 1);
    assert_eq!(c.exec_lines[0].lineno, 1);
    assert_eq!(c.class.kernel_class(), monitor_common::hook_class::RISKY);
}

#[test]
fn setuptools_is_benign_only_from_setuptools() {
    let c = pth(
        "distutils-precedence.pth",
        SETUPTOOLS,
        Some(&owner("setuptools", false)),
    );
    assert_eq!(
        c.class,
        HookClass::Benign {
            form: "setuptools distutils-precedence".into()
        }
    );
    assert!(matches!(c.owner_check, OwnerCheck::Expected { .. }));
    assert_eq!(c.class.kernel_class(), monitor_common::hook_class::BENIGN);
    // Debian's copy is owned by dpkg, not a RECORD: benign, owner unverified.
    let c = pth("distutils-precedence.pth", SETUPTOOLS, None);
    assert!(is_benign(&c));
    assert!(matches!(c.owner_check, OwnerCheck::Unverified { .. }));
    // The same bytes shipped by another wheel are not benign.
    let c = pth(
        "distutils-precedence.pth",
        SETUPTOOLS,
        Some(&owner("litellm", false)),
    );
    assert_eq!(c.class, HookClass::Unknown);
    assert!(
        matches!(c.owner_check, OwnerCheck::Mismatch { ref found, .. } if found == "litellm==1.0")
    );
}

#[test]
fn renamed_malicious_file_is_not_benign() {
    let c = pth(
        "distutils-precedence.pth",
        LITELLM,
        Some(&owner("setuptools", false)),
    );
    assert!(matches!(c.class, HookClass::Risky { .. }));
    let sneaky = SETUPTOOLS.replace("add_shim(); ", "add_shim(); import socket");
    assert!(!is_benign(&pth("distutils-precedence.pth", &sneaky, None)));
}

#[test]
fn installer_written_forms() {
    assert!(is_benign(&pth(
        "_virtualenv.pth",
        "import _virtualenv\n",
        None
    )));
    let c = pth(
        "_virtualenv.pth",
        "import _virtualenv\n",
        Some(&owner("evil", false)),
    );
    assert_eq!(c.class, HookClass::Unknown);
    let easy = "import sys; sys.__plen = len(sys.path)\n./foo-1.0.egg\nimport sys; new = sys.path[sys.__plen:]; del sys.path[sys.__plen:]; p = getattr(sys, '__egginsert', 0); sys.path[p:p] = new; sys.__egginsert = p + len(new)\n";
    let c = pth("easy-install.pth", easy, None);
    assert_eq!(
        c.class,
        HookClass::Benign {
            form: "setuptools easy-install".into()
        }
    );
    assert_eq!(c.path_entries, vec![PathBuf::from("./foo-1.0.egg")]);
}

#[test]
fn editable_finders_need_their_editable_owner() {
    let line =
        "import __editable___foo_bar_1_0_finder; __editable___foo_bar_1_0_finder.install()\n";
    let name = "__editable__.foo_bar-1.0.pth";
    assert!(is_benign(&pth(name, line, Some(&owner("foo-bar", true)))));
    assert_eq!(pth(name, line, None).class, HookClass::Unknown);
    assert_eq!(
        pth(name, line, Some(&owner("foo-bar", false))).class,
        HookClass::Unknown
    );
    assert_eq!(
        pth(name, line, Some(&owner("other", true))).class,
        HookClass::Unknown
    );
    assert!(is_benign(&pth(
        "foo.pth",
        "import _editable_impl_foo\n/src\n",
        Some(&owner("foo", true))
    )));
}

#[test]
fn nspkg_coverage_pytest_cov() {
    let ns = "import sys, types, os;p = os.path.join(sys._getframe(1).f_locals['sitedir'], *('sphinxcontrib',));importlib = __import__('importlib.util');__import__('importlib.machinery');m = sys.modules.setdefault('sphinxcontrib', importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec('sphinxcontrib', [os.path.dirname(p)])));m = m or sys.modules.setdefault('sphinxcontrib', types.ModuleType('sphinxcontrib'));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)\n";
    let name = "sphinxcontrib_jsmath-1.0.1-py3.9-nspkg.pth";
    assert!(is_benign(&pth(
        name,
        ns,
        Some(&owner("sphinxcontrib-jsmath", false))
    )));
    assert!(!is_benign(&pth(name, ns, Some(&owner("litellm", false)))));
    assert!(is_benign(&pth(
        "coverage.pth",
        "import coverage; coverage.process_startup()\n",
        None
    )));
    let a1 = "import sys; exec('import os\\n\\nif os.getenv(\"COVERAGE_PROCESS_START\") or os.getenv(\"COVERAGE_PROCESS_CONFIG\"):\\n try:\\n  import coverage\\n except:\\n  pass\\n else:\\n  coverage.process_startup(slug=\"pth\")')\n";
    assert!(is_benign(&pth(
        "a1_coverage.pth",
        a1,
        Some(&owner("coverage", false))
    )));
    let cov = "import os, sys;exec('if \\'COV_CORE_SOURCE\\' in os.environ:\\n try:\\n  from pytest_cov.embed import init\\n  init()\\n except Exception as exc:\\n  sys.stderr.write(\\n   \"pytest-cov: Failed to setup subprocess coverage. \"\\n   \"Environ: {0!r} \"\\n   \"Exception: {1!r}\\\\n\".format(\\n    dict((k, v) for k, v in os.environ.items() if k.startswith(\\'COV_CORE\\')),\\n    exc\\n   )\\n  )\\n')\n";
    assert!(is_benign(&pth(
        "pytest-cov.pth",
        cov,
        Some(&owner("pytest-cov", false))
    )));
    // Any other exec in pytest-cov's file is not the template.
    let other =
        "import os, sys;exec('if \\'COV_CORE_SOURCE\\' in os.environ:\\n import subprocess')\n";
    assert!(matches!(
        pth("pytest-cov.pth", other, None).class,
        HookClass::Risky { .. }
    ));
}

#[test]
fn hooks_that_may_defer_work_to_exit_are_flagged_for_the_kernel() {
    use monitor_common::hook_flags::DEFERS;
    let defers = |content: &str| pth("x.pth", content, None).class.kernel_info().flags & DEFERS;
    // Hidden code: what it registers cannot be read.
    assert_eq!(defers(LITELLM), DEFERS);
    // Exit, signal and import hooks in plain sight.
    assert_eq!(
        defers("import atexit; atexit.register(lambda: None)\n"),
        DEFERS
    );
    assert_eq!(
        defers("import signal; signal.signal(signal.SIGTERM, print)\n"),
        DEFERS
    );
    assert_eq!(
        defers("import sys; sys.meta_path.insert(0, object())\n"),
        DEFERS
    );
    // Visible code that registers nothing: the program's own exit handlers are its own.
    assert_eq!(
        defers("import os;exec(\"try:\\n import certifi\\nexcept Exception: pass\\n\")\n"),
        0
    );
    assert_eq!(defers("import mypkg_hook\n"), 0);
    assert_eq!(defers("/opt/lib\n"), 0);
    let c = pth("x.pth", "import atexit; atexit.register(print)\n", None);
    assert_eq!(
        c.class.kernel_info().class,
        monitor_common::hook_class::RISKY
    );
}

#[test]
fn hooks_that_plant_code_in_the_program_are_flagged_for_the_kernel() {
    use monitor_common::hook_flags::{DEFERS, PLANTS};
    let flags = |content: &str| pth("x.pth", content, None).class.kernel_info().flags;
    for planting in [
        "import signal; signal.signal(signal.SIGTERM, print)\n",
        "import sys; sys.meta_path.insert(0, object())\n",
        "import sys; sys.settrace(print)\n",
        "import sys; sys.excepthook = print\n",
        "import builtins; builtins.print = len\n",
        "import builtins; setattr(builtins, 'open', len)\n",
        "import socket; socket.socket = object\n",
        "import sys; sys.stdout = open('/dev/null', 'w')\n",
        "import sys; setattr(sys, 'excepthook', print)\n",
        "import builtins as b; b.print = len\n",
        "import os; from requests import Session as S; S.send = len\n",
        "import os; b = __import__('builtins'); setattr(b, 'open', len)\n",
        "import builtins as b\nimport os; b.input = len\n",
    ] {
        assert_eq!(flags(planting), DEFERS | PLANTS, "{planting}");
    }
    // Exit handlers run after the program, and hidden code is not seen to plant: the
    // program itself stays its own.
    assert_eq!(flags("import atexit; atexit.register(print)\n"), DEFERS);
    assert_eq!(flags(LITELLM), DEFERS);
    // Unless it is hidden by an encoding alone: decoded, it is read like the rest.
    let hidden = |code: &str| {
        let hex: String = code.bytes().map(|b| format!("{b:02x}")).collect();
        format!("import os; exec(bytes.fromhex('{hex}'))\n")
    };
    assert_eq!(
        flags(&hidden("import sys\nsys.meta_path.insert(0, object())")),
        DEFERS | PLANTS
    );
    assert_eq!(
        flags(&hidden("import atexit\natexit.register(print)")),
        DEFERS
    );
    let c = pth("x.pth", &hidden("import sys\nsys.settrace(print)"), None);
    let HookClass::Risky { findings } = &c.class else {
        panic!("{:?}", c.class)
    };
    assert!(
        findings
            .iter()
            .any(|f| f.to_string() == "planted: decoded settrace"),
        "{findings:?}"
    );
    // Restoring a signal's default, data attributes of sys, comparisons: nothing planted.
    for plain in [
        "import signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n",
        "import sys; sys.path = [p for p in sys.path if p]\n",
        "import sys; sys.dont_write_bytecode = True\n",
        "import os; os.name == 'nt' and print(1)\n",
        "import sys; sys.prefix = sys.base_prefix = '/opt/py'\n",
        "import os; os.environ['PTHW'] = '1'\n",
        "import logging; logging.raiseExceptions = False\n",
        "import json as j; j.x = 1\n",
        "import mylib as b; b.print = len\n",
        "import socket; socket.TIMEOUT = 5\n",
        "import sys; sys.modules['pthw_alias'] = sys.modules['os']\n",
        "import sys, types; m = types.ModuleType('g'); setattr(sys.modules['google'], 'cloud', m)\n",
    ] {
        assert_eq!(flags(plain) & PLANTS, 0, "{plain}");
    }
}

#[test]
fn paths_only_is_inert() {
    let c = pth("foo.pth", "# editable\n/home/u/src/foo\n\n../rel\n", None);
    assert_eq!(c.class, HookClass::Inert);
    assert!(c.exec_lines.is_empty());
    assert_eq!(c.path_entries.len(), 2);
    assert_eq!(c.class.kernel_class(), monitor_common::hook_class::INERT);
}

#[test]
fn unknown_import_line() {
    let c = pth("x.pth", "import mypkg_hook\n", None);
    assert_eq!(c.class, HookClass::Unknown);
    assert!(c.class.is_unknown_executable());
}

#[test]
fn crlf_and_non_utf8_content() {
    let c = run(
        HookKind::Pth,
        "x.pth",
        b"/opt/a\r\nimport _virtualenv\r\n/opt/\xff\r\n",
        None,
    );
    assert!(is_benign(&c), "{:?}", c.class);
    assert_eq!(c.exec_lines[0].lineno, 2);
    assert_eq!(c.path_entries[1].as_os_str().as_bytes(), b"/opt/\xff");
    let c = run(HookKind::Pth, "x.pth", b"import os # \xff\xfe\r\n", None);
    assert!(matches!(c.class, HookClass::Risky { .. }));
    assert!(c.exec_lines[0].text.contains('\u{fffd}'));
}

#[test]
fn sitecustomize_is_source() {
    let debian = b"# install the apport exception handler if available\ntry:\n    import apport_python_hook\nexcept ImportError:\n    pass\nelse:\n    apport_python_hook.install()\n";
    let c = run(HookKind::Sitecustomize, "sitecustomize.py", debian, None);
    assert_eq!(
        c.class,
        HookClass::Benign {
            form: "Debian apport sitecustomize".into()
        }
    );
    assert_eq!(c.exec_lines.len(), 6);
    // The same text as a usercustomize, or with one more statement, is not Debian's.
    let c = run(HookKind::Usercustomize, "usercustomize.py", debian, None);
    assert_eq!(c.class, HookClass::Unknown);
    let evil = [&debian[..], b"import urllib.request\n"].concat();
    let c = run(HookKind::Sitecustomize, "sitecustomize.py", &evil, None);
    assert!(matches!(c.class, HookClass::Risky { .. }));
    let c = run(
        HookKind::Start,
        "foo.start",
        b"# entry points\nfoo.startup:main\n",
        None,
    );
    assert_eq!(c.class, HookClass::Unknown);
    let c = run(
        HookKind::Sitecustomize,
        "sitecustomize.py",
        b"# nothing\n\n",
        None,
    );
    assert_eq!(c.class, HookClass::Inert);
}

#[test]
fn truncated_and_opaque_files_are_risky() {
    let c = classify(&Input {
        kind: HookKind::Pth,
        file_name: OsStr::new("big.pth"),
        content: b"/only/paths\n",
        owner: None,
        truncated: true,
        opaque: false,
    });
    assert!(
        matches!(c.class, HookClass::Risky { ref findings } if findings[0].kind == FindingKind::OversizedFile)
    );
    let c = classify(&Input {
        kind: HookKind::Sitecustomize,
        file_name: OsStr::new("sitecustomize.cpython-311-x86_64-linux-gnu.so"),
        content: b"\x7fELF",
        owner: None,
        truncated: false,
        opaque: true,
    });
    assert!(
        matches!(c.class, HookClass::Risky { ref findings } if findings[0].kind == FindingKind::OpaqueCode)
    );
}

#[test]
fn content_at_the_read_limit() {
    let cap = usize::try_from(crate::inventory::READ_CAP).unwrap();
    // One line as long as the whole read: classified on its kept start, real length kept.
    let mut line = b"import os;x='".to_vec();
    line.resize(cap - 1, b'A');
    line.push(b'\'');
    let c = run(HookKind::Pth, "x.pth", &line, None);
    assert_eq!(c.exec_lines.len(), 1);
    assert_eq!(c.exec_lines[0].length, cap);
    assert_eq!(c.exec_lines[0].text.len(), LINE_KEEP);
    let HookClass::Risky { findings } = &c.class else {
        panic!("{:?}", c.class)
    };
    assert!(findings.iter().any(|f| f.kind == FindingKind::LongLine));
    // A read full of short path lines, then one import: the import's number is right and
    // the path entries are capped.
    let mut many = b"/opt/lib\n".repeat(cap / 9 - 1);
    many.extend_from_slice(b"import _virtualenv\n");
    let c = run(HookKind::Pth, "_virtualenv.pth", &many, None);
    assert_eq!(c.exec_lines.len(), 1);
    assert_eq!(c.exec_lines[0].lineno, cap / 9);
    assert_eq!(c.path_entries.len(), MAX_PATH_ENTRIES);
    assert!(matches!(c.class, HookClass::Benign { .. }), "{:?}", c.class);
}

#[test]
fn many_import_lines() {
    // Each line is compared with every benign form; the forms are prepared once, so this
    // stays linear in the lines (it took seconds per MiB before).
    let mut content = b"import _virtualenv\n".repeat(20_000);
    content.extend_from_slice(b"import os\n");
    let c = run(HookKind::Pth, "_virtualenv.pth", &content, None);
    assert_eq!(c.exec_lines.len(), 20_001);
    assert_eq!(c.exec_lines[20_000].form, None);
    assert_eq!(c.class, HookClass::Unknown);
}
