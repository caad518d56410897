//! The engine's decisions, asserted on the commands it emits.

use super::*;

const TICK: u64 = 250;
const POLL: u64 = 5_000;
const PUBLISH: u64 = 5_000;

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7000))
}

fn config(node: u8, voter: bool) -> EngineConfig {
    EngineConfig {
        node: key(node),
        voter,
        bootstrap_expect: 3,
        tick_ms: TICK,
        revocation_poll_ms: POLL,
        publish_every_ms: PUBLISH,
    }
}

fn voters(nodes: &[u8]) -> BTreeMap<[u8; 32], SocketAddr> {
    nodes.iter().map(|n| (key(*n), addr(*n))).collect()
}

fn drain(e: &mut TrustEngine) -> Vec<TrustCommand> {
    e.check_invariants();
    std::iter::from_fn(|| e.poll_command()).collect()
}

/// The commands other than reading the CA keys (which a voter also asks for while its group
/// forms: it holds no keys yet).
fn drain_group(e: &mut TrustEngine) -> Vec<TrustCommand> {
    drain(e)
        .into_iter()
        .filter(|c| *c != TrustCommand::FetchKeys)
        .collect()
}

fn mic(serial: u64, not_before_ms: u64, not_after_ms: u64) -> NodeMicLife {
    NodeMicLife {
        serial,
        not_before_ms,
        not_after_ms,
        revoked: false,
    }
}

fn held_keys() -> Held {
    Held {
        keys: true,
        node_mic: None,
        contiguous_seq: 0,
    }
}

#[test]
fn the_lowest_of_the_expected_voters_forms_the_group_with_exactly_them() {
    let mut e = TrustEngine::new(config(2, true), 0, Held::default());
    e.on_ca_member(CaMember {
        formed: false,
        leader: false,
    });
    e.on_voters(voters(&[2, 5]));
    e.handle_timeout(0);
    assert_eq!(
        drain_group(&mut e),
        vec![],
        "two of three expected voters: wait"
    );

    e.on_voters(voters(&[2, 5, 7, 9]));
    e.handle_timeout(TICK);
    let founders = vec![
        Founder {
            node: key(2),
            addr: addr(2),
        },
        Founder {
            node: key(5),
            addr: addr(5),
        },
        Founder {
            node: key(7),
            addr: addr(7),
        },
    ];
    assert_eq!(
        drain_group(&mut e),
        vec![TrustCommand::Initialize { founders }]
    );
    e.handle_timeout(2 * TICK);
    assert_eq!(drain_group(&mut e), vec![], "one initialize at a time");
    assert!(e.is_running(Job::Initialize));
}

#[test]
fn other_voters_wait_to_be_contacted() {
    for node in [5, 7, 9] {
        let mut e = TrustEngine::new(config(node, true), 0, Held::default());
        e.on_ca_member(CaMember {
            formed: false,
            leader: false,
        });
        e.on_voters(voters(&[2, 5, 7, 9]));
        e.handle_timeout(0);
        assert_eq!(drain_group(&mut e), vec![], "node {node} is not the lowest");
    }
}

#[test]
fn a_failed_initialize_is_retried_after_the_pause() {
    let mut e = TrustEngine::new(config(1, true), 0, Held::default());
    e.on_ca_member(CaMember {
        formed: false,
        leader: false,
    });
    e.on_voters(voters(&[1, 2, 3]));
    e.handle_timeout(0);
    assert_eq!(drain_group(&mut e).len(), 1);
    e.handle_job(100, Job::Initialize, JobOutcome::Failed);
    e.handle_timeout(TICK);
    e.handle_timeout(2 * TICK);
    e.handle_timeout(3 * TICK);
    assert_eq!(drain_group(&mut e), vec![], "within the retry pause");
    e.handle_timeout(100 + RETRY_MS);
    assert!(matches!(
        drain_group(&mut e).as_slice(),
        [TrustCommand::Initialize { .. }]
    ));
}

#[test]
fn the_leader_of_a_formed_group_bootstraps_a_ca_it_holds_no_keys_of() {
    let mut e = TrustEngine::new(config(1, true), 0, Held::default());
    e.on_voters(voters(&[1, 2, 3]));
    e.on_ca_member(CaMember {
        formed: true,
        leader: false,
    });
    e.handle_timeout(0);
    // A follower only reads the keys (through its own member).
    assert_eq!(drain(&mut e), vec![TrustCommand::FetchKeys]);
    e.handle_job(10, Job::FetchKeys, JobOutcome::NotBootstrapped);

    e.on_ca_member(CaMember {
        formed: true,
        leader: true,
    });
    e.handle_timeout(TICK);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::Bootstrap],
        "keys are asked again only after half the retry pause"
    );
    e.handle_job(300, Job::Bootstrap, JobOutcome::Bootstrapped);
    e.handle_timeout(10 + RETRY_MS / 2);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::Bootstrap, TrustCommand::FetchKeys],
        "until the keys are read, the leader asks again (the job finds the CA bootstrapped)"
    );
    e.handle_job(520, Job::FetchKeys, JobOutcome::Keys { accepted: true });
    assert_eq!(drain(&mut e), vec![TrustCommand::Publish]);
    e.handle_timeout(1_000);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::ObtainNodeMic { renew: None }],
        "keys held: no second bootstrap; the node MIC comes next"
    );
}

#[test]
fn a_non_voter_connects_to_the_voters_it_sees_and_reconnects_when_they_change() {
    let mut e = TrustEngine::new(config(9, false), 0, Held::default());
    e.on_ca_member(CaMember {
        formed: true,
        leader: true,
    });
    e.handle_timeout(0);
    assert_eq!(drain(&mut e), vec![], "no voter seen: nothing to reach");
    e.on_voters(voters(&[3, 1]));
    e.handle_timeout(TICK);
    assert_eq!(
        drain(&mut e),
        vec![
            TrustCommand::Connect {
                voters: vec![addr(1), addr(3)]
            },
            TrustCommand::FetchKeys
        ]
    );
    e.handle_job(
        TICK + 5,
        Job::FetchKeys,
        JobOutcome::Keys { accepted: false },
    );
    e.handle_timeout(2 * TICK);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::FetchKeys],
        "same voters: no new client; refused keys are read again"
    );
    e.on_voters(voters(&[1, 3, 4]));
    e.handle_timeout(3 * TICK);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::Connect {
            voters: vec![addr(1), addr(3), addr(4)]
        }]
    );
}

#[test]
fn the_node_mic_is_obtained_then_renewed_at_two_thirds_of_its_lifetime() {
    let mut e = TrustEngine::new(config(9, true), 0, held_keys());
    assert_eq!(
        drain(&mut e),
        vec![],
        "the first publish waits for the first call"
    );
    e.handle_timeout(0);
    assert_eq!(
        drain(&mut e),
        vec![
            TrustCommand::ObtainNodeMic { renew: None },
            TrustCommand::PollRevocations { after: 0 },
            TrustCommand::Publish
        ]
    );
    e.handle_job(50, Job::NodeMic, JobOutcome::NodeMic(mic(17, 0, 3_000_000)));
    assert_eq!(drain(&mut e), vec![TrustCommand::Publish]);
    e.handle_timeout(1_999_999);
    assert!(
        !drain(&mut e).contains(&TrustCommand::ObtainNodeMic { renew: Some(17) }),
        "before 2/3 of the lifetime"
    );
    e.handle_timeout(1_999_999 + TICK);
    assert!(drain(&mut e).contains(&TrustCommand::ObtainNodeMic { renew: Some(17) }));
}

#[test]
fn a_revoked_node_mic_is_renewed_at_once() {
    let held = Held {
        keys: true,
        node_mic: Some(mic(4, 0, 1_000_000_000)),
        contiguous_seq: 2,
    };
    let mut e = TrustEngine::new(config(9, true), 1_000, held);
    e.handle_timeout(1_000);
    assert!(
        !drain(&mut e)
            .iter()
            .any(|c| matches!(c, TrustCommand::ObtainNodeMic { .. }))
    );
    e.on_revocations(RevocationFacts {
        changed: true,
        contiguous_seq: 3,
        node_mic_revoked: true,
    });
    assert_eq!(drain(&mut e), vec![TrustCommand::Publish]);
    e.handle_timeout(1_000 + TICK);
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::ObtainNodeMic { renew: Some(4) }]
    );
}

#[test]
fn revocations_are_polled_every_period_after_the_contiguous_seq() {
    let held = Held {
        keys: true,
        node_mic: Some(mic(4, 0, u64::MAX / 2)),
        contiguous_seq: 7,
    };
    let mut e = TrustEngine::new(config(9, true), 0, held);
    e.handle_timeout(0);
    assert_eq!(
        drain(&mut e),
        vec![
            TrustCommand::PollRevocations { after: 7 },
            TrustCommand::Publish
        ]
    );
    e.handle_job(
        30,
        Job::PollRevocations,
        JobOutcome::Revocations(RevocationFacts {
            changed: true,
            contiguous_seq: 9,
            node_mic_revoked: false,
        }),
    );
    assert_eq!(
        drain(&mut e),
        vec![TrustCommand::Publish],
        "new records go to the registry"
    );
    let mut t = 0;
    while t + TICK < POLL {
        t += TICK;
        e.handle_timeout(t);
        assert!(
            !drain(&mut e)
                .iter()
                .any(|c| matches!(c, TrustCommand::PollRevocations { .. })),
            "polled early at {t}"
        );
    }
    assert_eq!(e.poll_timeout(), POLL.min(t + TICK));
    e.handle_timeout(POLL);
    assert!(drain(&mut e).contains(&TrustCommand::PollRevocations { after: 9 }));
    // Still running at the next period: not asked twice.
    e.handle_timeout(2 * POLL);
    assert!(
        !drain(&mut e)
            .iter()
            .any(|c| matches!(c, TrustCommand::PollRevocations { .. }))
    );
}

#[test]
fn nothing_is_polled_or_published_without_the_ca_keys() {
    let mut e = TrustEngine::new(config(9, true), 0, Held::default());
    e.on_ca_member(CaMember {
        formed: true,
        leader: false,
    });
    e.handle_timeout(0);
    assert_eq!(drain(&mut e), vec![TrustCommand::FetchKeys]);
    e.on_revocations(RevocationFacts {
        changed: true,
        contiguous_seq: 0,
        node_mic_revoked: false,
    });
    e.handle_timeout(PUBLISH);
    assert_eq!(drain(&mut e), vec![]);
}

#[test]
fn a_failed_publish_is_repeated_with_the_next_call_and_the_material_is_resent_periodically() {
    let mut e = TrustEngine::new(
        config(9, true),
        0,
        Held {
            keys: true,
            node_mic: Some(mic(1, 0, u64::MAX / 2)),
            contiguous_seq: 0,
        },
    );
    e.handle_timeout(0);
    assert!(drain(&mut e).contains(&TrustCommand::Publish));
    e.on_publish_failed();
    e.handle_job(10, Job::PollRevocations, JobOutcome::Failed);
    assert_eq!(drain(&mut e), vec![TrustCommand::Publish]);
    e.handle_timeout(TICK);
    assert_eq!(drain(&mut e), vec![], "sent: nothing new");
    e.handle_timeout(PUBLISH);
    assert!(drain(&mut e).contains(&TrustCommand::Publish));
}

#[test]
fn a_clock_stepped_back_does_not_stall_the_timers_or_the_retries() {
    let start = 10_000_000;
    let mut e = TrustEngine::new(config(9, false), start, Held::default());
    e.on_voters(voters(&[1]));
    e.handle_timeout(start);
    assert_eq!(drain(&mut e).len(), 2, "connect and fetch keys");
    e.handle_job(start + 10, Job::FetchKeys, JobOutcome::Failed);
    // The wall clock steps back an hour: the next evaluation and the retry are not an hour away.
    let back = start - 3_600_000;
    e.handle_timeout(back);
    assert_eq!(drain(&mut e), vec![TrustCommand::FetchKeys]);
    assert!(e.poll_timeout() <= back + TICK);
}

#[test]
fn the_same_events_give_the_same_commands() {
    let run = || {
        let mut e = TrustEngine::new(config(1, true), 0, Held::default());
        let mut out = Vec::new();
        e.on_voters(voters(&[1, 2, 3]));
        e.on_ca_member(CaMember {
            formed: false,
            leader: false,
        });
        for step in 0..40u64 {
            let now = step * 100;
            e.handle_timeout(now);
            out.extend(drain(&mut e));
            if step == 5 {
                e.handle_job(now, Job::Initialize, JobOutcome::Initialized);
                e.on_ca_member(CaMember {
                    formed: true,
                    leader: true,
                });
            }
            if step == 10 {
                e.handle_job(now, Job::Bootstrap, JobOutcome::Bootstrapped);
            }
            if e.is_running(Job::FetchKeys) {
                let outcome = if step > 10 {
                    JobOutcome::Keys { accepted: true }
                } else {
                    JobOutcome::NotBootstrapped
                };
                e.handle_job(now, Job::FetchKeys, outcome);
            }
        }
        out.extend(drain(&mut e));
        out
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.contains(&TrustCommand::Bootstrap));
    assert!(first.contains(&TrustCommand::ObtainNodeMic { renew: None }));
}
