//! What `v1-bench` computes from two scrapes of the agent's `/metrics` (or two readings of its
//! own counters for blackbox_exporter): rates over the *measured* time between them, the share
//! of checks that succeeded, the p99 schedule lag and the early starts.
//!
//! Why each rule: a rate over the nominal window instead of the measured one is off by however
//! late the second scrape came; a run whose checks fail is cheaper per check (a refused
//! connection costs less than a completed request) and would flatter the checker, so below
//! [`MIN_SUCCESS_SHARE`] the row is not a result.
use std::collections::BTreeMap;

/// Seconds between two scrapes of the agent's `/metrics`, as Prometheus' default
/// `scrape_interval` (and the fleet's check interval).
pub const SCRAPE_INTERVAL_S: u64 = 10;

/// Below this share of successful checks, a row is not a valid measurement.
pub const MIN_SUCCESS_SHARE: f64 = 0.999;

/// The counter of checks a coalescing driver started before their due time (the agent's lag
/// histogram observes only the others). Agents built before 2026-12-03 lack it: then `n/a`.
pub const EARLY_STARTS_METRIC: &str = "heck_schedule_early_total";

/// The figures `v1-bench` reads from one scrape of the agent's `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// `heck_checks_total` by its `result` label (`success` or an error kind).
    pub checks: BTreeMap<String, f64>,
    /// `heck_schedule_lag_seconds` cumulative buckets: (upper bound, count).
    pub lag_buckets: Vec<(f64, f64)>,
    /// `heck_schedule_skipped_total`.
    pub skipped: f64,
    /// [`EARLY_STARTS_METRIC`], if the agent exports it.
    pub early: Option<f64>,
    /// `heck_cluster_owned_targets`: present only in a cluster.
    pub owned: Option<f64>,
    /// `heck_cluster_members`: present only in a cluster.
    pub members: Option<f64>,
    /// `heck_cluster_sent_bytes_total` by its `kind` label (`swim`, `push_pull`, `sync`).
    pub sent_bytes: BTreeMap<String, f64>,
    /// `heck_cluster_received_bytes_total` by `kind`.
    pub received_bytes: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parse the Prometheus text format; lines of other families are ignored.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "heck_checks_total" => {
                    let result = label(labels, "result").unwrap_or_default();
                    *s.checks.entry(result.to_string()).or_default() += value;
                }
                "heck_schedule_lag_seconds_bucket" => {
                    let le = match label(labels, "le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => le.parse().unwrap_or(f64::NAN),
                        None => f64::NAN,
                    };
                    s.lag_buckets.push((le, value));
                }
                "heck_schedule_skipped_total" => s.skipped += value,
                "heck_cluster_owned_targets" => s.owned = Some(value),
                "heck_cluster_members" => s.members = Some(value),
                "heck_cluster_sent_bytes_total" | "heck_cluster_received_bytes_total" => {
                    let kind = label(labels, "kind").unwrap_or_default().to_string();
                    let map = if name == "heck_cluster_sent_bytes_total" {
                        &mut s.sent_bytes
                    } else {
                        &mut s.received_bytes
                    };
                    *map.entry(kind).or_default() += value;
                }
                n if n == EARLY_STARTS_METRIC => *s.early.get_or_insert(0.0) += value,
                _ => {}
            }
        }
        s
    }

    /// Every completed check, whatever its result.
    pub fn total(&self) -> f64 {
        self.checks.values().sum()
    }

    /// Completed checks that succeeded.
    pub fn successes(&self) -> f64 {
        self.checks.get("success").copied().unwrap_or(0.0)
    }

    /// Checks started: the lag histogram's count (starts at or after their due time) plus the
    /// early starts, which the agent counts apart (agents before 2026-12-03 observed an early
    /// start as zero lag and export no early counter: then the histogram holds them all).
    pub fn started(&self) -> f64 {
        self.lag_buckets
            .iter()
            .find(|b| b.0 == f64::INFINITY)
            .map_or(0.0, |b| b.1)
            + self.early.unwrap_or(0.0)
    }
}

/// The value of `key` in a label set `a="x",b="y"}` (escapes are not needed for these series).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// What happened between two scrapes, `elapsed_s` apart as measured (not as planned).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Checks completed.
    pub checks: f64,
    /// Of which succeeded.
    pub successes: f64,
    /// Checks started (lag observations).
    pub started: f64,
    /// Due slots skipped because the driver fell behind.
    pub skipped: f64,
    /// Checks started early by coalescing, if the agent exports it.
    pub early: Option<f64>,
    /// The upper bound of the lag bucket holding the 99th percentile; NaN when nothing started.
    pub p99_lag_s: f64,
    /// Measured seconds between the two scrapes.
    pub elapsed_s: f64,
}

impl Window {
    /// The difference of two scrapes taken `elapsed_s` apart.
    pub fn between(before: &Scrape, after: &Scrape, elapsed_s: f64) -> Window {
        Window {
            checks: after.total() - before.total(),
            successes: after.successes() - before.successes(),
            started: after.started() - before.started(),
            skipped: after.skipped - before.skipped,
            early: after.early.map(|a| a - before.early.unwrap_or(0.0)),
            p99_lag_s: p99(before, after),
            elapsed_s,
        }
    }

    /// Completed checks per measured second.
    pub fn rate(&self) -> f64 {
        rate(self.checks, self.elapsed_s)
    }

    /// The share of completed checks that succeeded; `None` when none completed.
    pub fn success_share(&self) -> Option<f64> {
        share(self.successes, self.checks)
    }
}

/// `count` per second of `elapsed_s`; NaN for an empty or negative interval.
pub fn rate(count: f64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        count / elapsed_s
    } else {
        f64::NAN
    }
}

/// `part / whole`; `None` when `whole` is zero (no share to speak of).
pub fn share(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// Whether a row is a result: something completed and at least [`MIN_SUCCESS_SHARE`] of it
/// succeeded.
pub fn valid_share(share: Option<f64>) -> bool {
    share.is_some_and(|s| s >= MIN_SUCCESS_SHARE)
}

/// CPU seconds per 1,000 of `count`; NaN when nothing was counted (never a flattering 0).
pub fn cpu_per_1000(cpu_s: f64, count: f64) -> f64 {
    if count > 0.0 {
        1000.0 * cpu_s / count
    } else {
        f64::NAN
    }
}

/// The upper bound of the bucket holding the 99th percentile of what was observed between the
/// scrapes; NaN when nothing was observed.
pub fn p99(before: &Scrape, after: &Scrape) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .lag_buckets
        .iter()
        .map(|&(le, n)| {
            let b = before
                .lag_buckets
                .iter()
                .find(|x| x.0 == le)
                .map_or(0.0, |x| x.1);
            (le, n - b)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |x| x.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    deltas
        .iter()
        .find(|&&(_, n)| n >= 0.99 * total)
        .map_or(f64::NAN, |x| x.0)
}

/// A share as a percentage for the tables, e.g. `99.95%`; `n/a` for none.
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "n/a".to_string(), |s| format!("{:.2}%", 100.0 * s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(success: u64, refused: u64, lag: [u64; 3], skipped: u64) -> String {
        format!(
            "# TYPE heck_checks counter\n\
             heck_checks_total{{result=\"success\"}} {success}\n\
             heck_checks_total{{result=\"refused\"}} {refused}\n\
             heck_checks_total{{result=\"timeout\"}} 0\n\
             heck_schedule_lag_seconds_sum 1.5\n\
             heck_schedule_lag_seconds_count {}\n\
             heck_schedule_lag_seconds_bucket{{le=\"0.001\"}} {}\n\
             heck_schedule_lag_seconds_bucket{{le=\"0.002\"}} {}\n\
             heck_schedule_lag_seconds_bucket{{le=\"+Inf\"}} {}\n\
             heck_schedule_skipped_total {skipped}\n\
             heck_target_up{{target=\"a b\"}} 1\n",
            lag[2], lag[0], lag[1], lag[2]
        )
    }

    #[test]
    fn a_scrape_reads_checks_by_result_lag_buckets_and_skips() {
        let s = Scrape::parse(&page(990, 10, [500, 900, 1000], 3));
        assert_eq!(s.successes(), 990.0);
        assert_eq!(s.total(), 1000.0);
        assert_eq!(s.checks.get("refused"), Some(&10.0));
        assert_eq!(
            s.lag_buckets,
            vec![(0.001, 500.0), (0.002, 900.0), (f64::INFINITY, 1000.0)]
        );
        assert_eq!(s.started(), 1000.0);
        assert_eq!(s.skipped, 3.0);
        assert_eq!(s.early, None, "not exported: unknown, not zero");
    }

    #[test]
    fn a_scrape_reads_the_cluster_gauges_and_bytes_by_kind() {
        let text = "heck_cluster_owned_targets 20011\n\
                    heck_cluster_members 5\n\
                    heck_cluster_sent_bytes_total{kind=\"swim\"} 1000\n\
                    heck_cluster_sent_bytes_total{kind=\"sync\"} 250\n\
                    heck_cluster_received_bytes_total{kind=\"swim\"} 900\n";
        let s = Scrape::parse(text);
        assert_eq!(s.owned, Some(20_011.0));
        assert_eq!(s.members, Some(5.0));
        assert_eq!(s.sent_bytes.get("swim"), Some(&1_000.0));
        assert_eq!(s.sent_bytes.get("sync"), Some(&250.0));
        assert_eq!(s.received_bytes.get("swim"), Some(&900.0));
        let alone = Scrape::parse(&page(1, 0, [1, 1, 1], 0));
        assert_eq!(alone.owned, None, "version 1: no cluster, not zero owned");
        assert!(alone.sent_bytes.is_empty());
    }

    #[test]
    fn early_starts_count_among_the_started_checks_so_their_share_is_at_most_all() {
        let text = format!(
            "heck_schedule_lag_seconds_bucket{{le=\"+Inf\"}} 100\n{} 300\n",
            EARLY_STARTS_METRIC
        );
        let after = Scrape::parse(&text);
        assert_eq!(after.started(), 400.0);
        let w = Window::between(&Scrape::parse(""), &after, 10.0);
        assert_eq!(share(w.early.unwrap_or(0.0), w.started), Some(0.75));
    }

    #[test]
    fn early_starts_are_read_when_the_agent_exports_them() {
        let before = Scrape::parse(&format!("{} 40\n", EARLY_STARTS_METRIC));
        let after = Scrape::parse(&format!("{} 100\n", EARLY_STARTS_METRIC));
        assert_eq!(after.early, Some(100.0));
        assert_eq!(Window::between(&before, &after, 10.0).early, Some(60.0));
    }

    #[test]
    fn a_window_divides_by_the_measured_time_not_the_planned_one() {
        let before = Scrape::parse(&page(1_000, 0, [1_000, 1_000, 1_000], 0));
        let after = Scrape::parse(&page(11_500, 0, [11_500, 11_500, 11_500], 0));
        // Planned 10 s, but the second scrape came 0.5 s late: 10,500 checks in 10.5 s.
        let w = Window::between(&before, &after, 10.5);
        assert_eq!(w.checks, 10_500.0);
        assert_eq!(w.rate(), 1_000.0);
        assert!(rate(1.0, 0.0).is_nan());
    }

    #[test]
    fn the_success_share_counts_every_result_of_the_window_only() {
        // Before the window: 100 refused (warm-up); inside it: 9,990 successes and 10 refused.
        let before = Scrape::parse(&page(900, 100, [1_000, 1_000, 1_000], 0));
        let after = Scrape::parse(&page(10_890, 110, [11_000, 11_000, 11_000], 0));
        let w = Window::between(&before, &after, 10.0);
        assert_eq!(w.success_share(), Some(0.999));
        assert!(valid_share(w.success_share()));
    }

    #[test]
    fn a_run_below_the_success_threshold_is_not_a_result() {
        assert!(valid_share(Some(1.0)));
        assert!(valid_share(share(999.0, 1_000.0)));
        assert!(!valid_share(share(998.0, 1_000.0)));
        assert!(!valid_share(share(0.0, 0.0)), "nothing completed");
        assert_eq!(share(0.0, 0.0), None);
    }

    #[test]
    fn p99_is_the_bucket_of_the_99th_percentile_of_the_window() {
        // Inside the window: 980 in ≤ 1 ms, 15 in ≤ 2 ms, 5 above.
        let before = Scrape::parse(&page(0, 0, [100, 100, 100], 0));
        let after = Scrape::parse(&page(0, 0, [1_080, 1_095, 1_100], 0));
        assert_eq!(p99(&before, &after), 0.002);
        // 100 slow starts before the window do not count: inside it, all 1,000 were ≤ 1 ms.
        let slow = Scrape::parse(&page(0, 0, [100, 100, 200], 0));
        let fast = Scrape::parse(&page(0, 0, [1_100, 1_100, 1_200], 0));
        assert_eq!(p99(&Scrape::default(), &slow), f64::INFINITY);
        assert_eq!(p99(&slow, &fast), 0.001);
        assert!(p99(&after, &after).is_nan(), "nothing observed");
    }

    #[test]
    fn cpu_per_thousand_is_never_a_flattering_zero() {
        assert_eq!(cpu_per_1000(2.0, 20_000.0), 0.1);
        assert!(cpu_per_1000(2.0, 0.0).is_nan());
    }

    #[test]
    fn percentages_say_when_there_is_nothing() {
        assert_eq!(percent(Some(0.9995)), "99.95%");
        assert_eq!(percent(None), "n/a");
    }
}
