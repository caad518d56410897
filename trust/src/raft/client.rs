//! [`CaClient`]: how a node that is not a CA member talks to the CA group.
//!
//! Given the members' listener addresses it finds the leader (members answer
//! [`ClientReply::NotLeader`] with the leader's address), remembers it, and sends writes, read
//! indexes, membership changes and status requests there over the same framed protocol and
//! persistent links the members use among themselves. Requests that certainly did not reach a
//! member (connect failed) move on to the next address; a write whose connection broke after
//! sending is reported as [`CaClientError::ForwardFailed`] rather than retried, since it may
//! have been applied.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::network::{LinkError, Links};
use super::node::{Attempt, CaClientError, CaStatus, parse_reply};
use super::transport::{TcpTransport, Transport};
use super::wire::{ClientReply, ClientRequest, FRAME_BYTES_MAX_DEFAULT, WireRequest};
use super::{CaPeer, NodeId};
use crate::ca::{Command, Response};

/// Default deadline of one client operation.
pub const CLIENT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Pause between attempts while no leader is known.
pub const CLIENT_RETRY_PAUSE_MS: u64 = 50;

/// A client of the CA group for nodes that are not members.
pub struct CaClient<T: Transport = TcpTransport> {
    members: Vec<String>,
    links: Links<T>,
    leader: Mutex<Option<String>>,
    timeout: Duration,
}

impl<T: Transport> std::fmt::Debug for CaClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("members", &self.members)
            .field(
                "leader",
                &*self.leader.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

impl CaClient<TcpTransport> {
    /// A TCP client of the members listening at `members` (`host:port`).
    pub fn new(members: Vec<String>) -> Self {
        Self::with_transport(
            TcpTransport,
            members,
            Duration::from_millis(CLIENT_TIMEOUT_MS_DEFAULT),
        )
    }
}

impl<T: Transport> CaClient<T> {
    /// A client over `transport` with a per-operation deadline of `timeout`.
    pub fn with_transport(transport: T, members: Vec<String>, timeout: Duration) -> Self {
        Self {
            members,
            links: Links::new(transport, FRAME_BYTES_MAX_DEFAULT),
            leader: Mutex::new(None),
            timeout,
        }
    }

    /// The leader address the client currently believes in.
    pub fn known_leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    pub(crate) async fn call<R>(
        &self,
        op: &'static str,
        req: impl Fn() -> ClientRequest,
        want: impl Fn(ClientReply) -> Result<R, Box<ClientReply>>,
        retry_after_send: bool,
    ) -> Result<R, CaClientError> {
        if self.members.is_empty() {
            return Err(CaClientError::Unreachable {
                op,
                tried: "no CA member addresses configured".into(),
                last_error: String::new(),
            });
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut next_member = 0usize;
        let mut failures_in_a_row = 0usize;
        let mut last_connect_error: Option<String> = None;
        loop {
            let target = match self.known_leader() {
                Some(addr) => addr,
                None => {
                    let addr = self.members[next_member % self.members.len()].clone();
                    next_member += 1;
                    addr
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pause = false;
            match self
                .links
                .get(&target)
                .call(&WireRequest::Client(req()), left)
                .await
            {
                Ok(reply) => match parse_reply(op, reply, &want) {
                    Attempt::Done(r) => {
                        // Only the leader answers anything but status.
                        if op != "status" && self.known_leader().is_none() {
                            self.set_leader(Some(target));
                        }
                        return Ok(r);
                    }
                    Attempt::Fail(e) => return Err(e),
                    Attempt::Redirect(Some((_, CaPeer { addr, .. }))) if addr != target => {
                        self.set_leader(Some(addr));
                    }
                    Attempt::Redirect(_) | Attempt::Retry(_) => {
                        self.set_leader(None);
                        pause = true;
                    }
                },
                Err(LinkError::Timeout { .. }) => {
                    return Err(CaClientError::Timeout {
                        op,
                        after_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                Err(e) if e.not_sent() || retry_after_send => {
                    self.set_leader(None);
                    last_connect_error = Some(e.to_string());
                    failures_in_a_row += 1;
                    // A full round of members failed: wait before the next round.
                    pause = failures_in_a_row.is_multiple_of(self.members.len());
                }
                Err(e) => {
                    self.set_leader(None);
                    return Err(CaClientError::ForwardFailed {
                        op,
                        leader_addr: target,
                        reason: e.to_string(),
                    });
                }
            }
            let pause_for = Duration::from_millis(if pause { CLIENT_RETRY_PAUSE_MS } else { 0 });
            if Instant::now() + pause_for >= deadline {
                return Err(match last_connect_error {
                    Some(last_error) if failures_in_a_row >= self.members.len() => {
                        CaClientError::Unreachable {
                            op,
                            tried: self.members.join(", "),
                            last_error,
                        }
                    }
                    _ => CaClientError::NoLeader {
                        op,
                        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                    },
                });
            }
            if pause {
                tokio::time::sleep(pause_for).await;
            }
        }
    }

    /// Proposes `cmd` on the leader and returns what applying it produced.
    pub async fn write(&self, cmd: Command) -> Result<Response, CaClientError> {
        self.call(
            "write",
            || ClientRequest::Write(cmd.clone()),
            |reply| match reply {
                ClientReply::Written(r) => Ok(r),
                other => Err(Box::new(other)),
            },
            false,
        )
        .await
    }

    /// The leader's linearizable read index (the log index a replica must have applied to
    /// answer a read that reflects every acknowledged write).
    pub async fn read_index(&self) -> Result<Option<u64>, CaClientError> {
        self.call(
            "read",
            || ClientRequest::ReadIndex,
            |reply| match reply {
                ClientReply::ReadIndex(i) => Ok(i),
                other => Err(Box::new(other)),
            },
            true,
        )
        .await
    }

    /// Adds `id` as a voter (learner first, then promotion).
    pub async fn add_voter(&self, id: NodeId, peer: CaPeer) -> Result<(), CaClientError> {
        self.call(
            "add_voter",
            || ClientRequest::AddVoter {
                id,
                peer: peer.clone(),
            },
            |reply| match reply {
                ClientReply::MembershipChanged => Ok(()),
                other => Err(Box::new(other)),
            },
            false,
        )
        .await
    }

    /// Removes voter `id`.
    pub async fn remove_voter(&self, id: NodeId) -> Result<(), CaClientError> {
        self.call(
            "remove_voter",
            || ClientRequest::RemoveVoter { id },
            |reply| match reply {
                ClientReply::MembershipChanged => Ok(()),
                other => Err(Box::new(other)),
            },
            false,
        )
        .await
    }

    /// The status reported by the first member that answers (the known leader first).
    pub async fn status(&self) -> Result<CaStatus, CaClientError> {
        self.call(
            "status",
            || ClientRequest::Status,
            |reply| match reply {
                ClientReply::Status(s) => Ok(s),
                other => Err(Box::new(other)),
            },
            true,
        )
        .await
    }
}
