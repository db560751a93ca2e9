//! Closing the TCP connections of a lineage the kernel denies the network
//! (`NETLINK_SOCK_DIAG`, `SOCK_DESTROY`).
//!
//! The egress program drops every packet of a socket a hook's lineage connected before it
//! read credentials, but TCP keeps what it could not send and retransmits it for minutes,
//! even after the process exits. Once pthwatch stops (a restart, an upgrade) nothing drops
//! those retransmissions any more. So the daemon closes such connections outright: it
//! lists the host's TCP sockets, picks those whose socket cookie (the same number
//! `bpf_get_socket_cookie` gives the kernel programs) belongs to a denied lineage, and
//! destroys each (the kernel aborts it; what it held is discarded).
use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const HEADER_LEN: usize = 16;
/// `struct inet_diag_sockid`: ports, addresses, interface, cookie.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQUEST_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg` up to and including the socket id.
const MSG_ID_END: usize = 4 + SOCKID_LEN;
/// Every TCP state but LISTEN: a listener carries no data of its own.
const STATES: u32 = !(1 << 10);
/// Most dump records read before giving up (a host has far fewer sockets).
const DUMP_LIMIT: usize = 1 << 20;

/// One connection that was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub cookie: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Closes every TCP connection (IPv4 and IPv6) whose socket cookie is in `cookies`.
/// Returns what was closed; a connection that went away meanwhile is not an error.
pub fn close_by_cookie(cookies: &HashSet<u64>) -> io::Result<Vec<Closed>> {
    if cookies.is_empty() {
        return Ok(Vec::new());
    }
    let sock = NetlinkSocket::open()?;
    let mut closed = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for id in sock.dump(family)? {
            let cookie = cookie_of(&id);
            if !cookies.contains(&cookie) {
                continue;
            }
            match sock.destroy(family, &id) {
                Ok(()) => {
                    let (local, remote) = endpoints(family, &id);
                    closed.push(Closed {
                        cookie,
                        local,
                        remote,
                    });
                }
                // Gone between the dump and now.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(closed)
}

/// Closes the TCP connections of every lineage the kernel denies the network now, and
/// logs each. `when` says at which point (`"after an egress drop"`, `"at shutdown"`).
pub fn close_denied(sensors: &crate::sensors::Sensors, when: &str) -> usize {
    let cookies = match sensors.denied_sockets() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the sockets of denied lineages");
            return 0;
        }
    };
    match close_by_cookie(&cookies) {
        Ok(closed) => {
            for c in &closed {
                tracing::warn!(
                    local = %c.local,
                    remote = %c.remote,
                    cookie = c.cookie,
                    "closed a connection held by a denied hook lineage {when}: what it had not sent is discarded"
                );
            }
            closed.len()
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "DEGRADED: could not close the connections of a denied lineage (SOCK_DESTROY needs the tcp_diag module, CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN); their packets are dropped while pthwatch runs"
            );
            0
        }
    }
}

struct NetlinkSocket {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

impl NetlinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Self {
            fd,
            seq: std::cell::Cell::new(1),
        })
    }

    fn send(&self, ty: u16, flags: u16, family: u8, id: &[u8; SOCKID_LEN]) -> io::Result<u32> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let msg = request(ty, flags, seq, family, id);
        // SAFETY: sends `msg.len()` bytes of `msg` to the kernel (the default address).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seq)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receives into `buf`, at most its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The socket ids of every TCP socket of `family` but listeners.
    fn dump(&self, family: u8) -> io::Result<Vec<[u8; SOCKID_LEN]>> {
        let seq = self.send(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            &[0; SOCKID_LEN],
        )?;
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut records = 0usize;
        loop {
            let n = self.recv(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sock_diag dump ended early",
                ));
            }
            for m in messages(&buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(ids),
                    NLMSG_ERROR => return Err(netlink_error(m.payload)),
                    SOCK_DIAG_BY_FAMILY if m.payload.len() >= MSG_ID_END => {
                        let mut id = [0u8; SOCKID_LEN];
                        id.copy_from_slice(&m.payload[4..MSG_ID_END]);
                        ids.push(id);
                    }
                    _ => {}
                }
                records += 1;
                if records > DUMP_LIMIT {
                    return Err(io::Error::other("sock_diag dump did not end"));
                }
            }
        }
    }

    /// Destroys the socket `id` (as the dump gave it, cookie included).
    fn destroy(&self, family: u8, id: &[u8; SOCKID_LEN]) -> io::Result<()> {
        let seq = self.send(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family, id)?;
        let mut buf = vec![0u8; 4096];
        // A handful of reads at most: the answer is the next message with our seq.
        for _ in 0..16 {
            let n = self.recv(&mut buf)?;
            for m in messages(&buf[..n]) {
                if m.seq == seq && m.ty == NLMSG_ERROR {
                    let e = netlink_error(m.payload);
                    return if e.raw_os_error() == Some(0) {
                        Ok(())
                    } else {
                        Err(e)
                    };
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer to SOCK_DESTROY",
        ))
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` for TCP.
fn request(ty: u16, flags: u16, seq: u32, family: u8, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = HEADER_LEN + REQUEST_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&STATES.to_ne_bytes());
    m.extend_from_slice(id);
    m
}

struct Message<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages in one datagram; a malformed length ends the walk.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < HEADER_LEN || len > buf.len() {
            return None;
        }
        let m = Message {
            ty: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[HEADER_LEN..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(m)
    })
}

/// `nlmsgerr.error` (0 or a negative errno) as an io::Error (errno 0 for success).
fn netlink_error(payload: &[u8]) -> io::Error {
    let code = payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b));
    io::Error::from_raw_os_error(code)
}

/// `idiag_cookie[0] | idiag_cookie[1] << 32`.
fn cookie_of(id: &[u8; SOCKID_LEN]) -> u64 {
    let lo = u32::from_ne_bytes(id[40..44].try_into().expect("4 bytes"));
    let hi = u32::from_ne_bytes(id[44..48].try_into().expect("4 bytes"));
    u64::from(lo) | (u64::from(hi) << 32)
}

fn endpoints(family: u8, id: &[u8; SOCKID_LEN]) -> (SocketAddr, SocketAddr) {
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let addr = |b: &[u8]| -> IpAddr {
        if family == libc::AF_INET as u8 {
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
        } else {
            let octets: [u8; 16] = b[..16].try_into().expect("16 bytes");
            Ipv6Addr::from(octets).into()
        }
    };
    (
        SocketAddr::new(addr(&id[4..20]), port(&id[0..2])),
        SocketAddr::new(addr(&id[20..36]), port(&id[2..4])),
    )
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    #[test]
    fn requests_have_the_kernels_layout() {
        let mut id = [0u8; SOCKID_LEN];
        id[40] = 7;
        let m = request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 9, 2, &id);
        assert_eq!(m.len(), 72);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 72);
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            SOCK_DESTROY
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 9);
        assert_eq!(&m[16..18], &[2, libc::IPPROTO_TCP as u8]);
        assert_eq!(m[16 + 8 + 40], 7);
        assert_eq!(cookie_of(&id), 7);
    }

    #[test]
    fn malformed_datagrams_end_the_walk() {
        assert_eq!(messages(&[0u8; 8]).count(), 0);
        let mut two = Vec::new();
        for seq in [1u32, 2] {
            two.extend_from_slice(&20u32.to_ne_bytes());
            two.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
            two.extend_from_slice(&[0; 2]);
            two.extend_from_slice(&seq.to_ne_bytes());
            two.extend_from_slice(&[0; 8]);
        }
        assert_eq!(messages(&two).map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        // A length past the end of the datagram.
        two[20..24].copy_from_slice(&400u32.to_ne_bytes());
        assert_eq!(messages(&two).count(), 1);
    }

    /// Needs CAP_NET_ADMIN for SOCK_DESTROY (the dump itself needs nothing).
    #[test]
    fn a_connection_picked_by_cookie_is_closed_and_no_other() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: SOCK_DESTROY needs CAP_NET_ADMIN");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut doomed = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut doomed_peer, _) = listener.accept().unwrap();
        let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut kept_peer, _) = listener.accept().unwrap();
        let cookie = socket_cookie(&doomed);
        let want = Closed {
            cookie,
            local: doomed.local_addr().unwrap(),
            remote: doomed.peer_addr().unwrap(),
        };
        let closed = close_by_cookie(&HashSet::from([cookie])).unwrap();
        assert_eq!(closed, [want]);
        // The destroyed socket reports the abort; its peer sees the reset or the end.
        let err = doomed.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
        let mut buf = [0u8; 1];
        doomed_peer
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        assert!(matches!(doomed_peer.read(&mut buf), Ok(0) | Err(_)));
        kept.write_all(b"y").unwrap();
        kept_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"y");
    }

    fn socket_cookie(s: &TcpStream) -> u64 {
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: SO_COOKIE writes a u64 into `cookie`.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        cookie
    }
}
