//! [`TableCompiler`]: folds routes and membership into forwarding-table generations and installs
//! them into the node's [`Fib`], which the data plane reads without locks.
//!
//! Two kinds of routes are folded into each generation:
//! - *static* routes, set by operators through the admin API and persisted in the node's storage;
//! - *intent* routes from the registry actor ([`TableMsg::Registry`]): for each intent class
//!   resolved on this node, a weighted group of services. A service on another node becomes a
//!   next hop to that node's data plane (its address from membership metadata) that rewrites the
//!   frame's routing key to the service's key ([`nexus_registry::service_key`]); a service on
//!   this node becomes a next hop to its local UDP port. A static route wins over an intent route
//!   with the same key.
//!
//! The registry's local services also fill the forwarder's local-endpoint table: frames that
//! arrive carrying a local service's key are delivered to that service's port.
//!
//! Next hops are filtered by membership: a next hop whose node is not alive (or is not this node)
//! is left out, and a key with no live next hop is left out entirely, so traffic fails over when
//! membership declares a node down — within one `refresh` period of the verdict.
//!
//! Each generation also carries its *allowed sources*, the IP addresses the data plane accepts
//! frames from ([`SourceSet`]; a forwarder with the source check on drops everything else): the
//! data-plane address of every member that is alive or suspect (this node's own included; a
//! suspect member still forwards, and its frames are let in until membership declares it down),
//! the loopback address while this node has a local service (local services are delivered to,
//! and send from, `127.0.0.1`), and the address of this node's session socket. A new generation
//! is compiled only when the effective table or the allowed sources change.
//!
//! Every generation the node forwards with is also handed to the node's hardware targets (a P4
//! switch, the NIC's XDP program) through [`TableArgs::generations`]: a watch channel holding
//! the latest [`TableGeneration`] (routes with allowed sources, and the local endpoints). It is
//! sent after each installed generation, after a rollback (the table rolled back to), and when
//! the local endpoints change under the installed generation. A target that falls behind skips
//! to the latest one; this crate does not know the targets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nexus_dataplane::fib::{
    Fib, FibTable, NextHop, RouteError, RouteSet, RoutingKey, SourceSet, compile,
};
use nexus_dataplane::forward::LocalEndpoints;
use nexus_gossip::{MemberState, NodeId};
use nexus_registry::{Route as IntentRoute, service_key};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::GossipMsg;
use crate::env::Storage;
use crate::metrics::NodeMetrics;
use crate::supervisor::{SupervisorMsg, lookup_child};
use crate::task::AbortOnDrop;

/// Storage key of the static routes.
const ROUTES_KEY: &str = "fib/static-routes";
/// Deadline for asking the gossip actor for the member list.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(1);
/// Where this node's local services are delivered to, and send from.
const LOCAL_SERVICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Arguments of [`TableCompiler`]; cloned for every (re)start.
#[derive(Clone)]
pub struct TableArgs {
    /// The node's forwarding table handle (outlives actor restarts; the data plane reads it).
    pub fib: Fib,
    /// Durable node storage (static routes).
    pub storage: Arc<dyn Storage>,
    /// This node's id (its own next hops are always live).
    pub local: NodeId,
    /// How often membership is re-read.
    pub refresh: Duration,
    /// Where the table's gauges go.
    pub metrics: NodeMetrics,
    /// Where the local-endpoint table goes (the node hands it to its forwarder), if the node
    /// runs a data plane.
    pub local_endpoints: Option<tokio::sync::watch::Sender<LocalEndpoints>>,
    /// The session actor's socket (NexStream), when it runs: installed as the local endpoint of
    /// this node's session key, and every live peer with a data plane gets a route for its
    /// session key.
    pub session_endpoint: Option<tokio::sync::watch::Receiver<Option<SocketAddr>>>,
    /// Where every table generation the node forwards with goes (its hardware targets read
    /// it), if anything reads them: the latest [`TableGeneration`], replaced whole.
    pub generations: Option<tokio::sync::watch::Sender<Option<Arc<TableGeneration>>>>,
}

/// A forwarding-table generation as the node's hardware targets take it: the routes with their
/// allowed sources (numbered like the [`Fib`]'s generation) and the local endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableGeneration {
    /// The routes and allowed sources; [`RouteSet::generation`] is the generation's number.
    pub routes: RouteSet,
    /// Routing keys delivered to this node's services and session socket.
    pub local: LocalEndpoints,
}

impl TableGeneration {
    /// The generation's number.
    pub fn generation(&self) -> u64 {
        self.routes.generation()
    }
}

impl std::fmt::Debug for TableArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableArgs")
            .field("generation", &self.fib.generation())
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// A route as operators see it: the configured next hops, and how many are live now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatus {
    /// The routing key.
    pub key: RoutingKey,
    /// The configured next hops.
    pub next_hops: Vec<NextHop>,
    /// How many of them are in the installed table (their node is alive).
    pub live: usize,
}

/// What `GET /v1/fib` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibView {
    /// The installed generation.
    pub generation: u64,
    /// The generation a rollback would return to.
    pub previous_generation: Option<u64>,
    /// Routes in the installed table.
    pub routes: usize,
    /// The first `limit` entries in key order.
    pub entries: Vec<(RoutingKey, Vec<NextHop>)>,
}

/// Why a table operation failed. The table and the stored routes are unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The route breaks a limit or has a bad next hop.
    #[error("{0}")]
    Route(#[from] RouteError),
    /// There is nothing to roll back to.
    #[error("{0}")]
    Rollback(String),
    /// Compiling, loading or persisting failed.
    #[error("{0}")]
    Internal(String),
}

/// Messages to [`TableCompiler`].
#[derive(Debug)]
pub enum TableMsg {
    /// Set (or replace) a static route; replies with the generation installed.
    PutRoute(
        RoutingKey,
        Vec<NextHop>,
        RpcReplyPort<Result<u64, TableError>>,
    ),
    /// Remove a static route; replies whether it existed.
    DeleteRoute(RoutingKey, RpcReplyPort<Result<bool, TableError>>),
    /// The static routes with their live next-hop counts.
    Routes(RpcReplyPort<Vec<RouteStatus>>),
    /// The installed table (first `limit` entries).
    View(usize, RpcReplyPort<FibView>),
    /// Roll back to the previous generation; replies with the generation now installed.
    Rollback(RpcReplyPort<Result<u64, TableError>>),
    /// Timer: re-read membership and recompile if the live set changed.
    Refresh,
    /// The registry's intent routes and this node's registered services (id, port), replacing
    /// the previous ones.
    Registry {
        /// Compiled intent routes.
        routes: Vec<IntentRoute>,
        /// Local services with a port.
        local: Vec<(String, u16)>,
    },
}

/// State of [`TableCompiler`].
pub struct TableState {
    args: TableArgs,
    supervisor: ActorRef<SupervisorMsg>,
    routes: BTreeMap<RoutingKey, Vec<NextHop>>,
    live_nodes: BTreeSet<[u8; 32]>,
    /// Data-plane address of each live member that runs one.
    dataplanes: BTreeMap<[u8; 32], SocketAddr>,
    /// Data-plane IPs of the members that are alive or suspect (allowed sources).
    member_sources: BTreeSet<IpAddr>,
    intent_routes: Vec<IntentRoute>,
    local_services: Vec<(String, u16)>,
    /// The session socket the local-endpoint table was last built with.
    session_addr: Option<SocketAddr>,
    installed: Option<Installed>,
    /// The route set of the generation last handed to [`TableArgs::generations`].
    published: Option<RouteSet>,
    _refresh: AbortOnDrop,
}

/// What the installed generation was compiled from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Installed {
    routes: BTreeMap<RoutingKey, Vec<NextHop>>,
    sources: SourceSet,
}

/// What one read of the member list yields.
struct Members {
    /// Node ids of the alive members.
    live: BTreeSet<[u8; 32]>,
    /// Data-plane addresses of the alive members that run one.
    dataplanes: BTreeMap<[u8; 32], SocketAddr>,
    /// Data-plane IPs of the alive and suspect members.
    sources: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for TableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableState")
            .field("routes", &self.routes.len())
            .field("live_nodes", &self.live_nodes.len())
            .finish_non_exhaustive()
    }
}

/// The table-compiler actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableCompiler;

#[derive(Serialize, Deserialize)]
struct StoredRoute {
    key: String,
    next_hops: Vec<StoredHop>,
}

#[derive(Serialize, Deserialize)]
struct StoredHop {
    node: String,
    addr: SocketAddr,
    weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rewrite: Option<String>,
}

fn hex32(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a node id.
pub fn parse_node_id(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses 32 hex digits into a routing key.
pub fn parse_routing_key(text: &str) -> Option<RoutingKey> {
    if text.len() != 32 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(RoutingKey)
}

/// A routing key as 32 hex digits.
pub fn routing_key_hex(key: RoutingKey) -> String {
    format!("{:032x}", key.0)
}

fn encode_routes(routes: &BTreeMap<RoutingKey, Vec<NextHop>>) -> Vec<u8> {
    let stored: Vec<StoredRoute> = routes
        .iter()
        .map(|(k, hops)| StoredRoute {
            key: routing_key_hex(*k),
            next_hops: hops
                .iter()
                .map(|h| StoredHop {
                    node: hex32(&h.node),
                    addr: h.addr,
                    weight: h.weight,
                    rewrite: h.rewrite.map(routing_key_hex),
                })
                .collect(),
        })
        .collect();
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode_routes(bytes: &[u8]) -> Result<BTreeMap<RoutingKey, Vec<NextHop>>, String> {
    let stored: Vec<StoredRoute> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut set = RouteSet::new(0);
    for r in stored {
        let key = parse_routing_key(&r.key).ok_or_else(|| format!("bad key {:?}", r.key))?;
        let hops = r
            .next_hops
            .into_iter()
            .map(|h| {
                Ok(NextHop {
                    node: parse_node_id(&h.node).ok_or_else(|| format!("bad node {:?}", h.node))?,
                    addr: h.addr,
                    weight: h.weight,
                    rewrite: match &h.rewrite {
                        None => None,
                        Some(k) => {
                            Some(parse_routing_key(k).ok_or_else(|| format!("bad rewrite {k:?}"))?)
                        }
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        set.insert(key, hops).map_err(|e| e.to_string())?;
    }
    Ok(set.routes().clone())
}

/// The allowed sources of a generation: the members' data-plane IPs, the local services' IP
/// while there is one, the session socket's IP. An address the set refuses is left out with a
/// warning.
fn allowed_sources(
    member_sources: &BTreeSet<IpAddr>,
    has_local_services: bool,
    session: Option<SocketAddr>,
) -> SourceSet {
    let mut sources = SourceSet::new();
    let local_services = has_local_services.then_some(LOCAL_SERVICE_IP);
    for ip in member_sources
        .iter()
        .copied()
        .chain(local_services)
        .chain(session.map(|addr| addr.ip()))
    {
        if let Err(err) = sources.insert(ip) {
            tracing::warn!(%err, "allowed source left out");
        }
    }
    sources
}

impl TableCompiler {
    /// The table the routes and the live set call for.
    fn effective(state: &TableState) -> BTreeMap<RoutingKey, Vec<NextHop>> {
        let local = state.args.local.0;
        let mut table: BTreeMap<RoutingKey, Vec<NextHop>> = BTreeMap::new();
        for route in &state.intent_routes {
            let mut hops: Vec<NextHop> = Vec::new();
            for hop in &route.hops {
                let next = if hop.node.0 == local {
                    if hop.port == 0 {
                        continue;
                    }
                    NextHop {
                        node: local,
                        addr: SocketAddr::new(LOCAL_SERVICE_IP, hop.port),
                        weight: hop.weight.max(1),
                        rewrite: Some(RoutingKey(service_key(hop.node, &hop.service))),
                    }
                } else {
                    let Some(addr) = state.dataplanes.get(&hop.node.0) else {
                        continue; // Not alive, or runs no data plane.
                    };
                    NextHop {
                        node: hop.node.0,
                        addr: *addr,
                        weight: hop.weight.max(1),
                        rewrite: Some(RoutingKey(service_key(hop.node, &hop.service))),
                    }
                };
                if !hops.contains(&next) {
                    hops.push(next);
                }
            }
            hops.sort();
            hops.truncate(nexus_dataplane::fib::NEXT_HOPS_MAX);
            if !hops.is_empty() {
                table.insert(RoutingKey(route.key), hops);
            }
        }
        if state.args.session_endpoint.is_some() {
            // NexStream: a peer's session key goes to its data plane, which delivers the frame
            // to the peer's session socket.
            for (node, addr) in &state.dataplanes {
                if *node == local {
                    continue;
                }
                let key = RoutingKey(nexus_stream::link::session_key_of(node).0);
                table.entry(key).or_insert_with(|| {
                    vec![NextHop {
                        node: *node,
                        addr: *addr,
                        weight: 1,
                        rewrite: None,
                    }]
                });
            }
        }
        for (k, hops) in &state.routes {
            let live: Vec<NextHop> = hops
                .iter()
                .filter(|h| h.node == local || state.live_nodes.contains(&h.node))
                .copied()
                .collect();
            // A static route replaces an intent route with the same key, also when none of its
            // next hops is live (the operator's route is authoritative).
            table.remove(k);
            if !live.is_empty() {
                table.insert(*k, live);
            }
        }
        table
    }

    /// The addresses the data plane accepts frames from (see the module docs). An address the
    /// set refuses (unspecified, or past `SOURCES_MAX`) is left out with a warning: its frames
    /// are dropped, the rest of the table is installed.
    fn sources(state: &TableState) -> SourceSet {
        allowed_sources(
            &state.member_sources,
            !state.local_services.is_empty(),
            state.session_addr,
        )
    }

    /// The local-endpoint table for this node's registered services.
    fn local_endpoints(state: &TableState) -> LocalEndpoints {
        let mut endpoints = LocalEndpoints::new();
        for (id, port) in &state.local_services {
            let key = RoutingKey(service_key(state.args.local, id));
            // At most LOCAL_ENDPOINTS_MAX keys: the registry allows no more services than that.
            let _ = endpoints.insert(key, SocketAddr::new(LOCAL_SERVICE_IP, *port));
        }
        if let Some(addr) = state.session_addr {
            let key = RoutingKey(nexus_stream::link::session_key_of(&state.args.local.0).0);
            // One key more than the services: refused only when the table is full, and then the
            // sessions of this node are unreachable until a service is withdrawn.
            if endpoints.insert(key, addr).is_err() {
                tracing::warn!("local endpoint table full: the session socket is not reachable");
            }
        }
        endpoints
    }

    /// Compiles and installs the effective table and allowed sources if they differ from the
    /// installed ones.
    fn recompile(state: &mut TableState) -> Result<u64, TableError> {
        let effective = Self::effective(state);
        let sources = Self::sources(state);
        if state
            .installed
            .as_ref()
            .is_some_and(|installed| installed.routes == effective && installed.sources == sources)
        {
            return Ok(state.args.fib.generation());
        }
        let generation = state.args.fib.generation_max() + 1;
        let mut set = RouteSet::from_routes(generation, effective.clone())?;
        set.set_sources(sources.clone());
        let image = compile(&set).map_err(|e| TableError::Internal(e.to_string()))?;
        let table = FibTable::load(image).map_err(|e| TableError::Internal(e.to_string()))?;
        state
            .args
            .fib
            .install(table)
            .map_err(|e| TableError::Internal(e.to_string()))?;
        Self::publish(state, Some(set));
        tracing::info!(
            generation,
            routes = effective.len(),
            configured = state.routes.len(),
            sources = sources.len(),
            "forwarding table installed"
        );
        state.args.metrics.fib_generation.set(generation as i64);
        state.args.metrics.fib_routes.set(effective.len() as i64);
        state.installed = Some(Installed {
            routes: effective,
            sources,
        });
        Ok(generation)
    }

    /// Hands the installed generation to the hardware targets: `routes` when a new one was
    /// installed, else the last one published (the local endpoints changed).
    fn publish(state: &mut TableState, routes: Option<RouteSet>) {
        let Some(tx) = &state.args.generations else {
            return;
        };
        if let Some(routes) = routes {
            state.published = Some(routes);
        }
        let Some(routes) = state.published.clone() else {
            return; // Nothing installed yet: the first generation carries the endpoints.
        };
        let local = Self::local_endpoints(state);
        tx.send_replace(Some(Arc::new(TableGeneration { routes, local })));
    }

    /// Passes new local endpoints to the forwarder and the hardware targets.
    fn local_endpoints_changed(state: &mut TableState) {
        if let Some(tx) = &state.args.local_endpoints {
            tx.send_replace(Self::local_endpoints(state));
        }
        Self::publish(state, None);
    }

    fn persist(
        state: &TableState,
        routes: &BTreeMap<RoutingKey, Vec<NextHop>>,
    ) -> Result<(), TableError> {
        state
            .args
            .storage
            .put(ROUTES_KEY, &encode_routes(routes))
            .map_err(|e| TableError::Internal(e.to_string()))
    }

    /// Live members' node ids, the data-plane addresses of those that run one, and the
    /// data-plane IPs of the members that are alive or suspect.
    async fn live_members(state: &TableState) -> Option<Members> {
        let gossip: ActorRef<GossipMsg> =
            lookup_child(&state.supervisor, "gossip", MEMBERS_TIMEOUT).await?;
        match gossip.call(GossipMsg::Members, Some(MEMBERS_TIMEOUT)).await {
            Ok(CallResult::Success(members)) => {
                let sources = members
                    .iter()
                    .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                    .filter_map(|m| Some(m.id.meta().dataplane()?.ip()))
                    .collect();
                let alive: Vec<_> = members
                    .into_iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .collect();
                Some(Members {
                    live: alive.iter().map(|m| m.id.node_id().0).collect(),
                    dataplanes: alive
                        .iter()
                        .filter_map(|m| Some((m.id.node_id().0, m.id.meta().dataplane()?)))
                        .collect(),
                    sources,
                })
            }
            _ => None,
        }
    }

    /// Takes a member list read; returns whether anything the table depends on changed.
    fn set_members(state: &mut TableState, members: Members) -> bool {
        let changed = members.live != state.live_nodes
            || members.dataplanes != state.dataplanes
            || members.sources != state.member_sources;
        state.live_nodes = members.live;
        state.dataplanes = members.dataplanes;
        state.member_sources = members.sources;
        changed
    }
}

impl Actor for TableCompiler {
    type Msg = TableMsg;
    type State = TableState;
    type Arguments = (TableArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<TableMsg>,
        (args, supervisor): (TableArgs, ActorRef<SupervisorMsg>),
    ) -> Result<TableState, ActorProcessingErr> {
        let routes = match args.storage.get(ROUTES_KEY)? {
            None => BTreeMap::new(),
            Some(bytes) => decode_routes(&bytes)
                .map_err(|e| format!("stored static routes are corrupt: {e}"))?,
        };
        let refresh = myself.send_interval(args.refresh, || TableMsg::Refresh);
        let mut state = TableState {
            args,
            supervisor,
            routes,
            live_nodes: BTreeSet::new(),
            dataplanes: BTreeMap::new(),
            member_sources: BTreeSet::new(),
            intent_routes: Vec::new(),
            local_services: Vec::new(),
            session_addr: None,
            installed: None,
            published: None,
            _refresh: AbortOnDrop(refresh),
        };
        // The installed generation may be newer than what we would compile (an actor restart):
        // compare against nothing so the first refresh reinstalls from the stored routes.
        if let Some(members) = Self::live_members(&state).await {
            Self::set_members(&mut state, members);
        }
        Self::recompile(&mut state)?;
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TableMsg>,
        message: TableMsg,
        state: &mut TableState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TableMsg::PutRoute(key, hops, reply) => {
                let result = (|| {
                    // Validate through RouteSet (limits, weights, duplicates) before anything
                    // changes.
                    let mut check = RouteSet::new(0);
                    check.insert(key, hops.clone())?;
                    let mut next = state.routes.clone();
                    next.insert(key, check.get(key).map(<[NextHop]>::to_vec).unwrap_or(hops));
                    RouteSet::from_routes(0, next.clone())?;
                    Self::persist(state, &next)?;
                    state.routes = next;
                    Ok::<_, TableError>(())
                })();
                let result = match result {
                    Ok(()) => Self::recompile(state),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            TableMsg::DeleteRoute(key, reply) => {
                let result = if state.routes.contains_key(&key) {
                    let mut next = state.routes.clone();
                    next.remove(&key);
                    Self::persist(state, &next).map(|()| {
                        state.routes = next;
                        true
                    })
                } else {
                    Ok(false)
                };
                let result = match result {
                    Ok(true) => Self::recompile(state).map(|_| true),
                    other => other,
                };
                let _ = reply.send(result);
            }
            TableMsg::Routes(reply) => {
                let installed = state.installed.as_ref().map(|installed| &installed.routes);
                let list = state
                    .routes
                    .iter()
                    .map(|(k, hops)| RouteStatus {
                        key: *k,
                        next_hops: hops.clone(),
                        live: installed
                            .and_then(|routes| routes.get(k))
                            .map(Vec::len)
                            .unwrap_or(0),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            TableMsg::View(limit, reply) => {
                let table = state.args.fib.snapshot();
                let entries = table
                    .entries()
                    .take(limit)
                    .map(|e| (e.key, e.group.to_vec()))
                    .collect();
                let _ = reply.send(FibView {
                    generation: table.generation(),
                    previous_generation: state.args.fib.previous_generation(),
                    routes: table.len(),
                    entries,
                });
            }
            TableMsg::Rollback(reply) => {
                let result = state
                    .args
                    .fib
                    .rollback()
                    .map_err(|e| TableError::Rollback(e.to_string()));
                if let Ok(generation) = result {
                    tracing::warn!(generation, "forwarding table rolled back by an operator");
                    // The rolled-back table (routes and allowed sources) stays until the routes,
                    // the live set or the sources change.
                    let table = state.args.fib.snapshot();
                    let mut sources = SourceSet::new();
                    for source in table.sources() {
                        // The image's sources passed the same checks on load.
                        let _ = sources.insert(source.ip());
                    }
                    let routes: BTreeMap<RoutingKey, Vec<NextHop>> =
                        table.entries().map(|e| (e.key, e.group.to_vec())).collect();
                    // The rolled-back table was a valid route set when it was compiled.
                    match RouteSet::from_routes(generation, routes.clone()) {
                        Ok(mut set) => {
                            set.set_sources(sources.clone());
                            Self::publish(state, Some(set));
                        }
                        Err(err) => {
                            tracing::warn!(%err, "rolled-back table not handed to the targets");
                        }
                    }
                    state.installed = Some(Installed { routes, sources });
                    state.args.metrics.fib_generation.set(generation as i64);
                }
                let _ = reply.send(result);
            }
            TableMsg::Refresh => {
                let session_addr = state
                    .args
                    .session_endpoint
                    .as_ref()
                    .and_then(|rx| *rx.borrow());
                let mut changed = false;
                if session_addr != state.session_addr {
                    state.session_addr = session_addr;
                    Self::local_endpoints_changed(state);
                    changed = true;
                }
                if let Some(members) = Self::live_members(state).await {
                    changed |= Self::set_members(state, members);
                }
                if changed {
                    Self::recompile(state)?;
                }
            }
            TableMsg::Registry { routes, local } => {
                let mut changed = false;
                if local != state.local_services {
                    state.local_services = local;
                    Self::local_endpoints_changed(state);
                    // The loopback source comes and goes with the local services.
                    changed = true;
                }
                if routes != state.intent_routes {
                    state.intent_routes = routes;
                    changed = true;
                }
                if changed && let Err(err) = Self::recompile(state) {
                    // An intent route the table cannot hold (a limit) must not take the static
                    // routes down with it.
                    tracing::warn!(%err, "intent routes not installed");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_routes_round_trip_and_reject_garbage() {
        let mut routes = BTreeMap::new();
        routes.insert(
            RoutingKey(0xabcd),
            vec![NextHop {
                node: [7; 32],
                addr: "127.0.0.1:9".parse().expect("addr"),
                weight: 3,
                rewrite: None,
            }],
        );
        routes.insert(
            RoutingKey(0xef),
            vec![NextHop {
                node: [8; 32],
                addr: "127.0.0.1:10".parse().expect("addr"),
                weight: 1,
                rewrite: Some(RoutingKey(0x1234)),
            }],
        );
        let bytes = encode_routes(&routes);
        assert_eq!(decode_routes(&bytes), Ok(routes));
        assert!(decode_routes(b"{").is_err());
        assert!(decode_routes(b"[{\"key\":\"zz\",\"next_hops\":[]}]").is_err());
    }

    #[test]
    fn allowed_sources_are_members_local_services_and_the_session_socket() {
        let ip = |text: &str| -> IpAddr { text.parse().expect("ip") };
        let members: BTreeSet<IpAddr> = [ip("10.0.0.1"), ip("10.0.0.2"), ip("0.0.0.0")].into();
        let listed =
            |set: &SourceSet| -> Vec<String> { set.iter().map(|s| s.to_string()).collect() };

        let none = allowed_sources(&members, false, None);
        assert_eq!(
            listed(&none),
            ["10.0.0.1", "10.0.0.2"],
            "0.0.0.0 is left out"
        );
        let with_services = allowed_sources(&members, true, None);
        assert_eq!(
            listed(&with_services),
            ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
        );
        let with_session = allowed_sources(
            &members,
            false,
            Some("10.0.0.9:4000".parse().expect("addr")),
        );
        assert_eq!(listed(&with_session), ["10.0.0.1", "10.0.0.2", "10.0.0.9"]);
        assert!(allowed_sources(&BTreeSet::new(), false, None).is_empty());
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(
            parse_routing_key(&format!("{:032x}", 5u128)),
            Some(RoutingKey(5))
        );
        assert_eq!(parse_routing_key("5"), None);
        assert_eq!(parse_routing_key(&"g".repeat(32)), None);
        assert_eq!(parse_node_id(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_node_id(&"ab".repeat(31)), None);
        assert_eq!(routing_key_hex(RoutingKey(1)).len(), 32);
    }
}
