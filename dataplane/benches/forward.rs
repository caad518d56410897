//! Forwarding throughput and latency on loopback, side by side in one run:
//!
//! - `kernel`: the sender straight to the sink (the kernel's UDP limit on this machine);
//! - `forwarder`: sender → [`Forwarder`] with the portable [`UdpIo`] backend → sink;
//! - `forwarder (UdpIo) rewrite`: the same, with the next hop rewriting the routing key (label
//!   swap: an extra incremental checksum update over 8 words per frame);
//! - `forwarder (UringIo)`: the same with the io_uring backend [`UringIo`];
//! - `fwd (UdpIo) no GSO` / `fwd (UringIo) no GSO`: both backends with UDP GSO on sends turned
//!   off ([`ForwarderConfig::gso`]), to show what GSO adds over `sendmmsg` / batched `sendmsg`;
//! - `fwd (UdpIo) no srcchk` / `fwd (UringIo) no srcchk`: both backends with the source check
//!   off ([`ForwarderConfig::source_check`]). Every other forwarder path checks sources, against
//!   a generation allowing [`ALLOWED_SOURCES`] addresses (the sender's among them), so each
//!   pair shows what the check costs;
//! - `tokio-relay`: sender → a minimal tokio UDP relay (`recv_from` → `send_to` a fixed next
//!   hop, current-thread runtime on its own thread) → sink.
//!
//! Each path runs two phases with 128-byte frames (64-byte NexLink header + 64-byte payload that
//! carries the send time and a sequence number): a blast of `BLAST_FRAMES` frames as fast as one
//! sender thread can go (received packets/s at the sink, loss, latency under overload), then a
//! paced phase of `PACED_FRAMES` at roughly `PACED_RATE_PPS` (one-way latency without queueing).
//! Rounds are interleaved so drift on a shared machine hits every path alike. For forwarder
//! paths the blast phase also reports the forwarder thread's CPU time per received datagram
//! (its `schedstat` run time): the cost of the forwarding work itself, which the receive rate
//! (bounded by the sender and the sink on a shared 2-vCPU machine) shows only through noise.
//!
//! After the rounds, the per-frame header work alone is timed in-process (no sockets): parse +
//! hop-limit decrement, the same plus the routing-key rewrite, and the same plus the
//! allowed-source lookup — the only per-frame costs the rewrite and the source check add, too
//! small to see through the sockets.
//!
//! Run: `cargo bench -p nexus-dataplane --bench forward`. Loopback only. With `-- source-check`
//! only the four forwarder paths with the source check on and off run, for
//! [`SOURCE_CHECK_ROUNDS`] rounds (every other round in reverse order), followed by per-round
//! on/off ratios of the receive rate and of the forwarder's CPU time per frame, then the
//! forwarder without sockets (an in-memory [`PacketIo`] that hands it copies of one frame and
//! discards what it sends: its full per-frame work at one core's speed, in Mpps, check on and
//! off in interleaved pairs), and the header work.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nexus_dataplane::fib::{Fib, FibTable, NextHop, RouteSet, RoutingKey, SourceSet, compile};
use nexus_dataplane::forward::{
    Forwarder, ForwarderConfig, LocalEndpoints, PacketBatch, PacketIo, UdpIo, UringIo,
};
use nexus_dataplane::wire::nexlink::{
    DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr, SeqNumber,
    SessionId, StreamId, TrafficClass,
};

const BLAST_FRAMES: usize = 200_000;
const PACED_FRAMES: usize = 20_000;
const PACED_RATE_PPS: u64 = 50_000;
/// Frames sent between pacing sleeps in the paced phase.
const PACED_BURST: usize = 10;
const ROUNDS: usize = 3;
const PAYLOAD_LEN: usize = 64;
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// The sink stops this long after the last frame it received (once the sender is done).
const SINK_IDLE: Duration = Duration::from_millis(300);
const KEY: RoutingKey = RoutingKey(0x00c0_ffee);
/// The key the rewrite path's next hop writes into every frame.
const KEY_REWRITTEN: RoutingKey = RoutingKey(0x5e41_0000_0000_0000_0000_0000_0000_0b01);
/// Frames the in-process header-work measurement runs per round.
const HEADER_WORK_FRAMES: u32 = 10_000_000;
/// Interleaved rounds of the header-work measurement.
const HEADER_WORK_ROUNDS: usize = 5;
/// Addresses the forwarders' generation allows: the sender's (127.0.0.1) and this many minus one
/// others, about a large fabric's member data planes.
const ALLOWED_SOURCES: u32 = 1024;
/// Rounds of `-- source-check`.
const SOURCE_CHECK_ROUNDS: usize = 10;
/// Frames per run of the in-memory forwarding measurement.
const MEM_FRAMES: u64 = 5_000_000;
/// Interleaved on/off pairs of the in-memory forwarding measurement.
const MEM_ROUNDS: usize = 12;

/// Clock reads: this binary is a measurement driver; time is what it measures.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    #[allow(
        clippy::disallowed_methods,
        reason = "a benchmark driver measures wall time"
    )]
    fn start() -> Clock {
        Clock(Instant::now())
    }

    fn now_ns(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn frame_template() -> Vec<u8> {
    let repr = Repr {
        frame_type: FrameType::Data,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::ALL[2],
        traffic_class: TrafficClass::new(0).expect("class 0"),
        ecn: Ecn::NotEct,
        hop_limit: HopLimit::DEFAULT,
        routing_key: nexus_dataplane::wire::nexlink::RoutingKey(KEY.0),
        src: NodeTag(1),
        dst: NodeTag(2),
        session: SessionId(3),
        stream: StreamId(4),
        seq: SeqNumber(0),
        payload_len: PAYLOAD_LEN as u16,
        tensor: None,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]))
        .expect("valid header");
    buf
}

fn big_buffers(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    socket
        .set_recv_buffer_size(SOCKET_BUFFER_BYTES)
        .expect("rcvbuf");
    socket
        .set_send_buffer_size(SOCKET_BUFFER_BYTES)
        .expect("sndbuf");
}

struct SinkResult {
    /// GSO sends and the frames they carried, for a forwarder path.
    gso: Option<(u64, u64)>,
    /// The forwarder thread's CPU time per datagram it received (ns), for a forwarder path.
    cpu_ns_per_frame: Option<f64>,
    received: usize,
    rate_pps: f64,
    latencies_ns: Vec<u64>,
}

/// Receives until `expected` frames arrived, or `SINK_IDLE` passed without one after `done`.
fn run_sink(socket: UdpSocket, clock: Clock, expected: usize, done: Arc<AtomicBool>) -> SinkResult {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let mut latencies_ns = Vec::with_capacity(expected);
    let (mut first_ns, mut last_ns) = (0u64, 0u64);
    while latencies_ns.len() < expected {
        match socket.recv_from(&mut buf) {
            Ok((len, _)) if len >= HEADER_LEN + 8 => {
                let now = clock.now_ns();
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + 8]);
                latencies_ns.push(now.saturating_sub(u64::from_le_bytes(stamp)));
                if first_ns == 0 {
                    first_ns = now;
                }
                last_ns = now;
            }
            Ok(_) => {}
            Err(_) => {
                let idle = clock.now_ns().saturating_sub(last_ns.max(1));
                if done.load(Ordering::Relaxed) && idle > SINK_IDLE.as_nanos() as u64 {
                    break;
                }
            }
        }
    }
    let span_s = (last_ns.saturating_sub(first_ns)) as f64 / 1e9;
    SinkResult {
        gso: None,
        cpu_ns_per_frame: None,
        received: latencies_ns.len(),
        rate_pps: if span_s > 0.0 {
            latencies_ns.len() as f64 / span_s
        } else {
            0.0
        },
        latencies_ns,
    }
}

fn send_frames(clock: Clock, to: SocketAddr, count: usize, paced: bool) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    big_buffers(&socket);
    let mut frame = frame_template();
    let burst_period_ns = PACED_BURST as u64 * 1_000_000_000 / PACED_RATE_PPS;
    let start = clock.now_ns();
    for seq in 0..count {
        if paced && seq % PACED_BURST == 0 {
            let due = start + (seq / PACED_BURST) as u64 * burst_period_ns;
            let now = clock.now_ns();
            if due > now {
                thread::sleep(Duration::from_nanos(due - now));
            }
        }
        frame[HEADER_LEN + 8..HEADER_LEN + 16].copy_from_slice(&(seq as u64).to_le_bytes());
        frame[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&clock.now_ns().to_le_bytes());
        // A full socket buffer or a transient error loses the frame; the sink counts losses.
        let _ = socket.send_to(&frame, to);
    }
}

/// One phase through `entry` (the address the sender targets) to `sink`.
fn phase(
    clock: Clock,
    entry: SocketAddr,
    sink: UdpSocket,
    count: usize,
    paced: bool,
) -> SinkResult {
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = Arc::clone(&done);
        thread::spawn(move || run_sink(sink, clock, count, done))
    };
    send_frames(clock, entry, count, paced);
    done.store(true, Ordering::Relaxed);
    receiver.join().expect("sink thread")
}

fn new_sink() -> (UdpSocket, SocketAddr) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    big_buffers(&sink);
    let addr = sink.local_addr().expect("sink addr");
    (sink, addr)
}

/// A path under test: started towards a sink, returns the address to send to and a stopper.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Kernel,
    Forwarder,
    ForwarderNoGso,
    ForwarderNoCheck,
    ForwarderRewrite,
    Uring,
    UringNoGso,
    UringNoCheck,
    TokioRelay,
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Path::Kernel => "kernel (direct)",
            Path::Forwarder => "forwarder (UdpIo)",
            Path::ForwarderNoGso => "fwd (UdpIo) no GSO",
            Path::UringNoGso => "fwd (UringIo) no GSO",
            Path::ForwarderNoCheck => "fwd (UdpIo) no srcchk",
            Path::UringNoCheck => "fwd (UringIo) no srcchk",
            Path::ForwarderRewrite => "fwd (UdpIo) rewrite",
            Path::Uring => "forwarder (UringIo)",
            Path::TokioRelay => "tokio relay",
        }
    }

    fn run(&self, clock: Clock, count: usize, paced: bool) -> SinkResult {
        let (sink, sink_addr) = new_sink();
        match self {
            Path::Kernel => phase(clock, sink_addr, sink, count, paced),
            Path::Forwarder
            | Path::ForwarderNoGso
            | Path::ForwarderNoCheck
            | Path::ForwarderRewrite => {
                let io = UdpIo::bind("127.0.0.1:0").expect("bind forwarder");
                io.set_buffer_sizes(SOCKET_BUFFER_BYTES, SOCKET_BUFFER_BYTES)
                    .expect("buffers");
                let options = Options {
                    rewrite: matches!(self, Path::ForwarderRewrite).then_some(KEY_REWRITTEN),
                    gso: !matches!(self, Path::ForwarderNoGso),
                    source_check: !matches!(self, Path::ForwarderNoCheck),
                };
                forward_through(io, options, clock, sink, sink_addr, count, paced)
            }
            Path::Uring | Path::UringNoGso | Path::UringNoCheck => {
                let io = UringIo::bind("127.0.0.1:0").expect("bind io_uring forwarder");
                io.set_buffer_sizes(SOCKET_BUFFER_BYTES, SOCKET_BUFFER_BYTES)
                    .expect("buffers");
                let options = Options {
                    rewrite: None,
                    gso: !matches!(self, Path::UringNoGso),
                    source_check: !matches!(self, Path::UringNoCheck),
                };
                forward_through(io, options, clock, sink, sink_addr, count, paced)
            }
            Path::TokioRelay => {
                let relay = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
                big_buffers(&relay);
                relay.set_nonblocking(true).expect("nonblocking");
                let relay_addr = relay.local_addr().expect("relay addr");
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let stop = Arc::clone(&stop);
                    thread::spawn(move || tokio_relay(relay, sink_addr, stop))
                };
                let result = phase(clock, relay_addr, sink, count, paced);
                stop.store(true, Ordering::Relaxed);
                thread.join().expect("relay thread");
                result
            }
        }
    }
}

/// How a forwarder path runs.
struct Options {
    /// The key the next hop writes into every frame, if any.
    rewrite: Option<RoutingKey>,
    /// UDP GSO on sends.
    gso: bool,
    /// The source check ([`ForwarderConfig::source_check`]).
    source_check: bool,
}

/// The generation's allowed sources: 127.0.0.1 (where the sender is) and
/// `ALLOWED_SOURCES - 1` addresses in 10.0.0.0/8.
fn allowed_sources() -> SourceSet {
    let mut sources = SourceSet::new();
    sources
        .insert(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .expect("unicast");
    for n in 1..ALLOWED_SOURCES {
        sources
            .insert(IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + n)))
            .expect("unicast, within SOURCES_MAX");
    }
    sources
}

/// One phase through a forwarder on `io` with a single route to the sink, whose next hop
/// rewrites the routing key to `options.rewrite` if given, with UDP GSO on sends and the source
/// check as `options` says.
fn forward_through(
    io: impl PacketIo + 'static,
    options: Options,
    clock: Clock,
    sink: UdpSocket,
    sink_addr: SocketAddr,
    count: usize,
    paced: bool,
) -> SinkResult {
    let Options {
        rewrite,
        gso,
        source_check,
    } = options;
    let mut routes = RouteSet::new(1);
    routes.set_sources(allowed_sources());
    routes
        .insert(
            KEY,
            vec![NextHop {
                node: [9; 32],
                addr: sink_addr,
                weight: 1,
                rewrite,
            }],
        )
        .expect("route");
    let fib = Fib::new(FibTable::load(compile(&routes).expect("compile")).expect("load"));
    let config = ForwarderConfig {
        gso,
        source_check,
        ..ForwarderConfig::default()
    };
    let thread_name = config.thread_name.clone();
    let forwarder =
        Forwarder::spawn(config, &fib, LocalEndpoints::new(), io).expect("spawn forwarder");
    // The thread names itself when it starts: wait for that (a few ms at most).
    let cpu_before = (0..500).find_map(|_| {
        thread_cpu_ns(&thread_name).or_else(|| {
            thread::sleep(Duration::from_millis(1));
            None
        })
    });
    let mut result = phase(clock, forwarder.local_addr(), sink, count, paced);
    let cpu_after = thread_cpu_ns(&thread_name);
    let counters = forwarder.shutdown().expect("forwarder stops");
    assert_eq!(counters.dropped_total(), 0, "{counters:?}");
    result.gso = Some((counters.gso_sends, counters.gso_segments));
    result.cpu_ns_per_frame = cpu_before
        .zip(cpu_after)
        .filter(|_| counters.received > 0)
        .map(|(before, after)| after.saturating_sub(before) as f64 / counters.received as f64);
    result
}

/// CPU time (ns, from `/proc/self/task/*/schedstat`) of this process's thread named `name`
/// (the kernel keeps the first 15 bytes of a thread's name); `None` if there is no such thread
/// or no schedstat. The bench runs one forwarder at a time, so the name is unambiguous.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    let comm = &name[..name.len().min(15)];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let task_comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if task_comm.trim_end() == comm {
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            return schedstat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn tokio_relay(socket: UdpSocket, next_hop: SocketAddr, stop: Arc<AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let received =
                tokio::time::timeout(Duration::from_millis(50), socket.recv_from(&mut buf)).await;
            if let Ok(Ok((len, _))) = received {
                let _ = socket.send_to(&buf[..len], next_hop).await;
            }
        }
    });
}

/// What [`header_work_ns`] does per frame besides parse + hop-limit decrement.
#[derive(Clone, Copy)]
enum Work {
    /// Nothing more.
    Plain,
    /// The routing-key rewrite.
    Rewrite,
    /// The allowed-source lookup in a generation of [`ALLOWED_SOURCES`] addresses (a hit, as for
    /// every frame a fabric forwards).
    SourceCheck,
}

/// Nanoseconds per frame of the forwarder's header work on one 128-byte frame in place: the
/// source lookup if `work` says so (it comes first in the forwarder too), parse (every receive
/// check, the full checksum verify included), hop-limit decrement, and the routing-key rewrite
/// if `work` says so. The frame is restored from the template each time (a 64-byte copy, the
/// same in every variant), so every iteration does the same work.
fn header_work_ns(clock: Clock, work: Work, table: &FibTable) -> f64 {
    let template = frame_template();
    let mut frame = template.clone();
    let key = nexus_dataplane::wire::nexlink::RoutingKey(KEY_REWRITTEN.0);
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let start = clock.now_ns();
    for _ in 0..HEADER_WORK_FRAMES {
        frame[..HEADER_LEN].copy_from_slice(&template[..HEADER_LEN]);
        let datagram = std::hint::black_box(&mut frame[..]);
        if matches!(work, Work::SourceCheck) && !table.allows_source(std::hint::black_box(source)) {
            continue;
        }
        let repr = Repr::parse(&Packet::new_unchecked(&*datagram)).expect("the template parses");
        let mut packet = Packet::new_unchecked(&mut datagram[..repr.buffer_len()]);
        let _lowered = packet.decrement_hop_limit();
        if matches!(work, Work::Rewrite) {
            packet.rewrite_routing_key(std::hint::black_box(key));
        }
        std::hint::black_box(&frame);
    }
    (clock.now_ns() - start) as f64 / f64::from(HEADER_WORK_FRAMES)
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1e3
}

/// A [`PacketIo`] without sockets: every receive fills the batch with copies of one frame
/// "from" 127.0.0.1 until `frames` have been handed out, every send is counted and discarded.
/// Through it the forwarder's own per-frame work (source check, parse, hop-limit decrement,
/// lookup, copy into the send batch) runs as fast as one core allows, with no kernel in the
/// way; the socket paths above show the same code behind real I/O.
struct MemIo {
    frame: Vec<u8>,
    from: SocketAddr,
    left: u64,
    sent: Arc<AtomicU64>,
}

impl PacketIo for MemIo {
    fn recv_batch(&mut self, batch: &mut PacketBatch, timeout: Duration) -> io::Result<usize> {
        if self.left == 0 {
            thread::sleep(timeout);
            return Ok(0);
        }
        let mut n = 0;
        while self.left > 0 {
            let Some(slot) = batch.next_slot() else { break };
            slot[..self.frame.len()].copy_from_slice(&self.frame);
            batch.commit(self.frame.len(), self.from);
            self.left -= 1;
            n += 1;
        }
        Ok(n)
    }

    fn send_batch(&mut self, batch: &PacketBatch, from: usize) -> io::Result<usize> {
        let n = batch.len() - from;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
    }
}

/// Million frames per second through a forwarder on [`MemIo`], and the forwarder thread's CPU
/// time per frame (ns), the source check on or off, against the same generation as the socket
/// paths (one route, [`ALLOWED_SOURCES`] sources).
fn mem_forward(clock: Clock, source_check: bool) -> (f64, f64) {
    let mut routes = RouteSet::new(1);
    routes.set_sources(allowed_sources());
    routes
        .insert(
            KEY,
            vec![NextHop {
                node: [9; 32],
                addr: SocketAddr::from(([127, 0, 0, 1], 9)),
                weight: 1,
                rewrite: None,
            }],
        )
        .expect("route");
    let fib = Fib::new(FibTable::load(compile(&routes).expect("compile")).expect("load"));
    let sent = Arc::new(AtomicU64::new(0));
    let io = MemIo {
        frame: frame_template(),
        from: SocketAddr::from(([127, 0, 0, 1], 40000)),
        left: MEM_FRAMES,
        sent: Arc::clone(&sent),
    };
    let config = ForwarderConfig {
        source_check,
        recv_timeout: Duration::from_millis(1),
        ..ForwarderConfig::default()
    };
    let thread_name = config.thread_name.clone();
    let start = clock.now_ns();
    let forwarder = Forwarder::spawn(config, &fib, LocalEndpoints::new(), io).expect("spawn");
    let mut cpu_ns = 0;
    while sent.load(Ordering::Relaxed) < MEM_FRAMES {
        // The thread's run time so far (it starts at 0 with the thread); the last read before
        // the frames are all out is within one poll of the total.
        cpu_ns = thread_cpu_ns(&thread_name).unwrap_or(cpu_ns);
        thread::sleep(Duration::from_micros(500));
    }
    let elapsed_ns = clock.now_ns() - start;
    cpu_ns = thread_cpu_ns(&thread_name).unwrap_or(cpu_ns);
    let counters = forwarder.shutdown().expect("forwarder stops");
    assert_eq!(counters.forwarded, MEM_FRAMES, "{counters:?}");
    (
        MEM_FRAMES as f64 * 1e3 / elapsed_ns as f64,
        cpu_ns as f64 / MEM_FRAMES as f64,
    )
}

/// One line of per-round on/off ratios with their median and mean; nothing if there are none.
fn print_ratios(what: &str, ratios: &[f64]) {
    if ratios.is_empty() {
        return;
    }
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "source check on/off, {what}: {} (median {:.3}, mean {:.3})",
        shown.join(" / "),
        sorted[sorted.len() / 2],
        ratios.iter().sum::<f64>() / ratios.len() as f64
    );
}

fn main() {
    let clock = Clock::start();
    let source_check_only = std::env::args().any(|arg| arg == "source-check");
    let (paths, rounds) = if source_check_only {
        (
            vec![
                Path::Forwarder,
                Path::ForwarderNoCheck,
                Path::Uring,
                Path::UringNoCheck,
            ],
            SOURCE_CHECK_ROUNDS,
        )
    } else {
        (
            vec![
                Path::Kernel,
                Path::Forwarder,
                Path::ForwarderNoGso,
                Path::ForwarderNoCheck,
                Path::ForwarderRewrite,
                Path::Uring,
                Path::UringNoGso,
                Path::UringNoCheck,
                Path::TokioRelay,
            ],
            ROUNDS,
        )
    };
    println!(
        "forward bench: loopback, {}-byte frames, blast {BLAST_FRAMES} frames from one sender \
         thread, paced {PACED_FRAMES} frames at ~{PACED_RATE_PPS} pps, {rounds} rounds, \
         {} CPUs; forwarders check sources against {ALLOWED_SOURCES} allowed addresses \
         unless marked no srcchk",
        HEADER_LEN + PAYLOAD_LEN,
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<24} {:>5} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "path",
        "round",
        "blast rx",
        "loss %",
        "rx kpps",
        "blast p50",
        "blast p99",
        "paced p50",
        "paced p99"
    );
    // (path, round) → blast receive rate and forwarder CPU ns per frame, for the on/off ratios.
    let mut rates: Vec<(Path, usize, f64, Option<f64>)> = Vec::new();
    for round in 1..=rounds {
        // With `source-check`, every other round runs the paths in reverse, so that neither
        // side of a pair always runs first.
        let order: Vec<Path> = if source_check_only && round % 2 == 0 {
            paths.iter().rev().copied().collect()
        } else {
            paths.clone()
        };
        for path in &order {
            let mut blast = path.run(clock, BLAST_FRAMES, false);
            let mut paced = path.run(clock, PACED_FRAMES, true);
            blast.latencies_ns.sort_unstable();
            paced.latencies_ns.sort_unstable();
            let loss = 100.0 * (BLAST_FRAMES - blast.received) as f64 / BLAST_FRAMES as f64;
            rates.push((*path, round, blast.rate_pps, blast.cpu_ns_per_frame));
            println!(
                "{:<24} {:>5} {:>10} {:>7.2} {:>10.1} {:>8.1}us {:>8.1}us {:>8.1}us {:>8.1}us{}{}{}",
                path.name(),
                round,
                blast.received,
                loss,
                blast.rate_pps / 1e3,
                percentile_us(&blast.latencies_ns, 0.50),
                percentile_us(&blast.latencies_ns, 0.99),
                percentile_us(&paced.latencies_ns, 0.50),
                percentile_us(&paced.latencies_ns, 0.99),
                if paced.received < PACED_FRAMES {
                    format!("  (paced lost {})", PACED_FRAMES - paced.received)
                } else {
                    String::new()
                },
                match blast.gso {
                    Some((sends, segments)) if sends > 0 => format!(
                        "  gso {:.0}% of frames, {:.1}/send",
                        100.0 * segments as f64 / BLAST_FRAMES as f64,
                        segments as f64 / sends as f64
                    ),
                    _ => String::new(),
                },
                match blast.cpu_ns_per_frame {
                    Some(ns) => format!("  fwd cpu {ns:.0} ns/frame"),
                    None => String::new(),
                }
            );
        }
    }
    let rate = |path: Path, round: usize| {
        rates
            .iter()
            .find(|(p, r, _, _)| *p == path && *r == round)
            .map(|(_, _, rate, _)| *rate)
    };
    let cpu = |path: Path, round: usize| {
        rates
            .iter()
            .find(|(p, r, _, _)| *p == path && *r == round)
            .and_then(|(_, _, _, cpu)| *cpu)
    };
    for (on, off, name) in [
        (Path::Forwarder, Path::ForwarderNoCheck, "UdpIo"),
        (Path::Uring, Path::UringNoCheck, "UringIo"),
    ] {
        let rate_ratios: Vec<f64> = (1..=rounds)
            .filter_map(|round| Some(rate(on, round)? / rate(off, round)?))
            .collect();
        print_ratios(&format!("blast rx rate, {name}"), &rate_ratios);
        let cpu_ratios: Vec<f64> = (1..=rounds)
            .filter_map(|round| Some(cpu(on, round)? / cpu(off, round)?))
            .collect();
        print_ratios(
            &format!("forwarder CPU time per frame, {name}"),
            &cpu_ratios,
        );
    }
    if source_check_only {
        println!(
            "in-memory forwarding (no sockets; {MEM_FRAMES} frames per run, {MEM_ROUNDS} \
             interleaved on/off pairs, the order alternating)"
        );
        let (mut mpps_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        let (mut on_all, mut off_all) = (Vec::new(), Vec::new());
        for round in 1..=MEM_ROUNDS {
            let (on, off) = if round % 2 == 1 {
                let on = mem_forward(clock, true);
                (on, mem_forward(clock, false))
            } else {
                let off = mem_forward(clock, false);
                (mem_forward(clock, true), off)
            };
            println!(
                "round {round}: check on {:.3} Mpps, {:.1} ns/frame; off {:.3} Mpps, {:.1} ns/frame",
                on.0, on.1, off.0, off.1
            );
            mpps_ratios.push(on.0 / off.0);
            cpu_ratios.push(on.1 / off.1);
            on_all.push(on);
            off_all.push(off);
        }
        let best_mpps = |v: &[(f64, f64)]| v.iter().map(|r| r.0).fold(0.0, f64::max);
        let best_ns = |v: &[(f64, f64)]| v.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
        println!(
            "best: on {:.3} Mpps, {:.1} ns/frame; off {:.3} Mpps, {:.1} ns/frame; \
             on/off {:.3} (Mpps), {:.3} (ns/frame)",
            best_mpps(&on_all),
            best_ns(&on_all),
            best_mpps(&off_all),
            best_ns(&off_all),
            best_mpps(&on_all) / best_mpps(&off_all),
            best_ns(&on_all) / best_ns(&off_all)
        );
        print_ratios("in-memory Mpps", &mpps_ratios);
        print_ratios("in-memory forwarder CPU ns per frame", &cpu_ratios);
    }
    println!(
        "header work per frame, in-process ({HEADER_WORK_FRAMES} frames per round): \
         parse + hop-limit decrement vs. + routing-key rewrite vs. + source lookup \
         ({ALLOWED_SOURCES} allowed addresses)"
    );
    let mut routes = RouteSet::new(1);
    routes.set_sources(allowed_sources());
    let table = FibTable::load(compile(&routes).expect("compile")).expect("load");
    // Interleaved, and the best of the rounds reported too: on a shared machine the minimum is
    // the cost, the rest is other work stealing the core.
    let mut best = [f64::INFINITY; 3];
    for round in 1..=HEADER_WORK_ROUNDS {
        let plain = header_work_ns(clock, Work::Plain, &table);
        let rewrite = header_work_ns(clock, Work::Rewrite, &table);
        let checked = header_work_ns(clock, Work::SourceCheck, &table);
        for (best, now) in best.iter_mut().zip([plain, rewrite, checked]) {
            *best = best.min(now);
        }
        println!(
            "round {round}: {plain:>6.1} ns plain, {rewrite:>6.1} ns with rewrite, \
             {checked:>6.1} ns with source lookup"
        );
    }
    println!(
        "best: {:>6.1} ns plain, {:>6.1} ns with rewrite, {:>6.1} ns with source lookup",
        best[0], best[1], best[2]
    );
}
