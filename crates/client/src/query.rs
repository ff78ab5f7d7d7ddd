//! One request at one proxy, as COCOON runs it: `client.runQueryEx` goes out as a one-way packet
//! and the answer comes back in packets naming the request (the `http.response` head, body
//! parts, the billed tokens on the last message; or an error). [`start`] sends it and spawns
//! the task that reads those messages (with a deadline) into a [`QueryStream`], which is what
//! the app's side reads.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon_net::rpc::Peer;
use cocoon_wire::answer::AnswerMessage;
use cocoon_wire::client::ClientRequest;
use cocoon_wire::common::{Double, HttpResponse, TokensUsed};
use cocoon_wire::proxy::CancelQuery;
use tokio::sync::mpsc;

use crate::ClientError;

/// Where a proxy connection's reader routes each request's answer messages.
pub(crate) type Routes = Arc<Mutex<HashMap<[u8; 32], mpsc::UnboundedSender<AnswerMessage>>>>;

/// What the app's side of a request receives, in order: the head, body bytes, then the end.
#[derive(Debug)]
pub(crate) enum Delivery {
    Head(HttpResponse),
    Body(Vec<u8>),
    End(TokensUsed),
    Failed {
        error: ClientError,
        tokens: TokensUsed,
    },
}

/// What to run.
pub(crate) struct Job {
    pub model: String,
    pub query: Vec<u8>,
    pub max_coefficient: u32,
    pub max_tokens: i32,
    pub timeout: Duration,
}

/// Sends `job` on `peer` and returns the stream its answer arrives on. `cancel`: the proxy
/// understands `proxy.cancelQuery` (ours), so dropping the stream early stops the worker.
pub(crate) fn start(
    peer: &Peer,
    routes: &Routes,
    job: Job,
    cancel: bool,
    metrics: Arc<cocoon_observe::Metrics>,
) -> QueryStream {
    let mut request_id = [0u8; 32];
    // Should the RNG fail, the clock's nanoseconds still keep ids of this client apart.
    if getrandom::fill(&mut request_id).is_err() {
        request_id[..16].copy_from_slice(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                .to_le_bytes(),
        );
    }
    let (route_tx, mut route_rx) = mpsc::unbounded_channel();
    routes.lock().insert(request_id, route_tx);
    let (tx, rx) = mpsc::unbounded_channel();
    let run = ClientRequest::RunQueryEx {
        model_name: job.model.into_bytes(),
        query: job.query,
        max_coefficient: i32::try_from(job.max_coefficient).unwrap_or(i32::MAX),
        max_tokens: job.max_tokens,
        timeout: Double(job.timeout.as_secs_f64()),
        request_id,
        min_config_version: 0,
        flags: (),
        enable_debug: Some(false),
    };
    if peer.send(cocoon_wire::encode(&run)).is_err() {
        routes.lock().remove(&request_id);
        let _ = tx.send(Delivery::Failed {
            error: ClientError::NoProxy("connection to the proxy closed".into()),
            tokens: TokensUsed::default(),
        });
    } else {
        let (peer, routes) = (peer.clone(), routes.clone());
        // The proxy answers within the request's timeout; past it (and a margin) we stop waiting.
        let limit = job.timeout + Duration::from_secs(5);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match relay(&mut route_rx, &tx, &peer, limit).await {
                Ok(tokens) => record(&metrics, &tokens, started.elapsed().as_secs_f64()),
                Err((error, tokens)) => {
                    let _ = tx.send(Delivery::Failed { error, tokens });
                }
            }
            routes.lock().remove(&request_id);
        });
    }
    QueryStream {
        rx,
        head: None,
        first: None,
        ended: None,
        cancel: cancel.then(|| (peer.clone(), request_id)),
    }
}

/// Turns the proxy's answer messages into deliveries (the head, then body bytes, then the
/// end) until the answer ends; the billed tokens, or the failure that ended it and the tokens
/// billed for it. Past `limit` it stops waiting.
async fn relay(
    messages: &mut mpsc::UnboundedReceiver<AnswerMessage>,
    tx: &mpsc::UnboundedSender<Delivery>,
    peer: &Peer,
    limit: Duration,
) -> Result<TokensUsed, (ClientError, TokensUsed)> {
    let nothing = TokensUsed::default();
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut head_seen = false;
    loop {
        let m = tokio::select! {
            m = messages.recv() => m,
            _ = &mut deadline => {
                let message = format!("no answer within {limit:?}");
                return Err((ClientError::Remote { status: 504, message }, nothing));
            }
            _ = peer.closed() => None,
        };
        let closed = || ClientError::NoProxy("connection to the proxy closed".into());
        let (delivery, end) = match m.ok_or_else(|| (closed(), nothing))? {
            AnswerMessage::Head { head, end } if !head_seen => (Delivery::Head(head), end),
            AnswerMessage::Part { bytes, end } if head_seen => (Delivery::Body(bytes), end),
            AnswerMessage::Error { code, message, end } => {
                let error = ClientError::from_proxy(code, String::from_utf8_lossy(&message));
                return Err((error, end.0));
            }
            AnswerMessage::Head { .. } | AnswerMessage::Part { .. } => {
                let error =
                    ClientError::Refused("the proxy's answer parts are out of order".into());
                return Err((error, nothing));
            }
        };
        head_seen = true;
        let _ = tx.send(delivery);
        if let Some((tokens, _)) = end {
            let _ = tx.send(Delivery::End(tokens));
            return Ok(tokens);
        }
    }
}

fn record(metrics: &cocoon_observe::Metrics, t: &TokensUsed, secs: f64) {
    metrics.request(true, secs);
    metrics.add_tokens("prompt", t.prompt_tokens_used);
    metrics.add_tokens("cached", t.cached_tokens_used);
    metrics.add_tokens("completion", t.completion_tokens_used);
    metrics.add_tokens("reasoning", t.reasoning_tokens_used);
    metrics.add_tokens("billed", t.total_tokens_used);
}

/// A running query: its head ([`QueryStream::status`], [`QueryStream::header`]), its body as it
/// comes ([`QueryStream::next_chunk`]), then how it ended ([`QueryStream::ended`]); or all of
/// it at once ([`QueryStream::answer`]).
pub struct QueryStream {
    rx: mpsc::UnboundedReceiver<Delivery>,
    head: Option<HttpResponse>,
    /// The head's own body bytes, handed out first.
    first: Option<Vec<u8>>,
    ended: Option<Result<TokensUsed, ClientError>>,
    cancel: Option<(Peer, [u8; 32])>,
}

/// A finished query.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status the worker's engine answered with.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
    /// Token counts (adjusted) and the billed total.
    pub tokens: TokensUsed,
}

impl QueryStream {
    /// Waits for the head. `Err` when the request failed before it: the error and the tokens
    /// billed for it (zero when the proxy refused it before any work).
    pub(crate) async fn wait_head(&mut self) -> Result<(), (ClientError, TokensUsed)> {
        match self.rx.recv().await {
            Some(Delivery::Head(mut h)) => {
                self.first = Some(std::mem::take(&mut h.payload));
                self.head = Some(h);
                Ok(())
            }
            Some(Delivery::Failed { error, tokens }) => Err((error, tokens)),
            Some(other) => Err((
                ClientError::Refused(format!(
                    "the answer began with {other:?} instead of its head"
                )),
                TokensUsed::default(),
            )),
            None => Err((
                ClientError::Remote {
                    status: 502,
                    message: "the query ended without an answer".into(),
                },
                TokensUsed::default(),
            )),
        }
    }

    /// The HTTP status of the answer (200 until the head says otherwise).
    pub fn status(&self) -> u16 {
        self.head
            .as_ref()
            .and_then(|h| u16::try_from(h.status_code).ok())
            .filter(|s| (100..=599).contains(s))
            .unwrap_or(200)
    }

    /// A header of the answer's head (names compared without case).
    pub fn header(&self, name: &str) -> Option<String> {
        let h = self.head.as_ref()?;
        h.headers
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|x| String::from_utf8_lossy(&x.value).into_owned())
    }

    /// The next body bytes; `None` once the answer ended (see [`QueryStream::ended`]).
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some(f) = self.first.take().filter(|f| !f.is_empty()) {
            return Some(f);
        }
        if self.ended.is_some() {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Some(Delivery::Body(b)) if b.is_empty() => continue,
                Some(Delivery::Body(b)) => return Some(b),
                Some(Delivery::End(t)) => self.ended = Some(Ok(t)),
                Some(Delivery::Failed { error, .. }) => self.ended = Some(Err(error)),
                Some(Delivery::Head(_)) => {
                    self.ended = Some(Err(ClientError::Refused("a second answer head".into())))
                }
                None => {
                    self.ended = Some(Err(ClientError::Remote {
                        status: 502,
                        message: "the query ended without its final part".into(),
                    }))
                }
            }
            return None;
        }
    }

    /// How the answer ended, once [`QueryStream::next_chunk`] returned `None`: the tokens
    /// billed, or the error that cut it.
    pub fn ended(&self) -> Option<&Result<TokensUsed, ClientError>> {
        self.ended.as_ref()
    }

    /// Reads the whole answer.
    pub async fn answer(mut self) -> Result<Answer, ClientError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            body.extend_from_slice(&chunk);
        }
        match self.ended.take() {
            Some(Ok(tokens)) => Ok(Answer {
                status: self.status(),
                body,
                tokens,
            }),
            Some(Err(e)) => Err(e),
            None => Err(ClientError::Remote {
                status: 502,
                message: "the answer did not end".into(),
            }),
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // Dropped before the end (the app went away): tell the proxy to stop the worker, when
        // it understands that (a reference proxy does not; it runs the request to its end).
        if let Some((peer, request_id)) = self.cancel.take() {
            if self.ended.is_none() {
                let _ = peer.send(cocoon_wire::encode(&CancelQuery { request_id }));
            }
        }
    }
}
