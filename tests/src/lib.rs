//! Helpers shared by the root-only integration tests: a sandbox with an isolated HOME and
//! user site dir, the real pthwatch binary (`trace` and `run`), loopback listeners.
//!
//! Tests panic on failure (keeping the stack) and skip, with a printed reason, where the
//! machine cannot run them (not root, no interpreter).
use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, UdpSocket},
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod payload;
pub mod webhook_receiver;

/// The interpreter the tests run: Debian's, which exports `Py_RunMain` itself.
pub const PYTHON: &str = "/usr/bin/python3.11";

/// The pthwatch binary under test (`PTHWATCH_BIN`, or the workspace's release build).
pub fn pthwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PTHWATCH_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let path = root.join("target/release/pthwatch");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release` (or set PTHWATCH_BIN)",
        path.display()
    );
    path
}

/// Returns false (after printing why) when this test cannot run here.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (loads eBPF programs)");
        return false;
    }
    if !Path::new(PYTHON).exists() {
        eprintln!("skipped: {PYTHON} not installed");
        return false;
    }
    true
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// An isolated HOME with a user site dir and fake credentials holding a canary.
pub struct Sandbox {
    pub root: PathBuf,
    pub home: PathBuf,
    pub site: PathBuf,
    pub canary: String,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root =
            std::env::temp_dir().join(format!("pthwatch-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let site = home.join(".local/lib/python3.11/site-packages");
        std::fs::create_dir_all(&site).expect("create site dir");
        let canary = format!("CANARY-{}-{n}-{}", std::process::id(), name);
        let sb = Self {
            root,
            home,
            site,
            canary,
        };
        sb.write(
            ".ssh/id_ed25519",
            &format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                sb.canary
            ),
        );
        sb.write(
            ".aws/credentials",
            &format!(
                "[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {}\n",
                "TEST", sb.canary
            ),
        );
        sb.write(
            ".pypirc",
            &format!(
                "[pypi]\nusername = __token__\npassword = pypi-{}\n",
                sb.canary
            ),
        );
        sb.write("notes.txt", "nothing secret here\n");
        sb
    }

    /// Writes a file under HOME (parents created).
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.home.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Writes a startup hook into the user site dir.
    pub fn pth(&self, name: &str, content: &str) -> PathBuf {
        let path = self.site.join(name);
        std::fs::write(&path, content).expect("write .pth");
        path
    }

    /// Writes an executable script.
    pub fn script(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.write(rel, content);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A command with the sandbox's environment (HOME, no inherited Python settings).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `python3.11 args...` to completion; returns (exit code or -signal, stdout+stderr).
    pub fn python(&self, args: &[&str]) -> (i32, String) {
        run_bounded(self.command(PYTHON).args(args), Duration::from_secs(60))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs a command with a time limit; returns (exit code, or -signal; output).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0));
    (code, output)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// `pthwatch trace --all` running in the background, collecting JSON lines.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Tracer {
    pub fn start() -> Self {
        let mut child = Command::new(pthwatch_bin())
            .args(["trace", "--all"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pthwatch trace");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    panic!("pthwatch trace printed a line that is not JSON: {line}");
                };
                if v["event"] == "ready" {
                    let _ = tx.send(());
                    continue;
                }
                sink.lock().expect("lock").push(v);
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("pthwatch trace did not become ready");
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Stops the tracer (SIGTERM) and returns every event it printed.
    pub fn stop(mut self) -> Vec<Value> {
        // Let the last events drain through the ring buffer.
        thread::sleep(Duration::from_millis(300));
        signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().expect("wait trace");
        assert!(status.success(), "pthwatch trace exited with {status}");
        if let Some(r) = self.reader.take() {
            r.join().expect("reader");
        }
        std::mem::take(&mut *self.lines.lock().expect("lock"))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pthwatch run` in the background, ready when it said READY=1 over `$NOTIFY_SOCKET`.
pub struct Daemon {
    child: Child,
    pub alert_log: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    pub fn start(mode: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--mode", mode];
        args.extend_from_slice(extra);
        Self::start_without_mode(&args)
    }

    /// `pthwatch run` with exactly these flags (plus the alert log), e.g. to let a
    /// configuration file choose the mode.
    pub fn start_without_mode(extra: &[&str]) -> Self {
        Self::start_via(&[], extra)
    }

    /// `pthwatch run` started through `wrapper`: a program and its arguments that ends by
    /// exec'ing the rest of its command line (e.g. `unshare ... sh -c '...; exec "$0" "$@"'`),
    /// so the daemon runs in the setting the wrapper made, under the same pid.
    pub fn start_via(wrapper: &[&str], extra: &[&str]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pthwatch-daemon-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("daemon dir");
        let sock_path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let alert_log = dir.join("alerts.jsonl");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pthwatch_bin());
                c
            }
            None => Command::new(pthwatch_bin()),
        };
        let mut child = cmd
            .args(["run", "--alert-log"])
            .arg(&alert_log)
            .args(extra)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pthwatch run");
        let mut buf = [0u8; 512];
        let start = Instant::now();
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    break;
                }
            }
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("pthwatch run exited with {status} before it was ready");
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "pthwatch run did not send READY=1 in 90 s"
            );
        }
        Self {
            child,
            alert_log,
            dir,
        }
    }

    /// The alerts written so far.
    pub fn alerts(&self) -> Vec<Value> {
        read_jsonl(&self.alert_log)
    }

    /// Waits until an alert matching `pred` is written (or the timeout passes).
    pub fn wait_alert(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let start = Instant::now();
        loop {
            if let Some(a) = self.alerts().into_iter().find(|a| pred(a)) {
                return Some(a);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hup(&self) {
        signal(&self.child, libc::SIGHUP);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM; asserts a clean exit 0 and returns the alerts.
    pub fn stop(mut self) -> Vec<Value> {
        signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().expect("wait run");
        assert!(status.success(), "pthwatch run exited with {status}");
        self.alerts()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // A line the daemon is still writing has no newline yet: read it next time (seen on
    // the 6.1 VM, where a poll caught an alert half written).
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("alert log line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A TCP listener on 127.0.0.1 counting every byte it receives and keeping the payloads.
pub struct TcpSink {
    pub port: u16,
    bytes: Arc<AtomicU64>,
    data: Arc<Mutex<Vec<u8>>>,
}

impl TcpSink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let bytes = Arc::new(AtomicU64::new(0));
        let data = Arc::new(Mutex::new(Vec::new()));
        let (b, d) = (Arc::clone(&bytes), Arc::clone(&data));
        // Bounded: the thread ends after two minutes whatever happens.
        thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let (b, d) = (Arc::clone(&b), Arc::clone(&d));
                        thread::spawn(move || {
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = stream.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                b.fetch_add(n as u64, Ordering::SeqCst);
                                d.lock().expect("lock").extend_from_slice(&buf[..n]);
                                // Answer like an HTTP server so clients finish.
                                use std::io::Write as _;
                                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { port, bytes, data }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().expect("lock")).into_owned()
    }
}

/// A UDP socket on 127.0.0.1 counting bytes received.
pub struct UdpSink {
    pub port: u16,
    bytes: Arc<AtomicU64>,
}

impl UdpSink {
    pub fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = sock.local_addr().expect("addr").port();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let bytes = Arc::new(AtomicU64::new(0));
        let b = Arc::clone(&bytes);
        thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 65536];
            while Instant::now() < end {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    b.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        });
        Self { port, bytes }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// Events of one kind.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Open events whose resolved path is `path`.
pub fn opens_of<'a>(events: &'a [Value], path: &Path) -> Vec<&'a Value> {
    let p = path.to_string_lossy();
    events
        .iter()
        .filter(|e| e["event"] == "open" && e["path"] == *p)
        .collect()
}

/// The names of the BPF programs the kernel has loaded, by `bpftool prog show` (`None`
/// without bpftool). The kernel keeps the first 15 bytes of each name.
pub fn loaded_programs() -> Option<Vec<String>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .ok()?;
    let progs: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        progs
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str())
            .map(str::to_owned)
            .collect(),
    )
}

/// Resolves symlinks in a temp path the way the kernel reports it (`/tmp` may be a link).
pub fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).expect("canonicalize")
}

/// Standard base64 (with padding), for payloads that a hook decodes the way real ones do.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Polls `pred` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if pred() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// sha256 of a file, hex, via coreutils (the test crate keeps its dependencies few).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
