//! 24 replicas of the key-value store in the deterministic simulator: writes and removes at
//! random replicas while the network loses, duplicates, delays and partitions messages and
//! replicas crash and restart (with a new epoch, so no dot is ever reused). After the faults
//! heal, every live replica holds the same state. Replayable: `HECK_SEED=n` picks the seed.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use heck_crdt::{Config, Effect, Message, Replica, ReplicaId, wire};
use heck_sim::{Fault, Net, NodeId, Outbox, Process, Sim};

const N: usize = 24;
const WRITES_UNTIL: Duration = Duration::from_secs(10);

struct Kv {
    replica: Replica<NodeId, String, String>,
}

impl Process for Kv {
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

    fn on_tick(&mut self, now: Duration, random: u64, out: &mut Outbox<Self::Msg>) {
        // A client at this replica: one operation in eight ticks, until WRITES_UNTIL.
        if now < WRITES_UNTIL && random.is_multiple_of(8) {
            let key = format!("k{}", (random >> 8) % 40);
            if (random >> 16).is_multiple_of(5) {
                self.replica.remove(&key);
            } else {
                self.replica.write(key, format!("v{}", random >> 24));
            }
        }
        for Effect::Send { to, msg } in self.replica.tick(random) {
            out.send(to, msg);
        }
    }

    fn wire_size(msg: &Self::Msg) -> usize {
        wire::encode(msg).len()
    }
}

fn cluster(seed: u64) -> Sim<Kv> {
    let net = Net {
        loss: 0.1,
        duplicate: 0.05,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(80),
    };
    let mut sim = Sim::new(N, seed, Duration::from_millis(100), net, |i, restarts| Kv {
        replica: Replica::new(
            // A restart is a new epoch: the dots of the new incarnation never collide.
            ReplicaId {
                node: i as u64,
                epoch: u64::from(restarts) + 1,
            },
            (0..N).filter(|&j| j != i),
            Config::default(),
        ),
    });
    let half: Vec<NodeId> = (0..N / 2).collect();
    sim.at(Duration::from_secs(3), Fault::Partition(vec![half]));
    sim.at(Duration::from_secs(4), Fault::Crash(3));
    sim.at(Duration::from_secs(5), Fault::Crash(17));
    sim.at(Duration::from_secs(6), Fault::Restart(3));
    sim.at(Duration::from_secs(8), Fault::Heal);
    sim.at(Duration::from_secs(11), Fault::Restart(17));
    sim
}

fn converged(sim: &Sim<Kv>) -> bool {
    let live: Vec<&Kv> = sim.nodes().iter().flatten().collect();
    live.len() == N
        && live
            .iter()
            .all(|k| k.replica.map().state() == live[0].replica.map().state())
}

#[test]
fn twenty_four_replicas_converge_after_loss_partition_and_crashes() {
    let seed: u64 = std::env::var("HECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let mut sim = cluster(seed);
    sim.run_until(Duration::from_secs(12));
    // Check every 250 ms of virtual time (a state comparison after every event would dominate).
    let mut t = Duration::from_secs(12);
    while !converged(&sim) && t < Duration::from_secs(120) {
        t += Duration::from_millis(250);
        sim.run_until(t);
    }
    assert!(
        converged(&sim),
        "seed {seed}: not converged by 120 s ({:?})",
        sim.stats()
    );
    let some = sim.nodes().iter().flatten().next().unwrap();
    assert!(some.replica.map().len() > 5, "the run wrote something");
    // The restarted replicas (new epochs) caught up too: converged() counts all N.
}

#[test]
fn the_same_seed_replays_byte_for_byte() {
    let run = |seed| {
        let mut sim = cluster(seed).with_trace();
        sim.run_until(Duration::from_secs(15));
        (sim.trace().unwrap().to_string(), sim.stats())
    };
    let (a, sa) = run(11);
    let (b, sb) = run(11);
    let (c, _) = run(12);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert_ne!(a, c);
}
