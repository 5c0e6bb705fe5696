//! heck-swim: membership. Turns SWIM's effects into the cluster's vocabulary.
use std::time::Duration;

use heck_swim::{Effect, Notification, Packet, State, Swim, Timer};

use crate::name::NodeName;

/// What membership said, in cluster terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<A> {
    /// Send a SWIM packet.
    Send(A, Packet<A>),
    /// Deliver this SWIM timer later.
    Schedule(Duration, Timer),
    /// `name` is live (alive or suspect: a suspect still checks).
    Live(NodeName),
    /// `name` is suspected (still live, for ownership).
    Suspect(NodeName),
    /// `name` is dead or left: no longer an owner.
    Gone(NodeName),
}

/// The SWIM state machine, seen through [`Event`]s.
#[derive(Debug)]
pub struct Membership<A> {
    swim: Swim<A>,
}

impl<A: Clone + PartialEq> Membership<A> {
    /// Member `name` at `addr`.
    pub fn new(
        name: &NodeName,
        addr: A,
        incarnation: u64,
        config: heck_swim::Config,
        seed: u64,
    ) -> Self {
        Membership {
            swim: Swim::new(name.as_str(), addr, incarnation, config, seed),
        }
    }

    /// Announce to `seeds`, start the timers.
    pub fn start(&mut self, seeds: Vec<A>) -> Vec<Event<A>> {
        let fx = self.swim.start(seeds);
        convert(fx)
    }

    /// A packet arrived.
    pub fn handle_packet(&mut self, now: Duration, from: A, p: Packet<A>) -> Vec<Event<A>> {
        let fx = self.swim.handle_packet(now, from, p);
        convert(fx)
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Duration, t: Timer) -> Vec<Event<A>> {
        let fx = self.swim.handle_timer(now, t);
        convert(fx)
    }

    /// Leave gracefully.
    pub fn leave(&mut self) -> Vec<Event<A>> {
        let fx = self.swim.leave();
        convert(fx)
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
            Effect::Schedule { after, timer } => Some(Event::Schedule(after, timer)),
            Effect::Notify(Notification::Up(n)) => name(n).map(Event::Live),
            Effect::Notify(Notification::Suspect(n)) => name(n).map(Event::Suspect),
            Effect::Notify(Notification::Down(n) | Notification::Left(n)) => {
                name(n).map(Event::Gone)
            }
            // The cluster does not use SWIM's payload channel: deltas need an addressed,
            // acknowledged transport (review S2).
            Effect::Notify(Notification::Payload(_)) => None,
        })
        .collect()
}
