//! heck-crdt: the replicated map and its anti-entropy, keyed by peer *incarnation*.
//!
//! Peers are `(name, replica id)`, not names: a restarted node is a new peer, and the cluster
//! routes messages only to a name's current incarnation. An incarnation that is replaced, or
//! whose member is declared dead or left, is removed from the replica (`remove_peer`, review
//! C2), so it no longer holds back the buffer's garbage collection.
use std::collections::{BTreeMap, HashSet};

use heck_crdt::{Delta, Dot, Durable, Message, ORMap, Replica, ReplicaId, RestoreError};
use serde::{Deserialize, Serialize};

use crate::record::{Key, Value};
use heck_check::NodeName;

/// One incarnation of a peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// Its node name.
    pub name: NodeName,
    /// Its replica id (the epoch grows on every start).
    pub replica: ReplicaId,
}

/// Messages to send, each to one peer.
pub type Outgoing = Vec<(Peer, Message<Key, Value>)>;

/// What a received message changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Nothing new.
    Nothing,
    /// These keys may have changed.
    Keys(Vec<Key>),
    /// Anything may have changed (a full state, or a removal of entries of unknown keys).
    All,
}

/// The replicated map with anti-entropy.
pub struct Store {
    replica: Replica<Peer, Key, Value>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.replica.id())
            .field("buffered", &self.replica.buffered())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store with replica id `id`.
    pub fn new(id: ReplicaId, config: heck_crdt::Config) -> Store {
        Store {
            replica: Replica::new(id, [], config),
        }
    }

    /// A store restored from a snapshot's durable part, running under `id` (the snapshot's id
    /// after a clean shutdown, else a fresh one: see heck-crdt's `durable` module).
    pub fn restore(
        durable: Durable<Key, Value>,
        id: ReplicaId,
        config: heck_crdt::Config,
    ) -> Result<Store, RestoreError> {
        Ok(Store {
            replica: Replica::restore(durable, id, [], config)?,
        })
    }

    /// The durable part (id, buffer position, state), encoded with heck-crdt's wire format.
    pub fn encode_durable(&self) -> Vec<u8> {
        self.replica.encode_durable()
    }

    /// The replicated map (read only).
    pub fn map(&self) -> &ORMap<Key, Value> {
        self.replica.map()
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.replica.id()
    }

    /// Start exchanging with `peer`.
    pub fn add_peer(&mut self, peer: Peer) {
        self.replica.add_peer(peer);
    }

    /// Stop exchanging with `peer` (replaced by a newer incarnation, or gone): it no longer
    /// holds back garbage collection. Returns whether it was a peer.
    pub fn remove_peer(&mut self, peer: &Peer) -> bool {
        self.replica.remove_peer(peer)
    }

    /// The peers (incarnations) the replica exchanges with.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.replica.peers()
    }

    /// Write `value` at `key` (superseding every sibling seen here).
    pub fn write(&mut self, key: Key, value: Value) {
        self.replica.write(key, value);
    }

    /// Remove `key` (what was seen here; a concurrent write survives).
    pub fn remove(&mut self, key: &Key) {
        self.replica.remove(key);
    }

    /// The siblings of `key`, in dot order.
    pub fn siblings(&self, key: &Key) -> Vec<(Dot, &Value)> {
        let map = self.replica.map();
        map.dots(key).into_iter().zip(map.get(key)).collect()
    }

    /// Every key held.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.replica.map().keys()
    }

    /// Retire `old`, an incarnation replaced by a newer one (see heck-crdt's
    /// `Replica::retire`): a delta, sent on like a write. Returns how many of its dots.
    pub fn retire(&mut self, old: ReplicaId) -> Result<u64, heck_crdt::NotRetirable> {
        self.replica.retire(old)
    }

    /// One anti-entropy round.
    pub fn tick(&mut self, random: u64) -> Outgoing {
        sends(self.replica.tick(random))
    }

    /// A push between rounds: new writes to peers with no transfer in flight, no resends.
    pub fn push(&mut self, random: u64) -> Outgoing {
        sends(self.replica.push(random))
    }

    /// A message from `from`: apply it, and say which keys it may have changed.
    pub fn handle(&mut self, from: Peer, mut msg: Message<Key, Value>) -> (Outgoing, Changed) {
        // An invalid delta goes to the replica as it came, to be refused and counted there.
        if let heck_crdt::Body::Delta { delta, .. } = &mut msg.body
            && !delta.ctx.vv().is_empty()
            && delta.validate().is_ok()
            && let Some(thin) = thin_full_state(self.replica.map(), delta)
        {
            // Anything may change: say so before the thin delta hides that it was a full state.
            *delta = thin;
            let out = self.replica.handle_message(from, msg);
            return (sends(out), Changed::All);
        }
        let changed = match &msg.body {
            heck_crdt::Body::Delta { delta, .. } => match self.replica.map().news(delta) {
                None => Changed::Nothing,
                // A full state, or a retirement (it removes the retired incarnation's entries
                // that its sender had seen removed).
                Some(news) if !news.ctx.vv().is_empty() || !news.ctx.retired().is_empty() => {
                    Changed::All
                }
                // A bare removal (a context dot without an entry) changes only a key whose
                // target is being deleted, and the deletion's `Key::Target` write names it; so
                // the keys of the entries are enough.
                Some(news) => Changed::Keys(news.entries.keys().cloned().collect()),
            },
            _ => Changed::Nothing,
        };
        let out = self.replica.handle_message(from, msg);
        (sends(out), changed)
    }

    /// Counters of the anti-entropy.
    pub fn stats(&self) -> heck_crdt::Stats {
        self.replica.stats()
    }

    /// Delta groups waiting for acknowledgements.
    pub fn buffered(&self) -> usize {
        self.replica.buffered()
    }
}

fn sends(fx: Vec<heck_crdt::Effect<Peer, Key, Value>>) -> Outgoing {
    fx.into_iter()
        .map(|heck_crdt::Effect::Send { to, msg }| (to, msg))
        .collect()
}

/// Most dots a full state may name beyond what this replica has seen, to be thinned (a forged
/// context `{r: u64::MAX}` must not make us count to 2⁶⁴; such a state is passed on unthinned).
const MAX_THIN_GAP: u64 = 1 << 22;

/// The full state `full` as a delta with a dot-cloud context: the entries new here, every dot it
/// has seen that this replica has not (so a late copy of an overwritten value cannot come back),
/// and the dots held here that it has seen but no longer holds (removed or overwritten there).
/// Joined here it does exactly what `full` does.
///
/// Why: `ORMap::news` used to pass a full state on *whole*; the replica buffered it as one group
/// and joined it into every interval it forwarded, so one full state sent to a joiner spread as
/// full-state-sized groups to every node (at 50 nodes and 2,000 targets the simulator ran out of
/// memory). heck-crdt's `news` now thins full states itself (same bound), so this is a second
/// copy of that logic. It stays until `tests/scale.rs` (ignored, minutes) is re-run without it:
/// delegating to `news` was tried and costs ~10% more bytes at 1% churn in `cargo bench -p
/// heck-crdt`, because `news` names a replica it knows nothing of by a version-vector prefix,
/// which this cloud-only form cannot.
pub fn thin_full_state(
    map: &ORMap<Key, Value>,
    full: &Delta<Key, Value>,
) -> Option<Delta<Key, Value>> {
    let mine = map.context();
    let mut gap = 0u64;
    for (r, &n) in full.ctx.vv().iter() {
        gap = gap.saturating_add(n.saturating_sub(mine.prefix(r)));
    }
    // A retired prefix that is news must travel with its replica's entries (heck-crdt's
    // `news` does that); this cloud-only form cannot say it. Rare: once per retirement.
    let retired_news = full
        .ctx
        .retired()
        .iter()
        .any(|(r, &n)| n > mine.retired().get(r));
    if gap > MAX_THIN_GAP || retired_news {
        return None;
    }
    let mut out = Delta::default();
    let mut live: HashSet<Dot> = HashSet::new();
    for (k, m) in &full.entries {
        for (d, v) in m {
            live.insert(*d);
            if !mine.contains(d) {
                out.entries
                    .entry(k.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(*d, v.clone());
                out.ctx.insert(*d);
            }
        }
    }
    for (r, &n) in full.ctx.vv().iter() {
        for counter in mine.prefix(r) + 1..=n {
            let d = Dot {
                replica: *r,
                counter,
            };
            if !mine.contains(&d) {
                out.ctx.insert(d);
            }
        }
    }
    for d in full.ctx.cloud() {
        if !mine.contains(d) {
            out.ctx.insert(*d);
        }
    }
    for k in map.keys() {
        for d in map.dots(k) {
            if full.ctx.contains(&d) && !live.contains(&d) {
                out.ctx.insert(d);
            }
        }
    }
    Some(out)
}
