//! Inference engines behind one trait.
//!
//! - [`request`]: OpenAI chat/completion requests, validated against a
//!   field whitelist and normalized.
//! - [`engine`]: the [`Engine`] trait, the [`Generation`] stream (drop it to
//!   cancel) and [`Usage`].
//! - [`http`]: any OpenAI-compatible server (vLLM, SGLang, llama-server) as an
//!   engine, with usage read from the SSE stream.
//! - [`fake`]: the FAKE benchmark engine (fixed chunks and usage, no model).
//! - [`tools`]: tool calling: the request's tools, calls found in model output, and the
//!   grammar that enforces `tool_choice`.
//! - [`server`]: an OpenAI-compatible HTTP server for any engine.
//! - [`model`]: model files and identities (`name@sha256`), and fetching the
//!   bundled SmolLM2.
//!
//! The embedded llama.cpp engine lives in the `cocoon-llama` crate, so that
//! only what needs it pays for building llama.cpp.
#![forbid(unsafe_code)]

pub mod check;
pub mod engine;
pub mod fake;
pub mod http;
pub mod model;
pub mod openai;
pub mod request;
pub mod schema;
pub mod server;
pub mod tools;

pub use engine::{
    Answer, Engine, EngineError, Event, Features, FinishReason, Generation, GenerationSender,
    TokenLogprob, TrySend, Usage,
};
pub use request::{ChatMessage, EngineRequest, Prompt, RequestError, ResponseFormat, Sampling};
pub use tools::{Tool, ToolCall, ToolCallDelta, ToolChoice};
