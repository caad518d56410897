//! `stream_revocation`: no session stays established to a revoked key, and none is opened
//! from one.
//!
//! Why: revoking a MIC is how the fabric cuts off a compromised node or model. NexStream
//! binds each session to the peer's MIC at establishment; a revocation must close the sessions
//! already open (`Endpoint::update_trust`) and refuse new handshakes — including resumed ones,
//! which is why resumption is off. A session that outlives the revocation keeps serving a
//! revoked peer.
//!
//! What: when a revocation reaches a node (the `revoke` action's delivery, `delay` after the CA
//! signed it), every session of that node to a revoked peer must be closed within
//! `[stream] revocation_bound`; checked at every session change, every sample and the end.
//! From then on the node must not establish a session with that peer (either side may have
//! opened it). Handshakes refused for a revoked MIC are counted: the revoked node keeps
//! reconnecting, so a run with revocations and no refusals tested nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_stream::SessionId;

use super::Verdict;
use super::stream::{SessionChange, StreamInvariant, StreamWorld, note};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Revocation {
    /// (node, revoked peer) → when the revocation reached the node.
    reached: BTreeMap<(usize, usize), Duration>,
    /// (node, session) → peer, for established sessions.
    open: BTreeMap<(usize, SessionId), usize>,
    /// Established sessions closed after the revocation reached their node.
    closed: u64,
    /// Longest time from a revocation reaching a node to its session's close.
    slowest: Duration,
    /// Handshakes refused because the peer's MIC was revoked.
    pub refused: u64,
    first: Option<(Duration, String)>,
}

impl Revocation {
    fn check_open(&mut self, w: &StreamWorld<'_>) {
        let bound = w.stream.revocation_bound;
        for (&(node, session), &peer) in &self.open {
            if let Some(&t) = self.reached.get(&(node, peer))
                && t + bound < w.now
            {
                note(&mut self.first, t + bound, || {
                    format!(
                        "n{}'s session {session} to revoked n{} still established at {:.3} s; \
                         the revocation reached n{} at {:.3} s (bound {bound:?})",
                        node + 1,
                        peer + 1,
                        w.now.as_secs_f64(),
                        node + 1,
                        t.as_secs_f64()
                    )
                });
            }
        }
    }
}

impl StreamInvariant for Revocation {
    fn name(&self) -> &'static str {
        "stream_revocation"
    }

    fn on_revocation(&mut self, w: &StreamWorld<'_>, node: usize, revoked: &[usize]) {
        for &r in revoked.iter().filter(|&&r| r != node) {
            self.reached.entry((node, r)).or_insert(w.now);
        }
    }

    fn on_session(&mut self, w: &StreamWorld<'_>, node: usize, change: &SessionChange) {
        match change {
            SessionChange::Established { session, peer } => {
                if let Some(&t) = self.reached.get(&(node, *peer)) {
                    note(&mut self.first, w.now, || {
                        format!(
                            "n{} established session {session} with n{}, whose revocation reached it at {:.3} s",
                            node + 1,
                            peer + 1,
                            t.as_secs_f64()
                        )
                    });
                }
                self.open.insert((node, *session), *peer);
            }
            SessionChange::Closed {
                session,
                peer,
                established,
                code,
            } => {
                self.open.remove(&(node, *session));
                let reached = peer.and_then(|p| self.reached.get(&(node, p)).copied());
                if let Some(t) = reached {
                    if *established {
                        self.closed += 1;
                        self.slowest = self.slowest.max(w.now.saturating_sub(t));
                    } else if code.as_deref() == Some("mic_revoked") {
                        self.refused += 1;
                    }
                }
            }
        }
        self.check_open(w);
    }

    fn on_sample(&mut self, w: &StreamWorld<'_>) {
        self.check_open(w);
    }

    fn finish(&mut self, w: &StreamWorld<'_>) -> Verdict {
        self.check_open(w);
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            if self.reached.is_empty() {
                return "no revocation in this run".into();
            }
            format!(
                "{} node-revocation deliveries; {} sessions closed, slowest {:.3} ms after delivery; \
                 {} handshakes from or to revoked keys refused",
                self.reached.len(),
                self.closed,
                self.slowest.as_secs_f64() * 1e3,
                self.refused
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::scenario::Scenario;

    fn scenario() -> Scenario {
        Scenario::parse("name = \"t\"\nnodes = 3\nduration = \"5s\"\n[stream]\n").expect("valid")
    }

    fn world<'a>(
        s: &'a Scenario,
        now_ms: u64,
        revoked: &'a BTreeSet<usize>,
        open: &'a BTreeMap<(usize, SessionId), usize>,
    ) -> StreamWorld<'a> {
        StreamWorld {
            now: Duration::from_millis(now_ms),
            scenario: s,
            stream: s.stream.as_ref().expect("stream"),
            revoked,
            cut_periods: &[],
            established: open,
        }
    }

    fn established(session: u64, peer: usize) -> SessionChange {
        SessionChange::Established {
            session: SessionId(session),
            peer,
        }
    }

    fn closed(session: u64, peer: usize, established: bool, code: &str) -> SessionChange {
        SessionChange::Closed {
            session: SessionId(session),
            peer: Some(peer),
            established,
            code: Some(code.into()),
        }
    }

    #[test]
    fn closing_within_the_bound_and_refusing_afterwards_holds() {
        let s = scenario();
        let (revoked, open) = (BTreeSet::from([2]), BTreeMap::new());
        let mut c = Revocation::default();
        c.on_session(&world(&s, 100, &revoked, &open), 0, &established(1, 2));
        c.on_revocation(&world(&s, 1000, &revoked, &open), 0, &[2]);
        c.on_session(
            &world(&s, 1005, &revoked, &open),
            0,
            &closed(1, 2, true, "mic_revoked"),
        );
        c.on_session(
            &world(&s, 1500, &revoked, &open),
            0,
            &closed(2, 2, false, "mic_revoked"),
        );
        let v = c.finish(&world(&s, 5000, &revoked, &open));
        assert!(v.ok, "{}", v.detail);
        assert_eq!(c.refused, 1);
    }

    #[test]
    fn a_session_outliving_the_bound_fails_at_the_bound() {
        let s = scenario();
        let (revoked, open) = (BTreeSet::from([2]), BTreeMap::new());
        let mut c = Revocation::default();
        c.on_session(&world(&s, 100, &revoked, &open), 0, &established(1, 2));
        c.on_revocation(&world(&s, 1000, &revoked, &open), 0, &[2]);
        // Still open at the next sample, 500 ms later: the bound is 10 ms.
        c.on_sample(&world(&s, 1500, &revoked, &open));
        let v = c.finish(&world(&s, 5000, &revoked, &open));
        assert!(!v.ok);
        assert_eq!(v.violated_at_s, Some(1.01));
        assert!(v.detail.contains("still established"), "{}", v.detail);
    }

    #[test]
    fn a_new_session_with_a_revoked_key_fails() {
        let s = scenario();
        let (revoked, open) = (BTreeSet::from([2]), BTreeMap::new());
        let mut c = Revocation::default();
        c.on_revocation(&world(&s, 1000, &revoked, &open), 0, &[2]);
        c.on_session(&world(&s, 2000, &revoked, &open), 0, &established(3, 2));
        let v = c.finish(&world(&s, 5000, &revoked, &open));
        assert!(!v.ok);
        assert!(
            v.detail.contains("established session s3 with n3"),
            "{}",
            v.detail
        );
    }
}
