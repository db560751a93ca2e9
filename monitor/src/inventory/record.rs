//! Reading one hook: identity (dev, inode, SHA-256), owner, and classification.
use std::{
    fs::{self, File, OpenOptions},
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{
    InventoryError, READ_CAP,
    classify::{self, ExecLine, HookClass, OwnerCheck},
    imports,
    kind::{HookKind, hook_kind_for},
    owners::OwnerIndex,
    pth::{is_exec, split_lines},
    rooted::Root,
    text::{serialize_bytecode, serialize_path, serialize_paths},
};

/// One startup hook, read and classified.
#[derive(Clone, Debug, Serialize)]
pub struct Hook {
    pub kind: HookKind,
    /// Where the interpreter finds it (inside the container for container hooks).
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Of the whole file, lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// `st_dev` as `stat` reports it (userspace encoding, not the kernel's `s_dev`).
    pub dev: u64,
    pub ino: u64,
    /// `name==version` of the distribution whose installer record lists the file.
    pub distribution: Option<String>,
    /// Whether that distribution is the one the hook's benign form belongs to.
    pub owner_check: OwnerCheck,
    pub exec_lines: Vec<ExecLine>,
    #[serde(flatten)]
    pub class: HookClass,
    /// Larger than `READ_CAP`: only the start was classified (the hash covers all).
    pub truncated: bool,
    /// Cached bytecode of a module hook: (path, dev, ino). Python runs the `.pyc` when its
    /// header matches the source, so the kernel must know these inodes too.
    #[serde(serialize_with = "serialize_bytecode")]
    pub bytecode: Vec<(PathBuf, u64, u64)>,
    /// Directories a `.pth` appends to `sys.path` (as written).
    #[serde(
        serialize_with = "serialize_paths",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub path_entries: Vec<PathBuf>,
    /// Executable, and the modules it imports may defer work to the interpreter's exit:
    /// they register exit handlers, hide their code, or cannot be read (see `imports`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub imports_may_defer: bool,
    /// ... or plant code in the program: import, tracing or signal hooks, a replaced
    /// builtin or module attribute.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub imports_plant_code: bool,
}

impl Hook {
    /// What the kernel keeps for this hook's inode: its class's, with `DEFERS` (and
    /// `PLANTS`) also when the modules it imports call for them.
    pub fn kernel_info(&self) -> monitor_common::HookInfo {
        use monitor_common::hook_flags::{DEFERS, PLANTS};
        let mut info = self.class.kernel_info();
        if self.imports_may_defer {
            info.flags |= DEFERS;
        }
        if self.imports_plant_code {
            info.flags |= DEFERS | PLANTS;
        }
        info
    }
}

/// Reads and classifies one hook. `root` (e.g. `/proc/<pid>/root`) is where `path` is
/// resolved; the recorded path stays the in-container one. A file larger than the read
/// limit is not an error: it is classified on its start and marked `truncated`.
pub fn read_hook(path: &Path, root: Option<&Path>) -> Result<Hook, InventoryError> {
    let kind = hook_kind_for(path).ok_or_else(|| InventoryError::NotAHook(path.to_owned()))?;
    let root = Root::new(root.unwrap_or(Path::new("/")));
    read_hook_in(&root, path, kind, &mut OwnerIndex::default())
}

/// `read_hook` with a known kind (discovery knows its site dirs even when they are not
/// named `site-packages`) and a shared owner index.
pub(crate) fn read_hook_in(
    root: &Root,
    path: &Path,
    kind: HookKind,
    owners: &mut OwnerIndex,
) -> Result<Hook, InventoryError> {
    let host = host_file(root, path)?;
    let (meta, head, sha256) = read_file(&host, path)?;
    let name = path.file_name().unwrap_or_default();
    let opaque = is_compiled(name);
    let owner = owners.owner_of(root, path).cloned();
    let c = classify::classify(&classify::Input {
        kind,
        file_name: name,
        content: &head,
        owner: owner.as_ref(),
        truncated: meta.size() > READ_CAP,
        opaque,
    });
    let imported = match path.parent() {
        Some(dir)
            if c.class.is_unknown_executable()
                && c.class.kernel_info().flags & monitor_common::hook_flags::PLANTS == 0 =>
        {
            let lines: Vec<String> = split_lines(&head)
                .iter()
                .filter(|l| kind.is_source() || is_exec(l.bytes))
                .map(|l| String::from_utf8_lossy(l.bytes).into_owned())
                .collect();
            let hook_owner = owner.as_ref().map(|o| o.name.clone());
            let mut installed_apart = |top: &str| {
                owners
                    .module_owner(root, dir, top)
                    .is_some_and(|o| Some(&o.name) != hook_owner.as_ref())
            };
            imports::imports_flags(
                root,
                dir,
                lines.iter().map(String::as_str),
                &mut installed_apart,
            )
        }
        _ => 0,
    };
    let bytecode = if kind.is_source() && !opaque {
        cached_bytecode(root, path)
    } else {
        Vec::new()
    };
    Ok(Hook {
        kind,
        path: path.to_owned(),
        sha256,
        size: meta.size(),
        dev: meta.dev(),
        ino: meta.ino(),
        distribution: owner.map(|o| o.label()),
        owner_check: c.owner_check,
        exec_lines: c.exec_lines,
        class: c.class,
        truncated: meta.size() > READ_CAP,
        bytecode,
        path_entries: c.path_entries,
        imports_may_defer: imported & monitor_common::hook_flags::DEFERS != 0,
        imports_plant_code: imported & monitor_common::hook_flags::PLANTS != 0,
    })
}

/// The host path to open: symlinks inside a foreign root are resolved within it.
pub(super) fn host_file(root: &Root, path: &Path) -> Result<PathBuf, InventoryError> {
    if root.is_host_root() {
        return Ok(path.to_owned());
    }
    let inner = root
        .canonicalize(path)
        .map_err(|source| InventoryError::Resolve {
            path: path.to_owned(),
            root: root.host().to_owned(),
            source,
        })?;
    Ok(root.host_path(&inner))
}

/// Opens `host` (the in-root `path`) without blocking (a FIFO named `x.pth` must not hang
/// the daemon) and checks it is a regular file.
pub(super) fn open_regular(
    host: &Path,
    path: &Path,
) -> Result<(File, fs::Metadata), InventoryError> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(host)
        .map_err(|source| InventoryError::Open {
            path: path.to_owned(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| InventoryError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(InventoryError::NotRegular {
            path: path.to_owned(),
            what: file_type_name(&meta),
        });
    }
    Ok((file, meta))
}

/// Opens as `open_regular` does, keeps the first `READ_CAP` bytes and hashes all of them by
/// streaming.
fn read_file(host: &Path, path: &Path) -> Result<(fs::Metadata, Vec<u8>, String), InventoryError> {
    let read_err = |source| InventoryError::Read {
        path: path.to_owned(),
        source,
    };
    let (mut file, meta) = open_regular(host, path)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        let room = usize::try_from(READ_CAP)
            .unwrap_or(usize::MAX)
            .saturating_sub(head.len());
        head.extend_from_slice(&buf[..n.min(room)]);
    }
    Ok((meta, head, hex(&hasher.finalize())))
}

/// Lowercase hex, as `sha256sum` prints it.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn file_type_name(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// `.pyc` or extension module: code with no text to read.
fn is_compiled(name: &std::ffi::OsStr) -> bool {
    let name = std::os::unix::ffi::OsStrExt::as_bytes(name);
    name.ends_with(b".pyc") || name.ends_with(b".so")
}

/// `__pycache__/<module>.*.pyc` beside a source hook (`sitecustomize/__pycache__/
/// __init__.*.pyc` for the package form), with their identities.
fn cached_bytecode(root: &Root, path: &Path) -> Vec<(PathBuf, u64, u64)> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
        return Vec::new();
    };
    let cache = dir.join("__pycache__");
    let Ok(entries) = fs::read_dir(root.host_path(&cache)) else {
        return Vec::new();
    };
    // The source may be a link (Debian's points into /etc), resolved inside the root.
    let Some(source) = root
        .canonicalize(path)
        .ok()
        .and_then(|p| fs::metadata(root.host_path(&p)).ok())
    else {
        return Vec::new();
    };
    let mut prefix = stem.to_owned();
    prefix.push(".");
    let prefix = std::os::unix::ffi::OsStrExt::as_bytes(prefix.as_os_str()).to_vec();
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
            name.starts_with(&prefix) && name.ends_with(b".pyc")
        })
        .filter_map(|e| {
            let meta = fs::metadata(e.path()).ok()?;
            (meta.is_file() && pyc_tracks_source(&e.path(), &source))
                .then(|| (cache.join(e.file_name()), meta.dev(), meta.ino()))
        })
        .collect();
    out.sort();
    out
}

/// Whether CPython would only run this `.pyc` if it matches `source`: a timestamp pyc
/// (PEP 552 flags 0) recording the source's mtime and size, or a checked hash pyc (flags
/// 3, verified against the source on import). An unchecked hash pyc, or a timestamp pyc
/// of some other source, runs whatever it holds: it is a hook of its own, not this one.
fn pyc_tracks_source(pyc: &Path, source: &fs::Metadata) -> bool {
    use std::io::Read as _;
    let mut header = [0u8; 16];
    let Ok(mut f) = fs::File::open(pyc) else {
        return false;
    };
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    match word(4) {
        0 => {
            i64::from(word(8)) == source.mtime() & 0xffff_ffff
                && u64::from(word(12)) == source.size() & 0xffff_ffff
        }
        3 => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-record-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_owner_hash_and_classification() {
        let dir = scratch("owner");
        let site = dir.join("lib/python3.11/site-packages");
        fs::create_dir_all(site.join("evil-1.0.dist-info")).unwrap();
        fs::write(
            site.join("evil-1.0.dist-info/RECORD"),
            "evil_init.pth,sha256=x,10\n",
        )
        .unwrap();
        let path = site.join("evil_init.pth");
        fs::write(&path, "import os; os.system('curl x')\n/some/path\n").unwrap();
        let hook = read_hook(&path, None).unwrap();
        assert_eq!(hook.distribution.as_deref(), Some("evil==1.0"));
        assert!(matches!(hook.class, HookClass::Risky { .. }));
        assert_eq!(hook.sha256.len(), 64);
        assert_eq!(hook.size, 42);
        assert_eq!(hook.path_entries, vec![PathBuf::from("/some/path")]);
        let model = dir.join("model.pth");
        fs::write(&model, [0u8, 1, 2]).unwrap();
        assert!(matches!(
            read_hook(&model, None),
            Err(InventoryError::NotAHook(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn huge_files_are_truncated_but_fully_hashed() {
        let dir = scratch("huge");
        let site = dir.join("site-packages");
        fs::create_dir_all(&site).unwrap();
        let mut content = b"/a/path\n".repeat(200_000);
        content.extend(b"import os; os.system('id')\n");
        fs::write(site.join("big.pth"), &content).unwrap();
        let hook = read_hook(&site.join("big.pth"), None).unwrap();
        assert!(hook.truncated);
        assert_eq!(hook.size, content.len() as u64);
        let want = hex(&Sha256::digest(&content));
        assert_eq!(hook.sha256, want);
        assert!(matches!(hook.class, HookClass::Risky { .. }));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = scratch("fifo");
        let site = dir.join("site-packages");
        fs::create_dir_all(site.join("d.pth")).unwrap();
        let fifo = site.join("f.pth");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_hook(&fifo, None).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(matches!(
            read_hook(&site.join("d.pth"), None),
            Err(InventoryError::NotRegular { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn container_root_keeps_the_inner_path() {
        let host = scratch("root");
        let site = host.join("usr/lib/python3/dist-packages");
        fs::create_dir_all(&site).unwrap();
        fs::write(site.join("real.pth"), "import _virtualenv\n").unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/python3/dist-packages/real.pth",
            site.join("l.pth"),
        )
        .unwrap();
        let inner = Path::new("/usr/lib/python3/dist-packages/l.pth");
        let hook = read_hook(inner, Some(&host)).unwrap();
        assert_eq!(hook.path, inner);
        assert!(matches!(hook.class, HookClass::Benign { .. }));
        fs::remove_dir_all(&host).unwrap();
    }

    #[test]
    fn sitecustomize_bytecode_is_attached() {
        let dir = scratch("pyc");
        fs::create_dir_all(dir.join("__pycache__")).unwrap();
        fs::write(dir.join("sitecustomize.py"), "import os\n").unwrap();
        let meta = fs::metadata(dir.join("sitecustomize.py")).unwrap();
        // PEP 552 header: magic, flags, then mtime and size (timestamp) or a hash.
        let pyc = |flags: u32, mtime: u32, size: u32| {
            let mut h = vec![0xa7, 0x0d, 0x0d, 0x0a];
            h.extend(flags.to_le_bytes());
            h.extend(mtime.to_le_bytes());
            h.extend(size.to_le_bytes());
            h.push(0xe3);
            h
        };
        let (mtime, size) = (meta.mtime() as u32, meta.size() as u32);
        fs::write(
            dir.join("__pycache__/sitecustomize.cpython-311.pyc"),
            pyc(0, mtime, size),
        )
        .unwrap();
        // Checked hash pycs are verified against the source by CPython itself.
        fs::write(
            dir.join("__pycache__/sitecustomize.cpython-312.pyc"),
            pyc(3, 1, 2),
        )
        .unwrap();
        // Stale, unchecked-hash and truncated pycs run what they hold, not the source.
        fs::write(
            dir.join("__pycache__/sitecustomize.cpython-310.pyc"),
            pyc(0, mtime.wrapping_add(1), size),
        )
        .unwrap();
        fs::write(
            dir.join("__pycache__/sitecustomize.cpython-313.pyc"),
            pyc(1, 1, 2),
        )
        .unwrap();
        fs::write(
            dir.join("__pycache__/sitecustomize.cpython-39.pyc"),
            b"\x00",
        )
        .unwrap();
        fs::write(dir.join("__pycache__/other.cpython-311.pyc"), b"\x00").unwrap();
        let hook = read_hook(&dir.join("sitecustomize.py"), None).unwrap();
        let names: Vec<String> = hook
            .bytecode
            .iter()
            .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "sitecustomize.cpython-311.pyc",
                "sitecustomize.cpython-312.pyc"
            ]
        );
        let json = serde_json::to_value(&hook).unwrap();
        assert_eq!(json["class"], "unknown");
        assert!(json["bytecode"][0]["ino"].is_u64());
        fs::remove_dir_all(&dir).unwrap();
    }
}
