//! `cocoon engine check URL`: whether an OpenAI-compatible server is fit to serve behind a
//! worker, asked the way the worker will ask it, before its owner joins the network.
//!
//! Fit means: it lists its models, answers a chat request, streams one, and reports the usage
//! in the stream (what the worker bills; without it nothing can be billed). Also measured and
//! reported, not required: the time to the first token and tokens per second of one stream,
//! whether a repeated prompt shows cached prompt tokens, whether reasoning tokens are reported,
//! and which optional request fields it accepts.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::engine::{Engine, Event, Usage};
use crate::http::HttpEngine;
use crate::request::EngineRequest;

/// What the check found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// The server's base URL.
    pub url: String,
    /// Model ids it lists at `/v1/models`.
    pub models: Vec<String>,
    /// The model the requests named.
    pub model: Option<String>,
    /// A non-streamed chat request was answered with text.
    pub answers: bool,
    /// A streamed chat request came back as text chunks.
    pub streams: bool,
    /// The stream ended with usage (`stream_options.include_usage`, or llama-server's timings).
    pub usage_in_stream: bool,
    /// The stream's usage.
    pub usage: Option<UsageReport>,
    /// A repeated prompt reported cached prompt tokens (prefix caching, and the field for it).
    pub reports_cached_tokens: bool,
    /// Reasoning tokens were reported (only reasoning models have any).
    pub reports_reasoning_tokens: bool,
    /// From sending the streamed request to its first text, milliseconds.
    pub first_token_ms: Option<u64>,
    /// Completion tokens per second of the streamed request after its first token.
    pub tokens_per_s: Option<f64>,
    /// Optional request fields and whether the server accepted them (HTTP status).
    pub optional_fields: Vec<FieldSupport>,
    /// Why it is not fit (empty when it is).
    pub problems: Vec<String>,
    /// Fit to serve behind a worker.
    pub fit: bool,
}

/// The usage one stream reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UsageReport {
    /// Prompt tokens.
    pub prompt: u64,
    /// Of them, cached.
    pub cached: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Of them, reasoning.
    pub reasoning: u64,
}

impl From<Usage> for UsageReport {
    fn from(u: Usage) -> Self {
        UsageReport {
            prompt: u.prompt_tokens,
            cached: u.cached_tokens,
            completion: u.completion_tokens,
            reasoning: u.reasoning_tokens,
        }
    }
}

/// Whether the server accepted an optional field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldSupport {
    /// The request field.
    pub field: &'static str,
    /// The HTTP status it answered (0: no answer).
    pub status: u16,
    /// Accepted (2xx).
    pub accepted: bool,
}

/// The prompt every request of the check sends (long enough that a prefix cache shows).
const PROMPT: &str = "You are checking an inference server for the Cocoon network. \
    Answer in one short sentence: what is the capital of France?";

/// How many tokens each request may generate.
const MAX_TOKENS: u64 = 32;

/// Checks the server at `url`, naming `model` in requests (default: the one model it lists).
pub async fn check(url: &str, model: Option<&str>) -> CheckReport {
    let probe = HttpEngine::new(url, vec![]);
    let mut report = CheckReport {
        url: probe.base_url().to_string(),
        models: vec![],
        model: None,
        answers: false,
        streams: false,
        usage_in_stream: false,
        usage: None,
        reports_cached_tokens: false,
        reports_reasoning_tokens: false,
        first_token_ms: None,
        tokens_per_s: None,
        optional_fields: vec![],
        problems: vec![],
        fit: false,
    };
    match probe.listed_models().await {
        Ok(models) => report.models = models,
        Err(e) => {
            report.problems.push(format!("no model list: {e}"));
            return report;
        }
    }
    let model = match (model, report.models.as_slice()) {
        (Some(m), _) => m.to_string(),
        (None, [only]) => only.clone(),
        (None, []) => {
            report
                .problems
                .push("it lists no model; name one with --model".into());
            return report;
        }
        (None, several) => {
            report.problems.push(format!(
                "it lists {} models ({}); name one with --model",
                several.len(),
                several.join(", ")
            ));
            return report;
        }
    };
    report.model = Some(model.clone());
    let http = reqwest::Client::new();
    let chat_url = format!("{}/v1/chat/completions", report.url);
    let body = |extra: Value| {
        let mut b = json!({"model": model, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": PROMPT}]});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        b
    };
    let post = |b: Value| {
        let (http, url) = (http.clone(), chat_url.clone());
        async move {
            let r = tokio::time::timeout(Duration::from_secs(120), http.post(url).json(&b).send())
                .await;
            match r {
                Ok(Ok(r)) => {
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                }
                Ok(Err(e)) => (0, e.to_string()),
                Err(_) => (0, "no answer within 120 s".into()),
            }
        }
    };

    // 1. A plain chat request.
    let (status, text) = post(body(json!({}))).await;
    let answer: Option<Value> = serde_json::from_str(&text).ok();
    let content = answer
        .as_ref()
        .and_then(|v| v.pointer("/choices/0/message/content"))
        .and_then(Value::as_str);
    report.answers = status == 200 && content.is_some();
    if !report.answers {
        report.problems.push(format!(
            "a chat request got {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }

    // 2. The same streamed, twice, as the worker sends it (the second shows a prefix cache).
    let engine = HttpEngine::serving(&report.url, &model, &model);
    for round in 0..2 {
        let request = EngineRequest::parse_chat(body(json!({})).to_string().as_bytes());
        let Ok(request) = request else {
            report
                .problems
                .push("the check's own request does not parse".into());
            break;
        };
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        let mut chunks = 0usize;
        let mut usage = None;
        let mut failure = None;
        match engine.generate(request) {
            Ok(mut g) => {
                while let Some(event) = g.next().await {
                    match event {
                        Ok(Event::Logprobs(_)) => {}
                        Ok(Event::Text(_) | Event::ToolCall(_)) => {
                            chunks += 1;
                            first.get_or_insert_with(Instant::now);
                        }
                        Ok(Event::Done { usage: u, .. }) => usage = Some(u),
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
        if round == 0 {
            report.streams = chunks > 0;
            report.usage_in_stream = usage.is_some();
            report.usage = usage.map(UsageReport::from);
            report.first_token_ms = first.map(|f| (f - started).as_millis() as u64);
            if let (Some(f), Some(u)) = (first, usage) {
                let secs = f.elapsed().as_secs_f64();
                if secs > 0.0 && u.completion_tokens > 1 {
                    report.tokens_per_s = Some((u.completion_tokens - 1) as f64 / secs);
                }
            }
            if let Some(e) = failure {
                report
                    .problems
                    .push(format!("a streamed request failed: {e}"));
            } else if chunks == 0 {
                report
                    .problems
                    .push("a streamed request gave no text".into());
            }
        }
        if let Some(u) = usage {
            report.reports_cached_tokens |= u.cached_tokens > 0;
            report.reports_reasoning_tokens |= u.reasoning_tokens > 0;
        }
    }

    // 3. Optional fields apps send (accepted or refused; neither makes it unfit).
    let fields: [(&'static str, Value); 4] = [
        (
            "response_format",
            json!({"response_format": {"type": "json_object"}}),
        ),
        ("logprobs", json!({"logprobs": true, "top_logprobs": 2})),
        ("seed", json!({"seed": 7})),
        (
            "tools",
            json!({"tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
        ),
    ];
    for (field, extra) in fields {
        let (status, _) = post(body(extra)).await;
        report.optional_fields.push(FieldSupport {
            field,
            status,
            accepted: (200..300).contains(&status),
        });
    }
    report.fit = report.answers && report.streams && report.usage_in_stream;
    if report.streams && !report.usage_in_stream {
        report.problems.push(
            "the stream reports no usage: nothing could be billed (vLLM and SGLang report it \
             with stream_options.include_usage; llama-server in its timings)"
                .into(),
        );
    }
    report
}
