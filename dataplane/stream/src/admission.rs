//! Per-mode admission above quinn: datagrams get their weighted share of the connection's
//! sending rate while streams have data, and all of it otherwise.
//!
//! quinn writes DATAGRAM frames before STREAM frames in every packet it builds, so a producer
//! that keeps quinn's datagram queue full would starve every stream on the connection. NexStream
//! therefore keeps best-effort and probabilistic datagrams in its own queue and hands quinn at
//! most one packet's worth at a time, through a token bucket:
//!
//! - while the streams are *active* — quinn sent a STREAM frame within the last two round
//!   trips, or bytes wait in NexStream's own buffers — the bucket fills at
//!   `share × cwnd / rtt` bytes per second — the datagrams' weighted share of what the congestion
//!   controller lets the connection send — and holds at most `share × cwnd`;
//! - while the streams are idle, the bucket is full and stays full: datagrams may use the whole
//!   window (work-conserving). Every fourth packet opportunity the streams are polled first
//!   (a probe), so that stream data waiting in quinn is seen even when datagrams would fill
//!   every packet.
//!
//! With the default 9:1 weights datagrams take at most a tenth of the rate while streams are
//! active, and the streams keep the rest. One
//! congestion controller still governs everything: the bucket only decides how much of what it
//! allows may be datagrams.

use std::time::{Duration, Instant};

/// Weights of the two classes under contention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Reliable streams (reliable-ordered, reliable-unordered, best-effort messages on streams).
    pub reliable: u32,
    /// Datagrams (best-effort and probabilistic).
    pub datagram: u32,
}

impl Default for Weights {
    /// 9:1 — datagrams may take at most a tenth of the rate while streams have data.
    fn default() -> Weights {
        Weights {
            reliable: 9,
            datagram: 1,
        }
    }
}

impl Weights {
    /// The datagrams' share, in (0, 1); a zero weight counts as 1.
    pub fn datagram_share(&self) -> f64 {
        let d = f64::from(self.datagram.max(1));
        d / (d + f64::from(self.reliable.max(1)))
    }
}

/// The shortest wait [`Admission::wake_at`] asks for.
const WAKE_MIN: Duration = Duration::from_micros(50);

/// Packet opportunities between probes while the streams are idle.
pub const PROBE_EVERY: u32 = 4;

/// The datagram token bucket of one connection.
#[derive(Clone, Debug)]
pub struct Admission {
    share: f64,
    tokens: f64,
    /// Fill rate at the last refill, bytes per second.
    rate: f64,
    last: Option<Instant>,
    stream_frames: u64,
    active_until: Option<Instant>,
    since_probe: u32,
}

impl Admission {
    /// A bucket for `weights`.
    pub fn new(weights: Weights) -> Admission {
        Admission {
            share: weights.datagram_share(),
            tokens: f64::INFINITY,
            rate: 0.0,
            last: None,
            stream_frames: 0,
            active_until: None,
            since_probe: 0,
        }
    }

    /// Records quinn's count of STREAM frames sent so far: an increase marks the streams
    /// active for two round trips.
    pub fn observe(&mut self, now: Instant, stream_frames_total: u64, rtt: Duration) {
        if stream_frames_total > self.stream_frames {
            self.stream_frames = stream_frames_total;
            self.active_until = Some(now + 2 * rtt.max(Duration::from_millis(1)));
        }
    }

    /// Whether the streams count as active at `now` (`buffered`: bytes wait above quinn).
    pub fn streams_active(&self, now: Instant, buffered: bool) -> bool {
        buffered || self.active_until.is_some_and(|t| t > now)
    }

    /// Whether this packet opportunity should go to the streams first (a probe while the
    /// streams look idle).
    pub fn probe(&mut self, active: bool) -> bool {
        if active {
            self.since_probe = 0;
            return false;
        }
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.since_probe = 0;
            true
        } else {
            false
        }
    }

    /// Brings the bucket to `now` for a path with congestion window `cwnd` and round-trip time
    /// `rtt`.
    pub fn refill(&mut self, now: Instant, active: bool, cwnd: u64, rtt: Duration) {
        let cap = self.share * cwnd as f64;
        if !active {
            self.tokens = f64::INFINITY;
            self.last = Some(now);
            return;
        }
        if self.tokens.is_infinite() {
            // Contention starts: one window's share, no more.
            self.tokens = cap;
        }
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        let rtt = rtt.max(Duration::from_millis(1)).as_secs_f64();
        self.rate = self.share * cwnd as f64 / rtt;
        self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64()).min(cap);
    }

    /// When a datagram of `bytes` bytes waiting for tokens can go: when the bucket will hold
    /// them, or when the streams stop counting as active, whichever is first. `None` when it
    /// can go now (the bucket is not limiting). The endpoint's timer includes this, so a queue
    /// held back by the bucket does not wait for unrelated traffic to be sent.
    pub fn wake_at(&self, bytes: usize) -> Option<Instant> {
        let last = self.last?;
        let missing = bytes as f64 - self.tokens;
        if missing <= 0.0 {
            return None;
        }
        // At least a little later than the last refill, so a timer never fires in a loop.
        let refill = (self.rate > 0.0).then(|| {
            last + Duration::from_secs_f64(
                (missing / self.rate).clamp(WAKE_MIN.as_secs_f64(), 3600.0),
            )
        });
        match (refill, self.active_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes `bytes` if the bucket holds them.
    pub fn take(&mut self, bytes: usize) -> bool {
        let bytes = bytes as f64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// Tokens now (infinite while the streams are idle).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CWND: u64 = 100_000;
    const RTT: Duration = Duration::from_millis(10);

    /// A fixed instant for the bucket's arithmetic (tests are drivers).
    #[allow(clippy::disallowed_methods, reason = "a base instant for a unit test")]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn idle_streams_leave_datagrams_unlimited() {
        let mut a = Admission::new(Weights::default());
        a.refill(t0(), false, CWND, RTT);
        for _ in 0..10_000 {
            assert!(a.take(1400));
        }
        // Probes come every PROBE_EVERY opportunities while idle, never while active.
        let probes = (0..100).filter(|_| a.probe(false)).count();
        assert_eq!(probes, 100 / PROBE_EVERY as usize);
        assert!(!(0..100).any(|_| a.probe(true)));
    }

    #[test]
    fn contention_limits_datagrams_to_their_share_of_the_rate() {
        let start = t0();
        let mut a = Admission::new(Weights {
            reliable: 1,
            datagram: 1,
        });
        a.refill(start, false, CWND, RTT);
        a.refill(start, true, CWND, RTT);
        // One window's share at once: 50 kB.
        let mut taken = 0usize;
        while a.take(1000) {
            taken += 1000;
        }
        assert_eq!(taken, 50_000);
        // Then 0.5 × 100 kB / 10 ms = 5 MB/s: 1 s brings 5 MB (capped per call at the share).
        let mut total = 0usize;
        for ms in 1..=1000u64 {
            a.refill(start + Duration::from_millis(ms), true, CWND, RTT);
            while a.take(1000) {
                total += 1000;
            }
        }
        assert!((4_900_000..=5_100_000).contains(&total), "{total}");
    }

    #[test]
    fn stream_frames_mark_streams_active_for_two_round_trips() {
        let start = t0();
        let mut a = Admission::new(Weights::default());
        assert!(!a.streams_active(start, false));
        assert!(a.streams_active(start, true));
        a.observe(start, 3, RTT);
        assert!(a.streams_active(start + Duration::from_millis(19), false));
        assert!(!a.streams_active(start + Duration::from_millis(20), false));
        // No new frames: nothing changes.
        a.observe(start + Duration::from_millis(30), 3, RTT);
        assert!(!a.streams_active(start + Duration::from_millis(30), false));
    }

    #[test]
    fn wake_at_says_when_a_held_datagram_can_go() {
        let start = t0();
        let mut a = Admission::new(Weights {
            reliable: 1,
            datagram: 1,
        });
        assert_eq!(a.wake_at(1000), None, "never refilled: not limiting");
        a.observe(start, 1, RTT);
        a.refill(start, true, CWND, RTT);
        while a.take(1000) {}
        // 5 MB/s: 1000 bytes take at most 200 µs; the streams stay active for 20 ms.
        let at = a.wake_at(1000).expect("limited");
        assert!(
            at > start && at <= start + Duration::from_micros(200),
            "{:?}",
            at - start
        );
        a.refill(at, true, CWND, RTT);
        assert!(a.take(1000));
        // Idle streams: unlimited, nothing to wait for.
        a.refill(start + Duration::from_millis(30), false, CWND, RTT);
        assert_eq!(a.wake_at(1_000_000), None);
    }

    #[test]
    fn weights_set_the_share() {
        let w = Weights {
            reliable: 3,
            datagram: 1,
        };
        assert!((w.datagram_share() - 0.25).abs() < 1e-9);
        let zero = Weights {
            reliable: 0,
            datagram: 0,
        };
        assert!((zero.datagram_share() - 0.5).abs() < 1e-9);
    }
}
