//! The benchmark's baseline: the simplest correct llama.cpp loop — one
//! sequence, the whole prompt in one batch, then one token per decode,
//! greedy sampling — measured in the same process as the engine.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

/// What the baseline measured.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRun {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens.
    pub generated: usize,
    /// Generated tokens per second.
    pub decode_tok_s: f64,
}

/// Runs `prompt` through a fresh single-sequence context for `tokens`
/// tokens (not stopping at end of sequence, so runs are comparable).
pub fn run(
    model_path: &Path,
    prompt: &str,
    tokens: usize,
    threads: i32,
) -> Result<BaselineRun, String> {
    let backend = crate::backend::backend()?;
    let model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default())
        .map_err(|e| e.to_string())?;
    let vocab = model.vocab();
    let prompt_tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    let n_ctx = (prompt_tokens.len() + tokens + 8) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx.max(512))
        .with_n_ubatch(n_ctx.max(512))
        .with_n_seq_max(1)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| e.to_string())?;
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    for (i, t) in prompt_tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i == prompt_tokens.len() - 1)
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    ctx.decode(&mut batch).map_err(|e| e.to_string())?;
    let prefill = started.elapsed();
    let mut sampler = LlamaSampler::greedy();
    let first = prompt_tokens.len() as i32;
    let mut logits_at = batch.n_tokens() - 1;
    let started = Instant::now();
    for pos in first..first + tokens as i32 {
        let token = sampler.sample(&ctx, logits_at);
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(&mut batch).map_err(|e| e.to_string())?;
        logits_at = 0;
    }
    let decode = started.elapsed();
    Ok(BaselineRun {
        prompt_tokens: prompt_tokens.len(),
        prefill_tok_s: prompt_tokens.len() as f64 / prefill.as_secs_f64(),
        generated: tokens,
        decode_tok_s: tokens as f64 / decode.as_secs_f64(),
    })
}
