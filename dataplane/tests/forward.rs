//! The forwarder conformance suite: the same cases run against every [`PacketIo`] backend, over
//! real UDP on 127.0.0.1 ephemeral ports.
//!
//! Each case is a function generic over a [`Backend`] (a factory for a bound backend);
//! `conformance_suite!` instantiates every case as a `#[test]` for one backend. Adding the
//! io_uring backend means implementing `Backend` for it (binding 127.0.0.1:0) and adding one
//! line: `conformance_suite!(io_uring, IoUring);` (behind the same `cfg` as the backend).
//!
//! Robust on a loaded machine: senders pace themselves on the forwarder's `received` counter
//! (at most one batch in flight), sinks drain on their own threads, and waits are generous
//! bounded polls on counts, never timings. "Nothing was sent" is checked by sending a valid
//! marker frame after the bad ones and seeing only the marker arrive (UDP on loopback from one
//! socket to one socket keeps order, and the forwarder sends in receive order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nexus_dataplane::fib::{Fib, FibTable, NextHop, RouteSet, RoutingKey, SourceSet, compile};
use nexus_dataplane::forward::{
    DROP_REASONS, Forwarder, ForwarderConfig, ForwarderCounters, ForwarderHandle, LocalEndpoints,
    PacketIo, UdpIo,
};
use nexus_dataplane::wire::nexlink::{
    DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr, SeqNumber,
    SessionId, StreamId, TrafficClass, field,
};

/// Longest any wait in this suite polls: 1000 × 10 ms.
const WAIT_POLLS_MAX: u32 = 1000;
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Frames a pacing sender lets ahead of the forwarder's `received` counter.
const IN_FLIGHT_MAX: u64 = 32;

/// A backend under test: binds a fresh instance on 127.0.0.1, ephemeral port.
trait Backend {
    type Io: PacketIo + 'static;
    fn bind() -> Self::Io;
}

/// The portable std-socket backend.
struct Portable;

impl Backend for Portable {
    type Io = UdpIo;
    fn bind() -> UdpIo {
        UdpIo::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
    }
}

/// The io_uring backend. Where io_uring is unavailable (old kernel, seccomp,
/// `kernel.io_uring_disabled`) its cases print why and run the portable backend instead: the
/// `Backend` trait has no way to skip, and failing would only report the machine.
#[cfg(target_os = "linux")]
struct IoUring;

#[cfg(target_os = "linux")]
enum UringOrSkipped {
    Uring(Box<nexus_dataplane::forward::UringIo>),
    Skipped(UdpIo),
}

#[cfg(target_os = "linux")]
impl PacketIo for UringOrSkipped {
    fn recv_batch(
        &mut self,
        batch: &mut nexus_dataplane::forward::PacketBatch,
        timeout: Duration,
    ) -> std::io::Result<usize> {
        match self {
            UringOrSkipped::Uring(io) => io.recv_batch(batch, timeout),
            UringOrSkipped::Skipped(io) => io.recv_batch(batch, timeout),
        }
    }
    fn send_batch(
        &mut self,
        batch: &nexus_dataplane::forward::PacketBatch,
        from: usize,
    ) -> std::io::Result<usize> {
        match self {
            UringOrSkipped::Uring(io) => io.send_batch(batch, from),
            UringOrSkipped::Skipped(io) => io.send_batch(batch, from),
        }
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            UringOrSkipped::Uring(io) => io.local_addr(),
            UringOrSkipped::Skipped(io) => io.local_addr(),
        }
    }
    fn set_gso(&mut self, enabled: bool) -> bool {
        match self {
            UringOrSkipped::Uring(io) => io.set_gso(enabled),
            UringOrSkipped::Skipped(io) => io.set_gso(enabled),
        }
    }
    fn stats(&self) -> nexus_dataplane::forward::IoStats {
        match self {
            UringOrSkipped::Uring(io) => io.stats(),
            UringOrSkipped::Skipped(io) => io.stats(),
        }
    }
}

#[cfg(target_os = "linux")]
impl Backend for IoUring {
    type Io = UringOrSkipped;
    fn bind() -> UringOrSkipped {
        match nexus_dataplane::forward::UringIo::bind("127.0.0.1:0") {
            Ok(io) => UringOrSkipped::Uring(Box::new(io)),
            Err(e) => {
                println!("SKIPPED io_uring (running the portable backend instead): {e}");
                eprintln!("SKIPPED io_uring (running the portable backend instead): {e}");
                UringOrSkipped::Skipped(Portable::bind())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const KEY_A: RoutingKey = RoutingKey(0xa000_0000_0000_0000_0000_0000_0000_000a);
const KEY_LOCAL: RoutingKey = RoutingKey(0x10ca_1000_0000_0000_0000_0000_0000_0001);
const KEY_UNKNOWN: RoutingKey = RoutingKey(0xdead);

fn hop(node: u8, addr: SocketAddr, weight: u32) -> NextHop {
    NextHop {
        node: [node; 32],
        addr,
        weight,
        rewrite: None,
    }
}

/// Where the suite's senders (and forwarders, which feed each other) send from.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A second loopback address (Linux routes all of 127.0.0.0/8 to `lo`): a sender bound here is
/// a source the tables do not allow unless they say so.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A generation with `routes` that allows frames from [`LOOPBACK`], where every sender and
/// forwarder of the suite sends from.
fn table(generation: u64, routes: &[(RoutingKey, Vec<NextHop>)]) -> FibTable {
    table_with_sources(generation, routes, &[LOOPBACK])
}

fn table_with_sources(
    generation: u64,
    routes: &[(RoutingKey, Vec<NextHop>)],
    sources: &[IpAddr],
) -> FibTable {
    let mut set = RouteSet::new(generation);
    for (key, hops) in routes {
        set.insert(*key, hops.clone()).expect("valid route");
    }
    set.set_sources(SourceSet::try_from(sources.to_vec()).expect("valid sources"));
    FibTable::load(compile(&set).expect("compiles")).expect("loads")
}

struct FrameSpec {
    key: RoutingKey,
    src: u64,
    session: u64,
    stream: u32,
    seq: u32,
    hop_limit: u8,
    payload: Vec<u8>,
}

impl FrameSpec {
    fn new(key: RoutingKey) -> Self {
        FrameSpec {
            key,
            src: 7,
            session: 11,
            stream: 1,
            seq: 0,
            hop_limit: 64,
            payload: b"nexus payload".to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let repr = Repr {
            frame_type: FrameType::Data,
            flags: Flags::EMPTY,
            delivery_mode: DeliveryMode::ALL[0],
            traffic_class: TrafficClass::new(3).expect("valid class"),
            ecn: Ecn::NotEct,
            hop_limit: HopLimit::new(self.hop_limit).expect("hop limit above 0"),
            routing_key: nexus_dataplane::wire::nexlink::RoutingKey(self.key.0),
            src: NodeTag(self.src),
            dst: NodeTag(99),
            session: SessionId(self.session),
            stream: StreamId(self.stream),
            seq: SeqNumber(self.seq),
            payload_len: u16::try_from(self.payload.len()).expect("small payload"),
            tensor: None,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        buf[HEADER_LEN..].copy_from_slice(&self.payload);
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]))
            .expect("valid header");
        buf
    }
}

/// A UDP endpoint that collects every datagram it receives, on its own thread.
struct Sink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        // Room for bursts while the sink thread is descheduled (capped by net.core.rmem_max).
        socket2::SockRef::from(&socket)
            .set_recv_buffer_size(1 << 22)
            .expect("sink buffer size");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("sink addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, _)) = socket.recv_from(&mut buf) {
                        received
                            .lock()
                            .expect("sink lock")
                            .push(buf[..len].to_vec());
                    }
                }
            })
        };
        Sink {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.received.lock().expect("sink lock").len()
    }

    fn datagrams(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("sink lock").clone()
    }

    fn wait_for(&self, count: usize) -> Vec<Vec<u8>> {
        wait_until(&format!("{count} datagrams at {}", self.addr), || {
            self.count() >= count
        });
        self.datagrams()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("sink thread");
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..WAIT_POLLS_MAX {
        if done() {
            return;
        }
        thread::sleep(WAIT_POLL_INTERVAL);
    }
    panic!("timed out waiting for {what}");
}

/// A forwarder under test plus the socket that feeds it.
struct Rig {
    fib: Fib,
    forwarder: ForwarderHandle,
    sender: UdpSocket,
    sent: u64,
}

impl Rig {
    fn start<B: Backend>(initial: FibTable, local: LocalEndpoints) -> Rig {
        Self::start_with::<B>(initial, local, true)
    }

    /// A rig whose forwarder checks sources or not.
    fn start_with<B: Backend>(initial: FibTable, local: LocalEndpoints, source_check: bool) -> Rig {
        let fib = Fib::new(initial);
        let config = ForwarderConfig {
            thread_name: "forwarder-under-test".to_owned(),
            recv_timeout: Duration::from_millis(20),
            source_check,
            ..ForwarderConfig::default()
        };
        let forwarder = Forwarder::spawn(config, &fib, local, B::bind()).expect("spawn");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        Rig {
            fib,
            forwarder,
            sender,
            sent: 0,
        }
    }

    /// Sends one datagram, first waiting until the forwarder is at most `IN_FLIGHT_MAX` behind.
    fn send(&mut self, datagram: &[u8]) {
        self.pace();
        self.sender
            .send_to(datagram, self.forwarder.local_addr())
            .expect("send to forwarder");
        self.sent += 1;
    }

    /// [`send`](Self::send) from another socket (another source address).
    fn send_from(&mut self, socket: &UdpSocket, datagram: &[u8]) {
        self.pace();
        socket
            .send_to(datagram, self.forwarder.local_addr())
            .expect("send to forwarder");
        self.sent += 1;
    }

    /// Waits until the forwarder is at most `IN_FLIGHT_MAX` datagrams behind.
    fn pace(&self) {
        if self.sent >= IN_FLIGHT_MAX {
            let behind = self.sent - IN_FLIGHT_MAX;
            self.wait_counters("the forwarder to catch up", |c| c.received >= behind);
        }
    }

    /// Sends one datagram that must reach one of `sinks`, first waiting until at most
    /// `IN_FLIGHT_MAX` such datagrams are on their way (end-to-end pacing: a sink thread that
    /// falls behind cannot overflow its socket).
    fn send_to_sinks(&mut self, datagram: &[u8], sinks: &[&Sink], sent_before: &mut usize) {
        if *sent_before >= IN_FLIGHT_MAX as usize {
            let behind = *sent_before - IN_FLIGHT_MAX as usize;
            wait_until("the sinks to catch up", || {
                sinks.iter().map(|sink| sink.count()).sum::<usize>() >= behind
            });
        }
        self.send(datagram);
        *sent_before += 1;
    }

    fn wait_counters(
        &self,
        what: &str,
        mut done: impl FnMut(&ForwarderCounters) -> bool,
    ) -> ForwarderCounters {
        let mut last = ForwarderCounters::default();
        for _ in 0..WAIT_POLLS_MAX {
            last = self.forwarder.counters();
            if done(&last) {
                return last;
            }
            thread::sleep(WAIT_POLL_INTERVAL);
        }
        panic!("timed out waiting for {what}; counters {last:?}");
    }

    /// Waits until every sent datagram is accounted for, checks the accounting identity, and
    /// returns the counters.
    fn settle(&self) -> ForwarderCounters {
        let sent = self.sent;
        let counters = self.wait_counters("every datagram to be processed", |c| c.received >= sent);
        assert_eq!(counters.received, sent, "received more than was sent");
        assert_eq!(
            counters.received,
            counters.forwarded + counters.delivered_local + counters.dropped_total(),
            "every datagram ends in exactly one outcome: {counters:?}"
        );
        assert_eq!(counters.send_errors, 0);
        counters
    }
}

fn only_drop(counters: &ForwarderCounters, reason: &str, count: u64) {
    for (label, value) in counters.drops() {
        let expected = if label == reason { count } else { 0 };
        assert_eq!(value, expected, "drops for {label}: {counters:?}");
    }
}

fn parse(datagram: &[u8]) -> Repr {
    Repr::parse(&Packet::new_unchecked(datagram)).expect("a forwarded frame parses")
}

// ---------------------------------------------------------------------------------------------
// Cases

fn routed_frame_changes_only_hop_limit_and_checksum<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]),
        LocalEndpoints::new(),
    );
    let sent = FrameSpec::new(KEY_A).encode();
    rig.send(&sent);
    let got = sink.wait_for(1);
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.len(), sent.len());
    for (offset, (a, b)) in sent.iter().zip(got).enumerate() {
        if offset != field::HOP_LIMIT && !field::CHECKSUM.contains(&offset) {
            assert_eq!(a, b, "byte {offset} changed");
        }
    }
    assert_eq!(got[field::HOP_LIMIT], 63, "hop limit decremented once");
    let packet = Packet::new_checked(&got[..]).expect("structurally valid");
    assert!(packet.verify_checksum(), "checksum updated correctly");
    assert_eq!(parse(got).hop_limit.get(), 63);
    let counters = rig.settle();
    assert_eq!(counters.forwarded, 1);
    assert_eq!(counters.generation, 1);
    assert!(counters.batches >= 1);
    only_drop(&counters, "", 0);
}

fn hop_limit_one_is_dropped<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]),
        LocalEndpoints::new(),
    );
    let mut last_hop = FrameSpec::new(KEY_A);
    last_hop.hop_limit = 1;
    last_hop.seq = 1;
    rig.send(&last_hop.encode());
    let mut marker = FrameSpec::new(KEY_A);
    marker.hop_limit = 2;
    marker.seq = 2;
    rig.send(&marker.encode());
    let got = sink.wait_for(1);
    let counters = rig.settle();
    assert_eq!(got.len(), 1, "only the marker arrives");
    let repr = parse(&got[0]);
    assert_eq!((repr.seq.0, repr.hop_limit.get()), (2, 1));
    assert_eq!(counters.forwarded, 1);
    only_drop(&counters, "hop_limit_exceeded", 1);
}

fn malformed_frames_are_dropped_by_reason<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]),
        LocalEndpoints::new(),
    );
    let good = FrameSpec::new(KEY_A).encode();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..HEADER_LEN - 1].to_vec()),
        ("truncated", Vec::new()),
        ("bad_version", {
            let mut frame = good.clone();
            frame[field::VER_FLAGS] = (2 << 4) | (frame[field::VER_FLAGS] & 0x0f);
            frame
        }),
        ("bad_checksum", {
            let mut frame = good.clone();
            frame[field::ROUTING_KEY.start] ^= 0x01;
            frame
        }),
        ("payload_length", good[..good.len() - 1].to_vec()),
        ("hop_limit_zero", {
            let mut frame = good.clone();
            frame[field::HOP_LIMIT] = 0;
            Packet::new_unchecked(&mut frame[..]).fill_checksum();
            frame
        }),
    ];
    for (reason, frame) in &cases {
        let before = rig.forwarder.counters();
        rig.send(frame);
        let sent = rig.sent;
        let after = rig.wait_counters(reason, |c| c.received >= sent);
        let delta = |c: &ForwarderCounters| c.dropped_for(reason).expect("known reason");
        assert_eq!(delta(&after) - delta(&before), 1, "{reason}: {after:?}");
    }
    rig.send(&good);
    let got = sink.wait_for(1);
    let counters = rig.settle();
    assert_eq!(
        got,
        vec![{
            let mut expected = good.clone();
            Packet::new_unchecked(&mut expected[..])
                .decrement_hop_limit()
                .expect("hop limit 64");
            expected
        }]
    );
    assert_eq!(counters.forwarded, 1);
    assert_eq!(counters.dropped_total(), cases.len() as u64);
    for reason in DROP_REASONS {
        let expected = cases.iter().filter(|(r, _)| *r == reason).count() as u64;
        assert_eq!(counters.dropped_for(reason), Some(expected), "{reason}");
    }
}

fn unknown_key_is_dropped_no_route<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]),
        LocalEndpoints::new(),
    );
    rig.send(&FrameSpec::new(KEY_UNKNOWN).encode());
    rig.send(&FrameSpec::new(KEY_A).encode());
    let got = sink.wait_for(1);
    let counters = rig.settle();
    assert_eq!(got.len(), 1);
    assert_eq!(parse(&got[0]).routing_key.0, KEY_A.0);
    assert_eq!(counters.forwarded, 1);
    only_drop(&counters, "no_route", 1);
}

fn local_key_is_delivered_unchanged<B: Backend>() {
    let local_sink = Sink::start();
    let remote_sink = Sink::start();
    let mut local = LocalEndpoints::new();
    local.insert(KEY_LOCAL, local_sink.addr).expect("room");
    // The FIB also has a route for the key: local delivery wins.
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_LOCAL, vec![hop(1, remote_sink.addr, 1)])]),
        local,
    );
    let mut frame = FrameSpec::new(KEY_LOCAL);
    frame.hop_limit = 1; // arrived: no link left to cross, still delivered
    let sent = frame.encode();
    rig.send(&sent);
    assert_eq!(
        local_sink.wait_for(1),
        vec![sent.clone()],
        "delivered byte for byte"
    );
    let counters = rig.settle();
    assert_eq!((counters.delivered_local, counters.forwarded), (1, 0));

    // Replaced at run time: the key is no longer local, so it follows the FIB.
    rig.forwarder.set_local_endpoints(LocalEndpoints::new());
    let mut frame = FrameSpec::new(KEY_LOCAL);
    frame.seq = 1;
    rig.send(&frame.encode());
    let got = remote_sink.wait_for(1);
    assert_eq!(parse(&got[0]).seq.0, 1);
    let counters = rig.settle();
    assert_eq!((counters.delivered_local, counters.forwarded), (1, 1));
    assert_eq!(local_sink.count(), 1);
    only_drop(&counters, "", 0);
}

fn weighted_multipath_keeps_flows_together<B: Backend>() {
    const FLOWS: u32 = 400;
    const FRAMES_PER_FLOW: u32 = 3;
    let heavy = Sink::start();
    let light = Sink::start();
    let mut rig = Rig::start::<B>(
        table(
            1,
            &[(KEY_A, vec![hop(1, heavy.addr, 3), hop(2, light.addr, 1)])],
        ),
        LocalEndpoints::new(),
    );
    // Flows differ in source tag, session or stream; frames of one flow interleave with others.
    let mut sent = 0;
    let flow_of = |flow: u32| (u64::from(flow % 7), u64::from(flow / 7), flow % 3);
    for seq in 0..FRAMES_PER_FLOW {
        for flow in 0..FLOWS {
            let (src, session, stream) = flow_of(flow);
            let mut frame = FrameSpec::new(KEY_A);
            (frame.src, frame.session, frame.stream, frame.seq) = (src, session, stream, seq);
            rig.send_to_sinks(&frame.encode(), &[&heavy, &light], &mut sent);
        }
    }
    let total = (FLOWS * FRAMES_PER_FLOW) as usize;
    wait_until("all frames at the sinks", || {
        heavy.count() + light.count() >= total
    });
    let counters = rig.settle();
    assert_eq!(counters.forwarded, u64::from(FLOWS * FRAMES_PER_FLOW));
    only_drop(&counters, "", 0);

    let flows_at = |sink: &Sink| -> BTreeMap<(u64, u64, u32), u32> {
        let mut flows = BTreeMap::new();
        for datagram in sink.datagrams() {
            let repr = parse(&datagram);
            *flows
                .entry((repr.src.0, repr.session.0, repr.stream.0))
                .or_insert(0) += 1;
        }
        flows
    };
    let (at_heavy, at_light) = (flows_at(&heavy), flows_at(&light));
    let heavy_keys: BTreeSet<_> = at_heavy.keys().collect();
    let light_keys: BTreeSet<_> = at_light.keys().collect();
    assert!(
        heavy_keys.is_disjoint(&light_keys),
        "a flow was split across next hops"
    );
    assert_eq!(heavy_keys.len() + light_keys.len(), FLOWS as usize);
    assert!(
        at_heavy
            .values()
            .chain(at_light.values())
            .all(|n| *n == FRAMES_PER_FLOW)
    );
    let heavy_share = heavy_keys.len() as f64 / f64::from(FLOWS);
    assert!(
        (0.65..=0.85).contains(&heavy_share),
        "weight 3:1 gave a {heavy_share:.3} share to the heavy next hop"
    );
}

fn fib_swap_mid_stream_loses_nothing<B: Backend>() {
    const FRAMES: u32 = 3000;
    const SWAP_AFTER: u64 = 1000;
    let old_hop = Sink::start();
    let new_hop = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, old_hop.addr, 1)])]),
        LocalEndpoints::new(),
    );
    let new_table = table(2, &[(KEY_A, vec![hop(2, new_hop.addr, 1)])]);
    // The installer runs beside the sender and swaps as soon as it is told SWAP_AFTER frames
    // went out, while frames are still arriving.
    let fib = rig.fib.clone();
    let (go, wait_for_go) = std::sync::mpsc::sync_channel::<()>(1);
    let installer = thread::spawn(move || {
        wait_for_go.recv().expect("sender signals");
        fib.install(new_table).expect("generation 2 installs")
    });
    // The first sequence number sent once the install had returned.
    let mut first_after_install = None;
    let mut sent = 0;
    for seq in 0..FRAMES {
        if first_after_install.is_none() && installer.is_finished() {
            first_after_install = Some(seq);
        }
        let mut frame = FrameSpec::new(KEY_A);
        frame.seq = seq;
        rig.send_to_sinks(&frame.encode(), &[&old_hop, &new_hop], &mut sent);
        if u64::from(seq) == SWAP_AFTER {
            go.send(()).expect("installer waiting");
        }
    }
    assert_eq!(
        installer.join().expect("installer"),
        1,
        "replaced generation 1"
    );
    wait_until("all frames at the sinks", || {
        old_hop.count() + new_hop.count() >= FRAMES as usize
    });
    let counters = rig.settle();
    assert_eq!(
        counters.forwarded,
        u64::from(FRAMES),
        "zero frames lost to the swap"
    );
    only_drop(&counters, "", 0);
    assert_eq!(counters.generation, 2);
    let seqs =
        |sink: &Sink| -> Vec<u32> { sink.datagrams().iter().map(|d| parse(d).seq.0).collect() };
    let (old_seqs, new_seqs) = (seqs(&old_hop), seqs(&new_hop));
    assert_eq!(old_seqs.len() + new_seqs.len(), FRAMES as usize);
    assert!(
        !old_seqs.is_empty() && !new_seqs.is_empty(),
        "the swap happened mid-stream"
    );
    let old_max = old_seqs.iter().max().expect("non-empty");
    let new_min = new_seqs.iter().min().expect("non-empty");
    assert!(
        old_max < new_min,
        "after the swap no frame used the old generation: old max {old_max}, new min {new_min}"
    );
    // Frames sent after the install returned follow it.
    let first_after_install = first_after_install.expect("the install finished mid-stream");
    assert!(
        *old_max < first_after_install,
        "frame {old_max} used generation 1 though sent after the install (from {first_after_install})"
    );
}

/// The per-service keys an egress node knows its services by (what an ingress hop rewrites to).
const KEY_SERVICE_B0: RoutingKey = RoutingKey(0x5e41_b000_0000_0000_0000_0000_0000_0000);
const KEY_SERVICE_B1: RoutingKey = RoutingKey(0x5e41_b001_0000_0000_0000_0000_0000_0001);

fn rewriting(hop: NextHop, key: RoutingKey) -> NextHop {
    NextHop {
        rewrite: Some(key),
        ..hop
    }
}

/// `sent` as a forwarder must send it to a hop that rewrites to `key`: hop limit lowered, key
/// written, checksum valid (computed here from scratch, not incrementally).
fn expected_rewritten(sent: &[u8], key: RoutingKey) -> Vec<u8> {
    let mut expected = sent.to_vec();
    expected[field::HOP_LIMIT] -= 1;
    let mut packet = Packet::new_unchecked(&mut expected[..]);
    packet.set_routing_key(nexus_dataplane::wire::nexlink::RoutingKey(key.0));
    packet.fill_checksum();
    expected
}

fn forward_with_rewrite<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(
            1,
            &[(KEY_A, vec![rewriting(hop(1, sink.addr, 1), KEY_SERVICE_B0)])],
        ),
        LocalEndpoints::new(),
    );
    let mut spec = FrameSpec::new(KEY_A);
    spec.payload = (0..=255u8).collect();
    let sent = spec.encode();
    rig.send(&sent);
    let got = sink.wait_for(1);
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.len(), sent.len());
    for (offset, (a, b)) in sent.iter().zip(got).enumerate() {
        if offset != field::HOP_LIMIT
            && !field::CHECKSUM.contains(&offset)
            && !field::ROUTING_KEY.contains(&offset)
        {
            assert_eq!(a, b, "byte {offset} changed");
        }
    }
    let packet = Packet::new_checked(&got[..]).expect("structurally valid, checksum included");
    assert!(packet.verify_checksum());
    assert_eq!(packet.payload(), &spec.payload[..], "payload unchanged");
    let repr = parse(got);
    assert_eq!(repr.routing_key.0, KEY_SERVICE_B0.0, "the hop's key");
    assert_eq!(repr.hop_limit.get(), 63, "hop limit decremented once");
    assert_eq!(got, &expected_rewritten(&sent, KEY_SERVICE_B0));
    let counters = rig.settle();
    assert_eq!(counters.forwarded, 1);
    only_drop(&counters, "", 0);
}

/// The ingress → egress path the rewrite exists for: the ingress forwarder maps the intent
/// class to node B's service key; B's forwarder knows only that service key (its local
/// endpoint table) and delivers the frame to the service.
fn rewritten_frame_is_delivered_by_the_egress_node<B: Backend>() {
    let service = Sink::start();
    let mut egress_local = LocalEndpoints::new();
    egress_local
        .insert(KEY_SERVICE_B0, service.addr)
        .expect("room");
    let egress_fib = Fib::new(table(1, &[]));
    let egress = Forwarder::spawn(
        ForwarderConfig {
            thread_name: "egress-under-test".to_owned(),
            recv_timeout: Duration::from_millis(20),
            ..ForwarderConfig::default()
        },
        &egress_fib,
        egress_local,
        B::bind(),
    )
    .expect("spawn egress");
    let mut ingress = Rig::start::<B>(
        table(
            1,
            &[(
                KEY_A,
                vec![rewriting(hop(2, egress.local_addr(), 1), KEY_SERVICE_B0)],
            )],
        ),
        LocalEndpoints::new(),
    );
    let sent = FrameSpec::new(KEY_A).encode();
    ingress.send(&sent);
    let got = service.wait_for(1);
    assert_eq!(got, vec![expected_rewritten(&sent, KEY_SERVICE_B0)]);
    let counters = ingress.settle();
    assert_eq!(counters.forwarded, 1);
    let egress_counters = egress.shutdown().expect("egress stops");
    assert_eq!(
        (egress_counters.delivered_local, egress_counters.forwarded),
        (1, 0)
    );
    assert_eq!(egress_counters.dropped_total(), 0, "{egress_counters:?}");
}

fn mixed_group_rewrites_only_where_the_hop_says<B: Backend>() {
    const FLOWS: u32 = 300;
    const FRAMES_PER_FLOW: u32 = 2;
    // Node 2 runs two services behind one data-plane address (two hops, one address, each with
    // its own rewrite); node 3 is reached without a rewrite.
    let node_b = Sink::start();
    let node_c = Sink::start();
    let mut rig = Rig::start::<B>(
        table(
            1,
            &[(
                KEY_A,
                vec![
                    rewriting(hop(2, node_b.addr, 1), KEY_SERVICE_B0),
                    rewriting(hop(2, node_b.addr, 1), KEY_SERVICE_B1),
                    hop(3, node_c.addr, 2),
                ],
            )],
        ),
        LocalEndpoints::new(),
    );
    let mut sent = 0;
    let mut payloads = BTreeMap::new();
    for seq in 0..FRAMES_PER_FLOW {
        for flow in 0..FLOWS {
            let mut frame = FrameSpec::new(KEY_A);
            (frame.src, frame.session, frame.stream, frame.seq) =
                (u64::from(flow % 5), u64::from(flow), flow % 2, seq);
            frame.payload = format!("flow {flow} frame {seq}").into_bytes();
            payloads.insert((u64::from(flow), seq), frame.payload.clone());
            rig.send_to_sinks(&frame.encode(), &[&node_b, &node_c], &mut sent);
        }
    }
    let total = (FLOWS * FRAMES_PER_FLOW) as usize;
    wait_until("all frames at the sinks", || {
        node_b.count() + node_c.count() >= total
    });
    let counters = rig.settle();
    assert_eq!(counters.forwarded, u64::from(FLOWS * FRAMES_PER_FLOW));
    only_drop(&counters, "", 0);

    // Per flow (session id), the keys its frames arrived with.
    let mut keys_of_flow: BTreeMap<u64, BTreeSet<(bool, u128)>> = BTreeMap::new();
    for (at_b, sink) in [(true, &node_b), (false, &node_c)] {
        for datagram in sink.datagrams() {
            let packet = Packet::new_checked(&datagram[..]).expect("valid checksum");
            let repr = parse(&datagram);
            assert_eq!(repr.hop_limit.get(), 63);
            assert_eq!(
                Some(packet.payload()),
                payloads
                    .get(&(repr.session.0, repr.seq.0))
                    .map(Vec::as_slice),
                "payload unchanged"
            );
            keys_of_flow
                .entry(repr.session.0)
                .or_default()
                .insert((at_b, repr.routing_key.0));
        }
    }
    assert_eq!(keys_of_flow.len(), FLOWS as usize);
    let mut seen = BTreeMap::new();
    for (flow, keys) in &keys_of_flow {
        assert_eq!(
            keys.len(),
            1,
            "flow {flow} took more than one path: {keys:?}"
        );
        let (at_b, key) = *keys.first().expect("one");
        match key {
            k if k == KEY_SERVICE_B0.0 || k == KEY_SERVICE_B1.0 => {
                assert!(at_b, "a rewritten frame at node 3")
            }
            k if k == KEY_A.0 => assert!(!at_b, "node 2's hops always rewrite"),
            other => panic!("flow {flow} arrived with key {other:032x}"),
        }
        *seen.entry(key).or_insert(0u32) += 1;
    }
    // Weights 1 : 1 : 2 over 300 flows.
    for (key, low, high) in [
        (KEY_SERVICE_B0.0, 45, 110),
        (KEY_SERVICE_B1.0, 45, 110),
        (KEY_A.0, 115, 185),
    ] {
        let flows = seen.get(&key).copied().unwrap_or(0);
        assert!(
            (low..=high).contains(&flows),
            "{flows} flows with key {key:032x}: {seen:?}"
        );
    }
}

fn shutdown_is_clean<B: Backend>() {
    let sink = Sink::start();
    let mut rig = Rig::start::<B>(
        table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]),
        LocalEndpoints::new(),
    );
    rig.send(&FrameSpec::new(KEY_A).encode());
    sink.wait_for(1);
    let Rig { forwarder, .. } = rig;
    let last = forwarder.shutdown().expect("clean stop");
    assert_eq!((last.received, last.forwarded), (1, 1));
}

/// A send batch mixing two destinations, equal-size runs (GSO candidates), short last
/// segments, size changes, alternating singletons and a run too large for one GSO send: every
/// datagram arrives exactly once, byte for byte, in per-destination order, with GSO on or off.
/// With GSO on (where the kernel has it) the backend counts GSO sends; with it off, none.
fn send_batch_to_mixed_destinations<B: Backend>(gso: bool) {
    use nexus_dataplane::forward::{DATAGRAM_BYTES_MAX, IoStats, PacketBatch};
    let sinks = [Sink::start(), Sink::start()];
    let mut io = B::bind();
    let on = io.set_gso(gso);
    assert!(gso || !on, "set_gso(false) must turn GSO off");
    // (destination, size) in send order.
    let mut layout = Vec::new();
    layout.extend([(0, 200); 5]);
    layout.push((0, 120)); // a shorter last segment ends the run
    layout.extend([(1, 200); 3]);
    layout.extend([(0, 200); 2]); // A again, after its short datagram
    layout.extend([(1, 300), (1, 300)]); // larger than the previous segment size
    layout.extend([(0, 64), (1, 64), (0, 64), (1, 64)]); // alternating singletons
    layout.extend([(1, DATAGRAM_BYTES_MAX); 7]); // more than one GSO send can carry
    layout.extend([(0, 1), (0, 1), (0, 1)]);
    assert!(layout.len() <= nexus_dataplane::forward::BATCH_MAX);
    let mut expected: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let rounds = 3u8;
    for round in 0..rounds {
        let mut batch = PacketBatch::new();
        for (index, &(dest, size)) in layout.iter().enumerate() {
            let mut datagram = vec![round; size];
            datagram[0] = u8::try_from(index).expect("small");
            datagram[size - 1] ^= 0x5a;
            assert!(batch.push(&datagram, sinks[dest].addr));
            expected[dest].push(datagram);
        }
        let mut from = 0;
        while from < batch.len() {
            match io.send_batch(&batch, from) {
                Ok(sent) => {
                    assert!(
                        sent > 0 && from + sent <= batch.len(),
                        "sent {sent} at {from}"
                    );
                    from += sent;
                }
                Err(e) => panic!("send at {from}: {e}"),
            }
        }
    }
    for (sink, expected) in sinks.iter().zip(&expected) {
        let got = sink.wait_for(expected.len());
        // Nothing more arrives (no duplicates).
        thread::sleep(Duration::from_millis(50));
        assert_eq!(sink.count(), expected.len());
        assert_eq!(got.len(), expected.len());
        for (index, (got, want)) in got.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "datagram {index} at {}", sink.addr);
        }
    }
    let stats = io.stats();
    if on {
        assert!(stats.gso_sends >= u64::from(rounds), "{stats:?}");
        assert!(stats.gso_segments >= 2 * stats.gso_sends, "{stats:?}");
        assert_eq!(stats.gso_fallbacks, 0, "{stats:?}");
    } else {
        assert_eq!(stats, IoStats::default());
    }
}

fn send_batch_to_mixed_destinations_gso<B: Backend>() {
    send_batch_to_mixed_destinations::<B>(true);
}

fn send_batch_to_mixed_destinations_no_gso<B: Backend>() {
    send_batch_to_mixed_destinations::<B>(false);
}

/// Through the forwarder with GSO on (the default): interleaved flows to two next hops and a
/// local endpoint, every frame arrives once and in per-flow order, and the forwarder's counters
/// show the GSO sends the backend made.
fn forwarded_flows_with_gso_keep_order<B: Backend>() {
    let sinks = [Sink::start(), Sink::start()];
    let key_b = RoutingKey(0xb000_0000_0000_0000_0000_0000_0000_000b);
    let mut rig = Rig::start::<B>(
        table(
            1,
            &[
                (KEY_A, vec![hop(1, sinks[0].addr, 1)]),
                (key_b, vec![hop(2, sinks[1].addr, 1)]),
            ],
        ),
        LocalEndpoints::new(),
    );
    let frames_per_flow = 400u32;
    let mut sent = [Vec::new(), Vec::new()];
    // Runs of 4 frames per flow, alternating, so receive batches hold same-destination runs
    // (GSO sends) next to the other destination's.
    for block in 0..frames_per_flow / 4 {
        for (dest, key) in [(0u32, KEY_A), (1, key_b)] {
            for seq in block * 4..block * 4 + 4 {
                let mut spec = FrameSpec::new(key);
                spec.stream = dest;
                spec.seq = seq;
                let frame = spec.encode();
                rig.send(&frame);
                sent[usize::try_from(dest).expect("small")].push(frame);
            }
        }
    }
    for (sink, sent) in sinks.iter().zip(&sent) {
        let got = sink.wait_for(sent.len());
        assert_eq!(got.len(), sent.len());
        let seqs: Vec<u32> = got.iter().map(|d| parse(d).seq.0).collect();
        assert_eq!(seqs, (0..frames_per_flow).collect::<Vec<_>>());
        for (got, sent) in got.iter().zip(sent) {
            // Only the hop limit and the checksum change on the way.
            assert_eq!(got[HEADER_LEN..], sent[HEADER_LEN..]);
            assert_eq!(parse(got).hop_limit.get() + 1, parse(sent).hop_limit.get());
        }
    }
    let counters = rig.settle();
    assert_eq!(counters.forwarded, u64::from(2 * frames_per_flow));
    assert_eq!(counters.send_errors, 0);
    assert!(counters.gso_segments <= counters.forwarded, "{counters:?}");
    assert!(
        counters.gso_sends * 2 <= counters.gso_segments,
        "{counters:?}"
    );
}

/// A socket on [`OTHER_LOOPBACK`]: a source the suite's tables allow only when they say so.
fn other_sender() -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(OTHER_LOOPBACK, 0)).expect("bind 127.0.0.2:0")
}

/// Frames from a source the generation does not allow are dropped as `source_not_allowed`
/// before anything else looks at them: a routable frame, a frame for a local endpoint, a frame
/// with no route and a malformed datagram all count under that reason only (no `no_route`, no
/// `truncated`, no local delivery), while a frame from the allowed source is forwarded.
fn frames_from_other_sources_are_dropped_before_lookup<B: Backend>() {
    let sink = Sink::start();
    let local_sink = Sink::start();
    let mut local = LocalEndpoints::new();
    local.insert(KEY_LOCAL, local_sink.addr).expect("room");
    let mut rig = Rig::start::<B>(table(1, &[(KEY_A, vec![hop(1, sink.addr, 1)])]), local);
    let stranger = other_sender();
    let refused = [
        FrameSpec::new(KEY_A).encode(),
        FrameSpec::new(KEY_LOCAL).encode(),
        FrameSpec::new(KEY_UNKNOWN).encode(),
        b"not a nexlink frame".to_vec(),
    ];
    for datagram in &refused {
        rig.send_from(&stranger, datagram);
    }
    // Sent after the refused ones from the allowed source: it arrives, and alone.
    let mut marker = FrameSpec::new(KEY_A);
    marker.seq = 9;
    rig.send(&marker.encode());
    let got = sink.wait_for(1);
    let counters = rig.settle();
    assert_eq!(got.len(), 1, "only the allowed source's frame is forwarded");
    assert_eq!(parse(&got[0]).seq.0, 9);
    assert_eq!(local_sink.count(), 0, "nothing delivered locally");
    assert_eq!((counters.forwarded, counters.delivered_local), (1, 0));
    only_drop(&counters, "source_not_allowed", refused.len() as u64);
}

/// The allowed sources belong to the generation: generation 1 allows 127.0.0.1 and routes to
/// the old next hop, generation 2 allows 127.0.0.2 and routes to the new one. Frames alternate
/// between the two sources while generation 2 is installed mid-stream: every frame that is
/// forwarded went where the generation that allowed its source routes it (never old sources
/// with new routes, or the reverse), and none is both before and after the cut. A rollback
/// brings generation 1's sources back with its routes.
fn generation_swap_changes_allowed_sources_with_the_routes<B: Backend>() {
    const FRAMES: u32 = 2000;
    const SWAP_AFTER: u32 = 700;
    let old_hop = Sink::start();
    let new_hop = Sink::start();
    let mut rig = Rig::start::<B>(
        table_with_sources(1, &[(KEY_A, vec![hop(1, old_hop.addr, 1)])], &[LOOPBACK]),
        LocalEndpoints::new(),
    );
    let new_table = table_with_sources(
        2,
        &[(KEY_A, vec![hop(2, new_hop.addr, 1)])],
        &[OTHER_LOOPBACK],
    );
    let stranger = other_sender();
    let fib = rig.fib.clone();
    let (go, wait_for_go) = std::sync::mpsc::sync_channel::<()>(1);
    let installer = thread::spawn(move || {
        wait_for_go.recv().expect("sender signals");
        fib.install(new_table).expect("generation 2 installs")
    });
    // Every sent frame ends at a sink or as a drop: pace on both, so no sink socket overflows.
    let accounted = |rig: &Rig| -> u64 {
        let dropped = rig
            .forwarder
            .counters()
            .dropped_for("source_not_allowed")
            .expect("known reason");
        (old_hop.count() + new_hop.count()) as u64 + dropped
    };
    for seq in 0..FRAMES {
        let behind = rig.sent.saturating_sub(IN_FLIGHT_MAX);
        wait_until("the sinks and drops to catch up", || {
            accounted(&rig) >= behind
        });
        let mut frame = FrameSpec::new(KEY_A);
        frame.seq = seq;
        // Even sequence numbers from 127.0.0.1, odd ones from 127.0.0.2.
        if seq % 2 == 0 {
            rig.send(&frame.encode());
        } else {
            rig.send_from(&stranger, &frame.encode());
        }
        if seq == SWAP_AFTER {
            go.send(()).expect("installer waiting");
        }
    }
    assert_eq!(installer.join().expect("installer"), 1);
    wait_until("every frame at a sink or dropped", || {
        accounted(&rig) >= u64::from(FRAMES)
    });
    let counters = rig.settle();
    assert_eq!(counters.generation, 2);
    let dropped = counters
        .dropped_for("source_not_allowed")
        .expect("known reason");
    assert_eq!(counters.forwarded + dropped, u64::from(FRAMES));
    only_drop(&counters, "source_not_allowed", dropped);

    let seqs =
        |sink: &Sink| -> Vec<u32> { sink.datagrams().iter().map(|d| parse(d).seq.0).collect() };
    let (old_seqs, new_seqs) = (seqs(&old_hop), seqs(&new_hop));
    assert!(
        old_seqs.iter().all(|seq| seq % 2 == 0),
        "only 127.0.0.1's frames took generation 1's route: {old_seqs:?}"
    );
    assert!(
        new_seqs.iter().all(|seq| seq % 2 == 1),
        "only 127.0.0.2's frames took generation 2's route: {new_seqs:?}"
    );
    assert!(
        !old_seqs.is_empty() && !new_seqs.is_empty(),
        "the swap happened mid-stream"
    );
    let old_max = old_seqs.iter().max().expect("non-empty");
    let new_min = new_seqs.iter().min().expect("non-empty");
    assert!(
        old_max < new_min,
        "one cut between the generations: old max {old_max}, new min {new_min}"
    );
    assert_eq!(counters.forwarded, (old_seqs.len() + new_seqs.len()) as u64);

    // Rollback: generation 1's sources come back with its routes.
    assert_eq!(rig.fib.rollback(), Ok(1));
    let mut from_stranger = FrameSpec::new(KEY_A);
    from_stranger.seq = FRAMES + 1;
    rig.send_from(&stranger, &from_stranger.encode());
    let mut from_loopback = FrameSpec::new(KEY_A);
    from_loopback.seq = FRAMES;
    rig.send(&from_loopback.encode());
    let got = old_hop.wait_for(old_seqs.len() + 1);
    let counters = rig.settle();
    assert_eq!(counters.generation, 1);
    assert_eq!(
        got.last().map(|d| parse(d).seq.0),
        Some(FRAMES),
        "127.0.0.1 allowed again, on generation 1's route"
    );
    assert_eq!(
        new_hop.count(),
        new_seqs.len(),
        "nothing more on the new route"
    );
    only_drop(&counters, "source_not_allowed", dropped + 1);
}

/// With the source check off, a generation that allows no source at all forwards frames from
/// every source; the same generation with the check on drops them all.
fn source_check_off_forwards_every_source<B: Backend>() {
    let routes = |sink: &Sink| vec![(KEY_A, vec![hop(1, sink.addr, 1)])];
    let stranger = other_sender();
    for source_check in [false, true] {
        let sink = Sink::start();
        let mut rig = Rig::start_with::<B>(
            table_with_sources(1, &routes(&sink), &[]),
            LocalEndpoints::new(),
            source_check,
        );
        let mut frame = FrameSpec::new(KEY_A);
        rig.send(&frame.encode());
        frame.seq = 1;
        rig.send_from(&stranger, &frame.encode());
        let counters = rig.settle();
        if source_check {
            assert_eq!(counters.forwarded, 0);
            only_drop(&counters, "source_not_allowed", 2);
            assert_eq!(sink.count(), 0);
        } else {
            let got = sink.wait_for(2);
            let seqs: BTreeSet<u32> = got.iter().map(|d| parse(d).seq.0).collect();
            assert_eq!(seqs, BTreeSet::from([0, 1]));
            assert_eq!(counters.forwarded, 2);
            only_drop(&counters, "", 0);
        }
    }
}

macro_rules! conformance_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn routed_frame_changes_only_hop_limit_and_checksum() {
                super::routed_frame_changes_only_hop_limit_and_checksum::<$backend>();
            }
            #[test]
            fn hop_limit_one_is_dropped() {
                super::hop_limit_one_is_dropped::<$backend>();
            }
            #[test]
            fn malformed_frames_are_dropped_by_reason() {
                super::malformed_frames_are_dropped_by_reason::<$backend>();
            }
            #[test]
            fn unknown_key_is_dropped_no_route() {
                super::unknown_key_is_dropped_no_route::<$backend>();
            }
            #[test]
            fn local_key_is_delivered_unchanged() {
                super::local_key_is_delivered_unchanged::<$backend>();
            }
            #[test]
            fn weighted_multipath_keeps_flows_together() {
                super::weighted_multipath_keeps_flows_together::<$backend>();
            }
            #[test]
            fn fib_swap_mid_stream_loses_nothing() {
                super::fib_swap_mid_stream_loses_nothing::<$backend>();
            }
            #[test]
            fn forward_with_rewrite() {
                super::forward_with_rewrite::<$backend>();
            }
            #[test]
            fn rewritten_frame_is_delivered_by_the_egress_node() {
                super::rewritten_frame_is_delivered_by_the_egress_node::<$backend>();
            }
            #[test]
            fn mixed_group_rewrites_only_where_the_hop_says() {
                super::mixed_group_rewrites_only_where_the_hop_says::<$backend>();
            }
            #[test]
            fn send_batch_to_mixed_destinations_gso() {
                super::send_batch_to_mixed_destinations_gso::<$backend>();
            }
            #[test]
            fn send_batch_to_mixed_destinations_no_gso() {
                super::send_batch_to_mixed_destinations_no_gso::<$backend>();
            }
            #[test]
            fn forwarded_flows_with_gso_keep_order() {
                super::forwarded_flows_with_gso_keep_order::<$backend>();
            }
            #[test]
            fn frames_from_other_sources_are_dropped_before_lookup() {
                super::frames_from_other_sources_are_dropped_before_lookup::<$backend>();
            }
            #[test]
            fn generation_swap_changes_allowed_sources_with_the_routes() {
                super::generation_swap_changes_allowed_sources_with_the_routes::<$backend>();
            }
            #[test]
            fn source_check_off_forwards_every_source() {
                super::source_check_off_forwards_every_source::<$backend>();
            }
            #[test]
            fn shutdown_is_clean() {
                super::shutdown_is_clean::<$backend>();
            }
        }
    };
}

conformance_suite!(portable, Portable);
#[cfg(target_os = "linux")]
conformance_suite!(io_uring, IoUring);
