//! The credential catalogue and persistence locations.
//!
//! The catalogue says where secrets live (SSH keys, cloud and cluster credentials, tokens,
//! `.env` files, shell history, TLS keys, wallets, `/etc/shadow`) and is used three ways:
//! - resolved to device and inode at start ([`CredentialCatalog::resolve`]), so the kernel
//!   recognises those files however they are reached (links, relative paths,
//!   `/proc/self/root`);
//! - turned into exact (name, parent name) pairs ([`CredentialCatalog::name_keys`]) for
//!   files that appear later;
//! - matched against paths in userspace ([`CredentialCatalog::classify_path`]) for what
//!   the two kernel tables missed.
//!
//! [`persistence_kind`] says whether a written file is a place programs start from.

mod defaults;
pub mod environment;
mod pattern;
mod persistence;
mod resolve;
#[cfg(test)]
mod resolve_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    fmt, fs,
    path::{Path, PathBuf},
};

use monitor_common::{NameKey, name_hash};
use serde::{Deserialize, Serialize};

use self::pattern::{Segment, components};
pub use self::{
    pattern::{Anchor, Pattern, PatternError},
    persistence::persistence_kind,
};

/// What kind of secret a file holds. The discriminant is the value stored in the kernel's
/// `CREDS` and `CRED_NAMES` maps: never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Ssh = 1,
    Aws = 2,
    Gcp = 3,
    Azure = 4,
    Oci = 5,
    Kubernetes = 6,
    Docker = 7,
    Git = 8,
    Netrc = 9,
    PackageRegistry = 10,
    Vault = 11,
    Database = 12,
    DotEnv = 13,
    History = 14,
    TlsKey = 15,
    Wallet = 16,
    System = 17,
    CiTokens = 18,
    /// Added by the operator (`extra_paths`, `extra_names`).
    Custom = 19,
    /// A process's environment (`/proc/<pid>/environ`): where tokens handed to services
    /// and CI jobs in variables (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`) can be read.
    ProcessEnvironment = 20,
    /// Browsers' and Electron apps' saved logins, cookies and session stores.
    Browser = 21,
    /// Private keys and password stores: GnuPG, `pass`, the desktop keyrings.
    Keyring = 22,
    /// Data and machine-learning platforms: Hugging Face, Kaggle, Databricks, Snowflake,
    /// dbt, rclone, Streamlit secrets.
    DataPlatform = 23,
}

impl Category {
    #[cfg(test)]
    pub const ALL: [Self; 23] = [
        Self::Ssh,
        Self::Aws,
        Self::Gcp,
        Self::Azure,
        Self::Oci,
        Self::Kubernetes,
        Self::Docker,
        Self::Git,
        Self::Netrc,
        Self::PackageRegistry,
        Self::Vault,
        Self::Database,
        Self::DotEnv,
        Self::History,
        Self::TlsKey,
        Self::Wallet,
        Self::System,
        Self::CiTokens,
        Self::Custom,
        Self::ProcessEnvironment,
        Self::Browser,
        Self::Keyring,
        Self::DataPlatform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
            Self::Oci => "oci",
            Self::Kubernetes => "kubernetes",
            Self::Docker => "docker",
            Self::Git => "git",
            Self::Netrc => "netrc",
            Self::PackageRegistry => "package_registry",
            Self::Vault => "vault",
            Self::Database => "database",
            Self::DotEnv => "dot_env",
            Self::History => "history",
            Self::TlsKey => "tls_key",
            Self::Wallet => "wallet",
            Self::System => "system",
            Self::CiTokens => "ci_tokens",
            Self::Custom => "custom",
            Self::ProcessEnvironment => "process_environment",
            Self::Browser => "browser",
            Self::Keyring => "keyring",
            Self::DataPlatform => "data_platform",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[credentials]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialConfig {
    /// Start from the built-in catalogue (default `true`).
    pub defaults: bool,
    /// More credential paths: absolute (`/etc/app/secret.json`) or in every home
    /// (`~/.config/app/token`), with `*`, `?` and `**` (up to 4 directories).
    pub extra_paths: Vec<String>,
    /// More exact file names for the kernel's name table: (name, parent directory name),
    /// no parent meaning any directory.
    pub extra_names: Vec<(String, Option<String>)>,
    /// Paths that are never credentials: absolute, `~/`, or a tail such as `.env.ci`.
    pub exclude: Vec<String>,
}

impl Default for CredentialConfig {
    fn default() -> Self {
        Self {
            defaults: true,
            extra_paths: Vec::new(),
            extra_names: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(
        "credentials.extra_paths entry `{0}` must start with `/` or `~/`; to match a file name anywhere, add it to credentials.extra_names"
    )]
    RelativeExtraPath(String),
    #[error("credentials.extra_names entry `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
}

/// One catalogue entry.
#[derive(Clone, Debug)]
pub struct CredentialEntry {
    pub category: Category,
    pub pattern: Pattern,
}

/// Where credentials live, and the homes they are looked for in.
#[derive(Clone, Debug)]
pub struct CredentialCatalog {
    entries: Vec<CredentialEntry>,
    excludes: Vec<Pattern>,
    /// Exact names for the kernel beyond those the entries give.
    names: Vec<(String, Option<String>, Category)>,
    /// Homes added after start (see [`Self::add_home`]), used with the ones callers pass.
    homes: Vec<PathBuf>,
}

impl Default for CredentialCatalog {
    /// The built-in catalogue.
    fn default() -> Self {
        let mut catalog = Self::empty();
        catalog.add_defaults();
        catalog
    }
}

impl CredentialCatalog {
    fn empty() -> Self {
        Self {
            entries: Vec::new(),
            excludes: Vec::new(),
            names: Vec::new(),
            homes: Vec::new(),
        }
    }

    fn add_defaults(&mut self) {
        // The built-in patterns are constants covered by tests: a parse failure is a bug.
        let parse =
            |p: &str| Pattern::parse(p).unwrap_or_else(|e| panic!("built-in catalogue: {e}"));
        self.entries.extend(
            defaults::ENTRIES
                .iter()
                .map(|&(category, p)| CredentialEntry {
                    category,
                    pattern: parse(p),
                }),
        );
        self.excludes
            .extend(defaults::EXCLUDES.iter().map(|p| parse(p)));
        self.names.extend(
            defaults::NAMES
                .iter()
                .map(|&(n, p, c)| (n.to_owned(), p.map(str::to_owned), c)),
        );
    }

    pub fn from_config(config: &CredentialConfig) -> Result<Self, CredentialError> {
        let mut catalog = Self::empty();
        if config.defaults {
            catalog.add_defaults();
        }
        for text in &config.extra_paths {
            let pattern = Pattern::parse(text)?;
            if pattern.anchor() == Anchor::Tail {
                return Err(CredentialError::RelativeExtraPath(text.clone()));
            }
            catalog.entries.push(CredentialEntry {
                category: Category::Custom,
                pattern,
            });
        }
        for (name, parent) in &config.extra_names {
            for n in std::iter::once(name).chain(parent) {
                check_name(n).map_err(|reason| CredentialError::InvalidName {
                    name: n.clone(),
                    reason,
                })?;
            }
            catalog
                .names
                .push((name.clone(), parent.clone(), Category::Custom));
        }
        for text in &config.exclude {
            catalog.excludes.push(Pattern::parse(text)?);
        }
        Ok(catalog)
    }

    /// Leaves out the entries and names of `disabled` categories
    /// (`credentials.disable_categories`).
    pub fn without(mut self, disabled: &[Category]) -> Self {
        self.entries.retain(|e| !disabled.contains(&e.category));
        self.names.retain(|(_, _, c)| !disabled.contains(c));
        self
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[CredentialEntry] {
        &self.entries
    }

    /// Follows a home directory that appeared after start (a new user, a mounted home).
    /// Returns `false` if it was known. Resolve its files with [`Self::resolve_home`].
    pub fn add_home(&mut self, home: PathBuf) -> bool {
        if self.homes.contains(&home) {
            return false;
        }
        self.homes.push(home);
        true
    }

    /// The category of the file at `path` (as the kernel resolved it), or `None` if it is
    /// not a credential. Home patterns match under `homes`, the catalogue's own homes,
    /// `/root`, `/home/<user>`, and (for dot-led ones such as `~/.aws/credentials`) under
    /// any directory.
    pub fn classify_path(&self, path: &Path, homes: &[PathBuf]) -> Option<Category> {
        let comps = components(path);
        if comps.is_empty() {
            return None;
        }
        let homes: Vec<Vec<&[u8]>> = homes
            .iter()
            .chain(&self.homes)
            .map(|h| components(h))
            .collect();
        if self.is_excluded(&comps, &homes) {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.pattern.matches(&comps, &homes))
            .map(|e| e.category)
    }

    fn is_excluded(&self, comps: &[&[u8]], homes: &[Vec<&[u8]>]) -> bool {
        self.excludes.iter().any(|x| x.matches(comps, homes))
    }

    /// Exact (name, parent) pairs for the kernel's name table, without repeats (the first
    /// category wins). Only entries whose file name, and parent name if they have one, are
    /// literal give a pair; globbed leaves are covered by the built-in name list.
    pub fn name_keys(&self) -> Vec<(NameKey, Category)> {
        let from_entries = self
            .entries
            .iter()
            .filter_map(|e| e.pattern.kernel_name().map(|(n, p)| (n, p, e.category)));
        let from_names = self
            .names
            .iter()
            .map(|(n, p, c)| (n.as_bytes(), p.as_deref().map(str::as_bytes), *c));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, parent, category) in from_entries.chain(from_names) {
            if self.name_excluded(name, parent) {
                continue;
            }
            let key = NameKey {
                name: name_hash(name),
                parent: parent.map_or(0, name_hash),
            };
            if seen.insert(key) {
                out.push((key, category));
            }
        }
        out
    }

    /// Whether an exclude removes a name pair: a one-component exclude removes the name
    /// under any parent; a longer one only under a parent it matches.
    fn name_excluded(&self, name: &[u8], parent: Option<&[u8]>) -> bool {
        self.excludes.iter().any(|x| {
            let Some((leaf, rest)) = x.segments().split_last() else {
                return false;
            };
            if !leaf.matches(name) {
                return false;
            }
            match (rest.last(), parent) {
                (None, _) => x.anchor() != Anchor::Root,
                (Some(Segment::AnyDepth), _) => true,
                (Some(p), Some(parent)) => p.matches(parent),
                (Some(_), None) => false,
            }
        })
    }
}

/// Why an `extra_names` entry cannot be an exact kernel name, if it cannot.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Err("a file name is needed")
    } else if name.contains(['/', '\0']) {
        Err("give one path component, without `/`")
    } else if name.contains(['*', '?']) {
        Err("the kernel matches exact names; put patterns in credentials.extra_paths")
    } else {
        Ok(())
    }
}

/// Directories named as homes in passwd that are not homes.
const NOT_HOMES: &[&str] = &[
    "/",
    "/bin",
    "/sbin",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
    "/dev",
    "/dev/null",
    "/proc",
    "/sys",
    "/run",
    "/var/run",
    "/etc",
    "/tmp",
    "/var/tmp",
    "/nonexistent",
];

/// The home directories under `root` (`/` on a host): every existing directory named in
/// `<root>/etc/passwd`, `/root`, and the directories in `/home` (users from LDAP or SSSD
/// are not in passwd). Returned paths include `root`. Never fails: an unreadable passwd
/// is logged and the other sources still count.
pub fn discover_homes(root: &Path) -> Vec<PathBuf> {
    let passwd_path = root.join("etc/passwd");
    let passwd = fs::read_to_string(&passwd_path).unwrap_or_else(|e| {
        tracing::warn!(path = %passwd_path.display(), error = %e, "cannot read passwd; homes come from /root and /home only");
        String::new()
    });
    let from_passwd = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(':').nth(5))
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| h.starts_with('/') && !NOT_HOMES.contains(h))
        .map(|h| root.join(h.trim_start_matches('/')));
    let mut under_home: Vec<PathBuf> = fs::read_dir(root.join("home"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    under_home.sort();
    let mut homes: Vec<PathBuf> = Vec::new();
    for home in from_passwd.chain([root.join("root")]).chain(under_home) {
        if !homes.contains(&home) && home.is_dir() {
            homes.push(home);
        }
    }
    homes
}
