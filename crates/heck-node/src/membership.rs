//! The cluster driver: one task owns a [`heck_cluster::Cluster`] (SWIM membership, ownership,
//! the replicated status store) and its sockets, seals and opens packets with the key ring,
//! delivers timers, and carries the cluster's effects to the check shards, the registry and the
//! event stream.
//!
//! ```text
//!   select (biased): shutdown → leave, flush, final snapshot, stop
//!                    earliest timer due → cluster.handle_timer (SWIM, sync round, push, settle)
//!                    every second: counters; every 10 s: a snapshot (--data-dir; one write at
//!                    a time, on a blocking thread); a snapshot write ended → count it
//!                    (these come before the sockets: under load those are always ready)
//!                    datagram → open (drop + count if bad) → cluster.handle_swim
//!                    a push-pull we started ended → cluster.handle_push_pull (its reply)
//!                    stream frame: push-pull request → reply push_pull_state, then merge
//!                                  sync message (CRDT) → decode, sender = handshake? → handle_sync
//!                    node input: a check of an owned target that may change something
//!                                (`heck_cluster::report_check`) → cluster.handle_check
//!                                an API add/delete → cluster.add_target / remove_target
//!   effects: Swim → seal with a fresh 24-byte nonce → send_to;  Schedule → timer heap
//!            PushPull → spawn the exchange (bounded, see `push_pull`);  Sync → stream send
//!            Own/Disown → the target's shard;  TargetUpdated/Removed → registry
//!            Changed → the registry's answer, and an event with its observer
//! ```
//! The stream transport (`heck_stream`, TCP) listens on the same address and port as the UDP
//! socket, as memberlist does; push-pull and the CRDT sync messages ride on it. Nothing in this
//! loop waits on a stream: exchanges run in their own tasks and report back, sends are queued.
//!
//! The decisions are all the cluster's (`heck-cluster`, pure, also run by the simulator); this
//! module only moves bytes, time and effects. The `Cluster` sits behind a mutex that this task
//! alone writes; the API reads answers through it. Lock order: registry, then cluster (the API
//! lists under the registry lock and looks each answer up); this task never holds the cluster
//! lock while it takes the registry's, and check threads never take the cluster's lock (they
//! read the registry's copy of the answer).
//!
//! The gossip address is where the sockets are bound; the advertised address is what this
//! node tells others (in SWIM and in stream handshakes). Binding `0.0.0.0` needs an explicit
//! advertised address (`heck_stream::advertise_addr`).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, NodeName, TargetInput, TargetName};
use heck_cluster::{Cluster, ClusterError, Effect, Identity, MemberEvent, Timer};
use heck_swim::{Keyring, Now, Packet, State, wire};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod persist;
pub mod push_pull;
mod view;

pub use persist::{Persist, PersistCounts, SNAPSHOT_EVERY, open_cluster};
use push_pull::PushPulls;
pub use push_pull::{PushPullCounts, PushPullStats};
use view::state_name;
pub use view::{ClusterCounts, MemberView, MembershipView, TransportStats};

/// Settings of the membership layer.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's stable name.
    pub node_name: NodeName,
    /// Address the UDP gossip socket and the TCP stream listener are bound to (may be
    /// `0.0.0.0`).
    pub gossip_addr: SocketAddr,
    /// Address other members reach this one at (never unspecified): what SWIM and the stream
    /// handshake advertise.
    pub advertise_addr: SocketAddr,
    /// Seeds to join through.
    pub join: Vec<SocketAddr>,
    /// The cluster's parameters: SWIM's (`lan` or `fast`), the sync rounds, `replicas`,
    /// weights, and the `[defaults]` that targets added through the API resolve with.
    pub cluster: heck_cluster::Config,
    /// The key ring (the cluster name is its associated data).
    pub keyring: Keyring,
    /// `--data-dir`: where the replicated state is snapshotted (see [`open_cluster`]).
    pub data_dir: Option<std::path::PathBuf>,
}

/// The cluster a node runs, shared by its driver (the only writer) and the API (readers).
pub type SharedCluster = Arc<Mutex<Cluster<SocketAddr>>>;

/// Lock the cluster. A poisoned lock means a panic mid-call; the pure core's state is still
/// a consistent value between calls, so keep serving.
pub fn lock(cluster: &SharedCluster) -> MutexGuard<'_, Cluster<SocketAddr>> {
    cluster.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who this node is, at this start. The SWIM incarnation is the start time in milliseconds
/// (above any this name used before, so a restarted node is newer than its own death); the CRDT
/// epoch is 64 random bits (a restarted node never reuses a dot, unless a clean snapshot lets it
/// keep its replica id: see [`open_cluster`]).
fn identity(config: &MembershipConfig) -> Identity<SocketAddr> {
    let incarnation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let seed = getrandom::u64().unwrap_or(incarnation);
    let epoch = getrandom::u64().unwrap_or(seed ^ incarnation);
    Identity {
        name: config.node_name.clone(),
        addr: config.advertise_addr,
        incarnation,
        epoch,
        seed,
    }
}

/// Build this node's cluster core from its config and the config file's targets, without a
/// data dir.
pub fn new_cluster(
    config: &MembershipConfig,
    targets: Vec<heck_check::TargetSpec>,
) -> Result<Cluster<SocketAddr>, ClusterError> {
    Cluster::new(config.cluster.clone(), identity(config), targets)
}

/// What the rest of the agent asks of the cluster driver.
#[derive(Debug)]
pub(crate) enum Input {
    /// An owned target was checked; `state` is its check state after the result.
    Check {
        target: TargetName,
        state: CheckState,
        at: Duration,
    },
    /// `POST /v1/targets`: add (or change) a target everywhere.
    Add {
        input: TargetInput,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `DELETE /v1/targets/{name}`: delete it everywhere.
    Remove {
        target: TargetName,
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
}

/// Check results queued for the driver at most: a shard's result never waits for it. At
/// 100,000 targets every 10 s that is close to a second of results.
pub(crate) const INPUT_QUEUE: usize = 8192;

/// How often the published counters are refreshed.
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// The sockets of one member: UDP for SWIM, TCP for the stream transport, on one port.
#[derive(Debug)]
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    /// The address both are bound to (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Bind the gossip sockets (so a bad address fails before anything starts): UDP first, then
/// TCP on the port UDP got (so port 0 works in tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    Ok(Sockets { udp, tcp })
}

/// Both clocks the state machine reads: monotonic since `start`, wall since the Unix epoch.
fn clock(start: Instant) -> Now {
    Now {
        mono: Instant::now() - start,
        wall: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

/// Run membership alone (a cluster with no targets) until `shutdown`; then leave gracefully.
/// The agent runs [`run_node`]; this is the same loop without a node around it.
pub async fn run(
    config: MembershipConfig,
    sockets: Sockets,
    view: Arc<MembershipView>,
    shutdown: CancellationToken,
) {
    let cluster = match new_cluster(&config, Vec::new()) {
        Ok(c) => Arc::new(Mutex::new(c)),
        Err(e) => {
            tracing::error!(%e, "membership not started");
            return;
        }
    };
    let (_inputs, rx) = mpsc::channel(1);
    let wiring = Wiring {
        cluster,
        node: None,
        persist: None,
        inputs: rx,
    };
    run_node(config, sockets, view, wiring, shutdown).await;
}

/// What the cluster driver is wired to.
pub(crate) struct Wiring {
    /// The core, shared with the API (which only reads it).
    pub(crate) cluster: SharedCluster,
    /// The agent around it: receives the effects on targets (none when membership runs alone).
    pub(crate) node: Option<Arc<crate::Shared>>,
    /// The data dir, if any.
    pub(crate) persist: Option<Persist>,
    /// Check results and API requests.
    pub(crate) inputs: mpsc::Receiver<Input>,
}

/// Run the cluster driver until `shutdown`; then leave gracefully (and write the final
/// snapshot).
pub(crate) async fn run_node(
    config: MembershipConfig,
    sockets: Sockets,
    view: Arc<MembershipView>,
    wiring: Wiring,
    shutdown: CancellationToken,
) {
    let Wiring {
        cluster,
        node,
        persist,
        inputs,
    } = wiring;
    if persist.is_some()
        && let Ok(mut p) = view.persist.lock()
    {
        *p = Some(PersistCounts::default());
    }
    let stream = heck_stream::Stream::start(
        heck_stream::Config::new(config.node_name.to_string(), config.advertise_addr),
        config.keyring.clone(),
        sockets.tcp,
        shutdown.clone(),
    );
    // Without the stream, SWIM still runs over UDP: joins learn a sample of members per join
    // reply, there is no anti-entropy (push-pulls are counted as failed) and no replicated
    // status (sync messages are counted as unsent).
    let (stream, push_pulls, incoming) = match stream {
        Ok((stream, incoming)) => {
            if let Ok(mut s) = view.stream.lock() {
                *s = Some(stream.clone());
            }
            (
                Some(stream.clone()),
                Some(PushPulls::new(stream)),
                Some(incoming),
            )
        }
        Err(e) => {
            tracing::error!(%e, "stream transport not started: no push-pull, no replication");
            (None, None, None)
        }
    };
    let mut driver = Driver {
        cluster,
        node,
        socket: sockets.udp,
        keyring: config.keyring,
        view,
        timers: BinaryHeap::new(),
        seq: 0,
        start: Instant::now(),
        push_pulls,
        stream,
        persist,
        writing: None,
    };
    driver.run(config.join, incoming, inputs, shutdown).await;
}

/// The one task that owns the cluster core and everything it drives.
struct Driver {
    /// The decisions; written only here.
    cluster: SharedCluster,
    /// The agent around the cluster: registry, shards, events, metrics. `None` when
    /// membership runs alone.
    node: Option<Arc<crate::Shared>>,
    /// The UDP gossip socket (SWIM's probes, acks, joins and gossip).
    socket: UdpSocket,
    /// Seals and opens datagrams (the stream has its own copy).
    keyring: Keyring,
    /// What the API reads: refreshed after every batch of effects.
    view: Arc<MembershipView>,
    /// Pending timers, earliest first; `seq` breaks ties in scheduling order.
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: u64,
    /// The origin of the monotonic clock.
    start: Instant,
    /// Push-pulls this node started; `None` if the stream transport did not start.
    push_pulls: Option<PushPulls>,
    /// The stream transport, for sync messages.
    stream: Option<heck_stream::Stream>,
    /// The data dir, if any.
    persist: Option<Persist>,
    /// A snapshot being written (on a blocking thread), and its hash; one at a time.
    writing: Option<(tokio::task::JoinHandle<std::io::Result<usize>>, u64)>,
}

impl Driver {
    fn cluster(&self) -> MutexGuard<'_, Cluster<SocketAddr>> {
        lock(&self.cluster)
    }

    async fn run(
        &mut self,
        seeds: Vec<SocketAddr>,
        mut incoming: Option<heck_stream::Incoming>,
        mut inputs: mpsc::Receiver<Input>,
        shutdown: CancellationToken,
    ) {
        let mut buf = vec![0u8; wire::MAX_PACKET + 1];
        let effects = self.cluster().start(clock(self.start), seeds);
        self.apply(effects).await;
        let mut counts = tokio::time::interval(COUNTS_EVERY);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshots = tokio::time::interval(SNAPSHOT_EVERY);
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.timers.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let effects = self.cluster().leave(clock(self.start));
                    self.apply(effects).await;
                    self.final_snapshot().await;
                    return;
                }
                _ = async { if let Some(at) = next { tokio::time::sleep_until(at).await } }, if next.is_some() => {
                    self.fire_due_timers().await;
                }
                // The periodic work comes before the sockets and queues: under load those are
                // always ready, and a biased select would never reach it (v2-bench at 100,000
                // targets read no counters and would have written no snapshot).
                _ = counts.tick() => self.publish_counts(),
                _ = snapshots.tick(), if self.persist.is_some() => self.snapshot(),
                written = async { match self.writing.as_mut() {
                    Some((handle, _)) => handle.await,
                    None => std::future::pending().await,
                } } => {
                    if let Some((_, hash)) = self.writing.take() {
                        self.snapshot_written(hash, written);
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    self.on_datagram(&buf[..n], from).await;
                }
                Some(outcome) = async { match self.push_pulls.as_mut() {
                    Some(p) => p.next().await,
                    None => std::future::pending().await,
                } } => {
                    self.on_push_pull_outcome(outcome).await;
                }
                frame = async { match incoming.as_mut() {
                    Some(i) => i.recv().await,
                    None => std::future::pending().await,
                } } => match frame {
                    Some(frame) => self.on_stream_frame(frame).await,
                    // The transport shut down (only with `shutdown`, handled above).
                    None => incoming = None,
                },
                Some(input) = inputs.recv() => self.on_input(input).await,
            }
        }
    }

    /// Deliver every due timer, in order.
    async fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            if let Some(Reverse((_, _, t))) = self.timers.pop() {
                due.push(t);
            }
        }
        for t in due {
            let effects = self.cluster().handle_timer(clock(self.start), t);
            self.apply(effects).await;
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let stats = &self.view.stats;
        stats.swim_received.fetch_add(1, Ordering::Relaxed);
        stats
            .swim_received_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match self.keyring.open::<Packet<SocketAddr>>(bytes) {
            Ok(packet) => {
                let effects = self.cluster().handle_swim(clock(self.start), packet);
                self.apply(effects).await;
            }
            Err(e) => {
                stats.dropped_bad.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, %e, "dropped a gossip packet");
            }
        }
    }

    /// A peer's frame: a push-pull request, or a sync message.
    async fn on_stream_frame(&mut self, frame: heck_stream::Inbound) {
        match frame.channel {
            heck_stream::Channel::PushPull => self.on_push_pull_request(frame).await,
            heck_stream::Channel::Crdt => self.on_sync(frame).await,
        }
    }

    /// A sync message: decoded (bounded, never panics), and accepted only from the node the
    /// stream's handshake proved.
    async fn on_sync(&mut self, frame: heck_stream::Inbound) {
        let unhandled = &self.view.stats.stream_unhandled;
        let msg = match heck_cluster::decode(&frame.bytes) {
            Ok(m) => m,
            Err(e) => {
                unhandled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %frame.from.name, %e, "sync message dropped");
                return;
            }
        };
        if msg.from.as_str() != frame.from.name {
            unhandled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %frame.from.name, claimed = %msg.from, "sync message from the wrong sender dropped");
            return;
        }
        let effects = self.cluster().handle_sync(clock(self.start), msg);
        self.apply(effects).await;
    }

    /// A push-pull request is answered with our state as it was *before* its state is merged
    /// (memberlist's order: both sides then hold the union, and our reply does not echo its own
    /// news back), then merged.
    async fn on_push_pull_request(&mut self, frame: heck_stream::Inbound) {
        let stats = &self.view.push_pull;
        let Some(reply) = frame.reply else {
            // A push-pull is always a request: a one-way frame is a peer's bug.
            stats.refused(push_pull::Refused::Malformed);
            return;
        };
        let request = match push_pull::decode_request(&frame.bytes, &frame.from.name) {
            Ok(r) => r,
            Err(why) => {
                stats.refused(why);
                tracing::debug!(peer = %frame.from.name, %why, "push-pull request dropped");
                return;
            }
        };
        let state = self.cluster().push_pull_state();
        match postcard::to_allocvec(&state) {
            Ok(bytes) => {
                if let Err(e) = reply.send(bytes) {
                    stats.reply_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %frame.from.name, %e, "push-pull reply not sent");
                }
            }
            Err(_) => {
                stats.reply_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.served.fetch_add(1, Ordering::Relaxed);
        let effects =
            self.cluster()
                .handle_push_pull(clock(self.start), request.state, request.join);
        self.apply(effects).await;
    }

    async fn on_push_pull_outcome(&mut self, outcome: push_pull::Outcome) {
        let stats = &self.view.push_pull;
        match outcome.result {
            Ok(state) => {
                stats.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %state.from, members = state.members.len(), join = outcome.join, "push-pull");
                let effects =
                    self.cluster()
                        .handle_push_pull(clock(self.start), state, outcome.join);
                self.apply(effects).await;
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if let push_pull::Failure::Refused(why) = e {
                    stats.refused(why);
                }
                // A join to a seed that is not up yet fails every announce: debug, not warn.
                tracing::debug!(to = %outcome.to, join = outcome.join, %e, "push-pull failed");
            }
        }
    }

    /// A check result or an API request.
    async fn on_input(&mut self, input: Input) {
        let now = clock(self.start);
        match input {
            Input::Check { target, state, at } => {
                // `observed_at` is when the check ran, not when this task got to it.
                let now = Now { wall: at, ..now };
                let effects = self.cluster().handle_check(now, &target, &state);
                self.apply(effects).await;
            }
            Input::Add { input, reply } => {
                let result = self.cluster().add_target(now, input);
                match result {
                    Ok(effects) => {
                        self.apply(effects).await;
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Input::Remove { target, reply } => {
                let result = self.cluster().remove_target(now, &target);
                match result {
                    Ok(effects) => {
                        self.apply(effects).await;
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Start the exchange `Effect::PushPull` asks for, without waiting for it.
    fn push_pull(&mut self, to: SocketAddr, join: bool) {
        let stats = &self.view.push_pull;
        if self.push_pulls.is_none() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A periodic partner is an alive member: its name is known, and the handshake checks
        // it. A seed is an address only, and whoever answers there is the one to join through
        // (a member we knew there may have restarted under another name): its name comes
        // from the handshake.
        let (name, state) = {
            let cluster = self.cluster();
            let name = if join {
                None
            } else {
                cluster
                    .member_records()
                    .skip(1)
                    .find(|m| m.addr == to && m.state == State::Alive)
                    .map(|m| m.name.clone())
            };
            (name, cluster.push_pull_state())
        };
        let started = self
            .push_pulls
            .as_mut()
            .is_some_and(|p| p.start(to, name, join, state));
        if !started {
            stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue a sync message for the live member at `to` (the stream proves its name).
    fn sync(&self, to: SocketAddr, msg: &heck_cluster::SyncMsg) {
        let unsent = &self.view.stats.sync_unsent;
        let name = self.cluster().live_member_at(&to).map(str::to_owned);
        let (Some(stream), Some(name)) = (self.stream.as_ref(), name) else {
            unsent.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let peer = heck_stream::Peer { name, addr: to };
        if let Err(e) = stream.send(&peer, heck_stream::Channel::Crdt, heck_cluster::encode(msg)) {
            unsent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, %e, "sync message not sent");
        }
    }

    async fn apply(&mut self, effects: Vec<Effect<SocketAddr>>) {
        // Targets whose answer this batch may have changed without a `Changed` (a target that
        // arrived with its status): their registry answer is refreshed at the end.
        let mut touched = Vec::new();
        for e in effects {
            match e {
                Effect::Swim { to, packet } => self.send(to, &packet).await,
                Effect::PushPull { to, join } => self.push_pull(to, join),
                Effect::Sync { to, msg } => self.sync(to, &msg),
                Effect::Schedule { after, timer } => {
                    self.seq += 1;
                    self.timers
                        .push(Reverse((Instant::now() + after, self.seq, timer)));
                }
                Effect::Own {
                    target,
                    state,
                    first_due,
                } => {
                    if let Some(node) = &self.node {
                        node.own(target, state, first_due).await;
                    }
                }
                Effect::Disown { target } => {
                    if let Some(node) = &self.node {
                        node.disown(target).await;
                    }
                }
                Effect::TargetUpdated { spec } => {
                    if let Some(node) = &self.node {
                        touched.push(spec.name.clone());
                        node.target_updated(spec);
                    }
                }
                Effect::TargetRemoved { target } => {
                    if let Some(node) = &self.node {
                        node.target_removed(target).await;
                    }
                }
                Effect::Changed { target, answer } => {
                    if let Some(node) = &self.node {
                        node.answered(&target, &answer);
                    }
                }
                Effect::ClockSkew { from, skew_ms } => clock_skew(&from, skew_ms),
                Effect::Member { name, event } => match event {
                    MemberEvent::Live => tracing::info!(member = %name, "member up"),
                    MemberEvent::Suspect => tracing::info!(member = %name, "member suspect"),
                    MemberEvent::Gone => tracing::warn!(member = %name, "member down"),
                },
            }
        }
        if let (Some(node), false) = (&self.node, touched.is_empty()) {
            let answers: Vec<_> = {
                let cluster = self.cluster();
                touched
                    .into_iter()
                    .filter_map(|t| cluster.answer(&t).cloned().map(|a| (t, a)))
                    .collect()
            };
            for (t, a) in answers {
                node.answered(&t, &a);
            }
        }
        self.publish();
    }

    /// Refresh the member list the API shows. Cheap (a few hundred members at most) and
    /// covers changes without an event too, like our own incarnation after a refutation.
    fn publish(&self) {
        let cluster = self.cluster();
        let list: Vec<MemberView> = cluster
            .member_records()
            .map(|m| MemberView {
                name: m.name.clone(),
                addr: m.addr.to_string(),
                state: state_name(m.state),
                incarnation: m.incarnation,
            })
            .collect();
        if let Ok(mut m) = self.view.members.lock() {
            *m = list;
        }
        if let Ok(mut s) = self.view.swim.lock() {
            *s = cluster.swim_stats();
        }
    }

    /// Refresh the cluster's counters (once a second: counting owned targets walks them; the
    /// contested ones are counted by the registry as answers change).
    fn publish_counts(&self) {
        let mut counts = {
            let cluster = self.cluster();
            let (sync, deltas_pending) = cluster.sync_stats();
            ClusterCounts {
                owned_targets: cluster.owned().count(),
                live_members: cluster.live_members().count(),
                targets: cluster.targets().len(),
                contested: 0,
                deltas_pending,
                replicas: cluster.replicas(),
                settled: cluster.is_settled(),
                decisions: cluster.stats(),
                sync,
            }
        };
        // After the cluster's lock is released (lock order: registry, then cluster).
        if let Some(node) = &self.node {
            counts.contested = node.registry().contested();
            node.metrics.cluster(&counts, &self.view);
        }
        if let Ok(mut c) = self.view.cluster.lock() {
            *c = counts;
        }
    }

    async fn send(&self, to: SocketAddr, packet: &Packet<SocketAddr>) {
        let stats = &self.view.stats;
        let mut nonce = [0u8; 24];
        if getrandom::fill(&mut nonce).is_err() {
            stats.send_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.keyring.seal(packet, nonce) {
            Ok(bytes) => {
                if self.socket.send_to(&bytes, to).await.is_err() {
                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.swim_sent.fetch_add(1, Ordering::Relaxed);
                    stats
                        .swim_sent_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(%e, "cannot seal a gossip packet");
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// SWIM reports a sender once, and again only after one of its packets was accepted in
/// between: one line per episode, not one per dropped packet.
fn clock_skew(from: &str, skew_ms: i64) {
    let (amount, direction) = if skew_ms >= 0 {
        (skew_ms.unsigned_abs(), "behind")
    } else {
        (skew_ms.unsigned_abs(), "ahead of")
    };
    tracing::warn!(
        member = %from,
        skew_ms,
        "member {from}'s clock is {amount} ms {direction} ours, beyond the replay \
         window: its packets are dropped until the clocks agree (fix NTP on one side)"
    );
}

/// Parse a key file: one key per line, 64 hex digits (32 bytes); the first is the primary.
/// Blank lines and `#` comments are ignored.
pub fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.len() != 64 || !line.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: a key is 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`",
                i + 1
            ));
        }
        let mut key = [0u8; 32];
        for (j, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&line[2 * j..2 * j + 2], 16)
                .map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no key in the file".into());
    }
    Ok(keys)
}

/// The built-in key, public in heck's source: membership is still authenticated against the
/// cluster name, but anyone with heck can join and read. `heck agent` and `heck kv` use it
/// only when `--insecure-default-key` asks for it.
pub const DEFAULT_KEY: [u8; 32] = *b"heck-default-insecure-cluster-ky";
