//! The answer rule: one status per target, the same on every node, from any set of siblings.
//!
//! A target's status register can hold several *siblings*: records written concurrently (neither
//! writer had seen the other's), by two owners on the two sides of a partition, or by an old and
//! a new owner racing at a handover. The CRDT keeps them all; a reader must still answer with
//! one status. Every node orders the siblings by, in turn:
//!
//! 1. **the observer's rank among the target's current owners** (the first owner, then the next
//!    of the `replicas` owners; an observer that owns it no longer comes after all of them),
//! 2. **the later `observed_at`** (the observer's wall clock),
//! 3. **the observer's name** (bytes, ascending),
//! 4. **the larger dot** (only two incarnations of one node can tie this far),
//!
//! and answers with the first. `contested` is true while there is more than one sibling.
//!
//! Why the owner first, and clocks only second: the current owner is the node that checks the
//! target now, and it is about to settle the conflict itself. A contested target is rewritten by
//! its owner after its next check (`Cluster::handle_check`), and that write has seen every sibling,
//! so it replaces them all: picking the owner's sibling now means the answer does not change when
//! the conflict clears. Wall clocks of different nodes disagree by more than the time between two
//! status changes can be; they only break ties between non-owners (e.g. both sides of a healed
//! partition lost their owner). The name and the dot make the order total, so the rule needs no
//! agreement beyond the same siblings and the same owner list: **the same siblings and owners give
//! the same answer on every node, whatever order the writes arrived in** (`tests/answer.rs`).
use std::cmp::Reverse;
use std::time::{Duration, SystemTime};

use heck_check::Status;
use heck_crdt::Dot;

use crate::record::StatusRecord;
use heck_check::NodeName;

/// The sibling the rule picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick<'a> {
    /// Its dot.
    pub dot: Dot,
    /// The record.
    pub record: &'a StatusRecord,
    /// More than one sibling: the observations conflict until the owner's next write.
    pub contested: bool,
}

/// Pick one of `siblings` by the rule above; `owners` are the target's current owners, best
/// first. `None` if there is no sibling (the target was never observed).
pub fn pick<'a>(
    siblings: impl IntoIterator<Item = (Dot, &'a StatusRecord)>,
    owners: &[NodeName],
) -> Option<Pick<'a>> {
    let mut count = 0usize;
    let best = siblings
        .into_iter()
        .inspect(|_| count += 1)
        .min_by_key(|(dot, r)| {
            let rank = owners
                .iter()
                .position(|o| *o == r.observer)
                .unwrap_or(usize::MAX);
            (
                rank,
                Reverse(r.observed_at),
                r.observer.clone(),
                Reverse(*dot),
            )
        })?;
    Some(Pick {
        dot: best.0,
        record: best.1,
        contested: count > 1,
    })
}

/// What any node answers about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status (`unknown` if no owner has decided yet).
    pub status: Status,
    /// When it began, by the observer's clock (`None` if never observed).
    pub since: Option<SystemTime>,
    /// Who produced it (`None` if never observed).
    pub observer: Option<NodeName>,
    /// When the observer wrote it (`None` if never observed).
    pub observed_at: Option<Duration>,
    /// The node checking it now, in this node's view (`None` if no member is live).
    pub owner: Option<NodeName>,
    /// Concurrent observations exist; cleared by the owner's next write.
    pub contested: bool,
    /// The observer's run of failures and of successes when it wrote (0 if never observed):
    /// replicated with the status, so every node shows where rise/fall stands.
    pub consecutive: (u32, u32),
}

impl Answer {
    /// The answer for `pick` (or for a never-observed target) with current `owners`.
    pub fn new(pick: Option<Pick<'_>>, owners: &[NodeName]) -> Answer {
        let owner = owners.first().cloned();
        match pick {
            Some(p) => Answer {
                status: p.record.status(),
                since: Some(p.record.since()),
                observer: Some(p.record.observer.clone()),
                observed_at: Some(p.record.observed_at),
                owner,
                contested: p.contested,
                consecutive: (
                    p.record.check.consecutive_failures(),
                    p.record.check.consecutive_successes(),
                ),
            },
            None => Answer {
                status: Status::Unknown,
                since: None,
                observer: None,
                observed_at: None,
                owner,
                contested: false,
                consecutive: (0, 0),
            },
        }
    }
}
