//! Call outcomes and token timing of a client or service, as Prometheus metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

/// Labels of a call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `infer`, `stream` or `tensor`.
    pub op: String,
    /// `ok` or a NexAPI error code name.
    pub outcome: String,
}

/// The SDK's metrics. Register them with [`Metrics::register`] to export them.
#[derive(Clone, Debug)]
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    call_seconds: Histogram,
    ttft_seconds: Histogram,
    inter_token_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            calls: Family::default(),
            call_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            ttft_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            inter_token_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
        }
    }
}

impl Metrics {
    /// Adds the metrics to `registry` under `prefix` (e.g. `nexus_api_client`).
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register(
            format!("{prefix}_calls"),
            "NexAPI calls by operation and outcome",
            self.calls.clone(),
        );
        registry.register(
            format!("{prefix}_call_seconds"),
            "NexAPI call duration (a token stream: until its end)",
            self.call_seconds.clone(),
        );
        registry.register(
            format!("{prefix}_time_to_first_token_seconds"),
            "Time from a stream call to its first token",
            self.ttft_seconds.clone(),
        );
        registry.register(
            format!("{prefix}_inter_token_seconds"),
            "Time between consecutive tokens of a stream",
            self.inter_token_seconds.clone(),
        );
    }

    /// Counts a finished call.
    pub(crate) fn observe_call<T>(&self, op: &str, result: &Result<T, Error>, took: Duration) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().name().to_owned(),
        };
        self.calls
            .get_or_create(&CallLabels {
                op: op.to_owned(),
                outcome,
            })
            .inc();
        self.call_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn observe_ttft(&self, d: Duration) {
        self.ttft_seconds.observe(d.as_secs_f64());
    }

    pub(crate) fn observe_inter_token(&self, d: Duration) {
        self.inter_token_seconds.observe(d.as_secs_f64());
    }

    /// Calls counted with `op` and `outcome`.
    pub fn calls(&self, op: &str, outcome: &str) -> u64 {
        self.calls
            .get_or_create(&CallLabels {
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .get()
    }
}
