//! `count_allocations!` installs the counter `allocated_by` reads, and `alone` re-runs a test in
//! a child process: both only work in a test binary, so they are tested from one.
use std::hint::black_box;

use heck_testkit::{allocated_by, alone};

heck_testkit::count_allocations!();

#[test]
fn allocated_by_counts_what_the_closure_allocates_and_returns_its_result() {
    let (v, allocated) = allocated_by(|| black_box(vec![7u8; 10_000]));
    assert_eq!(v.len(), 10_000);
    assert!(allocated >= 10_000, "{allocated}");
    // Alone: nothing else allocates meanwhile, so a closure that allocates nothing counts 0.
    if alone("allocated_by_counts_what_the_closure_allocates_and_returns_its_result") {
        let (_, allocated) = allocated_by(|| black_box(3) + 4);
        assert_eq!(allocated, 0);
    }
}
