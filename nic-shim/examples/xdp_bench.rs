//! The NIC target measured, in one run (needs root, `ip`, `ethtool`):
//!
//! 1. Table-generation install time into the BPF maps for 1,000 and 100,000 routes: the
//!    translation of a loaded `FibTable` into map entries (`XdpTable::from_fib`) and the write
//!    plus the generation switch (`XdpTarget::install`), each the median of `INSTALL_ROUNDS`.
//! 2. Forwarding on veth pairs in three network namespaces (sender → router → sink, as in
//!    `tests/veth.rs`), side by side: XDP native, XDP generic, and the software forwarder with
//!    the portable (`UdpIo`) and io_uring (`UringIo`) backends on the router's socket. One sender
//!    thread sends `BLAST_FRAMES` 128-byte NexLink frames as fast as it can; the sink counts
//!    what arrives. Reported: frames received per second at the sink (first to last arrival),
//!    loss, and the whole machine's CPU time per received frame (from `/proc/stat`, so sender
//!    and sink costs, equal for every path, are included). veth is a functional test bed, not a
//!    NIC: the rates are bounded by the sender and by veth itself.
//!
//! Run: `cargo run --release -p nexus-nic --example xdp_bench` as root.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nexus_dataplane::fib::{Fib, FibTable, NextHop, RouteSet, RoutingKey, SourceSet, compile};
use nexus_dataplane::forward::{Forwarder, ForwarderConfig, LocalEndpoints, UdpIo, UringIo};
use nexus_dataplane::wire::nexlink::{
    DeliveryMode, Ecn, Flags, FrameType, HopLimit, NodeTag, Packet, Repr, RoutingKey as WireKey,
    SeqNumber, SessionId, StreamId, TrafficClass,
};
use nexus_nic::{Egress, StaticNeighbours, XdpConfig, XdpLimits, XdpMode, XdpTable, XdpTarget};
use nix::sys::socket::{setsockopt, sockopt};

#[path = "../tests/common/bed.rs"]
mod bed;

use bed::*;

const PORT: u16 = 7400;
const SINK_PORT: u16 = 7501;
const KEY: u128 = 0xabcd_0000_0000_0000_0000_0000_0000_0001;
const BLAST_FRAMES: u64 = 300_000;
const INSTALL_ROUNDS: usize = 5;

#[allow(clippy::disallowed_methods)] // a benchmark driver reads the clock
fn now() -> Instant {
    Instant::now()
}

/// Busy CPU time of the whole machine in clock ticks (user, nice, system, irq, softirq).
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
}

fn frame(seq: u32) -> Vec<u8> {
    let repr = Repr {
        frame_type: FrameType::Data,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::BestEffort,
        traffic_class: TrafficClass::new(0).expect("class"),
        ecn: Ecn::NotEct,
        hop_limit: HopLimit::new(16).expect("hop"),
        routing_key: WireKey(KEY),
        src: NodeTag(1),
        dst: NodeTag(0),
        session: SessionId(2),
        stream: StreamId(3),
        seq: SeqNumber(seq),
        payload_len: 64,
        tensor: None,
    };
    let mut out = vec![0u8; 128];
    repr.emit(&mut Packet::new_unchecked(&mut out[..]))
        .expect("emit");
    out
}

fn sink_table() -> FibTable {
    let mut set = RouteSet::new(1);
    set.insert(
        RoutingKey(KEY),
        vec![NextHop {
            node: [9; 32],
            addr: SocketAddrV4::new(IP_B0, SINK_PORT).into(),
            weight: 1,
            rewrite: None,
        }],
    )
    .expect("route");
    let mut sources = SourceSet::new();
    sources.insert(IP_A0.into()).expect("source");
    set.set_sources(sources);
    FibTable::load(compile(&set).expect("compile")).expect("load")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    XdpNative,
    XdpGeneric,
    Portable,
    Uring,
}

struct Figures {
    received: u64,
    pps: f64,
    cpu_us_per_frame: f64,
}

fn forward(path: Path) -> Figures {
    let bed = Bed::new(&format!("b{}", &format!("{path:?}").to_lowercase()[..3]));
    // The software forwarder's sends must not wait for ARP.
    bed.static_neighbour(ROUTER, IP_B0, MAC_B0, B1);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let first_last: Arc<std::sync::Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let sink = {
        let (ns, stop, received, first_last) = (
            bed.ns[2].clone(),
            stop.clone(),
            received.clone(),
            first_last.clone(),
        );
        thread::spawn(move || {
            enter(&ns);
            let socket = UdpSocket::bind(SocketAddrV4::new(IP_B0, SINK_PORT)).expect("bind sink");
            setsockopt(&socket, sockopt::RcvBufForce, &(32 << 20)).expect("rcvbuf");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if socket.recv(&mut buf).is_ok() {
                    let t = now();
                    let mut fl = first_last.lock().expect("lock");
                    fl.0.get_or_insert(t);
                    fl.1 = Some(t);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The router, kept alive until the blast is over.
    let router_stop = Arc::new(AtomicBool::new(false));
    let router_ready = Arc::new(AtomicBool::new(false));
    let router = {
        let (ns, far_ns) = (bed.ns[1].clone(), bed.ns[2].clone());
        let (a1, b1, b0) = (bed.ifindex(1, A1), bed.ifindex(1, B1), bed.ifindex(2, B0));
        let (stop, ready) = (router_stop.clone(), router_ready.clone());
        thread::spawn(move || {
            let table = sink_table();
            match path {
                Path::XdpNative | Path::XdpGeneric => {
                    let mode = if path == Path::XdpNative {
                        XdpMode::Native
                    } else {
                        XdpMode::Generic
                    };
                    let far = (mode == XdpMode::Native).then(|| {
                        let stop = stop.clone();
                        thread::spawn(move || {
                            enter(&far_ns);
                            let mut pass = XdpTarget::load(XdpConfig {
                                port: PORT,
                                source_check: false,
                                limits: XdpLimits::default(),
                            })
                            .expect("load");
                            pass.attach_pass(b0, XdpMode::Native).expect("attach pass");
                            while !stop.load(Ordering::SeqCst) {
                                thread::sleep(Duration::from_millis(10));
                            }
                        })
                    });
                    enter(&ns);
                    let mut target = XdpTarget::load(XdpConfig {
                        port: PORT,
                        source_check: true,
                        limits: XdpLimits::default(),
                    })
                    .expect("load");
                    let mut neighbours = StaticNeighbours::new();
                    neighbours.insert(
                        IP_B0,
                        Egress {
                            ifindex: b1,
                            src_mac: MAC_B1,
                            dst_mac: MAC_B0,
                            src_ip: IP_B1,
                        },
                    );
                    target.install_fib(&table, &neighbours).expect("install");
                    target.attach(a1, mode).expect("attach");
                    thread::sleep(Duration::from_millis(100));
                    ready.store(true, Ordering::SeqCst);
                    while !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    target.detach_all();
                    if let Some(far) = far {
                        far.join().expect("far end");
                    }
                }
                Path::Portable | Path::Uring => {
                    enter(&ns);
                    let fib = Fib::new(table);
                    let addr = SocketAddrV4::new(IP_A1, PORT);
                    let handle = if path == Path::Portable {
                        Forwarder::spawn(
                            ForwarderConfig::default(),
                            &fib,
                            LocalEndpoints::new(),
                            UdpIo::bind(addr).expect("bind"),
                        )
                    } else {
                        Forwarder::spawn(
                            ForwarderConfig::default(),
                            &fib,
                            LocalEndpoints::new(),
                            UringIo::bind(addr).expect("bind"),
                        )
                    }
                    .expect("spawn");
                    ready.store(true, Ordering::SeqCst);
                    while !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    handle.shutdown().expect("shutdown");
                }
            }
        })
    };
    while !router_ready.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(5));
    }
    let ticks_before = busy_ticks();
    let sender = {
        let ns = bed.ns[0].clone();
        thread::spawn(move || {
            enter(&ns);
            let socket = UdpSocket::bind(SocketAddrV4::new(IP_A0, 0)).expect("bind sender");
            socket
                .connect(SocketAddrV4::new(IP_A1, PORT))
                .expect("connect");
            let bytes = frame(0);
            for _ in 0..BLAST_FRAMES {
                let _ = socket.send(&bytes);
            }
        })
    };
    sender.join().expect("sender");
    // Wait until the sink has been quiet for 300 ms.
    let mut last = received.load(Ordering::Relaxed);
    loop {
        thread::sleep(Duration::from_millis(300));
        let now_count = received.load(Ordering::Relaxed);
        if now_count == last {
            break;
        }
        last = now_count;
    }
    let ticks = busy_ticks() - ticks_before;
    router_stop.store(true, Ordering::SeqCst);
    router.join().expect("router");
    stop.store(true, Ordering::SeqCst);
    sink.join().expect("sink");
    let received = received.load(Ordering::Relaxed);
    let (first, last) = *first_last.lock().expect("lock");
    let span = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    // USER_HZ is 100 on Linux: a tick is 10 ms.
    let cpu_s = ticks as f64 / 100.0;
    drop(bed);
    Figures {
        received,
        pps: received as f64 / span,
        cpu_us_per_frame: cpu_s * 1e6 / received.max(1) as f64,
    }
}

fn install_times(routes: u32) -> (Duration, Duration) {
    let hops: Vec<NextHop> = (1..=8u8)
        .map(|n| NextHop {
            node: [n; 32],
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, n), 7000 + u16::from(n)).into(),
            weight: u32::from(n),
            rewrite: None,
        })
        .collect();
    let mut neighbours = StaticNeighbours::new();
    for n in 1..=8u8 {
        neighbours.insert(
            Ipv4Addr::new(10, 9, 0, n),
            Egress {
                ifindex: 1,
                src_mac: MAC_A1,
                dst_mac: MAC_B0,
                src_ip: IP_A1,
            },
        );
    }
    let limits = XdpLimits {
        routes_max: 1 << 17,
        ..XdpLimits::default()
    };
    let mut target = XdpTarget::load(XdpConfig {
        port: PORT,
        source_check: true,
        limits,
    })
    .expect("load");
    let (mut translate, mut install) = (Vec::new(), Vec::new());
    for round in 0..INSTALL_ROUNDS {
        let mut set = RouteSet::new(round as u64 + 1);
        for i in 0..routes {
            // Groups of 1 to 4 of the 8 next hops: many routes share a few groups, as intent
            // routes do.
            let first = (i % 8) as usize;
            let len = 1 + (i % 4) as usize;
            let group: Vec<NextHop> = (0..len).map(|j| hops[(first + j) % 8]).collect();
            set.insert(RoutingKey(u128::from(i) * 0x9e37_79b9 + 1), group)
                .expect("route");
        }
        let table = FibTable::load(compile(&set).expect("compile")).expect("load");
        let t0 = now();
        let xdp = XdpTable::from_fib(&table, PORT, &neighbours, limits).expect("translate");
        let t1 = now();
        target.install(xdp).expect("install");
        let t2 = now();
        translate.push(t1 - t0);
        install.push(t2 - t1);
    }
    translate.sort();
    install.sort();
    (translate[INSTALL_ROUNDS / 2], install[INSTALL_ROUNDS / 2])
}

fn main() {
    for routes in [1_000, 100_000] {
        let (translate, install) = install_times(routes);
        println!(
            "install {routes:>7} routes: translate {:>8.2} ms, write + switch {:>8.2} ms (median of {INSTALL_ROUNDS})",
            translate.as_secs_f64() * 1e3,
            install.as_secs_f64() * 1e3
        );
    }
    println!("forwarding on veth, {BLAST_FRAMES} frames of 128 bytes from one sender thread:");
    for path in [
        Path::XdpNative,
        Path::XdpGeneric,
        Path::Portable,
        Path::Uring,
    ] {
        let r = forward(path);
        println!(
            "  {:<12} received {:>7} ({:>5.1} % loss), {:>9.0} frames/s at the sink, {:>6.2} µs machine CPU per frame",
            format!("{path:?}"),
            r.received,
            100.0 * (1.0 - r.received as f64 / BLAST_FRAMES as f64),
            r.pps,
            r.cpu_us_per_frame
        );
    }
}
