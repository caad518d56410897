//! Latency of NexAPI calls on warm sessions, against real node processes, as a ratio measured
//! in one run (absolute times depend on the machine): the first token of a token stream must
//! arrive within a small multiple of a unary call's answer from the same kind of service. A
//! timer on the path (tokio's are 1 ms coarse) breaks the ratio. The rest of the stream, and the
//! same calls made from a task of a `LocalSet` (how the pipeline bench runs its pipelines), are
//! measured and printed, not asserted.
//!
//! As in the pipeline bench, each service runs on a thread of its own with a current-thread
//! runtime, its tokens come from a generator task through a channel, and the client runs on
//! the test's current-thread runtime.

#![allow(
    clippy::disallowed_methods,
    reason = "measures wall-clock latency of real processes"
)]

mod ca_common;
mod common;

use std::time::{Duration, Instant};

use ca_common::{CA_TIMINGS, http, wait_bootstrapped};
use common::{NodeProc, fast_config, start_node};
use nexus_api::Bytes;
use nexus_api::wire::ApiError;
use nexus_api::{
    Call, Client, ClientConfig, Finish, Handler, NodeConfig, Service, ServiceConfig, TokenSink,
};
use nexus_registry::{Intent, Sad};

/// Tokens per stream, as in the pipeline bench.
const TOKENS: u32 = 200;
/// Calls of each kind measured, after as many warm-up ones.
const ROUNDS: usize = 30;

fn start(name: &str, root: &std::path::Path, seeds: &[&str]) -> NodeProc {
    let cfg = fast_config(&format!(
        "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}\n[api]\nlisten = \"127.0.0.1:0\"\n"
    ));
    start_node(name, &root.join(name), seeds, &cfg, None)
}

fn sad(id: &str, task: &str) -> Sad {
    let json = serde_json::json!({
        "id": id, "tasks": [task], "model_family": "tiny", "context_window": 8192,
        "latency_ms_p50": 1, "latency_ms_p99": 2, "ttl_s": 30,
    });
    Sad::from_json(json.to_string().as_bytes()).expect("sad")
}

/// Answers unary calls at once; streams `TOKENS` tokens from a generator task without pauses.
#[derive(Clone)]
struct Mock;

impl Handler for Mock {
    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        Ok(call.payload)
    }

    async fn stream(&self, _call: Call, mut tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for i in 0..TOKENS {
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        });
        while let Some(i) = rx.recv().await {
            tokens.send(i, " word").await?;
        }
        Ok((Finish::Length, 0))
    }
}

/// Serves `Mock` as `task` on a thread of its own; the service lives until `stop` fires.
fn serve(
    node: NodeConfig,
    task: &'static str,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let service = Service::serve(ServiceConfig::new(node, sad(task, task)), Mock)
                .await
                .expect("serve");
            ready_tx.send(()).expect("ready");
            let _ = stop.await;
            let _ = service.shutdown().await;
        });
    });
    ready_rx.recv().expect("service started");
    thread
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "current_thread")]
async fn a_warm_streams_first_token_and_its_burst_arrive_as_fast_as_a_unary_answer() {
    let root = tempfile::tempdir().expect("tmp");
    let c = http();
    let n1 = start("n1", root.path(), &[]);
    let seed = n1.gossip.clone();
    let _n2 = start("n2", root.path(), &[&seed]);
    let _n3 = start("n3", root.path(), &[&seed]);
    wait_bootstrapped(&c, &n1, Duration::from_secs(60)).await;
    let node = n1.nexapi_config().await;

    let (stop_unary, unary_rx) = tokio::sync::oneshot::channel();
    let (stop_llm, llm_rx) = tokio::sync::oneshot::channel();
    let unary_thread = serve(node.clone(), "latency.unary", unary_rx);
    let llm_thread = serve(node.clone(), "latency.llm", llm_rx);

    let mut config = ClientConfig::new(node);
    config.resolve_ttl = Duration::from_secs(3600);
    let client = Client::connect(config).await.expect("client");
    let unary = Intent::new("latency.unary");
    let llm = Intent::new("latency.llm");
    let deadline = Instant::now() + Duration::from_secs(30);
    for intent in [&unary, &llm] {
        loop {
            let found = client
                .node()
                .resolve(intent)
                .await
                .is_ok_and(|a| a.candidates.iter().any(|c| c.key.is_some()));
            if found {
                break;
            }
            assert!(Instant::now() < deadline, "{intent:?} not resolvable");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The client's calls as a task of the runtime, then as a task of a `LocalSet` on the same
    // thread (how the pipeline bench runs its pipelines; reported, not asserted): the SDK's own
    // tasks run on the runtime either way.
    let (unary_time, first, rest) = measure(&client, &unary, &llm).await;
    eprintln!(
        "runtime task, medians of {ROUNDS}: unary {unary_time:?}, first token {first:?}, the other {} tokens {rest:?}",
        TOKENS - 1
    );
    let (l_unary, l_first, l_rest) = tokio::task::LocalSet::new()
        .run_until(measure(&client, &unary, &llm))
        .await;
    eprintln!(
        "LocalSet task, medians of {ROUNDS}: unary {l_unary:?}, first token {l_first:?}, the other {} tokens {l_rest:?}",
        TOKENS - 1
    );
    assert!(
        first <= unary_time * 3,
        "a warm stream's first token took {first:?}, a unary answer {unary_time:?}"
    );
    let _ = stop_unary.send(());
    let _ = stop_llm.send(());
    let _ = unary_thread.join();
    let _ = llm_thread.join();
}

/// Medians over `ROUNDS` (after as many warm-up rounds) of a unary call's time, a stream's
/// first token and the rest of the stream after it.
async fn measure(client: &Client, unary: &Intent, llm: &Intent) -> (Duration, Duration, Duration) {
    let mut unary_times = Vec::new();
    let mut first_times = Vec::new();
    let mut rest_times = Vec::new();
    for round in 0..2 * ROUNDS {
        // Idle between calls, as between a pipeline's calls to one service.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        let out = client
            .infer(unary, "tiny", Bytes::from_static(b"ping"))
            .await
            .expect("infer");
        let unary_time = started.elapsed();
        assert_eq!(out.as_ref(), b"ping");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        let mut stream = client
            .stream(llm, "tiny", Bytes::from_static(b"prompt"))
            .await
            .expect("stream");
        let mut first = None;
        let mut n = 0;
        while let Some(t) = stream.next().await {
            t.expect("token");
            first.get_or_insert_with(|| started.elapsed());
            n += 1;
        }
        let whole = started.elapsed();
        assert_eq!(n, TOKENS, "every token arrives");
        let first = first.expect("a first token");
        if round >= ROUNDS {
            unary_times.push(unary_time);
            first_times.push(first);
            rest_times.push(whole - first);
        }
    }
    (median(unary_times), median(first_times), median(rest_times))
}
