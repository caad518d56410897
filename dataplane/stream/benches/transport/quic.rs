//! Plain quinn 0.11 over the same rustls provider and raw-key TLS configuration as every
//! baseline ([`crate::tls`]); ALPN `bench/1`. A request is one bidirectional stream: write the
//! body, finish, read the answer to its end. quinn's own UDP layer (GSO/GRO where the kernel
//! has them), its default MTU settings (1200 initial, discovery up to 1452), and NexStream's
//! flow-control windows and socket buffer sizes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::harness::{BODY_BYTES_MAX, CONNECTION_WINDOW_BYTES, Proto, STREAM_WINDOW_BYTES, Server};
use crate::tls;

const ALPN: &[u8] = b"bench/1";

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW_BYTES));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    t.send_window(u64::from(CONNECTION_WINDOW_BYTES));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
    Arc::new(t)
}

/// Socket buffers of quinn's sockets: the same 4 MiB NexStream's driver asks for, so that
/// neither loses datagrams to the kernel's 208 KiB default in a burst.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn socket() -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let s = socket2::SockRef::from(&socket);
    s.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok(socket)
}

pub fn server(key: &SigningKey) -> Server {
    let tls = tls::server_config(key, &[ALPN]);
    Server::spawn("quinn-server", move || async move {
        let crypto = QuicServerConfig::try_from(tls).expect("QUIC-capable TLS config");
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket().expect("bind quinn server"),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("quinn server endpoint");
        let addr = endpoint.local_addr().expect("bound");
        let serve = Server::serve(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let Ok(body) = recv.read_to_end(BODY_BYTES_MAX).await else {
                                return;
                            };
                            let _ = send.write_all(&body).await;
                            let _ = send.finish();
                        });
                    }
                });
            }
        });
        (addr, serve)
    })
}

pub struct Quinn {
    pub config: quinn::ClientConfig,
}

impl Quinn {
    pub fn new(client_key: &SigningKey, server_id: [u8; 32]) -> Quinn {
        let tls = tls::client_config(client_key, server_id, &[ALPN]);
        let crypto = QuicClientConfig::try_from(tls).expect("QUIC-capable TLS config");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Quinn { config }
    }
}

pub struct QuinnConn {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Proto for Quinn {
    type Client = quinn::Endpoint;
    type Conn = QuinnConn;

    async fn client(&self) -> anyhow::Result<quinn::Endpoint> {
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket()?,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(self.config.clone());
        Ok(endpoint)
    }

    async fn connect(
        &self,
        endpoint: quinn::Endpoint,
        target: SocketAddr,
    ) -> anyhow::Result<QuinnConn> {
        let conn = endpoint.connect(target, "localhost")?.await?;
        Ok(QuinnConn { endpoint, conn })
    }

    async fn request(&self, conn: &mut QuinnConn, body: &Bytes) -> anyhow::Result<Bytes> {
        let (mut send, mut recv) = conn.conn.open_bi().await?;
        send.write_all(body).await?;
        send.finish()?;
        let answer = recv
            .read_to_end(BODY_BYTES_MAX)
            .await
            .context("reading the answer")?;
        Ok(Bytes::from(answer))
    }

    async fn datagrams_sent(&self, conn: &QuinnConn) -> Option<u64> {
        Some(conn.conn.stats().udp_tx.datagrams)
    }

    async fn close(&self, conn: QuinnConn) {
        conn.conn.close(0u32.into(), b"done");
        conn.endpoint.close(0u32.into(), b"done");
    }
}
