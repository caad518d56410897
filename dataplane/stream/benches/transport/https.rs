//! HTTPS/1.1 + JSON: an axum 0.8 server behind tokio-rustls (hyper's HTTP/1.1 connection per
//! TLS stream) and a reqwest 0.12 client with rustls, both on the raw-key TLS configuration of
//! [`crate::tls`]. The body travels as a JSON object `{"data": "<base64>"}` (standard base64
//! with padding) both ways; the server decodes it and encodes it again, the client's time
//! includes encoding the request and decoding the answer. Also the plain TCP + TLS 1.3
//! handshake ([`TcpTls`]) used for the handshake-CPU comparison.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::{BODY_BYTES_MAX, Proto, Server};
use crate::tls;

const ALPN: &[u8] = b"http/1.1";

#[derive(Serialize, Deserialize)]
struct EchoJson {
    data: String,
}

async fn echo(Json(req): Json<EchoJson>) -> Result<Json<EchoJson>, StatusCode> {
    let bytes = B64
        .decode(req.data.as_bytes())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    Ok(Json(EchoJson {
        data: B64.encode(&bytes),
    }))
}

pub fn server(key: &SigningKey) -> Server {
    let app = axum::Router::new()
        .route("/echo", post(echo))
        // base64 makes a body 4/3 as large, plus the JSON around it.
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX * 2));
    serve("https-server", key, app)
}

/// Serves `app` over TLS (`key`, ALPN `http/1.1`) with hyper's HTTP/1.1 connection per TLS
/// stream, on a new loopback port, on a [`Server`] thread named `name`.
pub fn serve(name: &str, key: &SigningKey, app: axum::Router) -> Server {
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(key, &[ALPN])));
    Server::spawn(name, move || async move {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind https server");
        let addr = listener.local_addr().expect("bound");
        let serve = Server::serve(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        (addr, serve)
    })
}

pub struct Https {
    pub tls: rustls::ClientConfig,
}

impl Https {
    pub fn new(client_key: &SigningKey, server_id: [u8; 32]) -> Https {
        Https {
            tls: tls::client_config(client_key, server_id, &[ALPN]),
        }
    }
}

pub struct HttpsConn {
    client: reqwest::Client,
    url: String,
}

impl Proto for Https {
    type Client = reqwest::Client;
    type Conn = HttpsConn;

    async fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .build()?)
    }

    async fn connect(
        &self,
        client: reqwest::Client,
        target: SocketAddr,
    ) -> anyhow::Result<HttpsConn> {
        Ok(HttpsConn {
            client,
            url: format!("https://{target}/echo"),
        })
    }

    async fn request(&self, conn: &mut HttpsConn, body: &Bytes) -> anyhow::Result<Bytes> {
        let answer: EchoJson = conn
            .client
            .post(&conn.url)
            .json(&EchoJson {
                data: B64.encode(body),
            })
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(Bytes::from(
            B64.decode(answer.data.as_bytes())
                .context("answer is not base64")?,
        ))
    }

    async fn close(&self, conn: HttpsConn) {
        drop(conn);
    }
}

/// TCP connect + TLS 1.3 handshake, nothing else (handshake CPU only).
pub struct TcpTls {
    pub connector: TlsConnector,
}

impl TcpTls {
    pub fn new(client_key: &SigningKey, server_id: [u8; 32]) -> TcpTls {
        TcpTls {
            connector: TlsConnector::from(Arc::new(tls::client_config(
                client_key,
                server_id,
                &[ALPN],
            ))),
        }
    }
}

impl Proto for TcpTls {
    type Client = ();
    type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    async fn client(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn connect(&self, (): (), target: SocketAddr) -> anyhow::Result<Self::Conn> {
        let tcp = tokio::net::TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        Ok(self
            .connector
            .connect(ServerName::IpAddress(target.ip().into()), tcp)
            .await?)
    }

    async fn request(&self, _conn: &mut Self::Conn, _body: &Bytes) -> anyhow::Result<Bytes> {
        bail!("TcpTls measures handshakes only")
    }

    async fn close(&self, conn: Self::Conn) {
        drop(conn);
    }
}
