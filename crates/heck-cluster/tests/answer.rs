//! The answer rule's laws: the same siblings and owners give the same answer on every node,
//! whatever order the writes arrived in; a later write by the owner clears `contested`.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, Status, TargetName, Thresholds};
use heck_cluster::{Key, NodeName, StatusRecord, Value, pick};
use heck_crdt::{Dot, ORMap, ReplicaId};
use proptest::prelude::*;

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

fn th() -> Thresholds {
    Thresholds {
        rise: 1.try_into().unwrap(),
        fall: 1.try_into().unwrap(),
    }
}

/// A record by `observer` saying `up` (healthy) or not, written at `at` seconds.
fn record(observer: &str, up: bool, at: u64) -> StatusRecord {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
    let mut check = CheckState::new(t);
    check.observe(up, t, th());
    StatusRecord {
        check,
        observer: name(observer),
        observed_at: Duration::from_secs(at),
    }
}

fn dot(node: u64, counter: u64) -> Dot {
    Dot {
        replica: ReplicaId { node, epoch: 1 },
        counter,
    }
}

#[test]
fn the_current_owners_observation_wins_over_a_later_one() {
    let a = record("p1", true, 10);
    let b = record("p2", false, 20);
    let owners = [name("p1"), name("p2")];
    let p = pick([(dot(1, 1), &a), (dot(2, 1), &b)], &owners).unwrap();
    assert_eq!(p.record.observer, name("p1"));
    assert!(p.contested);
}

#[test]
fn among_non_owners_the_later_observation_wins_then_the_name() {
    let a = record("p1", true, 10);
    let b = record("p2", false, 20);
    let c = record("p0", true, 20);
    let owners = [name("p9")];
    let p = pick([(dot(1, 1), &a), (dot(2, 1), &b)], &owners).unwrap();
    assert_eq!(p.record.observer, name("p2"), "later observed_at");
    let p = pick([(dot(2, 1), &b), (dot(3, 1), &c)], &owners).unwrap();
    assert_eq!(p.record.observer, name("p0"), "same time: smaller name");
}

#[test]
fn one_sibling_is_not_contested_and_none_is_no_answer() {
    let a = record("p1", true, 10);
    let p = pick([(dot(1, 1), &a)], &[]).unwrap();
    assert!(!p.contested);
    assert_eq!(p.record.status(), Status::Healthy);
    assert!(pick(std::iter::empty(), &[]).is_none());
}

const NAMES: [&str; 5] = ["p1", "p2", "p3", "p4", "p5"];

fn arb_records() -> impl Strategy<Value = Vec<(Dot, StatusRecord)>> {
    prop::collection::vec((0..5usize, any::<bool>(), 0..5u64), 1..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (o, up, at))| (dot(o as u64, i as u64 + 1), record(NAMES[o], up, at)))
            .collect()
    })
}

fn arb_owners() -> impl Strategy<Value = Vec<NodeName>> {
    Just(NAMES.to_vec())
        .prop_shuffle()
        .prop_flat_map(|v| (Just(v), 0..4usize))
        .prop_map(|(v, n)| v.into_iter().take(n).map(name).collect())
}

proptest! {
    #[test]
    fn the_same_siblings_give_the_same_answer_in_any_order(
        records in arb_records(),
        owners in arb_owners(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = records.clone();
        // A seeded Fisher-Yates: another node received the same writes in another order.
        let mut x = seed;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let a = pick(records.iter().map(|(d, r)| (*d, r)), &owners).unwrap();
        let b = pick(shuffled.iter().map(|(d, r)| (*d, r)), &owners).unwrap();
        prop_assert_eq!(a, b);
        prop_assert_eq!(a.contested, records.len() > 1);
    }

    /// Writers that have not seen each other write the same target; two readers receive the
    /// deltas in different orders: both hold the same siblings and give the same answer. Then
    /// the owner, having merged everything, writes once more: every reader's answer is the
    /// owner's, and no longer contested.
    #[test]
    fn concurrent_observations_converge_and_a_later_owner_write_clears_contested(
        writes in prop::collection::vec((0..5usize, any::<bool>(), 0..100u64), 1..6),
        order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
        owner in 0..5usize,
        owner_up in any::<bool>(),
    ) {
        let key = Key::Status(TargetName::new("web-1").unwrap());
        let owners = [name(NAMES[owner])];
        let deltas: Vec<_> = writes
            .iter()
            .enumerate()
            .map(|(i, &(w, up, at))| {
                let fresh: ORMap<Key, Value> = ORMap::new();
                // Each write by its own incarnation: none has seen another.
                let id = ReplicaId::new(NAMES[w], i as u64 + 1);
                fresh.write(id, key.clone(), Value::Status(record(NAMES[w], up, at)))
            })
            .collect();
        let (mut r1, mut r2): (ORMap<Key, Value>, ORMap<Key, Value>) = (ORMap::new(), ORMap::new());
        for d in &deltas {
            r1.apply(d);
        }
        for &i in order.iter().filter(|&&i| i < deltas.len()) {
            r2.apply(&deltas[i]);
        }
        let answer = |m: &ORMap<Key, Value>| {
            let sibs: Vec<(Dot, StatusRecord)> = m
                .dots(&key)
                .into_iter()
                .zip(m.get(&key))
                .filter_map(|(d, v)| match v {
                    Value::Status(r) => Some((d, r.clone())),
                    Value::Target(_) => None,
                })
                .collect();
            pick(sibs.iter().map(|(d, r)| (*d, r)), &owners)
                .map(|p| (p.record.clone(), p.contested))
        };
        prop_assert_eq!(answer(&r1), answer(&r2));
        prop_assert_eq!(answer(&r1).unwrap().1, deltas.len() > 1);

        let later = r1.write(
            ReplicaId::new(NAMES[owner], 1_000),
            key.clone(),
            Value::Status(record(NAMES[owner], owner_up, 1_000)),
        );
        r1.apply(&later);
        r2.apply(&later);
        for m in [&r1, &r2] {
            let (rec, contested) = answer(m).unwrap();
            prop_assert!(!contested);
            prop_assert_eq!(&rec.observer, &name(NAMES[owner]));
            prop_assert_eq!(rec.status(), if owner_up { Status::Healthy } else { Status::Unhealthy });
        }
    }
}
