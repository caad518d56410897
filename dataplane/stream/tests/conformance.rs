//! The NexStream conformance suite: each body runs over the deterministic in-memory network
//! (virtual time, seeded) and over real UDP sockets on loopback with NexLink framing — the same
//! test body against both backends, as turmoil does.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Ca, Harness, LinkModel, NodeSpec, RealNet, SimNet, expect_event};
use nexus_stream::{
    CloseReason, DatagramOptions, ErrorCode, Event, FlowOptions, MessageOptions, Mode, Probability,
    SendError,
};

const WAIT: Duration = Duration::from_secs(10);

fn specs(n: u8) -> (Ca, Vec<NodeSpec>) {
    let mut ca = Ca::new(9);
    let specs = (0..n).map(|i| NodeSpec::certified(&mut ca, i)).collect();
    (ca, specs)
}

/// Runs `body` over a fresh simulated network and a fresh real one, each built from the same
/// node specs.
macro_rules! conformance {
    ($name:ident, $nodes:expr, $body:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn sim() {
                let (ca, specs) = specs($nodes);
                let mut net = SimNet::new(7, specs, LinkModel::default());
                ($body)(&mut net as &mut dyn Harness, ca);
            }

            #[test]
            fn udp() {
                let (ca, specs) = specs($nodes);
                let mut net = RealNet::new(specs);
                ($body)(&mut net as &mut dyn Harness, ca);
            }
        }
    };
}

/// The reason `from`'s session to `to` is refused. The server sends its Hello with its
/// handshake flight, so the client may count the session established (it has verified the
/// server) before the server's verdict on the client arrives a round trip later as a close.
fn refused<H: Harness + ?Sized>(h: &mut H, from: usize, to: usize) -> String {
    match h.connect(from, to) {
        Err(reason) => reason,
        Ok(session) => {
            let e = expect_event(
                h,
                from,
                WAIT,
                "refusal",
                |e| matches!(e, Event::Closed { session: s, .. } if *s == session),
            );
            let Event::Closed { reason, .. } = e else {
                unreachable!()
            };
            reason.to_string()
        }
    }
}

/// Up to `n` datagram events of `node`, waiting at most a few seconds for the last ones.
fn datagrams(h: &mut dyn Harness, node: usize, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    let start = h.now();
    while got.len() < n {
        let left = Duration::from_secs(3).saturating_sub(h.now().saturating_duration_since(start));
        match h.next_event(node, left) {
            Some(e @ Event::Datagram { .. }) => got.push(e),
            Some(_) => {}
            None => break,
        }
    }
    got
}

/// How many of `n` datagrams must arrive: all on the lossless simulated link; on real sockets,
/// where datagrams are unreliable by design and a loaded machine's socket buffers may drop some
/// of a burst, nine tenths.
fn least(h: &dyn Harness, n: usize) -> usize {
    if h.name() == "sim" { n } else { n * 9 / 10 }
}

fn payload(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

conformance!(
    handshake_verifies_both_mics,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let server = expect_event(h, 1, WAIT, "established", |e| {
            matches!(e, Event::Established { .. })
        });
        let Event::Established { peer, verified, .. } = server else {
            unreachable!()
        };
        assert_eq!(peer, h.node_id(0));
        let v = verified.expect("client MIC verified");
        assert_eq!(v.subject_key, h.node_id(0));
        let stats = h.stats(0);
        let mine = stats.iter().find(|x| x.id == s).expect("session listed");
        assert!(mine.established && mine.client);
        assert_eq!(mine.peer, Some(h.node_id(1)));
        assert!(mine.mic_serial.is_some());
    }
);

conformance!(
    reliable_ordered_echo_keeps_order,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let flow = h.open_flow(0, s, FlowOptions::default()).expect("flow");
        let sizes = [0usize, 1, 100, 1500, 70_000, 3, 200_000];
        for (i, len) in sizes.iter().enumerate() {
            h.send(0, flow, payload(*len, i as u8)).expect("send");
        }
        // The server sees every message once, in order, and echoes it on the same flow.
        let mut server_flow = None;
        for (i, len) in sizes.iter().enumerate() {
            let e = expect_event(h, 1, WAIT, "message", |e| {
                matches!(e, Event::Message { .. })
            });
            let Event::Message { stream, mode, data } = e else {
                unreachable!()
            };
            assert_eq!(mode, Mode::ReliableOrdered);
            assert_eq!(data, payload(*len, i as u8), "message {i}");
            server_flow = Some(stream);
            h.send(1, stream, data).expect("echo");
        }
        for (i, len) in sizes.iter().enumerate() {
            let e = expect_event(h, 0, WAIT, "echo", |e| matches!(e, Event::Message { .. }));
            let Event::Message { stream, data, .. } = e else {
                unreachable!()
            };
            assert_eq!(stream, flow);
            assert_eq!(data, payload(*len, i as u8), "echo {i}");
        }
        h.finish(0, flow).expect("finish");
        let e = expect_event(h, 1, WAIT, "flow finished", |e| {
            matches!(e, Event::FlowFinished { .. })
        });
        assert_eq!(
            e,
            Event::FlowFinished {
                stream: server_flow.unwrap()
            }
        );
        assert_eq!(h.send(0, flow, Bytes::new()), Err(SendError::NoStream));
    }
);

conformance!(
    a_batch_arrives_in_order_in_few_packets_then_the_flow_ends,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let flow = h.open_flow(0, s, FlowOptions::default()).expect("flow");
        h.send(0, flow, payload(10, 0)).expect("first");
        let _ = expect_event(h, 1, WAIT, "first", |e| matches!(e, Event::Message { .. }));
        let sent_before: u64 = h.stats(0).iter().map(|x| x.sent_packets).sum();
        // 200 token-sized messages and the end of the flow in one call.
        let batch: Vec<Bytes> = (1..=200).map(|i| payload(24, i as u8)).collect();
        h.send_batch(0, flow, batch, true).expect("batch");
        for i in 1..=200 {
            let e = expect_event(h, 1, WAIT, "message", |e| {
                matches!(e, Event::Message { .. })
            });
            let Event::Message { data, mode, .. } = e else {
                unreachable!()
            };
            assert_eq!(mode, Mode::ReliableOrdered);
            assert_eq!(data, payload(24, i as u8), "message {i} in order");
        }
        let _ = expect_event(h, 1, WAIT, "flow finished", |e| {
            matches!(e, Event::FlowFinished { .. })
        });
        // 200 × (4 + 24) bytes fit a handful of packets, not one packet per message.
        let packets: u64 = h.stats(0).iter().map(|x| x.sent_packets).sum::<u64>() - sent_before;
        assert!(
            packets <= 20,
            "{packets} packets for one batch of 200 messages"
        );
        // The flow is finished: nothing more goes on it, in a batch or alone.
        assert_eq!(
            h.send_batch(0, flow, vec![Bytes::new()], false),
            Err(SendError::NoStream)
        );
        assert_eq!(h.send(0, flow, Bytes::new()), Err(SendError::NoStream));
    }
);

#[test]
fn a_batch_is_refused_whole() {
    let cfg = nexus_stream::EndpointConfig {
        message_bytes_max: 100,
        send_buffer_bytes_max: 1000,
        ..Default::default()
    };
    let (_ca, mut specs) = specs(2);
    specs[0].config = cfg;
    let mut net = SimNet::new(5, specs, LinkModel::default());
    let s = net.connect(0, 1).expect("established");
    let flow = net.open_flow(0, s, FlowOptions::default()).expect("flow");
    // One message over the limit: nothing of the batch is sent.
    assert_eq!(
        net.send_batch(0, flow, vec![payload(5, 1), payload(101, 2)], false),
        Err(SendError::TooLarge { len: 101, max: 100 })
    );
    // More than the send buffer in total: refused whole, though each message fits.
    assert!(matches!(
        net.send_batch(0, flow, vec![payload(100, 3); 11], false),
        Err(SendError::Blocked { .. })
    ));
    net.send_batch(0, flow, vec![payload(5, 4)], false)
        .expect("a batch that fits");
    let e = expect_event(&mut net, 1, WAIT, "message", |e| {
        matches!(e, Event::Message { .. })
    });
    let Event::Message { data, .. } = e else {
        unreachable!()
    };
    assert_eq!(
        data,
        payload(5, 4),
        "the refused batches left nothing behind"
    );
}

conformance!(
    reliable_unordered_messages_arrive_whole,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let lens = [1usize, 5000, 4 << 20, 0, 64 << 10];
        for (i, len) in lens.iter().enumerate() {
            h.send_message(0, s, payload(*len, i as u8), MessageOptions::default())
                .expect("send");
        }
        let mut got = Vec::new();
        for _ in 0..lens.len() {
            let e = expect_event(h, 1, Duration::from_secs(30), "message", |e| {
                matches!(e, Event::Message { .. })
            });
            let Event::Message { mode, data, .. } = e else {
                unreachable!()
            };
            assert_eq!(mode, Mode::ReliableUnordered);
            got.push(data);
        }
        for (i, len) in lens.iter().enumerate() {
            let want = payload(*len, i as u8);
            assert_eq!(
                got.iter().filter(|d| **d == want).count(),
                1,
                "message {i} exactly once"
            );
        }
    }
);

conformance!(
    best_effort_datagrams_and_expiry,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let past = h.now();
        assert_eq!(
            h.send_datagram(
                0,
                s,
                1,
                payload(10, 0),
                DatagramOptions::best_effort(Some(past))
            ),
            Err(SendError::Expired)
        );
        for i in 0..20u8 {
            h.send_datagram(0, s, 1, payload(100, i), DatagramOptions::best_effort(None))
                .expect("send");
        }
        let mut seqs = Vec::new();
        for e in datagrams(h, 1, 20) {
            let Event::Datagram {
                mode,
                flow,
                seq,
                data,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((mode, flow), (Mode::BestEffort, 1));
            assert_eq!(data, payload(100, (seq - 1) as u8));
            seqs.push(seq);
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert!(seqs.iter().all(|s| (1..=20).contains(s)));
        assert!(seqs.len() >= least(h, 20), "{} of 20 delivered", seqs.len());
        // Too large for a datagram: travels on a stream, still best-effort.
        h.send_datagram(
            0,
            s,
            2,
            payload(10_000, 5),
            DatagramOptions::best_effort(None),
        )
        .expect("send");
        let e = expect_event(h, 1, WAIT, "large best-effort", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { mode, data, .. } = e else {
            unreachable!()
        };
        assert_eq!((mode, data), (Mode::BestEffort, payload(10_000, 5)));
    }
);

conformance!(
    probabilistic_one_delivers_everything_without_loss,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let opts = DatagramOptions {
            probability: Some(Probability::ONE),
            expires: None,
        };
        for i in 0..50u8 {
            h.send_datagram(0, s, 9, payload(200, i), opts)
                .expect("send");
        }
        let got = datagrams(h, 1, 50);
        assert!(got.len() >= least(h, 50), "{} of 50 delivered", got.len());
        assert!(got.iter().all(|e| matches!(
            e,
            Event::Datagram {
                mode: Mode::Probabilistic,
                ..
            }
        )));
        // A probabilistic message must fit a datagram.
        assert!(matches!(
            h.send_datagram(0, s, 9, payload(5000, 0), opts),
            Err(SendError::TooLarge { .. })
        ));
    }
);

conformance!(
    hedge_first_answer_wins_others_cancelled,
    3,
    |h: &mut dyn Harness, _ca: Ca| {
        let a = h.connect(0, 1).expect("to 1");
        let b = h.connect(0, 2).expect("to 2");
        let hedge = h
            .hedge(
                0,
                &[a, b],
                Bytes::from_static(b"question"),
                FlowOptions::default(),
            )
            .expect("hedge");
        // Node 1 answers; node 2 only reads the request.
        let e = expect_event(h, 1, WAIT, "request", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { stream, data, .. } = e else {
            unreachable!()
        };
        assert_eq!(&data[..], b"question");
        h.send(1, stream, Bytes::from_static(b"answer from 1"))
            .expect("answer");
        let e = expect_event(h, 2, WAIT, "request", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { stream: slow, .. } = e else {
            unreachable!()
        };
        let won = expect_event(h, 0, WAIT, "hedge won", |e| {
            matches!(e, Event::HedgeWon { .. })
        });
        let Event::HedgeWon {
            hedge: id,
            stream,
            data,
        } = won
        else {
            unreachable!()
        };
        assert_eq!(
            (id, stream.session, &data[..]),
            (hedge, a, &b"answer from 1"[..])
        );
        // The loser's flow is cancelled: node 2 sees its request stream reset with hedge_lost.
        let e = expect_event(h, 2, WAIT, "cancel", |e| {
            matches!(e, Event::StreamFailed { .. })
        });
        assert_eq!(
            e,
            Event::StreamFailed {
                stream: slow,
                code: ErrorCode::HedgeLost,
                by_peer: true
            }
        );
        assert!(matches!(
            h.hedge(0, &[], Bytes::new(), FlowOptions::default()),
            Err(SendError::BadHedge { .. })
        ));
    }
);

conformance!(
    a_finished_request_can_be_answered,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        // The client sends its request and finishes its side at once, then waits.
        let s = h.connect(0, 1).expect("established");
        let flow = h.open_flow(0, s, FlowOptions::default()).expect("flow");
        h.send(0, flow, payload(700, 3)).expect("send");
        h.finish(0, flow).expect("finish");
        let e = expect_event(h, 1, WAIT, "request", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { stream, data, .. } = e else {
            unreachable!()
        };
        assert_eq!(data, payload(700, 3));
        expect_event(h, 1, WAIT, "finished", |e| {
            matches!(e, Event::FlowFinished { .. })
        });
        h.send(1, stream, payload(9, 4))
            .expect("answer a finished request");
        h.finish(1, stream).expect("finish the answer");
        let e = expect_event(h, 0, WAIT, "answer", |e| matches!(e, Event::Message { .. }));
        let Event::Message {
            stream: got, data, ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!((got, data), (flow, payload(9, 4)));
        // Once answered and finished, the flow takes no more.
        assert_eq!(h.send(1, stream, payload(1, 1)), Err(SendError::NoStream));
    }
);

conformance!(
    cancel_resets_the_peer_stream,
    2,
    |h: &mut dyn Harness, _ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let flow = h.open_flow(0, s, FlowOptions::default()).expect("flow");
        h.send(0, flow, payload(10, 1)).expect("send");
        let e = expect_event(h, 1, WAIT, "message", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { stream, .. } = e else {
            unreachable!()
        };
        h.cancel(0, flow);
        let e = expect_event(h, 1, WAIT, "reset", |e| {
            matches!(e, Event::StreamFailed { .. })
        });
        assert_eq!(
            e,
            Event::StreamFailed {
                stream,
                code: ErrorCode::Cancelled,
                by_peer: true
            }
        );
        assert_eq!(h.send(0, flow, payload(1, 1)), Err(SendError::NoStream));
    }
);

conformance!(
    revoked_peer_is_refused_and_live_session_closed,
    3,
    |h: &mut dyn Harness, mut ca: Ca| {
        let s = h.connect(0, 1).expect("established");
        let _ = expect_event(h, 1, WAIT, "established", |e| {
            matches!(e, Event::Established { .. })
        });
        // Revoke node 0's MIC (serial 1: the first issued) and tell node 1.
        ca.revoke(1);
        h.update_trust(1, ca.update());
        let e = expect_event(h, 1, WAIT, "closed", |e| matches!(e, Event::Closed { .. }));
        let Event::Closed {
            reason,
            established,
            ..
        } = e
        else {
            unreachable!()
        };
        assert!(established);
        assert_eq!(reason.code(), Some(ErrorCode::MicRevoked), "{reason}");
        let e = expect_event(
            h,
            0,
            WAIT,
            "closed",
            |e| matches!(e, Event::Closed { session, .. } if *session == s),
        );
        let Event::Closed { reason, .. } = e else {
            unreachable!()
        };
        assert!(
            matches!(
                reason,
                CloseReason::Peer {
                    code: ErrorCode::MicRevoked,
                    ..
                }
            ),
            "{reason}"
        );
        // A fresh connection (no resumption exists) is refused too.
        let err = refused(h, 0, 1);
        assert!(err.contains("mic_revoked"), "{err}");
        // Node 2 has not heard of the revocation: it still accepts node 0.
        h.connect(0, 2).expect("node 2 accepts");
    }
);

/// A body over the simulator only (it needs control of time or the link).
fn sim(n: u8, link: LinkModel) -> (Ca, SimNet) {
    let (ca, specs) = specs(n);
    (ca, SimNet::new(11, specs, link))
}

#[test]
fn best_effort_expired_in_flight_is_not_delivered() {
    let (_ca, mut net) = sim(
        2,
        LinkModel {
            latency: Duration::from_millis(50),
            ..LinkModel::default()
        },
    );
    let s = net.connect(0, 1).expect("established");
    let expires = net.now() + Duration::from_millis(20);
    net.send_datagram(
        0,
        s,
        1,
        payload(100, 0),
        DatagramOptions::best_effort(Some(expires)),
    )
    .expect("send");
    let late = net.now() + Duration::from_secs(10);
    net.send_datagram(
        0,
        s,
        1,
        payload(100, 1),
        DatagramOptions::best_effort(Some(late)),
    )
    .expect("send");
    let e = expect_event(&mut net, 1, WAIT, "datagram", |e| {
        matches!(e, Event::Datagram { .. })
    });
    let Event::Datagram { seq, .. } = e else {
        unreachable!()
    };
    assert_eq!(seq, 2, "the expired datagram must not be delivered");
    net.idle(Duration::from_secs(1));
    assert!(
        !net.events_of(1)
            .iter()
            .any(|e| matches!(e, Event::Datagram { .. }))
    );
    let stats = net.stats(1);
    assert_eq!(stats[0].modes[Mode::BestEffort.index()].dropped_recv, 1);
}

#[test]
fn deadline_resets_an_unfinished_stream() {
    let (_ca, mut net) = sim(
        2,
        LinkModel {
            latency: Duration::from_millis(20),
            bandwidth_bps: 1_000_000,
            ..LinkModel::default()
        },
    );
    let s = net.connect(0, 1).expect("established");
    // 2 MB over a 1 MB/s link cannot finish in 100 ms.
    let deadline = net.now() + Duration::from_millis(100);
    let m = net
        .send_message(
            0,
            s,
            payload(2 << 20, 3),
            MessageOptions {
                priority: 0,
                deadline: Some(deadline),
            },
        )
        .expect("send");
    let e = expect_event(&mut net, 0, WAIT, "expired", |e| {
        matches!(e, Event::StreamFailed { .. })
    });
    assert_eq!(
        e,
        Event::StreamFailed {
            stream: m,
            code: ErrorCode::Expired,
            by_peer: false
        }
    );
    let e = expect_event(&mut net, 1, WAIT, "reset", |e| {
        matches!(e, Event::StreamFailed { .. })
    });
    let Event::StreamFailed { code, by_peer, .. } = e else {
        unreachable!()
    };
    assert_eq!((code, by_peer), (ErrorCode::Expired, true));
    net.idle(Duration::from_secs(2));
    assert!(
        !net.events_of(1)
            .iter()
            .any(|e| matches!(e, Event::Message { .. }))
    );
    assert_eq!(
        net.stats(0)[0].modes[Mode::ReliableUnordered.index()].dropped_send,
        1
    );
}

#[test]
fn refusals_name_their_reason() {
    struct Case {
        name: &'static str,
        make: fn(&mut Ca, &mut NodeSpec),
        code: ErrorCode,
    }
    let cases = [
        Case {
            name: "no MIC",
            make: |_, spec| spec.credentials = None,
            code: ErrorCode::MicMissing,
        },
        Case {
            name: "expired MIC",
            make: |ca, spec| {
                spec.credentials = Some(ca.issue_window(
                    spec.node_id(),
                    common::NOW_MS - 3 * common::DAY_MS,
                    common::NOW_MS - common::DAY_MS,
                ));
            },
            code: ErrorCode::MicRejected,
        },
        Case {
            name: "MIC of another CA",
            make: |_, spec| {
                let mut other = Ca::new(77);
                spec.credentials = Some(other.issue(spec.node_id()));
            },
            code: ErrorCode::MicRejected,
        },
        Case {
            name: "MIC for another key",
            make: |ca, spec| spec.credentials = Some(ca.issue([42; 32])),
            code: ErrorCode::KeyMismatch,
        },
    ];
    for case in cases {
        let (mut ca, mut specs) = specs(2);
        (case.make)(&mut ca, &mut specs[0]);
        let mut net = SimNet::new(3, specs, LinkModel::default());
        let err = refused(&mut net, 0, 1);
        assert!(err.contains(case.code.name()), "{}: {err}", case.name);
        // The server counts the refusal.
        assert_eq!(net.endpoints[1].counters().refused, 1, "{}", case.name);
        assert_eq!(net.endpoints[1].counters().established, 0, "{}", case.name);
    }
}

#[test]
fn a_client_that_pins_the_wrong_key_fails_the_handshake() {
    let (_ca, mut net) = sim(2, LinkModel::default());
    let addr = net.addr(1);
    let now = net.now();
    let s = net.endpoints[0]
        .connect(now, [9; 32], addr)
        .expect("connect");
    let e = expect_event(&mut net, 0, WAIT, "closed", |e| {
        matches!(e, Event::Closed { .. })
    });
    let Event::Closed {
        session,
        established,
        reason,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!((session, established), (s, false));
    assert!(matches!(reason, CloseReason::Transport(_)), "{reason}");
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let (_ca, mut net) = sim(2, LinkModel::default());
    let s = net.connect(0, 1).expect("established");
    let from = net.addr(0);
    let mut rng_state = 0x1234_5678_u64;
    for len in [0usize, 1, 5, 20, 1200, 1500, 9000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (rng_state >> 56) as u8
            })
            .collect();
        net.inject(from, 1, &bytes);
        net.inject("127.0.0.1:1".parse().unwrap(), 1, &bytes);
    }
    assert!(net.endpoints[1].counters().datagrams_dropped >= 7);
    // The session still works.
    let flow = net.open_flow(0, s, FlowOptions::default()).expect("flow");
    net.send(0, flow, payload(10, 0)).expect("send");
    expect_event(&mut net, 1, WAIT, "message", |e| {
        matches!(e, Event::Message { .. })
    });
}

#[test]
fn send_errors_are_clear() {
    let (_ca, mut net) = sim(2, LinkModel::default());
    let s = net.connect(0, 1).expect("established");
    let bogus = nexus_stream::SessionId(999);
    assert_eq!(
        net.open_flow(0, bogus, FlowOptions::default()),
        Err(SendError::NoSession)
    );
    assert!(matches!(
        net.send_datagram(
            0,
            s,
            1,
            Bytes::new(),
            DatagramOptions {
                probability: None,
                expires: Some(net.now())
            }
        ),
        Err(SendError::Expired)
    ));
    let cfg = nexus_stream::EndpointConfig {
        message_bytes_max: 100,
        ..Default::default()
    };
    let (mut ca, mut specs) = specs(2);
    specs[0].config = cfg;
    let _ = &mut ca;
    let mut small = SimNet::new(5, specs, LinkModel::default());
    let s = small.connect(0, 1).expect("established");
    assert_eq!(
        small.send_message(0, s, payload(101, 0), MessageOptions::default()),
        Err(SendError::TooLarge { len: 101, max: 100 })
    );
}

#[test]
fn reliable_modes_survive_loss_duplication_and_reordering() {
    let link = LinkModel {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(8),
        loss: 0.05,
        duplicate: 0.02,
        bandwidth_bps: 0,
    };
    let (_ca, mut net) = sim(2, link);
    let s = net.connect(0, 1).expect("established");
    let flow = net.open_flow(0, s, FlowOptions::default()).expect("flow");
    for i in 0..200u32 {
        net.send(0, flow, payload(100 + (i as usize % 7) * 300, i as u8))
            .expect("send");
    }
    net.send_message(0, s, payload(1 << 20, 99), MessageOptions::default())
        .expect("send");
    let mut ordered = 0u32;
    let mut big = false;
    while ordered < 200 || !big {
        let e = expect_event(&mut net, 1, Duration::from_secs(60), "message", |e| {
            matches!(e, Event::Message { .. })
        });
        let Event::Message { mode, data, .. } = e else {
            unreachable!()
        };
        match mode {
            Mode::ReliableOrdered => {
                assert_eq!(
                    data,
                    payload(100 + (ordered as usize % 7) * 300, ordered as u8),
                    "in order"
                );
                ordered += 1;
            }
            Mode::ReliableUnordered => {
                assert_eq!(data, payload(1 << 20, 99));
                big = true;
            }
            _ => unreachable!(),
        }
    }
    assert!(net.datagrams_lost > 0, "the link did lose packets");
}

/// Unordered messages under heavy duplication, reordering and loss arrive exactly once. (The
/// simulator's `stream-unordered-overlap` scenario reproduces the case where duplicated data of
/// a held stream made a header-then-body reader fail; `sim/tests/stream.rs` keeps it.)
#[test]
fn unordered_messages_survive_heavy_duplication() {
    let link = LinkModel {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        loss: 0.03,
        duplicate: 0.3,
        bandwidth_bps: 0,
    };
    for seed in 1..=6 {
        let (_ca, specs) = specs(2);
        let mut net = SimNet::new(seed, specs, link);
        let s = net.connect(0, 1).expect("established");
        for i in 0..40u8 {
            let len = 1 + (usize::from(i) * 977) % 9000;
            net.send_message(0, s, payload(len, i), MessageOptions::default())
                .expect("send");
        }
        let mut got = Vec::new();
        while got.len() < 40 {
            let e = expect_event(&mut net, 1, Duration::from_secs(60), "message", |e| {
                matches!(e, Event::Message { .. }) || matches!(e, Event::StreamFailed { .. })
            });
            match e {
                Event::Message { data, .. } => got.push(data),
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        for i in 0..40u8 {
            let len = 1 + (usize::from(i) * 977) % 9000;
            let want = payload(len, i);
            assert_eq!(
                got.iter().filter(|d| **d == want).count(),
                1,
                "seed {seed}, message {i}"
            );
        }
    }
}

#[test]
fn probabilistic_rate_is_within_bounds() {
    for (p, loss) in [(0.3, 0.0), (0.5, 0.1), (0.95, 0.2)] {
        let link = LinkModel {
            loss,
            ..LinkModel::default()
        };
        let (_ca, mut net) = sim(2, link);
        let s = net.connect(0, 1).expect("established");
        // Let quinn measure the path's loss first.
        let warm = net.open_flow(0, s, FlowOptions::default()).expect("flow");
        for i in 0..300u32 {
            net.send(0, warm, payload(1000, i as u8)).expect("send");
        }
        net.idle(Duration::from_secs(5));
        let n = 2000u32;
        let opts = DatagramOptions {
            probability: Probability::new(p),
            expires: None,
        };
        for i in 0..n {
            net.send_datagram(0, s, 1, payload(50, i as u8), opts)
                .expect("send");
            if i % 50 == 0 {
                net.idle(Duration::from_millis(20));
            }
        }
        net.idle(Duration::from_secs(5));
        let delivered = net
            .events_of(1)
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Datagram {
                        mode: Mode::Probabilistic,
                        ..
                    }
                )
            })
            .count() as f64;
        let rate = delivered / f64::from(n);
        // Five standard deviations of a binomial proportion, plus the error of quinn's loss
        // estimate (measured, not known).
        let sigma = (p * (1.0 - p) / f64::from(n)).sqrt();
        let tolerance = 5.0 * sigma + 0.03;
        assert!(
            (rate - p).abs() <= tolerance,
            "p = {p}, loss = {loss}: delivered {rate:.3}"
        );
    }
}

/// Reliable goodput of a 2 MiB message over a 2 MB/s link, alone and with a best-effort flood
/// offering twice the link's rate on the same connection, with `weights`.
fn goodput_under_flood(weights: nexus_stream::admission::Weights, gso: usize) -> (f64, f64) {
    let link = LinkModel {
        latency: Duration::from_millis(5),
        bandwidth_bps: 2_000_000,
        ..LinkModel::default()
    };
    let goodput = |with_flood: bool| -> f64 {
        let (_ca, mut specs) = specs(2);
        for s in &mut specs {
            s.config.weights = weights;
            s.config.gso_segments_max = gso;
        }
        let mut net = SimNet::new(11, specs, link);
        let s = net.connect(0, 1).expect("established");
        let start = net.now();
        net.send_message(0, s, payload(2 << 20, 1), MessageOptions::default())
            .expect("send");
        let mut done = None;
        let mut i = 0u32;
        while done.is_none() {
            if with_flood {
                for _ in 0..36 {
                    let _ = net.send_datagram(
                        0,
                        s,
                        5,
                        payload(1100, i as u8),
                        DatagramOptions::best_effort(None),
                    );
                    i += 1;
                }
            }
            net.idle(Duration::from_millis(10));
            if net.events_of(1).iter().any(|e| {
                matches!(
                    e,
                    Event::Message {
                        mode: Mode::ReliableUnordered,
                        ..
                    }
                )
            }) {
                done = Some(net.now() - start);
            }
            assert!(
                net.now() - start < Duration::from_secs(60),
                "transfer did not finish"
            );
        }
        if with_flood {
            let be = net.stats(1)[0].modes[Mode::BestEffort.index()].delivered;
            assert!(be > 100, "the flood got through too ({be})");
        }
        (2 << 20) as f64 / done.unwrap().as_secs_f64()
    };
    (goodput(false), goodput(true))
}

#[test]
fn reliable_goodput_holds_under_a_saturating_best_effort_flow() {
    use nexus_stream::admission::Weights;
    for (weights, floor) in [
        (
            Weights {
                reliable: 1,
                datagram: 1,
            },
            0.45,
        ),
        (Weights::default(), 0.88),
    ] {
        for gso in [1, 10] {
            let (alone, contended) = goodput_under_flood(weights, gso);
            eprintln!(
                "weights {}:{} gso {gso}: reliable goodput alone {alone:.0} B/s, with a best-effort flood {contended:.0} B/s ({:.0} %)",
                weights.reliable,
                weights.datagram,
                100.0 * contended / alone
            );
            assert!(
                contended >= floor * alone,
                "alone {alone:.0} B/s, contended {contended:.0} B/s"
            );
        }
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let run = |seed: u64| -> (u64, Vec<String>) {
        let (_ca, specs) = specs(3);
        let link = LinkModel {
            loss: 0.02,
            jitter: Duration::from_millis(3),
            ..LinkModel::default()
        };
        let mut net = SimNet::new(seed, specs, link);
        net.trace_log = Some(Vec::new());
        let a = net.connect(0, 1).expect("to 1");
        let b = net.connect(0, 2).expect("to 2");
        let flow = net.open_flow(0, a, FlowOptions::default()).expect("flow");
        for i in 0..50u8 {
            net.send(0, flow, payload(500, i)).expect("send");
            let _ = net.send_datagram(
                0,
                b,
                1,
                payload(300, i),
                DatagramOptions {
                    probability: Probability::new(0.5),
                    expires: None,
                },
            );
        }
        net.send_message(0, b, payload(300_000, 3), MessageOptions::default())
            .expect("send");
        net.idle(Duration::from_secs(5));
        (net.trace_hash(), net.trace_log.take().unwrap_or_default())
    };
    let (first, log_a) = run(1);
    let (again, log_b) = run(1);
    if first != again {
        let at = log_a.iter().zip(&log_b).position(|(x, y)| x != y);
        panic!(
            "same seed, different traces; first difference at item {at:?}:\n{:?}\n{:?}",
            at.map(|i| &log_a[i]),
            at.map(|i| &log_b[i])
        );
    }
    assert!(log_a.len() > 100, "the run traced {} items", log_a.len());
    assert_ne!(first, run(2).0);
}

#[test]
fn session_limit_refuses_extra_peers() {
    let (_ca, mut specs) = specs(3);
    specs[2].config.sessions_max = 1;
    let mut net = SimNet::new(4, specs, LinkModel::default());
    net.connect(0, 2).expect("first fits");
    let err = net.connect(1, 2).expect_err("second refused");
    assert!(!err.is_empty());
    assert_eq!(net.endpoints[2].counters().refused_full, 1);
}

#[test]
fn an_endpoint_that_refuses_new_sessions_keeps_its_established_ones() {
    let (_ca, specs) = specs(3);
    let mut net = SimNet::new(5, specs, LinkModel::default());
    let first = net
        .connect(0, 2)
        .expect("accepted while the endpoint accepts");
    net.endpoints[2].refuse_new_sessions();
    assert!(!net.endpoints[2].accepts_new_sessions());
    let err = net
        .connect(1, 2)
        .expect_err("refused once the endpoint refuses");
    assert!(!err.is_empty());
    let counters = net.endpoints[2].counters();
    assert_eq!((counters.refused_closed, counters.refused_full), (1, 0));
    // The session opened before still carries messages.
    net.send_message(
        0,
        first,
        Bytes::from_static(b"still open"),
        MessageOptions::default(),
    )
    .expect("send on the established session");
    let e = expect_event(&mut net, 2, WAIT, "message", |e| {
        matches!(e, Event::Message { .. })
    });
    let Event::Message { data, .. } = e else {
        unreachable!()
    };
    assert_eq!(data.as_ref(), b"still open");
}

/// Round trips of a cold request: the server sends its Hello with its handshake flight
/// (0.5-RTT), so the client is established after one round trip and has its answer after two.
#[test]
fn a_cold_request_takes_two_round_trips() {
    let rtt = Duration::from_millis(20);
    let (_ca, mut net) = sim(
        2,
        LinkModel {
            latency: rtt / 2,
            ..LinkModel::default()
        },
    );
    let start = net.now();
    let s = net.connect(0, 1).expect("established");
    let connected = net.now() - start;
    let flow = net.open_flow(0, s, FlowOptions::default()).expect("flow");
    net.send(0, flow, payload(10, 0)).expect("send");
    let e = expect_event(&mut net, 1, WAIT, "request", |e| {
        matches!(e, Event::Message { .. })
    });
    let Event::Message { stream, .. } = e else {
        unreachable!()
    };
    net.send(1, stream, payload(10, 1)).expect("answer");
    expect_event(&mut net, 0, WAIT, "answer", |e| {
        matches!(e, Event::Message { .. })
    });
    let answered = net.now() - start;
    let slack = Duration::from_millis(2);
    assert!(connected <= rtt + slack, "established after {connected:?}");
    assert!(answered <= 2 * rtt + slack, "answered after {answered:?}");
}
