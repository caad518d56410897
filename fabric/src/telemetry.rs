//! Optional trace export: the node's spans sent to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), through the `tracing` → OpenTelemetry bridge.
//!
//! Off unless `[telemetry] otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! environment variable names a collector. The endpoint is the collector's base URL, as in the
//! OpenTelemetry specification: spans are posted to `<endpoint>/v1/traces`. Only `http://`
//! endpoints are accepted (the node carries no web PKI roots): run the collector on the host or
//! as a sidecar.
//!
//! Only spans with the target [`TARGET`] are exported; they are `DEBUG` spans, so with export
//! off and the default `info` log filter they are disabled at their call sites and cost a
//! cached interest check. Spans are batched on the SDK's own thread (a bounded queue: spans
//! beyond it are dropped, never blocking the node) and flushed by [`Telemetry::shutdown`] when
//! the process exits.
//!
//! The spans (names and attributes are documented in docs/operations.md §12a):
//! `admin.request`, `admin.resolve`, `nexapi.resolve`, `registry.register`,
//! `registry.broadcast`, `registry.apply`, `gateway.request`, `upstream.call`. A gateway call
//! crosses nodes in one trace: the gateway sends its span's context in the NexAPI REQUEST
//! ([`trace_of`]) and the service's node makes `upstream.call` its child
//! ([`set_remote_parent`]). Adverts are not linked across nodes (the signed advert has no room
//! for a trace context): `registry.apply` starts its own trace.
//! Not instrumented on purpose: anything per packet (the data plane's forwarder, NexStream's
//! datagram path).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;

use crate::config::ConfigError;

/// The `tracing` target of every exported span.
pub const TARGET: &str = "nexus_trace";

/// The standard environment variable naming the collector's base URL.
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The standard environment variable naming the service, when the file does not.
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The service name reported when neither the file nor `OTEL_SERVICE_NAME` sets one.
pub const SERVICE_NAME_DEFAULT: &str = "nexus";

/// Longest accepted `service_name`, bytes.
pub const SERVICE_NAME_BYTES_MAX: usize = 255;

/// How long one export may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[telemetry]` as written in the config file. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// The collector's base URL (`http://host:4318`).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0..=1 (a trace started elsewhere follows its parent).
    pub sample_ratio: Option<f64>,
}

/// Trace export as configured: where, under which name, how much.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    /// The collector's base URL, as given.
    pub endpoint: String,
    /// The URL spans are posted to (`<endpoint>/v1/traces`).
    pub traces_url: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of new traces sampled.
    pub sample_ratio: f64,
}

fn bad<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// The traces URL for a collector's base URL; `field` names the setting in errors.
fn traces_url(field: &str, endpoint: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| ConfigError {
        field: field.into(),
        message: format!("not a URL ({e}): expected e.g. http://127.0.0.1:4318"),
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return bad(
                field,
                "https is not supported (the node carries no web PKI roots): use an http:// \
                 collector on the host or a sidecar",
            );
        }
        other => return bad(field, format!("scheme {other}: expected http://")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad(field, "the URL has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad(field, "the URL must not have a query or a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad(field, "the URL must not carry credentials");
    }
    Ok(format!("{}/v1/traces", url.as_str().trim_end_matches('/')))
}

/// Parses `[telemetry]`, with `env_endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`) and
/// `env_service` (`OTEL_SERVICE_NAME`) used where the file is silent. `None` when no endpoint
/// is set: export is off. The other keys are checked either way.
pub fn parse_settings(
    file: &TelemetryFile,
    env_endpoint: Option<&str>,
    env_service: Option<&str>,
) -> Result<Option<TelemetrySettings>, ConfigError> {
    let sample_ratio = file.sample_ratio.unwrap_or(1.0);
    if !sample_ratio.is_finite() || !(0.0..=1.0).contains(&sample_ratio) {
        return bad(
            "telemetry.sample_ratio",
            format!("{sample_ratio} is outside 0..=1"),
        );
    }
    let (service_field, service_name) = match (&file.service_name, env_service) {
        (Some(s), _) => ("telemetry.service_name", s.as_str()),
        (None, Some(s)) if !s.is_empty() => (ENV_SERVICE_NAME, s),
        _ => ("telemetry.service_name", SERVICE_NAME_DEFAULT),
    };
    if service_name.trim().is_empty() {
        return bad(service_field, "must not be empty");
    }
    if service_name.len() > SERVICE_NAME_BYTES_MAX {
        return bad(
            service_field,
            format!("longer than {SERVICE_NAME_BYTES_MAX} bytes"),
        );
    }
    let (field, endpoint) = match (&file.otlp_endpoint, env_endpoint) {
        (Some(e), _) => ("telemetry.otlp_endpoint", e.as_str()),
        (None, Some(e)) if !e.is_empty() => (ENV_ENDPOINT, e),
        _ => return Ok(None),
    };
    Ok(Some(TelemetrySettings {
        endpoint: endpoint.to_owned(),
        traces_url: traces_url(field, endpoint)?,
        service_name: service_name.to_owned(),
        sample_ratio,
    }))
}

/// The trace context of `span` for a NexAPI request, when the span is recorded and exported
/// (`None` with export off: the span is disabled and has no valid context).
pub fn trace_of(span: &tracing::Span) -> Option<nexus_api::TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| nexus_api::TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Makes `span` a child of the remote caller's span `trace` (a NexAPI REQUEST's trace
/// context); nothing without one, or when `span` is disabled.
pub fn set_remote_parent(span: &tracing::Span, trace: Option<nexus_api::TraceContext>) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let Some(t) = trace else { return };
    if span.is_disabled() {
        return;
    }
    let remote = SpanContext::new(
        TraceId::from_bytes(t.trace_id),
        SpanId::from_bytes(t.span_id),
        TraceFlags::new(t.flags),
        true,
        TraceState::default(),
    );
    // Fails only when the span is not known to the OpenTelemetry layer (export off).
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// A running exporter. Call [`Telemetry::shutdown`] before the process exits so the spans
/// still queued are sent.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds the exporter and the tracer provider; `instance` becomes
    /// `service.instance.id` (the node's name). Call outside the async runtime (the exporter's
    /// HTTP client is a blocking one, driven from the SDK's batch thread).
    pub fn start(settings: &TelemetrySettings, instance: &str) -> Result<Self, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", instance.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer that turns [`TARGET`] spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.tracer("nexus");
        let only_ours =
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(only_ours)
    }

    /// Sends what is queued and stops the exporter. Call outside the async runtime.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: trace export shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(endpoint: Option<&str>, ratio: Option<f64>) -> TelemetryFile {
        TelemetryFile {
            otlp_endpoint: endpoint.map(str::to_owned),
            service_name: None,
            sample_ratio: ratio,
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(parse_settings(&file(None, None), None, None), Ok(None));
        assert_eq!(parse_settings(&file(None, None), Some(""), None), Ok(None));
    }

    #[test]
    fn endpoint_from_the_file_wins_over_the_environment() {
        let s = parse_settings(
            &file(Some("http://127.0.0.1:4318/"), None),
            Some("http://10.0.0.1:4318"),
            Some("edge"),
        )
        .expect("ok")
        .expect("on");
        assert_eq!(s.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.sample_ratio, 1.0);
        let s = parse_settings(&file(None, Some(0.25)), Some("http://c:4318/otlp"), None)
            .expect("ok")
            .expect("on");
        assert_eq!(s.traces_url, "http://c:4318/otlp/v1/traces");
        assert_eq!(s.service_name, SERVICE_NAME_DEFAULT);
    }

    #[test]
    fn bad_values_name_their_setting() {
        let field = |f: TelemetryFile, env: Option<&str>| {
            parse_settings(&f, env, None).expect_err("refused").field
        };
        assert_eq!(
            field(file(Some("not a url"), None), None),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(field(file(None, None), Some("ftp://x")), ENV_ENDPOINT);
        assert_eq!(
            field(file(Some("https://c:4318"), None), None),
            "telemetry.otlp_endpoint"
        );
        for ratio in [-0.1, 1.5, f64::NAN] {
            assert_eq!(
                field(file(Some("http://c:4318"), Some(ratio)), None),
                "telemetry.sample_ratio"
            );
        }
        let empty = TelemetryFile {
            service_name: Some(" ".into()),
            ..file(None, None)
        };
        assert_eq!(field(empty, None), "telemetry.service_name");
    }
}
