//! [`XdpPublisher`] on the veth bed (`common/bed.rs`): the program on the router's ingress
//! interface, next hops resolved from the router's kernel neighbour table (no static table
//! anywhere), generations published while a stream flows. Needs root, `ip` and `ethtool`;
//! prints `SKIPPED: <reason>` and passes without them.

mod common;

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::bed::*;
use common::*;
use nexus_dataplane::fib::{NextHop, RouteSet, RoutingKey};
use nexus_dataplane::forward::LocalEndpoints;
use nexus_dataplane::wire::nexlink::Packet;
use nexus_nic::{
    XdpConfig, XdpError, XdpLimits, XdpMode, XdpPublishStatus, XdpPublisher, XdpPublisherConfig,
    XdpTarget,
};
use nix::sys::socket::{setsockopt, sockopt};

const KEY: u128 = 0xabcd_0000_0000_0000_0000_0000_0000_0001;
const LOCAL: u128 = 0x10ca_1000_0000_0000_0000_0000_0000_0001;
const FRAMES: u32 = 400;
const WAIT: Duration = Duration::from_secs(5);

fn bind(ns: &str, addr: SocketAddrV4) -> UdpSocket {
    let socket = in_ns(ns, || UdpSocket::bind(addr).expect("bind"));
    // Room for the whole stream: it is read after it was sent.
    setsockopt(&socket, sockopt::RcvBufForce, &(4 << 20)).expect("SO_RCVBUFFORCE");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    socket
}

fn routes(generation: u64, to: SocketAddrV4) -> RouteSet {
    let mut set = RouteSet::new(generation);
    set.insert(
        RoutingKey(KEY),
        vec![NextHop {
            node: [9; 32],
            addr: to.into(),
            weight: 1,
            rewrite: None,
        }],
    )
    .expect("route");
    set
}

fn local() -> LocalEndpoints {
    let mut local = LocalEndpoints::new();
    local
        .insert(
            RoutingKey(LOCAL),
            SocketAddrV4::new(IP_A1, PORT + 100).into(),
        )
        .expect("local");
    local
}

fn frame(key: u128, seq: u32) -> Vec<u8> {
    let mut frame = nexlink(key, 8, 1, 2, 3, b"publisher");
    frame[52..56].copy_from_slice(&seq.to_be_bytes());
    Packet::new_unchecked(&mut frame[..]).fill_checksum();
    frame
}

fn seq(datagram: &[u8]) -> u32 {
    u32::from_be_bytes([datagram[52], datagram[53], datagram[54], datagram[55]])
}

/// Polls the status until `done` holds, or fails with the last status.
fn wait_for(
    publisher: &XdpPublisher,
    what: &str,
    done: impl Fn(&XdpPublishStatus) -> bool,
) -> XdpPublishStatus {
    for _ in 0..WAIT.as_millis() / 10 {
        let status = publisher.status();
        if done(&status) {
            return status;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not reached in {WAIT:?}; {:?}", publisher.status());
}

/// Reads datagrams from `sockets` until `count` have arrived or `WAIT` has passed.
fn collect(sockets: &[(u16, &UdpSocket)], count: usize) -> Vec<(u16, Vec<u8>)> {
    collect_for(sockets, count, WAIT)
}

/// Reads datagrams from `sockets` until `count` have arrived or about `wait` has passed.
fn collect_for(sockets: &[(u16, &UdpSocket)], count: usize, wait: Duration) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..wait.as_millis() / 20 {
        for (port, socket) in sockets {
            while let Ok(n) = socket.recv(&mut buf) {
                out.push((*port, buf[..n].to_vec()));
            }
        }
        if out.len() >= count {
            break;
        }
    }
    out
}

#[test]
fn generic_mode_forwards_with_kernel_neighbours_and_keeps_a_generation_it_cannot_replace() {
    publish_on_the_bed(XdpMode::Generic, "pg");
}

#[test]
fn native_mode_forwards_with_kernel_neighbours_and_keeps_a_generation_it_cannot_replace() {
    publish_on_the_bed(XdpMode::Native, "pn");
}

fn publish_on_the_bed(mode: XdpMode, tag: &str) {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    let bed = Bed::new(tag);
    let [sender_ns, router_ns, sink_ns] = bed.ns.clone();
    let sink_one = bind(&sink_ns, SocketAddrV4::new(IP_B0, 7501));
    let sink_two = bind(&sink_ns, SocketAddrV4::new(IP_B0, 7502));
    // The node's software forwarder: a plain socket on the data-plane port.
    let software = bind(&router_ns, SocketAddrV4::new(IP_A1, PORT));
    let sender = bind(&sender_ns, SocketAddrV4::new(IP_A0, 0));
    let send = |datagram: &[u8]| {
        sender
            .send_to(datagram, SocketAddrV4::new(IP_A1, PORT))
            .expect("send");
    };
    // In native mode the far end of the egress pair needs a program of its own to receive
    // redirected frames: a pass-through, attached from the sink's namespace.
    // It lives on a thread in that namespace and is detached there when `_keep` is dropped
    // (also when the test fails).
    let (_keep, hold) = mpsc::channel::<()>();
    if mode == XdpMode::Native {
        let (b0, ns) = (bed.ifindex(SINK, B0), sink_ns.clone());
        let (ready, attached) = mpsc::channel();
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
            ready.send(()).expect("test alive");
            let _ = hold.recv();
            drop(pass);
        });
        attached.recv().expect("pass-through attached");
    }
    // The sink's interface is down: the router's kernel cannot resolve the sink's MAC yet.
    run(&["ip", "-n", &sink_ns, "link", "set", B0, "down"]);

    let publisher = in_ns(&router_ns, || {
        XdpPublisher::spawn(XdpPublisherConfig {
            mode,
            source_check: false,
            neighbour_refresh: Duration::from_millis(100),
            ..XdpPublisherConfig::new(A1, PORT)
        })
    })
    .expect("spawn");
    assert_eq!(publisher.status().ifindex, bed.ifindex(ROUTER, A1));
    let changes = publisher.subscribe();
    publisher.publish(routes(1, SocketAddrV4::new(IP_B0, 7501)), local());
    let status = wait_for(&publisher, "generation 1", |s| s.installed == Some(1));
    assert!(changes.has_changed().expect("publisher alive"));
    assert_eq!(
        status.kernel_path_hops,
        vec![SocketAddrV4::new(IP_B0, 7501)],
        "no MAC for the sink yet: its next hop is left to the kernel"
    );
    assert_eq!((status.routes, status.hops, status.local_keys), (1, 1, 1));

    // A transit frame for the unresolved next hop reaches the software forwarder unchanged.
    let first = frame(KEY, 0);
    send(&first);
    let got = collect(&[(PORT, &software)], 1);
    assert_eq!(got, vec![(PORT, first.clone())], "passed to the kernel");
    // So does a local key's frame (no AF_XDP socket registered).
    let mine = frame(LOCAL, 1);
    send(&mine);
    let got = collect(&[(PORT, &software)], 1);
    assert_eq!(got, vec![(PORT, mine)], "local key passed to the kernel");
    let status = wait_for(&publisher, "counters", |s| {
        s.passed_to_kernel == 1 && s.counters.delivered_local == 1
    });
    assert_eq!(status.counters.forwarded, 0);

    // The sink comes up; a refresh learns its MAC from the kernel and XDP takes the hop over.
    run(&["ip", "-n", &sink_ns, "link", "set", B0, "up"]);
    let status = wait_for(&publisher, "sink resolved", |s| {
        s.kernel_path_hops.is_empty()
    });
    assert_eq!(status.installed, Some(1));
    let neigh = output(&["ip", "-n", &router_ns, "neigh", "show", &IP_B0.to_string()]);
    assert!(
        neigh.contains(&mac(MAC_B0)),
        "the kernel learnt the sink's MAC by ARP: {neigh}"
    );

    // A stream; generation 2 (to port 7502) published a quarter of the way through.
    for seq in 0..FRAMES {
        send(&frame(KEY, seq));
        if seq == FRAMES / 4 {
            publisher.publish(routes(2, SocketAddrV4::new(IP_B0, 7502)), local());
            wait_for(&publisher, "generation 2", |s| s.installed == Some(2));
        }
        if seq % 16 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let got = collect(&[(7501, &sink_one), (7502, &sink_two)], FRAMES as usize);
    let mut seqs: Vec<u32> = got.iter().map(|(_, d)| seq(d)).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..FRAMES).collect::<Vec<_>>(), "every frame once");
    for (_, datagram) in &got {
        assert_eq!(datagram[4], 7, "hop limit decremented by XDP");
    }
    let last_one = got
        .iter()
        .filter(|(p, _)| *p == 7501)
        .map(|(_, d)| seq(d))
        .max();
    let first_two = got
        .iter()
        .filter(|(p, _)| *p == 7502)
        .map(|(_, d)| seq(d))
        .min();
    let (last_one, first_two) = (last_one.expect("on 1"), first_two.expect("on 2"));
    assert_eq!(first_two, last_one + 1, "generation 1 a prefix, 2 the rest");
    assert!(
        collect_for(&[(PORT, &software)], 1, Duration::from_millis(200)).is_empty(),
        "nothing more to the kernel"
    );
    assert_eq!(publisher.status().passed_to_kernel, 1);

    // A next hop the router's kernel has no route to: generation 3 is refused, 2 stays.
    publisher.publish(
        routes(3, SocketAddrV4::new("10.99.0.1".parse().expect("ip"), 7503)),
        local(),
    );
    let status = wait_for(&publisher, "generation 3 refused", |s| {
        s.published == Some(3) && s.last_error.is_some()
    });
    let error = status.last_error.expect("error");
    assert!(
        error.contains("10.99.0.1:7503") && error.contains("unreachable"),
        "{error}"
    );
    assert_eq!(status.installed, Some(2));
    assert!(status.failures >= 1);
    // Tried again only when a neighbour changes: refreshes alone add no failures.
    thread::sleep(Duration::from_millis(350));
    assert_eq!(publisher.status().failures, status.failures);
    // An older generation that is not the one installed before the current one is refused.
    publisher.publish(routes(0, SocketAddrV4::new(IP_B0, 7501)), local());
    let older = wait_for(&publisher, "generation 0 refused", |s| {
        s.published == Some(0)
    });
    assert!(
        older
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("older") && e.contains("not the previous")),
        "{older:?}"
    );
    assert_eq!(older.installed, Some(2));
    send(&frame(KEY, FRAMES));
    let got = collect(&[(7501, &sink_one), (7502, &sink_two)], 1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0, seq(&got[0].1)),
        (7502, FRAMES),
        "generation 2 still forwards"
    );
    // The generation installed before it is a rollback (the node's table rolled back):
    // generation 1 forwards again.
    publisher.publish(routes(1, SocketAddrV4::new(IP_B0, 7501)), local());
    let back = wait_for(&publisher, "rolled back to generation 1", |s| {
        s.installed == Some(1)
    });
    assert_eq!(back.last_error, None, "{back:?}");
    send(&frame(KEY, FRAMES + 1));
    let got = collect(&[(7501, &sink_one), (7502, &sink_two)], 1);
    assert_eq!(
        got.iter().map(|(p, d)| (*p, seq(d))).collect::<Vec<_>>(),
        vec![(7501, FRAMES + 1)],
        "generation 1 forwards after the rollback"
    );
    // A second step back has nothing kept: refused, generation 1 stays.
    publisher.publish(routes(0, SocketAddrV4::new(IP_B0, 7502)), local());
    let refused = wait_for(&publisher, "generation 0 refused again", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("generation 0"))
    });
    assert_eq!(refused.installed, Some(1));

    // Dropping the publisher detaches the program.
    drop(publisher);
    let link = output(&["ip", "-n", &router_ns, "link", "show", "dev", A1]);
    assert!(!link.contains("xdp"), "detached: {link}");
    drop(bed);
}

#[test]
fn spawn_names_a_missing_interface() {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    let error = XdpPublisher::spawn(XdpPublisherConfig::new("nx-absent0", PORT))
        .expect_err("no such interface");
    assert!(matches!(error, XdpError::Interface { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("nx-absent0") && text.contains("no such interface"),
        "{text}"
    );
}

#[test]
fn spawn_refuses_a_mode_the_interface_does_not_support() {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    // Loopback has no driver XDP: native mode is refused at spawn, nothing stays attached.
    let bed = Bed::new("pm");
    let error = in_ns(&bed.ns[ROUTER], || {
        XdpPublisher::spawn(XdpPublisherConfig::new("lo", PORT))
    })
    .expect_err("native XDP on lo");
    assert!(matches!(error, XdpError::Attach { .. }), "{error:?}");
    let link = output(&["ip", "-n", &bed.ns[ROUTER], "link", "show", "dev", "lo"]);
    assert!(!link.contains("xdp"), "nothing attached: {link}");
}
