//! A multi-model pipeline over each protocol, side by side in one run, with the same mock
//! services behind every protocol.
//!
//! `cargo bench -p nexus-fabric --bench pipeline` (release); `-- --quick` (or
//! `NEXUS_PIPELINE_QUICK=1`) for a smoke run of about a minute. Needs dnsmasq for the cold
//! HTTP row (`fabric/benches/resolve_vs_dns.sh` installs Debian's `dnsmasq-base`).
//!
//! **One pipeline**, in sequence: (1) the *router* (a prompt → the model's name), (2) the
//! *embedder* (a text → 1,024 floats), (3) the *LLM* streaming 200 tokens, (4) a 4 MiB tensor
//! hand-off (prefill → decode: the client uploads 4 MiB of f32 data, the decode service
//! acknowledges). Each service answers fixed data after sleeping its service time (0 and 2 ms;
//! `pipeline/services.rs`). Every service runs on a server thread of its own (a current-thread
//! tokio runtime, its own port and host name), like four hosts.
//!
//! **Protocols** (rows): H0 *cold HTTP* — per call a DNS lookup of the service's host name
//! against a local dnsmasq, a new TCP connection, a full TLS 1.3 handshake and one HTTP/1.1
//! request (JSON bodies, floats as JSON arrays, the tensor base64 in JSON, tokens as server-sent
//! events); H1 *warm HTTP* — the same requests through reqwest's keep-alive pool; H2 *gRPC* —
//! tonic over TLS on one warm HTTP/2 channel per service, the tensor as protobuf `bytes`, the
//! tokens as a server-streaming call (`pipeline/json_http.rs`, `pipeline/tonic_grpc.rs`). All
//! TLS is NexStream's configuration (TLS 1.3, ring, X25519, Ed25519 raw public keys pinned by the
//! client, no resumption), from nexus-stream's transport bench, whose relay, TLS, server-thread
//! and statistics modules this bench includes.
//!
//! **Method.** Open loop: pipelines start on a fixed schedule (one every 1/rate seconds, from
//! a thread that sleeps with 1 ns timer slack), whatever the earlier ones are doing; every
//! latency is measured from the pipeline's *scheduled* start, so a late start or a queue counts
//! (no coordinated omission). A warm-up phase on the same schedule runs and finishes before the
//! measured one. RTT 0 is direct loopback; at other RTTs every connection goes through the
//! transport bench's userspace delay relay (RTT/2 each way; the TCP relay also charges the TCP
//! handshake's round trip), one relay per service and one (UDP) in front of the resolver, the
//! same for every protocol. CPU per pipeline: the client thread's `getrusage(RUSAGE_THREAD)`
//! plus every service thread's over the measured phase (and, for H0, dnsmasq's from
//! `/proc/<pid>/stat`, in 10 ms ticks), divided by the pipelines scheduled; relay threads are
//! not counted there: at RTT > 0 a table of their own gives each row's relay CPU per pipeline
//! and per megabyte relayed (the relay's two threads' CPU clocks, and the bytes it passed on),
//! so the UDP relay's cost can be compared with the TCP relay's.
//!
//! Settings (environment variables):
//!
//! | variable | default (`--quick`) | meaning |
//! |---|---|---|
//! | `NEXUS_PIPELINE_PROTOCOLS` | `cold-http,warm-http,grpc,nexus-cold,nexus-warm,nexus-routed-cold,nexus-routed-warm` | rows |
//! | `NEXUS_PIPELINE_RTT_MS` | `0,1,10` | RTTs; 0 = direct loopback, others through the relay |
//! | `NEXUS_PIPELINE_SERVICE_MS` | `0,2` | service times of every service |
//! | `NEXUS_PIPELINE_REQUESTS` | `200` (`20`) | measured pipelines per case |
//! | `NEXUS_PIPELINE_WARMUP` | `20` (`5`) | warm-up pipelines per case |
//! | `NEXUS_PIPELINE_RATE` | `10` | pipelines started per second |
//! | `NEXUS_PIPELINE_TOKENS` | `200` | tokens per generation |
//! | `NEXUS_PIPELINE_TOKEN_GAP_MS` | `0` | time between tokens after the first |
//! | `NEXUS_PIPELINE_EMBED_DIM` | `1024` | floats per embedding |
//! | `NEXUS_PIPELINE_TENSOR_BYTES` | `4M` | tensor size (bytes, or with K / M; a multiple of 4) |
//! | `NEXUS_PIPELINE_TIMEOUT_S` | `30` | a pipeline not done by then counts as failed |
//! | `NEXUS_PIPELINE_INITIAL_WINDOW` | unset | the Nexus rows' initial congestion window (bytes, or with K / M), clients and services alike; unset: NexStream's default (`EndpointConfig::initial_window_bytes`, 12,000 B) |
//! | `NEXUS_PIPELINE_TRANSPORT_STATS` | unset | set: the Nexus rows print each client session's RTT, congestion window and packets sent and lost after every tensor hand-off, on stderr |
//! | `NEXUS_PIPELINE_QUICK` | unset | `1`: the `--quick` defaults |
//!
//! The report is Markdown on stdout; progress goes to stderr.
//!
//! **Adding a protocol** (a row): a module with a type implementing [`Pipeline`], whatever
//! servers it needs as a field of [`Servers`] (started in [`Servers::start`]), and a variant of
//! [`ProtoId`] whose arm in [`run_case`] names the type.

#[path = "../tests/ca_common/mod.rs"]
#[allow(
    clippy::disallowed_methods,
    reason = "the process-test harness measures wall-clock deadlines of real processes"
)]
mod ca_common;
#[path = "../tests/common/mod.rs"]
#[allow(
    clippy::disallowed_methods,
    reason = "the process-test harness measures wall-clock deadlines of real processes"
)]
mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;
#[path = "../../dataplane/stream/benches/transport/grpc.rs"]
#[allow(
    dead_code,
    reason = "the pipeline uses the transport bench's gRPC server and channel"
)]
mod grpc;
#[path = "../../dataplane/stream/benches/transport/harness.rs"]
#[allow(
    dead_code,
    reason = "the pipeline uses the transport bench's server threads"
)]
mod harness;
#[path = "../../dataplane/stream/benches/transport/https.rs"]
#[allow(
    dead_code,
    reason = "the pipeline uses the transport bench's HTTPS server and TLS"
)]
mod https;
#[path = "pipeline/json_http.rs"]
mod json_http;
#[path = "pipeline/nexus.rs"]
mod nexus;
#[path = "../../dataplane/stream/benches/transport/relay.rs"]
#[allow(
    dead_code,
    reason = "the pipeline uses the delay relay without rate limits"
)]
mod relay;
#[path = "pipeline/services.rs"]
mod services;
#[path = "../../dataplane/stream/benches/transport/settings.rs"]
mod settings;
#[path = "../../dataplane/stream/benches/transport/stats.rs"]
#[allow(
    dead_code,
    reason = "the pipeline uses part of the transport bench's statistics"
)]
mod stats;
#[path = "../../dataplane/stream/benches/transport/tls.rs"]
mod tls;
#[path = "pipeline/tonic_grpc.rs"]
mod tonic_grpc;

use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use bytes::Bytes;
use ed25519_dalek::SigningKey;

use dnsmasq::Dnsmasq;
use harness::Server;
use relay::{LinkShape, Relay, RelayUsage};
use services::{Behaviour, Hop, MODEL, TENSOR_BYTES_MAX};
use settings::{env_num, env_or, list, millis, parse_size};
use stats::{Pretty, Summary, now, precise_timers, size_label, thread_cpu};

/// Tokens as they arrived: (index, arrival time).
type Arrivals = Vec<(u32, Instant)>;

/// Whether a protocol's calls set up their connections (cold) or reuse them (warm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Warmth {
    Cold,
    Warm,
}

impl Warmth {
    fn name(self) -> &'static str {
        match self {
            Warmth::Cold => "cold",
            Warmth::Warm => "warm",
        }
    }
}

/// The tensor handed from prefill to decode.
#[derive(Clone, Debug)]
struct Tensor {
    dtype: &'static str,
    shape: Vec<u64>,
    /// Little-endian elements.
    data: Bytes,
}

/// One protocol's client of the four services (a row of the report).
///
/// [`Pipeline::open`] builds the client for one case (not timed): whatever it sets up there is
/// *warm* state; a *cold* client sets up its connection (name lookup, handshake) inside every
/// call instead. It also puts whatever relays it needs in front of the servers (see [`via`])
/// and keeps them until it is dropped. The four calls are timed one by one; many pipelines run
/// concurrently on the client thread (a current-thread runtime), so the calls take `&self`.
/// [`Pipeline::server_cpu`] sums the CPU time, so far, of every thread or process that serves
/// this protocol.
trait Pipeline: Sized + 'static {
    /// The row's label.
    const NAME: &'static str;
    const WARMTH: Warmth;
    /// The client for one case at `rtt` (0 = direct loopback).
    async fn open(servers: &Servers, rtt: Duration) -> anyhow::Result<Self>;
    /// (1) The router: the model to use for `prompt`.
    async fn route(&self, prompt: &str) -> anyhow::Result<String>;
    /// (2) The embedder: `text`'s embedding.
    async fn embed(&self, text: &str) -> anyhow::Result<Vec<f32>>;
    /// (3) The LLM: `tokens` tokens of `model` for `prompt`, each with its arrival time.
    async fn stream(&self, model: &str, prompt: &str, tokens: u32) -> anyhow::Result<Arrivals>;
    /// (4) The tensor hand-off: the bytes the decode service acknowledged.
    async fn tensor(&self, tensor: &Tensor) -> anyhow::Result<u64>;
    /// The delay relays this client goes through (none at RTT 0).
    fn relays(&self) -> &[Relay];
    /// CPU time the servers of this protocol have used so far.
    async fn server_cpu(&self, servers: &Servers) -> Duration;
}

/// The address a client uses to reach `server` at `rtt`: `server` itself at 0, otherwise a new
/// delay relay (UDP or TCP) in front of it, kept in `relays`.
fn via(
    server: SocketAddr,
    rtt: Duration,
    udp: bool,
    relays: &mut Vec<Relay>,
) -> anyhow::Result<SocketAddr> {
    if rtt.is_zero() {
        return Ok(server);
    }
    let shape = LinkShape::delay(rtt);
    let relay = if udp {
        Relay::udp(server, shape)?
    } else {
        Relay::tcp(server, shape)?
    };
    let addr = relay.addr();
    relays.push(relay);
    Ok(addr)
}

/// Every server of every protocol, and the resolver.
struct Servers {
    behaviour: Arc<Behaviour>,
    client_key: SigningKey,
    server_id: [u8; 32],
    /// The HTTPS servers of H0 and H1, by [`Hop`].
    https: [Server; 4],
    /// The gRPC servers, by [`Hop`].
    grpc: [Server; 4],
    /// The resolver of H0 (only when H0 runs).
    dns: Option<Dnsmasq>,
    /// The fabric of the Nexus rows (only when one runs).
    nexus: Option<nexus::NexusFabric>,
}

impl Servers {
    async fn start(config: &Config) -> anyhow::Result<Servers> {
        let behaviour = Arc::new(Behaviour::new(config.embed_dim, config.token_gap));
        let server_key = SigningKey::from_bytes(&[0x51; 32]);
        let client_key = SigningKey::from_bytes(&[0xc1; 32]);
        let dns = config.protocols.contains(&ProtoId::ColdHttp).then(|| {
            let records: Vec<(&str, Ipv4Addr)> = Hop::ALL
                .iter()
                .map(|h| (h.host(), Ipv4Addr::LOCALHOST))
                .collect();
            Dnsmasq::start(&records)
        });
        let nexus = if config.protocols.iter().any(|p| {
            matches!(
                p,
                ProtoId::NexusCold
                    | ProtoId::NexusWarm
                    | ProtoId::NexusRoutedCold
                    | ProtoId::NexusRoutedWarm
            )
        }) {
            eprintln!("starting a 3-node fabric for the Nexus rows");
            Some(nexus::NexusFabric::start(config.initial_window).await?)
        } else {
            None
        };
        Ok(Servers {
            https: json_http::servers(&server_key, &behaviour),
            grpc: tonic_grpc::servers(&server_key, &behaviour),
            server_id: server_key.verifying_key().to_bytes(),
            client_key,
            behaviour,
            dns,
            nexus,
        })
    }

    async fn https_cpu(&self) -> Duration {
        let mut total = Duration::ZERO;
        for s in &self.https {
            total += s.cpu().await;
        }
        total
    }

    async fn grpc_cpu(&self) -> Duration {
        let mut total = Duration::ZERO;
        for s in &self.grpc {
            total += s.cpu().await;
        }
        total
    }

    /// dnsmasq's CPU time so far (user + system, in the kernel's 10 ms ticks).
    fn resolver_cpu(&self) -> Duration {
        self.dns
            .as_ref()
            .map_or(Duration::ZERO, |dns| process_cpu(dns.child.id()))
    }
}

/// A process's CPU time so far (user + system, in the kernel's 10 ms ticks).
fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name: state is the 3rd field, utime the 14th, stime the 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtoId {
    ColdHttp,
    WarmHttp,
    Grpc,
    NexusCold,
    NexusWarm,
    NexusRoutedCold,
    NexusRoutedWarm,
}

impl ProtoId {
    const ALL: [ProtoId; 7] = [
        ProtoId::ColdHttp,
        ProtoId::WarmHttp,
        ProtoId::Grpc,
        ProtoId::NexusCold,
        ProtoId::NexusWarm,
        ProtoId::NexusRoutedCold,
        ProtoId::NexusRoutedWarm,
    ];

    fn key(self) -> &'static str {
        match self {
            ProtoId::ColdHttp => "cold-http",
            ProtoId::WarmHttp => "warm-http",
            ProtoId::Grpc => "grpc",
            ProtoId::NexusCold => "nexus-cold",
            ProtoId::NexusWarm => "nexus-warm",
            ProtoId::NexusRoutedCold => "nexus-routed-cold",
            ProtoId::NexusRoutedWarm => "nexus-routed-warm",
        }
    }
}

struct Config {
    quick: bool,
    protocols: Vec<ProtoId>,
    rtts: Vec<Duration>,
    service_times: Vec<Duration>,
    requests: usize,
    warmup: usize,
    rate: f64,
    tokens: u32,
    token_gap: Duration,
    embed_dim: usize,
    tensor_bytes: usize,
    timeout: Duration,
    /// The Nexus rows' initial congestion window; none: NexStream's default.
    initial_window: Option<u64>,
}

impl Config {
    fn from_env_and_args() -> anyhow::Result<Config> {
        let mut quick = std::env::var("NEXUS_PIPELINE_QUICK").is_ok_and(|v| v == "1");
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                // `cargo bench` passes `--bench`.
                "--bench" => {}
                other => anyhow::bail!("unknown argument {other:?} (only --quick)"),
            }
        }
        let protocols = list(
            "NEXUS_PIPELINE_PROTOCOLS",
            "cold-http,warm-http,grpc,nexus-cold,nexus-warm,nexus-routed-cold,nexus-routed-warm",
        )
        .iter()
        .map(|s| {
            ProtoId::ALL
                .into_iter()
                .find(|p| p.key() == s)
                .with_context(|| format!("unknown protocol {s:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
        let tensor_bytes = parse_size(
            &env_or("NEXUS_PIPELINE_TENSOR_BYTES", "4M"),
            TENSOR_BYTES_MAX,
        )?;
        ensure!(
            tensor_bytes % 4 == 0,
            "NEXUS_PIPELINE_TENSOR_BYTES: a multiple of 4 up to {}",
            size_label(TENSOR_BYTES_MAX)
        );
        let rate: f64 = env_num("NEXUS_PIPELINE_RATE", 10.0)?;
        ensure!(
            rate > 0.0 && rate <= 10_000.0,
            "NEXUS_PIPELINE_RATE out of range"
        );
        let tokens: u32 = env_num("NEXUS_PIPELINE_TOKENS", 200)?;
        ensure!(
            (1..=services::TOKENS_MAX).contains(&tokens),
            "NEXUS_PIPELINE_TOKENS out of range"
        );
        Ok(Config {
            protocols,
            rtts: millis("NEXUS_PIPELINE_RTT_MS", "0,1,10", 10_000.0)?,
            service_times: millis("NEXUS_PIPELINE_SERVICE_MS", "0,2", 10_000.0)?,
            requests: env_num("NEXUS_PIPELINE_REQUESTS", if quick { 20 } else { 200 })?.max(1),
            warmup: env_num("NEXUS_PIPELINE_WARMUP", if quick { 5 } else { 20 })?,
            rate,
            tokens,
            token_gap: Duration::from_secs_f64(
                env_num("NEXUS_PIPELINE_TOKEN_GAP_MS", 0.0f64)? / 1e3,
            ),
            embed_dim: env_num("NEXUS_PIPELINE_EMBED_DIM", 1024usize)?.max(1),
            tensor_bytes,
            timeout: Duration::from_secs_f64(env_num("NEXUS_PIPELINE_TIMEOUT_S", 30.0f64)?),
            initial_window: match std::env::var("NEXUS_PIPELINE_INITIAL_WINDOW") {
                Ok(v) => {
                    Some(parse_size(&v, 1 << 30).context("NEXUS_PIPELINE_INITIAL_WINDOW")? as u64)
                }
                Err(_) => None,
            },
            quick,
        })
    }
}

/// What every pipeline sends, and what it must get back.
struct Work {
    prompt: String,
    tokens: u32,
    tensor: Tensor,
    embedding: Vec<f32>,
}

impl Work {
    fn new(config: &Config) -> Work {
        let n = config.tensor_bytes / 4;
        let mut data = Vec::with_capacity(config.tensor_bytes);
        for i in 0..n {
            data.extend_from_slice(&((i as f32 * 0.001).sin()).to_le_bytes());
        }
        Work {
            prompt: "Summarise the attached incident report in three sentences and list the \
                     services it names, with the time each was first affected."
                .to_owned(),
            tokens: config.tokens,
            tensor: Tensor {
                dtype: "f32",
                shape: vec![n as u64],
                data: Bytes::from(data),
            },
            embedding: services::embedding(config.embed_dim),
        }
    }
}

/// One pipeline's timings.
struct Sample {
    /// From the scheduled start to the first call.
    lag: Duration,
    /// From the scheduled start to the decode service's acknowledgement.
    e2e: Duration,
    /// From the scheduled start to the first token.
    ttft: Duration,
    route: Duration,
    embed: Duration,
    /// From the LLM call to its first token.
    llm_first: Duration,
    /// The whole LLM call.
    stream: Duration,
    tensor: Duration,
    /// Between consecutive tokens.
    gaps: Vec<Duration>,
}

async fn pipeline<P: Pipeline>(p: &P, work: &Work, scheduled: Instant) -> anyhow::Result<Sample> {
    let t0 = now();
    let model = p.route(&work.prompt).await.context("router")?;
    ensure!(model == MODEL, "the router named {model:?}");
    let t1 = now();
    let embedding = p.embed(&work.prompt).await.context("embedder")?;
    ensure!(
        embedding.len() == work.embedding.len()
            && embedding
                .iter()
                .zip(&work.embedding)
                .all(|(a, b)| (a - b).abs() <= 1e-6),
        "the embedding differs from the embedder's"
    );
    let t2 = now();
    let tokens = p
        .stream(&model, &work.prompt, work.tokens)
        .await
        .context("LLM")?;
    let t3 = now();
    ensure!(
        tokens.len() == work.tokens as usize
            && tokens.iter().enumerate().all(|(i, t)| t.0 as usize == i),
        "{} tokens arrived, or out of order (asked for {})",
        tokens.len(),
        work.tokens
    );
    let received = p.tensor(&work.tensor).await.context("tensor hand-off")?;
    let t4 = now();
    ensure!(
        received == work.tensor.data.len() as u64,
        "the decode service acknowledged {received} B of {}",
        work.tensor.data.len()
    );
    let first = tokens.first().map_or(t3, |t| t.1);
    Ok(Sample {
        lag: t0 - scheduled,
        e2e: t4 - scheduled,
        ttft: first - scheduled,
        route: t1 - t0,
        embed: t2 - t1,
        llm_first: first - t2,
        stream: t3 - t2,
        tensor: t4 - t3,
        gaps: tokens.windows(2).map(|w| w[1].1 - w[0].1).collect(),
    })
}

struct Phase {
    samples: Vec<Sample>,
    errors: Vec<anyhow::Error>,
}

/// `n` pipelines started on a fixed schedule, one every `1 / rate` s; returns when all are
/// done or timed out.
async fn phase<P: Pipeline>(p: &Rc<P>, work: &Rc<Work>, n: usize, config: &Config) -> Phase {
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = now() + Duration::from_millis(10);
    let arrivals = std::thread::Builder::new()
        .name("arrivals".into())
        .spawn(move || {
            precise_timers();
            for i in 0..n {
                let at = start + interval.mul_f64(i as f64);
                loop {
                    let t = now();
                    if t >= at {
                        break;
                    }
                    std::thread::sleep(at - t);
                }
                if tx.send(at).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the arrival thread");
    let mut tasks = Vec::with_capacity(n);
    let timeout = config.timeout;
    while let Some(at) = rx.recv().await {
        let (p, work) = (p.clone(), work.clone());
        tasks.push(tokio::task::spawn_local(async move {
            tokio::time::timeout(timeout, pipeline(&*p, &work, at))
                .await
                .unwrap_or_else(|_| Err(anyhow!("not done within {timeout:?}")))
        }));
    }
    let _ = arrivals.join();
    let mut out = Phase {
        samples: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => out.samples.push(s),
            Ok(Err(e)) => out.errors.push(e),
            Err(e) => out.errors.push(e.into()),
        }
    }
    out
}

/// One protocol at one service time and RTT.
struct Case {
    name: &'static str,
    warmth: Warmth,
    scheduled: usize,
    errors: Vec<anyhow::Error>,
    e2e: Option<Summary>,
    ttft: Option<Summary>,
    gaps: Option<Summary>,
    tensor: Option<Summary>,
    route: Option<Summary>,
    embed: Option<Summary>,
    llm_first: Option<Summary>,
    stream: Option<Summary>,
    lag: Option<Summary>,
    client_cpu: Duration,
    server_cpu: Duration,
    /// The case's delay relays over the measured phase (CPU and bytes; zero at RTT 0).
    relay: RelayUsage,
}

/// What `p`'s relays have used and carried so far.
fn relay_usage<P: Pipeline>(p: &P) -> RelayUsage {
    p.relays()
        .iter()
        .map(Relay::usage)
        .fold(RelayUsage::default(), |a, b| a + b)
}

/// Time for a phase's connections to close before CPU is read.
const SETTLE: Duration = Duration::from_millis(100);

async fn case<P: Pipeline>(
    servers: &Servers,
    work: &Rc<Work>,
    rtt: Duration,
    config: &Config,
) -> anyhow::Result<Case> {
    let p = Rc::new(P::open(servers, rtt).await.context("open")?);
    if config.warmup > 0 {
        let warm = phase(&p, work, config.warmup, config).await;
        if let Some(e) = warm.errors.first() {
            eprintln!(
                "  warm-up: {} of {} failed, first: {e:#}",
                warm.errors.len(),
                config.warmup
            );
        }
    }
    tokio::time::sleep(SETTLE).await;
    let (client0, server0, relay0) = (thread_cpu(), p.server_cpu(servers).await, relay_usage(&*p));
    let measured = phase(&p, work, config.requests, config).await;
    tokio::time::sleep(SETTLE).await;
    let (client1, server1, relay1) = (thread_cpu(), p.server_cpu(servers).await, relay_usage(&*p));
    let n = config.requests as u32;
    let summary = |f: &dyn Fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = measured.samples.iter().map(f).collect();
        Summary::of(&mut v)
    };
    let mut gaps: Vec<Duration> = measured
        .samples
        .iter()
        .flat_map(|s| s.gaps.iter().copied())
        .collect();
    Ok(Case {
        name: P::NAME,
        warmth: P::WARMTH,
        scheduled: config.requests,
        e2e: summary(&|s| s.e2e),
        ttft: summary(&|s| s.ttft),
        gaps: Summary::of(&mut gaps),
        tensor: summary(&|s| s.tensor),
        route: summary(&|s| s.route),
        embed: summary(&|s| s.embed),
        llm_first: summary(&|s| s.llm_first),
        stream: summary(&|s| s.stream),
        lag: summary(&|s| s.lag),
        client_cpu: (client1 - client0) / n,
        server_cpu: server1.saturating_sub(server0) / n,
        relay: relay1.since(relay0),
        errors: measured.errors,
    })
}

async fn run_case(
    id: ProtoId,
    servers: &Servers,
    work: &Rc<Work>,
    rtt: Duration,
    config: &Config,
) -> anyhow::Result<Case> {
    match id {
        ProtoId::ColdHttp => case::<json_http::ColdHttp>(servers, work, rtt, config).await,
        ProtoId::WarmHttp => case::<json_http::WarmHttp>(servers, work, rtt, config).await,
        ProtoId::Grpc => case::<tonic_grpc::Grpc>(servers, work, rtt, config).await,
        ProtoId::NexusCold => case::<nexus::NexusCold>(servers, work, rtt, config).await,
        ProtoId::NexusWarm => case::<nexus::NexusWarm>(servers, work, rtt, config).await,
        ProtoId::NexusRoutedCold => {
            case::<nexus::NexusRoutedCold>(servers, work, rtt, config).await
        }
        ProtoId::NexusRoutedWarm => {
            case::<nexus::NexusRoutedWarm>(servers, work, rtt, config).await
        }
    }
}

fn ms_label(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms.fract() == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms} ms")
    }
}

fn p50_p99(s: &Option<Summary>) -> String {
    s.as_ref().map_or("—".to_owned(), |s| {
        format!("{} / {}", Pretty(s.median), Pretty(s.p99))
    })
}

fn p50(s: &Option<Summary>) -> String {
    s.as_ref()
        .map_or("—".to_owned(), |s| Pretty(s.median).to_string())
}

fn print_cases(service: Duration, rtt: Duration, cases: &[Case]) {
    let path = if rtt.is_zero() {
        "direct loopback".to_owned()
    } else {
        format!("{} RTT through the delay relay", ms_label(rtt))
    };
    println!("\n## Service time {}, {path}\n", ms_label(service));
    println!(
        "| protocol | pipelines (failed) | end-to-end p50 / p99 | time to first token p50 / p99 | inter-token p50 / p99 | tensor hand-off p50 / p99 | CPU per pipeline: client + services |"
    );
    println!("|---|---|---|---|---|---|---|");
    for c in cases {
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} + {} |",
            c.name,
            c.scheduled,
            c.errors.len(),
            p50_p99(&c.e2e),
            p50_p99(&c.ttft),
            p50_p99(&c.gaps),
            p50_p99(&c.tensor),
            Pretty(c.client_cpu),
            Pretty(c.server_cpu),
        );
    }
    println!(
        "\nPer call, p50 (time to first token above and start lag here count from the scheduled start):\n"
    );
    println!(
        "| protocol | connections | router | embedder | LLM first token | LLM whole stream | tensor hand-off | start lag p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for c in cases {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.warmth.name(),
            p50(&c.route),
            p50(&c.embed),
            p50(&c.llm_first),
            p50(&c.stream),
            p50(&c.tensor),
            p50_p99(&c.lag),
        );
    }
    if !rtt.is_zero() {
        println!(
            "\nThe delay relays of each row over the measured phase (not in the CPU column above; H0 adds a UDP relay for DNS to its TCP ones, the Nexus rows' relays are UDP, the others' TCP):\n"
        );
        println!(
            "| protocol | relay CPU per pipeline | bytes relayed per pipeline | relay CPU per MB |"
        );
        println!("|---|---|---|---|");
        for c in cases {
            println!(
                "| {} | {} | {:.2} MB | {} |",
                c.name,
                Pretty(c.relay.cpu / c.scheduled as u32),
                c.relay.bytes as f64 / 1e6 / c.scheduled as f64,
                c.relay
                    .cpu_per_mb()
                    .map_or("—".to_owned(), |d| Pretty(d).to_string()),
            );
        }
    }
    for c in cases.iter().filter(|c| !c.errors.is_empty()) {
        println!(
            "\n{}: {} of {} pipelines failed; first: {:#}",
            c.name,
            c.errors.len(),
            c.scheduled,
            c.errors[0]
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_and_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let started = now();
    let servers = Servers::start(&config).await?;
    let work = Rc::new(Work::new(&config));
    println!("# Multi-model pipeline benchmark\n");
    println!(
        "load average at start: {} · {} CPUs · {}{} measured pipelines per case after {} warm-up, {} started per second (open loop) · {} tokens{} · {} floats per embedding · {} tensor ({}) · RTTs {:?} · service times {:?}",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if config.quick { "quick run: " } else { "" },
        config.requests,
        config.warmup,
        config.rate,
        config.tokens,
        if config.token_gap.is_zero() {
            String::new()
        } else {
            format!(" {} apart", ms_label(config.token_gap))
        },
        config.embed_dim,
        size_label(config.tensor_bytes),
        work.tensor.dtype,
        config.rtts.iter().map(|r| ms_label(*r)).collect::<Vec<_>>(),
        config
            .service_times
            .iter()
            .map(|r| ms_label(*r))
            .collect::<Vec<_>>(),
    );
    println!(
        "\nNexus rows' initial congestion window: {}",
        config.initial_window.map_or_else(
            || format!(
                "{} B (NexStream's default)",
                nexus_stream::EndpointConfig::default().initial_window_bytes
            ),
            |w| format!("{w} B (NEXUS_PIPELINE_INITIAL_WINDOW)")
        )
    );
    for &service in &config.service_times {
        servers.behaviour.set_service_time(service);
        for &rtt in &config.rtts {
            let mut cases = Vec::new();
            for &id in &config.protocols {
                eprintln!(
                    "service time {} · RTT {} · {}",
                    ms_label(service),
                    ms_label(rtt),
                    id.key()
                );
                let c = run_case(id, &servers, &work, rtt, &config)
                    .await
                    .with_context(|| format!("{} at {} RTT", id.key(), ms_label(rtt)))?;
                cases.push(c);
            }
            print_cases(service, rtt, &cases);
        }
    }
    println!(
        "\nload average at end: {} · wall time {:.0} s",
        load_average(),
        (now() - started).as_secs_f64()
    );
    Ok(())
}
