//! [`TrustEngine`]: a node's trust decisions, sans-IO — who forms the CA group, when to propose
//! the CA bootstrap, when to read the CA keys, when to obtain or renew the node's own MIC, when
//! to ask the CA for revocations, and when to hand the trust material to the registry.
//!
//! The engine changes nothing outside itself: it takes events (time, the CA voters seen alive,
//! this voter's Raft status, the results of the work it asked for) and emits
//! [`TrustCommand`]s that the node's trust actor carries out, as openraft's engine does. It owns
//! no socket, reads no clock and holds no key; the actor verifies and stores what the CA
//! answers and reports the facts back.
//!
//! Call order: [`TrustEngine::new`]; then, whenever they change, [`TrustEngine::on_voters`]
//! (alive members advertising a CA Raft address) and [`TrustEngine::on_ca_member`] (voters
//! only); [`TrustEngine::handle_timeout`] at [`TrustEngine::poll_timeout`] at the latest (it
//! re-evaluates on every call, so calling it earlier is harmless); [`TrustEngine::handle_job`] when a command's work finishes;
//! [`TrustEngine::on_revocations`] when the node's revocation set changed by other means (gossip,
//! a revoke this node committed). After each call, drain [`TrustEngine::poll_command`].
//!
//! Decisions (the node's part of NexTrust in `docs/architecture.md`):
//! - **Founders** (like Consul's `bootstrap_expect`): while a voter's Raft group has no
//!   membership and at least `bootstrap_expect` voters are alive, the voter with the lowest node
//!   key among the `bootstrap_expect` lowest forms the group with exactly those.
//! - **Bootstrap**: the leader of a group whose CA keys this node does not hold proposes the
//!   bootstrap (the state machine refuses a second one, so a race is harmless).
//! - **Node MIC**: obtained when the node holds none, renewed at 2/3 of its lifetime or when its
//!   serial is revoked.
//! - **Revocations**: asked for every `revocation_poll_ms` after the contiguous sequence number
//!   (gossip's backstop).
//! - **Retries**: at most one job of each [`Job`] kind runs; a failed job waits
//!   [`RETRY_MS`] (a CA that is not bootstrapped yet, half of it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// Pause before retrying a failed job.
pub const RETRY_MS: u64 = 1_000;
/// Commands queued at most (one per job kind, a client change and a publish fit many times).
pub const COMMANDS_MAX: usize = 64;

/// Background work kinds; at most one of each runs at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    /// Form the Raft group.
    Initialize,
    /// Propose the CA bootstrap.
    Bootstrap,
    /// Read the CA keys and circuit verifying keys.
    FetchKeys,
    /// Obtain or renew the node MIC.
    NodeMic,
    /// Ask for revocations after the contiguous sequence number.
    PollRevocations,
}

/// A voter the group is formed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Founder {
    /// The voter's node key (its node id).
    pub node: [u8; 32],
    /// Its CA Raft address, as advertised in membership.
    pub addr: SocketAddr,
}

/// What the engine asks the actor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustCommand {
    /// Form the Raft group with exactly these voters (ascending node key; this node is first).
    /// Answer with [`TrustEngine::handle_job`] for [`Job::Initialize`].
    Initialize {
        /// The founding voters.
        founders: Vec<Founder>,
    },
    /// Propose the CA bootstrap (fresh CA key and circuit keys). Answer for [`Job::Bootstrap`].
    Bootstrap,
    /// (Non-voters) reach the CA through a client of these voters' Raft addresses, replacing
    /// any previous client. Needs no answer.
    Connect {
        /// Raft addresses of the voters alive, by ascending node key.
        voters: Vec<SocketAddr>,
    },
    /// Read the CA keys and the circuits' verifying keys. Answer for [`Job::FetchKeys`].
    FetchKeys,
    /// Obtain the node MIC. Answer for [`Job::NodeMic`].
    ObtainNodeMic {
        /// The serial to renew, or `None` to ask for a first MIC (idempotent request id).
        renew: Option<u64>,
    },
    /// Ask the CA for revocation records after `after`. Answer for [`Job::PollRevocations`].
    PollRevocations {
        /// The node's contiguous revocation sequence number.
        after: u64,
    },
    /// Hand the trust material (CA keys, verifying keys, revocations, node MIC) to the registry
    /// and the session layer. If it could not be handed over, call
    /// [`TrustEngine::on_publish_failed`].
    Publish,
}

/// The validity of the node's own MIC, as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMicLife {
    /// Its serial.
    pub serial: u64,
    /// Start of validity (ms since the Unix epoch).
    pub not_before_ms: u64,
    /// End of validity (ms since the Unix epoch).
    pub not_after_ms: u64,
    /// Whether the node's revocation set holds its serial.
    pub revoked: bool,
}

impl NodeMicLife {
    /// When it is renewed: at 2/3 of its lifetime.
    pub fn renew_at_ms(&self) -> u64 {
        let life = self.not_after_ms.saturating_sub(self.not_before_ms);
        self.not_before_ms.saturating_add(life / 3 * 2)
    }
}

/// What a job's work came to (after the actor verified and stored it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The work failed (a CA unreachable, an answer that does not verify): retried after
    /// [`RETRY_MS`].
    Failed,
    /// The Raft group was formed.
    Initialized,
    /// The bootstrap was applied (or refused as a second one).
    Bootstrapped,
    /// The CA is not bootstrapped yet: asked again after half of [`RETRY_MS`].
    NotBootstrapped,
    /// The CA keys were read: kept (`true`) or refused as malformed (`false`).
    Keys {
        /// Whether the node now holds the CA keys.
        accepted: bool,
    },
    /// A node MIC was obtained, verified and stored.
    NodeMic(NodeMicLife),
    /// Revocation records were read and inserted.
    Revocations(RevocationFacts),
}

/// The node's revocation set, as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationFacts {
    /// Whether the set changed (new records held).
    pub changed: bool,
    /// Every sequence number up to this one has been seen.
    pub contiguous_seq: u64,
    /// Whether the node MIC's serial is revoked.
    pub node_mic_revoked: bool,
}

/// This voter's view of its Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaMember {
    /// Whether the group has a membership (it was formed).
    pub formed: bool,
    /// Whether this voter is the leader.
    pub leader: bool,
}

/// Settings of [`TrustEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node's key (its node id).
    pub node: [u8; 32],
    /// Whether this node is a CA voter.
    pub voter: bool,
    /// Voters that must be alive before the group is formed.
    pub bootstrap_expect: usize,
    /// The longest the engine goes without re-evaluating (group forming, keys, node MIC):
    /// [`TrustEngine::poll_timeout`] is never further ahead.
    pub tick_ms: u64,
    /// How often the node asks the CA for revocations.
    pub revocation_poll_ms: u64,
    /// How often the trust material is handed to the registry again (a restarted registry
    /// catches up).
    pub publish_every_ms: u64,
}

/// What the node held when the engine starts (read from storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// Whether the node holds the CA keys (the CA was seen bootstrapped).
    pub keys: bool,
    /// The node's MIC, if a valid one is stored.
    pub node_mic: Option<NodeMicLife>,
    /// The revocation set's contiguous sequence number.
    pub contiguous_seq: u64,
}

/// A node's trust decisions (see the module documentation for the call order).
#[derive(Debug, Clone)]
pub struct TrustEngine {
    config: EngineConfig,
    now_ms: u64,
    held: Held,
    /// Alive voters by node key.
    voters: BTreeMap<[u8; 32], SocketAddr>,
    /// This voter's Raft status, once known.
    member: Option<CaMember>,
    /// Voter addresses the current client was asked for (non-voters).
    connected: Vec<SocketAddr>,
    running: BTreeSet<Job>,
    not_before_ms: BTreeMap<Job, u64>,
    publish_due: bool,
    next_tick_ms: u64,
    next_poll_ms: u64,
    next_publish_ms: u64,
    commands: VecDeque<TrustCommand>,
}

impl TrustEngine {
    /// An engine starting at `now_ms` with what the node `held` in storage. The first
    /// evaluation and revocation poll are due at once.
    pub fn new(config: EngineConfig, now_ms: u64, held: Held) -> Self {
        let next_publish_ms = now_ms.saturating_add(config.publish_every_ms);
        TrustEngine {
            config,
            now_ms,
            held,
            voters: BTreeMap::new(),
            member: None,
            connected: Vec::new(),
            running: BTreeSet::new(),
            not_before_ms: BTreeMap::new(),
            publish_due: held.keys,
            next_tick_ms: now_ms,
            next_poll_ms: now_ms,
            next_publish_ms,
            commands: VecDeque::new(),
        }
    }

    /// The alive members advertising a CA Raft address, by node key.
    pub fn on_voters(&mut self, voters: BTreeMap<[u8; 32], SocketAddr>) {
        self.voters = voters;
    }

    /// This voter's Raft status (ignored on a non-voter).
    pub fn on_ca_member(&mut self, member: CaMember) {
        if self.config.voter {
            self.member = Some(member);
        }
    }

    /// The node's revocation set changed outside a poll (gossip, a committed revoke).
    pub fn on_revocations(&mut self, facts: RevocationFacts) {
        self.apply_revocations(facts);
        self.flush_publish();
    }

    /// A [`TrustCommand::Publish`] could not be handed over: it is emitted again with the next
    /// call.
    pub fn on_publish_failed(&mut self) {
        self.publish_due = true;
    }

    /// The work of `job` finished at `now_ms` with `outcome`.
    pub fn handle_job(&mut self, now_ms: u64, job: Job, outcome: JobOutcome) {
        self.now_ms = now_ms;
        self.running.remove(&job);
        match outcome {
            JobOutcome::Failed => {
                self.not_before_ms
                    .insert(job, now_ms.saturating_add(RETRY_MS));
            }
            JobOutcome::NotBootstrapped => {
                self.not_before_ms
                    .insert(job, now_ms.saturating_add(RETRY_MS / 2));
            }
            JobOutcome::Initialized | JobOutcome::Bootstrapped => {
                self.not_before_ms.remove(&job);
            }
            JobOutcome::Keys { accepted } => {
                self.not_before_ms.remove(&job);
                if accepted {
                    self.held.keys = true;
                    self.publish_due = true;
                }
            }
            JobOutcome::NodeMic(life) => {
                self.not_before_ms.remove(&job);
                self.held.node_mic = Some(life);
                // The session layer presents the new MIC from now on.
                self.publish_due = true;
            }
            JobOutcome::Revocations(facts) => {
                self.not_before_ms.remove(&job);
                self.apply_revocations(facts);
            }
        }
        self.flush_publish();
    }

    /// When [`TrustEngine::handle_timeout`] should be called next at the latest (it evaluates
    /// on every call; the revocation poll and the periodic publish have their own deadlines).
    pub fn poll_timeout(&self) -> u64 {
        self.next_tick_ms
            .min(self.next_poll_ms)
            .min(self.next_publish_ms)
    }

    /// Time has reached `now_ms`: makes the decisions that are due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if Self::reached(self.next_publish_ms, self.config.publish_every_ms, now_ms) {
            self.next_publish_ms =
                Self::next_after(self.next_publish_ms, self.config.publish_every_ms, now_ms);
            if self.held.keys {
                self.publish_due = true;
            }
        }
        // The evaluation is idempotent (a running or pausing job is not asked for twice), so it
        // runs on every call: a driver that calls late or in a burst loses nothing.
        self.next_tick_ms = now_ms.saturating_add(self.config.tick_ms);
        self.evaluate();
        if Self::reached(self.next_poll_ms, self.config.revocation_poll_ms, now_ms) {
            self.next_poll_ms =
                Self::next_after(self.next_poll_ms, self.config.revocation_poll_ms, now_ms);
            if self.reaches_ca() && self.held.keys && self.due(Job::PollRevocations) {
                self.start(
                    Job::PollRevocations,
                    TrustCommand::PollRevocations {
                        after: self.held.contiguous_seq,
                    },
                );
            }
        }
        self.flush_publish();
    }

    /// The next command to carry out.
    pub fn poll_command(&mut self) -> Option<TrustCommand> {
        self.commands.pop_front()
    }

    /// Whether the node holds the CA keys.
    pub fn holds_keys(&self) -> bool {
        self.held.keys
    }

    /// Whether a job of kind `job` is running.
    pub fn is_running(&self, job: Job) -> bool {
        self.running.contains(&job)
    }

    /// Panics if the engine's state is inconsistent.
    pub fn check_invariants(&self) {
        assert!(
            self.commands.len() <= COMMANDS_MAX,
            "command queue over its bound"
        );
        if !self.config.voter {
            assert!(
                !self.running.contains(&Job::Initialize) && !self.running.contains(&Job::Bootstrap),
                "a non-voter forms or bootstraps the CA"
            );
            assert!(self.member.is_none(), "a non-voter holds a Raft status");
        } else {
            assert!(self.connected.is_empty(), "a voter built a client");
        }
    }

    /// Whether a deadline set `period_ms` ahead has come; a deadline more than one period
    /// ahead means the clock stepped back, and counts as come.
    fn reached(deadline_ms: u64, period_ms: u64, now_ms: u64) -> bool {
        now_ms >= deadline_ms || deadline_ms > now_ms.saturating_add(period_ms)
    }

    /// The deadline after `deadline_ms`, on its period's grid (a late call does not shift the
    /// schedule); a call more than a period late, or a clock that stepped back, restarts the
    /// grid at `now_ms`.
    fn next_after(deadline_ms: u64, period_ms: u64, now_ms: u64) -> u64 {
        let next = deadline_ms.saturating_add(period_ms);
        if next > now_ms && next <= now_ms.saturating_add(period_ms) {
            next
        } else {
            now_ms.saturating_add(period_ms)
        }
    }

    /// Whether the node can reach the CA: its own member, or a client it was told to build.
    fn reaches_ca(&self) -> bool {
        self.config.voter || !self.connected.is_empty()
    }

    /// Whether `job` may start: not running, and past its retry pause (a pause ending more than
    /// one pause ahead means the clock stepped back, and counts as over).
    fn due(&self, job: Job) -> bool {
        !self.running.contains(&job)
            && self
                .not_before_ms
                .get(&job)
                .is_none_or(|at| Self::reached(*at, RETRY_MS, self.now_ms))
    }

    fn start(&mut self, job: Job, command: TrustCommand) {
        self.running.insert(job);
        self.push(command);
    }

    fn push(&mut self, command: TrustCommand) {
        // At most one command per job kind is outstanding, plus Connect and Publish: the bound
        // holds unless the actor stops draining.
        assert!(
            self.commands.len() < COMMANDS_MAX,
            "trust commands not drained"
        );
        self.commands.push_back(command);
    }

    fn apply_revocations(&mut self, facts: RevocationFacts) {
        self.held.contiguous_seq = facts.contiguous_seq;
        if let Some(mic) = &mut self.held.node_mic {
            mic.revoked = facts.node_mic_revoked;
        }
        if facts.changed {
            self.publish_due = true;
        }
    }

    fn flush_publish(&mut self) {
        if !self.publish_due {
            return;
        }
        self.publish_due = false;
        if self.held.keys {
            self.push(TrustCommand::Publish);
        }
    }

    /// The periodic evaluation: group forming and bootstrap (voters), the CA client
    /// (non-voters), the CA keys, the node MIC.
    fn evaluate(&mut self) {
        if self.config.voter {
            match self.member {
                Some(CaMember { formed: false, .. }) => self.maybe_initialize(),
                Some(CaMember {
                    formed: true,
                    leader: true,
                }) if !self.held.keys && self.due(Job::Bootstrap) => {
                    self.start(Job::Bootstrap, TrustCommand::Bootstrap);
                }
                _ => {}
            }
        } else {
            let addrs: Vec<SocketAddr> = self.voters.values().copied().collect();
            if !addrs.is_empty() && addrs != self.connected {
                self.connected = addrs.clone();
                self.push(TrustCommand::Connect { voters: addrs });
            }
        }
        if !self.reaches_ca() {
            return;
        }
        if !self.held.keys {
            if self.due(Job::FetchKeys) {
                self.start(Job::FetchKeys, TrustCommand::FetchKeys);
            }
            return;
        }
        if self.node_mic_due() && self.due(Job::NodeMic) {
            let renew = self.held.node_mic.map(|m| m.serial);
            self.start(Job::NodeMic, TrustCommand::ObtainNodeMic { renew });
        }
    }

    fn maybe_initialize(&mut self) {
        let expect = self.config.bootstrap_expect;
        if self.voters.len() < expect || !self.due(Job::Initialize) {
            return;
        }
        let founders: Vec<Founder> = self
            .voters
            .iter()
            .take(expect)
            .map(|(node, addr)| Founder {
                node: *node,
                addr: *addr,
            })
            .collect();
        if founders.first().map(|f| f.node) != Some(self.config.node) {
            return; // The lowest node key forms the group; the others wait to be contacted.
        }
        self.start(Job::Initialize, TrustCommand::Initialize { founders });
    }

    /// Whether the node has no MIC, has passed 2/3 of its lifetime, or holds a revoked one.
    fn node_mic_due(&self) -> bool {
        match &self.held.node_mic {
            None => true,
            Some(mic) => self.now_ms >= mic.renew_at_ms() || mic.revoked,
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
