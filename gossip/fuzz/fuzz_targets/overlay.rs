//! Any bytes fed to a broadcast-overlay core as a datagram (from a neighbour and from a stranger):
//! it must return an error or accept them, never panic, and its invariants must hold afterwards
//! and after its timers run. Keepalive and rotation are on, so their message (KeepAlive) and
//! timers are reached too.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nexus_gossip::{Overlay, OverlayConfig, Timestamp};

fuzz_target!(|data: &[u8]| {
    let me: SocketAddr = "10.0.0.1:7000".parse().expect("addr");
    let peer: SocketAddr = "10.0.0.2:7000".parse().expect("addr");
    let config = OverlayConfig {
        keepalive_period: Some(Duration::from_secs(1)),
        keepalive_timeout: Duration::from_secs(3),
        rotate_period: Some(Duration::from_secs(10)),
        ..OverlayConfig::default()
    };
    let mut core = Overlay::new(me, config, 7);
    // Make `peer` a neighbour first (a NeighborAccept datagram), so Plumtree paths are reached.
    let accept = [0x4e, 1, 0x13, 0, 4, 10, 0, 0, 2, 0x1b, 0x58];
    core.handle_datagram(Timestamp::ZERO, peer, &accept).expect("accept");
    let _ = core.handle_datagram(Timestamp::from_micros(1), peer, data);
    core.check_invariants();
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core.handle_timeout(Timestamp::from_micros(120_000_000));
    core.check_invariants();
});
