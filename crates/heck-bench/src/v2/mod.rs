//! What `v2-bench` computes: one version-1 agent and a cluster of version-2 agents checking the
//! same fleet, each measured over a window between two scrapes of every agent, then the
//! failover after a `kill -9`. The binary (`src/bin/v2_bench.rs`) starts the processes and
//! feeds these; the tests pin the rules a published figure depends on:
//! - a group's CPU is the sum of each agent's CPU *rate* over its own measured window (the
//!   agents are scraped one after the other, so their windows differ by the scrape times);
//! - checks per target per interval come from the fleet's own request counters, not from what
//!   the agents say they did, and a target checked more often than its grid allows is counted;
//! - a target of the killed node is "checked again" when the fleet's counter for it moves past
//!   its value at the kill;
//! - ownership is "settled" only when the owned counts sum to the target count, every node sees
//!   every member, and the counts did not move for several readings in a row.
pub mod args;

use std::collections::BTreeMap;

use crate::measure::{Scrape, rate, share};
use crate::procs::Proc;

/// One agent at one scrape: what `/metrics` said and what `/proc` said right after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSample {
    /// The scrape.
    pub scrape: Scrape,
    /// When the scrape was taken (the middle of the request), seconds from any fixed origin.
    pub at_s: f64,
    /// The agent's process, read right after the scrape.
    pub proc: Proc,
}

/// One agent between two of its samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentWindow {
    /// Checks completed.
    pub checks: f64,
    /// Of which succeeded.
    pub successes: f64,
    /// CPU seconds used.
    pub cpu_s: f64,
    /// Measured seconds between the two scrapes.
    pub elapsed_s: f64,
    /// Targets owned at the end (`None`: not in a cluster).
    pub owned: Option<f64>,
    /// Cluster bytes sent plus received, by kind.
    pub bytes: BTreeMap<String, f64>,
    /// Peak RSS at the end, KiB.
    pub hwm_kib: u64,
}

impl AgentWindow {
    /// The difference of two samples of one agent.
    pub fn between(before: &AgentSample, after: &AgentSample) -> AgentWindow {
        let mut bytes = BTreeMap::new();
        for (b, a) in [
            (&before.scrape.sent_bytes, &after.scrape.sent_bytes),
            (&before.scrape.received_bytes, &after.scrape.received_bytes),
        ] {
            for (kind, v) in a {
                *bytes.entry(kind.clone()).or_default() += v - b.get(kind).copied().unwrap_or(0.0);
            }
        }
        AgentWindow {
            checks: after.scrape.total() - before.scrape.total(),
            successes: after.scrape.successes() - before.scrape.successes(),
            cpu_s: after.proc.cpu_s - before.proc.cpu_s,
            elapsed_s: after.at_s - before.at_s,
            owned: after.scrape.owned,
            bytes,
            hwm_kib: after.proc.hwm_kib,
        }
    }

    /// CPU seconds per second (cores) over the window.
    pub fn cpu_rate(&self) -> f64 {
        rate(self.cpu_s, self.elapsed_s)
    }

    /// Checks per second over the window.
    pub fn check_rate(&self) -> f64 {
        rate(self.checks, self.elapsed_s)
    }
}

/// Several agents over one window each (a single agent is a group of one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// One window per agent.
    pub agents: Vec<AgentWindow>,
}

impl Group {
    /// The windows of every agent, `before[i]` to `after[i]`.
    pub fn between(before: &[AgentSample], after: &[AgentSample]) -> Group {
        Group {
            agents: before
                .iter()
                .zip(after)
                .map(|(b, a)| AgentWindow::between(b, a))
                .collect(),
        }
    }

    /// CPU seconds per second of the whole group: each agent's rate over its own window.
    pub fn cpu_rate(&self) -> f64 {
        self.agents.iter().map(AgentWindow::cpu_rate).sum()
    }

    /// Checks per second of the whole group.
    pub fn check_rate(&self) -> f64 {
        self.agents.iter().map(AgentWindow::check_rate).sum()
    }

    /// CPU seconds per 1,000 checks of the group; NaN when nothing was checked.
    pub fn cpu_per_1000(&self) -> f64 {
        crate::measure::cpu_per_1000(self.cpu_rate(), self.check_rate())
    }

    /// Successful share of every completed check.
    pub fn success_share(&self) -> Option<f64> {
        share(
            self.agents.iter().map(|a| a.successes).sum(),
            self.agents.iter().map(|a| a.checks).sum(),
        )
    }

    /// The smallest and largest share of the group's check rate one agent had.
    pub fn check_share_range(&self) -> Option<(f64, f64)> {
        let total = self.check_rate();
        min_max(
            self.agents
                .iter()
                .filter_map(|a| share(a.check_rate(), total)),
        )
    }

    /// The fewest and most targets one agent owned at the end.
    pub fn owned_range(&self) -> Option<(f64, f64)> {
        min_max(self.agents.iter().filter_map(|a| a.owned))
    }

    /// Cluster bytes (sent plus received) per node per second, by kind, averaged over the
    /// agents; the key `"all"` holds every kind together.
    pub fn bytes_per_node_s(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        let n = self.agents.len() as f64;
        for a in &self.agents {
            for (kind, b) in &a.bytes {
                let r = rate(*b, a.elapsed_s) / n;
                *out.entry(kind.clone()).or_default() += r;
                *out.entry("all".into()).or_default() += r;
            }
        }
        out
    }

    /// The most bytes per second one node sent and received, every kind together.
    pub fn max_bytes_per_node_s(&self) -> Option<f64> {
        min_max(
            self.agents
                .iter()
                .map(|a| rate(a.bytes.values().sum(), a.elapsed_s)),
        )
        .map(|(_, max)| max)
    }

    /// The largest peak RSS of one agent, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.agents.iter().map(|a| a.hwm_kib).max().unwrap_or(0)
    }

    /// The mean measured window of the agents, seconds.
    pub fn elapsed_s(&self) -> f64 {
        self.agents.iter().map(|a| a.elapsed_s).sum::<f64>() / self.agents.len().max(1) as f64
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `GET /fleet/hits`: requests per target in index order, as `[1, 2, 3]`.
pub fn parse_hits(text: &str) -> Option<Vec<u64>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|v| v.trim().parse().ok()).collect()
}

/// The fleet's view of a window: how often each target was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Hits {
    /// Targets counted.
    pub targets: usize,
    /// Checks per target per interval, the mean over every target (1.00 when each target is
    /// checked once per interval).
    pub per_interval: f64,
    /// Targets not checked at all in the window.
    pub unchecked: usize,
    /// Targets checked more often than their grid allows in the window (more than
    /// ⌈window / interval⌉ times): checked by two nodes at once.
    pub over_grid: usize,
    /// The seconds between the two reads of the counters (the window the grid is counted in:
    /// a window a few ms short of a multiple of the interval allows one check less).
    pub window_s: f64,
    /// The fewest and most requests one target got.
    pub min: u64,
    /// See `min`.
    pub max: u64,
}

/// The fleet's counters `before` and `after`, `elapsed_s` apart, with checks every
/// `interval_s`. `None` when the lists differ in length or nothing can be divided.
pub fn hits_between(
    before: &[u64],
    after: &[u64],
    elapsed_s: f64,
    interval_s: f64,
) -> Option<Hits> {
    if before.len() != after.len() || before.is_empty() || elapsed_s <= 0.0 || interval_s <= 0.0 {
        return None;
    }
    let expected = elapsed_s / interval_s;
    let grid_max = expected.ceil() as u64;
    let deltas: Vec<u64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect();
    Some(Hits {
        targets: deltas.len(),
        per_interval: deltas.iter().sum::<u64>() as f64 / deltas.len() as f64 / expected,
        unchecked: deltas.iter().filter(|&&d| d == 0).count(),
        over_grid: deltas.iter().filter(|&&d| d > grid_max).count(),
        window_s: elapsed_s,
        min: deltas.iter().copied().min().unwrap_or(0),
        max: deltas.iter().copied().max().unwrap_or(0),
    })
}

/// The failover, target by target: when each target of the killed node was first checked
/// again (its fleet counter moved past its value at the kill).
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    watched: Vec<usize>,
    baseline: Vec<u64>,
    moved_at_s: Vec<Option<f64>>,
}

impl Recovery {
    /// Watch the targets at `watched` (fleet indexes), from the counters at the kill.
    pub fn new(watched: Vec<usize>, at_kill: &[u64]) -> Recovery {
        let baseline = watched
            .iter()
            .map(|&i| at_kill.get(i).copied().unwrap_or(0))
            .collect();
        let moved_at_s = vec![None; watched.len()];
        Recovery {
            watched,
            baseline,
            moved_at_s,
        }
    }

    /// The counters read `at_s` seconds after the kill.
    pub fn observe(&mut self, hits: &[u64], at_s: f64) {
        for (k, &i) in self.watched.iter().enumerate() {
            if self.moved_at_s[k].is_none() && hits.get(i).is_some_and(|&h| h > self.baseline[k]) {
                self.moved_at_s[k] = Some(at_s);
            }
        }
    }

    /// Targets watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Targets not checked again yet.
    pub fn remaining(&self) -> usize {
        self.moved_at_s.iter().filter(|t| t.is_none()).count()
    }

    /// Seconds after the kill by which the share `q` (0..=1) of the watched targets had been
    /// checked again; `None` while fewer have.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut times: Vec<f64> = self.moved_at_s.iter().flatten().copied().collect();
        if self.watched.is_empty() {
            return None;
        }
        let need = ((q * self.watched.len() as f64).ceil() as usize).clamp(1, self.watched.len());
        if times.len() < need {
            return None;
        }
        times.sort_by(f64::total_cmp);
        times.get(need - 1).copied()
    }
}

/// Decides when a cluster's ownership has settled, from readings of every node's owned count
/// and member count.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    targets: usize,
    nodes: usize,
    need: usize,
    last: Option<Vec<usize>>,
    streak: usize,
}

impl Settle {
    /// `nodes` agents over `targets` targets; settled after `need` equal readings in a row.
    pub fn new(targets: usize, nodes: usize, need: usize) -> Settle {
        Settle {
            targets,
            nodes,
            need: need.max(1),
            last: None,
            streak: 0,
        }
    }

    /// One reading: per node, its owned targets and the members it sees (`None`: no answer).
    /// True once settled.
    pub fn observe(&mut self, owned: &[Option<usize>], members: &[Option<usize>]) -> bool {
        let owned: Option<Vec<usize>> = owned.iter().copied().collect();
        let complete = owned
            .as_ref()
            .is_some_and(|o| o.len() == self.nodes && o.iter().sum::<usize>() == self.targets)
            && members.len() == self.nodes
            && members.iter().all(|m| *m == Some(self.nodes));
        if !complete {
            self.last = None;
            self.streak = 0;
            return false;
        }
        if self.last == owned {
            self.streak += 1;
        } else {
            self.last = owned;
            self.streak = 1;
        }
        self.streak >= self.need
    }
}

/// The smallest, the median and the largest of `values`, NaN left out; `None` when none is left.
pub fn min_median_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((v[0], median, v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(checks: f64, cpu_s: f64, at_s: f64, owned: Option<f64>, sent: f64) -> AgentSample {
        let mut scrape = Scrape::default();
        scrape.checks.insert("success".into(), checks);
        scrape.owned = owned;
        if owned.is_some() {
            scrape.sent_bytes.insert("swim".into(), sent);
            scrape.received_bytes.insert("swim".into(), sent / 2.0);
            scrape.sent_bytes.insert("sync".into(), sent / 4.0);
        }
        AgentSample {
            scrape,
            at_s,
            proc: Proc {
                cpu_s,
                hwm_kib: 1_024,
                rss_kib: 1_024,
            },
        }
    }

    #[test]
    fn a_groups_cpu_is_the_sum_of_each_agents_rate_over_its_own_window() {
        // Agent a: 2 CPU-s over 10 s; agent b scraped later, 3 CPU-s over 12 s.
        let before = [
            sample(0.0, 0.0, 0.0, None, 0.0),
            sample(0.0, 1.0, 0.5, None, 0.0),
        ];
        let after = [
            sample(5_000.0, 2.0, 10.0, None, 0.0),
            sample(6_000.0, 4.0, 12.5, None, 0.0),
        ];
        let g = Group::between(&before, &after);
        assert!((g.cpu_rate() - (0.2 + 0.25)).abs() < 1e-12);
        assert!((g.check_rate() - 1_000.0).abs() < 1e-9);
        assert!((g.cpu_per_1000() - 0.45).abs() < 1e-12);
        assert_eq!(g.check_share_range(), Some((0.5, 0.5)));
        assert_eq!(g.success_share(), Some(1.0));
    }

    #[test]
    fn cluster_bytes_count_both_directions_per_node_per_second() {
        // Two nodes, 10 s each: node a 1,000 swim sent + 500 received + 250 sync sent; node b
        // twice that.
        let before = [
            sample(0.0, 0.0, 0.0, Some(1.0), 0.0),
            sample(0.0, 0.0, 0.0, Some(1.0), 0.0),
        ];
        let after = [
            sample(0.0, 0.0, 10.0, Some(3.0), 1_000.0),
            sample(0.0, 0.0, 10.0, Some(5.0), 2_000.0),
        ];
        let g = Group::between(&before, &after);
        let b = g.bytes_per_node_s();
        assert_eq!(b.get("swim"), Some(&((150.0 + 300.0) / 2.0)));
        assert_eq!(b.get("sync"), Some(&((25.0 + 50.0) / 2.0)));
        assert_eq!(b.get("all"), Some(&((175.0 + 350.0) / 2.0)));
        assert_eq!(g.max_bytes_per_node_s(), Some(350.0));
        assert_eq!(g.owned_range(), Some((3.0, 5.0)));
    }

    #[test]
    fn fleet_hits_parse_as_the_fleet_prints_them() {
        assert_eq!(parse_hits("[3, 0, 12]\n"), Some(vec![3, 0, 12]));
        assert_eq!(parse_hits("[]\n"), Some(vec![]));
        assert_eq!(parse_hits("[3, x]"), None);
        assert_eq!(parse_hits("{\"error\":1}"), None);
    }

    #[test]
    fn checks_per_target_per_interval_come_from_the_fleets_counters() {
        // A 60 s window at 10 s: 6 checks each, one target unchecked, one checked 12 times.
        let before = vec![10, 10, 10, 10];
        let after = vec![16, 16, 10, 22];
        let h = hits_between(&before, &after, 60.0, 10.0).unwrap_or_else(|| panic!("no hits"));
        assert_eq!(h.targets, 4);
        assert_eq!(h.per_interval, (6.0 + 6.0 + 0.0 + 12.0) / 4.0 / 6.0);
        assert_eq!(h.unchecked, 1);
        assert_eq!(
            h.over_grid, 1,
            "12 in a window with room for at most 6 or 7"
        );
        assert_eq!((h.min, h.max), (0, 12));
        // A window a little longer than six intervals has room for 7: not a duplicate.
        let seven = hits_between(&[0], &[7], 60.5, 10.0).unwrap_or_else(|| panic!("no hits"));
        assert_eq!(seven.over_grid, 0);
        assert_eq!(
            seven.window_s, 60.5,
            "the window is reported, to read over_grid by"
        );
        assert_eq!(hits_between(&[1], &[1, 2], 60.0, 10.0), None);
    }

    #[test]
    fn a_killed_nodes_target_is_checked_again_when_its_counter_moves_after_the_kill() {
        let at_kill = vec![5, 7, 9, 11];
        let mut r = Recovery::new(vec![1, 3], &at_kill);
        assert_eq!((r.watched(), r.remaining()), (2, 2));
        // Target 0 moves (not watched); watched ones are as at the kill.
        r.observe(&[6, 7, 9, 11], 0.2);
        assert_eq!(r.remaining(), 2);
        r.observe(&[6, 8, 9, 11], 4.0);
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.quantile(0.5), Some(4.0));
        assert_eq!(r.quantile(1.0), None, "one target not checked again yet");
        r.observe(&[6, 9, 9, 12], 9.8);
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.quantile(1.0), Some(9.8));
        assert_eq!(r.quantile(0.5), Some(4.0), "the first move counts");
    }

    #[test]
    fn ownership_settles_only_when_complete_and_unchanged_for_several_readings() {
        let mut s = Settle::new(100, 3, 3);
        let all = [Some(3); 3];
        assert!(
            !s.observe(&[Some(50), Some(50), Some(0)], &all),
            "sum 100 once"
        );
        assert!(
            !s.observe(&[Some(30), Some(30), Some(30)], &all),
            "90 owned: incomplete"
        );
        assert!(!s.observe(&[Some(33), Some(33), Some(34)], &all));
        assert!(!s.observe(&[Some(33), Some(33), Some(34)], &all));
        assert!(s.observe(&[Some(33), Some(33), Some(34)], &all));
        // A node that does not see every member resets the streak.
        assert!(!s.observe(
            &[Some(33), Some(33), Some(34)],
            &[Some(3), Some(2), Some(3)]
        ));
        assert!(!s.observe(&[Some(33), None, Some(34)], &all));
    }

    #[test]
    fn min_median_max_leaves_out_what_was_not_measured() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(min_median_max(&[4.0, 1.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(min_median_max(&[f64::NAN, 2.0]), Some((2.0, 2.0, 2.0)));
        assert_eq!(min_median_max(&[]), None);
    }
}
