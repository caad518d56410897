//! `nexus ctl send`: a NexLink traffic generator. It builds data frames for a routing key (given,
//! or resolved from an intent through the admin API) and sends them over UDP to a node's data
//! plane.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use nexus_registry::Intent;

use super::{Client, print_json, usage};
use crate::api::{FibDto, ResolveResponse};

/// `nexus ctl send` flags.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// The node's data-plane UDP address (`GET /v1/node` shows it as `dataplane`).
    #[arg(long, value_name = "IP:PORT")]
    pub to: std::net::SocketAddr,
    /// Routing key, 32 hex digits.
    #[arg(long, required_unless_present = "task", conflicts_with = "task")]
    pub key: Option<String>,
    /// Instead of `--key`: resolve this task (with `--min-context` / `--max-latency-ms`) on the
    /// node behind `--admin` and send to the intent's routing key (the node installs its route).
    #[arg(long)]
    pub task: Option<String>,
    /// With `--task`: smallest acceptable context window, tokens.
    #[arg(long, requires = "task")]
    pub min_context: Option<u32>,
    /// With `--task`: largest acceptable median latency, ms.
    #[arg(long, requires = "task")]
    pub max_latency_ms: Option<u32>,
    /// Frames to send (one flow each: sessions `session`, `session + 1`, …).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// First session id.
    #[arg(long, default_value_t = 1)]
    pub session: u64,
    /// Payload bytes per frame (filled with the sequence number).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(0..=8192))]
    pub payload: u16,
    /// Hop limit of the frames.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..))]
    pub hop_limit: u8,
}

/// Builds one NexLink data frame.
pub fn data_frame(
    key: u128,
    session: u64,
    seq: u32,
    payload: u16,
    hop_limit: u8,
) -> anyhow::Result<Vec<u8>> {
    use nexus_dataplane::wire::nexlink::{
        DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr,
        RoutingKey, SeqNumber, SessionId, StreamId, TrafficClass,
    };
    let repr = Repr {
        frame_type: FrameType::Data,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::ALL[0],
        traffic_class: TrafficClass::new(0).ok_or_else(|| anyhow::anyhow!("traffic class"))?,
        ecn: Ecn::NotEct,
        hop_limit: HopLimit::new(hop_limit)
            .ok_or_else(|| anyhow::anyhow!("hop limit must be above 0"))?,
        routing_key: RoutingKey(key),
        src: NodeTag(0),
        dst: NodeTag(0),
        session: SessionId(session),
        stream: StreamId(1),
        seq: SeqNumber(seq),
        payload_len: payload,
        tensor: None,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    for (i, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
        *b = seq.to_be_bytes()[i % 4];
    }
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]))
        .map_err(|e| anyhow::anyhow!("building the frame: {e}"))?;
    Ok(buf)
}

/// The routing key `send` uses: `--key`, or the routing key of resolving `--task` on the node.
/// With `json`, the resolution's summary goes to stderr so stdout holds only the JSON.
pub(super) async fn send_key(
    args: &SendArgs,
    client: &Client,
    json: bool,
) -> anyhow::Result<nexus_dataplane::fib::RoutingKey> {
    let text = match (&args.key, &args.task) {
        (Some(key), _) => key.clone(),
        (None, Some(task)) => {
            let intent = Intent {
                min_context: args.min_context,
                max_latency_ms: args.max_latency_ms,
                ..Intent::new(task.as_str())
            };
            let (r, _): (ResolveResponse, _) = client.post("/v1/resolve", &intent).await?;
            let intent = intent.canonical();
            if r.candidates.is_empty() {
                bail!("no service matches {intent}");
            }
            let summary = format!(
                "resolved {intent} to routing key {} ({} candidate(s), best {} on {})",
                r.routing_key,
                r.candidates.len(),
                r.candidates[0].id,
                r.candidates[0]
                    .node_name
                    .clone()
                    .unwrap_or_else(|| r.candidates[0].node.chars().take(12).collect())
            );
            if json {
                eprintln!("{summary}");
            } else {
                outln!("{summary}");
            }
            // Resolving makes the node track the class; its table actor installs the route
            // moments later. Wait (briefly) until the forwarding table has it.
            for _ in 0..40 {
                let (fib, _): (FibDto, _) = client.get("/v1/fib?limit=1000").await?;
                if fib.entries.iter().any(|e| e.key == r.routing_key) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r.routing_key
        }
        (None, None) => return Err(usage(anyhow::anyhow!("give --key or --task"))),
    };
    nexus_actors::parse_routing_key(&text).ok_or_else(|| {
        usage(anyhow::anyhow!(
            "--key {text:?} is not a routing key (32 hex digits)"
        ))
    })
}

/// Sends the frames; prints a line, or with `json` an object `{sent, frame_bytes, key, to}`.
pub(super) fn send(
    args: &SendArgs,
    key: nexus_dataplane::fib::RoutingKey,
    json: bool,
) -> anyhow::Result<()> {
    let local: std::net::SocketAddr = if args.to.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(local).context("binding a UDP socket")?;
    for i in 0..args.count {
        let frame = data_frame(
            key.0,
            args.session.wrapping_add(u64::from(i)),
            i,
            args.payload,
            args.hop_limit,
        )?;
        socket
            .send_to(&frame, args.to)
            .with_context(|| format!("sending to {}", args.to))?;
    }
    let frame_bytes = 64 + usize::from(args.payload);
    let key = nexus_actors::routing_key_hex(key);
    if json {
        let v = serde_json::json!({
            "sent": args.count, "frame_bytes": frame_bytes, "key": key, "to": args.to.to_string(),
        });
        print_json(&v.to_string());
    } else {
        outln!(
            "sent {} frame(s) of {frame_bytes} bytes for key {key} to {}",
            args.count,
            args.to
        );
    }
    Ok(())
}
