//! Connections: the accept loop and inbound readers, and one task per peer that owns the
//! outbound connection to it.
//!
//! ```text
//!  accept ─> slot of max_inbound? no ─> close, count InboundLimit
//!         └> handshake::accept ─> inbound reader ──frames──> Incoming
//!                                 response writer <─Reply── (bounded queue)
//!  send/request ─> peer queue ─> peer task: connection alive? no ─> in backoff? fail fast
//!                                                                 └> dial + handshake::dial
//!                                 write frame (io_timeout); outbound reader ─> responses
//! ```
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use heck_swim::Keyring;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::frame::{self, Kind, Opener, ReadError, Sealer};
use crate::handshake::{self, HandshakeError};
use crate::stats::{Counters, Dropped};
use crate::{Channel, Config, Inbound, Peer, Reject, Reply, StreamError};

type Answer = oneshot::Sender<Result<Vec<u8>, StreamError>>;

/// What the peer task is asked to send.
pub(crate) enum Outgoing {
    OneWay {
        channel: Channel,
        bytes: Vec<u8>,
    },
    Request {
        channel: Channel,
        bytes: Vec<u8>,
        reply: Answer,
    },
}

impl Outgoing {
    /// Give up on it: count a one-way frame, tell a requester why.
    fn fail(self, counters: &Counters, cause: Dropped, error: StreamError) {
        counters.drop(cause);
        if let Outgoing::Request { reply, .. } = self {
            let _ = reply.send(Err(error));
        }
    }
}

/// A response queued on an inbound connection.
#[derive(Debug)]
pub(crate) struct Response {
    pub id: u64,
    pub channel: Channel,
    pub bytes: Vec<u8>,
}

struct PeerHandle {
    addr: SocketAddr,
    tx: mpsc::Sender<Outgoing>,
}

/// Everything the tasks of one transport share.
pub(crate) struct Inner {
    pub config: Config,
    pub keyring: Keyring,
    pub me: Peer,
    pub stats: Counters,
    peers: Mutex<HashMap<String, PeerHandle>>,
    /// Bytes of frames read and not yet consumed (`max_buffered_bytes`).
    budget: Arc<Semaphore>,
    /// Inbound connections open (`max_inbound`).
    inbound_slots: Arc<Semaphore>,
    incoming: mpsc::Sender<Inbound>,
    pub shutdown: CancellationToken,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn new(
        config: Config,
        keyring: Keyring,
        incoming: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
    ) -> Inner {
        Inner {
            me: Peer {
                name: config.name.clone(),
                addr: config.advertise,
            },
            budget: Arc::new(Semaphore::new(config.max_buffered_bytes)),
            inbound_slots: Arc::new(Semaphore::new(config.max_inbound)),
            config,
            keyring,
            stats: Counters::default(),
            peers: Mutex::new(HashMap::new()),
            incoming,
            shutdown,
            runtime,
        }
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<String, PeerHandle>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn peers(&self) -> BTreeMap<String, SocketAddr> {
        self.lock_peers()
            .iter()
            .filter(|(_, h)| !h.tx.is_closed())
            .map(|(n, h)| (n.clone(), h.addr))
            .collect()
    }

    pub(crate) fn check_size(&self, len: usize) -> Result<(), StreamError> {
        if len > self.config.max_frame {
            self.stats.drop(Dropped::TooLarge);
            return Err(StreamError::TooLarge {
                len,
                max: self.config.max_frame,
            });
        }
        Ok(())
    }

    /// A share of the read budget for a frame of `len` sealed bytes, waiting at most the IO
    /// timeout.
    async fn reserve(self: Arc<Self>, len: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(len).ok()?;
        tokio::time::timeout(
            self.config.io_timeout,
            self.budget.clone().acquire_many_owned(n),
        )
        .await
        .ok()?
        .ok()
    }

    /// The queue to `to`, starting its task if there is none (or its address changed). With
    /// `conn`, the task starts on that connection; a live task keeps its own instead.
    pub(crate) fn handle(
        self: &Arc<Self>,
        to: &Peer,
        conn: Option<Conn>,
    ) -> Result<mpsc::Sender<Outgoing>, StreamError> {
        let mut peers = self.lock_peers();
        if let Some(h) = peers.get(&to.name)
            && h.addr == to.addr
            && !h.tx.is_closed()
        {
            return Ok(h.tx.clone());
        }
        if !peers.contains_key(&to.name) && peers.len() >= self.config.max_peers {
            peers.retain(|_, h| !h.tx.is_closed());
            if peers.len() >= self.config.max_peers {
                return Err(StreamError::TooManyPeers);
            }
        }
        let (tx, rx) = mpsc::channel(self.config.send_queue);
        self.runtime
            .spawn(peer_task(self.clone(), to.clone(), rx, conn));
        // Replacing a handle drops the old sender: the old task drains its queue and ends.
        peers.insert(
            to.name.clone(),
            PeerHandle {
                addr: to.addr,
                tx: tx.clone(),
            },
        );
        Ok(tx)
    }

    pub(crate) fn enqueue(
        &self,
        tx: &mpsc::Sender<Outgoing>,
        item: Outgoing,
    ) -> Result<(), StreamError> {
        tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(item) => {
                item.fail(&self.stats, Dropped::SendQueueFull, StreamError::QueueFull);
                StreamError::QueueFull
            }
            mpsc::error::TrySendError::Closed(item) => {
                item.fail(&self.stats, Dropped::SendFailed, StreamError::Closed);
                StreamError::Closed
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::debug!(%e, "stream accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = inner.inbound_slots.clone().try_acquire_owned() else {
            inner.stats.reject(Reject::InboundLimit);
            tracing::debug!(%from, "stream connection refused: max_inbound reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        inner
            .runtime
            .spawn(inbound(inner.clone(), stream, from, slot));
    }
}

async fn inbound(
    inner: Arc<Inner>,
    mut stream: TcpStream,
    from: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let shake = handshake::accept(
        &mut stream,
        &inner.keyring,
        &inner.me,
        inner.config.max_sealed(),
    );
    let established = tokio::select! {
        _ = inner.shutdown.cancelled() => return,
        r = tokio::time::timeout(inner.config.io_timeout, shake) => r,
    };
    let est = match established {
        Err(_) => {
            inner.stats.reject(Reject::Timeout);
            return;
        }
        Ok(Err(HandshakeError::Reject(r))) => {
            inner.stats.reject(r);
            tracing::debug!(%from, reason = r.name(), "stream handshake refused");
            return;
        }
        Ok(Err(HandshakeError::Io(e))) => {
            inner.stats.reject(Reject::Truncated);
            tracing::debug!(%from, %e, "stream handshake broke off");
            return;
        }
        Ok(Ok(est)) => est,
    };
    inner.stats.accepted();
    let (rd, wr) = stream.into_split();
    let done = inner.shutdown.child_token();
    let (tx, rx) = mpsc::channel(inner.config.send_queue);
    inner.runtime.spawn(response_writer(
        inner.clone(),
        wr,
        est.sealer,
        rx,
        done.clone(),
    ));
    tokio::select! {
        _ = done.cancelled() => {}
        _ = inbound_reader(&inner, rd, est.opener, est.peer, tx) => {}
    }
    done.cancel();
}

async fn inbound_reader(
    inner: &Arc<Inner>,
    mut rd: OwnedReadHalf,
    mut opener: Opener,
    peer: Peer,
    replies: mpsc::Sender<Response>,
) {
    let idle = inner.config.idle_timeout * 2;
    loop {
        let read = frame::read_raw(
            &mut rd,
            inner.config.max_sealed(),
            Some(idle),
            inner.config.io_timeout,
            |len| inner.clone().reserve(len),
        )
        .await;
        let (sealed, budget) = match read {
            Ok(r) => r,
            Err(e) => return note_read_error(inner, &peer, e),
        };
        let frame = match opener.open(&sealed) {
            Ok(f) => f,
            Err(r) => {
                inner.stats.reject(r);
                tracing::debug!(peer = %peer.name, reason = r.name(), "stream frame refused");
                return;
            }
        };
        let reply = match frame.kind {
            Kind::OneWay => None,
            Kind::Request => Some(Reply {
                id: frame.id,
                channel: frame.channel,
                tx: replies.clone(),
                inner: inner.clone(),
            }),
            Kind::Response => {
                // Only the dialler sends requests on its connection.
                inner.stats.reject(Reject::Malformed);
                return;
            }
        };
        inner.stats.received(frame.channel, frame.payload.len());
        let delivered = inner.incoming.try_send(Inbound {
            from: peer.clone(),
            channel: frame.channel,
            bytes: frame.payload,
            reply,
            _budget: budget,
        });
        match delivered {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => inner.stats.drop(Dropped::IncomingFull),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn note_read_error(inner: &Inner, peer: &Peer, e: ReadError) {
    match e {
        ReadError::Reject(r) => {
            inner.stats.reject(r);
            tracing::debug!(peer = %peer.name, reason = r.name(), "stream frame refused");
        }
        ReadError::Budget => {
            inner.stats.reject(Reject::Timeout);
            tracing::debug!(peer = %peer.name, "stream read budget exhausted");
        }
        ReadError::Idle | ReadError::Io(_) => {}
    }
}

async fn response_writer(
    inner: Arc<Inner>,
    mut wr: OwnedWriteHalf,
    mut sealer: Sealer,
    mut rx: mpsc::Receiver<Response>,
    done: CancellationToken,
) {
    loop {
        let r = tokio::select! {
            _ = done.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(r) = r else { return };
        let Ok(sealed) = sealer.seal(Kind::Response, r.channel, r.id, &r.bytes) else {
            inner.stats.drop(Dropped::ReplyFailed);
            done.cancel();
            return;
        };
        let wrote =
            tokio::time::timeout(inner.config.io_timeout, frame::write_raw(&mut wr, &sealed)).await;
        if !matches!(wrote, Ok(Ok(()))) {
            inner.stats.drop(Dropped::ReplyFailed);
            done.cancel();
            return;
        }
        inner.stats.sent(r.channel, r.bytes.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound

type Pending = Arc<Mutex<HashMap<u64, Answer>>>;

fn lock(p: &Pending) -> MutexGuard<'_, HashMap<u64, Answer>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// One established outbound connection. Dropping it stops its reader.
pub(crate) struct Conn {
    wr: OwnedWriteHalf,
    sealer: Sealer,
    pending: Pending,
    next_id: u64,
    /// Cancelled when the reader sees the connection end (or the connection is dropped).
    dead: CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.dead.cancel();
    }
}

impl Conn {
    /// Write one item; an error means the connection is unusable.
    async fn write(&mut self, inner: &Inner, item: Outgoing) -> Result<(), ()> {
        let (kind, channel, id, bytes, answer) = match item {
            Outgoing::OneWay { channel, bytes } => (Kind::OneWay, channel, 0, bytes, None),
            Outgoing::Request {
                channel,
                bytes,
                reply,
            } => {
                self.next_id = self.next_id.wrapping_add(1);
                (Kind::Request, channel, self.next_id, bytes, Some(reply))
            }
        };
        if let Some(answer) = answer {
            let mut pending = lock(&self.pending);
            if pending.len() >= inner.config.send_queue {
                // Requesters that timed out have dropped their receivers.
                pending.retain(|_, a| !a.is_closed());
            }
            if pending.len() >= inner.config.send_queue {
                inner.stats.drop(Dropped::SendQueueFull);
                let _ = answer.send(Err(StreamError::QueueFull));
                return Ok(());
            }
            pending.insert(id, answer);
        }
        let sealed = match self.sealer.seal(kind, channel, id, &bytes) {
            Ok(s) => s,
            Err(_) => {
                self.fail_pending(id, inner);
                return Err(());
            }
        };
        let wrote = tokio::time::timeout(
            inner.config.io_timeout,
            frame::write_raw(&mut self.wr, &sealed),
        )
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            self.fail_pending(id, inner);
            return Err(());
        }
        inner.stats.sent(channel, bytes.len());
        Ok(())
    }

    fn fail_pending(&self, id: u64, inner: &Inner) {
        inner.stats.drop(Dropped::SendFailed);
        if let Some(a) = lock(&self.pending).remove(&id) {
            let _ = a.send(Err(StreamError::Closed));
        }
    }
}

/// Dial `addr` and run the dialler's handshake; `expect` is the name we believe is there.
pub(crate) async fn dial(
    inner: &Arc<Inner>,
    addr: SocketAddr,
    expect: Option<&str>,
) -> Result<(Conn, Peer), StreamError> {
    let mut stream = tokio::time::timeout(inner.config.dial_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| StreamError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    let shake = handshake::dial(
        &mut stream,
        &inner.keyring,
        &inner.me,
        expect,
        inner.config.max_sealed(),
    );
    let est = match tokio::time::timeout(inner.config.io_timeout, shake).await {
        Err(_) => {
            inner.stats.reject(Reject::Timeout);
            return Err(StreamError::Timeout("handshake"));
        }
        Ok(Err(HandshakeError::Reject(r))) => {
            inner.stats.reject(r);
            return Err(StreamError::Handshake {
                addr,
                reason: format!("refused ({})", r.name()),
            });
        }
        Ok(Err(HandshakeError::Io(e))) => {
            return Err(StreamError::Handshake {
                addr,
                reason: format!(
                    "the peer closed the connection ({e}): a different key or cluster name, \
                     or the peer is at its inbound connection limit"
                ),
            });
        }
        Ok(Ok(est)) => est,
    };
    inner.stats.dialed();
    let (rd, wr) = stream.into_split();
    let conn = Conn {
        wr,
        sealer: est.sealer,
        pending: Pending::default(),
        next_id: 0,
        dead: inner.shutdown.child_token(),
    };
    inner.runtime.spawn(outbound_reader(
        inner.clone(),
        rd,
        est.opener,
        conn.pending.clone(),
        conn.dead.clone(),
        est.peer.clone(),
    ));
    Ok((conn, est.peer))
}

/// Reads responses on an outbound connection until it ends; then fails what is pending.
async fn outbound_reader(
    inner: Arc<Inner>,
    mut rd: OwnedReadHalf,
    mut opener: Opener,
    pending: Pending,
    dead: CancellationToken,
    peer: Peer,
) {
    loop {
        let read = tokio::select! {
            _ = dead.cancelled() => break,
            r = frame::read_raw(
                &mut rd,
                inner.config.max_sealed(),
                None,
                inner.config.io_timeout,
                |len| inner.clone().reserve(len),
            ) => r,
        };
        let (sealed, _budget) = match read {
            Ok(r) => r,
            Err(e) => {
                note_read_error(&inner, &peer, e);
                break;
            }
        };
        match opener.open(&sealed) {
            Ok(f) if f.kind == Kind::Response => {
                inner.stats.received(f.channel, f.payload.len());
                if let Some(a) = lock(&pending).remove(&f.id) {
                    let _ = a.send(Ok(f.payload));
                }
            }
            Ok(_) => {
                // The acceptor only answers; anything else is a broken peer.
                inner.stats.reject(Reject::Malformed);
                break;
            }
            Err(r) => {
                inner.stats.reject(r);
                break;
            }
        }
    }
    dead.cancel();
    for (_, a) in lock(&pending).drain() {
        let _ = a.send(Err(StreamError::Closed));
    }
}

/// Owns the outbound connection to one peer: dials on demand, reuses it, redials with
/// backoff, and ends after `idle_timeout` with nothing to send.
async fn peer_task(
    inner: Arc<Inner>,
    peer: Peer,
    mut rx: mpsc::Receiver<Outgoing>,
    mut conn: Option<Conn>,
) {
    let mut backoff = inner.config.backoff_min;
    let mut retry_at: Option<Instant> = None;
    loop {
        let item = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(inner.config.idle_timeout) => break,
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        if conn.as_ref().is_some_and(|c| c.dead.is_cancelled()) {
            conn = None;
        }
        if conn.is_none() {
            if retry_at.is_some_and(|t| Instant::now() < t) {
                item.fail(&inner.stats, Dropped::Unreachable, StreamError::Unreachable);
                continue;
            }
            match dial(&inner, peer.addr, Some(&peer.name)).await {
                Ok((c, _)) => {
                    conn = Some(c);
                    backoff = inner.config.backoff_min;
                    retry_at = None;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.name, addr = %peer.addr, %e, "stream dial failed");
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(inner.config.backoff_max);
                    item.fail(&inner.stats, Dropped::Unreachable, e);
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut()
            && c.write(&inner, item).await.is_err()
        {
            conn = None;
        }
    }
    rx.close();
    while let Ok(item) = rx.try_recv() {
        item.fail(&inner.stats, Dropped::SendFailed, StreamError::Closed);
    }
}
