//! Cutting a delta into pieces under a byte limit, so that no message outgrows a receiver's
//! frame limit. Each piece is itself a valid delta below the whole, so pieces may arrive in any
//! order, and their join is the whole again (`tests/laws.rs` checks both).
use std::collections::BTreeMap;

use crate::causal::{Dot, ReplicaId};
use crate::ormap::Delta;

impl<K: Ord + Clone, V: Clone + PartialEq> Delta<K, V> {
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
            let prefixes = d.ctx.vv().iter().count() + d.ctx.retired().iter().count();
            entries + (prefixes + d.ctx.cloud().len()) * DOT_BYTES + OVERHEAD
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
        // A retired replica travels whole in one piece: its retired prefix, vector entry and
        // cloud with every live entry of it. A piece with the prefix but without an entry would
        // remove the entry where it is joined alone. Retired replicas hold few live entries (a
        // restarted node's records that nobody overwrote yet); more than a piece holds make an
        // oversized piece, counted by the caller like a single large entry.
        for (r, &retired) in self.ctx.retired().iter() {
            let live = by_replica.remove(r).unwrap_or_default();
            let cloud: Vec<Dot> = self
                .ctx
                .cloud()
                .iter()
                .filter(|d| d.replica == *r)
                .copied()
                .collect();
            let size = live
                .values()
                .map(|(k, v)| entry_bytes(k, v) + DOT_BYTES)
                .sum::<usize>()
                + (2 + cloud.len()) * DOT_BYTES;
            if !cut.fits(size) {
                cut.flush();
            }
            for (c, (k, v)) in live {
                let dot = Dot {
                    replica: *r,
                    counter: c,
                };
                cut.current
                    .entries
                    .entry(k.clone())
                    .or_default()
                    .insert(dot, v.clone());
            }
            cut.current.ctx.insert_retired(*r, retired);
            cut.current.ctx.insert_prefix(*r, self.ctx.vv().get(r));
            for d in cloud {
                cut.current.ctx.insert(d);
            }
            cut.bytes += size;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::ormap::ORMap;
    use crate::wire;

    use super::*;

    /// A replica that overwrote every key ten times: its 9,000 removed dots lie below its first
    /// cut, inside the one vector entry of that piece, so the pieces together weigh about what
    /// the unsplit state weighs (a dot each would make them about five times heavier).
    #[test]
    fn overwritten_history_below_the_first_cut_costs_nothing() {
        let r = ReplicaId { node: 1, epoch: 1 };
        let mut map: ORMap<u32, u64> = ORMap::new();
        for _round in 0..10 {
            for k in 0..1_000u32 {
                let d = map.write(r, k, u64::from(k));
                map.apply(&d);
            }
        }
        assert_eq!(map.context().vv().get(&r), 10_000);
        let whole = wire::encode(map.state()).len();
        let size = |k: &u32, v: &u64| postcard::experimental::serialized_size(&(k, v)).unwrap();
        let pieces = map.state().split(whole / 3, size);
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        let split: usize = pieces.iter().map(|p| wire::encode(p).len()).sum();
        assert!(
            split < whole * 2,
            "{split} bytes in pieces for {whole} whole"
        );
        let mut joined: ORMap<u32, u64> = ORMap::new();
        for p in &pieces {
            joined.apply(p);
        }
        assert_eq!(joined.state(), map.state());
    }

    /// A retired replica's prefix travels in one piece with all its live entries: a piece
    /// holding the prefix without one of them would remove it where joined alone.
    #[test]
    fn a_retired_replica_travels_whole_in_one_piece() {
        let old = ReplicaId { node: 1, epoch: 1 };
        let new = ReplicaId { node: 1, epoch: 2 };
        let mut map: ORMap<u32, u64> = ORMap::new();
        for k in 0..40u32 {
            let d = map.write(old, k, 1);
            map.apply(&d);
        }
        for k in 0..20u32 {
            let d = map.write(new, k, 2); // overwrites half of old's entries
            map.apply(&d);
        }
        let d = map.retirement(old).unwrap();
        map.apply(&d);
        assert_eq!(map.context().vv().get(&old), 0);
        let size = |k: &u32, v: &u64| postcard::experimental::serialized_size(&(k, v)).unwrap();
        let pieces = map.state().split(600, size);
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        let with_prefix: Vec<_> = pieces
            .iter()
            .filter(|p| p.ctx.retired().get(&old) > 0)
            .collect();
        assert_eq!(with_prefix.len(), 1);
        assert_eq!(with_prefix[0].len(), 20, "every live entry of old with it");
        for p in &pieces {
            let mut alone = map.clone();
            alone.apply(p);
            assert_eq!(alone.state(), map.state(), "each piece is below the whole");
        }
        let mut joined: ORMap<u32, u64> = ORMap::new();
        for p in pieces.iter().rev() {
            joined.apply(p);
        }
        assert_eq!(joined.state(), map.state());
    }
}
