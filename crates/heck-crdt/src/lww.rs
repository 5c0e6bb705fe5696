//! A last-writer-wins register: the write with the highest (time, replica) stamp wins.
//!
//! Use it where a single current value matters more than keeping concurrent writes (a node's
//! self-description, a configuration blob). Time is an argument (a wall clock read by the
//! caller); ties on time are broken by replica id (then by value), so every replica picks the
//! same winner.
use serde::{Deserialize, Serialize};

use crate::causal::ReplicaId;

/// The register. Its delta is itself: a write returns a new register to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwReg<V> {
    value: V,
    stamp: (u64, ReplicaId),
}

impl<V: Clone> LwwReg<V> {
    /// A register holding `value`, written at `time` by `replica`.
    pub fn new(value: V, time: u64, replica: ReplicaId) -> Self {
        LwwReg {
            value,
            stamp: (time, replica),
        }
    }

    /// The value.
    pub fn get(&self) -> &V {
        &self.value
    }

    /// Delta of writing `value` at `time` by `replica`. A write never goes back in time: the
    /// stamp is at least one past the current one, so a writer with a slow clock still wins
    /// over what it has seen.
    pub fn write(&self, value: V, time: u64, replica: ReplicaId) -> LwwReg<V> {
        LwwReg {
            value,
            stamp: (time.max(self.stamp.0.saturating_add(1)), replica),
        }
    }
}

impl<V: Clone + Ord> LwwReg<V> {
    /// Keep the later write. Equal stamps cannot come from one replica's own writes (each is
    /// stamped past the last it saw), but join must be total, so they break the tie by value:
    /// every replica still picks the same winner, in any order.
    pub fn join(&mut self, other: &LwwReg<V>) {
        if (other.stamp, &other.value) > (self.stamp, &self.value) {
            *self = other.clone();
        }
    }
}
