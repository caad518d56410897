//! A node with `dataplane_backend = "xdp"` attaches the XDP program to its data plane's
//! interface and feeds it every forwarding-table generation: on a veth bed the test creates and
//! removes (the node in the root namespace between a sender's and a sink's namespace), the
//! status in `GET /v1/dataplane/targets` shows the node's generation installed in the BPF maps,
//! and NexLink frames sent through the node are forwarded by the program (its counter), not by
//! the software forwarder.
//!
//! Needs a node built with the `xdp` feature (`cargo test -p nexus-fabric --features xdp --test
//! xdp_target`), root with CAP_SYS_ADMIN and CAP_NET_ADMIN, and `ip` and `ethtool`; otherwise
//! it prints `SKIPPED: <reason>` and passes.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

#[cfg(feature = "xdp")]
mod common;

/// The XDP target's own veth bed helpers: the capability and tool check, running `ip`, and
/// addressing an interface.
#[cfg(feature = "xdp")]
#[path = "../../nic-shim/tests/common/bed.rs"]
mod bed;

#[cfg(not(feature = "xdp"))]
#[test]
fn xdp_target() {
    eprintln!(
        "SKIPPED: the node is built without the xdp feature \
         (cargo test -p nexus-fabric --features xdp --test xdp_target)"
    );
}

#[cfg(feature = "xdp")]
mod xdp {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::bed::{address_up, run, tools_missing};
    use super::common::*;
    use serde_json::{Value, json};

    const KEY: &str = "0d0000000000000000000000000000d4";
    const IP_SENDER: &str = "10.78.1.2";
    const IP_NODE_IN: &str = "10.78.1.1";
    const IP_NODE_OUT: &str = "10.78.2.1";
    const IP_SINK: &str = "10.78.2.2";
    const MAC_SINK: &str = "02:4e:00:00:0d:02";

    /// Sender namespace ── veth ── node (root namespace) ── veth ── sink namespace; removed on
    /// drop, also when the test fails. Not nic-shim's three-namespace `bed::Bed`: the node runs
    /// in the root namespace, where this test reaches its admin API and its log.
    struct Bed {
        sender: String,
        sink: String,
        /// The node's interfaces (root namespace): toward the sender, toward the sink.
        node_in: String,
        node_out: String,
    }

    impl Drop for Bed {
        fn drop(&mut self) {
            for link in [&self.node_in, &self.node_out] {
                let _ = Command::new("ip")
                    .args(["link", "del", link])
                    .stderr(Stdio::null())
                    .status();
            }
            for ns in [&self.sender, &self.sink] {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    impl Bed {
        fn new() -> Bed {
            let id = std::process::id() % 100_000;
            let bed = Bed {
                sender: format!("nxws-{id}"),
                sink: format!("nxwd-{id}"),
                node_in: format!("nxw{id}i"),
                node_out: format!("nxw{id}o"),
            };
            for ns in [&bed.sender, &bed.sink] {
                run(&["ip", "netns", "add", ns]);
                run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            }
            for (node_if, ns, ip_node, ip_peer, mac) in [
                (&bed.node_in, &bed.sender, IP_NODE_IN, IP_SENDER, None),
                (
                    &bed.node_out,
                    &bed.sink,
                    IP_NODE_OUT,
                    IP_SINK,
                    Some(MAC_SINK),
                ),
            ] {
                let mut add = vec![
                    "ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0",
                ];
                if let Some(mac) = mac {
                    add.extend(["address", mac]);
                }
                add.extend(["netns", ns]);
                run(&add);
                run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{ip_node}/24"),
                    "dev",
                    node_if,
                ]);
                run(&["ip", "link", "set", node_if, "up"]);
                address_up(ns, "eth0", ip_peer);
            }
            // Partial checksums would reach XDP unfinished: the sender computes them.
            run(&[
                "ip",
                "netns",
                "exec",
                &bed.sender,
                "ethtool",
                "-K",
                "eth0",
                "tx",
                "off",
            ]);
            // The node knows the sink's MAC, so XDP takes the next hop from the first install.
            run(&[
                "ip",
                "neigh",
                "replace",
                IP_SINK,
                "lladdr",
                MAC_SINK,
                "dev",
                &bed.node_out,
                "nud",
                "permanent",
            ]);
            bed
        }
    }

    async fn xdp_target(node: &NodeProc) -> Value {
        let answer = node.get("/v1/dataplane/targets").await;
        let targets = answer["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{answer}");
        assert_eq!(targets[0]["target"], "xdp");
        targets[0].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_xdp_program_holds_the_nodes_table_and_forwards() {
        if let Some(why) = tools_missing() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        let bed = Bed::new();
        let dir = tempfile::tempdir().expect("tmp");
        let config = format!(
            "dataplane_backend = \"xdp\"\n{}",
            fast_config(&format!(
                "[dataplane]\nlisten = \"{IP_NODE_IN}:0\"\nxdp_interface = \"{}\"\n\
                 xdp_mode = \"generic\"\n# The sender is no member.\nsource_check = false\n",
                bed.node_in
            ))
        );
        let node = start_node("xdpn", &dir.path().join("n"), &[], &config, None);
        let port = node
            .dataplane
            .rsplit_once(':')
            .expect("dataplane addr")
            .1
            .to_owned();
        let id = node.get("/v1/node").await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let put = reqwest::Client::new()
            .put(format!("{}/v1/routes/{KEY}", node.admin))
            .json(&json!({"next_hops": [{"node": id, "addr": format!("{IP_SINK}:9999"), "weight": 1}]}))
            .send()
            .await
            .expect("PUT route");
        assert_eq!(put.status().as_u16(), 200);

        // The generation the node installed is the one in the BPF maps.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let fib = node.get("/v1/fib").await;
            let target = xdp_target(&node).await;
            if target["installed"] == fib["generation"] {
                break target;
            }
            assert!(
                Instant::now() < deadline,
                "not installed: {target} vs {fib}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status["connected"], true);
        assert_eq!(status["address"], bed.node_in);
        assert_eq!(status["last_error"], Value::Null, "{status}");

        // Frames from the sender's namespace to the node's data plane are forwarded by XDP.
        let frames = 50u64;
        let sent = Command::new("ip")
            .args(["netns", "exec", &bed.sender])
            .arg(env!("CARGO_BIN_EXE_nexus"))
            .args([
                "ctl",
                "send",
                "--to",
                &format!("{IP_NODE_IN}:{port}"),
                "--key",
                KEY,
            ])
            .args(["--count", &frames.to_string()])
            .output()
            .expect("run nexus ctl send in the sender's namespace");
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let target = xdp_target(&node).await;
            let forwarded = target["counters"]["forwarded"].as_u64().unwrap_or(0);
            if forwarded >= frames {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "XDP forwarded {forwarded} of {frames}: {target}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = node.metrics().await;
        assert!(
            metrics.contains("nexus_dataplane_target_generation{target=\"xdp\"}"),
            "{metrics}"
        );
        drop(node);
        drop(bed);
    }
}
