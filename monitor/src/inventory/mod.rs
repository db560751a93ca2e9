//! Startup-hook inventory: the interpreters on a host, the directories their `site` module
//! reads, and every startup hook there (`.pth`, `sitecustomize`, `usercustomize`, PEP 829
//! `.start`), each identified (dev, inode, SHA-256, owning distribution) and classified
//! (benign, inert, unknown, risky).
//!
//! Everything is derived from the filesystem: running an interpreter to ask for its paths
//! would execute the very hooks being inspected.
//!
//! - `pth`: `.pth` parsing with CPython's `site.addpackage` semantics.
//! - `kind`: which files are hooks, by name and place.
//! - `benign`, `findings`, `classify`: known-benign forms, risky constructs, the verdict.
//! - `imports`: whether the modules an executable hook imports may defer work to exit.
//! - `owners`: the distribution that installed a file, from `RECORD`.
//! - `record`: reading one hook.
//! - `locate`, `interpreters`, `elf`, `discover`: finding interpreters, their site dirs,
//!   `Py_RunMain`, and the hooks.
//! - `render`: the table for people and the `scan` gate.
mod benign;
mod classify;
mod discover;
mod elf;
mod findings;
mod imports;
mod interpreters;
mod kind;
mod locate;
mod owners;
mod pth;
mod record;
mod render;
mod rooted;
mod text;
mod unhide;

use std::path::PathBuf;

pub use self::{
    classify::{Classified, ExecLine, HookClass, Input as ClassifyInput, OwnerCheck, classify},
    discover::{DiscoverOptions, Inventory},
    elf::{cannot_run_python, runmain_target},
    findings::{Finding, FindingKind},
    kind::{HookKind, hook_kind_for},
    owners::Owner,
    pth::{PthLine, PthLineKind, parse_pth},
    record::{Hook, read_hook},
    render::{has_unknown_executable, render_table},
    text::display_path,
};

/// Most bytes of a hook kept for classification; the whole file is hashed.
const READ_CAP: u64 = 1024 * 1024;
/// Most bytes of one line kept for display; the real length is recorded.
pub const LINE_KEEP: usize = 4096;

/// Why one hook could not be read. A file larger than the read limit is not an error: it
/// is classified on its start and marked `truncated`.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "{} is not a startup hook: expected a .pth or .start file directly in a \
         site-packages or dist-packages directory, or a sitecustomize/usercustomize module",
        display_path(.0)
    )]
    NotAHook(PathBuf),
    #[error("cannot resolve startup hook {} inside root {}: {source}", display_path(.path), display_path(.root))]
    Resolve {
        path: PathBuf,
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open startup hook {}: {source}", display_path(.path))]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read startup hook {}: {source}", display_path(.path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "startup hook {} is a {what}, not a regular file; it was not read (Python cannot load \
         code from it, and reading a FIFO or device could block)",
        display_path(.path)
    )]
    NotRegular { path: PathBuf, what: &'static str },
}
