//! pthwatch's kernel programs, for both backends: the tracepoint backend and the BPF LSM
//! backend (whose `file_open`, `socket_connect` and `socket_sendmsg` programs share their
//! decisions with the open tracepoints and the cgroup network programs).
//!
//! Every probe starts with one lookup of the current thread group in `PROCS`; a process
//! that is not tracked costs that lookup and nothing else. Tracked processes are Python
//! interpreters, everything they start, and freshly exec'd processes on probation (see
//! `probes::process`).
#![no_std]
#![no_main]

mod emit;
mod kernel;
mod maps;
mod probes;
mod state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
