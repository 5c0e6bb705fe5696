//! Members, the updates about them, and the one rule that says which update supersedes which.
//!
//! Invariant: every change to a known member goes through [`Update::supersedes`]; only the
//! member itself raises its incarnation (to refute, or to rejoin after a restart).
use serde::{Deserialize, Serialize};

/// A member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left on purpose.
    Left,
}

impl State {
    /// Dead or left: out of the cluster until it comes back with a higher incarnation.
    pub fn is_gone(self) -> bool {
        matches!(self, State::Dead | State::Left)
    }
}

/// What the cluster knows of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member<A> {
    /// Stable name.
    pub name: String,
    /// Where to reach it.
    pub addr: A,
    /// Raised only by the member itself, to refute suspicion or to rejoin.
    pub incarnation: u64,
    /// Alive, suspect, dead or left.
    pub state: State,
}

/// A membership update, piggybacked on packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update<A> {
    /// `name` is alive at `addr`, incarnation `inc`.
    Alive {
        /// Member.
        name: String,
        /// Address.
        addr: A,
        /// Incarnation.
        inc: u64,
    },
    /// `from` suspects `name`.
    Suspect {
        /// Member.
        name: String,
        /// Incarnation.
        inc: u64,
        /// Accuser.
        from: String,
    },
    /// `from` declared `name` dead.
    Dead {
        /// Member.
        name: String,
        /// Incarnation.
        inc: u64,
        /// Declarer.
        from: String,
    },
    /// `name` left.
    Left {
        /// Member.
        name: String,
        /// Incarnation.
        inc: u64,
    },
}

impl<A> Update<A> {
    /// The member it is about.
    pub fn name(&self) -> &str {
        match self {
            Update::Alive { name, .. }
            | Update::Suspect { name, .. }
            | Update::Dead { name, .. }
            | Update::Left { name, .. } => name,
        }
    }

    /// The incarnation it claims.
    pub fn incarnation(&self) -> u64 {
        match self {
            Update::Alive { inc, .. }
            | Update::Suspect { inc, .. }
            | Update::Dead { inc, .. }
            | Update::Left { inc, .. } => *inc,
        }
    }

    /// The state it would put the member in.
    pub fn state(&self) -> State {
        match self {
            Update::Alive { .. } => State::Alive,
            Update::Suspect { .. } => State::Suspect,
            Update::Dead { .. } => State::Dead,
            Update::Left { .. } => State::Left,
        }
    }

    /// The precedence rule (SWIM §4.2, as memberlist applies it), the only place it is spelled:
    /// does this update replace what we know of the member (`known` = its state, incarnation)?
    ///
    /// * Alive wins with a higher incarnation only (a refutation, or a restart).
    /// * Suspect wins over Alive at the same or a higher incarnation, and over Suspect at a
    ///   higher one; the same incarnation again is a confirmation, not news.
    /// * Dead and Left win over Alive and Suspect at the same or a higher incarnation.
    /// * Nothing but a newer Alive undoes Dead or Left.
    pub fn supersedes(&self, known: (State, u64)) -> bool {
        let (state, inc) = known;
        let new = self.incarnation();
        match self {
            Update::Alive { .. } => new > inc,
            Update::Suspect { .. } => match state {
                State::Alive => new >= inc,
                State::Suspect => new > inc,
                State::Dead | State::Left => false,
            },
            Update::Dead { .. } | Update::Left { .. } => !state.is_gone() && new >= inc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole precedence table: (update, known state, known incarnation) → news?
    #[test]
    fn an_update_supersedes_only_what_is_older_or_weaker() {
        use State::*;
        let up = |s: State, inc: u64| -> Update<u8> {
            let name = "m".to_string();
            match s {
                Alive => Update::Alive { name, addr: 0, inc },
                Suspect => Update::Suspect {
                    name,
                    inc,
                    from: "x".into(),
                },
                Dead => Update::Dead {
                    name,
                    inc,
                    from: "x".into(),
                },
                Left => Update::Left { name, inc },
            }
        };
        // Rows: the update; columns: what we know, at incarnation 5.
        //            known: Alive  Suspect Dead   Left
        let table = [
            (Alive, 4, [false, false, false, false]),
            (Alive, 5, [false, false, false, false]),
            (Alive, 6, [true, true, true, true]),
            (Suspect, 4, [false, false, false, false]),
            (Suspect, 5, [true, false, false, false]),
            (Suspect, 6, [true, true, false, false]),
            (Dead, 4, [false, false, false, false]),
            (Dead, 5, [true, true, false, false]),
            (Dead, 6, [true, true, false, false]),
            (Left, 5, [true, true, false, false]),
            (Left, 6, [true, true, false, false]),
        ];
        for (state, inc, row) in table {
            for (known, expected) in [Alive, Suspect, Dead, Left].into_iter().zip(row) {
                assert_eq!(
                    up(state, inc).supersedes((known, 5)),
                    expected,
                    "{state:?}@{inc} over {known:?}@5"
                );
            }
        }
    }
}
