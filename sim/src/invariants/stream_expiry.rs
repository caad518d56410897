//! `stream_expiry`: best-effort never delivers expired data.
//!
//! Why: best-effort is for data whose value ends at a deadline (a frame of a live stream, a
//! load report): delivering it late is worse than dropping it, because the receiver would act
//! on stale state. NexStream stamps each best-effort datagram with its expiry and the receiver
//! drops it once its own clock has passed it.
//!
//! What: for every best-effort delivery, the receiver's clock at delivery — virtual time, in
//! Unix milliseconds as the endpoint reads it — is not past the expiry the sender set, at the
//! wire's resolution (whole Unix milliseconds: a datagram due at 1.0305 s may be delivered up
//! to 1.030999 s). The bytes must be intact, travel along their session, and be delivered at
//! most once (duplicates are suppressed by sequence number).

use std::collections::BTreeSet;
use std::time::Duration;

use nexus_stream::Mode;

use super::Verdict;
use super::stream::{Delivered, Sent, StreamInvariant, StreamWorld, note};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Expiry {
    sent: u64,
    delivered: BTreeSet<(u32, u64)>,
    /// Least time left before expiry at a delivery, whole milliseconds (the wire's unit).
    slack_min_ms: Option<u64>,
    first: Option<(Duration, String)>,
}

impl StreamInvariant for Expiry {
    fn name(&self) -> &'static str {
        "stream_expiry"
    }

    fn on_sent(&mut self, _w: &StreamWorld<'_>, s: &Sent) {
        if s.header.mode == Mode::BestEffort {
            self.sent += 1;
        }
    }

    fn on_delivered(&mut self, _w: &StreamWorld<'_>, d: &Delivered) {
        if d.mode != Mode::BestEffort {
            return;
        }
        let h = match d.checked() {
            Ok(h) => *h,
            Err(why) => return note(&mut self.first, d.at, || why),
        };
        let at_us = u64::try_from(d.at.as_micros()).unwrap_or(u64::MAX);
        if at_us / 1000 > h.expires_us / 1000 {
            return note(&mut self.first, d.at, || {
                format!(
                    "n{} delivered n{}'s best-effort #{} at {:.6} s, expired at {:.6} s",
                    d.node + 1,
                    h.src + 1,
                    h.index,
                    at_us as f64 / 1e6,
                    h.expires_us as f64 / 1e6
                )
            });
        }
        let slack = h.expires_us / 1000 - at_us / 1000;
        self.slack_min_ms = Some(self.slack_min_ms.map_or(slack, |s| s.min(slack)));
        if !self.delivered.insert((h.src, h.index)) {
            note(&mut self.first, d.at, || {
                format!(
                    "n{} delivered n{}'s best-effort #{} twice",
                    d.node + 1,
                    h.src + 1,
                    h.index
                )
            });
        }
    }

    fn finish(&mut self, _w: &StreamWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} of {} best-effort datagrams delivered, none after its expiry (least time left {})",
                self.delivered.len(),
                self.sent,
                self.slack_min_ms.map_or("-".to_owned(), |s| format!(
                    "{s} ms, counted in whole ms as on the wire"
                ))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use nexus_stream::SessionId;

    use super::*;
    use crate::scenario::Scenario;
    use crate::stream::payload::Header;

    /// Delivers one best-effort datagram expiring at 1.0305 s at each of `at_us`.
    fn run(at_us: &[u64]) -> Verdict {
        let s =
            Scenario::parse("name = \"t\"\nnodes = 2\nduration = \"5s\"\n[stream]\npeers = 1\n")
                .expect("valid");
        let (revoked, open) = (BTreeSet::new(), BTreeMap::new());
        let w = StreamWorld {
            now: Duration::from_secs(2),
            scenario: &s,
            stream: s.stream.as_ref().expect("stream"),
            revoked: &revoked,
            cut_periods: &[],
            established: &open,
        };
        let h = Header {
            mode: Mode::BestEffort,
            src: 0,
            dst: 1,
            flow: 0,
            index: 9,
            expires_us: 1_030_500,
        };
        let mut c = Expiry::default();
        c.on_sent(
            &w,
            &Sent {
                at: Duration::from_secs(1),
                session: SessionId(1),
                header: h,
            },
        );
        for &t in at_us {
            c.on_delivered(
                &w,
                &Delivered {
                    at: Duration::from_micros(t),
                    node: 1,
                    session: SessionId(2),
                    peer: 0,
                    mode: Mode::BestEffort,
                    header: Header::decode(&h.encode(200)),
                },
            );
        }
        c.finish(&w)
    }

    #[test]
    fn in_time_holds_late_or_twice_fails() {
        assert!(run(&[1_020_000]).ok);
        // Within the expiry's millisecond: the wire cannot tell it apart.
        assert!(run(&[1_030_999]).ok);
        let late = run(&[1_031_000]);
        assert!(
            !late.ok && late.detail.contains("expired at 1.030500 s"),
            "{}",
            late.detail
        );
        let twice = run(&[1_010_000, 1_020_000]);
        assert!(
            !twice.ok && twice.detail.contains("twice"),
            "{}",
            twice.detail
        );
    }
}
