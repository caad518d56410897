//! Core mode's registry harness: what a node runs besides membership when the scenario has a
//! `[registry]` section — the gossip actor's overlay and the registry actor's core
//! ([`RegistryNode`], which owns its timers) — plus the run's registry ground truth, the
//! registry checkers and the report's registry summary. The SWIM engine (`mod.rs`) calls in at
//! node start, wake-up, membership events, timeline actions and samples.
//!
//! [`drain_registry`] is how a driver carries out the core's outputs, the registry actor's
//! drain in sans-IO form: the simulator's overlay is one [`RegistryHost`], a test's recorder
//! another (`sim/tests/registry_parity.rs` compares it with the actor).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_gossip::{
    Event, MemberView, Membership, Overlay, OverlayConfig, OverlayEvent, Timestamp,
};
use nexus_registry::{
    Intent, K_MAX, MemoryStore, NodeInput, NodeTimers, Output, RegistryNode, RegistryStore,
    Resolution, Sad, ServiceKey,
};

use super::{CoreSim, Ev, Own, SimNode};
use crate::engine::{derive_seed, node_addr};
use crate::invariants;
use crate::invariants::registry::{Entries, RegistryInvariant, RegistryTruth, RegistryWorld};
use crate::invariants::{Verdict, components};
use crate::report::{RegistrySummary, WithdrawTiming};
use crate::scenario::{RegistryAction, RegistryScenario, Scenario};
use crate::trace::TraceEvent;

/// Where a registry core's outputs go: the gossip layer, as the registry actor reaches it.
pub trait RegistryHost {
    /// Broadcast a signed advert through the overlay.
    fn broadcast(&mut self, bytes: Vec<u8>);
    /// Send an anti-entropy message to `to`.
    fn send_direct(&mut self, to: SocketAddr, bytes: Vec<u8>);
    /// Send an anti-entropy message to one random overlay neighbour.
    fn send_to_random_neighbor(&mut self, bytes: Vec<u8>);
    /// The member list (`None`: membership did not answer).
    fn members(&mut self) -> Option<Vec<MemberView>>;
}

/// What one [`drain_registry`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Outputs carried out.
    pub outputs: usize,
    /// Of them, broadcasts.
    pub broadcasts: u64,
    /// Whether the core asked for the member list (it does after every refresh).
    pub refreshed: bool,
}

/// Carries out everything `node` asks, in order, as the registry actor's drain does: sends go
/// to `host`, and the member list the core asks for is read from `host` and handed back at
/// once (answers to it are carried out in the same drain).
pub fn drain_registry<S: RegistryStore>(
    node: &mut RegistryNode<S>,
    now: Timestamp,
    host: &mut impl RegistryHost,
) -> Drained {
    let mut d = Drained::default();
    while let Some(output) = node.poll_output() {
        d.outputs += 1;
        match output {
            Output::Broadcast(bytes) => {
                d.broadcasts += 1;
                host.broadcast(bytes);
            }
            Output::Direct(to, bytes) => host.send_direct(to, bytes),
            Output::DirectToRandomNeighbor(bytes) => host.send_to_random_neighbor(bytes),
            Output::ReadMembers => {
                d.refreshed = true;
                if let Some(members) = host.members() {
                    node.on_members(now, &members);
                }
            }
        }
    }
    d
}

/// Runs the core's timers if they are due at `now` (what a wake-up at
/// [`RegistryNode::poll_timeout`] does); returns whether anything was due.
pub fn fire_registry_timers<S: RegistryStore>(node: &mut RegistryNode<S>, now: Timestamp) -> bool {
    if node.poll_timeout().is_some_and(|t| t <= now) {
        node.handle_timeout(now);
        return true;
    }
    false
}

/// The registry core's time on a node whose local clock reads `local_us`: whole milliseconds
/// of it. Core mode drives the registry at millisecond resolution (its leases, timer phases and
/// periods are whole milliseconds), so a run's trace does not depend on sub-millisecond jitter.
fn registry_now(local_us: u64) -> Timestamp {
    Timestamp::from_millis(local_us / 1000)
}

/// The gossip actor's side for one simulated node: its overlay and its membership core.
struct OverlayHost<'a> {
    overlay: &'a mut Overlay,
    membership: Option<&'a Membership>,
    at: Timestamp,
}

impl RegistryHost for OverlayHost<'_> {
    fn broadcast(&mut self, bytes: Vec<u8>) {
        let _ = self.overlay.broadcast(self.at, bytes);
    }

    fn send_direct(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        let _ = self.overlay.send_direct(to, bytes);
    }

    fn send_to_random_neighbor(&mut self, bytes: Vec<u8>) {
        if let Some(to) = self.overlay.random_peer() {
            let _ = self.overlay.send_direct(to, bytes);
        }
    }

    fn members(&mut self) -> Option<Vec<MemberView>> {
        self.membership.map(Membership::members)
    }
}

/// What a node runs besides membership when the scenario uses the registry: the gossip actor's
/// overlay and the registry actor's core (which owns its timers).
pub(super) struct RegNode {
    pub(super) overlay: Overlay,
    pub(super) node: RegistryNode<MemoryStore>,
    /// Whether the overlay has sent its join (to the first member seen up).
    pub(super) overlay_joined: bool,
}

/// A registered service's process: renews its registration every `ttl_s / 2` while `renew`.
#[derive(Clone, Debug)]
pub(super) struct Client {
    sad: Sad,
    renew: bool,
    due: u64,
}

/// Registry state of a run that isn't any one node's.
pub(super) struct RegSim<'s> {
    pub(super) cfg: &'s RegistryScenario,
    pub(super) keys: Vec<SigningKey>,
    /// Each node's durable registry storage (survives crashes).
    pub(super) stores: Vec<MemoryStore>,
    pub(super) clients: Vec<BTreeMap<String, Client>>,
    pub(super) truth: RegistryTruth,
    pub(super) checkers: Vec<Box<dyn RegistryInvariant>>,
    pub(super) intents: Vec<Intent>,
    /// Withdrawn/expired keys being watched until every holder dropped them: key →
    /// (index in `withdrawals`, remaining holders).
    pub(super) watch: BTreeMap<(usize, String), (usize, u64, BTreeSet<usize>)>,
    pub(super) summary: RegistrySummary,
    /// Last sample at which not every node's live set was right (for `converged_after_s`).
    pub(super) last_unconverged: Option<f64>,
}

impl<'s> RegSim<'s> {
    pub(super) fn new(cfg: &'s RegistryScenario, keys: Vec<SigningKey>, n: usize) -> Self {
        RegSim {
            cfg,
            keys,
            stores: vec![MemoryStore::default(); n],
            clients: vec![BTreeMap::new(); n],
            truth: RegistryTruth {
                local: vec![BTreeMap::new(); n],
                unhealthy_since: vec![Some(Duration::ZERO); n],
                comp: vec![usize::MAX; n],
                ..RegistryTruth::default()
            },
            checkers: invariants::registry::all(cfg),
            intents: cfg
                .tasks
                .iter()
                .map(|t| Intent {
                    k: K_MAX,
                    ..Intent::new(t.clone())
                })
                .collect(),
            watch: BTreeMap::new(),
            summary: RegistrySummary::default(),
            last_unconverged: None,
        }
    }
}

impl CoreSim<'_> {
    /// The registry checkers' verdicts (appended to `verdicts`) and the report's registry
    /// summary, at the end of a run.
    pub(super) fn registry_finish(
        &mut self,
        verdicts: &mut Vec<Verdict>,
    ) -> Option<RegistrySummary> {
        let mut reg = self.reg.take()?;
        let mut rc = std::mem::take(&mut reg.checkers);
        {
            let world = self.world();
            let rw = RegistryWorld {
                world: &world,
                registry: reg.cfg,
                truth: &reg.truth,
            };
            verdicts.extend(rc.iter_mut().map(|c| c.finish(&rw)));
        }
        let mut summary = std::mem::take(&mut reg.summary);
        summary.last_change_s = reg.truth.last_change.as_secs_f64();
        summary.converged_after_s = match reg.last_unconverged {
            None => Some(0.0),
            Some(t) => summary
                .curve
                .iter()
                .find(|(st, _)| *st > t)
                .map(|(st, _)| (st - summary.last_change_s).max(0.0)),
        };
        Some(summary)
    }

    /// Starts node `i`'s overlay and registry from its durable storage, as the gossip and
    /// registry actors do on a (re)start.
    pub(super) fn start_registry(&mut self, i: usize) {
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        let generation = self.truth[i].generation;
        let local = self.nodes[i].clock.local(self.now_us);
        let overlay = Overlay::new(
            node_addr(i),
            OverlayConfig::default(),
            derive_seed(self.seed, 3 + i as u64, generation).rotate_left(17),
        );
        let store = reg.stores[i].clone();
        let floor = store.version_floor;
        let stored = store.services.clone();
        let restored = stored.len();
        let mut node = match RegistryNode::new(
            registry_now(local),
            reg.keys[i].clone(),
            store,
            floor,
            stored,
        ) {
            Ok(node) => node,
            Err(e) => {
                self.wire.trace.record(
                    TraceEvent::Registry {
                        t_us: self.now_us,
                        node: i,
                        event: format!("start failed: {e}"),
                    },
                    None,
                );
                return;
            }
        };
        // The core's timers start with the registry actor, with the scenario's periods.
        node.start_timers(
            registry_now(local),
            NodeTimers {
                refresh: reg.cfg.refresh,
                anti_entropy: reg.cfg.anti_entropy,
            },
        );
        self.nodes[i].reg = Some(RegNode {
            overlay,
            node,
            overlay_joined: false,
        });
        reg.truth.unhealthy_since[i] = None;
        if restored > 0 {
            self.wire.trace.record(
                TraceEvent::Registry {
                    t_us: self.now_us,
                    node: i,
                    event: format!("restored {restored} services from storage"),
                },
                None,
            );
        }
        self.sync_truth(i);
    }

    /// The registry core's timers, if due (its outputs are carried out by the pump).
    pub(super) fn registry_timers(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let reg_now = registry_now(node.clock.local(self.now_us));
        if let Some(reg) = node.reg.as_mut() {
            fire_registry_timers(&mut reg.node, reg_now);
        }
    }

    /// Carries overlay events to the registry and registry outputs to the overlay, as the
    /// gossip and registry actors do through their mailboxes, until neither has anything left.
    pub(super) fn pump_registry(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let local = node.clock.local(self.now_us);
        let (at, reg_now) = (Timestamp::from_micros(local), registry_now(local));
        let SimNode { reg, core, .. } = node;
        let Some(reg) = reg.as_mut() else {
            return;
        };
        let mut total = Drained::default();
        let mut changed = false;
        loop {
            let mut inputs = 0usize;
            while let Some(event) = reg.overlay.poll_event() {
                inputs += 1;
                match event {
                    OverlayEvent::Delivered { payload, .. } => {
                        reg.node
                            .handle_input(reg_now, NodeInput::Delivered(payload));
                    }
                    OverlayEvent::Direct { from, payload } => {
                        reg.node
                            .handle_input(reg_now, NodeInput::Direct(from, payload));
                    }
                    OverlayEvent::NeighborUp(_) | OverlayEvent::NeighborDown(_) => inputs -= 1,
                }
            }
            if inputs > 0 {
                // As the registry actor after a burst of inputs.
                changed = true;
                reg.node.flush_trust(reg_now);
            }
            let mut host = OverlayHost {
                overlay: &mut reg.overlay,
                membership: core.as_ref(),
                at,
            };
            let drained = drain_registry(&mut reg.node, reg_now, &mut host);
            total.outputs += drained.outputs;
            total.broadcasts += drained.broadcasts;
            total.refreshed |= drained.refreshed;
            if inputs == 0 && drained.outputs == 0 {
                break;
            }
        }
        let _ = reg.node.take_report();
        if let Some(r) = self.reg.as_mut() {
            r.summary.adverts_broadcast += total.broadcasts;
        }
        if total.refreshed {
            self.sync_truth(i);
        }
        if changed || total.refreshed {
            self.watch_step(i);
        }
    }

    /// The gossip actor's wiring of membership events into the overlay and the registry.
    pub(super) fn registry_on_member_event(&mut self, i: usize, e: &Event) {
        let node = &mut self.nodes[i];
        let local = node.clock.local(self.now_us);
        let (at, reg_now) = (Timestamp::from_micros(local), registry_now(local));
        let Some(reg) = node.reg.as_mut() else {
            return;
        };
        match e {
            Event::ProbeRtt { peer, rtt } => {
                reg.node.handle_input(reg_now, NodeInput::Rtt(*peer, *rtt));
            }
            Event::MemberUp(id) => {
                reg.overlay.peer_up(at, id.addr());
                if !reg.overlay_joined {
                    reg.overlay.join(at, id.addr());
                    reg.overlay_joined = true;
                }
            }
            Event::MemberReplaced { old, new } => {
                reg.overlay.peer_down(at, old.addr());
                reg.overlay.peer_up(at, new.addr());
            }
            Event::MemberDown { id, .. } => {
                reg.overlay.peer_down(at, id.addr());
                reg.node
                    .handle_input(reg_now, NodeInput::MemberDown(id.node_id()));
                self.watch_step(i);
            }
            Event::Rejoined(_) => reg.node.handle_input(reg_now, NodeInput::Rejoined),
            Event::Joined | Event::Isolated => {}
        }
    }

    pub(super) fn registry_trace(&mut self, i: usize, event: String) {
        self.wire.trace.record(
            TraceEvent::Registry {
                t_us: self.now_us,
                node: i,
                event,
            },
            None,
        );
    }

    /// Brings the ground truth about node `i`'s registrations up to date after a step that may
    /// have changed them (register, update, withdraw, refresh, restart).
    pub(super) fn sync_truth(&mut self, i: usize) {
        let now = Duration::from_micros(self.now_us);
        let (Some(reg), Some(rn)) = (self.reg.as_mut(), self.nodes[i].reg.as_ref()) else {
            return;
        };
        let current: BTreeMap<String, u64> = rn
            .node
            .local_services()
            .iter()
            .map(|(id, s)| (id.clone(), s.sad.version))
            .collect();
        let previous = std::mem::take(&mut reg.truth.local[i]);
        let grace = reg.cfg.converge_within;
        let mut gone_now = Vec::new();
        for (id, v) in &current {
            let h = reg.truth.keys.entry((i, id.clone())).or_default();
            if previous.get(id) != Some(v) {
                h.versions.push((now, *v));
                h.prune(now.saturating_sub(grace));
            }
            if !previous.contains_key(id) {
                h.changed_at = now;
                h.gone = None;
                reg.watch.remove(&(i, id.clone()));
            }
        }
        for (id, v) in &previous {
            if !current.contains_key(id) {
                let h = reg.truth.keys.entry((i, id.clone())).or_default();
                h.changed_at = now;
                h.gone = Some((now, *v));
                gone_now.push((id.clone(), *v));
            }
        }
        reg.truth.local[i] = current;
        for (id, v) in gone_now {
            self.start_watch(i, id, v);
        }
    }

    /// Whether node `j` holds `(origin, id)` live (at a version ≤ `max`).
    pub(super) fn holds(&self, j: usize, origin: usize, id: &str, max: u64) -> bool {
        self.nodes[j].reg.as_ref().is_some_and(|r| {
            r.node
                .registry()
                .get(&ServiceKey::new(self.truth[origin].node_id, id))
                .is_some_and(|e| e.version() <= max)
        })
    }

    /// Starts timing how long withdrawn key `(origin, id)` (at version ≤ `v`) lives on elsewhere.
    pub(super) fn start_watch(&mut self, origin: usize, id: String, v: u64) {
        let holders: BTreeSet<usize> = (0..self.nodes.len())
            .filter(|&j| j != origin && self.truth[j].healthy() && self.holds(j, origin, &id, v))
            .collect();
        let now_s = self.now_us as f64 / 1e6;
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        let index = reg.summary.withdrawals.len();
        reg.summary.withdrawals.push(WithdrawTiming {
            node: Scenario::node_name(origin),
            service: id.clone(),
            at_s: now_s,
            holders: holders.len(),
            gone_after_s: holders.is_empty().then_some(0.0),
        });
        if !holders.is_empty() {
            reg.watch.insert((origin, id), (index, v, holders));
        }
    }

    /// After a registry step on node `j`: has it dropped a watched withdrawn key?
    pub(super) fn watch_step(&mut self, j: usize) {
        let pending: Vec<((usize, String), u64)> = match self.reg.as_ref() {
            Some(reg) if !reg.watch.is_empty() => reg
                .watch
                .iter()
                .filter(|(_, (_, _, holders))| holders.contains(&j))
                .map(|(k, (_, v, _))| (k.clone(), *v))
                .collect(),
            _ => return,
        };
        let dropped: Vec<(usize, String)> = pending
            .into_iter()
            .filter(|((o, id), v)| !self.holds(j, *o, id, *v))
            .map(|(k, _)| k)
            .collect();
        self.watch_drop(j, dropped);
    }

    /// A node crashed or paused: it no longer holds anything a watch waits for.
    pub(super) fn watch_forget(&mut self, j: usize) {
        let keys: Vec<(usize, String)> = match self.reg.as_ref() {
            Some(reg) => reg
                .watch
                .iter()
                .filter(|(_, (_, _, holders))| holders.contains(&j))
                .map(|(k, _)| k.clone())
                .collect(),
            None => return,
        };
        self.watch_drop(j, keys);
    }

    pub(super) fn watch_drop(&mut self, j: usize, keys: Vec<(usize, String)>) {
        let now_s = self.now_us as f64 / 1e6;
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        for key in keys {
            let finished = match reg.watch.get_mut(&key) {
                Some((index, _, holders)) => {
                    holders.remove(&j);
                    holders.is_empty().then_some(*index)
                }
                None => None,
            };
            if let Some(index) = finished {
                let w = &mut reg.summary.withdrawals[index];
                w.gone_after_s = Some(now_s - w.at_s);
                reg.watch.remove(&key);
            }
        }
    }

    /// After a timeline action: health, components and the time of the last change.
    pub(super) fn registry_after_action(&mut self, counts_as_change: bool) {
        if self.reg.is_none() {
            return;
        }
        let now = Duration::from_micros(self.now_us);
        let comp = components(&self.truth, &self.wire.net);
        let Some(reg) = self.reg.as_mut() else {
            return;
        };
        if counts_as_change {
            reg.truth.last_change = now;
        }
        for (i, t) in self.truth.iter().enumerate() {
            match (t.healthy(), reg.truth.unhealthy_since[i]) {
                (true, Some(_)) => reg.truth.unhealthy_since[i] = None,
                (false, None) => reg.truth.unhealthy_since[i] = Some(now),
                _ => {}
            }
        }
        if !self.wire.net.any_cut() {
            reg.truth.split_since.clear();
        } else {
            let n = comp.len();
            let mut split = BTreeMap::new();
            for a in 0..n {
                if comp[a] == usize::MAX {
                    continue;
                }
                for b in a + 1..n {
                    if comp[b] != usize::MAX && comp[a] != comp[b] {
                        let since = reg.truth.split_since.get(&(a, b)).copied().unwrap_or(now);
                        split.insert((a, b), since);
                    }
                }
            }
            reg.truth.split_since = split;
        }
        reg.truth.comp = comp;
    }

    /// Runs registry timeline entry `k` on each of its nodes.
    pub(super) fn reg_act(&mut self, k: usize) {
        let Some(cfg) = self.reg.as_ref().map(|r| r.cfg) else {
            return;
        };
        let action = cfg.actions[k].action.clone();
        self.wire.trace.record(
            TraceEvent::Action {
                t_us: self.now_us,
                action: action.describe(),
            },
            None,
        );
        if !matches!(action, RegistryAction::Resolve { .. }) {
            self.registry_after_action(true);
        }
        match action {
            RegistryAction::Register { nodes, sad, renew } => {
                for i in nodes {
                    let due = self.now_us + u64::from(sad.ttl_s) * 500_000;
                    if let Some(reg) = self.reg.as_mut() {
                        reg.clients[i].insert(
                            sad.id.clone(),
                            Client {
                                sad: (*sad).clone(),
                                renew,
                                due,
                            },
                        );
                    }
                    if renew {
                        self.wire.queue.push(
                            due,
                            Ev::Own(Own::Renew {
                                node: i,
                                id: sad.id.clone(),
                                due,
                            }),
                        );
                    }
                    self.register_on(i, (*sad).clone(), "register");
                }
            }
            RegistryAction::UpdateLoad { nodes, id, update } => {
                for i in nodes {
                    let local = self.nodes[i].clock.local(self.now_us);
                    let text = match self.running_registry(i) {
                        None => format!("update_load {id}: node not running"),
                        Some(reg) => match reg.node.patch_load(registry_now(local), &id, &update) {
                            Ok(s) => format!("update_load {id} v{}", s.sad.version),
                            Err(e) => format!("update_load {id} refused: {e}"),
                        },
                    };
                    self.registry_trace(i, text);
                    self.sync_truth(i);
                    self.after_step(i);
                }
            }
            RegistryAction::Withdraw { nodes, id } => {
                for i in nodes {
                    if let Some(reg) = self.reg.as_mut() {
                        reg.clients[i].remove(&id);
                    }
                    let local = self.nodes[i].clock.local(self.now_us);
                    let text = match self.running_registry(i) {
                        None => format!("withdraw {id}: node not running"),
                        Some(reg) => match reg.node.deregister(registry_now(local), &id) {
                            Ok(()) => format!("withdraw {id}"),
                            Err(e) => format!("withdraw {id} refused: {e}"),
                        },
                    };
                    self.registry_trace(i, text);
                    self.sync_truth(i);
                    self.after_step(i);
                }
            }
            RegistryAction::Resolve { nodes, intent } => {
                for i in nodes {
                    let local = self.nodes[i].clock.local(self.now_us);
                    let resolution = match self.running_registry(i) {
                        None => {
                            self.registry_trace(
                                i,
                                format!("resolve {}: node not running", intent.task),
                            );
                            continue;
                        }
                        Some(reg) => reg.node.resolve(registry_now(local), &intent),
                    };
                    let candidates = self.candidates(&resolution);
                    let text = format!(
                        "resolve {} -> [{}]",
                        intent.task,
                        candidates
                            .iter()
                            .map(|(o, id, v)| format!("n{}/{id} v{v}", o + 1))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.registry_trace(i, text);
                    self.registry_check_resolve(i, &intent.task, &candidates, true);
                    self.after_step(i);
                }
            }
        }
    }

    /// Node `i`'s registry if the node is running and not paused.
    pub(super) fn running_registry(&mut self, i: usize) -> Option<&mut RegNode> {
        if self.truth[i].paused {
            return None;
        }
        self.nodes[i].reg.as_mut()
    }

    pub(super) fn register_on(&mut self, i: usize, sad: Sad, what: &str) {
        let local = self.nodes[i].clock.local(self.now_us);
        let id = sad.id.clone();
        let text = match self.running_registry(i) {
            None => format!("{what} {id}: node not running"),
            Some(reg) => match reg.node.register(registry_now(local), sad) {
                Ok(_) => format!(
                    "{what} {id} v{}",
                    reg.node
                        .local_services()
                        .get(&id)
                        .map_or(0, |s| s.sad.version)
                ),
                Err(e) => format!("{what} {id} refused: {e}"),
            },
        };
        self.registry_trace(i, text);
        self.sync_truth(i);
        self.after_step(i);
    }

    /// A service process renews its registration (with the descriptor the node holds now, so
    /// load updates stick).
    pub(super) fn renew(&mut self, i: usize, id: String, due: u64) {
        let Some(client) = self
            .reg
            .as_ref()
            .and_then(|r| r.clients[i].get(&id))
            .filter(|c| c.due == due && c.renew)
            .cloned()
        else {
            return;
        };
        let next = due + u64::from(client.sad.ttl_s) * 500_000;
        if let Some(c) = self.reg.as_mut().and_then(|r| r.clients[i].get_mut(&id)) {
            c.due = next;
        }
        self.wire.queue.push(
            next,
            Ev::Own(Own::Renew {
                node: i,
                id: id.clone(),
                due: next,
            }),
        );
        let sad = self.nodes[i]
            .reg
            .as_ref()
            .and_then(|r| r.node.local_services().get(&id).map(|s| s.sad.clone()))
            .unwrap_or(client.sad);
        self.register_on(i, sad, "renew");
    }

    pub(super) fn candidates(&self, r: &Resolution) -> Vec<(usize, String, u64)> {
        r.candidates
            .iter()
            .map(|c| {
                (
                    self.ids.get(&c.node).unwrap_or(usize::MAX),
                    c.service.clone(),
                    c.sad.version,
                )
            })
            .collect()
    }

    pub(super) fn registry_check_resolve(
        &mut self,
        i: usize,
        task: &str,
        candidates: &[(usize, String, u64)],
        scripted: bool,
    ) {
        let Some(mut reg) = self.reg.take() else {
            return;
        };
        reg.summary.resolves += 1;
        let mut checkers = std::mem::take(&mut reg.checkers);
        {
            let world = self.world();
            let rw = RegistryWorld {
                world: &world,
                registry: reg.cfg,
                truth: &reg.truth,
            };
            for c in &mut checkers {
                c.on_resolve(&rw, i, task, candidates, scripted);
            }
        }
        reg.checkers = checkers;
        self.reg = Some(reg);
    }

    /// The registry part of a sample: every healthy node's live entries, and (if enabled) a
    /// resolve of every task tag in use on each.
    pub(super) fn registry_sample(&mut self) {
        let Some(mut reg) = self.reg.take() else {
            return;
        };
        let now = Duration::from_micros(self.now_us);
        let mut checkers = std::mem::take(&mut reg.checkers);
        let mut right = 0usize;
        let mut healthy = 0usize;
        let mut resolves = 0u64;
        {
            let world = self.world();
            let rw = RegistryWorld {
                world: &world,
                registry: reg.cfg,
                truth: &reg.truth,
            };
            for c in &mut checkers {
                c.begin_sample(&rw);
            }
            for (j, node) in self.nodes.iter().enumerate() {
                let Some(rn) = node.reg.as_ref().filter(|_| self.truth[j].healthy()) else {
                    continue;
                };
                healthy += 1;
                let entries: Entries = rn
                    .node
                    .registry()
                    .iter()
                    .filter_map(|(k, e)| {
                        self.ids
                            .get(&k.node)
                            .map(|o| ((o, k.service.clone()), e.version()))
                    })
                    .collect();
                for c in &mut checkers {
                    c.on_node(&rw, j, &entries);
                }
                let expected = reg.truth.expected(now, Duration::ZERO, j);
                if expected.len() == entries.len()
                    && expected.keys().all(|k| entries.contains_key(k))
                {
                    right += 1;
                }
                if reg.cfg.sample_resolves {
                    let local = node.clock.local(self.now_us);
                    for intent in &reg.intents {
                        let r = rn.node.resolve_untracked(registry_now(local), intent);
                        let candidates = self.candidates(&r);
                        resolves += 1;
                        for c in &mut checkers {
                            c.on_resolve(&rw, j, &intent.task, &candidates, false);
                        }
                    }
                }
            }
            for c in &mut checkers {
                c.end_sample(&rw);
            }
        }
        reg.checkers = checkers;
        reg.summary.resolves += resolves;
        let t_s = now.as_secs_f64();
        let fraction = if healthy == 0 {
            1.0
        } else {
            right as f64 / healthy as f64
        };
        if right < healthy {
            reg.last_unconverged = Some(t_s);
        }
        reg.summary.curve.push((t_s, fraction));
        self.reg = Some(reg);
    }
}
