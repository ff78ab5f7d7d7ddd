//! The HTTP engine: any OpenAI-compatible server (vLLM, SGLang,
//! llama-server) as an [`Engine`].
//!
//! It forwards only whitelisted fields, always asks for a stream with
//! `stream_options.include_usage`, and reads the usage from the final SSE
//! chunk. A stream that ends without usage is an error, never a free
//! answer: COCOON bills such streamed answers as 0 tokens; we refuse to.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::engine::{
    generation, Engine, EngineError, Event, FinishReason, Generation, GenerationSender, Usage,
};
use crate::request::EngineRequest;

/// Default time allowed for the upstream to start answering.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence between two chunks of an answer.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// An OpenAI-compatible upstream server.
#[derive(Debug, Clone)]
pub struct HttpEngine {
    base_url: String,
    models: Vec<String>,
    client: reqwest::Client,
    /// Time allowed until the response headers arrive.
    pub connect_timeout: Duration,
    /// Longest silence between chunks.
    pub idle_timeout: Duration,
}

impl HttpEngine {
    /// An engine forwarding to `base_url` (e.g. `http://127.0.0.1:8000`)
    /// for the given model names.
    pub fn new(base_url: &str, models: Vec<String>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            models,
            client: reqwest::Client::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl Engine for HttpEngine {
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn generate(&self, request: EngineRequest) -> Result<Generation, EngineError> {
        if !self.models.is_empty() && !self.models.contains(&request.model) {
            return Err(EngineError::UnknownModel(request.model));
        }
        let path = if request.is_chat() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let url = format!("{}{path}", self.base_url);
        let body = request.to_upstream_json();
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
        loop {
            let next = tokio::time::timeout(self.idle_timeout, bytes.next())
                .await
                .map_err(|_| EngineError::Timeout(self.idle_timeout))?;
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
                    return finish(&parser, tx).await;
                }
                let v: Value = serde_json::from_str(&data).map_err(|e| EngineError::Upstream {
                    status: 200,
                    message: format!("bad SSE data: {e}"),
                })?;
                if let Some(text) = apply_chunk(&mut parser, &v, chat)? {
                    if !tx.send(Ok(Event::Text(text))).await {
                        return Ok(());
                    }
                }
            }
        }
        finish(&parser, tx).await
    }
}

async fn finish(parser: &SseParser, tx: &GenerationSender) -> Result<(), EngineError> {
    let usage = parser.usage.ok_or_else(|| EngineError::Upstream {
        status: 200,
        message: "stream ended without usage; refusing to bill an unknown number of tokens".into(),
    })?;
    tx.send(Ok(Event::Done {
        usage,
        finish_reason: parser.finish_reason.unwrap_or(FinishReason::Stop),
    }))
    .await;
    Ok(())
}

/// Applies one parsed SSE JSON chunk; returns new text, if any.
fn apply_chunk(
    parser: &mut SseParser,
    v: &Value,
    chat: bool,
) -> Result<Option<String>, EngineError> {
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
                .unwrap_or("error in stream")
                .to_string(),
        });
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        parser.usage = Some(parse_usage(u));
    }
    let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
        return Ok(None);
    };
    match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => parser.finish_reason = Some(FinishReason::Length),
        Some(_) => parser.finish_reason = Some(FinishReason::Stop),
        None => {}
    }
    let text = if chat {
        choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
    } else {
        choice.get("text").and_then(Value::as_str)
    };
    Ok(text.filter(|t| !t.is_empty()).map(str::to_string))
}

/// Reads an OpenAI usage object (missing details count as 0).
fn parse_usage(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n(u.get("prompt_tokens")),
        cached_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")),
        completion_tokens: n(u.get("completion_tokens")),
        reasoning_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
    }
}

fn upstream_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
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
    finish_reason: Option<FinishReason>,
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
