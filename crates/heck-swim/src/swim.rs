//! The SWIM state machine with Lifeguard.
//!
//! ```text
//!  every probe interval × (LHM+1):  next member in a shuffled round-robin order
//!    me ──Ping(seq, target name)─────────────────> target      (a Suspect target gets a fresh
//!    me <─Ack(seq)──────────────────────────────── target       Suspect first: buddy system)
//!  no Ack within probe timeout × (LHM+1):
//!    me ──PingReq(seq, target)──> k alive helpers ──Ping──> target
//!    me <─Ack(seq)──────────────── helper <──Ack───── target
//!    me <─Nack(seq)─────────────── helper             (helper got no answer: Lifeguard nack)
//!  no Ack by the end of the probe interval: suspect target; LHM + (helpers − nacks), or + 1
//!  Suspect(target, inc) spreads by piggyback; target refutes with Alive(inc + 1); otherwise
//!  after the suspicion timeout (min, max, k fixed when it starts) → Dead(target).
//!  every push-pull interval (scaled past 32 members), and on join: PushPull effect → the
//!  driver exchanges local_state() with one member → handle_push_pull merges it.
//! ```
//!
//! Invariants: (1) an update about a member is applied only if it supersedes what we know
//! ([`Update::supersedes`], the one precedence rule); (2) only the member itself raises its
//! incarnation (to refute); (3) time and randomness come in as arguments ([`Now`], a seed): the
//! same inputs give the same effects; (4) no packet exceeds `Config::packet_budget`; (5) every
//! reply goes to the sealed sender address, and a packet sealed outside the replay window is
//! dropped and counted.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use heck_sim::SplitMix64;
use serde::Serialize;

use crate::broadcast::{Broadcasts, Invalidates};
pub use crate::config::{Config, ConfigError};
pub use crate::member::{Member, State, Update};
pub use crate::message::{Body, Effect, Notification, Now, Packet, Timer};
use crate::probe::Probe;
use crate::push_pull::{self, PushPullState};
use crate::suspicion::Suspicion;

impl<A> Invalidates for Update<A> {
    /// A newer update about a member makes the queued older one pointless.
    fn invalidates(&self, older: &Self) -> bool {
        self.name() == older.name()
    }
}

/// Another layer's opaque bytes, piggybacked like updates (encoded exactly as the `Vec<u8>` in
/// [`Packet::payloads`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload(pub Vec<u8>);

/// A payload too large for the UDP channel: send it over the stream transport instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadTooLarge {
    /// Its length in bytes.
    pub len: usize,
    /// The largest accepted ([`Swim::max_payload_len`]).
    pub max: usize,
}

impl std::fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a payload of {} bytes exceeds the {} that fit one gossip packet",
            self.len, self.max
        )
    }
}

impl std::error::Error for PayloadTooLarge {}

/// Bytes of a packet kept for its header and body when sizing payloads: two names of up to ~100
/// bytes, an address, a timestamp and a PingReq body fit with room to spare.
const PAYLOAD_HEADROOM: usize = 300;
/// Slack for the two length prefixes (`updates`, `payloads`) growing as items are added:
/// varints, and a packet of at most `wire::MAX_PACKET` bytes holds fewer than 2^16 items.
const LENGTH_SLACK: usize = 4;
/// Most membership updates queued (one per member at most; past this the best spread go first).
const MAX_QUEUED_UPDATES: usize = 4096;
/// Most payloads queued for piggybacking (past this the best spread go first, counted).
const MAX_QUEUED_PAYLOADS: usize = 256;

/// Encoded (postcard) size of `value` in bytes.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::to_allocvec(value).map_or(usize::MAX, |v| v.len())
}

impl Invalidates for Payload {
    /// Payloads are independent of each other.
    fn invalidates(&self, _older: &Self) -> bool {
        false
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Probes that got no ack at all.
    pub failed_probes: u64,
    /// Times this member refuted a suspicion of itself.
    pub refutations: u64,
    /// Members this member declared dead.
    pub declared_dead: u64,
    /// Packets dropped because they were sealed outside the replay window (replayed, or the
    /// sender's clock is off).
    pub stale_packets: u64,
    /// Pings for another name received at our address (dropped unanswered).
    pub misdirected_pings: u64,
    /// Updates and payloads dropped from a full broadcast queue before all their sends.
    pub dropped_broadcasts: u64,
    /// Periodic push-pull states merged.
    pub push_pulls: u64,
    /// Push-pull states merged as part of a join.
    pub join_push_pulls: u64,
}

/// Most senders reported at once as [`Notification::ClockSkew`] (a bound on that memory).
const MAX_SKEW_REPORTS: usize = 256;

/// One member's SWIM state machine. `A` is an address (a `SocketAddr`, or a simulator id).
#[derive(Debug)]
pub struct Swim<A> {
    config: Config,
    me: Member<A>,
    members: BTreeMap<String, Member<A>>,
    order: Vec<String>,
    next: usize,
    seq: u64,
    probes: BTreeMap<u64, Probe>,
    /// Indirect probes run for others: our seq → (requester, its seq).
    indirect: BTreeMap<u64, (A, u64)>,
    suspicions: BTreeMap<String, Suspicion>,
    /// Senders whose packets fall outside the replay window, already reported to the driver.
    skewed: BTreeSet<String>,
    /// When each dead or left member became so, to forget it after `reap_after`.
    gone_since: BTreeMap<String, Duration>,
    broadcasts: Broadcasts<Update<A>>,
    payloads: Broadcasts<Payload>,
    awareness: u32,
    rng: SplitMix64,
    seeds: Vec<A>,
    left: bool,
    stats: Stats,
}

impl<A: Clone + PartialEq + Serialize> Swim<A> {
    /// A member named `name` at `addr`, incarnation `incarnation` (use a value above any this
    /// name used before, e.g. the start time, so a restart is newer than its own death).
    /// Refuses a `config` that fails [`Config::validate`].
    pub fn new(
        name: impl Into<String>,
        addr: A,
        incarnation: u64,
        config: Config,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Swim {
            config,
            me: Member {
                name: name.into(),
                addr,
                incarnation,
                state: State::Alive,
            },
            members: BTreeMap::new(),
            order: Vec::new(),
            next: 0,
            seq: 0,
            probes: BTreeMap::new(),
            indirect: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            gone_since: BTreeMap::new(),
            skewed: BTreeSet::new(),
            broadcasts: Broadcasts::new(MAX_QUEUED_UPDATES),
            payloads: Broadcasts::new(MAX_QUEUED_PAYLOADS),
            awareness: 0,
            rng: SplitMix64::new(seed ^ 0x5357_494d),
            seeds: Vec::new(),
            left: false,
            stats: Stats::default(),
        })
    }

    /// Start: schedule the timers, and announce to `seeds` (retried every announce interval).
    pub fn start(&mut self, now: Now, seeds: Vec<A>) -> Vec<Effect<A>> {
        self.seeds = seeds;
        let mut out = vec![
            Effect::Schedule {
                after: self.jitter(self.config.probe_interval),
                timer: Timer::Probe,
            },
            Effect::Schedule {
                after: self.config.gossip_interval,
                timer: Timer::Gossip,
            },
            Effect::Schedule {
                after: self.config.announce_interval,
                timer: Timer::Announce,
            },
            Effect::Schedule {
                after: self.jitter(self.config.push_pull_interval),
                timer: Timer::PushPull,
            },
        ];
        self.announce(now, &mut out, true);
        out
    }

    /// This member.
    pub fn me(&self) -> &Member<A> {
        &self.me
    }

    /// Every other member known, in any state.
    pub fn members(&self) -> impl Iterator<Item = &Member<A>> {
        self.members.values()
    }

    /// Members alive or suspect (what ownership should treat as live).
    pub fn live(&self) -> impl Iterator<Item = &Member<A>> {
        self.members
            .values()
            .filter(|m| matches!(m.state, State::Alive | State::Suspect))
    }

    /// Lifeguard's local health multiplier (0 = healthy).
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            dropped_broadcasts: self
                .broadcasts
                .dropped()
                .saturating_add(self.payloads.dropped()),
            ..self.stats
        }
    }

    /// Queue an opaque payload for other members (piggybacked, λ·log n transmissions). One
    /// longer than [`Swim::max_payload_len`] is refused: it belongs on the stream transport.
    pub fn broadcast_payload(&mut self, bytes: Vec<u8>) -> Result<(), PayloadTooLarge> {
        let max = self.max_payload_len();
        if bytes.len() > max {
            return Err(PayloadTooLarge {
                len: bytes.len(),
                max,
            });
        }
        let n = self.transmits();
        self.payloads.push(Payload(bytes), n);
        Ok(())
    }

    /// The longest payload the UDP channel carries: the packet budget less the seal and room
    /// for a packet's header and body.
    pub fn max_payload_len(&self) -> usize {
        self.config
            .packet_budget
            .saturating_sub(crate::wire::OVERHEAD + PAYLOAD_HEADROOM)
    }

    /// Leave gracefully: tell everyone, stop probing.
    pub fn leave(&mut self, now: Now) -> Vec<Effect<A>> {
        self.me.incarnation = self.me.incarnation.saturating_add(1);
        self.me.state = State::Left;
        self.left = true;
        let update = Update::Left {
            name: self.me.name.clone(),
            inc: self.me.incarnation,
        };
        self.enqueue(update);
        let mut out = Vec::new();
        let targets: Vec<A> = self.live().map(|m| m.addr.clone()).collect();
        for to in targets {
            let packet = self.packet(now, Body::Gossip, None);
            out.push(Effect::Send { to, packet });
        }
        out
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        let ns = d.as_nanos().max(1) as u64;
        Duration::from_nanos(self.random() % ns)
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.saturating_mul(self.awareness.saturating_add(1))
    }

    fn n(&self) -> usize {
        self.live().count() + 1
    }

    fn transmits(&self) -> u32 {
        let log = ((self.n() + 1) as f64).log10().ceil().max(1.0) as u32;
        self.config.retransmit_mult.saturating_mul(log)
    }

    fn enqueue(&mut self, update: Update<A>) {
        let left = self.transmits();
        self.broadcasts.push(update, left);
    }

    /// A packet with as many pending updates, then payloads, as fit the byte budget,
    /// least-sent first; `lead` (the buddy system's suspicion notice, or a joiner's own Alive)
    /// goes in front.
    fn packet(&mut self, now: Now, body: Body<A>, lead: Option<Update<A>>) -> Packet<A> {
        let mut packet = Packet {
            from: self.me.name.clone(),
            from_addr: self.me.addr.clone(),
            sent_at_ms: now.wall_ms(),
            body,
            updates: lead.into_iter().collect(),
            payloads: Vec::new(),
        };
        let mut room = self.room_left(&packet);
        self.piggyback(&mut packet, &mut room);
        packet
    }

    /// Add pending updates, then payloads, to `packet` within `room` bytes.
    fn piggyback(&mut self, packet: &mut Packet<A>, room: &mut usize) {
        packet.updates.extend(self.broadcasts.take(room));
        packet
            .payloads
            .extend(self.payloads.take(room).into_iter().map(|p| p.0));
    }

    /// Bytes of the budget left after `packet` as it stands (sealed).
    fn room_left(&self, packet: &Packet<A>) -> usize {
        self.config
            .packet_budget
            .saturating_sub(encoded_len(packet) + crate::wire::OVERHEAD + LENGTH_SLACK)
    }

    /// A join reply: ourselves, then a random sample of the members that fits the budget (the
    /// whole list goes over push-pull; a joiner re-announcing gets another sample).
    fn join_reply(&mut self, now: Now) -> Packet<A> {
        let mut others: Vec<Member<A>> = self.members.values().cloned().collect();
        self.shuffle(&mut others);
        let mut reply = Packet {
            from: self.me.name.clone(),
            from_addr: self.me.addr.clone(),
            sent_at_ms: now.wall_ms(),
            body: Body::JoinReply {
                members: vec![self.me.clone()],
            },
            updates: Vec::new(),
            payloads: Vec::new(),
        };
        // One more length prefix may grow: the member list's.
        let mut room = self.room_left(&reply).saturating_sub(2);
        if let Body::JoinReply { members } = &mut reply.body {
            for m in others {
                let size = encoded_len(&m);
                if size <= room {
                    room -= size;
                    members.push(m);
                }
            }
        }
        self.piggyback(&mut reply, &mut room);
        reply
    }

    fn announce(&mut self, now: Now, out: &mut Vec<Effect<A>>, all_seeds: bool) {
        let alive = Update::Alive {
            name: self.me.name.clone(),
            addr: self.me.addr.clone(),
            inc: self.me.incarnation,
        };
        let mut seeds: Vec<A> = Vec::new();
        if all_seeds {
            seeds.extend(self.seeds.iter().cloned());
        } else if !self.seeds.is_empty() {
            let i = (self.random() % self.seeds.len() as u64) as usize;
            seeds.push(self.seeds[i].clone());
        }
        // Joining is a push-pull with each seed (memberlist), repeated while we know nobody.
        if all_seeds || self.live().next().is_none() {
            for to in seeds.iter().filter(|to| **to != self.me.addr) {
                out.push(Effect::PushPull {
                    to: to.clone(),
                    join: true,
                });
            }
        }
        let mut targets = seeds;
        // A random dead member too: if it is alive on the other side of a healed partition,
        // the two sides merge again.
        let dead: Vec<A> = self
            .members
            .values()
            .filter(|m| m.state == State::Dead)
            .map(|m| m.addr.clone())
            .collect();
        if !dead.is_empty() {
            let i = (self.random() % dead.len() as u64) as usize;
            targets.push(dead[i].clone());
        }
        for to in targets {
            if to == self.me.addr {
                continue;
            }
            let packet = self.packet(now, Body::Join, Some(alive.clone()));
            out.push(Effect::Send { to, packet });
        }
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Now, timer: Timer) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        match timer {
            Timer::Probe => {
                out.push(Effect::Schedule {
                    after: self.scaled(self.config.probe_interval),
                    timer: Timer::Probe,
                });
                self.probe(now, &mut out);
            }
            Timer::ProbeTimeout(seq) => {
                let Some(p) = self.probes.get(&seq) else {
                    return out;
                };
                if p.acked {
                    return out;
                }
                let target = p.target.clone();
                let Some(addr) = self.members.get(&target).map(|m| m.addr.clone()) else {
                    return out;
                };
                // Alive members only (memberlist): a suspect helper is likely the problem itself.
                let mut helpers: Vec<(String, A)> = self
                    .members
                    .values()
                    .filter(|m| m.state == State::Alive && m.name != target)
                    .map(|m| (m.name.clone(), m.addr.clone()))
                    .collect();
                self.shuffle(&mut helpers);
                helpers.truncate(self.config.indirect_checks);
                if let Some(p) = self.probes.get_mut(&seq) {
                    p.helpers = helpers.iter().map(|(name, _)| name.clone()).collect();
                }
                for (_, to) in helpers {
                    let packet = self.packet(
                        now,
                        Body::PingReq {
                            seq,
                            target: target.clone(),
                            addr: addr.clone(),
                        },
                        None,
                    );
                    out.push(Effect::Send { to, packet });
                }
            }
            Timer::ProbeEnd(seq) => {
                let Some(p) = self.probes.remove(&seq) else {
                    return out;
                };
                if p.acked {
                    self.awareness = self.awareness.saturating_sub(1);
                    return out;
                }
                self.stats.failed_probes = self.stats.failed_probes.saturating_add(1);
                // Lifeguard: missing nacks mean our own network or CPU is the problem.
                let delta = p.missing_nacks().unwrap_or(1);
                self.awareness = self
                    .awareness
                    .saturating_add(delta)
                    .min(self.config.awareness_max);
                // Suspect it, or, if it is already suspect, add our independent confirmation
                // (which shortens the suspicion timeout everywhere it spreads).
                if let Some(m) = self.members.get(&p.target).cloned()
                    && matches!(m.state, State::Alive | State::Suspect)
                {
                    let update = Update::Suspect {
                        name: m.name.clone(),
                        inc: m.incarnation,
                        from: self.me.name.clone(),
                    };
                    self.apply(now, update, &mut out);
                }
            }
            Timer::IndirectTimeout(seq) => {
                if let Some((requester, their_seq)) = self.indirect.remove(&seq) {
                    let packet = self.packet(now, Body::Nack { seq: their_seq }, None);
                    out.push(Effect::Send {
                        to: requester,
                        packet,
                    });
                }
            }
            Timer::Suspicion(name) => self.check_suspicion(now, &name, &mut out),
            Timer::Gossip => {
                out.push(Effect::Schedule {
                    after: self.config.gossip_interval,
                    timer: Timer::Gossip,
                });
                if self.broadcasts.is_empty() && self.payloads.is_empty() {
                    return out;
                }
                let mut peers: Vec<A> = self.live().map(|m| m.addr.clone()).collect();
                self.shuffle(&mut peers);
                peers.truncate(self.config.gossip_nodes);
                for to in peers {
                    let packet = self.packet(now, Body::Gossip, None);
                    out.push(Effect::Send { to, packet });
                }
            }
            Timer::PushPull => {
                out.push(Effect::Schedule {
                    after: push_pull::scaled_interval(self.config.push_pull_interval, self.n()),
                    timer: Timer::PushPull,
                });
                let alive: Vec<A> = self
                    .members
                    .values()
                    .filter(|m| m.state == State::Alive)
                    .map(|m| m.addr.clone())
                    .collect();
                if !alive.is_empty() {
                    let i = (self.random() % alive.len() as u64) as usize;
                    out.push(Effect::PushPull {
                        to: alive[i].clone(),
                        join: false,
                    });
                }
            }
            Timer::Announce => {
                out.push(Effect::Schedule {
                    after: self.config.announce_interval,
                    timer: Timer::Announce,
                });
                self.announce(now, &mut out, false);
            }
        }
        out
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.random() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    fn probe(&mut self, now: Now, out: &mut Vec<Effect<A>>) {
        // Randomized round-robin: walk a shuffled list; reshuffle at the end, so every member is
        // probed once per round and a failure is found within n probe periods at worst.
        let target = loop {
            if self.next >= self.order.len() {
                self.reap(now.mono);
                let mut order: Vec<String> = self.live().map(|m| m.name.clone()).collect();
                if order.is_empty() {
                    return;
                }
                self.shuffle(&mut order);
                self.order = order;
                self.next = 0;
            }
            let name = self.order[self.next].clone();
            self.next += 1;
            if self
                .members
                .get(&name)
                .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
            {
                break name;
            }
        };
        let Some(m) = self.members.get(&target).cloned() else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        self.probes.insert(
            seq,
            Probe {
                target: target.clone(),
                acked: false,
                helpers: BTreeSet::new(),
                nacked: BTreeSet::new(),
            },
        );
        // Buddy system: a suspect learns of it from the member that probes it, first thing, with
        // a fresh Suspect (memberlist); a queued one would have drained long before this probe.
        let lead = (m.state == State::Suspect).then(|| Update::Suspect {
            name: target.clone(),
            inc: m.incarnation,
            from: self.me.name.clone(),
        });
        let ping = Body::Ping {
            seq,
            target: target.clone(),
        };
        let packet = self.packet(now, ping, lead);
        out.push(Effect::Send { to: m.addr, packet });
        out.push(Effect::Schedule {
            after: self.scaled(self.config.probe_timeout),
            timer: Timer::ProbeTimeout(seq),
        });
        out.push(Effect::Schedule {
            after: self.scaled(self.config.probe_interval),
            timer: Timer::ProbeEnd(seq),
        });
    }

    /// Is a packet sealed at `sent_at_ms` by `from` recent enough? If not, count it, and tell the
    /// driver once per sender (so a wrong clock makes one log line, not one per packet).
    fn within_replay_window(
        &mut self,
        now: Now,
        from: &str,
        sent_at_ms: u64,
        out: &mut Vec<Effect<A>>,
    ) -> bool {
        let skew = i128::from(now.wall_ms()) - i128::from(sent_at_ms);
        if skew.unsigned_abs() <= self.config.replay_window.as_millis() {
            if !self.skewed.is_empty() {
                self.skewed.remove(from);
            }
            return true;
        }
        self.stats.stale_packets = self.stats.stale_packets.saturating_add(1);
        // Bounded: past this many distinct senders the drops are still counted, not reported.
        if self.skewed.len() < MAX_SKEW_REPORTS && self.skewed.insert(from.to_string()) {
            let skew_ms = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
            out.push(Effect::Notify(Notification::ClockSkew {
                from: from.to_string(),
                skew_ms,
            }));
        }
        false
    }

    /// Forget dead and left members after `reap_after` (memberlist drops them when its probe
    /// list wraps, as here).
    fn reap(&mut self, now: Duration) {
        let reap_after = self.config.reap_after;
        let old: Vec<String> = self
            .gone_since
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= reap_after)
            .map(|(name, _)| name.clone())
            .collect();
        for name in old {
            self.gone_since.remove(&name);
            self.members.remove(&name);
            self.suspicions.remove(&name);
        }
    }

    /// A packet arrived (already opened by the key ring, so its sender fields are
    /// authenticated). Replies go to `packet.from_addr`, never to the datagram's source, and a
    /// packet sealed outside the replay window is dropped and counted.
    pub fn handle_packet(&mut self, now: Now, packet: Packet<A>) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        if !self.within_replay_window(now, &packet.from, packet.sent_at_ms, &mut out) {
            return out;
        }
        let from = packet.from_addr.clone();
        for update in packet.updates {
            self.apply(now, update, &mut out);
        }
        for p in packet.payloads {
            out.push(Effect::Notify(Notification::Payload(p)));
        }
        match packet.body {
            Body::Ping { target, .. } if target != self.me.name => {
                // Meant for whoever had our address before (memberlist drops it the same way).
                self.stats.misdirected_pings = self.stats.misdirected_pings.saturating_add(1);
            }
            Body::Ping { seq, .. } => {
                let reply = self.packet(now, Body::Ack { seq }, None);
                out.push(Effect::Send {
                    to: from,
                    packet: reply,
                });
            }
            Body::Ack { seq } => {
                if let Some(p) = self.probes.get_mut(&seq) {
                    p.acked = true;
                } else if let Some((requester, their_seq)) = self.indirect.remove(&seq) {
                    let reply = self.packet(now, Body::Ack { seq: their_seq }, None);
                    out.push(Effect::Send {
                        to: requester,
                        packet: reply,
                    });
                }
            }
            Body::PingReq { seq, target, addr } => {
                self.seq += 1;
                let mine = self.seq;
                self.indirect.insert(mine, (from, seq));
                let ping = self.packet(now, Body::Ping { seq: mine, target }, None);
                out.push(Effect::Send {
                    to: addr,
                    packet: ping,
                });
                // Answer with a Nack before the requester's probe period ends (80% of the timeout).
                out.push(Effect::Schedule {
                    after: self.config.probe_timeout * 4 / 5,
                    timer: Timer::IndirectTimeout(mine),
                });
            }
            Body::Nack { seq } => {
                if let Some(p) = self.probes.get_mut(&seq) {
                    p.nack(&packet.from);
                }
            }
            Body::Join => {
                let reply = self.join_reply(now);
                out.push(Effect::Send {
                    to: from,
                    packet: reply,
                });
            }
            Body::JoinReply { members } => self.merge(now, members, &mut out),
            Body::Gossip => {}
        }
        out
    }

    /// Everything this member knows, itself included, for a push-pull exchange.
    pub fn local_state(&self) -> PushPullState<A> {
        let mut members: Vec<Member<A>> = self.members.values().cloned().collect();
        members.push(self.me.clone());
        PushPullState {
            from: self.me.name.clone(),
            members,
        }
    }

    /// A push-pull peer's state arrived (its request, or its reply to ours); `join` says the
    /// exchange is part of a join (it is counted apart; the merge is the same). Merged as
    /// memberlist's mergeState: see [`crate::push_pull`].
    pub fn handle_push_pull(
        &mut self,
        now: Now,
        remote: PushPullState<A>,
        join: bool,
    ) -> Vec<Effect<A>> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        if join {
            self.stats.join_push_pulls = self.stats.join_push_pulls.saturating_add(1);
        } else {
            self.stats.push_pulls = self.stats.push_pulls.saturating_add(1);
        }
        self.merge(now, remote.members, &mut out);
        out
    }

    /// Merge a member list (push-pull, join reply): Alive and Left as they are, Suspect and
    /// Dead as our own suspicion (we accuse; a death we did not see is worth a check, not a
    /// verdict), and any accusation of ourselves refuted.
    fn merge(&mut self, now: Now, members: Vec<Member<A>>, out: &mut Vec<Effect<A>>) {
        for m in members {
            let update = match m.state {
                State::Alive => Update::Alive {
                    name: m.name,
                    addr: m.addr,
                    inc: m.incarnation,
                },
                State::Left => Update::Left {
                    name: m.name,
                    inc: m.incarnation,
                },
                State::Suspect | State::Dead => Update::Suspect {
                    name: m.name,
                    inc: m.incarnation,
                    from: self.me.name.clone(),
                },
            };
            self.apply(now, update, out);
        }
    }

    /// Apply an update if it is news; re-broadcast it if so.
    fn apply(&mut self, now: Now, update: Update<A>, out: &mut Vec<Effect<A>>) {
        if update.name() == self.me.name {
            self.about_me(update);
            return;
        }
        match &update {
            Update::Alive { name, addr, inc } => {
                let known = self.members.get(name);
                if known.is_some_and(|m| !update.supersedes((m.state, m.incarnation))) {
                    return;
                }
                let was = known.map(|m| m.state);
                self.members.insert(
                    name.clone(),
                    Member {
                        name: name.clone(),
                        addr: addr.clone(),
                        incarnation: *inc,
                        state: State::Alive,
                    },
                );
                self.suspicions.remove(name);
                self.gone_since.remove(name);
                if was != Some(State::Alive) {
                    out.push(Effect::Notify(Notification::Up(name.clone())));
                }
                if was.is_none() {
                    // A newcomer goes to a random place in the probe order.
                    let at = if self.order.is_empty() {
                        0
                    } else {
                        (self.random() % (self.order.len() as u64 + 1)) as usize
                    };
                    self.order.insert(at, name.clone());
                }
            }
            Update::Suspect { name, inc, from } => {
                let Some(m) = self.members.get_mut(name) else {
                    return;
                };
                if m.state == State::Suspect && *inc == m.incarnation {
                    // An independent confirmation: the timeout shrinks (Lifeguard).
                    let Some(s) = self.suspicions.get_mut(name) else {
                        return;
                    };
                    if !s.confirm(from) {
                        return;
                    }
                    out.push(Effect::Schedule {
                        after: s.deadline().saturating_sub(now.mono),
                        timer: Timer::Suspicion(name.clone()),
                    });
                    // Re-gossip the confirmation (as memberlist does), so others count it too.
                    self.enqueue(update);
                    return;
                }
                if !update.supersedes((m.state, m.incarnation)) {
                    return;
                }
                m.state = State::Suspect;
                m.incarnation = *inc;
                let s = Suspicion::new(*inc, from.clone(), now.mono, self.n(), &self.config);
                out.push(Effect::Notify(Notification::Suspect(name.clone())));
                out.push(Effect::Schedule {
                    after: s.deadline().saturating_sub(now.mono),
                    timer: Timer::Suspicion(name.clone()),
                });
                self.suspicions.insert(name.clone(), s);
            }
            Update::Dead { name, inc, .. } | Update::Left { name, inc } => {
                let left = matches!(update, Update::Left { .. });
                let Some(m) = self.members.get_mut(name) else {
                    // Never seen: nothing to mark. Not remembered either (as memberlist): an
                    // Alive from it later adds it as a new member.
                    return;
                };
                if !update.supersedes((m.state, m.incarnation)) {
                    return;
                }
                m.state = if left { State::Left } else { State::Dead };
                m.incarnation = *inc;
                self.suspicions.remove(name);
                self.gone_since.insert(name.clone(), now.mono);
                out.push(Effect::Notify(if left {
                    Notification::Left(name.clone())
                } else {
                    Notification::Down(name.clone())
                }));
            }
        }
        self.enqueue(update);
    }

    fn about_me(&mut self, update: Update<A>) {
        let accused_inc = match update {
            Update::Suspect { inc, .. } | Update::Dead { inc, .. } => inc,
            Update::Alive { .. } | Update::Left { .. } => return,
        };
        if accused_inc < self.me.incarnation {
            return; // already refuted
        }
        // Refute: a higher incarnation than the accusation. Lifeguard: being suspected hints that
        // we are the slow one, so we probe less eagerly for a while.
        self.me.incarnation = accused_inc.saturating_add(1);
        self.awareness = self
            .awareness
            .saturating_add(1)
            .min(self.config.awareness_max);
        self.stats.refutations = self.stats.refutations.saturating_add(1);
        let alive = Update::Alive {
            name: self.me.name.clone(),
            addr: self.me.addr.clone(),
            inc: self.me.incarnation,
        };
        self.enqueue(alive);
    }

    fn check_suspicion(&mut self, now: Now, name: &str, out: &mut Vec<Effect<A>>) {
        let Some(deadline) = self.suspicions.get(name).map(Suspicion::deadline) else {
            return;
        };
        if now.mono < deadline {
            // Deadlines only move earlier; still, never leave a suspicion without a check.
            out.push(Effect::Schedule {
                after: deadline - now.mono,
                timer: Timer::Suspicion(name.to_string()),
            });
            return;
        }
        let Some(s) = self.suspicions.remove(name) else {
            return;
        };
        let Some(m) = self.members.get(name) else {
            return;
        };
        if m.state != State::Suspect || m.incarnation != s.inc {
            return;
        }
        self.stats.declared_dead = self.stats.declared_dead.saturating_add(1);
        let update = Update::Dead {
            name: name.to_string(),
            inc: s.inc,
            from: self.me.name.clone(),
        };
        self.apply(now, update, out);
    }
}
