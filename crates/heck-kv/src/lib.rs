//! The seed's key-value store, to watch delta-CRDTs converge between real processes.
//!
//! One process = one replica of an `ORMap<String, String>` (values are multi-value registers:
//! concurrent puts are kept as siblings). Replicas gossip with [`heck_crdt::Replica`]'s
//! anti-entropy; each message is one length-prefixed frame on a short TCP connection, so a
//! full state of any size fits (UDP datagrams stop at 64 KiB).
//!
//! ```text
//!  HTTP PUT/DELETE ─> replica.write/remove (std mutex, never held across an await)
//!  every tick       ─> replica.tick(random) ─> frames to peers (at most SEND_CONCURRENCY at once)
//!  TCP frame in     ─> replica.handle_message ─> ack frame back
//! ```
//!
//! A restart never reuses a dot: the replica id is (xxh3(name), epoch) with a random 64-bit
//! epoch drawn at start, so a restarted process is a new replica, its counters start again at 1
//! under a new id, and peers see the new id and send it everything (see `heck_crdt::sync`). No
//! clock is involved: peers only ask "is this id different?", never "is it later?".
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use heck_crdt::{Effect, Message, Replica, ReplicaId, wire};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest gossip frame accepted.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Most gossip sends in flight at once; beyond that a send is dropped (and counted): the
/// protocol retransmits until acknowledged, so a dropped send only delays.
pub const SEND_CONCURRENCY: usize = 64;
/// Largest value accepted by PUT.
pub const MAX_VALUE: usize = 1024 * 1024;

/// One replica's settings.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// Stable name (the replica id is derived from it and the start time).
    pub name: String,
    /// Gossip listen address.
    pub listen: SocketAddr,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Other replicas' gossip addresses.
    pub peers: Vec<SocketAddr>,
    /// Time between anti-entropy rounds.
    pub tick: Duration,
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
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

type Kv = Replica<SocketAddr, String, String>;

struct Shared {
    replica: Mutex<Kv>,
    sends: Arc<tokio::sync::Semaphore>,
    dropped_sends: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Kv> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
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
    let shared = Arc::new(Shared {
        replica: Mutex::new(Replica::new(
            id,
            config.peers.clone(),
            heck_crdt::Config::default(),
        )),
        sends: Arc::new(tokio::sync::Semaphore::new(SEND_CONCURRENCY)),
        dropped_sends: std::sync::atomic::AtomicU64::new(0),
    });
    tracing::info!(replica = %id, gossip = %config.listen, http = %config.http, "heck kv replica");

    tokio::spawn(receive(
        gossip,
        shared.clone(),
        config.listen,
        shutdown.clone(),
    ));
    tokio::spawn(ticker(
        shared.clone(),
        config.listen,
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

/// A fresh random epoch for this start. std's `RandomState` keys come from the operating
/// system's randomness once per process (then step by one per `new`), so two starts of one node
/// draw unrelated keys; two starts sharing an epoch would take 2^32 restarts to become likely.
fn random_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
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
        send_all(&shared, me, effects);
    }
}

fn send_all(
    shared: &Arc<Shared>,
    me: SocketAddr,
    effects: Vec<Effect<SocketAddr, String, String>>,
) {
    for Effect::Send { to, msg } in effects {
        let Ok(permit) = shared.sends.clone().try_acquire_owned() else {
            shared
                .dropped_sends
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let bytes = wire::encode(&Frame { from: me, msg });
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = send_frame(to, &bytes).await {
                tracing::debug!(%to, %e, "gossip send failed");
            }
        });
    }
}

/// A gossip frame: the sender's gossip address (peers are named by it) and the message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Frame {
    from: SocketAddr,
    msg: Message<String, String>,
}

async fn send_frame(to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    s.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    s.write_all(bytes).await?;
    s.shutdown().await
}

async fn receive(
    listener: TcpListener,
    shared: Arc<Shared>,
    me: SocketAddr,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let read = async {
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await?;
                let len = u32::from_be_bytes(len) as usize;
                if len > MAX_FRAME {
                    return Err(std::io::Error::other(format!("frame of {len} bytes")));
                }
                let mut buf = vec![0u8; len];
                stream.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(buf)
            };
            let Ok(Ok(buf)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
                return;
            };
            match wire::decode::<Frame>(&buf, MAX_FRAME) {
                Ok(frame) => {
                    let effects = shared.replica().handle_message(frame.from, frame.msg);
                    send_all(&shared, me, effects);
                }
                Err(e) => tracing::warn!(%e, "dropped a bad gossip frame"),
            }
        });
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
        "dropped_sends": shared.dropped_sends.load(std::sync::atomic::Ordering::Relaxed),
    }))
}
