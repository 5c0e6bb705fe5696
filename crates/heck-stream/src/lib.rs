//! One authenticated, encrypted stream per peer, over TCP on the gossip address.
//!
//! Invariant: a frame is delivered only if it came on a connection whose other side proved,
//! during a fresh handshake, that it holds a key of the ring for this cluster; it carries the
//! name that side gave in the handshake, never a name from the frame; and it is the next frame
//! of that connection in that direction (replayed, reordered or spliced frames do not open).
//!
//! ```text
//!  send(peer, channel, bytes) ──> per-peer queue (bounded) ──> peer task: one connection,
//!  request(peer, channel, bytes) ─┘                            dialled on demand, reused,
//!                                                              redialled with backoff
//!  TCP listener (same port as the UDP gossip socket)
//!     at most max_inbound connections ─> handshake (io_timeout) ─> frames ─> Incoming (bounded)
//!                                                        request ─> Reply ─> response frame
//! ```
//! Each side sends on the connection it dialled; the acceptor only answers requests on the
//! connection they came on. So between two nodes there are at most two connections, one
//! dialled by each, and no tie-breaking is needed when both dial at once.
//!
//! Bounds: a frame's length is checked against the cap before anything is allocated; frame
//! bytes read and not yet consumed share one budget (`max_buffered_bytes`), held by each
//! [`Inbound`] until it is dropped; every queue is bounded and what does not fit is counted
//! in [`Stats`]. See `docs/protocols/stream.md` for the handshake and the framing.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heck_swim::Keyring;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

mod conn;
mod frame;
#[cfg(test)]
mod fuzz;
mod handshake;
mod stats;

pub use frame::HEADER;
pub use handshake::{MAX_HANDSHAKE, MAX_NAME};
pub use stats::{Stats, Traffic};

/// A node as the stream knows it: its name and the address it advertises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Peer {
    /// The node's name (at most [`MAX_NAME`] bytes).
    pub name: String,
    /// Its advertised gossip address (UDP and TCP).
    pub addr: SocketAddr,
}

/// What a frame is for. Each channel is counted on its own in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Channel {
    /// SWIM push-pull: a full member-state exchange (a request and its response).
    PushPull = 1,
    /// CRDT anti-entropy: deltas, acks and digests addressed to one peer.
    Crdt = 2,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 2] = [Channel::PushPull, Channel::Crdt];

    fn from_u8(b: u8) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// Its name in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Channel::PushPull => "push_pull",
            Channel::Crdt => "crdt",
        }
    }
}

/// Why bytes from the network were refused (each reason is counted; the connection closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// A length over the cap (checked before allocating).
    Oversized,
    /// No key of the ring opens it: wrong key, another cluster, another connection, tampered,
    /// or garbage.
    Unauthenticated,
    /// Authenticated but not a valid message (bad header, kind, channel or name).
    Malformed,
    /// A handshake echo that is not our fresh challenge, or a frame out of sequence.
    Replayed,
    /// The node at the address is not the one we dialled.
    WrongPeer,
    /// Over `max_inbound` connections at once: closed before reading a byte.
    InboundLimit,
    /// A handshake or a frame body that did not arrive within `io_timeout`.
    Timeout,
    /// Our own failure (no randomness, a nonce counter at its end).
    Internal,
    /// The connection ended (EOF or reset) in the middle of the handshake.
    Truncated,
}

impl Reject {
    /// Every reason.
    pub const ALL: [Reject; 9] = [
        Reject::Oversized,
        Reject::Unauthenticated,
        Reject::Malformed,
        Reject::Replayed,
        Reject::WrongPeer,
        Reject::InboundLimit,
        Reject::Timeout,
        Reject::Internal,
        Reject::Truncated,
    ];

    /// Its name in stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Unauthenticated => "unauthenticated",
            Reject::Malformed => "malformed",
            Reject::Replayed => "replayed",
            Reject::WrongPeer => "wrong_peer",
            Reject::InboundLimit => "inbound_limit",
            Reject::Timeout => "timeout",
            Reject::Internal => "internal",
            Reject::Truncated => "truncated",
        }
    }
}

/// Settings of one node's stream transport. [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name, sent in the handshake (1..=[`MAX_NAME`] bytes).
    pub name: String,
    /// The address this node advertises (peers dial it); never an unspecified address.
    pub advertise: SocketAddr,
    /// Largest payload of one frame, in bytes. Default 4 MiB; 1 KiB..=64 MiB. Larger sends
    /// are refused (the CRDT chunks its messages below it).
    pub max_frame: usize,
    /// Bytes of frames read and not yet consumed, over all connections. Default 64 MiB; at
    /// least `max_frame` plus one frame's overhead. A reader that cannot get its share within
    /// `io_timeout` closes its connection.
    pub max_buffered_bytes: usize,
    /// Inbound connections open at once. Default 1,024; 1..=65,536. Beyond it a connection is
    /// closed at once and counted ([`Reject::InboundLimit`]). Every peer that sends to this
    /// node keeps one open (until it has been idle), so keep it above the cluster size.
    pub max_inbound: usize,
    /// Peers with an outbound queue at once. Default 4,096; at least 1.
    pub max_peers: usize,
    /// Frames queued for one peer (and responses queued on one inbound connection). Default
    /// 256; at least 1. A full queue drops the send and counts it.
    pub send_queue: usize,
    /// Frames received and not yet taken from [`Incoming`]. Default 1,024; at least 1.
    pub incoming_queue: usize,
    /// Longest wait for a TCP connect. Default 5 s.
    pub dial_timeout: Duration,
    /// Longest wait for a handshake, for one frame's body once its length has arrived, for
    /// one write, and for a request's response (memberlist's LAN TCPTimeout is 10 s).
    /// Default 10 s.
    pub io_timeout: Duration,
    /// An outbound connection with nothing to send for this long is closed (its peer task
    /// ends); an inbound one silent for twice this long is closed by the acceptor, so the
    /// dialer always closes first. Default 60 s; at least `io_timeout`.
    pub idle_timeout: Duration,
    /// First wait before redialling a peer that could not be reached; it doubles on each
    /// failure up to `backoff_max`. Sends to that peer meanwhile fail at once (counted).
    /// Default 100 ms.
    pub backoff_min: Duration,
    /// Longest wait between two dials of an unreachable peer. Default 10 s.
    pub backoff_max: Duration,
}

impl Config {
    /// The defaults for a node named `name` that advertises `advertise`.
    pub fn new(name: impl Into<String>, advertise: SocketAddr) -> Config {
        Config {
            name: name.into(),
            advertise,
            max_frame: 4 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_inbound: 1024,
            max_peers: 4096,
            send_queue: 256,
            incoming_queue: 1024,
            dial_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// The largest sealed frame on the wire, in bytes.
    pub fn max_sealed(&self) -> usize {
        self.max_frame + HEADER + heck_swim::wire::OVERHEAD
    }

    /// Check every field against its documented range.
    pub fn validate(&self) -> Result<(), StreamError> {
        let bad = |why: String| Err(StreamError::Config(why));
        if self.name.is_empty() || self.name.len() > MAX_NAME {
            return bad(format!("the name must have 1..={MAX_NAME} bytes"));
        }
        if self.advertise.ip().is_unspecified() || self.advertise.port() == 0 {
            return bad(format!(
                "the advertised address {} is not one a peer can dial",
                self.advertise
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_frame) {
            return bad(format!(
                "max_frame {} is not in 1 KiB..=64 MiB",
                self.max_frame
            ));
        }
        if self.max_buffered_bytes < self.max_sealed()
            || self.max_buffered_bytes > u32::MAX as usize
        {
            return bad(format!(
                "max_buffered_bytes {} is below one frame ({}) or above 4 GiB",
                self.max_buffered_bytes,
                self.max_sealed()
            ));
        }
        if !(1..=65_536).contains(&self.max_inbound) {
            return bad(format!(
                "max_inbound {} is not in 1..=65536",
                self.max_inbound
            ));
        }
        if self.max_peers == 0 || self.send_queue == 0 || self.incoming_queue == 0 {
            return bad("max_peers, send_queue and incoming_queue must be at least 1".into());
        }
        if self.dial_timeout.is_zero() || self.io_timeout.is_zero() {
            return bad("dial_timeout and io_timeout must be above zero".into());
        }
        if self.idle_timeout < self.io_timeout {
            return bad("idle_timeout must be at least io_timeout".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return bad("backoff_min must be above zero and at most backoff_max".into());
        }
        Ok(())
    }
}

/// The address to advertise: `advertise` if given, else `bind` unless `bind` is unspecified
/// (`0.0.0.0`, `::`) or has port 0, which no peer could dial. One rule for every command that
/// binds a gossip or stream address.
pub fn advertise_addr(
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Result<SocketAddr, String> {
    let addr = advertise.unwrap_or(bind);
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{bind} is not an address peers can reach: pass the address they should use with --advertise-addr"
        ));
    }
    if addr.port() == 0 {
        return Err(format!(
            "{addr} has port 0: give the port peers should use (--advertise-addr)"
        ));
    }
    Ok(addr)
}

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A setting is out of its range.
    #[error("stream config: {0}")]
    Config(String),
    /// Not called inside a tokio runtime.
    #[error("the stream transport needs a tokio runtime")]
    NoRuntime,
    /// The TCP connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A connect, handshake, write or response did not complete in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The other side was refused during the handshake (or refused us: a closed connection
    /// during the handshake usually means a different key or cluster name).
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address dialled.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// More than `max_frame` bytes.
    #[error("{len} bytes exceed the frame cap of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The peer's queue is full (the send was dropped and counted).
    #[error("the queue to the peer is full")]
    QueueFull,
    /// `max_peers` peers already have queues.
    #[error("too many peers")]
    TooManyPeers,
    /// The peer could not be reached recently; no dial until the backoff has passed.
    #[error("the peer is unreachable (backing off)")]
    Unreachable,
    /// The connection closed before the response came, or the transport shut down.
    #[error("the connection closed")]
    Closed,
}

/// One frame received from an authenticated peer.
#[derive(Debug)]
pub struct Inbound {
    /// Who sent it: the name and address from the connection's handshake.
    pub from: Peer,
    /// Its channel.
    pub channel: Channel,
    /// The payload.
    pub bytes: Vec<u8>,
    /// Present when the sender waits for a response ([`Stream::request`]).
    pub reply: Option<Reply>,
    /// This frame's share of `max_buffered_bytes`, given back when the frame is dropped.
    _budget: OwnedSemaphorePermit,
}

/// The way back to a request's sender: on the connection the request came on.
#[derive(Debug)]
pub struct Reply {
    id: u64,
    channel: Channel,
    tx: mpsc::Sender<conn::Response>,
    inner: Arc<conn::Inner>,
}

impl Reply {
    /// Send the response. Fails (and counts) when it is too large or the connection's queue
    /// is full or closed; the requester then times out.
    pub fn send(self, bytes: Vec<u8>) -> Result<(), StreamError> {
        let max = self.inner.config.max_frame;
        if bytes.len() > max {
            self.inner.stats.drop(stats::Dropped::TooLarge);
            return Err(StreamError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        self.tx
            .try_send(conn::Response {
                id: self.id,
                channel: self.channel,
                bytes,
            })
            .map_err(|e| {
                self.inner.stats.drop(stats::Dropped::ReplyFailed);
                match e {
                    mpsc::error::TrySendError::Full(_) => StreamError::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => StreamError::Closed,
                }
            })
    }
}

/// The frames peers sent us, oldest first (bounded: `incoming_queue`).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Inbound>,
}

impl Incoming {
    /// The next frame; `None` once the transport has shut down.
    pub async fn recv(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }
}

/// A handle on one node's stream transport (cheap to clone).
#[derive(Debug, Clone)]
pub struct Stream {
    inner: Arc<conn::Inner>,
}

impl Stream {
    /// Start serving `listener` (bind it on the gossip address, the same port as UDP) and
    /// return the handle and the stream of incoming frames. Stops on `shutdown`.
    pub fn start(
        config: Config,
        keyring: Keyring,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(Stream, Incoming), StreamError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StreamError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(config.incoming_queue);
        let inner = Arc::new(conn::Inner::new(config, keyring, tx, shutdown, runtime));
        inner
            .runtime
            .spawn(conn::accept_loop(inner.clone(), listener));
        Ok((Stream { inner }, Incoming { rx }))
    }

    /// This node, as it names itself in handshakes.
    pub fn local(&self) -> &Peer {
        &self.inner.me
    }

    /// Send `bytes` to `to` on `channel`, no answer expected. Queued at once (never waits);
    /// delivered in order over the peer's connection, which is dialled if needed. Delivery is
    /// not confirmed: the CRDT acknowledges at its own level.
    pub fn send(&self, to: &Peer, channel: Channel, bytes: Vec<u8>) -> Result<(), StreamError> {
        self.inner.check_size(bytes.len())?;
        let tx = self.inner.handle(to, None)?;
        self.inner
            .enqueue(&tx, conn::Outgoing::OneWay { channel, bytes })
    }

    /// Send `bytes` to `to` and wait for its response (at most the dial timeout plus the IO
    /// timeout).
    pub async fn request(
        &self,
        to: &Peer,
        channel: Channel,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, StreamError> {
        self.inner.check_size(bytes.len())?;
        let tx = self.inner.handle(to, None)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.inner.enqueue(
            &tx,
            conn::Outgoing::Request {
                channel,
                bytes,
                reply,
            },
        )?;
        let wait = self.inner.config.dial_timeout + self.inner.config.io_timeout;
        match tokio::time::timeout(wait, rx).await {
            Err(_) => Err(StreamError::Timeout("response")),
            Ok(Err(_)) => Err(StreamError::Closed),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Dial `addr`, learn who is there from the handshake, and keep the connection as the one
    /// to that peer (unless there already is one). For seeds known only by address.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, StreamError> {
        let (conn, peer) = conn::dial(&self.inner, addr, None).await?;
        self.inner.handle(&peer, Some(conn))?;
        Ok(peer)
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Peers with a live outbound queue, by name.
    pub fn peers(&self) -> BTreeMap<String, SocketAddr> {
        self.inner.peers()
    }
}
