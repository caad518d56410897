//! Routed sessions on real sockets: a client's session addressed to a capability key goes
//! through a relay (a node's session socket) to a server it did not pin, and the server's answers
//! come back through the relay. The relay's data plane is left out: it sends the client's frames
//! straight to the server, as a forwarder would after its lookup.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(
    clippy::disallowed_methods,
    reason = "the tests time what real sockets do with the wall clock"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Ca, Harness, NodeSpec, RealNet, expect_event};
use nexus_dataplane::wire::nexlink::NodeTag;
use nexus_stream::link::LinkAddress;
use nexus_stream::{Event, FlowOptions, LinkRoute};

/// The NexLink tag of a node id (the high 64 bits of its session key).
fn tag(id: &[u8; 32]) -> u64 {
    (nexus_stream::link::session_key_of(id).0 >> 64) as u64
}

const CLIENT: usize = 0;
const RELAY: usize = 1;
const SERVER: usize = 2;

fn net() -> RealNet {
    net_with(|_| {})
}

/// The three nodes, `server` applied to the server's spec.
fn net_with(server: impl FnOnce(&mut NodeSpec)) -> RealNet {
    let mut ca = Ca::new(41);
    let mut specs: Vec<NodeSpec> = (0..3).map(|i| NodeSpec::certified(&mut ca, i)).collect();
    server(&mut specs[SERVER]);
    let net = RealNet::new(specs);
    let server = net.node(SERVER).local_addr();
    net.block_on(net.node(RELAY).set_relay(Some(server)))
        .expect("relay");
    net
}

fn route(net: &RealNet) -> LinkRoute {
    LinkRoute {
        routing_key: 0x00c1_a55e_5000_0000_0000_0000_0000_0001,
        dst: tag(&net.node_id(RELAY)),
    }
}

#[test]
fn a_routed_session_reaches_an_unpinned_server_through_the_relay_and_back() {
    let mut net = net();
    let relay = net.node(RELAY).local_addr();
    let accept = vec![[9; 32], net.node_id(SERVER)];
    let session = net
        .block_on(net.node(CLIENT).connect_routed(relay, route(&net), accept))
        .expect("established through the relay");
    let stats = net.stats(CLIENT);
    let s = stats.iter().find(|s| s.id == session).expect("session");
    assert_eq!(
        s.peer,
        Some(net.node_id(SERVER)),
        "the handshake names the server"
    );
    assert_eq!(s.remote, relay, "the client only talks to the relay");

    // A request and its answer, each way through the relay.
    let stream = net
        .open_flow(CLIENT, session, FlowOptions::default())
        .expect("flow");
    net.send(CLIENT, stream, Bytes::from_static(b"ping"))
        .expect("send");
    net.finish(CLIENT, stream).expect("finish");
    let at_server = expect_event(&mut net, SERVER, Duration::from_secs(5), "request", |e| {
        matches!(e, Event::Message { .. })
    });
    let Event::Message {
        stream: theirs,
        data,
        ..
    } = at_server
    else {
        unreachable!()
    };
    assert_eq!(data.as_ref(), b"ping");
    net.send(SERVER, theirs, Bytes::from_static(b"pong"))
        .expect("answer");
    net.finish(SERVER, theirs).expect("finish answer");
    let at_client = expect_event(
        &mut net,
        CLIENT,
        Duration::from_secs(5),
        "answer",
        |e| matches!(e, Event::Message { stream: s, .. } if *s == stream),
    );
    let Event::Message { data, .. } = at_client else {
        unreachable!()
    };
    assert_eq!(data.as_ref(), b"pong");

    // The relay counted both directions and remembers one client.
    let c = net
        .block_on(net.node(RELAY).relay_counters())
        .expect("counters")
        .expect("a relay");
    assert_eq!(c.clients, 1, "{c:?}");
    assert!(c.frames_out > 0 && c.frames_back > 0, "{c:?}");
    assert!(c.bytes_out > c.frames_out * 64, "whole frames: {c:?}");
    assert!(c.bytes_back > c.frames_back * 64, "whole frames: {c:?}");
    assert_eq!(c.dropped_no_client, 0, "{c:?}");
    assert_eq!(
        net.block_on(net.node(CLIENT).relay_counters())
            .expect("counters"),
        None,
        "the client is no relay"
    );

    // An answer for a client the relay does not know is dropped and counted.
    let relay_tag = NodeTag(tag(&net.node_id(RELAY)));
    let addr = LinkAddress {
        routing_key: nexus_stream::link::session_key(relay_tag),
        src: NodeTag(tag(&net.node_id(SERVER))),
        dst: NodeTag(0x5eed),
        session: 1,
    };
    let mut frame = Vec::new();
    nexus_stream::link::encapsulate(&addr, 0, &[0x40; 32], &mut frame).expect("frame");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.send_to(&frame, relay).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = net
            .block_on(net.node(RELAY).relay_counters())
            .expect("counters")
            .expect("a relay");
        if c.dropped_no_client == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not counted: {c:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_refusal_of_a_routed_session_reaches_the_client_through_the_relay() {
    // A server at its session limit refuses the handshake with a stateless answer; it goes
    // back through the relay (not to no one), so the client learns at once rather than at its
    // hello deadline.
    let net = net_with(|spec| spec.config.sessions_max = 0);
    let relay = net.node(RELAY).local_addr();
    let accept = vec![net.node_id(SERVER)];
    let started = std::time::Instant::now();
    let refused = net.block_on(net.node(CLIENT).connect_routed(relay, route(&net), accept));
    assert!(refused.is_err(), "{refused:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    let c = net
        .block_on(net.node(RELAY).relay_counters())
        .expect("counters")
        .expect("a relay");
    assert!(
        c.frames_back > 0,
        "the refusal came back through the relay: {c:?}"
    );
}

#[test]
fn a_routed_session_refuses_a_server_outside_the_accepted_keys() {
    let net = net();
    let relay = net.node(RELAY).local_addr();
    let refused = net.block_on(
        net.node(CLIENT)
            .connect_routed(relay, route(&net), vec![[9; 32]]),
    );
    assert!(refused.is_err(), "{refused:?}");
}
