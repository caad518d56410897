//! The mock services of the pipeline, the same logic behind every protocol: each answers fixed
//! data after sleeping its service time (a tokio sleep, so with tokio's 1 ms timer a service
//! time of 2 ms takes 2–3 ms; 0 ms does not sleep at all).
//!
//! - **router**: any prompt → the name of the model ([`MODEL`]);
//! - **embedder**: any text → a fixed vector of `embed_dim` floats;
//! - **LLM**: `max_tokens` tokens, the first after the service time, the others
//!   `token_gap` apart (none by default);
//! - **decode**: a tensor (dtype and shape) → the number of bytes received, after checking that
//!   the data has the size the shape says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// The model the router names.
pub const MODEL: &str = "llama-3.1-8b-instruct";
/// Largest tensor a decode service accepts.
pub const TENSOR_BYTES_MAX: usize = 64 << 20;
/// Most tokens one generation streams.
pub const TOKENS_MAX: u32 = 100_000;

/// The four services of a pipeline, in the order a pipeline calls them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Route,
    Embed,
    Llm,
    Decode,
}

impl Hop {
    pub const ALL: [Hop; 4] = [Hop::Route, Hop::Embed, Hop::Llm, Hop::Decode];

    /// The service's host name (an A record in the resolver the cold client asks).
    pub fn host(self) -> &'static str {
        match self {
            Hop::Route => "router.pipeline.test",
            Hop::Embed => "embedder.pipeline.test",
            Hop::Llm => "llm.pipeline.test",
            Hop::Decode => "decode.pipeline.test",
        }
    }

    /// Name of a server thread of this service.
    pub fn thread(self, family: &str) -> String {
        let service = match self {
            Hop::Route => "router",
            Hop::Embed => "embedder",
            Hop::Llm => "llm",
            Hop::Decode => "decode",
        };
        format!("{family}-{service}")
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

const WORDS: [&str; 16] = [
    " the", " model", " routes", " each", " request", " to", " a", " service", " that", " can",
    " answer", " it", " within", " its", " budget", ".",
];

/// The text of token `i`.
pub fn token_text(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// The embedder's fixed answer.
pub fn embedding(dim: usize) -> Vec<f32> {
    (0..dim).map(|i| (i as f32 * 0.37).sin() * 0.05).collect()
}

/// Bytes per element of a tensor dtype.
pub fn dtype_bytes(dtype: &str) -> Option<usize> {
    match dtype {
        "f16" | "bf16" => Some(2),
        "f32" => Some(4),
        _ => None,
    }
}

/// What every service does, shared by all server threads of all protocols.
#[derive(Debug)]
pub struct Behaviour {
    service_us: AtomicU64,
    token_gap: Duration,
    embedding: Vec<f32>,
}

impl Behaviour {
    pub fn new(embed_dim: usize, token_gap: Duration) -> Behaviour {
        Behaviour {
            service_us: AtomicU64::new(0),
            token_gap,
            embedding: embedding(embed_dim),
        }
    }

    /// Sets the service time of every service (between runs).
    pub fn set_service_time(&self, t: Duration) {
        self.service_us
            .store(t.as_micros() as u64, Ordering::Relaxed);
    }

    async fn work(&self) {
        let t = Duration::from_micros(self.service_us.load(Ordering::Relaxed));
        if !t.is_zero() {
            tokio::time::sleep(t).await;
        }
    }

    /// The router: names the model.
    pub async fn route(&self, _prompt: &str) -> &'static str {
        self.work().await;
        MODEL
    }

    /// The embedder: the fixed vector.
    pub async fn embed(&self, _text: &str) -> Vec<f32> {
        self.work().await;
        self.embedding.clone()
    }

    /// The LLM: after the service time, a task sends `item(i, text)` for every token (then
    /// `last`, if any) into the returned channel, `token_gap` apart.
    pub async fn generate<T: Send + 'static>(
        &self,
        tokens: u32,
        item: impl Fn(u32, &'static str) -> T + Send + 'static,
        last: Option<T>,
    ) -> mpsc::Receiver<T> {
        self.work().await;
        let (tx, rx) = mpsc::channel(64);
        let gap = self.token_gap;
        tokio::spawn(async move {
            for i in 0..tokens.min(TOKENS_MAX) {
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                if tx.send(item(i, token_text(i))).await.is_err() {
                    return;
                }
            }
            if let Some(last) = last {
                let _ = tx.send(last).await;
            }
        });
        rx
    }

    /// The decode service: checks the tensor's size against its dtype and shape, then
    /// acknowledges the bytes received.
    pub async fn handoff(&self, dtype: &str, shape: &[u64], len: usize) -> Result<u64, String> {
        let elem = dtype_bytes(dtype).ok_or_else(|| format!("unknown dtype {dtype:?}"))?;
        let expected = shape
            .iter()
            .try_fold(elem as u64, |n, d| n.checked_mul(*d))
            .ok_or("shape overflows")?;
        if expected != len as u64 {
            return Err(format!(
                "shape {shape:?} of {dtype} is {expected} B, got {len} B"
            ));
        }
        self.work().await;
        Ok(len as u64)
    }
}
