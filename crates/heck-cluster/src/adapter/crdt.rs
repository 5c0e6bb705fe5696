//! heck-crdt: the replicated map and its anti-entropy, keyed by peer *incarnation*.
//!
//! Peers are `(name, replica id)`, not names: a restarted node is a new peer, and the cluster
//! routes messages only to a name's current incarnation. An incarnation that is replaced, or
//! whose member is declared dead or left, is removed from the replica (`remove_peer`, review
//! C2), so it no longer holds back the buffer's garbage collection.
use heck_crdt::{Dot, Durable, Message, ORMap, Replica, ReplicaId, RestoreError};
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

    /// A message from `from`: apply it, and say which keys it may have changed (from the news
    /// the replica computes for the join: not a second time here).
    pub fn handle(&mut self, from: Peer, msg: Message<Key, Value>) -> (Outgoing, Changed) {
        let (out, changed) = self.replica.receive(from, msg, |news, delta| match news {
            None => Changed::Nothing,
            // A full state (its context has a version vector; heck-crdt's `news` cuts it to
            // what is news, as dots), or a retirement (it removes the retired incarnation's
            // entries that its sender had seen removed): anything may change.
            Some(news)
                if !delta.ctx.vv().is_empty()
                    || !news.ctx.vv().is_empty()
                    || !news.ctx.retired().is_empty() =>
            {
                Changed::All
            }
            // A bare removal (a context dot without an entry) changes only a key whose target
            // is being deleted, and the deletion's `Key::Target` write names it; so the keys of
            // the entries are enough.
            Some(news) => Changed::Keys(news.entries.keys().cloned().collect()),
        });
        (sends(out), changed.unwrap_or(Changed::Nothing))
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
