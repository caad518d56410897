//! The OpenAI-compatible gateway: an HTTP listener in the node (`[gateway] listen`,
//! `--gateway`) that accepts OpenAI's `POST /v1/chat/completions`, `POST /v1/embeddings` and
//! `GET /v1/models`, maps each request to an intent and carries it over NexStream to a service
//! with an embedded [`nexus_api::Client`] whose local node is this node.
//!
//! The mapping (docs/protocols/nexapi.md §12):
//!
//! - the intent is the body's optional `nexus` member, an intent in the admin API's JSON form
//!   (`POST /v1/resolve`); without it, or without a `task` in it, the task is `llm.chat`
//!   (chat) or `embed.text` (embeddings);
//! - the body's `model` is the NexAPI model name; the NexAPI payload is the request body
//!   without the `nexus` member, so an upstream adapter can forward it unchanged;
//! - chat with `"stream": true` is a token stream ([`Client::stream`]) relayed as Server-Sent
//!   Events, one `chat.completion.chunk` per token and a final `data: [DONE]`; chat without it
//!   is the same token stream collected into one `chat.completion`, so every chat service
//!   answers one kind of call and a failed stream resumes on another service either way;
//!   embeddings are a unary call ([`Client::infer`]) whose answer is the response body.
//!
//! Errors are OpenAI's error objects (`{"error": {"message", "type", "code", "param"}}`), with
//! the HTTP status [`Failure::from_sdk`] gives each NexAPI error.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nexus_actors::SupervisorMsg;
use nexus_api::{
    CallOptions, Client, ClientConfig, ErrorCode, Finish, Metrics, NodeConfig, StreamEnd, Token,
    TokenStream,
};
use nexus_registry::Intent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::ConfigError;

/// Deadline of a call through the gateway without `[gateway] deadline_ms`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Task of a chat request whose intent names none.
pub const CHAT_TASK: &str = "llm.chat";
/// Task of an embeddings request whose intent names none.
pub const EMBED_TASK: &str = "embed.text";

/// The gateway's settings (`[gateway]`, `--gateway`). `Debug` redacts the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// TCP address the HTTP listener binds.
    pub listen: SocketAddr,
    /// Bearer token clients must present (`Authorization: Bearer <key>`, what OpenAI clients
    /// send as their API key); required when `listen` is not a loopback address.
    pub api_key: Option<String>,
    /// Deadline of each call.
    pub deadline: Duration,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// `[gateway]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFile {
    listen: Option<String>,
    api_key: Option<String>,
    deadline_ms: Option<u64>,
}

fn config_err<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// Parses `[gateway]` with `--gateway` (an `IP:PORT`, or `off`) over `listen`. `api` is the
/// local NexAPI endpoint, which the gateway's client resolves through.
pub(crate) fn parse_settings(
    flag: Option<&str>,
    file: &GatewayFile,
    api: Option<SocketAddr>,
) -> Result<Option<GatewaySettings>, ConfigError> {
    let field = "gateway.listen";
    let Some(value) = flag.or(file.listen.as_deref()).map(str::trim) else {
        return Ok(None);
    };
    if value == "off" {
        return Ok(None);
    }
    let Ok(listen) = value.parse::<SocketAddr>() else {
        return config_err(
            field,
            format!("{value:?} is neither an IP:PORT address (e.g. 127.0.0.1:8080) nor \"off\""),
        );
    };
    if api.is_none() {
        return config_err(
            field,
            "the gateway resolves through the local NexAPI endpoint; set [api] listen (it is off)",
        );
    }
    let api_key = file.api_key.clone().filter(|k| !k.is_empty());
    if let Some(key) = &api_key
        && (key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return config_err(
            "gateway.api_key",
            "must be at least 16 bytes, without spaces or control characters",
        );
    }
    if !listen.ip().is_loopback() && api_key.is_none() {
        return config_err(
            "gateway.api_key",
            format!("required when gateway.listen is not a loopback address ({listen})"),
        );
    }
    let deadline = match file.deadline_ms {
        None => DEFAULT_DEADLINE,
        Some(ms @ 100..=3_600_000) => Duration::from_millis(ms),
        Some(ms) => {
            return config_err(
                "gateway.deadline_ms",
                format!("must be in 100..=3600000, got {ms}"),
            );
        }
    };
    Ok(Some(GatewaySettings {
        listen,
        api_key,
        deadline,
    }))
}

/// Labels of the gateway's HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route (`/v1/chat/completions`, ...) or `other`.
    pub route: String,
    /// The HTTP status code.
    pub status: String,
}

/// The gateway's metrics: its client's call metrics and HTTP requests by route and status.
#[derive(Clone, Debug, Default)]
pub struct GatewayMetrics {
    /// The embedded client's calls, call duration, time to first token and inter-token time.
    pub calls: Metrics,
    /// HTTP requests by route and status.
    pub http: Family<HttpLabels, Counter>,
}

impl GatewayMetrics {
    /// Registers everything as `gateway_*` in `registry` (the node's, prefixed `nexus`):
    /// `nexus_gateway_calls_total`, `nexus_gateway_call_seconds`,
    /// `nexus_gateway_time_to_first_token_seconds`, `nexus_gateway_inter_token_seconds` and
    /// `nexus_gateway_http_requests_total`.
    pub fn register(&self, registry: &mut Registry) {
        self.calls.register(registry, "gateway");
        registry.register(
            "gateway_http_requests",
            "HTTP requests to the OpenAI-compatible gateway by route and status",
            self.http.clone(),
        );
    }
}

/// The gateway: its settings, bound listener, the embedded client (once connected) and
/// metrics. Outlives restarts of [`GatewayActor`].
#[derive(Debug)]
pub struct Gateway {
    settings: GatewaySettings,
    listener: Arc<std::net::TcpListener>,
    node: NodeConfig,
    metrics: GatewayMetrics,
    client: OnceLock<Client>,
    admin: reqwest::Client,
}

impl Gateway {
    /// A gateway serving on `listener` (bound by the node at startup), reaching the node at
    /// `node`. Nothing runs until [`Gateway::connect`] and the actor start.
    pub fn new(
        settings: GatewaySettings,
        listener: std::net::TcpListener,
        node: NodeConfig,
        metrics: GatewayMetrics,
    ) -> Arc<Gateway> {
        // The node's admin API, with the node's TLS trust when it serves HTTPS.
        let admin = node
            .http_client(Duration::from_secs(10))
            .unwrap_or_default();
        Arc::new(Gateway {
            settings,
            listener: Arc::new(listener),
            node,
            metrics,
            client: OnceLock::new(),
            admin,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Connects the embedded client in the background: has the fabric's CA certify its key
    /// through this node, retrying with backoff until that works (the CA may not exist yet).
    /// Until then requests are answered 503 `not_ready`.
    pub fn connect(self: &Arc<Self>) -> JoinHandle<()> {
        let gateway = self.clone();
        tokio::spawn(async move {
            let mut config = ClientConfig::new(gateway.node.clone());
            config.deadline = gateway.settings.deadline;
            config.publisher = "nexus-gateway".into();
            config.metrics = gateway.metrics.calls.clone();
            let client = retry("gateway", || Client::connect(config.clone())).await;
            tracing::info!(
                key = %hex::encode(client.key()),
                stream = %client.stream_node().local_addr(),
                "gateway connected to the fabric"
            );
            let _ = gateway.client.set(client);
        })
    }

    fn client(&self) -> Result<&Client, Failure> {
        self.client.get().ok_or_else(|| Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "not_ready",
            message: "the gateway has no certificate from the fabric's CA yet; retry shortly"
                .into(),
            param: None,
        })
    }
}

/// Runs `attempt` until it succeeds, waiting 250 ms after the first failure and twice as long
/// after each next one (at most 10 s). The first failure is logged at info level (a CA that
/// does not exist yet is normal while a fabric starts), every tenth at warn, the others at
/// debug.
pub(crate) async fn retry<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(250);
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::info!(
                        %what,
                        error = %e,
                        "cannot start yet (it needs a certificate from the fabric's CA and this node's admin API); retrying with backoff"
                    );
                } else if failures.is_multiple_of(10) {
                    tracing::warn!(%what, error = %e, failures, "still cannot start; retrying");
                } else {
                    tracing::debug!(%what, error = %e, failures, "retrying");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// An OpenAI-style error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.type`.
    pub kind: &'static str,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.param`: the request field at fault, if one is.
    pub param: Option<String>,
}

impl Failure {
    fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The answer to a failed SDK call:
    ///
    /// | NexAPI error | HTTP | `type` | `code` |
    /// |---|---|---|---|
    /// | `bad_request`, `unknown_dtype`, `shape_mismatch` | 400 | `invalid_request_error` | the NexAPI name |
    /// | `unknown_model` | 404 | `invalid_request_error` | `model_not_found` |
    /// | `too_large` | 413 | `invalid_request_error` | `too_large` |
    /// | `unavailable`, `overloaded`; the local node unreachable | 503 | `server_error` | the NexAPI name; `node_unavailable` |
    /// | `deadline_exceeded` | 504 | `timeout_error` | `deadline_exceeded` |
    /// | `internal`, `cancelled`, `unsupported_version`, `resume_unavailable`; transport failures; undecodable answers | 502 | `server_error` | the NexAPI name; `transport`; `bad_message` |
    pub fn from_sdk(e: &nexus_api::Error) -> Failure {
        let (status, kind, code) = match e {
            nexus_api::Error::Api(api) => match api.code {
                ErrorCode::BadRequest | ErrorCode::UnknownDtype | ErrorCode::ShapeMismatch => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    api.code.name(),
                ),
                ErrorCode::UnknownModel => (
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                ),
                ErrorCode::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    api.code.name(),
                ),
                ErrorCode::Unavailable | ErrorCode::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    api.code.name(),
                ),
                ErrorCode::DeadlineExceeded => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout_error",
                    api.code.name(),
                ),
                ErrorCode::Internal
                | ErrorCode::Cancelled
                | ErrorCode::UnsupportedVersion
                | ErrorCode::ResumeUnavailable => {
                    (StatusCode::BAD_GATEWAY, "server_error", api.code.name())
                }
            },
            nexus_api::Error::Node(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "node_unavailable",
            ),
            nexus_api::Error::Transport(_) => {
                (StatusCode::BAD_GATEWAY, "server_error", "transport")
            }
            nexus_api::Error::Wire(_) => (StatusCode::BAD_GATEWAY, "server_error", "bad_message"),
        };
        let message = match e {
            nexus_api::Error::Api(api) => api.message.clone(),
            other => other.to_string(),
        };
        Failure {
            status,
            kind,
            code,
            message,
            param: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.param,
        }})
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"nexus-gateway\""),
            );
        }
        response
    }
}

/// What an OpenAI request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
}

impl Kind {
    fn default_task(self) -> &'static str {
        match self {
            Kind::Chat => CHAT_TASK,
            Kind::Embeddings => EMBED_TASK,
        }
    }
}

/// An OpenAI request mapped to a NexAPI call.
#[derive(Clone, Debug, PartialEq)]
struct Mapped {
    model: String,
    intent: Intent,
    /// The request body without `nexus`.
    payload: Bytes,
    stream: bool,
    include_usage: bool,
}

/// Checks an OpenAI request body and maps it to an intent, a model name and a payload.
fn map_request(kind: Kind, body: &[u8]) -> Result<Mapped, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::invalid("invalid_json", None, format!("the body is not JSON: {e}"))
    })?;
    let Value::Object(mut object) = value else {
        return Err(Failure::invalid(
            "invalid_value",
            None,
            "the body must be a JSON object",
        ));
    };
    let model = match object.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(Failure::invalid(
                "invalid_value",
                Some("model"),
                "model: a non-empty string is required",
            ));
        }
    };
    if model.len() > usize::from(u16::MAX) {
        return Err(Failure::invalid(
            "invalid_value",
            Some("model"),
            "model: at most 65535 bytes",
        ));
    }
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Failure::invalid(
                "invalid_value",
                Some("stream"),
                "stream: must be true or false",
            ));
        }
    };
    let include_usage = object
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match kind {
        Kind::Chat => {
            let ok = object
                .get("messages")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_object));
            if !ok {
                return Err(Failure::invalid(
                    "invalid_value",
                    Some("messages"),
                    "messages: a non-empty array of message objects is required",
                ));
            }
            if let Some(n) = object.get("n")
                && !n.is_null()
                && n.as_u64() != Some(1)
            {
                return Err(Failure::invalid(
                    "invalid_value",
                    Some("n"),
                    "n: only 1 is supported (one token stream per request)",
                ));
            }
        }
        Kind::Embeddings => {
            let ok = match object.get("input") {
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                _ => false,
            };
            if !ok {
                return Err(Failure::invalid(
                    "invalid_value",
                    Some("input"),
                    "input: a non-empty string or array is required",
                ));
            }
            if stream {
                return Err(Failure::invalid(
                    "invalid_value",
                    Some("stream"),
                    "stream: embeddings are not streamed",
                ));
            }
        }
    }
    let intent = match object.remove("nexus") {
        None | Some(Value::Null) => Intent::new(kind.default_task()),
        Some(Value::Object(mut i)) => {
            i.entry("task")
                .or_insert_with(|| Value::String(kind.default_task().into()));
            let bytes = serde_json::to_vec(&i)
                .map_err(|e| Failure::invalid("invalid_intent", Some("nexus"), e.to_string()))?;
            Intent::from_json(&bytes).map_err(|e| {
                Failure::invalid(
                    "invalid_intent",
                    Some(&format!("nexus.{}", e.field)),
                    format!("nexus.{e}"),
                )
            })?
        }
        Some(_) => {
            return Err(Failure::invalid(
                "invalid_intent",
                Some("nexus"),
                "nexus: must be an intent object (as POST /v1/resolve takes)",
            ));
        }
    };
    let payload = serde_json::to_vec(&object)
        .map_err(|e| Failure::invalid("invalid_json", None, e.to_string()))?;
    Ok(Mapped {
        model,
        intent,
        payload: Bytes::from(payload),
        stream,
        include_usage,
    })
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Failure> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                kind: "invalid_request_error",
                code: "too_large",
                message: format!("request bodies are limited to {} bytes", body_bytes_max()),
                param: None,
            }
        } else {
            Failure::invalid("invalid_body", None, rejection.body_text())
        }
    })
}

fn body_bytes_max() -> usize {
    nexus_api::Limits::default().payload_bytes_max as usize
}

/// Resolves first, so "nothing matches the intent" is told apart from a failed call.
async fn check_endpoint(client: &Client, intent: &Intent) -> Result<(), Failure> {
    let answer = client
        .resolve(intent)
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    let usable = answer
        .candidates
        .iter()
        .any(|c| c.key.is_some() && c.host.is_some() && c.port != 0);
    if usable {
        return Ok(());
    }
    Err(Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: "no_endpoint",
        message: format!(
            "no service with a NexStream endpoint matches the intent (task {:?}; {} candidates)",
            intent.task,
            answer.candidates.len()
        ),
        param: None,
    })
}

fn unix_s() -> u64 {
    nexus_trust::raft::node::CaClock::wall().now_ms() / 1000
}

fn completion_id() -> String {
    use rand_core_06::RngCore;
    let mut bytes = [0u8; 12];
    rand_core_06::OsRng.fill_bytes(&mut bytes);
    format!("chatcmpl-{}", hex::encode(bytes))
}

fn finish_reason(end: Option<StreamEnd>) -> &'static str {
    match end.map(|e| e.finish) {
        Some(Finish::Length) => "length",
        _ => "stop",
    }
}

fn usage(end: Option<StreamEnd>) -> Value {
    let prompt = end.map_or(0, |e| u64::from(e.prompt_tokens));
    let completion = end.map_or(0, |e| e.tokens);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// `POST /v1/chat/completions`.
async fn chat(State(gw): State<Arc<Gateway>>, body: Result<Bytes, BytesRejection>) -> Response {
    let span = request_span("/v1/chat/completions");
    let answer = async {
        let request = map_request(Kind::Chat, &read_body(body)?)?;
        let span = tracing::Span::current();
        span.record("model", request.model.as_str());
        span.record("stream", request.stream);
        let client = gw.client()?;
        check_endpoint(client, &request.intent).await?;
        let mut tokens = client
            .stream_with(
                &request.intent,
                &request.model,
                request.payload.clone(),
                traced(&span),
            )
            .await
            .map_err(|e| Failure::from_sdk(&e))?;
        // The first token (or the service's error) comes before the HTTP status, so a refused
        // call is an error status, not an error inside a 200 stream.
        let first = match tokens.next().await {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => return Err(Failure::from_sdk(&e)),
            None => None,
        };
        if request.stream {
            Ok(relay(tokens, first, request))
        } else {
            collect(tokens, first, request).await
        }
    };
    finish_span(answer.instrument(span.clone()).await, &span)
}

/// The `gateway.request` span of one HTTP call: from the request until the answer starts (the
/// first token of a stream, or the whole answer). Its context goes with the NexAPI REQUEST, so
/// the service's node continues the trace (`upstream.call`).
fn request_span(route: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: crate::telemetry::TARGET,
        "gateway.request",
        route,
        model = tracing::field::Empty,
        stream = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// Call options carrying `span`'s trace context (none with trace export off).
fn traced(span: &tracing::Span) -> CallOptions {
    CallOptions {
        trace: crate::telemetry::trace_of(span),
        ..CallOptions::default()
    }
}

/// The HTTP answer, with its status recorded on the request's span.
fn finish_span(answer: Result<Response, Failure>, span: &tracing::Span) -> Response {
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    span.record("status", response.status().as_u16());
    response
}

/// A non-streaming chat answer: the token stream collected into one `chat.completion`.
async fn collect(
    mut tokens: TokenStream,
    first: Option<Token>,
    request: Mapped,
) -> Result<Response, Failure> {
    let mut text = first.map(|t| t.text).unwrap_or_default();
    while let Some(t) = tokens.next().await {
        text.push_str(&t.map_err(|e| Failure::from_sdk(&e))?.text);
    }
    let end = tokens.end();
    let body = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_s(),
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(end),
        }],
        "usage": usage(end),
    });
    Ok(axum::Json(body).into_response())
}

/// Where a relayed stream is.
#[derive(Debug)]
enum Phase {
    /// The first chunk (the assistant role) is next.
    Role,
    /// Tokens, then the chunk with the finish reason.
    Tokens,
    /// The usage chunk (`stream_options.include_usage`).
    Usage,
    /// `[DONE]`.
    Done,
    /// Nothing more.
    Closed,
}

/// A token stream relayed as `chat.completion.chunk` events.
#[derive(Debug)]
struct Relay {
    tokens: TokenStream,
    first: Option<Token>,
    phase: Phase,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Relay {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        json_event(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    async fn next_event(&mut self) -> Option<Event> {
        match self.phase {
            Phase::Role => {
                self.phase = Phase::Tokens;
                Some(self.chunk(json!({"role": "assistant", "content": ""}), None))
            }
            Phase::Tokens => {
                let next = match self.first.take() {
                    Some(t) => Some(Ok(t)),
                    None => self.tokens.next().await,
                };
                match next {
                    Some(Ok(t)) => Some(self.chunk(json!({"content": t.text}), None)),
                    Some(Err(e)) => {
                        // OpenAI clients raise an error event's `error` as an API error.
                        self.phase = Phase::Closed;
                        Some(json_event(&Failure::from_sdk(&e).body()))
                    }
                    None => {
                        self.phase = if self.include_usage {
                            Phase::Usage
                        } else {
                            Phase::Done
                        };
                        let finish = finish_reason(self.tokens.end());
                        Some(self.chunk(json!({}), Some(finish)))
                    }
                }
            }
            Phase::Usage => {
                self.phase = Phase::Done;
                Some(json_event(&json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage(self.tokens.end()),
                })))
            }
            Phase::Done => {
                self.phase = Phase::Closed;
                Some(Event::default().data("[DONE]"))
            }
            Phase::Closed => None,
        }
    }
}

fn json_event(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// A streaming chat answer: Server-Sent Events, one chunk per token as it arrives. Dropping
/// the response (the HTTP client went away) drops the token stream, which cancels the call.
fn relay(tokens: TokenStream, first: Option<Token>, request: Mapped) -> Response {
    let relay = Relay {
        tokens,
        first,
        phase: Phase::Role,
        id: completion_id(),
        created: unix_s(),
        model: request.model,
        include_usage: request.include_usage,
    };
    let events = futures_util::stream::unfold(relay, |mut r| async move {
        let event = r.next_event().await?;
        Some((Ok::<Event, Infallible>(event), r))
    });
    Sse::new(events).into_response()
}

/// `POST /v1/embeddings`.
async fn embeddings(
    State(gw): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = request_span("/v1/embeddings");
    let answer = async {
        let request = map_request(Kind::Embeddings, &read_body(body)?)?;
        let span = tracing::Span::current();
        span.record("model", request.model.as_str());
        let client = gw.client()?;
        check_endpoint(client, &request.intent).await?;
        let answer = client
            .infer_with(
                &request.intent,
                &request.model,
                request.payload,
                traced(&span),
            )
            .await
            .map_err(|e| Failure::from_sdk(&e))?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&answer).is_err() {
            return Err(Failure {
                status: StatusCode::BAD_GATEWAY,
                kind: "server_error",
                code: "bad_answer",
                message: "the service's answer is not JSON".into(),
                param: None,
            });
        }
        Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
    };
    finish_span(answer.instrument(span.clone()).await, &span)
}

/// `GET /v1/models`: one model per model family (or service id, for a service without a
/// family) among the chat and embedding services this node knows.
async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    let answer = async {
        let unavailable = |e: String| Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "node_unavailable",
            message: format!("listing the fabric's services: {e}"),
            param: None,
        };
        let mut request = gw
            .admin
            .get(format!("{}/v1/services?scope=fabric", gw.node.admin));
        if let Some(token) = &gw.node.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let services: crate::api::Services = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(axum::Json(model_list(&services)).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

fn model_list(services: &crate::api::Services) -> Value {
    let mut models: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for s in &services.services {
        let sad = &s.service;
        if !sad.tasks.iter().any(|t| t == CHAT_TASK || t == EMBED_TASK) {
            continue;
        }
        let id = if sad.model_family.is_empty() {
            sad.id.clone()
        } else {
            sad.model_family.clone()
        };
        let entry = models.entry(id).or_default();
        entry.0.push(sad.id.clone());
        for t in &sad.tasks {
            if !entry.1.contains(t) {
                entry.1.push(t.clone());
            }
        }
    }
    let data: Vec<Value> = models
        .into_iter()
        .map(|(id, (services, tasks))| {
            json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": "nexus",
                "nexus": {"services": services, "tasks": tasks},
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}

async fn not_found(request: Request) -> Failure {
    Failure {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "unknown_url",
        message: format!(
            "no route for {} {} (the gateway serves POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models)",
            request.method(),
            request.uri().path()
        ),
        param: None,
    }
}

async fn method_not_allowed(request: Request) -> Failure {
    Failure {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "invalid_request_error",
        code: "method_not_allowed",
        message: format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
        param: None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the API key (when one is set) and counts every request by route and status.
async fn observe(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let authorized = gw.settings.api_key.as_deref().is_none_or(|key| {
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), key.as_bytes()))
    });
    let response = if authorized {
        next.run(request).await
    } else {
        Failure {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: "invalid_api_key",
            message: "this gateway requires Authorization: Bearer <its api_key>".into(),
            param: None,
        }
        .into_response()
    };
    gw.metrics
        .http
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(gw.clone(), observe))
        .layer(DefaultBodyLimit::max(body_bytes_max()))
        .with_state(gw)
}

/// Messages to [`GatewayActor`].
#[derive(Debug)]
pub enum GatewayMsg {
    /// The HTTP server task ended with an error: fail so the supervisor restarts us.
    ServerFailed(String),
}

/// Owns the HTTP server task.
#[derive(Debug)]
pub struct GatewayState {
    server: JoinHandle<()>,
}

impl Drop for GatewayState {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves the gateway's HTTP listener; a child of the node's supervisor like the admin API.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayActor;

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = Arc<Gateway>;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        gateway: Arc<Gateway>,
    ) -> Result<GatewayState, ActorProcessingErr> {
        let std_listener = gateway.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let app = router(gateway);
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                let _ = myself.send_message(GatewayMsg::ServerFailed(err.to_string()));
            }
        });
        Ok(GatewayState { server })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        message: GatewayMsg,
        _state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::ServerFailed(err) => {
                Err(format!("gateway HTTP server failed: {err}").into())
            }
        }
    }
}

/// A [`ChildSpec`](nexus_actors::ChildSpec) for the gateway's actor.
pub fn child(gateway: Arc<Gateway>) -> nexus_actors::ChildSpec {
    nexus_actors::ChildSpec::new("gateway", move |_: ActorRef<SupervisorMsg>| {
        (GatewayActor, gateway.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_api::ApiError;

    fn chat(body: Value) -> Result<Mapped, Failure> {
        map_request(Kind::Chat, body.to_string().as_bytes())
    }

    #[test]
    fn a_chat_request_maps_to_the_default_intent_and_loses_only_nexus() {
        let m = chat(json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .expect("valid");
        assert_eq!(m.intent, Intent::new(CHAT_TASK));
        assert_eq!(
            (m.model.as_str(), m.stream, m.include_usage),
            ("m", true, true)
        );
        let payload: Value = serde_json::from_slice(&m.payload).expect("json");
        assert_eq!(payload["messages"][0]["content"], "hi");

        let m = chat(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "nexus": {"region": "eu", "k": 5},
        }))
        .expect("valid");
        assert_eq!(m.intent.task, CHAT_TASK);
        assert_eq!(m.intent.region.as_deref(), Some("eu"));
        assert_eq!(m.intent.k, 5);
        assert!(!m.stream);
        let payload: Value = serde_json::from_slice(&m.payload).expect("json");
        assert!(payload.get("nexus").is_none(), "{payload}");
        assert_eq!(payload["model"], "m");

        let m = map_request(
            Kind::Embeddings,
            json!({"model": "e", "input": ["a", "b"], "nexus": {"task": "embed.code"}})
                .to_string()
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(m.intent.task, "embed.code");
        let m = map_request(
            Kind::Embeddings,
            json!({"model": "e", "input": "a"}).to_string().as_bytes(),
        )
        .expect("valid");
        assert_eq!(m.intent.task, EMBED_TASK);
    }

    #[test]
    fn bad_requests_are_typed_400s_naming_the_field() {
        let bad = |body: &[u8], kind: Kind| map_request(kind, body).expect_err("invalid");
        let e = bad(b"{nope", Kind::Chat);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        let e = bad(b"[1]", Kind::Chat);
        assert_eq!(e.code, "invalid_value");
        for (body, param) in [
            (json!({"messages": [{}]}), "model"),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": ["x"]}), "messages"),
            (
                json!({"model": "m", "messages": [{}], "stream": "yes"}),
                "stream",
            ),
            (json!({"model": "m", "messages": [{}], "n": 2}), "n"),
        ] {
            let e = bad(body.to_string().as_bytes(), Kind::Chat);
            assert_eq!(
                (e.status, e.kind, e.param.as_deref()),
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some(param)
                ),
                "{body}"
            );
        }
        let e = bad(
            json!({"model": "e", "input": []}).to_string().as_bytes(),
            Kind::Embeddings,
        );
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = bad(
            json!({"model": "m", "messages": [{}], "nexus": {"k": 0}})
                .to_string()
                .as_bytes(),
            Kind::Chat,
        );
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("invalid_intent", Some("nexus.k"))
        );
        let e = bad(
            json!({"model": "m", "messages": [{}], "nexus": "llm.chat"})
                .to_string()
                .as_bytes(),
            Kind::Chat,
        );
        assert_eq!(e.code, "invalid_intent");
        let body = e.body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "nexus");
    }

    #[test]
    fn sdk_errors_map_to_http_statuses() {
        let api = |code| Failure::from_sdk(&nexus_api::Error::Api(ApiError::new(1, code, "m")));
        let status = |code| api(code).status.as_u16();
        assert_eq!(status(ErrorCode::BadRequest), 400);
        assert_eq!(status(ErrorCode::UnknownModel), 404);
        assert_eq!(api(ErrorCode::UnknownModel).code, "model_not_found");
        assert_eq!(status(ErrorCode::TooLarge), 413);
        assert_eq!(status(ErrorCode::Unavailable), 503);
        assert_eq!(status(ErrorCode::Overloaded), 503);
        assert_eq!(status(ErrorCode::DeadlineExceeded), 504);
        assert_eq!(status(ErrorCode::Internal), 502);
        assert_eq!(api(ErrorCode::Internal).message, "m");
        let transport = Failure::from_sdk(&nexus_api::Error::Transport("reset".into()));
        assert_eq!(
            (transport.status.as_u16(), transport.code),
            (502, "transport")
        );
        let node = Failure::from_sdk(&nexus_api::Error::Node("down".into()));
        assert_eq!((node.status.as_u16(), node.code), (503, "node_unavailable"));
    }

    #[test]
    fn settings_need_the_api_endpoint_and_a_key_off_loopback() {
        let api = Some("127.0.0.1:7800".parse().expect("addr"));
        let file = |listen: &str| GatewayFile {
            listen: Some(listen.into()),
            ..GatewayFile::default()
        };
        assert_eq!(parse_settings(None, &GatewayFile::default(), api), Ok(None));
        let s = parse_settings(None, &file("127.0.0.1:8080"), api)
            .expect("valid")
            .expect("on");
        assert_eq!(
            (s.listen.port(), s.api_key, s.deadline),
            (8080, None, DEFAULT_DEADLINE)
        );
        assert_eq!(
            parse_settings(Some("off"), &file("127.0.0.1:8080"), api),
            Ok(None)
        );
        let s = parse_settings(Some("127.0.0.1:9"), &GatewayFile::default(), api)
            .expect("valid")
            .expect("on");
        assert_eq!(s.listen.port(), 9);
        let field = |flag: Option<&str>, f: &GatewayFile, api| {
            parse_settings(flag, f, api).expect_err("invalid").field
        };
        assert_eq!(field(None, &file("nope"), api), "gateway.listen");
        assert_eq!(field(None, &file("127.0.0.1:8080"), None), "gateway.listen");
        assert_eq!(field(None, &file("0.0.0.0:8080"), api), "gateway.api_key");
        let keyed = GatewayFile {
            listen: Some("0.0.0.0:8080".into()),
            api_key: Some("0123456789abcdef".into()),
            deadline_ms: Some(1000),
        };
        let s = parse_settings(None, &keyed, api)
            .expect("valid")
            .expect("on");
        assert_eq!(s.deadline, Duration::from_secs(1));
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        let short = GatewayFile {
            api_key: Some("short".into()),
            ..file("127.0.0.1:8080")
        };
        assert_eq!(field(None, &short, api), "gateway.api_key");
        let slow = GatewayFile {
            deadline_ms: Some(10),
            ..file("127.0.0.1:8080")
        };
        assert_eq!(field(None, &slow, api), "gateway.deadline_ms");
    }

    #[test]
    fn models_are_listed_by_family() {
        let sad = |id: &str, family: &str, task: &str| {
            nexus_registry::Sad::from_json(
                json!({"id": id, "tasks": [task], "model_family": family})
                    .to_string()
                    .as_bytes(),
            )
            .expect("sad")
        };
        let dto = |sad| crate::api::ServiceDto {
            node: "00".into(),
            node_name: None,
            local: false,
            expires_in_ms: 0,
            service: sad,
        };
        let services = crate::api::Services {
            scope: "fabric".into(),
            services: vec![
                dto(sad("a", "llama", CHAT_TASK)),
                dto(sad("b", "llama", EMBED_TASK)),
                dto(sad("c", "", CHAT_TASK)),
                dto(sad("d", "whisper", "audio.transcribe")),
            ],
        };
        let list = model_list(&services);
        let ids: Vec<&str> = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, ["c", "llama"]);
        assert_eq!(list["data"][1]["nexus"]["services"], json!(["a", "b"]));
    }
}
