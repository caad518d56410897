//! Any bytes as an inbound CA link stream (what an authenticated peer sends after the TLS
//! handshake): frames are read with the listener's own reader, each payload is classified by
//! the listener's prefix check and decoded as a request. Never panics; a frame read re-encodes
//! to the bytes it came from; a payload the prefix check lets through as a client request or a
//! membership change decodes (if it decodes at all) as exactly that kind, never as a Raft RPC.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nexus_trust::raft::MessageKind;
use nexus_trust::raft::wire::{self, WireRequest};

/// Small, so the size checks are reached often.
const FRAME_BYTES_MAX: u32 = 64 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn check_payload(payload: &[u8]) {
    let framed = wire::request_kind(payload);
    if let Ok(req) = serde_json::from_slice::<WireRequest>(payload) {
        if framed != MessageKind::Raft {
            assert_eq!(req.kind(), framed, "prefix check understated the request's kind");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut rest = data;
        loop {
            let before = rest;
            match wire::read_frame(&mut rest, FRAME_BYTES_MAX).await {
                Ok(Some((id, payload))) => {
                    let used = before.len() - rest.len();
                    let again = wire::encode_frame(id, &payload, FRAME_BYTES_MAX)
                        .expect("a frame that was read re-encodes");
                    assert_eq!(again, before[..used]);
                    check_payload(&payload);
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
    // The payload check on its own, without a frame around it.
    check_payload(data);
});
