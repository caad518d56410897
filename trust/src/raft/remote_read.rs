//! Linearizable reads of the CA state from anywhere: on a member ([`CaNode::read`]) and from a
//! node that is not a member ([`CaClient::read`], forwarded to the leader over the client
//! protocol as [`ClientRequest::Read`]).
//!
//! A [`CaQuery`] names what to read; [`answer`] computes the [`CaAnswer`] from a [`CaState`]
//! (pure, bounded: lists stop at [`crate::ca::LIST_LIMIT_MAX`]). The leader serves a remote read
//! like a local one: it confirms its leadership with a quorum (read index), waits until its
//! state machine has applied that index, then answers from its state, so the answer reflects
//! every write acknowledged before the read started.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::client::CaClient;
use super::node::{CaClientError, CaNode, Core};
use super::transport::Transport;
use super::wire::{ClientReply, ClientRequest};
use crate::ca::{CaState, CaStats, CircuitKeys, LIST_LIMIT_MAX};
use crate::mic::{CaKeys, Mic, hex_bytes};
use crate::revocation::SignedRevocation;

/// What to read from the CA state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaQuery {
    /// Counters ([`CaState::stats`]).
    Stats,
    /// The CA's public keys.
    Keys,
    /// Circuit `id`'s Groth16 keys.
    Circuit(u16),
    /// The MIC with this serial and its revocation record, if revoked.
    Get(u64),
    /// MICs with serials above `after`, ascending, at most `limit` (capped at
    /// [`LIST_LIMIT_MAX`]), each with its revocation record if revoked.
    List {
        /// Exclusive lower bound.
        after: u64,
        /// Most entries returned.
        limit: u32,
    },
    /// Revocation records with `seq` above `seq`, in seq order, at most `limit`.
    RevocationsAfter {
        /// Exclusive lower bound.
        seq: u64,
        /// Most entries returned.
        limit: u32,
    },
}

/// One CA public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaKeyEntry {
    /// The id MICs name the key by.
    pub ca_key_id: u32,
    /// The Ed25519 public key (64 hex characters in JSON).
    #[serde(with = "hex_bytes")]
    pub public_key: [u8; 32],
}

/// The answer to a [`CaQuery`] (same variant order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaAnswer {
    /// Answer to [`CaQuery::Stats`].
    Stats(CaStats),
    /// Answer to [`CaQuery::Keys`] (empty before bootstrap), by key id.
    Keys(Vec<CaKeyEntry>),
    /// Answer to [`CaQuery::Circuit`].
    Circuit(Option<CircuitKeys>),
    /// Answer to [`CaQuery::Get`] (boxed: a MIC is large next to the other answers).
    Mic(Option<Box<(Mic, Option<SignedRevocation>)>>),
    /// Answer to [`CaQuery::List`]: each MIC with its revocation record, if revoked.
    Mics(Vec<(Mic, Option<SignedRevocation>)>),
    /// Answer to [`CaQuery::RevocationsAfter`].
    Revocations(Vec<SignedRevocation>),
}

/// The key list of a [`CaKeys`] set, by key id.
pub fn key_entries(keys: &CaKeys) -> Vec<CaKeyEntry> {
    keys.iter()
        .map(|(ca_key_id, key)| CaKeyEntry {
            ca_key_id,
            public_key: key.to_bytes(),
        })
        .collect()
}

/// Computes the answer to `query` from `state` (pure; bounded by [`LIST_LIMIT_MAX`]).
pub fn answer(state: &CaState, query: &CaQuery) -> CaAnswer {
    let cap = |limit: u32| {
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(LIST_LIMIT_MAX)
    };
    match query {
        CaQuery::Stats => CaAnswer::Stats(state.stats()),
        CaQuery::Keys => CaAnswer::Keys(key_entries(state.ca_keys())),
        CaQuery::Circuit(id) => CaAnswer::Circuit(state.circuit(*id).cloned()),
        CaQuery::Get(serial) => CaAnswer::Mic(
            state
                .get(*serial)
                .map(|mic| Box::new((mic.clone(), state.revocation(*serial).cloned()))),
        ),
        CaQuery::List { after, limit } => CaAnswer::Mics(
            state
                .list(*after, cap(*limit))
                .into_iter()
                .map(|mic| {
                    let revocation = state.revocation(mic.body.serial).cloned();
                    (mic.clone(), revocation)
                })
                .collect(),
        ),
        CaQuery::RevocationsAfter { seq, limit } => CaAnswer::Revocations(
            state
                .revocations_after(*seq, cap(*limit))
                .into_iter()
                .cloned()
                .collect(),
        ),
    }
}

impl<T: Transport> CaNode<T> {
    /// A linearizable read of the CA state (forwarding the read index to the leader if needed).
    pub async fn read(&self, query: CaQuery) -> Result<CaAnswer, CaClientError> {
        self.read_linearizable(|state| answer(state, &query)).await
    }
}

impl<T: Transport> CaClient<T> {
    /// A linearizable read of the CA state, served by the leader.
    pub async fn read(&self, query: CaQuery) -> Result<CaAnswer, CaClientError> {
        self.call(
            "read",
            || ClientRequest::Read(query.clone()),
            |reply| match reply {
                ClientReply::Read(answer) => Ok(answer),
                other => Err(Box::new(other)),
            },
            true,
        )
        .await
    }
}

impl<T: Transport> Core<T> {
    /// Serves a [`ClientRequest::Read`]: only the leader answers (others redirect), after
    /// confirming leadership and applying up to the read index, within `deadline`.
    pub(crate) async fn serve_read(&self, query: CaQuery, deadline: Instant) -> ClientReply {
        let timeout_ms = self.timings.client_timeout_ms;
        let index = match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
            Err(_) => {
                return ClientReply::Failed(
                    CaClientError::Timeout {
                        op: "read",
                        after_ms: timeout_ms,
                    }
                    .to_string(),
                );
            }
            Ok(Ok((read, _applied))) => read.map(|l| l.index),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                return ClientReply::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                };
            }
            Ok(Err(e)) => return ClientReply::Failed(format!("read: {e}")),
        };
        if let Some(index) = index {
            let left = deadline.saturating_duration_since(Instant::now());
            let waited = self
                .raft
                .wait(Some(left.max(Duration::from_millis(1))))
                .applied_index_at_least(Some(index), "remote linearizable read")
                .await;
            if let Err(e) = waited {
                return ClientReply::Failed(format!("read: waiting to apply index {index}: {e}"));
            }
        }
        let applied = self.state.read();
        ClientReply::Read(answer(&applied.ca, &query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Bootstrap, Command, Response};
    use crate::revocation::RevocationReason;
    use nexus_trust_core::testkit;

    fn bootstrapped() -> CaState {
        let mut state = CaState::new();
        let boot = Bootstrap {
            ca_secret_key: [7; 32],
            ca_key_id: 1,
            circuits: vec![],
        };
        assert!(matches!(
            state.apply(1, &Command::Bootstrap(Box::new(boot))),
            Response::Bootstrapped { ca_key_id: 1 }
        ));
        let request = |n: u8| testkit::agent_request([n; 32], "p", 3_600_000);
        let issued = state.apply(
            2,
            &Command::Issue {
                now_ms: 1_000_000,
                requests: (1..=5).map(request).collect(),
            },
        );
        assert!(matches!(issued, Response::Issued(ref r) if r.iter().all(Result::is_ok)));
        let revoked = state.apply(
            3,
            &Command::Revoke {
                now_ms: 1_000_001,
                serial: 2,
                reason: RevocationReason::KeyCompromise,
            },
        );
        assert!(matches!(revoked, Response::Revoked(Ok(_))));
        state
    }

    #[test]
    fn answers_come_from_the_state() {
        let state = bootstrapped();
        let CaAnswer::Keys(keys) = answer(&state, &CaQuery::Keys) else {
            panic!("keys answer");
        };
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].ca_key_id, 1);
        let CaAnswer::Mic(Some(found)) = answer(&state, &CaQuery::Get(2)) else {
            panic!("get answer");
        };
        let (mic, rev) = *found;
        assert_eq!(mic.body.serial, 2);
        assert_eq!(rev.map(|r| r.serial), Some(2));
        assert_eq!(answer(&state, &CaQuery::Get(99)), CaAnswer::Mic(None));
        let CaAnswer::Mics(list) = answer(&state, &CaQuery::List { after: 1, limit: 2 }) else {
            panic!("list answer");
        };
        assert_eq!(
            list.iter()
                .map(|(m, rev)| (m.body.serial, rev.as_ref().map(|r| r.serial)))
                .collect::<Vec<_>>(),
            [(2, Some(2)), (3, None)]
        );
        let CaAnswer::Revocations(revs) =
            answer(&state, &CaQuery::RevocationsAfter { seq: 0, limit: 10 })
        else {
            panic!("revocations answer");
        };
        assert_eq!(revs.len(), 1);
        assert_eq!(
            answer(&state, &CaQuery::RevocationsAfter { seq: 1, limit: 10 }),
            CaAnswer::Revocations(vec![])
        );
        assert_eq!(
            answer(&state, &CaQuery::Circuit(1)),
            CaAnswer::Circuit(None)
        );
    }

    #[test]
    fn queries_and_answers_roundtrip_as_json() {
        let state = bootstrapped();
        for q in [
            CaQuery::Stats,
            CaQuery::Keys,
            CaQuery::Get(1),
            CaQuery::List { after: 0, limit: 3 },
            CaQuery::RevocationsAfter { seq: 0, limit: 3 },
        ] {
            let a = answer(&state, &q);
            let bytes = serde_json::to_vec(&a).expect("encode");
            let back: CaAnswer = serde_json::from_slice(&bytes).expect("decode");
            assert_eq!(back, a, "{q:?}");
            let qb: CaQuery =
                serde_json::from_slice(&serde_json::to_vec(&q).expect("q")).expect("q back");
            assert_eq!(qb, q);
        }
    }
}
