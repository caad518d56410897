//! The table compiler hands every generation it installs to the node's hardware targets through
//! `TableArgs::generations`: a new static route, a removed one, new local services (same
//! generation, new local endpoints) and a rollback each reach the watch channel, and what it
//! holds equals the installed forwarding table.

use std::sync::Arc;
use std::time::Duration;

use nexus_actors::env::MemoryStorage;
use nexus_actors::{
    ChildSpec, NodeMetrics, NodeSupervisor, RestartPolicy, SupervisorArgs, SupervisorMsg,
    TableArgs, TableCompiler, TableGeneration, TableMsg,
};
use nexus_dataplane::fib::{Fib, FibTable, NextHop, RouteSet, RoutingKey, compile};
use nexus_gossip::NodeId;
use ractor::{Actor, ActorRef, call};
use tokio::sync::watch;

const LOCAL: [u8; 32] = [3; 32];

async fn table(sup: &ActorRef<SupervisorMsg>) -> ActorRef<TableMsg> {
    for _ in 0..200 {
        if let Some(cell) = call!(sup, SupervisorMsg::Lookup, "table".to_owned()).expect("lookup") {
            return cell.into();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the table compiler did not start");
}

/// Waits until the channel holds a generation `accept` takes, and returns it.
async fn next(
    rx: &mut watch::Receiver<Option<Arc<TableGeneration>>>,
    accept: impl Fn(&TableGeneration) -> bool,
) -> Arc<TableGeneration> {
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|g| g.as_deref().is_some_and(&accept)),
    )
    .await
    .expect("the generation arrives")
    .expect("the sender lives");
    found.clone().expect("accepted generations are Some")
}

fn hop(port: u16) -> NextHop {
    NextHop {
        node: LOCAL,
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        weight: 1,
        rewrite: None,
    }
}

/// The installed table as the targets see it.
fn installed(fib: &Fib) -> Vec<(RoutingKey, Vec<NextHop>)> {
    fib.snapshot()
        .entries()
        .map(|e| (e.key, e.group.to_vec()))
        .collect()
}

fn published(generation: &TableGeneration) -> Vec<(RoutingKey, Vec<NextHop>)> {
    generation
        .routes
        .routes()
        .iter()
        .map(|(k, h)| (*k, h.clone()))
        .collect()
}

#[tokio::test]
async fn every_installed_generation_reaches_the_targets() {
    let empty = compile(&RouteSet::new(0)).expect("empty table compiles");
    let fib = Fib::new(FibTable::load(empty).expect("empty table loads"));
    let (generations, mut rx) = watch::channel(None);
    let (local_tx, local_rx) = watch::channel(Default::default());
    let args = TableArgs {
        fib: fib.clone(),
        storage: Arc::new(MemoryStorage::default()),
        local: NodeId(LOCAL),
        refresh: Duration::from_secs(60),
        metrics: NodeMetrics::new(),
        local_endpoints: Some(local_tx),
        session_endpoint: None,
        generations: Some(generations),
    };
    let (exit, _exit_rx) = watch::channel(None);
    let (sup, handle) = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children: vec![ChildSpec::new("table", move |supervisor| {
                (TableCompiler, (args.clone(), supervisor))
            })],
            policy: RestartPolicy::default(),
            metrics: NodeMetrics::new(),
            exit,
        },
    )
    .await
    .expect("supervisor starts");
    let table = table(&sup).await;

    // The first generation (empty: no routes, no members) is published when the actor starts.
    let first = next(&mut rx, |_| true).await;
    assert_eq!(first.generation(), fib.generation());
    assert!(first.routes.routes().is_empty());

    // A static route: a new generation, equal to the installed table.
    let key = RoutingKey(0xaa);
    let generation = call!(table, TableMsg::PutRoute, key, vec![hop(9000)])
        .expect("call")
        .expect("route installed");
    let put = next(&mut rx, |g| g.generation() == generation).await;
    assert_eq!(fib.generation(), generation);
    assert_eq!(published(&put), installed(&fib));
    assert_eq!(published(&put), vec![(key, vec![hop(9000)])]);
    assert!(put.local.is_empty());

    // A local service: the same generation, with the service's key in the local endpoints (as
    // the forwarder gets them).
    table
        .cast(TableMsg::Registry {
            routes: Vec::new(),
            local: vec![("svc".to_owned(), 7001)],
        })
        .expect("cast");
    let with_local = next(&mut rx, |g| g.local.len() == 1).await;
    assert_eq!(with_local.local, *local_rx.borrow());
    let key_of_service = RoutingKey(nexus_registry::service_key(NodeId(LOCAL), "svc"));
    assert_eq!(
        with_local.local.get(key_of_service),
        Some("127.0.0.1:7001".parse().expect("addr"))
    );
    // The loopback source came with the local service: a newer generation, published with it.
    assert!(with_local.generation() >= generation);

    // Removing the route: a newer generation without it.
    let current = fib.generation();
    assert!(
        call!(table, TableMsg::DeleteRoute, key)
            .expect("call")
            .expect("deleted")
    );
    let deleted = next(&mut rx, |g| g.generation() > current).await;
    assert!(deleted.routes.routes().is_empty());
    assert_eq!(deleted.local.len(), 1, "the endpoints stay");

    // A rollback: the targets get the table rolled back to, under its own number.
    let back = call!(table, TableMsg::Rollback)
        .expect("call")
        .expect("rolled back");
    let rolled = next(&mut rx, |g| g.generation() == back).await;
    assert_eq!(published(&rolled), installed(&fib));
    assert_eq!(published(&rolled), vec![(key, vec![hop(9000)])]);

    sup.stop(None);
    let _ = handle.await;
}
