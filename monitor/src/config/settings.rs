//! The plain sections: `[daemon]`, `[rules.<name>]`, `[event_log]`, `[metrics]`,
//! `[credentials]` and `[containers]`. Their defaults are the ones `packaging/pthwatch.toml` documents.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{
    cli::Mode,
    credentials::{Category, CredentialConfig},
    detect::{RULES, UNKNOWN_HOOK},
};

const MODES: [&str; 3] = ["alert", "block", "kill"];
const RULE_MODES: [&str; 4] = ["alert", "block", "kill", "inherit"];

/// `[daemon]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    /// The response to a hook lineage that read credentials and tries the network.
    #[serde(deserialize_with = "mode")]
    pub mode: Mode,
    /// Opens a freshly exec'd process makes before it is ruled out as an interpreter.
    pub probation_opens: u32,
    /// Spare the probation to programs checked once as unable to run Python, that only
    /// root can change (`crate::probation`).
    pub probation_exemptions: bool,
    /// Size of the kernel's event ring buffer: a power of two.
    pub ringbuf_bytes: u32,
    /// In block and kill mode, deny the network to a lineage whose events were lost.
    pub fail_closed_on_lost_events: bool,
    pub state_dir: PathBuf,
}

impl DaemonSettings {
    pub const MAX_PROBATION_OPENS: u32 = 4096;
    pub const MIN_RINGBUF_BYTES: u32 = 64 << 10;
    pub const MAX_RINGBUF_BYTES: u32 = 256 << 20;
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Alert,
            probation_opens: 64,
            probation_exemptions: true,
            ringbuf_bytes: 8 << 20,
            fail_closed_on_lost_events: true,
            state_dir: PathBuf::from("/var/lib/pthwatch"),
        }
    }
}

/// `[rules.<name>]`: one rule's switch and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSettings {
    pub enabled: bool,
    /// `None`: `inherit`, the rule follows `daemon.mode`.
    pub mode: Option<Mode>,
}

/// One `[rules.<name>]` table as written: only the keys given change the rule's default.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RuleEntry {
    enabled: Option<bool>,
    #[serde(deserialize_with = "rule_mode")]
    mode: Option<Option<Mode>>,
}

/// The settings of every rule of `detect::RULES`, in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTable(Vec<(&'static str, RuleSettings)>);

impl Default for RuleTable {
    fn default() -> Self {
        Self(
            RULES
                .iter()
                .map(|&rule| {
                    // Many hosts run home-grown hooks: an unknown hook alone is reported, not
                    // acted on, unless the operator says so (as `RuleModes` does).
                    let mode = (rule == UNKNOWN_HOOK).then_some(Mode::Alert);
                    (
                        rule,
                        RuleSettings {
                            enabled: true,
                            mode,
                        },
                    )
                })
                .collect(),
        )
    }
}

impl RuleTable {
    pub fn get(&self, rule: &str) -> Option<&RuleSettings> {
        self.0.iter().find(|(r, _)| *r == rule).map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &RuleSettings)> {
        self.0.iter().map(|(r, s)| (*r, s))
    }

    /// Applies a `[rules.<name>]` table; `false` when the name is not a rule.
    pub(super) fn apply(&mut self, rule: &str, entry: RuleEntry) -> bool {
        let Some((_, settings)) = self.0.iter_mut().find(|(r, _)| *r == rule) else {
            return false;
        };
        if let Some(enabled) = entry.enabled {
            settings.enabled = enabled;
        }
        if let Some(mode) = entry.mode {
            settings.mode = mode;
        }
        true
    }
}

/// `[event_log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLogSettings {
    pub enabled: bool,
    pub path: PathBuf,
    /// Key for the checkpoints' HMAC; unkeyed checkpoints when absent.
    pub checkpoint_key_file: Option<PathBuf>,
    /// Records between two checkpoints.
    pub checkpoint_every: u32,
}

impl EventLogSettings {
    pub const MAX_CHECKPOINT_EVERY: u32 = 1_000_000;
}

impl Default for EventLogSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            path: PathBuf::from(crate::eventlog::DEFAULT_PATH),
            checkpoint_key_file: None,
            checkpoint_every: 1000,
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9847)),
        }
    }
}

/// `[credentials]`: what the catalogue of credential files adds, leaves out or skips.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialSettings {
    /// Start from the built-in catalogue.
    pub defaults: bool,
    /// Absolute or `~/` path patterns.
    pub extra_paths: Vec<String>,
    /// Exact names for the kernel: `name`, or `dir/name` for a name in a directory so named.
    pub extra_names: Vec<String>,
    /// Paths that are never credentials.
    pub exclude: Vec<String>,
    /// Built-in categories left out of the catalogue.
    pub disable_categories: Vec<Category>,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            defaults: true,
            extra_paths: Vec::new(),
            extra_names: Vec::new(),
            exclude: Vec::new(),
            disable_categories: Vec::new(),
        }
    }
}

impl CredentialSettings {
    /// The catalogue's own configuration. `disable_categories` is not part of it: the
    /// catalogue's entries are filtered with [`Self::category_enabled`].
    pub fn catalog_config(&self) -> CredentialConfig {
        CredentialConfig {
            defaults: self.defaults,
            extra_paths: self.extra_paths.clone(),
            extra_names: self.extra_names.iter().map(|n| split_name(n)).collect(),
            exclude: self.exclude.clone(),
        }
    }

    pub fn category_enabled(&self, category: Category) -> bool {
        !self.disable_categories.contains(&category)
    }
}

/// `[containers]`: where the node's container runtimes and kubelet keep what names a
/// container's image and pod.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerSettings {
    /// Read the runtimes' and kubelet's files for image, pod name and namespace.
    pub metadata: bool,
    /// containerd's task bundles: `<dir>/<namespace>/<id>/config.json`.
    pub containerd_tasks: PathBuf,
    /// CRI-O's containers: `<dir>/<id>/userdata/config.json`.
    pub crio_containers: PathBuf,
    /// Docker's containers: `<dir>/<id>/config.v2.json`.
    pub docker_containers: PathBuf,
    /// The kubelet's pod log directories: `<dir>/<namespace>_<name>_<uid>/`.
    pub pod_logs: PathBuf,
    /// Larger files are not read.
    pub max_file_bytes: u64,
    /// Containers (and cgroups) remembered.
    pub cache_entries: u32,
}

impl ContainerSettings {
    pub const MIN_FILE_BYTES: u64 = 4096;
    pub const MAX_FILE_BYTES: u64 = 64 << 20;
    pub const MAX_CACHE_ENTRIES: u32 = 65_536;
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            metadata: true,
            containerd_tasks: PathBuf::from("/run/containerd/io.containerd.runtime.v2.task"),
            crio_containers: PathBuf::from("/run/containers/storage/overlay-containers"),
            docker_containers: PathBuf::from("/var/lib/docker/containers"),
            pod_logs: PathBuf::from("/var/log/pods"),
            max_file_bytes: 1 << 20,
            cache_entries: 1024,
        }
    }
}

/// `dir/name` → (`name`, `Some(dir)`); `name` → (`name`, `None`).
pub(super) fn split_name(text: &str) -> (String, Option<String>) {
    match text.split_once('/') {
        Some((dir, name)) => (name.to_owned(), Some(dir.to_owned())),
        None => (text.to_owned(), None),
    }
}

pub(super) fn parse_mode(text: &str) -> Option<Mode> {
    match text {
        "alert" => Some(Mode::Alert),
        "block" => Some(Mode::Block),
        "kill" => Some(Mode::Kill),
        _ => None,
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let text = String::deserialize(d)?;
    parse_mode(&text).ok_or_else(|| D::Error::unknown_variant(&text, &MODES))
}

fn rule_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Mode>>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "inherit" {
        return Ok(Some(None));
    }
    parse_mode(&text)
        .map(|m| Some(Some(m)))
        .ok_or_else(|| D::Error::unknown_variant(&text, &RULE_MODES))
}
