//! Three real node processes on loopback: join through a seed, detect a SIGKILLed node within
//! the bound that follows from the configured timers, rejoin after restart with the same node id
//! and a higher incarnation, and a graceful leave on SIGTERM.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_detect_restart_rejoin() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = fast_config("");
    let mut nodes = start_cluster(dir.path(), 3, &config).await;

    let victim_before = nodes[2].get("/v1/node").await;
    let victim_id = victim_before["id"].as_str().expect("id").to_owned();
    let victim_addr = nodes[2].gossip.clone();
    assert_eq!(victim_before["incarnation"], 1);

    // SIGKILL the third node; the other two must report it down within the bound.
    nodes[2].sigkill();
    let killed_at = Instant::now();
    let bound = detection_bound(3);
    // Polling and process scheduling on a loaded 2-core machine add latency the protocol bound
    // does not include; allow a fixed margin on top of it.
    let margin = Duration::from_secs(2);
    let mut detected = [None, None];
    while detected.iter().any(Option::is_none) {
        for (i, node) in nodes[..2].iter().enumerate() {
            if detected[i].is_none() && node.state_of(&victim_addr).await.as_deref() == Some("down")
            {
                detected[i] = Some(killed_at.elapsed());
            }
        }
        assert!(
            killed_at.elapsed() <= bound + margin,
            "not detected within {bound:?} (+{margin:?}): {detected:?}\n{:#?}",
            nodes[0].members().await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("detection after SIGKILL: {detected:?} (bound {bound:?})");
    assert!(
        nodes[0].logs().contains("member down"),
        "one log line per membership change"
    );

    // Restart on the same data dir: same node id, higher incarnation, and everyone sees it alive.
    let data_dir = nodes[2].data_dir.clone();
    let seed = nodes[0].gossip.clone();
    nodes[2] = start_node("n3", &data_dir, &[&seed], &config, None);
    let after = nodes[2].get("/v1/node").await;
    assert_eq!(after["id"], victim_id, "node id is stable across restarts");
    assert!(
        after["incarnation"].as_u64() > Some(1),
        "incarnation grows: {after}"
    );
    for node in &nodes {
        let members = node.wait_alive(3, Duration::from_secs(10)).await;
        let row = members
            .iter()
            .find(|m| m["id"] == victim_id)
            .expect("restarted node listed");
        assert_eq!(row["incarnation"], after["incarnation"]);
        assert_eq!(members.len(), 3, "one row per node id: {members:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_gracefully() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = start_cluster(dir.path(), 3, &fast_config("")).await;
    let leaver = nodes[1].gossip.clone();
    nodes[1].sigterm();
    let status = nodes[1].wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a graceful leave exits 0");
    assert!(nodes[1].logs().contains("left the fabric"));
    let deadline = Instant::now() + detection_bound(3) + Duration::from_secs(2);
    loop {
        let a = nodes[0].state_of(&leaver).await;
        let b = nodes[2].state_of(&leaver).await;
        if a.as_deref() == Some("left") && b.as_deref() == Some("left") {
            break;
        }
        assert!(Instant::now() < deadline, "leave not seen: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn demo_brings_up_three_nodes_and_stops_them() {
    // Find three free consecutive admin ports (retry a few bases; ports are checked by binding).
    let base = (0..20)
        .find_map(|_| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let base = probe.local_addr().ok()?.port();
            drop(probe);
            let ok = (0..3).all(|i| {
                base.checked_add(i)
                    .and_then(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
                    .is_some()
            });
            ok.then_some(base)
        })
        .expect("three free ports");
    let out = nexus()
        .args([
            "demo",
            "--exit-when-ready",
            "--admin-base-port",
            &base.to_string(),
        ])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every node sees 3 alive members"),
        "{stdout}"
    );
    for name in ["node-1", "node-2", "node-3"] {
        assert!(stdout.contains(name), "{stdout}");
    }
    assert_eq!(stdout.matches("  alive  ").count(), 3, "{stdout}");
    // Services were advertised fabric-wide and resolved; frames reached the two matching
    // services, and after a crash of one's node, only the other.
    // NexTrust: a MIC-credentialed service resolves under an attestation constraint, and
    // after its MIC is revoked node-3 excludes it, saying why.
    assert!(stdout.contains("issued model MIC serial"), "{stdout}");
    assert!(
        stdout.contains("node-3 excludes coder-attested"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("excluded coder-attested") && l.contains("revoked")),
        "{stdout}"
    );
    assert!(stdout.contains("node-3 sees all 6 services"), "{stdout}");
    assert!(stdout.contains("excluded coder-small"), "{stdout}");
    let counts: Vec<usize> = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with(" frames"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 6, "two rounds of three services: {stdout}");
    assert_eq!(counts[..3].iter().sum::<usize>(), 100, "{stdout}");
    assert_eq!(counts[2], 0, "coder-small never matches: {stdout}");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both matches get flows: {stdout}"
    );
    assert!(stdout.contains("failed over after"), "{stdout}");
    // After the failover every flow reaches coder-deepseek (sorted first by id).
    assert_eq!(counts[3..], [100, 0, 0], "{stdout}");
    // NexAPI: the sample model on node-1 streamed every word of the prompt back to a client on
    // node-3, in order, then its END.
    assert!(stdout.contains("NexAPI: service demo-chat"), "{stdout}");
    assert!(
        stdout.contains(
            "tokens travel from one node to another as they are generated, each one sent the \
             moment the model produces it"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("20 tokens, first after"), "{stdout}");
    // The nodes are gone: their admin ports are free again.
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::net::TcpListener::bind(("127.0.0.1", base)).is_ok());
}
