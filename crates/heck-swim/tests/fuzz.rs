//! Fuzzing the SWIM decoders: sealed packets ([`Keyring::open`]) and, behind the AEAD, the
//! postcard decoding of [`Packet`] and [`PushPullState`] (random bytes never pass the tag, so
//! the plaintext decoder is fuzzed directly, and once through a real seal of arbitrary
//! plaintext).
//!
//! Each decoder gets arbitrary bytes, mutated valid messages (bit flips, byte replacements,
//! insertions, deletions), every truncation, and length fields at their limits. Asserted: no
//! panic; an error wherever the input must be invalid; allocation bounded by the input's size
//! (a counting allocator in this test binary); valid messages round trip.
//!
//! Short mode: `cargo test -p heck-swim --test fuzz` (proptest's default 256 cases).
//! Long mode: `PROPTEST_CASES=1000000 cargo test --release -p heck-swim --test fuzz`
//! (see `docs/reliability.md`).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use heck_swim::wire::{MAX_PACKET, OVERHEAD, VERSION};
use heck_swim::{Body, Keyring, Member, Packet, PushPullState, State, Update, WireError};
use heck_testkit::{allocated_by, alone, mutate, mutations, varint};
use proptest::prelude::*;
use serde::Serialize;

heck_testkit::count_allocations!();

/// Slack for other threads' allocations that a measurement may still include: far below any
/// claimed length under test (at least 65,000), so a decoder that allocated a claim still fails.
const NOISE: usize = 16 * 1024;

/// What a decode of `n` input bytes may allocate in all: the decoded value is a constant factor
/// larger than its encoding (a 3-byte `Update::Left` becomes an 80-byte enum in a `Vec` that
/// grows by doubling), never a claimed length (postcard preallocates nothing it has not read).
fn alloc_bound(n: usize) -> usize {
    128 * n + NOISE
}

const KEY: [u8; 32] = [7; 32];

fn ring() -> Keyring {
    Keyring::new("fuzz", &[KEY])
}

/// Arbitrary bytes sealed as they are, so that `open` decrypts them and hands them to the
/// plaintext decoder: a tuple of `u8`s is encoded by postcard byte for byte, with no length.
struct Raw(Vec<u8>);

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

fn decode_packet(bytes: &[u8]) -> Result<Packet<SocketAddr>, postcard::Error> {
    postcard::from_bytes(bytes)
}

fn decode_push_pull(bytes: &[u8]) -> Result<PushPullState<SocketAddr>, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// An address as serde carries it: IPv6 flow info and scope id are not encoded (see
/// `an_ipv6_scope_id_is_not_carried_on_the_wire`), so they are zero here.
fn addr() -> impl Strategy<Value = SocketAddr> {
    any::<SocketAddr>().prop_map(|mut a| {
        if let SocketAddr::V6(v6) = &mut a {
            v6.set_scope_id(0);
            v6.set_flowinfo(0);
        }
        a
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9.-]{0,12}", 1 => ".{0,8}"]
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Alive),
        Just(State::Suspect),
        Just(State::Dead),
        Just(State::Left)
    ]
}

fn member() -> impl Strategy<Value = Member<SocketAddr>> {
    (name(), addr(), any::<u64>(), state()).prop_map(|(name, addr, incarnation, state)| Member {
        name,
        addr,
        incarnation,
        state,
    })
}

fn update() -> impl Strategy<Value = Update<SocketAddr>> {
    prop_oneof![
        (name(), addr(), any::<u64>()).prop_map(|(name, addr, inc)| Update::Alive {
            name,
            addr,
            inc
        }),
        (name(), any::<u64>(), name()).prop_map(|(name, inc, from)| Update::Suspect {
            name,
            inc,
            from
        }),
        (name(), any::<u64>(), name()).prop_map(|(name, inc, from)| Update::Dead {
            name,
            inc,
            from
        }),
        (name(), any::<u64>()).prop_map(|(name, inc)| Update::Left { name, inc }),
    ]
}

fn body() -> impl Strategy<Value = Body<SocketAddr>> {
    prop_oneof![
        (any::<u64>(), name()).prop_map(|(seq, target)| Body::Ping { seq, target }),
        any::<u64>().prop_map(|seq| Body::Ack { seq }),
        (any::<u64>(), name(), addr()).prop_map(|(seq, target, addr)| Body::PingReq {
            seq,
            target,
            addr
        }),
        any::<u64>().prop_map(|seq| Body::Nack { seq }),
        Just(Body::Join),
        prop::collection::vec(member(), 0..6).prop_map(|members| Body::JoinReply { members }),
        Just(Body::Gossip),
    ]
}

fn packet() -> impl Strategy<Value = Packet<SocketAddr>> {
    (
        name(),
        addr(),
        any::<u64>(),
        body(),
        prop::collection::vec(update(), 0..6),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
    )
        .prop_map(
            |(from, from_addr, sent_at_ms, body, updates, payloads)| Packet {
                from,
                from_addr,
                sent_at_ms,
                body,
                updates,
                payloads,
            },
        )
}

fn push_pull() -> impl Strategy<Value = PushPullState<SocketAddr>> {
    (name(), prop::collection::vec(member(), 0..8))
        .prop_map(|(from, members)| PushPullState { from, members })
}

/// Whatever a plaintext decoder accepted must encode and decode to itself (postcard ignores
/// trailing bytes, so the accepted input itself need not be canonical).
fn assert_stable<T>(v: &T, decode: impl Fn(&[u8]) -> Result<T, postcard::Error>)
where
    T: Serialize + PartialEq + std::fmt::Debug,
{
    let again = postcard::to_allocvec(v).unwrap();
    assert_eq!(&decode(&again).unwrap(), v);
}

/// Claimed lengths at their limits: 0, the packet cap ± 1, and the largest u32 and u64.
const CLAIMS: [u64; 6] = [
    0,
    MAX_PACKET as u64 - 1,
    MAX_PACKET as u64,
    MAX_PACKET as u64 + 1,
    u32::MAX as u64,
    u64::MAX,
];

fn small_packet() -> Packet<SocketAddr> {
    Packet {
        from: "a".into(),
        from_addr: "127.0.0.1:7946".parse().unwrap(),
        sent_at_ms: 1_767_225_600_000,
        body: Body::JoinReply { members: vec![] },
        updates: vec![],
        payloads: vec![],
    }
}

#[test]
fn the_allocation_counter_sees_what_a_decode_allocates() {
    // Without this, every bound below could pass with a counter that counts nothing.
    let mut p = small_packet();
    p.payloads = vec![vec![1; 10_000]];
    let bytes = postcard::to_allocvec(&p).unwrap();
    let (r, allocated) = allocated_by(|| decode_packet(&bytes));
    assert_eq!(r.unwrap(), p);
    assert!(allocated >= 10_000, "{allocated}");
}

#[test]
fn a_packet_of_many_small_updates_stays_within_the_allocation_bound() {
    if !alone("a_packet_of_many_small_updates_stays_within_the_allocation_bound") {
        return;
    }
    // The shape that costs the most memory per byte: 3-byte `Update::Left`s (variant, empty
    // name, incarnation) that become enums of several words each in a growing Vec.
    let mut p = small_packet();
    p.updates = (0..20_000)
        .map(|_| Update::Left {
            name: String::new(),
            inc: 0,
        })
        .collect();
    let bytes = postcard::to_allocvec(&p).unwrap();
    assert!(bytes.len() < MAX_PACKET);
    let (r, allocated) = allocated_by(|| decode_packet(&bytes));
    assert_eq!(r.unwrap(), p);
    // Measured: 52 bytes counted per input byte (60,021 → 3,145,729, the Vec's doublings
    // included): a packet at the 65,000-byte cap decodes within some 3.4 MiB.
    assert!(
        allocated < alloc_bound(bytes.len()),
        "{allocated} for {}",
        bytes.len()
    );
}

#[test]
fn length_fields_at_their_limits_are_errors_without_allocating_the_claim() {
    let base = postcard::to_allocvec(&small_packet()).unwrap();
    // The encoding ends with the member count, the update count and the payload count (all 0);
    // it starts with the name's length (1) and its byte.
    let n = base.len();
    let tail = [1u8, 2, 3, 4, 5, 6, 7, 8];
    for claim in CLAIMS {
        let cases: [(&str, Vec<u8>); 5] = [
            ("name length", [varint(claim), base[1..].to_vec()].concat()),
            (
                "member count",
                [&base[..n - 3], &varint(claim)[..], &[0, 0], &tail].concat(),
            ),
            (
                "update count",
                [&base[..n - 2], &varint(claim)[..], &[0], &tail].concat(),
            ),
            (
                "payload count",
                [&base[..n - 1], &varint(claim)[..], &tail].concat(),
            ),
            (
                "payload length",
                [&base[..n - 1], &[1], &varint(claim)[..], &tail].concat(),
            ),
        ];
        for (field, bytes) in cases {
            let (r, allocated) = allocated_by(|| decode_packet(&bytes));
            if claim > tail.len() as u64 + 8 {
                assert!(r.is_err(), "{field} = {claim} must not decode: {r:?}");
            }
            // At most the bytes of the name and the tail: the claim is never allocated.
            assert!(
                allocated < NOISE,
                "{field} = {claim}: {allocated} bytes allocated for {} input bytes",
                bytes.len()
            );
            // Through the AEAD: the same bytes sealed are refused as malformed.
            let sealed = ring().seal(&Raw(bytes.clone()), [3; 24]).unwrap();
            let opened = ring().open::<Packet<SocketAddr>>(&sealed);
            assert_eq!(opened.is_ok(), r.is_ok(), "{field} = {claim}");
            if r.is_err() {
                assert!(matches!(opened, Err(WireError::Malformed(_))), "{opened:?}");
            }
        }
    }
}

#[test]
fn a_push_pull_state_claiming_u32_max_members_is_an_error_without_allocating_the_claim() {
    for claim in CLAIMS.into_iter().skip(1) {
        let bytes = [&[1, b'a'][..], &varint(claim), &[1, 2, 3]].concat();
        let (r, allocated) = allocated_by(|| decode_push_pull(&bytes));
        assert!(r.is_err(), "{claim} members");
        assert!(allocated < NOISE, "{allocated} bytes");
    }
}

#[test]
fn sealed_packets_at_the_size_cap_open_and_one_byte_more_is_refused_unread() {
    // Fill the payload so that the sealed packet is exactly MAX_PACKET bytes.
    let mut p = small_packet();
    p.payloads = vec![vec![]];
    let empty = ring().seal(&p, [1; 24]).unwrap().len();
    // A payload of `len` bytes adds `len` plus the growth of its varint length (2 or 3 bytes).
    let len = (0..MAX_PACKET)
        .rev()
        .find(|len| empty + len + varint(*len as u64).len() - 1 == MAX_PACKET)
        .unwrap();
    p.payloads = vec![vec![0xAB; len]];
    let at_cap = ring().seal(&p, [1; 24]).unwrap();
    assert_eq!(at_cap.len(), MAX_PACKET);
    assert_eq!(ring().open::<Packet<SocketAddr>>(&at_cap).unwrap(), p);
    p.payloads = vec![vec![0xAB; len + 1]];
    assert_eq!(
        ring().seal(&p, [1; 24]),
        Err(WireError::TooLarge(MAX_PACKET + 1))
    );
    // Cap − 1: one byte cut off the packet at the cap no longer authenticates.
    assert_eq!(
        ring().open::<Packet<SocketAddr>>(&at_cap[..MAX_PACKET - 1]),
        Err(WireError::Unauthenticated)
    );
    let mut over = at_cap.clone();
    over.push(0);
    let (r, allocated) = allocated_by(|| ring().open::<Packet<SocketAddr>>(&over));
    assert_eq!(r, Err(WireError::TooLarge(MAX_PACKET + 1)));
    assert!(allocated < NOISE, "refused unread, yet {allocated} bytes");
    let (r, _) = allocated_by(|| ring().open::<Packet<SocketAddr>>(&[]));
    assert_eq!(r, Err(WireError::Truncated));
}

#[test]
fn an_ipv6_scope_id_is_not_carried_on_the_wire() {
    // serde encodes a socket address as (ip, port): a link-local member address with a scope
    // id (fe80::1%2) arrives without it. Recorded here so that a change of it is deliberate.
    let with_scope: SocketAddr = "[fe80::1%2]:7946".parse().unwrap();
    let bytes = postcard::to_allocvec(&with_scope).unwrap();
    let back: SocketAddr = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, "[fe80::1]:7946".parse::<SocketAddr>().unwrap());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_open_as_a_sealed_packet(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        versioned in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if versioned && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        let (r, allocated) = allocated_by(|| ring().open::<Packet<SocketAddr>>(&bytes));
        let expected_kind = match r {
            Err(WireError::Truncated) => bytes.len() < OVERHEAD,
            Err(WireError::Version(v)) => bytes.len() >= OVERHEAD && v != VERSION,
            Err(WireError::Unauthenticated) => bytes.len() >= OVERHEAD && bytes[0] == VERSION,
            _ => false,
        };
        prop_assert!(expected_kind, "{} bytes: {r:?}", bytes.len());
        prop_assert!(allocated < alloc_bound(bytes.len()));
    }

    #[test]
    fn a_mutated_sealed_packet_never_opens(p in packet(), edits in mutations()) {
        let sealed = ring().seal(&p, [5; 24]).unwrap();
        let bad = mutate(&sealed, &edits);
        let r = ring().open::<Packet<SocketAddr>>(&bad);
        if bad == sealed {
            prop_assert_eq!(r.unwrap(), p);
        } else {
            prop_assert!(r.is_err(), "a mutation opened: {r:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_sealed_packet_is_refused(p in packet()) {
        let sealed = ring().seal(&p, [5; 24]).unwrap();
        for len in 0..sealed.len() {
            let r = ring().open::<Packet<SocketAddr>>(&sealed[..len]);
            let want = if len < OVERHEAD { WireError::Truncated } else { WireError::Unauthenticated };
            prop_assert_eq!(r, Err(want), "cut to {}", len);
        }
    }

    #[test]
    fn valid_packets_round_trip_sealed_and_plain(p in packet(), nonce in any::<[u8; 24]>()) {
        let sealed = ring().seal(&p, nonce).unwrap();
        prop_assert_eq!(sealed.len(), OVERHEAD + postcard::to_allocvec(&p).unwrap().len());
        prop_assert_eq!(&ring().open::<Packet<SocketAddr>>(&sealed).unwrap(), &p);
        prop_assert_eq!(&decode_packet(&postcard::to_allocvec(&p).unwrap()).unwrap(), &p);
    }

    #[test]
    fn arbitrary_plaintext_decodes_as_a_packet_or_errs_within_bounds(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (r, allocated) = allocated_by(|| decode_packet(&bytes));
        prop_assert!(allocated < alloc_bound(bytes.len()), "{} bytes allocated", allocated);
        if let Ok(p) = &r {
            assert_stable(p, decode_packet);
        }
    }

    #[test]
    fn arbitrary_plaintext_behind_a_valid_tag_opens_exactly_when_it_decodes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let sealed = ring().seal(&Raw(bytes.clone()), [9; 24]).unwrap();
        prop_assert_eq!(sealed.len(), OVERHEAD + bytes.len());
        let opened = ring().open::<Packet<SocketAddr>>(&sealed);
        match decode_packet(&bytes) {
            Ok(p) => prop_assert_eq!(opened.unwrap(), p),
            Err(_) => prop_assert!(matches!(opened, Err(WireError::Malformed(_))), "{:?}", opened),
        }
    }

    #[test]
    fn a_mutated_plaintext_packet_decodes_or_errs_within_bounds(p in packet(), edits in mutations()) {
        let bytes = mutate(&postcard::to_allocvec(&p).unwrap(), &edits);
        let (r, allocated) = allocated_by(|| decode_packet(&bytes));
        prop_assert!(allocated < alloc_bound(bytes.len()), "{} bytes allocated", allocated);
        if let Ok(q) = &r {
            assert_stable(q, decode_packet);
        }
    }

    #[test]
    fn every_truncation_of_a_plaintext_packet_is_an_error(p in packet()) {
        let bytes = postcard::to_allocvec(&p).unwrap();
        for len in 0..bytes.len() {
            // A strict prefix cannot decode: the decoder would read the same bytes from the
            // whole encoding, and a whole encoding is read to its end.
            prop_assert!(decode_packet(&bytes[..len]).is_err(), "cut to {}", len);
        }
    }

    #[test]
    fn push_pull_states_round_trip_and_every_truncation_is_an_error(s in push_pull()) {
        let bytes = postcard::to_allocvec(&s).unwrap();
        prop_assert_eq!(&decode_push_pull(&bytes).unwrap(), &s);
        for len in 0..bytes.len() {
            prop_assert!(decode_push_pull(&bytes[..len]).is_err(), "cut to {}", len);
        }
    }

    #[test]
    fn arbitrary_or_mutated_push_pull_bytes_decode_or_err_within_bounds(
        s in push_pull(),
        edits in mutations(),
        noise in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        for bytes in [mutate(&postcard::to_allocvec(&s).unwrap(), &edits), noise.clone()] {
            let (r, allocated) = allocated_by(|| decode_push_pull(&bytes));
            prop_assert!(allocated < alloc_bound(bytes.len()), "{} bytes allocated", allocated);
            if let Ok(q) = &r {
                assert_stable(q, decode_push_pull);
            }
        }
    }
}
