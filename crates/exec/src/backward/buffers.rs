//! Gradient buffers recycled from one training step to the next: a step of the same graph
//! at the same shapes asks for the same buffer sizes in the same order, so after the first
//! step every gradient buffer of the backward comes back from here instead of the allocator
//! (whose fresh pages the kernel clears and whose reused memory is zeroed serially; page
//! clearing and memset were about 8% of a 2-thread zoo:cnn step).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::kernels::{fill_zero, zeros};

/// Free `f32` buffers by length, and how many were allocated because none was free.
#[derive(Default)]
pub(super) struct Buffers {
    free: Mutex<HashMap<usize, Shelf>>,
    fresh: AtomicUsize,
}

/// The free buffers of one length, and how many buffers of that length are out: only that
/// many are taken back, so buffers made elsewhere (loss seeds, rules' own vectors) cannot
/// grow the pool from step to step.
#[derive(Default)]
struct Shelf {
    free: Vec<Vec<f32>>,
    out: usize,
}

impl Buffers {
    /// A buffer of `len` zeros: a recycled one cleared (in parallel chunks), else a new one.
    pub fn zeros(&self, len: usize) -> Vec<f32> {
        match self.take(len) {
            Some(mut v) => {
                fill_zero(&mut v);
                v
            }
            None => self.new_zeros(len),
        }
    }

    /// A buffer of `len` floats whose contents are unspecified (a recycled one as the last
    /// pass left it, else a new one of zeros), for kernels that overwrite every element: it
    /// skips [`Buffers::zeros`]'s clearing pass (recycled gradient buffers cleared and then
    /// overwritten were most of the memset in a 2-thread zoo:cnn step, about 5%).
    pub fn for_overwrite(&self, len: usize) -> Vec<f32> {
        self.take(len).unwrap_or_else(|| self.new_zeros(len))
    }

    /// Counts a buffer of `len` as out and takes a recycled one of that length, if any.
    fn take(&self, len: usize) -> Option<Vec<f32>> {
        let mut shelves = self.lock();
        let shelf = shelves.entry(len).or_default();
        shelf.out += 1;
        shelf.free.pop()
    }

    /// A new buffer of `len` zeros, counted as fresh.
    fn new_zeros(&self, len: usize) -> Vec<f32> {
        self.fresh.fetch_add(1, Ordering::Relaxed);
        zeros(len)
    }

    /// Keeps `v` for a later [`Buffers::zeros`] of its length, if a buffer of that length
    /// is out (else `v` is freed).
    pub fn give(&self, v: Vec<f32>) {
        if let Some(shelf) = self.lock().get_mut(&v.len()).filter(|s| s.out > 0) {
            shelf.out -= 1;
            shelf.free.push(v);
        }
    }

    /// Buffers allocated so far because no free one had the length asked for.
    pub fn fresh(&self) -> usize {
        self.fresh.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Shelf>> {
        // A panic while holding the lock leaves only whole buffers behind.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}
