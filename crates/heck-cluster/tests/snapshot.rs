//! The `--data-dir` snapshot file: a restored node answers as before; every refusal says what
//! is wrong; and the decoder fuzzed like every decoder that reads bytes from outside
//! (`docs/reliability.md`, "Decoders"): arbitrary bytes, mutated and truncated snapshots,
//! headers and payloads behind a recomputed checksum, claimed lengths. Asserted: no panic; an
//! error wherever the file must be refused; allocation bounded by the input (a counting
//! allocator in this test binary); valid snapshots round trip.
//!
//! Short mode: `cargo test -p heck-cluster --test snapshot` (proptest's default 256 cases).
//! Long mode: `PROPTEST_CASES=1000000 cargo test --release -p heck-cluster --test snapshot`.
#![allow(clippy::unwrap_used)]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, Status, TargetInput, TargetName};
use heck_cluster::sim::{at, targets};
use heck_cluster::snapshot::{self, FORMAT, MAGIC};
use heck_cluster::{Cluster, Config, Identity, NodeName, SnapshotError};
use heck_crdt::wire::DecodeError;
use heck_testkit::{allocated_by, alone, mutate, mutations, varint};
use proptest::prelude::*;

heck_testkit::count_allocations!();

const S: Duration = Duration::from_secs(1);

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

fn identity(n: &str, epoch: u64) -> Identity<usize> {
    Identity {
        name: name(n),
        addr: 0,
        incarnation: epoch,
        epoch,
        seed: 7,
    }
}

fn input(n: &str) -> TargetInput {
    TargetInput {
        name: n.into(),
        url: "http://192.0.2.1/health".into(),
        ..Default::default()
    }
}

fn t(s: &str) -> TargetName {
    TargetName::new(s).unwrap()
}

/// Node n1, alone, with 20 config-file targets: `api` added through the API and checked
/// unhealthy, `t3` deleted, `t5` checked unhealthy.
fn node_with_history() -> Cluster<usize> {
    let mut c = Cluster::new(Config::fast(), identity("n1", 1), targets(20, S, 1, 1)).unwrap();
    c.start(at(S), Vec::new());
    c.add_target(at(2 * S), input("api")).unwrap();
    c.remove_target(at(2 * S), &t("t3")).unwrap();
    let down = |when: Duration| {
        let mut s = CheckState::new(SystemTime::UNIX_EPOCH + when);
        s.observe(false, SystemTime::UNIX_EPOCH + when, c_thresholds());
        s
    };
    c.handle_check(at(3 * S), &t("api"), &down(3 * S));
    c.handle_check(at(3 * S), &t("t5"), &down(3 * S));
    c
}

fn c_thresholds() -> heck_check::Thresholds {
    targets(1, S, 1, 1)[0].thresholds
}

/// A valid snapshot of `node_with_history`, built once.
fn valid() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| node_with_history().snapshot(false))
}

fn restore(bytes: &[u8], epoch: u64) -> Result<Cluster<usize>, SnapshotError> {
    Cluster::restore(
        Config::fast(),
        identity("n1", epoch),
        targets(20, S, 1, 1),
        bytes,
    )
    .map(|(c, _)| c)
}

/// `bytes` with its checksum recomputed (to reach the parser behind it).
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len().saturating_sub(8);
    bytes.truncate(n);
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

// ---- what a restore brings back ----

#[test]
fn a_restored_node_lists_the_same_targets_and_answers_and_deleted_ones_stay_deleted() {
    let before = node_with_history();
    for (clean, epoch) in [(false, 2), (true, 2)] {
        let (after, restored) = Cluster::restore(
            Config::fast(),
            identity("n1", epoch),
            targets(20, S, 1, 1),
            &before.snapshot(clean),
        )
        .unwrap();
        assert_eq!(after.targets(), before.targets(), "clean: {clean}");
        assert!(after.targets().contains_key(&t("api")));
        assert!(
            !after.targets().contains_key(&t("t3")),
            "the config file lists t3, the tombstone wins"
        );
        for target in before.targets().keys() {
            assert_eq!(after.answer(target), before.answer(target), "{target}");
        }
        assert_eq!(after.answer(&t("t5")).unwrap().status, Status::Unhealthy);
        assert_eq!(after.replicated().state(), before.replicated().state());
        assert_eq!(restored.clean, clean);
        assert_eq!(restored.previous, before.replica_id());
        assert_eq!(restored.kept_replica_id(), clean);
        if clean {
            assert_eq!(after.replica_id(), before.replica_id());
        } else {
            assert_eq!(
                after.replica_id().epoch,
                epoch,
                "the identity's fresh epoch"
            );
        }
    }
}

// ---- every refusal says what is wrong ----

fn refusal(bytes: &[u8]) -> String {
    restore(bytes, 2).unwrap_err().to_string()
}

#[test]
fn an_empty_or_foreign_file_is_refused_as_cut_short_or_not_a_snapshot() {
    assert_eq!(
        refusal(b""),
        "snapshot of 0 bytes is cut short (a snapshot has at least 31)"
    );
    assert_eq!(
        refusal(&valid()[..10]),
        "snapshot of 10 bytes is cut short (a snapshot has at least 31)"
    );
    assert_eq!(
        refusal(b"[[target]]\nname = \"x\"\n"),
        "not a heck snapshot (it does not start with \"HECKSNAP\")"
    );
}

#[test]
fn a_newer_format_is_refused_as_newer_than_this_heck() {
    let mut bytes = valid().to_vec();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        refusal(&bytes),
        "format version 7 is newer than this heck understands (it reads 1)"
    );
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        refusal(&bytes),
        "format version 0 is unknown (this heck reads 1)"
    );
}

#[test]
fn a_changed_or_cut_file_is_refused_by_its_checksum() {
    let want = "checksum mismatch: the file is corrupt or was cut short";
    let mut flipped = valid().to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    assert_eq!(refusal(&flipped), want);
    assert_eq!(refusal(&valid()[..valid().len() - 1]), want);
    assert_eq!(refusal(&valid()[..valid().len() / 2]), want);
}

#[test]
fn another_nodes_snapshot_is_refused_by_name() {
    let n2 = Cluster::new(Config::fast(), identity("n2", 1), Vec::new()).unwrap();
    assert_eq!(
        refusal(&n2.snapshot(true)),
        "snapshot of node n2, this node is n1"
    );
}

#[test]
fn a_header_that_does_not_parse_behind_a_good_checksum_is_refused_as_malformed() {
    // The clean flag is the byte after the name ("n1": 2 bytes at offset 14).
    let mut bytes = valid().to_vec();
    bytes[16] = 2;
    assert!(refusal(&resealed(bytes)).contains("clean flag"));
    // A payload length that is not what follows.
    let mut bytes = valid().to_vec();
    bytes[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(refusal(&resealed(bytes)).contains("payload length"));
    // A payload that is not a replica's state.
    let garbage = snapshot::encode(
        &name("n1"),
        false,
        &[heck_crdt::wire::VERSION, 0xff, 0xff, 0xff],
    );
    assert!(matches!(
        restore(&garbage, 2),
        Err(SnapshotError::Payload(DecodeError::Malformed(_)))
    ));
}

#[test]
fn an_inconsistent_state_behind_a_good_checksum_is_refused_whole() {
    // The state of n1 where an entry's dot is missing from the context: joined, it could never
    // be removed consistently. Built by emptying the context of a real state.
    let mut snap = snapshot::decode(valid(), &name("n1")).unwrap();
    snap.replica.state.ctx = heck_crdt::CausalContext::new();
    let bytes = snapshot::encode(&name("n1"), false, &heck_crdt::wire::encode(&snap.replica));
    let err = refusal(&bytes);
    assert!(
        err.starts_with("snapshot state refused: inconsistent replica state"),
        "{err}"
    );
}

// ---- fuzz ----

/// Slack for other threads' allocations a measurement may include: far below the claims
/// under test (the payload claims up to `u64::MAX` entries).
const NOISE: usize = 16 * 1024;

fn decode(bytes: &[u8]) -> Result<snapshot::Snapshot, SnapshotError> {
    snapshot::decode(bytes, &name("n1"))
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_refused_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        headed in any::<bool>(),
    ) {
        let mut input = Vec::new();
        if headed {
            input.extend_from_slice(&MAGIC);
            input.extend_from_slice(&FORMAT.to_le_bytes());
        }
        input.extend_from_slice(&bytes);
        let (r, allocated) = allocated_by(|| decode(&input));
        prop_assert!(r.is_err());
        prop_assert!(allocated <= 128 * input.len() + NOISE, "{allocated} bytes");
    }

    #[test]
    fn a_mutated_snapshot_is_refused_unless_unchanged(
        edits in mutations(),
    ) {
        let bytes = mutate(valid(), &edits);
        let r = decode(&bytes);
        if bytes == valid() {
            prop_assert!(r.is_ok());
        } else {
            prop_assert!(r.is_err(), "{edits:?} accepted");
        }
    }

    #[test]
    fn every_truncation_is_refused(cut in 0usize..4096) {
        let cut = cut % valid().len();
        prop_assert!(decode(&valid()[..cut]).is_err());
    }

    /// Behind a recomputed checksum: mutated payloads decode or are refused, never panic; what
    /// decodes either restores or is refused whole; allocation stays a factor of the input.
    #[test]
    fn a_resealed_mutated_snapshot_never_panics_and_allocates_in_proportion(
        edits in mutations(),
    ) {
        let bytes = resealed(mutate(valid(), &edits));
        let (r, allocated) = allocated_by(|| decode(&bytes));
        prop_assert!(allocated <= 128 * bytes.len() + NOISE, "{allocated} bytes");
        if r.is_ok() {
            let _ = restore(&bytes, 2);
        }
    }

    /// Arbitrary payloads in a well-formed frame: the payload decoder's turn.
    #[test]
    fn an_arbitrary_payload_in_a_good_frame_never_panics(
        payload in prop::collection::vec(any::<u8>(), 0..512),
        clean in any::<bool>(),
    ) {
        let mut body = vec![heck_crdt::wire::VERSION];
        body.extend_from_slice(&payload);
        let bytes = snapshot::encode(&name("n1"), clean, &body);
        let (r, allocated) = allocated_by(|| decode(&bytes));
        prop_assert!(allocated <= 128 * bytes.len() + NOISE, "{allocated} bytes");
        if r.is_ok() {
            let _ = restore(&bytes, 2);
        }
    }
}

#[test]
fn a_valid_snapshot_round_trips_through_the_decoder() {
    let snap = decode(valid()).unwrap();
    assert!(!snap.clean);
    assert_eq!(snap.node, name("n1"));
    let again = snapshot::encode(
        &snap.node,
        snap.clean,
        &heck_crdt::wire::encode(&snap.replica),
    );
    assert_eq!(again, valid());
}

/// Lengths claimed in the payload (the entries map) far beyond the bytes present: refused, and
/// never allocated. Measured alone: against [`NOISE`], a measurement cannot be told apart from
/// what other test threads allocate meanwhile.
#[test]
fn a_claimed_length_is_never_allocated() {
    if !alone("a_claimed_length_is_never_allocated") {
        return;
    }
    for claim in [65_000u64, u64::from(u32::MAX), u64::MAX >> 1] {
        let mut body = vec![heck_crdt::wire::VERSION];
        // id (node, epoch), next_seq as varints, then the entries map's length.
        let id = heck_crdt::ReplicaId::new("n1", 1);
        body.extend(postcard::to_allocvec(&(id, 0u64)).unwrap());
        body.extend(varint(claim));
        let bytes = snapshot::encode(&name("n1"), false, &body);
        let (r, allocated) = allocated_by(|| decode(&bytes));
        assert!(matches!(r, Err(SnapshotError::Payload(_))), "{r:?}");
        assert!(allocated <= NOISE, "claim {claim}: {allocated} bytes");
    }
}

/// The counter sees a decode's allocations (so the bounds above can fail).
#[test]
fn the_allocation_counter_sees_a_decode() {
    let (r, allocated) = allocated_by(|| decode(valid()));
    assert!(r.is_ok());
    assert!(allocated > 1000, "{allocated}");
}
