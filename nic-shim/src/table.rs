//! [`XdpTable`]: one FIB generation turned into the XDP program's map entries, with every next
//! hop resolved to an egress interface and Ethernet addresses.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use nexus_dataplane::fib::FibTable;

use crate::maps::{HopValue, NEXT_HOPS_MAX};

/// Where frames to one next-hop address leave: the interface, the Ethernet addresses, and the
/// source IP the forwarded datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The egress interface's index.
    pub ifindex: u32,
    /// The egress interface's MAC address.
    pub src_mac: [u8; 6],
    /// The next hop's (or the gateway's) MAC address.
    pub dst_mac: [u8; 6],
    /// The source IPv4 address of forwarded datagrams on this interface.
    pub src_ip: Ipv4Addr,
}

/// Why a next hop has no [`Egress`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// The neighbour table has no entry for it.
    #[error("no egress interface or MAC address known")]
    Unknown,
    /// The kernel routes it through `gateway` on interface `ifindex` but does not know that
    /// gateway's MAC yet (resolution was asked for). [`XdpTable::from_fib`] leaves such a next
    /// hop to the kernel: its frames are passed to the kernel's stack unchanged.
    #[error("the MAC address of {gateway} on interface index {ifindex} is not resolved yet")]
    Pending {
        /// The address whose MAC is wanted (the next hop itself when on-link).
        gateway: Ipv4Addr,
        /// The egress interface.
        ifindex: u32,
    },
    /// The kernel cannot send to it (no route, a local or blackhole route, an interface
    /// without an Ethernet address), or could not be asked.
    #[error("{reason}")]
    Unroutable {
        /// The kernel's answer, in words.
        reason: String,
    },
}

/// Resolves a next hop's address to its [`Egress`] (the neighbour table the loader consults).
pub trait Neighbours {
    /// The egress for frames to `to`, or why there is none.
    fn egress(&self, to: SocketAddrV4) -> Result<Egress, Unresolved>;
}

/// A fixed neighbour table keyed by next-hop IP.
#[derive(Clone, Debug, Default)]
pub struct StaticNeighbours(BTreeMap<Ipv4Addr, Egress>);

impl StaticNeighbours {
    /// An empty table.
    pub fn new() -> Self {
        StaticNeighbours::default()
    }

    /// Frames to `ip` (any port) leave through `egress`; returns the entry it replaced.
    pub fn insert(&mut self, ip: Ipv4Addr, egress: Egress) -> Option<Egress> {
        self.0.insert(ip, egress)
    }
}

impl Neighbours for StaticNeighbours {
    fn egress(&self, to: SocketAddrV4) -> Result<Egress, Unresolved> {
        self.0.get(to.ip()).copied().ok_or(Unresolved::Unknown)
    }
}

/// How many entries of each kind one generation may hold on the target. The program's maps are
/// sized for three generations of this (current, previous, and the one being written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpLimits {
    /// Routes (keys) per generation.
    pub routes_max: u32,
    /// Distinct next-hop groups per generation.
    pub groups_max: u32,
    /// Next hops over all groups per generation.
    pub hops_max: u32,
    /// IPv4 allowed sources per generation.
    pub sources_max: u32,
}

impl Default for XdpLimits {
    fn default() -> Self {
        XdpLimits {
            routes_max: 1 << 17,
            groups_max: 1 << 16,
            hops_max: 1 << 18,
            sources_max: 1 << 16,
        }
    }
}

/// Why a FIB generation cannot be turned into an [`XdpTable`]. Nothing was installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// More routes than the target's maps hold.
    #[error(
        "generation {generation} has {routes} routes; the XDP target holds at most {max} per generation (XdpLimits::routes_max)"
    )]
    TooManyRoutes {
        /// The generation refused.
        generation: u64,
        /// Its routes.
        routes: usize,
        /// The limit.
        max: u32,
    },
    /// More distinct next-hop groups than the target's maps hold.
    #[error(
        "generation {generation} has {groups} next-hop groups; the XDP target holds at most {max} (XdpLimits::groups_max)"
    )]
    TooManyGroups {
        /// The generation refused.
        generation: u64,
        /// Its groups.
        groups: usize,
        /// The limit.
        max: u32,
    },
    /// More next hops than the target's maps hold.
    #[error(
        "generation {generation} has {hops} next hops over its groups; the XDP target holds at most {max} (XdpLimits::hops_max)"
    )]
    TooManyHops {
        /// The generation refused.
        generation: u64,
        /// Its next hops.
        hops: usize,
        /// The limit.
        max: u32,
    },
    /// More IPv4 allowed sources than the target's maps hold.
    #[error(
        "generation {generation} allows {sources} IPv4 sources; the XDP target holds at most {max} (XdpLimits::sources_max)"
    )]
    TooManySources {
        /// The generation refused.
        generation: u64,
        /// Its IPv4 sources.
        sources: usize,
        /// The limit.
        max: u32,
    },
    /// A next hop has an IPv6 address: the XDP program forwards NexLink over IPv4 only.
    #[error("next hop {addr} is IPv6; the XDP target forwards over IPv4 only")]
    Ipv6NextHop {
        /// The next hop's address.
        addr: SocketAddr,
    },
    /// A next hop has no egress: unknown to the neighbour table, or the kernel cannot send
    /// to it.
    #[error("next hop {addr}: {why}")]
    NoEgress {
        /// The next hop's address.
        addr: SocketAddrV4,
        /// Why.
        why: Unresolved,
    },
}

/// One group of an [`XdpTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct XdpGroup {
    pub(crate) hop_first: u32,
    pub(crate) weight_total: u32,
    pub(crate) cumulative: Vec<u32>,
}

/// A FIB generation as the XDP program's map entries: routes (key → group), groups (cumulative
/// weights over a run of next hops), next hops (egress, addresses, rewrite) and the IPv4
/// allowed sources (IPv6 sources cannot reach an IPv4 forwarder and are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpTable {
    pub(crate) generation: u64,
    pub(crate) routes: Vec<([u8; 16], u32)>,
    pub(crate) groups: Vec<XdpGroup>,
    pub(crate) hops: Vec<HopValue>,
    pub(crate) sources: Vec<[u8; 16]>,
}

impl XdpTable {
    /// Translates `table` for a forwarder on UDP port `port`, resolving each next hop with
    /// `neighbours`. Groups keep the FIB's order of next hops and weights, so the program's
    /// weighted choice picks the same next hop as [`FibTable::route`] for every flow.
    ///
    /// A next hop whose MAC is [`Unresolved::Pending`] stays in its group as a kernel-path
    /// hop: the program passes the frames the weighted choice gives it to the kernel's stack
    /// unchanged (where the node's software forwarder, listening on the same port, forwards
    /// them and the kernel resolves the neighbour), so every other flow keeps its next hop.
    /// Any other unresolved next hop refuses the table ([`TableError::NoEgress`]).
    pub fn from_fib(
        table: &FibTable,
        port: u16,
        neighbours: &dyn Neighbours,
        limits: XdpLimits,
    ) -> Result<XdpTable, TableError> {
        let generation = table.generation();
        if table.len() > limits.routes_max as usize {
            return Err(TableError::TooManyRoutes {
                generation,
                routes: table.len(),
                max: limits.routes_max,
            });
        }
        let mut group_of: BTreeMap<u32, u32> = BTreeMap::new();
        let mut out = XdpTable {
            generation,
            routes: Vec::with_capacity(table.len()),
            groups: Vec::new(),
            hops: Vec::new(),
            sources: Vec::new(),
        };
        for entry in table.entries() {
            let group = entry.group;
            let index = match group_of.get(&group.id()) {
                Some(index) => *index,
                None => {
                    let index = u32::try_from(out.groups.len()).unwrap_or(u32::MAX);
                    if out.groups.len() >= limits.groups_max as usize {
                        return Err(TableError::TooManyGroups {
                            generation,
                            groups: out.groups.len() + 1,
                            max: limits.groups_max,
                        });
                    }
                    if out.hops.len() + group.len() > limits.hops_max as usize {
                        return Err(TableError::TooManyHops {
                            generation,
                            hops: out.hops.len() + group.len(),
                            max: limits.hops_max,
                        });
                    }
                    // The FIB bounds a group at its NEXT_HOPS_MAX, which is the program's.
                    debug_assert!(group.len() <= NEXT_HOPS_MAX);
                    let hop_first = u32::try_from(out.hops.len()).unwrap_or(u32::MAX);
                    let mut running = 0u32;
                    let mut cumulative = Vec::with_capacity(group.len());
                    for hop in group.iter() {
                        let addr = match hop.addr() {
                            SocketAddr::V4(addr) => addr,
                            addr @ SocketAddr::V6(_) => {
                                return Err(TableError::Ipv6NextHop { addr });
                            }
                        };
                        let egress = match neighbours.egress(addr) {
                            Ok(egress) => Some(egress),
                            Err(Unresolved::Pending { .. }) => None,
                            Err(why) => return Err(TableError::NoEgress { addr, why }),
                        };
                        // The FIB checked on load that a group's weights sum within u32.
                        running = running.wrapping_add(hop.weight());
                        cumulative.push(running);
                        let rewrite = hop.rewrite().map(|key| key.to_be_bytes());
                        out.hops.push(match egress {
                            Some(egress) => HopValue {
                                ifindex: egress.ifindex,
                                dst_mac: egress.dst_mac,
                                src_mac: egress.src_mac,
                                saddr: egress.src_ip.octets(),
                                daddr: addr.ip().octets(),
                                sport: port,
                                dport: addr.port(),
                                rewrite,
                                kernel: false,
                            },
                            None => HopValue {
                                ifindex: 0,
                                dst_mac: [0; 6],
                                src_mac: [0; 6],
                                saddr: [0; 4],
                                daddr: addr.ip().octets(),
                                sport: port,
                                dport: addr.port(),
                                rewrite,
                                kernel: true,
                            },
                        });
                    }
                    out.groups.push(XdpGroup {
                        hop_first,
                        weight_total: group.weight_total(),
                        cumulative,
                    });
                    group_of.insert(group.id(), index);
                    index
                }
            };
            out.routes.push((entry.key.to_be_bytes(), index));
        }
        for source in table.sources() {
            if source.ip().is_ipv4() {
                out.sources.push(source.to_be_bytes());
            }
        }
        if out.sources.len() > limits.sources_max as usize {
            return Err(TableError::TooManySources {
                generation,
                sources: out.sources.len(),
                max: limits.sources_max,
            });
        }
        Ok(out)
    }

    /// The generation this table holds.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Routes.
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// Distinct next-hop groups.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Next hops over all groups.
    pub fn hops(&self) -> usize {
        self.hops.len()
    }

    /// The next hops left to the kernel's stack because their MAC was not resolved yet
    /// (each once, ascending).
    pub fn kernel_path_hops(&self) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = self
            .hops
            .iter()
            .filter(|hop| hop.kernel)
            .map(|hop| SocketAddrV4::new(Ipv4Addr::from(hop.daddr), hop.dport))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The egress interfaces its next hops use (each once, ascending; kernel-path hops use
    /// none).
    pub fn egress_ifindexes(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .hops
            .iter()
            .filter(|hop| !hop.kernel)
            .map(|hop| hop.ifindex)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
