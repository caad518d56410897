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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::scenario::Scenario;
    use crate::stream::payload::Header;

    /// Sends 1000 probabilistic datagrams (p = 0.5) at 0..10 s, delivers the first `delivered`
    /// of them, with a cut from 4 s to 5 s; the session lasts to the end.
    fn run(delivered: u64) -> Verdict {
        let s = Scenario::parse(
            "name = \"t\"\nnodes = 2\nduration = \"10s\"\n[stream]\npeers = 1\n[stream.pr]\np = 0.5\n",
        )
        .expect("valid");
        let revoked = BTreeSet::new();
        let open = BTreeMap::from([((0, SessionId(1)), 1)]);
        let cuts = [(Duration::from_secs(4), Some(Duration::from_secs(5)))];
        let w = StreamWorld {
            now: Duration::from_secs(15),
            scenario: &s,
            stream: s.stream.as_ref().expect("stream"),
            revoked: &revoked,
            cut_periods: &cuts,
            established: &open,
        };
        let mut c = Probability::default();
        for k in 0..1000u64 {
            let header = Header {
                mode: Mode::Probabilistic,
                src: 0,
                dst: 1,
                flow: 0,
                index: k,
                expires_us: 0,
            };
            let at = Duration::from_millis(k * 10);
            c.on_sent(
                &w,
                &Sent {
                    at,
                    session: SessionId(1),
                    header,
                },
            );
            if k < delivered {
                c.on_delivered(
                    &w,
                    &Delivered {
                        at,
                        node: 1,
                        session: SessionId(2),
                        peer: 0,
                        mode: Mode::Probabilistic,
                        header: Header::decode(&header.encode(60)),
                    },
                );
            }
        }
        c.finish(&w)
    }

    #[test]
    fn a_rate_near_p_holds_and_one_far_off_fails() {
        // Sends within 1 s of the 4–5 s cut (3 s to 6 s inclusive: 301 datagrams) do not
        // count: 699 do, 300 of them delivered.
        let v = run(500);
        assert!(v.ok, "{}", v.detail);
        assert!(v.detail.contains("300 of 699 delivered"), "{}", v.detail);
        // 100 delivered, all before 1 s: 100 / 699 is far below p = 0.5.
        let v = run(100);
        assert!(!v.ok && v.detail.contains("off p"), "{}", v.detail);
    }
}
