//! Intent resolution through a real node's admin API, side by side with a DNS A-record lookup
//! against a real local resolver (dnsmasq), in one run:
//!
//! - a `nexus node run` process (release build) holds `NEXUS_BENCH_SERVICES` services (default
//!   1000, registered through `POST /v1/services`, spread over 40 task tags);
//! - dnsmasq, started by this bench on a loopback port, answers an A record from its own
//!   configuration (`--host-record`, no upstream, no cache misses);
//! - the bench alternates one `POST /v1/resolve` (HTTP/1.1 keep-alive) and one DNS query (UDP,
//!   one datagram each way), `NEXUS_BENCH_ROUNDS` times (default 5000), timing each call, and
//!   prints p50 / p99 / mean of both and the ratio.
//!
//! The two answer different questions (the resolve ranks every advert of a task against numeric
//! constraints and preferences; the DNS lookup returns a stored record), so the ratio says what
//! richer addressing costs over the cheapest lookup there is, on the same loopback and machine.
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

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::start_node;
use dnsmasq::{Dnsmasq, query};
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
        body["candidates"].as_array().map(Vec::len).unwrap_or(0)
    };
    // Warm-up: connections, caches.
    for i in 0..200u16 {
        assert!(resolve().await > 0, "the resolve found nothing");
        assert!(dns_lookup(&socket, i, &mut q, &mut buf));
    }
    let mut api = Vec::with_capacity(rounds);
    let mut dns = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        let found = resolve().await;
        api.push(t.elapsed());
        assert!(found > 0);
        let t = Instant::now();
        let ok = dns_lookup(&socket, i as u16, &mut q, &mut buf);
        dns.push(t.elapsed());
        assert!(ok, "DNS lookup {i} failed");
    }
    let (a50, a99, amean) = percentiles(api);
    let (d50, d99, dmean) = percentiles(dns);
    println!(
        "resolve via admin API vs DNS A lookup (dnsmasq), {services} adverts, {rounds} rounds each, alternating"
    );
    println!("| lookup | p50 µs | p99 µs | mean µs |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| POST /v1/resolve (k=3, HTTP keep-alive) | {a50:.1} | {a99:.1} | {amean:.1} |");
    println!("| DNS A query, UDP (dnsmasq) | {d50:.1} | {d99:.1} | {dmean:.1} |");
    println!(
        "| ratio resolve / DNS | {:.2} | {:.2} | {:.2} |",
        a50 / d50,
        a99 / d99,
        amean / dmean
    );
}
