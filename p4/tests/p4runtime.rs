//! The node's P4Runtime client against a P4Runtime server written for this test with the PyPI
//! `p4runtime` bindings (`tests/p4rt/server.py`, a real process on an ephemeral port), which
//! decodes every message with the official protos and validates every entity against the
//! P4Info the client installed (bit widths as values, canonical bytestrings, references,
//! weights, table sizes).
//!
//! Checked: generations pushed as diffs (inserts, modifies, deletes), a rollback, and a push
//! the server refuses half-way, after which the client restores the previous state — each time
//! the server's state (read back) equals the reference pipeline's, which was fed the same
//! updates. Bad input: writes the server must refuse, an unreachable target, bad config, a
//! second controller that is not primary.
//!
//! The server runs in a virtual environment at `p4/tests/p4rt/.venv`, created with
//! `python3 -m venv` and the pinned requirements if it is missing; without python3 the test
//! fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use nexus_dataplane::conformance::{Generation, KEY_A, KEY_B, KEY_LOCAL, PEER, hop, local_addr};
use nexus_dataplane::fib::{NextHop, RouteSet, RoutingKey};
use nexus_dataplane::forward::LocalEndpoints;
use nexus_p4::client::{ClientError, P4Client, P4Config};
use nexus_p4::controller::Controller;
use nexus_p4::program::{
    ACTION_ALLOW_SOURCE, ACTION_FORWARD, PROFILE_SELECTOR, TABLE_GROUP, TABLE_SOURCE,
};
use nexus_p4::proto::v1::{
    Action, ActionProfileGroup, ActionProfileMember, Entity, FieldMatch, TableAction, TableEntry,
    Update, UpdateType, action, action_profile_group, entity, field_match, table_action,
};
use nexus_p4::publisher::P4Publisher;
use nexus_p4::reference::ReferencePipeline;
use nexus_p4::testkit::TestServer;

const KEY_C: RoutingKey = RoutingKey(0xc000_0000_0000_0000_0000_0000_0000_000c);
const KEY_D: RoutingKey = RoutingKey(0xd000_0000_0000_0000_0000_0000_0000_000d);

/// The test server (`nexus_p4::testkit`), which the node's client connects to.
struct Server(TestServer);

impl Server {
    fn start(args: &[&str]) -> Server {
        Server(TestServer::start(args))
    }

    fn config(&self, election_id: u128) -> P4Config {
        P4Config {
            target: format!("127.0.0.1:{}", self.0.port()),
            device_id: 1,
            election_id,
            device_config: Vec::new(),
            rpc_timeout: Duration::from_secs(10),
        }
    }

    async fn primary(&self) -> P4Client {
        let mut client = P4Client::connect(self.config(10)).await.expect("connects");
        client.set_pipeline().await.expect("pipeline installed");
        client
    }
}

fn routes(generation: u64, routes: &[(RoutingKey, Vec<NextHop>)]) -> RouteSet {
    Generation {
        generation,
        routes: routes.iter().cloned().collect(),
        sources: vec![PEER, "10.0.0.2".parse().expect("ip")],
    }
    .route_set()
    .expect("valid generation")
}

fn local() -> LocalEndpoints {
    let map: BTreeMap<RoutingKey, SocketAddr> = [(KEY_LOCAL, local_addr(1))].into();
    LocalEndpoints::try_from(map).expect("small table")
}

fn weighted(n: u8, weight: u32) -> NextHop {
    NextHop { weight, ..hop(n) }
}

/// The reference pipeline, fed the updates a mirror controller computes for the same pushes.
struct Mirror {
    controller: Controller,
    reference: ReferencePipeline,
    kinds: [usize; 4],
}

impl Mirror {
    fn new() -> Self {
        Mirror {
            controller: Controller::new(),
            reference: ReferencePipeline::new(),
            kinds: [0; 4],
        }
    }

    fn push(&mut self, routes: RouteSet, local: LocalEndpoints) {
        let prepared = self.controller.prepare(routes, local).expect("plans");
        self.apply(prepared);
    }

    fn rollback(&mut self) {
        let prepared = self
            .controller
            .prepare_rollback()
            .expect("has a previous state");
        self.apply(prepared);
    }

    fn apply(&mut self, prepared: nexus_p4::controller::Prepared) {
        for u in &prepared.updates {
            self.kinds[u.r#type as usize] += 1;
        }
        self.reference
            .apply(&prepared.updates)
            .expect("the reference accepts the controller's updates");
        self.controller.commit(prepared);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_diffs_and_a_rollback_leave_the_server_equal_to_the_reference() {
    let server = Server::start(&[]);
    let mut client = server.primary().await;
    let mut mirror = Mirror::new();

    let g1 = routes(
        1,
        &[
            (KEY_A, vec![hop(1)]),
            (KEY_B, vec![weighted(1, 1), weighted(2, 3)]),
        ],
    );
    assert_eq!(client.push(g1.clone(), local()).await.expect("g1"), 1);
    mirror.push(g1, local());
    let read = client.read_entries().await.expect("read");
    assert_eq!(&read, mirror.reference.entries());
    assert_eq!(read.routes.len(), 2);
    assert_eq!(read.groups.len(), 2);
    assert_eq!(read.members.len(), 2);

    // KEY_A moves (a modify), KEY_B goes (a delete and its group), KEY_C comes with a rewrite.
    let rewriting = NextHop {
        rewrite: Some(KEY_LOCAL),
        ..hop(3)
    };
    let g2 = routes(2, &[(KEY_A, vec![hop(2)]), (KEY_C, vec![rewriting])]);
    assert_eq!(client.push(g2.clone(), local()).await.expect("g2"), 2);
    let before = mirror.kinds;
    mirror.push(g2, local());
    let [_, inserts, modifies, deletes] = [0, 1, 2, 3].map(|k| mirror.kinds[k] - before[k]);
    assert!(
        inserts > 0 && modifies > 0 && deletes > 0,
        "{inserts} {modifies} {deletes}"
    );
    assert_eq!(
        &client.read_entries().await.expect("read"),
        mirror.reference.entries()
    );

    // Roll back to generation 1.
    assert_eq!(client.rollback().await.expect("rollback"), 1);
    mirror.rollback();
    let read = client.read_entries().await.expect("read");
    assert_eq!(&read, mirror.reference.entries());
    assert!(read.routes.contains_key(&KEY_B.0) && !read.routes.contains_key(&KEY_C.0));
    assert!(matches!(
        client.rollback().await,
        Err(ClientError::NoPrevious)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_refused_half_way_is_undone() {
    // Room for two routes: generation 2's third route fails after its modify and some inserts
    // went in, leaving the server between generations until the client restores generation 1.
    let server = Server::start(&["--table-size", "nexus_route=2"]);
    let mut client = server.primary().await;
    let mut mirror = Mirror::new();
    let g1 = routes(1, &[(KEY_A, vec![hop(1)]), (KEY_B, vec![hop(2)])]);
    client.push(g1.clone(), local()).await.expect("g1 fits");
    mirror.push(g1, local());

    let g2 = routes(
        2,
        &[
            (KEY_A, vec![hop(3)]),
            (KEY_B, vec![hop(2)]),
            (KEY_C, vec![hop(1)]),
            (KEY_D, vec![hop(1)]),
        ],
    );
    let err = client.push(g2, local()).await.expect_err("table full");
    let ClientError::PushFailed {
        generation,
        error,
        restored,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((*generation, *restored), (2, true), "{err}");
    assert!(error.to_string().contains("full"), "{error}");
    assert_eq!(client.generation(), Some(1));
    assert_eq!(
        &client.read_entries().await.expect("read"),
        mirror.reference.entries()
    );

    // A generation that fits still installs.
    let g3 = routes(3, &[(KEY_C, vec![hop(1)])]);
    client.push(g3.clone(), local()).await.expect("g3 fits");
    mirror.push(g3, local());
    assert_eq!(
        &client.read_entries().await.expect("read"),
        mirror.reference.entries()
    );
}

fn exact(value: Vec<u8>) -> Vec<FieldMatch> {
    vec![FieldMatch {
        field_id: 1,
        field_match_type: Some(field_match::FieldMatchType::Exact(field_match::Exact {
            value,
        })),
    }]
}

fn insert(e: entity::Entity) -> Update {
    Update {
        r#type: UpdateType::Insert as i32,
        entity: Some(Entity { entity: Some(e) }),
    }
}

fn source(key: Vec<u8>) -> entity::Entity {
    entity::Entity::TableEntry(TableEntry {
        table_id: TABLE_SOURCE,
        r#match: exact(key),
        action: Some(TableAction {
            r#type: Some(table_action::Type::Action(Action {
                action_id: ACTION_ALLOW_SOURCE,
                params: vec![],
            })),
        }),
        ..Default::default()
    })
}

fn member(id: u32, rewrite: Vec<u8>) -> entity::Entity {
    let p = |param_id, value: Vec<u8>| action::Param { param_id, value };
    entity::Entity::ActionProfileMember(ActionProfileMember {
        action_profile_id: PROFILE_SELECTOR,
        member_id: id,
        action: Some(Action {
            action_id: ACTION_FORWARD,
            params: vec![
                p(1, Ipv4Addr::new(10, 0, 1, 1).octets().to_vec()),
                p(2, vec![0x1b, 0x59]),
                p(3, rewrite),
                p(4, vec![0]),
            ],
        }),
    })
}

fn group(id: u32, members: &[(u32, i32)]) -> entity::Entity {
    entity::Entity::ActionProfileGroup(ActionProfileGroup {
        action_profile_id: PROFILE_SELECTOR,
        group_id: id,
        members: members
            .iter()
            .map(|(member_id, weight)| action_profile_group::Member {
                member_id: *member_id,
                weight: *weight,
            })
            .collect(),
        max_size: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_bad_entities() {
    let server = Server::start(&[]);
    let mut client = server.primary().await;
    client
        .write(&[insert(member(1, vec![0]))])
        .await
        .expect("a good member");
    let cases: Vec<(&str, Update, &str)> = vec![
        (
            "leading zero byte",
            insert(source(vec![0, 10, 0, 0, 1])),
            "canonical",
        ),
        (
            "33-bit source address",
            insert(source(vec![1, 0, 0, 0, 0])),
            "does not fit",
        ),
        (
            "rewrite flag 2 in a 1-bit param",
            insert(member(2, vec![2])),
            "does not fit in 1 bits",
        ),
        ("empty value", insert(source(vec![])), "empty"),
        ("weight 0", insert(group(1, &[(1, 0)])), "weight 0"),
        (
            "unknown member",
            insert(group(1, &[(9, 1)])),
            "member 9 not installed",
        ),
        ("duplicate member", insert(member(1, vec![0])), "exists"),
        (
            "group entry for a missing group",
            insert(entity::Entity::TableEntry(TableEntry {
                table_id: TABLE_GROUP,
                r#match: exact(vec![5]),
                action: Some(TableAction {
                    r#type: Some(table_action::Type::ActionProfileGroupId(5)),
                }),
                ..Default::default()
            })),
            "group 5 not installed",
        ),
        (
            "unknown table",
            insert(entity::Entity::TableEntry(TableEntry {
                table_id: 0x0200_00ff,
                ..Default::default()
            })),
            "unknown table",
        ),
    ];
    for (what, update, expected) in cases {
        let err = client.write(&[update]).await.expect_err(what);
        let ClientError::Rpc { status, .. } = &err else {
            panic!("{what}: {err}");
        };
        assert_ne!(status.code(), tonic::Code::Ok, "{what}");
        assert!(
            status.message().contains(expected),
            "{what}: {}",
            status.message()
        );
    }
    // A member still in a group cannot be deleted.
    client
        .write(&[insert(group(1, &[(1, 2)]))])
        .await
        .expect("a good group");
    let mut delete = insert(member(1, vec![0]));
    delete.r#type = UpdateType::Delete as i32;
    let err = client.write(&[delete]).await.expect_err("in use");
    assert!(err.to_string().contains("still in group 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_bad_config_and_a_second_controller_are_errors() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let unreachable = P4Config {
        target: format!("127.0.0.1:{port}"),
        device_id: 1,
        election_id: 1,
        device_config: Vec::new(),
        rpc_timeout: Duration::from_secs(2),
    };
    let err = P4Client::connect(unreachable.clone())
        .await
        .expect_err("nobody there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    let err = P4Client::connect(P4Config {
        election_id: 0,
        ..unreachable.clone()
    })
    .await
    .expect_err("election id 0");
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    let err = P4Client::connect(P4Config {
        target: "no such host:not a port".to_owned(),
        ..unreachable
    })
    .await
    .expect_err("bad target");
    assert!(matches!(err, ClientError::Config(_)), "{err}");

    let server = Server::start(&[]);
    let _primary = server.primary().await;
    let err = P4Client::connect(server.config(5))
        .await
        .expect_err("lower election id");
    assert!(matches!(err, ClientError::NotPrimary(_)), "{err}");
    let err = P4Client::connect(P4Config {
        device_id: 7,
        ..server.config(20)
    })
    .await
    .expect_err("no device 7");
    assert!(err.to_string().contains("no device 7"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_keeps_the_switch_on_the_latest_generation() {
    let server = Server::start(&[]);
    let publisher = P4Publisher::spawn(server.config(10));
    let mut status = publisher.subscribe();
    let mut mirror = Mirror::new();
    let g1 = routes(1, &[(KEY_A, vec![hop(1)])]);
    let g2 = routes(2, &[(KEY_A, vec![hop(2)]), (KEY_B, vec![hop(1)])]);
    publisher.publish(g1.clone(), local());
    mirror.push(g1, local());
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.installed == Some(1)),
    )
    .await
    .expect("generation 1 within 20 s")
    .expect("publisher running");
    publisher.publish(g2.clone(), local());
    mirror.push(g2, local());
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.installed == Some(2)),
    )
    .await
    .expect("generation 2 within 20 s")
    .expect("publisher running");
    let done = publisher.status();
    assert!(done.connected && done.failures == 0, "{done:?}");
    drop(publisher);
    // A later controller (higher election id) reads what the publisher left.
    let mut reader = loop {
        match P4Client::connect(server.config(11)).await {
            Ok(client) => break client,
            Err(ClientError::NotPrimary(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        &reader.read_entries().await.expect("read"),
        mirror.reference.entries()
    );

    // Nobody listening: the publisher reports it and keeps trying.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let lost = P4Publisher::spawn(P4Config {
        target: format!("127.0.0.1:{port}"),
        rpc_timeout: Duration::from_secs(1),
        ..server.config(12)
    });
    let mut lost_status = lost.subscribe();
    let s = tokio::time::timeout(
        Duration::from_secs(20),
        lost_status.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("an error within 20 s")
    .expect("publisher running")
    .clone();
    assert!(!s.connected && s.installed.is_none(), "{s:?}");
}
