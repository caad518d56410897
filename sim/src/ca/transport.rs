//! [`TurmoilTransport`]: the CA's byte-stream [`Transport`] over turmoil's simulated TCP, so the
//! real `CaNode` (its persistent, multiplexed peer links and its listener) runs unchanged inside
//! a turmoil host.
//!
//! What turmoil's TCP models and what it does not: segments take the link's latency and are
//! delivered in order; a partitioned link drops segments silently (there is no retransmission,
//! so a frame written during a cut is lost and the peer link's deadline fires, as a real
//! connection that stalls would); a crashed host's sockets vanish with it. There is no
//! congestion control, no bandwidth limit and no half-open-connection detection beyond what
//! the CA's own deadlines give.

use std::io;

use nexus_trust::raft::Transport;

/// turmoil TCP as a [`Transport`]: addresses are `host:port` with turmoil host names
/// (`n1:7100`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilTransport;

impl Transport for TurmoilTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr.to_owned()).await
    }

    async fn accept(listener: &mut Self::Listener) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = listener.accept().await?;
        Ok((stream, peer.to_string()))
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<String> {
        listener.local_addr().map(|a| a.to_string())
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr.to_owned()).await
    }
}
