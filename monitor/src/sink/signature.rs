//! HMAC-SHA256 (RFC 2104) and the `X-Pthwatch-Signature` header built on it.
//!
//! The signed message is `"<t>.<body>"`: the decimal Unix time of the attempt, a dot, then
//! the exact bytes of the request body. Putting the time under the MAC lets a receiver
//! refuse a captured request replayed later.

use sha2::{Digest as _, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The value of `X-Pthwatch-Signature` for `body` sent at Unix time `t`:
/// `t=<t>,v1=<hex hmac_sha256(secret, "<t>.<body>")>`.
pub fn header(secret: &[u8], t: u64, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = hmac_sha256(secret, &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(&mac))
}

/// What a receiver does, in Rust: recompute the MAC over `"<t>.<body>"`, compare it in
/// constant time, and refuse a timestamp more than `tolerance_secs` away from `now`.
#[cfg(test)]
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for field in header.split(',') {
        match field.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok().map(|n| (n, v)),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some((t, t_text)), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > tolerance_secs {
        return false;
    }
    let expected = hex(&hmac_sha256(secret, &[t_text.as_bytes(), b".", body]));
    constant_time_eq(expected.as_bytes(), v1.as_bytes())
}

#[cfg(test)]
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
