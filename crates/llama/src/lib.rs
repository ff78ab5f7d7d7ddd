//! The embedded inference engine: GGUF models (Llama, Qwen2, Qwen3,
//! DeepSeek families, and whatever else llama.cpp runs) executed in
//! process by llama.cpp, with continuous batching.
//!
//! - [`engine`]: [`LlamaEngine`], the decode loop and its scheduler.
//! - [`template`]: chat templates (llama.cpp's, or Jinja via minijinja).
//! - [`text`]: UTF-8 assembly, stop sequences and `<think>` accounting.
//! - [`baseline`]: a plain single-sequence decode loop, the benchmark's
//!   baseline.
//!
//! Architecture invariant: this is the only crate that links llama.cpp;
//! everything else sees the `cocoon_engine::Engine` trait. Its `unsafe` is
//! all inside `llama-cpp-2`; this crate has none.
#![forbid(unsafe_code)]

pub mod backend;
pub mod baseline;
pub mod bench;
pub mod engine;
pub mod template;
pub mod text;
pub mod tokens;

pub use engine::{LlamaConfig, LlamaEngine, LoadError, ModelInfo};
