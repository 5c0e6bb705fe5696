//! What a replica keeps across a restart (`--data-dir`), and when it may keep its id.
//!
//! Invariant: **a dot is never reused.** A replica id may outlive its process only if the state
//! it restarts from holds every dot that id ever created; otherwise the restarted replica takes a
//! fresh epoch (a new id), as every restart without a data dir does.
//!
//! ```text
//!  running:   periodic snapshot, marked unclean ──> disk    (dots may be made after it)
//!  shutdown:  stop writing ──> final snapshot, marked clean ──> disk   (no dot after it)
//!  start:     clean snapshot   ──> restore under its id     (no new version-vector entry)
//!                                  and overwrite it with an unclean one before the first write
//!             unclean snapshot ──> restore under a fresh id (a crash: its last dots may be
//!                                  known to peers but not to this snapshot)
//!             none             ──> new replica, fresh id
//! ```
//!
//! Why each step:
//! - An unclean snapshot is written while the replica may still write: a write after it makes a
//!   dot that the snapshot lacks and peers may hold. Restored under the old id, the replica would
//!   issue that dot again for a different write, and every peer that has the first would drop
//!   the second as seen (and validation would refuse their contexts as "future of the receiver").
//! - A clean snapshot is the last thing the replica did: its context holds every dot it made, so
//!   [`CausalContext::next_dot`](crate::CausalContext::next_dot) on the restored context is above
//!   all of them and the id can be kept.
//! - A clean snapshot is good **once**: after restoring from it the replica will write, and a
//!   crash before the next snapshot would leave the same clean file behind. So the driver
//!   replaces it with an unclean snapshot of the restored replica before anything else.
//! - `next_seq` (the position of the replica's delta buffer) is kept too, so the positions a
//!   kept id speaks of keep growing: a peer that still remembers the transfers of the id's
//!   earlier life never mistakes a new transfer for a late old one.
//! - Peers and the delta buffer are not kept: after a restart every peer gets the full state
//!   once (thinned to its news on arrival), the same as for a new replica.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::causal::{CausalContext, Dot, ReplicaId, VersionVector};
use crate::ormap::Delta;
use crate::validate::Invalid;
use crate::wire::{self, DecodeError};

/// The durable part of a [`Replica`](crate::Replica): its id, its buffer position, and the
/// OR-map state with its causal context. Not its peers, not its delta buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable<K: Ord, V> {
    /// The id the replica ran under.
    pub id: ReplicaId,
    /// The position of its next delta group.
    pub next_seq: u64,
    /// Its whole state: entries and everything it has seen.
    pub state: Delta<K, V>,
}

impl<K: Ord + DeserializeOwned, V: DeserializeOwned> Durable<K, V> {
    /// Decode a durable part of at most `limit` bytes written by [`wire::encode`] (what
    /// `Replica::encode_durable` writes), in this build's wire version or in version 2 (before
    /// contexts had retired prefixes), so a snapshot taken before an upgrade still restores.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, DecodeError> {
        if bytes.first() != Some(&2) || bytes.len() > limit {
            return wire::decode(bytes, limit);
        }
        let v2: DurableV2<K, V> =
            postcard::from_bytes(&bytes[1..]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        Ok(Durable {
            id: v2.id,
            next_seq: v2.next_seq,
            state: Delta {
                entries: v2.state.entries,
                ctx: CausalContext::from_parts(v2.state.ctx.vv, v2.state.ctx.cloud),
            },
        })
    }
}

/// Wire version 2 of [`Durable`]: the same, with contexts of a vector and a cloud only.
#[derive(Deserialize)]
struct DurableV2<K: Ord, V> {
    id: ReplicaId,
    next_seq: u64,
    state: DeltaV2<K, V>,
}

#[derive(Deserialize)]
struct DeltaV2<K: Ord, V> {
    entries: BTreeMap<K, crate::dotmap::DotMap<V>>,
    ctx: ContextV2,
}

#[derive(Deserialize)]
struct ContextV2 {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

/// The same encoding as [`Durable`], borrowing the state: a snapshot of a large map is written
/// without a second copy of it in memory.
#[derive(Serialize)]
pub(crate) struct DurableRef<'a, K: Ord, V> {
    pub(crate) id: ReplicaId,
    pub(crate) next_seq: u64,
    pub(crate) state: &'a Delta<K, V>,
}

/// Why [`Replica::restore`](crate::Replica::restore) refused a durable state. Nothing of it was
/// loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// The state is inconsistent (see [`Invalid`]): a corrupt or forged snapshot.
    Invalid(Invalid),
    /// The id to run under is of another node than the snapshot's.
    OtherNode {
        /// The snapshot's id.
        snapshot: ReplicaId,
        /// The id asked for.
        id: ReplicaId,
    },
    /// The fresh id asked for already has dots in the state: it is not fresh, and its next
    /// dot could be one already issued.
    EpochSeen(ReplicaId),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Invalid(e) => write!(f, "inconsistent replica state: {e}"),
            RestoreError::OtherNode { snapshot, id } => {
                write!(f, "state of replica {snapshot}, not of this node ({id})")
            }
            RestoreError::EpochSeen(id) => {
                write!(f, "the fresh replica id {id} already has dots in the state")
            }
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<Invalid> for RestoreError {
    fn from(e: Invalid) -> Self {
        RestoreError::Invalid(e)
    }
}
