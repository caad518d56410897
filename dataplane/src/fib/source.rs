//! The allowed-source set of a generation: the IP addresses a data plane accepts frames from.
//!
//! Keyed by IP address alone, not by (IP, port): a member behind a port-translating NAT or a
//! load balancer reaches this node from another port than the one it advertises, and the
//! programs on a node's host that send into its data plane (its NexStream session socket,
//! registered services, `nexus ctl send`) send from ephemeral ports that the table compiler never
//! learns. The price is that every process on an allowed host is allowed, and that a sender
//! able to forge a member's source address passes: the check keeps traffic from outside the
//! fabric off the data plane cheaply, it does not authenticate frames (NexStream sessions do,
//! with MIC keys).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::SOURCES_MAX;

/// An allowed source's IP address in its canonical 16-byte form: IPv6 as is, IPv4 as its
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), so that an IPv4 peer seen by an IPv4 socket and
/// the same peer seen by a dual-stack IPv6 socket are one key. Ordered by those 16 bytes (as a
/// big-endian u128), which is the order the table image stores them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceIp(u128);

/// `::ffff:0:0/96`, the IPv4-mapped prefix.
const V4_MAPPED: u128 = 0xffff_0000_0000;

impl SourceIp {
    /// The canonical form of `ip`.
    #[inline]
    pub const fn new(ip: IpAddr) -> SourceIp {
        match ip {
            IpAddr::V4(v4) => SourceIp(V4_MAPPED | v4.to_bits() as u128),
            IpAddr::V6(v6) => SourceIp(v6.to_bits()),
        }
    }

    /// The canonical form from its 16 bytes in network byte order (as the table image stores it).
    #[inline]
    pub const fn from_be_bytes(bytes: [u8; 16]) -> SourceIp {
        SourceIp(u128::from_be_bytes(bytes))
    }

    /// The 16 bytes in network byte order.
    #[inline]
    pub const fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The canonical form as a big-endian integer (what lookups hash).
    #[inline]
    pub const fn to_bits(self) -> u128 {
        self.0
    }

    /// The address, IPv4 again for an IPv4-mapped one.
    pub fn ip(self) -> IpAddr {
        Ipv6Addr::from_bits(self.0).to_canonical()
    }

    /// Whether the address can be the source of a datagram: not unspecified, not multicast, not
    /// the IPv4 limited broadcast address.
    pub fn is_unicast(self) -> bool {
        match self.ip() {
            IpAddr::V4(v4) => {
                !(v4.is_unspecified() || v4.is_multicast() || v4 == Ipv4Addr::BROADCAST)
            }
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        }
    }
}

impl From<IpAddr> for SourceIp {
    fn from(ip: IpAddr) -> SourceIp {
        SourceIp::new(ip)
    }
}

impl fmt::Display for SourceIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.ip(), f)
    }
}

/// Why an address was not added to a [`SourceSet`]. The set is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Unspecified, multicast or broadcast: no datagram comes from it.
    #[error(
        "allowed source {ip}: not a unicast address (unspecified, multicast and broadcast addresses never send datagrams)"
    )]
    NotUnicast {
        /// The refused address.
        ip: IpAddr,
    },
    /// The set already holds [`SOURCES_MAX`] addresses.
    #[error("allowed source {ip}: the set already holds SOURCES_MAX = {SOURCES_MAX} addresses")]
    TooMany {
        /// The refused address.
        ip: IpAddr,
    },
}

/// The IP addresses one generation accepts frames from (see the module docs for why IPs and
/// not (IP, port)): at most [`SOURCES_MAX`] unicast addresses, kept in canonical order.
///
/// The table compiler fills it with the data-plane addresses of live members and the addresses
/// of this node's local services and session socket, and hands it to a
/// [`RouteSet`](super::RouteSet) with [`set_sources`](super::RouteSet::set_sources); it is
/// compiled into the same image as the routes, so installing a generation swaps both at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSet {
    ips: BTreeSet<SourceIp>,
}

impl SourceSet {
    /// An empty set (a forwarder checking sources against it drops every frame).
    pub fn new() -> SourceSet {
        SourceSet::default()
    }

    /// Allows `ip`; returns whether it was new. Refuses non-unicast addresses and a
    /// [`SOURCES_MAX`]-th + 1 address, leaving the set unchanged.
    pub fn insert(&mut self, ip: IpAddr) -> Result<bool, SourceError> {
        let source = SourceIp::new(ip);
        if !source.is_unicast() {
            return Err(SourceError::NotUnicast { ip });
        }
        if !self.ips.contains(&source) && self.ips.len() >= SOURCES_MAX {
            return Err(SourceError::TooMany { ip });
        }
        Ok(self.ips.insert(source))
    }

    /// Stops allowing `ip`; returns whether it was allowed.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        self.ips.remove(&SourceIp::new(ip))
    }

    /// Whether `ip` is allowed.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ips.contains(&SourceIp::new(ip))
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether no address is allowed.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The addresses in canonical order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SourceIp> + '_ {
        self.ips.iter().copied()
    }
}

impl TryFrom<Vec<IpAddr>> for SourceSet {
    type Error = SourceError;

    /// A set of `ips` (duplicates allowed); refuses the first address [`SourceSet::insert`]
    /// refuses.
    fn try_from(ips: Vec<IpAddr>) -> Result<SourceSet, SourceError> {
        let mut set = SourceSet::new();
        for ip in ips {
            set.insert(ip)?;
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn ipv4_and_its_mapped_form_are_one_key() {
        let v4 = SourceIp::new(ip("10.1.2.3"));
        let mapped = SourceIp::new(ip("::ffff:10.1.2.3"));
        assert_eq!(v4, mapped);
        assert_eq!(v4.ip(), ip("10.1.2.3"));
        assert_eq!(v4.to_string(), "10.1.2.3");
        assert_eq!(
            v4.to_be_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
        assert_eq!(SourceIp::from_be_bytes(v4.to_be_bytes()), v4);
        let v6 = SourceIp::new(ip("2001:db8::1"));
        assert_eq!(v6.ip(), ip("2001:db8::1"));
        assert_ne!(v6, v4);
    }

    #[test]
    fn insert_refuses_non_unicast_and_bounds_the_set() {
        let mut set = SourceSet::new();
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert_eq!(
                set.insert(ip(bad)),
                Err(SourceError::NotUnicast { ip: ip(bad) }),
                "{bad}"
            );
        }
        assert!(set.is_empty());
        assert_eq!(set.insert(ip("127.0.0.1")), Ok(true));
        assert_eq!(set.insert(ip("::ffff:127.0.0.1")), Ok(false), "same key");
        assert!(set.contains(ip("127.0.0.1")));
        assert!(!set.contains(ip("127.0.0.2")));
        for n in 1..SOURCES_MAX as u32 {
            set.insert(IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + n)))
                .expect("room");
        }
        assert_eq!(set.len(), SOURCES_MAX);
        let over = ip("192.0.2.1");
        assert_eq!(set.insert(over), Err(SourceError::TooMany { ip: over }));
        assert_eq!(
            set.insert(ip("127.0.0.1")),
            Ok(false),
            "re-adding is allowed"
        );
        assert!(set.remove(ip("127.0.0.1")));
        assert_eq!(set.insert(over), Ok(true));
        let message = SourceError::NotUnicast { ip: ip("0.0.0.0") }.to_string();
        assert!(message.starts_with("allowed source 0.0.0.0: not a unicast address"));
    }
}
