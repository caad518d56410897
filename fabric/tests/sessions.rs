//! NexStream sessions between real node processes, through their data planes: three CA voters
//! (v1 and v2 with data planes, v3 without), each holding its node MIC. Probes from v1 to v2
//! exchange messages in all four delivery modes; both nodes list the session with the peer's
//! MIC serial; the frames crossed the forwarders. Revoking v1's MIC closes the live session at
//! v2 and refuses new ones; bad probes get problems naming the field.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod ca_common;
mod common;

use std::time::Duration;

use ca_common::{CA_TIMINGS, eventually, get, http, post, wait_bootstrapped};
use common::{NodeProc, fast_config, start_node};
use serde_json::{Value, json};

fn config(dataplane: bool) -> String {
    let dp = if dataplane {
        "dataplane = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        "{dp}{}",
        fast_config(&format!(
            "[stream]\nhello_timeout_ms = 3000\n[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}"
        ))
    )
}

async fn node_mic(c: &reqwest::Client, node: &NodeProc) -> Value {
    eventually(Duration::from_secs(30), "node MIC", || async {
        let (status, body) = get(c, &format!("{}/v1/node/mic", node.admin)).await;
        (status == 200).then_some(body)
    })
    .await
}

async fn probe(c: &reqwest::Client, node: &NodeProc, body: Value) -> (u16, Value) {
    post(c, &format!("{}/v1/sessions/probe", node.admin), &body).await
}

async fn sessions(c: &reqwest::Client, node: &NodeProc) -> Vec<Value> {
    let (status, body) = get(c, &format!("{}/v1/sessions", node.admin)).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"].as_array().cloned().unwrap_or_default()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_modes_between_nodes_and_revocation_closes_the_session() {
    let root = tempfile::tempdir().expect("tmp");
    let c = http();
    let v1 = start_node("v1", &root.path().join("v1"), &[], &config(true), None);
    let seed = v1.gossip.clone();
    let v2 = start_node("v2", &root.path().join("v2"), &[&seed], &config(true), None);
    let v3 = start_node(
        "v3",
        &root.path().join("v3"),
        &[&seed],
        &config(false),
        None,
    );
    wait_bootstrapped(&c, &v1, Duration::from_secs(60)).await;
    let mic1 = node_mic(&c, &v1).await;
    let mic2 = node_mic(&c, &v2).await;
    let serial1 = mic1["serial"].as_u64().expect("serial");
    let serial2 = mic2["serial"].as_u64().expect("serial");
    let v2_id = v2.get("/v1/node").await["id"]
        .as_str()
        .expect("node id")
        .to_owned();

    // The session actor receives the node MIC with the next trust update; until then peers
    // refuse it (mic_missing). Retry the first probe until it is accepted.
    let first = eventually(Duration::from_secs(20), "first probe accepted", || async {
        let (status, body) = probe(
            &c,
            &v1,
            json!({"peer": "v2", "mode": "ro", "count": 20, "bytes": 1000}),
        )
        .await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(first["received"], 20, "{first}");
    assert_eq!(first["peer"], v2_id);

    // All four modes on the same session. Datagrams are not retransmitted: on a loaded machine
    // the sockets of two forwarders and two session endpoints may drop some of a burst, so the
    // datagram modes must get most, not all, of their answers.
    let (status, ru) = probe(
        &c,
        &v1,
        json!({"peer": v2_id, "mode": "ru", "count": 8, "bytes": 200_000}),
    )
    .await;
    assert_eq!((status, ru["received"].as_u64()), (200, Some(8)), "{ru}");
    assert_eq!(ru["session"], first["session"], "one session per peer");
    let (status, be) = probe(
        &c,
        &v1,
        json!({"peer": "v2", "mode": "be", "count": 50, "bytes": 300}),
    )
    .await;
    assert_eq!(status, 200, "{be}");
    assert!(
        be["received"].as_u64().unwrap_or(0) >= 25,
        "best-effort on loopback: {be}"
    );
    let (status, be_large) = probe(
        &c,
        &v1,
        json!({"peer": "v2", "mode": "be", "count": 4, "bytes": 6000}),
    )
    .await;
    assert_eq!(
        (status, be_large["received"].as_u64()),
        (200, Some(4)),
        "large best-effort goes on streams: {be_large}"
    );
    let (status, pr) = probe(
        &c,
        &v1,
        json!({"peer": "v2", "mode": "pr", "count": 50, "bytes": 300, "probability": 1.0}),
    )
    .await;
    assert_eq!(status, 200, "{pr}");
    assert!(
        pr["received"].as_u64().unwrap_or(0) >= 25,
        "probabilistic p = 1: {pr}"
    );

    // Both ends list the session with the peer's MIC serial and per-mode counters.
    let out = sessions(&c, &v1).await;
    let s = out
        .iter()
        .find(|s| s["peer_name"] == "v2")
        .expect("v1 lists v2");
    assert_eq!(
        (s["client"].as_bool(), s["established"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(s["mic_serial"].as_u64(), Some(serial2));
    assert!(s["modes"]["ro"]["sent"].as_u64().unwrap_or(0) >= 20, "{s}");
    assert!(s["modes"]["ru"]["sent"].as_u64().unwrap_or(0) >= 8, "{s}");
    assert!(s["rtt_us"].as_u64().unwrap_or(0) > 0, "{s}");
    let inbound = sessions(&c, &v2).await;
    let s = inbound
        .iter()
        .find(|s| s["peer_name"] == "v1")
        .expect("v2 lists v1");
    assert_eq!(
        (s["client"].as_bool(), s["mic_serial"].as_u64()),
        (Some(false), Some(serial1))
    );
    assert!(
        s["modes"]["ro"]["delivered"].as_u64().unwrap_or(0) >= 20,
        "{s}"
    );

    // The frames went through both data planes (counters are exported once a second).
    for node in [&v1, &v2] {
        eventually(
            Duration::from_secs(5),
            "frames forwarded and delivered",
            || async {
                let m = node.metrics().await;
                let seen = metric(&m, "nexus_dataplane_forwarded_total") > 0.0
                    && metric(&m, "nexus_dataplane_delivered_local_total") > 0.0
                    && metric(&m, "nexus_stream_messages_total") > 0.0;
                seen.then_some(())
            },
        )
        .await;
    }

    // The CLI shows the session.
    let out = common::nexus()
        .args(["ctl", "--admin", &v1.admin, "sessions"])
        .output()
        .expect("ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("established") && text.contains("v2"),
        "{text}"
    );

    // Bad probes.
    let (status, body) = probe(&c, &v1, json!({"peer": "v2", "mode": "tcp"})).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("urn:nexus:problem:invalid-probe")),
        "{body}"
    );
    let (status, body) = probe(&c, &v1, json!({"peer": "v2", "mode": "ro", "count": 0})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = probe(&c, &v1, json!({"peer": "nobody", "mode": "ro"})).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("urn:nexus:problem:unknown-peer")),
        "{body}"
    );
    // v3 runs no data plane: not a session peer, and it has no sessions itself.
    let (status, body) = probe(&c, &v1, json!({"peer": "v3", "mode": "ro"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&c, &format!("{}/v1/sessions", v3.admin)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("urn:nexus:problem:no-dataplane")),
        "{body}"
    );

    // Revoke v1's MIC: v2 closes its live session to v1 and refuses new ones.
    let (status, body) = post(
        &c,
        &format!("{}/v1/ca/certs/{serial1}/revoke", v2.admin),
        &json!({"reason": "key_compromise"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(10),
        "v2 closes the session of the revoked key",
        || async {
            let open = sessions(&c, &v2).await;
            (!open
                .iter()
                .any(|s| s["peer_name"] == "v1" && s["established"] == true))
            .then_some(())
        },
    )
    .await;
    let (status, body) = probe(&c, &v1, json!({"peer": "v2", "mode": "ro", "count": 1})).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (502, Some("urn:nexus:problem:session-refused")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("mic_revoked"),
        "{body}"
    );
    // Exported on the session actor's next tick.
    eventually(Duration::from_secs(5), "refusals counted", || async {
        (metric(&v2.metrics().await, "nexus_stream_refused_total") >= 1.0).then_some(())
    })
    .await;
}
