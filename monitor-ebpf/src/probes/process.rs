//! Process lifecycle from the scheduler tracepoints: who becomes tracked, lineage
//! inheritance at fork, cleanup at exit.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_task, generated::bpf_probe_read_user},
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use monitor_common::{
    ARGV_LEN, EventKind, ExecEvent, ExitEvent, FileKey, ForkEvent, ProcState, counter, exe_verdict,
    exec_flags, lineage_flags, mode, proc_flags,
};

use crate::{
    emit::{header, scratch, send, send_scratch},
    kernel::{
        Kptr, file_facts, file_path, is_memfd, offsets, opaque, read, read_ptr, task_start_ns,
    },
    maps::{INTERPRETERS, PROCS, THREADS, WRITTEN, config, count},
    state::{acting_lineage, current_ids, enforce_kill, kill_current, mark_lineage, proc_mut},
};

const EPERM: i32 = 1;

/// Flags that survive an exec: lineage membership and hook attribution.
const KEPT_ACROSS_EXEC: u32 =
    proc_flags::LINEAGE | proc_flags::ATTRIBUTED | proc_flags::HAS_HOOK_THREADS;

/// `python`, `python3`, `python3.11`, `python3.11d`, ...: the names interpreters run under
/// (pyenv's `python3` shim is a script with that name, which then execs the real one).
#[inline(always)]
fn is_python_comm(comm: &[u8; 16]) -> bool {
    comm[0] == b'p'
        && comm[1] == b'y'
        && comm[2] == b't'
        && comm[3] == b'h'
        && comm[4] == b'o'
        && comm[5] == b'n'
        && (comm[6] == 0 || comm[6] == b'3' || comm[6] == b'2')
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
/// in the context of the new program.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_process_exec(&ctx);
    0
}

fn try_process_exec(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let (pid, tgid) = current_ids();
    let cfg = config();
    if tgid == cfg.self_tgid {
        return Ok(());
    }
    let comm = bpf_get_current_comm().map_err(|e| e as i64)?;
    let bprm: Kptr = ctx.arg(2);
    let exe = read_ptr(bprm, o.bprm_file)?;
    let facts = file_facts(exe)?;
    let mut python = 0;
    const UNCHECKED: u32 = u32::MAX;
    let key = FileKey::new(facts.dev, facts.ino);
    let verdict = match INTERPRETERS.get_ptr(&key) {
        // SAFETY: map value pointer from a successful lookup.
        Some(v) => unsafe { core::ptr::read_volatile(v) },
        None => UNCHECKED,
    };
    let probation = if verdict == exe_verdict::NOT_INTERPRETER {
        0
    } else {
        cfg.probation_opens
    };
    if is_python_comm(&comm) {
        python = proc_flags::PYTHON | proc_flags::STARTUP | proc_flags::BY_NAME;
    } else if verdict == exe_verdict::INTERPRETER {
        python = proc_flags::PYTHON | proc_flags::STARTUP | proc_flags::BY_INODE;
    }
    // The first run of an executable nobody has checked: report it once (the entry
    // marks it pending), so that userspace can check the file and spare its later runs
    // the probation. This run stays on probation.
    if verdict == UNCHECKED
        && python == 0
        && probation > 0
        && INTERPRETERS
            .insert(&key, &exe_verdict::PENDING, u64::from(BPF_NOEXIST))
            .is_ok()
    {
        let sighting = ProcState {
            flags: proc_flags::CANDIDATE,
            ..ProcState::default()
        };
        let _ = emit_exec(
            EventKind::NewExecutable,
            &sighting,
            // Userspace checks the file, not how it was run.
            &Exe {
                key,
                file: exe,
                flags: 0,
                argv: false,
            },
            &comm,
        );
    }

    let st = match proc_mut(tgid) {
        Some(p) => {
            // SAFETY: map value pointer from a successful lookup.
            let st = unsafe { &mut *p };
            let was_candidate_only =
                st.flags & proc_flags::CANDIDATE != 0 && st.flags & proc_flags::LINEAGE == 0;
            if was_candidate_only && python == 0 {
                // A probation process exec'ing something else starts a new probation.
                if probation == 0 {
                    let _ = PROCS.remove(&tgid);
                } else {
                    st.budget = probation;
                }
                return Ok(());
            }
            // The exec'ing thread may have been running hook code: the new program is
            // then wholly on the hook's behalf.
            let lineage = acting_lineage(st, pid);
            let exe = Exe {
                key,
                file: exe,
                flags: exec_flags::DENIED,
                argv: true,
            };
            let rule_mode = cfg.exec_written_mode;
            if lineage != 0 && rule_mode >= mode::BLOCK && refuse_written(lineage, rule_mode, &exe)
            {
                // Without the LSM hook the exec cannot be refused: the new program dies
                // before its first instruction instead.
                kill_current();
                let mut shown = *st;
                shown.lineage = lineage;
                return emit_exec(EventKind::Exec, &shown, &exe, &comm);
            }
            let mut flags = (st.flags & KEPT_ACROSS_EXEC) | python;
            if lineage != 0 {
                flags |= proc_flags::ATTRIBUTED;
                st.lineage = lineage;
            }
            if was_candidate_only {
                flags &= !proc_flags::LINEAGE;
            }
            // A lineage member exec'ing something not named like Python may still be a
            // renamed interpreter: put it on probation too.
            st.budget = 0;
            if python == 0 && probation > 0 {
                flags |= proc_flags::CANDIDATE;
                st.budget = probation;
            }
            st.flags = flags;
            st.hook_tid = 0;
            // The old image's exit handlers and planted code are gone with it.
            st.exit_lineage = 0;
            if enforce_kill(lineage) {
                return Ok(());
            }
            *st
        }
        // Neither an interpreter nor on probation: nothing to track.
        None if python == 0 && probation == 0 => return Ok(()),
        None => {
            let task = unsafe { bpf_get_current_task() } as Kptr;
            let start_ns = task_start_ns(task);
            let parent = read_ptr(task, o.task_real_parent).unwrap_or(core::ptr::null());
            let ppid: u32 = read(parent, o.task_tgid).unwrap_or(0);
            let st = if python != 0 {
                ProcState {
                    flags: python,
                    hook_tid: 0,
                    lineage: 0,
                    start_ns,
                    budget: 0,
                    ppid,
                    exit_lineage: 0,
                }
            } else {
                ProcState {
                    flags: proc_flags::CANDIDATE,
                    hook_tid: 0,
                    lineage: 0,
                    start_ns,
                    budget: probation,
                    ppid,
                    exit_lineage: 0,
                }
            };
            if PROCS.insert(&tgid, &st, 0).is_err() {
                count(counter::PROCS_FULL);
            }
            if python == 0 {
                return Ok(());
            }
            st
        }
    };
    count(counter::TRACKED_EXECS);
    emit_exec(EventKind::Exec, &st, &Exe::ran(key, exe), &comm)
}

/// BPF LSM `bprm_check_security(struct linux_binprm *bprm)`, before the kernel commits
/// to an exec (for a `#!` script, first with the script itself, then with its
/// interpreter): refuses a hook lineage's exec of a file it wrote, or of a memfd, when
/// `hook_exec_written_file` is in block or kill mode. Otherwise passes on the previous
/// program's verdict unchanged.
#[lsm(hook = "bprm_check_security")]
pub fn exec_lsm(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    match try_exec_lsm(ctx.arg(0)) {
        Ok(true) => -EPERM,
        _ => 0,
    }
}

fn try_exec_lsm(bprm: Kptr) -> Result<bool, i64> {
    let o = offsets();
    if o.valid == 0 {
        return Ok(false);
    }
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else {
        return Ok(false);
    };
    // SAFETY: map value pointer from a successful lookup; copied out.
    let mut st = unsafe { *p };
    let lineage = acting_lineage(&st, pid);
    let rule_mode = config().exec_written_mode;
    if lineage == 0 || rule_mode < mode::BLOCK {
        return Ok(false);
    }
    let file = read_ptr(bprm, o.bprm_file)?;
    let facts = file_facts(file)?;
    let exe = Exe {
        key: FileKey::new(facts.dev, facts.ino),
        file,
        flags: exec_flags::DENIED,
        // The arguments are in the new program's memory, not mapped yet.
        argv: false,
    };
    if !refuse_written(lineage, rule_mode, &exe) {
        return Ok(false);
    }
    // Refused whatever happens to the report.
    let comm = bpf_get_current_comm().unwrap_or_default();
    st.lineage = lineage;
    let _ = emit_exec(EventKind::Exec, &st, &exe, &comm);
    enforce_kill(lineage);
    Ok(true)
}

/// Whether the exec of `exe` by a task acting for `lineage` (not 0) is
/// `hook_exec_written_file`, the rule being in `rule_mode` (block or kill, which the
/// callers check first): the lineage wrote the file (or it is a memfd, which exists only
/// to be written). The lineage is then quarantined, or marked for killing.
#[inline(always)]
fn refuse_written(lineage: u64, rule_mode: u32, exe: &Exe) -> bool {
    // SAFETY: the value is copied out immediately.
    let written = matches!(unsafe { WRITTEN.get(&exe.key) }, Some(&l) if l == lineage);
    if !written && !is_memfd(exe.file) {
        return false;
    }
    mark_lineage(
        lineage,
        if rule_mode == mode::KILL {
            lineage_flags::KILL
        } else {
            lineage_flags::QUARANTINED
        },
    );
    true
}

/// The executable of an exec: its identity and its open file, with the `exec_flags` to
/// report and whether the current task's arguments are the new program's.
struct Exe {
    key: FileKey,
    file: Kptr,
    flags: u32,
    argv: bool,
}

impl Exe {
    /// An exec that went ahead.
    #[inline(always)]
    fn ran(key: FileKey, file: Kptr) -> Self {
        Self {
            key,
            file,
            flags: 0,
            argv: true,
        }
    }
}

/// An `ExecEvent` of `kind` (`Exec`, or `NewExecutable` for a sighting) about the
/// current task, which just exec'd `exe`.
fn emit_exec(kind: EventKind, st: &ProcState, exe: &Exe, comm: &[u8; 16]) -> Result<(), i64> {
    let Some(buf) = scratch() else { return Ok(()) };
    let ev = buf.cast::<ExecEvent>();
    let o = offsets();
    // SAFETY: the scratch area holds an ExecEvent (SCRATCH_CAP >= its size), per CPU.
    unsafe {
        (*ev).header = header(kind, st, st.lineage);
        (*ev).exe_ino = exe.key.ino;
        (*ev).exe_dev = exe.key.dev;
        (*ev).comm = *comm;
        (*ev).argv_len = 0;
        let task = bpf_get_current_task() as Kptr;
        if exe.argv
            && let Ok(mm) = read_ptr(task, o.task_mm)
        {
            let start: u64 = read(mm, o.mm_arg_start).unwrap_or(0);
            let end: u64 = read(mm, o.mm_arg_end).unwrap_or(0);
            if end > start {
                let len = (end - start) as usize;
                let len = if len > ARGV_LEN { ARGV_LEN } else { len };
                // In [1, ARGV_LEN] by a mask the verifier tracks (ARGV_LEN is a power of
                // two); `opaque` keeps LLVM from dropping it as redundant.
                let len = (opaque(len - 1) & (ARGV_LEN - 1)) + 1;
                let dst = (&raw mut (*ev).argv).cast::<u8>();
                if bpf_probe_read_user(dst.cast(), len as u32, (start as *const u8).cast()) == 0 {
                    (*ev).argv_len = len as u32;
                }
            }
        }
        let path = file_path(exe.file, u32::MAX);
        (*ev).path_len = path.len;
        (*ev).path_flags = exe.flags
            | if path.truncated {
                exec_flags::PATH_TRUNCATED
            } else {
                0
            };
        // argv follows the path buffer: the whole event goes out.
        send_scratch(buf, core::mem::size_of::<ExecEvent>());
    }
    Ok(())
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, in the
/// parent's context. Threads and children started by hook code inherit its lineage.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_process_fork(&ctx);
    0
}

fn try_process_fork(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else {
        return Ok(());
    };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &mut *p };
    if st.flags & (proc_flags::PYTHON | proc_flags::LINEAGE) == 0 {
        return Ok(());
    }
    let o = offsets();
    let child: Kptr = ctx.arg(1);
    let child_pid: u32 = read(child, o.task_pid)?;
    let child_tgid: u32 = read(child, o.task_tgid)?;
    let lineage = acting_lineage(st, pid);
    if child_tgid == tgid {
        if lineage != 0 && st.flags & proc_flags::ATTRIBUTED == 0 {
            if THREADS.insert(&child_pid, &lineage, 0).is_err() {
                count(counter::PROCS_FULL);
            }
            st.flags |= proc_flags::HAS_HOOK_THREADS;
        }
        return Ok(());
    }
    let child_start_ns: u64 = read(child, o.task_start_boottime).unwrap_or(0);
    let mut flags = (st.flags & proc_flags::PYTHON) | proc_flags::LINEAGE;
    if lineage != 0 {
        flags |= proc_flags::ATTRIBUTED;
    }
    let new = ProcState {
        flags,
        hook_tid: 0,
        lineage,
        start_ns: child_start_ns,
        budget: 0,
        ppid: tgid,
        exit_lineage: 0,
    };
    if PROCS.insert(&child_tgid, &new, 0).is_err() {
        count(counter::PROCS_FULL);
    }
    enforce_kill(lineage);
    let ev = ForkEvent {
        header: header(EventKind::Fork, st, lineage),
        child_pid,
        child_tgid,
        child_start_ns,
    };
    send(&ev);
    Ok(())
}

/// `sched_process_exit(struct task_struct *p, ...)`, in the exiting task's context.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(_ctx: BtfTracePointContext) -> i32 {
    let (pid, tgid) = current_ids();
    let Some(p) = proc_mut(tgid) else { return 0 };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { *p };
    if pid != tgid {
        if st.flags & proc_flags::HAS_HOOK_THREADS != 0 {
            let _ = THREADS.remove(&pid);
        }
        return 0;
    }
    if st.flags & proc_flags::CANDIDATE == 0 || st.flags & proc_flags::LINEAGE != 0 {
        let ev = ExitEvent {
            header: header(EventKind::Exit, &st, st.lineage),
            exit_code: 0,
            _pad: 0,
        };
        send(&ev);
    }
    let _ = PROCS.remove(&tgid);
    0
}
