//! OpenAI response bodies built from engine events: the non-streamed JSON object, or the SSE
//! frames of a stream (text deltas, the finishing chunk, the usage chunk when asked, `[DONE]`).
//! Shared by the HTTP server and the worker runner, so both answer byte-for-byte alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::engine::{EngineError, Event, FinishReason, TokenLogprob, Usage};
use crate::request::EngineRequest;
use crate::tools::{ToolCallAccumulator, ToolCallDelta};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// OpenAI's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 => "invalid_request_error",
        401 | 403 => "authentication_error",
        402 => "insufficient_quota",
        404 => "not_found_error",
        503 => "overloaded_error",
        504 => "timeout_error",
        _ => "server_error",
    }
}

/// The `{"error": …}` object for `status` and `message`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"message": message, "type": error_type(status), "code": status}})
}

/// The `{"error": …}` object of an engine error.
pub fn error_json(e: &EngineError) -> Value {
    error_body(e.http_status(), &e.to_string())
}

/// Turns one request's events into OpenAI bytes.
pub struct Formatter {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    stream: bool,
    include_usage: bool,
    first: bool,
    text: String,
    /// The tool calls of a non-streamed answer.
    calls: ToolCallAccumulator,
    /// Whether the request asked for log probabilities.
    wants_logprobs: bool,
    /// Log probabilities not yet sent (streamed: until the next frame; else all of them).
    logprobs: Vec<TokenLogprob>,
    /// Every streamed text frame's bytes up to the choice's fields: `data: {"id":…,"object":…,
    /// "created":…,"model":…,"choices":[{"index":0,` — built once, not per token.
    head: Vec<u8>,
}

impl Formatter {
    /// For `request` (its kind, model, streaming and usage options).
    pub fn new(request: &EngineRequest) -> Self {
        let mut f = Formatter {
            id: format!("cmpl-{}-{}", now(), NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            created: now(),
            model: request.model.clone(),
            chat: request.is_chat(),
            stream: request.stream,
            include_usage: request.include_usage,
            first: true,
            text: String::new(),
            calls: ToolCallAccumulator::default(),
            wants_logprobs: request.logprobs.is_some(),
            logprobs: Vec::new(),
            head: Vec::new(),
        };
        let object = if f.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        f.head = format!(
            "data: {{\"id\":{},\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,",
            Value::from(f.id.as_str()),
            f.created,
            Value::from(f.model.as_str()),
        )
        .into_bytes();
        f
    }

    /// Whether the answer is an SSE stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    fn frame(&self, choices: Value, usage: Option<Value>) -> Vec<u8> {
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        format!("data: {v}\n\n").into_bytes()
    }

    /// Any event: the bytes it adds to the answer now (a streamed frame, the end), or nothing
    /// (kept for a later frame or for the final object).
    pub fn event(&mut self, event: Event) -> Option<Vec<u8>> {
        match event {
            Event::Text(t) => self.text(&t),
            Event::ToolCall(d) => self.tool_call(&d),
            Event::Logprobs(l) => {
                self.logprobs(l);
                None
            }
            Event::Done {
                usage,
                finish_reason,
            } => Some(self.done(&usage, finish_reason)),
        }
    }

    /// Log probabilities of tokens to come: sent with the next frame (or the final object).
    pub fn logprobs(&mut self, l: Vec<TokenLogprob>) {
        self.logprobs.extend(l);
    }

    /// The `logprobs` object of a choice, taking the pending entries.
    fn take_logprobs(&mut self) -> Value {
        let content: Vec<Value> = self.logprobs.drain(..).map(|l| l.to_json()).collect();
        json!({"content": content})
    }

    /// More text: an SSE frame when streaming; otherwise kept for the final object (`None`).
    pub fn text(&mut self, t: &str) -> Option<Vec<u8>> {
        if !self.stream {
            self.text.push_str(t);
            return None;
        }
        if !self.logprobs.is_empty() {
            // Rare (only when asked for): built as a value.
            let logprobs = self.take_logprobs();
            let choice = if self.chat {
                let delta = if self.first {
                    json!({"role": "assistant", "content": t})
                } else {
                    json!({"content": t})
                };
                json!([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": null}])
            } else {
                json!([{"index": 0, "text": t, "logprobs": logprobs, "finish_reason": null}])
            };
            self.first = false;
            return Some(self.frame(choice, None));
        }
        // The same bytes as `frame` would make from a JSON value, written directly: this runs
        // once per streamed token.
        let field: &[u8] = match (self.chat, self.first) {
            (true, true) => br#""delta":{"role":"assistant","content":"#,
            (true, false) => br#""delta":{"content":"#,
            (false, _) => br#""text":"#,
        };
        let tail: &[u8] = if self.chat {
            b"},\"finish_reason\":null}]}\n\n"
        } else {
            b",\"finish_reason\":null}]}\n\n"
        };
        let mut out = Vec::with_capacity(self.head.len() + field.len() + t.len() + 8 + tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(field);
        serde_json::to_writer(&mut out, t).expect("a string serializes into memory");
        out.extend_from_slice(tail);
        self.first = false;
        Some(out)
    }

    /// A piece of a tool call: an SSE frame with `delta.tool_calls` when streaming; otherwise
    /// kept for the final message's `tool_calls` (`None`).
    pub fn tool_call(&mut self, d: &ToolCallDelta) -> Option<Vec<u8>> {
        if !self.stream {
            self.calls.push(d);
            return None;
        }
        let mut delta = serde_json::Map::new();
        if self.first {
            delta.insert("role".into(), "assistant".into());
            delta.insert("content".into(), Value::Null);
        }
        delta.insert("tool_calls".into(), json!([d.to_json()]));
        self.first = false;
        let mut choice = json!({"index": 0, "delta": delta, "finish_reason": null});
        if !self.logprobs.is_empty() {
            choice["logprobs"] = self.take_logprobs();
        }
        Some(self.frame(json!([choice]), None))
    }

    /// The end: the last SSE frames (finish, usage when asked, `[DONE]`), or the whole JSON object.
    pub fn done(&mut self, usage: &Usage, finish_reason: FinishReason) -> Vec<u8> {
        if !self.stream {
            let mut choice = if self.chat {
                let mut message = json!({"role": "assistant", "content": self.text});
                let calls = self.calls.calls();
                if !calls.is_empty() {
                    if self.text.trim().is_empty() {
                        message["content"] = Value::Null;
                    }
                    let calls: Vec<Value> = calls.iter().map(|c| c.to_json()).collect();
                    message["tool_calls"] = calls.into();
                }
                json!({"index": 0, "message": message, "finish_reason": finish_reason.as_str()})
            } else {
                json!({"index": 0, "text": self.text, "finish_reason": finish_reason.as_str()})
            };
            if self.wants_logprobs {
                choice["logprobs"] = self.take_logprobs();
            }
            let object = if self.chat {
                "chat.completion"
            } else {
                "text_completion"
            };
            let v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice], "usage": usage_json(usage)});
            return v.to_string().into_bytes();
        }
        let mut last = if self.chat {
            json!({"index": 0, "delta": {}, "finish_reason": finish_reason.as_str()})
        } else {
            json!({"index": 0, "text": "", "finish_reason": finish_reason.as_str()})
        };
        if !self.logprobs.is_empty() {
            last["logprobs"] = self.take_logprobs();
        }
        let last = json!([last]);
        let mut out = self.frame(last, None);
        if self.include_usage {
            out.extend(self.frame(json!([]), Some(usage_json(usage))));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    /// An error after the stream started: one SSE frame with the error object.
    pub fn error_frame(e: &EngineError) -> Vec<u8> {
        format!("data: {}\n\n", error_json(e)).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed text frame built as a JSON value (the reference).
    fn reference(f: &Formatter, first: bool, t: &str) -> Vec<u8> {
        let choice = if f.chat {
            let delta = if first {
                json!({"role": "assistant", "content": t})
            } else {
                json!({"content": t})
            };
            json!([{"index": 0, "delta": delta, "finish_reason": null}])
        } else {
            json!([{"index": 0, "text": t, "finish_reason": null}])
        };
        f.frame(choice, None)
    }

    #[test]
    fn streamed_text_frames_carry_the_same_json_as_a_built_value() {
        let texts = [
            "Paris",
            "",
            "say \"hi\"\\n",
            "line\nbreak\ttab\u{1}",
            "é 日本 🦀",
            "</script>",
        ];
        let chat = EngineRequest::parse_chat(
            br#"{"model":"m \"quoted\"","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        let completion =
            EngineRequest::parse_completion(br#"{"model":"m","prompt":"x","stream":true}"#)
                .unwrap();
        for request in [chat, completion] {
            let mut f = Formatter::new(&request);
            for (i, t) in texts.iter().enumerate() {
                let want = reference(&f, i == 0, t);
                let got = f.text(t).unwrap();
                // One SSE event carrying the same JSON (key order aside: OpenAI's own here).
                let event = |frame: &[u8]| -> Value {
                    let body = frame.strip_prefix(b"data: ").unwrap();
                    assert!(body.ends_with(b"\n\n"));
                    serde_json::from_slice(&body[..body.len() - 2]).unwrap()
                };
                let v = event(&got);
                assert_eq!(v, event(&want));
                let text = String::from_utf8(got.clone()).unwrap();
                assert!(text.starts_with("data: {\"id\":\"cmpl-"), "{text}");
                let content = if f.chat {
                    &v["choices"][0]["delta"]["content"]
                } else {
                    &v["choices"][0]["text"]
                };
                assert_eq!(content, *t);
            }
        }
    }
}
