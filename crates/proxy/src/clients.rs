//! The proxy's client listener: authorization against the client contract on chain, and the
//! query path — reserve, choose a worker, relay the stream, price, record, pay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_chain::contracts::{ClientData, ContractState};
use cocoon_chain::messages::op;
use cocoon_chain::price::{adjust, adjusted_tokens, TokenUsage};
use cocoon_chain::Address;
use cocoon_net::rpc::{AnswerFuture, Peer, RpcError};
use cocoon_wire::client::{
    AuthorizationWithProxy, ClientConnectedToProxy, ClientPaymentStatus, ClientQueryAnswer,
    ClientQueryAnswerPart, ClientRequest, ProxyConnectionAuth, Refund, WorkerInstanceV2,
    WorkerType, WorkerTypeV2, WorkerTypes, WorkerTypesV2,
};
use cocoon_wire::common::{HttpRequest, TokensUsed};
use cocoon_wire::proxy::{CancelQuery, ProxyQueryAnswer, ProxyQueryAnswerPart, ProxyRequest};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::ledger::Entry;
use crate::pool::{Finished, NoWorker};
use crate::Proxy;

/// Completion tokens assumed when a request names no limit.
pub const DEFAULT_MAX_TOKENS: u64 = 2048;
/// How long an on-chain snapshot of a client contract is trusted.
const ONCHAIN_TTL: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Conn {
    owner: Option<Address>,
    authorized: bool,
}

pub(crate) async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    identity: Arc<cocoon_net::identity::Renewing>,
) {
    crate::accept_each(proxy, listener, identity, "client", serve).await
}

async fn serve(proxy: Arc<Proxy>, conn: cocoon_net::Connection) {
    let state = Arc::new(Mutex::new(Conn::default()));
    let (p, s) = (proxy.clone(), state.clone());
    let on_query = Arc::new(move |peer: Peer, data: Vec<u8>| -> AnswerFuture {
        let (proxy, state) = (p.clone(), s.clone());
        Box::pin(async move { handle_query(proxy, state, peer, data).await })
    });
    // A client may cancel one of its requests (its own caller went away).
    let p = proxy.clone();
    let on_packet = Arc::new(move |_: &Peer, data: Vec<u8>| {
        if let Ok(CancelQuery { request_id }) = cocoon_wire::decode::<CancelQuery>(&data) {
            if let Some(stop) = p.cancels.lock().expect("cancels").remove(&request_id) {
                let _ = stop.send(());
            }
        }
    });
    let peer = Peer::spawn(conn, on_query, on_packet);
    let _counted = proxy.metrics.peer("client");
    peer.closed().await;
}

fn err(code: i32, message: impl Into<String>) -> RpcError {
    RpcError::remote(code, message)
}

async fn onchain(
    proxy: &Proxy,
    owner: Address,
    fresh: bool,
) -> Result<Option<ClientData>, RpcError> {
    if !fresh {
        if let Some((d, at)) = proxy.book.lock().expect("book").onchain.get(&owner) {
            if at.elapsed() < ONCHAIN_TTL {
                return Ok(Some(d.clone()));
            }
        }
    }
    let address = proxy
        .client_contract(owner)
        .map_err(|e| err(500, e.to_string()))?;
    let acc = proxy
        .chain
        .account(&address)
        .await
        .map_err(|e| err(503, format!("chain unavailable: {e}")))?;
    let Some(data) = acc.data else {
        return Ok(None);
    };
    let data = ClientData::parse(&data).map_err(|e| err(500, e.to_string()))?;
    proxy
        .book
        .lock()
        .expect("book")
        .onchain
        .insert(owner, (data.clone(), Instant::now()));
    Ok(Some(data))
}

async fn handle_query(
    proxy: Arc<Proxy>,
    state: Arc<Mutex<Conn>>,
    peer: Peer,
    data: Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    let request: ClientRequest =
        cocoon_wire::decode(&data).map_err(|e| err(400, format!("not a client request: {e}")))?;
    let authorized_owner = || {
        let st = state.lock().expect("conn");
        match (st.owner, st.authorized) {
            (Some(o), true) => Ok(o),
            _ => Err(err(401, "authorize first (client.authorizeWithProxyShort)")),
        }
    };
    match request {
        ClientRequest::ConnectToProxy { params, .. } => {
            let owner: Address = String::from_utf8_lossy(&params.client_owner_address)
                .parse()
                .map_err(|e| err(400, format!("client_owner_address: {e}")))?;
            let client_sc = proxy.client_contract(owner).map_err(|e| err(500, e.to_string()))?;
            let secret_hash = onchain(&proxy, owner, true).await?.map(|d| d.secret_hash).unwrap_or([0; 32]);
            state.lock().expect("conn").owner = Some(owner);
            let total = proxy.client_total(&owner);
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| err(500, format!("no randomness for the nonce: {e}")))?;
            Ok(cocoon_wire::encode(&ClientConnectedToProxy {
                params: proxy.proxy_params(),
                client_sc_address: client_sc.to_raw().into_bytes(),
                auth: ProxyConnectionAuth::Short { secret_hash, nonce: u64::from_le_bytes(nonce) },
                signed_payment: proxy.client_voucher(owner, total),
            }))
        }
        ClientRequest::AuthorizeWithProxyShort { data } => {
            let owner = state.lock().expect("conn").owner.ok_or_else(|| err(400, "connectToProxy first"))?;
            let failed = |why: String| Ok(cocoon_wire::encode(&AuthorizationWithProxy::Failed { error_code: 401, error: why.into_bytes() }));
            let Some(c) = onchain(&proxy, owner, true).await? else {
                return failed(format!("no client contract for {owner} at this proxy: top it up first"));
            };
            if c.state != ContractState::Open {
                return failed(format!("the client contract is {:?}", c.state));
            }
            let hash: [u8; 32] = Sha256::digest(&data).into();
            if c.secret_hash == [0; 32] || hash != c.secret_hash {
                return failed("secret does not match the client contract's secret hash".into());
            }
            state.lock().expect("conn").authorized = true;
            let total = proxy.client_total(&owner);
            Ok(cocoon_wire::encode(&AuthorizationWithProxy::Success {
                signed_payment: proxy.client_voucher(owner, total),
                tokens_committed_to_db: total,
                max_tokens: total,
            }))
        }
        ClientRequest::AuthorizeWithProxyLong => Ok(cocoon_wire::encode(&AuthorizationWithProxy::Failed {
            error_code: 501,
            error: b"long authorization (on-chain registration) is not supported; set a secret hash".to_vec(),
        })),
        ClientRequest::RunQuery { model_name, query, max_coefficient, max_tokens, timeout, request_id, .. } => {
            let owner = authorized_owner()?;
            let model = String::from_utf8(model_name).map_err(|_| err(400, "model name is not UTF-8"))?;
            let started = Instant::now();
            let result = run_query(
                &proxy,
                &peer,
                owner,
                &model,
                query,
                max_coefficient.max(0) as u32,
                max_tokens,
                timeout.as_timeout(proxy.cfg.request_timeout),
                request_id,
            )
            .await;
            if let Err(RpcError::Remote { code, .. }) = &result {
                // Refused before a worker ran it (run_query counts the others itself).
                proxy.metrics.request(false, started.elapsed().as_secs_f64());
                proxy.metrics.error(error_kind(*code));
            }
            tracing::debug!("request {} took {:?}", hex::encode(&request_id[..4]), started.elapsed());
            result
        }
        ClientRequest::RunQueryEx { .. } => Err(err(501, "client.runQueryEx is not supported; use client.runQuery")),
        ClientRequest::RequestRefund => {
            let owner = authorized_owner()?;
            let active = proxy.book.lock().expect("book").active.get(&owner).copied().unwrap_or(0);
            if active > 0 {
                return Ok(cocoon_wire::encode(&Refund::Rejected { active_queries: active as u64 }));
            }
            // Every answered request must be in the final charge: make them durable first.
            let seq = proxy.ledger.lock().expect("ledger").seq();
            proxy.durable(seq).await.map_err(|e| err(500, format!("ledger: {e}")))?;
            let total = proxy.client_total(&owner);
            let target = proxy.client_contract(owner).map_err(|e| err(500, e.to_string()))?;
            proxy
                .ledger
                .lock()
                .expect("ledger")
                .append(Entry::Refund { client: owner, tokens: total })
                .map_err(|e| err(500, e.to_string()))?;
            let voucher = proxy.signed_payment(op::CLIENT_GRANT_REFUND_SIGNED, total, target);
            let data = match voucher {
                cocoon_wire::common::SignedPayment::Signed { data } => data,
                cocoon_wire::common::SignedPayment::Empty => return Err(err(500, "could not sign the refund")),
            };
            Ok(cocoon_wire::encode(&Refund::Granted { data }))
        }
        ClientRequest::UpdatePaymentStatus => {
            let owner = authorized_owner()?;
            // Everything answered so far: make it durable, then promise it.
            let seq = proxy.ledger.lock().expect("ledger").seq();
            proxy.durable(seq).await.map_err(|e| err(500, format!("ledger: {e}")))?;
            let total = proxy.client_total(&owner);
            Ok(cocoon_wire::encode(&ClientPaymentStatus {
                signed_payment: proxy.client_voucher(owner, total),
                db_tokens: total,
                max_tokens: total,
            }))
        }
        ClientRequest::GetWorkerTypes => {
            let mut by_model: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for w in proxy.workers() {
                by_model.entry(w.model).or_default().push(w.coefficient as i32);
            }
            let types = by_model
                .into_iter()
                .map(|(name, mut c)| {
                    c.sort_unstable();
                    WorkerType {
                        name: name.into_bytes(),
                        active_workers: c.len() as i32,
                        coefficient_min: c[0],
                        coefficient_bucket50: c[c.len() / 2],
                        coefficient_max: c[c.len() - 1],
                    }
                })
                .collect();
            Ok(cocoon_wire::encode(&WorkerTypes { types }))
        }
        ClientRequest::GetWorkerTypesV2 => {
            let mut by_model: BTreeMap<String, Vec<WorkerInstanceV2>> = BTreeMap::new();
            for w in proxy.workers() {
                by_model.entry(w.model).or_default().push(WorkerInstanceV2 {
                    flags: (),
                    coefficient: w.coefficient as i32,
                    active_requests: w.active as i32,
                    max_active_requests: w.max_active as i32,
                });
            }
            let types = by_model.into_iter().map(|(name, workers)| WorkerTypeV2 { name: name.into_bytes(), workers }).collect();
            Ok(cocoon_wire::encode(&WorkerTypesV2 { types }))
        }
    }
}

/// The most a request can cost, in adjusted tokens: (max_tokens + body bytes) at the client's
/// coefficient limit and the dearest multiplier.
pub fn reservation(
    max_tokens: u64,
    body_bytes: u64,
    max_coefficient: u32,
    params: &cocoon_chain::contracts::Params,
) -> u64 {
    let mult = params
        .prompt_mult
        .max(params.cached_mult)
        .max(params.completion_mult)
        .max(params.reasoning_mult);
    adjust(max_tokens.saturating_add(body_bytes), max_coefficient, mult)
}

/// Tokens a client may still use: up to its stake beyond what is committed on chain, never
/// beyond its balance, minus what the ledger and running requests already use.
pub fn credit(onchain: &ClientData, ledger_total: u64, reserved: u64) -> u64 {
    let price = onchain.init.price_per_token.max(1);
    let allowed =
        (onchain.tokens_used as u128).saturating_add(onchain.balance.min(onchain.stake) / price);
    let allowed = allowed.min(u64::MAX as u128) as u64;
    allowed
        .saturating_sub(ledger_total.max(onchain.tokens_used))
        .saturating_sub(reserved)
}

struct Reservation<'a> {
    proxy: &'a Proxy,
    owner: Address,
    tokens: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.proxy.metrics.active.dec();
        let mut book = self.proxy.book.lock().expect("book");
        if let Some(r) = book.reserved.get_mut(&self.owner) {
            *r = r.saturating_sub(self.tokens);
        }
        if let Some(a) = book.active.get_mut(&self.owner) {
            *a = a.saturating_sub(1);
        }
    }
}

struct StreamGuard<'a> {
    proxy: &'a Proxy,
    request_id: [u8; 32],
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.proxy
            .streams
            .lock()
            .expect("streams")
            .remove(&self.request_id);
        self.proxy
            .cancels
            .lock()
            .expect("cancels")
            .remove(&self.request_id);
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

#[allow(clippy::too_many_arguments)]
async fn run_query(
    proxy: &Arc<Proxy>,
    client: &Peer,
    owner: Address,
    model: &str,
    query: Vec<u8>,
    max_coefficient: u32,
    max_tokens: i32,
    timeout: Duration,
    request_id: [u8; 32],
) -> Result<Vec<u8>, RpcError> {
    if proxy
        .ledger
        .lock()
        .expect("ledger")
        .durable()
        .refunded
        .contains_key(&owner)
    {
        return Err(err(
            409,
            "this client was granted its final refund; open a new client contract",
        ));
    }
    let mut http: HttpRequest = cocoon_wire::decode(&query)
        .map_err(|e| err(400, format!("query is not an http.request: {e}")))?;
    let mut body: serde_json::Value = serde_json::from_slice(&http.payload)
        .map_err(|e| err(400, format!("body is not JSON: {e}")))?;
    let (max_tokens, rewritten) =
        completion_limit(&mut body, max_tokens).map_err(|e| err(400, e))?;
    if rewritten {
        http.payload = body.to_string().into_bytes();
    }
    let query = cocoon_wire::encode(&http);
    let reserve = reservation(
        max_tokens,
        http.payload.len() as u64,
        max_coefficient,
        proxy.params(),
    );

    // Credit: re-read the contract once if the cached snapshot says no. The check and the
    // reservation happen under one lock, so two requests cannot both spend the same credit.
    let mut fresh = false;
    let _reservation = loop {
        let Some(c) = onchain(proxy, owner, fresh).await? else {
            return Err(err(402, "no client contract on chain"));
        };
        let available = {
            let mut book = proxy.book.lock().expect("book");
            let reserved = book.reserved.get(&owner).copied().unwrap_or(0);
            let used = proxy
                .ledger
                .lock()
                .expect("ledger")
                .totals()
                .clients
                .get(&owner)
                .copied()
                .unwrap_or(0);
            let available = credit(&c, used, reserved);
            if available >= reserve {
                let r = book.reserved.entry(owner).or_default();
                *r = r.saturating_add(reserve);
                *book.active.entry(owner).or_default() += 1;
                proxy.metrics.active.inc();
            }
            available
        };
        if available >= reserve {
            break Reservation {
                proxy,
                owner,
                tokens: reserve,
            };
        }
        if fresh {
            return Err(err(
                402,
                format!(
                    "insufficient credit: {available} tokens available, this request may cost up to {reserve}; \
                     top up the client contract, raise its stake, or commit the newest charge"
                ),
            ));
        }
        fresh = true;
    };

    let slot = proxy.pool.lock().expect("pool").choose(model, max_coefficient).map_err(|e| match e {
        NoWorker::UnknownModel => err(404, format!("no worker serves model {model}")),
        NoWorker::AllBusy => err(503, format!("every worker for {model} is busy; retry")),
        NoWorker::TooExpensive(c) => {
            err(402, format!("max_coefficient {max_coefficient} is below the cheapest worker's coefficient {c}"))
        }
    })?;
    let worker_peer = proxy
        .worker_peers
        .lock()
        .expect("peers")
        .get(&slot.id)
        .cloned();
    let Some(worker_peer) = worker_peer else {
        proxy
            .pool
            .lock()
            .expect("pool")
            .finish(slot.id, Finished::Failed);
        return Err(err(503, "the chosen worker just disconnected; retry"));
    };
    let (tx, mut parts) = mpsc::unbounded_channel();
    proxy
        .streams
        .lock()
        .expect("streams")
        .insert(request_id, tx);
    let _stream = StreamGuard { proxy, request_id };
    let (cancel_tx, mut cancel_rx) = tokio::sync::oneshot::channel();
    proxy
        .cancels
        .lock()
        .expect("cancels")
        .insert(request_id, cancel_tx);

    let run = ProxyRequest::RunQuery {
        query,
        // Vouchers travel in their own batched packets after answers (no signature per
        // request), so the job carries none.
        signed_payment: cocoon_wire::common::SignedPayment::Empty,
        coefficient: slot.coefficient as i64,
        timeout: cocoon_wire::common::Double(timeout.as_secs_f64()),
        request_id,
    };
    let started = Instant::now();
    let answer = worker_peer.request::<ProxyQueryAnswer>(&run, timeout);
    tokio::pin!(answer);
    let mut delivered: u64 = 0;
    // Ok: the worker's answer (or its failure); Err: we stopped it, with the code to report.
    let outcome: Result<Result<ProxyQueryAnswer, RpcError>, (i32, &'static str)> = loop {
        tokio::select! {
            biased;
            Some(part) = parts.recv() => {
                // Merge parts already queued behind this one: fewer, larger frames to the client.
                let mut batch = vec![part];
                while let Ok(next) = parts.try_recv() {
                    merge_into(&mut batch, next);
                }
                if batch.into_iter().any(|p| forward_part(client, p, &mut delivered).is_err()) {
                    break Err((499, "client went away"));
                }
                if delivered > max_tokens {
                    break Err((413, "the answer outgrew its reservation"));
                }
            }
            result = &mut answer => break Ok(result),
            _ = client.closed() => break Err((499, "client went away")),
            _ = &mut cancel_rx => break Err((499, "client cancelled")),
        }
    };
    // Parts that arrived before the final answer are still queued: deliver them first.
    if let Ok(Ok(_)) = &outcome {
        while let Ok(part) = parts.try_recv() {
            let _ = forward_part(client, part, &mut delivered);
        }
    }
    let finished = match outcome {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(err(502, format!("worker failed: {e}"))),
        Err((code, why)) => {
            let _ = worker_peer.send(cocoon_wire::encode(&CancelQuery { request_id }));
            tracing::info!("request {} stopped: {why}", hex::encode(&request_id[..4]));
            Err(err(code, why))
        }
    };
    let latency = started.elapsed().as_secs_f64() * 1000.0;

    // Price what was served: the engine's usage when the worker finished, else only the parts
    // delivered (each part holds at least one completion token), never above the reservation.
    let (usage, answer_bytes, error) = match finished {
        Ok(ProxyQueryAnswer::Answer {
            answer,
            tokens_used,
            ..
        }) => (usage_of(&tokens_used), Some(answer), None),
        Ok(ProxyQueryAnswer::Error {
            error_code,
            error,
            tokens_used,
            ..
        }) => (
            usage_of(&tokens_used),
            None,
            Some(err(
                error_code,
                String::from_utf8_lossy(&error).into_owned(),
            )),
        ),
        Err(e) => (
            TokenUsage {
                completion: delivered,
                ..Default::default()
            },
            None,
            Some(e),
        ),
    };
    let tokens = adjusted_tokens(&usage, slot.coefficient, proxy.params()).min(reserve);
    proxy.pool.lock().expect("pool").finish(
        slot.id,
        match &error {
            None => Finished::Served(latency),
            Some(RpcError::Remote { code: 499, .. }) => Finished::Abandoned,
            Some(_) => Finished::Failed,
        },
    );

    proxy
        .reputation
        .lock()
        .expect("reputation")
        .entry(slot.owner)
        .or_default()
        .record(error.is_none(), latency);
    let m = &proxy.metrics;
    m.request(error.is_none(), latency / 1000.0);
    if let Some(RpcError::Remote { code, .. }) = &error {
        m.error(error_kind(*code));
    }
    m.add_tokens("prompt", usage.prompt.saturating_sub(usage.cached));
    m.add_tokens("cached", usage.cached);
    m.add_tokens(
        "completion",
        usage.completion.saturating_sub(usage.reasoning),
    );
    m.add_tokens("reasoning", usage.reasoning);
    m.add_tokens("billed", tokens);
    // Record it now (counted in credit checks at once); it becomes durable with the next
    // group commit (one fsync for every request finishing meanwhile), and only then do the
    // vouchers that promise it leave. The answer itself need not wait for the disk: a charge
    // lost in a crash is the proxy's loss, never the client's or the worker's.
    if tokens > 0 {
        let seq = proxy
            .ledger
            .lock()
            .expect("ledger")
            .append_unsynced(Entry::Charge {
                request: hex::encode(request_id),
                client: owner,
                worker: slot.owner,
                tokens,
            })
            .map_err(|e| err(500, format!("ledger: {e}")))?;
        let (p, c, w) = (proxy.clone(), client.clone(), worker_peer.clone());
        let worker_owner = slot.owner;
        tokio::spawn(async move {
            match p.durable(seq).await {
                Ok(()) => p.queue_vouchers(owner, c, worker_owner, w, request_id),
                Err(e) => tracing::error!("ledger fsync failed, vouchers withheld: {e}"),
            }
        });
    }
    let tokens_used = TokensUsed {
        prompt_tokens_used: usage.prompt,
        cached_tokens_used: usage.cached,
        completion_tokens_used: usage.completion,
        reasoning_tokens_used: usage.reasoning,
        total_tokens_used: tokens,
    };
    Ok(cocoon_wire::encode(&match (answer_bytes, error) {
        (Some(answer), None) => ClientQueryAnswer::Answer {
            answer,
            is_completed: true,
            request_id,
            request_tokens_used: tokens_used,
        },
        (_, Some(RpcError::Remote { code, message })) => ClientQueryAnswer::Error {
            error_code: code,
            error: message.into_bytes(),
            request_id,
            request_tokens_used: tokens_used,
        },
        (_, e) => ClientQueryAnswer::Error {
            error_code: 502,
            error: e.map(|e| e.to_string()).unwrap_or_default().into_bytes(),
            request_id,
            request_tokens_used: tokens_used,
        },
    }))
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

fn usage_of(t: &TokensUsed) -> TokenUsage {
    TokenUsage {
        prompt: t.prompt_tokens_used,
        cached: t.cached_tokens_used,
        completion: t.completion_tokens_used,
        reasoning: t.reasoning_tokens_used,
    }
}

/// Appends `next` to `batch`, merging two consecutive text parts into one (bytes
/// concatenated, the later token count kept).
fn merge_into(batch: &mut Vec<ProxyQueryAnswerPart>, next: ProxyQueryAnswerPart) {
    if let (
        Some(ProxyQueryAnswerPart::Part {
            answer,
            is_completed,
            tokens_used,
            ..
        }),
        ProxyQueryAnswerPart::Part {
            answer: more,
            is_completed: more_completed,
            tokens_used: more_tokens,
            ..
        },
    ) = (batch.last_mut(), &next)
    {
        if answer.len() + more.len() <= 256 * 1024 {
            answer.extend_from_slice(more);
            *is_completed = *more_completed;
            *tokens_used = *more_tokens;
            return;
        }
    }
    batch.push(next);
}

/// Sends a part on to the client; `delivered` follows the worker's running completion count
/// (at least one token per part), the most a cut answer is billed for.
fn forward_part(
    client: &Peer,
    part: ProxyQueryAnswerPart,
    delivered: &mut u64,
) -> Result<(), RpcError> {
    let msg = match part {
        ProxyQueryAnswerPart::Part {
            answer,
            is_completed,
            request_id,
            tokens_used,
        } => {
            *delivered = (*delivered + 1).max(tokens_used.completion_tokens_used);
            ClientQueryAnswerPart::Part {
                answer,
                is_completed,
                request_id,
                request_tokens_used: tokens_used,
            }
        }
        ProxyQueryAnswerPart::Error {
            error_code,
            error,
            request_id,
            tokens_used,
        } => ClientQueryAnswerPart::Error {
            error_code,
            error,
            request_id,
            request_tokens_used: tokens_used,
        },
    };
    client.send(cocoon_wire::encode(&msg))
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

    use super::*;
    use cocoon_chain::contracts::{ClientInitView, Params};

    fn client(balance: u128, stake: u128, used: u64) -> ClientData {
        ClientData {
            state: ContractState::Open,
            balance,
            stake,
            tokens_used: used,
            unlock_ts: 0,
            secret_hash: [0; 32],
            init: ClientInitView {
                owner: Address::new([1; 32]),
                proxy: Address::new([2; 32]),
                price_per_token: 20,
                client_delay_before_close: 0,
                min_client_stake: 0,
            },
        }
    }

    #[test]
    fn credit_is_stake_beyond_the_onchain_charges_at_most_the_balance() {
        // Stake 1000 nanotons at 20/token = 50 tokens beyond the 100 committed on chain.
        assert_eq!(credit(&client(10_000, 1_000, 100), 100, 0), 50);
        // Uncommitted ledger usage and running reservations use it up.
        assert_eq!(credit(&client(10_000, 1_000, 100), 130, 15), 5);
        assert_eq!(credit(&client(10_000, 1_000, 100), 150, 0), 0);
        assert_eq!(
            credit(&client(10_000, 1_000, 100), 160, 0),
            0,
            "never negative"
        );
        // A balance below the stake caps it (one token short of the stake).
        assert_eq!(credit(&client(980, 1_000, 0), 0, 0), 49);
        // Zero everything.
        assert_eq!(credit(&client(0, 0, 0), 0, 0), 0);
    }

    #[test]
    fn reservation_covers_the_body_and_the_dearest_multiplier() {
        let mut p = Params::local_default();
        assert_eq!(reservation(100, 50, 1000, &p), 150);
        assert_eq!(reservation(100, 50, 2000, &p), 300);
        p.reasoning_mult = 30_000;
        assert_eq!(reservation(100, 50, 1000, &p), 450);
        assert_eq!(reservation(u64::MAX, 1, 1000, &p), u64::MAX, "saturates");
    }
}
