//! `stream_reliable`: reliable streams deliver every byte exactly once, ordered where ordered.
//!
//! Why: reliable-ordered flows and reliable-unordered messages are what NexAPI requests,
//! token streams and tensor transfers ride on; a lost, repeated, reordered or altered byte is
//! a wrong answer, not a slow one. quinn retransmits and reassembles; NexStream frames messages
//! on top (length prefixes on a flow, one stream per unordered message placed by offset), and
//! the simulator's loss, duplication, reordering and partitions push every one of those paths.
//!
//! What: every delivered message's bytes are compared with what was sent (the payload is a
//! function of its header, `crate::stream::payload`) and must travel along the session that
//! carried it. A reliable-ordered flow must deliver its messages in index order, each once
//! (index `k` only after `k − 1`); a reliable-unordered message at most once. At the end — after
//! `[stream] settle` with every cut healed and loss off — every message sent on a session that
//! is still established, between nodes never revoked, must have been delivered. Messages on
//! sessions that closed (revocation, idle timeout) owe nothing beyond once-and-in-order.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_stream::{Mode, SessionId};

use super::Verdict;
use super::stream::{Delivered, Sent, StreamInvariant, StreamWorld, note};

#[derive(Debug)]
struct Flow {
    dst: usize,
    session: SessionId,
    sent: u64,
    next: u64,
}

#[derive(Debug)]
struct Message {
    dst: usize,
    session: SessionId,
    delivered: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Reliable {
    /// (sender, flow) → what was sent and the next index due.
    flows: BTreeMap<(u32, u64), Flow>,
    /// (sender, index) → reliable-unordered message.
    messages: BTreeMap<(u32, u64), Message>,
    delivered: [u64; 2],
    first: Option<(Duration, String)>,
}

impl StreamInvariant for Reliable {
    fn name(&self) -> &'static str {
        "stream_reliable"
    }

    fn on_sent(&mut self, _w: &StreamWorld<'_>, s: &Sent) {
        let h = &s.header;
        match h.mode {
            Mode::ReliableOrdered => {
                let f = self.flows.entry((h.src, h.flow)).or_insert(Flow {
                    dst: h.dst as usize,
                    session: s.session,
                    sent: 0,
                    next: 0,
                });
                assert_eq!(
                    f.sent, h.index,
                    "the engine numbers a flow's messages from 0"
                );
                f.sent += 1;
            }
            Mode::ReliableUnordered => {
                self.messages.insert(
                    (h.src, h.index),
                    Message {
                        dst: h.dst as usize,
                        session: s.session,
                        delivered: 0,
                    },
                );
            }
            _ => {}
        }
    }

    fn on_delivered(&mut self, _w: &StreamWorld<'_>, d: &Delivered) {
        if !matches!(d.mode, Mode::ReliableOrdered | Mode::ReliableUnordered) {
            return;
        }
        let h = match d.checked() {
            Ok(h) => *h,
            Err(why) => return note(&mut self.first, d.at, || why),
        };
        let who = format!("n{} → n{}", h.src + 1, h.dst + 1);
        if d.mode == Mode::ReliableOrdered {
            self.delivered[0] += 1;
            let Some(f) = self.flows.get_mut(&(h.src, h.flow)) else {
                return note(&mut self.first, d.at, || {
                    format!(
                        "{who}: flow {} message #{} delivered but never sent",
                        h.flow, h.index
                    )
                });
            };
            if h.index != f.next {
                let next = f.next;
                return note(&mut self.first, d.at, || {
                    format!(
                        "{who} flow {}: delivered #{} when #{next} was due ({})",
                        h.flow,
                        h.index,
                        if h.index < next {
                            "a duplicate"
                        } else {
                            "out of order, or a gap"
                        }
                    )
                });
            }
            f.next += 1;
        } else {
            self.delivered[1] += 1;
            let Some(m) = self.messages.get_mut(&(h.src, h.index)) else {
                return note(&mut self.first, d.at, || {
                    format!(
                        "{who}: unordered message #{} delivered but never sent",
                        h.index
                    )
                });
            };
            m.delivered += 1;
            if m.delivered > 1 {
                note(&mut self.first, d.at, || {
                    format!(
                        "{who}: unordered message #{} delivered {} times",
                        h.index, m.delivered
                    )
                });
            }
        }
    }

    fn finish(&mut self, w: &StreamWorld<'_>) -> Verdict {
        let mut owed = 0u64;
        for (&(src, flow), f) in &self.flows {
            if w.owes_everything(src as usize, f.session, f.dst) {
                owed += f.sent;
                if f.next < f.sent {
                    note(&mut self.first, w.now, || {
                        format!(
                            "n{} → n{} flow {flow}: {} of {} messages delivered by the end (first missing #{}), \
                             the session still established",
                            src + 1,
                            f.dst + 1,
                            f.next,
                            f.sent,
                            f.next
                        )
                    });
                }
            }
        }
        for (&(src, index), m) in &self.messages {
            if w.owes_everything(src as usize, m.session, m.dst) {
                owed += 1;
                if m.delivered == 0 {
                    note(&mut self.first, w.now, || {
                        format!(
                            "n{} → n{}: unordered message #{index} never delivered, the session still established",
                            src + 1,
                            m.dst + 1
                        )
                    });
                }
            }
        }
        let sent_ro: u64 = self.flows.values().map(|f| f.sent).sum();
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} ordered messages on {} flows and {} unordered sent; {} and {} delivered, intact, once, in order; \
                 all {owed} owed at the end arrived",
                sent_ro,
                self.flows.len(),
                self.messages.len(),
                self.delivered[0],
                self.delivered[1]
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::scenario::Scenario;
    use crate::stream::payload::Header;

    fn scenario() -> Scenario {
        Scenario::parse("name = \"t\"\nnodes = 3\nduration = \"5s\"\n[stream]\n").expect("valid")
    }

    fn ro(index: u64) -> Header {
        Header {
            mode: Mode::ReliableOrdered,
            src: 0,
            dst: 1,
            flow: 4,
            index,
            expires_us: 0,
        }
    }

    /// Sends messages 0..3 on one flow of session s1 (n1 → n2), delivers `order`, and returns
    /// the verdict with the session still established at the end.
    fn run(order: &[u64], corrupt: bool) -> Verdict {
        let s = scenario();
        let revoked = BTreeSet::new();
        let open = BTreeMap::from([((0, SessionId(1)), 1)]);
        let w = StreamWorld {
            now: Duration::from_secs(1),
            scenario: &s,
            stream: s.stream.as_ref().expect("stream"),
            revoked: &revoked,
            cut_periods: &[],
            established: &open,
        };
        let mut c = Reliable::default();
        for k in 0..3 {
            c.on_sent(
                &w,
                &Sent {
                    at: Duration::ZERO,
                    session: SessionId(1),
                    header: ro(k),
                },
            );
        }
        for &k in order {
            let mut bytes = ro(k).encode(100);
            if corrupt {
                bytes[70] ^= 1;
            }
            c.on_delivered(
                &w,
                &Delivered {
                    at: Duration::from_millis(10),
                    node: 1,
                    session: SessionId(7),
                    peer: 0,
                    mode: Mode::ReliableOrdered,
                    header: Header::decode(&bytes),
                },
            );
        }
        c.finish(&w)
    }

    #[test]
    fn in_order_once_and_complete_holds() {
        let v = run(&[0, 1, 2], false);
        assert!(v.ok, "{}", v.detail);
    }

    #[test]
    fn reordering_duplication_loss_and_corruption_fail() {
        let v = run(&[0, 2, 1], false);
        assert!(!v.ok && v.detail.contains("out of order"), "{}", v.detail);
        let v = run(&[0, 1, 1, 2], false);
        assert!(!v.ok && v.detail.contains("duplicate"), "{}", v.detail);
        let v = run(&[0, 1], false);
        assert!(
            !v.ok && v.detail.contains("2 of 3 messages"),
            "{}",
            v.detail
        );
        let v = run(&[0], true);
        assert!(!v.ok && v.detail.contains("corrupt"), "{}", v.detail);
    }
}
