//! The full-state thinning of the CRDT adapter does exactly what the full state does, also
//! against deltas that arrive late.
#![allow(clippy::unwrap_used)]
use heck_check::TargetName;
use heck_cluster::adapter::crdt::thin_full_state;
use heck_cluster::{Key, TargetEntry, Value};
use heck_crdt::{Delta, ORMap, ReplicaId};
use proptest::prelude::*;

fn key(i: u8) -> Key {
    Key::Target(TargetName::new(format!("t{}", i % 4)).unwrap())
}

type Map = ORMap<Key, Value>;

/// Ops: (replica 0..3, key 0..4, write or remove); `seen[i]` says whether the receiver got op i.
fn run(ops: &[(u8, u8, bool)], seen: &[bool]) -> (Map, Map, Vec<Delta<Key, Value>>) {
    let mut reps: Vec<ORMap<Key, Value>> = (0..3).map(|_| ORMap::new()).collect();
    let mut all = ORMap::new();
    let mut receiver = ORMap::new();
    let mut deltas = Vec::new();
    for (i, &(r, k, write)) in ops.iter().enumerate() {
        let r = r as usize % 3;
        let d = if write {
            reps[r].write(
                ReplicaId::new(&format!("n{r}"), 1),
                key(k),
                Value::Target(TargetEntry::Deleted),
            )
        } else {
            reps[r].remove(&key(k))
        };
        // Writers gossip among themselves fully; the sender of the full state sees everything.
        for x in &mut reps {
            x.apply(&d);
        }
        all.apply(&d);
        if seen.get(i).copied().unwrap_or(false) {
            receiver.apply(&d);
        }
        deltas.push(d);
    }
    (all, receiver, deltas)
}

fn same(a: &ORMap<Key, Value>, b: &ORMap<Key, Value>) -> bool {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    ka == kb
        && ka.iter().all(|k| a.dots(k) == b.dots(k))
        && a.context().covers(b.context())
        && b.context().covers(a.context())
}

proptest! {
    #[test]
    fn a_thinned_full_state_joins_like_the_full_state_even_before_late_deltas(
        ops in prop::collection::vec((0..3u8, 0..4u8, prop::bool::weighted(0.7)), 1..25),
        seen in prop::collection::vec(any::<bool>(), 25),
        late in prop::collection::vec(0..25usize, 0..10),
    ) {
        let (all, receiver, deltas) = run(&ops, &seen);
        let full = all.state().clone();
        let thin = thin_full_state(&receiver, &full).unwrap();
        prop_assert!(thin.ctx.vv().is_empty(), "a dot cloud, so it travels as news only");
        let (mut a, mut b) = (receiver.clone(), receiver.clone());
        a.apply(&full);
        b.apply(&thin);
        prop_assert!(same(&a, &b));
        prop_assert!(same(&a, &all));
        for i in late.into_iter().filter(|&i| i < deltas.len()) {
            a.apply(&deltas[i]);
            b.apply(&deltas[i]);
        }
        prop_assert!(same(&a, &b), "a late delta changes neither");
    }
}
