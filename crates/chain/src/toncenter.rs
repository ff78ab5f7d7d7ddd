//! A toncenter-v2-compatible HTTP API over the local chain — what `cocoon chain serve` runs, so
//! [`crate::client::ToncenterClient`] talks to it exactly as to a public TON endpoint.
//!
//! Implemented: `sendBoc`, `runGetMethod`, `getAddressInformation`, `getAddressBalance`,
//! `getWalletInformation`, `getTransactions`. Local-only extras under `/api/v2/local/`:
//! `advance` (move the clock) and `faucet` (mint value to an address) — a real network has
//! neither.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::address::Address;
use crate::cells::{from_boc_base64, to_boc_base64};
use crate::error::ChainError;
use crate::local::LocalChain;
use crate::stack::StackItem;

type Shared = Arc<Mutex<LocalChain>>;

fn ok(result: Value) -> Json<Value> {
    Json(json!({"ok": true, "result": result}))
}

fn err(code: u16, message: impl std::fmt::Display) -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
        Json(json!({"ok": false, "error": message.to_string(), "code": code})),
    )
}

type Reply = Result<Json<Value>, (axum::http::StatusCode, Json<Value>)>;

fn chain_err(e: ChainError) -> (axum::http::StatusCode, Json<Value>) {
    match e {
        ChainError::Io { .. } | ChainError::Executor(_) => err(500, e),
        _ => err(400, e),
    }
}

fn lock(
    chain: &Shared,
) -> Result<std::sync::MutexGuard<'_, LocalChain>, (axum::http::StatusCode, Json<Value>)> {
    chain
        .lock()
        .map_err(|_| err(500, "local chain lock poisoned"))
}

fn address_param(
    q: &std::collections::HashMap<String, String>,
) -> Result<Address, (axum::http::StatusCode, Json<Value>)> {
    let a = q
        .get("address")
        .ok_or_else(|| err(400, "missing parameter: address"))?;
    a.parse().map_err(|e: ChainError| err(400, e))
}

/// The `address` field of a JSON body, parsed.
fn body_address(body: &Value) -> Result<Address, (axum::http::StatusCode, Json<Value>)> {
    body.get("address")
        .and_then(|a| a.as_str())
        .ok_or_else(|| err(400, "missing field: address"))?
        .parse()
        .map_err(chain_err)
}

/// The HTTP routes under `/api/v2`.
pub fn router(chain: Shared) -> Router {
    Router::new()
        .route("/api/v2/sendBoc", post(send_boc))
        .route("/api/v2/runGetMethod", post(run_get_method))
        .route("/api/v2/getAddressInformation", get(address_information))
        .route("/api/v2/getAddressBalance", get(address_balance))
        .route("/api/v2/getWalletInformation", get(wallet_information))
        .route("/api/v2/getTransactions", get(transactions))
        .route("/api/v2/local/advance", post(advance))
        .route("/api/v2/local/faucet", post(faucet))
        .with_state(chain)
}

/// Serves the API on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, chain: Shared) -> std::io::Result<()> {
    // Streamed answers are many small writes: never let Nagle hold them back.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(chain)).await
}

/// Binds `addr` (refusing anything but loopback unless `allow_public`) and serves.
pub async fn bind(
    addr: SocketAddr,
    allow_public: bool,
) -> std::io::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() && !allow_public {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} is not a loopback address; the local chain has a faucet and no auth"),
        ));
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for the chain API: {e}"),
        )
    })
}

async fn send_boc(State(chain): State<Shared>, Json(body): Json<Value>) -> Reply {
    let boc = body
        .get("boc")
        .and_then(|b| b.as_str())
        .ok_or_else(|| err(400, "missing field: boc"))?;
    let cell = from_boc_base64(boc).map_err(chain_err)?;
    let mut c = lock(&chain)?;
    let trace = c.send_external(cell).map_err(chain_err)?;
    Ok(ok(json!({"@type": "ok", "hash": trace.first().hash})))
}

async fn run_get_method(State(chain): State<Shared>, Json(body): Json<Value>) -> Reply {
    let address = body_address(&body)?;
    let method = body
        .get("method")
        .and_then(|m| m.as_str())
        .ok_or_else(|| err(400, "missing field: method"))?;
    let args = match body.get("stack") {
        Some(Value::Array(items)) => items
            .iter()
            .map(StackItem::from_toncenter)
            .collect::<Result<Vec<_>, _>>()
            .map_err(chain_err)?,
        None | Some(Value::Null) => vec![],
        Some(_) => return Err(err(400, "stack must be a list")),
    };
    let c = lock(&chain)?;
    let out = c
        .run_get_method(&address, method, args)
        .map_err(chain_err)?;
    let stack: Vec<Value> = out.stack.iter().map(StackItem::to_toncenter).collect();
    Ok(ok(
        json!({"@type": "smc.runResult", "gas_used": out.gas_used, "stack": stack, "exit_code": out.exit_code}),
    ))
}

fn tx_id(last: &Option<(u64, String)>) -> Value {
    match last {
        Some((lt, hash)) => {
            let raw = hex::decode(hash).unwrap_or_default();
            json!({"@type": "internal.transactionId", "lt": lt.to_string(), "hash": base64::engine::general_purpose::STANDARD.encode(raw)})
        }
        None => {
            json!({"@type": "internal.transactionId", "lt": "0", "hash": base64::engine::general_purpose::STANDARD.encode([0u8; 32])})
        }
    }
}

async fn address_information(
    State(chain): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Reply {
    let address = address_param(&q)?;
    let c = lock(&chain)?;
    let a = c.account(&address).map_err(chain_err)?;
    let state = match a.status {
        "active" => "active",
        "frozen" => "frozen",
        _ => "uninitialized",
    };
    Ok(ok(json!({
        "@type": "raw.fullAccountState",
        "balance": a.balance.to_string(),
        "code": a.code.as_ref().map(to_boc_base64).unwrap_or_default(),
        "data": a.data.as_ref().map(to_boc_base64).unwrap_or_default(),
        "last_transaction_id": tx_id(&a.last_tx),
        "state": state,
        "sync_utime": c.now(),
    })))
}

async fn address_balance(
    State(chain): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Reply {
    let address = address_param(&q)?;
    let c = lock(&chain)?;
    Ok(ok(json!(c
        .balance(&address)
        .map_err(chain_err)?
        .to_string())))
}

async fn wallet_information(
    State(chain): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Reply {
    let address = address_param(&q)?;
    let c = lock(&chain)?;
    let a = c.account(&address).map_err(chain_err)?;
    let code_hash = a.code.as_ref().map(|c| c.repr_hash().0);
    let wallet_type = [
        crate::wallet::WalletVersion::V4r2,
        crate::wallet::WalletVersion::V5r1,
        crate::wallet::WalletVersion::Cocoon,
    ]
    .into_iter()
    .find(|v| Some(crate::wallet::wallet_code(*v).repr_hash().0) == code_hash)
    .map(|v| match v {
        crate::wallet::WalletVersion::V4r2 => "wallet v4 r2",
        crate::wallet::WalletVersion::V5r1 => "wallet v5 r1",
        crate::wallet::WalletVersion::Cocoon => "cocoon wallet",
    });
    let seqno = if wallet_type.is_some() {
        c.get(&address, "seqno", vec![])
            .ok()
            .and_then(|s| s.first().and_then(|v| v.as_u128().ok()))
    } else {
        None
    };
    Ok(ok(json!({
        "wallet": wallet_type.is_some(),
        "balance": a.balance.to_string(),
        "account_state": if a.status == "active" { "active" } else { "uninitialized" },
        "wallet_type": wallet_type,
        "seqno": seqno,
        "last_transaction_id": tx_id(&a.last_tx),
    })))
}

async fn transactions(
    State(chain): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Reply {
    let address = address_param(&q)?;
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| err(400, format!("limit is not a number: {l:?}")))?,
        None => 10,
    };
    let c = lock(&chain)?;
    let list: Vec<Value> = c
        .transactions(&address, limit.min(crate::local::TX_HISTORY))
        .iter()
        .map(|t| {
            let hash = base64::engine::general_purpose::STANDARD.encode(hex::decode(&t.hash).unwrap_or_default());
            json!({
                "@type": "raw.transaction",
                "utime": t.now,
                "data": t.boc,
                "transaction_id": {"@type": "internal.transactionId", "lt": t.lt.to_string(), "hash": hash},
                "fee": t.total_fees.to_string(),
                "in_msg": {
                    "source": t.from.map(|a| a.to_raw()).unwrap_or_default(),
                    "destination": t.account.to_raw(),
                    "value": t.value.to_string(),
                },
            })
        })
        .collect();
    Ok(ok(Value::Array(list)))
}

async fn advance(State(chain): State<Shared>, Json(body): Json<Value>) -> Reply {
    let seconds = body
        .get("seconds")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| err(400, "missing field: seconds"))?;
    let seconds = u32::try_from(seconds).map_err(|_| err(400, "seconds out of range"))?;
    let mut c = lock(&chain)?;
    c.advance(seconds).map_err(chain_err)?;
    Ok(ok(json!({"now": c.now()})))
}

async fn faucet(State(chain): State<Shared>, Json(body): Json<Value>) -> Reply {
    let address = body_address(&body)?;
    let amount = body
        .get("amount")
        .and_then(|a| {
            a.as_str()
                .map(str::to_string)
                .or_else(|| a.as_u64().map(|n| n.to_string()))
        })
        .ok_or_else(|| err(400, "missing field: amount (nanotons)"))?;
    let amount: u128 = amount
        .parse()
        .map_err(|_| err(400, format!("amount is not nanotons: {amount:?}")))?;
    let mut c = lock(&chain)?;
    c.send_internal(crate::local::FAUCET, address, amount, false, None, None)
        .map_err(chain_err)?;
    Ok(ok(
        json!({"balance": c.balance(&address).map_err(chain_err)?.to_string()}),
    ))
}
