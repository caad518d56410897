//! The NexAPI SDK against real node processes: three CA voters, two services embedded in this
//! test process (each with its own CA-issued key, registered with its node, serving on its
//! own NexStream endpoint) and a client on a third node. The client resolves over its node's
//! binary NexAPI endpoint and calls the services directly: unary inference, a token stream,
//! a 4 MiB tensor, deadlines, cancellation, hedging, a stream resumed on the other service
//! after the first one stops, and typed errors for bad calls.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod ca_common;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ca_common::{CA_TIMINGS, http, wait_bootstrapped};
use common::{NodeProc, fast_config, start_node};
use nexus_api::Bytes;
use nexus_api::wire::ApiError;
use nexus_api::{
    Call, CallOptions, Client, ClientConfig, DType, ErrorCode, Finish, Handler, Service,
    ServiceConfig, Tensor, TensorHeader, TokenSink,
};
use nexus_registry::{Intent, Sad};

fn config() -> String {
    fast_config(&format!(
        "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}"
    ))
}

fn start(name: &str, root: &std::path::Path, seeds: &[&str]) -> NodeProc {
    // The binary NexAPI endpoint on an ephemeral loopback port.
    let cfg = format!("{}\n[api]\nlisten = \"127.0.0.1:0\"\n", config());
    start_node(name, &root.join(name), seeds, &cfg, None)
}

fn sad(id: &str, p50: u32) -> Sad {
    let json = serde_json::json!({
        "id": id, "tasks": ["llm.chat"], "model_family": "tiny", "context_window": 8192,
        "latency_ms_p50": p50, "latency_ms_p99": p50 * 2, "ttl_s": 30,
    });
    Sad::from_json(json.to_string().as_bytes()).expect("sad")
}

fn intent() -> Intent {
    let mut i = Intent::new("llm.chat");
    i.k = 3;
    i
}

/// A mock model: echoes, streams numbered tokens, takes tensors; counts what it did.
#[derive(Clone, Default)]
struct Mock {
    name: &'static str,
    delay: Duration,
    token_gap: Duration,
    tensors: Arc<AtomicUsize>,
    tensor_sum: Arc<AtomicU64>,
    cancelled: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

/// Counts a handler future dropped before it finished.
struct DropGuard(Arc<AtomicUsize>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for Mock {
    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropGuard(self.cancelled.clone(), false);
        if call.payload.as_ref() == b"fail" {
            guard.1 = true;
            return Err(ApiError::new(0, ErrorCode::Internal, "asked to fail"));
        }
        tokio::time::sleep(self.delay).await;
        guard.1 = true;
        let mut out = format!("{}:", self.name).into_bytes();
        out.extend_from_slice(&call.payload);
        Ok(Bytes::from(out))
    }

    async fn stream(&self, call: Call, mut tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropGuard(self.cancelled.clone(), false);
        let n: u32 = std::str::from_utf8(&call.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        for i in 0..n {
            tokens.send(i, &format!("t{i} ")).await?;
            if !self.token_gap.is_zero() {
                tokio::time::sleep(self.token_gap).await;
            }
        }
        guard.1 = true;
        Ok((Finish::Length, 3))
    }

    async fn tensor(&self, tensor: Tensor) -> Result<(), ApiError> {
        self.tensors.fetch_add(1, Ordering::SeqCst);
        let sum: u64 = tensor.data.iter().map(|&b| u64::from(b)).sum();
        self.tensor_sum.fetch_add(sum, Ordering::SeqCst);
        Ok(())
    }
}

async fn wait_candidates(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = client
            .node()
            .resolve(&intent())
            .await
            .map(|a| a.candidates.iter().filter(|c| c.key.is_some()).count())
            .unwrap_or(0);
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {n} services resolved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_calls_services_directly_over_nexstream() {
    let root = tempfile::tempdir().expect("tmp");
    let c = http();
    let n1 = start("n1", root.path(), &[]);
    let seed = n1.gossip.clone();
    let n2 = start("n2", root.path(), &[&seed]);
    let n3 = start("n3", root.path(), &[&seed]);
    wait_bootstrapped(&c, &n1, Duration::from_secs(60)).await;

    // Service "fast" on n1 (better p50, ranked first) and "slow" on n2.
    let fast = Mock {
        name: "fast",
        token_gap: Duration::from_millis(20),
        ..Mock::default()
    };
    let slow = Mock {
        name: "slow",
        delay: Duration::from_millis(400),
        ..Mock::default()
    };
    let fast_svc = Service::serve(
        ServiceConfig::new(n1.nexapi_config().await, sad("fast", 50)),
        fast.clone(),
    )
    .await
    .expect("serve fast");
    let slow_svc = Service::serve(
        ServiceConfig::new(n2.nexapi_config().await, sad("slow", 150)),
        slow.clone(),
    )
    .await
    .expect("serve slow");
    assert_ne!(fast_svc.key(), slow_svc.key());

    let client = Client::connect(ClientConfig::new(n3.nexapi_config().await))
        .await
        .expect("client");
    wait_candidates(&client, 2).await;
    let answer = client.resolve(&intent()).await.expect("resolve");
    assert_eq!(answer.candidates[0].service, "fast", "{answer:?}");
    assert_eq!(answer.candidates[0].key, Some(fast_svc.key()));
    assert_eq!(answer.candidates[0].port, fast_svc.addr().port());

    // Unary inference goes to the best candidate.
    let out = client
        .infer(&intent(), "tiny", Bytes::from_static(b"hello"))
        .await
        .expect("infer");
    assert_eq!(out.as_ref(), b"fast:hello");
    // A handler error reaches the caller typed, and is not retried elsewhere.
    let e = client
        .infer(&intent(), "tiny", Bytes::from_static(b"fail"))
        .await
        .expect_err("handler error");
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert_eq!(slow.calls.load(Ordering::SeqCst), 0);

    // A token stream arrives whole and in order, with its END.
    let mut stream = client
        .stream(&intent(), "tiny", Bytes::from_static(b"25"))
        .await
        .expect("stream");
    let mut seqs = Vec::new();
    while let Some(t) = stream.next().await {
        seqs.push(t.expect("token").seq);
    }
    assert_eq!(seqs, (0..25).collect::<Vec<u64>>());
    let end = stream.end().expect("end");
    assert_eq!(
        (end.tokens, end.finish, end.prompt_tokens),
        (25, Finish::Length, 3)
    );

    // A 4 MiB tensor, received whole.
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let tensor = Tensor {
        header: TensorHeader::contiguous(7, "prefill.kv", DType::F16, &[1024, 2048]),
        data: Bytes::from(data),
    };
    client.send_tensor(&intent(), tensor).await.expect("tensor");
    assert_eq!(fast.tensors.load(Ordering::SeqCst), 1);
    assert_eq!(fast.tensor_sum.load(Ordering::SeqCst), sum);
    // A tensor whose shape disagrees with its bytes is refused, typed, before it is sent.
    let bad = Tensor {
        header: TensorHeader::contiguous(8, "bad", DType::F32, &[3]),
        data: Bytes::from_static(&[0; 11]),
    };
    let e = client.send_tensor(&intent(), bad).await.expect_err("shape");
    assert_eq!(e.code(), ErrorCode::ShapeMismatch, "{e}");

    // Deadlines: the slow service cannot answer within 100 ms.
    let candidates = client
        .resolve(&intent())
        .await
        .expect("resolve")
        .candidates
        .clone();
    let slow_only: Vec<_> = candidates
        .iter()
        .filter(|c| c.service == "slow")
        .cloned()
        .collect();
    let started = Instant::now();
    let e = client
        .infer_on(
            &slow_only,
            "tiny",
            Bytes::from_static(b"x"),
            &CallOptions {
                deadline: Some(Duration::from_millis(100)),
                ..CallOptions::default()
            },
        )
        .await
        .expect_err("deadline");
    assert_eq!(e.code(), ErrorCode::DeadlineExceeded, "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );
    // The service dropped the work.
    common_eventually(
        || slow.cancelled.load(Ordering::SeqCst) >= 1,
        "slow handler cancelled",
    )
    .await;

    // Hedging to both: the fast one wins, the slow one's copy is cancelled.
    let before = slow.cancelled.load(Ordering::SeqCst);
    let started = Instant::now();
    let out = client
        .infer_with(
            &intent(),
            "tiny",
            Bytes::from_static(b"h"),
            CallOptions {
                hedge: 2,
                ..CallOptions::default()
            },
        )
        .await
        .expect("hedge");
    assert_eq!(out.as_ref(), b"fast:h");
    assert!(started.elapsed() < Duration::from_millis(390));
    common_eventually(
        || slow.cancelled.load(Ordering::SeqCst) > before,
        "the losing copy cancelled",
    )
    .await;

    // Cancellation: dropping a stream stops the producer.
    let before = fast.cancelled.load(Ordering::SeqCst);
    let mut stream = client
        .stream(&intent(), "tiny", Bytes::from_static(b"1000"))
        .await
        .expect("stream");
    stream.next().await.expect("one").expect("token");
    stream.cancel().await;
    common_eventually(
        || fast.cancelled.load(Ordering::SeqCst) > before,
        "the producer cancelled",
    )
    .await;

    // Resume: the fast service stops mid-stream; the stream continues on the slow one from
    // the first token not received, each token once.
    let mut stream = client
        .stream(&intent(), "tiny", Bytes::from_static(b"40"))
        .await
        .expect("stream");
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(stream.next().await.expect("token").expect("token").seq);
    }
    fast_svc.stop().await.expect("stop");
    while let Some(t) = stream.next().await {
        seqs.push(t.expect("token after resume").seq);
    }
    assert_eq!(seqs, (0..40).collect::<Vec<u64>>());
    assert_eq!(stream.resumes(), 1);
    assert_eq!(stream.end().expect("end").tokens, 40);

    // The client's metrics saw all of it.
    let m = client.metrics();
    assert!(m.calls("infer", "ok") >= 2);
    assert!(m.calls("infer", "internal") >= 1);
    assert!(m.calls("stream", "ok") >= 2);
    slow_svc.shutdown().await.expect("shutdown");
}

async fn common_eventually(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
