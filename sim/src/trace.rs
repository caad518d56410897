//! The event trace: every delivery, drop, membership event, timeline action, registry event,
//! NexStream event and violation, in order. Each run hashes it (`trace hash: <hex>`); `--trace out.jsonl` also writes it out.

use std::io::Write;

use nexus_gossip::mix::WordHash;
use nexus_gossip::{Event, MemberId};

use crate::invariants::NodeIds;
use crate::scenario::Action;
use serde::Serialize;

/// One traced event. Times are virtual microseconds since the start of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A datagram reached a node.
    Deliver {
        /// Virtual time, µs.
        t_us: u64,
        /// Sender node index.
        from: usize,
        /// Receiver node index.
        to: usize,
        /// Datagram size.
        bytes: usize,
    },
    /// A datagram was dropped.
    Drop {
        /// Virtual time, µs.
        t_us: u64,
        /// Sender node index.
        from: usize,
        /// Receiver node index.
        to: usize,
        /// `loss`, `partition`, `crashed`, `paused-overflow`.
        reason: &'static str,
    },
    /// A node reported a membership event.
    Member {
        /// Virtual time, µs.
        t_us: u64,
        /// Reporting node.
        node: usize,
        /// What it reported (e.g. `down n3 g1`).
        event: String,
    },
    /// A timeline action ran.
    Action {
        /// Virtual time, µs.
        t_us: u64,
        /// Its description.
        action: String,
    },
    /// A registry event on a node: a register, renewal, load update, withdrawal or restore, or
    /// a resolve and its answer (core mode with a registry only).
    Registry {
        /// Virtual time, µs.
        t_us: u64,
        /// The node.
        node: usize,
        /// What happened (e.g. `register coder-1 v1`, `resolve llm.code -> [n3/coder-1 v1]`).
        event: String,
    },
    /// A CA client operation was answered (or given up on), or a CA run's final read happened
    /// (scenarios with a `[ca]` table).
    Ca {
        /// Virtual time, µs.
        t_us: u64,
        /// The client (0-based) or voter.
        node: usize,
        /// What happened (e.g. `#3 c1→n2 issue rid 0a0b0c0d -> issued 4 [0.100s..0.180s]`).
        event: String,
    },
    /// A NexStream event on a node (`[stream]` scenarios): a session connecting, established
    /// or closed, a delivery, a failed stream, a refused send, a trust update.
    Stream {
        /// Virtual time, µs.
        t_us: u64,
        /// The node.
        node: usize,
        /// What happened (e.g. `established s1 n2`, `deliver ro n1->n2 f0 #3 1000B`).
        event: String,
    },
    /// An invariant was violated.
    Violation {
        /// Virtual time, µs.
        t_us: u64,
        /// The invariant's name.
        invariant: &'static str,
        /// What was seen.
        detail: String,
    },
}

/// How a membership event reads in the trace (`up n3 g1`, `down n5 g2`, …), with nodes named by
/// their index in `ids`; `None` for events that are not traced (RTT samples). Both simulation
/// modes use this, so their traces speak one language.
pub fn member_event_text(ids: &NodeIds, event: &Event) -> Option<String> {
    let describe = |id: &MemberId| match ids.get(&id.node_id()) {
        Some(j) => format!("n{} g{}", j + 1, id.generation()),
        None => format!("{} g{}", id.node_id().short(), id.generation()),
    };
    Some(match event {
        Event::MemberUp(id) => format!("up {}", describe(id)),
        Event::MemberDown { id, left } => {
            format!("{} {}", if *left { "left" } else { "down" }, describe(id))
        }
        Event::MemberReplaced { old, new } => {
            format!("replaced {} -> g{}", describe(old), new.generation())
        }
        Event::Joined => "joined".into(),
        Event::Isolated => "isolated".into(),
        Event::Rejoined(id) => format!("rejoined g{}", id.generation()),
        Event::ProbeRtt { .. } => return None,
    })
}

/// Mixes a byte string into the trace hash: its length, then its bytes as words. The trace hash
/// is the workspace's word hash ([`WordHash`]): the same on every platform; it detects
/// divergence between runs, it is not a cryptographic commitment.
fn feed(h: &mut WordHash, bytes: &[u8]) {
    h.word(bytes.len() as u64);
    h.words(bytes);
}

/// The running trace of one simulation.
pub struct Trace {
    hash: WordHash,
    events: u64,
    out: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<std::io::Error>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trace({} events, {})", self.events, self.hash_hex())
    }
}

impl Trace {
    /// A trace that is only hashed.
    pub fn new() -> Self {
        Trace {
            hash: WordHash::new(0xcbf2_9ce4_8422_2325),
            events: 0,
            out: None,
            write_error: None,
        }
    }

    /// A trace that is hashed and written as JSON lines to `file`.
    pub fn to_file(file: std::fs::File) -> Self {
        Trace {
            out: Some(std::io::BufWriter::new(file)),
            ..Trace::new()
        }
    }

    /// Records an event; `payload` (a datagram's bytes) is hashed too when given.
    pub fn record(&mut self, event: TraceEvent, payload: Option<&[u8]>) {
        self.events += 1;
        let h = &mut self.hash;
        match &event {
            TraceEvent::Deliver {
                t_us,
                from,
                to,
                bytes,
            } => {
                h.word(1);
                h.word(*t_us);
                h.word(*from as u64);
                h.word(*to as u64);
                h.word(*bytes as u64);
            }
            TraceEvent::Drop {
                t_us,
                from,
                to,
                reason,
            } => {
                h.word(2);
                h.word(*t_us);
                h.word(*from as u64);
                h.word(*to as u64);
                feed(h, reason.as_bytes());
            }
            TraceEvent::Member { t_us, node, event } => {
                h.word(3);
                h.word(*t_us);
                h.word(*node as u64);
                feed(h, event.as_bytes());
            }
            TraceEvent::Action { t_us, action } => {
                h.word(4);
                h.word(*t_us);
                feed(h, action.as_bytes());
            }
            TraceEvent::Registry { t_us, node, event } => {
                h.word(6);
                h.word(*t_us);
                h.word(*node as u64);
                feed(h, event.as_bytes());
            }
            TraceEvent::Ca { t_us, node, event } => {
                h.word(7);
                h.word(*t_us);
                h.word(*node as u64);
                feed(h, event.as_bytes());
            }
            TraceEvent::Stream { t_us, node, event } => {
                h.word(8);
                h.word(*t_us);
                h.word(*node as u64);
                feed(h, event.as_bytes());
            }
            TraceEvent::Violation {
                t_us,
                invariant,
                detail,
            } => {
                h.word(5);
                h.word(*t_us);
                feed(h, invariant.as_bytes());
                feed(h, detail.as_bytes());
            }
        }
        if let Some(p) = payload {
            feed(h, p);
        }
        if let Some(out) = &mut self.out
            && self.write_error.is_none()
        {
            let line = serde_json::to_string(&event).unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}") {
                self.write_error = Some(e);
            }
        }
    }

    /// Records a timeline action of the scenario at `t_us`, as it reads in the scenario.
    pub fn record_action(&mut self, t_us: u64, action: &Action) {
        self.record(
            TraceEvent::Action {
                t_us,
                action: format!("{action:?}"),
            },
            None,
        );
    }

    /// Records node `node`'s membership event `event`, as [`member_event_text`] describes it
    /// (nodes named by their index in `ids`) when the trace is written to a file; the hash takes
    /// the identity's fixed hash ([`MemberId::wire_hash`]) instead of formatting text or looking
    /// up an index: at 10,000 nodes there are 10⁸ such events. RTT samples are not traced.
    pub fn record_member(&mut self, t_us: u64, node: usize, ids: &NodeIds, event: &Event) {
        let (code, id, generation) = match event {
            Event::MemberUp(id) => (1, Some(id), id.generation()),
            Event::MemberDown { id, left: false } => (2, Some(id), id.generation()),
            Event::MemberDown { id, left: true } => (3, Some(id), id.generation()),
            Event::MemberReplaced { old, new } => (4, Some(old), new.generation()),
            Event::Joined => (5, None, 0),
            Event::Isolated => (6, None, 0),
            Event::Rejoined(id) => (7, None, id.generation()),
            Event::ProbeRtt { .. } => return,
        };
        self.events += 1;
        let h = &mut self.hash;
        h.word(3);
        h.word(t_us);
        h.word(node as u64);
        h.word(code);
        if let Some(id) = id {
            // The identity's fixed hash (address, node id, generation, metadata) stands for it:
            // the same in every process, and no lookup of its node index per event.
            h.word(id.wire_hash());
            h.word(id.generation());
        }
        h.word(generation);
        if let Some(out) = &mut self.out
            && self.write_error.is_none()
            && let Some(text) = member_event_text(ids, event)
        {
            let line = serde_json::to_string(&TraceEvent::Member {
                t_us,
                node,
                event: text,
            })
            .unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}") {
                self.write_error = Some(e);
            }
        }
    }

    /// Events recorded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The hash of every event so far, as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash.state())
    }

    /// Flushes the JSONL file; reports the first write error, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        if let Some(out) = &mut self.out {
            out.flush()?;
        }
        Ok(())
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_the_order() {
        let ev = |t| TraceEvent::Deliver {
            t_us: t,
            from: 1,
            to: 2,
            bytes: 3,
        };
        let hash = |events: &[TraceEvent]| {
            let mut t = Trace::new();
            for e in events {
                t.record(e.clone(), Some(b"x"));
            }
            t.hash_hex()
        };
        assert_eq!(hash(&[ev(1), ev(2)]), hash(&[ev(1), ev(2)]));
        assert_ne!(hash(&[ev(1), ev(2)]), hash(&[ev(2), ev(1)]));
        assert_ne!(hash(&[ev(1)]), hash(&[ev(2)]));
    }
}
