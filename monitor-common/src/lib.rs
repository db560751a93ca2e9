//! Types shared by pthwatch's kernel programs (`monitor-ebpf`) and its daemon (`monitor`).
//!
//! Every type here crosses the kernel/userspace boundary as raw bytes, so each is
//! `#[repr(C)]`, `Copy`, has no `bool` and no implicit padding, and carries a size assertion.
//! Event kinds and flag values are part of the wire format: never renumber them.
#![no_std]

use core::mem::size_of;

/// Capacity of the resolved-path buffer in an event. A power of two so the kernel side can
/// bound offsets with a mask.
pub const PATH_BUF_LEN: usize = 4096;
/// Longest single path component the kernel copies (NAME_MAX + NUL).
pub const NAME_LEN: usize = 256;
/// Room for a path: components are written at `off & (PATH_BUF_LEN - 1)` with up to
/// `NAME_LEN` bytes each, so the buffer needs that much slack past `PATH_BUF_LEN`.
pub const PATH_STORE_LEN: usize = PATH_BUF_LEN + NAME_LEN;
/// Most path components walked from a dentry up to the root.
pub const PATH_MAX_DEPTH: u32 = 40;
/// Bytes of `argv` copied at exec (NUL-separated, as in `/proc/<pid>/cmdline`).
pub const ARGV_LEN: usize = 1024;
/// Bytes of `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Map names, shared so loader and programs cannot drift apart.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const PROCS: &str = "PROCS";
    pub const THREADS: &str = "THREADS";
    pub const LINEAGES: &str = "LINEAGES";
    pub const SOCKETS: &str = "SOCKETS";
    pub const TCP_CREATED: &str = "TCP_CREATED";
    pub const LISTENERS: &str = "LISTENERS";
    pub const HOOKS: &str = "HOOKS";
    pub const CREDS: &str = "CREDS";
    pub const CRED_NAMES: &str = "CRED_NAMES";
    pub const INTERPRETERS: &str = "INTERPRETERS";
    pub const WRITTEN: &str = "WRITTEN";
    pub const CONFIG: &str = "CONFIG";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SCRATCH: &str = "SCRATCH";
}

/// Name of the read-only global holding the kernel structure offsets.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Kind of a ring-buffer record; the first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Open = 4,
    Net = 5,
    IoUring = 6,
    /// The interpreter reached `Py_RunMain`: start-up (and `site`) is over.
    StartupDone = 7,
    /// A program not checked yet started (on probation): userspace may check its
    /// executable once and spare its later runs the probation. `ExecEvent` layout.
    NewExecutable = 8,
}

impl EventKind {
    #[must_use]
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::Open,
            5 => Self::Net,
            6 => Self::IoUring,
            7 => Self::StartupDone,
            8 => Self::NewExecutable,
            _ => return None,
        })
    }
}

/// Process-state flags (`ProcState::flags`, also copied into `EventHeader::flags`).
pub mod proc_flags {
    /// The process is (or was exec'd as) a Python interpreter.
    pub const PYTHON: u32 = 1 << 0;
    /// Interpreter start-up: from exec until `Py_RunMain`.
    pub const STARTUP: u32 = 1 << 1;
    /// Every thread of the process acts on behalf of a startup hook (`lineage`).
    pub const ATTRIBUTED: u32 = 1 << 2;
    /// Some threads of the process (listed in THREADS) act on behalf of a hook.
    pub const HAS_HOOK_THREADS: u32 = 1 << 3;
    /// Freshly exec'd, not (yet) known to be Python: its first opens are checked for the
    /// signs of an interpreter (listing a site dir, opening a `.pth`).
    pub const CANDIDATE: u32 = 1 << 4;
    /// Descends from a Python interpreter (kept across exec).
    pub const LINEAGE: u32 = 1 << 5;
    /// Recognised by name at exec.
    pub const BY_NAME: u32 = 1 << 8;
    /// Recognised because its executable is a known interpreter inode.
    pub const BY_INODE: u32 = 1 << 9;
    /// Recognised by behaviour (opened a site dir or a `.pth`) after exec.
    pub const BY_BEHAVIOUR: u32 = 1 << 10;
    /// `exit_lineage` is a hook that planted code in the program (`hook_flags::PLANTS`):
    /// the main thread acts for it from `Py_RunMain` on, not only at exit.
    pub const PLANTED: u32 = 1 << 11;
    /// The event was emitted only because tracing of everything is on.
    pub const TRACED: u32 = 1 << 16;
}

/// Flags of an attribution lineage (`LineageState::flags`).
pub mod lineage_flags {
    /// A member read a catalogued credential.
    pub const CRED_READ: u32 = 1 << 0;
    /// A member used io_uring (its opens are invisible to syscall tracepoints): treated
    /// as a possible credential read.
    pub const IOURING: u32 = 1 << 1;
    /// A member attempted the network.
    pub const NET: u32 = 1 << 2;
    /// The kernel denied a network attempt of a member.
    pub const BLOCKED: u32 = 1 << 3;
    /// The lineage is being killed: every member gets SIGKILL at its next hooked call.
    pub const KILL: u32 = 1 << 4;
    /// Userspace decided (a rule in block mode) that the lineage may not reach the
    /// network any more.
    pub const QUARANTINED: u32 = 1 << 5;
    /// An event of the lineage was lost (full ring buffer).
    pub const LOST: u32 = 1 << 6;
    /// A member asked the cloud's instance metadata service (its credentials); set with
    /// `CRED_READ`.
    pub const METADATA: u32 = 1 << 7;
    /// Any of the flags that make the next network attempt a violation.
    pub const TAINTED: u32 = CRED_READ | IOURING | QUARANTINED;
    /// What rule 1 (and so the kernel's own mode) is about: something may have been
    /// read. A quarantine is another rule's block decision, never a reason to kill.
    pub const READ: u32 = CRED_READ | IOURING;

    /// Whether a lineage with `flags` is denied the network when rule 1's kernel mode is
    /// `kernel_mode`: quarantined or being killed always, tainted in block and kill mode.
    #[inline(always)]
    pub const fn must_deny(flags: u32, kernel_mode: u32) -> bool {
        flags & (QUARANTINED | KILL) != 0
            || (flags & TAINTED != 0 && kernel_mode >= crate::mode::BLOCK)
    }
}

/// Flags of an open event (`OpenEvent::match_flags`).
pub mod open_match {
    /// The file is a catalogued credential (by device and inode).
    pub const CRED_INODE: u32 = 1 << 0;
    /// The file's name matches a credential name pattern.
    pub const CRED_NAME: u32 = 1 << 1;
    /// The file is a startup hook (`.pth`, `sitecustomize`, `usercustomize`, `.start`).
    pub const HOOK: u32 = 1 << 2;
    /// The file is a site-packages / dist-packages directory.
    pub const SITE_DIR: u32 = 1 << 3;
    /// The hook was found in the inventory map (otherwise unknown to userspace).
    pub const HOOK_KNOWN: u32 = 1 << 4;
    /// The path walk hit its depth or size limit; the path is a suffix.
    pub const PATH_TRUNCATED: u32 = 1 << 5;
    /// A member of a lineage ran the lineage's own hook again.
    pub const REENTRY: u32 = 1 << 6;
    /// ... and the lineage passed `REENTRY_LIMIT` with the respawn rule enforcing: the
    /// process was killed, and so is every member at its next hooked call.
    pub const RUNAWAY_STOPPED: u32 = 1 << 7;
}

/// Which call produced an open event.
pub mod open_source {
    pub const OPEN: u32 = 1;
    pub const OPENAT: u32 = 2;
    pub const OPENAT2: u32 = 3;
    pub const CREAT: u32 = 4;
    /// The BPF LSM `file_open` hook (any open: syscalls, io_uring, exec; no descriptor yet).
    pub const LSM_FILE_OPEN: u32 = 5;
    /// An `fentry` on `security_file_open` (kernels without the BPF LSM): the same opens
    /// as `LSM_FILE_OPEN`, no descriptor yet.
    pub const FENTRY_FILE_OPEN: u32 = 6;
    /// A `kprobe` on `security_file_open`, where `fentry` cannot attach.
    pub const KPROBE_FILE_OPEN: u32 = 7;
}

/// Which probe produced a network event.
pub mod net_source {
    pub const TP_CONNECT: u32 = 1;
    pub const TP_SENDTO: u32 = 2;
    pub const TP_SENDMSG: u32 = 3;
    pub const CG_CONNECT4: u32 = 4;
    pub const CG_CONNECT6: u32 = 5;
    pub const CG_SENDMSG4: u32 = 6;
    pub const CG_SENDMSG6: u32 = 7;
    /// A packet of a socket owned by a tainted lineage reached cgroup egress.
    pub const CG_EGRESS: u32 = 8;
    pub const TP_SENDMMSG: u32 = 9;
    /// The BPF LSM `socket_connect` hook: an Internet connect decided, or any other
    /// connect reported (a local socket; a traced process outside any lineage).
    pub const LSM_CONNECT: u32 = 10;
    /// The BPF LSM `socket_sendmsg` hook: a send naming a destination (decided as for
    /// `LSM_CONNECT`), or a send denied on a socket connected earlier (then it names only
    /// the socket cookie).
    pub const LSM_SENDMSG: u32 = 11;
    /// A listening socket of a lineage accepted a connection (`sock_ops`, passive
    /// establishment): the event names the peer, the other end the data would go to.
    pub const SOCKOPS_ACCEPT: u32 = 12;
    /// An `fentry` on `security_socket_connect` (kernels without the BPF LSM, in place of
    /// the connect tracepoint): what the cgroup programs do not decide and report.
    pub const FENTRY_CONNECT: u32 = 13;
    /// An `fentry` on `security_socket_sendmsg`: a send naming a destination the cgroup
    /// programs do not decide (a local socket; a traced process outside any lineage).
    pub const FENTRY_SENDMSG: u32 = 14;
}

/// What the kernel did with a network attempt.
pub mod verdict {
    pub const ALLOWED: u32 = 0;
    pub const DENIED: u32 = 1;
    pub const KILLED: u32 = 2;
}

/// What is known of an executable (`INTERPRETERS` values, by file identity).
pub mod exe_verdict {
    /// Checked by userspace: cannot run Python (its runs skip probation).
    pub const NOT_INTERPRETER: u32 = 0;
    /// An interpreter (its runs are tracked as Python from exec).
    pub const INTERPRETER: u32 = 1;
    /// Seen by the kernel, reported once, not (or not yet) checked: its runs are on
    /// probation.
    pub const PENDING: u32 = 2;
}

/// Enforcement mode (`KernelConfig::mode`).
/// `ExecEvent::path_flags`.
pub mod exec_flags {
    /// The path walk stopped before the root: the path is a tail.
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// The kernel refused this exec (or killed the new program before it ran): a hook
    /// lineage executing a file it wrote, or a memfd. No argv: the new program never ran.
    pub const DENIED: u32 = 1 << 1;
}

pub mod mode {
    pub const ALERT: u32 = 0;
    pub const BLOCK: u32 = 1;
    pub const KILL: u32 = 2;
}

/// Classification of a startup hook (`HookInfo::class`).
pub mod hook_class {
    /// Known-benign form (setuptools, virtualenv, editable finders, coverage, ...).
    pub const BENIGN: u32 = 1;
    /// No executable line (only path entries).
    pub const INERT: u32 = 2;
    /// Executable, not recognised.
    pub const UNKNOWN: u32 = 3;
    /// Executable with risky constructs (decode-and-exec, subprocess, sockets, ...).
    pub const RISKY: u32 = 4;
}

/// `HookInfo::flags`.
pub mod hook_flags {
    /// The hook's code is hidden (decoded or unpacked, then run), registers exit handlers,
    /// or plants code in the program (`PLANTS`): the interpreter's exit handlers are run on
    /// its lineage's behalf.
    pub const DEFERS: u32 = 1 << 0;
    /// The hook plants code that runs while the program runs, on the program's own
    /// threads: import, tracing, audit or signal hooks, exception and display hooks, or a
    /// replaced attribute of a module (`builtins.print = ...`). From `Py_RunMain` on, the
    /// main thread acts for the hook's lineage (and so do the threads and children it
    /// starts). Always set together with `DEFERS`.
    pub const PLANTS: u32 = 1 << 1;
}

/// io_uring event kinds (`IoUringEvent::kind`).
pub mod iouring_kind {
    pub const CREATE: u32 = 1;
    pub const SUBMIT: u32 = 2;
}

/// Counter slots in the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer reservations that failed (events lost).
    pub const RINGBUF_DROPS: u32 = 0;
    /// Inserts into PROCS that failed (table full).
    pub const PROCS_FULL: u32 = 1;
    /// Network attempts denied.
    pub const NET_DENIED: u32 = 2;
    /// SIGKILLs sent.
    pub const KILLS: u32 = 3;
    /// Packets dropped at cgroup egress.
    pub const EGRESS_DROPS: u32 = 4;
    /// Exec events seen for processes that became tracked.
    pub const TRACKED_EXECS: u32 = 5;
    /// Kernel reads that failed (a struct walk returned an error).
    pub const READ_ERRORS: u32 = 6;
    /// Lineages quarantined because one of their events was lost.
    pub const LOST_QUARANTINES: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Header at the start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u32,
    /// `proc_flags` of the process when the event was emitted.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns`.
    pub ts_ns: u64,
    /// Thread id.
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Start time of the thread group leader (ns since boot): with `tgid`, the process key.
    pub start_ns: u64,
    pub cgroup_id: u64,
    /// Attribution lineage the acting thread belongs to (0 = none).
    pub lineage: u64,
}
const _: () = assert!(size_of::<EventHeader>() == 56);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub argv_len: u32,
    pub path_len: u32,
    /// `exec_flags::*`.
    pub path_flags: u32,
    pub comm: [u8; COMM_LEN],
    /// Path components leaf first, each NUL-terminated (decoded by the daemon).
    pub path: [u8; PATH_STORE_LEN],
    pub argv: [u8; ARGV_LEN],
}
const _: () = assert!(size_of::<ExecEvent>() == 56 + 24 + 16 + ARGV_LEN + PATH_STORE_LEN);
const _: () = assert!(core::mem::offset_of!(ExecEvent, path) == PATH_OFFSET);
const _: () = assert!(core::mem::offset_of!(OpenEvent, path) == PATH_OFFSET);

/// Where the path buffer sits in the events that carry one: the same place in each, so
/// the kernel's path walk writes to one fixed offset of its scratch area.
pub const PATH_OFFSET: usize = 96;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tgid: u32,
    pub child_start_ns: u64,
}
const _: () = assert!(size_of::<ForkEvent>() == 72);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub exit_code: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExitEvent>() == 64);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub header: EventHeader,
    pub ino: u64,
    pub dev: u32,
    /// `f_flags` of the opened file (O_ACCMODE, O_CREAT, O_TRUNC, ...).
    pub flags: u32,
    pub fd: i32,
    pub source: u32,
    pub match_flags: u32,
    /// `hook_class` when `match_flags` has HOOK_KNOWN.
    pub hook_class: u32,
    /// File mode bits (S_IFMT and permissions).
    pub mode: u32,
    pub path_len: u32,
    /// Path components leaf first, each NUL-terminated (decoded by the daemon).
    pub path: [u8; PATH_STORE_LEN],
}
const _: () = assert!(size_of::<OpenEvent>() == 56 + 8 + 32 + PATH_STORE_LEN);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetEvent {
    pub header: EventHeader,
    /// AF_INET / AF_INET6 / AF_UNIX ...
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    pub protocol: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
    /// Socket cookie (cgroup programs; 0 from the syscall tracepoints, which see only
    /// the descriptor).
    pub cookie: u64,
    pub source: u32,
    pub verdict: u32,
    /// The socket's descriptor in the caller (syscall tracepoints; -1 elsewhere).
    pub fd: i32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<NetEvent>() == 56 + 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoUringEvent {
    pub header: EventHeader,
    pub kind: u32,
    pub opcode: u32,
    pub fd: i32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<IoUringEvent>() == 72);

/// PROCS value: one entry per tracked thread group (key: tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcState {
    pub flags: u32,
    /// Thread currently executing a startup hook's code (0 = none).
    pub hook_tid: u32,
    /// Attribution lineage of the whole process (ATTRIBUTED) or of `hook_tid`.
    pub lineage: u64,
    pub start_ns: u64,
    /// Opens left before a CANDIDATE is dropped.
    pub budget: u32,
    pub ppid: u32,
    /// The lineage of the last hook that may defer work to the interpreter's exit
    /// (`hook_flags::DEFERS`): the main thread acts for it from `Py_FinalizeEx` on, or
    /// from `Py_RunMain` on when that hook planted code in the program (`PLANTED`; such a
    /// hook is not replaced here by a later one that only defers).
    pub exit_lineage: u64,
}
const _: () = assert!(size_of::<ProcState>() == 40);

/// LINEAGES value: one per startup-hook execution whose effects are being followed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LineageState {
    pub flags: u32,
    pub hook_class: u32,
    pub hook_ino: u64,
    pub hook_dev: u32,
    /// The interpreter process that ran the hook.
    pub root_tgid: u32,
    /// Times a member interpreter ran the lineage's own hook again during its start-up
    /// (a hook that spawns interpreters re-runs itself in each of them).
    pub reentries: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<LineageState>() == 32);

/// Re-entries of its own hook after which a lineage is a runaway respawn (a recursive
/// hook is a fork bomb): stopped in block and kill mode.
pub const REENTRY_LIMIT: u32 = 16;

/// Cloud instance metadata and credential endpoints, whose answers are the machine's
/// credentials: AWS, GCP, Azure and OCI IMDS (169.254.169.254), ECS task and EKS pod
/// identity credentials (169.254.170.2, 169.254.170.23), Alibaba (100.100.100.200).
/// Host byte order.
pub const METADATA_V4: [u32; 4] = [0xa9fe_a9fe, 0xa9fe_aa02, 0xa9fe_aa17, 0x6464_64c8];

/// Whether an IPv4 address (host byte order) is a metadata endpoint.
#[inline(always)]
pub fn is_metadata_v4(addr: u32) -> bool {
    addr == METADATA_V4[0]
        || addr == METADATA_V4[1]
        || addr == METADATA_V4[2]
        || addr == METADATA_V4[3]
}

/// Whether an IPv6 address, as its four 32-bit words in host byte order, is a metadata
/// endpoint: AWS IMDS and EKS pod identity (fd00:ec2::254, fd00:ec2::23), or one of
/// [`METADATA_V4`] mapped (::ffff:a.b.c.d).
#[inline(always)]
pub fn is_metadata_v6(w: [u32; 4]) -> bool {
    (w[0] == 0xfd00_0ec2 && w[1] == 0 && w[2] == 0 && (w[3] == 0x254 || w[3] == 0x23))
        || (w[0] == 0 && w[1] == 0 && w[2] == 0xffff && is_metadata_v4(w[3]))
}

/// Key of a file by identity: kernel-encoded device (`MKDEV(major, minor)` = major << 20 |
/// minor) and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FileKey>() == 16);

impl FileKey {
    #[must_use]
    pub const fn new(dev: u32, ino: u64) -> Self {
        Self { ino, dev, _pad: 0 }
    }
}

/// Encodes a device number the way the kernel stores it in `super_block::s_dev`.
#[must_use]
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// HOOKS value: the inventory's verdict on a hook file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookInfo {
    pub class: u32,
    /// `hook_flags::*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<HookInfo>() == 8);

/// CRED_NAMES key: FNV-1a hashes of a file's name and of its parent directory's name
/// (`parent == 0` matches any parent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub name: u32,
    pub parent: u32,
}
const _: () = assert!(size_of::<NameKey>() == 8);

/// Bytes of a name that `name_hash` covers (the kernel loop is bounded by it).
pub const NAME_HASH_MAX: usize = 64;

/// FNV-1a over a byte string, stopping at the first NUL or after `NAME_HASH_MAX` bytes.
/// The kernel computes the same hash over dentry names.
#[must_use]
pub const fn name_hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() && i < NAME_HASH_MAX {
        if bytes[i] == 0 {
            break;
        }
        h ^= bytes[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

/// CONFIG value (array map, index 0): settings userspace can change at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    /// `mode::*` for a tainted lineage's network attempt.
    pub mode: u32,
    /// Emit every open of every tracked process (for `pthwatch trace`).
    pub trace_all: u32,
    /// The daemon's own tgid: never tracked.
    pub self_tgid: u32,
    /// Opens a CANDIDATE may make before it is dropped.
    pub probation_opens: u32,
    /// `mode::*` for a lineage that runs a hook the kernel does not know as benign or
    /// inert: block quarantines it from the network at once, kill kills it.
    pub unknown_hook_mode: u32,
    /// `mode::*` for a lineage whose hook keeps re-running itself (`REENTRY_LIMIT`).
    pub respawn_mode: u32,
    /// 1: in block and kill mode, a lineage one of whose events was lost (full ring
    /// buffer) is quarantined, since what it did can no longer be known.
    pub fail_closed: u32,
    /// `mode::*` for a lineage executing a file it wrote (or a memfd): block refuses
    /// the exec (the LSM hook returns -EPERM; elsewhere the new program is killed before
    /// its first instruction), kill also kills the lineage.
    pub exec_written_mode: u32,
}
const _: () = assert!(size_of::<KernelConfig>() == 32);

/// Byte offsets of the kernel structure members the programs read, taken from the
/// running kernel's BTF at load time (Rust eBPF has no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub task_files: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub file_f_flags: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_name: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_mode: u32,
    pub sb_s_dev: u32,
    pub bprm_file: u32,
    pub user_msghdr_msg_name: u32,
    pub user_msghdr_msg_namelen: u32,
    /// `struct socket::sk` (BPF LSM socket hooks).
    pub socket_sk: u32,
    /// `struct sock::sk_protocol`.
    pub sock_sk_protocol: u32,
    /// `struct sock_common::skc_family` (a `struct sock` starts with its `sock_common`).
    pub sock_common_skc_family: u32,
    /// The kernel's `struct msghdr::msg_name` / `msg_namelen` (BPF LSM `socket_sendmsg`).
    pub msghdr_msg_name: u32,
    pub msghdr_msg_namelen: u32,
    pub _pad: u32,
    /// Non-zero once filled in: the programs do nothing until userspace has set offsets.
    pub valid: u32,
}
const _: () = assert!(size_of::<Offsets>() == 38 * 4);

#[cfg(feature = "user")]
mod pod {
    use super::{FileKey, HookInfo, KernelConfig, LineageState, NameKey, Offsets, ProcState};
    // SAFETY: all are #[repr(C)], Copy, and free of padding and invalid bit patterns.
    unsafe impl aya::Pod for ProcState {}
    unsafe impl aya::Pod for LineageState {}
    unsafe impl aya::Pod for FileKey {}
    unsafe impl aya::Pod for HookInfo {}
    unsafe impl aya::Pod for NameKey {}
    unsafe impl aya::Pod for KernelConfig {}
    unsafe impl aya::Pod for Offsets {}
}
