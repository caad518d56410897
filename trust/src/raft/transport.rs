//! The byte-stream transport under the Raft network, as a trait so the simulator can plug in
//! turmoil's TCP. [`TcpTransport`] is plain tokio TCP (`TCP_NODELAY`); a node's production
//! links are [`super::TlsTransport`] over it, which authenticates both ends' node keys and
//! enforces a [`LinkPolicy`].

use std::future::Future;
use std::io;
use std::sync::Arc;

use super::policy::LinkPolicy;

use tokio::io::{AsyncRead, AsyncWrite};

/// Connects to and listens on `host:port` addresses, yielding byte streams.
pub trait Transport: Clone + Send + Sync + 'static {
    /// A connected, bidirectional byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound listener.
    type Listener: Send + 'static;

    /// Binds a listener on `addr`.
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Waits for the next inbound connection; returns it with the peer's address.
    fn accept(
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
    /// The address a listener is bound to (resolves port 0).
    fn local_addr(listener: &Self::Listener) -> io::Result<String>;
    /// Opens a connection to `addr`.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// The node key the peer of an accepted stream proved in its handshake; `None` on a
    /// transport that does not authenticate peers.
    fn peer_key(_stream: &Self::Stream) -> Option<[u8; 32]> {
        None
    }

    /// The policy this transport enforces, if it authenticates peers: the node keeps its
    /// membership current and the listener asks it before serving each frame. `None` (plain
    /// TCP, turmoil TCP on its own): every frame is served.
    fn policy(&self) -> Option<Arc<LinkPolicy>> {
        None
    }
}

/// tokio TCP with Nagle disabled (Raft frames are small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn accept(listener: &mut Self::Listener) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer.to_string()))
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<String> {
        listener.local_addr().map(|a| a.to_string())
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
