//! Maps shared by several probes. Names are the `monitor_common::maps` constants.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{FileKey, HookInfo, KernelConfig, LineageState, NameKey, ProcState, counter};

use crate::{emit::SCRATCH_CAP, kernel::Walk, probes::open::NameScan};

/// Events for userspace. Sized by the loader (default 8 MiB).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Tracked thread groups, keyed by tgid. Bounded; a failed insert is counted.
#[map(name = "PROCS")]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// Threads acting for a startup hook inside a process that is not wholly attributed
/// (a thread started by hook code), keyed by thread id; value: lineage id.
#[map(name = "THREADS")]
pub static THREADS: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Attribution lineages (one per execution of a non-benign hook), keyed by lineage id.
/// LRU: a lineage whose members are long gone is evicted first.
#[map(name = "LINEAGES")]
pub static LINEAGES: LruHashMap<u64, LineageState> = LruHashMap::with_max_entries(16384, 0);

/// Sockets used by attributed lineages, by socket cookie; value: lineage id.
#[map(name = "SOCKETS")]
pub static SOCKETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// TCP sockets lineage members created, by socket cookie; value: lineage id. Kept apart
/// from `SOCKETS`: a listening socket carries no data of its own, and its handshakes must
/// go on so that what it accepts is dropped, not left hanging.
#[map(name = "TCP_CREATED")]
pub static TCP_CREATED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// A listening TCP socket's local end: network namespace, family and port (host order).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenKey {
    pub netns: u64,
    pub family: u32,
    pub port: u32,
}

/// The lineage whose socket listens there, and that socket (only its own close removes
/// the entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Listener {
    pub lineage: u64,
    pub cookie: u64,
}

/// Ports that lineages listen on; the connections accepted there join `SOCKETS`.
#[map(name = "LISTENERS")]
pub static LISTENERS: LruHashMap<ListenKey, Listener> = LruHashMap::with_max_entries(4096, 0);

/// Startup hooks known to the inventory, by file identity.
#[map(name = "HOOKS")]
pub static HOOKS: HashMap<FileKey, HookInfo> = HashMap::with_max_entries(65536, 0);

/// Catalogued credential files, by file identity; value: category id.
#[map(name = "CREDS")]
pub static CREDS: HashMap<FileKey, u32> = HashMap::with_max_entries(65536, 0);

/// Credential file names (for files that appear later); value: category id.
#[map(name = "CRED_NAMES")]
pub static CRED_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(4096, 0);

/// What is known of executables, by file identity (`monitor_common::exe_verdict`):
/// interpreters known to the inventory or recognised by behaviour (catches renamed
/// hardlinks and scripts whose shebang names python), programs checked as unable to run
/// Python, and programs reported once and left on probation.
#[map(name = "INTERPRETERS")]
pub static INTERPRETERS: HashMap<FileKey, u32> = HashMap::with_max_entries(16384, 0);

/// Regular files hook lineages opened for writing, by file identity; value: the lineage.
/// An exec of one by the same lineage is refused in block mode (`exec_written_mode`).
/// LRU: the oldest writes are forgotten first (userspace still knows them and alerts).
#[map(name = "WRITTEN")]
pub static WRITTEN: LruHashMap<FileKey, u64> = LruHashMap::with_max_entries(8192, 0);

/// Run-time settings, index 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters (`monitor_common::counter`).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per-CPU space to build variable-sized events in (too large for the BPF stack).
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<[u8; SCRATCH_CAP]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn config() -> KernelConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// Per-CPU state of the path walk (see `kernel::file_path`).
#[map(name = "WALK")]
pub static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of a name scan (see `probes::open::name_hash_at`).
#[map(name = "NAME_SCAN")]
pub static NAME_SCAN: PerCpuArray<NameScan> = PerCpuArray::with_max_entries(1, 0);
