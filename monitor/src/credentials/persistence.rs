//! Places programs start themselves from: a startup hook that writes one has installed
//! itself (`LiteLLM` 1.82.8 wrote `~/.config/sysmon/sysmon.py` and a systemd user unit).

use std::{fmt, path::Path, sync::LazyLock};

use serde::Serialize;

use super::pattern::{Pattern, components};

/// What a persistence location starts, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistenceKind {
    /// A systemd unit, drop-in, generator or manager configuration.
    SystemdUnit,
    /// A crontab or `at` job.
    Cron,
    /// An XDG autostart entry (runs at desktop login).
    Autostart,
    /// A shell start-up file or login environment.
    ShellInit,
    /// A key that grants SSH logins.
    SshAuthorizedKeys,
    /// `ld.so` preload or search-path configuration (code in every dynamic program).
    Preload,
    /// A Python startup hook: `.pth` or `.start` in a site directory, `sitecustomize`,
    /// `usercustomize`.
    StartupHook,
    /// A script dropped among user configuration or in `~/.local/bin`.
    HiddenScript,
    /// A git hook (runs on the next commit, checkout, ...).
    GitHook,
    /// A Kubernetes static pod manifest (the kubelet runs it).
    StaticPod,
    /// A `SysV` init script or a login message script (runs as root).
    InitScript,
}

impl PersistenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemdUnit => "systemd_unit",
            Self::Cron => "cron",
            Self::Autostart => "autostart",
            Self::ShellInit => "shell_init",
            Self::SshAuthorizedKeys => "ssh_authorized_keys",
            Self::Preload => "preload",
            Self::StartupHook => "startup_hook",
            Self::HiddenScript => "hidden_script",
            Self::GitHook => "git_hook",
            Self::StaticPod => "static_pod",
            Self::InitScript => "init_script",
        }
    }
}

impl fmt::Display for PersistenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use PersistenceKind::*;

/// (kind, pattern): the first match wins, so the catch-all `HiddenScript` comes last.
/// Home patterns are all dot-led, so they match under any home-like directory.
const LOCATIONS: &[(PersistenceKind, &str)] = &[
    (SystemdUnit, "~/.config/systemd/user/**/*"),
    (SystemdUnit, "~/.config/systemd/user.conf"),
    (SystemdUnit, "~/.local/share/systemd/user/**/*"),
    (SystemdUnit, "/etc/systemd/system/**/*"),
    (SystemdUnit, "/etc/systemd/user/**/*"),
    (SystemdUnit, "/etc/systemd/system-generators/*"),
    (SystemdUnit, "/etc/systemd/user-generators/*"),
    (SystemdUnit, "/etc/systemd/system.conf"),
    (SystemdUnit, "/etc/systemd/user.conf"),
    (SystemdUnit, "/run/systemd/system/**/*"),
    (SystemdUnit, "/lib/systemd/**/*"),
    (SystemdUnit, "/usr/lib/systemd/**/*"),
    (SystemdUnit, "/usr/local/lib/systemd/**/*"),
    (Cron, "/etc/crontab"),
    (Cron, "/etc/anacrontab"),
    (Cron, "/etc/cron.*/*"),
    (Cron, "/var/spool/cron/**/*"),
    (Cron, "/var/spool/at/*"),
    (Autostart, "~/.config/autostart/*"),
    (Autostart, "/etc/xdg/autostart/*"),
    (ShellInit, "~/.bashrc"),
    (ShellInit, "~/.bash_profile"),
    (ShellInit, "~/.bash_login"),
    (ShellInit, "~/.bash_logout"),
    (ShellInit, "~/.profile"),
    (ShellInit, "~/.zshrc"),
    (ShellInit, "~/.zprofile"),
    (ShellInit, "~/.zshenv"),
    (ShellInit, "~/.zlogin"),
    (ShellInit, "~/.config/fish/config.fish"),
    (ShellInit, "~/.config/fish/conf.d/*"),
    (ShellInit, "~/.config/environment.d/*"),
    (ShellInit, "~/.pam_environment"),
    (ShellInit, "~/.ssh/rc"),
    (ShellInit, "/etc/profile"),
    (ShellInit, "/etc/profile.d/*"),
    (ShellInit, "/etc/bash.bashrc"),
    (ShellInit, "/etc/bashrc"),
    (ShellInit, "/etc/zshrc"),
    (ShellInit, "/etc/zprofile"),
    (ShellInit, "/etc/zshenv"),
    (ShellInit, "/etc/zsh/*"),
    (ShellInit, "/etc/environment"),
    (ShellInit, "/etc/rc.local"),
    (ShellInit, "/etc/ssh/sshrc"),
    (SshAuthorizedKeys, "~/.ssh/authorized_keys*"),
    (Preload, "/etc/ld.so.preload"),
    (Preload, "/etc/ld.so.conf"),
    (Preload, "/etc/ld.so.conf.d/*"),
    // Python reads `.pth`/`.start` only directly in a site directory.
    (StartupHook, "site-packages/*.pth"),
    (StartupHook, "dist-packages/*.pth"),
    (StartupHook, "site-packages/*.start"),
    (StartupHook, "dist-packages/*.start"),
    (StartupHook, "sitecustomize.py"),
    (StartupHook, "usercustomize.py"),
    (StartupHook, "sitecustomize/__init__.py"),
    (StartupHook, "usercustomize/__init__.py"),
    (GitHook, ".git/hooks/*"),
    (StaticPod, "/etc/kubernetes/manifests/*"),
    (InitScript, "/etc/init.d/*"),
    (InitScript, "/etc/update-motd.d/*"),
    (HiddenScript, "~/.config/**/*.py"),
    (HiddenScript, "~/.config/**/*.sh"),
    (HiddenScript, "~/.config/**/*.pl"),
    (HiddenScript, "~/.local/bin/*"),
];

/// Written there, but never run.
const NOT_PERSISTENCE: &[&str] = &[".git/hooks/*.sample"];

/// The parsed tables.
struct Table {
    locations: Vec<(PersistenceKind, Pattern)>,
    not_persistence: Vec<Pattern>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    // The tables are constant and covered by tests: a parse failure is a bug.
    let parse = |p: &str| Pattern::parse(p).unwrap_or_else(|e| panic!("persistence table: {e}"));
    Table {
        locations: LOCATIONS
            .iter()
            .map(|&(kind, p)| (kind, parse(p)))
            .collect(),
        not_persistence: NOT_PERSISTENCE.iter().map(|p| parse(p)).collect(),
    }
});

/// What starts the file at `path` (one a process creates or writes), if it is a
/// persistence location. Home locations match under any directory that ends like a home
/// (`/home/u/.bashrc`, `/tmp/test/home/.config/autostart/x.desktop`).
pub fn persistence_kind(path: &Path) -> Option<PersistenceKind> {
    let comps = components(path);
    let Table {
        locations,
        not_persistence,
    } = &*TABLE;
    if comps.is_empty() || not_persistence.iter().any(|p| p.matches(&comps, &[])) {
        return None;
    }
    locations
        .iter()
        .find(|(_, p)| p.matches(&comps, &[]))
        .map(|(kind, _)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(path: &str) -> Option<PersistenceKind> {
        persistence_kind(Path::new(path))
    }

    #[test]
    fn the_litellm_drops_are_persistence() {
        assert_eq!(
            kind("/home/dev/.config/sysmon/sysmon.py"),
            Some(HiddenScript)
        );
        assert_eq!(kind("/root/.config/sysmon/sysmon.py"), Some(HiddenScript));
        assert_eq!(
            kind("/tmp/pthwatch-test-4f2a/home/.config/sysmon/sysmon.py"),
            Some(HiddenScript)
        );
        assert_eq!(
            kind("/home/dev/.config/systemd/user/sysmon.service"),
            Some(SystemdUnit)
        );
        assert_eq!(
            kind("/tmp/pthwatch-test-4f2a/home/.config/systemd/user/sysmon.service"),
            Some(SystemdUnit)
        );
        assert_eq!(
            kind("/usr/lib/python3.12/site-packages/litellm_init.pth"),
            Some(StartupHook)
        );
    }

    #[test]
    fn positives() {
        let cases = [
            (
                "/home/u/.config/systemd/user/default.target.wants/x.service",
                SystemdUnit,
            ),
            ("/home/u/.local/share/systemd/user/x.timer", SystemdUnit),
            ("/etc/systemd/system/evil.service", SystemdUnit),
            (
                "/etc/systemd/system/sshd.service.d/override.conf",
                SystemdUnit,
            ),
            ("/lib/systemd/system/x.service", SystemdUnit),
            ("/usr/lib/systemd/system/x.service", SystemdUnit),
            ("/usr/lib/systemd/user/x.service", SystemdUnit),
            ("/etc/crontab", Cron),
            ("/etc/cron.d/backdoor", Cron),
            ("/etc/cron.hourly/x", Cron),
            ("/var/spool/cron/crontabs/root", Cron),
            ("/var/spool/cron/root", Cron),
            ("/home/u/.config/autostart/x.desktop", Autostart),
            ("/etc/xdg/autostart/x.desktop", Autostart),
            ("/home/u/.bashrc", ShellInit),
            ("/root/.profile", ShellInit),
            ("/home/u/.zshrc", ShellInit),
            ("/home/u/.bash_profile", ShellInit),
            ("/home/u/.zprofile", ShellInit),
            ("/etc/profile", ShellInit),
            ("/etc/profile.d/evil.sh", ShellInit),
            ("/etc/bash.bashrc", ShellInit),
            ("/etc/rc.local", ShellInit),
            ("/home/u/.ssh/authorized_keys", SshAuthorizedKeys),
            ("/root/.ssh/authorized_keys2", SshAuthorizedKeys),
            ("/etc/ld.so.preload", Preload),
            ("/usr/lib/python3/dist-packages/x.pth", StartupHook),
            (
                "/opt/venv/lib/python3.15/site-packages/x.start",
                StartupHook,
            ),
            ("/usr/lib/python3.12/sitecustomize.py", StartupHook),
            (
                "/home/u/.local/lib/python3.12/site-packages/usercustomize.py",
                StartupHook,
            ),
            ("/srv/app/.git/hooks/pre-commit", GitHook),
            ("/etc/kubernetes/manifests/evil.yaml", StaticPod),
            ("/etc/init.d/evil", InitScript),
            ("/home/u/.local/bin/sysmon", HiddenScript),
            ("/home/u/.config/a/b/run.sh", HiddenScript),
        ];
        for (path, expected) in cases {
            assert_eq!(kind(path), Some(expected), "{path}");
        }
    }

    #[test]
    fn negatives() {
        for path in [
            "/etc/passwd",
            "/home/u/.config/app/settings.json",
            "/home/u/.config/a/b/c/d/e/deep.py",
            "/usr/lib/python3.12/site-packages/pkg/data.pth",
            "/usr/lib/python3.12/site-packages/pkg/module.py",
            "/srv/app/.git/hooks/pre-commit.sample",
            "/srv/app/.git/config",
            "/home/u/.bash_history",
            "/home/u/project/main.py",
            "/etc/systemd/journald.conf",
            "/etc/cron.allow",
            "/",
        ] {
            assert_eq!(kind(path), None, "{path}");
        }
    }
}
