//! NexStream: `StreamNode` (tokio UDP driver, NexLink framing), MIC-authenticated sessions.
//! A request opens a reliable-ordered flow and sends the body; the server answers on the same
//! flow and finishes its side; the client finishes its side once it has the answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use nexus_stream::identity::Identity;
use nexus_stream::udp::{Framing, StreamNode};
use nexus_stream::{Endpoint, EndpointConfig, ErrorCode, Event, FlowOptions, SessionId};
use nexus_trust_core::mic::{CaKeys, MicBody, SubjectKind};
use nexus_trust_core::verify::{Credentials, TrustContext, TrustUpdate};
use tokio::sync::mpsc;

use crate::harness::{Proto, Server};
use crate::stats::now;

/// The Unix time the bench's MICs are issued around; endpoints anchor their Unix clock there.
const NOW_MS: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;
const CA_KEY_ID: u32 = 1;

/// A CA and the keys and MICs of one server and one client node.
#[derive(Clone)]
pub struct Fabric {
    /// Every endpoint anchors its Unix clock (`NOW_MS`) at this one instant, so that expiry
    /// times one endpoint writes mean the same on the other.
    anchor: Instant,
    ca_keys: CaKeys,
    pub server_key: SigningKey,
    server_mic: Credentials,
    pub client_key: SigningKey,
    client_mic: Credentials,
}

impl Fabric {
    pub fn new() -> Fabric {
        let ca = SigningKey::from_bytes(&[0xca; 32]);
        let issue = |key: &SigningKey, serial: u64| Credentials {
            mic: MicBody {
                serial,
                subject_key: key.verifying_key().to_bytes(),
                kind: SubjectKind::Node,
                model: None,
                publisher: "nexus-bench".into(),
                provenance: vec![],
                claims: vec![],
                zk_commitment: None,
                not_before_ms: NOW_MS - DAY_MS,
                not_after_ms: NOW_MS + DAY_MS,
                ca_key_id: CA_KEY_ID,
            }
            .sign(&ca),
            attestations: vec![],
        };
        let server_key = SigningKey::from_bytes(&[0x51; 32]);
        let client_key = SigningKey::from_bytes(&[0xc1; 32]);
        let mut ca_keys = CaKeys::new();
        ca_keys.insert(CA_KEY_ID, ca.verifying_key());
        Fabric {
            anchor: now(),
            server_mic: issue(&server_key, 1),
            client_mic: issue(&client_key, 2),
            ca_keys,
            server_key,
            client_key,
        }
    }

    pub fn server_id(&self) -> [u8; 32] {
        self.server_key.verifying_key().to_bytes()
    }

    fn endpoint(&self, key: &SigningKey, mic: &Credentials) -> Endpoint {
        let mut trust = TrustContext::new();
        trust.apply_update(
            &TrustUpdate {
                ca_keys: self.ca_keys.clone(),
                circuits: vec![],
                revocations: vec![],
            },
            NOW_MS,
        );
        let identity = Identity::new(key.clone(), Some(mic.clone())).expect("identity");
        Endpoint::new(
            EndpointConfig::default(),
            identity,
            trust,
            None,
            self.anchor,
            NOW_MS,
        )
        .expect("endpoint")
    }

    pub async fn bind_client(&self) -> anyhow::Result<(StreamNode, mpsc::Receiver<Event>)> {
        let ep = self.endpoint(&self.client_key, &self.client_mic);
        Ok(StreamNode::bind((Ipv4Addr::LOCALHOST, 0).into(), ep, Framing::NexLink).await?)
    }
}

/// What the server does with a reliable-ordered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Sends the body back and finishes its side of the flow.
    Echo,
    /// Sends two bytes back and keeps the flow open (for a stream of messages on one flow).
    Ack,
}

/// Datagrams a NexStream server received.
#[derive(Debug, Default)]
pub struct DatagramCount {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
}

/// A NexStream server node on its own thread.
pub fn server(fabric: &Fabric, answer: Answer, count: Arc<DatagramCount>) -> Server {
    let fabric = fabric.clone();
    Server::spawn("nexstream-server", move || async move {
        let ep = fabric.endpoint(&fabric.server_key, &fabric.server_mic);
        let (node, mut events) =
            StreamNode::bind((Ipv4Addr::LOCALHOST, 0).into(), ep, Framing::NexLink)
                .await
                .expect("bind server");
        let addr = node.local_addr();
        let serve = Server::serve(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Message { stream, data, .. } => {
                        if answer == Answer::Echo {
                            let _ = node.send(stream, data).await;
                            let _ = node.finish(stream).await;
                        } else {
                            let _ = node.send(stream, Bytes::from_static(b"ok")).await;
                        }
                    }
                    Event::Datagram { data, .. } => {
                        count.datagrams.fetch_add(1, Ordering::Relaxed);
                        count.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        (addr, serve)
    })
}

pub struct NexStream {
    pub fabric: Fabric,
}

pub struct NexConn {
    pub node: StreamNode,
    pub events: mpsc::Receiver<Event>,
    pub session: SessionId,
}

impl NexConn {
    /// Waits for the first message on `flow`.
    pub async fn answer(&mut self, flow: nexus_stream::StreamRef) -> anyhow::Result<Bytes> {
        loop {
            match self.events.recv().await.context("driver stopped")? {
                Event::Message { stream, data, .. } if stream == flow => return Ok(data),
                Event::StreamFailed { stream, code, .. } if stream == flow => {
                    bail!("flow failed: {code}")
                }
                Event::Closed { reason, .. } => bail!("session closed: {reason}"),
                _ => {}
            }
        }
    }
}

impl Proto for NexStream {
    type Client = (StreamNode, mpsc::Receiver<Event>);
    type Conn = NexConn;

    async fn client(&self) -> anyhow::Result<Self::Client> {
        self.fabric.bind_client().await
    }

    async fn connect(
        &self,
        (node, events): Self::Client,
        target: SocketAddr,
    ) -> anyhow::Result<NexConn> {
        let session = node.connect(self.fabric.server_id(), target).await?;
        Ok(NexConn {
            node,
            events,
            session,
        })
    }

    async fn request(&self, conn: &mut NexConn, body: &Bytes) -> anyhow::Result<Bytes> {
        let flow = conn
            .node
            .open_flow(conn.session, FlowOptions::default())
            .await?;
        conn.node.send(flow, body.clone()).await?;
        conn.node.finish(flow).await?;
        conn.answer(flow).await
    }

    async fn datagrams_sent(&self, conn: &NexConn) -> Option<u64> {
        let (sessions, _) = conn.node.stats().await.ok()?;
        sessions
            .iter()
            .find(|s| s.id == conn.session)
            .map(|s| s.sent_packets)
    }

    async fn close(&self, conn: NexConn) {
        let _ = conn
            .node
            .close(conn.session, ErrorCode::NoError, "done")
            .await;
    }
}
