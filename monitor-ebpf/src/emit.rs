//! Building and sending events.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::bpf_ktime_get_boot_ns,
};
use monitor_common::{EventHeader, EventKind, ExecEvent, ProcState, counter, lineage_flags, mode};

use crate::{
    maps::{EVENTS, SCRATCH, config, count},
    state::mark_lineage,
};

/// Size of the per-CPU scratch area: the largest event.
pub const SCRATCH_LEN: usize = core::mem::size_of::<ExecEvent>();

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

/// Sends a fixed-size event (every event starts with its `EventHeader`); a full ring
/// buffer is counted, never silent.
#[inline(always)]
pub fn send<T>(event: &T) {
    if EVENTS.output::<T>(event, 0).is_err() {
        // SAFETY: every event type is `repr(C)` and starts with an `EventHeader`.
        let lineage = unsafe { (*(event as *const T).cast::<EventHeader>()).lineage };
        lost(lineage);
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

/// Sends the first `len` bytes of the scratch area.
#[inline(always)]
pub fn send_scratch(buf: *mut u8, len: usize) {
    let len = if len > SCRATCH_LEN { SCRATCH_LEN } else { len };
    // SAFETY: `buf` is the SCRATCH value, SCRATCH_LEN bytes long, and len is bounded by it.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast_const(), len) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        // SAFETY: large events are built in place with their header first.
        let lineage = unsafe { (*buf.cast::<EventHeader>()).lineage };
        lost(lineage);
    }
}
