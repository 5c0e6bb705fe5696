//! A seed sweep: each seed draws a cluster (4–7 nodes, 1–2 replicas), a lossy, duplicating,
//! reordering network, a partition, crashes and restarts, and targets flipping, then checks the
//! invariants, during the run and after everything heals. Zero violations allowed, and no seed
//! is exempt: with SWIM push-pull carried in the simulated messages, membership converges in
//! every one (it used to stay split in some, heck-swim's review S5).
//!
//! `cargo test -p heck-cluster --test sweep` runs 50 seeds; `HECK_SEED=n` replays one;
//! `HECK_SWEEP_SEEDS=200 cargo test --release -p heck-cluster --test sweep -- --ignored` is the
//! long mode.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use heck_check::TargetName;
use heck_cluster::Config;
use heck_cluster::sim::invariants::*;
use heck_cluster::sim::{SimNode, Truth, targets};
use heck_sim::{Fault, Net, Sim, SplitMix64};

const S: Duration = Duration::from_secs(1);
/// Faults happen in [10 s, 40 s]; at 45 s everything heals; invariants at 80 s.
const HEAL: Duration = Duration::from_secs(45);
const END: Duration = Duration::from_secs(80);

fn run(seed: u64) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let m = 4 + (rng.next_u64() % 4) as usize;
    let replicas = 1 + (rng.next_u64() % 2) as usize;
    let n = 60;
    let net = Net {
        loss: rng.unit() * 0.05,
        duplicate: rng.unit() * 0.05,
        delay_min: Duration::from_millis(1),
        delay_max: rng.duration(Duration::from_millis(5), Duration::from_millis(50)),
    };
    let specs = targets(n, S, 2, 2);
    let names: BTreeSet<TargetName> = specs.iter().map(|t| t.name.clone()).collect();
    let mut truth = Truth::new();
    for _ in 0..12 {
        let t = TargetName::new(format!("t{}", rng.next_u64() % n as u64)).unwrap();
        let down_at = rng.duration(5 * S, 35 * S);
        truth.set(&t, down_at, false);
        if rng.unit() < 0.5 {
            truth.set(&t, down_at + rng.duration(3 * S, 10 * S), true);
        }
    }
    let truth = Rc::new(truth);
    let mut config = Config::fast();
    config.replicas = replicas.try_into().unwrap();
    let t2 = truth.clone();
    let mut sim = Sim::new(
        m,
        seed,
        Duration::from_millis(20),
        net,
        move |id, restarts| {
            SimNode::new(
                id,
                restarts,
                config.clone(),
                specs.clone(),
                vec![0, 1, 2],
                t2.clone(),
                seed,
            )
        },
    );

    // The fault script.
    let split = 1 + (rng.next_u64() % (m as u64 - 1)) as usize;
    let part_at = rng.duration(10 * S, 25 * S);
    sim.at(part_at, Fault::Partition(vec![(0..split).collect()]));
    sim.at(part_at + rng.duration(3 * S, 12 * S), Fault::Heal);
    let crashed = (rng.next_u64() % m as u64) as usize;
    let crash_at = rng.duration(10 * S, 35 * S);
    sim.at(crash_at, Fault::Crash(crashed));
    let restarts = rng.unit() < 0.6;
    if restarts {
        sim.at(
            crash_at + rng.duration(2 * S, 8 * S),
            Fault::Restart(crashed),
        );
    }
    sim.at(
        rng.duration(10 * S, 40 * S),
        Fault::SetNet(Net { loss: 0.2, ..net }),
    );
    sim.at(HEAL - 3 * S, Fault::SetNet(net));
    sim.at(HEAL, Fault::Heal);

    let ctx = |what: &str, e: String| {
        format!(
            "seed {seed} (m {m}, r {replicas}, {net:?}, crashed {crashed}, restarts {restarts}): {what}: {e}"
        )
    };
    // During the run: whenever the running nodes agree on membership and all own, no target
    // has more or fewer than r owners (this is "never two owners outside a partition").
    let mut t = 5 * S;
    while t < END {
        sim.run_until(t);
        let agreed = members_agree(&sim).is_ok() && live(&sim).all(|(_, n)| n.cluster.is_settled());
        if agreed {
            exactly_r_owners(&sim, replicas).map_err(|e| ctx("owners at agreement", e))?;
        }
        if t > HEAL {
            no_target_lost(&sim, &names).map_err(|e| ctx("targets", e))?;
        }
        t += S / 2;
    }
    members_agree(&sim).map_err(|e| ctx("members", e))?;
    no_target_lost(&sim, &names).map_err(|e| ctx("targets", e))?;
    exactly_r_owners(&sim, replicas).map_err(|e| ctx("owners", e))?;
    nothing_contested(&sim).map_err(|e| ctx("contested", e))?;
    answers_agree(&sim).map_err(|e| ctx("agreement", e))?;
    answers_match_truth(&sim, &truth, END, 10 * S).map_err(|e| ctx("truth", e))?;
    Ok(())
}

fn sweep(seeds: impl Iterator<Item = u64>) {
    let failures: Vec<String> = seeds.filter_map(|s| run(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fifty_seeds_of_loss_duplication_delay_partitions_and_crashes_break_no_invariant() {
    match std::env::var("HECK_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => sweep(std::iter::once(seed)),
        None => sweep(1..=50),
    }
}

#[test]
#[ignore = "long mode: 200 seeds, run with --release"]
fn two_hundred_seeds_break_no_invariant() {
    let n = std::env::var("HECK_SWEEP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    sweep(1..=n);
}
