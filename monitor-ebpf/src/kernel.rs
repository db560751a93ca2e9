//! Reads of kernel structures at offsets taken from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the loader fills `OFFSETS` before load; every
//! field access goes through `bpf_probe_read_kernel` at `base + offset`.
use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_loop, bpf_probe_read_kernel_str},
};
use monitor_common::{
    NAME_LEN, Offsets, PATH_BUF_LEN, PATH_MAX_DEPTH, PATH_OFFSET, PATH_STORE_LEN,
};

use crate::maps::{SCRATCH, WALK};

/// Filled in by the loader (`EbpfLoader::set_global`); all zeros (invalid) otherwise.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_mm: 0,
    task_files: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_f_path: 0,
    file_f_inode: 0,
    file_f_flags: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    inode_i_mode: 0,
    sb_s_dev: 0,
    bprm_file: 0,
    user_msghdr_msg_name: 0,
    user_msghdr_msg_namelen: 0,
    socket_sk: 0,
    sock_sk_protocol: 0,
    sock_common_skc_family: 0,
    msghdr_msg_name: 0,
    msghdr_msg_namelen: 0,
    _pad: 0,
    valid: 0,
};

/// The offsets, read through a volatile load so the compiler cannot fold the zeros the
/// object file carries.
#[inline(always)]
pub fn offsets() -> &'static Offsets {
    let ptr = &raw const OFFSETS;
    // SAFETY: a volatile read of a local pointer to a static: the compiler can no longer
    // tell which memory it points at, so it loads the fields instead of folding zeros.
    unsafe { &*core::ptr::read_volatile(&ptr) }
}

pub type Kptr = *const u8;

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub fn read<T>(base: Kptr, off: u32) -> Result<T, i64> {
    if base.is_null() {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a fault returns an error.
    unsafe {
        bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).map_err(|e| e as i64)
    }
}

#[inline(always)]
pub fn read_ptr(base: Kptr, off: u32) -> Result<Kptr, i64> {
    read::<u64>(base, off).map(|p| p as Kptr)
}

/// Whether `file` is a memfd (`memfd_create`): the kernel names its dentry
/// `memfd:<name>`.
#[inline(always)]
pub fn is_memfd(file: Kptr) -> bool {
    let o = offsets();
    let Ok(dentry) = read_ptr(file, o.file_f_path + o.path_dentry) else {
        return false;
    };
    let Ok(name) = read_ptr(dentry, o.dentry_d_name + o.qstr_name) else {
        return false;
    };
    matches!(read::<[u8; 6]>(name, 0), Ok(b) if &b == b"memfd:")
}

/// `task->group_leader->start_boottime`: with the tgid, the key of a process.
#[inline(always)]
pub fn task_start_ns(task: Kptr) -> u64 {
    let o = offsets();
    match read_ptr(task, o.task_group_leader) {
        Ok(leader) => read::<u64>(leader, o.task_start_boottime).unwrap_or(0),
        Err(_) => 0,
    }
}

/// `struct file *` of descriptor `fd` of the current task (`current->files->fdt->fd[fd]`).
#[inline(always)]
pub fn file_of_fd(task: Kptr, fd: u32) -> Result<Kptr, i64> {
    let o = offsets();
    let files = read_ptr(task, o.task_files)?;
    let fdt = read_ptr(files, o.files_fdt)?;
    let max: u32 = read(fdt, o.fdt_max_fds)?;
    if fd >= max {
        return Err(-1);
    }
    let array = read_ptr(fdt, o.fdt_fd)?;
    read_ptr(array, fd.wrapping_mul(8))
}

/// Identity and type of an open file.
#[derive(Clone, Copy, Default)]
pub struct FileFacts {
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub flags: u32,
}

#[inline(always)]
pub fn file_facts(file: Kptr) -> Result<FileFacts, i64> {
    let o = offsets();
    let inode = read_ptr(file, o.file_f_inode)?;
    let sb = read_ptr(inode, o.inode_i_sb)?;
    let mode: u16 = read(inode, o.inode_i_mode)?;
    Ok(FileFacts {
        ino: read(inode, o.inode_i_ino)?,
        dev: read(sb, o.sb_s_dev)?,
        mode: u32::from(mode),
        flags: read(file, o.file_f_flags)?,
    })
}

/// Hides a value's range from the optimiser, so a following mask is kept for the
/// verifier (LLVM drops masks it can prove redundant; the verifier cannot always prove it).
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Result of a path walk.
#[derive(Default)]
pub struct PathOut {
    /// Bytes written (components leaf first, each NUL-terminated).
    pub len: u32,
    /// Length (with NUL) of the leaf component; the parent follows it.
    pub leaf_len: u32,
    pub parent_len: u32,
    pub truncated: bool,
}

/// State of a path walk. It lives in a per-CPU map, not on the stack: the verifier then
/// sees unknown scalars in the `bpf_loop` callback and checks one step instead of
/// following every offset the walk can reach.
#[repr(C)]
pub struct Walk {
    /// The `struct mount` being walked, and its `mnt.mnt_root` (read once per mount).
    mnt: u64,
    mnt_root: u64,
    dentry: u64,
    off: u64,
    written: u32,
    max_depth: u32,
    leaf_len: u32,
    parent_len: u32,
    at_root: u32,
    truncated: u32,
}

/// Writes the path of `file` into the scratch area at `PATH_OFFSET`, leaf first, walking
/// dentries and crossing mount points up to the root of the mount namespace. `max_depth`
/// bounds the components written (1 reads the leaf alone).
///
/// The walk runs under `bpf_loop` so the verifier checks one step, not every unrolled
/// iteration.
#[inline(always)]
pub fn file_path(file: Kptr, max_depth: u32) -> PathOut {
    let o = offsets();
    let mut out = PathOut::default();
    let path = file.wrapping_add(o.file_f_path as usize);
    let Ok(vfsmnt) = read_ptr(path, o.path_mnt) else {
        return out;
    };
    let Ok(dentry) = read_ptr(path, o.path_dentry) else {
        return out;
    };
    let Ok(mnt_root) = read_ptr(vfsmnt, o.vfsmount_mnt_root) else {
        return out;
    };
    let Some(wp) = WALK.get_ptr_mut(0) else {
        return out;
    };
    let walk = Walk {
        mnt: vfsmnt.wrapping_sub(o.mount_mnt as usize) as u64,
        mnt_root: mnt_root as u64,
        dentry: dentry as u64,
        off: 0,
        written: 0,
        max_depth,
        leaf_len: 0,
        parent_len: 0,
        at_root: 0,
        truncated: 0,
    };
    // SAFETY: per-CPU map value; the callback below is the only other user, on this CPU.
    unsafe {
        *wp = walk;
        bpf_loop(
            PATH_MAX_DEPTH * 2,
            walk_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let walk = unsafe { &*wp };
    let off = walk.off as usize;
    out.len = if off > PATH_STORE_LEN {
        PATH_STORE_LEN as u32
    } else {
        off as u32
    };
    out.leaf_len = walk.leaf_len;
    out.parent_len = walk.parent_len;
    out.truncated = walk.truncated != 0 || walk.at_root == 0;
    out
}

/// One step of the walk: cross a mount point or copy one component. Returns 1 to stop.
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(wp) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value, set up by `file_path` on this CPU.
    let w = unsafe { &mut *wp };
    let o = offsets();
    if w.written >= w.max_depth {
        w.truncated = 1;
        return 1;
    }
    let mnt = w.mnt as Kptr;
    let dentry = w.dentry as Kptr;
    if dentry == w.mnt_root as Kptr {
        // Top of this mount: continue from where it is mounted.
        let Ok(parent) = read_ptr(mnt, o.mount_mnt_parent) else {
            return 1;
        };
        if parent == mnt {
            w.at_root = 1;
            return 1;
        }
        let Ok(point) = read_ptr(mnt, o.mount_mnt_mountpoint) else {
            return 1;
        };
        let vfsmnt = parent.wrapping_add(o.mount_mnt as usize);
        let Ok(mnt_root) = read_ptr(vfsmnt, o.vfsmount_mnt_root) else {
            return 1;
        };
        w.dentry = point as u64;
        w.mnt = parent as u64;
        w.mnt_root = mnt_root as u64;
        return 0;
    }
    let Ok(parent) = read_ptr(dentry, o.dentry_d_parent) else {
        return 1;
    };
    // A dentry that is its own parent but not the mount's root is a file with no place
    // in any tree (a memfd, `memfd:<name>`): its name is the whole path. Further up, the
    // walk simply reached the top.
    let pseudo = parent == dentry;
    if pseudo && w.written != 0 {
        w.at_root = 1;
        return 1;
    }
    let Ok(name) = read_ptr(dentry, o.dentry_d_name + o.qstr_name) else {
        return 1;
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let pos = opaque(w.off as usize) & (PATH_BUF_LEN - 1);
    // SAFETY: PATH_OFFSET + pos + NAME_LEN <= PATH_OFFSET + PATH_STORE_LEN, inside the
    // scratch value (the size of the largest event).
    let n = unsafe {
        bpf_probe_read_kernel_str(
            buf.cast::<u8>().add(PATH_OFFSET + pos).cast(),
            NAME_LEN as u32,
            name.cast(),
        )
    };
    if n <= 0 {
        return 1;
    }
    if w.written == 0 {
        w.leaf_len = n as u32;
    } else if w.written == 1 {
        w.parent_len = n as u32;
    }
    w.off += n as u64;
    w.written += 1;
    w.dentry = parent as u64;
    if pseudo {
        w.at_root = 1;
        return 1;
    }
    if w.off as usize >= PATH_BUF_LEN {
        w.truncated = 1;
        return 1;
    }
    0
}
