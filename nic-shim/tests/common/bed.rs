//! The veth test bed shared by the tests, `examples/xdp_bench.rs` and the node's XDP target
//! test (`fabric/tests/xdp_target.rs`, which uses its capability check and `run`); both include
//! this file with `#[path]`. Three network namespaces — sender, router, sink — joined by two veth
//! pairs, created by [`Bed::new`] and deleted when the [`Bed`] is dropped, also on failure.
//!
//! ```text
//!   sender            router                 sink
//!   nxa0 10.77.1.2 -- nxa1 10.77.1.1
//!                     nxb1 10.77.2.1 -- nxb0 10.77.2.2
//! ```
//!
//! Needs root (with CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` and `ethtool`.
#![allow(dead_code)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};

pub const A0: &str = "nxa0";
pub const A1: &str = "nxa1";
pub const B1: &str = "nxb1";
pub const B0: &str = "nxb0";
pub const MAC_A0: [u8; 6] = [0x02, 0x4e, 0, 0, 0xa, 0];
pub const MAC_A1: [u8; 6] = [0x02, 0x4e, 0, 0, 0xa, 1];
pub const MAC_B1: [u8; 6] = [0x02, 0x4e, 0, 0, 0xb, 1];
pub const MAC_B0: [u8; 6] = [0x02, 0x4e, 0, 0, 0xb, 0];
pub const IP_A0: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
pub const IP_A1: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
pub const IP_B1: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
pub const IP_B0: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

/// Index of the sender's, router's and sink's namespace in [`Bed::ns`].
pub const SENDER: usize = 0;
/// See [`SENDER`].
pub const ROUTER: usize = 1;
/// See [`SENDER`].
pub const SINK: usize = 2;

/// Whether the process runs as root with the capabilities loading XDP programs and making
/// namespaces need (CAP_SYS_ADMIN and CAP_NET_ADMIN effective: a restricted container's root
/// may lack them).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
    };
    let uid_root = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .is_some_and(|line| line.split_whitespace().nth(2) == Some("0"));
    let caps = field("CapEff:")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    uid_root && caps & (CAP_NET_ADMIN | CAP_SYS_ADMIN) == CAP_NET_ADMIN | CAP_SYS_ADMIN
}

/// Why the bed cannot be built here, if it cannot.
pub fn tools_missing() -> Option<&'static str> {
    if !is_root() {
        return Some("network namespaces and XDP need root with CAP_SYS_ADMIN and CAP_NET_ADMIN");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (ip) is not installed");
    }
    if Command::new("ethtool").arg("--version").output().is_err() {
        return Some("ethtool is not installed");
    }
    None
}

/// Runs a command (no shell) and fails loudly.
pub fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?}: {status}");
}

/// Gives `dev` in namespace `ns` the address `ip`/24 and brings it up.
pub fn address_up(ns: &str, dev: &str, ip: impl std::fmt::Display) {
    run(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        dev,
    ]);
    run(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

/// Runs a command (no shell) and returns its standard output; fails loudly.
pub fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) {
    let file = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a thread in namespace `ns` (sockets it makes, and threads those spawn, stay
/// there).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(ns);
                f()
            })
            .join()
            .expect("thread in namespace")
    })
}

/// Three namespaces (sender, router, sink), deleted on drop even when the test fails.
#[derive(Debug)]
pub struct Bed {
    pub ns: [String; 3],
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Bed {
    /// Builds the bed; `tag` keeps its namespace names apart from other beds of this process.
    /// The sender knows the router's MAC (a static neighbour entry); the router resolves the
    /// sink's by ARP unless [`Bed::static_neighbour`] says otherwise.
    pub fn new(tag: &str) -> Bed {
        let id = format!("{}{tag}", std::process::id());
        let bed = Bed {
            ns: [
                format!("nxs-{id}"),
                format!("nxr-{id}"),
                format!("nxd-{id}"),
            ],
        };
        let [s, r, d] = &bed.ns;
        for ns in &bed.ns {
            run(&["ip", "netns", "add", ns]);
        }
        // Interfaces are created inside the namespaces, so their names never meet another
        // bed's.
        run(&[
            "ip",
            "-n",
            s,
            "link",
            "add",
            A0,
            "address",
            &mac(MAC_A0),
            "type",
            "veth",
            "peer",
            "name",
            A1,
            "address",
            &mac(MAC_A1),
            "netns",
            r,
        ]);
        run(&[
            "ip",
            "-n",
            r,
            "link",
            "add",
            B1,
            "address",
            &mac(MAC_B1),
            "type",
            "veth",
            "peer",
            "name",
            B0,
            "address",
            &mac(MAC_B0),
            "netns",
            d,
        ]);
        for (ns, dev, ip) in [
            (s, A0, IP_A0),
            (r, A1, IP_A1),
            (r, B1, IP_B1),
            (d, B0, IP_B0),
        ] {
            address_up(ns, dev, ip);
        }
        for ns in &bed.ns {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Partial checksums would reach XDP unfinished; the sender computes them.
        run(&["ip", "netns", "exec", s, "ethtool", "-K", A0, "tx", "off"]);
        // The sender's kernel sends to the router's address without waiting for ARP.
        bed.static_neighbour(SENDER, IP_A1, MAC_A1, A0);
        bed
    }

    /// A permanent neighbour entry in namespace `ns`: `ip` is at `lladdr` on `dev`.
    pub fn static_neighbour(&self, ns: usize, ip: Ipv4Addr, lladdr: [u8; 6], dev: &str) {
        run(&[
            "ip",
            "-n",
            &self.ns[ns],
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac(lladdr),
            "dev",
            dev,
        ]);
    }

    /// The index of interface `dev` in namespace `ns`.
    pub fn ifindex(&self, ns: usize, dev: &str) -> u32 {
        let text = output(&["ip", "-n", &self.ns[ns], "-o", "link", "show", "dev", dev]);
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .expect("ifindex")
    }
}
