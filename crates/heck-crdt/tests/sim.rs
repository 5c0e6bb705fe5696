//! 24 replicas of the key-value store in the deterministic simulator: writes and removes at
//! random replicas while the network loses, duplicates, delays and partitions messages and
//! replicas crash and restart (with a new epoch, so no dot is ever reused). After the faults
//! heal, every live replica holds the same state, and that state is the join of every delta
//! written. Replayable: `HECK_SEED=n` picks the seed.
#![allow(clippy::unwrap_used)]
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use heck_crdt::{Config, Effect, Message, ORMap, Replica, ReplicaId, wire};
use heck_sim::{Fault, Net, NodeId, Outbox, Process, Sim};

const N: usize = 24;
const WRITES_UNTIL: Duration = Duration::from_secs(10);
/// The replicas that crash. Their clients write only after the restart: a write that dies with
/// its only replica is lost in any system without synchronous replication, and the join of all
/// deltas would then rightly differ from what survives.
const CRASHING: [NodeId; 2] = [3, 17];

struct Kv {
    replica: Replica<NodeId, String, String>,
    /// Whether this replica's client writes.
    client: bool,
    /// The join of every delta written anywhere.
    truth: Rc<RefCell<ORMap<String, String>>>,
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
        if self.client && now < WRITES_UNTIL && random.is_multiple_of(8) {
            let key = format!("k{}", (random >> 8) % 40);
            let map = self.replica.map();
            if (random >> 16).is_multiple_of(5) {
                self.truth.borrow_mut().apply(&map.remove(&key));
                self.replica.remove(&key);
            } else {
                let value = format!("v{}", random >> 24);
                let delta = map.write(self.replica.id(), key.clone(), value.clone());
                self.truth.borrow_mut().apply(&delta);
                self.replica.write(key, value);
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

fn cluster(seed: u64) -> (Sim<Kv>, Rc<RefCell<ORMap<String, String>>>) {
    let net = Net {
        loss: 0.1,
        duplicate: 0.05,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(80),
    };
    let truth = Rc::new(RefCell::new(ORMap::new()));
    let shared = truth.clone();
    let mut sim = Sim::new(
        N,
        seed,
        Duration::from_millis(100),
        net,
        move |i, restarts| Kv {
            replica: Replica::new(
                // A restart is a new epoch: the dots of the new incarnation never collide.
                ReplicaId {
                    node: i as u64,
                    epoch: u64::from(restarts) + 1,
                },
                (0..N).filter(|&j| j != i),
                Config::default(),
            ),
            client: restarts > 0 || !CRASHING.contains(&i),
            truth: shared.clone(),
        },
    );
    let half: Vec<NodeId> = (0..N / 2).collect();
    sim.at(Duration::from_secs(3), Fault::Partition(vec![half]));
    sim.at(Duration::from_secs(4), Fault::Crash(CRASHING[0]));
    sim.at(Duration::from_secs(5), Fault::Crash(CRASHING[1]));
    sim.at(Duration::from_secs(6), Fault::Restart(CRASHING[0]));
    sim.at(Duration::from_secs(8), Fault::Heal);
    sim.at(Duration::from_secs(11), Fault::Restart(CRASHING[1]));
    (sim, truth)
}

fn converged(sim: &Sim<Kv>, truth: &ORMap<String, String>) -> bool {
    let live: Vec<&Kv> = sim.nodes().iter().flatten().collect();
    live.len() == N
        && live
            .iter()
            .all(|k| k.replica.map().state() == truth.state())
}

#[test]
fn twenty_four_replicas_converge_after_loss_partition_and_crashes() {
    let seed: u64 = std::env::var("HECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let (mut sim, truth) = cluster(seed);
    sim.run_until(Duration::from_secs(12));
    // Check every 250 ms of virtual time (a state comparison after every event would dominate).
    let mut t = Duration::from_secs(12);
    while !converged(&sim, &truth.borrow()) && t < Duration::from_secs(120) {
        t += Duration::from_millis(250);
        sim.run_until(t);
    }
    assert!(
        converged(&sim, &truth.borrow()),
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
        let mut sim = cluster(seed).0.with_trace();
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
