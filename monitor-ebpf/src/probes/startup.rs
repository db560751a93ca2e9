//! The end of interpreter start-up: CPython calls `Py_RunMain` once `site` (and with it
//! every startup hook) has run. From here on the interpreter's main thread runs the
//! program the user asked for, which is not blamed on a hook, until the program is over:
//! `Py_FinalizeEx` then runs the exit handlers (`atexit`), which a hook may have
//! registered, so the main thread acts for the process's hook lineage again. A hook that
//! planted code in the program itself (import, tracing or signal hooks, a replaced
//! builtin) is not over when start-up is: the main thread acts for it throughout.
use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use monitor_common::{EventKind, FileKey, ProcState, hook_flags, proc_flags};

use crate::{
    emit::{header, send},
    maps::{HOOKS, LINEAGES},
    state::{current_ids, proc_mut},
};

/// uprobe on `Py_RunMain` (in the interpreter binary or in `libpython3.X.so`).
#[uprobe]
pub fn startup_py_runmain(_ctx: ProbeContext) -> u32 {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 0 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    if st.flags & proc_flags::STARTUP == 0 {
        return 0;
    }
    st.flags &= !(proc_flags::STARTUP | proc_flags::CANDIDATE);
    let lineage = st.lineage;
    st.hook_tid = 0;
    if st.exit_lineage != 0 && st.flags & proc_flags::ATTRIBUTED == 0 && planted(st) {
        // The program runs with the hook's code in it: the main thread (the one calling
        // `Py_RunMain`) acts for the hook's lineage from here on.
        st.flags |= proc_flags::PLANTED;
        st.lineage = st.exit_lineage;
        st.hook_tid = pid;
    }
    let snapshot: ProcState = *st;
    send(&header(EventKind::StartupDone, &snapshot, lineage));
    0
}

/// Whether the hook of `exit_lineage` planted code in the program: known at its open, or
/// (for a hook the inventory had not read then) known by now.
#[inline(always)]
fn planted(st: &ProcState) -> bool {
    if st.flags & proc_flags::PLANTED != 0 {
        return true;
    }
    // SAFETY: the values are copied out immediately.
    let Some(l) = (unsafe { LINEAGES.get(&st.exit_lineage) }) else {
        return false;
    };
    let key = FileKey::new(l.hook_dev, l.hook_ino);
    unsafe { HOOKS.get(&key) }.is_some_and(|h| h.flags & hook_flags::PLANTS != 0)
}

/// uprobe on `Py_FinalizeEx` (same targets as `startup_py_runmain`): the user's program is
/// over. In an interpreter whose start-up ran a hook that may have deferred work to now
/// (`hook_flags::DEFERS`: hidden code, or exit, signal, tracing or import hooks; the last
/// such hook when several did), the main thread acts for that hook's lineage while the
/// exit handlers run. Hooks that cannot have deferred anything are not blamed for what the
/// program's own exit handlers do. Nothing is reported: what the handlers do is.
#[uprobe]
pub fn startup_py_finalize(_ctx: ProbeContext) -> u32 {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 0 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    // Wholly attributed processes act for their lineage anyway; in start-up the hook
    // thread is already set.
    if st.exit_lineage == 0 || st.flags & (proc_flags::ATTRIBUTED | proc_flags::STARTUP) != 0 {
        return 0;
    }
    st.lineage = st.exit_lineage;
    st.hook_tid = pid;
    0
}
