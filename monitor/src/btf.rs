//! Minimal BTF reader: struct member offsets from the running kernel.
//!
//! Rust eBPF has no CO-RE relocations, so the daemon reads the offsets its kernel programs
//! need from `/sys/kernel/btf/vmlinux` at load time and passes them in
//! `monitor_common::Offsets`. Only what that needs is parsed: types with names, struct
//! and union members (descending into anonymous members), typedefs and functions.
use std::{collections::HashMap, path::Path};

use monitor_common::Offsets;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "reading {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y; pthwatch cannot run without BTF)"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("BTF has no struct or union named `{0}`")]
    NoType(String),
    #[error("`{ty}` has no member `{member}` in this kernel's BTF")]
    NoMember { ty: String, member: String },
    #[error("`{ty}.{member}` is a bitfield; pthwatch cannot read it by byte offset")]
    Bitfield { ty: String, member: String },
}

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits (bitfield size in the top 8 bits when the kind flag is set).
    offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: u32,
    kind_flag: bool,
    /// `size` for structs/unions/ints, `type` for typedefs/pointers/modifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

/// The parsed type graph of one BTF blob.
pub struct Btf {
    /// Index = type id (id 0 is `void`).
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Name -> ids of named structs, unions, typedefs and functions.
    by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at {off}")))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at {off}")))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path)
            .map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, BtfError> {
        if u16_at(b, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (big-endian BTF is not supported)".into()));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_bytes = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();
        let mut btf = Self { types: vec![Type { kind: 0, name: 0, kind_flag: false, size_or_type: 0, members: Vec::new() }], strings, by_name: HashMap::new() };
        let mut off = 0usize;
        while off < types_bytes.len() {
            let name = u32_at(types_bytes, off)?;
            let info = u32_at(types_bytes, off + 4)?;
            let size_or_type = u32_at(types_bytes, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT => off += 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        members.push(Member {
                            name: u32_at(types_bytes, m)?,
                            ty: u32_at(types_bytes, m + 4)?,
                            offset: u32_at(types_bytes, m + 8)?,
                        });
                    }
                    off += vlen * 12;
                }
                KIND_ENUM => off += vlen * 8,
                KIND_FUNC_PROTO => off += vlen * 8,
                KIND_VAR => off += 4,
                KIND_DATASEC => off += vlen * 12,
                KIND_DECL_TAG => off += 4,
                KIND_ENUM64 => off += vlen * 12,
                other => return Err(BtfError::Malformed(format!("unknown BTF kind {other}"))),
            }
            let id = btf.types.len() as u32;
            if name != 0 && matches!(kind, KIND_STRUCT | KIND_UNION | KIND_TYPEDEF | KIND_FUNC) {
                let n = btf.str_at(name).to_owned();
                btf.by_name.entry(n).or_default().push(id);
            }
            btf.types.push(Type { kind, name, kind_flag, size_or_type, members });
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = t.size_or_type;
                }
                _ => break,
            }
        }
        id
    }

    fn composite(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().copied().find(|&id| {
            let t = &self.types[id as usize];
            matches!(t.kind, KIND_STRUCT | KIND_UNION) && !t.members.is_empty()
        })
    }

    /// Bit offset of `member` inside type `id`, searching anonymous members too.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<(u32, bool)> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            let (bits, bitfield) = if t.kind_flag { (m.offset & 0x00ff_ffff, m.offset >> 24 != 0) } else { (m.offset, false) };
            if m.name != 0 {
                if self.str_at(m.name) == member {
                    return Some((bits, bitfield));
                }
                continue;
            }
            let inner = self.resolve(m.ty);
            if let Some((b, bf)) = self.find_member(inner, member, depth + 1) {
                return Some((bits + b, bf));
            }
        }
        None
    }

    /// Byte offset of `ty.member` (searching anonymous structs and unions).
    pub fn member_offset(&self, ty: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.composite(ty).ok_or_else(|| BtfError::NoType(ty.to_owned()))?;
        let (bits, bitfield) = self
            .find_member(id, member, 0)
            .ok_or_else(|| BtfError::NoMember { ty: ty.to_owned(), member: member.to_owned() })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield { ty: ty.to_owned(), member: member.to_owned() });
        }
        Ok(bits / 8)
    }

    /// Offset of the first of `members` that exists (kernels renamed some fields).
    fn first_offset(&self, ty: &str, members: &[&str]) -> Result<u32, BtfError> {
        let mut last = None;
        for m in members {
            match self.member_offset(ty, m) {
                Ok(o) => return Ok(o),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| BtfError::NoType(ty.to_owned())))
    }

    /// Whether a named function exists (e.g. `bpf_lsm_file_open`).
    pub fn has_func(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|ids| ids.iter().any(|&id| self.types[id as usize].kind == KIND_FUNC))
    }

    /// Whether a named typedef exists (e.g. `btf_trace_sched_process_exec`).
    pub fn has_typedef(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|ids| ids.iter().any(|&id| self.types[id as usize].kind == KIND_TYPEDEF))
    }

    /// Every offset the kernel programs read.
    pub fn kernel_offsets(&self) -> Result<Offsets, BtfError> {
        let o = |ty: &str, m: &str| self.member_offset(ty, m);
        Ok(Offsets {
            task_pid: o("task_struct", "pid")?,
            task_tgid: o("task_struct", "tgid")?,
            task_real_parent: o("task_struct", "real_parent")?,
            task_group_leader: o("task_struct", "group_leader")?,
            task_start_boottime: self.first_offset("task_struct", &["start_boottime", "real_start_time"])?,
            task_mm: o("task_struct", "mm")?,
            task_files: o("task_struct", "files")?,
            mm_arg_start: o("mm_struct", "arg_start")?,
            mm_arg_end: o("mm_struct", "arg_end")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            file_f_path: o("file", "f_path")?,
            file_f_inode: o("file", "f_inode")?,
            file_f_flags: o("file", "f_flags")?,
            path_mnt: o("path", "mnt")?,
            path_dentry: o("path", "dentry")?,
            dentry_d_parent: o("dentry", "d_parent")?,
            dentry_d_name: o("dentry", "d_name")?,
            qstr_name: o("qstr", "name")?,
            mount_mnt: o("mount", "mnt")?,
            mount_mnt_parent: o("mount", "mnt_parent")?,
            mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
            vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
            inode_i_ino: o("inode", "i_ino")?,
            inode_i_sb: o("inode", "i_sb")?,
            inode_i_mode: o("inode", "i_mode")?,
            sb_s_dev: o("super_block", "s_dev")?,
            bprm_file: o("linux_binprm", "file")?,
            user_msghdr_msg_name: o("user_msghdr", "msg_name")?,
            user_msghdr_msg_namelen: o("user_msghdr", "msg_namelen")?,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int b; long c; }; int bf:3; }`
    /// plus `typedef struct outer outer_t` and `int f(void)`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0bf\0outer_t\0f\0".to_vec();
        let s = |name: &str| -> u32 {
            let hay = &strings;
            let needle = format!("\0{name}\0");
            hay.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // [1] int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // [2] anonymous union { int b; int c; }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(8);
        push(s("b"));
        push(1);
        push(0);
        push(s("c"));
        push(1);
        push(0);
        // [3] struct outer, kind_flag (bitfield encoding) set
        push(s("outer"));
        push((1 << 31) | (KIND_STRUCT << 24) | 3);
        push(24);
        push(s("a"));
        push(1);
        push(0);
        push(0);
        push(2);
        push(64);
        push(s("bf"));
        push(1);
        push((3 << 24) | 128);
        // [4] typedef outer_t -> 3
        push(s("outer_t"));
        push(KIND_TYPEDEF << 24);
        push(3);
        // [5] func f -> proto 0 (fine for lookup)
        push(s("f"));
        push(KIND_FUNC << 24);
        push(0);
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn members_inside_anonymous_unions_are_found() {
        let btf = Btf::from_bytes(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert!(matches!(btf.member_offset("outer", "bf"), Err(BtfError::Bitfield { .. })));
        assert!(matches!(btf.member_offset("outer", "zz"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member_offset("nope", "a"), Err(BtfError::NoType(_))));
        assert!(btf.has_typedef("outer_t"));
        assert!(btf.has_func("f"));
        assert!(!btf.has_func("outer"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::from_bytes(b"").is_err());
        assert!(Btf::from_bytes(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::from_bytes(&b).is_err());
    }

    #[test]
    fn this_kernels_offsets_resolve() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: /sys/kernel/btf/vmlinux not readable");
            return;
        };
        let o = btf.kernel_offsets().expect("offsets");
        assert_eq!(o.valid, 1);
        assert_eq!(o.path_mnt, 0);
        assert_eq!(o.path_dentry, 8);
        assert_eq!(o.qstr_name, 8);
        assert!(o.task_tgid > 0 && o.task_pid > 0);
        assert!(btf.has_typedef("btf_trace_sched_process_exec"));
    }
}
