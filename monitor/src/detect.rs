//! Correlation: turns the kernel's attributed events into alerts.
//!
//! The kernel decides (attribution, taint, deny, kill); this module reports what happened
//! and adds what the kernel cannot see cheaply: which hook a lineage runs for (read and
//! classified here), credential paths the name table missed, persistence locations, and
//! execution of files a lineage wrote.
//!
//! Rules:
//! 1. `hook_credential_exfiltration` (critical): a hook lineage read a credential, then
//!    attempted the network.
//! 2. `hook_credential_access`, `hook_persistence`, `hook_exec_written_file` (high).
//! 3. `unknown_startup_hook` (medium): an executable hook that is not a known-benign
//!    form ran (once per content hash).
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use monitor_common::{FileKey, iouring_kind, lineage_flags, open_match, proc_flags, verdict};

use crate::{
    alert::{
        Action, Alert, ContainerRef, Destination, HookRef, LineageEntry, ProcessRef, Severity,
        hostname, rfc3339,
    },
    cli::Mode,
    containers::Resolver as ContainerResolver,
    credentials::{CredentialCatalog, persistence_kind},
    daemon::{EventSink, RuntimeParts},
    events::{Event, Exec, Net, Open},
    hookbook::HookBook,
    inventory::{Hook, HookClass, display_path},
    proctable::ProcessTable,
    sink::{SinkStats, Sinks},
    trace::protocol_name,
};

mod journal;

use serde_json::json;

use crate::eventlog::Kind;

use self::journal::{Journal, LINEAGE_RECORDS};

/// Rule names, as alerts and the configuration spell them.
pub const EXFIL: &str = "hook_credential_exfiltration";
pub const UNKNOWN_HOOK: &str = "unknown_startup_hook";
pub const RESPAWN: &str = "hook_runaway_respawn";
pub const EXEC_WRITTEN: &str = "hook_exec_written_file";
pub const RULES: [&str; 6] = [
    EXFIL,
    "hook_credential_access",
    "hook_persistence",
    EXEC_WRITTEN,
    UNKNOWN_HOOK,
    RESPAWN,
];

/// The kernel's counters (`monitor_common::counter`), summed over CPUs.
type Counters = [u64; monitor_common::counter::COUNT as usize];

/// The response mode of each rule: a default, overridden per rule. Rule 1's mode is the
/// kernel's (it decides deny and kill itself); the others are applied from here.
#[derive(Clone, Debug)]
pub struct RuleModes {
    default: Mode,
    overrides: Vec<(&'static str, Mode)>,
}

impl RuleModes {
    pub fn new(default: Mode) -> Self {
        Self {
            default,
            overrides: Vec::new(),
        }
    }

    /// Overrides one rule; unknown rule names are refused with the list of known ones.
    pub fn set(&mut self, rule: &str, mode: Mode) -> Result<(), String> {
        let Some(&name) = RULES.iter().find(|r| **r == rule) else {
            return Err(format!(
                "unknown rule `{rule}`; rules are: {}",
                RULES.join(", ")
            ));
        };
        self.overrides.retain(|(r, _)| *r != name);
        self.overrides.push((name, mode));
        Ok(())
    }

    /// The rule's mode. `--mode` sets the rules about what a hook did; whether a hook
    /// merely being unknown is reason enough to act is a separate choice, `alert`
    /// unless set for that rule (many hosts run home-grown hooks).
    pub fn get(&self, rule: &str) -> Mode {
        let default = if rule == UNKNOWN_HOOK {
            Mode::Alert
        } else {
            self.default
        };
        self.overrides
            .iter()
            .find(|(r, _)| *r == rule)
            .map_or(default, |(_, m)| *m)
    }

    /// What the kernel enforces by itself: rule 1's mode.
    pub fn kernel(&self) -> Mode {
        self.get(EXFIL)
    }
}

/// How long after the first network attempt of a tainted lineage the alert waits for the
/// kernel's other reports of the same attempt (the tracepoint sees it before the cgroup
/// program decides).
const SETTLE: Duration = Duration::from_millis(150);
/// How long a lineage that read credentials may stay quiet before rule 2 reports it.
const QUIET: Duration = Duration::from_secs(3);
/// Dismissed lineages remembered (a bound; their ids are never reused).
const MAX_DISMISSED: usize = 65_536;
/// How often home directories are looked for.
const HOMES_EVERY: Duration = Duration::from_secs(30);
/// How often cached containers whose cgroup is gone are forgotten.
const CONTAINERS_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Lineages with no event for this long are forgotten.
const LINEAGE_TTL: Duration = Duration::from_secs(30 * 60);

const O_ACCMODE: u32 = libc::O_ACCMODE as u32;
const O_CREAT: u32 = libc::O_CREAT as u32;
const O_TRUNC: u32 = libc::O_TRUNC as u32;

/// What userspace knows of one attribution lineage.
#[derive(Default)]
struct Lineage {
    hook: Option<Arc<Hook>>,
    root_tgid: u32,
    /// Credential paths read, in order, without repeats.
    credentials: Vec<String>,
    iouring: bool,
    written: HashSet<FileKey>,
    persistence: Vec<String>,
    members: BTreeSet<u32>,
    fired: HashSet<&'static str>,
    /// Rule 1 waiting to settle: (deadline, strongest action, event).
    pending_net: Option<(Instant, Action, Net)>,
    first_credential: Option<Instant>,
    /// Destinations of the lineage's allowed connects, by socket cookie, so a packet
    /// dropped later on a held socket can say where it was going.
    connects: HashMap<u64, Net>,
    network_attempted: bool,
    /// A rule in block mode denied the lineage the network.
    quarantined: bool,
    /// Members that ran the lineage's own hook again.
    reentries: u32,
    last_seen: Option<Instant>,
    /// Activity records of this lineage written to the event log.
    journaled: u32,
}

impl Lineage {
    fn tainted(&self) -> bool {
        !self.credentials.is_empty() || self.iouring
    }
}

pub struct Detector {
    modes: RuleModes,
    host: String,
    sinks: Sinks,
    journal: Option<Journal>,
    catalog: CredentialCatalog,
    homes: Vec<PathBuf>,
    hooks: HookBook,
    lineages: HashMap<u64, Lineage>,
    reported_hooks: HashSet<String>,
    /// Executables recognised as interpreters by behaviour, checked once each: the file
    /// that exports `Py_RunMain` for it, or `None` when it is not an interpreter.
    exe_verdicts: HashMap<FileKey, Option<PathBuf>>,
    /// Lineages started by processes that turned out not to be interpreters.
    dismissed: HashSet<u64>,
    /// inotify on the site dirs: new and rewritten hooks are read and taught to the
    /// kernel within a tick.
    watcher: Option<crate::watch::SiteWatcher>,
    /// When home directories were last looked for (new users, mounted homes).
    homes_checked: Instant,
    /// Kernel counters at the last report of lost events.
    lost_seen: (u64, u64),
    /// The configuration in force (rules on or off, exceptions) and the command line
    /// laid over it on each reload.
    config: crate::config::Config,
    cli: Option<crate::run::RunOptions>,
    /// Reports an allow entry suppressed.
    pub alerts_allowed: u64,
    /// Alerts written, by (rule, action).
    alerts_by_rule: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    /// Events received, by kind (`crate::metrics::EVENT_KINDS` order).
    events_by_kind: [u64; crate::metrics::EVENT_KINDS.len()],
    metrics: Option<crate::metrics::Metrics>,
    pub alerts_written: u64,
    /// The kernel's egress drop count when held connections were last closed.
    egress_drops_seen: u64,
    pub alert_errors: u64,
    /// Names the container, pod and image of an alert's process.
    containers: ContainerResolver,
    /// When the container cache was last pruned of cgroups that are gone.
    containers_pruned: Instant,
    /// Programs checked once and spared the probation.
    probation: crate::probation::Probation,
}

impl Detector {
    pub fn new(
        modes: RuleModes,
        sinks: Sinks,
        catalog: CredentialCatalog,
        homes: Vec<PathBuf>,
        hooks: HookBook,
    ) -> Self {
        Self {
            modes,
            host: hostname(),
            sinks,
            journal: None,
            catalog,
            homes,
            hooks,
            lineages: HashMap::new(),
            reported_hooks: HashSet::new(),
            exe_verdicts: HashMap::new(),
            dismissed: HashSet::new(),
            watcher: None,
            homes_checked: Instant::now(),
            lost_seen: (0, 0),
            config: crate::config::Config::default(),
            cli: None,
            alerts_allowed: 0,
            alerts_by_rule: std::collections::BTreeMap::new(),
            events_by_kind: [0; crate::metrics::EVENT_KINDS.len()],
            metrics: None,
            alerts_written: 0,
            egress_drops_seen: 0,
            alert_errors: 0,
            containers: ContainerResolver::new(crate::config::ContainerSettings::default()),
            containers_pruned: Instant::now(),
            probation: crate::probation::Probation::default(),
        }
    }

    /// The process an alert is about: the one that acted, or, where the kernel could not
    /// say (a packet dropped outside its sender's context), the lineage's interpreter.
    fn acting_tgid(&self, lineage: u64, tgid: u32) -> u32 {
        if tgid != 0 {
            return tgid;
        }
        self.lineages.get(&lineage).map_or(0, |l| l.root_tgid)
    }

    pub fn set_config(&mut self, config: crate::config::Config, cli: crate::run::RunOptions) {
        self.config = config;
        self.cli = Some(cli);
        self.apply_container_settings();
    }

    /// A new container resolver (and an empty cache) when `[containers]` changed.
    fn apply_container_settings(&mut self) {
        if *self.containers.settings() != self.config.containers {
            self.containers = ContainerResolver::new(self.config.containers.clone());
        }
    }

    /// Whether configuration says not to report `alert`: its rule is off, or an allow
    /// entry covers it (logged with the entry's reason).
    fn suppressed(&self, alert: &Alert) -> Option<String> {
        if !self.config.rule_enabled(alert.rule) {
            return Some(format!("rule {} is disabled", alert.rule));
        }
        let entry = self.config.allow.allows(alert.rule, &alert_facts(alert))?;
        let reason = entry.reason.as_deref().unwrap_or("(no reason given)");
        tracing::info!(
            rule = alert.rule,
            pid = alert.process.pid,
            reason,
            "allowed by configuration: not reported"
        );
        Some(format!("allow entry: {reason}"))
    }

    /// Keeps the hash-chained event log from now on.
    pub fn set_event_log(&mut self, log: crate::eventlog::EventLog) {
        self.journal = Some(Journal::new(log));
    }

    /// Stops alert delivery (webhooks deliver what they can until `deadline`, the rest
    /// stays spooled) and closes the event log.
    pub fn shutdown(&mut self, deadline: Instant) -> SinkStats {
        let stats = self.sinks.shutdown(deadline);
        if let Some(j) = self.journal.take() {
            j.close();
        }
        stats
    }

    /// Writes an activity record of `lineage` to the event log, up to
    /// [`LINEAGE_RECORDS`] of them per lineage.
    fn journal_activity(
        &mut self,
        kind: crate::eventlog::Kind,
        lineage: u64,
        tgid: u32,
        fields: serde_json::Value,
    ) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        // A lineage already forgotten (an exit after its TTL) is not brought back: an
        // entry made here would never expire.
        let Some(l) = self.lineages.get_mut(&lineage) else {
            j.activity(kind, lineage, fields);
            return;
        };
        l.journaled = l.journaled.saturating_add(1);
        if l.journaled <= LINEAGE_RECORDS {
            j.activity(kind, lineage, fields);
        } else if l.journaled == LINEAGE_RECORDS + 1 {
            j.lineage_capped(lineage, tgid);
        }
    }

    pub fn set_metrics(&mut self, metrics: crate::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    /// Publishes this tick's numbers for the metrics endpoint.
    fn publish(&self, rt: &RuntimeParts<'_>, kernel: Counters) {
        let Some(m) = &self.metrics else { return };
        m.update(|s| {
            s.last_tick = Some(Instant::now());
            s.kernel = kernel;
            s.events = self.events_by_kind;
            s.alerts = self.alerts_by_rule.clone();
            s.alerts_allowed = self.alerts_allowed;
            s.alert_errors = self.alert_errors;
            s.lineages = self.lineages.len() as u64;
            s.tracked_processes = rt.procs.len() as u64;
            s.hooks_known = self.hooks.len() as u64;
            s.probation_exempt = self.probation.exempt_count() as u64;
            s.sinks = self.sinks.stats();
            if let Some(j) = &self.journal {
                s.event_log_records = j.written;
                s.event_log_errors = j.errors;
            }
            // A program attached to several targets (the `Py_RunMain` uprobe, once per
            // interpreter) is attached when every one of them is.
            s.probes.clear();
            for (program, attached) in rt.sensors.attach_status() {
                *s.probes.entry(program).or_insert(true) &= attached;
            }
        });
    }

    pub fn set_watcher(&mut self, watcher: crate::watch::SiteWatcher) {
        self.watcher = Some(watcher);
    }

    fn lineage(&mut self, id: u64, tgid: u32) -> &mut Lineage {
        let l = self.lineages.entry(id).or_insert_with(|| Lineage {
            root_tgid: tgid,
            ..Lineage::default()
        });
        l.members.insert(tgid);
        l.last_seen = Some(Instant::now());
        l
    }

    fn on_open(&mut self, rt: &mut RuntimeParts<'_>, o: &Open) {
        let h = &o.header;
        let key = FileKey::new(o.dev, o.ino);
        if o.match_flags & (open_match::HOOK | open_match::SITE_DIR) != 0
            && h.flags & proc_flags::BY_BEHAVIOUR != 0
            && !self.confirm_interpreter(rt, h.tgid, h.lineage)
        {
            return;
        }
        if self.dismissed.contains(&h.lineage) {
            return;
        }
        if o.match_flags & open_match::HOOK != 0 {
            self.on_hook_open(rt, o, key);
        }
        if h.lineage == 0 {
            return;
        }
        if o.match_flags & open_match::REENTRY != 0 {
            self.on_reentry(rt, o);
        }
        let path = o.shown_path();
        let kernel_cred = o.match_flags & (open_match::CRED_INODE | open_match::CRED_NAME) != 0;
        let regular = o.mode & 0o170_000 == 0o100_000;
        let user_cred =
            regular && !kernel_cred && self.catalog.classify_path(&o.path, &self.homes).is_some();
        let writes =
            o.flags & O_ACCMODE != libc::O_RDONLY as u32 || o.flags & (O_CREAT | O_TRUNC) != 0;
        let persistence = if writes && regular {
            persistence_kind(&o.path)
        } else {
            None
        };
        if writes && regular {
            // A program spared the probation may be being turned into something else.
            self.probation.revoke(rt.sensors, key);
        }
        let l = self.lineage(h.lineage, h.tgid);
        let mut new_credential = false;
        if kernel_cred || user_cred {
            if !l.credentials.contains(&path) {
                l.credentials.push(path.clone());
                new_credential = true;
            }
            l.first_credential.get_or_insert_with(Instant::now);
        }
        if writes && regular {
            l.written.insert(key);
        }
        let new_persistence = persistence.is_some() && !l.persistence.contains(&path);
        if new_persistence {
            l.persistence.push(path.clone());
        }
        if new_credential || new_persistence {
            let event = if new_persistence { "write" } else { "read" };
            self.journal_activity(
                Kind::Process,
                h.lineage,
                h.tgid,
                json!({ "event": event, "pid": h.tgid, "path": path, "credential": new_credential }),
            );
        }
        if user_cred {
            // The kernel's name table missed it: taint the lineage there too, so its next
            // network attempt is decided in the kernel.
            if let Err(e) = rt.sensors.mark_lineage(h.lineage, lineage_flags::CRED_READ) {
                tracing::warn!(lineage = h.lineage, error = %e, "could not taint lineage in the kernel");
            }
        }
        if new_persistence {
            let summary =
                format!("a startup hook's lineage wrote {path}, where programs start themselves");
            self.respond_and_fire(rt, h.lineage, "hook_persistence", h.tgid, summary);
        }
    }

    /// The kernel took `tgid` for an interpreter because of what it opened (a site dir, a
    /// hook) although its name and inode are not known ones. Checks its executable: an
    /// interpreter gets the start-up end marker; anything else (a scanner, an IDE indexer)
    /// is released, and the lineage it started for itself is dismissed.
    fn confirm_interpreter(&mut self, rt: &mut RuntimeParts<'_>, tgid: u32, lineage: u64) -> bool {
        let exe = PathBuf::from(format!("/proc/{tgid}/exe"));
        let Ok(key) = crate::sensors::file_key(&exe) else {
            // Gone already: nothing to decide.
            return true;
        };
        let verdict = self
            .exe_verdicts
            .entry(key)
            .or_insert_with(|| crate::inventory::runmain_target(&exe))
            .clone();
        match verdict {
            Some(target) => {
                if let Err(e) = rt.sensors.set_interpreter(key) {
                    tracing::warn!(tgid, error = %e, "could not record interpreter");
                }
                match rt.sensors.attach_runmain(&target) {
                    Ok(true) => {
                        tracing::info!(tgid, target = %target.display(), "renamed or unlisted interpreter: start-up end marker attached")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(tgid, target = %target.display(), error = %e, "no start-up end marker for this interpreter")
                    }
                }
                true
            }
            None => {
                if let Err(e) = rt.sensors.set_not_interpreter(key) {
                    tracing::warn!(tgid, error = %e, "could not record a non-interpreter");
                }
                match rt.sensors.release_process(tgid) {
                    Ok(own) => {
                        if let Some(id) = own {
                            if self.dismissed.len() >= MAX_DISMISSED {
                                self.dismissed.clear();
                            }
                            self.dismissed.insert(id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(tgid, error = %e, "could not release a non-interpreter")
                    }
                }
                if lineage != 0
                    && self
                        .lineages
                        .get(&lineage)
                        .is_some_and(|l| l.root_tgid == tgid)
                {
                    self.lineages.remove(&lineage);
                    self.dismissed.insert(lineage);
                }
                tracing::debug!(
                    tgid,
                    "opened site dirs or hooks but is not an interpreter: released"
                );
                false
            }
        }
    }

    /// The interpreter running a hook holds secrets in its environment: the hook has them
    /// (`os.environ`) without a read any sensor sees, so its lineage counts as having read
    /// credentials, in the kernel too (its next network attempt is decided there).
    fn taint_by_environment(&mut self, rt: &mut RuntimeParts<'_>, lineage: u64, tgid: u32) {
        let names = crate::credentials::environment::of_process(tgid);
        if names.is_empty() {
            return;
        }
        if let Err(e) = rt.sensors.mark_lineage(lineage, lineage_flags::CRED_READ) {
            tracing::warn!(lineage, error = %e, "could not taint lineage in the kernel");
        }
        let what = format!("environment variables of pid {tgid}: {}", names.join(", "));
        let l = self.lineage(lineage, tgid);
        // Held, not read: this taints the lineage for the network rule, but is no report
        // of its own (hook_credential_access is about reads).
        if !l.credentials.contains(&what) {
            l.credentials.push(what);
        }
    }

    /// A member ran the lineage's own hook again: a hook that starts interpreters runs
    /// itself in each, and without a guard that is a fork bomb. Past the limit the
    /// kernel stops it (block and kill mode); this reports it once and kills the rest.
    fn on_reentry(&mut self, rt: &mut RuntimeParts<'_>, o: &Open) {
        let h = &o.header;
        let stopped = o.match_flags & open_match::RUNAWAY_STOPPED != 0;
        let l = self.lineage(h.lineage, h.tgid);
        l.reentries += 1;
        if !stopped && l.reentries <= monitor_common::REENTRY_LIMIT {
            return;
        }
        if stopped {
            kill_members(rt.procs, l);
        }
        let action = if stopped {
            Action::Killed
        } else {
            Action::Alert
        };
        let summary = format!(
            "a startup hook keeps re-running itself in interpreters it starts ({} times): a runaway respawn",
            l.reentries
        );
        self.fire(
            rt,
            h.lineage,
            RESPAWN,
            Severity::High,
            action,
            h.tgid,
            None,
            summary,
            true,
        );
    }

    /// The egress program dropped packets of a connection a hook's lineage opened before
    /// it was denied: close such connections, so that what TCP keeps retransmitting cannot
    /// leave once pthwatch stops (a restart).
    fn close_dropped_connections(&mut self, rt: &RuntimeParts<'_>, c: &Counters) {
        let drops = c[monitor_common::counter::EGRESS_DROPS as usize];
        if drops == self.egress_drops_seen {
            return;
        }
        self.egress_drops_seen = drops;
        crate::sockdiag::close_denied(rt.sensors, "after an egress drop");
    }

    /// Logs events the kernel could not deliver (full ring buffer) as they happen, with
    /// how many lineages were quarantined for it.
    fn report_lost_events(&mut self, rt: &RuntimeParts<'_>, c: &Counters) {
        use monitor_common::counter::{LOST_QUARANTINES, RINGBUF_DROPS};
        self.publish(rt, *c);
        let now = (c[RINGBUF_DROPS as usize], c[LOST_QUARANTINES as usize]);
        if now.0 > self.lost_seen.0 {
            tracing::error!(
                lost = now.0 - self.lost_seen.0,
                lost_total = now.0,
                lineages_quarantined = now.1 - self.lost_seen.1,
                "ring buffer full: kernel events were lost"
            );
        }
        self.lost_seen = now;
    }

    /// Catalogues the credential files of home directories that appeared since start
    /// (files created later in any home are matched by name in the kernel already).
    fn follow_new_homes(&mut self, rt: &mut RuntimeParts<'_>) {
        for home in crate::credentials::discover_homes(std::path::Path::new("/")) {
            if self.homes.contains(&home) || !self.catalog.add_home(home.clone()) {
                continue;
            }
            let found = self.catalog.resolve_home(&home);
            for error in &found.errors {
                tracing::debug!(home = %home.display(), %error, "new home");
            }
            let mut n = 0usize;
            for cred in &found.credentials {
                match rt.sensors.set_credential(cred.key, cred.category as u32) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        tracing::warn!(path = %cred.path.display(), error = %e, "could not record credential")
                    }
                }
            }
            tracing::info!(home = %home.display(), credentials = n, "following a new home directory");
            self.homes.push(home);
        }
    }

    /// An interpreter opened a startup hook during start-up.
    fn on_hook_open(&mut self, rt: &mut RuntimeParts<'_>, o: &Open, key: FileKey) {
        let h = &o.header;
        let Some(hook) = self.hooks.get_or_read(key, &o.path, h.tgid) else {
            return;
        };
        // A site dir the inventory did not know (a venv seen running): watch it from now on.
        if let (Some(w), Some(dir)) = (self.watcher.as_mut(), hook.path.parent())
            && hook.kind == crate::inventory::HookKind::Pth
            && dir.exists()
            && let Err(e) = w.watch(dir)
        {
            tracing::debug!(dir = %dir.display(), error = %e, "could not watch site dir");
        }
        let info = hook.kernel_info();
        if o.match_flags & open_match::HOOK_KNOWN == 0 || o.hook_class != info.class {
            // Teach the kernel, so the next interpreter gets the right attribution.
            if let Err(e) = rt.sensors.set_hook(key, info) {
                tracing::warn!(path = %o.path.display(), error = %e, "could not record hook class in the kernel");
            }
        }
        let executable = matches!(hook.class, HookClass::Unknown | HookClass::Risky { .. });
        if h.lineage != 0 {
            let environment = self
                .config
                .credentials
                .category_enabled(crate::credentials::Category::ProcessEnvironment);
            let l = self.lineage(h.lineage, h.tgid);
            if l.hook.is_none() {
                l.hook = Some(Arc::clone(&hook));
                l.root_tgid = h.tgid;
                if executable && environment {
                    self.taint_by_environment(rt, h.lineage, h.tgid);
                }
            }
        }
        if executable && let Some(j) = self.journal.as_mut() {
            j.hook_ran(&hook, h.tgid, h.lineage);
        }
        // The response applies to every run of the hook; the report is made once.
        let action = if executable && h.lineage != 0 {
            self.respond_outside_kernel(rt, h.lineage, UNKNOWN_HOOK)
        } else {
            Action::Alert
        };
        if executable && self.reported_hooks.insert(hook.sha256.clone()) {
            let summary = format!(
                "an executable startup hook that is not a known-benign form ran: {}",
                display_path(&hook.path)
            );
            let alert = self.build(
                rt,
                h.lineage,
                UNKNOWN_HOOK,
                Severity::Medium,
                action,
                h.tgid,
                None,
                summary,
                Some(&hook),
            );
            self.emit(alert);
        }
    }

    fn on_exec(&mut self, rt: &mut RuntimeParts<'_>, e: &Exec) {
        let h = &e.header;
        // What the kernel refused is reported whatever userspace thought of the lineage.
        if h.lineage == 0 || (self.dismissed.contains(&h.lineage) && !e.denied) {
            return;
        }
        // The exec may be the first the daemon hears of the lineage: know it before the
        // record, so that the record counts towards the lineage's cap.
        self.lineage(h.lineage, h.tgid);
        let mut record = json!({
            "event": "exec",
            "pid": h.tgid,
            "ppid": h.ppid,
            "exe": display_path(&e.exe),
            "argv": e.argv.iter().take(16).collect::<Vec<_>>(),
        });
        if e.denied {
            record["refused"] = json!(true);
        }
        if let Some(c) = self.containers.container_of(h.cgroup_id, h.tgid) {
            record["container"] = json!(c);
        }
        self.journal_activity(Kind::Process, h.lineage, h.tgid, record);
        let summary = if e.denied {
            // The kernel refused it (block or kill mode): the program never ran.
            format!(
                "a startup hook's lineage tried to execute a file it wrote, and the kernel refused: {}",
                display_path(&e.exe)
            )
        } else {
            let key = FileKey::new(e.exe_dev, e.exe_ino);
            let memfd = e.exe.to_string_lossy().starts_with("/memfd:");
            // A script runs under its interpreter: the executable is the interpreter, the
            // file the lineage wrote is an argument (`#!` puts the script's path there).
            let scripts = script_arguments(h.tgid, &e.argv);
            let l = self.lineage(h.lineage, h.tgid);
            let written = if l.written.contains(&key) || memfd {
                Some(display_path(&e.exe))
            } else {
                scripts
                    .into_iter()
                    .find(|s| s.memfd || l.written.contains(&s.key))
                    .map(|s| s.shown)
            };
            let Some(what) = written else { return };
            format!("a startup hook's lineage executed a file it wrote: {what}")
        };
        self.respond_and_fire(rt, h.lineage, EXEC_WRITTEN, h.tgid, summary);
    }

    fn on_net(&mut self, rt: &mut RuntimeParts<'_>, n: &Net) {
        let h = &n.header;
        if h.lineage == 0 || self.dismissed.contains(&h.lineage) {
            return;
        }
        let inet = n.addr.is_some() || names_socket_only(n);
        let action = match n.verdict {
            verdict::KILLED => Action::Killed,
            verdict::DENIED if self.modes.get(EXFIL) == Mode::Kill => Action::Killed,
            verdict::DENIED => Action::Blocked,
            _ => Action::Alert,
        };
        let tgid = self.acting_tgid(h.lineage, h.tgid);
        let kill_mode = self.modes.get(EXFIL) == Mode::Kill;
        let l = self.lineage(h.lineage, tgid);
        if !inet && n.verdict == verdict::ALLOWED {
            return;
        }
        let n = &with_held_destination(l, n);
        l.network_attempted = true;
        // The kernel counts a request to the instance metadata service as a credential
        // read (it serves the machine's cloud credentials).
        if let Some(addr) = n.addr.filter(|a| is_metadata_service(*a)) {
            let what = format!("cloud instance metadata service ({addr}:{})", n.port);
            if !l.credentials.contains(&what) {
                l.credentials.push(what);
            }
            l.first_credential.get_or_insert_with(Instant::now);
        }
        let decided = match n.verdict {
            verdict::KILLED => "killed",
            verdict::DENIED => "blocked",
            _ => "allowed",
        };
        let record = json!({
            "action": decided,
            "what": "network attempt",
            "pid": tgid,
            "destination": n.addr.map(|a| json!({
                "address": a.to_string(),
                "port": n.port,
                "protocol": protocol_name(n.protocol),
            })),
        });
        self.journal_activity(Kind::Decision, h.lineage, tgid, record);
        let l = self.lineage(h.lineage, tgid);
        if !(l.tainted() || n.verdict != verdict::ALLOWED)
            || l.fired.contains(EXFIL)
            // A quarantined lineage that read nothing: its own rule reported the block.
            || (!l.tainted() && l.quarantined)
        {
            return;
        }
        let deadline = Instant::now() + SETTLE;
        match &mut l.pending_net {
            Some((_, best, ev)) => {
                if action > *best {
                    *best = action;
                }
                // Keep the most complete report of the attempt: a destination, and the
                // protocol the cgroup programs know and the syscall tracepoints do not.
                if n.addr.is_some() && (ev.addr.is_none() || (ev.protocol == 0 && n.protocol != 0))
                {
                    *ev = n.clone();
                }
            }
            None => l.pending_net = Some((deadline, action, n.clone())),
        }
        if action == Action::Killed || kill_mode {
            kill_members(rt.procs, l);
        }
    }

    /// The response of a rule the kernel does not decide by itself, in that rule's mode:
    /// block quarantines the lineage (the kernel denies its network from now on), kill
    /// kills it (from the kernel at each member's next hooked call, and from here).
    /// A high-severity rule decided here, not in the kernel: its response (by the rule's
    /// mode), then its alert.
    fn respond_and_fire(
        &mut self,
        rt: &mut RuntimeParts<'_>,
        lineage: u64,
        rule: &'static str,
        tgid: u32,
        summary: String,
    ) {
        let action = self.respond_outside_kernel(rt, lineage, rule);
        self.fire(
            rt,
            lineage,
            rule,
            Severity::High,
            action,
            tgid,
            None,
            summary,
            true,
        );
    }

    fn respond_outside_kernel(
        &mut self,
        rt: &mut RuntimeParts<'_>,
        lineage: u64,
        rule: &'static str,
    ) -> Action {
        let (flag, action) = match self.modes.get(rule) {
            Mode::Alert => return Action::Alert,
            Mode::Block => (lineage_flags::QUARANTINED, Action::Blocked),
            Mode::Kill => (lineage_flags::KILL, Action::Killed),
        };
        if lineage == 0 {
            return Action::Alert;
        }
        if let Err(e) = rt.sensors.mark_lineage(lineage, flag) {
            tracing::warn!(lineage, rule, error = %e, "could not apply the rule's response in the kernel");
            return Action::Alert;
        }
        let mut root = 0;
        if let Some(l) = self.lineages.get_mut(&lineage) {
            root = l.root_tgid;
            l.quarantined |= action == Action::Blocked;
            if action == Action::Killed {
                kill_members(rt.procs, l);
            }
        }
        if let Some(j) = self.journal.as_mut() {
            let name = if action == Action::Killed {
                "killed"
            } else {
                "blocked"
            };
            j.response(lineage, root, rule, name);
        }
        action
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per rule; a struct would only rename them"
    )]
    fn fire(
        &mut self,
        rt: &mut RuntimeParts<'_>,
        lineage: u64,
        rule: &'static str,
        severity: Severity,
        action: Action,
        tgid: u32,
        net: Option<&Net>,
        summary: String,
        once: bool,
    ) {
        if once {
            let Some(l) = self.lineages.get_mut(&lineage) else {
                return;
            };
            if !l.fired.insert(rule) {
                return;
            }
        }
        let alert = self.build(
            rt, lineage, rule, severity, action, tgid, net, summary, None,
        );
        self.emit(alert);
    }

    #[expect(clippy::too_many_arguments, reason = "see fire")]
    fn build(
        &self,
        rt: &RuntimeParts<'_>,
        lineage: u64,
        rule: &'static str,
        severity: Severity,
        action: Action,
        tgid: u32,
        net: Option<&Net>,
        summary: String,
        hook_override: Option<&Hook>,
    ) -> Alert {
        let l = self.lineages.get(&lineage);
        let hook = hook_override.or_else(|| l.and_then(|l| l.hook.as_deref()));
        let procs: &ProcessTable = rt.procs;
        let info = procs.get(tgid);
        let process = ProcessRef {
            pid: tgid,
            ppid: info.map_or(0, |p| p.ppid),
            uid: info.map_or(u32::MAX, |p| p.uid),
            exe: info.map(|p| display_path(&p.exe)).unwrap_or_default(),
            cmdline: info.map(|p| p.argv.clone()).unwrap_or_default(),
        };
        let lineage_chain = procs
            .ancestors(tgid)
            .into_iter()
            .map(|pid| LineageEntry {
                pid,
                exe: procs
                    .get(pid)
                    .map(|p| display_path(&p.exe))
                    .unwrap_or_default(),
            })
            .collect();
        let destination = net.and_then(|n| {
            n.addr.map(|a| Destination {
                address: a.to_string(),
                port: n.port,
                protocol: protocol_name(n.protocol).to_owned(),
            })
        });
        Alert {
            id: alert_id(lineage, rule),
            time: rfc3339(SystemTime::now()),
            rule,
            severity,
            action,
            summary,
            host: self.host.clone(),
            process,
            lineage: lineage_chain,
            startup_hook: hook.map(hook_ref),
            credentials: l.map(|l| l.credentials.clone()).unwrap_or_default(),
            destination,
            persistence: l.map(|l| l.persistence.clone()).unwrap_or_default(),
            container: ContainerRef {
                cgroup_id: info.map_or(0, |p| p.cgroup_id),
                ..ContainerRef::default()
            },
            lineage_id: lineage,
        }
    }

    fn emit(&mut self, mut alert: Alert) {
        // Before the allowlist: entries by image and namespace match what this finds.
        self.containers
            .fill(&mut alert.container, alert.process.pid);
        if let Some(reason) = self.suppressed(&alert) {
            self.alerts_allowed += 1;
            if let Some(j) = self.journal.as_mut() {
                j.suppressed(&alert, &reason);
            }
            return;
        }
        tracing::warn!(rule = alert.rule, severity = ?alert.severity, action = ?alert.action, pid = alert.process.pid, "{}", alert.summary);
        if let Some(j) = self.journal.as_mut() {
            j.alert(&alert);
        }
        *self
            .alerts_by_rule
            .entry((alert.rule, action_label(alert.action)))
            .or_default() += 1;
        if self.sinks.emit(&alert) {
            self.alerts_written += 1;
        } else {
            // Logged and counted per sink; this is the daemon-wide count.
            self.alert_errors += 1;
        }
    }

    /// Fires what has waited long enough, forgets old lineages.
    fn flush(&mut self, rt: &mut RuntimeParts<'_>, now: Instant) {
        let mut due = Vec::new();
        for (id, l) in &mut self.lineages {
            if let Some((deadline, _, _)) = &l.pending_net
                && *deadline <= now
            {
                let (_, action, net) = l.pending_net.take().expect("checked above");
                due.push((*id, "net", action, Some(net)));
            }
            if let Some(first) = l.first_credential {
                let quiet = l.last_seen.is_none_or(|t| now.duration_since(t) >= QUIET);
                if !l.network_attempted && quiet && now.duration_since(first) >= QUIET {
                    due.push((*id, "creds", Action::Alert, None));
                }
            }
        }
        for (id, what, action, net) in due {
            let tgid = self.acting_tgid(id, net.as_ref().map_or(0, |n| n.header.tgid));
            if what == "net" {
                let dest = net
                    .as_ref()
                    .and_then(|n| n.addr.map(|a| format!("{a}:{}", n.port)))
                    .unwrap_or_else(|| "a socket it already held".to_owned());
                let known_read = self.lineages.get(&id).is_some_and(Lineage::tainted);
                let summary = if known_read {
                    format!("a startup hook's lineage read credentials and then contacted {dest}")
                } else {
                    // Denied without a read userspace saw: its events were lost (full ring
                    // buffer) and the kernel failed closed.
                    format!(
                        "a startup hook's lineage whose events were lost tried to contact {dest}; denied (fail-closed)"
                    )
                };
                self.fire(
                    rt,
                    id,
                    EXFIL,
                    Severity::Critical,
                    action,
                    tgid,
                    net.as_ref(),
                    summary,
                    true,
                );
            } else {
                let summary = "a startup hook's lineage read credentials".to_owned();
                self.respond_and_fire(rt, id, "hook_credential_access", tgid, summary);
            }
        }
        self.lineages.retain(|_, l| {
            l.last_seen
                .is_none_or(|t| now.duration_since(t) < LINEAGE_TTL)
        });
        if now.duration_since(self.containers_pruned) >= CONTAINERS_PRUNE_EVERY {
            self.containers_pruned = now;
            self.containers.prune();
        }
    }
}

impl Detector {
    /// SIGHUP: re-reads the configuration. An invalid file is refused and the running
    /// configuration stays; a valid one takes effect at once, in the kernel too.
    fn reload(&mut self, rt: &mut RuntimeParts<'_>) {
        let Some(cli) = self.cli.clone() else {
            return;
        };
        let next = match crate::config::reload(cli.config_path.as_deref(), &self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("configuration reload refused, the running one stays:\n{e}");
                return;
            }
        };
        let (config, modes) = match cli.settings(next) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused, the running one stays");
                return;
            }
        };
        let blocking = RULES.iter().any(|r| modes.get(r) != Mode::Alert);
        if blocking && !rt.sensors.can_deny_connects() {
            tracing::error!(
                "configuration reload refused, the running one stays: it asks for block or kill, but the connect programs are not attached on this kernel (see `pthwatch check`)"
            );
            return;
        }
        match rt.sensors.config() {
            Ok(mut k) => {
                k.mode = modes.kernel().kernel();
                k.unknown_hook_mode = modes.get(UNKNOWN_HOOK).kernel();
                k.respawn_mode = modes.get(RESPAWN).kernel();
                k.exec_written_mode = modes.get(EXEC_WRITTEN).kernel();
                k.probation_opens = config.daemon.probation_opens;
                k.fail_closed = u32::from(config.daemon.fail_closed_on_lost_events);
                if let Err(e) = rt.sensors.set_config(k) {
                    tracing::error!(error = %e, "could not apply the reloaded modes in the kernel; the running ones stay");
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the kernel's settings; reload refused");
                return;
            }
        }
        tracing::info!(mode = ?modes.kernel(), "configuration reloaded");
        self.modes = modes;
        self.config = config;
        self.apply_container_settings();
    }
}

impl EventSink for Detector {
    fn on_reload(&mut self, rt: &mut RuntimeParts<'_>) {
        self.reload(rt);
    }

    fn on_event(&mut self, rt: &mut RuntimeParts<'_>, event: Event) {
        self.events_by_kind[event_kind(&event)] += 1;
        match &event {
            Event::Open(o) => self.on_open(rt, o),
            Event::Exec(e) => self.on_exec(rt, e),
            Event::NewExecutable(e) => {
                let enabled = self.config.daemon.probation_exemptions;
                self.probation.on_new_executable(rt.sensors, e, enabled);
            }
            Event::Net(n) => self.on_net(rt, n),
            Event::Fork(f)
                if f.header.lineage != 0 && !self.dismissed.contains(&f.header.lineage) =>
            {
                let new = self
                    .lineage(f.header.lineage, f.header.tgid)
                    .members
                    .insert(f.child_tgid);
                if new && f.child_tgid != f.header.tgid {
                    let record =
                        json!({ "event": "fork", "pid": f.child_tgid, "ppid": f.header.tgid });
                    self.journal_activity(Kind::Process, f.header.lineage, f.header.tgid, record);
                }
            }
            Event::Exit(h)
                if h.lineage != 0 && h.pid == h.tgid && !self.dismissed.contains(&h.lineage) =>
            {
                let record = json!({ "event": "exit", "pid": h.tgid });
                self.journal_activity(Kind::Process, h.lineage, h.tgid, record);
            }
            Event::IoUring(u)
                if u.header.lineage != 0 && !self.dismissed.contains(&u.header.lineage) =>
            {
                let l = self.lineage(u.header.lineage, u.header.tgid);
                if u.kind == iouring_kind::CREATE || matches!(u.opcode, 18 | 28) {
                    l.iouring = true;
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, rt: &mut RuntimeParts<'_>) {
        if let Some(w) = self.watcher.as_mut() {
            crate::watch::apply(w, &mut self.hooks, rt.sensors);
        }
        // One read of the kernel's per-CPU counters serves both.
        let counters = rt.sensors.counters();
        self.report_lost_events(rt, &counters);
        self.close_dropped_connections(rt, &counters);
        if self.homes_checked.elapsed() >= HOMES_EVERY {
            self.homes_checked = Instant::now();
            self.follow_new_homes(rt);
        }
        let enabled = self.config.daemon.probation_exemptions;
        self.probation.on_tick(rt.sensors, enabled, Instant::now());
        self.flush(rt, Instant::now());
        if let Some(j) = self.journal.as_mut() {
            j.flush();
        }
        rt.procs.gc();
    }
}

/// Where `event` is counted in `crate::metrics::EVENT_KINDS`.
fn event_kind(event: &Event) -> usize {
    use crate::metrics::event_kind_index as at;
    match event {
        Event::Exec(_) => const { at("exec") },
        Event::Fork(_) => const { at("fork") },
        Event::Exit(_) => const { at("exit") },
        Event::Open(_) => const { at("open") },
        Event::Net(_) => const { at("net") },
        Event::IoUring(_) => const { at("io_uring") },
        Event::StartupDone(_) => const { at("startup_done") },
        Event::NewExecutable(_) => const { at("new_executable") },
    }
}

/// An alert's action as the metrics label it (as the alert's JSON spells it).
fn action_label(action: crate::alert::Action) -> &'static str {
    use crate::alert::Action;
    match action {
        Action::Alert => "alert",
        Action::Blocked => "blocked",
        Action::Killed => "killed",
    }
}

/// A file an exec'd program was handed to run (a script argument).
struct ScriptArg {
    shown: String,
    key: FileKey,
    memfd: bool,
}

/// The first two non-option arguments of a freshly exec'd process that name files, seen
/// from that process (its cwd, its root, its descriptors: `/proc/self/fd/N` and
/// `/dev/fd/N` are how a memfd or an unlinked file is run).
fn script_arguments(tgid: u32, argv: &[String]) -> Vec<ScriptArg> {
    use std::os::unix::fs::MetadataExt as _;
    let proc = PathBuf::from(format!("/proc/{tgid}"));
    argv.iter()
        .skip(1)
        .filter(|a| !a.starts_with('-') && !a.is_empty())
        .take(2)
        .filter_map(|arg| {
            let fd_path = arg
                .strip_prefix("/proc/self/fd/")
                .or_else(|| arg.strip_prefix("/dev/fd/"))
                .map(|n| proc.join("fd").join(n));
            let host = match &fd_path {
                Some(p) => p.clone(),
                None if arg.starts_with('/') => proc.join("root").join(&arg[1..]),
                None => proc.join("cwd").join(arg),
            };
            let meta = std::fs::metadata(&host).ok()?;
            if !meta.is_file() {
                return None;
            }
            let target = fd_path
                .and_then(|p| std::fs::read_link(p).ok())
                .map(|t| t.to_string_lossy().into_owned());
            Some(ScriptArg {
                memfd: target.as_deref().is_some_and(|t| t.starts_with("/memfd:")),
                shown: target.unwrap_or_else(|| arg.clone()),
                key: crate::sensors::file_key_of(meta.dev(), meta.ino()),
            })
        })
        .collect()
}

/// Connects a lineage may remember (per lineage; the oldest are dropped first).
const MAX_CONNECTS: usize = 256;

/// A decision that names only the socket (by cookie), no destination: a packet dropped
/// at egress, or a send the LSM refused on a socket connected earlier. Both are about
/// Internet sockets.
fn names_socket_only(n: &Net) -> bool {
    use monitor_common::net_source::{CG_EGRESS, LSM_SENDMSG};
    n.addr.is_none() && matches!(n.source, CG_EGRESS | LSM_SENDMSG)
}

/// Records an allowed connect's destination by socket cookie, and fills in the
/// destination of a decision that names only the socket from it.
fn with_held_destination(l: &mut Lineage, n: &Net) -> Net {
    use monitor_common::net_source::{CG_CONNECT4, CG_CONNECT6, LSM_CONNECT};
    if matches!(n.source, CG_CONNECT4 | CG_CONNECT6 | LSM_CONNECT)
        && n.cookie != 0
        && n.addr.is_some()
    {
        if l.connects.len() >= MAX_CONNECTS
            && let Some(&oldest) = l.connects.keys().min()
        {
            l.connects.remove(&oldest);
        }
        l.connects.insert(n.cookie, n.clone());
    }
    let mut n = n.clone();
    if names_socket_only(&n)
        && let Some(c) = l.connects.get(&n.cookie)
    {
        n.addr = c.addr;
        n.port = c.port;
        n.protocol = c.protocol;
    }
    n
}

/// SIGKILLs every live member of a lineage. The kernel already killed the member that
/// acted; this catches siblings that are asleep and would never reach a hooked call.
fn kill_members(procs: &ProcessTable, l: &Lineage) {
    for &pid in &l.members {
        if pid <= 1 || pid == std::process::id() {
            continue;
        }
        if procs.get(pid).is_some_and(|p| p.exited.is_some()) {
            continue;
        }
        // SAFETY: kill(2) has no memory preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn hook_ref(hook: &Hook) -> HookRef {
    let line = hook
        .exec_lines
        .iter()
        .find(|l| !l.findings.is_empty())
        .or_else(|| hook.exec_lines.first());
    let findings = match &hook.class {
        HookClass::Risky { findings } => findings.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    };
    HookRef {
        kind: hook.kind.as_str().to_owned(),
        path: display_path(&hook.path),
        sha256: hook.sha256.clone(),
        line: line.map(|l| l.text.clone()),
        line_number: line.map(|l| l.lineno),
        distribution: hook.distribution.clone(),
        class: hook.class.name().to_owned(),
        findings,
        deferral: HookRef::deferral_of(hook.kernel_info().flags),
    }
}

/// The cloud instance metadata and credential endpoints the kernel treats as credential
/// reads: the same test, from monitor-common, as the eBPF net probes.
fn is_metadata_service(addr: std::net::IpAddr) -> bool {
    match addr {
        std::net::IpAddr::V4(a) => monitor_common::is_metadata_v4(a.to_bits()),
        std::net::IpAddr::V6(a) => {
            let b = a.to_bits();
            monitor_common::is_metadata_v6([
                (b >> 96) as u32,
                (b >> 64) as u32,
                (b >> 32) as u32,
                b as u32,
            ])
        }
    }
}

/// What `[[allow]]` entries match of an alert (its container filled in by
/// [`ContainerResolver::fill`] first).
pub(crate) fn alert_facts(alert: &Alert) -> crate::config::AlertFacts<'_> {
    let hook = alert.startup_hook.as_ref();
    let dest = alert.destination.as_ref();
    crate::config::AlertFacts {
        exe: Some(alert.process.exe.as_str()).filter(|e| !e.is_empty()),
        hook_sha256: hook.map(|h| h.sha256.as_str()),
        distribution: hook.and_then(|h| h.distribution.as_deref()),
        dest: dest.and_then(|d| d.address.parse().ok()),
        port: dest.map(|d| d.port),
        container_image: alert.container.image.as_deref(),
        k8s_namespace: alert.container.pod_namespace.as_deref(),
    }
}

/// A stable id per (lineage, rule): the same incident never gets two ids.
fn alert_id(lineage: u64, rule: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(lineage.to_le_bytes());
    h.update(rule.as_bytes());
    h.update(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_metadata_endpoints_are_known_in_both_families() {
        for a in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "100.100.100.200",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_metadata_service(a.parse().unwrap()), "{a}");
        }
        for a in [
            "169.254.169.253",
            "127.0.0.1",
            "10.0.0.1",
            "fd00:ec2::255",
            "::1",
        ] {
            assert!(!is_metadata_service(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn script_arguments_name_files_as_the_process_sees_them() {
        use std::os::unix::fs::MetadataExt as _;
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("pthwatch-script-args-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("stage.py");
        std::fs::write(&script, "print(1)\n").unwrap();
        let meta = std::fs::metadata(&script).unwrap();
        let argv: Vec<String> = ["python3", "-u", script.to_str().unwrap(), "--flag"]
            .map(String::from)
            .to_vec();
        let found = script_arguments(me, &argv);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].key,
            crate::sensors::file_key_of(meta.dev(), meta.ino())
        );
        assert!(!found[0].memfd);
        // A memfd run through /proc/self/fd.
        let name = std::ffi::CString::new("stage").unwrap();
        // SAFETY: a valid name; the descriptor is closed below.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: writing a few bytes to our own descriptor.
        assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
        let argv = vec!["sh".to_owned(), format!("/proc/self/fd/{fd}")];
        let found = script_arguments(me, &argv);
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        assert_eq!(found.len(), 1);
        assert!(found[0].memfd, "{}", found[0].shown);
        assert!(found[0].shown.starts_with("/memfd:stage"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn action_labels_match_the_alerts_json() {
        use crate::alert::Action;
        for action in [Action::Alert, Action::Blocked, Action::Killed] {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::Value::from(action_label(action))
            );
        }
    }

    #[test]
    fn rule_modes_default_and_override() {
        let mut m = RuleModes::new(Mode::Alert);
        assert_eq!(m.kernel(), Mode::Alert);
        assert_eq!(RuleModes::new(Mode::Kill).get(UNKNOWN_HOOK), Mode::Alert);
        assert_eq!(
            RuleModes::new(Mode::Kill).get("hook_persistence"),
            Mode::Kill
        );
        m.set(EXFIL, Mode::Kill).unwrap();
        m.set("hook_persistence", Mode::Block).unwrap();
        m.set("hook_persistence", Mode::Kill).unwrap();
        assert_eq!(m.kernel(), Mode::Kill);
        assert_eq!(m.get("hook_persistence"), Mode::Kill);
        assert_eq!(m.get(UNKNOWN_HOOK), Mode::Alert);
        let err = m.set("hook_typo", Mode::Block).unwrap_err();
        assert!(err.contains("hook_typo") && err.contains(EXFIL), "{err}");
    }

    #[test]
    fn an_egress_drop_borrows_the_destination_of_the_connect() {
        use monitor_common::net_source::{CG_CONNECT4, CG_EGRESS};
        let mut l = Lineage::default();
        let connect = Net {
            header: Default::default(),
            family: 2,
            port: 8443,
            protocol: 6,
            addr: Some("10.1.2.3".parse().unwrap()),
            cookie: 77,
            source: CG_CONNECT4,
            verdict: verdict::ALLOWED,
            fd: None,
        };
        with_held_destination(&mut l, &connect);
        let drop = Net {
            addr: None,
            port: 0,
            protocol: 0,
            source: CG_EGRESS,
            verdict: verdict::DENIED,
            ..connect.clone()
        };
        let filled = with_held_destination(&mut l, &drop);
        assert_eq!(filled.addr, connect.addr);
        assert_eq!((filled.port, filled.protocol), (8443, 6));
        let other = Net {
            cookie: 78,
            ..drop.clone()
        };
        assert_eq!(with_held_destination(&mut l, &other).addr, None);
    }

    #[test]
    fn an_lsm_refused_send_borrows_the_destination_of_the_lsm_connect() {
        use monitor_common::net_source::{LSM_CONNECT, LSM_SENDMSG};
        let mut l = Lineage::default();
        let connect = Net {
            header: Default::default(),
            family: 10,
            port: 443,
            protocol: 6,
            addr: Some("2001:db8::7".parse().unwrap()),
            cookie: 91,
            source: LSM_CONNECT,
            verdict: verdict::ALLOWED,
            fd: None,
        };
        with_held_destination(&mut l, &connect);
        let refused = Net {
            family: 0,
            addr: None,
            port: 0,
            source: LSM_SENDMSG,
            verdict: verdict::DENIED,
            ..connect.clone()
        };
        assert!(names_socket_only(&refused));
        let filled = with_held_destination(&mut l, &refused);
        assert_eq!(filled.addr, connect.addr);
        assert_eq!(filled.port, 443);
        // A send that names its destination is about that destination.
        let named = Net {
            source: LSM_SENDMSG,
            ..connect.clone()
        };
        assert!(!names_socket_only(&named));
    }
}
