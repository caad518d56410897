//! The pipeline over gRPC (H2): tonic 0.14 over TLS 1.3 (the transport bench's tokio-rustls
//! acceptor and connector, HTTP/2 with NexStream's flow-control windows), protobuf messages
//! defined here with prost (no protoc): unary calls for the router, the embedder (a packed
//! `repeated float`) and the tensor hand-off (a `bytes` field), a server-streaming call for the
//! tokens. One channel per service, connected in [`Pipeline::open`] and shared by all
//! pipelines (HTTP/2 multiplexes concurrent calls).
//!
//! ```proto
//! service Pipeline {
//!   rpc Route(RouteRequest) returns (RouteReply);
//!   rpc Embed(EmbedRequest) returns (EmbedReply);
//!   rpc Generate(GenerateRequest) returns (stream Token);
//!   rpc Handoff(TensorRequest) returns (Ack);
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use http::uri::PathAndQuery;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::grpc::{BoxFuture, GrpcRequest, GrpcResponse, Methods};
use crate::harness::Server;
use crate::relay::Relay;
use crate::services::{Behaviour, Hop, TENSOR_BYTES_MAX};
use crate::stats::now;
use crate::{Arrivals, Pipeline, Servers, Tensor, Warmth, grpc, via};

const ROUTE: &str = "/nexus.bench.Pipeline/Route";
const EMBED: &str = "/nexus.bench.Pipeline/Embed";
const GENERATE: &str = "/nexus.bench.Pipeline/Generate";
const HANDOFF: &str = "/nexus.bench.Pipeline/Handoff";
/// The largest tensor plus its protobuf framing.
const MESSAGE_BYTES_MAX: usize = TENSOR_BYTES_MAX + 1024;

#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteRequest {
    #[prost(string, tag = "1")]
    pub prompt: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteReply {
    #[prost(string, tag = "1")]
    pub model: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EmbedRequest {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EmbedReply {
    #[prost(float, repeated, tag = "1")]
    pub embedding: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GenerateRequest {
    #[prost(string, tag = "1")]
    pub model: String,
    #[prost(string, tag = "2")]
    pub prompt: String,
    #[prost(uint32, tag = "3")]
    pub max_tokens: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Token {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(string, tag = "2")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorRequest {
    #[prost(string, tag = "1")]
    pub dtype: String,
    #[prost(uint64, repeated, tag = "2")]
    pub shape: Vec<u64>,
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub received: u64,
}

/// The four methods, answered by [`Behaviour`].
#[derive(Clone, Debug)]
struct PipelineService(Arc<Behaviour>);

/// A server-side codec for one method: encodes `E`, decodes `D`.
fn server_codec<E, D>() -> tonic::server::Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    grpc::server_codec(MESSAGE_BYTES_MAX)
}

impl Methods for PipelineService {
    const NAME: &'static str = "nexus.bench.Pipeline";

    fn call(&self, req: GrpcRequest) -> BoxFuture<GrpcResponse> {
        let b = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            match path.as_str() {
                ROUTE => {
                    let method = tower::service_fn(move |r: Request<RouteRequest>| {
                        let b = b.clone();
                        async move {
                            let model = b.route(&r.get_ref().prompt).await.to_owned();
                            Ok::<_, Status>(Response::new(RouteReply { model }))
                        }
                    });
                    server_codec().unary(method, req).await
                }
                EMBED => {
                    let method = tower::service_fn(move |r: Request<EmbedRequest>| {
                        let b = b.clone();
                        async move {
                            let embedding = b.embed(&r.get_ref().text).await;
                            Ok::<_, Status>(Response::new(EmbedReply { embedding }))
                        }
                    });
                    server_codec().unary(method, req).await
                }
                GENERATE => {
                    let method = tower::service_fn(move |r: Request<GenerateRequest>| {
                        let b = b.clone();
                        async move {
                            let rx = b
                                .generate(
                                    r.get_ref().max_tokens,
                                    |index, text| {
                                        Ok::<_, Status>(Token {
                                            index,
                                            text: text.to_owned(),
                                        })
                                    },
                                    None,
                                )
                                .await;
                            Ok::<_, Status>(Response::new(ReceiverStream::new(rx)))
                        }
                    });
                    server_codec().server_streaming(method, req).await
                }
                HANDOFF => {
                    let method = tower::service_fn(move |r: Request<TensorRequest>| {
                        let b = b.clone();
                        async move {
                            let t = r.get_ref();
                            let received = b
                                .handoff(&t.dtype, &t.shape, t.data.len())
                                .await
                                .map_err(Status::invalid_argument)?;
                            Ok::<_, Status>(Response::new(Ack { received }))
                        }
                    });
                    server_codec().unary(method, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            }
        })
    }
}

/// The four gRPC servers, one per service, each on a thread of its own.
pub fn servers(key: &SigningKey, behaviour: &Arc<Behaviour>) -> [Server; 4] {
    Hop::ALL.map(|hop| grpc::serve(&hop.thread("grpc"), key, PipelineService(behaviour.clone())))
}

/// H2: one warm channel per service.
pub struct Grpc {
    clients: Vec<tonic::client::Grpc<Channel>>,
    relays: Vec<Relay>,
}

impl Grpc {
    /// A ready client of `hop`'s service (a clone of its channel's client, as generated
    /// clients are used).
    async fn client(&self, hop: Hop) -> anyhow::Result<tonic::client::Grpc<Channel>> {
        let mut client = self.clients[hop.index()].clone();
        client.ready().await?;
        Ok(client)
    }
}

impl Pipeline for Grpc {
    const NAME: &'static str = "H2 gRPC";
    const WARMTH: Warmth = Warmth::Warm;

    async fn open(servers: &Servers, rtt: Duration) -> anyhow::Result<Self> {
        let connector = grpc::Grpc::new(&servers.client_key, servers.server_id).connector;
        let mut relays = Vec::new();
        let mut clients = Vec::new();
        for hop in Hop::ALL {
            let target = via(servers.grpc[hop.index()].addr, rtt, false, &mut relays)?;
            let channel = grpc::channel(&connector, grpc::endpoint(), target).await?;
            clients.push(
                tonic::client::Grpc::new(channel)
                    .max_decoding_message_size(MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(MESSAGE_BYTES_MAX),
            );
        }
        Ok(Grpc { clients, relays })
    }

    async fn route(&self, prompt: &str) -> anyhow::Result<String> {
        let answer: Response<RouteReply> = self
            .client(Hop::Route)
            .await?
            .unary(
                Request::new(RouteRequest {
                    prompt: prompt.to_owned(),
                }),
                PathAndQuery::from_static(ROUTE),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner().model)
    }

    async fn embed(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let answer: Response<EmbedReply> = self
            .client(Hop::Embed)
            .await?
            .unary(
                Request::new(EmbedRequest {
                    text: text.to_owned(),
                }),
                PathAndQuery::from_static(EMBED),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner().embedding)
    }

    async fn stream(&self, model: &str, prompt: &str, tokens: u32) -> anyhow::Result<Arrivals> {
        let answer: Response<tonic::Streaming<Token>> = self
            .client(Hop::Llm)
            .await?
            .server_streaming(
                Request::new(GenerateRequest {
                    model: model.to_owned(),
                    prompt: prompt.to_owned(),
                    max_tokens: tokens,
                }),
                PathAndQuery::from_static(GENERATE),
                ProstCodec::default(),
            )
            .await?;
        let mut stream = answer.into_inner();
        let mut arrivals = Vec::with_capacity(tokens as usize);
        while let Some(token) = stream.message().await? {
            arrivals.push((token.index, now()));
        }
        Ok(arrivals)
    }

    async fn tensor(&self, tensor: &Tensor) -> anyhow::Result<u64> {
        let answer: Response<Ack> = self
            .client(Hop::Decode)
            .await?
            .unary(
                Request::new(TensorRequest {
                    dtype: tensor.dtype.to_owned(),
                    shape: tensor.shape.clone(),
                    data: tensor.data.clone(),
                }),
                PathAndQuery::from_static(HANDOFF),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner().received)
    }

    fn relays(&self) -> &[Relay] {
        &self.relays
    }

    async fn server_cpu(&self, servers: &Servers) -> Duration {
        servers.grpc_cpu().await
    }
}
