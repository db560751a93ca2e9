//! The code an executable hook imports, followed far enough to say whether it may defer
//! work to the interpreter's exit or plant code in the program. A hook that reads `import
//! helper` shows nothing of what `helper` does; if `helper` registers an exit handler, that
//! handler runs after the main program, in the main thread, and must be put on the hook's
//! account like one the hook registered itself (`hook_flags::DEFERS`); if it installs an
//! import hook or replaces a builtin, its code runs inside the program (`PLANTS`).
//!
//! Imports are read from the text, line by line (`import a.b, c`, `from a import b`,
//! relative `from .m import x`), and resolved in the hook's own directory, where `site`
//! put it on `sys.path`. The standard library is not followed: its names resolve to the
//! interpreter's own library, ahead of every site dir. Whatever cannot be read as source
//! (not found there, compiled, too large, too many modules) may defer.
use std::{
    collections::{HashSet, VecDeque},
    io::Read as _,
    path::{Path, PathBuf},
};

use super::{
    READ_CAP, classify,
    findings::{FindingKind, Scanner},
    pth::split_lines,
    record,
    rooted::Root,
};

/// Modules followed from one hook before giving up (and saying it may defer).
const MAX_MODULES: usize = 64;

/// Top-level names of the standard library (`sys.stdlib_module_names` of CPython 3.11,
/// 3.12 and 3.13, together).
#[rustfmt::skip]
const STDLIB: &[&str] = &[
    "__future__", "_abc", "_aix_support", "_android_support", "_ast", "_asyncio", "_bisect",
    "_blake2", "_bootsubprocess", "_bz2", "_codecs", "_codecs_cn", "_codecs_hk",
    "_codecs_iso2022", "_codecs_jp", "_codecs_kr", "_codecs_tw", "_collections",
    "_collections_abc", "_colorize", "_compat_pickle", "_compression", "_contextvars",
    "_crypt", "_csv", "_ctypes", "_curses", "_curses_panel", "_datetime", "_dbm", "_decimal",
    "_elementtree", "_frozen_importlib", "_frozen_importlib_external", "_functools", "_gdbm",
    "_hashlib", "_heapq", "_imp", "_interpchannels", "_interpqueues", "_interpreters", "_io",
    "_ios_support", "_json", "_locale", "_lsprof", "_lzma", "_markupbase", "_md5", "_msi",
    "_multibytecodec", "_multiprocessing", "_opcode", "_opcode_metadata", "_operator",
    "_osx_support", "_overlapped", "_pickle", "_posixshmem", "_posixsubprocess", "_py_abc",
    "_pydatetime", "_pydecimal", "_pyio", "_pylong", "_pyrepl", "_queue", "_random",
    "_scproxy", "_sha1", "_sha2", "_sha256", "_sha3", "_sha512", "_signal", "_sitebuiltins",
    "_socket", "_sqlite3", "_sre", "_ssl", "_stat", "_statistics", "_string", "_strptime",
    "_struct", "_suggestions", "_symtable", "_sysconfig", "_thread", "_threading_local",
    "_tkinter", "_tokenize", "_tracemalloc", "_typing", "_uuid", "_warnings", "_weakref",
    "_weakrefset", "_winapi", "_wmi", "_zoneinfo", "abc", "aifc", "antigravity", "argparse",
    "array", "ast", "asynchat", "asyncio", "asyncore", "atexit", "audioop", "base64", "bdb",
    "binascii", "bisect", "builtins", "bz2", "cProfile", "calendar", "cgi", "cgitb", "chunk",
    "cmath", "cmd", "code", "codecs", "codeop", "collections", "colorsys", "compileall",
    "concurrent", "configparser", "contextlib", "contextvars", "copy", "copyreg", "crypt",
    "csv", "ctypes", "curses", "dataclasses", "datetime", "dbm", "decimal", "difflib", "dis",
    "distutils", "doctest", "email", "encodings", "ensurepip", "enum", "errno", "faulthandler",
    "fcntl", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "gc",
    "genericpath", "getopt", "getpass", "gettext", "glob", "graphlib", "grp", "gzip",
    "hashlib", "heapq", "hmac", "html", "http", "idlelib", "imaplib", "imghdr", "imp",
    "importlib", "inspect", "io", "ipaddress", "itertools", "json", "keyword", "lib2to3",
    "linecache", "locale", "logging", "lzma", "mailbox", "mailcap", "marshal", "math",
    "mimetypes", "mmap", "modulefinder", "msilib", "msvcrt", "multiprocessing", "netrc", "nis",
    "nntplib", "nt", "ntpath", "nturl2path", "numbers", "opcode", "operator", "optparse", "os",
    "ossaudiodev", "pathlib", "pdb", "pickle", "pickletools", "pipes", "pkgutil", "platform",
    "plistlib", "poplib", "posix", "posixpath", "pprint", "profile", "pstats", "pty", "pwd",
    "py_compile", "pyclbr", "pydoc", "pydoc_data", "pyexpat", "queue", "quopri", "random",
    "re", "readline", "reprlib", "resource", "rlcompleter", "runpy", "sched", "secrets",
    "select", "selectors", "shelve", "shlex", "shutil", "signal", "site", "smtpd", "smtplib",
    "sndhdr", "socket", "socketserver", "spwd", "sqlite3", "sre_compile", "sre_constants",
    "sre_parse", "ssl", "stat", "statistics", "string", "stringprep", "struct", "subprocess",
    "sunau", "symtable", "sys", "sysconfig", "syslog", "tabnanny", "tarfile", "telnetlib",
    "tempfile", "termios", "textwrap", "this", "threading", "time", "timeit", "tkinter",
    "token", "tokenize", "tomllib", "trace", "traceback", "tracemalloc", "tty", "turtle",
    "turtledemo", "types", "typing", "unicodedata", "unittest", "urllib", "uu", "uuid", "venv",
    "warnings", "wave", "weakref", "webbrowser", "winreg", "winsound", "wsgiref", "xdrlib",
    "xml", "xmlrpc", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
];

/// The `monitor_common::hook_flags` a finding in imported code calls for: what it would
/// call for in a hook's own text (`classify::hook_flags`), and `DEFERS` too for code run
/// from strings or spelled in look-alike letters, which in an imported module nobody
/// reads at a glance.
fn flags_of(kind: FindingKind) -> u32 {
    let hidden = matches!(kind, FindingKind::DynamicCode | FindingKind::NonAscii);
    classify::hook_flags(kind)
        | if hidden {
            monitor_common::hook_flags::DEFERS
        } else {
            0
        }
}

/// One module to look at: its dotted name (relative names are resolved before they are
/// queued), and whether it must exist (`from a import b` queues `a.b` as optional: `b`
/// may be a name defined in `a`).
struct Wanted {
    name: String,
    required: bool,
}

/// What the modules imported by `lines` (a hook's executable text, in `dir`) call for, as
/// `monitor_common::hook_flags`: `DEFERS` when they may defer work to the interpreter's
/// exit (or cannot be read), `DEFERS | PLANTS` when they plant code in the program. `root`
/// is where in-root paths are read.
///
/// `installed_apart(top)` says whether the top-level module `top` was installed by another
/// distribution than the hook's. Such a library (`six`, `click`, `rich`) holds code that
/// installs hooks when asked to, as libraries do; what it plants is not the hook's doing,
/// so it counts as deferring only. The hook's own package, and loose modules beside it,
/// count in full.
pub(crate) fn imports_flags<'a>(
    root: &Root,
    dir: &Path,
    lines: impl IntoIterator<Item = &'a str>,
    installed_apart: &mut dyn FnMut(&str) -> bool,
) -> u32 {
    use monitor_common::hook_flags::{DEFERS, PLANTS};
    let mut flags = 0;
    let mut queue: VecDeque<Wanted> = VecDeque::new();
    for line in lines {
        queue.extend(imports(line, None));
    }
    let mut seen = HashSet::new();
    while let Some(w) = queue.pop_front() {
        let top = w.name.split('.').next().unwrap_or_default();
        if w.name.is_empty() || STDLIB.contains(&top) || !seen.insert(w.name.clone()) {
            continue;
        }
        // `import a.b` runs `a/__init__.py` first.
        if let Some((parent, _)) = w.name.rsplit_once('.') {
            queue.push_back(Wanted {
                name: parent.to_owned(),
                required: true,
            });
        }
        if seen.len() > MAX_MODULES {
            return flags | DEFERS;
        }
        let Some(found) = locate(root, dir, &w.name) else {
            if w.required {
                flags |= DEFERS;
            }
            continue;
        };
        let Module::Source { path, package } = found else {
            flags |= DEFERS;
            continue;
        };
        let Some(text) = read_source(root, &path) else {
            flags |= DEFERS;
            continue;
        };
        // The package relative imports in this module are taken from.
        let base = if package {
            w.name.clone()
        } else {
            w.name
                .rsplit_once('.')
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default()
        };
        let apart = installed_apart(top);
        let mut scanner = Scanner::default();
        for raw in split_lines(&text) {
            let line = String::from_utf8_lossy(raw.bytes);
            for f in scanner.line(&line, raw.bytes.len()) {
                let found = flags_of(f.kind);
                flags |= if apart { found & !PLANTS } else { found };
            }
            if flags & PLANTS != 0 {
                return flags;
            }
            queue.extend(imports(&line, Some(&base)));
        }
    }
    flags
}

enum Module {
    /// `name.py`, or `name/__init__.py` (`package`).
    Source { path: PathBuf, package: bool },
    /// An extension module, or bytecode with no source: nothing to read.
    Compiled,
}

/// Where `dotted` resolves in `dir` (an in-root path), if it does.
fn locate(root: &Root, dir: &Path, dotted: &str) -> Option<Module> {
    let rel: PathBuf = dotted.split('.').collect();
    let stem = dir.join(&rel);
    let init = stem.join("__init__.py");
    if is_file(root, &init) {
        return Some(Module::Source {
            path: init,
            package: true,
        });
    }
    let source = stem.with_extension("py");
    if is_file(root, &source) {
        return Some(Module::Source {
            path: source,
            package: false,
        });
    }
    if is_file(root, &stem.with_extension("pyc")) || has_extension_module(root, &stem) {
        return Some(Module::Compiled);
    }
    // A namespace package (a directory without `__init__.py`) runs nothing itself.
    root.host_path(&stem).is_dir().then_some(Module::Source {
        path: PathBuf::new(),
        package: true,
    })
}

fn is_file(root: &Root, inner: &Path) -> bool {
    root.host_path(inner).is_file()
}

/// `stem.<tag>.so` or `stem.so` beside it.
fn has_extension_module(root: &Root, stem: &Path) -> bool {
    let (Some(dir), Some(name)) = (stem.parent(), stem.file_name()) else {
        return false;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(root.host_path(dir)).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".so")
        })
    })
}

/// A module's text, at most `READ_CAP` bytes; `None` when it cannot be read whole. A
/// namespace package (empty path) has no text.
fn read_source(root: &Root, inner: &Path) -> Option<Vec<u8>> {
    if inner.as_os_str().is_empty() {
        return Some(Vec::new());
    }
    let host = record::host_file(root, inner).ok()?;
    let (file, _) = record::open_regular(&host, inner).ok()?;
    let mut text = Vec::new();
    file.take(READ_CAP + 1).read_to_end(&mut text).ok()?;
    (text.len() as u64 <= READ_CAP).then_some(text)
}

/// The modules one line of Python imports, relative names resolved against `package`
/// (the importing module's package; `None` for a hook's own lines, which cannot import
/// relatively). Statements are split at `;`; only a statement's start is read, so the
/// names of a parenthesised `from m import (...)` spread over lines are not followed
/// (the module `m` is).
fn imports(line: &str, package: Option<&str>) -> Vec<Wanted> {
    let mut out = Vec::new();
    // `__import__('helper')` and `importlib.import_module('helper')` with a literal name
    // import like a statement (a computed name is dynamic code, a finding of its own).
    for call in ["__import__(", "import_module("] {
        for (pos, _) in line.match_indices(call) {
            let arg = line[pos + call.len()..].trim_start();
            let Some(quote) = arg.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            let name = arg[1..].split(quote).next().unwrap_or_default();
            if is_dotted_name(name) && arg[1..].len() > name.len() {
                out.push(Wanted {
                    name: name.to_owned(),
                    required: true,
                });
            }
        }
    }
    for statement in line.split(';') {
        let s = statement.trim();
        if let Some(rest) = s
            .strip_prefix("import ")
            .or_else(|| s.strip_prefix("import\t"))
        {
            for part in rest.split(',') {
                let name = part.split_whitespace().next().unwrap_or_default();
                if is_dotted_name(name) {
                    out.push(Wanted {
                        name: name.to_owned(),
                        required: true,
                    });
                }
            }
        } else if let Some(rest) = s.strip_prefix("from ").or_else(|| s.strip_prefix("from\t")) {
            let mut words = rest.split_whitespace();
            let module = words.next().unwrap_or_default();
            if words.next() != Some("import") {
                continue;
            }
            let Some(module) = absolute(module, package) else {
                continue;
            };
            let names = words.collect::<Vec<_>>().join(" ");
            for part in names.trim_start_matches('(').split(',') {
                let name = part
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(')');
                if is_identifier(name) {
                    let full = if module.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{module}.{name}")
                    };
                    out.push(Wanted {
                        name: full,
                        required: false,
                    });
                }
            }
            if !module.is_empty() {
                out.push(Wanted {
                    name: module,
                    required: true,
                });
            }
        }
    }
    out
}

/// `module` as an absolute dotted name: leading dots climb from `package`.
fn absolute(module: &str, package: Option<&str>) -> Option<String> {
    let dots = module.len() - module.trim_start_matches('.').len();
    let rest = &module[dots..];
    if dots == 0 {
        return is_dotted_name(rest).then(|| rest.to_owned());
    }
    let mut parts: Vec<&str> = package?.split('.').filter(|p| !p.is_empty()).collect();
    for _ in 1..dots {
        parts.pop()?;
    }
    if !rest.is_empty() {
        if !is_dotted_name(rest) {
            return None;
        }
        parts.push(rest);
    }
    Some(parts.join("."))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_dotted_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

#[cfg(test)]
#[path = "imports_tests.rs"]
mod tests;
