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
use crate::dotmap::DotMap;

/// A delta (or a whole state, which is the largest delta): entries plus the dots they account for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta<K: Ord, V> {
    /// key → dot → value.
    pub entries: BTreeMap<K, DotMap<V>>,
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
        self.entries.values().map(DotMap::len).sum()
    }

    /// The join of two deltas. Not compacted: a delta's context stays a cloud of the dots it
    /// speaks for. It scans every key of `self`: to join many deltas in a row (a buffered group,
    /// an interval) use [`join_indexed`](Self::join_indexed), which the laws hold equal to it.
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

impl<K: Ord + Clone + std::hash::Hash, V: Clone + PartialEq> Delta<K, V> {
    /// [`join`](Self::join), given `index`, the dot → key of every entry of `self` (kept in
    /// sync here): the cost is that of `other` (for the cloud-only contexts every mutator makes),
    /// not of `self`. Joining k deltas one by one costs O(k) this way and O(k²) plainly, which
    /// is what coalescing a burst of writes into one buffered group, and cutting an interval of
    /// groups into one transfer, need.
    pub fn join_indexed(&mut self, other: &Delta<K, V>, index: &mut HashMap<Dot, K>) {
        join_stores(&mut self.entries, &self.ctx, other, Some(index));
        self.ctx.join(&other.ctx);
    }

    /// The dot → key index of every entry (for [`join_indexed`](Self::join_indexed)).
    pub fn dot_index(&self) -> HashMap<Dot, K> {
        self.entries
            .iter()
            .flat_map(|(k, m)| m.keys().map(move |d| (*d, k.clone())))
            .collect()
    }
}

/// Join `other` into `entries` (whose context is `ctx`, not yet merged). `index`, when given, is
/// kept in sync (dot → key of every live entry).
fn join_stores<K: Ord + Clone, V: Clone>(
    entries: &mut BTreeMap<K, DotMap<V>>,
    ctx: &CausalContext,
    other: &Delta<K, V>,
    mut index: Option<&mut HashMap<Dot, K>>,
) {
    // 1. Our entries that `other` has seen but does not hold were removed there: drop them.
    //    Only keys holding such a dot can be affected. For a cloud-only context (every delta a
    //    mutator makes) the index finds them from the context's dots. A context with prefixes (a
    //    full state, a retirement, or any delta whose dots compacted into a prefix, as the first
    //    dots of a replica do) may cover any of our dots: one pass over the index (every live
    //    dot here) finds those it covers and `other` does not hold, without cloning or looking up
    //    every key (that scan was ~60% of an agent's CPU at 100,000 targets, v2-bench). Without
    //    an index: every key.
    let candidates: Vec<K> = match index.as_deref() {
        Some(idx) if other.ctx.vv().is_empty() && other.ctx.retired().is_empty() => {
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
        Some(idx) => {
            let mut keys: Vec<K> = idx
                .iter()
                .filter(|(d, k)| {
                    other.ctx.contains(d)
                        && !other
                            .entries
                            .get(*k)
                            .is_some_and(|theirs| theirs.contains_key(d))
                })
                .map(|(_, k)| k.clone())
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
        None => entries.keys().cloned().collect(),
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

/// Most context dots [`ORMap::news`] lists one by one when it thins a full state (4 Mi dots,
/// 64 MiB of cloud at most); a larger gap sends the state whole.
const MAX_LISTED_GAP: u64 = 1 << 22;

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
        entries.insert(key, DotMap::from([(dot, value)]));
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

    /// The map whose state is `state` (a snapshot read back from disk): validated like anything
    /// received, so an inconsistent state is refused whole, never half-loaded.
    pub fn from_state(state: Delta<K, V>) -> Result<Self, crate::validate::Invalid> {
        state.validate()?;
        let mut map = ORMap::new();
        // Joined into an empty map: every entry is new, and the index is built on the way.
        map.apply(&state);
        Ok(map)
    }

    /// Delta of retiring `replica` (an incarnation that will never write again): its prefix
    /// `1..=n` seen here, as a retired prefix, with every entry of it live here. Joined
    /// anywhere it removes nothing this replica has not seen removed, and moves the replica
    /// out of the version vector. `None` if this replica has no prefix of it to retire.
    pub fn retirement(&self, replica: ReplicaId) -> Option<Delta<K, V>> {
        let n = self.state.ctx.vv().get(&replica);
        if n == 0 {
            return None;
        }
        let mut out = Delta::default();
        out.ctx.insert_retired(replica, n);
        self.copy_live_of(replica, n, &mut out);
        Some(out)
    }

    /// Copy every live entry of `replica` with a counter up to `n` into `out` (what a retired
    /// prefix must travel with: joined without them, it would remove them).
    fn copy_live_of(&self, replica: ReplicaId, n: u64, out: &mut Delta<K, V>) {
        for (d, k) in &self.index {
            if d.replica != replica || d.counter > n {
                continue;
            }
            if let Some(v) = self.state.entries.get(k).and_then(|m| m.get(d)) {
                out.entries
                    .entry(k.clone())
                    .or_default()
                    .insert(*d, v.clone());
            }
        }
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
        // A retired prefix that is news travels with the entries of that replica the join
        // keeps (theirs we have not seen or hold too, and ours they hold): forwarded without
        // them, it would remove them at the next hop, like a full state's stripped context.
        let retired_news: Vec<(ReplicaId, u64)> = delta
            .ctx
            .retired()
            .iter()
            .filter(|(r, n)| **n > self.state.ctx.retired().get(r))
            .map(|(r, n)| (*r, *n))
            .collect();
        for &(r, n) in &retired_news {
            out.ctx.insert_retired(r, n);
            // The delta has seen every dot of `r` up to `n`: of those, the join keeps exactly
            // its entries that are held here too or not seen here.
            for (k, m) in &delta.entries {
                for (d, v) in m {
                    let kept = !self.state.ctx.contains(d) || self.index.contains_key(d);
                    if d.replica == r && d.counter <= n && kept {
                        out.entries
                            .entry(k.clone())
                            .or_default()
                            .insert(*d, v.clone());
                    }
                }
            }
        }
        for (k, m) in &delta.entries {
            for (d, v) in m {
                if !self.state.ctx.contains(d) {
                    out.entries
                        .entry(k.clone())
                        .or_default()
                        .insert(*d, v.clone());
                    out.ctx.insert(*d);
                }
            }
        }
        if !delta.ctx.vv().is_empty() || !delta.ctx.retired().is_empty() {
            // A full state (or a retirement: a prefix too). Its context speaks for every entry
            // it holds, so the entries we already have may not simply be stripped while the
            // whole context is kept: a receiver of that would delete them (a bug the simulator
            // found). Nor may it travel whole: then every replica buffers and forwards the whole
            // state again (the bytes bench found full states circulating through every
            // buffer). The news is the new
            // entries (above) plus exactly the context dots that are news: those we have not
            // seen, and those that remove an entry we hold. Every context dot without an entry
            // here was removed at the sender, so forwarding it deletes nothing wrongly.
            // Dots are listed one by one only up to a bound: a context of `{r: 2⁴⁸}` (valid, and
            // what a replica far ahead could send) must not make us count to it. Past the bound
            // the state travels whole, as it always did: correct, only costlier.
            let gap = delta.ctx.vv().iter().fold(0u64, |gap, (replica, &n)| {
                gap.saturating_add(n.saturating_sub(self.state.ctx.prefix(replica)))
            });
            if gap > MAX_LISTED_GAP {
                return Some(delta.clone());
            }
            for (replica, &n) in delta.ctx.vv().iter() {
                let ours = self.state.ctx.prefix(replica);
                let holes = self.state.ctx.cloud().iter().any(|d| d.replica == *replica);
                if ours == 0 && !holes {
                    out.ctx.insert_prefix(*replica, n);
                    continue;
                }
                for counter in ours.saturating_add(1)..=n {
                    let d = Dot {
                        replica: *replica,
                        counter,
                    };
                    if !self.state.ctx.contains(&d) {
                        out.ctx.insert(d);
                    }
                }
            }
            for (d, k) in &self.index {
                if delta.ctx.contains(d) && !delta.entries.get(k).is_some_and(|m| m.contains_key(d))
                {
                    out.ctx.insert(*d);
                }
            }
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
    fn a_full_state_far_ahead_is_news_whole_without_counting_every_dot() {
        let (mut a, mut b): (ORMap<&str, i32>, ORMap<&str, i32>) = (ORMap::new(), ORMap::new());
        let d1 = a.write(r(1), "k", 1);
        a.apply(&d1);
        b.apply(&d1);
        // `a`'s context claims every dot of r(1) up to the largest counter validation accepts.
        let mut full = a.state().clone();
        full.ctx.insert_prefix(r(1), crate::validate::MAX_COUNTER);
        let news = b.news(&full).expect("the claimed dots are news");
        assert_eq!(news, full, "past the listing bound the state travels whole");
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
