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

mod payments;
mod query;
mod session;
mod stats;

pub use payments::{held_vouchers, payout_message};
pub use query::tokens_used;

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
use cocoon_chain::messages::MIN_FEE;
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
    /// The operator lets it accept requests.
    pub enabled: bool,
    /// Current coefficient.
    pub coefficient: u32,
    /// The engine answers its health check.
    pub engine_up: bool,
}

impl Controls {
    /// Whether proxies may send requests: the operator allows it and the engine answers.
    pub fn serving(&self) -> bool {
        self.enabled && self.engine_up
    }
}

/// How often the engine's health is checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A running worker.
pub struct Worker {
    cfg: WorkerConfig,
    /// The chain the root and our contracts live on; `None` in fake-TON mode.
    chain: Option<Arc<dyn ChainClient>>,
    /// The reference's fake-TON root (no chain at all), when running in that mode.
    fake_ton: Option<FakeRoot>,
    /// The owner's wallet: our worker contracts' owner (paid there), and it keeps the machine
    /// wallet funded.
    wallet: (Keypair, Wallet),
    /// COCOON's machine wallet (the network's code): this worker's own key in its state
    /// directory, owned by `wallet`; it submits the payout vouchers, as a reference worker's
    /// `CocoonWallet` does.
    machine: cocoon_chain::cocoon_wallet::MachineWallet,
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
    /// A save of the held vouchers is scheduled (the newest reaches disk within a second).
    save_scheduled: std::sync::atomic::AtomicBool,
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
            engine_up: true,
        });
        let owner = wallet.1.address()?;
        let machine = cocoon_chain::cocoon_wallet::MachineWallet::of_state_dir(&cfg.dir, owner)?;
        Ok(Arc::new(Worker {
            cfg,
            chain,
            fake_ton,
            wallet,
            machine,
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
            save_scheduled: std::sync::atomic::AtomicBool::new(false),
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

    /// The machine wallet's address (it submits our payout vouchers).
    pub fn machine_wallet_address(&self) -> Address {
        self.machine.address()
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

    /// Checks the engine once: while it does not answer, proxies see this worker disabled (no
    /// request is sent to it); when it answers again, it is enabled again by itself.
    pub async fn check_engine(&self) {
        let up = match self.engine.health().await {
            Ok(()) => true,
            Err(e) => {
                if self.controls.borrow().engine_up {
                    tracing::warn!("the engine does not answer, withdrawing from proxies: {e}");
                }
                false
            }
        };
        self.controls.send_if_modified(|c| {
            if c.engine_up == up {
                return false;
            }
            if up {
                tracing::info!("the engine answers again, serving proxies");
            }
            c.engine_up = up;
            true
        });
    }

    /// Serves every configured proxy (or every proxy in the root) until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        // The engine's health first: a worker whose engine is down joins disabled.
        self.check_engine().await;
        let me = self.clone();
        tokio::spawn(async move {
            while !me.is_stopped() {
                tokio::time::sleep(HEALTH_INTERVAL).await;
                me.check_engine().await;
            }
        });
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
}
