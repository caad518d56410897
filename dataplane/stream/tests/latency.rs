//! Latency on a warm session over real loopback sockets, measured as ratios in one run: the
//! first message of a server-streamed answer must arrive about as fast as a whole unary
//! answer, and the rest of a stream written right after its first message must follow within a
//! small multiple of that — no timer (tokio's is 1 ms coarse) may sit on either path.
//!
//! The server runs on a thread of its own with a current-thread runtime, as a service does; it
//! answers a flow whose request starts with `U` with one message and its end in one command,
//! and one starting with `S` as a service's token writer does: the first token alone, then the
//! rest in small batches, one command after the other, then the end. While those batches keep
//! arriving the client's driver has datagrams to read; the first message must still reach the
//! application when it arrives, not when the burst ends.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(
    clippy::disallowed_methods,
    reason = "measures wall-clock latency of real sockets"
)]
#![allow(unsafe_code, reason = "pins threads to one CPU through libc")]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ca, NOW_MS, NodeSpec};
use nexus_stream::udp::{Framing, StreamNode};
use nexus_stream::{Endpoint, Event, FlowOptions, Mode, SessionId, StreamRef};
use tokio::sync::mpsc;

/// Tokens of a streamed answer after the first.
const TOKENS: usize = 199;
/// Tokens per command after the first.
const TOKENS_PER_BATCH: usize = 4;
/// Exchanges of each kind measured (after as many warm-up ones).
const ROUNDS: usize = 40;
/// How long a busy server keeps its thread after its first token.
const BUSY: Duration = Duration::from_millis(5);

async fn bind(spec: NodeSpec) -> (StreamNode, mpsc::Receiver<Event>) {
    let identity =
        nexus_stream::identity::Identity::new(spec.key, spec.credentials).expect("identity");
    let anchor = tokio::time::Instant::now().into_std();
    let ep =
        Endpoint::new(spec.config, identity, spec.trust, None, anchor, NOW_MS).expect("endpoint");
    StreamNode::bind((Ipv4Addr::LOCALHOST, 0).into(), ep, Framing::NexLink)
        .await
        .expect("bind")
}

fn token(i: usize) -> Bytes {
    Bytes::from(format!("token {i:>4} of the answer"))
}

/// The server: answers every flow it is opened on (see the module doc).
async fn serve(node: StreamNode, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        let Event::Message {
            stream,
            mode: Mode::ReliableOrdered,
            data,
        } = event
        else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            match data.first() {
                Some(b'U') => {
                    let _ = node
                        .send_batch(stream, vec![Bytes::from_static(b"answer")], true)
                        .await;
                }
                Some(b'S') => {
                    // As a token writer hands tokens over while its producer keeps going: the
                    // first alone, the others in batches, one command after the other.
                    let _ = node.send_batch(stream, vec![token(0)], false).await;
                    for batch in (1..=TOKENS).collect::<Vec<_>>().chunks(TOKENS_PER_BATCH) {
                        let tokens = batch.iter().map(|&i| token(i)).collect();
                        let _ = node.send_batch(stream, tokens, false).await;
                    }
                    let _ = node
                        .send_batch(stream, vec![Bytes::from_static(b"end")], true)
                        .await;
                }
                Some(b'B') => {
                    // A service that keeps its thread busy after its first token (generating
                    // the next ones) before it sends the rest.
                    let _ = node.send_batch(stream, vec![token(0)], false).await;
                    let busy = Instant::now();
                    while busy.elapsed() < BUSY {
                        std::hint::spin_loop();
                    }
                    let rest = (1..=TOKENS).map(token).collect();
                    let _ = node.send_batch(stream, rest, false).await;
                    let _ = node
                        .send_batch(stream, vec![Bytes::from_static(b"end")], true)
                        .await;
                }
                _ => {}
            }
        });
    }
}

/// Opens a flow, sends `request` with this side's end, and returns the times from the start to
/// the first message and to the flow's end.
async fn exchange(
    node: &StreamNode,
    events: &mut mpsc::Receiver<Event>,
    session: SessionId,
    request: &'static [u8],
) -> (Duration, Duration) {
    let started = Instant::now();
    let flow: StreamRef = node
        .open_flow(session, FlowOptions::default())
        .await
        .expect("flow");
    node.send_batch(flow, vec![Bytes::from_static(request)], true)
        .await
        .expect("request");
    let mut first = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an answer within 5 s")
            .expect("events");
        match event {
            Event::Message { stream, .. } if stream == flow => {
                first.get_or_insert_with(|| started.elapsed());
            }
            Event::FlowFinished { stream } if stream == flow => {
                return (first.expect("a message before the end"), started.elapsed());
            }
            _ => {}
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts `serve` on a thread of its own (pinned to `cpu` if given) and returns its address,
/// the sender that stops it and the thread.
fn spawn_server(
    spec: NodeSpec,
    cpu: Option<usize>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            pin(cpu);
        }
        runtime().block_on(async move {
            let (node, events) = bind(spec).await;
            addr_tx.send(node.local_addr()).expect("address");
            tokio::select! {
                () = serve(node, events) => {}
                _ = stop_rx => {}
            }
        });
    });
    (addr_rx.recv().expect("server address"), stop_tx, server)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_streams_first_message_and_its_burst_arrive_without_a_timer() {
    let mut ca = Ca::new(7);
    let client_spec = NodeSpec::certified(&mut ca, 1);
    let server_spec = NodeSpec::certified(&mut ca, 2);
    let server_id = server_spec.node_id();
    let (addr, stop_tx, server) = spawn_server(server_spec, None);
    let rt = runtime();
    let (unary, first, rest) = rt.block_on(async move {
        let (node, mut events) = bind(client_spec).await;
        let session = node.connect(server_id, addr).await.expect("session");
        let mut unary = Vec::new();
        let mut first = Vec::new();
        let mut rest = Vec::new();
        for round in 0..2 * ROUNDS {
            // Idle between calls, as between a pipeline's calls to one service.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let (u, _) = exchange(&node, &mut events, session, b"U").await;
            tokio::time::sleep(Duration::from_millis(3)).await;
            let (f, whole) = exchange(&node, &mut events, session, b"S").await;
            if round >= ROUNDS {
                unary.push(u);
                first.push(f);
                rest.push(whole - f);
            }
        }
        (median(unary), median(first), median(rest))
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread");
    eprintln!("unary {unary:?}, stream first {first:?}, rest of stream {rest:?}");
    assert!(
        first <= unary * 3,
        "a stream's first message took {first:?}, a unary answer {unary:?} (median of {ROUNDS})"
    );
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get a valid
    // pointer to it and its size; pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}

/// Client and server on one CPU, as when the kernel runs a woken server on the CPU of the
/// client that woke it: a server that keeps its thread busy after its first message must not
/// keep that message from the client (the driver gives the CPU up after sending).
#[test]
fn a_busy_servers_first_message_reaches_a_client_on_the_same_cpu() {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).expect("a CPU");
    pin(cpu);
    let mut ca = Ca::new(8);
    let client_spec = NodeSpec::certified(&mut ca, 1);
    let server_spec = NodeSpec::certified(&mut ca, 2);
    let server_id = server_spec.node_id();
    let (addr, stop_tx, server) = spawn_server(server_spec, Some(cpu));
    let rt = runtime();
    let (unary, first) = rt.block_on(async move {
        let (node, mut events) = bind(client_spec).await;
        let session = node.connect(server_id, addr).await.expect("session");
        let mut unary = Vec::new();
        let mut first = Vec::new();
        for round in 0..ROUNDS {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let (u, _) = exchange(&node, &mut events, session, b"U").await;
            tokio::time::sleep(Duration::from_millis(3)).await;
            let (f, _) = exchange(&node, &mut events, session, b"B").await;
            if round >= ROUNDS / 2 {
                unary.push(u);
                first.push(f);
            }
        }
        (median(unary), median(first))
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread");
    eprintln!("one CPU: unary {unary:?}, busy server's first message {first:?}");
    assert!(
        first <= unary * 3 && first < BUSY,
        "a busy server's first message took {first:?}, a unary answer {unary:?} (medians of {})",
        ROUNDS / 2
    );
}
