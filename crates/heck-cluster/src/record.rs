//! What the cluster replicates: per target, who saw what, and which targets exist.
//!
//! One OR-map (heck-crdt's [`ORMap`](heck_crdt::ORMap) inside a [`Replica`](heck_crdt::Replica))
//! holds two kinds of keys, so one anti-entropy machine carries both:
//!
//! ```text
//!   Key::Status(t) → multi-value register of StatusRecord   (written by t's owners, on changes)
//!   Key::Target(t) → multi-value register of TargetEntry    (written through any node's API)
//! ```
//!
//! Both are multi-value registers: concurrent writes stay as siblings until a write that has seen
//! them all replaces them. For statuses the answer rule ([`crate::answer`]) picks one sibling the
//! same way everywhere; for targets "present wins" (see [`TargetEntry`]).
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, Status, TargetInput, TargetName};
use serde::{Deserialize, Serialize};

use heck_check::NodeName;

/// A key of the replicated map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// The status record of a target.
    Status(TargetName),
    /// Whether a target added or deleted through the API exists, and its spec.
    Target(TargetName),
}

/// A value of the replicated map (the variant matches the key's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Under [`Key::Status`].
    Status(StatusRecord),
    /// Under [`Key::Target`].
    Target(TargetEntry),
}

/// One observation of one target, as replicated: the check state (status, since, rise/fall
/// counters) an owner had when it wrote, who that owner was, and when (its wall clock).
///
/// Written only when the status changes (and by the owner to settle a contested target), never
/// per check: bytes on the wire grow with status changes, not with checks. The counters are
/// therefore those of the last write: a new owner continues from them (no flap through
/// `unknown`); a run of results in progress at the old owner is not carried over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Status, since, consecutive successes and failures.
    pub check: CheckState,
    /// The node whose checks produced it.
    pub observer: NodeName,
    /// When the observer wrote it: its wall clock, since the Unix epoch. Only a tie-breaker
    /// between concurrent siblings; causality comes from the dots, never from clocks.
    pub observed_at: Duration,
}

impl StatusRecord {
    /// The replicated status.
    pub fn status(&self) -> Status {
        self.check.status()
    }

    /// When the status began (the observer's clock).
    pub fn since(&self) -> SystemTime {
        self.check.since()
    }
}

/// Whether a target exists, as written through the API.
///
/// Deleting writes [`TargetEntry::Deleted`] (a tombstone) rather than removing the key, because
/// a target from the config file has no entry to remove: the tombstone is what hides it on every
/// node, including after a whole-cluster restart. An add concurrent with a delete leaves both as
/// siblings; **present wins** (the add-wins choice of an OR-set), so a target is never lost to a
/// race, only kept one delete too long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetEntry {
    /// Added (or changed) with this input; replaces the config file's spec of the same name.
    /// (Boxed: an input is large, a tombstone is nothing; the encoding is the same.)
    Present(Box<TargetInput>),
    /// Deleted.
    Deleted,
}
