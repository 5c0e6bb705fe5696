//! The wire format: one version byte, then postcard. Decoding never panics: garbage, truncated
//! and oversized input are errors.
use serde::{Serialize, de::DeserializeOwned};

/// The format version this code writes and reads.
/// 3: causal contexts carry retired prefixes.
pub const VERSION: u8 = 3;

/// Why a message was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Empty input.
    Empty,
    /// A version this code does not read.
    Version(u8),
    /// Larger than the limit.
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid message.
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::Version(v) => {
                write!(f, "unknown wire version {v} (this build reads {VERSION})")
            }
            DecodeError::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds {limit}")
            }
            DecodeError::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encode `msg`.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // postcard only fails on types it cannot represent (none here) or a full fixed buffer (we
    // use a Vec): an empty body then decodes as an error on the other side, never a panic.
    out.extend(postcard::to_allocvec(msg).unwrap_or_default());
    out
}

/// Decode a message of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}
