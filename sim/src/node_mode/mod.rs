//! Node mode: every simulated node runs the real node composition — a [`NodeSupervisor`] with a
//! [`GossipActor`] child, the actor code `nexus node run` uses — inside a
//! [turmoil](https://docs.rs/turmoil) host. The environment is swapped: tokio's clock is the
//! host's simulated one, the gossip socket is a turmoil UDP socket ([`SimSocket`]), durable
//! storage is a [`MemoryStorage`] the simulator keeps across crashes, and every seed (node keys,
//! actor RNGs, turmoil's RNG, the sockets' impairments) derives from the run's seed.
//!
//! # How a run goes
//!
//! turmoil advances in fixed ticks ([`Options::tick`]): each step moves datagrams along the
//! links, then runs every host's tokio runtime for one tick (timers inside a tick fire at their
//! exact instants). Between steps the driver applies the timeline actions due and, every
//! `sample_every`, asks each healthy node's gossip actor for its member list
//! (`GossipMsg::Members`). Those lists feed the invariant checkers, and the difference between a
//! node's list and its previous one becomes the membership events the checkers and the trace get
//! (see `observe`).
//!
//! # How the scenario maps onto turmoil
//!
//! | scenario | node mode |
//! | --- | --- |
//! | topology latency | the link's fixed latency (`Sim::set_link_latency`; a mesh sets turmoil's global minimum = maximum) |
//! | `network.jitter`, `jitter_distribution` | [`SimSocket`] holds each datagram back by a delay drawn as core mode draws it (turmoil's own jitter is one exponential shape, in whole milliseconds) |
//! | `network.loss`, `loss` actions | dropped by [`SimSocket`], per sender as in core mode (turmoil's `fail_rate` cuts whole links for a while, loses what is in flight on them and would undo one-way partitions) |
//! | `network.duplicate` | [`SimSocket`] sends the datagram twice, each copy with its own delay |
//! | `network.reorder` | [`SimSocket`] holds the datagram back for up to 10 × jitter + 1 ms more, as core mode does |
//! | `network.bandwidth_kbps` | rejected: turmoil's links have no bandwidth |
//! | `partition` (groups or one-way), `heal` | `Sim::partition` / `partition_oneway` / `repair` |
//! | `kill`, `restart` | `Sim::crash` (the runtime and every actor are dropped; the storage survives), `Sim::bounce` |
//! | `pause`, `resume` | `Sim::hold` / `release` on every link of the node: a network stall — its datagrams both ways wait and arrive on resume — but its timers keep running, unlike core mode's stopped process |
//! | `skew` | rejected: turmoil runs every host's clock at the same rate |
//!
//! [`SimSocket`]'s random draws come from a per-node RNG seeded from the run's seed and the
//! node's boot count; its hold-backs are tokio sleeps, so they count whole milliseconds.
//! Delivery is quantised to ticks: a datagram handed to turmoil during one tick with latency `d`
//! reaches its receiver at the start of a later tick, `ceil(d / tick)` ticks after the one it was
//! sent in, so latencies below the tick are not told apart. The default tick
//! ([`Options::for_scenario`]) is `gossip.probe_rtt / 20` within 1..=20 ms: fine enough that a
//! probe's round trip stays under a tenth of its deadline, coarse enough to run 100 nodes at
//! over 10× real time. Timeline actions and samples happen at the first tick boundary at or
//! after their time.
//!
//! # Cost
//!
//! turmoil keeps a link per pair of hosts and, on every tick, visits every link for every host,
//! so a tick costs O(nodes³) on top of one tokio runtime tick per host; the actors themselves are
//! a small share. Measured (release build, 2 vCPU, steady 1 ms mesh with 0.5 ms jitter, 30 s
//! virtual, default 20 ms tick): 10 nodes 890× real time (8 MiB peak RSS), 100 nodes 12×
//! (32 MiB), 200 nodes 1.7× (87 MiB); 1,000 nodes 0.005× — 3.6 s of wall time per tick — and
//! 507 MiB. With a 1 ms tick: 10 nodes 47×, 100 nodes 0.8×.
//!
//! # What is traced
//!
//! Deliveries (recorded when the receiving actor's socket returns the datagram), drops the
//! simulator can see (loss, partition — turmoil drops it, the socket records it — and datagrams
//! addressed to a crashed host), membership events (at sample time), timeline actions and
//! violations. Not seen: datagrams in flight when a link is cut or a host crashes, and datagrams
//! beyond a receiver's queue of [`UDP_QUEUE_MAX`].

mod links;
mod observe;
mod socket;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nexus_actors::env::{MemoryStorage, Storage};
use nexus_actors::{
    ChildSpec, GossipActor, GossipArgs, GossipMsg, NodeKey, NodeMetrics, NodeSupervisor,
    RestartPolicy, SupervisorArgs, SupervisorMsg,
};
use nexus_gossip::{Event, MemberMeta, MemberView, MembershipConfig, NodeId};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{Notify, watch};

use crate::engine::{NetStats, PAUSED_INBOX_MAX, Progress, derive_seed, finish_run, wall_clock};
use crate::invariants::{self, Invariant, Truth, World};
use crate::net::Net;
use crate::report::{RunReport, Sample};
use crate::scenario::{Action, Scenario, ScenarioError, Topology};
use crate::trace::{Trace, TraceEvent};

use links::Links;
use socket::{Impairments, Shared, lock, node_host};
pub use socket::{SimSocket, node_addr, node_index};

/// The finest tick: tokio's timers count whole milliseconds, so a shorter tick would let a
/// host's clock run ahead of the simulation's.
pub const TICK_MIN: Duration = Duration::from_millis(1);
/// The coarsest default tick.
pub const TICK_DEFAULT_MAX: Duration = Duration::from_millis(20);
/// Longest tick [`run_with`] accepts.
pub const TICK_MAX: Duration = Duration::from_millis(1_000);
/// Nodes a node-mode scenario may have. turmoil keeps a link per pair of hosts and visits every
/// link for every host on every tick, so a step costs O(nodes³).
pub const NODES_MAX: usize = 1_000;
/// Datagrams waiting in a node's socket queue; later ones are dropped (as core mode's paused
/// inbox).
pub const UDP_QUEUE_MAX: usize = PAUSED_INBOX_MAX;
/// Wall-clock instant turmoil's simulated clock starts at (2024-01-01T00:00:00Z): fixed, so
/// nothing depends on when the run happens.
const EPOCH_UNIX_S: u64 = 1_704_067_200;
/// Marks the sockets' seed stream of a node apart from its gossip stream.
const SOCKET_STREAM: u64 = 1 << 48;

/// Checks that node mode can run `scenario`; every error names the field it cannot map.
pub fn check(scenario: &Scenario) -> Result<(), ScenarioError> {
    let err = |field: String, message: String| Err(ScenarioError { field, message });
    if scenario.nodes > NODES_MAX {
        return err(
            "nodes".into(),
            format!(
                "node mode runs at most {NODES_MAX} nodes (turmoil's network costs O(nodes³) per \
                 tick); use mode = \"core\" for more"
            ),
        );
    }
    if scenario.network.bandwidth_kbps > 0 {
        return err(
            "network.bandwidth_kbps".into(),
            "not supported in node mode: turmoil's links have no bandwidth limit; remove it or \
             use mode = \"core\""
                .into(),
        );
    }
    if let Topology::Wan { one_way, .. } = &scenario.topology {
        for (r, row) in one_way.iter().enumerate() {
            for (s, d) in row.iter().enumerate() {
                if *d != one_way[s][r] {
                    return err(
                        "topology.rtt_ms".into(),
                        format!(
                            "node mode needs a symmetric matrix (turmoil links have one latency \
                             for both directions); rtt_ms[{r}][{s}] differs from rtt_ms[{s}][{r}]"
                        ),
                    );
                }
            }
        }
    }
    for t in &scenario.timeline {
        if let Action::Skew { .. } = t.action {
            return err(
                format!("timeline[{}].action", t.index),
                format!(
                    "skew (at {:?}) is not supported in node mode: turmoil runs every host's \
                     clock at the same rate; use mode = \"core\"",
                    t.at
                ),
            );
        }
    }
    Ok(())
}

/// Settings of a node-mode run that scenario files do not carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// turmoil's step: datagrams move, actions apply and samples are taken once per tick. Whole
    /// milliseconds, [`TICK_MIN`]..=[`TICK_MAX`].
    pub tick: Duration,
}

impl Options {
    /// The scenario's `[node] tick`, else a tick of `gossip.probe_rtt / 20`, rounded down to
    /// whole milliseconds, within [`TICK_MIN`]..=[`TICK_DEFAULT_MAX`].
    pub fn for_scenario(scenario: &Scenario) -> Self {
        if let Some(tick) = scenario.node_tick {
            return Options { tick };
        }
        let ms = (scenario.gossip.probe_rtt / 20).as_millis();
        let tick = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            .clamp(TICK_MIN, TICK_DEFAULT_MAX);
        Options { tick }
    }

    fn check(&self) -> Result<(), ScenarioError> {
        if self.tick < TICK_MIN
            || self.tick > TICK_MAX
            || !self.tick.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(ScenarioError {
                field: "node.tick".into(),
                message: format!(
                    "{:?}: must be whole milliseconds within {TICK_MIN:?}..={TICK_MAX:?}",
                    self.tick
                ),
            });
        }
        Ok(())
    }
}

/// Runs `scenario` with `seed` in node mode with the default [`Options`]. Fails only if the
/// scenario uses something node mode cannot map ([`check`]); invariant failures are in the
/// report.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    trace: Trace,
    progress: Option<Progress<'_>>,
) -> Result<RunReport, ScenarioError> {
    run_with(
        scenario,
        seed,
        trace,
        progress,
        Options::for_scenario(scenario),
    )
}

/// [`run`] with explicit options.
pub fn run_with(
    scenario: &Scenario,
    seed: u64,
    trace: Trace,
    progress: Option<Progress<'_>>,
    options: Options,
) -> Result<RunReport, ScenarioError> {
    check(scenario)?;
    options.check()?;
    Ok(NodeSim::new(scenario, seed, trace, options).run(progress))
}

/// The secret key of node `i` in a run with `seed`; the same for every run and restart.
pub fn node_key(seed: u64, i: usize) -> NodeKey {
    let mut secret = [0u8; 32];
    StdRng::seed_from_u64(derive_seed(seed, 1, i as u64)).fill_bytes(&mut secret);
    NodeKey::from_secret(secret)
}

/// What the driver and one node's host share (same thread; the host future is `!Send`).
#[derive(Debug, Default)]
struct Slot {
    /// Wakes the host's sampler.
    notify: Notify,
    /// The sample the driver asked for.
    requested: Cell<u64>,
    /// The sampler's answer: (sample, member list if the gossip actor answered).
    view: RefCell<Option<(u64, Option<Vec<MemberView>>)>>,
    /// Starts of the host's software (1 after the first start).
    boots: Cell<u64>,
    /// The supervisor stopped (restart intensity exceeded) and the node's software ended.
    exited: Cell<bool>,
}

/// Everything a node's host software needs; cloned for every (re)start.
#[derive(Clone, Debug)]
struct NodeCtx {
    index: usize,
    node_id: NodeId,
    seeds: Vec<SocketAddr>,
    config: MembershipConfig,
    /// The node's "disk": outlives crashes because this context (kept by the host's factory)
    /// holds it.
    storage: Arc<MemoryStorage>,
    shared: Arc<Mutex<Shared>>,
    slot: Rc<Slot>,
    gossip_seed: u64,
    socket_seed: u64,
    impairments: Impairments,
}

/// The node's software: the production actor tree on a simulated socket, plus a sampler that
/// answers the driver's requests for the member list.
async fn node_main(ctx: NodeCtx) -> turmoil::Result {
    let slot = ctx.slot.clone();
    let boot = slot.boots.get() + 1;
    slot.boots.set(boot);
    slot.exited.set(false);
    let socket = SimSocket::bind(
        ctx.index,
        ctx.shared.clone(),
        derive_seed(ctx.socket_seed, boot, 0),
        ctx.impairments,
    )
    .await?;
    let metrics = NodeMetrics::new();
    let meta =
        MemberMeta::new(Scenario::node_name(ctx.index), None, "sim", vec![]).unwrap_or_default();
    let storage: Arc<dyn Storage> = ctx.storage.clone();
    let gossip = GossipArgs {
        socket: Arc::new(socket),
        advertise: node_addr(ctx.index),
        node_id: ctx.node_id,
        meta,
        config: ctx.config.clone(),
        seeds: ctx.seeds.clone(),
        storage,
        metrics: metrics.clone(),
        epoch: tokio::time::Instant::now(),
        rng_seed: ctx.gossip_seed,
        overlay: nexus_gossip::OverlayConfig::default(),
        registry: None,
        trust: None,
        security: nexus_actors::GossipSecurity::plaintext(),
    };
    let (exit, _) = watch::channel(None);
    let spawned = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children: vec![ChildSpec::new("gossip", move |_| {
                (GossipActor::<SimSocket>::default(), gossip.clone())
            })],
            policy: RestartPolicy::default(),
            metrics,
            exit,
        },
    )
    .await;
    if let Ok((supervisor, mut handle)) = spawned {
        loop {
            tokio::select! {
                biased;
                _ = &mut handle => break,
                () = slot.notify.notified() => {
                    let sample = slot.requested.get();
                    let view = members(&supervisor).await;
                    *slot.view.borrow_mut() = Some((sample, view));
                }
            }
        }
    }
    slot.exited.set(true);
    Ok(())
}

/// The gossip actor's member list, or `None` while it is not running.
async fn members(supervisor: &ActorRef<SupervisorMsg>) -> Option<Vec<MemberView>> {
    let lookup = supervisor
        .call(|r| SupervisorMsg::Lookup("gossip".into(), r), None)
        .await;
    let Ok(CallResult::Success(Some(cell))) = lookup else {
        return None;
    };
    let gossip: ActorRef<GossipMsg> = cell.into();
    match gossip.call(GossipMsg::Members, None).await {
        Ok(CallResult::Success(view)) => Some(view),
        _ => None,
    }
}

/// A node-mode simulation of one scenario with one seed.
struct NodeSim<'s> {
    scenario: &'s Scenario,
    seed: u64,
    tick: Duration,
    sim: turmoil::Sim<'static>,
    slots: Vec<Rc<Slot>>,
    shared: Arc<Mutex<Shared>>,
    truth: Vec<Truth>,
    ids: crate::invariants::NodeIds,
    links: Links,
    checkers: Vec<Box<dyn Invariant>>,
    samples: Vec<Sample>,
    /// Each node's member list at its last sample (empty after a (re)start).
    prev: Vec<Vec<MemberView>>,
    sample_seq: u64,
    now_us: u64,
}

impl<'s> NodeSim<'s> {
    fn new(scenario: &'s Scenario, seed: u64, trace: Trace, options: Options) -> Self {
        let n = scenario.nodes;
        let latency = match &scenario.topology {
            Topology::Mesh { latency } => *latency,
            // Set per link below.
            _ => Duration::ZERO,
        };
        let mut sim = turmoil::Builder::new()
            .rng_seed(derive_seed(seed, 2, 0))
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
            .tick_duration(options.tick)
            .simulation_duration(scenario.duration + scenario.sample_every + options.tick)
            .min_message_latency(latency)
            .max_message_latency(latency)
            .udp_capacity(UDP_QUEUE_MAX)
            .build();
        let shared = Arc::new(Mutex::new(Shared {
            trace,
            stats: NetStats::default(),
            net: Net::for_scenario(scenario, seed),
            up: vec![true; n],
        }));
        let impairments = Impairments {
            jitter: scenario.network.jitter,
            distribution: scenario.network.jitter_distribution,
            duplicate: scenario.network.duplicate,
            reorder: scenario.network.reorder,
        };
        let seeds: Vec<SocketAddr> = scenario.seeds.iter().map(|&s| node_addr(s)).collect();
        let mut slots = Vec::with_capacity(n);
        let mut truth = Vec::with_capacity(n);
        let mut ids = crate::invariants::NodeIds::default();
        for i in 0..n {
            let node_id = node_key(seed, i).node_id();
            ids.insert(node_id, i);
            truth.push(Truth {
                up: true,
                ..Truth::new(node_id)
            });
            let slot = Rc::new(Slot::default());
            slots.push(slot.clone());
            let ctx = NodeCtx {
                index: i,
                node_id,
                seeds: seeds.clone(),
                config: scenario.gossip.clone(),
                storage: Arc::new(MemoryStorage::default()),
                shared: shared.clone(),
                slot,
                // Node i's streams: its gossip actor's (which mixes in the generation itself,
                // as core mode's cores do) and its sockets', one per boot.
                gossip_seed: derive_seed(seed, 3 + i as u64, 0),
                socket_seed: derive_seed(seed, 3 + i as u64, SOCKET_STREAM),
                impairments,
            };
            sim.host(node_host(i), move || node_main(ctx.clone()));
        }
        if !matches!(scenario.topology, Topology::Mesh { .. }) {
            for a in 0..n {
                for b in a + 1..n {
                    let latency = scenario.topology.latency(a, b);
                    sim.set_link_latency(node_host(a), node_host(b), latency);
                }
            }
        }
        NodeSim {
            scenario,
            seed,
            tick: options.tick,
            sim,
            slots,
            shared,
            truth,
            ids,
            links: Links::default(),
            checkers: invariants::all(),
            samples: Vec::new(),
            prev: vec![Vec::new(); n],
            sample_seq: 0,
            now_us: 0,
        }
    }

    fn run(mut self, progress: Option<Progress<'_>>) -> RunReport {
        let wall = wall_clock();
        let scenario = self.scenario;
        let end_us = duration_us(scenario.duration);
        let tick_us = duration_us(self.tick);
        let sample_us = duration_us(scenario.sample_every).max(tick_us);
        let mut next_action = 0;
        let mut next_sample = 0;
        let mut progress = progress;
        let progress_step_us = (end_us / 100).max(1);
        let mut next_progress = progress_step_us;
        loop {
            let now = self.now_us;
            while let Some(t) = scenario.timeline.get(next_action)
                && duration_us(t.at) <= now
            {
                self.act(next_action);
                next_action += 1;
            }
            let last = now >= end_us;
            let sampling = last || now >= next_sample;
            if sampling {
                self.request_samples();
            }
            if let Err(e) = self.sim.step() {
                // Host software never fails on its own (it ends Ok when its node stops), so an
                // error here is a simulator bug.
                panic!("turmoil step at {now}us failed: {e}");
            }
            if sampling {
                self.collect();
                while next_sample <= now {
                    next_sample += sample_us;
                }
            }
            if last {
                break;
            }
            if now >= next_progress {
                if let Some(p) = progress.as_mut() {
                    p(Duration::from_micros(now), scenario.duration);
                }
                next_progress = now + progress_step_us;
            }
            self.now_us += tick_us;
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let verdicts: Vec<_> = {
            let sh = lock(&self.shared);
            let world = self.world(&sh.net);
            checkers.iter_mut().map(|c| c.finish(&world)).collect()
        };
        let samples = std::mem::take(&mut self.samples);
        let mut sh = lock(&self.shared);
        let stats = sh.stats;
        finish_run(
            scenario,
            self.seed,
            wall,
            end_us,
            stats,
            &mut sh.trace,
            verdicts,
            samples,
        )
    }

    fn world<'w>(&'w self, net: &'w Net) -> World<'w> {
        World {
            now: Duration::from_micros(self.now_us),
            scenario: self.scenario,
            truth: &self.truth,
            net,
            ids: &self.ids,
        }
    }

    fn record(&self, event: TraceEvent) {
        lock(&self.shared).trace.record(event, None);
    }

    fn sync_links(&mut self) {
        let paused: Vec<bool> = self.truth.iter().map(|t| t.paused).collect();
        let sh = lock(&self.shared);
        self.links.sync(&self.sim, &sh.net, &paused);
    }

    fn act(&mut self, k: usize) {
        let action = self.scenario.timeline[k].action.clone();
        let now = Duration::from_micros(self.now_us);
        let network_action = {
            let mut sh = lock(&self.shared);
            sh.trace.record_action(self.now_us, &action);
            sh.net.apply(&action)
        };
        if network_action {
            self.sync_links();
            Truth::disturb_all(&mut self.truth, now);
        }
        match action {
            Action::Kill(set) => {
                for i in set {
                    if self.truth[i].up {
                        self.sim.crash(node_host(i));
                        lock(&self.shared).up[i] = false;
                        self.prev[i].clear();
                    }
                    let t = &mut self.truth[i];
                    t.up = false;
                    t.paused = false;
                    t.disturbed_at = now;
                }
                self.sync_links();
            }
            Action::Restart(set) => {
                for i in set {
                    if !self.truth[i].up {
                        self.sim.bounce(node_host(i));
                        lock(&self.shared).up[i] = true;
                        self.prev[i].clear();
                        let t = &mut self.truth[i];
                        t.up = true;
                        t.paused = false;
                        t.disturbed_at = now;
                    }
                }
            }
            Action::Partition(_)
            | Action::PartitionOneWay { .. }
            | Action::Heal
            | Action::Loss { .. } => {}
            Action::Pause(set) => {
                for i in set {
                    if self.truth[i].up {
                        self.truth[i].paused = true;
                        self.truth[i].disturbed_at = now;
                    }
                }
                self.sync_links();
            }
            Action::Resume(set) => {
                for i in set {
                    if self.truth[i].paused {
                        self.truth[i].paused = false;
                        self.truth[i].disturbed_at = now;
                    }
                }
                self.sync_links();
            }
            Action::Skew { .. } => unreachable!("`check` rejects skew in node mode"),
        }
    }

    /// Wakes the sampler of every healthy node; they answer during the next step.
    fn request_samples(&mut self) {
        self.sample_seq += 1;
        for (slot, truth) in self.slots.iter().zip(&self.truth) {
            if truth.healthy() {
                slot.requested.set(self.sample_seq);
                slot.notify.notify_one();
            }
        }
    }

    /// Takes the member lists the samplers produced, turns their changes into events, and feeds
    /// the checkers.
    fn collect(&mut self) {
        let now = Duration::from_micros(self.now_us);
        let mut exited = false;
        for i in 0..self.truth.len() {
            if self.truth[i].up && self.slots[i].exited.get() {
                // The supervisor gave up (restart intensity exceeded): the node is down.
                exited = true;
                lock(&self.shared).up[i] = false;
                self.prev[i].clear();
                let t = &mut self.truth[i];
                t.up = false;
                t.paused = false;
                t.disturbed_at = now;
                self.record(TraceEvent::Member {
                    t_us: self.now_us,
                    node: i,
                    event: "exited".into(),
                });
            }
        }
        if exited {
            self.sync_links();
        }
        let views: Vec<Option<Vec<MemberView>>> = (0..self.truth.len())
            .map(|i| match self.slots[i].view.borrow_mut().take() {
                Some((sample, view)) if sample == self.sample_seq && self.truth[i].healthy() => {
                    view
                }
                _ => None,
            })
            .collect();
        // A node's own row carries its current generation (it bumps it on every start and
        // rejoin, and persists it before it shows it).
        for (truth, view) in self.truth.iter_mut().zip(&views) {
            if let Some(local) = view.as_ref().and_then(|v| v.iter().find(|m| m.local)) {
                truth.generation = local.id.generation();
            }
        }
        for (i, view) in views.iter().enumerate() {
            if let Some(view) = view {
                for event in observe::diff(&self.prev[i], view) {
                    self.on_event(i, &event);
                }
            }
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        let (converged, healthy) = {
            let sh = lock(&self.shared);
            let world = self.world(&sh.net);
            let healthy_views = views
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_ref().map(|v| (i, v)));
            (
                invariants::sample(&world, &mut checkers, healthy_views),
                world.truth.iter().filter(|t| t.healthy()).count(),
            )
        };
        self.checkers = checkers;
        let delivered = lock(&self.shared).stats.delivered;
        self.samples.push(Sample {
            t_s: self.now_us as f64 / 1e6,
            converged,
            healthy,
            delivered,
        });
        for (prev, view) in self.prev.iter_mut().zip(views) {
            if let Some(view) = view {
                *prev = view;
            }
        }
    }

    fn on_event(&mut self, i: usize, e: &Event) {
        let text = crate::trace::member_event_text(&self.ids, e);
        if let Some(event) = text {
            self.record(TraceEvent::Member {
                t_us: self.now_us,
                node: i,
                event,
            });
        }
        let mut checkers = std::mem::take(&mut self.checkers);
        {
            let sh = lock(&self.shared);
            let world = self.world(&sh.net);
            for c in &mut checkers {
                c.on_event(&world, i, e);
            }
        }
        self.checkers = checkers;
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
