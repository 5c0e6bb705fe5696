//! The anti-entropy protocol message by message: membership changes (`remove_peer`), byte caps
//! and pieces, validation of what arrives, restarts noticed by a hello, acks tied to the
//! receiver's epoch, digests that cannot force a reset by arriving late. Review C2, C3, C5, C6.
#![allow(clippy::unwrap_used)]
use heck_crdt::{
    Body, CausalContext, Config, Delta, Dot, Effect, Message, ORMap, Piece, Replica, ReplicaId,
    wire,
};

type Kv = Replica<u8, String, String>;

fn rid(node: u64, epoch: u64) -> ReplicaId {
    ReplicaId { node, epoch }
}

fn replica(node: u8, epoch: u64, peers: &[u8], config: Config) -> Kv {
    Replica::new(rid(u64::from(node), epoch), peers.iter().copied(), config)
}

/// A network of replicas addressed by index, delivering in order; `deliver` filters.
struct Net {
    reps: Vec<Option<Kv>>,
    /// Messages dropped by the filter.
    dropped: usize,
    /// Largest encoded message delivered.
    largest: usize,
}

impl Net {
    fn new(reps: Vec<Kv>) -> Net {
        Net {
            reps: reps.into_iter().map(Some).collect(),
            dropped: 0,
            largest: 0,
        }
    }

    fn rep(&mut self, i: u8) -> &mut Kv {
        self.reps[usize::from(i)].as_mut().unwrap()
    }

    /// One round: every replica ticks; every message (and reply) is delivered if `pass` says
    /// so. Returns the messages sent, as (from, to, message).
    fn round(
        &mut self,
        random: u64,
        mut pass: impl FnMut(&[u8]) -> bool,
    ) -> Vec<(u8, u8, Message<String, String>)> {
        let mut log = Vec::new();
        let mut queue = Vec::new();
        for (i, rep) in self.reps.iter_mut().enumerate() {
            if let Some(rep) = rep {
                for Effect::Send { to, msg } in rep.tick(random ^ i as u64) {
                    queue.push((i as u8, to, msg));
                }
            }
        }
        queue.reverse();
        while let Some((from, to, msg)) = queue.pop() {
            log.push((from, to, msg.clone()));
            let bytes = wire::encode(&msg);
            if !pass(&bytes) {
                self.dropped += 1;
                continue;
            }
            self.largest = self.largest.max(bytes.len());
            let decoded = wire::decode(&bytes, usize::MAX).unwrap();
            let Some(Some(rep)) = self.reps.get_mut(usize::from(to)) else {
                continue;
            };
            let mut replies: Vec<_> = rep
                .handle_message(from, decoded)
                .into_iter()
                .map(|Effect::Send { to: back, msg }| (to, back, msg))
                .collect();
            replies.reverse();
            queue.splice(0..0, replies);
        }
        log
    }

    fn agree(&self, a: u8, b: u8) -> bool {
        let (a, b) = (&self.reps[usize::from(a)], &self.reps[usize::from(b)]);
        a.as_ref().unwrap().map().state() == b.as_ref().unwrap().map().state()
    }
}

fn deltas_to(log: &[(u8, u8, Message<String, String>)], to: u8) -> Vec<Piece> {
    log.iter()
        .filter(|(_, t, _)| *t == to)
        .filter_map(|(_, _, m)| match &m.body {
            Body::Delta { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// C2: peers come and go with membership.

#[test]
fn a_dead_peer_pins_the_buffer_until_it_is_removed_from_the_peers() {
    let config = Config::default();
    let mut net = Net::new(vec![
        replica(0, 1, &[1, 2], config),
        replica(1, 1, &[0], config),
    ]);
    // Peer 2 is configured but never answers (it is dead). One write per round: five groups
    // (writes between two rounds would be one).
    for i in 0..5 {
        net.rep(0).write(format!("k{i}"), "v".into());
        net.round(i, |_| true);
    }
    for r in 5..20 {
        net.round(r, |_| true);
    }
    assert!(net.agree(0, 1));
    // (A write made while no peer had the newest group yet, when a round's random fanout
    // skipped peer 1, joined that group: counted as coalesced.)
    assert_eq!(
        net.rep(0).buffered() as u64,
        5 - net.rep(0).stats().coalesced,
        "peer 2 never acked: nothing collected"
    );

    assert!(net.rep(0).remove_peer(&2));
    assert_eq!(
        net.rep(0).buffered(),
        0,
        "only peer 1 counts now, and it acked all"
    );
    assert!(!net.rep(0).remove_peer(&2), "already gone");
    for r in 0..20 {
        let log = net.round(100 + r, |_| true);
        assert!(
            log.iter().all(|(_, to, _)| *to != 2),
            "nothing goes to a removed peer"
        );
    }

    // It comes back (membership says alive again): it gets everything, as the full state.
    net.rep(0).add_peer(2);
    net.reps.push(Some(replica(2, 9, &[0], config)));
    for r in 0..30 {
        net.round(200 + r, |_| true);
    }
    assert!(net.agree(0, 2));
}

#[test]
fn late_acks_and_digests_of_a_removed_peer_are_ignored() {
    let mut a = replica(0, 1, &[1], Config::default());
    a.write("k".into(), "v".into());
    let sent = a.tick(1);
    let Some(Effect::Send { msg, .. }) = sent.into_iter().next() else {
        panic!("a delta to 1");
    };
    let Body::Delta { piece, .. } = msg.body else {
        panic!("a delta");
    };
    a.remove_peer(&1);
    let ack = Message {
        sender: rid(1, 1),
        body: Body::Ack { to: a.id(), piece },
    };
    assert!(a.handle_message(1, ack).is_empty());
    assert_eq!(a.stats().stale_received, 1);
}

// ---------------------------------------------------------------------------------------------
// C3: caps and pieces.

/// A receiver whose frame limit is far below the state still gets everything and acks it all:
/// full state and joined intervals travel in pieces under the cap.
#[test]
fn a_state_larger_than_the_receivers_frame_limit_arrives_in_pieces_and_is_acked() {
    const FRAME_LIMIT: usize = 16 * 1024;
    let config = Config {
        max_message_bytes: FRAME_LIMIT,
        ..Config::default()
    };
    let mut net = Net::new(vec![
        replica(0, 1, &[1], config),
        replica(1, 1, &[0], config),
    ]);
    let value = "x".repeat(100);
    for i in 0..2_000 {
        net.rep(0).write(format!("key-{i:05}"), value.clone());
    }
    let full = wire::encode(net.rep(0).map().state()).len();
    assert!(
        full > 10 * FRAME_LIMIT,
        "the state ({full} B) is well over the limit"
    );
    let mut rounds = 0;
    while !net.agree(0, 1) && rounds < 100 {
        net.round(rounds, |bytes| bytes.len() <= FRAME_LIMIT);
        rounds += 1;
    }
    assert!(net.agree(0, 1), "not converged after {rounds} rounds");
    assert_eq!(net.dropped, 0, "no message over the receiver's limit");
    assert!(net.rep(0).stats().pieces_sent > 10);
    assert_eq!(net.rep(0).stats().oversized_sent, 0);
    // Everything acked: nothing more to send, the buffer collected.
    net.round(1_000, |_| true);
    assert_eq!(net.rep(0).buffered(), 0);
    assert!(deltas_to(&net.round(1_001, |_| true), 1).is_empty());

    // A burst of writes larger than the limit: the joined interval travels in pieces too.
    for i in 0..2_000 {
        net.rep(0)
            .write(format!("key-{i:05}"), format!("{value}{i}"));
    }
    rounds = 0;
    while !net.agree(0, 1) && rounds < 100 {
        net.round(2_000 + rounds, |bytes| bytes.len() <= FRAME_LIMIT);
        rounds += 1;
    }
    assert!(net.agree(0, 1));
    assert_eq!(net.dropped, 0);
    assert!(net.largest <= FRAME_LIMIT);
}

/// A piece that is lost is sent again; the ones acked are not.
#[test]
fn only_unacked_pieces_are_sent_again() {
    let config = Config {
        max_message_bytes: 4 * 1024,
        ..Config::default()
    };
    let mut net = Net::new(vec![
        replica(0, 1, &[1], config),
        replica(1, 1, &[0], config),
    ]);
    for i in 0..200 {
        net.rep(0).write(format!("key-{i:05}"), "y".repeat(50));
    }
    // Round 1: lose the second delta message.
    let mut n = 0;
    let log = net.round(1, |bytes| {
        let is_delta = wire::decode::<Message<String, String>>(bytes, usize::MAX)
            .is_ok_and(|m| matches!(m.body, Body::Delta { .. }));
        n += usize::from(is_delta);
        !(is_delta && n == 2)
    });
    let first = deltas_to(&log, 1);
    assert!(first.len() > 2, "{} pieces", first.len());
    let log = net.round(2, |_| true);
    assert_eq!(
        deltas_to(&log, 1),
        vec![first[1]],
        "only the lost piece again"
    );
    assert!(net.agree(0, 1));
}

// ---------------------------------------------------------------------------------------------
// C5: nothing received is joined before it is validated.

fn delta_msg(sender: ReplicaId, delta: Delta<String, String>) -> Message<String, String> {
    Message {
        sender,
        body: Body::Delta {
            piece: Piece {
                from: Some(0),
                seq: 1,
                index: 0,
                count: 1,
            },
            delta,
        },
    }
}

/// A replica holding one entry of replica (7, 1), written by it.
fn victim() -> Kv {
    let other: ORMap<String, String> = ORMap::new();
    let d = other.write(rid(7, 1), "k".into(), "v".into());
    let mut a = replica(0, 1, &[1], Config::default());
    a.handle_message(1, delta_msg(rid(7, 1), d));
    assert_eq!(a.map().get(&"k".to_string()), [&"v".to_string()]);
    a
}

fn refused(a: &mut Kv, msg: Message<String, String>) {
    let before = a.map().state().clone();
    let invalid = a.stats().invalid_received;
    assert!(
        a.handle_message(1, msg).is_empty(),
        "no ack for a refused message"
    );
    assert_eq!(a.stats().invalid_received, invalid + 1);
    assert_eq!(a.map().state(), &before, "nothing applied");
}

#[test]
fn a_context_entry_near_u64_max_is_refused_and_counted() {
    let mut a = victim();
    let mut ctx = CausalContext::new();
    ctx.insert(Dot {
        replica: rid(7, 1),
        counter: u64::MAX,
    });
    ctx.insert_prefix(rid(7, 1), u64::MAX - 1);
    // Joined, this would delete the victim's entry for good and make next_dot overflow.
    refused(
        &mut a,
        delta_msg(
            rid(1, 1),
            Delta {
                entries: Default::default(),
                ctx,
            },
        ),
    );
    // The same through a digest.
    let mut ctx = CausalContext::new();
    ctx.insert_prefix(rid(7, 1), u64::MAX);
    refused(
        &mut a,
        Message {
            sender: rid(1, 1),
            body: Body::Digest {
                ctx,
                to: None,
                complete: 0,
            },
        },
    );
}

#[test]
fn an_entry_whose_dot_is_missing_from_its_context_is_refused() {
    let mut a = victim();
    let dot = Dot {
        replica: rid(8, 1),
        counter: 1,
    };
    let mut delta = Delta::default();
    delta
        .entries
        .insert("j".to_string(), [(dot, "w".to_string())].into());
    refused(&mut a, delta_msg(rid(1, 1), delta));
}

#[test]
fn one_dot_under_two_keys_is_refused() {
    let mut a = victim();
    let dot = Dot {
        replica: rid(8, 1),
        counter: 1,
    };
    let mut delta = Delta::default();
    delta.ctx.insert(dot);
    for k in ["j", "k"] {
        delta
            .entries
            .insert(k.to_string(), [(dot, "w".to_string())].into());
    }
    refused(&mut a, delta_msg(rid(1, 1), delta));
}

#[test]
fn a_dot_of_the_receiver_that_it_never_issued_is_refused() {
    let mut a = victim();
    a.write("mine".into(), "1".into()); // a has issued dot 1 of its own
    let mut delta = Delta::default();
    delta.ctx.insert_prefix(a.id(), 5);
    refused(&mut a, delta_msg(rid(1, 1), delta));
    // Its own dot 1, seen by a peer, is fine.
    let mut delta = Delta::default();
    delta.ctx.insert_prefix(a.id(), 1);
    assert_eq!(a.handle_message(1, delta_msg(rid(1, 1), delta)).len(), 1);
}

#[test]
fn a_piece_with_an_impossible_index_is_refused() {
    let mut a = victim();
    let mut msg = delta_msg(rid(1, 1), Delta::default());
    if let Body::Delta { piece, .. } = &mut msg.body {
        piece.index = 3;
        piece.count = 2;
    }
    refused(&mut a, msg);
}

// ---------------------------------------------------------------------------------------------
// C6: restarts, acks and digests.

#[test]
fn a_restarted_replica_is_noticed_by_its_hello_before_it_writes_anything() {
    let config = Config::default();
    let mut net = Net::new(vec![
        replica(0, 1, &[1], config),
        replica(1, 1, &[0], config),
    ]);
    net.rep(0).write("k".into(), "v".into());
    for r in 0..5 {
        net.round(r, |_| true);
    }
    assert!(net.agree(0, 1));
    // Replica 1 restarts (same address, new random epoch) and has nothing to say but hello.
    net.reps[1] = Some(replica(1, 0x5eed, &[0], config));
    let hello = net.rep(1).tick(7);
    assert_eq!(hello.len(), 1);
    let Effect::Send { to: 0, msg } = &hello[0] else {
        panic!("hello to 0");
    };
    assert!(matches!(msg.body, Body::Digest { to: None, .. }));
    let msg = msg.clone();
    net.rep(0).handle_message(1, msg);
    assert_eq!(net.rep(0).stats().restarts_seen, 1);
    let pieces: Vec<Piece> = net
        .rep(0)
        .tick(8)
        .into_iter()
        .filter_map(|Effect::Send { msg, .. }| match msg.body {
            Body::Delta { piece, .. } => Some(piece),
            _ => None,
        })
        .collect();
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].from, None, "the full state");
}

#[test]
fn an_ack_meant_for_an_earlier_incarnation_is_ignored() {
    let config = Config::default();
    let mut old = replica(0, 1, &[1], config);
    let mut b = replica(1, 1, &[0], config);
    for i in 0..3 {
        old.write(format!("k{i}"), "old".into());
    }
    let Effect::Send { msg, .. } = old.tick(1).remove(0);
    let ack = b.handle_message(0, msg).remove(0);
    // The sender dies before the ack arrives; its successor at the same address wrote as much,
    // and its own first delta (the same piece numbers: from 0 to 3, one piece) is lost.
    let mut new = replica(0, 2, &[1], config);
    for i in 0..3 {
        new.write(format!("n{i}"), "new".into());
    }
    let lost = new.tick(1);
    assert!(matches!(
        &lost[0],
        Effect::Send { msg: Message { body: Body::Delta { piece, .. }, .. }, .. }
            if matches!(&ack, Effect::Send { msg: Message { body: Body::Ack { piece: p, .. }, .. }, .. } if p == piece)
    ));
    let Effect::Send { msg: ack, .. } = ack;
    assert!(new.handle_message(1, ack).is_empty());
    assert_eq!(new.stats().stale_received, 1);
    let sends = new.tick(2);
    assert!(
        sends
            .iter()
            .any(|Effect::Send { msg, .. }| matches!(msg.body, Body::Delta { .. })),
        "b still lacks the new writes: they are sent"
    );
}

#[test]
fn a_digest_overtaken_by_its_acks_does_not_reset_the_peer() {
    let config = Config::default();
    let mut a = replica(0, 1, &[1], config);
    let mut b = replica(1, 1, &[0], config);
    // b has heard from a (a's hello), so its digests name a.
    for Effect::Send { msg, .. } in a.tick(1) {
        b.handle_message(0, msg);
    }
    for Effect::Send { msg, .. } in b.tick(1) {
        a.handle_message(1, msg);
    }
    a.write("k".into(), "v".into());
    // b writes a digest before the delta reaches it; the digest travels on another connection.
    let late_digest = Message {
        sender: b.id(),
        body: Body::Digest {
            ctx: b.map().context().clone(),
            to: Some(a.id()),
            complete: 0,
        },
    };
    for Effect::Send { msg, .. } in a.tick(2) {
        if matches!(msg.body, Body::Delta { .. }) {
            for Effect::Send { msg: ack, .. } in b.handle_message(0, msg) {
                a.handle_message(1, ack);
            }
        }
    }
    assert!(a.tick(3).is_empty(), "b acked everything");
    a.handle_message(1, late_digest);
    assert_eq!(a.stats().resets, 0, "an old digest proves nothing");
    assert!(a.tick(4).is_empty());
}

#[test]
fn a_digest_written_after_a_whole_transfer_that_lacks_it_resets_the_peer() {
    let config = Config::default();
    let mut a = replica(0, 1, &[1], config);
    let mut b = replica(1, 1, &[0], config);
    a.write("k".into(), "v".into());
    for Effect::Send { msg, .. } in a.tick(1) {
        for Effect::Send { msg: reply, .. } in b.handle_message(0, msg) {
            a.handle_message(1, reply);
        }
    }
    assert!(a.tick(2).is_empty(), "b acked everything");
    // b claims a transfer received whole at a's position, yet an empty context: it lost state.
    let digest = Message {
        sender: b.id(),
        body: Body::Digest {
            ctx: CausalContext::new(),
            to: Some(a.id()),
            complete: 1,
        },
    };
    a.handle_message(1, digest);
    assert_eq!(a.stats().resets, 1);
    let full = a.tick(3).into_iter().any(|Effect::Send { msg, .. }| {
        matches!(msg.body, Body::Delta { piece, .. } if piece.from.is_none())
    });
    assert!(full, "the full state goes out");
}

#[test]
fn a_write_after_the_largest_time_stamp_does_not_overflow() {
    use heck_crdt::LwwReg;
    let reg = LwwReg::new(1u8, u64::MAX, rid(1, 1));
    let w = reg.write(2, 0, rid(2, 1));
    let mut x = reg.clone();
    x.join(&w);
    let mut y = w.clone();
    y.join(&reg);
    assert_eq!(
        x, y,
        "a tie at the last stamp is broken the same way everywhere"
    );
}

/// Acks that come back two ticks later (a link slower than the tick) while writes keep
/// coming: the transfer in flight is kept until all its pieces are acked, so late acks still
/// count, the peer's position advances and the buffer is collected. (Cutting a new transfer
/// at every tick would make every ack stale: nothing would ever be acknowledged.)
#[test]
fn a_transfer_completes_when_its_acks_arrive_two_ticks_late_under_steady_writes() {
    let config = Config {
        max_message_bytes: 2 * 1024,
        ..Config::default()
    };
    let mut a = replica(0, 1, &[1], config);
    let mut b = replica(1, 1, &[0], config);
    for i in 0..100 {
        a.write(format!("key-{i:05}"), "z".repeat(40));
    }
    // What a sends at tick r arrives at b, and b's acks back at a, just before tick r + 2.
    let mut in_flight: std::collections::VecDeque<Vec<Message<String, String>>> =
        [Vec::new(), Vec::new()].into();
    for round in 0..30u64 {
        a.write(format!("steady-{round}"), "w".into());
        for msg in in_flight.pop_front().unwrap() {
            for Effect::Send { msg: ack, .. } in b.handle_message(0, msg) {
                a.handle_message(1, ack);
            }
        }
        let sent = a.tick(round);
        in_flight.push_back(
            sent.into_iter()
                .filter(|Effect::Send { to, .. }| *to == 1)
                .map(|Effect::Send { msg, .. }| msg)
                .collect(),
        );
        // b says nothing but acks (its own ticks would only send digests).
    }
    assert!(
        a.buffered() < 10,
        "{} groups still buffered: b's position never advanced",
        a.buffered()
    );
}

/// A restarted peer on a slow link, while another peer acks everything at once and writes keep
/// coming: once its full state is acked it continues with intervals. (If the groups after the
/// full state's position were collected meanwhile, it would need a second full state.)
#[test]
fn a_slow_restarted_peer_goes_from_the_full_state_to_intervals_under_steady_writes() {
    let config = Config {
        max_message_bytes: 2 * 1024,
        ..Config::default()
    };
    let mut a = replica(0, 1, &[1, 2], config);
    let mut b = replica(1, 1, &[0], config);
    let mut c = replica(2, 1, &[0], config);
    for i in 0..100 {
        a.write(format!("key-{i:05}"), "z".repeat(40));
    }
    for round in 0..10 {
        for Effect::Send { to, msg } in a.tick(round) {
            let peer = if to == 1 { &mut b } else { &mut c };
            for Effect::Send { msg: ack, .. } in peer.handle_message(0, msg) {
                a.handle_message(to, ack);
            }
        }
    }
    assert_eq!(a.buffered(), 0, "both acked everything");
    // c restarts: its hello makes a send it the full state, over a link four ticks slow.
    let mut c = replica(2, 2, &[0], config);
    for Effect::Send { msg, .. } in c.tick(0) {
        a.handle_message(2, msg);
    }
    let mut to_c: std::collections::VecDeque<Vec<Message<String, String>>> =
        vec![Vec::new(); 4].into();
    let mut full_transfers = std::collections::BTreeSet::new();
    for round in 0..40u64 {
        a.write(format!("steady-{round}"), "w".into());
        for msg in to_c.pop_front().unwrap() {
            for Effect::Send { msg: ack, .. } in c.handle_message(0, msg) {
                a.handle_message(2, ack);
            }
        }
        let mut now = Vec::new();
        for Effect::Send { to, msg } in a.tick(100 + round) {
            if to == 1 {
                for Effect::Send { msg: ack, .. } in b.handle_message(0, msg) {
                    a.handle_message(1, ack);
                }
            } else {
                if let Body::Delta { piece, .. } = &msg.body
                    && piece.from.is_none()
                {
                    full_transfers.insert(piece.seq);
                }
                now.push(msg);
            }
        }
        to_c.push_back(now);
    }
    assert_eq!(
        full_transfers.len(),
        1,
        "full states cut at {full_transfers:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// C4: replaced epochs are retired: moved out of every version vector, for the whole cluster.
use heck_crdt::sync::NotRetirable;

/// Exchange until quiet between the listed replicas (by address), every message delivered.
fn settle(reps: &mut [(u8, Kv)], rounds: u64) {
    for r in 0..rounds {
        let mut queue = Vec::new();
        for (addr, rep) in reps.iter_mut() {
            for Effect::Send { to, msg } in rep.tick(r ^ u64::from(*addr)) {
                queue.push((*addr, to, msg));
            }
        }
        while let Some((from, to, msg)) = queue.pop() {
            if let Some((_, rep)) = reps.iter_mut().find(|(a, _)| *a == to) {
                for Effect::Send { to: back, msg } in rep.handle_message(from, msg) {
                    queue.push((to, back, msg));
                }
            }
        }
    }
}

#[test]
fn a_retirement_at_one_replica_moves_the_old_epoch_out_of_every_version_vector() {
    let config = Config {
        digest_every: 2,
        ..Config::default()
    };
    let mut reps = vec![
        (0, replica(0, 1, &[1, 2], config)),
        (1, replica(1, 1, &[0, 2], config)),
        (2, replica(2, 1, &[0, 1], config)),
    ];
    reps[2].1.write("kept".into(), "from the old epoch".into());
    reps[2].1.write("gone".into(), "overwritten".into());
    settle(&mut reps, 10);
    let old = reps[2].1.id();
    assert_eq!(reps[0].1.retire(old), Err(NotRetirable::Running));
    // Replica 2 restarts with a new epoch; its old epoch's write of "kept" stays live.
    reps[2].1 = replica(2, 2, &[0, 1], config);
    reps[0].1.write("gone".into(), "by 0".into());
    settle(&mut reps, 20);
    let before = reps[0].1.map().state().clone();
    assert_eq!(before.ctx.vv().get(&old), 2);
    // Only replica 0 retires it; the retirement travels like a write.
    assert_eq!(reps[0].1.retire(old), Ok(2));
    assert_eq!(reps[0].1.retire(old), Err(NotRetirable::NotListed));
    let full_states =
        |reps: &[(u8, Kv)]| -> u64 { reps.iter().map(|(_, r)| r.stats().full_states_sent).sum() };
    let sent = full_states(&reps);
    settle(&mut reps, 20);
    for (_, r) in &reps {
        let ctx = r.map().context();
        assert_eq!(ctx.vv().get(&old), 0, "{} lists it", r.id());
        assert_eq!(ctx.retired().get(&old), 2, "{}", r.id());
        assert!(
            ctx.covers(&before.ctx) && before.ctx.covers(ctx),
            "no dot forgotten"
        );
        assert!(r.map().state().validate().is_ok());
        assert_eq!(
            r.map().get(&"kept".to_string()),
            [&"from the old epoch".to_string()],
            "a live value of the old epoch stays"
        );
        assert_eq!(r.map().get(&"gone".to_string()), [&"by 0".to_string()]);
        assert_eq!(r.map().state(), reps[0].1.map().state());
    }
    assert_eq!(
        full_states(&reps),
        sent,
        "the replicas that had not retired yet did not look behind (the ping-pong of 2026-12-03)"
    );
    // Life goes on: overwriting the old epoch's value works everywhere, and a late copy of
    // the old epoch's first write changes nothing.
    let late = {
        let mut m: ORMap<String, String> = ORMap::new();
        let d = m.write(old, "kept".into(), "from the old epoch".into());
        m.apply(&d);
        d
    };
    reps[1].1.write("kept".into(), "new".into());
    settle(&mut reps, 10);
    reps[0].1.handle_message(2, delta_msg(old, late));
    settle(&mut reps, 10);
    for (_, r) in &reps {
        assert_eq!(r.map().get(&"kept".to_string()), [&"new".to_string()]);
        assert_eq!(r.map().context().vv().get(&old), 0);
    }
}

#[test]
fn a_running_epoch_one_not_listed_or_one_with_gaps_is_not_retired() {
    let config = Config::default();
    let mut a = replica(0, 1, &[1], config);
    let b_id = rid(1, 1);
    assert_eq!(a.retire(a.id()), Err(NotRetirable::Running));
    let mut b = replica(1, 1, &[0], config);
    b.write("k".into(), "v".into());
    for Effect::Send { msg, .. } in b.tick(1) {
        a.handle_message(1, msg);
    }
    assert_eq!(a.retire(b_id), Err(NotRetirable::Running), "b runs");
    assert_eq!(a.retire(rid(5, 5)), Err(NotRetirable::NotListed));
    // An epoch whose second write arrived but not its first: a gap.
    let ghost = rid(5, 5);
    let mut other: ORMap<String, String> = ORMap::new();
    let first = other.write(ghost, "g".into(), "1".into());
    other.apply(&first);
    let second = other.write(ghost, "h".into(), "2".into());
    a.handle_message(1, delta_msg(b_id, second));
    assert_eq!(a.retire(ghost), Err(NotRetirable::Gaps));
    a.handle_message(1, delta_msg(b_id, first));
    assert_eq!(a.retire(ghost), Ok(2));
}

/// The deltas among `effects`, in order.
fn deltas(effects: Vec<Effect<u8, String, String>>) -> Vec<Message<String, String>> {
    effects
        .into_iter()
        .map(|Effect::Send { msg, .. }| msg)
        .filter(|m| matches!(m.body, Body::Delta { .. }))
        .collect()
}

/// Invariant 4b: writes between two sends are one buffered group (a burst of 100,000 status
/// writes is not 100,000 groups), and a group a peer may hold never changes: a write after a
/// send starts a new group, a lost transfer is resent byte for byte, and the later write still
/// reaches the peer.
#[test]
fn writes_between_two_sends_are_one_group_and_a_sent_group_never_changes() {
    let config = Config::default();
    let (mut a, mut b) = (replica(0, 1, &[1], config), replica(1, 1, &[0], config));
    for i in 0..100 {
        a.write(format!("burst-{i:03}"), "v".into());
    }
    a.remove(&"burst-000".to_string());
    assert_eq!(a.buffered(), 1, "one group for the burst");
    assert_eq!(a.stats().coalesced, 100);

    let first = deltas(a.tick(1));
    assert!(!first.is_empty());
    a.write("late".into(), "v".into());
    a.write("burst-001".into(), "w".into());
    assert_eq!(a.buffered(), 2, "the sent group stays as it was sent");

    // The first transfer is lost: its resend is the same.
    let again = deltas(a.tick(2));
    assert_eq!(
        first, again,
        "an interval cut again from the buffer is the same"
    );
    for msg in again {
        for Effect::Send { msg: ack, .. } in b.handle_message(0, msg) {
            a.handle_message(1, ack);
        }
    }
    assert_eq!(b.map().get(&"burst-001".to_string()), vec!["v"]);
    assert!(b.map().get(&"late".to_string()).is_empty());
    for round in 3..6 {
        for msg in deltas(a.tick(round)) {
            for Effect::Send { msg: ack, .. } in b.handle_message(0, msg) {
                a.handle_message(1, ack);
            }
        }
    }
    assert_eq!(
        b.map().state(),
        a.map().state(),
        "the later writes arrived too"
    );
    assert_eq!(b.map().get(&"burst-001".to_string()), vec!["w"]);
    assert!(b.map().get(&"burst-000".to_string()).is_empty());
    assert_eq!(a.buffered(), 0, "all acked, all collected");
}

/// A transfer its peer does not ack is sent again after `resend_after` rounds, the wait
/// doubling to 8× (a busy receiver is not sent the same megabytes every round); a push sends a
/// new transfer at once but never resends one.
#[test]
fn an_unacked_transfer_is_resent_with_a_doubling_wait_and_a_push_never_resends() {
    let mut a = replica(0, 1, &[1], Config::default());
    assert!(
        deltas(a.push(0)).is_empty(),
        "nothing written, nothing pushed"
    );
    a.write("k".into(), "v".into());
    assert_eq!(deltas(a.push(0)).len(), 1, "a write is pushed at once");
    assert!(
        deltas(a.push(0)).is_empty(),
        "in flight: a push does not resend"
    );
    let mut sent = Vec::new();
    for round in 1..=40u64 {
        if !deltas(a.tick(round)).is_empty() {
            sent.push(round);
        }
        a.write(format!("k{round}"), "v".into());
        assert!(deltas(a.push(round)).is_empty(), "round {round}");
    }
    assert_eq!(sent, [1, 3, 7, 15, 23, 31, 39]);
    assert_eq!(a.stats().resends, 7);
}

/// `receive` tells its caller what a received delta brings (the news the join uses, so a
/// driver need not compute it again): the keys the first time, nothing when it comes again,
/// and no answer for an ack.
#[test]
fn receive_tells_what_a_delta_brings_and_nothing_for_an_ack() {
    let config = Config::default();
    let (mut a, mut b) = (replica(0, 1, &[1], config), replica(1, 1, &[0], config));
    a.write("k".into(), "v".into());
    let sent = deltas(a.tick(1));
    assert_eq!(sent.len(), 1);
    let keys = |news: Option<&Delta<String, String>>, _: &Delta<String, String>| {
        news.map(|n| n.entries.keys().cloned().collect::<Vec<_>>())
    };
    let (acks, told) = b.receive(0, sent[0].clone(), keys);
    assert_eq!(told, Some(Some(vec!["k".to_string()])));
    let (_, again) = b.receive(0, sent[0].clone(), keys);
    assert_eq!(again, Some(None), "redundant the second time");
    let Some(Effect::Send { msg: ack, .. }) = acks.into_iter().next() else {
        panic!("no ack");
    };
    let (_, on_ack) = a.receive(1, ack, |_, _| ());
    assert_eq!(on_ack, None);
}
