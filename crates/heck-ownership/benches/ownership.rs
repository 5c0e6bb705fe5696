//! Ownership bench: rendezvous (heck) against `hash mod m` (consul-esm, Icinga), one run.
//!
//! Run: `cargo bench -p heck-ownership`. Prints a markdown table for docs/benchmarks.md.
//! Times are the best of several runs (the machine is shared; the minimum is the least noisy).
// A bench measures time: the pure-core clock ban (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]
use std::hint::black_box;
use std::time::{Duration, Instant};

use heck_ownership::{Assignment, Member, mod_n_owner};

fn members(m: usize) -> Vec<Member> {
    (0..m)
        .map(|i| Member::new(format!("heck-{i:03}")))
        .collect()
}

fn targets(t: usize) -> Vec<String> {
    (0..t)
        .map(|i| format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn hrw_assign(m: &[Member], t: &[String]) -> Assignment {
    let mut a = Assignment::new(m.to_vec(), 1).expect("valid members");
    a.assign(t.iter().cloned());
    a
}

fn mod_n_assign<'a>(names: &'a [String], t: &[String]) -> Vec<&'a str> {
    t.iter()
        .map(|x| mod_n_owner(x, names).unwrap_or(""))
        .collect()
}

fn sorted_names(m: usize) -> Vec<String> {
    let mut n: Vec<String> = members(m).iter().map(|x| x.name().to_string()).collect();
    n.sort();
    n
}

fn main() {
    // `cargo test --benches` runs this binary with no `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 1 } else { 5 };
    println!("| measure | rendezvous (heck) | hash mod m | goal |");
    println!("|---|---|---|---|");

    for (t, m, goal) in [(10_000, 50, "≤ 10 ms"), (100_000, 100, "—")] {
        let (t, m) = if quick { (t / 100, m) } else { (t, m) };
        let ms = members(m);
        let ts = targets(t);
        let names = sorted_names(m);
        let hrw = best_of(runs, || {
            black_box(hrw_assign(&ms, &ts));
        });
        let modn = best_of(runs, || {
            black_box(mod_n_assign(&names, &ts));
        });
        println!(
            "| full assignment, {t} targets × {m} members | {:.2} ms | {:.2} ms | {goal} |",
            hrw.as_secs_f64() * 1e3,
            modn.as_secs_f64() * 1e3
        );
    }

    // Balance at 200 targets per member.
    let m = 50;
    let ts = targets(200 * m);
    let ms = members(m);
    let a = hrw_assign(&ms, &ts);
    let mean = ts.len() as f64 / m as f64;
    let hrw_max = a.load().iter().map(|&(_, c)| c).max().unwrap_or(0) as f64;
    let names = sorted_names(m);
    let mut counts = std::collections::HashMap::new();
    for o in mod_n_assign(&names, &ts) {
        *counts.entry(o).or_insert(0usize) += 1;
    }
    let modn_max = counts.values().copied().max().unwrap_or(0) as f64;
    println!(
        "| balance max/mean, {m} members × 200 targets each | {:.3} | {:.3} | ≤ 1.25 |",
        hrw_max / mean,
        modn_max / mean
    );

    // Fraction moved on a leave and on a join, against the optimum 1/m.
    for m in [10, 50] {
        let ts = targets(if quick { 2_000 } else { 20_000 });
        let ms = members(m);
        let leaver = ms[m / 2].name().to_string();
        let mut a = hrw_assign(&ms, &ts);
        let moved_leave = a.leave(&leaver).len();
        let mut b = hrw_assign(&ms, &ts);
        let moved_join = b
            .join(Member::new("newcomer"))
            .map(|v| v.len())
            .unwrap_or(0);

        let names = sorted_names(m);
        let before = mod_n_assign(&names, &ts);
        let fewer: Vec<String> = names.iter().filter(|n| **n != leaver).cloned().collect();
        let after_leave = mod_n_assign(&fewer, &ts);
        let mut more = names.clone();
        more.push("newcomer".into());
        more.sort();
        let after_join = mod_n_assign(&more, &ts);
        let diff = |x: &[&str], y: &[&str]| x.iter().zip(y).filter(|(a, b)| a != b).count();
        let pct = |n: usize| 100.0 * n as f64 / ts.len() as f64;
        println!(
            "| moved on a leave, m = {m} (optimum 1/m = {:.1}%) | {:.1}% | {:.1}% | = 1/m |",
            100.0 / m as f64,
            pct(moved_leave),
            pct(diff(&before, &after_leave))
        );
        println!(
            "| moved on a join, m = {m} → {} (optimum {:.1}%) | {:.1}% | {:.1}% | = 1/(m+1) |",
            m + 1,
            100.0 / (m + 1) as f64,
            pct(moved_join),
            pct(diff(&before, &after_join))
        );
    }

    // Incremental leave against a full recomputation.
    let (t, m) = if quick { (1_000, 50) } else { (100_000, 100) };
    let ms = members(m);
    let ts = targets(t);
    let base = hrw_assign(&ms, &ts);
    let leaver = ms[0].name().to_string();
    let incremental = best_of(runs, || {
        let mut a = base.clone();
        black_box(a.leave(&leaver));
    });
    let clone_only = best_of(runs, || {
        black_box(base.clone());
    });
    let survivors: Vec<Member> = ms[1..].to_vec();
    let full = best_of(runs, || {
        black_box(hrw_assign(&survivors, &ts));
    });
    println!(
        "| leave of 1 of {m} members, {t} targets: incremental vs full recompute | {:.2} ms | {:.2} ms (full) | — |",
        incremental.saturating_sub(clone_only).as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3
    );
}
