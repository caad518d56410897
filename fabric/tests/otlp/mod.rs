//! A real OTLP/HTTP trace receiver for tests: an axum server that decodes every
//! `ExportTraceServiceRequest` (protobuf) posted to `/v1/traces` and keeps its spans.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

/// One span as the receiver decoded it.
#[derive(Clone, Debug)]
pub struct Received {
    /// `service.instance.id` of the resource (the node's name).
    pub instance: String,
    /// `service.name` of the resource.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace id (16 bytes).
    pub trace_id: Vec<u8>,
    /// Its span id (8 bytes).
    pub span_id: Vec<u8>,
    /// Its parent's span id (empty for a root span).
    pub parent_span_id: Vec<u8>,
    /// Its attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

/// Every span received so far.
pub type Spans = Arc<Mutex<Vec<Received>>>;

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv))).collect()
}

/// `POST /v1/traces`: decodes the protobuf body and keeps every span.
async fn traces(State(spans): State<Spans>, body: Bytes) -> impl axum::response::IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut out = spans.lock().expect("spans");
    for rs in request.resource_spans {
        let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Received {
                    instance: resource
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default(),
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Starts the receiver; returns its base URL and what it has received.
pub async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}
