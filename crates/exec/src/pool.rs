//! Running a pass on rayon's pool: [`on_worker`] moves a whole pass (a planned inference run)
//! onto one worker; [`on_pool`] (a training forward or backward, an optimizer step) also keeps
//! the other workers polling for the parallel work its kernels fork.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Runs `f` on a worker of rayon's global pool and waits for it (on this thread, as is, when
/// it is a worker already). A pass of kernels that fork parallel work runs faster there: each
/// parallel call from a thread outside the pool wakes the workers and puts the caller to
/// sleep until they finish, while from a worker the call forks and joins inside the pool
/// (LeNet5 at batch 1 on 2 threads ran slower than on 1 from outside). Planned inference runs
/// this way; see [`on_pool`] for why it does not poll.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// [`on_worker`], the pool's other workers polling for the parallel work `f` forks until it
/// returns (no pollers when the caller is a worker already or the pool has one thread). The
/// training passes and the trainer's optimizer step make hundreds of parallel kernel calls,
/// each a short region, and an idle worker falls asleep within microseconds: without the
/// polling the other workers slept between regions and were woken, too late, by the next
/// (zoo:mobilenetv3-small training at 2 threads +10%). Pollers with nothing to take yield
/// their CPU to any runnable thread ([`std::thread::yield_now`]) and stop after `POLL_IDLE`
/// (1 ms) without work, as ONNX Runtime's intra-op threads and OpenMP's spin between kernels
/// for a bounded time. Planned inference does not poll: on a quiet 2-core host polling
/// changed LeNet5 b1, YOLOv8n and MiniLM-L3 latency at 2 threads by less than the noise, and
/// made 3 of 17 zoo:mobilenetv3-small b1 runs 0.27-0.29 ms against 0.20-0.25 without.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() == 1 {
        return on_worker(f);
    }
    on_worker(|| {
        let done = AtomicBool::new(false);
        rayon::in_place_scope(|s| {
            for _ in 1..rayon::current_num_threads() {
                s.spawn(|_| {
                    let mut busy = Instant::now();
                    while !done.load(Ordering::Acquire) && busy.elapsed() < POLL_IDLE {
                        if rayon::yield_now() == Some(rayon::Yield::Executed) {
                            busy = Instant::now();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            // Set on unwinding too, so that a panic in `f` does not leave the pollers running.
            let _stop = SetOnDrop(&done);
            f()
        })
    })
}

/// How long an [`on_pool`] poller goes without finding work before it stops polling and its
/// worker returns to rayon's own idling (sleep until woken). It bounds the wait of a poller
/// that another pass running on the pool at the same time put on a worker's stack (its worker
/// could otherwise never return to the job beneath it), and under load, where every empty
/// poll gives the CPU away for a time slice, it hands the worker back to rayon's wake-ups.
const POLL_IDLE: Duration = Duration::from_millis(1);

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
