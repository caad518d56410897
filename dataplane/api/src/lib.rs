//! NexAPI: the AI primitives of the fabric — inference, token streams, tensor transfer, hedged
//! calls and binary intent resolution — as binary messages over NexStream sessions, and the
//! SDK that services and clients embed.
//!
//! - [`wire`]: the messages and their encoding (`docs/protocols/nexapi.md` is the
//!   specification).
//! - [`Client`]: resolves an intent through the local node's binary NexAPI endpoint, then calls
//!   the chosen service directly over a pooled NexStream session (the *direct* path; no extra
//!   hop): [`Client::infer`], [`Client::stream`] (tokens, resumed on another endpoint after a
//!   failure), [`Client::send_tensor`], hedged calls ([`CallOptions::hedge`]).
//! - [`Service`]: serves a [`Handler`] on its own NexStream endpoint, registers the service with
//!   its node (with a MIC the fabric's CA issued for the service's key), renews the lease,
//!   reports load and answers calls; deadlines, cancellation, idempotency and resumable token
//!   streams are handled here, not by the application.
//! - [`safetensors`]: tensors to and from safetensors files.
//! - [`sample`]: a sample model for demos and examples.
//!
//! Both ends authenticate with certificates (MICs) from the fabric's CA and follow its
//! revocations: a client and a service each get a fresh Ed25519 key certified through their
//! local node's admin API, and refresh the CA keys and revocations from it.

#![deny(missing_docs)]

mod client;
mod error;
mod metrics;
pub mod node;
mod routed;
pub mod safetensors;
pub mod sample;
mod service;
mod transport;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use nexus_stream::udp::{Framing, StreamNode};
use nexus_stream::{Endpoint, EndpointConfig};
use nexus_trust_core::mic::{IssueRequest, ModelIdentity, SubjectKind};
use nexus_trust_core::verify::{Credentials, TrustContext};

pub use bytes::Bytes;
pub use client::{CallOptions, Client, ClientConfig, TokenStream};
pub use error::Error;
pub use metrics::Metrics;
pub use node::{NodeClient, NodeConfig, ServiceLink};
pub use routed::{Path, ROUTED_FANOUT, ROUTED_IDLE_TIMEOUT, ROUTED_INITIAL_RTT, ROUTED_KEEP_ALIVE};
pub use service::{Call, Handler, Service, ServiceConfig, TokenSink};
pub use wire::{
    ApiError, Candidate, DType, ErrorCode, Finish, KvBlock, Limits, Message, ModelMeta,
    ResolveAnswer, StreamEnd, Tensor, TensorHeader, TensorSpec, Token, TraceContext, WireError,
};

/// Transport and identity settings shared by clients and services.
#[derive(Clone, Debug)]
pub struct EndpointSettings {
    /// The NexStream endpoint's limits and timings. The SDK's defaults differ from the
    /// transport's in two places: a 5 s idle timeout with 1 s keep-alives, so a dead peer is
    /// noticed (and a stream resumed elsewhere) within 5 s. A client on the routed path uses
    /// at most [`ROUTED_IDLE_TIMEOUT`], [`ROUTED_KEEP_ALIVE`] and [`ROUTED_INITIAL_RTT`].
    pub stream: EndpointConfig,
    /// How datagrams travel on the socket.
    pub framing: Framing,
    /// Seed for every random draw of the endpoint (tests); the operating system's otherwise.
    pub seed: Option<u64>,
    /// How often CA keys and revocations are fetched from the local node.
    pub trust_refresh: Duration,
    /// Validity asked for the certificate of the SDK's key.
    pub mic_validity: Duration,
}

impl Default for EndpointSettings {
    fn default() -> EndpointSettings {
        EndpointSettings {
            stream: EndpointConfig {
                idle_timeout: Duration::from_secs(5),
                keep_alive: Some(Duration::from_secs(1)),
                ..EndpointConfig::default()
            },
            framing: Framing::NexLink,
            seed: None,
            trust_refresh: Duration::from_secs(5),
            mic_validity: Duration::from_secs(24 * 3600),
        }
    }
}

/// A value from the operating system's RNG (keys, idempotency keys). With
/// [`EndpointSettings::seed`] the transport's own draws are seeded; these are the
/// application's.
#[allow(
    clippy::disallowed_methods,
    reason = "an application's key and idempotency keys come from the OS-seeded RNG"
)]
pub(crate) fn os_random<T>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    rand::random()
}

/// A key and the certificate the fabric's CA issued for it.
#[derive(Clone, Debug)]
struct Identity {
    key: SigningKey,
    credentials: Credentials,
}

impl Identity {
    /// A fresh key, certified by the CA through `node`.
    async fn obtain(
        node: &NodeClient,
        kind: SubjectKind,
        model: Option<ModelIdentity>,
        publisher: &str,
        validity: Duration,
    ) -> Result<Identity, Error> {
        let key = SigningKey::from_bytes(&os_random::<[u8; 32]>());
        let request = IssueRequest {
            request_id: None,
            subject_key: key.verifying_key().to_bytes(),
            kind,
            model,
            publisher: publisher.to_owned(),
            provenance: Vec::new(),
            claims: Vec::new(),
            zk_commitment: None,
            validity_ms: u64::try_from(validity.as_millis()).unwrap_or(u64::MAX),
        };
        let credentials = node.issue(&request).await?;
        Ok(Identity { key, credentials })
    }
}

/// Now, on the monotonic clock (tokio's, so paused-time tests control it). The SDK drives
/// I/O; its cores (nexus-stream's endpoint, the registry) take time as input.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Now, as Unix milliseconds: deadlines on the wire and MIC validity are Unix time.
#[allow(
    clippy::disallowed_methods,
    reason = "the SDK is a driver: it reads the wall clock for wire deadlines and MIC validity"
)]
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Starts a NexStream endpoint for `identity` at `bind`, trusting what `node` trusts.
async fn start_endpoint(
    node: &NodeClient,
    identity: Identity,
    bind: SocketAddr,
    settings: &EndpointSettings,
) -> Result<
    (
        transport::Transport,
        tokio::sync::mpsc::UnboundedReceiver<transport::Inbound>,
    ),
    Error,
> {
    let update = node.trust_update().await?;
    let mut trust = TrustContext::new();
    let now_ms = unix_ms_now();
    trust.apply_update(&update, now_ms);
    let stream_identity =
        nexus_stream::identity::Identity::new(identity.key, Some(identity.credentials))
            .map_err(|e| Error::Transport(format!("identity: {e}")))?;
    let endpoint = Endpoint::new(
        settings.stream.clone(),
        stream_identity,
        trust,
        settings.seed,
        now(),
        now_ms,
    )
    .map_err(|e| Error::Transport(format!("endpoint: {e}")))?;
    let (stream_node, events) = StreamNode::bind(bind, endpoint, settings.framing)
        .await
        .map_err(|e| Error::Transport(format!("bind {bind}: {e}")))?;
    Ok(transport::Transport::start(stream_node, events))
}

/// Fetches revocations (and CA key changes) from the node every `refresh` and hands them to
/// the endpoint, which closes sessions whose peer was revoked. Stops when `owner` is dropped.
fn spawn_trust_refresh<T, F>(owner: Weak<T>, parts: F)
where
    T: Send + Sync + 'static,
    F: for<'a> Fn(&'a T) -> (&'a NodeClient, StreamNode, Duration) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Some(refresh) = owner.upgrade().map(|o| parts(&o).2) else {
                return;
            };
            tokio::time::sleep(refresh).await;
            let Some(o) = owner.upgrade() else {
                return;
            };
            let (node, stream, _) = parts(&o);
            match node.trust_update().await {
                Ok(update) => {
                    let _ = stream.update_trust(update).await;
                }
                Err(e) => tracing::warn!(error = %e, "trust refresh from the local node failed"),
            }
        }
    });
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "HELLO",
        Message::HelloAck(_) => "HELLO_ACK",
        Message::Request(_) => "REQUEST",
        Message::Response(_) => "RESPONSE",
        Message::Token(_) => "TOKEN",
        Message::End(_) => "END",
        Message::Tensor(_) => "TENSOR",
        Message::Resolve { .. } => "RESOLVE",
        Message::Answer(_) => "ANSWER",
        Message::Error(_) => "ERROR",
    }
}
