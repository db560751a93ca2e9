//! `pthwatch run`: the daemon. Start-up loads the sensors, fills the kernel's tables from
//! the hook inventory and the credential catalogue, says READY, then correlates events
//! until SIGTERM.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use crate::{
    alert::AlertLog,
    cli::{Mode, runtime},
    credentials::{self, CredentialCatalog},
    daemon::{self, Runtime},
    detect::Detector,
    hookbook::HookBook,
    inventory::{DiscoverOptions, Inventory},
    notify::notify,
    sensors::{SensorOptions, file_key, file_key_of},
};

pub fn run(mode: Mode, alert_log: Option<&Path>, probation_opens: u32) -> Result<ExitCode> {
    let log = AlertLog::open(alert_log).with_context(|| {
        format!(
            "opening the alert log {}",
            alert_log.map_or("stdout".into(), |p| p.display().to_string())
        )
    })?;
    let opts = SensorOptions {
        mode: mode.kernel(),
        probation_opens,
        ..SensorOptions::default()
    };
    let mut rt = daemon::start(&opts)?;
    let homes = credentials::discover_homes(Path::new("/"));
    let hooks = load_inventory(&mut rt, &homes);
    let catalog = CredentialCatalog::default();
    load_catalog(&mut rt, &catalog, &homes);
    let mut detector = Detector::new(mode, log, catalog, homes, hooks);
    let _ = notify(&format!("READY=1\nSTATUS=watching, mode {mode:?}"));
    tracing::info!(?mode, alert_log = ?alert_log, "pthwatch is watching");
    let (stop, sensors) = runtime()?.block_on(daemon::event_loop(rt, &mut detector, None))?;
    let _ = notify("STOPPING=1");
    let counters = sensors.counters();
    tracing::info!(
        ?stop,
        alerts = detector.alerts_written,
        ringbuf_drops = counters[monitor_common::counter::RINGBUF_DROPS as usize],
        "pthwatch stopped"
    );
    drop(sensors);
    Ok(ExitCode::SUCCESS)
}

/// Discovers interpreters, site dirs and hooks; teaches the kernel which hooks are benign,
/// which executables are interpreters, and where start-up ends (`Py_RunMain`).
fn load_inventory(rt: &mut Runtime, homes: &[std::path::PathBuf]) -> HookBook {
    let inventory = Inventory::discover(&DiscoverOptions {
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
        if let Some(target) = &interp.runmain_target {
            if let Err(e) = rt.sensors.attach_runmain(target) {
                tracing::warn!(target = %target.display(), error = %e, "no start-up end marker for this interpreter");
            }
        }
    }
    let mut book = HookBook::default();
    for hook in inventory.hooks {
        let class = hook.class.kernel_class();
        let mut keys = vec![file_key_of(hook.dev, hook.ino)];
        keys.extend(
            hook.bytecode
                .iter()
                .map(|(_, dev, ino)| file_key_of(*dev, *ino)),
        );
        for key in keys {
            if let Err(e) = rt.sensors.set_hook(key, class) {
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
    book
}

/// Credential files by identity, and credential names for files that appear later.
fn load_catalog(rt: &mut Runtime, catalog: &CredentialCatalog, homes: &[std::path::PathBuf]) {
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
