//! [`Membership`]: the sans-IO SWIM core every node (and every simulated node) runs.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Foca, Message, Notification, OwnedNotification, PeriodicParams, Runtime, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::codec::{PACKET_BYTES_MAX, WireCodec};
use crate::id::{MemberId, NodeId};
use crate::leave::{LeaveNotice, LeaveNotices};
use crate::time::Timestamp;

/// First byte of every membership datagram.
pub const WIRE_MAGIC: u8 = 0x4e; // 'N'
/// Second byte: the membership wire version this build speaks (2: canonical identity
/// encoding, digest-based state sync).
pub const WIRE_VERSION: u8 = 2;
/// Third byte: a SWIM message (foca's encoding follows).
pub const KIND_SWIM: u8 = 0x01;
/// Third byte: a state-sync digest (the sender's identity and a per-bucket summary of its member
/// table); the receiver answers with its members in the buckets that differ.
pub const KIND_SYNC_PUSH: u8 = 0x02;
/// Third byte: a state-sync member chunk (members of differing buckets).
pub const KIND_SYNC_REPLY: u8 = 0x03;
/// Fourth byte, bit 0 of a digest: the first digest of a round; the receiver answers with its
/// own digest too, so the sender can send what the receiver lacks.
pub const FLAG_REPLY_WANTED: u8 = 0x01;
const PREFIX_BYTES: usize = 4;
/// Buckets of a state-sync digest: members fall into a bucket by the top bits of their
/// identity's [`MemberId::wire_hash`]; each bucket is summarised by its member count and the XOR
/// of a hash of each member's identity, incarnation and state.
pub const SYNC_BUCKETS: usize = 128;
/// Members one sync chunk may carry (decoded counts above this are rejected).
pub const SYNC_CHUNK_MEMBERS_MAX: usize = 64;

/// Probe periods between anti-entropy rounds (push-pull state sync with a random member, and
/// announces to members held as down).
pub const ANTI_ENTROPY_PERIODS: u32 = 5;
/// Probes whose ack is awaited at once, for RTT samples; older ones are forgotten beyond this.
pub const PINGS_IN_FLIGHT_MAX: usize = 1024;
/// Timers due at one instant processed by one [`Membership::handle_timeout`] call; the rest wait
/// for the next call (a guard against a timer that keeps re-arming itself at zero delay).
pub const TIMERS_PER_CALL_MAX: usize = 10_000;

/// Timings of the membership protocol. All of them are operator settings (`[gossip]` in the
/// node's config file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often each node probes one other member.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a member stays suspect before it is declared down (unless it refutes).
    pub suspect_to_down: Duration,
    /// How long a down member stays in the member list before it is forgotten.
    pub remove_down_after: Duration,
    /// First delay between join attempts while no seed answers.
    pub join_retry_min: Duration,
    /// Largest delay between join attempts (the delay doubles up to this).
    pub join_retry_max: Duration,
    /// Expected cluster size; sets how many times each update is retransmitted.
    pub cluster_size_hint: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(400),
            suspect_to_down: Duration::from_millis(3000),
            remove_down_after: Duration::from_secs(3600),
            join_retry_min: Duration::from_millis(500),
            join_retry_max: Duration::from_secs(30),
            cluster_size_hint: 32,
        }
    }
}

/// A timing setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The offending setting, as named in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl MembershipConfig {
    /// Checks the settings against each other.
    pub fn check(&self) -> Result<(), ConfigError> {
        let err = |field, reason| Err(ConfigError { field, reason });
        if self.probe_period < Duration::from_millis(10) {
            return err("gossip.probe_period_ms", "must be at least 10");
        }
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return err(
                "gossip.probe_rtt_ms",
                "must be above 0 and below gossip.probe_period_ms",
            );
        }
        if self.suspect_to_down < self.probe_period {
            return err(
                "gossip.suspect_to_down_ms",
                "must be at least gossip.probe_period_ms",
            );
        }
        if self.join_retry_min.is_zero() || self.join_retry_min > self.join_retry_max {
            return err(
                "gossip.join_retry_min_ms",
                "must be above 0 and at most gossip.join_retry_max_ms",
            );
        }
        Ok(())
    }

    /// Worst-case time for every surviving member of an `members`-node cluster to see a crashed
    /// member as down: each survivor probes every other member once per round of `members - 1`
    /// probe periods, a failed probe takes one period, suspicion lasts `suspect_to_down`, and the
    /// verdict is piggybacked within one more period.
    pub fn detection_bound(&self, members: usize) -> Duration {
        let rounds = u32::try_from(members.max(2)).unwrap_or(u32::MAX);
        self.probe_period * rounds + self.suspect_to_down + self.probe_period
    }

    fn foca(&self) -> foca::Config {
        let size = std::num::NonZeroU32::new(self.cluster_size_hint.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let mut config = foca::Config::new_lan(size);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspect_to_down;
        config.remove_down_after = self.remove_down_after;
        config.max_packet_size =
            NonZeroUsize::new(PACKET_BYTES_MAX - PREFIX_BYTES).unwrap_or(NonZeroUsize::MIN);
        config.num_indirect_probes = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        config.max_transmissions = config.max_transmissions.max(NonZeroU8::MIN);
        // Gossip (piggybacked updates) a few times per probe period.
        config.periodic_gossip = Some(PeriodicParams {
            frequency: (self.probe_period / 5).max(Duration::from_millis(10)),
            num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        });
        // Anti-entropy is the core's own push-pull state sync (see `Membership::sync`), which
        // replaces foca's periodic announce: a `Feed` carries only a random packetful of
        // members, and the simulator showed nodes missing peers for minutes with it.
        config.periodic_announce = None;
        // Partition healing: members declared down are never probed, so after a partition heals
        // the sides only find each other again by announcing to members they hold as down.
        config.periodic_announce_to_down_members = Some(PeriodicParams {
            frequency: self.probe_period * ANTI_ENTROPY_PERIODS,
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        config
    }
}

/// A member's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes within `suspect_to_down`.
    Suspect,
    /// Declared down by the cluster.
    Down,
    /// Left on purpose (graceful leave).
    Left,
}

impl MemberState {
    /// The lower-case name used in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }

    /// Every state, in display order.
    pub const ALL: [MemberState; 4] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
    ];
}

/// One row of the member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member's identity (address, node id, generation, metadata).
    pub id: MemberId,
    /// SWIM's refutation counter for this identity.
    pub swim_incarnation: u16,
    /// Current state.
    pub state: MemberState,
    /// Whether this row is the local node.
    pub local: bool,
}

/// A datagram for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The whole datagram.
    pub payload: Vec<u8>,
}

/// Something the driver (and operators) should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "events are few and short-lived (queued, then drained by the driver); boxing the \
              member ids would cost an allocation per event for no memory saved"
)]
pub enum Event {
    /// A member became alive (joined, or came back).
    MemberUp(MemberId),
    /// A member was declared down; `left` if it had announced a graceful leave.
    MemberDown {
        /// Who.
        id: MemberId,
        /// Whether it left on purpose.
        left: bool,
    },
    /// A member came back under a newer identity at the same address (restart).
    MemberReplaced {
        /// The identity it had.
        old: MemberId,
        /// The identity it has now.
        new: MemberId,
    },
    /// The local node is known by at least one other member.
    Joined,
    /// Every other member is down or gone; join retries to the seeds start again.
    Isolated,
    /// The local node was declared down while alive and rejoined as a newer generation; the
    /// driver should persist the new generation.
    Rejoined(MemberId),
    /// A direct probe of `peer` was acked after `rtt`.
    ProbeRtt {
        /// Who was probed.
        peer: NodeId,
        /// Round-trip time.
        rtt: Duration,
    },
}

/// Counters of what the core did; plain numbers so simulations can hash them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams accepted by [`Membership::handle_datagram`].
    pub messages_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams emitted through [`Membership::poll_transmit`].
    pub messages_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Datagrams rejected (bad prefix, undecodable, over the size limit).
    pub rejected_in: u64,
    /// Join attempts (rounds of announces to the seeds).
    pub join_attempts: u64,
    /// State-sync rounds started.
    pub sync_rounds: u64,
}

/// Why a datagram was rejected. The membership state is unchanged in every case except
/// [`InputError::Rejected`], where foca may have applied part of a message before the bad part.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Shorter than the two-byte prefix.
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    /// Longer than [`PACKET_BYTES_MAX`].
    #[error("datagram too big ({0} bytes, limit {PACKET_BYTES_MAX})")]
    TooBig(usize),
    /// The first byte is not [`WIRE_MAGIC`]: not a membership datagram.
    #[error("not a membership datagram (first byte {0:#04x})")]
    BadMagic(u8),
    /// A membership wire version this build does not speak.
    #[error("unsupported membership wire version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this build does not know, or flags it does not expect.
    #[error("unknown frame kind {kind:#04x} with flags {flags:#04x}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// A state-sync frame that does not decode.
    #[error("malformed state sync: {0}")]
    BadSync(String),
    /// foca rejected the message (undecodable, from ourselves, malformed broadcast, …).
    #[error("{0}")]
    Rejected(foca::Error),
    /// The local node has left; it accepts nothing more.
    #[error("node has left the fabric")]
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "almost every timer is a foca timer (the large variant); boxing it would add an \
              allocation to each"
)]
enum CoreTimer {
    Foca(Timer<MemberId>),
    JoinRetry { token: u64 },
    Sync,
}

#[derive(Debug, Default)]
struct Effects {
    sends: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Timer<MemberId>, Duration)>,
    notes: Vec<OwnedNotification<MemberId>>,
}

impl Runtime<MemberId> for Effects {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        self.sends.push((to.addr(), data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: Duration) {
        self.timers.push((event, after));
    }
}

#[derive(Debug)]
struct JoinState {
    /// Current delay between attempts; doubles up to `join_retry_max`.
    backoff: Duration,
    /// Token of the one live retry timer; older ones are stale.
    token: u64,
    /// Whether retries are running.
    active: bool,
}

/// The SWIM membership core (foca underneath), with no sockets, clock or global randomness.
///
/// # Call order
///
/// 1. [`Membership::new`] with the local identity, timings and a seed for the RNG.
/// 2. [`Membership::join`] once with the seed addresses (may be empty for the first node).
/// 3. Feed it: [`Membership::handle_datagram`] for every datagram received on the gossip socket,
///    [`Membership::handle_timeout`] whenever [`Membership::poll_timeout`] is due.
/// 4. After every call, drain [`Membership::poll_transmit`] (send each datagram) and
///    [`Membership::poll_event`], then re-arm the timer from [`Membership::poll_timeout`].
/// 5. [`Membership::leave`] to leave gracefully; drain the transmits once more and stop.
///
/// The same inputs at the same timestamps with the same seed produce the same outputs.
pub struct Membership {
    foca: Foca<MemberId, WireCodec, StdRng, LeaveNotices>,
    config: MembershipConfig,
    seeds: Vec<SocketAddr>,
    effects: Effects,
    timers: BTreeMap<(Timestamp, u64), CoreTimer>,
    timer_seq: u64,
    join: JoinState,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pings_in_flight: BTreeMap<(SocketAddr, u8), Timestamp>,
    swim_incarnation: u16,
    stats: Stats,
    left: bool,
    leaves: LeaveNotices,
    sync_rng: StdRng,
    sync_armed: bool,
    /// The next round goes to a seed (the first one after joining: the seed knows the most).
    sync_to_seed: bool,
    /// The local digest and the (membership version, own incarnation) it was computed at.
    digest_cache: Option<((u64, u16), Box<Digest>)>,
    /// Changes of the local row (incarnation, leave), for [`Membership::table_stamp`].
    local_changes: u64,
}

/// One bucket of a state-sync digest: member count and XOR of member hashes.
type Digest = [(u16, u64); SYNC_BUCKETS];

fn bucket_of(id: &MemberId) -> usize {
    (id.wire_hash() >> 57) as usize % SYNC_BUCKETS
}

fn member_hash(id: &MemberId, incarnation: u16, state: foca::State) -> u64 {
    let state = match state {
        foca::State::Alive => 1u64,
        foca::State::Suspect => 2,
        foca::State::Down => 3,
    };
    let mut h =
        id.wire_hash() ^ (u64::from(incarnation) << 8 | state).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.identity())
            .field("active_members", &self.active_members())
            .field("timers", &self.timers.len())
            .field("stats", &self.stats)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A core for `identity`. `rng_seed` drives every random choice (probe order, gossip targets).
    pub fn new(identity: MemberId, config: MembershipConfig, rng_seed: u64) -> Self {
        let leaves = LeaveNotices::default();
        let foca = Foca::with_custom_broadcast(
            identity,
            config.foca(),
            StdRng::seed_from_u64(rng_seed),
            WireCodec::default(),
            leaves.clone(),
        );
        let backoff = config.join_retry_min;
        Membership {
            foca,
            config,
            seeds: Vec::new(),
            effects: Effects::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            join: JoinState {
                backoff,
                token: 0,
                active: false,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pings_in_flight: BTreeMap::new(),
            swim_incarnation: 0,
            stats: Stats::default(),
            left: false,
            leaves,
            sync_rng: StdRng::seed_from_u64(rng_seed ^ 0x5f4e_5359_4e43_0001),
            sync_armed: false,
            sync_to_seed: false,
            digest_cache: None,
            local_changes: 0,
        }
    }

    /// The local identity.
    pub fn identity(&self) -> &MemberId {
        self.foca.identity()
    }

    /// The timings in force.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the local node has left.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Number of other members currently alive or suspect.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// A stamp of the member table that only grows: it is larger after any row of
    /// [`Membership::members_unordered`] was added or removed or changed identity, incarnation
    /// or SWIM state (alive, suspect, down), or the local row changed (incarnation, leave). A
    /// down row turning into a left one when a leave notice arrives does not change it. Equal
    /// stamps mean those rows are the same, so a caller can keep what it derived from them.
    pub fn table_stamp(&self) -> u64 {
        self.foca.membership_version() + self.local_changes
    }

    /// Starts joining through `seeds` (the local address is skipped): announces to each now and
    /// retries with exponential backoff until some member answers. With no seeds the node simply
    /// waits to be contacted. The first state-sync round goes to a seed, one to two probe
    /// periods (at random) after this call.
    pub fn join(&mut self, now: Timestamp, seeds: &[SocketAddr]) {
        use rand::Rng;
        let own = self.identity().addr();
        self.seeds = seeds.iter().copied().filter(|s| *s != own).collect();
        self.seeds.sort();
        self.seeds.dedup();
        self.start_join_retries(now);
        if !self.sync_armed && !self.left {
            self.sync_armed = true;
            self.sync_to_seed = !self.seeds.is_empty();
            let period = self.config.probe_period;
            let jitter = self
                .sync_rng
                .random_range(0..period.as_micros().max(1) as u64);
            self.schedule(now, period + Duration::from_micros(jitter), CoreTimer::Sync);
        }
    }

    fn arm_sync(&mut self, now: Timestamp) {
        if !self.sync_armed && !self.left {
            self.sync_armed = true;
            let period = self.config.probe_period * ANTI_ENTROPY_PERIODS;
            self.schedule(now, period, CoreTimer::Sync);
        }
    }

    /// One push-pull round: send our digest to a seed (the first round after joining) or to one
    /// random active member; it answers with its members in the buckets that differ and its own
    /// digest, to which we answer with ours in the buckets that still differ.
    fn sync(&mut self, now: Timestamp) {
        use rand::Rng;
        let target = if std::mem::take(&mut self.sync_to_seed) && !self.seeds.is_empty() {
            self.seeds[self.sync_rng.random_range(0..self.seeds.len())]
        } else {
            let active = self.foca.num_members();
            if active == 0 {
                return;
            }
            let k = self.sync_rng.random_range(0..active);
            match self.foca.iter_members().nth(k) {
                Some(m) => m.id().addr(),
                None => return,
            }
        };
        self.stats.sync_rounds += 1;
        self.send_digest(now, target, FLAG_REPLY_WANTED);
    }

    /// Our digest (cached until the member table or our incarnation changes).
    fn digest(&mut self) -> Box<Digest> {
        let key = (self.foca.membership_version(), self.swim_incarnation);
        if let Some((at, d)) = &self.digest_cache
            && *at == key
        {
            return d.clone();
        }
        let mut d: Box<Digest> = Box::new([(0, 0); SYNC_BUCKETS]);
        let me = self.identity().clone();
        let rows = std::iter::once((&me, self.swim_incarnation, foca::State::Alive)).chain(
            self.foca
                .iter_membership_state()
                .map(|m| (m.id(), m.incarnation(), m.state())),
        );
        for (id, incarnation, state) in rows {
            let b = &mut d[bucket_of(id)];
            b.0 = b.0.wrapping_add(1);
            b.1 ^= member_hash(id, incarnation, state);
        }
        self.digest_cache = Some((key, d.clone()));
        d
    }

    fn send_digest(&mut self, _now: Timestamp, dst: SocketAddr, flags: u8) {
        use foca::Codec;
        let digest = self.digest();
        let me = foca::Member::new(
            self.identity().clone(),
            self.swim_incarnation,
            foca::State::Alive,
        );
        let mut payload = Vec::with_capacity(PREFIX_BYTES + 80 + 2 + SYNC_BUCKETS * 10);
        payload.extend_from_slice(&[WIRE_MAGIC, WIRE_VERSION, KIND_SYNC_PUSH, flags]);
        if WireCodec::default()
            .encode_member(&me, &mut payload)
            .is_err()
        {
            return; // Larger than a packet: impossible within the metadata limits.
        }
        payload.extend_from_slice(&(SYNC_BUCKETS as u16).to_be_bytes());
        for (count, xor) in digest.iter() {
            payload.extend_from_slice(&count.to_be_bytes());
            payload.extend_from_slice(&xor.to_be_bytes());
        }
        if payload.len() > PACKET_BYTES_MAX {
            return; // Same: an identity within the limits keeps this under a packet.
        }
        self.stats.messages_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        self.transmits.push_back(Transmit { dst, payload });
    }

    /// Sends `dst` every member (ourselves included) in the buckets marked in `differ`, as
    /// chunks of at most [`SYNC_CHUNK_MEMBERS_MAX`] members and [`PACKET_BYTES_MAX`] bytes.
    fn send_buckets(&mut self, dst: SocketAddr, differ: &[bool; SYNC_BUCKETS]) {
        use foca::Codec;
        let mut codec = WireCodec::default();
        let me = foca::Member::new(
            self.identity().clone(),
            self.swim_incarnation,
            foca::State::Alive,
        );
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut chunk: Vec<u8> = Vec::new();
        let mut count: u16 = 0;
        let mut enc = Vec::with_capacity(128);
        let rows = std::iter::once(&me).chain(self.foca.iter_membership_state());
        for m in rows.filter(|m| differ[bucket_of(m.id())]) {
            enc.clear();
            if codec.encode_member(m, &mut enc).is_err() {
                continue; // Larger than a packet: impossible within the metadata limits.
            }
            if count > 0
                && (chunk.len() + enc.len() > PACKET_BYTES_MAX
                    || usize::from(count) == SYNC_CHUNK_MEMBERS_MAX)
            {
                chunk[PREFIX_BYTES..PREFIX_BYTES + 2].copy_from_slice(&count.to_be_bytes());
                out.push(std::mem::take(&mut chunk));
                count = 0;
            }
            if count == 0 {
                chunk.reserve(PACKET_BYTES_MAX);
                chunk.extend_from_slice(&[WIRE_MAGIC, WIRE_VERSION, KIND_SYNC_REPLY, 0, 0, 0]);
            }
            chunk.extend_from_slice(&enc);
            count += 1;
        }
        if count > 0 {
            chunk[PREFIX_BYTES..PREFIX_BYTES + 2].copy_from_slice(&count.to_be_bytes());
            out.push(chunk);
        }
        for payload in out {
            self.stats.messages_out += 1;
            self.stats.bytes_out += payload.len() as u64;
            self.transmits.push_back(Transmit { dst, payload });
        }
    }

    /// A digest from a peer: apply its own entry, send it our members in the buckets that
    /// differ, and (first digest of a round) our digest so it can do the same.
    fn apply_digest(
        &mut self,
        now: Timestamp,
        flags: u8,
        mut body: &[u8],
    ) -> Result<(), InputError> {
        use bytes::Buf;
        use foca::Codec;
        let sender = WireCodec::default()
            .decode_member(&mut body)
            .map_err(|e| InputError::BadSync(e.to_string()))?;
        if body.len() < 2 {
            return Err(InputError::BadSync("no bucket count".into()));
        }
        let buckets = usize::from(body.get_u16());
        if buckets != SYNC_BUCKETS {
            return Err(InputError::BadSync(format!(
                "{buckets} digest buckets, expected {SYNC_BUCKETS}"
            )));
        }
        if body.len() != SYNC_BUCKETS * 10 {
            return Err(InputError::BadSync(format!(
                "digest body of {} bytes, expected {}",
                body.len(),
                SYNC_BUCKETS * 10
            )));
        }
        if sender.state() != foca::State::Alive {
            return Err(InputError::BadSync("digest sender not alive".into()));
        }
        let mut theirs: Digest = [(0, 0); SYNC_BUCKETS];
        for b in theirs.iter_mut() {
            *b = (body.get_u16(), body.get_u64());
        }
        // Parsed whole before anything is applied: a bad frame changes nothing.
        let from = sender.id().clone();
        if from == *self.identity() {
            return Err(InputError::BadSync("digest from our own identity".into()));
        }
        self.foca
            .apply_many(std::iter::once(sender), false, &mut self.effects)
            .map_err(InputError::Rejected)?;
        let ours = self.digest();
        let mut differ = [false; SYNC_BUCKETS];
        let mut any = false;
        for (k, d) in differ.iter_mut().enumerate() {
            *d = ours[k] != theirs[k];
            any |= *d;
        }
        if any {
            self.send_buckets(from.addr(), &differ);
            if flags & FLAG_REPLY_WANTED != 0 {
                self.send_digest(now, from.addr(), 0);
            }
        }
        Ok(())
    }

    fn apply_sync(&mut self, mut body: &[u8]) -> Result<(), InputError> {
        use bytes::Buf;
        use foca::Codec;
        if body.len() < 2 {
            return Err(InputError::BadSync("no member count".into()));
        }
        let count = usize::from(body.get_u16());
        if count == 0 || count > SYNC_CHUNK_MEMBERS_MAX {
            return Err(InputError::BadSync(format!(
                "member count {count} outside 1..={SYNC_CHUNK_MEMBERS_MAX}"
            )));
        }
        let mut codec = WireCodec::default();
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(
                codec
                    .decode_member(&mut body)
                    .map_err(|e| InputError::BadSync(e.to_string()))?,
            );
        }
        if body.has_remaining() {
            return Err(InputError::BadSync(format!(
                "{} trailing bytes",
                body.remaining()
            )));
        }
        // Parsed whole before anything is applied: a bad frame changes nothing.
        self.foca.warm(&members);
        self.foca
            .apply_many(members.into_iter(), false, &mut self.effects)
            .map_err(InputError::Rejected)
    }

    fn start_join_retries(&mut self, now: Timestamp) {
        if self.seeds.is_empty() || self.left {
            return;
        }
        self.join.active = true;
        self.join.backoff = self.config.join_retry_min;
        self.announce_to_seeds(now);
    }

    fn announce_to_seeds(&mut self, now: Timestamp) {
        self.stats.join_attempts += 1;
        for seed in self.seeds.clone() {
            // An announce only fails to encode if our own identity is over the packet limit,
            // which MemberMeta's limits rule out.
            if let Err(err) = self.foca.announce(MemberId::seed(seed), &mut self.effects) {
                debug_assert!(false, "announce failed: {err}");
            }
        }
        self.join.token += 1;
        let token = self.join.token;
        self.schedule(now, self.join.backoff, CoreTimer::JoinRetry { token });
        self.join.backoff = (self.join.backoff * 2).min(self.config.join_retry_max);
        self.drain(now);
    }

    /// Takes one datagram received from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), InputError> {
        let result = self.decode_and_apply(now, datagram);
        match &result {
            Ok(()) => {
                self.stats.messages_in += 1;
                self.stats.bytes_in += datagram.len() as u64;
            }
            Err(_) => self.stats.rejected_in += 1,
        }
        let _ = from; // foca identifies the sender from the message header.
        self.drain(now);
        result
    }

    fn decode_and_apply(&mut self, now: Timestamp, datagram: &[u8]) -> Result<(), InputError> {
        if self.left {
            return Err(InputError::Left);
        }
        if datagram.len() > PACKET_BYTES_MAX {
            return Err(InputError::TooBig(datagram.len()));
        }
        if datagram.len() < PREFIX_BYTES {
            // Check what is there so the error says the most specific thing it can.
            if let Some(&magic) = datagram.first()
                && magic != WIRE_MAGIC
            {
                return Err(InputError::BadMagic(magic));
            }
            if let Some(&version) = datagram.get(1)
                && version != WIRE_VERSION
            {
                return Err(InputError::UnsupportedVersion(version));
            }
            return Err(InputError::Short(datagram.len()));
        }
        let [magic, version, kind, flags, body @ ..] = datagram else {
            return Err(InputError::Short(datagram.len()));
        };
        if *magic != WIRE_MAGIC {
            return Err(InputError::BadMagic(*magic));
        }
        if *version != WIRE_VERSION {
            return Err(InputError::UnsupportedVersion(*version));
        }
        match (*kind, *flags) {
            (KIND_SWIM, 0) => self
                .foca
                .handle_data(body, &mut self.effects)
                .map_err(InputError::Rejected),
            (KIND_SYNC_PUSH, 0 | FLAG_REPLY_WANTED) => self.apply_digest(now, *flags, body),
            (KIND_SYNC_REPLY, 0) => self.apply_sync(body),
            (kind, flags) => Err(InputError::UnknownKind { kind, flags }),
        }
    }

    /// When [`Membership::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for _ in 0..TIMERS_PER_CALL_MAX {
            let Some(entry) = self.timers.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            match timer {
                CoreTimer::Foca(timer) => {
                    if !self.left {
                        // foca reports stale timers and "not connected" as errors; both are
                        // expected and harmless here.
                        let _ = self.foca.handle_timer(timer, &mut self.effects);
                    }
                }
                CoreTimer::Sync => {
                    self.sync_armed = false;
                    if !self.left {
                        self.sync(now);
                        self.arm_sync(now);
                    }
                }
                CoreTimer::JoinRetry { token } => {
                    if token == self.join.token && self.join.active && !self.left {
                        if self.foca.num_members() > 0 {
                            self.join.active = false;
                        } else {
                            self.announce_to_seeds(now);
                        }
                    }
                }
            }
            self.drain(now);
        }
    }

    /// Leaves the fabric: queues a leave notice and declares the local identity down to a few
    /// members. Drain [`Membership::poll_transmit`] afterwards; the core accepts nothing more.
    pub fn leave(&mut self, now: Timestamp) {
        if self.left {
            return;
        }
        let notice = LeaveNotice {
            node_id: self.identity().node_id(),
            generation: self.identity().generation(),
        };
        // A 41-byte broadcast always fits; the handler only rejects malformed notices.
        if let Err(err) = self.foca.add_broadcast(&notice.encode()) {
            debug_assert!(false, "leave notice rejected: {err}");
        }
        if let Err(err) = self.foca.leave_cluster(&mut self.effects) {
            debug_assert!(false, "leave_cluster failed: {err}");
        }
        self.join.active = false;
        self.drain(now);
        self.left = true;
        self.local_changes += 1;
        self.timers.clear();
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The member list: the local node first, then every other member known (one row per node
    /// id, its newest generation), ordered by node id.
    pub fn members(&self) -> Vec<MemberView> {
        let mut rows: BTreeMap<NodeId, MemberView> = BTreeMap::new();
        for member in self.foca.iter_membership_state() {
            let id = member.id();
            let state = match member.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if self.leaves.has_left(id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            let row = MemberView {
                id: id.clone(),
                swim_incarnation: member.incarnation(),
                state,
                local: false,
            };
            match rows.get(&id.node_id()) {
                Some(existing) if existing.id.generation() >= id.generation() => {}
                _ => {
                    rows.insert(id.node_id(), row);
                }
            }
        }
        let me = self.identity().clone();
        rows.remove(&me.node_id());
        let mut out = Vec::with_capacity(rows.len() + 1);
        out.push(MemberView {
            id: me,
            swim_incarnation: self.swim_incarnation,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            local: true,
        });
        out.extend(rows.into_values());
        out
    }

    /// Every row of the member table, cheaply: the local node first, then one row per identity
    /// foca holds, in no particular order and without merging two generations of one node id
    /// (which [`Membership::members`] does, at the cost of a sorted map per call). For callers
    /// that look at every member of every node, such as the simulator's invariant checkers.
    pub fn members_unordered(&self) -> Vec<MemberView> {
        let mut out = Vec::with_capacity(self.foca.iter_membership_state().len() + 1);
        out.push(MemberView {
            id: self.identity().clone(),
            swim_incarnation: self.swim_incarnation,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            local: true,
        });
        for member in self.foca.iter_membership_state() {
            let id = member.id();
            let state = match member.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if self.leaves.has_left(id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            out.push(MemberView {
                id: id.clone(),
                swim_incarnation: member.incarnation(),
                state,
                local: false,
            });
        }
        out
    }

    /// Asserts what must always hold; run after every step in debug builds and in simulation.
    pub fn check_invariants(&self) {
        let me = self.identity();
        // foca holds at most one member per address, so one lookup covers the whole list.
        assert!(
            self.foca.member_at(me).is_none_or(|m| m.id() != me),
            "the local identity is listed as another member"
        );
        assert!(
            self.pings_in_flight.len() <= PINGS_IN_FLIGHT_MAX,
            "pings in flight over their bound"
        );
        assert!(
            !self.left || self.timers.is_empty(),
            "a node that left still has timers"
        );
        assert!(
            !(self.join.active && self.left),
            "join retries running after leave"
        );
        assert!(
            self.join.backoff <= self.config.join_retry_max,
            "join backoff over its maximum"
        );
    }

    fn schedule(&mut self, now: Timestamp, after: Duration, timer: CoreTimer) {
        self.timer_seq += 1;
        self.timers.insert((now + after, self.timer_seq), timer);
    }

    /// Moves what foca emitted into the core's queues.
    fn drain(&mut self, now: Timestamp) {
        let effects = std::mem::take(&mut self.effects);
        for (timer, after) in effects.timers {
            self.schedule(now, after, CoreTimer::Foca(timer));
        }
        for (dst, body) in effects.sends {
            let mut payload = Vec::with_capacity(PREFIX_BYTES + body.len());
            payload.extend_from_slice(&[WIRE_MAGIC, WIRE_VERSION, KIND_SWIM, 0]);
            payload.extend_from_slice(&body);
            self.stats.messages_out += 1;
            self.stats.bytes_out += payload.len() as u64;
            self.transmits.push_back(Transmit { dst, payload });
        }
        for note in effects.notes {
            self.on_notification(now, note);
        }
    }

    fn on_notification(&mut self, now: Timestamp, note: OwnedNotification<MemberId>) {
        match note {
            OwnedNotification::MemberUp(id) => self.events.push_back(Event::MemberUp(id)),
            OwnedNotification::MemberDown(id) => {
                let left = self.leaves.has_left(&id);
                self.events.push_back(Event::MemberDown { id, left });
            }
            OwnedNotification::Rename(old, new) => {
                self.events.push_back(Event::MemberReplaced { old, new })
            }
            OwnedNotification::Active => {
                self.join.active = false;
                self.events.push_back(Event::Joined);
            }
            OwnedNotification::Idle => {
                if !self.left {
                    self.events.push_back(Event::Isolated);
                    self.start_join_retries(now);
                }
            }
            OwnedNotification::Rejoin(id) => self.events.push_back(Event::Rejoined(id)),
            OwnedNotification::Defunct => {
                // Only reachable after leave(): identities always renew themselves.
            }
            OwnedNotification::DataSent(header) => {
                if self.swim_incarnation != header.src_incarnation {
                    self.swim_incarnation = header.src_incarnation;
                    self.local_changes += 1;
                }
                if let Message::Ping(probe) = header.message {
                    self.pings_in_flight.insert((header.dst.addr(), probe), now);
                    while self.pings_in_flight.len() > PINGS_IN_FLIGHT_MAX {
                        self.pings_in_flight.pop_first();
                    }
                }
            }
            OwnedNotification::DataReceived(header) => {
                if let Message::Ack(probe) = header.message
                    && let Some(sent) = self.pings_in_flight.remove(&(header.src.addr(), probe))
                {
                    self.events.push_back(Event::ProbeRtt {
                        peer: header.src.node_id(),
                        rtt: now - sent,
                    });
                }
            }
            OwnedNotification::ProbeFailed(..) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::id::MemberMeta;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
    }

    fn core(i: usize) -> Membership {
        let meta = MemberMeta::new(format!("n{i}"), None, "test", vec![]).expect("meta");
        let id = MemberId::new(addr(i), NodeId([i as u8 + 1; 32]), 1, meta);
        let config = MembershipConfig {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(80),
            suspect_to_down: Duration::from_millis(600),
            join_retry_min: Duration::from_millis(100),
            join_retry_max: Duration::from_millis(800),
            ..MembershipConfig::default()
        };
        Membership::new(id, config, 40 + i as u64)
    }

    /// Identity, incarnation and state of each row.
    type Rows = Vec<(MemberId, u16, MemberState)>;

    /// The rows the stamp speaks for (a left row counts as down).
    fn rows(core: &Membership) -> Rows {
        let mut rows: Vec<_> = core
            .members_unordered()
            .into_iter()
            .map(|m| {
                let state = match m.state {
                    MemberState::Left => MemberState::Down,
                    s => s,
                };
                (m.id, m.swim_incarnation, state)
            })
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn table_stamp_grows_exactly_when_the_rows_change() {
        // Five nodes join through node 0; node 4 crashes at 3 s (suspect, then down), node 3
        // leaves at 6 s. After every step, a node whose stamp did not move must show the same
        // rows as before, and stamps never shrink.
        let mut nodes: BTreeMap<usize, Membership> = (0..5).map(|i| (i, core(i))).collect();
        let mut seen: BTreeMap<usize, (u64, Rows)> = BTreeMap::new();
        let mut in_flight: BTreeMap<(u64, u64), (usize, usize, Vec<u8>)> = BTreeMap::new();
        let mut seq = 0;
        let mut changes = 0;
        for (i, c) in nodes.iter_mut() {
            let seeds = if *i == 0 { vec![] } else { vec![addr(0)] };
            c.join(Timestamp::ZERO, &seeds);
        }
        let mut now_us = 0u64;
        while now_us < 10_000_000 {
            if now_us >= 3_000_000 {
                nodes.remove(&4);
            }
            if now_us >= 6_000_000
                && let Some(c) = nodes.get_mut(&3)
                && !c.has_left()
            {
                c.leave(Timestamp::from_micros(now_us));
            }
            let now = Timestamp::from_micros(now_us);
            // Deliver what is due, in order, then run the timers.
            let due: Vec<_> = in_flight
                .range(..=(now_us, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in due {
                if let Some((from, to, payload)) = in_flight.remove(&k)
                    && let Some(c) = nodes.get_mut(&to)
                {
                    let _ = c.handle_datagram(now, addr(from), &payload);
                }
            }
            for c in nodes.values_mut() {
                c.handle_timeout(now);
            }
            for (&i, c) in nodes.iter_mut() {
                c.check_invariants();
                while let Some(t) = c.poll_transmit() {
                    let to = (0..5).find(|&j| addr(j) == t.dst).expect("known address");
                    seq += 1;
                    in_flight.insert((now_us + 1_000, seq), (i, to, t.payload));
                }
                while c.poll_event().is_some() {}
                let stamp = c.table_stamp();
                let now_rows = rows(c);
                if let Some((before, before_rows)) = seen.get(&i) {
                    assert!(stamp >= *before, "stamp of n{i} went back");
                    if stamp == *before {
                        assert_eq!(&now_rows, before_rows, "n{i} changed rows, same stamp");
                    } else {
                        changes += 1;
                    }
                }
                seen.insert(i, (stamp, now_rows));
            }
            now_us += 10_000;
        }
        assert!(
            changes >= 20,
            "the run changed tables ({changes} stamp moves)"
        );
        let down = rows(&nodes[&0])
            .iter()
            .filter(|r| r.2 == MemberState::Down)
            .count();
        assert_eq!(down, 2, "n0 saw the crash and the leave");
    }
}
