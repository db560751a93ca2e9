//! `pthwatch run`: the daemon. Start-up loads the sensors, fills the kernel's tables from
//! the hook inventory and the credential catalogue, says READY, then correlates events
//! until SIGTERM.
use std::{
    io,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    alert::Severity,
    cli::{Mode, runtime},
    config::{AlertSettings, Config, EventLogSettings, FileSink, Sink},
    credentials::{self, CredentialCatalog},
    daemon::{self, Runtime},
    detect::{Detector, RuleModes},
    eventlog::{CheckpointKey, EventLog, EventLogOptions},
    hookbook::{HookBook, kernel_keys},
    inventory::{DiscoverOptions, Inventory},
    notify::notify,
    sensors::{SensorOptions, file_key},
    sink::Sinks,
    watch::{self, SiteWatcher},
};

/// What `pthwatch run` was asked to do on its command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub alert_log: Option<PathBuf>,
    pub event_log: Option<PathBuf>,
    pub probation_opens: Option<u32>,
    pub rule_modes: Vec<(String, Mode)>,
    pub extra_homes: Vec<PathBuf>,
    pub ringbuf_bytes: Option<u32>,
    pub fail_open: bool,
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl RunOptions {
    /// The configuration file with this command line's flags laid over it.
    pub fn settings(&self, mut config: Config) -> Result<(Config, RuleModes)> {
        let d = &mut config.daemon;
        if let Some(m) = self.mode {
            d.mode = m;
        }
        if let Some(n) = self.probation_opens {
            d.probation_opens = n;
        }
        if let Some(b) = self.ringbuf_bytes {
            d.ringbuf_bytes = b;
        }
        if self.fail_open {
            d.fail_closed_on_lost_events = false;
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.enabled = true;
            config.metrics.listen = addr;
        }
        if let Some(path) = &self.alert_log {
            let file = Sink::File(FileSink {
                min_severity: Severity::Info,
                path: path.clone(),
                max_bytes: FileSink::DEFAULT_MAX_BYTES,
                keep: FileSink::DEFAULT_KEEP,
            });
            // A file named here replaces the default stdout sink, not sinks configured on
            // purpose.
            if config.alerts == AlertSettings::default() {
                config.alerts.sinks.clear();
            }
            if !config.alerts.sinks.contains(&file) {
                config.alerts.sinks.push(file);
            }
        }
        if let Some(path) = &self.event_log {
            config.event_log.enabled = true;
            config.event_log.path.clone_from(path);
        }
        let mut modes = config.rule_modes();
        for (rule, m) in &self.rule_modes {
            modes.set(rule, *m).map_err(anyhow::Error::msg)?;
        }
        Ok((config, modes))
    }
}

pub fn run(o: RunOptions) -> Result<ExitCode> {
    let file = Config::load(o.config_path.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (config, modes) = o.settings(file)?;
    let mode = modes.kernel();
    let sinks = Sinks::from_config(&config.alerts.sinks).context("setting up alert delivery")?;
    let journal = open_event_log(&config.event_log)?;
    let opts = SensorOptions {
        mode: mode.kernel(),
        probation_opens: config.daemon.probation_opens,
        unknown_hook_mode: modes.get(crate::detect::UNKNOWN_HOOK).kernel(),
        respawn_mode: modes.get(crate::detect::RESPAWN).kernel(),
        exec_written_mode: modes.get(crate::detect::EXEC_WRITTEN).kernel(),
        ringbuf_bytes: config.daemon.ringbuf_bytes,
        fail_closed: config.daemon.fail_closed_on_lost_events,
        ..SensorOptions::default()
    };
    let mut rt = daemon::start(&opts)?;
    let mut homes = credentials::discover_homes(Path::new("/"));
    for home in &o.extra_homes {
        match std::fs::canonicalize(home) {
            Ok(h) if h.is_dir() => {
                if !homes.contains(&h) {
                    homes.push(h);
                }
            }
            Ok(h) => anyhow::bail!("--home {}: not a directory", h.display()),
            Err(e) => anyhow::bail!("--home {}: {e}", home.display()),
        }
    }
    let (hooks, site_watcher) = load_inventory(&mut rt, &homes);
    let catalog = CredentialCatalog::from_config(&config.credentials.catalog_config())
        .context("building the credential catalogue from [credentials]")?
        .without(&config.credentials.disable_categories);
    load_catalog(&mut rt, &catalog, &homes);
    let mut detector = Detector::new(modes, sinks, catalog, homes, hooks);
    if let Some(j) = journal {
        detector.set_event_log(j);
    }
    let metrics_at = config.metrics.enabled.then_some(config.metrics.listen);
    detector.set_config(config, o.clone());
    if let Some(w) = site_watcher {
        detector.set_watcher(w);
    }
    let ready = || {
        let _ = notify(&format!("READY=1\nSTATUS=watching, mode {mode:?}"));
        tracing::info!(?mode, "pthwatch is watching");
        // Start-up parsed the kernel's BTF, the ELF object and the inventory: tens of MiB
        // the allocator keeps once freed. Hand them back; the steady state is far smaller.
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe {
            libc::malloc_trim(0);
        }
    };
    let metrics = crate::metrics::Metrics::default();
    if metrics_at.is_some() {
        detector.set_metrics(metrics.clone());
    }
    let (stop, sensors) = runtime()?.block_on(async {
        if let Some(addr) = metrics_at {
            let listener = crate::metrics::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%addr, "metrics on /metrics, health on /healthz");
            tokio::spawn(crate::metrics::serve(listener, metrics));
        }
        daemon::event_loop(rt, &mut detector, None, ready).await
    })?;
    let _ = notify("STOPPING=1");
    // Once the programs are detached, nothing drops what a denied lineage's connections
    // still hold: close them first.
    crate::sockdiag::close_denied(&sensors, "at shutdown");
    let counters = sensors.counters();
    let delivery = detector.shutdown(Instant::now() + SHUTDOWN_DELIVERY);
    tracing::info!(
        ?stop,
        alerts = detector.alerts_written,
        delivered = delivery.delivered,
        still_spooled = delivery.spooled_now,
        ringbuf_drops = counters[monitor_common::counter::RINGBUF_DROPS as usize],
        "pthwatch stopped"
    );
    drop(sensors);
    Ok(ExitCode::SUCCESS)
}

/// How long webhooks may go on delivering after SIGTERM; what is left stays spooled.
const SHUTDOWN_DELIVERY: Duration = Duration::from_secs(5);

/// The hash-chained event log, when enabled: a log that cannot be opened (or a key that
/// cannot be read) stops the start, as a security log that silently is not kept would
/// mislead whoever relies on it.
fn open_event_log(settings: &EventLogSettings) -> Result<Option<EventLog>> {
    if !settings.enabled {
        return Ok(None);
    }
    let checkpoint_key = settings
        .checkpoint_key_file
        .as_deref()
        .map(CheckpointKey::load)
        .transpose()
        .context("reading the event log's checkpoint key")?;
    let opts = EventLogOptions {
        checkpoint_key,
        checkpoint_every: u64::from(settings.checkpoint_every),
        ..EventLogOptions::default()
    };
    let log = EventLog::open(&settings.path, opts)
        .with_context(|| format!("opening the event log {}", settings.path.display()))?;
    tracing::info!(path = %settings.path.display(), next_seq = log.next_seq(), "event log open");
    Ok(Some(log))
}

/// Discovers interpreters, site dirs and hooks; teaches the kernel which hooks are benign,
/// which executables are interpreters, and where start-up ends (`Py_RunMain`). Then
/// watches the site dirs, so hooks written later are known before they run.
fn load_inventory(rt: &mut Runtime, homes: &[PathBuf]) -> (HookBook, Option<SiteWatcher>) {
    let (inventory, mut book) = teach_inventory(rt, homes);
    let mut watcher = watch_site_dirs(&inventory, homes);
    if let Some(w) = &mut watcher {
        // A hook written between the scan above and the watches was not reported.
        watch::catch_up(w, &mut book, &mut rt.sensors);
    }
    (book, watcher)
}

/// The inventory part of `load_inventory`, also what `pthwatch trace` runs with: the
/// kernel learns the interpreters and their start-up end, and the hooks found with their
/// class. Returns the inventory (its hooks moved into the book) and the book.
pub(crate) fn teach_inventory(rt: &mut Runtime, homes: &[PathBuf]) -> (Inventory, HookBook) {
    let mut inventory = Inventory::discover(&DiscoverOptions {
        root: "/".into(),
        homes: homes.to_vec(),
        extra_site_dirs: Vec::new(),
        extra_interpreters: Vec::new(),
    });
    for error in &inventory.errors {
        tracing::warn!(%error, "inventory");
    }
    for interp in &inventory.interpreters {
        match file_key(&interp.path) {
            Ok(key) => {
                if let Err(e) = rt.sensors.set_interpreter(key) {
                    tracing::warn!(path = %interp.path.display(), error = %e, "could not record interpreter");
                }
            }
            Err(e) => {
                tracing::warn!(path = %interp.path.display(), error = %e, "interpreter vanished")
            }
        }
        if let Some(target) = &interp.runmain_target
            && let Err(e) = rt.sensors.attach_runmain(target)
        {
            tracing::warn!(target = %target.display(), error = %e, "no start-up end marker for this interpreter");
        }
    }
    let mut book = HookBook::default();
    for hook in std::mem::take(&mut inventory.hooks) {
        let info = hook.kernel_info();
        for key in kernel_keys(&hook) {
            if let Err(e) = rt.sensors.set_hook(key, info) {
                tracing::warn!(path = %hook.path.display(), error = %e, "could not record hook");
            }
        }
        book.insert(hook);
    }
    tracing::info!(
        interpreters = inventory.interpreters.len(),
        site_dirs = inventory.site_dirs.len(),
        hooks = book.len(),
        "inventory loaded"
    );
    (inventory, book)
}

/// Watches every site dir, and the `lib/python3.X` dirs a new one may be created in (the
/// user site appears with the first `pip install --user`). Failures are not fatal: a
/// hook that is not watched is still read when an interpreter opens it.
fn watch_site_dirs(inventory: &Inventory, homes: &[PathBuf]) -> Option<SiteWatcher> {
    let mut watcher = match SiteWatcher::new() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "site dirs not watched: new hooks are read only when an interpreter opens them");
            return None;
        }
    };
    let mut site_dirs = 0usize;
    for dir in &inventory.site_dirs {
        match watcher.watch(&dir.path) {
            Ok(()) => site_dirs += 1,
            // Every further watch would fail the same way: one warning says it all.
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                tracing::warn!(error = %e, watched = site_dirs, "site dirs not watched");
                return Some(watcher);
            }
            Err(e) => tracing::warn!(error = %e, "site dir not watched"),
        }
    }
    let mut parents: Vec<PathBuf> = inventory
        .site_dirs
        .iter()
        .filter(|d| {
            d.pth
                && d.path
                    .file_name()
                    .is_some_and(|n| n == "site-packages" || n == "dist-packages")
        })
        .filter_map(|d| d.path.parent().map(Path::to_owned))
        .collect();
    for version in inventory
        .interpreters
        .iter()
        .filter_map(|i| i.version.as_deref())
    {
        for home in homes {
            parents.push(home.join(".local/lib").join(format!("python{version}")));
        }
    }
    parents.sort();
    parents.dedup();
    let mut lib_dirs = 0usize;
    for dir in parents.iter().filter(|d| d.is_dir()) {
        match watcher.watch_for_site_dirs(dir) {
            Ok(()) => lib_dirs += 1,
            Err(e) => tracing::warn!(error = %e, "new site dirs there will not be noticed"),
        }
    }
    tracing::info!(site_dirs, lib_dirs, "watching site dirs for new hooks");
    Some(watcher)
}

/// Credential files by identity, and credential names for files that appear later.
pub(crate) fn load_catalog(rt: &mut Runtime, catalog: &CredentialCatalog, homes: &[PathBuf]) {
    let resolved = catalog.resolve(homes);
    let mut files = 0usize;
    for cred in &resolved {
        match rt.sensors.set_credential(cred.key, cred.category as u32) {
            Ok(()) => files += 1,
            Err(e) => {
                tracing::warn!(path = %cred.path.display(), error = %e, "could not record credential")
            }
        }
    }
    let names = catalog.name_keys();
    for (key, category) in &names {
        if let Err(e) = rt.sensors.set_credential_name(*key, *category as u32) {
            tracing::warn!(error = %e, "could not record credential name");
        }
    }
    tracing::info!(files, names = names.len(), "credential catalogue loaded");
}
