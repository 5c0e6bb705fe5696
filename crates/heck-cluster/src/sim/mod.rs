//! The whole node as a [`heck_sim::Process`]: the same [`Cluster`] the agent drives, plus what
//! heck-node does around it (timers, a check schedule on the phase grid, one [`CheckState`] per
//! owned target), with **virtual checks**: a check's outcome is a scripted [`Truth`] per target
//! over time, so a test knows what every node should answer.
//!
//! ```text
//!  tick(now) ─> start (once) ─> due timers ─> Cluster::handle_timer
//!            ─> due checks ─> truth.up(target, now) ─> CheckState::observe ─> Cluster::handle_check
//!  message  ─> Msg::Swim ─> Cluster::handle_swim     Msg::Sync ─> Cluster::handle_sync
//!           ─> Msg::PushPull ─> (a request: reply with push_pull_state first) handle_push_pull
//!  effects  ─> Swim/Sync: send;  PushPull: send push_pull_state as a request;
//!              Schedule: timer heap;  Own/Disown: check schedule;
//!              Changed: remember when this node's answer changed (for visibility times)
//! ```
//!
//! Time: the simulator's clock is both of [`Now`]'s clocks ([`at`]): time since the driver
//! started and "time since the Unix epoch", so phase slots and `observed_at` are simulated
//! wall-clock instants and every node's wall clock agrees.
//!
//! Push-pull travels over the simulated network as two messages (request, then reply), subject
//! to the same loss and partitions as datagrams: a pessimistic model of the agent's stream, as
//! in heck-swim's own simulator driver.
pub mod invariants;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, Defaults, Status, TargetInput, TargetName, TargetSpec};
use heck_sim::{NodeId, Outbox, Process};
use heck_swim::{Now, Packet, PushPullState};

use crate::adapter::check::key_hash;
use crate::cluster::{Cluster, Config, Effect, Identity, SyncMsg, Timer, encode};
use crate::snapshot::Restored;
use heck_check::NodeName;

/// A message between simulated nodes: SWIM's datagrams and the sync channel's messages.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A SWIM packet (UDP in the agent).
    Swim(Packet<NodeId>),
    /// A sync message (the stream transport in the agent).
    Sync(SyncMsg),
    /// One side of a SWIM push-pull exchange (the stream transport in the agent).
    PushPull {
        /// The sender's member list.
        state: PushPullState<NodeId>,
        /// Part of a join.
        join: bool,
        /// The answer to a request (not to be answered again).
        reply: bool,
    },
}

/// Both clocks at simulated time `now`.
pub fn at(now: Duration) -> Now {
    Now {
        mono: now,
        wall: now,
    }
}

/// What each target really is, over time: up unless scripted otherwise.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    flips: HashMap<TargetName, Vec<(Duration, bool)>>,
}

impl Truth {
    /// Every target up, always.
    pub fn new() -> Truth {
        Truth::default()
    }

    /// From `at` on, `target` is up (or down). Call in time order per target.
    pub fn set(&mut self, target: &TargetName, at: Duration, up: bool) {
        self.flips.entry(target.clone()).or_default().push((at, up));
    }

    /// Is `target` up at `at`?
    pub fn up(&self, target: &TargetName, at: Duration) -> bool {
        self.flips
            .get(target)
            .and_then(|f| f.iter().rev().find(|(t, _)| *t <= at))
            .is_none_or(|&(_, up)| up)
    }

    /// The status a correct checker settles on: healthy if up, unhealthy if down.
    pub fn status(&self, target: &TargetName, at: Duration) -> Status {
        if self.up(target, at) {
            Status::Healthy
        } else {
            Status::Unhealthy
        }
    }

    /// When `target`'s truth last changed at or before `at` (zero if never).
    pub fn changed_at(&self, target: &TargetName, at: Duration) -> Duration {
        self.flips
            .get(target)
            .and_then(|f| f.iter().rev().find(|(t, _)| *t <= at))
            .map_or(Duration::ZERO, |&(t, _)| t)
    }
}

/// `n` targets `t0..t{n-1}` checked every `interval` with rise/fall thresholds.
pub fn targets(n: usize, interval: Duration, rise: u32, fall: u32) -> Vec<TargetSpec> {
    let defaults = Defaults::default();
    (0..n)
        .filter_map(|i| {
            let input = TargetInput {
                name: format!("t{i}"),
                url: format!(
                    "http://10.{}.{}.{}/health",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                ),
                interval: Some(heck_check::HumanDuration(interval)),
                timeout: Some(heck_check::HumanDuration(interval / 4)),
                rise: Some(rise),
                fall: Some(fall),
                ..TargetInput::default()
            };
            input.resolve(&defaults).ok()
        })
        .collect()
}

/// The name of simulated node `id`.
pub fn node_name(id: NodeId) -> NodeName {
    // "n{id}" is never empty, short and has no control characters.
    NodeName::new(format!("n{id}")).unwrap_or_else(|_| unreachable!())
}

/// What survives a simulated crash: each node's snapshot file (its `--data-dir`), shared by
/// every incarnation the simulator's factory makes.
#[derive(Debug, Clone, Default)]
pub struct Disk(Rc<RefCell<HashMap<NodeId, Vec<u8>>>>);

impl Disk {
    /// No files.
    pub fn new() -> Disk {
        Disk::default()
    }

    /// Node `id`'s snapshot file, if it wrote one.
    pub fn read(&self, id: NodeId) -> Option<Vec<u8>> {
        self.0.borrow().get(&id).cloned()
    }

    /// Replace node `id`'s snapshot file (atomically, as heck-node's `write_snapshot` does).
    pub fn write(&self, id: NodeId, bytes: Vec<u8>) {
        self.0.borrow_mut().insert(id, bytes);
    }
}

/// One simulated heck agent.
#[derive(Debug)]
pub struct SimNode {
    /// The decision core, exactly as the agent runs it.
    pub cluster: Cluster<NodeId>,
    /// Who it is (kept to restore from its snapshot).
    identity: Identity<NodeId>,
    /// Its data dir, and how often it writes a periodic (unclean) snapshot there, if at all.
    disk: Option<(Disk, Option<Duration>)>,
    next_save: Duration,
    /// Shut down gracefully: it neither acts nor listens any more (the simulator crashes it
    /// next, which is how a stopped process leaves the simulation).
    stopped: bool,
    /// What the restore at its start did with the replica id (`None`: it started empty).
    pub restored: Option<Restored>,
    timers: BinaryHeap<Reverse<(Duration, u64, Timer)>>,
    seq: u64,
    seeds: Vec<NodeId>,
    started: bool,
    schedule: heck_sched::Schedule<TargetName>,
    checks: HashMap<TargetName, CheckState>,
    truth: Rc<Truth>,
    /// Every check this node ran: (time, target).
    pub check_log: Vec<(Duration, TargetName)>,
    /// When this node's answer for a target last changed status, and to what.
    pub last_change: HashMap<TargetName, (Duration, Status)>,
    /// Effects of API calls made between steps, run on the next tick.
    pending: Vec<Effect<NodeId>>,
}

impl SimNode {
    /// Node `id` (restarted `restarts` times) with the config file's `targets`, joining
    /// through `seeds`.
    pub fn new(
        id: NodeId,
        restarts: u32,
        config: Config,
        targets: Vec<TargetSpec>,
        seeds: Vec<NodeId>,
        truth: Rc<Truth>,
        seed: u64,
    ) -> SimNode {
        let identity = Identity {
            name: node_name(id),
            addr: id,
            // A restarted node is newer than anything its previous life said.
            incarnation: u64::from(restarts) << 32,
            // Random, as review C4 suggests for the agent: epochs need only differ.
            epoch: heck_sim::SplitMix64::new(seed ^ ((id as u64) << 32) ^ u64::from(restarts))
                .next_u64(),
            seed: seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(restarts),
        };
        let cluster = match Cluster::new(config, identity.clone(), targets) {
            Ok(c) => c,
            Err(e) => panic!("simulated config is valid: {e}"),
        };
        SimNode {
            cluster,
            identity,
            disk: None,
            next_save: Duration::ZERO,
            stopped: false,
            restored: None,
            timers: BinaryHeap::new(),
            seq: 0,
            seeds: seeds.into_iter().filter(|&s| s != id).collect(),
            started: false,
            schedule: heck_sched::Schedule::new(),
            checks: HashMap::new(),
            truth,
            check_log: Vec::new(),
            last_change: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Give the node a data dir on `disk`: if its snapshot is there, restart from it (with
    /// `config` and the config file's `targets`, as [`new`](Self::new) was given) and at once
    /// replace it with an unclean one, as heck-node does (a clean snapshot is good once). With
    /// `every`, write a periodic unclean snapshot that often. Panics on a refused snapshot: in
    /// the simulator that is a bug.
    pub fn with_disk(
        mut self,
        disk: Disk,
        every: Option<Duration>,
        config: Config,
        targets: Vec<TargetSpec>,
    ) -> SimNode {
        let id = self.identity.addr;
        if let Some(bytes) = disk.read(id) {
            match Cluster::restore(config, self.identity.clone(), targets, &bytes) {
                Ok((cluster, restored)) => {
                    self.cluster = cluster;
                    self.restored = Some(restored);
                    disk.write(id, self.cluster.snapshot(false));
                }
                Err(e) => panic!("node {id}'s snapshot is refused: {e}"),
            }
        }
        self.disk = Some((disk, every));
        self
    }

    /// Write a snapshot to the node's disk (`clean` only when it writes nothing afterwards).
    pub fn save(&self, clean: bool) {
        if let Some((disk, _)) = &self.disk {
            disk.write(self.identity.addr, self.cluster.snapshot(clean));
        }
    }

    /// Shut down gracefully at `now`, as the agent does on SIGTERM: leave the cluster (the
    /// leave goes out on the next tick), write the final, clean snapshot, and from then on
    /// neither act nor listen. Crash the node afterwards to take it out of the simulation.
    pub fn shutdown(&mut self, now: Duration) {
        let fx = self.cluster.leave(at(now));
        self.inject(fx);
        self.save(true);
        self.stopped = true;
    }

    /// The targets this node is checking now.
    pub fn checking(&self) -> impl Iterator<Item = &TargetName> {
        self.checks.keys()
    }

    /// Effects of an API call (`add_target`, `remove_target`) made between simulation steps:
    /// run on the next tick, as the agent's API task hands them to the node.
    pub fn inject(&mut self, effects: Vec<Effect<NodeId>>) {
        self.pending.extend(effects);
    }

    /// Run `effects` at `now`: what heck-node does with them.
    pub fn run(&mut self, now: Duration, effects: Vec<Effect<NodeId>>, out: &mut Outbox<Msg>) {
        for e in effects {
            match e {
                Effect::Swim { to, packet } => out.send(to, Msg::Swim(packet)),
                Effect::Sync { to, msg } => out.send(to, Msg::Sync(msg)),
                Effect::PushPull { to, join } => out.send(
                    to,
                    Msg::PushPull {
                        state: self.cluster.push_pull_state(),
                        join,
                        reply: false,
                    },
                ),
                Effect::Schedule { after, timer } => {
                    self.seq += 1;
                    self.timers.push(Reverse((now + after, self.seq, timer)));
                }
                Effect::Own {
                    target,
                    state,
                    first_due,
                } => {
                    if self.checks.insert(target.clone(), state).is_none() {
                        self.schedule.insert_at(target, first_due);
                    }
                }
                Effect::Disown { target } => {
                    self.checks.remove(&target);
                    self.schedule.remove(&target);
                }
                Effect::Changed { target, answer } => {
                    self.last_change.insert(target, (now, answer.status));
                }
                Effect::TargetUpdated { .. }
                | Effect::TargetRemoved { .. }
                | Effect::Member { .. }
                | Effect::ClockSkew { .. } => {}
            }
        }
    }

    fn check_due(&mut self, now: Duration, out: &mut Outbox<Msg>) {
        for (target, due) in self.schedule.pop_due(now, usize::MAX) {
            let Some(spec) = self.cluster.targets().get(&target) else {
                continue;
            };
            let (thresholds, spec) = (spec.thresholds, spec.clone());
            let Some(state) = self.checks.get_mut(&target) else {
                continue;
            };
            let up = self.truth.up(&target, now);
            let transition = state.observe(up, SystemTime::UNIX_EPOCH + now, thresholds);
            let (state, failing) = (state.clone(), state.is_failing());
            self.check_log.push((now, target.clone()));
            // As the agent's shards do: only a check that may change something is reported.
            let answer = self
                .cluster
                .answer(&target)
                .map(|a| (a.status, a.contested));
            if crate::report_check(transition.is_some(), answer, &state) {
                let fx = self.cluster.handle_check(at(now), &target, &state);
                self.run(now, fx, out);
            }
            if self.checks.contains_key(&target) {
                let interval = spec.next_interval(failing);
                self.schedule
                    .reschedule(target.clone(), key_hash(&target), due, interval, now);
            }
        }
    }
}

impl Process for SimNode {
    type Msg = Msg;

    fn on_message(&mut self, now: Duration, from: NodeId, msg: Msg, out: &mut Outbox<Msg>) {
        if self.stopped {
            return;
        }
        let fx = match msg {
            Msg::Swim(p) => self.cluster.handle_swim(at(now), p),
            Msg::Sync(m) => self.cluster.handle_sync(at(now), m),
            Msg::PushPull { state, join, reply } => {
                if !reply {
                    // Answer with our list as it was before the merge, as the agent does.
                    let mine = self.cluster.push_pull_state();
                    out.send(
                        from,
                        Msg::PushPull {
                            state: mine,
                            join,
                            reply: true,
                        },
                    );
                }
                self.cluster.handle_push_pull(at(now), state, join)
            }
        };
        self.run(now, fx, out);
    }

    fn on_tick(&mut self, now: Duration, _random: u64, out: &mut Outbox<Msg>) {
        if !self.started {
            self.started = true;
            let fx = self.cluster.start(at(now), self.seeds.clone());
            self.run(now, fx, out);
        }
        let pending = std::mem::take(&mut self.pending);
        self.run(now, pending, out);
        if self.stopped {
            return;
        }
        if let Some((_, Some(every))) = &self.disk
            && now >= self.next_save
        {
            self.next_save = now + *every;
            self.save(false);
        }
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            let fx = self.cluster.handle_timer(at(now), timer);
            self.run(now, fx, out);
        }
        self.check_due(now, out);
    }

    fn wire_size(msg: &Msg) -> usize {
        match msg {
            Msg::Swim(p) => {
                postcard::to_allocvec(p).map_or(0, |v| v.len()) + heck_swim::wire::OVERHEAD
            }
            // A length prefix and an AEAD tag and nonce on the stream, roughly.
            Msg::Sync(m) => encode(m).len() + 4 + 40,
            Msg::PushPull { state, .. } => {
                postcard::to_allocvec(state).map_or(0, |v| v.len()) + 4 + 40
            }
        }
    }
}
