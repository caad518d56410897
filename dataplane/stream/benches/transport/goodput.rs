//! Reliable goodput on one NexStream session, alone and beside a saturating best-effort
//! datagram flow on the same session, through the UDP relay shaped as a bottleneck link.
//!
//! The reliable side keeps a window of messages in flight on one reliable-ordered flow; the
//! server acknowledges each message with two bytes on the same flow, and goodput is the bytes
//! of messages acknowledged during the measured interval. The best-effort side offers
//! datagrams at a fixed rate above the link's (every millisecond a burst; each with a 100 ms
//! expiry) whether or not they get through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use nexus_stream::{DatagramOptions, Event, FlowOptions, Mode};

use crate::harness::Proto;
use crate::nexstream::{Answer, DatagramCount, Fabric, NexStream};
use crate::relay::{LinkShape, Relay};
use crate::stats::now;

const MESSAGE_BYTES: usize = 64 * 1024;
const IN_FLIGHT_MAX: usize = 32;
const DATAGRAM_BYTES: usize = 1000;
const DATAGRAM_EXPIRY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub link: LinkShape,
    pub warmup: Duration,
    pub measure: Duration,
    /// Offered best-effort rate in bytes per second.
    pub offered_bytes_per_s: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Reliable bytes acknowledged per second over the measured interval.
    pub reliable_bytes_per_s: f64,
    /// Datagram payload bytes offered / accepted by the endpoint / received by the server, per second.
    pub offered_bytes_per_s: f64,
    pub accepted_bytes_per_s: f64,
    pub delivered_bytes_per_s: f64,
    /// Datagrams the relay dropped (full bottleneck queue).
    pub relay_dropped: u64,
}

pub async fn run(
    fabric: &Fabric,
    settings: Settings,
    with_datagrams: bool,
) -> anyhow::Result<Outcome> {
    let count = Arc::new(DatagramCount::default());
    let server = crate::nexstream::server(fabric, Answer::Ack, count.clone());
    let relay = Relay::udp(server.addr, settings.link)?;
    let proto = NexStream {
        fabric: fabric.clone(),
    };
    let client = proto.client().await?;
    let mut conn = proto.connect(client, relay.addr()).await?;
    let flow = conn
        .node
        .open_flow(conn.session, FlowOptions::default())
        .await?;
    let message = Bytes::from(vec![0x5a; MESSAGE_BYTES]);

    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let producer = with_datagrams.then(|| {
        let (node, session) = (conn.node.clone(), conn.session);
        let (stop, offered, accepted) = (stop.clone(), offered.clone(), accepted.clone());
        let per_ms = (settings.offered_bytes_per_s / 1000 / DATAGRAM_BYTES as u64).max(1);
        let payload = Bytes::from(vec![0xbe; DATAGRAM_BYTES]);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..per_ms {
                    let opts = DatagramOptions::best_effort(Some(now() + DATAGRAM_EXPIRY));
                    offered.fetch_add(DATAGRAM_BYTES as u64, Ordering::Relaxed);
                    if node
                        .send_datagram(session, 7, payload.clone(), opts)
                        .await
                        .is_ok()
                    {
                        accepted.fetch_add(DATAGRAM_BYTES as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    });

    let start = now();
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.measure;
    let mut in_flight = 0usize;
    let mut acked_bytes = 0u64;
    let mut marks: Option<(u64, u64, u64)> = None;
    while now() < end {
        while in_flight < IN_FLIGHT_MAX {
            conn.node.send(flow, message.clone()).await?;
            in_flight += 1;
        }
        let event = tokio::time::timeout(Duration::from_millis(100), conn.events.recv()).await;
        match event {
            Ok(Some(Event::Message { stream, mode, .. }))
                if stream == flow && mode == Mode::ReliableOrdered =>
            {
                in_flight -= 1;
                if now() >= measure_from {
                    acked_bytes += MESSAGE_BYTES as u64;
                }
            }
            Ok(Some(Event::Closed { reason, .. })) => bail!("session closed: {reason}"),
            Ok(None) => bail!("driver stopped"),
            _ => {}
        }
        if marks.is_none() && now() >= measure_from {
            marks = Some((
                offered.load(Ordering::Relaxed),
                accepted.load(Ordering::Relaxed),
                count.bytes.load(Ordering::Relaxed),
            ));
        }
    }
    let elapsed = (now() - measure_from).as_secs_f64();
    let (o0, a0, d0) = marks.context("measured interval never started")?;
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = producer {
        let _ = p.await;
    }
    let outcome = Outcome {
        reliable_bytes_per_s: acked_bytes as f64 / elapsed,
        offered_bytes_per_s: (offered.load(Ordering::Relaxed) - o0) as f64 / elapsed,
        accepted_bytes_per_s: (accepted.load(Ordering::Relaxed) - a0) as f64 / elapsed,
        delivered_bytes_per_s: (count.bytes.load(Ordering::Relaxed) - d0) as f64 / elapsed,
        relay_dropped: relay.dropped(),
    };
    proto.close(conn).await;
    Ok(outcome)
}
