use std::net::{Ipv6Addr, SocketAddrV6};

use nexus_dataplane::conformance::{Generation, KEY_A, KEY_B, KEY_LOCAL, PEER, hop, local_addr};

use super::*;

fn routes(generation: u64, routes: &[(RoutingKey, Vec<NextHop>)]) -> RouteSet {
    Generation {
        generation,
        routes: routes.iter().cloned().collect(),
        sources: vec![PEER, IpAddr::V6(Ipv6Addr::LOCALHOST)],
    }
    .route_set()
    .expect("valid generation")
}

fn local() -> LocalEndpoints {
    let mut l = LocalEndpoints::new();
    l.insert(KEY_LOCAL, local_addr(1)).expect("room");
    l
}

fn applied(from: &Entries, updates: &[Update]) -> Entries {
    let mut state = from.clone();
    for u in updates {
        state.apply(u).unwrap_or_else(|e| panic!("{e}"));
    }
    state
}

#[test]
fn a_diff_applied_to_the_old_state_gives_the_new_one() {
    let empty = Entries::default();
    let g1 = empty
        .plan(
            &routes(
                1,
                &[
                    (KEY_A, vec![hop(1)]),
                    (
                        KEY_B,
                        vec![
                            hop(1),
                            NextHop {
                                weight: 3,
                                ..hop(2)
                            },
                        ],
                    ),
                ],
            ),
            &local(),
        )
        .expect("plans");
    // IPv6 sources are left out; the IPv4 one is in.
    assert_eq!(g1.sources, [Ipv4Addr::new(10, 0, 0, 1)].into());
    assert_eq!(g1.groups.len(), 2);
    assert_eq!(g1.group_entries.len(), 2);
    assert_eq!(applied(&empty, &empty.diff(&g1)), g1);
    assert_eq!(g1.to_updates().len(), empty.diff(&g1).len());

    // Same hops in another route: same group id, nothing rewritten for it.
    let g2 = g1
        .plan(
            &routes(
                2,
                &[
                    (
                        KEY_B,
                        vec![
                            hop(1),
                            NextHop {
                                weight: 3,
                                ..hop(2)
                            },
                        ],
                    ),
                    (KEY_LOCAL, vec![hop(1)]),
                ],
            ),
            &LocalEndpoints::new(),
        )
        .expect("plans");
    assert_eq!(g2.routes[&KEY_B.0], g1.routes[&KEY_B.0]);
    assert_eq!(g2.routes[&KEY_LOCAL.0], g1.routes[&KEY_A.0]);
    let updates = g1.diff(&g2);
    assert_eq!(applied(&g1, &updates), g2);
    assert!(
        updates.iter().all(|u| !matches!(
            u.entity.as_ref().and_then(|e| e.entity.as_ref()),
            Some(entity::Entity::ActionProfileMember(_) | entity::Entity::ActionProfileGroup(_))
        )),
        "no member or group changes: {updates:?}"
    );
    assert!(g2.diff(&g2).is_empty());
    // And back.
    assert_eq!(applied(&g2, &g2.diff(&g1)), g1);
}

#[test]
fn new_ids_never_reuse_ids_of_the_previous_state() {
    let g1 = Entries::default()
        .plan(&routes(1, &[(KEY_A, vec![hop(1)])]), &local())
        .expect("plans");
    let g2 = g1
        .plan(&routes(2, &[(KEY_A, vec![hop(2)])]), &local())
        .expect("plans");
    let old: Vec<u32> = g1.members.keys().copied().collect();
    assert!(g2.members.keys().all(|id| !old.contains(id)));
    assert_eq!(applied(&g1, &g1.diff(&g2)), g2);
}

#[test]
fn generations_the_target_cannot_hold_are_refused() {
    let v6 = NextHop {
        addr: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 7000, 0, 0)),
        ..hop(1)
    };
    let err = Entries::default()
        .plan(&routes(1, &[(KEY_A, vec![v6])]), &local())
        .expect_err("IPv6 next hop");
    assert!(matches!(err, PlanError::Ipv6 { .. }), "{err}");
    let heavy = NextHop {
        weight: WEIGHT_TOTAL_MAX,
        ..hop(2)
    };
    let err = Entries::default()
        .plan(&routes(1, &[(KEY_A, vec![hop(1), heavy])]), &local())
        .expect_err("weights too heavy");
    assert!(err.to_string().contains("4097"), "{err}");
}

#[test]
fn bad_updates_are_refused_and_change_nothing() {
    let g1 = Entries::default()
        .plan(&routes(1, &[(KEY_A, vec![hop(1)])]), &local())
        .expect("plans");
    let updates = Entries::default().diff(&g1);
    let state = applied(&Entries::default(), &updates);
    let refuse = |update: Update, what: &str| {
        let mut s = state.clone();
        let err = s.apply(&update).expect_err(what);
        assert_eq!(s, state, "{what}: state changed");
        err
    };
    // Inserting what exists.
    for u in &updates {
        refuse(u.clone(), "insert twice");
    }
    // Deleting a member or group in use.
    let mut delete_member = updates[0].clone();
    delete_member.r#type = UpdateType::Delete as i32;
    assert!(matches!(
        refuse(delete_member, "member in use"),
        EntityError::Reference(_)
    ));
    let mut delete_group = updates[1].clone();
    delete_group.r#type = UpdateType::Delete as i32;
    assert!(matches!(
        refuse(delete_group, "group in use"),
        EntityError::Reference(_)
    ));
    // A route's key one bit too wide is impossible for 128 bits; a source key of 33 bits is not.
    let mut wide = source_entity(Ipv4Addr::new(10, 9, 9, 9));
    if let entity::Entity::TableEntry(t) = &mut wide
        && let Some(field_match::FieldMatchType::Exact(e)) = &mut t.r#match[0].field_match_type
    {
        e.value = vec![1, 0, 0, 0, 0];
    }
    assert!(matches!(
        refuse(update(UpdateType::Insert, wide), "33-bit source"),
        EntityError::Value { .. }
    ));
    // No entity, unspecified type, unknown table.
    refuse(
        Update {
            r#type: 1,
            entity: None,
        },
        "no entity",
    );
    let mut unspecified = updates[0].clone();
    unspecified.r#type = 0;
    refuse(unspecified, "unspecified");
    let mut unknown = route_entity(KEY_B.0, g1.routes[&KEY_A.0]);
    if let entity::Entity::TableEntry(t) = &mut unknown {
        t.table_id = 0x0200_0099;
    }
    assert!(matches!(
        refuse(update(UpdateType::Insert, unknown), "unknown table"),
        EntityError::UnknownId { .. }
    ));
    // A route to a group that does not exist, or with the wrong weight total.
    let bad_group = route_entity(
        KEY_B.0,
        Route {
            group: 77,
            weight_total: 1,
        },
    );
    refuse(update(UpdateType::Insert, bad_group), "missing group");
    let bad_total = route_entity(
        KEY_B.0,
        Route {
            weight_total: 2,
            ..g1.routes[&KEY_A.0]
        },
    );
    refuse(update(UpdateType::Insert, bad_total), "wrong weight total");
    // Modify of a missing route.
    refuse(
        update(
            UpdateType::Modify,
            route_entity(KEY_B.0, g1.routes[&KEY_A.0]),
        ),
        "modify missing",
    );
}
