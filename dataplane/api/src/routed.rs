//! The routed path (`docs/protocols/nexapi.md` §2.1): a call's session is addressed to the
//! capability class's routing key and enters the local node's data plane, whose forwarding table
//! picks the replica per flow. The client reaches the data plane through its node's session
//! socket, which relays the session's frames out and its answers back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_registry::Intent;
use nexus_stream::{LinkRoute, SessionId};
use serde::Deserialize;

use crate::client::{Client, lock};
use crate::error::Error;
use crate::wire::{Candidate, ErrorCode};

/// Which path a client's calls take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    /// Resolve, then a session straight to the chosen service's endpoint (no node on the data
    /// path).
    #[default]
    Direct,
    /// Resolve, then a session addressed to the intent class's routing key through the local
    /// node's data plane, which picks the replica per flow. Hedging does not apply: the data
    /// plane picks one replica per session.
    Routed,
}

/// How the local node is reached on the routed path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Via {
    /// The node's session socket: it relays the client's frames into the data plane and the
    /// answers back.
    relay: SocketAddr,
    /// The node's NexLink tag: answers are addressed to its session key.
    node_tag: u64,
}

/// One capability class as the last resolve described it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Class {
    /// The class's routing key.
    key: u128,
    /// The keys a replica may prove: the answer's candidates'.
    accept: Vec<[u8; 32]>,
}

/// The client's routed-path state.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    via: Mutex<Option<Via>>,
    /// Service key → the class it was last resolved in.
    classes: Mutex<HashMap<[u8; 32], Arc<Class>>>,
    /// Class key → its pooled session and the replica's key.
    sessions: Mutex<HashMap<u128, (SessionId, [u8; 32])>>,
    /// One connect per class at a time.
    connecting: Mutex<HashMap<u128, Arc<tokio::sync::Mutex<()>>>>,
    /// Classes whose pooled session was lost (closed by its replica, idled out, revoked): their
    /// next session is opened on [`ROUTED_FANOUT`] flows at once.
    lost: Mutex<HashSet<u128>>,
}

/// Classes remembered at most; forgotten all at once beyond (they are relearned on the next
/// resolve).
const CLASSES_MAX: usize = 4096;

/// Flows a class's next session is opened on at once after its pooled session was lost; the
/// first to complete its handshake is kept and the others are closed. The data plane places
/// each flow by weight, so while a dead replica's route is still installed (until its lease runs
/// out) a single new flow can land on it again: with two replicas, one of them dead, all of
/// these flows do so with probability 2⁻⁶.
pub const ROUTED_FANOUT: usize = 6;

/// Longest idle timeout of a routed client's sessions: a routed session whose replica vanished
/// (stopped without closing, or its route withdrawn so that its frames reach a replica that
/// does not know the connection and whose stateless reset the client cannot authenticate) is
/// closed this long after its last answer, and the next call opens a new flow.
pub const ROUTED_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest keep-alive interval of a routed client's sessions: several keep-alives per idle
/// timeout, so a live replica's session never idles out.
pub const ROUTED_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// Longest round-trip time a routed client assumes before its first sample. The first call of
/// a class its node did not track yet can reach the data plane before the table compiler has
/// installed the class's route; its first handshake packet is then dropped, and is sent again
/// after about three times this (not after about a second, as with QUIC's default of 333 ms).
pub const ROUTED_INITIAL_RTT: Duration = Duration::from_millis(10);

/// `settings` for a client on `path`: on the routed path the idle timeout is at most
/// [`ROUTED_IDLE_TIMEOUT`], keep-alives come at least every [`ROUTED_KEEP_ALIVE`] and the
/// initial round-trip time is at most [`ROUTED_INITIAL_RTT`].
pub(crate) fn endpoint_settings(
    path: Path,
    settings: &crate::EndpointSettings,
) -> crate::EndpointSettings {
    let mut settings = settings.clone();
    if path == Path::Routed {
        let stream = &mut settings.stream;
        stream.idle_timeout = stream.idle_timeout.min(ROUTED_IDLE_TIMEOUT);
        stream.keep_alive = Some(
            stream
                .keep_alive
                .map_or(ROUTED_KEEP_ALIVE, |k| k.min(ROUTED_KEEP_ALIVE)),
        );
        stream.initial_rtt = stream.initial_rtt.min(ROUTED_INITIAL_RTT);
    }
    settings
}

#[derive(Deserialize)]
struct NodeDto {
    id: String,
    #[serde(default)]
    sessions: Option<String>,
}

impl Routed {
    /// Remembers the class of each candidate of `answer` (the routed session of a call to one
    /// of them is that class's).
    pub(crate) fn learn(&self, routing_key: u128, candidates: &[Candidate]) {
        let accept: Vec<[u8; 32]> = candidates.iter().filter_map(|c| c.key).collect();
        let class = Arc::new(Class {
            key: routing_key,
            accept,
        });
        let mut classes = lock(&self.classes);
        if classes.len() >= CLASSES_MAX {
            classes.clear();
        }
        for key in &class.accept {
            classes.insert(*key, class.clone());
        }
    }
}

impl Client {
    /// The candidates of `intent` for a routed call: those with a certified key (the replica
    /// the data plane picks must prove one of them). No endpoint address is needed.
    pub(crate) async fn routed_candidates(&self, intent: &Intent) -> Result<Vec<Candidate>, Error> {
        let answer = self.resolve(intent).await?;
        let usable: Vec<Candidate> = answer
            .candidates
            .iter()
            .filter(|c| c.key.is_some())
            .cloned()
            .collect();
        if usable.is_empty() {
            self.forget(intent);
            return Err(Error::api(
                ErrorCode::Unavailable,
                format!(
                    "no route for intent {} (class {:032x}): {} candidates, none with a certified key",
                    intent.canonical(),
                    answer.routing_key,
                    answer.candidates.len()
                ),
            ));
        }
        self.inner.routed.learn(answer.routing_key, &usable);
        // Each entry is one attempt on the class's session (a failed attempt's session is gone
        // from the pool, so the next opens a new flow): as many attempts as failovers allow,
        // however few replicas the answer names.
        let attempts = self.inner.config.failovers as usize + 1;
        Ok(usable
            .iter()
            .cycle()
            .take(attempts.max(usable.len()))
            .cloned()
            .collect())
    }

    /// The routed session of `candidate`'s class: pooled, or opened through the local node's
    /// session socket (its MIC verified, its key one of the class's candidates').
    pub(crate) async fn routed_session(&self, candidate: &Candidate) -> Result<SessionId, Error> {
        let routed = &self.inner.routed;
        let class = candidate
            .key
            .and_then(|k| lock(&routed.classes).get(&k).cloned())
            .ok_or_else(|| {
                Error::api(
                    ErrorCode::Unavailable,
                    format!("{} is in no resolved class", candidate.service),
                )
            })?;
        if let Some(s) = self.pooled_routed(class.key) {
            return Ok(s);
        }
        let gate = lock(&routed.connecting)
            .entry(class.key)
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(s) = self.pooled_routed(class.key) {
            return Ok(s);
        }
        let opened = self.open_routed(&class).await;
        lock(&routed.connecting).remove(&class.key);
        let (session, peer) = opened?;
        lock(&routed.sessions).insert(class.key, (session, peer));
        Ok(session)
    }

    /// The pooled session of class `key`, if it is still open.
    fn pooled_routed(&self, key: u128) -> Option<SessionId> {
        let mut sessions = lock(&self.inner.routed.sessions);
        let (session, peer) = *sessions.get(&key)?;
        // The transport drops a closed session from its pool: a session it no longer knows is
        // gone (closed by the peer, idled out, revoked; `close_sessions` forgets the class's
        // session itself).
        if self.inner.transport.session_to(&peer) == Some(session) {
            Some(session)
        } else {
            sessions.remove(&key);
            self.mark_lost(key);
            None
        }
    }

    /// Class `key`'s next session is opened on [`ROUTED_FANOUT`] flows.
    fn mark_lost(&self, key: u128) {
        let mut lost = lock(&self.inner.routed.lost);
        if lost.len() >= CLASSES_MAX {
            lost.clear();
        }
        lost.insert(key);
    }

    /// Forgets every class's pooled session (the transport's pool was emptied).
    pub(crate) fn forget_routed_sessions(&self) {
        lock(&self.inner.routed.sessions).clear();
    }

    async fn open_routed(&self, class: &Class) -> Result<(SessionId, [u8; 32]), Error> {
        let via = self.via().await?;
        let node = &self.inner.transport.node;
        let route = LinkRoute {
            routing_key: class.key,
            dst: via.node_tag,
        };
        let flows = if lock(&self.inner.routed.lost).contains(&class.key) {
            ROUTED_FANOUT
        } else {
            1
        };
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..flows {
            let node = node.clone();
            let accept = class.accept.clone();
            connects.spawn(async move { node.connect_routed(via.relay, route, accept).await });
        }
        let mut session = None;
        let mut failure = None;
        while let Some(joined) = connects.join_next().await {
            match joined {
                Ok(Ok(s)) => {
                    session = Some(s);
                    break;
                }
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if !connects.is_empty() {
            // The other flows' handshakes go on in the endpoint: close those that complete.
            let node = node.clone();
            tokio::spawn(async move {
                while let Some(joined) = connects.join_next().await {
                    if let Ok(Ok(s)) = joined {
                        let _ = node
                            .close(s, nexus_stream::ErrorCode::NoError, "another flow won")
                            .await;
                    }
                }
            });
        }
        let Some(session) = session else {
            // Every flow was refused (its replica is stopping or full) or failed: the next
            // attempt fans out, as after a lost session.
            self.mark_lost(class.key);
            return Err(Error::Transport(format!(
                "routed session to class {:032x}: {}",
                class.key,
                failure.unwrap_or_default()
            )));
        };
        lock(&self.inner.routed.lost).remove(&class.key);
        let (stats, _) = node
            .stats()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let peer = stats
            .iter()
            .find(|s| s.id == session)
            .and_then(|s| s.peer)
            .ok_or_else(|| {
                Error::Transport(format!(
                    "routed session to class {:032x} closed right after its handshake",
                    class.key
                ))
            })?;
        self.inner.transport.pool(peer, session);
        Ok((session, peer))
    }

    /// The local node's session socket and tag, asked once (`GET /v1/node`).
    async fn via(&self) -> Result<Via, Error> {
        if let Some(via) = *lock(&self.inner.routed.via) {
            return Ok(via);
        }
        let config = self.inner.node.config();
        let http = config.http_client(Duration::from_secs(10))?;
        let url = format!("{}/v1/node", config.admin);
        let mut request = http.get(&url);
        if let Some(t) = &config.token {
            request = request.bearer_auth(t);
        }
        let node: NodeDto = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Error::Node(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| Error::Node(format!("GET {url}: {e}")))?;
        let relay: SocketAddr = node
            .sessions
            .ok_or_else(|| {
                Error::Node(
                    "the local node has no session socket (it runs no data plane): the routed path is unavailable"
                        .into(),
                )
            })?
            .parse()
            .map_err(|e| Error::Node(format!("the node's session socket: {e}")))?;
        let id: [u8; 32] = hex::decode(&node.id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::Node(format!("the node's id {:?} is not 64 hex digits", node.id))
            })?;
        // A session key carries the node's NexLink tag in its high 64 bits.
        let node_tag = (nexus_stream::link::session_key_of(&id).0 >> 64) as u64;
        let via = Via { relay, node_tag };
        *lock(&self.inner.routed.via) = Some(via);
        Ok(via)
    }
}
