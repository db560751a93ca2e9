//! A minimal HTTP/1.1 client for one thing: POST a JSON body, read the status, close.
//! Plain TCP for `http://`, rustls for `https://` (custom CA, optional client
//! certificate). Every request is `Connection: close`: alerts are rare, and a fresh
//! connection per attempt has no stale-connection failure modes to handle.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpStream, ToSocketAddrs as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

/// The CA bundle used when a sink gives no `ca_file` (Debian's `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Response heads larger than this are not HTTP from a webhook receiver.
const HEAD_MAX: usize = 16 << 10;
/// How much of an error body is kept for the log.
const SNIPPET_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{what} {path}: {error}; give a readable PEM file")]
    Pem {
        what: &'static str,
        path: PathBuf,
        error: rustls_pki_types::pem::Error,
    },
    #[error("{what} {path} holds no usable certificate; give a PEM file of CA certificates")]
    NoCertificates { what: &'static str, path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the requests go, from the sink's `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
    /// The `Host` header value.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` is not a URL"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(format!("`{url}`: scheme must be http or https")),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let target = match tail.split('#').next().unwrap_or_default() {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{url}`: `{p}` is not a port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port,
            target,
            authority: authority.to_owned(),
        })
    }
}

/// rustls settings for a sink: trusted roots (`ca_file`, else the system bundle) and,
/// for mutual TLS, a client certificate chain and key.
pub fn tls_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let (what, ca_path) = match ca_file {
        Some(p) => ("ca_file", p),
        None => ("system CA bundle", Path::new(SYSTEM_CA_BUNDLE)),
    };
    let pem_err = |what, path: &Path| {
        let path = path.to_owned();
        move |error| TlsSetupError::Pem { what, path, error }
    };
    let certs = CertificateDer::pem_file_iter(ca_path)
        .map_err(pem_err(what, ca_path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(what, ca_path))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoCertificates {
            what,
            path: ca_path.to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem_err("client_cert", cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err("client_cert", cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err("client_key", key))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

/// Why an attempt got no HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, io::Error),
    #[error("connecting to {0}: {1}")]
    Connect(String, io::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("{0}")]
    Io(io::Error),
    #[error("the receiver closed the connection before answering")]
    Closed,
    #[error("the answer is not HTTP/1.x: {0}")]
    Malformed(String),
    #[error("`{0}` is not a TLS server name")]
    ServerName(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<io::Error> for AttemptError {
    fn from(e: io::Error) -> Self {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return Self::Timeout;
        }
        // rustls reports its own failures (a bad certificate) wrapped in io::Error.
        match e.downcast::<rustls::Error>() {
            Ok(tls) => Self::Tls(tls),
            Err(e) => Self::Io(e),
        }
    }
}

/// The part of a response that decides what happens to the alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `Retry-After` in seconds, when the receiver gave one.
    pub retry_after: Option<Duration>,
    /// The start of the body, for the log.
    pub snippet: String,
}

/// What an answer means for the alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The receiver refuses this request and would refuse it again (a 4xx other than
    /// 408 Request Timeout and 429 Too Many Requests).
    Permanent,
    Retry,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 => Verdict::Retry,
        400..=499 => Verdict::Permanent,
        _ => Verdict::Retry,
    }
}

/// Connection settings shared by every attempt of one sink.
pub struct Client {
    pub endpoint: Endpoint,
    pub tls: Option<Arc<ClientConfig>>,
    pub timeout: Duration,
    /// `Name: value` lines after the ones pthwatch sets.
    pub headers: Vec<(String, String)>,
}

impl Client {
    /// POSTs `body` with `headers` (and the configured ones) and reads the status. The
    /// socket of the attempt is parked in `inflight` so that a shutdown can cut it off.
    pub fn post(
        &self,
        headers: &[(&str, &str)],
        body: &[u8],
        inflight: &Mutex<Option<TcpStream>>,
    ) -> Result<Response, AttemptError> {
        let deadline = Instant::now() + self.timeout;
        let ep = &self.endpoint;
        let name = format!("{}:{}", ep.host, ep.port);
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| AttemptError::Resolve(name.clone(), e))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut sock = None;
        for addr in addrs {
            let left = remaining(deadline)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let sock = sock.ok_or_else(|| match last.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => AttemptError::Timeout,
            _ => AttemptError::Connect(name, last),
        })?;
        let control = sock.try_clone()?;
        *lock(inflight) = Some(sock.try_clone()?);
        let request = self.request(headers, body);
        let result = match &self.tls {
            None => exchange(sock, &control, &request, deadline),
            Some(config) => {
                let server = ServerName::try_from(ep.host.clone())
                    .map_err(|_| AttemptError::ServerName(ep.host.clone()))?;
                let conn = ClientConnection::new(Arc::clone(config), server)?;
                exchange(StreamOwned::new(conn, sock), &control, &request, deadline)
            }
        };
        *lock(inflight) = None;
        let _ = control.shutdown(Shutdown::Both);
        result
    }

    fn request(&self, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let ep = &self.endpoint;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pthwatch/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            ep.target,
            ep.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let configured = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (k, v) in headers.iter().copied().chain(configured) {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remaining(deadline: Instant) -> Result<Duration, AttemptError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(AttemptError::Timeout),
    }
}

/// Sends the request and reads the response head (and the start of the body), each
/// socket operation bounded by what is left of the attempt's time.
fn exchange(
    mut stream: impl Read + Write,
    control: &TcpStream,
    request: &[u8],
    deadline: Instant,
) -> Result<Response, AttemptError> {
    control.set_write_timeout(Some(remaining(deadline)?))?;
    control.set_read_timeout(Some(remaining(deadline)?))?;
    stream.write_all(request)?;
    stream.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((head_len, mut response, content_length)) = parse_head(&buf)? {
            if (100..200).contains(&response.status) {
                // An interim answer (100 Continue): the real one follows.
                buf.drain(..head_len);
                continue;
            }
            if verdict(response.status) != Verdict::Delivered {
                let want = content_length.unwrap_or(SNIPPET_MAX).min(SNIPPET_MAX);
                while buf.len() - head_len < want && remaining(deadline).is_ok() {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.len().min(head_len + want);
                response.snippet = String::from_utf8_lossy(&buf[head_len..end]).into_owned();
            }
            return Ok(response);
        }
        if buf.len() > HEAD_MAX {
            return Err(AttemptError::Malformed("response head too large".into()));
        }
        control.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(AttemptError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(AttemptError::Closed);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parses a response head once it is complete: (head length, response, Content-Length).
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Response, Option<usize>)>, AttemptError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // A status line that is already wrong need not wait for the rest.
        if buf.len() >= 8 && !buf.starts_with(b"HTTP/1.") {
            return Err(malformed(buf));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| malformed(buf))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(malformed(buf));
    };
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| code.len() == 3 && (100..600).contains(s));
    let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
        return Err(malformed(buf));
    };
    let mut retry_after = None;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        }
    }
    Ok(Some((
        end + 4,
        Response {
            status,
            retry_after,
            snippet: String::new(),
        },
        content_length,
    )))
}

fn malformed(buf: &[u8]) -> AttemptError {
    let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = &first[..first.len().min(80)];
    AttemptError::Malformed(format!("{:?}", String::from_utf8_lossy(first)))
}
