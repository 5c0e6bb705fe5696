//! Failure detection: SWIM membership with Lifeguard, from scratch, as a sans-IO state machine.
//!
//! * [`swim`] — the state machine: probes, indirect probes, suspicion and refutation by
//!   incarnation, join through seeds with periodic re-announcement, graceful leave, a channel
//!   for other layers' payloads. It is assembled from one module per concern:
//!   * [`member`] — members, updates, and the one precedence rule ([`Update::supersedes`]);
//!   * [`broadcast`] — dissemination: one bounded queue for updates and payloads;
//!   * [`suspicion`] — Lifeguard's dynamic suspicion timeout as a pure function;
//!   * `probe` — the state of one probe (Lifeguard's nack count);
//!   * [`push_pull`] — full-state anti-entropy with one member: when, with whom, the merge;
//!   * [`message`] — packets on the wire and effects for the driver;
//!   * [`config`] — the parameters.
//! * [`wire`] — postcard packets sealed with XChaCha20-Poly1305 from a key ring.
//!
//! Invariant: no clock, no socket, no RNG here. The driver passes `now` and a seed, delivers
//! timers it was asked to schedule, and sends what it is told; `docs/protocols/swim.md` tells the
//! story. `foca` is the baseline this must beat in the simulator (`cargo bench -p heck-swim`).

pub mod broadcast;
pub mod config;
pub mod member;
pub mod message;
mod probe;
pub mod push_pull;
pub mod sim;
pub mod suspicion;
pub mod swim;
pub mod wire;

pub use config::{Config, ConfigError};
pub use member::{Member, State, Update};
pub use message::{Body, Effect, Notification, Now, Packet, Timer};
pub use push_pull::PushPullState;
pub use swim::{Payload, PayloadTooLarge, Stats, Swim};
pub use wire::{Keyring, WireError};
