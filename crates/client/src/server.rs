//! The OpenAI-compatible HTTP API on localhost: `/v1/chat/completions` and `/v1/completions`
//! (streamed or not) and `/v1/models`, behind an API key (`Authorization: Bearer …`).
//! Two request fields beyond OpenAI's: `max_coefficient` (thousandths: the dearest worker
//! accepted) and `timeout` (seconds); they are taken out before the body goes to a worker.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::{Client, ClientError};

struct App {
    client: Arc<Client>,
    api_key: String,
}

/// The router; every route needs `api_key`.
pub fn router(client: Arc<Client>, api_key: String) -> Router {
    let c = client.clone();
    let status = cocoon_observe::router(client.metrics.clone(), Arc::new(move || c.jsonstats()));
    let app = Arc::new(App { client, api_key });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .with_state(app)
        // The dashboard, /metrics, /jsonstats and /healthz need no API key: they hold no prompts
        // or answers, and the server listens on localhost.
        .merge(status)
}

/// Serves on `listener` until dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Arc<Client>,
    api_key: String,
) -> std::io::Result<()> {
    // Streamed answers are many small writes: never let Nagle hold them back.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(client, api_key)).await
}

fn error(status: u16, message: impl std::fmt::Display) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = cocoon_engine::openai::error_body(status.as_u16(), &message.to_string());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn client_error(e: &ClientError) -> Response {
    // Worker errors arrive as OpenAI error objects already; pass them through.
    if let ClientError::Remote { status, message } = e {
        if let Ok(v) = serde_json::from_str::<Value>(message) {
            if v.get("error").is_some() {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                return (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    message.clone(),
                )
                    .into_response();
            }
        }
    }
    error(e.status(), e)
}

fn authorized(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison of equal-length keys.
    let ok = given.len() == app.api_key.len()
        && given
            .bytes()
            .zip(app.api_key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(Box::new(error(
            401,
            "missing or wrong API key (Authorization: Bearer <key>)",
        )))
    }
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return *r;
    }
    match app.client.models().await {
        Ok(list) => {
            let data: Vec<Value> = list
                .iter()
                .map(|m| {
                    let name = m.id.split('@').next().unwrap_or(&m.id);
                    json!({
                        "id": name,
                        "object": "model",
                        "owned_by": "cocoon",
                        "identity": m.id,
                        "features": m.features.names(),
                        "workers": m.workers.iter().map(|(c, a, max)| json!({"coefficient": c, "active_requests": a, "max_active_requests": max})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"object": "list", "data": data}).to_string(),
            )
                .into_response()
        }
        Err(e) => client_error(&e),
    }
}

async fn chat(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    run(app, headers, body, "/v1/chat/completions").await
}

async fn completion(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    run(app, headers, body, "/v1/completions").await
}

async fn run(app: Arc<App>, headers: HeaderMap, body: Bytes, path: &str) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return *r;
    }
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return error(400, "the body must be a JSON object"),
        Err(e) => return error(400, format!("the body is not JSON: {e}")),
    };
    let obj = v.as_object_mut().expect("checked above");
    let max_coefficient = match obj.remove("max_coefficient") {
        None | Some(Value::Null) => None,
        Some(x) => match x.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Some(n),
            _ => {
                return error(
                    400,
                    "max_coefficient must be a positive integer (thousandths)",
                )
            }
        },
    };
    let timeout = match obj.remove("timeout") {
        None | Some(Value::Null) => None,
        Some(x) => match x.as_f64() {
            Some(s) if s > 0.0 && s <= 3600.0 => Some(Duration::from_secs_f64(s)),
            _ => return error(400, "timeout must be seconds in (0, 3600]"),
        },
    };
    let Some(model) = obj
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string)
    else {
        return error(400, "model is required");
    };
    let stream = obj.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    let forwarded = v.to_string().into_bytes();
    let q = match app
        .client
        .query(&model, path, forwarded, max_coefficient, timeout)
        .await
    {
        Ok(q) => q,
        Err(e) => return client_error(&e),
    };
    // The head has come: the engine's status and content type stand from here on.
    let status = StatusCode::from_u16(q.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = q.header("content-type").unwrap_or_else(|| {
        if stream {
            "text/event-stream"
        } else {
            "application/json"
        }
        .to_string()
    });
    if !stream || !status.is_success() {
        let answer = match q.answer().await {
            Ok(a) => a,
            Err(e) => return client_error(&e),
        };
        return (status, [(header::CONTENT_TYPE, content_type)], answer.body).into_response();
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(sse_body(q)))
        .unwrap_or_else(|_| error(500, "response build failed"))
}

/// The SSE body: the answer's bytes as they come, then, if the answer was cut, one error
/// frame saying why. Dropping it (the app hung up) drops the query, which cancels it at the
/// worker where the proxy understands that.
fn sse_body(
    q: crate::QueryStream,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::unfold(Some(q), |q| async move {
        let mut q = q?;
        match q.next_chunk().await {
            Some(chunk) => Some((Ok(Bytes::from(chunk)), Some(q))),
            None => match q.ended() {
                Some(Err(e)) => {
                    let frame = format!(
                        "data: {}\n\n",
                        cocoon_engine::openai::error_body(e.status(), &e.to_string())
                    );
                    Some((Ok(Bytes::from(frame)), None))
                }
                _ => None,
            },
        }
    })
}
