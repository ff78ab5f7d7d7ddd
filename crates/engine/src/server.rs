//! An OpenAI-compatible HTTP server for any [`Engine`]: `/v1/models`,
//! `/v1/chat/completions` and `/v1/completions`, streamed (SSE, with a
//! final usage chunk when asked) or not. A worker puts its engine behind
//! it; the fake engine behind it is the benchmarks' direct baseline.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::engine::{Engine, EngineError, Event, Usage};
use crate::request::EngineRequest;

/// The router serving `engine`.
pub fn router(engine: Arc<dyn Engine>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .with_state(engine)
}

/// Serves `engine` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<dyn Engine>,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine)).await
}

async fn models(State(engine): State<Arc<dyn Engine>>) -> Response {
    let data: Vec<Value> = engine
        .models()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "cocoon"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn chat(State(engine): State<Arc<dyn Engine>>, body: Bytes) -> Response {
    respond(engine, EngineRequest::parse_chat(&body)).await
}

async fn completion(State(engine): State<Arc<dyn Engine>>, body: Bytes) -> Response {
    respond(engine, EngineRequest::parse_completion(&body)).await
}

/// The OpenAI error body.
pub fn error_json(e: &EngineError) -> Value {
    let kind = match e.http_status() {
        400 => "invalid_request_error",
        404 => "not_found_error",
        503 => "overloaded_error",
        504 => "timeout_error",
        _ => "server_error",
    };
    json!({"error": {"message": e.to_string(), "type": kind, "code": e.http_status()}})
}

/// The OpenAI usage object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(e: &EngineError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error_json(e))
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn respond(
    engine: Arc<dyn Engine>,
    parsed: Result<EngineRequest, crate::request::RequestError>,
) -> Response {
    let request = match parsed {
        Ok(r) => r,
        Err(e) => return error_response(&EngineError::Request(e)),
    };
    let chat = request.is_chat();
    let (stream, include_usage, model) =
        (request.stream, request.include_usage, request.model.clone());
    let generation = match engine.generate(request) {
        Ok(g) => g,
        Err(e) => return error_response(&e),
    };
    let id = format!(
        "cmpl-{}-{}",
        now(),
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    if !stream {
        return match generation.collect().await {
            Ok(a) => {
                let choice = if chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish_reason.as_str()})
                } else {
                    json!({"index": 0, "text": a.text, "finish_reason": a.finish_reason.as_str()})
                };
                let object = if chat {
                    "chat.completion"
                } else {
                    "text_completion"
                };
                json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": object, "created": now(), "model": model, "choices": [choice], "usage": usage_json(&a.usage)}),
                )
            }
            Err(e) => error_response(&e),
        };
    }
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let created = now();
    let frame = move |choices: Value, usage: Option<Value>| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut first = true;
    let body = generation
        .map(move |item| -> Vec<Bytes> {
            match item {
                Ok(Event::Text(t)) => {
                    let choice = if chat {
                        let delta = if first {
                            json!({"role": "assistant", "content": t})
                        } else {
                            json!({"content": t})
                        };
                        json!([{"index": 0, "delta": delta, "finish_reason": null}])
                    } else {
                        json!([{"index": 0, "text": t, "finish_reason": null}])
                    };
                    first = false;
                    vec![frame(choice, None)]
                }
                Ok(Event::Done {
                    usage,
                    finish_reason,
                }) => {
                    let last = if chat {
                        json!([{"index": 0, "delta": {}, "finish_reason": finish_reason.as_str()}])
                    } else {
                        json!([{"index": 0, "text": "", "finish_reason": finish_reason.as_str()}])
                    };
                    let mut out = vec![frame(last, None)];
                    if include_usage {
                        out.push(frame(json!([]), Some(usage_json(&usage))));
                    }
                    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                    out
                }
                Err(e) => vec![Bytes::from(format!("data: {}\n\n", error_json(&e)))],
            }
        })
        .flat_map(|v| futures_util::stream::iter(v.into_iter().map(Ok::<_, Infallible>)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| error_response(&EngineError::Internal("response build failed".into())))
}
