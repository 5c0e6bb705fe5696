//! The check scheduler: when is each target due?
//!
//! Invariant: every target's checks fall on its own *phase grid*: the instants `t` (measured from
//! the Unix epoch) with `t mod interval == phase`, where `phase = key_hash mod interval`. So
//! * load is flat: n targets with well-mixed hashes spread evenly over the interval, instead of
//!   all firing together at start-up (Prometheus does the same for scrapes, `offset()` in
//!   `scrape/target.go`);
//! * the grid is the same on every node: a new owner that takes a target over keeps its phase;
//! * falling behind never causes a burst: a target whose next slot has already passed skips to
//!   the first slot after `now`, and the skipped slots are counted, not replayed;
//! * a new target is not left `unknown` for a whole interval: [`Schedule::insert_soon`] checks it
//!   once within [`FIRST_CHECK_WITHIN`] (spread over that second by its hash, so 100,000 targets
//!   loaded at once do not all start at the same instant), and the check after it settles on the
//!   phase grid, at least half an interval later.
//!
//! Pure: time is a `Duration` since the Unix epoch, passed in by the caller. The queue is a
//! `BTreeSet<(due, key)>` (about 100 ns per pop + push at 100,000 keys, see the bench), which also
//! supports removal when a target is deleted or changes owner.
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Duration;

/// A new target's first check happens within this (or within its interval, if shorter).
pub const FIRST_CHECK_WITHIN: Duration = Duration::from_secs(1);

/// At start-up, first checks are spread so that at most this many start per second: 100,000
/// targets all checked within one second made a burst that filled every in-flight slot (4,096
/// connections at once) and left the agent's memory 65 MiB higher for good (measured with
/// `v1-bench --skip-blackbox --targets 100000`: peak RSS 187 MiB with the one-second burst,
/// 117 MiB with this spread).
pub const FIRST_CHECKS_PER_SECOND: usize = 5_000;

/// How long the first checks of `targets` targets loaded at once are spread over:
/// [`FIRST_CHECK_WITHIN`], or longer when that would start more than
/// [`FIRST_CHECKS_PER_SECOND`] per second (each target's interval still caps it).
pub fn first_check_spread(targets: usize) -> Duration {
    let needed = Duration::from_secs_f64(targets as f64 / FIRST_CHECKS_PER_SECOND as f64);
    needed.max(FIRST_CHECK_WITHIN)
}

/// The phase of a target on a grid of `interval`: `key_hash mod interval`, in nanoseconds.
pub fn phase(key_hash: u64, interval: Duration) -> Duration {
    let ns = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(key_hash) % ns) as u64)
}

/// The first slot of the grid (`interval`, `phase`) at or after `t`.
pub fn slot_at_or_after(t: Duration, interval: Duration, phase: Duration) -> Duration {
    let i = interval.as_nanos().max(1);
    let (t, p) = (t.as_nanos(), phase.as_nanos() % i);
    // Largest slot <= t is t - ((t - p) mod i), when t >= p.
    let slot = if t <= p {
        p
    } else {
        let back = (t - p) % i;
        if back == 0 { t } else { t - back + i }
    };
    Duration::from_nanos(slot as u64)
}

/// The result of [`Schedule::reschedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rescheduled {
    /// When the key is due next.
    pub next_due: Duration,
    /// Slots skipped because they had already passed (the checker fell behind).
    pub skipped: u64,
}

/// Deadlines of many keys. A popped key is *in flight*: it is no longer in the schedule until the
/// caller [`reschedule`](Schedule::reschedule)s it (after its check finishes), so a key is never
/// checked twice at once. A key removed while in flight is simply not rescheduled by the caller.
#[derive(Debug, Clone)]
pub struct Schedule<K: Ord + Hash + Clone> {
    queue: BTreeSet<(Duration, K)>,
    /// Key → due time, to find a key's queue entry: a hash map, since the keys are names and
    /// B-tree lookups compare them (see heck-node's `Registry`). Its hasher is randomly seeded,
    /// but it is never iterated, so the seed cannot change what the schedule does.
    due: HashMap<K, Duration>,
}

impl<K: Ord + Hash + Clone> Default for Schedule<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Hash + Clone> Schedule<K> {
    /// An empty schedule.
    pub fn new() -> Self {
        Schedule {
            queue: BTreeSet::new(),
            due: HashMap::new(),
        }
    }

    /// Make room for `additional` more keys at once (see `Registry::reserve` in heck-node).
    pub fn reserve(&mut self, additional: usize) {
        self.due.reserve(additional);
    }

    /// Add (or replace) `key`: due at its first phase slot at or after `now`.
    pub fn insert(&mut self, key: K, key_hash: u64, interval: Duration, now: Duration) -> Duration {
        let at = slot_at_or_after(now, interval, phase(key_hash, interval));
        self.insert_at(key, at);
        at
    }

    /// Add (or replace) a new `key`: due once soon, at `now` plus `key_hash mod spread`, where
    /// `spread` is [`FIRST_CHECK_WITHIN`] or the interval if shorter; its reschedule then moves
    /// it onto its phase grid. Returns the due time.
    pub fn insert_soon(
        &mut self,
        key: K,
        key_hash: u64,
        interval: Duration,
        now: Duration,
    ) -> Duration {
        self.insert_soon_within(key, key_hash, interval, now, FIRST_CHECK_WITHIN)
    }

    /// [`insert_soon`](Schedule::insert_soon) with the first check spread over `spread` (or the
    /// interval if shorter): for many targets loaded at once, see [`first_check_spread`].
    pub fn insert_soon_within(
        &mut self,
        key: K,
        key_hash: u64,
        interval: Duration,
        now: Duration,
        spread: Duration,
    ) -> Duration {
        // The high bits: the low bits pick the phase slot, and the first check should not
        // always land just before it.
        let at = now + phase(key_hash.rotate_left(32), spread.min(interval));
        self.insert_at(key, at);
        at
    }

    /// Add (or replace) `key`, due at `at`.
    pub fn insert_at(&mut self, key: K, at: Duration) {
        if let Some(old) = self.due.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// Remove `key`; returns whether it was scheduled (false if absent or in flight).
    pub fn remove(&mut self, key: &K) -> bool {
        match self.due.remove(key) {
            Some(at) => self.queue.remove(&(at, key.clone())),
            None => false,
        }
    }

    /// When `key` is due, if it is scheduled (not in flight).
    pub fn due_at(&self, key: &K) -> Option<Duration> {
        self.due.get(key).copied()
    }

    /// Number of scheduled (not in-flight) keys.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Is nothing scheduled?
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// The earliest due time.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Pop at most `max` keys due at or before `now`, earliest first, as `(key, due)`. They are
    /// in flight until rescheduled.
    pub fn pop_due(&mut self, now: Duration, max: usize) -> Vec<(K, Duration)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.queue.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            if let Some((at, key)) = self.queue.pop_first() {
                self.due.remove(&key);
                out.push((key, at));
            }
        }
        out
    }

    /// Schedule an in-flight `key` again: at the first slot of its grid for `interval` at least
    /// half an interval after `due` (its previous due time). For a `due` on the same grid that is
    /// the next slot; after an off-grid first check ([`insert_soon`](Schedule::insert_soon)) or
    /// a change of interval it keeps two checks from running back to back. If that slot is not
    /// after `now` (we fell behind by more than an interval), skip to the first slot after `now`
    /// and count what was skipped. The grid of a new interval (fast interval while failing) has
    /// its own phase.
    pub fn reschedule(
        &mut self,
        key: K,
        key_hash: u64,
        due: Duration,
        interval: Duration,
        now: Duration,
    ) -> Rescheduled {
        let ph = phase(key_hash, interval);
        let tick = Duration::from_nanos(1);
        let mut next = slot_at_or_after(due + (interval / 2).max(tick), interval, ph);
        let mut skipped = 0;
        if next <= now {
            let after_now = slot_at_or_after(now + tick, interval, ph);
            skipped = ((after_now - next).as_nanos() / interval.as_nanos().max(1)) as u64;
            next = after_now;
        }
        self.insert_at(key, next);
        Rescheduled {
            next_due: next,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn a_key_is_first_due_at_its_phase_slot() {
        let mut sch = Schedule::new();
        // hash 3 s on a 10 s grid: slots at ..., 93, 103, ...
        let at = sch.insert("a", 3_000_000_000, s(10), s(95));
        assert_eq!(at, s(103));
        assert_eq!(sch.next_deadline(), Some(s(103)));
        let at = sch.insert("b", 3_000_000_000, s(10), s(93));
        assert_eq!(at, s(93), "a slot exactly at now is due now");
    }

    #[test]
    fn many_targets_at_once_spread_their_first_checks_to_at_most_the_start_up_rate() {
        assert_eq!(first_check_spread(50), FIRST_CHECK_WITHIN);
        assert_eq!(first_check_spread(5_000), FIRST_CHECK_WITHIN);
        assert_eq!(first_check_spread(100_000), s(20));
        let mut sch = Schedule::new();
        let spread = first_check_spread(100_000);
        let mut latest = Duration::ZERO;
        for i in 0..10_000u64 {
            let hash = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let at = sch.insert_soon_within(i, hash, s(10), s(50), spread);
            // Capped by the interval (10 s), not the 20 s spread.
            assert!(at >= s(50) && at < s(60), "{at:?}");
            latest = latest.max(at);
        }
        assert!(
            latest > s(55),
            "spread over the interval, not one second: {latest:?}"
        );
    }

    #[test]
    fn the_same_hash_gets_the_same_phase_on_every_schedule() {
        let (mut one, mut two) = (Schedule::new(), Schedule::new());
        let a = one.insert("t", 0xdead_beef, s(10), s(1000));
        let b = two.insert("t", 0xdead_beef, s(10), s(1003));
        assert_eq!(
            a.as_nanos() % s(10).as_nanos(),
            b.as_nanos() % s(10).as_nanos()
        );
    }

    #[test]
    fn popped_keys_are_in_flight_until_rescheduled() {
        let mut sch = Schedule::new();
        sch.insert_at("a", s(5));
        sch.insert_at("b", s(6));
        sch.insert_at("c", s(9));
        assert_eq!(sch.pop_due(s(7), 10), vec![("a", s(5)), ("b", s(6))]);
        assert_eq!(sch.len(), 1);
        assert!(!sch.remove(&"a"), "in flight, not scheduled");
        assert_eq!(sch.pop_due(s(100), 1), vec![("c", s(9))], "max respected");
    }

    #[test]
    fn reschedule_moves_to_the_next_slot_of_the_grid() {
        let mut sch = Schedule::new();
        let r = sch.reschedule("a", 3_000_000_000, s(93), s(10), s(94));
        assert_eq!(
            r,
            Rescheduled {
                next_due: s(103),
                skipped: 0
            }
        );
    }

    #[test]
    fn falling_behind_skips_slots_instead_of_bursting() {
        let mut sch = Schedule::new();
        // Due at 93, but the check only finished at 125: slots 103, 113, 123 have passed.
        let r = sch.reschedule("a", 3_000_000_000, s(93), s(10), s(125));
        assert_eq!(
            r,
            Rescheduled {
                next_due: s(133),
                skipped: 3
            }
        );
        assert_eq!(sch.pop_due(s(132), 10), vec![]);
    }

    #[test]
    fn a_new_interval_uses_its_own_grid() {
        let mut sch = Schedule::new();
        // hash 3 s: on a 10 s grid slots end in 3; on a 2 s grid, phase = 3 s mod 2 s = 1 s.
        let r = sch.reschedule("a", 3_000_000_000, s(93), s(2), s(93));
        assert_eq!(r.next_due, s(95));
    }

    #[test]
    fn a_new_key_is_checked_within_a_second_then_settles_on_its_phase_slot() {
        let mut sch = Schedule::new();
        // hash 3 s on a 10 s grid: phase slots at ..., 93, 103, ...; inserted at 95.
        let hash = 3_000_000_000;
        let first = sch.insert_soon("a", hash, s(10), s(95));
        assert!(first >= s(95) && first < s(96), "first check at {first:?}");
        assert_eq!(sch.pop_due(first, 10), vec![("a", first)]);
        let r = sch.reschedule("a", hash, first, s(10), first);
        assert_eq!(r.next_due, s(103), "then on the phase slot");
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn after_a_first_check_just_before_its_slot_the_next_waits_a_whole_slot() {
        let mut sch = Schedule::new();
        // The first check ran at 102.9 s; the phase slot at 103 s is too close (under half an
        // interval), so the next check is at 113 s.
        let first = Duration::from_millis(102_900);
        let r = sch.reschedule("a", 3_000_000_000, first, s(10), first);
        assert_eq!(r.next_due, s(113));
    }

    #[test]
    fn a_new_key_with_a_short_interval_is_checked_within_that_interval() {
        let mut sch = Schedule::new();
        let interval = Duration::from_millis(200);
        for hash in [0, u64::MAX, 0x1234_5678_9abc_def0, 3_000_000_000] {
            let at = sch.insert_soon(hash, hash, interval, s(50));
            assert!(at >= s(50) && at < s(50) + interval, "{hash:#x}: {at:?}");
        }
    }

    #[test]
    fn first_checks_of_many_new_keys_spread_over_the_second() {
        let mut sch = Schedule::new();
        let now = s(1_000);
        // 10,000 names hashed as heck-node hashes them, counted in 10 buckets of 100 ms.
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let hash = xxhash_rust::xxh3::xxh3_64(format!("web-{i}").as_bytes());
            let at = sch.insert_soon(i, hash, s(30), now);
            assert!(at < now + FIRST_CHECK_WITHIN);
            buckets[((at - now).as_millis() / 100) as usize] += 1;
        }
        for b in buckets {
            assert!((800..=1_200).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut sch = Schedule::new();
        sch.insert_at("a", s(5));
        sch.insert_at("a", s(8));
        assert_eq!(sch.len(), 1);
        assert_eq!(sch.next_deadline(), Some(s(8)));
        assert!(sch.remove(&"a"));
        assert!(sch.is_empty());
        assert_eq!(sch.next_deadline(), None);
    }

    proptest! {
        #[test]
        fn slots_are_on_the_grid_and_never_before_t(
            t in 0u64..10_000_000_000_000, interval_ms in 1u64..100_000, hash in any::<u64>(),
        ) {
            let (t, i) = (Duration::from_nanos(t), Duration::from_millis(interval_ms));
            let p = phase(hash, i);
            let slot = slot_at_or_after(t, i, p);
            prop_assert!(slot >= t);
            prop_assert!(slot - t < i);
            prop_assert_eq!(slot.as_nanos() % i.as_nanos(), p.as_nanos());
        }

        /// Flat load: 10,000 names hashed with xxh3 (as heck-node hashes them, under any seed)
        /// on a 10 s grid, counted in 100 buckets of 100 ms: no bucket holds more than twice its
        /// fair share.
        #[test]
        fn phases_spread_load_evenly(seed in any::<u64>()) {
            let i = Duration::from_secs(10);
            let mut buckets = [0u32; 100];
            for n in 0..10_000 {
                let hash = xxhash_rust::xxh3::xxh3_64_with_seed(format!("t-{n:05}").as_bytes(), seed);
                let p = phase(hash, i);
                buckets[(p.as_millis() / 100) as usize] += 1;
            }
            let max = *buckets.iter().max().unwrap_or(&0);
            prop_assert!(max <= 200, "max bucket {max} of fair 100");
        }

        /// After any reschedule the key is due strictly after both its old due time and now.
        #[test]
        fn reschedule_is_always_in_the_future(
            due in 0u64..1_000_000, late in 0u64..1_000_000, interval_ms in 1u64..10_000, hash in any::<u64>(),
        ) {
            let mut sch = Schedule::new();
            let (due, now) = (Duration::from_millis(due), Duration::from_millis(due + late));
            let r = sch.reschedule(1u32, hash, due, Duration::from_millis(interval_ms), now);
            prop_assert!(r.next_due > now);
            prop_assert!(r.next_due > due);
            prop_assert_eq!(sch.len(), 1);
        }
    }
}
