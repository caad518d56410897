//! NexLink frames through a real node's data plane: frames sent to node 1 follow its static
//! route to next hops on nodes 2 and 3 (split per flow, hop limit decremented); when node 3 is
//! SIGKILLed, membership declares it down, the table compiler installs a generation without it,
//! and every later frame goes to node 2's next hop. Every frame is accounted for.
//!
//! The same run checks that node 1's data plane forwards only for the fabric: frames from a
//! socket on an IP that is no member's data plane (127.0.0.2) are dropped and counted as
//! `source_not_allowed`, frames from node 3's data-plane IP (127.0.0.4) are forwarded while
//! node 3 is a member and dropped once it is declared down.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEY: u128 = 0x00112233_44556677_8899aabb_ccddeeff;

fn frame(session: u64, seq: u32) -> Vec<u8> {
    nexus_fabric::ctl::data_frame(KEY, session, seq, 4, 8).expect("valid frame")
}

/// (session, hop limit) of every frame the sink received.
fn flows(sink: &Sink) -> Vec<(u64, u8)> {
    sink.drain()
        .iter()
        .map(|r| (r.session.0, r.hop_limit.get()))
        .collect()
}

/// Routes in the node's installed table.
async fn fib_routes(node: &NodeProc) -> u64 {
    node.get("/v1/fib").await["routes"]
        .as_u64()
        .expect("routes")
}

/// Every frame that reached either sink.
fn drained(sinks: [&Sink; 2]) -> Vec<(u64, u8)> {
    sinks.iter().flat_map(|sink| flows(sink)).collect()
}

async fn live_hops(node: &NodeProc) -> usize {
    let fib = node.get("/v1/fib").await;
    fib["entries"]
        .as_array()
        .and_then(|e| e.first())
        .and_then(|e| e["next_hops"].as_array())
        .map(Vec::len)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_follow_the_table_and_fail_over_portable() {
    frames_follow_the_table_and_fail_over("portable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_follow_the_table_and_fail_over_io_uring() {
    frames_follow_the_table_and_fail_over("io_uring").await;
}

async fn frames_follow_the_table_and_fail_over(backend: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = fast_config("");
    let mut nodes = vec![start_node(
        "n1",
        &dir.path().join("n1"),
        &[],
        &format!("dataplane = \"127.0.0.1:0\"\ndataplane_backend = \"{backend}\"\n{config}"),
        None,
    )];
    assert!(
        nodes[0].logs().contains(&format!(
            "\"dataplane_backend\":\"{}\"",
            match backend {
                "io_uring" => "IoUring",
                _ => "Portable",
            }
        )),
        "{}",
        nodes[0].logs()
    );
    let seed = nodes[0].gossip.clone();
    // Nodes 2 and 3 run data planes on IPs of their own, so that node 1 tells their frames
    // apart from its own and from a stranger's (Linux routes all of 127.0.0.0/8 to lo).
    for (i, ip) in [(2, "127.0.0.3"), (3, "127.0.0.4")] {
        nodes.push(start_node(
            &format!("n{i}"),
            &dir.path().join(format!("n{i}")),
            &[&seed],
            &format!("[dataplane]\nlisten = \"{ip}:0\"\n{config}"),
            None,
        ));
    }
    for n in &nodes {
        n.wait_alive(3, Duration::from_secs(20)).await;
    }
    assert_ne!(nodes[0].dataplane, "off");
    let node_json = nodes[0].get("/v1/node").await;
    assert_eq!(node_json["dataplane"], nodes[0].dataplane.as_str());

    let (sink2, sink3) = (Sink::new(), Sink::new());
    let id = |v: Value| v["id"].as_str().expect("id").to_owned();
    let (n2, n3) = (
        id(nodes[1].get("/v1/node").await),
        id(nodes[2].get("/v1/node").await),
    );
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/v1/routes/{KEY:032x}", nodes[0].admin))
        .json(&json!({"next_hops": [
            {"node": n2, "addr": sink2.addr(), "weight": 1},
            {"node": n3, "addr": sink3.addr(), "weight": 1},
        ]}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 200);

    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    let dataplane = nodes[0].dataplane.clone();
    let send_flows = |first: u64, count: u64| {
        for session in first..first + count {
            client
                .send_to(&frame(session, session as u32), dataplane.as_str())
                .expect("send");
            // Loopback drops nothing at this pace.
            std::thread::sleep(Duration::from_micros(200));
        }
    };

    // 200 flows: split across both next hops, each flow whole on one side.
    send_flows(0, 200);
    let (a, b) = (flows(&sink2), flows(&sink3));
    assert_eq!(
        a.len() + b.len(),
        200,
        "every frame forwarded: {} + {}",
        a.len(),
        b.len()
    );
    assert!(
        a.len() > 40 && b.len() > 40,
        "split by flow: {} / {}",
        a.len(),
        b.len()
    );
    assert!(
        a.iter().chain(&b).all(|(_, hop)| *hop == 7),
        "hop limit decremented once"
    );

    // Only the fabric's sources. Node 1's table has the session routes of nodes 2 and 3 (read
    // from the same member list as the allowed sources, so then 127.0.0.3 and 127.0.0.4 are
    // allowed too) besides the static route.
    let waited = Instant::now();
    while fib_routes(&nodes[0]).await != 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no session routes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stranger = UdpSocket::bind("127.0.0.2:0").expect("a socket on no member's IP");
    let from_n3 = UdpSocket::bind("127.0.0.4:0").expect("a socket on node 3's data-plane IP");
    let send_from = |socket: &UdpSocket, first: u64, count: u64| {
        for session in first..first + count {
            socket
                .send_to(&frame(session, 0), dataplane.as_str())
                .expect("send");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    send_from(&stranger, 300, 20);
    send_from(&from_n3, 400, 20);
    let got = drained([&sink2, &sink3]);
    assert_eq!(got.len(), 20, "only node 3's frames forwarded: {got:?}");
    assert!(got.iter().all(|(session, _)| (400..420).contains(session)));
    let mut source_not_allowed = 20;
    let mut forwarded = 200 + 20;

    // Kill node 3; the table drops its next hop and new frames all go to node 2's.
    nodes[2].sigkill();
    let killed = Instant::now();
    while live_hops(&nodes[0]).await != 1 {
        assert!(
            killed.elapsed() < detection_bound(3) + Duration::from_secs(3),
            "no failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_flows(1000, 200);
    let (a, b) = (flows(&sink2), flows(&sink3));
    assert_eq!(
        (a.len(), b.len()),
        (200, 0),
        "all traffic on the surviving next hop"
    );
    forwarded += 200;

    // Once node 3 is declared down, the next generation (within one table refresh, half a
    // probe period) no longer allows its IP: probe one frame at a time until one is dropped,
    // then nothing more from 127.0.0.4 gets through.
    while nodes[0].state_of(&nodes[2].gossip).await.as_deref() != Some("down") {
        assert!(
            killed.elapsed() < detection_bound(3) + Duration::from_secs(3),
            "node 3 never declared down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut session = 2000;
    loop {
        send_from(&from_n3, session, 1);
        session += 1;
        let got = drained([&sink2, &sink3]).len();
        if got == 0 {
            source_not_allowed += 1;
            break;
        }
        forwarded += got;
        assert!(
            killed.elapsed() < detection_bound(3) + Duration::from_secs(5),
            "node 3's IP still allowed after it was declared down"
        );
    }
    send_from(&from_n3, 3000, 20);
    source_not_allowed += 20;
    assert_eq!(drained([&sink2, &sink3]), vec![], "node 3 is down");

    // `nexus ctl send` builds and sends frames the same way an operator would.
    let out = nexus()
        .args([
            "ctl",
            "send",
            "--to",
            &dataplane,
            "--key",
            &format!("{KEY:032x}"),
            "--count",
            "50",
        ])
        .output()
        .expect("ctl send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent 50 frame(s)"));
    let (a, b) = (flows(&sink2), flows(&sink3));
    assert_eq!((a.len(), b.len()), (50, 0));
    forwarded += 50;
    let bad = nexus()
        .args(["ctl", "send", "--to", &dataplane, "--key", "xyz"])
        .output()
        .expect("ctl send");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a routing key"));

    // The node's metrics count what its data plane did (exported once a second).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains(&format!("nexus_dataplane_forwarded_total {forwarded}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "nexus_dataplane_dropped_total{{reason=\"source_not_allowed\"}} {source_not_allowed}\n"
        )),
        "{metrics}"
    );

    // A malformed datagram is dropped and counted by reason.
    client
        .send_to(b"not a nexlink frame", nodes[0].dataplane.as_str())
        .expect("send");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains("nexus_dataplane_dropped_total{reason=\"truncated\"} 1"),
        "{metrics}"
    );
}
