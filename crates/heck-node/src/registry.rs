//! The target registry: every target's spec, check state and last result.
//!
//! Shared between the check driver (writes results) and the API (reads, adds, removes) behind a
//! std mutex: every critical section is a few map operations and never awaits, which a std mutex
//! does faster than tokio's (the same reasoning as mini-redis' `db.rs`).
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use heck_check::{CheckState, Outcome, Status, TargetName, TargetSpec, Transition};
use serde::Serialize;

/// The last completed check of a target.
#[derive(Debug, Clone)]
pub struct LastCheck {
    /// When it started (wall clock).
    pub at: SystemTime,
    /// What it found.
    pub outcome: Outcome,
}

/// One target.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What to check.
    pub spec: Arc<TargetSpec>,
    /// xxh3 of the name: its phase on every node.
    pub key_hash: u64,
    /// Rise/fall state.
    pub state: CheckState,
    /// The last completed check.
    pub last: Option<LastCheck>,
    /// Bumped when a target of this name is (re)added, so a result of a check started before a
    /// delete + re-add is recognised as stale and dropped.
    pub generation: u64,
    /// In a cluster, the status every node answers (the replicated answer, whoever checked);
    /// `None` in a single agent, where `state` is the answer.
    pub answer: Option<Status>,
    /// In a cluster, the answer rests on concurrent observations.
    pub contested: bool,
}

impl Entry {
    /// The status this node answers with: the cluster's answer in a cluster, else its own check.
    pub fn status(&self) -> Status {
        self.answer.unwrap_or_else(|| self.state.status())
    }
}

/// The hash that places a target's checks on its phase grid (and, in a cluster, picks its
/// owner): xxh3-64 of the name with a fixed seed, the same on every node.
pub fn key_hash(name: &TargetName) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(name.as_str().as_bytes(), 0x6865_636b_7068_6173)
}

/// Every target.
#[derive(Debug, Default)]
pub struct Registry {
    /// By name, hashed: the check path looks a target up twice per check, and B-tree lookups
    /// compare long, similar names (with the schedule's, 6–8% of the agent's CPU at 100,000
    /// targets under `perf record`: memcmp and B-tree search).
    targets: HashMap<TargetName, Entry>,
    /// The names in order, for listings: touched only by add and remove.
    order: BTreeSet<TargetName>,
    generation: u64,
    /// Targets per status (unknown, healthy, unhealthy), kept incrementally: recounting 100,000
    /// targets on every transition would be quadratic at start-up. Counts [`Entry::status`].
    counts: [usize; 3],
    /// In a cluster: every entry carries the replicated answer, which the counts follow.
    clustered: bool,
    /// Targets whose answer is contested, kept incrementally (as `counts`).
    contested: usize,
}

fn slot(status: Status) -> usize {
    match status {
        Status::Unknown => 0,
        Status::Healthy => 1,
        Status::Unhealthy => 2,
    }
}

/// Why an add was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// A target of that name exists.
    Duplicate,
}

impl Registry {
    /// An empty registry for a node of a cluster: statuses shown and counted are the
    /// replicated answers ([`Registry::set_answer`]), not this node's own checks.
    pub fn clustered() -> Registry {
        Registry {
            clustered: true,
            ..Registry::default()
        }
    }

    /// Add a target, unknown since `now`. Returns its generation.
    pub fn add(&mut self, spec: TargetSpec, now: SystemTime) -> Result<u64, AddError> {
        if self.targets.contains_key(&spec.name) {
            return Err(AddError::Duplicate);
        }
        self.generation += 1;
        let entry = Entry {
            key_hash: key_hash(&spec.name),
            spec: Arc::new(spec),
            state: CheckState::new(now),
            last: None,
            generation: self.generation,
            answer: self.clustered.then_some(Status::Unknown),
            contested: false,
        };
        self.counts[slot(Status::Unknown)] += 1;
        self.order.insert(entry.spec.name.clone());
        self.targets.insert(entry.spec.name.clone(), entry);
        Ok(self.generation)
    }

    /// Make room for `additional` more targets at once (a config's worth), so loading does not
    /// grow the table by doubling: each doubling frees the old table, and at 100,000 targets
    /// those freed tables stayed in the process's RSS.
    pub fn reserve(&mut self, additional: usize) {
        self.targets.reserve(additional);
    }

    /// Remove a target; returns it if it was there.
    pub fn remove(&mut self, name: &TargetName) -> Option<Entry> {
        let entry = self.targets.remove(name)?;
        self.order.remove(name);
        self.counts[slot(entry.status())] -= 1;
        self.contested -= usize::from(entry.contested);
        Some(entry)
    }

    /// Add `spec`, or replace the spec of the target of that name (a new generation: a check
    /// running with the old spec is stale; the check state and answer carry over). Returns the
    /// replaced spec, if any, so its keep-alive connections can be forgotten.
    pub fn upsert(&mut self, spec: TargetSpec, now: SystemTime) -> Option<Arc<TargetSpec>> {
        self.generation += 1;
        let generation = self.generation;
        match self.targets.get_mut(&spec.name) {
            Some(entry) => {
                let old = std::mem::replace(&mut entry.spec, Arc::new(spec));
                entry.generation = generation;
                Some(old)
            }
            None => {
                // Cannot be a duplicate: looked up just above.
                let _ = self.add(spec, now);
                None
            }
        }
    }

    /// Continue `name`'s checks from `state` (a new owner takes over the replicated state).
    /// Returns false if there is no such target.
    pub fn set_state(&mut self, name: &TargetName, state: CheckState) -> bool {
        let Some(entry) = self.targets.get_mut(name) else {
            return false;
        };
        let before = entry.status();
        entry.state = state;
        let after = entry.status();
        self.counts[slot(before)] -= 1;
        self.counts[slot(after)] += 1;
        true
    }

    /// In a cluster, the answer for `name` is now `status` (`contested` or not); returns the
    /// status before (`None` if there is no such target, or this registry is not clustered).
    pub fn set_answer(
        &mut self,
        name: &TargetName,
        status: Status,
        contested: bool,
    ) -> Option<Status> {
        let entry = self.targets.get_mut(name)?;
        let old = entry.answer.replace(status)?;
        self.counts[slot(old)] -= 1;
        self.counts[slot(status)] += 1;
        self.contested = self.contested + usize::from(contested) - usize::from(entry.contested);
        entry.contested = contested;
        Some(old)
    }

    /// Targets whose answer is contested (in a cluster).
    pub fn contested(&self) -> usize {
        self.contested
    }

    /// One target.
    pub fn get(&self, name: &TargetName) -> Option<&Entry> {
        self.targets.get(name)
    }

    /// Every target, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.iter_after(None)
    }

    /// Every target, in no particular order: for walks that do not need names in order (the
    /// driver's start-up), which then skip the ordered index.
    pub fn iter_unordered(&self) -> impl Iterator<Item = &Entry> {
        self.targets.values()
    }

    /// Every target named after `after` (all of them if `None`), by name: lets a reader walk
    /// the registry a page at a time, releasing the lock between pages.
    pub fn iter_after(&self, after: Option<&TargetName>) -> impl Iterator<Item = &Entry> {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        self.order
            .range((lower, Unbounded))
            .filter_map(|name| self.targets.get(name))
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// No targets?
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Record a result for `name` if it is still the same generation. Returns the transition (if
    /// any) and whether the target is failing (for the next interval); `None` if the result is
    /// stale (the target was removed or replaced meanwhile).
    pub fn record(
        &mut self,
        name: &TargetName,
        generation: u64,
        at: SystemTime,
        outcome: Outcome,
    ) -> Option<(Option<Transition>, bool)> {
        let entry = self.targets.get_mut(name)?;
        if entry.generation != generation {
            return None;
        }
        let transition = entry
            .state
            .observe(outcome.is_success(), at, entry.spec.thresholds);
        entry.last = Some(LastCheck { at, outcome });
        // In a cluster the counts follow the answer, which changes through `set_answer`.
        if let (Some(t), None) = (transition, entry.answer) {
            self.counts[slot(t.from)] -= 1;
            self.counts[slot(t.to)] += 1;
        }
        Some((transition, entry.state.is_failing()))
    }

    /// Count of targets per status.
    pub fn counts(&self) -> [(Status, usize); 3] {
        [
            (Status::Unknown, self.counts[0]),
            (Status::Healthy, self.counts[1]),
            (Status::Unhealthy, self.counts[2]),
        ]
    }
}

/// A target as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Probe kind.
    pub kind: heck_check::ProbeKind,
    /// Current status.
    pub status: Status,
    /// When the current status began (RFC 3339).
    pub since: String,
    /// Current run of failures.
    pub consecutive_failures: u32,
    /// Current run of successes.
    pub consecutive_successes: u32,
    /// The last completed check, if any.
    pub last_check: Option<LastCheckView>,
    /// The validated spec (interval, timeout, thresholds, …).
    pub spec: heck_check::TargetInput,
    /// In a cluster: who checks it and who said what (absent in a single agent).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// The cluster's part of a target's view: the replicated answer's provenance.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The node checking it now (`null` while no member is live).
    pub owner: Option<String>,
    /// The node whose check produced `status` (`null` before any node decided).
    pub observer: Option<String>,
    /// When the observer wrote it (RFC 3339).
    pub observed_at: Option<String>,
    /// Concurrent observations exist (a partition or a handover race): every node answers the
    /// same one by the rule of docs/protocols/cluster.md until the owner's next write.
    pub contested: bool,
}

/// The last check as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheckView {
    /// When it started (RFC 3339).
    pub at: String,
    /// Latency in milliseconds.
    pub latency_ms: f64,
    /// HTTP status, if any.
    pub status_code: Option<u16>,
    /// Error kind, if it failed.
    pub error: Option<heck_check::ErrorKind>,
    /// Human detail of the failure.
    pub detail: Option<String>,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Entry {
    /// The API view of this entry.
    pub fn view(&self) -> TargetView {
        TargetView {
            name: self.spec.name.to_string(),
            url: self.spec.url.to_string(),
            kind: self.spec.kind,
            status: self.status(),
            since: rfc3339(self.state.since()),
            consecutive_failures: self.state.consecutive_failures(),
            consecutive_successes: self.state.consecutive_successes(),
            last_check: self.last.as_ref().map(|l| LastCheckView {
                at: rfc3339(l.at),
                latency_ms: l.outcome.latency.as_micros() as f64 / 1000.0,
                status_code: l.outcome.status_code,
                error: l.outcome.error,
                detail: l.outcome.detail.clone(),
            }),
            spec: self.spec.to_input(),
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use heck_check::{Defaults, ErrorKind, TargetInput};

    use super::*;

    fn spec(name: &str) -> TargetSpec {
        TargetInput {
            name: name.into(),
            url: "http://127.0.0.1:1/".into(),
            ..TargetInput::default()
        }
        .resolve(&Defaults::default())
        .unwrap()
    }

    #[test]
    fn a_result_for_a_replaced_target_is_dropped_as_stale() {
        let mut r = Registry::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let old = r.add(spec("a"), t0).unwrap();
        let name = TargetName::new("a").unwrap();
        r.remove(&name);
        let new = r.add(spec("a"), t0).unwrap();
        let fail = Outcome::failure(Duration::from_millis(1), None, ErrorKind::Timeout, "x");
        assert_eq!(r.record(&name, old, t0, fail.clone()), None);
        assert_eq!(r.record(&name, new, t0, fail), Some((None, true)));
    }

    #[test]
    fn duplicates_are_refused() {
        let mut r = Registry::default();
        r.add(spec("a"), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            r.add(spec("a"), SystemTime::UNIX_EPOCH),
            Err(AddError::Duplicate)
        );
    }

    #[test]
    fn listings_are_by_name_whatever_the_order_of_adds_and_removes() {
        let mut r = Registry::default();
        for n in ["c", "a", "d", "b"] {
            r.add(spec(n), SystemTime::UNIX_EPOCH).unwrap();
        }
        r.remove(&TargetName::new("d").unwrap());
        let names: Vec<String> = r.iter().map(|e| e.spec.name.to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let after_a: Vec<String> = r
            .iter_after(Some(&TargetName::new("a").unwrap()))
            .map(|e| e.spec.name.to_string())
            .collect();
        assert_eq!(after_a, ["b", "c"]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn in_a_cluster_the_counts_follow_the_answer_not_this_nodes_own_checks() {
        let mut r = Registry::clustered();
        let t0 = SystemTime::UNIX_EPOCH;
        let gen_a = r.add(spec("a"), t0).unwrap();
        r.add(spec("b"), t0).unwrap();
        let a = TargetName::new("a").unwrap();
        let count = |r: &Registry, s: Status| r.counts().iter().find(|c| c.0 == s).unwrap().1;
        // This node's own check of `a` fails three times (fall = 3): its state turns
        // unhealthy, but the answer (another owner's, say) is still unknown.
        let fail = Outcome::failure(Duration::from_millis(1), None, ErrorKind::Timeout, "x");
        for _ in 0..3 {
            r.record(&a, gen_a, t0, fail.clone()).unwrap();
        }
        assert_eq!(r.get(&a).unwrap().state.status(), Status::Unhealthy);
        assert_eq!(r.get(&a).unwrap().status(), Status::Unknown);
        assert_eq!(count(&r, Status::Unknown), 2);
        assert_eq!(
            r.set_answer(&a, Status::Healthy, true),
            Some(Status::Unknown)
        );
        assert_eq!(
            (count(&r, Status::Healthy), count(&r, Status::Unknown)),
            (1, 1)
        );
        // A new owner's state does not move the counts either.
        assert!(r.set_state(&a, CheckState::new(t0)));
        assert_eq!(count(&r, Status::Healthy), 1);
        r.remove(&a);
        assert_eq!(
            (count(&r, Status::Healthy), count(&r, Status::Unknown)),
            (0, 1)
        );
    }

    #[test]
    fn a_single_agent_registry_has_no_answer_to_set() {
        let mut r = Registry::default();
        r.add(spec("a"), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            r.set_answer(&TargetName::new("a").unwrap(), Status::Healthy, false),
            None
        );
        assert_eq!(r.counts()[0], (Status::Unknown, 1));
    }

    #[test]
    fn an_upsert_replaces_the_spec_with_a_new_generation_and_keeps_the_state() {
        let mut r = Registry::clustered();
        let t0 = SystemTime::UNIX_EPOCH;
        let a = TargetName::new("a").unwrap();
        assert!(r.upsert(spec("a"), t0).is_none());
        let old_gen = r.get(&a).unwrap().generation;
        r.set_answer(&a, Status::Healthy, false);
        let mut changed = spec("a");
        changed.interval = Duration::from_secs(77);
        let replaced = r.upsert(changed, t0).unwrap();
        assert_eq!(replaced.interval, spec("a").interval);
        let e = r.get(&a).unwrap();
        assert_eq!(e.spec.interval, Duration::from_secs(77));
        assert_ne!(e.generation, old_gen);
        assert_eq!(e.status(), Status::Healthy);
        assert_eq!(r.len(), 1);
    }
}
