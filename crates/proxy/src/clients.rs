//! The proxy's client listener: authorization against the client contract on chain, and the
//! query path — reserve, choose a worker, relay the stream, price, record, pay.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_chain::contracts::{ClientData, ContractState};
use cocoon_chain::messages::op;
use cocoon_chain::price::{adjust, adjusted_parts, TokenUsage};
use cocoon_chain::Address;
use cocoon_net::rpc::{AnswerFuture, Peer, RpcError};
use cocoon_wire::answer::{self, AnswerMessage, Timings};
use cocoon_wire::client::{
    AuthorizationWithProxy, ClientConnectedToProxy, ClientPaymentStatus, ClientRequest,
    ProxyConnectionAuth, Refund, WorkerInstanceV2, WorkerType, WorkerTypeV2, WorkerTypes,
    WorkerTypesV2,
};
use cocoon_wire::common::{HttpRequest, HttpResponse, TokensUsed};
use cocoon_wire::proxy::{CancelQuery, ProxyRequest};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::ledger::Entry;
use crate::pool::{Finished, NoWorker, Place, WorkerSlot};
use crate::Proxy;

/// Completion tokens assumed when a request names no limit.
pub const DEFAULT_MAX_TOKENS: u64 = 2048;
/// How long an on-chain snapshot of a client contract is trusted.
const ONCHAIN_TTL: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Conn {
    owner: Option<Address>,
    authorized: bool,
    proto: i32,
    /// Queries of this connection running now (capped: one peer cannot make the proxy spawn
    /// work without bound).
    in_flight: InFlight,
}

/// Most queries one client connection may have running or waiting for a worker at once; one
/// more is refused with 429 naming the cap (the connection, not the proxy, pays for a flood).
/// A client multiplexes all its app's requests over one connection, so this is above a
/// model's default queue ([`crate::DEFAULT_QUEUE_PER_MODEL`]) plus the slots of its workers:
/// an honest client that keeps the queue full is refused by the queue (503), not by this.
pub const MAX_QUERIES_PER_CONNECTION: usize = 2048;

/// A counter of running queries with a cap; a slot is held by its [`InFlightSlot`].
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

/// One running query's place under the cap, given back when dropped.
struct InFlightSlot(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    /// A slot, or `None` when `cap` queries already run.
    fn try_acquire(&self, cap: usize) -> Option<InFlightSlot> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightSlot(self.0.clone()))
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
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
    let on_query = Arc::new(move |_: Peer, data: Vec<u8>| -> AnswerFuture {
        let (proxy, state) = (p.clone(), s.clone());
        Box::pin(async move { handle_query(proxy, state, data).await })
    });
    // As in COCOON, queries to run arrive as one-way packets and are answered in packets; a
    // client of ours may also cancel one of its requests (its own caller went away).
    let (p, s) = (proxy.clone(), state.clone());
    let on_packet = Arc::new(move |peer: &Peer, data: Vec<u8>| {
        if let Ok(request) = cocoon_wire::decode::<ClientRequest>(&data) {
            on_run_packet(&p, &s, peer, request);
        } else if let Ok(CancelQuery { request_id }) = cocoon_wire::decode::<CancelQuery>(&data) {
            if let Some(stop) = p.cancels.lock().remove(&request_id) {
                let _ = stop.send(());
            }
        } else {
            tracing::debug!("a client sent an unknown packet");
        }
    });
    let peer = Peer::spawn(conn, on_query, on_packet);
    let _counted = proxy.metrics.peer("client");
    peer.closed().await;
}

/// A `client.runQuery(Ex)` packet: run it for the authorized owner of this connection, or
/// answer it with an error naming why not.
fn on_run_packet(proxy: &Arc<Proxy>, state: &Mutex<Conn>, peer: &Peer, request: ClientRequest) {
    let (model_name, query, max_coefficient, max_tokens, timeout, request_id) = match request {
        ClientRequest::RunQueryEx {
            model_name,
            query,
            max_coefficient,
            max_tokens,
            timeout,
            request_id,
            ..
        }
        | ClientRequest::RunQuery {
            model_name,
            query,
            max_coefficient,
            max_tokens,
            timeout,
            request_id,
            ..
        } => (
            model_name,
            query,
            max_coefficient,
            max_tokens,
            timeout,
            request_id,
        ),
        _ => {
            tracing::debug!("a client sent a query function as a packet");
            return;
        }
    };
    let refuse = |code: i32, why: &str| {
        let m = AnswerMessage::Error {
            code,
            message: why.as_bytes().to_vec(),
            end: (
                TokensUsed::default(),
                Timings {
                    start: unix_now(),
                    end: unix_now(),
                },
            ),
        };
        let _ = peer.send(answer::client_message(request_id, m, None));
    };
    let (owner, in_flight) = {
        let st = state.lock();
        match (st.owner, st.authorized) {
            (Some(o), true) => (o, st.in_flight.clone()),
            _ => return refuse(401, "authorize first (client.authorizeWithProxyShort)"),
        }
    };
    let Some(slot) = in_flight.try_acquire(MAX_QUERIES_PER_CONNECTION) else {
        proxy.metrics.error("too_many_in_flight");
        return refuse(
            429,
            &format!("{MAX_QUERIES_PER_CONNECTION} queries already run on this connection; retry when one ends"),
        );
    };
    let Ok(model) = String::from_utf8(model_name) else {
        return refuse(400, "model name is not UTF-8");
    };
    let job = QueryJob {
        model,
        query,
        max_coefficient: max_coefficient.max(0) as u32,
        max_tokens,
        timeout: timeout.as_timeout(proxy.cfg.request_timeout),
        request_id,
    };
    let (proxy, peer) = (proxy.clone(), peer.clone());
    tokio::spawn(async move {
        serve_query(proxy, peer, owner, job).await;
        drop(slot);
    });
}

fn err(code: i32, message: impl Into<String>) -> RpcError {
    RpcError::remote(code, message)
}

/// A client contract as a reference proxy imagines it on a fake-TON root: open, a million TON
/// paid and staked, nothing charged on chain, and the secret hash SHA-256 of nothing (so the
/// reference's clients authorize with an empty secret, or the long way).
fn fake_ton_client(proxy: &Proxy, owner: Address) -> ClientData {
    let million = 1_000_000 * cocoon_chain::TON;
    ClientData {
        state: ContractState::Open,
        balance: million,
        stake: million,
        tokens_used: 0,
        unlock_ts: 0,
        secret_hash: Sha256::digest([]).into(),
        init: cocoon_chain::contracts::ClientInitView {
            owner,
            proxy: proxy.address(),
            price_per_token: proxy.params().price_per_token,
            client_delay_before_close: proxy.params().client_delay_before_close,
            min_client_stake: proxy.params().min_client_stake,
        },
    }
}

async fn onchain(
    proxy: &Proxy,
    owner: Address,
    fresh: bool,
) -> Result<Option<ClientData>, RpcError> {
    if !fresh {
        if let Some((d, at)) = proxy.book.lock().onchain.get(&owner) {
            if at.elapsed() < ONCHAIN_TTL {
                return Ok(Some(d.clone()));
            }
        }
    }
    let Some(chain) = &proxy.chain else {
        return Ok(Some(fake_ton_client(proxy, owner)));
    };
    let address = proxy
        .client_contract(owner)
        .map_err(|e| err(500, e.to_string()))?;
    let acc = chain
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
        .onchain
        .insert(owner, (data.clone(), Instant::now()));
    Ok(Some(data))
}

async fn handle_query(
    proxy: Arc<Proxy>,
    state: Arc<Mutex<Conn>>,
    data: Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    let request: ClientRequest =
        cocoon_wire::decode(&data).map_err(|e| err(400, format!("not a client request: {e}")))?;
    let authorized_owner = || {
        let st = state.lock();
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
            let proto = Proxy::settle_proto(params.min_proto_version, params.max_proto_version)
                .map_err(|e| err(400, e))?;
            let client_sc = proxy.client_contract(owner).map_err(|e| err(500, e.to_string()))?;
            let secret_hash = onchain(&proxy, owner, true).await?.map(|d| d.secret_hash).unwrap_or([0; 32]);
            {
                let mut st = state.lock();
                st.owner = Some(owner);
                st.proto = proto;
            }
            let total = proxy.client_total(&owner);
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| err(500, format!("no randomness for the nonce: {e}")))?;
            Ok(cocoon_wire::encode(&ClientConnectedToProxy {
                params: proxy.proxy_params(proto),
                client_sc_address: proxy.wire_address(&client_sc),
                auth: ProxyConnectionAuth::Short { secret_hash, nonce: u64::from_le_bytes(nonce) },
                signed_payment: proxy.client_voucher(owner, total),
            }))
        }
        ClientRequest::AuthorizeWithProxyShort { data } => {
            let owner = state.lock().owner.ok_or_else(|| err(400, "connectToProxy first"))?;
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
            state.lock().authorized = true;
            let total = proxy.client_total(&owner);
            Ok(cocoon_wire::encode(&AuthorizationWithProxy::Success {
                signed_payment: proxy.client_voucher(owner, total),
                tokens_committed_to_db: total,
                max_tokens: total,
            }))
        }
        // On a fake-TON root there is nothing to register on chain: granted at once, as the
        // reference grants it there.
        ClientRequest::AuthorizeWithProxyLong if proxy.on_fake_ton() => {
            let owner = state.lock().owner.ok_or_else(|| err(400, "connectToProxy first"))?;
            state.lock().authorized = true;
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
        ClientRequest::RunQuery { .. } | ClientRequest::RunQueryEx { .. } => Err(err(
            400,
            "client.runQuery(Ex) is a one-way packet (tcp.packet), answered in packets, not a query",
        )),
        ClientRequest::RequestRefund => {
            let owner = authorized_owner()?;
            let active = proxy.book.lock().active.get(&owner).copied().unwrap_or(0);
            if active > 0 {
                return Ok(cocoon_wire::encode(&Refund::Rejected { active_queries: active as u64 }));
            }
            // Every answered request must be in the final charge: make them durable first.
            let seq = proxy.ledger.lock().seq();
            proxy.durable(seq).await.map_err(|e| err(500, format!("ledger: {e}")))?;
            let total = proxy.client_total(&owner);
            let target = proxy.client_contract(owner).map_err(|e| err(500, e.to_string()))?;
            proxy
                .ledger
                .lock()
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
            let seq = proxy.ledger.lock().seq();
            proxy.durable(seq).await.map_err(|e| err(500, format!("ledger: {e}")))?;
            let total = proxy.client_total(&owner);
            Ok(cocoon_wire::encode(&ClientPaymentStatus {
                signed_payment: proxy.client_voucher(owner, total),
                db_tokens: total,
                max_tokens: total,
            }))
        }
        ClientRequest::GetWorkerTypes => {
            let reference = speaks_reference(&state);
            let mut by_model: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for w in catalogue_workers(&proxy, reference) {
                by_model.entry(catalogue_name(&w.model, reference)).or_default().push(w.coefficient as i32);
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
            let reference = speaks_reference(&state);
            let mut by_model: BTreeMap<String, Vec<WorkerInstanceV2>> = BTreeMap::new();
            for w in catalogue_workers(&proxy, reference) {
                by_model.entry(catalogue_name(&w.model, reference)).or_default().push(WorkerInstanceV2 {
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

/// Whether this connection's client settled on one of the reference's protocol versions (1 or
/// 2): it gets the catalogue as a reference proxy writes it.
fn speaks_reference(state: &Mutex<Conn>) -> bool {
    (1..cocoon_wire::PROTO_WITH_CANCEL).contains(&state.lock().proto)
}

/// The workers a catalogue lists: for a reference client as a reference proxy lists them (the
/// enabled ones, cheapest first); for ours every one, with its state in its figures.
fn catalogue_workers(proxy: &Proxy, reference: bool) -> Vec<crate::pool::WorkerSlot> {
    let mut workers = proxy.workers();
    if reference {
        workers.retain(|w| w.enabled);
        workers.sort_by_key(|w| w.coefficient);
    }
    workers
}

/// A model's name in the catalogue: the base name (before `@`) for a reference client, as a
/// reference proxy names it; the full identity `name@sha256` for ours (`cocoon quote` matches
/// models by their hash).
fn catalogue_name(model: &str, reference: bool) -> String {
    match reference {
        // The reference cuts at the first `@`.
        true => model
            .split_once('@')
            .map_or(model, |(name, _)| name)
            .to_string(),
        false => model.to_string(),
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
        let mut book = self.proxy.book.lock();
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

/// Reserves `reserve` tokens of `owner`'s credit (re-reading its contract once if the cached
/// snapshot says no). The check and the reservation happen under one lock, so two requests
/// cannot both spend the same credit.
async fn reserve_credit(
    proxy: &Proxy,
    owner: Address,
    reserve: u64,
) -> Result<Reservation<'_>, RpcError> {
    let mut fresh = false;
    loop {
        let Some(c) = onchain(proxy, owner, fresh).await? else {
            return Err(err(402, "no client contract on chain"));
        };
        let available = {
            let mut book = proxy.book.lock();
            let reserved = book.reserved.get(&owner).copied().unwrap_or(0);
            let used = proxy
                .ledger
                .lock()
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
            return Ok(Reservation {
                proxy,
                owner,
                tokens: reserve,
            });
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
    }
}

/// A worker for `model`: one free now, else a turn in the model's queue (first come, first
/// served) until `deadline`. Refused with 503 only when the queue is full or the deadline
/// passes; a model nobody serves or a price the client does not accept is refused at once.
async fn wait_for_worker(
    proxy: &Proxy,
    client: &Peer,
    model: &str,
    max_coefficient: u32,
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
        NoWorker::TooExpensive(c) => {
            err(402, format!("max_coefficient {max_coefficient} is below the cheapest worker's coefficient {c}"))
        }
    }
    };
    let place = proxy
        .pool
        .lock()
        .choose_or_wait(model, max_coefficient, proxy.cfg.queue_per_model);
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
    let QueryJob {
        model,
        query,
        max_coefficient,
        max_tokens,
        timeout,
        request_id,
    } = job;
    // The request's whole time: waiting for a worker, then the worker's answer.
    let deadline_at = tokio::time::Instant::now() + timeout;
    // A ledger that failed to write takes nothing more: no answer could be billed.
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
    // As the reference reserves: the completion limit plus the query's bytes.
    let reserve = reservation(
        max_tokens,
        query.len() as u64,
        max_coefficient,
        proxy.params(),
    );
    let _reservation = reserve_credit(proxy, owner, reserve).await?;

    let slot = wait_for_worker(proxy, client, &model, max_coefficient, deadline_at).await?;
    let worker_peer = proxy.worker_peers.lock().get(&slot.id).cloned();
    let Some(worker_peer) = worker_peer else {
        proxy.pool.lock().finish(slot.id, Finished::Failed);
        return Err(err(503, "the chosen worker just disconnected; retry"));
    };
    let (tx, mut messages) = mpsc::unbounded_channel();
    proxy.streams.lock().insert(request_id, tx);
    let _stream = StreamGuard { proxy, request_id };
    let (cancel_tx, mut cancel_rx) = tokio::sync::oneshot::channel();
    proxy.cancels.lock().insert(request_id, cancel_tx);

    let run = ProxyRequest::RunQueryEx {
        query,
        signed_payment: proxy.worker_voucher(slot.owner, proxy.worker_total(&slot.owner)),
        coefficient: slot.coefficient as i64,
        // As the reference: the worker gets 95 % of the time (left after the queue), so its
        // error arrives in ours.
        timeout: cocoon_wire::common::Double(
            deadline_at
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs_f64()
                * 0.95,
        ),
        request_id,
        flags: (),
        enable_debug: Some(false),
    };
    let started = Instant::now();
    if worker_peer.send(cocoon_wire::encode(&run)).is_err() {
        proxy.pool.lock().finish(slot.id, Finished::Failed);
        return Err(err(503, "the chosen worker just disconnected; retry"));
    }
    let deadline = tokio::time::sleep_until(deadline_at);
    tokio::pin!(deadline);
    // Body messages relayed (each holds at least one completion token): what a cut answer is
    // billed for, and the overrun check.
    let mut delivered: u64 = 0;
    let mut head_sent = false;
    // A message taken off the queue while merging parts, handled on the next turn.
    let mut pending: Option<AnswerMessage> = None;
    let ending = loop {
        let msg = match pending.take() {
            Some(m) => Some(m),
            None => tokio::select! {
                biased;
                m = messages.recv() => m,
                _ = worker_peer.closed() => None,
                _ = client.closed() => break Ending::Cut { code: 499, why: "client went away" },
                _ = &mut cancel_rx => break Ending::Cut { code: 499, why: "client cancelled" },
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
                    break Ending::Cut {
                        code: 499,
                        why: "client went away",
                    };
                }
            }
            AnswerMessage::Part { bytes, end: None } => {
                // Merge parts already queued behind this one: fewer, larger frames.
                let mut bytes = bytes;
                while bytes.len() < 256 * 1024 {
                    match messages.try_recv() {
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
                    break Ending::Cut {
                        code: 499,
                        why: "client went away",
                    };
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
    if let Ending::Cut { code, why } = &ending {
        if slot.understands_cancel {
            let _ = worker_peer.send(cocoon_wire::encode(&CancelQuery { request_id }));
        }
        tracing::info!(
            "request {} stopped ({code}): {why}",
            hex::encode(&request_id[..4])
        );
    }
    let latency = started.elapsed().as_secs_f64() * 1000.0;

    // Bill what was served: the worker's adjusted total when it finished (as the reference
    // bills it), else only the parts delivered; never above the reservation.
    let delivered_tokens = || {
        let u = TokenUsage {
            completion: delivered,
            ..Default::default()
        };
        let [_, _, completion, _] = adjusted_parts(&u, slot.coefficient, proxy.params());
        TokensUsed {
            completion_tokens_used: completion,
            total_tokens_used: completion,
            ..Default::default()
        }
    };
    let (mut tokens, worker_times) = match ending_of_worker(&ending) {
        Some((tokens, worker)) => (tokens, Some(worker)),
        None => (delivered_tokens(), None),
    };
    tokens.total_tokens_used = tokens.total_tokens_used.min(reserve);
    let billed = tokens.total_tokens_used;
    let error = match &ending {
        Ending::Done(_) => None,
        Ending::Failed { code, .. } | Ending::Cut { code, .. } => Some(*code),
    };
    proxy.pool.lock().finish(
        slot.id,
        match error {
            None => Finished::Served(latency),
            Some(499) => Finished::Abandoned,
            Some(_) => Finished::Failed,
        },
    );
    proxy
        .reputation
        .lock()
        .entry(slot.owner)
        .or_default()
        .record(error.is_none(), latency);
    let m = &proxy.metrics;
    m.request(error.is_none(), latency / 1000.0);
    if let Some(code) = error {
        m.error(error_kind(code));
    }
    m.add_tokens("prompt", tokens.prompt_tokens_used);
    m.add_tokens("cached", tokens.cached_tokens_used);
    m.add_tokens("completion", tokens.completion_tokens_used);
    m.add_tokens("reasoning", tokens.reasoning_tokens_used);
    m.add_tokens("billed", billed);
    // Record it now (counted in credit checks at once), and let the answer's last message
    // leave only once the record is on disk: one group commit (one fsync) covers every request
    // finishing meanwhile. So an app that got an answer complete is billed for it across any
    // crash, and the worker paid; a crash before the fsync loses the record and the app never
    // saw the answer's end. The vouchers that promise it follow.
    if billed > 0 {
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
            worker_peer.clone(),
            request_id,
        );
    }
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

fn unix_now() -> f64 {
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
    fn the_protocol_version_is_the_highest_both_speak_or_a_refusal_naming_both() {
        assert_eq!(
            Proxy::settle_proto(Some(1), Some(2)),
            Ok(2),
            "a reference peer"
        );
        assert_eq!(Proxy::settle_proto(Some(1), Some(3)), Ok(3), "ours");
        assert_eq!(Proxy::settle_proto(Some(1), Some(9)), Ok(3), "a newer peer");
        let old = Proxy::settle_proto(None, None).unwrap_err();
        assert!(
            old.contains("the peer speaks 0 to 0, this proxy 1 to 3"),
            "{old}"
        );
        assert!(Proxy::settle_proto(Some(5), Some(9)).is_err());
    }

    #[test]
    fn a_connection_runs_at_most_its_cap_of_queries_and_gets_slots_back() {
        let f = InFlight::default();
        let a = f.try_acquire(2).expect("first");
        let b = f.try_acquire(2).expect("second");
        assert!(f.try_acquire(2).is_none(), "over the cap");
        drop(a);
        let c = f.try_acquire(2).expect("a slot came back");
        assert!(f.try_acquire(2).is_none());
        drop((b, c));
        assert!(f.try_acquire(0).is_none(), "a zero cap admits nothing");
        assert_eq!(f.0.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn reference_clients_see_base_names_ours_the_full_identity() {
        assert_eq!(
            catalogue_name("Qwen/Qwen3-8B@abc:00", true),
            "Qwen/Qwen3-8B"
        );
        assert_eq!(
            catalogue_name("a@b@c", true),
            "a",
            "cut at the first @, as the reference"
        );
        assert_eq!(catalogue_name("smol@9f3e", false), "smol@9f3e");
        assert_eq!(catalogue_name("plain", true), "plain");
        let st = Mutex::new(Conn::default());
        for (proto, reference) in [(0, false), (1, true), (2, true), (3, false)] {
            st.lock().proto = proto;
            assert_eq!(speaks_reference(&st), reference, "proto {proto}");
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
