//! The FAKE engine, for protocol benchmarks only: it runs no model. Every
//! answer is what COCOON's benchmark backend sends — 50 chunks of about 128
//! bytes and fixed usage (34 prompt, 11 cached, 100 completion, 10
//! reasoning tokens) — so a benchmark measures the network, not inference.
//! Served over HTTP (see [`crate::server`]) it is also the "direct"
//! baseline a benchmark compares the network against.

use std::time::Duration;

use crate::engine::{generation, Engine, EngineError, Event, FinishReason, Generation, Usage};
use crate::request::EngineRequest;

/// The model name the fake engine answers to.
pub const FAKE_MODEL: &str = "fake-benchmark-model";
/// Chunks per answer.
pub const CHUNKS: usize = 50;
/// Bytes per chunk (about).
pub const CHUNK_BYTES: usize = 128;
/// The fixed usage of every answer.
pub const FAKE_USAGE: Usage = Usage {
    prompt_tokens: 34,
    cached_tokens: 11,
    completion_tokens: 100,
    reasoning_tokens: 10,
};

/// The FAKE engine (no model; fixed answers).
#[derive(Debug, Clone, Default)]
pub struct FakeEngine {
    /// Pause between chunks (zero by default).
    pub chunk_delay: Duration,
}

/// Every answer's chunks, written once: a benchmark should time the network, not this.
static ANSWER: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..CHUNKS)
        .map(|i| {
            let mut s = format!("[fake chunk {i:02}] ");
            while s.len() < CHUNK_BYTES {
                s.push_str("lorem ipsum ");
            }
            s.truncate(CHUNK_BYTES);
            s
        })
        .collect()
});

impl FakeEngine {
    /// The i-th chunk of every answer (`i < CHUNKS`).
    pub fn chunk(i: usize) -> String {
        ANSWER[i].clone()
    }
}

impl Engine for FakeEngine {
    fn models(&self) -> Vec<String> {
        vec![FAKE_MODEL.to_string()]
    }

    fn generate(&self, request: EngineRequest) -> Result<Generation, EngineError> {
        if request.model != FAKE_MODEL {
            return Err(EngineError::UnknownModel(request.model));
        }
        let calls_tools = request.tool_choice != crate::tools::ToolChoice::None;
        let unhonoured = match (
            &request.response_format,
            request.sampling.logit_bias.is_empty(),
        ) {
            (Some(_), _) => Some("response_format"),
            (None, false) => Some("logit_bias"),
            (None, true) if calls_tools => Some("tools"),
            (None, true) => None,
        };
        if let Some(field) = unhonoured {
            return Err(EngineError::Request(
                crate::request::RequestError::InvalidField {
                    field: field.into(),
                    reason: "cannot be honoured by the FAKE engine (fixed answers)".into(),
                },
            ));
        }
        let (tx, rx) = generation();
        let delay = self.chunk_delay;
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if !tx.send(Ok(Event::Text(FakeEngine::chunk(i)))).await {
                    return; // cancelled
                }
            }
            tx.send(Ok(Event::Done {
                usage: FAKE_USAGE,
                finish_reason: FinishReason::Stop,
            }))
            .await;
        });
        Ok(rx)
    }
}
