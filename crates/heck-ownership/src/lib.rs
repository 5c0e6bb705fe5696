//! Ownership: which process checks which server, in priority order.
//!
//! **The rule (weighted rendezvous, a.k.a. highest random weight).** For a target `t` and a live
//! member `m`, hash the pair to a number `u(t, m)` uniform in (0, 1) and score it
//! `w(m) / -ln(u)`. Rank the members by score, highest first. The first `R` members are the
//! target's *owners*; the rest, in order, is its *failover order*. Every process that knows the
//! same live members computes the same ranks: no coordination, no leader.
//!
//! **Why it moves little.** A member's score for a target does not depend on the other members.
//! When `m` leaves, only the targets that had `m` among their first `R` change owners (each to its
//! next in line); every other target keeps its owners. When `m` joins, a target changes owners only
//! if `m` now ranks in its first `R`, and then the one it displaces is the only owner lost.
//! `hash mod m` (consul-esm, Icinga) moves almost every target on any change; see
//! `docs/protocols/ownership.md` and the `ownership` bench.
//!
//! **Invariants.**
//! * The hash is xxh3-64 with a fixed seed over an unambiguous encoding of (target, member name):
//!   the same on every process, build, version and platform. Golden vectors in
//!   `tests/golden.txt` catch any change.
//! * Members are identified by their stable *name*, never by address or incarnation, so a
//!   restart or a new address does not reshuffle.
//! * With equal weights the score is the top 53 bits of the hash, exactly, so ranking is exact
//!   integer comparison everywhere. With unequal weights the score uses `f64::ln`; two platforms
//!   could disagree only where two scores are within one ulp.
//! * Ties (equal scores) are broken by the full 64-bit hash, then by name: the order is total.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The fixed xxh3 seed ("heckownr"). Changing it reshuffles every cluster: don't.
pub const SEED: u64 = 0x6865_636b_6f77_6e72;

/// Why a membership view was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipError {
    /// A weight was zero, negative, NaN or infinite.
    BadWeight {
        /// The member.
        member: String,
        /// The weight as given.
        weight: String,
    },
    /// The same member name twice.
    DuplicateMember(String),
    /// An empty member name.
    EmptyName,
    /// `replicas` was 0.
    ZeroReplicas,
}

impl fmt::Display for OwnershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnershipError::BadWeight { member, weight } => write!(
                f,
                "member {member:?}: weight {weight} must be a finite number greater than 0"
            ),
            OwnershipError::DuplicateMember(m) => write!(f, "member {m:?} is listed twice"),
            OwnershipError::EmptyName => write!(f, "a member name is empty"),
            OwnershipError::ZeroReplicas => write!(f, "replicas must be at least 1"),
        }
    }
}

impl std::error::Error for OwnershipError {}

/// A checker process, as ownership sees it: a stable name and a relative capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    name: String,
    weight: f64,
}

impl Member {
    /// A member of weight 1.
    pub fn new(name: impl Into<String>) -> Member {
        Member {
            name: name.into(),
            weight: 1.0,
        }
    }

    /// A member whose expected share is proportional to `weight` (finite, > 0).
    pub fn weighted(name: impl Into<String>, weight: f64) -> Result<Member, OwnershipError> {
        let name = name.into();
        if !(weight.is_finite() && weight > 0.0) {
            return Err(OwnershipError::BadWeight {
                member: name,
                weight: weight.to_string(),
            });
        }
        Ok(Member { name, weight })
    }

    /// The stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

/// The rendezvous hash of (target, member): xxh3-64, seed [`SEED`], over
/// `len(target) as u64 little-endian ‖ target ‖ member`. The length prefix makes the encoding
/// unambiguous: ("ab", "c") and ("a", "bc") hash differently.
pub fn pair_hash(target: &str, member: &str) -> u64 {
    let mut buf = Vec::with_capacity(8 + target.len() + member.len());
    pair_hash_with(&mut buf, target, member)
}

fn pair_hash_with(buf: &mut Vec<u8>, target: &str, member: &str) -> u64 {
    buf.clear();
    buf.extend_from_slice(&(target.len() as u64).to_le_bytes());
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(member.as_bytes());
    xxh3_64_with_seed(buf, SEED)
}

/// A member's rank key for one target. Higher is better. Ordered by score, then hash, then name
/// (reversed, so that the smaller name wins a full tie).
#[derive(Debug, Clone, Copy)]
struct Key {
    score: f64,
    hash: u64,
}

fn score(hash: u64, weight: f64, uniform: bool) -> f64 {
    // Top 53 bits: exactly representable in an f64.
    let top = (hash >> 11) as f64;
    if uniform {
        // -1/ln(u) is increasing in u, so ranking by u is ranking by score: keep it exact.
        return top;
    }
    // u in (0, 1): never 0 (ln would be -inf) and never 1 (ln would be 0).
    let u = (top + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

fn cmp_keys(a: (Key, &str), b: (Key, &str)) -> Ordering {
    // Descending by score and hash, ascending by name.
    b.0.score
        .total_cmp(&a.0.score)
        .then(b.0.hash.cmp(&a.0.hash))
        .then(a.1.cmp(b.1))
}

/// A set of live members: answers the priority order of any target.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    members: Vec<Member>,
    uniform: bool,
}

impl View {
    /// A view of `members` (any order; names must be unique and non-empty).
    pub fn new(members: Vec<Member>) -> Result<View, OwnershipError> {
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for m in &members {
            if m.name.is_empty() {
                return Err(OwnershipError::EmptyName);
            }
            if !seen.insert(m.name.as_str()) {
                return Err(OwnershipError::DuplicateMember(m.name.clone()));
            }
        }
        let uniform = members.windows(2).all(|w| w[0].weight == w[1].weight);
        Ok(View { members, uniform })
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member in priority order for `target`: the first R are its owners.
    pub fn priority(&self, target: &str) -> Vec<&Member> {
        let mut buf = Vec::new();
        let mut ranked: Vec<(Key, &Member)> = self
            .members
            .iter()
            .map(|m| {
                let hash = pair_hash_with(&mut buf, target, &m.name);
                let key = Key {
                    score: score(hash, m.weight, self.uniform),
                    hash,
                };
                (key, m)
            })
            .collect();
        ranked.sort_by(|a, b| cmp_keys((a.0, &a.1.name), (b.0, &b.1.name)));
        ranked.into_iter().map(|(_, m)| m).collect()
    }

    /// Does `member` rank among the first `replicas` for `target`?
    pub fn is_owner(&self, target: &str, member: &str, replicas: usize) -> bool {
        self.priority(target)
            .iter()
            .take(replicas)
            .any(|m| m.name == member)
    }
}

/// A change of one owner of one target: `from` lost it, `to` gained it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move<T = String> {
    /// The target.
    pub target: T,
    /// The owner that lost it (`None` if the target had fewer than R owners).
    pub from: Option<String>,
    /// The owner that gained it (`None` if no member is left to take it).
    pub to: Option<String>,
}

type Slot = u32;

/// What an [`Assignment`] can hold as a target name: any cheap-to-clone handle that hashes and
/// compares as its text (`String`, or the node's `TargetName`, an `Arc<str>`: then the
/// assignment shares the registry's names instead of keeping a second copy of each).
pub trait TargetKey: Clone + Eq + std::hash::Hash + std::borrow::Borrow<str> {}
impl<T: Clone + Eq + std::hash::Hash + std::borrow::Borrow<str>> TargetKey for T {}

/// Owners of many targets for one membership view, kept up to date incrementally.
///
/// For each target it stores the top `R` members with their keys. On a leave it recomputes only
/// the targets that had the leaver in their top `R`; on a join it hashes each target once with the
/// joiner and compares against the R-th key. A full assignment costs T × M hashes.
#[derive(Debug, Clone)]
pub struct Assignment<T = String> {
    replicas: usize,
    /// Every member ever seen, by slot; `alive[slot]` says whether it is in the view.
    slots: Vec<Member>,
    alive: Vec<bool>,
    by_name: HashMap<String, Slot>,
    uniform: bool,
    /// Each target once; `target_index` holds a clone of the same handle.
    targets: Vec<T>,
    target_index: HashMap<T, usize>,
    /// `top[i]`: the owners of `targets[i]`, best first, at most `replicas` long.
    top: Vec<Vec<(Key, Slot)>>,
    buf: Vec<u8>,
}

impl Assignment<String> {
    /// An assignment of no targets (named by `String`s) over `members`, with `replicas` owners
    /// per target. For another name type, [`Assignment::with_name_type`].
    pub fn new(members: Vec<Member>, replicas: usize) -> Result<Assignment, OwnershipError> {
        Assignment::with_name_type(members, replicas)
    }
}

impl<T: TargetKey> Assignment<T> {
    /// An assignment of no targets over `members`, with `replicas` owners per target, holding
    /// target names as `T` (e.g. `Assignment::<TargetName>::with_name_type`, which shares the
    /// names' allocations with the registry).
    pub fn with_name_type(
        members: Vec<Member>,
        replicas: usize,
    ) -> Result<Assignment<T>, OwnershipError> {
        if replicas == 0 {
            return Err(OwnershipError::ZeroReplicas);
        }
        let view = View::new(members)?;
        let by_name = view
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i as Slot))
            .collect();
        Ok(Assignment {
            replicas,
            alive: vec![true; view.members.len()],
            uniform: view.uniform,
            slots: view.members,
            by_name,
            targets: Vec::new(),
            target_index: HashMap::new(),
            top: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Owners per target.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The live members, in the order they were added.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.slots
            .iter()
            .zip(&self.alive)
            .filter_map(|(m, &a)| a.then_some(m))
    }

    /// The live members as a [`View`] (for full priority orders).
    pub fn view(&self) -> View {
        View {
            members: self.members().cloned().collect(),
            uniform: self.uniform,
        }
    }

    /// Add targets (names already present are ignored).
    pub fn assign<I, S>(&mut self, targets: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<T>,
    {
        for t in targets {
            let t = t.into();
            if self.target_index.contains_key::<str>(t.borrow()) {
                continue;
            }
            let top = self.rank_top(t.borrow());
            self.target_index.insert(t.clone(), self.targets.len());
            self.targets.push(t);
            self.top.push(top);
        }
    }

    /// Remove a target; returns whether it was there.
    pub fn remove_target(&mut self, target: &str) -> bool {
        let Some(i) = self.target_index.remove(target) else {
            return false;
        };
        self.targets.swap_remove(i);
        self.top.swap_remove(i);
        if let Some(moved) = self.targets.get(i) {
            self.target_index.insert(moved.clone(), i);
        }
        true
    }

    /// The targets, in insertion order (modulo removals).
    pub fn targets(&self) -> &[T] {
        &self.targets
    }

    /// The owners of `target`, best first (at most R; fewer only if fewer members are alive).
    pub fn owners(&self, target: &str) -> Option<Vec<&str>> {
        let i = *self.target_index.get(target)?;
        Some(
            self.top[i]
                .iter()
                .map(|&(_, s)| self.slots[s as usize].name.as_str())
                .collect(),
        )
    }

    /// The targets `member` owns (is among the first R for).
    pub fn owned_by(&self, member: &str) -> Vec<&str> {
        let Some(&slot) = self.by_name.get(member) else {
            return Vec::new();
        };
        self.targets
            .iter()
            .zip(&self.top)
            .filter(|(_, top)| top.iter().any(|&(_, s)| s == slot))
            .map(|(t, _)| t.borrow())
            .collect()
    }

    /// How many targets each live member owns (counting every one of the R owners).
    pub fn load(&self) -> Vec<(&str, usize)> {
        let mut counts = vec![0usize; self.slots.len()];
        for top in &self.top {
            for &(_, s) in top {
                counts[s as usize] += 1;
            }
        }
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.alive[i])
            .map(|(i, m)| (m.name.as_str(), counts[i]))
            .collect()
    }

    /// `member` leaves: only the targets it owned get a new owner (their next in line).
    pub fn leave(&mut self, member: &str) -> Vec<Move<T>> {
        let Some(&slot) = self.by_name.get(member) else {
            return Vec::new();
        };
        if !self.alive[slot as usize] {
            return Vec::new();
        }
        self.alive[slot as usize] = false;
        if self.refresh_uniform() {
            return self.recompute_all();
        }
        let mut moves = Vec::new();
        for i in 0..self.targets.len() {
            if !self.top[i].iter().any(|&(_, s)| s == slot) {
                continue;
            }
            let old = std::mem::take(&mut self.top[i]);
            let target = self.targets[i].clone();
            let new = self.rank_top(target.borrow());
            let gained = new
                .iter()
                .find(|(_, s)| !old.iter().any(|(_, o)| o == s))
                .map(|&(_, s)| self.slots[s as usize].name.clone());
            moves.push(Move {
                target: self.targets[i].clone(),
                from: Some(member.to_string()),
                to: gained,
            });
            self.top[i] = new;
        }
        moves
    }

    /// `member` joins (or rejoins): it takes exactly the targets where it now ranks in the top R.
    pub fn join(&mut self, member: Member) -> Result<Vec<Move<T>>, OwnershipError> {
        if member.name.is_empty() {
            return Err(OwnershipError::EmptyName);
        }
        let slot = match self.by_name.get(&member.name) {
            Some(&s) if self.alive[s as usize] => {
                return Err(OwnershipError::DuplicateMember(member.name));
            }
            Some(&s) => {
                self.slots[s as usize] = member;
                self.alive[s as usize] = true;
                s
            }
            None => {
                let s = self.slots.len() as Slot;
                self.by_name.insert(member.name.clone(), s);
                self.slots.push(member);
                self.alive.push(true);
                s
            }
        };
        if self.refresh_uniform() {
            return Ok(self.recompute_all());
        }
        let name = self.slots[slot as usize].name.clone();
        let weight = self.slots[slot as usize].weight;
        let mut moves = Vec::new();
        for i in 0..self.targets.len() {
            let hash = pair_hash_with(&mut self.buf, self.targets[i].borrow(), &name);
            let key = Key {
                score: score(hash, weight, self.uniform),
                hash,
            };
            let top = &mut self.top[i];
            let pos = top.partition_point(|&(k, s)| {
                cmp_keys((k, &self.slots[s as usize].name), (key, &name)) == Ordering::Less
            });
            if pos >= self.replicas {
                continue;
            }
            top.insert(pos, (key, slot));
            let displaced = (top.len() > self.replicas)
                .then(|| top.pop())
                .flatten()
                .map(|(_, s)| self.slots[s as usize].name.clone());
            moves.push(Move {
                target: self.targets[i].clone(),
                from: displaced,
                to: Some(name.clone()),
            });
        }
        Ok(moves)
    }

    /// Re-derive whether all live weights are equal; true if that changed. When it changes, the
    /// score formula changes for everyone (exact integer ↔ weighted float), so stored keys must be
    /// recomputed. The relative order of the other members is the same under both formulas (both
    /// are increasing in the hash when weights are equal), so only the joiner or leaver moves.
    fn refresh_uniform(&mut self) -> bool {
        let uniform = {
            let mut live = self.members();
            let first = live.next().map(|m| m.weight);
            live.all(|m| Some(m.weight) == first)
        };
        let changed = uniform != self.uniform;
        self.uniform = uniform;
        changed
    }

    fn recompute_all(&mut self) -> Vec<Move<T>> {
        let mut moves = Vec::new();
        for i in 0..self.targets.len() {
            let target = self.targets[i].clone();
            let new = self.rank_top(target.borrow());
            let old = std::mem::replace(&mut self.top[i], new);
            let names = |v: &[(Key, Slot)]| -> Vec<Slot> { v.iter().map(|&(_, s)| s).collect() };
            let (o, n) = (names(&old), names(&self.top[i]));
            let mut lost = o.iter().filter(|s| !n.contains(s));
            let mut gained = n.iter().filter(|s| !o.contains(s));
            loop {
                let name = |s: Option<&Slot>| s.map(|&x| self.slots[x as usize].name.clone());
                let (from, to) = (name(lost.next()), name(gained.next()));
                if from.is_none() && to.is_none() {
                    break;
                }
                moves.push(Move {
                    target: self.targets[i].clone(),
                    from,
                    to,
                });
            }
        }
        moves
    }

    /// The top R live members for `target`, best first.
    fn rank_top(&mut self, target: &str) -> Vec<(Key, Slot)> {
        let r = self.replicas;
        let mut top: Vec<(Key, Slot)> = Vec::with_capacity(r + 1);
        // The encoded target prefix is the same for every member: build it once.
        self.buf.clear();
        self.buf
            .extend_from_slice(&(target.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(target.as_bytes());
        let prefix = self.buf.len();
        for (s, m) in self.slots.iter().enumerate() {
            if !self.alive[s] {
                continue;
            }
            self.buf.truncate(prefix);
            self.buf.extend_from_slice(m.name.as_bytes());
            let hash = xxh3_64_with_seed(&self.buf, SEED);
            let key = Key {
                score: score(hash, m.weight, self.uniform),
                hash,
            };
            let slots = &self.slots;
            let pos = top.partition_point(|&(k, o)| {
                cmp_keys((k, &slots[o as usize].name), (key, &m.name)) == Ordering::Less
            });
            if pos < r {
                top.insert(pos, (key, s as Slot));
                top.truncate(r);
            }
        }
        top
    }
}

/// For the node: of `targets`, those that `me` owns when `alive` are the live members.
/// (One-shot; a long-lived node keeps an [`Assignment`] and applies joins and leaves to it.)
pub fn owned_targets<'a>(
    me: &str,
    alive: &[Member],
    targets: &'a [String],
    replicas: usize,
) -> Result<Vec<&'a str>, OwnershipError> {
    let mut a = Assignment::new(alive.to_vec(), replicas)?;
    a.assign(targets.iter().cloned());
    let mine: std::collections::HashSet<&str> = a.owned_by(me).into_iter().collect();
    Ok(targets
        .iter()
        .map(String::as_str)
        .filter(|t| mine.contains(t))
        .collect())
}

/// The `hash mod m` baseline (what consul-esm and Icinga do): sort members by name and give the
/// target to `members[xxh3(target) mod m]`. Here for the bench and the docs, to show why not.
pub fn mod_n_owner<'a>(target: &str, sorted_members: &'a [String]) -> Option<&'a str> {
    if sorted_members.is_empty() {
        return None;
    }
    let h = xxh3_64_with_seed(target.as_bytes(), SEED);
    Some(sorted_members[(h % sorted_members.len() as u64) as usize].as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_assignment_over_shared_names_owns_the_same_and_keeps_no_second_copy() {
        use std::sync::Arc;
        let names: Vec<Arc<str>> = (0..200).map(|i| Arc::from(format!("t{i}"))).collect();
        let mut shared =
            Assignment::<Arc<str>>::with_name_type(members(&["a", "b", "c"]), 2).unwrap();
        shared.assign(names.iter().cloned());
        let mut plain = Assignment::new(members(&["a", "b", "c"]), 2).unwrap();
        plain.assign(names.iter().map(|n| n.to_string()));
        for (n, held) in names.iter().zip(shared.targets()) {
            assert_eq!(shared.owners(n), plain.owners(n), "{n}");
            // The assignment holds the caller's allocation, not a copy of the text.
            assert!(Arc::ptr_eq(n, held));
        }
        let moves = shared.leave("b");
        assert!(
            moves
                .iter()
                .all(|m| names.iter().any(|n| Arc::ptr_eq(n, &m.target)))
        );
        assert_eq!(moves.len(), plain.leave("b").len());
    }

    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|n| Member::new(*n)).collect()
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
    }

    #[test]
    fn every_member_appears_once_in_the_priority_order() {
        let v = View::new(members(&["a", "b", "c", "d"])).unwrap();
        let mut order: Vec<&str> = v.priority("web-1").iter().map(|m| m.name()).collect();
        order.sort();
        assert_eq!(order, ["a", "b", "c", "d"]);
    }

    #[test]
    fn the_order_does_not_depend_on_the_order_members_are_listed() {
        let v1 = View::new(members(&["a", "b", "c", "d"])).unwrap();
        let v2 = View::new(members(&["d", "b", "a", "c"])).unwrap();
        for t in ["x", "y", "web-1", "db"] {
            assert_eq!(v1.priority(t), v2.priority(t));
        }
    }

    #[test]
    fn bad_views_are_rejected() {
        assert_eq!(
            View::new(members(&["a", "a"])).unwrap_err(),
            OwnershipError::DuplicateMember("a".into())
        );
        assert!(Member::weighted("a", 0.0).is_err());
        assert!(Member::weighted("a", f64::NAN).is_err());
        assert_eq!(
            Assignment::new(members(&["a"]), 0).unwrap_err(),
            OwnershipError::ZeroReplicas
        );
    }

    #[test]
    fn a_leave_moves_each_orphan_to_its_next_in_line() {
        let mut a = Assignment::new(members(&["a", "b", "c"]), 1).unwrap();
        a.assign((0..50).map(|i| format!("t{i}")));
        let before: Vec<String> = a.owned_by("b").into_iter().map(String::from).collect();
        let moves = a.leave("b");
        assert_eq!(moves.len(), before.len());
        let v = View::new(members(&["a", "b", "c"])).unwrap();
        for m in &moves {
            let order = v.priority(&m.target);
            assert_eq!(m.to.as_deref(), Some(order[1].name()), "next in line");
        }
    }

    #[test]
    fn with_no_members_left_targets_have_no_owner() {
        let mut a = Assignment::new(members(&["a"]), 1).unwrap();
        a.assign(["t"]);
        let moves = a.leave("a");
        assert_eq!(
            moves,
            vec![Move {
                target: "t".into(),
                from: Some("a".into()),
                to: None
            }]
        );
        assert_eq!(a.owners("t").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn owned_targets_is_what_the_assignment_says() {
        let alive = members(&["n1", "n2", "n3"]);
        let targets: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
        let mut total = 0;
        for me in ["n1", "n2", "n3"] {
            total += owned_targets(me, &alive, &targets, 1).unwrap().len();
        }
        assert_eq!(total, 30, "every target has exactly one owner");
    }
}
