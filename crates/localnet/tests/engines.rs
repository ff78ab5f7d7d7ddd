//! GPU owners' engines over HTTP behind a worker, through the whole network: small stand-ins
//! that speak vLLM's and SGLang's stream formats (their usage objects, reasoning deltas and
//! error bodies, as published), since neither runs here. What the engine reports is what the
//! app is billed; the engine's own errors reach the app in its words.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_engine::engine::Engine;
use cocoon_engine::http::HttpEngine;
use cocoon_localnet::{LocalNet, LocalNetConfig};

const SERVED: &str = "Qwen/Qwen3-8B";

/// vLLM's stream with `--enable-prompt-tokens-details` and a reasoning parser: reasoning in
/// `reasoning_content`, the answer in `content`, and the usage in a last chunk with no choices.
const VLLM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"The user asks about France.\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris.\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[],\"usage\":{\"prompt_tokens\":18,\"total_tokens\":30,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":16},\"completion_tokens_details\":{\"reasoning_tokens\":8}}}\n\n\
data: [DONE]\n\n";

/// SGLang's stream: usage on the last chunk with choices, cached tokens in its details.
const SGLANG: &str = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Paris\"},\"finish_reason\":null,\"matched_stop\":null}],\"usage\":null}\n\n\
data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\".\"},\"finish_reason\":\"stop\",\"matched_stop\":151645}],\"usage\":null}\n\n\
data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[],\"usage\":{\"prompt_tokens\":18,\"total_tokens\":30,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":16}}}\n\n\
data: [DONE]\n\n";

/// A stand-in server: `/v1/models` lists the served name; a chat request naming another model
/// gets vLLM's 404 body, one with `max_tokens` over 1000 its 400 context error, others `stream`.
async fn stand_in(stream: &'static str) -> String {
    let chat = move |Json(body): Json<serde_json::Value>| async move {
        if body["model"] != SERVED {
            let e = serde_json::json!({"object": "error", "message": format!("The model `{}` does not exist.", body["model"].as_str().unwrap_or("")), "type": "NotFoundError", "param": null, "code": 404});
            return (StatusCode::NOT_FOUND, e.to_string());
        }
        if body["max_tokens"].as_u64().unwrap_or(0) > 1000 {
            let e = serde_json::json!({"object": "error", "message": "This model's maximum context length is 1024 tokens.", "type": "BadRequestError", "param": null, "code": 400});
            return (StatusCode::BAD_REQUEST, e.to_string());
        }
        assert_eq!(
            body["stream_options"]["include_usage"], true,
            "usage is always asked for"
        );
        (StatusCode::OK, stream.to_string())
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route(
            "/v1/models",
            get(|| async { format!(r#"{{"object":"list","data":[{{"id":"{SERVED}"}}]}}"#) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn ask(net: &LocalNet, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/chat/completions", net.info.base_url))
        .bearer_auth(&net.info.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_and_sglang_streams_are_billed_as_they_report_and_their_errors_reach_the_app() {
    let identity = format!("Qwen3-8B@{}", "ab".repeat(32));
    for (server, stream, answer) in [
        (
            "vLLM",
            VLLM,
            "<think>The user asks about France.</think>Paris.",
        ),
        ("SGLang", SGLANG, "Paris."),
    ] {
        let url = stand_in(stream).await;
        let engine: Arc<dyn Engine> = Arc::new(HttpEngine::serving(&url, SERVED, &identity));
        let dir = tempfile::tempdir().unwrap();
        let net = LocalNet::start(LocalNetConfig::new(
            dir.path(),
            vec![engine],
            &identity,
            "qwen3",
        ))
        .await
        .expect("network starts");
        let chat = |model: &str, max_tokens: u64| {
            serde_json::json!({"model": model, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        };
        // The app names the model as the network lists it; the server gets its own name.
        let (status, v) = ask(&net, chat("Qwen3-8B", 64)).await;
        assert_eq!(status, 200, "{server}: {v}");
        assert_eq!(v["choices"][0]["message"]["content"], answer, "{server}");
        assert_eq!(v["usage"]["prompt_tokens"], 18, "{server}: {v}");
        assert_eq!(v["usage"]["completion_tokens"], 12, "{server}: {v}");
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"], 16,
            "{server}: {v}"
        );
        // Billed as reported, adjusted by the root's multipliers at coefficient 1000.
        let usage = cocoon_chain::price::TokenUsage {
            prompt: 18,
            cached: 16,
            completion: 12,
            reasoning: if server == "vLLM" { 8 } else { 0 },
        };
        let params = cocoon_chain::contracts::Params::local_default();
        let want = cocoon_chain::price::adjusted_tokens(&usage, 1000, &params);
        assert_eq!(
            net.proxy.proxy.totals().clients[&net.client.owner()],
            want,
            "{server}"
        );
        // The server's own refusal, in its words, with nothing billed.
        let (status, v) = ask(&net, chat("Qwen3-8B", 4000)).await;
        assert_eq!(status, 400, "{server}: {v}");
        let said = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            said.contains("maximum context length is 1024 tokens"),
            "{server}: {v}"
        );
        assert_eq!(
            net.proxy.proxy.totals().clients[&net.client.owner()],
            want,
            "{server}: an error bills nothing"
        );
    }
}
