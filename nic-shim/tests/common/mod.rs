//! Shared helpers: frames, tables and the software reference decision.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use nexus_dataplane::fib::{FibTable, NextHop, RouteSet, RoutingKey, SourceSet, compile};
use nexus_dataplane::forward::flow_hash;
use nexus_dataplane::wire::nexlink::{
    DeliveryMode, Ecn, Flags, FrameType, HopLimit, NodeTag, Packet, Repr, RoutingKey as WireKey,
    SeqNumber, SessionId, StreamId, TrafficClass,
};
use nexus_nic::{XdpConfig, XdpLimits, XdpTarget};

pub mod bed;
pub use bed::is_root;

pub const PORT: u16 = 7400;
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Loads a target, or prints why the test cannot run here (not root). As root, a load failure
/// fails the test.
pub fn load(source_check: bool, limits: XdpLimits) -> Option<XdpTarget> {
    if !is_root() {
        println!("SKIPPED: loading an XDP program needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN");
        return None;
    }
    match XdpTarget::load(XdpConfig {
        port: PORT,
        source_check,
        limits,
    }) {
        Ok(target) => Some(target),
        Err(e) => panic!("loading the XDP program as root: {e}"),
    }
}

pub fn hop(n: u8, port: u16, weight: u32, rewrite: Option<u128>) -> NextHop {
    NextHop {
        node: [n; 32],
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, n), port)),
        weight,
        rewrite: rewrite.map(RoutingKey),
    }
}

pub fn table(generation: u64, routes: &[(u128, Vec<NextHop>)], sources: &[Ipv4Addr]) -> FibTable {
    let mut set = RouteSet::new(generation);
    for (key, hops) in routes {
        set.insert(RoutingKey(*key), hops.clone()).expect("route");
    }
    let mut allowed = SourceSet::new();
    for ip in sources {
        allowed.insert(IpAddr::V4(*ip)).expect("source");
    }
    set.set_sources(allowed);
    FibTable::load(compile(&set).expect("compile")).expect("load")
}

/// A NexLink frame (header + payload) for `key`.
pub fn nexlink(
    key: u128,
    hop_limit: u8,
    src: u64,
    session: u64,
    stream: u32,
    payload: &[u8],
) -> Vec<u8> {
    let repr = Repr {
        frame_type: FrameType::Data,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::BestEffort,
        traffic_class: TrafficClass::new(3).expect("class"),
        ecn: Ecn::Ect0,
        hop_limit: HopLimit::new(hop_limit).expect("hop limit"),
        routing_key: WireKey(key),
        src: NodeTag(src),
        dst: NodeTag(0),
        session: SessionId(session),
        stream: StreamId(stream),
        seq: SeqNumber(1),
        payload_len: payload.len() as u16,
        tensor: None,
    };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut out[..]))
        .expect("emit");
    out[64..].copy_from_slice(payload);
    out
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, word) in header.chunks(2).enumerate() {
        if i != 5 {
            sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `datagram` in Ethernet/IPv4/UDP from `src` to the forwarder's port at 10.0.0.1.
pub fn ethernet(src: Ipv4Addr, datagram: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(42 + datagram.len());
    out.extend_from_slice(&DST_MAC);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + datagram.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    let check = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&PORT.to_be_bytes());
    out.extend_from_slice(&((8 + datagram.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(datagram);
    out
}

/// What happened to a frame, in target-independent terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent on to `to` carrying `frame` (the NexLink bytes).
    Forward { to: SocketAddrV4, frame: Vec<u8> },
    /// Delivered locally, unchanged.
    Local { frame: Vec<u8> },
    /// Dropped under this reason label.
    Drop(&'static str),
}

/// The software forwarder's decision (the steps of `Forwarder`'s doc, with the public API).
pub fn software(
    table: &FibTable,
    local: &BTreeSet<u128>,
    source: Option<Ipv4Addr>,
    datagram: &[u8],
) -> Outcome {
    if let Some(ip) = source
        && !table.allows_source(IpAddr::V4(ip))
    {
        return Outcome::Drop("source_not_allowed");
    }
    let mut bytes = datagram.to_vec();
    let repr = match Repr::parse(&Packet::new_unchecked(&bytes[..])) {
        Ok(repr) => repr,
        Err(e) => return Outcome::Drop(e.reason()),
    };
    bytes.truncate(repr.buffer_len());
    if local.contains(&repr.routing_key.0) {
        return Outcome::Local { frame: bytes };
    }
    if let Err(e) = Packet::new_unchecked(&mut bytes[..]).decrement_hop_limit() {
        return Outcome::Drop(e.reason());
    }
    match table.route(
        RoutingKey(repr.routing_key.0),
        flow_hash(repr.src, repr.session, repr.stream),
    ) {
        None => Outcome::Drop("no_route"),
        Some(next) => {
            if let Some(rewrite) = next.rewrite() {
                Packet::new_unchecked(&mut bytes[..]).rewrite_routing_key(WireKey(rewrite.0));
            }
            let SocketAddr::V4(to) = next.addr() else {
                panic!("IPv4 next hops only")
            };
            Outcome::Forward { to, frame: bytes }
        }
    }
}

/// Parses what the XDP program sent: checks the Ethernet, IPv4 and UDP headers it wrote and
/// returns the destination and the NexLink bytes.
pub fn sent(
    frame: &[u8],
    egress_mac: [u8; 6],
    next_mac: [u8; 6],
    src_ip: Ipv4Addr,
) -> (SocketAddrV4, Vec<u8>) {
    assert_eq!(&frame[0..6], &next_mac, "destination MAC");
    assert_eq!(&frame[6..12], &egress_mac, "source MAC");
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    let ip = &frame[14..34];
    assert_eq!(ip[0], 0x45);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(total, frame.len() - 14, "IPv4 total length");
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(
        u16::from_be_bytes([ip[10], ip[11]]),
        ipv4_checksum(ip),
        "IPv4 checksum"
    );
    assert_eq!(&ip[12..16], &src_ip.octets(), "source IP");
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &frame[34..42];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), PORT, "source port");
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    assert_eq!(
        usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        frame.len() - 34,
        "UDP length"
    );
    assert_eq!(&udp[6..8], &[0, 0], "UDP checksum (none)");
    (SocketAddrV4::new(dst, dport), frame[42..].to_vec())
}
