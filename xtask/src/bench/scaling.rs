//! How pthwatch's cost grows with what it tracks: W2 (interpreter start-up) under
//! `--mode block` at 1x, 10x and 100x of
//!
//! - tracked processes: idle interpreters, started after the daemon so it tracks them;
//! - the hook inventory: extra homes (`--home`) whose user site dirs hold 10 hooks each
//!   (7 path-only, 1 known-benign, 2 unknown executable lines);
//! - the credential catalogue: extra homes holding 20 files of the built-in catalogue
//!   each, which the daemon resolves by inode into the kernel's table.
//!
//! Each point alternates a monitored and an unmonitored W2 (with the same idle
//! interpreters present), `scaling_reps` times.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;

use super::{
    bpfstats,
    host::{Host, check_interrupted, sleep, write},
    procstat::{cpu_seconds, memory_kib},
    pthwatch::{Pthwatch, PthwatchOptions},
    report::{ScalingPoint, ScalingSeries},
    stats::{added_us_per_op, median, ratio},
    workloads::{self, Fixtures, IdlePythons, Sizes, USER_SITE, Workload},
};

const HOOKS_PER_SITE: usize = 10;
/// Credential files made in each catalogue home (all in the built-in catalogue).
const CREDENTIAL_FILES: &[&str] = &[
    ".ssh/id_rsa",
    ".ssh/id_ed25519",
    ".ssh/config",
    ".aws/credentials",
    ".aws/config",
    ".s3cfg",
    ".boto",
    ".oci/config",
    ".kube/config",
    ".docker/config.json",
    ".git-credentials",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".cargo/credentials.toml",
    ".vault-token",
    ".pgpass",
    ".my.cnf",
    ".bash_history",
    ".python_history",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Tracked,
    Inventory,
    Catalogue,
}

impl Dimension {
    pub const ALL: [Self; 3] = [Self::Tracked, Self::Inventory, Self::Catalogue];

    fn id(self) -> &'static str {
        match self {
            Self::Tracked => "tracked_processes",
            Self::Inventory => "inventory",
            Self::Catalogue => "credential_catalogue",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Tracked => "tracked processes",
            Self::Inventory => "hooks and site dirs in the inventory",
            Self::Catalogue => "credential catalogue",
        }
    }
}

/// Homes for the inventory: `n` user site dirs of [`HOOKS_PER_SITE`] hooks.
fn inventory_homes(dir: &Path, n: u64) -> Result<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let home = dir.join(format!("h{i:03}"));
            let site = home.join(USER_SITE);
            fs::create_dir_all(&site)?;
            for j in 0..HOOKS_PER_SITE {
                let (name, text) = match j {
                    0 => (
                        "_virtualenv.pth".to_owned(),
                        "import _virtualenv\n".to_owned(),
                    ),
                    1 | 2 => (
                        format!("bench_unknown_{j}.pth"),
                        // Distinct content: each is its own hook (sha256) to the daemon.
                        format!("import os; os.getpid()  # {i}-{j}\n"),
                    ),
                    _ => (
                        format!("bench_path_{j}.pth"),
                        format!("{}\n", home.join(format!("lib{j}")).display()),
                    ),
                };
                write(&site.join(name), text)?;
            }
            Ok(home)
        })
        .collect()
}

/// Homes for the catalogue: `n` homes holding [`CREDENTIAL_FILES`].
fn catalogue_homes(dir: &Path, n: u64) -> Result<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let home = dir.join(format!("h{i:03}"));
            for f in CREDENTIAL_FILES {
                let path = home.join(f);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                write(&path, format!("not a secret: bench home {i}\n"))?;
            }
            Ok(home)
        })
        .collect()
}

pub fn run(
    host: &mut Host,
    bin: &Path,
    fx: &Fixtures,
    sizes: &Sizes,
    bpf_stats: bool,
) -> Result<Vec<ScalingSeries>> {
    let max = sizes.scaling_levels.iter().copied().max().unwrap_or(1);
    let inv_all = inventory_homes(&host.subdir("scale-inventory")?, max)?;
    let cat_all = catalogue_homes(&host.subdir("scale-catalogue")?, max)?;
    let mut out = Vec::new();
    for dim in Dimension::ALL {
        let mut series = ScalingSeries {
            dimension: dim.id(),
            title: dim.title(),
            note: None,
            points: Vec::new(),
        };
        for &factor in &sizes.scaling_levels {
            check_interrupted()?;
            eprintln!("bench: scaling {}: {factor}x", dim.title());
            let n = usize::try_from(factor).unwrap_or(usize::MAX);
            let (homes, idle): (Vec<PathBuf>, u64) = match dim {
                Dimension::Tracked => (Vec::new(), factor),
                Dimension::Inventory => (inv_all.iter().take(n).cloned().collect(), 0),
                Dimension::Catalogue => (cat_all.iter().take(n).cloned().collect(), 0),
            };
            let at = Level {
                dim,
                factor,
                homes: &homes,
                idle,
                bpf_stats,
            };
            series.points.push(point(host, bin, fx, sizes, &at)?);
        }
        series.note = Some(match dim {
            Dimension::Tracked => {
                "Each level keeps that many idle python3.11 processes (started after the daemon, \
                 so it tracks them) alive while W2 runs; the unmonitored W2 runs with them too."
                    .into()
            }
            Dimension::Inventory => format!(
                "Each level adds that many homes (`--home`) with a user site dir of {HOOKS_PER_SITE} \
                 hooks; sizes are the daemon's own counts, the host's site dirs included."
            ),
            Dimension::Catalogue => format!(
                "Each level adds that many homes (`--home`) with {} credential files each, \
                 catalogued by inode. The kernel's name table (credentials.extra_names) is not \
                 scaled here.",
                CREDENTIAL_FILES.len()
            ),
        });
        out.push(series);
    }
    Ok(out)
}

/// One point of a series.
struct Level<'a> {
    dim: Dimension,
    factor: u64,
    /// `--home` directories for the daemon.
    homes: &'a [PathBuf],
    /// Idle interpreters kept alive.
    idle: u64,
    bpf_stats: bool,
}

fn point(
    host: &mut Host,
    bin: &Path,
    fx: &Fixtures,
    sizes: &Sizes,
    at: &Level<'_>,
) -> Result<ScalingPoint> {
    let starts = sizes.w2_starts;
    let mut none = Vec::new();
    let mut monitored = Vec::new();
    let mut ready = Vec::new();
    let mut cpu_ms = Vec::new();
    let mut kernel = Vec::new();
    let mut peak_kib = 0u64;
    let mut lost: Option<u64> = None;
    let mut size = String::new();
    let (dim, factor) = (at.dim, at.factor);
    for rep in 0..sizes.scaling_reps {
        if at.bpf_stats {
            host.bpf_stats_on()?;
        }
        let started = Pthwatch::start(&PthwatchOptions {
            bin,
            mode: "block",
            homes: at.homes,
            dir: host
                .dir
                .join(format!("pthwatch-scale-{}-{factor}-{rep}", dim.id())),
        });
        let daemon = match started {
            Ok(d) => d,
            Err(e) => {
                host.bpf_stats_off();
                return Err(e);
            }
        };
        ready.push(daemon.ready_s);
        let pid = daemon.pid();
        let idlers = IdlePythons::start(&fx.plain_home, at.idle)?;
        sleep(std::time::Duration::from_millis(500));
        let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
        let snap = || at.bpf_stats.then(|| bpfstats::snapshot(pid).ok()).flatten();
        let snap0 = snap();
        let t = Instant::now();
        workloads::run(Workload::W2, fx, sizes)?;
        monitored.push(t.elapsed().as_secs_f64());
        let snap1 = snap();
        cpu_ms.push((cpu_seconds(pid).unwrap_or(0.0) - cpu0) * 1000.0 / starts.max(1) as f64);
        if let (Some(a), Some(b)) = (snap0, snap1) {
            kernel.push(bpfstats::total_ns(&bpfstats::delta(&a, &b)) as f64 / starts.max(1) as f64);
        }
        if let Some((hwm, _)) = memory_kib(pid) {
            peak_kib = peak_kib.max(hwm);
        }
        let log = daemon.stop();
        host.bpf_stats_off();
        let log = log?;
        if let Some(l) = log.events_lost {
            lost = Some(lost.unwrap_or(0) + l);
        }
        size = match dim {
            Dimension::Tracked => format!("{} idle interpreters", idlers.len()),
            Dimension::Inventory => format!(
                "{} site dirs, {} hooks",
                opt_u(log.site_dirs),
                opt_u(log.hooks)
            ),
            Dimension::Catalogue => format!("{} credential files", opt_u(log.credential_files)),
        };
        sleep(std::time::Duration::from_millis(300));
        let t = Instant::now();
        workloads::run(Workload::W2, fx, sizes)?;
        none.push(t.elapsed().as_secs_f64());
        drop(idlers);
    }
    let (m, n) = (median(&monitored), median(&none));
    Ok(ScalingPoint {
        factor,
        size,
        w2_none_s: n,
        w2_pthwatch_s: m,
        ratio: m.zip(n).and_then(|(m, n)| ratio(m, n)),
        added_us_per_start: m.zip(n).and_then(|(m, n)| added_us_per_op(m, n, starts)),
        ready_s: median(&ready),
        daemon_cpu_ms_per_start: median(&cpu_ms),
        peak_rss_mib: (peak_kib > 0).then(|| peak_kib as f64 / 1024.0),
        kernel_ns_per_start: median(&kernel),
        events_lost: lost,
    })
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_have_the_promised_sizes() {
        let dir = std::env::temp_dir().join(format!("xtask-scale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let homes = inventory_homes(&dir.join("inv"), 3).unwrap();
        assert_eq!(homes.len(), 3);
        let site = homes[2].join(USER_SITE);
        assert_eq!(fs::read_dir(&site).unwrap().count(), HOOKS_PER_SITE);
        let a = fs::read_to_string(homes[1].join(USER_SITE).join("bench_unknown_1.pth")).unwrap();
        let b = fs::read_to_string(homes[2].join(USER_SITE).join("bench_unknown_1.pth")).unwrap();
        assert_ne!(a, b, "unknown hooks differ between homes");
        let homes = catalogue_homes(&dir.join("cat"), 2).unwrap();
        assert!(homes[1].join(".aws/credentials").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }
}
