//! The membership driver: one task owns a [`heck_swim::Swim`] and a UDP socket, seals and opens
//! packets with the key ring, delivers timers, and publishes the member list for the API.
//!
//! ```text
//!   select (biased): shutdown → leave, flush, stop
//!                    earliest timer due → swim.handle_timer
//!                    datagram → open (drop + count if bad) → swim.handle_packet
//!   effects: Send → seal with a fresh 24-byte nonce → send_to;  Schedule → timer heap
//!            Notify → log, and refresh the published member list
//! ```
//! The stream transport (`heck_stream`, TCP) listens on the same address and port as the UDP
//! socket, as memberlist does; push-pull will ride on it. Today its incoming frames are only
//! counted and dropped.
//!
//! The gossip address is where the sockets are bound; the advertised address is what this
//! node tells others (in SWIM and in stream handshakes). Binding `0.0.0.0` needs an explicit
//! advertised address (`heck_stream::advertise_addr`).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heck_swim::{Config, Effect, Keyring, Notification, Now, Packet, State, Swim, Timer, wire};
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Settings of the membership layer.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's stable name.
    pub node_name: String,
    /// Address the UDP gossip socket and the TCP stream listener are bound to (may be
    /// `0.0.0.0`).
    pub gossip_addr: SocketAddr,
    /// Address other members reach this one at (never unspecified): what SWIM and the stream
    /// handshake advertise.
    pub advertise_addr: SocketAddr,
    /// Seeds to join through.
    pub join: Vec<SocketAddr>,
    /// Protocol parameters (`Config::lan()` or `Config::fast()`).
    pub swim: Config,
    /// The key ring (the cluster name is its associated data).
    pub keyring: Keyring,
}

/// A member as `GET /v1/members` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    /// Name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: &'static str,
    /// Incarnation.
    pub incarnation: u64,
}

/// Counters of the transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Packets dropped because they did not open (wrong key or cluster, tampered, garbage).
    pub dropped_bad: std::sync::atomic::AtomicU64,
    /// Packets that could not be sent.
    pub send_errors: std::sync::atomic::AtomicU64,
    /// Stream frames received before anything consumes them (push-pull comes later).
    pub stream_unhandled: std::sync::atomic::AtomicU64,
}

/// What the API reads.
#[derive(Debug, Default)]
pub struct MembershipView {
    members: Mutex<Vec<MemberView>>,
    /// Transport counters.
    pub stats: TransportStats,
    /// The stream transport, once started (for its counters).
    stream: Mutex<Option<heck_stream::Stream>>,
}

impl MembershipView {
    /// Every member, this node first.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The stream transport's counters (traffic per channel, rejects by reason, drops), once
    /// it runs.
    pub fn stream_stats(&self) -> Option<heck_stream::Stats> {
        self.stream
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.stats()))
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}

fn publish(swim: &Swim<SocketAddr>, view: &MembershipView) {
    let me = swim.me();
    let mut list = vec![MemberView {
        name: me.name.clone(),
        addr: me.addr.to_string(),
        state: state_name(me.state),
        incarnation: me.incarnation,
    }];
    list.extend(swim.members().map(|m| MemberView {
        name: m.name.clone(),
        addr: m.addr.to_string(),
        state: state_name(m.state),
        incarnation: m.incarnation,
    }));
    if let Ok(mut m) = view.members.lock() {
        *m = list;
    }
}

/// The sockets of one member: UDP for SWIM, TCP for the stream transport, on one port.
#[derive(Debug)]
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
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

/// Run membership until `shutdown`; then leave gracefully.
pub async fn run(
    config: MembershipConfig,
    sockets: Sockets,
    view: Arc<MembershipView>,
    shutdown: CancellationToken,
) {
    let socket = sockets.udp;
    let stream = heck_stream::Stream::start(
        heck_stream::Config::new(config.node_name.clone(), config.advertise_addr),
        config.keyring.clone(),
        sockets.tcp,
        shutdown.clone(),
    );
    // The handle stays in the view for its counters (and for the push-pull wiring); the
    // transport runs until `shutdown` either way.
    match stream {
        Ok((stream, incoming)) => {
            tokio::spawn(drain_stream(incoming, view.clone()));
            if let Ok(mut s) = view.stream.lock() {
                *s = Some(stream);
            }
        }
        Err(e) => tracing::error!(%e, "stream transport not started"),
    }
    let incarnation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let seed = getrandom::u64().unwrap_or(incarnation);
    let mut swim = match Swim::new(
        config.node_name.clone(),
        config.advertise_addr,
        incarnation,
        config.swim,
        seed,
    ) {
        Ok(swim) => swim,
        Err(e) => {
            tracing::error!(%e, "membership not started");
            return;
        }
    };
    let start = Instant::now();
    let mut timers: BinaryHeap<Reverse<(Instant, u64, Timer)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; wire::MAX_PACKET + 1];
    let effects = swim.start(clock(start), config.join.clone());
    apply(
        &mut swim,
        effects,
        &socket,
        &config.keyring,
        &view,
        &mut timers,
        &mut seq,
    )
    .await;

    loop {
        let next = timers.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let effects = swim.leave(clock(start));
                apply(&mut swim, effects, &socket, &config.keyring, &view, &mut timers, &mut seq).await;
                return;
            }
            _ = async { if let Some(at) = next { tokio::time::sleep_until(at).await } }, if next.is_some() => {
                let now = Instant::now();
                // Deliver every due timer, in order.
                let mut due = Vec::new();
                while timers.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    if let Some(Reverse((_, _, t))) = timers.pop() {
                        due.push(t);
                    }
                }
                for t in due {
                    let effects = swim.handle_timer(clock(start), t);
                    apply(&mut swim, effects, &socket, &config.keyring, &view, &mut timers, &mut seq).await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                match config.keyring.open::<Packet<SocketAddr>>(&buf[..n]) {
                    Ok(packet) => {
                        let effects = swim.handle_packet(clock(start), packet);
                        apply(&mut swim, effects, &socket, &config.keyring, &view, &mut timers, &mut seq).await;
                    }
                    Err(e) => {
                        view.stats.dropped_bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(%from, %e, "dropped a gossip packet");
                    }
                }
            }
        }
    }
}

/// Until push-pull consumes them: count and drop what peers send on the stream.
async fn drain_stream(mut incoming: heck_stream::Incoming, view: Arc<MembershipView>) {
    while let Some(frame) = incoming.recv().await {
        view.stats
            .stream_unhandled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(peer = %frame.from.name, channel = frame.channel.name(), "stream frame not handled yet");
    }
}

async fn apply(
    swim: &mut Swim<SocketAddr>,
    effects: Vec<Effect<SocketAddr>>,
    socket: &UdpSocket,
    keyring: &Keyring,
    view: &MembershipView,
    timers: &mut BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: &mut u64,
) {
    for e in effects {
        match e {
            Effect::Send { to, packet } => {
                let mut nonce = [0u8; 24];
                if getrandom::fill(&mut nonce).is_err() {
                    view.stats
                        .send_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                match keyring.seal(&packet, nonce) {
                    Ok(bytes) => {
                        if socket.send_to(&bytes, to).await.is_err() {
                            view.stats
                                .send_errors
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%e, "cannot seal a gossip packet");
                        view.stats
                            .send_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            // No stream transport here yet: joins and anti-entropy ride on UDP join replies
            // (a sample of members each) until push-pull is wired to a TCP stream.
            Effect::PushPull { .. } => {}
            Effect::Schedule { after, timer } => {
                *seq += 1;
                timers.push(Reverse((Instant::now() + after, *seq, timer)));
            }
            Effect::Notify(n) => match n {
                Notification::Up(m) => tracing::info!(member = %m, "member up"),
                Notification::Suspect(m) => tracing::info!(member = %m, "member suspect"),
                Notification::Down(m) => tracing::warn!(member = %m, "member down"),
                Notification::Left(m) => tracing::info!(member = %m, "member left"),
                Notification::Payload(_) => {}
                Notification::ClockSkew { from, skew_ms } => tracing::warn!(
                    member = %from,
                    skew_ms,
                    "dropping this member's packets: its clock is {skew_ms} ms behind ours \
                     (negative: ahead), beyond the replay window"
                ),
            },
        }
    }
    // Cheap (a few hundred members at most) and covers changes without a notification too,
    // like our own incarnation after a refutation.
    publish(swim, view);
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
