//! Clocks and summaries: wall time of one operation, CPU time of the calling thread, and the
//! median / p99 / mean of a set of samples.

use std::fmt;
use std::time::{Duration, Instant};

/// The wall clock of the benchmark driver.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark is a driver: it times real operations on the real clock"
)]
pub fn now() -> Instant {
    Instant::now()
}

/// CPU time (user + system) this thread has used so far: `getrusage(RUSAGE_THREAD)`.
#[allow(
    unsafe_code,
    reason = "getrusage has no safe wrapper in the dependency graph"
)]
pub fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD asks about this thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Lowers this thread's timer slack to 1 ns so that timed waits (the delay relay's) wake close
/// to their deadline instead of up to 50 µs late.
#[allow(
    unsafe_code,
    reason = "prctl has no safe wrapper in the dependency graph"
)]
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// Median, 99th percentile and mean of a set of durations.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub n: usize,
    pub median: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). None when empty.
    pub fn of(samples: &mut [Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let total: Duration = samples.iter().sum();
        Some(Summary {
            n,
            median: at(0.5),
            p99: at(0.99),
            mean: total / n as u32,
        })
    }
}

/// A duration with a unit that keeps three significant digits.
#[derive(Clone, Copy, Debug)]
pub struct Pretty(pub Duration);

impl fmt::Display for Pretty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_secs_f64() * 1e6;
        if us < 100.0 {
            write!(f, "{us:.1} µs")
        } else if us < 10_000.0 {
            write!(f, "{us:.0} µs")
        } else if us < 1e6 {
            write!(f, "{:.1} ms", us / 1e3)
        } else {
            write!(f, "{:.2} s", us / 1e6)
        }
    }
}

/// Bytes with a binary unit (1 KiB, 64 KiB, 16 MiB).
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}
