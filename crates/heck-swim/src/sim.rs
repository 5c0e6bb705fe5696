//! A [`heck_sim::Process`] that drives [`Swim`]: timers in a local queue fired on each tick, an
//! optional "overloaded" mode that handles each packet only some time after it arrives, and a record of
//! every Down notification (who saw whom die, when). Used by the tests and the bench.
//!
//! Push-pull runs over the simulated network too (as two messages, request and reply), so it
//! is subject to the same loss and partitions as datagrams: a pessimistic model of a stream.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use heck_sim::{NodeId, Outbox, Process};

use serde::Serialize;

use crate::push_pull::PushPullState;
use crate::swim::{Config, Effect, Notification, Now, Packet, Swim, Timer};

/// What simulated members send each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SimMsg {
    /// A datagram.
    Packet(Packet<NodeId>),
    /// One side of a push-pull exchange.
    PushPull {
        /// The sender's state.
        state: PushPullState<NodeId>,
        /// Part of a join.
        join: bool,
        /// The answer to a request (not to be answered again).
        reply: bool,
    },
}

/// The simulated wall clock at virtual time zero (2026-01-01, in seconds since the Unix epoch).
pub const WALL_AT_ZERO: Duration = Duration::from_secs(1_767_225_600);

/// Both clocks at virtual time `now` (every simulated member's wall clock agrees).
pub fn at(now: Duration) -> Now {
    Now {
        mono: now,
        wall: WALL_AT_ZERO + now,
    }
}

/// One simulated member.
#[derive(Debug)]
pub struct SimMember {
    /// The state machine.
    pub swim: Swim<NodeId>,
    timers: BinaryHeap<Reverse<(Duration, u64, Timer)>>,
    seq: u64,
    started: bool,
    seeds: Vec<NodeId>,
    /// If set, every incoming packet is handled only this long after it arrives (an overloaded,
    /// CPU-starved process: a queue in front of it), while its own timers fire on time.
    pub starved: Option<Duration>,
    inbox: std::collections::VecDeque<(Duration, NodeId, SimMsg)>,
    /// Highest local health multiplier seen.
    pub max_awareness: u32,
    /// Largest packet this member sent, sealed, in bytes.
    pub max_packet_bytes: usize,
    /// When this member first saw each other member declared dead. Never erased: a member that
    /// comes back (refutes, or restarts) still counts as a death this member saw, so a false
    /// death stays counted whether or not it was later refuted.
    pub downs: BTreeMap<String, Duration>,
    /// Every Down notification, refuted or not (one member may die several times).
    pub down_notifications: u64,
    /// Down notifications about a member later seen Up again (refuted, or restarted): the part
    /// of `down_notifications` that the member itself undid.
    pub refuted_downs: u64,
    /// Members currently seen dead, to count the refuted downs.
    dead_now: std::collections::BTreeSet<String>,
}

impl SimMember {
    /// Member `id` named `node-{id}`, joining through `seeds`.
    ///
    /// # Panics
    /// If `config` fails [`Config::validate`]: a simulated cluster is set up by its test.
    pub fn new(
        id: NodeId,
        incarnation: u64,
        config: Config,
        seeds: Vec<NodeId>,
        seed: u64,
    ) -> Self {
        SimMember {
            swim: match Swim::new(
                format!("node-{id}"),
                id,
                incarnation,
                config,
                seed ^ (id as u64).wrapping_mul(0x9E37_79B9),
            ) {
                Ok(swim) => swim,
                Err(e) => panic!("a simulated member needs a valid config: {e}"),
            },
            timers: BinaryHeap::new(),
            seq: 0,
            started: false,
            seeds,
            starved: None,
            inbox: std::collections::VecDeque::new(),
            max_awareness: 0,
            max_packet_bytes: 0,
            downs: BTreeMap::new(),
            down_notifications: 0,
            refuted_downs: 0,
            dead_now: std::collections::BTreeSet::new(),
        }
    }

    fn run(&mut self, now: Duration, effects: Vec<Effect<NodeId>>, out: &mut Outbox<SimMsg>) {
        for e in effects {
            match e {
                Effect::Send { to, packet } => {
                    let msg = SimMsg::Packet(packet);
                    self.max_packet_bytes = self.max_packet_bytes.max(Self::wire_size(&msg));
                    out.send(to, msg);
                }
                Effect::PushPull { to, join } => {
                    let state = self.swim.local_state();
                    out.send(
                        to,
                        SimMsg::PushPull {
                            state,
                            join,
                            reply: false,
                        },
                    );
                }
                Effect::Schedule { after, timer } => {
                    self.seq += 1;
                    self.timers.push(Reverse((now + after, self.seq, timer)));
                }
                Effect::Notify(n) => self.record(now, n),
            }
        }
    }

    fn record(&mut self, now: Duration, n: Notification) {
        match n {
            Notification::Down(name) => {
                self.down_notifications = self.down_notifications.saturating_add(1);
                self.dead_now.insert(name.clone());
                self.downs.entry(name).or_insert(now);
            }
            Notification::Up(name) if self.dead_now.remove(&name) => {
                self.refuted_downs = self.refuted_downs.saturating_add(1);
            }
            _ => {}
        }
    }
}

impl SimMember {
    fn handle(&mut self, now: Duration, from: NodeId, msg: SimMsg, out: &mut Outbox<SimMsg>) {
        let fx = match msg {
            SimMsg::Packet(packet) => self.swim.handle_packet(at(now), packet),
            SimMsg::PushPull { state, join, reply } => {
                if !reply {
                    // Answer with our state as it was before the merge, as memberlist does.
                    let mine = self.swim.local_state();
                    out.send(
                        from,
                        SimMsg::PushPull {
                            state: mine,
                            join,
                            reply: true,
                        },
                    );
                }
                self.swim.handle_push_pull(at(now), state, join)
            }
        };
        self.run(now, fx, out);
    }

    fn fire_one(&mut self, now: Duration, out: &mut Outbox<SimMsg>) {
        if let Some(Reverse((_, _, timer))) = self.timers.pop() {
            let fx = self.swim.handle_timer(at(now), timer);
            self.run(now, fx, out);
        }
    }
}

impl Process for SimMember {
    type Msg = SimMsg;

    fn on_message(
        &mut self,
        now: Duration,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Outbox<Self::Msg>,
    ) {
        if let Some(delay) = self.starved {
            self.inbox.push_back((now + delay, from, msg));
            return;
        }
        self.handle(now, from, msg, out);
    }

    fn on_tick(&mut self, now: Duration, _random: u64, out: &mut Outbox<Self::Msg>) {
        if !self.started {
            self.started = true;
            let fx = self.swim.start(at(now), self.seeds.clone());
            self.run(now, fx, out);
        }
        // Timers and (possibly delayed) packets, in the order they fall due.
        loop {
            let timer_due = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .filter(|at| *at <= now);
            let packet_ready = self
                .inbox
                .front()
                .map(|(at, _, _)| *at)
                .filter(|at| *at <= now);
            match (timer_due, packet_ready) {
                (Some(t), Some(p)) if t <= p => self.fire_one(now, out),
                (Some(_), None) => self.fire_one(now, out),
                (_, Some(_)) => {
                    if let Some((_, from, msg)) = self.inbox.pop_front() {
                        self.handle(now, from, msg, out);
                    }
                }
                (None, None) => break,
            }
        }
        self.max_awareness = self.max_awareness.max(self.swim.awareness());
    }

    fn wire_size(msg: &Self::Msg) -> usize {
        postcard::to_allocvec(msg).map_or(0, |v| v.len()) + crate::wire::OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review: the count used to erase a death once the member came back, so a refuted false
    /// death was never counted.
    #[test]
    fn a_down_stays_counted_after_the_member_comes_back_and_counts_as_refuted() {
        let mut m = SimMember::new(0, 1, Config::fast(), vec![], 1);
        let ms = Duration::from_millis;
        m.record(ms(5), Notification::Down("node-3".into()));
        m.record(ms(9), Notification::Up("node-3".into()));
        m.record(ms(20), Notification::Down("node-3".into()));
        assert_eq!(m.downs.get("node-3"), Some(&ms(5)));
        assert_eq!(m.down_notifications, 2);
        assert_eq!(m.refuted_downs, 1);
    }
}
