//! Cost of one pop + reschedule at 100,000 keys. Run: `cargo bench -p heck-sched`.
// A bench measures time: the pure-core clock ban (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]
use std::hint::black_box;
use std::time::{Duration, Instant};

use heck_sched::Schedule;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let keys: u64 = if quick { 1_000 } else { 100_000 };
    let interval = Duration::from_secs(10);
    let mut sch = Schedule::new();
    let start = Duration::from_secs(1_700_000_000);
    for k in 0..keys {
        sch.insert(k, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), interval, start);
    }
    // Simulate 200 s of virtual time in 10 ms steps: pop everything due, reschedule it.
    let mut ops = 0u64;
    let t0 = Instant::now();
    let mut now = start;
    while now < start + Duration::from_secs(if quick { 20 } else { 200 }) {
        now += Duration::from_millis(10);
        for (k, due) in sch.pop_due(now, usize::MAX) {
            black_box(sch.reschedule(k, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), due, interval, now));
            ops += 1;
        }
    }
    let per = t0.elapsed().as_nanos() as f64 / ops.max(1) as f64;
    println!("| schedule pop + reschedule, {keys} keys | {per:.0} ns per check ({ops} checks) |");
}
