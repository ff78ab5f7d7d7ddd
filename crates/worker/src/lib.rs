//! The worker runner.
//!
//! A worker dials each proxy (proof of work + mutual RA-TLS, the proxy's image hash checked
//! against the root contract), announces its owner, model, coefficient and capacity, checks
//! that the proxy's ledger has not been rolled back (the proxy must know at least every token
//! the worker was ever promised or paid), then serves `proxy.runQuery` with its engine,
//! streaming parts and returning the engine's token usage. It keeps the newest payout voucher
//! per proxy on disk and claims it on chain once the unclaimed amount passes a threshold.
//! Lost connections are retried with exponential backoff.

#![forbid(unsafe_code)]

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::client::{self as chain_client, ChainClient};
use cocoon_chain::contracts::Params;
use cocoon_chain::contracts::WorkerData;
use cocoon_chain::keys::Keypair;
use cocoon_chain::messages::{op, MIN_FEE};
use cocoon_chain::price::{adjusted_parts, TokenUsage};
use cocoon_chain::reference_contracts::{self as reference, AnnouncedProxy, FakeRoot};
use cocoon_chain::voucher::SignedVoucher;
use cocoon_chain::wallet::{OutMessage, Wallet};
use cocoon_chain::Address;
use cocoon_engine::engine::{Engine, EngineError, Event};
use cocoon_engine::openai::Formatter;
use cocoon_engine::request::EngineRequest;
use cocoon_net::identity::Renewing;
use cocoon_net::rpc::{Peer, RpcError};
use cocoon_tee::{Policy, PolicyKind, QuoteProvider};
use cocoon_wire::answer::{self, AnswerMessage, Timings};
use cocoon_wire::common::{HttpRequest, SignedPayment, TokensUsed};
use cocoon_wire::proxy::{CancelQuery, ProxyRequest, RequestPayment};
use cocoon_wire::worker::{
    CompareBalanceResult, ConnectedToProxy, EnabledDisabled, NewCoefficient, WorkerParams,
    WorkerRequest,
};
use futures_util::StreamExt;
use tokio::sync::watch;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// State directory (newest vouchers per proxy).
    pub dir: PathBuf,
    /// The root contract.
    pub root: Address,
    /// Proxies to serve; empty: every proxy registered in the root.
    pub proxies: Vec<SocketAddr>,
    /// Model identity `name@sha256` (must be allowed by the root).
    pub model: String,
    /// Price coefficient, thousandths.
    pub coefficient: u32,
    /// Most requests at once.
    pub max_active: u32,
    /// Attestation policy for proxies.
    pub proxy_policy: PolicyKind,
    /// Most proof-of-work bits this worker will solve.
    pub max_pow_difficulty: u32,
    /// Claim on chain once this many nanotons are unclaimed.
    pub payout_threshold: u128,
    /// Where `/healthz`, `/metrics`, `/jsonstats` and the dashboard are served (None: nowhere).
    pub http_listen: Option<SocketAddr>,
}

/// Why a proxy was refused or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Network or attestation.
    #[error("connection: {0}")]
    Net(#[from] cocoon_net::NetError),
    /// A query failed.
    #[error("proxy: {0}")]
    Rpc(#[from] RpcError),
    /// The chain.
    #[error("chain: {0}")]
    Chain(#[from] cocoon_chain::ChainError),
    /// The proxy cannot be trusted (rolled back, unregistered, wrong keys).
    #[error("refusing proxy: {0}")]
    Refused(String),
    /// Malformed message.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// The newest voucher from one proxy, kept on disk.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HeldVoucher {
    /// Tokens it covers.
    pub tokens: u64,
    /// The voucher message body (hex BOC).
    pub body_hex: String,
    /// Tokens already claimed on chain.
    pub claimed: u64,
}

/// Runtime controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Accepting requests.
    pub enabled: bool,
    /// Current coefficient.
    pub coefficient: u32,
}

/// A running worker.
pub struct Worker {
    cfg: WorkerConfig,
    /// The chain the root and our contracts live on; `None` in fake-TON mode.
    chain: Option<Arc<dyn ChainClient>>,
    /// The reference's fake-TON root (no chain at all), when running in that mode.
    fake_ton: Option<FakeRoot>,
    wallet: (Keypair, Wallet),
    /// The wallet's address, computed once at start.
    owner: Address,
    engine: Arc<dyn Engine>,
    identity: Arc<Renewing>,
    controls: watch::Sender<Controls>,
    held: Mutex<HashMap<Address, HeldVoucher>>,
    running: Mutex<HashMap<[u8; 32], tokio::sync::oneshot::Sender<()>>>,
    /// Proxies currently connected (proxy contract → socket address).
    pub connected: Mutex<HashMap<Address, SocketAddr>>,
    stopped: watch::Sender<bool>,
    /// Each proxy's parameters (fee per token, multipliers), from its contract, read at the
    /// handshake.
    proxy_params: Mutex<HashMap<Address, Params>>,
    /// Held while a claim is signed and taken, so two claims never share a wallet seqno.
    claiming: tokio::sync::Mutex<()>,
    /// When the vouchers were last written to disk.
    last_save: Mutex<std::time::Instant>,
    /// Prometheus metrics (also drawn by the dashboard).
    pub metrics: Arc<cocoon_observe::Metrics>,
    latency_sum: Mutex<f64>,
    /// Where the status page listens, once bound.
    pub http_addr: Mutex<Option<SocketAddr>>,
    /// Each checked proxy's voucher key and our worker contract there.
    proxy_keys: Mutex<HashMap<Address, ([u8; 32], Address)>>,
}

impl Worker {
    /// Builds a worker; call [`Worker::run`] to connect.
    pub fn new(
        cfg: WorkerConfig,
        chain: Arc<dyn ChainClient>,
        wallet: (Keypair, Wallet),
        engine: Arc<dyn Engine>,
        quotes: Arc<dyn QuoteProvider>,
        proxy_image_hashes: Vec<[u8; 32]>,
    ) -> Result<Arc<Self>, WorkerError> {
        Self::build(
            cfg,
            Some(chain),
            None,
            wallet,
            engine,
            quotes,
            proxy_image_hashes,
        )
    }

    /// A worker on a reference fake-TON root (`fake`), as a reference worker runs with
    /// `--disable-ton`: it serves the proxies the file lists (or those configured), a test
    /// network where proxies' image hashes are not checked and nothing is claimed on chain;
    /// the proxies' payments are checked as a reference worker checks them and kept.
    pub fn new_fake_ton(
        cfg: WorkerConfig,
        fake: cocoon_chain::fake_ton::FakeTon,
        wallet: (Keypair, Wallet),
        engine: Arc<dyn Engine>,
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<Arc<Self>, WorkerError> {
        let root = FakeRoot::new(fake)?;
        Self::build(cfg, None, Some(root), wallet, engine, quotes, Vec::new())
    }

    fn build(
        cfg: WorkerConfig,
        chain: Option<Arc<dyn ChainClient>>,
        fake_ton: Option<FakeRoot>,
        wallet: (Keypair, Wallet),
        engine: Arc<dyn Engine>,
        quotes: Arc<dyn QuoteProvider>,
        proxy_image_hashes: Vec<[u8; 32]>,
    ) -> Result<Arc<Self>, WorkerError> {
        let mut policy = Policy::new(cfg.proxy_policy);
        policy.allowed_image_hashes = proxy_image_hashes;
        let identity =
            Renewing::start(quotes, "cocoon-worker", policy).map_err(WorkerError::Protocol)?;
        let held = held_vouchers(&cfg.dir)?;
        let (controls, _) = watch::channel(Controls {
            enabled: true,
            coefficient: cfg.coefficient,
        });
        let owner = wallet.1.address()?;
        Ok(Arc::new(Worker {
            cfg,
            chain,
            fake_ton,
            wallet,
            owner,
            engine,
            identity,
            controls,
            held: Mutex::new(held),
            running: Mutex::new(HashMap::new()),
            connected: Mutex::new(HashMap::new()),
            stopped: watch::channel(false).0,
            proxy_params: Mutex::new(HashMap::new()),
            claiming: tokio::sync::Mutex::new(()),
            last_save: Mutex::new(std::time::Instant::now() - Duration::from_secs(60)),
            metrics: Arc::new(cocoon_observe::Metrics::new("cocoon_worker")),
            latency_sum: Mutex::new(0.0),
            http_addr: Mutex::new(None),
            proxy_keys: Mutex::new(HashMap::new()),
        }))
    }

    /// The owner (payout) address.
    pub fn owner(&self) -> Address {
        self.owner
    }

    /// Vouchers held, per proxy contract.
    pub fn held(&self) -> HashMap<Address, HeldVoucher> {
        self.held.lock().clone()
    }

    /// Switches request acceptance on or off, at every connected proxy.
    pub fn set_enabled(&self, enabled: bool) {
        self.controls.send_modify(|c| c.enabled = enabled);
    }

    /// Changes the price coefficient at every connected proxy.
    pub fn set_coefficient(&self, coefficient: u32) {
        self.controls
            .send_modify(|c| c.coefficient = coefficient.max(1));
    }

    /// Drops every proxy connection at once and stops reconnecting, as if the process died
    /// (running requests end without a final answer).
    pub fn kill(&self) {
        self.stopped.send_replace(true);
    }

    /// What `proxy` pays per token, once its contract was read.
    fn fee(&self, proxy: &Address) -> Option<u128> {
        self.proxy_params
            .lock()
            .get(proxy)
            .map(|p| p.worker_fee_per_token)
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// The `/jsonstats` document.
    pub fn jsonstats(&self) -> serde_json::Value {
        let held = self.held();
        let worth = |tokens: fn(&HeldVoucher) -> u64| -> u128 {
            held.iter()
                .map(|(p, h)| (tokens(h) as u128).saturating_mul(self.fee(p).unwrap_or(0)))
                .fold(0, u128::saturating_add)
        };
        let earned = worth(|h| h.tokens);
        let claimed = worth(|h| h.claimed);
        let c = *self.controls.borrow();
        let proxies: Vec<serde_json::Value> = self
            .connected
            .lock()
            .iter()
            .map(|(p, a)| {
                let h = held.get(p).cloned().unwrap_or_default();
                serde_json::json!({"proxy": p.to_raw(), "address": a.to_string(), "voucher_tokens": h.tokens, "claimed_tokens": h.claimed})
            })
            .collect();
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
        let secs = self.metrics_latency_sum();
        serde_json::json!({
            "role": "worker",
            "subtitle": format!("owner {} · model {}", self.owner(), self.cfg.model),
            "figures": {
                "requests": ok,
                "errors": failed,
                "active_requests": self.metrics.active.get(),
                "tokens_served": self.metrics.tokens.get_or_create(&cocoon_observe::Kind::of("completion")).get(),
                "proxies_connected": proxies.len(),
                "coefficient": c.coefficient,
                "enabled": c.enabled,
                "earned_ton": cocoon_chain::format_ton(earned),
                "claimed_ton": cocoon_chain::format_ton(claimed),
            },
            "latency_ms_mean": if ok == 0 { 0.0 } else { secs * 1000.0 / ok as f64 },
            "tables": {"proxies": proxies},
        })
    }

    fn metrics_latency_sum(&self) -> f64 {
        *self.latency_sum.lock()
    }

    /// Serves every configured proxy (or every proxy in the root) until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        if let Some(addr) = self.cfg.http_listen {
            match cocoon_net::listen(addr, "the status page").await {
                Ok(listener) => {
                    *self.http_addr.lock() = listener.local_addr().ok();
                    let me = self.clone();
                    let router = cocoon_observe::router(
                        self.metrics.clone(),
                        Arc::new(move || me.jsonstats()),
                    );
                    tokio::spawn(async move {
                        let _ = cocoon_observe::serve(listener, router).await;
                    });
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        let targets = if !self.cfg.proxies.is_empty() {
            self.cfg.proxies.clone()
        } else if let Some(fake) = &self.fake_ton {
            fake.file.proxies.iter().map(|p| p.workers).collect()
        } else {
            match self.read_root().await {
                Ok(root) => root
                    .proxies
                    .iter()
                    .filter_map(|p| p.endpoint_worker())
                    .collect(),
                Err(e) => {
                    tracing::error!("reading the root for proxies failed: {e}");
                    vec![]
                }
            }
        };
        let mut tasks = Vec::new();
        for addr in targets {
            tasks.push(tokio::spawn(self.clone().serve_proxy(addr)));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Keeps one proxy connection alive, reconnecting with backoff (1 s doubling to 30 s).
    pub async fn serve_proxy(self: Arc<Self>, addr: SocketAddr) {
        let mut backoff = Duration::from_secs(1);
        while !self.is_stopped() {
            match self.clone().session(addr).await {
                Ok(()) => {
                    tracing::info!("proxy {addr} closed the connection");
                    backoff = Duration::from_secs(1);
                }
                Err(e) => tracing::warn!("proxy {addr}: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One session with the proxy at `addr`: connect, check the proxy (its contract, its key,
    /// that it knows every token we hold or were paid), then serve its queries until the
    /// connection ends. Returns why the proxy was refused, or `Ok` when it closed.
    pub async fn session(self: Arc<Self>, addr: SocketAddr) -> Result<(), WorkerError> {
        let identity = self.identity.get();
        let conn = cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            self.cfg.max_pow_difficulty,
            cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
        )
        .await?;
        let proxy_contract: Arc<Mutex<Option<Address>>> = Arc::new(Mutex::new(None));
        let me = self.clone();
        let pc = proxy_contract.clone();
        // As in COCOON, every request and every answer is a one-way packet.
        let on_packet = Arc::new(move |peer: &Peer, data: Vec<u8>| {
            if let Ok(request) = cocoon_wire::decode::<ProxyRequest>(&data) {
                let proxy = *pc.lock();
                tokio::spawn(me.clone().run_query(peer.clone(), proxy, request));
            } else if let Ok(CancelQuery { request_id }) = cocoon_wire::decode::<CancelQuery>(&data)
            {
                if let Some(stop) = me.running.lock().remove(&request_id) {
                    let _ = stop.send(());
                }
            } else if let Ok(RequestPayment::Worker { signed_payment, .. }) =
                cocoon_wire::decode::<RequestPayment>(&data)
            {
                let proxy = *pc.lock();
                if let Some(proxy) = proxy {
                    if let Err(e) = me.take_voucher(proxy, &signed_payment) {
                        tracing::error!("proxy {proxy} sent a bad voucher: {e}; disconnecting");
                        peer.close();
                    }
                }
            }
        });
        let peer = Peer::spawn(conn, cocoon_net::rpc::no_queries(), on_packet);
        let t = Duration::from_secs(30);

        // 1. Announce.
        let c = *self.controls.borrow();
        let params = WorkerParams {
            flags: (),
            worker_owner_address: self.owner().to_raw().into_bytes(),
            model: self.cfg.model.clone().into_bytes(),
            coefficient: c.coefficient as i32,
            is_test: Some(chain_client::is_test(self.chain.as_deref())),
            proxy_cnt: Some(1),
            max_active_requests: Some(self.cfg.max_active as i32),
            // 1 and 2 are COCOON's; 3 is 2 plus `proxy.cancelQuery`, which a proxy sends only
            // to a worker that announced it (a reference proxy settles on 2).
            min_proto_version: Some(1),
            max_proto_version: Some(cocoon_wire::PROTO_WITH_CANCEL),
        };
        let connected: ConnectedToProxy = peer
            .request(&WorkerRequest::ConnectToProxy { params }, t)
            .await?;
        let (proxy, worker_sc) = match &self.fake_ton {
            None => self.check_proxy(&connected).await?,
            Some(fake) => self.fake_ton_proxy(fake, &connected)?,
        };
        *proxy_contract.lock() = Some(proxy);

        // 2. Compare balances: the proxy must know every token we were promised or paid.
        let onchain_paid = match self.chain {
            Some(_) => self.paid_on_chain(&worker_sc).await?,
            None => 0,
        };
        let held = self.held.lock().get(&proxy).map(|h| h.tokens).unwrap_or(0);
        let request = WorkerRequest::CompareBalanceWithProxy {
            tokens_committed_to_blockchain: onchain_paid,
            tokens_committed_to_db: held,
            max_tokens: held.max(onchain_paid),
        };
        let result: CompareBalanceResult = peer.request(&request, t).await?;
        if result.error_code != 0 || result.tokens_committed_to_db < held.max(onchain_paid) {
            peer.close();
            return Err(WorkerError::Refused(format!(
                "proxy {proxy} rolled back: it knows {} tokens, we hold {held} and were paid {onchain_paid} on chain",
                result.tokens_committed_to_db
            )));
        }
        self.take_voucher(proxy, &result.signed_payment)
            .map_err(WorkerError::Refused)?;

        // 3. Ready.
        let is_disabled = !self.controls.borrow().enabled;
        let _: cocoon_wire::worker::HandshakeCompleted = peer
            .request(&WorkerRequest::ProxyHandshakeComplete { is_disabled }, t)
            .await?;
        self.connected.lock().insert(proxy, addr);
        let _counted = self.metrics.peer("proxy");
        tracing::info!("serving proxy {proxy} at {addr}");

        // Forward control changes until the connection ends.
        let mut controls = self.controls.subscribe();
        let mut last = *controls.borrow();
        let mut stopped = self.stopped.subscribe();
        loop {
            tokio::select! {
                _ = peer.closed() => break,
                _ = stopped.wait_for(|s| *s) => {
                    peer.close();
                    break;
                }
                changed = controls.changed() => {
                    if changed.is_err() { break; }
                    let now = *controls.borrow();
                    if now.enabled != last.enabled {
                        let _ = peer.send(cocoon_wire::encode(&EnabledDisabled { disabled: i32::from(!now.enabled) }));
                    }
                    if now.coefficient != last.coefficient {
                        let _ = peer.send(cocoon_wire::encode(&NewCoefficient { new_coefficient: now.coefficient as i32 }));
                    }
                    last = now;
                }
            }
        }
        self.connected.lock().remove(&proxy);
        Ok(())
    }

    /// The chain, or an error saying there is none (fake-TON mode).
    fn chain(&self) -> Result<&Arc<dyn ChainClient>, WorkerError> {
        self.chain.as_ref().ok_or_else(|| {
            WorkerError::Refused(
                "this worker runs on a fake-TON root: there is no chain to read or claim on".into(),
            )
        })
    }

    async fn read_root(&self) -> Result<cocoon_chain::contracts::RootData, WorkerError> {
        Ok(chain_client::read_root(self.chain()?.as_ref(), &self.cfg.root).await?)
    }

    /// On a fake-TON root there is no chain to read a proxy's contract from; as a reference
    /// worker does, we recompute the contracts from the root's code instead: our worker contract
    /// at the proxy it names (always), and its proxy contract from its owner and key under our
    /// root (when the config names the root the reference roles use). A proxy naming other
    /// contracts is refused. Billing counts tokens with the root's params (the file's prices,
    /// the reference's multipliers of 1.0).
    fn fake_ton_proxy(
        &self,
        fake: &FakeRoot,
        c: &ConnectedToProxy,
    ) -> Result<(Address, Address), WorkerError> {
        let announced = AnnouncedProxy {
            owner: &c.params.proxy_owner_address,
            contract: &c.params.proxy_sc_address,
            public_key: &c.params.proxy_public_key,
            is_test: c.params.is_test,
            ours: &c.worker_sc_address,
        };
        let root = (self.cfg.root != Address::new([0; 32])).then_some(&self.cfg.root);
        let (proxy, worker_sc) = fake
            .contracts
            .check_proxy(announced, true, &self.owner(), root)
            .map_err(WorkerError::Refused)?;
        self.proxy_keys
            .lock()
            .insert(proxy, (c.params.proxy_public_key, worker_sc));
        self.proxy_params
            .lock()
            .insert(proxy, fake.contracts.params_view());
        Ok((proxy, worker_sc))
    }

    /// Checks the proxy's claims against the chain: its contract is registered in the root,
    /// holds the voucher key it announced, and our worker contract is where it says.
    async fn check_proxy(&self, c: &ConnectedToProxy) -> Result<(Address, Address), WorkerError> {
        let chain_client::VerifiedProxy {
            address: proxy,
            data,
            ours: worker_sc,
        } = chain_client::verify_proxy(
            self.chain()?.as_ref(),
            &self.cfg.root,
            &c.params.proxy_sc_address,
            &c.params.proxy_public_key,
            chain_client::Party::Worker,
            self.owner(),
            &c.worker_sc_address,
        )
        .await
        .map_err(WorkerError::Refused)?;
        self.proxy_keys
            .lock()
            .insert(proxy, (data.proxy_public_key, worker_sc));
        self.proxy_params.lock().insert(proxy, data.params.clone());
        Ok((proxy, worker_sc))
    }

    /// Accepts a newer voucher from `proxy` (checked like the worker contract will), refuses one
    /// going backwards, and claims on chain when due.
    fn take_voucher(
        self: &Arc<Self>,
        proxy: Address,
        payment: &SignedPayment,
    ) -> Result<(), String> {
        let SignedPayment::Signed { data } = payment else {
            return Ok(());
        };
        // Check it as the worker contract will: the proxy's key, the payout op, our contract.
        let expected = self.proxy_keys.lock().get(&proxy).copied();
        let Some((key, worker_sc)) = expected else {
            return Err("voucher from a proxy not yet checked".into());
        };
        let (tokens, target) = match &self.fake_ton {
            // A reference proxy's payment, checked as a reference worker checks it.
            Some(_) => {
                let op = reference::OP_WORKER_PAYOUT_SIGNED;
                let tokens = reference::check_signed_payment(data, op, &key, &worker_sc)?;
                (tokens, worker_sc)
            }
            None => {
                let body = cocoon_chain::cells::from_boc(data).map_err(|e| e.to_string())?;
                let voucher = SignedVoucher::parse(&body, false).map_err(|e| e.to_string())?;
                voucher
                    .verify(&key, op::WORKER_PAYOUT_SIGNED, &worker_sc)
                    .map_err(|e| e.to_string())?;
                (voucher.voucher.counter, voucher.voucher.target)
            }
        };
        let mut held = self.held.lock();
        let entry = held.entry(proxy).or_default();
        if tokens < entry.tokens {
            return Err(format!(
                "voucher went backwards: {tokens} < {}",
                entry.tokens
            ));
        }
        entry.tokens = tokens;
        entry.body_hex = hex::encode(data);
        let unclaimed = entry.tokens.saturating_sub(entry.claimed) as u128;
        // Written at most once a second: a voucher lost in a crash is not money lost, since
        // the proxy hands the newest one back at the next handshake (compareBalance).
        let mut last = self.last_save.lock();
        if last.elapsed() >= Duration::from_secs(1) {
            *last = std::time::Instant::now();
            save_held(&self.cfg.dir, &held);
        }
        drop(last);
        drop(held);
        if self.chain.is_none() {
            // Nothing to claim on: a fake-TON payment is only checked and kept.
            return Ok(());
        }
        let fee = self.fee(&proxy).unwrap_or(u128::MAX);
        if unclaimed.saturating_mul(fee) < self.cfg.payout_threshold {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.claim_if_due(proxy, target).await {
                tracing::warn!("payout claim failed: {e}");
            }
        });
        Ok(())
    }

    /// Claims the newest voucher from `proxy` if the unclaimed amount reaches the threshold.
    pub async fn claim_if_due(
        &self,
        proxy: Address,
        worker_sc: Address,
    ) -> Result<bool, WorkerError> {
        let (tokens, body_hex, claimed) = {
            let held = self.held.lock();
            match held.get(&proxy) {
                Some(h) => (h.tokens, h.body_hex.clone(), h.claimed),
                None => return Ok(false),
            }
        };
        let fee = match self.fee(&proxy) {
            Some(fee) => fee,
            None => {
                chain_client::read_proxy(self.chain()?.as_ref(), &proxy)
                    .await?
                    .params
                    .worker_fee_per_token
            }
        };
        if (tokens.saturating_sub(claimed) as u128).saturating_mul(fee) < self.cfg.payout_threshold
            || tokens <= claimed
        {
            return Ok(false);
        }
        // Claimed already by someone else with this voucher (`cocoon worker payout`, a previous
        // run that crashed before saving): record it instead of paying a fee for a refusal.
        let paid = self.paid_on_chain(&worker_sc).await?;
        if paid >= tokens {
            if let Some(h) = self.held.lock().get_mut(&proxy) {
                h.claimed = h.claimed.max(paid);
            }
            save_held(&self.cfg.dir, &self.held());
            return Ok(false);
        }
        self.claim(proxy, worker_sc, tokens, &body_hex).await?;
        Ok(true)
    }

    /// Tokens our worker contract `worker_sc` has been paid for (0 before it is deployed).
    async fn paid_on_chain(&self, worker_sc: &Address) -> Result<u64, WorkerError> {
        Ok(match self.chain()?.account(worker_sc).await?.data {
            Some(d) => WorkerData::parse(&d)?.tokens_paid,
            None => 0,
        })
    }

    /// Submits the newest voucher from `proxy` now (deploying the worker contract if needed).
    pub async fn claim_now(&self, proxy: Address) -> Result<u64, WorkerError> {
        let (tokens, body_hex) = {
            let held = self.held.lock();
            let h = held
                .get(&proxy)
                .ok_or_else(|| WorkerError::Refused(format!("no voucher from {proxy}")))?;
            (h.tokens, h.body_hex.clone())
        };
        let bytes = hex::decode(&body_hex).map_err(|e| {
            WorkerError::Refused(format!("the voucher held from {proxy} is not hex: {e}"))
        })?;
        let body = cocoon_chain::cells::from_boc(&bytes)?;
        let target = SignedVoucher::parse(&body, false)?.voucher.target;
        self.claim(proxy, target, tokens, &body_hex).await?;
        Ok(tokens)
    }

    async fn claim(
        &self,
        proxy: Address,
        worker_sc: Address,
        tokens: u64,
        body_hex: &str,
    ) -> Result<(), WorkerError> {
        let body = cocoon_chain::cells::from_boc(
            &hex::decode(body_hex).map_err(|e| WorkerError::Protocol(e.to_string()))?,
        )?;
        let _claiming = self.claiming.lock().await;
        if self.held().get(&proxy).is_some_and(|h| h.claimed >= tokens) {
            return Ok(()); // a claim that waited for the lock already covered these tokens
        }
        let mut msg = OutMessage::transfer(worker_sc, MIN_FEE, Some(body));
        let chain = self.chain()?;
        if chain.account(&worker_sc).await?.status != "active" {
            let data = chain_client::read_proxy(chain.as_ref(), &proxy).await?;
            let init = data.init();
            msg.init = Some(init.worker_state_init(proxy, self.owner())?);
        }
        chain_client::send_transfer(chain.as_ref(), &self.wallet.1, &self.wallet.0, &[msg]).await?;
        if let Some(h) = self.held.lock().get_mut(&proxy) {
            h.claimed = h.claimed.max(tokens);
        }
        save_held(&self.cfg.dir, &self.held());
        tracing::info!("claimed payout voucher for {tokens} tokens from proxy {proxy}");
        Ok(())
    }

    /// Runs one `proxy.runQuery(Ex)` packet on the engine and answers as COCOON does, in
    /// one-way packets naming the request: the `http.response` head, the body in parts as the
    /// engine produces them (ready text coalesced), and the adjusted token counts on the last
    /// part; or an error, which always carries the tokens used before it.
    async fn run_query(self: Arc<Self>, peer: Peer, proxy: Option<Address>, request: ProxyRequest) {
        let (query, coefficient, timeout, request_id) = match request {
            ProxyRequest::RunQuery {
                query,
                coefficient,
                timeout,
                request_id,
                ..
            }
            | ProxyRequest::RunQueryEx {
                query,
                coefficient,
                timeout,
                request_id,
                ..
            } => (query, coefficient, timeout, request_id),
        };
        let started = unix_now();
        let send = |m: AnswerMessage| peer.send(answer::proxy_message(request_id, m)).is_ok();
        let timings = move || Timings {
            start: started,
            end: unix_now(),
        };
        let fail = |e: EngineError, tokens: TokensUsed| AnswerMessage::Error {
            code: e.http_status() as i32,
            message: cocoon_engine::openai::error_json(&e)
                .to_string()
                .into_bytes(),
            end: (tokens, timings()),
        };
        // Billing counts adjusted tokens: the coefficient the proxy runs us at, the root's
        // multipliers (as its contract states them).
        let coefficient = u32::try_from(coefficient.max(0)).unwrap_or(u32::MAX);
        let params = proxy
            .and_then(|p| self.proxy_params.lock().get(&p).cloned())
            .unwrap_or_else(Params::local_default);
        let adjusted = |usage: &TokenUsage| tokens_used(usage, coefficient, &params);
        let refuse = |code: u16, why: String| AnswerMessage::Error {
            code: i32::from(code),
            message: cocoon_engine::openai::error_body(code, &why)
                .to_string()
                .into_bytes(),
            end: (TokensUsed::default(), timings()),
        };
        let running = self.running.lock().len();
        if running >= self.cfg.max_active as usize {
            send(fail(
                EngineError::Overloaded(running),
                TokensUsed::default(),
            ));
            return;
        }
        let http = match cocoon_wire::decode::<HttpRequest>(&query) {
            Ok(h) => h,
            Err(e) => {
                send(refuse(
                    400,
                    format!("the query is not an http.request: {e}"),
                ));
                return;
            }
        };
        let url = String::from_utf8_lossy(&http.url).into_owned();
        let parsed = match url.split('?').next().unwrap_or("") {
            "/v1/chat/completions" => EngineRequest::parse_chat(&http.payload),
            "/v1/completions" => EngineRequest::parse_completion(&http.payload),
            other => {
                send(refuse(404, format!("unsupported endpoint {other}")));
                return;
            }
        };
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                send(fail(EngineError::Request(e), TokensUsed::default()));
                return;
            }
        };
        let mut fmt = Formatter::new(&request);
        let content_type = if fmt.is_stream() {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut generation = match self.engine.generate(request) {
            Ok(g) => g,
            Err(e) => {
                send(fail(e, TokensUsed::default()));
                return;
            }
        };
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        self.running.lock().insert(request_id, stop_tx);
        let clock = std::time::Instant::now();
        self.metrics.active.inc();
        // As the reference worker's head: the body follows in parts, so its length is not
        // known yet (an HTTP peer downstream relays it chunked).
        let start = format!("{started:.6}");
        let head = answer::http_head(
            200,
            "OK",
            &[
                ("Content-Type", content_type),
                ("X-Cocoon-Worker-Start", &start),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        let mut alive = send(AnswerMessage::Head { head, end: None });
        let limit = timeout.as_timeout(Duration::from_secs(3600));
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut parts: u64 = 0;
        // What a cut-off generation used: the text parts already sent, one completion token
        // each (the engine's own count arrives only with its end).
        let delivered = |parts: u64| {
            adjusted(&TokenUsage {
                completion: parts,
                ..Default::default()
            })
        };
        let mut finished: Option<TokenUsage> = None;
        // An event taken off the engine while coalescing text, handled on the next turn.
        let mut pending = None;
        while alive {
            let event = match pending.take() {
                Some(event) => event,
                None => tokio::select! {
                    event = generation.next() => event,
                    _ = &mut stop_rx => break,
                    _ = &mut deadline => {
                        send(fail(EngineError::Timeout(limit), delivered(parts)));
                        break;
                    }
                },
            };
            match event {
                Some(Ok(Event::Text(t))) => {
                    // Send what is ready now as one part: text the engine already produced
                    // travels together (no waiting for more, so no added latency).
                    let mut bytes = fmt.text(&t).unwrap_or_default();
                    parts += 1;
                    while bytes.len() < 64 * 1024 {
                        match futures_util::FutureExt::now_or_never(generation.next()) {
                            Some(Some(Ok(Event::Text(t)))) => {
                                bytes.extend(fmt.text(&t).unwrap_or_default());
                                parts += 1;
                            }
                            Some(other) => {
                                pending = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    if !bytes.is_empty() {
                        alive = send(AnswerMessage::Part { bytes, end: None });
                    }
                }
                Some(Ok(Event::Done {
                    usage,
                    finish_reason,
                })) => {
                    // The end: the body's tail with the adjusted counts on it.
                    let tail = fmt.done(&usage, finish_reason);
                    let u = engine_usage(&usage);
                    send(AnswerMessage::Part {
                        bytes: tail,
                        end: Some((adjusted(&u), timings())),
                    });
                    finished = Some(u);
                    break;
                }
                Some(Err(e)) => {
                    send(fail(e, delivered(parts)));
                    break;
                }
                None => {
                    send(fail(
                        EngineError::Internal("engine ended without usage".into()),
                        delivered(parts),
                    ));
                    break;
                }
            }
        }
        self.running.lock().remove(&request_id);
        // Dropping the generation here cancels it at the engine.
        drop(generation);
        self.metrics.active.dec();
        let secs = clock.elapsed().as_secs_f64();
        self.metrics.request(finished.is_some(), secs);
        match finished {
            Some(u) => {
                self.metrics.add_tokens("prompt", u.prompt);
                self.metrics.add_tokens("completion", u.completion);
                *self.latency_sum.lock() += secs;
            }
            None => self.metrics.error("request_failed"),
        }
    }
}

/// The engine's usage as the price formula's counts.
fn engine_usage(usage: &cocoon_engine::engine::Usage) -> TokenUsage {
    TokenUsage {
        prompt: usage.prompt_tokens,
        cached: usage.cached_tokens,
        completion: usage.completion_tokens,
        reasoning: usage.reasoning_tokens,
    }
}

/// The `tokensUsed` a worker reports, as the reference worker counts it: each category adjusted
/// by the coefficient and its multiplier separately, and their sum as the billed total.
pub fn tokens_used(usage: &TokenUsage, coefficient: u32, params: &Params) -> TokensUsed {
    let [prompt, cached, completion, reasoning] = adjusted_parts(usage, coefficient, params);
    TokensUsed {
        prompt_tokens_used: prompt,
        cached_tokens_used: cached,
        completion_tokens_used: completion,
        reasoning_tokens_used: reasoning,
        total_tokens_used: prompt
            .saturating_add(cached)
            .saturating_add(completion)
            .saturating_add(reasoning),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn held_path(dir: &std::path::Path) -> PathBuf {
    dir.join("vouchers.json")
}

/// The vouchers a worker's state directory holds, per proxy contract (empty when there is no
/// file yet). A file that does not parse is an error naming it, never read as empty: the next
/// save would overwrite the vouchers it holds.
pub fn held_vouchers(
    dir: &std::path::Path,
) -> Result<HashMap<Address, HeldVoucher>, cocoon_chain::ChainError> {
    Ok(cocoon_chain::files::read_json(&held_path(dir))?.unwrap_or_default())
}

fn save_held(dir: &std::path::Path, held: &HashMap<Address, HeldVoucher>) {
    if let Err(e) = cocoon_chain::files::write_json(&held_path(dir), held) {
        tracing::error!("saving vouchers: {e}");
    }
}
