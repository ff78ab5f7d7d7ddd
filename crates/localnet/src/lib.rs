//! A whole network on one machine, every role real: the local chain (in process, also served
//! over the toncenter API), a genesis whose root allows the fake-TDX image and the served
//! model, one proxy (contract deployed and registered in the root), N workers, and a client
//! with its OpenAI API. All state lives in one directory, so starting again resumes with the
//! same wallets, contracts, ledger and balances.

#![forbid(unsafe_code)]

pub mod bench;
pub mod wait;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_chain::client::{self as chain_client, ChainClient, LocalClient};
use cocoon_chain::contracts::{Params, RegisteredProxy};
use cocoon_chain::local::{Clock, Genesis, GenesisSpec, LocalChain};
use cocoon_chain::messages;
use cocoon_chain::wallet::OutMessage;
use cocoon_chain::{Address, TON};
use cocoon_client::{Client, ClientConfig};
use cocoon_engine::engine::Engine;
use cocoon_engine::model::ModelIdentity;
use cocoon_proxy::{Proxy, ProxyConfig, RunningProxy};
use cocoon_tee::{FakeTdxProvider, PolicyKind};
use cocoon_worker::{Worker, WorkerConfig};

/// The identity the FAKE engine's workers announce: its name and the SHA-256 of the name (it
/// has no weights to hash).
pub fn fake_model_identity() -> String {
    use sha2::Digest;
    let name = cocoon_engine::fake::FAKE_MODEL;
    ModelIdentity {
        name: name.into(),
        sha256: sha2::Sha256::digest(name.as_bytes()).into(),
    }
    .to_string()
}

/// What to bring up.
#[derive(Clone)]
pub struct LocalNetConfig {
    /// State directory.
    pub dir: PathBuf,
    /// One engine per worker, all serving `model`.
    pub engines: Vec<Arc<dyn Engine>>,
    /// Model identity `name@sha256` the workers announce.
    pub model: String,
    /// Model type name recorded in the root (e.g. "smollm2").
    pub model_type: String,
    /// Further models the root allows (hash, type), none of them served here: by default
    /// every known model (`cocoon model fetch` names), so a worker bringing one of them joins
    /// and `cocoon quote --model qwen3` prices it.
    pub also_allowed: Vec<([u8; 32], String)>,
    /// Client HTTP address.
    pub http_listen: SocketAddr,
    /// Toncenter API of the local chain (None: not served).
    pub chain_listen: Option<SocketAddr>,
    /// Proxy's worker and client listeners.
    pub proxy_worker_listen: SocketAddr,
    /// Proxy's client listener.
    pub proxy_client_listen: SocketAddr,
    /// Worker price coefficient, thousandths.
    pub coefficient: u32,
    /// Requests per worker at once.
    pub max_active: u32,
    /// Worker payout threshold, nanotons.
    pub payout_threshold: u128,
    /// Proof-of-work bits.
    pub pow_difficulty: u32,
    /// Prices at genesis.
    pub params: Params,
}

impl LocalNetConfig {
    /// A network whose workers run these FAKE engines (fixed answers; for protocol tests and
    /// benchmarks), announcing [`fake_model_identity`].
    pub fn fake(dir: &Path, engines: Vec<Arc<dyn Engine>>) -> Self {
        Self::new(dir, engines, &fake_model_identity(), "fake")
    }

    /// Defaults on 127.0.0.1 with ephemeral ports.
    pub fn new(dir: &Path, engines: Vec<Arc<dyn Engine>>, model: &str, model_type: &str) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        LocalNetConfig {
            dir: dir.to_path_buf(),
            engines,
            model: model.to_string(),
            model_type: model_type.to_string(),
            also_allowed: cocoon_engine::model::KNOWN_MODELS
                .iter()
                .map(|m| (m.identity().sha256, m.model_type.to_string()))
                .collect(),
            http_listen: any,
            chain_listen: None,
            proxy_worker_listen: any,
            proxy_client_listen: any,
            coefficient: 1000,
            max_active: 16,
            payout_threshold: TON,
            pow_difficulty: 8,
            params: Params::local_default(),
        }
    }
}

/// Errors bringing the network up.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// Chain.
    #[error("chain: {0}")]
    Chain(#[from] cocoon_chain::ChainError),
    /// Proxy.
    #[error("proxy: {0}")]
    Proxy(#[from] cocoon_proxy::ProxyError),
    /// Worker.
    #[error("worker: {0}")]
    Worker(#[from] cocoon_worker::WorkerError),
    /// Client.
    #[error("client: {0}")]
    Client(#[from] cocoon_client::ClientError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Where everything listens (written to DIR/network.json).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NetworkInfo {
    /// OpenAI base URL.
    pub base_url: String,
    /// API key for it.
    pub api_key: String,
    /// Client HTTP address.
    pub client_http: SocketAddr,
    /// Proxy listeners.
    pub proxy_workers: SocketAddr,
    /// Proxy listeners.
    pub proxy_clients: SocketAddr,
    /// Toncenter API of the local chain.
    pub chain_api: Option<String>,
    /// The proxy's dashboard / metrics address.
    pub proxy_http: Option<SocketAddr>,
    /// Each worker's dashboard / metrics address.
    pub worker_http: Vec<Option<SocketAddr>>,
    /// Root contract.
    pub root: Address,
    /// Proxy contract.
    pub proxy_contract: Address,
    /// Wallets: name → address.
    pub wallets: std::collections::BTreeMap<String, Address>,
    /// Model served.
    pub model: String,
}

/// A running network.
pub struct LocalNet {
    /// The chain (shared with every role).
    pub chain: Arc<Mutex<LocalChain>>,
    /// As a chain client.
    pub chain_client: Arc<dyn ChainClient>,
    /// Genesis (wallets).
    pub genesis: Genesis,
    /// The proxy.
    pub proxy: RunningProxy,
    /// The workers.
    pub workers: Vec<Arc<Worker>>,
    /// The client.
    pub client: Arc<Client>,
    /// Addresses and key.
    pub info: NetworkInfo,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The chain directory's owner claim (given back on stop).
    claim: Option<cocoon_chain::local::owner::Claim>,
    /// The admin's keys (derived once: 100 000 PBKDF2 rounds).
    admin: (cocoon_chain::keys::Keypair, cocoon_chain::wallet::Wallet),
    cfg: LocalNetConfig,
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a secret file, creating it (owner-only) with `make` when it does not exist yet; any
/// other read error is reported, never papered over with a new secret.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<String, LocalNetError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = make();
            cocoon_chain::files::write_secret(path, v.as_bytes())?;
            Ok(v)
        }
        Err(e) => Err(LocalNetError::Other(format!("{}: {e}", path.display()))),
    }
}

fn model_hash(model: &str) -> Result<[u8; 32], LocalNetError> {
    ModelIdentity::parse(model)
        .map(|id| id.sha256)
        .ok_or_else(|| LocalNetError::Other(format!("model identity {model:?} is not name@sha256")))
}

impl LocalNet {
    /// Brings the network up (or resumes it from `cfg.dir`).
    pub async fn start(cfg: LocalNetConfig) -> Result<LocalNet, LocalNetError> {
        let io = |e: std::io::Error| LocalNetError::Other(e.to_string());
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| LocalNetError::Other(format!("{}: {e}", cfg.dir.display())))?;
        let chain_dir = cfg.dir.join("chain");
        let hash = model_hash(&cfg.model)?;
        // What the root lists: the served model first, then the others allowed.
        let mut allowed = vec![(hash, cfg.model_type.clone())];
        for (h, kind) in &cfg.also_allowed {
            if allowed.iter().all(|(a, _)| a != h) {
                allowed.push((*h, kind.clone()));
            }
        }
        let fake_image = cocoon_tee::quote::Measurements::default().image_hash();
        let worker_names: Vec<String> = (0..cfg.engines.len())
            .map(|i| format!("worker{i}"))
            .collect();

        // Chain and genesis (or resume). This process owns the chain directory while it runs:
        // one network per directory (a second `cocoon up` on the same state would corrupt it),
        // and commands given the directory talk to the API below instead of opening a copy.
        std::fs::create_dir_all(&chain_dir).map_err(io)?;
        let mut claim = cocoon_chain::local::owner::claim(&chain_dir, None)?;
        let (chain, genesis) = match LocalChain::open(&chain_dir)? {
            Some(chain) => {
                let path = cfg.dir.join("genesis.json");
                let genesis: Genesis = cocoon_chain::files::read_json(&path)?.ok_or_else(|| {
                    LocalNetError::Other(format!(
                        "{} is missing beside the chain it describes",
                        path.display()
                    ))
                })?;
                (chain, genesis)
            }
            None => {
                let mut chain = LocalChain::new(Clock::System { offset: 0 })?;
                let wallets = vec![
                    ("proxy".to_string(), 1_000 * TON),
                    ("client".to_string(), 1_000 * TON),
                ];
                let spec = GenesisSpec {
                    params: cfg.params.clone(),
                    wallets,
                    proxy_hashes: vec![fake_image],
                    worker_hashes: vec![fake_image],
                    models: allowed.clone(),
                };
                let genesis = chain.genesis(&spec)?;
                chain.persist_in(&chain_dir)?;
                (chain, genesis)
            }
        };
        let mut chain = chain;
        let mut genesis = genesis;
        // Worker wallets are created (and funded by the admin) as workers are added.
        // The admin's key is derived (100 000 PBKDF2 rounds) once, not per wallet or per call.
        let admin = genesis.wallet("admin")?.open()?;
        for name in &worker_names {
            if genesis.wallet(name).is_err() {
                chain.add_wallet(&mut genesis, &admin, name, 100 * TON)?;
            }
        }
        save_genesis(&genesis, &cfg.dir)?;
        let chain = Arc::new(Mutex::new(chain));
        let chain_client: Arc<dyn ChainClient> = Arc::new(LocalClient::new(chain.clone()));
        let mut tasks = Vec::new();
        let chain_api = match cfg.chain_listen {
            Some(addr) => {
                let listener = cocoon_chain::toncenter::bind(addr, false)
                    .await
                    .map_err(io)?;
                let bound = listener.local_addr().map_err(io)?;
                let shared = chain.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = cocoon_chain::toncenter::serve(listener, shared).await;
                }));
                let api = format!("http://{bound}/api/v2");
                claim.set_api(Some(api.clone()))?;
                Some(api)
            }
            None => None,
        };

        // The admin allows what a resumed network does not list yet (another served model, or
        // models known since it was made), in one transfer.
        let root = chain_client::read_root(chain_client.as_ref(), &genesis.root).await?;
        let missing = allowed
            .iter()
            .filter(|(h, _)| !root.models.contains_key(h))
            .map(|(h, kind)| {
                let body = messages::root::add_model_type(0, h, kind)?;
                Ok(OutMessage::transfer(genesis.root, TON / 10, Some(body)))
            })
            .collect::<Result<Vec<_>, cocoon_chain::ChainError>>()?;
        if !missing.is_empty() {
            chain_client::send_transfer(chain_client.as_ref(), &admin.1, &admin.0, &missing)
                .await?;
        }

        // Proxy.
        let proxy = launch_proxy(
            &chain_client,
            &genesis,
            &admin,
            "proxy",
            cfg.dir.join("proxy"),
            (cfg.proxy_worker_listen, cfg.proxy_client_listen),
            cfg.pow_difficulty,
        )
        .await?;

        // Workers.
        let mut workers = Vec::new();
        for (i, engine) in cfg.engines.iter().enumerate() {
            let worker = launch_worker(
                &chain_client,
                &genesis,
                &cfg,
                &worker_names[i],
                vec![proxy.worker_addr],
                engine.clone(),
            )?;
            tasks.push(tokio::spawn(worker.clone().run()));
            workers.push(worker);
        }
        // Wait for every worker's handshake.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while proxy.proxy.workers().len() < workers.len() {
            if std::time::Instant::now() > deadline {
                return Err(LocalNetError::Other(format!(
                    "only {} of {} workers connected to the proxy",
                    proxy.proxy.workers().len(),
                    workers.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Client.
        let client = launch_client(
            &chain_client,
            &genesis,
            &cfg,
            "client",
            vec![proxy.client_addr],
        )
        .await?;
        let api_key = read_or_create(&cfg.dir.join("api-key"), || {
            format!(
                "cocoon-{}",
                hex::encode(&cocoon_chain::keys::Keypair::generate().seed()[..16])
            )
        })?;
        let listener = cocoon_net::listen(cfg.http_listen, "the OpenAI API")
            .await
            .map_err(io)?;
        let http = listener.local_addr().map_err(io)?;
        let (c, k) = (client.clone(), api_key.clone());
        tasks.push(tokio::spawn(async move {
            let _ = cocoon_client::server::serve(listener, c, k).await;
        }));

        let info = NetworkInfo {
            base_url: format!("http://{http}/v1"),
            api_key,
            client_http: http,
            proxy_workers: proxy.worker_addr,
            proxy_clients: proxy.client_addr,
            chain_api,
            proxy_http: proxy.http_addr,
            worker_http: workers.iter().map(|w| *w.http_addr.lock()).collect(),
            root: genesis.root,
            proxy_contract: proxy.proxy.address(),
            wallets: genesis
                .wallets
                .iter()
                .filter(|w| !w.name.starts_with("worker") || worker_names.contains(&w.name))
                .map(|w| (w.name.clone(), w.address))
                .collect(),
            model: cfg.model.clone(),
        };
        cocoon_chain::files::write_json(&cfg.dir.join("network.json"), &info)?;
        Ok(LocalNet {
            chain,
            chain_client,
            genesis,
            proxy,
            workers,
            client,
            info,
            tasks,
            claim: Some(claim),
            admin,
            cfg,
        })
    }

    /// Adds a wallet funded with `amount` by the admin (kept in the genesis files). A name in
    /// use is refused: two participants would share a wallet (its seqno) and a state directory.
    fn new_wallet(&mut self, name: &str, amount: u128) -> Result<(), LocalNetError> {
        if self.genesis.wallet(name).is_ok() || self.cfg.dir.join(name).exists() {
            return Err(LocalNetError::Other(format!(
                "a participant named {name:?} exists already in {}",
                self.cfg.dir.display()
            )));
        }
        {
            let mut chain = self.chain.lock().expect("chain");
            chain.add_wallet(&mut self.genesis, &self.admin, name, amount)?;
        }
        save_genesis(&self.genesis, &self.cfg.dir)
    }

    /// Another proxy on this network, as a second operator would run it: its own wallet
    /// (`name`, funded by the admin), its contract, registered in the root. It runs until the
    /// handle is stopped or dropped; `network.json` still describes the first proxy only.
    pub async fn add_proxy(&mut self, name: &str) -> Result<RunningProxy, LocalNetError> {
        self.new_wallet(name, 100 * TON)?;
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        launch_proxy(
            &self.chain_client,
            &self.genesis,
            &self.admin,
            name,
            self.cfg.dir.join(name),
            (any, any),
            self.cfg.pow_difficulty,
        )
        .await
    }

    /// Another worker serving this network's model with `engine`, connected to `proxies`: its
    /// own wallet (`name`, funded by the admin). It runs until the network stops.
    pub fn add_worker(
        &mut self,
        name: &str,
        proxies: Vec<SocketAddr>,
        engine: Arc<dyn Engine>,
    ) -> Result<Arc<Worker>, LocalNetError> {
        self.new_wallet(name, 100 * TON)?;
        let worker = launch_worker(
            &self.chain_client,
            &self.genesis,
            &self.cfg,
            name,
            proxies,
            engine,
        )?;
        self.tasks.push(tokio::spawn(worker.clone().run()));
        Ok(worker)
    }

    /// Another client of `proxies`: its own wallet (`name`, funded by the admin) and a client
    /// contract at each proxy.
    pub async fn add_client(
        &mut self,
        name: &str,
        proxies: Vec<SocketAddr>,
    ) -> Result<Arc<Client>, LocalNetError> {
        self.new_wallet(name, 100 * TON)?;
        launch_client(&self.chain_client, &self.genesis, &self.cfg, name, proxies).await
    }

    /// Stops every role (state stays on disk).
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.proxy.stop();
        self.claim.take();
    }
}

/// Writes the genesis and its wallet files into `dir` and `dir/chain` (secret files), so
/// `--dir DIR/chain` and `--wallet DIR/wallets/NAME.json` work for every chain and money
/// command.
fn save_genesis(genesis: &Genesis, dir: &Path) -> Result<(), LocalNetError> {
    for d in [dir.to_path_buf(), dir.join("chain")] {
        genesis.write_files(&d)?;
    }
    Ok(())
}

/// Starts a proxy paid from wallet `wallet` (its contract is deployed at its first start) and
/// registers it in the root through the admin.
async fn launch_proxy(
    chain: &Arc<dyn ChainClient>,
    genesis: &Genesis,
    admin: &(cocoon_chain::keys::Keypair, cocoon_chain::wallet::Wallet),
    wallet: &str,
    dir: PathBuf,
    (worker_listen, client_listen): (SocketAddr, SocketAddr),
    pow_difficulty: u32,
) -> Result<RunningProxy, LocalNetError> {
    let proxy = Proxy::start(
        ProxyConfig {
            dir,
            worker_listen,
            client_listen,
            root: genesis.root,
            worker_policy: PolicyKind::FakeTdx,
            pow_difficulty,
            save_state_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            queue_per_model: cocoon_proxy::DEFAULT_QUEUE_PER_MODEL,
            connections_per_listener: cocoon_proxy::DEFAULT_CONNECTIONS_PER_LISTENER,
            peer_limits: cocoon_net::rpc::Limits::default(),
            http_listen: Some("127.0.0.1:0".parse().expect("address")),
            payout_threshold: cocoon_proxy::DEFAULT_PAYOUT_THRESHOLD,
        },
        chain.clone(),
        genesis.wallet(wallet)?.open()?,
        Arc::new(FakeTdxProvider::default()),
    )
    .await?;
    register_proxy(
        chain.as_ref(),
        genesis,
        admin,
        proxy.proxy.address(),
        &proxy,
    )
    .await?;
    Ok(proxy)
}

/// A worker paid to wallet `wallet`, serving `cfg.model` with `engine` to `proxies` (not yet
/// running: spawn its `run`).
fn launch_worker(
    chain: &Arc<dyn ChainClient>,
    genesis: &Genesis,
    cfg: &LocalNetConfig,
    wallet: &str,
    proxies: Vec<SocketAddr>,
    engine: Arc<dyn Engine>,
) -> Result<Arc<Worker>, LocalNetError> {
    Ok(Worker::new(
        WorkerConfig {
            dir: cfg.dir.join(wallet),
            root: genesis.root,
            proxies,
            model: cfg.model.clone(),
            coefficient: cfg.coefficient,
            max_active: cfg.max_active,
            proxy_policy: PolicyKind::FakeTdx,
            max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
            payout_threshold: cfg.payout_threshold,
            http_listen: Some("127.0.0.1:0".parse().expect("address")),
        },
        chain.clone(),
        genesis.wallet(wallet)?.open()?,
        engine,
        Arc::new(FakeTdxProvider::default()),
        vec![cocoon_tee::quote::Measurements::default().image_hash()],
    )?)
}

/// A client paying from wallet `wallet` at `proxies` (10 TON deposited at each, the minimum
/// stake).
async fn launch_client(
    chain: &Arc<dyn ChainClient>,
    genesis: &Genesis,
    cfg: &LocalNetConfig,
    wallet: &str,
    proxies: Vec<SocketAddr>,
) -> Result<Arc<Client>, LocalNetError> {
    Ok(Client::start(
        ClientConfig {
            dir: cfg.dir.join(wallet),
            root: genesis.root,
            proxies,
            deposit: 10 * TON,
            stake: cfg.params.min_client_stake,
            proxy_policy: PolicyKind::FakeTdx,
            max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
            max_coefficient: 10_000,
            timeout: Duration::from_secs(600),
        },
        chain.clone(),
        genesis.wallet(wallet)?.open()?,
        Arc::new(FakeTdxProvider::default()),
    )
    .await?)
}

/// Registers (or updates) the proxy's endpoints in the root through the admin wallet, and
/// waits until the root shows them.
async fn register_proxy(
    chain: &dyn ChainClient,
    genesis: &Genesis,
    admin: &(cocoon_chain::keys::Keypair, cocoon_chain::wallet::Wallet),
    proxy: Address,
    running: &RunningProxy,
) -> Result<(), LocalNetError> {
    let endpoint = RegisteredProxy::endpoint_string(running.client_addr, running.worker_addr);
    let root = chain_client::read_root(chain, &genesis.root).await?;
    let body = match root.proxies.iter().find(|p| p.address == Some(proxy)) {
        Some(p) if p.endpoint == endpoint => return Ok(()),
        Some(p) => messages::root::update_proxy(0, p.seq, &proxy, &endpoint)?,
        None => messages::root::register_proxy(0, &proxy, &endpoint)?,
    };
    chain_client::send_transfer(
        chain,
        &admin.1,
        &admin.0,
        &[OutMessage::transfer(genesis.root, TON / 10, Some(body))],
    )
    .await?;
    for _ in 0..600 {
        let root = chain_client::read_root(chain, &genesis.root).await?;
        if root
            .proxies
            .iter()
            .any(|p| p.address == Some(proxy) && p.endpoint == endpoint)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(LocalNetError::Other(
        "the root did not register the proxy".into(),
    ))
}
