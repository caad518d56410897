//! Route input: the routing key, a next hop, and the validated set of routes one generation is
//! compiled from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use super::source::SourceSet;
use super::{NEXT_HOPS_MAX, NEXT_HOPS_TOTAL_MAX, ROUTES_MAX, WEIGHT_TOTAL_MAX};

/// A 128-bit routing key: the hash of a canonical capability class (DESIGN.md §3).
///
/// Defined here for the FIB; the NexLink codec (`wire`) may carry its own type for the header
/// field until the two are unified. Conversion to and from the header's network byte order is
/// [`RoutingKey::from_be_bytes`] / [`RoutingKey::to_be_bytes`]. Displays as 32 lowercase hex
/// digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutingKey(pub u128);

impl RoutingKey {
    /// The key from 16 bytes in network byte order (as the NexLink header carries it).
    #[inline]
    pub const fn from_be_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// The key as 16 bytes in network byte order.
    #[inline]
    pub const fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Displays a 32-byte node id as 64 lowercase hex digits (for errors and the `GET /v1/fib` view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIdHex<'a>(pub &'a [u8; 32]);

impl fmt::Display for NodeIdHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One next hop of a route: the node to forward to, the address to send its frames to, a
/// weight (its share of the group's flows is `weight / sum of weights`) and an optional routing
/// key to write into the frame on the way out (an MPLS-style label swap).
///
/// Ordered by node id, then address, then weight, then rewrite; a [`RouteSet`] keeps each group
/// in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    /// The next hop's node id (its Ed25519 identity, as the gossip layer names nodes).
    pub node: [u8; 32],
    /// Where to send the frames (the node's overlay UDP address, or a local endpoint).
    pub addr: SocketAddr,
    /// Relative share of flows, at least 1.
    pub weight: u32,
    /// The routing key written into the frame's header when it is sent to this hop (the
    /// forwarder updates the header checksum incrementally); `None` leaves the key unchanged.
    ///
    /// This is how an ingress node hands a frame addressed to an intent class to a service on
    /// another node: the egress node knows its services by their own per-service keys (its
    /// `LocalEndpoints` table), not by the class key.
    pub rewrite: Option<RoutingKey>,
}

/// `" rewriting the key to {key}"`, or nothing for a hop without a rewrite (for errors).
struct RewriteNote(Option<RoutingKey>);

impl fmt::Display for RewriteNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, " rewriting the key to {key}"),
            None => Ok(()),
        }
    }
}

/// Why a route was refused. In every case the [`RouteSet`] is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route must have at least one next hop (remove the key instead).
    #[error(
        "route {key}: no next hops (a route needs 1..={NEXT_HOPS_MAX}; remove the key instead)"
    )]
    NoNextHops {
        /// The refused key.
        key: RoutingKey,
    },
    /// More next hops than [`NEXT_HOPS_MAX`].
    #[error("route {key}: {count} next hops, more than NEXT_HOPS_MAX = {NEXT_HOPS_MAX}")]
    TooManyNextHops {
        /// The refused key.
        key: RoutingKey,
        /// How many next hops were given.
        count: usize,
    },
    /// A next hop with weight 0 (it would never be chosen; leave it out instead).
    #[error("route {key}: next hop {node} at {addr} has weight 0 (weights must be at least 1)", node = NodeIdHex(node))]
    ZeroWeight {
        /// The refused key.
        key: RoutingKey,
        /// The next hop's node id.
        node: [u8; 32],
        /// The next hop's address.
        addr: SocketAddr,
    },
    /// The group's weights add up to more than [`WEIGHT_TOTAL_MAX`].
    #[error(
        "route {key}: weights add up to {total}, more than WEIGHT_TOTAL_MAX = {WEIGHT_TOTAL_MAX}"
    )]
    WeightTotalTooLarge {
        /// The refused key.
        key: RoutingKey,
        /// The sum of the given weights.
        total: u64,
    },
    /// The same (node id, address, rewrite) appears twice in one group. Hops that differ only
    /// in their rewrite are distinct (two services on one node behind one data-plane address).
    #[error("route {key}: next hop {node} at {addr}{rewrite} appears more than once (give it one entry with the summed weight)", node = NodeIdHex(node), rewrite = RewriteNote(*rewrite))]
    DuplicateNextHop {
        /// The refused key.
        key: RoutingKey,
        /// The repeated next hop's node id.
        node: [u8; 32],
        /// The repeated next hop's address.
        addr: SocketAddr,
        /// The repeated next hop's rewrite.
        rewrite: Option<RoutingKey>,
    },
    /// Adding the key would exceed [`ROUTES_MAX`].
    #[error("route {key}: the route set already holds ROUTES_MAX = {ROUTES_MAX} routes")]
    TooManyRoutes {
        /// The refused key.
        key: RoutingKey,
    },
    /// The route would take the next hops summed over all routes past [`NEXT_HOPS_TOTAL_MAX`].
    #[error(
        "route {key}: next hops over all routes would reach {total}, more than NEXT_HOPS_TOTAL_MAX = {NEXT_HOPS_TOTAL_MAX}"
    )]
    TooManyNextHopsTotal {
        /// The refused key.
        key: RoutingKey,
        /// The total the route would have made.
        total: usize,
    },
}

/// The routes one table generation is compiled from: a generation number and, per key, a
/// validated next-hop group kept in canonical [`NextHop`] order (node id, address, weight,
/// rewrite).
///
/// A next hop is identified by (node id, address, rewrite): a group may not name the same one
/// twice, but may name one (node, address) several times with different rewrites — two services
/// on one node reached through the node's one data-plane address are two next hops, each with
/// its own weight and its own per-service key.
///
/// Every `RouteSet` is within the limits ([`ROUTES_MAX`], [`NEXT_HOPS_MAX`],
/// [`NEXT_HOPS_TOTAL_MAX`], weights ≥ 1, [`WEIGHT_TOTAL_MAX`]): the only ways to add routes check
/// them, so [`compile`](super::compile) never meets a route it cannot lay out. The table
/// compiler keeps one, applies route deltas with [`insert`](Self::insert) and
/// [`remove`](Self::remove), sets the allowed sources ([`set_sources`](Self::set_sources)) and
/// the next generation number and compiles it.
///
/// The allowed-source set travels with the routes: a generation's image holds both, so one
/// install (or rollback) changes both at once. A new set allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSet {
    generation: u64,
    routes: BTreeMap<RoutingKey, Vec<NextHop>>,
    next_hops_total: usize,
    sources: SourceSet,
}

impl RouteSet {
    /// An empty route set for `generation`.
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            routes: BTreeMap::new(),
            next_hops_total: 0,
            sources: SourceSet::new(),
        }
    }

    /// A route set from a whole map of routes; refuses the first route (in key order) that breaks
    /// a limit.
    pub fn from_routes(
        generation: u64,
        routes: BTreeMap<RoutingKey, Vec<NextHop>>,
    ) -> Result<Self, RouteError> {
        let mut set = Self::new(generation);
        for (key, next_hops) in routes {
            set.insert(key, next_hops)?;
        }
        Ok(set)
    }

    /// Sets the route for `key` to `next_hops` (sorted into canonical order), returning the route
    /// it replaced. On error the set is unchanged.
    pub fn insert(
        &mut self,
        key: RoutingKey,
        mut next_hops: Vec<NextHop>,
    ) -> Result<Option<Vec<NextHop>>, RouteError> {
        check_group(key, &mut next_hops)?;
        let replaced_len = self.routes.get(&key).map(Vec::len);
        if replaced_len.is_none() && self.routes.len() >= ROUTES_MAX {
            return Err(RouteError::TooManyRoutes { key });
        }
        let total = self.next_hops_total - replaced_len.unwrap_or(0) + next_hops.len();
        if total > NEXT_HOPS_TOTAL_MAX {
            return Err(RouteError::TooManyNextHopsTotal { key, total });
        }
        self.next_hops_total = total;
        Ok(self.routes.insert(key, next_hops))
    }

    /// Removes the route for `key`, returning it.
    pub fn remove(&mut self, key: RoutingKey) -> Option<Vec<NextHop>> {
        let removed = self.routes.remove(&key)?;
        self.next_hops_total -= removed.len();
        Some(removed)
    }

    /// The next hops of `key`, in canonical order.
    pub fn get(&self, key: RoutingKey) -> Option<&[NextHop]> {
        self.routes.get(&key).map(Vec::as_slice)
    }

    /// The generation this set will compile to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the generation this set will compile to (the table compiler bumps it per publish).
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// How many routes (keys).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Next hops summed over all routes (bounded by [`NEXT_HOPS_TOTAL_MAX`]).
    pub fn next_hops_total(&self) -> usize {
        self.next_hops_total
    }

    /// All routes in key order.
    pub fn routes(&self) -> &BTreeMap<RoutingKey, Vec<NextHop>> {
        &self.routes
    }

    /// The addresses this generation accepts frames from.
    pub fn sources(&self) -> &SourceSet {
        &self.sources
    }

    /// Replaces the allowed-source set, returning the one it replaced.
    pub fn set_sources(&mut self, sources: SourceSet) -> SourceSet {
        std::mem::replace(&mut self.sources, sources)
    }
}

/// Checks one group against the limits and sorts it into canonical order.
fn check_group(key: RoutingKey, next_hops: &mut [NextHop]) -> Result<(), RouteError> {
    if next_hops.is_empty() {
        return Err(RouteError::NoNextHops { key });
    }
    if next_hops.len() > NEXT_HOPS_MAX {
        return Err(RouteError::TooManyNextHops {
            key,
            count: next_hops.len(),
        });
    }
    next_hops.sort_unstable();
    let mut total: u64 = 0;
    for (index, hop) in next_hops.iter().enumerate() {
        if hop.weight == 0 {
            return Err(RouteError::ZeroWeight {
                key,
                node: hop.node,
                addr: hop.addr,
            });
        }
        // Sorted by (node, addr, weight, rewrite): hops with the same (node, addr) are adjacent
        // but, with different weights, equal rewrites need not be; compare within the run
        // (at most NEXT_HOPS_MAX² / 2 comparisons).
        let same_target = next_hops[..index]
            .iter()
            .rev()
            .take_while(|before| before.node == hop.node && before.addr == hop.addr);
        for before in same_target {
            if before.rewrite == hop.rewrite {
                return Err(RouteError::DuplicateNextHop {
                    key,
                    node: hop.node,
                    addr: hop.addr,
                    rewrite: hop.rewrite,
                });
            }
        }
        total += u64::from(hop.weight);
    }
    if total > u64::from(WEIGHT_TOTAL_MAX) {
        return Err(RouteError::WeightTotalTooLarge { key, total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(node: u8, port: u16, weight: u32) -> NextHop {
        NextHop {
            node: [node; 32],
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            rewrite: None,
        }
    }

    #[test]
    fn insert_sorts_and_replaces() {
        let mut set = RouteSet::new(1);
        let key = RoutingKey(7);
        assert_eq!(set.insert(key, vec![hop(2, 1, 1), hop(1, 1, 1)]), Ok(None));
        assert_eq!(set.get(key), Some(&[hop(1, 1, 1), hop(2, 1, 1)][..]));
        assert_eq!(set.next_hops_total(), 2);
        let replaced = set.insert(key, vec![hop(3, 1, 5)]);
        assert_eq!(replaced, Ok(Some(vec![hop(1, 1, 1), hop(2, 1, 1)])));
        assert_eq!(set.next_hops_total(), 1);
        assert_eq!(set.remove(key), Some(vec![hop(3, 1, 5)]));
        assert_eq!(set.next_hops_total(), 0);
        assert!(set.is_empty());
    }

    #[test]
    fn bad_groups_are_refused_and_leave_the_set_unchanged() {
        let key = RoutingKey(0xabc);
        let mut set = RouteSet::new(1);
        set.insert(key, vec![hop(9, 9, 9)]).expect("a valid route");
        let before = set.clone();

        assert_eq!(set.insert(key, vec![]), Err(RouteError::NoNextHops { key }));
        let too_many: Vec<NextHop> = (0..=NEXT_HOPS_MAX)
            .map(|i| hop(1, u16::try_from(i).expect("small"), 1))
            .collect();
        assert_eq!(
            set.insert(key, too_many),
            Err(RouteError::TooManyNextHops {
                key,
                count: NEXT_HOPS_MAX + 1
            })
        );
        let zero = set.insert(key, vec![hop(1, 1, 1), hop(2, 2, 0)]);
        assert_eq!(
            zero,
            Err(RouteError::ZeroWeight {
                key,
                node: [2; 32],
                addr: hop(2, 2, 0).addr
            })
        );
        let heavy = set.insert(key, vec![hop(1, 1, u32::MAX), hop(2, 2, 1)]);
        assert_eq!(
            heavy,
            Err(RouteError::WeightTotalTooLarge {
                key,
                total: u64::from(u32::MAX) + 1
            })
        );
        let duplicate = set.insert(key, vec![hop(1, 1, 1), hop(1, 1, 2)]);
        assert_eq!(
            duplicate,
            Err(RouteError::DuplicateNextHop {
                key,
                node: [1; 32],
                addr: hop(1, 1, 1).addr,
                rewrite: None,
            })
        );
        // The same rewrite twice, with other hops of the same (node, addr) sorted in between.
        let service = |weight, rewrite| NextHop {
            rewrite: Some(RoutingKey(rewrite)),
            ..hop(1, 1, weight)
        };
        let duplicate = set.insert(key, vec![service(1, 5), service(2, 6), service(3, 5)]);
        assert_eq!(
            duplicate,
            Err(RouteError::DuplicateNextHop {
                key,
                node: [1; 32],
                addr: hop(1, 1, 1).addr,
                rewrite: Some(RoutingKey(5)),
            })
        );
        assert_eq!(set, before);
    }

    #[test]
    fn one_node_and_address_with_different_rewrites_are_distinct_hops() {
        // Two services on one node behind its one data-plane address, plus a hop to the same
        // address that keeps the key: three next hops.
        let key = RoutingKey(0xc1a55);
        let with = |weight, rewrite| NextHop {
            rewrite,
            ..hop(1, 1, weight)
        };
        let group = vec![
            with(2, Some(RoutingKey(0xb))),
            with(1, None),
            with(2, Some(RoutingKey(0xa))),
        ];
        let mut set = RouteSet::new(1);
        set.insert(key, group)
            .expect("distinct rewrites are distinct hops");
        assert_eq!(
            set.get(key),
            Some(
                &[
                    with(1, None),
                    with(2, Some(RoutingKey(0xa))),
                    with(2, Some(RoutingKey(0xb))),
                ][..]
            ),
            "canonical order: weight, then rewrite (None first)"
        );
        assert_eq!(set.next_hops_total(), 3);
        let message = RouteError::DuplicateNextHop {
            key,
            node: [1; 32],
            addr: hop(1, 1, 1).addr,
            rewrite: Some(RoutingKey(0xa)),
        }
        .to_string();
        assert!(
            message.contains(
                "127.0.0.1:1 rewriting the key to 0000000000000000000000000000000a appears more than once"
            ),
            "{message}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_limit() {
        let key = RoutingKey(0xabc);
        let message = RouteError::ZeroWeight {
            key,
            node: [0xab; 32],
            addr: hop(1, 4000, 1).addr,
        }
        .to_string();
        assert!(
            message.starts_with("route 00000000000000000000000000000abc: next hop abab"),
            "{message}"
        );
        assert!(message.contains("127.0.0.1:4000 has weight 0"), "{message}");
        let message = RouteError::TooManyNextHops { key, count: 65 }.to_string();
        assert!(
            message.contains("65 next hops, more than NEXT_HOPS_MAX = 64"),
            "{message}"
        );
    }

    #[test]
    fn total_next_hops_are_bounded() {
        let mut set = RouteSet::new(1);
        let full: Vec<NextHop> = (0..NEXT_HOPS_MAX)
            .map(|i| hop(1, u16::try_from(i).expect("small"), 1))
            .collect();
        let routes_to_fill = NEXT_HOPS_TOTAL_MAX / NEXT_HOPS_MAX;
        for key in 0..routes_to_fill {
            set.insert(RoutingKey(key as u128), full.clone())
                .expect("within the total");
        }
        assert_eq!(set.next_hops_total(), NEXT_HOPS_TOTAL_MAX);
        let extra = RoutingKey(u128::MAX);
        assert_eq!(
            set.insert(extra, vec![hop(1, 1, 1)]),
            Err(RouteError::TooManyNextHopsTotal {
                key: extra,
                total: NEXT_HOPS_TOTAL_MAX + 1
            })
        );
        // Replacing a route by a smaller one stays allowed at the limit.
        set.insert(RoutingKey(0), vec![hop(1, 1, 1)])
            .expect("shrinking a route");
        assert_eq!(
            set.next_hops_total(),
            NEXT_HOPS_TOTAL_MAX - NEXT_HOPS_MAX + 1
        );
    }

    #[test]
    fn key_round_trips_network_byte_order() {
        let key = RoutingKey(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        assert_eq!(key.to_be_bytes()[0], 0x00);
        assert_eq!(key.to_be_bytes()[15], 0xff);
        assert_eq!(RoutingKey::from_be_bytes(key.to_be_bytes()), key);
        assert_eq!(key.to_string(), "00112233445566778899aabbccddeeff");
    }
}
