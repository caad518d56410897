//! The UDP driver's wake-up timer, precise to the microsecond.
//!
//! tokio's timer wheel counts whole milliseconds and rounds every deadline up to the next one,
//! so a wait of 100 µs takes 1–2 ms. quinn's timers are finer than that on a fast path: its
//! pacer asks to be woken when the next burst of a congestion window may leave (every 1.6 ms
//! of a 10 ms path, sooner on a shorter one), and a pacing wait rounded up to the next
//! millisecond both delays the burst and loses tokens the bucket cannot hold. On Linux the
//! driver waits on a `timerfd` (a kernel high-resolution timer, polled by tokio's reactor like
//! the socket); elsewhere, or when the kernel refuses one, on tokio's timer.

use std::io;
use std::time::{Duration, Instant};

/// One re-armable deadline.
#[derive(Debug)]
pub(crate) struct Timer {
    inner: Inner,
    /// The deadline armed now (`None`: disarmed).
    armed: Option<Instant>,
}

#[derive(Debug)]
enum Inner {
    #[cfg(target_os = "linux")]
    Fd(tokio::io::unix::AsyncFd<TimerFd>),
    Tokio(std::pin::Pin<Box<tokio::time::Sleep>>),
}

/// A `timerfd` as tokio's reactor takes it.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct TimerFd(nix::sys::timerfd::TimerFd);

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// A disarmed timer: a `timerfd` on Linux if the kernel gives one, tokio's otherwise. Must
    /// be called inside a tokio runtime.
    pub(crate) fn new() -> Timer {
        Timer {
            inner: Self::precise().unwrap_or_else(|e| {
                tracing::debug!(error = %e, "nexstream: no timerfd; timers are 1 ms coarse");
                Inner::Tokio(Box::pin(tokio::time::sleep(Duration::ZERO)))
            }),
            armed: None,
        }
    }

    #[cfg(target_os = "linux")]
    #[allow(
        unsafe_code,
        reason = "tokio registers a raw descriptor only in an unsafe call"
    )]
    fn precise() -> io::Result<Inner> {
        use nix::sys::timerfd::{ClockId, TimerFlags};
        // CLOCK_MONOTONIC: the clock std's and tokio's `Instant` read on Linux.
        let fd = nix::sys::timerfd::TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the `TimerFd` owns its descriptor (an `OwnedFd`), which stays open and is
        // never replaced while the `AsyncFd` holds it: `as_raw_fd` returns the same descriptor
        // until the `AsyncFd` is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                TimerFd(fd),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Inner::Fd(fd))
    }

    #[cfg(not(target_os = "linux"))]
    fn precise() -> io::Result<Inner> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "timerfd is Linux-only",
        ))
    }

    /// Arms the timer for `at` (disarms it for `None`); `now` is the current instant. Costs a
    /// system call only when the deadline changes.
    pub(crate) fn arm(&mut self, at: Option<Instant>, now: Instant) {
        if at == self.armed {
            return;
        }
        self.armed = at;
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => {
                use nix::sys::time::TimeSpec;
                use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
                let result = match at {
                    // A zero expiration would disarm the timer: a deadline already due waits
                    // one nanosecond.
                    Some(at) => {
                        let wait = at
                            .saturating_duration_since(now)
                            .max(Duration::from_nanos(1));
                        fd.get_ref().0.set(
                            Expiration::OneShot(TimeSpec::from_duration(wait)),
                            TimerSetTimeFlags::empty(),
                        )
                    }
                    None => fd.get_ref().0.unset(),
                };
                if let Err(e) = result {
                    // Not expected for a valid timerfd; fall back rather than never waking.
                    tracing::debug!(error = %e, "nexstream: timerfd refused; using tokio's timer");
                    self.inner = Inner::Tokio(Box::pin(tokio::time::sleep(Duration::ZERO)));
                    self.armed = None;
                    self.arm(at, now);
                }
            }
            Inner::Tokio(sleep) => {
                if let Some(at) = at {
                    sleep.as_mut().reset(at.into());
                }
            }
        }
    }

    /// Waits until the armed deadline (forever while disarmed), then disarms the timer.
    pub(crate) async fn expired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Fd(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    return std::future::pending().await;
                };
                // Reading the expiration count clears it; `EAGAIN` means a re-arm reset the
                // count after the reactor saw it, so the wait goes on. Any other outcome ends
                // the wait (an early `handle_timeout` does nothing harmful).
                if ready
                    .try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from))
                    .is_ok()
                {
                    break;
                }
            },
            Inner::Tokio(sleep) => sleep.as_mut().await,
        }
        self.armed = None;
    }
}
