//! [`GossipActor`]: owns the gossip socket and its timer, and drives two sans-IO cores with them:
//! the SWIM [`Membership`] and the broadcast [`Overlay`] (HyParView + Plumtree) that carries the
//! registry's adverts. It holds no protocol logic of its own.
//!
//! Both cores share the socket; the frame-kind byte of the common 4-byte prefix tells them apart.
//! Membership feeds the overlay (members up → passive-view candidates, members down → view
//! repair). Overlay deliveries, member-down verdicts and probe RTTs go to the registry actor
//! through its bounded inbox; when the inbox is full they are dropped and counted (the
//! registry's anti-entropy and membership reconciliation repair the loss), so a slow registry
//! never stalls membership. Overlay deliveries starting with the revocation magic `NXRV` go to
//! the trust actor's inbox instead, under the same drop-and-count rule (its revocation poll
//! repairs the loss).
//!
//! Gossip encryption: a [`DatagramGuard`] sits between the socket and both cores. Every datagram
//! the cores emit goes out through it (sealed with the keyring's primary key when encryption is
//! on with `verify_outgoing`), every datagram received goes through it first (opened with any
//! installed key; plaintext refused with `verify_incoming`); what it drops is counted by reason
//! in `nexus_gossip_dropped_total`. Fabric-wide keyring operations ([`GossipMsg::Keyring`]) are
//! applied here, persisted to the keyring file (atomic write), sent sealed to every alive or
//! suspect member as a [`KeyringRequest`], and answered with a [`KeyringSummary`] once every
//! member answered or the deadline passed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_gossip::{
    DatagramGuard, Event, GuardConfig, Incoming, Keyring, KeyringError, KeyringOp, KeyringQuery,
    KeyringRequest, KeyringResponse, KeyringSummary, MemberId, MemberMeta, MemberState, MemberView,
    Membership, MembershipConfig, NodeId, Overlay, OverlayConfig, OverlayEvent, ReplayWindow,
    SEALED_BYTES_MAX, Timestamp, is_keyring_kind, is_overlay_kind,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::time::Instant;

use crate::task::AbortOnDrop;

use crate::env::{DatagramSocket, Storage, next_generation};
use crate::metrics::NodeMetrics;
use crate::registry_actor::{RegistryInbox, RegistryInput};
use crate::trust_actor::{TrustInbox, TrustInput, is_revocation_payload};

/// Peer addresses remembered across restarts, so a node rejoins even if its seeds are gone.
pub const KNOWN_PEERS_MAX: usize = 64;
const KNOWN_PEERS_KEY: &str = "gossip/known-peers";

/// Longest deadline a fabric-wide keyring operation may be given.
pub const KEYRING_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Keyring operations one node runs at once (each waits for its answers).
pub const KEYRING_QUERIES_MAX: usize = 16;

/// Gossip encryption settings of a node.
#[derive(Debug, Clone)]
pub struct GossipSecurity {
    /// The keyring (none: plaintext gossip) and the migration switches.
    pub guard: GuardConfig,
    /// Where keyring operations persist the keyring. When the file exists at a (re)start, the
    /// keyring in it replaces `guard.keyring` (it holds the operations applied since).
    pub keyring_file: Option<PathBuf>,
    /// Seed for nonces and keyring request ids. A node draws it from the OS at its IO edge: a
    /// nonce must never repeat under one key, so a fixed seed is for tests and the simulator.
    /// Each (re)start mixes the node's generation into it.
    pub seed: [u8; 32],
}

impl GossipSecurity {
    /// Plaintext gossip, no keyring.
    pub fn plaintext() -> Self {
        GossipSecurity {
            guard: GuardConfig::plaintext(),
            keyring_file: None,
            seed: [0; 32],
        }
    }
}

/// Why a keyring file could not be written.
fn write_keyring_file(path: &Path, keyring: &Keyring) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        // Owner-only: the file holds secret keys.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(keyring.to_json().as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a keyring file; `Ok(None)` if it does not exist.
pub fn read_keyring_file(path: &Path) -> Result<Option<Keyring>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Keyring::from_json(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `keyring` to `path` atomically (a temporary file, synced, renamed over it), owner-only.
pub fn persist_keyring_file(path: &Path, keyring: &Keyring) -> Result<(), String> {
    write_keyring_file(path, keyring).map_err(|e| format!("{}: {e}", path.display()))
}

/// Arguments of [`GossipActor`]; cloned for every (re)start.
#[derive(Debug)]
pub struct GossipArgs<S: DatagramSocket> {
    /// The bound gossip socket (outlives actor restarts).
    pub socket: Arc<S>,
    /// The address peers use to reach this node.
    pub advertise: SocketAddr,
    /// This node's id.
    pub node_id: NodeId,
    /// This node's metadata record.
    pub meta: MemberMeta,
    /// Protocol timings.
    pub config: MembershipConfig,
    /// Seed addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// Durable node storage (generation, known peers).
    pub storage: Arc<dyn Storage>,
    /// Where gossip metrics go.
    pub metrics: NodeMetrics,
    /// The epoch that timestamps passed to the core count from; fixed for the node's life so
    /// time stays monotonic across actor restarts.
    pub epoch: Instant,
    /// Seed for the core's RNG; each restart derives a new one from it and the generation.
    pub rng_seed: u64,
    /// Broadcast-overlay settings.
    pub overlay: OverlayConfig,
    /// The registry's inbox (overlay deliveries, member-down verdicts, RTT samples), if the node
    /// runs a registry.
    pub registry: Option<RegistryInbox>,
    /// The trust actor's inbox (overlay deliveries that are revocation records), if the node
    /// runs one.
    pub trust: Option<TrustInbox>,
    /// Gossip encryption.
    pub security: GossipSecurity,
}

impl<S: DatagramSocket> Clone for GossipArgs<S> {
    fn clone(&self) -> Self {
        GossipArgs {
            socket: self.socket.clone(),
            advertise: self.advertise,
            node_id: self.node_id,
            meta: self.meta.clone(),
            config: self.config.clone(),
            seeds: self.seeds.clone(),
            storage: self.storage.clone(),
            metrics: self.metrics.clone(),
            epoch: self.epoch,
            rng_seed: self.rng_seed,
            overlay: self.overlay.clone(),
            registry: self.registry.clone(),
            trust: self.trust.clone(),
            security: self.security.clone(),
        }
    }
}

/// Messages to [`GossipActor`].
#[derive(Debug)]
pub enum GossipMsg {
    /// A datagram arrived on the gossip socket.
    Datagram(SocketAddr, Vec<u8>),
    /// The core's timer is due.
    Tick,
    /// The member list (local node first).
    Members(RpcReplyPort<Vec<MemberView>>),
    /// Leave the fabric gracefully; replies once the leave messages are sent.
    Leave(RpcReplyPort<()>),
    /// Broadcast a payload (a signed advert) to every node through the overlay.
    Broadcast(Vec<u8>),
    /// Send a unicast overlay message (registry anti-entropy) to a peer.
    SendDirect(SocketAddr, Vec<u8>),
    /// Send a unicast overlay message to one random peer of the overlay's active or passive view.
    DirectToRandomNeighbor(Vec<u8>),
    /// The overlay's active and passive views.
    OverlayViews(RpcReplyPort<(Vec<SocketAddr>, Vec<SocketAddr>)>),
    /// Apply a keyring operation here and on every alive or suspect member; replies once every
    /// member answered or the deadline (at most [`KEYRING_TIMEOUT_MAX`]) passed.
    Keyring(KeyringOp, Duration, RpcReplyPort<KeyringSummary>),
    /// A keyring operation's deadline (its request id).
    KeyringDeadline(u64),
    /// Fault injection: panic inside the actor, as a bug would.
    Crash,
}

/// State of [`GossipActor`].
#[derive(Debug)]
pub struct GossipState<S: DatagramSocket> {
    core: Membership,
    overlay: Overlay,
    /// Whether the overlay has sent its HyParView join (to the first member seen up).
    overlay_joined: bool,
    args: GossipArgs<S>,
    _recv: AbortOnDrop,
    timer: Option<(Timestamp, AbortOnDrop)>,
    /// The known-peers list last persisted, so an unchanged list is not rewritten (and synced).
    peers_saved: String,
    /// Seals and opens datagrams (encryption), counts drops.
    guard: DatagramGuard,
    /// Keyring request ids seen, so a replayed request is not applied twice.
    replay: ReplayWindow,
    /// Keyring operations this node started, waiting for answers (at most
    /// [`KEYRING_QUERIES_MAX`]).
    queries: BTreeMap<u64, PendingQuery>,
    /// Keyring request ids.
    ids: StdRng,
}

/// A keyring operation waiting for its answers.
#[derive(Debug)]
struct PendingQuery {
    query: KeyringQuery,
    reply: RpcReplyPort<KeyringSummary>,
    _deadline: AbortOnDrop,
}

/// The gossip actor.
#[derive(Debug)]
pub struct GossipActor<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Default for GossipActor<S> {
    fn default() -> Self {
        GossipActor(std::marker::PhantomData)
    }
}

fn now(epoch: Instant) -> Timestamp {
    let micros = Instant::now().saturating_duration_since(epoch).as_micros();
    Timestamp::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

fn load_known_peers(storage: &dyn Storage) -> Vec<SocketAddr> {
    match storage.get(KNOWN_PEERS_KEY) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.parse().ok())
            .take(KNOWN_PEERS_MAX)
            .collect(),
        Ok(None) => Vec::new(),
        Err(err) => {
            tracing::warn!(%err, "cannot read known peers; joining through seeds only");
            Vec::new()
        }
    }
}

impl<S: DatagramSocket> GossipActor<S> {
    /// Hands an input to the registry without waiting; a full inbox drops it (counted).
    fn to_registry(state: &GossipState<S>, input: RegistryInput) {
        if let Some(inbox) = &state.args.registry
            && inbox.try_send(input).is_err()
        {
            state.args.metrics.registry_inbox_dropped.inc();
        }
    }

    /// Hands an input to the trust actor without waiting; a full inbox drops it (counted; the
    /// trust actor's revocation poll repairs the loss).
    fn to_trust(state: &GossipState<S>, input: TrustInput) {
        if let Some(inbox) = &state.args.trust
            && inbox.try_send(input).is_err()
        {
            state.args.metrics.trust_inbox_dropped.inc();
        }
    }

    /// Sends a core's datagram through the guard (sealed when encryption is on).
    async fn send(state: &mut GossipState<S>, dst: SocketAddr, payload: &[u8]) {
        let payload = state.guard.outgoing(payload);
        if state.guard.seals() {
            state.args.metrics.gossip_sealed.inc();
        }
        Self::send_raw(state, dst, &payload).await;
    }

    /// Sends a keyring message, always sealed; nothing without a keyring.
    async fn send_sealed(state: &mut GossipState<S>, dst: SocketAddr, plaintext: &[u8]) {
        if let Some(sealed) = state.guard.seal_always(plaintext) {
            state.args.metrics.gossip_sealed.inc();
            Self::send_raw(state, dst, &sealed).await;
        }
    }

    async fn send_raw(state: &GossipState<S>, dst: SocketAddr, payload: &[u8]) {
        let metrics = &state.args.metrics;
        match state.args.socket.send_to(payload, dst).await {
            Ok(_) => {
                metrics.gossip_messages_out.inc();
                metrics.gossip_bytes_out.inc_by(payload.len() as u64);
            }
            // UDP send errors (no route, buffer full) are like loss: both protocols cope.
            Err(err) => tracing::debug!(%dst, %err, "gossip send failed"),
        }
    }

    /// Sends what the cores emitted, routes their events, and re-arms the timer.
    async fn after_step(myself: &ActorRef<GossipMsg>, state: &mut GossipState<S>) {
        let at = now(state.args.epoch);
        let mut membership_changed = false;
        while let Some(event) = state.core.poll_event() {
            membership_changed |= !matches!(event, Event::ProbeRtt { .. });
            log_event(&event);
            match event {
                Event::ProbeRtt { peer, rtt } => {
                    state.args.metrics.probe_rtt.observe(rtt.as_secs_f64());
                    Self::to_registry(state, RegistryInput::Rtt(peer, rtt));
                }
                Event::Rejoined(id) => {
                    Self::to_registry(state, RegistryInput::Rejoined);
                    // Persist the bumped generation so a restart comes back newer still.
                    if let Err(err) = next_generation(state.args.storage.as_ref()) {
                        tracing::warn!(%err, generation = id.generation(), "cannot persist generation");
                    }
                }
                Event::MemberUp(id) => {
                    state.overlay.peer_up(at, id.addr());
                    if !state.overlay_joined {
                        state.overlay.join(at, id.addr());
                        state.overlay_joined = true;
                    }
                }
                Event::MemberReplaced { old, new } => {
                    // A restarted process has empty views: make it a fresh neighbour candidate.
                    state.overlay.peer_down(at, old.addr());
                    state.overlay.peer_up(at, new.addr());
                }
                Event::MemberDown { id, .. } => {
                    state.overlay.peer_down(at, id.addr());
                    Self::to_registry(state, RegistryInput::MemberDown(id.node_id()));
                }
                Event::Joined | Event::Isolated => {}
            }
        }
        while let Some(event) = state.overlay.poll_event() {
            match event {
                OverlayEvent::Delivered { payload, .. } => {
                    state.args.metrics.overlay_delivered.inc();
                    // Demultiplexed by magic: revocation records (`NXRV`) go to the trust
                    // actor, everything else (adverts) to the registry.
                    if is_revocation_payload(&payload) {
                        Self::to_trust(state, TrustInput::Revocation(payload));
                    } else {
                        Self::to_registry(state, RegistryInput::Delivered(payload));
                    }
                }
                OverlayEvent::Direct { from, payload } => {
                    Self::to_registry(state, RegistryInput::Direct(from, payload));
                }
                OverlayEvent::NeighborUp(peer) => {
                    tracing::debug!(%peer, "overlay neighbour up");
                }
                OverlayEvent::NeighborDown(peer) => {
                    tracing::debug!(%peer, "overlay neighbour down");
                }
            }
        }
        state
            .args
            .metrics
            .overlay_active_view
            .set(state.overlay.active_view().len() as i64);
        while let Some(t) = state.core.poll_transmit() {
            Self::send(state, t.dst, &t.payload).await;
        }
        while let Some(t) = state.overlay.poll_transmit() {
            Self::send(state, t.dst, &t.payload).await;
        }
        if membership_changed {
            Self::publish_members(state);
        }
        if cfg!(debug_assertions) {
            state.core.check_invariants();
        }
        let next = match (state.core.poll_timeout(), state.overlay.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next != state.timer.as_ref().map(|(at, _)| *at) {
            state.timer = next.map(|at| {
                let deadline = state.args.epoch + std::time::Duration::from_micros(at.as_micros());
                let me = myself.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    let _ = me.send_message(GossipMsg::Tick);
                });
                (at, AbortOnDrop(task))
            });
        }
    }

    /// Applies a keyring operation to this node's keyring and persists it; the answer a member
    /// sends back (the local node's own included).
    fn apply_keyring_op(state: &mut GossipState<S>, id: u64, op: &KeyringOp) -> KeyringResponse {
        let member = state.args.advertise;
        let Some(current) = state.guard.keyring() else {
            return KeyringResponse {
                id,
                member,
                error: Some(KeyringError::NotEnabled.to_string()),
                keys: Vec::new(),
            };
        };
        let mut next = current.clone();
        let error = match next.apply(op) {
            Ok(false) => None,
            Ok(true) => {
                let persisted = match &state.args.security.keyring_file {
                    Some(path) => persist_keyring_file(path, &next),
                    None => Ok(()),
                };
                match persisted {
                    Ok(()) => {
                        tracing::info!(op = op.name(), keys = next.keys().len(), "keyring changed");
                        // Invariant: the guard has a keyring (checked above).
                        let _ = state.guard.set_keyring(next);
                        None
                    }
                    Err(err) => {
                        tracing::warn!(%err, op = op.name(), "cannot persist the keyring; operation not applied");
                        Some(format!("cannot persist the keyring: {err}"))
                    }
                }
            }
            Err(err) => Some(err.to_string()),
        };
        KeyringResponse {
            id,
            member,
            error,
            keys: state
                .guard
                .keyring()
                .map(|k| k.keys().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Starts a fabric-wide keyring operation: applies it here, sends it to every alive or
    /// suspect member, and waits for their answers until `timeout`.
    async fn start_keyring_op(
        myself: &ActorRef<GossipMsg>,
        state: &mut GossipState<S>,
        op: KeyringOp,
        timeout: Duration,
        reply: RpcReplyPort<KeyringSummary>,
    ) {
        // Oldest first out when too many are waiting: it is answered with what it has.
        while state.queries.len() >= KEYRING_QUERIES_MAX {
            let Some((_, pending)) = state.queries.pop_first() else {
                break;
            };
            let _ = pending.reply.send(pending.query.finish());
        }
        let mut id = state.ids.next_u64();
        while state.queries.contains_key(&id) {
            id = state.ids.next_u64();
        }
        state.replay.insert(id);
        let local = Self::apply_keyring_op(state, id, &op);
        let name = state.core.identity().meta().name().to_owned();
        let members: Vec<(SocketAddr, String)> = if state.guard.keyring().is_some() {
            state
                .core
                .members()
                .into_iter()
                .filter(|m| {
                    !m.local && matches!(m.state, MemberState::Alive | MemberState::Suspect)
                })
                .map(|m| (m.id.addr(), m.id.meta().name().to_owned()))
                .collect()
        } else {
            // Without a keyring nothing can be sent sealed: the local refusal is the answer.
            Vec::new()
        };
        let request = KeyringRequest { id, op: op.clone() }.encode();
        for (addr, _) in &members {
            Self::send_sealed(state, *addr, &request).await;
        }
        let query = KeyringQuery::new(id, op, (name, local), members);
        if query.pending().next().is_none() {
            let _ = reply.send(query.finish());
            return;
        }
        let me = myself.clone();
        let timeout = timeout.min(KEYRING_TIMEOUT_MAX);
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = me.send_message(GossipMsg::KeyringDeadline(id));
        });
        state.queries.insert(
            id,
            PendingQuery {
                query,
                reply,
                _deadline: AbortOnDrop(deadline),
            },
        );
    }

    /// A keyring request or response from a peer (opened already if it came sealed).
    async fn handle_keyring_message(
        state: &mut GossipState<S>,
        from: SocketAddr,
        bytes: &[u8],
        sealed: bool,
    ) {
        let metrics = state.args.metrics.clone();
        if !sealed {
            // Keyring messages travel only sealed, whatever verify_incoming says.
            metrics.gossip_drop("keyring_plaintext");
            tracing::debug!(%from, "plaintext keyring message dropped");
            return;
        }
        if let Ok(request) = KeyringRequest::decode(bytes) {
            if !state.replay.insert(request.id) {
                metrics.gossip_drop("keyring_replay");
                tracing::debug!(%from, id = request.id, "keyring request replayed; dropped");
                return;
            }
            let response = Self::apply_keyring_op(state, request.id, &request.op);
            if let Some(error) = &response.error {
                tracing::info!(%from, op = request.op.name(), %error, "keyring operation refused");
            }
            Self::send_sealed(state, from, &response.encode()).await;
            return;
        }
        match KeyringResponse::decode(bytes) {
            Ok(response) => {
                let done = match state.queries.get_mut(&response.id) {
                    Some(pending) => pending.query.handle_response(&response),
                    None => return, // Late (after the deadline) or not ours.
                };
                if done && let Some(pending) = state.queries.remove(&response.id) {
                    let _ = pending.reply.send(pending.query.finish());
                }
            }
            Err(err) => {
                metrics.gossip_drop("keyring_malformed");
                tracing::debug!(%from, %err, "malformed keyring message dropped");
            }
        }
    }

    fn publish_members(state: &mut GossipState<S>) {
        let members = state.core.members();
        let mut counts = [0i64; 4];
        let mut peers = Vec::new();
        for m in &members {
            let i = MemberState::ALL
                .iter()
                .position(|s| *s == m.state)
                .unwrap_or(0);
            counts[i] += 1;
            if !m.local && m.state == MemberState::Alive && peers.len() < KNOWN_PEERS_MAX {
                peers.push(m.id.addr().to_string());
            }
        }
        state.args.metrics.set_members(counts);
        peers.sort();
        let peers = peers.join("\n");
        if peers.is_empty() || peers == state.peers_saved {
            return;
        }
        match state.args.storage.put(KNOWN_PEERS_KEY, peers.as_bytes()) {
            Ok(()) => state.peers_saved = peers,
            Err(err) => tracing::warn!(%err, "cannot persist known peers"),
        }
    }
}

fn log_event(event: &Event) {
    let fields = |id: &MemberId| (id.meta().name().to_owned(), id.addr(), id.node_id().short());
    match event {
        Event::MemberUp(id) => {
            let (name, addr, node) = fields(id);
            tracing::info!(peer = %name, %addr, %node, generation = id.generation(), "member up");
        }
        Event::MemberDown { id, left } => {
            let (name, addr, node) = fields(id);
            if *left {
                tracing::info!(peer = %name, %addr, %node, "member left");
            } else {
                tracing::warn!(peer = %name, %addr, %node, "member down");
            }
        }
        Event::MemberReplaced { old, new } => {
            let (name, addr, node) = fields(new);
            tracing::info!(
                peer = %name, %addr, %node,
                old_generation = old.generation(), generation = new.generation(),
                "member restarted"
            );
        }
        Event::Joined => tracing::info!("joined the fabric"),
        Event::Isolated => tracing::warn!("no other member reachable; retrying seeds"),
        Event::Rejoined(id) => {
            tracing::warn!(
                generation = id.generation(),
                "declared down while alive; rejoined"
            )
        }
        Event::ProbeRtt { .. } => {}
    }
}

impl<S: DatagramSocket> Actor for GossipActor<S> {
    type Msg = GossipMsg;
    type State = GossipState<S>;
    type Arguments = GossipArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<GossipMsg>,
        args: GossipArgs<S>,
    ) -> Result<GossipState<S>, ActorProcessingErr> {
        let generation = next_generation(args.storage.as_ref())?;
        let identity = MemberId::new(args.advertise, args.node_id, generation, args.meta.clone());
        let seed = args.rng_seed ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut core = Membership::new(identity, args.config.clone(), seed);
        let overlay = Overlay::new(args.advertise, args.overlay.clone(), seed.rotate_left(17));
        let mut seeds = args.seeds.clone();
        seeds.extend(load_known_peers(args.storage.as_ref()));
        core.join(now(args.epoch), &seeds);

        let socket = args.socket.clone();
        let me = myself.clone();
        let metrics = args.metrics.clone();
        let recv = tokio::spawn(async move {
            let mut buf = vec![0u8; SEALED_BYTES_MAX + 1];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((len, from)) => {
                        metrics.gossip_messages_in.inc();
                        metrics.gossip_bytes_in.inc_by(len as u64);
                        if me
                            .send_message(GossipMsg::Datagram(from, buf[..len].to_vec()))
                            .is_err()
                        {
                            break; // The actor is gone.
                        }
                    }
                    Err(err) => {
                        // e.g. ICMP port unreachable surfaced as ECONNREFUSED: not fatal.
                        tracing::debug!(%err, "gossip recv error");
                    }
                }
            }
        });
        tracing::info!(
            generation,
            advertise = %args.advertise,
            seeds = seeds.len(),
            "gossip started"
        );
        let mut guard = args.security.guard.clone();
        if guard.keyring.is_some()
            && let Some(path) = &args.security.keyring_file
        {
            // The file holds the operations applied since the node started.
            match read_keyring_file(path) {
                Ok(Some(keyring)) => guard.keyring = Some(keyring),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "cannot read the keyring file; using the keyring the node started with")
                }
            }
        }
        let mut nonce_seed = args.security.seed;
        for (b, g) in nonce_seed.iter_mut().zip(generation.to_le_bytes()) {
            *b ^= g;
        }
        let mut ids_seed = nonce_seed;
        ids_seed[31] ^= 0x5a;
        let mut state = GossipState {
            core,
            overlay,
            overlay_joined: false,
            args,
            _recv: AbortOnDrop(recv),
            timer: None,
            peers_saved: String::new(),
            guard: DatagramGuard::new(guard, nonce_seed),
            replay: ReplayWindow::default(),
            queries: BTreeMap::new(),
            ids: StdRng::from_seed(ids_seed),
        };
        Self::after_step(&myself, &mut state).await;
        Self::publish_members(&mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<GossipMsg>,
        message: GossipMsg,
        state: &mut GossipState<S>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GossipMsg::Datagram(from, bytes) => {
                let opened = match state.guard.incoming(&bytes) {
                    Ok(Incoming::Opened(plain)) => Some(plain),
                    Ok(Incoming::Plain(_)) => None,
                    Err(reason) => {
                        state.args.metrics.gossip_drop(reason.as_str());
                        tracing::debug!(%from, %reason, "gossip datagram dropped");
                        return Ok(());
                    }
                };
                let sealed = opened.is_some();
                if sealed {
                    state.args.metrics.gossip_opened.inc();
                } else {
                    state.args.metrics.gossip_plaintext_in.inc();
                }
                let bytes = opened.unwrap_or(bytes);
                if bytes.len() > 2 && is_keyring_kind(bytes[2]) {
                    Self::handle_keyring_message(state, from, &bytes, sealed).await;
                    return Ok(());
                }
                let at = now(state.args.epoch);
                let result = if bytes.len() > 2 && is_overlay_kind(bytes[2]) {
                    state
                        .overlay
                        .handle_datagram(at, from, &bytes)
                        .map_err(|e| e.to_string())
                } else {
                    state
                        .core
                        .handle_datagram(at, from, &bytes)
                        .map_err(|e| e.to_string())
                };
                if let Err(err) = result {
                    state.args.metrics.gossip_rejected.inc();
                    tracing::debug!(%from, %err, "gossip datagram rejected");
                }
            }
            GossipMsg::Tick => {
                let at = now(state.args.epoch);
                state.core.handle_timeout(at);
                state.overlay.handle_timeout(at);
            }
            GossipMsg::Broadcast(payload) => {
                if let Err(err) = state.overlay.broadcast(now(state.args.epoch), payload) {
                    tracing::warn!(%err, "broadcast refused");
                }
            }
            GossipMsg::SendDirect(to, payload) => {
                if let Err(err) = state.overlay.send_direct(to, payload) {
                    tracing::debug!(%to, %err, "direct overlay message refused");
                }
            }
            GossipMsg::DirectToRandomNeighbor(payload) => {
                if let Some(to) = state.overlay.random_peer()
                    && let Err(err) = state.overlay.send_direct(to, payload)
                {
                    tracing::debug!(%to, %err, "direct overlay message refused");
                }
            }
            GossipMsg::Keyring(op, timeout, reply) => {
                Self::start_keyring_op(&myself, state, op, timeout, reply).await;
                return Ok(());
            }
            GossipMsg::KeyringDeadline(id) => {
                if let Some(pending) = state.queries.remove(&id) {
                    let _ = pending.reply.send(pending.query.finish());
                }
                return Ok(());
            }
            GossipMsg::OverlayViews(reply) => {
                let _ = reply.send((state.overlay.active_view(), state.overlay.passive_view()));
                return Ok(());
            }
            GossipMsg::Members(reply) => {
                let _ = reply.send(state.core.members());
                return Ok(());
            }
            GossipMsg::Leave(reply) => {
                state.core.leave(now(state.args.epoch));
                Self::after_step(&myself, state).await;
                Self::publish_members(state);
                tracing::info!("left the fabric");
                let _ = reply.send(());
                return Ok(());
            }
            GossipMsg::Crash => panic!("fault injection: gossip actor crash requested"),
        }
        Self::after_step(&myself, state).await;
        Ok(())
    }
}
