//! The client runner, usable as a library.
//!
//! [`Client::start`] reads the root contract, and for each proxy: verifies its attestation
//! (RA-TLS, image hash in the root) before sending anything, checks that its contract is
//! registered and holds the voucher key it announces, makes sure our client contract at that
//! proxy exists, is funded and staked and holds the hash of our secret, and authorizes.
//! [`Client::query`] sends a request to the first live proxy connection (a closed one drops
//! out, so the next takes over; a proxy's refusal is returned, not retried elsewhere) and
//! streams the answer. Every charge voucher the proxy sends is checked and kept; the newest
//! is committed on chain once half the stake is used, and the contract is topped up by one
//! stake when the paid balance minus uncommitted use falls under half the stake.
//! [`server`] puts the OpenAI HTTP API in front of it.

#![forbid(unsafe_code)]

mod query;
pub mod server;

pub use query::{Answer, QueryStream};

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::client::{self as chain_client, ChainClient};
use cocoon_chain::contracts::{ClientData, ContractState, ProxyInit};
use cocoon_chain::keys::Keypair;
use cocoon_chain::messages::{self, op, MIN_FEE};
use cocoon_chain::reference_contracts::{self as reference, AnnouncedProxy, FakeRoot};
use cocoon_chain::voucher::SignedVoucher;
use cocoon_chain::wallet::{OutMessage, Wallet};
use cocoon_chain::Address;
use cocoon_net::identity::Identity;
use cocoon_net::rpc::{Peer, RpcError};
use cocoon_tee::{Policy, PolicyKind, QuoteProvider};
use cocoon_wire::client::{
    AuthorizationWithProxy, ClientConnectedToProxy, ClientParams, ClientRequest, Refund,
    WorkerTypesV2,
};
use cocoon_wire::common::{HttpRequest, SignedPayment};
use cocoon_wire::proxy::RequestPayment;
use sha2::{Digest, Sha256};

/// How a client runs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// State directory (the authorization secret).
    pub dir: PathBuf,
    /// The root contract.
    pub root: Address,
    /// Proxies' client endpoints; empty: every proxy registered in the root.
    pub proxies: Vec<SocketAddr>,
    /// First top-up of a new client contract, nanotons.
    pub deposit: u128,
    /// Stake, nanotons (≥ the root's minimum; ~10 minutes of use).
    pub stake: u128,
    /// Attestation policy for proxies.
    pub proxy_policy: PolicyKind,
    /// Most proof-of-work bits this client will solve.
    pub max_pow_difficulty: u32,
    /// Default `max_coefficient` of requests that set none, thousandths.
    pub max_coefficient: u32,
    /// Default timeout of requests.
    pub timeout: Duration,
}

/// Why the client cannot do something.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No proxy could be used.
    #[error("no proxy available: {0}")]
    NoProxy(String),
    /// The proxy (or the worker behind it) refused or failed the request, with an HTTP status.
    #[error("{message}")]
    Remote {
        /// HTTP status.
        status: u16,
        /// The reason.
        message: String,
    },
    /// The chain.
    #[error("chain: {0}")]
    Chain(#[from] cocoon_chain::ChainError),
    /// A proxy that cannot be trusted.
    #[error("refusing proxy: {0}")]
    Refused(String),
    /// Files.
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The HTTP status to answer an app with.
    pub fn status(&self) -> u16 {
        match self {
            ClientError::Remote { status, .. } => *status,
            ClientError::NoProxy(_) => 503,
            _ => 502,
        }
    }
}

impl ClientError {
    /// An error the proxy answered with: its code when it is an HTTP error status (400–599),
    /// else 502, since a code from the wire must not turn into a success.
    pub(crate) fn from_proxy(code: i32, message: impl Into<String>) -> Self {
        let status = u16::try_from(code)
            .ok()
            .filter(|s| (400..=599).contains(s))
            .unwrap_or(502);
        ClientError::Remote {
            status,
            message: message.into(),
        }
    }
}

fn remote(e: RpcError) -> ClientError {
    match e {
        RpcError::Remote { code, message } => ClientError::from_proxy(code, message),
        RpcError::Timeout(t) => ClientError::Remote {
            status: 504,
            message: format!("no answer within {t:?}"),
        },
        RpcError::Closed => ClientError::NoProxy("connection to the proxy closed".into()),
        RpcError::Backlog(_) => {
            ClientError::NoProxy(format!("connection to the proxy closed: {e}"))
        }
        RpcError::Malformed(why) => {
            ClientError::Refused(format!("the proxy's answer is malformed: {why}"))
        }
    }
}

/// One authorized proxy connection.
struct ProxyConn {
    addr: SocketAddr,
    proxy: Address,
    peer: Peer,
    client_sc: Address,
    routes: query::Routes,
    /// The proxy settled on our protocol version 3: it understands `proxy.cancelQuery`.
    understands_cancel: bool,
}

/// Money state at one proxy.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Account {
    /// Proxy contract.
    pub proxy: Address,
    /// Our client contract there.
    pub client_contract: Address,
    /// Newest charge voucher's tokens.
    pub voucher_tokens: u64,
    /// Tokens committed on chain.
    pub committed_tokens: u64,
    /// On-chain balance, nanotons.
    pub balance: u128,
    /// On-chain stake, nanotons.
    pub stake: u128,
    /// Price per token, nanotons.
    pub price_per_token: u128,
    /// The proxy's voucher key (from its contract).
    #[serde(skip)]
    proxy_key: [u8; 32],
    #[serde(skip)]
    voucher_body: Option<Vec<u8>>,
}

/// The client.
pub struct Client {
    cfg: ClientConfig,
    /// The chain the root and our contracts live on; `None` in fake-TON mode.
    chain: Option<Arc<dyn ChainClient>>,
    /// The reference's fake-TON root (no chain at all), when running in that mode.
    fake_ton: Option<FakeRoot>,
    wallet: (Keypair, Wallet),
    /// The wallet's address, computed once at start.
    owner: Address,
    identity: Arc<cocoon_net::identity::Renewing>,
    secret: [u8; 32],
    conns: Mutex<Vec<Arc<ProxyConn>>>,
    accounts: Mutex<HashMap<Address, Account>>,
    funding: tokio::sync::Mutex<()>,
    /// Held while a transfer from our wallet is signed and taken, so two never share a seqno.
    wallet_busy: tokio::sync::Mutex<()>,
    /// Prometheus metrics (also drawn by the dashboard).
    pub metrics: Arc<cocoon_observe::Metrics>,
    latency_total: Arc<Mutex<f64>>,
    /// Where the next request starts its turn over the live proxies.
    next_proxy: AtomicUsize,
}

/// A refusal another proxy may not give: about this proxy — no worker for the model there, all
/// busy, too many of our requests running there, no credit at its contract, a refunded contract
/// there. A bad request (400) is bad everywhere. A lost connection is never retried: the request
/// may have run and been billed.
fn worth_another_proxy(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Remote {
            status: 402 | 404 | 409 | 429 | 503,
            ..
        }
    )
}

/// Which of two refusals to report when every proxy refused: the one that says most about
/// what to do (no credit, then refunded, then busy, then no worker for the model).
fn more_telling(a: ClientError, b: ClientError) -> ClientError {
    let rank = |e: &ClientError| match e.status() {
        402 => 4,
        409 => 3,
        503 => 2,
        404 => 1,
        _ => 0,
    };
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

/// A model the network serves, with its workers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// Model identity `name@sha256`.
    pub id: String,
    /// Workers: (coefficient, running, max).
    pub workers: Vec<(i32, i32, i32)>,
}

impl Client {
    /// Connects to the proxies and makes sure each client contract is ready.
    pub async fn start(
        cfg: ClientConfig,
        chain: Arc<dyn ChainClient>,
        wallet: (Keypair, Wallet),
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<Arc<Client>, ClientError> {
        let root = chain_client::read_root(chain.as_ref(), &cfg.root).await?;
        let listed: Vec<SocketAddr> = root
            .proxies
            .iter()
            .filter_map(|p| p.endpoint_client())
            .collect();
        Self::start_with(
            cfg,
            Some(chain),
            None,
            root.proxy_hashes.clone(),
            listed,
            wallet,
            quotes,
        )
        .await
    }

    /// Connects to the proxies a reference fake-TON root lists (`fake`; or those configured),
    /// as a reference client does with `--disable-ton`: no chain, so no contract is deployed
    /// or funded and no voucher is redeemed; a test network (`is_test`), where proxies' image
    /// hashes are not checked (the reference does not check them either).
    pub async fn start_fake_ton(
        cfg: ClientConfig,
        fake: cocoon_chain::fake_ton::FakeTon,
        wallet: (Keypair, Wallet),
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<Arc<Client>, ClientError> {
        let listed = fake.proxies.iter().map(|p| p.clients).collect();
        let root = FakeRoot::new(fake)?;
        Self::start_with(cfg, None, Some(root), Vec::new(), listed, wallet, quotes).await
    }

    async fn start_with(
        cfg: ClientConfig,
        chain: Option<Arc<dyn ChainClient>>,
        fake_ton: Option<FakeRoot>,
        proxy_hashes: Vec<[u8; 32]>,
        listed: Vec<SocketAddr>,
        wallet: (Keypair, Wallet),
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<Arc<Client>, ClientError> {
        let mut policy = Policy::new(cfg.proxy_policy);
        policy.allowed_image_hashes = proxy_hashes;
        let identity = cocoon_net::identity::Renewing::start(quotes, "cocoon-client", policy)
            .map_err(ClientError::Io)?;
        let secret = cocoon_chain::keys::load_or_create_seed(&cfg.dir.join("secret.hex"))?;
        let owner = wallet.1.address()?;
        let client = Arc::new(Client {
            cfg: cfg.clone(),
            chain,
            fake_ton,
            wallet,
            owner,
            identity,
            secret,
            conns: Mutex::new(Vec::new()),
            accounts: Mutex::new(HashMap::new()),
            funding: tokio::sync::Mutex::new(()),
            wallet_busy: tokio::sync::Mutex::new(()),
            metrics: Arc::new(cocoon_observe::Metrics::new("cocoon_client")),
            latency_total: Arc::new(Mutex::new(0.0)),
            next_proxy: AtomicUsize::new(0),
        });
        let targets: Vec<SocketAddr> = if cfg.proxies.is_empty() {
            listed
        } else {
            cfg.proxies.clone()
        };
        if targets.is_empty() {
            return Err(ClientError::NoProxy(
                "the root lists no proxy and none is configured".into(),
            ));
        }
        let targets_kept = targets.clone();
        let mut errors = Vec::new();
        for addr in targets {
            match client.clone().connect(addr).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!("proxy {addr}: {e}");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        if client.conns.lock().is_empty() {
            return Err(ClientError::NoProxy(errors.join("; ")));
        }
        tokio::spawn(Client::reconnect_loop(
            Arc::downgrade(&client),
            targets_kept,
        ));
        Ok(client)
    }

    /// Reconnects lost proxy connections (backoff 1 s doubling to 30 s, per proxy) for as long
    /// as the client lives.
    async fn reconnect_loop(client: std::sync::Weak<Self>, targets: Vec<SocketAddr>) {
        let mut wait: HashMap<SocketAddr, (std::time::Instant, Duration)> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            // The loop ends when the client is dropped.
            let Some(me) = client.upgrade() else { return };
            for addr in &targets {
                let alive = me
                    .conns
                    .lock()
                    .iter()
                    .any(|c| c.addr == *addr && !c.peer.is_closed());
                if alive {
                    wait.remove(addr);
                    continue;
                }
                let (next, backoff) = *wait
                    .entry(*addr)
                    .or_insert((std::time::Instant::now(), Duration::from_secs(1)));
                if std::time::Instant::now() < next {
                    continue;
                }
                match me.clone().connect(*addr).await {
                    Ok(()) => {
                        wait.remove(addr);
                    }
                    Err(e) => {
                        tracing::warn!("reconnecting to proxy {addr}: {e}");
                        wait.insert(
                            *addr,
                            (
                                std::time::Instant::now() + backoff,
                                (backoff * 2).min(Duration::from_secs(30)),
                            ),
                        );
                    }
                }
            }
        }
    }

    /// The chain, or an error saying there is none (fake-TON mode).
    fn chain(&self) -> Result<&Arc<dyn ChainClient>, ClientError> {
        self.chain.as_ref().ok_or_else(|| {
            ClientError::Refused(
                "this client runs on a fake-TON root: there is no chain to send to or read from"
                    .into(),
            )
        })
    }

    /// The owner (paying wallet) address.
    pub fn owner(&self) -> Address {
        self.owner
    }

    /// Sends `messages` from our wallet in one signed transfer.
    async fn send(&self, messages: &[OutMessage]) -> Result<(), ClientError> {
        let chain = self.chain()?;
        let _busy = self.wallet_busy.lock().await;
        chain_client::send_transfer(chain.as_ref(), &self.wallet.1, &self.wallet.0, messages)
            .await?;
        Ok(())
    }

    /// Money state per proxy.
    pub fn accounts(&self) -> Vec<Account> {
        self.accounts.lock().values().cloned().collect()
    }

    /// Number of authorized proxy connections alive.
    pub fn connected(&self) -> usize {
        self.conns
            .lock()
            .iter()
            .filter(|c| !c.peer.is_closed())
            .count()
    }

    async fn connect(self: Arc<Self>, addr: SocketAddr) -> Result<(), ClientError> {
        let identity = self.identity.get();
        let conn = cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            self.cfg.max_pow_difficulty,
            cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
        )
        .await
        .map_err(|e| ClientError::NoProxy(e.to_string()))?;
        let routes: query::Routes = Arc::default();
        let payments: Arc<Mutex<Option<Address>>> = Arc::default();
        let (r, me, pay) = (routes.clone(), self.clone(), payments.clone());
        let on_packet = Arc::new(move |_: &Peer, data: Vec<u8>| {
            if let Some((rid, message)) = cocoon_wire::answer::decode_client(&data) {
                if let Some(route) = r.lock().get(&rid) {
                    let _ = route.send(message);
                }
            } else if let Ok(RequestPayment::Client { signed_payment, .. }) =
                cocoon_wire::decode::<RequestPayment>(&data)
            {
                let proxy = *pay.lock();
                if let Some(proxy) = proxy {
                    if let Err(e) = me.take_voucher(proxy, &signed_payment) {
                        tracing::error!("proxy {proxy} sent a bad charge voucher: {e}");
                    }
                }
            }
        });
        let peer = Peer::spawn(conn, cocoon_net::rpc::no_queries(), on_packet);
        let t = Duration::from_secs(30);
        let params = ClientParams {
            flags: (),
            client_owner_address: self.owner().to_raw().into_bytes(),
            is_test: Some(chain_client::is_test(self.chain.as_deref())),
            // 1 and 2 are COCOON's; 3 is 2 plus `proxy.cancelQuery`, which only a proxy that
            // settles on 3 gets (a reference proxy settles on 2).
            min_proto_version: Some(1),
            max_proto_version: Some(cocoon_wire::PROTO_WITH_CANCEL),
        };
        let connected: ClientConnectedToProxy = peer
            .request(
                &ClientRequest::ConnectToProxy {
                    params,
                    min_config_version: self.fake_ton.as_ref().map_or(0, |f| f.file.version as i32),
                },
                t,
            )
            .await
            .map_err(remote)?;
        let understands_cancel =
            connected.params.proto_version.unwrap_or(0) >= cocoon_wire::PROTO_WITH_CANCEL;
        let (proxy, client_sc) = match &self.fake_ton {
            None => {
                let (proxy, client_sc, init) = self.check_proxy(&connected).await?;
                self.ensure_contract(proxy, client_sc, &init).await?;
                (proxy, client_sc)
            }
            Some(fake) => self.fake_ton_proxy(fake, &connected)?,
        };
        *payments.lock() = Some(proxy);
        let auth: AuthorizationWithProxy = peer
            .request(
                &self.authorization(&connected.auth)?,
                Duration::from_secs(300),
            )
            .await
            .map_err(remote)?;
        match auth {
            AuthorizationWithProxy::Success { signed_payment, .. } => {
                self.take_voucher(proxy, &signed_payment)
                    .map_err(ClientError::Refused)?;
            }
            AuthorizationWithProxy::Failed { error_code, error } => {
                return Err(ClientError::from_proxy(
                    error_code,
                    String::from_utf8_lossy(&error),
                ))
            }
        }
        let mut conns = self.conns.lock();
        conns.retain(|c| c.addr != addr);
        conns.push(Arc::new(ProxyConn {
            addr,
            proxy,
            peer,
            client_sc,
            routes,
            understands_cancel,
        }));
        tracing::info!("connected to proxy {proxy} at {addr}");
        Ok(())
    }

    /// How to authorize, given what the proxy offers: the short way with our secret when the
    /// proxy holds its hash; on a fake-TON root, where every client's hash is SHA-256 of
    /// nothing (the reference's), the short way with nothing, else the long way (which the
    /// reference accepts at once there). On chain the long way (registering with the nonce in
    /// a message to our contract) is not offered by this client yet: the proxy is told our
    /// secret, and refuses it if our contract holds another hash.
    fn authorization(
        &self,
        offered: &cocoon_wire::client::ProxyConnectionAuth,
    ) -> Result<ClientRequest, ClientError> {
        use cocoon_wire::client::ProxyConnectionAuth as Auth;
        let ours: [u8; 32] = Sha256::digest(self.secret).into();
        let nothing: [u8; 32] = Sha256::digest([]).into();
        Ok(match (offered, self.fake_ton.is_some()) {
            (Auth::Short { secret_hash, .. }, _) if *secret_hash == ours => {
                ClientRequest::AuthorizeWithProxyShort {
                    data: self.secret.to_vec(),
                }
            }
            (Auth::Short { secret_hash, .. }, true) if *secret_hash == nothing => {
                ClientRequest::AuthorizeWithProxyShort { data: Vec::new() }
            }
            (_, true) => ClientRequest::AuthorizeWithProxyLong,
            (_, false) => ClientRequest::AuthorizeWithProxyShort {
                data: self.secret.to_vec(),
            },
        })
    }

    /// On a fake-TON root there is no chain to read a proxy's contract from; as a reference
    /// client does, we recompute the contracts from the root's code instead: our client contract
    /// at the proxy it names (always), and its proxy contract from its owner and key under our
    /// root (when the config names the root the reference roles use). A proxy naming other
    /// contracts is refused. Its account is kept for the figures.
    fn fake_ton_proxy(
        &self,
        fake: &FakeRoot,
        c: &ClientConnectedToProxy,
    ) -> Result<(Address, Address), ClientError> {
        let announced = AnnouncedProxy {
            owner: &c.params.proxy_owner_address,
            contract: &c.params.proxy_sc_address,
            public_key: &c.params.proxy_public_key,
            is_test: c.params.is_test,
            ours: &c.client_sc_address,
        };
        let root = (self.cfg.root != Address::new([0; 32])).then_some(&self.cfg.root);
        let (proxy, client_sc) = fake
            .contracts
            .check_proxy(announced, false, &self.owner(), root)
            .map_err(ClientError::Refused)?;
        let mut accounts = self.accounts.lock();
        let a = accounts.entry(proxy).or_default();
        a.proxy = proxy;
        a.client_contract = client_sc;
        a.price_per_token = fake.file.price_per_token;
        a.proxy_key = c.params.proxy_public_key;
        Ok((proxy, client_sc))
    }

    /// The proxy's contract must be registered in the root and hold the announced voucher key;
    /// our client contract must be where the proxy says.
    async fn check_proxy(
        &self,
        c: &ClientConnectedToProxy,
    ) -> Result<(Address, Address, ProxyInit), ClientError> {
        let p = chain_client::verify_proxy(
            self.chain()?.as_ref(),
            &self.cfg.root,
            &c.params.proxy_sc_address,
            &c.params.proxy_public_key,
            chain_client::Party::Client,
            self.owner(),
            &c.client_sc_address,
        )
        .await
        .map_err(ClientError::Refused)?;
        Ok((p.address, p.ours, p.data.init()))
    }

    /// Deploys, funds, stakes and sets the secret hash of our client contract as needed.
    async fn ensure_contract(
        &self,
        proxy: Address,
        client_sc: Address,
        init: &ProxyInit,
    ) -> Result<(), ClientError> {
        let secret_hash: [u8; 32] = Sha256::digest(self.secret).into();
        let stake = self.cfg.stake.max(init.params.min_client_stake);
        let current = self.client_data(&client_sc).await?;
        let mut msgs = Vec::new();
        match &current {
            None => {
                let deposit = self.cfg.deposit.max(stake);
                let si = init.client_state_init(proxy, self.owner())?;
                let body = messages::client::top_up(0, deposit, &self.owner())?;
                msgs.push(OutMessage {
                    init: Some(si),
                    ..OutMessage::transfer(client_sc, deposit.saturating_add(MIN_FEE), Some(body))
                });
                msgs.push(OutMessage::transfer(
                    client_sc,
                    MIN_FEE,
                    Some(messages::client::increase_stake(0, stake)?),
                ));
                msgs.push(OutMessage::transfer(
                    client_sc,
                    MIN_FEE,
                    Some(messages::client::change_secret_hash(0, &secret_hash)?),
                ));
            }
            Some(c) => {
                if c.state != ContractState::Open {
                    return Err(ClientError::Refused(format!(
                        "our client contract {client_sc} is {:?}; reopen it with a top-up or use a new wallet",
                        c.state
                    )));
                }
                if c.stake < stake && c.balance >= stake {
                    msgs.push(OutMessage::transfer(
                        client_sc,
                        MIN_FEE,
                        Some(messages::client::increase_stake(0, stake)?),
                    ));
                }
                if c.secret_hash != secret_hash {
                    msgs.push(OutMessage::transfer(
                        client_sc,
                        MIN_FEE,
                        Some(messages::client::change_secret_hash(0, &secret_hash)?),
                    ));
                }
            }
        }
        if !msgs.is_empty() {
            tracing::info!(
                "preparing client contract {client_sc} ({} messages)",
                msgs.len()
            );
            self.send(&msgs).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(c) = self.client_data(&client_sc).await? {
                    if c.secret_hash == secret_hash && c.stake >= stake.min(c.balance) {
                        break;
                    }
                }
                if std::time::Instant::now() > deadline {
                    return Err(ClientError::Refused(format!(
                        "client contract {client_sc} not ready after 60 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let c = self.client_data(&client_sc).await?.ok_or_else(|| {
            ClientError::Refused(format!(
                "client contract {client_sc} has no state after deployment"
            ))
        })?;
        let mut accounts = self.accounts.lock();
        let a = accounts.entry(proxy).or_default();
        a.proxy = proxy;
        a.client_contract = client_sc;
        a.committed_tokens = c.tokens_used;
        a.balance = c.balance;
        a.stake = c.stake;
        a.price_per_token = c.init.price_per_token;
        a.proxy_key = init.proxy_public_key;
        Ok(())
    }

    async fn client_data(&self, client_sc: &Address) -> Result<Option<ClientData>, ClientError> {
        Ok(match self.chain()?.account(client_sc).await?.data {
            Some(d) => Some(ClientData::parse(&d)?),
            None => None,
        })
    }

    /// Checks a charge voucher like the client contract will and keeps it if newer.
    fn take_voucher(
        self: &Arc<Self>,
        proxy: Address,
        payment: &SignedPayment,
    ) -> Result<(), String> {
        let SignedPayment::Signed { data } = payment else {
            return Ok(());
        };
        let mut accounts = self.accounts.lock();
        let a = accounts
            .get_mut(&proxy)
            .ok_or("voucher from an unknown proxy")?;
        // As the client contract will check it: the proxy's key, the charge op, our contract.
        let tokens = match &self.fake_ton {
            // A reference proxy's payment, checked as a reference client checks it.
            Some(_) => reference::check_signed_payment(
                data,
                reference::OP_CLIENT_CHARGE_SIGNED,
                &a.proxy_key,
                &a.client_contract,
            )?,
            None => {
                let body = cocoon_chain::cells::from_boc(data).map_err(|e| e.to_string())?;
                let v = SignedVoucher::parse(&body, false).map_err(|e| e.to_string())?;
                v.verify(&a.proxy_key, op::CLIENT_CHARGE_SIGNED, &a.client_contract)
                    .map_err(|e| e.to_string())?;
                v.voucher.counter
            }
        };
        if tokens < a.voucher_tokens {
            return Err(format!(
                "charge went backwards: {tokens} < {}",
                a.voucher_tokens
            ));
        }
        a.voucher_tokens = tokens;
        a.voucher_body = Some(data.clone());
        // Only go to the chain when the cached state says something is due.
        let due = Funding::of(
            a.voucher_tokens,
            a.committed_tokens,
            a.price_per_token,
            a.balance,
            a.stake,
        );
        drop(accounts);
        // Nothing to commit or top up without a chain (a fake-TON root).
        if !(due.commit || due.top_up) || self.chain.is_none() {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.keep_funded(proxy).await {
                tracing::warn!("keeping the client contract funded failed: {e}");
            }
        });
        Ok(())
    }

    /// Commits the newest charge once half the stake is used; tops up by one stake when the
    /// paid balance minus uncommitted use falls under half the stake.
    pub async fn keep_funded(&self, proxy: Address) -> Result<(), ClientError> {
        let _guard = self.funding.lock().await;
        let a = match self.accounts.lock().get(&proxy) {
            Some(a) => a.clone(),
            None => return Ok(()),
        };
        let Some(c) = self.client_data(&a.client_contract).await? else {
            return Ok(());
        };
        let due = Funding::of(
            a.voucher_tokens,
            c.tokens_used,
            c.init.price_per_token,
            c.balance,
            c.stake,
        );
        let mut msgs = Vec::new();
        if due.commit {
            if let Some(body) = &a.voucher_body {
                msgs.push(signed_body(a.client_contract, body)?);
            }
        }
        if due.top_up {
            msgs.push(OutMessage::transfer(
                a.client_contract,
                c.stake.saturating_add(MIN_FEE),
                Some(messages::client::top_up(0, c.stake, &self.owner())?),
            ));
        }
        if !msgs.is_empty() {
            self.send(&msgs).await?;
        }
        if let Some(c) = self.client_data(&a.client_contract).await? {
            if let Some(acc) = self.accounts.lock().get_mut(&proxy) {
                acc.committed_tokens = c.tokens_used;
                acc.balance = c.balance;
                acc.stake = c.stake;
            }
        }
        Ok(())
    }

    /// Commits the newest charge voucher at every proxy now.
    pub async fn commit_all(self: &Arc<Self>) -> Result<(), ClientError> {
        // Ask each proxy for its newest voucher first (the last ones may still be in flight).
        for c in self.live() {
            let status: cocoon_wire::client::ClientPaymentStatus = c
                .peer
                .request(&ClientRequest::UpdatePaymentStatus, Duration::from_secs(10))
                .await
                .map_err(remote)?;
            if let Err(e) = self.take_voucher(c.proxy, &status.signed_payment) {
                tracing::warn!("proxy {} payment status: {e}", c.proxy);
            }
        }
        let accounts = self.accounts();
        for a in accounts {
            if let Some(body) = &a.voucher_body {
                if a.voucher_tokens > a.committed_tokens {
                    self.send(&[signed_body(a.client_contract, body)?]).await?;
                }
            }
        }
        Ok(())
    }

    fn live(&self) -> Vec<Arc<ProxyConn>> {
        self.conns
            .lock()
            .iter()
            .filter(|c| !c.peer.is_closed())
            .cloned()
            .collect()
    }

    /// Sends one OpenAI request (`path` is `/v1/chat/completions` or `/v1/completions`).
    /// Requests take turns over the live proxies (load spreads); one a proxy refuses before
    /// any work (no worker for the model there, all busy, no credit there; nothing billed, no
    /// answer begun) goes to the next. A lost connection is not retried: the request may have
    /// run. It returns once the answer's head arrived; when every proxy refused, the most
    /// telling refusal is the error.
    pub async fn query(
        &self,
        model: &str,
        path: &str,
        body: Vec<u8>,
        max_coefficient: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<QueryStream, ClientError> {
        let conns = self.live();
        if conns.is_empty() {
            return Err(ClientError::NoProxy("no proxy connection is alive".into()));
        }
        // The completion limit the body names, for the proxy's reservation (it reads the body
        // too and takes the smaller).
        let max_tokens = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                ["max_completion_tokens", "max_tokens"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|n| n.as_u64()))
            })
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0);
        // Encoded once; each attempt gets a copy.
        let query = cocoon_wire::encode(&HttpRequest {
            method: b"POST".to_vec(),
            url: path.as_bytes().to_vec(),
            http_version: b"HTTP/1.1".to_vec(),
            headers: vec![cocoon_wire::common::HttpHeader {
                name: b"Content-Type".to_vec(),
                value: b"application/json".to_vec(),
            }],
            payload: body,
        });
        let started = std::time::Instant::now();
        let start = self.next_proxy.fetch_add(1, Ordering::Relaxed) % conns.len();
        let mut refused: Option<ClientError> = None;
        for (i, conn) in conns
            .iter()
            .cycle()
            .skip(start)
            .take(conns.len())
            .enumerate()
        {
            let job = query::Job {
                model: model.to_string(),
                query: query.clone(),
                max_coefficient: max_coefficient.unwrap_or(self.cfg.max_coefficient),
                max_tokens,
                timeout: timeout.unwrap_or(self.cfg.timeout),
            };
            let mut q = query::start(
                &conn.peer,
                &conn.routes,
                job,
                conn.understands_cancel,
                self.metrics.clone(),
            );
            let (e, tokens) = match q.wait_head().await {
                Ok(()) => return Ok(q),
                Err(failure) => failure,
            };
            // A refusal the next proxy gets a chance at is not the app's request failing.
            let last = i + 1 == conns.len();
            if tokens.total_tokens_used == 0 && worth_another_proxy(&e) && !last {
                tracing::debug!("proxy {} refused ({e}); trying the next", conn.addr);
                self.metrics.error("failover");
                refused = Some(match refused {
                    Some(r) => more_telling(r, e),
                    None => e,
                });
                continue;
            }
            // The last proxy's refusal: report the most telling of all of them.
            let e = match refused {
                Some(r) if worth_another_proxy(&e) => more_telling(r, e),
                _ => e,
            };
            self.metrics.request(false, started.elapsed().as_secs_f64());
            self.metrics.error(&format!("http_{}", e.status()));
            return Err(e);
        }
        Err(refused.unwrap_or_else(|| ClientError::NoProxy("no proxy answered".into())))
    }

    /// The `/jsonstats` document: money at each proxy and request figures.
    pub fn jsonstats(&self) -> serde_json::Value {
        let accounts = self.accounts();
        let ok = self
            .metrics
            .requests
            .get_or_create(&cocoon_observe::Kind::of("ok"))
            .get();
        let failed = self
            .metrics
            .requests
            .get_or_create(&cocoon_observe::Kind::of("error"))
            .get();
        let spent: u128 = accounts
            .iter()
            .map(|a| a.voucher_tokens as u128 * a.price_per_token)
            .sum();
        let committed: u128 = accounts
            .iter()
            .map(|a| a.committed_tokens as u128 * a.price_per_token)
            .sum();
        let balance: u128 = accounts.iter().map(|a| a.balance).sum();
        let stake: u128 = accounts.iter().map(|a| a.stake).sum();
        for a in &accounts {
            let k = cocoon_observe::Kind::of(&a.client_contract.to_raw());
            self.metrics
                .balances
                .get_or_create(&k)
                .set(a.balance as f64);
            self.metrics
                .vouchers
                .get_or_create(&k)
                .set(a.voucher_tokens as i64);
        }
        let secs = *self.latency_total.lock();
        let rows: Vec<serde_json::Value> = accounts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "proxy": a.proxy.to_raw(),
                    "client_contract": a.client_contract.to_raw(),
                    "balance_ton": cocoon_chain::format_ton(a.balance),
                    "stake_ton": cocoon_chain::format_ton(a.stake),
                    "tokens_charged": a.voucher_tokens,
                    "tokens_committed": a.committed_tokens,
                })
            })
            .collect();
        serde_json::json!({
            "role": "client",
            "subtitle": format!("owner {}", self.owner()),
            "figures": {
                "requests": ok,
                "errors": failed,
                "active_requests": self.metrics.active.get(),
                "tokens_billed": self.metrics.tokens.get_or_create(&cocoon_observe::Kind::of("billed")).get(),
                "spent_ton": cocoon_chain::format_ton(spent),
                "committed_ton": cocoon_chain::format_ton(committed),
                "balance_ton": cocoon_chain::format_ton(balance),
                "stake_ton": cocoon_chain::format_ton(stake),
                "proxies_connected": self.connected(),
            },
            "latency_ms_mean": if ok == 0 { 0.0 } else { secs * 1000.0 / ok as f64 },
            "tables": {"accounts": rows},
        })
    }

    /// Models served behind the connected proxies.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let mut out: HashMap<String, ModelInfo> = HashMap::new();
        for c in self.live() {
            let types: WorkerTypesV2 = c
                .peer
                .request(&ClientRequest::GetWorkerTypesV2, Duration::from_secs(10))
                .await
                .map_err(remote)?;
            for t in types.types {
                let id = String::from_utf8_lossy(&t.name).into_owned();
                let entry = out.entry(id.clone()).or_insert(ModelInfo {
                    id,
                    workers: vec![],
                });
                entry.workers.extend(
                    t.workers
                        .iter()
                        .map(|w| (w.coefficient, w.active_requests, w.max_active_requests)),
                );
            }
        }
        let mut v: Vec<ModelInfo> = out.into_values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// Asks every proxy for the final refund voucher and submits it: the contract charges the
    /// last use and returns everything else to the wallet. Returns the contracts closed.
    pub async fn refund_all(&self) -> Result<Vec<Address>, ClientError> {
        let mut closed = Vec::new();
        for c in self.live() {
            let refund: Refund = c
                .peer
                .request(&ClientRequest::RequestRefund, Duration::from_secs(30))
                .await
                .map_err(remote)?;
            match refund {
                Refund::Granted { data } => {
                    self.send(&[signed_body(c.client_sc, &data)?]).await?;
                    closed.push(c.client_sc);
                }
                Refund::Rejected { active_queries } => {
                    return Err(ClientError::Remote {
                        status: 409,
                        message: format!(
                            "proxy {} refused the refund: {active_queries} queries still running",
                            c.proxy
                        ),
                    })
                }
            }
        }
        Ok(closed)
    }
}

/// The worker catalogue of every proxy the root lists (model identity → coefficients of its
/// connected workers), asked without authorizing: what `cocoon quote` prices with. Proxies
/// that cannot be reached are skipped (their error is returned beside the catalogue).
pub async fn catalogue(
    root: &cocoon_chain::contracts::RootData,
    policy: PolicyKind,
    quotes: &dyn QuoteProvider,
) -> Result<(HashMap<String, Vec<u32>>, Vec<String>), ClientError> {
    let mut p = Policy::new(policy);
    p.allowed_image_hashes = root.proxy_hashes.clone();
    let identity = Identity::new(quotes, "cocoon-quote", p).map_err(ClientError::Io)?;
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    let mut errors = Vec::new();
    for proxy in &root.proxies {
        let Some(addr) = proxy.endpoint_client() else {
            continue;
        };
        let conn = match cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            28,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("proxy {} at {addr}: {e}", proxy.address));
                continue;
            }
        };
        let peer = Peer::spawn(
            conn,
            cocoon_net::rpc::no_queries(),
            Arc::new(|_: &Peer, _: Vec<u8>| {}),
        );
        match peer
            .request::<WorkerTypesV2>(&ClientRequest::GetWorkerTypesV2, Duration::from_secs(10))
            .await
        {
            Ok(types) => {
                for t in types.types {
                    out.entry(String::from_utf8_lossy(&t.name).into_owned())
                        .or_default()
                        .extend(t.workers.iter().map(|w| w.coefficient.max(0) as u32));
                }
            }
            Err(e) => errors.push(format!("proxy {} at {addr}: {e}", proxy.address)),
        }
        peer.close();
    }
    Ok((out, errors))
}

/// What keeping a client contract funded calls for.
#[derive(Debug, PartialEq, Eq)]
struct Funding {
    /// Uncommitted charges reach half the stake: commit the newest voucher.
    commit: bool,
    /// The balance left after them falls under half the stake: top up by a stake.
    top_up: bool,
}

impl Funding {
    /// Judges `voucher_tokens` charged against `committed` on chain at `price`, with the
    /// contract's `balance` and `stake` (nanotons); saturating, never overflowing.
    fn of(voucher_tokens: u64, committed: u64, price: u128, balance: u128, stake: u128) -> Self {
        let uncommitted = (voucher_tokens.saturating_sub(committed) as u128).saturating_mul(price);
        Funding {
            commit: uncommitted > 0 && uncommitted.saturating_mul(2) >= stake,
            top_up: balance.saturating_sub(uncommitted).saturating_mul(2) < stake,
        }
    }
}

/// A message carrying a body the proxy signed (a voucher or a refund, as a BOC) to our client
/// contract.
fn signed_body(client_sc: Address, boc: &[u8]) -> Result<OutMessage, ClientError> {
    let body = cocoon_chain::cells::from_boc(boc)?;
    Ok(OutMessage::transfer(client_sc, MIN_FEE, Some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_proxys_own_refusals_go_to_the_next_and_the_most_telling_is_reported() {
        let r = |status: u16| ClientError::Remote {
            status,
            message: format!("refused {status}"),
        };
        for status in [402, 404, 409, 503] {
            assert!(worth_another_proxy(&r(status)), "{status}");
        }
        for status in [400, 401, 413, 499, 500, 502, 504] {
            assert!(!worth_another_proxy(&r(status)), "{status}");
        }
        // A lost connection: the request may have run and been billed.
        assert!(!worth_another_proxy(&ClientError::NoProxy("closed".into())));
        let pick = |a: u16, b: u16| more_telling(r(a), r(b)).status();
        assert_eq!(pick(404, 402), 402);
        assert_eq!(pick(402, 404), 402);
        assert_eq!(pick(404, 503), 503);
        assert_eq!(pick(503, 409), 409);
        assert_eq!(pick(404, 404), 404);
    }

    #[test]
    fn a_proxy_error_code_is_an_error_status_or_502() {
        let status = |code| match ClientError::from_proxy(code, "x") {
            ClientError::Remote { status, .. } => status,
            other => panic!("{other}"),
        };
        assert_eq!(status(402), 402);
        assert_eq!(status(599), 599);
        // A code from the wire never becomes a success or wraps around u16.
        assert_eq!(status(200), 502);
        assert_eq!(status(65_736), 502);
        assert_eq!(status(-1), 502);
        assert_eq!(status(0), 502);
    }

    #[test]
    fn funding_is_due_at_half_the_stake() {
        let f = |tokens, balance| Funding::of(tokens, 0, 10, balance, 1_000);
        // Nothing charged, balance at the stake: nothing to do.
        assert_eq!(
            f(0, 1_000),
            Funding {
                commit: false,
                top_up: false
            }
        );
        // One token short of half the stake, then exactly half.
        assert!(!f(49, 10_000).commit);
        assert!(f(50, 10_000).commit);
        // The balance after charges: exactly half the stake is enough, one nanoton less is not.
        assert!(!f(50, 1_000).top_up);
        assert!(Funding::of(50, 0, 10, 999, 1_000).top_up);
        // Extreme values saturate instead of overflowing.
        let huge = Funding::of(u64::MAX, 0, u128::MAX, u128::MAX, u128::MAX);
        assert!(huge.commit && huge.top_up);
    }
}
