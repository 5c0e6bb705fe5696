//! Counters: traffic per channel and direction, rejects by reason, drops by cause.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::{Channel, Reject};

/// Why a frame we had was not delivered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dropped {
    /// The peer's outbound queue was full.
    SendQueueFull,
    /// The peer could not be dialled (or is in its backoff).
    Unreachable,
    /// The write failed (the connection broke).
    SendFailed,
    /// [`crate::Incoming`] was full.
    IncomingFull,
    /// A response could not be queued.
    ReplyFailed,
    /// More than `max_frame` bytes.
    TooLarge,
}

const DROPS: [(Dropped, &str); 6] = [
    (Dropped::SendQueueFull, "send_queue_full"),
    (Dropped::Unreachable, "unreachable"),
    (Dropped::SendFailed, "send_failed"),
    (Dropped::IncomingFull, "incoming_full"),
    (Dropped::ReplyFailed, "reply_failed"),
    (Dropped::TooLarge, "too_large"),
];

/// Frames and payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Frames.
    pub frames: u64,
    /// Payload bytes (without framing and encryption).
    pub bytes: u64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Sent, by channel name.
    pub sent: BTreeMap<&'static str, Traffic>,
    /// Received and authenticated, by channel name (those [`crate::Incoming`] had no room for
    /// are also counted in `dropped.incoming_full`).
    pub received: BTreeMap<&'static str, Traffic>,
    /// Refused input, by reason ([`Reject::name`]).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Frames not delivered, by cause: `send_queue_full`, `unreachable`, `send_failed`,
    /// `incoming_full`, `reply_failed`, `too_large`.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Outbound connections established (handshake done).
    pub dialed: u64,
    /// Inbound connections established (handshake done).
    pub accepted: u64,
}

#[derive(Debug, Default)]
struct Pair {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Pair {
    fn add(&self, bytes: usize) {
        self.frames.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    fn get(&self) -> Traffic {
        Traffic {
            frames: self.frames.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: [Pair; Channel::ALL.len()],
    received: [Pair; Channel::ALL.len()],
    rejected: [AtomicU64; Reject::ALL.len()],
    dropped: [AtomicU64; DROPS.len()],
    dialed: AtomicU64,
    accepted: AtomicU64,
}

fn channel_index(c: Channel) -> usize {
    Channel::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

impl Counters {
    pub(crate) fn sent(&self, c: Channel, bytes: usize) {
        self.sent[channel_index(c)].add(bytes);
    }

    pub(crate) fn received(&self, c: Channel, bytes: usize) {
        self.received[channel_index(c)].add(bytes);
    }

    pub(crate) fn reject(&self, r: Reject) {
        if let Some(i) = Reject::ALL.iter().position(|x| *x == r) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn drop(&self, d: Dropped) {
        self.dropped[d as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn dialed(&self) {
        self.dialed.fetch_add(1, Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            sent: Channel::ALL
                .iter()
                .map(|c| (c.name(), self.sent[channel_index(*c)].get()))
                .collect(),
            received: Channel::ALL
                .iter()
                .map(|c| (c.name(), self.received[channel_index(*c)].get()))
                .collect(),
            rejected: Reject::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(r, n)| (r.name(), n.load(Relaxed)))
                .collect(),
            dropped: DROPS
                .iter()
                .map(|(d, name)| (*name, self.dropped[*d as usize].load(Relaxed)))
                .collect(),
            dialed: self.dialed.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
        }
    }
}

impl Stats {
    /// Rejects for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected.get(reason.name()).copied().unwrap_or(0)
    }
}
