//! The daemon's view of processes: seeded from procfs at start (processes that were
//! already running), kept current by exec/fork/exit events, and asked for process trees
//! when an alert is written. Exited processes stay a short while so alerts about a
//! lineage that already died can still name its members.
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use monitor_common::proc_flags;

use crate::events::Event;

/// How long an exited process stays in the table.
const EXITED_GRACE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub tgid: u32,
    /// Start time, ns since boot (from procfs: tick resolution).
    pub start_ns: u64,
    pub ppid: u32,
    pub exe: PathBuf,
    pub argv: Vec<String>,
    pub comm: String,
    pub uid: u32,
    pub cgroup_id: u64,
    pub lineage: u64,
    pub flags: u32,
    pub exited: Option<Instant>,
}

#[derive(Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcInfo>,
}

/// Nanoseconds per clock tick of `/proc/<pid>/stat` start times.
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// Whether a path or name looks like a Python interpreter (`python`, `python3.11`, ...).
pub fn is_python_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python") else {
        return false;
    };
    rest.is_empty() || rest.starts_with('3') || rest.starts_with('2')
}

impl ProcessTable {
    /// Reads every process from procfs. Unreadable entries (raced exits, permission) are
    /// skipped: they are not an error.
    pub fn seed_from_procfs() -> Self {
        let mut table = Self::default();
        let Ok(all) = procfs::process::all_processes() else {
            return table;
        };
        let tick = ns_per_tick();
        for proc in all.flatten() {
            let Ok(stat) = proc.stat() else { continue };
            let exe = proc.exe().unwrap_or_default();
            let argv = proc.cmdline().unwrap_or_default();
            let uid = proc.uid().unwrap_or(u32::MAX);
            table.procs.insert(
                stat.pid as u32,
                ProcInfo {
                    tgid: stat.pid as u32,
                    start_ns: stat.starttime * tick,
                    ppid: stat.ppid as u32,
                    exe,
                    argv,
                    comm: stat.comm.clone(),
                    uid,
                    ..ProcInfo::default()
                },
            );
        }
        table
    }

    /// Running Python interpreters and everything they started, with the flags the kernel
    /// side should track them with (they are past start-up).
    pub fn python_lineages(&self) -> Vec<(u32, u64, u32, u32)> {
        let mut out = Vec::new();
        for info in self.procs.values() {
            let name = info
                .exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let python = name.as_deref().is_some_and(is_python_name) || is_python_name(&info.comm);
            let in_lineage = self.ancestors(info.tgid).iter().skip(1).any(|a| {
                self.procs.get(a).is_some_and(|p| {
                    p.exe
                        .file_name()
                        .is_some_and(|n| is_python_name(&n.to_string_lossy()))
                })
            });
            if python || in_lineage {
                let mut flags = proc_flags::LINEAGE;
                if python {
                    flags |= proc_flags::PYTHON | proc_flags::BY_NAME;
                }
                out.push((info.tgid, info.start_ns, info.ppid, flags));
            }
        }
        out
    }

    /// The process and its ancestors, nearest first (bounded: cycles cannot loop).
    pub fn ancestors(&self, tgid: u32) -> Vec<u32> {
        let mut chain = vec![tgid];
        let mut cur = tgid;
        while let Some(p) = self.procs.get(&cur) {
            if p.ppid == 0 || p.ppid == cur || chain.len() >= 64 || chain.contains(&p.ppid) {
                break;
            }
            chain.push(p.ppid);
            cur = p.ppid;
        }
        chain
    }

    pub fn get(&self, tgid: u32) -> Option<&ProcInfo> {
        self.procs.get(&tgid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Fills in what procfs knows about a process the table has not seen (started before
    /// the kernel side tracked it, or an event was lost).
    fn from_procfs(tgid: u32) -> Option<ProcInfo> {
        let proc = procfs::process::Process::new(tgid as i32).ok()?;
        let stat = proc.stat().ok()?;
        Some(ProcInfo {
            tgid,
            start_ns: stat.starttime * ns_per_tick(),
            ppid: stat.ppid as u32,
            exe: proc.exe().unwrap_or_default(),
            argv: proc.cmdline().unwrap_or_default(),
            comm: stat.comm,
            uid: proc.uid().unwrap_or(u32::MAX),
            ..ProcInfo::default()
        })
    }

    fn entry(&mut self, tgid: u32, start_ns: u64) -> &mut ProcInfo {
        let stale = self.procs.get(&tgid).is_some_and(|p| {
            // pid reuse: a different start time (procfs has tick resolution).
            start_ns != 0 && p.start_ns != 0 && p.start_ns.abs_diff(start_ns) > 2 * ns_per_tick()
        });
        if stale {
            self.procs.remove(&tgid);
        }
        self.procs.entry(tgid).or_insert_with(|| {
            Self::from_procfs(tgid).unwrap_or(ProcInfo {
                tgid,
                start_ns,
                ..ProcInfo::default()
            })
        })
    }

    pub fn on_event(&mut self, event: &Event) {
        let h = *event.header();
        match event {
            Event::Exec(e) => {
                let p = self.entry(h.tgid, h.start_ns);
                p.exe = e.exe.clone();
                p.argv = e.argv.clone();
                p.comm = e.comm.clone();
                p.ppid = h.ppid;
                p.uid = h.uid;
                p.cgroup_id = h.cgroup_id;
                p.flags = h.flags;
                p.lineage = h.lineage;
                p.start_ns = h.start_ns;
                p.exited = None;
            }
            Event::Fork(f) if f.child_tgid != h.tgid => {
                let parent = self.entry(h.tgid, h.start_ns).clone();
                self.procs.insert(
                    f.child_tgid,
                    ProcInfo {
                        tgid: f.child_tgid,
                        start_ns: f.child_start_ns,
                        ppid: h.tgid,
                        exe: parent.exe,
                        argv: parent.argv,
                        comm: parent.comm,
                        uid: parent.uid,
                        cgroup_id: parent.cgroup_id,
                        lineage: h.lineage,
                        flags: h.flags,
                        exited: None,
                    },
                );
            }
            // A sighting of an executable, not of a process worth a row.
            Event::NewExecutable(_) => {}
            Event::Exit(_) => {
                if let Some(p) = self.procs.get_mut(&h.tgid) {
                    p.exited = Some(Instant::now());
                }
            }
            _ => {
                let p = self.entry(h.tgid, h.start_ns);
                if h.lineage != 0 {
                    p.lineage = h.lineage;
                }
                p.flags = h.flags;
                if p.cgroup_id == 0 {
                    p.cgroup_id = h.cgroup_id;
                }
            }
        }
    }

    /// Drops processes that exited more than the grace period ago.
    pub fn gc(&mut self) {
        let now = Instant::now();
        self.procs.retain(|_, p| {
            p.exited
                .is_none_or(|t| now.duration_since(t) < EXITED_GRACE)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_names() {
        for n in [
            "python",
            "python3",
            "python3.11",
            "python2.7",
            "python3.13t",
        ] {
            assert!(is_python_name(n), "{n}");
        }
        for n in ["pythonista", "ipython", "py", "bash", "python-config"] {
            assert!(!is_python_name(n), "{n}");
        }
    }

    #[test]
    fn ancestors_stop_at_cycles() {
        let mut t = ProcessTable::default();
        t.procs.insert(
            10,
            ProcInfo {
                tgid: 10,
                ppid: 11,
                ..ProcInfo::default()
            },
        );
        t.procs.insert(
            11,
            ProcInfo {
                tgid: 11,
                ppid: 10,
                ..ProcInfo::default()
            },
        );
        assert_eq!(t.ancestors(10), vec![10, 11]);
    }

    #[test]
    fn seeding_sees_this_process() {
        let t = ProcessTable::seed_from_procfs();
        let me = t.get(std::process::id()).expect("own process in the table");
        assert!(me.start_ns > 0);
    }
}
