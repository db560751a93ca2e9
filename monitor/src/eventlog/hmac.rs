//! HMAC-SHA256 (RFC 2104) over `sha2`, and the checkpoint key.
use std::{fmt, os::unix::fs::PermissionsExt as _, path::Path};

use sha2::{Digest as _, Sha256};

use super::{LogError, hex};

const BLOCK: usize = 64;

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The secret that signs checkpoints and the head file.
#[derive(Clone)]
pub struct CheckpointKey {
    key: Vec<u8>,
    id: String,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Shorter keys are refused: 16 bytes is the least HMAC-SHA256 should get.
const MIN_KEY_LEN: usize = 16;

impl CheckpointKey {
    /// Reads a key file: its bytes with trailing whitespace removed (so
    /// `openssl rand -hex 32 > KEY` works). The file must be private to its owner (0600 or
    /// 0400), and the key at least 16 bytes long.
    pub fn load(path: &Path) -> Result<Self, LogError> {
        let problem = |problem: String| LogError::Key {
            path: path.to_owned(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
        if !meta.is_file() {
            return Err(problem("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(problem(format!(
                "mode {mode:04o} lets group or others read it; run `chmod 600 {}`",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
        let key = bytes.trim_ascii_end();
        if key.len() < MIN_KEY_LEN {
            return Err(problem(format!(
                "{} bytes; a key needs at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)",
                key.len()
            )));
        }
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: &[u8]) -> Self {
        let id = hex(&hmac_sha256(key, b"pthwatch key id")[..8]);
        Self {
            key: key.to_vec(),
            id,
        }
    }

    /// A public name for the key (16 hex digits), to tell keys apart without revealing them.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hex signature of `msg`.
    pub fn sign(&self, msg: &str) -> String {
        hex(&hmac_sha256(&self.key, msg.as_bytes()))
    }

    /// Whether `mac` (hex) is the signature of `msg`.
    pub fn verify(&self, msg: &str, mac: &str) -> bool {
        constant_time_eq(self.sign(msg).as_bytes(), mac.as_bytes())
    }
}

/// What a checkpoint signs: its position in the chain and the interval it promises.
pub fn checkpoint_message(seq: u64, time: &str, prev: &str, every: u64) -> String {
    format!("pthwatch-checkpoint-v1|{seq}|{time}|{prev}|{every}")
}

/// What the head file's signature covers.
pub fn head_message(seq: u64, hash: &str, time: &str) -> String {
    format!("pthwatch-head-v1|{seq}|{hash}|{time}")
}
