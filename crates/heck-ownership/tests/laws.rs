//! The laws of rendezvous ownership, as properties over random members and targets.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeMap;

use heck_ownership::{Assignment, Member, View};
use proptest::prelude::*;

fn names(n: usize, salt: u32) -> Vec<String> {
    (0..n).map(|i| format!("node-{salt}-{i}")).collect()
}

fn owners_of_all(a: &Assignment) -> BTreeMap<String, Vec<String>> {
    a.targets()
        .iter()
        .map(|t| {
            let mut o: Vec<String> = a.owners(t).unwrap().into_iter().map(String::from).collect();
            o.sort();
            (t.clone(), o)
        })
        .collect()
}

fn fresh(members: &[Member], replicas: usize, targets: &[String]) -> Assignment {
    let mut a = Assignment::new(members.to_vec(), replicas).unwrap();
    a.assign(targets.iter().cloned());
    a
}

proptest! {
    #[test]
    fn every_target_has_exactly_r_distinct_owners(
        m in 1usize..12, r in 1usize..5, t in 1usize..200, salt in any::<u32>(),
    ) {
        let members: Vec<Member> = names(m, salt).into_iter().map(Member::new).collect();
        let targets = names(t, salt ^ 1);
        let a = fresh(&members, r, &targets);
        for target in &targets {
            let mut owners = a.owners(target).unwrap();
            prop_assert_eq!(owners.len(), r.min(m));
            owners.sort();
            owners.dedup();
            prop_assert_eq!(owners.len(), r.min(m), "distinct");
        }
    }

    #[test]
    fn a_leave_moves_exactly_the_leavers_targets_and_nothing_else(
        m in 2usize..12, r in 1usize..4, t in 1usize..300, leaver in any::<prop::sample::Index>(),
        salt in any::<u32>(), weighted in any::<bool>(),
    ) {
        let members: Vec<Member> = names(m, salt).into_iter().enumerate()
            .map(|(i, n)| if weighted { Member::weighted(n, 1.0 + (i % 3) as f64).unwrap() } else { Member::new(n) })
            .collect();
        let targets = names(t, salt ^ 7);
        let mut a = fresh(&members, r, &targets);
        let before = owners_of_all(&a);
        let leaver = members[leaver.index(m)].name().to_string();
        let owned: Vec<String> = a.owned_by(&leaver).into_iter().map(String::from).collect();

        let moves = a.leave(&leaver);
        let after = owners_of_all(&a);

        let mut moved: Vec<String> = moves.iter().map(|mv| mv.target.clone()).collect();
        moved.sort();
        let mut owned_sorted = owned.clone();
        owned_sorted.sort();
        prop_assert_eq!(&moved, &owned_sorted, "the moved targets are the leaver's");
        for (target, o) in &before {
            if !owned.contains(target) {
                prop_assert_eq!(o, &after[target], "untouched target kept its owners");
            } else {
                // Kept every other owner; gained at most one.
                for keep in o.iter().filter(|x| **x != leaver) {
                    prop_assert!(after[target].contains(keep));
                }
            }
        }
        // Incremental equals a fresh computation over the survivors.
        let survivors: Vec<Member> = members.iter().filter(|x| x.name() != leaver).cloned().collect();
        prop_assert_eq!(after, owners_of_all(&fresh(&survivors, r, &targets)));
    }

    #[test]
    fn a_join_moves_targets_only_to_the_joiner(
        m in 1usize..12, r in 1usize..4, t in 1usize..300, salt in any::<u32>(), joiner_weight in 1u8..4,
    ) {
        let members: Vec<Member> = names(m, salt).into_iter().map(Member::new).collect();
        let targets = names(t, salt ^ 3);
        let mut a = fresh(&members, r, &targets);
        let before = owners_of_all(&a);
        let joiner = Member::weighted(format!("joiner-{salt}"), f64::from(joiner_weight)).unwrap();
        let moves = a.join(joiner.clone()).unwrap();
        let after = owners_of_all(&a);
        for mv in &moves {
            prop_assert_eq!(mv.to.as_deref(), Some(joiner.name()));
        }
        for (target, o) in &before {
            let gained: Vec<&String> = after[target].iter().filter(|x| !o.contains(x)).collect();
            prop_assert!(gained.iter().all(|g| *g == joiner.name()), "{target}: {gained:?}");
        }
        let mut all = members.clone();
        all.push(joiner);
        prop_assert_eq!(after, owners_of_all(&fresh(&all, r, &targets)));
    }

    #[test]
    fn the_priority_order_starts_with_the_owners(
        m in 1usize..10, r in 1usize..4, salt in any::<u32>(),
    ) {
        let members: Vec<Member> = names(m, salt).into_iter().map(Member::new).collect();
        let targets = names(20, salt ^ 5);
        let a = fresh(&members, r, &targets);
        let view = View::new(members).unwrap();
        for target in &targets {
            let order: Vec<&str> = view.priority(target).iter().map(|x| x.name()).collect();
            prop_assert_eq!(&order[..r.min(m)], &a.owners(target).unwrap()[..]);
        }
    }
}

/// Weighted rendezvous gives each member a share of primaries proportional to its weight.
/// Tolerance: 2 percentage points absolute at 20,000 targets (the binomial standard deviation
/// there is at most 0.35 points, so this is more than 5 sigma).
#[test]
fn weights_are_respected_within_two_points() {
    let weights = [1.0, 2.0, 3.0, 4.0];
    let members: Vec<Member> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Member::weighted(format!("m{i}"), w).unwrap())
        .collect();
    let targets: Vec<String> = (0..20_000).map(|i| format!("target-{i}")).collect();
    let a = fresh(&members, 1, &targets);
    let total: f64 = weights.iter().sum();
    for ((name, count), w) in a.load().into_iter().zip(weights) {
        let share = count as f64 / targets.len() as f64;
        let expected = w / total;
        assert!(
            (share - expected).abs() < 0.02,
            "{name}: share {share:.4}, expected {expected:.4}"
        );
    }
}

/// With equal weights, load is balanced: max/mean ≤ 1.25 at 200 targets per member is the
/// issue's goal for the bench; here, a looser bound (1.35) that any correct hash meets.
#[test]
fn equal_weights_balance_the_load() {
    let members: Vec<Member> = (0..50).map(|i| Member::new(format!("n{i}"))).collect();
    let targets: Vec<String> = (0..50 * 200)
        .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
        .collect();
    let a = fresh(&members, 1, &targets);
    let loads: Vec<usize> = a.load().into_iter().map(|(_, c)| c).collect();
    let max = *loads.iter().max().unwrap() as f64;
    let mean = targets.len() as f64 / members.len() as f64;
    assert!(max / mean <= 1.35, "max/mean = {}", max / mean);
}
