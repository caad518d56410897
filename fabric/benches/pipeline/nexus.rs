//! The Nexus rows: the same four services as NexAPI services (the `nexus-api` SDK), registered
//! with a real node of a real 3-node fabric (three `nexus node run` processes, the CA's
//! voters, each with a data plane), and called by SDK clients on the *direct* path — a binary
//! resolve over the node's NexAPI endpoint, then a NexStream session straight to the service —
//! or on the *routed* path: the same resolve, then a session addressed to the intent class's
//! routing key through the node's session socket (the relay) and data plane, which picks the
//! service and rewrites the key; answers come back through the data plane and the relay.
//!
//! - *Nexus cold*: every call resolves (no cached answer) and opens a new session (TLS 1.3 with
//!   raw Ed25519 keys, then each side's MIC), then closes it. A call takes an idle client from a
//!   pool made before the measurement (each client's certificate is issued once, as an
//!   application's would be at start-up).
//! - *Nexus warm*: one client; resolve answers reused, sessions pooled.
//!
//! At RTT > 0 a UDP delay relay sits in front of each service (the service advertises the
//! relay's port, so on the routed path the data plane forwards to it) and one in front of the
//! node's NexAPI endpoint, as for every other row. Server
//! CPU: the four service threads plus the node process (its resolves; also its background gossip
//! and Raft heartbeats, from `/proc/<pid>/stat` in 10 ms ticks).

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use nexus_api::wire::ApiError;
use nexus_api::{
    Call, Client, ClientConfig, DType, ErrorCode, Finish, Handler, NodeConfig, Path, Service,
    ServiceConfig, TensorHeader, TokenSink,
};
use nexus_registry::{Intent, Sad};

use crate::ca_common::{CA_TIMINGS, http, wait_bootstrapped};
use crate::common::{NodeProc, fast_config, start_node};
use crate::harness::Server;
use crate::relay::Relay;
use crate::services::{Behaviour, Hop, MODEL};
use crate::stats::now;
use crate::{Arrivals, Pipeline, Servers, Tensor, Warmth, process_cpu, via};

/// Cold clients made before a case; more are made (untimed cost included) if a burst needs
/// them.
const COLD_CLIENTS: usize = 16;

/// Three node processes forming the fabric and its CA.
pub struct NexusFabric {
    nodes: Vec<NodeProc>,
    node: NodeConfig,
    cases: AtomicU64,
    /// The initial congestion window of every client and service; none: NexStream's default.
    initial_window: Option<u64>,
    _dir: tempfile::TempDir,
}

impl NexusFabric {
    pub async fn start(initial_window: Option<u64>) -> anyhow::Result<NexusFabric> {
        let dir = tempfile::tempdir()?;
        // Each node runs a data plane: the routed rows travel through it.
        let config = format!(
            "dataplane = \"127.0.0.1:0\"\n{}",
            fast_config(&format!(
                "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:0\"\n{CA_TIMINGS}\n[api]\nlisten = \"127.0.0.1:0\"\n"
            ))
        );
        let n1 = start_node("n1", &dir.path().join("n1"), &[], &config, None);
        let seed = n1.gossip.clone();
        let n2 = start_node("n2", &dir.path().join("n2"), &[&seed], &config, None);
        let n3 = start_node("n3", &dir.path().join("n3"), &[&seed], &config, None);
        wait_bootstrapped(&http(), &n1, Duration::from_secs(60)).await;
        let node = NodeConfig::discover(&n1.admin, None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(NexusFabric {
            nodes: vec![n1, n2, n3],
            node,
            cases: AtomicU64::new(0),
            initial_window,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.nodes[0].child.id()
    }
}

/// One mock service behind the SDK.
#[derive(Clone)]
struct Mock {
    hop: Hop,
    behaviour: Arc<Behaviour>,
}

fn api_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(0, code, message)
}

impl Handler for Mock {
    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        let text = std::str::from_utf8(&call.payload)
            .map_err(|_| api_error(ErrorCode::BadRequest, "the prompt is not UTF-8"))?;
        match self.hop {
            Hop::Route => Ok(Bytes::from_static(
                self.behaviour.route(text).await.as_bytes(),
            )),
            Hop::Embed => {
                let v = self.behaviour.embed(text).await;
                let mut out = Vec::with_capacity(v.len() * 4);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Ok(Bytes::from(out))
            }
            _ => Err(api_error(ErrorCode::UnknownModel, "not a unary service")),
        }
    }

    async fn stream(&self, call: Call, mut tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        let n: u32 = std::str::from_utf8(&call.payload)
            .ok()
            .and_then(|s| s.split('\n').next()?.parse().ok())
            .ok_or_else(|| api_error(ErrorCode::BadRequest, "no token count"))?;
        let mut rx = self.behaviour.generate(n, |i, text| (i, text), None).await;
        while let Some((i, text)) = rx.recv().await {
            tokens.send(i, text).await?;
        }
        Ok((Finish::Length, 0))
    }

    async fn tensor(&self, tensor: nexus_api::Tensor) -> Result<(), ApiError> {
        let dtype = match tensor.header.dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            other => {
                return Err(api_error(
                    ErrorCode::UnknownDtype,
                    format!(
                        "a {} tensor is not a KV-cache hand-off",
                        other.kserve_name()
                    ),
                ));
            }
        };
        self.behaviour
            .handoff(dtype, &tensor.header.shape, tensor.data.len())
            .await
            .map(|_| ())
            .map_err(|e| api_error(ErrorCode::ShapeMismatch, e))
    }
}

fn sad(id: &str, task: &str) -> anyhow::Result<Sad> {
    let json = serde_json::json!({
        "id": id, "tasks": [task], "model_family": "bench", "context_window": 8192,
        "latency_ms_p50": 1, "latency_ms_p99": 2, "ttl_s": 300,
    });
    Sad::from_json(json.to_string().as_bytes()).map_err(|e| anyhow!("{e}"))
}

/// A free loopback UDP port (bound and released; the service binds it right after).
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The four services of one case and the relays in front of them.
struct Fabric {
    services: Vec<Server>,
    intents: [Intent; 4],
    node: NodeConfig,
    initial_window: Option<u64>,
    relays: Vec<Relay>,
}

async fn case_fabric(servers: &Servers, rtt: Duration) -> anyhow::Result<Fabric> {
    let fabric = servers
        .nexus
        .as_ref()
        .context("the Nexus fabric was not started")?;
    let case = fabric.cases.fetch_add(1, Ordering::Relaxed);
    let mut relays = Vec::new();
    let mut node = fabric.node.clone();
    node.api = via(node.api, rtt, true, &mut relays)?;
    let mut services = Vec::new();
    let mut intents = Vec::new();
    for hop in Hop::ALL {
        let name = hop.thread("nexus");
        let short = name.trim_start_matches("nexus-");
        let task = format!("bench{case}.{short}");
        let port = free_udp_port()?;
        let bound = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let advertised = via(bound, rtt, true, &mut relays)?;
        let mut config = ServiceConfig::new(
            fabric.node.clone(),
            sad(&format!("bench{case}-{short}"), &task)?,
        );
        config.bind = bound;
        config.advertise_port = Some(advertised.port());
        if let Some(w) = fabric.initial_window {
            config.endpoint.stream.initial_window_bytes = w;
        }
        let mock = Mock {
            hop,
            behaviour: servers.behaviour.clone(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        services.push(Server::spawn(&name, move || async move {
            let service = Service::serve(config, mock).await;
            let ok = service.is_ok();
            let _ = ready_tx.send(service.as_ref().err().map(ToString::to_string));
            let serve = Server::serve(async move {
                let _keep = service;
                if ok {
                    std::future::pending::<()>().await;
                }
            });
            (bound, serve)
        }));
        if let Some(e) = ready_rx.await? {
            bail!("service {task}: {e}");
        }
        let mut intent = Intent::new(task);
        intent.k = 1;
        intents.push(intent);
    }
    let intents: [Intent; 4] = intents.try_into().map_err(|_| anyhow!("four intents"))?;
    Ok(Fabric {
        services,
        intents,
        node,
        initial_window: fabric.initial_window,
        relays,
    })
}

/// With `NEXUS_PIPELINE_TRANSPORT_STATS` set: each session of the client after a tensor
/// hand-off (round-trip time, congestion window, packets sent and declared lost) on stderr.
async fn transport_stats(row: &str, c: &Client) {
    let Ok((sessions, _)) = c.stream_node().stats().await else {
        return;
    };
    for s in sessions {
        eprintln!(
            "{row}: session {} to {}: rtt {} us, cwnd {} B, sent {} packets, lost {}",
            s.id.0, s.remote, s.rtt_us, s.cwnd_bytes, s.sent_packets, s.lost_packets
        );
    }
}

async fn client(fabric: &Fabric, resolve_ttl: Duration, routed: bool) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(fabric.node.clone());
    if let Some(w) = fabric.initial_window {
        config.endpoint.stream.initial_window_bytes = w;
    }
    config.bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.resolve_ttl = resolve_ttl;
    config.path = if routed { Path::Routed } else { Path::Direct };
    config.deadline = Duration::from_secs(30);
    Client::connect(config).await.map_err(|e| anyhow!("{e}"))
}

/// A row: cold (`COLD` = true) or warm, on the routed (`ROUTED` = true) or the direct path.
pub struct Nexus<const COLD: bool, const ROUTED: bool> {
    fabric: Fabric,
    warm: Option<Client>,
    idle: RefCell<Vec<Client>>,
    transfers: AtomicU64,
}

pub type NexusCold = Nexus<true, false>;
pub type NexusWarm = Nexus<false, false>;
pub type NexusRoutedCold = Nexus<true, true>;
pub type NexusRoutedWarm = Nexus<false, true>;

impl<const COLD: bool, const ROUTED: bool> Nexus<COLD, ROUTED> {
    /// The client for one call: the warm one, or an idle cold one (without sessions or
    /// cached answers).
    async fn take(&self) -> anyhow::Result<Client> {
        if let Some(c) = &self.warm {
            return Ok(c.clone());
        }
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(c) => Ok(c),
            None => client(&self.fabric, Duration::ZERO, ROUTED).await,
        }
    }

    async fn give(&self, c: Client) {
        if COLD {
            c.close_sessions().await;
            self.idle.borrow_mut().push(c);
        }
    }

    async fn infer(&self, hop: Hop, payload: Bytes) -> anyhow::Result<Bytes> {
        let c = self.take().await?;
        let out = c
            .infer(&self.fabric.intents[hop.index()], MODEL, payload)
            .await
            .map_err(|e| anyhow!("{e}"));
        self.give(c).await;
        out
    }
}

impl<const COLD: bool, const ROUTED: bool> Pipeline for Nexus<COLD, ROUTED> {
    const NAME: &'static str = match (COLD, ROUTED) {
        (true, false) => "Nexus cold (direct)",
        (false, false) => "Nexus warm (direct)",
        (true, true) => "Nexus cold (routed)",
        (false, true) => "Nexus warm (routed)",
    };
    const WARMTH: Warmth = if COLD { Warmth::Cold } else { Warmth::Warm };

    async fn open(servers: &Servers, rtt: Duration) -> anyhow::Result<Self> {
        let fabric = case_fabric(servers, rtt).await?;
        let (warm, idle) = if COLD {
            let mut idle = Vec::with_capacity(COLD_CLIENTS);
            for _ in 0..COLD_CLIENTS {
                idle.push(client(&fabric, Duration::ZERO, ROUTED).await?);
            }
            (None, idle)
        } else {
            (
                Some(client(&fabric, Duration::from_secs(3600), ROUTED).await?),
                Vec::new(),
            )
        };
        Ok(Nexus {
            fabric,
            warm,
            idle: RefCell::new(idle),
            transfers: AtomicU64::new(1),
        })
    }

    async fn route(&self, prompt: &str) -> anyhow::Result<String> {
        let out = self
            .infer(Hop::Route, Bytes::copy_from_slice(prompt.as_bytes()))
            .await?;
        Ok(String::from_utf8(out.to_vec())?)
    }

    async fn embed(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let out = self
            .infer(Hop::Embed, Bytes::copy_from_slice(text.as_bytes()))
            .await?;
        Ok(out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    async fn stream(&self, model: &str, prompt: &str, tokens: u32) -> anyhow::Result<Arrivals> {
        let c = self.take().await?;
        let result = async {
            let mut stream = c
                .stream(
                    &self.fabric.intents[Hop::Llm.index()],
                    model,
                    Bytes::from(format!("{tokens}\n{prompt}")),
                )
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let mut arrivals = Vec::with_capacity(tokens as usize);
            while let Some(t) = stream.next().await {
                let t = t.map_err(|e| anyhow!("{e}"))?;
                arrivals.push((t.id, now()));
            }
            Ok(arrivals)
        }
        .await;
        self.give(c).await;
        result
    }

    async fn tensor(&self, tensor: &Tensor) -> anyhow::Result<u64> {
        let dtype = match tensor.dtype {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            other => bail!("dtype {other}"),
        };
        let transfer = self.transfers.fetch_add(1, Ordering::Relaxed);
        let t = nexus_api::Tensor {
            header: TensorHeader::contiguous(transfer, "prefill.kv", dtype, &tensor.shape),
            data: tensor.data.clone(),
        };
        let c = self.take().await?;
        let out = c
            .send_tensor(&self.fabric.intents[Hop::Decode.index()], t)
            .await
            .map_err(|e| anyhow!("{e}"));
        if std::env::var_os("NEXUS_PIPELINE_TRANSPORT_STATS").is_some() {
            transport_stats(Self::NAME, &c).await;
        }
        self.give(c).await;
        out.map(|()| tensor.data.len() as u64)
    }

    fn relays(&self) -> &[Relay] {
        &self.fabric.relays
    }

    async fn server_cpu(&self, servers: &Servers) -> Duration {
        let mut total = Duration::ZERO;
        for s in &self.fabric.services {
            total += s.cpu().await;
        }
        if let Some(f) = &servers.nexus {
            total += process_cpu(f.pid());
        }
        total
    }
}
