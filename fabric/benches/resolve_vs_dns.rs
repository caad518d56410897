//! Intent resolution through a real node — over its admin API (HTTP + JSON) and over its local
//! NexAPI endpoint (binary, UDP) — side by side with a DNS A-record lookup against a real local
//! resolver (dnsmasq), in one run:
//!
//! - a `nexus node run` process (release build) holds `NEXUS_BENCH_SERVICES` services (default
//!   1000, registered through `POST /v1/services`, spread over 40 task tags);
//! - dnsmasq, started by this bench on a loopback port, answers an A record from its own
//!   configuration (`--host-record`, no upstream, no cache misses);
//! - each round makes one `POST /v1/resolve` (HTTP/1.1 keep-alive, JSON answer decoded), one
//!   binary `RESOLVE` of the same intent to the node's NexAPI endpoint (a connected UDP socket,
//!   one datagram each way, the `ANSWER` decoded and checked), the same resolve through the
//!   SDK (`NodeClient::resolve`, on this bench's single-threaded runtime) and one DNS query
//!   (UDP, one datagram each way), in an order that rotates every round, `NEXUS_BENCH_ROUNDS`
//!   times (default 5000), timing each call; it prints p50 / p99 / mean of each and the
//!   ratios, and the node's own mean time from a `RESOLVE` datagram's receipt to its answer
//!   (`nexus_api_resolve_seconds`) beside the registry core's (`nexus_registry_resolve_seconds`);
//! - then `NEXUS_BENCH_ROUNDS` binary resolves alone, and as long again idle: the context
//!   switches of each of the node's threads (by name, from `/proc`) per resolve, which says
//!   which threads a resolve wakes.
//!
//! The resolves answer a different question than DNS (they rank every advert of a task against
//! numeric constraints and preferences; the DNS lookup returns a stored record), so the ratios
//! say what richer addressing costs over the cheapest lookup there is, on the same loopback and
//! machine, and what the binary endpoint saves over HTTP and JSON.
//!
//! Run: `bash fabric/benches/resolve_vs_dns.sh` (installs dnsmasq-base from Debian's packages
//! if missing, then `cargo bench -p nexus-fabric --bench resolve_vs_dns`). Results and
//! conditions are recorded in docs/BENCHMARKS.md.

#![allow(
    clippy::disallowed_methods,
    reason = "a bench harness measures wall-clock latency of real processes; cores never do"
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::start_node;
use dnsmasq::{Dnsmasq, query};
use nexus_api::wire::ResolveAnswer;
use nexus_api::{Bytes, Limits, Message, NodeClient, NodeConfig};
use nexus_registry::Intent;
use serde_json::json;

/// Sends one query and checks the answer: same id, NOERROR, one answer.
fn dns_lookup(socket: &UdpSocket, id: u16, q: &mut [u8], buf: &mut [u8]) -> bool {
    q[..2].copy_from_slice(&id.to_be_bytes());
    if socket.send(q).is_err() {
        return false;
    }
    match socket.recv(buf) {
        Ok(n) if n >= 12 => {
            buf[..2] == id.to_be_bytes() && buf[3] & 0x0f == 0 && buf[6..8] == [0, 1]
        }
        _ => false,
    }
}

/// Sends one binary `RESOLVE` (`request`, its call id at bytes 2..10 set to `call`) and decodes
/// the answer: an `ANSWER` to the same call.
fn nexapi_resolve(
    socket: &UdpSocket,
    call: u64,
    request: &mut [u8],
    buf: &mut [u8],
) -> Option<ResolveAnswer> {
    request[2..10].copy_from_slice(&call.to_be_bytes());
    socket.send(request).ok()?;
    let n = socket.recv(buf).ok()?;
    match Message::decode(&Bytes::copy_from_slice(&buf[..n]), &Limits::default()) {
        Ok(Message::Answer(a)) if a.call == call => Some(a),
        _ => None,
    }
}

/// Context switches (voluntary and not) of each thread of process `pid`, summed by thread name
/// (tokio's workers share one), from `/proc`. A thread blocked on a socket or in `epoll_wait`
/// switches once each time a datagram wakes it.
fn switches_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum();
        *out.entry(name.trim().to_owned()).or_default() += switches;
    }
    out
}

/// `after - before` per thread name.
fn switches_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .collect()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(v[((v.len() as f64 * q) as usize).min(v.len() - 1)]);
    let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
    (p(0.50), p(0.99), mean)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let services = env_usize("NEXUS_BENCH_SERVICES", 1000);
    let rounds = env_usize("NEXUS_BENCH_ROUNDS", 5000);
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("bench", &dir.path().join("bench"), &[], "", None);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");

    // Services: 40 task tags, varied numbers (deterministic).
    for i in 0..services {
        let family = ["qwen", "llama", "phi", "deepseek"][i % 4];
        let body = json!({
            "id": format!("svc-{i}"),
            "tasks": [format!("task.{}", i % 40)],
            "model_family": family,
            "context_window": 8192 << (i % 6),
            "latency_ms_p50": 20 + (i * 37) % 300,
            "latency_ms_p99": 40 + (i * 37) % 300 + (i % 50),
            "price_micros_per_1k": 50 + (i * 13) % 900,
            "load": {"queue_depth": (i % 17) as u32, "utilization_pct": (i * 7 % 100) as u8},
            "ttl_s": 3600,
        });
        let r = http
            .post(format!("{}/v1/services", node.admin))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert!(r.status().is_success(), "register {i}: {}", r.status());
    }
    let intent = json!({"task": "task.7", "min_context": 32768, "max_latency_ms": 250, "k": 3});
    let node_info: serde_json::Value = http
        .get(format!("{}/v1/node", node.admin))
        .send()
        .await
        .expect("GET /v1/node")
        .json()
        .await
        .expect("json");
    let api: SocketAddr = node_info["api"]
        .as_str()
        .expect("the node's NexAPI endpoint")
        .parse()
        .expect("address");
    let binary = UdpSocket::bind("127.0.0.1:0").expect("bind");
    binary.connect(api).expect("connect to the NexAPI endpoint");
    binary
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut request = Message::Resolve {
        call: 0,
        intent: Box::new(Intent::from_json(intent.to_string().as_bytes()).expect("intent")),
    }
    .encode()
    .to_vec();
    let mut answer_buf = vec![0u8; 65_536];
    // The SDK's resolve (what an application calls), on this thread's runtime.
    let sdk = NodeClient::new(NodeConfig::new(node.admin.clone(), api))
        .await
        .expect("SDK node client");
    let sdk_intent = Intent::from_json(intent.to_string().as_bytes()).expect("intent");

    let dns = Dnsmasq::start(&[("coder-1.nexus.test", Ipv4Addr::LOCALHOST)]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(dns.addr).expect("connect to dnsmasq");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut q = query(0, "coder-1.nexus.test");
    let mut buf = [0u8; 512];

    let resolve = || async {
        let r = http
            .post(format!("{}/v1/resolve", node.admin))
            .json(&intent)
            .send()
            .await
            .expect("resolve");
        let body: serde_json::Value = r.json().await.expect("json");
        body
    };
    // The binary answer is the HTTP answer.
    let by_http = resolve().await;
    let by_binary = nexapi_resolve(&binary, 1, &mut request, &mut answer_buf).expect("ANSWER");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["candidates"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        by_binary
            .candidates
            .iter()
            .map(|c| c.service.clone())
            .collect::<Vec<_>>(),
        ids(&by_http)
    );
    assert!(
        !by_binary.candidates.is_empty(),
        "the resolve found nothing"
    );
    // Warm-up: connections, caches.
    for i in 0..200u16 {
        assert!(
            !ids(&resolve().await).is_empty(),
            "the resolve found nothing"
        );
        assert!(nexapi_resolve(&binary, i.into(), &mut request, &mut answer_buf).is_some());
        assert!(
            !sdk.resolve(&sdk_intent)
                .await
                .expect("SDK resolve")
                .candidates
                .is_empty()
        );
        assert!(dns_lookup(&socket, i, &mut q, &mut buf));
    }
    let mut api = Vec::with_capacity(rounds);
    let mut nexapi = Vec::with_capacity(rounds);
    let mut by_sdk = Vec::with_capacity(rounds);
    let mut dns = Vec::with_capacity(rounds);
    for i in 0..rounds {
        // The order rotates, so no lookup always follows the same one.
        for step in 0..4 {
            match (i + step) % 4 {
                3 => {
                    let t = Instant::now();
                    let answer = sdk.resolve(&sdk_intent).await;
                    by_sdk.push(t.elapsed());
                    assert!(
                        answer.is_ok_and(|a| !a.candidates.is_empty()),
                        "SDK resolve {i} failed"
                    );
                }
                0 => {
                    let t = Instant::now();
                    let found = ids(&resolve().await).len();
                    api.push(t.elapsed());
                    assert!(found > 0);
                }
                1 => {
                    let t = Instant::now();
                    let answer = nexapi_resolve(&binary, i as u64, &mut request, &mut answer_buf);
                    nexapi.push(t.elapsed());
                    assert!(
                        answer.is_some_and(|a| !a.candidates.is_empty()),
                        "NexAPI resolve {i} failed"
                    );
                }
                _ => {
                    let t = Instant::now();
                    let ok = dns_lookup(&socket, i as u16, &mut q, &mut buf);
                    dns.push(t.elapsed());
                    assert!(ok, "DNS lookup {i} failed");
                }
            }
        }
    }
    let (a50, a99, amean) = percentiles(api);
    let (n50, n99, nmean) = percentiles(nexapi);
    let (s50, s99, smean) = percentiles(by_sdk);
    let (d50, d99, dmean) = percentiles(dns);
    println!(
        "resolve via admin API and via the NexAPI endpoint vs DNS A lookup (dnsmasq), {services} adverts, {rounds} rounds each, order rotating"
    );
    println!("| lookup | p50 µs | p99 µs | mean µs |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| POST /v1/resolve (k=3, HTTP keep-alive) | {a50:.1} | {a99:.1} | {amean:.1} |");
    println!("| NexAPI RESOLVE (k=3, binary, UDP) | {n50:.1} | {n99:.1} | {nmean:.1} |");
    println!(
        "| NexAPI RESOLVE through the SDK (NodeClient::resolve) | {s50:.1} | {s99:.1} | {smean:.1} |"
    );
    println!("| DNS A query, UDP (dnsmasq) | {d50:.1} | {d99:.1} | {dmean:.1} |");
    println!(
        "| ratio HTTP resolve / DNS | {:.2} | {:.2} | {:.2} |",
        a50 / d50,
        a99 / d99,
        amean / dmean
    );
    println!(
        "| ratio NexAPI resolve / DNS | {:.2} | {:.2} | {:.2} |",
        n50 / d50,
        n99 / d99,
        nmean / dmean
    );
    println!(
        "| ratio HTTP resolve / NexAPI resolve | {:.2} | {:.2} | {:.2} |",
        a50 / n50,
        a99 / n99,
        amean / nmean
    );
    // Which of the node's threads a binary resolve wakes: binary resolves alone, then as long
    // again idle (the node's timers), context switches per thread name.
    let pid = node.child.id();
    let before = switches_by_thread(pid);
    let t = Instant::now();
    for i in 0..rounds {
        assert!(nexapi_resolve(&binary, i as u64, &mut request, &mut answer_buf).is_some());
    }
    let busy = t.elapsed();
    let during = switches_delta(&before, &switches_by_thread(pid));
    let before = switches_by_thread(pid);
    std::thread::sleep(busy);
    let idle = switches_delta(&before, &switches_by_thread(pid));
    println!(
        "node threads' context switches per binary resolve ({rounds} resolves alone in {:.1} ms, minus as long idle):",
        busy.as_secs_f64() * 1e3
    );
    for (name, n) in &during {
        let quiet = idle.get(name).copied().unwrap_or(0);
        if *n > quiet {
            println!(
                "  {name}: {:.3} ({n} during, {quiet} idle)",
                (*n - quiet) as f64 / rounds as f64
            );
        }
    }
    // The node's own view: time from a RESOLVE datagram's receipt to its ANSWER sent, and the
    // registry core's share (both resolves, HTTP and binary, count in the latter).
    let metrics = http
        .get(format!("{}/metrics", node.admin))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mean_us = |histogram: &str| {
        value(&format!("{histogram}_sum")) / value(&format!("{histogram}_count")) * 1e6
    };
    println!(
        "node side, mean: NexAPI datagram received → ANSWER sent {:.1} µs; registry core resolve {:.1} µs",
        mean_us("nexus_api_resolve_seconds"),
        mean_us("nexus_registry_resolve_seconds")
    );
}
