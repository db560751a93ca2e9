//! Kernel-side cost of pthwatch's BPF programs: with `kernel.bpf_stats_enabled=1` the
//! kernel counts, per program, how often it ran and for how long (`run_cnt`,
//! `run_time_ns`), which `bpftool prog show --json` prints.
//!
//! Programs are picked by the ids the daemon holds (its `/proc/<pid>/fdinfo` names a
//! `prog_id` for each program and link fd), not by name: a second pthwatch on the host
//! (a test run) has programs of the same names.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::Command,
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::util::output;

/// One program's counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgStat {
    pub id: u32,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Counters of one daemon's programs, by program id.
pub type Snapshot = BTreeMap<u32, ProgStat>;

/// The program ids `pid` holds, through program and link file descriptors.
pub fn prog_ids_of(pid: u32) -> BTreeSet<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter_map(|text| fdinfo_prog_id(&text))
        .collect()
}

/// The `prog_id:` of a `/proc/<pid>/fdinfo/<fd>` text.
pub fn fdinfo_prog_id(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The counters of the programs `pid` holds, from `bpftool prog show --json`.
pub fn snapshot(pid: u32) -> Result<Snapshot> {
    let ids = prog_ids_of(pid);
    let json = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let all = parse_prog_show(&json).context("parsing `bpftool prog show --json`")?;
    Ok(all
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .map(|p| (p.id, p))
        .collect())
}

/// Every program in a `bpftool prog show --json` listing. Programs that never ran while
/// statistics were on have no counters: they count as zero.
pub fn parse_prog_show(json: &str) -> Result<Vec<ProgStat>> {
    let v: Value = serde_json::from_str(json)?;
    let list = v.as_array().context("expected a JSON array")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            Some(ProgStat {
                id: u32::try_from(p["id"].as_u64()?).ok()?,
                name: p["name"].as_str().unwrap_or("?").to_owned(),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
            })
        })
        .collect())
}

/// What ran between two snapshots of the same daemon, by program name.
pub fn delta(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, a) in after {
        let (cnt0, ns0) = before
            .get(id)
            .map_or((0, 0), |b| (b.run_cnt, b.run_time_ns));
        let e = out.entry(a.name.clone()).or_default();
        e.0 += a.run_cnt.saturating_sub(cnt0);
        e.1 += a.run_time_ns.saturating_sub(ns0);
    }
    out
}

/// Total kernel nanoseconds in a [`delta`].
pub fn total_ns(d: &BTreeMap<String, (u64, u64)>) -> u64 {
    d.values().map(|(_, ns)| ns).sum()
}

/// Adds a [`delta`] into running totals (run count, run time) per program name.
pub fn accumulate(into: &mut BTreeMap<String, (u64, u64)>, d: &BTreeMap<String, (u64, u64)>) {
    for (name, (cnt, ns)) in d {
        let e = into.entry(name.clone()).or_default();
        e.0 += cnt;
        e.1 += ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bpftool_listing() {
        let json = r#"[{"id":7,"type":"tracepoint","name":"open_exit_openat","run_time_ns":2600,"run_cnt":4},
                       {"id":8,"type":"cgroup_skb","name":"net_cg_egress"}]"#;
        let progs = parse_prog_show(json).unwrap();
        assert_eq!(progs.len(), 2);
        assert_eq!(progs[0].run_time_ns, 2600);
        assert_eq!((progs[1].run_cnt, progs[1].run_time_ns), (0, 0));
        assert!(parse_prog_show("{}").is_err());
    }

    #[test]
    fn prog_id_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nlink_type:\tperf\nlink_id:\t9\nprog_tag:\tab\nprog_id:\t8131\n";
        assert_eq!(fdinfo_prog_id(text), Some(8131));
        assert_eq!(fdinfo_prog_id("pos:\t0\n"), None);
    }

    #[test]
    fn deltas_by_name() {
        let stat = |id, name: &str, cnt, ns| ProgStat {
            id,
            name: name.into(),
            run_cnt: cnt,
            run_time_ns: ns,
        };
        let before: Snapshot = [(1, stat(1, "a", 10, 1000))].into();
        let after: Snapshot = [(1, stat(1, "a", 15, 1600)), (2, stat(2, "b", 3, 300))].into();
        let d = delta(&before, &after);
        assert_eq!(d["a"], (5, 600));
        assert_eq!(d["b"], (3, 300));
        assert_eq!(total_ns(&d), 900);
        let mut sum = BTreeMap::new();
        accumulate(&mut sum, &d);
        accumulate(&mut sum, &d);
        assert_eq!(sum["a"], (10, 1200));
    }
}
