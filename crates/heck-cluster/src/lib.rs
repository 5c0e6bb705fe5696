//! The pure decision core of a heck cluster (version 2): one node's membership, ownership,
//! replicated status and answers, as a sans-IO state machine that heck-node drives with sockets
//! and timers and heck-sim drives with virtual time.
//!
//! Read in this order:
//! 1. [`NodeName`] (from heck-check, beside `TargetName`) — the one type for a node.
//! 2. [`record`] — what is replicated: a [`StatusRecord`] per target (a multi-value register in
//!    the CRDT OR-map, so concurrent observations stay siblings) and [`TargetEntry`]s for targets
//!    added or deleted through the API.
//! 3. [`answer`] — the answer rule: one status from any set of siblings, the same on every node,
//!    and `contested` while siblings remain.
//! 4. [`cluster`] — [`Cluster`]: SWIM membership → rendezvous owners over live members → `Own` /
//!    `Disown`; check results → status writes (only changes); deltas → answers.
//! 5. [`adapter`] — one thin module per core crate used (heck-swim, heck-crdt, heck-ownership,
//!    heck-check/heck-sched), so their API changes stay in one small file each.
//! 6. [`snapshot`] — the `--data-dir` snapshot file: framing, checksum, and what a restore
//!    may keep ([`Cluster::snapshot`], [`Cluster::restore`]).
//! 7. [`sim`] — the whole node as a [`heck_sim::Process`] with scripted virtual checks, and
//!    [`sim::invariants`], one function per invariant.
//!
//! Invariant: no clock, no socket, no task, no randomness drawn here (`clippy.toml` bans the
//! clock): time and seeds come in as arguments, effects go out. `docs/protocols/cluster.md`
//! tells the story: one status change from probe to every node's answer, one failover, and the
//! conflict rule with a worked example.

pub mod adapter;
pub mod answer;
pub mod cluster;
pub mod record;
pub mod sim;
pub mod snapshot;

pub use answer::{Answer, Pick, pick};
pub use cluster::{
    Cluster, ClusterError, Config, Effect, Identity, MemberEvent, Stats, SyncBody, SyncMsg, Timer,
    decode, encode, report_check,
};
pub use heck_check::NodeName;
pub use heck_swim::{Now, PushPullState};
pub use record::{Key, StatusRecord, TargetEntry, Value};
pub use snapshot::{Restored, Snapshot, SnapshotError};
