//! gRPC over TLS: tonic 0.14 unary calls carrying one protobuf message with a `bytes` field
//! (prost), over HTTP/2 on TCP. tonic's own TLS features are not used: the server takes TLS
//! streams accepted by tokio-rustls and the client connects through a tokio-rustls connector,
//! both on the raw-key configuration of [`crate::tls`] (so no second crypto provider is built).
//! HTTP/2 windows are NexStream's flow-control windows; message size limits are lifted.
//!
//! A service is a [`Methods`] implementation (its name and one function from request to
//! response, dispatching on the path), served by [`serve`]; the pipeline bench serves its
//! four methods this way too.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::harness::{BODY_BYTES_MAX, CONNECTION_WINDOW_BYTES, Proto, STREAM_WINDOW_BYTES, Server};
use crate::tls;

const ALPN: &[u8] = b"h2";
const PATH: &str = "/nexus.bench.Echo/Echo";
/// Protobuf framing adds a few bytes to the body.
const MESSAGE_BYTES_MAX: usize = BODY_BYTES_MAX + 64;

/// `message Payload { bytes body = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    pub body: Bytes,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub type GrpcRequest = http::Request<tonic::body::Body>;
pub type GrpcResponse = http::Response<tonic::body::Body>;

/// A gRPC service: its name and its methods, one function that dispatches on the request's
/// path (an unknown path answers `unimplemented`).
pub trait Methods: Clone + Send + Sync + 'static {
    /// The service's full name, `package.Service`.
    const NAME: &'static str;
    fn call(&self, req: GrpcRequest) -> BoxFuture<GrpcResponse>;
}

/// [`Methods`] as the tower service tonic's server takes.
#[derive(Clone, Debug)]
pub struct Service<M>(pub M);

impl<M: Methods> tonic::server::NamedService for Service<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: Methods> tower::Service<GrpcRequest> for Service<M> {
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<GrpcResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let answer = self.0.call(req);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// A server-side codec for one method (encodes `E`, decodes `D`) taking messages up to
/// `bytes_max`.
pub fn server_codec<E, D>(bytes_max: usize) -> tonic::server::Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(bytes_max)
        .max_encoding_message_size(bytes_max)
}

/// The echo service: answers a `Payload` with the same `Payload`.
#[derive(Clone, Debug)]
struct Echo;

impl Methods for Echo {
    const NAME: &'static str = "nexus.bench.Echo";

    fn call(&self, req: GrpcRequest) -> BoxFuture<GrpcResponse> {
        Box::pin(async move {
            if req.uri().path() != PATH {
                return tonic::Status::unimplemented("no such method").into_http();
            }
            let echo = tower::service_fn(|req: tonic::Request<Payload>| async move {
                Ok::<_, tonic::Status>(tonic::Response::new(req.into_inner()))
            });
            server_codec::<Payload, Payload>(MESSAGE_BYTES_MAX)
                .unary(echo, req)
                .await
        })
    }
}

/// A server-side TLS stream as tonic's incoming connection.
struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

pub fn server(key: &SigningKey) -> Server {
    serve("grpc-server", key, Echo)
}

/// Serves `methods` with tonic over TLS (`key`, ALPN `h2`) on a new loopback port, on a
/// [`Server`] thread named `name`; HTTP/2 windows are NexStream's flow-control windows.
pub fn serve<M: Methods>(name: &str, key: &SigningKey, methods: M) -> Server {
    let service = Service(methods);
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(key, &[ALPN])));
    Server::spawn(name, move || async move {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind grpc server");
        let addr = listener.local_addr().expect("bound");
        // Bounded by the accept rate of one benchmark client; handshakes run in their own tasks.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConn>>(64);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                });
            }
        });
        let serve = Server::serve(async move {
            let _ = tonic::transport::Server::builder()
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
        });
        (addr, serve)
    })
}

/// A tonic endpoint with NexStream's flow-control windows as HTTP/2 windows, not connected.
pub fn endpoint() -> Endpoint {
    Endpoint::from_static("http://bench.invalid")
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true)
}

/// Connects `endpoint` to `target`: TCP, then TLS through `connector`, then HTTP/2.
pub async fn channel(
    connector: &TlsConnector,
    endpoint: Endpoint,
    target: SocketAddr,
) -> anyhow::Result<Channel> {
    let connector = connector.clone();
    Ok(endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(target).await?;
                tcp.set_nodelay(true)?;
                let tls = connector
                    .connect(ServerName::IpAddress(target.ip().into()), tcp)
                    .await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await?)
}

pub struct Grpc {
    pub connector: TlsConnector,
}

impl Grpc {
    pub fn new(client_key: &SigningKey, server_id: [u8; 32]) -> Grpc {
        Grpc {
            connector: TlsConnector::from(Arc::new(tls::client_config(
                client_key,
                server_id,
                &[ALPN],
            ))),
        }
    }
}

impl Proto for Grpc {
    type Client = Endpoint;
    type Conn = tonic::client::Grpc<Channel>;

    async fn client(&self) -> anyhow::Result<Endpoint> {
        Ok(endpoint())
    }

    async fn connect(&self, endpoint: Endpoint, target: SocketAddr) -> anyhow::Result<Self::Conn> {
        let channel = channel(&self.connector, endpoint, target).await?;
        Ok(tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    async fn request(&self, conn: &mut Self::Conn, body: &Bytes) -> anyhow::Result<Bytes> {
        conn.ready().await?;
        let answer: tonic::Response<Payload> = conn
            .unary(
                tonic::Request::new(Payload { body: body.clone() }),
                http::uri::PathAndQuery::from_static(PATH),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner().body)
    }

    async fn close(&self, conn: Self::Conn) {
        drop(conn);
    }
}
