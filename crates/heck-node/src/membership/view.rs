//! What the API reads of the cluster driver: the member list, and counters published by the
//! driver (transport, push-pull, SWIM, the cluster's decisions, snapshots).
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use heck_swim::State;
use serde::Serialize;

use super::persist::PersistCounts;
use super::push_pull::{PushPullCounts, PushPullStats};

/// A member as `GET /v1/members` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    /// Name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: &'static str,
    /// Incarnation.
    pub incarnation: u64,
}

/// Counters of the transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Packets dropped because they did not open (wrong key or cluster, tampered, garbage).
    pub dropped_bad: AtomicU64,
    /// Packets that could not be sent.
    pub send_errors: AtomicU64,
    /// Stream frames on a channel this node does not serve, or sync messages that did not
    /// decode or named a sender other than the authenticated peer.
    pub stream_unhandled: AtomicU64,
    /// SWIM datagrams sent, and their bytes (sealed).
    pub swim_sent: AtomicU64,
    /// Bytes of SWIM datagrams sent.
    pub swim_sent_bytes: AtomicU64,
    /// SWIM datagrams received (opened or not), and their bytes.
    pub swim_received: AtomicU64,
    /// Bytes of SWIM datagrams received.
    pub swim_received_bytes: AtomicU64,
    /// Sync messages not sent: no live member at the address, or the stream refused (full
    /// queue, too large).
    pub sync_unsent: AtomicU64,
    /// Check results the shards could not hand to this task (its input queue was full); the
    /// target's next check reports again.
    pub checks_dropped: AtomicU64,
}

/// The cluster's state at one moment, for `/v1/node` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterCounts {
    /// Targets this node checks now.
    pub owned_targets: usize,
    /// Live members (alive or suspect), this node included.
    pub live_members: usize,
    /// Targets that exist in the cluster (the config file's and the API's, minus deletions).
    pub targets: usize,
    /// Targets whose answer is contested (concurrent observations).
    pub contested: usize,
    /// Delta groups waiting for some peer's acknowledgement.
    pub deltas_pending: usize,
    /// Owners per target.
    pub replicas: usize,
    /// Settled (owning targets) after joining.
    pub settled: bool,
    /// The decisions' counters: writes, reseeds, ignored checks, unroutable sync messages, …
    pub decisions: heck_cluster::Stats,
    /// The CRDT replica's anti-entropy counters.
    pub sync: heck_crdt::Stats,
}

/// What the API reads.
#[derive(Debug, Default)]
pub struct MembershipView {
    pub(super) members: Mutex<Vec<MemberView>>,
    /// Transport counters.
    pub stats: TransportStats,
    /// Push-pull counters (exchanges we started, requests we served, states refused).
    pub push_pull: PushPullStats,
    /// SWIM's own counters, as of the last batch of effects.
    pub(super) swim: Mutex<heck_swim::Stats>,
    /// The cluster's counters, refreshed every second.
    pub(super) cluster: Mutex<ClusterCounts>,
    /// Snapshot counters, when the node has a data dir.
    pub(super) persist: Mutex<Option<PersistCounts>>,
    /// The stream transport, once started (for its counters).
    pub(super) stream: Mutex<Option<heck_stream::Stream>>,
}

impl MembershipView {
    /// Every member, this node first.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// SWIM's counters: failed probes, refutations, deaths declared, packets dropped as stale
    /// (replay window), misdirected pings, dropped broadcasts, push-pull states merged
    /// (periodic and join).
    pub fn swim_stats(&self) -> heck_swim::Stats {
        self.swim.lock().map(|s| *s).unwrap_or_default()
    }

    /// The cluster's counters as of the last refresh (every second).
    pub fn cluster_counts(&self) -> ClusterCounts {
        self.cluster.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The snapshot counters (`None` without `--data-dir`).
    pub fn persist_counts(&self) -> Option<PersistCounts> {
        self.persist.lock().ok().and_then(|p| {
            p.as_ref().map(|c| PersistCounts {
                written: c.written,
                last_bytes: c.last_bytes,
                unchanged: c.unchanged,
                failed: c.failed,
            })
        })
    }

    /// The push-pull counters at this moment.
    pub fn push_pull_stats(&self) -> PushPullCounts {
        self.push_pull.snapshot()
    }

    /// The stream transport's counters (traffic per channel, rejects by reason, drops), once
    /// it runs.
    pub fn stream_stats(&self) -> Option<heck_stream::Stats> {
        self.stream
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.stats()))
    }
}

pub(super) fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}
