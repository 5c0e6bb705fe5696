//! What goes on the wire ([`Packet`], [`Body`]) and what the state machine asks of its driver
//! ([`Effect`], [`Timer`], [`Notification`]).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::member::{Member, Update};

/// What a packet asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<A> {
    /// "Are you alive, `target`?"
    Ping {
        /// Echo it in the Ack.
        seq: u64,
        /// Whom the sender means: a process at that address under another name (a restart
        /// with a new name) does not answer, so the old name is suspected, then declared dead.
        target: String,
    },
    /// "Yes."
    Ack {
        /// From the Ping.
        seq: u64,
    },
    /// "Please ping `target` for me."
    PingReq {
        /// Echo it in the Ack/Nack.
        seq: u64,
        /// Whom.
        target: String,
        /// Its address.
        addr: A,
    },
    /// "I pinged it for you and got nothing."
    Nack {
        /// From the PingReq.
        seq: u64,
    },
    /// "I want to join": answer with every member you know.
    Join,
    /// The members the answering node knows.
    JoinReply {
        /// Everyone, with state and incarnation.
        members: Vec<Member<A>>,
    },
    /// Only piggybacked updates.
    Gossip,
}

/// The two clocks the state machine reads, both passed in by the driver (this crate reads none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Now {
    /// Monotonic time since the driver started: timers, suspicions, reaping.
    pub mono: Duration,
    /// Wall-clock time since the Unix epoch: the timestamp sealed into each packet, and the
    /// replay window it is checked against (the only use: members' clocks may disagree a bit).
    pub wall: Duration,
}

impl Now {
    /// Wall-clock milliseconds since the Unix epoch, as packets carry it.
    pub fn wall_ms(&self) -> u64 {
        u64::try_from(self.wall.as_millis()).unwrap_or(u64::MAX)
    }
}

/// One datagram: who sends it, what it asks, and piggybacked updates and payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet<A> {
    /// The sender's name.
    pub from: String,
    /// The sender's address, sealed with the packet: every reply goes here, never to the
    /// datagram's source address (which anyone can spoof to reflect a reply at a victim).
    pub from_addr: A,
    /// When it was sealed, in wall-clock milliseconds since the Unix epoch; a packet outside
    /// the receiver's replay window is dropped (a captured packet replayed later is useless).
    pub sent_at_ms: u64,
    /// What it asks.
    pub body: Body<A>,
    /// Membership updates.
    pub updates: Vec<Update<A>>,
    /// Other layers' payloads (opaque).
    pub payloads: Vec<Vec<u8>>,
}

/// Timers the driver delivers back with [`Swim::handle_timer`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Start the next probe.
    Probe,
    /// The direct-probe deadline of probe `seq`.
    ProbeTimeout(u64),
    /// The end of probe `seq`'s period.
    ProbeEnd(u64),
    /// The deadline of an indirect probe we run for someone.
    IndirectTimeout(u64),
    /// Check the suspicion of `name`.
    Suspicion(String),
    /// Gossip round.
    Gossip,
    /// Re-announce to a seed.
    Announce,
    /// Push-pull with a random member.
    PushPull,
}

/// What membership tells the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A member joined, or came back.
    Up(String),
    /// A member is suspected.
    Suspect(String),
    /// A member was declared dead.
    Down(String),
    /// A member left.
    Left(String),
    /// Another layer's payload arrived.
    Payload(Vec<u8>),
    /// Packets from `from` are dropped because its clock and ours disagree by more than the
    /// replay window (`skew_ms` = our clock − its clock). Sent once per sender, again only after
    /// one of its packets was accepted: the driver can log it as one line.
    ClockSkew {
        /// The sender's name (authenticated: the packet opened with our key).
        from: String,
        /// Our wall clock minus the sender's, in milliseconds.
        skew_ms: i64,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<A> {
    /// Send `packet` to `to`.
    Send {
        /// Address.
        to: A,
        /// The packet.
        packet: Packet<A>,
    },
    /// Deliver `timer` after `after`.
    Schedule {
        /// Delay.
        after: Duration,
        /// Timer.
        timer: Timer,
    },
    /// Tell the layers above.
    Notify(Notification),
    /// Exchange full state with the member at `to` over the stream transport: send it
    /// [`crate::Swim::local_state`] (with `join`), hand its reply to
    /// [`crate::Swim::handle_push_pull`]. On a failed exchange, nothing to do: the timer retries.
    PushPull {
        /// Address.
        to: A,
        /// Part of joining (to a seed) rather than the periodic exchange.
        join: bool,
    },
}
