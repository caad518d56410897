//! Registry endpoints: service registration (`/v1/services`), intent resolution
//! (`/v1/resolve`), compiled intent routes and the overlay's view. Handlers talk to the registry
//! and gossip actors by message.
//!
//! A registration body is a SAD plus an optional `"credentials": {"mic": "<hex>",
//! "attestations": ["<hex>", ...]}` (the service's MIC and attestation encodings); bad hex, a
//! MIC or attestation that does not decode, and credentials the node rejects (forged, expired,
//! revoked, failed proof, unknown CA key) are 422 problems naming the field and the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_actors::{GossipMsg, RegistryMsg, Scope, ServiceView};
use nexus_gossip::{MemberView, NodeId};
use nexus_registry::{
    Credentials, CredentialsError, Intent, LoadUpdate, NodeError as RegistryError, Resolution, Sad,
};
use serde_path_to_error::Segment;

use super::{AppState, TypedQuery, ask, json_body, member_views};
use crate::api::{
    CandidateDto, EndpointDto, ExclusionDto, IntentHopDto, IntentRouteDto, IntentRoutes,
    OverlayDto, Problem, Registration, ResolveResponse, ServiceDto, ServiceScope, Services,
    ServicesQuery, WithdrawResponse,
};

fn invalid(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
}

fn registry_problem(e: RegistryError) -> Problem {
    match e {
        RegistryError::Invalid(e) => invalid_service(e.to_string()),
        RegistryError::Unknown(id) => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-service",
            "Unknown service",
            format!("no service {id:?} is registered on this node"),
        ),
        RegistryError::Full => Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "too-many-services",
            "Too many services",
            e.to_string(),
        ),
        RegistryError::Storage(detail) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage-error",
            "Storage error",
            detail,
        ),
        RegistryError::Trust(reject) => invalid(
            "invalid-credentials",
            "Credentials rejected",
            format!("credentials: {reject}"),
        ),
    }
}

/// Member names and addresses by node id, for annotating registry answers. Best effort: an
/// unavailable gossip actor leaves the annotations empty.
async fn member_index(s: &AppState) -> BTreeMap<NodeId, MemberView> {
    let mut index = BTreeMap::new();
    if let Ok(views) = member_views(s).await {
        for v in views {
            // Keep the newest generation of a node that restarted.
            let newer = index
                .get(&v.id.node_id())
                .is_none_or(|old: &MemberView| old.id.generation() < v.id.generation());
            if newer {
                index.insert(v.id.node_id(), v);
            }
        }
    }
    index
}

fn service_dto(v: ServiceView, members: &BTreeMap<NodeId, MemberView>) -> ServiceDto {
    ServiceDto {
        node: v.node.to_hex(),
        node_name: members.get(&v.node).map(|m| m.id.meta().name().to_owned()),
        local: v.local,
        expires_in_ms: v.expires_in_ms,
        service: v.sad,
    }
}

/// Malformed JSON is a 400 (as everywhere in the API); only well-formed bodies reach the
/// registry's validating parsers, whose errors name a field (422).
fn well_formed(bytes: &[u8]) -> Result<(), Problem> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                e.to_string(),
            )
        })
}

fn invalid_credentials(detail: String) -> Problem {
    invalid("invalid-credentials", "Invalid credentials", detail)
}

fn invalid_service(detail: String) -> Problem {
    invalid("invalid-service", "Invalid service descriptor", detail)
}

/// `credentials.<field>: <reason>` for a credentials decoding error.
fn credentials_detail(e: &CredentialsError) -> String {
    let field = e.field();
    let text = match e {
        CredentialsError::Hex { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    let text = text
        .strip_prefix(&format!("{field}: "))
        .map(str::to_owned)
        .unwrap_or(text);
    format!("credentials.{field}: {text}")
}

/// A registration body, read as the [`Registration`] the CLI sends. Malformed JSON is a 400;
/// a member of the wrong type, a missing or unknown member, and a descriptor or credentials
/// that break a rule are 422 problems naming the member: `invalid-credentials` under
/// `credentials`, `invalid-service` elsewhere. The request body limit bounds the parse; every
/// member is bounded by the descriptor's rules after it.
fn parse_registration(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Sad, Option<Credentials>), Problem> {
    let bytes = json_body(headers, body)?;
    well_formed(&bytes)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let registration: Registration = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let in_credentials = matches!(e.path().iter().next(),
            Some(Segment::Map { key }) if key == Registration::CREDENTIALS);
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        if in_credentials {
            invalid_credentials(detail)
        } else {
            invalid_service(detail)
        }
    })?;
    registration
        .sad
        .validate()
        .map_err(|e| invalid_service(e.to_string()))?;
    let credentials = registration
        .credentials
        .map(Credentials::try_from)
        .transpose()
        .map_err(|e| invalid_credentials(credentials_detail(&e)))?;
    Ok((registration.sad, credentials))
}

async fn register(
    s: &AppState,
    sad: Sad,
    credentials: Option<Credentials>,
) -> Result<Response, Problem> {
    let registered = ask(s, |r| {
        RegistryMsg::Register(Box::new(sad), credentials.map(Box::new), r)
    })
    .await?
    .map_err(registry_problem)?;
    let members = member_index(s).await;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(service_dto(registered.view, &members))).into_response())
}

/// Register a service on this node, or renew/update it (same id). The lease runs `ttl_s`
/// seconds from now; renew by registering again or by a load update. An optional
/// `"credentials": {"mic": "<hex>", "attestations": ["<hex>"]}` member is checked against the
/// node's trust context and advertised with the service.
#[utoipa::path(post, path = "/v1/services", tag = "registry",
    request_body(content = Registration, content_type = "application/json"),
    responses((status = 201, description = "Registered", body = ServiceDto),
              (status = 200, description = "Renewed or updated", body = ServiceDto),
              (status = 400, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 507, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn post_service(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (sad, credentials) = parse_registration(&headers, body)?;
    register(&s, sad, credentials).await
}

/// Register or update the service `id` (the body's `id` must be the same).
#[utoipa::path(put, path = "/v1/services/{id}", tag = "registry",
    params(("id" = String, Path, description = "Service id")),
    request_body(content = Registration, content_type = "application/json"),
    responses((status = 201, body = ServiceDto), (status = 200, body = ServiceDto),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn put_service(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (sad, credentials) = parse_registration(&headers, body)?;
    if sad.id != id {
        return Err(invalid_service(format!(
            "id: {:?} does not match the path's {id:?}",
            sad.id
        )));
    }
    register(&s, sad, credentials).await
}

/// Withdraw a service registered on this node (the withdrawal reaches every node).
#[utoipa::path(delete, path = "/v1/services/{id}", tag = "registry",
    params(("id" = String, Path, description = "Service id")),
    responses((status = 200, body = WithdrawResponse), (status = 404, body = Problem)))]
pub(super) async fn delete_service(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<WithdrawResponse>, Problem> {
    let key = id.clone();
    ask(&s, |r| RegistryMsg::Deregister(key, r))
        .await?
        .map_err(registry_problem)?;
    Ok(axum::Json(WithdrawResponse {
        id,
        status: "withdrawn".into(),
    }))
}

/// Update a local service's load and measured latency (cheap and frequent; renews the lease).
#[utoipa::path(patch, path = "/v1/services/{id}/load", tag = "registry",
    params(("id" = String, Path, description = "Service id")),
    request_body(content = LoadUpdate, content_type = "application/json"),
    responses((status = 200, body = ServiceDto), (status = 404, body = Problem),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn patch_load(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ServiceDto>, Problem> {
    let update: LoadUpdate = super::parse_json(&headers, body)?;
    let view = ask(&s, |r| RegistryMsg::PatchLoad(id, update, r))
        .await?
        .map_err(registry_problem)?;
    let members = member_index(&s).await;
    Ok(axum::Json(service_dto(view, &members)))
}

/// Services: `scope=fabric` (default) lists every live advert this node holds; `scope=local`
/// only the services registered on this node.
#[utoipa::path(get, path = "/v1/services", tag = "registry",
    params(ServicesQuery),
    responses((status = 200, body = Services), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn list_services(
    State(s): State<AppState>,
    TypedQuery(q): TypedQuery<ServicesQuery>,
) -> Result<axum::Json<Services>, Problem> {
    let wanted = q.scope.unwrap_or_default();
    let scope = match wanted {
        ServiceScope::Fabric => Scope::Fabric,
        ServiceScope::Local => Scope::Local,
    };
    let views = ask(&s, |r| RegistryMsg::Services(scope, r)).await?;
    let members = member_index(&s).await;
    Ok(axum::Json(Services {
        scope: wanted.as_str().into(),
        services: views
            .into_iter()
            .map(|v| service_dto(v, &members))
            .collect(),
    }))
}

/// One service registered on this node.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "registry",
    params(("id" = String, Path, description = "Service id")),
    responses((status = 200, body = ServiceDto), (status = 404, body = Problem)))]
pub(super) async fn get_service(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ServiceDto>, Problem> {
    let views = ask(&s, |r| RegistryMsg::Services(Scope::Local, r)).await?;
    let view = views
        .into_iter()
        .find(|v| v.sad.id == id)
        .ok_or_else(|| registry_problem(RegistryError::Unknown(id)))?;
    let members = member_index(&s).await;
    Ok(axum::Json(service_dto(view, &members)))
}

fn resolve_dto(
    res: Resolution,
    members: &BTreeMap<NodeId, MemberView>,
    explain: bool,
) -> ResolveResponse {
    ResolveResponse {
        routing_key: format!("{:032x}", res.routing_key),
        considered: res.considered,
        candidates: res
            .candidates
            .into_iter()
            .map(|c| {
                let member = members.get(&c.node);
                CandidateDto {
                    id: c.service,
                    node: c.node.to_hex(),
                    node_name: member.map(|m| m.id.meta().name().to_owned()),
                    endpoint: EndpointDto {
                        node: c.node.to_hex(),
                        node_addr: member.map(|m| m.id.addr().to_string()),
                        port: c.endpoint.port,
                        stream: c.endpoint.stream,
                    },
                    score: c.score,
                    service: Arc::unwrap_or_clone(c.sad),
                    why: c.why,
                }
            })
            .collect(),
        excluded: explain.then(|| {
            res.excluded
                .into_iter()
                .map(|e| ExclusionDto {
                    id: e.service,
                    node: e.node.to_hex(),
                    reason: e.reason,
                })
                .collect()
        }),
    }
}

/// Resolve an intent (hard constraints + weighted preferences) to the `k` best endpoints.
#[utoipa::path(post, path = "/v1/resolve", tag = "registry",
    request_body(content = Intent, content_type = "application/json"),
    responses((status = 200, body = ResolveResponse), (status = 400, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem)))]
pub(super) async fn resolve(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ResolveResponse>, Problem> {
    let bytes = json_body(&headers, body)?;
    well_formed(&bytes)?;
    let intent = Intent::from_json(&bytes)
        .map_err(|e| invalid("invalid-intent", "Invalid intent", e.to_string()))?;
    let explain = intent.explain;
    let span = tracing::debug_span!(target: crate::telemetry::TARGET, "admin.resolve",
        task = %intent.task, k = intent.k, candidates = tracing::field::Empty,
        results = tracing::field::Empty);
    let res = tracing::Instrument::instrument(
        ask(&s, |r| RegistryMsg::Resolve(Box::new(intent), r)),
        span.clone(),
    )
    .await?;
    span.record("candidates", res.considered);
    span.record("results", res.candidates.len());
    let members = member_index(&s).await;
    Ok(axum::Json(resolve_dto(res, &members, explain)))
}

/// The routes compiled for the intent classes resolved on this node (the registry's route
/// deltas folded together).
#[utoipa::path(get, path = "/v1/intent-routes", tag = "registry",
    responses((status = 200, body = IntentRoutes), (status = 503, body = Problem)))]
pub(super) async fn intent_routes(
    State(s): State<AppState>,
) -> Result<axum::Json<IntentRoutes>, Problem> {
    let (version, routes) = ask(&s, RegistryMsg::Routes).await?;
    Ok(axum::Json(IntentRoutes {
        version,
        routes: routes
            .into_iter()
            .map(|r| IntentRouteDto {
                key: format!("{:032x}", r.key),
                class: r.class,
                hops: r
                    .hops
                    .into_iter()
                    .map(|h| IntentHopDto {
                        node: h.node.to_hex(),
                        service: h.service,
                        port: h.port,
                        weight: h.weight,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// The broadcast overlay's views and this node's Vivaldi coordinate.
#[utoipa::path(get, path = "/v1/overlay", tag = "registry",
    responses((status = 200, body = OverlayDto), (status = 503, body = Problem)))]
pub(super) async fn overlay(State(s): State<AppState>) -> Result<axum::Json<OverlayDto>, Problem> {
    let (active, passive) = ask(&s, GossipMsg::OverlayViews).await?;
    let coord = ask(&s, RegistryMsg::Coordinate).await?;
    Ok(axum::Json(OverlayDto {
        active: active.iter().map(ToString::to_string).collect(),
        passive: passive.iter().map(ToString::to_string).collect(),
        coordinate: serde_json::to_value(coord).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};
    use nexus_registry::CredentialsJson;

    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    /// What `nexus ctl service register` sends ([`Registration`]) is what this server reads:
    /// the descriptor's fields at the top level and `credentials` beside them.
    #[test]
    fn a_registration_as_the_cli_sends_it_is_read_back() {
        let sad = Sad::from_json(
            br#"{"id": "coder-1", "tasks": ["llm.code"], "latency_ms_p50": 90,
                 "arch_hash": "0101010101010101010101010101010101010101010101010101010101010101"}"#,
        )
        .expect("sad");
        let plain = Registration {
            sad: sad.clone(),
            credentials: None,
        };
        let body = Bytes::from(serde_json::to_vec(&plain).expect("json"));
        let (back, credentials) = parse_registration(&json_headers(), Ok(body)).expect("parsed");
        assert_eq!(back, sad);
        assert!(credentials.is_none());
        // With credentials: the member is taken as credentials (and these do not decode), not
        // refused as an unknown field of the descriptor.
        let with = Registration {
            sad,
            credentials: Some(CredentialsJson {
                mic: "00".into(),
                attestations: Vec::new(),
            }),
        };
        let body = Bytes::from(serde_json::to_vec(&with).expect("json"));
        let problem = parse_registration(&json_headers(), Ok(body)).expect_err("bad MIC");
        assert_eq!(problem.status, 422);
        assert!(problem.kind.ends_with("invalid-credentials"), "{problem:?}");
    }

    fn problem_for(body: &str) -> Problem {
        parse_registration(&json_headers(), Ok(Bytes::from(body.to_owned()))).expect_err("refused")
    }

    /// Each kind of bad body gets its status, its problem kind and a detail naming the member.
    #[test]
    fn bad_registration_bodies_name_the_member() {
        let cases = [
            // Malformed JSON, also when a data error comes first.
            (
                r#"{"id": "x", "tasks": ["llm.code"]"#,
                400,
                "malformed-json",
                "",
            ),
            (r#"{"context_window": -1, "#, 400, "malformed-json", ""),
            (r#"{"id": "x"} trailing"#, 400, "malformed-json", ""),
            // Missing, wrong type, unknown: the descriptor's own serde rules.
            (
                r#"{"id": "x"}"#,
                422,
                "invalid-service",
                "missing field `tasks`",
            ),
            (
                r#"{"id": "x", "tasks": "llm.code"}"#,
                422,
                "invalid-service",
                "tasks: invalid type",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code", 7]}"#,
                422,
                "invalid-service",
                "tasks[1]: invalid type",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "load": {"queue_depth": "x"}}"#,
                422,
                "invalid-service",
                "load.queue_depth: invalid type",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "colour": "red"}"#,
                422,
                "invalid-service",
                "unknown field `colour`",
            ),
            (
                r#"{"id": "x", "id": "y", "tasks": ["llm.code"]}"#,
                422,
                "invalid-service",
                "duplicate field `id`",
            ),
            (r#"[1, 2]"#, 422, "invalid-body", "object"),
            (r#""x""#, 422, "invalid-service", "invalid type"),
            // Parsed, then refused by the descriptor's rules.
            (
                r#"{"id": "x", "tasks": []}"#,
                422,
                "invalid-service",
                "tasks: at least one",
            ),
            (
                r#"{"id": "x", "tasks": ["a","b","c","d","e","f","g","h","i"]}"#,
                422,
                "invalid-service",
                "tasks",
            ),
            // Credentials: their own problem kind, the path under `credentials`.
            (
                r#"{"id": "x", "tasks": ["llm.code"], "credentials": {"mic": 5}}"#,
                422,
                "invalid-credentials",
                "credentials.mic: invalid type",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "credentials": {"attestations": []}}"#,
                422,
                "invalid-credentials",
                "credentials: missing field `mic`",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "credentials": {"mic": "00", "proof": 1}}"#,
                422,
                "invalid-credentials",
                "credentials.proof: unknown field `proof`",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "credentials": "abc"}"#,
                422,
                "invalid-credentials",
                "credentials: invalid type",
            ),
            (
                r#"{"id": "x", "tasks": ["llm.code"], "credentials": {"mic": "zz"}}"#,
                422,
                "invalid-credentials",
                "credentials.mic: not valid hex",
            ),
            (
                r#"{"credentials": null, "id": "x", "tasks": ["llm.code"], "credentials": null}"#,
                422,
                "invalid-service",
                "duplicate field `credentials`",
            ),
        ];
        for (body, status, kind, mention) in cases {
            let problem = problem_for(body);
            assert_eq!(problem.status, status, "{body}: {problem:?}");
            assert!(
                problem.kind.ends_with(&format!(":{kind}")),
                "{body}: {problem:?}"
            );
            assert!(problem.detail.contains(mention), "{body}: {problem:?}");
        }
    }

    /// An unknown member's error lists every member the body accepts: the descriptor's and
    /// `credentials`.
    #[test]
    fn an_unknown_member_lists_credentials_among_the_accepted() {
        let problem = problem_for(r#"{"id": "x", "tasks": ["llm.code"], "colour": "red"}"#);
        assert_eq!(problem.status, 422, "{problem:?}");
        assert!(
            problem
                .detail
                .contains("unknown field `colour`, expected one of `id`"),
            "{problem:?}"
        );
        assert!(
            problem.detail.contains("`tasks`") && problem.detail.contains(", `credentials`"),
            "{problem:?}"
        );
    }

    /// `credentials` may come anywhere among the descriptor's members, and `null` is absent.
    #[test]
    fn credentials_anywhere_and_null_is_absent() {
        let body = br#"{"id": "coder-1", "credentials": null, "tasks": ["llm.code"], "ttl_s": 60}"#;
        let (sad, credentials) =
            parse_registration(&json_headers(), Ok(Bytes::from_static(body))).expect("parsed");
        assert_eq!(sad.id, "coder-1");
        assert_eq!(sad.ttl_s, 60);
        assert!(credentials.is_none());
        let read: Registration = serde_json::from_slice(
            br#"{"credentials": {"mic": "00"}, "id": "a", "tasks": ["llm.code"]}"#,
        )
        .expect("typed");
        assert_eq!(
            read.credentials,
            Some(CredentialsJson {
                mic: "00".into(),
                attestations: Vec::new()
            })
        );
        assert_eq!(read.sad, Sad::new("a", "llm.code"));
    }
}
