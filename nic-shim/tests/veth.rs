//! End to end on veth pairs in network namespaces the test creates and removes: a sender in
//! one namespace, the XDP forwarder on the router namespace's interface, receivers in a third;
//! a generation swap in the middle of the stream loses no frame and mixes no generations.
//! Needs root, `ip` and `ethtool`; prints `SKIPPED: <reason>` and passes without them.

mod common;

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::bed::*;
use common::*;
use nexus_dataplane::fib::NextHop;
use nexus_nic::{
    Egress, StaticNeighbours, XdpConfig, XdpLimits, XdpMode, XdpTarget, XskConfig, XskMode,
    XskSocket,
};
use nix::sys::socket::{setsockopt, sockopt};

const FRAMES: u32 = 2000;
const KEY: u128 = 0xabcd_0000_0000_0000_0000_0000_0000_0001;

fn swap_mid_stream(mode: XdpMode, tag: &str) {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    let bed = Bed::new(tag);
    let a1 = bed.ifindex(1, A1);
    let b1 = bed.ifindex(1, B1);
    let to = |port: u16| NextHop {
        node: [9; 32],
        addr: SocketAddrV4::new(IP_B0, port).into(),
        weight: 1,
        rewrite: None,
    };
    let one = table(1, &[(KEY, vec![to(7501)])], &[IP_A0]);
    let two = table(2, &[(KEY, vec![to(7502)])], &[IP_A0]);
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

    // Receivers in the third namespace: (port, seq) of every frame.
    let received: Arc<Mutex<Vec<(u16, u32)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<_> = [7501u16, 7502]
        .into_iter()
        .map(|port| {
            let (received, stop, ready, ns) = (
                received.clone(),
                stop.clone(),
                ready.clone(),
                bed.ns[2].clone(),
            );
            thread::spawn(move || {
                enter(&ns);
                let socket = UdpSocket::bind(SocketAddrV4::new(IP_B0, port)).expect("bind");
                // Room for the whole stream: a receiver thread starved of CPU must not drop
                // what XDP forwarded.
                setsockopt(&socket, sockopt::RcvBufForce, &(8 << 20)).expect("SO_RCVBUFFORCE");
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                ready.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        assert_eq!(
                            from,
                            std::net::SocketAddr::from(SocketAddrV4::new(IP_B1, PORT)),
                            "source of forwarded frames"
                        );
                        assert!(n >= 64);
                        let seq = u32::from_be_bytes([buf[52], buf[53], buf[54], buf[55]]);
                        assert_eq!(buf[4], 7, "hop limit decremented");
                        received.lock().expect("lock").push((port, seq));
                    }
                }
            })
        })
        .collect();
    while ready.load(Ordering::SeqCst) < 2 {
        thread::sleep(Duration::from_millis(5));
    }

    // In native mode the far end of the egress pair needs a program of its own to receive
    // redirected frames: a pass-through, attached from the receiver's namespace.
    let far_end = (mode == XdpMode::Native).then(|| {
        let (ns, stop, ready) = (bed.ns[2].clone(), stop.clone(), ready.clone());
        let b0 = bed.ifindex(2, B0);
        thread::spawn(move || {
            enter(&ns);
            let mut pass = XdpTarget::load(XdpConfig {
                port: PORT,
                source_check: false,
                limits: XdpLimits::default(),
            })
            .expect("load pass-through");
            pass.attach_pass(b0, XdpMode::Native)
                .expect("attach pass-through");
            ready.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
        })
    });
    let expected_ready = if far_end.is_some() { 3 } else { 2 };
    while ready.load(Ordering::SeqCst) < expected_ready {
        thread::sleep(Duration::from_millis(5));
    }

    // The router: load, install generation 1, attach; then swap to generation 2 mid-stream.
    let router_ns = bed.ns[1].clone();
    let sender_ns = bed.ns[0].clone();
    let router = thread::spawn({
        let received = received.clone();
        move || {
            enter(&router_ns);
            let mut target = XdpTarget::load(XdpConfig {
                port: PORT,
                source_check: true,
                limits: XdpLimits::default(),
            })
            .expect("load");
            target.install_fib(&one, &neighbours).expect("install 1");
            target.attach(a1, mode).expect("attach");
            let sender = thread::spawn(move || {
                enter(&sender_ns);
                let socket = UdpSocket::bind(SocketAddrV4::new(IP_A0, 0)).expect("bind");
                for seq in 0..FRAMES {
                    let mut frame = nexlink(KEY, 8, 1, 2, 3, b"end to end");
                    frame[52..56].copy_from_slice(&seq.to_be_bytes());
                    nexus_dataplane::wire::nexlink::Packet::new_unchecked(&mut frame[..])
                        .fill_checksum();
                    socket
                        .send_to(&frame, SocketAddrV4::new(IP_A1, PORT))
                        .expect("send");
                    if seq % 8 == 0 {
                        thread::sleep(Duration::from_micros(500));
                    }
                }
            });
            // Swap once a quarter of the stream has arrived.
            for _ in 0..500 {
                if received.lock().expect("lock").len() >= (FRAMES / 4) as usize {
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
            target.install_fib(&two, &neighbours).expect("install 2");
            sender.join().expect("sender");
            let deadline = std::time::Duration::from_secs(5);
            let mut waited = Duration::ZERO;
            while received.lock().expect("lock").len() < FRAMES as usize && waited < deadline {
                thread::sleep(Duration::from_millis(10));
                waited += Duration::from_millis(10);
            }
            let counters = target.counters().expect("counters");
            target.detach_all();
            counters
        }
    });
    let counters = router.join().expect("router");
    stop.store(true, Ordering::SeqCst);
    for receiver in receivers {
        receiver.join().expect("receiver");
    }
    if let Some(far_end) = far_end {
        far_end.join().expect("far end");
    }
    let received = received.lock().expect("lock").clone();
    assert_eq!(counters.forwarded, u64::from(FRAMES), "{counters:?}");
    assert_eq!(counters.dropped_total(), 0, "{counters:?}");
    assert_eq!(counters.generation, 2);
    let mut seqs: Vec<u32> = received.iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "every frame once, none lost"
    );
    let last_one = received
        .iter()
        .filter(|(p, _)| *p == 7501)
        .map(|(_, s)| *s)
        .max()
        .expect("some on generation 1");
    let first_two = received
        .iter()
        .filter(|(p, _)| *p == 7502)
        .map(|(_, s)| *s)
        .min()
        .expect("some on generation 2");
    assert_eq!(
        first_two,
        last_one + 1,
        "generation 1 serves a prefix of the stream, 2 the rest"
    );
    drop(bed);
}

#[test]
fn native_mode_swaps_generations_mid_stream_without_loss() {
    swap_mid_stream(XdpMode::Native, "n");
}

#[test]
fn generic_mode_swaps_generations_mid_stream_without_loss() {
    swap_mid_stream(XdpMode::Generic, "g");
}

/// A frame for a local-delivery key reaches an AF_XDP socket on the router's interface (asked
/// for zero-copy, bound in copy mode on veth), unchanged; the socket sends a reply back out of
/// the same interface through its transmit ring, and the sender's socket receives it.
fn local_delivery_through_af_xdp(mode: XdpMode, tag: &str) {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    const LOCAL: u128 = 0x10ca_1000_0000_0000_0000_0000_0000_0001;
    let bed = Bed::new(tag);
    let a1 = bed.ifindex(1, A1);
    let sender_ns = bed.ns[0].clone();
    let sender = thread::spawn(move || {
        enter(&sender_ns);
        let socket = UdpSocket::bind(SocketAddrV4::new(IP_A0, 7600)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        socket
    })
    .join()
    .expect("sender socket");
    let router_ns = bed.ns[1].clone();
    let frame = nexlink(LOCAL, 1, 1, 2, 3, b"for a local service");
    let sent = frame.clone();
    let (received, counters, xsk_mode) = thread::scope(|scope| {
        let router = scope.spawn(|| {
            enter(&router_ns);
            let mut target = XdpTarget::load(XdpConfig {
                port: PORT,
                source_check: false,
                limits: XdpLimits::default(),
            })
            .expect("load");
            target
                .set_local_keys([nexus_dataplane::fib::RoutingKey(LOCAL)])
                .expect("local keys");
            target.attach(a1, mode).expect("attach");
            let mut xsk = XskSocket::bind(
                a1,
                0,
                XskConfig {
                    zero_copy: true,
                    ..XskConfig::default()
                },
            )
            .expect("AF_XDP bind");
            target.register_xsk(0, &xsk).expect("register");
            let mut frames = Vec::new();
            for _ in 0..300 {
                xsk.recv(&mut frames, 16);
                if !frames.is_empty() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let received = frames
                .first()
                .cloned()
                .expect("a frame on the AF_XDP socket");
            // The reply: the same frame with Ethernet, IPv4 and UDP endpoints swapped (the IPv4
            // checksum is unchanged by the swap; no UDP checksum).
            let mut reply = received.clone();
            reply[0..6].copy_from_slice(&received[6..12]);
            reply[6..12].copy_from_slice(&received[0..6]);
            reply[26..30].copy_from_slice(&received[30..34]);
            reply[30..34].copy_from_slice(&received[26..30]);
            reply[34..36].copy_from_slice(&received[36..38]);
            reply[36..38].copy_from_slice(&received[34..36]);
            reply[40..42].fill(0);
            assert!(
                xsk.send(&reply).expect("AF_XDP send"),
                "a free transmit frame"
            );
            let counters = target.counters().expect("counters");
            let mode = xsk.mode();
            // Keep the socket open until the reply is out.
            thread::sleep(Duration::from_millis(200));
            drop(xsk);
            target.detach_all();
            (received, counters, mode)
        });
        thread::sleep(Duration::from_millis(300));
        sender
            .send_to(&frame, SocketAddrV4::new(IP_A1, PORT))
            .expect("send");
        let mut buf = [0u8; 2048];
        let (n, from) = sender
            .recv_from(&mut buf)
            .expect("the reply from the AF_XDP socket");
        assert_eq!(
            from,
            std::net::SocketAddr::from(SocketAddrV4::new(IP_A1, PORT))
        );
        assert_eq!(&buf[..n], &sent[..], "the reply carries the frame");
        router.join().expect("router")
    });
    assert_eq!(xsk_mode, XskMode::Copy, "veth has no zero-copy: copy mode");
    assert_eq!(&received[42..], &frame[..], "delivered unchanged");
    assert_eq!(counters.delivered_local, 1, "{counters:?}");
    assert_eq!(counters.received, 1, "{counters:?}");
    drop(bed);
}

#[test]
fn native_mode_delivers_local_keys_to_an_af_xdp_socket() {
    local_delivery_through_af_xdp(XdpMode::Native, "xn");
}

#[test]
fn generic_mode_delivers_local_keys_to_an_af_xdp_socket() {
    local_delivery_through_af_xdp(XdpMode::Generic, "xg");
}
