//! What the detector writes to the event log (`crate::eventlog`): every alert, every
//! decision (a response applied, a report an exception silenced), the runs of executable
//! hooks, and what hook-attributed lineages did (processes, credential reads, persistence
//! writes, network attempts). `pthwatch log query` and `log show` read these back, so the
//! field names follow theirs: `pid`, `ppid`, `lineage_id`, `event`, `exe`, `path`,
//! `action`, `what`, `rule`, `reason`, `destination`.
use serde_json::{Value, json};

use crate::{
    alert::Alert,
    eventlog::{EventLog, Kind},
    inventory::Hook,
};

/// Records of one lineage's activity (processes, reads, network attempts) kept in the log;
/// past it, one record says that the rest was left out. Alerts and decisions are always
/// written.
pub const LINEAGE_RECORDS: u32 = 256;

/// The log, and what could not be written to it.
pub struct Journal {
    log: EventLog,
    /// Records the log refused (a full disk, an I/O error): counted and logged.
    pub errors: u64,
    pub written: u64,
}

impl Journal {
    pub fn new(log: EventLog) -> Self {
        Self {
            log,
            errors: 0,
            written: 0,
        }
    }

    pub fn append(&mut self, kind: Kind, data: Value) {
        match self.log.append(kind, data) {
            Ok(_) => self.written += 1,
            Err(e) => {
                self.errors += 1;
                // Every failure is counted (metrics); the log says so at 1, 2, 4, 8...
                if self.errors.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        failures = self.errors,
                        path = %self.log.path().display(),
                        "could not append to the event log"
                    );
                }
            }
        }
    }

    pub fn alert(&mut self, alert: &Alert) {
        match serde_json::to_value(alert) {
            Ok(v) => self.append(Kind::Alert, v),
            Err(e) => {
                self.errors += 1;
                tracing::error!(error = %e, alert_id = %alert.id, "could not encode an alert for the event log");
            }
        }
    }

    /// A report an allow entry or a disabled rule silenced.
    pub fn suppressed(&mut self, alert: &Alert, reason: &str) {
        self.append(
            Kind::Decision,
            json!({
                "action": "allowed",
                "what": "report suppressed by configuration",
                "rule": alert.rule,
                "reason": reason,
                "alert_id": alert.id,
                "pid": alert.process.pid,
                "lineage_id": alert.lineage_id,
                "summary": alert.summary,
            }),
        );
    }

    /// A response applied outside the kernel's own verdicts: a quarantine, a kill.
    pub fn response(&mut self, lineage: u64, pid: u32, rule: &str, action: &str) {
        let what = match action {
            "blocked" => "lineage quarantined: the kernel denies it the network",
            "killed" => "lineage killed",
            _ => "response",
        };
        self.append(
            Kind::Decision,
            json!({
                "action": action,
                "what": what,
                "rule": rule,
                "pid": pid,
                "lineage_id": lineage,
            }),
        );
    }

    /// An executable hook (unknown or risky) ran in an interpreter.
    pub fn hook_ran(&mut self, hook: &Hook, pid: u32, lineage: u64) {
        self.append(
            Kind::Hook,
            json!({
                "event": "ran",
                "path": crate::inventory::display_path(&hook.path),
                "sha256": hook.sha256,
                "kind": hook.kind.as_str(),
                "class": hook.class.name(),
                "distribution": hook.distribution,
                "pid": pid,
                "lineage_id": lineage,
            }),
        );
    }

    /// What a tracked lineage did: a process event, a file it touched, a network attempt.
    pub fn activity(&mut self, kind: Kind, lineage: u64, fields: Value) {
        let mut data = fields;
        if let Value::Object(m) = &mut data {
            m.insert("lineage_id".into(), lineage.into());
        }
        self.append(kind, data);
    }

    /// Says, once per lineage, that its further activity is not logged.
    pub fn lineage_capped(&mut self, lineage: u64, pid: u32) {
        self.append(
            Kind::Decision,
            json!({
                "action": "not logged",
                "what": format!("activity past {LINEAGE_RECORDS} records of this lineage"),
                "pid": pid,
                "lineage_id": lineage,
            }),
        );
    }

    /// Syncs what was written (the event loop's tick).
    pub fn flush(&mut self) {
        if let Err(e) = self.log.flush() {
            self.errors += 1;
            tracing::error!(error = %e, "could not sync the event log");
        }
    }

    pub fn close(self) {
        let path = self.log.path().to_owned();
        if let Err(e) = self.log.close() {
            tracing::error!(error = %e, path = %path.display(), "could not close the event log");
        }
    }
}
