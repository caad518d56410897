//! The admin HTTP API (axum), run by [`AdminActor`] as a child of the node's supervisor.
//!
//! Handlers never share state with other actors: they ask the supervisor for the current child
//! and send it a message, with a deadline. Every error is `application/problem+json`.
//!
//! Access control: every route is added through [`RouteTable::route`] with its [`Access`] (open,
//! or the [`Scope`] a token must hold), so the router table in [`routes`] is the one place
//! that says who may call what; a middleware checks the request's bearer token against it, and
//! the OpenAPI document shows each operation's scope. When the node has no `admin_token`, ACLs
//! are off and every request is allowed. Optional TLS (`admin_tls_cert`, `admin_tls_key`) is in
//! [`tls`].

mod ca;
pub mod keyring;
pub mod links;
mod registry;
pub mod sessions;
pub mod tls;
mod tokens;
pub mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use nexus_actors::{
    GossipMsg, NodeMetrics, SupervisorMsg, TableError, TableMsg, parse_node_id, parse_routing_key,
    routing_key_hex,
};
use nexus_dataplane::fib::{NextHop, RoutingKey};
use nexus_gossip::MemberView;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::acl::{AclStore, Scope};

use crate::api::{
    ActorHealth, ActorNode, Actors, CrashResponse, DataplaneTargetDto, DataplaneTargets,
    FIB_ENTRIES_MAX, FibDto, FibEntryDto, FibQuery, GenerationResponse, Health, LeaveRequest,
    LeaveResponse, Member, MemberMetaDto, Members, NextHopDto, Node, Problem, Route, RouteRequest,
    Routes,
};

/// Largest request body accepted, bytes.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Deadline for one request's message round trip to an actor.
pub const ACTOR_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `GET /v1/node` waits for the session actor's relay counters before it answers
/// without them.
const RELAY_ASK_TIMEOUT: Duration = Duration::from_millis(200);

/// What the admin API knows about its node that does not change while it runs.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id (hex).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Advertised gossip address.
    pub addr: SocketAddr,
    /// Bound gossip address.
    pub bind: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Roles.
    pub roles: Vec<String>,
    /// Data directory.
    pub data_dir: String,
    /// Data-plane UDP address, if the forwarder runs.
    pub dataplane: Option<SocketAddr>,
    /// The local NexAPI endpoint's UDP address, if it runs.
    pub api: Option<SocketAddr>,
    /// The OpenAI-compatible gateway's TCP address, if it runs.
    pub gateway: Option<SocketAddr>,
    /// The NexStream session socket's address while it is bound (it runs with the data plane
    /// and relays local clients' routed sessions).
    pub sessions: Option<tokio::sync::watch::Receiver<Option<SocketAddr>>>,
}

/// Everything the admin API needs; cloned into every (re)start of [`AdminActor`].
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// Static node facts.
    pub node: Arc<NodeInfo>,
    /// The node's metrics.
    pub metrics: NodeMetrics,
    /// ACL tokens; without a bootstrap token ACLs are off and every request is allowed.
    pub acl: Arc<AclStore>,
    /// TLS certificate and key, if the API serves HTTPS.
    pub tls: Option<Arc<tls::AdminTls>>,
    /// The admin API's own counters.
    pub admin_metrics: AdminMetrics,
    /// Tells the node's main task that a leave was requested (it then stops the node).
    pub leave: mpsc::Sender<String>,
    /// Whether `POST /v1/debug/crash/{actor}` is enabled.
    pub fault_injection: bool,
    /// When the process started.
    pub started: tokio::time::Instant,
    /// The hardware data-plane targets the node feeds (`GET /v1/dataplane/targets`).
    pub targets: crate::targets::Targets,
}

/// Counters of the admin API (`nexus_admin_*`).
#[derive(Debug, Clone, Default)]
pub struct AdminMetrics {
    /// Requests refused by access control, by `reason`: `missing` (no token), `malformed`
    /// (an Authorization header that is not `Bearer <secret>`), `invalid` (unknown or revoked
    /// token), `forbidden` (the token lacks the endpoint's scope).
    pub auth_failures: Family<Vec<(String, String)>, Counter>,
    /// TLS handshakes and certificate reloads.
    pub tls: tls::TlsMetrics,
    /// Services' links open now (`GET /v1/services/{id}/link`).
    pub service_links: Gauge,
    /// Services withdrawn because their link closed (their process died).
    pub service_links_lost: Counter,
}

impl AdminMetrics {
    /// Registers the counters (names get the registry's `nexus_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "admin_auth_failures",
            "Admin API requests refused by access control, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "admin_tls_handshake_failures",
            "Admin API TLS handshakes that failed or timed out",
            self.tls.handshake_failures.clone(),
        );
        registry.register(
            "admin_tls_reloads",
            "Admin API certificate reloads (SIGHUP) by result",
            self.tls.reloads.clone(),
        );
        registry.register(
            "service_links",
            "Local services' links to this node open now",
            self.service_links.clone(),
        );
        registry.register(
            "service_links_lost",
            "Local services withdrawn because their link to this node closed",
            self.service_links_lost.clone(),
        );
    }

    fn refused(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }
}

#[derive(Clone)]
struct AppState {
    ctx: AdminContext,
    supervisor: ActorRef<SupervisorMsg>,
    /// Services' links to this node (`GET /v1/services/{id}/link`).
    links: links::ServiceLinks,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:nexus:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    fn unavailable(actor: &str) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "actor-unavailable",
            "Actor unavailable",
            format!("the {actor} actor is restarting or not answering; retry shortly"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"nexus\""),
            );
        }
        response
    }
}

/// Parses a JSON request body: checks the content type, maps syntax errors to 400 and
/// type/unknown-field errors to 422. Every later endpoint with a body goes through this.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let body = json_body(headers, body)?;
    // serde_path_to_error names the offending field (`next_hops[0].weight: invalid type …`).
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let e = e.into_inner();
        let detail = if path.is_empty() || path == "." {
            e.to_string()
        } else {
            format!("{path}: {e}")
        };
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                e.to_string(),
            ),
            Category::Data => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
                detail,
            ),
        }
    })
}

/// A query string parsed into `T`, whose serde refuses unknown keys: an unknown key, a
/// repeated key or a value of the wrong type is a 400 problem (`bad-query`) naming it.
#[derive(Debug, Clone, Default)]
pub struct TypedQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for TypedQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Problem> {
        parse_query(&parts.uri).map(TypedQuery)
    }
}

/// The query of `uri` as `T` (see [`TypedQuery`]).
pub fn parse_query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| bad_query(e.body_text()))
}

/// A 400 problem for a query parameter.
fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-query",
        "Bad query parameter",
        detail,
    )
}

/// A request body that claims to be JSON (size limit and content type checked), not yet
/// parsed: for endpoints whose body type has its own validating parser.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                "body-too-large",
                "Request body too large",
                format!("request bodies are limited to {BODY_BYTES_MAX} bytes"),
            )
        } else {
            Problem::new(
                status,
                "bad-body",
                "Unreadable request body",
                rejection.body_text(),
            )
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
        });
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    // Malformed JSON is passed on unchanged: the body's parse reports it as 400.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(body);
    };
    // serde reads a struct from an array too (`[1, 2]` as its fields in order); every body of
    // this API is an object.
    if value.is_array() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            "the body must be a JSON object, not an array",
        ));
    }
    Ok(integral_numbers(body, value))
}

/// JSON does not tell integers from other numbers: `5.0` is the integer 5 (the OpenAPI
/// document's `integer` type includes it), but serde refuses it for an integer field. A body
/// with such a number is rewritten with the number as an integer; any other body is passed on
/// unchanged. `value` is `body` parsed.
fn integral_numbers(body: Bytes, mut value: serde_json::Value) -> Bytes {
    fn fix(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Exactly representable integers only (|f| < 2^64 and no fraction).
                let integer = if f.fract() != 0.0 || !f.is_finite() {
                    None
                } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    Some(serde_json::Number::from(f as u64))
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    Some(serde_json::Number::from(f as i64))
                } else {
                    None
                };
                match integer {
                    Some(i) => {
                        *n = i;
                        true
                    }
                    None => false,
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| fix(v) | c),
            serde_json::Value::Object(map) => map.values_mut().fold(false, |c, v| fix(v) | c),
            _ => false,
        }
    }
    if !fix(&mut value) {
        return body;
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

async fn call_supervisor<T: Send + 'static>(
    s: &AppState,
    make: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
) -> Result<T, Problem> {
    match s.supervisor.call(make, Some(ACTOR_CALL_TIMEOUT)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(Problem::unavailable("supervisor")),
    }
}

/// A supervised child the admin API asks by message: its message type and the name the
/// supervisor knows it by.
trait Child: ractor::Message {
    /// The child's name in the supervision tree.
    const NAME: &'static str;
}

impl Child for GossipMsg {
    const NAME: &'static str = "gossip";
}
impl Child for TableMsg {
    const NAME: &'static str = "table";
}
impl Child for nexus_actors::RegistryMsg {
    const NAME: &'static str = "registry";
}
impl Child for nexus_actors::TrustMsg {
    const NAME: &'static str = "trust";
}
impl Child for nexus_actors::SessionMsg {
    const NAME: &'static str = "sessions";
}

/// The running child `M::NAME`, looked up in the supervisor (503 while it restarts).
async fn child<M: Child>(s: &AppState) -> Result<ActorRef<M>, Problem> {
    call_supervisor(s, |r| SupervisorMsg::Lookup(M::NAME.into(), r))
        .await?
        .map(ActorRef::from)
        .ok_or_else(|| Problem::unavailable(M::NAME))
}

/// Asks the child `M::NAME` with the message `make` builds and waits at most `timeout` for
/// its answer; no answer (restarting, stopped, too slow) is a 503.
async fn ask_within<M: Child, T: Send + 'static>(
    s: &AppState,
    timeout: Duration,
    make: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, Problem> {
    match child::<M>(s).await?.call(make, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(Problem::unavailable(M::NAME)),
    }
}

/// [`ask_within`] with the usual deadline, [`ACTOR_CALL_TIMEOUT`].
async fn ask<M: Child, T: Send + 'static>(
    s: &AppState,
    make: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, Problem> {
    ask_within(s, ACTOR_CALL_TIMEOUT, make).await
}

async fn member_views(s: &AppState) -> Result<Vec<MemberView>, Problem> {
    ask(s, GossipMsg::Members).await
}

fn to_member(view: &MemberView) -> Member {
    let meta = view.id.meta();
    Member {
        id: view.id.node_id().to_hex(),
        name: meta.name().to_owned(),
        addr: view.id.addr().to_string(),
        state: view.state.as_str().to_owned(),
        incarnation: view.id.generation(),
        swim_incarnation: view.swim_incarnation,
        local: view.local,
        meta: MemberMetaDto {
            admin: meta.admin().map(|a| a.to_string()),
            version: meta.version().to_owned(),
            roles: meta.roles().to_vec(),
            dataplane: meta.dataplane().map(|a| a.to_string()),
        },
    }
}

/// Liveness and per-actor status.
#[utoipa::path(get, path = "/v1/health", tag = "node",
    responses((status = 200, description = "Every actor running", body = Health),
              (status = 503, description = "An actor is restarting", body = Health)))]
async fn health(State(s): State<AppState>) -> Result<Response, Problem> {
    let tree = call_supervisor(&s, SupervisorMsg::Tree).await?;
    let actors: Vec<ActorHealth> = tree
        .children
        .iter()
        .map(|c| ActorHealth {
            name: c.name.clone(),
            status: c.status.into(),
        })
        .collect();
    let ok = actors.iter().all(|a| a.status == "running");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        actors,
    };
    Ok((status, axum::Json(body)).into_response())
}

/// This node: stable id, addresses, incarnation.
#[utoipa::path(get, path = "/v1/node", tag = "node",
    responses((status = 200, body = Node), (status = 503, body = Problem)))]
async fn node(State(s): State<AppState>) -> Result<axum::Json<Node>, Problem> {
    let views = member_views(&s).await?;
    let me = views
        .iter()
        .find(|m| m.local)
        .ok_or_else(|| Problem::unavailable("gossip"))?;
    let n = &s.ctx.node;
    let sessions = n.sessions.as_ref().and_then(|rx| *rx.borrow());
    // The relay's counters, when the session socket runs and its actor answers in time; the
    // rest of the answer does not wait on it.
    let relay = match sessions {
        Some(_) => ask_within(&s, RELAY_ASK_TIMEOUT, nexus_actors::SessionMsg::Relay)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    Ok(axum::Json(Node {
        id: n.id.clone(),
        name: n.name.clone(),
        addr: n.addr.to_string(),
        bind: n.bind.to_string(),
        admin: n.admin.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        roles: n.roles.clone(),
        incarnation: me.id.generation(),
        state: me.state.as_str().into(),
        data_dir: n.data_dir.clone(),
        dataplane: n.dataplane.map(|a| a.to_string()),
        api: n.api.map(|a| a.to_string()),
        gateway: n.gateway.map(|a| a.to_string()),
        sessions: sessions.map(|a| a.to_string()),
        relay,
        uptime_s: s.ctx.started.elapsed().as_secs(),
    }))
}

/// The member list as this node sees it (itself first).
#[utoipa::path(get, path = "/v1/members", tag = "membership",
    responses((status = 200, body = Members), (status = 503, body = Problem)))]
async fn members(State(s): State<AppState>) -> Result<axum::Json<Members>, Problem> {
    let views = member_views(&s).await?;
    Ok(axum::Json(Members {
        members: views.iter().map(to_member).collect(),
    }))
}

/// The supervision tree with restart counts.
#[utoipa::path(get, path = "/v1/actors", tag = "node",
    responses((status = 200, body = Actors), (status = 503, body = Problem)))]
async fn actors(State(s): State<AppState>) -> Result<axum::Json<Actors>, Problem> {
    let tree = call_supervisor(&s, SupervisorMsg::Tree).await?;
    Ok(axum::Json(Actors {
        name: tree.name.into(),
        restarts_max: tree.restarts_max,
        window_ms: tree.window_ms,
        children: tree
            .children
            .into_iter()
            .map(|c| ActorNode {
                name: c.name,
                status: c.status.into(),
                restarts: c.restarts,
                recent_failures: c.recent_failures,
                last_failure: c.last_failure,
            })
            .collect(),
    }))
}

/// Leave the fabric gracefully; the node process then exits 0.
#[utoipa::path(post, path = "/v1/leave", tag = "membership",
    request_body(content = Option<LeaveRequest>, description = "Optional reason", content_type = "application/json"),
    responses((status = 200, body = LeaveResponse),
              (status = 400, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem)))]
async fn leave(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<LeaveResponse>, Problem> {
    let empty = body.as_ref().is_ok_and(|b| b.is_empty());
    let request: LeaveRequest = if empty {
        LeaveRequest::default()
    } else {
        parse_json(&headers, body)?
    };
    let reason = request.reason.unwrap_or_else(|| "admin API request".into());
    if reason.len() > 256 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            "reason: at most 256 bytes",
        ));
    }
    ask(&s, GossipMsg::Leave).await?;
    tracing::info!(%reason, "leave requested through the admin API");
    // The main task may already be stopping (a signal arrived); then this send fails harmlessly.
    let _ = s.ctx.leave.try_send(reason);
    Ok(axum::Json(LeaveResponse {
        status: "left".into(),
    }))
}

fn hop_dto(h: &NextHop) -> NextHopDto {
    NextHopDto {
        node: h.node.iter().map(|b| format!("{b:02x}")).collect(),
        addr: h.addr.to_string(),
        weight: h.weight,
        rewrite: h.rewrite.map(routing_key_hex),
    }
}

fn key_from_path(key: &str) -> Result<RoutingKey, Problem> {
    parse_routing_key(key).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-routing-key",
            "Bad routing key",
            format!("{key:?} is not a routing key (32 hex digits)"),
        )
    })
}

fn table_problem(e: TableError) -> Problem {
    match e {
        TableError::Route(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-route",
            "Invalid route",
            e.to_string(),
        ),
        TableError::Rollback(e) => Problem::new(
            StatusCode::CONFLICT,
            "no-previous-generation",
            "Nothing to roll back to",
            e,
        ),
        TableError::Internal(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "table-error",
            "Forwarding table error",
            e,
        ),
    }
}

/// The installed forwarding table: generation and the first entries.
#[utoipa::path(get, path = "/v1/fib", tag = "forwarding",
    params(FibQuery),
    responses((status = 200, body = FibDto), (status = 400, body = Problem), (status = 503, body = Problem)))]
async fn fib(
    State(s): State<AppState>,
    TypedQuery(q): TypedQuery<FibQuery>,
) -> Result<axum::Json<FibDto>, Problem> {
    let limit = q.limit.unwrap_or(100);
    if limit > FIB_ENTRIES_MAX {
        return Err(bad_query(format!(
            "limit={limit}: expected 0..={FIB_ENTRIES_MAX}"
        )));
    }
    let view = ask(&s, |r| TableMsg::View(limit as usize, r)).await?;
    Ok(axum::Json(FibDto {
        generation: view.generation,
        previous_generation: view.previous_generation,
        routes: view.routes,
        entries: view
            .entries
            .iter()
            .map(|(k, hops)| FibEntryDto {
                key: routing_key_hex(*k),
                next_hops: hops.iter().map(hop_dto).collect(),
            })
            .collect(),
    }))
}

/// Roll the forwarding table back to the previous generation.
#[utoipa::path(post, path = "/v1/fib/rollback", tag = "forwarding",
    responses((status = 200, body = GenerationResponse), (status = 409, body = Problem)))]
async fn fib_rollback(
    State(s): State<AppState>,
) -> Result<axum::Json<GenerationResponse>, Problem> {
    let generation = ask(&s, TableMsg::Rollback).await?.map_err(table_problem)?;
    Ok(axum::Json(GenerationResponse { generation }))
}

/// The hardware data-plane targets (a P4 switch) the node hands every forwarding-table
/// generation to, each with the generation handed over, the one it holds and its last error.
#[utoipa::path(get, path = "/v1/dataplane/targets", tag = "forwarding",
    responses((status = 200, body = DataplaneTargets)))]
async fn dataplane_targets(State(s): State<AppState>) -> axum::Json<DataplaneTargets> {
    axum::Json(DataplaneTargets {
        targets: s.ctx.targets.view(),
    })
}

/// The static routes with how many next hops are live.
#[utoipa::path(get, path = "/v1/routes", tag = "forwarding", operation_id = "routes",
    responses((status = 200, body = Routes), (status = 503, body = Problem)))]
async fn routes_list(State(s): State<AppState>) -> Result<axum::Json<Routes>, Problem> {
    let list = ask(&s, TableMsg::Routes).await?;
    Ok(axum::Json(Routes {
        routes: list
            .iter()
            .map(|r| Route {
                key: routing_key_hex(r.key),
                next_hops: r.next_hops.iter().map(hop_dto).collect(),
                live: r.live,
            })
            .collect(),
    }))
}

/// Set a static route: routing key → weighted next hops (persisted; installed while their nodes
/// are alive).
#[utoipa::path(put, path = "/v1/routes/{key}", tag = "forwarding",
    params(("key" = String, Path, description = "Routing key, 32 hex digits", pattern = "^[0-9a-fA-F]{32}$")),
    request_body(content = RouteRequest, content_type = "application/json"),
    responses((status = 200, body = GenerationResponse), (status = 400, body = Problem),
              (status = 413, body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem)))]
async fn put_route(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<GenerationResponse>, Problem> {
    let key = key_from_path(&key)?;
    let request: RouteRequest = parse_json(&headers, body)?;
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-route",
            "Invalid route",
            detail,
        )
    };
    let mut hops = Vec::with_capacity(request.next_hops.len());
    for (i, h) in request.next_hops.iter().enumerate() {
        let node = parse_node_id(&h.node).ok_or_else(|| {
            invalid(format!(
                "next_hops[{i}].node: not a node id (64 hex digits)"
            ))
        })?;
        let addr = h
            .addr
            .parse()
            .map_err(|_| invalid(format!("next_hops[{i}].addr: {:?} is not ip:port", h.addr)))?;
        let rewrite = match &h.rewrite {
            None => None,
            Some(text) => Some(parse_routing_key(text).ok_or_else(|| {
                invalid(format!(
                    "next_hops[{i}].rewrite: {text:?} is not a routing key (32 hex digits)"
                ))
            })?),
        };
        hops.push(NextHop {
            node,
            addr,
            weight: h.weight,
            rewrite,
        });
    }
    let generation = ask(&s, |r| TableMsg::PutRoute(key, hops, r))
        .await?
        .map_err(table_problem)?;
    Ok(axum::Json(GenerationResponse { generation }))
}

/// Remove a static route.
#[utoipa::path(delete, path = "/v1/routes/{key}", tag = "forwarding",
    params(("key" = String, Path, description = "Routing key, 32 hex digits", pattern = "^[0-9a-fA-F]{32}$")),
    responses((status = 200, body = GenerationResponse), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 503, body = Problem)))]
async fn delete_route(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::Json<GenerationResponse>, Problem> {
    let key = key_from_path(&key)?;
    let existed = ask(&s, |r| TableMsg::DeleteRoute(key, r))
        .await?
        .map_err(table_problem)?;
    if !existed {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-route",
            "Unknown route",
            format!("no static route for key {}", routing_key_hex(key)),
        ));
    }
    let view = ask(&s, |r| TableMsg::View(0, r)).await?;
    Ok(axum::Json(GenerationResponse {
        generation: view.generation,
    }))
}

/// Fault injection (only with `[debug] fault_injection = true`): crash an actor as a bug would.
#[utoipa::path(post, path = "/v1/debug/crash/{actor}", tag = "debug",
    params(("actor" = String, Path, description = "Actor name, e.g. `gossip`")),
    responses((status = 200, body = CrashResponse), (status = 404, body = Problem)))]
async fn crash(
    State(s): State<AppState>,
    Path(actor): Path<String>,
) -> Result<axum::Json<CrashResponse>, Problem> {
    if !s.ctx.fault_injection {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "fault-injection-disabled",
            "Fault injection disabled",
            "set [debug] fault_injection = true in the node's config to enable this endpoint",
        ));
    }
    let found = if actor == "gossip" {
        // A real panic inside the actor, not just a kill.
        child::<GossipMsg>(&s)
            .await?
            .send_message(GossipMsg::Crash)
            .is_ok()
    } else {
        call_supervisor(&s, |r| SupervisorMsg::Kill(actor.clone(), r)).await?
    };
    if !found {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-actor",
            "Unknown actor",
            format!("no running actor named {actor:?}"),
        ));
    }
    Ok(axum::Json(CrashResponse { actor }))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text")))]
async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.ctx.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus admin API", description = "Administer one Nexus node. Errors are application/problem+json (RFC 9457)."),
    paths(health, node, members, actors, leave, crash, metrics, openapi, fib, fib_rollback, dataplane_targets, routes_list, put_route, delete_route,
        registry::post_service, registry::put_service, registry::delete_service, registry::patch_load, links::link,
        registry::list_services, registry::get_service, registry::resolve, registry::intent_routes, registry::overlay,
        ca::status, ca::issue, ca::get_cert, ca::list_certs, ca::renew, ca::revoke, ca::revocations, ca::keys,
        ca::circuit, ca::proving_key, ca::add_voter, ca::remove_voter, ca::node_mic, ca::node_trust,
        sessions::list, sessions::probe, tokens::create, tokens::list, tokens::revoke,
        keyring::list, keyring::install, keyring::use_key, keyring::remove,
        ui::page, ui::script, ui::stylesheet, ui::icon, ui::token_self),
    components(schemas(Problem, Health, ActorHealth, Node, nexus_stream::udp::RelayCounters, Members, Member, MemberMetaDto, Actors, ActorNode, LeaveRequest, LeaveResponse, CrashResponse, FibDto, FibEntryDto, GenerationResponse, DataplaneTargets, DataplaneTargetDto, crate::api::TargetCountersDto, NextHopDto, Route, RouteRequest, Routes,
        crate::api::ServiceDto, crate::api::Registration, nexus_registry::CredentialsJson, crate::api::Services, crate::api::WithdrawResponse, crate::api::EndpointDto, crate::api::CandidateDto,
        crate::api::ExclusionDto, crate::api::ResolveResponse, crate::api::IntentHopDto, crate::api::IntentRouteDto, crate::api::IntentRoutes,
        crate::api::OverlayDto, crate::api::ServiceScope, crate::api::KeyFormat,
        ca::CaStatusDto, ca::MicDto, ca::MicList, ca::RenewRequest, ca::RevokeRequest, ca::RevocationDto,
        ca::RevocationList, ca::CircuitRef, ca::CaKeysDto, ca::CircuitDto, ca::ProvingKeyDto, ca::AddVoterRequest,
        ca::VotersDto, ca::TrustDto, nexus_trust::mic::IssueRequest, nexus_trust::mic::ModelIdentity,
        nexus_trust::mic::Claim, nexus_trust::mic::SubjectKind,
        sessions::Sessions, sessions::SessionDto, sessions::ModeCountersDto, sessions::ProbeRequestDto,
        sessions::ProbeResponse,
        crate::api::TokenCreateRequest, crate::api::TokenDto, crate::api::TokenCreated,
        crate::api::TokenList, crate::api::TokenRevoked,
        keyring::KeyringRequestDto, keyring::KeyringAnswer, keyring::KeyCountDto, keyring::KeyringRefusalDto, keyring::KeyringSilentDto,
        ui::TokenSelf)),
    modifiers(&BearerAuth, &ScopeSecurity, &ProblemResponses),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An ACL token's secret (or the node's admin_token). Each operation's \
                         security requirement and x-nexus-scope name the scope it needs; \
                         `management` implies every scope. Without an admin_token on the node \
                         no token is checked.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Sets each operation's security requirement from the router table: `bearer` with the
/// required scope, or none for open endpoints; and `x-nexus-scope` (`open` or the scope).
struct ScopeSecurity;

impl utoipa::Modify for ScopeSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityRequirement;
        for r in route_table() {
            let Some(operation) = operation_mut(openapi, r) else {
                continue;
            };
            operation.security = Some(match r.access {
                Access::Open => vec![SecurityRequirement::default()],
                Access::Scope(scope) => vec![SecurityRequirement::new("bearer", [scope.as_str()])],
            });
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .insert("x-nexus-scope".into(), r.access.name().into());
        }
    }
}

/// The operation of a router-table row in the document, if documented.
fn operation_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    r: &RouteAccess,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(r.path)?;
    match r.method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        _ => None,
    }
}

/// A response whose body is a [`Problem`] (`application/problem+json`).
fn problem_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_MEDIA_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The media type of every error response.
const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

/// Makes the error responses true for every operation, from what the server does for all of
/// them rather than from each handler's annotation:
/// - a [`Problem`] body is declared as `application/problem+json` (what [`Problem`]'s
///   `IntoResponse` sends), not `application/json`;
/// - an operation that needs a scope can answer 401 (no valid token; with `WWW-Authenticate`)
///   and 403 (the token lacks the scope), as [`auth`] does when ACLs are on;
/// - an operation with a request body can answer 400 (malformed JSON), 413 (larger than
///   [`BODY_BYTES_MAX`]), 415 (not JSON) and 422 (the body does not fit the schema), as
///   [`parse_json`] does;
/// - an operation with query parameters can answer 400 ([`TypedQuery`]).
struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        for r in route_table() {
            let Some(op) = operation_mut(openapi, r) else {
                continue;
            };
            for response in op.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let problem = response.content.get("application/json").is_some_and(|c| {
                    matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                });
                if problem && let Some(content) = response.content.shift_remove("application/json")
                {
                    response.content.insert(PROBLEM_MEDIA_TYPE.into(), content);
                }
            }
            let has_body = op.request_body.is_some();
            let has_query = op
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Query);
            let mut add = |status: u16, description: &str| {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(problem_response(description)));
            };
            if has_body {
                add(400, "Malformed JSON");
                add(413, "Request body too large");
                add(415, "The body is not application/json");
                add(422, "The body does not fit the schema");
            }
            if has_query {
                add(400, "A query parameter is unknown, repeated or malformed");
            }
            if let Access::Scope(_) = r.access {
                add(403, "The token lacks the scope this operation needs");
                let unauthorized = op
                    .responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| RefOr::T(problem_response("No valid bearer token")));
                if let RefOr::T(response) = unauthorized {
                    response.headers.insert(
                        "WWW-Authenticate".into(),
                        utoipa::openapi::header::HeaderBuilder::new()
                            .schema(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::String),
                            )
                            .description(Some("`Bearer realm=\"nexus\"`"))
                            .build(),
                    );
                }
            }
        }
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The OpenAPI document as JSON (for `nexus ctl openapi` and tests).
pub fn openapi_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        bound_integers(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    })
    .clone()
}

/// Gives every integer schema the bounds of its Rust type (`format` `u-int8`..`u-int64`,
/// `int8`..`int64`), tightening only: an explicit `minimum`/`maximum` inside them stays. A
/// client (or a fuzzer) then knows that a `u16` port above 65535 is refused.
fn bound_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            // utoipa spells the unsigned formats `u-int8`..`u-int64`.
            let format = map
                .get("format")
                .and_then(Value::as_str)
                .map(|f| f.replace('-', ""));
            let bounds: Option<(i128, i128)> = match format.as_deref() {
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64") => Some((0, u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if integer && let Some((lo, hi)) = bounds {
                let number = |i: i128| -> Value {
                    match u64::try_from(i) {
                        Ok(u) => u.into(),
                        Err(_) => i64::try_from(i).unwrap_or(i64::MIN).into(),
                    }
                };
                let as_i128 = |v: &Value| {
                    v.as_u64()
                        .map(i128::from)
                        .or_else(|| v.as_i64().map(i128::from))
                        .or_else(|| v.as_f64().map(|f| f as i128))
                };
                let min = map
                    .get("minimum")
                    .and_then(as_i128)
                    .map_or(lo, |m| m.max(lo));
                let max = map
                    .get("maximum")
                    .and_then(as_i128)
                    .map_or(hi, |m| m.min(hi));
                map.insert("minimum".into(), number(min));
                map.insert("maximum".into(), number(max));
            }
            for child in map.values_mut() {
                bound_integers(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

async fn not_found(State(s): State<AppState>, request: Request) -> Response {
    let (method, path) = (request.method(), request.uri().path());
    if let Err(refusal) = authorize(&s, method, path, request.headers(), None) {
        return refusal.into_response();
    }
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no route for {method} {path}"),
    )
    .into_response()
}

async fn method_not_allowed(State(s): State<AppState>, request: Request) -> Response {
    let (method, path) = (request.method(), request.uri().path());
    if let Err(refusal) = authorize(&s, method, path, request.headers(), None) {
        return refusal.into_response();
    }
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {path}"),
    )
    .into_response()
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, also when ACLs are on (liveness probes, the API's own description).
    Open,
    /// A token holding this scope (or `management`).
    Scope(Scope),
}

impl Access {
    /// `open` or the scope's name.
    pub fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Scope(s) => s.as_str(),
        }
    }
}

/// One row of the router table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    /// HTTP method.
    pub method: Method,
    /// Path as axum matches it (`/v1/services/{id}`), the same as in the OpenAPI document.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

/// The admin API's routes under construction. The only way to add a route is
/// [`RouteTable::route`], which takes its [`Access`]: a route without one cannot be written.
struct RouteTable {
    paths: BTreeMap<&'static str, MethodRouter<AppState>>,
    table: Vec<RouteAccess>,
}

impl RouteTable {
    fn new() -> RouteTable {
        RouteTable {
            paths: BTreeMap::new(),
            table: Vec::new(),
        }
    }

    /// Adds `method path` served by `handler`, callable as `access` says.
    fn route<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        assert!(
            !self
                .table
                .iter()
                .any(|r| r.method == method && r.path == path),
            "{method} {path} is declared twice"
        );
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let methods = self.paths.remove(path).unwrap_or_default();
        self.paths.insert(path, methods.on(filter, handler));
        self.table.push(RouteAccess {
            method,
            path,
            access,
        });
        self
    }
}

const OPEN: Access = Access::Open;
const READ: Access = Access::Scope(Scope::Read);
const SERVICES_WRITE: Access = Access::Scope(Scope::ServicesWrite);
const ROUTES_WRITE: Access = Access::Scope(Scope::RoutesWrite);
const CA_ISSUE: Access = Access::Scope(Scope::CaIssue);
const CA_REVOKE: Access = Access::Scope(Scope::CaRevoke);
const CA_ADMIN: Access = Access::Scope(Scope::CaAdmin);
const OPERATOR: Access = Access::Scope(Scope::Operator);
const MANAGEMENT: Access = Access::Scope(Scope::Management);

/// The router table: every admin endpoint with the scope it requires. docs/operations.md
/// ("Admin API access control") shows the same table.
fn routes() -> RouteTable {
    use Method as M;
    RouteTable::new()
        // Open: liveness probes carry no token, and the API's description holds no state.
        .route(M::GET, "/v1/health", OPEN, health)
        .route(M::GET, "/v1/openapi.json", OPEN, openapi)
        // The node.
        .route(M::GET, "/v1/node", READ, node)
        .route(M::GET, "/v1/members", READ, members)
        .route(M::GET, "/v1/actors", READ, actors)
        .route(M::GET, "/metrics", READ, metrics)
        .route(M::POST, "/v1/leave", OPERATOR, leave)
        .route(M::POST, "/v1/debug/crash/{actor}", OPERATOR, crash)
        // Forwarding.
        .route(M::GET, "/v1/fib", READ, fib)
        .route(M::POST, "/v1/fib/rollback", ROUTES_WRITE, fib_rollback)
        .route(M::GET, "/v1/dataplane/targets", READ, dataplane_targets)
        .route(M::GET, "/v1/routes", READ, routes_list)
        .route(M::PUT, "/v1/routes/{key}", ROUTES_WRITE, put_route)
        .route(M::DELETE, "/v1/routes/{key}", ROUTES_WRITE, delete_route)
        // Registry.
        .route(M::GET, "/v1/services", READ, registry::list_services)
        .route(
            M::POST,
            "/v1/services",
            SERVICES_WRITE,
            registry::post_service,
        )
        .route(M::GET, "/v1/services/{id}", READ, registry::get_service)
        .route(
            M::PUT,
            "/v1/services/{id}",
            SERVICES_WRITE,
            registry::put_service,
        )
        .route(
            M::DELETE,
            "/v1/services/{id}",
            SERVICES_WRITE,
            registry::delete_service,
        )
        .route(
            M::PATCH,
            "/v1/services/{id}/load",
            SERVICES_WRITE,
            registry::patch_load,
        )
        .route(
            M::GET,
            "/v1/services/{id}/link",
            SERVICES_WRITE,
            links::link,
        )
        .route(M::POST, "/v1/resolve", READ, registry::resolve)
        .route(M::GET, "/v1/intent-routes", READ, registry::intent_routes)
        .route(M::GET, "/v1/overlay", READ, registry::overlay)
        // Certificate authority.
        .route(M::GET, "/v1/ca/status", READ, ca::status)
        .route(M::GET, "/v1/ca/certs", READ, ca::list_certs)
        .route(M::POST, "/v1/ca/certs", CA_ISSUE, ca::issue)
        .route(M::GET, "/v1/ca/certs/{serial}", READ, ca::get_cert)
        .route(M::POST, "/v1/ca/certs/{serial}/renew", CA_ISSUE, ca::renew)
        .route(
            M::POST,
            "/v1/ca/certs/{serial}/revoke",
            CA_REVOKE,
            ca::revoke,
        )
        .route(M::GET, "/v1/ca/revocations", READ, ca::revocations)
        .route(M::GET, "/v1/ca/keys", READ, ca::keys)
        .route(M::GET, "/v1/ca/circuits/{id}", READ, ca::circuit)
        .route(
            M::GET,
            "/v1/ca/circuits/{id}/proving-key",
            READ,
            ca::proving_key,
        )
        .route(M::POST, "/v1/ca/voters", CA_ADMIN, ca::add_voter)
        .route(M::DELETE, "/v1/ca/voters/{id}", CA_ADMIN, ca::remove_voter)
        .route(M::GET, "/v1/node/mic", READ, ca::node_mic)
        .route(M::GET, "/v1/node/trust", READ, ca::node_trust)
        // Sessions.
        .route(M::GET, "/v1/sessions", READ, sessions::list)
        .route(M::POST, "/v1/sessions/probe", OPERATOR, sessions::probe)
        // Gossip keyring.
        .route(M::GET, "/v1/keyring", OPERATOR, keyring::list)
        .route(M::POST, "/v1/keyring/install", OPERATOR, keyring::install)
        .route(M::POST, "/v1/keyring/use", OPERATOR, keyring::use_key)
        .route(M::POST, "/v1/keyring/remove", OPERATOR, keyring::remove)
        // ACL tokens.
        .route(M::GET, "/v1/acl/tokens", MANAGEMENT, tokens::list)
        .route(M::POST, "/v1/acl/tokens", MANAGEMENT, tokens::create)
        .route(
            M::DELETE,
            "/v1/acl/tokens/{accessor}",
            MANAGEMENT,
            tokens::revoke,
        )
        .route(M::GET, "/v1/token/self", READ, ui::token_self)
        // The web UI's assets: open like the API's description, since a browser sends no
        // token when it navigates and they hold no state; the page fetches everything it
        // shows from the API with the user's token (fabric/src/admin/ui.rs).
        .route(M::GET, "/ui", OPEN, ui::page)
        .route(M::GET, "/ui/app.js", OPEN, ui::script)
        .route(M::GET, "/ui/app.css", OPEN, ui::stylesheet)
        .route(M::GET, "/ui/favicon.svg", OPEN, ui::icon)
}

/// Every admin endpoint with who may call it, in the order of the router table.
pub fn route_table() -> &'static [RouteAccess] {
    static TABLE: OnceLock<Vec<RouteAccess>> = OnceLock::new();
    TABLE.get_or_init(|| routes().table)
}

/// The access of `method path` (a matched route's path), if the table has it.
fn access_of(method: &Method, path: &str) -> Option<Access> {
    static INDEX: OnceLock<BTreeMap<(String, &'static str), Access>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            route_table()
                .iter()
                .map(|r| ((r.method.to_string(), r.path), r.access))
                .collect()
        })
        .get(&(method.to_string(), path))
        .copied()
}

/// Why a request's Authorization header gave no token.
#[derive(Debug, PartialEq, Eq)]
enum BadAuthorization {
    Missing,
    Malformed(&'static str),
}

/// The bearer secret of a request: exactly one `Authorization: Bearer <secret>` header (the
/// scheme is case-insensitive, RFC 9110 §11.1), a secret of visible ASCII.
fn bearer(headers: &HeaderMap) -> Result<&str, BadAuthorization> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BadAuthorization::Missing);
    };
    if values.next().is_some() {
        return Err(BadAuthorization::Malformed(
            "send one Authorization header, not several",
        ));
    }
    let value = value.to_str().map_err(|_| {
        BadAuthorization::Malformed("the Authorization header is not visible ASCII")
    })?;
    let Some((scheme, secret)) = value.trim().split_once(' ') else {
        return Err(BadAuthorization::Malformed(
            "the Authorization header is not `Bearer <secret>`",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BadAuthorization::Malformed(
            "the Authorization scheme is not Bearer",
        ));
    }
    let secret = secret.trim();
    if secret.is_empty() || secret.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(BadAuthorization::Malformed(
            "the bearer secret is empty or holds spaces",
        ));
    }
    Ok(secret)
}

/// Checks a request's token: `needed` is the endpoint's scope, or `None` for "any valid token"
/// (unknown routes, so that they reveal nothing without one). `Err` is the refusal to send.
fn authorize(
    s: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    needed: Option<Scope>,
) -> Result<(), Problem> {
    if !s.ctx.acl.enabled() {
        return Ok(());
    }
    let unauthorized = |kind: &str, detail: String| {
        Problem::new(StatusCode::UNAUTHORIZED, kind, "Unauthorized", detail)
    };
    let secret = match bearer(headers) {
        Ok(secret) => secret,
        Err(BadAuthorization::Missing) => {
            s.ctx.admin_metrics.refused("missing");
            let what = match needed {
                Some(scope) => format!("{method} {path} needs a token with the scope {scope}"),
                None => "this node requires a token".to_owned(),
            };
            return Err(unauthorized(
                "unauthorized",
                format!("{what}: send Authorization: Bearer <secret>"),
            ));
        }
        Err(BadAuthorization::Malformed(why)) => {
            s.ctx.admin_metrics.refused("malformed");
            return Err(unauthorized(
                "malformed-authorization",
                format!("{why}; send Authorization: Bearer <secret>"),
            ));
        }
    };
    let Some(identity) = s.ctx.acl.authenticate(secret) else {
        s.ctx.admin_metrics.refused("invalid");
        return Err(unauthorized(
            "unauthorized",
            "the bearer token is not valid (unknown or revoked)".into(),
        ));
    };
    match needed {
        Some(needed) if !identity.allows(needed) => {
            s.ctx.admin_metrics.refused("forbidden");
            let held: Vec<&str> = identity.scopes.iter().map(|s| s.as_str()).collect();
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!(
                    "{method} {path} needs the scope {needed}; token {} has {}",
                    identity.accessor,
                    held.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Access control: finds the matched route's scope in the router table and checks the
/// request's token against it. A matched route missing from the table is refused (it cannot
/// be added without one; this keeps it so).
async fn auth(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    // axum answers HEAD with the GET handler (without the body): the same access applies.
    let declared = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let needed = match access_of(&declared, &path) {
        Some(Access::Open) => return next.run(request).await,
        Some(Access::Scope(needed)) => needed,
        None => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "route-without-scope",
                "Route without scope",
                format!("{method} {path} is not in the admin API's router table"),
            )
            .into_response();
        }
    };
    match authorize(&s, &method, &path, request.headers(), Some(needed)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// One exported span per routed admin request, refused ones included (`admin.request`, with
/// the method, the route and the status; docs/operations.md §12a). A `DEBUG` span of the trace
/// target: disabled at its call site unless trace export is on.
async fn trace_request(route: MatchedPath, request: Request, next: Next) -> Response {
    let span = tracing::debug_span!(target: crate::telemetry::TARGET, "admin.request",
        http.request.method = %request.method(), http.route = route.as_str(),
        http.response.status_code = tracing::field::Empty);
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The admin API's routes.
fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, methods) in routes().paths {
        router = router.route(path, methods);
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route_layer(middleware::from_fn(trace_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Arguments of [`AdminActor`].
#[derive(Debug, Clone)]
pub struct AdminArgs {
    /// The bound listener (bound at startup so "port in use" is a config error; it outlives
    /// actor restarts).
    pub listener: Arc<std::net::TcpListener>,
    /// Context for the handlers.
    pub ctx: AdminContext,
}

/// Messages to [`AdminActor`].
#[derive(Debug)]
pub enum AdminMsg {
    /// The HTTP server task ended with an error: fail so the supervisor restarts us.
    ServerFailed(String),
}

/// Owns the HTTP server task.
#[derive(Debug)]
pub struct AdminState {
    server: JoinHandle<()>,
    links: links::ServiceLinks,
}

impl Drop for AdminState {
    fn drop(&mut self) {
        // Before the connections drop with the server: their services did not die.
        self.links.stop();
        self.server.abort();
    }
}

/// The admin API actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdminActor;

impl Actor for AdminActor {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = (AdminArgs, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<AdminMsg>,
        (args, supervisor): (AdminArgs, ActorRef<SupervisorMsg>),
    ) -> Result<AdminState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let tls = match &args.ctx.tls {
            Some(tls) => Some((tls.server_config()?, args.ctx.admin_metrics.tls.clone())),
            None => None,
        };
        let links = links::ServiceLinks::default();
        let app = router(AppState {
            ctx: args.ctx,
            supervisor,
            links: links.clone(),
        });
        let me = myself.clone();
        let server = match tls {
            None => tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    let _ = me.send_message(AdminMsg::ServerFailed(err.to_string()));
                }
            }),
            Some((config, metrics)) => {
                let listener = tls::TlsListener::new(listener, config, metrics)?;
                tokio::spawn(async move {
                    if let Err(err) = axum::serve(listener, app).await {
                        let _ = me.send_message(AdminMsg::ServerFailed(err.to_string()));
                    }
                })
            }
        };
        Ok(AdminState { server, links })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AdminMsg>,
        message: AdminMsg,
        _state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AdminMsg::ServerFailed(err) => Err(format!("admin HTTP server failed: {err}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_3_1_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).expect("json");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        for path in [
            "/v1/health",
            "/v1/node",
            "/v1/members",
            "/v1/actors",
            "/v1/leave",
            "/v1/debug/crash/{actor}",
            "/v1/openapi.json",
            "/metrics",
            "/v1/ca/status",
            "/v1/ca/certs",
            "/v1/ca/certs/{serial}",
            "/v1/ca/certs/{serial}/renew",
            "/v1/ca/certs/{serial}/revoke",
            "/v1/ca/revocations",
            "/v1/ca/keys",
            "/v1/ca/circuits/{id}",
            "/v1/ca/circuits/{id}/proving-key",
            "/v1/ca/voters",
            "/v1/ca/voters/{id}",
            "/v1/node/mic",
            "/v1/node/trust",
            "/v1/sessions",
            "/v1/sessions/probe",
            "/v1/token/self",
            "/ui",
            "/ui/app.js",
        ] {
            assert!(doc["paths"][path].is_object(), "missing {path}");
        }
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    #[test]
    fn json_body_errors_map_to_problems() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let bad = parse_json::<LeaveRequest>(&headers, Ok(Bytes::from_static(b"{nope")))
            .expect_err("syntax");
        assert_eq!(
            (bad.status, bad.kind.as_str()),
            (400, "urn:nexus:problem:malformed-json")
        );
        let unknown = parse_json::<LeaveRequest>(&headers, Ok(Bytes::from_static(b"{\"x\":1}")))
            .expect_err("unknown field");
        assert_eq!(unknown.status, 422);
        assert!(unknown.detail.contains("unknown field"));
        let ok =
            parse_json::<LeaveRequest>(&headers, Ok(Bytes::from_static(b"{\"reason\":\"r\"}")))
                .expect("valid");
        assert_eq!(ok.reason.as_deref(), Some("r"));
        let text = HeaderMap::new();
        let media = parse_json::<LeaveRequest>(&text, Ok(Bytes::from_static(b"{}")))
            .expect_err("content type");
        assert_eq!(media.status, 415);
    }

    #[test]
    fn bodies_are_objects_and_integral_numbers_are_integers() {
        #[derive(Debug, serde::Deserialize)]
        struct Numbers {
            n: u32,
            f: f64,
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = |b: &'static [u8]| Ok(Bytes::from_static(b));
        let array =
            parse_json::<LeaveRequest>(&headers, body(b" [null, null]")).expect_err("array");
        assert_eq!(
            (array.status, array.kind.as_str()),
            (422, "urn:nexus:problem:invalid-body")
        );
        let n: Numbers = parse_json(&headers, body(b"{\"n\": 5.0, \"f\": 1.5}")).expect("5.0");
        assert_eq!((n.n, n.f), (5, 1.5));
        for bad in [
            &b"{\"n\": 5.5, \"f\": 1}"[..],
            b"{\"n\": -1.0, \"f\": 1}",
            b"{\"n\": 4294967296.0, \"f\": 1}",
        ] {
            let p = parse_json::<Numbers>(&headers, Ok(Bytes::copy_from_slice(bad)))
                .expect_err("not a u32");
            assert_eq!(p.status, 422, "{}", String::from_utf8_lossy(bad));
            assert!(p.detail.starts_with("n:"), "{}", p.detail);
        }
        let syntax = parse_json::<Numbers>(&headers, body(b"{\"n\": 5,")).expect_err("syntax");
        assert_eq!(syntax.status, 400);
    }

    #[test]
    fn typed_queries_refuse_unknown_repeated_and_malformed_keys() {
        use crate::api::{ServiceScope, ServicesQuery};
        let fib = |q: &str| parse_query::<FibQuery>(&format!("/v1/fib{q}").parse().expect("uri"));
        assert_eq!(fib("").expect("none").limit, None);
        assert_eq!(fib("?limit=7").expect("7").limit, Some(7));
        for bad in [
            "?limt=7",
            "?limit=7&limit=8",
            "?limit=x",
            "?limit=-1",
            "?limit=",
            "?limit=4294967296",
        ] {
            let p = fib(bad).expect_err(bad);
            assert_eq!(
                (p.status, p.kind.as_str()),
                (400, "urn:nexus:problem:bad-query"),
                "{bad}"
            );
        }
        assert!(fib("?limt=7").expect_err("unknown").detail.contains("limt"));
        let services = |q: &str| {
            parse_query::<ServicesQuery>(&format!("/v1/services{q}").parse().expect("uri"))
        };
        assert_eq!(
            services("?scope=local").expect("local").scope,
            Some(ServiceScope::Local)
        );
        assert_eq!(services("?scope=regional").expect_err("bad").status, 400);
    }

    /// The document states what the server enforces for every operation: integer bounds of
    /// the Rust types, problem bodies as application/problem+json, 401/403 where a scope is
    /// needed, the body errors where a body is read.
    #[test]
    fn the_document_states_bounds_media_types_and_refusals() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).expect("json");
        let schemas = &doc["components"]["schemas"];
        let port = &schemas["Endpoint"]["properties"]["port"];
        assert_eq!(
            (&port["minimum"], &port["maximum"]),
            (&0.into(), &65535.into())
        );
        let version = &schemas["Sad"]["properties"]["version"];
        assert_eq!(version["maximum"], u64::MAX);
        let k = &schemas["Intent"]["properties"]["k"];
        assert_eq!((&k["minimum"], &k["maximum"]), (&1.into(), &64.into()));
        assert_eq!(schemas["Sad"]["properties"]["tasks"]["minItems"], 1);
        assert_eq!(
            schemas["RouteRequest"]["properties"]["next_hops"]["minItems"],
            1
        );
        let issue = &schemas["IssueRequest"]["properties"];
        assert_eq!(
            (
                &issue["validity_ms"]["minimum"],
                &issue["validity_ms"]["maximum"]
            ),
            (
                &nexus_trust::ca::VALIDITY_MS_MIN.into(),
                &nexus_trust::ca::VALIDITY_MS_MAX.into()
            )
        );
        assert_eq!(
            issue["provenance"]["maxItems"],
            nexus_trust::mic::PROVENANCE_MAX
        );
        assert_eq!(issue["claims"]["maxItems"], nexus_trust::mic::CLAIMS_MAX);
        assert_eq!(
            issue["publisher"]["maxLength"],
            nexus_trust::mic::PUBLISHER_BYTES_MAX
        );
        let claim = &schemas["Claim"]["properties"];
        assert_eq!(
            (&claim["key"]["maxLength"], &claim["value"]["maxLength"]),
            (
                &nexus_trust::mic::CLAIM_KEY_BYTES_MAX.into(),
                &nexus_trust::mic::CLAIM_VALUE_BYTES_MAX.into()
            )
        );
        for r in route_table() {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            let responses = op["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if (status.starts_with('4') || status.starts_with('5'))
                    && let Some(content) = response["content"].as_object()
                {
                    assert!(
                        !content.contains_key("application/json")
                            || !content["application/json"]["schema"]["$ref"]
                                .as_str()
                                .is_some_and(|s| s.ends_with("/Problem")),
                        "{} {} {status}: a problem declared as application/json",
                        r.method,
                        r.path
                    );
                }
            }
            if let Access::Scope(_) = r.access {
                for status in ["401", "403"] {
                    assert!(
                        responses.contains_key(status),
                        "{} {} {status}",
                        r.method,
                        r.path
                    );
                }
                assert!(
                    responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
            if op["requestBody"].is_object() {
                // Every body is a named schema (no bare `object` a fuzzer cannot aim at).
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                let named = |s: &serde_json::Value| s["$ref"].is_string();
                assert!(
                    named(schema)
                        || schema["oneOf"]
                            .as_array()
                            .is_some_and(|alts| alts.iter().any(named)),
                    "{} {}: request body schema {schema}",
                    r.method,
                    r.path
                );
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{} {} {status}",
                        r.method,
                        r.path
                    );
                }
            }
        }
    }

    #[test]
    fn bearer_parsing() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(v).expect("header"),
                );
            }
            h
        };
        assert_eq!(bearer(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Ok("abc"));
        assert_eq!(bearer(&headers(&[])), Err(BadAuthorization::Missing));
        for bad in [
            &["Basic abc"][..],
            &["Bearer"],
            &["Bearer "],
            &["Bearerabc"],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(
                matches!(bearer(&headers(bad)), Err(BadAuthorization::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").expect("opaque"),
        );
        assert!(matches!(bearer(&h), Err(BadAuthorization::Malformed(_))));
    }

    /// Every operation in the OpenAPI document is in the router table and the other way
    /// round, and each declares its security: so a route without a scope fails here.
    #[test]
    fn every_route_declares_its_scope() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).expect("json");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    continue;
                }
                let method: Method = method.to_uppercase().parse().expect("method");
                let access = access_of(&method, path)
                    .unwrap_or_else(|| panic!("{method} {path} is not in the router table"));
                assert_eq!(op["x-nexus-scope"], access.name(), "{method} {path}");
                let security = op["security"].as_array().expect("security");
                match access {
                    Access::Open => assert_eq!(security, &[serde_json::json!({})]),
                    Access::Scope(scope) => assert_eq!(
                        security,
                        &[serde_json::json!({ "bearer": [scope.as_str()] })],
                        "{method} {path}"
                    ),
                }
                documented.insert((method.to_string(), path.clone()));
            }
        }
        for r in route_table() {
            assert!(
                documented.contains(&(r.method.to_string(), r.path.to_owned())),
                "{} {} is served but not in the OpenAPI document",
                r.method,
                r.path
            );
        }
        assert_eq!(documented.len(), route_table().len());
        let open: Vec<&str> = route_table()
            .iter()
            .filter(|r| r.access == Access::Open)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            open,
            [
                "/v1/health",
                "/v1/openapi.json",
                "/ui",
                "/ui/app.js",
                "/ui/app.css",
                "/ui/favicon.svg"
            ]
        );
        assert!(
            route_table()
                .iter()
                .filter(|r| r.path.starts_with("/v1/acl/"))
                .all(|r| r.access == Access::Scope(Scope::Management))
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    /// docs/operations.md section 11a lists every endpoint with its scope: the same set as the
    /// router table, so the operators' table cannot drift from what the node enforces.
    #[test]
    fn the_documented_scope_table_is_the_router_table() {
        let doc = include_str!("../../docs/operations.md");
        let start = doc.find("## 11a.").expect("section 11a");
        let end = start + doc[start..].find("## 11b.").expect("section 11b");
        let mut documented = std::collections::BTreeSet::new();
        for line in doc[start..end].lines() {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let [methods, paths, scope] = cells[..] else {
                continue;
            };
            let methods: Vec<&str> = methods.split(", ").collect();
            if !methods
                .iter()
                .all(|m| ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(m))
            {
                continue;
            }
            for method in &methods {
                for path in paths.split(", ") {
                    documented.insert((
                        (*method).to_owned(),
                        path.trim_matches('`').to_owned(),
                        scope.trim_matches('`').to_owned(),
                    ));
                }
            }
        }
        let served: std::collections::BTreeSet<(String, String, String)> = route_table()
            .iter()
            .map(|r| {
                (
                    r.method.to_string(),
                    r.path.to_owned(),
                    r.access.name().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String, String)>::new(),
            "served but not in the table of docs/operations.md section 11a"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String, String)>::new(),
            "in the table of docs/operations.md section 11a but not served so"
        );
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn a_route_cannot_be_declared_twice() {
        let _ = RouteTable::new()
            .route(Method::GET, "/x", OPEN, health)
            .route(Method::GET, "/x", READ, health);
    }
}
