//! The heck agent: the one place that spawns check tasks, owns sockets and reads the clock.
//!
//! ```text
//!   API (axum) ──add/remove──> Registry <──results── check driver ──spawn──> probe tasks
//!        │  reads                 │                      │  ^                     │
//!        v                        v                      │  └── bounded channel ──┘
//!   JSON / SSE / metrics      transitions ──broadcast──> SSE subscribers
//! ```
//!
//! Checks run on **shards**: `check_threads` OS threads, each with its own single-threaded tokio
//! runtime and its own driver, owning the targets whose name hashes to it. A check starts, waits
//! for its socket and finishes on one thread; no work stealing, no cross-thread wake-ups (which
//! cost ~15% of the CPU per check on a shared multi-threaded runtime, measured with
//! `v1-bench`), and still one core per shard when the fleet is large. The API and membership
//! run on the main runtime.
//!
//! Invariants:
//! * one task per shard, the **driver**, owns that shard's [`heck_sched::Schedule`]: it pops due
//!   checks only while fewer than its share of `max_in_flight` are running, so work never queues
//!   without bound; when it cannot keep up, schedule lag grows and is reported
//!   (`heck_schedule_lag_seconds`);
//! * a target belongs to exactly one shard, [`shard_of`] its key hash, for its whole life;
//! * a check's result comes back over a channel whose capacity is the shard's share, so a probe
//!   task never waits on a full channel;
//! * a result for a target removed (or removed and re-added) while its check ran is dropped: the
//!   registry's generation tells.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use heck_check::{Defaults, Outcome, Status, TargetName, TargetSpec};
use heck_probe::Prober;
use heck_sched::Schedule;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

mod api;
mod data_dir;
pub mod membership;
pub mod metrics;
pub mod registry;

pub use api::ApiLimits;
pub use data_dir::{DataDirLock, lock_data_dir, read_snapshot, write_snapshot};
pub use registry::{Registry, TargetView};

/// Default `max_in_flight`: enough for 10,000 checks/s at 400 ms latency, far below the 20,000
/// sockets a process may hold here.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// Default API address: loopback. Expose it on purpose, with `--api-token`.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7070";
/// How long shutdown waits for running checks.
const DRAIN: Duration = Duration::from_secs(5);
/// Transitions buffered per SSE subscriber before it starts missing events (counted).
const EVENT_BUFFER: usize = 1024;

/// What the agent needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// If set, `POST`/`DELETE` need `Authorization: Bearer <token>`. An empty token is refused
    /// ([`NodeError::EmptyToken`]): it would otherwise read as "authentication on".
    pub api_token: Option<String>,
    /// Bounds on API clients: request timeouts, connections, subscribers, shutdown grace.
    pub api: ApiLimits,
    /// Most checks running at once (split evenly across the check threads).
    pub max_in_flight: usize,
    /// Check threads (shards); 0 means one per available core; capped at [`MAX_CHECK_THREADS`].
    pub check_threads: usize,
    /// Defaults that API-added targets are validated against (the config's `[defaults]`).
    pub defaults: Defaults,
    /// The initial targets.
    pub targets: Vec<TargetSpec>,
    /// Cluster membership (SWIM over UDP), if this agent gossips.
    pub membership: Option<membership::MembershipConfig>,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The prober could not be built.
    #[error(transparent)]
    Probe(#[from] heck_probe::ProbeError),
    /// The HTTP server failed.
    #[error("API server failed: {0}")]
    Serve(std::io::Error),
    /// A check thread or its runtime could not be started.
    #[error("cannot start a check thread: {0}")]
    Thread(std::io::Error),
    /// The API token is empty.
    #[error(
        "the API token is empty: give a token, or unset --api-token and HECK_API_TOKEN to run \
         without authentication"
    )]
    EmptyToken,
    /// Two initial targets share a name.
    #[error("duplicate target name {0:?}")]
    Duplicate(String),
    /// The cluster could not start: its configuration, or its data dir (locked by another
    /// agent, a snapshot refused, not writable).
    #[error("{0}")]
    Cluster(String),
}

/// A status transition, as the event stream sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The target.
    pub target: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// When (RFC 3339).
    pub at: String,
    /// The deciding check's failure detail, if it failed (in a cluster: when this node made
    /// the check; per-check detail is not replicated).
    pub detail: Option<String>,
    /// In a cluster: the node whose check decided it (every node sends every transition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observer: Option<String>,
    /// In a cluster: the answer rests on concurrent observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contested: Option<bool>,
}

/// Asks a shard's driver to (un)schedule a target: the API added or removed it (a single
/// agent), or the cluster made this node its owner or took it away.
#[derive(Debug)]
enum Command {
    Schedule(TargetName),
    Unschedule(TargetName),
    /// Check it from now on, first at `first_due` (its slot on the phase grid); its check
    /// state is already in the registry. Already owned: keep the schedule.
    Own(TargetName, Duration),
    /// Stop checking it (a check running now finishes, and is not reported).
    Disown(TargetName),
}

/// The cluster, as the rest of the agent sees it: its core (read by the API) and the driver's
/// input queue.
#[derive(Debug)]
pub(crate) struct ClusterLink {
    core: membership::SharedCluster,
    inputs: mpsc::Sender<membership::Input>,
    /// This node's name (an event's detail is known only for its own checks).
    me: heck_check::NodeName,
}

/// State shared by the driver and the API handlers.
#[derive(Debug)]
struct Shared {
    /// Every target, its state and last result: written by the drivers (results) and the API
    /// (add, remove), read by the API and `/metrics`. A std mutex, never held across an await.
    registry: Arc<Mutex<Registry>>,
    /// The node-wide metrics; the per-target series are read from `registry` when scraped.
    metrics: Arc<metrics::Metrics>,
    /// Status transitions to SSE subscribers; each has its own bounded buffer.
    events: broadcast::Sender<Event>,
    /// To each shard's driver, the targets the API added or removed. One per shard: index with
    /// [`shard_of`].
    commands: Vec<mpsc::Sender<Command>>,
    /// What API-added targets are validated against (the config's `[defaults]`).
    defaults: Defaults,
    /// If set, POST and DELETE need it as a bearer token (never empty: refused at start).
    token: Option<String>,
    /// Wall-clock start, for `/v1/node`'s `started_at`.
    started_at: SystemTime,
    /// Monotonic start, for the uptime (immune to wall-clock jumps).
    started: Instant,
    /// Checks running now over all shards, for `/v1/node` and the gauge.
    in_flight: AtomicUsize,
    /// The bound on `in_flight`, as configured (shown by `/v1/node`).
    max_in_flight: usize,
    /// Cancelled when the agent stops: drivers drain, SSE streams end, the API closes.
    shutdown: CancellationToken,
    /// Runs checks; holds the keep-alive pool, so a removed target's connection is forgotten.
    prober: Prober,
    /// Cluster membership as the gossip task sees it, when the agent gossips.
    members: Option<Arc<membership::MembershipView>>,
    /// The cluster, when the agent gossips (version 2).
    cluster: Option<ClusterLink>,
    /// Bounds on API clients.
    api_limits: ApiLimits,
    /// One permit per SSE subscriber (`api_limits.max_subscribers`).
    subscribers: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The registry. A poisoned lock means a handler panicked mid-update; the data is plain
    /// maps that are consistent between statements, so we keep serving rather than crash.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell the shard that owns `name` to (un)schedule it. Fails only when that shard's driver
    /// is gone, that is when the agent is shutting down.
    async fn command(&self, command: Command) -> Result<(), ()> {
        let name = match &command {
            Command::Schedule(n)
            | Command::Unschedule(n)
            | Command::Own(n, _)
            | Command::Disown(n) => n,
        };
        let shard = shard_of(registry::key_hash(name), self.commands.len());
        match self.commands.get(shard) {
            Some(tx) => tx.send(command).await.map_err(|_| ()),
            None => Err(()),
        }
    }
}

/// What the cluster driver does to the agent (`membership::Driver::apply`).
impl Shared {
    /// Own `target`: continue from `state`, first check at `first_due`.
    async fn own(&self, target: TargetName, state: heck_check::CheckState, first_due: Duration) {
        if self.registry().set_state(&target, state) {
            // Fails only at shutdown.
            let _ = self.command(Command::Own(target, first_due)).await;
        }
    }

    /// Stop checking `target`.
    async fn disown(&self, target: TargetName) {
        let _ = self.command(Command::Disown(target)).await;
    }

    /// A target was added or changed, through any node's API.
    fn target_updated(&self, spec: TargetSpec) {
        let replaced = {
            let mut reg = self.registry();
            let replaced = reg.upsert(spec, SystemTime::now());
            self.metrics.targets(reg.counts());
            replaced
        };
        if let Some(old) = replaced {
            self.prober.forget(&old);
        }
    }

    /// A target was deleted, through any node's API.
    async fn target_removed(&self, target: TargetName) {
        let removed = {
            let mut reg = self.registry();
            let removed = reg.remove(&target);
            self.metrics.targets(reg.counts());
            removed
        };
        if let Some(entry) = removed {
            self.prober.forget(&entry.spec);
        }
        let _ = self.command(Command::Disown(target)).await;
    }

    /// The cluster's answer for `target` is `answer`: the registry shows it, and a change of
    /// status is an event (with its observer), on every node.
    fn answered(&self, target: &TargetName, answer: &heck_cluster::Answer) {
        let me = self.cluster.as_ref().map(|c| &c.me);
        let (old, detail) = {
            let mut reg = self.registry();
            let Some(old) = reg.set_answer(target, answer.status, answer.contested) else {
                return;
            };
            if old != answer.status {
                self.metrics.targets(reg.counts());
            }
            // Per-check detail is not replicated: only the observer itself has it.
            let detail = (answer.status == Status::Unhealthy && answer.observer.as_ref() == me)
                .then(|| reg.get(target).and_then(|e| e.last.as_ref()))
                .flatten()
                .and_then(|l| l.outcome.detail.clone());
            (old, detail)
        };
        if old == answer.status {
            return;
        }
        self.metrics.transition(answer.status);
        tracing::info!(target = %target, from = %old, to = %answer.status, observer = ?answer.observer.as_ref().map(|o| o.as_str()), "status changed");
        let at = answer
            .observed_at
            .map_or_else(SystemTime::now, |d| SystemTime::UNIX_EPOCH + d);
        let _ = self.events.send(Event {
            target: target.to_string(),
            from: old,
            to: answer.status,
            at: registry::rfc3339(at),
            detail,
            observer: answer.observer.as_ref().map(|o| o.to_string()),
            contested: Some(answer.contested),
        });
    }
}

/// The shard (check thread) that owns a target with key hash `key_hash`, of `shards`. Uses the
/// hash's high bits: the low bits pick the phase slot, and the two should not correlate.
pub fn shard_of(key_hash: u64, shards: usize) -> usize {
    ((key_hash >> 32) % shards.max(1) as u64) as usize
}

/// Most check threads: each is an OS thread with its own runtime, and beyond the cores they only
/// add switching (`--check-threads 100000` once started 4,099 threads).
pub const MAX_CHECK_THREADS: usize = 256;

/// How many check threads `requested` means: 0 is one per available core; never more than
/// [`MAX_CHECK_THREADS`].
pub fn check_threads(requested: usize) -> usize {
    let n = if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    n.min(MAX_CHECK_THREADS)
}

/// Wall-clock time since the Unix epoch: the scheduler's time axis (the same on every node).
fn wall() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Run the agent until `shutdown` is cancelled. `ready` (if given) receives the bound address
/// once the API accepts connections. In order: bind the API (and gossip) sockets, build the
/// shared state, `load_targets`, `start_shards`, start membership, serve the API
/// (`api::serve`, which closes its connections within the grace period), `stop_shards`.
pub async fn run(
    config: NodeConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), NodeError> {
    if config.api_token.as_deref() == Some("") {
        return Err(NodeError::EmptyToken);
    }
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.api_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(NodeError::Serve)?;
    let gossip = match &config.membership {
        Some(m) => {
            Some(
                membership::bind(m.gossip_addr)
                    .await
                    .map_err(|source| NodeError::Bind {
                        addr: m.gossip_addr,
                        source,
                    })?,
            )
        }
        None => None,
    };
    let members = gossip
        .as_ref()
        .map(|_| Arc::new(membership::MembershipView::default()));
    // Version 2: the cluster decides which targets this node checks.
    let mut initial = Vec::new();
    let cluster = match &config.membership {
        Some(m) => {
            // Blocking file IO (lock, read, write back) before anything runs.
            let (core, persist) =
                membership::open_cluster(m, config.targets.clone()).map_err(NodeError::Cluster)?;
            // The registry starts from the cluster's targets, not the file's: a restored state
            // adds the targets added through the API and drops the deleted ones.
            let answers: Vec<(TargetSpec, Status, bool)> = core
                .targets()
                .values()
                .map(|spec| {
                    let answer = core.answer(&spec.name);
                    let status = answer.map_or(Status::Unknown, |a| a.status);
                    let contested = answer.is_some_and(|a| a.contested);
                    (TargetSpec::clone(spec), status, contested)
                })
                .collect();
            initial = answers;
            let (tx, rx) = mpsc::channel(membership::INPUT_QUEUE);
            Some((
                ClusterLink {
                    core: Arc::new(Mutex::new(core)),
                    inputs: tx,
                    me: m.node_name.clone(),
                },
                rx,
                persist,
            ))
        }
        None => None,
    };
    let (cluster, cluster_inputs, persist) = match cluster {
        Some((link, rx, persist)) => (Some(link), Some(rx), persist),
        None => (None, None, None),
    };

    let max_in_flight = config.max_in_flight.max(1);
    // No more shards than in-flight slots: each shard needs one, and their sum is the bound.
    let shards = check_threads(config.check_threads).min(max_in_flight);
    let (commands, command_rxs): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::channel(1024)).unzip();
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let clustered = cluster.is_some();
    let registry = Arc::new(Mutex::new(if clustered {
        Registry::clustered()
    } else {
        Registry::default()
    }));
    let shared = Arc::new(Shared {
        metrics: Arc::new(metrics::Metrics::new(registry.clone(), clustered)),
        registry,
        events,
        commands,
        defaults: config.defaults,
        token: config.api_token,
        started_at: SystemTime::now(),
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        max_in_flight,
        shutdown: shutdown.clone(),
        prober: Prober::new()?,
        members: members.clone(),
        cluster,
        api_limits: config.api,
        subscribers: Arc::new(tokio::sync::Semaphore::new(config.api.max_subscribers)),
    });
    if clustered {
        load_targets(
            &shared,
            initial.iter().map(|(spec, _, _)| spec.clone()).collect(),
        )?;
        let mut reg = shared.registry();
        for (spec, status, contested) in &initial {
            reg.set_answer(&spec.name, *status, *contested);
        }
        shared.metrics.targets(reg.counts());
    } else {
        load_targets(&shared, config.targets)?;
    }
    let drivers = start_shards(&shared, command_rxs, max_in_flight).await?;
    let gossiper = match (config.membership, gossip, members, cluster_inputs) {
        (Some(m), Some(socket), Some(view), Some(inputs)) => {
            tracing::info!(node = %m.node_name, gossip = %m.gossip_addr, "cluster on");
            let core = shared.cluster.as_ref().map(|c| c.core.clone());
            core.map(|core| {
                let wiring = membership::Wiring {
                    cluster: core,
                    node: Some(shared.clone()),
                    persist,
                    inputs,
                };
                tokio::spawn(membership::run_node(
                    m,
                    socket,
                    view,
                    wiring,
                    shutdown.clone(),
                ))
            })
        }
        _ => None,
    };
    tracing::info!(%addr, "heck agent listening");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let served = api::serve(listener, shared.clone(), shutdown.clone()).await;
    shutdown.cancel();
    stop_shards(drivers).await;
    if let Some(g) = gossiper {
        let _ = g.await;
    }
    served.map_err(NodeError::Serve)
}

/// Put the initial targets into the registry, unknown since now; a duplicate name is an error.
fn load_targets(shared: &Shared, targets: Vec<TargetSpec>) -> Result<(), NodeError> {
    let now = SystemTime::now();
    let mut reg = shared.registry();
    reg.reserve(targets.len());
    for spec in targets {
        if reg.get(&spec.name).is_some() {
            return Err(NodeError::Duplicate(spec.name.to_string()));
        }
        let _ = reg.add(spec, now);
    }
    shared.metrics.targets(reg.counts());
    Ok(())
}

/// A running shard: resolved when its thread has finished (or died).
type ShardDone = tokio::sync::oneshot::Receiver<()>;

/// Start one check thread per command receiver, each driving its shard with an even share of
/// `max_in_flight`. If one cannot start, the ones already running are stopped first.
async fn start_shards(
    shared: &Arc<Shared>,
    command_rxs: Vec<mpsc::Receiver<Command>>,
    max_in_flight: usize,
) -> Result<Vec<ShardDone>, NodeError> {
    let shards = command_rxs.len();
    // Each shard gets an even share of max_in_flight (at least one; shards <= max_in_flight).
    let per_shard = (max_in_flight / shards.max(1)).max(1);
    let mut drivers = Vec::with_capacity(shards);
    for (index, command_rx) in command_rxs.into_iter().enumerate() {
        let shard = Shard {
            shared: shared.clone(),
            index,
            count: shards,
            max_in_flight: per_shard,
        };
        match start_shard(shard, command_rx).await {
            Ok(done) => drivers.push(done),
            Err(e) => {
                shared.shutdown.cancel();
                stop_shards(drivers).await;
                return Err(NodeError::Thread(e));
            }
        }
    }
    Ok(drivers)
}

/// Start `shard`'s thread, with its own single-threaded runtime; returns once the runtime runs.
async fn start_shard(
    shard: Shard,
    command_rx: mpsc::Receiver<Command>,
) -> std::io::Result<ShardDone> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("heck-check-{}", shard.index))
        .spawn(move || {
            // Built (and dropped) on its own thread: tokio forbids dropping a runtime
            // inside another runtime's async context.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            runtime.block_on(drive(shard, command_rx));
            drop(runtime);
            let _ = done_tx.send(());
        })?;
    started_rx
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("check thread died at start")))?;
    Ok(done_rx)
}

/// Wait for every shard to finish (after `shutdown` was cancelled).
async fn stop_shards(drivers: Vec<ShardDone>) {
    for done in drivers {
        // An error means the thread ended without saying so (it panicked): nothing to wait for.
        let _ = done.await;
    }
}

/// One finished check.
#[derive(Debug)]
struct CheckResult {
    name: TargetName,
    /// The spec the check ran with (of this generation), and its key hash: rescheduling needs
    /// no second registry lookup.
    spec: Arc<TargetSpec>,
    key_hash: u64,
    generation: u64,
    due: Duration,
    at: SystemTime,
    outcome: Outcome,
}

/// The longest a check may start before it is due.
const COALESCE_MAX: Duration = Duration::from_millis(50);
/// ... and at most this fraction of the shortest interval scheduled.
const COALESCE_FRACTION: u32 = 100;
/// Most checks one wake-up starts: beyond this the wake-up is amortized anyway, and starting
/// more at once only raises the peak of checks in flight (memory) for nothing.
const COALESCE_BATCH: usize = 64;

/// How early a shard may start checks whose due time is near, so that one wake-up starts
/// many checks (timer coalescing, as the kernel's timer slack does). Waking once per check
/// costs a context switch and an `epoll_wait` each time; at 1,000 checks/s, coalescing within
/// 50 ms cut the agent's CPU per check by ~40% (`v1-bench`, docs/benchmarks.md). A check then
/// starts at most 50 ms, and at most 1% of its shortest interval, before its slot: the phase
/// grid holds, no check is ever late because of it, and the lag metric still measures lateness.
fn coalescing_window(shortest_interval: Duration) -> Duration {
    COALESCE_MAX.min(shortest_interval / COALESCE_FRACTION)
}

/// One check thread's share of the work.
struct Shard {
    shared: Arc<Shared>,
    index: usize,
    count: usize,
    max_in_flight: usize,
}

/// Run one shard's driver until shutdown (and the drain after it) ends.
async fn drive(shard: Shard, mut commands: mpsc::Receiver<Command>) {
    let (mut driver, mut results) = ShardDriver::new(shard);
    loop {
        driver.start_due();
        if driver.drained() {
            break;
        }
        let sleep_for = driver.sleep_for();
        let draining = driver.draining;
        tokio::select! {
            biased;
            _ = driver.shared.shutdown.cancelled(), if draining.is_none() => driver.begin_drain(),
            Some(result) = results.recv() => driver.on_result(result),
            Some(command) = commands.recv() => driver.on_command(command),
            _ = tokio::time::sleep(sleep_for.unwrap_or_default()), if sleep_for.is_some() => {}
            _ = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)), if draining.is_some() => {
                tracing::warn!(in_flight = driver.in_flight, "shutdown: giving up on checks still running");
                break;
            }
        }
    }
    driver.finish();
}

/// The check driver of one shard: the only owner of that shard's schedule. It starts due checks
/// while its share of `max_in_flight` allows, applies their results, and (un)schedules what the
/// API adds or removes. Each field says why it is here.
struct ShardDriver {
    /// The registry, metrics, events, prober and shutdown token, shared with the API.
    shared: Arc<Shared>,
    /// This shard's targets and when each is due; a popped target is in flight until its
    /// result reschedules it.
    schedule: Schedule<TargetName>,
    /// The shortest interval scheduled here: bounds how early a check may start (coalescing).
    shortest: Duration,
    /// This shard's share of `max_in_flight`: at most this many of its checks run at once.
    max_in_flight: usize,
    /// This shard's checks running now.
    in_flight: usize,
    /// Where probe tasks send their results. Its capacity is `max_in_flight`, so a probe task
    /// never waits on a send.
    results_tx: mpsc::Sender<CheckResult>,
    /// Once shutdown began: when the driver gives up on checks still running.
    draining: Option<tokio::time::Instant>,
    /// In a cluster, the targets of this shard that this node owns (the cluster's `Own` and
    /// `Disown`), and those of them with a check running now; `None` in a single agent,
    /// which checks every target.
    owned: Option<Owned>,
}

/// A shard's owned targets, in a cluster.
#[derive(Debug, Default)]
struct Owned {
    /// Checked by this node now.
    targets: HashSet<TargetName>,
    /// With a check running: its result reschedules it (if still owned), so `Own` must not
    /// schedule it a second time.
    running: HashSet<TargetName>,
}

impl ShardDriver {
    /// A driver for `shard`, with every target of the shard scheduled for a first check within a
    /// second; and the receiving end of its results.
    fn new(shard: Shard) -> (ShardDriver, mpsc::Receiver<CheckResult>) {
        let (results_tx, results) = mpsc::channel::<CheckResult>(shard.max_in_flight);
        let mut schedule: Schedule<TargetName> = Schedule::new();
        let mut shortest = Duration::MAX;
        // In a cluster nothing is checked until the cluster says whose it is (`Own`).
        let owned = shard.shared.cluster.is_some().then(Owned::default);
        if owned.is_none() {
            let now = wall();
            let reg = shard.shared.registry();
            let count = shard.count;
            // This shard's share, with 10% to spare for the hash's unevenness.
            schedule.reserve(reg.len() / count + reg.len() / count / 10);
            // Every target is new at start-up: spread their first checks so that a large fleet
            // does not start them all within one second (see `first_check_spread`).
            let spread = heck_sched::first_check_spread(reg.len());
            for e in reg
                .iter_unordered()
                .filter(|e| shard_of(e.key_hash, count) == shard.index)
            {
                schedule.insert_soon_within(
                    e.spec.name.clone(),
                    e.key_hash,
                    e.spec.interval,
                    now,
                    spread,
                );
                shortest = shortest.min(e.spec.shortest_interval());
            }
        }
        let driver = ShardDriver {
            shared: shard.shared,
            schedule,
            shortest,
            max_in_flight: shard.max_in_flight,
            in_flight: 0,
            results_tx,
            draining: None,
            owned,
        };
        (driver, results)
    }

    /// Start the checks due now (or within the coalescing window), as many as the in-flight
    /// share allows and at most [`COALESCE_BATCH`]; none once draining.
    fn start_due(&mut self) {
        if self.draining.is_some() || self.in_flight >= self.max_in_flight {
            return;
        }
        let shared = &self.shared;
        let now = wall();
        let early = coalescing_window(self.shortest);
        let room = (self.max_in_flight - self.in_flight).min(COALESCE_BATCH);
        for (name, due) in self.schedule.pop_due(now + early, room) {
            let Some((spec, key_hash, generation)) = shared
                .registry()
                .get(&name)
                .map(|e| (e.spec.clone(), e.key_hash, e.generation))
            else {
                continue;
            };
            if let Some(owned) = self.owned.as_mut() {
                owned.running.insert(name.clone());
            }
            // An early start (inside the coalescing window) is no lag: counted on its own.
            if now < due {
                shared.metrics.early();
            } else {
                shared.metrics.lag((now - due).as_secs_f64());
            }
            self.in_flight += 1;
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let tx = self.results_tx.clone();
            let prober = shared.prober.clone();
            tokio::spawn(async move {
                let at = SystemTime::now();
                let outcome = prober.probe(&spec).await;
                // Capacity is max_in_flight and at most that many checks run: never blocks.
                let _ = tx
                    .send(CheckResult {
                        name,
                        spec,
                        key_hash,
                        generation,
                        due,
                        at,
                        outcome,
                    })
                    .await;
            });
        }
        shared
            .metrics
            .in_flight(shared.in_flight.load(Ordering::Relaxed));
    }

    /// How long to sleep until the next check is due; `None` when nothing is scheduled, the
    /// in-flight share is full (a result wakes the driver) or the driver is draining.
    fn sleep_for(&self) -> Option<Duration> {
        (self.draining.is_none() && self.in_flight < self.max_in_flight)
            .then(|| self.schedule.next_deadline())
            .flatten()
            .map(|d| d.saturating_sub(wall()))
    }

    /// Shutdown began: start no more checks, wait at most [`DRAIN`] for the running ones.
    fn begin_drain(&mut self) {
        self.draining = Some(tokio::time::Instant::now() + DRAIN);
    }

    /// Draining and nothing left running?
    fn drained(&self) -> bool {
        self.draining.is_some() && self.in_flight == 0
    }

    /// The API added or removed a target of this shard.
    fn on_command(&mut self, command: Command) {
        match command {
            Command::Schedule(name) => {
                if let Some(e) = self.shared.registry().get(&name) {
                    self.shortest = self.shortest.min(e.spec.shortest_interval());
                    self.schedule
                        .insert_soon(name, e.key_hash, e.spec.interval, wall());
                }
            }
            Command::Unschedule(name) => {
                self.schedule.remove(&name);
            }
            Command::Own(name, first_due) => {
                let Some(owned) = self.owned.as_mut() else {
                    return;
                };
                let Some(e) = self.shared.registry().get(&name).map(|e| e.spec.clone()) else {
                    return;
                };
                self.shortest = self.shortest.min(e.shortest_interval());
                owned.targets.insert(name.clone());
                // Already scheduled or running: a newer record replaced its state, and its
                // slot on the grid stays.
                if self.schedule.due_at(&name).is_none() && !owned.running.contains(&name) {
                    self.schedule.insert_at(name, first_due);
                }
            }
            Command::Disown(name) => {
                if let Some(owned) = self.owned.as_mut() {
                    owned.targets.remove(&name);
                }
                self.schedule.remove(&name);
            }
        }
    }

    /// A check finished: rise/fall, metrics, events (in a cluster: the result to the cluster
    /// driver), and the target's next due time.
    fn on_result(&mut self, r: CheckResult) {
        self.in_flight -= 1;
        let shared = &self.shared;
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let name = r.name;
        // In a cluster: is it still this node's? A target disowned while its check ran is
        // neither reported nor rescheduled.
        let owned = self.owned.as_mut().map(|o| {
            o.running.remove(&name);
            o.targets.contains(&name)
        });
        if owned == Some(false) {
            return;
        }
        let mut reg = shared.registry();
        let detail = r.outcome.detail.clone();
        shared.metrics.observe_check(&r.outcome);
        let Some((transition, failing)) = reg.record(&name, r.generation, r.at, r.outcome) else {
            // Removed or replaced while the check ran. In a cluster a replaced spec of an owned
            // target keeps its place on the grid (the cluster does not own it again).
            if owned == Some(true)
                && let Some(e) = reg.get(&name)
            {
                self.schedule
                    .insert(name, e.key_hash, e.spec.interval, wall());
            }
            return;
        };
        // Same generation, so `r.spec` is the registry's spec.
        let interval = r.spec.next_interval(failing);
        let rescheduled =
            self.schedule
                .reschedule(name.clone(), r.key_hash, r.due, interval, wall());
        if rescheduled.skipped > 0 {
            shared.metrics.skipped(rescheduled.skipped);
        }
        if let Some(cluster) = &shared.cluster {
            // The cluster decides what is written and what every node answers; a full queue
            // only delays that to the target's next check (the cluster writes whenever the
            // check disagrees with the answer). Only a check that may change something is
            // reported (`heck_cluster::report_check`, which the simulator applies too). The
            // answer is the registry's copy: a check thread never waits on the cluster's lock.
            let state = reg
                .get(&name)
                .filter(|e| {
                    let answer = e.answer.map(|status| (status, e.contested));
                    heck_cluster::report_check(transition.is_some(), answer, &e.state)
                })
                .map(|e| e.state.clone());
            drop(reg);
            if let Some(state) = state {
                let at =
                    r.at.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                let input = membership::Input::Check {
                    target: name,
                    state,
                    at,
                };
                if cluster.inputs.try_send(input).is_err()
                    && let Some(view) = &shared.members
                {
                    view.stats.checks_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        if let Some(t) = transition {
            shared.metrics.transition(t.to);
            shared.metrics.targets(reg.counts());
            tracing::info!(target = %name, from = %t.from, to = %t.to, "status changed");
            // No subscriber is not an error.
            let _ = shared.events.send(Event {
                target: name.to_string(),
                from: t.from,
                to: t.to,
                at: registry::rfc3339(t.at),
                detail: if t.to == Status::Unhealthy {
                    detail
                } else {
                    None
                },
                observer: None,
                contested: None,
            });
        }
    }

    /// The driver stops: checks given up on at shutdown no longer count as in flight.
    fn finish(self) {
        let shared = &self.shared;
        shared
            .in_flight
            .fetch_sub(self.in_flight, Ordering::Relaxed);
        shared
            .metrics
            .in_flight(shared.in_flight.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shards_split_targets_evenly_and_one_shard_owns_all() {
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            let name = TargetName::new(format!("t-{i:05}")).unwrap();
            let h = registry::key_hash(&name);
            assert_eq!(shard_of(h, 1), 0);
            counts[shard_of(h, 3)] += 1;
        }
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn checks_start_early_by_at_most_50ms_and_1_percent_of_the_interval() {
        assert_eq!(coalescing_window(Duration::MAX), COALESCE_MAX);
        assert_eq!(
            coalescing_window(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            coalescing_window(Duration::from_secs(1)),
            Duration::from_millis(10)
        );
        assert_eq!(
            coalescing_window(Duration::from_millis(200)),
            Duration::from_millis(2)
        );
    }

    #[test]
    fn zero_check_threads_means_one_per_core() {
        assert!(check_threads(0) >= 1);
        assert_eq!(check_threads(5), 5);
        assert_eq!(check_threads(100_000), MAX_CHECK_THREADS);
    }
}
