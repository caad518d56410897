//! Gossip keyring endpoints (scope `operator`): list the keys every member holds
//! (`GET /v1/keyring`) and change them fabric-wide (`POST /v1/keyring/install`, `/use`,
//! `/remove`), as `serf keys` does. The node applies the operation to its own keyring, the
//! gossip actor sends it sealed to every alive or suspect member and collects their answers
//! until the deadline; the answer says, per key, how many members hold it and which members
//! refused or did not answer. A node without gossip encryption answers 409.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use nexus_actors::{GossipMsg, KEYRING_TIMEOUT_MAX};
use nexus_gossip::{KeyringError, KeyringOp, KeyringSummary, SecretKey};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ACTOR_CALL_TIMEOUT, AppState, TypedQuery, ask_within, parse_json};
use crate::api::Problem;

/// How long an operation waits for the members' answers unless the request says otherwise.
pub const KEYRING_TIMEOUT_MS_DEFAULT: u64 = 3_000;

/// Body of `POST /v1/keyring/install`, `/use` and `/remove`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyringRequestDto {
    /// The key: base64 of 32 bytes (`nexus keygen`).
    #[schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    pub key: String,
    /// How long to wait for the members' answers, ms (default 3000, at most 30000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 30_000)]
    pub timeout_ms: Option<u64>,
}

/// Query of `GET /v1/keyring`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyringQueryDto {
    /// How long to wait for the members' answers, ms (default 3000, at most 30000).
    #[param(minimum = 1, maximum = 30_000)]
    pub timeout_ms: Option<u64>,
}

/// One key and how many answering members hold it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KeyCountDto {
    /// The key, base64.
    pub key: String,
    /// Members that hold it.
    pub members: usize,
    /// Members that seal with it (their primary key).
    pub primary: usize,
}

/// A member that refused the operation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KeyringRefusalDto {
    /// Member name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Why.
    pub error: String,
}

/// A member that did not answer in time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KeyringSilentDto {
    /// Member name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
}

/// The answer of every keyring endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KeyringAnswer {
    /// `list`, `install`, `use` or `remove`.
    pub op: String,
    /// Members asked, this node included.
    pub members: usize,
    /// Members that answered (refusals included).
    pub responded: usize,
    /// Every key an answering member holds, most widely held first.
    pub keys: Vec<KeyCountDto>,
    /// Members that refused the operation.
    pub refused: Vec<KeyringRefusalDto>,
    /// Members that did not answer before the deadline.
    pub no_answer: Vec<KeyringSilentDto>,
    /// Every member answered and none refused.
    pub complete: bool,
}

impl KeyringAnswer {
    /// The answer for a summary.
    pub fn from_summary(s: &KeyringSummary) -> Self {
        let mut keys: Vec<KeyCountDto> = s
            .keys
            .iter()
            .map(|(key, members)| KeyCountDto {
                key: key.to_base64(),
                members: *members,
                primary: s.primary.get(key).copied().unwrap_or(0),
            })
            .collect();
        // Stable: keys tie-broken by their base64 text (the map's order).
        keys.sort_by(|a, b| {
            (b.primary, b.members)
                .cmp(&(a.primary, a.members))
                .then_with(|| a.key.cmp(&b.key))
        });
        KeyringAnswer {
            op: s.op.name().to_owned(),
            members: s.members,
            responded: s.responded,
            keys,
            refused: s
                .refused
                .iter()
                .map(|r| KeyringRefusalDto {
                    name: r.name.clone(),
                    addr: r.addr.to_string(),
                    error: r.error.clone(),
                })
                .collect(),
            no_answer: s
                .no_answer
                .iter()
                .map(|(name, addr)| KeyringSilentDto {
                    name: name.clone(),
                    addr: addr.to_string(),
                })
                .collect(),
            complete: s.refused.is_empty() && s.no_answer.is_empty(),
        }
    }
}

fn timeout(ms: Option<u64>) -> Result<Duration, Problem> {
    let ms = ms.unwrap_or(KEYRING_TIMEOUT_MS_DEFAULT);
    let max = KEYRING_TIMEOUT_MAX.as_millis() as u64;
    if ms == 0 || ms > max {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request",
            format!("timeout_ms must be between 1 and {max}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

async fn run(s: &AppState, op: KeyringOp, wait: Duration) -> Result<Json<KeyringAnswer>, Problem> {
    let summary = ask_within(s, wait + ACTOR_CALL_TIMEOUT, |reply| {
        GossipMsg::Keyring(op, wait, reply)
    })
    .await?;
    let not_enabled = KeyringError::NotEnabled.to_string();
    if summary.members == 1
        && summary
            .refused
            .first()
            .is_some_and(|r| r.error == not_enabled)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "encryption-not-enabled",
            "Gossip encryption is not enabled",
            "this node runs gossip in plaintext: set [gossip] encrypt_key (see `nexus keygen`) \
             and restart it to have a keyring",
        ));
    }
    Ok(Json(KeyringAnswer::from_summary(&summary)))
}

fn op_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(SecretKey, Duration), Problem> {
    let request: KeyringRequestDto = parse_json(headers, body)?;
    let key = SecretKey::parse(&request.key).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            format!("key: {e}"),
        )
    })?;
    Ok((key, timeout(request.timeout_ms)?))
}

/// The keys every member holds (a `list` operation sent to every member).
#[utoipa::path(get, path = "/v1/keyring", tag = "keyring", params(KeyringQueryDto),
    responses((status = 200, description = "Keys per member count", body = KeyringAnswer),
              (status = 409, description = "Gossip encryption is off on this node", body = Problem),
              (status = 422, description = "Bad timeout", body = Problem)))]
pub(super) async fn list(
    State(s): State<AppState>,
    TypedQuery(query): TypedQuery<KeyringQueryDto>,
) -> Result<Json<KeyringAnswer>, Problem> {
    run(&s, KeyringOp::List, timeout(query.timeout_ms)?).await
}

/// Install a key on every member (it opens datagrams at once, seals only once used).
#[utoipa::path(post, path = "/v1/keyring/install", tag = "keyring", request_body = KeyringRequestDto,
    responses((status = 200, description = "Per-key member counts, refusals and silent members", body = KeyringAnswer),
              (status = 409, description = "Gossip encryption is off on this node", body = Problem),
              (status = 422, description = "Not a key", body = Problem)))]
pub(super) async fn install(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeyringAnswer>, Problem> {
    let (key, wait) = op_body(&headers, body)?;
    run(&s, KeyringOp::Install(key), wait).await
}

/// Make an installed key every member's primary (the key that seals).
#[utoipa::path(post, path = "/v1/keyring/use", tag = "keyring", request_body = KeyringRequestDto,
    responses((status = 200, description = "Per-key member counts, refusals and silent members", body = KeyringAnswer),
              (status = 409, description = "Gossip encryption is off on this node", body = Problem),
              (status = 422, description = "Not a key", body = Problem)))]
pub(super) async fn use_key(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeyringAnswer>, Problem> {
    let (key, wait) = op_body(&headers, body)?;
    run(&s, KeyringOp::Use(key), wait).await
}

/// Remove a key from every member (refused by a member whose primary it is).
#[utoipa::path(post, path = "/v1/keyring/remove", tag = "keyring", request_body = KeyringRequestDto,
    responses((status = 200, description = "Per-key member counts, refusals and silent members", body = KeyringAnswer),
              (status = 409, description = "Gossip encryption is off on this node", body = Problem),
              (status = 422, description = "Not a key", body = Problem)))]
pub(super) async fn remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<KeyringAnswer>, Problem> {
    let (key, wait) = op_body(&headers, body)?;
    run(&s, KeyringOp::Remove(key), wait).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nexus_gossip::MemberOutcome;

    use super::*;

    #[test]
    fn answer_orders_keys_and_flags_incomplete_runs() {
        let k1 = SecretKey::from_bytes([1; 32]);
        let k2 = SecretKey::from_bytes([2; 32]);
        let addr = "127.0.0.1:1".parse().expect("addr");
        let summary = KeyringSummary {
            op: KeyringOp::Remove(k1.clone()),
            members: 3,
            responded: 2,
            keys: BTreeMap::from([(k1.clone(), 1), (k2.clone(), 2)]),
            primary: BTreeMap::from([(k2.clone(), 1), (k1.clone(), 1)]),
            refused: vec![MemberOutcome {
                name: "b".into(),
                addr,
                error: "cannot remove the primary key; use another key first".into(),
            }],
            no_answer: vec![("c".into(), addr)],
        };
        let a = KeyringAnswer::from_summary(&summary);
        assert_eq!(a.op, "remove");
        assert_eq!(a.keys[0].key, k2.to_base64());
        assert_eq!((a.keys[0].members, a.keys[0].primary), (2, 1));
        assert_eq!(a.refused[0].addr, "127.0.0.1:1");
        assert_eq!(a.no_answer[0].name, "c");
        assert!(!a.complete);
        assert!(timeout(Some(0)).is_err());
        assert!(timeout(Some(30_001)).is_err());
        assert_eq!(timeout(None).ok(), Some(Duration::from_millis(3_000)));
    }
}
