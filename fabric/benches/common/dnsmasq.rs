//! A real local DNS resolver for the benches: dnsmasq on a free loopback port, answering A
//! records given on its command line (`--host-record`; no upstream, no hosts file, no cache
//! misses), and the two pieces of the DNS wire format the benches speak to it (RFC 1035 §4.1):
//! a query for an A record and the address in an answer.
//!
//! dnsmasq comes from Debian's `dnsmasq-base` package (the binary, no system service);
//! `fabric/benches/resolve_vs_dns.sh` installs it when it is missing.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running dnsmasq; killed when dropped.
pub struct Dnsmasq {
    pub child: Child,
    /// Where it answers queries (UDP).
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port with one A record per `(name, address)` and
    /// waits until it answers a query for the first name (at most 10 s).
    pub fn start(records: &[(&str, Ipv4Addr)]) -> Dnsmasq {
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "dnsmasq not found; install Debian's dnsmasq-base (fabric/benches/resolve_vs_dns.sh does)"
                )
            });
        let port = free_udp_port();
        let child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
            ])
            .args(
                records
                    .iter()
                    .map(|(name, ip)| format!("--host-record={name},{ip}")),
            )
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let dns = Dnsmasq {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        if let Some((name, ip)) = records.first() {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.connect(dns.addr).expect("connect to dnsmasq");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            let mut answered = false;
            // Until dnsmasq listens, a query is refused at once: 200 tries, 50 ms apart.
            for id in 0..200u16 {
                if socket.send(&query(id, name)).is_ok() {
                    // Answers to earlier queries may still be queued: read up to this one's.
                    while let Ok(n) = socket.recv(&mut buf) {
                        if answer_a(&buf[..n], id) == Some(*ip) {
                            answered = true;
                            break;
                        }
                    }
                }
                if answered {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(answered, "dnsmasq never answered");
        }
        dns
    }
}

/// A query for `name` IN A with id `id`, recursion desired.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    q
}

/// The first IN A address in `answer`, if it answers query `id` without an error code.
pub fn answer_a(answer: &[u8], id: u16) -> Option<Ipv4Addr> {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || answer[3] & 0x0f != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([answer[at], answer[at + 1]]);
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(answer, at)? + 4;
    }
    for _ in 0..answers {
        at = skip_name(answer, at)?;
        let rr = answer.get(at..at + 10)?;
        let (kind, class) = ([rr[0], rr[1]], [rr[2], rr[3]]);
        let len = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let data = answer.get(at + 10..at + 10 + len)?;
        if kind == [0, 1] && class == [0, 1] && len == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    None
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}
