//! Tracking state: who is tracked, which lineage a thread acts for, and the kernel-side
//! verdicts on a lineage.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal};
use monitor_common::{
    KernelConfig, LineageState, ProcState, counter, lineage_flags, mode, proc_flags,
};

use crate::maps::{LINEAGES, PROCS, THREADS, config, count};

const SIGKILL: u32 = 9;

/// (thread id, thread-group id) of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id as u32, (id >> 32) as u32)
}

/// The tracking entry of a thread group: the one lookup every probe pays.
#[inline(always)]
pub fn proc_mut(tgid: u32) -> Option<*mut ProcState> {
    PROCS.get_ptr_mut(&tgid)
}

/// The lineage thread `pid` of a process with state `st` acts for (0 = none): the whole
/// process, the thread running hook code during start-up, or a thread the hook started.
#[inline(always)]
pub fn acting_lineage(st: &ProcState, pid: u32) -> u64 {
    if st.flags & proc_flags::ATTRIBUTED != 0 {
        return st.lineage;
    }
    if st.hook_tid != 0 {
        if st.hook_tid == pid {
            return st.lineage;
        }
        // io_uring runs requests the hook thread submitted on kernel worker threads of
        // the same process (`iou-wrk-*`, `iou-sqp-*`): they act for the same hook.
        if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm() {
            if comm[0] == b'i' && comm[1] == b'o' && comm[2] == b'u' && comm[3] == b'-' {
                return st.lineage;
            }
        }
    }
    if st.flags & proc_flags::HAS_HOOK_THREADS != 0 {
        // SAFETY: the value is copied out immediately.
        if let Some(l) = unsafe { THREADS.get(&pid) } {
            return *l;
        }
    }
    0
}

#[inline(always)]
pub fn lineage_mut(lineage: u64) -> Option<*mut LineageState> {
    if lineage == 0 {
        return None;
    }
    LINEAGES.get_ptr_mut(&lineage)
}

/// Flags of a lineage (0 when unknown).
#[inline(always)]
pub fn lineage_flags_of(lineage: u64) -> u32 {
    match lineage_mut(lineage) {
        // SAFETY: map value pointer from a successful lookup.
        Some(l) => unsafe { (*l).flags },
        None => 0,
    }
}

/// Sets flags on a lineage.
#[inline(always)]
pub fn mark_lineage(lineage: u64, flags: u32) {
    if let Some(l) = lineage_mut(lineage) {
        // SAFETY: map value pointer; concurrent updates only ever add bits.
        unsafe { (*l).flags |= flags };
    }
}

/// Kills the current process (the whole thread group).
#[inline(always)]
pub fn kill_current() {
    // SAFETY: plain helper call.
    if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        count(counter::KILLS);
    }
}

/// A member of a lineage being killed dies at its next hooked call. Returns true when
/// the current process was signalled.
#[inline(always)]
pub fn enforce_kill(lineage: u64) -> bool {
    if lineage != 0 && lineage_flags_of(lineage) & lineage_flags::KILL != 0 {
        kill_current();
        return true;
    }
    false
}

/// A new lineage id: boot-time nanoseconds shifted, with the CPU in the low byte, unique per host.
#[inline(always)]
pub fn new_lineage_id(now_ns: u64, cpu: u32) -> u64 {
    (now_ns << 8) | u64::from(cpu & 0xff)
}

/// What a probe on a network or io_uring call needs about the calling thread.
pub struct Caller {
    pub st: *mut ProcState,
    /// The lineage the thread acts for (0 = none).
    pub lineage: u64,
    pub cfg: KernelConfig,
}

/// The calling thread, when the probe has anything to do for it: its process is tracked,
/// and it acts for a lineage or everything is being traced.
#[inline(always)]
pub fn caller() -> Option<Caller> {
    let (pid, tgid) = current_ids();
    let st = proc_mut(tgid)?;
    // SAFETY: map value pointer from a successful lookup.
    let lineage = acting_lineage(unsafe { &*st }, pid);
    let cfg = config();
    if lineage == 0 && cfg.trace_all == 0 {
        return None;
    }
    Some(Caller { st, lineage, cfg })
}

/// Whether a lineage with `flags` dies at a network attempt: it is being killed, or it
/// read something and the kernel's mode is kill.
#[inline(always)]
pub fn kills_on_network(flags: u32, kernel_mode: u32) -> bool {
    flags & lineage_flags::KILL != 0
        || (flags & lineage_flags::READ != 0 && kernel_mode == mode::KILL)
}
