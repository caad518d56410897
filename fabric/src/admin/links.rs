//! Service links (`GET /v1/services/{id}/link`): a local service holds one open HTTP request to
//! its node for as long as it runs, and the node withdraws the service when that connection
//! closes, so a service whose process died leaves the registry (and the forwarding tables) at
//! once instead of when its lease runs out.
//!
//! The answer is a stream of heartbeat lines, one every [`LINK_HEARTBEAT`]: writing them is how
//! the node notices a peer that is gone (a killed process's socket is closed by its kernel; the
//! node's next write or two fail). When the connection closes, the node withdraws the service if
//! all of these hold:
//! - no newer link for the same service id was opened since (a service that reconnects is not
//!   withdrawn by its old link);
//! - the registered descriptor still carries the MIC serial it had when the link opened (a
//!   replacement process, which has a new certificate, is not withdrawn by its predecessor's
//!   link);
//! - the admin server is not stopping (an admin actor restart drops every connection without
//!   any service having died).
//!
//! Each withdrawal counts in `nexus_service_links_lost_total` and is logged (`WARN`); open links
//! are `nexus_service_links`. A service that is alive but hung keeps its link open: only its
//! lease (`ttl_s`) catches that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use nexus_actors::{RegistryMsg, Scope};
use nexus_registry::NodeError as RegistryError;

use super::{AppState, Problem, ask};

/// How often the node writes a heartbeat line on a service link. A dead peer is noticed within
/// about two of them.
pub const LINK_HEARTBEAT: Duration = Duration::from_millis(200);

/// The links open on one admin server (a new set per admin actor start).
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceLinks {
    /// Service id → the generation of its newest link.
    newest: Arc<Mutex<BTreeMap<String, u64>>>,
    next: Arc<AtomicU64>,
    /// Set when the admin server stops: links closed by that withdraw nothing.
    stopping: Arc<AtomicBool>,
}

impl ServiceLinks {
    /// The admin server is stopping: the links it drops are not lost services.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn open(&self, id: &str) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.newest).insert(id.to_owned(), generation);
        generation
    }

    /// Whether the link `generation` of `id` was the newest; forgets it if so.
    fn close(&self, id: &str, generation: u64) -> bool {
        let mut newest = lock(&self.newest);
        if newest.get(id) == Some(&generation) {
            newest.remove(id);
            true
        } else {
            false
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One open link; withdraws its service when dropped (the connection closed), as the module
/// doc says.
struct Link {
    state: AppState,
    id: String,
    generation: u64,
    mic_serial: Option<u64>,
}

impl Drop for Link {
    fn drop(&mut self) {
        let metrics = &self.state.ctx.admin_metrics;
        metrics.service_links.dec();
        let links = &self.state.links;
        if !links.close(&self.id, self.generation) || links.stopping.load(Ordering::Acquire) {
            return;
        }
        let state = self.state.clone();
        let id = std::mem::take(&mut self.id);
        let mic_serial = self.mic_serial;
        let lost = metrics.service_links_lost.clone();
        tokio::spawn(async move {
            let Ok(views) = ask(&state, |r| RegistryMsg::Services(Scope::Local, r)).await else {
                tracing::warn!(service = %id, "a service's link closed and the registry did not answer: left to its lease");
                return;
            };
            let same = views
                .iter()
                .any(|v| v.sad.id == id && v.sad.trust.mic_serial == mic_serial);
            if !same {
                return;
            }
            let key = id.clone();
            match ask(&state, |r| RegistryMsg::Deregister(key, r)).await {
                Ok(Ok(())) => {
                    lost.inc();
                    tracing::warn!(service = %id, "the service's link to its node closed: withdrawn");
                }
                Ok(Err(RegistryError::Unknown(_))) => {}
                Ok(Err(e)) => {
                    tracing::warn!(service = %id, error = %e, "a service's link closed; withdrawing it failed");
                }
                Err(_) => {
                    tracing::warn!(service = %id, "a service's link closed and the registry did not answer: left to its lease");
                }
            }
        });
    }
}

/// Hold a link for a service registered on this node: the answer is a stream of heartbeat
/// lines, and the node withdraws the service when the connection closes.
#[utoipa::path(get, path = "/v1/services/{id}/link", tag = "registry",
    params(("id" = String, Path, description = "Service id")),
    responses((status = 200, description = "Newline-delimited JSON: a first line naming the service and the heartbeat period, then an empty line every heartbeat, for as long as the connection is open", content_type = "application/x-ndjson"),
              (status = 404, body = Problem)))]
pub(super) async fn link(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let views = ask(&s, |r| RegistryMsg::Services(Scope::Local, r)).await?;
    let view = views.into_iter().find(|v| v.sad.id == id).ok_or_else(|| {
        Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown-service",
            "Unknown service",
            format!("no service {id:?} is registered on this node"),
        )
    })?;
    let generation = s.links.open(&id);
    s.ctx.admin_metrics.service_links.inc();
    let first = serde_json::json!({
        "service": id,
        "heartbeat_ms": LINK_HEARTBEAT.as_millis() as u64,
    });
    let link = Link {
        state: s.clone(),
        id,
        generation,
        mic_serial: view.sad.trust.mic_serial,
    };
    let first = Bytes::from(format!("{first}\n"));
    // The stream owns the link: when the server drops the answer (the connection closed), the
    // link drops with it.
    let beats = futures_util::stream::unfold((link, Some(first)), |(link, first)| async move {
        let chunk = match first {
            Some(first) => first,
            None => {
                tokio::time::sleep(LINK_HEARTBEAT).await;
                Bytes::from_static(b"\n")
            }
        };
        Some((Ok::<_, std::convert::Infallible>(chunk), (link, None)))
    });
    let mut response = Body::from_stream(beats).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
