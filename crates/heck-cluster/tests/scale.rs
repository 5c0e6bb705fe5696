//! The scale: 50 nodes, 10,000 targets at 10 s, 1% loss, LAN membership timings.
//! Long (about 70 s for both tests in release on 2 cores, 1.5 GB; 3.5 minutes before writes coalesced):
//! `cargo test --release -p heck-cluster --test scale -- --ignored --nocapture` prints the
//! measurements and asserts the bounds. `HECK_SCALE_M` / `HECK_SCALE_N` shrink it.
//! The second test (restarts during start-up, 50 × 2,000, about 13 s in release) guards the
//! full-state thinning of heck-crdt's `ORMap::news`: without any thinning it ran out of 6 GB.
#![allow(clippy::unwrap_used)]
use std::rc::Rc;
use std::time::Duration;

use heck_check::{Status, TargetName};
use heck_cluster::Config;
use heck_cluster::sim::invariants::*;
use heck_cluster::sim::{SimNode, Truth, targets};
use heck_sim::{Fault, Net, Sim};

const S: Duration = Duration::from_secs(1);

/// `m` nodes with LAN timings and `specs`, joining through nodes 0–2, on a network with 1% loss
/// and 0.2–5 ms of delay.
fn lan_cluster(m: usize, specs: Vec<heck_check::TargetSpec>, truth: Rc<Truth>) -> Sim<SimNode> {
    let net = Net {
        loss: 0.01,
        duplicate: 0.0,
        delay_min: Duration::from_micros(200),
        delay_max: Duration::from_millis(5),
    };
    Sim::new(m, 7, Duration::from_millis(50), net, move |id, restarts| {
        SimNode::new(
            id,
            restarts,
            Config::lan(),
            specs.clone(),
            vec![0, 1, 2],
            truth.clone(),
            7,
        )
    })
}

#[test]
#[ignore = "long: run with --release"]
fn fifty_nodes_ten_thousand_targets_one_percent_loss() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (m, n, interval) = (env("HECK_SCALE_M", 50), env("HECK_SCALE_N", 10_000), 10 * S);
    let specs = targets(n, interval, 2, 3);
    let names = specs.iter().map(|t| t.name.clone()).collect();
    let mut truth = Truth::new();
    // 100 flips between 150 s and 160 s, after start-up and the steady-state window.
    let flipped: Vec<TargetName> = (0..100)
        .map(|i| TargetName::new(format!("t{}", i * (n / 100))).unwrap())
        .collect();
    for (i, t) in flipped.iter().enumerate() {
        truth.set(t, 150 * S + Duration::from_millis(100 * i as u64), false);
    }
    let truth = Rc::new(truth);
    let t2 = truth.clone();
    let mut sim = lan_cluster(m, specs, t2);

    // Start-up, then a steady-state window with no status change.
    sim.run_until(90 * S);
    let (full, pending) = live(&sim).fold((0, 0), |(f, p), (_, nd)| {
        let (st, buffered) = nd.cluster.sync_stats();
        (f + st.full_states_sent, p + buffered)
    });
    eprintln!(
        "after start-up (90 s): {} bytes sent in all, {full} full states, {pending} delta groups pending",
        sim.stats().bytes
    );
    members_agree(&sim).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    let b0 = sim.stats().bytes;
    sim.run_until(120 * S);
    let steady = (sim.stats().bytes - b0) as f64 / 30.0 / m as f64;

    // Flips: visibility from the owner's write to the last node's answer.
    sim.run_until(190 * S);
    let mut lat: Vec<Duration> = flipped
        .iter()
        .map(|t| {
            let times: Vec<Duration> = live(&sim)
                .map(|(_, nd)| {
                    nd.last_change
                        .get(t)
                        .filter(|(_, s)| *s == Status::Unhealthy)
                        .map_or(Duration::MAX, |(at, _)| *at)
                })
                .collect();
            *times.iter().max().unwrap() - *times.iter().min().unwrap()
        })
        .collect();
    lat.sort();
    let p99 = lat[98];

    // A crash: time until each orphan is checked again.
    let orphans: Vec<TargetName> = sim.nodes()[17]
        .as_ref()
        .unwrap()
        .checking()
        .cloned()
        .collect();
    let crash = sim.now();
    let b1 = sim.stats().bytes;
    sim.at(crash, Fault::Crash(17));
    sim.run_until(crash + 90 * S);
    let failover = (sim.stats().bytes - b1) as f64 / 90.0 / (m - 1) as f64;
    let worst = orphans
        .iter()
        .map(|t| {
            live(&sim)
                .filter_map(|(_, nd)| {
                    nd.check_log
                        .iter()
                        .find(|(at, x)| *at > crash && x == t)
                        .map(|(at, _)| *at - crash)
                })
                .min()
                .unwrap_or(Duration::MAX)
        })
        .max()
        .unwrap();
    eprintln!(
        "m {m}, n {n}: steady {steady:.0} B/s per node; flip visible everywhere p50 {:?} p99 {p99:?} max {:?}; \
         crash: {} orphans, worst next check after {worst:?}; {failover:.0} B/s per node over the 90 s after the crash",
        lat[49],
        lat[99],
        orphans.len()
    );
    members_agree(&sim).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    no_target_lost(&sim, &names).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 40 * S).unwrap();
    nothing_contested(&sim).unwrap();
    assert!(p99 <= 2 * S, "p99 visibility {p99:?}");
    assert!(steady <= 20_000.0, "steady traffic {steady} B/s per node");
    // LAN detection at 50 members: the suspicion timeout is at most 6 × 6.8 s ≈ 41 s.
    assert!(
        worst <= 41 * S + 2 * S + interval,
        "an orphan waited {worst:?}"
    );
}

/// A restarted node is a new CRDT incarnation and gets the full state (in pieces). Restarted
/// during the start-up burst, while other nodes still lack entries, the full state is news to
/// them too: when heck-crdt passed a full state on whole, it spread as state-sized groups
/// through every buffer (5 restarts at 50 × 2,000: out of 6 GB). Thinned by `ORMap::news`:
/// 359 MB resident, 374 MB sent in all by 90 s (2026-12-03).
#[test]
#[ignore = "long: run with --release"]
fn five_restarts_during_start_up_do_not_flood_fifty_nodes_with_full_states() {
    let (m, n) = (50, 2_000);
    let specs = targets(n, 10 * S, 2, 3);
    let names = specs.iter().map(|t| t.name.clone()).collect();
    let truth = Rc::new(Truth::new());
    let mut sim = lan_cluster(m, specs, truth.clone());
    for i in 0..5u32 {
        let id = 20 + i as usize;
        sim.at(15 * S + i * S, Fault::Crash(id));
        sim.at(20 * S + i * S, Fault::Restart(id));
    }
    sim.run_until(90 * S);
    let bytes = sim.stats().bytes;
    // Pieces lost (1%) late in the burst wait for their resend, which backs off to 16 rounds
    // (3.2 s): 37 groups were still pending at 90 s, none at 96 s.
    sim.run_until(100 * S);
    let (full, pending) = live(&sim).fold((0, 0), |(f, p), (_, nd)| {
        let (st, buffered) = nd.cluster.sync_stats();
        (f + st.full_states_sent, p + buffered)
    });
    eprintln!(
        "after start-up with 5 restarts: {bytes} bytes sent in all by 90 s; at 100 s {full} full states, {pending} delta groups pending"
    );
    assert!(full > 0, "the restarts got full states");
    assert_eq!(pending, 0, "every buffer drained");
    assert!(bytes < 1 << 30, "{bytes} bytes sent by 90 s");
    members_agree(&sim).unwrap();
    exactly_r_owners(&sim, 1).unwrap();
    no_target_lost(&sim, &names).unwrap();
    answers_match_truth(&sim, &truth, sim.now(), 40 * S).unwrap();
}
