//! CRDT gossip bench. Run: `cargo bench -p heck-crdt`.
//! 1. Bytes on the wire, delta vs full state: 100,000 keys, 1% of them rewritten per round.
//! 2. Rounds until a write reaches every replica, against the replica count (simulator).
//! 3. Join cost: a 1,000-entry delta vs a full state, into a 100,000-key replica.
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

/// Deliver every message between a and b until quiet; returns the bytes a sent in Delta messages.
fn exchange(a: &mut Kv, b: &mut Kv, random: u64) -> (usize, usize) {
    let mut delta_bytes = 0;
    let mut messages = 0;
    let mut queue: Vec<(usize, Message<String, String>)> = a
        .tick(random)
        .into_iter()
        .map(|Effect::Send { to, msg }| (to, msg))
        .collect();
    while let Some((to, msg)) = queue.pop() {
        if matches!(msg.body, heck_crdt::Body::Delta { .. }) {
            delta_bytes += wire::encode(&msg).len();
            messages += 1;
        }
        let (rep, from) = if to == 1 { (&mut *b, 0) } else { (&mut *a, 1) };
        for Effect::Send { to, msg } in rep.handle_message(from, msg) {
            queue.push((to, msg));
        }
    }
    (delta_bytes, messages)
}

fn bytes_bench(keys: usize, per_round: usize, rounds: usize) {
    let config = Config {
        fanout: 1,
        digest_every: u64::MAX,
        max_buffer: per_round + 16,
        ..Config::default()
    };
    let mut a: Kv = Replica::new(rid(1), [1usize], config);
    let mut b: Kv = Replica::new(rid(2), [0usize], config);
    for k in 0..keys {
        a.write(
            format!("10.0.{}.{}:8080", k / 256, k % 256),
            "healthy".into(),
        );
    }
    let (first, _) = exchange(&mut a, &mut b, 1); // B starts empty: a full state
    let mut x = 7u64;
    let mut total = 0;
    for round in 0..rounds {
        for _ in 0..per_round {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (x >> 33) as usize % keys;
            let v = if (x >> 20) & 1 == 0 {
                "healthy"
            } else {
                "unhealthy"
            };
            a.write(format!("10.0.{}.{}:8080", k / 256, k % 256), v.into());
        }
        let (bytes, _) = exchange(&mut a, &mut b, round as u64 + 2);
        total += bytes;
    }
    assert_eq!(a.map().state(), b.map().state(), "converged");
    let full = wire::encode(&Message {
        sender: rid(1),
        body: heck_crdt::Body::Delta {
            piece: heck_crdt::Piece {
                from: None,
                seq: 0,
                index: 0,
                count: 1,
            },
            delta: a.map().state().clone(),
        },
    })
    .len();
    let per_round_bytes = total / rounds;
    println!(
        "| bytes per round, {keys} keys, {per_round} rewritten per round | delta {per_round_bytes} B | full state {full} B (first sync sent {first} B) | {:.0}× fewer | ≥ 50× |",
        full as f64 / per_round_bytes as f64
    );
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
    let quick = !std::env::args().any(|a| a == "--bench");
    println!("| measure | heck | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    if quick {
        bytes_bench(2_000, 20, 2);
        join_bench(2_000, 20);
        println!(
            "| rounds, 8 replicas | {:.1} | | | |",
            rounds_to_converge(8, 0.0, 1)
        );
        return;
    }
    bytes_bench(100_000, 1_000, 5);
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
}
