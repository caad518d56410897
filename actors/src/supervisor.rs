//! [`NodeSupervisor`]: the root of a node's actor tree. One-for-one restarts with exponential
//! backoff, bounded restart intensity, escalation by stopping the node.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::{ActorLabel, NodeMetrics};

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to (re)start one child: a name and a function that spawns it linked to the supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    start: Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildSpec({})", self.name)
    }
}

impl ChildSpec {
    /// A child started as `make(supervisor)`'s actor with its arguments, afresh on every
    /// restart. `make` gets the supervisor so a child that talks to its siblings (through
    /// [`SupervisorMsg::Lookup`]) can keep a reference to it.
    ///
    /// Children are spawned without a global name: ractor's name registry is process-wide and
    /// several nodes may share a process (tests, simulator).
    pub fn new<A, F>(name: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn(ActorRef<SupervisorMsg>) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        ChildSpec {
            name: name.into(),
            start: Arc::new(move |supervisor: ActorCell| {
                let (actor, args) = make(supervisor.clone().into());
                Box::pin(async move {
                    Actor::spawn_linked(None, actor, args, supervisor)
                        .await
                        .map(|(actor_ref, _handle)| actor_ref.get_cell())
                })
            }),
        }
    }

    /// The child's name in the tree, metrics and logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Bounds on restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart of a child.
    pub backoff_min: Duration,
    /// Largest delay; the delay doubles with each recent failure up to this.
    pub backoff_max: Duration,
    /// More failures than this of one child within `window` stop the node.
    pub restarts_max: u32,
    /// The window over which failures are counted.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            restarts_max: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// How the supervisor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeExit {
    /// Stopped on request (leave, signal).
    Clean,
    /// A child could not be started when the node came up.
    StartFailed {
        /// The child.
        child: String,
        /// Why.
        reason: String,
    },
    /// A child failed more than `restarts_max` times within `window`.
    Escalated {
        /// The child.
        child: String,
        /// Its last failure.
        reason: String,
    },
}

/// Arguments of [`NodeSupervisor`].
#[derive(Debug)]
pub struct SupervisorArgs {
    /// Children, started in order.
    pub children: Vec<ChildSpec>,
    /// Restart bounds.
    pub policy: RestartPolicy,
    /// Where restarts are counted.
    pub metrics: NodeMetrics,
    /// Receives how the supervisor ended.
    pub exit: watch::Sender<Option<NodeExit>>,
}

/// A child's row in [`TreeSnapshot`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChildStatus {
    /// The child's name.
    pub name: String,
    /// `running` or `restarting`.
    pub status: &'static str,
    /// Restarts since the node started.
    pub restarts: u64,
    /// Failures within the current restart window.
    pub recent_failures: usize,
    /// The last failure's message, if any.
    pub last_failure: Option<String>,
}

/// The supervision tree as `GET /v1/actors` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TreeSnapshot {
    /// The root's name (`node`).
    pub name: &'static str,
    /// Restart policy in force.
    pub restarts_max: u32,
    /// Restart window, milliseconds.
    pub window_ms: u64,
    /// The children.
    pub children: Vec<ChildStatus>,
}

/// Messages to the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Timer: restart child `child` if `token` is still current.
    Restart {
        /// Index into the children.
        child: usize,
        /// Which failure scheduled it.
        token: u64,
    },
    /// The running child with this name, if any (none while it restarts).
    Lookup(String, RpcReplyPort<Option<ActorCell>>),
    /// A snapshot of the tree.
    Tree(RpcReplyPort<TreeSnapshot>),
    /// Fault injection: kill the named child as a crash would. Replies whether it existed.
    Kill(String, RpcReplyPort<bool>),
}

/// The supervisor's running child `name` as an actor taking `M`: `None` while it restarts, if
/// there is no such child, or if the supervisor did not answer within `timeout`. Siblings find
/// each other this way instead of holding references that a restart would leave stale.
pub async fn lookup_child<M: ractor::Message>(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
    timeout: Duration,
) -> Option<ActorRef<M>> {
    match supervisor
        .call(|r| SupervisorMsg::Lookup(name.to_owned(), r), Some(timeout))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(Some(cell))) => Some(cell.into()),
        _ => None,
    }
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    failures: VecDeque<Instant>,
    restarts: u64,
    last_failure: Option<String>,
    token: u64,
}

/// State of [`NodeSupervisor`].
pub struct SupervisorState {
    children: Vec<Child>,
    policy: RestartPolicy,
    metrics: NodeMetrics,
    exit: watch::Sender<Option<NodeExit>>,
}

impl SupervisorState {
    /// The named child's cell, if it is running (not while it waits for a restart).
    fn running(&self, name: &str) -> Option<ActorCell> {
        self.children
            .iter()
            .find(|c| c.spec.name == name)
            .and_then(|c| c.cell.clone())
    }
}

impl fmt::Debug for SupervisorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorState")
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

/// The root of a node's actor tree.
///
/// Starts its children in order; restarts a child that fails (panic or error) after a backoff
/// that doubles with each failure in the window; when one child fails more than
/// `restarts_max` times within `window` it logs why, reports [`NodeExit::Escalated`] and stops,
/// taking the node down with a non-zero exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSupervisor;

impl NodeSupervisor {
    async fn start_child(
        myself: &ActorRef<SupervisorMsg>,
        child: &mut Child,
    ) -> Result<(), String> {
        match (child.spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                child.cell = Some(cell);
                Ok(())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    fn on_child_exit(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        index: usize,
        reason: String,
    ) {
        let now = Instant::now();
        let policy = state.policy.clone();
        let child = &mut state.children[index];
        child.cell = None;
        child.failures.push_back(now);
        while child
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            child.failures.pop_front();
        }
        child.last_failure = Some(reason.clone());
        let name = child.spec.name.clone();
        let recent = u32::try_from(child.failures.len()).unwrap_or(u32::MAX);
        if recent > policy.restarts_max {
            tracing::error!(
                actor = %name,
                failures = recent,
                window_ms = policy.window.as_millis() as u64,
                reason = %reason,
                "actor keeps failing; restart intensity exceeded, stopping the node"
            );
            state.exit.send_replace(Some(NodeExit::Escalated {
                child: name.clone(),
                reason: reason.clone(),
            }));
            myself.stop(Some(format!("{name} exceeded restart intensity: {reason}")));
            return;
        }
        let backoff = policy
            .backoff_min
            .saturating_mul(1 << (recent - 1).min(16))
            .min(policy.backoff_max);
        child.restarts += 1;
        child.token += 1;
        state
            .metrics
            .actor_restarts
            .get_or_create(&ActorLabel {
                actor: name.clone(),
            })
            .inc();
        tracing::warn!(
            actor = %name,
            reason = %reason,
            backoff_ms = backoff.as_millis() as u64,
            "actor failed; restarting"
        );
        let token = child.token;
        myself.send_after(backoff, move || SupervisorMsg::Restart {
            child: index,
            token,
        });
    }

    fn child_index(state: &SupervisorState, cell: &ActorCell) -> Option<usize> {
        state.children.iter().position(|c| {
            c.cell
                .as_ref()
                .is_some_and(|own| own.get_id() == cell.get_id())
        })
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // Export every child's restart counter from the start (at 0), not from its first restart.
        for spec in &args.children {
            drop(args.metrics.actor_restarts.get_or_create(&ActorLabel {
                actor: spec.name.clone(),
            }));
        }
        Ok(SupervisorState {
            children: args
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    cell: None,
                    failures: VecDeque::new(),
                    restarts: 0,
                    last_failure: None,
                    token: 0,
                })
                .collect(),
            policy: args.policy,
            metrics: args.metrics,
            exit: args.exit,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for child in &mut state.children {
            // A child that cannot start at all is a startup error, not something to retry.
            if let Err(reason) = Self::start_child(&myself, child).await {
                state.exit.send_replace(Some(NodeExit::StartFailed {
                    child: child.spec.name.clone(),
                    reason: reason.clone(),
                }));
                return Err(format!("starting {}: {reason}", child.spec.name).into());
            }
            tracing::debug!(actor = %child.spec.name, "actor started");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Stop children in reverse start order, each with a deadline.
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                let _ = cell
                    .stop_and_wait(Some("node stopping".into()), Some(Duration::from_secs(5)))
                    .await;
            }
        }
        state.exit.send_if_modified(|exit| {
            if exit.is_none() {
                *exit = Some(NodeExit::Clean);
                true
            } else {
                false
            }
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart { child, token } => {
                let Some(entry) = state.children.get_mut(child) else {
                    return Ok(());
                };
                if entry.token != token || entry.cell.is_some() {
                    return Ok(()); // Stale timer.
                }
                if let Err(reason) = Self::start_child(&myself, entry).await {
                    Self::on_child_exit(&myself, state, child, format!("restart failed: {reason}"));
                } else {
                    tracing::info!(actor = %entry.spec.name, restarts = entry.restarts, "actor restarted");
                }
            }
            SupervisorMsg::Lookup(name, reply) => {
                let _ = reply.send(state.running(&name));
            }
            SupervisorMsg::Tree(reply) => {
                let now = Instant::now();
                let window = state.policy.window;
                let children = state
                    .children
                    .iter()
                    .map(|c| ChildStatus {
                        name: c.spec.name.clone(),
                        status: if c.cell.is_some() {
                            "running"
                        } else {
                            "restarting"
                        },
                        restarts: c.restarts,
                        recent_failures: c
                            .failures
                            .iter()
                            .filter(|t| now.duration_since(**t) <= window)
                            .count(),
                        last_failure: c.last_failure.clone(),
                    })
                    .collect();
                let _ = reply.send(TreeSnapshot {
                    name: "node",
                    restarts_max: state.policy.restarts_max,
                    window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                    children,
                });
            }
            SupervisorMsg::Kill(name, reply) => {
                let cell = state.running(&name);
                if let Some(cell) = &cell {
                    tracing::warn!(actor = %name, "fault injection: killing actor");
                    cell.kill();
                }
                let _ = reply.send(cell.is_some());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "stopped unexpectedly".into()),
            ),
            _ => return Ok(()),
        };
        if let Some(index) = Self::child_index(state, &cell) {
            Self::on_child_exit(&myself, state, index, reason);
        }
        Ok(())
    }
}
