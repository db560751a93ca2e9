//! Where `Py_RunMain` lives for an interpreter: the end of start-up (every hook has run
//! once it is entered), so the daemon puts a uprobe there. It is in the binary for a
//! static build (Debian's `/usr/bin/python3.11`) and in `libpython3.X.so` for a shared
//! build (pyenv, conda). Only the ELF headers, dynamic section and dynamic symbols are
//! read, through a read cache, not the whole multi-megabyte file.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use object::{
    Object as _, ObjectSymbol as _, ReadCache, ReadRef,
    elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH},
    read::elf::{ElfFile, FileHeader},
};

use super::rooted::Root;

const RUNMAIN: &[u8] = b"Py_RunMain";
/// Where the dynamic linker looks when no run path names the library.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// What the dynamic section and symbol table of one ELF file say.
#[derive(Debug, Default)]
struct ElfFacts {
    exports_runmain: bool,
    /// A dynamic symbol of the Python C API (`Py*`, `_Py*`), defined or imported.
    python_symbols: bool,
    needed: Vec<String>,
    run_paths: Vec<String>,
}

/// The ELF file exporting `Py_RunMain` for the interpreter binary `exe` (a host path),
/// or `None` (not ELF, Python older than 3.8, library not found).
pub fn runmain_target(exe: &Path) -> Option<PathBuf> {
    let exe = std::fs::canonicalize(exe).ok()?;
    let prefix = exe.parent()?.parent()?.to_owned();
    runmain_target_in(&Root::new(Path::new("/")), &exe, &prefix)
}

/// As `runmain_target`, inside `root`; `exe` is canonical and in-root, `prefix` is where
/// the interpreter's own `lib/` is (the base prefix for a venv). Returns an in-root path.
pub(crate) fn runmain_target_in(root: &Root, exe: &Path, prefix: &Path) -> Option<PathBuf> {
    let facts = inspect(&root.host_path(exe))?;
    if facts.exports_runmain {
        return Some(exe.to_owned());
    }
    let origin = exe.parent().unwrap_or(Path::new("/"));
    let dirs: Vec<PathBuf> = facts
        .run_paths
        .iter()
        .flat_map(|rp| {
            rp.split(':')
                .map(|d| expand_origin(d, origin))
                .collect::<Vec<_>>()
        })
        .chain(std::iter::once(prefix.join("lib")))
        .chain(SYSTEM_LIB_DIRS.iter().map(PathBuf::from))
        .collect();
    facts
        .needed
        .iter()
        .filter(|n| n.starts_with("libpython"))
        .find_map(|lib| {
            dirs.iter().find_map(|dir| {
                let candidate = root.canonicalize(&dir.join(lib)).ok()?;
                inspect(&root.host_path(&candidate))?
                    .exports_runmain
                    .then_some(candidate)
            })
        })
}

/// `$ORIGIN`/`${ORIGIN}` in a run path is the directory of the binary.
fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
    let o = origin.to_string_lossy();
    PathBuf::from(dir.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
}

/// Whether the executable open as `file` cannot run Python in its own process: an ELF
/// file that is dynamically linked (a static binary's symbols are not visible), needs no
/// `libpython` directly and neither defines nor imports any symbol of the Python C API.
/// A program that loads `libpython` itself at run time (`dlopen`) is not recognised.
/// `None` when `file` is not a readable ELF file.
pub fn cannot_run_python(file: File) -> Option<bool> {
    let facts = inspect_file(file)?;
    Some(
        !facts.exports_runmain
            && !facts.python_symbols
            && !facts.needed.is_empty()
            && !facts.needed.iter().any(|n| n.starts_with("libpython")),
    )
}

fn inspect(host: &Path) -> Option<ElfFacts> {
    inspect_file(File::open(host).ok()?)
}

fn inspect_file(file: File) -> Option<ElfFacts> {
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    let mut exports_runmain = false;
    let mut python_symbols = false;
    for s in obj.dynamic_symbols() {
        let Ok(name) = s.name_bytes() else { continue };
        exports_runmain |= !s.is_undefined() && name == RUNMAIN;
        python_symbols |= name.starts_with(b"Py") || name.starts_with(b"_Py");
    }
    let (needed, run_paths) = match &obj {
        object::File::Elf64(f) => dynamic_strings(f),
        object::File::Elf32(f) => dynamic_strings(f),
        _ => return None,
    };
    Some(ElfFacts {
        exports_runmain,
        python_symbols,
        needed,
        run_paths,
    })
}

/// `DT_NEEDED` and `DT_RUNPATH`/`DT_RPATH` strings.
fn dynamic_strings<'data, E: FileHeader, R: ReadRef<'data>>(
    f: &ElfFile<'data, E, R>,
) -> (Vec<String>, Vec<String>) {
    let mut needed = Vec::new();
    let mut run_paths = Vec::new();
    let Ok(table) = f.elf_dynamic_table() else {
        return (needed, run_paths);
    };
    for d in table.iter() {
        let list = match d.tag {
            DT_NEEDED => &mut needed,
            DT_RUNPATH | DT_RPATH => &mut run_paths,
            _ => continue,
        };
        if let Ok(s) = table.string(d) {
            list.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    (needed, run_paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_expands() {
        let o = Path::new("/opt/py/bin");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", o),
            Path::new("/opt/py/bin/../lib")
        );
        assert_eq!(
            expand_origin("${ORIGIN}/lib", o),
            Path::new("/opt/py/bin/lib")
        );
    }

    #[test]
    fn non_elf_files_have_no_target() {
        let dir = std::env::temp_dir().join(format!("pthwatch-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("python3");
        std::fs::write(&script, "#!/bin/sh\nexec python3.11 \"$@\"\n").unwrap();
        assert_eq!(runmain_target(&script), None);
        assert_eq!(runmain_target(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Whatever Python this host has: the target, if any, must export `Py_RunMain`.
    #[test]
    fn host_interpreters_resolve_to_an_exporting_file() {
        for exe in [
            "/usr/bin/python3",
            "/root/.pyenv/versions/3.11.7/bin/python3.11",
        ] {
            let Some(target) = runmain_target(Path::new(exe)) else {
                continue;
            };
            assert!(
                inspect(&target).is_some_and(|f| f.exports_runmain),
                "{}",
                target.display()
            );
        }
    }
}
