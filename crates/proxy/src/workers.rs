//! The proxy's worker listener: admission (attestation, image hash, model), the handshake
//! (`worker.connectToProxy` → `compareBalanceWithProxy` → `proxyHandshakeComplete`), runtime
//! controls (enable/disable, coefficient) and answer parts routed to the waiting client.

use parking_lot::Mutex;
use std::sync::Arc;

use cocoon_chain::Address;
use cocoon_net::rpc::{AnswerFuture, Peer, RpcError};
use cocoon_wire::worker::{
    CompareBalanceResult, ConnectedToProxy, EnabledDisabled, HandshakeCompleted, NewCoefficient,
    WorkerPaymentStatus, WorkerRequest,
};
use tokio::net::TcpListener;

use crate::pool::WorkerSlot;
use crate::Proxy;

#[derive(Default)]
struct Conn {
    owner: Option<Address>,
    model: String,
    coefficient: u32,
    max_active: u32,
    balance_checked: bool,
    registered: bool,
    proto: i32,
    /// What it announced beyond plain text (our flag bits; none from a reference worker).
    features: cocoon_engine::Features,
}

impl Conn {
    /// The worker's owner, once `connectToProxy` named it.
    fn owner(&self) -> Result<Address, RpcError> {
        self.owner.ok_or_else(|| bad("connectToProxy first"))
    }
}

pub(crate) async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    identity: Arc<cocoon_net::identity::Renewing>,
) {
    crate::accept_each(proxy, listener, identity, "worker", serve).await
}

fn bad(message: impl Into<String>) -> RpcError {
    RpcError::remote(400, message)
}

async fn serve(proxy: Arc<Proxy>, conn: cocoon_net::Connection) {
    let id = proxy.conn_id();
    let state = Arc::new(Mutex::new(Conn::default()));
    let (p, s) = (proxy.clone(), state.clone());
    let on_query = Arc::new(move |peer: Peer, data: Vec<u8>| -> AnswerFuture {
        let (proxy, state) = (p.clone(), s.clone());
        Box::pin(async move { handle_query(&proxy, &state, id, peer, &data) })
    });
    let (p, s) = (proxy.clone(), state.clone());
    let on_packet = Arc::new(move |_peer: &Peer, data: Vec<u8>| {
        if let Some((rid, message)) = cocoon_wire::answer::decode_proxy(&data) {
            if let Some(tx) = p.streams.lock().get(&rid) {
                let _ = tx.send(message);
            }
        } else if let Ok(EnabledDisabled { disabled }) =
            cocoon_wire::decode::<EnabledDisabled>(&data)
        {
            let mut pool = p.pool.lock();
            if let Some(w) = pool.get_mut(id) {
                w.enabled = disabled == 0;
                tracing::info!(
                    "worker {} is now {}",
                    w.owner,
                    if w.enabled { "enabled" } else { "disabled" }
                );
            }
            pool.dispatch();
        } else if let Ok(NewCoefficient { new_coefficient }) =
            cocoon_wire::decode::<NewCoefficient>(&data)
        {
            if new_coefficient > 0 {
                let mut pool = p.pool.lock();
                if let Some(w) = pool.get_mut(id) {
                    w.coefficient = new_coefficient as u32;
                }
                pool.dispatch();
                drop(pool);
                s.lock().coefficient = new_coefficient as u32;
            }
        } else {
            tracing::debug!("worker sent an unknown packet");
        }
    });
    let peer = Peer::spawn_with(conn, on_query, on_packet, proxy.cfg.peer_limits);
    let counted = proxy.metrics.peer("worker");
    peer.closed().await;
    drop(counted);
    proxy.pool.lock().remove(id);
    proxy.worker_peers.lock().remove(&id);
    tracing::info!("worker connection {id} closed");
}

fn handle_query(
    proxy: &Arc<Proxy>,
    state: &Mutex<Conn>,
    id: u64,
    peer: Peer,
    data: &[u8],
) -> Result<Vec<u8>, RpcError> {
    let request: WorkerRequest =
        cocoon_wire::decode(data).map_err(|e| bad(format!("not a worker request: {e}")))?;
    match request {
        WorkerRequest::ConnectToProxy { params } => {
            let owner: Address = String::from_utf8_lossy(&params.worker_owner_address)
                .parse()
                .map_err(|e| bad(format!("worker_owner_address: {e}")))?;
            proxy.check_test_mode(params.is_test).map_err(bad)?;
            let model = String::from_utf8(params.model).map_err(|_| bad("model is not UTF-8"))?;
            {
                let root = proxy.root.lock();
                if !root.models.is_empty() {
                    let hash = cocoon_engine::model::ModelIdentity::parse(&model)
                        .map(|id| id.sha256)
                        .ok_or_else(|| bad(format!("model {model:?} is not name@sha256")))?;
                    if !root.models.contains_key(&hash) {
                        return Err(RpcError::remote(
                            403,
                            format!("model {model} is not allowed by the root contract"),
                        ));
                    }
                }
                if let Some(image) = peer.identity().image_hash {
                    if !root.worker_hashes.is_empty() && !root.worker_hashes.contains(&image) {
                        return Err(RpcError::remote(
                            403,
                            format!("worker image {} is not allowed", hex::encode(image)),
                        ));
                    }
                }
            }
            // As the reference: 0 (everything free) up to a billion thousandths.
            if !(0..1_000_000_000).contains(&params.coefficient) {
                return Err(bad("invalid coefficient value"));
            }
            let proto = Proxy::settle_proto(params.min_proto_version, params.max_proto_version)
                .map_err(bad)?;
            let worker_sc = proxy
                .worker_contract(owner)
                .map_err(|e| RpcError::remote(500, e.to_string()))?;
            let mut st = state.lock();
            st.owner = Some(owner);
            st.model = model;
            st.coefficient = params.coefficient as u32;
            st.max_active = params.max_active_requests.unwrap_or(8).max(1) as u32;
            st.proto = proto;
            st.features = cocoon_engine::Features {
                tools: params.supports_tools.is_some(),
                structured_output: params.supports_structured_output.is_some(),
            };
            Ok(cocoon_wire::encode(&ConnectedToProxy {
                params: proxy.proxy_params(proto),
                worker_sc_address: proxy.wire_address(&worker_sc),
            }))
        }
        WorkerRequest::CompareBalanceWithProxy {
            tokens_committed_to_blockchain,
            tokens_committed_to_db,
            max_tokens,
        } => {
            let owner = state.lock().owner()?;
            let ours = proxy.worker_total(&owner);
            let theirs = tokens_committed_to_blockchain
                .max(tokens_committed_to_db)
                .max(max_tokens);
            let error_code = if theirs > ours {
                tracing::error!(
                    "worker {owner} holds {theirs} tokens but the ledger only {ours}: this ledger was rolled back"
                );
                1
            } else {
                state.lock().balance_checked = true;
                0
            };
            Ok(cocoon_wire::encode(&CompareBalanceResult {
                signed_payment: proxy.worker_voucher(owner, ours),
                tokens_committed_to_db: ours,
                max_tokens: ours,
                error_code,
            }))
        }
        WorkerRequest::ExtendedCompareBalanceWithProxy { .. } => Ok(cocoon_wire::encode(
            &cocoon_wire::worker::ExtendedCompareBalanceResult { error_code: 0 },
        )),
        WorkerRequest::ProxyHandshakeComplete { is_disabled } => {
            let mut st = state.lock();
            let owner = st.owner()?;
            if !st.balance_checked {
                return Err(bad("compareBalanceWithProxy must succeed first"));
            }
            if !st.registered {
                st.registered = true;
                proxy.pool.lock().insert(WorkerSlot {
                    id,
                    owner,
                    model: st.model.clone(),
                    coefficient: st.coefficient,
                    max_active: st.max_active,
                    active: 0,
                    enabled: !is_disabled,
                    mean_latency_ms: 0.0,
                    served: 0,
                    failures: 0.0,
                    understands_cancel: st.proto >= cocoon_wire::PROTO_WITH_CANCEL,
                    features: st.features,
                });
                proxy.worker_peers.lock().insert(id, peer);
                tracing::info!(
                    "worker {owner} ready: {} at coefficient {}",
                    st.model,
                    st.coefficient
                );
            }
            Ok(cocoon_wire::encode(&HandshakeCompleted {}))
        }
        WorkerRequest::UpdatePaymentStatus => {
            let owner = state.lock().owner()?;
            let ours = proxy.worker_total(&owner);
            Ok(cocoon_wire::encode(&WorkerPaymentStatus {
                signed_payment: proxy.worker_voucher(owner, ours),
                db_tokens: ours,
                max_tokens: ours,
            }))
        }
    }
}
