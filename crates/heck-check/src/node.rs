//! [`NodeName`]: the one type for "which heck process", beside [`TargetName`](crate::TargetName)
//! for "which server": SWIM's member, what rendezvous hashing ranks, a status record's observer.
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's stable name (`--node-name`): what SWIM calls a member, what rendezvous hashing ranks,
/// what a status record names as its observer. Cheap to clone (one shared allocation).
///
/// A name is never empty; it is compared as bytes, so the order (used to break ties in the
/// answer rule) is the same on every platform.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(Arc<str>);

/// Longest accepted name, in bytes (a SWIM packet carries several).
pub const MAX_NODE_NAME_LEN: usize = 128;

impl NodeName {
    /// Validate a name: 1..=128 bytes, no control characters.
    pub fn new(name: impl AsRef<str>) -> Result<NodeName, String> {
        let name = name.as_ref();
        if name.is_empty() {
            return Err("a node name must not be empty".into());
        }
        if name.len() > MAX_NODE_NAME_LEN {
            return Err(format!(
                "node name is {} bytes long, at most {MAX_NODE_NAME_LEN}",
                name.len()
            ));
        }
        if name.chars().any(char::is_control) {
            return Err("a node name must not contain control characters".into());
        }
        Ok(NodeName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// So a set of names can be searched with a `&str` (SWIM and heck-ownership speak `String`).
/// Consistent with `Eq`, `Ord` and `Hash`, which all follow the text.
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeName::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_long_and_control_names_are_refused() {
        assert!(NodeName::new("").is_err());
        assert!(NodeName::new("x".repeat(129)).is_err());
        assert!(NodeName::new("a\nb").is_err());
        assert_eq!(NodeName::new("n1").map(|n| n.to_string()), Ok("n1".into()));
    }

    #[test]
    fn a_bad_name_on_the_wire_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<NodeName>("\"\"").is_err());
        assert!(serde_json::from_str::<NodeName>("\"a\\u0000b\"").is_err());
        let n: NodeName = serde_json::from_str("\"n1\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.as_str(), "n1");
    }
}
