//! The proxy's client listener: each connection's handshake and authorization against the
//! client contract on chain, its queries (catalogue, payment status, refund), and the
//! `runQueryEx` packets it may run at once (each one's path is in [`crate::query`]).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

use cocoon_chain::contracts::{ClientData, ContractState};
use cocoon_chain::messages::op;
use cocoon_chain::Address;
use cocoon_net::rpc::{AnswerFuture, Peer, RpcError};
use cocoon_wire::answer::{self, AnswerMessage, Timings};
use cocoon_wire::client::{
    AuthorizationWithProxy, ClientConnectedToProxy, ClientPaymentStatus, ClientRequest,
    ProxyConnectionAuth, Refund, WorkerInstanceV2, WorkerType, WorkerTypeV2, WorkerTypes,
    WorkerTypesV2,
};
use cocoon_wire::common::TokensUsed;
use cocoon_wire::proxy::CancelQuery;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::credit::onchain;
use crate::ledger::Entry;
use crate::query::{serve_query, unix_now, QueryJob};
use crate::Proxy;

#[derive(Default)]
struct Conn {
    owner: Option<Address>,
    authorized: bool,
    proto: i32,
    /// The nonce offered at the handshake, until a long authorization has used it.
    nonce: Option<u64>,
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
    let peer = Peer::spawn_with(conn, on_query, on_packet, proxy.cfg.peer_limits);
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

/// How long the proxy watches a client contract for the registration of a long
/// authorization: a wallet transfer and the message it sends take a few blocks on a public
/// network; a reference client waits 300 s for the answer.
pub const LONG_AUTHORIZATION_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Most long authorizations a proxy watches the chain for at once; one more is refused (429).
/// Each reads its client contract's transactions until its registration shows, so this bounds
/// what strangers naming wallets they do not hold can make the proxy ask of the chain API.
pub const MAX_PENDING_LONG_AUTHORIZATIONS: usize = 64;

/// The first pause between two reads of a client contract's transactions; it doubles up to
/// [`LONG_AUTHORIZATION_MAX_POLL`].
const LONG_AUTHORIZATION_FIRST_POLL: std::time::Duration = std::time::Duration::from_millis(200);
const LONG_AUTHORIZATION_MAX_POLL: std::time::Duration = std::time::Duration::from_secs(3);

/// An authorization answer refusing the connection, with an HTTP-like code.
fn auth_failed(code: i32, why: String) -> Result<Vec<u8>, RpcError> {
    Ok(cocoon_wire::encode(&AuthorizationWithProxy::Failed {
        error_code: code,
        error: why.into_bytes(),
    }))
}

/// The client contract of `owner`, which either way of authorizing needs open: its data, or
/// the refusal to answer with.
async fn open_contract(
    proxy: &Proxy,
    owner: Address,
) -> Result<Result<ClientData, String>, RpcError> {
    Ok(match onchain(proxy, owner, true).await? {
        Some(c) if c.state == ContractState::Open => Ok(c),
        Some(c) => Err(format!("the client contract is {:?}", c.state)),
        None => Err(format!(
            "no client contract for {owner} at this proxy: top it up first"
        )),
    })
}

/// The connection is `owner`'s from now on (its nonce used up): the success answer, with the
/// newest charge voucher.
fn authorized(proxy: &Proxy, state: &Mutex<Conn>, owner: Address) -> Result<Vec<u8>, RpcError> {
    {
        let mut st = state.lock();
        st.nonce = None;
        st.authorized = true;
    }
    let total = proxy.client_total(&owner);
    Ok(cocoon_wire::encode(&AuthorizationWithProxy::Success {
        signed_payment: proxy.client_voucher(owner, total),
        tokens_committed_to_db: total,
        max_tokens: total,
    }))
}

/// Long authorization on chain (COCOON's): the client's owner sends `owner_client_register`
/// with the handshake's nonce to its client contract; once that transaction is seen, the
/// connection is the owner's. A nonce serves one authorization. On a fake-TON root there is
/// nothing to register on chain: granted at once, as the reference grants it there.
async fn authorize_long(proxy: &Arc<Proxy>, state: &Arc<Mutex<Conn>>) -> Result<Vec<u8>, RpcError> {
    let (owner, nonce) = {
        let st = state.lock();
        match (st.owner, st.nonce) {
            (Some(o), Some(n)) => (o, n),
            (None, _) => return Err(err(400, "connectToProxy first")),
            (Some(_), None) => {
                return Err(err(
                    400,
                    "this connection's nonce is used: reconnect for a new one",
                ))
            }
        }
    };
    if let Some(chain) = &proxy.chain {
        let Ok(_watching) = proxy.long_authorizations.try_acquire() else {
            return auth_failed(
                429,
                format!("{MAX_PENDING_LONG_AUTHORIZATIONS} long authorizations are waiting for the chain already; retry in a minute"),
            );
        };
        let client_sc = proxy
            .client_contract(owner)
            .map_err(|e| err(500, e.to_string()))?;
        let deadline = std::time::Instant::now() + LONG_AUTHORIZATION_WAIT;
        let mut pause = LONG_AUTHORIZATION_FIRST_POLL;
        loop {
            match cocoon_chain::client::client_registered(chain.as_ref(), &client_sc, &owner, nonce)
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("reading client contract {client_sc} for a registration: {e}")
                }
            }
            if std::time::Instant::now() > deadline {
                return auth_failed(
                    408,
                    format!(
                        "no owner_client_register with nonce {nonce} from {owner} reached client contract {client_sc} within {} s",
                        LONG_AUTHORIZATION_WAIT.as_secs()
                    ),
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONG_AUTHORIZATION_MAX_POLL);
        }
        if let Err(why) = open_contract(proxy, owner).await? {
            return auth_failed(401, why);
        }
    }
    authorized(proxy, state, owner)
}

/// A refusal with an HTTP-like code.
pub(crate) fn err(code: i32, message: impl Into<String>) -> RpcError {
    RpcError::remote(code, message)
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
            proxy.check_test_mode(params.is_test).map_err(|e| err(400, e))?;
            let proto = Proxy::settle_proto(params.min_proto_version, params.max_proto_version)
                .map_err(|e| err(400, e))?;
            let client_sc = proxy.client_contract(owner).map_err(|e| err(500, e.to_string()))?;
            let contract = onchain(&proxy, owner, true).await?;
            // A nonce only means something on chain; on a fake-TON root COCOON's proxy sends 0.
            let nonce = if proxy.on_fake_ton() {
                0
            } else {
                let mut nonce = [0u8; 8];
                getrandom::fill(&mut nonce).map_err(|e| err(500, format!("no randomness for the nonce: {e}")))?;
                u64::from_le_bytes(nonce)
            };
            let auth = match (proxy.on_fake_ton(), contract) {
                (true, c) => ProxyConnectionAuth::Short { secret_hash: c.map_or([0; 32], |c| c.secret_hash), nonce },
                // On chain, as the reference: the short way for a client whose open contract
                // holds a secret hash; any other client registers the nonce on chain.
                (false, Some(c)) if c.state == ContractState::Open && c.secret_hash != [0; 32] => {
                    ProxyConnectionAuth::Short { secret_hash: c.secret_hash, nonce }
                }
                (false, _) => ProxyConnectionAuth::Long { nonce },
            };
            {
                let mut st = state.lock();
                st.owner = Some(owner);
                st.proto = proto;
                st.nonce = Some(nonce);
            }
            let total = proxy.client_total(&owner);
            Ok(cocoon_wire::encode(&ClientConnectedToProxy {
                params: proxy.proxy_params(proto),
                client_sc_address: proxy.wire_address(&client_sc),
                auth,
                signed_payment: proxy.client_voucher(owner, total),
            }))
        }
        ClientRequest::AuthorizeWithProxyShort { data } => {
            let owner = state.lock().owner.ok_or_else(|| err(400, "connectToProxy first"))?;
            let c = match open_contract(&proxy, owner).await? {
                Ok(c) => c,
                Err(why) => return auth_failed(401, why),
            };
            let hash: [u8; 32] = Sha256::digest(&data).into();
            if c.secret_hash == [0; 32] || hash != c.secret_hash {
                return auth_failed(401, "secret does not match the client contract's secret hash".into());
            }
            authorized(&proxy, &state, owner)
        }
        ClientRequest::AuthorizeWithProxyLong => authorize_long(&proxy, &state).await,
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
                    // Our flag bits, for our clients only (a reference client gets COCOON's form).
                    supports_tools: (!reference && w.features.tools).then_some(()),
                    supports_structured_output: (!reference && w.features.structured_output)
                        .then_some(()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
