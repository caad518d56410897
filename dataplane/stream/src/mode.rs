//! The four delivery modes and the options each send takes.

use std::fmt;
use std::time::Instant;

/// A NexStream delivery mode. The codes equal NexLink's Delivery Mode field
/// (`docs/nexlink.md` §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Reliable-ordered: a bidirectional stream per flow; messages arrive once, in order.
    ReliableOrdered,
    /// Reliable-unordered: a stream per message; messages arrive once, in any order; a
    /// message's chunks are placed by offset as they arrive.
    ReliableUnordered,
    /// Best-effort: a datagram per message (a stream reset at the deadline when too large);
    /// no retransmission; expired data is never delivered.
    BestEffort,
    /// Probabilistic: datagrams delivered with a configured probability.
    Probabilistic,
}

impl Mode {
    /// All modes, in code order.
    pub const ALL: [Mode; 4] = [
        Mode::ReliableOrdered,
        Mode::ReliableUnordered,
        Mode::BestEffort,
        Mode::Probabilistic,
    ];

    /// The wire code (1–4).
    pub fn code(self) -> u8 {
        match self {
            Mode::ReliableOrdered => 1,
            Mode::ReliableUnordered => 2,
            Mode::BestEffort => 3,
            Mode::Probabilistic => 4,
        }
    }

    /// The mode of a wire code.
    pub fn from_code(code: u8) -> Option<Mode> {
        match code {
            1 => Some(Mode::ReliableOrdered),
            2 => Some(Mode::ReliableUnordered),
            3 => Some(Mode::BestEffort),
            4 => Some(Mode::Probabilistic),
            _ => None,
        }
    }

    /// A stable short name: `ro`, `ru`, `be`, `pr`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::ReliableOrdered => "ro",
            Mode::ReliableUnordered => "ru",
            Mode::BestEffort => "be",
            Mode::Probabilistic => "pr",
        }
    }

    /// Index into per-mode arrays (0–3).
    pub fn index(self) -> usize {
        usize::from(self.code() - 1)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of a reliable-ordered flow ([`crate::Endpoint::open_flow`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOptions {
    /// quinn stream priority: higher is sent first; equal priorities share round-robin.
    pub priority: i32,
    /// The flow is reset (code `expired`) if not finished and fully acknowledged by then.
    pub deadline: Option<Instant>,
}

/// Options of a reliable-unordered message ([`crate::Endpoint::send_message`]) and of a
/// best-effort message too large for a datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageOptions {
    /// quinn stream priority.
    pub priority: i32,
    /// The message's stream is reset (code `expired`) if not acknowledged by then.
    pub deadline: Option<Instant>,
}

/// A delivery probability in (0, 1], kept as parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probability(u32);

impl Probability {
    /// Certain delivery (as far as the path allows).
    pub const ONE: Probability = Probability(1_000_000);

    /// `p` in (0, 1]; `None` otherwise (NaN included).
    pub fn new(p: f64) -> Option<Probability> {
        if p > 0.0 && p <= 1.0 {
            // In (0, 1e6] after the check; at least 1 ppm.
            Some(Probability(((p * 1e6).round() as u32).max(1)))
        } else {
            None
        }
    }

    /// As a fraction.
    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

/// Options of a datagram ([`crate::Endpoint::send_datagram`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramOptions {
    /// Best-effort (`None`) or probabilistic with this target delivery probability.
    pub probability: Option<Probability>,
    /// Not sent, and not delivered by the receiver, after this instant.
    pub expires: Option<Instant>,
}

impl DatagramOptions {
    /// Best-effort, expiring at `expires`.
    pub fn best_effort(expires: Option<Instant>) -> DatagramOptions {
        DatagramOptions {
            probability: None,
            expires,
        }
    }

    /// The mode these options select.
    pub fn mode(&self) -> Mode {
        match self.probability {
            None => Mode::BestEffort,
            Some(_) => Mode::Probabilistic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_codes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_code(m.code()), Some(m));
            assert_eq!(Mode::ALL[m.index()], m);
        }
        assert_eq!(Mode::from_code(0), None);
        assert_eq!(Mode::from_code(5), None);
    }

    #[test]
    fn probability_bounds() {
        assert!(Probability::new(0.0).is_none());
        assert!(Probability::new(-0.1).is_none());
        assert!(Probability::new(1.01).is_none());
        assert!(Probability::new(f64::NAN).is_none());
        assert_eq!(Probability::new(1.0), Some(Probability::ONE));
        assert_eq!(Probability::new(1e-9).map(|p| p.0), Some(1));
        let p = Probability::new(0.3).expect("valid");
        assert!((p.get() - 0.3).abs() < 1e-9);
    }
}
