//! The HTTP engine: any OpenAI-compatible server (vLLM, SGLang, llama-server, TGI) as an
//! [`Engine`] — what GPU owners run behind a worker.
//!
//! It forwards only whitelisted fields under the model name the server serves, always asks for
//! a stream with `stream_options.include_usage`, and bills what the server reports: the usage
//! of the final SSE chunk, with cached prompt tokens from `prompt_tokens_details` (vLLM,
//! SGLang) or llama-server's `timings.cache_n`, and reasoning tokens from
//! `completion_tokens_details`. A stream that ends without any usage is an error, never a
//! free answer (COCOON bills such answers as 0 tokens; we refuse to). Reasoning text (vLLM's
//! and SGLang's `reasoning_content`) is passed on inside `<think>…</think>`, as the embedded
//! engine gives it. Each phase has its own timeout: the response head, the first token, and the
//! silence between two chunks; dropping the generation drops the HTTP request, which stops the
//! server's generation. One `reqwest` client per engine reuses its connections.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::engine::{
    generation, Engine, EngineError, Event, Features, FinishReason, Generation, GenerationSender,
    HealthCheck, TokenLogprob, Usage,
};
use crate::request::EngineRequest;
use crate::tools::ToolCallDelta;

/// Default time allowed for the server to send its response head.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed from the response head to the first token (prefill of a long prompt).
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(300);
/// Default longest silence between two chunks of an answer.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed for a health check.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// An OpenAI-compatible upstream server.
#[derive(Debug, Clone)]
pub struct HttpEngine {
    base_url: String,
    /// The names a request may use for the model (the identity first).
    accepts: Vec<String>,
    /// The name the server serves the model under (sent upstream), when it differs.
    served: Option<String>,
    client: reqwest::Client,
    /// Time allowed until the response head arrives.
    pub connect_timeout: Duration,
    /// Time allowed from the head to the first chunk.
    pub first_token_timeout: Duration,
    /// Longest silence between chunks after the first.
    pub idle_timeout: Duration,
    /// What the server does beyond text, as the worker announces it: by default structured
    /// output (vLLM, SGLang and llama-server all take `response_format`) but not tools, which
    /// need the server started for them (vLLM's `--enable-auto-tool-choice`, llama-server's
    /// `--jinja`): the operator says so.
    pub features: Features,
}

impl HttpEngine {
    /// An engine forwarding to `base_url` (e.g. `http://127.0.0.1:8000`) for the given model
    /// names, each sent upstream as the request names it (empty: any name).
    pub fn new(base_url: &str, models: Vec<String>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            accepts: models,
            served: None,
            client: reqwest::Client::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            features: Features {
                tools: false,
                structured_output: true,
            },
        }
    }

    /// An engine serving the model `identity` (`name@sha256`, what the worker announces) that
    /// the server at `base_url` serves as `served` (vLLM's `--served-model-name`, say): a request
    /// naming the identity, its name or `served` goes upstream as `served`.
    pub fn serving(base_url: &str, served: &str, identity: &str) -> Self {
        let mut accepts = vec![identity.to_string()];
        for alias in [crate::model::ModelIdentity::name_of(identity), served] {
            if !accepts.iter().any(|a| a == alias) {
                accepts.push(alias.to_string());
            }
        }
        Self {
            served: Some(served.to_string()),
            ..Self::new(base_url, accepts)
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model ids the server lists at `/v1/models` (within [`HEALTH_TIMEOUT`]).
    pub async fn listed_models(&self) -> Result<Vec<String>, EngineError> {
        let url = format!("{}/v1/models", self.base_url);
        let unreachable = |e: String| EngineError::Upstream {
            status: 0,
            message: format!("cannot reach {url}: {e}"),
        };
        let response = tokio::time::timeout(HEALTH_TIMEOUT, self.client.get(&url).send())
            .await
            .map_err(|_| unreachable(format!("no answer within {HEALTH_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let text = tokio::time::timeout(HEALTH_TIMEOUT, response.text())
            .await
            .map_err(|_| unreachable(format!("no body within {HEALTH_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(EngineError::Upstream {
                status: status.as_u16(),
                message: format!("{url}: {}", upstream_message(&text)),
            });
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| EngineError::Upstream {
            status: 502,
            message: format!("{url} is not an OpenAI model list: {e}"),
        })?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Engine for HttpEngine {
    fn models(&self) -> Vec<String> {
        self.accepts.clone()
    }

    fn features(&self) -> Features {
        self.features
    }

    fn generate(&self, request: EngineRequest) -> Result<Generation, EngineError> {
        if !self.accepts.is_empty() && !self.accepts.contains(&request.model) {
            return Err(EngineError::UnknownModel(request.model));
        }
        let path = if request.is_chat() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let url = format!("{}{path}", self.base_url);
        let mut body = request.to_upstream_json();
        if let Some(served) = &self.served {
            body["model"] = served.clone().into();
        }
        let (tx, rx) = generation();
        let engine = self.clone();
        let chat = request.is_chat();
        tokio::spawn(async move {
            let run = engine.run(url, body, chat, &tx);
            tokio::select! {
                result = run => {
                    if let Err(e) = result {
                        tx.send(Err(e)).await;
                    }
                }
                // Dropping `run` drops the response and closes the upstream
                // connection, which stops the upstream generation.
                _ = tx.cancelled() => {}
            }
        });
        Ok(rx)
    }

    /// Healthy while the server answers `/v1/models` (every OpenAI-compatible server has it).
    fn health(&self) -> HealthCheck<'_> {
        Box::pin(async move { self.listed_models().await.map(|_| ()) })
    }
}

impl HttpEngine {
    async fn run(
        &self,
        url: String,
        body: Value,
        chat: bool,
        tx: &GenerationSender,
    ) -> Result<(), EngineError> {
        let send = self.client.post(&url).json(&body).send();
        let response = tokio::time::timeout(self.connect_timeout, send)
            .await
            .map_err(|_| EngineError::Timeout(self.connect_timeout))?
            .map_err(|e| EngineError::Upstream {
                status: 0,
                message: format!("cannot reach {url}: {e}"),
            })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(EngineError::Upstream {
                status: status.as_u16(),
                message: upstream_message(&text),
            });
        }
        let mut bytes = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut wait = self.first_token_timeout;
        loop {
            let next = tokio::time::timeout(wait, bytes.next())
                .await
                .map_err(|_| EngineError::Timeout(wait))?;
            wait = self.idle_timeout;
            let chunk = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(EngineError::Upstream {
                        status: 200,
                        message: format!("stream broke: {e}"),
                    })
                }
            };
            for data in parser.push(&chunk) {
                if data == "[DONE]" {
                    return finish(&mut parser, tx).await;
                }
                let v: Value = serde_json::from_str(&data).map_err(|e| EngineError::Upstream {
                    status: 200,
                    message: format!("bad SSE data: {e}"),
                })?;
                for event in apply_chunk(&mut parser, &v, chat)? {
                    if !tx.send(Ok(event)).await {
                        return Ok(());
                    }
                }
            }
        }
        finish(&mut parser, tx).await
    }
}

async fn finish(parser: &mut SseParser, tx: &GenerationSender) -> Result<(), EngineError> {
    if parser.thinking {
        // Reasoning that never gave way to an answer (cut by max_tokens): close it.
        parser.thinking = false;
        if !tx.send(Ok(Event::Text("</think>".into()))).await {
            return Ok(());
        }
    }
    let usage = match (parser.usage, parser.timings) {
        // The server's usage, with llama-server's cached count where usage has none.
        (Some(mut u), timings) => {
            if u.cached_tokens == 0 {
                u.cached_tokens = timings.map_or(0, |t| t.cached_tokens.min(u.prompt_tokens));
            }
            u
        }
        (None, Some(t)) => t,
        (None, None) => {
            return Err(EngineError::Upstream {
                status: 200,
                message: "stream ended without usage; refusing to bill an unknown number of tokens"
                    .into(),
            })
        }
    };
    tx.send(Ok(Event::Done {
        usage,
        finish_reason: parser.finish_reason.unwrap_or(FinishReason::Stop),
    }))
    .await;
    Ok(())
}

/// Applies one parsed SSE JSON chunk; returns the new text and tool-call pieces, if any.
fn apply_chunk(parser: &mut SseParser, v: &Value, chat: bool) -> Result<Vec<Event>, EngineError> {
    if let Some(err) = v.get("error") {
        return Err(EngineError::Upstream {
            status: err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..=599).contains(c))
                .unwrap_or(500),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| err.as_str())
                .unwrap_or("error in stream")
                .to_string(),
        });
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        parser.usage = Some(parse_usage(u));
    }
    if let Some(t) = v.get("timings").filter(|t| t.is_object()) {
        parser.timings = Some(usage_of_timings(t));
    }
    let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
        return Ok(Vec::new());
    };
    match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => parser.finish_reason = Some(FinishReason::Length),
        Some("tool_calls") => parser.finish_reason = Some(FinishReason::ToolCalls),
        Some(_) => parser.finish_reason = Some(FinishReason::Stop),
        None => {}
    }
    // Chat-style log probabilities (`logprobs.content`), before the text they belong to.
    let logprobs: Vec<TokenLogprob> = choice
        .pointer("/logprobs/content")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(token_logprob).collect())
        .unwrap_or_default();
    let mut events = Vec::new();
    if !logprobs.is_empty() {
        events.push(Event::Logprobs(logprobs));
    }
    if !chat {
        let text = choice.get("text").and_then(Value::as_str);
        events.extend(
            text.filter(|t| !t.is_empty())
                .map(|t| Event::Text(t.to_string())),
        );
        return Ok(events);
    }
    let delta = choice.get("delta");
    let field = |name: &str| {
        delta
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let reasoning = field("reasoning_content").or_else(|| field("reasoning"));
    let content = field("content");
    let mut out = String::new();
    if let Some(r) = reasoning {
        if !parser.thinking {
            parser.thinking = true;
            out.push_str("<think>");
        }
        out.push_str(r);
    }
    if let Some(c) = content {
        if parser.thinking {
            parser.thinking = false;
            out.push_str("</think>");
        }
        out.push_str(c);
    }
    // Pieces must name a call begun or the next one (an index skipping ahead is dropped).
    let mut calls = Vec::new();
    let pieces = delta
        .and_then(|d| d.get("tool_calls"))
        .and_then(Value::as_array);
    for d in pieces.into_iter().flatten().filter_map(tool_call_delta) {
        if d.index == parser.calls {
            parser.calls += 1;
        }
        if d.index < parser.calls {
            calls.push(d);
        }
    }
    if !calls.is_empty() && parser.thinking {
        parser.thinking = false;
        out.push_str("</think>");
    }
    if !out.is_empty() {
        events.push(Event::Text(out));
    }
    events.extend(calls.into_iter().map(Event::ToolCall));
    Ok(events)
}

/// One `logprobs.content[]` entry of an upstream stream (skipped when malformed).
fn token_logprob(v: &Value) -> Option<TokenLogprob> {
    let one = |v: &Value| -> Option<(String, Vec<u8>, f32)> {
        let token = v.get("token")?.as_str()?.to_string();
        let logprob = v.get("logprob")?.as_f64()? as f32;
        let bytes = v
            .get("bytes")
            .and_then(Value::as_array)
            .map(|b| {
                b.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as u8))
                    .collect()
            })
            .unwrap_or_else(|| token.as_bytes().to_vec());
        Some((token, bytes, logprob))
    };
    let (token, bytes, logprob) = one(v)?;
    let top = v
        .get("top_logprobs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(one).collect())
        .unwrap_or_default();
    Some(TokenLogprob {
        token,
        bytes,
        logprob,
        top,
    })
}

/// One `delta.tool_calls[]` entry of an upstream stream (an entry without an index is skipped).
fn tool_call_delta(v: &Value) -> Option<ToolCallDelta> {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    Some(ToolCallDelta {
        index: u32::try_from(v.get("index")?.as_u64()?).ok()?,
        id: text("/id"),
        name: text("/function/name"),
        arguments: text("/function/arguments").unwrap_or_default(),
    })
}

/// Reads an OpenAI usage object (missing details count as 0).
fn parse_usage(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = n(u.get("prompt_tokens"));
    let completion = n(u.get("completion_tokens"));
    Usage {
        prompt_tokens: prompt,
        // Never more than the prompt, whatever a server claims.
        cached_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")).min(prompt),
        completion_tokens: completion,
        reasoning_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens"))
            .min(completion),
    }
}

/// Reads llama-server's `timings`: `cache_n` prompt tokens reused, `prompt_n` evaluated,
/// `predicted_n` generated.
fn usage_of_timings(t: &Value) -> Usage {
    let n = |k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n("prompt_n").saturating_add(n("cache_n")),
        cached_tokens: n("cache_n"),
        completion_tokens: n("predicted_n"),
        reasoning_tokens: 0,
    }
}

fn upstream_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .or_else(|| v.get("error").and_then(Value::as_str))
                .or_else(|| v.get("message").and_then(Value::as_str))
                .or_else(|| v.get("detail").and_then(Value::as_str))
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Splits a byte stream into SSE `data:` payloads (events end with a blank
/// line; chunks may cut lines anywhere).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
    usage: Option<Usage>,
    /// What llama-server's `timings` say (its own counts; the only ones an older one gives).
    timings: Option<Usage>,
    finish_reason: Option<FinishReason>,
    /// Inside reasoning text (vLLM's and SGLang's `reasoning_content`), given as `<think>…`.
    thinking: bool,
    /// Tool calls begun so far: a piece may continue one of them or begin the next, nothing else.
    calls: u32,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(nl) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
            // Comments (":") and other fields (event:, id:, retry:) are ignored.
        }
        events
    }
}
