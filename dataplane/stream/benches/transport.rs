//! NexStream against plain QUIC, HTTPS/1.1 + JSON and gRPC over TLS, side by side in one run.
//!
//! `cargo bench -p nexus-stream --bench transport` (release). Sections, all on loopback:
//!
//! 1. **Relay calibration**: raw UDP and TCP ping-pongs, direct and through the delay relay at
//!    every RTT (the relay's own cost at 0 ms delay, and how close it holds the set delay).
//! 2. **Request/response**: for every RTT and body size, a warm round trip (one pooled
//!    connection, sequential requests) and a cold one (a fresh client: connection setup, the
//!    handshake and the request) for NexStream (`StreamNode`, NexLink framing, MIC-checked
//!    sessions), plain quinn, HTTPS/1.1 + JSON (axum + reqwest, base64 body) and gRPC (tonic
//!    unary, `bytes` field). Every server echoes the body; each answer is compared with the
//!    request outside the timed interval. RTT 0 is direct loopback; other RTTs go through one
//!    userspace delay relay (UDP for the QUIC protocols, TCP for the others) that holds every
//!    datagram or chunk for RTT/2 in each direction. Then, at RTT 0, the warm round trip of the
//!    smallest body through the relay set to 0 ms: the relay's cost per protocol.
//! 3. **Handshake CPU**: CPU time per connection setup, client and server, NexStream vs plain
//!    quinn vs TCP + TLS 1.3 (all with the same raw-key TLS configuration).
//! 4. **Goodput**: reliable goodput of one NexStream session through a rate-limited relay,
//!    alone and beside a saturating best-effort datagram flow on the same session.
//!
//! Every client runs on this thread's current-thread runtime; every server and each relay
//! thread has a thread of its own. All TLS is TLS 1.3 on ring with X25519 and mutual Ed25519
//! raw public keys, no resumption, no 0-RTT.
//!
//! Settings (environment variables; defaults finish in a few minutes):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NEXUS_STREAM_BENCH_SECTIONS` | `calibrate,rr,cpu,goodput` | which sections run |
//! | `NEXUS_STREAM_BENCH_RTT_MS` | `0,1,10` | RTTs; 0 = direct loopback, others via the relay |
//! | `NEXUS_STREAM_BENCH_SIZES` | `1K,64K,16M` | body sizes (bytes, or with K / M) |
//! | `NEXUS_STREAM_BENCH_PROTOCOLS` | `nexstream,quinn,https,grpc` | protocols compared |
//! | `NEXUS_STREAM_BENCH_CASE_MS` | `1500` | time budget of one case (protocol × size × warm/cold × RTT) |
//! | `NEXUS_STREAM_BENCH_ITERS_MIN` | `5` | samples per case at least, whatever the budget |
//! | `NEXUS_STREAM_BENCH_ITERS_MAX` | `3000` | samples per case at most |
//! | `NEXUS_STREAM_BENCH_HANDSHAKES` | `200` | handshakes per protocol for the CPU figures |
//! | `NEXUS_STREAM_BENCH_GOODPUT_MBIT` | `100` | bottleneck rate of the goodput link, Mbit/s |
//! | `NEXUS_STREAM_BENCH_GOODPUT_RTT_MS` | `10` | RTT of the goodput link |
//! | `NEXUS_STREAM_BENCH_GOODPUT_S` | `3` | measured seconds per goodput run (after 1 s warm-up) |
//! | `RUST_LOG` | unset | a tracing filter (logs to stderr; off by default) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use rand::{RngCore, SeedableRng};

#[path = "transport/calibrate.rs"]
mod calibrate;
#[path = "transport/cpu.rs"]
mod cpu;
#[path = "transport/goodput.rs"]
mod goodput;
#[path = "transport/grpc.rs"]
mod grpc;
#[path = "transport/harness.rs"]
mod harness;
#[path = "transport/https.rs"]
mod https;
#[path = "transport/nexstream.rs"]
mod nexstream;
#[path = "transport/quic.rs"]
mod quic;
#[path = "transport/relay.rs"]
mod relay;
#[path = "transport/settings.rs"]
mod settings;
#[path = "transport/stats.rs"]
mod stats;
#[path = "transport/tls.rs"]
mod tls;

use harness::{Proto, Server};
use nexstream::{Answer, DatagramCount, Fabric, NexStream};
use relay::{LinkShape, Relay, RelayUsage};
use settings::{env_num, list, millis, parse_size};
use stats::{Pretty, Summary, now, size_label};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ProtoId {
    Nex,
    Quinn,
    Https,
    Grpc,
}

impl ProtoId {
    const ALL: [ProtoId; 4] = [ProtoId::Nex, ProtoId::Quinn, ProtoId::Https, ProtoId::Grpc];

    fn name(self) -> &'static str {
        match self {
            ProtoId::Nex => "NexStream",
            ProtoId::Quinn => "quinn",
            ProtoId::Https => "HTTPS+JSON",
            ProtoId::Grpc => "gRPC",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ProtoId::Nex => "nexstream",
            ProtoId::Quinn => "quinn",
            ProtoId::Https => "https",
            ProtoId::Grpc => "grpc",
        }
    }

    fn over_udp(self) -> bool {
        matches!(self, ProtoId::Nex | ProtoId::Quinn)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Warm,
    Cold,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Warm => "warm",
            Kind::Cold => "cold",
        }
    }
}

struct Config {
    sections: Vec<String>,
    rtts: Vec<Duration>,
    sizes: Vec<usize>,
    protocols: Vec<ProtoId>,
    case_time: Duration,
    iters_min: usize,
    iters_max: usize,
    handshakes: usize,
    goodput_rate_bytes_per_s: u64,
    goodput_rtt: Duration,
    goodput_time: Duration,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let rtts = millis("NEXUS_STREAM_BENCH_RTT_MS", "0,1,10", 1000.0)?;
        let sizes = list("NEXUS_STREAM_BENCH_SIZES", "1K,64K,16M")
            .iter()
            .map(|s| parse_size(s, harness::BODY_BYTES_MAX))
            .collect::<anyhow::Result<_>>()?;
        let protocols = list("NEXUS_STREAM_BENCH_PROTOCOLS", "nexstream,quinn,https,grpc")
            .iter()
            .map(|s| {
                ProtoId::ALL
                    .into_iter()
                    .find(|p| p.key() == s)
                    .with_context(|| format!("unknown protocol {s:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let mbit: f64 = env_num("NEXUS_STREAM_BENCH_GOODPUT_MBIT", 100.0)?;
        ensure!(
            mbit > 0.0,
            "NEXUS_STREAM_BENCH_GOODPUT_MBIT must be positive"
        );
        Ok(Config {
            sections: list("NEXUS_STREAM_BENCH_SECTIONS", "calibrate,rr,cpu,goodput"),
            rtts,
            sizes,
            protocols,
            case_time: Duration::from_millis(env_num("NEXUS_STREAM_BENCH_CASE_MS", 1500)?),
            iters_min: env_num("NEXUS_STREAM_BENCH_ITERS_MIN", 5usize)?.max(1),
            iters_max: env_num("NEXUS_STREAM_BENCH_ITERS_MAX", 3000usize)?.max(1),
            handshakes: env_num("NEXUS_STREAM_BENCH_HANDSHAKES", 200usize)?.max(1),
            goodput_rate_bytes_per_s: (mbit * 1e6 / 8.0) as u64,
            goodput_rtt: Duration::from_secs_f64(
                env_num("NEXUS_STREAM_BENCH_GOODPUT_RTT_MS", 10.0f64)? / 1e3,
            ),
            goodput_time: Duration::from_secs_f64(env_num("NEXUS_STREAM_BENCH_GOODPUT_S", 3.0f64)?),
        })
    }

    fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }
}

struct Protocols {
    nex: NexStream,
    quinn: quic::Quinn,
    https: https::Https,
    grpc: grpc::Grpc,
    tcp_tls: https::TcpTls,
}

struct Servers {
    nex: Server,
    quinn: Server,
    https: Server,
    grpc: Server,
}

impl Servers {
    fn of(&self, id: ProtoId) -> &Server {
        match id {
            ProtoId::Nex => &self.nex,
            ProtoId::Quinn => &self.quinn,
            ProtoId::Https => &self.https,
            ProtoId::Grpc => &self.grpc,
        }
    }
}

/// Runs `$body` with `$p` bound to the protocol `$id` of `$protocols`.
macro_rules! with_proto {
    ($protocols:expr, $id:expr, |$p:ident| $body:expr) => {
        match $id {
            ProtoId::Nex => {
                let $p = &$protocols.nex;
                $body
            }
            ProtoId::Quinn => {
                let $p = &$protocols.quinn;
                $body
            }
            ProtoId::Https => {
                let $p = &$protocols.https;
                $body
            }
            ProtoId::Grpc => {
                let $p = &$protocols.grpc;
                $body
            }
        }
    };
}

#[derive(Clone, Copy)]
struct Budget {
    time: Duration,
    min: usize,
    max: usize,
}

impl Budget {
    fn more(&self, samples: usize, elapsed: Duration) -> bool {
        samples < self.max && (samples < self.min || elapsed < self.time)
    }
}

fn check(name: &str, answer: &Bytes, body: &Bytes) -> anyhow::Result<()> {
    ensure!(
        answer.len() == body.len() && answer == body,
        "{name}: the answer ({} B) differs from the request ({} B)",
        answer.len(),
        body.len()
    );
    Ok(())
}

async fn warm<P: Proto>(
    p: &P,
    name: &str,
    target: SocketAddr,
    body: &Bytes,
    budget: Budget,
) -> anyhow::Result<(Summary, Option<f64>)> {
    let client = p.client().await?;
    let mut conn = p.connect(client, target).await?;
    let warmup = if body.len() >= 1 << 20 { 1 } else { 20 };
    for _ in 0..warmup {
        let answer = p.request(&mut conn, body).await?;
        check(name, &answer, body)?;
    }
    let mut samples = Vec::new();
    let sent_before = p.datagrams_sent(&conn).await;
    let start = now();
    while budget.more(samples.len(), now() - start) {
        let t0 = now();
        let answer = p.request(&mut conn, body).await?;
        samples.push(now() - t0);
        check(name, &answer, body)?;
    }
    let sent = match (sent_before, p.datagrams_sent(&conn).await) {
        (Some(a), Some(b)) => Some((b - a) as f64 / samples.len() as f64),
        _ => None,
    };
    p.close(conn).await;
    Ok((Summary::of(&mut samples).context("no samples")?, sent))
}

async fn cold<P: Proto>(
    p: &P,
    name: &str,
    target: SocketAddr,
    body: &Bytes,
    budget: Budget,
) -> anyhow::Result<Summary> {
    let mut samples = Vec::new();
    let start = now();
    // The first connection is a warm-up (lazily initialised state on both sides).
    let mut first = true;
    while first || budget.more(samples.len(), now() - start) {
        let client = p.client().await?;
        let t0 = now();
        let mut conn = p.connect(client, target).await?;
        let answer = p.request(&mut conn, body).await?;
        let elapsed = now() - t0;
        p.close(conn).await;
        check(name, &answer, body)?;
        if !first {
            samples.push(elapsed);
        }
        first = false;
    }
    Summary::of(&mut samples).context("no samples")
}

/// A relay of the right kind in front of `server`, or none at RTT 0.
fn relay_for(id: ProtoId, server: &Server, rtt: Option<Duration>) -> anyhow::Result<Option<Relay>> {
    let Some(rtt) = rtt else { return Ok(None) };
    let shape = LinkShape::delay(rtt);
    Ok(Some(if id.over_udp() {
        Relay::udp(server.addr, shape)?
    } else {
        Relay::tcp(server.addr, shape)?
    }))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn ms_label(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1e3;
    if ms.fract() == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms} ms")
    }
}

fn cell(s: &Summary) -> String {
    format!(
        "{} / {} / {} ({})",
        Pretty(s.median),
        Pretty(s.p99),
        Pretty(s.mean),
        s.n
    )
}

fn ratio(num: Duration, den: Duration) -> f64 {
    num.as_secs_f64() / den.as_secs_f64()
}

type Results = BTreeMap<(Duration, usize, Kind, ProtoId), Summary>;
/// What one protocol's cases at one RTT left behind on the path.
#[derive(Clone, Copy, Debug, Default)]
struct PathCounts {
    /// UDP datagrams the kernel dropped for a full receive buffer while the cases ran.
    rcvbuf_drops: u64,
    /// The delay relay's CPU time and the bytes it passed on (RTT > 0).
    relay: RelayUsage,
}

type Drops = BTreeMap<(Duration, ProtoId), PathCounts>;
/// UDP datagrams a client sent per warm request.
type Datagrams = BTreeMap<(Duration, usize, ProtoId), f64>;

fn main() -> anyhow::Result<()> {
    // Logs only when asked for (`RUST_LOG=nexus_stream=debug`); they cost time in the loops.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let config = Config::from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let started = now();
    println!("# NexStream transport benchmark\n");
    println!(
        "load average at start: {} · {} CPUs · RTTs {:?} · sizes {:?} · case budget {:?}, {}..{} samples",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.rtts.iter().map(|r| ms_label(*r)).collect::<Vec<_>>(),
        config
            .sizes
            .iter()
            .map(|s| size_label(*s))
            .collect::<Vec<_>>(),
        config.case_time,
        config.iters_min,
        config.iters_max
    );
    let fabric = Fabric::new();
    let server_id = fabric.server_id();
    let servers = Servers {
        nex: nexstream::server(&fabric, Answer::Echo, Arc::new(DatagramCount::default())),
        quinn: quic::server(&fabric.server_key),
        https: https::server(&fabric.server_key),
        grpc: grpc::server(&fabric.server_key),
    };
    let protocols = Protocols {
        nex: NexStream {
            fabric: fabric.clone(),
        },
        quinn: quic::Quinn::new(&fabric.client_key, server_id),
        https: https::Https::new(&fabric.client_key, server_id),
        grpc: grpc::Grpc::new(&fabric.client_key, server_id),
        tcp_tls: https::TcpTls::new(&fabric.client_key, server_id),
    };

    if config.section("calibrate") {
        calibrate(&config)?;
    }
    let mut results = Results::new();
    let mut relay_zero: BTreeMap<ProtoId, (Summary, Summary)> = BTreeMap::new();
    if config.section("rr") {
        let mut drops = Drops::new();
        let mut datagrams = Datagrams::new();
        request_response(
            &config,
            &protocols,
            &servers,
            &mut results,
            &mut relay_zero,
            &mut drops,
            &mut datagrams,
        )
        .await?;
        print_request_response(&config, &results, &relay_zero, &drops, &datagrams);
    }
    if config.section("cpu") {
        handshake_cpu(&config, &protocols, &servers).await?;
    }
    let mut goodput_drop = None;
    if config.section("goodput") {
        goodput_drop = Some(goodput_section(&config, &fabric).await?);
    }
    print_goals(&config, &results, goodput_drop);
    println!(
        "\nload average at end: {} · wall time {:.0} s",
        load_average(),
        (now() - started).as_secs_f64()
    );
    Ok(())
}

fn calibrate(config: &Config) -> anyhow::Result<()> {
    eprintln!("calibrating the relay");
    let echo = calibrate::EchoServers::start()?;
    println!("\n## Relay calibration (64-byte ping-pong, median / p99 / mean (samples))\n");
    println!("| path | UDP | TCP |");
    println!("|---|---|---|");
    let n_for = |rtt: Duration| {
        let n = if rtt.is_zero() {
            2000
        } else {
            (config.case_time.as_secs_f64() / rtt.as_secs_f64()) as usize
        };
        n.clamp(50, 2000)
    };
    let udp = calibrate::udp_rtt(echo.udp, 2000)?;
    let tcp = calibrate::tcp_rtt(echo.tcp, 2000)?;
    println!("| direct | {} | {} |", cell(&udp), cell(&tcp));
    let mut settings = vec![Duration::ZERO];
    settings.extend(config.rtts.iter().copied().filter(|r| !r.is_zero()));
    for rtt in settings {
        let n = n_for(rtt);
        let shape = LinkShape::delay(rtt);
        let udp_relay = Relay::udp(echo.udp, shape)?;
        let tcp_relay = Relay::tcp(echo.tcp, shape)?;
        let udp = calibrate::udp_rtt(udp_relay.addr(), n)?;
        let tcp = calibrate::tcp_rtt(tcp_relay.addr(), n)?;
        println!(
            "| relay, {} RTT | {} | {} |",
            ms_label(rtt),
            cell(&udp),
            cell(&tcp)
        );
    }
    Ok(())
}

async fn request_response(
    config: &Config,
    protocols: &Protocols,
    servers: &Servers,
    results: &mut Results,
    relay_zero: &mut BTreeMap<ProtoId, (Summary, Summary)>,
    drops: &mut Drops,
    datagrams: &mut Datagrams,
) -> anyhow::Result<()> {
    let budget = Budget {
        time: config.case_time,
        min: config.iters_min,
        max: config.iters_max,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let bodies: BTreeMap<usize, Bytes> = config
        .sizes
        .iter()
        .map(|&size| {
            let mut b = vec![0u8; size];
            rng.fill_bytes(&mut b);
            (size, Bytes::from(b))
        })
        .collect();
    for &rtt in &config.rtts {
        for (&size, body) in &bodies {
            for &id in &config.protocols {
                let server = servers.of(id);
                let relay = relay_for(id, server, (!rtt.is_zero()).then_some(rtt))?;
                let target = relay.as_ref().map_or(server.addr, Relay::addr);
                let relay_start = relay.as_ref().map(Relay::usage);
                for kind in [Kind::Warm, Kind::Cold] {
                    eprintln!(
                        "rtt {} · {} · {} · {}",
                        ms_label(rtt),
                        size_label(size),
                        id.name(),
                        kind.name()
                    );
                    let drops_before = udp_rcvbuf_errors();
                    let summary = with_proto!(protocols, id, |p| match kind {
                        Kind::Warm =>
                            warm(p, id.name(), target, body, budget)
                                .await
                                .map(|(s, sent)| {
                                    if let Some(sent) = sent {
                                        datagrams.insert((rtt, size, id), sent);
                                    }
                                    s
                                }),
                        Kind::Cold => cold(p, id.name(), target, body, budget).await,
                    })
                    .with_context(|| format!("{} {} {}", id.name(), kind.name(), size))?;
                    results.insert((rtt, size, kind, id), summary);
                    if let (Some(a), Some(b)) = (drops_before, udp_rcvbuf_errors()) {
                        drops.entry((rtt, id)).or_default().rcvbuf_drops += b.saturating_sub(a);
                    }
                }
                if let (Some(relay), Some(start)) = (&relay, relay_start) {
                    let counts = drops.entry((rtt, id)).or_default();
                    counts.relay = counts.relay + relay.usage().since(start);
                }
            }
        }
    }
    // The relay's cost per protocol: the smallest body, warm, direct vs relay at 0 ms.
    if let Some((&size, body)) = bodies.iter().next() {
        for &id in &config.protocols {
            eprintln!("relay cost · {} · {}", size_label(size), id.name());
            let server = servers.of(id);
            let relay = relay_for(id, server, Some(Duration::ZERO))?.context("relay")?;
            let direct = with_proto!(protocols, id, |p| warm(
                p,
                id.name(),
                server.addr,
                body,
                budget
            )
            .await)?;
            let relayed = with_proto!(protocols, id, |p| warm(
                p,
                id.name(),
                relay.addr(),
                body,
                budget
            )
            .await)?;
            relay_zero.insert(id, (direct.0, relayed.0));
        }
    }
    Ok(())
}

fn print_request_response(
    config: &Config,
    results: &Results,
    relay_zero: &BTreeMap<ProtoId, (Summary, Summary)>,
    drops: &Drops,
    datagrams: &Datagrams,
) {
    let ids = &config.protocols;
    let has_nex = ids.contains(&ProtoId::Nex);
    for &rtt in &config.rtts {
        let path = if rtt.is_zero() {
            "direct loopback".to_owned()
        } else {
            format!("through the delay relay, {} RTT", ms_label(rtt))
        };
        println!(
            "\n## Request/response, {path}\n\nmedian / p99 / mean (samples); the body is echoed, so {{size}} travels each way.\n"
        );
        let mut header = "| case |".to_owned();
        let mut rule = "|---|".to_owned();
        for id in ids {
            header += &format!(" {} |", id.name());
            rule += "---|";
        }
        if has_nex {
            for id in ids.iter().filter(|i| **i != ProtoId::Nex) {
                header += &format!(" {} / NexStream |", id.name());
                rule += "---:|";
            }
        }
        println!("{header}\n{rule}");
        for &size in &config.sizes {
            for kind in [Kind::Warm, Kind::Cold] {
                let mut row = format!("| {} {} |", kind.name(), size_label(size));
                for &id in ids {
                    match results.get(&(rtt, size, kind, id)) {
                        Some(s) => row += &format!(" {} |", cell(s)),
                        None => row += " — |",
                    }
                }
                if let Some(nex) = results.get(&(rtt, size, kind, ProtoId::Nex)) {
                    for &id in ids.iter().filter(|i| **i != ProtoId::Nex) {
                        match results.get(&(rtt, size, kind, id)) {
                            Some(s) => row += &format!(" {:.2}× |", ratio(s.median, nex.median)),
                            None => row += " — |",
                        }
                    }
                }
                println!("{row}");
            }
        }
        let dropped: Vec<String> = ids
            .iter()
            .filter(|id| id.over_udp())
            .map(|id| {
                format!(
                    "{} {}",
                    id.name(),
                    drops.get(&(rtt, *id)).map_or(0, |c| c.rcvbuf_drops)
                )
            })
            .collect();
        if !dropped.is_empty() {
            println!(
                "\nUDP datagrams the kernel dropped for a full socket receive buffer during these cases (`/proc/net/snmp` RcvbufErrors; the relay's own sockets have 4 MiB buffers): {}",
                dropped.join(", ")
            );
        }
        let relay_cost: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let usage = drops.get(&(rtt, *id))?.relay;
                let per_mb = usage.cpu_per_mb()?;
                Some(format!(
                    "{} ({}) {} per MB ({:.0} MB)",
                    id.name(),
                    if id.over_udp() { "UDP" } else { "TCP" },
                    Pretty(per_mb),
                    usage.bytes as f64 / 1e6
                ))
            })
            .collect();
        if !relay_cost.is_empty() {
            println!(
                "\nThe delay relay's own CPU (its two threads) per MB it passed on, over these cases: {}",
                relay_cost.join(", ")
            );
        }
        let per_request: Vec<String> = config
            .sizes
            .iter()
            .flat_map(|&size| {
                ids.iter().filter_map(move |&id| {
                    datagrams
                        .get(&(rtt, size, id))
                        .map(|d| format!("{} {} {d:.1}", id.name(), size_label(size)))
                })
            })
            .collect();
        if !per_request.is_empty() {
            println!(
                "\nUDP datagrams the client sent per warm request (its endpoint's counters): {}",
                per_request.join(", ")
            );
        }
        // Throughput of the bulk sizes (both directions, medians).
        let bulk: Vec<usize> = config
            .sizes
            .iter()
            .copied()
            .filter(|s| *s >= 1 << 20)
            .collect();
        if !bulk.is_empty() {
            println!("\nBulk: MiB/s moved (request + answer) at the median, warm / cold:\n");
            println!(
                "| size |{}",
                ids.iter()
                    .map(|i| format!(" {} |", i.name()))
                    .collect::<String>()
            );
            println!("|---|{}", ids.iter().map(|_| "---|").collect::<String>());
            for size in bulk {
                let mut row = format!("| {} |", size_label(size));
                for &id in ids {
                    let rate = |kind| {
                        results
                            .get(&(rtt, size, kind, id))
                            .map_or("—".to_owned(), |s| {
                                format!(
                                    "{:.0}",
                                    2.0 * size as f64 / (1 << 20) as f64 / s.median.as_secs_f64()
                                )
                            })
                    };
                    row += &format!(" {} / {} |", rate(Kind::Warm), rate(Kind::Cold));
                }
                println!("{row}");
            }
        }
    }
    if !relay_zero.is_empty() {
        let size = config.sizes.first().copied().unwrap_or(0);
        println!(
            "\n## The relay's own cost: warm {} round trip, direct vs through the relay at 0 ms delay\n",
            size_label(size)
        );
        println!("| protocol | direct | relay, 0 ms | added (median) |");
        println!("|---|---|---|---:|");
        for (id, (direct, relayed)) in relay_zero {
            println!(
                "| {} | {} | {} | {} |",
                id.name(),
                cell(direct),
                cell(relayed),
                Pretty(relayed.median.saturating_sub(direct.median))
            );
        }
    }
}

async fn handshake_cpu(
    config: &Config,
    protocols: &Protocols,
    servers: &Servers,
) -> anyhow::Result<()> {
    eprintln!("handshake CPU");
    let n = config.handshakes;
    let nex = cpu::measure(&protocols.nex, &servers.nex, servers.nex.addr, n).await?;
    let quinn = cpu::measure(&protocols.quinn, &servers.quinn, servers.quinn.addr, n).await?;
    let tcp = cpu::measure(&protocols.tcp_tls, &servers.https, servers.https.addr, n).await?;
    println!(
        "\n## Handshake CPU ({n} connection setups each, direct loopback, current-thread runtimes, client and server on separate threads)\n"
    );
    println!("| | client CPU median / p99 | server CPU mean | setup wall time median / p99 |");
    println!("|---|---|---|---|");
    for (name, h) in [
        ("NexStream (QUIC + TLS 1.3 + Hello/MIC)", &nex),
        ("plain quinn (QUIC + TLS 1.3)", &quinn),
        ("TCP + TLS 1.3", &tcp),
    ] {
        println!(
            "| {name} | {} / {} | {} | {} / {} |",
            Pretty(h.client.median),
            Pretty(h.client.p99),
            Pretty(h.server_mean),
            Pretty(h.wall.median),
            Pretty(h.wall.p99)
        );
    }
    println!(
        "\nNexStream / TCP+TLS: client {:.2}×, server {:.2}×; NexStream / quinn: client {:.2}×, server {:.2}×",
        ratio(nex.client.median, tcp.client.median),
        ratio(nex.server_mean, tcp.server_mean),
        ratio(nex.client.median, quinn.client.median),
        ratio(nex.server_mean, quinn.server_mean),
    );
    Ok(())
}

async fn goodput_section(config: &Config, fabric: &Fabric) -> anyhow::Result<f64> {
    let rate = config.goodput_rate_bytes_per_s;
    let settings = goodput::Settings {
        link: LinkShape {
            one_way: config.goodput_rtt / 2,
            rate_bytes_per_s: Some(rate),
            queue_max: config.goodput_rtt.max(Duration::from_millis(5)),
        },
        warmup: Duration::from_secs(1),
        measure: config.goodput_time,
        offered_bytes_per_s: rate * 2,
    };
    eprintln!("goodput, reliable alone");
    let alone = goodput::run(fabric, settings, false).await?;
    eprintln!("goodput, reliable + best-effort");
    let mixed = goodput::run(fabric, settings, true).await?;
    if alone.reliable_bytes_per_s <= 0.0 {
        bail!("no reliable goodput measured");
    }
    let mbit = |b: f64| b * 8.0 / 1e6;
    println!(
        "\n## Reliable goodput beside a saturating best-effort flow (one NexStream session; relay link {:.0} Mbit/s each way, {} RTT, {} queue)\n",
        mbit(rate as f64),
        ms_label(config.goodput_rtt),
        ms_label(settings.link.queue_max)
    );
    println!(
        "| run | reliable goodput | datagrams offered | accepted by the endpoint | delivered | relay drops |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, o) in [
        ("reliable alone", &alone),
        ("reliable + best-effort", &mixed),
    ] {
        println!(
            "| {name} | {:.1} Mbit/s | {:.1} Mbit/s | {:.1} Mbit/s | {:.1} Mbit/s | {} |",
            mbit(o.reliable_bytes_per_s),
            mbit(o.offered_bytes_per_s),
            mbit(o.accepted_bytes_per_s),
            mbit(o.delivered_bytes_per_s),
            o.relay_dropped
        );
    }
    let drop = 1.0 - mixed.reliable_bytes_per_s / alone.reliable_bytes_per_s;
    println!(
        "\nreliable goodput drop under the best-effort flow: {:.1} %",
        drop * 100.0
    );
    Ok(drop)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn print_goals(config: &Config, results: &Results, goodput_drop: Option<f64>) {
    println!("\n## Against the goals (ratios of medians)\n");
    let get = |rtt, size, kind, id| results.get(&(rtt, size, kind, id));
    for &rtt in &config.rtts {
        for &size in &config.sizes {
            let Some(nex) = get(rtt, size, Kind::Warm, ProtoId::Nex) else {
                continue;
            };
            for (id, goal) in [(ProtoId::Https, 1.5), (ProtoId::Grpc, 1.2)] {
                if let Some(other) = get(rtt, size, Kind::Warm, id) {
                    let r = ratio(other.median, nex.median);
                    println!(
                        "- warm {} at {} RTT: NexStream {:.2}× faster than {} (goal ≥ {goal}×): {}",
                        size_label(size),
                        ms_label(rtt),
                        r,
                        id.name(),
                        verdict(r >= goal)
                    );
                }
            }
        }
    }
    for &rtt in config.rtts.iter().filter(|r| !r.is_zero()) {
        for &size in &config.sizes {
            let Some(nex) = get(rtt, size, Kind::Cold, ProtoId::Nex) else {
                continue;
            };
            for id in [ProtoId::Https, ProtoId::Grpc] {
                if let Some(other) = get(rtt, size, Kind::Cold, id) {
                    let r = ratio(other.median, nex.median);
                    println!(
                        "- cold {} at {} RTT: NexStream {:.2}× faster than TCP+TLS+{} (goal ≥ 2×): {}",
                        size_label(size),
                        ms_label(rtt),
                        r,
                        if id == ProtoId::Https {
                            "HTTP/1.1"
                        } else {
                            "HTTP/2 (gRPC)"
                        },
                        verdict(r >= 2.0)
                    );
                }
            }
        }
    }
    if let Some(&bulk) = config.sizes.iter().filter(|s| **s >= 1 << 20).max() {
        for &rtt in &config.rtts {
            for kind in [Kind::Warm, Kind::Cold] {
                if let (Some(nex), Some(q)) = (
                    get(rtt, bulk, kind, ProtoId::Nex),
                    get(rtt, bulk, kind, ProtoId::Quinn),
                ) {
                    let r = ratio(nex.median, q.median);
                    println!(
                        "- bulk {} {} at {} RTT: NexStream takes {:.2}× plain quinn's time (goal ≤ 1.2×): {}",
                        size_label(bulk),
                        kind.name(),
                        ms_label(rtt),
                        r,
                        verdict(r <= 1.2)
                    );
                }
            }
        }
    }
    if let Some(drop) = goodput_drop {
        println!(
            "- reliable goodput drop under a saturating best-effort flow: {:.1} % (goal ≤ 10 %): {}",
            drop * 100.0,
            verdict(drop <= 0.10)
        );
    }
}
