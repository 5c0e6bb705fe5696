//! Dissemination: one bounded queue of things to piggyback (membership updates, other layers'
//! payloads), each sent a bounded number of times, least-sent first, as many as fit the bytes
//! left in a packet.
//!
//! Invariants: an item that [`Invalidates`] a queued one replaces it, so the queue holds at
//! most one update per member; the queue never holds more than its capacity (the entry closest
//! to done is dropped, and counted); an item is only ever put in a packet whole.
use serde::Serialize;

/// Whether a new item makes a queued one pointless to send (a newer update about the same member).
pub trait Invalidates {
    /// True if `self` replaces `older`.
    fn invalidates(&self, older: &Self) -> bool;
}

#[derive(Debug, Clone)]
struct Entry<T> {
    item: T,
    /// Its encoded size in bytes (postcard), measured once.
    size: usize,
    /// Transmissions left; the entry is dropped at zero.
    left: u32,
}

/// A bounded queue of items to piggyback, each sent up to its transmission count.
#[derive(Debug, Clone)]
pub struct Broadcasts<T> {
    entries: Vec<Entry<T>>,
    capacity: usize,
    dropped: u64,
}

impl<T: Clone + Invalidates + Serialize> Broadcasts<T> {
    /// An empty queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Broadcasts {
            entries: Vec::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Encoded size of `item` in bytes.
    pub fn size_of(item: &T) -> usize {
        postcard::to_allocvec(item).map_or(usize::MAX, |v| v.len())
    }

    /// Queue `item` for `transmits` sends, replacing what it invalidates. When full, the entry
    /// with the fewest sends left (the best spread already) makes room, and is counted.
    pub fn push(&mut self, item: T, transmits: u32) {
        self.entries.retain(|e| !item.invalidates(&e.item));
        if self.entries.len() >= self.capacity
            && let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].left)
        {
            self.entries.remove(i);
            self.dropped = self.dropped.saturating_add(1);
        }
        let size = Self::size_of(&item);
        self.entries.push(Entry {
            item,
            size,
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

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Items for one packet with `room` bytes left, least-sent first; an item that does not fit
    /// is skipped for a smaller one. Each item taken counts as one transmission and its size
    /// comes off `room`.
    pub fn take(&mut self, room: &mut usize) -> Vec<T> {
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.left));
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.size <= *room {
                *room -= e.size;
                out.push(e.item.clone());
                e.left = e.left.saturating_sub(1);
            }
        }
        self.entries.retain(|e| e.left > 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize)]
    struct Item(u8, Vec<u8>);

    impl Invalidates for Item {
        fn invalidates(&self, older: &Self) -> bool {
            self.0 == older.0
        }
    }

    #[test]
    fn the_queue_is_bounded_replaces_invalidated_items_and_fills_only_the_room_left() {
        let mut q = Broadcasts::new(2);
        q.push(Item(1, vec![0; 10]), 3);
        q.push(Item(1, vec![0; 20]), 3);
        assert_eq!(q.len(), 1, "the newer item about 1 replaced the older");
        q.push(Item(2, vec![0; 100]), 1);
        q.push(Item(3, vec![0; 5]), 2);
        assert_eq!(
            (q.len(), q.dropped()),
            (2, 1),
            "full: the one closest to done went"
        );
        let mut room = 15;
        let got = q.take(&mut room);
        assert_eq!(
            got,
            vec![Item(3, vec![0; 5])],
            "the 20-byte one does not fit"
        );
        assert_eq!(room, 8);
    }
}
