//! Table-generation install time on the P4 target, for 1k and 100k routes:
//!
//! - `encode`: plan the generation's entries, diff them against an empty switch, and encode
//!   the updates as `WriteRequest`s of `WRITE_UPDATES_MAX` (what the node does before sending);
//! - `push`: `P4Client::push` of the same generation to the P4Runtime test server
//!   (`tests/p4rt/server.py`, a local process on the PyPI `p4runtime` bindings with protobuf's
//!   pure-Python implementation, which decodes and validates every entity): encode + send +
//!   the server's apply, until the last `Write` returns;
//! - `diff`: a second generation with 1 % of the routes moved to another group, pushed as a diff.
//!
//! Routes point at 256 distinct groups of 1–4 weighted next hops (groups are shared, as intent
//! routes share service sets). Run: `cargo bench -p nexus-p4 --bench install`. The test
//! server runs in its venv (`nexus_p4::testkit`, made if missing).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nexus_dataplane::fib::{NextHop, RouteSet, RoutingKey, SourceSet};
use nexus_dataplane::forward::LocalEndpoints;
use nexus_p4::client::{P4Client, P4Config, WRITE_UPDATES_MAX};
use nexus_p4::controller::Controller;
use nexus_p4::proto::v1::WriteRequest;
use nexus_p4::testkit::TestServer;
use prost::Message;

fn group(g: u32) -> Vec<NextHop> {
    (0..1 + g % 4)
        .map(|i| NextHop {
            node: [(g + i) as u8; 32],
            addr: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, (g % 200) as u8, i as u8 + 1)),
                7000 + (g / 200) as u16,
            ),
            weight: 1 + i,
            rewrite: None,
        })
        .collect()
}

fn generation(n: u32, number: u64, moved_every: u32) -> RouteSet {
    let mut set = RouteSet::new(number);
    for k in 0..n {
        let key = RoutingKey(u128::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let shift = u32::from(moved_every != 0 && k % moved_every == 0);
        set.insert(key, group((k + shift) % 256)).expect("route");
    }
    set.set_sources(
        SourceSet::try_from(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]).expect("sources"),
    );
    set
}

fn encode(routes: &RouteSet) -> (usize, usize) {
    let prepared = Controller::new()
        .prepare(routes.clone(), LocalEndpoints::new())
        .expect("plans");
    let mut bytes = 0;
    for chunk in prepared.updates.chunks(WRITE_UPDATES_MAX) {
        let request = WriteRequest {
            device_id: 1,
            updates: chunk.to_vec(),
            ..Default::default()
        };
        bytes += request.encode_to_vec().len();
    }
    (prepared.updates.len(), bytes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for n in [1_000u32, 100_000] {
        let routes = generation(n, 1, 0);
        let t = Instant::now();
        let (updates, bytes) = encode(&routes);
        let encode_time = t.elapsed();

        let server = TestServer::start(&[]);
        let port = server.port();
        let (push_time, diff_time, diff_updates) = runtime.block_on(async {
            let mut client = P4Client::connect(P4Config {
                target: format!("127.0.0.1:{port}"),
                device_id: 1,
                election_id: 1,
                device_config: Vec::new(),
                rpc_timeout: Duration::from_secs(600),
            })
            .await
            .expect("connect");
            client.set_pipeline().await.expect("pipeline");
            let t = Instant::now();
            client
                .push(routes.clone(), LocalEndpoints::new())
                .await
                .expect("push");
            let push_time = t.elapsed();
            let moved = generation(n, 2, 100);
            let before = client.installed();
            let diff_updates = before
                .diff(&before.plan(&moved, &LocalEndpoints::new()).expect("plans"))
                .len();
            let t = Instant::now();
            client
                .push(moved, LocalEndpoints::new())
                .await
                .expect("diff push");
            (push_time, t.elapsed(), diff_updates)
        });
        drop(server);
        println!(
            "{n:>7} routes: {updates} updates, {:.1} MB encoded | encode {:>8.1} ms \
             ({:.2} µs/update) | push {:>9.1} ms ({:.1} µs/update) | diff of 1 %: \
             {diff_updates} updates, {:.1} ms",
            bytes as f64 / 1e6,
            encode_time.as_secs_f64() * 1e3,
            encode_time.as_secs_f64() * 1e6 / updates as f64,
            push_time.as_secs_f64() * 1e3,
            push_time.as_secs_f64() * 1e6 / updates as f64,
            diff_time.as_secs_f64() * 1e3,
        );
    }
}
