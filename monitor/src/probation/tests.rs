use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

use super::*;

fn key_of(path: &Path) -> FileKey {
    let m = std::fs::metadata(path).expect("stat");
    crate::sensors::file_key_of(m.dev(), m.ino())
}

/// A directory of the test's own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pthwatch-probation-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_system_program_is_spared() {
    let stamp = check(
        Path::new("/usr/bin/true"),
        key_of(Path::new("/usr/bin/true")),
    );
    let m = std::fs::metadata("/usr/bin/true").expect("stat");
    assert_eq!(stamp.map(|s| (s.dev, s.ino)), Ok((m.dev(), m.ino())));
}

#[test]
fn an_interpreter_a_static_program_and_a_script_stay_on_probation() {
    // Debian's interpreter exports the Python C API itself.
    let python = Path::new("/usr/bin/python3.11");
    assert_eq!(check(python, key_of(python)), Err(Refusal::MayRunPython));
    // A static program's symbols are not visible.
    let ldconfig = Path::new("/usr/sbin/ldconfig");
    assert_eq!(
        check(ldconfig, key_of(ldconfig)),
        Err(Refusal::MayRunPython)
    );
    // A script runs under its interpreter, which the kernel reports instead.
    let ldd = Path::new("/usr/bin/ldd");
    assert_eq!(check(ldd, key_of(ldd)), Err(Refusal::NotElf));
}

#[test]
fn the_path_must_name_the_file_the_kernel_saw() {
    let env = key_of(Path::new("/usr/bin/env"));
    assert_eq!(
        check(Path::new("/usr/bin/true"), env),
        Err(Refusal::OtherFile)
    );
    assert_eq!(
        check(
            Path::new("usr/bin/true"),
            key_of(Path::new("/usr/bin/true"))
        ),
        Err(Refusal::NoPath)
    );
    let dir = Scratch::new("path");
    assert_eq!(check(&dir.path().join("gone"), env), Err(Refusal::Gone));
    // A symlink is not the file it points to.
    let link = dir.path().join("true");
    std::os::unix::fs::symlink("/usr/bin/true", &link).expect("symlink");
    assert_eq!(
        check(&link, key_of(Path::new("/usr/bin/true"))),
        Err(Refusal::Gone)
    );
}

#[test]
fn what_others_can_change_stays_on_probation() {
    let dir = Scratch::new("owner");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.path().join("tool");
    std::fs::copy("/usr/bin/true", &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = key_of(&copy);
    if is_root() {
        // Root's file in root's directory: spared.
        assert!(check(&copy, key).is_ok());
    } else {
        assert_eq!(check(&copy, key), Err(Refusal::NotRootOnly));
    }
    // Writable by others.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o757)).expect("chmod");
    assert_eq!(check(&copy, key), Err(Refusal::NotRootOnly));
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // In a directory where others can put another file in its place.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let expected = if is_root() {
        Refusal::DirNotRootOnly
    } else {
        Refusal::NotRootOnly
    };
    assert_eq!(check(&copy, key), Err(expected));
}

#[test]
fn a_change_of_the_file_changes_its_stamp() {
    let dir = Scratch::new("stamp");
    let f = dir.path().join("tool");
    std::fs::copy("/usr/bin/true", &f).expect("copy");
    let before = Stamp::of(&std::fs::metadata(&f).expect("stat"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Rewritten in place: same inode, new content.
    std::fs::write(&f, b"#!/bin/sh\n").expect("rewrite");
    let after = Stamp::of(&std::fs::metadata(&f).expect("stat"));
    assert_eq!((before.dev, before.ino), (after.dev, after.ino));
    assert_ne!(before, after);
}
