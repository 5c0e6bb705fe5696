//! heck-crdt: the replicated map and its anti-entropy, keyed by peer *incarnation*.
//!
//! Peers are `(name, replica id)`, not names: a restarted node is a new peer. That keeps the
//! replica's "never send a group back to where it came from" from skipping what the old
//! incarnation sent (review C1), at the cost of old incarnations staying in the peer set (today's
//! `Replica` has no `remove_peer`, review C2): the cluster never routes a message to them, and
//! their unacknowledged groups are bounded by `max_buffer`.
use heck_crdt::{Dot, Message, Replica, ReplicaId};
use serde::{Deserialize, Serialize};

use crate::name::NodeName;
use crate::record::{Key, Value};

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

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.replica.id()
    }

    /// Start exchanging with `peer`.
    pub fn add_peer(&mut self, peer: Peer) {
        self.replica.add_peer(peer);
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

    /// One anti-entropy round.
    pub fn tick(&mut self, random: u64) -> Outgoing {
        self.replica
            .tick(random)
            .into_iter()
            .map(|heck_crdt::Effect::Send { to, msg }| (to, msg))
            .collect()
    }

    /// A message from `from`: apply it, and say which keys it may have changed.
    pub fn handle(&mut self, from: Peer, msg: Message<Key, Value>) -> (Outgoing, Changed) {
        let changed = match &msg.body {
            heck_crdt::Body::Delta { delta, .. } => match self.replica.map().news(delta) {
                None => Changed::Nothing,
                Some(news) if !news.ctx.vv().is_empty() => Changed::All,
                // A bare removal (a context dot without an entry) changes only a key whose
                // target is being deleted, and the deletion's `Key::Target` write names it; so
                // the keys of the entries are enough.
                Some(news) => Changed::Keys(news.entries.keys().cloned().collect()),
            },
            _ => Changed::Nothing,
        };
        let out = self
            .replica
            .handle_message(from, msg)
            .into_iter()
            .map(|heck_crdt::Effect::Send { to, msg }| (to, msg))
            .collect();
        (out, changed)
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
