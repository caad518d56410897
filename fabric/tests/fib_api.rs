//! The forwarding table through the admin API of real node processes: a static route is
//! compiled into a table generation; when a next hop's node is SIGKILLed, membership declares it
//! down and the table compiler installs a generation without it (failover); rollback; bad input;
//! routes survive a restart.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEY: &str = "000102030405060708090a0b0c0d0e0f";

async fn fib_hops(node: &NodeProc) -> (u64, Vec<String>) {
    let fib = node.get("/v1/fib").await;
    let generation = fib["generation"].as_u64().expect("generation");
    let hops = fib["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["key"] == KEY)
        .map(|e| {
            e["next_hops"]
                .as_array()
                .expect("hops")
                .iter()
                .map(|h| h["node"].as_str().expect("node").to_owned())
                .collect()
        })
        .unwrap_or_default();
    (generation, hops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_route_fails_over_when_a_next_hop_dies() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = start_cluster(dir.path(), 3, &fast_config("")).await;
    let http = reqwest::Client::new();
    let id = |v: &Value| v["id"].as_str().expect("id").to_owned();
    let n2 = id(&nodes[1].get("/v1/node").await);
    let n3 = id(&nodes[2].get("/v1/node").await);
    let put = http
        .put(format!("{}/v1/routes/{KEY}", nodes[0].admin))
        .json(&json!({"next_hops": [
            {"node": n2, "addr": "127.0.0.1:9001", "weight": 1},
            {"node": n3, "addr": "127.0.0.1:9002", "weight": 3},
        ]}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 200);
    let g1 = put.json::<Value>().await.expect("json")["generation"]
        .as_u64()
        .expect("generation");
    assert!(g1 >= 1);
    let (g, hops) = fib_hops(&nodes[0]).await;
    assert_eq!(g, g1);
    assert_eq!(hops.len(), 2, "both next hops live");

    // Kill n3: once membership says down, the table drops it.
    nodes[2].sigkill();
    let killed = Instant::now();
    let deadline = detection_bound(3) + Duration::from_secs(3);
    let g2 = loop {
        let (g, hops) = fib_hops(&nodes[0]).await;
        if hops == vec![n2.clone()] {
            break g;
        }
        assert!(
            killed.elapsed() < deadline,
            "no failover: generation {g}, hops {hops:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(g2 > g1, "a new generation");
    let routes = nodes[0].get("/v1/routes").await;
    assert_eq!(routes["routes"][0]["live"], 1);
    assert_eq!(
        routes["routes"][0]["next_hops"].as_array().map(Vec::len),
        Some(2)
    );
    let metrics = nodes[0].metrics().await;
    assert!(
        metrics.contains(&format!("nexus_fib_generation {g2}")),
        "{metrics}"
    );

    // Rollback returns to the previous generation once; a second rollback has nothing.
    let rb = http
        .post(format!("{}/v1/fib/rollback", nodes[0].admin))
        .send()
        .await
        .expect("rollback");
    assert_eq!(rb.status().as_u16(), 200);
    assert_eq!(rb.json::<Value>().await.expect("json")["generation"], g1);
    assert_eq!(
        fib_hops(&nodes[0]).await,
        (g1, vec![n2.clone(), n3.clone()]).into_sorted()
    );
    let again = http
        .post(format!("{}/v1/fib/rollback", nodes[0].admin))
        .send()
        .await
        .expect("rollback");
    assert_eq!(again.status().as_u16(), 409);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["type"], "urn:nexus:problem:no-previous-generation");

    // Routes persist across a restart of the node.
    let data_dir = nodes[0].data_dir.clone();
    nodes[0].sigterm();
    assert_eq!(nodes[0].wait_exit(Duration::from_secs(10)).code(), Some(0));
    let seed = nodes[1].gossip.clone();
    nodes[0] = start_node("n1", &data_dir, &[&seed], &fast_config(""), None);
    let routes = nodes[0].get("/v1/routes").await;
    assert_eq!(routes["routes"][0]["key"], KEY, "{routes}");
}

trait IntoSorted {
    fn into_sorted(self) -> Self;
}

impl IntoSorted for (u64, Vec<String>) {
    fn into_sorted(mut self) -> Self {
        self.1.sort();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start_node("n1", &dir.path().join("n1"), &[], &fast_config(""), None);
    let me = node.get("/v1/node").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let http = reqwest::Client::new();
    let put = |key: &str, body: Value| {
        http.put(format!("{}/v1/routes/{key}", node.admin))
            .json(&body)
            .send()
    };
    let hop =
        |node: &str, addr: &str, weight: u32| json!({"node": node, "addr": addr, "weight": weight});
    let cases = [
        (
            "nothex",
            json!({"next_hops": [hop(&me, "127.0.0.1:1", 1)]}),
            400,
            "bad-routing-key",
        ),
        (
            KEY,
            json!({"next_hops": [hop("abc", "127.0.0.1:1", 1)]}),
            422,
            "invalid-route",
        ),
        (
            KEY,
            json!({"next_hops": [hop(&me, "nowhere", 1)]}),
            422,
            "invalid-route",
        ),
        (
            KEY,
            json!({"next_hops": [hop(&me, "127.0.0.1:1", 0)]}),
            422,
            "invalid-route",
        ),
        (KEY, json!({"next_hops": []}), 422, "invalid-route"),
        (
            KEY,
            json!({"next_hops": [{"node": &me, "addr": "127.0.0.1:1", "weight": 1, "rewrite": "xyz"}]}),
            422,
            "invalid-route",
        ),
        (
            KEY,
            json!({"next_hops": [], "extra": 1}),
            422,
            "invalid-body",
        ),
    ];
    for (key, body, status, kind) in cases {
        let r = put(key, body.clone()).await.expect("send");
        assert_eq!(r.status().as_u16(), status, "{key} {body}");
        let p: Value = r.json().await.expect("problem");
        assert_eq!(p["type"], format!("urn:nexus:problem:{kind}"), "{p}");
    }
    let too_many: Vec<Value> = (0..65)
        .map(|i| hop(&me, &format!("127.0.0.1:{}", 1000 + i), 1))
        .collect();
    let r = put(KEY, json!({"next_hops": too_many}))
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 422);
    let malformed = http
        .put(format!("{}/v1/routes/{KEY}", node.admin))
        .header("content-type", "application/json")
        .body("{\"next_hops\": [")
        .send()
        .await
        .expect("send");
    assert_eq!(malformed.status().as_u16(), 400);
    let missing = http
        .delete(format!("{}/v1/routes/{KEY}", node.admin))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status().as_u16(), 404);
    // Nothing was stored or installed.
    assert_eq!(node.get("/v1/routes").await["routes"], json!([]));
    let fib = node.get("/v1/fib").await;
    assert_eq!(fib["routes"], 0);
    // A route to this node itself is live at once; deleting it installs an empty table again.
    let ok = put(KEY, json!({"next_hops": [hop(&me, "127.0.0.1:1", 1)]}))
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(node.get("/v1/fib").await["routes"], 1);
    // A next hop may rewrite the routing key (label swap); the table shows it.
    let rewrite = format!("{:032x}", 0xfeedu128);
    let ok = put(
        KEY,
        json!({"next_hops": [{"node": &me, "addr": "127.0.0.1:1", "weight": 1, "rewrite": &rewrite}]}),
    )
    .await
    .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    let fib = node.get("/v1/fib").await;
    assert_eq!(
        fib["entries"][0]["next_hops"][0]["rewrite"],
        rewrite.as_str(),
        "{fib}"
    );
    let del = http
        .delete(format!("{}/v1/routes/{KEY}", node.admin))
        .send()
        .await
        .expect("send");
    assert_eq!(del.status().as_u16(), 200);
    assert_eq!(node.get("/v1/fib").await["routes"], 0);
    let bad_limit = http
        .get(format!("{}/v1/fib?limit=lots", node.admin))
        .send()
        .await
        .expect("send");
    assert_eq!(bad_limit.status().as_u16(), 400);
}
