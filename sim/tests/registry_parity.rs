//! The registry actor and the simulator run one core: fed the same event sequence — a
//! registration, a remote advert, an anti-entropy digest, member lists that change, and time
//! passing through refreshes, anti-entropy rounds, re-publishes and a lease expiry — they emit
//! the same outputs, byte for byte, at the same times.
//!
//! The actor runs for real (its message handlers, its timer task, its drain) on a tokio runtime
//! with a paused clock, beside a stand-in gossip actor that records what it is asked to send and
//! answers the member list, and a stand-in supervisor that finds it. The simulator's side is
//! core mode's registry harness: the core woken at its `poll_timeout`, its outputs carried out
//! by `drain_registry`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_actors::env::MemoryStorage;
use nexus_actors::{
    GossipMsg, NodeMetrics, RegistryActor, RegistryArgs, RegistryInput, RegistryMsg,
    RegistrySettings, Scope, SupervisorMsg, registry_inbox,
};
use nexus_gossip::{MemberId, MemberMeta, MemberState, MemberView, NodeId};
use nexus_registry::{MemoryStore, Output, RegistryNode, Sad, Timestamp};
use nexus_sim::core_mode::{RegistryHost, drain_registry, fire_registry_timers};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// What the registry asked the gossip layer to send, and when (time since the node's epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Broadcast(Timestamp, Vec<u8>),
    Direct(Timestamp, SocketAddr, Vec<u8>),
    ToRandomNeighbor(Timestamp, Vec<u8>),
}

/// The services a node's registry holds live after a step: (origin, service, version).
type Snapshot = Vec<([u8; 32], String, u64)>;

/// One step of the script, at a time since the node's epoch.
#[derive(Debug, Clone)]
enum Step {
    Register(Box<Sad>),
    Input(RegistryInput),
    /// What membership answers from now on.
    Members(Vec<MemberView>),
}

const END: Timestamp = Timestamp::from_millis(6_100);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 7946))
}

fn sad(id: &str, ttl_s: u32) -> Sad {
    Sad::from_json(
        format!(
            r#"{{"id":"{id}","tasks":["llm.code"],"context_window":8192,"latency_ms_p50":10,"latency_ms_p99":20,"ttl_s":{ttl_s}}}"#
        )
        .as_bytes(),
    )
    .expect("valid sad")
}

fn member(n: u8, state: MemberState) -> MemberView {
    let node = NodeId(key(n).verifying_key().to_bytes());
    MemberView {
        id: MemberId::new(addr(n), node, 1, MemberMeta::default()),
        swim_incarnation: 0,
        state,
        local: n == 1,
    }
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        refresh: Duration::from_millis(500),
        anti_entropy: Duration::from_millis(2_000),
    }
}

/// Every time the core's timers fire over the run, so the script's steps avoid those instants
/// (a step and a timer at the same millisecond have no order on a tokio runtime).
fn timer_instants() -> Vec<Timestamp> {
    let mut probe = RegistryNode::new(
        Timestamp::ZERO,
        key(1),
        MemoryStore::default(),
        0,
        Vec::new(),
    )
    .expect("probe node");
    probe.start_timers(Timestamp::ZERO, settings().timers());
    let mut at = Vec::new();
    while let Some(t) = probe.poll_timeout().filter(|&t| t <= END) {
        at.push(t);
        probe.handle_timeout(t);
    }
    at
}

/// The script: node 2's advert and digest come from node 2's own core.
fn script() -> Vec<(Timestamp, Step)> {
    let mut remote = RegistryNode::new(
        Timestamp::ZERO,
        key(2),
        MemoryStore::default(),
        0,
        Vec::new(),
    )
    .expect("remote node");
    remote
        .register(Timestamp::from_millis(5), sad("remote", 30))
        .expect("register");
    remote.anti_entropy();
    let mut advert = None;
    let mut digest = None;
    while let Some(o) = remote.poll_output() {
        match o {
            Output::Broadcast(b) => advert = Some(b),
            Output::DirectToRandomNeighbor(b) => digest = digest.or(Some(b)),
            _ => {}
        }
    }
    let (advert, digest) = (advert.expect("advert"), digest.expect("digest"));
    let timers = timer_instants();
    let clear = |ms: u64| {
        let mut t = Timestamp::from_millis(ms);
        while timers.contains(&t) {
            t = t + Duration::from_millis(1);
        }
        t
    };
    vec![
        (clear(10), Step::Register(Box::new(sad("svc", 5)))),
        (clear(40), Step::Input(RegistryInput::Delivered(advert))),
        (
            clear(120),
            Step::Members(vec![
                member(1, MemberState::Alive),
                member(2, MemberState::Alive),
            ]),
        ),
        (
            clear(700),
            Step::Input(RegistryInput::Direct(addr(2), digest)),
        ),
        (
            clear(1_300),
            Step::Register(Box::new(sad("other", 30))), // a second service, renewed never
        ),
        (
            clear(2_600),
            Step::Members(vec![
                member(1, MemberState::Alive),
                member(2, MemberState::Down),
            ]),
        ),
    ]
}

fn snapshot(node: &RegistryNode<MemoryStore>) -> Snapshot {
    node.registry()
        .iter()
        .filter_map(|(k, e)| Some((k.node.0, e.sad()?.id.clone(), e.version())))
        .collect()
}

/// The simulator's side: the core driven as core mode drives it.
fn simulator(script: &[(Timestamp, Step)]) -> (Vec<Sent>, Vec<Snapshot>) {
    struct Recorder {
        now: Timestamp,
        members: Vec<MemberView>,
        sent: Vec<Sent>,
    }
    impl RegistryHost for Recorder {
        fn broadcast(&mut self, bytes: Vec<u8>) {
            self.sent.push(Sent::Broadcast(self.now, bytes));
        }
        fn send_direct(&mut self, to: SocketAddr, bytes: Vec<u8>) {
            self.sent.push(Sent::Direct(self.now, to, bytes));
        }
        fn send_to_random_neighbor(&mut self, bytes: Vec<u8>) {
            self.sent.push(Sent::ToRandomNeighbor(self.now, bytes));
        }
        fn members(&mut self) -> Option<Vec<MemberView>> {
            Some(self.members.clone())
        }
    }
    let mut host = Recorder {
        now: Timestamp::ZERO,
        members: Vec::new(),
        sent: Vec::new(),
    };
    let mut node = RegistryNode::new(
        Timestamp::ZERO,
        key(1),
        MemoryStore::default(),
        0,
        Vec::new(),
    )
    .expect("node");
    node.start_timers(Timestamp::ZERO, settings().timers());
    let mut snapshots = Vec::new();
    let run_to = |node: &mut RegistryNode<MemoryStore>, host: &mut Recorder, t: Timestamp| {
        while let Some(d) = node.poll_timeout().filter(|&d| d <= t) {
            host.now = d;
            assert!(fire_registry_timers(node, d));
            drain_registry(node, d, host);
        }
        host.now = t;
    };
    for (t, step) in script {
        run_to(&mut node, &mut host, *t);
        match step.clone() {
            Step::Register(sad) => {
                node.register(*t, *sad).expect("register");
            }
            Step::Input(input) => {
                node.handle_input(*t, input);
                node.flush_trust(*t);
            }
            Step::Members(m) => host.members = m,
        }
        drain_registry(&mut node, *t, &mut host);
        snapshots.push(snapshot(&node));
    }
    run_to(&mut node, &mut host, END);
    snapshots.push(snapshot(&node));
    (host.sent, snapshots)
}

/// Stand-in gossip actor: records sends, answers the member list.
struct FakeGossip;

struct GossipState {
    epoch: tokio::time::Instant,
    members: Arc<Mutex<Vec<MemberView>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Actor for FakeGossip {
    type Msg = GossipMsg;
    type State = GossipState;
    type Arguments = GossipState;

    async fn pre_start(
        &self,
        _: ActorRef<GossipMsg>,
        state: GossipState,
    ) -> Result<GossipState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<GossipMsg>,
        msg: GossipMsg,
        state: &mut GossipState,
    ) -> Result<(), ActorProcessingErr> {
        let elapsed = tokio::time::Instant::now().duration_since(state.epoch);
        let now = Timestamp::from_micros(u64::try_from(elapsed.as_micros()).expect("in range"));
        let sent = match msg {
            GossipMsg::Members(reply) => {
                let members = state.members.lock().expect("lock").clone();
                let _ = reply.send(members);
                return Ok(());
            }
            GossipMsg::Broadcast(b) => Sent::Broadcast(now, b),
            GossipMsg::SendDirect(to, b) => Sent::Direct(now, to, b),
            GossipMsg::DirectToRandomNeighbor(b) => Sent::ToRandomNeighbor(now, b),
            other => panic!("the registry sent the gossip actor {other:?}"),
        };
        state.sent.lock().expect("lock").push(sent);
        Ok(())
    }
}

/// Stand-in supervisor: finds the gossip actor, nothing else.
struct FakeSupervisor;

impl Actor for FakeSupervisor {
    type Msg = SupervisorMsg;
    type State = ActorRef<GossipMsg>;
    type Arguments = ActorRef<GossipMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        gossip: ActorRef<GossipMsg>,
    ) -> Result<ActorRef<GossipMsg>, ActorProcessingErr> {
        Ok(gossip)
    }

    async fn handle(
        &self,
        _: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        gossip: &mut ActorRef<GossipMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisorMsg::Lookup(name, reply) = msg {
            let _ = reply.send((name == "gossip").then(|| gossip.get_cell()));
        }
        Ok(())
    }
}

/// The actor's side: the real registry actor on a paused clock.
fn actor(script: &[(Timestamp, Step)]) -> (Vec<Sent>, Vec<Snapshot>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let epoch = tokio::time::Instant::now();
        let members = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (gossip, gossip_task) = Actor::spawn(
            None,
            FakeGossip,
            GossipState {
                epoch,
                members: members.clone(),
                sent: sent.clone(),
            },
        )
        .await
        .expect("gossip");
        let (supervisor, supervisor_task) = Actor::spawn(None, FakeSupervisor, gossip.clone())
            .await
            .expect("supervisor");
        let (_tx, inbox) = registry_inbox();
        let args = RegistryArgs {
            key: key(1),
            storage: Arc::new(MemoryStorage::default()),
            metrics: NodeMetrics::new(),
            epoch,
            inbox,
            settings: settings(),
            changes: Default::default(),
        };
        let (registry, registry_task) =
            Actor::spawn(None, RegistryActor, (args, supervisor.clone()))
                .await
                .expect("registry");
        // Waits until the actor has handled everything sent before, and lists what it holds.
        let settle = |registry: ActorRef<RegistryMsg>| async move {
            let views = ractor::call!(registry, RegistryMsg::Services, Scope::Fabric)
                .expect("registry answers");
            views
                .into_iter()
                .map(|v| (v.node.0, v.sad.id, v.sad.version))
                .collect::<Snapshot>()
        };
        let mut snapshots = Vec::new();
        for (t, step) in script {
            // The clock advances to `t`, through each of the actor's timer deadlines in turn.
            tokio::time::sleep_until(epoch + Duration::from_micros(t.as_micros())).await;
            match step.clone() {
                Step::Register(sad) => {
                    ractor::call!(registry, RegistryMsg::Register, sad, None)
                        .expect("registry answers")
                        .expect("registered");
                }
                Step::Input(input) => {
                    registry
                        .cast(RegistryMsg::Input(input))
                        .expect("registry runs");
                }
                Step::Members(m) => *members.lock().expect("lock") = m,
            }
            snapshots.push(settle(registry.clone()).await);
        }
        tokio::time::sleep_until(epoch + Duration::from_micros(END.as_micros())).await;
        snapshots.push(settle(registry.clone()).await);
        registry.stop(None);
        supervisor.stop(None);
        gossip.stop(None);
        for task in [registry_task, supervisor_task, gossip_task] {
            task.await.expect("actor stopped");
        }
        let sent = sent.lock().expect("lock").clone();
        (sent, snapshots)
    })
}

#[test]
fn registry_actor_and_simulator_emit_the_same_outputs() {
    let script = script();
    let (sim, sim_views) = simulator(&script);
    let (actor, actor_views) = actor(&script);
    // The run must exercise every kind of output and timer, or the comparison says little.
    let broadcasts = sim
        .iter()
        .filter(|s| matches!(s, Sent::Broadcast(..)))
        .count();
    assert!(
        broadcasts >= 5,
        "registrations, re-publishes and the lease expiry's withdrawal: {sim:?}"
    );
    assert!(sim.iter().any(|s| matches!(s, Sent::Direct(..))));
    assert!(sim.iter().any(|s| matches!(s, Sent::ToRandomNeighbor(..))));
    let kinds = |v: &[Sent]| {
        v.iter()
            .map(|s| match s {
                Sent::Broadcast(t, b) => format!("{}us broadcast {}B", t.as_micros(), b.len()),
                Sent::Direct(t, to, b) => {
                    format!("{}us direct {to} {}B", t.as_micros(), b.len())
                }
                Sent::ToRandomNeighbor(t, b) => {
                    format!("{}us random {}B", t.as_micros(), b.len())
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&actor), kinds(&sim), "outputs differ in kind or time");
    assert_eq!(actor, sim, "outputs differ in content");
    // What each holds after every step: node 2's service arrives, and leaves once the member
    // list shows node 2 down; the local one leaves when its lease ends.
    assert_eq!(actor_views, sim_views, "registries differ");
    let holds = |v: &Snapshot, id: &str| v.iter().any(|(_, s, _)| s == id);
    assert!(sim_views.iter().any(|v| holds(v, "remote")));
    let last = sim_views.last().expect("views");
    assert!(
        !holds(last, "remote"),
        "withdrawn: node 2 is down: {last:?}"
    );
    assert!(!holds(last, "svc"), "lease expired: {last:?}");
    assert!(holds(last, "other"));
}
