//! Fuzzing the CRDT decoder ([`wire::decode`] of a [`Message`]) and what runs on its output:
//! validation ([`Delta::validate`]) and [`Replica::handle_message`].
//!
//! The decoder gets arbitrary bytes, mutated valid messages (bit flips, byte replacements,
//! insertions, deletions), every truncation, length fields at their limits and inputs at the
//! size limit. The replica gets arbitrary well-typed messages (counters at 0, at
//! [`MAX_COUNTER`] and past it, pieces at and past [`MAX_PIECES`]). Asserted: no panic; an
//! error wherever the input must be invalid; allocation bounded by the input's size (a counting
//! allocator in this test binary); valid messages round trip; a refused message is counted and
//! changes nothing.
//!
//! Short mode: `cargo test -p heck-crdt --test fuzz` (proptest's default 256 cases).
//! Long mode: `PROPTEST_CASES=1000000 cargo test --release -p heck-crdt --test fuzz`
//! (see `docs/reliability.md`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use heck_crdt::wire::{self, DecodeError, VERSION};
use heck_crdt::{
    Body, CausalContext, Config, Delta, Dot, DotMap, Invalid, MAX_COUNTER, MAX_PIECES, Message,
    ORMap, Piece, Replica, ReplicaId,
};
use heck_testkit::{allocated_by, alone, mutate, mutations, varint};
use proptest::prelude::*;

heck_testkit::count_allocations!();

type Msg = Message<String, String>;

/// The decoder's size limit in these tests (heck-kv passes its 16 MiB frame cap).
const LIMIT: usize = 1 << 20;

/// Slack for other threads' allocations that a measurement may still include: far below any
/// claimed length under test (at least 65,000), so a decoder that allocated a claim still fails.
const NOISE: usize = 16 * 1024;

/// What a decode of `n` input bytes may allocate in all: a constant factor of its size (a
/// 4-byte dot becomes a 24-byte key in a B-tree node), never a claimed length.
fn alloc_bound(n: usize) -> usize {
    128 * n + NOISE
}

fn decode(bytes: &[u8]) -> Result<Msg, DecodeError> {
    wire::decode(bytes, LIMIT)
}

fn replica_id() -> impl Strategy<Value = ReplicaId> {
    prop_oneof![
        4 => (0u64..4, 0u64..3).prop_map(|(node, epoch)| ReplicaId { node, epoch }),
        1 => any::<(u64, u64)>().prop_map(|(node, epoch)| ReplicaId { node, epoch }),
    ]
}

/// Counters that matter: small ones, and the edges of what validation accepts.
fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..20,
        1 => Just(0u64),
        1 => Just(MAX_COUNTER),
        1 => Just(MAX_COUNTER + 1),
        1 => any::<u64>(),
    ]
}

fn dot() -> impl Strategy<Value = Dot> {
    (replica_id(), counter()).prop_map(|(replica, counter)| Dot { replica, counter })
}

fn context() -> impl Strategy<Value = CausalContext> {
    (
        prop::collection::vec((replica_id(), counter()), 0..4),
        prop::collection::vec(dot(), 0..6),
    )
        .prop_map(|(prefixes, cloud)| {
            let mut ctx = CausalContext::new();
            for (r, n) in prefixes {
                ctx.insert_prefix(r, n);
            }
            for d in cloud {
                ctx.insert(d);
            }
            ctx
        })
}

fn delta() -> impl Strategy<Value = Delta<String, String>> {
    (
        prop::collection::btree_map(
            "[a-c]{0,3}",
            prop::collection::btree_map(dot(), "[x-z]{0,3}", 0..3),
            0..4,
        ),
        context(),
        any::<bool>(),
    )
        .prop_map(|(entries, mut ctx, cover)| {
            // Half the time the context holds every entry's dot, so validation can pass.
            if cover {
                for d in entries.values().flat_map(BTreeMap::keys) {
                    ctx.insert(*d);
                }
            }
            let entries = entries
                .into_iter()
                .map(|(k, m)| (k, m.into_iter().collect()))
                .collect();
            Delta { entries, ctx }
        })
}

fn piece() -> impl Strategy<Value = Piece> {
    let edge = prop_oneof![
        4 => 0u32..4,
        1 => Just(MAX_PIECES - 1),
        1 => Just(MAX_PIECES),
        1 => Just(MAX_PIECES + 1),
        1 => Just(u32::MAX),
    ];
    (
        prop::option::of(0u64..8),
        0u64..8,
        edge.clone(),
        edge.prop_map(|c| c.max(1)),
    )
        .prop_map(|(from, seq, index, count)| Piece {
            from,
            seq,
            index,
            count,
        })
}

fn body() -> impl Strategy<Value = Body<String, String>> {
    prop_oneof![
        (piece(), delta()).prop_map(|(piece, delta)| Body::Delta { piece, delta }),
        (replica_id(), piece()).prop_map(|(to, piece)| Body::Ack { to, piece }),
        (context(), prop::option::of(replica_id()), 0u64..8)
            .prop_map(|(ctx, to, complete)| Body::Digest { ctx, to, complete }),
    ]
}

fn message() -> impl Strategy<Value = Msg> {
    (replica_id(), body()).prop_map(|(sender, body)| Message { sender, body })
}

/// A replica with a little state of its own and three configured peers (0, 1, 2).
fn receiver() -> Replica<u8, String, String> {
    let mut r = Replica::new(
        ReplicaId { node: 9, epoch: 1 },
        [0u8, 1, 2],
        Config::default(),
    );
    r.write("a".into(), "1".into());
    r.write("b".into(), "2".into());
    r
}

/// Hand `msg` to a replica: it must not panic, and a message it refuses must be counted and
/// change nothing.
fn deliver(r: &mut Replica<u8, String, String>, from: u8, msg: Msg) {
    let before = (r.map().state().clone(), r.stats().invalid_received);
    let valid = match &msg.body {
        Body::Delta { delta, .. } => delta.validate().is_ok(),
        Body::Digest { ctx, .. } => heck_crdt::validate::validate_context(ctx).is_ok(),
        Body::Ack { .. } => true,
    };
    r.handle_message(from, msg);
    if !valid {
        assert_eq!(r.stats().invalid_received, before.1 + 1, "refused, counted");
        assert_eq!(r.map().state(), &before.0, "refused, nothing applied");
    }
}

/// Everything the decoder accepted encodes and decodes to itself (postcard ignores trailing
/// bytes, so the accepted input itself need not be canonical), and a replica survives it.
fn check_accepted(msg: &Msg) {
    assert_eq!(&decode(&wire::encode(msg)).unwrap(), msg);
    deliver(&mut receiver(), 0, msg.clone());
}

/// Claimed lengths at their limits: 0, the decoder's limit ± 1, and the largest u32 and u64.
const CLAIMS: [u64; 6] = [
    0,
    LIMIT as u64 - 1,
    LIMIT as u64,
    LIMIT as u64 + 1,
    u32::MAX as u64,
    u64::MAX,
];

#[test]
fn the_allocation_counter_sees_what_a_decode_allocates() {
    // Without this, every bound below could pass with a counter that counts nothing.
    let mut delta = Delta::default();
    delta.entries.insert("k".repeat(10_000), DotMap::new());
    let msg = Message {
        sender: ReplicaId { node: 1, epoch: 1 },
        body: Body::Delta {
            piece: Piece {
                from: None,
                seq: 0,
                index: 0,
                count: 1,
            },
            delta,
        },
    };
    let bytes = wire::encode(&msg);
    let (r, allocated) = allocated_by(|| decode(&bytes));
    assert_eq!(r.unwrap(), msg);
    assert!(allocated >= 10_000, "{allocated}");
}

#[test]
fn length_fields_at_their_limits_are_errors_without_allocating_the_claim() {
    let delta_msg = |delta: Delta<String, String>| Message {
        sender: ReplicaId { node: 1, epoch: 1 },
        body: Body::Delta {
            piece: Piece {
                from: None,
                seq: 0,
                index: 0,
                count: 1,
            },
            delta,
        },
    };
    // An empty delta ends with: entry count, vector length, cloud length, retired length (all
    // 0).
    let empty = wire::encode(&delta_msg(Delta::default()));
    let n = empty.len();
    // One key "k" with no dots ends with: 1, 1, b'k', 0 (dots of "k"), 0, 0, 0.
    let mut keyed = Delta::default();
    keyed.entries.insert("k".to_string(), DotMap::new());
    let keyed = wire::encode(&delta_msg(keyed));
    let m = keyed.len();
    assert_eq!(&keyed[m - 7..], &[1, 1, b'k', 0, 0, 0, 0]);
    let tail = [1u8, 2, 3, 4, 5, 6, 7, 8];
    for claim in CLAIMS {
        let c = varint(claim);
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "entry count",
                [&empty[..n - 4], &c, &[0, 0, 0], &tail].concat(),
            ),
            (
                "vector length",
                [&empty[..n - 3], &c, &[0, 0], &tail].concat(),
            ),
            ("cloud length", [&empty[..n - 2], &c, &[0], &tail].concat()),
            ("retired length", [&empty[..n - 1], &c, &tail].concat()),
            ("key length", [&keyed[..m - 6], &c, &tail].concat()),
            (
                "dots of a key",
                [&keyed[..m - 4], &c, &[0, 0, 0], &tail].concat(),
            ),
        ];
        for (field, bytes) in cases {
            let (r, allocated) = allocated_by(|| decode(&bytes));
            if claim > tail.len() as u64 + 8 {
                assert!(
                    matches!(r, Err(DecodeError::Malformed(_))),
                    "{field} = {claim}: {r:?}"
                );
            }
            if let Ok(msg) = &r {
                check_accepted(msg);
            }
            // At most the bytes of the key and the tail: the claim is never allocated.
            assert!(allocated < NOISE, "{field} = {claim}: {allocated} bytes");
        }
    }
}

#[test]
fn a_context_of_many_small_dots_stays_within_the_allocation_bound() {
    if !alone("a_context_of_many_small_dots_stays_within_the_allocation_bound") {
        return;
    }
    // The shape that costs the most memory per byte: distinct dots of 3 bytes each (three
    // 1-byte varints) that become 24-byte keys of a B-tree set.
    let mut delta = Delta::<String, String>::default();
    for node in 0..64 {
        for epoch in 0..32 {
            for counter in 1..32 {
                let replica = ReplicaId { node, epoch };
                delta.ctx.insert(Dot { replica, counter });
            }
        }
    }
    let msg = Message {
        sender: ReplicaId { node: 1, epoch: 1 },
        body: Body::Digest {
            ctx: delta.ctx,
            to: None,
            complete: 0,
        },
    };
    let bytes = wire::encode(&msg);
    let (r, allocated) = allocated_by(|| decode(&bytes));
    assert_eq!(r.unwrap(), msg);
    // Measured: 16 bytes allocated per input byte (190,474 → 3,107,360). So a message at
    // heck-kv's 16 MiB frame cap may decode into some 256 MiB: see docs/reliability.md.
    assert!(
        allocated < 32 * bytes.len(),
        "{allocated} for {}",
        bytes.len()
    );
}

#[test]
fn input_over_the_limit_is_refused_unread_and_at_the_limit_is_read() {
    let msg = Message::<String, String> {
        sender: ReplicaId { node: 1, epoch: 1 },
        body: Body::Ack {
            to: ReplicaId { node: 2, epoch: 2 },
            piece: Piece {
                from: Some(1),
                seq: 2,
                index: 0,
                count: 1,
            },
        },
    };
    let bytes = wire::encode(&msg);
    let len = bytes.len();
    assert_eq!(wire::decode::<Msg>(&bytes, len).unwrap(), msg);
    let (r, allocated) = allocated_by(|| wire::decode::<Msg>(&bytes, len - 1));
    assert_eq!(
        r,
        Err(DecodeError::TooLarge {
            size: len,
            limit: len - 1
        })
    );
    assert!(
        allocated < NOISE,
        "refused before reading, yet {allocated} bytes"
    );
    // A buffer of LIMIT + 1 bytes is refused whatever it holds.
    let big = vec![VERSION; LIMIT + 1];
    let (r, allocated) = allocated_by(|| decode(&big));
    assert!(matches!(r, Err(DecodeError::TooLarge { .. })));
    assert!(
        allocated < NOISE,
        "refused before reading, yet {allocated} bytes"
    );
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
}

#[test]
fn deltas_made_by_real_writes_validate_after_the_wire() {
    let a = ReplicaId { node: 1, epoch: 7 };
    let mut map = ORMap::<String, String>::new();
    for i in 0..20u32 {
        let d = if i % 5 == 4 {
            map.remove(&format!("k{}", i % 3))
        } else {
            map.write(a, format!("k{}", i % 3), format!("v{i}"))
        };
        map.apply(&d);
        let back: Delta<String, String> = wire::decode(&wire::encode(&d), LIMIT).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.validate(), Ok(()));
    }
    let state: Delta<String, String> = wire::decode(&wire::encode(map.state()), LIMIT).unwrap();
    assert_eq!(state.validate(), Ok(()));
}

#[test]
fn a_counter_of_zero_or_past_the_maximum_anywhere_is_refused() {
    let r = ReplicaId { node: 1, epoch: 1 };
    for counter in [0, MAX_COUNTER + 1, u64::MAX] {
        let bad = Dot {
            replica: r,
            counter,
        };
        let mut in_vector = Delta::<String, String>::default();
        in_vector.ctx.insert_prefix(r, counter);
        let mut in_cloud = Delta::<String, String>::default();
        in_cloud.ctx.insert(bad);
        let mut in_retired = Delta::<String, String>::default();
        in_retired.ctx.insert_retired(r, counter);
        let mut in_entry = Delta::<String, String>::default();
        in_entry
            .entries
            .insert("k".into(), DotMap::from([(bad, "v".to_string())]));
        in_entry.ctx.insert(bad);
        for (where_, d) in [
            ("vector", in_vector),
            ("cloud", in_cloud),
            ("retired", in_retired),
            ("entry", in_entry),
        ] {
            if (where_ == "vector" || where_ == "retired") && counter == 0 {
                continue; // a prefix of 0 is no entry at all
            }
            let mut bytes = wire::encode(&d);
            if where_ == "cloud" && counter == 0 {
                // A context never inserts dot 0 (it counts as seen): only the wire brings one.
                // Encode dot 1 and make its counter 0.
                let mut one = Delta::<String, String>::default();
                one.ctx.insert(Dot {
                    replica: r,
                    counter: 1,
                });
                bytes = wire::encode(&one);
                // Its counter is the last byte before the (empty) retired prefixes.
                assert_eq!(bytes.pop(), Some(0));
                assert_eq!(bytes.pop(), Some(1));
                bytes.extend([0, 0]);
            }
            let d: Delta<String, String> = wire::decode(&bytes, LIMIT).unwrap();
            assert_eq!(
                d.validate(),
                Err(Invalid::CounterOutOfRange {
                    replica: r,
                    counter
                }),
                "{where_} {counter}"
            );
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_err_within_bounds(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        versioned in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if versioned && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        let (r, allocated) = allocated_by(|| decode(&bytes));
        prop_assert!(allocated < alloc_bound(bytes.len()), "{} bytes allocated", allocated);
        match (&r, bytes.first()) {
            (Err(DecodeError::Empty), None) => {}
            (Err(DecodeError::Version(v)), Some(first)) => prop_assert!(*v == *first && *v != VERSION),
            (Err(DecodeError::Malformed(_)), Some(&VERSION)) => {}
            (Ok(msg), Some(&VERSION)) => check_accepted(msg),
            _ => prop_assert!(false, "{:?} for {:?}", r, bytes.first()),
        }
    }

    #[test]
    fn valid_messages_round_trip(msg in message()) {
        let bytes = wire::encode(&msg);
        prop_assert_eq!(bytes[0], VERSION);
        prop_assert_eq!(&decode(&bytes).unwrap(), &msg);
        // Exactly at the limit it is read; one byte under, refused.
        prop_assert_eq!(&wire::decode::<Msg>(&bytes, bytes.len()).unwrap(), &msg);
        let too_small = wire::decode::<Msg>(&bytes, bytes.len() - 1);
        prop_assert!(matches!(too_small, Err(DecodeError::TooLarge { .. })), "{:?}", too_small);
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error(msg in message()) {
        let bytes = wire::encode(&msg);
        for len in 0..bytes.len() {
            // A strict prefix cannot decode: the decoder would read the same bytes from the
            // whole encoding, and a whole encoding is read to its end.
            prop_assert!(decode(&bytes[..len]).is_err(), "cut to {}", len);
        }
    }

    #[test]
    fn a_mutated_message_decodes_or_errs_within_bounds(msg in message(), edits in mutations()) {
        let bytes = mutate(&wire::encode(&msg), &edits);
        let (r, allocated) = allocated_by(|| decode(&bytes));
        prop_assert!(allocated < alloc_bound(bytes.len()), "{} bytes allocated", allocated);
        if let Ok(m) = &r {
            check_accepted(m);
        }
    }

    #[test]
    fn a_replica_survives_any_sequence_of_messages_and_counts_what_it_refuses(
        msgs in prop::collection::vec((0u8..4, message()), 1..8),
        random in any::<u64>(),
    ) {
        let mut r = receiver();
        for (from, msg) in msgs {
            // Peer 3 is not configured: its messages are stale or data, never a panic.
            deliver(&mut r, from, msg);
        }
        let _ = r.tick(random);
    }
}
