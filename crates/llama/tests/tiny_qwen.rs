//! Tiny random-weight Qwen3- and Qwen2-architecture GGUFs with the real
//! Qwen3 tokenizer: llama.cpp loads them, tokenizes as Qwen does, and runs
//! them. Their output is noise, so the assertions are on token ids and counts.

mod common;

use cocoon_engine::{Engine, FinishReason};
use cocoon_llama::{LlamaConfig, LlamaEngine};
use common::{chat, completion};

/// The engine on a tiny GGUF: `n_ctx` tokens per sequence, `sequences` at once.
fn load(path: std::path::PathBuf, n_ctx: u32, sequences: u32) -> LlamaEngine {
    LlamaEngine::load(LlamaConfig {
        n_ctx_per_seq: n_ctx,
        max_sequences: sequences,
        progress: false,
        ..LlamaConfig::new(path)
    })
    .unwrap()
}

#[test]
fn qwen3_tokenizer_ids_are_the_real_ones() {
    let path = common::tiny_qwen3();
    let ids = cocoon_llama::tokens::tokenize_file(&path, "Hello world").unwrap();
    assert_eq!(ids, vec![9707, 1879]);
    let ids = cocoon_llama::tokens::tokenize_file(&path, "<|im_start|>user\n<think>").unwrap();
    assert_eq!(ids, vec![151644, 872, 198, 151667]);
}

#[tokio::test]
async fn loads_and_generates_deterministically() {
    let engine = load(common::tiny_qwen3(), 256, 2);
    assert_eq!(engine.info().architecture, "qwen3");
    let name = engine.info().identity.name.clone();
    let run = || async {
        let r = completion(&name, "Hello world", r#","temperature":0,"max_tokens":8"#);
        engine.generate(r).unwrap().collect().await.unwrap()
    };
    let (a, b) = (run().await, run().await);
    assert_eq!(a.usage.prompt_tokens, 2);
    assert_eq!(b.usage.cached_tokens, 1, "the repeated prompt is reused");
    // Greedy decoding: the same prompt gives the same answer, cached prefix or not.
    assert_eq!(a.text, b.text);
    assert_eq!(a.finish_reason, b.finish_reason);
    assert_eq!(a.usage.completion_tokens, b.usage.completion_tokens);
    if a.finish_reason == FinishReason::Length {
        assert_eq!(a.usage.completion_tokens, 8);
    }
    // The chat template (Qwen3's own) renders and the prompt is tokenized.
    let c = engine
        .generate(chat(&name, "hi", r#","temperature":0,"max_tokens":4"#))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(c.usage.prompt_tokens >= 5, "{:?}", c.usage);
}

#[tokio::test]
async fn qwen2_architecture_loads_and_runs() {
    let engine = load(common::tiny_qwen2(), 256, 2);
    assert_eq!(engine.info().architecture, "qwen2");
    let name = engine.info().identity.name.clone();
    let r = completion(&name, "Hello world", r#","temperature":0,"max_tokens":6"#);
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.usage.prompt_tokens, 2);
    assert!(a.usage.completion_tokens <= 6);
}

fn weather_tool() -> cocoon_engine::Tool {
    cocoon_engine::Tool {
        name: "get_weather".into(),
        description: Some("The weather in a city".into()),
        parameters: serde_json::json!({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"], "additionalProperties": false}),
        strict: Some(true),
    }
}

/// Qwen3's own chat template renders the tools, the assistant's call and the tool's result
/// (through minijinja, with Python's string methods and `tojson`), exactly in Qwen's layout.
#[test]
fn qwen3_template_renders_tools_calls_and_results() {
    use cocoon_engine::{ChatMessage, ToolCall};
    let mut assistant = ChatMessage::new("assistant", "");
    assistant.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"unit": "c"}"#.into(),
    }];
    let mut result = ChatMessage::new("tool", "21 degrees");
    result.tool_call_id = Some("call_1".into());
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Weather?"),
        assistant,
        result,
    ];
    let r =
        cocoon_llama::template::render_file(&common::tiny_qwen3(), &messages, &[weather_tool()])
            .unwrap();
    assert_eq!(r.format, cocoon_engine::tools::ToolFormat::Hermes);
    let p = &r.text;
    assert!(
        p.starts_with("<|im_start|>system\nBe brief.\n\n# Tools\n"),
        "{p}"
    );
    // Python's json.dumps layout, as Hugging Face's tojson writes it, keys in the app's order.
    assert!(p.contains(r#"<tools>
{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"], "additionalProperties": false}, "strict": true}}
</tools>"#), "{p}");
    assert!(p.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\"}}\n</tool_call><|im_end|>\n"), "{p}");
    assert!(
        p.contains("<|im_start|>user\n<tool_response>\n21 degrees\n</tool_response><|im_end|>\n"),
        "{p}"
    );
    assert!(p.ends_with("<|im_start|>assistant\n"), "{p}");
}

/// A named tool choice on a random-weight Qwen3: whatever the weights, the grammar makes the
/// answer a call of that tool with arguments that fit its schema.
#[tokio::test]
async fn qwen3_named_tool_choice_is_enforced_by_grammar() {
    let engine = load(common::tiny_qwen3(), 1024, 1);
    let name = engine.info().identity.name.clone();
    let tool = weather_tool().to_json();
    let r = chat(
        &name,
        "Weather?",
        &format!(
            r#","temperature":0,"max_tokens":80,"tools":[{tool}],"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}}"#
        ),
    );
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.finish_reason, FinishReason::ToolCalls, "{a:?}");
    assert_eq!(a.tool_calls.len(), 1, "{a:?}");
    let args: serde_json::Value = serde_json::from_str(&a.tool_calls[0].arguments).unwrap();
    assert!(
        ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
}
