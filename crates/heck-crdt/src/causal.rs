//! Dots, version vectors and causal contexts: what happened, and what each replica has seen.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A replica's identity: its stable node (a hash of the node's name) and an *epoch*, a random
/// 64-bit number drawn anew every time the process starts (the caller draws it: this crate takes
/// randomness as an argument).
///
/// Why the epoch: a replica numbers its writes 1, 2, 3, … (its [`Dot`]s). A process that
/// restarts with no memory of its counter would reuse `(node, 1)` for a *different* write, and
/// every replica that saw the old one would treat the new one as already seen. With a new epoch
/// the restarted process is a new replica: its dots can never collide with the old ones. Epochs
/// are only ever compared for equality (a restart is a *different* id), never ordered, so no
/// clock is needed and a clock stepping back changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaId {
    /// xxh3 of the node's name.
    pub node: u64,
    /// Different on every start of the same node (random).
    pub epoch: u64,
}

impl ReplicaId {
    /// The replica of node `name` started in `epoch`.
    pub fn new(name: &str, epoch: u64) -> ReplicaId {
        ReplicaId {
            node: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
            epoch,
        }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.node, self.epoch)
    }
}

/// One event: the `counter`-th write of `replica`. Unique in the whole system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    /// Who.
    pub replica: ReplicaId,
    /// Its sequence number, from 1.
    pub counter: u64,
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Both have seen exactly the same events.
    Equal,
    /// The left has seen a strict subset of the right's events: it happened before.
    Before,
    /// The left has seen a strict superset: it happened after.
    After,
    /// Each has seen something the other has not.
    Concurrent,
}

/// For each replica, how many of its events (a prefix 1..=n) have been seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl VersionVector {
    /// Seen `replica`'s first `n` events (0 if none).
    pub fn get(&self, replica: &ReplicaId) -> u64 {
        self.0.get(replica).copied().unwrap_or(0)
    }

    /// Does it include `dot`?
    pub fn contains(&self, dot: &Dot) -> bool {
        self.get(&dot.replica) >= dot.counter
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (r, &n) in &other.0 {
            let e = self.0.entry(*r).or_insert(0);
            *e = (*e).max(n);
        }
    }

    /// Compare: before, after, equal or concurrent.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut less = false;
        let mut greater = false;
        for r in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(r), other.get(r));
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Every (replica, count) entry.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, &u64)> {
        self.0.iter()
    }

    /// No events seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn set(&mut self, r: ReplicaId, n: u64) {
        self.0.insert(r, n);
    }
}

/// The set of dots a replica has seen, kept compact: a version vector for the contiguous
/// prefixes, plus a *cloud* of dots seen out of order (a delta can deliver dot 7 before 5).
///
/// Invariant (after [`compact`](CausalContext::compact)): no cloud dot is covered by the vector,
/// and no cloud dot is the next one of the vector (it would have been absorbed).
///
/// A third part, `retired`, holds the prefixes of replicas that are *retired*: incarnations
/// that will never write again (a node restarted under a new epoch). `retired[r] = n` says the
/// same as a vector entry `r: n` (every dot `1..=n` of `r` seen), and is joined the same way
/// (pointwise maximum), but it is not part of the version vector: the vector lists only the
/// replicas that may still write, so it does not grow by one entry per restart. Nothing is
/// forgotten, so retiring needs no coordination to be safe: it is a join like any other (see
/// `Replica::retire` and `docs/protocols/crdt.md`).
///
/// Invariant (after [`compact`](CausalContext::compact)): a replica is in the vector only if its
/// prefix there is longer than its retired one, and no cloud dot is covered by either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
    retired: VersionVector,
}

impl CausalContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Has `dot` been seen?
    pub fn contains(&self, dot: &Dot) -> bool {
        self.prefix(&dot.replica) >= dot.counter || self.cloud.contains(dot)
    }

    /// How many of `replica`'s first dots are seen as a prefix: its vector entry or, if
    /// longer, its retired one.
    pub fn prefix(&self, replica: &ReplicaId) -> u64 {
        self.vv.get(replica).max(self.retired.get(replica))
    }

    /// Record `dot` (not compacted: call [`compact`](Self::compact) when it matters).
    pub fn insert(&mut self, dot: Dot) {
        if self.prefix(&dot.replica) < dot.counter {
            self.cloud.insert(dot);
        }
    }

    /// Record every dot `1..=n` of `replica`.
    pub fn insert_prefix(&mut self, replica: ReplicaId, n: u64) {
        if self.vv.get(&replica) < n {
            self.vv.set(replica, n);
        }
    }

    /// Record that `replica` is retired with every dot `1..=n` seen (see the type's doc).
    pub fn insert_retired(&mut self, replica: ReplicaId, n: u64) {
        if n > 0 && self.retired.get(&replica) < n {
            self.retired.set(replica, n);
        }
    }

    /// The retired replicas and their prefixes.
    pub fn retired(&self) -> &VersionVector {
        &self.retired
    }

    /// Does it mention `replica` at all?
    pub fn mentions(&self, replica: &ReplicaId) -> bool {
        self.prefix(replica) > 0 || self.cloud.iter().any(|d| d.replica == *replica)
    }

    /// Has it seen every dot of `replica` that `other` has? (Conservative: a prefix of
    /// `other` must be a prefix here too.)
    pub fn covers_replica(&self, other: &CausalContext, replica: &ReplicaId) -> bool {
        self.prefix(replica) >= other.prefix(replica)
            && other
                .cloud
                .iter()
                .filter(|d| d.replica == *replica)
                .all(|d| self.contains(d))
    }

    /// Union (not compacted).
    pub fn join(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        self.retired.merge(&other.retired);
        for d in &other.cloud {
            self.insert(*d);
        }
    }

    /// Absorb cloud dots that extend the prefixes; drop those they cover; drop vector entries
    /// a retired prefix covers (see the type's invariant).
    pub fn compact(&mut self) {
        if !self.retired.is_empty() {
            let retired = &self.retired;
            self.vv.0.retain(|r, n| *n > retired.get(r));
        }
        let cloud = std::mem::take(&mut self.cloud);
        for d in cloud {
            let n = self.prefix(&d.replica);
            if d.counter == n + 1 {
                self.vv.set(d.replica, d.counter);
            } else if d.counter > n {
                self.cloud.insert(d);
            }
        }
        // One ascending pass suffices: the set is ordered by (replica, counter), so every dot
        // below a contiguous one has already been absorbed when it is reached.
    }

    /// The next dot `replica` should use: one past everything seen of it.
    pub fn next_dot(&self, replica: ReplicaId) -> Dot {
        let in_cloud = self
            .cloud
            .range(
                Dot {
                    replica,
                    counter: 0,
                }..=Dot {
                    replica,
                    counter: u64::MAX,
                },
            )
            .next_back()
            .map_or(0, |d| d.counter);
        Dot {
            replica,
            counter: self.prefix(&replica).max(in_cloud) + 1,
        }
    }

    /// A context of a version vector and a cloud, nothing retired (what wire version 2 held).
    pub(crate) fn from_parts(vv: VersionVector, cloud: BTreeSet<Dot>) -> CausalContext {
        let mut ctx = CausalContext {
            vv,
            cloud,
            retired: VersionVector::default(),
        };
        ctx.compact();
        ctx
    }

    /// The version-vector part.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The out-of-order dots.
    pub fn cloud(&self) -> &BTreeSet<Dot> {
        &self.cloud
    }

    /// Has this context seen every dot `other` has?
    pub fn covers(&self, other: &CausalContext) -> bool {
        let mut prefixes = other.vv.iter().chain(other.retired.iter());
        other.cloud.iter().all(|d| self.contains(d))
            && prefixes.all(|(r, &n)| {
                let have = self.prefix(r);
                // Dots have+1..=n must all be in the cloud; a gap larger than the cloud cannot be.
                have >= n
                    || (n - have <= self.cloud.len() as u64
                        && (have + 1..=n).all(|c| {
                            self.cloud.contains(&Dot {
                                replica: *r,
                                counter: c,
                            })
                        }))
            })
    }

    /// No dot seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty() && self.retired.is_empty()
    }
}
