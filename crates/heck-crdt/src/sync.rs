//! Anti-entropy: delta-interval dissemination with acknowledgements (Almeida, Shoker, Baquero,
//! "Delta State Replicated Data Types", algorithm 2), with the two fixes of Enes et al. (ICDE
//! 2019), as a sans-IO state machine.
//!
//! ```text
//!  replica i                                             peer j
//!  write/remove ─> apply δ to X, buffer δ as group c, c += 1
//!  tick: for f random peers j:
//!     A[j] = next group j has not acked
//!     buffer still holds A[j]..c ?  yes ─> Delta{ seq: c, ⊔ groups A[j]..c not from j }  ──>
//!                                   no  ─> Delta{ seq: c, X (full state) }              ──>
//!                                                        news = δ minus what j has (RR)
//!                                                        news? apply, buffer (origin i)
//!                                       <── Ack{ seq: c }
//!     A[j] = max(A[j], c); groups every peer acked are dropped
//!  every `digest_every` ticks, to one random peer:  Digest{ ctx }  ──>
//!     j sees i's context lacks dots j holds though i acked all of j's buffer ─> i lost state:
//!     j resets A[i] = 0, so i gets the full state next time.
//!  every message carries its sender's ReplicaId; a new id (epoch) from the same peer means it
//!  restarted, and its acknowledgement position is reset the same way.
//! ```
//!
//! Invariants: (1) a delta group is retransmitted until acked, so loss and reordering only
//! delay convergence; (2) a group is never sent back to the peer it came from (BP); (3) only
//! what is news is buffered and forwarded (RR); (4) the buffer is bounded (`max_buffer` groups):
//! a peer that falls further behind gets the full state instead.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::causal::{CausalContext, ReplicaId};
use crate::ormap::{Delta, ORMap};

/// A message between replicas: who sent it (replica id, including its epoch) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<K: Ord, V> {
    /// The sender's replica id. A new id from the same peer means it restarted: it has lost
    /// whatever it acknowledged before, so its acknowledgement position is reset.
    pub sender: ReplicaId,
    /// What it says.
    pub body: Body<K, V>,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<K: Ord, V> {
    /// Every group before `seq` that the receiver had not acked, joined (or the full state).
    Delta {
        /// Ack with this.
        seq: u64,
        /// The joined groups.
        delta: Delta<K, V>,
    },
    /// "I have applied everything you sent before `seq`."
    Ack {
        /// From the acked `Delta`.
        seq: u64,
    },
    /// "This is everything I have seen."
    Digest {
        /// The sender's causal context.
        ctx: CausalContext,
    },
}

/// Tuning. Defaults: 3 peers per tick, a digest every 10 ticks, at most 1,024 buffered groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Peers contacted per tick.
    pub fanout: usize,
    /// Ticks between two digests.
    pub digest_every: u64,
    /// Most delta groups kept for peers that have not acked them.
    pub max_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fanout: 3,
            digest_every: 10,
            max_buffer: 1024,
        }
    }
}

/// What the replica asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P, K: Ord, V> {
    /// Send `msg` to `to`.
    Send {
        /// The peer.
        to: P,
        /// The message.
        msg: Message<K, V>,
    },
}

/// Counters, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Delta messages sent that carried buffered groups.
    pub deltas_sent: u64,
    /// Delta messages sent that carried the full state.
    pub full_states_sent: u64,
    /// Received deltas that brought nothing new.
    pub redundant_received: u64,
    /// Peers reset to "needs everything" by a digest.
    pub resets: u64,
}

struct Group<P, K: Ord, V> {
    delta: Delta<K, V>,
    origin: Option<P>,
}

/// One replica of an [`ORMap`], with its anti-entropy state. `P` names peers (an address).
pub struct Replica<P, K: Ord, V> {
    id: ReplicaId,
    map: ORMap<K, V>,
    config: Config,
    peers: BTreeSet<P>,
    /// Delta groups `first_seq..next_seq`.
    buffer: VecDeque<Group<P, K, V>>,
    first_seq: u64,
    next_seq: u64,
    /// For each peer, the first group it has not acked.
    acked: BTreeMap<P, u64>,
    /// The replica id last heard from each peer (to notice restarts).
    incarnation: BTreeMap<P, ReplicaId>,
    ticks: u64,
    stats: Stats,
}

impl<P: std::fmt::Debug, K: Ord + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug
    for Replica<P, K, V>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("peers", &self.peers)
            .field("buffered", &self.buffer.len())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// A tiny deterministic generator for peer choice: the caller passes the randomness in.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<P, K, V> Replica<P, K, V>
where
    P: Ord + Clone,
    K: Ord + Clone + std::hash::Hash,
    V: Clone + PartialEq,
{
    /// A new, empty replica.
    pub fn new(id: ReplicaId, peers: impl IntoIterator<Item = P>, config: Config) -> Self {
        Replica {
            id,
            map: ORMap::new(),
            config,
            peers: peers.into_iter().collect(),
            buffer: VecDeque::new(),
            first_seq: 0,
            next_seq: 0,
            acked: BTreeMap::new(),
            incarnation: BTreeMap::new(),
            ticks: 0,
            stats: Stats::default(),
        }
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The replicated map (read it here; change it with [`write`](Self::write)/[`remove`](Self::remove)).
    pub fn map(&self) -> &ORMap<K, V> {
        &self.map
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Buffered delta groups.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Add a peer (it starts as needing everything).
    pub fn add_peer(&mut self, peer: P) {
        self.peers.insert(peer);
    }

    /// Write `value` at `key`.
    pub fn write(&mut self, key: K, value: V) {
        let delta = self.map.write(self.id, key, value);
        self.apply_and_buffer(delta, None);
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: &K) {
        let delta = self.map.remove(key);
        if !delta.is_empty() {
            self.apply_and_buffer(delta, None);
        }
    }

    fn apply_and_buffer(&mut self, delta: Delta<K, V>, origin: Option<P>) {
        self.map.apply(&delta);
        self.buffer.push_back(Group { delta, origin });
        self.next_seq += 1;
        while self.buffer.len() > self.config.max_buffer {
            self.buffer.pop_front();
            self.first_seq += 1;
        }
    }

    /// One round: send deltas (or the full state) to `fanout` random peers, and now and then a
    /// digest. `random` is fresh randomness from the driver.
    pub fn tick(&mut self, mut random: u64) -> Vec<Effect<P, K, V>> {
        self.ticks += 1;
        let mut out = Vec::new();
        let peers: Vec<P> = self.peers.iter().cloned().collect();
        if peers.is_empty() {
            return out;
        }
        let mut chosen = BTreeSet::new();
        for _ in 0..self.config.fanout.min(peers.len()) * 2 {
            if chosen.len() == self.config.fanout.min(peers.len()) {
                break;
            }
            chosen.insert((splitmix(&mut random) % peers.len() as u64) as usize);
        }
        for i in chosen {
            if let Some(msg) = self.delta_for(&peers[i]) {
                out.push(Effect::Send {
                    to: peers[i].clone(),
                    msg,
                });
            }
        }
        if self.ticks.is_multiple_of(self.config.digest_every.max(1)) {
            let to = peers[(splitmix(&mut random) % peers.len() as u64) as usize].clone();
            let msg = self.message(Body::Digest {
                ctx: self.map.context().clone(),
            });
            out.push(Effect::Send { to, msg });
        }
        self.gc();
        out
    }

    /// What to send `peer` now, if anything.
    fn delta_for(&mut self, peer: &P) -> Option<Message<K, V>> {
        let from = self.acked.get(peer).copied().unwrap_or(0);
        if from >= self.next_seq {
            return None; // it has everything we have
        }
        if from < self.first_seq {
            self.stats.full_states_sent += 1;
            let body = Body::Delta {
                seq: self.next_seq,
                delta: self.map.state().clone(),
            };
            return Some(self.message(body));
        }
        let mut joined = Delta::default();
        let skip = (from - self.first_seq) as usize;
        for g in self.buffer.iter().skip(skip) {
            if g.origin.as_ref() != Some(peer) {
                joined.join(&g.delta);
            }
        }
        if joined.is_empty() {
            // Everything it lacks came from it: nothing to send, and nothing to wait for.
            self.acked.insert(peer.clone(), self.next_seq);
            return None;
        }
        self.stats.deltas_sent += 1;
        Some(self.message(Body::Delta {
            seq: self.next_seq,
            delta: joined,
        }))
    }

    fn message(&self, body: Body<K, V>) -> Message<K, V> {
        Message {
            sender: self.id,
            body,
        }
    }

    /// Drop the groups every peer has acked.
    fn gc(&mut self) {
        let min = self
            .peers
            .iter()
            .map(|p| self.acked.get(p).copied().unwrap_or(0))
            .min()
            .unwrap_or(self.next_seq);
        while self.first_seq < min && !self.buffer.is_empty() {
            self.buffer.pop_front();
            self.first_seq += 1;
        }
    }

    /// Handle a message from `from`.
    pub fn handle_message(&mut self, from: P, msg: Message<K, V>) -> Vec<Effect<P, K, V>> {
        if self
            .incarnation
            .insert(from.clone(), msg.sender)
            .is_some_and(|old| old != msg.sender)
        {
            // A restarted peer (new epoch): whatever its previous incarnation acked is gone.
            self.acked.insert(from.clone(), 0);
            self.stats.resets += 1;
        }
        match msg.body {
            Body::Delta { seq, delta } => {
                match self.map.news(&delta) {
                    Some(news) => self.apply_and_buffer(news, Some(from.clone())),
                    None => self.stats.redundant_received += 1,
                }
                let ack = self.message(Body::Ack { seq });
                vec![Effect::Send { to: from, msg: ack }]
            }
            Body::Ack { seq } => {
                let a = self.acked.entry(from).or_insert(0);
                *a = (*a).max(seq.min(self.next_seq));
                Vec::new()
            }
            Body::Digest { ctx } => {
                let acked_all = self.acked.get(&from).is_some_and(|&a| a >= self.next_seq);
                if acked_all && !ctx.covers(self.map.context()) {
                    // It acked everything we have, yet lacks some of it: it lost its state.
                    self.acked.insert(from, 0);
                    self.stats.resets += 1;
                }
                Vec::new()
            }
        }
    }
}
