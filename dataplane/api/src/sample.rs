//! A sample model for demos, examples and tests: it answers a unary call with the request
//! bytes reversed, and streams a prompt back word by word at a fixed pace.
//! It reads a prompt as plain text or as an OpenAI chat request ([`prompt_of`]).

use std::time::Duration;

use bytes::Bytes;

use crate::service::{Call, Handler, TokenSink};
use crate::wire::{ApiError, DType, Finish, ModelMeta, TensorSpec};

/// The prompt in a payload: the last message's `content` of an OpenAI chat request (what the
/// node's gateway sends), else the payload as UTF-8 text.
pub fn prompt_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v["messages"]
                .as_array()?
                .last()?
                .get("content")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// Streams a prompt's words back, one token each `pace`; at most `max_tokens` tokens.
#[derive(Clone, Debug)]
pub struct EchoModel {
    /// The model name it answers to.
    pub name: String,
    /// Time between tokens.
    pub pace: Duration,
    /// Longest stream.
    pub max_tokens: u32,
}

impl EchoModel {
    /// A model called `name` streaming at `pace`, at most 256 tokens.
    pub fn new(name: impl Into<String>, pace: Duration) -> EchoModel {
        EchoModel {
            name: name.into(),
            pace,
            max_tokens: 256,
        }
    }
}

impl Handler for EchoModel {
    fn models(&self) -> Vec<ModelMeta> {
        vec![ModelMeta {
            name: self.name.clone(),
            platform: "nexus-sample".into(),
            inputs: vec![TensorSpec {
                name: "prompt".into(),
                dtype: DType::Bytes,
                shape: vec![-1],
            }],
            outputs: vec![TensorSpec {
                name: "text".into(),
                dtype: DType::Bytes,
                shape: vec![-1],
            }],
        }]
    }

    async fn infer(&self, call: Call) -> Result<Bytes, ApiError> {
        let mut out = call.payload.to_vec();
        out.reverse();
        Ok(Bytes::from(out))
    }

    async fn stream(&self, call: Call, mut tokens: TokenSink) -> Result<(Finish, u32), ApiError> {
        let prompt = prompt_of(&call.payload);
        let words: Vec<&str> = prompt.split_whitespace().collect();
        for (i, word) in words.iter().take(self.max_tokens as usize).enumerate() {
            if i > 0 && !self.pace.is_zero() {
                tokio::time::sleep(self.pace).await;
            }
            let text = if i == 0 {
                (*word).to_owned()
            } else {
                format!(" {word}")
            };
            tokens.send(i as u32, &text).await?;
        }
        let finish = if words.len() > self.max_tokens as usize {
            Finish::Length
        } else {
            Finish::Stop
        };
        Ok((finish, u32::try_from(words.len()).unwrap_or(u32::MAX)))
    }
}
