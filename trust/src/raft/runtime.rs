//! A tokio [`AsyncRuntime`] for openraft whose randomness is seeded.
//!
//! openraft 0.9 draws its election timeouts from `AsyncRuntime::thread_rng()`; the stock
//! `TokioRuntime` returns rand's OS-seeded `ThreadRng`, which makes elections (and therefore the
//! whole simulator run) differ from run to run. [`SeededRuntime`] delegates everything to tokio
//! but returns [`SeededThreadRng`], a handle on a thread-local `StdRng` that [`seed_thread_rng`]
//! seeds. Under the simulator (one thread) the same seed gives the same election timeouts.
//!
//! A thread that was never seeded explicitly (a worker thread of a multi-threaded runtime in
//! production) seeds itself from the process default seed ([`set_default_seed`], which
//! `CaNode::start` sets from its configured seed) plus a per-thread counter, so distinct
//! threads draw distinct streams and nothing reads OS entropy.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand_08::rngs::StdRng;
use rand_08::{RngCore, SeedableRng};

/// Seed used by threads that were never seeded with [`seed_thread_rng`].
static DEFAULT_SEED: AtomicU64 = AtomicU64::new(0x6e65_7875_735f_7261);
/// Distinguishes implicitly seeded threads from each other.
static THREAD_COUNTER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds the calling thread's openraft RNG. Draws after this call are a pure function of `seed`.
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Sets the base seed of threads that are not seeded explicitly (see the module docs).
pub fn set_default_seed(seed: u64) {
    DEFAULT_SEED.store(seed, Ordering::Relaxed);
}

fn with_rng<T>(f: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rng = slot.get_or_insert_with(|| {
            let n = THREAD_COUNTER.fetch_add(1, Ordering::Relaxed);
            // `seed_from_u64` expands its input through PCG32, so neighbouring seeds give
            // unrelated streams.
            StdRng::seed_from_u64(DEFAULT_SEED.load(Ordering::Relaxed).wrapping_add(n))
        });
        f(rng)
    })
}

/// A handle on the calling thread's seeded RNG (what [`SeededRuntime::thread_rng`] returns).
///
/// It holds no state: every draw goes to the thread-local generator, like rand's `ThreadRng`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeededThreadRng;

impl RngCore for SeededThreadRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        with_rng(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|r| r.fill_bytes(dest));
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_08::Error> {
        with_rng(|r| r.try_fill_bytes(dest))
    }
}

/// openraft's async runtime for the CA: tokio for tasks, time and channels; [`SeededThreadRng`]
/// for randomness.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = SeededThreadRng;
    type OneshotSender<T: OptionalSend> = openraft::async_runtime::TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SeededThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (openraft::async_runtime::TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election_timeouts(seed: u64) -> Vec<u64> {
        let config = openraft::Config {
            election_timeout_min: 150,
            election_timeout_max: 300,
            ..Default::default()
        };
        seed_thread_rng(seed);
        (0..16)
            .map(|_| config.new_rand_election_timeout::<SeededRuntime>())
            .collect()
    }

    #[test]
    fn same_seed_same_election_timeouts() {
        let a = election_timeouts(42);
        let b = election_timeouts(42);
        assert_eq!(a, b);
        assert!(a.iter().all(|t| (150..300).contains(t)));
        // Not a constant sequence.
        assert!(a.iter().any(|t| *t != a[0]));
    }

    #[test]
    fn different_seed_different_election_timeouts() {
        assert_ne!(election_timeouts(1), election_timeouts(2));
    }

    #[test]
    fn reseeding_restarts_the_stream() {
        seed_thread_rng(7);
        let first = SeededRuntime::thread_rng().next_u64();
        let _ = SeededRuntime::thread_rng().next_u64();
        seed_thread_rng(7);
        assert_eq!(SeededRuntime::thread_rng().next_u64(), first);
    }

    #[test]
    fn unseeded_threads_draw_distinct_streams() {
        let draw = || std::thread::spawn(|| SeededRuntime::thread_rng().next_u64());
        let a = draw().join().expect("thread a");
        let b = draw().join().expect("thread b");
        assert_ne!(a, b);
    }
}
