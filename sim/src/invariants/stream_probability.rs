//! `stream_probability`: probabilistic datagrams are delivered at the rate asked for.
//!
//! Why: the probabilistic mode promises a delivery probability `p`, not "whatever gets
//! through": below the path's loss the sender thins (sends with probability p / (1 − loss)),
//! above it it sends redundant copies. Data sent this way (sampled telemetry, gradient
//! sketches) is sized by that promise; a rate well off `p` breaks the consumer's estimates.
//!
//! What: over every probabilistic datagram sent on a session that stayed established to the
//! end between nodes never revoked, and sent when no link was cut within
//! [`PARTITION_GUARD`] of the send (a partition is not a loss rate the sender can measure), the
//! delivered share `k / n` must satisfy `|k / n − p| ≤ pr_sigmas · √(p (1 − p) / n) + pr_margin`:
//! a binomial bound, plus a margin for the sender's loss estimate (quinn's packet loss, which is
//! measured, counts spurious losses under reordering, and is 0 before 100 packets). Each datagram
//! counts once, however many copies were sent; a datagram delivered twice is a violation.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_stream::{Mode, SessionId};

use super::Verdict;
use super::stream::{Delivered, Sent, StreamInvariant, StreamWorld, note};

/// Datagrams sent within this long of a cut do not count.
pub const PARTITION_GUARD: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Datagram {
    at: Duration,
    session: SessionId,
    dst: usize,
    delivered: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Probability {
    sent: BTreeMap<(u32, u64), Datagram>,
    first: Option<(Duration, String)>,
    /// The last measurement: counted, delivered.
    pub measured: Option<(u64, u64)>,
}

impl StreamInvariant for Probability {
    fn name(&self) -> &'static str {
        "stream_probability"
    }

    fn on_sent(&mut self, _w: &StreamWorld<'_>, s: &Sent) {
        if s.header.mode == Mode::Probabilistic {
            self.sent.insert(
                (s.header.src, s.header.index),
                Datagram {
                    at: s.at,
                    session: s.session,
                    dst: s.header.dst as usize,
                    delivered: false,
                },
            );
        }
    }

    fn on_delivered(&mut self, _w: &StreamWorld<'_>, d: &Delivered) {
        if d.mode != Mode::Probabilistic {
            return;
        }
        let h = match d.checked() {
            Ok(h) => *h,
            Err(why) => return note(&mut self.first, d.at, || why),
        };
        match self.sent.get_mut(&(h.src, h.index)) {
            None => note(&mut self.first, d.at, || {
                format!(
                    "n{} delivered n{}'s probabilistic #{} that was never sent",
                    d.node + 1,
                    h.src + 1,
                    h.index
                )
            }),
            Some(x) if x.delivered => note(&mut self.first, d.at, || {
                format!(
                    "n{} delivered n{}'s probabilistic #{} twice",
                    d.node + 1,
                    h.src + 1,
                    h.index
                )
            }),
            Some(x) => x.delivered = true,
        }
    }

    fn finish(&mut self, w: &StreamWorld<'_>) -> Verdict {
        let p = w.stream.pr.p;
        let (mut n, mut k) = (0u64, 0u64);
        for (&(src, _), x) in &self.sent {
            if w.owes_everything(src as usize, x.session, x.dst)
                && w.clean_around(x.at, PARTITION_GUARD)
            {
                n += 1;
                k += u64::from(x.delivered);
            }
        }
        self.measured = Some((n, k));
        if n == 0 {
            return Verdict::from_first(self.name(), self.first.as_ref(), || {
                "no probabilistic datagram counted (none sent outside partitions on a lasting session)".into()
            });
        }
        let rate = k as f64 / n as f64;
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        let bound = w.stream.pr_sigmas * sigma + w.stream.pr_margin;
        let text = format!(
            "{k} of {n} delivered = {rate:.4}, p = {p}, allowed ±{bound:.4} ({} σ of {sigma:.4} + margin {})",
            w.stream.pr_sigmas, w.stream.pr_margin
        );
        if (rate - p).abs() > bound {
            note(&mut self.first, w.now, || {
                format!("delivered share off p: {text}")
            });
        }
        Verdict::from_first(self.name(), self.first.as_ref(), || text)
    }
}
