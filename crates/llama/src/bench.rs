//! `cocoon bench engine`: the embedded engine against the plain
//! single-sequence loop ([`crate::baseline`]) in the same process.
//!
//! Reported: the baseline's prefill and decode tok/s; the engine's decode
//! tok/s for one stream (and the ratio to the baseline); and for each
//! concurrency, the aggregate generated tok/s (and the ratio to one
//! stream); and the process's peak RSS.

use cocoon_engine::model::LocalModel;
use std::sync::Arc;
use std::time::Instant;

use cocoon_engine::{Engine, EngineRequest, Event};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::{LlamaConfig, LlamaEngine};

const PROMPT: &str =
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.";

/// One concurrency level's result.
#[derive(Debug, Clone, Copy)]
struct Level {
    concurrency: usize,
    aggregate_tok_s: f64,
    per_stream_decode_tok_s: f64,
    /// Prompt tokens over time to first token, averaged over streams.
    prefill_tok_s: f64,
    tokens: u64,
}

/// Runs the benchmark and returns its JSON report.
pub fn run(
    model: &LocalModel,
    concurrency: &[usize],
    tokens: u32,
    threads: Option<i32>,
) -> Result<Value, String> {
    let threads = threads.unwrap_or_else(crate::engine::default_threads);
    let max_c = concurrency.iter().copied().max().unwrap_or(1).max(1);
    let engine = Arc::new(
        LlamaEngine::load(LlamaConfig {
            max_sequences: max_c as u32,
            n_ctx_per_seq: (tokens + 256).next_power_of_two(),
            threads: Some(threads),
            progress: false,
            ..LlamaConfig::for_model(model)
        })
        .map_err(|e| e.to_string())?,
    );
    // The baseline runs on the engine's decode thread, so that all llama.cpp
    // work in the process shares one OpenMP team (see run_on_decode_thread).
    let baseline_on_engine_thread = || {
        let model = model.path.clone();
        engine
            .run_on_decode_thread(move || {
                crate::baseline::run(&model, PROMPT, tokens as usize, threads)
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    };
    let baseline = baseline_on_engine_thread()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut levels = Vec::new();
    for &c in concurrency {
        levels.push(rt.block_on(level(&engine, c.max(1), tokens))?);
    }
    // Grammar-constrained decoding (`response_format: json_object`) against free decoding of the
    // same chat, greedy, one stream; each run twice, the better kept.
    // A call the grammar forces (`tool_choice: required`) is measured the same way.
    let mut constrained = (0.0f64, 0u64);
    let mut free = (0.0f64, 0u64);
    let mut tool = (0.0f64, 0u64);
    let mut tool_auto = (0.0f64, 0u64);
    for _ in 0..2 {
        let f = rt.block_on(chat_rate(&engine, Constraint::Free, tokens))?;
        let j = rt.block_on(chat_rate(&engine, Constraint::JsonObject, tokens))?;
        let t = rt.block_on(chat_rate(&engine, Constraint::ToolCall, tokens))?;
        let a = rt.block_on(chat_rate(&engine, Constraint::ToolAuto, tokens))?;
        for (best, run) in [
            (&mut free, f),
            (&mut constrained, j),
            (&mut tool, t),
            (&mut tool_auto, a),
        ] {
            if run.0 > best.0 {
                *best = run;
            }
        }
    }
    // The baseline again, after the engine: the machine may have sped up
    // or slowed down meanwhile; the report uses the better of the two runs.
    let baseline_after = baseline_on_engine_thread()?;
    let single = levels.iter().find(|l| l.concurrency == 1).copied();
    let level_json: Vec<Value> = levels
        .iter()
        .map(|l| {
            json!({
                "concurrency": l.concurrency,
                "aggregate_tok_s": l.aggregate_tok_s,
                "per_stream_decode_tok_s": l.per_stream_decode_tok_s,
                "prefill_tok_s": l.prefill_tok_s,
                "generated_tokens": l.tokens,
                "vs_single_stream": single.map(|s| l.aggregate_tok_s / s.aggregate_tok_s),
            })
        })
        .collect();
    Ok(json!({
        "bench": "engine",
        "model": engine.info().identity.to_string(),
        "threads": threads,
        "tokens_per_request": tokens,
        "baseline": {
            "what": "plain single-sequence llama.cpp loop, greedy, same process",
            "prompt_tokens": baseline.prompt_tokens,
            "prefill_tok_s": baseline.prefill_tok_s,
            "decode_tok_s": baseline.decode_tok_s.max(baseline_after.decode_tok_s),
            "decode_tok_s_runs": [baseline.decode_tok_s, baseline_after.decode_tok_s],
        },
        "engine": level_json,
        "single_stream_vs_baseline": single
            .map(|s| s.per_stream_decode_tok_s / baseline.decode_tok_s.max(baseline_after.decode_tok_s)),
        "grammar": {
            "what": "one greedy chat stream, free vs response_format json_object (JSON grammar) and tool_choice required (the call's grammar with the tool's schema) vs the same request with tool_choice auto (both timed by their logprobs)",
            "free_decode_tok_s": free.0,
            "free_tokens": free.1,
            "json_object_decode_tok_s": constrained.0,
            "json_object_tokens": constrained.1,
            "json_object_vs_free": if free.0 > 0.0 { constrained.0 / free.0 } else { 0.0 },
            "tool_call_decode_tok_s": tool.0,
            "tool_call_tokens": tool.1,
            "tool_auto_decode_tok_s": tool_auto.0,
            "tool_auto_tokens": tool_auto.1,
            "tool_call_vs_tool_auto": if tool_auto.0 > 0.0 { tool.0 / tool_auto.0 } else { 0.0 },
            "target": ">= 0.85",
        },
        "peak_rss_bytes": peak_rss(),
    }))
}

/// How a benchmarked chat is constrained.
#[derive(Clone, Copy)]
enum Constraint {
    /// Free text.
    Free,
    /// The tool call's request with `tool_choice: auto` (the same prompt, the tool described,
    /// no grammar), timed the same way: what the call's grammar is compared with.
    ToolAuto,
    /// `response_format: json_object`.
    JsonObject,
    /// `tool_choice: required` with one strict tool.
    ToolCall,
}

/// One greedy chat stream of at most `tokens` (free, as one JSON object, or as a forced tool
/// call, by grammar): its decode rate after the first token, and how many tokens it generated.
async fn chat_rate(
    engine: &Arc<LlamaEngine>,
    constraint: Constraint,
    tokens: u32,
) -> Result<(f64, u64), String> {
    let mut body = serde_json::json!({
        "model": engine.info().identity.name,
        "messages": [{"role": "user", "content": "Describe France in detail as a JSON object with many fields: cities, rivers, food, history."}],
        "max_tokens": tokens,
        "temperature": 0.0,
    });
    match constraint {
        Constraint::Free => {}
        Constraint::JsonObject => {
            body["response_format"] = serde_json::json!({"type": "json_object"});
        }
        Constraint::ToolCall | Constraint::ToolAuto => {
            body["tools"] = serde_json::json!([{"type": "function", "function": {
                "name": "describe_country", "strict": true,
                "parameters": {"type": "object", "additionalProperties": false,
                    "required": ["name", "description", "cities"],
                    "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                        "cities": {"type": "array", "items": {"type": "string"}}}}}}]);
            body["tool_choice"] = match constraint {
                Constraint::ToolCall => "required",
                _ => "auto",
            }
            .into();
            // Both timed the same way, by their tokens' log probabilities (an `auto` call
            // arrives whole at its end); the log-softmax this adds costs both runs alike.
            body["logprobs"] = true.into();
        }
    }
    let request =
        EngineRequest::parse_chat(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let g = engine.generate(request).map_err(|e| e.to_string())?;
    let m = measure(g, Instant::now()).await?;
    Ok((m.decode_tok_s, m.tokens))
}

async fn level(engine: &Arc<LlamaEngine>, c: usize, tokens: u32) -> Result<Level, String> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..c {
        // Distinct prompts so no request rides on another's cache.
        let body = serde_json::json!({
            "model": engine.info().identity.name,
            "prompt": format!("Story {i}. {PROMPT}"),
            "max_tokens": tokens,
            // Greedy, like the baseline, so both pay the same sampling cost.
            "temperature": 0.0,
        });
        let mut request = EngineRequest::parse_completion(body.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        // Exactly `tokens` per request, as the baseline generates.
        request.ignore_eos = true;
        let g = engine.generate(request).map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(measure(g, Instant::now())));
    }
    let mut total = 0;
    let mut rates = 0.0;
    let mut prefills = 0.0;
    for t in tasks {
        let m = t.await.map_err(|e| e.to_string())??;
        total += m.tokens;
        rates += m.decode_tok_s;
        prefills += m.prefill_tok_s;
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(Level {
        concurrency: c,
        aggregate_tok_s: total as f64 / wall,
        per_stream_decode_tok_s: rates / c as f64,
        prefill_tok_s: prefills / c as f64,
        tokens: total,
    })
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What one generation measured.
struct Measured {
    /// Completion tokens.
    tokens: u64,
    /// Completion tokens per second after the first.
    decode_tok_s: f64,
    /// Prompt tokens per second until the first text.
    prefill_tok_s: f64,
}

/// Reads `g` (started at `sent`) to its end, timing its first text and its decoding.
async fn measure(mut g: cocoon_engine::Generation, sent: Instant) -> Result<Measured, String> {
    let mut first: Option<Instant> = None;
    while let Some(item) = g.next().await {
        match item.map_err(|e| e.to_string())? {
            // Log probabilities come as each token is made: a call (sent whole at its end)
            // is timed by them.
            Event::Logprobs(_) | Event::Text(_) | Event::ToolCall(_) => {
                first.get_or_insert_with(Instant::now);
            }
            Event::Done { usage, .. } => {
                let decode = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
                let ttft = first.map(|f| (f - sent).as_secs_f64()).unwrap_or(0.0);
                let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
                return Ok(Measured {
                    tokens: usage.completion_tokens,
                    decode_tok_s: per_s(usage.completion_tokens.saturating_sub(1), decode),
                    prefill_tok_s: per_s(usage.prompt_tokens, ttft),
                });
            }
        }
    }
    Err("stream ended early".to_string())
}
