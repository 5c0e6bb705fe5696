//! Push-pull: anti-entropy of the whole member list between two members, as memberlist does.
//!
//! ```text
//!  every push_pull_interval × scale(n), and on join (to every seed):
//!    me ──Effect::PushPull { to, join }──> driver ──stream──> peer
//!          initiator sends local_state() ──────────────────> peer.handle_push_pull(state)
//!          initiator.handle_push_pull(reply) <──────────── peer replies with its local_state()
//!  merge of each remote member (memberlist's mergeState):
//!    Alive → alive (if newer)   Left → left   Suspect or Dead → *our* suspicion (we accuse:
//!    a death we did not see is worth a check, not a verdict)   about ourselves → refute
//! ```
//! The IO (a sealed, length-prefixed stream, one exchange per connection) is the driver's;
//! this crate only says when and with whom, and merges what comes back.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::member::Member;

/// One member's full view, as sent over the stream transport (encodable with postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPullState<A> {
    /// The sender's name.
    pub from: String,
    /// Every member the sender knows, itself included, with state and incarnation.
    pub members: Vec<Member<A>>,
}

/// memberlist's `pushPullScale`: the interval as is up to 32 members, then × (⌈log2 n − log2 32⌉
/// + 1), so the full-state traffic of a large cluster grows like n·log n rather than n².
pub fn scaled_interval(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: usize = 32;
    if n <= THRESHOLD {
        return interval;
    }
    let mult = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() as u32 + 1;
    interval.saturating_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_grows_with_log2_of_the_cluster_size_above_32() {
        let s = Duration::from_secs;
        let at = |n| scaled_interval(s(30), n);
        assert_eq!((at(1), at(32)), (s(30), s(30)));
        assert_eq!((at(33), at(64)), (s(60), s(60)));
        assert_eq!((at(65), at(128)), (s(90), s(90)));
        assert_eq!((at(129), at(256)), (s(120), s(120)));
    }
}
