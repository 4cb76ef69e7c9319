//! What the fuzz suites share (this one and `crates/data/tests/fuzz_*.rs`, which include it
//! by path): a seeded proptest configuration, edits that mutate valid files, and a global
//! allocator that refuses any single allocation over [`MAX_ALLOCATION`], so that a reader
//! trusting a header's size fails the suite instead of exhausting the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// The largest single allocation a reader may make while fuzzed. Every input is at most a few
/// MiB, and the memory limit the suites set ([`limit_memory`]) is below this, so a larger
/// request means a size was trusted from the input without a check.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// The memory the readers are told is available (`WHITTLE_MEMORY_LIMIT`) while fuzzed.
const MEMORY_LIMIT: usize = 128 << 20;

/// The system allocator, refusing (so that the process aborts naming the size) requests over
/// [`MAX_ALLOCATION`], and recording the largest request of each thread.
pub struct Bounded;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`, or refused with a null pointer as
// the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match note(layout.size()) {
            true => System.alloc(layout),
            false => std::ptr::null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match note(layout.size()) {
            true => System.alloc_zeroed(layout),
            false => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match note(new_size) {
            true => System.realloc(ptr, layout, new_size),
            false => std::ptr::null_mut(),
        }
    }
}

/// Records a request of `size` bytes; false when it is over [`MAX_ALLOCATION`].
fn note(size: usize) -> bool {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    size <= MAX_ALLOCATION
}

/// The largest allocation this thread has requested since the last call (which resets it).
pub fn largest_allocation() -> usize {
    LARGEST.with(|l| l.replace(0))
}

/// Tells the readers that [`MEMORY_LIMIT`] bytes are available (once per test binary: every
/// test of a fuzz suite calls it first).
pub fn limit_memory() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        std::env::set_var("WHITTLE_MEMORY_LIMIT", MEMORY_LIMIT.to_string());
    });
}

/// A proptest configuration of `cases` cases from a fixed seed (reproducible in CI), with
/// bounded shrinking and no regression files written into the source tree. For a longer
/// hunt, `WHITTLE_FUZZ_SCALE=N` runs N times the cases and `WHITTLE_FUZZ_SEED` picks
/// another seed.
pub fn config(cases: u32) -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    Config {
        cases: cases.saturating_mul(env("WHITTLE_FUZZ_SCALE").unwrap_or(1)),
        rng_seed: RngSeed::Fixed(env("WHITTLE_FUZZ_SEED").map_or(15, u64::from)),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    }
}

/// One edit of a file's bytes; positions are taken modulo the length.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Overwrite a byte.
    Set(usize, u8),
    /// Flip one bit of a byte.
    Flip(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Delete(usize),
    /// Cut the file there.
    Truncate(usize),
}

/// From 1 to `max` edits; half of the positions fall in the first 64 bytes, where headers
/// keep the sizes, counts and offsets that readers must not trust. Written bytes are mostly
/// printable ASCII or boundary values, so that names and text stay valid UTF-8 and numbers
/// reach their edges more often than random bytes would.
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    let at = prop_oneof![0usize..64, any::<usize>()];
    let byte = prop_oneof![
        0x20u8..0x7f,
        prop::sample::select(vec![0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff]),
        any::<u8>(),
    ];
    let edit = prop_oneof![
        4 => (at.clone(), byte.clone()).prop_map(|(p, b)| Edit::Set(p, b)),
        3 => (at.clone(), 0u8..8).prop_map(|(p, bit)| Edit::Flip(p, bit)),
        1 => (at.clone(), byte).prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => at.clone().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..=max)
}

/// `bytes` with `edits` applied in order.
pub fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for edit in edits {
        let len = out.len();
        match *edit {
            Edit::Set(p, b) if len > 0 => out[p % len] = b,
            Edit::Flip(p, bit) if len > 0 => out[p % len] ^= 1 << bit,
            Edit::Insert(p, b) => out.insert(p % (len + 1), b),
            Edit::Delete(p) if len > 0 => {
                out.remove(p % len);
            }
            Edit::Truncate(p) => out.truncate(p % (len + 1)),
            _ => {}
        }
    }
    out
}

/// Fails the case when the thread's largest allocation since the last check exceeded
/// `bound` bytes (a size taken from the input without a check usually shows here long before
/// it reaches [`MAX_ALLOCATION`]).
pub fn check_allocations(bound: usize) -> Result<(), TestCaseError> {
    let largest = largest_allocation();
    prop_assert!(
        largest <= bound,
        "an allocation of {largest} bytes, over {bound}"
    );
    Ok(())
}
