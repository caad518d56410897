//! Any bytes fed to a membership core as a datagram: it must return an error or accept them,
//! never panic, and its invariants must hold afterwards.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use nexus_gossip::{MemberId, MemberMeta, Membership, MembershipConfig, NodeId, Timestamp};

fuzz_target!(|data: &[u8]| {
    let addr: SocketAddr = "127.0.0.1:7946".parse().expect("addr");
    let meta = MemberMeta::new("fuzz", None, "0", vec![]).expect("meta");
    let mut core = Membership::new(
        MemberId::new(addr, NodeId([1; 32]), 1, meta),
        MembershipConfig::default(),
        7,
    );
    core.join(Timestamp::ZERO, &[]);
    let from: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let _ = core.handle_datagram(Timestamp::from_micros(1), from, data);
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core.handle_timeout(Timestamp::from_micros(10_000_000));
    core.check_invariants();
});
