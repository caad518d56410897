//! Upstream services: OpenAI-compatible model servers (vLLM, llama.cpp's server, ...) that the
//! node serves to the fabric (`[[upstream]]`). For each, the node runs an SDK
//! [`nexus_api::Service`] with its own CA-issued key, registered with this node under the
//! configured descriptor, whose handler forwards calls to the server over HTTP:
//!
//! - a token stream is `POST {url}/v1/chat/completions` with `"stream": true` (and
//!   `stream_options.include_usage` unless the payload sets it); each content delta of the
//!   server's Server-Sent Events is one token (token id 0: the server does not report ids),
//!   and the stream ends with the server's `finish_reason` (`length` → length, any other →
//!   stop) and its `usage.prompt_tokens`;
//! - a unary call is `POST {url}/v1/embeddings` when the payload has `input` and no
//!   `messages`, `POST {url}/v1/chat/completions` with `"stream": false` when it has
//!   `messages`; the answer is the server's JSON body.
//!
//! The payload is the OpenAI request JSON (what the gateway sends); its `model` is replaced by
//! the call's model name. The server's HTTP errors become NexAPI errors: 400 and 422 →
//! `bad_request`, 404 → `unknown_model`, 413 → `too_large`, 408 and 504 →
//! `deadline_exceeded`, 429 and 503 → `overloaded`, others → `internal`; a server that cannot
//! be reached → `unavailable` (both retried on another service by the caller's SDK).

use std::collections::BTreeSet;
use std::time::Duration;

use nexus_api::{
    ApiError, Bytes, Call, ErrorCode, Finish, Handler, NodeConfig, Service, ServiceConfig,
    TokenSink,
};
use nexus_registry::Sad;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::ConfigError;

/// Upstreams one node serves at most.
pub const UPSTREAMS_MAX: usize = 32;
/// Largest Server-Sent Event read from an upstream.
const EVENT_BYTES_MAX: usize = 1 << 20;
/// Token text longer than this is sent as several tokens (a TOKEN's text is at most 65535
/// bytes).
const TOKEN_TEXT_MAX: usize = 16 * 1024;

/// One `[[upstream]]`. `Debug` redacts the API key.
#[derive(Clone, PartialEq)]
pub struct UpstreamSettings {
    /// The server's base URL, without a trailing `/` (`http://127.0.0.1:8000`).
    pub url: String,
    /// Bearer token the server requires (vLLM's `--api-key`), if any.
    pub api_key: Option<String>,
    /// The service descriptor registered with the node.
    pub sad: Sad,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("service", &self.sad.id)
            .finish()
    }
}

/// `[[upstream]]` in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    url: String,
    api_key: Option<String>,
    service: Value,
}

fn config_err<T>(field: String, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field,
        message: message.into(),
    })
}

/// Parses and checks the `[[upstream]]` entries. `api` is the local NexAPI endpoint, which
/// the node's SDK needs.
pub(crate) fn parse_settings(
    files: &[UpstreamFile],
    api: Option<std::net::SocketAddr>,
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    if files.len() > UPSTREAMS_MAX {
        return config_err(
            "upstream".into(),
            format!("at most {UPSTREAMS_MAX} upstreams"),
        );
    }
    if !files.is_empty() && api.is_none() {
        return config_err(
            "upstream".into(),
            "upstream services run on the node's SDK, which needs the local NexAPI endpoint; set [api] listen (it is off)",
        );
    }
    let mut ids = BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let url = f.url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&url);
        let ok = parsed
            .as_ref()
            .is_ok_and(|u| u.scheme() == "http" && u.host().is_some());
        if !ok {
            return config_err(
                format!("upstream[{i}].url"),
                format!(
                    "{:?} is not an http:// URL (e.g. http://127.0.0.1:8000)",
                    f.url
                ),
            );
        }
        let api_key = f.api_key.clone().filter(|k| !k.is_empty());
        if api_key
            .as_ref()
            .is_some_and(|k| k.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return config_err(
                format!("upstream[{i}].api_key"),
                "must not contain spaces or control characters",
            );
        }
        let bytes = serde_json::to_vec(&f.service).map_err(|e| ConfigError {
            field: format!("upstream[{i}].service"),
            message: e.to_string(),
        })?;
        let sad = Sad::from_json(&bytes).map_err(|e| ConfigError {
            field: format!("upstream[{i}].service.{}", e.field),
            message: e.reason,
        })?;
        if !ids.insert(sad.id.clone()) {
            return config_err(
                format!("upstream[{i}].service.id"),
                format!("{:?} is already the id of another upstream", sad.id),
            );
        }
        out.push(UpstreamSettings { url, api_key, sad });
    }
    Ok(out)
}

/// Starts one task per upstream that serves it to the fabric: obtains the service's
/// certificate and registers it with the node, retrying with backoff until the fabric's CA
/// issues one, then serves until the task is aborted.
pub fn start(upstreams: &[UpstreamSettings], node: &NodeConfig) -> Vec<JoinHandle<()>> {
    upstreams
        .iter()
        .map(|u| {
            let upstream = u.clone();
            let node = node.clone();
            tokio::spawn(async move {
                let handler = Forward::new(&upstream);
                let what = format!("upstream service {}", upstream.sad.id);
                let service = crate::gateway::retry(&what, || {
                    let mut config = ServiceConfig::new(node.clone(), upstream.sad.clone());
                    config.publisher = "nexus-upstream".into();
                    Service::serve(config, handler.clone())
                })
                .await;
                tracing::info!(
                    service = %upstream.sad.id,
                    url = %upstream.url,
                    stream = %service.addr(),
                    mic_serial = service.mic_serial(),
                    "upstream service registered"
                );
                // Serves until aborted.
                std::future::pending::<()>().await;
                drop(service);
            })
        })
        .collect()
}

/// The handler: forwards calls to one OpenAI-compatible server.
#[derive(Clone, Debug)]
struct Forward {
    url: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Forward {
    fn new(settings: &UpstreamSettings) -> Forward {
        Forward {
            url: settings.url.clone(),
            api_key: settings.api_key.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Map<String, Value>,
        call: &Call,
    ) -> Result<reqwest::Response, ApiError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&Value::Object(body));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(left) = call.remaining() {
            request = request.timeout(left.max(Duration::from_millis(1)));
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(status_error(&self.url, status.as_u16(), &body))
    }

    fn transport(&self, e: &reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::new(
                0,
                ErrorCode::DeadlineExceeded,
                format!("upstream {}: no answer before the deadline", self.url),
            )
        } else {
            ApiError::new(
                0,
                ErrorCode::Unavailable,
                format!("upstream {}: {e}", self.url),
            )
        }
    }
}

/// The OpenAI request in `call`'s payload, with the call's model.
fn payload(call: &Call) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(&call.payload) {
        Ok(Value::Object(mut body)) => {
            body.insert("model".into(), Value::String(call.model.clone()));
            Ok(body)
        }
        Ok(_) => Err(bad_request("the payload must be an OpenAI request object")),
        Err(e) => Err(bad_request(format!("the payload is not JSON: {e}"))),
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(0, ErrorCode::BadRequest, message)
}

/// The NexAPI error for an upstream's HTTP error answer, with the server's own message.
fn status_error(url: &str, status: u16, body: &[u8]) -> ApiError {
    let code = match status {
        400 | 422 => ErrorCode::BadRequest,
        404 => ErrorCode::UnknownModel,
        413 => ErrorCode::TooLarge,
        408 | 504 => ErrorCode::DeadlineExceeded,
        429 | 503 => ErrorCode::Overloaded,
        _ => ErrorCode::Internal,
    };
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(500).collect()
        });
    ApiError::new(0, code, format!("upstream {url}: HTTP {status}: {detail}"))
}

impl Forward {
    async fn forward_infer(&self, call: Call) -> Result<Bytes, ApiError> {
        let mut body = payload(&call)?;
        let path = if body.contains_key("messages") {
            body.insert("stream".into(), Value::Bool(false));
            body.remove("stream_options");
            "/v1/chat/completions"
        } else if body.contains_key("input") {
            "/v1/embeddings"
        } else {
            return Err(bad_request(
                "the payload is neither a chat request (messages) nor an embeddings request (input)",
            ));
        };
        let response = self.post(path, body, &call).await?;
        response.bytes().await.map_err(|e| self.transport(&e))
    }

    async fn forward_stream(
        &self,
        call: Call,
        mut tokens: TokenSink,
    ) -> Result<(Finish, u32), ApiError> {
        let mut body = payload(&call)?;
        if !body.contains_key("messages") {
            return Err(bad_request(
                "a token stream needs a chat request (messages)",
            ));
        }
        body.insert("stream".into(), Value::Bool(true));
        body.entry("stream_options")
            .or_insert_with(|| json!({"include_usage": true}));
        let mut response = self.post("/v1/chat/completions", body, &call).await?;
        let mut events = SseReader::default();
        let mut finish = None;
        let mut prompt_tokens = 0u32;
        let internal = |message: String| ApiError::new(0, ErrorCode::Internal, message);
        loop {
            let chunk = response.chunk().await.map_err(|e| self.transport(&e))?;
            let Some(chunk) = chunk else { break };
            for data in events
                .push(&chunk)
                .map_err(|e| internal(format!("upstream {}: {e}", self.url)))?
            {
                if data == "[DONE]" {
                    return Ok((finish.unwrap_or(Finish::Stop), prompt_tokens));
                }
                let v: Value = serde_json::from_str(&data).map_err(|e| {
                    internal(format!("upstream {}: a chunk is not JSON: {e}", self.url))
                })?;
                if let Some(e) = v.get("error") {
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    return Err(internal(format!(
                        "upstream {}: error in the stream: {message}",
                        self.url
                    )));
                }
                if let Some(n) = v
                    .get("usage")
                    .and_then(|u| u.get("prompt_tokens"))
                    .and_then(Value::as_u64)
                {
                    prompt_tokens = u32::try_from(n).unwrap_or(u32::MAX);
                }
                let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
                    continue;
                };
                if let Some(text) = choice
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                {
                    for piece in split_text(text, TOKEN_TEXT_MAX) {
                        tokens.send(0, piece).await?;
                    }
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    finish = Some(if reason == "length" {
                        Finish::Length
                    } else {
                        Finish::Stop
                    });
                }
            }
        }
        finish.map(|f| (f, prompt_tokens)).ok_or_else(|| {
            internal(format!(
                "upstream {}: the stream ended without a finish_reason",
                self.url
            ))
        })
    }
}

impl Handler for Forward {
    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        let span = self.span(&call, "infer");
        let result = self.forward_infer(call).instrument(span.clone()).await;
        record_outcome(&span, result.as_ref().err());
        result
    }

    async fn stream(&self, call: Call, tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        let span = self.span(&call, "stream");
        let result = self
            .forward_stream(call, tokens)
            .instrument(span.clone())
            .await;
        record_outcome(&span, result.as_ref().err());
        result
    }
}

impl Forward {
    /// The `upstream.call` span of one NexAPI call served by this upstream: a child of the
    /// caller's span when the REQUEST carried a trace context (the gateway's
    /// `gateway.request` on another node).
    fn span(&self, call: &Call, op: &'static str) -> tracing::Span {
        let span = tracing::debug_span!(
            target: crate::telemetry::TARGET,
            "upstream.call",
            op,
            model = call.model.as_str(),
            upstream = self.url.as_str(),
            outcome = tracing::field::Empty,
        );
        crate::telemetry::set_remote_parent(&span, call.trace);
        span
    }
}

/// Records how a call ended on its span: `ok` or the NexAPI error code.
fn record_outcome(span: &tracing::Span, error: Option<&ApiError>) {
    match error {
        None => span.record("outcome", "ok"),
        Some(e) => span.record("outcome", e.code.name()),
    };
}

/// Pieces of `text` of at most `max` bytes, cut at character boundaries.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

/// Reads Server-Sent Events from a byte stream: the data of each complete event.
#[derive(Debug, Default)]
struct SseReader {
    buf: Vec<u8>,
}

impl SseReader {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        // CR LF and LF end lines alike.
        self.buf
            .extend(bytes.iter().copied().filter(|&b| b != b'\r'));
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event[..end]);
            let data: Vec<&str> = text
                .split('\n')
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        if self.buf.len() > EVENT_BYTES_MAX {
            return Err(format!("an event is longer than {EVENT_BYTES_MAX} bytes"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_read_across_chunk_boundaries() {
        let mut r = SseReader::default();
        assert_eq!(r.push(b"data: {\"a\"").expect("ok"), Vec::<String>::new());
        assert_eq!(
            r.push(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n")
                .expect("ok"),
            ["{\"a\":1}", "x\ny", "[DONE]"]
        );
        let mut r = SseReader::default();
        assert!(r.push(&vec![b'x'; EVENT_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn upstream_statuses_map_to_nexapi_codes() {
        let body =
            br#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError"}}"#;
        let e = status_error("http://u", 404, body);
        assert_eq!(e.code, ErrorCode::UnknownModel);
        assert!(e.message.contains("does not exist"), "{}", e.message);
        for (status, code) in [
            (400, ErrorCode::BadRequest),
            (422, ErrorCode::BadRequest),
            (413, ErrorCode::TooLarge),
            (429, ErrorCode::Overloaded),
            (503, ErrorCode::Overloaded),
            (504, ErrorCode::DeadlineExceeded),
            (500, ErrorCode::Internal),
            (401, ErrorCode::Internal),
        ] {
            assert_eq!(
                status_error("http://u", status, b"oops").code,
                code,
                "{status}"
            );
        }
        assert!(
            status_error("http://u", 500, b"oops")
                .message
                .ends_with("oops")
        );
    }

    #[test]
    fn long_text_is_cut_at_character_boundaries() {
        let text = "é".repeat(10);
        let pieces = split_text(&text, 5);
        assert!(pieces.iter().all(|p| p.len() <= 5));
        assert_eq!(pieces.concat(), text);
        assert!(split_text("", 5).is_empty());
    }

    fn file(url: &str, service: Value) -> UpstreamFile {
        UpstreamFile {
            url: url.into(),
            api_key: None,
            service,
        }
    }

    #[test]
    fn the_config_file_carries_upstreams_and_the_gateway() {
        use crate::config::{NodeConfig, NodeRunArgs};
        let text = "[gateway]\nlisten = \"127.0.0.1:8080\"\n\
            [[upstream]]\nurl = \"http://127.0.0.1:8000\"\n\
            [upstream.service]\nid = \"vllm-a\"\ntasks = [\"llm.chat\"]\n\
            [[upstream]]\nurl = \"http://127.0.0.1:8001\"\napi_key = \"secret-upstream-key\"\n\
            [upstream.service]\nid = \"vllm-b\"\ntasks = [\"embed.text\"]\ncontext_window = 8192\n";
        let c = NodeConfig::from_toml(text, NodeRunArgs::default()).expect("valid");
        assert_eq!(
            c.gateway.as_ref().map(|g| g.listen.port()),
            Some(8080),
            "{c:?}"
        );
        let ids: Vec<&str> = c.upstreams.iter().map(|u| u.sad.id.as_str()).collect();
        assert_eq!(ids, ["vllm-a", "vllm-b"]);
        assert_eq!(c.upstreams[1].sad.context_window, 8192);
        assert!(!format!("{c:?}").contains("secret-upstream-key"));
        // --gateway overrides the file, both ways.
        let args = NodeRunArgs {
            gateway: Some("off".into()),
            ..NodeRunArgs::default()
        };
        assert!(
            NodeConfig::from_toml(text, args)
                .expect("valid")
                .gateway
                .is_none()
        );
        let args = NodeRunArgs {
            gateway: Some("127.0.0.1:9".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("", args).expect("valid");
        assert_eq!(c.gateway.map(|g| g.listen.port()), Some(9));
        assert!(
            NodeConfig::from_toml("", NodeRunArgs::default())
                .expect("valid")
                .gateway
                .is_none()
        );

        let field = |text: &str| {
            NodeConfig::from_toml(text, NodeRunArgs::default())
                .expect_err("invalid")
                .field
        };
        assert_eq!(
            field(
                "[[upstream]]\nurl = \"http://x\"\n[upstream.service]\nid = \"a\"\ntasks = [\"llm.chat\"]\ncontext_window = -1\n"
            ),
            "upstream[0].service.context_window"
        );
        assert_eq!(
            field(
                "[[upstream]]\nurl = \"http://x\"\nurll = 1\n[upstream.service]\nid = \"a\"\ntasks = [\"llm.chat\"]\n"
            ),
            "urll"
        );
        assert_eq!(
            field("[api]\nlisten = \"off\"\n[gateway]\nlisten = \"127.0.0.1:8080\"\n"),
            "gateway.listen"
        );
        assert_eq!(
            field("[gateway]\nlisten = \"127.0.0.1:8080\"\nport = 1\n"),
            "port"
        );
    }

    #[test]
    fn settings_are_checked_and_name_the_field() {
        let api = Some("127.0.0.1:7800".parse().expect("addr"));
        let svc = json!({"id": "vllm-a", "tasks": ["llm.chat"]});
        let ok =
            parse_settings(&[file("http://127.0.0.1:8000/", svc.clone())], api).expect("valid");
        assert_eq!(ok[0].url, "http://127.0.0.1:8000");
        assert_eq!(ok[0].sad.id, "vllm-a");
        let field =
            |files: &[UpstreamFile], api| parse_settings(files, api).expect_err("invalid").field;
        assert_eq!(
            field(&[file("ftp://x", svc.clone())], api),
            "upstream[0].url"
        );
        assert_eq!(field(&[file("nope", svc.clone())], api), "upstream[0].url");
        assert_eq!(
            field(&[file("http://x", json!({"id": "a", "tasks": []}))], api),
            "upstream[0].service.tasks"
        );
        assert_eq!(
            field(
                &[file("http://x", svc.clone()), file("http://y", svc.clone())],
                api
            ),
            "upstream[1].service.id"
        );
        assert_eq!(field(&[file("http://x", svc.clone())], None), "upstream");
        assert!(parse_settings(&[], None).expect("none").is_empty());
    }
}
