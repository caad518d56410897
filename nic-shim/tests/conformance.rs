//! The data plane's shared conformance cases (`nexus_dataplane::conformance`) run against the
//! XDP program through `BPF_PROG_TEST_RUN`: every datagram wrapped in Ethernet/IPv4/UDP, the
//! verdict, drop reason, next hop and bytes sent compared with what the case requires. Needs
//! root; prints `SKIPPED: <reason>` and passes without it.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use common::{PORT, ethernet, is_root, sent};
use nexus_dataplane::conformance::{
    Counts, Generation, GenerationError, Outcome, PacketPipeline, cases, run,
};
use nexus_dataplane::fib::RoutingKey;
use nexus_dataplane::forward::DROP_REASONS;
use nexus_dataplane::wire::nexlink::Packet;
use nexus_nic::{Egress, Neighbours, Unresolved, XdpConfig, XdpLimits, XdpTarget, verdict};

const EGRESS_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x01];
const SRC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);

/// Every next hop a.b.c.d leaves through the loopback interface (where BPF_PROG_TEST_RUN says
/// frames arrive, so forwarded frames come back as XDP_TX) to MAC 02:aa:a:b:c:d.
struct Loopback;

fn next_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0xaa, a, b, c, d]
}

impl Neighbours for Loopback {
    fn egress(&self, to: SocketAddrV4) -> Result<Egress, Unresolved> {
        Ok(Egress {
            ifindex: 1,
            src_mac: EGRESS_MAC,
            dst_mac: next_mac(*to.ip()),
            src_ip: SRC_IP,
        })
    }
}

struct XdpPipeline {
    target: XdpTarget,
    local: BTreeMap<RoutingKey, SocketAddr>,
}

impl PacketPipeline for XdpPipeline {
    fn install(&mut self, generation: &Generation) -> Result<(), GenerationError> {
        let table = generation.table()?;
        self.target
            .install_fib(&table, &Loopback)
            .map(|_| ())
            .map_err(|e| GenerationError(e.to_string()))
    }

    fn rollback(&mut self) -> Result<(), GenerationError> {
        self.target
            .rollback()
            .map(|_| ())
            .map_err(|e| GenerationError(e.to_string()))
    }

    fn set_local(
        &mut self,
        local: &BTreeMap<RoutingKey, SocketAddr>,
    ) -> Result<(), GenerationError> {
        self.target
            .set_local_keys(local.keys().copied())
            .map_err(|e| GenerationError(e.to_string()))?;
        self.local = local.clone();
        Ok(())
    }

    fn process(&mut self, source: IpAddr, datagram: &[u8]) -> Outcome {
        let IpAddr::V4(source) = source else {
            panic!("the cases use IPv4 sources")
        };
        let before = self.target.counters().expect("counters");
        let run = self
            .target
            .test_run(&ethernet(source, datagram))
            .expect("test run");
        let after = self.target.counters().expect("counters");
        match run.verdict {
            verdict::DROP => {
                let reasons: Vec<&'static str> = DROP_REASONS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| after.dropped[*i] != before.dropped[*i])
                    .map(|(_, r)| *r)
                    .collect();
                assert_eq!(reasons.len(), 1, "one drop reason counted: {reasons:?}");
                Outcome::Drop(reasons[0])
            }
            verdict::TX => {
                let dst = Ipv4Addr::new(run.frame[30], run.frame[31], run.frame[32], run.frame[33]);
                let (to, frame) = sent(&run.frame, EGRESS_MAC, next_mac(dst), SRC_IP);
                Outcome::Forward {
                    to: to.into(),
                    frame,
                }
            }
            verdict::PASS if after.delivered_local == before.delivered_local + 1 => {
                let frame = &run.frame[42..];
                let packet = Packet::new_unchecked(frame);
                let len = 64 + usize::from(packet.payload_len());
                let key = RoutingKey(packet.routing_key().0);
                Outcome::Local {
                    to: self.local[&key],
                    frame: frame[..len].to_vec(),
                }
            }
            other => panic!("verdict {other}"),
        }
    }

    fn counts(&self) -> Counts {
        let counters = self.target.counters().expect("counters");
        Counts {
            forwarded: counters.forwarded,
            delivered_local: counters.delivered_local,
            dropped: counters.drops().filter(|(_, n)| *n > 0).collect(),
        }
    }
}

#[test]
fn every_conformance_case_passes_on_xdp() {
    if !is_root() {
        println!("SKIPPED: loading an XDP program needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN");
        return;
    }
    let all = cases();
    assert!(!all.is_empty());
    for case in &all {
        let target = XdpTarget::load(XdpConfig {
            port: PORT,
            source_check: true,
            limits: XdpLimits::default(),
        })
        .expect("load");
        let mut pipeline = XdpPipeline {
            target,
            local: BTreeMap::new(),
        };
        if let Err(mismatch) = run(case, &mut pipeline) {
            panic!("{mismatch}");
        }
    }
}
