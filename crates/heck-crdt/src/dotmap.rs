//! The values of one key, by dot: a map kept as a sorted vector.
//!
//! Why not a `BTreeMap<Dot, V>`: a key of the OR-map almost always holds one value (two or three
//! while concurrent writes are siblings), and a B-tree leaf has room for eleven. With heck-cluster's
//! 64-byte values that is about 1 KB per key, most of it empty slots: at 100,000 targets, about
//! 100 MB of every node's memory (docs/benchmarks.md, "Version 2"). A vector of one value is one
//! 88-byte allocation. Lookups are a binary search over a handful of entries.
//!
//! It behaves like the map it replaces: dots are unique and ordered, iteration is in dot order,
//! and it is encoded exactly as a `BTreeMap<Dot, V>` is (a map, in dot order), so the wire format
//! and snapshots do not change. Decoding takes entries in any order and keeps the last value of a
//! repeated dot, as a `BTreeMap` does.
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::causal::Dot;

/// Values by dot, in dot order (see the module's doc).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DotMap<V>(Vec<(Dot, V)>);

impl<V> Default for DotMap<V> {
    fn default() -> Self {
        DotMap(Vec::new())
    }
}

impl<V> DotMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        DotMap(Vec::new())
    }

    fn find(&self, dot: &Dot) -> Result<usize, usize> {
        self.0.binary_search_by(|(d, _)| d.cmp(dot))
    }

    /// The value at `dot`.
    pub fn get(&self, dot: &Dot) -> Option<&V> {
        self.find(dot).ok().map(|i| &self.0[i].1)
    }

    /// Is there a value at `dot`?
    pub fn contains_key(&self, dot: &Dot) -> bool {
        self.find(dot).is_ok()
    }

    /// Set the value at `dot`; returns the one it replaces.
    pub fn insert(&mut self, dot: Dot, value: V) -> Option<V> {
        match self.find(&dot) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (dot, value));
                None
            }
        }
    }

    /// Take the value at `dot` out.
    pub fn remove(&mut self, dot: &Dot) -> Option<V> {
        self.find(dot).ok().map(|i| self.0.remove(i).1)
    }

    /// Keep only the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&Dot, &mut V) -> bool) {
        self.0.retain_mut(|(d, v)| keep(d, v));
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No values?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The dots, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Dot> + ExactSizeIterator {
        self.0.iter().map(|(d, _)| d)
    }

    /// The values, in dot order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// (dot, value) pairs, in dot order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Dot, &V)> + ExactSizeIterator {
        self.0.iter().map(|(d, v)| (d, v))
    }
}

impl<V: fmt::Debug> fmt::Debug for DotMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> FromIterator<(Dot, V)> for DotMap<V> {
    /// Any order; a repeated dot keeps its last value (as collecting into a `BTreeMap` does).
    fn from_iter<I: IntoIterator<Item = (Dot, V)>>(iter: I) -> Self {
        let mut out = DotMap::new();
        for (d, v) in iter {
            out.insert(d, v);
        }
        out
    }
}

impl<V, const N: usize> From<[(Dot, V); N]> for DotMap<V> {
    fn from(entries: [(Dot, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a, V> IntoIterator for &'a DotMap<V> {
    type Item = (&'a Dot, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Dot, V)>, fn(&'a (Dot, V)) -> (&'a Dot, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(d, v)| (d, v))
    }
}

impl<V> IntoIterator for DotMap<V> {
    type Item = (Dot, V);
    type IntoIter = std::vec::IntoIter<(Dot, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<V: Serialize> Serialize for DotMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (d, v) in &self.0 {
            map.serialize_entry(d, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for DotMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = DotMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from dots to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<DotMap<V>, A::Error> {
                // No capacity from the claimed length: a peer may claim 2⁶⁴ entries in a few
                // bytes (the decoders' fuzz tests bound what a decode may allocate).
                let mut out = DotMap::new();
                while let Some((d, v)) = access.next_entry::<Dot, V>()? {
                    // In order (as encoded) each lands at the end; otherwise it sorts as it goes.
                    out.insert(d, v);
                }
                Ok(out)
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::causal::ReplicaId;

    fn dot(r: u64, c: u64) -> Dot {
        Dot {
            replica: ReplicaId { node: r, epoch: 1 },
            counter: c,
        }
    }

    proptest! {
        /// Any sequence of inserts, removes and retains leaves it equal to a `BTreeMap` fed the
        /// same, and both encode to the same bytes; decoding either's bytes gives it back.
        #[test]
        fn it_behaves_and_encodes_like_a_btreemap(
            ops in prop::collection::vec((0..3u8, 0..3u64, 0..6u64, any::<u16>()), 0..40)
        ) {
            let (mut ours, mut theirs) = (DotMap::new(), BTreeMap::new());
            for (op, r, c, v) in ops {
                let d = dot(r, c);
                match op {
                    0 => prop_assert_eq!(ours.insert(d, v), theirs.insert(d, v)),
                    1 => prop_assert_eq!(ours.remove(&d), theirs.remove(&d)),
                    _ => {
                        ours.retain(|x, val| x.counter != c || *val % 2 == 0);
                        theirs.retain(|x, val| x.counter != c || *val % 2 == 0);
                    }
                }
                prop_assert_eq!(ours.iter().collect::<Vec<_>>(), theirs.iter().collect::<Vec<_>>());
                prop_assert_eq!(ours.get(&d), theirs.get(&d));
                prop_assert_eq!(ours.len(), theirs.len());
            }
            let bytes = postcard::to_allocvec(&ours).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&theirs).unwrap());
            prop_assert_eq!(postcard::from_bytes::<DotMap<u16>>(&bytes).unwrap(), ours);
        }

        /// Entries decoded out of order, or repeated, give what a `BTreeMap` gives.
        #[test]
        fn any_order_decodes_like_a_btreemap(
            entries in prop::collection::vec((0..3u64, 0..6u64, any::<u16>()), 0..20)
        ) {
            let pairs: Vec<(Dot, u16)> = entries.into_iter().map(|(r, c, v)| (dot(r, c), v)).collect();
            // postcard encodes a map as its length and then the pairs: write them as given.
            let mut bytes = postcard::to_allocvec(&(pairs.len() as u64)).unwrap();
            for p in &pairs {
                bytes.extend(postcard::to_allocvec(p).unwrap());
            }
            let ours: DotMap<u16> = postcard::from_bytes(&bytes).unwrap();
            let theirs: BTreeMap<Dot, u16> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(ours.iter().collect::<Vec<_>>(), theirs.iter().collect::<Vec<_>>());
        }
    }
}
