//! Raw probes for what aya's feature probes cannot tell: whether a BTF-attached program
//! (LSM, fentry, `tp_btf`) loads *and attaches*, whether a perf tracepoint or kprobe takes a
//! program, and, when the kernel refuses, at which step and with which errno.
//!
//! Every program is `r0 = 0; exit`: attached for an instant, it allows everything and
//! changes nothing. Every fd is closed on return.
use std::{
    ffi::CString,
    fmt, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_PROG_TYPE_LSM: u32 = 29;

const BPF_TRACE_RAW_TP: u32 = 23;
const BPF_TRACE_FENTRY: u32 = 24;
const BPF_LSM_MAC: u32 = 27;

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// The kernel-internal `ENOTSUPP`, which leaks out of BPF trampolines.
const ENOTSUPP: i32 = 524;

/// `r0 = 0; exit`.
const RETURN_ZERO: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `attach_btf_obj_fd`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    core_relo_cnt: u32,
}
const _: () = assert!(size_of::<ProgLoadAttr>() == 120);

/// The `BPF_RAW_TRACEPOINT_OPEN` part of `union bpf_attr`.
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `struct perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1`).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 72);

/// Why the kernel refused: the step, its errno and, for a load, the verifier's first words.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub step: &'static str,
    pub errno: i32,
    /// Empty when the kernel refused before the verifier ran.
    pub verifier_log: String,
}

impl Refusal {
    fn last(step: &'static str) -> Self {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Self {
            step,
            errno,
            verifier_log: String::new(),
        }
    }

    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno)
    }

    /// The error means "this kernel cannot do it", not "you may not".
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.errno,
            libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | libc::ENOENT | ENOTSUPP
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, text) = (
            self.errno_name(),
            describe(&io::Error::from_raw_os_error(self.errno)),
        );
        write!(f, "{} refused: {name} ({text})", self.step)?;
        if self.step == "BPF_PROG_LOAD" {
            match self.verifier_log.lines().find(|l| !l.trim().is_empty()) {
                None => write!(f, " before the verifier ran")?,
                Some(line) => write!(f, "; verifier: {}", line.trim())?,
            }
        }
        Ok(())
    }
}

/// The text of an OS error without Rust's " (os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    if e.raw_os_error() == Some(ENOTSUPP) {
        return "not supported".to_owned();
    }
    let text = e.to_string();
    text.split(" (os error")
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        ENOTSUPP => "ENOTSUPP",
        _ => "errno",
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` prefix of the given size.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) }
}

fn owned(fd: libc::c_long, step: &'static str) -> Result<OwnedFd, Refusal> {
    let raw = i32::try_from(fd).map_err(|_| Refusal::last(step))?;
    if raw < 0 {
        return Err(Refusal::last(step));
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Loads the trivial program; `attach_btf_id` 0 for program types that take none.
fn load(prog_type: u32, expected_attach_type: u32, attach_btf_id: u32) -> Result<OwnedFd, Refusal> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"pthw_chk\0");
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: RETURN_ZERO.len() as u32,
        insns: RETURN_ZERO.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    owned(bpf(BPF_PROG_LOAD, &mut attr), "BPF_PROG_LOAD").map_err(|mut refusal| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        refusal.verifier_log = String::from_utf8_lossy(&log[..end]).into_owned();
        refusal
    })
}

/// Program types attached through a BTF id of the kernel (trampolines).
#[derive(Clone, Copy, Debug)]
pub enum BtfHook {
    /// `lsm/<hook>`: attach id of `bpf_lsm_<hook>`.
    Lsm,
    /// `fentry/<func>`: attach id of the function.
    Fentry,
    /// `tp_btf/<tracepoint>`: attach id of the `btf_trace_<tracepoint>` typedef.
    TpBtf,
}

/// Loads a trivial program of `hook` kind on the kernel BTF id `btf_id`, attaches it
/// (`BPF_RAW_TRACEPOINT_OPEN`), and detaches it.
pub fn load_and_attach_btf(hook: BtfHook, btf_id: u32) -> Result<(), Refusal> {
    let (prog_type, attach_type) = match hook {
        BtfHook::Lsm => (BPF_PROG_TYPE_LSM, BPF_LSM_MAC),
        BtfHook::Fentry => (BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY),
        BtfHook::TpBtf => (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP),
    };
    let prog = load(prog_type, attach_type, btf_id)?;
    let mut attr = RawTracepointAttr {
        name: 0,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    owned(
        bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr),
        "BPF_RAW_TRACEPOINT_OPEN",
    )
    .map(drop)
}

fn perf_event_open(attr: &mut PerfEventAttr, step: &'static str) -> Result<OwnedFd, Refusal> {
    attr.size = size_of::<PerfEventAttr>() as u32;
    attr.sample_period = 1;
    attr.wakeup_events = 1;
    // SAFETY: `attr` is a valid perf_event_attr of the size it states.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::from_mut(attr),
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    owned(fd, step)
}

fn set_bpf(event: &OwnedFd, prog: &OwnedFd) -> Result<(), Refusal> {
    // SAFETY: both fds are open; the ioctl takes the program fd by value.
    let rc = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if rc < 0 {
        return Err(Refusal::last("PERF_EVENT_IOC_SET_BPF"));
    }
    Ok(())
}

/// Opens the tracepoint with perf id `id` and attaches a trivial tracepoint program to it.
pub fn attach_tracepoint(id: u64) -> Result<(), Refusal> {
    let prog = load(BPF_PROG_TYPE_TRACEPOINT, 0, 0)?;
    let mut attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        config: id,
        ..Default::default()
    };
    let event = perf_event_open(&mut attr, "perf_event_open(tracepoint)")?;
    set_bpf(&event, &prog)
}

/// Creates a kprobe on `func` through the kprobe PMU (`pmu_type`) and attaches a trivial
/// kprobe program to it.
pub fn attach_kprobe(pmu_type: u32, func: &str) -> Result<(), Refusal> {
    let prog = load(BPF_PROG_TYPE_KPROBE, 0, 0)?;
    let func = CString::new(func).map_err(|_| Refusal {
        step: "kprobe name",
        errno: libc::EINVAL,
        verifier_log: String::new(),
    })?;
    let mut attr = PerfEventAttr {
        kind: pmu_type,
        config1: func.as_ptr() as u64,
        ..Default::default()
    };
    let event = perf_event_open(&mut attr, "perf_event_open(kprobe)")?;
    set_bpf(&event, &prog)
}

/// The effective capability set of this process.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_step_errno_and_verifier_state() {
        let r = Refusal {
            step: "BPF_PROG_LOAD",
            errno: libc::EPERM,
            verifier_log: String::new(),
        };
        assert_eq!(
            r.to_string(),
            "BPF_PROG_LOAD refused: EPERM (Operation not permitted) before the verifier ran"
        );
        let r = Refusal {
            step: "BPF_PROG_LOAD",
            errno: libc::EINVAL,
            verifier_log: "\nR0 !read_ok\n".into(),
        };
        assert!(r.to_string().ends_with("; verifier: R0 !read_ok"), "{r}");
        let r = Refusal {
            step: "BPF_RAW_TRACEPOINT_OPEN",
            errno: ENOTSUPP,
            verifier_log: String::new(),
        };
        assert_eq!(
            r.to_string(),
            "BPF_RAW_TRACEPOINT_OPEN refused: ENOTSUPP (not supported)"
        );
        assert!(r.is_unsupported());
    }
}
