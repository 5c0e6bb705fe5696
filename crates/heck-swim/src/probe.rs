//! The state of one probe this member runs: the target, whether it answered, and the nacks of
//! the helpers asked to probe it indirectly (Lifeguard counts the missing ones against us).
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The member probed.
    pub(crate) target: String,
    /// An Ack arrived, directly or through a helper.
    pub(crate) acked: bool,
    /// Helpers asked (each should answer with an Ack or a Nack).
    pub(crate) expected_nacks: usize,
    /// Nacks received.
    pub(crate) nacks: usize,
}
