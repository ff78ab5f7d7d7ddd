//! Rendering chat messages into a prompt with the model's own template:
//! llama.cpp's built-in renderer first (it recognises the common families
//! by their markers), and the template's Jinja source through `minijinja`
//! when llama.cpp does not know it.
//!
//! A conversation with tools (tool definitions, assistant calls, tool results) goes through the
//! template's own Jinja when the template renders tools itself (Qwen3's does); otherwise the tools
//! are described in the system prompt and calls and results written as text in the family's
//! form ([`cocoon_engine::tools::plain_messages`]), then rendered as any conversation.

use cocoon_engine::tools::{Tool, ToolFormat};
use cocoon_engine::ChatMessage;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

/// Why a prompt could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The model has no chat template.
    #[error("the model has no chat template; use /v1/completions with a raw prompt")]
    Missing,
    /// Both renderers failed.
    #[error("chat template failed: {0}")]
    Render(String),
}

/// A rendered prompt, and the form its model writes tool calls in.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The prompt text.
    pub text: String,
    /// How this model's family writes calls (read from its template).
    pub format: ToolFormat,
}

/// Whether a template renders tool definitions and assistant calls itself.
fn renders_tools(source: &str) -> bool {
    source.contains("tools") && source.contains("tool_calls")
}

/// Renders `messages` (and the `tools` the model may call; none: empty) for `model`, ending
/// with the assistant's turn opened.
pub fn render(
    model: &LlamaModel,
    messages: &[ChatMessage],
    tools: &[Tool],
) -> Result<Rendered, TemplateError> {
    let template = model
        .chat_template(None)
        .map_err(|_| TemplateError::Missing)?;
    let source = template
        .to_str()
        .map_err(|e| TemplateError::Render(format!("the chat template is not UTF-8: {e}")))?
        .to_string();
    let format = ToolFormat::of_template(&source);
    let with_tools = !tools.is_empty()
        || messages
            .iter()
            .any(|m| !m.tool_calls.is_empty() || m.role == "tool");
    let text = if !with_tools {
        render_messages(model, &template, &source, messages)?
    } else if renders_tools(&source) {
        let msgs: Vec<serde_json::Value> = messages.iter().map(template_message).collect();
        let tools: Vec<serde_json::Value> = tools.iter().map(Tool::to_json).collect();
        render_jinja(&source, &msgs, &tools, &special_texts(model))
            .map_err(TemplateError::Render)?
    } else {
        let plain = cocoon_engine::tools::plain_messages(messages, tools, format);
        render_messages(model, &template, &source, &plain)?
    };
    Ok(Rendered { text, format })
}

/// Renders a conversation with the chat template of the GGUF at `path` (its vocabulary alone is
/// loaded): what a tool or test needs to see the exact prompt.
pub fn render_file(
    path: &std::path::Path,
    messages: &[ChatMessage],
    tools: &[Tool],
) -> Result<Rendered, String> {
    let backend = crate::backend::backend()?;
    let params = llama_cpp_2::model::params::LlamaModelParams::default().with_vocab_only(true);
    let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| e.to_string())?;
    render(&model, messages, tools).map_err(|e| e.to_string())
}

/// A message as chat templates expect it: a call's arguments as a JSON object (as Hugging Face
/// and vLLM give them; templates print them with `tojson`), not the API's string of JSON.
fn template_message(m: &ChatMessage) -> serde_json::Value {
    let mut v = m.to_json();
    if let Some(calls) = v.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
        for call in calls {
            if let Some(args) = call.pointer_mut("/function/arguments") {
                if let Some(parsed) = args
                    .as_str()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .filter(serde_json::Value::is_object)
                {
                    *args = parsed;
                }
            }
        }
    }
    v
}

/// The model's BOS and EOS texts (templates print them).
fn special_texts(model: &LlamaModel) -> (String, String) {
    (
        token_text(model, model.vocab().bos()),
        token_text(model, model.vocab().eos()),
    )
}

/// Renders plain messages: llama.cpp's renderer, else the template's Jinja `source`.
fn render_messages(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    source: &str,
    messages: &[ChatMessage],
) -> Result<String, TemplateError> {
    match render_builtin(model, template, messages) {
        Ok(s) => Ok(s),
        Err(builtin) => {
            let msgs: Vec<serde_json::Value> = messages.iter().map(ChatMessage::to_json).collect();
            render_jinja(source, &msgs, &[], &special_texts(model))
                .map_err(|e| TemplateError::Render(format!("llama.cpp: {builtin}; jinja: {e}")))
        }
    }
}

fn render_builtin(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[ChatMessage],
) -> Result<String, String> {
    let chat: Vec<LlamaChatMessage> = messages
        .iter()
        .map(|m| {
            LlamaChatMessage::new(m.role.clone(), m.content.clone()).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| e.to_string())
}

fn token_text(model: &LlamaModel, token: llama_cpp_2::token::LlamaToken) -> String {
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}

/// Renders a Hugging Face style Jinja chat template over OpenAI-shaped `messages` (and `tools`,
/// given to the template only when there are some), with the Python string and dict methods
/// templates call and Python's `tojson`; `special` is the BOS and EOS texts.
pub fn render_jinja(
    source: &str,
    messages: &[serde_json::Value],
    tools: &[serde_json::Value],
    special: &(String, String),
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_filter(
        "tojson",
        |v: minijinja::Value| -> Result<String, minijinja::Error> {
            let json = serde_json::to_value(&v).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })?;
            let mut out = String::new();
            python_json(&json, &mut out);
            Ok(out)
        },
    );
    env.set_unknown_method_callback(python_method);
    env.add_template("chat", source)
        .map_err(|e| e.to_string())?;
    let tools = (!tools.is_empty()).then_some(tools);
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => special.0,
                eos_token => special.1,
            })
        })
        .map_err(|e| e.to_string())
}

/// JSON as Python's `json.dumps(v, ensure_ascii=False)` writes it (what Hugging Face's `tojson`
/// gives templates): `", "` and `": "` separators, non-ASCII kept.
fn python_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(": ");
                python_json(x, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The Python methods chat templates call on strings (`startswith`, `split`, `strip`, …) and
/// dicts (`get`, `items`, `keys`).
fn python_method(
    _: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    use minijinja::{Error, ErrorKind, Value};
    let arg = |i: usize| args.get(i).and_then(Value::as_str);
    if let Some(s) = value.as_str() {
        let trim_set = |c: char| arg(0).map_or(c.is_whitespace(), |set| set.contains(c));
        return Ok(match method {
            "startswith" => Value::from(arg(0).is_some_and(|p| s.starts_with(p))),
            "endswith" => Value::from(arg(0).is_some_and(|p| s.ends_with(p))),
            "strip" => Value::from(s.trim_matches(trim_set)),
            "lstrip" => Value::from(s.trim_start_matches(trim_set)),
            "rstrip" => Value::from(s.trim_end_matches(trim_set)),
            "split" => match arg(0) {
                Some(sep) if !sep.is_empty() => {
                    Value::from(s.split(sep).map(Value::from).collect::<Vec<_>>())
                }
                _ => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "replace" => match (arg(0), arg(1)) {
                (Some(a), Some(b)) => Value::from(s.replace(a, b)),
                _ => return Err(Error::new(ErrorKind::MissingArgument, "replace(old, new)")),
            },
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        });
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        return match method {
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key)?;
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "items" => {
                let mut pairs = Vec::new();
                for k in value.try_iter()? {
                    let v = value.get_item(&k)?;
                    pairs.push(Value::from(vec![k, v]));
                }
                Ok(Value::from(pairs))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> serde_json::Value {
        ChatMessage::new(role, content).to_json()
    }

    fn none() -> (String, String) {
        (String::new(), String::new())
    }

    #[test]
    fn jinja_fallback_renders_a_chatml_template() {
        let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render_jinja(
            template,
            &[msg("system", "be brief"), msg("user", "hi")],
            &[],
            &none(),
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn jinja_fallback_supports_bos_and_raise_exception() {
        let t = "{{ bos_token }}{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ messages[0].content }}";
        assert_eq!(
            render_jinja(t, &[msg("user", "x")], &[], &("<s>".into(), "</s>".into())).unwrap(),
            "<s>x"
        );
        let err = render_jinja(t, &[msg("system", "x")], &[], &none()).unwrap_err();
        assert!(err.contains("first message must be from the user"), "{err}");
    }
}
