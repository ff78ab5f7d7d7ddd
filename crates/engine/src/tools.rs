//! Tool calling (OpenAI's `tools`, `tool_choice`, `tool_calls`): the request's tools read and
//! checked, the text a model writes when it calls a tool found in its output, and the grammar
//! that makes it call one when the caller requires it.
//!
//! Models call tools by writing text in their family's form:
//! - [`ToolFormat::Hermes`] — Qwen 2.5/3, Hermes, and what we teach models whose template knows
//!   no tools (SmolLM2): `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`.
//! - [`ToolFormat::DeepSeek`] — DeepSeek V3 / R1 and their distills:
//!   `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{...}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>`
//!   (and V3.1's `<｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`).
//!
//! [`ToolCallParser`] reads generated text as it streams and splits it into plain text and
//! complete calls. A call is released only once it is whole and names a tool of the request with
//! JSON-object arguments; anything malformed goes back to the caller as the text the model
//! wrote, never as an error. Text inside `<think>…</think>` is never read as a call.
//!
//! Pure logic, tested without a model.

use serde_json::{Map, Value};

use crate::request::{invalid, optional_bool, ChatMessage, RequestError};

/// Most tools one request may carry (as OpenAI).
pub const MAX_TOOLS: usize = 128;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments (`{"type": "object", "properties": {}}` when absent).
    pub parameters: Value,
    /// `strict` as given (the arguments must fit the schema).
    pub strict: Option<bool>,
}

impl Tool {
    /// The tool as OpenAI writes it (`{"type": "function", "function": {...}}`), which is also
    /// what chat templates are given.
    pub fn to_json(&self) -> Value {
        let mut f = Map::new();
        f.insert("name".into(), self.name.clone().into());
        if let Some(d) = &self.description {
            f.insert("description".into(), d.clone().into());
        }
        f.insert("parameters".into(), self.parameters.clone());
        if let Some(s) = self.strict {
            f.insert("strict".into(), s.into());
        }
        serde_json::json!({"type": "function", "function": f})
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// No call (the default without tools): tools are neither shown nor parsed.
    None,
    /// At least one call, enforced by a grammar.
    Required,
    /// A call of this function, enforced by a grammar.
    Function(String),
}

impl ToolChoice {
    /// The tools a grammar must make the model call: all of them for `required`, the named one
    /// for a function; none for `auto` and `none` (the model decides, or calls nothing).
    pub fn forced_tools<'a>(&self, tools: &'a [Tool]) -> Vec<&'a Tool> {
        match self {
            Self::Auto | Self::None => Vec::new(),
            Self::Required => tools.iter().collect(),
            Self::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        }
    }

    /// The OpenAI JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Auto => "auto".into(),
            Self::None => "none".into(),
            Self::Required => "required".into(),
            Self::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        }
    }
}

/// A complete call the model made (or an assistant message carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_…`, unique within the answer.
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

impl ToolCall {
    /// The OpenAI JSON form (`{"id", "type": "function", "function": {"name", "arguments"}}`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }

    /// The whole call as one streamed piece, at `index`.
    pub fn as_delta(&self, index: u32) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(self.id.clone()),
            name: Some(self.name.clone()),
            arguments: self.arguments.clone(),
        }
    }
}

/// One piece of a streamed call, as `delta.tool_calls[]` carries it: the first piece of a call
/// has its id and name, later ones only more argument text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, …).
    pub index: u32,
    /// The call's id (first piece only).
    pub id: Option<String>,
    /// The function (first piece only).
    pub name: Option<String>,
    /// More argument text.
    pub arguments: String,
}

impl ToolCallDelta {
    /// The `delta.tool_calls[]` entry.
    pub fn to_json(&self) -> Value {
        let mut function = Map::new();
        if let Some(n) = &self.name {
            function.insert("name".into(), n.clone().into());
        }
        function.insert("arguments".into(), self.arguments.clone().into());
        let mut v = Map::new();
        v.insert("index".into(), self.index.into());
        if let Some(id) = &self.id {
            v.insert("id".into(), id.clone().into());
            v.insert("type".into(), "function".into());
        }
        v.insert("function".into(), function.into());
        v.into()
    }
}

/// Gathers the deltas of an answer into whole calls, in index order.
#[derive(Debug, Default, Clone)]
pub struct ToolCallAccumulator {
    calls: Vec<ToolCall>,
}

impl ToolCallAccumulator {
    /// Adds one delta: a piece of a call already begun, or the first piece of the next one.
    /// A piece for any other index (skipping ahead, as an upstream server might claim) is
    /// dropped and `false` returned, so no index can make the answer allocate.
    pub fn push(&mut self, d: &ToolCallDelta) -> bool {
        let i = d.index as usize;
        if i > self.calls.len() {
            return false;
        }
        if i == self.calls.len() {
            self.calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let c = &mut self.calls[i];
        if let Some(id) = &d.id {
            c.id = id.clone();
        }
        if let Some(n) = &d.name {
            c.name.push_str(n);
        }
        c.arguments.push_str(&d.arguments);
        true
    }

    /// The calls so far.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }
}

/// A fresh call id: `call_` and 24 random hex digits.
pub fn new_call_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("call_{}", hex::encode(b))
}

fn only_keys(obj: &Map<String, Value>, keys: &[&str], path: &str) -> Result<(), RequestError> {
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(RequestError::UnsupportedField(format!("{path}.{k}"))),
        None => Ok(()),
    }
}

/// The function of a `{"type": "function", "function": {…}}` object at `path` (a tool, a
/// call), holding only `keys`; and its path.
fn function_of<'a>(
    o: &'a Map<String, Value>,
    path: &str,
    keys: &[&str],
) -> Result<(&'a Map<String, Value>, String), RequestError> {
    if o.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid(&format!("{path}.type"), "must be \"function\""));
    }
    let fpath = format!("{path}.function");
    let f = o
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&fpath, "must be an object"))?;
    only_keys(f, keys, &fpath)?;
    Ok((f, fpath))
}

/// Whether `name` is a function name OpenAI accepts.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads `tools` (absent or null: none).
pub fn parse_tools(obj: &Map<String, Value>) -> Result<Vec<Tool>, RequestError> {
    let Some(v) = obj.get("tools").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let arr = v
        .as_array()
        .ok_or_else(|| invalid("tools", "must be an array of tools"))?;
    if arr.len() > MAX_TOOLS {
        return Err(invalid(
            "tools",
            format!("must hold at most {MAX_TOOLS} tools"),
        ));
    }
    let mut tools: Vec<Tool> = Vec::with_capacity(arr.len());
    for (i, t) in arr.iter().enumerate() {
        let path = format!("tools[{i}]");
        let o = t
            .as_object()
            .ok_or_else(|| invalid(&path, "must be an object"))?;
        only_keys(o, &["type", "function"], &path)?;
        let (f, fpath) = function_of(o, &path, &["name", "description", "parameters", "strict"])?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_name(n))
            .ok_or_else(|| {
                invalid(
                    &format!("{fpath}.name"),
                    "must be 1 to 64 letters, digits, underscores or dashes",
                )
            })?;
        if tools.iter().any(|t| t.name == name) {
            return Err(invalid(
                &format!("{fpath}.name"),
                format!("`{name}` names two tools"),
            ));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid(&format!("{fpath}.description"), "must be a string")),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(invalid(
                    &format!("{fpath}.parameters"),
                    "must be a JSON Schema object",
                ))
            }
        };
        let strict = optional_bool(f, "strict", &format!("{fpath}.strict"))?;
        tools.push(Tool {
            name: name.to_string(),
            description,
            parameters,
            strict,
        });
    }
    Ok(tools)
}

/// Reads `tool_choice` for these tools: absent means `auto` with tools and `none` without; a
/// choice other than `none` without tools, or a function not among them, is refused.
pub fn parse_tool_choice(
    obj: &Map<String, Value>,
    tools: &[Tool],
) -> Result<ToolChoice, RequestError> {
    let default = if tools.is_empty() {
        ToolChoice::None
    } else {
        ToolChoice::Auto
    };
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("must be none, auto, required or a function, not {other:?}"),
                ))
            }
        },
        Some(Value::Object(o)) => {
            only_keys(o, &["type", "function"], "tool_choice")?;
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid("tool_choice.type", "must be \"function\""));
            }
            let f = o
                .get("function")
                .and_then(Value::as_object)
                .ok_or(RequestError::MissingField("tool_choice.function"))?;
            only_keys(f, &["name"], "tool_choice.function")?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or(RequestError::MissingField("tool_choice.function.name"))?;
            ToolChoice::Function(name.to_string())
        }
        Some(_) => return Err(invalid("tool_choice", "must be a string or an object")),
    };
    match &choice {
        ToolChoice::None => {}
        _ if tools.is_empty() => {
            return Err(invalid(
                "tool_choice",
                "needs `tools` (there is nothing to call)",
            ))
        }
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
            return Err(invalid(
                "tool_choice.function.name",
                format!("`{name}` is not one of the request's tools"),
            ))
        }
        _ => {}
    }
    Ok(choice)
}

/// Reads an assistant message's `tool_calls` (`path` names it in errors).
pub fn parse_message_calls(v: &Value, path: &str) -> Result<Vec<ToolCall>, RequestError> {
    let arr = v
        .as_array()
        .ok_or_else(|| invalid(path, "must be an array of tool calls"))?;
    arr.iter()
        .enumerate()
        .map(|(i, c)| {
            let p = format!("{path}[{i}]");
            let o = c
                .as_object()
                .ok_or_else(|| invalid(&p, "must be an object"))?;
            only_keys(o, &["id", "type", "function"], &p)?;
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{p}.id"), "must be a string"))?;
            let (f, fp) = function_of(o, &p, &["name", "arguments"])?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{fp}.name"), "must be a string"))?;
            let arguments = f
                .get("arguments")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{fp}.arguments"), "must be a string of JSON"))?;
            Ok(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments: arguments.to_string(),
            })
        })
        .collect()
}

/// How a model family writes its calls (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>`.
    Hermes,
    /// DeepSeek's `<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`.
    DeepSeek,
}

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

impl ToolFormat {
    /// The family a chat template writes: DeepSeek's when it renders its markers, else Hermes'.
    pub fn of_template(source: &str) -> Self {
        if source.contains("tool▁call▁begin") {
            Self::DeepSeek
        } else {
            Self::Hermes
        }
    }

    fn call_open(self) -> &'static str {
        match self {
            Self::Hermes => "<tool_call>",
            Self::DeepSeek => DS_CALL_BEGIN,
        }
    }

    fn call_close(self) -> &'static str {
        match self {
            Self::Hermes => "</tool_call>",
            Self::DeepSeek => DS_CALL_END,
        }
    }

    /// Markers around a group of calls, dropped from the text.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Self::Hermes => &[],
            Self::DeepSeek => &[DS_CALLS_BEGIN, DS_CALLS_END],
        }
    }

    /// The text of one call in this family (how an assistant message's calls are shown to a
    /// template that does not render them itself).
    pub fn call_text(self, name: &str, arguments: &str) -> String {
        let (before, after) = self.call_frame(name);
        format!("{before}{arguments}{after}")
    }

    /// The name and arguments in the text between a call's open and close tags.
    fn parse_body(self, body: &str) -> Option<(String, Value)> {
        match self {
            Self::Hermes => {
                let v: Value = serde_json::from_str(body.trim()).ok()?;
                let o = v.as_object()?;
                let name = o.get("name")?.as_str()?.to_string();
                let args = match o.get("arguments").or_else(|| o.get("parameters")) {
                    None => Value::Object(Map::new()),
                    // Some models write the arguments as a string of JSON.
                    Some(Value::String(s)) => serde_json::from_str(s).ok()?,
                    Some(a) => a.clone(),
                };
                Some((name, args))
            }
            Self::DeepSeek => {
                let (head, rest) = body.split_once(DS_SEP)?;
                let (name, args) = if head.trim() == "function" {
                    let (name, args) = rest.split_once('\n')?;
                    let args = args.trim();
                    let args = args
                        .strip_prefix("```json")
                        .or_else(|| args.strip_prefix("```"))
                        .unwrap_or(args);
                    (name.trim(), args.strip_suffix("```").unwrap_or(args))
                } else {
                    (head.trim(), rest)
                };
                Some((name.to_string(), serde_json::from_str(args.trim()).ok()?))
            }
        }
    }

    /// The text around a call's arguments in this family's form: what a call of `name` writes
    /// before its arguments, and after them.
    pub fn call_frame(self, name: &str) -> (String, String) {
        match self {
            Self::Hermes => (
                format!(
                    "<tool_call>\n{{\"name\": {}, \"arguments\": ",
                    Value::from(name)
                ),
                "}\n</tool_call>".to_string(),
            ),
            Self::DeepSeek => (
                format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}{name}\n```json\n"),
                format!("\n```{DS_CALL_END}{DS_CALLS_END}"),
            ),
        }
    }

    /// The GBNF grammar that makes the model call `choice` (required: one of `tools`; a named
    /// function: that one) in this family's form. Arguments fit the tool's schema where the
    /// schema grammar can enforce it, else any JSON object. `None` for `auto` and `none`.
    pub fn grammar(self, tools: &[Tool], choice: &ToolChoice) -> Option<String> {
        let chosen = choice.forced_tools(tools);
        let mut rules = String::new();
        let mut alts = Vec::new();
        for (i, tool) in chosen.iter().enumerate() {
            let args = match crate::schema::rules(&tool.parameters, "parameters", &format!("t{i}r"))
            {
                Ok((root, r)) => {
                    rules.push_str(&r);
                    root
                }
                Err(_) => "any-object".to_string(),
            };
            let (before, after) = self.call_frame(&tool.name);
            alts.push(format!(
                "{} {args} {}",
                crate::schema::gbnf_string(&before),
                crate::schema::gbnf_string(&after)
            ));
        }
        if alts.is_empty() {
            return None;
        }
        Some(format!(
            "root ::= {}\n{rules}{}{}",
            alts.join(" | "),
            crate::schema::ANY_OBJECT,
            crate::schema::BASICS
        ))
    }

    /// What a model whose template knows no tools is told in its system prompt: the tools and
    /// how to call them in this family's form.
    pub fn system_prompt(self, tools: &[Tool]) -> String {
        let mut s = String::from(
            "# Tools\n\nYou can call functions to help answer. Their signatures, one JSON object per line, are between <tools></tools>:\n<tools>",
        );
        for t in tools {
            s.push('\n');
            s.push_str(&t.to_json().to_string());
        }
        s.push_str("\n</tools>\n\nTo call a function, answer with exactly:\n");
        s.push_str(&self.call_text("<function-name>", "<arguments-json-object>"));
        s
    }
}

/// A conversation with tools made plain, for a template that renders no tools: the tools
/// described in the (first) system message, each assistant call written as text in `format`,
/// and tool results given as the user's `<tool_response>` turns (consecutive results in one).
pub fn plain_messages(
    messages: &[ChatMessage],
    tools: &[Tool],
    format: ToolFormat,
) -> Vec<ChatMessage> {
    let is_system = |m: &ChatMessage| m.role == "system" || m.role == "developer";
    let prompt = (!tools.is_empty()).then(|| format.system_prompt(tools));
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if let Some(p) = &prompt {
        if !messages.first().is_some_and(is_system) {
            out.push(ChatMessage::new("system", p.clone()));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let mut m = m.clone();
        if let Some(p) = prompt.as_ref().filter(|_| i == 0 && is_system(&m)) {
            m.content = format!("{}\n\n{p}", m.content);
        }
        push_plain(&mut out, m, format);
    }
    out
}

fn push_plain(out: &mut Vec<ChatMessage>, m: ChatMessage, format: ToolFormat) {
    if m.role == "tool" {
        let text = format!("<tool_response>\n{}\n</tool_response>", m.content);
        match out.last_mut() {
            // Results of one round of calls travel together.
            Some(prev) if prev.role == "user" && prev.content.ends_with("</tool_response>") => {
                prev.content.push('\n');
                prev.content.push_str(&text);
            }
            _ => out.push(ChatMessage::new("user", text)),
        }
        return;
    }
    let mut content = m.content;
    for c in &m.tool_calls {
        if !content.is_empty() {
            content.push('\n');
        }
        content.push_str(&format.call_text(&c.name, &c.arguments));
    }
    out.push(ChatMessage::new(m.role, content));
}

/// Streams the one call a grammar forces (`tool_choice: required` or a named function) as the
/// model writes it, as `delta.tool_calls` pieces of call 0: the start (id, name) once the
/// function's name is written, then the arguments in fragments as they come — safe to send early because the grammar admits nothing but a
/// well-formed call. The closing text is held back until it is known not to be arguments.
#[derive(Debug)]
pub struct ForcedCall {
    /// Each candidate function's (name, text before its arguments, text after them).
    frames: Vec<(String, String, String)>,
    /// Generated text not yet placed.
    held: String,
    /// The chosen function's closing text, once its name is written.
    after: Option<String>,
    done: bool,
}

impl ForcedCall {
    /// For a call of one of `tools` (as `choice` forces it) in `format`.
    pub fn new(format: ToolFormat, tools: &[Tool], choice: &ToolChoice) -> Self {
        let frames = choice
            .forced_tools(tools)
            .into_iter()
            .map(|t| {
                let (before, after) = format.call_frame(&t.name);
                (t.name.clone(), before, after)
            })
            .collect();
        Self {
            frames,
            held: String::new(),
            after: None,
            done: false,
        }
    }

    /// Adds generated text; returns the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<ToolCallDelta> {
        if self.done {
            return Vec::new();
        }
        self.held.push_str(text);
        let mut out = Vec::new();
        if self.after.is_none() {
            let Some((name, before, after)) = self
                .frames
                .iter()
                .find(|(_, before, _)| self.held.starts_with(before.as_str()))
                .cloned()
            else {
                return out;
            };
            self.held.drain(..before.len());
            self.after = Some(after);
            out.push(ToolCallDelta {
                index: 0,
                id: Some(new_call_id()),
                name: Some(name),
                arguments: String::new(),
            });
        }
        let arguments = |a: String| ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: a,
        };
        let after = self.after.as_deref().unwrap_or_default();
        if let Some(at) = self.held.find(after) {
            let args: String = self.held.drain(..at).collect();
            self.held.clear();
            self.done = true;
            if !args.is_empty() {
                out.push(arguments(args));
            }
            return out;
        }
        // Hold back what may be the start of the closing text.
        let keep = partial_suffix(&self.held, after);
        let cut = self.held.len() - keep;
        if cut > 0 {
            out.push(arguments(self.held.drain(..cut).collect()));
        }
        out
    }
}

/// What the parser found in generated text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Plain text for `content`.
    Text(String),
    /// A complete, well-formed call of one of the request's tools.
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    Think,
    Call,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Splits streamed model output into text and tool calls (see the module docs).
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    names: Vec<String>,
    state: State,
    /// Text not yet released: a possible tag's start, or a call's body.
    held: String,
    /// Bytes of `held` already searched without finding a tag (a call's body grows token by
    /// token: each push searches only its new end, not the whole body again).
    scanned: usize,
}

impl ToolCallParser {
    /// A parser for calls of `tools` written in `format`; `in_think` when the prompt left a
    /// `<think>` block open.
    pub fn new(format: ToolFormat, tools: &[Tool], in_think: bool) -> Self {
        Self {
            format,
            names: tools.iter().map(|t| t.name.clone()).collect(),
            state: if in_think { State::Think } else { State::Text },
            held: String::new(),
            scanned: 0,
        }
    }

    fn tags(&self) -> Vec<&'static str> {
        match self.state {
            State::Text => {
                let mut t = vec![THINK_OPEN, self.format.call_open()];
                t.extend_from_slice(self.format.markers());
                t
            }
            State::Think => vec![THINK_CLOSE],
            State::Call => vec![self.format.call_close()],
        }
    }

    /// Adds generated text; returns what can be released now.
    pub fn push(&mut self, text: &str) -> Vec<Parsed> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            let tags = self.tags();
            let mut from = self.scanned.min(self.held.len());
            while !self.held.is_char_boundary(from) {
                from -= 1;
            }
            let found = tags
                .iter()
                .filter_map(|t| self.held[from..].find(t).map(|at| (from + at, *t)))
                .min_by_key(|(at, t)| (*at, std::cmp::Reverse(t.len())));
            match found {
                Some((at, tag)) => {
                    self.scanned = 0;
                    let before: String = self.held.drain(..at).collect();
                    self.held.drain(..tag.len());
                    match self.state {
                        State::Text => {
                            emit_text(&mut out, before);
                            if tag == THINK_OPEN {
                                emit_text(&mut out, tag.to_string());
                                self.state = State::Think;
                            } else if tag == self.format.call_open() {
                                self.state = State::Call;
                            }
                            // A group marker: dropped.
                        }
                        State::Think => {
                            emit_text(&mut out, before + tag);
                            self.state = State::Text;
                        }
                        State::Call => {
                            out.push(self.call(&before, true));
                            self.state = State::Text;
                        }
                    }
                }
                None => {
                    // A tag could still end in what comes next, starting in the last bytes.
                    let longest = tags.iter().map(|t| t.len()).max().unwrap_or(0);
                    self.scanned = self.held.len().saturating_sub(longest);
                    if self.state != State::Call {
                        // Hold back only what may be the start of a tag.
                        let keep = tags
                            .iter()
                            .map(|t| partial_suffix(&self.held, t))
                            .max()
                            .unwrap_or(0);
                        let cut = self.held.len() - keep;
                        let text: String = self.held.drain(..cut).collect();
                        emit_text(&mut out, text);
                        self.scanned = 0;
                    }
                    return merge(out);
                }
            }
        }
    }

    /// The end of generation: what is still held. An unclosed call is kept if its body is
    /// complete and well formed (models often stop right before the closing tag), else
    /// returned as text.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let held = std::mem::take(&mut self.held);
        self.scanned = 0;
        let mut out = Vec::new();
        match self.state {
            State::Call => out.push(self.call(&held, false)),
            _ => emit_text(&mut out, held),
        }
        self.state = State::Text;
        merge(out)
    }

    /// A call from its body, or the model's own text when it is not one.
    fn call(&self, body: &str, closed: bool) -> Parsed {
        match self.format.parse_body(body) {
            Some((name, args)) if args.is_object() && self.names.contains(&name) => {
                Parsed::Call(ToolCall {
                    id: new_call_id(),
                    name,
                    arguments: args.to_string(),
                })
            }
            _ => {
                let close = if closed { self.format.call_close() } else { "" };
                Parsed::Text(format!("{}{body}{close}", self.format.call_open()))
            }
        }
    }
}

fn emit_text(out: &mut Vec<Parsed>, text: String) {
    if !text.is_empty() {
        out.push(Parsed::Text(text));
    }
}

/// Joins neighbouring texts.
fn merge(items: Vec<Parsed>) -> Vec<Parsed> {
    let mut out: Vec<Parsed> = Vec::with_capacity(items.len());
    for item in items {
        match (out.last_mut(), item) {
            (Some(Parsed::Text(a)), Parsed::Text(b)) => a.push_str(&b),
            (_, item) => out.push(item),
        }
    }
    out
}

/// The length of the longest end of `held` that is a proper start of `tag`: what must be held
/// back from a stream because `tag` may be completed by what comes next.
pub fn partial_suffix(held: &str, tag: &str) -> usize {
    (1..tag.len().min(held.len() + 1))
        .rev()
        .find(|&n| tag.is_char_boundary(n) && held.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
            strict: None,
        }
    }

    /// Feeds `pieces` one by one and gathers what comes out (texts joined, calls without ids).
    fn run(format: ToolFormat, pieces: &[&str]) -> Vec<Parsed> {
        let mut p = ToolCallParser::new(format, &[tool("get_weather"), tool("get_time")], false);
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece));
        }
        out.extend(p.finish());
        let out = merge(out);
        out.into_iter()
            .map(|x| match x {
                Parsed::Call(c) => {
                    assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
                    Parsed::Call(ToolCall {
                        id: String::new(),
                        ..c
                    })
                }
                t => t,
            })
            .collect()
    }

    fn call(name: &str, args: &str) -> Parsed {
        Parsed::Call(ToolCall {
            id: String::new(),
            name: name.into(),
            arguments: args.into(),
        })
    }

    fn text(t: &str) -> Parsed {
        Parsed::Text(t.into())
    }

    /// Splits `s` into pieces of `n` characters (as a model streams tokens).
    fn chunks(s: &str, n: usize) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        chars.chunks(n).map(|c| c.iter().collect()).collect()
    }

    // Qwen2.5 / Qwen3 (Hermes form), as their model cards' function-calling examples show.
    const QWEN: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"location\": \"Tokyo\"}}\n</tool_call>";

    #[test]
    fn qwen_parallel_calls_are_found_whatever_the_chunking() {
        let want = vec![
            call("get_weather", r#"{"location":"San Francisco, CA, USA"}"#),
            call("get_time", r#"{"location":"Tokyo"}"#),
        ];
        for n in [1, 2, 3, 5, 7, 11, 1000] {
            let pieces = chunks(QWEN, n);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut got = run(ToolFormat::Hermes, &pieces);
            // The newline between the calls is text (whitespace).
            got.retain(|p| !matches!(p, Parsed::Text(t) if t.trim().is_empty()));
            assert_eq!(got, want, "pieces of {n}");
        }
    }

    /// A long call body arriving token by token: each piece's new end is searched for the
    /// closing tag, not the whole body again (it was quadratic); still found across pieces and
    /// multi-byte characters.
    #[test]
    fn a_long_call_body_is_not_searched_again_for_every_piece() {
        let args = format!("{{\"location\": \"{}\"}}", "ab€ ".repeat(10_000));
        let text =
            format!("<tool_call>\n{{\"name\": \"get_time\", \"arguments\": {args}}}\n</tool_call>");
        let pieces = chunks(&text, 7);
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let out = run(ToolFormat::Hermes, &pieces);
        assert_eq!(out.len(), 1);
        let Parsed::Call(c) = &out[0] else {
            panic!("{out:?}")
        };
        let v: Value = serde_json::from_str(&c.arguments).unwrap();
        assert_eq!(v["location"].as_str().unwrap().len(), 10_000 * "ab€ ".len());
    }

    #[test]
    fn text_before_a_call_is_content_and_think_blocks_are_never_calls() {
        let out = run(
            ToolFormat::Hermes,
            &[
                "<think>\nMaybe <tool_call>{\"name\": \"get_weather\"}</tool_call>?\n</think>\n\n",
                "Let me check.\n<tool_",
                "call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            ],
        );
        assert_eq!(
            out,
            vec![
                text("<think>\nMaybe <tool_call>{\"name\": \"get_weather\"}</tool_call>?\n</think>\n\nLet me check.\n"),
                call("get_weather", "{}"),
            ]
        );
        // A prompt that opened the think block.
        let mut p = ToolCallParser::new(ToolFormat::Hermes, &[tool("get_weather")], true);
        let mut out = p.push("<tool_call>x</tool_call></think>ok");
        out.extend(p.finish());
        assert_eq!(merge(out), vec![text("<tool_call>x</tool_call></think>ok")]);
    }

    #[test]
    fn malformed_or_unknown_calls_come_back_as_the_models_text() {
        for bad in [
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": }\n</tool_call>",
            "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Par",
        ] {
            assert_eq!(run(ToolFormat::Hermes, &[bad]), vec![text(bad)], "{bad}");
        }
        // Plain text with a lone `<` or a tag-like start passes through whole.
        assert_eq!(
            run(ToolFormat::Hermes, &["a < b", " <tool"]),
            vec![text("a < b <tool")]
        );
    }

    #[test]
    fn an_unclosed_but_complete_call_at_the_end_is_kept_and_string_arguments_are_read() {
        assert_eq!(
            run(ToolFormat::Hermes, &["<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"location\\\": \\\"Oslo\\\"}\"}\n"]),
            vec![call("get_time", r#"{"location":"Oslo"}"#)]
        );
    }

    // DeepSeek-V3 / R1 form, as their chat templates and API docs write it.
    const DEEPSEEK: &str = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"location\": \"Hangzhou\"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\"location\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

    #[test]
    fn deepseek_calls_are_found_whatever_the_chunking() {
        let want = vec![
            call("get_weather", r#"{"location":"Hangzhou"}"#),
            call("get_time", r#"{"location":"Paris"}"#),
        ];
        for n in [1, 2, 4, 9, 1000] {
            let pieces = chunks(DEEPSEEK, n);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            assert_eq!(run(ToolFormat::DeepSeek, &pieces), want, "pieces of {n}");
        }
        // V3.1's shorter form.
        assert_eq!(
            run(
                ToolFormat::DeepSeek,
                &["<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"location\": \"Rome\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"]
            ),
            vec![call("get_time", r#"{"location":"Rome"}"#)]
        );
        // R1 distills think first.
        assert_eq!(
            run(ToolFormat::DeepSeek, &["</think>\n\n", DEEPSEEK])[0],
            text("</think>\n\n")
        );
    }

    #[test]
    fn the_format_is_read_from_the_template_and_call_text_round_trips() {
        assert_eq!(
            ToolFormat::of_template("{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'}}"),
            ToolFormat::DeepSeek
        );
        assert_eq!(ToolFormat::of_template("<tool_call>"), ToolFormat::Hermes);
        for f in [ToolFormat::Hermes, ToolFormat::DeepSeek] {
            let t = f.call_text("get_time", r#"{"location": "Lima"}"#);
            assert_eq!(
                run(f, &[&t]),
                vec![call("get_time", r#"{"location":"Lima"}"#)]
            );
        }
    }

    #[test]
    fn tools_and_choices_are_checked_naming_what_is_wrong() {
        let parse = |v: Value| {
            let o = v.as_object().unwrap().clone();
            parse_tools(&o).and_then(|t| parse_tool_choice(&o, &t).map(|c| (t, c)))
        };
        let f = |name: &str| json!({"type": "function", "function": {"name": name}});
        let (tools, choice) = parse(json!({"tools": [f("a"), f("b-2")]})).unwrap();
        assert_eq!((tools.len(), choice), (2, ToolChoice::Auto));
        assert_eq!(
            tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(parse(json!({})).unwrap().1, ToolChoice::None);
        assert_eq!(
            parse(json!({"tools": [f("a")], "tool_choice": {"type": "function", "function": {"name": "a"}}})).unwrap().1,
            ToolChoice::Function("a".into())
        );
        let err = |v: Value| parse(v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"tools": {}})),
            "field `tools` must be an array of tools"
        );
        assert_eq!(
            err(json!({"tools": [f("a b")]})),
            "field `tools[0].function.name` must be 1 to 64 letters, digits, underscores or dashes"
        );
        assert_eq!(
            err(json!({"tools": [f("a"), f("a")]})),
            "field `tools[1].function.name` `a` names two tools"
        );
        assert_eq!(
            err(json!({"tools": [{"type": "function", "function": {"name": "a", "x": 1}}]})),
            "field `tools[0].function.x` is not supported"
        );
        assert_eq!(
            err(json!({"tools": [{"type": "code_interpreter"}]})),
            "field `tools[0].type` must be \"function\""
        );
        assert_eq!(
            err(json!({"tool_choice": "required"})),
            "field `tool_choice` needs `tools` (there is nothing to call)"
        );
        assert_eq!(
            err(
                json!({"tools": [f("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}})
            ),
            "field `tool_choice.function.name` `b` is not one of the request's tools"
        );
        assert_eq!(
            err(json!({"tools": [f("a")], "tool_choice": "sometimes"})),
            "field `tool_choice` must be none, auto, required or a function, not \"sometimes\""
        );
        let too_many: Vec<Value> = (0..=MAX_TOOLS).map(|i| f(&format!("t{i}"))).collect();
        assert_eq!(
            err(json!({"tools": too_many})),
            "field `tools` must hold at most 128 tools"
        );
        assert!(parse(json!({"tool_choice": "none"})).is_ok());
    }

    #[test]
    fn the_grammar_names_the_chosen_functions_and_their_schemas() {
        let strict = Tool {
            name: "get_time".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": false}),
            strict: Some(true),
        };
        let loose = Tool {
            parameters: json!({"type": "object", "properties": {"location": {"type": "string", "pattern": "^[A-Z]"}}}),
            ..tool("get_weather")
        };
        let tools = [loose, strict];
        assert_eq!(ToolFormat::Hermes.grammar(&tools, &ToolChoice::Auto), None);
        let g = ToolFormat::Hermes
            .grammar(&tools, &ToolChoice::Function("get_time".into()))
            .unwrap();
        assert!(g.starts_with(r#"root ::= "<tool_call>\n{\"name\": \"get_time\", \"arguments\": " t0r0 "}\n</tool_call>""#), "{g}");
        assert!(g.contains(r#""\"zone\"" ws ":" ws json-string"#), "{g}");
        let g = ToolFormat::Hermes
            .grammar(&tools, &ToolChoice::Required)
            .unwrap();
        // A schema the grammar cannot enforce (a pattern) takes any object.
        assert!(
            g.contains(r#"\"get_weather\", \"arguments\": " any-object"#),
            "{g}"
        );
        assert!(
            g.contains(r#" | "<tool_call>\n{\"name\": \"get_time\""#),
            "{g}"
        );
        let g = ToolFormat::DeepSeek
            .grammar(&tools, &ToolChoice::Required)
            .unwrap();
        assert!(
            g.contains("function<｜tool▁sep｜>get_weather\\n```json\\n\" any-object"),
            "{g}"
        );
    }

    #[test]
    fn a_conversation_with_tools_is_made_plain_for_templates_without_them() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_time".into(),
            arguments: r#"{"location": "Lima"}"#.into(),
        };
        let mut assistant = ChatMessage::new("assistant", "");
        assistant.tool_calls = vec![call];
        let mut result = ChatMessage::new("tool", "14:05");
        result.tool_call_id = Some("call_1".into());
        let messages = vec![
            ChatMessage::new("user", "time in Lima?"),
            assistant,
            result.clone(),
            result,
        ];
        let plain = plain_messages(&messages, &[tool("get_time")], ToolFormat::Hermes);
        let roles: Vec<&str> = plain.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(
            plain[0].content.contains(r#""name":"get_time""#),
            "{}",
            plain[0].content
        );
        assert!(
            plain[0].content.contains("<tool_call>"),
            "{}",
            plain[0].content
        );
        assert_eq!(
            plain[2].content,
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"location\": \"Lima\"}}\n</tool_call>"
        );
        assert_eq!(
            plain[3].content,
            "<tool_response>\n14:05\n</tool_response>\n<tool_response>\n14:05\n</tool_response>"
        );
        // A system message of the caller's own keeps its text first.
        let with_system = [
            ChatMessage::new("system", "be brief"),
            ChatMessage::new("user", "hi"),
        ];
        let plain = plain_messages(&with_system, &[tool("get_time")], ToolFormat::Hermes);
        assert_eq!(plain.len(), 2);
        assert!(plain[0].content.starts_with("be brief\n\n# Tools"));
    }

    #[test]
    fn a_forced_call_streams_its_arguments_as_they_come() {
        let tools = [tool("get_weather"), tool("get_time")];
        for format in [ToolFormat::Hermes, ToolFormat::DeepSeek] {
            let (before, after) = format.call_frame("get_time");
            let args = r#"{"location": "Lima {}\"}"}"#;
            let text = format!("{before}{args}{after}");
            for n in [1, 2, 5, 1000] {
                let mut f = ForcedCall::new(format, &tools, &ToolChoice::Required);
                let mut pieces = Vec::new();
                for c in chunks(&text, n) {
                    pieces.extend(f.push(&c));
                }
                let start = &pieces[0];
                assert!(start.id.as_deref().unwrap().starts_with("call_"));
                assert_eq!(start.name.as_deref(), Some("get_time"));
                assert!(pieces.iter().all(|p| p.index == 0), "{pieces:?}");
                assert!(
                    pieces[1..]
                        .iter()
                        .all(|p| p.id.is_none() && p.name.is_none()),
                    "{pieces:?}"
                );
                let streamed: String = pieces.iter().map(|p| p.arguments.as_str()).collect();
                assert_eq!(streamed, args, "{format:?} pieces of {n}");
                if n == 1 {
                    assert!(pieces.len() > 10, "fragments, not one piece");
                }
                assert!(f.push("more").is_empty(), "nothing after the call");
            }
        }
        // A named function: only its frame.
        let mut f = ForcedCall::new(
            ToolFormat::Hermes,
            &tools,
            &ToolChoice::Function("get_weather".into()),
        );
        assert!(f
            .push(&ToolFormat::Hermes.call_frame("get_time").0)
            .is_empty());
        let mut f = ForcedCall::new(
            ToolFormat::Hermes,
            &tools,
            &ToolChoice::Function("get_weather".into()),
        );
        let start = f.push(&ToolFormat::Hermes.call_frame("get_weather").0);
        assert_eq!(start[0].name.as_deref(), Some("get_weather"));
    }

    #[test]
    fn deltas_accumulate_into_calls() {
        let mut acc = ToolCallAccumulator::default();
        let d = |index, id: Option<&str>, name: Option<&str>, args: &str| ToolCallDelta {
            index,
            id: id.map(Into::into),
            name: name.map(Into::into),
            arguments: args.into(),
        };
        acc.push(&d(0, Some("call_1"), Some("get_time"), ""));
        acc.push(&d(0, None, None, "{\"location\""));
        acc.push(&d(1, Some("call_2"), Some("get_weather"), "{}"));
        acc.push(&d(0, None, None, ": \"Lima\"}"));
        assert_eq!(acc.calls()[0].arguments, "{\"location\": \"Lima\"}");
        // An index skipping ahead (a hostile upstream's u32::MAX, say) is dropped, not grown to.
        assert!(!acc.push(&d(u32::MAX, Some("x"), Some("f"), "{}")));
        assert!(!acc.push(&d(3, Some("x"), Some("f"), "{}")));
        assert_eq!(acc.calls().len(), 2);
        assert_eq!(acc.calls()[1].name, "get_weather");
        assert_eq!(
            d(0, Some("call_1"), Some("f"), "").to_json(),
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        assert_eq!(
            d(0, None, None, "x").to_json(),
            json!({"index": 0, "function": {"arguments": "x"}})
        );
    }
}
