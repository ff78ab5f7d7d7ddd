//! An OpenAI-compatible HTTP server for any [`Engine`]: `/v1/models`,
//! `/v1/chat/completions` and `/v1/completions`, streamed (SSE, with a
//! final usage chunk when asked) or not. A worker puts its engine behind
//! it; the fake engine behind it is the benchmarks' direct baseline.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::engine::{Engine, EngineError};
use crate::openai::Formatter;
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
    // Streamed answers are many small writes: never let Nagle hold them back.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
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

use crate::openai::error_json;

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

async fn respond(
    engine: Arc<dyn Engine>,
    parsed: Result<EngineRequest, crate::request::RequestError>,
) -> Response {
    let request = match parsed {
        Ok(r) => r,
        Err(e) => return error_response(&EngineError::Request(e)),
    };
    let mut fmt = Formatter::new(&request);
    let generation = match engine.generate(request) {
        Ok(g) => g,
        Err(e) => return error_response(&e),
    };
    if !fmt.is_stream() {
        // The formatter keeps everything until the end, which is the whole JSON object.
        let mut generation = generation;
        while let Some(item) = generation.next().await {
            match item.map(|e| fmt.event(e)) {
                Ok(Some(body)) => {
                    return (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response()
                }
                Ok(None) => {}
                Err(e) => return error_response(&e),
            }
        }
        return error_response(&EngineError::Internal(
            "generation ended without a final usage".into(),
        ));
    }
    let body = generation.map(move |item| {
        Ok::<_, Infallible>(Bytes::from(match item {
            Ok(e) => fmt.event(e).unwrap_or_default(),
            Err(e) => Formatter::error_frame(&e),
        }))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| error_response(&EngineError::Internal("response build failed".into())))
}
