//! What the NexStream checkers see (`[stream]` scenarios, [`crate::stream`]): every message or
//! datagram an application sent, every one a node delivered (its header parsed and every body
//! byte compared with what was sent), session changes, revocations reaching nodes, and the
//! world at every sample. Each checker is one file, `stream_*.rs`, saying what and why:
//!
//! | checker | property |
//! | --- | --- |
//! | [`stream_reliable::Reliable`] | reliable-ordered and reliable-unordered messages arrive intact, once, ordered per flow; after the settle period every message of a session still established was delivered |
//! | [`stream_expiry::Expiry`] | no best-effort datagram is delivered after its expiry (receiver's clock, the wire's millisecond), nor twice |
//! | [`stream_probability::Probability`] | the delivered share of probabilistic datagrams sent outside partitions is within `pr_sigmas` binomial standard deviations plus `pr_margin` of `p` |
//! | [`stream_revocation::Revocation`] | a node closes every session to a revoked key within `revocation_bound` of the revocation reaching it, and establishes none after |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nexus_stream::{Mode, SessionId};

use super::{Verdict, stream_expiry, stream_probability, stream_reliable, stream_revocation};
use crate::scenario::{Scenario, StreamScenario};
use crate::stream::payload::Header;

/// What a stream checker sees at any moment.
#[derive(Debug)]
pub struct StreamWorld<'a> {
    /// Virtual time.
    pub now: Duration,
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Its `[stream]` table.
    pub stream: &'a StreamScenario,
    /// Nodes whose MIC the CA has revoked so far.
    pub revoked: &'a BTreeSet<usize>,
    /// Periods in which some link was cut: start and, once healed, end.
    pub cut_periods: &'a [(Duration, Option<Duration>)],
    /// Sessions established now: (node, its session) → peer node.
    pub established: &'a BTreeMap<(usize, SessionId), usize>,
}

impl StreamWorld<'_> {
    /// Whether no link was cut at any time within `guard` of `t`.
    pub fn clean_around(&self, t: Duration, guard: Duration) -> bool {
        let from = t.saturating_sub(guard);
        let to = t + guard;
        self.cut_periods
            .iter()
            .all(|&(start, end)| start > to || end.is_some_and(|e| e < from))
    }

    /// Whether the session `session` of `node` (to `peer`) must have delivered everything by
    /// the end: it is still established and neither end was ever revoked.
    pub fn owes_everything(&self, node: usize, session: SessionId, peer: usize) -> bool {
        self.established.get(&(node, session)) == Some(&peer)
            && !self.revoked.contains(&node)
            && !self.revoked.contains(&peer)
    }
}

/// A message or datagram an application handed to its endpoint (accepted: `Ok` from the send).
#[derive(Clone, Debug)]
pub struct Sent {
    /// When.
    pub at: Duration,
    /// The sender's session it went on.
    pub session: SessionId,
    /// Which message (its header names sender, receiver, mode, flow and index).
    pub header: Header,
}

/// A message or datagram a node delivered to its application.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// When.
    pub at: Duration,
    /// The receiving node.
    pub node: usize,
    /// Its session it arrived on.
    pub session: SessionId,
    /// That session's peer.
    pub peer: usize,
    /// The mode the endpoint delivered it as.
    pub mode: Mode,
    /// The parsed header, or what is wrong with the bytes.
    pub header: Result<Header, String>,
}

impl Delivered {
    /// The header if the bytes are intact and addressed along this session; otherwise what is
    /// wrong.
    pub fn checked(&self) -> Result<&Header, String> {
        let who = format!("n{} (from n{})", self.node + 1, self.peer + 1);
        let h = self
            .header
            .as_ref()
            .map_err(|e| format!("{who} delivered corrupt {} data: {e}", self.mode))?;
        if h.mode != self.mode {
            return Err(format!("{who} delivered {h:?} as mode {}", self.mode));
        }
        if h.dst as usize != self.node || h.src as usize != self.peer {
            return Err(format!(
                "{who} delivered {h:?}, addressed n{} → n{}",
                h.src + 1,
                h.dst + 1
            ));
        }
        Ok(h)
    }
}

/// A session change on one node.
#[derive(Clone, Debug)]
pub enum SessionChange {
    /// The peer's MIC verified.
    Established {
        /// The node's session.
        session: SessionId,
        /// The peer.
        peer: usize,
    },
    /// The session ended, or was refused before it was established.
    Closed {
        /// The node's session.
        session: SessionId,
        /// The peer, if the handshake got that far.
        peer: Option<usize>,
        /// Whether it had been established.
        established: bool,
        /// The close reason's code (`mic_revoked`, …), if it had one.
        code: Option<String>,
    },
}

/// A stream checker. The engine calls `on_sent` for every accepted send, `on_delivered` for
/// every delivery, `on_session` for every session change, `on_revocation` when revocations
/// reach a node (before the node applies them), `on_sample` at every sample and `finish` once,
/// after the settle period.
pub trait StreamInvariant {
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// An application's send was accepted.
    fn on_sent(&mut self, _w: &StreamWorld<'_>, _sent: &Sent) {}
    /// A node delivered a message or datagram.
    fn on_delivered(&mut self, _w: &StreamWorld<'_>, _d: &Delivered) {}
    /// A node's session changed.
    fn on_session(&mut self, _w: &StreamWorld<'_>, _node: usize, _change: &SessionChange) {}
    /// The revocations of `revoked` reach `node` now.
    fn on_revocation(&mut self, _w: &StreamWorld<'_>, _node: usize, _revoked: &[usize]) {}
    /// A sample.
    fn on_sample(&mut self, _w: &StreamWorld<'_>) {}
    /// The verdict.
    fn finish(&mut self, w: &StreamWorld<'_>) -> Verdict;
}

/// Every stream checker, in report order.
pub fn all() -> Vec<Box<dyn StreamInvariant>> {
    vec![
        Box::new(stream_reliable::Reliable::default()),
        Box::new(stream_expiry::Expiry::default()),
        Box::new(stream_probability::Probability::default()),
        Box::new(stream_revocation::Revocation::default()),
    ]
}

/// Keeps the first violation.
pub(crate) fn note(
    first: &mut Option<(Duration, String)>,
    at: Duration,
    why: impl FnOnce() -> String,
) {
    if first.is_none() {
        *first = Some((at, why()));
    }
}
