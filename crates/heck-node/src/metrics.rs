//! Prometheus metrics, served at `GET /metrics`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `heck_target_up{target}` | gauge | 1 if the target's last check succeeded, else 0 (blackbox_exporter's `probe_success`); absent until the first check |
//! | `heck_target_healthy{target}` | gauge | 1 healthy, 0 unhealthy, -1 unknown (after rise/fall) |
//! | `heck_target_check_duration_seconds{target}` | gauge | duration of the target's last check |
//! | `heck_check_duration_seconds` | histogram | duration of every check |
//! | `heck_checks_total{result}` | counter | completed checks by result: `success` or an error kind |
//! | `heck_schedule_lag_seconds` | histogram | start of a check minus its due time, for checks that started at or after it |
//! | `heck_schedule_early_total` | counter | checks started before their due time, inside the coalescing window (not lag) |
//! | `heck_schedule_skipped_total` | counter | due slots skipped because the driver fell behind |
//! | `heck_checks_in_flight` | gauge | checks running now (bounded by `max_in_flight`) |
//! | `heck_targets{status}` | gauge | targets per status |
//! | `heck_transitions_total{to}` | counter | status transitions |
//! | `heck_events_dropped_total` | counter | events an SSE subscriber missed because it was too slow |
//! | `heck_api_rejected_total{reason}` | counter | API requests or connections refused to protect the agent: `connections` (over the cap), `subscribers` (SSE, over the cap), `header_timeout`, `body_timeout`, `body_too_large` |
//! | `heck_keepalive_pool_full_total` | counter | keep-alive connections closed after a check instead of pooled, because the pool held its cap of idle connections (8,192); read from the prober at scrape time |
//! | `heck_cluster_owned_targets` | gauge | (cluster) targets this node checks now |
//! | `heck_cluster_members` | gauge | (cluster) live members, this node included |
//! | `heck_cluster_contested_targets` | gauge | (cluster) targets whose answer rests on concurrent observations |
//! | `heck_cluster_deltas_pending` | gauge | (cluster) delta groups waiting for a peer's acknowledgement |
//! | `heck_cluster_status_writes_total` | counter | (cluster) status records this node wrote |
//! | `heck_cluster_sent_bytes_total{kind}` | counter | (cluster) bytes sent: `swim` (UDP datagrams, sealed), `push_pull` and `sync` (stream payloads) |
//! | `heck_cluster_received_bytes_total{kind}` | counter | (cluster) bytes received, same kinds |
//!
//! In a cluster, `heck_targets` and `heck_target_healthy` are the cluster's answer (whoever
//! checked); `heck_target_up` and the durations are this node's own checks, so they exist only
//! for targets this node has checked.
//!
//! The three per-target series are not kept as metric objects: at 100,000 targets that was three
//! label strings, three hash-map entries and three shared cells per target (a third of the
//! agent's memory). They are read from the [`Registry`](crate::Registry), which holds the last
//! outcome and status anyway, when `/metrics` is scraped, and written **a page at a time**
//! ([`Metrics::pages`]): the lock is held for one page of 512 targets, and no buffer ever holds
//! the whole text (14 MB at 100,000 targets; glibc kept each such peak, so every early scrape
//! grew the agent's RSS by ~19 MB for good).
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use heck_check::{ErrorKind, Outcome, Status, TargetName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabel {
    to: &'static str,
}

/// Targets per page of `/metrics`: ~70 KB of text, under glibc's initial mmap threshold.
const PAGE: usize = 512;

/// The per-target families, in the order they are written: name, help, and the value of a
/// target (`None`: no sample for it).
type TargetFamily = (
    &'static str,
    &'static str,
    fn(&crate::registry::Entry) -> Option<String>,
);

const TARGET_FAMILIES: [TargetFamily; 3] = [
    (
        "heck_target_up",
        "1 if the target's last check succeeded (absent until its first check)",
        |e| {
            e.last
                .as_ref()
                .map(|l| i64::from(l.outcome.is_success()).to_string())
        },
    ),
    (
        "heck_target_healthy",
        "1 healthy, 0 unhealthy, -1 unknown (after rise/fall)",
        |e| {
            Some(
                match e.status() {
                    Status::Healthy => "1",
                    Status::Unhealthy => "0",
                    Status::Unknown => "-1",
                }
                .to_string(),
            )
        },
    ),
    (
        "heck_target_check_duration_seconds",
        "Duration of the target's last check (absent until its first check)",
        |e| {
            e.last
                .as_ref()
                .map(|l| format!("{}", l.outcome.latency.as_secs_f64()))
        },
    ),
];

/// The `/metrics` text as a sequence of pages: the node-wide metrics, then each per-target
/// family a page of targets at a time, then `# EOF`. Concatenated, they are one OpenMetrics
/// exposition. Pages are read at slightly different moments; each sample is a target's current
/// value, as with any scrape of live gauges.
#[derive(Debug)]
pub struct Pages {
    metrics: Arc<Metrics>,
    part: Part,
    /// The last target written in the current family.
    after: Option<TargetName>,
}

/// Which part of the exposition the next page writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The node-wide metrics (one page).
    NodeWide,
    /// The per-target family `TARGET_FAMILIES[i]`, a page of targets at a time.
    Targets(usize),
    /// The closing `# EOF`.
    Eof,
    /// Nothing left.
    Done,
}

impl Iterator for Pages {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::new();
        match self.part {
            Part::NodeWide => {
                if prometheus_client::encoding::text::encode_registry(
                    &mut out,
                    &self.metrics.registry,
                )
                .is_err()
                {
                    out.push_str("# encoding failed\n");
                }
                self.part = Part::Targets(0);
            }
            Part::Targets(family) => {
                let (name, help, value) = TARGET_FAMILIES[family];
                if self.after.is_none() {
                    let _ = write!(out, "# HELP {name} {help}.\n# TYPE {name} gauge\n");
                }
                let reg = self
                    .metrics
                    .target_registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let mut last = None;
                for e in reg.iter_after(self.after.as_ref()).take(PAGE) {
                    if let Some(v) = value(e) {
                        // Names are `A-Z a-z 0-9 . _ - : @` only: nothing to escape.
                        let _ = writeln!(out, "{name}{{target=\"{}\"}} {v}", e.spec.name);
                    }
                    last = Some(e.spec.name.clone());
                }
                drop(reg);
                match last {
                    Some(name) => self.after = Some(name),
                    None => {
                        self.after = None;
                        self.part = if family + 1 < TARGET_FAMILIES.len() {
                            Part::Targets(family + 1)
                        } else {
                            Part::Eof
                        };
                    }
                }
            }
            Part::Eof => {
                out.push_str("# EOF\n");
                self.part = Part::Done;
            }
            Part::Done => return None,
        }
        Some(out)
    }
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The target registry, read on each scrape for the per-target series.
    target_registry: Arc<Mutex<crate::Registry>>,
    duration: Histogram,
    checks: Family<ResultLabel, Counter>,
    lag: Histogram,
    skipped: Counter,
    early: Counter,
    in_flight: Gauge,
    targets: Family<StatusLabel, Gauge>,
    transitions: Family<ToLabel, Counter>,
    events_dropped: Counter,
    api_rejected: Family<ReasonLabel, Counter>,
    /// A copy of the prober's own count, brought up to date at each scrape.
    keepalive_pool_full: Counter,
    cluster: ClusterMetrics,
}

/// The cluster's series (registered only in a cluster).
#[derive(Debug, Default)]
struct ClusterMetrics {
    owned: Gauge,
    members: Gauge,
    contested: Gauge,
    deltas_pending: Gauge,
    writes: Counter,
    sent: Family<KindLabel, Counter>,
    received: Family<KindLabel, Counter>,
}

/// Raise `counter` to `total` (a running total kept elsewhere).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl Metrics {
    /// Register every metric; the per-target series are read from `targets` on each scrape.
    /// `clustered`: also the cluster's series.
    pub fn new(targets: Arc<Mutex<crate::Registry>>, clustered: bool) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            // 1 ms .. ~32 s
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            checks: Family::default(),
            // 1 ms .. ~65 s
            lag: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            skipped: Counter::default(),
            early: Counter::default(),
            in_flight: Gauge::default(),
            targets: Family::default(),
            transitions: Family::default(),
            events_dropped: Counter::default(),
            api_rejected: Family::default(),
            cluster: ClusterMetrics::default(),
            keepalive_pool_full: Counter::default(),
            registry: Registry::default(),
            target_registry: targets,
        };
        if clustered {
            let c = &m.cluster;
            registry.register(
                "heck_cluster_owned_targets",
                "Targets this node checks now",
                c.owned.clone(),
            );
            registry.register(
                "heck_cluster_members",
                "Live members, this node included",
                c.members.clone(),
            );
            registry.register(
                "heck_cluster_contested_targets",
                "Targets whose answer rests on concurrent observations",
                c.contested.clone(),
            );
            registry.register(
                "heck_cluster_deltas_pending",
                "Delta groups waiting for a peer's acknowledgement",
                c.deltas_pending.clone(),
            );
            registry.register(
                "heck_cluster_status_writes",
                "Status records this node wrote",
                c.writes.clone(),
            );
            registry.register(
                "heck_cluster_sent_bytes",
                "Bytes sent by kind: swim (UDP, sealed), push_pull and sync (stream payloads)",
                c.sent.clone(),
            );
            registry.register(
                "heck_cluster_received_bytes",
                "Bytes received by kind: swim (UDP, sealed), push_pull and sync (stream payloads)",
                c.received.clone(),
            );
        }
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
            "heck_schedule_early",
            "Checks started before their due time, inside the coalescing window",
            m.early.clone(),
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
        registry.register(
            "heck_api_rejected",
            "API connections and requests refused to protect the agent",
            m.api_rejected.clone(),
        );
        registry.register(
            "heck_keepalive_pool_full",
            "Keep-alive connections closed instead of pooled because the pool was full",
            m.keepalive_pool_full.clone(),
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

    /// A check started before it was due (the driver's coalescing window): counted apart, so
    /// the lag histogram measures lateness only and early starts are not hidden as zero lag.
    pub fn early(&self) {
        self.early.inc();
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

    /// The cluster's counters, as the driver publishes them every second.
    pub fn cluster(
        &self,
        counts: &crate::membership::ClusterCounts,
        view: &crate::membership::MembershipView,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.cluster;
        c.owned.set(counts.owned_targets as i64);
        c.members.set(counts.live_members as i64);
        c.contested.set(counts.contested as i64);
        c.deltas_pending.set(counts.deltas_pending as i64);
        catch_up(&c.writes, counts.decisions.writes);
        let kind = |kind| KindLabel { kind };
        catch_up(
            &c.sent.get_or_create(&kind("swim")),
            view.stats.swim_sent_bytes.load(Relaxed),
        );
        catch_up(
            &c.received.get_or_create(&kind("swim")),
            view.stats.swim_received_bytes.load(Relaxed),
        );
        if let Some(stream) = view.stream_stats() {
            for (channel, label) in [("push_pull", "push_pull"), ("crdt", "sync")] {
                let sent = stream.sent.get(channel).map_or(0, |t| t.bytes);
                let received = stream.received.get(channel).map_or(0, |t| t.bytes);
                catch_up(&c.sent.get_or_create(&kind(label)), sent);
                catch_up(&c.received.get_or_create(&kind(label)), received);
            }
        }
    }

    /// An SSE subscriber missed `n` events.
    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    /// The API refused a connection or request, for `reason`.
    pub fn api_rejected(&self, reason: &'static str) {
        self.api_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The prober's count of keep-alive connections closed because its pool was full
    /// (`Prober::pool_full_drops`), read just before a scrape. The prober counts, not the
    /// node: the pool is inside the prober. The counter only moves up to `total`, so two
    /// scrapes racing with readings taken in either order never make it go back.
    pub fn keepalive_pool_full(&self, total: u64) {
        self.keepalive_pool_full
            .inner()
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// The exposition, a page at a time (what `GET /metrics` streams).
    pub fn pages(self: &Arc<Self>) -> Pages {
        Pages {
            metrics: self.clone(),
            part: Part::NodeWide,
            after: None,
        }
    }

    /// The whole exposition in one string (for tests and small registries).
    pub fn encode(self: &Arc<Self>) -> String {
        self.pages().collect()
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
        let metrics = Arc::new(Metrics::new(targets.clone(), false));
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

    /// A server that answers every request on a connection with an empty 200 and keeps the
    /// connection open, so the prober pools it. Its tasks end with the test's runtime.
    async fn keep_alive_server() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if conn.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn connections_closed_by_a_full_keep_alive_pool_are_counted_at_scrape() {
        let metrics = Arc::new(Metrics::new(Arc::default(), false));
        assert!(
            metrics
                .encode()
                .contains("\nheck_keepalive_pool_full_total 0\n"),
            "exported as zero from the start"
        );
        // A pool of one, and three endpoints checked with keep-alive: the first connection is
        // pooled, the other two find the pool full and are closed.
        let prober = heck_probe::Prober::with_pool_cap(1).unwrap();
        for _ in 0..3 {
            let addr = keep_alive_server().await;
            let spec = TargetInput {
                name: "t".into(),
                url: format!("http://{addr}/"),
                keep_alive: Some(true),
                timeout: Some(heck_check::HumanDuration(Duration::from_secs(5))),
                ..TargetInput::default()
            }
            .resolve(&Defaults::default())
            .unwrap();
            let outcome = prober.probe(&spec).await;
            assert!(outcome.is_success(), "{outcome:?}");
        }
        assert_eq!((prober.pooled(), prober.pool_full_drops()), (1, 2));
        metrics.keepalive_pool_full(prober.pool_full_drops());
        let text = metrics.encode();
        assert!(
            text.contains("\nheck_keepalive_pool_full_total 2\n"),
            "{text}"
        );
        // An older reading (a scrape that raced this one) never moves the counter back.
        metrics.keepalive_pool_full(1);
        assert!(
            metrics
                .encode()
                .contains("\nheck_keepalive_pool_full_total 2\n")
        );
    }

    #[test]
    fn a_large_registry_is_written_in_bounded_pages_one_family_after_another() {
        let targets = Arc::new(Mutex::new(crate::Registry::default()));
        let metrics = Arc::new(Metrics::new(targets.clone(), false));
        {
            let mut reg = targets.lock().unwrap();
            for i in 0..1_300 {
                add(&mut reg, &format!("t-{i:05}"));
            }
        }
        let pages: Vec<String> = metrics.pages().collect();
        assert!(
            pages.len() > 3 * 2,
            "several pages per family: {}",
            pages.len()
        );
        assert!(pages.iter().all(|p| p.len() < 128 * 1024));
        let text: String = pages.concat();
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        let healthy: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("heck_target_healthy{"))
            .collect();
        assert_eq!(healthy.len(), 1_300);
        // One family's samples are contiguous, right after its TYPE line, in name order.
        let type_line = text
            .lines()
            .position(|l| l == "# TYPE heck_target_healthy gauge")
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[type_line + 1..type_line + 1 + 1_300], &healthy[..]);
        assert!(healthy[0].starts_with("heck_target_healthy{target=\"t-00000\"}"));
        assert!(healthy[1_299].starts_with("heck_target_healthy{target=\"t-01299\"}"));
        assert_eq!(text.matches("# TYPE heck_target_healthy gauge").count(), 1);
    }
}
