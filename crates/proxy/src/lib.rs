//! The proxy runner.
//!
//! A proxy listens for workers and for clients on separate ports, both over proof of work and
//! mutual RA-TLS. Workers are admitted when their image hash and model are in the root
//! contract; clients when their client contract (derived from their owner address) is deployed,
//! open, and holds the hash of the secret they present. For each client query the proxy
//! reserves the most it can cost, picks a worker, relays the streamed answer, prices the
//! engine's usage with COCOON's formula, records the charge in its signed ledger (fsync'd), and
//! only then sends both parties their new cumulative vouchers. It commits its ledger hash on
//! chain (`save_state`) periodically.

#![forbid(unsafe_code)]

mod clients;
mod credit;
pub mod ledger;
mod onchain;
mod payments;
pub mod pool;
mod query;
mod stats;
mod workers;

pub use onchain::save_state_now;
use onchain::{refresh_chain_loop, save_state_loop};
use payments::voucher_loop;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_chain::client::{self as chain_client, ChainClient};
use cocoon_chain::cocoon_wallet::MachineWallet;
use cocoon_chain::contracts::{address_of, ClientData, ProxyInit, RootData};
use cocoon_chain::keys::Keypair;
use cocoon_chain::messages::{self, op, MIN_FEE};
use cocoon_chain::reference_contracts::ReferenceContracts;
use cocoon_chain::voucher::Voucher;
use cocoon_chain::wallet::{OutMessage, Wallet};
use cocoon_chain::Address;
use cocoon_net::identity::Renewing;
use cocoon_net::rpc::Peer;
use cocoon_tee::{Policy, PolicyKind, QuoteProvider};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use ledger::{Entry, Ledger};
pub use pool::{Pool, WorkerSlot};

/// Requests that waited in the proxy's queue for a free worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct QueueWaits {
    /// Requests that waited (whether they got a worker or gave up).
    pub waited: u64,
    /// Their total wait, milliseconds.
    pub total_ms: f64,
    /// The longest wait, milliseconds.
    pub max_ms: f64,
}

/// How many requests wait per model, by default, while every worker for it is busy.
pub const DEFAULT_QUEUE_PER_MODEL: usize = 1024;

/// How many connections each listener holds at once, by default.
pub const DEFAULT_CONNECTIONS_PER_LISTENER: usize = 4096;

/// How a proxy runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// State directory (voucher key, ledger).
    pub dir: PathBuf,
    /// Where workers connect.
    pub worker_listen: SocketAddr,
    /// Where clients connect.
    pub client_listen: SocketAddr,
    /// The root contract.
    pub root: Address,
    /// Attestation policy for workers (`fake_tdx` on a local network, `tdx` in production).
    pub worker_policy: PolicyKind,
    /// Proof-of-work bits asked of every dialer.
    pub pow_difficulty: u32,
    /// How often the ledger hash is committed on chain (when it changed).
    pub save_state_interval: Duration,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Most requests that wait per model for a free worker slot; one more is refused with 503.
    pub queue_per_model: usize,
    /// Most connections each listener (workers', clients') holds at once, handshakes included;
    /// one more is closed as soon as it is accepted.
    pub connections_per_listener: usize,
    /// What each client's or worker's connection may hold: queries running at once, bytes
    /// waiting to be written to it (see [`cocoon_net::rpc::Limits`]).
    pub peer_limits: cocoon_net::rpc::Limits,
    /// Where `/healthz`, `/metrics`, `/jsonstats` and the dashboard are served (None: nowhere).
    pub http_listen: Option<SocketAddr>,
    /// Earnings (nanotons) at which the proxy asks its contract, from its machine wallet, to pay
    /// them to the owner, as a reference proxy does ([`DEFAULT_PAYOUT_THRESHOLD`]); 0: never.
    pub payout_threshold: u128,
}

/// A reference proxy's `min_withdraw_amount`: 10 TON.
pub const DEFAULT_PAYOUT_THRESHOLD: u128 = 10 * cocoon_chain::TON;

/// Errors starting a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The chain refused or failed.
    #[error("chain: {0}")]
    Chain(#[from] cocoon_chain::ChainError),
    /// The ledger is unusable.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// Files, sockets.
    #[error("{0}")]
    Io(String),
}

/// A worker's track record at this proxy, kept across reconnects and restarts
/// (`DIR/reputation.json`) and shown on the dashboard.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reputation {
    /// Requests it answered.
    pub served: u64,
    /// Requests it failed (errors, dropped connections, overruns).
    pub failed: u64,
    /// Mean latency of answered requests, milliseconds.
    pub mean_latency_ms: f64,
}

impl Reputation {
    fn record(&mut self, ok: bool, latency_ms: f64) {
        if ok {
            self.mean_latency_ms =
                (self.mean_latency_ms * self.served as f64 + latency_ms) / (self.served + 1) as f64;
            self.served += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// Workers' records from `DIR/reputation.json`. One that does not parse is moved aside to
/// `reputation.json.unreadable` (kept, not overwritten by the next save) and the records
/// start over: they are statistics, not money.
fn load_reputation(dir: &Path) -> HashMap<Address, Reputation> {
    let path = dir.join("reputation.json");
    match cocoon_chain::files::read_json(&path) {
        Ok(records) => records.unwrap_or_default(),
        Err(e) => {
            let aside = dir.join("reputation.json.unreadable");
            tracing::warn!("{e}; moved to {} and starting over", aside.display());
            let _ = std::fs::rename(&path, &aside);
            HashMap::new()
        }
    }
}

fn save_reputation(dir: &Path, rep: &HashMap<Address, Reputation>) {
    if let Err(e) = cocoon_chain::files::write_json(&dir.join("reputation.json"), rep) {
        tracing::warn!("saving reputation: {e}");
    }
}

/// How long finished requests' vouchers may wait to share one signature.
pub const VOUCHER_BATCH: Duration = Duration::from_millis(10);

#[derive(Default)]
struct VoucherQueue {
    clients: HashMap<Address, (Peer, [u8; 32])>,
    workers: HashMap<Address, (Peer, [u8; 32], Address)>,
}

#[derive(Default)]
struct ClientBook {
    /// Tokens reserved by running requests, per client owner.
    reserved: HashMap<Address, u64>,
    /// Running requests per client owner.
    active: HashMap<Address, u32>,
    /// Last on-chain snapshot of each client contract.
    onchain: HashMap<Address, (ClientData, Instant)>,
    /// The charge the proxy last submitted for each client itself, and when (not again within
    /// a minute while the chain catches up).
    submitted: HashMap<Address, (u64, Instant)>,
}

/// A running proxy's shared state.
pub struct Proxy {
    cfg: ProxyConfig,
    /// The chain the root and the contracts live on; `None` on a fake-TON root.
    chain: Option<Arc<dyn ChainClient>>,
    /// On a fake-TON root: the reference's contracts (addresses, signed payments as the
    /// reference signs them) and the credit every client has there.
    reference: Option<ReferenceContracts>,
    wallet: (Keypair, Wallet),
    /// COCOON's machine wallet: this proxy's own key, owned by `wallet`; it sends `save_state`,
    /// clients' charges and the earnings request (as a reference proxy does from its
    /// `CocoonWallet`).
    machine: MachineWallet,
    voucher_key: Keypair,
    init: ProxyInit,
    address: Address,
    root: Mutex<RootData>,
    ledger: Mutex<Ledger>,
    /// One fsync at a time; requests that wait meanwhile are covered by the next one.
    syncing: tokio::sync::Mutex<()>,
    /// Vouchers leave in ledger order (cumulative counters never seem to go backwards).
    sending: Mutex<()>,
    pool: Mutex<Pool>,
    worker_peers: Mutex<HashMap<u64, Peer>>,
    /// Where each running request's answer messages from its worker go.
    streams: Mutex<HashMap<[u8; 32], mpsc::UnboundedSender<cocoon_wire::answer::AnswerMessage>>>,
    book: Mutex<ClientBook>,
    addresses: Mutex<HashMap<(Address, bool), Address>>,
    reputation: Mutex<HashMap<Address, Reputation>>,
    vouchers: Mutex<VoucherQueue>,
    voucher_wake: tokio::sync::Notify,
    cancels: Mutex<HashMap<[u8; 32], tokio::sync::oneshot::Sender<()>>>,
    next_conn: AtomicU64,
    /// Long authorizations waiting for their registration on chain (each polls the chain API).
    long_authorizations: tokio::sync::Semaphore,
    /// The contract's and the wallet's money, as last read from the chain.
    money: Mutex<Option<OnChainMoney>>,
    /// When the proxy last asked its contract to pay the earnings out (at most once a minute).
    last_payout: Mutex<Option<Instant>>,
    /// Requests that waited for a worker: how many, and their total and longest wait.
    queue_waits: Mutex<QueueWaits>,
    /// Prometheus metrics (also drawn by the dashboard).
    pub metrics: Arc<cocoon_observe::Metrics>,
}

/// The proxy's money on chain, nanotons, read with the root every 10 seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnChainMoney {
    /// The proxy contract's balance.
    pub contract_balance: u128,
    /// The proxy's own stake in it.
    pub stake: u128,
    /// Its earnings, ready for the owner (`cocoon proxy payout`).
    pub earnings: u128,
    /// The rest: the clients' money (each client contract counts its share) and what is left
    /// of the fees messages brought.
    pub clients: u128,
    /// The operator wallet's balance (it deploys the contract and keeps the machine wallet
    /// funded).
    pub wallet_balance: u128,
    /// The machine wallet's balance (it pays for `save_state`).
    pub machine_wallet_balance: u128,
}

/// Handle of a started proxy.
pub struct RunningProxy {
    /// Shared state.
    pub proxy: Arc<Proxy>,
    /// Bound worker address.
    pub worker_addr: SocketAddr,
    /// Bound client address.
    pub client_addr: SocketAddr,
    /// Bound status address (dashboard, metrics).
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops the listeners and background tasks (connections end when dropped by peers).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        save_reputation(&self.proxy.cfg.dir, &self.proxy.reputation());
        for p in self.proxy.worker_peers.lock().values() {
            p.close();
        }
    }
}

/// The proxy contract a voucher key and owner give under `root` (what [`Proxy::start`] deploys).
pub fn proxy_init(
    root: &RootData,
    root_address: Address,
    owner: Address,
    voucher_key: &[u8; 32],
) -> ProxyInit {
    ProxyInit {
        owner,
        proxy_public_key: *voucher_key,
        root: root_address,
        params: root.params.clone(),
        head: root.head,
        client_code: root.codes.client.clone(),
        worker_code: root.codes.worker.clone(),
    }
}

/// The voucher key of a proxy state directory (created on first use).
pub fn voucher_key(dir: &Path) -> Result<Keypair, ProxyError> {
    let seed = cocoon_chain::keys::load_or_create_seed(&dir.join("voucher-key.hex"))?;
    Ok(Keypair::from_seed(seed))
}

/// Waits until `address` is an active contract (the chain may apply messages asynchronously).
pub async fn wait_active(
    chain: &dyn ChainClient,
    address: &Address,
    timeout: Duration,
) -> Result<(), ProxyError> {
    let deadline = Instant::now() + timeout;
    loop {
        if chain.account(address).await?.status == "active" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ProxyError::Io(format!(
                "contract {address} not active after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Proxy {
    /// Reads the root, deploys the proxy contract with the minimum stake if needed, opens the
    /// ledger and starts both listeners and the `save_state` loop.
    pub async fn start(
        cfg: ProxyConfig,
        chain: Arc<dyn ChainClient>,
        wallet: (Keypair, Wallet),
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<RunningProxy, ProxyError> {
        let root = chain_client::read_root(chain.as_ref(), &cfg.root).await?;
        let voucher_key = voucher_key(&cfg.dir)?;
        let owner = wallet.1.address()?;
        let init = proxy_init(&root, cfg.root, owner, &voucher_key.public_key());
        let state_init = init.state_init(&root.codes.proxy)?;
        let address = address_of(&state_init)?;
        if chain.account(&address).await?.status != "active" {
            Self::deploy(chain.as_ref(), &wallet, &root, address, state_init).await?;
        }
        let machine = MachineWallet::of_state_dir(&cfg.dir, owner)?;
        machine
            .deploy(chain.as_ref(), (&wallet.1, &wallet.0))
            .await?;
        Self::start_with(
            cfg,
            Some(chain),
            None,
            root,
            init,
            address,
            voucher_key,
            wallet,
            machine,
            quotes,
        )
        .await
    }

    /// A proxy on a reference fake-TON root (`fake`), as a reference proxy runs with
    /// `--disable-ton`: no chain, so nothing is deployed or committed; its contract and every
    /// party's are the reference's (derived from the file's code under `cfg.root`, which must
    /// be the root the reference roles are configured with), and it signs payments as the
    /// reference signs them; every client has the reference's fake credit; a test network where
    /// image hashes and models are not checked (the reference does not check them either).
    pub async fn start_fake_ton(
        cfg: ProxyConfig,
        fake: cocoon_chain::fake_ton::FakeTon,
        wallet: (Keypair, Wallet),
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<RunningProxy, ProxyError> {
        let reference = ReferenceContracts::of_fake_ton(&fake)?;
        let voucher_key = voucher_key(&cfg.dir)?;
        let owner = wallet.1.address()?;
        let root = RootData {
            owner: fake.root_owner.unwrap_or(Address::new([0; 32])),
            version: fake.version,
            proxy_hashes: Vec::new(),
            worker_hashes: Vec::new(),
            models: Default::default(),
            proxies: Vec::new(),
            last_proxy_seqno: fake.proxies.iter().map(|p| p.seqno).max().unwrap_or(0),
            params: reference.params_view(),
            head: reference.root_params().head,
            codes: reference.codes(),
        };
        let init = proxy_init(&root, cfg.root, owner, &voucher_key.public_key());
        let address = reference.proxy_address(&owner, &voucher_key.public_key(), &cfg.root)?;
        // No chain: the wallet is named (in /jsonstats) but never used.
        let machine = MachineWallet::of_state_dir(&cfg.dir, owner)?;
        Self::start_with(
            cfg,
            None,
            Some(reference),
            root,
            init,
            address,
            voucher_key,
            wallet,
            machine,
            quotes,
        )
        .await
    }

    /// Deploys our proxy contract with the root's minimum stake.
    async fn deploy(
        chain: &dyn ChainClient,
        wallet: &(Keypair, Wallet),
        root: &RootData,
        address: Address,
        state_init: cocoon_chain::tycho_types::models::StateInit,
    ) -> Result<(), ProxyError> {
        let stake = root.params.min_proxy_stake;
        tracing::info!("deploying proxy contract {address} with a stake of {stake} nanotons");
        let body = messages::proxy::increase_stake(0, stake)?;
        let msg = OutMessage {
            init: Some(state_init),
            ..OutMessage::transfer(address, stake + MIN_FEE, Some(body))
        };
        chain_client::send_transfer(chain, &wallet.1, &wallet.0, &[msg]).await?;
        wait_active(chain, &address, Duration::from_secs(60)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_with(
        cfg: ProxyConfig,
        chain: Option<Arc<dyn ChainClient>>,
        reference: Option<ReferenceContracts>,
        root: RootData,
        init: ProxyInit,
        address: Address,
        voucher_key: Keypair,
        wallet: (Keypair, Wallet),
        machine: MachineWallet,
        quotes: Arc<dyn QuoteProvider>,
    ) -> Result<RunningProxy, ProxyError> {
        let ledger = Ledger::open(&cfg.dir.join("ledger.jsonl"), voucher_key.clone())?;

        let mut worker_policy = Policy::new(cfg.worker_policy);
        worker_policy.allowed_image_hashes = root.worker_hashes.clone();
        let worker_identity = Renewing::start(quotes.clone(), "cocoon-proxy", worker_policy)
            .map_err(ProxyError::Io)?;
        // Clients run on app developers' machines, usually outside a TEE: any RA-TLS cert.
        let client_identity = Renewing::start(quotes, "cocoon-proxy", Policy::new(PolicyKind::Any))
            .map_err(ProxyError::Io)?;

        let proxy = Arc::new(Proxy {
            cfg: cfg.clone(),
            chain,
            reference,
            wallet,
            machine,
            voucher_key,
            init,
            address,
            root: Mutex::new(root),
            ledger: Mutex::new(ledger),
            syncing: tokio::sync::Mutex::new(()),
            sending: Mutex::new(()),
            pool: Mutex::new(Pool::default()),
            worker_peers: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            book: Mutex::new(ClientBook::default()),
            addresses: Mutex::new(HashMap::new()),
            reputation: Mutex::new(load_reputation(&cfg.dir)),
            vouchers: Mutex::new(VoucherQueue::default()),
            voucher_wake: tokio::sync::Notify::new(),
            cancels: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            long_authorizations: tokio::sync::Semaphore::new(
                clients::MAX_PENDING_LONG_AUTHORIZATIONS,
            ),
            last_payout: Mutex::new(None),
            money: Mutex::new(None),
            queue_waits: Mutex::new(QueueWaits::default()),
            metrics: Arc::new(cocoon_observe::Metrics::new("cocoon_proxy")),
        });
        let io = |e: std::io::Error| ProxyError::Io(e.to_string());
        let wl = cocoon_net::listen(cfg.worker_listen, "workers")
            .await
            .map_err(io)?;
        let cl = cocoon_net::listen(cfg.client_listen, "clients")
            .await
            .map_err(io)?;
        let worker_addr = wl.local_addr().map_err(io)?;
        let client_addr = cl.local_addr().map_err(io)?;
        let mut http_addr = None;
        let mut extra = Vec::new();
        if let Some(addr) = cfg.http_listen {
            let listener = cocoon_net::listen(addr, "the status page")
                .await
                .map_err(io)?;
            http_addr = Some(listener.local_addr().map_err(io)?);
            let p = proxy.clone();
            let router =
                cocoon_observe::router(proxy.metrics.clone(), Arc::new(move || p.jsonstats()));
            extra.push(tokio::spawn(async move {
                let _ = cocoon_observe::serve(listener, router).await;
            }));
        }
        let mut tasks = vec![
            tokio::spawn(workers::accept_loop(proxy.clone(), wl, worker_identity)),
            tokio::spawn(clients::accept_loop(proxy.clone(), cl, client_identity)),
            tokio::spawn(voucher_loop(proxy.clone())),
        ];
        if proxy.chain.is_some() {
            tasks.push(tokio::spawn(save_state_loop(proxy.clone())));
            tasks.push(tokio::spawn(refresh_chain_loop(proxy.clone())));
        }
        tasks.extend(extra);
        tracing::info!("proxy {address}: workers on {worker_addr}, clients on {client_addr}");
        Ok(RunningProxy {
            http_addr,
            proxy,
            worker_addr,
            client_addr,
            tasks,
        })
    }

    /// The proxy contract's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The machine wallet's address (it sends `save_state`).
    pub fn machine_wallet_address(&self) -> Address {
        self.machine.address()
    }

    /// The voucher public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.voucher_key.public_key()
    }

    /// Tokens charged to `owner` on disk (what its vouchers may promise).
    pub fn client_total(&self, owner: &Address) -> u64 {
        self.ledger
            .lock()
            .durable()
            .clients
            .get(owner)
            .copied()
            .unwrap_or(0)
    }

    /// Tokens earned by worker `owner` on disk.
    pub fn worker_total(&self, owner: &Address) -> u64 {
        self.ledger
            .lock()
            .durable()
            .workers
            .get(owner)
            .copied()
            .unwrap_or(0)
    }

    /// Ledger totals on disk (clients charged, workers earned).
    pub fn totals(&self) -> ledger::Totals {
        self.ledger.lock().durable().clone()
    }

    /// The chain, or an error saying there is none (a fake-TON root).
    fn chain(&self) -> Result<&Arc<dyn ChainClient>, ProxyError> {
        self.chain.as_ref().ok_or_else(|| {
            ProxyError::Io("this proxy runs on a fake-TON root: there is no chain".into())
        })
    }

    /// An address as this proxy writes it on the wire: raw on our own network; on a fake-TON
    /// root as the reference writes it (user-friendly, non-bounceable, mainnet form).
    pub(crate) fn wire_address(&self, a: &Address) -> Vec<u8> {
        match self.reference {
            None => a.to_raw().into_bytes(),
            Some(_) => a
                .to_friendly(cocoon_chain::address::FriendlyFlags {
                    bounceable: false,
                    testnet: false,
                })
                .into_bytes(),
        }
    }

    /// Whether this proxy runs on a reference fake-TON root.
    pub fn on_fake_ton(&self) -> bool {
        self.reference.is_some()
    }

    /// COCOON's test mode of this proxy (what it announces, and what it asks of its peers).
    fn is_test(&self) -> bool {
        chain_client::is_test(self.chain.as_deref())
    }

    /// Refuses a peer (client or worker) whose test mode is not ours, as COCOON's proxy does.
    pub(crate) fn check_test_mode(&self, theirs: Option<bool>) -> Result<(), String> {
        chain_client::check_test_mode(self.is_test(), theirs)
    }

    /// The money as last read from the chain (None before the first read).
    pub fn money(&self) -> Option<OnChainMoney> {
        *self.money.lock()
    }

    /// Workers' track records at this proxy (persisted).
    pub fn reputation(&self) -> HashMap<Address, Reputation> {
        self.reputation.lock().clone()
    }

    /// Connected workers.
    pub fn workers(&self) -> Vec<WorkerSlot> {
        self.pool.lock().all().cloned().collect()
    }

    /// Waits until record `seq` is on disk, sharing fsyncs between concurrent requests.
    async fn durable(&self, seq: u64) -> Result<(), ledger::LedgerError> {
        loop {
            if self.ledger.lock().durable_seq() >= seq {
                return Ok(());
            }
            let _turn = self.syncing.lock().await;
            if self.ledger.lock().durable_seq() >= seq {
                return Ok(());
            }
            let point = self.ledger.lock().sync_point()?;
            let synced = tokio::task::spawn_blocking(move || point.sync())
                .await
                .map_err(|e| ledger::LedgerError::Io {
                    path: "ledger".into(),
                    source: std::io::Error::other(e),
                })
                .and_then(|r| r);
            let mut ledger = self.ledger.lock();
            match synced {
                Ok(seq) => ledger.mark_durable(seq),
                Err(e) => {
                    tracing::error!("ledger fsync failed; no more vouchers until a restart: {e}");
                    ledger.poison(&e);
                    return Err(e);
                }
            }
        }
    }

    /// The protocol version to speak with a peer announcing `min..=max` (absent: 0 only, as
    /// the reference reads it): the highest both know, or an error naming both ranges.
    fn settle_proto(min: Option<i32>, max: Option<i32>) -> Result<i32, String> {
        let (min, max) = (min.unwrap_or(0), max.unwrap_or(0));
        let ours = (1, cocoon_wire::PROTO_WITH_CANCEL);
        if max >= ours.0 && min <= ours.1 {
            Ok(max.min(ours.1))
        } else {
            Err(format!(
                "cannot choose a common protocol version: the peer speaks {min} to {max}, this \
                 proxy {} to {}",
                ours.0, ours.1
            ))
        }
    }

    fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn params(&self) -> &cocoon_chain::contracts::Params {
        &self.init.params
    }

    /// Our `proxy.params`, with the protocol version settled with this peer.
    fn proxy_params(&self, proto_version: i32) -> cocoon_wire::proxy::ProxyParams {
        cocoon_wire::proxy::ProxyParams {
            flags: (),
            proxy_public_key: self.voucher_key.public_key(),
            proxy_owner_address: self.wire_address(&self.init.owner),
            proxy_sc_address: self.wire_address(&self.address),
            is_test: Some(self.is_test()),
            proto_version: Some(proto_version),
        }
    }

    /// The client contract of `owner` at this proxy (derived from the code this proxy
    /// contract was deployed with, as the contract itself derives it; cached).
    fn client_contract(&self, owner: Address) -> Result<Address, cocoon_chain::ChainError> {
        self.party_contract(owner, false)
    }

    /// The worker contract of `owner` at this proxy (cached).
    fn worker_contract(&self, owner: Address) -> Result<Address, cocoon_chain::ChainError> {
        self.party_contract(owner, true)
    }

    fn party_contract(
        &self,
        owner: Address,
        worker: bool,
    ) -> Result<Address, cocoon_chain::ChainError> {
        if let Some(a) = self.addresses.lock().get(&(owner, worker)) {
            return Ok(*a);
        }
        let key = self.voucher_key.public_key();
        let a = match (&self.reference, worker) {
            (Some(r), true) => r.worker_address(&owner, &self.address, &key)?,
            (Some(r), false) => r.client_address(&owner, &self.address, &key)?,
            (None, true) => self.init.worker_address(self.address, owner)?,
            (None, false) => self.init.client_address(self.address, owner)?,
        };
        self.addresses.lock().insert((owner, worker), a);
        Ok(a)
    }
}

/// Accepts connections forever: proof of work and RA-TLS under `identity`, then `serve` in a
/// task of its own.
async fn accept_each<F, Fut>(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    identity: Arc<cocoon_net::identity::Renewing>,
    who: &'static str,
    serve: F,
) where
    F: Fn(Arc<Proxy>, cocoon_net::Connection) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(tokio::sync::Semaphore::new(
        proxy.cfg.connections_per_listener,
    ));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, most often: wait for some to close.
                tracing::warn!("{who} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(
                "{who} {addr} refused: {} connections already open on this listener",
                proxy.cfg.connections_per_listener
            );
            proxy.metrics.error("too_many_connections");
            drop(tcp);
            continue;
        };
        let proxy = proxy.clone();
        let identity = identity.get();
        tokio::spawn(async move {
            let _permit = permit;
            match cocoon_net::accept(
                tcp,
                identity.server_tls.clone(),
                &identity.verifier,
                proxy.cfg.pow_difficulty,
                cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
            )
            .await
            {
                Ok(conn) => serve(proxy, conn).await,
                Err(e) => {
                    if matches!(e, cocoon_net::NetError::Attestation(_)) {
                        proxy.metrics.attestation_failures.inc();
                    }
                    tracing::warn!("{who} {addr} refused: {e}")
                }
            }
        });
    }
}
