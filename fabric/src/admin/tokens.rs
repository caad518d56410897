//! `/v1/acl/tokens`: create, list and revoke ACL tokens (scope `management`). The store itself
//! is [`crate::acl::AclStore`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{AppState, parse_json};
use crate::acl::{self, StoreError, TokenView};
use crate::api::{Problem, TokenCreateRequest, TokenCreated, TokenDto, TokenList, TokenRevoked};

fn dto(t: TokenView) -> TokenDto {
    TokenDto {
        accessor: t.accessor,
        description: t.description,
        scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_unix_s: t.created_unix_s,
        kind: t.kind.into(),
    }
}

fn acl_disabled() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "acl-disabled",
        "ACLs are off",
        "this node has no admin_token, so its admin API is open and tokens would not be checked; \
         set admin_token (--admin-token, NEXUS_ADMIN_TOKEN) to turn ACLs on",
    )
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Invalid(detail) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        ),
        StoreError::Full => Problem::new(
            StatusCode::CONFLICT,
            "acl-store-full",
            "Token store full",
            e.to_string(),
        ),
        StoreError::NotRevocable(detail) => Problem::new(
            StatusCode::CONFLICT,
            "token-not-revocable",
            "Token not revocable",
            detail,
        ),
        StoreError::Io { .. } | StoreError::Malformed { .. } => {
            tracing::error!(error = %e, "ACL token store write failed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "acl-store-error",
                "Token store error",
                format!("the token store could not be written; nothing changed: {e}"),
            )
        }
    }
}

fn join_problem(e: tokio::task::JoinError) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "acl-store-error",
        "Token store error",
        format!("the token store task failed: {e}"),
    )
}

#[allow(
    clippy::disallowed_methods,
    reason = "IO edge: a token's creation time is the wall clock when the operator made it"
)]
fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Create an ACL token. The answer holds its secret, shown this once.
#[utoipa::path(post, path = "/v1/acl/tokens", tag = "acl",
    request_body(content = TokenCreateRequest, content_type = "application/json"),
    responses((status = 200, body = TokenCreated), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem)))]
pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<TokenCreated>, Problem> {
    let request: TokenCreateRequest = parse_json(&headers, body)?;
    if !s.ctx.acl.enabled() {
        return Err(acl_disabled());
    }
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        )
    };
    let scopes = acl::parse_scopes(&request.scopes).map_err(invalid)?;
    acl::check_description(&request.description).map_err(invalid)?;
    let store = s.ctx.acl.clone();
    // The write fsyncs the file and its directory: off the async workers.
    let (record, secret) = tokio::task::spawn_blocking(move || {
        store.create(
            &request.description,
            scopes,
            now_unix_s(),
            &mut rand_core_06::OsRng,
        )
    })
    .await
    .map_err(join_problem)?
    .map_err(store_problem)?;
    tracing::info!(accessor = %record.accessor, scopes = ?record.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "ACL token created");
    Ok(axum::Json(TokenCreated {
        token: dto(TokenView {
            accessor: record.accessor.to_string(),
            description: record.description,
            scopes: record.scopes,
            created_unix_s: record.created_unix_s,
            kind: "stored",
        }),
        secret: secret.expose().to_owned(),
    }))
}

/// List ACL tokens (never their secrets).
#[utoipa::path(get, path = "/v1/acl/tokens", tag = "acl",
    responses((status = 200, body = TokenList)))]
pub(super) async fn list(State(s): State<AppState>) -> axum::Json<TokenList> {
    axum::Json(TokenList {
        tokens: s.ctx.acl.list().into_iter().map(dto).collect(),
    })
}

/// Revoke an ACL token: requests presenting its secret are refused from now on.
#[utoipa::path(delete, path = "/v1/acl/tokens/{accessor}", tag = "acl",
    params(("accessor" = String, Path, description = "The token's accessor id")),
    responses((status = 200, body = TokenRevoked), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(super) async fn revoke(
    State(s): State<AppState>,
    Path(accessor): Path<String>,
) -> Result<axum::Json<TokenRevoked>, Problem> {
    if !s.ctx.acl.enabled() {
        return Err(acl_disabled());
    }
    let store = s.ctx.acl.clone();
    let id = accessor.clone();
    let removed = tokio::task::spawn_blocking(move || store.revoke(&id))
        .await
        .map_err(join_problem)?
        .map_err(store_problem)?;
    match removed {
        Some(record) => {
            tracing::info!(accessor = %record.accessor, "ACL token revoked");
            Ok(axum::Json(TokenRevoked {
                accessor,
                status: "revoked".into(),
            }))
        }
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-token",
            "Unknown token",
            format!("no stored token with accessor {accessor:?}"),
        )),
    }
}
