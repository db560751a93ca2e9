//! Network attempts by tracked processes: the syscall tracepoints report them (and kill in
//! kill mode, before the call proceeds), or under the BPF LSM backend the LSM socket
//! hooks, which then replace them; one of two deciders denies (EPERM to the caller,
//! io_uring included): the `cgroup_sock_addr` programs at the cgroup v2 root, or the BPF
//! LSM `socket_connect` / `socket_sendmsg` hooks, which also refuse a tainted lineage's
//! sends on sockets it connected earlier. Both decide through `decide_attempt`. The
//! `cgroup_skb` egress program drops packets of sockets a tainted lineage already holds.
//! Connections accepted on a lineage's listening socket never pass a connect or sendmsg
//! hook: the `cgroup_sock` and `sock_ops` programs put them among the lineage's sockets
//! (see `net_sockops`), so that the egress program drops their packets too.
use core::{
    ffi::c_void,
    ptr::{addr_of, read_volatile},
};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_LISTEN_CB, BPF_TCP_LISTEN, bpf_sock_addr,
    },
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, fentry, lsm, sock_ops, tracepoint},
    programs::{
        FEntryContext, LsmContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext,
        TracePointContext,
    },
};
use monitor_common::{
    EventKind, NetEvent, ProcState, counter, lineage_flags, mode, net_source, verdict,
};

use crate::{
    emit::{header, packet_header, send, socket_header},
    kernel::{Kptr, offsets, read, read_ptr},
    maps::{LINEAGES, LISTENERS, ListenKey, Listener, SOCKETS, TCP_CREATED, config, count},
    state::{
        Caller, acting_lineage, caller, current_ids, kill_current, kills_on_network,
        lineage_flags_of, mark_lineage, proc_mut,
    },
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A destination read from a user `sockaddr`.
#[derive(Default)]
struct Dest {
    family: u16,
    port: u16,
    addr: [u8; 16],
}

#[inline(always)]
fn read_sockaddr(ptr: u64, len: u64) -> Option<Dest> {
    if ptr == 0 || len < 2 {
        return None;
    }
    let p = ptr as *const u8;
    // SAFETY: user memory read through the helper; faults return an error.
    let family: u16 = unsafe { bpf_probe_read_user(p.cast::<u16>()) }.ok()?;
    let mut d = Dest {
        family,
        ..Dest::default()
    };
    match family {
        AF_INET if len >= 8 => {
            let port: u16 = unsafe { bpf_probe_read_user(p.add(2).cast::<u16>()) }.ok()?;
            let a: [u8; 4] = unsafe { bpf_probe_read_user(p.add(4).cast::<[u8; 4]>()) }.ok()?;
            d.port = u16::from_be(port);
            d.addr[..4].copy_from_slice(&a);
        }
        AF_INET6 if len >= 24 => {
            let port: u16 = unsafe { bpf_probe_read_user(p.add(2).cast::<u16>()) }.ok()?;
            d.addr = unsafe { bpf_probe_read_user(p.add(8).cast::<[u8; 16]>()) }.ok()?;
            d.port = u16::from_be(port);
        }
        AF_UNIX => {}
        _ => {}
    }
    Some(d)
}

/// Common path of the syscall tracepoints: report, and in kill mode kill a tainted
/// lineage before the call goes on.
#[inline(always)]
fn on_syscall(source: u32, dest: Option<Dest>, fd: u64) {
    let Some(c) = caller() else { return };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &*c.st };
    let lineage = c.lineage;
    let mut v = verdict::ALLOWED;
    // Only an Internet destination is the network; a local socket (the name service
    // cache, syslog, D-Bus) is not. Sends on a socket connected earlier name no
    // destination: the egress program drops those and userspace kills.
    let d = dest.unwrap_or_default();
    let inet = d.family == AF_INET || d.family == AF_INET6;
    if lineage != 0 {
        let flags = lineage_flags_of(lineage);
        if inet {
            mark_lineage(lineage, lineage_flags::NET);
        }
        if flags & lineage_flags::KILL != 0 || (inet && kills_on_network(flags, c.cfg.mode)) {
            mark_lineage(lineage, lineage_flags::KILL);
            kill_current();
            v = verdict::KILLED;
        }
    }
    let socket = Socket {
        cookie: 0,
        fd: fd as i32,
    };
    emit(st, lineage, source, d.family, d.port, d.addr, socket, 0, v);
}

/// How an event names the socket: by cookie where the kernel hands us the socket, by
/// descriptor where only the syscall's arguments are known.
struct Socket {
    cookie: u64,
    fd: i32,
}

#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "flat event fields")]
fn emit(
    st: &ProcState,
    lineage: u64,
    source: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
    socket: Socket,
    protocol: u32,
    v: u32,
) {
    let ev = NetEvent {
        header: header(EventKind::Net, st, lineage),
        family,
        port,
        protocol,
        addr,
        cookie: socket.cookie,
        source,
        verdict: v,
        fd: socket.fd,
        _pad: 0,
    };
    send(&ev);
}

/// `syscalls:sys_enter_connect(int fd, struct sockaddr *uservaddr, int addrlen)`.
#[tracepoint]
pub fn net_enter_connect(ctx: TracePointContext) -> u32 {
    // SAFETY: sys_enter_* arguments are 8-byte slots from offset 16.
    let (fd, addr, len) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(24).unwrap_or(0),
            ctx.read_at::<u64>(32).unwrap_or(0),
        )
    };
    on_syscall(net_source::TP_CONNECT, read_sockaddr(addr, len), fd);
    0
}

/// `syscalls:sys_enter_sendto(fd, buff, len, flags, struct sockaddr *addr, addr_len)`.
#[tracepoint]
pub fn net_enter_sendto(ctx: TracePointContext) -> u32 {
    let (fd, addr, len) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(48).unwrap_or(0),
            ctx.read_at::<u64>(56).unwrap_or(0),
        )
    };
    on_syscall(net_source::TP_SENDTO, read_sockaddr(addr, len), fd);
    0
}

/// `syscalls:sys_enter_sendmsg(int fd, struct user_msghdr *msg, unsigned flags)`.
#[tracepoint]
pub fn net_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let (fd, msg) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    on_syscall(net_source::TP_SENDMSG, msghdr_dest(msg), fd);
    0
}

/// `syscalls:sys_enter_sendmmsg(int fd, struct mmsghdr *mmsg, unsigned vlen, flags)`:
/// the first message's destination.
#[tracepoint]
pub fn net_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    let (fd, msg) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    on_syscall(net_source::TP_SENDMMSG, msghdr_dest(msg), fd);
    0
}

#[inline(always)]
fn msghdr_dest(msg: u64) -> Option<Dest> {
    if msg == 0 {
        return None;
    }
    let o = offsets();
    let p = msg as *const u8;
    // SAFETY: user memory read through the helper.
    let name: u64 =
        unsafe { bpf_probe_read_user(p.add(o.user_msghdr_msg_name as usize).cast::<u64>()) }
            .ok()?;
    let namelen: u32 =
        unsafe { bpf_probe_read_user(p.add(o.user_msghdr_msg_namelen as usize).cast::<u32>()) }
            .ok()?;
    read_sockaddr(name, u64::from(namelen))
}

/// Whether the destination (address bytes in network order) is a cloud instance
/// metadata or credential endpoint: AWS, GCP, Azure and OCI IMDS (169.254.169.254), ECS
/// task and EKS pod identity credentials (169.254.170.2, 169.254.170.23), Alibaba
/// (100.100.100.200), AWS IMDS and EKS pod identity over IPv6 (fd00:ec2::254,
/// fd00:ec2::23); the list is monitor-common's.
#[inline(always)]
fn is_metadata_service(family: u16, a: &[u8; 16]) -> bool {
    let word = |i: usize| u32::from_be_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]]);
    if family == AF_INET6 {
        return monitor_common::is_metadata_v6([word(0), word(1), word(2), word(3)]);
    }
    monitor_common::is_metadata_v4(word(0))
}

/// One network attempt as a deciding hook sees it.
struct Attempt {
    source: u32,
    family: u16,
    /// Host byte order.
    port: u16,
    /// Network byte order (IPv4 in the first 4 bytes).
    addr: [u8; 16],
    protocol: u32,
    /// Socket cookie (0 when the hook could not get it).
    cookie: u64,
}

/// The in-kernel decision on an Internet connect or send of a lineage member, the same
/// for the `cgroup_sock_addr` programs and the BPF LSM socket hooks: remember the
/// socket, mark the lineage (asking the metadata service is reading credentials), deny
/// what `must_deny` says, and report the decision. Returns the verdict.
#[inline(always)]
fn decide_attempt(st: &ProcState, lineage: u64, a: &Attempt) -> u32 {
    if a.cookie != 0 {
        let _ = SOCKETS.insert(&a.cookie, &lineage, 0);
    }
    let mut add = lineage_flags::NET;
    // The cloud's instance metadata service hands out the machine's credentials: asking it
    // is reading them, so the request itself is the network attempt of a tainted lineage.
    if is_metadata_service(a.family, &a.addr) {
        add |= lineage_flags::CRED_READ | lineage_flags::METADATA;
    }
    mark_lineage(lineage, add);
    let flags = lineage_flags_of(lineage);
    let cfg = config();
    let mut v = verdict::ALLOWED;
    if lineage_flags::must_deny(flags, cfg.mode) {
        v = verdict::DENIED;
        deny(lineage, flags, cfg.mode);
    }
    emit(
        st,
        lineage,
        a.source,
        a.family,
        a.port,
        a.addr,
        Socket {
            cookie: a.cookie,
            fd: -1,
        },
        a.protocol,
        v,
    );
    v
}

/// Records a denial on the lineage (and, in kill mode after a read, that it dies).
#[inline(always)]
fn deny(lineage: u64, flags: u32, kernel_mode: u32) {
    let mut add = lineage_flags::BLOCKED;
    if kernel_mode == mode::KILL && flags & lineage_flags::READ != 0 {
        add |= lineage_flags::KILL;
    }
    mark_lineage(lineage, add);
    count(counter::NET_DENIED);
}

/// Decision for a `cgroup_sock_addr` hook: 1 allows, 0 denies (the caller gets EPERM).
#[inline(always)]
fn decide(ctx: &SockAddrContext, source: u32, v6: bool) -> i32 {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 1 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &*p };
    let lineage = acting_lineage(st, pid);
    if lineage == 0 {
        return 1;
    }
    // SAFETY: the context is the kernel's bpf_sock_addr for this call.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let mut addr = [0u8; 16];
    if v6 {
        let words = sa.user_ip6;
        let mut i = 0;
        while i < 4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&words[i].to_ne_bytes());
            i += 1;
        }
    } else {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    let attempt = Attempt {
        source,
        family: if v6 { AF_INET6 } else { AF_INET },
        port: u16::from_be(sa.user_port as u16),
        addr,
        protocol: sa.protocol,
        cookie,
    };
    if decide_attempt(st, lineage, &attempt) == verdict::ALLOWED {
        1
    } else {
        0
    }
}

/// `cgroup/connect4` at the cgroup v2 root.
#[cgroup_sock_addr(connect4)]
pub fn net_cg_connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_source::CG_CONNECT4, false)
}

/// `cgroup/connect6` at the cgroup v2 root.
#[cgroup_sock_addr(connect6)]
pub fn net_cg_connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_source::CG_CONNECT6, true)
}

/// `cgroup/sendmsg4`: UDP sends with an explicit destination (no connect).
#[cgroup_sock_addr(sendmsg4)]
pub fn net_cg_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_source::CG_SENDMSG4, false)
}

/// `cgroup/sendmsg6`.
#[cgroup_sock_addr(sendmsg6)]
pub fn net_cg_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, net_source::CG_SENDMSG6, true)
}

/// `cgroup_skb/egress`: a socket that an attributed lineage connected (before it read
/// credentials) must not carry the data out once the lineage is tainted. Every packet
/// costs one socket-cookie lookup.
#[cgroup_skb(egress)]
pub fn net_cg_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context is the kernel's __sk_buff for this packet.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    if cookie == 0 {
        return 1;
    }
    // SAFETY: the value is copied out immediately.
    let Some(&lineage) = (unsafe { SOCKETS.get(&cookie) }) else {
        return 1;
    };
    let Some(l) = LINEAGES.get_ptr_mut(&lineage) else {
        return 1;
    };
    // SAFETY: map value pointer from a successful lookup.
    let flags = unsafe { (*l).flags };
    if !lineage_flags::must_deny(flags, config().mode) {
        return 1;
    }
    count(counter::EGRESS_DROPS);
    if flags & lineage_flags::BLOCKED == 0 {
        // Report the first drop of the lineage; later drops are only counted.
        unsafe { (*l).flags |= lineage_flags::BLOCKED };
        // Egress may run outside the owning task's context: the pid is not meaningful,
        // the lineage's root process stands for it.
        let root_tgid = unsafe { (*l).root_tgid };
        let ev = NetEvent {
            header: packet_header(EventKind::Net, ctx.skb.skb, lineage, root_tgid),
            cookie,
            source: net_source::CG_EGRESS,
            verdict: verdict::DENIED,
            fd: -1,
            ..NetEvent::default()
        };
        send(&ev);
    }
    0
}

const IPPROTO_TCP: u32 = 6;

/// `cgroup/sock_create` at the cgroup v2 root: a TCP socket a lineage member creates is
/// recorded (`TCP_CREATED`), so that `net_sockops` knows whose it is when it listens.
/// Never refuses a socket; an untracked process pays one `PROCS` lookup per socket it
/// creates.
#[cgroup_sock(sock_create)]
pub fn net_cg_sock_create(ctx: SockContext) -> i32 {
    let Some((_, lineage)) = member() else {
        return 1;
    };
    // SAFETY: the context is the kernel's bpf_sock for the new socket.
    let protocol = unsafe { (*ctx.sock).protocol };
    if protocol != IPPROTO_TCP {
        return 1;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    if cookie != 0 {
        let _ = TCP_CREATED.insert(&cookie, &lineage, 0);
    }
    1
}

/// The `LISTENERS` key of a `sock_ops` socket's local end.
#[inline(always)]
fn listen_key(ctx: &SockOpsContext) -> ListenKey {
    let ops = ctx.ops;
    // SAFETY: a helper on, and 4-byte loads at constant offsets of, the program's own
    // context (the verifier takes no other ctx access).
    unsafe {
        ListenKey {
            netns: bpf_get_netns_cookie(ops.cast()),
            family: read_volatile(addr_of!((*ops).family)),
            port: read_volatile(addr_of!((*ops).local_port)),
        }
    }
}

/// `sock_ops` at the cgroup v2 root, for connections a lineage accepts (bind, listen,
/// accept, send: no connect or sendmsg hook sees them, and the egress program knows only
/// the sockets in `SOCKETS`).
///
/// - listen(2) on a lineage's socket (`TCP_LISTEN_CB`, autobind included): its port is
///   recorded in `LISTENERS`, and the socket asks for state callbacks;
/// - a connection established on such a port (`PASSIVE_ESTABLISHED_CB`, softirq, before
///   accept(2) can return it): its cookie joins `SOCKETS`, and the lineage's network
///   attempt is decided and reported as a connect would be, naming the peer;
/// - the listener leaving LISTEN (`STATE_CB`, close or shutdown): its entry goes.
///
/// Any other TCP socket costs one `LISTENERS` lookup per accepted connection; packets
/// cost nothing here. The program never changes what TCP does (no reply is set).
#[sock_ops]
pub fn net_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_LISTEN_CB => on_listen(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_accepted(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(0) == BPF_TCP_LISTEN => on_listen_end(&ctx),
        _ => {}
    }
    1
}

#[inline(always)]
fn on_listen(ctx: &SockOpsContext) {
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: the value is copied out immediately.
    let Some(&lineage) = (unsafe { TCP_CREATED.get(&cookie) }) else {
        return;
    };
    let listener = Listener { lineage, cookie };
    let _ = LISTENERS.insert(&listen_key(ctx), &listener, 0);
    let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 | BPF_SOCK_OPS_STATE_CB_FLAG as i32);
}

#[inline(always)]
fn on_listen_end(ctx: &SockOpsContext) {
    let key = listen_key(ctx);
    // SAFETY: the value is copied out immediately.
    let Some(&listener) = (unsafe { LISTENERS.get(&key) }) else {
        return;
    };
    // SAFETY: helper on the program's own context.
    if listener.cookie == unsafe { bpf_get_socket_cookie(ctx.ops.cast()) } {
        let _ = LISTENERS.remove(&key);
    }
}

#[inline(always)]
fn on_accepted(ctx: &SockOpsContext) {
    // SAFETY: the value is copied out immediately.
    let Some(&listener) = (unsafe { LISTENERS.get(&listen_key(ctx)) }) else {
        return;
    };
    let lineage = listener.lineage;
    // SAFETY: helper on the program's own context (the new connection).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let _ = SOCKETS.insert(&cookie, &lineage, 0);
    let Some(l) = LINEAGES.get_ptr_mut(&lineage) else {
        return;
    };
    mark_lineage(lineage, lineage_flags::NET);
    // SAFETY: map value pointer from a successful lookup.
    let (flags, root_tgid) = unsafe { ((*l).flags, (*l).root_tgid) };
    let cfg = config();
    let mut v = verdict::ALLOWED;
    if lineage_flags::must_deny(flags, cfg.mode) {
        v = verdict::DENIED;
        deny(lineage, flags, cfg.mode);
    }
    // SAFETY (the reads below): fields of the program's own context, each read on its
    // own as a 4-byte load at a constant offset, the only ctx access the verifier takes.
    let ops = ctx.ops;
    let family = unsafe { read_volatile(addr_of!((*ops).family)) } as u16;
    let mut addr = [0u8; 16];
    if family == AF_INET6 {
        let words = unsafe {
            [
                read_volatile(addr_of!((*ops).remote_ip6[0])),
                read_volatile(addr_of!((*ops).remote_ip6[1])),
                read_volatile(addr_of!((*ops).remote_ip6[2])),
                read_volatile(addr_of!((*ops).remote_ip6[3])),
            ]
        };
        let mut i = 0;
        while i < 4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&words[i].to_ne_bytes());
            i += 1;
        }
    } else {
        let ip4 = unsafe { read_volatile(addr_of!((*ops).remote_ip4)) };
        addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    }
    // The remote port is in network order, in the upper half on little-endian machines.
    let remote_port = unsafe { read_volatile(addr_of!((*ops).remote_port)) };
    let port = u16::from_be((remote_port >> 16) as u16);
    let ev = NetEvent {
        header: socket_header(EventKind::Net, lineage, root_tgid),
        family,
        port,
        protocol: IPPROTO_TCP,
        addr,
        cookie,
        source: net_source::SOCKOPS_ACCEPT,
        verdict: v,
        fd: -1,
        _pad: 0,
    };
    send(&ev);
}

/// The caller's errno for a denial by an LSM hook.
const EPERM: i32 = 1;

/// A lineage member in the current thread: its process state and lineage, or `None`
/// (the one `PROCS` lookup an untracked process pays).
#[inline(always)]
fn member() -> Option<(*const ProcState, u64)> {
    let (pid, tgid) = current_ids();
    let p = proc_mut(tgid)?;
    // SAFETY: map value pointer from a successful lookup.
    let lineage = acting_lineage(unsafe { &*p }, pid);
    if lineage == 0 {
        return None;
    }
    Some((p.cast_const(), lineage))
}

/// A destination read from a kernel `struct sockaddr` (the LSM hooks get the kernel's
/// copy of what the caller passed): the family of any socket, and the port and address of
/// an Internet one.
#[inline(always)]
fn read_kernel_sockaddr(p: Kptr, len: u64) -> Option<Dest> {
    if p.is_null() || len < 2 {
        return None;
    }
    let family: u16 = read(p, 0).ok()?;
    let mut d = Dest {
        family,
        ..Dest::default()
    };
    match family {
        AF_INET if len >= 8 => {
            d.port = u16::from_be(read::<u16>(p, 2).ok()?);
            let a: [u8; 4] = read(p, 4).ok()?;
            d.addr[..4].copy_from_slice(&a);
        }
        AF_INET6 if len >= 24 => {
            d.port = u16::from_be(read::<u16>(p, 2).ok()?);
            d.addr = read(p, 8).ok()?;
        }
        AF_INET | AF_INET6 => return None,
        _ => {}
    }
    Some(d)
}

/// `sock->sk` of an LSM hook's `struct socket *`, as a pointer the verifier types from
/// the kernel's BTF (so `bpf_get_socket_cookie` takes it). The offset comes from the
/// read-only `OFFSETS`, which the verifier reads as a constant; a direct load at a
/// constant offset of a BTF pointer is checked against the kernel's own layout.
#[inline(always)]
fn socket_sk(sock: Kptr) -> *mut c_void {
    if sock.is_null() {
        return core::ptr::null_mut();
    }
    let off = offsets().socket_sk as usize;
    // SAFETY: `sock` is the hook's argument; the verifier checks (and the kernel guards)
    // this load.
    unsafe { core::ptr::read_volatile(sock.add(off).cast::<*mut c_void>()) }
}

/// The socket's cookie (0 when there is no `sock`).
#[inline(always)]
fn cookie_of(sk: *mut c_void) -> u64 {
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is a BTF-typed `struct sock *` from `socket_sk`.
    unsafe { bpf_get_socket_cookie(sk) }
}

/// A connect or send naming `addr`, by a tracked thread, as the LSM socket hooks (or,
/// without the BPF LSM, the fentry programs on the same kernel functions) see it. They
/// take the place of the syscall tracepoints (any program on one puts every system call
/// on the host on the kernel's traced path), so they do what those do:
///
/// - a lineage member's Internet attempt is decided (`decides`, the LSM hooks) by
///   `decide_attempt`, as the cgroup programs decide it (0 allows, -EPERM denies); without
///   `decides` the cgroup programs decide and report it;
/// - anything else is reported, never refused: a local socket (not the network), or a
///   traced process outside any lineage (`pthwatch trace`);
/// - in kill mode a lineage that must die is killed here, before the call goes on.
#[inline(always)]
fn attempt(c: &Caller, sock: Kptr, addr: Kptr, len: u64, source: u32, decides: bool) -> i32 {
    let Some(d) = read_kernel_sockaddr(addr, len) else {
        return 0;
    };
    // SAFETY: map value pointer from `caller`.
    let st = unsafe { &*c.st };
    let inet = d.family == AF_INET || d.family == AF_INET6;
    let mut ret = 0;
    if c.lineage != 0 && inet {
        if decides {
            ret = lsm_decide(st, c.lineage, sock, &d, source);
        }
    } else {
        let socket = Socket { cookie: 0, fd: -1 };
        emit(
            st,
            c.lineage,
            source,
            d.family,
            d.port,
            d.addr,
            socket,
            0,
            verdict::ALLOWED,
        );
    }
    if c.lineage != 0 {
        let flags = lineage_flags_of(c.lineage);
        if flags & lineage_flags::KILL != 0 || (inet && kills_on_network(flags, c.cfg.mode)) {
            mark_lineage(c.lineage, lineage_flags::KILL);
            kill_current();
        }
    }
    ret
}

/// `decide_attempt` for an LSM hook: 0 allows, -EPERM denies.
#[inline(always)]
fn lsm_decide(st: &ProcState, lineage: u64, sock: Kptr, d: &Dest, source: u32) -> i32 {
    let sk = socket_sk(sock);
    let protocol: u16 = read(sk.cast_const().cast(), offsets().sock_sk_protocol).unwrap_or(0);
    let attempt = Attempt {
        source,
        family: d.family,
        port: d.port,
        addr: d.addr,
        protocol: u32::from(protocol),
        cookie: cookie_of(sk),
    };
    if decide_attempt(st, lineage, &attempt) == verdict::ALLOWED {
        0
    } else {
        -EPERM
    }
}

/// BPF LSM `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`:
/// the connect decision (syscall and io_uring alike), before the protocol sees it.
#[lsm(hook = "socket_connect")]
pub fn net_lsm_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(c) = caller() else {
        return 0;
    };
    let len: i32 = ctx.arg(2);
    attempt(
        &c,
        ctx.arg(0),
        ctx.arg(1),
        len as u64,
        net_source::LSM_CONNECT,
        true,
    )
}

/// `fentry` on `security_socket_connect(struct socket *sock, struct sockaddr *address,
/// int addrlen)`, for kernels without the BPF LSM: the connect tracepoint's reports and
/// kill, in its place (see `attempt`). The cgroup programs still decide.
#[fentry(function = "security_socket_connect")]
pub fn net_fentry_connect(ctx: FEntryContext) -> u32 {
    let Some(c) = caller() else {
        return 0;
    };
    let len: i32 = ctx.arg(2);
    let _ = attempt(
        &c,
        ctx.arg(0),
        ctx.arg(1),
        len as u64,
        net_source::FENTRY_CONNECT,
        false,
    );
    0
}

/// `fentry` on `security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int
/// size)`: the send tracepoints' reports and kill, in their place. A send on a socket
/// connected earlier is not reported (the egress program drops what must not leave);
/// a member of a lineage being killed dies at it.
#[fentry(function = "security_socket_sendmsg")]
pub fn net_fentry_sendmsg(ctx: FEntryContext) -> u32 {
    let Some(c) = caller() else {
        return 0;
    };
    let sent = named_send(
        &c,
        ctx.arg(0),
        ctx.arg(1),
        net_source::FENTRY_SENDMSG,
        false,
    );
    if sent.is_none() && c.lineage != 0 && lineage_flags_of(c.lineage) & lineage_flags::KILL != 0 {
        kill_current();
    }
    0
}

/// A send that names a destination (`msg->msg_name`, e.g. `sendto`), taken by `attempt`
/// like a connect; `None` for a send on a connected socket.
#[inline(always)]
fn named_send(c: &Caller, sock: Kptr, msg: Kptr, source: u32, decides: bool) -> Option<i32> {
    let o = offsets();
    let name = read_ptr(msg, o.msghdr_msg_name).unwrap_or(core::ptr::null());
    if name.is_null() {
        return None;
    }
    let len: i32 = read(msg, o.msghdr_msg_namelen).unwrap_or(0);
    Some(attempt(c, sock, name, len as u64, source, decides))
}

/// BPF LSM `socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`: every
/// send (sendto, sendmsg, write on a socket, io_uring). A send naming an Internet
/// destination is decided like a connect; a send on a socket connected earlier is
/// refused once the lineage must be denied (what the egress program does packet by
/// packet, here before the data is queued), and reported once per lineage; in kill mode
/// the sender dies. A traced process outside any lineage is reported only for sends that
/// name a destination (every write on a socket passes here).
#[lsm(hook = "socket_sendmsg")]
pub fn net_lsm_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(c) = caller() else {
        return 0;
    };
    let sock: Kptr = ctx.arg(0);
    if let Some(ret) = named_send(&c, sock, ctx.arg(1), net_source::LSM_SENDMSG, true) {
        return ret;
    }
    let o = offsets();
    let (st, lineage) = (c.st.cast_const(), c.lineage);
    if lineage == 0 {
        return 0;
    }
    let flags = lineage_flags_of(lineage);
    let cfg = c.cfg;
    if !lineage_flags::must_deny(flags, cfg.mode) {
        return 0;
    }
    let sk = socket_sk(sock);
    let family: u16 = read(sk.cast_const().cast(), o.sock_common_skc_family).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        // Local sockets are not the network.
        return 0;
    }
    deny(lineage, flags, cfg.mode);
    if flags & lineage_flags::BLOCKED == 0 {
        let protocol: u16 = read(sk.cast_const().cast(), o.sock_sk_protocol).unwrap_or(0);
        // The event names the socket only (family 0, no address), like an egress drop;
        // userspace finds the destination from the connect with the same cookie.
        emit(
            // SAFETY: map value pointer from `member`.
            unsafe { &*st },
            lineage,
            net_source::LSM_SENDMSG,
            0,
            0,
            [0; 16],
            Socket {
                cookie: cookie_of(sk),
                fd: -1,
            },
            u32::from(protocol),
            verdict::DENIED,
        );
    }
    if lineage_flags_of(lineage) & lineage_flags::KILL != 0 {
        kill_current();
    }
    -EPERM
}
