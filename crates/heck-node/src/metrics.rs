//! Prometheus metrics, served at `GET /metrics`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `heck_target_up{target}` | gauge | 1 if the target's last check succeeded, else 0 (blackbox_exporter's `probe_success`); absent until the first check |
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
//!
//! The three per-target series are not kept as metric objects: at 100,000 targets that was three
//! label strings, three hash-map entries and three shared cells per target (a third of the
//! agent's memory). They are read from the [`Registry`](crate::Registry), which holds the last
//! outcome and status anyway, when `/metrics` is scraped: a snapshot is copied under the lock
//! and encoded after it is released, so a scrape holds up the check driver for a copy only.
use std::sync::{Arc, Mutex};

use heck_check::{ErrorKind, Outcome, Status, TargetName};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// One target's per-target series, as read from the registry at scrape time.
#[derive(Debug, Clone)]
struct TargetSample {
    name: TargetName,
    /// `(up, seconds)` of the last check, if it has been checked.
    last: Option<(i64, f64)>,
    healthy: i64,
}

fn status_value(status: Status) -> i64 {
    match status {
        Status::Healthy => 1,
        Status::Unhealthy => 0,
        Status::Unknown => -1,
    }
}

/// Encodes `heck_target_*{target}` from the target registry on every scrape.
#[derive(Debug)]
struct TargetSeries {
    targets: Arc<Mutex<crate::Registry>>,
}

impl TargetSeries {
    fn snapshot(&self) -> Vec<TargetSample> {
        let reg = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        reg.iter()
            .map(|e| TargetSample {
                name: e.spec.name.clone(),
                last: e.last.as_ref().map(|l| {
                    (
                        i64::from(l.outcome.is_success()),
                        l.outcome.latency.as_secs_f64(),
                    )
                }),
                healthy: status_value(e.state.status()),
            })
            .collect()
    }
}

impl Collector for TargetSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.snapshot();
        let mut family = encoder.encode_descriptor(
            "heck_target_up",
            "1 if the target's last check succeeded (absent until its first check)",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            if let Some((up, _)) = s.last {
                let label = [("target", s.name.as_str())];
                ConstGauge::new(up).encode(family.encode_family(&label)?)?;
            }
        }
        family = encoder.encode_descriptor(
            "heck_target_healthy",
            "1 healthy, 0 unhealthy, -1 unknown (after rise/fall)",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            let label = [("target", s.name.as_str())];
            ConstGauge::new(s.healthy).encode(family.encode_family(&label)?)?;
        }
        family = encoder.encode_descriptor(
            "heck_target_check_duration_seconds",
            "Duration of the target's last check (absent until its first check)",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            if let Some((_, seconds)) = s.last {
                let label = [("target", s.name.as_str())];
                ConstGauge::new(seconds).encode(family.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    duration: Histogram,
    checks: Family<ResultLabel, Counter>,
    lag: Histogram,
    skipped: Counter,
    in_flight: Gauge,
    targets: Family<StatusLabel, Gauge>,
    transitions: Family<ToLabel, Counter>,
    events_dropped: Counter,
}

impl Metrics {
    /// Register every metric; the per-target series are read from `targets` on each scrape.
    pub fn new(targets: Arc<Mutex<crate::Registry>>) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
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
        registry.register_collector(Box::new(TargetSeries { targets }));
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

    /// A check finished (the node-wide series; the target's own are read from the registry).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, SystemTime};

    use heck_check::{Defaults, TargetInput};

    use super::*;

    fn add(reg: &mut crate::Registry, name: &str) {
        let spec = TargetInput {
            name: name.into(),
            url: "http://127.0.0.1:1/".into(),
            rise: Some(1),
            ..TargetInput::default()
        }
        .resolve(&Defaults::default())
        .unwrap();
        reg.add(spec, SystemTime::UNIX_EPOCH).unwrap();
    }

    #[test]
    fn per_target_series_follow_the_registry() {
        let targets = Arc::new(Mutex::new(crate::Registry::default()));
        let metrics = Metrics::new(targets.clone());
        {
            let mut reg = targets.lock().unwrap();
            add(&mut reg, "checked");
            add(&mut reg, "new");
            let ok = Outcome::success(Duration::from_millis(250), Some(200));
            reg.record(
                &TargetName::new("checked").unwrap(),
                1,
                SystemTime::UNIX_EPOCH,
                ok,
            )
            .unwrap();
        }
        let text = metrics.encode();
        assert!(
            text.contains("heck_target_up{target=\"checked\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("heck_target_up{target=\"new\"}"), "{text}");
        assert!(
            text.contains("heck_target_healthy{target=\"checked\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("heck_target_healthy{target=\"new\"} -1\n"),
            "{text}"
        );
        assert!(
            text.contains("heck_target_check_duration_seconds{target=\"checked\"} 0.25\n"),
            "{text}"
        );
        // A removed target's series go with it.
        targets
            .lock()
            .unwrap()
            .remove(&TargetName::new("checked").unwrap());
        let text = metrics.encode();
        assert!(!text.contains("target=\"checked\""), "{text}");
        assert!(
            text.contains("heck_target_healthy{target=\"new\"} -1\n"),
            "{text}"
        );
    }
}
