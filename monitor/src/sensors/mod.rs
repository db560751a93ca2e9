//! The sensor layer: loads pthwatch's kernel programs, attaches them, and owns the maps
//! the daemon feeds (inventory, credential catalogue, settings) and reads (events,
//! counters).
//!
//! A backend is chosen at start-up by probing (`check`): the tracepoint backend (syscall
//! tracepoints, scheduler `tp_btf`, `cgroup_sock_addr`/`cgroup_skb` at the cgroup v2 root,
//! a `Py_RunMain` uprobe) runs everywhere pthwatch runs; where the kernel allows BPF LSM
//! programs, the LSM backend sees opens at `file_open` and decides connects and sends at
//! `socket_connect` / `socket_sendmsg` instead (the rest is shared). Without the BPF LSM,
//! an fentry (or kprobe) on `security_file_open` takes the open tracepoints' place where
//! it attaches (`file_open`).
mod file_open;
mod lsm;
mod tracepoint;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfError,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, UProbe, uprobe::UProbeScope},
};
use monitor_common::{
    FileKey, HookInfo, KernelConfig, LineageState, NameKey, ProcState, counter, maps as map_names,
};
use serde::Serialize;

pub use self::{file_open::OpenSensor, tracepoint::load_sensors};
pub(crate) use self::{
    file_open::{
        FENTRY_PROGRAM as FENTRY_FILE_OPEN_PROGRAM, FUNCTION as FILE_OPEN_FUNCTION,
        KPROBE_PROGRAM as KPROBE_FILE_OPEN_PROGRAM, NETWORK_FENTRY,
    },
    lsm::LSM_PROGRAMS,
    tracepoint::{ACCEPT_PROGRAMS, EGRESS_PROGRAM, IOURING_SUBMIT_EVENTS, SOCK_ADDR_PROGRAMS},
};

/// The object built by `build.rs` from `monitor-ebpf`.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(
        "this pthwatch binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild with `cargo build --release`"
    )]
    NoObject,
    #[error("reading kernel structure offsets from BTF: {0}")]
    Btf(String),
    #[error("loading the kernel programs: {0}")]
    Load(#[source] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "blocking needs {program} to deny connects in the kernel, and this kernel did not take it ({detail}); run in alert mode, or see `pthwatch check`"
    )]
    Enforcement {
        program: &'static str,
        detail: String,
    },
    #[error("program {0} is missing from the kernel object")]
    MissingProgram(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {0} is missing from the kernel object")]
    MissingMap(&'static str),
    #[error("{0}")]
    Mount(String),
    #[error("no cgroup v2 hierarchy to attach to (not mounted, and mounting one failed)")]
    NoCgroup2,
    #[error("opening the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which family of kernel hooks feeds pthwatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Syscall tracepoints, scheduler tracepoints, cgroup socket programs.
    Tracepoint,
    /// BPF LSM hooks for opens and network decisions; scheduler, network and io_uring
    /// tracepoints for the rest.
    Lsm,
}

impl Backend {
    /// How the logs and `pthwatch check` name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoints",
            Self::Lsm => "BPF LSM",
        }
    }
}

/// Outcome of attaching one program.
#[derive(Clone, Debug, Serialize)]
pub struct Attachment {
    pub program: &'static str,
    pub target: String,
    /// `None` when attached; the error otherwise.
    pub error: Option<String>,
    /// Without this program pthwatch cannot run at all.
    pub required: bool,
}

impl Sensors {
    /// Whether the kernel can deny a connect: the LSM connect program, or both cgroup
    /// connect programs, are attached. Without them block and kill are pretence, and a
    /// reload into them is refused.
    pub fn can_deny_connects(&self) -> bool {
        let attached = |name: &str| {
            self.attachments
                .iter()
                .any(|a| a.program == name && a.error.is_none())
        };
        attached(lsm::LSM_CONNECT_PROGRAM)
            || ["net_cg_connect4", "net_cg_connect6"]
                .iter()
                .all(|name| attached(name))
    }
}

/// The interpreter uprobes, (program, symbol): the end of start-up, and the start of
/// finalization (exit handlers run on the hook's behalf again).
pub(crate) const STARTUP_UPROBES: &[(&str, &str)] = &[
    ("startup_py_runmain", "Py_RunMain"),
    ("startup_py_finalize", "Py_FinalizeEx"),
];

/// A map removal, where a key that is not there counts as removed.
fn removed(name: &'static str, result: Result<(), aya::maps::MapError>) -> Result<(), SensorError> {
    match result {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(SensorError::Map { name, source }),
    }
}

/// What userspace tells the kernel side at start-up.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    pub mode: u32,
    pub trace_all: bool,
    pub ringbuf_bytes: u32,
    pub probation_opens: u32,
    pub unknown_hook_mode: u32,
    pub respawn_mode: u32,
    /// `hook_exec_written_file`: block and kill refuse the exec in the kernel.
    pub exec_written_mode: u32,
    /// Quarantine a lineage whose events were lost (block and kill mode).
    pub fail_closed: bool,
}

impl SensorOptions {
    /// Some rule denies in the kernel: the connect programs are then required.
    pub fn enforcing(&self) -> bool {
        self.mode >= monitor_common::mode::BLOCK
            || self.unknown_hook_mode >= monitor_common::mode::BLOCK
            || self.respawn_mode >= monitor_common::mode::BLOCK
            || self.exec_written_mode >= monitor_common::mode::BLOCK
    }
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            mode: monitor_common::mode::ALERT,
            trace_all: false,
            ringbuf_bytes: 8 * 1024 * 1024,
            probation_opens: 64,
            unknown_hook_mode: monitor_common::mode::ALERT,
            respawn_mode: monitor_common::mode::ALERT,
            exec_written_mode: monitor_common::mode::ALERT,
            fail_closed: true,
        }
    }
}

/// Loaded and attached kernel programs with the maps the daemon uses.
pub struct Sensors {
    pub backend: Backend,
    /// What reports opens: the LSM hook, `security_file_open`, or the open tracepoints.
    pub opens: OpenSensor,
    pub attachments: Vec<Attachment>,
    /// Kept alive: dropping it detaches every program.
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    hooks: HashMap<MapData, FileKey, HookInfo>,
    creds: HashMap<MapData, FileKey, u32>,
    cred_names: HashMap<MapData, NameKey, u32>,
    interpreters: HashMap<MapData, FileKey, u32>,
    procs: HashMap<MapData, u32, ProcState>,
    lineages: HashMap<MapData, u64, LineageState>,
    config: Array<MapData, KernelConfig>,
    counters: PerCpuArray<MapData, u64>,
    /// Files with a `Py_RunMain` uprobe, by identity.
    runmain_probed: std::collections::HashSet<FileKey>,
    /// The `Py_RunMain` uprobes, one per interpreter file, detached in parallel on drop.
    runmain_links: Vec<aya::programs::uprobe::UProbeLinkId>,
}

impl Drop for Sensors {
    /// Detaches every program at once. Each detach waits for an RCU grace period (tens of
    /// milliseconds on a small VM); one after the other, the two dozen programs took
    /// seconds, which a restart adds to the time nothing enforces. In parallel the grace
    /// periods overlap. The network programs go last, so enforcement is the last to end.
    fn drop(&mut self) {
        use aya::programs::Program;
        fn unload(p: &mut Program) {
            let result = match p {
                Program::TracePoint(p) => p.unload(),
                Program::BtfTracePoint(p) => p.unload(),
                Program::UProbe(p) => p.unload(),
                Program::CgroupSockAddr(p) => p.unload(),
                Program::CgroupSkb(p) => p.unload(),
                Program::Lsm(p) => p.unload(),
                Program::FEntry(p) => p.unload(),
                Program::KProbe(p) => p.unload(),
                // Whatever else there is goes when the object is dropped.
                _ => Ok(()),
            };
            if let Err(e) = result
                && !matches!(e, ProgramError::NotLoaded)
            {
                tracing::debug!(error = %e, "detaching a program");
            }
        }
        // One uprobe per interpreter file: each detach waits on its own, so they are
        // taken out of the program and dropped in parallel too.
        let uprobes: Vec<_> =
            match tracepoint::program::<UProbe>(&mut self.ebpf, "startup_py_runmain") {
                Ok(p) => self
                    .runmain_links
                    .drain(..)
                    .filter_map(|id| p.take_link(id).ok())
                    .collect(),
                Err(_) => Vec::new(),
            };
        let (network, sensors): (Vec<_>, Vec<_>) =
            self.ebpf.programs_mut().partition(|(name, p)| {
                matches!(p, Program::CgroupSockAddr(_) | Program::CgroupSkb(_))
                    || name.starts_with("net_lsm_")
            });
        std::thread::scope(|s| {
            for link in uprobes {
                s.spawn(move || drop(link));
            }
            for (_, p) in sensors {
                s.spawn(move || unload(p));
            }
        });
        std::thread::scope(|s| {
            for (_, p) in network {
                s.spawn(move || unload(p));
            }
        });
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, SensorError> {
    ebpf.take_map(name).ok_or(SensorError::MissingMap(name))
}

macro_rules! typed_map {
    ($ebpf:expr, $name:expr) => {
        take_map($ebpf, $name)?
            .try_into()
            .map_err(|source| SensorError::Map {
                name: $name,
                source,
            })?
    };
}

impl Sensors {
    pub(crate) fn from_loaded(
        mut ebpf: Ebpf,
        backend: Backend,
        opens: OpenSensor,
        attachments: Vec<Attachment>,
        opts: &SensorOptions,
    ) -> Result<Self, SensorError> {
        let mut sensors = Self {
            backend,
            opens,
            attachments,
            events: Some(typed_map!(&mut ebpf, map_names::EVENTS)),
            hooks: typed_map!(&mut ebpf, map_names::HOOKS),
            creds: typed_map!(&mut ebpf, map_names::CREDS),
            cred_names: typed_map!(&mut ebpf, map_names::CRED_NAMES),
            interpreters: typed_map!(&mut ebpf, map_names::INTERPRETERS),
            procs: typed_map!(&mut ebpf, map_names::PROCS),
            lineages: typed_map!(&mut ebpf, map_names::LINEAGES),
            config: typed_map!(&mut ebpf, map_names::CONFIG),
            counters: typed_map!(&mut ebpf, map_names::COUNTERS),
            ebpf,
            runmain_probed: std::collections::HashSet::new(),
            runmain_links: Vec::new(),
        };
        sensors.set_config(KernelConfig {
            mode: opts.mode,
            trace_all: u32::from(opts.trace_all),
            self_tgid: std::process::id(),
            probation_opens: opts.probation_opens,
            unknown_hook_mode: opts.unknown_hook_mode,
            respawn_mode: opts.respawn_mode,
            fail_closed: u32::from(opts.fail_closed),
            exec_written_mode: opts.exec_written_mode,
        })?;
        Ok(sensors)
    }

    /// The event ring buffer (taken once by the reader).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn set_config(&mut self, cfg: KernelConfig) -> Result<(), SensorError> {
        self.config
            .set(0, cfg, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::CONFIG,
                source,
            })
    }

    pub fn config(&self) -> Result<KernelConfig, SensorError> {
        self.config.get(&0, 0).map_err(|source| SensorError::Map {
            name: map_names::CONFIG,
            source,
        })
    }

    pub fn set_hook(&mut self, key: FileKey, info: HookInfo) -> Result<(), SensorError> {
        self.hooks
            .insert(key, info, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::HOOKS,
                source,
            })
    }

    /// Forgets a hook (its file is gone): the kernel then treats the identity as unknown.
    pub fn remove_hook(&mut self, key: FileKey) -> Result<(), SensorError> {
        removed(map_names::HOOKS, self.hooks.remove(&key))
    }

    pub fn set_credential(&mut self, key: FileKey, category: u32) -> Result<(), SensorError> {
        self.creds
            .insert(key, category, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::CREDS,
                source,
            })
    }

    pub fn set_credential_name(&mut self, key: NameKey, category: u32) -> Result<(), SensorError> {
        self.cred_names
            .insert(key, category, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::CRED_NAMES,
                source,
            })
    }

    pub fn set_interpreter(&mut self, key: FileKey) -> Result<(), SensorError> {
        self.interpreters
            .insert(key, 1, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::INTERPRETERS,
                source,
            })
    }

    /// Records an executable that is not an interpreter (checked after it behaved like
    /// one, or after its first run): its next runs skip probation.
    pub fn set_not_interpreter(&mut self, key: FileKey) -> Result<(), SensorError> {
        self.interpreters
            .insert(key, 0, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::INTERPRETERS,
                source,
            })
    }

    /// What the kernel holds for an executable (`monitor_common::exe_verdict`), if
    /// anything.
    pub fn exe_verdict(&self, key: FileKey) -> Option<u32> {
        self.interpreters.get(&key, 0).ok()
    }

    /// Drops the kernel's verdict on an executable: its next run is on probation again
    /// and reported as new.
    pub fn forget_executable(&mut self, key: FileKey) -> Result<(), SensorError> {
        removed(map_names::INTERPRETERS, self.interpreters.remove(&key))
    }

    /// Starts tracking a process that was already running when pthwatch started.
    pub fn track_process(&mut self, tgid: u32, state: ProcState) -> Result<(), SensorError> {
        self.procs
            .insert(tgid, state, 0)
            .map_err(|source| SensorError::Map {
                name: map_names::PROCS,
                source,
            })
    }

    /// Adds flags to a lineage in the kernel (e.g. a credential read userspace found).
    pub fn mark_lineage(&mut self, id: u64, flags: u32) -> Result<(), SensorError> {
        let err = |source| SensorError::Map {
            name: map_names::LINEAGES,
            source,
        };
        let mut state = self.lineages.get(&id, 0).map_err(err)?;
        state.flags |= flags;
        self.lineages.insert(id, state, 0).map_err(err)
    }

    /// A process recognised as an interpreter by behaviour turned out not to be one (a
    /// scanner, an indexer, a package manager listing site dirs): stop treating it as an
    /// interpreter in start-up, and drop the lineage it started for itself. Attribution
    /// it inherited from a real hook is kept.
    pub fn release_process(&mut self, tgid: u32) -> Result<Option<u64>, SensorError> {
        use monitor_common::proc_flags as pf;
        let err = |source| SensorError::Map {
            name: map_names::PROCS,
            source,
        };
        let mut st = match self.procs.get(&tgid, 0) {
            Ok(st) => st,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if st.flags & pf::ATTRIBUTED != 0 {
            return Ok(None);
        }
        let own = (st.lineage != 0).then_some(st.lineage);
        st.flags &= !(pf::PYTHON | pf::STARTUP | pf::CANDIDATE | pf::BY_BEHAVIOUR);
        st.hook_tid = 0;
        st.lineage = 0;
        self.procs.insert(tgid, st, 0).map_err(err)?;
        if let Some(id) = own {
            let _ = self.lineages.remove(&id);
        }
        Ok(own)
    }

    /// Cookies of the sockets held by lineages the kernel now denies the network (the
    /// egress program drops their packets).
    pub fn denied_sockets(&self) -> Result<std::collections::HashSet<u64>, SensorError> {
        let err = |source| SensorError::Map {
            name: map_names::SOCKETS,
            source,
        };
        let map = self
            .ebpf
            .map(map_names::SOCKETS)
            .ok_or(SensorError::MissingMap(map_names::SOCKETS))?;
        let sockets: HashMap<&MapData, u64, u64> = HashMap::try_from(map).map_err(err)?;
        let mode = self.config()?.mode;
        let mut denied = std::collections::HashSet::new();
        for entry in sockets.iter() {
            let (cookie, lineage) = entry.map_err(err)?;
            if self
                .lineages
                .get(&lineage, 0)
                .is_ok_and(|l| monitor_common::lineage_flags::must_deny(l.flags, mode))
            {
                denied.insert(cookie);
            }
        }
        Ok(denied)
    }

    /// Per-CPU counters summed (`monitor_common::counter`).
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (slot, total) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(slot as u32), 0) {
                *total = values.iter().sum();
            }
        }
        out
    }

    /// Each attach pthwatch tried, as (program, attached), in the order they were tried.
    pub fn attach_status(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.attachments
            .iter()
            .map(|a| (a.program, a.error.is_none()))
    }

    /// Attaches the start-up-end marker to a file exporting `Py_RunMain` (an interpreter
    /// binary or `libpython3.X.so`), and the finalization marker (`Py_FinalizeEx`) where
    /// it attaches. Idempotent per file.
    pub fn attach_runmain(&mut self, target: &Path) -> Result<bool, SensorError> {
        let key = file_key(target)
            .map_err(|e| SensorError::Mount(format!("{}: {e}", target.display())))?;
        if self.runmain_probed.contains(&key) {
            return Ok(false);
        }
        for &(name, symbol) in STARTUP_UPROBES {
            let program: &mut UProbe = tracepoint::program(&mut self.ebpf, name)?;
            let result = program.attach(symbol, target, UProbeScope::AllProcesses);
            self.attachments.push(Attachment {
                program: name,
                target: format!("{}:{symbol}", target.display()),
                error: result.as_ref().err().map(ToString::to_string),
                required: false,
            });
            match result {
                Ok(link) => self.runmain_links.push(link),
                // Without the start-up end the target is no use: try again next time.
                Err(source) if name == STARTUP_UPROBES[0].0 => {
                    return Err(SensorError::Program { name, source });
                }
                Err(e) => tracing::warn!(
                    target = %target.display(),
                    error = %e,
                    "no finalization marker: exit handlers a hook registered act for no one"
                ),
            }
        }
        self.runmain_probed.insert(key);
        Ok(true)
    }
}

/// Identity of a file as the kernel sees it (`FileKey`), following symlinks.
pub fn file_key(path: &Path) -> std::io::Result<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(file_key_of(meta.dev(), meta.ino()))
}

/// Converts a userspace `st_dev` into the kernel's `s_dev` encoding.
pub fn file_key_of(st_dev: u64, ino: u64) -> FileKey {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    FileKey::new(monitor_common::kernel_dev(major, minor), ino)
}

/// Splits a kernel `s_dev` into (major, minor) for display.
pub fn split_kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}
