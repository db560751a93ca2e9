//! Secrets handed to a process in its environment (`AWS_SECRET_ACCESS_KEY`,
//! `GITHUB_TOKEN`, `TWINE_PASSWORD`...). A startup hook reads them from `os.environ`, in
//! memory, where no sensor sees the read: so a hook that runs in an interpreter whose
//! environment holds such variables has them, and its lineage counts as having read
//! credentials from its first instruction.
use std::{fs::File, io::Read as _};

/// Names that are secrets whatever their value looks like.
const EXACT: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "ARM_CLIENT_SECRET",
    "DOCKER_AUTH_CONFIG",
    "KUBE_TOKEN",
    "VAULT_TOKEN",
    "CI_JOB_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
];

/// Name endings of secrets (`*_TOKEN`, `*_API_KEY`...).
const SUFFIXES: &[&str] = &[
    "_TOKEN",
    "_SECRET",
    "_SECRET_KEY",
    "_SECRET_ACCESS_KEY",
    "_PASSWORD",
    "_PASSWD",
    "_API_KEY",
    "_APIKEY",
    "_ACCESS_KEY",
    "_PRIVATE_KEY",
    "_CREDENTIALS",
];

/// How much of `/proc/<pid>/environ` is read (the kernel caps an environment far above
/// this only for pathological processes).
const MAX_ENVIRON: u64 = 1 << 20;

/// The names of the secret-holding variables in an environment block (`NAME=value`
/// entries separated by NUL), sorted, without duplicates. Values are never kept.
pub fn secret_names(environ: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            let (name, value) = (&entry[..eq], &entry[eq + 1..]);
            let name = std::str::from_utf8(name).ok()?;
            (!value.iter().all(u8::is_ascii_whitespace) && is_secret(name, value))
                .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn is_secret(name: &str, value: &[u8]) -> bool {
    let upper = name.to_ascii_uppercase();
    if EXACT.contains(&upper.as_str()) {
        return true;
    }
    SUFFIXES
        .iter()
        .any(|s| upper.ends_with(s) && upper.len() > s.len())
        || url_with_password(value)
}

/// `scheme://user:password@host...` (a `DATABASE_URL`, a proxy with credentials).
fn url_with_password(value: &[u8]) -> bool {
    let Some(v) = std::str::from_utf8(value).ok() else {
        return false;
    };
    let Some((_, rest)) = v.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()))
}

/// The secret names in the environment `tgid` was started with; empty when it cannot be
/// read (gone, or another user's process without the rights).
pub fn of_process(tgid: u32) -> Vec<String> {
    let mut buf = Vec::new();
    match File::open(format!("/proc/{tgid}/environ")) {
        Ok(f) => {
            if f.take(MAX_ENVIRON).read_to_end(&mut buf).is_err() {
                return Vec::new();
            }
        }
        Err(_) => return Vec::new(),
    }
    secret_names(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_found_by_name_and_by_credential_urls() {
        let env = b"PATH=/usr/bin\0HOME=/root\0AWS_SECRET_ACCESS_KEY=abc\0GITHUB_TOKEN=ghp_x\0\
TWINE_PASSWORD=pw\0OPENAI_API_KEY=sk\0DATABASE_URL=postgres://app:hunter2@db/app\0\
PROXY=http://proxy:3128\0SSH_AUTH_SOCK=/tmp/agent\0SKIP_AUTH=1\0EMPTY_TOKEN=\0\
LANG=C.UTF-8\0weird\0_TOKEN=bare\0";
        assert_eq!(
            secret_names(env),
            [
                "AWS_SECRET_ACCESS_KEY",
                "DATABASE_URL",
                "GITHUB_TOKEN",
                "OPENAI_API_KEY",
                "TWINE_PASSWORD"
            ]
        );
    }

    #[test]
    fn an_environment_without_secrets_or_not_utf8_gives_nothing() {
        assert!(secret_names(b"PATH=/bin\0HOME=/h\0LANG=C\0").is_empty());
        assert!(secret_names(b"\xff\xfe_TOKEN=x\0").is_empty());
        assert!(secret_names(b"").is_empty());
        assert_eq!(secret_names(b"X_TOKEN=\xff\xfe\0"), ["X_TOKEN"]);
    }

    #[test]
    fn this_process_environment_can_be_read() {
        // Whatever it holds, reading it must not fail or panic.
        let _ = of_process(std::process::id());
        assert!(of_process(u32::MAX).is_empty());
    }
}
