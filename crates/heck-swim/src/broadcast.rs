//! Dissemination: one queue of things to piggyback (membership updates, other layers'
//! payloads), each sent a bounded number of times, least-sent first.
//!
//! Invariant: an item that [`Invalidates`] a queued one replaces it, so the queue holds at most
//! one update per member.

/// Whether a new item makes a queued one pointless to send (a newer update about the same member).
pub trait Invalidates {
    /// True if `self` replaces `older`.
    fn invalidates(&self, older: &Self) -> bool;
}

#[derive(Debug, Clone)]
struct Entry<T> {
    item: T,
    /// Transmissions left; the entry is dropped at zero.
    left: u32,
}

/// A queue of items to piggyback, each sent up to its transmission count.
#[derive(Debug, Clone)]
pub struct Broadcasts<T> {
    entries: Vec<Entry<T>>,
}

impl<T> Default for Broadcasts<T> {
    fn default() -> Self {
        Broadcasts {
            entries: Vec::new(),
        }
    }
}

impl<T: Clone + Invalidates> Broadcasts<T> {
    /// Queue `item` for `transmits` sends, replacing what it invalidates.
    pub fn push(&mut self, item: T, transmits: u32) {
        self.entries.retain(|e| !item.invalidates(&e.item));
        self.entries.push(Entry {
            item,
            left: transmits,
        });
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Up to `max` items for one packet, least-sent first, each counted as one transmission.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.left));
        let take = max.min(self.entries.len());
        let mut out = Vec::with_capacity(take);
        for e in self.entries.iter_mut().take(take) {
            out.push(e.item.clone());
            e.left = e.left.saturating_sub(1);
        }
        self.entries.retain(|e| e.left > 0);
        out
    }
}
