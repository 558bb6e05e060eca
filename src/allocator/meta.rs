//! The network's meta record (`{p}/{net}/meta`): the keyspace format version
//! and the chunk size k every writer must agree on. Written once, by the
//! first allocation, in the same transaction (compare: absent).

use super::error::AllocError;
use serde::{Deserialize, Serialize};

/// Current keyspace format version.
pub const KEYSPACE_VERSION: u32 = 1;

/// The stored meta record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Keyspace format version.
    pub version: u32,
    /// k: a chunk covers 2^k addresses.
    #[serde(rename = "chunkBits")]
    pub chunk_bits: u8,
}

impl Meta {
    /// Meta for chunk size k at the current version.
    pub fn new(chunk_bits: u8) -> Self {
        Meta {
            version: KEYSPACE_VERSION,
            chunk_bits,
        }
    }

    /// JSON bytes. Encoding two integers does not fail; if it ever did the
    /// error says so rather than an empty record being written.
    pub fn encode(&self) -> Result<Vec<u8>, AllocError> {
        serde_json::to_vec(self).map_err(|e| AllocError::Encode {
            what: "meta record",
            reason: e.to_string(),
        })
    }

    /// Parses stored bytes; `Err` carries a description of what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let meta: Meta = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if meta.version != KEYSPACE_VERSION {
            return Err(format!(
                "keyspace format version {} is not supported (this build reads {KEYSPACE_VERSION})",
                meta.version
            ));
        }
        Ok(meta)
    }
}
