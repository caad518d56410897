//! The admin API's JSON types, shared by the server (`admin`) and the CLI (`ctl`). Their
//! OpenAPI schemas are generated from these definitions.

pub mod ca;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
    /// Where the node's data plane receives NexLink frames, if it runs one.
    #[serde(default)]
    pub dataplane: Option<String>,
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
    /// The local NexAPI endpoint's UDP address (binary resolve), if it runs.
    #[serde(default)]
    pub api: Option<String>,
    /// The OpenAI-compatible gateway's TCP address, if it runs.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The NexStream session socket's UDP address, while it is bound (with the data plane):
    /// where NexAPI clients on this host send their routed sessions' frames.
    #[serde(default)]
    pub sessions: Option<String>,
    /// What the session socket's relay has carried for local routed clients, while it runs.
    #[serde(default)]
    pub relay: Option<nexus_stream::udp::RelayCounters>,
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
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub node: String,
    /// Where frames for it are sent (`ip:port`; the schema shows the IPv4 form, IPv6 is
    /// `[addr]:port`).
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]):([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub addr: String,
    /// Relative share of flows (1 or more; a route's weights add up to at most 2^32 − 1).
    #[schema(minimum = 1)]
    pub weight: u32,
    /// Routing key (32 hex digits) written into frames sent to this hop (label swap); absent:
    /// the key is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub rewrite: Option<String>,
}

/// Body of `PUT /v1/routes/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The next hops (1–64).
    #[schema(min_items = 1, max_items = 64)]
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

/// One hardware data-plane target the node feeds its table generations to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct DataplaneTargetDto {
    /// `p4` (a P4Runtime switch) or `xdp` (the XDP program on a network interface).
    pub target: String,
    /// Where it is: the P4Runtime server's `host:port`, or the interface's name.
    pub address: String,
    /// Whether the node holds a working connection (P4: primary controller, pipeline set;
    /// XDP: the program is attached).
    pub connected: bool,
    /// The last generation the node handed to the target.
    pub published: Option<u64>,
    /// The generation the target holds, if any (equal to `published` once it caught up).
    pub installed: Option<u64>,
    /// Pushes that failed since the node started (each undone, or followed by a reconnect
    /// and a full install).
    pub failures: u64,
    /// The last error (cleared by the next successful push).
    pub last_error: Option<String>,
    /// The target's own counters (XDP: read from the program's maps at each refresh); null
    /// for a target that does not report them (P4).
    pub counters: Option<TargetCountersDto>,
}

/// Frame counters of a hardware target, with the software forwarder's meanings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TargetCountersDto {
    /// Frames forwarded to a next hop.
    pub forwarded: u64,
    /// Frames delivered to a local endpoint.
    pub delivered_local: u64,
    /// Frames dropped, every reason together.
    pub dropped: u64,
    /// Frames passed to the kernel for a next hop whose MAC was not known yet.
    pub passed_to_kernel: u64,
}

/// `GET /v1/dataplane/targets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DataplaneTargets {
    /// The configured targets (empty when none is).
    pub targets: Vec<DataplaneTargetDto>,
}

// ---- Registry (capability adverts, intent resolution) ----

/// A service as `GET /v1/services` and the registration endpoints show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ServiceDto {
    /// The node the service is attached to (hex node id).
    pub node: String,
    /// That node's name, if it is a known member.
    pub node_name: Option<String>,
    /// Whether the service is registered on the node answering.
    pub local: bool,
    /// Milliseconds until the lease (local) or this node's copy (remote) expires unless renewed.
    pub expires_in_ms: u64,
    /// The descriptor; `version` is the advert version the node assigned.
    pub service: nexus_registry::Sad,
}

/// Body of `POST /v1/services` and `PUT /v1/services/{id}`: the service descriptor's fields
/// and, optionally, the service's credentials, which the node checks against its trust context
/// and advertises with the service.
///
/// Deserialised in one pass: the descriptor's own `Deserialize` reads every member except
/// `credentials`, so its rules apply unchanged (unknown fields are refused, absent ones take
/// their defaults) and an error's path names the member (`tasks[1]`, `credentials.mic`).
/// Neither part is validated here: [`nexus_registry::Sad::validate`] and
/// `Credentials::try_from` do that.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Registration {
    /// The descriptor.
    #[serde(flatten)]
    pub sad: nexus_registry::Sad,
    /// The service's MIC and attestations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<nexus_registry::CredentialsJson>,
}

impl Registration {
    /// The member that holds the credentials beside the descriptor's fields.
    pub const CREDENTIALS: &'static str = "credentials";
}

impl<'de> Deserialize<'de> for Registration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Registration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a service descriptor object, with an optional `credentials` member")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Registration, A::Error> {
                let mut members = DescriptorMembers {
                    map,
                    credentials: None,
                };
                let sad = nexus_registry::Sad::deserialize(
                    serde::de::value::MapAccessDeserializer::new(&mut members),
                )?;
                Ok(Registration {
                    sad,
                    credentials: members.credentials.flatten(),
                })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A registration body's members as the descriptor's deserializer sees them: `credentials` is
/// taken out on the way (once; `null` is the same as absent) and every other member is passed
/// on.
struct DescriptorMembers<A> {
    map: A,
    /// `Some` once the member was read.
    credentials: Option<Option<nexus_registry::CredentialsJson>>,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for DescriptorMembers<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::{Error, IntoDeserializer};
        while let Some(key) = self.map.next_key::<String>()? {
            if key != Registration::CREDENTIALS {
                // The descriptor's field names arrive with its unknown-field error; the body
                // also accepts `credentials`, so the error lists that member too.
                return match seed.deserialize(IntoDeserializer::<KeyError>::into_deserializer(key))
                {
                    Ok(value) => Ok(Some(value)),
                    Err(KeyError::UnknownField { field, expected }) => Err(
                        A::Error::unknown_field(&field, registration_members(expected)),
                    ),
                    Err(KeyError::Other(message)) => Err(A::Error::custom(message)),
                };
            }
            if self.credentials.is_some() {
                return Err(A::Error::duplicate_field(Registration::CREDENTIALS));
            }
            self.credentials = Some(self.map.next_value()?);
        }
        Ok(None)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Why the descriptor refused a member's name: an unknown field keeps the descriptor's list of
/// the names it accepts, so the registration's error can add `credentials` to it.
#[derive(Debug)]
enum KeyError {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    Other(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::UnknownField { field, .. } => write!(f, "unknown field `{field}`"),
            KeyError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for KeyError {}

impl serde::de::Error for KeyError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        KeyError::Other(msg.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        KeyError::UnknownField {
            field: field.to_owned(),
            expected,
        }
    }
}

/// The members a registration body accepts: the descriptor's (`descriptor`, as its
/// deserializer lists them) and `credentials`.
fn registration_members(descriptor: &'static [&'static str]) -> &'static [&'static str] {
    static MEMBERS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    MEMBERS.get_or_init(|| {
        let mut members = descriptor.to_vec();
        members.push(Registration::CREDENTIALS);
        members
    })
}

/// `GET /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Services {
    /// `local` or `fabric`.
    pub scope: String,
    /// The services, ordered by node id then service id.
    pub services: Vec<ServiceDto>,
}

/// `DELETE /v1/services/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct WithdrawResponse {
    /// The service id.
    pub id: String,
    /// Always `withdrawn`.
    pub status: String,
}

/// Where a resolved service is reached.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct EndpointDto {
    /// The service's node (hex node id).
    pub node: String,
    /// That node's gossip address, if it is a known member.
    pub node_addr: Option<String>,
    /// The service's UDP port on its node's host (0: not set).
    pub port: u16,
    /// Stream id within the service.
    pub stream: u32,
}

/// One ranked candidate of `POST /v1/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CandidateDto {
    /// Service id.
    pub id: String,
    /// The service's node (hex node id).
    pub node: String,
    /// That node's name, if it is a known member.
    pub node_name: Option<String>,
    /// Where to reach it.
    pub endpoint: EndpointDto,
    /// Score (higher is better); the ranking key.
    pub score: f64,
    /// The descriptor.
    pub service: nexus_registry::Sad,
    /// With `explain`: why it matched and how its score was made up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

/// A candidate left out, with `explain`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ExclusionDto {
    /// Service id.
    pub id: String,
    /// The service's node (hex node id).
    pub node: String,
    /// The constraint it failed.
    pub reason: String,
}

/// `POST /v1/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ResolveResponse {
    /// The intent class's 128-bit routing key (32 hex digits).
    pub routing_key: String,
    /// Adverts examined.
    pub considered: usize,
    /// The best `k` candidates, best first.
    pub candidates: Vec<CandidateDto>,
    /// With `explain`: candidates of the task that were excluded, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Vec<ExclusionDto>>,
}

/// One next hop of an intent route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct IntentHopDto {
    /// Node (hex node id).
    pub node: String,
    /// Service id on that node.
    pub service: String,
    /// The service's port.
    pub port: u16,
    /// Relative share of flows.
    pub weight: u32,
}

/// One compiled intent route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct IntentRouteDto {
    /// Routing key (32 hex digits).
    pub key: String,
    /// The intent class, in canonical form.
    pub class: String,
    /// Weighted next hops (the class's best candidates).
    pub hops: Vec<IntentHopDto>,
}

/// `GET /v1/intent-routes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct IntentRoutes {
    /// Version of the last route delta.
    pub version: u64,
    /// Routes of the intent classes resolved on this node, by key.
    pub routes: Vec<IntentRouteDto>,
}

/// `GET /v1/overlay`: the broadcast overlay's views and this node's network coordinate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct OverlayDto {
    /// Active view (overlay neighbours), gossip addresses.
    pub active: Vec<String>,
    /// Passive view (backup peers).
    pub passive: Vec<String>,
    /// This node's Vivaldi coordinate.
    #[schema(value_type = Object)]
    pub coordinate: serde_json::Value,
}

// ---- ACL tokens ----

/// Body of `POST /v1/acl/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// What the token is for (at most 256 bytes, no control characters).
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub description: String,
    /// Scopes: `read`, `services:write`, `routes:write`, `ca:issue`, `ca:revoke`, `ca:admin`,
    /// `operator`, `management` (at least one, each once).
    #[schema(schema_with = scopes_schema)]
    pub scopes: Vec<String>,
}

/// The scope names a token may hold.
pub const SCOPE_NAMES: [&str; 8] = [
    "read",
    "services:write",
    "routes:write",
    "ca:issue",
    "ca:revoke",
    "ca:admin",
    "operator",
    "management",
];

fn scopes_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some("Scopes the token holds: at least one, each once."))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(SCOPE_NAMES)),
        )
        .min_items(Some(1))
        .max_items(Some(SCOPE_NAMES.len()))
        .unique_items(true)
        .build()
}

/// A token as `GET /v1/acl/tokens` shows it (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TokenDto {
    /// Accessor id: names the token in lists and revocations (not a secret).
    pub accessor: String,
    /// What the token is for.
    pub description: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Creation time, seconds since the Unix epoch (0 for the bootstrap token).
    pub created_unix_s: u64,
    /// `stored`, `bootstrap` (the node's `admin_token`) or `node-internal` (minted in memory
    /// for the node's own gateway and upstream services).
    pub kind: String,
}

/// `POST /v1/acl/tokens` response: the token and its secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// The token.
    pub token: TokenDto,
    /// The secret to send as `Authorization: Bearer <secret>`. The node keeps only its
    /// SHA-256; it cannot be shown again.
    pub secret: String,
}

/// `GET /v1/acl/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// The bootstrap token first (when ACLs are on), then stored and node-internal tokens by
    /// accessor.
    pub tokens: Vec<TokenDto>,
}

/// `DELETE /v1/acl/tokens/{accessor}` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    /// The revoked token's accessor id.
    pub accessor: String,
    /// Always `revoked`.
    pub status: String,
}

// ---- Query parameters (each refuses unknown keys: 400 naming the key) ----

/// Entries `GET /v1/fib` returns at most.
pub const FIB_ENTRIES_MAX: u32 = 1000;
/// Page size of the CA's lists at most.
pub const CA_LIST_LIMIT_MAX: u32 = 1000;
/// Page size of the CA's lists without `limit`.
pub const CA_LIST_LIMIT_DEFAULT: u32 = 100;

/// Query of `GET /v1/fib`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FibQuery {
    /// Entries to return, 0 to 1000 (default 100).
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Which services `GET /v1/services` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceScope {
    /// Every service this node knows of, local and remote.
    #[default]
    Fabric,
    /// Only the services registered on this node.
    Local,
}

impl ServiceScope {
    /// `fabric` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceScope::Fabric => "fabric",
            ServiceScope::Local => "local",
        }
    }
}

/// Query of `GET /v1/services`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ServicesQuery {
    /// `fabric` (default) or `local`.
    pub scope: Option<ServiceScope>,
}

/// Query of the CA's paged lists (`GET /v1/ca/certs`, `GET /v1/ca/revocations`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Exclusive lower bound: a serial (certificates) or a sequence number (revocations);
    /// default 0.
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// How a circuit key is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// The node's own JSON with hex keys.
    #[default]
    Nexus,
    /// snarkjs's JSON.
    Snarkjs,
}

/// Query of `GET /v1/ca/circuits/{id}` and `GET /v1/ca/circuits/{id}/proving-key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyFormatQuery {
    /// `nexus` (default) or `snarkjs`.
    pub format: Option<KeyFormat>,
}
