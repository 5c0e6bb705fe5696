//! `--data-dir` in the simulator: whole-cluster restarts from snapshots, clean (every node keeps
//! its replica id) and unclean (every node takes a fresh epoch), with targets added and deleted
//! through the API before. Seeded: `HECK_SEED=n` replays one seed.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use heck_check::{Status, TargetInput, TargetName};
use heck_cluster::sim::invariants::*;
use heck_cluster::sim::{Disk, SimNode, Truth, at, node_name, targets};
use heck_cluster::{Config, Effect, Key};
use heck_crdt::ReplicaId;
use heck_sim::{Fault, Net, Sim};

const S: Duration = Duration::from_secs(1);
const M: usize = 5;

fn seed() -> u64 {
    std::env::var("HECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// `M` nodes with 50 config-file targets, each with a data dir on `disk`.
fn build(disk: &Disk) -> (Sim<SimNode>, BTreeSet<TargetName>) {
    let specs = targets(50, S, 2, 2);
    let names = specs.iter().map(|t| t.name.clone()).collect();
    let truth = Rc::new(Truth::new());
    let (disk, seed) = (disk.clone(), seed());
    let net = Net {
        loss: 0.01,
        duplicate: 0.01,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(10),
    };
    let sim = Sim::new(
        M,
        seed,
        Duration::from_millis(20),
        net,
        move |id, restarts| {
            let config = Config::fast();
            SimNode::new(
                id,
                restarts,
                config.clone(),
                specs.clone(),
                (0..3).collect(),
                truth.clone(),
                seed,
            )
            .with_disk(disk.clone(), None, config, specs.clone())
        },
    );
    (sim, names)
}

fn input(name: &str) -> TargetInput {
    TargetInput {
        name: name.into(),
        url: "http://192.0.2.1/health".into(),
        interval: Some(heck_check::HumanDuration(S)),
        timeout: Some(heck_check::HumanDuration(S / 4)),
        ..Default::default()
    }
}

fn name(s: &str) -> TargetName {
    TargetName::new(s).unwrap()
}

/// Run `f` on node `i` as an API call at the current time, sending what it says.
fn api(
    sim: &mut Sim<SimNode>,
    i: usize,
    f: impl FnOnce(&mut SimNode, Duration) -> Vec<Effect<usize>>,
) {
    let now = sim.now();
    let node = sim.node_mut(i).unwrap();
    let fx = f(node, now);
    node.inject(fx);
}

/// Add `api-1` through node 0 and delete the config file's `t3` through node 4; the names
/// every node should then list.
fn add_and_delete(sim: &mut Sim<SimNode>, mut names: BTreeSet<TargetName>) -> BTreeSet<TargetName> {
    api(sim, 0, |n, now| {
        n.cluster.add_target(at(now), input("api-1")).unwrap()
    });
    api(sim, 4, |n, now| {
        n.cluster.remove_target(at(now), &name("t3")).unwrap()
    });
    names.insert(name("api-1"));
    names.remove(&name("t3"));
    names
}

fn node(sim: &Sim<SimNode>, i: usize) -> &SimNode {
    sim.nodes()[i].as_ref().unwrap()
}

/// Every replica id node `i`'s version vector (and cloud) has an entry for.
fn vv_entries(sim: &Sim<SimNode>, i: usize) -> BTreeSet<ReplicaId> {
    let ctx = node(sim, i).cluster.replicated().context();
    let vv = ctx.vv().iter().map(|(r, _)| *r);
    vv.chain(ctx.cloud().iter().map(|d| d.replica)).collect()
}

/// Each node's answer (status) for each target it lists.
fn answers(sim: &Sim<SimNode>, i: usize) -> Vec<(TargetName, Status)> {
    let c = &node(sim, i).cluster;
    c.targets()
        .keys()
        .map(|t| (t.clone(), c.answer(t).map_or(Status::Unknown, |a| a.status)))
        .collect()
}

/// Run until `until` in steps of 100 ms, holding `no_dot_reused` after each.
fn run_without_reuse(sim: &mut Sim<SimNode>, until: Duration) {
    while sim.now() < until {
        let next = (sim.now() + S / 10).min(until);
        sim.run_until(next);
        no_dot_reused(sim).unwrap();
    }
}

fn crash_and_restart_all(sim: &mut Sim<SimNode>, crash: Duration, restart: Duration) {
    for i in 0..M {
        sim.at(crash, Fault::Crash(i));
        sim.at(restart, Fault::Restart(i));
    }
}

fn converged(sim: &Sim<SimNode>, names: &BTreeSet<TargetName>) {
    members_agree(sim).unwrap();
    no_target_lost(sim, names).unwrap();
    exactly_r_owners(sim, 1).unwrap();
    answers_agree(sim).unwrap();
    nothing_contested(sim).unwrap();
    no_dot_reused(sim).unwrap();
}

#[test]
fn a_clean_whole_cluster_restart_keeps_api_targets_deletions_answers_and_replica_ids() {
    let disk = Disk::new();
    let (mut sim, names) = build(&disk);
    sim.run_until(10 * S);
    let names = add_and_delete(&mut sim, names);
    run_without_reuse(&mut sim, 15 * S);
    converged(&sim, &names);
    let ids: Vec<ReplicaId> = (0..M).map(|i| node(&sim, i).cluster.replica_id()).collect();
    let entries = vv_entries(&sim, 0);
    assert_eq!(entries, ids.iter().copied().collect(), "one entry per node");
    let before: Vec<_> = (0..M).map(|i| answers(&sim, i)).collect();
    assert!(before[0].contains(&(name("api-1"), Status::Healthy)));

    // Every node shuts down gracefully (its final snapshot is clean), then all start again.
    let now = sim.now();
    for i in 0..M {
        sim.node_mut(i).unwrap().shutdown(now);
    }
    crash_and_restart_all(&mut sim, now + S / 5, 17 * S);
    sim.run_until(17 * S);
    for i in 0..M {
        let n = node(&sim, i);
        let restored = n.restored.unwrap();
        assert!(
            restored.clean && restored.kept_replica_id(),
            "node {i}: {restored:?}"
        );
        assert_eq!(n.cluster.replica_id(), ids[i]);
        // Straight from the snapshot, before any message: the same targets and answers.
        let listed: BTreeSet<TargetName> = n.cluster.targets().keys().cloned().collect();
        assert_eq!(listed, names, "node {i} after restore");
        assert_eq!(
            answers(&sim, i),
            before[i],
            "node {i}'s answers after restore"
        );
    }
    // A write after the restart is numbered under the kept id.
    api(&mut sim, 1, |n, now| {
        n.cluster.add_target(at(now), input("after")).unwrap()
    });
    let dots = node(&sim, 1)
        .cluster
        .replicated()
        .dots(&Key::Target(name("after")));
    assert_eq!(dots.iter().map(|d| d.replica).collect::<Vec<_>>(), [ids[1]]);
    let mut names = names;
    names.insert(name("after"));
    run_without_reuse(&mut sim, 35 * S);
    converged(&sim, &names);
    for i in 0..M {
        assert_eq!(
            vv_entries(&sim, i),
            entries,
            "node {i}: no new version-vector entry"
        );
    }
    assert!(
        answers(&sim, 2).contains(&(name("api-1"), Status::Healthy)),
        "the API's target is checked again"
    );
}

/// Node 0's last snapshot is older than its last write (`late`), which its peers saved: the
/// case where keeping the id would reuse a dot.
fn unclean_scenario(disk: &Disk) -> (Sim<SimNode>, BTreeSet<TargetName>, Vec<ReplicaId>) {
    let (mut sim, names) = build(disk);
    sim.run_until(10 * S);
    let mut names = add_and_delete(&mut sim, names);
    run_without_reuse(&mut sim, 12 * S);
    for i in 0..M {
        node(&sim, i).save(false);
    }
    api(&mut sim, 0, |n, now| {
        n.cluster.add_target(at(now), input("late")).unwrap()
    });
    names.insert(name("late"));
    run_without_reuse(&mut sim, 13 * S);
    for i in 1..M {
        node(&sim, i).save(false);
    }
    let ids = (0..M).map(|i| node(&sim, i).cluster.replica_id()).collect();
    (sim, names, ids)
}

#[test]
fn an_unclean_whole_cluster_restart_keeps_the_data_under_fresh_epochs_and_reuses_no_dot() {
    let disk = Disk::new();
    let (mut sim, names, ids) = unclean_scenario(&disk);
    let entries = vv_entries(&sim, 1);
    crash_and_restart_all(&mut sim, 13 * S, 14 * S);
    sim.run_until(14 * S);
    let mut fresh = BTreeSet::new();
    for (i, old) in ids.iter().enumerate() {
        let n = node(&sim, i);
        let restored = n.restored.unwrap();
        assert!(
            !restored.clean && !restored.kept_replica_id(),
            "node {i}: {restored:?}"
        );
        assert_eq!(restored.previous, *old);
        assert_ne!(n.cluster.replica_id(), *old);
        fresh.insert(n.cluster.replica_id());
    }
    // Node 0 writes at once, before it has heard from anyone: under its old id this would be
    // the dot of `late`.
    api(&mut sim, 0, |n, now| {
        n.cluster.add_target(at(now), input("after")).unwrap()
    });
    no_dot_reused(&sim).unwrap();
    let mut names = names;
    names.insert(name("after"));
    run_without_reuse(&mut sim, 30 * S);
    converged(&sim, &names);
    // Only nodes that wrote since have dots of their new epoch: at most one new entry each.
    let node0 = node(&sim, 0).cluster.replica_id();
    for i in 0..M {
        let have = vv_entries(&sim, i);
        let new: BTreeSet<ReplicaId> = have.difference(&entries).copied().collect();
        assert!(entries.is_subset(&have), "node {i} forgot an entry");
        assert!(
            new.is_subset(&fresh) && new.contains(&node0),
            "node {i}: {new:?}"
        );
    }
    // The previous ids are replaced (each by its own node's fresh one): retired after
    // RETIRE_AFTER, they leave every version vector; nothing is lost and no dot reused.
    run_without_reuse(
        &mut sim,
        30 * S + heck_cluster::cluster::RETIRE_AFTER + 30 * S,
    );
    converged(&sim, &names);
    for (i, old) in ids.iter().enumerate() {
        let have = vv_entries(&sim, i);
        assert!(
            have.is_subset(&fresh),
            "node {i} still lists {:?}",
            have.difference(&fresh)
        );
        assert!(
            node(&sim, i)
                .cluster
                .replicated()
                .context()
                .retired()
                .get(old)
                > 0
        );
    }
}

/// The invariant above can fail: the same stale snapshot of node 0, forged to say "clean",
/// keeps the old id, and node 0's next write reuses the dot of `late`.
#[test]
fn a_stale_snapshot_forged_clean_reuses_a_dot_and_the_invariant_sees_it() {
    let disk = Disk::new();
    let (mut sim, _, ids) = unclean_scenario(&disk);
    let me = node_name(0);
    let snap = heck_cluster::snapshot::decode(&disk.read(0).unwrap(), &me).unwrap();
    let payload = heck_crdt::wire::encode(&snap.replica);
    disk.write(0, heck_cluster::snapshot::encode(&me, true, &payload));
    crash_and_restart_all(&mut sim, 13 * S, 14 * S);
    sim.run_until(14 * S);
    assert_eq!(node(&sim, 0).cluster.replica_id(), ids[0]);
    api(&mut sim, 0, |n, now| {
        n.cluster.add_target(at(now), input("after")).unwrap()
    });
    let err = no_dot_reused(&sim).unwrap_err();
    assert!(err.contains("late") && err.contains("after"), "{err}");
}

/// One node restarts gracefully while the others run: its peers had removed it on its leave,
/// and take it back under the same replica id; it takes its targets back.
#[test]
fn a_node_restarted_gracefully_while_the_others_run_keeps_its_id_and_its_targets() {
    let disk = Disk::new();
    let (mut sim, names) = build(&disk);
    sim.run_until(10 * S);
    let names = add_and_delete(&mut sim, names);
    run_without_reuse(&mut sim, 15 * S);
    converged(&sim, &names);
    let id = node(&sim, 2).cluster.replica_id();
    let mine: BTreeSet<TargetName> = node(&sim, 2).checking().cloned().collect();
    assert!(!mine.is_empty());
    let entries = vv_entries(&sim, 0);
    let now = sim.now();
    sim.node_mut(2).unwrap().shutdown(now);
    sim.at(now + S / 5, Fault::Crash(2));
    sim.at(20 * S, Fault::Restart(2));
    run_without_reuse(&mut sim, 19 * S);
    // While it is away, the others took its targets over and wrote under their own ids.
    every_target_checked(&sim).unwrap();
    run_without_reuse(&mut sim, 40 * S);
    converged(&sim, &names);
    let n = node(&sim, 2);
    assert!(n.restored.unwrap().kept_replica_id());
    assert_eq!(n.cluster.replica_id(), id);
    assert_eq!(n.checking().cloned().collect::<BTreeSet<_>>(), mine);
    for i in 0..M {
        assert!(
            vv_entries(&sim, i).is_subset(&entries),
            "node {i}: no new version-vector entry"
        );
    }
}
