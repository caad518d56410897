//! [`TlsTransport`]: the CA's links as mutually authenticated TLS 1.3 over another
//! [`Transport`] (TCP in production), with Ed25519 node keys as raw public keys (RFC 7250).
//!
//! Both ends present their node identity key and check the other's against one
//! [`LinkPolicy`]: a listener completes the handshake only with a key the policy admits for
//! client requests (CA members, expected voters, allowed clients), and a connector only with a
//! server that is a CA member or expected voter. A refused key, or a peer that does not speak
//! TLS (plain Raft frames, for one), is dropped in the handshake — nothing it sent is read as a
//! frame. Which frames an admitted key may send is decided per frame by the listener
//! ([`Transport::policy`]).
//!
//! Handshakes of inbound connections run in their own tasks (at most [`HANDSHAKES_MAX`] at
//! once, each within [`HANDSHAKE_TIMEOUT_MS`]), so a slow or silent peer never holds up the
//! accept loop. Every failed inbound handshake counts in
//! [`LinkStats::handshakes_refused`](super::policy::LinkStats), every failed outbound one in
//! `handshakes_failed_out`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rustls::pki_types::ServerName;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::policy::{InboundKeys, LinkPolicy, OutboundKeys};
use super::transport::{TcpTransport, Transport};
use crate::tls::{TlsError, certified_key, client_config, peer_key_of, server_config};

/// The ALPN id of a CA link.
pub const ALPN: &[u8] = b"nexus-ca/1";
/// Inbound handshakes in progress at once; connections beyond it are closed unread.
pub const HANDSHAKES_MAX: usize = 64;
/// How long an inbound handshake may take before the connection is closed.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// The server name a connector sends (raw public keys carry no name; the key is what counts).
const SERVER_NAME: &str = "ca.nexus";

/// Mutually authenticated TLS 1.3 over `I` (see the module docs).
pub struct TlsTransport<I: Transport = TcpTransport> {
    inner: I,
    policy: Arc<LinkPolicy>,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    node_key: [u8; 32],
}

impl<I: Transport> Clone for TlsTransport<I> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            acceptor: self.acceptor.clone(),
            connector: self.connector.clone(),
            server_name: self.server_name.clone(),
            node_key: self.node_key,
        }
    }
}

impl<I: Transport> fmt::Debug for TlsTransport<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("node_key", &super::policy::KeyHex::of(&self.node_key))
            .finish_non_exhaustive()
    }
}

impl<I: Transport> TlsTransport<I> {
    /// Links over `inner` that present `key` and admit peers by `policy`.
    pub fn new(inner: I, key: &SigningKey, policy: Arc<LinkPolicy>) -> Result<Self, TlsError> {
        let provider = Arc::new(crate::tls::system_provider());
        let certified = certified_key(key)?;
        let server = server_config(
            provider.clone(),
            certified.clone(),
            InboundKeys(policy.clone()),
            &[ALPN],
        )?;
        let client = client_config(provider, certified, OutboundKeys(policy.clone()), &[ALPN])?;
        let server_name = ServerName::try_from(SERVER_NAME)
            .map_err(|e| TlsError::Encoding(format!("server name {SERVER_NAME}: {e}")))?;
        Ok(Self {
            inner,
            policy,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
            node_key: key.verifying_key().to_bytes(),
        })
    }

    /// The node key this transport presents.
    pub fn node_key(&self) -> [u8; 32] {
        self.node_key
    }

    /// The policy it enforces.
    pub fn link_policy(&self) -> &Arc<LinkPolicy> {
        &self.policy
    }
}

/// A listener of a [`TlsTransport`]: the inner listener plus the handshakes in progress.
pub struct TlsListener<I: Transport> {
    inner: I::Listener,
    acceptor: TlsAcceptor,
    policy: Arc<LinkPolicy>,
    handshakes: JoinSet<Option<(TlsStream<I::Stream>, String)>>,
}

impl<I: Transport> fmt::Debug for TlsListener<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl<I: Transport> Transport for TlsTransport<I> {
    type Stream = TlsStream<I::Stream>;
    type Listener = TlsListener<I>;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        Ok(TlsListener {
            inner: self.inner.bind(addr).await?,
            acceptor: self.acceptor.clone(),
            policy: self.policy.clone(),
            handshakes: JoinSet::new(),
        })
    }

    async fn accept(listener: &mut Self::Listener) -> io::Result<(Self::Stream, String)> {
        let TlsListener {
            inner,
            acceptor,
            policy,
            handshakes,
        } = listener;
        loop {
            tokio::select! {
                biased;
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return Ok(accepted);
                    }
                }
                accepted = I::accept(inner) => {
                    let (stream, peer) = accepted?;
                    if handshakes.len() >= HANDSHAKES_MAX {
                        policy.stats().handshakes_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, limit = HANDSHAKES_MAX, "CA listener: too many handshakes in progress; closing connection");
                        continue;
                    }
                    let (acceptor, policy) = (acceptor.clone(), policy.clone());
                    handshakes.spawn(async move {
                        let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
                        let outcome = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                        let reason = match outcome {
                            Ok(Ok(tls)) => return Some((TlsStream::Server(tls), peer)),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT_MS} ms"),
                        };
                        policy.stats().handshakes_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%peer, %reason, "CA listener: handshake refused");
                        None
                    });
                }
            }
        }
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<String> {
        I::local_addr(&listener.inner)
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = self.inner.connect(addr).await?;
        match self
            .connector
            .connect(self.server_name.clone(), stream)
            .await
        {
            Ok(tls) => Ok(TlsStream::Client(tls)),
            Err(e) => {
                self.policy
                    .stats()
                    .handshakes_failed_out
                    .fetch_add(1, Ordering::Relaxed);
                Err(io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {addr} failed: {e}"),
                ))
            }
        }
    }

    fn peer_key(stream: &Self::Stream) -> Option<[u8; 32]> {
        match stream {
            TlsStream::Server(s) => peer_key_of(s.get_ref().1),
            TlsStream::Client(c) => peer_key_of(c.get_ref().1),
        }
    }

    fn policy(&self) -> Option<Arc<LinkPolicy>> {
        Some(self.policy.clone())
    }
}
