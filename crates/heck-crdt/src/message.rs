//! What replicas say to each other. Every message names its sender's replica id (node and
//! epoch); deltas travel in pieces, each acked on its own; a digest is a replica's whole causal
//! context. See `sync` for the protocol and `docs/protocols/crdt.md` for the flows.
use serde::{Deserialize, Serialize};

use crate::causal::{CausalContext, ReplicaId};
use crate::ormap::Delta;

/// A message between replicas: who sent it (replica id, including its epoch) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<K: Ord, V> {
    /// The sender's replica id. A new id from the same peer means it restarted: it has lost
    /// whatever it acknowledged before, so it is sent the full state.
    pub sender: ReplicaId,
    /// What it says.
    pub body: Body<K, V>,
}

/// Which piece of which transfer a [`Body::Delta`] carries (and an [`Body::Ack`] acknowledges).
/// Given the sender's state at `seq`, `(from, seq, count)` names the transfer exactly, so a
/// retransmission cuts the same pieces and only the unacknowledged ones are sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Piece {
    /// First buffered group of the transfer; `None`: the full state.
    pub from: Option<u64>,
    /// The transfer covers every group before `seq`.
    pub seq: u64,
    /// This piece, `0..count`.
    pub index: u32,
    /// How many pieces the transfer has, at least 1.
    pub count: u32,
}

/// Most pieces one transfer may have (a receiver refuses more: its bookkeeping is bounded).
pub const MAX_PIECES: u32 = 1 << 20;

impl Piece {
    pub(crate) fn same_transfer(&self, other: &Piece) -> bool {
        (self.from, self.seq, self.count) == (other.from, other.seq, other.count)
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.count >= 1
            && self.count <= MAX_PIECES
            && self.index < self.count
            && self.from.is_none_or(|f| f <= self.seq)
    }
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<K: Ord, V> {
    /// One piece of the groups the receiver had not acked, joined (or of the full state).
    Delta {
        /// Which piece.
        piece: Piece,
        /// Its content.
        delta: Delta<K, V>,
    },
    /// "I have applied this piece you sent me."
    Ack {
        /// The replica id the acked piece came from: an ack meant for an earlier incarnation
        /// of the receiver (before it restarted) is ignored.
        to: ReplicaId,
        /// The piece.
        piece: Piece,
    },
    /// "This is everything I have seen." Sent as a hello on start, then now and then.
    Digest {
        /// The sender's causal context.
        ctx: CausalContext,
        /// The receiver's replica id as the sender knows it (`None`: never heard from it).
        to: Option<ReplicaId>,
        /// The highest `seq` of a transfer from `to` that the sender received whole before
        /// writing `ctx`: only then can the receiver conclude the sender lost state.
        complete: u64,
    },
}
