//! The XDP program against the software forwarder's decision, frame by frame, through
//! `BPF_PROG_TEST_RUN` (no network needed; needs root). Each test prints `SKIPPED: <reason>`
//! and passes where the program cannot be loaded.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use nexus_dataplane::fib::{FibTable, RoutingKey};
use nexus_dataplane::forward::{DROP_REASONS, ForwarderCounters};
use nexus_dataplane::wire::nexlink::Packet;
use nexus_nic::{
    Egress, LOCAL_KEYS_MAX, Neighbours, StaticNeighbours, TableError, Unresolved, XdpError,
    XdpLimits, XdpTable, XdpTarget, verdict,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KEY_ONE: u128 = 0x1111_0000_0000_0000_0000_0000_0000_0001;
const KEY_WEIGHTED: u128 = 0x2222_0000_0000_0000_0000_0000_0000_0002;
const KEY_LOCAL: u128 = 0x3333_0000_0000_0000_0000_0000_0000_0003;
const KEY_MISS: u128 = 0x4444_0000_0000_0000_0000_0000_0000_0004;
const REWRITE: u128 = 0x5555_0000_0000_0000_0000_0000_0000_0005;
const ALLOWED: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
const EGRESS_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x01];
const SRC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn next_mac(n: u8) -> [u8; 6] {
    [0x02, 0xaa, 0, 0, 0, n]
}

/// Every next hop 10.9.0.n leaves through the loopback interface (index 1, where
/// BPF_PROG_TEST_RUN says frames arrive, so the program answers XDP_TX).
fn neighbours() -> StaticNeighbours {
    let mut table = StaticNeighbours::new();
    for n in 1..=20 {
        table.insert(
            Ipv4Addr::new(10, 9, 0, n),
            Egress {
                ifindex: 1,
                src_mac: EGRESS_MAC,
                dst_mac: next_mac(n),
                src_ip: SRC_IP,
            },
        );
    }
    table
}

fn main_table(generation: u64) -> FibTable {
    table(
        generation,
        &[
            (KEY_ONE, vec![hop(1, 7401, 1, None)]),
            (
                KEY_WEIGHTED,
                vec![
                    hop(2, 7402, 1, None),
                    hop(3, 7403, 2, Some(REWRITE)),
                    hop(4, 7404, 5, None),
                ],
            ),
        ],
        &[ALLOWED],
    )
}

/// What the XDP program did with `datagram` from `source`, in the software forwarder's terms.
fn xdp(target: &XdpTarget, source: Ipv4Addr, datagram: &[u8]) -> Outcome {
    let before = target.counters().expect("counters");
    let run = target
        .test_run(&ethernet(source, datagram))
        .expect("test run");
    let after = target.counters().expect("counters");
    assert_eq!(
        after.received,
        before.received + 1,
        "every frame to the port is received"
    );
    match run.verdict {
        verdict::DROP => {
            let reasons: Vec<&str> = DROP_REASONS
                .iter()
                .enumerate()
                .filter(|(i, _)| after.dropped[*i] != before.dropped[*i])
                .map(|(_, r)| *r)
                .collect();
            assert_eq!(reasons.len(), 1, "one drop reason counted: {reasons:?}");
            Outcome::Drop(reasons[0])
        }
        verdict::TX => {
            assert_eq!(after.forwarded, before.forwarded + 1);
            let n = run.frame[5];
            let (to, frame) = sent(&run.frame, EGRESS_MAC, next_mac(n), SRC_IP);
            Outcome::Forward { to, frame }
        }
        verdict::PASS if after.delivered_local == before.delivered_local + 1 => {
            // Delivered as received (no socket on the queue: to the kernel's stack); the frame
            // is the header's buffer_len bytes of it.
            let frame = run.frame[42..].to_vec();
            let len = 64 + usize::from(Packet::new_unchecked(&frame[..]).payload_len());
            Outcome::Local {
                frame: frame[..len].to_vec(),
            }
        }
        other => panic!("verdict {other}"),
    }
}

fn set_checksum(frame: &mut [u8]) {
    if frame.len() >= 64 {
        Packet::new_unchecked(&mut *frame).fill_checksum();
    }
}

/// Hand-made cases, one per receive check and per forwarding step.
fn cases() -> Vec<(&'static str, Ipv4Addr, Vec<u8>)> {
    let good = nexlink(KEY_ONE, 8, 7, 9, 1, b"payload!");
    let mut out = vec![
        ("hit", ALLOWED, good.clone()),
        ("miss", ALLOWED, nexlink(KEY_MISS, 8, 7, 9, 1, b"x")),
        ("hop limit 1", ALLOWED, nexlink(KEY_ONE, 1, 7, 9, 1, b"x")),
        ("source not allowed", STRANGER, good.clone()),
        ("local", ALLOWED, nexlink(KEY_LOCAL, 1, 7, 9, 1, b"local")),
        ("truncated", ALLOWED, good[..40].to_vec()),
        ("empty", ALLOWED, Vec::new()),
        (
            "rewrite or not",
            ALLOWED,
            nexlink(KEY_WEIGHTED, 64, 1, 2, 3, b"w"),
        ),
    ];
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"trailing bytes are not part of the frame");
    out.push(("trailing bytes", ALLOWED, trailing));
    let mut bad = good.clone();
    bad[6] ^= 0x40;
    out.push(("bad checksum", ALLOWED, bad));
    let edit = |name, at: usize, value: u8| {
        let mut frame = good.clone();
        frame[at] = value;
        set_checksum(&mut frame);
        (name, ALLOWED, frame)
    };
    out.push(edit("bad version", 0, 0x20));
    out.push(edit("payload length", 57, 200));
    out.push(edit("unknown frame type", 1, 0x09));
    out.push(edit("unknown delivery mode", 2, 0x07));
    out.push(edit("hop limit zero", 4, 0));
    out.push(edit("reserved byte", 5, 1));
    out.push(edit("reserved flags on ack", 1, 0x02));
    out.push(edit("unknown dtype", 58, 0x0f));
    out.push(edit("control frame", 1, 0x03));
    let mut tensor = good.clone();
    tensor[58] = 0x02; // f32: 8 payload bytes hold 2 elements
    tensor[59] = 0x10;
    set_checksum(&mut tensor);
    out.push(("whole f32 elements", ALLOWED, tensor.clone()));
    tensor[58] = 0x01; // f64: 8 bytes, one element
    set_checksum(&mut tensor);
    out.push(("whole f64 element", ALLOWED, tensor.clone()));
    let mut odd = nexlink(KEY_ONE, 8, 7, 9, 1, b"12345");
    odd[58] = 0x03; // f16 over 5 bytes
    set_checksum(&mut odd);
    out.push(("tensor payload length", ALLOWED, odd));
    let mut scalar = good.clone();
    scalar[58] = 0x02;
    scalar[63] = 1; // rank 0 with an inner dimension
    set_checksum(&mut scalar);
    out.push(("scalar with inner dim", ALLOWED, scalar));
    out
}

#[test]
fn every_case_matches_the_software_forwarder() {
    let Some(mut target) = load(true, XdpLimits::default()) else {
        return;
    };
    let fib = main_table(1);
    target.install_fib(&fib, &neighbours()).expect("install");
    target
        .set_local_keys([RoutingKey(KEY_LOCAL)])
        .expect("local keys");
    let local = BTreeSet::from([KEY_LOCAL]);
    let mut reasons_seen = BTreeSet::new();
    for (name, source, datagram) in cases() {
        let expected = software(&fib, &local, Some(source), &datagram);
        let got = xdp(&target, source, &datagram);
        assert_eq!(got, expected, "case {name}");
        if let Outcome::Drop(reason) = expected {
            reasons_seen.insert(reason);
        }
    }
    // Every drop reason is reached by a hand-made case above.
    for reason in DROP_REASONS {
        assert!(reasons_seen.contains(reason), "no case drops as {reason}");
    }
}

#[test]
fn weighted_choice_and_rewrite_match_per_flow() {
    let Some(mut target) = load(false, XdpLimits::default()) else {
        return;
    };
    let fib = main_table(1);
    target.install_fib(&fib, &neighbours()).expect("install");
    let mut per_hop = [0u32; 3];
    for flow in 0..600u32 {
        let datagram = nexlink(
            KEY_WEIGHTED,
            64,
            u64::from(flow % 7),
            u64::from(flow) * 31,
            flow,
            &[0u8; 16],
        );
        let expected = software(&fib, &BTreeSet::new(), None, &datagram);
        let got = xdp(&target, STRANGER, &datagram);
        assert_eq!(got, expected, "flow {flow}");
        let Outcome::Forward { to, .. } = got else {
            panic!("flow {flow} not forwarded")
        };
        per_hop[usize::from(to.port() - 7402)] += 1;
    }
    // Weights 1:2:5 over 600 flows.
    assert!(per_hop.iter().all(|n| *n > 30), "{per_hop:?}");
    assert!(
        per_hop[2] > per_hop[1] && per_hop[1] > per_hop[0],
        "{per_hop:?}"
    );
}

#[test]
fn mutated_frames_match_the_software_forwarder() {
    let Some(mut target) = load(true, XdpLimits::default()) else {
        return;
    };
    let fib = main_table(1);
    target.install_fib(&fib, &neighbours()).expect("install");
    target
        .set_local_keys([RoutingKey(KEY_LOCAL)])
        .expect("local keys");
    let local = BTreeSet::from([KEY_LOCAL]);
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let keys = [KEY_ONE, KEY_WEIGHTED, KEY_LOCAL, KEY_MISS];
    for round in 0..1500 {
        let key = keys[rng.random_range(0..keys.len())];
        let payload: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
        let mut datagram = nexlink(
            key,
            rng.random_range(1..=4),
            rng.random(),
            rng.random(),
            rng.random(),
            &payload,
        );
        for _ in 0..rng.random_range(0..3) {
            let at = rng.random_range(0..datagram.len());
            datagram[at] = rng.random();
        }
        if rng.random_bool(0.7) {
            set_checksum(&mut datagram);
        }
        if rng.random_bool(0.1) {
            datagram.truncate(rng.random_range(0..datagram.len() + 1));
        }
        let source = if rng.random_bool(0.95) {
            ALLOWED
        } else {
            STRANGER
        };
        let expected = software(&fib, &local, Some(source), &datagram);
        let got = xdp(&target, source, &datagram);
        assert_eq!(got, expected, "round {round}: {datagram:02x?}");
    }
}

#[test]
fn generations_swap_and_roll_back() {
    let Some(mut target) = load(false, XdpLimits::default()) else {
        return;
    };
    let one = table(1, &[(KEY_ONE, vec![hop(1, 7401, 1, None)])], &[]);
    let two = table(2, &[(KEY_ONE, vec![hop(5, 7405, 1, Some(REWRITE))])], &[]);
    let frame = nexlink(KEY_ONE, 9, 1, 1, 1, b"swap");
    let to = |target: &XdpTarget| match xdp(target, ALLOWED, &frame) {
        Outcome::Forward { to, .. } => to.port(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        xdp(&target, ALLOWED, &frame),
        Outcome::Drop("no_route"),
        "nothing installed"
    );
    assert_eq!(
        target.install_fib(&one, &neighbours()).expect("install 1"),
        0
    );
    assert_eq!(to(&target), 7401);
    assert_eq!(
        target.install_fib(&two, &neighbours()).expect("install 2"),
        1
    );
    assert_eq!(
        xdp(&target, ALLOWED, &frame),
        software(&two, &BTreeSet::new(), None, &frame)
    );
    assert_eq!(target.counters().expect("counters").generation, 2);
    assert_eq!(target.previous_generation(), Some(1));
    assert_eq!(target.rollback().expect("rollback"), 1);
    assert_eq!(to(&target), 7401);
    assert_eq!(target.counters().expect("counters").generation, 1);
    assert!(matches!(target.rollback(), Err(XdpError::NoPrevious)));
    assert!(matches!(
        target.install_fib(&two, &neighbours()),
        Err(XdpError::Stale {
            offered: 2,
            installed: 2
        })
    ));
    let three = table(3, &[(KEY_ONE, vec![hop(6, 7406, 1, None)])], &[]);
    target
        .install_fib(&three, &neighbours())
        .expect("install 3");
    assert_eq!(to(&target), 7406);
}

#[test]
fn a_table_too_large_is_refused_and_the_installed_one_stays() {
    let limits = XdpLimits {
        routes_max: 4,
        ..XdpLimits::default()
    };
    let Some(mut target) = load(false, limits) else {
        return;
    };
    let routes = |n: u128| -> Vec<(u128, Vec<_>)> {
        (0..n)
            .map(|i| (KEY_ONE + i, vec![hop(1, 7401, 1, None)]))
            .collect()
    };
    target
        .install_fib(&table(1, &routes(4), &[]), &neighbours())
        .expect("install");
    let refused = target.install_fib(&table(2, &routes(5), &[]), &neighbours());
    match refused {
        Err(XdpError::Table(TableError::TooManyRoutes {
            routes: 5, max: 4, ..
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(target.generation(), 1);
    let frame = nexlink(KEY_ONE + 3, 9, 1, 1, 1, b"still");
    assert!(matches!(
        xdp(&target, ALLOWED, &frame),
        Outcome::Forward { .. }
    ));
    // Unresolvable and IPv6 next hops are refused the same way.
    let mut unknown = hop(99, 7499, 1, None);
    unknown.addr = "10.9.9.9:7499".parse().expect("addr");
    assert!(matches!(
        target.install_fib(&table(3, &[(KEY_ONE, vec![unknown])], &[]), &neighbours()),
        Err(XdpError::Table(TableError::NoEgress { .. }))
    ));
    let mut v6 = hop(98, 7498, 1, None);
    v6.addr = "[fd00::1]:7498".parse().expect("addr");
    assert!(matches!(
        target.install_fib(&table(3, &[(KEY_ONE, vec![v6])], &[]), &neighbours()),
        Err(XdpError::Table(TableError::Ipv6NextHop { .. }))
    ));
    assert_eq!(target.generation(), 1);
}

#[test]
fn other_traffic_passes_uncounted() {
    let Some(target) = load(true, XdpLimits::default()) else {
        return;
    };
    let mut frame = ethernet(ALLOWED, &nexlink(KEY_ONE, 9, 1, 1, 1, b"x"));
    frame[36..38].copy_from_slice(&(PORT + 1).to_be_bytes()); // another UDP port
    let run = target.test_run(&frame).expect("run");
    assert_eq!(run.verdict, verdict::PASS);
    assert_eq!(run.frame, frame);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]); // not IPv4
    assert_eq!(target.test_run(&frame).expect("run").verdict, verdict::PASS);
    assert_eq!(
        target.test_run(&frame[..20]).expect("run").verdict,
        verdict::PASS
    );
    assert_eq!(
        target.counters().expect("counters"),
        ForwarderCounters::default()
    );
}

/// A neighbour table where next hops 10.9.0.n resolve as in [`neighbours`] except those in
/// `pending`, whose MAC is not known yet.
struct Partly {
    pending: BTreeSet<u8>,
}

impl Neighbours for Partly {
    fn egress(&self, to: SocketAddrV4) -> Result<Egress, Unresolved> {
        let n = to.ip().octets()[3];
        if self.pending.contains(&n) {
            return Err(Unresolved::Pending {
                gateway: *to.ip(),
                ifindex: 1,
            });
        }
        neighbours().egress(to)
    }
}

#[test]
fn a_next_hop_without_a_mac_is_left_to_the_kernel_and_taken_over_when_resolved() {
    let Some(mut target) = load(false, XdpLimits::default()) else {
        return;
    };
    let fib = main_table(1);
    // Next hop 3 (weight 2 of 8, with a rewrite) has no MAC yet.
    let pending = Partly {
        pending: BTreeSet::from([3]),
    };
    let partial = XdpTable::from_fib(&fib, PORT, &pending, XdpLimits::default()).expect("table");
    assert_eq!(
        partial.kernel_path_hops(),
        vec!["10.9.0.3:7403".parse::<SocketAddrV4>().expect("addr")]
    );
    assert_eq!(
        partial.egress_ifindexes(),
        vec![1],
        "no devmap entry for it"
    );
    target.install(partial).expect("install");
    let mut passed = 0;
    for flow in 0..200u32 {
        let datagram = nexlink(KEY_WEIGHTED, 64, 1, u64::from(flow) * 31, flow, &[7; 16]);
        let expected = software(&fib, &BTreeSet::new(), None, &datagram);
        let before = target.counters().expect("counters");
        let frame = ethernet(STRANGER, &datagram);
        let run = target.test_run(&frame).expect("run");
        let after = target.counters().expect("counters");
        match expected {
            Outcome::Forward { to, .. } if to.port() == 7403 => {
                // As it came, hop limit and key untouched, for the kernel's stack.
                assert_eq!(run.verdict, verdict::PASS, "flow {flow}");
                assert_eq!(run.frame, frame, "flow {flow}: unchanged");
                assert_eq!(after.forwarded, before.forwarded);
                passed += 1;
            }
            Outcome::Forward { to, frame: bytes } => {
                assert_eq!(run.verdict, verdict::TX, "flow {flow}");
                let n = run.frame[5];
                assert_eq!(
                    sent(&run.frame, EGRESS_MAC, next_mac(n), SRC_IP),
                    (to, bytes),
                    "flow {flow}: every other flow keeps its next hop"
                );
            }
            other => panic!("flow {flow}: {other:?}"),
        }
    }
    assert!(passed > 20, "{passed} of 200 flows on the weight-2 hop");
    assert_eq!(target.passed_to_kernel().expect("counter"), passed);
    assert_eq!(
        target.counters().expect("counters").dropped_total(),
        0,
        "a pass is no drop"
    );

    // Resolved: the same generation reinstalled, and XDP forwards those flows too.
    let resolved = XdpTable::from_fib(&fib, PORT, &neighbours(), XdpLimits::default()).expect("t");
    assert!(resolved.kernel_path_hops().is_empty());
    target.reinstall(resolved).expect("reinstall");
    assert_eq!(target.generation(), 1);
    assert_eq!(target.previous_generation(), None);
    for flow in 0..200u32 {
        let datagram = nexlink(KEY_WEIGHTED, 64, 1, u64::from(flow) * 31, flow, &[7; 16]);
        assert_eq!(
            xdp(&target, STRANGER, &datagram),
            software(&fib, &BTreeSet::new(), None, &datagram),
            "flow {flow}"
        );
    }
    assert_eq!(target.passed_to_kernel().expect("counter"), passed);
    // Reinstalling another generation than the installed one is refused.
    let two = XdpTable::from_fib(&main_table(2), PORT, &neighbours(), XdpLimits::default())
        .expect("table 2");
    assert!(matches!(
        target.reinstall(two),
        Err(XdpError::NotInstalled {
            offered: 2,
            installed: 1
        })
    ));
    // Unknown and unroutable next hops still refuse the table.
    let unroutable = table(1, &[(KEY_ONE, vec![hop(99, 7499, 1, None)])], &[]);
    assert!(matches!(
        XdpTable::from_fib(&unroutable, PORT, &neighbours(), XdpLimits::default()),
        Err(TableError::NoEgress {
            why: Unresolved::Unknown,
            ..
        })
    ));
}

#[test]
fn too_many_local_keys_are_refused_before_anything_changes() {
    let Some(mut target) = load(false, XdpLimits::default()) else {
        return;
    };
    let frame = nexlink(KEY_LOCAL, 9, 1, 1, 1, b"local");
    target
        .set_local_keys([RoutingKey(KEY_LOCAL)])
        .expect("local keys");
    let many = (0..=LOCAL_KEYS_MAX as u128).map(|n| RoutingKey(KEY_LOCAL + 1 + n));
    assert!(matches!(
        target.set_local_keys(many),
        Err(XdpError::TooManyLocalKeys { keys, max: LOCAL_KEYS_MAX }) if keys == LOCAL_KEYS_MAX + 1
    ));
    assert_eq!(target.local_keys(), 1);
    assert!(matches!(
        xdp(&target, ALLOWED, &frame),
        Outcome::Local { .. }
    ));
    // Exactly the limit fits.
    let full = (0..LOCAL_KEYS_MAX as u128).map(|n| RoutingKey(KEY_LOCAL + n));
    target.set_local_keys(full).expect("the limit fits");
    assert_eq!(target.local_keys(), LOCAL_KEYS_MAX);
    assert!(matches!(
        xdp(&target, ALLOWED, &frame),
        Outcome::Local { .. }
    ));
}
