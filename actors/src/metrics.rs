//! The node's Prometheus metrics. One registry per node (never a process-global recorder), so
//! several nodes — in the demo's tests or in the simulator — can share a process.

use std::sync::Arc;

use nexus_gossip::MemberState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: a member state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
}

/// Label: why the data plane dropped a frame.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// e.g. `bad_checksum`, `no_route`.
    pub reason: String,
}

/// Label: which way a frame went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `out` (a local client's frame, to the data plane) or `back` (an answer, to the client).
    pub direction: String,
}

/// Labels: a NexStream delivery mode and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `ro`, `ru`, `be` or `pr`.
    pub mode: String,
    /// `sent` / `delivered` for messages, `send` / `recv` for drops.
    pub direction: String,
}

/// Label: an actor's name in the supervision tree.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabel {
    /// e.g. `gossip`, `admin`.
    pub actor: String,
}

/// Every metric the node exports. Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    /// Members by state, as the local node sees them (the local node included).
    pub members: Family<StateLabel, Gauge>,
    /// Gossip datagrams received.
    pub gossip_messages_in: Counter,
    /// Gossip datagrams sent.
    pub gossip_messages_out: Counter,
    /// Gossip bytes received.
    pub gossip_bytes_in: Counter,
    /// Gossip bytes sent.
    pub gossip_bytes_out: Counter,
    /// Gossip datagrams rejected as malformed.
    pub gossip_rejected: Counter,
    /// Gossip datagrams sealed with the keyring's primary key.
    pub gossip_sealed: Counter,
    /// Sealed gossip datagrams opened with an installed key.
    pub gossip_opened: Counter,
    /// Plaintext gossip datagrams accepted (encryption off, or `verify_incoming` off).
    pub gossip_plaintext_in: Counter,
    /// Gossip datagrams dropped before any protocol core saw them, by reason
    /// ([`GOSSIP_DROP_REASONS`]).
    pub gossip_dropped: Family<ReasonLabel, Counter>,
    /// Round-trip time of direct SWIM probes, seconds.
    pub probe_rtt: Histogram,
    /// Restarts of supervised actors.
    pub actor_restarts: Family<ActorLabel, Counter>,
    /// The installed forwarding-table generation.
    pub fib_generation: Gauge,
    /// Routes in the installed forwarding table.
    pub fib_routes: Gauge,
    /// Frames the data plane forwarded to a next hop.
    pub dataplane_forwarded: Counter,
    /// Frames the data plane delivered to a local endpoint.
    pub dataplane_delivered_local: Counter,
    /// Frames the data plane dropped, by reason.
    pub dataplane_dropped: Family<ReasonLabel, Counter>,
    /// Services registered on this node.
    pub registry_services_local: Gauge,
    /// Live service adverts this node holds, its own included.
    pub registry_services_fabric: Gauge,
    /// Adverts this node signed and broadcast (registrations, renewals, load updates, withdrawals).
    pub registry_adverts_published: Counter,
    /// Remote adverts that changed the registry.
    pub registry_adverts_applied: Counter,
    /// Adverts or digests rejected (undecodable, bad signature, invalid).
    pub registry_adverts_rejected: Counter,
    /// Adverts sent to a neighbour by anti-entropy.
    pub registry_repair_adverts: Counter,
    /// Version of the last intent-route delta.
    pub registry_routes_version: Gauge,
    /// Intents resolved.
    pub registry_resolves: Counter,
    /// Inputs dropped because the registry's inbox was full.
    pub registry_inbox_dropped: Counter,
    /// Overlay broadcasts delivered to this node.
    pub overlay_delivered: Counter,
    /// Peers in the overlay's active view.
    pub overlay_active_view: Gauge,
    /// Time to resolve one intent inside the registry actor, seconds.
    pub registry_resolve_seconds: Histogram,
    /// This node's CA role: 0 none/shutdown, 1 learner, 2 follower, 3 candidate, 4 leader
    /// (non-voters report 0).
    pub ca_role: Gauge,
    /// The CA group's current term as this voter sees it.
    pub ca_term: Gauge,
    /// The CA leader's Raft id as this voter sees it (-1 when none is known). Raft ids are the
    /// first 8 bytes of the node id; the gauge shows them reinterpreted as signed.
    pub ca_leader: Gauge,
    /// The last CA log index this voter applied (-1 before the first).
    pub ca_last_applied: Gauge,
    /// Certificates issued (and renewed) through this node's admin API or for itself.
    pub ca_issued: Counter,
    /// Revocations committed through this node.
    pub ca_revoked: Counter,
    /// Time from proposing a CA command through this node's admin API (issue, renew, revoke)
    /// to its answer: forwarding to the leader, Raft commit and apply; seconds.
    pub ca_commit_seconds: Histogram,
    /// Inbound CA Raft-link connections refused in the TLS handshake (key not admitted, not
    /// TLS, bad signature, timeout, handshake limit).
    pub ca_handshakes_refused: Counter,
    /// Outbound CA Raft-link handshakes that failed (the server's key is not a CA member, or
    /// the TLS handshake broke).
    pub ca_handshakes_failed_out: Counter,
    /// Requests refused on established CA links (a Raft RPC or membership change from a key
    /// that is not a voter).
    pub ca_frames_refused: Counter,
    /// Revocation records in this node's revocation set.
    pub trust_revocations: Gauge,
    /// Milliseconds between a revocation's commit (its `revoked_at_ms`) and this node learning
    /// it, for the last new record (wall clocks of two nodes; skew shows up here).
    pub trust_revocation_lag_ms: Gauge,
    /// Inputs dropped because the trust actor's inbox was full.
    pub trust_inbox_dropped: Counter,
    /// NexStream sessions established now.
    pub stream_sessions: Gauge,
    /// NexStream sessions refused or closed for a trust reason, or refused at the session limit.
    pub stream_refused: Counter,
    /// NexStream messages by mode: `direction="sent"` (copies not counted) or `"delivered"`.
    pub stream_messages: Family<ModeLabel, Counter>,
    /// NexStream messages dropped by mode: `direction="send"` (expired, pushed out of a full
    /// queue, thinned, reset at a deadline) or `"recv"` (expired, duplicate, reset).
    pub stream_dropped: Family<ModeLabel, Counter>,
    /// Local routed clients the session socket's relay remembers now.
    pub stream_relay_clients: Gauge,
    /// Frames the relay carried, by direction ([`RELAY_DIRECTIONS`]).
    pub stream_relay_frames: Family<DirectionLabel, Counter>,
    /// Bytes of those frames (whole NexLink frames), by direction.
    pub stream_relay_bytes: Family<DirectionLabel, Counter>,
    /// Frames the relay dropped, by reason ([`RELAY_DROP_REASONS`]).
    pub stream_relay_dropped: Family<ReasonLabel, Counter>,
    /// Local clients the relay forgot because its table of clients was full.
    pub stream_relay_clients_evicted: Counter,
    /// `RESOLVE` requests the local NexAPI endpoint answered with an `ANSWER`.
    pub api_resolve: Counter,
    /// Of those, the ones answered from the endpoint's answer cache (no registry round trip).
    pub api_resolve_cached: Counter,
    /// Datagrams the local NexAPI endpoint could not serve, by reason ([`API_ERROR_REASONS`]).
    pub api_errors: Family<ReasonLabel, Counter>,
    /// Time from a `RESOLVE` datagram's receipt to its `ANSWER` handed to the socket, seconds.
    pub api_resolve_seconds: Histogram,
}

/// The `reason` labels of `nexus_api_errors_total`, exported from the start: `decode` (the
/// datagram is not a NexAPI message), `kind` (a message other than `RESOLVE`), `registry` (the
/// registry actor did not answer), `send` (the answer could not be sent).
pub const API_ERROR_REASONS: [&str; 4] = ["decode", "kind", "registry", "send"];

/// The `direction` labels of `nexus_stream_relay_frames_total` and
/// `nexus_stream_relay_bytes_total`, exported from the start: `out` (a local client's frame, sent
/// on to the data plane), `back` (an answer, handed to its client).
pub const RELAY_DIRECTIONS: [&str; 2] = ["out", "back"];

/// The `reason` labels of `nexus_stream_relay_dropped_total`, exported from the start:
/// `foreign` (a frame from a remote sender that is not addressed to this node), `no_client` (an
/// answer for a client the relay does not remember), `send` (the socket did not take the frame).
pub const RELAY_DROP_REASONS: [&str; 3] = ["foreign", "no_client", "send"];

/// The `reason` labels of `nexus_gossip_dropped_total`, exported from the start: the keyring
/// guard's ([`nexus_gossip::DropReason::as_str`]: `too_short`, `too_long`, `unknown_version`,
/// `no_key`, `plaintext_refused`, `not_enabled`), then the keyring messages' own:
/// `keyring_plaintext` (a keyring message that arrived unsealed), `keyring_malformed` (it does
/// not decode), `keyring_replay` (a request id already seen).
pub const GOSSIP_DROP_REASONS: [&str; 9] = [
    "too_short",
    "too_long",
    "unknown_version",
    "no_key",
    "plaintext_refused",
    "not_enabled",
    "keyring_plaintext",
    "keyring_malformed",
    "keyring_replay",
];

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// A fresh registry with every metric registered under the `nexus_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nexus");
        let members = Family::<StateLabel, Gauge>::default();
        let gossip_messages_in = Counter::default();
        let gossip_messages_out = Counter::default();
        let gossip_bytes_in = Counter::default();
        let gossip_bytes_out = Counter::default();
        let gossip_rejected = Counter::default();
        let gossip_sealed = Counter::default();
        let gossip_opened = Counter::default();
        let gossip_plaintext_in = Counter::default();
        let gossip_dropped = Family::<ReasonLabel, Counter>::default();
        // 100 µs .. ~3.3 s.
        let probe_rtt = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let actor_restarts = Family::<ActorLabel, Counter>::default();
        let fib_generation = Gauge::default();
        let fib_routes = Gauge::default();
        let dataplane_forwarded = Counter::default();
        let dataplane_delivered_local = Counter::default();
        let dataplane_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dataplane_forwarded",
            "NexLink frames forwarded to a next hop",
            dataplane_forwarded.clone(),
        );
        registry.register(
            "dataplane_delivered_local",
            "NexLink frames delivered to a local endpoint",
            dataplane_delivered_local.clone(),
        );
        registry.register(
            "dataplane_dropped",
            "NexLink frames dropped, by reason",
            dataplane_dropped.clone(),
        );
        registry.register("members", "Members by state", members.clone());
        registry.register(
            "gossip_messages_in",
            "Gossip datagrams received",
            gossip_messages_in.clone(),
        );
        registry.register(
            "gossip_messages_out",
            "Gossip datagrams sent",
            gossip_messages_out.clone(),
        );
        registry.register(
            "gossip_bytes_in",
            "Gossip bytes received",
            gossip_bytes_in.clone(),
        );
        registry.register(
            "gossip_bytes_out",
            "Gossip bytes sent",
            gossip_bytes_out.clone(),
        );
        registry.register(
            "gossip_rejected",
            "Gossip datagrams rejected as malformed",
            gossip_rejected.clone(),
        );
        registry.register(
            "gossip_sealed",
            "Gossip datagrams sealed with the keyring's primary key",
            gossip_sealed.clone(),
        );
        registry.register(
            "gossip_opened",
            "Sealed gossip datagrams opened with an installed key",
            gossip_opened.clone(),
        );
        registry.register(
            "gossip_plaintext_in",
            "Plaintext gossip datagrams accepted",
            gossip_plaintext_in.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossip datagrams dropped before decoding (keyring), by reason",
            gossip_dropped.clone(),
        );
        for reason in GOSSIP_DROP_REASONS {
            // Created at 0, so every reason is exported from the start.
            let _ = gossip_dropped.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        registry.register(
            "probe_rtt_seconds",
            "Round-trip time of direct SWIM probes",
            probe_rtt.clone(),
        );
        registry.register(
            "actor_restarts",
            "Restarts of supervised actors",
            actor_restarts.clone(),
        );
        registry.register(
            "fib_generation",
            "Installed forwarding-table generation",
            fib_generation.clone(),
        );
        registry.register(
            "fib_routes",
            "Routes in the installed forwarding table",
            fib_routes.clone(),
        );
        let registry_services_local = Gauge::default();
        registry.register(
            "registry_services_local",
            "Services registered on this node",
            registry_services_local.clone(),
        );
        let registry_services_fabric = Gauge::default();
        registry.register(
            "registry_services_fabric",
            "Live service adverts this node holds (fabric-wide view)",
            registry_services_fabric.clone(),
        );
        let registry_adverts_published = Counter::default();
        registry.register(
            "registry_adverts_published",
            "Adverts this node signed and broadcast",
            registry_adverts_published.clone(),
        );
        let registry_adverts_applied = Counter::default();
        registry.register(
            "registry_adverts_applied",
            "Remote adverts that changed the registry",
            registry_adverts_applied.clone(),
        );
        let registry_adverts_rejected = Counter::default();
        registry.register(
            "registry_adverts_rejected",
            "Adverts or digests rejected (undecodable, bad signature, invalid)",
            registry_adverts_rejected.clone(),
        );
        let registry_repair_adverts = Counter::default();
        registry.register(
            "registry_repair_adverts",
            "Adverts sent by anti-entropy repair",
            registry_repair_adverts.clone(),
        );
        let registry_routes_version = Gauge::default();
        registry.register(
            "registry_routes_version",
            "Version of the last intent-route delta",
            registry_routes_version.clone(),
        );
        let registry_resolves = Counter::default();
        registry.register(
            "registry_resolves",
            "Intents resolved",
            registry_resolves.clone(),
        );
        let registry_inbox_dropped = Counter::default();
        registry.register(
            "registry_inbox_dropped",
            "Inputs dropped because the registry inbox was full",
            registry_inbox_dropped.clone(),
        );
        let overlay_delivered = Counter::default();
        registry.register(
            "overlay_delivered",
            "Overlay broadcasts delivered to this node",
            overlay_delivered.clone(),
        );
        let overlay_active_view = Gauge::default();
        registry.register(
            "overlay_active_view",
            "Peers in the overlay's active view",
            overlay_active_view.clone(),
        );
        // 1 µs .. ~32 ms.
        let registry_resolve_seconds = Histogram::new(exponential_buckets(0.000_001, 2.0, 16));
        registry.register(
            "registry_resolve_seconds",
            "Time to resolve one intent",
            registry_resolve_seconds.clone(),
        );
        // 1 ms .. ~33 s.
        let ca_commit_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "ca_commit_seconds",
            "Time from proposing a CA command through the admin API to its commit and apply",
            ca_commit_seconds.clone(),
        );
        let ca_role = Gauge::default();
        registry.register(
            "ca_role",
            "CA role: 0 none, 1 learner, 2 follower, 3 candidate, 4 leader",
            ca_role.clone(),
        );
        let ca_term = Gauge::default();
        registry.register("ca_term", "CA Raft term", ca_term.clone());
        let ca_leader = Gauge::default();
        ca_leader.set(-1);
        registry.register(
            "ca_leader",
            "CA leader's Raft id (-1 when unknown)",
            ca_leader.clone(),
        );
        let ca_last_applied = Gauge::default();
        ca_last_applied.set(-1);
        registry.register(
            "ca_last_applied",
            "Last CA log index applied on this voter",
            ca_last_applied.clone(),
        );
        let ca_issued = Counter::default();
        registry.register(
            "ca_issued",
            "Certificates issued or renewed through this node",
            ca_issued.clone(),
        );
        let ca_revoked = Counter::default();
        registry.register(
            "ca_revoked",
            "Revocations committed through this node",
            ca_revoked.clone(),
        );
        let ca_handshakes_refused = Counter::default();
        registry.register(
            "ca_handshakes_refused",
            "Inbound CA link connections refused in the TLS handshake",
            ca_handshakes_refused.clone(),
        );
        let ca_handshakes_failed_out = Counter::default();
        registry.register(
            "ca_handshakes_failed_out",
            "Outbound CA link TLS handshakes that failed",
            ca_handshakes_failed_out.clone(),
        );
        let ca_frames_refused = Counter::default();
        registry.register(
            "ca_frames_refused",
            "Requests refused on CA links (Raft RPCs or membership changes from non-voters)",
            ca_frames_refused.clone(),
        );
        let trust_revocations = Gauge::default();
        registry.register(
            "trust_revocations",
            "Revocation records in this node's revocation set",
            trust_revocations.clone(),
        );
        let trust_revocation_lag_ms = Gauge::default();
        registry.register(
            "trust_revocation_lag_ms",
            "Milliseconds from a revocation's commit to this node learning it (last new record)",
            trust_revocation_lag_ms.clone(),
        );
        let trust_inbox_dropped = Counter::default();
        registry.register(
            "trust_inbox_dropped",
            "Inputs dropped because the trust actor's inbox was full",
            trust_inbox_dropped.clone(),
        );
        let stream_sessions = Gauge::default();
        registry.register(
            "stream_sessions",
            "NexStream sessions established",
            stream_sessions.clone(),
        );
        let stream_refused = Counter::default();
        registry.register(
            "stream_refused",
            "NexStream sessions refused or closed for a trust reason, or at the session limit",
            stream_refused.clone(),
        );
        let stream_messages = Family::<ModeLabel, Counter>::default();
        registry.register(
            "stream_messages",
            "NexStream messages by mode, sent or delivered",
            stream_messages.clone(),
        );
        let stream_dropped = Family::<ModeLabel, Counter>::default();
        registry.register(
            "stream_dropped",
            "NexStream messages dropped by mode, on send or on receive",
            stream_dropped.clone(),
        );
        let stream_relay_clients = Gauge::default();
        registry.register(
            "stream_relay_clients",
            "Local routed clients the session socket's relay remembers",
            stream_relay_clients.clone(),
        );
        let stream_relay_frames = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "stream_relay_frames",
            "Frames the session socket's relay carried, out to the data plane or back to a local client",
            stream_relay_frames.clone(),
        );
        let stream_relay_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "stream_relay_bytes",
            "Bytes of the frames the session socket's relay carried, by direction",
            stream_relay_bytes.clone(),
        );
        for direction in RELAY_DIRECTIONS {
            // Created at 0, so both directions are exported from the start.
            let label = DirectionLabel {
                direction: direction.into(),
            };
            let _ = stream_relay_frames.get_or_create(&label);
            let _ = stream_relay_bytes.get_or_create(&label);
        }
        let stream_relay_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "stream_relay_dropped",
            "Frames the session socket's relay dropped, by reason",
            stream_relay_dropped.clone(),
        );
        for reason in RELAY_DROP_REASONS {
            let _ = stream_relay_dropped.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        let stream_relay_clients_evicted = Counter::default();
        registry.register(
            "stream_relay_clients_evicted",
            "Local routed clients the relay forgot because its table of clients was full",
            stream_relay_clients_evicted.clone(),
        );
        let api_resolve = Counter::default();
        registry.register(
            "api_resolve",
            "RESOLVE requests the local NexAPI endpoint answered",
            api_resolve.clone(),
        );
        let api_resolve_cached = Counter::default();
        registry.register(
            "api_resolve_cached",
            "RESOLVE requests the local NexAPI endpoint answered from its answer cache",
            api_resolve_cached.clone(),
        );
        let api_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "api_errors",
            "Datagrams the local NexAPI endpoint could not serve, by reason",
            api_errors.clone(),
        );
        for reason in API_ERROR_REASONS {
            // Created at 0, so every reason is exported from the start.
            let _ = api_errors.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        // 1 µs .. ~0.5 s.
        let api_resolve_seconds = Histogram::new(exponential_buckets(0.000_001, 2.0, 20));
        registry.register(
            "api_resolve_seconds",
            "Time from a RESOLVE datagram's receipt to its ANSWER sent, local NexAPI endpoint",
            api_resolve_seconds.clone(),
        );
        for state in MemberState::ALL {
            members
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(0);
        }
        NodeMetrics {
            registry: Arc::new(registry),
            members,
            gossip_messages_in,
            gossip_messages_out,
            gossip_bytes_in,
            gossip_bytes_out,
            gossip_rejected,
            gossip_sealed,
            gossip_opened,
            gossip_plaintext_in,
            gossip_dropped,
            probe_rtt,
            actor_restarts,
            fib_generation,
            fib_routes,
            dataplane_forwarded,
            dataplane_delivered_local,
            dataplane_dropped,
            registry_services_local,
            registry_services_fabric,
            registry_adverts_published,
            registry_adverts_applied,
            registry_adverts_rejected,
            registry_repair_adverts,
            registry_routes_version,
            registry_resolves,
            registry_inbox_dropped,
            overlay_delivered,
            overlay_active_view,
            registry_resolve_seconds,
            ca_role,
            ca_term,
            ca_leader,
            ca_last_applied,
            ca_issued,
            ca_revoked,
            ca_commit_seconds,
            ca_handshakes_refused,
            ca_handshakes_failed_out,
            ca_frames_refused,
            trust_revocations,
            trust_revocation_lag_ms,
            trust_inbox_dropped,
            stream_sessions,
            stream_refused,
            stream_messages,
            stream_dropped,
            stream_relay_clients,
            stream_relay_frames,
            stream_relay_bytes,
            stream_relay_dropped,
            stream_relay_clients_evicted,
            api_resolve,
            api_resolve_cached,
            api_errors,
            api_resolve_seconds,
        }
    }

    /// Counts one gossip datagram dropped for `reason` (one of [`GOSSIP_DROP_REASONS`]).
    pub fn gossip_drop(&self, reason: &str) {
        self.gossip_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Sets the per-state member gauges from a count per state.
    pub fn set_members(&self, counts: [i64; 4]) {
        for (state, count) in MemberState::ALL.iter().zip(counts) {
            self.members
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(count);
        }
    }

    /// Registers more metrics in this registry (names get the `nexus_` prefix), through
    /// `register`. Only before the first clone: once the registry is shared it returns `false`
    /// and registers nothing.
    pub fn register_more(&mut self, register: impl FnOnce(&mut Registry)) -> bool {
        match Arc::get_mut(&mut self.registry) {
            Some(registry) => {
                register(registry);
                true
            }
            None => false,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = NodeMetrics::new();
        m.gossip_messages_in.inc();
        m.set_members([3, 0, 1, 0]);
        m.actor_restarts
            .get_or_create(&ActorLabel {
                actor: "gossip".into(),
            })
            .inc();
        let text = m.encode();
        for needle in [
            "nexus_members{state=\"alive\"} 3",
            "nexus_members{state=\"down\"} 1",
            "nexus_gossip_messages_in_total 1",
            "nexus_gossip_bytes_out_total 0",
            "nexus_gossip_sealed_total 0",
            "nexus_gossip_opened_total 0",
            "nexus_gossip_dropped_total{reason=\"no_key\"} 0",
            "nexus_gossip_dropped_total{reason=\"keyring_replay\"} 0",
            "nexus_probe_rtt_seconds_bucket",
            "nexus_actor_restarts_total{actor=\"gossip\"} 1",
            "nexus_ca_role 0",
            "nexus_ca_leader -1",
            "nexus_ca_issued_total 0",
            "nexus_ca_handshakes_refused_total 0",
            "nexus_ca_handshakes_failed_out_total 0",
            "nexus_ca_frames_refused_total 0",
            "nexus_trust_revocations 0",
            "nexus_api_resolve_total 0",
            "nexus_api_resolve_cached_total 0",
            "nexus_api_errors_total{reason=\"decode\"} 0",
            "nexus_api_resolve_seconds_bucket",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn gossip_drop_reasons_start_with_every_guard_reason() {
        let guard: Vec<&str> = nexus_gossip::DropReason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(&GOSSIP_DROP_REASONS[..guard.len()], guard.as_slice());
    }
}
