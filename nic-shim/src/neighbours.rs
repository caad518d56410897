//! [`KernelNeighbours`]: next hops resolved from the kernel's own routing, neighbour and link
//! tables over rtnetlink, so the XDP program sends each frame where the kernel would.
//!
//! For a next-hop IPv4 address: a route lookup (`RTM_GETROUTE`, as `ip route get`) gives the
//! egress interface, the gateway (or the address itself when it is on-link) and the source
//! address; a neighbour lookup (`RTM_GETNEIGH`, as `ip neigh get`) gives the gateway's MAC;
//! the egress interface's own MAC comes from `RTM_GETLINK`. A gateway whose MAC the kernel does
//! not know yet (no entry, `INCOMPLETE` or `FAILED`) is reported [`Unresolved::Pending`] after
//! asking the kernel to resolve it (`RTM_NEWNEIGH` with `NTF_USE`, as `ip neigh replace ADDR
//! dev DEV use`: the kernel sends its ARP request and nothing reaches the next hop's port); a
//! `STALE` entry is used and re-confirmed the same way, so a MAC that changed is learnt by the
//! next [`KernelNeighbours::refresh`].

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::table::{Egress, Neighbours, Unresolved};

/// Replies read for one request before it is given up: a request is answered by one message
/// (or one error), so more than this means the socket is out of step.
const REPLIES_MAX: usize = 64;

/// Why the netlink socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening an rtnetlink socket: {0}")]
pub struct NeighbourError(#[source] io::Error);

/// Next hops resolved from the kernel's tables (see the module documentation), cached per
/// address by [`refresh`](Self::refresh) and read by [`XdpTable::from_fib`](crate::XdpTable)
/// through [`Neighbours`].
///
/// The socket belongs to the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct KernelNeighbours {
    socket: Socket,
    sequence: u32,
    resolved: BTreeMap<Ipv4Addr, Result<Egress, Unresolved>>,
}

/// What one netlink request got back.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// The answer.
    Message(RouteNetlinkMessage),
    /// An acknowledgement (error code 0).
    Ack,
}

/// Why a request got no usable answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum RequestError {
    /// The kernel answered with an error code (its errno).
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// The reply does not decode.
    #[error("undecodable rtnetlink reply: {0}")]
    Decode(String),
    /// The socket failed.
    #[error("rtnetlink socket: {0}")]
    Socket(String),
}

impl KernelNeighbours {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<KernelNeighbours, NeighbourError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NeighbourError)?;
        socket.bind_auto().map_err(NeighbourError)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NeighbourError)?;
        Ok(KernelNeighbours {
            socket,
            sequence: 0,
            resolved: BTreeMap::new(),
        })
    }

    /// Resolves every address in `next_hops` now (forgetting the others) and returns whether
    /// any result differs from the one cached before.
    pub fn refresh(&mut self, next_hops: impl IntoIterator<Item = Ipv4Addr>) -> bool {
        let mut resolved = BTreeMap::new();
        for ip in next_hops {
            if let std::collections::btree_map::Entry::Vacant(entry) = resolved.entry(ip) {
                entry.insert(self.resolve(ip));
            }
        }
        let changed = resolved != self.resolved;
        self.resolved = resolved;
        changed
    }

    /// The cached result for `ip`, if [`refresh`](Self::refresh) resolved it.
    pub fn cached(&self, ip: Ipv4Addr) -> Option<&Result<Egress, Unresolved>> {
        self.resolved.get(&ip)
    }

    /// Asks the kernel where frames to `ip` leave now (route, neighbour and link lookups).
    /// A gateway not resolved yet is reported [`Unresolved::Pending`], and the kernel is asked
    /// to resolve it.
    pub fn resolve(&mut self, ip: Ipv4Addr) -> Result<Egress, Unresolved> {
        let unroutable = |reason: String| Unresolved::Unroutable { reason };
        let route = match self.request(get_route(ip), NLM_F_REQUEST) {
            Ok(Reply::Message(RouteNetlinkMessage::NewRoute(route))) => route,
            Ok(other) => {
                return Err(unroutable(format!(
                    "route lookup for {ip}: unexpected reply {other:?}"
                )));
            }
            Err(e) => return Err(unroutable(format!("route lookup for {ip}: {e}"))),
        };
        let path = route_path(ip, &route).map_err(unroutable)?;
        let link = match self.request(get_link(path.ifindex), NLM_F_REQUEST) {
            Ok(Reply::Message(RouteNetlinkMessage::NewLink(link))) => link,
            Ok(other) => {
                return Err(unroutable(format!(
                    "interface {}: unexpected reply {other:?}",
                    path.ifindex
                )));
            }
            Err(e) => return Err(unroutable(format!("interface {}: {e}", path.ifindex))),
        };
        let src_mac = link_mac(&link).ok_or_else(|| {
            unroutable(format!(
                "interface {} (egress to {ip}) has no Ethernet address",
                path.ifindex
            ))
        })?;
        let pending = Unresolved::Pending {
            gateway: path.gateway,
            ifindex: path.ifindex,
        };
        let neighbour = match self.request(get_neighbour(path.gateway, path.ifindex), NLM_F_REQUEST)
        {
            Ok(Reply::Message(RouteNetlinkMessage::NewNeighbour(neighbour))) => Some(neighbour),
            // No entry yet.
            Err(RequestError::Kernel(code)) if code == libc::ENOENT => None,
            Ok(other) => {
                return Err(unroutable(format!(
                    "neighbour {} on interface {}: unexpected reply {other:?}",
                    path.gateway, path.ifindex
                )));
            }
            Err(e) => {
                return Err(unroutable(format!(
                    "neighbour {} on interface {}: {e}",
                    path.gateway, path.ifindex
                )));
            }
        };
        let found = neighbour.as_ref().and_then(neighbour_mac);
        let state = neighbour.as_ref().map(|n| n.header.state);
        let usable = matches!(
            state,
            Some(
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            )
        );
        // Ask for resolution when there is none, and re-confirmation of a stale entry (the
        // kernel sees none of the traffic XDP forwards, so it would never probe it itself).
        if !usable || state == Some(NeighbourState::Stale) {
            // A refusal leaves the entry as it was; the next refresh asks again.
            let _asked = self.request(use_neighbour(path.gateway, path.ifindex), USE_FLAGS);
        }
        match found {
            Some(dst_mac) if usable => Ok(Egress {
                ifindex: path.ifindex,
                src_mac,
                dst_mac,
                src_ip: path.src_ip,
            }),
            _ => Err(pending),
        }
    }

    /// The index of the interface named `name` in this socket's namespace, or why there is
    /// none.
    pub fn interface_index(&mut self, name: &str) -> Result<u32, String> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(link), NLM_F_REQUEST) {
            Ok(Reply::Message(RouteNetlinkMessage::NewLink(link))) if link.header.index != 0 => {
                Ok(link.header.index)
            }
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(RequestError::Kernel(code)) if code == libc::ENODEV => {
                Err("no such interface in this network namespace".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends one request and reads its answer.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<Reply, RequestError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(message),
        );
        packet.header.flags = flags;
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket
            .send(&buffer, 0)
            .map_err(|e| RequestError::Socket(e.to_string()))?;
        for _ in 0..REPLIES_MAX {
            let (bytes, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| RequestError::Socket(e.to_string()))?;
            if let Some(reply) = parse_reply(&bytes, sequence)? {
                return Ok(reply);
            }
        }
        Err(RequestError::Socket(format!(
            "no answer to request {sequence} in {REPLIES_MAX} replies"
        )))
    }
}

impl Neighbours for KernelNeighbours {
    fn egress(&self, to: SocketAddrV4) -> Result<Egress, Unresolved> {
        self.resolved
            .get(to.ip())
            .cloned()
            .unwrap_or(Err(Unresolved::Unknown))
    }
}

/// `RTM_NEWNEIGH` flags for a resolution request: create the entry if absent, never replace
/// its state (`NTF_USE` only starts resolution), acknowledged.
const USE_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;

/// The egress path of a route lookup's answer.
#[derive(Debug, PartialEq, Eq)]
struct Path {
    ifindex: u32,
    gateway: Ipv4Addr,
    src_ip: Ipv4Addr,
}

/// The egress path the kernel chose for `ip`, or why frames to it cannot be sent on a link.
fn route_path(ip: Ipv4Addr, route: &RouteMessage) -> Result<Path, String> {
    match route.header.kind {
        RouteType::Unicast => {}
        RouteType::Local => return Err(format!("{ip} is an address of this host")),
        other => {
            return Err(format!(
                "the kernel's route to {ip} is {other:?}, not unicast"
            ));
        }
    }
    let mut ifindex = None;
    let mut gateway = None;
    let mut src_ip = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => ifindex = Some(*index),
            RouteAttribute::Gateway(RouteAddress::Inet(addr)) => gateway = Some(*addr),
            RouteAttribute::PrefSource(RouteAddress::Inet(addr)) => src_ip = Some(*addr),
            _ => {}
        }
    }
    let ifindex =
        ifindex.ok_or_else(|| format!("the kernel's route to {ip} names no interface"))?;
    let src_ip =
        src_ip.ok_or_else(|| format!("the kernel's route to {ip} has no source address"))?;
    Ok(Path {
        ifindex,
        gateway: gateway.unwrap_or(ip),
        src_ip,
    })
}

fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
}

fn neighbour_mac(neighbour: &NeighbourMessage) -> Option<[u8; 6]> {
    neighbour
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                <[u8; 6]>::try_from(bytes.as_slice()).ok()
            }
            _ => None,
        })
}

fn get_route(ip: Ipv4Addr) -> RouteNetlinkMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.destination_prefix_length = 32;
    route
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(ip)));
    RouteNetlinkMessage::GetRoute(route)
}

fn get_link(ifindex: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    RouteNetlinkMessage::GetLink(link)
}

fn get_neighbour(ip: Ipv4Addr, ifindex: u32) -> RouteNetlinkMessage {
    let mut neighbour = NeighbourMessage::default();
    neighbour.header.family = AddressFamily::Inet;
    neighbour.header.ifindex = ifindex;
    neighbour
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    RouteNetlinkMessage::GetNeighbour(neighbour)
}

fn use_neighbour(ip: Ipv4Addr, ifindex: u32) -> RouteNetlinkMessage {
    let mut neighbour = NeighbourMessage::default();
    neighbour.header.family = AddressFamily::Inet;
    neighbour.header.ifindex = ifindex;
    // As `ip neigh replace ADDR dev DEV use` sends it: with NTF_USE the kernel only starts
    // resolution and leaves the state alone.
    neighbour.header.state = NeighbourState::Permanent;
    neighbour.header.flags = NeighbourFlags::Use;
    neighbour
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    RouteNetlinkMessage::NewNeighbour(neighbour)
}

/// Reads one datagram from the kernel: the answer to request `sequence` (`Ok(Some)`), or
/// `Ok(None)` when every message in it belongs to another request (a late answer to an
/// earlier one).
fn parse_reply(bytes: &[u8], sequence: u32) -> Result<Option<Reply>, RequestError> {
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
            .map_err(|e| RequestError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
        // The decoder checked the length against the buffer; a zero length would loop.
        if length == 0 || length > rest.len() {
            return Err(RequestError::Decode(format!(
                "message length {length} in {} bytes",
                rest.len()
            )));
        }
        // Messages are 4-byte aligned within a datagram.
        offset += length.next_multiple_of(4);
        if message.header.sequence_number != sequence {
            continue;
        }
        return match message.payload {
            NetlinkPayload::InnerMessage(inner) => Ok(Some(Reply::Message(inner))),
            NetlinkPayload::Error(error) => match error.code {
                None => Ok(Some(Reply::Ack)),
                Some(code) => Err(RequestError::Kernel(code.get().saturating_abs())),
            },
            other => Err(RequestError::Decode(format!(
                "unexpected message type {}",
                message_kind(&other)
            ))),
        };
    }
    Ok(None)
}

fn message_kind(payload: &NetlinkPayload<RouteNetlinkMessage>) -> &'static str {
    match payload {
        NetlinkPayload::Done(_) => "done",
        NetlinkPayload::Noop => "noop",
        NetlinkPayload::Overrun(_) => "overrun",
        _ => "other",
    }
}

/// Decodes one kernel datagram as an answer to request `sequence` and says what it holds: the
/// same checks [`KernelNeighbours`] applies to what the kernel sends. For fuzzing.
pub fn decode_reply(bytes: &[u8], sequence: u32) -> Result<Option<String>, String> {
    parse_reply(bytes, sequence)
        .map(|reply| reply.map(|r| format!("{r:?}")))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    fn emit(payload: NetlinkPayload<RouteNetlinkMessage>, sequence: u32) -> Vec<u8> {
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), payload);
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        out
    }

    fn route_reply(attributes: Vec<RouteAttribute>, kind: RouteType) -> RouteMessage {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.kind = kind;
        route.attributes = attributes;
        route
    }

    #[test]
    fn a_reply_is_matched_to_its_request() {
        let ip = Ipv4Addr::new(10, 1, 0, 2);
        let answer = get_route(ip);
        let bytes = emit(NetlinkPayload::InnerMessage(answer.clone()), 7);
        assert_eq!(parse_reply(&bytes, 7), Ok(Some(Reply::Message(answer))));
        // A late answer to an earlier request is skipped.
        assert_eq!(parse_reply(&bytes, 8), Ok(None));
    }

    #[test]
    fn kernel_errors_and_acks_are_told_apart() {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::ENETUNREACH);
        let bytes = emit(NetlinkPayload::Error(error), 3);
        let refused = parse_reply(&bytes, 3);
        assert_eq!(refused, Err(RequestError::Kernel(libc::ENETUNREACH)));
        assert!(
            refused
                .expect_err("refused")
                .to_string()
                .contains("unreachable"),
            "the kernel's reason in words"
        );
        let bytes = emit(NetlinkPayload::Error(ErrorMessage::default()), 4);
        assert_eq!(parse_reply(&bytes, 4), Ok(Some(Reply::Ack)));
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        let good = emit(NetlinkPayload::InnerMessage(get_link(3)), 1);
        for cut in 1..good.len() {
            assert!(
                parse_reply(&good[..cut], 1).is_err(),
                "a reply cut at {cut} bytes"
            );
        }
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&(good.len() as u32 + 8).to_ne_bytes());
        assert!(
            parse_reply(&lying, 1).is_err(),
            "a length past the datagram"
        );
        let mut zero = good.clone();
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_reply(&zero, 1).is_err(), "a zero length");
        let done = emit(
            NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
            1,
        );
        assert!(parse_reply(&done, 1).is_err(), "a dump's end for a get");
        assert_eq!(parse_reply(&[], 1), Ok(None));
    }

    #[test]
    fn a_route_answer_gives_the_egress_path() {
        let ip = Ipv4Addr::new(10, 1, 0, 2);
        let on_link = route_reply(
            vec![
                RouteAttribute::Oif(4),
                RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(10, 1, 0, 1))),
            ],
            RouteType::Unicast,
        );
        assert_eq!(
            route_path(ip, &on_link),
            Ok(Path {
                ifindex: 4,
                gateway: ip,
                src_ip: Ipv4Addr::new(10, 1, 0, 1)
            })
        );
        let mut via = on_link.clone();
        via.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                10, 1, 0, 254,
            ))));
        assert_eq!(
            route_path(ip, &via).map(|p| p.gateway),
            Ok(Ipv4Addr::new(10, 1, 0, 254))
        );
        let local = route_reply(on_link.attributes.clone(), RouteType::Local);
        assert!(
            route_path(ip, &local)
                .expect_err("local")
                .contains("address of this host")
        );
        let blackhole = route_reply(on_link.attributes.clone(), RouteType::BlackHole);
        assert!(route_path(ip, &blackhole).is_err());
        let no_oif = route_reply(
            vec![RouteAttribute::PrefSource(RouteAddress::Inet(ip))],
            RouteType::Unicast,
        );
        assert!(
            route_path(ip, &no_oif)
                .expect_err("no oif")
                .contains("no interface")
        );
        let no_src = route_reply(vec![RouteAttribute::Oif(4)], RouteType::Unicast);
        assert!(
            route_path(ip, &no_src)
                .expect_err("no source")
                .contains("no source address")
        );
    }

    #[test]
    fn macs_of_the_wrong_length_are_not_used() {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::Address(vec![1, 2, 3]));
        assert_eq!(link_mac(&link), None, "not Ethernet");
        link.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
        assert_eq!(link_mac(&link), Some([2, 0, 0, 0, 0, 1]));
        let mut neighbour = NeighbourMessage::default();
        assert_eq!(neighbour_mac(&neighbour), None);
        neighbour
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![0; 20]));
        assert_eq!(neighbour_mac(&neighbour), None);
    }
}
