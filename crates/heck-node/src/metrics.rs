//! Prometheus metrics, served at `GET /metrics`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `heck_target_up{target}` | gauge | 1 if the target's last check succeeded, else 0 (blackbox_exporter's `probe_success`) |
//! | `heck_target_healthy{target}` | gauge | 1 healthy, 0 unhealthy, -1 unknown (after rise/fall) |
//! | `heck_target_check_duration_seconds{target}` | gauge | duration of the target's last check |
//! | `heck_check_duration_seconds` | histogram | duration of every check |
//! | `heck_checks_total{result}` | counter | completed checks by result: `success` or an error kind |
//! | `heck_schedule_lag_seconds` | histogram | start of a check minus its due time |
//! | `heck_schedule_skipped_total` | counter | due slots skipped because the driver fell behind |
//! | `heck_checks_in_flight` | gauge | checks running now (bounded by `max_in_flight`) |
//! | `heck_targets{status}` | gauge | targets per status |
//! | `heck_transitions_total{to}` | counter | status transitions |
//! | `heck_events_dropped_total` | counter | events an SSE subscriber missed because it was too slow |
use std::sync::atomic::AtomicU64;

use heck_check::{ErrorKind, Outcome, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabel {
    to: &'static str,
}

/// One target's series, looked up once when the target is added (so a check costs no label
/// allocation or hash lookup).
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    up: Gauge,
    healthy: Gauge,
    last_duration: Gauge<f64, AtomicU64>,
}

impl TargetMetrics {
    /// A check finished.
    pub fn observe(&self, outcome: &Outcome) {
        self.up.set(i64::from(outcome.is_success()));
        self.last_duration.set(outcome.latency.as_secs_f64());
    }

    /// The status (after rise/fall) changed.
    pub fn set_status(&self, status: Status) {
        self.healthy.set(match status {
            Status::Healthy => 1,
            Status::Unhealthy => 0,
            Status::Unknown => -1,
        });
    }
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    up: Family<TargetLabel, Gauge>,
    healthy: Family<TargetLabel, Gauge>,
    last_duration: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    duration: Histogram,
    checks: Family<ResultLabel, Counter>,
    lag: Histogram,
    skipped: Counter,
    in_flight: Gauge,
    targets: Family<StatusLabel, Gauge>,
    transitions: Family<ToLabel, Counter>,
    events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            up: Family::default(),
            healthy: Family::default(),
            last_duration: Family::default(),
            // 1 ms .. ~32 s
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            checks: Family::default(),
            // 1 ms .. ~65 s
            lag: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            skipped: Counter::default(),
            in_flight: Gauge::default(),
            targets: Family::default(),
            transitions: Family::default(),
            events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "heck_target_up",
            "1 if the target's last check succeeded",
            m.up.clone(),
        );
        registry.register(
            "heck_target_healthy",
            "1 healthy, 0 unhealthy, -1 unknown (after rise/fall)",
            m.healthy.clone(),
        );
        registry.register(
            "heck_target_check_duration_seconds",
            "Duration of the target's last check",
            m.last_duration.clone(),
        );
        registry.register(
            "heck_check_duration_seconds",
            "Duration of every check",
            m.duration.clone(),
        );
        registry.register(
            "heck_checks",
            "Completed checks by result",
            m.checks.clone(),
        );
        registry.register(
            "heck_schedule_lag_seconds",
            "Start of a check minus its due time",
            m.lag.clone(),
        );
        registry.register(
            "heck_schedule_skipped",
            "Due slots skipped because the driver fell behind",
            m.skipped.clone(),
        );
        registry.register(
            "heck_checks_in_flight",
            "Checks running now",
            m.in_flight.clone(),
        );
        registry.register("heck_targets", "Targets per status", m.targets.clone());
        registry.register(
            "heck_transitions",
            "Status transitions",
            m.transitions.clone(),
        );
        registry.register(
            "heck_events_dropped",
            "Events an SSE subscriber missed because it was too slow",
            m.events_dropped.clone(),
        );
        // Export zeroes for every result, so rates work from the first scrape.
        drop(m.checks.get_or_create(&ResultLabel { result: "success" }));
        for kind in ErrorKind::ALL {
            drop(m.checks.get_or_create(&ResultLabel {
                result: kind.as_str(),
            }));
        }
        Metrics { registry, ..m }
    }

    /// The series of target `target`, created (status unknown) if new.
    pub fn target(&self, target: &str) -> TargetMetrics {
        let label = TargetLabel {
            target: target.to_string(),
        };
        let m = TargetMetrics {
            up: self.up.get_or_create_owned(&label),
            healthy: self.healthy.get_or_create_owned(&label),
            last_duration: self.last_duration.get_or_create_owned(&label),
        };
        m.set_status(Status::Unknown);
        m
    }

    /// A check finished (the node-wide series; the target's own go through [`TargetMetrics`]).
    pub fn observe_check(&self, outcome: &Outcome) {
        self.duration.observe(outcome.latency.as_secs_f64());
        let result = outcome.error.map_or("success", ErrorKind::as_str);
        self.checks.get_or_create(&ResultLabel { result }).inc();
    }

    /// A transition happened.
    pub fn transition(&self, to: Status) {
        self.transitions
            .get_or_create(&ToLabel { to: to.as_str() })
            .inc();
    }

    /// A target was removed: drop its series.
    pub fn forget(&self, target: &str) {
        let label = TargetLabel {
            target: target.to_string(),
        };
        self.up.remove(&label);
        self.healthy.remove(&label);
        self.last_duration.remove(&label);
    }

    /// A check started `lag` seconds after it was due.
    pub fn lag(&self, seconds: f64) {
        self.lag.observe(seconds);
    }

    /// Slots were skipped.
    pub fn skipped(&self, n: u64) {
        self.skipped.inc_by(n);
    }

    /// Checks in flight now.
    pub fn in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Targets per status.
    pub fn targets(&self, counts: [(Status, usize); 3]) {
        for (status, n) in counts {
            self.targets
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(n as i64);
        }
    }

    /// An SSE subscriber missed `n` events.
    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }
}
