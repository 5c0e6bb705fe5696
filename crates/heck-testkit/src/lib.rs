//! Test support shared by the decoder fuzz tests (heck-crdt, heck-swim, heck-stream and
//! heck-cluster's snapshot file; see `docs/reliability.md`, "Decoders"). A dev-dependency only:
//! nothing that heck ships depends on it.
//!
//! - [`count_allocations!`] installs a counting allocator in the test binary, and
//!   [`allocated_by`] measures what a closure allocates with it;
//! - [`alone`] re-runs one test alone in a fresh process, so that nothing else allocates while
//!   it measures;
//! - [`mutations`] and [`mutate`] edit valid encodings into nearly valid ones;
//! - [`varint`] writes a claimed length the way postcard does.

use std::alloc::System;
use std::process::Command;

use proptest::prelude::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Re-exported for [`count_allocations!`], so a test crate needs no `stats_alloc` dependency.
#[doc(hidden)]
pub use stats_alloc;

/// Make the counting allocator this test binary's global allocator, which [`allocated_by`]
/// reads. Invoke it once per test binary (an integration test file, or a `#[cfg(test)]`
/// module of a library): a binary that does not install it counts nothing, so each binary
/// keeps a test that a measured decode counts more than zero.
#[macro_export]
macro_rules! count_allocations {
    () => {
        #[global_allocator]
        static GLOBAL: &$crate::stats_alloc::StatsAlloc<::std::alloc::System> =
            &$crate::stats_alloc::INSTRUMENTED_SYSTEM;
    };
}

/// The counter [`count_allocations!`] installs.
const COUNTER: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Run `f` and return its result and the bytes it allocated (reallocated bytes included). The
/// counter is process-wide, so tests running at the same time add noise; `f` is deterministic,
/// so it is run again until two runs in a row count the same (at most 16 runs), and the fewest
/// bytes counted is returned with the last run's result.
pub fn allocated_by<T>(mut f: impl FnMut() -> T) -> (T, usize) {
    let mut measure = || {
        let region = Region::new(COUNTER);
        let r = f();
        let change = region.change();
        let bytes = change
            .bytes_allocated
            .saturating_add(usize::try_from(change.bytes_reallocated).unwrap_or(0));
        (r, bytes)
    };
    let (mut out, mut last) = measure();
    let mut least = last;
    for _ in 1..16 {
        let (r, bytes) = measure();
        out = r;
        least = least.min(bytes);
        if bytes == last {
            break;
        }
        last = bytes;
    }
    (out, least)
}

/// Set in the child process [`alone`] starts, so that the test runs there instead of again.
const ALONE: &str = "HECK_FUZZ_ALONE";

/// Run test `name` again, alone, in a fresh process of this test binary, and say whether we are
/// that process. A measurement that lasts milliseconds cannot be told apart from what the other
/// test threads allocate meanwhile (long mode keeps them busy); alone, nothing else allocates.
///
/// Use it as the first line of the test: `if !alone("its_name") { return; }`. The parent fails
/// with the child's output unless the child ran exactly that one test and it passed.
pub fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("{name} alone: where is this test binary? {e}"));
    let out = Command::new(exe)
        .args([name, "--exact", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .unwrap_or_else(|e| panic!("{name} alone: could not start it: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} alone: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// One edit of a byte string; positions are taken modulo its length, so every edit applies to
/// any input (an edit that needs a byte does nothing to an empty one).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip bit `.1` (0..8) of the byte at `.0`.
    FlipBit(usize, u8),
    /// Replace the byte at `.0` with `.1`.
    Replace(usize, u8),
    /// Insert `.1` before position `.0` (or at the end).
    Insert(usize, u8),
    /// Remove the byte at `.0`.
    Delete(usize),
}

/// One to four edits: bit flips, byte replacements, insertions and deletions, equally likely.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ];
    prop::collection::vec(one, 1..5)
}

/// `bytes` with `edits` applied in order.
pub fn mutate(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in edits {
        match *m {
            Mutation::FlipBit(i, b) if !out.is_empty() => {
                let i = i % out.len();
                out[i] ^= 1 << b;
            }
            Mutation::Replace(i, v) if !out.is_empty() => {
                let i = i % out.len();
                out[i] = v;
            }
            Mutation::Insert(i, v) => {
                let i = i % (out.len() + 1);
                out.insert(i, v);
            }
            Mutation::Delete(i) if !out.is_empty() => {
                let i = i % out.len();
                out.remove(i);
            }
            _ => {}
        }
    }
    out
}

/// postcard's varint (LEB128) for a length: how a test writes a claimed length into an encoding.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_writes_seven_bits_a_byte_low_first() {
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(65_000), [0xe8, 0xfb, 0x03]);
        assert_eq!(varint(u64::MAX).len(), 10);
    }

    #[test]
    fn every_edit_applies_to_any_input_and_needs_no_byte_to_insert() {
        let edits = [
            Mutation::FlipBit(5, 0),
            Mutation::Replace(7, 9),
            Mutation::Delete(1),
            Mutation::Insert(10, 42),
        ];
        // [1, 2, 3]: flip bit 0 of byte 5 % 3 = 2 → [1, 2, 2]; byte 7 % 3 = 1 := 9 → [1, 9, 2];
        // delete byte 1 → [1, 2]; insert 42 at 10 % 3 = 1 → [1, 42, 2].
        assert_eq!(mutate(&[1, 2, 3], &edits), [1, 42, 2]);
        assert_eq!(mutate(&[], &edits), [42]);
    }
}
