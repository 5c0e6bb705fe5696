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
//! 5. [`message`] — what replicas say to each other; [`validate`] — what is checked before
//!    anything received is joined.
//! 6. [`wire`] — versioned postcard encoding that never panics on bad input.
//! 7. [`durable`] — what a replica keeps across a restart, and when it may keep its id.
//!
//! Invariant: nothing here reads a clock, draws randomness or touches IO; callers pass time and
//! randomness in and carry the returned messages. `docs/protocols/crdt.md` tells the story.

pub mod causal;
pub mod dotmap;
pub mod durable;
pub mod lww;
pub mod message;
pub mod ormap;
mod split;
pub mod sync;
pub mod validate;
pub mod wire;

pub use causal::{CausalContext, Causality, Dot, ReplicaId, VersionVector};
pub use dotmap::DotMap;
pub use durable::{Durable, RestoreError};
pub use lww::LwwReg;
pub use message::{Body, MAX_PIECES, Message, Piece};
pub use ormap::{Delta, ORMap};
pub use sync::{Config, Effect, NotRetirable, Replica, Stats};
pub use validate::{Invalid, MAX_COUNTER};
