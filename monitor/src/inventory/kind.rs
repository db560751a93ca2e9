//! Which files are startup hooks, by name and place. Names are compared as bytes: a
//! `.pth` whose name is not UTF-8 still runs, so it must still be found.
use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _, path::Path};

use serde::Serialize;

/// The kinds of file CPython runs at start-up without being asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// `<name>.pth` in a site dir: its `import` lines run.
    Pth,
    /// `sitecustomize` module, imported by `site` from `sys.path`.
    Sitecustomize,
    /// `usercustomize` module, imported when the user site is enabled.
    Usercustomize,
    /// PEP 829 `<name>.start` (Python 3.15+): entry points called at start-up.
    Start,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pth => "pth",
            Self::Sitecustomize => "sitecustomize",
            Self::Usercustomize => "usercustomize",
            Self::Start => "start",
        }
    }

    /// Python source (all of it runs), as opposed to `.pth` lines.
    pub(crate) fn is_source(self) -> bool {
        !matches!(self, Self::Pth)
    }
}

/// How a `sitecustomize`/`usercustomize` module is present in a directory. Python's import
/// system accepts every one of these, so each is a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModuleForm {
    /// `sitecustomize.py`.
    Source,
    /// `sitecustomize/` with `__init__.py`.
    Package,
    /// `sitecustomize.pyc` beside (not in `__pycache__`): loaded without any source.
    Sourceless,
    /// `sitecustomize.so` / `sitecustomize.cpython-311-x86_64-linux-gnu.so`.
    Extension,
}

const SITE_DIR_NAMES: [&[u8]; 2] = [b"site-packages", b"dist-packages"];
const MODULES: [(&[u8], HookKind); 2] = [
    (b"sitecustomize", HookKind::Sitecustomize),
    (b"usercustomize", HookKind::Usercustomize),
];

/// `site-packages` or `dist-packages`: where `site` processes `.pth`/`.start` files.
pub(crate) fn is_site_dir_name(name: &OsStr) -> bool {
    SITE_DIR_NAMES.contains(&name.as_bytes())
}

/// `.pth`/`.start` by name alone; the caller knows whether the directory is a site dir.
pub(crate) fn site_file_kind(name: &OsStr) -> Option<HookKind> {
    let name = name.as_bytes();
    if name.ends_with(b".pth") {
        Some(HookKind::Pth)
    } else if name.ends_with(b".start") {
        Some(HookKind::Start)
    } else {
        None
    }
}

/// A `sitecustomize`/`usercustomize` directory entry (file name, or a package directory).
pub(crate) fn module_entry(name: &OsStr) -> Option<(HookKind, ModuleForm)> {
    let name = name.as_bytes();
    MODULES.iter().find_map(|(module, kind)| {
        let rest = name.strip_prefix(*module)?;
        let form = match rest {
            b"" => ModuleForm::Package,
            b".py" => ModuleForm::Source,
            b".pyc" => ModuleForm::Sourceless,
            r if r.starts_with(b".") && r.ends_with(b".so") => ModuleForm::Extension,
            _ => return None,
        };
        Some((*kind, form))
    })
}

/// `__pycache__/sitecustomize.cpython-311.pyc` (and `.opt-1.pyc`...): the cached bytecode
/// of the module hook in the parent directory.
pub(crate) fn cached_bytecode_kind(name: &OsStr) -> Option<HookKind> {
    let name = name.as_bytes();
    MODULES.iter().find_map(|(module, kind)| {
        let rest = name.strip_prefix(*module)?.strip_prefix(b".")?;
        rest.ends_with(b".pyc").then_some(*kind)
    })
}

/// The hook kind of a file by name and place: `.pth`/`.start` only directly in a
/// `site-packages`/`dist-packages` dir (a PyTorch checkpoint `model.pth` in
/// `/home/u/models/` is not a hook); `sitecustomize`/`usercustomize` in any directory, since
/// any `sys.path` entry can supply them, including the package form and cached bytecode.
pub fn hook_kind_for(path: &Path) -> Option<HookKind> {
    let name = path.file_name()?;
    let parent = path.parent().and_then(Path::file_name).unwrap_or_default();
    if let Some(kind) = site_file_kind(name) {
        return is_site_dir_name(parent).then_some(kind);
    }
    if let Some((kind, form)) = module_entry(name) {
        // A bare `sitecustomize` file (no suffix) is not importable.
        return (form != ModuleForm::Package).then_some(kind);
    }
    if parent.as_bytes() == b"__pycache__" {
        return cached_bytecode_kind(name);
    }
    if name.as_bytes() == b"__init__.py" {
        return module_entry(parent)
            .and_then(|(kind, form)| (form == ModuleForm::Package).then_some(kind));
    }
    None
}

/// Whether a `RECORD` entry could name a hook, so the owner index can skip the thousands
/// of ordinary files a large distribution lists.
pub(crate) fn is_hook_name(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    site_file_kind(name).is_some()
        || module_entry(name).is_some_and(|(_, form)| form != ModuleForm::Package)
        || hook_kind_for(path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> Option<HookKind> {
        hook_kind_for(Path::new(p))
    }

    #[test]
    fn pth_and_start_only_in_site_dirs() {
        assert_eq!(
            kind("/v/lib/python3.11/site-packages/a.pth"),
            Some(HookKind::Pth)
        );
        assert_eq!(
            kind("/usr/lib/python3/dist-packages/a.start"),
            Some(HookKind::Start)
        );
        assert_eq!(kind("/home/u/models/model.pth"), None);
        assert_eq!(kind("/v/lib/python3.11/site-packages/sub/a.pth"), None);
        assert_eq!(kind("model.pth"), None);
    }

    #[test]
    fn customize_modules_anywhere() {
        assert_eq!(
            kind("/etc/python3.11/sitecustomize.py"),
            Some(HookKind::Sitecustomize)
        );
        assert_eq!(kind("/x/usercustomize.py"), Some(HookKind::Usercustomize));
        assert_eq!(
            kind("/x/sitecustomize/__init__.py"),
            Some(HookKind::Sitecustomize)
        );
        assert_eq!(kind("/x/sitecustomize.pyc"), Some(HookKind::Sitecustomize));
        assert_eq!(
            kind("/x/sitecustomize.cpython-311-x86_64-linux-gnu.so"),
            Some(HookKind::Sitecustomize)
        );
        assert_eq!(kind("/x/sitecustomize_helper.py"), None);
        assert_eq!(kind("/x/pkg/__init__.py"), None);
    }

    #[test]
    fn cached_bytecode_belongs_to_the_parent_dir_hook() {
        assert_eq!(
            kind("/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc"),
            Some(HookKind::Sitecustomize)
        );
        assert_eq!(
            kind("/s/__pycache__/usercustomize.cpython-312.opt-1.pyc"),
            Some(HookKind::Usercustomize)
        );
        assert_eq!(kind("/s/__pycache__/other.cpython-311.pyc"), None);
    }

    #[test]
    fn non_utf8_names_are_hooks_too() {
        use std::os::unix::ffi::OsStrExt as _;
        let p = Path::new(OsStr::from_bytes(b"/v/site-packages/\xff\xfe.pth"));
        assert_eq!(hook_kind_for(p), Some(HookKind::Pth));
    }
}
