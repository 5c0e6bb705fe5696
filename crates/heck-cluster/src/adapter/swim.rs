//! heck-swim: membership. Turns SWIM's effects into the cluster's vocabulary.
use std::time::Duration;

use heck_swim::{
    ConfigError, Effect, Notification, Now, Packet, PushPullState, State, Swim, Timer,
};
use serde::Serialize;

use heck_check::NodeName;

/// What membership said, in cluster terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<A> {
    /// Send a SWIM packet.
    Send(A, Packet<A>),
    /// Exchange full member lists with the member at `A` over the stream transport
    /// (`join`: part of joining, to a seed).
    PushPull(A, bool),
    /// Deliver this SWIM timer later.
    Schedule(Duration, Timer),
    /// `name` is live (alive or suspect: a suspect still checks).
    Live(NodeName),
    /// `name` is suspected (still live, for ownership).
    Suspect(NodeName),
    /// `name` is dead or left: no longer an owner.
    Gone(NodeName),
    /// Packets from `from` are dropped: its clock and ours disagree by `skew_ms` (ours − its)
    /// beyond the replay window. Reported once per sender, for a log line.
    ClockSkew(String, i64),
}

/// The SWIM state machine, seen through [`Event`]s.
#[derive(Debug)]
pub struct Membership<A> {
    swim: Swim<A>,
}

impl<A: Clone + PartialEq + Serialize> Membership<A> {
    /// Member `name` at `addr`; refuses a `config` heck-swim refuses.
    pub fn new(
        name: &NodeName,
        addr: A,
        incarnation: u64,
        config: heck_swim::Config,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        Ok(Membership {
            swim: Swim::new(name.as_str(), addr, incarnation, config, seed)?,
        })
    }

    /// Announce to `seeds`, start the timers.
    pub fn start(&mut self, now: Now, seeds: Vec<A>) -> Vec<Event<A>> {
        convert(self.swim.start(now, seeds))
    }

    /// A packet arrived (opened and authenticated by the driver; replies go to its sealed
    /// sender address, never to the datagram's source).
    pub fn handle_packet(&mut self, now: Now, p: Packet<A>) -> Vec<Event<A>> {
        convert(self.swim.handle_packet(now, p))
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Now, t: Timer) -> Vec<Event<A>> {
        convert(self.swim.handle_timer(now, t))
    }

    /// Everything this member knows, itself included: what a push-pull sends, and what it
    /// answers a peer's push-pull with (taken *before* merging the peer's state).
    pub fn local_state(&self) -> PushPullState<A> {
        self.swim.local_state()
    }

    /// A push-pull peer's state arrived (its request, or its reply to ours).
    pub fn handle_push_pull(
        &mut self,
        now: Now,
        remote: PushPullState<A>,
        join: bool,
    ) -> Vec<Event<A>> {
        convert(self.swim.handle_push_pull(now, remote, join))
    }

    /// Leave gracefully.
    pub fn leave(&mut self, now: Now) -> Vec<Event<A>> {
        convert(self.swim.leave(now))
    }

    /// The address of a live member.
    pub fn addr_of(&self, name: &str) -> Option<A> {
        self.swim
            .live()
            .find(|m| m.name == name)
            .map(|m| m.addr.clone())
    }

    /// Every other member known: name, state, incarnation.
    pub fn members(&self) -> impl Iterator<Item = (&str, State, u64)> {
        self.swim
            .members()
            .map(|m| (m.name.as_str(), m.state, m.incarnation))
    }

    /// This node's own member record, then every other member known, with addresses.
    pub fn records(&self) -> impl Iterator<Item = &heck_swim::Member<A>> {
        std::iter::once(self.swim.me()).chain(self.swim.members())
    }

    /// Counters.
    pub fn stats(&self) -> heck_swim::Stats {
        self.swim.stats()
    }
}

fn convert<A>(fx: Vec<Effect<A>>) -> Vec<Event<A>> {
    let name = |n: String| NodeName::new(n).ok();
    fx.into_iter()
        .filter_map(|e| match e {
            Effect::Send { to, packet } => Some(Event::Send(to, packet)),
            Effect::PushPull { to, join } => Some(Event::PushPull(to, join)),
            Effect::Schedule { after, timer } => Some(Event::Schedule(after, timer)),
            Effect::Notify(Notification::Up(n)) => name(n).map(Event::Live),
            Effect::Notify(Notification::Suspect(n)) => name(n).map(Event::Suspect),
            Effect::Notify(Notification::Down(n) | Notification::Left(n)) => {
                name(n).map(Event::Gone)
            }
            Effect::Notify(Notification::ClockSkew { from, skew_ms }) => {
                Some(Event::ClockSkew(from, skew_ms))
            }
            // The cluster does not use SWIM's payload channel: deltas need an addressed,
            // acknowledged transport (review S2).
            Effect::Notify(Notification::Payload(_)) => None,
        })
        .collect()
}
