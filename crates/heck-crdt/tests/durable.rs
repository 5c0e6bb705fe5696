//! Restoring a replica from its durable part (`--data-dir`): under its own id only when the
//! snapshot holds every dot the id made (a clean shutdown), else under a fresh id; why; and what
//! is refused. See `docs/protocols/crdt.md`, "Snapshots and the replica id".
#![allow(clippy::unwrap_used)]
use heck_crdt::wire;
use heck_crdt::{Config, Delta, Dot, Durable, Effect, Invalid, Replica, ReplicaId, RestoreError};

type Kv = Replica<u8, String, String>;

fn rid(node: u64, epoch: u64) -> ReplicaId {
    ReplicaId { node, epoch }
}

/// Deliver every message until nobody has anything to say (a lossless network, in order).
fn sync(reps: &mut [&mut Kv], rounds: u64) {
    for round in 0..rounds {
        let mut queue = Vec::new();
        for (i, r) in reps.iter_mut().enumerate() {
            for Effect::Send { to, msg } in r.tick(round ^ i as u64) {
                queue.push((i as u8, to, msg));
            }
        }
        while let Some((from, to, msg)) = queue.pop() {
            let msg = wire::decode(&wire::encode(&msg), usize::MAX).unwrap();
            for Effect::Send { to: back, msg } in reps[usize::from(to)].handle_message(from, msg) {
                queue.push((to, back, msg));
            }
        }
    }
}

/// The durable part, through its encoding (as a snapshot file carries it).
fn saved(r: &Kv) -> Durable<String, String> {
    wire::decode(&r.encode_durable(), usize::MAX).unwrap()
}

fn value(r: &Kv, k: &str) -> Vec<String> {
    r.map().get(&k.to_string()).into_iter().cloned().collect()
}

#[test]
fn the_encoded_durable_part_is_the_durable_part() {
    let mut a: Kv = Replica::new(rid(1, 1), [], Config::default());
    a.write("k".into(), "v".into());
    a.write("gone".into(), "v".into());
    a.remove(&"gone".to_string());
    assert_eq!(saved(&a), a.durable());
    assert_eq!(
        saved(&a).next_seq,
        1,
        "three writes before any send are one buffered group"
    );
}

#[test]
fn a_replica_restored_under_its_own_id_writes_above_every_dot_it_made() {
    let (mut a, mut b): (Kv, Kv) = (
        Replica::new(rid(1, 1), [1], Config::default()),
        Replica::new(rid(2, 1), [0], Config::default()),
    );
    a.write("x".into(), "1".into());
    a.write("y".into(), "2".into());
    b.write("z".into(), "3".into());
    sync(&mut [&mut a, &mut b], 3);
    a.remove(&"x".to_string()); // its dot 1 lives on only in the context
    let snapshot = saved(&a);
    let mut restored: Kv = Replica::restore(snapshot, a.id(), [1], Config::default()).unwrap();
    assert_eq!(
        restored.map().state(),
        a.map().state(),
        "nothing lost, nothing added"
    );
    assert_eq!(restored.id(), rid(1, 1));
    let highest = a.map().context().next_dot(a.id()).counter - 1;
    restored.write("w".into(), "4".into());
    let dot = restored.map().dots(&"w".to_string())[0];
    assert_eq!(dot.counter, highest + 1);
    assert!(
        !a.map().context().contains(&dot),
        "a dot of its own never seen before"
    );
}

/// Why an unclean snapshot needs a fresh epoch: written before the replica's last write, it
/// lacks that write's dot, which a peer holds. Restored under the old id, the replica issues the
/// same dot for a new write, and the peer drops the new write as already seen.
#[test]
fn a_stale_snapshot_under_its_old_id_reuses_a_dot_and_under_a_fresh_id_does_not() {
    let (mut a, mut b): (Kv, Kv) = (
        Replica::new(rid(1, 1), [1], Config::default()),
        Replica::new(rid(2, 1), [0], Config::default()),
    );
    a.write("x".into(), "1".into());
    let stale = saved(&a);
    a.write("y".into(), "2".into()); // after the snapshot: dot (1.1, 2)
    sync(&mut [&mut a, &mut b], 3);
    assert_eq!(value(&b, "y"), ["2"]);

    // The hazard, shown: the old id again.
    let mut reused: Kv = Replica::restore(stale.clone(), a.id(), [1], Config::default()).unwrap();
    reused.write("z".into(), "3".into());
    let dot = reused.map().dots(&"z".to_string())[0];
    assert_eq!(
        dot,
        b.map().dots(&"y".to_string())[0],
        "one dot, two writes"
    );
    // A copy of the peer, so the rule can be shown on the same peer below.
    let mut b2: Kv = Replica::restore(b.durable(), b.id(), [0], Config::default()).unwrap();
    sync(&mut [&mut reused, &mut b2], 5);
    assert!(
        value(&b2, "z").is_empty(),
        "the peer dropped the new write as seen"
    );
    assert!(
        value(&b2, "y").is_empty(),
        "and lost the old one: its dot looks overwritten"
    );

    // The rule: a fresh epoch.
    let mut fresh: Kv = Replica::restore(stale, rid(1, 2), [1], Config::default()).unwrap();
    fresh.write("z".into(), "3".into());
    sync(&mut [&mut fresh, &mut b], 5);
    assert_eq!(value(&b, "z"), ["3"]);
    assert_eq!(
        value(&fresh, "y"),
        ["2"],
        "and it gets its lost write back from the peer"
    );
}

#[test]
fn a_restored_replica_with_peers_sends_them_its_state_and_converges() {
    let mut a: Kv = Replica::new(rid(1, 1), [1], Config::default());
    let mut b: Kv = Replica::new(rid(2, 1), [0], Config::default());
    a.write("x".into(), "1".into());
    sync(&mut [&mut a, &mut b], 3);
    let snapshot = saved(&a);
    // Both restart; only `a` kept its state.
    let mut a: Kv = Replica::restore(snapshot, rid(1, 1), [1], Config::default()).unwrap();
    let mut b: Kv = Replica::new(rid(2, 2), [0], Config::default());
    sync(&mut [&mut a, &mut b], 3);
    assert_eq!(value(&b, "x"), ["1"]);
    assert_eq!(a.map().state(), b.map().state());
}

#[test]
fn restore_refuses_another_nodes_state_a_used_epoch_and_an_inconsistent_state() {
    let mut a: Kv = Replica::new(rid(1, 1), [], Config::default());
    a.write("x".into(), "1".into());
    let snapshot = a.durable();
    let other = Replica::<u8, _, _>::restore(snapshot.clone(), rid(2, 1), [], Config::default());
    assert_eq!(
        other.err(),
        Some(RestoreError::OtherNode {
            snapshot: rid(1, 1),
            id: rid(2, 1)
        })
    );
    // An epoch whose dots the state holds is not fresh (it could reissue one of them).
    let mut b: Kv = Replica::new(rid(1, 7), [], Config::default());
    b.write("y".into(), "2".into());
    let mut both = snapshot.clone();
    both.state.join(b.map().state());
    let used = Replica::<u8, _, _>::restore(both, rid(1, 7), [], Config::default());
    assert_eq!(used.err(), Some(RestoreError::EpochSeen(rid(1, 7))));
    // An entry whose dot is not in the context: refused whole.
    let mut broken = snapshot;
    let stray = Dot {
        replica: rid(3, 1),
        counter: 1,
    };
    broken.state = Delta {
        entries: [("k".to_string(), [(stray, "v".to_string())].into())].into(),
        ctx: broken.state.ctx,
    };
    let refused = Replica::<u8, _, _>::restore(broken, rid(1, 2), [], Config::default());
    assert_eq!(
        refused.err(),
        Some(RestoreError::Invalid(Invalid::DotOutsideContext(stray)))
    );
}

/// A snapshot written before the upgrade to wire version 3 (contexts without retired
/// prefixes) still restores: an upgraded node keeps its data dir.
#[test]
fn a_durable_part_of_wire_version_2_still_decodes() {
    #[derive(serde::Serialize)]
    struct ContextV2<'a> {
        vv: &'a heck_crdt::VersionVector,
        cloud: &'a std::collections::BTreeSet<Dot>,
    }
    #[derive(serde::Serialize)]
    struct DeltaV2<'a> {
        entries: &'a std::collections::BTreeMap<String, std::collections::BTreeMap<Dot, String>>,
        ctx: ContextV2<'a>,
    }
    #[derive(serde::Serialize)]
    struct DurableV2<'a> {
        id: ReplicaId,
        next_seq: u64,
        state: DeltaV2<'a>,
    }
    let mut a: Kv = Replica::new(rid(1, 1), [], Config::default());
    a.write("k".into(), "v".into());
    a.write("j".into(), "w".into());
    a.remove(&"j".to_string());
    let durable = a.durable();
    let entries: std::collections::BTreeMap<String, std::collections::BTreeMap<Dot, String>> =
        durable
            .state
            .entries
            .iter()
            .map(|(k, m)| (k.clone(), m.iter().map(|(d, v)| (*d, v.clone())).collect()))
            .collect();
    let v2 = DurableV2 {
        id: durable.id,
        next_seq: durable.next_seq,
        state: DeltaV2 {
            entries: &entries,
            ctx: ContextV2 {
                vv: durable.state.ctx.vv(),
                cloud: durable.state.ctx.cloud(),
            },
        },
    };
    let mut bytes = vec![2];
    bytes.extend(postcard::to_allocvec(&v2).unwrap());
    assert_eq!(
        wire::decode::<Durable<String, String>>(&bytes, usize::MAX),
        Err(wire::DecodeError::Version(2))
    );
    assert_eq!(Durable::decode(&bytes, usize::MAX), Ok(durable));
    assert_eq!(
        Durable::decode(&a.encode_durable(), usize::MAX),
        Ok(a.durable())
    );
}
