//! A deterministic simulator for heck's protocols.
//!
//! Any sans-IO state machine that implements [`Process`] runs here: n copies, a virtual clock,
//! and a network that loses, duplicates, delays and partitions messages as configured, with
//! crashes and restarts scripted by [`Fault`]s at given times. Everything random comes from one
//! seeded generator, so **the same seed replays the same run, event for event**: a failing
//! seed is a reproducible bug report (`Sim::trace` gives the event log to diff).
//!
//! ```text
//!   queue of (time, seq) ─pop─> Tick(node)            → process.on_tick(now, random, outbox)
//!                                Deliver(from,to,msg) → process.on_message(now, from, msg, outbox)
//!                                Fault(f)             → partition / heal / crash / restart / net
//!   outbox sends ─> network: drop if crashed, partitioned or lost; maybe duplicate; delay
//!                   uniformly in [delay_min, delay_max] ─> queue
//! ```
//!
//! Invariant: the simulator owns time. Processes see `now` as an argument and randomness as a
//! `u64` per tick, and never block; so a simulated hour of a 200-node cluster takes seconds.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::time::Duration;

/// Index of a simulated node, `0..n`.
pub type NodeId = usize;

/// What a process sends while handling an event.
#[derive(Debug)]
pub struct Outbox<M> {
    sends: Vec<(NodeId, M)>,
}

impl<M> Outbox<M> {
    /// Send `msg` to `to` (through the simulated network).
    pub fn send(&mut self, to: NodeId, msg: M) {
        self.sends.push((to, msg));
    }
}

/// A sans-IO protocol participant.
pub trait Process {
    /// Its messages.
    type Msg: Clone;
    /// A message from `from` arrived at `now`.
    fn on_message(
        &mut self,
        now: Duration,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Outbox<Self::Msg>,
    );
    /// The periodic tick; `random` is fresh randomness for this tick.
    fn on_tick(&mut self, now: Duration, random: u64, out: &mut Outbox<Self::Msg>);
    /// Size of `msg` on the wire, for the byte counters (0 if unknown).
    fn wire_size(_msg: &Self::Msg) -> usize {
        0
    }
}

/// Network behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Net {
    /// Probability a message is lost, 0..=1.
    pub loss: f64,
    /// Probability a delivered message arrives twice, 0..=1.
    pub duplicate: f64,
    /// Least one-way delay.
    pub delay_min: Duration,
    /// Most one-way delay (uniform in between, so messages reorder).
    pub delay_max: Duration,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
        }
    }
}

/// A scripted fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Split the nodes into groups; messages cross no group boundary. Unlisted nodes form one
    /// more group together.
    Partition(Vec<Vec<NodeId>>),
    /// Remove every partition.
    Heal,
    /// The node stops: its state is gone, messages to it are dropped.
    Crash(NodeId),
    /// A crashed node starts again, fresh from the factory (its restart count goes up).
    Restart(NodeId),
    /// Change the network's behaviour from now on.
    SetNet(Net),
}

#[derive(Debug)]
enum Event<M> {
    Tick(NodeId),
    Deliver { from: NodeId, to: NodeId, msg: M },
    Fault(Fault),
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages sent by processes.
    pub sent: u64,
    /// Messages handed to a process.
    pub delivered: u64,
    /// Lost, partitioned away, or addressed to a crashed node.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Bytes sent (as reported by [`Process::wire_size`]).
    pub bytes: u64,
}

/// splitmix64 (Steele, Lea, Flood 2014): small, fast, and the same on every platform. The one
/// deterministic generator of the pure cores: the simulator, SWIM's probe order and jitter, the
/// CRDT's peer choice. Callers seed it from the randomness they were given, so a run replays
/// from its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.next_u64() % (span + 1))
    }
}

type Factory<P> = Box<dyn FnMut(NodeId, u32) -> P>;

/// The simulation.
pub struct Sim<P: Process> {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: BTreeMap<u64, Event<P::Msg>>,
    nodes: Vec<Option<P>>,
    restarts: Vec<u32>,
    group: Vec<usize>,
    factory: Factory<P>,
    rng: SplitMix64,
    net: Net,
    tick: Duration,
    stats: NetStats,
    trace: Option<String>,
}

impl<P: Process> std::fmt::Debug for Sim<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Process> Sim<P> {
    /// `n` nodes made by `factory(id, restarts)`, each ticking every `tick` (first tick at a
    /// random offset, so they do not march in step).
    pub fn new(
        n: usize,
        seed: u64,
        tick: Duration,
        net: Net,
        mut factory: impl FnMut(NodeId, u32) -> P + 'static,
    ) -> Self {
        let nodes = (0..n).map(|i| Some(factory(i, 0))).collect();
        let mut sim = Sim {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            restarts: vec![0; n],
            group: vec![0; n],
            factory: Box::new(factory),
            rng: SplitMix64::new(seed),
            net,
            tick,
            stats: NetStats::default(),
            trace: None,
        };
        for i in 0..n {
            let offset = sim.rng.duration(Duration::ZERO, tick);
            sim.push(offset, Event::Tick(i));
        }
        sim
    }

    /// Record a text log of every event (for replay checks and debugging).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(String::new());
        self
    }

    /// Schedule `fault` at absolute time `at`.
    pub fn at(&mut self, at: Duration, fault: Fault) {
        self.push(at, Event::Fault(fault));
    }

    fn push(&mut self, at: Duration, event: Event<P::Msg>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// Virtual time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The nodes (`None` while crashed).
    pub fn nodes(&self) -> &[Option<P>] {
        &self.nodes
    }

    /// One node, mutably (to inject client operations between steps).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut P> {
        self.nodes.get_mut(id).and_then(Option::as_mut)
    }

    /// Network counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The event log, if tracing.
    pub fn trace(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    /// Run every event up to and including time `until`.
    pub fn run_until(&mut self, until: Duration) {
        self.run_until_true(until, |_| false);
        self.now = until;
    }

    /// Run until `done(self)` holds, checking after each event, or until `limit`; returns the
    /// time it first held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        if done(self) {
            return Some(self.now);
        }
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > limit {
                break;
            }
            self.queue.pop();
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.now = at;
            self.step(event);
            if done(self) {
                return Some(self.now);
            }
        }
        None
    }

    fn log(&mut self, line: std::fmt::Arguments<'_>) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{:>12.6} {line}", self.now.as_secs_f64());
        }
    }

    fn step(&mut self, event: Event<P::Msg>) {
        let mut out = Outbox { sends: Vec::new() };
        let from = match event {
            Event::Tick(i) => {
                let random = self.rng.next_u64();
                let Some(node) = self.nodes[i].as_mut() else {
                    return;
                };
                node.on_tick(self.now, random, &mut out);
                self.push(self.now + self.tick, Event::Tick(i));
                self.log(format_args!("tick {i}"));
                i
            }
            Event::Deliver { from, to, msg } => {
                let Some(node) = self.nodes[to].as_mut() else {
                    self.stats.dropped += 1;
                    return;
                };
                node.on_message(self.now, from, msg, &mut out);
                self.stats.delivered += 1;
                self.log(format_args!("deliver {from} -> {to}"));
                to
            }
            Event::Fault(f) => {
                self.log(format_args!("fault {f:?}"));
                self.fault(f);
                return;
            }
        };
        for (to, msg) in out.sends {
            self.transmit(from, to, msg);
        }
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, msg: P::Msg) {
        self.stats.sent += 1;
        self.stats.bytes += P::wire_size(&msg) as u64;
        let lost = self.rng.unit() < self.net.loss;
        if to >= self.nodes.len() || self.group[from] != self.group[to] || lost {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.unit() < self.net.duplicate {
            2
        } else {
            1
        };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = self.rng.duration(self.net.delay_min, self.net.delay_max);
            self.push(
                self.now + delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn fault(&mut self, f: Fault) {
        match f {
            Fault::Partition(groups) => {
                self.group.iter_mut().for_each(|g| *g = 0);
                for (gi, members) in groups.iter().enumerate() {
                    for &n in members {
                        if let Some(g) = self.group.get_mut(n) {
                            *g = gi + 1;
                        }
                    }
                }
            }
            Fault::Heal => self.group.iter_mut().for_each(|g| *g = 0),
            Fault::Crash(n) => {
                if let Some(slot) = self.nodes.get_mut(n) {
                    *slot = None;
                }
            }
            Fault::Restart(n) => {
                if n < self.nodes.len() && self.nodes[n].is_none() {
                    self.restarts[n] += 1;
                    self.nodes[n] = Some((self.factory)(n, self.restarts[n]));
                    let offset = self.rng.duration(Duration::ZERO, self.tick);
                    self.push(self.now + offset, Event::Tick(n));
                }
            }
            Fault::SetNet(net) => self.net = net,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Floods a counter: each node forwards the highest number it has seen to a random node.
    #[derive(Debug)]
    struct Rumor {
        n: usize,
        best: u64,
    }

    impl Process for Rumor {
        type Msg = u64;
        fn on_message(&mut self, _now: Duration, _from: NodeId, msg: u64, _out: &mut Outbox<u64>) {
            self.best = self.best.max(msg);
        }
        fn on_tick(&mut self, _now: Duration, random: u64, out: &mut Outbox<u64>) {
            out.send((random % self.n as u64) as usize, self.best);
        }
    }

    fn sim(seed: u64) -> Sim<Rumor> {
        let net = Net {
            loss: 0.2,
            duplicate: 0.1,
            ..Net::default()
        };
        let mut s = Sim::new(10, seed, Duration::from_millis(100), net, |i, _| Rumor {
            n: 10,
            best: if i == 0 { 7 } else { 0 },
        })
        .with_trace();
        s.at(Duration::from_secs(1), Fault::Partition(vec![vec![0, 1]]));
        s.at(Duration::from_secs(2), Fault::Crash(5));
        s.at(Duration::from_secs(3), Fault::Restart(5));
        s.at(Duration::from_secs(4), Fault::Heal);
        s
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let (mut a, mut b, mut c) = (sim(42), sim(42), sim(43));
        for s in [&mut a, &mut b, &mut c] {
            s.run_until(Duration::from_secs(10));
        }
        assert_eq!(a.trace(), b.trace());
        assert_ne!(a.trace(), c.trace());
        assert_eq!(a.stats(), b.stats());
    }

    #[test]
    fn a_rumor_reaches_everyone_after_faults_heal() {
        let mut s = sim(7);
        s.run_until(Duration::from_secs(30));
        assert!(
            s.nodes()
                .iter()
                .all(|n| n.as_ref().is_some_and(|r| r.best == 7))
        );
        let st = s.stats();
        assert!(st.dropped > 0 && st.duplicated > 0, "{st:?}");
    }

    #[test]
    fn a_partition_stops_messages_between_groups() {
        let mut s = Sim::new(4, 1, Duration::from_millis(10), Net::default(), |i, _| {
            Rumor {
                n: 4,
                best: if i == 0 { 9 } else { 0 },
            }
        });
        s.at(
            Duration::ZERO,
            Fault::Partition(vec![vec![0], vec![1, 2, 3]]),
        );
        s.run_until(Duration::from_secs(5));
        assert!(
            s.nodes()[1..]
                .iter()
                .all(|n| n.as_ref().is_some_and(|r| r.best == 0))
        );
        s.at(Duration::from_secs(5), Fault::Heal);
        s.run_until(Duration::from_secs(10));
        assert!(
            s.nodes()
                .iter()
                .all(|n| n.as_ref().is_some_and(|r| r.best == 9))
        );
    }
}
