//! The snapshot file of `--data-dir`: one node's replicated state and replica id, framed so that
//! a corrupt, cut-short, foreign or future file is refused with a sentence, never half-loaded.
//!
//! ```text
//!  offset      size  field
//!  0           8     magic "HECKSNAP"
//!  8           4     format version, u32 little-endian (FORMAT = 1)
//!  12          2     node name length n, u16 little-endian (1..=255)
//!  14          n     node name, UTF-8
//!  14+n        1     clean: 1 = written at graceful shutdown, 0 = periodic
//!  15+n        8     payload length p, u64 little-endian
//!  23+n        p     payload: heck-crdt's wire encoding (version byte, postcard) of
//!                    `Durable<Key, Value>` (replica id, buffer position, OR-map state)
//!  23+n+p      8     xxh3-64 of every byte before it, little-endian
//! ```
//!
//! Invariants: decoding never panics and allocates nothing a length field claims: the whole
//! file is in memory (read under [`MAX_SNAPSHOT`]), every length is checked against the bytes
//! present before it is used, and the payload is decoded only after the checksum matched.
//! What the clean flag means, and why it decides whether the replica id is kept, is in
//! heck-crdt's `durable` module and `docs/protocols/cluster.md` ("Persistence").
use heck_check::NodeName;
use heck_crdt::wire::DecodeError;
use heck_crdt::{Durable, ReplicaId, RestoreError};

use crate::cluster::ClusterError;
use crate::record::{Key, Value};

/// The first bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"HECKSNAP";
/// The layout this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest snapshot read or decoded, in bytes: 1 GiB. A state for 100,000 targets is tens of
/// MiB; past this bound the file is refused rather than read (heck-node's reader caps the read
/// at the same bound).
pub const MAX_SNAPSHOT: usize = 1 << 30;
/// Magic, version, name length, clean flag, payload length, checksum: a file with an empty name
/// and an empty payload.
const MIN_LEN: usize = 8 + 4 + 2 + 1 + 8 + 8;

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Whose it is.
    pub node: NodeName,
    /// Written at graceful shutdown (after the replica's last write).
    pub clean: bool,
    /// The replica's durable part.
    pub replica: Durable<Key, Value>,
}

/// What [`Cluster::restore`](crate::Cluster::restore) did with the replica id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The replica id the node runs under now.
    pub replica: ReplicaId,
    /// The replica id in the snapshot.
    pub previous: ReplicaId,
    /// The snapshot was written at graceful shutdown.
    pub clean: bool,
}

impl Restored {
    /// The old replica id was kept (a clean snapshot): no new version-vector entry. Otherwise
    /// the node runs under its `Identity.epoch`, as after a restart without a data dir.
    pub fn kept_replica_id(&self) -> bool {
        self.replica == self.previous
    }
}

/// Why a snapshot was refused. Nothing of it was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Larger than [`MAX_SNAPSHOT`].
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Shorter than any snapshot (an empty file, or one cut inside its header).
    CutShort {
        /// Its size.
        size: usize,
    },
    /// It does not start with [`MAGIC`].
    NotASnapshot,
    /// A layout version this code does not read.
    Format {
        /// The version in the file.
        found: u32,
    },
    /// The checksum does not match: the file was changed or cut short after it was written.
    Checksum,
    /// The checksum matches but the header does not parse (written by something else).
    Malformed(String),
    /// The snapshot of another node.
    OtherNode {
        /// The snapshot's node.
        snapshot: NodeName,
        /// This node.
        me: NodeName,
    },
    /// The payload does not decode.
    Payload(DecodeError),
    /// The payload decodes but its state is inconsistent, or its replica is another node's.
    Restore(RestoreError),
    /// The node's configuration is unusable (as for [`Cluster::new`](crate::Cluster::new)).
    Cluster(ClusterError),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::TooLarge { size } => {
                write!(
                    f,
                    "snapshot of {size} bytes exceeds the {MAX_SNAPSHOT}-byte limit"
                )
            }
            SnapshotError::CutShort { size } => write!(
                f,
                "snapshot of {size} bytes is cut short (a snapshot has at least {MIN_LEN})"
            ),
            SnapshotError::NotASnapshot => {
                write!(
                    f,
                    "not a heck snapshot (it does not start with \"HECKSNAP\")"
                )
            }
            SnapshotError::Format { found } if *found > FORMAT => write!(
                f,
                "format version {found} is newer than this heck understands (it reads {FORMAT})"
            ),
            SnapshotError::Format { found } => write!(
                f,
                "format version {found} is unknown (this heck reads {FORMAT})"
            ),
            SnapshotError::Checksum => {
                write!(f, "checksum mismatch: the file is corrupt or was cut short")
            }
            SnapshotError::Malformed(e) => write!(f, "malformed snapshot: {e}"),
            SnapshotError::OtherNode { snapshot, me } => {
                write!(f, "snapshot of node {snapshot}, this node is {me}")
            }
            SnapshotError::Payload(e) => write!(f, "snapshot state does not decode: {e}"),
            SnapshotError::Restore(e) => write!(f, "snapshot state refused: {e}"),
            SnapshotError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// The snapshot file of `node`'s replica, whose durable part is `payload` (heck-crdt's wire
/// encoding of a `Durable<Key, Value>`).
pub fn encode(node: &NodeName, clean: bool, payload: &[u8]) -> Vec<u8> {
    let name = node.as_str().as_bytes();
    let mut out = Vec::with_capacity(MIN_LEN + name.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    // A node name is 1..=255 bytes (heck-check's `NodeName`): it fits.
    out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(name);
    out.push(u8::from(clean));
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decode a snapshot file that must be `me`'s. Never panics.
pub fn decode(bytes: &[u8], me: &NodeName) -> Result<Snapshot, SnapshotError> {
    let size = bytes.len();
    if size > MAX_SNAPSHOT {
        return Err(SnapshotError::TooLarge { size });
    }
    // The magic and the version first: a file of another kind or layout is said to be that,
    // not "corrupt".
    let magic = &bytes[..size.min(MAGIC.len())];
    if magic != &MAGIC[..magic.len()] {
        return Err(SnapshotError::NotASnapshot);
    }
    let mut r = Reader { rest: bytes };
    let (Some(_), Some(found)) = (r.take(MAGIC.len()), r.u32()) else {
        return Err(SnapshotError::CutShort { size });
    };
    if found != FORMAT {
        return Err(SnapshotError::Format { found });
    }
    if size < MIN_LEN {
        return Err(SnapshotError::CutShort { size });
    }
    let (body, sum) = bytes.split_at(size - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
        return Err(SnapshotError::Checksum);
    }
    let mut r = Reader {
        rest: &body[MAGIC.len() + 4..],
    };
    let malformed = |what: &str| SnapshotError::Malformed(what.to_string());
    let name_len = r.u16().ok_or_else(|| malformed("no name length"))?;
    let name = r
        .take(usize::from(name_len))
        .ok_or_else(|| malformed("the name is longer than the file"))?;
    let name = std::str::from_utf8(name).map_err(|_| malformed("the node name is not UTF-8"))?;
    let node = NodeName::new(name)
        .map_err(|e| SnapshotError::Malformed(format!("node name {name:?}: {e}")))?;
    let clean = match r.take(1) {
        Some([0]) => false,
        Some([1]) => true,
        _ => return Err(malformed("the clean flag is neither 0 nor 1")),
    };
    let payload_len = r.u64().ok_or_else(|| malformed("no payload length"))?;
    if payload_len != r.rest.len() as u64 {
        return Err(SnapshotError::Malformed(format!(
            "payload length {payload_len}, but {} bytes follow",
            r.rest.len()
        )));
    }
    if node != *me {
        return Err(SnapshotError::OtherNode {
            snapshot: node,
            me: me.clone(),
        });
    }
    // Durable::decode also reads a state written before the upgrade to wire version 3.
    let replica: Durable<Key, Value> =
        Durable::decode(r.rest, MAX_SNAPSHOT).map_err(SnapshotError::Payload)?;
    let mine = ReplicaId::new(node.as_str(), replica.id.epoch);
    if replica.id != mine {
        return Err(SnapshotError::Restore(RestoreError::OtherNode {
            snapshot: replica.id,
            id: mine,
        }));
    }
    Ok(Snapshot {
        node,
        clean,
        replica,
    })
}

/// Reads fields off the front of a byte slice; `None` when too few bytes are left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(a))
    }
}
