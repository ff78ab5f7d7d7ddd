//! The OpenAI-compatible server in front of an engine, driven over HTTP.

use std::sync::Arc;

use cocoon_engine::fake::{FakeEngine, CHUNKS, FAKE_MODEL};
use serde_json::Value;

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cocoon_engine::server::serve(
        listener,
        Arc::new(FakeEngine::default()),
    ));
    format!("http://{addr}")
}

#[tokio::test]
async fn non_streamed_answer_has_openai_shape_and_usage() {
    let url = start().await;
    let body =
        format!(r#"{{"model":"{FAKE_MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["prompt_tokens"], 34);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 11);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        10
    );
    assert_eq!(v["usage"]["total_tokens"], 134);
}

#[tokio::test]
async fn streamed_answer_ends_with_usage_then_done() {
    let url = start().await;
    let body = format!(
        r#"{{"model":"{FAKE_MODEL}","messages":[{{"role":"user","content":"hi"}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let text = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), CHUNKS + 3, "chunks, finish, usage, [DONE]");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let usage: Value =
        serde_json::from_str(events[CHUNKS + 1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 100);
    let finish: Value =
        serde_json::from_str(events[CHUNKS].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn errors_have_status_and_openai_error_body() {
    let url = start().await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .body(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"functions":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "field `functions` is not supported");
    let r = client
        .post(format!("{url}/v1/completions"))
        .body(r#"{"model":"nope","prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let models: Value = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], FAKE_MODEL);
}
