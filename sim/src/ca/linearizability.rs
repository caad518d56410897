//! `ca_linearizable` and `ca_replicas_agree`: is the CA's client-visible behaviour that of one
//! sequential CA, and do all voters end with the same certificates?
//!
//! # Why
//!
//! The CA promises linearizability: an acknowledged issue, renew or revoke took effect exactly
//! once at some instant between its invocation and its answer, and a read reflects every write
//! acknowledged before it was invoked. Partitions, crashes and leader changes are where Raft
//! implementations (and the layers around them: forwarding, request-id deduplication, reads
//! served by a follower) lose or duplicate writes or serve stale reads. A client cannot see that
//! in one answer; it shows only in the history of many clients' answers.
//!
//! # What `ca_linearizable` checks
//!
//! The sequential model: each serial is `absent → issued → revoked`; `issue` allocates the next
//! serial (idempotently per request id), `renew s` requires `s` issued and not revoked and
//! allocates a new serial (it does not change `s`), `revoke s` moves an issued `s` to revoked
//! and returns the same record when repeated, `get s` observes the state of `s`, `list` observes
//! the set of serials (always `1..=k`, since serials are dense).
//!
//! Checking a whole history against that model is NP-complete in general, but the model is
//! **P-compositional** (Horn & Kroening): the per-serial state machines are independent except
//! for serial allocation, so the history is checked as
//!
//! 1. **per serial**, with a Wing–Gong search: the operations on serial `s` (its creation, the
//!    renews, revokes and gets that name it, and every voter's final read of it) must have a
//!    total order that respects real time (an operation answered before another was invoked
//!    comes first) and is legal in the `absent → issued → revoked` machine. Operations with an
//!    unknown outcome (timeouts) may be placed anywhere after their invocation or left out.
//!    A serial observed to exist that no acknowledged operation created is attributed to one of
//!    the creations whose outcome is unknown (a virtual creation invoked at the earliest of
//!    them); if there is none, the serial is a phantom;
//! 2. **serial allocation** across keys: serials are unique (no two distinct creations — issue
//!    request ids or renews — got the same serial); every attempt of one request id got the same
//!    serial (idempotent retries); if creation A was answered before creation B was first
//!    invoked, `serial(A) < serial(B)`; a `list` answered `1..=k` with `k` at least the largest
//!    serial acknowledged before it was invoked and below every serial created only after it
//!    was answered; serials nobody was told about number no more than the creations with
//!    unknown outcome;
//! 3. **bytes**: every answer naming a serial (issue, renew, get, every voter's final state)
//!    carries the same MIC bytes, and every revoke of one serial the same record bytes.
//!
//! What it does not check: the MIC contents against the request (the CA state tests do that)
//! and liveness (an operation that never succeeds is not a violation).
//!
//! # What `ca_replicas_agree` checks
//!
//! After the final heal, every voter's state holds every acknowledged certificate and
//! revocation with identical bytes, and all voters hold exactly the same certificates and
//! revocations (a voter that did not answer the final read is a violation).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::history::{GetView, History, Op, OpKind, OpResult, Refusal, Serial};

/// Most operations on one serial the search takes (its memo keys are 128-bit sets).
pub const OPS_PER_SERIAL_MAX: usize = 128;

/// A violation: when (virtual µs) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time of the operation that cannot be explained, µs.
    pub at_us: u64,
    /// What is wrong, naming operations.
    pub detail: String,
}

/// What a passing check measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations judged (not counting those certainly not applied).
    pub ops: usize,
    /// Attempts with an unknown outcome.
    pub unknown: usize,
    /// Serials checked.
    pub serials: usize,
    /// Search states visited in all.
    pub states: u64,
}

/// Who created a serial: an issue request id or one renew operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Creator {
    Issue([u8; 16]),
    Renew(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    Absent,
    Issued,
    Revoked,
}

/// One operation as the per-serial search sees it.
#[derive(Clone, Debug)]
struct KeyOp {
    /// History op id (`None` for the virtual creation and final reads).
    op: Option<usize>,
    label: String,
    invoked_us: u64,
    /// `None`: unknown outcome (optional, no deadline).
    completed_us: Option<u64>,
    effect: Effect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// An acknowledged creation that must find the serial absent.
    Create,
    /// An acknowledged attempt of the request id that created it: creates if absent, else
    /// returns the existing MIC.
    CreateOrExisting,
    /// An unknown-outcome creation (optional): creates if absent.
    MaybeCreate,
    /// Requires the state to be exactly this.
    Observe(State),
    /// Requires issued or revoked; ends revoked.
    Revoke,
    /// Unknown-outcome revoke (optional): issued → revoked, else nothing.
    MaybeRevoke,
    /// Requires issued (renew succeeded on it).
    RequireLive,
}

impl Effect {
    /// The state after applying in `s`, or `None` if illegal there.
    fn apply(self, s: State) -> Option<State> {
        match (self, s) {
            (Effect::Create, State::Absent) => Some(State::Issued),
            (Effect::Create, _) => None,
            (Effect::CreateOrExisting | Effect::MaybeCreate, State::Absent) => Some(State::Issued),
            (Effect::CreateOrExisting | Effect::MaybeCreate, other) => Some(other),
            (Effect::Observe(want), s) => (want == s).then_some(s),
            (Effect::Revoke, State::Absent) => None,
            (Effect::Revoke, _) => Some(State::Revoked),
            (Effect::MaybeRevoke, State::Issued) => Some(State::Revoked),
            (Effect::MaybeRevoke, s) => Some(s),
            (Effect::RequireLive, State::Issued) => Some(State::Issued),
            (Effect::RequireLive, _) => None,
        }
    }
}

/// The serial an operation created, if it was an acknowledged creation.
fn created(op: &Op) -> Option<(Serial, &[u8])> {
    match &op.result {
        OpResult::Issued { serial, mic } | OpResult::Renewed { serial, mic } => {
            Some((*serial, mic.as_slice()))
        }
        _ => None,
    }
}

fn creator(op: &Op) -> Option<Creator> {
    match op.kind {
        OpKind::Issue { request_id } => Some(Creator::Issue(request_id)),
        OpKind::Renew { .. } => Some(Creator::Renew(op.id)),
        _ => None,
    }
}

/// Checks `ca_linearizable` (see the module docs).
pub fn check_linearizable(history: &History) -> Result<Summary, Violation> {
    // Operations that certainly did not reach the log have no effect; reads whose answer was
    // lost tell nothing.
    let ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| {
            !matches!(
                (&op.result, &op.kind),
                (OpResult::NotApplied(_), _)
                    | (OpResult::Unknown(_), OpKind::Get { .. } | OpKind::List)
            )
        })
        .collect();
    let unknown = |op: &Op| matches!(op.result, OpResult::Unknown(_));
    let mut summary = Summary {
        ops: ops.len(),
        unknown: ops.iter().filter(|o| unknown(o)).count(),
        ..Summary::default()
    };

    // --- Serial allocation -------------------------------------------------------------------
    // First invocation of every request id (a retry's creation may date from the first attempt).
    let mut first_invoked: BTreeMap<[u8; 16], u64> = BTreeMap::new();
    for op in &ops {
        if let OpKind::Issue { request_id } = op.kind {
            let e = first_invoked.entry(request_id).or_insert(op.invoked_us);
            *e = (*e).min(op.invoked_us);
        }
    }
    let effective_invoked = |op: &Op| match op.kind {
        OpKind::Issue { request_id } => first_invoked
            .get(&request_id)
            .copied()
            .unwrap_or(op.invoked_us),
        _ => op.invoked_us,
    };
    // serial → (creator, first op that acknowledged it, its bytes)
    let mut by_serial: BTreeMap<Serial, (Creator, &Op, &[u8])> = BTreeMap::new();
    // request id → (serial, op)
    let mut by_request: BTreeMap<[u8; 16], (Serial, &Op)> = BTreeMap::new();
    for op in &ops {
        let (Some((serial, mic)), Some(who)) = (created(op), creator(op)) else {
            continue;
        };
        if let Creator::Issue(rid) = who {
            match by_request.get(&rid) {
                Some((s, first)) if *s != serial => {
                    return Err(Violation {
                        at_us: op.completed_us.unwrap_or(op.invoked_us),
                        detail: format!(
                            "an idempotent retry returned serial {serial}, an earlier attempt of the \
                             same request id returned serial {s}: {first}; {op}"
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    by_request.insert(rid, (serial, op));
                }
            }
        }
        match by_serial.get(&serial) {
            Some((other, first, _)) if *other != who => {
                return Err(Violation {
                    at_us: op.completed_us.unwrap_or(op.invoked_us),
                    detail: format!(
                        "duplicate serial {serial}: two different creations were told they got it: \
                         {first}; {op}"
                    ),
                });
            }
            Some((_, first, bytes)) if *bytes != mic => {
                return Err(Violation {
                    at_us: op.completed_us.unwrap_or(op.invoked_us),
                    detail: format!(
                        "serial {serial} was acknowledged with different MIC bytes: {first}; {op}"
                    ),
                });
            }
            Some(_) => {}
            None => {
                by_serial.insert(serial, (who, op, mic));
            }
        }
    }
    // Real-time order of allocation: A answered before B was first invoked ⇒ serial(A) <
    // serial(B). Sorted by effective invocation, B only needs comparing with the largest serial
    // of creations answered before it.
    let mut creations: Vec<(Serial, &Op, u64)> = ops
        .iter()
        .filter_map(|op| created(op).map(|(s, _)| (s, *op, effective_invoked(op))))
        .collect();
    creations.sort_by_key(|(_, op, inv)| (*inv, op.id));
    let mut by_completion: Vec<(u64, Serial, &Op)> = creations
        .iter()
        .filter_map(|(s, op, _)| op.completed_us.map(|c| (c, *s, *op)))
        .collect();
    by_completion.sort_by_key(|(c, _, op)| (*c, op.id));
    {
        let mut k = 0;
        let mut best: Option<(Serial, &Op)> = None;
        for (serial, op, inv) in &creations {
            while k < by_completion.len() && by_completion[k].0 < *inv {
                let (_, s, o) = by_completion[k];
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, o));
                }
                k += 1;
            }
            if let Some((b, before)) = best
                && b >= *serial
                && creator(before) != creator(op)
            {
                return Err(Violation {
                    at_us: op.completed_us.unwrap_or(*inv),
                    detail: format!(
                        "serial {serial} was allocated after serial {b} although the creation of \
                         {b} was answered before this one was invoked: {before}; {op}"
                    ),
                });
            }
        }
    }
    // Creations whose outcome is unknown and never acknowledged by a retry.
    let unknown_creations: Vec<&Op> = ops
        .iter()
        .filter(|op| unknown(op))
        .filter(|op| match op.kind {
            OpKind::Issue { request_id } => !by_request.contains_key(&request_id),
            OpKind::Renew { .. } => true,
            _ => false,
        })
        .copied()
        .collect();
    // Request ids count once however often they were retried.
    let unknown_creation_count = {
        let rids: BTreeSet<[u8; 16]> = unknown_creations
            .iter()
            .filter_map(|op| match op.kind {
                OpKind::Issue { request_id } => Some(request_id),
                _ => None,
            })
            .collect();
        rids.len()
            + unknown_creations
                .iter()
                .filter(|op| matches!(op.kind, OpKind::Renew { .. }))
                .count()
    };
    let earliest_unknown_creation = unknown_creations.iter().map(|op| op.invoked_us).min();

    // Serials seen anywhere.
    let mut seen: BTreeSet<Serial> = by_serial.keys().copied().collect();
    for op in &ops {
        match &op.result {
            OpResult::Got(Some(_)) => {
                if let OpKind::Get { serial } = op.kind {
                    seen.insert(serial);
                }
            }
            OpResult::Listed(serials) => seen.extend(serials.iter().copied()),
            _ => {}
        }
    }
    for f in &history.finals {
        seen.extend(f.mics.keys().copied());
    }
    let phantoms: Vec<Serial> = seen
        .iter()
        .filter(|s| !by_serial.contains_key(s))
        .copied()
        .collect();
    if phantoms.len() > unknown_creation_count {
        return Err(Violation {
            at_us: history.final_us,
            detail: format!(
                "{} serials exist that no client was told about ({}), but only {} creations had an \
                 unknown outcome",
                phantoms.len(),
                list_serials(&phantoms),
                unknown_creation_count
            ),
        });
    }

    // Lists: the answer is 1..=k, within the bounds real time sets.
    for op in &ops {
        let OpResult::Listed(serials) = &op.result else {
            continue;
        };
        let Some(done) = op.completed_us else {
            continue;
        };
        let k = serials.len() as u64;
        if serials.iter().copied().ne(1..=k) {
            return Err(Violation {
                at_us: done,
                detail: format!("a list answered serials that are not 1..={k}: {op}"),
            });
        }
        if let Some((_, before)) = by_completion
            .iter()
            .filter(|(c, _, _)| *c < op.invoked_us)
            .map(|(_, s, o)| (*s, *o))
            .max_by_key(|(s, _)| *s)
            .filter(|(s, _)| *s > k)
        {
            return Err(Violation {
                at_us: done,
                detail: format!(
                    "stale list: it answered {k} serials, but {before} was acknowledged before the \
                     list was invoked: {op}"
                ),
            });
        }
        if let Some((s, after, _)) = creations
            .iter()
            .filter(|(_, _, inv)| *inv > done)
            .min_by_key(|(s, _, _)| *s)
            .filter(|(s, _, _)| *s <= k)
        {
            return Err(Violation {
                at_us: done,
                detail: format!(
                    "a list answered serial {s}, created only by an operation invoked after the \
                     list was answered: {op}; {after}"
                ),
            });
        }
    }

    // --- Bytes -------------------------------------------------------------------------------
    let mut records: BTreeMap<Serial, (&[u8], &Op)> = BTreeMap::new();
    for op in &ops {
        match (&op.kind, &op.result) {
            (OpKind::Get { serial }, OpResult::Got(Some(GetView { mic, .. }))) => {
                if let Some((_, first, bytes)) = by_serial.get(serial)
                    && *bytes != mic.as_slice()
                {
                    return Err(Violation {
                        at_us: op.completed_us.unwrap_or(op.invoked_us),
                        detail: format!(
                            "a read of serial {serial} returned different MIC bytes than its \
                             creation: {first}; {op}"
                        ),
                    });
                }
            }
            (OpKind::Revoke { serial }, OpResult::Revoked { record, .. }) => {
                match records.get(serial) {
                    Some((bytes, first)) if *bytes != record.as_slice() => {
                        return Err(Violation {
                            at_us: op.completed_us.unwrap_or(op.invoked_us),
                            detail: format!(
                                "two revokes of serial {serial} returned different records (a \
                                 repeated revoke must return the first): {first}; {op}"
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        records.insert(*serial, (record.as_slice(), op));
                    }
                }
            }
            _ => {}
        }
    }
    for f in &history.finals {
        for (serial, bytes) in &f.mics {
            if let Some((_, first, acked)) = by_serial.get(serial)
                && *acked != bytes.as_slice()
            {
                return Err(Violation {
                    at_us: history.final_us,
                    detail: format!(
                        "voter n{} holds serial {serial} with different bytes than were \
                         acknowledged: {first}",
                        f.voter + 1
                    ),
                });
            }
        }
    }

    // --- Per serial (Wing–Gong) --------------------------------------------------------------
    let mut per_key: BTreeMap<Serial, Vec<KeyOp>> = BTreeMap::new();
    for op in &ops {
        let label = op.to_string();
        let mut push = |serial: Serial, effect: Effect| {
            per_key.entry(serial).or_default().push(KeyOp {
                op: Some(op.id),
                label: label.clone(),
                invoked_us: op.invoked_us,
                completed_us: op.completed_us,
                effect,
            });
        };
        match (&op.kind, &op.result) {
            (OpKind::Issue { .. }, OpResult::Issued { serial, .. }) => {
                push(*serial, Effect::CreateOrExisting);
            }
            (OpKind::Issue { request_id }, OpResult::Unknown(_)) => {
                // An unknown attempt of a request id that some retry got acknowledged: it may
                // be the attempt that created the serial.
                if let Some((serial, _)) = by_request.get(request_id) {
                    push(*serial, Effect::MaybeCreate);
                }
            }
            (OpKind::Renew { serial }, result) => match result {
                OpResult::Renewed { serial: new, .. } => {
                    push(*serial, Effect::RequireLive);
                    push(*new, Effect::Create);
                }
                OpResult::Refused(Refusal::UnknownSerial) => {
                    push(*serial, Effect::Observe(State::Absent));
                }
                OpResult::Refused(Refusal::Revoked) => {
                    push(*serial, Effect::Observe(State::Revoked));
                }
                // Unknown renews do not change `serial`; their possible new serial is covered
                // by the virtual creation below.
                _ => {}
            },
            (OpKind::Revoke { serial }, result) => match result {
                OpResult::Revoked { .. } => push(*serial, Effect::Revoke),
                OpResult::Refused(Refusal::UnknownSerial) => {
                    push(*serial, Effect::Observe(State::Absent));
                }
                OpResult::Unknown(_) => push(*serial, Effect::MaybeRevoke),
                _ => {}
            },
            (OpKind::Get { serial }, OpResult::Got(view)) => {
                let state = match view {
                    None => State::Absent,
                    Some(v) if v.revoked => State::Revoked,
                    Some(_) => State::Issued,
                };
                push(*serial, Effect::Observe(state));
            }
            _ => {}
        }
    }
    for f in &history.finals {
        for &serial in &seen {
            let state = match (
                f.mics.contains_key(&serial),
                f.revocations.contains_key(&serial),
            ) {
                (false, _) => State::Absent,
                (true, true) => State::Revoked,
                (true, false) => State::Issued,
            };
            per_key.entry(serial).or_default().push(KeyOp {
                op: None,
                label: format!("final read of n{}", f.voter + 1),
                invoked_us: history.final_us,
                completed_us: Some(history.final_us),
                effect: Effect::Observe(state),
            });
        }
    }
    for (serial, key_ops) in &mut per_key {
        if !by_serial.contains_key(serial) {
            // Created, if at all, by an operation whose outcome is unknown.
            let invoked_us = earliest_unknown_creation.unwrap_or(u64::MAX);
            key_ops.push(KeyOp {
                op: None,
                label: "a creation with unknown outcome".into(),
                invoked_us,
                completed_us: None,
                effect: Effect::MaybeCreate,
            });
        }
        key_ops.sort_by_key(|k| (k.invoked_us, k.op));
        summary.serials += 1;
        summary.states += check_key(*serial, key_ops)?;
    }
    Ok(summary)
}

fn list_serials(s: &[Serial]) -> String {
    let shown: Vec<String> = s.iter().take(10).map(|s| s.to_string()).collect();
    let more = if s.len() > 10 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Wing–Gong search over one serial's operations. Returns the states visited.
fn check_key(serial: Serial, ops: &[KeyOp]) -> Result<u64, Violation> {
    if ops.len() > OPS_PER_SERIAL_MAX {
        return Err(Violation {
            at_us: ops.last().map(|o| o.invoked_us).unwrap_or(0),
            detail: format!(
                "serial {serial} has {} operations; the checker takes at most \
                 {OPS_PER_SERIAL_MAX} per serial (shorten the scenario or widen the serial space)",
                ops.len()
            ),
        });
    }
    let required: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.completed_us.is_some())
        .fold(0, |m, (i, _)| m | (1u128 << i));
    let mut search = Search {
        ops,
        required,
        memo: HashSet::new(),
        deepest: 0,
        stuck_at: None,
        visited: 0,
    };
    if search.dfs(0, State::Absent, 0) {
        return Ok(search.visited);
    }
    let culprit = search
        .stuck_at
        .and_then(|i| ops.get(i))
        .or_else(|| ops.iter().find(|o| o.completed_us.is_some()));
    let at_us = culprit
        .and_then(|o| o.completed_us)
        .unwrap_or_else(|| ops.last().map(|o| o.invoked_us).unwrap_or(0));
    let shown: Vec<&str> = ops.iter().take(12).map(|o| o.label.as_str()).collect();
    let more = if ops.len() > 12 { "; …" } else { "" };
    Err(Violation {
        at_us,
        detail: format!(
            "serial {serial}: no sequential CA explains its {} operations (stuck at {}); they are: \
             {}{more}",
            ops.len(),
            culprit.map(|o| o.label.as_str()).unwrap_or("?"),
            shown.join("; ")
        ),
    })
}

struct Search<'a> {
    ops: &'a [KeyOp],
    /// Completed operations: every one must be linearized.
    required: u128,
    /// (linearized set, state) pairs already explored without success.
    memo: HashSet<(u128, State)>,
    /// Most completed operations linearized on any path.
    deepest: u32,
    /// At that depth, the pending completed operation with the earliest answer.
    stuck_at: Option<usize>,
    visited: u64,
}

impl Search<'_> {
    fn dfs(&mut self, done: u128, state: State, depth: u32) -> bool {
        self.visited += 1;
        if done & self.required == self.required {
            return true;
        }
        if !self.memo.insert((done, state)) {
            return false;
        }
        // The earliest answer among completed operations not yet placed: whatever comes next
        // must have been invoked by then (else that operation precedes it in real time).
        let (horizon, first) = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| done & (1 << i) == 0)
            .filter_map(|(i, o)| o.completed_us.map(|c| (c, i)))
            .min()
            .unwrap_or((u64::MAX, usize::MAX));
        if depth >= self.deepest {
            self.deepest = depth;
            self.stuck_at = Some(first);
        }
        for (i, o) in self.ops.iter().enumerate() {
            if done & (1 << i) != 0 || o.invoked_us > horizon {
                continue;
            }
            if let Some(next) = o.effect.apply(state) {
                let d = depth + u32::from(o.completed_us.is_some());
                if self.dfs(done | (1 << i), next, d) {
                    return true;
                }
            }
        }
        false
    }
}

/// Checks `ca_replicas_agree` (see the module docs). Returns the number of certificates every
/// voter holds.
pub fn check_replicas(history: &History) -> Result<usize, Violation> {
    let at_us = history.final_us;
    if let Some((v, why)) = history.missing_finals.first() {
        return Err(Violation {
            at_us,
            detail: format!(
                "voter n{} did not answer the final linearizable read after the heal (last \
                 error: {why})",
                v + 1
            ),
        });
    }
    let Some(first) = history.finals.first() else {
        return Err(Violation {
            at_us,
            detail: "no voter answered the final read".into(),
        });
    };
    for op in &history.ops {
        let (serial, want, what) = match (&op.kind, &op.result) {
            (_, OpResult::Issued { serial, mic } | OpResult::Renewed { serial, mic }) => {
                (*serial, mic, "certificate")
            }
            (OpKind::Revoke { serial }, OpResult::Revoked { record, .. }) => {
                (*serial, record, "revocation")
            }
            _ => continue,
        };
        for f in &history.finals {
            let held = match what {
                "certificate" => f.mics.get(&serial),
                _ => f.revocations.get(&serial),
            };
            match held {
                None => {
                    return Err(Violation {
                        at_us,
                        detail: format!(
                            "acknowledged {what} for serial {serial} is missing on voter n{} after \
                             the heal: {op}",
                            f.voter + 1
                        ),
                    });
                }
                Some(bytes) if bytes != want => {
                    return Err(Violation {
                        at_us,
                        detail: format!(
                            "voter n{} holds the {what} for serial {serial} with different bytes \
                             than were acknowledged: {op}",
                            f.voter + 1
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
    for f in &history.finals[1..] {
        if f.mics != first.mics || f.revocations != first.revocations {
            let diff = |a: &BTreeMap<Serial, Vec<u8>>, b: &BTreeMap<Serial, Vec<u8>>| {
                a.iter()
                    .filter(|(k, v)| b.get(k) != Some(v))
                    .map(|(k, _)| *k)
                    .chain(b.keys().filter(|k| !a.contains_key(k)).copied())
                    .collect::<BTreeSet<Serial>>()
            };
            let mut serials = diff(&first.mics, &f.mics);
            serials.extend(diff(&first.revocations, &f.revocations));
            let serials: Vec<Serial> = serials.into_iter().collect();
            return Err(Violation {
                at_us,
                detail: format!(
                    "voters n{} and n{} differ after the heal ({} vs {} certificates, {} vs {} \
                     revocations; serials {})",
                    first.voter + 1,
                    f.voter + 1,
                    first.mics.len(),
                    f.mics.len(),
                    first.revocations.len(),
                    f.revocations.len(),
                    list_serials(&serials)
                ),
            });
        }
    }
    Ok(first.mics.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::history::VoterFinal;

    fn rid(n: u8) -> [u8; 16] {
        [n; 16]
    }

    struct H {
        ops: Vec<Op>,
    }

    impl H {
        fn new() -> Self {
            H { ops: Vec::new() }
        }

        fn op(&mut self, kind: OpKind, inv: u64, done: Option<u64>, result: OpResult) -> &mut Self {
            let id = self.ops.len();
            self.ops.push(Op {
                id,
                client: id % 3,
                voter: 0,
                kind,
                invoked_us: inv,
                completed_us: done,
                result,
            });
            self
        }

        /// An operation invoked at `inv` whose outcome the client never learnt (a timeout).
        fn unknown(&mut self, kind: OpKind, inv: u64) -> &mut Self {
            self.op(kind, inv, None, OpResult::Unknown("timeout".into()))
        }

        /// A history the checker must refuse, with a detail naming `needle`.
        fn must_fail(&self, needle: &str) -> Violation {
            let v = check_linearizable(&self.history()).expect_err(needle);
            assert!(v.detail.contains(needle), "{}", v.detail);
            v
        }

        fn issue(&mut self, r: u8, inv: u64, done: u64, serial: Serial) -> &mut Self {
            self.op(
                OpKind::Issue { request_id: rid(r) },
                inv,
                Some(done),
                OpResult::Issued {
                    serial,
                    mic: mic(serial),
                },
            )
        }

        fn history(&self) -> History {
            History {
                ops: self.ops.clone(),
                finals: Vec::new(),
                missing_finals: Vec::new(),
                final_us: 1_000_000,
            }
        }
    }

    fn mic(serial: Serial) -> Vec<u8> {
        vec![serial as u8; 8]
    }

    fn got(serial: Serial, revoked: bool) -> OpResult {
        OpResult::Got(Some(GetView {
            mic: mic(serial),
            revoked,
        }))
    }

    fn revoked() -> OpResult {
        OpResult::Revoked {
            seq: 1,
            record: vec![9; 4],
        }
    }

    #[test]
    fn a_legal_history_passes() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .issue(2, 5, 20, 2)
            .op(OpKind::Revoke { serial: 1 }, 30, Some(40), revoked())
            // Concurrent with the revoke: may see either state.
            .op(OpKind::Get { serial: 1 }, 35, Some(45), got(1, false))
            .op(OpKind::Get { serial: 1 }, 50, Some(60), got(1, true))
            .op(
                OpKind::Renew { serial: 2 },
                61,
                Some(70),
                OpResult::Renewed {
                    serial: 3,
                    mic: mic(3),
                },
            )
            .op(OpKind::List, 71, Some(80), OpResult::Listed(vec![1, 2, 3]))
            .op(
                OpKind::Renew { serial: 1 },
                81,
                Some(90),
                OpResult::Refused(Refusal::Revoked),
            );
        let s = check_linearizable(&h.history()).expect("linearizable");
        assert_eq!(s.serials, 3);
    }

    #[test]
    fn stale_read_after_an_acknowledged_revoke_is_caught() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .op(OpKind::Revoke { serial: 1 }, 20, Some(30), revoked())
            // Invoked after the revoke was acknowledged, yet sees it live.
            .op(OpKind::Get { serial: 1 }, 40, Some(50), got(1, false));
        let v = h.must_fail("serial 1");
        assert_eq!(v.at_us, 50, "{}", v.detail);
    }

    #[test]
    fn duplicate_serial_is_caught() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1).issue(2, 5, 15, 1);
        h.must_fail("duplicate serial 1");
    }

    #[test]
    fn idempotent_retry_with_a_different_serial_is_caught() {
        let mut h = H::new();
        h.unknown(OpKind::Issue { request_id: rid(1) }, 0)
            .issue(1, 100, 110, 1)
            .issue(1, 200, 210, 2);
        h.must_fail("idempotent retry");
    }

    #[test]
    fn an_idempotent_retry_may_return_the_first_attempts_serial() {
        // The first attempt timed out but took effect (serial 1); issue 2 then got serial 2; the
        // retry of request 1 returns serial 1 although issue 2 was acknowledged before it.
        let mut h = H::new();
        h.unknown(OpKind::Issue { request_id: rid(1) }, 0)
            .issue(2, 50, 60, 2)
            .issue(1, 100, 110, 1);
        check_linearizable(&h.history()).expect("linearizable");
    }

    #[test]
    fn allocation_against_real_time_is_caught() {
        let mut h = H::new();
        h.issue(1, 0, 10, 2).issue(2, 20, 30, 1);
        h.must_fail("allocated after");
    }

    #[test]
    fn unknown_revoke_may_or_may_not_take_effect() {
        for later in [false, true] {
            let mut h = H::new();
            h.issue(1, 0, 10, 1)
                .unknown(OpKind::Revoke { serial: 1 }, 20)
                .op(OpKind::Get { serial: 1 }, 30, Some(40), got(1, false))
                .op(OpKind::Get { serial: 1 }, 50, Some(60), got(1, later));
            check_linearizable(&h.history()).expect("linearizable either way");
        }
        // But once seen revoked, never live again.
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .unknown(OpKind::Revoke { serial: 1 }, 20)
            .op(OpKind::Get { serial: 1 }, 30, Some(40), got(1, true))
            .op(OpKind::Get { serial: 1 }, 50, Some(60), got(1, false));
        check_linearizable(&h.history()).expect_err("revoked then live");
    }

    #[test]
    fn lost_acknowledged_revoke_is_caught_by_the_final_read() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .op(OpKind::Revoke { serial: 1 }, 20, Some(30), revoked());
        let mut history = h.history();
        history.finals.push(VoterFinal {
            voter: 0,
            mics: [(1, mic(1))].into(),
            revocations: BTreeMap::new(),
        });
        let v = check_linearizable(&history).expect_err("revoke lost");
        assert!(v.detail.contains("final read of n1"), "{}", v.detail);
        let r = check_replicas(&history).expect_err("revocation missing");
        assert!(r.detail.contains("revocation for serial 1"), "{}", r.detail);
    }

    #[test]
    fn phantom_serials_need_unknown_creations() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .op(OpKind::Get { serial: 2 }, 20, Some(30), got(2, false));
        h.must_fail("no client was told about");
        // With an issue of unknown outcome invoked before the read, it is explained.
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .unknown(OpKind::Issue { request_id: rid(2) }, 12)
            .op(OpKind::Get { serial: 2 }, 20, Some(30), got(2, false));
        check_linearizable(&h.history()).expect("explained by the unknown issue");
        // But not if the read finished before that issue was invoked.
        let mut h = H::new();
        h.issue(1, 0, 10, 1)
            .op(OpKind::Get { serial: 2 }, 20, Some(30), got(2, false))
            .unknown(OpKind::Issue { request_id: rid(2) }, 40);
        check_linearizable(&h.history()).expect_err("read before any creation");
    }

    #[test]
    fn stale_list_is_caught() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1).issue(2, 11, 20, 2).op(
            OpKind::List,
            30,
            Some(40),
            OpResult::Listed(vec![1]),
        );
        h.must_fail("stale list");
    }

    #[test]
    fn different_bytes_for_one_serial_are_caught() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1).op(
            OpKind::Get { serial: 1 },
            20,
            Some(30),
            OpResult::Got(Some(GetView {
                mic: vec![0xff; 8],
                revoked: false,
            })),
        );
        h.must_fail("different MIC bytes");
    }

    #[test]
    fn replicas_must_agree() {
        let mut h = H::new();
        h.issue(1, 0, 10, 1);
        let mut history = h.history();
        let full = VoterFinal {
            voter: 0,
            mics: [(1, mic(1))].into(),
            revocations: BTreeMap::new(),
        };
        history.finals = vec![full.clone(), VoterFinal { voter: 1, ..full }];
        assert_eq!(check_replicas(&history), Ok(1));
        history.finals[1].mics.insert(2, mic(2));
        let v = check_replicas(&history).expect_err("differ");
        assert!(v.detail.contains("differ"), "{}", v.detail);
        history.finals[1].mics.clear();
        let v = check_replicas(&history).expect_err("missing");
        assert!(v.detail.contains("missing on voter n2"), "{}", v.detail);
        history.finals.truncate(1);
        history.missing_finals.push((2, "timeout".into()));
        let v = check_replicas(&history).expect_err("no answer");
        assert!(v.detail.contains("n3 did not answer"), "{}", v.detail);
    }
}
