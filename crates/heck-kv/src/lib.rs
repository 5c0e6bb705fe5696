//! The seed's key-value store, to watch delta-CRDTs converge between real processes.
//!
//! One process = one replica of an `ORMap<String, String>` (values are multi-value registers:
//! concurrent puts are kept as siblings). Replicas gossip with [`heck_crdt::Replica`]'s
//! anti-entropy over [`heck_stream`]: one authenticated, encrypted connection per peer, sealed
//! with the same key ring and cluster name as SWIM, frames capped before allocation.
//!
//! ```text
//!  HTTP PUT/DELETE ─> replica.write/remove (std mutex, never held across an await)
//!  every tick       ─> replica.tick(random) ─> stream.send(peer, Crdt, message) (queued, bounded)
//!  stream Incoming  ─> decode (capped) ─> replica.handle_message(authenticated name) ─> ack
//!  --peer ADDR      ─> stream.connect until it answers: its name comes from the handshake
//! ```
//!
//! Peers are named by the name their connection's handshake proved, never by what a message
//! says; a peer that is not a `--peer` but connects with the key is learnt too (so seeds
//! need not list each other both ways). `--listen` is only where the socket is bound; peers
//! dial the advertised address.
//!
//! A restart never reuses a dot: the replica id is (xxh3(name), epoch) with a random 64-bit
//! epoch drawn at start, so a restarted process is a new replica, its counters start again at 1
//! under a new id, and peers see the new id and send it everything (see `heck_crdt::sync`). No
//! clock is involved: peers only ask "is this id different?", never "is it later?".
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use heck_crdt::{Effect, Message, Replica, ReplicaId, wire};
use heck_stream::{Channel, Incoming, Peer, Stream};
use heck_swim::Keyring;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest gossip message, in bytes (the stream's frame cap): a message is refused before it
/// is sent, and a longer frame before it is read.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Largest value accepted by PUT.
pub const MAX_VALUE: usize = 1024 * 1024;
/// Longest wait between two dials of a `--peer` that has not answered yet.
const SEED_RETRY_MAX: Duration = Duration::from_secs(5);

/// One replica's settings.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// Stable name: the replica id is derived from it and the start time, and it is the
    /// name this replica proves in every stream handshake.
    pub name: String,
    /// Address the gossip (stream) socket is bound to; may be `0.0.0.0`.
    pub listen: SocketAddr,
    /// Address peers dial (see [`heck_stream::advertise_addr`]).
    pub advertise: SocketAddr,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Other replicas' advertised addresses, dialled until they answer.
    pub peers: Vec<SocketAddr>,
    /// Time between anti-entropy rounds.
    pub tick: Duration,
    /// The key ring and cluster name (as `heck agent`'s).
    pub keyring: Keyring,
}

/// Why the store could not run.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The stream transport refused its settings.
    #[error("{0}")]
    Stream(#[from] heck_stream::StreamError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

type Kv = Replica<String, String, String>;

struct Shared {
    replica: Mutex<Kv>,
    stream: Stream,
    /// Authenticated peer name → its advertised address (from handshakes).
    peers: Mutex<BTreeMap<String, SocketAddr>>,
    /// Messages the stream refused to queue (full queue, peer unreachable, too large).
    dropped_sends: AtomicU64,
    /// Authenticated frames that did not decode, or came on another channel.
    bad_messages: AtomicU64,
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Kv> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peers(&self) -> MutexGuard<'_, BTreeMap<String, SocketAddr>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember an authenticated peer and make it a replica peer.
    fn learn(&self, peer: &Peer) {
        if peer.name == self.stream.local().name {
            return; // a --peer that points at ourselves
        }
        let new = self.peers().insert(peer.name.clone(), peer.addr).is_none();
        if new {
            tracing::info!(peer = %peer.name, addr = %peer.addr, "kv peer");
            self.replica().add_peer(peer.name.clone());
        }
    }
}

/// Run one replica until `shutdown`.
pub async fn run(config: KvConfig, shutdown: CancellationToken) -> Result<(), KvError> {
    let epoch = random_epoch();
    let id = ReplicaId::new(&config.name, epoch);
    let gossip = TcpListener::bind(config.listen)
        .await
        .map_err(|source| KvError::Bind {
            addr: config.listen,
            source,
        })?;
    let http = TcpListener::bind(config.http)
        .await
        .map_err(|source| KvError::Bind {
            addr: config.http,
            source,
        })?;
    let mut stream_config = heck_stream::Config::new(config.name.clone(), config.advertise);
    stream_config.max_frame = MAX_FRAME;
    stream_config.max_buffered_bytes = 4 * MAX_FRAME;
    let (stream, incoming) =
        Stream::start(stream_config, config.keyring, gossip, shutdown.clone())?;
    let shared = Arc::new(Shared {
        replica: Mutex::new(Replica::new(
            id,
            Vec::<String>::new(),
            heck_crdt::Config::default(),
        )),
        stream,
        peers: Mutex::new(BTreeMap::new()),
        dropped_sends: AtomicU64::new(0),
        bad_messages: AtomicU64::new(0),
    });
    tracing::info!(replica = %id, listen = %config.listen, advertise = %config.advertise, http = %config.http, "heck kv replica");

    tokio::spawn(seeds(shared.clone(), config.peers, shutdown.clone()));
    tokio::spawn(receive(shared.clone(), incoming, shutdown.clone()));
    tokio::spawn(ticker(
        shared.clone(),
        config.advertise,
        config.tick,
        epoch,
        shutdown.clone(),
    ));
    let app = axum::Router::new()
        .route("/kv", get(dump))
        .route("/kv/{key}", get(read).put(put).delete(remove))
        .layer(DefaultBodyLimit::max(MAX_VALUE))
        .with_state(shared);
    axum::serve(http, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(KvError::Serve)
}

/// Dial every `--peer` until it answers; its name comes from the handshake. Once known, the
/// stream redials it by itself.
async fn seeds(shared: Arc<Shared>, mut pending: Vec<SocketAddr>, stop: CancellationToken) {
    let mut wait = Duration::from_millis(50);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for addr in pending {
            let connected = tokio::select! {
                _ = stop.cancelled() => return,
                c = shared.stream.connect(addr) => c,
            };
            match connected {
                Ok(peer) => shared.learn(&peer),
                Err(e) => {
                    tracing::debug!(%addr, %e, "kv peer not reachable yet");
                    still.push(addr);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(SEED_RETRY_MAX);
    }
}

/// A fresh random epoch for this start, from the operating system's randomness (the same
/// source the stream's nonces use). Peers only ask "is this id different?", so two starts of one
/// node collide with probability 2^-64; if the OS has no randomness to give, std's per-process
/// random hasher keys are the fallback.
fn random_epoch() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    })
}

async fn ticker(
    shared: Arc<Shared>,
    me: SocketAddr,
    tick: Duration,
    seed: u64,
    stop: CancellationToken,
) {
    let mut random = seed ^ u64::from(me.port()).rotate_left(32);
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let effects = shared.replica().tick(random);
        send_all(&shared, effects);
    }
}

fn send_all(shared: &Shared, effects: Vec<Effect<String, String, String>>) {
    for Effect::Send { to, msg } in effects {
        let Some(addr) = shared.peers().get(&to).copied() else {
            // Replica peers are only ever added by `learn`, with their address.
            shared.dropped_sends.fetch_add(1, Relaxed);
            continue;
        };
        let peer = Peer { name: to, addr };
        // The stream refuses (and counts) a message over its frame cap: never truncated.
        if let Err(e) = shared.stream.send(&peer, Channel::Crdt, wire::encode(&msg)) {
            shared.dropped_sends.fetch_add(1, Relaxed);
            tracing::debug!(peer = %peer.name, %e, "kv send dropped");
        }
    }
}

/// Apply what peers send, one message at a time: the number of messages being decoded or
/// applied at once is one, and what waits is bounded by the stream's incoming queue.
async fn receive(shared: Arc<Shared>, mut incoming: Incoming, stop: CancellationToken) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return,
            i = incoming.recv() => i,
        };
        let Some(inbound) = inbound else { return };
        if inbound.channel != Channel::Crdt {
            shared.bad_messages.fetch_add(1, Relaxed);
            continue;
        }
        match wire::decode::<Message<String, String>>(&inbound.bytes, MAX_FRAME) {
            Ok(msg) => {
                shared.learn(&inbound.from);
                let effects = shared.replica().handle_message(inbound.from.name, msg);
                send_all(&shared, effects);
            }
            Err(e) => {
                shared.bad_messages.fetch_add(1, Relaxed);
                tracing::warn!(peer = %inbound.from.name, %e, "dropped a bad gossip message");
            }
        }
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Serialize)]
struct DotView {
    replica: String,
    counter: u64,
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Json<serde_json::Value> {
    let r = shared.replica();
    let values: Vec<&String> = r.map().get(&key);
    let dots: Vec<DotView> = r
        .map()
        .dots(&key)
        .into_iter()
        .map(|d| DotView {
            replica: d.replica.to_string(),
            counter: d.counter,
        })
        .collect();
    Json(serde_json::json!({ "values": values, "context": { "dots": dots } }))
}

async fn put(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let value = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the value must be UTF-8 text".into(),
        )
    })?;
    shared.replica().write(key, value);
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> StatusCode {
    shared.replica().remove(&key);
    StatusCode::NO_CONTENT
}

async fn dump(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    // Copied first: the two locks are never held together.
    let peers = shared.peers().clone();
    let r = shared.replica();
    let vv: BTreeMap<String, u64> = r
        .map()
        .context()
        .vv()
        .iter()
        .map(|(id, n)| (id.to_string(), *n))
        .collect();
    let stats = r.stats();
    Json(serde_json::json!({
        "replica": r.id().to_string(),
        "version_vector": vv,
        "out_of_order_dots": r.map().context().cloud().len(),
        "keys": r.map().len(),
        "buffered_deltas": r.buffered(),
        "deltas_sent": stats.deltas_sent,
        "full_states_sent": stats.full_states_sent,
        "dropped_sends": shared.dropped_sends.load(Relaxed),
        "bad_messages": shared.bad_messages.load(Relaxed),
        "peers": peers,
        "stream": shared.stream.stats(),
    }))
}
