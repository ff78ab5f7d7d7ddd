//! The `Engine` trait: a validated request in, a stream of text chunks and
//! one final usage out. Dropping the [`Generation`] cancels the work: the
//! producer sees [`GenerationSender::is_cancelled`] and stops.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::request::{EngineRequest, RequestError};
use crate::tools::{ToolCall, ToolCallAccumulator, ToolCallDelta};

/// Token counts of one request, as billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens whose KV state was reused.
    pub cached_tokens: u64,
    /// Generated tokens, reasoning ones included.
    pub completion_tokens: u64,
    /// Generated tokens inside `<think>…</think>`.
    pub reasoning_tokens: u64,
}

/// What an engine does beyond plain text: announced by workers to proxies (our flag bits in
/// `worker.params`), used by proxies to route, and shown to apps on `/v1/models`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// Calls tools (`tools`, `tool_choice`, answers with `tool_calls`).
    pub tools: bool,
    /// Enforces `response_format` (a JSON object, JSON that fits a schema).
    pub structured_output: bool,
}

impl Features {
    /// Everything this implementation's embedded engine does.
    pub const ALL: Features = Features {
        tools: true,
        structured_output: true,
    };

    /// The features' names, as `/v1/models` lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.tools {
            out.push("tools");
        }
        if self.structured_output {
            out.push("structured_output");
        }
        out
    }

    /// What a request body needs of the worker that serves it, as far as routing goes: tool
    /// calling when it offers tools (and does not say `tool_choice: "none"`). A worker that did
    /// not announce it (a reference COCOON worker never does) is never sent such a request.
    /// `response_format` is not required here: reference workers pass it to engines that honour it.
    pub fn needed_by(body: &serde_json::Value) -> Features {
        let offers_tools = body
            .get("tools")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|t| !t.is_empty());
        let no_calls = body.get("tool_choice").and_then(serde_json::Value::as_str) == Some("none");
        Features {
            tools: offers_tools && !no_calls,
            structured_output: false,
        }
    }

    /// Whether these features include everything `needed` asks for.
    pub fn covers(&self, needed: Features) -> bool {
        (self.tools || !needed.tools) && (self.structured_output || !needed.structured_output)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence or a stop sequence.
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
    /// The model called tools (the answer carries `tool_calls`).
    ToolCalls,
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// One generated token with its log probability (`logprobs`), and the most likely
/// alternatives at its position when `top_logprobs` asked for them.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (lossy where it is part of a UTF-8 character).
    pub token: String,
    /// Its raw bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the model.
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first: (text, bytes, logprob).
    pub top: Vec<(String, Vec<u8>, f32)>,
}

impl TokenLogprob {
    /// The OpenAI `logprobs.content[]` entry.
    pub fn to_json(&self) -> serde_json::Value {
        let top: Vec<serde_json::Value> = self
            .top
            .iter()
            .map(|(t, b, l)| serde_json::json!({"token": t, "logprob": l, "bytes": b}))
            .collect();
        serde_json::json!({"token": self.token, "logprob": self.logprob, "bytes": self.bytes, "top_logprobs": top})
    }
}

/// One item of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text.
    Text(String),
    /// Log probabilities of the tokens generated since the last ones sent (they come before
    /// the text those tokens make).
    Logprobs(Vec<TokenLogprob>),
    /// A piece of a tool call (see [`ToolCallDelta`]).
    ToolCall(ToolCallDelta),
    /// The end, with the final usage.
    Done {
        /// Final token counts.
        usage: Usage,
        /// Why it ended.
        finish_reason: FinishReason,
    },
}

/// Why an engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request is invalid (HTTP 400).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The engine does not serve this model (HTTP 404).
    #[error("model `{0}` is not served here")]
    UnknownModel(String),
    /// Too many requests at once (HTTP 503).
    #[error("engine is at capacity ({0} requests running)")]
    Overloaded(usize),
    /// The prompt does not fit the context (HTTP 400).
    #[error("prompt of {prompt} tokens does not fit the context of {context} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        context: usize,
    },
    /// An upstream server answered with an error: the app's own request was refused (its 4xx:
    /// a 400, say for a prompt beyond the context) stays a 400 with the server's words; the
    /// server busy (429) is a 503; anything else (unreachable, 5xx, a broken stream) a 502.
    #[error("upstream engine answered {status}: {message}")]
    Upstream {
        /// Upstream HTTP status (0 when it could not be reached).
        status: u16,
        /// Its message.
        message: String,
    },
    /// No answer in time (HTTP 504).
    #[error("engine timed out after {0:?}")]
    Timeout(Duration),
    /// Anything else (HTTP 500).
    #[error("engine failure: {0}")]
    Internal(String),
}

impl EngineError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Request(_) | Self::PromptTooLong { .. } => 400,
            Self::UnknownModel(_) => 404,
            Self::Overloaded(_) => 503,
            Self::Upstream { status: 429, .. } => 503,
            // The model not being there is this worker's configuration, not the request.
            Self::Upstream { status: 404, .. } => 502,
            Self::Upstream { status, .. } if (400..500).contains(status) => 400,
            Self::Upstream { .. } => 502,
            Self::Timeout(_) => 504,
            Self::Internal(_) => 500,
        }
    }
}

/// An inference engine.
pub trait Engine: Send + Sync + 'static {
    /// The model identities served.
    fn models(&self) -> Vec<String>;

    /// Starts generating; errors found before starting come back here,
    /// later ones as the stream's last item.
    fn generate(&self, request: EngineRequest) -> Result<Generation, EngineError>;

    /// Whether the engine can answer now (an engine in this process always can; one over
    /// HTTP is asked). A worker announces itself to proxies only while this succeeds.
    fn health(&self) -> HealthCheck<'_> {
        Box::pin(async { Ok(()) })
    }

    /// What it does beyond plain text (default: nothing more), announced to proxies.
    fn features(&self) -> Features {
        Features::default()
    }
}

/// The future of [`Engine::health`].
pub type HealthCheck<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send + 'a>>;

/// Capacity of a generation's channel: enough to decouple the decode loop
/// from a slow reader without letting it run far ahead.
const CHANNEL_DEPTH: usize = 64;

/// A new (sender, stream) pair.
pub fn generation() -> (GenerationSender, Generation) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    (GenerationSender { tx }, Generation { rx })
}

/// The producing side of a [`Generation`].
#[derive(Debug, Clone)]
pub struct GenerationSender {
    tx: mpsc::Sender<Result<Event, EngineError>>,
}

impl GenerationSender {
    /// Sends an item, waiting for room; false when the reader is gone.
    pub async fn send(&self, item: Result<Event, EngineError>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Sends without waiting: gives the item back when the channel is full
    /// (the decode loop must never wait on one slow reader).
    pub fn try_send(&self, item: Result<Event, EngineError>) -> TrySend {
        match self.tx.try_send(item) {
            Ok(()) => TrySend::Sent,
            Err(mpsc::error::TrySendError::Full(item)) => TrySend::Full(item),
            Err(mpsc::error::TrySendError::Closed(_)) => TrySend::Closed,
        }
    }

    /// Resolves when the reader drops the stream.
    pub async fn cancelled(&self) {
        self.tx.closed().await
    }

    /// Whether the reader dropped the stream (cancellation).
    pub fn is_cancelled(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The outcome of [`GenerationSender::try_send`].
#[derive(Debug)]
pub enum TrySend {
    /// Delivered.
    Sent,
    /// No room: the item, to retry later.
    Full(Result<Event, EngineError>),
    /// The reader is gone.
    Closed,
}

/// The consuming side: a stream of events; drop it to cancel.
#[derive(Debug)]
pub struct Generation {
    rx: mpsc::Receiver<Result<Event, EngineError>>,
}

impl Stream for Generation {
    type Item = Result<Event, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A whole answer gathered from a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The text, chunks joined.
    pub text: String,
    /// The chunks as they came.
    pub chunks: usize,
    /// Final usage.
    pub usage: Usage,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The tools it called, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Each generated token's log probability, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

impl Generation {
    /// Reads the generation to its end.
    pub async fn collect(mut self) -> Result<Answer, EngineError> {
        use futures_util::StreamExt;
        let mut text = String::new();
        let mut chunks = 0;
        let mut calls = ToolCallAccumulator::default();
        let mut logprobs = Vec::new();
        while let Some(item) = self.next().await {
            match item? {
                Event::Text(t) => {
                    chunks += 1;
                    text.push_str(&t);
                }
                Event::ToolCall(d) => {
                    chunks += 1;
                    calls.push(&d);
                }
                Event::Logprobs(l) => logprobs.extend(l),
                Event::Done {
                    usage,
                    finish_reason,
                } => {
                    return Ok(Answer {
                        text,
                        chunks,
                        usage,
                        finish_reason,
                        tool_calls: calls.calls().to_vec(),
                        logprobs,
                    })
                }
            }
        }
        Err(EngineError::Internal(
            "generation ended without a final usage".into(),
        ))
    }
}
