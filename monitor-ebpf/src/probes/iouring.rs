//! io_uring activity of tracked processes. Its opens, reads and sends bypass the syscall
//! tracepoints, so an attributed lineage that sets up or submits to a ring is treated as
//! possibly having read credentials (fail-closed); its connects still pass the
//! `cgroup_sock_addr` programs and its sends the egress program.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{EventKind, IoUringEvent, iouring_kind, lineage_flags};

use crate::{
    emit::{header, send},
    state::{caller, kill_current, kills_on_network, lineage_flags_of, mark_lineage},
};

const IORING_OP_SENDMSG: u32 = 9;
const IORING_OP_CONNECT: u32 = 16;
const IORING_OP_OPENAT: u32 = 18;
const IORING_OP_SEND: u32 = 26;
const IORING_OP_OPENAT2: u32 = 28;

#[inline(always)]
fn on_iouring(kind: u32, opcode: u32, fd: i32) {
    let Some(c) = caller() else { return };
    // SAFETY: map value pointer from a successful lookup.
    let st = unsafe { &*c.st };
    let lineage = c.lineage;
    if lineage != 0 {
        let net = matches!(
            opcode,
            IORING_OP_SENDMSG | IORING_OP_CONNECT | IORING_OP_SEND
        );
        if kind == iouring_kind::CREATE || matches!(opcode, IORING_OP_OPENAT | IORING_OP_OPENAT2) {
            mark_lineage(lineage, lineage_flags::IOURING);
        }
        if net {
            mark_lineage(lineage, lineage_flags::NET);
            if kills_on_network(lineage_flags_of(lineage), c.cfg.mode) {
                mark_lineage(lineage, lineage_flags::KILL);
                kill_current();
            }
        }
    }
    let ev = IoUringEvent {
        header: header(EventKind::IoUring, st, lineage),
        kind,
        opcode,
        fd,
        _pad: 0,
    };
    send(&ev);
}

/// `io_uring:io_uring_create(int fd, void *ctx, u32 sq_entries, u32 cq_entries, u32 flags)`.
#[tracepoint]
pub fn iouring_create(ctx: TracePointContext) -> u32 {
    // SAFETY: `fd` is at offset 8 of the record.
    let fd = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1);
    on_iouring(iouring_kind::CREATE, 0, fd);
    0
}

/// `io_uring:io_uring_submit_req(ctx, req, user_data, u8 opcode, ...)` (`io_uring_submit_sqe`
/// before Linux 6.2, same layout up to `opcode`).
#[tracepoint]
pub fn iouring_submit_req(ctx: TracePointContext) -> u32 {
    // SAFETY: `opcode` is at offset 32 of the record (checked against the tracepoint's
    // format by the loader).
    let opcode = unsafe { ctx.read_at::<u8>(32) }.unwrap_or(0);
    on_iouring(iouring_kind::SUBMIT, u32::from(opcode), -1);
    0
}
