//! The state of one probe this member runs: the target, whether it answered, and the nacks of
//! the helpers asked to probe it indirectly (Lifeguard counts the missing ones against us).
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The member probed.
    pub(crate) target: String,
    /// An Ack arrived, directly or through a helper.
    pub(crate) acked: bool,
    /// Helpers asked (each should answer with an Ack or a Nack).
    pub(crate) helpers: BTreeSet<String>,
    /// Helpers that nacked: one each, however many copies arrive.
    pub(crate) nacked: BTreeSet<String>,
}

impl Probe {
    /// A Nack from `from`: counted if it is a helper we asked, once.
    pub(crate) fn nack(&mut self, from: &str) {
        if self.helpers.contains(from) {
            self.nacked.insert(from.to_string());
        }
    }

    /// Helpers that neither acked nor nacked; `None` if none was asked.
    pub(crate) fn missing_nacks(&self) -> Option<u32> {
        if self.helpers.is_empty() {
            return None;
        }
        let missing = self.helpers.len().saturating_sub(self.nacked.len());
        Some(u32::try_from(missing).unwrap_or(u32::MAX))
    }
}
