//! The pipeline over HTTP/1.1 + TLS 1.3 with JSON bodies: the services (one axum app, served by
//! each of the four HTTPS servers) and two clients of them.
//!
//! Wire format: `POST /v1/route` `{"prompt"}` → `{"model"}`; `POST /v1/embed` `{"text"}` →
//! `{"embedding": [floats]}`; `POST /v1/generate` `{"model","prompt","max_tokens"}` → server-sent
//! events, one `data: {"index","text"}` per token, then `data: [DONE]`; `POST /v1/kv`
//! `{"dtype","shape","data": "<base64>"}` → `{"received"}`. Every body is encoded and decoded
//! inside the timed call, on both ends.
//!
//! - [`ColdHttp`] (H0): every call asks the resolver (dnsmasq, a new UDP socket per query, as a
//!   stub resolver does) for the service's host name, opens a new TCP connection to the address
//!   it got, does a full TLS 1.3 handshake (no resumption), sends one HTTP/1.1 request with
//!   `connection: close` (hyper's client connection) and reads the answer.
//! - [`WarmHttp`] (H1): one reqwest client with its keep-alive pool, warmed up before measuring;
//!   the URLs carry the servers' addresses, so no name is looked up.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;

use crate::harness::Server;
use crate::relay::Relay;
use crate::services::{Behaviour, Hop, TENSOR_BYTES_MAX};
use crate::stats::now;
use crate::{Arrivals, Pipeline, Servers, Tensor, Warmth, dnsmasq, https, via};

#[derive(Serialize, Deserialize)]
struct RouteRequest {
    prompt: String,
}

#[derive(Serialize, Deserialize)]
struct RouteAnswer {
    model: String,
}

#[derive(Serialize, Deserialize)]
struct EmbedRequest {
    text: String,
}

#[derive(Serialize, Deserialize)]
struct EmbedAnswer {
    embedding: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct GenerateRequest {
    model: String,
    prompt: String,
    max_tokens: u32,
}

#[derive(Serialize, Deserialize)]
struct TokenEvent {
    index: u32,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct TensorJson {
    dtype: String,
    shape: Vec<u64>,
    /// The tensor's bytes (little-endian elements), standard base64 with padding.
    data: String,
}

#[derive(Serialize, Deserialize)]
struct Ack {
    received: u64,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

async fn route(
    State(b): State<Arc<Behaviour>>,
    Json(req): Json<RouteRequest>,
) -> Json<RouteAnswer> {
    Json(RouteAnswer {
        model: b.route(&req.prompt).await.to_owned(),
    })
}

async fn embed(
    State(b): State<Arc<Behaviour>>,
    Json(req): Json<EmbedRequest>,
) -> Json<EmbedAnswer> {
    Json(EmbedAnswer {
        embedding: b.embed(&req.text).await,
    })
}

fn sse_event(index: u32, text: &str) -> Bytes {
    let json = serde_json::to_string(&TokenEvent {
        index,
        text: text.to_owned(),
    })
    .expect("a token serialises");
    Bytes::from(format!("data: {json}\n\n"))
}

async fn generate(State(b): State<Arc<Behaviour>>, Json(req): Json<GenerateRequest>) -> Response {
    let rx = b
        .generate(
            req.max_tokens,
            |i, text| Ok::<_, Infallible>(sse_event(i, text)),
            Some(Ok(Bytes::from_static(DONE))),
        )
        .await;
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

async fn kv(
    State(b): State<Arc<Behaviour>>,
    Json(t): Json<TensorJson>,
) -> Result<Json<Ack>, (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let data = B64
        .decode(t.data.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let received = b
        .handoff(&t.dtype, &t.shape, data.len())
        .await
        .map_err(bad)?;
    Ok(Json(Ack { received }))
}

/// The four HTTPS servers, one per service, each on a thread of its own.
pub fn servers(key: &SigningKey, behaviour: &Arc<Behaviour>) -> [Server; 4] {
    Hop::ALL.map(|hop| {
        let app = axum::Router::new()
            .route("/v1/route", post(route))
            .route("/v1/embed", post(embed))
            .route("/v1/generate", post(generate))
            .route("/v1/kv", post(kv))
            // base64 makes a tensor 4/3 as large, plus the JSON around it.
            .layer(DefaultBodyLimit::max(TENSOR_BYTES_MAX * 2))
            .with_state(behaviour.clone());
        https::serve(&hop.thread("https"), key, app)
    })
}

fn path(hop: Hop) -> &'static str {
    match hop {
        Hop::Route => "/v1/route",
        Hop::Embed => "/v1/embed",
        Hop::Llm => "/v1/generate",
        Hop::Decode => "/v1/kv",
    }
}

fn tensor_json(t: &Tensor) -> TensorJson {
    TensorJson {
        dtype: t.dtype.to_owned(),
        shape: t.shape.clone(),
        data: B64.encode(&t.data),
    }
}

/// Splits a server-sent event stream into tokens, each stamped with the time the bytes that
/// completed it arrived.
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
    done: bool,
}

impl Sse {
    fn feed(&mut self, data: &[u8], tokens: &mut Arrivals) -> anyhow::Result<()> {
        let at = now();
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.buf[start..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| start + i)
        {
            for line in self.buf[start..end].split(|b| *b == b'\n') {
                let Some(payload) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                if payload == b"[DONE]" {
                    self.done = true;
                } else {
                    let t: TokenEvent = serde_json::from_slice(payload).context("a token event")?;
                    tokens.push((t.index, at));
                }
            }
            start = end + 2;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// H0: name lookup, TCP, TLS and HTTP/1.1 for every call.
pub struct ColdHttp {
    connector: TlsConnector,
    /// The resolver, or a relay in front of it.
    dns: SocketAddr,
    /// Each service's port (its server's, or a relay's in front of it).
    ports: [u16; 4],
    next_query: Cell<u16>,
    relays: Vec<Relay>,
}

impl ColdHttp {
    /// Asks the resolver for `host`'s A record from a new UDP socket.
    async fn lookup(&self, host: &str) -> anyhow::Result<IpAddr> {
        let id = self.next_query.get();
        self.next_query.set(id.wrapping_add(1));
        let socket = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        socket.connect(self.dns).await?;
        socket.send(&dnsmasq::query(id, host)).await?;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .context("no DNS answer within 2 s")??;
        let ip =
            dnsmasq::answer_a(&buf[..n], id).with_context(|| format!("no A record for {host}"))?;
        Ok(IpAddr::V4(ip))
    }

    /// Looks `hop`'s host up, connects, and sends one request with `body`.
    async fn post(
        &self,
        hop: Hop,
        body: Vec<u8>,
    ) -> anyhow::Result<(Sender, hyper::Response<hyper::body::Incoming>)> {
        let host = hop.host();
        let ip = self.lookup(host).await?;
        let tcp =
            tokio::net::TcpStream::connect(SocketAddr::new(ip, self.ports[hop.index()])).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(ServerName::try_from(host)?.to_owned(), tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::post(path(hop))
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "close")
            .body(Full::new(Bytes::from(body)))?;
        let answer = sender.send_request(request).await?;
        ensure!(answer.status().is_success(), "{host}: {}", answer.status());
        Ok((sender, answer))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        hop: Hop,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let (sender, answer) = self.post(hop, serde_json::to_vec(body)?).await?;
        let bytes = answer.into_body().collect().await?.to_bytes();
        drop(sender);
        Ok(serde_json::from_slice(&bytes)?)
    }
}

impl Pipeline for ColdHttp {
    const NAME: &'static str = "H0 cold HTTP";
    const WARMTH: Warmth = Warmth::Cold;

    async fn open(servers: &Servers, rtt: Duration) -> anyhow::Result<Self> {
        let mut relays = Vec::new();
        let resolver = servers
            .dns
            .as_ref()
            .context("the resolver (dnsmasq) is not running")?;
        let dns = via(resolver.addr, rtt, true, &mut relays)?;
        let mut ports = [0; 4];
        for hop in Hop::ALL {
            ports[hop.index()] =
                via(servers.https[hop.index()].addr, rtt, false, &mut relays)?.port();
        }
        Ok(ColdHttp {
            connector: https::TcpTls::new(&servers.client_key, servers.server_id).connector,
            dns,
            ports,
            next_query: Cell::new(1),
            relays,
        })
    }

    async fn route(&self, prompt: &str) -> anyhow::Result<String> {
        let answer: RouteAnswer = self
            .call(
                Hop::Route,
                &RouteRequest {
                    prompt: prompt.to_owned(),
                },
            )
            .await?;
        Ok(answer.model)
    }

    async fn embed(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let answer: EmbedAnswer = self
            .call(
                Hop::Embed,
                &EmbedRequest {
                    text: text.to_owned(),
                },
            )
            .await?;
        Ok(answer.embedding)
    }

    async fn stream(&self, model: &str, prompt: &str, tokens: u32) -> anyhow::Result<Arrivals> {
        let request = GenerateRequest {
            model: model.to_owned(),
            prompt: prompt.to_owned(),
            max_tokens: tokens,
        };
        let (sender, answer) = self.post(Hop::Llm, serde_json::to_vec(&request)?).await?;
        let mut body = answer.into_body();
        let (mut sse, mut arrivals) = (Sse::default(), Vec::with_capacity(tokens as usize));
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                sse.feed(data, &mut arrivals)?;
            }
        }
        drop(sender);
        ensure!(sse.done, "the event stream ended without [DONE]");
        Ok(arrivals)
    }

    async fn tensor(&self, tensor: &Tensor) -> anyhow::Result<u64> {
        let answer: Ack = self.call(Hop::Decode, &tensor_json(tensor)).await?;
        Ok(answer.received)
    }

    fn relays(&self) -> &[Relay] {
        &self.relays
    }

    async fn server_cpu(&self, servers: &Servers) -> Duration {
        servers.https_cpu().await + servers.resolver_cpu()
    }
}

/// H1: a pooled keep-alive HTTPS client.
pub struct WarmHttp {
    client: reqwest::Client,
    /// `https://addr/path` of each service (its server, or a relay in front of it).
    urls: [String; 4],
    relays: Vec<Relay>,
}

impl WarmHttp {
    async fn send(&self, hop: Hop, body: &impl Serialize) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .post(&self.urls[hop.index()])
            .json(body)
            .send()
            .await?
            .error_for_status()?)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        hop: Hop,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        Ok(self.send(hop, body).await?.json().await?)
    }
}

impl Pipeline for WarmHttp {
    const NAME: &'static str = "H1 warm HTTP";
    const WARMTH: Warmth = Warmth::Warm;

    async fn open(servers: &Servers, rtt: Duration) -> anyhow::Result<Self> {
        let mut relays = Vec::new();
        let mut urls: [String; 4] = Default::default();
        for hop in Hop::ALL {
            let addr = via(servers.https[hop.index()].addr, rtt, false, &mut relays)?;
            urls[hop.index()] = format!("https://{addr}{}", path(hop));
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(https::Https::new(&servers.client_key, servers.server_id).tls)
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .build()?;
        Ok(WarmHttp {
            client,
            urls,
            relays,
        })
    }

    async fn route(&self, prompt: &str) -> anyhow::Result<String> {
        let answer: RouteAnswer = self
            .call(
                Hop::Route,
                &RouteRequest {
                    prompt: prompt.to_owned(),
                },
            )
            .await?;
        Ok(answer.model)
    }

    async fn embed(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let answer: EmbedAnswer = self
            .call(
                Hop::Embed,
                &EmbedRequest {
                    text: text.to_owned(),
                },
            )
            .await?;
        Ok(answer.embedding)
    }

    async fn stream(&self, model: &str, prompt: &str, tokens: u32) -> anyhow::Result<Arrivals> {
        let request = GenerateRequest {
            model: model.to_owned(),
            prompt: prompt.to_owned(),
            max_tokens: tokens,
        };
        let mut answer = self.send(Hop::Llm, &request).await?;
        let (mut sse, mut arrivals) = (Sse::default(), Vec::with_capacity(tokens as usize));
        while let Some(chunk) = answer.chunk().await? {
            sse.feed(&chunk, &mut arrivals)?;
        }
        ensure!(sse.done, "the event stream ended without [DONE]");
        Ok(arrivals)
    }

    async fn tensor(&self, tensor: &Tensor) -> anyhow::Result<u64> {
        let answer: Ack = self.call(Hop::Decode, &tensor_json(tensor)).await?;
        Ok(answer.received)
    }

    fn relays(&self) -> &[Relay] {
        &self.relays
    }

    async fn server_cpu(&self, servers: &Servers) -> Duration {
        servers.https_cpu().await
    }
}
