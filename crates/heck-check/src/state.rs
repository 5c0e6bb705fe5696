//! The check state machine: consecutive outcomes → status, with HAProxy/Kubernetes semantics.
//!
//! ```text
//!             rise successes in a row               fall failures in a row
//!   unknown ─────────────────────────> healthy <─────────────────────────┐
//!      │                                  │                              │
//!      │ fall failures in a row           │ fall failures in a row       │ rise successes
//!      v                                  v                              │ in a row
//!   unhealthy <───────────────────────────┘──────────────────────────────┘
//! ```
//!
//! Invariant: the status changes only when the run of identical results reaches its threshold,
//! and every change is returned as exactly one [`Transition`]. A success resets the failure run
//! and a failure resets the success run, so a flapping target never crosses a threshold of 2+.
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::spec::Thresholds;

/// What heck believes about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not enough consecutive results yet to decide (a new target, or one just handed over).
    Unknown,
    /// `rise` consecutive successes, and no `fall` consecutive failures since.
    Healthy,
    /// `fall` consecutive failures, and no `rise` consecutive successes since.
    Unhealthy,
}

impl Status {
    /// The lowercase name used in JSON, query strings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// Parse the lowercase name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "unknown" => Some(Status::Unknown),
            "healthy" => Some(Status::Healthy),
            "unhealthy" => Some(Status::Unhealthy),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status change, produced by [`CheckState::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// When the deciding result was observed.
    pub at: SystemTime,
}

/// The state of one target's check. Plain data (serializable), so a new owner can take over the
/// counters of the old one instead of starting from `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    status: Status,
    since: SystemTime,
    successes: u32,
    failures: u32,
}

impl CheckState {
    /// A target seen for the first time at `now`: unknown, no results yet.
    pub fn new(now: SystemTime) -> Self {
        CheckState {
            status: Status::Unknown,
            since: now,
            successes: 0,
            failures: 0,
        }
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// When the current status began (for `unknown`: when tracking began).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// Length of the current run of successes (0 if the last result failed).
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Length of the current run of failures (0 if the last result succeeded).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Is the target failing, for the purpose of the fast interval? True while the last result
    /// failed, and while unhealthy (even during a run of successes that has not reached `rise`),
    /// so both a fall and a recovery are confirmed at the fast pace.
    pub fn is_failing(&self) -> bool {
        self.failures > 0 || self.status == Status::Unhealthy
    }

    /// Record one result observed at `now`; returns the transition if the status changed.
    pub fn observe(
        &mut self,
        success: bool,
        now: SystemTime,
        thresholds: Thresholds,
    ) -> Option<Transition> {
        let to = if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= thresholds.rise.get()).then_some(Status::Healthy)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= thresholds.fall.get()).then_some(Status::Unhealthy)
        }?;
        if to == self.status {
            return None;
        }
        let transition = Transition {
            from: self.status,
            to,
            at: now,
        };
        self.status = to;
        self.since = now;
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn th(rise: u32, fall: u32) -> Thresholds {
        Thresholds {
            rise: NonZeroU32::new(rise).expect("rise > 0"),
            fall: NonZeroU32::new(fall).expect("fall > 0"),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn unknown_becomes_healthy_after_rise_successes() {
        let mut s = CheckState::new(t(0));
        assert_eq!(s.observe(true, t(1), th(2, 3)), None);
        assert_eq!(
            s.observe(true, t(2), th(2, 3)),
            Some(Transition {
                from: Status::Unknown,
                to: Status::Healthy,
                at: t(2)
            })
        );
        assert_eq!(s.since(), t(2));
        assert_eq!(
            s.observe(true, t(3), th(2, 3)),
            None,
            "no repeated transition"
        );
    }

    #[test]
    fn healthy_becomes_unhealthy_after_fall_failures_in_a_row() {
        let mut s = CheckState::new(t(0));
        s.observe(true, t(1), th(1, 3));
        assert_eq!(s.observe(false, t(2), th(1, 3)), None);
        assert_eq!(s.observe(false, t(3), th(1, 3)), None);
        assert!(s.is_failing());
        assert_eq!(
            s.observe(false, t(4), th(1, 3)),
            Some(Transition {
                from: Status::Healthy,
                to: Status::Unhealthy,
                at: t(4)
            })
        );
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut s = CheckState::new(t(0));
        s.observe(true, t(1), th(1, 2));
        s.observe(false, t(2), th(1, 2));
        s.observe(true, t(3), th(1, 2));
        assert!(!s.is_failing());
        assert_eq!(s.observe(false, t(4), th(1, 2)), None, "run restarted at 1");
        assert_eq!(s.status(), Status::Healthy);
    }

    #[test]
    fn unknown_becomes_unhealthy_after_fall_failures() {
        let mut s = CheckState::new(t(0));
        assert_eq!(
            s.observe(false, t(1), th(2, 1)).map(|t| t.to),
            Some(Status::Unhealthy)
        );
    }

    #[test]
    fn an_unhealthy_target_stays_failing_until_it_rises() {
        let mut s = CheckState::new(t(0));
        s.observe(false, t(1), th(3, 1));
        s.observe(true, t(2), th(3, 1));
        assert!(s.is_failing(), "one success of three is not a recovery");
        s.observe(true, t(3), th(3, 1));
        let tr = s.observe(true, t(4), th(3, 1)).expect("recovers");
        assert_eq!((tr.from, tr.to), (Status::Unhealthy, Status::Healthy));
        assert!(!s.is_failing());
    }

    proptest! {
        /// The status always equals what the tail of the history says: healthy iff the last
        /// `rise` results were successes, or the last threshold run reached was a success run.
        /// Every transition is checked against the reference model's own change (from, to, at),
        /// not against the machine's status, so a missed, doubled or mistimed transition fails.
        #[test]
        fn status_and_transitions_follow_the_last_completed_run(
            results in proptest::collection::vec(any::<bool>(), 0..60),
            rise in 1u32..5, fall in 1u32..5,
        ) {
            let mut s = CheckState::new(t(0));
            let mut expected = Status::Unknown;
            let mut expected_since = t(0);
            for (i, &ok) in results.iter().enumerate() {
                let now = t(i as u64 + 1);
                let tr = s.observe(ok, now, th(rise, fall));
                // Reference model: look at the run ending here.
                let run = results[..=i].iter().rev().take_while(|&&r| r == ok).count() as u32;
                let before = expected;
                if ok && run >= rise { expected = Status::Healthy; }
                if !ok && run >= fall { expected = Status::Unhealthy; }
                let expected_tr = (before != expected).then_some(Transition {
                    from: before,
                    to: expected,
                    at: now,
                });
                if expected_tr.is_some() { expected_since = now; }
                prop_assert_eq!(s.status(), expected);
                prop_assert_eq!(tr, expected_tr);
                prop_assert_eq!(s.since(), expected_since);
            }
        }
    }
}
