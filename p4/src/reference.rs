//! [`ReferencePipeline`]: `nexus.p4` executed in Rust — its parser, tables, actions, counters
//! and digest — on Ethernet frames, with table state that only P4Runtime writes change.
//! [`ReferenceTarget`] runs the packet-level conformance cases through it: each generation
//! goes through the [`Controller`]'s updates, exactly as the node sends them to a switch.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use nexus_dataplane::conformance::{Counts, Generation, GenerationError, Outcome, PacketPipeline};
use nexus_dataplane::fib::{FLOW_MIX, RoutingKey};
use nexus_dataplane::forward::{
    DROP_REASON_COUNT, DROP_REASONS, DropReason, LocalEndpoints, flow_hash,
};
use nexus_dataplane::wire::nexlink::{Packet, Repr, field};

use crate::controller::Controller;
use crate::entries::{EntityError, Entries};
use crate::program::NEXLINK_UDP_PORT;
use crate::proto::v1::{Update, WriteRequest};

/// Ethernet II header length.
pub const ETHERNET_LEN: usize = 14;
/// IPv4 header length without options (the program parses no options).
pub const IPV4_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// Bytes in front of the NexLink header.
pub const NEXLINK_OFFSET: usize = ETHERNET_LEN + IPV4_LEN + UDP_LEN;

/// What the pipeline did with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Sent `frame` out of `port`.
    Send {
        /// The egress port (the ingress port: the program turns frames around, like XDP_TX).
        port: u16,
        /// The frame as sent.
        frame: Vec<u8>,
        /// Counter index: 0 forwarded, 1 delivered locally.
        kind: usize,
    },
    /// Dropped and counted under this reason.
    Drop(DropReason),
    /// Not a NexLink datagram (not IPv4 without options, not UDP, not to
    /// [`NEXLINK_UDP_PORT`], or shorter than its headers say): dropped, not counted.
    NotNexLink,
}

/// The program's state and behaviour.
#[derive(Clone, Debug, Default)]
pub struct ReferencePipeline {
    entries: Entries,
    drops: [u64; DROP_REASON_COUNT],
    sent: [u64; 2],
    digests: Vec<(u128, u64)>,
}

impl ReferencePipeline {
    /// Nothing installed: every source is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// The installed entries.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// Applies a write's updates in order, all or nothing (the first refused update leaves the
    /// state as before the write, like `ROLLBACK_ON_ERROR`).
    pub fn write(&mut self, request: &WriteRequest) -> Result<(), (usize, EntityError)> {
        self.apply(&request.updates)
    }

    /// [`write`](Self::write) for a bare list of updates.
    pub fn apply(&mut self, updates: &[Update]) -> Result<(), (usize, EntityError)> {
        let mut next = self.entries.clone();
        for (i, u) in updates.iter().enumerate() {
            next.apply(u).map_err(|e| (i, e))?;
        }
        self.entries = next;
        Ok(())
    }

    /// The `nexus_drops` counter, indexed like [`DROP_REASONS`].
    pub fn drops(&self) -> [u64; DROP_REASON_COUNT] {
        self.drops
    }

    /// The `nexus_sent` counter: forwarded, delivered locally.
    pub fn sent(&self) -> [u64; 2] {
        self.sent
    }

    /// Miss digests sent so far: (routing key, source node tag).
    pub fn digests(&self) -> &[(u128, u64)] {
        &self.digests
    }

    /// Runs one frame through the program's ingress (and the deparser).
    pub fn process(&mut self, port: u16, frame: &[u8]) -> Egress {
        let egress = self.ingress(port, frame);
        match &egress {
            Egress::Send { kind, .. } => self.sent[*kind] += 1,
            Egress::Drop(reason) => self.drops[reason.index()] += 1,
            Egress::NotNexLink => {}
        }
        egress
    }

    fn ingress(&mut self, port: u16, frame: &[u8]) -> Egress {
        // Parser: Ethernet → IPv4 (IHL 5) → UDP to the NexLink port.
        if frame.len() < NEXLINK_OFFSET
            || frame[12..14] != [0x08, 0x00]
            || frame[14] != 0x45
            || frame[23] != 17
            || u16::from_be_bytes([frame[36], frame[37]]) != NEXLINK_UDP_PORT
        {
            return Egress::NotNexLink;
        }
        let udp_len = usize::from(u16::from_be_bytes([frame[38], frame[39]]));
        if udp_len < UDP_LEN || NEXLINK_OFFSET - UDP_LEN + udp_len > frame.len() {
            return Egress::NotNexLink;
        }
        let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        // nexus_source.apply(): a miss runs drop_source.
        if !self.entries.sources.contains(&src) {
            return Egress::Drop(DropReason::SOURCE_NOT_ALLOWED);
        }
        let datagram = &frame[NEXLINK_OFFSET..NEXLINK_OFFSET - UDP_LEN + udp_len];
        // The NexLink receive checks, in the program's (and the spec's) order.
        let repr = match Repr::parse(&Packet::new_unchecked(datagram)) {
            Ok(repr) => repr,
            Err(e) => return Egress::Drop(DropReason::of_error(&e)),
        };
        let mut nexlink = datagram[..repr.buffer_len()].to_vec();
        let key = repr.routing_key.0;
        // nexus_local.apply(): deliver_local on a hit, frame unchanged.
        if let Some(to) = self.entries.local.get(&key) {
            return Egress::Send {
                port,
                frame: emit(frame, *to, &nexlink),
                kind: 1,
            };
        }
        if repr.hop_limit.get() == 1 {
            return Egress::Drop(DropReason::of_error(
                &nexus_dataplane::wire::nexlink::Error::HopLimitExceeded,
            ));
        }
        nexlink[field::HOP_LIMIT] -= 1;
        // nexus_route.apply(): set_group on a hit, route_miss (digest + drop) otherwise.
        let Some(route) = self.entries.routes.get(&key).copied() else {
            self.digests.push((key, repr.src.0));
            return Egress::Drop(DropReason::NO_ROUTE);
        };
        let hash = flow_hash(repr.src, repr.session, repr.stream);
        let mixed = hash.wrapping_mul(FLOW_MIX);
        let point = ((u128::from(mixed) * u128::from(route.weight_total)) >> 64) as u64;
        // nexus_group.apply(): the selector picks slot (identity hash of flow_point) mod the
        // group's size in weight units, members laid out in order, each over `weight` slots.
        let (Some(members), true) = (
            self.entries.groups.get(&route.group),
            self.entries.group_entries.contains(&route.group),
        ) else {
            return Egress::Drop(DropReason::NO_ROUTE);
        };
        let slots: u64 = members.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut slot = point % slots;
        let member = members
            .iter()
            .find(|(_, w)| {
                let hit = slot < u64::from(*w);
                if !hit {
                    slot -= u64::from(*w);
                }
                hit
            })
            .map(|(m, _)| *m)
            .expect("slot below the group's size");
        let hop = self.entries.members[&member];
        if let Some(new_key) = hop.rewrite {
            nexlink[field::ROUTING_KEY].copy_from_slice(&new_key.to_be_bytes());
        }
        // The deparser's update_checksum recomputes the NexLink checksum over the header.
        Packet::new_unchecked(&mut nexlink[..]).fill_checksum();
        Egress::Send {
            port,
            frame: emit(frame, hop.addr, &nexlink),
            kind: 0,
        }
    }
}

/// The frame the forward and deliver_local actions send: MACs swapped, IPv4 source = the
/// address the frame came to, destination `to`; UDP source port = the port it came to,
/// destination `to`'s; lengths for `nexlink` (later bytes truncated); IPv4 checksum
/// recomputed, UDP checksum 0 (none, allowed over IPv4).
fn emit(frame: &[u8], to: SocketAddrV4, nexlink: &[u8]) -> Vec<u8> {
    let mut out = frame[..NEXLINK_OFFSET].to_vec();
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    let total = IPV4_LEN + UDP_LEN + nexlink.len();
    out[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    out[26..30].copy_from_slice(&frame[30..34]);
    out[30..34].copy_from_slice(&to.ip().octets());
    out[34..36].copy_from_slice(&frame[36..38]);
    out[36..38].copy_from_slice(&to.port().to_be_bytes());
    out[38..40].copy_from_slice(&((UDP_LEN + nexlink.len()) as u16).to_be_bytes());
    out[40..42].copy_from_slice(&[0, 0]);
    out[24..26].copy_from_slice(&[0, 0]);
    let checksum = ipv4_checksum(&out[ETHERNET_LEN..ETHERNET_LEN + IPV4_LEN]);
    out[24..26].copy_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(nexlink);
    out
}

/// The Internet checksum of an IPv4 header.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The switch's own address in [`ReferenceTarget`]'s frames (where peers send NexLink to).
pub const SWITCH_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
/// The port frames enter on in [`ReferenceTarget`].
pub const INGRESS_PORT: u16 = 3;

/// A UDP datagram from `source` (port 7000) to the switch's NexLink port, in an Ethernet frame.
pub fn wrap(source: Ipv4Addr, datagram: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; NEXLINK_OFFSET];
    frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    let total = (IPV4_LEN + UDP_LEN + datagram.len()) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[22] = 64;
    frame[23] = 17;
    frame[26..30].copy_from_slice(&source.octets());
    frame[30..34].copy_from_slice(&SWITCH_ADDR.octets());
    frame[34..36].copy_from_slice(&7000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&NEXLINK_UDP_PORT.to_be_bytes());
    frame[38..40].copy_from_slice(&((UDP_LEN + datagram.len()) as u16).to_be_bytes());
    let checksum = ipv4_checksum(&frame[ETHERNET_LEN..ETHERNET_LEN + IPV4_LEN]);
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(datagram);
    frame
}

/// The conformance cases' view of the P4 target: generations go through a [`Controller`]
/// (plan, diff, updates) into a [`ReferencePipeline`]; datagrams go in wrapped in
/// Ethernet/IPv4/UDP, and what comes out is unwrapped (and its headers checked).
#[derive(Debug, Default)]
pub struct ReferenceTarget {
    controller: Controller,
    pipeline: ReferencePipeline,
    local: LocalEndpoints,
    /// Updates sent so far, by kind: insert, modify, delete.
    pub updates_by_kind: [u64; 3],
}

impl ReferenceTarget {
    /// Nothing installed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &ReferencePipeline {
        &self.pipeline
    }

    fn send(&mut self, updates: &[Update]) -> Result<(), GenerationError> {
        for u in updates {
            if let Some(slot) = (u.r#type as usize).checked_sub(1) {
                self.updates_by_kind[slot.min(2)] += 1;
            }
        }
        self.pipeline
            .apply(updates)
            .map_err(|(i, e)| GenerationError(format!("update {i} refused: {e}")))
    }
}

impl PacketPipeline for ReferenceTarget {
    fn install(&mut self, generation: &Generation) -> Result<(), GenerationError> {
        let routes = generation.route_set()?;
        let prepared = self
            .controller
            .prepare(routes, self.local.clone())
            .map_err(|e| GenerationError(e.to_string()))?;
        self.send(&prepared.updates)?;
        self.controller.commit(prepared);
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), GenerationError> {
        let prepared = self
            .controller
            .prepare_rollback()
            .ok_or_else(|| GenerationError("no previous generation".to_owned()))?;
        self.send(&prepared.updates)?;
        self.controller.commit(prepared);
        Ok(())
    }

    fn set_local(
        &mut self,
        local: &BTreeMap<RoutingKey, SocketAddr>,
    ) -> Result<(), GenerationError> {
        self.local = LocalEndpoints::try_from(local.clone())?;
        if let Some(prepared) = self
            .controller
            .prepare_local(self.local.clone())
            .map_err(|e| GenerationError(e.to_string()))?
        {
            self.send(&prepared.updates)?;
            self.controller.commit(prepared);
        }
        Ok(())
    }

    fn process(&mut self, source: IpAddr, datagram: &[u8]) -> Outcome {
        let IpAddr::V4(source) = source else {
            panic!("the conformance cases use IPv4 sources");
        };
        match self.pipeline.process(INGRESS_PORT, &wrap(source, datagram)) {
            Egress::Drop(reason) => Outcome::Drop(reason.label()),
            Egress::NotNexLink => panic!("a wrapped datagram was not seen as NexLink"),
            Egress::Send { port, frame, kind } => {
                assert_eq!(port, INGRESS_PORT, "sent back out of the ingress port");
                let ip = &frame[ETHERNET_LEN..ETHERNET_LEN + IPV4_LEN];
                assert_eq!(ipv4_checksum(ip), 0, "IPv4 checksum of the sent frame");
                assert_eq!(ip[12..16], SWITCH_ADDR.octets(), "sent from the switch");
                let len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                assert_eq!(len, frame.len() - ETHERNET_LEN, "IPv4 total length");
                let to = SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                    u16::from_be_bytes([frame[36], frame[37]]),
                ));
                let nexlink = frame[NEXLINK_OFFSET..].to_vec();
                if kind == 0 {
                    Outcome::Forward { to, frame: nexlink }
                } else {
                    Outcome::Local { to, frame: nexlink }
                }
            }
        }
    }

    fn counts(&self) -> Counts {
        let sent = self.pipeline.sent();
        Counts {
            forwarded: sent[0],
            delivered_local: sent[1],
            dropped: DROP_REASONS
                .iter()
                .zip(self.pipeline.drops())
                .filter(|(_, n)| *n > 0)
                .map(|(label, n)| (*label, n))
                .collect(),
        }
    }
}
