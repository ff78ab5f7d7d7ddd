//! One client query, start to end: admitted (its limits read and written into the body),
//! credit reserved, a worker found (now or after a wait in the model's queue), the worker's
//! answer relayed part by part, then billed, recorded durably, and only then ended at the
//! client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_chain::price::{adjusted_parts, TokenUsage};
use cocoon_chain::Address;
use cocoon_net::rpc::{Peer, RpcError};
use cocoon_wire::answer::{self, AnswerMessage, Timings};
use cocoon_wire::common::{HttpRequest, HttpResponse, TokensUsed};
use cocoon_wire::proxy::{CancelQuery, ProxyRequest};
use tokio::sync::mpsc;

use crate::clients::err;
use crate::credit::{reservation, reserve_credit};
use crate::ledger::Entry;
use crate::pool::{Finished, NoWorker, Place, WorkerSlot};
use crate::Proxy;

/// Completion tokens assumed when a request names no limit.
pub const DEFAULT_MAX_TOKENS: u64 = 2048;

/// Removes a query's answer route and cancel route when dropped.
struct StreamGuard<'a> {
    proxy: &'a Proxy,
    request_id: [u8; 32],
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.proxy.streams.lock().remove(&self.request_id);
        self.proxy.cancels.lock().remove(&self.request_id);
    }
}

/// The completion limit a query runs under: the smaller of the wire's `max_tokens` (when
/// positive) and the body's `max_completion_tokens` / `max_tokens`, else
/// [`DEFAULT_MAX_TOKENS`]. The engine must stop where the reservation ends, not be cut there
/// (a cut answer is an error to the client): when the body does not already say exactly this
/// limit, it is written into the body (into the key the body uses, else `max_tokens`), and the
/// second value is true. A limit the body names that is not a positive integer is refused,
/// naming the field (it would otherwise run, and be reserved, at the default).
fn completion_limit(body: &mut serde_json::Value, wire: i32) -> Result<(u64, bool), String> {
    let named = |key: &str| body.get(key).filter(|v| !v.is_null());
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = named(key) {
            if v.as_u64().is_none_or(|n| n == 0) {
                return Err(format!("{key} must be a positive integer, got {v}"));
            }
        }
    }
    let key = if named("max_completion_tokens").is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let named = named(key).and_then(|v| v.as_u64());
    let limit = match (u64::try_from(wire).ok().filter(|w| *w > 0), named) {
        (Some(w), Some(n)) => w.min(n),
        (Some(w), None) => w,
        (None, Some(n)) => n,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    if named == Some(limit) {
        return Ok((limit, false));
    }
    match body.as_object_mut() {
        Some(obj) => {
            obj.insert(key.into(), limit.into());
            Ok((limit, true))
        }
        None => Ok((limit, false)),
    }
}

/// A `client.runQueryEx` as it arrived: what to run and under which limits.
pub(crate) struct QueryJob {
    pub model: String,
    pub query: Vec<u8>,
    pub max_coefficient: u32,
    pub max_tokens: i32,
    pub timeout: Duration,
    pub request_id: [u8; 32],
}

/// Runs one client query and answers it in `client.queryAnswer*Ex` packets: a refusal before a
/// worker runs it as an error with nothing billed; otherwise the worker's head and parts relayed
/// as they come, the last message carrying what was billed.
pub(crate) async fn serve_query(proxy: Arc<Proxy>, client: Peer, owner: Address, job: QueryJob) {
    let started = Instant::now();
    let start_unix = unix_now();
    let request_id = job.request_id;
    let timings = move || Timings {
        start: start_unix,
        end: unix_now(),
    };
    if let Err(e) = run_query(&proxy, &client, owner, job, &timings).await {
        // Refused before a worker ran it (run_query counts the others itself).
        let (code, message) = match e {
            RpcError::Remote { code, message } => (code, message),
            other => (500, other.to_string()),
        };
        proxy
            .metrics
            .request(false, started.elapsed().as_secs_f64());
        proxy.metrics.error(error_kind(code));
        let m = AnswerMessage::Error {
            code,
            message: message.into_bytes(),
            end: (TokensUsed::default(), timings()),
        };
        let _ = client.send(answer::client_message(request_id, m, None));
    }
    tracing::debug!(
        "request {} took {:?}",
        hex::encode(&request_id[..4]),
        started.elapsed()
    );
}

/// A worker for `model`: one free now, else a turn in the model's queue (first come, first
/// served) until `deadline`. Refused with 503 only when the queue is full or the deadline
/// passes; a model nobody serves or a price the client does not accept is refused at once.
async fn wait_for_worker(
    proxy: &Proxy,
    client: &Peer,
    model: &str,
    max_coefficient: u32,
    needs: cocoon_engine::Features,
    deadline: tokio::time::Instant,
) -> Result<WorkerSlot, RpcError> {
    let refusal = |e: NoWorker| {
        match e {
        NoWorker::UnknownModel => err(404, format!("no worker serves model {model}")),
        NoWorker::AllBusy => err(503, format!("every worker for {model} is busy; retry")),
        NoWorker::AllDisabled => err(503, format!("every worker for {model} is switched off now; retry later")),
        NoWorker::QueueFull(n) => err(
            503,
            format!("every worker for {model} is busy and {n} requests already wait (the queue is full); retry later"),
        ),
        NoWorker::Unsupported(needs) => err(
            400,
            format!(
                "no worker for {model} supports {} (a request with tools goes only to workers that announce tool calling)",
                needs.names().join(" and ")
            ),
        ),
        NoWorker::TooExpensive(c) => {
            err(402, format!("max_coefficient {max_coefficient} is below the cheapest worker's coefficient {c}"))
        }
    }
    };
    let place =
        proxy
            .pool
            .lock()
            .choose_or_wait(model, max_coefficient, needs, proxy.cfg.queue_per_model);
    let rx = match place {
        Ok(Place::Now(slot)) => return Ok(slot),
        Ok(Place::Queued(rx)) => rx,
        Err(e) => return Err(refusal(e)),
    };
    let mut rx = rx;
    let m = &proxy.metrics;
    m.queued.inc();
    let since = Instant::now();
    let gave_up = tokio::select! {
        got = &mut rx => match got {
            Ok(Ok(slot)) => {
                m.queued.dec();
                proxy.note_queue_wait(since.elapsed());
                return Ok(slot);
            }
            Ok(Err(e)) => refusal(e),
            Err(_) => err(503, "the proxy is stopping"),
        },
        _ = tokio::time::sleep_until(deadline) => err(
            503,
            format!(
                "every worker for {model} stayed busy for this request's whole timeout ({:.1} s waited); retry later",
                since.elapsed().as_secs_f64()
            ),
        ),
        _ = client.closed() => err(499, "client went away while the request waited for a worker"),
    };
    m.queued.dec();
    proxy.note_queue_wait(since.elapsed());
    // Leave the queue; a slot handed over in the meantime goes back (and on to the next).
    rx.close();
    if let Ok(Ok(slot)) = rx.try_recv() {
        proxy.pool.lock().finish(slot.id, Finished::Abandoned);
    }
    Err(gave_up)
}

/// How a relayed answer ended.
enum Ending {
    /// The worker finished: its last message, which carries its adjusted counts (as it
    /// reports them) and timings.
    Done(AnswerMessage),
    /// The worker failed.
    Failed { code: i32, message: Vec<u8> },
    /// We stopped it, with the code and reason to report.
    Cut { code: i32, why: &'static str },
}

async fn run_query(
    proxy: &Arc<Proxy>,
    client: &Peer,
    owner: Address,
    job: QueryJob,
    timings: &(impl Fn() -> Timings + Sync),
) -> Result<(), RpcError> {
    // The request's whole time: waiting for a worker, then the worker's answer.
    let deadline = tokio::time::Instant::now() + job.timeout;
    let admitted = admit(proxy, owner, job)?;
    let _reservation = reserve_credit(proxy, owner, admitted.reserve).await?;
    let slot = wait_for_worker(
        proxy,
        client,
        &admitted.model,
        admitted.max_coefficient,
        admitted.needs,
        deadline,
    )
    .await?;
    let request_id = admitted.request_id;
    let mut running = start_on_worker(proxy, &slot, admitted.query, request_id, deadline)?;
    let started = Instant::now();
    let (ending, delivered) = relay(
        client,
        &mut running,
        request_id,
        admitted.max_tokens,
        deadline,
        timings,
    )
    .await;
    if let Ending::Cut { code, why } = &ending {
        if slot.understands_cancel {
            let _ = running
                .worker
                .send(cocoon_wire::encode(&CancelQuery { request_id }));
        }
        tracing::info!(
            "request {} stopped ({code}): {why}",
            hex::encode(&request_id[..4])
        );
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (tokens, worker_times) = bill(proxy, &slot, &ending, delivered, admitted.reserve);
    account(proxy, &slot, &ending, &tokens, latency_ms);
    record(
        proxy,
        owner,
        &slot,
        tokens.total_tokens_used,
        client,
        &running.worker,
        request_id,
    )
    .await?;
    let end = (tokens, timings());
    let last = match ending {
        // The worker's last message, with what was billed (and the proxy's start on a head).
        Ending::Done(AnswerMessage::Head { head, .. }) => AnswerMessage::Head {
            head: with_proxy_start(head, end.1),
            end: None,
        },
        Ending::Done(last) => last,
        Ending::Failed { code, message } => AnswerMessage::Error { code, message, end },
        Ending::Cut { code, why } => AnswerMessage::Error {
            code,
            message: why.as_bytes().to_vec(),
            end,
        },
    }
    .ending(end);
    let _ = client.send(answer::client_message(request_id, last, worker_times));
    Ok(())
}

/// A query let in: its limits settled, and what it may cost at most.
struct Admitted {
    model: String,
    /// The `http.request` to run, its body stating the completion limit.
    query: Vec<u8>,
    max_coefficient: u32,
    /// The completion limit (body parts beyond it cut the answer).
    max_tokens: u64,
    request_id: [u8; 32],
    /// The most it can cost, adjusted tokens (see [`reservation`]).
    reserve: u64,
    /// What the serving worker must offer (tool calling for a request with tools).
    needs: cocoon_engine::Features,
}

/// Lets a query in or says why not: a proxy whose ledger failed takes nothing (no answer could
/// be billed), a refunded client nothing more; the query must be an `http.request` with a JSON
/// body, whose completion limit is settled and written into it.
fn admit(proxy: &Proxy, owner: Address, job: QueryJob) -> Result<Admitted, RpcError> {
    if let Err(e) = proxy.ledger.lock().check_poisoned() {
        return Err(err(
            503,
            format!("this proxy cannot record charges until it restarts: {e}"),
        ));
    }
    if proxy.ledger.lock().durable().refunded.contains_key(&owner) {
        return Err(err(
            409,
            "this client was granted its final refund; open a new client contract",
        ));
    }
    let mut http: HttpRequest = cocoon_wire::decode(&job.query)
        .map_err(|e| err(400, format!("query is not an http.request: {e}")))?;
    let mut body: serde_json::Value = serde_json::from_slice(&http.payload)
        .map_err(|e| err(400, format!("body is not JSON: {e}")))?;
    let needs = cocoon_engine::Features::needed_by(&body);
    let (max_tokens, rewritten) =
        completion_limit(&mut body, job.max_tokens).map_err(|e| err(400, e))?;
    if rewritten {
        http.payload = body.to_string().into_bytes();
    }
    let query = cocoon_wire::encode(&http);
    // As the reference reserves: the completion limit plus the query's bytes.
    let reserve = reservation(
        max_tokens,
        query.len() as u64,
        job.max_coefficient,
        proxy.params(),
    );
    Ok(Admitted {
        model: job.model,
        query,
        max_coefficient: job.max_coefficient,
        max_tokens,
        request_id: job.request_id,
        reserve,
        needs,
    })
}

/// A query sent to its worker: the worker's connection, the queue its answer messages arrive
/// on, and the client's cancel. Both routes are removed when this is dropped.
struct Running<'a> {
    worker: Peer,
    messages: mpsc::UnboundedReceiver<AnswerMessage>,
    cancel: tokio::sync::oneshot::Receiver<()>,
    _routes: StreamGuard<'a>,
}

/// Sends the query to the worker in `slot` (with its newest payment and the time left), having
/// routed its answer and the client's cancel to the returned [`Running`].
fn start_on_worker<'a>(
    proxy: &'a Proxy,
    slot: &WorkerSlot,
    query: Vec<u8>,
    request_id: [u8; 32],
    deadline: tokio::time::Instant,
) -> Result<Running<'a>, RpcError> {
    let gone = || {
        proxy.pool.lock().finish(slot.id, Finished::Failed);
        err(503, "the chosen worker just disconnected; retry")
    };
    let Some(worker) = proxy.worker_peers.lock().get(&slot.id).cloned() else {
        return Err(gone());
    };
    let (tx, messages) = mpsc::unbounded_channel();
    proxy.streams.lock().insert(request_id, tx);
    let routes = StreamGuard { proxy, request_id };
    let (cancel_tx, cancel) = tokio::sync::oneshot::channel();
    proxy.cancels.lock().insert(request_id, cancel_tx);
    let run = ProxyRequest::RunQueryEx {
        query,
        signed_payment: proxy.worker_voucher(slot.owner, proxy.worker_total(&slot.owner)),
        coefficient: slot.coefficient as i64,
        // As the reference: the worker gets 95 % of the time (left after the queue), so its
        // error arrives in ours.
        timeout: cocoon_wire::common::Double(
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs_f64()
                * 0.95,
        ),
        request_id,
        flags: (),
        enable_debug: Some(false),
    };
    if worker.send(cocoon_wire::encode(&run)).is_err() {
        return Err(gone());
    }
    Ok(Running {
        worker,
        messages,
        cancel,
        _routes: routes,
    })
}

/// Relays the worker's answer to the client as it comes (queued parts merged into one), until
/// the worker ends it, fails, or it must be cut (the client left or cancelled, the deadline,
/// a broken worker, an answer longer than its reservation). Returns how it ended and how many
/// body messages reached the client (each at least one completion token: what a cut answer is
/// billed for).
async fn relay(
    client: &Peer,
    running: &mut Running<'_>,
    request_id: [u8; 32],
    max_tokens: u64,
    deadline: tokio::time::Instant,
    timings: &(impl Fn() -> Timings + Sync),
) -> (Ending, u64) {
    let deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(deadline);
    let mut delivered: u64 = 0;
    let mut head_sent = false;
    let client_left = Ending::Cut {
        code: 499,
        why: "client went away",
    };
    // A message taken off the queue while merging parts, handled on the next turn.
    let mut pending: Option<AnswerMessage> = None;
    let ending = loop {
        let msg = match pending.take() {
            Some(m) => Some(m),
            None => tokio::select! {
                biased;
                m = running.messages.recv() => m,
                _ = running.worker.closed() => None,
                _ = client.closed() => break client_left,
                _ = &mut running.cancel => break Ending::Cut { code: 499, why: "client cancelled" },
                _ = &mut deadline => break Ending::Cut { code: 504, why: "timeout in proxy" },
            },
        };
        let Some(msg) = msg else {
            break Ending::Cut {
                code: 502,
                why: "the worker's connection closed",
            };
        };
        match msg {
            AnswerMessage::Error { code, message, .. } => break Ending::Failed { code, message },
            AnswerMessage::Head { .. } if head_sent => {
                break Ending::Cut {
                    code: 502,
                    why: "the worker sent a second answer head",
                }
            }
            AnswerMessage::Part { .. } if !head_sent => {
                break Ending::Cut {
                    code: 502,
                    why: "the worker sent a part before the answer head",
                }
            }
            last @ (AnswerMessage::Head { end: Some(_), .. }
            | AnswerMessage::Part { end: Some(_), .. }) => break Ending::Done(last),
            AnswerMessage::Head { head, end: None } => {
                head_sent = true;
                let m = AnswerMessage::Head {
                    head: with_proxy_start(head, timings()),
                    end: None,
                };
                if client
                    .send(answer::client_message(request_id, m, None))
                    .is_err()
                {
                    break client_left;
                }
            }
            AnswerMessage::Part { bytes, end: None } => {
                // Merge parts already queued behind this one: fewer, larger frames.
                let mut bytes = bytes;
                while bytes.len() < 256 * 1024 {
                    match running.messages.try_recv() {
                        Ok(AnswerMessage::Part {
                            bytes: more,
                            end: None,
                        }) => {
                            delivered += 1;
                            bytes.extend_from_slice(&more);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                delivered += 1;
                let m = AnswerMessage::Part { bytes, end: None };
                if client
                    .send(answer::client_message(request_id, m, None))
                    .is_err()
                {
                    break client_left;
                }
                if delivered > max_tokens {
                    break Ending::Cut {
                        code: 413,
                        why: "the answer outgrew its reservation",
                    };
                }
            }
        }
    };
    (ending, delivered)
}

/// What a query is billed: the worker's adjusted counts when it finished the answer (as the
/// reference bills them), else only the `delivered` body messages as completion tokens; never
/// above the reservation. With the worker's timings when it gave them.
fn bill(
    proxy: &Proxy,
    slot: &WorkerSlot,
    ending: &Ending,
    delivered: u64,
    reserve: u64,
) -> (TokensUsed, Option<Timings>) {
    let (mut tokens, worker_times) = match ending_of_worker(ending) {
        Some((tokens, worker)) => (tokens, Some(worker)),
        None => {
            let u = TokenUsage {
                completion: delivered,
                ..Default::default()
            };
            let [_, _, completion, _] = adjusted_parts(&u, slot.coefficient, proxy.params());
            let tokens = TokensUsed {
                completion_tokens_used: completion,
                total_tokens_used: completion,
                ..Default::default()
            };
            (tokens, None)
        }
    };
    tokens.total_tokens_used = tokens.total_tokens_used.min(reserve);
    (tokens, worker_times)
}

/// Counts a finished query: the worker's standing in the pool and its reputation, and the
/// metrics (outcome, latency, tokens by kind).
fn account(
    proxy: &Proxy,
    slot: &WorkerSlot,
    ending: &Ending,
    tokens: &TokensUsed,
    latency_ms: f64,
) {
    let error = match ending {
        Ending::Done(_) => None,
        Ending::Failed { code, .. } | Ending::Cut { code, .. } => Some(*code),
    };
    proxy.pool.lock().finish(
        slot.id,
        match error {
            None => Finished::Served(latency_ms),
            Some(499) => Finished::Abandoned,
            Some(_) => Finished::Failed,
        },
    );
    proxy
        .reputation
        .lock()
        .entry(slot.owner)
        .or_default()
        .record(error.is_none(), latency_ms);
    let m = &proxy.metrics;
    m.request(error.is_none(), latency_ms / 1000.0);
    if let Some(code) = error {
        m.error(error_kind(code));
    }
    m.add_tokens("prompt", tokens.prompt_tokens_used);
    m.add_tokens("cached", tokens.cached_tokens_used);
    m.add_tokens("completion", tokens.completion_tokens_used);
    m.add_tokens("reasoning", tokens.reasoning_tokens_used);
    m.add_tokens("billed", tokens.total_tokens_used);
}

/// Records the charge (counted in credit checks at once) and waits until it is on disk: one
/// group commit (one fsync) covers every query finishing meanwhile. Only then may the answer's
/// last message leave, so an app that got an answer complete is billed for it across any crash
/// and the worker paid; a crash before the fsync loses the record, and the app never saw the
/// answer's end. The vouchers that promise it follow.
async fn record(
    proxy: &Arc<Proxy>,
    owner: Address,
    slot: &WorkerSlot,
    billed: u64,
    client: &Peer,
    worker: &Peer,
    request_id: [u8; 32],
) -> Result<(), RpcError> {
    if billed == 0 {
        return Ok(());
    }
    let seq = proxy
        .ledger
        .lock()
        .append_unsynced(Entry::Charge {
            request: hex::encode(request_id),
            client: owner,
            worker: slot.owner,
            tokens: billed,
        })
        .map_err(|e| err(500, format!("ledger: {e}")))?;
    if let Err(e) = proxy.durable(seq).await {
        tracing::error!("ledger fsync failed, the answer's end and vouchers withheld: {e}");
        return Err(err(
            500,
            format!("the proxy could not record this answer: {e}"),
        ));
    }
    proxy.queue_vouchers(
        owner,
        client.clone(),
        slot.owner,
        worker.clone(),
        request_id,
    );
    Ok(())
}

/// The worker's counts and timings, when it finished the answer itself.
fn ending_of_worker(ending: &Ending) -> Option<(TokensUsed, Timings)> {
    match ending {
        Ending::Done(last) => last.end(),
        Ending::Failed { .. } | Ending::Cut { .. } => None,
    }
}

/// The head as relayed to the client: the worker's, with when the proxy started the request
/// (`X-Cocoon-Proxy-Start`, unix seconds, as the reference adds it).
fn with_proxy_start(mut head: HttpResponse, t: Timings) -> HttpResponse {
    head.headers.push(cocoon_wire::common::HttpHeader {
        name: b"X-Cocoon-Proxy-Start".to_vec(),
        value: format!("{:.6}", t.start).into_bytes(),
    });
    head
}

/// Now, unix seconds.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The metric label of an error code.
fn error_kind(code: i32) -> &'static str {
    match code {
        400 => "bad_request",
        401 | 403 => "unauthorized",
        402 => "insufficient_credit",
        404 => "no_worker",
        409 => "closed",
        413 => "overrun",
        499 => "cancelled",
        503 => "busy",
        504 => "timeout",
        _ => "worker_failed",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_always_states_the_limit_the_query_runs_under() {
        use serde_json::json;
        let limit = |mut body: serde_json::Value, wire: i32| {
            let (n, rewritten) = super::completion_limit(&mut body, wire).unwrap();
            (n, rewritten, body)
        };
        // Only the body names it: kept as is.
        assert_eq!(
            limit(json!({"max_tokens": 50}), 0),
            (50, false, json!({"max_tokens": 50}))
        );
        // The wire is smaller: the body is lowered (it was cut with 413 before).
        assert_eq!(
            limit(json!({"max_tokens": 500}), 100),
            (100, true, json!({"max_tokens": 100}))
        );
        assert_eq!(
            limit(json!({"max_completion_tokens": 500}), 100),
            (100, true, json!({"max_completion_tokens": 100}))
        );
        // The body is smaller: it stands, and the reservation is the smaller.
        assert_eq!(
            limit(json!({"max_tokens": 20}), 100),
            (20, false, json!({"max_tokens": 20}))
        );
        // Nobody names it (null counts as not named): the wire's, else the default, written in.
        assert_eq!(limit(json!({}), 64), (64, true, json!({"max_tokens": 64})));
        assert_eq!(
            limit(json!({"max_tokens": null}), 0),
            (
                super::DEFAULT_MAX_TOKENS,
                true,
                json!({"max_tokens": super::DEFAULT_MAX_TOKENS})
            )
        );
        // A negative wire value is no limit.
        assert_eq!(
            limit(json!({"max_tokens": 7}), -5),
            (7, false, json!({"max_tokens": 7}))
        );
        // A named limit that is not a positive integer is refused, naming the field.
        for (body, field) in [
            (json!({"max_tokens": "lots"}), "max_tokens"),
            (json!({"max_tokens": 100.5}), "max_tokens"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": -3}), "max_tokens"),
            (
                json!({"max_completion_tokens": "x", "max_tokens": 50}),
                "max_completion_tokens",
            ),
        ] {
            let e = super::completion_limit(&mut body.clone(), 0).unwrap_err();
            assert!(
                e.starts_with(&format!("{field} must be a positive integer")),
                "{e}"
            );
        }
    }
}
