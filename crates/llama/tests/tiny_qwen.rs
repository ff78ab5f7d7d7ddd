//! Tiny random-weight Qwen3- and Qwen2-architecture GGUFs with the real
//! Qwen3 tokenizer: llama.cpp loads them, tokenizes as Qwen does, and runs
//! them. Their output is noise, so the assertions are on token ids and counts.

mod common;

use cocoon_engine::{Engine, FinishReason};
use cocoon_llama::{LlamaConfig, LlamaEngine};
use common::{chat, completion};

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
    let engine = LlamaEngine::load(LlamaConfig {
        n_ctx_per_seq: 256,
        max_sequences: 2,
        progress: false,
        ..LlamaConfig::new(common::tiny_qwen3())
    })
    .unwrap();
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
    let engine = LlamaEngine::load(LlamaConfig {
        n_ctx_per_seq: 256,
        max_sequences: 2,
        progress: false,
        ..LlamaConfig::new(common::tiny_qwen2())
    })
    .unwrap();
    assert_eq!(engine.info().architecture, "qwen2");
    let name = engine.info().identity.name.clone();
    let r = completion(&name, "Hello world", r#","temperature":0,"max_tokens":6"#);
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.usage.prompt_tokens, 2);
    assert!(a.usage.completion_tokens <= 6);
}
