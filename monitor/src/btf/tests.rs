use std::time::Duration;

use super::*;

/// A BTF blob under construction: strings and type records.
struct Blob {
    strings: Vec<u8>,
    types: Vec<u8>,
}

impl Blob {
    fn new() -> Self {
        Self {
            strings: vec![0],
            types: Vec::new(),
        }
    }

    fn s(&mut self, name: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn header(name: u32, kind: BtfKind, kind_flag: bool, vlen: u32, size_or_type: u32) -> [u32; 3] {
        [
            name,
            (u32::from(kind_flag) << 31) | ((kind as u32) << 24) | vlen,
            size_or_type,
        ]
    }

    fn finish(self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend(self.types);
        b.extend(self.strings);
        b
    }
}

/// `struct outer { int a; union { int b; int c; }; int bf:3; }` (`kind_flag` bitfield
/// encoding), `struct legacy { u8 old:4; }` (the older int-encoding bitfield), `typedef
/// struct outer outer_t`, `int f(int)`, plus a record of every kind the walk steps over.
fn blob() -> Vec<u8> {
    use BtfKind::*;
    let mut b = Blob::new();
    let [int, outer, a, bb, c, bf, old, outer_t, f, e, legacy] = [
        "int", "outer", "a", "b", "c", "bf", "old", "outer_t", "f", "e", "legacy",
    ]
    .map(|n| b.s(n));
    b.words(&Blob::header(int, Int, false, 0, 4)); // [1]
    b.words(&[(1 << 24) | 32]); // signed, 32 bits
    b.words(&Blob::header(0, Union, false, 2, 4)); // [2] anonymous union
    b.words(&[bb, 1, 0, c, 1, 0]);
    b.words(&Blob::header(outer, Struct, true, 3, 12)); // [3]
    b.words(&[a, 1, 0, 0, 2, 32, bf, 1, (3 << 24) | 64]);
    b.words(&Blob::header(0, Int, false, 0, 1)); // [4] a 4-bit int at bit 0 of a u8
    b.words(&[4]);
    b.words(&Blob::header(outer_t, Typedef, false, 0, 3)); // [5]
    b.words(&Blob::header(0, FuncProto, false, 1, 1)); // [6] int (int)
    b.words(&[0, 1]);
    b.words(&Blob::header(f, Func, false, 0, 6)); // [7]
    b.words(&Blob::header(0, Ptr, false, 0, 3)); // [8]
    b.words(&Blob::header(0, Array, false, 0, 0)); // [9]
    b.words(&[1, 1, 4]);
    b.words(&Blob::header(e, Enum, false, 2, 4)); // [10]
    b.words(&[a, 0, bb, 1]);
    b.words(&Blob::header(e, Enum64, false, 1, 8)); // [11]
    b.words(&[a, 0, 1]);
    b.words(&Blob::header(outer, Fwd, false, 0, 0)); // [12]
    b.words(&Blob::header(a, Var, false, 0, 1)); // [13]
    b.words(&[1]);
    b.words(&Blob::header(c, Datasec, false, 1, 4)); // [14]
    b.words(&[13, 0, 4]);
    b.words(&Blob::header(bf, DeclTag, false, 0, 3)); // [15]
    b.words(&[u32::MAX]);
    b.words(&Blob::header(0, Const, false, 0, 5)); // [16]
    b.words(&Blob::header(old, TypeTag, false, 0, 16)); // [17]
    b.words(&Blob::header(int, Float, false, 0, 8)); // [18]
    b.words(&Blob::header(legacy, Struct, false, 1, 1)); // [19] no kind_flag
    b.words(&[old, 4, 0]);
    b.finish()
}

#[test]
fn members_inside_anonymous_unions_are_found() {
    let btf = Btf::from_bytes(&blob()).unwrap();
    assert_eq!(btf.types.len(), 20, "every kind was stepped over");
    assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
    assert_eq!(btf.member_offset("outer", "b").unwrap(), 4);
    assert_eq!(btf.member_offset("outer", "c").unwrap(), 4);
    assert_eq!(
        btf.member_offset("outer_t", "a").ok(),
        None,
        "typedef names are not structs"
    );
    assert!(matches!(
        btf.member_offset("outer", "zz"),
        Err(BtfError::NoMember { .. })
    ));
    assert!(matches!(
        btf.member_offset("nope", "a"),
        Err(BtfError::NoType(_))
    ));
}

#[test]
fn bitfields_are_refused_in_both_encodings() {
    let btf = Btf::from_bytes(&blob()).unwrap();
    assert!(matches!(
        btf.member_offset("outer", "bf"),
        Err(BtfError::Bitfield { .. })
    ));
    assert!(matches!(
        btf.member_offset("legacy", "old"),
        Err(BtfError::Bitfield { .. })
    ));
}

#[test]
fn types_are_found_by_name_and_kind() {
    let btf = Btf::from_bytes(&blob()).unwrap();
    assert!(btf.has_typedef("outer_t"));
    assert!(btf.has_func("f"));
    assert!(!btf.has_func("outer"));
    assert_eq!(btf.type_id("outer", BtfKind::Struct), Some(3));
    assert_eq!(btf.type_id("outer", BtfKind::Fwd), Some(12));
    assert!(btf.has_type("e", BtfKind::Enum64));
    assert_eq!(btf.resolve(16), 3, "const -> typedef -> struct");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(Btf::from_bytes(b"").is_err());
    assert!(Btf::from_bytes(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    let full = blob();
    for len in 0..full.len() {
        let mut cut = full.clone();
        cut.truncate(len);
        assert!(Btf::from_bytes(&cut).is_err(), "truncated to {len}");
    }
    let mut bad_kind = full.clone();
    bad_kind[24 + 7] = 31; // the first type's kind byte
    assert!(Btf::from_bytes(&bad_kind).is_err());
    let mut big_endian = full;
    big_endian.swap(0, 1);
    let err = Btf::from_bytes(&big_endian).err().unwrap().to_string();
    assert!(err.contains("big-endian"), "{err}");
}

#[test]
fn a_missing_file_names_the_kernel_option() {
    let err = Btf::from_file(Path::new("/nonexistent/vmlinux"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn this_kernels_offsets_resolve() {
    if !Path::new(VMLINUX_BTF).exists() {
        eprintln!("skipped: {VMLINUX_BTF} is absent (kernel without CONFIG_DEBUG_INFO_BTF)");
        return;
    }
    let bytes = std::fs::read(VMLINUX_BTF).expect("read vmlinux BTF");
    // CPU time, not wall time: a loaded build host must not fail the test.
    let started = thread_cpu_time();
    let btf = Btf::from_bytes(&bytes).expect("parse vmlinux BTF");
    let o = btf.kernel_offsets().expect("offsets");
    let parse = thread_cpu_time() - started;
    eprintln!(
        "parsed {} bytes, {} types and found the offsets in {parse:?} of CPU",
        bytes.len(),
        btf.types.len()
    );
    if !cfg!(debug_assertions) {
        assert!(parse.as_millis() < 200, "parsing took {parse:?}");
    }
    assert_eq!(o.valid, 1);
    assert_eq!(o.path_mnt, 0);
    assert_eq!(o.path_dentry, 8);
    assert_eq!(o.qstr_name, 8);
    assert_eq!(o.user_msghdr_msg_name, 0);
    // The BPF LSM socket hooks' reads: the kernel's msghdr starts with its name, a sock
    // with its sock_common.
    assert_eq!(o.msghdr_msg_name, 0);
    assert!(o.msghdr_msg_namelen > 0 && o.socket_sk > 0 && o.sock_sk_protocol > 0);
    assert!(o.sock_common_skc_family > 0);
    assert!(o.task_tgid > 0 && o.task_pid > 0 && o.task_tgid != o.task_pid);
    assert!(o.mm_arg_end > o.mm_arg_start);
    assert!(o.mount_mnt > 0 && o.file_f_inode > 0);
    assert!(btf.has_typedef("btf_trace_sched_process_exec"));
    assert!(btf.has_func("bpf_lsm_file_open"));
    assert!(btf.has_type("task_struct", BtfKind::Struct));
}
