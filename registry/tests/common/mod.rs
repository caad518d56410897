//! Helpers shared by the integration tests: deterministic keys and descriptors.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use ed25519_dalek::SigningKey;
use nexus_registry::{Coord, NodeId, Sad, node_id_of};

/// A deterministic signing key for test node `i`.
pub fn key(i: u8) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[0] = i;
    seed[31] = 0xa5;
    SigningKey::from_bytes(&seed)
}

/// The node id of test node `i`.
pub fn node(i: u8) -> NodeId {
    node_id_of(&key(i))
}

/// A plausible LLM chat SAD.
pub fn chat(id: &str) -> Sad {
    let mut sad = Sad::new(id, "llm.chat");
    sad.endpoint.port = 9000;
    sad.model_family = "llama-3".into();
    sad.context_window = 32_768;
    sad.modalities = vec!["text".into()];
    sad.latency_ms_p50 = 120;
    sad.latency_ms_p99 = 400;
    sad.price_micros_per_1k = 500;
    sad.region = "eu-west".into();
    sad
}

/// A coordinate whose components are exact in f32 (so they survive the advert round trip).
pub fn coord(x: f64, y: f64) -> Coord {
    let mut c = Coord::default();
    c.vec[0] = x;
    c.vec[1] = y;
    c.error = 0.25;
    c.height = 0.0009765625;
    c
}

/// A SAD with every limit at its maximum (longest strings, most list entries).
pub fn maximal_sad() -> Sad {
    use nexus_registry::*;
    let s = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
    let mut sad = Sad::new(s(SERVICE_ID_BYTES_MAX, 'a'), "x");
    sad.tasks = (0..TASKS_MAX)
        .map(|i| format!("{}{i}", s(TASK_BYTES_MAX - 1, 't')))
        .collect();
    sad.model_family = s(MODEL_FAMILY_BYTES_MAX, 'f');
    sad.arch_hash = Some([0xab; 32]);
    sad.context_window = u32::MAX;
    sad.modalities = (0..MODALITIES_MAX)
        .map(|i| format!("{}{i}", s(MODALITY_BYTES_MAX - 1, 'm')))
        .collect();
    sad.max_output_tps = u32::MAX;
    sad.price_micros_per_1k = u64::MAX;
    sad.latency_ms_p50 = u32::MAX;
    sad.latency_ms_p99 = u32::MAX;
    sad.load.queue_depth = u32::MAX;
    sad.load.utilization_pct = 100;
    sad.region = s(REGION_BYTES_MAX, 'r');
    sad.zone = s(ZONE_BYTES_MAX, 'z');
    sad.trust.mic_serial = Some(u64::MAX);
    sad.trust.attestations = (0..ATTESTATIONS_MAX)
        .map(|i| format!("{}{i}", s(ATTESTATION_BYTES_MAX - 1, '#')))
        .collect();
    sad.ttl_s = TTL_S_MAX;
    sad.version = u64::MAX;
    sad
}
