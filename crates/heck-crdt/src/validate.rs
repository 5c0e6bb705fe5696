//! Validation of what arrives: a decoder checks the shape of a message, this checks what a
//! shape cannot say. Everything received is validated before it is joined; a failure refuses
//! the whole message (see `Replica::handle_message`, which counts it).
use crate::causal::{CausalContext, Dot, ReplicaId};
use crate::ormap::Delta;

/// Counters above this are refused in anything received: a replica that writes a million times a
/// second needs nine years to reach it, and a context entry near `u64::MAX` from a peer would make
/// every future write of that replica look already seen (and overflow `next_dot`).
pub const MAX_COUNTER: u64 = 1 << 48;

/// Why a received delta (or state) was refused. Nothing of it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// An entry whose dot its own context does not hold: joined, it would be an entry nobody
    /// can ever remove consistently.
    DotOutsideContext(Dot),
    /// One dot under two keys: a dot names one write.
    DotUnderTwoKeys(Dot),
    /// A counter of 0 (dots count from 1) or above [`MAX_COUNTER`].
    CounterOutOfRange {
        /// Whose.
        replica: ReplicaId,
        /// The counter.
        counter: u64,
    },
    /// A dot of the receiver itself that it never issued: someone claims to have seen writes
    /// this replica has not made yet (they would be dropped as "seen" when it makes them).
    FutureOfReceiver(Dot),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::DotOutsideContext(d) => {
                write!(
                    f,
                    "entry dot {}:{} missing from its context",
                    d.replica, d.counter
                )
            }
            Invalid::DotUnderTwoKeys(d) => {
                write!(f, "dot {}:{} under two keys", d.replica, d.counter)
            }
            Invalid::CounterOutOfRange { replica, counter } => {
                write!(
                    f,
                    "counter {counter} of {replica} outside 1..={MAX_COUNTER}"
                )
            }
            Invalid::FutureOfReceiver(d) => {
                write!(
                    f,
                    "dot {}:{} of the receiver that it never issued",
                    d.replica, d.counter
                )
            }
        }
    }
}

impl std::error::Error for Invalid {}

/// Check a received context's counters (see [`MAX_COUNTER`]).
pub fn validate_context(ctx: &CausalContext) -> Result<(), Invalid> {
    let vv = ctx.vv().iter().chain(ctx.retired().iter());
    let vv = vv.map(|(r, &n)| (*r, n));
    let cloud = ctx.cloud().iter().map(|d| (d.replica, d.counter));
    for (replica, counter) in vv.chain(cloud) {
        if counter == 0 || counter > MAX_COUNTER {
            return Err(Invalid::CounterOutOfRange { replica, counter });
        }
    }
    Ok(())
}

impl<K: Ord + Clone, V: Clone + PartialEq> Delta<K, V> {
    /// Check what a decoder cannot: every entry's dot is in the context, no dot is under two
    /// keys, every counter is in range. Run on everything received before joining it.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_context(&self.ctx)?;
        let mut seen = std::collections::HashSet::new();
        for m in self.entries.values() {
            for d in m.keys() {
                if d.counter == 0 || d.counter > MAX_COUNTER {
                    return Err(Invalid::CounterOutOfRange {
                        replica: d.replica,
                        counter: d.counter,
                    });
                }
                if !self.ctx.contains(d) {
                    return Err(Invalid::DotOutsideContext(*d));
                }
                if !seen.insert(*d) {
                    return Err(Invalid::DotUnderTwoKeys(*d));
                }
            }
        }
        Ok(())
    }
}
