use std::fs;

use super::*;

/// A scratch root with a site dir at `/site` (read through `Root`, as a container's).
struct Site(PathBuf);

impl Site {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-imports-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("site")).unwrap();
        Self(dir)
    }

    fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.0.join("site").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
        self
    }

    fn flags(&self, hook: &str) -> u32 {
        self.flags_apart(hook, &[])
    }

    /// `flags` with the top-level modules in `apart` installed by another distribution.
    fn flags_apart(&self, hook: &str, apart: &[&str]) -> u32 {
        imports_flags(
            &Root::new(&self.0),
            Path::new("/site"),
            hook.lines(),
            &mut |top| apart.contains(&top),
        )
    }

    /// Whether a hook in the site dir whose executable text is `hook` may defer.
    fn defers(&self, hook: &str) -> bool {
        self.flags(hook) & monitor_common::hook_flags::DEFERS != 0
    }

    /// Whether it plants code in the program.
    fn plants(&self, hook: &str) -> bool {
        let flags = self.flags(hook);
        flags & monitor_common::hook_flags::PLANTS != 0
            && flags & monitor_common::hook_flags::DEFERS != 0
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn names(line: &str, package: Option<&str>) -> Vec<(String, bool)> {
    imports(line, package)
        .into_iter()
        .map(|w| (w.name, w.required))
        .collect()
}

fn req(n: &str) -> (String, bool) {
    (n.to_owned(), true)
}

fn opt(n: &str) -> (String, bool) {
    (n.to_owned(), false)
}

#[test]
fn import_statements_are_read_from_each_statement_of_a_line() {
    assert_eq!(
        names("import a.b as c, d; exec('x')", None),
        [req("a.b"), req("d")]
    );
    assert_eq!(
        names("from a.b import c as x, d", None),
        [opt("a.b.c"), opt("a.b.d"), req("a.b")]
    );
    assert_eq!(
        names("from .impl import (go,", Some("pkg")),
        [opt("pkg.impl.go"), req("pkg.impl")]
    );
    assert_eq!(
        names("from . import x", Some("pkg.sub")),
        [opt("pkg.sub.x"), req("pkg.sub")]
    );
    assert_eq!(
        names("from .. import x", Some("pkg.sub")),
        [opt("pkg.x"), req("pkg")]
    );
    // A hook's own lines cannot import relatively; climbing past the top goes nowhere.
    assert!(names("from . import x", None).is_empty());
    assert!(names("from ... import x", Some("pkg")).is_empty());
    // Literal names given to the import functions.
    assert_eq!(
        names(
            "import os; __import__('pkg.boot') and x(); importlib.import_module(\"m\")",
            None
        ),
        [req("pkg.boot"), req("m"), req("os")]
    );
    assert!(names("__import__(name)", None).is_empty());
    assert!(names("__import__('a b')", None).is_empty());
    // Not imports.
    assert!(names("x = 'import os'", None).is_empty());
    assert!(names("from_file = 1", None).is_empty());
    assert!(names("import 9bad", None).is_empty());
}

#[test]
fn a_module_that_registers_an_exit_handler_makes_its_importer_defer() {
    let site = Site::new("atexit");
    site.write(
        "helper.py",
        "import atexit\n\ndef _later():\n    pass\n\natexit.register(_later)\n",
    );
    assert!(site.defers("import helper"));
    assert!(site.defers("import os; import helper; helper.x()"));
    // Hidden code in the module: it could register anything.
    site.write(
        "hidden.py",
        "exec(compile(open(__file__).read(), 'x', 'exec'))\n",
    );
    assert!(site.defers("import hidden"));
    // Exit handlers and hidden code are not seen to plant anything in the program.
    assert!(!site.plants("import helper"));
    assert!(!site.plants("import hidden"));
}

#[test]
fn a_module_that_plants_code_in_the_program_makes_its_importer_plant() {
    let site = Site::new("plant");
    site.write(
        "finder.py",
        "import sys

class F:
    def find_spec(self, name, path=None, target=None):\n        return None

sys.meta_path.insert(0, F())
",
    )
    .write(
        "console.py",
        "import builtins
_print = builtins.print

def hooked(*a, **k):
    _print(*a, **k)

builtins.print = hooked
",
    )
    .write(
        "wrap.py",
        "import socket
setattr(socket, 'socket', object)
",
    )
    .write(
        "stop.py",
        "import signal
signal.signal(signal.SIGTERM, lambda *a: None)
",
    )
    .write(
        "settings.py",
        "import sys
sys.dont_write_bytecode = True
",
    );
    for hook in [
        "import finder",
        "import console",
        "import wrap",
        "import stop",
    ] {
        assert!(site.plants(hook), "{hook}");
    }
    // Found after an exit handler: the walk goes on past what only defers.
    site.write(
        "both.py",
        "import atexit, finder
atexit.register(print)
",
    );
    assert!(site.plants("import both"));
    // Data attributes of sys are not code.
    assert!(!site.defers("import settings"));
    // A library another distribution installed plants when asked to: that defers only.
    let flags = site.flags_apart("import finder", &["finder"]);
    assert_eq!(flags, monitor_common::hook_flags::DEFERS);
    // ... but the hook's own modules importing it still plant themselves.
    site.write(
        "own.py",
        "import finder, builtins\nbuiltins.input = print\n",
    );
    assert_ne!(
        site.flags_apart("import own", &["finder"]) & monitor_common::hook_flags::PLANTS,
        0
    );
}

#[test]
fn plain_modules_and_the_standard_library_do_not_defer() {
    let site = Site::new("plain");
    site.write(
        "settings.py",
        "import os\nVALUE = os.environ.get('X', '1')\n",
    )
    .write("pkg/__init__.py", "from .conf import load\n")
    .write("pkg/conf.py", "import json\n\ndef load():\n    return {}\n");
    assert!(!site.defers("import os, sys"));
    assert!(!site.defers("import settings"));
    assert!(!site.defers("from settings import VALUE"));
    assert!(!site.defers("import pkg; pkg.load()"));
    // A namespace package (no __init__.py) runs nothing itself.
    site.write("ns/mod.py", "X = 1\n");
    assert!(!site.defers("import ns.mod"));
}

#[test]
fn the_chain_is_followed_through_modules_packages_and_relative_imports() {
    let site = Site::new("chain");
    site.write("first.py", "import second\n")
        .write("second.py", "from third import go\n")
        .write(
            "third.py",
            "import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n",
        );
    assert!(site.defers("import first"));
    site.write("pkg/__init__.py", "from .impl import go\n")
        .write("pkg/impl.py", "import atexit\natexit.register(print)\n");
    assert!(site.defers("import pkg"));
    // Importing a submodule runs its package's __init__ first.
    site.write(
        "outer/__init__.py",
        "import atexit\natexit.register(print)\n",
    )
    .write("outer/inner.py", "X = 1\n");
    assert!(site.defers("import outer.inner"));
}

#[test]
fn what_cannot_be_read_as_source_may_defer() {
    let site = Site::new("opaque");
    // Not in the hook's site dir.
    assert!(site.defers("import elsewhere"));
    // An extension module, or bytecode without source.
    site.write("native.cpython-311-x86_64-linux-gnu.so", "\x7fELF");
    assert!(site.defers("import native"));
    site.write("compiled.pyc", "");
    assert!(site.defers("import compiled"));
    // More modules than are followed.
    for i in 0..=MAX_MODULES {
        site.write(&format!("m{i}.py"), &format!("import m{}\n", i + 1));
    }
    site.write(&format!("m{}.py", MAX_MODULES + 1), "X = 1\n");
    assert!(site.defers("import m0"));
    // A name from a module that exists is not required to be a module.
    site.write("lib.py", "def thing():\n    pass\n");
    assert!(!site.defers("from lib import thing"));
}
