//! The whole cluster in the simulator: the same `Cluster` the agent runs, virtual checks against
//! a scripted truth. Seeded: `HECK_SEED=n` replays one seed.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use heck_check::{Status, TargetName};
use heck_cluster::Config;
use heck_cluster::sim::invariants::*;
use heck_cluster::sim::{SimNode, Truth, at, targets};
use heck_sim::{Fault, Net, Sim};

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

/// The targets `node` was checking.
fn checked_by(sim: &Sim<SimNode>, node: usize) -> Vec<TargetName> {
    sim.nodes()[node]
        .as_ref()
        .map(|n| n.checking().cloned().collect())
        .unwrap_or_default()
}

/// First time after `after` that any running node checked `t`.
fn first_check_after(sim: &Sim<SimNode>, t: &TargetName, after: Duration) -> Option<Duration> {
    live(sim)
        .filter_map(|(_, n)| {
            n.check_log
                .iter()
                .find(|(at, x)| *at > after && x == t)
                .map(|(at, _)| *at)
        })
        .min()
}

#[test]
fn after_a_crash_its_targets_are_checked_again_within_detection_plus_one_interval() {
    let setup = Setup {
        m: 8,
        n: 400,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let (mut sim, names, truth) = build(&setup, Truth::new());
    sim.run_until(15 * S);
    exactly_r_owners(&sim, 1).unwrap();
    let orphans = checked_by(&sim, 3);
    assert!(orphans.len() > 20, "node 3 checks {}", orphans.len());
    let crash = sim.now();
    sim.at(crash, Fault::Crash(3));
    sim.run_until(crash + 30 * S);
    // Fast profile, 8 members: a probe round is 8 × 200 ms, the suspicion 0.8..4.8 s.
    let detection = Duration::from_millis(1600 + 4800);
    let worst = orphans
        .iter()
        .map(|t| first_check_after(&sim, t, crash).unwrap_or(Duration::MAX) - crash)
        .max()
        .unwrap();
    eprintln!("worst time to the next check of an orphan: {worst:?}");
    assert!(
        worst <= detection + setup.interval,
        "an orphan waited {worst:?} for its next check"
    );
    members_agree(&sim).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    no_target_lost(&sim, &names).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 5 * S).unwrap();
    // The new owners continued from the replicated status: no answer went through unknown.
    for (i, n) in live(&sim) {
        assert!(
            n.last_change.values().all(|(_, s)| *s != Status::Unknown),
            "node {i} flapped through unknown"
        );
    }
}

/// p-th percentile of `v` (sorted in place).
fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Flip `flips` targets at spread times after `from`; return each flip's visibility latency:
/// from the owner's write (the first node whose answer changed) to the last node's answer.
fn visibility(sim: &mut Sim<SimNode>, flipped: &[TargetName], until: Duration) -> Vec<Duration> {
    sim.run_until(until);
    flipped
        .iter()
        .map(|t| {
            let times: Vec<Duration> = live(sim)
                .map(|(_, n)| {
                    n.last_change
                        .get(t)
                        .filter(|(_, s)| *s == Status::Unhealthy)
                        .map_or(Duration::MAX, |(at, _)| *at)
                })
                .collect();
            *times.iter().max().unwrap() - *times.iter().min().unwrap()
        })
        .collect()
}

#[test]
fn a_status_change_is_visible_at_every_node_within_two_seconds_at_p99() {
    let setup = Setup {
        m: 12,
        n: 600,
        interval: 2 * S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let mut truth = Truth::new();
    let flipped: Vec<TargetName> = (0..100)
        .map(|i| TargetName::new(format!("t{}", i * 5)).unwrap())
        .collect();
    for (i, t) in flipped.iter().enumerate() {
        truth.set(t, 20 * S + Duration::from_millis(97 * i as u64), false);
    }
    let (mut sim, _, truth) = build(&setup, truth);
    let mut lat = visibility(&mut sim, &flipped, 45 * S);
    let p99 = percentile(&mut lat, 0.99);
    eprintln!(
        "visibility p99 {p99:?}, max {:?}; {:?}",
        lat.last(),
        sim.stats()
    );
    assert!(p99 <= 2 * S, "p99 visibility {p99:?}");
    answers_match_truth(&sim, &truth, sim.now(), 10 * S).unwrap();
    nothing_contested(&sim).unwrap();
}

/// How many nodes of `group` check each target.
fn checks_in(sim: &Sim<SimNode>, group: &[usize], t: &TargetName) -> usize {
    group
        .iter()
        .filter(|&&i| sim.nodes()[i].as_ref().is_some_and(|n| n.cluster.owns(t)))
        .count()
}

/// Step `sim` by `step` until `done` holds or `limit`; the time it first held.
fn until(
    sim: &mut Sim<SimNode>,
    step: Duration,
    limit: Duration,
    done: impl Fn(&Sim<SimNode>) -> bool,
) -> Option<Duration> {
    while sim.now() < limit {
        if done(sim) {
            return Some(sim.now());
        }
        let next = sim.now() + step;
        sim.run_until(next);
    }
    done(sim).then_some(sim.now())
}

#[test]
fn in_a_partition_each_side_takes_over_and_after_the_heal_duplicates_and_conflicts_clear() {
    let setup = Setup {
        m: 6,
        n: 300,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let (a, b) = (vec![0, 1, 2], vec![3, 4, 5]);
    let mut truth = Truth::new();
    let flipped: Vec<TargetName> = (0..20)
        .map(|i| TargetName::new(format!("t{}", i * 7)).unwrap())
        .collect();
    for t in &flipped {
        truth.set(t, 25 * S, false);
    }
    let (mut sim, names, truth) = build(&setup, truth);
    sim.run_until(10 * S);
    exactly_r_owners(&sim, 1).unwrap();
    sim.at(10 * S, Fault::Partition(vec![a.clone(), b.clone()]));
    // Each side declares the other dead and takes over its targets.
    let both = until(&mut sim, S / 10, 40 * S, |sim| {
        names
            .iter()
            .all(|t| checks_in(sim, &a, t) == 1 && checks_in(sim, &b, t) == 1)
    });
    assert!(both.is_some(), "each side owns every target once");
    sim.run_until(35 * S);
    // Both sides saw the flips and wrote them: concurrent siblings.
    let heal = sim.now();
    sim.at(heal, Fault::Heal);
    let contested_seen = until(&mut sim, S / 20, heal + 20 * S, |sim| {
        live(sim).any(|(_, n)| {
            flipped
                .iter()
                .any(|t| n.cluster.answer(t).is_some_and(|a| a.contested))
        })
    });
    assert!(
        contested_seen.is_some(),
        "the two sides' writes meet as siblings"
    );
    let merged = until(&mut sim, S / 10, heal + 60 * S, |sim| {
        members_agree(sim).is_ok() && exactly_r_owners(sim, 1).is_ok()
    })
    .expect("duplicate checking stops");
    let settled = until(&mut sim, S / 10, heal + 60 * S, |sim| {
        nothing_contested(sim).is_ok()
    })
    .expect("contested clears");
    eprintln!(
        "after the heal: one owner per target after {:?}, nothing contested after {:?}",
        merged - heal,
        settled - heal
    );
    sim.run_until(sim.now() + 5 * S);
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    nothing_contested(&sim).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 5 * S).unwrap();
    answers_agree(&sim).unwrap();
}

fn input(name: &str) -> heck_check::TargetInput {
    heck_check::TargetInput {
        name: name.into(),
        url: "http://192.0.2.1/health".into(),
        interval: Some(heck_check::HumanDuration(S)),
        timeout: Some(heck_check::HumanDuration(S / 4)),
        ..Default::default()
    }
}

/// Run `f` on node `i` as an API call at the current time, sending what it says.
fn api(
    sim: &mut Sim<SimNode>,
    i: usize,
    f: impl FnOnce(&mut SimNode, Duration) -> Vec<heck_cluster::Effect<usize>>,
) {
    let now = sim.now();
    let node = sim.node_mut(i).unwrap();
    let fx = f(node, now);
    node.inject(fx);
}

#[test]
fn a_target_added_or_deleted_through_any_node_is_replicated_and_checked_by_its_owner_only() {
    let setup = Setup {
        m: 5,
        n: 50,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let (mut sim, mut names, _) = build(&setup, Truth::new());
    sim.run_until(10 * S);
    let added = TargetName::new("api-1").unwrap();
    api(&mut sim, 0, |n, now| {
        n.cluster.add_target(at(now), input("api-1")).unwrap()
    });
    // A config-file target deleted through another node.
    let t3 = TargetName::new("t3").unwrap();
    api(&mut sim, 4, |n, now| {
        n.cluster.remove_target(at(now), &t3).unwrap()
    });
    sim.run_until(15 * S);
    names.insert(added.clone());
    names.remove(&t3);
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    assert!(live(&sim).all(|(_, n)| {
        n.cluster
            .answer(&added)
            .is_some_and(|a| a.status == Status::Healthy)
    }));
    // An add and a delete of the same target, concurrently on two nodes: present wins.
    let t4 = TargetName::new("t4").unwrap();
    api(&mut sim, 1, |n, now| {
        n.cluster.remove_target(at(now), &t4).unwrap()
    });
    api(&mut sim, 2, |n, now| {
        n.cluster.add_target(at(now), input("t4")).unwrap()
    });
    // And the added target deleted again.
    api(&mut sim, 3, |n, now| {
        n.cluster.remove_target(at(now), &added).unwrap()
    });
    sim.run_until(20 * S);
    names.remove(&added);
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    assert!(
        live(&sim)
            .all(|(_, n)| n.cluster.targets()[&t4].url.as_url().as_str()
                == "http://192.0.2.1/health")
    );
    // Nobody checks or writes the deleted targets any more.
    let before: Vec<u64> = live(&sim).map(|(_, n)| n.cluster.stats().writes).collect();
    sim.run_until(25 * S);
    for (i, n) in live(&sim) {
        assert!(
            !n.check_log
                .iter()
                .any(|(at, t)| *at > 21 * S && (*t == added || *t == t3)),
            "node {i} checked a deleted target"
        );
        assert!(n.cluster.siblings(&added).is_empty() && n.cluster.siblings(&t3).is_empty());
    }
    let after: Vec<u64> = live(&sim).map(|(_, n)| n.cluster.stats().writes).collect();
    assert_eq!(before, after, "no status changed, so nothing was written");
}

#[test]
fn a_restarted_node_rejoins_takes_its_targets_back_and_catches_up() {
    let setup = Setup {
        m: 5,
        n: 200,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    let mut truth = Truth::new();
    let t9 = TargetName::new("t9").unwrap();
    truth.set(&t9, 14 * S, false);
    let (mut sim, names, truth) = build(&setup, truth);
    sim.run_until(10 * S);
    let mine: BTreeSet<TargetName> = checked_by(&sim, 2).into_iter().collect();
    sim.at(10 * S, Fault::Crash(2));
    sim.at(20 * S, Fault::Restart(2));
    sim.run_until(40 * S);
    members_agree(&sim).unwrap();
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    let again: BTreeSet<TargetName> = checked_by(&sim, 2).into_iter().collect();
    assert_eq!(
        mine, again,
        "rendezvous gives the returning node exactly its targets back"
    );
    answers_match_truth(&sim, &truth, sim.now(), 5 * S).unwrap();
    answers_agree(&sim).unwrap();
    nothing_contested(&sim).unwrap();
}

#[test]
fn with_two_replicas_every_target_has_two_checkers_and_survives_a_crash() {
    let setup = Setup {
        m: 5,
        n: 200,
        interval: S,
        replicas: 2,
        net: lossy(0.01),
        seed: seed(),
    };
    let mut truth = Truth::new();
    for i in 0..10 {
        truth.set(&TargetName::new(format!("t{i}")).unwrap(), 12 * S, false);
    }
    let (mut sim, names, truth) = build(&setup, truth);
    sim.run_until(10 * S);
    exactly_r_owners(&sim, 2).unwrap();
    sim.at(10 * S, Fault::Crash(1));
    sim.run_until(30 * S);
    exactly_r_owners(&sim, 2).unwrap();
    no_target_lost(&sim, &names).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 5 * S).unwrap();
    answers_agree(&sim).unwrap();
}

/// SWIM push-pull is carried by the simulated cluster as by the agent: each node's join asks
/// its seeds for their member lists, and then a random member every push-pull interval (6 s in
/// the fast profile). Fails if `Effect::PushPull` is dropped anywhere on the way.
#[test]
fn every_node_exchanges_member_lists_by_push_pull_when_joining_and_then_periodically() {
    let setup = Setup {
        m: 5,
        n: 20,
        interval: S,
        replicas: 1,
        net: lossy(0.0),
        seed: seed(),
    };
    let (mut sim, _, _) = build(&setup, Truth::new());
    sim.run_until(20 * S);
    members_agree(&sim).unwrap();
    for (i, n) in live(&sim) {
        let st = n.cluster.swim_stats();
        assert!(st.join_push_pulls >= 1, "node {i}: {st:?}");
        assert!(st.push_pulls >= 1, "node {i}: {st:?}");
    }
}

/// Every incarnation of node `node` that node `i`'s version vector (or cloud) lists.
fn incarnations_listed(sim: &Sim<SimNode>, i: usize, node: usize) -> usize {
    let n = sim.nodes()[i].as_ref().unwrap();
    let ctx = n.cluster.replicated().context();
    let hash = heck_crdt::ReplicaId::new(heck_cluster::sim::node_name(node).as_str(), 0).node;
    let listed: BTreeSet<heck_crdt::ReplicaId> = ctx
        .vv()
        .iter()
        .map(|(r, _)| *r)
        .chain(ctx.cloud().iter().map(|d| d.replica))
        .filter(|r| r.node == hash)
        .collect();
    listed.len()
}

#[test]
fn replaced_incarnations_are_retired_so_version_vectors_do_not_grow_with_restarts() {
    let setup = Setup {
        m: 4,
        n: 40,
        interval: S,
        replicas: 1,
        net: lossy(0.01),
        seed: seed(),
    };
    // Every target flips a few seconds after each restart, so each incarnation of n2 writes
    // (its targets come back to it) and overwrites what the one before wrote.
    let mut truth = Truth::new();
    let names: Vec<TargetName> = (0..setup.n)
        .map(|i| TargetName::new(format!("t{i}")).unwrap())
        .collect();
    for (k, at) in [17 * S, 32 * S, 47 * S].into_iter().enumerate() {
        for t in &names {
            truth.set(t, at, k % 2 == 1);
        }
    }
    let (mut sim, names, _truth) = build(&setup, truth);
    for (crash, restart) in [(10, 13), (25, 28), (40, 43)] {
        sim.at(crash * S, Fault::Crash(2));
        sim.at(restart * S, Fault::Restart(2));
    }
    sim.run_until(60 * S);
    let most = (0..setup.m)
        .map(|i| incarnations_listed(&sim, i, 2))
        .max()
        .unwrap();
    assert!(
        most > 1,
        "before RETIRE_AFTER the replaced ones are still listed ({most})"
    );
    sim.run_until(60 * S + heck_cluster::cluster::RETIRE_AFTER + 30 * S);
    for i in 0..setup.m {
        let listed = incarnations_listed(&sim, i, 2);
        assert!(listed <= 1, "n{i} lists {listed} incarnations of n2");
    }
    let retired: u64 = live(&sim)
        .map(|(_, n)| n.cluster.stats().epochs_retired)
        .sum();
    assert!(retired >= 3, "{retired} retirements");
    // No ping-pong: a node that retired does not look behind to one that has not (the
    // per-node retirement tried on 2026-12-03 made them send each other full states).
    let full_states = |sim: &Sim<SimNode>| -> u64 {
        live(sim)
            .map(|(_, n)| n.cluster.sync_stats().0.full_states_sent)
            .sum()
    };
    let before = full_states(&sim);
    sim.run_until(sim.now() + 30 * S);
    assert_eq!(full_states(&sim), before, "full states sent while quiet");
    members_agree(&sim).unwrap();
    no_target_lost(&sim, &names).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    answers_agree(&sim).unwrap();
}
