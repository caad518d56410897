//! The CA run: voters running the real `CaNode` in turmoil hosts, client hosts issuing
//! operations through each voter's admin endpoint, the scenario's faults, the history.
//!
//! Each voter host runs `CaNode<VoterLinks>` (Raft listener on port [`RAFT_PORT`]: the node's
//! authenticated TLS links over turmoil's TCP, with a node key derived from the run seed) and an
//! admin endpoint on [`ADMIN_PORT`] that stands in for the node's admin API: it turns a request
//! into `CaNode::write` (forwarded to the leader by the node itself) or
//! `CaNode::read_linearizable`, and maps the answer and its error to "applied", "refused",
//! "certainly not applied" or "unknown" as `CaClientError` documents them. Client hosts keep one
//! connection per voter and one operation outstanding; the driver steps turmoil, applies the
//! timeline, and at the end heals, restarts and collects every voter's final state.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nexus_trust::ca::{
    Bootstrap, CaError, Command, IssueRequest, LIST_LIMIT_MAX, Response, VALIDITY_MS_MAX,
};
use nexus_trust::mic::SubjectKind;
use nexus_trust::raft::node::CaClock;
use nexus_trust::raft::wire::FRAME_BYTES_MAX_DEFAULT;
use nexus_trust::raft::{
    CaClientError, CaNode, CaNodeConfig, CaPeer, CaTimings, LinkPolicy, SnapshotPolicy,
    TlsTransport,
};
use nexus_trust::revocation::RevocationReason;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::history::{GetView, History, Op, OpKind, OpResult, Refusal, VoterFinal};
use super::linearizability::{check_linearizable, check_replicas};
use super::transport::TurmoilTransport;
use crate::engine::{NetStats, Progress, derive_seed, finish_run, wall_clock};
use crate::invariants::Verdict;
use crate::report::{CaSummary, RunReport};
use crate::scenario::{Action, CaScenario, Scenario, ScenarioError, Topology};
use crate::trace::{Trace, TraceEvent};

/// The voters' Raft listener port.
pub const RAFT_PORT: u16 = 7100;
/// The voters' admin endpoint port.
pub const ADMIN_PORT: u16 = 7200;
/// Default turmoil step of a CA run.
pub const TICK_DEFAULT: Duration = Duration::from_millis(1);
/// Largest admin frame.
const ADMIN_FRAME_MAX: u32 = 4 << 20;
/// Wall-clock instant turmoil's clock starts at (2024-01-01T00:00:00Z), as in node mode.
const EPOCH_UNIX_S: u64 = 1_704_067_200;
/// Lifetime of the MICs clients request.
const VALIDITY_MS: u64 = 24 * 3600 * 1000;
/// The CA key id the bootstrap installs.
const CA_KEY_ID: u32 = 1;

/// A request to a voter's admin endpoint.
#[derive(Debug, Serialize, Deserialize)]
enum AdminRequest {
    Bootstrap { ca_secret_key: [u8; 32] },
    Issue(Box<IssueRequest>),
    Renew { serial: u64 },
    Revoke { serial: u64 },
    Get { serial: u64 },
    List,
    Final,
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize)]
enum AdminReply {
    Bootstrapped,
    Result(OpResult),
    Final {
        mics: Vec<(u64, Vec<u8>)>,
        revocations: Vec<(u64, Vec<u8>)>,
    },
}

/// Maps a CA error of an applied command.
fn refusal(e: &CaError) -> Refusal {
    match e {
        CaError::UnknownSerial { .. } => Refusal::UnknownSerial,
        CaError::Revoked { .. } => Refusal::Revoked,
        other => Refusal::Other(other.to_string()),
    }
}

/// Maps a client error by what `CaClientError` documents about whether it was applied.
fn client_error(e: &CaClientError) -> OpResult {
    match e {
        CaClientError::NoLeader { .. }
        | CaClientError::Rejected { .. }
        | CaClientError::Unreachable { .. }
        | CaClientError::QueueFull { .. } => OpResult::NotApplied(e.to_string()),
        CaClientError::Timeout { .. }
        | CaClientError::ForwardFailed { .. }
        | CaClientError::ShuttingDown(_) => OpResult::Unknown(e.to_string()),
    }
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, value: &impl Serialize) -> bool {
    let Ok(body) = serde_json::to_vec(value) else {
        return false;
    };
    let Ok(len) = u32::try_from(body.len()) else {
        return false;
    };
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    // One write: turmoil sends it as one segment, so a cut loses whole frames.
    w.write_all(&frame).await.is_ok()
}

async fn read_frame<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> Option<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let len = u32::from_be_bytes(len);
    if len > ADMIN_FRAME_MAX {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// The voter's side of one admin request.
/// A voter's CA links: TLS 1.3 with its node key over turmoil's TCP, as a node runs them over
/// real TCP (docs/protocols/ca-raft.md).
pub type VoterLinks = TlsTransport<TurmoilTransport>;

/// Voter `i`'s node key, derived from the run seed. Every voter derives all of them: they are
/// the expected voters of each one's link policy and the `node` of each `CaPeer`.
fn voter_key(run_seed: u64, i: usize) -> ed25519_dalek::SigningKey {
    let mut secret = [0u8; 32];
    StdRng::seed_from_u64(derive_seed(run_seed, 0x6b00 + i as u64, 0)).fill_bytes(&mut secret);
    ed25519_dalek::SigningKey::from_bytes(&secret)
}

async fn serve(node: &CaNode<VoterLinks>, req: AdminRequest) -> AdminReply {
    let write = |cmd: Command| node.write(cmd);
    let now_ms = || -> u64 { virtual_ms() };
    let result = match req {
        AdminRequest::Bootstrap { ca_secret_key } => {
            let cmd = Command::Bootstrap(Box::new(Bootstrap {
                ca_secret_key,
                ca_key_id: CA_KEY_ID,
                circuits: Vec::new(),
            }));
            return match write(cmd).await {
                Ok(Response::Bootstrapped { .. })
                | Ok(Response::Error(CaError::AlreadyBootstrapped { .. })) => {
                    AdminReply::Bootstrapped
                }
                Ok(other) => AdminReply::Result(OpResult::NotApplied(format!("{other:?}"))),
                Err(e) => AdminReply::Result(client_error(&e)),
            };
        }
        AdminRequest::Issue(request) => {
            let cmd = Command::Issue {
                now_ms: now_ms(),
                requests: vec![*request],
            };
            match write(cmd).await {
                Ok(Response::Issued(mut results)) if results.len() == 1 => {
                    match results.remove(0) {
                        Ok(mic) => OpResult::Issued {
                            serial: mic.body.serial,
                            mic: mic.encode(),
                        },
                        Err(e) => OpResult::Refused(refusal(&e)),
                    }
                }
                Ok(Response::Error(e)) => OpResult::Refused(refusal(&e)),
                Ok(other) => OpResult::Refused(Refusal::Other(format!("{other:?}"))),
                Err(e) => client_error(&e),
            }
        }
        AdminRequest::Renew { serial } => {
            let cmd = Command::Renew {
                now_ms: now_ms(),
                serial,
                validity_ms: VALIDITY_MS,
            };
            match write(cmd).await {
                Ok(Response::Renewed(Ok(mic))) => OpResult::Renewed {
                    serial: mic.body.serial,
                    mic: mic.encode(),
                },
                Ok(Response::Renewed(Err(e)) | Response::Error(e)) => {
                    OpResult::Refused(refusal(&e))
                }
                Ok(other) => OpResult::Refused(Refusal::Other(format!("{other:?}"))),
                Err(e) => client_error(&e),
            }
        }
        AdminRequest::Revoke { serial } => {
            let cmd = Command::Revoke {
                now_ms: now_ms(),
                serial,
                reason: RevocationReason::KeyCompromise,
            };
            match write(cmd).await {
                Ok(Response::Revoked(Ok(record))) => OpResult::Revoked {
                    seq: record.seq,
                    record: record.encode(),
                },
                Ok(Response::Revoked(Err(e)) | Response::Error(e)) => {
                    OpResult::Refused(refusal(&e))
                }
                Ok(other) => OpResult::Refused(Refusal::Other(format!("{other:?}"))),
                Err(e) => client_error(&e),
            }
        }
        AdminRequest::Get { serial } => {
            let read = node
                .read_linearizable(|s| {
                    s.get(serial).map(|m| GetView {
                        mic: m.encode(),
                        revoked: s.is_revoked(serial),
                    })
                })
                .await;
            match read {
                Ok(view) => OpResult::Got(view),
                Err(e) => client_error(&e),
            }
        }
        AdminRequest::List => {
            let read = node
                .read_linearizable(|s| {
                    s.list(0, LIST_LIMIT_MAX)
                        .iter()
                        .map(|m| m.body.serial)
                        .collect::<Vec<_>>()
                })
                .await;
            match read {
                Ok(serials) => OpResult::Listed(serials),
                Err(e) => client_error(&e),
            }
        }
        AdminRequest::Final => {
            let read = node
                .read_linearizable(|s| {
                    let mut mics = Vec::new();
                    let mut after = 0;
                    loop {
                        let page = s.list(after, LIST_LIMIT_MAX);
                        let Some(last) = page.last() else { break };
                        after = last.body.serial;
                        mics.extend(page.iter().map(|m| (m.body.serial, m.encode())));
                    }
                    let mut revocations = Vec::new();
                    let mut seq = 0;
                    loop {
                        let page = s.revocations_after(seq, LIST_LIMIT_MAX);
                        let Some(last) = page.last() else { break };
                        seq = last.seq;
                        revocations.extend(page.iter().map(|r| (r.serial, r.encode())));
                    }
                    (mics, revocations)
                })
                .await;
            return match read {
                Ok((mics, revocations)) => AdminReply::Final { mics, revocations },
                Err(e) => AdminReply::Result(client_error(&e)),
            };
        }
    };
    AdminReply::Result(result)
}

/// Virtual milliseconds since the Unix epoch (the CA's clock in the simulator).
fn virtual_ms() -> u64 {
    let since_start = turmoil::sim_elapsed().unwrap_or_default();
    EPOCH_UNIX_S * 1000 + u64::try_from(since_start.as_millis()).unwrap_or(u64::MAX)
}

/// Virtual µs since the start of the run (the start of the current tick).
fn now_us() -> u64 {
    u64::try_from(turmoil::sim_elapsed().unwrap_or_default().as_micros()).unwrap_or(u64::MAX)
}

/// Everything a voter's host software needs; cloned for every (re)start.
#[derive(Clone)]
struct VoterCtx {
    index: usize,
    voters: usize,
    /// The voter's sled database: kept here, so it outlives crashes (see the module docs of
    /// `crate::ca`).
    db: sled::Db,
    seed: u64,
    /// The run's seed (node keys derive from it).
    run_seed: u64,
    boots: Rc<Cell<u64>>,
    timings: CaTimings,
    snapshot_every: u64,
}

fn voter_host(i: usize) -> String {
    format!("n{}", i + 1)
}

fn client_host(k: usize) -> String {
    format!("c{}", k + 1)
}

async fn voter_main(ctx: VoterCtx) -> turmoil::Result {
    let boot = ctx.boots.get() + 1;
    ctx.boots.set(boot);
    let policy = Arc::new(LinkPolicy::new());
    policy.set_fabric(
        (0..ctx.voters)
            .map(|j| voter_key(ctx.run_seed, j).verifying_key().to_bytes())
            .collect(),
        Default::default(),
    );
    let transport = TlsTransport::new(
        TurmoilTransport,
        &voter_key(ctx.run_seed, ctx.index),
        policy,
    )
    .map_err(|e| format!("CA link TLS configuration: {e}"))?;
    let config = CaNodeConfig {
        node_id: ctx.index as u64 + 1,
        listen_addr: format!("0.0.0.0:{RAFT_PORT}"),
        db: ctx.db.clone(),
        seed: derive_seed(ctx.seed, boot, 0),
        timings: ctx.timings.clone(),
        snapshot: SnapshotPolicy {
            logs_since_last: ctx.snapshot_every,
            logs_to_keep: ctx.snapshot_every / 2,
        },
        frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        issue_batch_max: 64,
        issue_queue_max: 1024,
        issue_pipeline_max: 1,
        clock: CaClock::from_fn(virtual_ms),
        transport,
    };
    let node = Rc::new(CaNode::start(config).await?);
    if ctx.index == 0 && boot == 1 {
        let members: BTreeMap<u64, CaPeer> = (0..ctx.voters)
            .map(|j| {
                (
                    j as u64 + 1,
                    CaPeer {
                        addr: format!("{}:{RAFT_PORT}", voter_host(j)),
                        node: voter_key(ctx.run_seed, j)
                            .verifying_key()
                            .to_bytes()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect(),
                    },
                )
            })
            .collect();
        node.initialize(members).await?;
    }
    let listener = turmoil::net::TcpListener::bind(format!("0.0.0.0:{ADMIN_PORT}")).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let node = node.clone();
        tokio::task::spawn_local(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            while let Some(req) = read_frame::<_, AdminRequest>(&mut r).await {
                let reply = serve(&node, req).await;
                if !write_frame(&mut w, &reply).await {
                    break;
                }
            }
        });
    }
}

/// What the driver and the hosts share (one thread).
#[derive(Default)]
struct Shared {
    /// Attempts in completion order (ids assigned on completion).
    ops: Vec<Op>,
    /// Ops already traced by the driver.
    traced: usize,
    /// Acknowledged serials (targets for renew, revoke and get).
    serials: Vec<u64>,
    bootstrapped: bool,
    finals: Vec<VoterFinal>,
    missing_finals: Vec<(usize, String)>,
    final_us: u64,
    final_done: bool,
}

#[derive(Clone)]
struct ClientCtx {
    index: usize,
    voters: usize,
    seed: u64,
    ca: CaScenario,
    tick_us: u64,
    stop_us: u64,
    final_at_us: u64,
    give_up_us: u64,
    shared: Rc<RefCell<Shared>>,
}

type Conn = turmoil::net::TcpStream;

struct Client {
    ctx: ClientCtx,
    conns: Vec<Option<Conn>>,
    rng: StdRng,
    target: usize,
}

impl Client {
    /// Sends one request to voter `v` and waits for the answer; `None` if the connection
    /// failed (`sent` says whether the request left).
    async fn call(&mut self, v: usize, req: &AdminRequest) -> Result<AdminReply, (bool, String)> {
        let timeout = self.ctx.ca.op_timeout;
        if self.conns[v].is_none() {
            let addr = format!("{}:{ADMIN_PORT}", voter_host(v));
            match tokio::time::timeout(timeout, turmoil::net::TcpStream::connect(addr)).await {
                Ok(Ok(c)) => self.conns[v] = Some(c),
                Ok(Err(e)) => return Err((false, format!("connect: {e}"))),
                Err(_) => return Err((false, "connect timed out".into())),
            }
        }
        let Some(conn) = self.conns[v].as_mut() else {
            return Err((false, "no connection".into()));
        };
        if !write_frame(conn, req).await {
            self.conns[v] = None;
            return Err((false, "send failed".into()));
        }
        let answer = tokio::time::timeout(timeout, read_frame::<_, AdminReply>(conn)).await;
        match answer {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => {
                self.conns[v] = None;
                Err((true, "connection lost".into()))
            }
            Err(_) => {
                // The late answer would arrive on this connection: drop it.
                self.conns[v] = None;
                Err((true, format!("no answer within {timeout:?}")))
            }
        }
    }

    /// One recorded attempt of `kind` at the current target voter.
    async fn attempt(&mut self, kind: OpKind, req: AdminRequest) -> OpResult {
        let v = self.target;
        let invoked_us = now_us();
        let result = match self.call(v, &req).await {
            Ok(AdminReply::Result(r)) => r,
            Ok(other) => OpResult::NotApplied(format!("unexpected reply {other:?}")),
            Err((false, why)) => OpResult::NotApplied(why),
            Err((true, why)) => OpResult::Unknown(why),
        };
        let completed_us = match result {
            OpResult::Unknown(_) => None,
            _ => Some(now_us() + self.ctx.tick_us),
        };
        let mut sh = self.ctx.shared.borrow_mut();
        if let OpResult::Issued { serial, .. } | OpResult::Renewed { serial, .. } = result
            && !sh.serials.contains(&serial)
        {
            sh.serials.push(serial);
        }
        let id = sh.ops.len();
        sh.ops.push(Op {
            id,
            client: self.ctx.index,
            voter: v,
            kind,
            invoked_us,
            completed_us,
            result: result.clone(),
        });
        result
    }

    fn next_target(&mut self) {
        self.target = (self.target + 1 + self.rng.random_range(0..self.ctx.voters.max(2) - 1))
            % self.ctx.voters;
    }

    /// Attempts until a definite answer, up to `1 + retries` times (or once for `once`).
    async fn op(&mut self, kind: OpKind, req: impl Fn() -> AdminRequest, once: bool) {
        let tries = if once { 1 } else { 1 + self.ctx.ca.retries };
        for _ in 0..tries {
            if now_us() >= self.ctx.stop_us {
                return;
            }
            match self.attempt(kind.clone(), req()).await {
                OpResult::NotApplied(_) | OpResult::Unknown(_) => {
                    self.next_target();
                    tokio::time::sleep(self.ctx.ca.heartbeat * 2).await;
                }
                _ => return,
            }
        }
    }

    fn pick_serial(&mut self) -> Option<u64> {
        let sh = self.ctx.shared.borrow();
        if sh.serials.is_empty() {
            return None;
        }
        let max = sh.serials.iter().copied().max().unwrap_or(0);
        Some(if self.rng.random_bool(0.1) {
            max + self.rng.random_range(1..=3)
        } else {
            sh.serials[self.rng.random_range(0..sh.serials.len())]
        })
    }

    async fn bootstrap(&mut self) {
        let mut secret = [0u8; 32];
        StdRng::seed_from_u64(derive_seed(self.ctx.seed, 0xb007, 0)).fill_bytes(&mut secret);
        while now_us() < self.ctx.stop_us {
            let req = AdminRequest::Bootstrap {
                ca_secret_key: secret,
            };
            if let Ok(AdminReply::Bootstrapped) = self.call(self.target, &req).await {
                self.ctx.shared.borrow_mut().bootstrapped = true;
                return;
            }
            self.next_target();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(mut self) {
        if self.ctx.index == 0 {
            self.bootstrap().await;
        }
        while !self.ctx.shared.borrow().bootstrapped && now_us() < self.ctx.stop_us {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mix = self.ctx.ca.mix;
        let total: u32 = mix.iter().sum();
        while now_us() < self.ctx.stop_us {
            let mut draw = self.rng.random_range(0..total);
            let mut which = 0;
            while draw >= mix[which] {
                draw -= mix[which];
                which += 1;
            }
            let serial = self.pick_serial();
            match (which, serial) {
                (1, Some(serial)) => {
                    // No request id on renew: a retry could renew twice, so a real client
                    // does not retry it blindly.
                    self.op(
                        OpKind::Renew { serial },
                        || AdminRequest::Renew { serial },
                        true,
                    )
                    .await;
                }
                (2, Some(serial)) => {
                    self.op(
                        OpKind::Revoke { serial },
                        || AdminRequest::Revoke { serial },
                        false,
                    )
                    .await;
                }
                (3, Some(serial)) => {
                    self.op(
                        OpKind::Get { serial },
                        || AdminRequest::Get { serial },
                        false,
                    )
                    .await;
                }
                (4, _) => self.op(OpKind::List, || AdminRequest::List, false).await,
                _ => {
                    let mut request_id = [0u8; 16];
                    self.rng.fill_bytes(&mut request_id);
                    let mut subject_key = [0u8; 32];
                    self.rng.fill_bytes(&mut subject_key);
                    let request = IssueRequest {
                        request_id: Some(request_id),
                        subject_key,
                        kind: SubjectKind::Node,
                        model: None,
                        publisher: format!("sim-c{}", self.ctx.index + 1),
                        provenance: Vec::new(),
                        claims: Vec::new(),
                        zk_commitment: None,
                        validity_ms: VALIDITY_MS.min(VALIDITY_MS_MAX),
                    };
                    self.op(
                        OpKind::Issue { request_id },
                        || AdminRequest::Issue(Box::new(request.clone())),
                        false,
                    )
                    .await;
                }
            }
            let think = self.ctx.ca.think;
            let pause = self.rng.random_range(think / 2..=think * 3 / 2);
            tokio::time::sleep(pause).await;
        }
        if self.ctx.index == 0 {
            self.final_reads().await;
        }
    }

    /// After the heal: every voter's state, read linearizably through that voter.
    async fn final_reads(&mut self) {
        let wait = Duration::from_micros(self.ctx.final_at_us.saturating_sub(now_us()));
        tokio::time::sleep(wait).await;
        let mut finals = Vec::new();
        let mut missing = Vec::new();
        let mut at_us = now_us();
        for v in 0..self.ctx.voters {
            let mut got = None;
            let mut last_error = String::from("no attempt");
            while got.is_none() && now_us() < self.ctx.give_up_us {
                match self.call(v, &AdminRequest::Final).await {
                    Ok(AdminReply::Final { mics, revocations }) => {
                        got = Some(VoterFinal {
                            voter: v,
                            mics: mics.into_iter().collect(),
                            revocations: revocations.into_iter().collect(),
                        });
                    }
                    other => {
                        last_error = match other {
                            Ok(reply) => format!("{reply:?}"),
                            Err((_, why)) => why,
                        };
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            at_us = at_us.max(now_us() + self.ctx.tick_us);
            match got {
                Some(f) => finals.push(f),
                None => missing.push((v, last_error)),
            }
        }
        let mut sh = self.ctx.shared.borrow_mut();
        sh.finals = finals;
        sh.missing_finals = missing;
        sh.final_us = at_us;
        sh.final_done = true;
    }
}

/// Runs a `[ca]` scenario (see `crate::ca`). Invariant failures are in the report.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    trace: Trace,
    tick: Option<Duration>,
    progress: Option<Progress<'_>>,
) -> Result<RunReport, ScenarioError> {
    run_inner(scenario, seed, trace, tick, progress).map(|(r, _)| r)
}

/// [`run`] with the default tick, also returning the recorded history (for tests that feed the
/// checker a tampered copy).
pub fn run_with_history(
    scenario: &Scenario,
    seed: u64,
    trace: Trace,
    progress: Option<Progress<'_>>,
) -> Result<(RunReport, History), ScenarioError> {
    run_inner(scenario, seed, trace, None, progress)
}

fn run_inner(
    scenario: &Scenario,
    seed: u64,
    mut trace: Trace,
    tick: Option<Duration>,
    mut progress: Option<Progress<'_>>,
) -> Result<(RunReport, History), ScenarioError> {
    let Some(ca) = scenario.ca.clone() else {
        return Err(ScenarioError {
            field: "ca".into(),
            message: "not a [ca] scenario".into(),
        });
    };
    let tick = tick.or(scenario.node_tick).unwrap_or(TICK_DEFAULT);
    if tick.is_zero() || !tick.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(ScenarioError {
            field: "node.tick".into(),
            message: format!("{tick:?}: must be whole milliseconds, at least 1ms"),
        });
    }
    let wall = wall_clock();
    let n = scenario.nodes;
    let latency = match scenario.topology {
        Topology::Mesh { latency } => latency,
        _ => Duration::from_millis(1),
    };
    let tick_us = duration_us(tick);
    let stop_us = duration_us(scenario.duration);
    let final_at_us = stop_us + duration_us(ca.settle);
    let give_up_us = final_at_us + duration_us(ca.settle) + duration_us(ca.op_timeout);
    let mut sim = turmoil::Builder::new()
        .rng_seed(derive_seed(seed, 2, 0))
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .tick_duration(tick)
        .simulation_duration(Duration::from_micros(give_up_us) + Duration::from_secs(60))
        .min_message_latency(latency)
        .max_message_latency(latency)
        .build();
    let timings = CaTimings {
        heartbeat_ms: duration_ms(ca.heartbeat),
        election_min_ms: duration_ms(ca.election_min),
        election_max_ms: duration_ms(ca.election_max),
        client_timeout_ms: duration_ms(ca.client_timeout),
    };
    let mut dbs = Vec::new();
    for i in 0..n {
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()
            .map_err(|e| ScenarioError {
                field: "ca".into(),
                message: format!("opening a temporary sled database for n{}: {e}", i + 1),
            })?;
        dbs.push(db.clone());
        let ctx = VoterCtx {
            index: i,
            voters: n,
            db,
            seed: derive_seed(seed, 0xca00 + i as u64, 0),
            run_seed: seed,
            boots: Rc::new(Cell::new(0)),
            timings: timings.clone(),
            snapshot_every: ca.snapshot_every,
        };
        sim.host(voter_host(i), move || voter_main(ctx.clone()));
    }
    let shared = Rc::new(RefCell::new(Shared::default()));
    for k in 0..ca.clients {
        let ctx = ClientCtx {
            index: k,
            voters: n,
            seed,
            ca: ca.clone(),
            tick_us,
            stop_us,
            final_at_us,
            give_up_us,
            shared: shared.clone(),
        };
        sim.client(client_host(k), async move {
            let client = Client {
                rng: StdRng::seed_from_u64(derive_seed(seed, 0xc100 + k as u64, 0)),
                target: k % ctx.voters,
                conns: (0..ctx.voters).map(|_| None).collect(),
                ctx,
            };
            client.run().await;
            Ok(())
        });
    }

    let mut up = vec![true; n];
    let mut next_action = 0;
    let mut ended = false;
    let mut now = 0u64;
    let progress_step = (stop_us / 100).max(1);
    let mut next_progress = progress_step;
    let action_text = |t_us: u64, text: String| TraceEvent::Action { t_us, action: text };
    loop {
        while let Some(t) = scenario.timeline.get(next_action)
            && duration_us(t.at) <= now
        {
            trace.record(action_text(now, format!("{:?}", t.action)), None);
            apply(&mut sim, &t.action, &mut up, n);
            next_action += 1;
        }
        if !ended && now >= stop_us {
            ended = true;
            trace.record(
                action_text(now, "end of timeline: heal, restart every voter".into()),
                None,
            );
            apply(&mut sim, &Action::Heal, &mut up, n);
            let down: crate::scenario::NodeSet = (0..n).filter(|&i| !up[i]).collect();
            apply(&mut sim, &Action::Restart(down), &mut up, n);
        }
        let finished = match sim.step() {
            Ok(done) => done,
            Err(e) => panic!("turmoil step at {now}us failed: {e}"),
        };
        {
            let mut sh = shared.borrow_mut();
            let from = sh.traced;
            for op in &sh.ops[from..] {
                trace.record(
                    TraceEvent::Ca {
                        t_us: op.completed_us.unwrap_or(now),
                        node: op.client,
                        event: op.to_string(),
                    },
                    None,
                );
            }
            sh.traced = sh.ops.len();
        }
        if finished || now >= give_up_us {
            break;
        }
        if now >= next_progress {
            if let Some(p) = progress.as_mut() {
                p(Duration::from_micros(now.min(stop_us)), scenario.duration);
            }
            next_progress = now + progress_step;
        }
        now += tick_us;
    }
    drop(sim);
    let mut sh = std::mem::take(&mut *shared.borrow_mut());
    if !sh.final_done {
        sh.missing_finals = (0..n)
            .map(|v| (v, "the final read did not finish".into()))
            .collect();
        sh.final_us = now;
    }
    for f in &sh.finals {
        trace.record(
            TraceEvent::Ca {
                t_us: sh.final_us,
                node: f.voter,
                event: format!(
                    "final n{}: {} certificates, {} revocations",
                    f.voter + 1,
                    f.mics.len(),
                    f.revocations.len()
                ),
            },
            None,
        );
    }
    let history = History {
        ops: sh.ops,
        finals: sh.finals,
        missing_finals: sh.missing_finals,
        final_us: sh.final_us,
    };
    let lin = check_linearizable(&history);
    let rep = check_replicas(&history);
    let verdict = |name: &'static str, r: Result<String, super::linearizability::Violation>| match r
    {
        Ok(detail) => Verdict {
            invariant: name,
            ok: true,
            detail,
            violated_at_s: None,
        },
        Err(v) => Verdict {
            invariant: name,
            ok: false,
            detail: v.detail,
            violated_at_s: Some(v.at_us as f64 / 1e6),
        },
    };
    let states = lin.as_ref().map(|s| s.states).unwrap_or(0);
    let verdicts = vec![
        verdict(
            "ca_linearizable",
            lin.map(|s| {
                format!(
                    "{} operations ({} with unknown outcome) on {} serials are linearizable",
                    s.ops, s.unknown, s.serials
                )
            }),
        ),
        verdict(
            "ca_replicas_agree",
            rep.map(|c| {
                format!(
                    "all {} voters hold the same {c} certificates, every acknowledged one included",
                    n
                )
            }),
        ),
    ];
    let count = |f: &dyn Fn(&OpResult) -> bool| history.ops.iter().filter(|o| f(&o.result)).count();
    let not_applied = count(&|r| matches!(r, OpResult::NotApplied(_)));
    let unknown = count(&|r| matches!(r, OpResult::Unknown(_)));
    let summary = CaSummary {
        voters: n,
        clients: ca.clients,
        attempts: history.ops.len() as u64,
        acknowledged: (history.ops.len() - not_applied - unknown) as u64,
        not_applied: not_applied as u64,
        unknown: unknown as u64,
        certificates: history.finals.first().map(|f| f.mics.len()).unwrap_or(0),
        revocations: history
            .finals
            .first()
            .map(|f| f.revocations.len())
            .unwrap_or(0),
        search_states: states,
    };
    drop(dbs);
    let mut report = finish_run(
        scenario,
        seed,
        wall,
        now,
        NetStats::default(),
        &mut trace,
        verdicts,
        Vec::new(),
    );
    report.ca = Some(summary);
    Ok((report, history))
}

/// Applies a timeline action to the voters.
fn apply(sim: &mut turmoil::Sim<'_>, action: &Action, up: &mut [bool], n: usize) {
    match action {
        Action::Kill(set) => {
            for &i in set {
                if up[i] {
                    sim.crash(voter_host(i));
                    up[i] = false;
                }
            }
        }
        Action::Restart(set) => {
            for &i in set {
                if !up[i] {
                    sim.bounce(voter_host(i));
                    up[i] = true;
                }
            }
        }
        Action::Partition(groups) => {
            for (g, a_set) in groups.iter().enumerate() {
                for b_set in &groups[g + 1..] {
                    for &a in a_set {
                        for &b in b_set {
                            if a != b {
                                sim.hold(voter_host(a), voter_host(b));
                            }
                        }
                    }
                }
            }
        }
        Action::Heal => {
            for a in 0..n {
                for b in a + 1..n {
                    sim.release(voter_host(a), voter_host(b));
                }
            }
        }
        _ => unreachable!("Scenario::check_ca admits kill, restart, two-way partition and heal"),
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
