//! SWIM in the deterministic simulator: crash detection, no false deaths under loss, and a
//! CPU-starved member that accuses nobody (Lifeguard).
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use heck_sim::{Fault, Net, Sim};
use heck_swim::sim::SimMember;
use heck_swim::{Config, State};

const TICK: Duration = Duration::from_millis(10);

fn cluster(n: usize, config: Config, loss: f64, seed: u64) -> Sim<SimMember> {
    let net = Net {
        loss,
        duplicate: 0.0,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(10),
    };
    Sim::new(n, seed, TICK, net, move |i, restarts| {
        SimMember::new(
            i,
            u64::from(restarts) + 1,
            config,
            if i == 0 { vec![] } else { vec![0] },
            seed,
        )
    })
}

fn everyone_knows_everyone(sim: &Sim<SimMember>, n: usize) -> bool {
    sim.nodes()
        .iter()
        .flatten()
        .all(|m| m.swim.live().count() == n - 1)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_crashed_member_is_declared_dead_by_everyone_within_five_seconds_fast_profile() {
    let n = 20;
    let mut sim = cluster(n, Config::fast(), 0.0, 7);
    assert!(
        sim.run_until_true(secs(30), |s| everyone_knows_everyone(s, n))
            .is_some(),
        "cluster formed"
    );
    let crash_at = sim.now() + secs(1);
    sim.at(crash_at, Fault::Crash(5));
    let all_down = sim.run_until_true(crash_at + secs(30), |s| {
        s.nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .all(|(_, m)| m.as_ref().is_some_and(|m| m.downs.contains_key("node-5")))
    });
    let took = all_down.expect("detected") - crash_at;
    assert!(took <= secs(5), "took {took:?}");
}

#[test]
fn ten_percent_loss_for_two_minutes_kills_nobody() {
    let n = 20;
    let mut sim = cluster(n, Config::fast(), 0.10, 11);
    sim.run_until(secs(120));
    for m in sim.nodes().iter().flatten() {
        assert!(
            m.downs.is_empty() && m.down_notifications == 0,
            "{} saw {:?} die ({} down notifications, {} refuted)",
            m.swim.me().name,
            m.downs,
            m.down_notifications,
            m.refuted_downs
        );
        assert_eq!(m.swim.live().count(), n - 1);
    }
}

#[test]
fn a_starved_member_accuses_nobody_into_death() {
    let n = 12;
    let mut sim = cluster(n, Config::fast(), 0.0, 3);
    assert!(
        sim.run_until_true(secs(30), |s| everyone_knows_everyone(s, n))
            .is_some()
    );
    // Member 4 is overloaded: it gets to each packet 300 ms after it arrives, three times the
    // probe timeout, so every ack it waits for looks late.
    sim.node_mut(4).unwrap().starved = Some(Duration::from_millis(300));
    sim.run_until(sim.now() + secs(60));
    for (i, m) in sim.nodes().iter().enumerate() {
        let m = m.as_ref().unwrap();
        let wrongly_dead: Vec<&String> =
            m.downs.keys().filter(|k| k.as_str() != "node-4").collect();
        assert!(
            wrongly_dead.is_empty(),
            "node {i} saw healthy members die: {wrongly_dead:?}"
        );
    }
    let starved = sim.nodes()[4].as_ref().unwrap();
    assert!(
        starved.max_awareness > 0,
        "Lifeguard: the starved member knew it was the slow one"
    );
    assert!(starved.swim.stats().failed_probes > 0, "it did miss acks");
}

#[test]
fn a_restarted_member_rejoins_and_a_partition_heals() {
    let n = 10;
    let mut sim = cluster(n, Config::fast(), 0.0, 5);
    assert!(
        sim.run_until_true(secs(30), |s| everyone_knows_everyone(s, n))
            .is_some()
    );
    let t = sim.now();
    sim.at(t + secs(1), Fault::Crash(3));
    sim.at(t + secs(10), Fault::Restart(3));
    sim.at(t + secs(12), Fault::Partition(vec![(0..5).collect()]));
    sim.at(t + secs(30), Fault::Heal);
    sim.run_until(t + secs(31));
    let healed = sim.run_until_true(t + secs(90), |s| {
        s.nodes()
            .iter()
            .flatten()
            .all(|m| m.swim.members().filter(|x| x.state == State::Alive).count() == n - 1)
    });
    assert!(
        healed.is_some(),
        "everyone alive to everyone again after the heal"
    );
}

/// Review S1 in the simulator: a member dies in a cluster of 11 that grows to 40 while it is
/// suspected; it must still be declared dead by every original member.
#[test]
fn a_member_killed_while_the_cluster_grows_from_11_to_40_is_declared_dead() {
    let n = 40;
    let mut sim = cluster(n, Config::fast(), 0.0, 13);
    for i in 11..n {
        sim.at(Duration::ZERO, Fault::Crash(i));
    }
    let formed = sim.run_until_true(secs(30), |s| {
        s.nodes()
            .iter()
            .flatten()
            .all(|m| m.swim.live().count() == 10)
    });
    assert!(formed.is_some(), "the first 11 formed a cluster");
    let t = sim.now();
    sim.at(t + secs(1), Fault::Crash(5));
    let suspected = sim.run_until_true(t + secs(30), |s| {
        s.nodes().iter().flatten().any(|m| {
            m.swim
                .members()
                .any(|x| x.name == "node-5" && x.state == State::Suspect)
        })
    });
    let t = suspected.expect("someone suspects node-5");
    for i in 11..n {
        sim.at(t, Fault::Restart(i));
    }
    let dead_everywhere = sim.run_until_true(t + secs(120), |s| {
        s.nodes()[..11]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .all(|(_, m)| m.as_ref().is_some_and(|m| m.downs.contains_key("node-5")))
    });
    assert!(
        dead_everywhere.is_some(),
        "every original member declared node-5 dead"
    );
}

/// Review S4: no packet over the byte budget, in a cluster of 60 that formed by joining through
/// one seed while payloads were being broadcast.
#[test]
fn in_a_cluster_of_60_no_packet_exceeds_the_byte_budget() {
    let n = 60;
    let mut sim = cluster(n, Config::fast(), 0.0, 17);
    for i in 0..10 {
        if let Some(m) = sim.node_mut(i) {
            for j in 0..3u8 {
                m.swim.broadcast_payload(vec![j; 1000]).unwrap();
            }
        }
    }
    let formed = sim.run_until_true(secs(60), |s| everyone_knows_everyone(s, n));
    assert!(formed.is_some(), "cluster formed");
    for (i, m) in sim.nodes().iter().enumerate() {
        let m = m.as_ref().unwrap();
        assert!(m.max_packet_bytes <= 1400, "{}", m.max_packet_bytes);
        if i < 10 {
            assert!(m.max_packet_bytes > 1000, "its payloads did ride");
        }
    }
}
