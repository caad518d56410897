//! `nexus demo`: a live 3-node fabric on loopback, as three real `nexus node run` processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::{Child, Command};

use std::collections::BTreeMap;

use crate::api::{FibDto, Members, Node, ResolveResponse, ServiceDto, Services};
use crate::ctl::{Client, members_table, resolve_table, services_table};

/// `nexus demo` flags.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// Admin port of the first node; node i uses base + i - 1.
    #[arg(long, default_value_t = 7701)]
    pub admin_base_port: u16,
    /// How long to wait for full membership, seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Exit once the fabric is up instead of serving until Ctrl-C (for scripts).
    #[arg(long)]
    pub exit_when_ready: bool,
}

struct DemoNode {
    name: String,
    admin: String,
    child: Child,
    log: PathBuf,
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        // Last resort if the graceful path did not run (e.g. an error): never leave strays.
        let _ = self.child.start_kill();
    }
}

/// CA voters the demo runs (its first nodes). Their Raft ports are picked by the system (port
/// 0) and advertised through gossip, so a busy port cannot stop the demo.
const DEMO_CA_VOTERS: u16 = 3;

async fn spawn_node(
    exe: &Path,
    dir: &Path,
    index: u16,
    admin_port: u16,
    seed: Option<&str>,
    ca_voter: bool,
) -> anyhow::Result<DemoNode> {
    let name = format!("node-{index}");
    let admin = format!("127.0.0.1:{admin_port}");
    let data_dir = dir.join(&name);
    // Every node takes part in NexTrust; the first three are CA voters (short Raft timings so the
    // demo's CA forms and fails over quickly on loopback).
    let config = dir.join(format!("{name}.toml"));
    let ca = if ca_voter {
        "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\nheartbeat_ms = 50\n\
         election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nrevocation_poll_ms = 1000\n"
            .to_owned()
    } else {
        "[ca]\nrevocation_poll_ms = 1000\n".to_owned()
    };
    std::fs::write(&config, ca).with_context(|| format!("writing {}", config.display()))?;
    let log = dir.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "node",
        "run",
        "--name",
        &name,
        "--bind",
        "127.0.0.1:0",
        "--admin",
        &admin,
        "--dataplane",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(&data_dir)
    .arg("--config")
    .arg(&config)
    .env_remove(crate::config::TOKEN_ENV)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log_file)
    .kill_on_drop(true);
    if let Some(seed) = seed {
        cmd.args(["--seeds", seed]);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(DemoNode {
        name,
        admin,
        child,
        log,
    })
}

fn check_alive(node: &mut DemoNode) -> anyhow::Result<()> {
    if let Some(status) = node.child.try_wait()? {
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        let last = log.lines().last().unwrap_or("").to_owned();
        bail!("{} exited with {status}: {last}", node.name);
    }
    Ok(())
}

/// Sample services the demo registers, spread round-robin over the nodes.
fn sample_services() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!({"id": "coder-qwen", "tasks": ["llm.code", "llm.chat"], "model_family": "qwen",
               "context_window": 131072, "latency_ms_p50": 120, "latency_ms_p99": 180,
               "price_micros_per_1k": 500, "modalities": ["text"], "region": "eu-west",
               "endpoint": {"port": 9001}}),
        json!({"id": "coder-deepseek", "tasks": ["llm.code"], "model_family": "deepseek",
               "context_window": 163840, "latency_ms_p50": 150, "latency_ms_p99": 240,
               "price_micros_per_1k": 300, "modalities": ["text"], "region": "us-east",
               "endpoint": {"port": 9002}}),
        json!({"id": "coder-small", "tasks": ["llm.code"], "model_family": "phi",
               "context_window": 32768, "latency_ms_p50": 40, "latency_ms_p99": 70,
               "price_micros_per_1k": 80, "modalities": ["text"], "region": "eu-west",
               "endpoint": {"port": 9003}}),
        json!({"id": "chat-llama", "tasks": ["llm.chat"], "model_family": "llama",
               "context_window": 8192, "latency_ms_p50": 90, "latency_ms_p99": 150,
               "price_micros_per_1k": 200, "modalities": ["text"], "region": "us-east",
               "endpoint": {"port": 9004}}),
        json!({"id": "embed-bge", "tasks": ["embedding"], "model_family": "bge",
               "context_window": 8192, "latency_ms_p50": 15, "latency_ms_p99": 30,
               "price_micros_per_1k": 20, "modalities": ["text"], "region": "eu-west",
               "endpoint": {"port": 9005}}),
        json!({"id": "vision-yolo", "tasks": ["vision.detect"], "model_family": "yolo",
               "latency_ms_p50": 25, "latency_ms_p99": 45, "price_micros_per_1k": 50,
               "modalities": ["image"], "region": "us-east", "endpoint": {"port": 9006}}),
    ]
}

/// Registers the sample services, waits until the last node holds all of them, and resolves
/// the example intent (an `llm.code` model, context ≥ 128k, p50 ≤ 200 ms) there.
async fn advertise_and_resolve(
    nodes: &[DemoNode],
    deadline: tokio::time::Instant,
    sinks: &BTreeMap<String, std::net::UdpSocket>,
) -> anyhow::Result<Option<String>> {
    let mut samples = sample_services();
    // The demo plays the services that have a sink: their endpoint is the sink's port.
    for sample in &mut samples {
        if let Some(sink) = sample["id"].as_str().and_then(|id| sinks.get(id)) {
            sample["endpoint"]["port"] = sink.local_addr()?.port().into();
        }
    }
    let mut expected = 0;
    println!("\nregistering sample services:");
    for (i, node) in nodes.iter().enumerate() {
        let client = Client::new(&node.admin, None)?;
        for sample in samples.iter().skip(i).step_by(nodes.len()) {
            let (s, _): (ServiceDto, _) = client.post("/v1/services", sample).await?;
            println!("  {:<8} {}", node.name, s.service.id);
            expected += 1;
        }
    }
    let Some(last) = nodes.last() else {
        return Ok(None);
    };
    let client = Client::new(&last.admin, None)?;
    loop {
        if let Ok((s, _)) = client.get::<Services>("/v1/services").await
            && s.services.len() >= expected
        {
            println!(
                "\n{} sees all {expected} services (adverts spread by the overlay):",
                last.name
            );
            print!("{}", services_table(&s.services));
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out waiting for {} to hold {expected} services",
                last.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let intent = serde_json::json!({"task": "llm.code", "min_context": 128000,
                                    "max_latency_ms": 200, "k": 3, "explain": true});
    println!("\nresolve on {}: {intent}", last.name);
    let (r, _): (ResolveResponse, _) = client.post("/v1/resolve", &intent).await?;
    print!("{}", resolve_table(&r));
    println!(
        "\ntry: nexus ctl --admin http://{} resolve --task llm.code --min-context 128000 --max-latency-ms 200 --explain",
        last.admin
    );
    Ok(Some(r.routing_key))
}

/// NexTrust on the demo's CA voters: the CA's status, a model MIC carrying a Poseidon commitment
/// to hidden properties, and a Groth16 attestation that "score ≥ 80 % ∧ safety passed" proven
/// against the CA's proving key and verified with its verifying key.
/// NexStream between two nodes: probes in all four delivery modes from the last node to the
/// first, through both data planes, over one MIC-authenticated session; then the session table.
async fn sessions_demo(nodes: &[DemoNode], deadline: tokio::time::Instant) -> anyhow::Result<()> {
    use crate::admin::sessions::{ProbeResponse, Sessions};
    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        return Ok(());
    };
    let client = Client::new(&last.admin, None)?;
    println!(
        "\nNexStream: {} probes {} in each delivery mode over one session (`nexus ctl sessions probe`):",
        last.name, first.name
    );
    let probes = [
        (
            "ro",
            20,
            1024,
            "reliable-ordered: one flow, answers in order",
        ),
        (
            "ru",
            4,
            1 << 20,
            "reliable-unordered: a 1 MiB message per stream",
        ),
        ("be", 20, 512, "best-effort: datagrams with an expiry"),
        (
            "pr",
            20,
            512,
            "probabilistic: datagrams delivered with p = 0.9",
        ),
    ];
    for (mode, count, bytes, what) in probes {
        let mut body = serde_json::json!({
            "peer": first.name, "mode": mode, "count": count, "bytes": bytes, "timeout_ms": 2000,
        });
        if mode == "pr" {
            body["probability"] = 0.9.into();
        }
        // The session actor presents the node MIC once the trust actor handed it over; until
        // then the peer refuses the session (mic_missing), so the first probe may be retried.
        let r = loop {
            match client
                .post::<ProbeResponse>("/v1/sessions/probe", &body)
                .await
            {
                Ok((answer, _)) => break answer.probe,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!("NexStream probe to {} failed: {e:#}", first.name)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        println!(
            "  {mode}  {:>2}/{:<2} answered  rtt p50 {:>7.3} ms  p99 {:>7.3} ms   {what}{}",
            r.received,
            r.sent,
            r.rtt_ms_p50,
            r.rtt_ms_p99,
            if r.opened {
                format!(
                    " (session opened in {:.1} ms: handshake + MIC exchange)",
                    r.connect_ms
                )
            } else {
                String::new()
            }
        );
    }
    let (s, _) = client.get::<Sessions>("/v1/sessions").await?;
    for x in &s.sessions {
        println!(
            "  session {} to {}: MIC serial {}, rtt {:.3} ms, cwnd {} B, {} packets sent, {} lost",
            x.id,
            x.peer_name.as_deref().unwrap_or("?"),
            x.mic_serial.map_or("-".into(), |m| m.to_string()),
            x.rtt_us as f64 / 1000.0,
            x.cwnd_bytes,
            x.packets_sent,
            x.packets_lost
        );
    }
    Ok(())
}

async fn trust_demo(nodes: &[DemoNode], deadline: tokio::time::Instant) -> anyhow::Result<()> {
    use crate::ctl::ca::{commit, prove, status_table};
    use nexus_registry::CredentialsJson;
    use nexus_trust::mic::{Claim, IssueRequest, ModelIdentity, SubjectKind};
    use nexus_trust::revocation::RevocationReason;
    use nexus_trust::zk::{Predicate, Properties};

    use crate::api::Registration;
    use crate::api::ca::{MicDto, RevocationDto, RevokeRequest};
    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        return Ok(());
    };
    let client = Client::new(&first.admin, None)?;
    let status = loop {
        if let Ok((s, _)) = client
            .get::<crate::api::ca::CaStatusDto>("/v1/ca/status")
            .await
            && s.bootstrapped
        {
            break s;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for the CA to bootstrap");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "
the CA is up (Raft over the first {DEMO_CA_VOTERS} nodes; `nexus ctl ca status`):"
    );
    print!("{}", status_table(&status));

    let properties = Properties::new(850, true, 42)?;
    let (opening, commitment) = commit(properties);
    println!(
        "
model publisher commits to hidden properties (score 85.0 %, safety passed, dataset 42):
  commitment {}",
        hex::encode(commitment.to_bytes())
    );
    let request = IssueRequest {
        request_id: None,
        subject_key: [0x4d; 32],
        kind: SubjectKind::Model,
        model: Some(ModelIdentity {
            arch_hash: [0xa1; 32],
            weights_commitment: [0xb2; 32],
        }),
        publisher: "acme-ai".into(),
        provenance: Vec::new(),
        claims: vec![Claim {
            key: "task".into(),
            value: "llm.code".into(),
        }],
        zk_commitment: Some(commitment.to_bytes()),
        validity_ms: 86_400_000,
    };
    let (mic, _): (MicDto, _) = client.post("/v1/ca/certs", &request).await?;
    println!(
        "issued model MIC serial {} ({}) with the commitment inside",
        mic.serial, mic.fingerprint
    );
    let predicate = Predicate {
        min_score: 800,
        require_safety: true,
    };
    let holder = Client::new(&last.admin, None)?;
    let started = tokio::time::Instant::now();
    let attestation = prove(&holder, &opening, predicate).await?;
    println!(
        "holder proves \"score ≥ 80 % ∧ safety passed\" without revealing the values ({:.0} ms, via {}):\n  attestation {}…  ({} bytes, verified against the CA's verifying key)",
        started.elapsed().as_secs_f64() * 1000.0,
        last.name,
        &hex::encode(attestation.encode())[..32],
        attestation.encode().len()
    );

    // The model's operator registers it with its MIC and the attestation as credentials; the
    // node checks them before accepting, every other node verifies them inline on delivery.
    let service = Registration {
        sad: serde_json::from_value(serde_json::json!({
            "id": "coder-attested", "tasks": ["llm.code"], "model_family": "acme",
            "context_window": 131072, "latency_ms_p50": 110, "latency_ms_p99": 170,
            "price_micros_per_1k": 400, "modalities": ["text"], "region": "eu-west",
            "endpoint": {"port": 9010}, "trust": {"mic_serial": mic.serial},
        }))?,
        credentials: Some(CredentialsJson {
            mic: mic.encoded.clone(),
            attestations: vec![hex::encode(attestation.encode())],
        }),
    };
    // The node's trust actor reads the CA keys from the CA shortly after the bootstrap (it polls
    // while the CA is not bootstrapped); until then it refuses credentials as signed by an
    // unknown CA key (422), and the operator tries again.
    loop {
        match client.post::<ServiceDto>("/v1/services", &service).await {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.downcast_ref::<crate::ctl::error::CtlError>(),
                    Some(crate::ctl::error::CtlError::Answered { status: 422, message })
                        if message.contains("unknown CA key")
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    println!(
        "\n{} registers coder-attested with the MIC and the attestation as credentials",
        first.name
    );
    let intent = serde_json::json!({"task": "llm.code", "k": 3, "explain": true,
        "attested": {"min_score": 800, "require_safety": true}});
    println!("resolve on {}: {intent}", last.name);
    let matches = |r: &ResolveResponse| r.candidates.iter().any(|c| c.id == "coder-attested");
    let r = wait_resolve(
        &holder,
        &intent,
        deadline,
        "coder-attested to resolve",
        |r| matches(r),
    )
    .await?;
    print!("{}", resolve_table(&r));

    let serial = mic.serial;
    let revoke = RevokeRequest {
        reason: Some(RevocationReason::KeyCompromise),
    };
    let _: (RevocationDto, _) = client
        .post(&format!("/v1/ca/certs/{serial}/revoke"), &revoke)
        .await?;
    let revoked_at = tokio::time::Instant::now();
    println!(
        "\nrevoke MIC serial {serial} on {} (committed through Raft, spread by gossip)",
        first.name
    );
    let r = wait_resolve(
        &holder,
        &intent,
        deadline,
        "the revoked service to drop out",
        |r| !matches(r),
    )
    .await?;
    println!(
        "{} excludes coder-attested {:.0} ms later:",
        last.name,
        revoked_at.elapsed().as_secs_f64() * 1000.0
    );
    for e in r
        .excluded
        .iter()
        .flatten()
        .filter(|e| e.id == "coder-attested")
    {
        println!("  excluded {}: {}", e.id, e.reason);
    }
    Ok(())
}

/// Resolves `intent` through `client` until `done` holds for the answer.
async fn wait_resolve(
    client: &Client,
    intent: &serde_json::Value,
    deadline: tokio::time::Instant,
    what: &str,
    done: impl Fn(&ResolveResponse) -> bool,
) -> anyhow::Result<ResolveResponse> {
    loop {
        if let Ok((r, _)) = client.post::<ResolveResponse>("/v1/resolve", intent).await
            && done(&r)
        {
            return Ok(r);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sockets standing in for the code services, so the demo can show frames arriving.
fn bind_sinks() -> anyhow::Result<BTreeMap<String, std::net::UdpSocket>> {
    let mut sinks = BTreeMap::new();
    for id in ["coder-qwen", "coder-deepseek", "coder-small"] {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a sink")?;
        socket.set_nonblocking(true)?;
        sinks.insert(id.to_owned(), socket);
    }
    Ok(sinks)
}

/// Frames received by each sink until all are quiet for 300 ms.
async fn drain_sinks(sinks: &BTreeMap<String, std::net::UdpSocket>) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = sinks.keys().map(|k| (k.clone(), 0)).collect();
    let mut buf = [0u8; 2048];
    let mut quiet = tokio::time::Instant::now();
    while quiet.elapsed() < Duration::from_millis(300) {
        let mut any = false;
        for (id, socket) in sinks {
            while socket.recv_from(&mut buf).is_ok() {
                *counts.entry(id.clone()).or_default() += 1;
                any = true;
            }
        }
        if any {
            quiet = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counts
}

/// Next hops installed for `key` in a node's forwarding table.
async fn installed_hops(client: &Client, key: &str) -> usize {
    match client.get::<FibDto>("/v1/fib").await {
        Ok((fib, _)) => fib
            .entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.next_hops.len())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

fn print_counts(counts: &BTreeMap<String, usize>) {
    for (id, n) in counts {
        println!("  {id:<16} {n:>4} frames");
    }
}

/// Sends frames for the resolved intent's routing key into the last node's data plane, shows
/// which services receive them, then SIGKILLs the node of the best candidate and shows the
/// route failing over. Returns the index of the killed node.
async fn traffic_and_failover(
    nodes: &mut [DemoNode],
    key: &str,
    sinks: &BTreeMap<String, std::net::UdpSocket>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Option<usize>> {
    let Some(last) = nodes.last() else {
        return Ok(None);
    };
    let client = Client::new(&last.admin, None)?;
    let (node, _): (Node, _) = client.get("/v1/node").await?;
    let Some(dataplane) = node.dataplane else {
        return Ok(None);
    };
    let key_value = u128::from_str_radix(key, 16).context("routing key")?;
    while installed_hops(&client, key).await < 2 {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for the intent route on {}", last.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a client socket")?;
    let send = |first: u64| -> anyhow::Result<()> {
        for session in first..first + 100 {
            let frame = crate::ctl::data_frame(key_value, session, 0, 32, 16)?;
            socket.send_to(&frame, dataplane.as_str())?;
            std::thread::sleep(Duration::from_micros(300));
        }
        Ok(())
    };
    println!(
        "\nsending 100 flows of NexLink frames for routing key {key} to {}'s data plane ({dataplane}):",
        last.name
    );
    send(0)?;
    print_counts(&drain_sinks(sinks).await);

    // Crash the node of the best-ranked service.
    let (services, _): (Services, _) = client.get("/v1/services").await?;
    let victim_service = "coder-qwen";
    let victim_name = services
        .services
        .iter()
        .find(|s| s.service.id == victim_service)
        .and_then(|s| s.node_name.clone())
        .context("the node of coder-qwen")?;
    let Some(victim) = nodes.iter().position(|n| n.name == victim_name) else {
        return Ok(None);
    };
    println!(
        "\nSIGKILL {victim_name} (it hosts {victim_service}); waiting for the route to fail over"
    );
    let killed = tokio::time::Instant::now();
    let _ = nodes[victim].child.start_kill();
    let _ = nodes[victim].child.wait().await;
    loop {
        if installed_hops(&client, key).await == 1 {
            break;
        }
        if tokio::time::Instant::now() >= deadline + Duration::from_secs(30) {
            bail!("the route never failed over");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "failed over after {:.1} s (membership declared {victim_name} down); sending 100 more flows:",
        killed.elapsed().as_secs_f64()
    );
    send(1000)?;
    print_counts(&drain_sinks(sinks).await);
    Ok(Some(victim))
}

/// The fabric carries a conversation: a sample model service registered with the first node
/// streams tokens to a client on the last one, straight over a NexStream session.
async fn token_stream_demo(nodes: &[DemoNode]) -> anyhow::Result<()> {
    let (Some(home), Some(away)) = (nodes.first(), nodes.last()) else {
        return Ok(());
    };
    let sad = nexus_registry::Sad::from_json(
        br#"{"id": "demo-chat", "tasks": ["llm.chat"], "model_family": "echo",
             "context_window": 4096, "latency_ms_p50": 5, "latency_ms_p99": 20, "ttl_s": 30}"#,
    )
    .context("the demo service's descriptor")?;
    let home_cfg = nexus_api::NodeConfig::discover(&format!("http://{}", home.admin), None).await?;
    let away_cfg = nexus_api::NodeConfig::discover(&format!("http://{}", away.admin), None).await?;
    let model = nexus_api::sample::EchoModel::new("echo", Duration::from_millis(40));
    let service =
        nexus_api::Service::serve(nexus_api::ServiceConfig::new(home_cfg, sad), model).await?;
    let client = nexus_api::Client::connect(nexus_api::ClientConfig::new(away_cfg)).await?;
    println!(
        "\nNexAPI: service demo-chat (registered with {}, its own CA-issued key, certificate \
         serial {}) serves on {}; a client on {} resolves `llm.chat` over its node's binary \
         endpoint and streams over NexStream:",
        home.name,
        service.mic_serial(),
        service.addr(),
        away.name
    );
    let intent = nexus_registry::Intent::new("llm.chat");
    // The advert reaches the client's node by gossip, within a few hundred milliseconds.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(answer) = client.node().resolve(&intent).await
            && answer
                .candidates
                .iter()
                .any(|c| c.service == "demo-chat" && c.key.is_some())
        {
            break;
        }
        if tokio::time::Instant::now() >= until {
            bail!("{} never resolved demo-chat", away.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prompt = "tokens travel from one node to another as they are generated, \
                  each one sent the moment the model produces it";
    let started = tokio::time::Instant::now();
    let mut stream = client
        .stream(&intent, "echo", nexus_api::Bytes::from(prompt))
        .await?;
    let mut first = None;
    print!("  ");
    while let Some(token) = stream.next().await {
        let token = token?;
        first.get_or_insert_with(|| started.elapsed());
        print!("{}", token.text);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    let end = stream.end().context("the stream ended without END")?;
    println!(
        "\n  {} tokens, first after {:.1} ms (resolve + handshake + call), all after {:.1} ms",
        end.tokens,
        first.unwrap_or_default().as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    service.shutdown().await?;
    Ok(())
}

/// Runs the demo. On failure the temp dir (with every node's log) is kept and named.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("nexus-demo-")
        .tempdir()
        .context("creating a temp dir")?;
    match run_in(&args, dir.path()).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let kept = dir.keep();
            Err(e.context(format!("node logs kept in {}", kept.display())))
        }
    }
}

async fn run_in(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the nexus binary")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    println!(
        "starting {} nodes (data and logs under {})",
        args.nodes,
        dir.display()
    );

    let mut nodes = Vec::new();
    let ca = args.nodes >= DEMO_CA_VOTERS;
    let mut first = spawn_node(&exe, dir, 1, args.admin_base_port, None, ca).await?;
    let first_client = Client::new(&first.admin, None)?;
    // Poll node-1's own admin API (its node name proves it is ours, not another process on the
    // port) and stop at once if the process exits (e.g. port in use).
    let seed = loop {
        check_alive(&mut first)?;
        if let Ok((n, _)) = first_client.get::<Node>("/v1/node").await
            && n.name == first.name
        {
            break n.addr;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out waiting for node-1's admin API on {}",
                first.admin
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    nodes.push(first);
    for i in 2..=args.nodes {
        let port = args
            .admin_base_port
            .checked_add(i - 1)
            .context("--admin-base-port too high")?;
        nodes.push(spawn_node(&exe, dir, i, port, Some(&seed), ca && i <= DEMO_CA_VOTERS).await?);
    }

    let want = usize::from(args.nodes);
    for node in &mut nodes {
        let client = Client::new(&node.admin, None)?;
        loop {
            check_alive(node)?;
            if let Ok((m, _)) = client.get::<Members>("/v1/members").await
                && m.members.iter().filter(|m| m.state == "alive").count() == want
                && m.members.iter().any(|m| m.local && m.name == node.name)
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {} to see {want} alive members",
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let (members, _) = first_client.get::<Members>("/v1/members").await?;
    println!("\nfabric is up: every node sees {want} alive members\n");
    print!("{}", members_table(&members));
    println!("\nadmin APIs:");
    for node in &nodes {
        println!(
            "  {:<8} http://{}   (nexus ctl --admin http://{} members)",
            node.name, node.admin, node.admin
        );
    }
    println!("logs: {}/node-*.log", dir.display());

    if ca {
        trust_demo(&nodes, deadline).await?;
        sessions_demo(&nodes, deadline).await?;
    }

    let sinks = bind_sinks()?;
    if let Some(key) = advertise_and_resolve(&nodes, deadline, &sinks).await?
        && args.nodes >= 3
        && let Some(victim) = traffic_and_failover(&mut nodes, &key, &sinks, deadline).await?
    {
        let gone = nodes.remove(victim);
        println!("({} stays down; the other nodes keep serving)", gone.name);
    }

    if ca && nodes.len() >= 2 {
        token_stream_demo(&nodes).await?;
    }

    if !args.exit_when_ready {
        println!("\nserving; press Ctrl-C to stop");
        let mut exited = Vec::new();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    for node in nodes.iter_mut() {
                        if let Ok(Some(status)) = node.child.try_wait() {
                            exited.push(format!("{} exited ({status})", node.name));
                        }
                    }
                    if !exited.is_empty() { break; }
                }
            } => {
                for e in &exited { println!("{e}"); }
            }
        }
    }

    println!("stopping: each node leaves the fabric gracefully");
    for node in &nodes {
        if let Some(pid) = node.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for node in &mut nodes {
        if tokio::time::timeout(Duration::from_secs(10), node.child.wait())
            .await
            .is_err()
        {
            let _ = node.child.kill().await;
        }
    }
    Ok(())
}
