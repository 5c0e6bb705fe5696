//! Packets sealed with the key ring: round trips, every kind of bad packet, key rotation.
#![allow(clippy::unwrap_used)]
use heck_swim::{Body, Keyring, Packet, WireError};
use proptest::prelude::*;

fn pkt() -> Packet<u16> {
    Packet {
        from: "a".into(),
        from_addr: 7,
        sent_at_ms: 1_767_225_600_000,
        body: Body::Ping {
            seq: 3,
            target: "b".into(),
        },
        updates: vec![],
        payloads: vec![b"x".to_vec()],
    }
}

const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];

#[test]
fn a_sealed_packet_opens_and_round_trips() {
    let ring = Keyring::new("prod", &[K1]);
    let bytes = ring.seal(&pkt(), [9; 24]).unwrap();
    assert_eq!(ring.open::<Packet<u16>>(&bytes).unwrap(), pkt());
}

#[test]
fn wrong_key_wrong_cluster_and_tampering_are_rejected() {
    let ring = Keyring::new("prod", &[K1]);
    let bytes = ring.seal(&pkt(), [9; 24]).unwrap();
    assert_eq!(
        Keyring::new("prod", &[K2]).open::<Packet<u16>>(&bytes),
        Err(WireError::Unauthenticated)
    );
    assert_eq!(
        Keyring::new("staging", &[K1]).open::<Packet<u16>>(&bytes),
        Err(WireError::Unauthenticated)
    );
    for i in [0usize, 1, 30, bytes.len() - 1] {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        assert!(ring.open::<Packet<u16>>(&t).is_err(), "flipped byte {i}");
    }
    assert_eq!(
        ring.open::<Packet<u16>>(&bytes[..10]),
        Err(WireError::Truncated)
    );
    assert!(matches!(
        ring.open::<Packet<u16>>(&vec![1u8; 70_000]),
        Err(WireError::TooLarge(_))
    ));
    assert_eq!(
        Keyring::new("prod", &[]).seal(&pkt(), [0; 24]),
        Err(WireError::NoKey)
    );
}

#[test]
fn keys_rotate_without_a_gap() {
    // Step 1: everyone adds K2 (K1 still primary). Step 2: K2 becomes primary on one node first.
    // Step 3: K1 is removed. At every step, every pair of nodes understands each other.
    let old = Keyring::new("c", &[K1]);
    let added = Keyring::new("c", &[K1, K2]);
    let switched = Keyring::new("c", &[K2, K1]);
    let done = Keyring::new("c", &[K2]);
    for (sender, receiver) in [
        (&old, &added),
        (&added, &old),
        (&switched, &added),
        (&added, &switched),
        (&switched, &done),
        (&done, &switched),
    ] {
        let bytes = sender.seal(&pkt(), [3; 24]).unwrap();
        assert_eq!(receiver.open::<Packet<u16>>(&bytes).unwrap(), pkt());
    }
}

proptest! {
    #[test]
    fn garbage_is_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let ring = Keyring::new("c", &[K1]);
        prop_assert!(ring.open::<Packet<u16>>(&bytes).is_err());
    }

    #[test]
    fn any_truncation_or_bit_flip_is_rejected(cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let ring = Keyring::new("c", &[K1]);
        let bytes = ring.seal(&pkt(), [5; 24]).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(ring.open::<Packet<u16>>(&bytes[..cut]).is_err());
        let mut t = bytes.clone();
        t[flip.index(bytes.len())] ^= 0x80;
        prop_assert!(ring.open::<Packet<u16>>(&t).is_err());
    }
}
