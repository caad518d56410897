//! Certificate-authority endpoints (`/v1/ca/...`) and the node's own trust material
//! (`/v1/node/mic`, `/v1/node/trust`).
//!
//! Any node serves them: a CA voter through its own Raft member, any other node through a client
//! of the voters it sees in membership (writes and linearizable reads go to the leader). The
//! handlers ask the trust actor for that handle ([`TrustMsg::Access`]) and then call the CA
//! themselves, so a slow Raft round trip never blocks the actor. Errors are problem+json:
//! no CA reachable or not bootstrapped → 503 `ca-unavailable`; an operation whose outcome is
//! unknown (deadline, broken forward) → 504 `ca-timeout`; an unknown serial → 404
//! `unknown-serial`; a request the CA refuses → 422 naming the field or rule.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_actors::trust_actor::{CaAccess, TrustMsg, TrustView, raft_id};
use nexus_gossip::{MemberState, NodeId};
use nexus_trust::ca::{
    CaError, Command, IssueRequest, NOT_BEFORE_BACKDATE_MS, Response as CaResponse,
};
use nexus_trust::raft::node::CaClock;
use nexus_trust::raft::{CaAnswer, CaClientError, CaPeer, CaQuery};
use nexus_trust::revocation::RevocationReason;
use nexus_trust::zk;

use super::{AppState, TypedQuery, ask, child, member_views, parse_json};
pub use crate::api::ca::*;
use crate::api::{
    CA_LIST_LIMIT_DEFAULT, CA_LIST_LIMIT_MAX, KeyFormat, KeyFormatQuery, PageQuery, Problem,
};

fn problem(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
    Problem::new(status, slug, title, detail)
}

fn unavailable(detail: impl Into<String>) -> Problem {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "ca-unavailable",
        "CA unavailable",
        detail,
    )
}

fn bad_request(slug: &str, detail: impl Into<String>) -> Problem {
    problem(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
}

fn client_problem(e: CaClientError) -> Problem {
    match e {
        CaClientError::NoLeader { .. }
        | CaClientError::Unreachable { .. }
        | CaClientError::QueueFull { .. }
        | CaClientError::ShuttingDown(_) => unavailable(e.to_string()),
        CaClientError::Timeout { .. } | CaClientError::ForwardFailed { .. } => problem(
            StatusCode::GATEWAY_TIMEOUT,
            "ca-timeout",
            "CA operation outcome unknown",
            format!("{e}; retry (issuance with a request_id is idempotent)"),
        ),
        CaClientError::Rejected { .. } => problem(
            StatusCode::CONFLICT,
            "ca-rejected",
            "CA rejected the operation",
            e.to_string(),
        ),
    }
}

fn ca_error_problem(e: CaError) -> Problem {
    match e {
        CaError::NotBootstrapped => unavailable("the CA is not bootstrapped yet; retry shortly"),
        CaError::UnknownSerial { serial } => unknown_serial(serial),
        CaError::RequestIdReused { .. } => problem(
            StatusCode::CONFLICT,
            "request-id-reused",
            "Request id reused",
            e.to_string(),
        ),
        CaError::Revoked { .. } => problem(
            StatusCode::CONFLICT,
            "revoked",
            "Certificate revoked",
            e.to_string(),
        ),
        CaError::SerialsExhausted => problem(
            StatusCode::INSUFFICIENT_STORAGE,
            "serials-exhausted",
            "Serial numbers exhausted",
            e.to_string(),
        ),
        other => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-certificate-request",
            "Invalid certificate request",
            field_detail(&other),
        ),
    }
}

/// The CA's refusal, prefixed with the request field it concerns where one does.
fn field_detail(e: &CaError) -> String {
    let field = match e {
        CaError::ValidityOutOfRange { .. } | CaError::TimeOverflow { .. } => Some("validity_ms"),
        CaError::MissingModelIdentity => Some("model"),
        CaError::UnknownProvenance { .. } | CaError::RevokedProvenance { .. } => Some("provenance"),
        _ => None,
    };
    match field {
        Some(f) => format!("{f}: {e}"),
        None => e.to_string(),
    }
}

fn unknown_serial(serial: u64) -> Problem {
    problem(
        StatusCode::NOT_FOUND,
        "unknown-serial",
        "Unknown serial",
        format!("no certificate with serial {serial}"),
    )
}

fn parse_serial(text: &str) -> Result<u64, Problem> {
    match text.parse::<u64>() {
        Ok(s) if s > 0 => Ok(s),
        _ => Err(bad_request(
            "bad-serial",
            format!("{text:?} is not a certificate serial (a decimal integer ≥ 1)"),
        )),
    }
}

/// The page size of a CA list: 1 to [`CA_LIST_LIMIT_MAX`], [`CA_LIST_LIMIT_DEFAULT`] without one.
fn page_limit(q: &PageQuery) -> Result<u32, Problem> {
    match q.limit {
        None => Ok(CA_LIST_LIMIT_DEFAULT),
        Some(limit @ 1..=CA_LIST_LIMIT_MAX) => Ok(limit),
        Some(limit) => Err(bad_request(
            "bad-query",
            format!("limit={limit}: expected 1..={CA_LIST_LIMIT_MAX}"),
        )),
    }
}

async fn access(s: &AppState) -> Result<CaAccess, Problem> {
    ask(s, TrustMsg::Access).await?.ok_or_else(|| {
        unavailable("this node is not a CA voter and sees no CA voter alive in membership")
    })
}

async fn read(s: &AppState, query: CaQuery) -> Result<CaAnswer, Problem> {
    access(s).await?.read(query).await.map_err(client_problem)
}

fn unexpected(answer: impl std::fmt::Debug) -> Problem {
    problem(
        StatusCode::BAD_GATEWAY,
        "ca-protocol",
        "Unexpected CA answer",
        format!("{answer:?}"),
    )
}

fn now_ms() -> u64 {
    CaClock::wall().now_ms()
}

/// The CA group's status as this node sees it.
#[utoipa::path(get, path = "/v1/ca/status", tag = "ca",
    responses((status = 200, body = CaStatusDto), (status = 503, body = Problem)))]
pub(super) async fn status(State(s): State<AppState>) -> Result<axum::Json<CaStatusDto>, Problem> {
    let access = access(&s).await?;
    let raft = access.status().await.map_err(client_problem)?;
    // Counters need the leader; a status call must work without one, so they are optional.
    let stats = match access.read(CaQuery::Stats).await {
        Ok(CaAnswer::Stats(st)) => Some(st),
        _ => None,
    };
    let node = NodeId(parse_hex32(&s.ctx.node.id).unwrap_or_default());
    Ok(axum::Json(CaStatusDto {
        voter: access.is_voter(),
        raft_id: raft_id(&node),
        raft,
        bootstrapped: stats.is_some_and(|st| st.bootstrapped),
        mics: stats.map(|st| st.mics),
        revocations: stats.map(|st| st.revocations),
        next_serial: stats.map(|st| st.next_serial),
    }))
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// Issue a certificate. The CA stamps the serial, the validity window and its key id.
#[utoipa::path(post, path = "/v1/ca/certs", tag = "ca",
    request_body(content = IssueRequest, description = "What to certify (docs/trust.md)", content_type = "application/json"),
    responses((status = 201, body = MicDto), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem), (status = 504, body = Problem)))]
pub(super) async fn issue(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let request: IssueRequest = parse_json(&headers, body)?;
    let access = access(&s).await?;
    let response = access
        .write_timed(
            Command::Issue {
                now_ms: now_ms(),
                requests: vec![request],
            },
            &s.ctx.metrics.ca_commit_seconds,
        )
        .await
        .map_err(client_problem)?;
    let mic = match response {
        CaResponse::Issued(mut results) if results.len() == 1 => {
            results.remove(0).map_err(ca_error_problem)?
        }
        CaResponse::Error(e) => return Err(ca_error_problem(e)),
        other => return Err(unexpected(other)),
    };
    s.ctx.metrics.ca_issued.inc();
    Ok((StatusCode::CREATED, axum::Json(MicDto::new(mic, None))).into_response())
}

/// One certificate, with its revocation if revoked (linearizable read).
#[utoipa::path(get, path = "/v1/ca/certs/{serial}", tag = "ca",
    params(("serial" = u64, Path, description = "Certificate serial (1 or more)", minimum = 1)),
    responses((status = 200, body = MicDto), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 503, body = Problem)))]
pub(super) async fn get_cert(
    State(s): State<AppState>,
    Path(serial): Path<String>,
) -> Result<axum::Json<MicDto>, Problem> {
    let serial = parse_serial(&serial)?;
    match read(&s, CaQuery::Get(serial)).await? {
        CaAnswer::Mic(Some(found)) => {
            let (mic, rev) = *found;
            Ok(axum::Json(MicDto::new(mic, rev)))
        }
        CaAnswer::Mic(None) => Err(unknown_serial(serial)),
        other => Err(unexpected(other)),
    }
}

/// Certificates with serials above `after`, ascending, at most `limit` (1..=1000, default 100),
/// each with its revocation if revoked (linearizable read).
#[utoipa::path(get, path = "/v1/ca/certs", tag = "ca",
    params(PageQuery),
    responses((status = 200, body = MicList), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn list_certs(
    State(s): State<AppState>,
    TypedQuery(q): TypedQuery<PageQuery>,
) -> Result<axum::Json<MicList>, Problem> {
    let after = q.after.unwrap_or(0);
    let limit = page_limit(&q)?;
    match read(&s, CaQuery::List { after, limit }).await? {
        CaAnswer::Mics(mics) => {
            let full = mics.len() == limit as usize;
            let next_after = mics.last().map(|(m, _)| m.body.serial).filter(|_| full);
            Ok(axum::Json(MicList {
                certs: mics
                    .into_iter()
                    .map(|(mic, revocation)| MicDto::new(mic, revocation))
                    .collect(),
                next_after,
            }))
        }
        other => Err(unexpected(other)),
    }
}

fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    if body.as_ref().is_ok_and(|b| b.is_empty()) {
        return Ok(T::default());
    }
    // `null` is "no body" as well: the document declares these bodies nullable.
    Ok(parse_json::<Option<T>>(headers, body)?.unwrap_or_default())
}

/// Renew a certificate: a new serial for the same subject and content, the old serial in its
/// provenance.
#[utoipa::path(post, path = "/v1/ca/certs/{serial}/renew", tag = "ca",
    params(("serial" = u64, Path, description = "Certificate serial (1 or more)", minimum = 1)),
    request_body(content = Option<RenewRequest>, content_type = "application/json"),
    responses((status = 201, body = MicDto), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn renew(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let serial = parse_serial(&serial)?;
    let request: RenewRequest = optional_json(&headers, body)?;
    let access = access(&s).await?;
    let validity_ms = match request.validity_ms {
        Some(v) => v,
        None => match access
            .read(CaQuery::Get(serial))
            .await
            .map_err(client_problem)?
        {
            CaAnswer::Mic(Some(found)) => {
                let body = &found.0.body;
                body.not_after_ms
                    .saturating_sub(body.not_before_ms)
                    .saturating_sub(NOT_BEFORE_BACKDATE_MS)
            }
            CaAnswer::Mic(None) => return Err(unknown_serial(serial)),
            other => return Err(unexpected(other)),
        },
    };
    let response = access
        .write_timed(
            Command::Renew {
                now_ms: now_ms(),
                serial,
                validity_ms,
            },
            &s.ctx.metrics.ca_commit_seconds,
        )
        .await
        .map_err(client_problem)?;
    let mic = match response {
        CaResponse::Renewed(r) => r.map_err(ca_error_problem)?,
        CaResponse::Error(e) => return Err(ca_error_problem(e)),
        other => return Err(unexpected(other)),
    };
    s.ctx.metrics.ca_issued.inc();
    Ok((StatusCode::CREATED, axum::Json(MicDto::new(mic, None))).into_response())
}

/// Revoke a certificate (idempotent: a repeated revoke returns the first record). The record is
/// broadcast to every node through the gossip overlay.
#[utoipa::path(post, path = "/v1/ca/certs/{serial}/revoke", tag = "ca",
    params(("serial" = u64, Path, description = "Certificate serial (1 or more)", minimum = 1)),
    request_body(content = Option<RevokeRequest>, content_type = "application/json"),
    responses((status = 200, body = RevocationDto), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem), (status = 504, body = Problem)))]
pub(super) async fn revoke(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<RevocationDto>, Problem> {
    let serial = parse_serial(&serial)?;
    let request: RevokeRequest = optional_json(&headers, body)?;
    let access = access(&s).await?;
    let response = access
        .write_timed(
            Command::Revoke {
                now_ms: now_ms(),
                serial,
                reason: request.reason.unwrap_or(RevocationReason::Unspecified),
            },
            &s.ctx.metrics.ca_commit_seconds,
        )
        .await
        .map_err(client_problem)?;
    let record = match response {
        CaResponse::Revoked(r) => r.map_err(ca_error_problem)?,
        CaResponse::Error(e) => return Err(ca_error_problem(e)),
        other => return Err(unexpected(other)),
    };
    // The trust actor keeps it and broadcasts it; if it is restarting, the revocation polls
    // of every node still find it.
    if let Ok(t) = child::<TrustMsg>(&s).await {
        let _ = t.send_message(TrustMsg::Committed(Box::new(record.clone())));
    }
    Ok(axum::Json(RevocationDto {
        encoded: hex::encode(record.encode()),
        revocation: record,
    }))
}

/// Revocation records with `seq` above `after` (the delta a node that has seen `after` needs).
#[utoipa::path(get, path = "/v1/ca/revocations", tag = "ca",
    params(PageQuery),
    responses((status = 200, body = RevocationList), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn revocations(
    State(s): State<AppState>,
    TypedQuery(q): TypedQuery<PageQuery>,
) -> Result<axum::Json<RevocationList>, Problem> {
    let seq = q.after.unwrap_or(0);
    let limit = page_limit(&q)?;
    match read(&s, CaQuery::RevocationsAfter { seq, limit }).await? {
        CaAnswer::Revocations(records) => {
            let full = records.len() == limit as usize;
            let next_after = records.last().map(|r| r.seq).filter(|_| full);
            Ok(axum::Json(RevocationList {
                revocations: records,
                next_after,
            }))
        }
        other => Err(unexpected(other)),
    }
}

/// The CA's public keys and the circuits it holds keys for.
#[utoipa::path(get, path = "/v1/ca/keys", tag = "ca",
    responses((status = 200, body = CaKeysDto), (status = 503, body = Problem)))]
pub(super) async fn keys(State(s): State<AppState>) -> Result<axum::Json<CaKeysDto>, Problem> {
    let keys = match read(&s, CaQuery::Keys).await? {
        CaAnswer::Keys(k) => k,
        other => return Err(unexpected(other)),
    };
    if keys.is_empty() {
        return Err(unavailable("the CA is not bootstrapped yet; retry shortly"));
    }
    let mut circuits = Vec::new();
    if let CaAnswer::Circuit(Some(c)) =
        read(&s, CaQuery::Circuit(zk::ATTESTATION_CIRCUIT_ID)).await?
    {
        circuits.push(CircuitRef {
            id: zk::ATTESTATION_CIRCUIT_ID,
            verifying_key_id: hex::encode(zk::key_id(&c.verifying_key)),
        });
    }
    Ok(axum::Json(CaKeysDto { keys, circuits }))
}

fn parse_circuit(text: &str) -> Result<u16, Problem> {
    text.parse::<u16>().map_err(|_| {
        bad_request(
            "bad-circuit",
            format!("{text:?} is not a circuit id (an integer 0..=65535)"),
        )
    })
}

async fn circuit_keys(s: &AppState, id: u16) -> Result<nexus_trust::ca::CircuitKeys, Problem> {
    match read(s, CaQuery::Circuit(id)).await? {
        CaAnswer::Circuit(Some(c)) => Ok(c),
        CaAnswer::Circuit(None) => Err(problem(
            StatusCode::NOT_FOUND,
            "unknown-circuit",
            "Unknown circuit",
            format!("the CA holds no keys for circuit {id}"),
        )),
        other => Err(unexpected(other)),
    }
}

/// A circuit's verifying key; `?format=snarkjs` returns snarkjs's `verification_key.json`.
#[utoipa::path(get, path = "/v1/ca/circuits/{id}", tag = "ca",
    params(("id" = u16, Path, description = "Circuit id (1: attestation)", minimum = 0, maximum = 65535),
           KeyFormatQuery),
    responses((status = 200, description = "The verifying key: the node's form, or snarkjs's `verification_key.json` with `format=snarkjs`",
                content((CircuitDto = "application/json"), (Object = "application/json"))),
              (status = 400, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn circuit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    TypedQuery(q): TypedQuery<KeyFormatQuery>,
) -> Result<Response, Problem> {
    let id = parse_circuit(&id)?;
    let snarkjs = q.format.unwrap_or_default() == KeyFormat::Snarkjs;
    let keys = circuit_keys(&s, id).await?;
    if snarkjs {
        let vk = keys.verifying_key().map_err(|e| {
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad-circuit-key",
                "Stored verifying key does not parse",
                e.to_string(),
            )
        })?;
        return Ok(axum::Json(zk::snarkjs::verification_key_json(&vk)).into_response());
    }
    Ok(axum::Json(CircuitDto {
        id,
        verifying_key_id: hex::encode(zk::key_id(&keys.verifying_key)),
        verifying_key: hex::encode(&keys.verifying_key),
    })
    .into_response())
}

/// A circuit's proving key (what a holder needs to prove an attestation).
#[utoipa::path(get, path = "/v1/ca/circuits/{id}/proving-key", tag = "ca",
    params(("id" = u16, Path, description = "Circuit id (1: attestation)", minimum = 0, maximum = 65535)),
    responses((status = 200, body = ProvingKeyDto), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn proving_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ProvingKeyDto>, Problem> {
    let id = parse_circuit(&id)?;
    let keys = circuit_keys(&s, id).await?;
    Ok(axum::Json(ProvingKeyDto {
        id,
        proving_key: hex::encode(&keys.proving_key),
    }))
}

fn parse_node(text: &str, field: &str) -> Result<NodeId, Problem> {
    parse_hex32(text).map(NodeId).ok_or_else(|| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            format!("{field}: {text:?} is not a node id (64 hex digits)"),
        )
    })
}

async fn voters_after(access: &CaAccess) -> Vec<u64> {
    access
        .status()
        .await
        .map(|st| st.voters)
        .unwrap_or_default()
}

/// Add a CA voter (it must run with `[ca] voter = true`); it joins as a learner, catches up,
/// then votes.
#[utoipa::path(post, path = "/v1/ca/voters", tag = "ca",
    request_body(content = AddVoterRequest, content_type = "application/json"),
    responses((status = 200, body = VotersDto), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem), (status = 504, body = Problem)))]
pub(super) async fn add_voter(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<VotersDto>, Problem> {
    let request: AddVoterRequest = parse_json(&headers, body)?;
    let node = parse_node(&request.node, "node")?;
    let addr = match &request.raft_addr {
        Some(a) => a.parse::<std::net::SocketAddr>().map_err(|_| {
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
                format!("raft_addr: {a:?} is not IP:PORT"),
            )
        })?,
        None => {
            let members = member_views(&s).await?;
            members
                .iter()
                .filter(|m| m.state == MemberState::Alive && m.id.node_id() == node)
                .find_map(|m| m.id.meta().ca_raft())
                .ok_or_else(|| {
                    problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-body",
                        "Invalid request body",
                        "raft_addr: not given, and the node is not an alive member advertising a CA Raft address",
                    )
                })?
        }
    };
    let access = access(&s).await?;
    access
        .add_voter(
            raft_id(&node),
            CaPeer {
                addr: addr.to_string(),
                node: node.to_hex(),
            },
        )
        .await
        .map_err(client_problem)?;
    Ok(axum::Json(VotersDto {
        voters: voters_after(&access).await,
    }))
}

/// Remove a CA voter by node id (64 hex digits) or Raft id (decimal).
#[utoipa::path(delete, path = "/v1/ca/voters/{id}", tag = "ca",
    params(("id" = String, Path, description = "Node id (64 hex digits) or Raft id (decimal)", pattern = "^([0-9a-fA-F]{64}|[0-9]{1,20})$")),
    responses((status = 200, body = VotersDto), (status = 400, body = Problem), (status = 409, body = Problem),
              (status = 503, body = Problem)))]
pub(super) async fn remove_voter(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<VotersDto>, Problem> {
    let raft = match (parse_hex32(&id), id.parse::<u64>()) {
        (Some(node), _) => raft_id(&NodeId(node)),
        (None, Ok(n)) => n,
        _ => {
            return Err(bad_request(
                "bad-voter",
                format!("{id:?} is neither a node id (64 hex digits) nor a Raft id (decimal)"),
            ));
        }
    };
    let access = access(&s).await?;
    access.remove_voter(raft).await.map_err(client_problem)?;
    Ok(axum::Json(VotersDto {
        voters: voters_after(&access).await,
    }))
}

async fn view(s: &AppState) -> Result<TrustView, Problem> {
    ask(s, TrustMsg::View).await
}

/// This node's own certificate (kind `node`, subject = its identity key).
#[utoipa::path(get, path = "/v1/node/mic", tag = "ca",
    responses((status = 200, body = MicDto), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn node_mic(State(s): State<AppState>) -> Result<axum::Json<MicDto>, Problem> {
    let view = view(&s).await?;
    match view.node_mic {
        Some(mic) => Ok(axum::Json(MicDto::new(mic, None))),
        None => Err(problem(
            StatusCode::NOT_FOUND,
            "no-node-mic",
            "No node certificate yet",
            "this node has not obtained its MIC yet (the CA may not be bootstrapped); retry shortly",
        )),
    }
}

/// The trust material this node holds: CA keys, circuits, its MIC serial, its revocation set.
#[utoipa::path(get, path = "/v1/node/trust", tag = "ca",
    responses((status = 200, body = TrustDto), (status = 503, body = Problem)))]
pub(super) async fn node_trust(State(s): State<AppState>) -> Result<axum::Json<TrustDto>, Problem> {
    let v = view(&s).await?;
    Ok(axum::Json(TrustDto {
        voter: v.voter,
        raft_id: v.raft_id,
        ca_keys: v.ca_keys,
        circuits: v.circuits,
        node_mic_serial: v.node_mic.map(|m| m.body.serial),
        revocations: v.revocations,
        contiguous_seq: v.contiguous_seq,
        revoked: v.revoked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_and_queries_are_checked() {
        assert_eq!(parse_serial("7").expect("ok"), 7);
        for bad in ["0", "-1", "x", "", "18446744073709551616"] {
            let p = parse_serial(bad).expect_err(bad);
            assert_eq!(
                (p.status, p.kind.as_str()),
                (400, "urn:nexus:problem:bad-serial")
            );
        }
        let page = |query: &str| -> Result<u32, Problem> {
            let uri: axum::http::Uri = format!("/v1/ca/certs?{query}").parse().expect("uri");
            page_limit(&super::super::parse_query::<PageQuery>(&uri)?)
        };
        assert_eq!(page("").expect("default"), CA_LIST_LIMIT_DEFAULT);
        assert_eq!(page("limit=1000&after=5").expect("max"), 1000);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=-1",
            "limt=1",
            "limit=1&limit=2",
        ] {
            let p = page(bad).expect_err(bad);
            assert_eq!(
                (p.status, p.kind.as_str()),
                (400, "urn:nexus:problem:bad-query"),
                "{bad}"
            );
        }
        assert!(page("limt=1").expect_err("unknown").detail.contains("limt"));
    }

    #[test]
    fn ca_errors_map_to_statuses_naming_the_field() {
        let p = ca_error_problem(CaError::ValidityOutOfRange {
            validity_ms: 1,
            min_ms: 2,
            max_ms: 3,
        });
        assert_eq!(p.status, 422);
        assert!(p.detail.starts_with("validity_ms:"), "{}", p.detail);
        assert_eq!(
            ca_error_problem(CaError::MissingModelIdentity)
                .detail
                .split(':')
                .next(),
            Some("model")
        );
        assert_eq!(
            ca_error_problem(CaError::UnknownSerial { serial: 9 }).status,
            404
        );
        assert_eq!(ca_error_problem(CaError::NotBootstrapped).status, 503);
        assert_eq!(
            client_problem(CaClientError::Timeout {
                op: "write",
                after_ms: 5
            })
            .status,
            504
        );
        assert_eq!(
            client_problem(CaClientError::NoLeader {
                op: "write",
                waited_ms: 5
            })
            .kind,
            "urn:nexus:problem:ca-unavailable"
        );
    }
}
