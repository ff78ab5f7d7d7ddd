//! OpenAI requests as engines accept them: parsed from JSON, checked
//! against a field whitelist, normalized into an [`EngineRequest`].
//!
//! Only fields every engine can honour are accepted; anything else is a
//! 400-style [`RequestError`] naming the field, so a client never believes
//! an option (tools, logprobs, n > 1, ...) was applied when it was not.

use serde_json::{Map, Value};

use crate::tools::{Tool, ToolCall, ToolChoice};

/// Fields accepted in both `/v1/chat/completions` and `/v1/completions`.
pub const SHARED_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "n",
];

/// Fields apps send that concern the caller, not the generation (the end user's id, metadata
/// to keep with the request, whether to store it, the service tier, parallel tool calls when no
/// tools are given): accepted — checked for their OpenAI type — and kept out of the engine, so an
/// app written for OpenAI works unchanged. Never a 400 when well-formed.
pub const ACCEPTED_NOT_FORWARDED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
];

/// Fields accepted only in `/v1/chat/completions`.
pub const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "response_format",
    "tools",
    "tool_choice",
    "logprobs",
    "top_logprobs",
];

/// Most `top_logprobs` (as OpenAI).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// Fields accepted only in `/v1/completions`.
pub const COMPLETION_FIELDS: &[&str] = &["prompt"];

/// Most stop sequences accepted (as OpenAI).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Why a request was refused (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not a JSON object.
    #[error("request body is not a JSON object: {0}")]
    InvalidJson(String),
    /// A field outside the whitelist.
    #[error("field `{0}` is not supported")]
    UnsupportedField(String),
    /// A required field is absent.
    #[error("field `{0}` is required")]
    MissingField(&'static str),
    /// A field has the wrong type or an out-of-range value.
    #[error("field `{field}` {reason}")]
    InvalidField {
        /// The field (dotted path for nested ones).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// An optional boolean `key` of `obj` (`field` names it in errors); null is as if absent.
pub(crate) fn optional_bool(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<bool>, RequestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(field, "must be a boolean")),
    }
}

/// A [`RequestError::InvalidField`] for `field`.
pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> RequestError {
    RequestError::InvalidField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (content parts are joined).
    pub content: String,
    /// The calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of plain text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The OpenAI JSON form (what chat templates and upstream engines are given).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("role".into(), self.role.clone().into());
        m.insert("content".into(), self.content.clone().into());
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self.tool_calls.iter().map(ToolCall::to_json).collect();
            m.insert("tool_calls".into(), calls.into());
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), id.clone().into());
        }
        Value::Object(m)
    }
}

/// What to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text.
    Text(String),
}

/// Sampling parameters; `None` means the engine's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens.
    pub top_k: Option<i32>,
    /// Makes sampling reproducible.
    pub seed: Option<u64>,
    /// Penalty for tokens already present.
    pub presence_penalty: Option<f32>,
    /// Penalty proportional to token frequency.
    pub frequency_penalty: Option<f32>,
    /// Added to these tokens' logits (`logit_bias`: token id → -100…100), in id order.
    pub logit_bias: Vec<(u32, f32)>,
}

/// Most `logit_bias` entries accepted (as OpenAI).
pub const MAX_LOGIT_BIAS: usize = 300;

/// Reads `logit_bias`: an object from token ids (decimal strings) to biases in -100…100.
fn logit_bias(obj: &Map<String, Value>) -> Result<Vec<(u32, f32)>, RequestError> {
    let Some(v) = obj.get("logit_bias").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let m = v
        .as_object()
        .ok_or_else(|| invalid("logit_bias", "must be an object from token ids to biases"))?;
    if m.len() > MAX_LOGIT_BIAS {
        return Err(invalid(
            "logit_bias",
            format!("must have at most {MAX_LOGIT_BIAS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(m.len());
    for (k, b) in m {
        let field = format!("logit_bias.{k}");
        let id: u32 = k
            .parse()
            .map_err(|_| invalid(&field, "is not a token id (a non-negative integer)"))?;
        let bias = b
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| invalid(&field, "must be a number from -100 to 100"))?;
        out.push((id, bias as f32));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    /// The model asked for.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Most completion tokens (`max_completion_tokens` wins over `max_tokens`).
    pub max_tokens: Option<u32>,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the caller wants SSE.
    pub stream: bool,
    /// Whether the caller wants a final usage chunk in the stream.
    pub include_usage: bool,
    /// Keep generating past end-of-sequence until `max_tokens`. For
    /// benchmarks only: never set from a client's JSON.
    pub ignore_eos: bool,
    /// The shape the answer must have (`response_format`); `None` for free text.
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call (`tools`); empty for none.
    pub tools: Vec<Tool>,
    /// Whether and which to call (`tool_choice`).
    pub tool_choice: ToolChoice,
    /// `logprobs`: `None` for none; `Some(k)`: each token's log probability and the `k` most
    /// likely alternatives (`top_logprobs`).
    pub logprobs: Option<u8>,
}

/// A constraint on the answer's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// `{"type": "json_object"}`: the answer is one JSON object (enforced by a grammar in the
    /// embedded engine, passed on to an HTTP engine).
    JsonObject,
    /// `{"type": "json_schema", "json_schema": …}`: JSON that fits a schema (see
    /// [`crate::schema`]).
    JsonSchema {
        /// The `json_schema` object as given (what an HTTP engine is sent).
        spec: Value,
        /// The grammar that enforces it in the embedded engine.
        grammar: String,
    },
}

/// Reads `response_format`: `text` (or null) is free text, `json_object` a JSON object,
/// `json_schema` JSON that fits its schema — one the grammar can enforce, else refused naming
/// what it cannot (never silently ignored).
fn response_format(obj: &Map<String, Value>) -> Result<Option<ResponseFormat>, RequestError> {
    let Some(v) = obj.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let o = v
        .as_object()
        .ok_or_else(|| invalid("response_format", "must be an object"))?;
    if let Some(k) = o
        .keys()
        .find(|k| !["type", "json_schema"].contains(&k.as_str()))
    {
        return Err(RequestError::UnsupportedField(format!(
            "response_format.{k}"
        )));
    }
    match o.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = o
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or(RequestError::MissingField("response_format.json_schema"))?;
            let so = spec.as_object().map(|m| m.keys()).into_iter().flatten();
            for k in so {
                if !["name", "schema", "strict", "description"].contains(&k.as_str()) {
                    return Err(RequestError::UnsupportedField(format!(
                        "response_format.json_schema.{k}"
                    )));
                }
            }
            if !spec.get("name").is_some_and(Value::is_string) {
                return Err(RequestError::MissingField(
                    "response_format.json_schema.name",
                ));
            }
            let schema = spec.get("schema").ok_or(RequestError::MissingField(
                "response_format.json_schema.schema",
            ))?;
            let grammar = crate::schema::grammar(schema).map_err(|e| {
                invalid(
                    &format!("response_format.json_schema.{}", e.path),
                    format!("cannot be enforced: {}", e.why),
                )
            })?;
            Ok(Some(ResponseFormat::JsonSchema {
                spec: spec.clone(),
                grammar,
            }))
        }
        Some(other) => Err(invalid(
            "response_format.type",
            format!("must be text, json_object or json_schema, not {other:?}"),
        )),
        None => Err(RequestError::MissingField("response_format.type")),
    }
}

impl EngineRequest {
    /// Parses a `/v1/chat/completions` body.
    pub fn parse_chat(body: &[u8]) -> Result<Self, RequestError> {
        let obj = object(body)?;
        check_fields(&obj, CHAT_FIELDS)?;
        let messages = obj
            .get("messages")
            .ok_or(RequestError::MissingField("messages"))?;
        let prompt = Prompt::Chat(parse_messages(messages)?);
        let tools = crate::tools::parse_tools(&obj)?;
        let tool_choice = crate::tools::parse_tool_choice(&obj, &tools)?;
        let base = common(&obj, prompt)?;
        if tool_choice != ToolChoice::None && base.response_format.is_some() {
            return Err(invalid(
                "response_format",
                "cannot be combined with tools the model may call (use tool_choice \"none\")",
            ));
        }
        Ok(EngineRequest {
            tools,
            tool_choice,
            logprobs: logprobs(&obj)?,
            ..base
        })
    }

    /// Parses a `/v1/completions` body.
    pub fn parse_completion(body: &[u8]) -> Result<Self, RequestError> {
        let obj = object(body)?;
        check_fields(&obj, COMPLETION_FIELDS)?;
        let prompt = match obj
            .get("prompt")
            .ok_or(RequestError::MissingField("prompt"))?
        {
            Value::String(s) => s.clone(),
            Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            _ => {
                return Err(invalid(
                    "prompt",
                    "must be a string (or an array of exactly one string)",
                ))
            }
        };
        common(&obj, Prompt::Text(prompt))
    }

    /// The request as JSON for an OpenAI-compatible upstream: only
    /// whitelisted fields, always streamed, always with usage.
    pub fn to_upstream_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("model".into(), self.model.clone().into());
        match &self.prompt {
            Prompt::Chat(msgs) => {
                let msgs: Vec<Value> = msgs.iter().map(ChatMessage::to_json).collect();
                m.insert("messages".into(), msgs.into());
            }
            Prompt::Text(t) => {
                m.insert("prompt".into(), t.clone().into());
            }
        }
        if let Some(n) = self.max_tokens {
            m.insert("max_tokens".into(), n.into());
        }
        let s = &self.sampling;
        let floats = [
            ("temperature", s.temperature),
            ("top_p", s.top_p),
            ("presence_penalty", s.presence_penalty),
            ("frequency_penalty", s.frequency_penalty),
        ];
        for (k, v) in floats {
            if let Some(v) = v {
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        if let Some(k) = s.top_k {
            m.insert("top_k".into(), k.into());
        }
        if let Some(seed) = s.seed {
            m.insert("seed".into(), seed.into());
        }
        if !self.stop.is_empty() {
            m.insert("stop".into(), self.stop.clone().into());
        }
        if !s.logit_bias.is_empty() {
            let bias: Map<String, Value> = s
                .logit_bias
                .iter()
                .map(|(id, b)| (id.to_string(), serde_json::json!(b)))
                .collect();
            m.insert("logit_bias".into(), bias.into());
        }
        match &self.response_format {
            None => {}
            Some(ResponseFormat::JsonObject) => {
                m.insert(
                    "response_format".into(),
                    serde_json::json!({"type": "json_object"}),
                );
            }
            Some(ResponseFormat::JsonSchema { spec, .. }) => {
                m.insert(
                    "response_format".into(),
                    serde_json::json!({"type": "json_schema", "json_schema": spec}),
                );
            }
        }
        if let Some(k) = self.logprobs {
            m.insert("logprobs".into(), true.into());
            m.insert("top_logprobs".into(), k.into());
        }
        if !self.tools.is_empty() {
            let tools: Vec<Value> = self.tools.iter().map(Tool::to_json).collect();
            m.insert("tools".into(), tools.into());
            m.insert("tool_choice".into(), self.tool_choice.to_json());
        }
        m.insert("stream".into(), true.into());
        m.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        Value::Object(m)
    }

    /// Whether this is a chat request.
    pub fn is_chat(&self) -> bool {
        matches!(self.prompt, Prompt::Chat(_))
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RequestError::InvalidJson("expected an object".into())),
        Err(e) => Err(RequestError::InvalidJson(e.to_string())),
    }
}

fn check_fields(obj: &Map<String, Value>, specific: &[&str]) -> Result<(), RequestError> {
    // Report the first unsupported field in a stable (sorted) order.
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    let allowed = |k: &str| {
        SHARED_FIELDS.contains(&k) || specific.contains(&k) || ACCEPTED_NOT_FORWARDED.contains(&k)
    };
    if let Some(k) = keys.into_iter().find(|k| !allowed(k)) {
        return Err(RequestError::UnsupportedField(k.clone()));
    }
    check_not_forwarded(obj)
}

/// The caller's fields must still have OpenAI's types: `user` and `service_tier` strings,
/// `store` and `parallel_tool_calls` booleans, `metadata` at most 16 string values under keys of
/// at most 64 characters (values at most 512). Null is as if absent.
fn check_not_forwarded(obj: &Map<String, Value>) -> Result<(), RequestError> {
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    for k in ["user", "service_tier"] {
        if present(k).is_some_and(|v| !v.is_string()) {
            return Err(invalid(k, "must be a string"));
        }
    }
    for k in ["store", "parallel_tool_calls"] {
        optional_bool(obj, k, k)?;
    }
    if let Some(m) = present("metadata") {
        let m = m
            .as_object()
            .ok_or_else(|| invalid("metadata", "must be an object of strings"))?;
        if m.len() > 16 {
            return Err(invalid("metadata", "must have at most 16 keys"));
        }
        for (k, v) in m {
            let field = format!("metadata.{k}");
            if k.chars().count() > 64 {
                return Err(invalid(&field, "key must be at most 64 characters"));
            }
            match v.as_str() {
                Some(s) if s.chars().count() <= 512 => {}
                Some(_) => return Err(invalid(&field, "must be at most 512 characters")),
                None => return Err(invalid(&field, "must be a string")),
            }
        }
    }
    Ok(())
}

fn parse_messages(v: &Value) -> Result<Vec<ChatMessage>, RequestError> {
    let arr = v
        .as_array()
        .ok_or_else(|| invalid("messages", "must be an array"))?;
    if arr.is_empty() {
        return Err(invalid("messages", "must not be empty"));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |f: &str| format!("messages[{i}].{f}");
            let obj = m
                .as_object()
                .ok_or_else(|| invalid(&format!("messages[{i}]"), "must be an object"))?;
            let allowed: &[&str] = match obj.get("role").and_then(Value::as_str) {
                Some("assistant") => &["role", "content", "name", "tool_calls", "refusal"],
                Some("tool") => &["role", "content", "tool_call_id"],
                _ => &["role", "content", "name"],
            };
            if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(RequestError::UnsupportedField(field(k)));
            }
            let role = obj
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&field("role"), "must be a string"))?;
            if !["system", "user", "assistant", "developer", "tool"].contains(&role) {
                return Err(invalid(
                    &field("role"),
                    format!("`{role}` is not one of system, user, assistant, developer, tool"),
                ));
            }
            let content = match obj.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_parts(parts, &field("content"))?,
                Some(Value::Null) | None => String::new(),
                Some(_) => {
                    return Err(invalid(
                        &field("content"),
                        "must be a string or an array of text parts",
                    ))
                }
            };
            let tool_calls = match obj.get("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => crate::tools::parse_message_calls(v, &field("tool_calls"))?,
            };
            let tool_call_id = match (role, obj.get("tool_call_id")) {
                ("tool", Some(Value::String(id))) => Some(id.clone()),
                ("tool", _) => {
                    return Err(invalid(
                        &field("tool_call_id"),
                        "must be the id of the call answered",
                    ))
                }
                _ => None,
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content,
                tool_calls,
                tool_call_id,
            })
        })
        .collect()
}

fn text_parts(parts: &[Value], field: &str) -> Result<String, RequestError> {
    let mut out = String::new();
    for p in parts {
        match (
            p.get("type").and_then(Value::as_str),
            p.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => out.push_str(t),
            _ => {
                return Err(invalid(
                    field,
                    "only text parts ({\"type\":\"text\",\"text\":...}) are supported",
                ))
            }
        }
    }
    Ok(out)
}

fn common(obj: &Map<String, Value>, prompt: Prompt) -> Result<EngineRequest, RequestError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(invalid("model", "must be a non-empty string")),
        None => return Err(RequestError::MissingField("model")),
    };
    if let Some(n) = obj.get("n") {
        if n.as_u64() != Some(1) {
            return Err(invalid("n", "must be 1 (one choice per request)"));
        }
    }
    let max_tokens = match (obj.get("max_completion_tokens"), obj.get("max_tokens")) {
        (Some(v), _) => Some(positive_u32(v, "max_completion_tokens")?),
        (None, Some(v)) => Some(positive_u32(v, "max_tokens")?),
        (None, None) => None,
    };
    let sampling = Sampling {
        temperature: float_in(obj, "temperature", 0.0, 2.0)?,
        top_p: float_in(obj, "top_p", 0.0, 1.0)?,
        top_k: match obj.get("top_k") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|k| (-1..=i64::from(i32::MAX)).contains(k))
                    .ok_or_else(|| invalid("top_k", "must be an integer ≥ -1"))?
                    as i32,
            ),
        },
        seed: match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .or_else(|| v.as_i64().map(|i| i as u64))
                    .ok_or_else(|| invalid("seed", "must be an integer"))?,
            ),
        },
        presence_penalty: float_in(obj, "presence_penalty", -2.0, 2.0)?,
        frequency_penalty: float_in(obj, "frequency_penalty", -2.0, 2.0)?,
        logit_bias: logit_bias(obj)?,
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("stop", "must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop", "must be a string or an array of strings")),
    };
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(invalid(
            "stop",
            format!("may hold at most {MAX_STOP_SEQUENCES} sequences"),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "must not contain an empty string"));
    }
    let stream = optional_bool(obj, "stream", "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "include_usage") {
                return Err(RequestError::UnsupportedField(format!(
                    "stream_options.{k}"
                )));
            }
            match o.get("include_usage") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid("stream_options.include_usage", "must be a boolean"))
                }
            }
        }
        Some(_) => return Err(invalid("stream_options", "must be an object")),
    };
    Ok(EngineRequest {
        model,
        prompt,
        max_tokens,
        sampling,
        stop,
        stream,
        include_usage,
        ignore_eos: false,
        response_format: response_format(obj)?,
        tools: Vec::new(),
        tool_choice: ToolChoice::None,
        logprobs: None,
    })
}

/// Reads `logprobs` (a boolean) and `top_logprobs` (0…20, only with `logprobs: true`).
fn logprobs(obj: &Map<String, Value>) -> Result<Option<u8>, RequestError> {
    let on = optional_bool(obj, "logprobs", "logprobs")?.unwrap_or(false);
    let top = match obj.get("top_logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|k| *k <= u64::from(MAX_TOP_LOGPROBS))
                .ok_or_else(|| {
                    invalid(
                        "top_logprobs",
                        format!("must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
                    )
                })? as u8,
        ),
    };
    match (on, top) {
        (false, Some(_)) => Err(invalid("top_logprobs", "needs `logprobs: true`")),
        (false, None) => Ok(None),
        (true, k) => Ok(Some(k.unwrap_or(0))),
    }
}

fn positive_u32(v: &Value, field: &str) -> Result<u32, RequestError> {
    v.as_u64()
        .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| invalid(field, "must be a positive integer"))
}

fn float_in(
    obj: &Map<String, Value>,
    field: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f32>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
            _ => Err(invalid(
                field,
                format!("must be a number between {lo} and {hi}"),
            )),
        },
    }
}
