//! heck's SWIM + Lifeguard against foca 2.0 (SWIM without Lifeguard), in the same simulator.
//!
//! Run: `cargo bench -p heck-swim`. Both use their LAN parameters (probe 1 s, timeout/RTT
//! 500 ms, 3 indirect probes) unless a row says "fast". The network delays every message by
//! 1–10 ms; loss is per message.
//! * Detection: crash one member of a formed cluster; for each other member, the time until it
//!   marks the crashed one dead. p50/p99 over every (run, observer); "all" is the time until the
//!   last member knows, worst of the runs.
//! * False deaths: 10 simulated minutes with no crash at all; **every** "down" notification about a
//!   member that is in fact running is a false death, whether or not it was later refuted (heck
//!   refutes by raising its incarnation; foca rejoins under a renewed identity; both count).
//!   Five seeds per row, min/median/max.
//!
//! foca gets its best documented configuration: `Config::new_lan` (periodic announce, periodic
//! announce to down members, periodic gossip), a renewable identity (`FocaId`: address plus a
//! bump, so a member declared down rejoins, as foca's docs recommend), and a harness that
//! re-announces every 2 s until the member has joined (foca's own periodic announce only runs
//! once a member knows someone). A second foca row uses heck's suspicion timeout (memberlist's
//! maximum, 6 × 4 × max(1, log10 m) s, the bound heck reaches with no confirmations), so the
//! comparison separates "longer suspicion" from "Lifeguard".
// A bench reads time; the simulator is virtual-time, so this only times the whole run.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Foca, Identity, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer,
};
use heck_sim::{Fault, Net, NodeId, Outbox, Process, Sim};
use heck_swim::Config;
use heck_swim::sim::SimMember;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

const TICK: Duration = Duration::from_millis(10);

/// What the harness needs from either implementation.
trait Observed: Process {
    /// Members this one has seen declared dead, with when.
    fn downs(&self) -> Vec<(NodeId, Duration)>;
    /// How many members it considers alive (not counting itself).
    fn alive(&self) -> usize;
    /// Every down notification it raised, including those refuted later.
    fn down_events(&self) -> usize;
}

impl Observed for SimMember {
    fn downs(&self) -> Vec<(NodeId, Duration)> {
        self.downs
            .iter()
            .filter_map(|(name, t)| name.strip_prefix("node-")?.parse().ok().map(|i| (i, *t)))
            .collect()
    }
    fn alive(&self) -> usize {
        self.swim.live().count()
    }
    fn down_events(&self) -> usize {
        usize::try_from(self.down_notifications).unwrap_or(usize::MAX)
    }
}

fn addr(i: NodeId) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10_000 + i as u16)
}

fn node_of(a: &SocketAddrV4) -> NodeId {
    usize::from(a.port() - 10_000)
}

/// A foca identity that can renew: the address plus a bump. foca rejoins under `renew()` when
/// it learns it was declared down; a plain `SocketAddrV4` (renew = None) never could.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FocaId {
    addr: SocketAddrV4,
    bump: u16,
}

impl Identity for FocaId {
    type Addr = SocketAddrV4;
    fn renew(&self) -> Option<Self> {
        Some(FocaId {
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }
    fn addr(&self) -> SocketAddrV4 {
        self.addr
    }
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The newer bump wins (wrapping, as the bump may wrap in a very long run).
        self.bump.wrapping_sub(adversary.bump) < u16::MAX / 2
    }
}

/// How often the harness re-announces a member that has not joined yet.
const FOCA_REANNOUNCE: Duration = Duration::from_secs(2);

struct FocaMember {
    foca: Foca<FocaId, PostcardCodec, StdRng, NoCustomBroadcast>,
    rt: AccumulatingRuntime<FocaId>,
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    pending: BTreeMap<u64, Timer<FocaId>>,
    seq: u64,
    seed: Option<FocaId>,
    next_announce: Duration,
    /// First time each member was reported down (never forgotten: detection reads it).
    downs: BTreeMap<NodeId, Duration>,
    /// Every down notification, refuted later or not.
    down_events: usize,
}

impl FocaMember {
    fn new(i: NodeId, config: foca::Config, seed: u64) -> FocaMember {
        FocaMember {
            foca: Foca::new(
                FocaId {
                    addr: addr(i),
                    bump: 0,
                },
                config,
                StdRng::seed_from_u64(seed ^ i as u64),
                PostcardCodec,
            ),
            rt: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            seed: (i != 0).then(|| FocaId {
                addr: addr(0),
                bump: 0,
            }),
            next_announce: Duration::ZERO,
            downs: BTreeMap::new(),
            down_events: 0,
        }
    }

    fn drain(&mut self, now: Duration, out: &mut Outbox<Vec<u8>>) {
        while let Some((to, bytes)) = self.rt.to_send() {
            out.send(node_of(&to.addr), bytes.to_vec());
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.seq += 1;
            self.timers.push(Reverse((now + after, self.seq)));
            self.pending.insert(self.seq, timer);
        }
        while let Some(n) = self.rt.to_notify() {
            if let OwnedNotification::MemberDown(m) = n {
                self.down_events += 1;
                self.downs.entry(node_of(&m.addr)).or_insert(now);
            }
        }
    }
}

impl Process for FocaMember {
    type Msg = Vec<u8>;
    fn on_message(
        &mut self,
        now: Duration,
        _from: NodeId,
        msg: Vec<u8>,
        out: &mut Outbox<Vec<u8>>,
    ) {
        let _ = self.foca.handle_data(&msg, &mut self.rt);
        self.drain(now, out);
    }
    fn on_tick(&mut self, now: Duration, _random: u64, out: &mut Outbox<Vec<u8>>) {
        // Retried join: until this member knows someone, announce to the seed every 2 s.
        if let Some(seed) = self.seed
            && self.foca.num_members() == 0
            && now >= self.next_announce
        {
            self.next_announce = now + FOCA_REANNOUNCE;
            let _ = self.foca.announce(seed, &mut self.rt);
        }
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, seq))) = self.timers.pop() else {
                break;
            };
            if let Some(t) = self.pending.remove(&seq) {
                let _ = self.foca.handle_timer(t, &mut self.rt);
            }
        }
        self.drain(now, out);
    }
}

impl Observed for FocaMember {
    fn downs(&self) -> Vec<(NodeId, Duration)> {
        self.downs.iter().map(|(i, t)| (*i, *t)).collect()
    }
    fn alive(&self) -> usize {
        self.foca.num_members()
    }
    fn down_events(&self) -> usize {
        self.down_events
    }
}

fn net(loss: f64) -> Net {
    Net {
        loss,
        duplicate: 0.0,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(10),
    }
}

/// Crash member m/2 once everyone knows everyone; per-observer detection times and the time
/// until the last one knows (None if not within 120 s).
fn detection<P: Observed>(mut sim: Sim<P>, m: usize) -> (Vec<f64>, Option<f64>) {
    let formed = sim.run_until_true(Duration::from_secs(120), |s| {
        s.nodes().iter().flatten().all(|p| p.alive() == m - 1)
    });
    if formed.is_none() {
        return (vec![], None);
    }
    let victim = m / 2;
    let crash = sim.now() + Duration::from_secs(2);
    sim.at(crash, Fault::Crash(victim));
    let all = sim.run_until_true(crash + Duration::from_secs(120), |s| {
        s.nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .all(|(_, p)| {
                p.as_ref()
                    .is_some_and(|p| p.downs().iter().any(|(d, _)| *d == victim))
            })
    });
    let times = sim
        .nodes()
        .iter()
        .flatten()
        .filter_map(|p| {
            p.downs()
                .iter()
                .find(|(d, _)| *d == victim)
                .map(|(_, t)| (*t - crash).as_secs_f64())
        })
        .collect();
    (times, all.map(|t| (t - crash).as_secs_f64()))
}

/// False deaths in a run with no crash: every down notification (refuted or not), distinct
/// members ever reported down, and the fewest members any member sees alive at the end (to
/// show the cluster did form and stayed formed).
struct FalseDeaths {
    events: usize,
    members: usize,
    fewest_alive: usize,
}

fn false_deaths<P: Observed>(mut sim: Sim<P>, minutes: u64) -> FalseDeaths {
    sim.run_until(Duration::from_secs(60 * minutes));
    let mut events = 0;
    let mut members = std::collections::BTreeSet::new();
    for p in sim.nodes().iter().flatten() {
        events += p.down_events();
        members.extend(p.downs().iter().map(|(d, _)| *d));
    }
    let fewest_alive = sim
        .nodes()
        .iter()
        .flatten()
        .map(Observed::alive)
        .min()
        .unwrap_or(0);
    FalseDeaths {
        events,
        members: members.len(),
        fewest_alive,
    }
}

fn heck_sim(m: usize, config: Config, loss: f64, seed: u64) -> Sim<SimMember> {
    Sim::new(m, seed, TICK, net(loss), move |i, r| {
        SimMember::new(
            i,
            u64::from(r) + 1,
            config,
            if i == 0 { vec![] } else { vec![0] },
            seed,
        )
    })
}

/// foca's LAN configuration for `m` members; with `heck_suspicion`, its suspicion timeout is
/// heck's longest one (memberlist's maximum: 6 × min, min = 4 × max(1, log10 m) probe periods).
fn foca_config(m: usize, heck_suspicion: bool) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(m as u32).unwrap());
    if heck_suspicion {
        let min = 4.0 * (m as f64).log10().max(1.0);
        config.suspect_to_down_after = Duration::from_secs_f64(6.0 * min);
    }
    config
}

fn foca_sim(m: usize, config: foca::Config, loss: f64, seed: u64) -> Sim<FocaMember> {
    Sim::new(m, seed, TICK, net(loss), move |i, _| {
        FocaMember::new(i, config.clone(), seed)
    })
}

/// "min / median / max" of a few runs.
fn spread(mut v: Vec<usize>) -> String {
    v.sort_unstable();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(lo), Some(mid), Some(hi)) => format!("{lo} / {mid} / {hi}"),
        _ => "-".into(),
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: u64 = if quick { 1 } else { 5 };
    let sizes: &[usize] = if quick { &[10] } else { &[10, 50, 200] };
    let started = std::time::Instant::now();

    println!("| detection (crash → dead) | members | p50 | p99 | all members know (worst run) |");
    println!("|---|---|---|---|---|");
    for &m in sizes {
        for (label, kind) in [("heck LAN", 0), ("heck fast", 1), ("foca LAN", 2)] {
            let mut times = Vec::new();
            let mut worst: f64 = 0.0;
            let mut missed = 0;
            for seed in 0..runs {
                let (t, all) = match kind {
                    0 => detection(heck_sim(m, Config::lan(), 0.0, seed), m),
                    1 => detection(heck_sim(m, Config::fast(), 0.0, seed), m),
                    _ => detection(foca_sim(m, foca_config(m, false), 0.0, seed), m),
                };
                times.extend(t);
                match all {
                    Some(a) => worst = worst.max(a),
                    None => missed += 1,
                }
            }
            let note = if missed > 0 {
                format!(" ({missed} runs not within 120 s)")
            } else {
                String::new()
            };
            println!(
                "| {label} | {m} | {:.2} s | {:.2} s | {:.2} s{note} |",
                pct(&mut times.clone(), 0.5),
                pct(&mut times, 0.99),
                worst
            );
        }
    }

    let minutes = if quick { 1 } else { 10 };
    let m = if quick { 10 } else { 50 };
    let seeds: u64 = if quick { 1 } else { 5 };
    println!(
        "\n| false deaths over {minutes} simulated minutes, {m} members, no crash, {seeds} seeds | loss | down notifications (min / median / max) | distinct members reported down | fewest alive seen by a member at the end (worst seed) |"
    );
    println!("|---|---|---|---|---|");
    for loss in [0.0, 0.05, 0.10, 0.30] {
        for (label, kind) in [
            ("heck LAN", 0),
            ("foca LAN", 1),
            ("foca LAN, heck's suspicion timeout", 2),
        ] {
            let runs: Vec<FalseDeaths> = (1..=seeds)
                .map(|seed| match kind {
                    0 => false_deaths(heck_sim(m, Config::lan(), loss, seed), minutes),
                    1 => false_deaths(foca_sim(m, foca_config(m, false), loss, seed), minutes),
                    _ => false_deaths(foca_sim(m, foca_config(m, true), loss, seed), minutes),
                })
                .collect();
            println!(
                "| {label} | {:.0}% | {} | {} | {} of {} |",
                loss * 100.0,
                spread(runs.iter().map(|r| r.events).collect()),
                spread(runs.iter().map(|r| r.members).collect()),
                runs.iter().map(|r| r.fewest_alive).min().unwrap_or(0),
                m - 1
            );
        }
    }
    eprintln!("(bench wall time {:.1} s)", started.elapsed().as_secs_f64());
}
