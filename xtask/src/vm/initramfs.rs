//! The guest's initramfs: an uncompressed `newc` cpio archive (the kernel unpacks it
//! without any decompressor) holding a static busybox, the few modules needed to reach
//! the host's files over 9p, the generated `/init`, its second stage and the test script.
use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    guest::{INITRAMFS_DIR, STAGE2, TESTS, stage2_script},
    kernels::{GUEST_MODULES, Kernel, load_order, read_module},
};

/// The modules to `insmod`, one file name a line, in order.
pub const MODULE_LIST: &str = "/modules";

/// A `newc` (SVR4, no CRC) cpio archive, written in memory.
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
    /// Directories written so far: a member's missing parents are written before it.
    dirs: BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), b"");
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), b"");
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, (0, 0), 0);
        self.buf
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        // Archive names are relative to the root the kernel unpacks into.
        let name = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.dirs.contains(&parent) {
                let dir = parent.clone();
                self.entry(&dir, S_IFDIR | 0o755, 2, (0, 0), b"");
            }
        }
        if mode & 0o170_000 == S_IFDIR && !self.dirs.insert(name.to_owned()) {
            return;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len()).expect("initramfs members are far below 4 GiB");
        self.header(name, ino, mode, nlink, rdev, size);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: u32) {
        let namesize = u32::try_from(name.len() + 1).expect("short names");
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// Writes the initramfs for one kernel to `dest`: busybox, the modules (decompressed, in
/// load order), `/init`, the second stage and the test script.
pub fn build(
    dest: &Path,
    busybox: &Path,
    kernel: &Kernel,
    init: &str,
    tests_script: &str,
) -> Result<()> {
    let read = |name: &str| {
        fs::read_to_string(kernel.modules.join(name))
            .with_context(|| format!("reading {}/{name}", kernel.modules.display()))
    };
    let order = load_order(
        &read("modules.dep")?,
        &read("modules.builtin")?,
        GUEST_MODULES,
    )
    .with_context(|| format!("kernel {}", kernel.release))?;

    let mut cpio = Cpio::new();
    // Mount points; the other directories come with their files.
    for dir in ["/dev", "/proc", "/sys", "/newroot"] {
        cpio.dir(dir, 0o755);
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    cpio.char_dev("/dev/console", 0o600, 5, 1);
    let busybox_bytes =
        fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    cpio.file("/bin/busybox", 0o755, &busybox_bytes);
    cpio.symlink("/bin/sh", "busybox");
    let mut list = String::new();
    for rel in &order {
        let name = format!("{}.ko", super::kernels::module_name(rel));
        cpio.file(
            &format!("/lib/modules/{name}"),
            0o644,
            &read_module(&kernel.modules, rel)?,
        );
        list.push_str(&name);
        list.push('\n');
    }
    cpio.file(MODULE_LIST, 0o644, list.as_bytes());
    cpio.file("/init", 0o755, init.as_bytes());
    cpio.file(
        &format!("{INITRAMFS_DIR}/{STAGE2}"),
        0o755,
        stage2_script().as_bytes(),
    );
    cpio.file(
        &format!("{INITRAMFS_DIR}/{TESTS}"),
        0o755,
        tests_script.as_bytes(),
    );
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(dest, cpio.finish()).with_context(|| format!("writing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(header: &[u8], index: usize) -> u32 {
        let start = 6 + index * 8;
        u32::from_str_radix(std::str::from_utf8(&header[start..start + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn writes_newc_entries_padded_to_four_bytes() {
        let mut cpio = Cpio::new();
        cpio.file("/init", 0o755, b"#!/bin/sh\n");
        let archive = cpio.finish();
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(field(&archive, 0), 1, "inode");
        assert_eq!(field(&archive, 1), 0o100_755, "mode");
        assert_eq!(field(&archive, 6), 10, "file size");
        assert_eq!(field(&archive, 11), 5, "name size with its NUL");
        // 110-byte header + "init\0" = 115, padded to 116; then 10 data bytes padded to 12.
        assert_eq!(&archive[110..115], b"init\0");
        assert_eq!(&archive[116..126], b"#!/bin/sh\n");
        assert_eq!(&archive[126..128], b"\0\0");
        let trailer = &archive[128..];
        assert_eq!(&trailer[..6], b"070701");
        assert_eq!(&trailer[110..121], b"TRAILER!!!\0");
        assert_eq!(archive.len() % 4, 0);
    }

    #[test]
    fn writes_missing_parent_directories_once() {
        let mut cpio = Cpio::new();
        cpio.dir("/lib", 0o755);
        cpio.file("/lib/modules/9p.ko", 0o644, b"");
        cpio.file("/lib/modules/9pnet.ko", 0o644, b"");
        cpio.dir("/lib/modules", 0o755);
        let archive = cpio.finish();
        let text = String::from_utf8_lossy(&archive);
        let names: Vec<&str> = text
            .split("070701")
            .skip(1)
            .map(|h| h[104..].split('\0').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/modules",
                "lib/modules/9p.ko",
                "lib/modules/9pnet.ko",
                "TRAILER!!!"
            ]
        );
    }

    #[test]
    fn writes_links_and_device_nodes() {
        let mut cpio = Cpio::new();
        cpio.symlink("/sh", "busybox");
        cpio.char_dev("/console", 0o600, 5, 1);
        let archive = cpio.finish();
        assert_eq!(field(&archive, 1), 0o120_777);
        assert_eq!(field(&archive, 6), 7);
        // 110 + "sh\0" = 113, padded to 116; 7 data bytes padded to 124.
        assert_eq!(&archive[110..116], b"sh\0\0\0\0");
        assert_eq!(&archive[116..123], b"busybox");
        let dev = &archive[124..];
        assert_eq!(field(dev, 0), 2, "inodes are distinct");
        assert_eq!(field(dev, 1), 0o020_600);
        assert_eq!((field(dev, 9), field(dev, 10)), (5, 1), "rdev 5:1");
    }
}
