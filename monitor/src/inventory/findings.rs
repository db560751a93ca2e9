//! Risky constructs in executable hook text. Each finding names what it saw, so a person
//! reading an alert sees why a hook was called risky without opening the file.
//!
//! The scan works on tokens and short patterns over the text with meaningless whitespace
//! removed (`os . system` is `os.system`), and it reads string literals too: a module
//! name in `__import__('subprocess')` counts like an `import subprocess`.
use std::{collections::HashSet, fmt};

use serde::Serialize;

use super::text::{squash, truncate_chars};

/// Lines longer than this are a finding by themselves: no benign form is this long.
pub(crate) const LONG_LINE: usize = 500;
/// Base64-looking runs longer than this are a finding.
const BLOB_RUN: usize = 100;
/// Findings kept per line; a payload hits many, the first few say enough.
const MAX_PER_LINE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Starts another program (`subprocess`, `os.system`, `os.exec*`, `pty.spawn`).
    ProcessSpawn,
    /// Runs code built at run time (`exec(`, `eval(`, `__import__` of a non-literal).
    DynamicCode,
    /// Decodes or unpacks hidden content (`base64`, `zlib`, `marshal`, `\x..` runs).
    Decoding,
    /// Talks to the network (`socket`, `urllib`, `requests`, a URL).
    Network,
    /// Calls native code directly (`ctypes`, `cffi`).
    NativeCode,
    /// Writes, moves or deletes files.
    FileWrite,
    /// Reaches for credentials (`~/.ssh`, `~/.aws`, `expanduser`, the environment).
    SecretAccess,
    /// A line longer than any benign form.
    LongLine,
    /// A long base64- or hex-looking run.
    EncodedBlob,
    /// Non-ASCII text: identifiers are NFKC-normalised, so look-alike letters spell any name.
    NonAscii,
    /// Compiled code (`.pyc` without source, extension module) that cannot be read.
    OpaqueCode,
    /// The file is larger than the read limit: the rest was not inspected.
    OversizedFile,
    /// Registers code to run at the interpreter's exit (`atexit`, `weakref.finalize`).
    Deferred,
    /// Plants code that runs while the program runs, on its threads: import hooks,
    /// tracing, audit and signal hooks, exception and display hooks, a replaced attribute
    /// of a module (`builtins.print = ...`, `setattr(socket, ...)`).
    Planted,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessSpawn => "process_spawn",
            Self::DynamicCode => "dynamic_code",
            Self::Decoding => "decoding",
            Self::Network => "network",
            Self::NativeCode => "native_code",
            Self::FileWrite => "file_write",
            Self::SecretAccess => "secret_access",
            Self::LongLine => "long_line",
            Self::EncodedBlob => "encoded_blob",
            Self::NonAscii => "non_ascii",
            Self::OpaqueCode => "opaque_code",
            Self::OversizedFile => "oversized_file",
            Self::Deferred => "deferred",
            Self::Planted => "planted",
        }
    }
}

/// One risky construct and the text that matched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub matched: String,
}

impl Finding {
    pub(crate) fn new(kind: FindingKind, matched: impl Into<String>) -> Self {
        Self {
            kind,
            matched: truncate_chars(&matched.into(), 80),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.matched)
    }
}

use FindingKind::{
    Decoding, Deferred, DynamicCode, EncodedBlob, FileWrite, LongLine, NativeCode, Network,
    NonAscii, Planted, ProcessSpawn, SecretAccess,
};

/// Identifier tokens that are risky wherever they appear (string contents included).
#[rustfmt::skip]
const TOKENS: &[(FindingKind, &[&str])] = &[
    (ProcessSpawn, &[
        "subprocess", "Popen", "popen", "posix_spawn", "posix_spawnp", "spawnl", "spawnle",
        "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "execl", "execle",
        "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "fork", "forkpty", "pty",
        "getoutput", "getstatusoutput", "check_output", "check_call",
    ]),
    (DynamicCode, &[
        "runpy", "__builtins__", "builtins", "import_module", "pickle", "cPickle", "dill",
        "FunctionType", "CodeType",
    ]),
    (Decoding, &[
        "base64", "b64decode", "b32decode", "b16decode", "a85decode", "b85decode",
        "urlsafe_b64decode", "decodebytes", "decodestring", "zlib", "lzma", "bz2", "gzip",
        "marshal", "codecs", "binascii", "unhexlify", "a2b_base64", "fromhex", "rot13", "rot_13",
        "decompress", "zipimport",
    ]),
    (Network, &[
        "socket", "urllib", "urllib2", "urllib3", "urlopen", "urlretrieve", "httplib", "requests",
        "httpx", "aiohttp", "ftplib", "smtplib", "telnetlib", "paramiko", "websocket",
        "websockets", "getaddrinfo", "gethostbyname", "curl", "wget", "pycurl", "xmlrpc",
    ]),
    (NativeCode, &["ctypes", "_ctypes", "cffi", "CDLL", "PyDLL", "cdll", "mmap"]),
    (Deferred, &["atexit", "finalize"]),
    (Planted, &[
        "settrace", "setprofile", "addaudithook", "meta_path", "path_hooks",
        "path_importer_cache", "excepthook", "unraisablehook", "displayhook",
        "breakpointhook", "setitimer", "register_at_fork", "set_wakeup_fd",
    ]),
    (FileWrite, &[
        "write_text", "write_bytes", "writelines", "shutil", "chmod", "chown", "makedirs",
        "mkdir", "symlink", "unlink", "rmtree", "crontab",
    ]),
    (SecretAccess, &[
        "expanduser", "id_rsa", "id_ed25519", "id_ecdsa", "authorized_keys", "known_hosts",
        "kubeconfig", "serviceaccount", "credentials", "gcloud", "netrc", "pgpass", "pypirc",
        "npmrc", "bash_history", "zsh_history", "gnupg", "keyring", "wallet",
        "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "GITHUB_TOKEN",
        "GH_TOKEN",
    ]),
];

/// Tokens that are risky only when called: `exec(`, `eval(`...
const CALLS: &[&str] = &[
    "exec", "eval", "compile", "execfile", "getattr", "globals", "locals", "vars",
];

/// Literal patterns (with word boundaries where they start or end with a name character).
#[rustfmt::skip]
const PATTERNS: &[(FindingKind, &[&str])] = &[
    (ProcessSpawn, &["os.system", "posix.system", "pty.spawn"]),
    (Network, &["http.client", "http://", "https://", "ftp://"]),
    (FileWrite, &[
        "os.rename", "os.replace", "os.link", "os.remove", "os.write", ".bashrc", ".profile",
        "systemd/user",
    ]),
    (SecretAccess, &[
        ".ssh", ".aws", ".azure", ".kube", ".docker", ".git-credentials", ".env",
        "/var/run/secrets", "/run/secrets", "/etc/shadow", "~/", "Path.home", "'HOME'",
        "\"HOME\"", "environ.items", "environ.copy", "environ.values", "dict(os.environ)",
    ]),
    (Decoding, &["[::-1]"]),
    (Planted, &["monitoring.register_callback"]),
];

/// Modules whose `__import__` by literal name is itself a sign of hiding something.
#[rustfmt::skip]
const HIDDEN_IMPORTS: &[&str] = &[
    "base64", "zlib", "marshal", "codecs", "binascii", "lzma", "bz2", "gzip", "pickle",
    "subprocess", "socket", "ctypes", "urllib", "http", "requests", "httpx", "builtins",
    "importlib", "pty", "runpy", "os",
];

/// Scans the lines of one file in order, remembering the names its imports bind to the
/// modules every program uses (`import builtins as b`, `from requests import Session`), so
/// that replacing an attribute through such a name is seen as patching that module.
#[derive(Default)]
pub(crate) struct Scanner {
    aliases: HashSet<String>,
    /// How many encodings deep this scanner reads (decoded text is scanned by a deeper one).
    depth: u8,
}

/// Encodings undone inside each other before what is left counts as hidden.
const MAX_DEPTH: u8 = 3;

impl Scanner {
    /// Every risky construct in the file's next executable line (or source line).
    /// `length` is the real byte length of the line, which may exceed what `text` holds.
    pub(crate) fn line(&mut self, text: &str, length: usize) -> Vec<Finding> {
        let squashed = squash(text);
        self.bind(&squashed);
        let mut out = Vec::new();
        scan_tokens(&squashed, &mut out);
        scan_patterns(&squashed, &mut out);
        scan_imports(&squashed, &mut out);
        scan_patches(&squashed, &self.aliases, &mut out);
        scan_escapes(&squashed, &mut out);
        scan_shape(text, length, &mut out);
        self.scan_decoded(text, &mut out);
        let mut seen = HashSet::new();
        out.retain(|f| seen.insert((f.kind, f.matched.clone())));
        out.truncate(MAX_PER_LINE);
        out
    }

    /// What the encoded literals of `text` say once decoded (`unhide`), as findings of
    /// their own marked `decoded`: first what they plant or defer, which the kernel must
    /// know, then the rest.
    fn scan_decoded(&self, text: &str, out: &mut Vec<Finding>) {
        if self.depth >= MAX_DEPTH {
            return;
        }
        let mut found = Vec::new();
        for code in super::unhide::revealed(text) {
            let mut inner = Self {
                depth: self.depth + 1,
                ..Self::default()
            };
            for line in code.lines() {
                found.extend(inner.line(line, line.len()));
            }
        }
        found.sort_by_key(|f| match f.kind {
            Planted => 0,
            Deferred => 1,
            _ => 2,
        });
        out.extend(
            found
                .into_iter()
                .map(|f| Finding::new(f.kind, format!("decoded {}", f.matched))),
        );
    }

    /// Records the names `s` (squashed) binds to a patchable module or to a name of one.
    fn bind(&mut self, s: &str) {
        for statement in s.split(';') {
            let statement = statement.trim();
            if let Some(rest) = statement.strip_prefix("import ") {
                for part in rest.split(',') {
                    if let Some((module, alias)) = part.split_once(" as ") {
                        self.bind_to(module, alias);
                    }
                }
            } else if let Some(rest) = statement.strip_prefix("from ") {
                let Some((module, names)) = rest.split_once(" import ") else {
                    continue;
                };
                for part in names.trim_matches(['(', ')']).split(',') {
                    let alias = part.split_once(" as ").map_or(part, |(_, a)| a);
                    self.bind_to(module, alias);
                }
            } else if let Some((name, value)) = statement.split_once('=') {
                // `b = __import__('builtins')`, `s = importlib.import_module('socket')`.
                let module = ["__import__(", "import_module("].iter().find_map(|call| {
                    let arg = value.split_once(call)?.1;
                    let quote = arg.chars().next().filter(|c| *c == '\'' || *c == '"')?;
                    arg[1..].split(quote).next()
                });
                if let Some(module) = module {
                    self.bind_to(module, name);
                }
            }
        }
    }

    fn bind_to(&mut self, module: &str, alias: &str) {
        let top = module.trim().split('.').next().unwrap_or_default();
        let alias = alias.trim();
        if PATCHABLE.contains(&top) && !alias.is_empty() && alias.bytes().all(is_name_byte) {
            self.aliases.insert(alias.to_owned());
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// ASCII identifier tokens with their byte offsets.
fn tokens(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
            // Skip digits glued to a name start (`0x1f`) as part of a non-token run.
            i += if bytes[i].is_ascii_digit() {
                bytes[i..].iter().take_while(|b| is_name_byte(**b)).count()
            } else {
                1
            };
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && is_name_byte(bytes[i]) {
            i += 1;
        }
        Some((start, &s[start..i]))
    })
}

fn scan_tokens(s: &str, out: &mut Vec<Finding>) {
    for (pos, tok) in tokens(s) {
        let after = &s[pos + tok.len()..];
        if let Some(kind) = kind_of(TOKENS, tok) {
            out.push(Finding::new(kind, tok));
        } else if after.starts_with('(') && CALLS.contains(&tok) {
            out.push(Finding::new(DynamicCode, format!("{tok}(")));
        } else if tok == "system" && called_as_os_function(&s[..pos]) {
            out.push(Finding::new(ProcessSpawn, tok));
        }
    }
}

/// The kind a table gives `word`, if it lists it.
fn kind_of(table: &[(FindingKind, &[&str])], word: &str) -> Option<FindingKind> {
    table
        .iter()
        .find(|(_, words)| words.contains(&word))
        .map(|(k, _)| *k)
}

/// `x.system`, `from os import path, system`, `import system`.
fn called_as_os_function(before: &str) -> bool {
    before.ends_with('.') || before.ends_with(',') || before.trim_end().ends_with("import")
}

fn scan_patterns(s: &str, out: &mut Vec<Finding>) {
    for (kind, pat) in PATTERNS
        .iter()
        .flat_map(|(k, pats)| pats.iter().map(move |p| (*k, *p)))
    {
        let first = pat.as_bytes()[0];
        let last = pat.as_bytes()[pat.len() - 1];
        for (pos, m) in s.match_indices(pat) {
            let before = s.as_bytes()[..pos].last().copied();
            let after = s.as_bytes().get(pos + m.len()).copied();
            let left_ok = !is_name_byte(first) || !before.is_some_and(is_name_byte);
            let right_ok = !is_name_byte(last) || !after.is_some_and(is_name_byte);
            if left_ok && right_ok {
                out.push(Finding::new(kind, pat));
                break;
            }
        }
    }
    scan_file_writes(s, out);
}

/// `.write(` on anything but stdout/stderr, and `open(` with a writing mode.
fn scan_file_writes(s: &str, out: &mut Vec<Finding>) {
    for (pos, _) in s.match_indices(".write(") {
        let head = &s[..pos];
        if !(head.ends_with("stderr") || head.ends_with("stdout")) {
            out.push(Finding::new(FileWrite, ".write("));
            break;
        }
    }
    for (pos, _) in s.match_indices("open(") {
        let args: String = s[pos + 5..].chars().take(200).collect();
        let args = args.split(')').next().unwrap_or("");
        let writes = args.split(',').skip(1).any(|a| {
            let a = a
                .trim_start_matches("mode=")
                .trim_matches(|c| c == '\'' || c == '"');
            !a.is_empty()
                && a.len() <= 3
                && a.chars().all(|c| "rwabxt+".contains(c))
                && a.contains(['w', 'a', 'x', '+'])
        });
        if writes {
            out.push(Finding::new(FileWrite, format!("open({args})")));
            break;
        }
    }
}

/// `__import__` of anything but a plain literal, or of a module that hides or reaches out.
fn scan_imports(s: &str, out: &mut Vec<Finding>) {
    for (pos, m) in s.match_indices("__import__(") {
        let arg = &s[pos + m.len()..];
        let literal = arg
            .strip_prefix(['\'', '"'])
            .and_then(|rest| {
                let quote = arg.as_bytes()[0] as char;
                rest.split_once(quote)
            })
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty() && name.bytes().all(|b| is_name_byte(b) || b == b'.'));
        match literal {
            None => out.push(Finding::new(DynamicCode, "__import__(<computed name>)")),
            Some(name) => {
                let top = name.split('.').next().unwrap_or(name);
                if HIDDEN_IMPORTS.contains(&top) {
                    out.push(Finding::new(DynamicCode, format!("__import__('{name}')")));
                }
            }
        }
    }
}

/// Modules whose attributes, replaced, put the replacement in the way of every program:
/// the interpreter's own and the usual network and cloud clients.
#[rustfmt::skip]
const PATCHABLE: &[&str] = &[
    "builtins", "__builtins__", "sys", "os", "io", "socket", "ssl", "subprocess", "http",
    "urllib", "urllib3", "requests", "httpx", "aiohttp", "json", "pickle", "logging",
    "warnings", "threading", "signal", "importlib", "getpass", "shutil", "pathlib", "boto3",
    "botocore", "site",
];

/// Attributes of `sys` that hold code the program calls (its hooks are tokens of their
/// own): most of `sys` is data (`sys.path`, `sys.prefix`), and replacing that plants nothing.
const SYS_CODE: &[&str] = &[
    "stdout",
    "stderr",
    "stdin",
    "modules",
    "__stdout__",
    "__stderr__",
];

/// A replaced attribute of a module every program uses (`builtins.print = f`,
/// `socket.socket = Wrapper`, `setattr(builtins, 'open', f)`), also through a name bound
/// to it (`aliases`): the replacement runs whenever the program calls it.
fn scan_patches(s: &str, aliases: &HashSet<String>, out: &mut Vec<Finding>) {
    let bytes = s.as_bytes();
    let patchable = |name: &str| PATCHABLE.contains(&name) || aliases.contains(name);
    for (pos, tok) in tokens(s) {
        if !patchable(tok) {
            continue;
        }
        let before = bytes[..pos].last().copied();
        if before.is_some_and(|b| is_name_byte(b) || b == b'.' || b == b':') {
            continue;
        }
        // `module.attr(.attr)*=`, not `==`.
        let mut end = pos + tok.len();
        let mut attrs = 0;
        while bytes.get(end) == Some(&b'.') {
            let len = bytes[end + 1..]
                .iter()
                .take_while(|b| is_name_byte(**b))
                .count();
            if len == 0 {
                break;
            }
            end += 1 + len;
            attrs += 1;
        }
        let assigned = bytes.get(end) == Some(&b'=') && bytes.get(end + 1) != Some(&b'=');
        let first_attr = s[pos + tok.len()..end]
            .trim_start_matches('.')
            .split('.')
            .next()
            .unwrap_or_default();
        let code = tok != "sys" || SYS_CODE.contains(&first_attr);
        if attrs > 0 && assigned && code && !is_data(&s[end + 1..]) {
            out.push(Finding::new(Planted, format!("{}=", &s[pos..end])));
            return;
        }
    }
    for (pos, m) in s.match_indices("signal(") {
        // `signal.signal(SIGTERM, handler)`; restoring the default or ignoring plants nothing.
        let args = &s[pos + m.len()..];
        let handler = args.split([',', ')']).nth(1).unwrap_or_default();
        let named = !before_is_name(s, pos) && args.starts_with(|c: char| c.is_ascii_alphabetic());
        if named
            && !handler.is_empty()
            && !handler.ends_with("SIG_DFL")
            && !handler.ends_with("SIG_IGN")
        {
            out.push(Finding::new(Planted, format!("signal({handler})")));
            return;
        }
    }
    for (pos, m) in s.match_indices("setattr(") {
        let target = s[pos + m.len()..]
            .split([',', ')'])
            .next()
            .unwrap_or_default();
        let head = target.split('.').next().unwrap_or_default();
        let attr = s[pos + m.len() + target.len()..]
            .trim_start_matches(',')
            .split([',', ')'])
            .next()
            .unwrap_or_default()
            .trim_matches(|c| c == '\'' || c == '"');
        let code = head != "sys" || (target == "sys" && SYS_CODE.contains(&attr));
        if patchable(head) && code && !before_is_name(s, pos) {
            out.push(Finding::new(Planted, format!("setattr({target},")));
            return;
        }
    }
}

/// Whether an assigned value (the squashed text after `=`) is plain data: a number, a
/// string, a constant, or a literal list, dict or set. Data replaces no code.
fn is_data(value: &str) -> bool {
    let word: String = value
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    value.starts_with(|c: char| c.is_ascii_digit() || "'\"[{-".contains(c))
        || ["True", "False", "None"].contains(&word.as_str())
        || ["b'", "b\"", "f'", "f\"", "r'", "r\""]
            .iter()
            .any(|p| value.starts_with(p))
}

fn before_is_name(s: &str, pos: usize) -> bool {
    s.as_bytes()[..pos]
        .last()
        .copied()
        .is_some_and(is_name_byte)
}

/// Long runs of `\x..`/`\u....` escapes or `chr(` calls spell a hidden string.
fn scan_escapes(s: &str, out: &mut Vec<Finding>) {
    let escapes = s.matches("\\x").count() + s.matches("\\u").count();
    if escapes >= 16 {
        out.push(Finding::new(Decoding, format!("{escapes} \\x/\\u escapes")));
    }
    let chrs = s.matches("chr(").count();
    if chrs >= 8 {
        out.push(Finding::new(Decoding, format!("{chrs} chr( calls")));
    }
}

/// Length, encoded blobs and non-ASCII text: the shape of a payload, whatever it says.
fn scan_shape(text: &str, length: usize, out: &mut Vec<Finding>) {
    if length > LONG_LINE {
        out.push(Finding::new(LongLine, format!("{length} bytes")));
    }
    if let Some(blob) = encoded_blob(text) {
        out.push(Finding::new(
            EncodedBlob,
            format!("{}… ({} chars)", &blob[..40], blob.len()),
        ));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
        let what = if c == char::REPLACEMENT_CHARACTER {
            "invalid UTF-8".to_owned()
        } else {
            format!("U+{:04X} {c:?}", c as u32)
        };
        out.push(Finding::new(NonAscii, what));
    }
}

/// The first base64-alphabet run over `BLOB_RUN` characters that mixes cases and digits
/// (base64) or is all hex. Long lowercase paths and names do not qualify.
fn encoded_blob(text: &str) -> Option<&str> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-');
    text.split(|c: char| !is_b64(c)).find(|run| {
        run.len() > BLOB_RUN && {
            let mixed = run.bytes().any(|b| b.is_ascii_uppercase())
                && run.bytes().any(|b| b.is_ascii_lowercase())
                && run.bytes().any(|b| b.is_ascii_digit());
            mixed || run.bytes().all(|b| b.is_ascii_hexdigit())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_line(text: &str, length: usize) -> Vec<Finding> {
        Scanner::default().line(text, length)
    }

    fn kinds(line: &str) -> Vec<FindingKind> {
        scan_line(line, line.len())
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn litellm_line_is_full_of_findings() {
        let line = r#"import os, subprocess, sys; subprocess.Popen([sys.executable, "-c", "import base64; exec(base64.b64decode('aW1wb3J0IG9z'))"])"#;
        let k = kinds(line);
        for want in [ProcessSpawn, DynamicCode, Decoding] {
            assert!(k.contains(&want), "{want:?} missing from {k:?}");
        }
    }

    #[test]
    fn spaced_out_and_aliased_calls_are_seen() {
        assert!(kinds("import os; os . system ('id')").contains(&ProcessSpawn));
        assert!(kinds("from os import path, system; system('id')").contains(&ProcessSpawn));
        assert!(kinds("import os; __import__(chr(115)+'ubprocess')").contains(&DynamicCode));
        assert!(kinds("import os; __import__('base64')").contains(&DynamicCode));
        assert!(kinds("import os; exec (x)").contains(&DynamicCode));
    }

    #[test]
    fn secrets_network_and_writes() {
        assert!(
            kinds("import os; open(os.path.expanduser('~/.aws/credentials'))")
                .contains(&SecretAccess)
        );
        assert!(kinds("import socket; socket.create_connection(('h', 1))").contains(&Network));
        assert!(kinds("import os; open('/tmp/x', 'w').write('y')").contains(&FileWrite));
        assert!(!kinds("import os; os.environ.get('X')").contains(&SecretAccess));
        assert!(!kinds("import sys; sys.stderr.write('x')").contains(&FileWrite));
    }

    #[test]
    fn shape_findings() {
        let blob = format!("import x; y = '{}'", "QUJDRGVmZ2hpams0NTY3".repeat(8));
        assert!(kinds(&blob).contains(&EncodedBlob));
        let path = format!("import x; y = '/{}'", "abcdefghij/".repeat(12));
        assert!(!kinds(&path).contains(&EncodedBlob));
        assert!(kinds("import x").is_empty());
        assert_eq!(scan_line("import x", 900)[0].kind, LongLine);
        assert!(kinds("import ｓｕｂｐｒｏｃｅｓｓ").contains(&NonAscii));
        assert!(kinds(&"\\x41".repeat(20)).contains(&Decoding));
    }

    #[test]
    fn display_names_kind_and_text() {
        let f = Finding::new(ProcessSpawn, "os.system");
        assert_eq!(f.to_string(), "process_spawn: os.system");
    }
}
