//! Invariants of a simulated cluster, one function each. Each returns `Err` with a sentence
//! naming the node and target, so a failing seed reads as a bug report.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use heck_check::{Status, TargetName};
use heck_sim::Sim;

use super::{SimNode, Truth, node_name};

/// The nodes that are running (not crashed).
pub fn live(sim: &Sim<SimNode>) -> impl Iterator<Item = (usize, &SimNode)> {
    sim.nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
}

/// No target lost: every running node lists exactly `expected`.
pub fn no_target_lost(sim: &Sim<SimNode>, expected: &BTreeSet<TargetName>) -> Result<(), String> {
    for (i, n) in live(sim) {
        let have: BTreeSet<&TargetName> = n.cluster.targets().keys().collect();
        if let Some(t) = expected.iter().find(|t| !have.contains(t)) {
            return Err(format!("node {i} lost target {t}"));
        }
        if have.len() != expected.len() {
            return Err(format!(
                "node {i} lists {} targets, expected {}",
                have.len(),
                expected.len()
            ));
        }
    }
    Ok(())
}

/// Membership agrees: every running node's live set is exactly the running nodes.
pub fn members_agree(sim: &Sim<SimNode>) -> Result<(), String> {
    let running: BTreeSet<String> = live(sim).map(|(i, _)| node_name(i).to_string()).collect();
    for (i, n) in live(sim) {
        let seen: BTreeSet<String> = n.cluster.live_members().map(|m| m.to_string()).collect();
        if seen != running {
            return Err(format!("node {i} sees {seen:?}, running are {running:?}"));
        }
    }
    Ok(())
}

/// Outside partitions, in steady state: every target is checked by exactly min(r, running)
/// running nodes.
pub fn exactly_r_owners(sim: &Sim<SimNode>, replicas: usize) -> Result<(), String> {
    let counts = checkers(sim);
    let want = replicas.min(live(sim).count());
    let Some((_, any)) = live(sim).next() else {
        return Ok(());
    };
    for t in any.cluster.targets().keys() {
        let have = counts.get(t).map_or(0, Vec::len);
        if have != want {
            return Err(format!(
                "target {t} is checked by {have} nodes {:?}, expected {want}",
                counts.get(t)
            ));
        }
    }
    Ok(())
}

/// Every target is checked by at least one running node.
pub fn every_target_checked(sim: &Sim<SimNode>) -> Result<(), String> {
    let counts = checkers(sim);
    let Some((_, any)) = live(sim).next() else {
        return Ok(());
    };
    match any
        .cluster
        .targets()
        .keys()
        .find(|t| !counts.contains_key(*t))
    {
        Some(t) => Err(format!("target {t} is checked by no running node")),
        None => Ok(()),
    }
}

fn checkers(sim: &Sim<SimNode>) -> BTreeMap<&TargetName, Vec<usize>> {
    let mut counts: BTreeMap<&TargetName, Vec<usize>> = BTreeMap::new();
    for (i, n) in live(sim) {
        for t in n.checking() {
            counts.entry(t).or_default().push(i);
        }
    }
    counts
}

/// Every running node's answer for every target equals the truth, for targets whose truth has
/// not changed within `bound` before `now` (a change needs time to be seen and to spread).
pub fn answers_match_truth(
    sim: &Sim<SimNode>,
    truth: &Truth,
    now: Duration,
    bound: Duration,
) -> Result<(), String> {
    for (i, n) in live(sim) {
        for t in n.cluster.targets().keys() {
            if now.saturating_sub(truth.changed_at(t, now)) < bound
                && truth.changed_at(t, now) > Duration::ZERO
            {
                continue;
            }
            let want = truth.status(t, now);
            let have = n.cluster.answer(t).map_or(Status::Unknown, |a| a.status);
            if have != want {
                return Err(format!(
                    "node {i} answers {have} for {t}, the truth is {want} (answer {:?})",
                    n.cluster.answer(t)
                ));
            }
        }
    }
    Ok(())
}

/// No running node reports a contested target.
pub fn nothing_contested(sim: &Sim<SimNode>) -> Result<(), String> {
    for (i, n) in live(sim) {
        for t in n.cluster.targets().keys() {
            if n.cluster.answer(t).is_some_and(|a| a.contested) {
                return Err(format!(
                    "node {i} reports {t} contested: {:?}",
                    n.cluster.siblings(t)
                ));
            }
        }
    }
    Ok(())
}

/// Every running node gives the same answer (status, observer, contested) for every target.
pub fn answers_agree(sim: &Sim<SimNode>) -> Result<(), String> {
    let mut first: Option<(usize, &SimNode)> = None;
    for (i, n) in live(sim) {
        let Some((j, m)) = first else {
            first = Some((i, n));
            continue;
        };
        for t in m.cluster.targets().keys() {
            let (a, b) = (m.cluster.answer(t), n.cluster.answer(t));
            let key =
                |x: Option<&crate::Answer>| x.map(|a| (a.status, a.observer.clone(), a.contested));
            if key(a) != key(b) {
                return Err(format!("nodes {j} and {i} disagree on {t}: {a:?} vs {b:?}"));
            }
        }
    }
    Ok(())
}

/// No dot names two writes: every running node that holds an entry under a dot holds the same
/// key and value under it (a replica restored under an id whose last dots it lost would issue
/// one of them again; see heck-crdt's `durable` module).
pub fn no_dot_reused(sim: &Sim<SimNode>) -> Result<(), String> {
    let mut seen: BTreeMap<heck_crdt::Dot, (usize, &crate::Key, &crate::Value)> = BTreeMap::new();
    for (i, n) in live(sim) {
        for (k, m) in &n.cluster.replicated().state().entries {
            for (d, v) in m {
                match seen.get(d) {
                    Some(&(j, k2, v2)) if (k2, v2) != (k, v) => {
                        return Err(format!(
                            "dot {}:{} names {k:?} = {v:?} at node {i} and {k2:?} = {v2:?} at node {j}",
                            d.replica, d.counter
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(*d, (i, k, v));
                    }
                }
            }
        }
    }
    Ok(())
}
