//! The node's web UI: a page, one JavaScript module, one stylesheet and an icon, embedded in
//! the binary (no build step, nothing fetched from the network) and served at `/ui` on the
//! admin listener; and `GET /v1/token/self`, which tells the UI (or any client) what the
//! calling token may do.
//!
//! The assets are open routes in the router table, like `/v1/openapi.json`: a browser cannot
//! send a bearer token when it navigates, and the assets hold no state. Every datum the UI shows
//! comes from the admin API, fetched by the page with the user's token (kept in the tab's
//! `sessionStorage`), so the API's scopes decide what a user sees and may do; the UI only
//! reflects them (it reads each operation's scope from the OpenAPI document and the token's
//! scopes from `/v1/token/self`). Paths under `/ui` other than the four assets are answered
//! like any unknown path (404, or 401 without a valid token when ACLs are on): the UI routes
//! between its pages with the URL fragment (`/ui#/services`), never with paths.
//!
//! Every asset is sent with its content type, a strict Content-Security-Policy (scripts,
//! styles, images and fetches from this origin only; no inline script or style; no framing),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and
//! `Cache-Control: no-cache` with a strong `ETag`, so a browser revalidates (304) and never
//! runs a stale script after the node is upgraded.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, bearer};
use crate::api::Problem;

/// The Content-Security-Policy of every UI asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// Strong validator: FNV-1a 64 of the body, computed at compile time.
    etag: u64,
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../ui/", $file));
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: nexus_gossip::mix::fnv1a64(nexus_gossip::mix::FNV1A64_OFFSET, BODY),
        }
    }};
}

const PAGE: Asset = asset!("index.html", "text/html; charset=utf-8");
const SCRIPT: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const STYLESHEET: Asset = asset!("app.css", "text/css; charset=utf-8");
const ICON: Asset = asset!("favicon.svg", "image/svg+xml");

/// The asset, or 304 when the request's `If-None-Match` names its current version.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    // The ETag is 18 visible ASCII characters: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The web UI (an HTML page; its views are chosen by the URL fragment, e.g. `/ui#/services`).
#[utoipa::path(get, path = "/ui", tag = "ui",
    responses((status = 200, description = "The web UI's page", content_type = "text/html"),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub(super) async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

/// The web UI's script (one ES module).
#[utoipa::path(get, path = "/ui/app.js", tag = "ui",
    responses((status = 200, description = "JavaScript module", content_type = "text/javascript"),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub(super) async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

/// The web UI's stylesheet.
#[utoipa::path(get, path = "/ui/app.css", tag = "ui",
    responses((status = 200, description = "Stylesheet", content_type = "text/css"),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub(super) async fn stylesheet(headers: HeaderMap) -> Response {
    serve(&STYLESHEET, &headers)
}

/// The web UI's icon.
#[utoipa::path(get, path = "/ui/favicon.svg", tag = "ui",
    responses((status = 200, description = "SVG icon", content_type = "image/svg+xml"),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub(super) async fn icon(headers: HeaderMap) -> Response {
    serve(&ICON, &headers)
}

/// `GET /v1/token/self`: the token the request carries.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct TokenSelf {
    /// Whether this node checks tokens (it has an `admin_token`). When false every request is
    /// allowed and the other members are absent.
    pub acl: bool,
    /// The token's accessor id (`bootstrap` for the node's admin_token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `stored`, `bootstrap` or `node-internal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The scopes it holds (`management` implies every other scope).
    pub scopes: Vec<String>,
}

/// The calling token: accessor, description and scopes (what a client such as the web UI may
/// offer its user); with ACLs off, `acl: false` and no token.
#[utoipa::path(get, path = "/v1/token/self", tag = "acl",
    responses((status = 200, body = TokenSelf), (status = 401, body = Problem),
              (status = 403, body = Problem)))]
pub(super) async fn token_self(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<TokenSelf>, Problem> {
    if !s.ctx.acl.enabled() {
        return Ok(axum::Json(TokenSelf {
            acl: false,
            accessor: None,
            description: None,
            kind: None,
            scopes: Vec::new(),
        }));
    }
    // The access middleware has authenticated this token already; a revocation in between is
    // answered as the next request would be.
    let identity = bearer(&headers)
        .ok()
        .and_then(|secret| s.ctx.acl.authenticate(secret))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "the bearer token is not valid (unknown or revoked)",
            )
        })?;
    let view = s
        .ctx
        .acl
        .list()
        .into_iter()
        .find(|t| t.accessor == identity.accessor);
    Ok(axum::Json(TokenSelf {
        acl: true,
        description: view.as_ref().map(|v| v.description.clone()),
        kind: view.map(|v| v.kind.to_owned()),
        scopes: identity
            .scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        accessor: Some(identity.accessor),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_type_policy_and_validator() {
        let response = serve(&SCRIPT, &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let etag = h[header::ETAG].clone();

        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag.clone());
        let response = serve(&SCRIPT, &again);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], etag);

        let mut stale = HeaderMap::new();
        stale.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve(&SCRIPT, &stale).status(), StatusCode::OK);
        assert_ne!(PAGE.etag, SCRIPT.etag);
    }

    /// The page loads only same-origin assets by absolute path, and holds no inline script or
    /// style (the policy would block them).
    #[test]
    fn the_page_needs_nothing_the_policy_blocks() {
        let page = std::str::from_utf8(PAGE.body).expect("utf-8");
        for needed in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
            assert!(page.contains(needed), "{needed}");
        }
        assert!(!page.contains("style="), "inline style");
        assert!(!page.contains("<style"), "inline stylesheet");
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').expect("tag end")];
            assert!(tag.contains("src=\"/ui/"), "inline script: <script{tag}>");
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        let script = std::str::from_utf8(SCRIPT.body).expect("utf-8");
        assert!(
            !script.contains("innerHTML"),
            "the script builds DOM nodes, not HTML text"
        );
        assert!(!script.contains("eval("));
    }
}
