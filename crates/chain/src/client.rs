//! One trait for every chain the roles talk to: the in-process local chain, and any
//! toncenter-v2-compatible HTTP endpoint (TON mainnet/testnet providers, or our own
//! `cocoon chain serve`). Mainnet, testnet and local differ only in configuration.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tycho_types::cell::{Cell, Load};

use crate::address::Address;
use crate::cells::{from_boc_base64, to_boc_base64};
use crate::contracts::{ClientData, ProxyData, RootData, WorkerData};
use crate::error::{ChainError, Result};
use crate::keys::Keypair;
use crate::local::{LocalChain, TxRecord};
use crate::stack::StackItem;
use crate::wallet::{OutMessage, Wallet};
use crate::Network;

/// A boxed future (the trait is object-safe so roles can hold `Arc<dyn ChainClient>`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// An account as a chain API reports it.
#[derive(Clone, Debug)]
pub struct Account {
    /// Balance, nanotons.
    pub balance: u128,
    /// `active`, `uninit`, `frozen` or `nonexist`.
    pub status: String,
    /// Code, when active.
    pub code: Option<Cell>,
    /// Data, when active.
    pub data: Option<Cell>,
    /// Last transaction's logical time.
    pub last_lt: u64,
}

/// A transaction as a chain API reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tx {
    /// Logical time.
    pub lt: u64,
    /// Hash (hex).
    pub hash: String,
    /// Unix time.
    pub now: u32,
    /// Sender of the inbound message (None: external).
    pub from: Option<Address>,
    /// Value carried in, nanotons.
    pub value: u128,
    /// Compute exit code (None: compute skipped).
    pub exit_code: Option<i32>,
    /// Whether the transaction was aborted.
    pub aborted: bool,
    /// Fees, nanotons.
    pub fees: u128,
    /// The inbound message's body (None: no inbound message, or one that cannot be read).
    #[serde(skip)]
    pub body: Option<Cell>,
}

/// The body of a message cell, as a cell of its own.
fn message_body(msg: &Cell) -> Option<Cell> {
    let msg = msg.parse::<tycho_types::models::Message<'_>>().ok()?;
    let mut b = tycho_types::cell::CellBuilder::new();
    b.store_slice(msg.body).ok()?;
    b.build().ok()
}

impl From<&TxRecord> for Tx {
    fn from(r: &TxRecord) -> Self {
        Tx {
            lt: r.lt,
            hash: r.hash.clone(),
            now: r.now,
            from: r.from,
            value: r.value,
            exit_code: r.exit_code,
            aborted: r.aborted,
            fees: r.total_fees,
            body: from_boc_base64(&r.in_msg_boc)
                .ok()
                .and_then(|m| message_body(&m)),
        }
    }
}

/// Whether a role on `chain` runs on a test network: on any chain but mainnet, and with no
/// chain at all (a reference fake-TON root is a test network, as the reference means it).
pub fn is_test(chain: Option<&dyn ChainClient>) -> bool {
    chain.is_none_or(|c| c.network() != crate::Network::Mainnet)
}

/// Both ends of a COCOON handshake must agree on test mode: every reference role refuses a
/// peer whose `is_test` differs from its own ("test mode mismatch"), and so do ours. A peer
/// that does not say (the field is optional in the schema) is taken at its word.
pub fn check_test_mode(ours: bool, theirs: Option<bool>) -> std::result::Result<(), String> {
    match theirs {
        Some(t) if t != ours => Err(format!(
            "test mode mismatch: this side runs {} network (is_test {ours}), the peer says is_test {t}",
            if ours { "a test" } else { "the main" }
        )),
        _ => Ok(()),
    }
}

/// What every role needs from a chain.
pub trait ChainClient: Send + Sync {
    /// Which network this is.
    fn network(&self) -> Network;
    /// An account's state.
    fn account<'a>(&'a self, address: &'a Address) -> BoxFut<'a, Account>;
    /// Runs a get-method; fails unless it exits 0/1.
    fn run_get_method<'a>(
        &'a self,
        address: &'a Address,
        method: &'a str,
        args: Vec<StackItem>,
    ) -> BoxFut<'a, Vec<StackItem>>;
    /// Sends an external message (a signed wallet transfer).
    fn send_message<'a>(&'a self, message: Cell) -> BoxFut<'a, ()>;
    /// Recent transactions of an account, newest first.
    fn transactions<'a>(&'a self, address: &'a Address, limit: usize) -> BoxFut<'a, Vec<Tx>>;
}

/// The in-process local chain as a [`ChainClient`].
#[derive(Clone)]
pub struct LocalClient {
    chain: Arc<Mutex<LocalChain>>,
}

impl LocalClient {
    /// Wraps a shared local chain.
    pub fn new(chain: Arc<Mutex<LocalChain>>) -> Self {
        LocalClient { chain }
    }

    /// The chain itself (tests move its clock).
    pub fn chain(&self) -> &Arc<Mutex<LocalChain>> {
        &self.chain
    }

    fn with<T>(&self, f: impl FnOnce(&mut LocalChain) -> Result<T>) -> Result<T> {
        let mut chain = self
            .chain
            .lock()
            .map_err(|_| ChainError::Executor("local chain lock poisoned".into()))?;
        f(&mut chain)
    }
}

impl ChainClient for LocalClient {
    fn network(&self) -> Network {
        Network::Local
    }

    fn account<'a>(&'a self, address: &'a Address) -> BoxFut<'a, Account> {
        Box::pin(async move {
            self.with(|c| {
                let a = c.account(address)?;
                Ok(Account {
                    balance: a.balance,
                    status: a.status.to_string(),
                    code: a.code,
                    data: a.data,
                    last_lt: a.last_tx.map(|(lt, _)| lt).unwrap_or(0),
                })
            })
        })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a Address,
        method: &'a str,
        args: Vec<StackItem>,
    ) -> BoxFut<'a, Vec<StackItem>> {
        Box::pin(async move { self.with(|c| c.get(address, method, args)) })
    }

    fn send_message<'a>(&'a self, message: Cell) -> BoxFut<'a, ()> {
        Box::pin(async move { self.with(|c| c.send_external(message).map(|_| ())) })
    }

    fn transactions<'a>(&'a self, address: &'a Address, limit: usize) -> BoxFut<'a, Vec<Tx>> {
        Box::pin(async move {
            self.with(|c| {
                Ok(c.transactions(address, limit)
                    .iter()
                    .map(Tx::from)
                    .collect())
            })
        })
    }
}

/// A toncenter-v2-compatible HTTP API (`https://toncenter.com/api/v2`,
/// `https://testnet.toncenter.com/api/v2`, or `http://127.0.0.1:PORT/api/v2` of
/// `cocoon chain serve`).
#[derive(Clone)]
pub struct ToncenterClient {
    base_url: String,
    api_key: Option<String>,
    network: Network,
    http: reqwest::Client,
}

impl ToncenterClient {
    /// A client for `base_url` (ending in `/api/v2`).
    pub fn new(base_url: &str, api_key: Option<String>, network: Network) -> Self {
        ToncenterClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            network,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Moves a local chain's clock forward (`cocoon chain serve`'s local-only
    /// `/local/advance`); returns the chain's new time. Public networks refuse it.
    pub async fn advance(&self, seconds: u32) -> Result<u32> {
        let r = self
            .call(
                "local/advance",
                &[],
                Some(serde_json::json!({ "seconds": seconds })),
            )
            .await?;
        r["now"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ChainError::Api(format!("local/advance: no time in {r}")))
    }

    async fn call(
        &self,
        method: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}/{method}", self.base_url);
        let mut req = match body {
            Some(b) => self.http.post(&url).json(&b),
            None => self.http.get(&url).query(query),
        };
        if let Some(key) = &self.api_key {
            req = req.header("X-API-Key", key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ChainError::Api(format!("{url}: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| ChainError::Api(format!("{url}: HTTP {status}, body is not JSON: {e}")))?;
        if json.get("ok").and_then(|o| o.as_bool()) != Some(true) {
            let err = json
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no error message");
            return Err(ChainError::Api(format!("{method}: HTTP {status}: {err}")));
        }
        Ok(json["result"].clone())
    }
}

fn str_u128(v: &serde_json::Value) -> Result<u128> {
    match v {
        serde_json::Value::String(s) => s
            .parse()
            .map_err(|_| ChainError::Api(format!("not an amount: {s:?}"))),
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(u128::from)
            .ok_or_else(|| ChainError::Api(format!("not an amount: {n}"))),
        _ => Err(ChainError::Api(format!("not an amount: {v}"))),
    }
}

fn opt_boc(v: &serde_json::Value) -> Result<Option<Cell>> {
    match v.as_str() {
        Some("") | None => Ok(None),
        Some(b64) => Ok(Some(from_boc_base64(b64)?)),
    }
}

impl ChainClient for ToncenterClient {
    fn network(&self) -> Network {
        self.network
    }

    fn account<'a>(&'a self, address: &'a Address) -> BoxFut<'a, Account> {
        Box::pin(async move {
            let r = self
                .call(
                    "getAddressInformation",
                    &[("address", address.to_raw())],
                    None,
                )
                .await?;
            let status = match r["state"].as_str().unwrap_or("") {
                "active" => "active",
                "frozen" => "frozen",
                "uninitialized" | "uninit" => "uninit",
                _ => "nonexist",
            };
            let balance = str_u128(&r["balance"])?;
            let status =
                if status == "uninit" && balance == 0 && r["last_transaction_id"]["lt"] == "0" {
                    "nonexist"
                } else {
                    status
                };
            Ok(Account {
                balance,
                status: status.to_string(),
                code: opt_boc(&r["code"])?,
                data: opt_boc(&r["data"])?,
                last_lt: r["last_transaction_id"]["lt"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            })
        })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a Address,
        method: &'a str,
        args: Vec<StackItem>,
    ) -> BoxFut<'a, Vec<StackItem>> {
        Box::pin(async move {
            let stack: Vec<_> = args.iter().map(StackItem::to_toncenter).collect();
            let body =
                serde_json::json!({"address": address.to_raw(), "method": method, "stack": stack});
            let r = self.call("runGetMethod", &[], Some(body)).await?;
            let exit_code = r["exit_code"].as_i64().unwrap_or(-1) as i32;
            if exit_code != 0 && exit_code != 1 {
                return Err(ChainError::GetMethod {
                    method: method.to_string(),
                    exit_code,
                });
            }
            r["stack"]
                .as_array()
                .ok_or_else(|| ChainError::Api("runGetMethod: no stack".into()))?
                .iter()
                .map(StackItem::from_toncenter)
                .collect()
        })
    }

    fn send_message<'a>(&'a self, message: Cell) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.call(
                "sendBoc",
                &[],
                Some(serde_json::json!({"boc": to_boc_base64(&message)})),
            )
            .await?;
            Ok(())
        })
    }

    fn transactions<'a>(&'a self, address: &'a Address, limit: usize) -> BoxFut<'a, Vec<Tx>> {
        Box::pin(async move {
            let r = self
                .call(
                    "getTransactions",
                    &[("address", address.to_raw()), ("limit", limit.to_string())],
                    None,
                )
                .await?;
            let list = r
                .as_array()
                .ok_or_else(|| ChainError::Api("getTransactions: not a list".into()))?;
            list.iter().map(parse_toncenter_tx).collect()
        })
    }
}

fn parse_toncenter_tx(v: &serde_json::Value) -> Result<Tx> {
    use tycho_types::models::{ComputePhase, Transaction, TxInfo};
    let boc = v["data"]
        .as_str()
        .ok_or_else(|| ChainError::Api("transaction without data".into()))?;
    let cell = from_boc_base64(boc)?;
    let tx = Transaction::load_from(&mut cell.as_slice()?)?;
    let (exit_code, aborted) = match tx.load_info()? {
        TxInfo::Ordinary(o) => (
            match o.compute_phase {
                ComputePhase::Executed(e) => Some(e.exit_code),
                ComputePhase::Skipped(_) => None,
            },
            o.aborted,
        ),
        TxInfo::TickTock(_) => (None, false),
    };
    let hash = match v["transaction_id"]["hash"].as_str() {
        Some(h) => base64::engine::general_purpose::STANDARD
            .decode(h)
            .map(hex::encode)
            .unwrap_or_else(|_| h.to_string()),
        None => hex::encode(cell.repr_hash().0),
    };
    let from = v["in_msg"]["source"]
        .as_str()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    Ok(Tx {
        lt: tx.lt,
        hash,
        now: tx.now,
        from,
        value: v["in_msg"]["value"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        exit_code,
        aborted,
        fees: tx.total_fees.tokens.into_inner(),
        body: tx.in_msg.as_ref().and_then(message_body),
    })
}

/// Whether `owner` has registered `nonce` at its client contract `client_sc` (long
/// authorization), read from the contract's newest transactions: see [`registered_in`].
pub async fn client_registered(
    chain: &dyn ChainClient,
    client_sc: &Address,
    owner: &Address,
    nonce: u64,
) -> Result<bool> {
    let txs = chain.transactions(client_sc, REGISTRATION_LOOKBACK).await?;
    Ok(registered_in(&txs, owner, nonce))
}

/// Whether one of a client contract's transactions `txs` took, from `owner`, an
/// `owner_client_register` body carrying `nonce`, and succeeded. The sender of an internal
/// message cannot be forged, so this proves the owner controls the contract now.
pub fn registered_in(txs: &[Tx], owner: &Address, nonce: u64) -> bool {
    txs.iter().any(|t| {
        t.from.as_ref() == Some(owner)
            && !t.aborted
            && matches!(t.exit_code, Some(0) | Some(1))
            && t.body
                .as_ref()
                .and_then(crate::messages::client::registered_nonce)
                == Some(nonce)
    })
}

/// A `save_state` read back from a proxy contract's transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedState {
    /// The ledger's seqno it committed.
    pub seqno: u32,
    /// The ledger's state hash it committed.
    pub hash: [u8; 32],
    /// Who sent it: the owner's wallet, or a COCOON machine wallet the owner owns.
    pub from: Address,
}

/// The newest `save_state` that the proxy's owner sent to proxy contract `proxy`, among the
/// contract's newest `limit` transactions: from `owner`'s wallet, or from a COCOON machine
/// wallet (the network's code, [`crate::cocoon_wallet`]) whose owner is `owner`, as a proxy sends
/// it. (Anyone may deploy such a wallet naming any owner; [`SavedState::from`] says which wallet
/// it was, for the operator to compare with the proxy's own.)
pub async fn last_saved_state(
    chain: &dyn ChainClient,
    proxy: &Address,
    owner: &Address,
    limit: usize,
) -> Result<Option<SavedState>> {
    let txs = chain.transactions(proxy, limit).await?;
    let mut checked: std::collections::HashMap<Address, bool> = Default::default();
    for t in &txs {
        let (Some(from), Some(body)) = (t.from, t.body.as_ref()) else {
            continue;
        };
        let Some((seqno, hash)) = crate::messages::proxy::saved_state(body) else {
            continue;
        };
        let speaks = match checked.get(&from) {
            Some(known) => *known,
            None => {
                let known = from == *owner || owned_machine_wallet(chain, &from, owner).await?;
                checked.insert(from, known);
                known
            }
        };
        if speaks {
            return Ok(Some(SavedState { seqno, hash, from }));
        }
    }
    Ok(None)
}

/// Whether `at` is a COCOON machine wallet on the network's code whose owner is `owner`.
async fn owned_machine_wallet(
    chain: &dyn ChainClient,
    at: &Address,
    owner: &Address,
) -> Result<bool> {
    let account = chain.account(at).await?;
    let (Some(code), Some(data)) = (account.code, account.data) else {
        return Ok(false);
    };
    if code.repr_hash() != crate::cocoon_wallet::code().repr_hash() {
        return Ok(false);
    }
    Ok(crate::cocoon_wallet::CocoonWalletState::parse(&data).is_ok_and(|s| s.owner == *owner))
}

/// The newest `save_state` among a proxy contract's transactions `txs` (newest first) whose
/// inbound message came from `sender`, as COCOON's proxy reads its saved states back (from its
/// own machine wallet). The contract does not run on it (`do_not_process`), so the
/// transaction's outcome does not matter; who sent it does.
pub fn saved_state_in(txs: &[Tx], sender: &Address) -> Option<(u32, [u8; 32])> {
    txs.iter()
        .filter(|t| t.from.as_ref() == Some(sender))
        .find_map(|t| {
            t.body
                .as_ref()
                .and_then(crate::messages::proxy::saved_state)
        })
}

/// How many of a client contract's newest transactions [`client_registered`] reads.
const REGISTRATION_LOOKBACK: usize = 16;

/// A wallet's seqno (0 when it is not deployed yet).
pub async fn wallet_seqno(chain: &dyn ChainClient, address: &Address) -> Result<u32> {
    let acc = chain.account(address).await?;
    if acc.status != "active" {
        return Ok(0);
    }
    seqno_from_stack(&chain.run_get_method(address, "seqno", vec![]).await?)
}

/// The seqno a wallet's `seqno` get-method returned.
pub(crate) fn seqno_from_stack(stack: &[StackItem]) -> Result<u32> {
    let v = stack
        .first()
        .ok_or_else(|| ChainError::Api("seqno: empty stack".into()))?
        .as_u128()?;
    u32::try_from(v).map_err(|_| ChainError::Api(format!("seqno {v} out of u32 range")))
}

/// Signs and sends a transfer from `wallet` and waits until the wallet has taken it (its seqno
/// moved on). Returns the seqno used.
pub async fn send_transfer(
    chain: &dyn ChainClient,
    wallet: &Wallet,
    keys: &Keypair,
    messages: &[OutMessage],
) -> Result<u32> {
    let address = wallet.address()?;
    // Another sender may share the wallet (a running proxy tops its machine wallet up from its
    // owner's wallet while the owner runs `cocoon proxy payout`): when it takes the seqno this
    // transfer was signed for, the wallet drops this one. On the local chain, which shows every
    // transaction at once, sign again for the next seqno; elsewhere say so (a transaction not
    // yet visible must not be sent twice).
    for _ in 0..SHARED_WALLET_TRIES {
        let seqno = wallet_seqno(chain, &address).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let msg =
            wallet.transfer_message(keys, seqno, valid_until(chain.network(), now), messages)?;
        let ours = message_body(&msg).map(|b| *b.repr_hash());
        let local = chain.network() == crate::Network::Local;
        if let Err(e) = chain.send_message(msg).await {
            // The local chain refuses at once a transfer whose seqno another sender just took.
            if !local || wallet_seqno(chain, &address).await? == seqno {
                return Err(e);
            }
        } else {
            wait_for_seqno_past(chain, &address, seqno).await?;
            let txs = chain.transactions(&address, 16).await?;
            if txs
                .iter()
                .any(|t| t.from.is_none() && t.body.as_ref().map(|b| *b.repr_hash()) == ours)
            {
                return Ok(seqno);
            }
            if !local {
                return Err(ChainError::Api(format!(
                    "wallet {address}'s seqno {seqno} was taken, but its transaction is not visible yet; \
                     look at the wallet's transactions before sending again (another sender may share this wallet)"
                )));
            }
        }
        tracing::info!("another sender took wallet {address}'s seqno {seqno}; signing again");
    }
    Err(ChainError::Api(format!(
        "wallet {address}: other senders took its seqno {SHARED_WALLET_TRIES} times in a row; nothing was sent"
    )))
}

/// Makes sure the machine wallet `machine` (COCOON's, [`crate::cocoon_wallet`]) can send
/// `need` nanotons: when it holds less than `need` plus the 2.1 TON a reference runner keeps
/// there, `wallet` tops it up to `need` plus [`crate::cocoon_wallet::FILL`] and this waits (up to
/// a minute) for the money to arrive. The transfer does not bounce: a machine wallet deploys
/// itself with its first message. Returns what was sent (0 when nothing was needed).
pub async fn fund_machine_wallet(
    chain: &dyn ChainClient,
    wallet: &Wallet,
    keys: &Keypair,
    machine: &Address,
    need: u128,
) -> Result<u128> {
    use crate::cocoon_wallet::{FILL, RUNNER_MIN_BALANCE};
    let enough = need.checked_add(RUNNER_MIN_BALANCE).ok_or_else(|| {
        ChainError::Refused(format!(
            "{need} nanotons and the wallet's floor overflow u128"
        ))
    })?;
    let held = chain.account(machine).await?.balance;
    if held >= enough {
        return Ok(0);
    }
    let amount = need.saturating_add(FILL).saturating_sub(held);
    let from = wallet.address()?;
    let has = chain.account(&from).await?.balance;
    if has < amount.saturating_add(crate::messages::MIN_FEE) {
        return Err(ChainError::Refused(format!(
            "the machine wallet {machine} holds {} TON and needs {} TON more to send {} TON above its 2.1 TON floor; the wallet that funds it, {from}, holds only {} TON: top that wallet up",
            crate::format_ton(held),
            crate::format_ton(amount),
            crate::format_ton(need),
            crate::format_ton(has)
        )));
    }
    tracing::info!(
        "machine wallet {machine} holds {} TON: {from} adds {} TON",
        crate::format_ton(held),
        crate::format_ton(amount)
    );
    let msg = OutMessage {
        bounce: false,
        ..OutMessage::transfer(*machine, amount, None)
    };
    send_transfer(chain, wallet, keys, &[msg]).await?;
    let started = std::time::Instant::now();
    while chain.account(machine).await?.balance < enough {
        if started.elapsed() > SEQNO_WAIT {
            return Err(ChainError::Api(format!(
                "the machine wallet {machine} was sent {} TON but does not hold {} TON after {} s",
                crate::format_ton(amount),
                crate::format_ton(enough),
                SEQNO_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(amount)
}

/// Waits until the wallet has taken `seqno`, so the caller's next transfer signs the next one
/// instead of repeating this one (which the wallet would drop). The local chain executes at
/// once; a public network takes a block or two.
async fn wait_for_seqno_past(chain: &dyn ChainClient, address: &Address, seqno: u32) -> Result<()> {
    let started = std::time::Instant::now();
    while wallet_seqno(chain, address).await? <= seqno {
        if started.elapsed() > SEQNO_WAIT {
            return Err(ChainError::Api(format!(
                "wallet {address} did not accept its transfer with seqno {seqno} within {} s",
                SEQNO_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(())
}

/// How many times [`send_transfer`] signs again on the local chain when another sender took
/// the seqno it signed for.
const SHARED_WALLET_TRIES: usize = 5;

/// How long a signed transfer stays valid on a public network: a leaked or delayed message
/// cannot land after this, and it is shorter than [`SEQNO_WAIT`], so once [`send_transfer`]
/// gives up the transfer can no longer be taken behind its back.
pub const PUBLIC_TRANSFER_VALIDITY_SECS: u32 = 60;

/// Until when (unix seconds) a transfer signed at `now` is valid: a minute on mainnet and
/// testnet; a year on the local chain, whose clock tests move ahead of the wall clock.
pub fn valid_until(network: crate::Network, now: u32) -> u32 {
    match network {
        crate::Network::Mainnet | crate::Network::Testnet => {
            now.saturating_add(PUBLIC_TRANSFER_VALIDITY_SECS)
        }
        crate::Network::Local => now.saturating_add(3600 * 24 * 365),
    }
}

/// How long [`send_transfer`] waits for the wallet to take a transfer.
const SEQNO_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// The root contract's registry and prices.
pub async fn read_root(chain: &dyn ChainClient, root: &Address) -> Result<RootData> {
    let acc = chain.account(root).await?;
    match (&acc.data, &acc.code) {
        (Some(data), Some(code)) => RootData::parse(data, code),
        _ => Err(ChainError::NotActive(root.to_raw())),
    }
}

async fn data_of(chain: &dyn ChainClient, address: &Address) -> Result<Cell> {
    chain
        .account(address)
        .await?
        .data
        .ok_or_else(|| ChainError::NotActive(address.to_raw()))
}

/// A proxy contract's state.
pub async fn read_proxy(chain: &dyn ChainClient, address: &Address) -> Result<ProxyData> {
    ProxyData::parse(&data_of(chain, address).await?)
}

/// A client contract's state.
pub async fn read_client(chain: &dyn ChainClient, address: &Address) -> Result<ClientData> {
    ClientData::parse(&data_of(chain, address).await?)
}

/// A worker contract's state.
pub async fn read_worker(chain: &dyn ChainClient, address: &Address) -> Result<WorkerData> {
    WorkerData::parse(&data_of(chain, address).await?)
}

/// Whose contract at a proxy: a client's or a worker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// A client contract (`ProxyInit::client_address`).
    Client,
    /// A worker contract (`ProxyInit::worker_address`).
    Worker,
}

/// A proxy that passed [`verify_proxy`].
#[derive(Clone, Debug)]
pub struct VerifiedProxy {
    /// The proxy contract.
    pub address: Address,
    /// Its state.
    pub data: ProxyData,
    /// Our contract at it (as the proxy contract derives it, and as the proxy named it).
    pub ours: Address,
}

/// What a client or worker checks before trusting a proxy it connected to: the contract it
/// names is registered in the root and holds the voucher key the proxy announced, and the
/// contract it says is ours (`claimed_ours`, raw address bytes) is the one the proxy contract
/// derives for `owner`. Returns the proxy, or why it must be refused.
pub async fn verify_proxy(
    chain: &dyn ChainClient,
    root: &Address,
    proxy_sc_address: &[u8],
    announced_key: &[u8; 32],
    party: Party,
    owner: Address,
    claimed_ours: &[u8],
) -> Result<VerifiedProxy, String> {
    let proxy: Address = String::from_utf8_lossy(proxy_sc_address)
        .parse()
        .map_err(|e| format!("proxy_sc_address: {e}"))?;
    let root = read_root(chain, root).await.map_err(|e| e.to_string())?;
    if !root.proxies.iter().any(|p| p.address == Some(proxy)) {
        return Err(format!(
            "proxy contract {proxy} is not registered in the root"
        ));
    }
    let data = read_proxy(chain, &proxy).await.map_err(|e| e.to_string())?;
    if &data.proxy_public_key != announced_key {
        return Err(format!(
            "the proxy announced voucher key {} but its contract holds {}",
            hex::encode(announced_key),
            hex::encode(data.proxy_public_key)
        ));
    }
    let init = data.init();
    let (ours, what) = match party {
        Party::Client => (init.client_address(proxy, owner), "client"),
        Party::Worker => (init.worker_address(proxy, owner), "worker"),
    };
    let ours = ours.map_err(|e| e.to_string())?;
    if claimed_ours != ours.to_raw().as_bytes() {
        return Err(format!(
            "the proxy names {what} contract {}, but ours at it is {ours}",
            String::from_utf8_lossy(claimed_ours)
        ));
    }
    Ok(VerifiedProxy {
        address: proxy,
        data,
        ours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;

    #[test]
    fn test_mode_must_agree_and_an_unsaid_one_is_taken_at_its_word() {
        assert_eq!(check_test_mode(true, Some(true)), Ok(()));
        assert_eq!(check_test_mode(false, Some(false)), Ok(()));
        assert_eq!(check_test_mode(true, None), Ok(()));
        let e = check_test_mode(true, Some(false)).unwrap_err();
        assert!(
            e.contains("test mode mismatch") && e.contains("is_test false"),
            "{e}"
        );
        let e = check_test_mode(false, Some(true)).unwrap_err();
        assert!(e.contains("the main network"), "{e}");
    }

    #[test]
    fn public_transfers_expire_within_a_minute_and_before_the_wait_gives_up() {
        let now = 1_800_000_000;
        for net in [Network::Mainnet, Network::Testnet] {
            assert_eq!(valid_until(net, now), now + 60);
        }
        assert!(u64::from(PUBLIC_TRANSFER_VALIDITY_SECS) < SEQNO_WAIT.as_secs());
        // The local chain keeps tests' moved clock valid.
        assert_eq!(valid_until(Network::Local, now), now + 3600 * 24 * 365);
        // No wrap-around at the end of time.
        assert_eq!(valid_until(Network::Mainnet, u32::MAX - 1), u32::MAX);
    }
}
