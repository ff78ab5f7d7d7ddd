//! Rendering chat messages into a prompt with the model's own template:
//! llama.cpp's built-in renderer first (it recognises the common families
//! by their markers), and the template's Jinja source through `minijinja`
//! when llama.cpp does not know it.

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

/// Renders `messages` for `model`, ending with the assistant's turn opened.
pub fn render(model: &LlamaModel, messages: &[ChatMessage]) -> Result<String, TemplateError> {
    let template = model
        .chat_template(None)
        .map_err(|_| TemplateError::Missing)?;
    match render_builtin(model, &template, messages) {
        Ok(s) => Ok(s),
        Err(builtin) => {
            let source = template
                .to_str()
                .map_err(|e| TemplateError::Render(e.to_string()))?;
            let bos = token_text(model, model.vocab().bos());
            let eos = token_text(model, model.vocab().eos());
            render_jinja(source, messages, &bos, &eos)
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

/// Renders a Hugging Face style Jinja chat template.
pub fn render_jinja(
    source: &str,
    messages: &[ChatMessage],
    bos: &str,
    eos: &str,
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
    env.add_template("chat", source)
        .map_err(|e| e.to_string())?;
    let msgs: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => true,
                bos_token => bos,
                eos_token => eos,
            })
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn jinja_fallback_renders_a_chatml_template() {
        let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render_jinja(
            template,
            &[msg("system", "be brief"), msg("user", "hi")],
            "",
            "",
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
            render_jinja(t, &[msg("user", "x")], "<s>", "</s>").unwrap(),
            "<s>x"
        );
        let err = render_jinja(t, &[msg("system", "x")], "<s>", "</s>").unwrap_err();
        assert!(err.contains("first message must be from the user"), "{err}");
    }
}
