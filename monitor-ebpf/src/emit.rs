//! Building and sending events.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_socket_uid, bpf_ktime_get_boot_ns, bpf_skb_cgroup_id},
    },
};
use monitor_common::{
    EventHeader, EventKind, ExecEvent, OpenEvent, ProcState, counter, lineage_flags, mode,
};

use crate::{
    kernel::opaque,
    maps::{EVENTS, SCRATCH, config, count},
    state::mark_lineage,
};

/// The largest event built in the scratch area.
pub const SCRATCH_LEN: usize = core::mem::size_of::<ExecEvent>();

/// Size of the per-CPU scratch area: the largest event rounded up to a power of two, so
/// a length masked with `SCRATCH_CAP - 1` stays inside it. A mask is the bound every
/// verifier tracks (6.1's loses some compare-and-clamp forms after LLVM rewrites them).
pub const SCRATCH_CAP: usize = SCRATCH_LEN.next_power_of_two();

/// Header for an event about the current thread.
#[inline(always)]
pub fn header(kind: EventKind, st: &ProcState, lineage: u64) -> EventHeader {
    let id = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        flags: st.flags,
        // SAFETY: plain helper calls without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: id as u32,
        tgid: (id >> 32) as u32,
        ppid: st.ppid,
        uid: bpf_get_current_uid_gid() as u32,
        start_ns: st.start_ns,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        lineage,
    }
}

/// Header for an event about a packet (`cgroup_skb`). Such a program may run outside
/// the sending task (softirq), and older kernels (6.1, 6.12) refuse it the current-task
/// helpers (`bpf_get_current_pid_tgid`, `_uid_gid`, `_cgroup_id`): the uid and cgroup
/// are the socket's, the pid is unknown (0) and the tgid is the one the caller names.
#[inline(always)]
pub fn packet_header(kind: EventKind, skb: *mut __sk_buff, lineage: u64, tgid: u32) -> EventHeader {
    // SAFETY: helper calls on the program's own `__sk_buff` context.
    unsafe {
        EventHeader {
            kind: kind as u32,
            flags: 0,
            ts_ns: bpf_ktime_get_boot_ns(),
            pid: 0,
            tgid,
            ppid: 0,
            uid: bpf_get_socket_uid(skb),
            start_ns: 0,
            cgroup_id: bpf_skb_cgroup_id(skb),
            lineage,
        }
    }
}

/// Header for an event about a socket seen outside any task (`sock_ops` in softirq):
/// none of the current-task helpers, no uid or cgroup; the tgid is the one the caller
/// names (the lineage's root process).
#[inline(always)]
pub fn socket_header(kind: EventKind, lineage: u64, tgid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        // SAFETY: plain helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        tgid,
        lineage,
        ..EventHeader::default()
    }
}

/// `BPF_RB_NO_WAKEUP`: the record waits for the consumer's next wakeup or poll.
const NO_WAKEUP: u64 = 1;

/// How a record is published. Waking the consumer is an irq_work, and inside a VM an
/// interrupt: measured here, it was 90% of what an exec, fork or exit of a tracked process
/// cost (33 us against 2 us). Only what a hook's lineage does that userspace acts on needs
/// it at once: a hook opened (its reading, the environment check), a credential or
/// another catalogued file, a write, an exec, the network. The rest (interpreters
/// starting, a lineage's forks, exits and plain reads, such as a hook importing modules)
/// waits for the daemon's poll, within tens of milliseconds, in order behind the next
/// urgent record. The kernel's own verdicts never wait on either.
#[inline(always)]
fn wakeup(header: &EventHeader, open: Option<&OpenEvent>) -> u64 {
    if header.lineage == 0
        || header.kind == EventKind::Fork as u32
        || header.kind == EventKind::Exit as u32
    {
        return NO_WAKEUP;
    }
    match open {
        Some(o) if o.match_flags == 0 && o.flags & O_ACCMODE == 0 => NO_WAKEUP,
        _ => 0,
    }
}

const O_ACCMODE: u32 = 0o3;

/// Sends a fixed-size event (every event starts with its `EventHeader`); a full ring
/// buffer is counted, never silent.
#[inline(always)]
pub fn send<T>(event: &T) {
    // SAFETY: every event type is `repr(C)` and starts with an `EventHeader`.
    let header = unsafe { &*(event as *const T).cast::<EventHeader>() };
    if EVENTS.output::<T>(event, wakeup(header, None)).is_err() {
        lost(header.lineage);
    }
}

/// An event could not be sent. Counted per CPU; in block and kill mode (unless
/// configured fail-open) its lineage is quarantined: what it did is no longer known.
#[inline(always)]
fn lost(lineage: u64) {
    count(counter::RINGBUF_DROPS);
    if lineage == 0 {
        return;
    }
    let cfg = config();
    if cfg.fail_closed != 0 && cfg.mode >= mode::BLOCK {
        mark_lineage(lineage, lineage_flags::LOST | lineage_flags::QUARANTINED);
        count(counter::LOST_QUARANTINES);
    }
}

/// The per-CPU scratch area, to build a large event in place.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|p| p.cast::<u8>())
}

/// Sends the first `len` bytes (at most `SCRATCH_LEN`) of the scratch area.
#[inline(always)]
pub fn send_scratch(buf: *mut u8, len: usize) {
    let len = if len > SCRATCH_LEN { SCRATCH_LEN } else { len };
    // The clamp above is logic; this mask is the bound the verifier sees. `opaque` keeps
    // LLVM from proving the mask redundant and dropping it.
    let len = opaque(len) & (SCRATCH_CAP - 1);
    // SAFETY: `buf` is the SCRATCH value, SCRATCH_CAP bytes long, and len < SCRATCH_CAP.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast_const(), len) };
    // SAFETY: large events are built in place with their header first; an open event's
    // fixed part is written before it is sent.
    let header = unsafe { &*buf.cast::<EventHeader>() };
    let open =
        (header.kind == EventKind::Open as u32).then(|| unsafe { &*buf.cast::<OpenEvent>() });
    if EVENTS.output::<[u8]>(bytes, wakeup(header, open)).is_err() {
        lost(header.lineage);
    }
}
