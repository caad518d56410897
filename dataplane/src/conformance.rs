//! Packet-level conformance cases: what every forwarding target (the software forwarder, the P4
//! switch target, the XDP NIC target) must do with a given frame under a given table generation.
//!
//! What it does: [`cases`] lists [`Case`]s as plain data — table generations to install, local
//! endpoints, roll-backs, and received datagrams (source IP + UDP payload bytes) each with the
//! [`Outcome`] expected — plus the counters expected at the end. [`run`] feeds one case to any
//! [`PacketPipeline`] (bytes in, outcome out) and reports the first [`Mismatch`].
//! [`SoftwarePipeline`] is the reference: a [`Fib`] and [`decide`], exactly what the forwarder
//! thread runs. A target joins by implementing [`PacketPipeline`] (install a generation its own
//! way, push a datagram through its own pipeline) and running every case; a hardware target
//! wraps the datagram into Ethernet/IPv4/UDP itself.
//!
//! The expected outcomes are built independently of [`decide`]: forwarded frames by emitting a
//! [`Repr`] with the hop limit decremented (and the key rewritten), so the checksum is computed
//! whole rather than updated incrementally; weighted next hops by the documented rule of
//! [`NextHopGroup::select`](crate::fib::NextHopGroup::select) written out again here.
//!
//! What it does not do: time, I/O, batching or GSO (those are the socket backends' suite in
//! `dataplane/tests/forward.rs`). Every address in the cases is IPv4, so a target that only
//! parses IPv4 runs them all.
//!
//! # Call order
//!
//! `for case in cases() { let mut p = MyPipeline::new(); run(&case, &mut p)?; }` — a fresh
//! pipeline per case: each case starts from nothing installed and zero counters.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::fib::{
    FLOW_MIX, Fib, FibTable, InstallError, NextHop, RollbackError, RouteError, RouteSet,
    RoutingKey, SourceError, SourceSet, compile,
};
use crate::forward::{
    DROP_REASONS, DropReason, LocalEndpoints, LocalEndpointsFull, Verdict, decide, flow_hash,
};
use crate::wire::nexlink::{
    DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr,
    RoutingKey as WireRoutingKey, SeqNumber, SessionId, StreamId, TrafficClass, field,
};

/// One table generation: routes (each a key and its weighted next hops) and the source IPs
/// frames are accepted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The generation number (strictly increasing across a case's installs).
    pub generation: u64,
    /// Routes, keyed by routing key.
    pub routes: BTreeMap<RoutingKey, Vec<NextHop>>,
    /// Allowed source IPs.
    pub sources: Vec<IpAddr>,
}

impl Generation {
    /// The generation as the control plane's [`RouteSet`] (groups sorted into canonical order).
    pub fn route_set(&self) -> Result<RouteSet, GenerationError> {
        let mut set = RouteSet::from_routes(self.generation, self.routes.clone())?;
        set.set_sources(SourceSet::try_from(self.sources.clone())?);
        Ok(set)
    }

    /// The generation compiled and loaded as the software FIB's table.
    pub fn table(&self) -> Result<FibTable, GenerationError> {
        let image = compile(&self.route_set()?).map_err(|e| GenerationError(e.to_string()))?;
        FibTable::load(image).map_err(|e| GenerationError(e.to_string()))
    }
}

/// A case's generation could not be built or installed (a broken case, or a target that
/// refused it). Carries the reason as text: targets report errors of their own kinds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GenerationError(pub String);

impl From<RouteError> for GenerationError {
    fn from(e: RouteError) -> Self {
        GenerationError(e.to_string())
    }
}

impl From<SourceError> for GenerationError {
    fn from(e: SourceError) -> Self {
        GenerationError(e.to_string())
    }
}

impl From<LocalEndpointsFull> for GenerationError {
    fn from(e: LocalEndpointsFull) -> Self {
        GenerationError(e.to_string())
    }
}

/// What a pipeline did with one datagram, in backend-neutral terms.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent `frame` to the FIB next hop `to`.
    Forward {
        /// The next hop's UDP address.
        to: SocketAddr,
        /// The bytes sent (the NexLink frame, as rewritten).
        frame: Vec<u8>,
    },
    /// Sent `frame` to the local endpoint `to`.
    Local {
        /// The local service's UDP address.
        to: SocketAddr,
        /// The bytes sent (the frame, unchanged).
        frame: Vec<u8>,
    },
    /// Dropped, counted under this [`DROP_REASONS`] label.
    Drop(&'static str),
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        match self {
            Outcome::Forward { to, frame } => write!(f, "Forward({to}, {})", hex(frame)),
            Outcome::Local { to, frame } => write!(f, "Local({to}, {})", hex(frame)),
            Outcome::Drop(reason) => write!(f, "Drop({reason})"),
        }
    }
}

/// One step of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Install this generation (it replaces the current one atomically; the current one becomes
    /// the one [`Step::Rollback`] returns to).
    Install(Generation),
    /// Return to the generation installed before the current one.
    Rollback,
    /// Replace the local-endpoint table.
    SetLocal(BTreeMap<RoutingKey, SocketAddr>),
    /// Receive `datagram` (a UDP payload) from `source`; `expect` is what must happen.
    Frame {
        /// The datagram's source IP.
        source: IpAddr,
        /// The UDP payload received.
        datagram: Vec<u8>,
        /// The required outcome.
        expect: Outcome,
    },
}

/// Counters a pipeline keeps: every datagram ends in exactly one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames sent to a FIB next hop.
    pub forwarded: u64,
    /// Frames sent to a local endpoint.
    pub delivered_local: u64,
    /// Drops by [`DROP_REASONS`] label; reasons that never happened are absent.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Forward { .. } => self.forwarded += 1,
            Outcome::Local { .. } => self.delivered_local += 1,
            Outcome::Drop(reason) => *self.dropped.entry(reason).or_default() += 1,
        }
    }
}

/// A named sequence of steps and the counters expected after the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// What the case checks, as an identifier (`weights_spread_flows_by_weight`).
    pub name: &'static str,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The pipeline's counters after the last step (from a fresh pipeline).
    pub counts: Counts,
}

/// A forwarding target under test: bytes in, [`Outcome`] out.
pub trait PacketPipeline {
    /// Installs a generation (atomically: a datagram sees the old one or the new one).
    fn install(&mut self, generation: &Generation) -> Result<(), GenerationError>;
    /// Returns to the generation installed before the current one.
    fn rollback(&mut self) -> Result<(), GenerationError>;
    /// Replaces the local-endpoint table.
    fn set_local(
        &mut self,
        local: &BTreeMap<RoutingKey, SocketAddr>,
    ) -> Result<(), GenerationError>;
    /// Processes one received datagram.
    fn process(&mut self, source: IpAddr, datagram: &[u8]) -> Outcome;
    /// The counters since the pipeline was made.
    fn counts(&self) -> Counts;
}

/// The first way a pipeline departed from a case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The pipeline refused a step that the reference accepts.
    #[error("case {case}, step {step}: refused: {error}")]
    Refused {
        /// The case.
        case: &'static str,
        /// The step's index.
        step: usize,
        /// The pipeline's error.
        error: GenerationError,
    },
    /// A datagram's outcome differs.
    #[error("case {case}, step {step}: expected {expected:?}, got {got:?}")]
    Outcome {
        /// The case.
        case: &'static str,
        /// The step's index.
        step: usize,
        /// What the case requires.
        expected: Box<Outcome>,
        /// What the pipeline did.
        got: Box<Outcome>,
    },
    /// The counters after the last step differ.
    #[error("case {case}: expected counters {expected:?}, got {got:?}")]
    Counts {
        /// The case.
        case: &'static str,
        /// What the case requires.
        expected: Counts,
        /// What the pipeline counted.
        got: Counts,
    },
}

/// Runs one case against `pipeline` (fresh: nothing installed, zero counters).
pub fn run(case: &Case, pipeline: &mut dyn PacketPipeline) -> Result<(), Mismatch> {
    for (step, s) in case.steps.iter().enumerate() {
        let refused = |error| Mismatch::Refused {
            case: case.name,
            step,
            error,
        };
        match s {
            Step::Install(generation) => pipeline.install(generation).map_err(refused)?,
            Step::Rollback => pipeline.rollback().map_err(refused)?,
            Step::SetLocal(local) => pipeline.set_local(local).map_err(refused)?,
            Step::Frame {
                source,
                datagram,
                expect,
            } => {
                let got = pipeline.process(*source, datagram);
                if got != *expect {
                    return Err(Mismatch::Outcome {
                        case: case.name,
                        step,
                        expected: Box::new(expect.clone()),
                        got: Box::new(got),
                    });
                }
            }
        }
    }
    let got = pipeline.counts();
    if got != case.counts {
        return Err(Mismatch::Counts {
            case: case.name,
            expected: case.counts.clone(),
            got,
        });
    }
    Ok(())
}

/// The reference pipeline: the software FIB (atomic install, one-step rollback), a
/// [`LocalEndpoints`] table and [`decide`] with the source check on — what the forwarder
/// thread does per datagram.
#[derive(Debug)]
pub struct SoftwarePipeline {
    fib: Option<Fib>,
    local: LocalEndpoints,
    counts: Counts,
}

impl SoftwarePipeline {
    /// Nothing installed: every datagram is dropped as `source_not_allowed` until the first
    /// install.
    pub fn new() -> Self {
        SoftwarePipeline {
            fib: None,
            local: LocalEndpoints::new(),
            counts: Counts::default(),
        }
    }
}

impl Default for SoftwarePipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketPipeline for SoftwarePipeline {
    fn install(&mut self, generation: &Generation) -> Result<(), GenerationError> {
        let table = generation.table()?;
        match &self.fib {
            None => self.fib = Some(Fib::new(table)),
            Some(fib) => {
                fib.install(table)
                    .map_err(|e: InstallError| GenerationError(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), GenerationError> {
        let fib = self
            .fib
            .as_ref()
            .ok_or_else(|| GenerationError("nothing installed".to_owned()))?;
        fib.rollback()
            .map_err(|e: RollbackError| GenerationError(e.to_string()))?;
        Ok(())
    }

    fn set_local(
        &mut self,
        local: &BTreeMap<RoutingKey, SocketAddr>,
    ) -> Result<(), GenerationError> {
        self.local = LocalEndpoints::try_from(local.clone())?;
        Ok(())
    }

    fn process(&mut self, source: IpAddr, datagram: &[u8]) -> Outcome {
        let outcome = match &self.fib {
            None => Outcome::Drop(DropReason::SOURCE_NOT_ALLOWED.label()),
            Some(fib) => {
                let table = fib.load();
                let mut buf = datagram.to_vec();
                match decide(&table, &self.local, Some(source), &mut buf) {
                    Verdict::Forward { to, len } => Outcome::Forward {
                        to,
                        frame: buf[..len].to_vec(),
                    },
                    Verdict::Local { to, len } => Outcome::Local {
                        to,
                        frame: buf[..len].to_vec(),
                    },
                    Verdict::Drop(reason) => Outcome::Drop(reason.label()),
                }
            }
        };
        self.counts.record(&outcome);
        outcome
    }

    fn counts(&self) -> Counts {
        self.counts.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The cases

/// A routed key.
pub const KEY_A: RoutingKey = RoutingKey(0xa000_0000_0000_0000_0000_0000_0000_000a);
/// A second routed key (only in some generations).
pub const KEY_B: RoutingKey = RoutingKey(0xb000_0000_0000_0000_0000_0000_0000_000b);
/// A key served by a local endpoint.
pub const KEY_LOCAL: RoutingKey = RoutingKey(0x10ca_1000_0000_0000_0000_0000_0000_0001);
/// A key that no generation routes.
pub const KEY_UNKNOWN: RoutingKey = RoutingKey(0xdead);
/// The source every generation allows.
pub const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// A source no generation allows unless a case says so.
pub const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9));

/// Next hop number `n` (node id `[n; 32]`, address 10.0.1.n:7000+n), weight 1, no rewrite.
pub fn hop(n: u8) -> NextHop {
    NextHop {
        node: [n; 32],
        addr: SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 1, n),
            7000 + u16::from(n),
        )),
        weight: 1,
        rewrite: None,
    }
}

/// A local endpoint's address (127.0.0.1:9000+n).
pub fn local_addr(n: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000 + u16::from(n)))
}

/// A frame's header fields, as the cases vary them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// The routing key.
    pub key: RoutingKey,
    /// Source node tag (flow hash input).
    pub src: u64,
    /// Session id (flow hash input).
    pub session: u64,
    /// Stream id (flow hash input).
    pub stream: u32,
    /// Hop limit as sent (may be 0 to build a bad frame).
    pub hop_limit: u8,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

impl FrameSpec {
    /// A data frame for `key` with hop limit 64 and a short payload.
    pub fn new(key: RoutingKey) -> Self {
        FrameSpec {
            key,
            src: 7,
            session: 11,
            stream: 1,
            hop_limit: 64,
            payload: b"nexus payload".to_vec(),
        }
    }

    /// The frame's bytes: the header emitted from a [`Repr`] (checksum computed whole).
    pub fn encode(&self) -> Vec<u8> {
        let repr = Repr {
            frame_type: FrameType::Data,
            flags: Flags::EMPTY,
            delivery_mode: DeliveryMode::ALL[0],
            traffic_class: TrafficClass::new(3).expect("3 is a traffic class"),
            ecn: Ecn::NotEct,
            // 1 stands in for 0 here and is overwritten below (a Repr cannot hold 0).
            hop_limit: HopLimit::new(self.hop_limit.max(1)).expect("at least 1"),
            routing_key: WireRoutingKey(self.key.0),
            src: NodeTag(self.src),
            dst: NodeTag(99),
            session: SessionId(self.session),
            stream: StreamId(self.stream),
            seq: SeqNumber(5),
            payload_len: u16::try_from(self.payload.len()).expect("payload under 64 KiB"),
            tensor: None,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        buf[HEADER_LEN..].copy_from_slice(&self.payload);
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet).expect("a valid header");
        if self.hop_limit == 0 {
            buf[field::HOP_LIMIT] = 0;
            Packet::new_unchecked(&mut buf[..]).fill_checksum();
        }
        buf
    }

    /// The frame a forwarder sends on: hop limit one lower, key `rewrite` if given, checksum
    /// computed whole.
    pub fn forwarded(&self, rewrite: Option<RoutingKey>) -> Vec<u8> {
        let mut spec = self.clone();
        spec.hop_limit -= 1;
        if let Some(key) = rewrite {
            spec.key = key;
        }
        spec.encode()
    }

    /// This frame's flow hash.
    pub fn flow_hash(&self) -> u64 {
        flow_hash(
            NodeTag(self.src),
            SessionId(self.session),
            StreamId(self.stream),
        )
    }
}

/// The next hop a weighted group picks for `flow_hash`, by the documented rule: hops in
/// canonical (sorted) order, point `((flow_hash * FLOW_MIX mod 2^64) * weight_total) >> 64`,
/// the hop whose cumulative-weight range holds it.
pub fn expected_hop(group: &[NextHop], flow_hash: u64) -> NextHop {
    let mut hops = group.to_vec();
    hops.sort();
    let total: u64 = hops.iter().map(|h| u64::from(h.weight)).sum();
    let mixed = flow_hash.wrapping_mul(FLOW_MIX);
    let point = ((u128::from(mixed) * u128::from(total)) >> 64) as u64;
    let mut upto = 0u64;
    for hop in &hops {
        upto += u64::from(hop.weight);
        if point < upto {
            return *hop;
        }
    }
    panic!("point {point} is below the weight total {total}")
}

fn generation(n: u64, routes: &[(RoutingKey, Vec<NextHop>)], sources: &[IpAddr]) -> Generation {
    Generation {
        generation: n,
        routes: routes.iter().cloned().collect(),
        sources: sources.to_vec(),
    }
}

/// Builds a case's steps and counts its expected outcomes.
struct Builder {
    name: &'static str,
    steps: Vec<Step>,
    counts: Counts,
}

impl Builder {
    fn new(name: &'static str) -> Self {
        Builder {
            name,
            steps: Vec::new(),
            counts: Counts::default(),
        }
    }
    fn install(mut self, g: Generation) -> Self {
        self.steps.push(Step::Install(g));
        self
    }
    fn rollback(mut self) -> Self {
        self.steps.push(Step::Rollback);
        self
    }
    fn local(mut self, entries: &[(RoutingKey, SocketAddr)]) -> Self {
        self.steps
            .push(Step::SetLocal(entries.iter().copied().collect()));
        self
    }
    fn frame(mut self, source: IpAddr, datagram: Vec<u8>, expect: Outcome) -> Self {
        self.counts.record(&expect);
        self.steps.push(Step::Frame {
            source,
            datagram,
            expect,
        });
        self
    }
    /// `spec` from [`PEER`], forwarded to `hop`.
    fn forwards(self, spec: &FrameSpec, hop: &NextHop) -> Self {
        let expect = Outcome::Forward {
            to: hop.addr,
            frame: spec.forwarded(hop.rewrite),
        };
        self.frame(PEER, spec.encode(), expect)
    }
    fn drops(self, source: IpAddr, datagram: Vec<u8>, reason: &'static str) -> Self {
        debug_assert!(DROP_REASONS.contains(&reason), "{reason} is a drop reason");
        self.frame(source, datagram, Outcome::Drop(reason))
    }
    fn done(self) -> Case {
        Case {
            name: self.name,
            steps: self.steps,
            counts: self.counts,
        }
    }
}

/// Every conformance case.
pub fn cases() -> Vec<Case> {
    vec![
        hit(),
        miss(),
        hop_limit(),
        malformed(),
        source_check(),
        weights(),
        local_delivery(),
        rewrite(),
        swap_mid_stream(),
        rollback(),
    ]
}

fn hit() -> Case {
    let spec = FrameSpec::new(KEY_A);
    let mut trailing = spec.encode();
    trailing.extend_from_slice(b"not part of the frame");
    Builder::new("hit_forwards_with_hop_limit_decremented")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .forwards(&spec, &hop(1))
        // Bytes after the declared payload are not part of the frame and are not sent.
        .frame(
            PEER,
            trailing,
            Outcome::Forward {
                to: hop(1).addr,
                frame: spec.forwarded(None),
            },
        )
        .done()
}

fn miss() -> Case {
    Builder::new("miss_drops_no_route")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .drops(PEER, FrameSpec::new(KEY_UNKNOWN).encode(), "no_route")
        .forwards(&FrameSpec::new(KEY_A), &hop(1))
        .done()
}

fn hop_limit() -> Case {
    let with = |hop_limit| FrameSpec {
        hop_limit,
        ..FrameSpec::new(KEY_A)
    };
    Builder::new("hop_limit_is_decremented_and_enforced")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .drops(PEER, with(1).encode(), "hop_limit_exceeded")
        .drops(PEER, with(0).encode(), "hop_limit_zero")
        .forwards(&with(2), &hop(1))
        .forwards(&with(255), &hop(1))
        // A miss is found after the decrement: hop limit 1 to an unknown key is exceeded.
        .drops(
            PEER,
            FrameSpec {
                hop_limit: 1,
                ..FrameSpec::new(KEY_UNKNOWN)
            }
            .encode(),
            "hop_limit_exceeded",
        )
        .done()
}

fn malformed() -> Case {
    let good = FrameSpec::new(KEY_A).encode();
    let with = |at: usize, value: u8, refill: bool| {
        let mut frame = good.clone();
        frame[at] = value;
        if refill {
            Packet::new_unchecked(&mut frame[..]).fill_checksum();
        }
        frame
    };
    Builder::new("malformed_frames_are_dropped_by_reason")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .drops(PEER, Vec::new(), "truncated")
        .drops(PEER, good[..HEADER_LEN - 1].to_vec(), "truncated")
        .drops(PEER, with(field::VER_FLAGS, 2 << 4, true), "bad_version")
        .drops(
            PEER,
            with(
                field::ROUTING_KEY.start,
                good[field::ROUTING_KEY.start] ^ 1,
                false,
            ),
            "bad_checksum",
        )
        .drops(PEER, good[..good.len() - 1].to_vec(), "payload_length")
        .drops(
            PEER,
            with(field::FRAME_TYPE, 0x7f, true),
            "unknown_frame_type",
        )
        .drops(
            PEER,
            with(field::DELIVERY_MODE, 0x7f, true),
            "unknown_delivery_mode",
        )
        .drops(PEER, with(field::RESERVED, 1, true), "reserved")
        .drops(PEER, with(field::DTYPE, 0xee, true), "unknown_dtype")
        .forwards(&FrameSpec::new(KEY_A), &hop(1))
        .done()
}

fn source_check() -> Case {
    Builder::new("sources_outside_the_generation_are_dropped_first")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .drops(
            STRANGER,
            FrameSpec::new(KEY_A).encode(),
            "source_not_allowed",
        )
        // Checked before parsing: a malformed frame from a stranger counts only as that.
        .drops(STRANGER, Vec::new(), "source_not_allowed")
        .forwards(&FrameSpec::new(KEY_A), &hop(1))
        // The allowed sources change with the generation.
        .install(generation(2, &[(KEY_A, vec![hop(1)])], &[STRANGER]))
        .drops(PEER, FrameSpec::new(KEY_A).encode(), "source_not_allowed")
        .frame(
            STRANGER,
            FrameSpec::new(KEY_A).encode(),
            Outcome::Forward {
                to: hop(1).addr,
                frame: FrameSpec::new(KEY_A).forwarded(None),
            },
        )
        .done()
}

/// Flows spread over a 1:3 group: each flow's next hop by the documented rule, and every frame
/// of a flow to the same next hop.
fn weights() -> Case {
    let light = hop(1);
    let heavy = NextHop {
        weight: 3,
        ..hop(2)
    };
    let group = vec![heavy, light];
    let mut builder = Builder::new("weights_spread_flows_by_weight").install(generation(
        1,
        &[(KEY_A, group.clone())],
        &[PEER],
    ));
    for flow in 0..WEIGHT_CASE_FLOWS {
        let spec = FrameSpec {
            session: 1000 + flow,
            stream: (flow % 3) as u32,
            ..FrameSpec::new(KEY_A)
        };
        let chosen = expected_hop(&group, spec.flow_hash());
        // Two frames of the flow: the same next hop both times.
        builder = builder.forwards(&spec, &chosen).forwards(&spec, &chosen);
    }
    builder.done()
}

/// Flows in [`cases`]' weighted case: enough that a 1:3 split shows (the test asserts it).
pub const WEIGHT_CASE_FLOWS: u64 = 200;

fn local_delivery() -> Case {
    let local = FrameSpec::new(KEY_LOCAL);
    let last_hop = FrameSpec {
        hop_limit: 1,
        ..FrameSpec::new(KEY_LOCAL)
    };
    Builder::new("local_keys_are_delivered_unchanged")
        // A route for the local key too: local delivery comes first.
        .install(generation(
            1,
            &[(KEY_A, vec![hop(1)]), (KEY_LOCAL, vec![hop(2)])],
            &[PEER],
        ))
        .local(&[(KEY_LOCAL, local_addr(1))])
        .frame(
            PEER,
            local.encode(),
            Outcome::Local {
                to: local_addr(1),
                frame: local.encode(),
            },
        )
        // Arrived: no hop-limit decrement, so hop limit 1 is delivered.
        .frame(
            PEER,
            last_hop.encode(),
            Outcome::Local {
                to: local_addr(1),
                frame: last_hop.encode(),
            },
        )
        .forwards(&FrameSpec::new(KEY_A), &hop(1))
        // Without the local entry the route applies.
        .local(&[])
        .forwards(&local, &hop(2))
        .done()
}

fn rewrite() -> Case {
    let rewriting = NextHop {
        rewrite: Some(KEY_LOCAL),
        ..hop(3)
    };
    Builder::new("next_hop_rewrites_the_routing_key")
        .install(generation(
            1,
            &[(KEY_A, vec![rewriting]), (KEY_B, vec![hop(1)])],
            &[PEER],
        ))
        .forwards(&FrameSpec::new(KEY_A), &rewriting)
        .forwards(&FrameSpec::new(KEY_B), &hop(1))
        .done()
}

fn swap_mid_stream() -> Case {
    let a = FrameSpec::new(KEY_A);
    let b = FrameSpec::new(KEY_B);
    Builder::new("generation_swap_mid_stream")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .forwards(&a, &hop(1))
        .drops(PEER, b.encode(), "no_route")
        // Generation 2 moves KEY_A (a modify), adds KEY_B (an insert).
        .install(generation(
            2,
            &[(KEY_A, vec![hop(2)]), (KEY_B, vec![hop(1)])],
            &[PEER],
        ))
        .forwards(&a, &hop(2))
        .forwards(&b, &hop(1))
        // Generation 3 removes KEY_A (a delete) and gives KEY_B a group of two.
        .install(generation(3, &[(KEY_B, vec![hop(1), hop(2)])], &[PEER]))
        .drops(PEER, a.encode(), "no_route")
        .forwards(&b, &expected_hop(&[hop(1), hop(2)], b.flow_hash()))
        .done()
}

fn rollback() -> Case {
    let a = FrameSpec::new(KEY_A);
    let b = FrameSpec::new(KEY_B);
    Builder::new("rollback_restores_the_previous_generation")
        .install(generation(1, &[(KEY_A, vec![hop(1)])], &[PEER]))
        .install(generation(
            2,
            &[(KEY_A, vec![hop(2)]), (KEY_B, vec![hop(1)])],
            &[PEER, STRANGER],
        ))
        .forwards(&a, &hop(2))
        .forwards(&b, &hop(1))
        .rollback()
        .forwards(&a, &hop(1))
        .drops(PEER, b.encode(), "no_route")
        .drops(STRANGER, a.encode(), "source_not_allowed")
        .done()
}
