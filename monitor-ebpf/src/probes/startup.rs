//! The end of interpreter start-up: CPython calls `Py_RunMain` once `site` (and with it
//! every startup hook) has run. From here on the interpreter's main thread runs the
//! program the user asked for, which is never blamed on a hook.
use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use monitor_common::{EventKind, ProcState, proc_flags};

use crate::{
    emit::{header, send},
    state::{current_ids, proc_mut},
};

/// uprobe on `Py_RunMain` (in the interpreter binary or in `libpython3.X.so`).
#[uprobe]
pub fn startup_py_runmain(_ctx: ProbeContext) -> u32 {
    let (_pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 0 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    if st.flags & proc_flags::STARTUP == 0 {
        return 0;
    }
    st.flags &= !(proc_flags::STARTUP | proc_flags::CANDIDATE);
    let lineage = st.lineage;
    st.hook_tid = 0;
    let snapshot: ProcState = *st;
    send(&header(EventKind::StartupDone, &snapshot, lineage));
    0
}
