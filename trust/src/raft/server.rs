//! Inbound side of the CA protocol: the listener serving Raft RPCs and client requests.
//!
//! Each accepted connection gets a reader (frames in), a writer (frames out) and one task per
//! request, so a slow client write never holds up heartbeats on the same connection. Limits:
//! `CONNECTIONS_MAX` connections, `CONN_INFLIGHT_MAX` requests in flight per connection, frames
//! up to the node's `frame_bytes_max`. A frame the server cannot use gets a clear complaint:
//! a payload that is not a request gets [`WireResponse::BadRequest`] for its id and the
//! connection continues; a length prefix that is too large or too small gets
//! [`WireResponse::BadFrame`] with id 0 and the connection is closed (the stream cannot be
//! resynchronised). Neither affects other connections or the node.
//!
//! On a transport that authenticates peers ([`Transport::policy`]) every request is checked
//! against the policy before it is decoded: the kind comes from the payload's first bytes
//! ([`wire::request_kind`]) and the key is the one the peer proved in the handshake; once
//! decoded, the request's own kind must be the same. A refused request gets
//! [`WireResponse::Refused`] for its id, counts in `frames_refused`, and the connection
//! continues (its other requests may be allowed).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::network::LINK_QUEUE_MAX;
use super::node::Core;
use super::policy::MessageKind;
use super::transport::Transport;
use super::wire::{self, BAD_FRAME_ID, ClientReply, FrameError, WireRequest, WireResponse};

/// Connections served at once; further connections are closed on accept.
pub const CONNECTIONS_MAX: usize = 256;
/// Requests of one connection handled at once; the reader waits for a slot beyond this.
pub const CONN_INFLIGHT_MAX: usize = 256;
/// How long a closing connection may take to flush its last frame.
const CLOSE_FLUSH_MS: u64 = 1_000;
/// Bytes a closing connection reads and discards at most (see `serve_conn`).
const CLOSE_DRAIN_BYTES_MAX: usize = 1 << 20;

/// Accepts connections until the task is aborted (dropping it closes every connection).
pub(crate) async fn serve<T: Transport>(mut listener: T::Listener, core: Arc<Core<T>>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut conns = JoinSet::new();
    loop {
        let accepted = T::accept(&mut listener).await;
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = CONNECTIONS_MAX, "CA listener full; closing connection");
                    continue;
                };
                let core = core.clone();
                conns.spawn(async move {
                    serve_conn::<T>(stream, &peer, core).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "CA listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn encode_response(id: u64, resp: &WireResponse, frame_bytes_max: u32) -> Option<Vec<u8>> {
    let payload = match serde_json::to_vec(resp) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "CA response does not encode");
            return None;
        }
    };
    match wire::encode_frame(id, &payload, frame_bytes_max) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::warn!(error = %e, "CA response does not fit in a frame");
            let fallback = WireResponse::Client(ClientReply::Failed(format!(
                "response does not fit in a frame: {e}"
            )));
            let payload = serde_json::to_vec(&fallback).ok()?;
            wire::encode_frame(id, &payload, frame_bytes_max).ok()
        }
    }
}

/// Whether the peer holding `key` may send a request of `kind` (see the module docs).
fn admit<T: Transport>(
    core: &Core<T>,
    key: Option<&[u8; 32]>,
    kind: MessageKind,
) -> Result<(), String> {
    let Some(policy) = &core.policy else {
        return Ok(());
    };
    let Some(key) = key else {
        return Err("the link did not authenticate a node key".into());
    };
    policy
        .admits(key, kind)
        .map_err(|refusal| refusal.to_string())
}

/// Answers request `id` with [`WireResponse::Refused`] and counts it.
async fn refuse<T: Transport>(
    core: &Core<T>,
    tx: &mpsc::Sender<Vec<u8>>,
    peer: &str,
    id: u64,
    reason: String,
) {
    if let Some(policy) = &core.policy {
        policy
            .stats()
            .frames_refused
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(%peer, %reason, "CA listener: request refused");
    if let Some(frame) = encode_response(id, &WireResponse::Refused(reason), core.frame_bytes_max) {
        let _ = tx.send(frame).await;
    }
}

async fn serve_conn<T: Transport>(stream: T::Stream, peer: &str, core: Arc<Core<T>>) {
    let frame_bytes_max = core.frame_bytes_max;
    let peer_key = T::peer_key(&stream);
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE_MAX);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(wr);
        while let Some(frame) = rx.recv().await {
            if w.write_all(&frame).await.is_err() {
                return;
            }
            while let Ok(frame) = rx.try_recv() {
                if w.write_all(&frame).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
        // Every sender is gone: send FIN so the peer reads our last frame, then EOF.
        let _ = w.shutdown().await;
    });
    let inflight = Arc::new(Semaphore::new(CONN_INFLIGHT_MAX));
    let mut handlers = JoinSet::new();
    loop {
        let frame = wire::read_frame(&mut rd, frame_bytes_max).await;
        while handlers.try_join_next().is_some() {}
        match frame {
            Ok(None) => break,
            Ok(Some((id, payload))) => {
                let kind = wire::request_kind(&payload);
                if let Err(reason) = admit(&core, peer_key.as_ref(), kind) {
                    refuse(&core, &tx, peer, id, reason).await;
                    continue;
                }
                let req: WireRequest = match serde_json::from_slice(&payload) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "CA listener: undecodable request");
                        let resp =
                            WireResponse::BadRequest(format!("request does not decode: {e}"));
                        if let Some(frame) = encode_response(id, &resp, frame_bytes_max) {
                            let _ = tx.send(frame).await;
                        }
                        continue;
                    }
                };
                // The classification by prefix and the decoded request must agree; a payload
                // built to pass as one kind and decode as another is refused.
                if core.policy.is_some() && req.kind() != kind {
                    let reason =
                        format!("request decodes as {} but was framed as {kind}", req.kind());
                    refuse(&core, &tx, peer, id, reason).await;
                    continue;
                }
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    break;
                };
                let (core, tx) = (core.clone(), tx.clone());
                handlers.spawn(async move {
                    let resp = core.handle(req).await;
                    if let Some(frame) = encode_response(id, &resp, frame_bytes_max) {
                        let _ = tx.send(frame).await;
                    }
                    drop(permit);
                });
            }
            Err(e @ (FrameError::TooLarge { .. } | FrameError::TooShort { .. })) => {
                tracing::warn!(%peer, error = %e, "CA listener: bad frame; closing connection");
                let resp = WireResponse::BadFrame(e.to_string());
                if let Some(frame) = encode_response(BAD_FRAME_ID, &resp, frame_bytes_max) {
                    let _ = tx.send(frame).await;
                }
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "CA listener: connection ended");
                break;
            }
        }
    }
    handlers.shutdown().await;
    drop(tx);
    // The writer ends once every sender is gone; give it a moment to flush the last frame.
    let abort = writer.abort_handle();
    let linger = async {
        let _ = writer.await;
        // Closing with unread input makes the kernel send RST, which can destroy our last frame
        // (e.g. a BadFrame complaint) before the peer reads it: drain what the peer still sends,
        // within bounds.
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < CLOSE_DRAIN_BYTES_MAX {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    if tokio::time::timeout(Duration::from_millis(CLOSE_FLUSH_MS), linger)
        .await
        .is_err()
    {
        abort.abort();
    }
}
