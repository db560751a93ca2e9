//! `pthwatch check`: what this kernel offers and which sensor backend pthwatch will use.
pub mod mounts;

use std::fmt;

use serde::Serialize;

/// Filled in by `probe`.
#[derive(Debug, Serialize)]
pub struct CapabilityReport {
    pub kernel: String,
    pub btf: bool,
    pub notes: Vec<String>,
}

pub fn probe() -> CapabilityReport {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    CapabilityReport { kernel, btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(), notes: Vec::new() }
}

impl fmt::Display for CapabilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel  {}", self.kernel)?;
        writeln!(f, "btf     {}", if self.btf { "yes" } else { "no" })
    }
}

pub fn exit_code(r: &CapabilityReport) -> u8 {
    u8::from(!r.btf)
}
