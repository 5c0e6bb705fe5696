//! Anti-entropy: delta-interval dissemination with acknowledgements (Almeida, Shoker, Baquero,
//! "Delta State Replicated Data Types", algorithm 2), with the two fixes of Enes et al. (ICDE
//! 2019), as a sans-IO state machine.
//!
//! ```text
//!  replica i                                             peer j
//!  first tick: Digest{ctx} to every peer ("hello": a restart is noticed without a write)
//!  write/remove ─> apply δ to X; the newest group is local and no peer has it yet (acked
//!                  or in a transfer)? join δ into it. Else buffer δ as group c (origin:
//!                  none), c += 1. (A burst of writes between two ticks is one group.)
//!  tick (push: the same, between ticks, for peers with no transfer in flight, no resend):
//!        for f random peers j:
//!     j needs the full state (new incarnation, lost state, fell out of the buffer)?
//!        yes ─> transfer (full, seq: c) = X
//!        no  ─> transfer (from: A[j], seq: c) = ⊔ groups A[j]..c whose origin is not j's
//!               current incarnation
//!     cut the transfer into pieces of at most max_message_bytes; send those not yet acked
//!     (a transfer in flight: again only after resend_after rounds, the wait doubling to 8×):
//!        Delta{ piece k of n, δk }  ──>   δk valid? else refused and counted
//!                                         news = δk minus what j has (RR)
//!                                         news? apply, buffer (origin: i's replica id)
//!                                   <──   Ack{ to: i's replica id, piece k of n }
//!     every piece acked ─> A[j] = max(A[j], c); groups every live peer acked are dropped
//!  every `digest_every` ticks, to one random peer:
//!     Digest{ ctx, to: j's replica id, complete: last transfer of j received whole }  ──>
//!        j: it received everything I had (complete ≥ c) and acked it, yet its context lacks
//!           some of it: it lost state, send it the full state.
//! ```
//!
//! Invariants: (1) a delta group is retransmitted until acked, so loss and reordering only
//! delay convergence; (2) a group is never sent back to the *replica* it came from (BP), keyed
//! by replica id (node and epoch), never by address: a process restarted at the same address is
//! a new replica and gets everything; (3) only what is news is buffered and forwarded (RR);
//! (4) the buffer is bounded (`max_buffer` groups): a peer that falls further behind gets the
//! full state instead; (4b) a group is changed only while no peer has it, acked or in flight,
//! so a transfer cut again from the buffer is the same, and an acked position never hides a
//! write; (5) no message is larger than `max_message_bytes` unless one single
//! entry is (counted); (6) nothing received is joined before it is validated.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use heck_sim::SplitMix64;
use serde::Serialize;

use crate::causal::{CausalContext, Dot, ReplicaId};
use crate::durable::{Durable, DurableRef, RestoreError};
pub use crate::message::{Body, MAX_PIECES, Message, Piece};
use crate::ormap::{Delta, ORMap};
use crate::validate::{self, Invalid};

/// Tuning. Defaults: 3 peers per tick, a digest every 10 ticks, at most 1,024 buffered groups,
/// messages of at most 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Peers contacted per tick.
    pub fanout: usize,
    /// Ticks between two digests.
    pub digest_every: u64,
    /// Most delta groups kept for peers that have not acked them.
    pub max_buffer: usize,
    /// Largest `Delta` message, in bytes as estimated before encoding (an upper bound on
    /// postcard's size). Larger transfers are cut into pieces. Keep it below the receivers'
    /// frame limit, and above the largest single entry (key and value) a replica accepts: an
    /// entry larger than this travels alone, over the limit (counted in `oversized_sent`).
    pub max_message_bytes: usize,
    /// Rounds (ticks) before a transfer that is not acked whole is sent again; the wait doubles
    /// after every resend, up to 8 times this. A receiver slower than the round (busy joining a
    /// burst) is not sent the same megabytes again every round. 1 by default.
    pub resend_after: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fanout: 3,
            digest_every: 10,
            max_buffer: 1024,
            max_message_bytes: 1 << 20,
            resend_after: 1,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Transfers sent (or resent) that carried buffered groups.
    pub deltas_sent: u64,
    /// Transfers sent (or resent) that carried the full state.
    pub full_states_sent: u64,
    /// Delta messages (pieces) sent.
    pub pieces_sent: u64,
    /// Pieces larger than `max_message_bytes` (a single entry larger than the limit).
    pub oversized_sent: u64,
    /// Received deltas that brought nothing new.
    pub redundant_received: u64,
    /// Peers reset to "needs the full state" (a restart or a digest).
    pub resets: u64,
    /// Restarts noticed (a known peer speaking with a new replica id).
    pub restarts_seen: u64,
    /// Messages refused by validation (see [`Invalid`]); nothing of them was applied.
    pub invalid_received: u64,
    /// Acks and digests ignored as stale: from an earlier incarnation of the peer, meant for an
    /// earlier incarnation of this replica, for a transfer no longer current, or from a peer
    /// that is not (or no longer) configured.
    pub stale_received: u64,
    /// Local writes joined into the newest buffered group (no peer had it yet) instead of
    /// starting a group of their own.
    pub coalesced: u64,
    /// Transfers sent again (their unacked pieces), after `resend_after` rounds and backoff.
    pub resends: u64,
}

struct Group<K: Ord, V> {
    delta: Delta<K, V>,
    /// The replica it was received from (`None`: written here).
    origin: Option<ReplicaId>,
}

/// How many earlier incarnations of a peer are remembered, to ignore their late messages.
const RETIRED_KEPT: usize = 8;

/// A transfer in flight to one peer: sent again, piece by piece, until every piece is acked.
#[derive(Debug, Clone)]
struct Transfer<K: Ord, V> {
    /// Which transfer (`index` unused).
    piece: Piece,
    /// The pieces acked so far.
    acked: BTreeSet<u32>,
    /// The pieces of a full state, as cut when it started (the state moves on).
    full: Option<Vec<Delta<K, V>>>,
    /// The round from which its unacked pieces may be sent again.
    resend_at: u64,
    /// Rounds to wait after the next resend (doubles, up to 8 × `resend_after`).
    wait: u64,
}

/// What this replica knows of one peer.
#[derive(Debug, Clone)]
struct PeerState<K: Ord, V> {
    /// The first group it has not acked.
    acked: u64,
    /// It lost its state (restarted, or a digest shows it): the next transfer is the full
    /// state. Such a peer holds back garbage collection only from the position of a full state
    /// in flight to it (see `gc`).
    needs_full: bool,
    /// The transfer in flight to it.
    transfer: Option<Transfer<K, V>>,
    /// Its replica id, as last heard.
    incarnation: Option<ReplicaId>,
    /// Its earlier replica ids (at most `RETIRED_KEPT`): their messages are late, not news.
    retired: VecDeque<ReplicaId>,
    /// The transfer being received from it, and the pieces of it seen so far.
    inbound: Option<(Piece, BTreeSet<u32>)>,
    /// The highest `seq` of a transfer received whole from its current incarnation (told back
    /// to it in digests: see the repair in `handle_message`).
    complete: u64,
    /// The context of its latest digest (a lower bound of what it has seen, since contexts
    /// only grow): to know when an old epoch is covered everywhere.
    last_digest: Option<CausalContext>,
}

/// Why [`Replica::retire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRetirable {
    /// It is this replica's id, or a peer's current one.
    Running,
    /// This replica has no version-vector entry for it (never seen, or already retired).
    NotListed,
    /// Some of its dots have not arrived here yet (its context has gaps): retire it once
    /// they have, so the retired prefix says everything this replica will hear of it.
    Gaps,
}

impl<K: Ord, V> Default for PeerState<K, V> {
    fn default() -> Self {
        PeerState {
            acked: 0,
            needs_full: false,
            transfer: None,
            incarnation: None,
            retired: VecDeque::new(),
            inbound: None,
            complete: 0,
            last_digest: None,
        }
    }
}

/// One replica of an [`ORMap`], with its anti-entropy state. `P` names peers (an address).
pub struct Replica<P, K: Ord, V> {
    id: ReplicaId,
    map: ORMap<K, V>,
    config: Config,
    peers: BTreeMap<P, PeerState<K, V>>,
    /// Delta groups `first_seq..next_seq`.
    buffer: VecDeque<Group<K, V>>,
    first_seq: u64,
    next_seq: u64,
    /// The dot → key index of the newest group while it is local: later local writes may be
    /// joined into it (see `apply_and_buffer`). `None` when the newest group came from a peer,
    /// or there is none.
    open: Option<HashMap<Dot, K>>,
    ticks: u64,
    stats: Stats,
}

impl<P: std::fmt::Debug, K: Ord + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug
    for Replica<P, K, V>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .field("buffered", &self.buffer.len())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl<P, K, V> Replica<P, K, V>
where
    P: Ord + Clone,
    K: Ord + Clone + std::hash::Hash + Serialize,
    V: Clone + PartialEq + Serialize,
{
    /// A new, empty replica. `id.epoch` must differ from every earlier start of the same node
    /// (a random 64-bit number does: see `docs/protocols/crdt.md`).
    pub fn new(id: ReplicaId, peers: impl IntoIterator<Item = P>, config: Config) -> Self {
        Replica {
            id,
            map: ORMap::new(),
            config,
            peers: peers
                .into_iter()
                .map(|p| (p, PeerState::default()))
                .collect(),
            buffer: VecDeque::new(),
            first_seq: 0,
            next_seq: 0,
            open: None,
            ticks: 0,
            stats: Stats::default(),
        }
    }

    /// A replica restored from `durable` (read back from disk), running under `id`: either
    /// `durable.id`, when the snapshot was written after the replica's last write (a clean
    /// shutdown), or a fresh id of the same node (anything else: see [`crate::durable`]).
    /// Its peers start as for [`new`](Self::new); its delta buffer starts empty at the saved
    /// position. The state is validated first and refused whole if inconsistent.
    pub fn restore(
        durable: Durable<K, V>,
        id: ReplicaId,
        peers: impl IntoIterator<Item = P>,
        config: Config,
    ) -> Result<Self, RestoreError> {
        if id.node != durable.id.node {
            return Err(RestoreError::OtherNode {
                snapshot: durable.id,
                id,
            });
        }
        if id != durable.id && durable.state.ctx.mentions(&id) {
            return Err(RestoreError::EpochSeen(id));
        }
        let map = ORMap::from_state(durable.state)?;
        let mut replica = Replica::new(id, peers, config);
        replica.map = map;
        replica.first_seq = durable.next_seq;
        replica.next_seq = durable.next_seq;
        Ok(replica)
    }

    /// The durable part (see [`Durable`]), encoded with [`crate::wire::encode`]; read it back
    /// with `wire::decode::<Durable<K, V>>`. Borrows the state: no copy of the map is made.
    pub fn encode_durable(&self) -> Vec<u8> {
        crate::wire::encode(&DurableRef {
            id: self.id,
            next_seq: self.next_seq,
            state: self.map.state(),
        })
    }

    /// The durable part, as a value (a copy of the whole map: for tests and small states;
    /// [`encode_durable`](Self::encode_durable) writes a snapshot without the copy).
    pub fn durable(&self) -> Durable<K, V> {
        Durable {
            id: self.id,
            next_seq: self.next_seq,
            state: self.map.state().clone(),
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

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = &P> {
        self.peers.keys()
    }

    /// Add a peer (it starts as needing everything). Adding a known peer changes nothing.
    pub fn add_peer(&mut self, peer: P) {
        self.peers.entry(peer).or_default();
    }

    /// Forget a peer (it left the membership, or was declared dead): it no longer holds back
    /// garbage collection, and its late acks and digests are ignored. If it comes back, add
    /// it again: it starts as needing everything. Returns whether it was a peer.
    pub fn remove_peer(&mut self, peer: &P) -> bool {
        let known = self.peers.remove(peer).is_some();
        if known {
            self.gc();
        }
        known
    }

    /// Retire `old`, an epoch no process runs any more: move it from the version vector to
    /// the retired prefixes, for the whole cluster, so version vectors stop growing by one
    /// entry per restart. Returns how many of its dots were retired.
    ///
    /// A retirement is a delta like a write's (made by [`ORMap::retirement`], joined here,
    /// buffered and sent on): `old`'s prefix `1..=n` as a *retired* prefix, with every entry
    /// of `old` live here. It forgets no dot, so it is a join, and it is safe whenever it is
    /// made: the replicas that have not heard of it yet do not look ahead of it (digests and
    /// coverage count retired prefixes like vector entries), and those that have apply the
    /// same prefix again without effect. A dot of `old` above `n` (a late message) is joined
    /// as usual and lists `old` again until a later retirement covers it.
    ///
    /// Refused (nothing changes) if `old` is this replica or a peer's current incarnation
    /// (`Running`: it would be listed again at its next write), has no vector entry here
    /// (`NotListed`), or has dots this replica has not received yet (`Gaps`).
    pub fn retire(&mut self, old: ReplicaId) -> Result<u64, NotRetirable> {
        if old == self.id || self.peers.values().any(|s| s.incarnation == Some(old)) {
            return Err(NotRetirable::Running);
        }
        let ctx = self.map.context();
        if ctx.cloud().iter().any(|d| d.replica == old) {
            return Err(NotRetirable::Gaps);
        }
        let Some(delta) = self.map.retirement(old) else {
            return Err(NotRetirable::NotListed);
        };
        let n = delta.ctx.prefix(&old);
        self.apply_and_buffer(delta, None);
        Ok(n)
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

    fn apply_and_buffer(&mut self, delta: Delta<K, V>, origin: Option<ReplicaId>) {
        self.map.apply(&delta);
        if origin.is_none()
            && self.no_peer_holds_newest()
            && let (Some(group), Some(index)) = (self.buffer.back_mut(), self.open.as_mut())
        {
            // Nobody has group `next_seq - 1` yet: whoever gets it later gets both writes.
            group.delta.join_indexed(&delta, index);
            self.stats.coalesced += 1;
            return;
        }
        self.open = origin.is_none().then(|| delta.dot_index());
        self.buffer.push_back(Group { delta, origin });
        self.next_seq += 1;
        while self.buffer.len() > self.config.max_buffer {
            self.buffer.pop_front();
            self.first_seq += 1;
        }
        if self.buffer.is_empty() {
            self.open = None;
        }
    }

    /// Is the newest group held by no peer: none acked it, none has a transfer (interval or
    /// full state) in flight that covers it? Only then may it change (invariant 4b): an interval
    /// is cut again from the buffer for every resend and must stay the same, and a peer's acked
    /// position must not cover a write it never received. (Whether it is local is `open`.)
    fn no_peer_holds_newest(&self) -> bool {
        let newest = self.next_seq; // one past group `next_seq - 1`
        self.peers
            .values()
            .all(|s| s.acked < newest && s.transfer.as_ref().is_none_or(|t| t.piece.seq < newest))
    }

    /// One round: send deltas (or the full state) to `fanout` random peers, and now and then a
    /// digest; on the very first round, a digest to every peer (the hello that tells them this
    /// is a new replica). `random` is fresh randomness from the driver.
    pub fn tick(&mut self, random: u64) -> Vec<Effect<P, K, V>> {
        let mut random = SplitMix64::new(random);
        self.ticks += 1;
        let mut out = Vec::new();
        let peers: Vec<P> = self.peers.keys().cloned().collect();
        if peers.is_empty() {
            return out;
        }
        self.send_deltas(&peers, &mut random, true, &mut out);
        if self.ticks == 1 {
            for p in &peers {
                let msg = self.digest_for(p);
                out.push(Effect::Send { to: p.clone(), msg });
            }
        } else if self.ticks.is_multiple_of(self.config.digest_every.max(1)) {
            let to = peers[(random.next_u64() % peers.len() as u64) as usize].clone();
            let msg = self.digest_for(&to);
            out.push(Effect::Send { to, msg });
        }
        self.gc();
        out
    }

    /// Send what was written since the last round to `fanout` random peers that have no
    /// transfer in flight: for a driver that pushes a write right away, between rounds. Resends
    /// nothing and sends no digest, and the round count does not move (resends and digests keep
    /// the pace of [`tick`](Self::tick), however often writes push).
    pub fn push(&mut self, random: u64) -> Vec<Effect<P, K, V>> {
        let mut random = SplitMix64::new(random);
        let mut out = Vec::new();
        let peers: Vec<P> = self.peers.keys().cloned().collect();
        self.send_deltas(&peers, &mut random, false, &mut out);
        out
    }

    /// Deltas (new transfers, and resends when `resend` and due) to `fanout` random `peers`.
    fn send_deltas(
        &mut self,
        peers: &[P],
        random: &mut SplitMix64,
        resend: bool,
        out: &mut Vec<Effect<P, K, V>>,
    ) {
        let fanout = self.config.fanout.min(peers.len());
        let mut chosen = BTreeSet::new();
        for _ in 0..fanout * 2 {
            if chosen.len() == fanout {
                break;
            }
            chosen.insert((random.next_u64() % peers.len() as u64) as usize);
        }
        for i in chosen {
            for msg in self.deltas_for(&peers[i], resend) {
                out.push(Effect::Send {
                    to: peers[i].clone(),
                    msg,
                });
            }
        }
    }

    fn digest_for(&self, peer: &P) -> Message<K, V> {
        let state = self.peers.get(peer);
        self.message(Body::Digest {
            ctx: self.map.context().clone(),
            to: state.and_then(|s| s.incarnation),
            complete: state.map_or(0, |s| s.complete),
        })
    }

    /// What to send `peer` now: the pieces of its transfer it has not acked yet.
    ///
    /// A transfer stays the same until every piece is acked, even while new writes arrive:
    /// acks that come back after the next tick (a link slower than the tick) then still count.
    /// Cutting a new transfer at every tick would make them all stale, and under steady writes
    /// nothing would ever be acknowledged.
    ///
    /// A transfer in flight is sent again only when `resend` (a round, not a push) and its
    /// wait is over; the wait then doubles (see [`Config::resend_after`]).
    fn deltas_for(&mut self, peer: &P, resend: bool) -> Vec<Message<K, V>> {
        let (first_seq, ticks) = (self.first_seq, self.ticks);
        let max_wait = self.config.resend_after.max(1).saturating_mul(8);
        let Some(state) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if let Some(t) = &state.transfer
            && t.piece.from.is_some_and(|from| from < first_seq)
        {
            state.transfer = None; // its groups fell out of the buffer: the full state instead
        }
        if let Some(t) = &mut state.transfer {
            if !resend || ticks < t.resend_at {
                return Vec::new();
            }
            t.resend_at = ticks.saturating_add(t.wait);
            t.wait = t.wait.saturating_mul(2).min(max_wait);
            self.stats.resends += 1;
        }
        let in_flight = state.transfer.as_ref().map(|t| (t.piece, t.acked.clone()));
        let pieces: Vec<(u32, Delta<K, V>)> = match (in_flight, &state.transfer) {
            (
                Some((_, acked)),
                Some(Transfer {
                    full: Some(full), ..
                }),
            ) => (0..)
                .zip(full)
                .filter(|(i, _)| !acked.contains(i))
                .map(|(i, d)| (i, d.clone())) // only what is still to be sent
                .collect(),
            (Some((piece, acked)), _) => {
                let from = piece.from.unwrap_or(first_seq);
                (0..)
                    .zip(self.interval(peer, from, piece.seq))
                    .filter(|(i, _)| !acked.contains(i))
                    .collect()
            }
            (None, _) => match self.new_transfer(peer) {
                Some(pieces) => (0..).zip(pieces).collect(),
                None => return Vec::new(),
            },
        };
        let Some(transfer) = self.peers.get(peer).and_then(|s| s.transfer.as_ref()) else {
            return Vec::new();
        };
        let transfer = transfer.piece;
        if transfer.from.is_none() {
            self.stats.full_states_sent += 1;
        } else {
            self.stats.deltas_sent += 1;
        }
        let max = self.config.max_message_bytes;
        let mut out = Vec::new();
        for (index, delta) in pieces {
            self.stats.pieces_sent += 1;
            if wire_size(&delta) > max {
                self.stats.oversized_sent += 1;
            }
            out.push(self.message(Body::Delta {
                piece: Piece { index, ..transfer },
                delta,
            }));
        }
        out
    }

    /// Start a transfer to `peer` (the groups it has not acked, or the full state) and return
    /// its pieces; `None` if it lacks nothing.
    fn new_transfer(&mut self, peer: &P) -> Option<Vec<Delta<K, V>>> {
        let state = self.peers.get(peer)?;
        let full = state.needs_full || state.acked < self.first_seq;
        if !full && state.acked >= self.next_seq {
            return None; // it has everything we have
        }
        let pieces = if full {
            self.cut(self.map.state())
        } else {
            self.interval(peer, state.acked, self.next_seq)
        };
        let (next_seq, ticks) = (self.next_seq, self.ticks);
        let wait = self.config.resend_after.max(1);
        let state = self.peers.get_mut(peer)?;
        if pieces.is_empty() {
            // Everything it lacks came from it (or there is nothing at all): nothing to send,
            // and nothing to wait for.
            state.acked = next_seq;
            state.needs_full &= !full;
            return None;
        }
        state.transfer = Some(Transfer {
            piece: Piece {
                from: (!full).then_some(state.acked),
                seq: next_seq,
                index: 0,
                count: u32::try_from(pieces.len()).unwrap_or(u32::MAX),
            },
            acked: BTreeSet::new(),
            // The full state moves on with every write: keep the pieces as cut. An interval is
            // cut again from the buffer, identically (same groups, same order, same limit).
            full: full.then(|| pieces.clone()),
            resend_at: ticks.saturating_add(wait),
            wait: wait.saturating_mul(2),
        });
        Some(pieces)
    }

    /// The pieces of groups `from..to` that did not come from `peer`'s current incarnation.
    fn interval(&self, peer: &P, from: u64, to: u64) -> Vec<Delta<K, V>> {
        let incarnation = self.peers.get(peer).and_then(|s| s.incarnation);
        let mut joined = Delta::default();
        let mut index = HashMap::new(); // keeps the joins linear in the interval's size
        let skip = from.saturating_sub(self.first_seq) as usize;
        let take = to.saturating_sub(from) as usize;
        for g in self.buffer.iter().skip(skip).take(take) {
            // Never back to the replica it came from (BP); a restarted peer is another
            // replica, so what its earlier incarnation sent goes back to it.
            if g.origin.is_none() || g.origin != incarnation {
                joined.join_indexed(&g.delta, &mut index);
            }
        }
        if joined.is_empty() {
            return Vec::new();
        }
        self.cut(&joined)
    }

    fn cut(&self, delta: &Delta<K, V>) -> Vec<Delta<K, V>> {
        cut_within(delta, self.config.max_message_bytes, MAX_PIECES as usize)
    }

    fn message(&self, body: Body<K, V>) -> Message<K, V> {
        Message {
            sender: self.id,
            body,
        }
    }

    /// Drop the groups every peer has acked. A peer that needs the full state gets it from the
    /// map, not the buffer: it holds back only the groups after its full state in flight, which
    /// it needs next (else it would need a second full state).
    fn gc(&mut self) {
        let min = self
            .peers
            .values()
            .filter_map(|s| match (&s.transfer, s.needs_full) {
                (_, false) => Some(s.acked),
                (Some(t), true) => Some(t.piece.seq),
                (None, true) => None,
            })
            .min()
            .unwrap_or(self.next_seq);
        while self.first_seq < min && !self.buffer.is_empty() {
            self.buffer.pop_front();
            self.first_seq += 1;
        }
        if self.buffer.is_empty() {
            self.open = None;
        }
    }

    /// Note who `from` is now. Returns false if the message comes from an earlier incarnation
    /// of it (late: its acks and digests are stale).
    fn note_sender(&mut self, from: &P, sender: ReplicaId) -> bool {
        let Some(state) = self.peers.get_mut(from) else {
            return true;
        };
        match state.incarnation {
            Some(current) if current == sender => true,
            _ if state.retired.contains(&sender) => false,
            None => {
                state.incarnation = Some(sender);
                true
            }
            Some(current) => {
                // A restarted peer (new epoch): whatever its previous incarnation acked is gone,
                // and what that incarnation sent us is not held by the new one.
                if state.retired.len() == RETIRED_KEPT {
                    state.retired.pop_front();
                }
                state.retired.push_back(current);
                *state = PeerState {
                    needs_full: true,
                    incarnation: Some(sender),
                    retired: std::mem::take(&mut state.retired),
                    ..PeerState::default()
                };
                self.stats.restarts_seen += 1;
                self.stats.resets += 1;
                true
            }
        }
    }

    /// Check a received message before anything of it is used.
    fn validate(&self, body: &Body<K, V>) -> Result<(), Invalid> {
        let ctx = match body {
            Body::Delta { delta, .. } => {
                delta.validate()?;
                &delta.ctx
            }
            Body::Digest { ctx, .. } => {
                validate::validate_context(ctx)?;
                ctx
            }
            Body::Ack { .. } => return Ok(()),
        };
        // Nobody has seen a write of ours that we have not made.
        let issued = self.map.context().next_dot(self.id).counter - 1;
        // Its vector entry, retired prefix or cloud: a peer may have retired this id by
        // mistake, which is harmless (a prefix of what was issued), but not beyond it.
        let own = ctx.next_dot(self.id).counter - 1;
        if own > issued {
            return Err(Invalid::FutureOfReceiver(crate::causal::Dot {
                replica: self.id,
                counter: own,
            }));
        }
        Ok(())
    }

    /// Handle a message from `from`. Invalid messages are refused and counted
    /// ([`Stats::invalid_received`]); nothing here panics on what a peer sends.
    pub fn handle_message(&mut self, from: P, msg: Message<K, V>) -> Vec<Effect<P, K, V>> {
        self.receive(from, msg, |_, _| ()).0
    }

    /// [`handle_message`](Self::handle_message), telling `seen` about a received delta: what
    /// it brings (its news, as [`ORMap::news`] gives it; `None`: nothing) and the delta as
    /// received, after validation and before the join. Returns `seen`'s answer, `None` for an
    /// ack, a digest or a refused message. For a driver that must know what may have changed,
    /// without computing the news a second time.
    pub fn receive<R>(
        &mut self,
        from: P,
        msg: Message<K, V>,
        seen: impl FnOnce(Option<&Delta<K, V>>, &Delta<K, V>) -> R,
    ) -> (Vec<Effect<P, K, V>>, Option<R>) {
        let mut answer = None;
        let out = self.receive_with(from, msg, |news, delta| answer = Some(seen(news, delta)));
        (out, answer)
    }

    fn receive_with(
        &mut self,
        from: P,
        msg: Message<K, V>,
        seen: impl FnOnce(Option<&Delta<K, V>>, &Delta<K, V>),
    ) -> Vec<Effect<P, K, V>> {
        let valid_piece = match &msg.body {
            Body::Delta { piece, .. } | Body::Ack { piece, .. } => piece.is_valid(),
            Body::Digest { .. } => true,
        };
        if !valid_piece || self.validate(&msg.body).is_err() {
            self.stats.invalid_received += 1;
            return Vec::new();
        }
        let current = self.note_sender(&from, msg.sender);
        match msg.body {
            Body::Delta { piece, delta } => {
                let news = self.map.news(&delta);
                seen(news.as_ref(), &delta);
                match news {
                    Some(news) => self.apply_and_buffer(news, Some(msg.sender)),
                    None => self.stats.redundant_received += 1,
                }
                if !current {
                    // Data is data (a dot names one write forever), but nobody waits for this
                    // ack: the incarnation that sent it is gone.
                    return Vec::new();
                }
                if let Some(state) = self.peers.get_mut(&from) {
                    note_inbound(state, piece);
                }
                let ack = self.message(Body::Ack {
                    to: msg.sender,
                    piece,
                });
                vec![Effect::Send { to: from, msg: ack }]
            }
            Body::Ack { to, piece } => {
                let next_seq = self.next_seq;
                let state = self.peers.get_mut(&from);
                let Some(state) = state.filter(|_| current && to == self.id) else {
                    self.stats.stale_received += 1;
                    return Vec::new();
                };
                let Some(transfer) = &mut state.transfer else {
                    self.stats.stale_received += 1;
                    return Vec::new();
                };
                if !transfer.piece.same_transfer(&piece) {
                    self.stats.stale_received += 1;
                    return Vec::new();
                }
                transfer.acked.insert(piece.index);
                if transfer.acked.len() == transfer.piece.count as usize {
                    state.acked = state.acked.max(transfer.piece.seq.min(next_seq));
                    if transfer.piece.from.is_none() {
                        state.needs_full = false;
                    }
                    state.transfer = None;
                }
                Vec::new()
            }
            Body::Digest { ctx, to, complete } => {
                let next_seq = self.next_seq;
                let Some(state) = self.peers.get_mut(&from).filter(|_| current) else {
                    self.stats.stale_received += 1;
                    return Vec::new();
                };
                // Only a digest written after it received, whole, a transfer at our current
                // position proves a loss; an older one (reordered behind the acks) proves nothing.
                let received_all = to == Some(self.id) && complete >= next_seq;
                let lacks = || !ctx.covers(self.map.context());
                if received_all && !state.needs_full && state.acked >= next_seq && lacks() {
                    // It acked everything we have, yet lacks some of it: it lost its state.
                    state.needs_full = true;
                    state.transfer = None;
                    self.stats.resets += 1;
                }
                state.last_digest = Some(ctx);
                Vec::new()
            }
        }
    }
}

/// Record a piece received from a peer; a transfer is complete when all its pieces arrived.
fn note_inbound<K: Ord, V>(state: &mut PeerState<K, V>, piece: Piece) {
    let done = match &mut state.inbound {
        Some((t, seen)) if t.same_transfer(&piece) => {
            seen.insert(piece.index);
            seen.len() == t.count as usize
        }
        Some((t, _)) if t.seq > piece.seq => false, // an older transfer, late
        slot => {
            *slot = Some((piece, BTreeSet::from([piece.index])));
            piece.count == 1
        }
    };
    if done {
        state.complete = state.complete.max(piece.seq);
        state.inbound = None;
    }
}

/// `delta` in pieces of at most `max_bytes`, and at most `max_pieces` of them: past that (a
/// state of a terabyte at 1 MiB), the limit doubles until they fit, and the oversized pieces are
/// counted when sent. Dropping pieces instead would ack a transfer its receiver never got whole.
fn cut_within<K, V>(delta: &Delta<K, V>, max_bytes: usize, max_pieces: usize) -> Vec<Delta<K, V>>
where
    K: Ord + Clone + Serialize,
    V: Clone + PartialEq + Serialize,
{
    if delta.is_empty() {
        return Vec::new();
    }
    let mut max = max_bytes;
    loop {
        let pieces = delta.split(max, |k, v| wire_size(k) + wire_size(v));
        if pieces.len() <= max_pieces || max == usize::MAX {
            return pieces;
        }
        max = max.saturating_mul(2);
    }
}

/// Bytes of `value` in postcard (0 if it cannot be encoded; nothing here can fail).
fn wire_size<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::causal::ReplicaId;

    #[test]
    fn a_transfer_over_the_piece_limit_is_cut_coarser_never_truncated() {
        let mut map: ORMap<u32, u32> = ORMap::new();
        let id = ReplicaId { node: 1, epoch: 1 };
        for k in 0..200 {
            let d = map.write(id, k, k);
            map.apply(&d);
        }
        let fine = cut_within(map.state(), 200, usize::MAX);
        assert!(fine.len() > 8, "{} pieces", fine.len());
        let coarse = cut_within(map.state(), 200, 8);
        assert!(coarse.len() <= 8, "{} pieces", coarse.len());
        let mut joined: ORMap<u32, u32> = ORMap::new();
        for p in &coarse {
            joined.apply(p);
        }
        assert_eq!(joined.state(), map.state(), "nothing dropped");
    }
}
