//! Failure detection: SWIM membership with Lifeguard, from scratch, as a sans-IO state machine.
//!
//! * [`swim`] — the protocol: probes, indirect probes, suspicion and refutation by incarnation,
//!   dissemination by piggybacking, and Lifeguard's three additions (local health multiplier,
//!   dynamic suspicion timeout, nacks) plus the buddy system. Join through seeds with periodic
//!   re-announcement, graceful leave, a channel for other layers' payloads.
//! * [`wire`] — postcard packets sealed with XChaCha20-Poly1305 from a key ring.
//!
//! Invariant: no clock, no socket, no RNG here. The driver passes `now` and a seed, delivers
//! timers it was asked to schedule, and sends what it is told; `docs/protocols/swim.md` tells the
//! story. `foca` is the baseline this must beat in the simulator (`cargo bench -p heck-swim`).

pub mod sim;
pub mod swim;
pub mod wire;

pub use swim::{
    Body, Config, Effect, Member, Notification, Packet, State, Stats, Swim, Timer, Update,
};
pub use wire::{Keyring, WireError};
