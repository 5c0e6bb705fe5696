//! The laws, as properties: join is a semilattice, deltas equal mutations, replicas converge
//! under loss, duplication and reordering, removes stick, concurrent writes are kept, and the
//! decoder survives anything.
#![allow(clippy::unwrap_used)]
use heck_crdt::{
    Body, Causality, Config, Delta, Effect, Message, ORMap, Piece, Replica, ReplicaId,
    VersionVector, wire,
};
use proptest::prelude::*;

type Map = ORMap<u8, u16>;

const PIECE: Piece = Piece {
    from: None,
    seq: 9,
    index: 0,
    count: 1,
};

#[derive(Debug, Clone)]
enum Op {
    Write {
        replica: usize,
        key: u8,
        value: u16,
    },
    Remove {
        replica: usize,
        key: u8,
    },
    /// Replica `to` joins replica `from`'s whole state.
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..5u8, any::<u16>()).prop_map(|(replica, key, value)| Op::Write { replica, key, value }),
        2 => (0..3usize, 0..5u8).prop_map(|(replica, key)| Op::Remove { replica, key }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

fn rid(i: usize) -> ReplicaId {
    ReplicaId {
        node: i as u64 + 1,
        epoch: 7,
    }
}

/// Run ops over three replicas; return their states and every delta produced.
fn run(ops: &[Op]) -> (Vec<Map>, Vec<Delta<u8, u16>>) {
    let mut maps = vec![Map::new(), Map::new(), Map::new()];
    let mut deltas = Vec::new();
    for op in ops {
        match *op {
            Op::Write {
                replica,
                key,
                value,
            } => {
                let d = maps[replica].write(rid(replica), key, value);
                maps[replica].apply(&d);
                deltas.push(d);
            }
            Op::Remove { replica, key } => {
                let d = maps[replica].remove(&key);
                maps[replica].apply(&d);
                deltas.push(d);
            }
            Op::Sync { from, to } => {
                let s = maps[from].state().clone();
                maps[to].apply(&s);
            }
        }
    }
    (maps, deltas)
}

fn joined(a: &Map, b: &Map) -> Delta<u8, u16> {
    let mut x = a.clone();
    x.apply(b.state());
    x.state().clone()
}

proptest! {
    #[test]
    fn join_is_commutative_associative_and_idempotent(ops in prop::collection::vec(op(), 0..40)) {
        let (m, _) = run(&ops);
        prop_assert_eq!(joined(&m[0], &m[1]), joined(&m[1], &m[0]));
        let mut ab = m[0].clone(); ab.apply(m[1].state());
        let mut bc = m[1].clone(); bc.apply(m[2].state());
        let mut ab_c = ab.clone(); ab_c.apply(m[2].state());
        let mut a_bc = m[0].clone(); a_bc.apply(bc.state());
        prop_assert_eq!(ab_c.state(), a_bc.state());
        let mut aa = m[0].clone(); aa.apply(m[0].state());
        prop_assert_eq!(aa.state(), m[0].state());
    }

    /// m(X) = X ⊔ mδ(X): after applying a write's delta the register holds exactly that value;
    /// after a remove's delta, nothing.
    #[test]
    fn a_delta_joined_into_the_state_is_the_mutation(ops in prop::collection::vec(op(), 0..30), key in 0..5u8, value in any::<u16>()) {
        let (mut m, _) = run(&ops);
        let d = m[0].write(rid(0), key, value);
        m[0].apply(&d);
        prop_assert_eq!(m[0].get(&key), vec![&value]);
        let d = m[0].remove(&key);
        m[0].apply(&d);
        prop_assert!(m[0].get(&key).is_empty());
    }

    /// Deliver every delta to a fresh replica in any order, some twice: it ends up equal to the
    /// join of all three replicas' states.
    #[test]
    fn any_delivery_order_with_duplicates_converges(ops in prop::collection::vec(op(), 0..40), seed in any::<u64>()) {
        let (m, deltas) = run(&ops);
        let mut order: Vec<usize> = (0..deltas.len()).chain(0..deltas.len() / 3).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut fresh = Map::new();
        for i in order { fresh.apply(&deltas[i]); }
        let mut all = m[0].clone(); all.apply(m[1].state()); all.apply(m[2].state());
        prop_assert_eq!(fresh.state(), all.state());
    }

    #[test]
    fn concurrent_writes_are_both_kept(a in any::<u16>(), b in any::<u16>(), key in 0..5u8) {
        let (mut x, mut y) = (Map::new(), Map::new());
        let dx = x.write(rid(0), key, a);
        let dy = y.write(rid(1), key, b);
        x.apply(&dx); x.apply(&dy);
        y.apply(&dy); y.apply(&dx);
        prop_assert_eq!(x.get(&key).len(), 2);
        prop_assert_eq!(x.state(), y.state());
    }

    /// Once a remove has been applied after every write of a key was seen, no order of
    /// redelivering old deltas brings the key back.
    #[test]
    fn a_deleted_key_never_comes_back(ops in prop::collection::vec(op(), 0..40), key in 0..5u8) {
        let (m, deltas) = run(&ops);
        let mut all = m[0].clone(); all.apply(m[1].state()); all.apply(m[2].state());
        let rm = all.remove(&key);
        all.apply(&rm);
        for d in deltas.iter().rev() { all.apply(d); }
        prop_assert!(all.get(&key).is_empty());
    }

    /// The anti-entropy protocol over a lossy, duplicating, reordering network: once the network
    /// heals, a few lossless rounds make every replica equal.
    #[test]
    fn replicas_converge_through_anti_entropy_despite_loss_and_duplication(
        writes in prop::collection::vec((0..4usize, 0..6u8, any::<u16>(), any::<bool>()), 1..30),
        seed in any::<u64>(),
    ) {
        let n = 4;
        let mut reps: Vec<Replica<usize, u8, u16>> = (0..n)
            .map(|i| Replica::new(rid(i), (0..n).filter(|&j| j != i), Config { fanout: 2, digest_every: 3, max_buffer: 8, ..Config::default() }))
            .collect();
        let mut inflight: Vec<(usize, usize, Message<u8, u16>)> = Vec::new();
        let mut x = seed | 1;
        let mut rnd = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        for (i, &(r, k, v, remove)) in writes.iter().enumerate() {
            if remove { reps[r].remove(&k) } else { reps[r].write(k, v) }
            // A lossy round: each message dropped with probability 1/3, duplicated with 1/6,
            // delivered in a shuffled order.
            for (from, rep) in reps.iter_mut().enumerate() {
                for Effect::Send { to, msg } in rep.tick(rnd() ^ i as u64) {
                    inflight.push((from, to, msg));
                }
            }
            let mut batch = std::mem::take(&mut inflight);
            for j in (1..batch.len()).rev() { batch.swap(j, (rnd() % (j as u64 + 1)) as usize); }
            for (from, to, msg) in batch {
                let roll = rnd() % 6;
                if roll < 2 { continue; }
                let copies = if roll == 5 { 2 } else { 1 };
                for _ in 0..copies {
                    for Effect::Send { to: back, msg: reply } in reps[to].handle_message(from, msg.clone()) {
                        inflight.push((to, back, reply));
                    }
                }
            }
        }
        // Heal: lossless rounds until nothing moves.
        for round in 0..200u64 {
            for (from, rep) in reps.iter_mut().enumerate() {
                for Effect::Send { to, msg } in rep.tick(rnd() ^ round) {
                    inflight.push((from, to, msg));
                }
            }
            while let Some((from, to, msg)) = inflight.pop() {
                for Effect::Send { to: back, msg: reply } in reps[to].handle_message(from, msg) {
                    inflight.push((to, back, reply));
                }
            }
            if reps.iter().all(|r| r.map().state() == reps[0].map().state()) { break; }
        }
        for r in &reps {
            prop_assert_eq!(r.map().state(), reps[0].map().state());
        }
    }

    #[test]
    fn the_decoder_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = wire::decode::<Message<String, String>>(&bytes, 1 << 20);
    }

    #[test]
    fn messages_round_trip_and_truncations_are_errors(ops in prop::collection::vec(op(), 0..20), cut in any::<prop::sample::Index>()) {
        let (m, _) = run(&ops);
        let msg: Message<u8, u16> = Message { sender: rid(0), body: Body::Delta { piece: PIECE, delta: m[0].state().clone() } };
        let bytes = wire::encode(&msg);
        prop_assert_eq!(wire::decode::<Message<u8, u16>>(&bytes, 1 << 20).unwrap(), msg);
        let cut = cut.index(bytes.len());
        if cut < bytes.len() {
            prop_assert!(wire::decode::<Message<u8, u16>>(&bytes[..cut], 1 << 20).is_err());
        }
    }
}

#[test]
fn oversized_and_unknown_versions_are_rejected() {
    let bytes = wire::encode(&Message::<u8, u16> {
        sender: rid(0),
        body: Body::Ack {
            to: rid(1),
            piece: PIECE,
        },
    });
    assert!(matches!(
        wire::decode::<Message<u8, u16>>(&bytes, 1),
        Err(wire::DecodeError::TooLarge { .. })
    ));
    let mut v2 = bytes.clone();
    v2[0] = 3;
    assert_eq!(
        wire::decode::<Message<u8, u16>>(&v2, 100),
        Err(wire::DecodeError::Version(3))
    );
    assert_eq!(
        wire::decode::<Message<u8, u16>>(&[], 100),
        Err(wire::DecodeError::Empty)
    );
}

#[test]
fn version_vectors_compare_causally() {
    let (a, b) = (rid(0), rid(1));
    let mut m = Map::new();
    let d = m.write(a, 1, 1);
    m.apply(&d);
    let before = m.context().vv().clone();
    let d = m.write(a, 1, 2);
    m.apply(&d);
    let after = m.context().vv().clone();
    assert_eq!(before.compare(&after), Causality::Before);
    assert_eq!(after.compare(&before), Causality::After);
    assert_eq!(after.compare(&after), Causality::Equal);
    let mut other = Map::new();
    let d = other.write(b, 1, 3);
    other.apply(&d);
    assert_eq!(after.compare(other.context().vv()), Causality::Concurrent);
    let mut merged: VersionVector = after.clone();
    merged.merge(other.context().vv());
    assert_eq!(after.compare(&merged), Causality::Before);
}

mod lww {
    use heck_crdt::{LwwReg, ReplicaId};
    use proptest::prelude::*;

    fn reg() -> impl Strategy<Value = LwwReg<u8>> {
        (any::<u8>(), 0..5u64, 0..3u64)
            .prop_map(|(v, t, r)| LwwReg::new(v, t, ReplicaId { node: r, epoch: 1 }))
    }

    fn join(a: &LwwReg<u8>, b: &LwwReg<u8>) -> LwwReg<u8> {
        let mut x = a.clone();
        x.join(b);
        x
    }

    proptest! {
        #[test]
        fn lww_join_is_commutative_associative_and_idempotent(a in reg(), b in reg(), c in reg()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a);
        }

        /// A write is later than everything its writer saw, whatever its clock says.
        #[test]
        fn a_write_wins_over_what_its_writer_saw(a in reg(), v in any::<u8>(), t in 0..5u64) {
            let w = a.write(v, t, ReplicaId { node: 9, epoch: 1 });
            prop_assert_eq!(*join(&a, &w).get(), v);
        }
    }
}
