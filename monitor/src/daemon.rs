//! Start-up shared by `run` and `trace`: mounts, kernel offsets, sensors, the process
//! table seeded from procfs; then the event loop that feeds decoded events to a handler.
use std::{os::fd::AsRawFd, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use monitor_common::ProcState;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    btf::Btf,
    check::mounts,
    events::{self, Event},
    proctable::ProcessTable,
    sensors::{self, Backend, SensorOptions, Sensors},
};

/// Everything loaded and attached, ready to stream events.
pub struct Runtime {
    pub sensors: Sensors,
    pub procs: ProcessTable,
    events: RingBuf<MapData>,
}

/// Mounts what the kernel side needs, loads and attaches the sensors, and starts
/// tracking the Python processes that are already running.
pub fn start(opts: &SensorOptions) -> Result<Runtime> {
    let tracefs =
        mounts::ensure_tracefs().context("tracefs is needed for the syscall tracepoints")?;
    if let Err(e) = mounts::ensure_bpffs() {
        tracing::warn!(error = %e, "bpffs unavailable: maps and links cannot be pinned");
    }
    let btf = Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux")?;
    let offsets = btf
        .kernel_offsets()
        .context("reading kernel structure offsets from /sys/kernel/btf/vmlinux")?;
    let (want, why) = crate::check::preferred_backend(&btf);
    drop(btf);
    if want == Backend::Tracepoint {
        tracing::info!(reason = %why, "BPF LSM not usable here: using the tracepoint backend");
    }
    // The tracepoint backend denies connects from the cgroup v2 root; the LSM backend
    // needs it only for the egress program.
    let cgroup = match mounts::cgroup2_root() {
        Ok(root) => Some(root),
        Err(e) if opts.enforcing() && want == Backend::Tracepoint => {
            return Err(anyhow::Error::new(e).context(
                "blocking needs the cgroup v2 hierarchy to deny connects in the kernel; run in alert mode, or see `pthwatch check`",
            ));
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "DEGRADED: no cgroup v2 hierarchy: packets of sockets a hook opened before it read credentials are not dropped, and without BPF LSM network attempts are only reported",
            );
            None
        }
    };
    let mut sensors = sensors::load_sensors(opts, &offsets, &tracefs, cgroup.as_deref(), want)?;
    let procs = ProcessTable::seed_from_procfs();
    let mut seeded = 0usize;
    for (tgid, start_ns, ppid, flags) in procs.python_lineages() {
        if tgid == std::process::id() {
            continue;
        }
        let state = ProcState {
            flags,
            hook_tid: 0,
            lineage: 0,
            start_ns,
            budget: 0,
            ppid,
            exit_lineage: 0,
        };
        match sensors.track_process(tgid, state) {
            Ok(()) => seeded += 1,
            Err(e) => tracing::warn!(tgid, error = %e, "could not track a running process"),
        }
    }
    tracing::info!(
        backend = sensors.backend.describe(),
        opens = sensors.opens.describe(),
        processes = procs.len(),
        python_lineages = seeded,
        "sensors attached"
    );
    let events = sensors
        .take_events()
        .context("event ring buffer already taken")?;
    Ok(Runtime {
        sensors,
        procs,
        events,
    })
}

/// What the event loop hands events and ticks to.
pub trait EventSink {
    fn on_event(&mut self, rt: &mut RuntimeParts<'_>, event: Event);
    /// Called about once a second, and after every batch of events.
    fn on_tick(&mut self, _rt: &mut RuntimeParts<'_>) {}
    /// A record that could not be decoded (counted by the loop as well).
    fn on_decode_error(&mut self, error: events::DecodeError) {
        tracing::warn!(%error, "undecodable event record");
    }
    /// SIGHUP: reload what can be reloaded without dropping enforcement.
    fn on_reload(&mut self, _rt: &mut RuntimeParts<'_>) {
        tracing::info!("SIGHUP: nothing to reload");
    }
}

/// The runtime minus the ring buffer the loop holds.
pub struct RuntimeParts<'a> {
    pub sensors: &'a mut Sensors,
    pub procs: &'a mut ProcessTable,
}

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Signal(&'static str),
    Deadline,
}

/// How often the ring buffer is read without a wakeup from the kernel.
const POLL: Duration = Duration::from_millis(20);

/// Records read in one go before the loop looks at signals and timers again.
const BATCH: usize = 4096;

/// Hands up to `limit` records of the ring buffer to `sink`, in order; returns how many.
fn drain(
    rb: &mut RingBuf<MapData>,
    parts: &mut RuntimeParts<'_>,
    sink: &mut dyn EventSink,
    limit: usize,
) -> usize {
    let mut n = 0;
    while n < limit
        && let Some(item) = rb.next()
    {
        match events::decode(&item) {
            Ok(event) => {
                parts.procs.on_event(&event);
                sink.on_event(parts, event);
            }
            Err(e) => sink.on_decode_error(e),
        }
        n += 1;
    }
    n
}

/// Reads events until SIGTERM/SIGINT (or the optional deadline), feeding `sink`.
/// `on_ready` runs once the signal handlers are in place (so a stop right after READY
/// is a clean one); the loop pings systemd's watchdog when `$WATCHDOG_USEC` asks for it.
pub async fn event_loop(
    rt: Runtime,
    sink: &mut dyn EventSink,
    deadline: Option<Duration>,
    on_ready: impl FnOnce(),
) -> Result<(Stop, Sensors)> {
    let Runtime {
        mut sensors,
        mut procs,
        events,
    } = rt;
    let fd_probe = events.as_raw_fd();
    tracing::debug!(fd = fd_probe, "reading events");
    // SAFETY: the ring buffer owns its map descriptor, which stays open and the same
    // for as long as the `AsyncFd` owns the ring buffer.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The kernel wakes the loop only for events of a hook's lineage; everything else is
    // read at this pace (see `wakeup` in monitor-ebpf's emit.rs).
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog =
        crate::notify::watchdog_interval().map(|d| (d / 2).max(Duration::from_millis(100)));
    let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    on_ready();
    let until = deadline.map(|d| tokio::time::Instant::now() + d);
    let stop = loop {
        let sleep = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break Stop::Signal("SIGTERM"),
            _ = int.recv() => break Stop::Signal("SIGINT"),
            () = sleep => break Stop::Deadline,
            _ = dog.tick(), if watchdog.is_some() => {
                if let Err(e) = crate::notify::notify("WATCHDOG=1") {
                    tracing::warn!(error = %e, "could not ping the watchdog");
                }
            }
            _ = hup.recv() => {
                let mut parts = RuntimeParts { sensors: &mut sensors, procs: &mut procs };
                sink.on_reload(&mut parts);
            }
            _ = tick.tick() => {
                let mut parts = RuntimeParts { sensors: &mut sensors, procs: &mut procs };
                sink.on_tick(&mut parts);
            }
            _ = poll.tick() => {
                let mut parts = RuntimeParts { sensors: &mut sensors, procs: &mut procs };
                drain(ring.get_mut(), &mut parts, sink, BATCH);
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                let mut parts = RuntimeParts { sensors: &mut sensors, procs: &mut procs };
                if drain(guard.get_inner_mut(), &mut parts, sink, BATCH) < BATCH {
                    guard.clear_ready();
                }
            }
        }
    };
    // Drain what is already there so nothing the kernel reported is lost at shutdown.
    let mut parts = RuntimeParts {
        sensors: &mut sensors,
        procs: &mut procs,
    };
    drain(ring.get_mut(), &mut parts, sink, usize::MAX);
    sink.on_tick(&mut parts);
    Ok((stop, sensors))
}
