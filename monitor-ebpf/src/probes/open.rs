//! File opens by tracked processes, resolved to the file really opened (inode, device,
//! full path), so relative paths, `openat(dirfd)`, symlinks, hardlinks and
//! `/proc/self/root` all name the real file.
//!
//! Three sensors feed one decision (`try_open`): the open syscalls' exit tracepoints, which
//! find the `struct file` through the returned descriptor; the BPF LSM `file_open` hook
//! (LSM backend); and, where there is no BPF LSM, an `fentry` (or failing that a
//! `kprobe`) on `security_file_open`, the function that calls the LSM hooks. The last two
//! are handed the `struct file` itself and also see opens no syscall makes (io_uring
//! requests on the submitter or an `iou-wrk` thread, the kernel opening an executable).
//! Exactly one of the three is attached: each open is one event.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_task,
        generated::{bpf_get_smp_processor_id, bpf_loop},
    },
    macros::{fentry, kprobe, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, ProbeContext, TracePointContext},
};
use monitor_common::{
    EventKind, FileKey, LineageState, NAME_HASH_MAX, NameKey, OpenEvent, PATH_BUF_LEN, PATH_OFFSET,
    ProcState, hook_class, hook_flags, lineage_flags, mode, open_match, open_source, proc_flags,
};

use crate::{
    emit::{header, scratch, send_scratch},
    kernel::{Kptr, PathOut, file_facts, file_of_fd, file_path, offsets, opaque},
    maps::{CRED_NAMES, CREDS, HOOKS, LINEAGES, NAME_SCAN, SCRATCH, WRITTEN, config},
    state::{acting_lineage, current_ids, enforce_kill, mark_lineage, new_lineage_id, proc_mut},
};

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const O_ACCMODE: u32 = 0o3;

/// `syscalls:sys_exit_openat`.
#[tracepoint]
pub fn open_exit_openat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, open_source::OPENAT)
}

/// `syscalls:sys_exit_open`.
#[tracepoint]
pub fn open_exit_open(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, open_source::OPEN)
}

/// `syscalls:sys_exit_openat2`.
#[tracepoint]
pub fn open_exit_openat2(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, open_source::OPENAT2)
}

/// `syscalls:sys_exit_creat`.
#[tracepoint]
pub fn open_exit_creat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, open_source::CREAT)
}

#[inline(always)]
fn on_open_exit(ctx: &TracePointContext, source: u32) -> u32 {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 0 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    // SAFETY: sys_exit_* tracepoints carry `long ret` at offset 16.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let ids = (u64::from(tgid) << 32) | u64::from(pid);
    let _ = try_open(st, ids, core::ptr::null(), fd_source(ret as i32, source));
    0
}

/// BPF LSM `file_open(struct file *file)`: every open that reaches a file, whatever
/// started it (a syscall, an io_uring request on the submitter or on an `iou-wrk`
/// thread, exec). Never denies: the return value is the previous program's verdict
/// (0 when there is none), passed on unchanged.
#[lsm(hook = "file_open")]
pub fn open_lsm(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    on_file_open(ctx.arg(0), open_source::LSM_FILE_OPEN);
    previous
}

/// `fentry` on `security_file_open(struct file *file)`, for kernels without the BPF LSM:
/// the same opens as `open_lsm` sees (the function calls every LSM's `file_open`), at the
/// cost of a trampoline call. It runs before the LSMs decide, so an open another LSM
/// (AppArmor, SELinux) then denies is reported too, as the attempt it was.
#[fentry(function = "security_file_open")]
pub fn open_fentry(ctx: FEntryContext) -> u32 {
    on_file_open(ctx.arg(0), open_source::FENTRY_FILE_OPEN);
    0
}

/// `kprobe` on `security_file_open`, where an `fentry` program cannot attach (no BPF
/// trampolines on this kernel or architecture): the same as `open_fentry`, through a
/// breakpoint or an ftrace call, which costs more. The argument comes from the registers.
#[kprobe]
pub fn open_kprobe(ctx: ProbeContext) -> u32 {
    let Some(file) = ctx.arg::<Kptr>(0) else {
        return 0;
    };
    on_file_open(file, open_source::KPROBE_FILE_OPEN);
    0
}

/// An open handed over as its `struct file`, from `source`.
#[inline(always)]
fn on_file_open(file: Kptr, source: u32) {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    let ids = (u64::from(tgid) << 32) | u64::from(pid);
    // There is no descriptor yet (there may never be one, e.g. for exec): -1.
    let _ = try_open(st, ids, file, fd_source(-1, source));
}

/// `try_open`'s descriptor and `open_source`, in one argument.
#[inline(always)]
fn fd_source(fd: i32, source: u32) -> u64 {
    (u64::from(source) << 32) | u64::from(fd as u32)
}

/// The decision on one open by a tracked process, shared by both sensors: probation,
/// hooks entered, credentials read, and the event. `file` is the opened file, or null to
/// take it from the descriptor of the current task in `fd_source` (see `fd_source`). `ids`
/// is `tgid << 32 | pid` (BPF functions take at most five arguments, the result's
/// included).
fn try_open(st: &mut ProcState, ids: u64, file: Kptr, fd_source: u64) -> Result<(), i64> {
    let (pid, tgid) = (ids as u32, (ids >> 32) as u32);
    let (fd, source) = (fd_source as u32 as i32, (fd_source >> 32) as u32);
    let lineage = acting_lineage(st, pid);
    if enforce_kill(lineage) {
        return Ok(());
    }
    let cfg = config();
    let inspect = st.flags & (proc_flags::STARTUP | proc_flags::CANDIDATE) != 0;
    let traced = cfg.trace_all != 0 && st.flags & proc_flags::CANDIDATE == 0;
    if lineage == 0 && !inspect && !traced {
        return Ok(());
    }
    if offsets().valid == 0 {
        return Ok(());
    }
    let file = if file.is_null() {
        let task = unsafe { bpf_get_current_task() } as Kptr;
        file_of_fd(task, fd as u32)?
    } else {
        file
    };
    let facts = file_facts(file)?;
    let Some(buf) = scratch() else { return Ok(()) };
    let ev = buf.cast::<OpenEvent>();
    let kind = facts.mode & S_IFMT;
    // Interpreters read hooks; writing one (an installer) is not running it.
    let read_file = kind == S_IFREG && facts.flags & O_ACCMODE == 0;
    // What gets reported is walked whole. Start-up and probation look at the leaf alone,
    // of a directory or a file opened for reading (nothing else can be a site dir or a
    // hook), and walk further only for a name that needs its parent checked.
    let mut depth = if lineage != 0 || traced {
        u32::MAX
    } else if kind == S_IFDIR || read_file {
        1
    } else {
        0
    };
    let mut path = if depth == 0 {
        PathOut::default()
    } else {
        file_path(file, depth)
    };
    let mut matched = 0u32;
    let mut class = 0u32;

    if inspect {
        let leaf = Component::new(buf, 0, path.leaf_len);
        if kind == S_IFDIR && leaf.is_site_dir() {
            matched |= open_match::SITE_DIR;
        } else if read_file && leaf.is_site_hook_name() {
            // A `.pth` or `.start` file is a hook only in a site dir: read its parent
            // (and the rest, which userspace needs to read and report the hook).
            if depth != u32::MAX {
                depth = u32::MAX;
                path = file_path(file, depth);
            }
            if Component::new(buf, path.leaf_len, path.parent_len).is_site_dir() {
                matched |= open_match::HOOK;
            }
        } else if read_file && leaf.is_customize_name() {
            matched |= open_match::HOOK;
        }
    }

    if st.flags & proc_flags::CANDIDATE != 0 {
        if matched & (open_match::SITE_DIR | open_match::HOOK) != 0 {
            // Behaves like an interpreter whatever its name: track it from here on.
            st.flags = (st.flags & !proc_flags::CANDIDATE)
                | proc_flags::PYTHON
                | proc_flags::STARTUP
                | proc_flags::BY_BEHAVIOUR;
            st.budget = 0;
        } else {
            st.budget = st.budget.saturating_sub(1);
            if st.budget == 0 {
                st.flags &= !proc_flags::CANDIDATE;
                if st.flags & proc_flags::LINEAGE == 0 {
                    let _ = crate::maps::PROCS.remove(&tgid);
                }
            }
            if lineage == 0 && !traced {
                return Ok(());
            }
        }
    }

    if matched & open_match::HOOK != 0 && depth != u32::MAX {
        // Userspace reads and reports the hook by its path: walk it whole.
        depth = u32::MAX;
        path = file_path(file, depth);
    }

    let mut acting = lineage;
    if matched & open_match::HOOK != 0 && st.flags & proc_flags::STARTUP != 0 {
        let key = FileKey::new(facts.dev, facts.ino);
        // SAFETY: the value is copied out immediately.
        let mut hook = hook_flags::DEFERS;
        class = match unsafe { HOOKS.get(&key) } {
            Some(h) => {
                matched |= open_match::HOOK_KNOWN;
                hook = h.flags;
                h.class
            }
            // Not in the inventory (new, or in a place it did not know): treat as unknown,
            // and as possibly deferring, until userspace has read it (whether it planted
            // code in the program is asked again when the program starts).
            None => hook_class::UNKNOWN,
        };
        acting = enter_hook(st, pid, tgid, class, key);
        if hook & hook_flags::DEFERS != 0 && acting != 0 && st.flags & proc_flags::ATTRIBUTED == 0 {
            let plants = hook & hook_flags::PLANTS != 0;
            if plants || st.flags & proc_flags::PLANTED == 0 {
                st.exit_lineage = acting;
            }
            if plants {
                st.flags |= proc_flags::PLANTED;
            }
        }
        if st.flags & proc_flags::ATTRIBUTED != 0 {
            matched |= reentry(acting, key);
        }
    }

    if acting != 0 && kind == S_IFREG {
        let key = FileKey::new(facts.dev, facts.ino);
        if CREDS.get_ptr(&key).is_some() {
            matched |= open_match::CRED_INODE;
        } else {
            let leaf = name_hash_at(0, path.leaf_len);
            let parent = name_hash_at(path.leaf_len, path.parent_len);
            if CRED_NAMES
                .get_ptr(&NameKey { name: leaf, parent })
                .is_some()
                || CRED_NAMES
                    .get_ptr(&NameKey {
                        name: leaf,
                        parent: 0,
                    })
                    .is_some()
            {
                matched |= open_match::CRED_NAME;
            }
        }
        if matched & (open_match::CRED_INODE | open_match::CRED_NAME) != 0 {
            mark_lineage(acting, lineage_flags::CRED_READ);
        }
        if facts.flags & O_ACCMODE != 0 {
            // Written by the lineage: running it later is `hook_exec_written_file`.
            let _ = WRITTEN.insert(&key, &acting, 0);
        }
    }

    if acting == 0 && !traced && matched & (open_match::HOOK | open_match::SITE_DIR) == 0 {
        return Ok(());
    }
    if path.truncated && depth == u32::MAX {
        matched |= open_match::PATH_TRUNCATED;
    }
    // SAFETY: `ev` is the per-CPU scratch area, large enough for an OpenEvent.
    unsafe {
        (*ev).header = header(EventKind::Open, st, acting);
        (*ev).ino = facts.ino;
        (*ev).dev = facts.dev;
        (*ev).flags = facts.flags;
        (*ev).fd = fd;
        (*ev).source = source;
        (*ev).match_flags = matched;
        (*ev).hook_class = class;
        (*ev).mode = facts.mode;
        (*ev).path_len = path.len;
    }
    let fixed = core::mem::offset_of!(OpenEvent, path);
    send_scratch(buf, fixed + path.len as usize);
    Ok(())
}

/// The interpreter thread `pid` opened a startup hook during start-up: from now until the
/// next hook or the end of start-up, what it does is on the hook's behalf — unless the
/// hook is benign or inert. Returns the lineage the thread now acts for.
#[inline(always)]
fn enter_hook(st: &mut ProcState, pid: u32, tgid: u32, class: u32, key: FileKey) -> u64 {
    if st.flags & proc_flags::ATTRIBUTED != 0 {
        // Already wholly acting for an earlier hook (a child the hook spawned running
        // start-up again): keep that attribution.
        return st.lineage;
    }
    if class == hook_class::BENIGN || class == hook_class::INERT {
        st.hook_tid = 0;
        return 0;
    }
    // SAFETY: plain helper calls.
    let now = unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns() };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let id = new_lineage_id(now, cpu);
    // An unknown hook's lineage may be denied the network (or killed) from its first
    // instruction, by policy, without waiting for userspace.
    let unknown_mode = crate::maps::config().unknown_hook_mode;
    let flags = if unknown_mode == mode::KILL {
        lineage_flags::KILL
    } else if unknown_mode == mode::BLOCK {
        lineage_flags::QUARANTINED
    } else {
        0
    };
    let state = LineageState {
        flags,
        hook_class: class,
        hook_ino: key.ino,
        hook_dev: key.dev,
        root_tgid: tgid,
        reentries: 0,
        _pad: 0,
    };
    if LINEAGES.insert(&id, &state, 0).is_err() {
        return 0;
    }
    st.lineage = id;
    st.hook_tid = pid;
    id
}

/// A member of lineage `id` opened `key` during its own start-up: when that is the
/// lineage's hook, the hook is running itself again in an interpreter it started.
/// Returns the `open_match` flags to report.
#[inline(always)]
fn reentry(id: u64, key: FileKey) -> u32 {
    let Some(l) = crate::state::lineage_mut(id) else {
        return 0;
    };
    // SAFETY: map value pointer from a successful lookup.
    let l = unsafe { &mut *l };
    if l.hook_ino != key.ino || l.hook_dev != key.dev {
        return 0;
    }
    l.reentries = l.reentries.saturating_add(1);
    if l.reentries <= monitor_common::REENTRY_LIMIT
        || crate::maps::config().respawn_mode < mode::BLOCK
    {
        return open_match::REENTRY;
    }
    l.flags |= lineage_flags::KILL;
    crate::state::kill_current();
    open_match::REENTRY | open_match::RUNAWAY_STOPPED
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// What the kernel learns about one path component by scanning it once: its name hash (as
/// `monitor_common::name_hash`), which the credential-name lookup needs. The scan runs in a
/// `bpf_loop` callback so the verifier checks one step: a loop over the bytes inline gave it
/// one path per possible name length to carry through the rest of the program, and each
/// load of the open program took 0.3 s.
#[repr(C)]
pub struct NameScan {
    start: u64,
    len: u64,
    hash: u32,
}

extern "C" fn scan_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(sp) = NAME_SCAN.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value, set up by `name_hash_at` on this CPU.
    let sc = unsafe { &mut *sp };
    if index >= sc.len || index >= NAME_HASH_MAX as u64 {
        return 1;
    }
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let pos = opaque((sc.start + index) as usize) & (PATH_BUF_LEN - 1);
    // SAFETY: PATH_OFFSET + pos < PATH_OFFSET + PATH_BUF_LEN, inside the scratch value.
    let b = unsafe { *buf.cast::<u8>().add(PATH_OFFSET + pos) };
    sc.hash = (sc.hash ^ u32::from(b)).wrapping_mul(FNV_PRIME);
    0
}

/// `monitor_common::name_hash` of the component at `off` (length with its NUL) of the
/// path just written to the scratch area, for the credential-name lookup.
#[inline(always)]
fn name_hash_at(off: u32, len_with_nul: u32) -> u32 {
    let Some(sp) = NAME_SCAN.get_ptr_mut(0) else {
        return FNV_OFFSET;
    };
    // SAFETY: per-CPU map value; the callback is the only other user, on this CPU.
    unsafe {
        *sp = NameScan {
            start: u64::from(off),
            len: u64::from(len_with_nul.saturating_sub(1)),
            hash: FNV_OFFSET,
        };
        bpf_loop(
            NAME_HASH_MAX as u32,
            scan_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        (*sp).hash
    }
}

/// One component of the path just written to the scratch area, for the start-up checks:
/// they compare a few bytes at its start and end, read directly (no per-byte callback).
struct Component {
    /// The scratch area's path buffer.
    path: *const u8,
    /// Offset of the component in the path buffer.
    off: usize,
    /// Length without the NUL.
    len: usize,
}

impl Component {
    #[inline(always)]
    fn new(scratch: *mut u8, off: u32, len_with_nul: u32) -> Self {
        Self {
            // SAFETY: the path buffer lies PATH_OFFSET bytes into the scratch area.
            path: unsafe { scratch.cast_const().add(PATH_OFFSET) },
            off: off as usize,
            len: len_with_nul.saturating_sub(1) as usize,
        }
    }

    /// Whether the `want.len()` bytes at `at` (from the component's start) are `want`.
    #[inline(always)]
    fn bytes_at(&self, at: usize, want: &'static [u8]) -> bool {
        let base = opaque(self.off + at);
        let mut i = 0;
        while i < want.len() {
            let pos = (base + i) & (PATH_BUF_LEN - 1);
            // SAFETY: pos < PATH_BUF_LEN: inside the path buffer of the scratch value.
            if unsafe { *self.path.add(pos) } != want[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    #[inline(always)]
    fn is(&self, name: &'static [u8]) -> bool {
        self.len == name.len() && self.bytes_at(0, name)
    }

    #[inline(always)]
    fn ends_with(&self, suffix: &'static [u8]) -> bool {
        self.len > suffix.len() && self.bytes_at(self.len - suffix.len(), suffix)
    }

    #[inline(always)]
    fn starts_with(&self, prefix: &'static [u8]) -> bool {
        self.len > prefix.len() && self.bytes_at(0, prefix)
    }

    #[inline(always)]
    fn is_site_dir(&self) -> bool {
        self.is(b"site-packages") || self.is(b"dist-packages")
    }

    /// `.pth` and `.start` files: hooks when their parent is a site dir.
    #[inline(always)]
    fn is_site_hook_name(&self) -> bool {
        self.ends_with(b".pth") || self.ends_with(b".start")
    }

    /// `sitecustomize` / `usercustomize` modules (source or cached bytecode): hooks
    /// anywhere on the path.
    #[inline(always)]
    fn is_customize_name(&self) -> bool {
        self.starts_with(b"sitecustomize.") || self.starts_with(b"usercustomize.")
    }
}
