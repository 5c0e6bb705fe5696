//! heck-ownership: the owners of every target over the live members (including this node).
use std::collections::BTreeMap;

use heck_check::TargetName;
use heck_ownership::{Assignment, Member, Move, OwnershipError};

use heck_check::NodeName;

/// A change of this node's own share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This node became one of the target's owners.
    Gained(TargetName),
    /// This node is no longer one of its owners.
    Lost(TargetName),
}

/// Rendezvous owners over the live members.
#[derive(Debug)]
pub struct Owners {
    me: NodeName,
    assignment: Assignment,
    weights: BTreeMap<NodeName, f64>,
    live: BTreeMap<NodeName, ()>,
}

impl Owners {
    /// Only `me` live, no targets.
    pub fn new(
        me: NodeName,
        replicas: usize,
        weights: BTreeMap<NodeName, f64>,
    ) -> Result<Owners, OwnershipError> {
        let member = member(&me, &weights)?;
        Ok(Owners {
            assignment: Assignment::new(vec![member], replicas)?,
            live: BTreeMap::from([(me.clone(), ())]),
            me,
            weights,
        })
    }

    /// Add a target; true if this node owns it.
    pub fn add_target(&mut self, t: &TargetName) -> bool {
        self.assignment.assign([t.as_str()]);
        self.rank(t).is_some()
    }

    /// Remove a target.
    pub fn remove_target(&mut self, t: &TargetName) {
        self.assignment.remove_target(t.as_str());
    }

    /// `name` is live (alive or suspect). Returns every target whose owners changed, and this
    /// node's gains and losses.
    pub fn join(&mut self, name: &NodeName) -> (Vec<TargetName>, Vec<Change>) {
        if self.live.contains_key(name) {
            return (Vec::new(), Vec::new());
        }
        let Ok(m) = member(name, &self.weights) else {
            return (Vec::new(), Vec::new());
        };
        let Ok(moves) = self.assignment.join(m) else {
            return (Vec::new(), Vec::new());
        };
        self.live.insert(name.clone(), ());
        self.changes(moves)
    }

    /// `name` is dead or left.
    pub fn leave(&mut self, name: &NodeName) -> (Vec<TargetName>, Vec<Change>) {
        if *name == self.me || self.live.remove(name).is_none() {
            return (Vec::new(), Vec::new());
        }
        let moves = self.assignment.leave(name.as_str());
        self.changes(moves)
    }

    fn changes(&self, moves: Vec<Move>) -> (Vec<TargetName>, Vec<Change>) {
        let mut moved = Vec::with_capacity(moves.len());
        let mut mine = Vec::new();
        for m in moves {
            // Names in the assignment came from `TargetName`s: they validate again.
            let Ok(t) = TargetName::new(m.target) else {
                continue;
            };
            if m.to.as_deref() == Some(self.me.as_str()) {
                mine.push(Change::Gained(t.clone()));
            } else if m.from.as_deref() == Some(self.me.as_str()) {
                mine.push(Change::Lost(t.clone()));
            }
            moved.push(t);
        }
        (moved, mine)
    }

    /// The owners of `t`, best first (empty if unknown).
    pub fn owners(&self, t: &TargetName) -> Vec<NodeName> {
        self.assignment
            .owners(t.as_str())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| self.live.get_key_value(o).map(|(k, _)| k.clone()))
            .collect()
    }

    /// This node's place among `t`'s owners (0 = first), if it is one.
    pub fn rank(&self, t: &TargetName) -> Option<usize> {
        self.assignment
            .owners(t.as_str())?
            .iter()
            .position(|o| *o == self.me.as_str())
    }

    /// Live members, this node included.
    pub fn live(&self) -> impl Iterator<Item = &NodeName> {
        self.live.keys()
    }
}

fn member(name: &NodeName, weights: &BTreeMap<NodeName, f64>) -> Result<Member, OwnershipError> {
    match weights.get(name) {
        Some(&w) => Member::weighted(name.as_str(), w),
        None => Ok(Member::new(name.as_str())),
    }
}
