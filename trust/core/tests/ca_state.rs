//! The CA state machine driven through `apply`, asserting on what it returned and stored.

use nexus_trust_core::ca::{
    Bootstrap, CaError, CaState, CircuitKeys, Command, ISSUE_BATCH_MAX, IssueRequest,
    LIST_LIMIT_MAX, NOT_BEFORE_BACKDATE_MS, Presigned, REQUEST_IDS_MAX, Response, SnapshotError,
    VALIDITY_MS_MAX, VALIDITY_MS_MIN,
};
use nexus_trust_core::mic::{Claim, Mic, MicError, MicField, ModelIdentity, SubjectKind};
use nexus_trust_core::revocation::{RevocationReason, SignedRevocation};
use rand_08::{Rng, SeedableRng, rngs::StdRng};

const DAY_MS: u64 = 86_400_000;
const NOW_MS: u64 = 1_700_000_000_000;

fn bootstrap() -> Command {
    Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [42; 32],
        ca_key_id: 7,
        circuits: vec![(
            1,
            CircuitKeys {
                proving_key: vec![1, 2, 3],
                verifying_key: vec![4, 5],
            },
        )],
    }))
}

fn request(n: u8) -> IssueRequest {
    IssueRequest {
        request_id: None,
        subject_key: [n; 32],
        kind: SubjectKind::Model,
        model: Some(ModelIdentity {
            arch_hash: [n.wrapping_add(1); 32],
            weights_commitment: [n.wrapping_add(2); 32],
        }),
        publisher: format!("publisher-{n}"),
        provenance: vec![],
        claims: vec![Claim {
            key: "task".into(),
            value: "chat".into(),
        }],
        zk_commitment: Some([n; 32]),
        validity_ms: 30 * DAY_MS,
    }
}

/// A bootstrapped CA at log index 1.
fn ca() -> CaState {
    let mut ca = CaState::default();
    assert_eq!(
        ca.apply(1, &bootstrap()),
        Response::Bootstrapped { ca_key_id: 7 }
    );
    ca
}

fn issue(ca: &mut CaState, index: u64, requests: Vec<IssueRequest>) -> Vec<Result<Mic, CaError>> {
    match ca.apply(
        index,
        &Command::Issue {
            now_ms: NOW_MS,
            requests,
        },
    ) {
        Response::Issued(results) => results,
        other => panic!("expected Issued, got {other:?}"),
    }
}

fn issue_one(ca: &mut CaState, index: u64, request: IssueRequest) -> Result<Mic, CaError> {
    let mut results = issue(ca, index, vec![request]);
    assert_eq!(results.len(), 1);
    results.remove(0)
}

#[test]
fn commands_before_bootstrap_are_refused() {
    let mut ca = CaState::default();
    assert_eq!(ca.apply(1, &Command::Noop), Response::Done);
    let issue = Command::Issue {
        now_ms: NOW_MS,
        requests: vec![request(1)],
    };
    assert_eq!(
        ca.apply(2, &issue),
        Response::Error(CaError::NotBootstrapped)
    );
    let renew = Command::Renew {
        now_ms: NOW_MS,
        serial: 1,
        validity_ms: DAY_MS,
    };
    assert_eq!(
        ca.apply(3, &renew),
        Response::Error(CaError::NotBootstrapped)
    );
    let revoke = Command::Revoke {
        now_ms: NOW_MS,
        serial: 1,
        reason: RevocationReason::KeyCompromise,
    };
    assert_eq!(
        ca.apply(4, &revoke),
        Response::Error(CaError::NotBootstrapped)
    );
    assert!(!ca.is_bootstrapped());
    assert!(ca.ca_keys().is_empty());
    assert_eq!(ca.stats().mics, 0);
    assert_eq!(ca.last_applied(), Some(4));
}

#[test]
fn bootstrap_installs_key_and_circuits_once() {
    let mut ca = ca();
    assert!(ca.is_bootstrapped());
    assert_eq!(ca.ca_key_id(), Some(7));
    let expected = ed25519_dalek::SigningKey::from_bytes(&[42; 32]).verifying_key();
    assert_eq!(ca.ca_keys().get(7), Some(&expected));
    assert_eq!(
        ca.circuit(1).map(|c| c.verifying_key.clone()),
        Some(vec![4, 5])
    );
    assert!(ca.circuit(2).is_none());
    let before = ca.snapshot();
    let second = Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [1; 32],
        ca_key_id: 9,
        circuits: vec![],
    }));
    assert_eq!(
        ca.apply(2, &second),
        Response::Error(CaError::AlreadyBootstrapped { ca_key_id: 7 })
    );
    assert_eq!(ca.ca_keys().get(7), Some(&expected));
    assert!(ca.ca_keys().get(9).is_none());
    // Only last_applied moved.
    let mut replay = CaState::restore(&before).expect("restore");
    assert_eq!(replay.apply(2, &Command::Noop), Response::Done);
    assert_eq!(replay.snapshot(), ca.snapshot());
}

#[test]
fn bad_bootstrap_circuits_are_refused() {
    let keys = CircuitKeys {
        proving_key: vec![],
        verifying_key: vec![],
    };
    let mut ca = CaState::default();
    let dup = Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [1; 32],
        ca_key_id: 1,
        circuits: vec![(3, keys.clone()), (3, keys.clone())],
    }));
    assert!(matches!(
        ca.apply(1, &dup),
        Response::Error(CaError::InvalidBootstrap { reason }) if reason.contains("circuit id 3 appears twice")
    ));
    let many = Command::Bootstrap(Box::new(Bootstrap {
        ca_secret_key: [1; 32],
        ca_key_id: 1,
        circuits: (0..17).map(|i| (i, keys.clone())).collect(),
    }));
    assert!(matches!(
        ca.apply(2, &many),
        Response::Error(CaError::InvalidBootstrap { .. })
    ));
    assert!(!ca.is_bootstrapped());
}

#[test]
fn bootstrap_debug_redacts_the_secret() {
    let text = format!("{:?}", bootstrap());
    assert!(text.contains("<redacted>"));
    assert!(!text.contains("42, 42"));
}

#[test]
fn issue_allocates_sequential_serials_and_signs() {
    let mut ca = ca();
    let results = issue(&mut ca, 2, vec![request(1), request(2), request(3)]);
    let serials: Vec<u64> = results
        .iter()
        .map(|r| r.as_ref().expect("issued").body.serial)
        .collect();
    assert_eq!(serials, vec![1, 2, 3]);
    let mic = results[1].as_ref().expect("issued");
    assert_eq!(mic.body.subject_key, [2; 32]);
    assert_eq!(mic.body.ca_key_id, 7);
    assert_eq!(mic.body.not_before_ms, NOW_MS - NOT_BEFORE_BACKDATE_MS);
    assert_eq!(mic.body.not_after_ms, NOW_MS + 30 * DAY_MS);
    mic.verify(ca.ca_keys(), NOW_MS).expect("verifies");
    assert_eq!(Mic::decode(&mic.encode()).as_ref(), Ok(mic));
    assert_eq!(ca.get(2), Some(mic));
    let next = issue_one(&mut ca, 3, request(4)).expect("issued");
    assert_eq!(next.body.serial, 4);
    assert_eq!(ca.stats().next_serial, 5);
}

#[test]
fn failed_requests_do_not_consume_serials() {
    let mut ca = ca();
    let mut bad = request(2);
    bad.validity_ms = 1;
    let results = issue(&mut ca, 2, vec![request(1), bad, request(3)]);
    assert_eq!(results[0].as_ref().map(|m| m.body.serial), Ok(1));
    assert_eq!(
        results[1],
        Err(CaError::ValidityOutOfRange {
            validity_ms: 1,
            min_ms: VALIDITY_MS_MIN,
            max_ms: VALIDITY_MS_MAX
        })
    );
    assert_eq!(results[2].as_ref().map(|m| m.body.serial), Ok(2));
    assert_eq!(ca.stats().mics, 2);
}

#[test]
fn request_validation_names_the_problem() {
    let mut ca = ca();
    let cases: Vec<(IssueRequest, CaError)> = vec![
        (
            IssueRequest {
                validity_ms: VALIDITY_MS_MAX + 1,
                ..request(1)
            },
            CaError::ValidityOutOfRange {
                validity_ms: VALIDITY_MS_MAX + 1,
                min_ms: VALIDITY_MS_MIN,
                max_ms: VALIDITY_MS_MAX,
            },
        ),
        (
            IssueRequest {
                validity_ms: VALIDITY_MS_MIN - 1,
                ..request(1)
            },
            CaError::ValidityOutOfRange {
                validity_ms: VALIDITY_MS_MIN - 1,
                min_ms: VALIDITY_MS_MIN,
                max_ms: VALIDITY_MS_MAX,
            },
        ),
        (
            IssueRequest {
                publisher: "p".repeat(65),
                ..request(1)
            },
            CaError::InvalidField(MicError::TooLong {
                field: MicField::Publisher,
                len: 65,
                max: 64,
            }),
        ),
        (
            IssueRequest {
                claims: (0..17)
                    .map(|i| Claim {
                        key: format!("k{i}"),
                        value: String::new(),
                    })
                    .collect(),
                ..request(1)
            },
            CaError::InvalidField(MicError::TooLong {
                field: MicField::Claims,
                len: 17,
                max: 16,
            }),
        ),
        (
            IssueRequest {
                claims: vec![Claim {
                    key: "k".repeat(33),
                    value: String::new(),
                }],
                ..request(1)
            },
            CaError::InvalidField(MicError::TooLong {
                field: MicField::ClaimKey,
                len: 33,
                max: 32,
            }),
        ),
        (
            IssueRequest {
                claims: vec![Claim {
                    key: "k".into(),
                    value: "v".repeat(65),
                }],
                ..request(1)
            },
            CaError::InvalidField(MicError::TooLong {
                field: MicField::ClaimValue,
                len: 65,
                max: 64,
            }),
        ),
        (
            IssueRequest {
                claims: vec![
                    Claim {
                        key: "k".into(),
                        value: "1".into(),
                    },
                    Claim {
                        key: "k".into(),
                        value: "2".into(),
                    },
                ],
                ..request(1)
            },
            CaError::InvalidField(MicError::DuplicateClaimKey { key: "k".into() }),
        ),
        (
            IssueRequest {
                claims: vec![Claim {
                    key: String::new(),
                    value: "v".into(),
                }],
                ..request(1)
            },
            CaError::InvalidField(MicError::EmptyClaimKey { index: 0 }),
        ),
        (
            IssueRequest {
                provenance: (1..=9).collect(),
                ..request(1)
            },
            CaError::InvalidField(MicError::TooLong {
                field: MicField::Provenance,
                len: 9,
                max: 8,
            }),
        ),
        (
            IssueRequest {
                provenance: vec![0],
                ..request(1)
            },
            CaError::InvalidField(MicError::BadProvenance { serial: 0 }),
        ),
        (
            IssueRequest {
                provenance: vec![5],
                ..request(1)
            },
            CaError::UnknownProvenance { serial: 5 },
        ),
        (
            IssueRequest {
                model: None,
                ..request(1)
            },
            CaError::MissingModelIdentity,
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            issue_one(&mut ca, 2 + i as u64, req),
            Err(expected.clone()),
            "case {i}"
        );
        // The Display text names the field for the operator.
        if let CaError::InvalidField(MicError::TooLong { field, .. }) = &expected {
            assert!(expected.to_string().contains(&field.to_string()));
        }
    }
    assert_eq!(ca.stats().mics, 0, "no failed request consumed a serial");
    // Exactly at the limits is fine.
    let edge = IssueRequest {
        publisher: "p".repeat(64),
        validity_ms: VALIDITY_MS_MAX,
        claims: (0..16)
            .map(|i| Claim {
                key: format!("{i:k>32}"),
                value: "v".repeat(64),
            })
            .collect(),
        ..request(1)
    };
    assert!(issue_one(&mut ca, 100, edge).is_ok());
}

#[test]
fn batch_limit_is_enforced() {
    let mut ca = ca();
    let requests = vec![request(1); ISSUE_BATCH_MAX + 1];
    assert_eq!(
        ca.apply(
            2,
            &Command::Issue {
                now_ms: NOW_MS,
                requests
            }
        ),
        Response::Error(CaError::BatchTooLarge {
            len: ISSUE_BATCH_MAX + 1,
            max: ISSUE_BATCH_MAX
        })
    );
    assert_eq!(ca.stats().mics, 0);
    assert_eq!(
        issue(&mut ca, 3, vec![request(1); ISSUE_BATCH_MAX]).len(),
        ISSUE_BATCH_MAX
    );
    assert_eq!(ca.stats().mics, ISSUE_BATCH_MAX as u64);
}

#[test]
fn provenance_must_exist_and_not_be_revoked() {
    let mut ca = ca();
    let parent = issue_one(&mut ca, 2, request(1)).expect("parent");
    let child = issue_one(
        &mut ca,
        3,
        IssueRequest {
            provenance: vec![parent.body.serial],
            ..request(2)
        },
    )
    .expect("child");
    assert_eq!(child.body.provenance, vec![1]);
    ca.apply(
        4,
        &Command::Revoke {
            now_ms: NOW_MS,
            serial: 1,
            reason: RevocationReason::KeyCompromise,
        },
    );
    assert_eq!(
        issue_one(
            &mut ca,
            5,
            IssueRequest {
                provenance: vec![2, 1],
                ..request(3)
            }
        ),
        Err(CaError::RevokedProvenance { serial: 1 })
    );
}

#[test]
fn request_id_makes_issue_idempotent() {
    let mut ca = ca();
    let req = IssueRequest {
        request_id: Some([9; 16]),
        ..request(1)
    };
    let first = issue_one(&mut ca, 2, req.clone()).expect("first");
    // A retry at a later time (another proposer clock) gets the very same certificate.
    let retry = match ca.apply(
        3,
        &Command::Issue {
            now_ms: NOW_MS + 5_000,
            requests: vec![req.clone(), req.clone()],
        },
    ) {
        Response::Issued(results) => results,
        other => panic!("{other:?}"),
    };
    assert_eq!(retry, vec![Ok(first.clone()), Ok(first.clone())]);
    assert_eq!(ca.stats().mics, 1);
    // Same id, different subject: refused, not silently answered with the old MIC.
    let reused = IssueRequest {
        request_id: Some([9; 16]),
        ..request(2)
    };
    assert_eq!(
        issue_one(&mut ca, 4, reused),
        Err(CaError::RequestIdReused {
            request_id: [9; 16],
            serial: 1
        })
    );
    // Without an id, the same request issues a second certificate.
    assert_eq!(
        issue_one(&mut ca, 5, request(1)).map(|m| m.body.serial),
        Ok(2)
    );
}

#[test]
fn request_id_memory_is_bounded_fifo() {
    let mut ca = ca();
    let mut index = 2;
    let mut n: u32 = 0;
    while (n as usize) < REQUEST_IDS_MAX + 1 {
        let requests: Vec<IssueRequest> = (0..ISSUE_BATCH_MAX)
            .take(REQUEST_IDS_MAX + 1 - n as usize)
            .map(|_| {
                n += 1;
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                IssueRequest {
                    request_id: Some(id),
                    model: None,
                    kind: SubjectKind::Node,
                    claims: vec![],
                    zk_commitment: None,
                    ..request(1)
                }
            })
            .collect();
        issue(&mut ca, index, requests);
        index += 1;
    }
    assert_eq!(ca.stats().request_ids, REQUEST_IDS_MAX as u64);
    let id = |n: u32| {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        IssueRequest {
            request_id: Some(id),
            model: None,
            kind: SubjectKind::Node,
            claims: vec![],
            zk_commitment: None,
            ..request(1)
        }
    };
    // The newest id is still remembered: same serial.
    let newest = REQUEST_IDS_MAX as u32 + 1;
    assert_eq!(
        issue_one(&mut ca, index, id(newest)).map(|m| m.body.serial),
        Ok(u64::from(newest))
    );
    // The oldest was forgotten: a retry issues a new serial.
    let before = ca.stats().next_serial;
    assert_eq!(
        issue_one(&mut ca, index + 1, id(1)).map(|m| m.body.serial),
        Ok(before)
    );
    let restored = CaState::restore(&ca.snapshot()).expect("restore");
    assert_eq!(restored.snapshot(), ca.snapshot());
}

#[test]
fn renew_issues_a_new_serial_with_provenance() {
    let mut ca = ca();
    let old = issue_one(&mut ca, 2, request(1)).expect("issued");
    let later = NOW_MS + 10 * DAY_MS;
    let renewed = match ca.apply(
        3,
        &Command::Renew {
            now_ms: later,
            serial: 1,
            validity_ms: 60 * DAY_MS,
        },
    ) {
        Response::Renewed(Ok(mic)) => mic,
        other => panic!("{other:?}"),
    };
    assert_eq!(renewed.body.serial, 2);
    assert_eq!(renewed.body.provenance, vec![1]);
    assert_eq!(renewed.body.subject_key, old.body.subject_key);
    assert_eq!(renewed.body.claims, old.body.claims);
    assert_eq!(renewed.body.model, old.body.model);
    assert_eq!(renewed.body.zk_commitment, old.body.zk_commitment);
    assert_eq!(renewed.body.not_after_ms, later + 60 * DAY_MS);
    renewed.verify(ca.ca_keys(), later).expect("verifies");
    // The old one is untouched.
    assert_eq!(ca.get(1), Some(&old));

    // Renewing repeatedly keeps the newest PROVENANCE_MAX links.
    let mut serial = 2;
    for i in 0..10 {
        match ca.apply(
            4 + i,
            &Command::Renew {
                now_ms: later,
                serial,
                validity_ms: DAY_MS,
            },
        ) {
            Response::Renewed(Ok(mic)) => {
                assert!(mic.body.provenance.len() <= 8);
                assert_eq!(mic.body.provenance.last(), Some(&serial));
                serial = mic.body.serial;
            }
            other => panic!("{other:?}"),
        }
    }
    let last = ca.get(serial).expect("last");
    assert_eq!(
        last.body.provenance,
        (serial - 8..serial).collect::<Vec<_>>()
    );
}

#[test]
fn renew_refuses_unknown_revoked_and_bad_validity() {
    let mut ca = ca();
    issue_one(&mut ca, 2, request(1)).expect("issued");
    let renew = |serial, validity_ms| Command::Renew {
        now_ms: NOW_MS,
        serial,
        validity_ms,
    };
    assert_eq!(
        ca.apply(3, &renew(99, DAY_MS)),
        Response::Renewed(Err(CaError::UnknownSerial { serial: 99 }))
    );
    assert!(matches!(
        ca.apply(4, &renew(1, 0)),
        Response::Renewed(Err(CaError::ValidityOutOfRange { .. }))
    ));
    ca.apply(
        5,
        &Command::Revoke {
            now_ms: NOW_MS,
            serial: 1,
            reason: RevocationReason::Superseded,
        },
    );
    assert_eq!(
        ca.apply(6, &renew(1, DAY_MS)),
        Response::Renewed(Err(CaError::Revoked { serial: 1 }))
    );
    assert_eq!(ca.stats().mics, 1);
}

#[test]
fn revoke_is_idempotent_and_signed() {
    let mut ca = ca();
    let mic = issue_one(&mut ca, 2, request(1)).expect("issued");
    issue_one(&mut ca, 3, request(2)).expect("issued");
    let revoke = |serial, now_ms, reason| Command::Revoke {
        now_ms,
        serial,
        reason,
    };
    let first = match ca.apply(4, &revoke(1, NOW_MS + 1, RevocationReason::KeyCompromise)) {
        Response::Revoked(Ok(record)) => record,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.seq, 1);
    assert_eq!(first.serial, 1);
    assert_eq!(first.not_after_ms, mic.body.not_after_ms);
    assert_eq!(first.revoked_at_ms, NOW_MS + 1);
    assert_eq!(first.ca_key_id, 7);
    first.verify(ca.ca_keys()).expect("signed by the CA");
    // Second revoke (other time, other reason): the same record, no new seq.
    assert_eq!(
        ca.apply(5, &revoke(1, NOW_MS + 99, RevocationReason::Superseded)),
        Response::Revoked(Ok(first.clone()))
    );
    assert_eq!(
        ca.apply(6, &revoke(3, NOW_MS, RevocationReason::Superseded)),
        Response::Revoked(Err(CaError::UnknownSerial { serial: 3 }))
    );
    let second = match ca.apply(7, &revoke(2, NOW_MS, RevocationReason::Unspecified)) {
        Response::Revoked(Ok(record)) => record,
        other => panic!("{other:?}"),
    };
    assert_eq!(second.seq, 2);
    assert!(ca.is_revoked(1) && ca.is_revoked(2));
    assert_eq!(ca.revocation(1), Some(&first));
    let after0: Vec<&SignedRevocation> = ca.revocations_after(0, 10);
    assert_eq!(after0, vec![&first, &second]);
    assert_eq!(ca.revocations_after(1, 10), vec![&second]);
    assert!(ca.revocations_after(2, 10).is_empty());
    assert!(ca.revocations_after(u64::MAX, 10).is_empty());
    assert_eq!(ca.revocations_after(0, 1), vec![&first]);
    assert_eq!(ca.stats().revocations, 2);
}

#[test]
fn list_pages_by_serial() {
    let mut ca = ca();
    issue(&mut ca, 2, (1..=5).map(request).collect());
    let serials = |v: Vec<&Mic>| v.iter().map(|m| m.body.serial).collect::<Vec<_>>();
    assert_eq!(serials(ca.list(0, 2)), vec![1, 2]);
    assert_eq!(serials(ca.list(2, 2)), vec![3, 4]);
    assert_eq!(serials(ca.list(4, 10)), vec![5]);
    assert!(ca.list(5, 10).is_empty());
    assert!(ca.list(u64::MAX, 10).is_empty());
    assert_eq!(ca.list(0, usize::MAX).len(), 5.min(LIST_LIMIT_MAX));
}

#[test]
fn stale_index_changes_nothing() {
    let mut ca = ca();
    let before = ca.snapshot();
    assert_eq!(
        ca.apply(
            1,
            &Command::Issue {
                now_ms: NOW_MS,
                requests: vec![request(1)]
            }
        ),
        Response::Error(CaError::StaleIndex {
            index: 1,
            last_applied: 1
        })
    );
    assert_eq!(ca.snapshot(), before);
}

/// A random but valid-ish log: issues (some invalid), renewals, revocations (some of unknown
/// serials), no-ops, with retried request ids.
fn random_log(seed: u64, len: usize) -> Vec<Command> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = vec![bootstrap()];
    let mut now = NOW_MS;
    for _ in 0..len {
        now += rng.gen_range(0..10_000);
        let cmd = match rng.gen_range(0..10) {
            0 => Command::Noop,
            1..=5 => Command::Issue {
                now_ms: now,
                requests: (0..rng.gen_range(0..6))
                    .map(|_| {
                        let mut req = request(rng.r#gen());
                        if rng.gen_bool(0.3) {
                            req.request_id = Some([rng.gen_range(0..4); 16]);
                            req.subject_key = [1; 32];
                            req.publisher = "retry".into();
                            req.model = Some(ModelIdentity {
                                arch_hash: [2; 32],
                                weights_commitment: [3; 32],
                            });
                            req.zk_commitment = Some([1; 32]);
                        }
                        if rng.gen_bool(0.1) {
                            req.validity_ms = 5;
                        }
                        if rng.gen_bool(0.3) {
                            req.provenance = vec![rng.gen_range(1..20)];
                        }
                        req
                    })
                    .collect(),
            },
            6 | 7 => Command::Renew {
                now_ms: now,
                serial: rng.gen_range(1..30),
                validity_ms: rng.gen_range(VALIDITY_MS_MIN..10 * DAY_MS),
            },
            _ => Command::Revoke {
                now_ms: now,
                serial: rng.gen_range(1..30),
                reason: RevocationReason::KeyCompromise,
            },
        };
        log.push(cmd);
    }
    log
}

#[test]
fn two_replicas_produce_identical_snapshots_and_responses() {
    for seed in 0..8 {
        let log = random_log(seed, 200);
        let mut a = CaState::default();
        let mut b = CaState::default();
        for (i, cmd) in log.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, cmd);
            let rb = b.apply(i as u64 + 1, cmd);
            assert_eq!(ra, rb, "seed {seed} entry {i}");
            a.check_invariants();
        }
        assert_eq!(a.snapshot(), b.snapshot(), "seed {seed}");
        a.check_invariants();
        assert!(a.stats().mics > 10, "the log exercised issuance");
        assert!(a.stats().revocations > 0, "the log exercised revocation");
    }
}

#[test]
fn snapshot_restore_mid_log_gives_same_result() {
    for seed in 0..4 {
        let log = random_log(100 + seed, 200);
        let mut straight = CaState::default();
        for (i, cmd) in log.iter().enumerate() {
            straight.apply(i as u64 + 1, cmd);
        }
        for cut in [0, 1, 2, 50, 137, log.len()] {
            let mut first = CaState::default();
            for (i, cmd) in log[..cut].iter().enumerate() {
                first.apply(i as u64 + 1, cmd);
            }
            let bytes = first.snapshot();
            let mut resumed = CaState::restore(&bytes).expect("restore");
            assert_eq!(resumed.snapshot(), bytes, "restore/snapshot round trip");
            resumed.check_invariants();
            for (i, cmd) in log.iter().enumerate().skip(cut) {
                resumed.apply(i as u64 + 1, cmd);
            }
            assert_eq!(
                resumed.snapshot(),
                straight.snapshot(),
                "seed {seed} cut {cut}"
            );
        }
    }
}

#[test]
fn empty_state_snapshot_round_trips() {
    let empty = CaState::default();
    let restored = CaState::restore(&empty.snapshot()).expect("restore");
    assert!(!restored.is_bootstrapped());
    assert_eq!(restored.last_applied(), None);
    assert_eq!(restored.snapshot(), empty.snapshot());
}

fn busy_state() -> CaState {
    let mut ca = CaState::default();
    for (i, cmd) in random_log(7, 60).iter().enumerate() {
        ca.apply(i as u64 + 1, cmd);
    }
    assert!(ca.stats().revocations > 0 && ca.stats().request_ids > 0);
    ca
}

/// A small state with every section non-empty (keeps the byte-by-byte tests fast).
fn small_state() -> CaState {
    let mut ca = ca();
    issue(
        &mut ca,
        2,
        vec![
            IssueRequest {
                request_id: Some([1; 16]),
                ..request(1)
            },
            request(2),
        ],
    );
    ca.apply(
        3,
        &Command::Revoke {
            now_ms: NOW_MS,
            serial: 2,
            reason: RevocationReason::Superseded,
        },
    );
    ca.apply(
        4,
        &Command::Renew {
            now_ms: NOW_MS,
            serial: 1,
            validity_ms: DAY_MS,
        },
    );
    let stats = ca.stats();
    assert_eq!(
        (stats.mics, stats.revocations, stats.request_ids),
        (3, 1, 1)
    );
    ca
}

#[test]
fn restore_rejects_truncation_and_trailing_bytes() {
    let bytes = small_state().snapshot();
    for len in 0..bytes.len() {
        assert!(
            CaState::restore(&bytes[..len]).is_err(),
            "truncated to {len} bytes was accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        CaState::restore(&longer).map(|_| ()),
        Err(SnapshotError::TrailingBytes { count: 1 })
    );
    assert_eq!(
        CaState::restore(b"XXXX").map(|_| ()),
        Err(SnapshotError::BadMagic)
    );
    let mut version = bytes.clone();
    version[4] = 2;
    assert_eq!(
        CaState::restore(&version).map(|_| ()),
        Err(SnapshotError::UnsupportedVersion { version: 2 })
    );
}

#[test]
fn restore_rejects_every_flipped_byte() {
    let bytes = small_state().snapshot();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x01;
        assert!(
            CaState::restore(&damaged).is_err(),
            "bit flip at byte {i} was accepted"
        );
    }
}

#[test]
fn restore_names_the_damaged_section() {
    let mut ca = ca();
    issue(&mut ca, 2, vec![request(1), request(2)]);
    let bytes = ca.snapshot();
    // Layout: magic 4, version 1, last_applied tag+8, key tag+4+32, circuits 2 + (2+4+3+4+2),
    // next_serial 8, MIC count 8, then the first MIC's length and bytes.
    let next_serial_at = 4 + 1 + 9 + 37 + 2 + 15;
    let mut wrong_count = bytes.clone();
    wrong_count[next_serial_at + 7] = 9;
    assert!(matches!(
        CaState::restore(&wrong_count),
        Err(SnapshotError::Corrupt {
            section: "mics",
            ..
        })
    ));
    let mic_at = next_serial_at + 16 + 2;
    let mut bad_mic = bytes.clone();
    bad_mic[mic_at] = b'Z';
    match CaState::restore(&bad_mic) {
        Err(SnapshotError::Corrupt { section, reason }) => {
            assert_eq!(section, "mics");
            assert!(reason.contains("bad magic"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn seeded_random_snapshot_mutations_never_panic() {
    let bytes = busy_state().snapshot();
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..2_000 {
        let mut m = bytes.clone();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..m.len());
            match rng.gen_range(0..3) {
                0 => m[i] = rng.r#gen(),
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, rng.r#gen()),
            }
        }
        assert!(CaState::restore(&m).is_err(), "a mutated snapshot restored");
    }
}

#[test]
fn command_and_response_round_trip_through_serde() {
    let mut ca = ca();
    let cmd = Command::Issue {
        now_ms: NOW_MS,
        requests: vec![IssueRequest {
            request_id: Some([1; 16]),
            ..request(1)
        }],
    };
    let json = serde_json::to_string(&cmd).expect("serialize");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("parse"), cmd);
    let response = ca.apply(2, &cmd);
    let json = serde_json::to_string(&response).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Response>(&json).expect("parse"),
        response
    );
    let boot = bootstrap();
    let json = serde_json::to_string(&boot).expect("serialize");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("parse"), boot);
    let mut rng = StdRng::seed_from_u64(1);
    let generated = Bootstrap::generate(&mut rng, 3, vec![]);
    let again = Bootstrap::generate(&mut StdRng::seed_from_u64(1), 3, vec![]);
    assert_eq!(generated, again, "a seeded proposer generates the same key");
    assert_ne!(generated.ca_secret_key, [0; 32]);
}

/// Not a check: writes seed inputs for the cargo-fuzz targets (`trust/core/fuzz/README.md`).
/// Run with `cargo test -p nexus-trust-core --test ca_state -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "tool: writes fuzz seed corpora under trust/core/fuzz/corpus"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let ca = busy_state();
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    write("snapshot", "busy".into(), &ca.snapshot());
    write("snapshot", "empty".into(), &CaState::default().snapshot());
    write("snapshot", "bootstrapped".into(), &self::ca().snapshot());
    for mic in ca.list(0, 20) {
        write("mic", format!("serial-{}", mic.body.serial), &mic.encode());
    }
    for record in ca.revocations_after(0, 20) {
        write(
            "revocation",
            format!("seq-{}", record.seq),
            &record.encode(),
        );
    }
}

// ---- Command::IssueSigned: the leader signs once, members use its signatures ----

/// A batch that exercises every kind of outcome: new MICs, a retry of an earlier request id, a
/// request id repeated inside the batch, a refused request, and provenance on a MIC issued
/// earlier in the same batch.
fn mixed_batch(ca: &CaState) -> Vec<IssueRequest> {
    let first = ca.next_serial();
    let mut with_id = request(50);
    with_id.request_id = Some([5; 16]);
    let mut refused = request(51);
    refused.validity_ms = 1;
    let mut child = request(52);
    child.provenance = vec![first];
    vec![
        request(53),
        with_id.clone(),
        refused,
        with_id,
        child,
        request(54),
    ]
}

/// Applies `requests` once as `Issue` and once as `IssueSigned` (planned at `guess`), on two
/// replicas with the same history; returns both answers and both snapshots.
fn issue_both_ways(
    history: &[Vec<IssueRequest>],
    requests: &[IssueRequest],
    guess: impl Fn(&CaState) -> u64,
    key_id: impl Fn(u32) -> u32,
) -> (Response, Response, Vec<u8>, Vec<u8>) {
    let (mut plain, mut signed) = (ca(), ca());
    let mut index = 1;
    for batch in history {
        index += 1;
        issue(&mut plain, index, batch.clone());
        issue(&mut signed, index, batch.clone());
    }
    index += 1;
    let a = plain.apply(
        index,
        &Command::Issue {
            now_ms: NOW_MS,
            requests: requests.to_vec(),
        },
    );
    let plan = signed
        .plan_issue(NOW_MS, requests, guess(&signed))
        .expect("bootstrapped");
    let (ca_key_id, signatures) = plan.sign();
    let b = signed.apply(
        index,
        &Command::IssueSigned {
            now_ms: NOW_MS,
            ca_key_id: key_id(ca_key_id),
            requests: requests.to_vec(),
            signatures,
        },
    );
    (a, b, plain.snapshot(), signed.snapshot())
}

#[test]
fn issue_signed_yields_the_same_answers_and_state_as_issue() {
    let history = vec![vec![request(1), request(2)]];
    let mut probe = ca();
    issue(&mut probe, 2, history[0].clone());
    let requests = mixed_batch(&probe);
    let (a, b, sa, sb) = issue_both_ways(&history, &requests, CaState::next_serial, |id| id);
    assert_eq!(a, b);
    assert_eq!(sa, sb, "snapshots differ");
    let Response::Issued(results) = a else {
        panic!("{a:?}")
    };
    // New, new (id), refused, retry of the id (same MIC), child of the first, new.
    assert!(results[0].is_ok() && results[1].is_ok() && results[4].is_ok());
    assert!(matches!(
        results[2],
        Err(CaError::ValidityOutOfRange { .. })
    ));
    assert_eq!(results[3], results[1]);
    assert_eq!(
        results[4].as_ref().expect("test value").body.provenance,
        vec![results[0].as_ref().expect("test value").body.serial]
    );
}

#[test]
fn the_plan_predicts_exactly_the_new_mics() {
    let ca = ca();
    let requests = mixed_batch(&ca);
    let plan = ca.plan_issue(NOW_MS, &requests, 1).expect("bootstrapped");
    // Requests 0, 1, 4 (child of 0, issued in the same batch) and 5 make new MICs; 2 is
    // refused, 3 is a retry of 1.
    assert_eq!(plan.new_mics(), 4);
    let (key_id, signatures) = plan.sign();
    assert_eq!(key_id, 7);
    let serials: Vec<Option<u64>> = signatures.iter().map(|s| s.map(|p| p.serial)).collect();
    assert_eq!(
        serials,
        vec![Some(1), Some(2), None, None, Some(3), Some(4)]
    );
    // Planned later (entries in flight), the child's parent is not in the batch: no serial.
    let later = ca.plan_issue(NOW_MS, &requests, 10).expect("bootstrapped");
    assert_eq!(later.new_mics(), 3);
    // Not bootstrapped: no plan.
    assert!(
        CaState::default()
            .plan_issue(NOW_MS, &requests, 1)
            .is_none()
    );
}

#[test]
fn a_wrong_serial_guess_or_key_id_falls_back_to_signing_on_apply() {
    let history = vec![vec![request(1), request(2), request(3)]];
    for guess_offset in [1u64, 7] {
        for wrong_key in [false, true] {
            let (a, b, sa, sb) = issue_both_ways(
                &history,
                &[request(10), request(11)],
                |ca| ca.next_serial() + guess_offset * u64::from(!wrong_key),
                |id| if wrong_key { id + 1 } else { id },
            );
            assert_eq!(a, b, "offset {guess_offset}, wrong key {wrong_key}");
            assert_eq!(sa, sb);
        }
    }
    // A guess that is too low (an earlier entry was not counted) also falls back.
    let (a, b, sa, sb) =
        issue_both_ways(&history, &[request(10)], |ca| ca.next_serial() - 1, |id| id);
    assert_eq!((a, sa), (b, sb));
}

#[test]
fn issue_signed_with_a_signature_count_mismatch_is_refused_whole() {
    let mut ca = ca();
    let requests = vec![request(1), request(2)];
    let (ca_key_id, mut signatures) = ca
        .plan_issue(NOW_MS, &requests, ca.next_serial())
        .expect("test value")
        .sign();
    signatures.pop();
    let before = ca.snapshot();
    let response = ca.apply(
        2,
        &Command::IssueSigned {
            now_ms: NOW_MS,
            ca_key_id,
            requests,
            signatures,
        },
    );
    assert_eq!(
        response,
        Response::Error(CaError::PresignedCount {
            requests: 2,
            signatures: 1
        })
    );
    assert_eq!(ca.stats().mics, 0);
    assert_eq!(ca.next_serial(), 1);
    assert_ne!(before, ca.snapshot(), "last_applied advances");
    // Refused before bootstrap and over the batch limit too, like Issue.
    let mut fresh = CaState::default();
    assert_eq!(
        fresh.apply(
            1,
            &Command::IssueSigned {
                now_ms: NOW_MS,
                ca_key_id: 7,
                requests: vec![],
                signatures: vec![],
            }
        ),
        Response::Error(CaError::NotBootstrapped)
    );
    let many = vec![request(1); ISSUE_BATCH_MAX + 1];
    assert!(matches!(
        ca.apply(
            3,
            &Command::IssueSigned {
                now_ms: NOW_MS,
                ca_key_id: 7,
                signatures: vec![None; many.len()],
                requests: many,
            }
        ),
        Response::Error(CaError::BatchTooLarge { .. })
    ));
}

#[test]
fn issue_signed_round_trips_through_json_and_rejects_bad_signatures_fields() {
    let ca = ca();
    let requests = vec![request(1)];
    let (ca_key_id, signatures) = ca
        .plan_issue(NOW_MS, &requests, 1)
        .expect("test value")
        .sign();
    let cmd = Command::IssueSigned {
        now_ms: NOW_MS,
        ca_key_id,
        requests,
        signatures,
    };
    let json = serde_json::to_string(&cmd).expect("test value");
    assert_eq!(
        serde_json::from_str::<Command>(&json).expect("test value"),
        cmd
    );
    // A signature of the wrong length, non-hex, or an unknown field is refused.
    let sig = hex::encode(match &cmd {
        Command::IssueSigned { signatures, .. } => signatures[0].expect("test value").signature,
        _ => unreachable!(),
    });
    for (bad, what) in [
        (json.replace(&sig, &sig[..126]), "128 hex characters"),
        (
            json.replace(&sig, &format!("zz{}", &sig[2..])),
            "invalid hex",
        ),
        (
            json.replace("\"serial\":1,", "\"serial\":1,\"extra\":0,"),
            "unknown field",
        ),
        (
            json.replace("\"body_sha256\":\"", "\"body_sha256\":\"00"),
            "64 hex characters",
        ),
    ] {
        let err = serde_json::from_str::<Command>(&bad).expect_err("must fail");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
}

/// Plans and signs one request on `ca`, lets `tamper` spoil the presigned entry, and applies the
/// batch.
fn apply_tampered_presign(ca: &mut CaState, tamper: impl FnOnce(&mut Presigned)) -> Response {
    let requests = vec![request(1)];
    let (ca_key_id, mut signatures) = ca
        .plan_issue(NOW_MS, &requests, 1)
        .expect("test value")
        .sign();
    tamper(signatures[0].as_mut().expect("a new MIC is planned"));
    ca.apply(
        2,
        &Command::IssueSigned {
            now_ms: NOW_MS,
            ca_key_id,
            requests,
            signatures,
        },
    )
}

/// A presigned entry whose body digest differs from the body apply builds (a planning bug) is
/// not used: the member signs itself, and the MIC verifies — in release builds too, where the
/// signature itself is not checked.
#[test]
fn a_presigned_signature_for_another_body_is_not_used() {
    let mut ca = ca();
    let answer = apply_tampered_presign(&mut ca, |p| {
        p.signature = [7; 64]; // would not verify
        p.body_sha256[0] ^= 1; // and names another body
    });
    let Response::Issued(results) = answer else {
        panic!("issued: {answer:?}");
    };
    let mic = results[0].as_ref().expect("issued");
    assert_ne!(mic.signature, [7; 64]);
    mic.verify(ca.ca_keys(), NOW_MS)
        .expect("the member signed it itself");
}

/// Debug builds check every presigned signature the state uses: a leader that signed something
/// else is a bug that must surface, not a certificate that does not verify.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "presigned MIC signature differs")]
fn a_forged_presigned_signature_panics_in_debug_builds() {
    apply_tampered_presign(&mut ca(), |p| p.signature[0] ^= 1);
}
