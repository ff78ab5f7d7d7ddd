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
        if stream.contains("tool_calls") {
            // The tools and the choice reach the server as the app sent them.
            assert_eq!(
                body["tools"][0]["function"]["name"], "get_weather",
                "{body}"
            );
            assert_eq!(body["tool_choice"], "auto", "{body}");
        }
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

/// vLLM's stream with `--enable-auto-tool-choice --tool-call-parser hermes`: the call's id and
/// name first, then its arguments in fragments, `finish_reason: tool_calls`, usage last.
const VLLM_TOOLS: &str = "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"chatcmpl-tool-5f1c\",\"type\":\"function\",\"index\":0,\"function\":{\"name\":\"get_weather\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":\"tool_calls\",\"stop_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"model\":\"Qwen/Qwen3-8B\",\"choices\":[],\"usage\":{\"prompt_tokens\":180,\"total_tokens\":200,\"completion_tokens\":20}}\n\n\
data: [DONE]\n\n";

fn tool_request(stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "Qwen3-8B", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

/// Tool calls through the network: a tool request goes only to the worker whose engine
/// announced tool calling (a vLLM started for them, say), never to one that did not (as a
/// reference COCOON worker never does); the app gets the calls as OpenAI gives them, streamed
/// and not, billed as reported; `/v1/models` says which features the model's workers have.
/// With no such worker the request is refused naming why, and `tool_choice: none` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_requests_go_only_to_workers_that_announce_tools() {
    let identity = format!("Qwen3-8B@{}", "ab".repeat(32));
    let mut with_tools = HttpEngine::serving(&stand_in(VLLM_TOOLS).await, SERVED, &identity);
    with_tools.features.tools = true;
    let without = HttpEngine::serving(&stand_in(SGLANG).await, SERVED, &identity);
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start(LocalNetConfig::new(
        dir.path(),
        vec![Arc::new(without.clone()), Arc::new(with_tools)],
        &identity,
        "qwen3",
    ))
    .await
    .expect("network starts");
    for _ in 0..4 {
        let (status, v) = ask(&net, tool_request(false)).await;
        assert_eq!(status, 200, "{v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
        assert_eq!(choice["message"]["content"], serde_json::Value::Null, "{v}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "chatcmpl-tool-5f1c", "{v}");
        assert_eq!(call["type"], "function", "{v}");
        assert_eq!(call["function"]["name"], "get_weather", "{v}");
        assert_eq!(call["function"]["arguments"], r#"{"city": "Paris"}"#, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 20, "{v}");
    }
    // Streamed: the pieces as the engine sent them, in OpenAI's delta form.
    let sse = post_chat(&net, &tool_request(true))
        .await
        .text()
        .await
        .unwrap();
    let pieces: Vec<serde_json::Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|e| e.pointer("/choices/0/delta/tool_calls/0").cloned())
        .collect();
    assert_eq!(pieces.len(), 3, "{sse}");
    assert_eq!(pieces[0]["function"]["name"], "get_weather", "{sse}");
    let args: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city": "Paris"}"#);
    assert!(sse.contains(r#""finish_reason":"tool_calls""#), "{sse}");
    // The catalogue says what the model's workers do.
    let models: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/models", net.info.base_url))
        .bearer_auth(&net.info.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["data"][0]["features"],
        serde_json::json!(["tools", "structured_output"]),
        "{models}"
    );
    drop(net);

    // Only a worker without tools: refused before any work, naming why; `none` is served.
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start(LocalNetConfig::new(
        dir.path(),
        vec![Arc::new(without)],
        &identity,
        "qwen3",
    ))
    .await
    .expect("network starts");
    let (status, v) = ask(&net, tool_request(false)).await;
    assert_eq!(status, 400, "{v}");
    let said = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        said.contains("no worker for Qwen3-8B supports tools"),
        "{v}"
    );
    let mut none = tool_request(false);
    none["tool_choice"] = "none".into();
    let (status, v) = ask(&net, none).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris.", "{v}");
}

/// A chat request to the network's client, as an app sends it.
async fn post_chat(net: &LocalNet, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", net.info.base_url))
        .bearer_auth(&net.info.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn ask(net: &LocalNet, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = post_chat(net, &body).await;
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
