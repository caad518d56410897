//! Frames addressed to a capability, end to end through real node processes: services on nodes
//! 2 and 3 register (with UDP ports where test sinks listen); a client on node 1 resolves an
//! intent and sends NexLink frames carrying the intent's routing key to node 1's data plane.
//! Node 1's table holds the intent route (compiled by the registry, installed by the table
//! compiler): each flow goes to one of the two nodes' data planes with the key rewritten to that
//! service's key, and each node delivers it to its local service. When node 3 is SIGKILLed, the
//! route fails over and every later frame reaches node 2's service.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// (session, routing key) of every frame the sink received.
fn frames(sink: &Sink) -> Vec<(u64, u128)> {
    sink.drain()
        .iter()
        .map(|r| (r.session.0, r.routing_key.0))
        .collect()
}

async fn installed_hops(node: &NodeProc, key: &str) -> usize {
    let fib = node.get("/v1/fib").await;
    fib["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["key"] == key)
        .and_then(|e| e["next_hops"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_a_capability_and_fail_over() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = format!(
        "dataplane = \"127.0.0.1:0\"\n{}",
        fast_config("[registry]\nrefresh_ms = 100\nanti_entropy_ms = 500\n")
    );
    let mut nodes = start_cluster(dir.path(), 3, &config).await;
    let (sink2, sink3) = (Sink::new(), Sink::new());
    for (node, id, sink) in [
        (&nodes[1], "coder-b", &sink2),
        (&nodes[2], "coder-c", &sink3),
    ] {
        node.post_ok(
            "/v1/services",
            &json!({"id": id, "tasks": ["llm.code"], "context_window": 131072,
                    "latency_ms_p50": 100, "latency_ms_p99": 150, "price_micros_per_1k": 100,
                    "endpoint": {"port": sink.port()}}),
        )
        .await;
    }

    // Resolve on node 1 until both services are candidates; that also makes node 1 track the
    // intent class and install its route.
    let intent = json!({"task": "llm.code", "min_context": 100000, "k": 2});
    let started = Instant::now();
    let key = loop {
        let r = nodes[0].post_ok("/v1/resolve", &intent).await;
        let key = r["routing_key"].as_str().expect("key").to_owned();
        if r["candidates"].as_array().map(Vec::len) == Some(2)
            && installed_hops(&nodes[0], &key).await == 2
        {
            break key;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no intent route with two hops on node 1: {r}\n{}",
            nodes[0].get("/v1/fib").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let routes = nodes[0].get("/v1/intent-routes").await;
    assert!(
        routes["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r["key"] == key.as_str()),
        "{routes}"
    );
    let members = nodes[0].members().await;
    assert!(
        members.iter().all(|m| m["meta"]["dataplane"].is_string()),
        "every member advertises its data plane: {members:?}"
    );

    let class_key = u128::from_str_radix(&key, 16).expect("hex key");
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    let dataplane = nodes[0].dataplane.clone();
    let send_flows = |first: u64, count: u64| {
        for session in first..first + count {
            let frame = nexus_fabric::ctl::data_frame(class_key, session, session as u32, 8, 8)
                .expect("frame");
            client.send_to(&frame, dataplane.as_str()).expect("send");
            std::thread::sleep(Duration::from_micros(300));
        }
    };

    send_flows(0, 200);
    let (b, c) = (frames(&sink2), frames(&sink3));
    assert_eq!(
        b.len() + c.len(),
        200,
        "every frame delivered: {} + {}",
        b.len(),
        c.len()
    );
    assert!(
        b.len() > 30 && c.len() > 30,
        "split by flow: {} / {}",
        b.len(),
        c.len()
    );
    // Each frame arrives carrying its service's key, not the class key.
    let key_b = b[0].1;
    let key_c = c[0].1;
    assert!(key_b != class_key && key_c != class_key && key_b != key_c);
    assert!(b.iter().all(|(_, k)| *k == key_b) && c.iter().all(|(_, k)| *k == key_c));

    // Node 3 dies: the route fails over to node 2's service.
    nodes[2].sigkill();
    let killed = Instant::now();
    while installed_hops(&nodes[0], &key).await != 1 {
        assert!(
            killed.elapsed() < detection_bound(3) + Duration::from_secs(3),
            "no failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("failover after {:?}", killed.elapsed());
    send_flows(1000, 200);
    let (b, c) = (frames(&sink2), frames(&sink3));
    assert_eq!(
        (b.len(), c.len()),
        (200, 0),
        "all traffic to the surviving service"
    );
    // `nexus ctl send --task` resolves through the admin API and sends to the intent's key.
    let out = nexus()
        .args([
            "ctl",
            "--admin",
            &nodes[0].admin,
            "send",
            "--to",
            &dataplane,
        ])
        .args([
            "--task",
            "llm.code",
            "--min-context",
            "100000",
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&key), "prints the routing key: {stdout}");
    let (b, c) = (frames(&sink2), frames(&sink3));
    assert_eq!((b.len(), c.len()), (50, 0), "{stdout}");
    let metrics = nodes[1].metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nexus_dataplane_delivered_local_total") && !l.ends_with(" 0")),
        "node 2 counts local deliveries"
    );
}
