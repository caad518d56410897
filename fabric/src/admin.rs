//! The admin HTTP API (axum), run by [`AdminActor`] as a child of the node's supervisor.
//!
//! Handlers never share state with other actors: they ask the supervisor for the current child
//! and send it a message, with a deadline. Every error is `application/problem+json`.

mod ca;
mod registry;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nexus_actors::{
    GossipMsg, NodeMetrics, SupervisorMsg, TableError, TableMsg, parse_node_id, parse_routing_key,
    routing_key_hex,
};
use nexus_dataplane::fib::{NextHop, RoutingKey};
use nexus_gossip::MemberView;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::api::{
    ActorHealth, ActorNode, Actors, CrashResponse, FibDto, FibEntryDto, GenerationResponse, Health,
    LeaveRequest, LeaveResponse, Member, MemberMetaDto, Members, NextHopDto, Node, Problem, Route,
    RouteRequest, Routes,
};

/// Largest request body accepted, bytes.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Deadline for one request's message round trip to an actor.
pub const ACTOR_CALL_TIMEOUT: Duration = Duration::from_secs(2);

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
}

/// Everything the admin API needs; cloned into every (re)start of [`AdminActor`].
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// Static node facts.
    pub node: Arc<NodeInfo>,
    /// The node's metrics.
    pub metrics: NodeMetrics,
    /// Bearer token required on every request, if set.
    pub token: Option<Arc<str>>,
    /// Tells the node's main task that a leave was requested (it then stops the node).
    pub leave: mpsc::Sender<String>,
    /// Whether `POST /v1/debug/crash/{actor}` is enabled.
    pub fault_injection: bool,
    /// When the process started.
    pub started: tokio::time::Instant,
}

#[derive(Clone)]
struct AppState {
    ctx: AdminContext,
    supervisor: ActorRef<SupervisorMsg>,
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
    Ok(body)
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

async fn gossip(s: &AppState) -> Result<ActorRef<GossipMsg>, Problem> {
    call_supervisor(s, |r| SupervisorMsg::Lookup("gossip".into(), r))
        .await?
        .map(ActorRef::from)
        .ok_or_else(|| Problem::unavailable("gossip"))
}

async fn member_views(s: &AppState) -> Result<Vec<MemberView>, Problem> {
    let gossip = gossip(s).await?;
    match gossip
        .call(GossipMsg::Members, Some(ACTOR_CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(Problem::unavailable("gossip")),
    }
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
    let gossip = gossip(&s).await?;
    match gossip
        .call(GossipMsg::Leave, Some(ACTOR_CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(())) => {}
        _ => return Err(Problem::unavailable("gossip")),
    }
    tracing::info!(%reason, "leave requested through the admin API");
    // The main task may already be stopping (a signal arrived); then this send fails harmlessly.
    let _ = s.ctx.leave.try_send(reason);
    Ok(axum::Json(LeaveResponse {
        status: "left".into(),
    }))
}

/// Entries `GET /v1/fib` returns at most.
pub const FIB_ENTRIES_MAX: usize = 1000;

async fn table(s: &AppState) -> Result<ActorRef<TableMsg>, Problem> {
    call_supervisor(s, |r| SupervisorMsg::Lookup("table".into(), r))
        .await?
        .map(ActorRef::from)
        .ok_or_else(|| Problem::unavailable("table"))
}

async fn call_table<T: Send + 'static>(
    s: &AppState,
    make: impl FnOnce(RpcReplyPort<T>) -> TableMsg,
) -> Result<T, Problem> {
    match table(s).await?.call(make, Some(ACTOR_CALL_TIMEOUT)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(Problem::unavailable("table")),
    }
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
    params(("limit" = Option<usize>, Query, description = "Entries to return (at most 1000; default 100)")),
    responses((status = 200, body = FibDto), (status = 503, body = Problem)))]
async fn fib(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Result<axum::Json<FibDto>, Problem> {
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v.parse::<usize>().map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query parameter",
                format!("limit={v:?} is not a number"),
            )
        })?,
    }
    .min(FIB_ENTRIES_MAX);
    let view = call_table(&s, |r| TableMsg::View(limit, r)).await?;
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
    let generation = call_table(&s, TableMsg::Rollback)
        .await?
        .map_err(table_problem)?;
    Ok(axum::Json(GenerationResponse { generation }))
}

/// The static routes with how many next hops are live.
#[utoipa::path(get, path = "/v1/routes", tag = "forwarding",
    responses((status = 200, body = Routes), (status = 503, body = Problem)))]
async fn routes(State(s): State<AppState>) -> Result<axum::Json<Routes>, Problem> {
    let list = call_table(&s, TableMsg::Routes).await?;
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
    params(("key" = String, Path, description = "Routing key, 32 hex digits")),
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
    let generation = call_table(&s, |r| TableMsg::PutRoute(key, hops, r))
        .await?
        .map_err(table_problem)?;
    Ok(axum::Json(GenerationResponse { generation }))
}

/// Remove a static route.
#[utoipa::path(delete, path = "/v1/routes/{key}", tag = "forwarding",
    params(("key" = String, Path, description = "Routing key, 32 hex digits")),
    responses((status = 200, body = GenerationResponse), (status = 404, body = Problem)))]
async fn delete_route(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::Json<GenerationResponse>, Problem> {
    let key = key_from_path(&key)?;
    let existed = call_table(&s, |r| TableMsg::DeleteRoute(key, r))
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
    let view = call_table(&s, |r| TableMsg::View(0, r)).await?;
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
        let gossip = gossip(&s).await?;
        gossip.send_message(GossipMsg::Crash).is_ok()
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
    paths(health, node, members, actors, leave, crash, metrics, openapi, fib, fib_rollback, routes, put_route, delete_route,
        registry::post_service, registry::put_service, registry::delete_service, registry::patch_load,
        registry::list_services, registry::get_service, registry::resolve, registry::intent_routes, registry::overlay,
        ca::status, ca::issue, ca::get_cert, ca::list_certs, ca::renew, ca::revoke, ca::revocations, ca::keys,
        ca::circuit, ca::proving_key, ca::add_voter, ca::remove_voter, ca::node_mic, ca::node_trust,
        sessions::list, sessions::probe),
    components(schemas(Problem, Health, ActorHealth, Node, Members, Member, MemberMetaDto, Actors, ActorNode, LeaveRequest, LeaveResponse, CrashResponse, FibDto, FibEntryDto, GenerationResponse, NextHopDto, Route, RouteRequest, Routes,
        crate::api::ServiceDto, crate::api::Services, crate::api::WithdrawResponse, crate::api::EndpointDto, crate::api::CandidateDto,
        crate::api::ExclusionDto, crate::api::ResolveResponse, crate::api::IntentHopDto, crate::api::IntentRouteDto, crate::api::IntentRoutes,
        crate::api::OverlayDto,
        ca::CaStatusDto, ca::MicDto, ca::MicList, ca::RenewRequest, ca::RevokeRequest, ca::RevocationDto,
        ca::RevocationList, ca::CircuitRef, ca::CaKeysDto, ca::CircuitDto, ca::ProvingKeyDto, ca::AddVoterRequest,
        ca::VotersDto, ca::TrustDto,
        sessions::Sessions, sessions::SessionDto, sessions::ModeCountersDto, sessions::ProbeRequestDto,
        sessions::ProbeResponse)),
    modifiers(&BearerAuth),
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
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

/// The OpenAPI document as JSON (for `nexus ctl openapi` and tests).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn not_found(request: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &s.ctx.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The auth scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
        let ok = presented.is_some_and(|p| constant_time_eq(p.trim().as_bytes(), token.as_bytes()));
        if !ok {
            let detail = if presented.is_some() {
                "the bearer token is not valid"
            } else {
                "this node requires Authorization: Bearer <token> on every request"
            };
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                detail,
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// The admin API's routes (exposed for in-process tests).
fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/node", get(node))
        .route("/v1/members", get(members))
        .route("/v1/actors", get(actors))
        .route("/v1/leave", post(leave))
        .route("/v1/debug/crash/{actor}", post(crash))
        .route("/v1/fib", get(fib))
        .route("/v1/fib/rollback", post(fib_rollback))
        .route("/v1/routes", get(routes))
        .route(
            "/v1/routes/{key}",
            axum::routing::put(put_route).delete(delete_route),
        )
        .route(
            "/v1/services",
            get(registry::list_services).post(registry::post_service),
        )
        .route(
            "/v1/services/{id}",
            get(registry::get_service)
                .put(registry::put_service)
                .delete(registry::delete_service),
        )
        .route(
            "/v1/services/{id}/load",
            axum::routing::patch(registry::patch_load),
        )
        .route("/v1/resolve", post(registry::resolve))
        .route("/v1/intent-routes", get(registry::intent_routes))
        .route("/v1/overlay", get(registry::overlay))
        .route("/v1/ca/status", get(ca::status))
        .route("/v1/ca/certs", get(ca::list_certs).post(ca::issue))
        .route("/v1/ca/certs/{serial}", get(ca::get_cert))
        .route("/v1/ca/certs/{serial}/renew", post(ca::renew))
        .route("/v1/ca/certs/{serial}/revoke", post(ca::revoke))
        .route("/v1/ca/revocations", get(ca::revocations))
        .route("/v1/ca/keys", get(ca::keys))
        .route("/v1/ca/circuits/{id}", get(ca::circuit))
        .route("/v1/ca/circuits/{id}/proving-key", get(ca::proving_key))
        .route("/v1/ca/voters", post(ca::add_voter))
        .route(
            "/v1/ca/voters/{id}",
            axum::routing::delete(ca::remove_voter),
        )
        .route("/v1/node/mic", get(ca::node_mic))
        .route("/v1/node/trust", get(ca::node_trust))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/probe", post(sessions::probe))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
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
}

impl Drop for AdminState {
    fn drop(&mut self) {
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
        let app = router(AppState {
            ctx: args.ctx,
            supervisor,
        });
        let me = myself.clone();
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                let _ = me.send_message(AdminMsg::ServerFailed(err.to_string()));
            }
        });
        Ok(AdminState { server })
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
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
