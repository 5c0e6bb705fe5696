//! Packets on the wire: postcard inside XChaCha20-Poly1305, with a key ring.
//!
//! ```text
//!  [version 1 byte][nonce 24 bytes][ciphertext + 16-byte tag]
//!  AAD = version ‖ cluster name
//! ```
//! The primary key (first in the ring) encrypts; every key is tried to decrypt, so keys rotate
//! without a gap: add the new key everywhere, make it primary everywhere, remove the old one.
//! The cluster name as associated data makes a packet of another cluster fail authentication
//! even under the same key. The nonce is 192 random bits (passed in: this crate has no RNG), so
//! random nonces never need a rotation budget. Anything that does not decrypt, or does not
//! decode, is an error: the driver drops it and counts it, never panics.
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Serialize, de::DeserializeOwned};

/// The wire version.
pub const VERSION: u8 = 1;
/// Bytes added by encryption: version + nonce + tag.
pub const OVERHEAD: usize = 1 + 24 + 16;
/// Largest packet accepted (a UDP datagram on loopback; memberlist uses 1400 on real networks).
pub const MAX_PACKET: usize = 65_000;

/// Why a packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Larger than [`MAX_PACKET`].
    TooLarge(usize),
    /// Shorter than the header and tag.
    Truncated,
    /// A version this build does not read.
    Version(u8),
    /// No key in the ring authenticates it (wrong key, wrong cluster, or tampered).
    Unauthenticated,
    /// Authenticated, but not a valid packet.
    Malformed(String),
    /// The key ring is empty.
    NoKey,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLarge(n) => write!(f, "packet of {n} bytes exceeds {MAX_PACKET}"),
            WireError::Truncated => write!(f, "truncated packet"),
            WireError::Version(v) => write!(f, "unknown version {v}"),
            WireError::Unauthenticated => write!(f, "no key authenticates the packet"),
            WireError::Malformed(e) => write!(f, "malformed packet: {e}"),
            WireError::NoKey => write!(f, "the key ring is empty"),
        }
    }
}

impl std::error::Error for WireError {}

/// 32-byte keys; the first is the primary.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<XChaCha20Poly1305>,
    cluster: Vec<u8>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A ring for `cluster` with `keys` (primary first).
    pub fn new(cluster: &str, keys: &[[u8; 32]]) -> Keyring {
        Keyring {
            keys: keys
                .iter()
                .map(|k| XChaCha20Poly1305::new(&Key::from(*k)))
                .collect(),
            cluster: cluster.as_bytes().to_vec(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = vec![VERSION];
        aad.extend_from_slice(&self.cluster);
        aad
    }

    /// Encode and encrypt `msg` with the primary key and `nonce` (24 fresh random bytes).
    pub fn seal<T: Serialize>(&self, msg: &T, nonce: [u8; 24]) -> Result<Vec<u8>, WireError> {
        let key = self.keys.first().ok_or(WireError::NoKey)?;
        let plain = postcard::to_allocvec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
        let aad = self.aad();
        let ct = key
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| WireError::Malformed("encryption failed".into()))?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        if out.len() > MAX_PACKET {
            return Err(WireError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decrypt with any key of the ring and decode.
    pub fn open<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, WireError> {
        if bytes.len() > MAX_PACKET {
            return Err(WireError::TooLarge(bytes.len()));
        }
        if bytes.len() < OVERHEAD {
            return Err(WireError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&bytes[1..25]);
        let aad = self.aad();
        let plain = self
            .keys
            .iter()
            .find_map(|k| {
                k.decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &bytes[25..],
                        aad: &aad,
                    },
                )
                .ok()
            })
            .ok_or(WireError::Unauthenticated)?;
        postcard::from_bytes(&plain).map_err(|e| WireError::Malformed(e.to_string()))
    }

    /// The associated data of a frame sealed for `domain`:
    /// `version ‖ 0xFF ‖ len(domain) as u16 BE ‖ domain ‖ cluster name`.
    /// A packet's associated data is `version ‖ cluster name`, whose second byte (if any) is
    /// UTF-8 and so never 0xFF: no packet opens as a frame and no frame as a packet, and the
    /// length prefix keeps two domains from sharing associated data.
    fn frame_aad(&self, domain: &[u8]) -> Result<Vec<u8>, WireError> {
        let len = u16::try_from(domain.len())
            .map_err(|_| WireError::Malformed(format!("domain of {} bytes", domain.len())))?;
        let mut aad = Vec::with_capacity(4 + domain.len() + self.cluster.len());
        aad.push(VERSION);
        aad.push(0xFF);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(domain);
        aad.extend_from_slice(&self.cluster);
        Ok(aad)
    }

    /// Encrypt raw bytes with the primary key and `nonce` (24 fresh random bytes), binding
    /// `domain` (what the bytes are, e.g. one direction of one stream connection) and the
    /// cluster name into the associated data. The result is laid out like a packet
    /// (`[version][nonce][ciphertext + tag]`, [`OVERHEAD`] bytes more than `plain`) but has no
    /// size cap: the caller frames and caps it.
    pub fn seal_frame(
        &self,
        domain: &[u8],
        plain: &[u8],
        nonce: [u8; 24],
    ) -> Result<Vec<u8>, WireError> {
        let key = self.keys.first().ok_or(WireError::NoKey)?;
        let aad = self.frame_aad(domain)?;
        let ct = key
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| WireError::Malformed("encryption failed".into()))?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt bytes sealed by [`seal_frame`](Self::seal_frame) for the same `domain`, with any
    /// key of the ring. Longer than `max` bytes is refused before any work.
    pub fn open_frame(
        &self,
        domain: &[u8],
        bytes: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, WireError> {
        if bytes.len() > max {
            return Err(WireError::Malformed(format!(
                "frame of {} bytes exceeds {max}",
                bytes.len()
            )));
        }
        if bytes.len() < OVERHEAD {
            return Err(WireError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&bytes[1..25]);
        let aad = self.frame_aad(domain)?;
        self.keys
            .iter()
            .find_map(|k| {
                k.decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &bytes[25..],
                        aad: &aad,
                    },
                )
                .ok()
            })
            .ok_or(WireError::Unauthenticated)
    }
}
