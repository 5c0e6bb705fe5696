//! CRDT gossip bench. Run: `cargo bench -p heck-crdt` (without `--bench`, as
//! `cargo test --benches` runs it, a quick mode at a small size with the same assertions).
//! 1. Join cost: a 1,000-entry delta vs a full state, into a 100,000-key replica.
//! 2. Rounds until a write reaches every replica, against the replica count (simulator,
//!    `Config::default()`: fanout 3).
//! 3. Bytes on the wire, a sweep over churn (1%, 10%, 50% of 10,000 keys rewritten per round)
//!    at `Config::default()` with 5 replicas: everything heck sends (deltas, acks, digests,
//!    full states when a peer falls out of the buffer) against state-based gossip at the same
//!    fanout.
// A bench measures time: the pure-core clock ban (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]
use std::hint::black_box;
use std::time::{Duration, Instant};

use heck_crdt::{Config, Effect, Message, ORMap, Replica, ReplicaId, wire};
use heck_sim::{Net, NodeId, Outbox, Process, Sim};

type Kv = Replica<usize, String, String>;

fn rid(i: u64) -> ReplicaId {
    ReplicaId { node: i, epoch: 1 }
}

/// Bytes sent in one stretch of rounds, by message kind: postcard-encoded as `wire::encode`
/// returns them (the transport's framing and encryption come on top, the same for both sides).
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    delta: usize,
    ack: usize,
    digest: usize,
}

impl Sent {
    fn total(&self) -> usize {
        self.delta + self.ack + self.digest
    }

    fn add(&mut self, msg: &Message<String, String>) {
        let n = wire::encode(msg).len();
        match msg.body {
            heck_crdt::Body::Delta { .. } => self.delta += n,
            heck_crdt::Body::Ack { .. } => self.ack += n,
            heck_crdt::Body::Digest { .. } => self.digest += n,
        }
    }
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, o: Sent) {
        self.delta += o.delta;
        self.ack += o.ack;
        self.digest += o.digest;
    }
}

/// A cluster of replicas at one configuration, every message delivered at once and none lost.
struct Cluster {
    replicas: Vec<Kv>,
    random: u64,
}

impl Cluster {
    fn new(n: usize, config: Config) -> Cluster {
        Cluster {
            replicas: (0..n)
                .map(|i| Replica::new(rid(i as u64), (0..n).filter(|&j| j != i), config))
                .collect(),
            random: 7,
        }
    }

    /// One round: every replica ticks, then every message (and every reply) is delivered
    /// until the network is quiet. Returns what was sent, counted by kind.
    fn round(&mut self) -> Sent {
        let mut sent = Sent::default();
        let mut queue = std::collections::VecDeque::new();
        for (from, r) in self.replicas.iter_mut().enumerate() {
            self.random = mix(self.random);
            for Effect::Send { to, msg } in r.tick(self.random) {
                queue.push_back((from, to, msg));
            }
        }
        while let Some((from, to, msg)) = queue.pop_front() {
            sent.add(&msg);
            for Effect::Send { to: back, msg } in self.replicas[to].handle_message(from, msg) {
                queue.push_back((to, back, msg));
            }
        }
        sent
    }

    fn converged(&self) -> bool {
        self.replicas
            .windows(2)
            .all(|w| w[0].map().state() == w[1].map().state())
    }

    /// (transfers of buffered groups, transfers of the full state) sent so far, every replica.
    fn transfers(&self) -> (u64, u64) {
        self.replicas.iter().fold((0, 0), |(d, f), r| {
            (d + r.stats().deltas_sent, f + r.stats().full_states_sent)
        })
    }

    /// The full state of replica 0 as one message: what state-based gossip sends per peer.
    fn full_state_bytes(&self) -> usize {
        wire::encode(&Message {
            sender: rid(0),
            body: heck_crdt::Body::Delta {
                piece: heck_crdt::Piece {
                    from: None,
                    seq: 0,
                    index: 0,
                    count: 1,
                },
                delta: self.replicas[0].map().state().clone(),
            },
        })
        .len()
    }
}

/// splitmix64's finaliser: the bench's only randomness, so every run sends the same bytes.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(k: usize) -> String {
    format!("10.0.{}.{}:8080", k / 256, k % 256)
}

/// Bytes per round, delta-interval (heck, everything it sends) against state-based gossip at
/// the same fanout, with `churn_bp` per 10,000 of the keys rewritten per round.
///
/// `n` replicas at `Config::default()` (fanout 3, a digest every 10 ticks, at most 1,024
/// buffered groups); each key is written by one replica, its owner (`key mod n`), as each
/// target's status is written by its checker. After the start-up sync (everything converged),
/// `rounds` rounds are measured (a multiple of `digest_every`, so digests are counted at their
/// rate), then the cluster must converge again.
fn bytes_sweep(n: usize, keys: usize, rounds: u64, churn_bp: &[u64], config: (&str, Config)) {
    let (name, config) = config;
    assert!(
        rounds.is_multiple_of(config.digest_every),
        "whole digest periods"
    );
    println!(
        "\n| keys rewritten per round, of {keys} ({n} replicas, {name}: fanout {}) | heck: bytes sent per round, all replicas, all messages | of which Delta / Ack / Digest | transfers of the full state (of all transfers) | state-based gossip: full state × {n} replicas × {} peers | state-based ÷ heck | start-up sync: all bytes (rounds) |",
        config.fanout,
        config.fanout.min(n - 1)
    );
    println!("|---|---|---|---|---|---|---|");
    for &bp in churn_bp {
        let mut c = Cluster::new(n, config);
        for k in 0..keys {
            c.replicas[k % n].write(key(k), "healthy".into());
        }
        let mut startup = Sent::default();
        let mut warmup = 0;
        while !c.converged() || warmup < 2 {
            let s = c.round();
            startup += s;
            warmup += 1;
            assert!(warmup < 100, "the start-up sync did not converge");
        }
        let (d0, f0) = c.transfers();
        let (mut sent, mut full, mut written) = (Sent::default(), 0usize, 0usize);
        for round in 0..rounds {
            let value = if round % 2 == 0 {
                "unhealthy"
            } else {
                "healthy"
            };
            for k in 0..keys {
                if mix(k as u64 ^ (round << 40)) % 10_000 < bp {
                    c.replicas[k % n].write(key(k), value.into());
                    written += 1;
                }
            }
            let s = c.round();
            sent += s;
            full += c.full_state_bytes();
        }
        let (d1, f1) = c.transfers();
        let mut settle = 0;
        while !c.converged() {
            c.round();
            settle += 1;
            assert!(settle < 100, "no convergence after the writes stopped");
        }
        let r = rounds as usize;
        let heck = sent.total() / r;
        let state_based = full / r * n * config.fanout.min(n - 1);
        println!(
            "| {:.0} ({}%) | {heck} B | {} / {} / {} B | {} of {} | {state_based} B | {:.1}× | {} B ({warmup}) |",
            written as f64 / rounds as f64,
            bp as f64 / 100.0,
            sent.delta / r,
            sent.ack / r,
            sent.digest / r,
            f1 - f0,
            (d1 - d0) + (f1 - f0),
            state_based as f64 / heck as f64,
            startup.total()
        );
    }
}

struct Node {
    replica: Kv,
}

impl Process for Node {
    type Msg = Message<String, String>;
    fn on_message(
        &mut self,
        _now: Duration,
        from: NodeId,
        msg: Self::Msg,
        out: &mut Outbox<Self::Msg>,
    ) {
        for Effect::Send { to, msg } in self.replica.handle_message(from, msg) {
            out.send(to, msg);
        }
    }
    fn on_tick(&mut self, _now: Duration, random: u64, out: &mut Outbox<Self::Msg>) {
        for Effect::Send { to, msg } in self.replica.tick(random) {
            out.send(to, msg);
        }
    }
}

fn rounds_to_converge(n: usize, loss: f64, seed: u64) -> f64 {
    let tick = Duration::from_millis(100);
    let net = Net {
        loss,
        duplicate: 0.0,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(10),
    };
    let mut sim = Sim::new(n, seed, tick, net, move |i, _| Node {
        replica: Replica::new(rid(i as u64), (0..n).filter(|&j| j != i), Config::default()),
    });
    sim.run_until(Duration::from_secs(1));
    let start = sim.now();
    if let Some(node) = sim.node_mut(0) {
        node.replica.write("k".into(), "v".into());
    }
    let done = sim.run_until_true(Duration::from_secs(600), |s| {
        s.nodes()
            .iter()
            .flatten()
            .all(|node| !node.replica.map().get(&"k".to_string()).is_empty())
    });
    done.map_or(f64::NAN, |t| (t - start).as_secs_f64() / tick.as_secs_f64())
}

fn join_bench(keys: usize, delta_entries: usize) {
    let mut base: ORMap<String, String> = ORMap::new();
    for k in 0..keys {
        let d = base.write(rid(1), format!("key-{k}"), "healthy".into());
        base.apply(&d);
    }
    let mut other = base.clone();
    let mut delta = heck_crdt::Delta::default();
    for k in 0..delta_entries {
        let d = other.write(
            rid(2),
            format!("key-{}", k * (keys / delta_entries)),
            "unhealthy".into(),
        );
        other.apply(&d);
        delta.join(&d);
    }
    let full = other.state().clone();
    let time = |d: &heck_crdt::Delta<String, String>| {
        (0..5)
            .map(|_| {
                let mut s = base.clone();
                let t = Instant::now();
                s.apply(black_box(d));
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let (td, tf) = (time(&delta), time(&full));
    println!(
        "| join into a {keys}-key replica | {delta_entries}-entry delta: {:.2} ms | full state: {:.1} ms | {:.0}× | — |",
        td.as_secs_f64() * 1e3,
        tf.as_secs_f64() * 1e3,
        tf.as_secs_f64() / td.as_secs_f64()
    );
}

fn main() {
    assert_eq!(
        DEFAULT_CONFIG,
        Config::default(),
        "the sweep runs at the default"
    );
    let quick = !std::env::args().any(|a| a == "--bench");
    println!("| measure | heck | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    if quick {
        join_bench(2_000, 20);
        println!(
            "| rounds, 8 replicas | {:.1} | | | |",
            rounds_to_converge(8, 0.0, 1)
        );
        bytes_sweep(3, 2_000, 10, &CHURN_BP, DEFAULT);
        return;
    }
    join_bench(100_000, 1_000);
    for n in [8, 16, 32, 64, 128] {
        let seeds = 5;
        let (mut lossless, mut lossy) = (0.0, 0.0);
        for s in 0..seeds {
            lossless += rounds_to_converge(n, 0.0, s);
            lossy += rounds_to_converge(n, 0.1, s);
        }
        println!(
            "| rounds until a write reaches all {n} replicas (mean of {seeds} seeds; fanout 3) | {:.1} at 0% loss | {:.1} at 10% loss | log₂ n = {:.1} | — |",
            lossless / seeds as f64,
            lossy / seeds as f64,
            (n as f64).log2()
        );
    }
    // 10,000 keys, not 100,000: at this configuration a round of the sweep carries about a
    // full state per transfer (see docs/benchmarks.md), and joining the buffered groups of an
    // interval rescans the growing join once per group, so a 100,000-key sweep runs for hours.
    bytes_sweep(5, 10_000, 10, &CHURN_BP, DEFAULT);
    // Not a configuration to publish: the cause of the default's figures. With a buffer large
    // enough for the start-up writes, no full state is sent, so no group whose context is a
    // version vector (which `news` keeps whole) enters a buffer.
    bytes_sweep(5, 10_000, 10, &CHURN_BP, BIG_BUFFER);
}

const DEFAULT: (&str, Config) = ("`Config::default()`", DEFAULT_CONFIG);
const DEFAULT_CONFIG: Config = Config {
    fanout: 3,
    digest_every: 10,
    max_buffer: 1024,
    max_message_bytes: 1 << 20,
    resend_after: 1,
};
const BIG_BUFFER: (&str, Config) = (
    "the default but `max_buffer` 65,536",
    Config {
        max_buffer: 65_536,
        ..DEFAULT_CONFIG
    },
);

/// The churn sweep: 1%, 10% and 50% of the keys rewritten per round (per 10,000).
const CHURN_BP: [u64; 3] = [100, 1_000, 5_000];
