//! Protocol parameters, with memberlist's LAN profile and a faster one for a single machine.
use std::time::Duration;

/// Protocol parameters. See [`Config::lan`] and [`Config::fast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Time between two probes by this member (scaled by the local health multiplier).
    pub probe_interval: Duration,
    /// Time to wait for a direct Ack before asking helpers (scaled likewise); < probe_interval.
    pub probe_timeout: Duration,
    /// Helpers asked to probe indirectly (k).
    pub indirect_checks: usize,
    /// Time between two gossip rounds (pending updates to `gossip_nodes` random members).
    pub gossip_interval: Duration,
    /// Members gossiped to per round.
    pub gossip_nodes: usize,
    /// λ: each update is sent λ·⌈log10(n+1)⌉ times.
    pub retransmit_mult: u32,
    /// α: the suspicion timeout is at least α·max(1, log10 n)·probe interval.
    pub suspicion_mult: u32,
    /// β: the suspicion timeout starts at β times its minimum.
    pub suspicion_max_mult: u32,
    /// Largest local health multiplier (Lifeguard's awareness).
    pub awareness_max: u32,
    /// Time between two re-announcements to a seed (and to a dead member, to heal partitions).
    pub announce_interval: Duration,
    /// Largest sealed datagram in bytes (memberlist's UDPBufferSize: 1,400 fits an Ethernet MTU
    /// with room for IP and UDP headers). Updates and payloads are piggybacked only as far as
    /// they fit; a join reply samples the members that fit; a payload too large for it is
    /// refused (it belongs on the stream transport). 512 ..= `wire::MAX_PACKET`.
    pub packet_budget: usize,
    /// How long a dead or left member is remembered (memberlist's GossipToTheDeadTime): long
    /// enough for its death to spread and for it to hear of it and refute, and for a stale Alive
    /// at its old incarnation to be refused. After this it is forgotten when the probe round
    /// wraps; if it comes back it joins as new. Above zero; LAN 30 s.
    pub reap_after: Duration,
    /// A packet sealed more than this long before or after our wall clock is dropped and
    /// counted, so a captured packet cannot be replayed later. Must exceed the clock skew
    /// between members plus the network delay; above zero. 60 s in both profiles.
    pub replay_window: Duration,
    /// Time between two push-pull exchanges (full member state with one random alive member
    /// over the stream transport), scaled up past 32 members by
    /// [`crate::push_pull::scaled_interval`]. Above zero; LAN 30 s (memberlist).
    pub push_pull_interval: Duration,
}

impl Config {
    /// memberlist's LAN profile (Consul, Nomad): probe 1 s, timeout 500 ms, 3 indirect probes,
    /// gossip every 200 ms to 3 members, α = 4, β = 6, awareness up to 8.
    pub fn lan() -> Config {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            awareness_max: 8,
            announce_interval: Duration::from_secs(10),
            packet_budget: 1400,
            reap_after: Duration::from_secs(30),
            replay_window: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(30),
        }
    }

    /// Five times faster than LAN, for a cluster on one machine or rack.
    pub fn fast() -> Config {
        Config {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(50),
            announce_interval: Duration::from_secs(2),
            reap_after: Duration::from_secs(6),
            push_pull_interval: Duration::from_secs(6),
            ..Config::lan()
        }
    }

    /// Check every limit; [`crate::Swim::new`] refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("probe_interval", self.probe_interval.is_zero()),
            ("probe_timeout", self.probe_timeout.is_zero()),
            ("gossip_interval", self.gossip_interval.is_zero()),
            ("announce_interval", self.announce_interval.is_zero()),
            ("retransmit_mult", self.retransmit_mult == 0),
            ("suspicion_mult", self.suspicion_mult == 0),
            ("suspicion_max_mult", self.suspicion_max_mult == 0),
            ("reap_after", self.reap_after.is_zero()),
            ("replay_window", self.replay_window.is_zero()),
            ("push_pull_interval", self.push_pull_interval.is_zero()),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(field));
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::ProbeTimeoutNotBelowInterval {
                timeout: self.probe_timeout,
                interval: self.probe_interval,
            });
        }
        if !(MIN_PACKET_BUDGET..=crate::wire::MAX_PACKET).contains(&self.packet_budget) {
            return Err(ConfigError::PacketBudget {
                bytes: self.packet_budget,
                min: MIN_PACKET_BUDGET,
                max: crate::wire::MAX_PACKET,
            });
        }
        Ok(())
    }
}

/// The smallest `packet_budget`: room for a header with long names and a few updates.
pub const MIN_PACKET_BUDGET: usize = 512;

/// Why a [`Config`] is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration or count that must be positive is zero.
    Zero(&'static str),
    /// The direct-probe timeout must leave time for the indirect probes within the interval.
    ProbeTimeoutNotBelowInterval {
        /// `probe_timeout`.
        timeout: Duration,
        /// `probe_interval`.
        interval: Duration,
    },
    /// `packet_budget` out of range.
    PacketBudget {
        /// Configured.
        bytes: usize,
        /// Least accepted.
        min: usize,
        /// Most accepted.
        max: usize,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Zero(field) => write!(f, "membership: `{field}` must be above zero"),
            ConfigError::ProbeTimeoutNotBelowInterval { timeout, interval } => write!(
                f,
                "membership: probe_timeout ({timeout:?}) must be below probe_interval \
                 ({interval:?}), to leave time for indirect probes"
            ),
            ConfigError::PacketBudget { bytes, min, max } => write!(
                f,
                "membership: packet_budget of {bytes} bytes is outside {min}..={max}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_are_valid_and_a_timeout_at_the_interval_is_refused() {
        assert_eq!(Config::lan().validate(), Ok(()));
        assert_eq!(Config::fast().validate(), Ok(()));
        let c = Config {
            probe_timeout: Duration::from_secs(1),
            ..Config::lan()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ProbeTimeoutNotBelowInterval { .. })
        ));
        let c = Config {
            retransmit_mult: 0,
            ..Config::lan()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("retransmit_mult")));
    }
}
