//! The protocol step by step, asserting exact effects. Addresses are plain numbers.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use heck_swim::sim::{WALL_AT_ZERO, at};
use heck_swim::{
    Body, Config, Effect, Member, Notification, Now, Packet, PushPullState, State, Swim, Timer,
    Update,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Both clocks `n` ms after the start (wall clock: the simulator's).
fn t(n: u64) -> Now {
    at(ms(n))
}

/// Wall-clock milliseconds at the start, as packets carry them.
fn wall_ms_at_zero() -> u64 {
    WALL_AT_ZERO.as_millis() as u64
}

fn packet(from: &str, addr: u32, body: Body<u32>, updates: Vec<Update<u32>>) -> Packet<u32> {
    Packet {
        from: from.into(),
        from_addr: addr,
        sent_at_ms: wall_ms_at_zero(),
        body,
        updates,
        payloads: vec![],
    }
}

fn alive(name: &str, addr: u32, inc: u64) -> Update<u32> {
    Update::Alive {
        name: name.into(),
        addr,
        inc,
    }
}

/// A member "a" (address 1) that knows b (2), c (3), d (4).
fn member_a() -> Swim<u32> {
    let mut a = Swim::new("a", 1, 1, Config::lan(), 42).unwrap();
    a.start(t(0), vec![]);
    let fx = a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Gossip,
            vec![alive("b", 2, 1), alive("c", 3, 1), alive("d", 4, 1)],
        ),
    );
    assert_eq!(
        fx,
        vec![
            Effect::Notify(Notification::Up("b".into())),
            Effect::Notify(Notification::Up("c".into())),
            Effect::Notify(Notification::Up("d".into())),
        ]
    );
    a
}

fn sends(fx: &[Effect<u32>]) -> Vec<(u32, Body<u32>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { to, packet } => Some((*to, packet.body.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_ping_is_answered_with_an_ack() {
    let mut a = member_a();
    let fx = a.handle_packet(
        t(1),
        packet(
            "c",
            3,
            Body::Ping {
                seq: 7,
                target: "a".into(),
            },
            vec![],
        ),
    );
    assert_eq!(sends(&fx), vec![(3, Body::Ack { seq: 7 })]);
}

#[test]
fn a_probe_pings_then_asks_helpers_then_suspects() {
    let mut a = member_a();
    let fx = a.handle_timer(t(1000), Timer::Probe);
    let (target, seq) = match sends(&fx)[..] {
        [(to, Body::Ping { seq, .. })] => (to, seq),
        ref other => panic!("{other:?}"),
    };
    assert!(fx.contains(&Effect::Schedule {
        after: ms(500),
        timer: Timer::ProbeTimeout(seq)
    }));
    assert!(fx.contains(&Effect::Schedule {
        after: ms(1000),
        timer: Timer::ProbeEnd(seq)
    }));

    // No ack: the two other members are asked to probe indirectly.
    let fx = a.handle_timer(t(1500), Timer::ProbeTimeout(seq));
    let mut helpers: Vec<u32> = sends(&fx).iter().map(|(to, _)| *to).collect();
    helpers.sort();
    let expected: Vec<u32> = [2, 3, 4].into_iter().filter(|&x| x != target).collect();
    assert_eq!(helpers, expected);
    assert!(
        sends(&fx)
            .iter()
            .all(|(_, b)| matches!(b, Body::PingReq { seq: s, .. } if *s == seq))
    );

    // One helper nacks, the other is silent: suspect, and Lifeguard raises our own
    // multiplier by the missing nack.
    let names = ["", "", "b", "c", "d"];
    let h = helpers[0];
    a.handle_packet(
        t(1800),
        packet(names[h as usize], h, Body::Nack { seq }, vec![]),
    );
    let fx = a.handle_timer(t(2000), Timer::ProbeEnd(seq));
    let name = names[target as usize];
    assert!(
        fx.contains(&Effect::Notify(Notification::Suspect(name.into()))),
        "{fx:?}"
    );
    assert_eq!(a.awareness(), 1);
    assert_eq!(
        a.members().find(|m| m.name == name).unwrap().state,
        State::Suspect
    );
}

#[test]
fn an_ack_through_a_helper_counts_as_success() {
    let mut a = member_a();
    let fx = a.handle_timer(t(1000), Timer::Probe);
    let seq = match sends(&fx)[..] {
        [(_, Body::Ping { seq, .. })] => seq,
        ref other => panic!("{other:?}"),
    };
    a.handle_timer(t(1500), Timer::ProbeTimeout(seq));
    a.handle_packet(t(1600), packet("b", 2, Body::Ack { seq }, vec![]));
    let fx = a.handle_timer(t(2000), Timer::ProbeEnd(seq));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Notify(Notification::Suspect(_))))
    );
    assert_eq!(a.awareness(), 0);
}

#[test]
fn a_helper_forwards_the_ack_or_answers_with_a_nack() {
    let mut h = member_a();
    let fx = h.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::PingReq {
                seq: 9,
                target: "c".into(),
                addr: 3,
            },
            vec![],
        ),
    );
    let my_seq = match sends(&fx)[..] {
        [(3, Body::Ping { seq, .. })] => seq,
        ref other => panic!("{other:?}"),
    };
    assert!(fx.contains(&Effect::Schedule {
        after: ms(400),
        timer: Timer::IndirectTimeout(my_seq)
    }));
    let fx = h.handle_packet(t(10), packet("c", 3, Body::Ack { seq: my_seq }, vec![]));
    assert_eq!(sends(&fx), vec![(2, Body::Ack { seq: 9 })]);

    let fx = h.handle_packet(
        t(20),
        packet(
            "b",
            2,
            Body::PingReq {
                seq: 10,
                target: "d".into(),
                addr: 4,
            },
            vec![],
        ),
    );
    let my_seq = match sends(&fx)[..] {
        [(4, Body::Ping { seq, .. })] => seq,
        ref other => panic!("{other:?}"),
    };
    let fx = h.handle_timer(t(420), Timer::IndirectTimeout(my_seq));
    assert_eq!(sends(&fx), vec![(2, Body::Nack { seq: 10 })]);
}

#[test]
fn a_suspected_member_refutes_with_a_higher_incarnation() {
    let mut a = member_a();
    let suspect = Update::Suspect {
        name: "a".into(),
        inc: 1,
        from: "b".into(),
    };
    let fx = a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Ping {
                seq: 1,
                target: "a".into(),
            },
            vec![suspect],
        ),
    );
    assert_eq!(a.me().incarnation, 2);
    assert_eq!(a.stats().refutations, 1);
    let Effect::Send { packet, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert!(
        packet.updates.contains(&alive("a", 1, 2)),
        "the refutation rides on the ack: {packet:?}"
    );
}

#[test]
fn suspicion_expires_into_death_unless_refuted_and_confirmations_shorten_it() {
    // 4 members: n = 4, min = α·max(1, log10 4)·1 s = 4 s, max = β·min = 24 s.
    let mut a = member_a();
    a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Gossip,
            vec![Update::Suspect {
                name: "c".into(),
                inc: 1,
                from: "b".into(),
            }],
        ),
    );
    assert_eq!(
        a.handle_timer(t(23_000), Timer::Suspicion("c".into())),
        vec![Effect::Schedule {
            after: ms(1000),
            timer: Timer::Suspicion("c".into())
        }],
        "not yet: checked again at the deadline"
    );
    // Two more independent accusers (k = α − 2 = 2): the timeout drops to the minimum.
    let fx = a.handle_packet(
        t(1000),
        packet(
            "d",
            4,
            Body::Gossip,
            vec![Update::Suspect {
                name: "c".into(),
                inc: 1,
                from: "d".into(),
            }],
        ),
    );
    assert!(
        matches!(
            fx[..],
            [Effect::Schedule {
                timer: Timer::Suspicion(_),
                ..
            }]
        ),
        "{fx:?}"
    );
    a.handle_packet(
        t(1000),
        packet(
            "e",
            5,
            Body::Gossip,
            vec![
                alive("e", 5, 1),
                Update::Suspect {
                    name: "c".into(),
                    inc: 1,
                    from: "e".into(),
                },
            ],
        ),
    );
    let fx = a.handle_timer(t(4_500), Timer::Suspicion("c".into()));
    assert!(
        fx.contains(&Effect::Notify(Notification::Down("c".into()))),
        "{fx:?}"
    );

    // A refutation (higher incarnation) brings a member back.
    let fx = a.handle_packet(
        t(5_000),
        packet("c", 3, Body::Gossip, vec![alive("c", 3, 2)]),
    );
    assert!(fx.contains(&Effect::Notify(Notification::Up("c".into()))));
}

#[test]
fn stale_updates_are_ignored() {
    let mut a = member_a();
    let fx = a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Gossip,
            vec![Update::Dead {
                name: "c".into(),
                inc: 1,
                from: "b".into(),
            }],
        ),
    );
    assert!(fx.contains(&Effect::Notify(Notification::Down("c".into()))));
    let fx = a.handle_packet(t(1), packet("b", 2, Body::Gossip, vec![alive("c", 3, 1)]));
    assert!(
        fx.is_empty(),
        "the same incarnation cannot undo a death: {fx:?}"
    );
}

#[test]
fn a_joiner_gets_the_member_list() {
    let mut a = member_a();
    let fx = a.handle_packet(t(0), packet("z", 9, Body::Join, vec![alive("z", 9, 1)]));
    let Some((9, Body::JoinReply { members })) = sends(&fx).into_iter().next() else {
        panic!("{fx:?}")
    };
    let mut names: Vec<String> = members.into_iter().map(|m| m.name).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d", "z"]);
}

#[test]
fn a_leaving_member_tells_everyone_and_they_mark_it_left() {
    let mut a = member_a();
    let fx = a.leave(t(0));
    let mut told: Vec<u32> = sends(&fx).iter().map(|(to, _)| *to).collect();
    told.sort();
    assert_eq!(told, [2, 3, 4]);
    let Effect::Send { packet: sent, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert!(sent.updates.contains(&Update::Left {
        name: "a".into(),
        inc: 2
    }));
    assert!(
        a.handle_timer(t(5000), Timer::Probe).is_empty(),
        "a left member stays quiet"
    );

    let mut b = member_a();
    let fx = b.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Gossip,
            vec![Update::Left {
                name: "c".into(),
                inc: 2,
            }],
        ),
    );
    assert!(fx.contains(&Effect::Notify(Notification::Left("c".into()))));
    assert_eq!(
        b.members().find(|m| m.name == "c").unwrap().state,
        State::Left
    );
}

#[test]
fn payloads_of_other_layers_ride_on_packets() {
    let mut a = member_a();
    a.broadcast_payload(b"delta".to_vec()).unwrap();
    let fx = a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::Ping {
                seq: 1,
                target: "a".into(),
            },
            vec![],
        ),
    );
    let Effect::Send { packet: p, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(p.payloads, vec![b"delta".to_vec()]);
    let mut b = member_a();
    let fx = b.handle_packet(t(0), p.clone());
    assert!(fx.contains(&Effect::Notify(Notification::Payload(b"delta".to_vec()))));
}

fn suspect(name: &str, inc: u64, from: &str) -> Update<u32> {
    Update::Suspect {
        name: name.into(),
        inc,
        from: from.into(),
    }
}

/// Review S1: the suspicion timeout was recomputed from the member count when it was checked,
/// so a cluster that grew during a suspicion pushed the deadline later and nobody rescheduled.
#[test]
fn a_suspicion_ends_in_death_even_if_the_cluster_grows_from_11_to_40_meanwhile() {
    let mut a = Swim::new("a", 1, 1, Config::lan(), 42).unwrap();
    a.start(t(0), vec![]);
    let others: Vec<Update<u32>> = (2..=11).map(|i| alive(&format!("m{i}"), i, 1)).collect();
    a.handle_packet(t(0), packet("m2", 2, Body::Gossip, others));
    // n = 11: min = 4 · log10 11 s ≈ 4.17 s; with k = 2 confirmations the timeout is the minimum.
    let fx = a.handle_packet(
        t(0),
        packet(
            "m2",
            2,
            Body::Gossip,
            vec![
                suspect("m5", 1, "m2"),
                suspect("m5", 1, "m3"),
                suspect("m5", 1, "m4"),
            ],
        ),
    );
    let last = fx
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Schedule {
                after,
                timer: Timer::Suspicion(_),
            } => Some(*after),
            _ => None,
        })
        .unwrap();
    assert!(last < ms(4200), "{last:?}");
    // 29 members join during the suspicion (n = 40: min would be 6.4 s); no more confirmations.
    let joiners: Vec<Update<u32>> = (12..=40).map(|i| alive(&format!("m{i}"), i, 1)).collect();
    a.handle_packet(t(1000), packet("m2", 2, Body::Gossip, joiners));
    let fx = a.handle_timer(at(last), Timer::Suspicion("m5".into()));
    assert!(
        fx.contains(&Effect::Notify(Notification::Down("m5".into()))),
        "{fx:?}"
    );
}

/// A member "a" (address 1) that knows `others` as (name, address), all alive at incarnation 1.
fn member_knowing(others: &[(&str, u32)]) -> Swim<u32> {
    let mut a = Swim::new("a", 1, 1, Config::lan(), 42).unwrap();
    a.start(t(0), vec![]);
    let updates = others.iter().map(|(n, addr)| alive(n, *addr, 1)).collect();
    a.handle_packet(t(0), packet("x", 99, Body::Gossip, updates));
    a
}

/// Review S7: the buddy system only reordered a queued Suspect, which had long drained by the
/// time the suspect was probed again.
#[test]
fn pinging_a_suspect_member_tells_it_first_with_a_fresh_suspect() {
    let mut a = member_knowing(&[("c", 3)]);
    a.handle_packet(
        t(0),
        packet("b", 2, Body::Gossip, vec![suspect("c", 1, "b")]),
    );
    // Gossip rounds drain the queue.
    for i in 1..50 {
        a.handle_timer(t(i * 200), Timer::Gossip);
    }
    let fx = a.handle_timer(t(10_000), Timer::Probe);
    let Some(Effect::Send { to: 3, packet: p }) =
        fx.iter().find(|e| matches!(e, Effect::Send { .. }))
    else {
        panic!("{fx:?}")
    };
    assert!(matches!(p.body, Body::Ping { .. }), "{p:?}");
    assert_eq!(p.updates.first(), Some(&suspect("c", 1, "a")), "{p:?}");
}

/// Review S9: helpers for an indirect probe are alive members only (memberlist).
#[test]
fn only_alive_members_are_asked_to_probe_indirectly() {
    let mut a = member_knowing(&[("b", 2), ("c", 3), ("d", 4)]);
    a.handle_packet(
        t(0),
        packet("b", 2, Body::Gossip, vec![suspect("d", 1, "b")]),
    );
    let mut asked = Vec::new();
    for round in 0..3u64 {
        let start = 1000 * (round + 1);
        let fx = a.handle_timer(t(start), Timer::Probe);
        let Some(seq) = sends(&fx).iter().find_map(|(_, b)| match b {
            Body::Ping { seq, .. } => Some(*seq),
            _ => None,
        }) else {
            panic!("{fx:?}")
        };
        let fx = a.handle_timer(t(start + 500), Timer::ProbeTimeout(seq));
        asked.extend(sends(&fx).into_iter().map(|(to, _)| to));
        a.handle_packet(t(start + 600), packet("x", 9, Body::Ack { seq }, vec![]));
        a.handle_timer(t(start + 1000), Timer::ProbeEnd(seq));
    }
    assert!(!asked.is_empty());
    assert!(!asked.contains(&4), "the suspect d was asked: {asked:?}");
}

/// Review S9: two nacks from one helper count once; a nack from a member not asked not at all.
#[test]
fn nacks_are_counted_once_per_helper_asked() {
    let mut a = member_knowing(&[("b", 2), ("c", 3), ("d", 4)]);
    let fx = a.handle_timer(t(1000), Timer::Probe);
    let Some((target, seq)) = sends(&fx).iter().find_map(|(to, b)| match b {
        Body::Ping { seq, .. } => Some((*to, *seq)),
        _ => None,
    }) else {
        panic!("{fx:?}")
    };
    let fx = a.handle_timer(t(1500), Timer::ProbeTimeout(seq));
    let helpers: Vec<u32> = sends(&fx).iter().map(|(to, _)| *to).collect();
    assert_eq!(helpers.len(), 2);
    let name = |addr: u32| ["", "a", "b", "c", "d"][addr as usize];
    let h = helpers[0];
    for _ in 0..2 {
        a.handle_packet(t(1600), packet(name(h), h, Body::Nack { seq }, vec![]));
    }
    a.handle_packet(
        t(1600),
        packet(name(target), target, Body::Nack { seq }, vec![]),
    );
    a.handle_timer(t(2000), Timer::ProbeEnd(seq));
    assert_eq!(a.awareness(), 1, "one helper of two stayed silent");
}

/// Review S9: k is capped at n − 2; in a cluster of three one confirmation is all there can be.
#[test]
fn in_a_cluster_of_three_one_confirmation_brings_the_suspicion_to_its_minimum() {
    let mut a = member_knowing(&[("b", 2), ("c", 3)]);
    a.handle_packet(
        t(0),
        packet("b", 2, Body::Gossip, vec![suspect("c", 1, "b")]),
    );
    let fx = a.handle_packet(
        t(0),
        packet("x", 9, Body::Gossip, vec![suspect("c", 1, "x")]),
    );
    assert!(
        fx.contains(&Effect::Schedule {
            after: ms(4000),
            timer: Timer::Suspicion("c".into())
        }),
        "{fx:?}"
    );
}

/// Review S9: an authenticated peer claiming the largest incarnation must not overflow ours.
#[test]
fn an_accusation_at_the_largest_incarnation_saturates_instead_of_overflowing() {
    let mut a = member_knowing(&[("b", 2)]);
    a.handle_packet(
        t(0),
        packet("b", 2, Body::Gossip, vec![suspect("a", u64::MAX, "b")]),
    );
    assert_eq!(a.me().incarnation, u64::MAX);
    a.leave(t(0));
    assert_eq!(a.me().incarnation, u64::MAX);
}

/// Review S9: dead members were never forgotten. They are kept `reap_after` (memberlist's
/// GossipToTheDeadTime), then dropped when the probe round wraps.
#[test]
fn a_dead_member_is_forgotten_after_the_reap_time() {
    let mut a = member_knowing(&[("b", 2), ("c", 3)]);
    let dead = Update::Dead {
        name: "c".into(),
        inc: 1,
        from: "b".into(),
    };
    a.handle_packet(t(0), packet("b", 2, Body::Gossip, vec![dead]));
    let reap = Config::lan().reap_after;
    a.handle_timer(at(reap - ms(1)), Timer::Probe);
    a.handle_timer(at(reap - ms(1)), Timer::Probe);
    assert!(
        a.members().any(|m| m.name == "c"),
        "kept until the reap time"
    );
    a.handle_timer(at(reap + ms(1)), Timer::Probe);
    a.handle_timer(at(reap + ms(1)), Timer::Probe);
    assert!(!a.members().any(|m| m.name == "c"), "then forgotten");
}

/// Review S3: a process restarted under another name at a reused address must not answer for
/// the old name, or the old name would stay alive forever (memberlist names the target).
#[test]
fn a_ping_for_another_name_at_our_address_is_not_acked() {
    // "b2" now runs at address 2, where "b" used to be; a still pings "b" there.
    let mut b2 = Swim::new("b2", 2, 1, Config::lan(), 7).unwrap();
    b2.start(t(0), vec![]);
    let ping = Body::Ping {
        seq: 4,
        target: "b".into(),
    };
    let fx = b2.handle_packet(t(0), packet("a", 1, ping, vec![]));
    assert_eq!(sends(&fx), vec![], "no ack for a name that is not ours");
    assert_eq!(b2.stats().misdirected_pings, 1);
}

#[test]
fn a_helper_names_the_target_in_its_own_ping() {
    let mut h = member_a();
    let req = Body::PingReq {
        seq: 9,
        target: "c".into(),
        addr: 3,
    };
    let fx = h.handle_packet(t(0), packet("b", 2, req, vec![]));
    assert!(
        matches!(&sends(&fx)[..], [(3, Body::Ping { target, .. })] if target == "c"),
        "{fx:?}"
    );
}

fn ping_sealed_at(from: &str, addr: u32, sent_at_ms: u64) -> Packet<u32> {
    let mut p = packet(
        from,
        addr,
        Body::Ping {
            seq: 1,
            target: "a".into(),
        },
        vec![],
    );
    p.sent_at_ms = sent_at_ms;
    p
}

/// Review S6: nothing stopped a captured packet from being replayed. A packet sealed more than
/// the replay window (60 s) before or after our clock is dropped, counted, and the sender's
/// skew reported once, for one log line.
#[test]
fn a_packet_sealed_outside_the_replay_window_is_dropped_counted_and_reported_once() {
    let mut a = member_a();
    let now = 100_000;
    let wall = wall_ms_at_zero() + now;
    let fx = a.handle_packet(t(now), ping_sealed_at("c", 3, wall - 59_000));
    assert_eq!(sends(&fx).len(), 1, "59 s old: answered");

    let fx = a.handle_packet(t(now), ping_sealed_at("c", 3, wall - 61_000));
    assert_eq!(
        fx,
        vec![Effect::Notify(Notification::ClockSkew {
            from: "c".into(),
            skew_ms: 61_000
        })]
    );
    let fx = a.handle_packet(t(now), ping_sealed_at("c", 3, wall + 90_000));
    assert_eq!(fx, vec![], "from the future too, reported once");
    assert_eq!(a.stats().stale_packets, 2);

    // Once its packets pass again, a new disagreement is reported again.
    a.handle_packet(t(now), ping_sealed_at("c", 3, wall));
    let fx = a.handle_packet(t(now), ping_sealed_at("c", 3, wall - 70_000));
    assert_eq!(fx.len(), 1, "{fx:?}");
}

/// Review S6: replies went to the datagram's source, so a replayed Join with a spoofed source
/// made a member send its reply to a victim. The driver no longer passes the source at all:
/// every reply goes to the sealed sender address.
#[test]
fn replies_go_to_the_sealed_sender_address() {
    let mut a = member_a();
    let fx = a.handle_packet(t(0), packet("z", 9, Body::Join, vec![alive("z", 9, 1)]));
    assert!(sends(&fx).iter().all(|(to, _)| *to == 9), "{fx:?}");
    let fx = a.handle_packet(t(0), ping_sealed_at("c", 3, wall_ms_at_zero()));
    assert_eq!(sends(&fx), vec![(3, Body::Ack { seq: 1 })]);
}

/// Sealed size of `p` on the wire.
fn wire_len(p: &Packet<u32>) -> usize {
    postcard::to_allocvec(p).unwrap().len() + heck_swim::wire::OVERHEAD
}

/// Review S2/S4: every queued payload rode on every packet with no byte budget, so a big one
/// made Pings and Acks fail to seal and their sender got suspected.
#[test]
fn every_packet_fits_the_byte_budget_however_many_payloads_are_queued() {
    let mut a = member_a();
    for i in 0..5u8 {
        a.broadcast_payload(vec![i; 900]).unwrap();
    }
    let mut delivered = 0;
    for i in 0..40 {
        let fx = a.handle_packet(t(i), ping_sealed_at("b", 2, wall_ms_at_zero()));
        let Some(Effect::Send { packet: p, .. }) = fx.first() else {
            panic!("{fx:?}")
        };
        assert!(wire_len(p) <= 1400, "{} bytes", wire_len(p));
        delivered += p.payloads.len();
    }
    assert!(delivered >= 5, "each payload still went out: {delivered}");
}

#[test]
fn a_payload_too_large_for_one_packet_is_refused_for_the_stream_transport() {
    let mut a = member_a();
    let max = a.max_payload_len();
    assert!(max > 1000 && max < 1400, "{max}");
    assert!(a.broadcast_payload(vec![0; max]).is_ok());
    assert_eq!(
        a.broadcast_payload(vec![0; max + 1]),
        Err(heck_swim::PayloadTooLarge { len: max + 1, max })
    );
}

/// Review S4: the join reply was the whole member list in one datagram (past ~1,000 members
/// it silently failed). It is now a sample that fits; push-pull carries the full state.
#[test]
fn a_join_reply_from_a_large_cluster_fits_one_datagram() {
    let names: Vec<String> = (10..400).map(|i| format!("member-{i}")).collect();
    let known: Vec<(&str, u32)> = names
        .iter()
        .zip(10..)
        .map(|(n, a)| (n.as_str(), a))
        .collect();
    let mut a = member_knowing(&known);
    let fx = a.handle_packet(t(1), packet("z", 9, Body::Join, vec![alive("z", 9, 1)]));
    let Some(Effect::Send { to: 9, packet: p }) =
        fx.iter().find(|e| matches!(e, Effect::Send { .. }))
    else {
        panic!("{fx:?}")
    };
    assert!(wire_len(p) <= 1400, "{} bytes", wire_len(p));
    let Body::JoinReply { members } = &p.body else {
        panic!("{p:?}")
    };
    assert_eq!(members[0].name, "a", "the replier first");
    assert!(members.len() > 10, "as many as fit: {}", members.len());
}

fn dead(name: &str, inc: u64, from: &str) -> Update<u32> {
    Update::Dead {
        name: name.into(),
        inc,
        from: from.into(),
    }
}

fn state_of(s: &Swim<u32>, name: &str) -> Option<(State, u64)> {
    s.members()
        .find(|m| m.name == name)
        .map(|m| (m.state, m.incarnation))
}

/// Review S5: with no two-way anti-entropy, the two sides of a healed partition each kept the
/// other dead until a lucky re-announce. Two full-state exchanges, and nothing else, converge.
#[test]
fn a_partitioned_then_healed_pair_converges_through_push_pull_alone() {
    let mut a = Swim::new("a", 1, 1, Config::lan(), 1).unwrap();
    let mut b = Swim::new("b", 2, 1, Config::lan(), 2).unwrap();
    a.start(t(0), vec![]);
    b.start(t(0), vec![]);
    a.handle_packet(t(0), packet("b", 2, Body::Gossip, vec![alive("b", 2, 1)]));
    b.handle_packet(t(0), packet("a", 1, Body::Gossip, vec![alive("a", 1, 1)]));
    // During the partition each side heard the other declared dead.
    a.handle_packet(t(10), packet("c", 3, Body::Gossip, vec![dead("b", 1, "c")]));
    b.handle_packet(t(10), packet("d", 4, Body::Gossip, vec![dead("a", 1, "d")]));
    assert_eq!(state_of(&a, "b"), Some((State::Dead, 1)));

    // Healed: push-pull rounds, no datagram delivered.
    for round in 0..2 {
        let (sa, sb) = (a.local_state(), b.local_state());
        b.handle_push_pull(t(20 + round), sa, false);
        a.handle_push_pull(t(20 + round), sb, false);
    }
    assert_eq!(a.me().incarnation, 2, "a read its own death and refuted");
    assert_eq!(b.me().incarnation, 2, "b too");
    assert_eq!(state_of(&a, "b"), Some((State::Alive, 2)));
    assert_eq!(state_of(&b, "a"), Some((State::Alive, 2)));
}

/// memberlist's mergeState: a remote Dead merges as our own suspicion, a remote Left as left.
#[test]
fn push_pull_merges_dead_as_our_suspicion_and_left_as_left() {
    let mut a = member_a();
    let remote = PushPullState {
        from: "b".into(),
        members: vec![
            Member {
                name: "c".into(),
                addr: 3,
                incarnation: 1,
                state: State::Dead,
            },
            Member {
                name: "d".into(),
                addr: 4,
                incarnation: 1,
                state: State::Left,
            },
        ],
    };
    let fx = a.handle_push_pull(t(0), remote, false);
    assert!(fx.contains(&Effect::Notify(Notification::Suspect("c".into()))));
    assert!(fx.contains(&Effect::Notify(Notification::Left("d".into()))));
    assert_eq!(state_of(&a, "c"), Some((State::Suspect, 1)));
}

/// A node that reads its own suspicion in a push-pull refutes it (the JoinReply used to turn
/// Suspect into Alive, so a suspected node reading its own entry did not refute).
#[test]
fn a_node_reading_its_own_suspicion_in_a_push_pull_refutes_it() {
    let mut a = member_a();
    let remote = PushPullState {
        from: "b".into(),
        members: vec![Member {
            name: "a".into(),
            addr: 1,
            incarnation: 1,
            state: State::Suspect,
        }],
    };
    a.handle_push_pull(t(0), remote, false);
    assert_eq!(a.me().incarnation, 2);
    assert_eq!(a.stats().refutations, 1);
    let fx = a.handle_timer(t(200), Timer::Gossip);
    let Some(Effect::Send { packet: p, .. }) = fx.iter().find(|e| matches!(e, Effect::Send { .. }))
    else {
        panic!("{fx:?}")
    };
    assert!(p.updates.contains(&alive("a", 1, 2)), "{p:?}");
}

#[test]
fn the_push_pull_timer_names_a_random_alive_member_and_joining_pushes_to_every_seed() {
    let mut a = member_a();
    let fx = a.handle_timer(t(30_000), Timer::PushPull);
    let targets: Vec<u32> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::PushPull { to, join: false } => Some(*to),
            _ => None,
        })
        .collect();
    assert!(matches!(targets[..], [2..=4]), "{fx:?}");
    assert!(fx.contains(&Effect::Schedule {
        after: Duration::from_secs(30),
        timer: Timer::PushPull
    }));

    let mut z = Swim::new("z", 9, 1, Config::lan(), 3).unwrap();
    let fx = z.start(t(0), vec![1, 2]);
    assert!(fx.contains(&Effect::PushPull { to: 1, join: true }));
    assert!(fx.contains(&Effect::PushPull { to: 2, join: true }));
}

#[test]
fn the_push_pull_state_round_trips_through_postcard() {
    let a = member_a();
    let state = a.local_state();
    assert_eq!(state.members.len(), 4, "b, c, d and a itself");
    let bytes = postcard::to_allocvec(&state).unwrap();
    assert_eq!(
        postcard::from_bytes::<PushPullState<u32>>(&bytes).unwrap(),
        state
    );
}

/// Review S5: a join reply turned Suspect into Alive, so a suspected node reading its own
/// entry there did not refute. It merges like a push-pull now.
#[test]
fn a_member_reading_its_own_suspicion_in_a_join_reply_refutes_it() {
    let mut a = member_a();
    let me_suspected = Member {
        name: "a".into(),
        addr: 1,
        incarnation: 1,
        state: State::Suspect,
    };
    a.handle_packet(
        t(0),
        packet(
            "b",
            2,
            Body::JoinReply {
                members: vec![me_suspected],
            },
            vec![],
        ),
    );
    assert_eq!(a.me().incarnation, 2);
}
