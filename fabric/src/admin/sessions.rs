//! NexStream session endpoints: the node's sessions (`GET /v1/sessions`) and probes over them
//! (`POST /v1/sessions/probe`). Handlers talk to the session actor by message; a node without a
//! data plane runs no sessions and answers 409.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use nexus_actors::session_actor::{PROBE_BYTES_MAX, PROBE_COUNT_MAX};
use nexus_actors::{ProbeError, ProbeRequest, ProbeResult, SessionMsg, SessionView};
use nexus_stream::Mode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, ask, ask_within, member_views, parse_json};
use crate::api::Problem;

/// Longest probe the API runs (its answer waits for it).
pub const PROBE_TIMEOUT_MS_MAX: u64 = 60_000;

/// Counters of one delivery mode on one session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ModeCountersDto {
    /// Messages sent (copies of probabilistic datagrams not counted).
    pub sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Messages delivered to this node.
    pub delivered: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Dropped on send: expired, pushed out of a full queue, thinned, or reset at a deadline.
    pub dropped_send: u64,
    /// Dropped on receive: expired, duplicate, or reset by the peer.
    pub dropped_recv: u64,
    /// Streams of this mode open now.
    pub open_streams: u64,
}

/// One NexStream session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SessionDto {
    /// The session's number on this node.
    pub id: u64,
    /// The peer's node id (hex), once its handshake proved it.
    pub peer: Option<String>,
    /// The peer's member name, if known.
    pub peer_name: Option<String>,
    /// Whether this node opened the session.
    pub client: bool,
    /// Whether the peer's MIC verified (the session carries application data).
    pub established: bool,
    /// The peer's MIC serial.
    pub mic_serial: Option<u64>,
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Congestion window, bytes (one controller for all modes).
    pub cwnd_bytes: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Milliseconds since the session last carried application traffic.
    pub idle_ms: u64,
    /// Counters per mode: `ro`, `ru`, `be`, `pr`.
    pub modes: BTreeMap<String, ModeCountersDto>,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Sessions {
    /// Every session, in id order.
    pub sessions: Vec<SessionDto>,
}

/// `POST /v1/sessions/probe`: send numbered messages to a peer's session actor in one mode and
/// time their answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequestDto {
    /// The peer: its node id (64 hex digits) or its member name.
    pub peer: String,
    /// `ro`, `ru`, `be` or `pr`.
    #[schema(pattern = "^(ro|ru|be|pr)$")]
    pub mode: String,
    /// Messages to send, 1–10000 (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub count: Option<u32>,
    /// Bytes per message, 16 to 16 MiB (default 1024).
    #[serde(default)]
    #[schema(minimum = 16, maximum = 16_777_216)]
    pub bytes: Option<usize>,
    /// Delivery probability of each direction for `pr` (only), in (0, 1] (default 1).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub probability: Option<f64>,
    /// How long to wait for the answers, ms, 1–60000 (default 5000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 60_000)]
    pub timeout_ms: Option<u64>,
}

/// What a probe measured.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProbeResponse {
    /// The peer's node id (hex).
    pub peer: String,
    /// The mode probed.
    pub mode: String,
    /// The session actor's measurement.
    #[serde(flatten)]
    #[schema(inline)]
    pub probe: ProbeResult,
}

fn mode_by_name(name: &str) -> Option<Mode> {
    Mode::ALL.into_iter().find(|m| m.name() == name)
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-probe",
        "Invalid probe",
        detail,
    )
}

/// Sessions need the data plane: without one the node runs no session actor (409).
fn require_dataplane(s: &AppState) -> Result<(), Problem> {
    if s.ctx.node.dataplane.is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-dataplane",
            "No data plane",
            "NexStream sessions travel through the data plane; start the node with --dataplane",
        ));
    }
    Ok(())
}

fn session_dto(v: SessionView, names: &BTreeMap<[u8; 32], String>) -> SessionDto {
    let s = v.stats;
    SessionDto {
        id: s.id.0,
        peer: s.peer.map(hex::encode),
        peer_name: s.peer.and_then(|p| names.get(&p).cloned()),
        client: s.client,
        established: s.established,
        mic_serial: s.mic_serial,
        rtt_us: s.rtt_us,
        cwnd_bytes: s.cwnd_bytes,
        bytes_sent: s.udp_bytes_sent,
        bytes_received: s.udp_bytes_received,
        packets_sent: s.sent_packets,
        packets_lost: s.lost_packets,
        idle_ms: v.idle_ms,
        modes: Mode::ALL
            .into_iter()
            .map(|m| {
                let c = s.modes[m.index()];
                (
                    m.name().to_owned(),
                    ModeCountersDto {
                        sent: c.sent,
                        bytes_sent: c.bytes_sent,
                        delivered: c.delivered,
                        bytes_delivered: c.bytes_delivered,
                        dropped_send: c.dropped_send,
                        dropped_recv: c.dropped_recv,
                        open_streams: c.open_streams,
                    },
                )
            })
            .collect(),
    }
}

async fn member_names(s: &AppState) -> BTreeMap<[u8; 32], String> {
    member_views(s)
        .await
        .map(|views| {
            views
                .into_iter()
                .map(|v| (v.id.node_id().0, v.id.meta().name().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The node's NexStream sessions, one per peer: peer, MIC serial, RTT, congestion window, bytes,
/// packets lost and counters per delivery mode.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    responses((status = 200, body = Sessions), (status = 409, body = Problem),
              (status = 503, body = Problem)))]
pub(super) async fn list(State(s): State<AppState>) -> Result<axum::Json<Sessions>, Problem> {
    require_dataplane(&s)?;
    let views = ask(&s, SessionMsg::List).await?;
    let names = member_names(&s).await;
    Ok(axum::Json(Sessions {
        sessions: views.into_iter().map(|v| session_dto(v, &names)).collect(),
    }))
}

/// Exchanges numbered messages with a peer's session actor in one delivery mode (opening the
/// session first if needed) and reports round trips: a ping over the data path.
#[utoipa::path(post, path = "/v1/sessions/probe", tag = "sessions",
    request_body(content = ProbeRequestDto, content_type = "application/json"),
    responses((status = 200, body = ProbeResponse), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem),
              (status = 502, body = Problem), (status = 503, body = Problem)))]
pub(super) async fn probe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ProbeResponse>, Problem> {
    let req: ProbeRequestDto = parse_json(&headers, body)?;
    require_dataplane(&s)?;
    let mode = mode_by_name(&req.mode)
        .ok_or_else(|| invalid(format!("mode: {:?} is not one of ro, ru, be, pr", req.mode)))?;
    let count = req.count.unwrap_or(10);
    if !(1..=PROBE_COUNT_MAX).contains(&count) {
        return Err(invalid(format!("count: must be 1 to {PROBE_COUNT_MAX}")));
    }
    let bytes = req.bytes.unwrap_or(1024);
    if !(16..=PROBE_BYTES_MAX).contains(&bytes) {
        return Err(invalid(format!("bytes: must be 16 to {PROBE_BYTES_MAX}")));
    }
    if let Some(p) = req.probability
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(invalid("probability: must be in (0, 1]"));
    }
    if req.probability.is_some() && mode != Mode::Probabilistic {
        return Err(invalid("probability: only for mode pr"));
    }
    let timeout_ms = req.timeout_ms.unwrap_or(5000);
    if !(1..=PROBE_TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(invalid(format!(
            "timeout_ms: must be 1 to {PROBE_TIMEOUT_MS_MAX}"
        )));
    }
    let names = member_names(&s).await;
    let peer = nexus_actors::parse_node_id(&req.peer)
        .or_else(|| {
            names
                .iter()
                .find(|(_, name)| **name == req.peer)
                .map(|(id, _)| *id)
        })
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-peer",
                "Unknown peer",
                format!(
                    "peer: {:?} is neither a node id nor a member's name",
                    req.peer
                ),
            )
        })?;
    let request = ProbeRequest {
        peer,
        mode,
        count,
        bytes,
        probability: req.probability,
        timeout: Duration::from_millis(timeout_ms),
    };
    // The probe's own timeout, plus room for a handshake.
    let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(15);
    let result = ask_within(&s, wait, |r| SessionMsg::Probe(Box::new(request), r)).await?;
    match result {
        Ok(probe) => Ok(axum::Json(ProbeResponse {
            peer: hex::encode(peer),
            mode: mode.name().to_owned(),
            probe,
        })),
        Err(ProbeError::UnknownPeer(p)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-peer",
            "Unknown peer",
            format!("peer {p}… is not an alive member with a data plane"),
        )),
        Err(ProbeError::Refused(why)) => Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "session-refused",
            "Session refused",
            why,
        )),
        Err(ProbeError::Invalid(why)) => Err(invalid(why)),
        Err(ProbeError::Unavailable(why)) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "actor-unavailable",
            "Sessions unavailable",
            why,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names() {
        assert_eq!(mode_by_name("ro"), Some(Mode::ReliableOrdered));
        assert_eq!(mode_by_name("pr"), Some(Mode::Probabilistic));
        assert_eq!(mode_by_name("RO"), None);
        assert_eq!(mode_by_name(""), None);
    }
}
