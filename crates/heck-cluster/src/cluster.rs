//! One node's decisions: who it is, whom it sees, what it owns, what it writes, what it answers.
//!
//! ```text
//!  inputs (the driver calls)                       effects (the driver does)
//!  ─────────────────────────                       ─────────────────────────
//!  start(now, seeds)                           ┌────> Swim { to, packet }      (UDP, sealed)
//!  handle_swim(now, packet) ─────────> SWIM ───┤      PushPull { to, join }    (stream transport)
//!  handle_push_pull(now, state, join) ─> SWIM ─┤      Sync { to, msg }         (stream transport)
//!  handle_timer(now, timer)                    │      Schedule { after, timer }
//!  handle_sync(now, msg) ───> CRDT replica ────┤      Own { target, state, first_due }
//!  handle_check(now, target, &CheckState)      │      Disown { target }
//!  add_target / remove_target (API)            └────> TargetUpdated / TargetRemoved
//!                                                     Changed { target, answer }  (event stream)
//!  membership (alive + suspect, and me) ──> rendezvous owners ──> my share: Own / Disown
//!  my check changed the status ──> write StatusRecord ──> push a sync round within push_delay
//!  a delta arrives ──> re-answer the keys it touched ──> Changed; re-seed my check if superseded
//! ```
//!
//! Invariants: (1) only an owner writes a target's status, and only a target that exists;
//! (2) an owner writes when its status differs from what it last wrote or, as the first owner,
//! from the answer, or to settle a contested target: never per check; (3) every node computes
//! answers with [`crate::answer::pick`] over the same siblings and owners; (4) nothing here reads
//! a clock or draws randomness: `now` and a seed come in.
//!
//! Time: every input takes heck-swim's [`Now`]: `mono` (since the driver started) runs SWIM's
//! timers, `wall` (since the Unix epoch) stamps status records (`observed_at`), places checks
//! on the phase grid (`first_due`) and seals SWIM packets for the replay window.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use heck_check::{CheckState, Defaults, SpecError, Status, TargetInput, TargetName, TargetSpec};
use heck_crdt::{Message, ORMap, ReplicaId};
use heck_sim::SplitMix64;
use heck_swim::{Now, PushPullState};
use serde::{Deserialize, Serialize};

use crate::adapter::check::{first_due, starting_state};
use crate::adapter::crdt::{Changed, Peer, Store};
use crate::adapter::ownership::{Change, Owners};
use crate::adapter::swim::{Event, Membership};
use crate::answer::{Answer, pick};
use crate::record::{Key, StatusRecord, TargetEntry, Value};
use crate::snapshot::{self, Restored, SnapshotError};
use heck_check::NodeName;

/// Parameters. Every node of a cluster must use the same `replicas`, `weights` and `defaults`
/// (they come from the shared config file), or nodes disagree on owners and specs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Membership (probe interval, suspicion, …); see heck-swim.
    pub swim: heck_swim::Config,
    /// Anti-entropy (fanout, digest period, buffer bound); see heck-crdt.
    pub sync: heck_crdt::Config,
    /// Time between two anti-entropy rounds. Default 200 ms; 10 ms..=10 s. Bounds how long a
    /// delta waits at each hop, so a status change reaches every node in a few rounds.
    pub sync_interval: Duration,
    /// Longest wait between an owner's write and its push (writes within it share one round).
    /// Default 10 ms; below `sync_interval`.
    pub push_delay: Duration,
    /// Owners per target (`[cluster] replicas`). Default 1.
    pub replicas: NonZeroUsize,
    /// Relative capacity per node (absent = 1); finite, > 0.
    pub weights: BTreeMap<NodeName, f64>,
    /// After `start` with seeds, how long to learn the members before owning anything: a joiner
    /// that believed itself alone would otherwise check every target for a moment. Default
    /// 2 probe intervals; 0 to own at once.
    pub settle: Duration,
    /// `[defaults]`: resolves targets added through the API, the same way on every node.
    pub defaults: Defaults,
}

impl Config {
    /// memberlist's LAN timings for membership; a sync round every 200 ms.
    pub fn lan() -> Config {
        let swim = heck_swim::Config::lan();
        Config {
            swim,
            // Each delta group reaches every peer from every node that found it news, whatever
            // the fanout (heck-crdt's acks are per peer): the fanout only sets how many groups
            // wait per peer. 8 peers a round keeps that small during a burst, and 4,096 groups
            // (writes between two sends coalesce into one) keep it from overflowing into full
            // states, which travel whole.
            sync: heck_crdt::Config {
                fanout: 8,
                digest_every: 10,
                max_buffer: 4096,
                // heck-crdt's default: a full state for 10,000 targets is a few MiB, cut into
                // pieces that each fit well under the stream's 4 MiB frame.
                max_message_bytes: 1 << 20,
                // Sync runs over the stream (TCP): a piece is lost only with its connection,
                // and a receiver busy with a start-up burst acks late. So a transfer is sent
                // again after 2 rounds (400 ms on the LAN profile), then 4, 8 and 16 at most,
                // not every round: at 100,000 targets, resending megabytes every 200 ms kept
                // anti-entropy going for tens of seconds after the burst (v2-bench).
                resend_after: 2,
            },
            sync_interval: Duration::from_millis(200),
            push_delay: Duration::from_millis(10),
            replicas: NonZeroUsize::MIN,
            weights: BTreeMap::new(),
            settle: swim.probe_interval * 2,
            defaults: Defaults::default(),
        }
    }

    /// Five times faster membership (heck-swim's `fast`), a sync round every 100 ms.
    pub fn fast() -> Config {
        let swim = heck_swim::Config::fast();
        Config {
            swim,
            sync_interval: Duration::from_millis(100),
            settle: swim.probe_interval * 2,
            ..Config::lan()
        }
    }
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<A> {
    /// `--node-name`.
    pub name: NodeName,
    /// The gossip address others reach it at.
    pub addr: A,
    /// SWIM incarnation to start with: above any this name used before (the start time in
    /// milliseconds, say), so a restarted node is newer than its own death.
    pub incarnation: u64,
    /// The CRDT replica epoch: different on every start (random 64 bits, or a persisted
    /// counter), so a restarted node never reuses a dot.
    pub epoch: u64,
    /// Seed for every random choice (probe order, sync peers).
    pub seed: u64,
}

/// Timers the driver delivers back with [`Cluster::handle_timer`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A SWIM timer.
    Swim(heck_swim::Timer),
    /// The periodic anti-entropy round.
    Sync,
    /// Push fresh writes now.
    Push,
    /// The settle period after joining is over: start owning.
    Settle,
}

/// A message of the sync (CRDT) channel. Sent over an authenticated stream transport; `from`
/// names the sender and must match its replica id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMsg {
    /// The sender's node name.
    pub from: NodeName,
    /// What it says.
    pub body: SyncBody,
}

/// What a sync message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncBody {
    /// "I am this incarnation": sent to every member that comes up, so both sides start
    /// exchanging deltas at once (and a restarted peer is known as new before it writes).
    Hello {
        /// The sender's replica id.
        replica: ReplicaId,
    },
    /// A CRDT anti-entropy message.
    Crdt(Message<Key, Value>),
}

/// Should the driver hand this check to [`Cluster::handle_check`]? Only a check that may
/// change something: it made a transition (a non-first owner writes on its own transitions),
/// it disagrees with the answer (the first owner writes then), or the answer is contested (the
/// first owner's next write clears it). Any other check `handle_check` would ignore, and at
/// steady state that is almost every check: filtering them where the check runs keeps the
/// driver's queue for changes (at 100,000 targets, every check reported had filled it).
/// `answer`: this node's answer for the target (status, contested), if known.
pub fn report_check(
    transitioned: bool,
    answer: Option<(Status, bool)>,
    state: &CheckState,
) -> bool {
    transitioned || answer.is_none_or(|(status, contested)| status != state.status() || contested)
}

/// Largest sync message accepted by [`decode`], in bytes: heck-stream's default frame limit.
/// heck-crdt cuts every transfer into pieces of at most `max_message_bytes` (1 MiB), so only a
/// single entry larger than that could come near it, and status records and targets are small.
pub const MAX_SYNC_MESSAGE: usize = 4 << 20;

/// Encode a sync message (one version byte, then postcard).
pub fn encode(msg: &SyncMsg) -> Vec<u8> {
    heck_crdt::wire::encode(msg)
}

/// Decode a sync message; never panics.
pub fn decode(bytes: &[u8]) -> Result<SyncMsg, heck_crdt::wire::DecodeError> {
    heck_crdt::wire::decode(bytes, MAX_SYNC_MESSAGE)
}

/// A member's state, as the cluster reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEvent {
    /// Alive (joined, came back, or refuted a suspicion).
    Live,
    /// Suspected: still an owner until declared dead.
    Suspect,
    /// Dead or left: its targets moved.
    Gone,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<A> {
    /// Send a SWIM packet (seal it; UDP).
    Swim {
        /// Address.
        to: A,
        /// Packet.
        packet: heck_swim::Packet<A>,
    },
    /// Exchange full member lists with the member at `to` over the stream transport (SWIM
    /// push-pull): send it [`Cluster::push_pull_state`] and `join`; hand its reply to
    /// [`Cluster::handle_push_pull`] with the same `join`. A failed exchange needs nothing:
    /// the next push-pull timer tries again.
    PushPull {
        /// Address (the member's gossip address; the transport maps it to its stream port).
        to: A,
        /// Part of joining (to a seed) rather than the periodic exchange.
        join: bool,
    },
    /// Send a sync message over the stream transport.
    Sync {
        /// Address (the member's gossip address; the transport maps it to its stream port).
        to: A,
        /// Message.
        msg: SyncMsg,
    },
    /// Deliver `timer` after `after`.
    Schedule {
        /// Delay.
        after: Duration,
        /// Timer.
        timer: Timer,
    },
    /// Check `target` from now on, continuing from `state` (the replicated status and
    /// counters), first at `first_due` (its phase slot; time since the Unix epoch). Also sent
    /// for a target already owned when another node's newer record supersedes this node's view:
    /// then replace the check state and keep the schedule.
    Own {
        /// Target.
        target: TargetName,
        /// Where its check state machine continues from.
        state: CheckState,
        /// Its next slot on the phase grid.
        first_due: Duration,
    },
    /// Stop checking `target` (another node owns it now, or it was deleted).
    Disown {
        /// Target.
        target: TargetName,
    },
    /// A target was added or its spec changed (through any node's API).
    TargetUpdated {
        /// The resolved spec.
        spec: TargetSpec,
    },
    /// A target was deleted (through any node's API).
    TargetRemoved {
        /// Target.
        target: TargetName,
    },
    /// The answer for `target` changed status or contested flag (for the event stream).
    Changed {
        /// Target.
        target: TargetName,
        /// The new answer.
        answer: Answer,
    },
    /// Packets from `from` are dropped because its clock and ours disagree by `skew_ms` (our
    /// clock − its clock) beyond SWIM's replay window: one log line (reported once per sender,
    /// again only after one of its packets was accepted).
    ClockSkew {
        /// The sender's name, as its authenticated packet said.
        from: String,
        /// Our wall clock minus the sender's, in milliseconds.
        skew_ms: i64,
    },
    /// A member's state changed (for logs and metrics).
    Member {
        /// Member.
        name: NodeName,
        /// What happened.
        event: MemberEvent,
    },
}

/// Counters (for `/v1/node` and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Status records written by this node.
    pub writes: u64,
    /// Own effects that replaced a running check's state with a newer record.
    pub reseeds: u64,
    /// Check results ignored (not owned, not settled, or unknown target).
    pub checks_ignored: u64,
    /// Sync messages not sent: the peer incarnation is stale, or the member is not live.
    pub sync_unroutable: u64,
    /// Sync messages dropped: the replica id does not belong to the sender's name.
    pub sync_bad_sender: u64,
    /// Replicated target inputs that do not resolve with this node's defaults.
    pub bad_target_specs: u64,
    /// Replaced incarnations (replica ids) this node retired: moved out of every version
    /// vector, for the whole cluster (see [`RETIRE_AFTER`]).
    pub epochs_retired: u64,
}

/// How long an incarnation must have been replaced (its node runs a newer one) before this
/// node retires it: one message lifetime, so its last messages have arrived everywhere and it
/// is retired once with all its dots, not again and again for each late one. Retiring earlier
/// would still be correct (a retirement is a join: `docs/protocols/crdt.md`), only churn.
pub const RETIRE_AFTER: Duration = Duration::from_secs(60);

/// How often this node looks for incarnations to retire.
const RETIRE_CHECK: Duration = Duration::from_secs(5);

/// Why an API call on the cluster failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The node's own configuration is unusable (weights, replicas).
    Ownership(String),
    /// The membership parameters are unusable (heck-swim refused them).
    Membership(heck_swim::ConfigError),
    /// No such target.
    NotFound(TargetName),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Ownership(e) => write!(f, "cluster configuration: {e}"),
            ClusterError::Membership(e) => write!(f, "cluster configuration: {e}"),
            ClusterError::NotFound(t) => write!(f, "no target named {t:?}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// This node's check of a target it owns.
#[derive(Debug, Clone, Copy)]
struct Owned {
    /// What its last check said.
    status: Status,
    /// What it last wrote (or adopted), for the rule of the non-first owners.
    written: Status,
}

/// One node's decision state. `A` is an address (`SocketAddr`, or a simulator id).
#[derive(Debug)]
pub struct Cluster<A> {
    config: Config,
    me: NodeName,
    membership: Membership<A>,
    owners: Owners,
    store: Store,
    /// The latest incarnation heard of each peer: sync messages go only there.
    current: HashMap<NodeName, ReplicaId>,
    /// Incarnations replaced by a newer one (one per restart of a peer: small).
    retired: HashSet<ReplicaId>,
    /// Version-vector entries whose node runs another incarnation now, with the time (`mono`)
    /// they were first seen so: retired once that is [`RETIRE_AFTER`] ago.
    replaced: HashMap<ReplicaId, Duration>,
    /// When `replaced` was last brought up to date (`mono`).
    retire_checked: Option<Duration>,
    /// The config file's targets (the same on every node). Shared with `targets` (`Arc`): two
    /// copies of 100,000 specs were about 40 MB of every node.
    config_targets: BTreeMap<TargetName, Arc<TargetSpec>>,
    /// The targets that exist: the config file's, overlaid with the replicated entries.
    targets: BTreeMap<TargetName, Arc<TargetSpec>>,
    /// Every target's answer, kept current, so a query costs a lookup.
    answers: HashMap<TargetName, Answer>,
    owned: HashMap<TargetName, Owned>,
    settled: bool,
    push_scheduled: bool,
    /// Picks the peers of each sync round (heck-crdt takes the randomness as an argument).
    rng: SplitMix64,
    stats: Stats,
}

impl<A: Clone + PartialEq + Serialize> Cluster<A> {
    /// A node that knows only itself and the config file's `targets`.
    pub fn new(
        config: Config,
        id: Identity<A>,
        targets: Vec<TargetSpec>,
    ) -> Result<Self, ClusterError> {
        let store = Store::new(ReplicaId::new(id.name.as_str(), id.epoch), config.sync);
        Self::with_store(config, id, targets, store)
    }

    /// A node restored from its snapshot file `bytes` (see [`crate::snapshot`]), with the
    /// config file's `targets`: targets added and deleted through the API, every status record
    /// and the causal context are back; members, owners and peers start as for
    /// [`new`](Self::new). A clean snapshot keeps its replica id; an unclean one takes
    /// `id.epoch` (see [`Restored`]). A corrupt, foreign or future snapshot is refused with an
    /// error that says which, and nothing of it is loaded.
    ///
    /// **Before the first write** (before [`start`](Self::start) and before any check result or
    /// API call is handed in), write [`snapshot(false)`](Self::snapshot) over the file: a clean
    /// snapshot is good once (a crash later must not restore the same id again).
    pub fn restore(
        config: Config,
        id: Identity<A>,
        targets: Vec<TargetSpec>,
        bytes: &[u8],
    ) -> Result<(Self, Restored), SnapshotError> {
        let snap = snapshot::decode(bytes, &id.name)?;
        let previous = snap.replica.id;
        let replica = if snap.clean {
            previous
        } else {
            ReplicaId::new(id.name.as_str(), id.epoch)
        };
        let store =
            Store::restore(snap.replica, replica, config.sync).map_err(SnapshotError::Restore)?;
        let cluster =
            Self::with_store(config, id, targets, store).map_err(SnapshotError::Cluster)?;
        let restored = Restored {
            replica,
            previous,
            clean: snap.clean,
        };
        Ok((cluster, restored))
    }

    /// This node's snapshot file (see [`crate::snapshot`]): its replica's id, buffer position
    /// and whole replicated state. `clean` only at graceful shutdown, after the last call that
    /// may write (`handle_check`, `add_target`, `remove_target`, `leave`) and with none after
    /// it: a clean snapshot promises that it holds every dot this replica made, so a restore
    /// keeps the replica id. Periodic snapshots are not clean.
    pub fn snapshot(&self, clean: bool) -> Vec<u8> {
        snapshot::encode(&self.me, clean, &self.store.encode_durable())
    }

    fn with_store(
        config: Config,
        id: Identity<A>,
        targets: Vec<TargetSpec>,
        store: Store,
    ) -> Result<Self, ClusterError> {
        // Every weight is checked here: a bad weight of another member would otherwise keep it
        // out of the assignment silently, on every node.
        for (name, &w) in &config.weights {
            heck_ownership::Member::weighted(name.as_str(), w)
                .map_err(|e| ClusterError::Ownership(e.to_string()))?;
        }
        let owners = Owners::new(
            id.name.clone(),
            config.replicas.get(),
            config.weights.clone(),
        )
        .map_err(|e| ClusterError::Ownership(e.to_string()))?;
        let membership = Membership::new(&id.name, id.addr, id.incarnation, config.swim, id.seed)
            .map_err(ClusterError::Membership)?;
        let mut c = Cluster {
            me: id.name,
            membership,
            owners,
            store,
            current: HashMap::new(),
            retired: HashSet::new(),
            replaced: HashMap::new(),
            retire_checked: None,
            config_targets: BTreeMap::new(),
            targets: BTreeMap::new(),
            answers: HashMap::new(),
            owned: HashMap::new(),
            settled: false,
            push_scheduled: false,
            rng: SplitMix64::new(id.seed ^ 0x0063_6c75_7374_6572),
            stats: Stats::default(),
            config,
        };
        // Which targets exist: the config file's, overlaid with the replicated entries (none
        // in a new store; those added or deleted through the API in a restored one). The
        // file's targets without an entry go in directly, not through `refresh_target`, which
        // would copy each spec into an effect nobody reads (100,000 of them at start).
        let replicated: Vec<TargetName> = c
            .store
            .keys()
            .filter_map(|k| match k {
                Key::Target(t) => Some(t.clone()),
                Key::Status(_) => None,
            })
            .collect(); // sorted: the map's keys are ordered, `Key::Target`s by name
        let mut ignored = Vec::new();
        for spec in targets {
            let spec = Arc::new(spec);
            c.config_targets
                .insert(spec.name.clone(), Arc::clone(&spec));
            if replicated.binary_search(&spec.name).is_err() {
                c.upsert_target(Now::default(), spec, &mut ignored);
            }
        }
        for t in replicated {
            c.refresh_target(Now::default(), &t, &mut ignored);
        }
        Ok(c)
    }

    /// Join through `seeds` (none: the first node) and start the timers.
    pub fn start(&mut self, now: Now, seeds: Vec<A>) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let alone = seeds.is_empty();
        let events = self.membership.start(now, seeds);
        self.on_membership(now, events, &mut out);
        out.push(Effect::Schedule {
            after: self.config.sync_interval,
            timer: Timer::Sync,
        });
        if alone || self.config.settle.is_zero() {
            self.settle(now, &mut out);
        } else {
            out.push(Effect::Schedule {
                after: self.config.settle,
                timer: Timer::Settle,
            });
        }
        out
    }

    /// A SWIM packet arrived (already opened and authenticated by the driver).
    pub fn handle_swim(&mut self, now: Now, packet: heck_swim::Packet<A>) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let events = self.membership.handle_packet(now, packet);
        self.on_membership(now, events, &mut out);
        out
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Now, timer: Timer) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        match timer {
            Timer::Swim(t) => {
                let events = self.membership.handle_timer(now, t);
                self.on_membership(now, events, &mut out);
            }
            Timer::Sync => {
                out.push(Effect::Schedule {
                    after: self.config.sync_interval,
                    timer: Timer::Sync,
                });
                self.sync_round(&mut out);
                self.retire_replaced(now);
            }
            Timer::Push => {
                self.push_scheduled = false;
                // New transfers only: resends keep the pace of the sync rounds, however many
                // pushes a burst of writes makes.
                let random = self.rng.next_u64();
                for (to, m) in self.store.push(random) {
                    self.route(to, m, &mut out);
                }
            }
            Timer::Settle => self.settle(now, &mut out),
        }
        out
    }

    /// What this node sends in a push-pull, and answers a peer's push-pull request with: its
    /// whole member list. Answer a request with this *before* handing the request's state to
    /// [`Cluster::handle_push_pull`] (memberlist does the same: the reply is our view, not the
    /// merge).
    pub fn push_pull_state(&self) -> PushPullState<A> {
        self.membership.local_state()
    }

    /// A push-pull peer's state arrived: its request, or its reply to our
    /// [`Effect::PushPull`]. The transport authenticated the peer; the driver should drop a
    /// state whose `from` is not the peer it authenticated.
    pub fn handle_push_pull(
        &mut self,
        now: Now,
        remote: PushPullState<A>,
        join: bool,
    ) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let events = self.membership.handle_push_pull(now, remote, join);
        self.on_membership(now, events, &mut out);
        out
    }

    /// A sync message arrived (decoded by the driver; the transport authenticated the peer).
    pub fn handle_sync(&mut self, now: Now, msg: SyncMsg) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let from = msg.from;
        if from == self.me {
            return out;
        }
        let replica = match &msg.body {
            SyncBody::Hello { replica } => *replica,
            SyncBody::Crdt(m) => m.sender,
        };
        if replica.node != ReplicaId::new(from.as_str(), 0).node {
            self.stats.sync_bad_sender += 1;
            return out;
        }
        // A replica id not heard before from this name is its newest incarnation (epochs need
        // not grow: a random epoch only has to differ); one heard before and since replaced is
        // an old incarnation's late message: its data still joins, but nothing is routed to it.
        // So is a message from a member SWIM does not list as live (a dead node's late
        // message): made a peer, it would hold back the buffer's collection for good (C2).
        let newer = self.current.get(&from) != Some(&replica)
            && !self.retired.contains(&replica)
            && self.membership.addr_of(from.as_str()).is_some();
        let peer = Peer {
            name: from.clone(),
            replica,
        };
        if newer {
            if let Some(old) = self.current.get(&from).copied() {
                self.retired.insert(old);
                self.store.remove_peer(&Peer {
                    name: from.clone(),
                    replica: old,
                });
            }
            self.current.insert(from.clone(), replica);
            self.store.add_peer(peer.clone());
            if matches!(msg.body, SyncBody::Hello { .. }) {
                // It may not know this incarnation of us yet either.
                self.hello(&from, &mut out);
            }
        }
        if let SyncBody::Crdt(m) = msg.body {
            let (replies, changed) = self.store.handle(peer, m);
            for (to, m) in replies {
                self.route(to, m, &mut out);
            }
            self.on_changed(now, changed, &mut out);
        }
        out
    }

    /// The result of one check of `target` by this node: `state` is its check state machine
    /// after the result. Writes a status record when the rule says so (see the module doc).
    pub fn handle_check(
        &mut self,
        now: Now,
        target: &TargetName,
        state: &CheckState,
    ) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let rank = self.owners.rank(target);
        let answer = self.answers.get(target);
        let (Some(rank), Some(answer), Some(owned), true) =
            (rank, answer, self.owned.get_mut(target), self.settled)
        else {
            self.stats.checks_ignored += 1;
            return out;
        };
        owned.status = state.status();
        let write = if rank == 0 {
            state.status() != answer.status || answer.contested
        } else {
            state.status() != owned.written
        };
        if !write {
            return out;
        }
        owned.written = state.status();
        let record = StatusRecord {
            check: state.clone(),
            observer: self.me.clone(),
            observed_at: now.wall,
        };
        self.store
            .write(Key::Status(target.clone()), Value::Status(record));
        self.stats.writes += 1;
        self.refresh_answer(target, &mut out);
        self.schedule_push(&mut out);
        out
    }

    /// Add (or change) a target through this node's API; replicated to every node.
    pub fn add_target(
        &mut self,
        now: Now,
        input: TargetInput,
    ) -> Result<Vec<Effect<A>>, SpecError> {
        let spec = input.resolve(&self.config.defaults)?;
        let mut out = Vec::new();
        self.store.write(
            Key::Target(spec.name.clone()),
            Value::Target(TargetEntry::Present(Box::new(input))),
        );
        self.refresh_target(now, &spec.name, &mut out);
        self.schedule_push(&mut out);
        Ok(out)
    }

    /// Delete a target through this node's API; replicated to every node (a tombstone, so a
    /// config-file target stays deleted too).
    pub fn remove_target(
        &mut self,
        now: Now,
        target: &TargetName,
    ) -> Result<Vec<Effect<A>>, ClusterError> {
        if !self.targets.contains_key(target) {
            return Err(ClusterError::NotFound(target.clone()));
        }
        let mut out = Vec::new();
        self.store.write(
            Key::Target(target.clone()),
            Value::Target(TargetEntry::Deleted),
        );
        self.store.remove(&Key::Status(target.clone()));
        self.refresh_target(now, target, &mut out);
        self.schedule_push(&mut out);
        Ok(out)
    }

    /// Leave the cluster gracefully: tell the members, stop checking.
    pub fn leave(&mut self, now: Now) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        let events = self.membership.leave(now);
        self.on_membership(now, events, &mut out);
        for target in self.owned.drain().map(|(t, _)| t) {
            out.push(Effect::Disown { target });
        }
        self.settled = false;
        out
    }

    // ---- queries ----

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// Its replica id.
    pub fn replica_id(&self) -> ReplicaId {
        self.store.id()
    }

    /// The replicated map, read only (its causal context holds the version vector).
    pub fn replicated(&self) -> &ORMap<Key, Value> {
        self.store.map()
    }

    /// What this node answers about `target`.
    pub fn answer(&self, target: &TargetName) -> Option<&Answer> {
        self.answers.get(target)
    }

    /// Every target that exists, with its spec.
    pub fn targets(&self) -> &BTreeMap<TargetName, Arc<TargetSpec>> {
        &self.targets
    }

    /// The targets this node checks.
    pub fn owned(&self) -> impl Iterator<Item = &TargetName> {
        self.owned.keys()
    }

    /// Does this node check `target`?
    pub fn owns(&self, target: &TargetName) -> bool {
        self.owned.contains_key(target)
    }

    /// The owners of `target` in this node's view, best first.
    pub fn owners(&self, target: &TargetName) -> Vec<NodeName> {
        self.owners.owners(target)
    }

    /// The live members (alive or suspect), this node included.
    pub fn live_members(&self) -> impl Iterator<Item = &NodeName> {
        self.owners.live()
    }

    /// Every other member SWIM knows: name, state, incarnation.
    pub fn members(&self) -> impl Iterator<Item = (&str, heck_swim::State, u64)> {
        self.membership.members()
    }

    /// This node's member record first, then every other member SWIM knows, with addresses
    /// (for the agent's member list and to name the member at an address).
    pub fn member_records(&self) -> impl Iterator<Item = &heck_swim::Member<A>> {
        self.membership.records()
    }

    /// The live member (alive or suspect) reached at `addr`, if any: the name a stream
    /// connection to `addr` must prove.
    pub fn live_member_at(&self, addr: &A) -> Option<&str> {
        self.membership
            .records()
            .skip(1)
            .find(|m| {
                m.addr == *addr
                    && matches!(m.state, heck_swim::State::Alive | heck_swim::State::Suspect)
            })
            .map(|m| m.name.as_str())
    }

    /// Owners per target (`[cluster] replicas`).
    pub fn replicas(&self) -> usize {
        self.config.replicas.get()
    }

    /// Has the settle period passed (does this node own targets)?
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Counters of the cluster logic.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counters of membership.
    pub fn swim_stats(&self) -> heck_swim::Stats {
        self.membership.stats()
    }

    /// Counters of anti-entropy, and delta groups waiting for acknowledgements.
    pub fn sync_stats(&self) -> (heck_crdt::Stats, usize) {
        (self.store.stats(), self.store.buffered())
    }

    /// The peer incarnations the CRDT replica exchanges with: the current one of each live
    /// member it has heard from.
    pub fn sync_peers(&self) -> impl Iterator<Item = &Peer> {
        self.store.peers()
    }

    /// The siblings of `target`'s status, in dot order (for a detailed view).
    pub fn siblings(&self, target: &TargetName) -> Vec<StatusRecord> {
        self.store
            .siblings(&Key::Status(target.clone()))
            .into_iter()
            .filter_map(|(_, v)| match v {
                Value::Status(r) => Some(r.clone()),
                Value::Target(_) => None,
            })
            .collect()
    }

    // ---- internals ----

    fn settle(&mut self, now: Now, out: &mut Vec<Effect<A>>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut mine: Vec<TargetName> = self.owned.keys().cloned().collect();
        mine.sort();
        for t in mine {
            self.own(now, &t, out);
        }
    }

    fn own(&mut self, now: Now, target: &TargetName, out: &mut Vec<Effect<A>>) {
        let Some(spec) = self.targets.get(target) else {
            return;
        };
        let record = self.picked(target);
        let status = record
            .as_ref()
            .map_or(Status::Unknown, StatusRecord::status);
        self.owned.insert(
            target.clone(),
            Owned {
                status,
                written: status,
            },
        );
        if self.settled {
            out.push(Effect::Own {
                target: target.clone(),
                state: starting_state(record.as_ref(), now.wall),
                first_due: first_due(spec, now.wall),
            });
        }
    }

    fn disown(&mut self, target: &TargetName, out: &mut Vec<Effect<A>>) {
        if self.owned.remove(target).is_some() && self.settled {
            out.push(Effect::Disown {
                target: target.clone(),
            });
        }
    }

    fn schedule_push(&mut self, out: &mut Vec<Effect<A>>) {
        if !self.push_scheduled {
            self.push_scheduled = true;
            out.push(Effect::Schedule {
                after: self.config.push_delay,
                timer: Timer::Push,
            });
        }
    }

    fn sync_round(&mut self, out: &mut Vec<Effect<A>>) {
        let random = self.rng.next_u64();
        for (to, m) in self.store.tick(random) {
            self.route(to, m, out);
        }
    }

    /// Retire the incarnations replaced for [`RETIRE_AFTER`] (checked every [`RETIRE_CHECK`]).
    ///
    /// Replaced: a replica id in the version vector whose node runs another incarnation now:
    /// this node's own earlier ones (an unclean restart), a peer's replaced one, and a Gone
    /// member's one once the name is back as a new one. A Gone member that stays away keeps
    /// its entry: it may come back under the same id. One node's retirement is enough: it is
    /// a delta every node joins (heck-crdt's `Replica::retire`); the others find nothing left
    /// to retire.
    fn retire_replaced(&mut self, now: Now) {
        if self
            .retire_checked
            .is_some_and(|at| now.mono < at + RETIRE_CHECK)
        {
            return;
        }
        self.retire_checked = Some(now.mono);
        let me = self.store.id();
        let running: HashSet<ReplicaId> = self.current.values().copied().chain([me]).collect();
        let nodes: HashSet<u64> = running.iter().map(|r| r.node).collect();
        let candidates: HashSet<ReplicaId> = self
            .store
            .map()
            .context()
            .vv()
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| {
                !running.contains(r) && (nodes.contains(&r.node) || self.retired.contains(r))
            })
            .collect();
        self.replaced.retain(|r, _| candidates.contains(r));
        for r in candidates {
            let since = *self.replaced.entry(r).or_insert(now.mono);
            if now.mono.saturating_sub(since) < RETIRE_AFTER {
                continue;
            }
            match self.store.retire(r) {
                Ok(_) => {
                    self.stats.epochs_retired += 1;
                    self.replaced.remove(&r);
                }
                // Its dots have gaps here (some still on their way): next time.
                Err(heck_crdt::NotRetirable::Gaps) => {}
                Err(heck_crdt::NotRetirable::Running | heck_crdt::NotRetirable::NotListed) => {
                    self.replaced.remove(&r);
                }
            }
        }
    }

    fn route(&mut self, to: Peer, msg: Message<Key, Value>, out: &mut Vec<Effect<A>>) {
        let addr = (self.current.get(&to.name) == Some(&to.replica))
            .then(|| self.membership.addr_of(to.name.as_str()))
            .flatten();
        match addr {
            Some(addr) => out.push(Effect::Sync {
                to: addr,
                msg: SyncMsg {
                    from: self.me.clone(),
                    body: SyncBody::Crdt(msg),
                },
            }),
            None => self.stats.sync_unroutable += 1,
        }
    }

    fn hello(&mut self, to: &NodeName, out: &mut Vec<Effect<A>>) {
        if let Some(addr) = self.membership.addr_of(to.as_str()) {
            out.push(Effect::Sync {
                to: addr,
                msg: SyncMsg {
                    from: self.me.clone(),
                    body: SyncBody::Hello {
                        replica: self.store.id(),
                    },
                },
            });
        }
    }

    fn on_membership(&mut self, now: Now, events: Vec<Event<A>>, out: &mut Vec<Effect<A>>) {
        for e in events {
            match e {
                Event::Send(to, packet) => out.push(Effect::Swim { to, packet }),
                Event::PushPull(to, join) => out.push(Effect::PushPull { to, join }),
                Event::ClockSkew(from, skew_ms) => out.push(Effect::ClockSkew { from, skew_ms }),
                Event::Schedule(after, t) => out.push(Effect::Schedule {
                    after,
                    timer: Timer::Swim(t),
                }),
                Event::Live(name) => {
                    if name == self.me {
                        continue;
                    }
                    let (moved, mine) = self.owners.join(&name);
                    self.hello(&name, out);
                    self.after_moves(now, moved, mine, out);
                    out.push(Effect::Member {
                        name,
                        event: MemberEvent::Live,
                    });
                }
                Event::Suspect(name) => out.push(Effect::Member {
                    name,
                    event: MemberEvent::Suspect,
                }),
                Event::Gone(name) => {
                    // Its incarnation stops being a peer (C2). Not retired: a member that
                    // refutes its death comes back with the same replica id, and its next
                    // hello or delta makes it a peer again.
                    if let Some(replica) = self.current.remove(&name) {
                        self.store.remove_peer(&Peer {
                            name: name.clone(),
                            replica,
                        });
                    }
                    let (moved, mine) = self.owners.leave(&name);
                    self.after_moves(now, moved, mine, out);
                    out.push(Effect::Member {
                        name,
                        event: MemberEvent::Gone,
                    });
                }
            }
        }
    }

    fn after_moves(
        &mut self,
        now: Now,
        moved: Vec<TargetName>,
        mine: Vec<Change>,
        out: &mut Vec<Effect<A>>,
    ) {
        for c in mine {
            match c {
                Change::Gained(t) => self.own(now, &t, out),
                Change::Lost(t) => self.disown(&t, out),
            }
        }
        for t in moved {
            self.refresh_answer(&t, out);
        }
    }

    /// The record the answer rule picks for `target` now.
    fn picked(&self, target: &TargetName) -> Option<StatusRecord> {
        let owners = self.owners.owners(target);
        let siblings = self.store.siblings(&Key::Status(target.clone()));
        let records = siblings.iter().filter_map(|(d, v)| match v {
            Value::Status(r) => Some((*d, r)),
            Value::Target(_) => None,
        });
        pick(records, &owners).map(|p| p.record.clone())
    }

    /// Recompute `target`'s answer; report a change of status or contested flag.
    fn refresh_answer(&mut self, target: &TargetName, out: &mut Vec<Effect<A>>) -> Option<Answer> {
        if !self.targets.contains_key(target) {
            return None;
        }
        let owners = self.owners.owners(target);
        let siblings = self.store.siblings(&Key::Status(target.clone()));
        let records = siblings.iter().filter_map(|(d, v)| match v {
            Value::Status(r) => Some((*d, r)),
            Value::Target(_) => None,
        });
        let answer = Answer::new(pick(records, &owners), &owners);
        let old = self.answers.insert(target.clone(), answer.clone());
        let changed = old
            .as_ref()
            .is_none_or(|o| o.status != answer.status || o.contested != answer.contested);
        if changed && old.is_some() {
            out.push(Effect::Changed {
                target: target.clone(),
                answer: answer.clone(),
            });
        }
        Some(answer)
    }

    fn on_changed(&mut self, now: Now, changed: Changed, out: &mut Vec<Effect<A>>) {
        let keys: Vec<Key> = match changed {
            Changed::Nothing => return,
            Changed::Keys(k) => k,
            Changed::All => {
                let mut names: Vec<TargetName> = self
                    .store
                    .keys()
                    .filter_map(|k| match k {
                        Key::Target(t) => Some(t.clone()),
                        Key::Status(_) => None,
                    })
                    .collect();
                names.sort();
                names.dedup();
                let mut keys: Vec<Key> = names.into_iter().map(Key::Target).collect();
                keys.extend(self.targets.keys().cloned().map(Key::Status));
                keys
            }
        };
        for k in keys {
            match k {
                Key::Target(t) => self.refresh_target(now, &t, out),
                Key::Status(t) => self.on_status_news(now, &t, out),
            }
        }
    }

    /// Another node's record for `target` arrived. If this node checks it and the answer now
    /// rests on a newer record of someone else that disagrees with its check, continue from that
    /// record (a stale starting state would otherwise flap the answer back).
    fn on_status_news(&mut self, now: Now, target: &TargetName, out: &mut Vec<Effect<A>>) {
        let Some(answer) = self.refresh_answer(target, out) else {
            return;
        };
        let Some(owned) = self.owned.get(target).copied() else {
            return;
        };
        let theirs = answer.observer.as_ref().is_some_and(|o| *o != self.me);
        if !(self.settled && theirs && !answer.contested && answer.status != owned.status) {
            return;
        }
        let Some(record) = self.picked(target) else {
            return;
        };
        let Some(spec) = self.targets.get(target) else {
            return;
        };
        self.owned.insert(
            target.clone(),
            Owned {
                status: answer.status,
                written: answer.status,
            },
        );
        self.stats.reseeds += 1;
        out.push(Effect::Own {
            target: target.clone(),
            state: record.check,
            first_due: first_due(spec, now.wall),
        });
    }

    /// Re-derive whether `target` exists (and its spec) from the config file and the replicated
    /// entries: no entry → the config file decides; any `Present` sibling → present (the one
    /// with the largest dot gives the spec); only `Deleted` → gone.
    fn refresh_target(&mut self, now: Now, target: &TargetName, out: &mut Vec<Effect<A>>) {
        let entries = self.store.siblings(&Key::Target(target.clone()));
        let desired = if entries.is_empty() {
            self.config_targets.get(target).cloned()
        } else {
            let input = entries.iter().rev().find_map(|(_, v)| match v {
                Value::Target(TargetEntry::Present(i)) => Some(i),
                _ => None,
            });
            match input.map(|i| i.resolve(&self.config.defaults)) {
                Some(Ok(spec)) if spec.name == *target => Some(Arc::new(spec)),
                Some(_) => {
                    self.stats.bad_target_specs += 1;
                    None
                }
                None => None,
            }
        };
        match desired {
            Some(spec) => {
                if self.targets.get(target) != Some(&spec) {
                    out.push(Effect::TargetUpdated {
                        spec: TargetSpec::clone(&spec),
                    });
                    self.upsert_target(now, spec, out);
                }
            }
            None => {
                if self.targets.remove(target).is_some() {
                    self.owners.remove_target(target);
                    self.answers.remove(target);
                    self.disown(target, out);
                    out.push(Effect::TargetRemoved {
                        target: target.clone(),
                    });
                }
            }
        }
    }

    fn upsert_target(&mut self, now: Now, spec: Arc<TargetSpec>, out: &mut Vec<Effect<A>>) {
        let name = spec.name.clone();
        let new = self.targets.insert(name.clone(), spec).is_none();
        if new {
            let mine = self.owners.add_target(&name);
            self.refresh_answer(&name, out);
            if mine {
                self.own(now, &name, out);
            }
        }
    }
}
