//! One NexStream endpoint shared by every call of a client or service: a task reads the
//! endpoint's events and routes each to the flow, hedge or session it belongs to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use nexus_stream::udp::StreamNode;
use nexus_stream::{CloseReason, Event, Mode, SessionId, StreamRef};
use tokio::sync::{mpsc, oneshot};

/// What happens on a reliable-ordered flow after it opened.
#[derive(Debug)]
pub(crate) enum FlowEvent {
    /// A whole message.
    Message(Bytes),
    /// The peer finished its side.
    Finished,
    /// The flow or its session ended without finishing.
    Failed(String),
}

/// Something the peer started.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A new reliable-ordered flow and its first message.
    Flow {
        stream: StreamRef,
        peer: Option<[u8; 32]>,
        first: Bytes,
        events: mpsc::UnboundedReceiver<FlowEvent>,
    },
    /// A reliable-unordered message.
    Message { stream: StreamRef, data: Bytes },
    /// A session was closed.
    Closed { session: SessionId },
}

/// Where a hedge's first answer goes, and the sessions it was sent on.
type HedgeWaiter = (Vec<SessionId>, oneshot::Sender<Result<Bytes, String>>);

#[derive(Default, Debug)]
struct Routes {
    flows: HashMap<StreamRef, mpsc::UnboundedSender<FlowEvent>>,
    hedges: HashMap<u64, HedgeWaiter>,
    early_hedges: HashMap<u64, Result<Bytes, String>>,
    peers: HashMap<SessionId, [u8; 32]>,
    sessions: HashMap<[u8; 32], SessionId>,
}

/// A driven endpoint and its event router.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    pub node: StreamNode,
    routes: Arc<Mutex<Routes>>,
}

impl Transport {
    /// Starts routing `events`; what no caller waits for arrives on the returned channel.
    pub fn start(
        node: StreamNode,
        mut events: mpsc::Receiver<Event>,
    ) -> (Transport, mpsc::UnboundedReceiver<Inbound>) {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (inbound, inbound_rx) = mpsc::unbounded_channel();
        let transport = Transport {
            node,
            routes: routes.clone(),
        };
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                route(&routes, &inbound, event);
            }
            // The endpoint stopped: fail everything still waiting.
            let mut r = lock(&routes);
            for (_, tx) in r.flows.drain() {
                let _ = tx.send(FlowEvent::Failed("the NexStream endpoint stopped".into()));
            }
            for (_, (_, tx)) in r.hedges.drain() {
                let _ = tx.send(Err("the NexStream endpoint stopped".into()));
            }
        });
        (transport, inbound_rx)
    }

    /// Routes the events of `stream` (a flow this side opened) to the returned receiver.
    pub fn watch(&self, stream: StreamRef) -> mpsc::UnboundedReceiver<FlowEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).flows.insert(stream, tx);
        rx
    }

    /// Stops routing `stream`.
    pub fn unwatch(&self, stream: StreamRef) {
        lock(&self.routes).flows.remove(&stream);
    }

    /// Waits for the first answer of hedge `id`, sent to `sessions`.
    pub fn watch_hedge(
        &self,
        id: u64,
        sessions: Vec<SessionId>,
    ) -> oneshot::Receiver<Result<Bytes, String>> {
        let (tx, rx) = oneshot::channel();
        let mut r = lock(&self.routes);
        if let Some(early) = r.early_hedges.remove(&id) {
            let _ = tx.send(early);
        } else {
            r.hedges.insert(id, (sessions, tx));
        }
        rx
    }

    /// Pools `session` as the one to `peer` (before its `Established` event is routed).
    pub fn pool(&self, peer: [u8; 32], session: SessionId) {
        let mut r = lock(&self.routes);
        r.sessions.insert(peer, session);
        r.peers.insert(session, peer);
    }

    /// Takes every pooled session out of the pool (they are no longer handed to new calls).
    pub fn take_sessions(&self) -> Vec<SessionId> {
        lock(&self.routes)
            .sessions
            .drain()
            .map(|(_, s)| s)
            .collect()
    }

    /// The established session to `peer`, if one is open.
    pub fn session_to(&self, peer: &[u8; 32]) -> Option<SessionId> {
        lock(&self.routes).sessions.get(peer).copied()
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // A panic while holding the lock leaves only maps behind: keep using them.
    routes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reason_text(reason: &CloseReason) -> String {
    format!("session closed: {reason}")
}

fn route(routes: &Mutex<Routes>, inbound: &mpsc::UnboundedSender<Inbound>, event: Event) {
    let mut r = lock(routes);
    match event {
        Event::Established { session, peer, .. } => {
            r.peers.insert(session, peer);
            r.sessions.insert(peer, session);
        }
        Event::Closed {
            session, reason, ..
        } => {
            if let Some(peer) = r.peers.remove(&session)
                && r.sessions.get(&peer) == Some(&session)
            {
                r.sessions.remove(&peer);
            }
            let text = reason_text(&reason);
            let dead: Vec<StreamRef> = r
                .flows
                .keys()
                .filter(|s| s.session == session)
                .copied()
                .collect();
            for s in dead {
                if let Some(tx) = r.flows.remove(&s) {
                    let _ = tx.send(FlowEvent::Failed(text.clone()));
                }
            }
            let mut failed = Vec::new();
            for (id, (sessions, _)) in r.hedges.iter_mut() {
                sessions.retain(|s| *s != session);
                if sessions.is_empty() {
                    failed.push(*id);
                }
            }
            for id in failed {
                if let Some((_, tx)) = r.hedges.remove(&id) {
                    let _ = tx.send(Err(text.clone()));
                }
            }
            let _ = inbound.send(Inbound::Closed { session });
        }
        Event::Message { stream, mode, data } => {
            if let Some(tx) = r.flows.get(&stream) {
                let _ = tx.send(FlowEvent::Message(data));
            } else if mode == Mode::ReliableOrdered {
                let (tx, rx) = mpsc::unbounded_channel();
                r.flows.insert(stream, tx);
                let peer = r.peers.get(&stream.session).copied();
                let _ = inbound.send(Inbound::Flow {
                    stream,
                    peer,
                    first: data,
                    events: rx,
                });
            } else {
                let _ = inbound.send(Inbound::Message { stream, data });
            }
        }
        // The route stays until its owner unwatches: a reset or a closed session can follow.
        Event::FlowFinished { stream } => {
            if let Some(tx) = r.flows.get(&stream) {
                let _ = tx.send(FlowEvent::Finished);
            }
        }
        Event::StreamFailed {
            stream,
            code,
            by_peer,
        } => {
            if let Some(tx) = r.flows.remove(&stream) {
                let who = if by_peer { "the peer" } else { "this end" };
                let _ = tx.send(FlowEvent::Failed(format!("stream reset by {who}: {code}")));
            }
        }
        Event::HedgeWon { hedge, data, .. } => match r.hedges.remove(&hedge) {
            Some((_, tx)) => {
                let _ = tx.send(Ok(data));
            }
            None => {
                r.early_hedges.insert(hedge, Ok(data));
            }
        },
        Event::Datagram { .. } => {}
    }
}
