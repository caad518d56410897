//! The initial congestion window (`EndpointConfig::initial_window_bytes`): a new session's
//! first large message needs several round trips of slow start from the default window and
//! about one from a window that holds it; a window below two packets is refused when the
//! endpoint is made. Over the deterministic in-memory network (virtual time, no loss).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ca, Harness, LinkModel, NodeSpec, SimNet, expect_event};
use nexus_stream::{Endpoint, EndpointConfig, Event, MessageOptions};

const RTT: Duration = Duration::from_millis(20);
const MESSAGE_BYTES: usize = 512 << 10;

/// Virtual time from a new session's first message of [`MESSAGE_BYTES`] to its delivery, with
/// the sender's and the receiver's endpoints built from `config`.
fn first_message_time(config: &EndpointConfig) -> Duration {
    let mut ca = Ca::new(9);
    let specs: Vec<NodeSpec> = (0..2)
        .map(|i| {
            let mut spec = NodeSpec::certified(&mut ca, i);
            spec.config = config.clone();
            spec
        })
        .collect();
    let mut net = SimNet::new(
        13,
        specs,
        LinkModel {
            latency: RTT / 2,
            ..LinkModel::default()
        },
    );
    let s = net.connect(0, 1).expect("established");
    let start: Instant = net.now();
    net.send_message(
        0,
        s,
        Bytes::from(vec![7u8; MESSAGE_BYTES]),
        MessageOptions::default(),
    )
    .expect("send");
    let e = expect_event(&mut net, 1, Duration::from_secs(10), "the message", |e| {
        matches!(e, Event::Message { .. })
    });
    let Event::Message { data, .. } = e else {
        unreachable!()
    };
    assert_eq!(data.len(), MESSAGE_BYTES);
    net.now() - start
}

#[test]
fn a_window_that_holds_the_message_saves_the_slow_start_round_trips() {
    let default = first_message_time(&EndpointConfig::default());
    let large = first_message_time(&EndpointConfig {
        initial_window_bytes: 1 << 20,
        ..EndpointConfig::default()
    });
    // From 12,000 bytes slow start needs about six round trips for 512 KiB; from 1 MiB the
    // message goes out in the first (paced over part of it) and arrives half a round trip later.
    assert!(
        default > 4 * RTT,
        "default window: {default:?} for 512 KiB at {RTT:?} RTT"
    );
    assert!(
        large < 2 * RTT,
        "1 MiB initial window: {large:?} for 512 KiB at {RTT:?} RTT"
    );
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the endpoint needs an anchor instant; it is refused before using it"
)]
fn a_window_below_two_packets_or_above_the_connection_window_is_refused() {
    let mut ca = Ca::new(9);
    for bad in [
        EndpointConfig::INITIAL_WINDOW_BYTES_MIN - 1,
        u64::from(EndpointConfig::default().connection_window_bytes) + 1,
    ] {
        let spec = NodeSpec::certified(&mut ca, 0);
        let identity =
            nexus_stream::identity::Identity::new(spec.key, spec.credentials).expect("identity");
        let config = EndpointConfig {
            initial_window_bytes: bad,
            ..EndpointConfig::default()
        };
        let err = Endpoint::new(config, identity, spec.trust, Some(1), Instant::now(), 0)
            .expect_err("refused");
        assert!(
            err.to_string().contains("initial_window_bytes"),
            "the error names the setting: {err}"
        );
    }
}
