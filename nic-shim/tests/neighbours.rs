//! [`KernelNeighbours`] against a real kernel: the veth bed (`common/bed.rs`), resolving from
//! the router's namespace. Needs root, `ip` and `ethtool`; prints `SKIPPED: <reason>` and
//! passes without them.

mod common;

use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;

use common::bed::*;
use nexus_nic::{Egress, KernelNeighbours, Unresolved};

/// Resolves `ip` until it is no longer pending (the kernel's ARP takes a moment).
fn resolve(neighbours: &mut KernelNeighbours, ip: Ipv4Addr) -> Result<Egress, Unresolved> {
    for _ in 0..300 {
        match neighbours.resolve(ip) {
            Err(Unresolved::Pending { .. }) => thread::sleep(Duration::from_millis(10)),
            other => return other,
        }
    }
    neighbours.resolve(ip)
}

#[test]
fn next_hops_resolve_from_the_kernels_tables() {
    if let Some(reason) = tools_missing() {
        println!("SKIPPED: {reason}");
        return;
    }
    let bed = Bed::new("nb");
    let b1 = bed.ifindex(ROUTER, B1);
    // A prefix behind the sink, reached through it as gateway.
    run(&[
        "ip",
        "-n",
        &bed.ns[ROUTER],
        "route",
        "add",
        "10.55.0.0/24",
        "via",
        "10.77.2.2",
    ]);
    in_ns(&bed.ns[ROUTER], || {
        let mut neighbours = KernelNeighbours::open().expect("netlink");
        assert_eq!(neighbours.interface_index(B1), Ok(b1));
        assert!(neighbours.interface_index("nx-absent0").is_err());

        // On-link: nothing in the neighbour table yet; asking starts ARP, which resolves.
        let first = neighbours.resolve(IP_B0);
        assert_eq!(
            first,
            Err(Unresolved::Pending {
                gateway: IP_B0,
                ifindex: b1
            }),
            "no ARP entry before the first resolution"
        );
        let sink = Egress {
            ifindex: b1,
            src_mac: MAC_B1,
            dst_mac: MAC_B0,
            src_ip: IP_B1,
        };
        assert_eq!(resolve(&mut neighbours, IP_B0), Ok(sink));
        // Through a gateway: the gateway's MAC.
        assert_eq!(
            resolve(&mut neighbours, "10.55.0.7".parse().expect("ip")),
            Ok(sink)
        );

        // No route, a local address, a blackhole: clear errors.
        let Err(Unresolved::Unroutable { reason }) =
            neighbours.resolve("10.99.0.1".parse().expect("ip"))
        else {
            panic!("10.99.0.1 has no route");
        };
        assert!(
            reason.contains("10.99.0.1") && reason.contains("unreachable"),
            "{reason}"
        );
        let Err(Unresolved::Unroutable { reason }) = neighbours.resolve(IP_A1) else {
            panic!("a local address");
        };
        assert!(reason.contains("address of this host"), "{reason}");

        // refresh caches every address and says whether anything changed.
        assert!(neighbours.refresh([IP_B0, IP_A1]));
        assert_eq!(neighbours.cached(IP_B0), Some(&Ok(sink)));
        assert!(!neighbours.refresh([IP_B0, IP_A1]), "nothing changed");
    });
    // The kernel's entry changes (as when the sink's MAC changes and ARP learns it): the next
    // refresh reports a change and the new MAC.
    let moved = [0x02, 0x4e, 0, 0, 0xb, 0x99];
    bed.static_neighbour(ROUTER, IP_B0, moved, B1);
    in_ns(&bed.ns[ROUTER], || {
        let mut neighbours = KernelNeighbours::open().expect("netlink");
        assert!(neighbours.refresh([IP_B0]), "a new socket's first refresh");
        let Some(Ok(egress)) = neighbours.cached(IP_B0) else {
            panic!("{:?}", neighbours.cached(IP_B0));
        };
        assert_eq!(egress.dst_mac, moved);
        bed.static_neighbour(ROUTER, IP_B0, MAC_B0, B1);
        assert!(neighbours.refresh([IP_B0]), "the MAC changed back");
        assert_eq!(
            neighbours
                .cached(IP_B0)
                .cloned()
                .map(|e| e.map(|e| e.dst_mac)),
            Some(Ok(MAC_B0))
        );
    });
    drop(bed);
}
