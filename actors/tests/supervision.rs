//! Supervision: a crashed child is restarted with backoff while membership keeps working; too
//! many failures escalate and stop the node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nexus_actors::env::MemoryStorage;
use nexus_actors::{
    ChildSpec, GossipActor, GossipArgs, GossipMsg, NodeExit, NodeMetrics, NodeSupervisor,
    RestartPolicy, SupervisorArgs, SupervisorMsg,
};
use nexus_gossip::{MemberMeta, MemberState, MemberView, MembershipConfig, NodeId};
use ractor::{Actor, ActorProcessingErr, ActorRef, call};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// A child that panics when told to.
struct Fragile {
    starts: Arc<AtomicUsize>,
}

impl Actor for Fragile {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        panic!("fragile child told to crash");
    }
}

fn fast_policy(restarts_max: u32) -> RestartPolicy {
    RestartPolicy {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        restarts_max,
        window: Duration::from_secs(30),
    }
}

async fn lookup(sup: &ActorRef<SupervisorMsg>, name: &str) -> Option<ractor::ActorCell> {
    call!(sup, SupervisorMsg::Lookup, name.to_owned()).expect("lookup")
}

async fn wait_running(sup: &ActorRef<SupervisorMsg>, name: &str) -> ractor::ActorCell {
    for _ in 0..200 {
        if let Some(cell) = lookup(sup, name).await {
            return cell;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never came back");
}

#[tokio::test]
async fn panicking_child_is_restarted_then_escalates() {
    let starts = Arc::new(AtomicUsize::new(0));
    let s = starts.clone();
    let (exit_tx, mut exit_rx) = watch::channel(None);
    let metrics = NodeMetrics::new();
    let (sup, handle) = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children: vec![ChildSpec::new("fragile", move |_| {
                (Fragile { starts: s.clone() }, ())
            })],
            policy: fast_policy(2),
            metrics: metrics.clone(),
            exit: exit_tx,
        },
    )
    .await
    .expect("spawn");

    // Two crashes are within the policy: restarted each time.
    for round in 1..=2 {
        let child = wait_running(&sup, "fragile").await;
        child.send_message(()).expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let child = wait_running(&sup, "fragile").await;
        assert_eq!(starts.load(Ordering::SeqCst), round + 1);
        drop(child);
    }
    let tree = call!(sup, SupervisorMsg::Tree).expect("tree");
    assert_eq!(tree.children[0].restarts, 2);
    assert_eq!(tree.children[0].status, "running");
    assert!(
        tree.children[0]
            .last_failure
            .as_deref()
            .is_some_and(|r| r.contains("fragile child told to crash")),
        "{tree:?}"
    );
    assert!(
        metrics
            .encode()
            .contains("nexus_actor_restarts_total{actor=\"fragile\"} 2")
    );

    // The third crash within the window exceeds restarts_max = 2: the node stops.
    let child = wait_running(&sup, "fragile").await;
    child.send_message(()).expect("send");
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("supervisor stops")
        .expect("join");
    exit_rx.changed().await.ok();
    match exit_rx.borrow().clone() {
        Some(NodeExit::Escalated { child, reason }) => {
            assert_eq!(child, "fragile");
            assert!(reason.contains("told to crash"));
        }
        other => panic!("expected escalation, got {other:?}"),
    }
}

struct TestNode {
    sup: ActorRef<SupervisorMsg>,
    addr: SocketAddr,
}

async fn start_node(name: &str, seeds: Vec<SocketAddr>) -> TestNode {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = socket.local_addr().expect("addr");
    let mut node_id = [0u8; 32];
    node_id[..name.len()].copy_from_slice(name.as_bytes());
    let args = GossipArgs {
        socket,
        advertise: addr,
        node_id: NodeId(node_id),
        meta: MemberMeta::new(name, None, "test", vec![]).expect("meta"),
        config: MembershipConfig {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            suspect_to_down: Duration::from_millis(300),
            join_retry_min: Duration::from_millis(50),
            join_retry_max: Duration::from_millis(200),
            ..MembershipConfig::default()
        },
        seeds,
        storage: Arc::new(MemoryStorage::default()),
        metrics: NodeMetrics::new(),
        epoch: tokio::time::Instant::now(),
        rng_seed: node_id[0] as u64,
        overlay: nexus_gossip::OverlayConfig::default(),
        registry: None,
        trust: None,
        security: nexus_actors::GossipSecurity::plaintext(),
    };
    let (exit_tx, _exit_rx) = watch::channel(None);
    let (sup, _) = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children: vec![ChildSpec::new("gossip", move |_| {
                (GossipActor::<UdpSocket>::default(), args.clone())
            })],
            policy: fast_policy(5),
            metrics: NodeMetrics::new(),
            exit: exit_tx,
        },
    )
    .await
    .expect("spawn");
    TestNode { sup, addr }
}

async fn members(node: &TestNode) -> Vec<MemberView> {
    let cell = wait_running(&node.sup, "gossip").await;
    let gossip: ActorRef<GossipMsg> = cell.into();
    call!(gossip, GossipMsg::Members).expect("members")
}

async fn wait_alive(node: &TestNode, n: usize) -> Vec<MemberView> {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = members(node).await;
        if last
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
            == n
        {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {n} alive: {last:?}");
}

#[tokio::test]
async fn crashed_gossip_actor_restarts_and_membership_recovers() {
    let a = start_node("a", vec![]).await;
    let b = start_node("b", vec![a.addr]).await;
    let c = start_node("c", vec![a.addr]).await;
    for node in [&a, &b, &c] {
        wait_alive(node, 3).await;
    }
    let before = members(&b)
        .await
        .into_iter()
        .find(|m| m.local)
        .expect("local row");

    // Panic b's gossip actor: the supervisor restarts it as a newer generation.
    let cell = wait_running(&b.sup, "gossip").await;
    let gossip: ActorRef<GossipMsg> = cell.into();
    gossip.send_message(GossipMsg::Crash).expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let after = wait_alive(&b, 3).await;
    let me = after.iter().find(|m| m.local).expect("local row");
    assert!(me.id.generation() > before.id.generation());
    // The others see b's new generation alive, and nobody is left down.
    for node in [&a, &c] {
        let rows = wait_alive(node, 3).await;
        let row = rows.iter().find(|m| m.id.addr() == b.addr).expect("b");
        assert_eq!(row.id.generation(), me.id.generation());
    }
    let tree = call!(b.sup, SupervisorMsg::Tree).expect("tree");
    assert_eq!(tree.children[0].restarts, 1);
}
