//! Minimal BTF reader: struct member offsets from the running kernel.
//!
//! Rust eBPF has no CO-RE relocations, so the daemon reads the offsets its kernel programs
//! need from `/sys/kernel/btf/vmlinux` at load time and passes them in
//! `monitor_common::Offsets`. The type section is walked once; only what the queries need is
//! kept: every type's header (for ids), struct and union members in one flat array, and a
//! name index of structs, unions, typedefs and functions.
use std::{collections::HashMap, io::ErrorKind, path::Path, sync::OnceLock};

use monitor_common::Offsets;

/// Where the kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// Bound on typedef/qualifier chains and anonymous-member nesting: real kernels need a few.
const MAX_DEPTH: u32 = 32;

/// Kinds of BTF type (`BTF_KIND_*` in `include/uapi/linux/btf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BtfKind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl BtfKind {
    fn from_u32(v: u32) -> Option<Self> {
        use BtfKind::*;
        const ALL: [BtfKind; 19] = [
            Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict, Func,
            FuncProto, Var, Datasec, Float, DeclTag, TypeTag, Enum64,
        ];
        ALL.get(usize::try_from(v).ok()?.checked_sub(1)?).copied()
    }

    /// Bytes that follow the 12-byte `struct btf_type` for this kind.
    fn trailing_len(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }

    /// Kinds that only qualify or rename another type.
    fn is_alias(self) -> bool {
        matches!(
            self,
            Self::Typedef | Self::Volatile | Self::Const | Self::Restrict | Self::TypeTag
        )
    }

    fn is_composite(self) -> bool {
        matches!(self, Self::Struct | Self::Union)
    }

    /// Kinds indexed by name while parsing: what `member_offset` looks up. Functions (half
    /// of a kernel's types) get their own index on first use.
    fn is_indexed(self) -> bool {
        matches!(self, Self::Struct | Self::Union | Self::Typedef)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{path} does not exist: the kernel was built without CONFIG_DEBUG_INFO_BTF=y, and pthwatch needs it to find kernel structure offsets (use a kernel with BTF; most distribution kernels since 5.4 have it)"
    )]
    Missing { path: String },
    #[error("reading {path}: {source} (run pthwatch as root)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("this kernel's BTF has no struct or union named `{0}`")]
    NoType(String),
    #[error("`struct {ty}` has no member `{member}` in this kernel's BTF")]
    NoMember { ty: String, member: String },
    #[error("`{ty}.{member}` is a bitfield; pthwatch cannot read it by byte offset")]
    Bitfield { ty: String, member: String },
}

/// The 12-byte `struct btf_type` header, plus one word of kind-specific data.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    info: u32,
    /// `size` for ints, structs and unions; the referenced type id for aliases and pointers.
    size_or_type: u32,
    /// Ints: the encoding word. Structs and unions: index of the first member in `members`.
    extra: u32,
}

impl Type {
    const VOID: Self = Self {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    fn kind(&self) -> Option<BtfKind> {
        BtfKind::from_u32((self.info >> 24) & 0x1f)
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    /// For structs and unions: member offsets carry a bitfield size in their top 8 bits.
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    ty: u32,
    offset: u32,
}

/// The parsed type graph of one BTF blob.
pub struct Btf {
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
    /// Members of every struct and union, in type order.
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Name -> ids of named structs, unions and typedefs.
    by_name: NameIndex,
    /// Name -> ids of functions, built by the first function query.
    funcs: OnceLock<NameIndex>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off.saturating_add(4))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {off}")))
}

type NameIndex = HashMap<Box<str>, Vec<u32>>;

fn index_name(index: &mut NameIndex, name: &str, id: u32) {
    match index.get_mut(name) {
        Some(ids) => ids.push(id),
        None => {
            index.insert(name.into(), vec![id]);
        }
    }
}

/// The NUL-terminated string at `off` (empty when out of bounds or not UTF-8).
fn str_at(strings: &[u8], off: u32) -> &str {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).unwrap_or("")
}

/// `base + off .. base + off + len`, checked against `total`.
fn section(base: usize, off: u32, len: u32, total: usize) -> Option<std::ops::Range<usize>> {
    let start = base.checked_add(off as usize)?;
    let end = start.checked_add(len as usize)?;
    (end <= total).then_some(start..end)
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let path_str = || path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            ErrorKind::NotFound => BtfError::Missing { path: path_str() },
            _ => BtfError::Read {
                path: path_str(),
                source,
            },
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses a little-endian BTF blob (a raw `.BTF` section or `/sys/kernel/btf/*`).
    pub fn from_bytes(b: &[u8]) -> Result<Self, BtfError> {
        let magic = b.get(..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        match magic {
            Some(BTF_MAGIC) => {}
            Some(m) if m == BTF_MAGIC.swap_bytes() => {
                return Err(BtfError::Malformed(
                    "big-endian BTF is not supported".into(),
                ));
            }
            _ => return Err(BtfError::Malformed("not BTF (bad magic)".into())),
        }
        if b.get(2) != Some(&1) {
            return Err(BtfError::Malformed(format!(
                "unsupported BTF version {:?}",
                b.get(2)
            )));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Malformed(format!(
                "header length {hdr_len} < {HEADER_LEN}"
            )));
        }
        let types_range = section(hdr_len, u32_at(b, 8)?, u32_at(b, 12)?, b.len())
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let str_range = section(hdr_len, u32_at(b, 16)?, u32_at(b, 20)?, b.len())
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?;
        let mut btf = Self {
            types: vec![Type::VOID],
            members: Vec::new(),
            strings: b[str_range].to_vec(),
            by_name: NameIndex::new(),
            funcs: OnceLock::new(),
        };
        btf.parse_types(&b[types_range])?;
        Ok(btf)
    }

    /// The single pass over the type section.
    fn parse_types(&mut self, t: &[u8]) -> Result<(), BtfError> {
        let mut off = 0usize;
        while off < t.len() {
            let mut ty = Type {
                name_off: u32_at(t, off)?,
                info: u32_at(t, off + 4)?,
                size_or_type: u32_at(t, off + 8)?,
                extra: 0,
            };
            let id = u32::try_from(self.types.len())
                .map_err(|_| BtfError::Malformed("too many types".into()))?;
            let kind = ty.kind().ok_or_else(|| {
                BtfError::Malformed(format!(
                    "type {id}: unknown kind {}",
                    (ty.info >> 24) & 0x1f
                ))
            })?;
            let data = off + 12;
            let next = data + kind.trailing_len(ty.vlen());
            if next > t.len() {
                return Err(BtfError::Malformed(format!(
                    "type {id} ({kind:?}) is truncated"
                )));
            }
            match kind {
                BtfKind::Int => ty.extra = u32_at(t, data)?,
                BtfKind::Struct | BtfKind::Union => {
                    ty.extra = u32::try_from(self.members.len())
                        .map_err(|_| BtfError::Malformed("too many members".into()))?;
                    for m in t[data..next].chunks_exact(12) {
                        self.members.push(Member {
                            name_off: u32_at(m, 0)?,
                            ty: u32_at(m, 4)?,
                            offset: u32_at(m, 8)?,
                        });
                    }
                }
                _ => {}
            }
            if ty.name_off != 0 && kind.is_indexed() {
                index_name(&mut self.by_name, str_at(&self.strings, ty.name_off), id);
            }
            self.types.push(ty);
            off = next;
        }
        Ok(())
    }

    /// Number of types, `void` included.
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    fn str_at(&self, off: u32) -> &str {
        str_at(&self.strings, off)
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    fn members_of(&self, t: &Type) -> &[Member] {
        let start = t.extra as usize;
        match t.kind() {
            Some(k) if k.is_composite() => self.members.get(start..start + t.vlen()).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t) if t.kind().is_some_and(BtfKind::is_alias) => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }

    /// Id of the type `name` of `kind` (the first, if the BTF has several).
    pub fn type_id(&self, name: &str, kind: BtfKind) -> Option<u32> {
        let index = match kind {
            k if k.is_indexed() => &self.by_name,
            BtfKind::Func => self.funcs.get_or_init(|| self.index_of(BtfKind::Func)),
            _ => return self.ids_of(kind).find(|&id| self.name_of(id) == name),
        };
        let ids = index.get(name)?;
        ids.iter()
            .copied()
            .find(|&id| self.ty(id).and_then(Type::kind) == Some(kind))
    }

    fn ids_of(&self, kind: BtfKind) -> impl Iterator<Item = u32> + '_ {
        (1..self.types.len() as u32)
            .filter(move |&id| self.ty(id).and_then(Type::kind) == Some(kind))
    }

    fn name_of(&self, id: u32) -> &str {
        self.ty(id).map_or("", |t| self.str_at(t.name_off))
    }

    fn index_of(&self, kind: BtfKind) -> NameIndex {
        let mut index = NameIndex::new();
        for id in self.ids_of(kind) {
            index_name(&mut index, self.name_of(id), id);
        }
        index
    }

    /// Whether a type `name` of `kind` exists.
    #[cfg(test)]
    pub fn has_type(&self, name: &str, kind: BtfKind) -> bool {
        self.type_id(name, kind).is_some()
    }

    /// Whether a function exists (e.g. `bpf_lsm_file_open`: the kernel has BPF LSM hooks).
    #[cfg(test)]
    pub fn has_func(&self, name: &str) -> bool {
        self.has_type(name, BtfKind::Func)
    }

    /// Whether a typedef exists (e.g. `btf_trace_sched_process_exec`: a `tp_btf` target).
    #[cfg(test)]
    pub fn has_typedef(&self, name: &str) -> bool {
        self.has_type(name, BtfKind::Typedef)
    }

    /// The struct or union `name`; a complete definition wins over an empty one.
    fn composite(&self, name: &str) -> Option<u32> {
        let ids = self.by_name.get(name)?;
        let composite = |id: &&u32| {
            self.ty(**id)
                .and_then(Type::kind)
                .is_some_and(BtfKind::is_composite)
        };
        ids.iter()
            .filter(composite)
            .find(|&&id| self.ty(id).is_some_and(|t| t.vlen() > 0))
            .or_else(|| ids.iter().find(composite))
            .copied()
    }

    /// (bit offset, is a bitfield) of `member` in composite `id`, looking inside anonymous
    /// struct and union members.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<(u32, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.ty(id)?;
        for m in self.members_of(t) {
            let (bits, bitfield_size) = if t.kind_flag() {
                (m.offset & 0x00ff_ffff, m.offset >> 24)
            } else {
                (m.offset, 0)
            };
            if m.name_off != 0 {
                if self.str_at(m.name_off) == member {
                    return Some((bits, bitfield_size != 0 || self.is_int_bitfield(m.ty)));
                }
                continue;
            }
            let inner = self.resolve(m.ty);
            if let Some((b, bitfield)) = self.find_member(inner, member, depth + 1) {
                return Some((bits + b, bitfield));
            }
        }
        None
    }

    /// The pre-`kind_flag` bitfield encoding: an int type narrower than its storage.
    fn is_int_bitfield(&self, ty: u32) -> bool {
        let Some(t) = self.ty(self.resolve(ty)) else {
            return false;
        };
        if t.kind() != Some(BtfKind::Int) {
            return false;
        }
        let (bit_offset, bits) = ((t.extra >> 16) & 0xff, t.extra & 0xff);
        bit_offset != 0 || bits != t.size_or_type * 8
    }

    /// Byte offset of `member` in `struct_name` (or union), found inside anonymous struct
    /// and union members too. Bitfields are refused.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .composite(struct_name)
            .ok_or_else(|| BtfError::NoType(struct_name.to_owned()))?;
        let (bits, bitfield) =
            self.find_member(id, member, 0)
                .ok_or_else(|| BtfError::NoMember {
                    ty: struct_name.to_owned(),
                    member: member.to_owned(),
                })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_owned(),
                member: member.to_owned(),
            });
        }
        Ok(bits / 8)
    }

    /// Offset of the first of `members` that exists: kernels renamed some fields.
    fn first_offset(&self, ty: &str, members: &[&str]) -> Result<u32, BtfError> {
        for m in members {
            match self.member_offset(ty, m) {
                Err(BtfError::NoMember { .. }) => {}
                found => return found,
            }
        }
        Err(BtfError::NoMember {
            ty: ty.to_owned(),
            member: members.join(" or "),
        })
    }

    /// Every offset the kernel programs read, with `valid = 1`.
    pub fn kernel_offsets(&self) -> Result<Offsets, BtfError> {
        let o = |ty: &str, m: &str| self.member_offset(ty, m);
        Ok(Offsets {
            task_pid: o("task_struct", "pid")?,
            task_tgid: o("task_struct", "tgid")?,
            task_real_parent: o("task_struct", "real_parent")?,
            task_group_leader: o("task_struct", "group_leader")?,
            // Renamed in 5.5.
            task_start_boottime: self
                .first_offset("task_struct", &["start_boottime", "real_start_time"])?,
            task_mm: o("task_struct", "mm")?,
            task_files: o("task_struct", "files")?,
            mm_arg_start: o("mm_struct", "arg_start")?,
            mm_arg_end: o("mm_struct", "arg_end")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            // `f_path` sits in an anonymous union on 6.8+.
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
            socket_sk: o("socket", "sk")?,
            sock_sk_protocol: o("sock", "sk_protocol")?,
            sock_common_skc_family: o("sock_common", "skc_family")?,
            msghdr_msg_name: o("msghdr", "msg_name")?,
            msghdr_msg_namelen: o("msghdr", "msg_namelen")?,
            _pad: 0,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests;
