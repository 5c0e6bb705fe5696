//! An observed-remove, add-wins map whose values are multi-value registers, as a delta-state CRDT.
//!
//! State = a *dot store* (key → dot → value) plus a [`CausalContext`] (every dot ever seen,
//! including those since overwritten or removed). That pair answers, for any entry another
//! replica sends: "is this new to me, or did I already see it and delete it?"
//!
//! Join of `(s1, c1)` and `(s2, c2)` keeps, per key, the entries both have, plus the entries
//! only one side has *that the other side has not seen* (a seen-but-absent entry was removed
//! or overwritten there). Contexts are unioned. This join is commutative, associative and
//! idempotent (see `tests/laws.rs`), so replicas converge whatever the delivery order.
//!
//! Mutators never change the state: each returns a [`Delta`], a small state of the same kind,
//! and the caller joins it ([`ORMap::apply`]). The delta of `write(k, v)` holds the new entry
//! and, in its context, the dots of `k`'s current values: joined anywhere, it replaces exactly
//! the values its writer saw. Values written concurrently (dots the writer had not seen) survive
//! as siblings, so no write is lost: [`ORMap::get`] returns every sibling, in dot order.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::causal::{CausalContext, Dot, ReplicaId};

/// A delta (or a whole state, which is the largest delta): entries plus the dots they account for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta<K: Ord, V> {
    /// key → dot → value.
    pub entries: BTreeMap<K, BTreeMap<Dot, V>>,
    /// Every dot this delta speaks for: present in `entries`, or known to be gone.
    pub ctx: CausalContext,
}

impl<K: Ord, V> Default for Delta<K, V> {
    fn default() -> Self {
        Delta {
            entries: BTreeMap::new(),
            ctx: CausalContext::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> Delta<K, V> {
    /// Does this delta carry nothing?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.ctx.is_empty()
    }

    /// Number of (key, dot, value) entries.
    pub fn len(&self) -> usize {
        self.entries.values().map(BTreeMap::len).sum()
    }

    /// The join of two deltas (to send several buffered deltas as one). Not compacted: a delta's
    /// context stays a cloud of the dots it speaks for.
    pub fn join(&mut self, other: &Delta<K, V>) {
        join_stores(
            &mut self.entries,
            &self.ctx,
            other,
            None::<&mut HashMap<Dot, K>>,
        );
        self.ctx.join(&other.ctx);
    }
}

/// Counters above this are refused in anything received: a replica that writes a million times a
/// second needs nine years to reach it, and a context entry near `u64::MAX` from a peer would make
/// every future write of that replica look already seen (and overflow `next_dot`).
pub const MAX_COUNTER: u64 = 1 << 48;

/// Why a received delta (or state) was refused. Nothing of it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// An entry whose dot its own context does not hold: joined, it would be an entry nobody
    /// can ever remove consistently.
    DotOutsideContext(Dot),
    /// One dot under two keys: a dot names one write.
    DotUnderTwoKeys(Dot),
    /// A counter of 0 (dots count from 1) or above [`MAX_COUNTER`].
    CounterOutOfRange {
        /// Whose.
        replica: ReplicaId,
        /// The counter.
        counter: u64,
    },
    /// A dot of the receiver itself that it never issued: someone claims to have seen writes
    /// this replica has not made yet (they would be dropped as "seen" when it makes them).
    FutureOfReceiver(Dot),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::DotOutsideContext(d) => {
                write!(
                    f,
                    "entry dot {}:{} missing from its context",
                    d.replica, d.counter
                )
            }
            Invalid::DotUnderTwoKeys(d) => {
                write!(f, "dot {}:{} under two keys", d.replica, d.counter)
            }
            Invalid::CounterOutOfRange { replica, counter } => {
                write!(
                    f,
                    "counter {counter} of {replica} outside 1..={MAX_COUNTER}"
                )
            }
            Invalid::FutureOfReceiver(d) => {
                write!(
                    f,
                    "dot {}:{} of the receiver that it never issued",
                    d.replica, d.counter
                )
            }
        }
    }
}

impl std::error::Error for Invalid {}

/// Check a received context's counters (see [`MAX_COUNTER`]).
pub fn validate_context(ctx: &CausalContext) -> Result<(), Invalid> {
    let vv = ctx.vv().iter().map(|(r, &n)| (*r, n));
    let cloud = ctx.cloud().iter().map(|d| (d.replica, d.counter));
    for (replica, counter) in vv.chain(cloud) {
        if counter == 0 || counter > MAX_COUNTER {
            return Err(Invalid::CounterOutOfRange { replica, counter });
        }
    }
    Ok(())
}

impl<K: Ord + Clone, V: Clone + PartialEq> Delta<K, V> {
    /// Check what a decoder cannot: every entry's dot is in the context, no dot is under two
    /// keys, every counter is in range. Run on everything received before joining it.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_context(&self.ctx)?;
        let mut seen = std::collections::HashSet::new();
        for m in self.entries.values() {
            for d in m.keys() {
                if d.counter == 0 || d.counter > MAX_COUNTER {
                    return Err(Invalid::CounterOutOfRange {
                        replica: d.replica,
                        counter: d.counter,
                    });
                }
                if !self.ctx.contains(d) {
                    return Err(Invalid::DotOutsideContext(*d));
                }
                if !seen.insert(*d) {
                    return Err(Invalid::DotUnderTwoKeys(*d));
                }
            }
        }
        Ok(())
    }

    /// Cut this delta into pieces of at most `max_bytes` each (as estimated with `entry_bytes`
    /// for one entry's key and value), whose join is this delta again. Every piece is itself a
    /// valid delta below this one (joined alone, it never removes what this delta keeps), so
    /// the pieces may arrive in any order, some later than others.
    ///
    /// How: entries are grouped by the replica of their dot. For each replica, the first piece
    /// holds its lowest-numbered entries and, as context, the prefix `1..=b` of its counters
    /// (compact: one vector entry) where every live entry up to `b` is in that piece; entries
    /// above `b` go with the exact dots of their range (the removed ones included) as a cloud.
    /// So a replica's removed dots cost nothing below its first cut and one dot each above it;
    /// a single entry larger than `max_bytes` is a piece of its own (over the limit: the caller
    /// counts it). A delta under the limit is one piece, itself.
    pub fn split(&self, max_bytes: usize, entry_bytes: impl Fn(&K, &V) -> usize) -> Vec<Self> {
        let estimate = |d: &Self| -> usize {
            let entries: usize = d
                .entries
                .iter()
                .flat_map(|(k, m)| m.values().map(move |v| (k, v)))
                .map(|(k, v)| entry_bytes(k, v) + DOT_BYTES)
                .sum();
            entries + (d.ctx.vv().iter().count() + d.ctx.cloud().len()) * DOT_BYTES + OVERHEAD
        };
        if estimate(self) <= max_bytes {
            return vec![self.clone()];
        }
        let mut cut = Cutter {
            max_bytes,
            pieces: Vec::new(),
            current: Delta::default(),
            bytes: OVERHEAD,
        };
        // Every replica this delta speaks of, with its live entries by counter.
        let mut by_replica: BTreeMap<ReplicaId, BTreeMap<u64, (&K, &V)>> = BTreeMap::new();
        for (k, m) in &self.entries {
            for (d, v) in m {
                by_replica
                    .entry(d.replica)
                    .or_default()
                    .insert(d.counter, (k, v));
            }
        }
        for (r, _) in self.ctx.vv().iter() {
            by_replica.entry(*r).or_default();
        }
        for d in self.ctx.cloud() {
            by_replica.entry(d.replica).or_default();
        }
        for (r, live) in &by_replica {
            let n = self.ctx.vv().get(r);
            // Give the prefix a piece of its own when it would fit there but not in what is
            // left of the current one: removed dots above a cut cost a dot each.
            let prefix_bytes: usize = live
                .range(..=n)
                .map(|(_, (k, v))| entry_bytes(k, v) + DOT_BYTES)
                .sum::<usize>()
                + DOT_BYTES;
            if !cut.fits(prefix_bytes) && prefix_bytes + OVERHEAD <= max_bytes {
                cut.flush();
            }
            let mut live = live.iter().peekable();
            // The prefix: entries while they fit, then the vector entry 1..=b.
            let mut b = n;
            let mut added = false;
            while let Some(&(&c, &(k, v))) = live.peek() {
                if c > n {
                    break;
                }
                let size = entry_bytes(k, v) + DOT_BYTES;
                if !cut.fits(size + DOT_BYTES) && !cut.current.is_empty() {
                    b = c - 1;
                    break;
                }
                cut.add_entry(
                    k,
                    Dot {
                        replica: *r,
                        counter: c,
                    },
                    v,
                    size,
                    false,
                );
                added = true;
                live.next();
            }
            if b > 0 {
                if !added && !cut.fits(DOT_BYTES) {
                    cut.flush();
                }
                cut.current.ctx.insert_prefix(*r, b);
                cut.bytes += DOT_BYTES;
            }
            if b < n {
                cut.flush();
            }
            // Above the cut: every counter of (b, n] is in the context (removed or live).
            let mut next = b + 1;
            while next <= n {
                match live.peek() {
                    Some(&(&c, &(k, v))) if c <= n => {
                        // Removed dots before the entry, as many as fit at a time.
                        while next < c {
                            let room = cut.room_for_dots().max(1);
                            let upto = (next + room as u64 - 1).min(c - 1);
                            cut.add_dots(*r, next, upto);
                            next = upto + 1;
                            if next < c {
                                cut.flush();
                            }
                        }
                        let size = entry_bytes(k, v) + DOT_BYTES;
                        cut.add_entry(
                            k,
                            Dot {
                                replica: *r,
                                counter: c,
                            },
                            v,
                            size,
                            true,
                        );
                        live.next();
                        next = c + 1;
                    }
                    _ => {
                        let room = cut.room_for_dots().max(1);
                        let upto = (next + room as u64 - 1).min(n);
                        cut.add_dots(*r, next, upto);
                        next = upto + 1;
                        if next <= n {
                            cut.flush();
                        }
                    }
                }
            }
            // Beyond the vector: out-of-order dots and their entries, one by one.
            let beyond = self.ctx.cloud().range(
                Dot {
                    replica: *r,
                    counter: n.saturating_add(1),
                }..=Dot {
                    replica: *r,
                    counter: u64::MAX,
                },
            );
            let mut cloud = beyond.map(|d| d.counter).peekable();
            loop {
                let c_entry = live.peek().map(|&(&c, _)| c);
                let c_dot = cloud.peek().copied();
                match (c_entry, c_dot) {
                    (None, None) => break,
                    (Some(ce), cd) if cd.is_none_or(|cd| ce <= cd) => {
                        let Some((&c, &(k, v))) = live.next() else {
                            break;
                        };
                        let dot = Dot {
                            replica: *r,
                            counter: c,
                        };
                        let in_ctx = self.ctx.contains(&dot);
                        if cd == Some(ce) {
                            cloud.next();
                        }
                        let size = entry_bytes(k, v) + DOT_BYTES;
                        cut.add_entry(k, dot, v, size, in_ctx);
                    }
                    (_, Some(cd)) => {
                        cloud.next();
                        cut.add_dots(*r, cd, cd);
                    }
                    (_, None) => break,
                }
            }
        }
        cut.flush();
        cut.pieces
    }
}

/// Most bytes one dot takes on the wire (three varints of at most 10 bytes).
const DOT_BYTES: usize = 30;
/// Bytes of a message around a delta: the sender id, the body tag, the piece, lengths.
const OVERHEAD: usize = 96;

/// Builds the pieces of [`Delta::split`].
struct Cutter<K: Ord, V> {
    max_bytes: usize,
    pieces: Vec<Delta<K, V>>,
    current: Delta<K, V>,
    bytes: usize,
}

impl<K: Ord + Clone, V: Clone + PartialEq> Cutter<K, V> {
    fn fits(&self, size: usize) -> bool {
        self.bytes + size <= self.max_bytes
    }

    fn room_for_dots(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes) / DOT_BYTES
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.pieces.push(std::mem::take(&mut self.current));
        }
        self.bytes = OVERHEAD;
    }

    /// Add an entry (and its dot to the cloud, if `with_dot`), starting a new piece first if
    /// it would not fit.
    fn add_entry(&mut self, k: &K, dot: Dot, v: &V, size: usize, with_dot: bool) {
        if !self.fits(size) {
            self.flush();
        }
        self.current
            .entries
            .entry(k.clone())
            .or_default()
            .insert(dot, v.clone());
        if with_dot {
            self.current.ctx.insert(dot);
        }
        self.bytes += size;
    }

    /// Add the dots `lo..=hi` of `r` to the cloud (the caller keeps the range within room).
    fn add_dots(&mut self, r: ReplicaId, lo: u64, hi: u64) {
        if !self.fits(DOT_BYTES) {
            self.flush();
        }
        for counter in lo..=hi {
            self.current.ctx.insert(Dot {
                replica: r,
                counter,
            });
        }
        self.bytes += (hi - lo + 1) as usize * DOT_BYTES;
    }
}

/// Join `other` into `entries` (whose context is `ctx`, not yet merged). `index`, when given, is
/// kept in sync (dot → key of every live entry).
fn join_stores<K: Ord + Clone, V: Clone>(
    entries: &mut BTreeMap<K, BTreeMap<Dot, V>>,
    ctx: &CausalContext,
    other: &Delta<K, V>,
    mut index: Option<&mut HashMap<Dot, K>>,
) {
    // 1. Our entries that `other` has seen but does not hold were removed there: drop them.
    //    Only keys of `other`'s entries, or holding a dot of its context, can be affected. For a
    //    cloud-only context (every delta a mutator makes) the index finds those keys directly;
    //    a context with a version vector (a full state) may cover anything: scan.
    let candidates: Vec<K> = match index.as_deref() {
        Some(idx) if other.ctx.vv().is_empty() => {
            let mut keys: Vec<K> = other
                .ctx
                .cloud()
                .iter()
                .filter_map(|d| idx.get(d).cloned())
                .collect();
            keys.extend(other.entries.keys().cloned());
            keys.sort();
            keys.dedup();
            keys
        }
        _ => entries.keys().cloned().collect(),
    };
    for k in candidates {
        let Some(ours) = entries.get_mut(&k) else {
            continue;
        };
        let theirs = other.entries.get(&k);
        ours.retain(|d, _| {
            let keep = theirs.is_some_and(|t| t.contains_key(d)) || !other.ctx.contains(d);
            if !keep && let Some(idx) = index.as_deref_mut() {
                idx.remove(d);
            }
            keep
        });
        if ours.is_empty() {
            entries.remove(&k);
        }
    }
    // 2. Their entries we have not seen are new to us.
    for (k, theirs) in &other.entries {
        for (d, v) in theirs {
            if ctx.contains(d) {
                continue; // seen: we hold it already, or we removed it
            }
            entries.entry(k.clone()).or_default().insert(*d, v.clone());
            if let Some(idx) = index.as_deref_mut() {
                idx.insert(*d, k.clone());
            }
        }
    }
}

/// The replicated map. Holds the state and an index of live dots (derived data, for cheap joins).
#[derive(Debug, Clone)]
pub struct ORMap<K: Ord, V> {
    state: Delta<K, V>,
    index: HashMap<Dot, K>,
}

impl<K: Ord + Clone, V: Clone + PartialEq> Default for ORMap<K, V> {
    fn default() -> Self {
        ORMap {
            state: Delta::default(),
            index: HashMap::new(),
        }
    }
}

impl<K: Ord + Clone + std::hash::Hash, V: Clone + PartialEq> ORMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every value of `key`: one, or several concurrent siblings, in dot order. Empty if absent.
    pub fn get(&self, key: &K) -> Vec<&V> {
        self.state
            .entries
            .get(key)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// The dots of `key`'s current values (its causal context, as the API shows it).
    pub fn dots(&self, key: &K) -> Vec<Dot> {
        self.state
            .entries
            .get(key)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every key with at least one value.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.state.entries.keys()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.state.entries.len()
    }

    /// No keys?
    pub fn is_empty(&self) -> bool {
        self.state.entries.is_empty()
    }

    /// Everything this replica has seen.
    pub fn context(&self) -> &CausalContext {
        &self.state.ctx
    }

    /// The whole state, as a delta (for a peer that needs everything).
    pub fn state(&self) -> &Delta<K, V> {
        &self.state
    }

    /// Delta of writing `value` at `key` as `replica`: replaces the values this replica has seen.
    pub fn write(&self, replica: ReplicaId, key: K, value: V) -> Delta<K, V> {
        let dot = self.state.ctx.next_dot(replica);
        let mut ctx = CausalContext::new();
        ctx.insert(dot);
        for d in self.dots(&key) {
            ctx.insert(d);
        }
        let mut entries = BTreeMap::new();
        entries.insert(key, BTreeMap::from([(dot, value)]));
        Delta { entries, ctx }
    }

    /// Delta of removing `key`: removes the values this replica has seen (a concurrent write
    /// elsewhere survives: add wins).
    pub fn remove(&self, key: &K) -> Delta<K, V> {
        let mut ctx = CausalContext::new();
        for d in self.dots(key) {
            ctx.insert(d);
        }
        Delta {
            entries: BTreeMap::new(),
            ctx,
        }
    }

    /// Forget `replica`'s dots except those of entries still live (see `Replica::retire`).
    /// The one change of state that is not a join: safe only under `retire`'s conditions.
    pub fn retire(&mut self, replica: ReplicaId) {
        let live: Vec<Dot> = self
            .index
            .keys()
            .filter(|d| d.replica == replica)
            .copied()
            .collect();
        self.state.ctx.forget(replica, live);
    }

    /// Join `delta` into the state: the only way the state changes.
    pub fn apply(&mut self, delta: &Delta<K, V>) {
        join_stores(
            &mut self.state.entries,
            &self.state.ctx,
            delta,
            Some(&mut self.index),
        );
        self.state.ctx.join(&delta.ctx);
        self.state.ctx.compact();
    }

    /// The part of `delta` that is news to this replica (Enes et al.'s "remove redundant state"),
    /// or `None` if it brings nothing. Entries with an unseen dot are news; so is a context dot
    /// not seen before, or one that removes an entry held here.
    pub fn news(&self, delta: &Delta<K, V>) -> Option<Delta<K, V>> {
        let mut out = Delta::default();
        for (k, m) in &delta.entries {
            for (d, v) in m {
                if !self.state.ctx.contains(d) {
                    out.entries
                        .entry(k.clone())
                        .or_insert_with(BTreeMap::new)
                        .insert(*d, v.clone());
                    out.ctx.insert(*d);
                }
            }
        }
        if !delta.ctx.vv().is_empty() {
            // A full state. Its context speaks for every entry it holds, so it must travel whole:
            // stripping the entries we already have while keeping the context would make the
            // receiver of the stripped delta delete them (a bug the simulator found).
            let removes_something = self.index.iter().any(|(d, k)| {
                delta.ctx.contains(d) && !delta.entries.get(k).is_some_and(|m| m.contains_key(d))
            });
            if out.entries.is_empty() && !removes_something && self.state.ctx.covers(&delta.ctx) {
                return None;
            }
            return Some(delta.clone());
        }
        for d in delta.ctx.cloud() {
            let removes_ours = self
                .index
                .get(d)
                .is_some_and(|k| !delta.entries.get(k).is_some_and(|m| m.contains_key(d)));
            if !self.state.ctx.contains(d) || removes_ours {
                out.ctx.insert(*d);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn r(n: u64) -> ReplicaId {
        ReplicaId { node: n, epoch: 1 }
    }

    #[test]
    fn a_write_supersedes_what_its_writer_saw() {
        let mut a: ORMap<&str, i32> = ORMap::new();
        let d = a.write(r(1), "k", 1);
        a.apply(&d);
        let d = a.write(r(1), "k", 2);
        a.apply(&d);
        assert_eq!(a.get(&"k"), vec![&2]);
    }

    #[test]
    fn concurrent_writes_are_kept_as_siblings_until_a_later_write() {
        let (mut a, mut b): (ORMap<&str, i32>, ORMap<&str, i32>) = (ORMap::new(), ORMap::new());
        let da = a.write(r(1), "k", 1);
        let db = b.write(r(2), "k", 2);
        a.apply(&da);
        b.apply(&db);
        a.apply(&db);
        b.apply(&da);
        assert_eq!(a.get(&"k"), vec![&1, &2]);
        assert_eq!(b.get(&"k"), vec![&1, &2]);
        let d = a.write(r(1), "k", 3);
        a.apply(&d);
        b.apply(&d);
        assert_eq!(a.get(&"k"), vec![&3]);
        assert_eq!(b.get(&"k"), vec![&3]);
    }

    #[test]
    fn a_remove_loses_to_a_concurrent_write() {
        let (mut a, mut b): (ORMap<&str, i32>, ORMap<&str, i32>) = (ORMap::new(), ORMap::new());
        let d = a.write(r(1), "k", 1);
        a.apply(&d);
        b.apply(&d);
        let rm = a.remove(&"k");
        let w = b.write(r(2), "k", 2);
        a.apply(&rm);
        b.apply(&w);
        a.apply(&w);
        b.apply(&rm);
        assert_eq!(a.get(&"k"), vec![&2]);
        assert_eq!(b.get(&"k"), vec![&2]);
    }

    /// Regression (found by the 24-replica simulation): a full state arriving at a replica that
    /// already holds some of its entries must not delete them, and what is forwarded from it must
    /// not delete them elsewhere.
    #[test]
    fn the_news_of_a_full_state_keeps_the_entries_the_receiver_already_has() {
        let (mut a, mut b): (ORMap<&str, i32>, ORMap<&str, i32>) = (ORMap::new(), ORMap::new());
        let d1 = a.write(r(1), "old", 1);
        a.apply(&d1);
        b.apply(&d1);
        let d2 = a.write(r(1), "new", 2);
        a.apply(&d2);
        let full = a.state().clone();
        let news = b.news(&full).expect("\"new\" is news to b");
        b.apply(&news);
        assert_eq!(b.get(&"old"), vec![&1]);
        assert_eq!(b.get(&"new"), vec![&2]);
        let mut c: ORMap<&str, i32> = ORMap::new();
        c.apply(&d1);
        c.apply(&news);
        assert_eq!(c.get(&"old"), vec![&1], "forwarded news does not delete");
    }

    #[test]
    fn a_removed_key_does_not_come_back_from_an_old_delta() {
        let mut a: ORMap<&str, i32> = ORMap::new();
        let w = a.write(r(1), "k", 1);
        a.apply(&w);
        let rm = a.remove(&"k");
        a.apply(&rm);
        a.apply(&w); // a duplicate of the old write arrives late
        assert!(a.get(&"k").is_empty());
        assert!(a.news(&w).is_none(), "nothing new in it");
    }
}
