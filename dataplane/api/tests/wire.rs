//! Seeded mutations of valid NexAPI messages and safetensors buffers: every decoder refuses
//! or decodes, never panics, and what decodes re-encodes to the same value (the properties
//! the fuzz targets in `fuzz/` check under libFuzzer).

use std::net::IpAddr;

use bytes::Bytes;
use nexus_api::wire::{
    ApiError, Candidate, DType, ErrorCode, Finish, Hello, HelloAck, KvBlock, Limits, Message,
    ModelMeta, Op, Request, ResolveAnswer, Response, StreamEnd, Tensor, TensorHeader, TensorSpec,
    Token,
};
use nexus_registry::Intent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn samples() -> Vec<Message> {
    let mut intent = Intent::new("llm.code");
    intent.min_context = Some(128_000);
    intent.max_latency_ms = Some(200);
    intent.require_mic = true;
    intent.modalities = vec!["text".into()];
    intent.k = 3;
    vec![
        Message::Hello(Hello {
            version_min: 1,
            version_max: 1,
            agent: "t".into(),
        }),
        Message::HelloAck(HelloAck {
            version: 1,
            service: "s".into(),
            models: vec![ModelMeta {
                name: "m".into(),
                platform: "p".into(),
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    dtype: DType::F32,
                    shape: vec![-1, 4],
                }],
                outputs: vec![TensorSpec {
                    name: "y".into(),
                    dtype: DType::F16,
                    shape: vec![1],
                }],
            }],
        }),
        Message::Request(Request {
            call: 1,
            op: Op::Stream,
            deadline_ms: 99,
            idempotency: Some([3; 16]),
            resume_from: Some(4),
            trace: Some(nexus_api::TraceContext {
                trace_id: [5; 16],
                span_id: [6; 8],
                flags: 0,
            }),
            model: "m".into(),
            payload: Bytes::from_static(b"prompt"),
        }),
        Message::Response(Response {
            call: 1,
            payload: Bytes::from_static(b"answer"),
        }),
        Message::Token(Token {
            seq: 1,
            id: 2,
            text: "tok".into(),
        }),
        Message::End(StreamEnd {
            tokens: 3,
            finish: Finish::Stop,
            prompt_tokens: 4,
        }),
        Message::Tensor(Tensor {
            header: TensorHeader {
                kv: Some(KvBlock { layer: 1, block: 2 }),
                ..TensorHeader::contiguous(5, "kv", DType::F32, &[2, 2])
            },
            data: Bytes::from(vec![7u8; 16]),
        }),
        Message::Resolve {
            call: 2,
            intent: Box::new(intent),
        },
        Message::Answer(ResolveAnswer {
            call: 2,
            routing_key: 77,
            considered: 3,
            candidates: vec![Candidate {
                service: "s".into(),
                node: [1; 32],
                host: Some(IpAddr::from([127, 0, 0, 1])),
                port: 9,
                stream: 0,
                score: 0.5,
                key: Some([2; 32]),
            }],
        }),
        Message::Error(ApiError::new(3, ErrorCode::ShapeMismatch, "bad")),
    ]
}

fn check(bytes: &[u8], limits: &Limits) {
    if let Ok(m) = Message::decode(&Bytes::copy_from_slice(bytes), limits) {
        let again = m.encode();
        assert_eq!(Message::decode(&again, limits).as_ref(), Ok(&m));
    }
}

#[test]
fn mutated_messages_never_panic_and_what_decodes_round_trips() {
    let limits = Limits {
        tensor_bytes_max: 1 << 16,
        payload_bytes_max: 1 << 16,
    };
    let mut rng = StdRng::seed_from_u64(0x4e58_4150);
    for sample in samples() {
        let valid = sample.encode().to_vec();
        check(&valid, &limits);
        for _ in 0..2_000 {
            let mut m = valid.clone();
            match rng.random_range(0..4) {
                0 => {
                    let i = rng.random_range(0..m.len());
                    m[i] = rng.random();
                }
                1 => {
                    let i = rng.random_range(0..m.len());
                    m[i] ^= 1 << rng.random_range(0..8);
                }
                2 => m.truncate(rng.random_range(0..m.len())),
                _ => {
                    let extra: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    let at = rng.random_range(0..=m.len());
                    m.splice(at..at, extra);
                }
            }
            check(&m, &limits);
        }
    }
    // Random bytes after a valid version byte reach every kind's decoder.
    for _ in 0..20_000 {
        let len = rng.random_range(0..96);
        let mut m: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if !m.is_empty() {
            m[0] = 1;
        }
        if m.len() > 1 {
            m[1] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7f][rng.random_range(0..10)];
        }
        check(&m, &limits);
    }
}

#[test]
fn mutated_safetensors_never_panic() {
    let t = Tensor {
        header: TensorHeader::contiguous(0, "w", DType::F32, &[2, 3]),
        data: Bytes::from(vec![1u8; 24]),
    };
    let valid = nexus_api::safetensors::write(&[t], None).expect("write");
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..5_000 {
        let mut m = valid.clone();
        let i = rng.random_range(0..m.len());
        m[i] = rng.random();
        if rng.random_bool(0.3) {
            m.truncate(rng.random_range(0..m.len()));
        }
        let _ = nexus_api::safetensors::read(&Bytes::from(m), 0, &Limits::default());
    }
}
