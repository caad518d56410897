//! [`RouteTable`]: the intent classes this node resolves, and the next-hop group last compiled
//! for each, so the table compiler receives only what changed ([`RouteDelta`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intent::Intent;
use crate::resolve::ResolveContext;
use crate::store::Registry;
use crate::{NodeId, Timestamp};

/// Intent classes tracked at once; the least recently resolved is evicted beyond this.
pub const ROUTE_CLASSES_MAX: usize = 4096;
/// Scale from a score (0..=1) to an integer hop weight.
pub const ROUTE_WEIGHT_SCALE: f64 = 1000.0;

/// Domain separator of [`service_key`], so a service key never equals an intent class key
/// (those hash a canonical intent, which starts with its own version tag).
const SERVICE_KEY_DOMAIN: &[u8] = b"nexus/service-key/v1\0";

/// The routing key of one service: xxh3-128 over a domain tag, the node id and the service id.
/// The service's node delivers frames carrying it to the service's local endpoint; an ingress
/// node rewrites a frame's intent-class key to it when it forwards the frame to that node.
pub fn service_key(node: NodeId, service: &str) -> u128 {
    let mut bytes = Vec::with_capacity(SERVICE_KEY_DOMAIN.len() + 32 + service.len());
    bytes.extend_from_slice(SERVICE_KEY_DOMAIN);
    bytes.extend_from_slice(&node.0);
    bytes.extend_from_slice(service.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHop {
    /// Node the service runs on.
    pub node: NodeId,
    /// Service id.
    pub service: String,
    /// The service's local UDP port on its node.
    pub port: u16,
    /// Share of traffic: `max(1, round(score * ROUTE_WEIGHT_SCALE))`.
    pub weight: u32,
}

/// The compiled next-hop group of one intent class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Routing key ([`Intent::routing_key`]).
    pub key: u128,
    /// The class's canonical form ([`Intent::canonical`]).
    pub class: String,
    /// Top-k candidates, best first.
    pub hops: Vec<RouteHop>,
}

/// What changed since the previous delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDelta {
    /// Increases by one per delta.
    pub version: u64,
    /// New or changed routes, by key.
    pub upserts: Vec<Route>,
    /// Keys whose route is gone (class evicted, or no candidate left).
    pub removals: Vec<u128>,
}

#[derive(Clone, Debug)]
struct Class {
    intent: Intent,
    canonical: String,
    last_used: Timestamp,
    compiled: Option<Vec<RouteHop>>,
}

/// Tracks intent classes and their last compiled next hops.
///
/// Call [`RouteTable::track`] on every resolve, and [`RouteTable::recompute`] after the
/// registry changed (or periodically); forward each [`RouteDelta`] to the table compiler.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    classes: BTreeMap<u128, Class>,
    pending_removals: Vec<u128>,
    version: u64,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Classes tracked.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether no class is tracked.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Version of the last delta returned.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records that `intent`'s class was resolved at `now`; returns its routing key. The class
    /// keeps the largest `k` seen. Beyond [`ROUTE_CLASSES_MAX`] the least recently resolved
    /// class (lowest key among equals) is evicted and its route removed in the next delta.
    pub fn track(&mut self, now: Timestamp, intent: &Intent) -> u128 {
        let key = intent.routing_key();
        if let Some(class) = self.classes.get_mut(&key) {
            class.last_used = class.last_used.max(now);
            class.intent.k = class.intent.k.max(intent.k);
            return key;
        }
        if self.classes.len() >= ROUTE_CLASSES_MAX {
            let victim = self
                .classes
                .iter()
                .min_by_key(|(k, c)| (c.last_used, **k))
                .map(|(k, _)| *k);
            if let Some(victim) = victim
                && let Some(old) = self.classes.remove(&victim)
                && old.compiled.is_some()
            {
                self.pending_removals.push(victim);
            }
        }
        let mut tracked = intent.clone();
        tracked.explain = false;
        self.pending_removals.retain(|k| *k != key);
        self.classes.insert(
            key,
            Class {
                canonical: intent.canonical(),
                intent: tracked,
                last_used: now,
                compiled: None,
            },
        );
        key
    }

    /// Resolves every tracked class again; returns a delta if any route changed (or a class was
    /// evicted since the last delta), else `None`.
    pub fn recompute(&mut self, registry: &Registry, ctx: &ResolveContext) -> Option<RouteDelta> {
        let mut upserts = Vec::new();
        let mut removals = std::mem::take(&mut self.pending_removals);
        for (key, class) in &mut self.classes {
            let resolution = registry.resolve(&class.intent, ctx);
            let hops: Vec<RouteHop> = resolution
                .candidates
                .iter()
                .map(|c| RouteHop {
                    node: c.node,
                    service: c.service.clone(),
                    port: c.endpoint.port,
                    weight: ((c.score * ROUTE_WEIGHT_SCALE).round() as u32).max(1),
                })
                .collect();
            if hops.is_empty() {
                if class.compiled.take().is_some() {
                    removals.push(*key);
                }
                continue;
            }
            if class.compiled.as_ref() != Some(&hops) {
                upserts.push(Route {
                    key: *key,
                    class: class.canonical.clone(),
                    hops: hops.clone(),
                });
                class.compiled = Some(hops);
            }
        }
        if upserts.is_empty() && removals.is_empty() {
            return None;
        }
        removals.sort_unstable();
        removals.dedup();
        self.version += 1;
        Some(RouteDelta {
            version: self.version,
            upserts,
            removals,
        })
    }
}

#[cfg(test)]
mod service_key_tests {
    use super::*;

    #[test]
    fn service_keys_separate_nodes_and_services() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        assert_eq!(service_key(a, "x"), service_key(a, "x"));
        assert_ne!(service_key(a, "x"), service_key(b, "x"));
        assert_ne!(service_key(a, "x"), service_key(a, "y"));
        // No ambiguity between a longer id and the next node's bytes: the id ends the input.
        assert_ne!(service_key(a, "xy"), service_key(a, "x"));
    }
}
