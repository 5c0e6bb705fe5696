//! The membership driver: one task owns a [`heck_swim::Swim`] and a UDP socket, seals and opens
//! packets with the key ring, delivers timers, and publishes the member list for the API.
//!
//! ```text
//!   select (biased): shutdown → leave, flush, stop
//!                    earliest timer due → swim.handle_timer
//!                    datagram → open (drop + count if bad) → swim.handle_packet
//!                    a push-pull we started ended → swim.handle_push_pull (its reply)
//!                    stream frame: push-pull request → reply local_state, then merge
//!   effects: Send → seal with a fresh 24-byte nonce → send_to;  Schedule → timer heap
//!            PushPull → spawn the exchange (bounded, see `push_pull`)
//!            Notify → log, and refresh the published member list and counters
//! ```
//! The stream transport (`heck_stream`, TCP) listens on the same address and port as the UDP
//! socket, as memberlist does; push-pull rides on it (module [`push_pull`]). Nothing in this
//! loop waits on a stream: exchanges run in their own tasks and report back.
//!
//! The gossip address is where the sockets are bound; the advertised address is what this
//! node tells others (in SWIM and in stream handshakes). Binding `0.0.0.0` needs an explicit
//! advertised address (`heck_stream::advertise_addr`).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heck_swim::{Config, Effect, Keyring, Notification, Now, Packet, State, Swim, Timer, wire};
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod push_pull;

use push_pull::PushPulls;
pub use push_pull::{PushPullCounts, PushPullStats};

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
    /// Stream frames on a channel the agent does not serve (the CRDT channel: `heck kv` runs
    /// it, not the agent).
    pub stream_unhandled: std::sync::atomic::AtomicU64,
}

/// What the API reads.
#[derive(Debug, Default)]
pub struct MembershipView {
    members: Mutex<Vec<MemberView>>,
    /// Transport counters.
    pub stats: TransportStats,
    /// Push-pull counters (exchanges we started, requests we served, states refused).
    pub push_pull: PushPullStats,
    /// SWIM's own counters, as of the last batch of effects.
    swim: Mutex<heck_swim::Stats>,
    /// The stream transport, once started (for its counters).
    stream: Mutex<Option<heck_stream::Stream>>,
}

impl MembershipView {
    /// Every member, this node first.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// SWIM's counters: failed probes, refutations, deaths declared, packets dropped as stale
    /// (replay window), misdirected pings, dropped broadcasts, push-pull states merged
    /// (periodic and join).
    pub fn swim_stats(&self) -> heck_swim::Stats {
        self.swim.lock().map(|s| *s).unwrap_or_default()
    }

    /// The push-pull counters at this moment.
    pub fn push_pull_stats(&self) -> PushPullCounts {
        self.push_pull.snapshot()
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
    if let Ok(mut s) = view.swim.lock() {
        *s = swim.stats();
    }
}

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

/// Run membership until `shutdown`; then leave gracefully.
pub async fn run(
    config: MembershipConfig,
    sockets: Sockets,
    view: Arc<MembershipView>,
    shutdown: CancellationToken,
) {
    let stream = heck_stream::Stream::start(
        heck_stream::Config::new(config.node_name.clone(), config.advertise_addr),
        config.keyring.clone(),
        sockets.tcp,
        shutdown.clone(),
    );
    // Without the stream, SWIM still runs over UDP: joins learn a sample of members per join
    // reply and there is no anti-entropy (push-pulls are counted as failed).
    let (push_pulls, incoming) = match stream {
        Ok((stream, incoming)) => {
            if let Ok(mut s) = view.stream.lock() {
                *s = Some(stream.clone());
            }
            (Some(PushPulls::new(stream)), Some(incoming))
        }
        Err(e) => {
            tracing::error!(%e, "stream transport not started: no push-pull");
            (None, None)
        }
    };
    let incarnation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let seed = getrandom::u64().unwrap_or(incarnation);
    let swim = match Swim::new(
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
    let mut driver = MembershipDriver {
        swim,
        socket: sockets.udp,
        keyring: config.keyring,
        view,
        timers: BinaryHeap::new(),
        seq: 0,
        start: Instant::now(),
        push_pulls,
    };
    driver.run(config.join, incoming, shutdown).await;
}

/// The one task that owns the SWIM state machine and everything it drives.
struct MembershipDriver {
    swim: Swim<SocketAddr>,
    /// The UDP gossip socket (SWIM's probes, acks, joins and gossip).
    socket: UdpSocket,
    /// Seals and opens datagrams (the stream has its own copy).
    keyring: Keyring,
    /// What the API reads: refreshed after every batch of effects.
    view: Arc<MembershipView>,
    /// Pending SWIM timers, earliest first; `seq` breaks ties in scheduling order.
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: u64,
    /// The origin of SWIM's monotonic clock.
    start: Instant,
    /// Push-pulls this node started; `None` if the stream transport did not start.
    push_pulls: Option<PushPulls>,
}

impl MembershipDriver {
    async fn run(
        &mut self,
        seeds: Vec<SocketAddr>,
        mut incoming: Option<heck_stream::Incoming>,
        shutdown: CancellationToken,
    ) {
        let mut buf = vec![0u8; wire::MAX_PACKET + 1];
        let effects = self.swim.start(clock(self.start), seeds);
        self.apply(effects).await;
        loop {
            let next = self.timers.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let effects = self.swim.leave(clock(self.start));
                    self.apply(effects).await;
                    return;
                }
                _ = async { if let Some(at) = next { tokio::time::sleep_until(at).await } }, if next.is_some() => {
                    self.fire_due_timers().await;
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
            let effects = self.swim.handle_timer(clock(self.start), t);
            self.apply(effects).await;
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        match self.keyring.open::<Packet<SocketAddr>>(bytes) {
            Ok(packet) => {
                let effects = self.swim.handle_packet(clock(self.start), packet);
                self.apply(effects).await;
            }
            Err(e) => {
                self.view.stats.dropped_bad.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, %e, "dropped a gossip packet");
            }
        }
    }

    /// A peer's frame. A push-pull request is answered with our state as it was *before* its
    /// state is merged (memberlist's order: both sides then hold the union, and our reply does
    /// not echo its own news back), then merged.
    async fn on_stream_frame(&mut self, frame: heck_stream::Inbound) {
        let stats = &self.view.push_pull;
        if frame.channel != heck_stream::Channel::PushPull {
            // The agent runs no CRDT; `heck kv` does, on its own port.
            self.view
                .stats
                .stream_unhandled
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
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
        match postcard::to_allocvec(&self.swim.local_state()) {
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
        let effects = self
            .swim
            .handle_push_pull(clock(self.start), request.state, request.join);
        self.apply(effects).await;
    }

    async fn on_push_pull_outcome(&mut self, outcome: push_pull::Outcome) {
        let stats = &self.view.push_pull;
        match outcome.result {
            Ok(state) => {
                stats.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %state.from, members = state.members.len(), join = outcome.join, "push-pull");
                let effects = self
                    .swim
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

    /// Start the exchange `Effect::PushPull` asks for, without waiting for it.
    fn push_pull(&mut self, to: SocketAddr, join: bool) {
        let stats = &self.view.push_pull;
        let Some(push_pulls) = self.push_pulls.as_mut() else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A periodic partner is an alive member: its name is known, and the handshake checks
        // it. A seed is an address only, and whoever answers there is the one to join through
        // (a member we knew there may have restarted under another name): its name comes
        // from the handshake.
        let name = if join {
            None
        } else {
            self.swim
                .members()
                .find(|m| m.addr == to && m.state == State::Alive)
                .map(|m| m.name.clone())
        };
        if !push_pulls.start(to, name, join, self.swim.local_state()) {
            stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn apply(&mut self, effects: Vec<Effect<SocketAddr>>) {
        for e in effects {
            match e {
                Effect::Send { to, packet } => self.send(to, &packet).await,
                Effect::PushPull { to, join } => self.push_pull(to, join),
                Effect::Schedule { after, timer } => {
                    self.seq += 1;
                    self.timers
                        .push(Reverse((Instant::now() + after, self.seq, timer)));
                }
                Effect::Notify(n) => notify(n),
            }
        }
        // Cheap (a few hundred members at most) and covers changes without a notification
        // too, like our own incarnation after a refutation.
        publish(&self.swim, &self.view);
    }

    async fn send(&self, to: SocketAddr, packet: &Packet<SocketAddr>) {
        let errors = &self.view.stats.send_errors;
        let mut nonce = [0u8; 24];
        if getrandom::fill(&mut nonce).is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.keyring.seal(packet, nonce) {
            Ok(bytes) => {
                if self.socket.send_to(&bytes, to).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(%e, "cannot seal a gossip packet");
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn notify(n: Notification) {
    match n {
        Notification::Up(m) => tracing::info!(member = %m, "member up"),
        Notification::Suspect(m) => tracing::info!(member = %m, "member suspect"),
        Notification::Down(m) => tracing::warn!(member = %m, "member down"),
        Notification::Left(m) => tracing::info!(member = %m, "member left"),
        Notification::Payload(_) => {}
        // SWIM reports a sender once, and again only after one of its packets was accepted in
        // between: one line per episode, not one per dropped packet.
        Notification::ClockSkew { from, skew_ms } => {
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
    }
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
