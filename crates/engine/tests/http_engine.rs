//! The HTTP engine against real local servers: our OpenAI-compatible server
//! (serving the fake engine), and small axum apps that misbehave.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use cocoon_engine::fake::{FakeEngine, CHUNKS, FAKE_MODEL, FAKE_USAGE};
use cocoon_engine::http::{HttpEngine, SseParser};
use cocoon_engine::{Engine, EngineError, EngineRequest, Event, FinishReason};
use futures_util::StreamExt;

async fn spawn(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// A server answering every chat request with this fixed SSE body.
async fn sse_server(body: &'static str) -> String {
    spawn(Router::new().route("/v1/chat/completions", post(move || async move { body }))).await
}

async fn fake_server(delay: Duration) -> String {
    spawn(cocoon_engine::server::router(Arc::new(FakeEngine {
        chunk_delay: delay,
    })))
    .await
}

/// A chat request answered by a server sending this fixed SSE body, run to its end.
async fn answer_to(sse: &'static str) -> cocoon_engine::engine::Answer {
    let url = sse_server(sse).await;
    HttpEngine::new(&url, vec![])
        .generate(chat_request("m"))
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// Usage: prompt (cached of it), completion (reasoning of it).
fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> cocoon_engine::Usage {
    cocoon_engine::Usage {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
        reasoning_tokens: reasoning,
    }
}

/// Runs a chat request for `model` to the end, which must fail; the error.
async fn failure(engine: &HttpEngine, model: &str) -> EngineError {
    engine
        .generate(chat_request(model))
        .unwrap()
        .collect()
        .await
        .unwrap_err()
}

fn chat_request(model: &str) -> EngineRequest {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#);
    EngineRequest::parse_chat(body.as_bytes()).unwrap()
}

#[tokio::test]
async fn streams_chunks_and_the_exact_usage() {
    let url = fake_server(Duration::ZERO).await;
    let engine = HttpEngine::new(&url, vec![FAKE_MODEL.into()]);
    let answer = engine
        .generate(chat_request(FAKE_MODEL))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(answer.chunks, CHUNKS);
    assert_eq!(
        answer.text,
        (0..CHUNKS).map(FakeEngine::chunk).collect::<String>()
    );
    assert_eq!(answer.usage, FAKE_USAGE);
    assert_eq!(answer.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn completions_work_too() {
    let url = fake_server(Duration::ZERO).await;
    let engine = HttpEngine::new(&url, vec![]);
    let req = EngineRequest::parse_completion(
        format!(r#"{{"model":"{FAKE_MODEL}","prompt":"x"}}"#).as_bytes(),
    )
    .unwrap();
    let answer = engine.generate(req).unwrap().collect().await.unwrap();
    assert_eq!(answer.usage, FAKE_USAGE);
    assert_eq!(answer.chunks, CHUNKS);
}

#[tokio::test]
async fn unknown_models_fail_locally_and_upstream() {
    let url = fake_server(Duration::ZERO).await;
    let local = HttpEngine::new(&url, vec![FAKE_MODEL.into()]);
    assert!(
        matches!(local.generate(chat_request("other")), Err(EngineError::UnknownModel(m)) if m == "other")
    );
    // An engine that lists no models forwards, and the upstream's 404 comes back.
    let open = HttpEngine::new(&url, vec![]);
    let err = failure(&open, "other").await;
    assert!(
        matches!(&err, EngineError::Upstream { status: 404, message } if message.contains("other")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let engine = HttpEngine::new(&url, vec![]);
    let err = failure(&engine, "m").await;
    assert!(
        matches!(&err, EngineError::Upstream { status: 0, message } if message.contains("cannot reach")),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let url = spawn(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ""
        }),
    ))
    .await;
    let mut engine = HttpEngine::new(&url, vec![]);
    engine.connect_timeout = Duration::from_millis(200);
    let err = failure(&engine, "m").await;
    assert_eq!(err, EngineError::Timeout(Duration::from_millis(200)));
    assert_eq!(err.http_status(), 504);
}

#[tokio::test]
async fn a_stream_without_usage_is_refused_not_billed_as_zero() {
    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\"},\"finish_reason\":null}]}\n\n\
               data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let url = sse_server(sse).await;
    let engine = HttpEngine::new(&url, vec![]);
    let mut g = engine.generate(chat_request("m")).unwrap();
    assert_eq!(
        g.next().await.unwrap().unwrap(),
        Event::Text("Paris".into())
    );
    let err = g.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("without usage"), "{err}");
}

#[tokio::test]
async fn usage_details_from_vllm_style_streams_are_kept() {
    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":16},\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n\
               data: [DONE]\n\n";
    let a = answer_to(sse).await;
    assert_eq!(a.usage, usage(20, 16, 7, 3));
    assert_eq!(a.finish_reason, FinishReason::Length);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_upstream_request() {
    use axum::body::{Body, Bytes};
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    /// Signals when the server drops the response body: the upstream saw the
    /// client go away.
    struct OnDrop(Option<oneshot::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let guard = Arc::new(Mutex::new(Some(OnDrop(Some(dropped_tx)))));
    // An upstream that streams forever unless its client hangs up.
    let url = spawn(Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            let guard = guard.lock().unwrap().take();
            let chunks = futures_util::stream::unfold(guard, |g| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), g))
            });
            Body::from_stream(chunks)
        }),
    ))
    .await;
    let engine = HttpEngine::new(&url, vec![]);
    let mut g = engine.generate(chat_request("m")).unwrap();
    assert!(matches!(g.next().await, Some(Ok(Event::Text(_)))));
    drop(g);
    tokio::time::timeout(Duration::from_secs(10), dropped_rx)
        .await
        .expect("the upstream response was dropped after the client cancelled")
        .unwrap();
}

#[test]
fn sse_parser_handles_arbitrary_splits() {
    let stream =
        b"data: one\r\n\r\n: comment\n\nevent: x\ndata: two\ndata: lines\n\ndata: [DONE]\n\n";
    for split in 0..stream.len() {
        let mut p = SseParser::default();
        let mut got = p.push(&stream[..split]);
        got.extend(p.push(&stream[split..]));
        assert_eq!(got, vec!["one", "two\nlines", "[DONE]"], "split at {split}");
    }
}

/// SGLang and vLLM stream reasoning models' thinking as `reasoning_content`: it reaches the
/// worker inside `<think>…</think>` before the answer, and the reasoning tokens are billed.
#[tokio::test]
async fn reasoning_content_streams_are_given_as_think_text() {
    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"hmm, \"}}]}\n\n\
               data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"France\"}}]}\n\n\
               data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\"},\"finish_reason\":\"stop\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"completion_tokens_details\":{\"reasoning_tokens\":5},\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
               data: [DONE]\n\n";
    let a = answer_to(sse).await;
    assert_eq!(a.text, "<think>hmm, France</think>Paris");
    assert_eq!(a.usage, usage(12, 4, 9, 5));
}

/// llama-server reports reused prompt tokens in `timings.cache_n`; an older one gives only
/// `timings` and no usage at all. Both are billed from what it says.
#[tokio::test]
async fn llama_servers_timings_give_the_cached_tokens_or_the_whole_usage() {
    let with_usage = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\"},\"finish_reason\":\"stop\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":7,\"total_tokens\":37},\"timings\":{\"cache_n\":22,\"prompt_n\":8,\"predicted_n\":7}}\n\n\
               data: [DONE]\n\n";
    let timings_only = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\"},\"finish_reason\":\"stop\"}],\"timings\":{\"cache_n\":22,\"prompt_n\":8,\"predicted_n\":7}}\n\n\
               data: [DONE]\n\n";
    for sse in [with_usage, timings_only] {
        let a = answer_to(sse).await;
        assert_eq!(a.usage, usage(30, 22, 7, 0), "{sse}");
    }
}

/// A worker announces `name@sha256`; the server knows the model by the name it was started
/// with. Requests by identity, name or served name go upstream as the served name; others are
/// refused before any request.
#[tokio::test]
async fn the_served_name_goes_upstream_whatever_name_the_app_used() {
    use axum::Json;
    let url = spawn(Router::new().route(
        "/v1/chat/completions",
        post(|Json(body): Json<serde_json::Value>| async move {
            let model = body["model"].as_str().unwrap_or("?").to_string();
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{model}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}}}}\n\ndata: [DONE]\n\n"
            )
        }),
    ))
    .await;
    let engine = HttpEngine::serving(&url, "Qwen/Qwen3-8B", "qwen3-8b@abcd");
    assert_eq!(
        engine.models(),
        ["qwen3-8b@abcd", "qwen3-8b", "Qwen/Qwen3-8B"]
    );
    for asked in ["qwen3-8b@abcd", "qwen3-8b", "Qwen/Qwen3-8B"] {
        let a = engine
            .generate(chat_request(asked))
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(a.text, "Qwen/Qwen3-8B", "asked as {asked}");
    }
    assert!(matches!(
        engine.generate(chat_request("llama")),
        Err(EngineError::UnknownModel(m)) if m == "llama"
    ));
}

/// The errors vLLM (`{"object":"error","message":…}`), SGLang and TGI (`{"error": "…"}`) send
/// reach the app with their own words and status.
#[tokio::test]
async fn upstream_error_bodies_keep_their_words_and_status() {
    use axum::http::StatusCode;
    let bodies: [(&'static str, &str); 3] = [
        (
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","param":null,"code":400}"#,
            "This model's maximum context length is 4096 tokens",
        ),
        (
            r#"{"error":"Input validation error: `inputs` too long"}"#,
            "Input validation error: `inputs` too long",
        ),
        (
            r#"{"error":{"message":"The server is busy","code":503}}"#,
            "The server is busy",
        ),
    ];
    for (body, words) in bodies {
        let url = spawn(Router::new().route(
            "/v1/chat/completions",
            post(move || async move { (StatusCode::BAD_REQUEST, body) }),
        ))
        .await;
        let e = failure(&HttpEngine::new(&url, vec![]), "m").await;
        assert_eq!(e.http_status(), 400, "the app's request was refused: {e}");
        match e {
            EngineError::Upstream { status, message } => {
                assert_eq!((status, message.as_str()), (400, words))
            }
            other => panic!("{other:?}"),
        }
    }
    // Busy is a 503 (retry elsewhere); the model missing or the server failing a 502.
    for (status, want) in [(429, 503), (404, 502), (500, 502), (0, 502)] {
        let e = EngineError::Upstream {
            status,
            message: "x".into(),
        };
        assert_eq!(e.http_status(), want, "{status}");
    }
}

/// The first token may take long (prefill), the silence between tokens not: each has its
/// timeout.
#[tokio::test]
async fn the_first_token_and_the_gaps_between_tokens_have_their_own_timeouts() {
    use axum::body::{Body, Bytes};
    let url = spawn(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            // The head at once, then silence.
            let chunks = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b""))
            });
            Body::from_stream(chunks)
        }),
    ))
    .await;
    let mut engine = HttpEngine::new(&url, vec![]);
    engine.first_token_timeout = Duration::from_millis(300);
    engine.idle_timeout = Duration::from_secs(60);
    assert_eq!(
        failure(&engine, "m").await,
        EngineError::Timeout(Duration::from_millis(300))
    );
}

/// Health: the server's model list, or why it cannot be had.
#[tokio::test]
async fn health_is_the_servers_model_list() {
    let url = fake_server(Duration::ZERO).await;
    let engine = HttpEngine::new(&url, vec![]);
    assert_eq!(engine.listed_models().await.unwrap(), [FAKE_MODEL]);
    assert!(engine.health().await.is_ok());
    let gone = HttpEngine::new("http://127.0.0.1:9", vec![]);
    let e = gone.health().await.unwrap_err().to_string();
    assert!(
        e.contains("cannot reach http://127.0.0.1:9/v1/models"),
        "{e}"
    );
}

/// `cocoon engine check` against a fit server (ours, serving the FAKE engine) and one whose
/// stream carries no usage: the second is unfit, saying why.
#[tokio::test]
async fn engine_check_tells_a_fit_server_from_one_that_reports_no_usage() {
    let url = fake_server(Duration::ZERO).await;
    let r = cocoon_engine::check::check(&url, None).await;
    assert!(r.fit, "{r:#?}");
    assert_eq!(r.model.as_deref(), Some(FAKE_MODEL));
    assert!(r.answers && r.streams && r.usage_in_stream);
    assert_eq!(r.usage.unwrap().completion, FAKE_USAGE.completion_tokens);
    assert!(r.first_token_ms.is_some());
    assert_eq!(r.optional_fields.len(), 4);

    // No usage in the stream, and a model list naming two models.
    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let url = spawn(
        Router::new()
            .route(
                "/v1/chat/completions",
                post(move |body: String| async move {
                    if body.contains("\"stream\":true") {
                        sse.to_string()
                    } else {
                        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Paris"}}]}"#.to_string()
                    }
                }),
            )
            .route(
                "/v1/models",
                axum::routing::get(|| async { r#"{"data":[{"id":"a"},{"id":"b"}]}"# }),
            ),
    )
    .await;
    let r = cocoon_engine::check::check(&url, None).await;
    assert!(!r.fit);
    assert_eq!(
        r.problems,
        ["it lists 2 models (a, b); name one with --model"]
    );
    let r = cocoon_engine::check::check(&url, Some("a")).await;
    assert!(
        r.answers && r.streams && !r.usage_in_stream && !r.fit,
        "{r:#?}"
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("the stream reports no usage")),
        "{:?}",
        r.problems
    );
    let down = cocoon_engine::check::check("http://127.0.0.1:9", None).await;
    assert!(!down.fit, "{down:#?}");
    assert!(
        down.problems[0].starts_with("no model list:")
            && down.problems[0].contains("cannot reach http://127.0.0.1:9/v1/models"),
        "{:?}",
        down.problems
    );
}

/// An upstream's tool-call pieces and log probabilities become the answer's calls and
/// entries; a piece naming a call index that skips ahead (here u32::MAX) is dropped, so no
/// upstream can make the worker allocate for it.
#[tokio::test]
async fn upstream_tool_calls_and_logprobs_are_read_and_wild_indices_dropped() {
    let a = answer_to(concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"logprobs\":{\"content\":[{\"token\":\"ok\",\"logprob\":-0.25,\"bytes\":[111,107],\"top_logprobs\":[{\"token\":\"ok\",\"logprob\":-0.25,\"bytes\":[111,107]}]}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":4294967295,\"id\":\"evil\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    ))
    .await;
    assert_eq!(a.finish_reason, cocoon_engine::FinishReason::ToolCalls);
    assert_eq!(a.tool_calls.len(), 1, "{a:?}");
    assert_eq!(a.tool_calls[0].id, "call_a");
    assert_eq!(a.tool_calls[0].arguments, "{\"x\":1}");
    assert_eq!(a.logprobs.len(), 1);
    assert_eq!(a.logprobs[0].token, "ok");
    assert_eq!(a.logprobs[0].logprob, -0.25);
    assert_eq!(a.logprobs[0].top.len(), 1);
    assert_eq!(a.usage, usage(5, 0, 3, 0));
}
