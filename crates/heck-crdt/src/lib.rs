//! heck's CRDTs, from scratch: how replicas that never coordinate still agree.
//!
//! Read in this order:
//! 1. [`causal`] — [`Dot`] (one event), [`VersionVector`] (how much of each replica's history
//!    was seen; compare → before / after / equal / concurrent), [`CausalContext`] (every dot seen,
//!    compactly: a vector plus a cloud of out-of-order dots).
//! 2. [`ormap`] — the observed-remove, add-wins map of multi-value registers. Mutators return
//!    deltas; join is the only way state changes.
//! 3. [`lww`] — a last-writer-wins register, for values where only the latest matters.
//! 4. [`sync`] — anti-entropy: how deltas travel (delta intervals, acks, digests, full-state
//!    fallback, pieces under a byte cap, restarts noticed by replica id), as a sans-IO state
//!    machine that validates what it receives.
//! 5. [`wire`] — versioned postcard encoding that never panics on bad input.
//!
//! Invariant: nothing here reads a clock, draws randomness or touches IO; callers pass time and
//! randomness in and carry the returned messages. `docs/protocols/crdt.md` tells the story.

pub mod causal;
pub mod lww;
pub mod ormap;
pub mod sync;
pub mod wire;

pub use causal::{CausalContext, Causality, Dot, ReplicaId, VersionVector};
pub use lww::LwwReg;
pub use ormap::{Delta, Invalid, MAX_COUNTER, ORMap};
pub use sync::{Body, Config, Effect, MAX_PIECES, Message, NotRetirable, Piece, Replica, Stats};
