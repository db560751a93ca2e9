//! Side measurements of the daemon: its cost on an idle host, whether it loses events
//! under a steady rate of interpreter starts, and how long a restart leaves the host
//! without enforcement.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    host::{Host, sleep},
    procstat::{cpu_seconds, loadavg, memory_kib},
    pthwatch::{Pthwatch, PthwatchOptions},
    report::{IdleUsage, RateCheck, RestartGap},
    stats::median,
    workloads::{Fixtures, Sizes, paced_starts},
};

/// pthwatch `--mode alert` with nothing to do for `sizes.idle_secs`: CPU share and RSS.
/// "Idle" is only as idle as the host: other jobs' processes still reach the sensors.
pub fn idle(host: &mut Host, bin: &Path, fx: &Fixtures, sizes: &Sizes) -> Result<IdleUsage> {
    eprintln!(
        "bench: idle host: pthwatch --mode alert for {} s",
        sizes.idle_secs
    );
    let homes = [fx.hook_home.clone()];
    let daemon = Pthwatch::start(&PthwatchOptions {
        bin,
        mode: "alert",
        homes: &homes,
        dir: host.dir.join("pthwatch-idle"),
    })?;
    let pid = daemon.pid();
    // Let the start-up work (site-dir watches, the first events) settle first.
    sleep(Duration::from_secs(1));
    let cpu0 = cpu_seconds(pid).context("daemon vanished")?;
    let load = loadavg();
    let start = std::time::Instant::now();
    sleep(Duration::from_secs(sizes.idle_secs));
    super::host::check_interrupted()?;
    let cpu = cpu_seconds(pid).context("daemon vanished")? - cpu0;
    let seconds = start.elapsed().as_secs_f64();
    let (hwm, rss) = memory_kib(pid).context("daemon vanished")?;
    daemon.stop()?;
    Ok(IdleUsage {
        mode: "alert",
        seconds,
        cpu_s: cpu,
        cpu_share_of_core: cpu / seconds,
        rss_mib: rss as f64 / 1024.0,
        peak_rss_mib: hwm as f64 / 1024.0,
        loadavg: load,
    })
}

/// pthwatch `--mode block` while interpreters with hooks start at `sizes.rate_per_sec`:
/// the ring-buffer drops it counts.
pub fn rate(host: &mut Host, bin: &Path, fx: &Fixtures, sizes: &Sizes) -> Result<RateCheck> {
    eprintln!(
        "bench: {} Python starts/s for {} s under pthwatch --mode block",
        sizes.rate_per_sec, sizes.rate_secs
    );
    let homes = [fx.hook_home.clone()];
    let daemon = Pthwatch::start(&PthwatchOptions {
        bin,
        mode: "block",
        homes: &homes,
        dir: host.dir.join("pthwatch-rate"),
    })?;
    sleep(Duration::from_millis(500));
    let (starts, achieved, failures) = paced_starts(fx, sizes.rate_per_sec, sizes.rate_secs)?;
    // Give the daemon time to drain its ring buffer before it reports.
    sleep(Duration::from_millis(500));
    let log = daemon.stop()?;
    Ok(RateCheck {
        mode: "block",
        target_per_sec: sizes.rate_per_sec,
        achieved_per_sec: achieved,
        starts,
        failures,
        events_lost: log.events_lost,
    })
}

/// Restarts of pthwatch `--mode block`, as `systemctl restart` does them: SIGTERM, wait for
/// the exit, start again, wait for READY=1. From the SIGTERM (the old daemon detaches its
/// programs while it exits) to the new READY=1 (its programs are attached and its tables
/// loaded), nothing enforces: that is the gap.
pub fn restart(host: &mut Host, bin: &Path, fx: &Fixtures, restarts: usize) -> Result<RestartGap> {
    eprintln!("bench: {restarts} restarts of pthwatch --mode block");
    let homes = [fx.hook_home.clone()];
    let options = |i: usize| PthwatchOptions {
        bin,
        mode: "block",
        homes: &homes,
        dir: host.dir.join(format!("pthwatch-restart-{i}")),
    };
    let mut daemon = Pthwatch::start(&options(0))?;
    let (mut stop_ms, mut start_ms, mut gap_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=restarts {
        sleep(Duration::from_millis(300));
        let t0 = std::time::Instant::now();
        daemon.stop()?;
        let stopped = t0.elapsed();
        daemon = Pthwatch::start(&options(i))?;
        stop_ms.push(stopped.as_secs_f64() * 1e3);
        start_ms.push(daemon.ready_s * 1e3);
        gap_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        super::host::check_interrupted()?;
    }
    daemon.stop()?;
    Ok(RestartGap {
        mode: "block",
        restarts,
        stop_ms: median(&stop_ms).unwrap_or(0.0),
        start_ms: median(&start_ms).unwrap_or(0.0),
        gap_ms: median(&gap_ms).unwrap_or(0.0),
        gap_ms_max: gap_ms.iter().copied().fold(0.0, f64::max),
    })
}
