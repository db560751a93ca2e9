//! Known-benign executable forms, matched by content. A file's name proves nothing (an
//! attacker can call anything `distutils-precedence.pth`), so each form is a template of
//! the exact code its tool writes, compared after `squash`. Templates have typed holes
//! that accept only names, never code:
//!
//! - `$i…$`: an identifier (`[A-Za-z0-9_]+`);
//! - `$q…$`: a quoted dotted name (`'google.cloud'`);
//! - `$t…$`: a tuple of quoted names (`('google', 'cloud')`);
//! - `$r…$`: the nspkg root, `sys._getframe(1).f_locals['sitedir']` or a plain string.
//!
//! Holes with the same label must hold the same text.
use std::sync::LazyLock;

use super::text::squash;

/// Which distribution may legitimately ship a form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// This distribution (by normalised name) when the owner is known.
    Named(&'static str),
    /// Written by an installer or the OS, never listed in a `RECORD`: any owner is wrong.
    Unowned,
    /// An editable install: the owner must be known, marked editable, and its name must
    /// start the identifier in the hook.
    Editable,
    /// Legacy namespace packages: the owner, if known, must match the file name.
    NspkgFileName,
    /// Anyone may write it (coverage's documented one-liner).
    Anyone,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Form {
    pub name: &'static str,
    pub templates: &'static [&'static str],
    pub expect: Expect,
}

/// Defines an nspkg line and its nested-namespace variant (`google.cloud` also hangs
/// `cloud` on `google`); `concat!` needs the literal, hence a macro.
macro_rules! nspkg {
    ($base:ident, $child:ident, $line:literal) => {
        const $base: &str = $line;
        const $child: &str = concat!($line, ";m and setattr(sys.modules[$q2$], $q3$, m)");
    };
}
nspkg!(
    NSPKG_NEW,
    NSPKG_NEW_CHILD,
    "import sys, types, os;p = os.path.join($r$, *$t$);importlib = __import__('importlib.util');__import__('importlib.machinery');m = sys.modules.setdefault($q$, importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec($q$, [os.path.dirname(p)])));m = m or sys.modules.setdefault($q$, types.ModuleType($q$));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)"
);
nspkg!(
    NSPKG_MFS,
    NSPKG_MFS_CHILD,
    "import sys, types, os;has_mfs = sys.version_info > (3, 5);p = os.path.join($r$, *$t$);importlib = has_mfs and __import__('importlib.util');has_mfs and __import__('importlib.machinery');m = has_mfs and sys.modules.setdefault($q$, importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec($q$, [os.path.dirname(p)])));m = m or sys.modules.setdefault($q$, types.ModuleType($q$));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)"
);
nspkg!(
    NSPKG_OLD,
    NSPKG_OLD_CHILD,
    "import sys, types, os;p = os.path.join($r$, *$t$);ie = os.path.exists(os.path.join(p,'__init__.py'));m = not ie and sys.modules.setdefault($q$, types.ModuleType($q$));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)"
);

pub(crate) const FORMS: &[Form] = &[
    Form {
        name: "setuptools distutils-precedence",
        templates: &[
            "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); ",
            "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'stdlib') == 'local'; enabled and __import__('_distutils_hack').add_shim(); ",
            "import os; enabled = os.environ.get('SETUPTOOLS_USE_DISTUTILS') == 'local'; enabled and __import__('_distutils_hack').add_shim(); ",
        ],
        expect: Expect::Named("setuptools"),
    },
    Form {
        name: "virtualenv",
        templates: &["import _virtualenv"],
        expect: Expect::Unowned,
    },
    Form {
        name: "setuptools editable finder",
        templates: &["import __editable___$i$_finder; __editable___$i$_finder.install()"],
        expect: Expect::Editable,
    },
    Form {
        name: "editables (hatch/pdm) editable",
        templates: &["import _editable_impl_$i$"],
        expect: Expect::Editable,
    },
    Form {
        name: "meson-python editable",
        templates: &["import _$i$_editable_loader"],
        expect: Expect::Editable,
    },
    Form {
        name: "scikit-build-core editable",
        templates: &["import _$i$_editable"],
        expect: Expect::Editable,
    },
    Form {
        name: "namespace package (nspkg)",
        templates: &[
            NSPKG_NEW,
            NSPKG_MFS,
            NSPKG_OLD,
            NSPKG_NEW_CHILD,
            NSPKG_MFS_CHILD,
            NSPKG_OLD_CHILD,
        ],
        expect: Expect::NspkgFileName,
    },
    Form {
        name: "coverage process_startup",
        templates: &["import coverage; coverage.process_startup()"],
        expect: Expect::Anyone,
    },
    Form {
        name: "coverage subprocess hook",
        templates: &[
            "import sys; exec('import os\\n\\nif os.getenv(\"COVERAGE_PROCESS_START\") or os.getenv(\"COVERAGE_PROCESS_CONFIG\"):\\n try:\\n  import coverage\\n except:\\n  pass\\n else:\\n  coverage.process_startup(slug=\"pth\")')",
        ],
        expect: Expect::Named("coverage"),
    },
    Form {
        name: "pytest-cov subprocess hook",
        templates: &[
            "import os, sys;exec('if \\'COV_CORE_SOURCE\\' in os.environ:\\n try:\\n  from pytest_cov.embed import init\\n  init()\\n except Exception as exc:\\n  sys.stderr.write(\\n   \"pytest-cov: Failed to setup subprocess coverage. \"\\n   \"Environ: {0!r} \"\\n   \"Exception: {1!r}\\\\n\".format(\\n    dict((k, v) for k, v in os.environ.items() if k.startswith(\\'COV_CORE\\')),\\n    exc\\n   )\\n  )\\n')",
            "import os, sys;exec('if \\'COV_CORE_SOURCE\\' in os.environ:\\n try:\\n  from pytest_cov.embed import init\\n  init()\\n except ImportError as exc:\\n  sys.stderr.write(\\n   \"Failed to setup coverage.\"\\n   \"Sources: {[COV_CORE_SOURCE]!r}\"\\n   \"Config: {[COV_CORE_CONFIG]!r}\"\\n   \"Exception: {!r}\\\\n\".format(os.environ, exc))\\n')",
        ],
        expect: Expect::Named("pytest-cov"),
    },
    Form {
        name: "setuptools easy-install",
        templates: &[
            "import sys; sys.__plen = len(sys.path)",
            "import sys; new = sys.path[sys.__plen:]; del sys.path[sys.__plen:]; p = getattr(sys, '__egginsert', 0); sys.path[p:p] = new; sys.__egginsert = p + len(new)",
        ],
        expect: Expect::Unowned,
    },
    Form {
        name: "coloredlogs auto-install",
        templates: &[
            "import os; exec('try: __import__(\"coloredlogs\").auto_install() if os.environ.get(\"COLOREDLOGS_AUTO_INSTALL\") else None\\nexcept ImportError: pass')",
        ],
        expect: Expect::Named("coloredlogs"),
    },
    Form {
        name: "pip-system-certs bootstrap",
        templates: &[
            "import os, sys; __import__('pip_system_certs.bootstrap') and sys.modules['pip_system_certs.bootstrap'].bootstrap()",
            "import pip_system_certs.bootstrap",
        ],
        expect: Expect::Named("pip-system-certs"),
    },
    Form {
        name: "hunter environment hook",
        templates: &["import hunter; hunter._embed_via_environment()"],
        expect: Expect::Named("hunter"),
    },
    Form {
        name: "manhole environment hook",
        templates: &[
            r#"import os, sys;exec('if "PYTHONMANHOLE" in os.environ:\n try:\n  from manhole import install\n  eval("install({0[PYTHONMANHOLE]})".format(os.environ))\n except Exception as exc:\n  sys.stderr.write("Failed to manhole.install({[PYTHONMANHOLE]}): {!r}\\n".format(os.environ, exc))\n')"#,
        ],
        expect: Expect::Named("manhole"),
    },
    Form {
        name: "cuda-bindings redirector",
        templates: &["import _cuda_bindings_redirector"],
        expect: Expect::Named("cuda-bindings"),
    },
];

/// Debian/Ubuntu's `/usr/lib/python3.X/sitecustomize.py`: the apport exception hook.
/// Compared statement by statement with comments and indentation ignored.
pub(crate) const DEBIAN_SITECUSTOMIZE: &[&str] = &[
    "try:",
    "import apport_python_hook",
    "except ImportError:",
    "pass",
    "else:",
    "apport_python_hook.install()",
];
pub(crate) const DEBIAN_SITECUSTOMIZE_NAME: &str = "Debian apport sitecustomize";

/// A line that matched a form, with the identifier captured by a `$i$` hole if any.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Matched {
    pub form: &'static Form,
    pub ident: Option<String>,
}

/// The benign form an executable `.pth` line is, if any.
pub(crate) fn match_line(line: &str) -> Option<Matched> {
    // Every form is well under this; longer lines are never compared (and are a finding).
    if line.len() > 2048 {
        return None;
    }
    let text = trim_tail(&squash(line));
    FORMS
        .iter()
        .zip(squashed_templates())
        .find_map(|(form, templates)| {
            templates.iter().find_map(|t| {
                let caps = match_template(t, &text)?;
                let ident = caps
                    .into_iter()
                    .find(|(label, _)| label.starts_with('i'))
                    .map(|(_, v)| v);
                Some(Matched { form, ident })
            })
        })
}

/// Each form's templates as compared: squashed and trimmed once, not once per line (a
/// `.pth` of a hundred thousand `import` lines took seconds that way; found by fuzzing).
fn squashed_templates() -> &'static [Vec<String>] {
    static SQUASHED: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
        FORMS
            .iter()
            .map(|f| f.templates.iter().map(|t| trim_tail(&squash(t))).collect())
            .collect()
    });
    &SQUASHED
}

/// Whether Python source is, statement for statement, Debian's apport `sitecustomize`.
pub(crate) fn is_debian_sitecustomize(statements: &[String]) -> bool {
    statements.len() == DEBIAN_SITECUSTOMIZE.len()
        && statements
            .iter()
            .zip(DEBIAN_SITECUSTOMIZE)
            .all(|(s, t)| squash(s) == *t)
}

/// Trailing `;` and blanks carry no meaning (setuptools ends its line with `; `).
fn trim_tail(s: &str) -> String {
    s.trim_end_matches([';', ' ']).to_owned()
}

/// Matches `text` against a template; returns the hole captures on success.
fn match_template(template: &str, text: &str) -> Option<Vec<(String, String)>> {
    let mut caps = Vec::new();
    match_from(template, text, &mut caps).then_some(caps)
}

fn match_from(template: &str, text: &str, caps: &mut Vec<(String, String)>) -> bool {
    let Some(hole_at) = template.find('$') else {
        return template == text;
    };
    let (lit, rest) = template.split_at(hole_at);
    let Some(text) = text.strip_prefix(lit) else {
        return false;
    };
    let Some((label, rest)) = rest[1..].split_once('$') else {
        return false;
    };
    for len in hole_lengths(label, text) {
        let value = &text[..len];
        if caps.iter().any(|(l, v)| l == label && v != value) {
            continue;
        }
        let pushed = !caps.iter().any(|(l, _)| l == label);
        if pushed {
            caps.push((label.to_owned(), value.to_owned()));
        }
        if match_from(rest, &text[len..], caps) {
            return true;
        }
        if pushed {
            caps.pop();
        }
    }
    false
}

/// Candidate lengths for a hole at the start of `text`, longest first.
fn hole_lengths(label: &str, text: &str) -> Vec<usize> {
    let name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match label.as_bytes().first() {
        Some(b'i') => {
            let n = text.bytes().take_while(|b| name(*b)).count();
            (1..=n).rev().collect()
        }
        Some(b'q') => quoted_name(text).into_iter().collect(),
        Some(b't') => name_tuple(text).into_iter().collect(),
        Some(b'r') => {
            const FRAME: &str = "sys._getframe(1).f_locals['sitedir']";
            if text.starts_with(FRAME) {
                vec![FRAME.len()]
            } else {
                plain_string(text).into_iter().collect()
            }
        }
        _ => Vec::new(),
    }
}

/// `'a.b_c'` (single or double quotes): the length including quotes.
fn quoted_name(text: &str) -> Option<usize> {
    let q = *text.as_bytes().first()?;
    if q != b'\'' && q != b'"' {
        return None;
    }
    let body = text[1..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        .count();
    (body > 0 && text.as_bytes().get(1 + body) == Some(&q)).then_some(body + 2)
}

/// `('a','b',)` as squashed: one or more quoted names, optional trailing comma.
fn name_tuple(text: &str) -> Option<usize> {
    let mut i = 1;
    if !text.starts_with('(') {
        return None;
    }
    loop {
        i += quoted_name(&text[i..])?;
        match text.as_bytes().get(i) {
            Some(b')') => return Some(i + 1),
            Some(b',') if text.as_bytes().get(i + 1) == Some(&b')') => return Some(i + 2),
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// A string literal with no escapes or quotes inside: data, never code.
fn plain_string(text: &str) -> Option<usize> {
    let q = *text.as_bytes().first()?;
    if q != b'\'' && q != b'"' {
        return None;
    }
    let body = text[1..]
        .bytes()
        .take_while(|b| *b != q && *b != b'\\')
        .count();
    (text.as_bytes().get(1 + body) == Some(&q)).then_some(body + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(line: &str) -> Option<&'static str> {
        match_line(line).map(|m| m.form.name)
    }

    #[test]
    fn every_template_matches_itself() {
        for f in FORMS {
            for t in f.templates {
                if !t.contains('$') {
                    assert_eq!(form(t), Some(f.name), "{t}");
                }
            }
        }
    }

    #[test]
    fn setuptools_variants() {
        let line = "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); ";
        assert_eq!(form(line), Some("setuptools distutils-precedence"));
        assert_eq!(
            form(&line.replace("'local')", "'stdlib')")),
            Some("setuptools distutils-precedence")
        );
        assert_eq!(
            form(&line.replace("add_shim()", "add_shim(); import subprocess")),
            None
        );
    }

    #[test]
    fn editable_finder_captures_its_identifier() {
        let m = match_line(
            "import __editable___foo_bar_1_0_finder; __editable___foo_bar_1_0_finder.install()",
        )
        .unwrap();
        assert_eq!(m.form.name, "setuptools editable finder");
        assert_eq!(m.ident.as_deref(), Some("foo_bar_1_0"));
        assert_eq!(
            form("import __editable___a_finder; __editable___b_finder.install()"),
            None
        );
        assert_eq!(
            form("import __editable___a_finder; __editable___a_finder.install(); x()"),
            None
        );
    }

    #[test]
    fn nspkg_lines_single_and_nested() {
        let single = "import sys, types, os;has_mfs = sys.version_info > (3, 5);p = os.path.join(sys._getframe(1).f_locals['sitedir'], *('google',));importlib = has_mfs and __import__('importlib.util');has_mfs and __import__('importlib.machinery');m = has_mfs and sys.modules.setdefault('google', importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec('google', [os.path.dirname(p)])));m = m or sys.modules.setdefault('google', types.ModuleType('google'));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)";
        assert_eq!(form(single), Some("namespace package (nspkg)"));
        let nested = "import sys, types, os;p = os.path.join(sys._getframe(1).f_locals['sitedir'], *('google', 'cloud'));importlib = __import__('importlib.util');__import__('importlib.machinery');m = sys.modules.setdefault('google.cloud', importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec('google.cloud', [os.path.dirname(p)])));m = m or sys.modules.setdefault('google.cloud', types.ModuleType('google.cloud'));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p);m and setattr(sys.modules['google'], 'cloud', m)";
        assert_eq!(form(nested), Some("namespace package (nspkg)"));
        let injected = single.replace("*('google',)", "*('google',os.system('id'))");
        assert_eq!(form(&injected), None);
        let mismatched = single.replacen("setdefault('google'", "setdefault('other'", 1);
        assert_eq!(form(&mismatched), None);
    }

    #[test]
    fn coverage_and_pytest_cov_templates_only() {
        assert_eq!(
            form("import coverage; coverage.process_startup()"),
            Some("coverage process_startup")
        );
        assert_eq!(
            form("import coverage;coverage.process_startup()"),
            Some("coverage process_startup")
        );
        assert_eq!(form("import os, sys;exec('import subprocess')"), None);
        assert_eq!(
            form("import coverage; coverage.process_startup(); import socket"),
            None
        );
    }

    #[test]
    fn debugging_hooks_enabled_by_the_environment() {
        assert_eq!(
            form("import hunter; hunter._embed_via_environment()"),
            Some("hunter environment hook")
        );
        let manhole = r#"import os, sys;exec('if "PYTHONMANHOLE" in os.environ:\n try:\n  from manhole import install\n  eval("install({0[PYTHONMANHOLE]})".format(os.environ))\n except Exception as exc:\n  sys.stderr.write("Failed to manhole.install({[PYTHONMANHOLE]}): {!r}\\n".format(os.environ, exc))\n')"#;
        assert_eq!(form(manhole), Some("manhole environment hook"));
        assert_eq!(form(&manhole.replace("install", "steal")), None);
    }

    #[test]
    fn pip_system_certs_bootstrap_only() {
        assert_eq!(
            form(
                "import os, sys; __import__('pip_system_certs.bootstrap') and sys.modules['pip_system_certs.bootstrap'].bootstrap()"
            ),
            Some("pip-system-certs bootstrap")
        );
        assert_eq!(
            form("import pip_system_certs.bootstrap"),
            Some("pip-system-certs bootstrap")
        );
        assert_eq!(
            form(
                "import os, sys; __import__('pip_system_certs.evil') and sys.modules['pip_system_certs.evil'].bootstrap()"
            ),
            None
        );
    }

    #[test]
    fn debian_sitecustomize_statements() {
        let s: Vec<String> = [
            "try:",
            "    import apport_python_hook",
            "except ImportError:",
            "    pass",
            "else:",
            "    apport_python_hook.install()",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert!(is_debian_sitecustomize(&s));
        let mut evil = s.clone();
        evil[5] = "    apport_python_hook.install(); import os".into();
        assert!(!is_debian_sitecustomize(&evil));
    }
}
