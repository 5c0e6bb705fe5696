//! The heck agent: the one place that spawns check tasks, owns sockets and reads the clock.
//!
//! ```text
//!   API (axum) ──add/remove──> Registry <──results── check driver ──spawn──> probe tasks
//!        │  reads                 │                      │  ^                     │
//!        v                        v                      │  └── bounded channel ──┘
//!   JSON / SSE / metrics      transitions ──broadcast──> SSE subscribers
//! ```
//!
//! Invariants:
//! * one task, the **driver**, owns the [`heck_sched::Schedule`]: it pops due checks only while
//!   fewer than `max_in_flight` are running, so work never queues without bound; when it cannot
//!   keep up, schedule lag grows and is reported (`heck_schedule_lag_seconds`);
//! * a check's result comes back over a channel whose capacity is `max_in_flight`, so a probe
//!   task never waits on a full channel;
//! * a result for a target removed (or removed and re-added) while its check ran is dropped: the
//!   registry's generation tells.
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
pub mod membership;
pub mod metrics;
pub mod registry;

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
    /// If set, `POST`/`DELETE` need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Most checks running at once.
    pub max_in_flight: usize,
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
    /// Two initial targets share a name.
    #[error("duplicate target name {0:?}")]
    Duplicate(String),
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
    /// The deciding check's failure detail, if it failed.
    pub detail: Option<String>,
}

/// Asks the driver to (un)schedule a target the API added or removed.
#[derive(Debug)]
enum Command {
    Schedule(TargetName),
    Unschedule(TargetName),
}

/// State shared by the driver and the API handlers.
#[derive(Debug)]
struct Shared {
    registry: Arc<Mutex<Registry>>,
    metrics: metrics::Metrics,
    events: broadcast::Sender<Event>,
    commands: mpsc::Sender<Command>,
    defaults: Defaults,
    token: Option<String>,
    started_at: SystemTime,
    started: Instant,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    shutdown: CancellationToken,
    prober: Prober,
    members: Option<Arc<membership::MembershipView>>,
}

impl Shared {
    /// The registry. A poisoned lock means a handler panicked mid-update; the data is plain
    /// maps that are consistent between statements, so we keep serving rather than crash.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock time since the Unix epoch: the scheduler's time axis (the same on every node).
fn wall() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Run the agent until `shutdown` is cancelled: bind the API, schedule every target, serve.
/// `ready` (if given) receives the bound address once the API accepts connections.
pub async fn run(
    config: NodeConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), NodeError> {
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

    let (commands, command_rx) = mpsc::channel(1024);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let max_in_flight = config.max_in_flight.max(1);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let shared = Arc::new(Shared {
        metrics: metrics::Metrics::new(registry.clone()),
        registry,
        events,
        commands,
        defaults: config.defaults,
        token: config.api_token.filter(|t| !t.is_empty()),
        started_at: SystemTime::now(),
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        max_in_flight,
        shutdown: shutdown.clone(),
        prober: Prober::new()?,
        members: members.clone(),
    });
    {
        let now = SystemTime::now();
        let mut reg = shared.registry();
        for spec in config.targets {
            if reg.get(&spec.name).is_some() {
                return Err(NodeError::Duplicate(spec.name.to_string()));
            }
            let _ = reg.add(spec, now);
        }
        shared.metrics.targets(reg.counts());
    }

    let driver = tokio::spawn(drive(shared.clone(), command_rx));
    let gossiper = match (config.membership, gossip, members) {
        (Some(m), Some(socket), Some(view)) => {
            tracing::info!(node = %m.node_name, gossip = %m.gossip_addr, "membership on");
            Some(tokio::spawn(membership::run(
                m,
                socket,
                view,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    tracing::info!(%addr, "heck agent listening");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let served = axum::serve(listener, api::router(shared.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = driver.await;
    if let Some(g) = gossiper {
        let _ = g.await;
    }
    served.map_err(NodeError::Serve)
}

/// One finished check.
#[derive(Debug)]
struct CheckResult {
    name: TargetName,
    generation: u64,
    due: Duration,
    at: SystemTime,
    outcome: Outcome,
}

/// The check driver: the only owner of the schedule.
async fn drive(shared: Arc<Shared>, mut commands: mpsc::Receiver<Command>) {
    let max = shared.max_in_flight;
    let mut schedule: Schedule<TargetName> = Schedule::new();
    let (results_tx, mut results) = mpsc::channel::<CheckResult>(max);
    let mut in_flight = 0usize;
    {
        let now = wall();
        let reg = shared.registry();
        for e in reg.iter() {
            schedule.insert(e.spec.name.clone(), e.key_hash, e.spec.interval, now);
        }
    }
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        if draining.is_none() && in_flight < max {
            let now = wall();
            for (name, due) in schedule.pop_due(now, max - in_flight) {
                let Some((spec, generation)) = shared
                    .registry()
                    .get(&name)
                    .map(|e| (e.spec.clone(), e.generation))
                else {
                    continue;
                };
                shared.metrics.lag(now.saturating_sub(due).as_secs_f64());
                in_flight += 1;
                let tx = results_tx.clone();
                let prober = shared.prober.clone();
                tokio::spawn(async move {
                    let at = SystemTime::now();
                    let outcome = prober.probe(&spec).await;
                    // Capacity is max_in_flight and at most that many checks run: never blocks.
                    let _ = tx
                        .send(CheckResult {
                            name,
                            generation,
                            due,
                            at,
                            outcome,
                        })
                        .await;
                });
            }
            shared.metrics.in_flight(in_flight);
            shared.in_flight.store(in_flight, Ordering::Relaxed);
        }
        if draining.is_some() && in_flight == 0 {
            break;
        }
        let sleep_for = (draining.is_none() && in_flight < max)
            .then(|| schedule.next_deadline())
            .flatten()
            .map(|d| d.saturating_sub(wall()));
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled(), if draining.is_none() => {
                draining = Some(tokio::time::Instant::now() + DRAIN);
            }
            Some(result) = results.recv() => {
                in_flight -= 1;
                apply(&shared, &mut schedule, result);
            }
            Some(command) = commands.recv() => {
                let now = wall();
                match command {
                    Command::Schedule(name) => {
                        if let Some(e) = shared.registry().get(&name) {
                            schedule.insert(name, e.key_hash, e.spec.interval, now);
                        }
                    }
                    Command::Unschedule(name) => {
                        schedule.remove(&name);
                    }
                }
            }
            _ = tokio::time::sleep(sleep_for.unwrap_or_default()), if sleep_for.is_some() => {}
            _ = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)), if draining.is_some() => {
                tracing::warn!(in_flight, "shutdown: giving up on checks still running");
                break;
            }
        }
    }
    shared.metrics.in_flight(0);
}

/// Apply one result: rise/fall, metrics, events, and the next due time.
fn apply(shared: &Shared, schedule: &mut Schedule<TargetName>, r: CheckResult) {
    let mut reg = shared.registry();
    let name = r.name;
    let detail = r.outcome.detail.clone();
    shared.metrics.observe_check(&r.outcome);
    let Some((transition, failing)) = reg.record(&name, r.generation, r.at, r.outcome) else {
        return; // removed or replaced while the check ran
    };
    let Some(entry) = reg.get(&name) else { return };
    let interval = entry.spec.next_interval(failing);
    let rescheduled = schedule.reschedule(name.clone(), entry.key_hash, r.due, interval, wall());
    if rescheduled.skipped > 0 {
        shared.metrics.skipped(rescheduled.skipped);
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
        });
    }
}
