//! One or two `Cluster`s driven by hand: exact effects for start, settle, membership changes,
//! writes, handover and the conflict rule's worked example (docs/protocols/cluster.md).
#![allow(clippy::unwrap_used)]
use std::time::{Duration, SystemTime};

use heck_check::{CheckState, Status, TargetName, TargetSpec, Thresholds};
use heck_cluster::adapter::check::first_due;
use heck_cluster::sim::{at, targets};
use heck_cluster::{Cluster, Config, Effect, Identity, MemberEvent, NodeName, SyncBody, Timer};
use heck_swim::{Body, Packet, Update};

const S: Duration = Duration::from_secs(1);

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

fn node(n: &str, addr: usize, specs: &[TargetSpec]) -> Cluster<usize> {
    let id = Identity {
        name: name(n),
        addr,
        incarnation: 1,
        epoch: 1,
        seed: addr as u64,
    };
    Cluster::new(Config::fast(), id, specs.to_vec()).unwrap()
}

fn th(specs: &[TargetSpec]) -> Thresholds {
    specs[0].thresholds
}

/// A check state after `results` (true = success) observed at `at`.
fn state_after(results: &[bool], at: Duration, th: Thresholds) -> CheckState {
    let t = SystemTime::UNIX_EPOCH + at;
    let mut s = CheckState::new(t);
    for &r in results {
        s.observe(r, t, th);
    }
    s
}

fn owns(fx: &[Effect<usize>]) -> Vec<TargetName> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Own { target, .. } => Some(target.clone()),
            _ => None,
        })
        .collect()
}

fn disowns(fx: &[Effect<usize>]) -> Vec<TargetName> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Disown { target } => Some(target.clone()),
            _ => None,
        })
        .collect()
}

/// A SWIM packet from `from` carrying `updates` (as gossip).
fn gossip(from: &str, addr: usize, updates: Vec<Update<usize>>) -> Packet<usize> {
    Packet {
        from: from.into(),
        from_addr: addr,
        // Sealed at time zero: inside the 60 s replay window of every `now` these tests use.
        sent_at_ms: 0,
        body: Body::Gossip,
        updates,
        payloads: Vec::new(),
    }
}

fn alive(n: &str, addr: usize) -> Update<usize> {
    Update::Alive {
        name: n.into(),
        addr,
        inc: 1,
    }
}

#[test]
fn a_lone_node_owns_every_target_at_once_on_its_phase_slot_from_unknown() {
    let specs = targets(3, S, 2, 2);
    let mut a = node("a", 0, &specs);
    let now = 100 * S + S / 3;
    let fx = a.start(at(now), Vec::new());
    let own: Vec<Effect<usize>> = fx
        .into_iter()
        .filter(|e| matches!(e, Effect::Own { .. }))
        .collect();
    let want: Vec<Effect<usize>> = specs
        .iter()
        .map(|s| Effect::Own {
            target: s.name.clone(),
            state: CheckState::new(SystemTime::UNIX_EPOCH + now),
            first_due: first_due(s, now),
        })
        .collect();
    assert_eq!(own, want);
}

#[test]
fn a_joiner_owns_nothing_until_its_settle_period_ends() {
    let specs = targets(3, S, 2, 2);
    let mut b = node("b", 1, &specs);
    let fx = b.start(at(S), vec![0]);
    assert!(owns(&fx).is_empty());
    assert!(fx.contains(&Effect::Schedule {
        after: Config::fast().settle,
        timer: Timer::Settle
    }));
    let fx = b.handle_timer(at(2 * S), Timer::Settle);
    assert_eq!(owns(&fx).len(), 3, "still alone after settling: owns all");
}

#[test]
fn a_check_writes_only_when_the_status_changes() {
    let specs = targets(1, S, 2, 2);
    let t = specs[0].name.clone();
    let mut a = node("a", 0, &specs);
    a.start(at(S), Vec::new());
    let fx = a.handle_check(at(2 * S), &t, &state_after(&[true], 2 * S, th(&specs)));
    assert!(
        fx.is_empty(),
        "one success of rise 2: still unknown, nothing to write"
    );
    let healthy = state_after(&[true, true], 3 * S, th(&specs));
    let fx = a.handle_check(at(3 * S), &t, &healthy);
    assert_eq!(a.stats().writes, 1);
    let changed = a.answer(&t).unwrap().clone();
    assert_eq!(
        fx,
        vec![
            Effect::Changed {
                target: t.clone(),
                answer: changed.clone()
            },
            Effect::Schedule {
                after: Config::fast().push_delay,
                timer: Timer::Push
            },
        ]
    );
    assert_eq!(changed.status, Status::Healthy);
    assert_eq!(changed.observer, Some(name("a")));
    let fx = a.handle_check(
        at(4 * S),
        &t,
        &state_after(&[true, true, true], 4 * S, th(&specs)),
    );
    assert!(fx.is_empty(), "healthy again: no write");
    assert_eq!(a.stats().writes, 1);
}

#[test]
fn a_member_coming_up_takes_exactly_its_targets_and_gives_them_back_when_it_dies() {
    let specs = targets(40, S, 2, 2);
    let mut a = node("a", 0, &specs);
    a.start(at(S), Vec::new());
    let view = heck_ownership::View::new(vec![
        heck_ownership::Member::new("a"),
        heck_ownership::Member::new("b"),
    ])
    .unwrap();
    let bs: Vec<TargetName> = specs
        .iter()
        .filter(|s| view.priority(s.name.as_str())[0].name() == "b")
        .map(|s| s.name.clone())
        .collect();
    assert!(!bs.is_empty());

    let fx = a.handle_swim(at(2 * S), gossip("b", 1, vec![alive("b", 1)]));
    let mut lost = disowns(&fx);
    lost.sort();
    let mut want = bs.clone();
    want.sort();
    assert_eq!(lost, want, "exactly b's targets move");
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Sync { to: 1, msg } if matches!(msg.body, SyncBody::Hello { .. }))
    ));
    assert!(fx.contains(&Effect::Member {
        name: name("b"),
        event: MemberEvent::Live
    }));

    let dead = Update::Dead {
        name: "b".into(),
        inc: 1,
        from: "a".into(),
    };
    let fx = a.handle_swim(at(3 * S), gossip("b", 1, vec![dead]));
    let mut back = owns(&fx);
    back.sort();
    assert_eq!(back, want, "and only they come back");
}

/// Two clusters `a` (address 0) and `b` (address 1) and a wire between them that delivers
/// every SWIM and sync message, and fires push timers at once (other timers are left alone).
struct Pair {
    nodes: [Cluster<usize>; 2],
    cut: bool,
}

impl Pair {
    fn new(specs: &[TargetSpec]) -> Pair {
        let mut p = Pair {
            nodes: [node("a", 0, specs), node("b", 1, specs)],
            cut: false,
        };
        let fa = p.nodes[0].start(at(S), Vec::new());
        let fb = p.nodes[1].start(at(S), vec![0]);
        p.deliver(S, 0, fa);
        p.deliver(S, 1, fb);
        let fx = p.nodes[1].handle_timer(at(S), Timer::Settle);
        p.deliver(S, 1, fx);
        p
    }

    /// Carry `fx` (produced by node `from`) until nothing is left to send.
    fn deliver(&mut self, now: Duration, from: usize, fx: Vec<Effect<usize>>) {
        let mut queue: Vec<(usize, Effect<usize>)> = fx.into_iter().map(|e| (from, e)).collect();
        while let Some((by, e)) = queue.pop() {
            let next = match e {
                Effect::Swim { to, packet } if !self.cut && to < 2 => {
                    (to, self.nodes[to].handle_swim(at(now), packet))
                }
                Effect::Sync { to, msg } if !self.cut && to < 2 => {
                    (to, self.nodes[to].handle_sync(at(now), msg))
                }
                Effect::Schedule {
                    timer: Timer::Push, ..
                } => (by, self.nodes[by].handle_timer(at(now), Timer::Push)),
                _ => continue,
            };
            queue.extend(next.1.into_iter().map(|e| (next.0, e)));
        }
    }

    /// Node `i` ran a sync round (resends what is unacknowledged).
    fn sync(&mut self, now: Duration, i: usize) {
        let fx = self.nodes[i].handle_timer(at(now), Timer::Sync);
        self.deliver(now, i, fx);
    }
}

#[test]
fn the_new_owner_continues_from_the_replicated_status_and_counters() {
    let specs = targets(40, S, 2, 3);
    let mut p = Pair::new(&specs);
    assert!(p.nodes[0].live_members().count() == 2 && p.nodes[1].live_members().count() == 2);
    let t = p.nodes[0].owned().next().unwrap().clone();
    let healthy = state_after(&[true, true], 5 * S, th(&specs));
    let fx = p.nodes[0].handle_check(at(5 * S), &t, &healthy);
    p.deliver(5 * S, 0, fx);
    let seen = p.nodes[1].answer(&t).unwrap();
    assert_eq!(
        (seen.status, seen.observer.clone()),
        (Status::Healthy, Some(name("a")))
    );

    // a dies: b takes t over from a's record, not from unknown.
    let dead = Update::Dead {
        name: "a".into(),
        inc: 1,
        from: "b".into(),
    };
    let fx = p.nodes[1].handle_swim(at(9 * S), gossip("a", 0, vec![dead]));
    let own = fx.iter().find_map(|e| match e {
        Effect::Own {
            target,
            state,
            first_due,
        } if *target == t => Some((state.clone(), *first_due)),
        _ => None,
    });
    let (state, due) = own.expect("b owns t now");
    assert_eq!(state, healthy);
    assert_eq!(
        due,
        first_due(&specs.iter().find(|s| s.name == t).unwrap().clone(), 9 * S)
    );
}

/// The worked example of docs/protocols/cluster.md: during a partition a (the owner) says
/// healthy and b (which took over) says unhealthy; after the heal both records are siblings,
/// every node answers a's (the owner's) and says contested, until a's next check writes a
/// record that has seen both.
#[test]
fn p1_says_healthy_p2_says_unhealthy_and_the_owners_next_check_settles_it() {
    let specs = targets(40, S, 1, 1);
    let mut p = Pair::new(&specs);
    let t = p.nodes[0].owned().next().unwrap().clone();
    let th = th(&specs);
    p.cut = true;
    // b declares a dead and takes t over; each side checks it and sees something else.
    let dead = Update::Dead {
        name: "a".into(),
        inc: 1,
        from: "b".into(),
    };
    let fx = p.nodes[1].handle_swim(at(5 * S), gossip("x", 9, vec![dead]));
    assert!(owns(&fx).contains(&t));
    let fx = p.nodes[0].handle_check(at(6 * S), &t, &state_after(&[true], 6 * S, th));
    p.deliver(6 * S, 0, fx);
    let fx = p.nodes[1].handle_check(at(7 * S), &t, &state_after(&[false], 7 * S, th));
    p.deliver(7 * S, 1, fx);
    assert_eq!(p.nodes[0].answer(&t).unwrap().status, Status::Healthy);
    assert_eq!(p.nodes[1].answer(&t).unwrap().status, Status::Unhealthy);

    // Heal: a refutes its death (a higher incarnation), b gives t back, deltas cross.
    p.cut = false;
    let back = Update::Alive {
        name: "a".into(),
        addr: 0,
        inc: 2,
    };
    let fx = p.nodes[1].handle_swim(at(10 * S), gossip("a", 0, vec![back]));
    assert!(disowns(&fx).contains(&t));
    p.deliver(10 * S, 1, fx);
    // The transfers lost in the partition are sent again after `resend_after` (2) rounds.
    for _ in 0..2 {
        p.sync(10 * S, 0);
        p.sync(10 * S, 1);
    }
    for n in &p.nodes {
        let a = n.answer(&t).unwrap();
        assert_eq!(n.siblings(&t).len(), 2);
        assert!(a.contested);
        assert_eq!(
            (a.status, a.observer.clone()),
            (Status::Healthy, Some(name("a"))),
            "the owner's sibling"
        );
    }
    // a's next check: same status, but contested, so it writes; the write has seen both.
    let fx = p.nodes[0].handle_check(at(11 * S), &t, &state_after(&[true, true], 11 * S, th));
    p.deliver(11 * S, 0, fx);
    for n in &p.nodes {
        let a = n.answer(&t).unwrap();
        assert_eq!(n.siblings(&t).len(), 1);
        assert!(!a.contested);
        assert_eq!(a.status, Status::Healthy);
    }
}

#[test]
fn a_restarted_peer_is_synced_with_even_if_its_random_epoch_is_smaller() {
    let specs = targets(4, S, 2, 2);
    let mut a = node("a", 0, &specs);
    a.start(at(S), Vec::new());
    a.handle_swim(at(2 * S), gossip("b", 1, vec![alive("b", 1)]));
    let hello = |epoch| heck_cluster::SyncMsg {
        from: name("b"),
        body: SyncBody::Hello {
            replica: heck_crdt::ReplicaId::new("b", epoch),
        },
    };
    let answered = |fx: &[Effect<usize>]| {
        fx.iter()
            .any(|e| matches!(e, Effect::Sync { to: 1, msg } if matches!(msg.body, SyncBody::Hello { .. })))
    };
    assert!(
        answered(&a.handle_sync(at(3 * S), hello(500))),
        "first incarnation"
    );
    assert!(
        answered(&a.handle_sync(at(4 * S), hello(7))),
        "restarted with a smaller epoch: new"
    );
    assert!(
        !answered(&a.handle_sync(at(5 * S), hello(500))),
        "a late hello of the old one is not"
    );
    assert!(
        !answered(&a.handle_sync(at(6 * S), hello(7))),
        "nor a repeated one"
    );
}

#[test]
fn a_bad_weight_or_a_forged_sender_is_refused() {
    let mut config = Config::fast();
    config.weights.insert(name("x"), -1.0);
    let id = Identity {
        name: name("a"),
        addr: 0usize,
        incarnation: 1,
        epoch: 1,
        seed: 1,
    };
    assert!(Cluster::new(config, id, Vec::new()).is_err());

    let mut a = node("a", 0, &[]);
    let forged = heck_cluster::SyncMsg {
        from: name("b"),
        body: SyncBody::Hello {
            replica: heck_crdt::ReplicaId::new("c", 1),
        },
    };
    assert!(a.handle_sync(at(S), forged).is_empty());
    assert_eq!(a.stats().sync_bad_sender, 1);
}

fn hello(from: &str, epoch: u64) -> heck_cluster::SyncMsg {
    heck_cluster::SyncMsg {
        from: name(from),
        body: SyncBody::Hello {
            replica: heck_crdt::ReplicaId::new(from, epoch),
        },
    }
}

fn peers(a: &Cluster<usize>) -> Vec<(String, u64)> {
    a.sync_peers()
        .map(|p| (p.name.to_string(), p.replica.epoch))
        .collect()
}

/// Review C2: a restarted peer's old incarnation stayed in the replica's peer set for good.
#[test]
fn a_restarted_peer_replaces_its_old_incarnation_among_the_sync_peers() {
    let mut a = node("a", 0, &targets(4, S, 2, 2));
    a.start(at(S), Vec::new());
    a.handle_swim(at(2 * S), gossip("b", 1, vec![alive("b", 1)]));
    a.handle_sync(at(3 * S), hello("b", 500));
    assert_eq!(peers(&a), vec![("b".to_string(), 500)]);
    a.handle_sync(at(4 * S), hello("b", 7));
    assert_eq!(peers(&a), vec![("b".to_string(), 7)], "500 is gone");
    a.handle_sync(at(5 * S), hello("b", 500));
    assert_eq!(
        peers(&a),
        vec![("b".to_string(), 7)],
        "and a late hello does not bring it back"
    );
}

/// Review C2: a dead member stayed a peer, so the groups it never acknowledged were kept (up to
/// `max_buffer`) and every peer that fell behind that far got full states.
#[test]
fn a_dead_member_stops_holding_back_the_buffer_and_becomes_a_peer_again_when_it_returns() {
    let specs = targets(1, S, 2, 2);
    let t = specs[0].name.clone();
    let mut a = node("a", 0, &specs);
    a.start(at(S), Vec::new());
    // A write of a's that b has not acknowledged (through the API: a status write would need
    // a to own the target, which depends on the hash).
    a.handle_swim(at(2 * S), gossip("b", 1, vec![alive("b", 1)]));
    a.handle_sync(at(3 * S), hello("b", 500));
    a.remove_target(at(4 * S), &t).unwrap();
    assert!(a.sync_stats().1 > 0, "b has not acked the deletion");

    let dead = Update::Dead {
        name: "b".into(),
        inc: 1,
        from: "a".into(),
    };
    a.handle_swim(at(5 * S), gossip("b", 1, vec![dead]));
    assert!(peers(&a).is_empty());
    assert_eq!(a.sync_stats().1, 0, "nobody left to wait for");
    a.handle_sync(at(6 * S), hello("b", 500));
    assert!(
        peers(&a).is_empty(),
        "a dead member's late hello does not make it a peer"
    );

    let back = Update::Alive {
        name: "b".into(),
        addr: 1,
        inc: 2,
    };
    a.handle_swim(at(7 * S), gossip("b", 1, vec![back]));
    a.handle_sync(at(8 * S), hello("b", 500));
    assert_eq!(
        peers(&a),
        vec![("b".to_string(), 500)],
        "refuted: a peer again"
    );
}

#[test]
fn only_a_check_that_may_change_something_is_reported_to_the_cluster() {
    use heck_cluster::report_check;
    let th = targets(1, S, 1, 1)[0].thresholds;
    let t0 = SystemTime::UNIX_EPOCH;
    let mut state = CheckState::new(t0);
    let transition = state.observe(true, t0, th);
    assert!(transition.is_some());
    assert!(report_check(true, Some((Status::Unknown, false)), &state));
    // Steady: healthy, and the answer says so.
    assert!(state.observe(true, t0, th).is_none());
    assert!(!report_check(false, Some((Status::Healthy, false)), &state));
    // The answer disagrees (another node's record), is contested, or is not known yet.
    assert!(report_check(
        false,
        Some((Status::Unhealthy, false)),
        &state
    ));
    assert!(report_check(false, Some((Status::Healthy, true)), &state));
    assert!(report_check(false, None, &state));
}
