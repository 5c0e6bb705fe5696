//! Lifeguard's dynamic suspicion timeout, as a pure function.
//!
//! ```text
//!  timeout(c) = max − (max − min) · ln(c + 1) / ln(k + 1),  never below min
//!  c = independent confirmations beyond the first accuser, k = confirmations expected
//! ```
//! A lone accuser waits `max`; each independent confirmation shortens the wait, and `k` of them
//! bring it down to `min`, so a really dead member is declared fast while a slow accuser, whose
//! suspicions nobody confirms, gives its target time to refute.
use std::collections::BTreeSet;
use std::time::Duration;

/// The suspicion timeout after `confirmations` independent confirmations, `k` expected.
/// With `k = 0` (nobody could confirm) it is `min`.
pub fn timeout(min: Duration, max: Duration, k: u32, confirmations: u32) -> Duration {
    if k == 0 || max <= min {
        return min;
    }
    let frac = (f64::from(confirmations) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let span = (max - min).as_secs_f64();
    let t = max.as_secs_f64() - span * frac.min(1.0);
    Duration::from_secs_f64(t).max(min)
}

/// The suspicion minimum for a cluster of `n`: α·max(1, log10 n)·probe interval.
pub fn min_timeout(suspicion_mult: u32, n: usize, probe_interval: Duration) -> Duration {
    let log = (n.max(1) as f64).log10().max(1.0);
    Duration::from_secs_f64(probe_interval.as_secs_f64() * f64::from(suspicion_mult) * log)
}

/// One running suspicion of a member. Its minimum, maximum and expected confirmations are fixed
/// when it starts (as memberlist's `suspectNode`): were they recomputed from the member count
/// at check time, a cluster that grew meanwhile would move the deadline past the check, and
/// without another confirmation nobody would look again (review S1).
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    /// The incarnation suspected; a refutation is a higher one.
    pub(crate) inc: u64,
    /// When it started.
    start: Duration,
    min: Duration,
    max: Duration,
    /// Confirmations expected: α − 2, at most n − 2 (the members other than us and the suspect).
    k: u32,
    /// Accusers so far, the first one included.
    confirmers: BTreeSet<String>,
}

impl Suspicion {
    /// A suspicion of incarnation `inc` by `from`, started at `now` in a cluster of `n` members.
    pub(crate) fn new(
        inc: u64,
        from: String,
        now: Duration,
        n: usize,
        config: &crate::Config,
    ) -> Suspicion {
        let min = min_timeout(config.suspicion_mult, n, config.probe_interval);
        let max = min.saturating_mul(config.suspicion_max_mult);
        let others = u32::try_from(n.saturating_sub(2)).unwrap_or(u32::MAX);
        let k = config.suspicion_mult.saturating_sub(2).min(others);
        Suspicion {
            inc,
            start: now,
            min,
            max,
            k,
            confirmers: BTreeSet::from([from]),
        }
    }

    /// Count `from`'s accusation; false if it is not new (the same accuser, or k already in).
    pub(crate) fn confirm(&mut self, from: &str) -> bool {
        if self.confirmations() >= self.k || self.confirmers.contains(from) {
            return false;
        }
        self.confirmers.insert(from.to_string());
        true
    }

    fn confirmations(&self) -> u32 {
        u32::try_from(self.confirmers.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// When it expires, given the confirmations so far.
    pub(crate) fn deadline(&self) -> Duration {
        self.start + timeout(self.min, self.max, self.k, self.confirmations())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn the_timeout_falls_from_max_to_min_with_the_log_of_confirmations() {
        let (min, max) = (s(4.0), s(24.0));
        assert_eq!(
            timeout(min, max, 2, 0),
            max,
            "a lone accuser waits the longest"
        );
        // ln 2 / ln 3 of the way down.
        let one = timeout(min, max, 2, 1);
        assert!((one.as_secs_f64() - (24.0 - 20.0 * 2f64.ln() / 3f64.ln())).abs() < 1e-9);
        assert_eq!(timeout(min, max, 2, 2), min, "k confirmations: the minimum");
        assert_eq!(timeout(min, max, 2, 9), min, "never below it");
        assert_eq!(
            timeout(min, max, 0, 0),
            min,
            "nobody could confirm: the minimum"
        );
    }

    #[test]
    fn the_minimum_grows_with_log10_of_the_cluster_size_above_ten() {
        let p = Duration::from_secs(1);
        assert_eq!(min_timeout(4, 1, p), s(4.0));
        assert_eq!(min_timeout(4, 10, p), s(4.0));
        assert_eq!(min_timeout(4, 100, p), s(8.0));
        assert_eq!(min_timeout(4, 1000, p), s(12.0));
    }
}
