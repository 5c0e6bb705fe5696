//! The whole cluster in the simulator: the same `Cluster` the agent runs, virtual checks against
//! a scripted truth. Seeded: `HECK_SEED=n` replays one seed.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use heck_check::{Status, TargetName};
use heck_cluster::Config;
use heck_cluster::sim::invariants::*;
use heck_cluster::sim::{SimNode, Truth, targets};
use heck_sim::{Net, Sim};

const S: Duration = Duration::from_secs(1);

struct Setup {
    m: usize,
    n: usize,
    interval: Duration,
    replicas: usize,
    net: Net,
    seed: u64,
}

fn seed() -> u64 {
    std::env::var("HECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn build(s: &Setup, truth: Truth) -> (Sim<SimNode>, BTreeSet<TargetName>, Rc<Truth>) {
    let specs = targets(s.n, s.interval, 2, 2);
    let names = specs.iter().map(|t| t.name.clone()).collect();
    let truth = Rc::new(truth);
    let mut config = Config::fast();
    config.replicas = s.replicas.try_into().unwrap();
    let (t2, seed, m) = (truth.clone(), s.seed, s.m);
    let sim = Sim::new(
        s.m,
        s.seed,
        Duration::from_millis(20),
        s.net,
        move |id, restarts| {
            SimNode::new(
                id,
                restarts,
                config.clone(),
                specs.clone(),
                (0..m.min(3)).collect(),
                t2.clone(),
                seed,
            )
        },
    );
    (sim, names, truth)
}

fn lossy(loss: f64) -> Net {
    Net {
        loss,
        duplicate: 0.01,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(10),
    }
}

#[test]
fn in_steady_state_every_target_has_exactly_one_owner_and_every_node_answers_the_truth() {
    let setup = Setup {
        m: 5,
        n: 200,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let mut truth = Truth::new();
    let down: Vec<TargetName> = (0..10)
        .map(|i| TargetName::new(format!("t{i}")).unwrap())
        .collect();
    for t in &down {
        truth.set(t, Duration::ZERO, false);
    }
    let (mut sim, names, truth) = build(&setup, truth);
    sim.run_until(20 * S);
    members_agree(&sim).unwrap();
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 5 * S).unwrap();
    nothing_contested(&sim).unwrap();
    answers_agree(&sim).unwrap();
}
