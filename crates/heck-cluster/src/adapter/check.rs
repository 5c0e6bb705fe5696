//! heck-check and heck-sched: the check state a new owner starts from, and where its first
//! check falls on the target's phase grid.
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, TargetName, TargetSpec};

use crate::record::StatusRecord;

/// The seed of heck-node's `registry::key_hash` (the target's phase on the wall-clock grid). The
/// same constant, so a target keeps its phase when it changes owner.
pub const PHASE_SEED: u64 = 0x6865_636b_7068_6173;

/// The hash that places a target on its phase grid (as heck-node's registry computes it).
pub fn key_hash(name: &TargetName) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(name.as_str().as_bytes(), PHASE_SEED)
}

/// The check state an owner starts (or continues) from: the replicated record's, or a fresh
/// `unknown` at `now` for a target nobody has decided yet.
pub fn starting_state(record: Option<&StatusRecord>, now: Duration) -> CheckState {
    match record {
        Some(r) => r.check.clone(),
        None => CheckState::new(SystemTime::UNIX_EPOCH + now),
    }
}

/// The first slot of `spec`'s grid at or after `now` (time since the Unix epoch): the instant
/// every owner, old or new, checks this target at.
pub fn first_due(spec: &TargetSpec, now: Duration) -> Duration {
    let phase = heck_sched::phase(key_hash(&spec.name), spec.interval);
    heck_sched::slot_at_or_after(now, spec.interval, phase)
}
