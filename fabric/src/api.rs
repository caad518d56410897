//! The admin API's JSON types, shared by the server (`admin`) and the CLI (`ctl`). Their
//! OpenAPI schemas are generated from these definitions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Problem details (RFC 9457), the body of every error response
/// (`Content-Type: application/problem+json`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Problem {
    /// Stable identifier of the problem kind, `urn:nexus:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when every actor is running, `degraded` otherwise.
    pub status: String,
    /// Per-actor status (`running` / `restarting`).
    pub actors: Vec<ActorHealth>,
}

/// One actor's health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorHealth {
    /// Actor name.
    pub name: String,
    /// `running` or `restarting`.
    pub status: String,
}

/// Metadata a member carries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MemberMetaDto {
    /// Admin API address, if the node shares it.
    pub admin: Option<String>,
    /// Software version.
    pub version: String,
    /// Roles (e.g. `ca`).
    pub roles: Vec<String>,
}

/// One row of `GET /v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Member {
    /// Node id: hex of the node's Ed25519 public key (stable across restarts).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
    /// Restart generation: grows on every restart and every rejoin.
    pub incarnation: u64,
    /// SWIM's refutation counter within this incarnation.
    pub swim_incarnation: u16,
    /// Whether this row is the node answering.
    pub local: bool,
    /// Metadata.
    pub meta: MemberMetaDto,
}

/// `GET /v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Members {
    /// The local node first, then every other member by node id.
    pub members: Vec<Member>,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Node id (stable across restarts).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Advertised gossip address.
    pub addr: String,
    /// Bound gossip address.
    pub bind: String,
    /// Admin API address.
    pub admin: String,
    /// Software version.
    pub version: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Restart generation.
    pub incarnation: u64,
    /// `alive` or `left`.
    pub state: String,
    /// Data directory.
    pub data_dir: String,
    /// Data-plane UDP address (NexLink frames), if the forwarder runs.
    pub dataplane: Option<String>,
    /// Seconds since the process started.
    pub uptime_s: u64,
}

/// One supervised actor in `GET /v1/actors`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorNode {
    /// Actor name.
    pub name: String,
    /// `running` or `restarting`.
    pub status: String,
    /// Restarts since the node started.
    pub restarts: u64,
    /// Failures within the current restart window.
    pub recent_failures: usize,
    /// The last failure's message.
    pub last_failure: Option<String>,
}

/// `GET /v1/actors`: the supervision tree.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Actors {
    /// The root (`node`).
    pub name: String,
    /// More failures than this of one child within the window stop the node.
    pub restarts_max: u32,
    /// Restart window, milliseconds.
    pub window_ms: u64,
    /// Children in start order.
    pub children: Vec<ActorNode>,
}

/// Optional body of `POST /v1/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    /// Free-text reason, logged by the node.
    #[schema(max_length = 256)]
    pub reason: Option<String>,
}

/// `POST /v1/leave` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaveResponse {
    /// Always `left`: the leave messages were sent; the process exits shortly.
    pub status: String,
}

/// `POST /v1/debug/crash/{actor}` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CrashResponse {
    /// The actor that was crashed.
    pub actor: String,
}

/// One next hop of a route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NextHopDto {
    /// The next hop's node id (64 hex digits).
    pub node: String,
    /// Where frames for it are sent (`ip:port`).
    pub addr: String,
    /// Relative share of flows (1 or more).
    pub weight: u32,
}

/// Body of `PUT /v1/routes/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The next hops (1–64).
    pub next_hops: Vec<NextHopDto>,
}

/// A configured static route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Route {
    /// The routing key (32 hex digits).
    pub key: String,
    /// The configured next hops.
    pub next_hops: Vec<NextHopDto>,
    /// How many of them are installed now (their node is alive).
    pub live: usize,
}

/// `GET /v1/routes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Routes {
    /// Static routes in key order.
    pub routes: Vec<Route>,
}

/// One installed entry of the forwarding table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FibEntryDto {
    /// The routing key (32 hex digits).
    pub key: String,
    /// The installed next hops (live ones only).
    pub next_hops: Vec<NextHopDto>,
}

/// `GET /v1/fib`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FibDto {
    /// The installed generation.
    pub generation: u64,
    /// The generation a rollback would return to.
    pub previous_generation: Option<u64>,
    /// Routes in the installed table.
    pub routes: usize,
    /// The first entries in key order (at most `limit`).
    pub entries: Vec<FibEntryDto>,
}

/// Result of a route change or a rollback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GenerationResponse {
    /// The forwarding-table generation installed now.
    pub generation: u64,
}
