//! The one notion of time the cores use: a monotonic timestamp that the driver passes in.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in monotonic time, in microseconds since an epoch chosen by the driver.
///
/// Cores never read a clock; the actor (real time) or the simulator (virtual time) converts its
/// own clock into a `Timestamp` and passes it into every call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The driver's epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// A timestamp `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    /// Whole milliseconds since the epoch (rounded down), for serialized forms that count in
    /// milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        // Saturate rather than wrap: u64 microseconds is ~584,000 years.
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_micros(1_000);
        assert_eq!((t + Duration::from_millis(2)).as_micros(), 3_000);
        assert_eq!(Timestamp::ZERO - t, Duration::ZERO);
        assert_eq!(t - Timestamp::ZERO, Duration::from_millis(1));
        assert_eq!((t + Duration::MAX).as_micros(), u64::MAX);
    }

    #[test]
    fn milliseconds_round_down_and_saturate() {
        assert_eq!(Timestamp::from_millis(7).as_micros(), 7_000);
        assert_eq!(Timestamp::from_micros(7_999).as_millis(), 7);
        assert_eq!(Timestamp::from_millis(u64::MAX).as_micros(), u64::MAX);
        assert_eq!(Timestamp::from_millis(3).as_millis(), 3);
    }
}
