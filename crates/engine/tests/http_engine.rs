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
    let url = sse_server(sse).await;
    let a = HttpEngine::new(&url, vec![])
        .generate(chat_request("m"))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        (
            a.usage.prompt_tokens,
            a.usage.cached_tokens,
            a.usage.completion_tokens,
            a.usage.reasoning_tokens
        ),
        (20, 16, 7, 3)
    );
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
