//! CPU time and memory of a running process, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`.
use std::fs;

/// CPU seconds (user + system) a process has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = parse_stat_cpu(&stat)?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Sum of [`cpu_seconds`] over `pids` (a process already gone counts 0).
pub fn cpu_seconds_all(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// `VmHWM` (peak resident set) and `VmRSS`, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((status_kib(&status, "VmHWM")?, status_kib(&status, "VmRSS")?))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `utime` and `stime` (fields 14 and 15, in clock ticks) of a `/proc/<pid>/stat` line.
/// The command name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid(4) ... utime is field 14, i.e. the 12th from here.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Pids of processes whose command name is exactly `comm` (kernel threads included).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_after_an_awkward_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    123 45 0 0 20 0 1 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some((123, 45)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tpthwatch\nVmHWM:\t   23456 kB\nVmRSS:\t   20000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(23456));
        assert_eq!(status_kib(status, "VmRSS"), Some(20000));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        let (hwm, rss) = memory_kib(me).unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
