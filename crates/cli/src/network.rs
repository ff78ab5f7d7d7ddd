//! `cocoon up` (the whole network on this machine) and the roles one at a time from TOML
//! configs: `cocoon proxy --config`, `cocoon worker --config`, `cocoon client --config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use cocoon_chain::client::{ChainClient, ToncenterClient};
use cocoon_chain::{Address, Network};
use cocoon_engine::engine::Engine;
use cocoon_engine::fake::FakeEngine;
use cocoon_llama::{LlamaConfig, LlamaEngine};
use cocoon_localnet::{LocalNet, LocalNetConfig};
use cocoon_tee::{ConfigfsTsmProvider, FakeTdxProvider, PolicyKind, QuoteProvider};

/// `cocoon up`.
#[derive(Args)]
pub struct UpArgs {
    /// All state (chain, wallets, ledger, keys); the next `cocoon up` resumes from it.
    #[arg(long, default_value = ".cocoon")]
    pub dir: PathBuf,
    /// Number of workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Model: a known name (smollm2, qwen3-0.6b, qwen3-8b: `cocoon model fetch` downloads
    /// them) or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Use the FAKE benchmark engine instead of a model (fixed answers; for protocol tests).
    #[arg(long)]
    pub fake_engine: bool,
    /// The workers' model runs in this OpenAI-compatible server (vLLM, SGLang, llama-server,
    /// TGI) instead of the embedded engine; `--model` then names its identity (a known model,
    /// name@sha256, or the weights' path) and `--parallel` is each worker's concurrency.
    #[arg(long, conflicts_with = "fake_engine")]
    pub engine_url: Option<String>,
    /// The name the server at `--engine-url` serves the model under (default: the one it lists).
    #[arg(long, requires = "engine_url")]
    pub engine_model: Option<String>,
    /// The server at `--engine-url` calls tools (vLLM started with `--enable-auto-tool-choice`,
    /// llama-server with `--jinja`): workers announce tool calling, so requests with tools
    /// reach them.
    #[arg(long, requires = "engine_url")]
    pub engine_tools: bool,
    /// The client's OpenAI API address.
    #[arg(long, default_value = "127.0.0.1:8040")]
    pub listen: SocketAddr,
    /// The local chain's toncenter API address.
    #[arg(long, default_value = "127.0.0.1:8041")]
    pub chain_listen: SocketAddr,
    /// Proxy's listener for workers.
    #[arg(long, default_value = "127.0.0.1:8042")]
    pub proxy_worker_listen: SocketAddr,
    /// Proxy's listener for clients.
    #[arg(long, default_value = "127.0.0.1:8043")]
    pub proxy_client_listen: SocketAddr,
    /// Sequences each embedded engine runs at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    /// Worker price coefficient, thousandths.
    #[arg(long, default_value_t = 1000)]
    pub coefficient: u32,
}

/// The workers' engines, the model identity they serve, and its type name.
type Engines = (Vec<Arc<dyn Engine>>, String, String);

fn engines(args: &UpArgs) -> Result<Engines> {
    if args.fake_engine {
        eprintln!("FAKE engine: fixed answers, no model (for protocol tests and benchmarks only)");
        let e: Vec<Arc<dyn Engine>> = (0..args.workers)
            .map(|_| Arc::new(FakeEngine::default()) as Arc<dyn Engine>)
            .collect();
        return Ok((e, cocoon_localnet::fake_model_identity(), "fake".into()));
    }
    if let Some(url) = &args.engine_url {
        let (engine, identity) = crate::model::http_engine(
            url,
            args.engine_model.as_deref(),
            &args.model,
            args.engine_tools,
        )?;
        eprintln!("engine at {url}: serving {identity}");
        let engine: Arc<dyn Engine> = Arc::new(engine);
        let kind = cocoon_engine::model::ModelIdentity::parse(&identity)
            .map(|id| cocoon_engine::model::model_type_of(&id))
            .unwrap_or_default();
        return Ok((vec![engine; args.workers], identity, kind));
    }
    let local = match cocoon_engine::model::known(&args.model) {
        Ok(known) => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            cocoon_engine::model::fetch_with(
                known,
                &cocoon_engine::model::default_model_dir(),
                progress,
            )?
        }
        Err(_) => crate::model::resolve(&args.model)?,
    };
    let mut out: Vec<Arc<dyn Engine>> = Vec::new();
    // Share the machine's threads between the workers' engines.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = (cores / args.workers.max(1)).max(1) as i32;
    for _ in 0..args.workers {
        let engine = LlamaEngine::load(LlamaConfig {
            max_sequences: args.parallel,
            threads: Some(threads),
            ..LlamaConfig::for_model(&local)
        })
        .with_context(|| format!("cannot load {}", local.path.display()))?;
        out.push(Arc::new(engine));
    }
    let kind = cocoon_engine::model::model_type_of(&local.identity);
    Ok((out, local.identity.to_string(), kind))
}

/// Runs `cocoon up` until Ctrl-C.
pub fn up(args: UpArgs) -> Result<()> {
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers must be between 1 and 64");
    }
    let (engines, identity, kind) = engines(&args)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut cfg = LocalNetConfig::new(&args.dir, engines, &identity, &kind);
        cfg.http_listen = args.listen;
        cfg.chain_listen = Some(args.chain_listen);
        cfg.proxy_worker_listen = args.proxy_worker_listen;
        cfg.proxy_client_listen = args.proxy_client_listen;
        cfg.coefficient = args.coefficient;
        if args.engine_url.is_some() {
            // The server's concurrency: each worker takes at most this many at once.
            cfg.max_active = args.parallel.max(1);
        }
        let resumed = args.dir.join("network.json").exists();
        let mut net = LocalNet::start(cfg).await.context("bringing the network up")?;
        let info = &net.info;
        let model_name = cocoon_engine::model::ModelIdentity::name_of(&identity).to_string();
        println!("Cocoon network {} in {}", if resumed { "resumed" } else { "is up" }, args.dir.display());
        println!("  model        {identity} on {} worker(s)", net.workers.len());
        println!("  proxy        contract {} (workers {}, clients {})", info.proxy_contract, info.proxy_workers, info.proxy_clients);
        if let Some(api) = &info.chain_api {
            println!("  local chain  {api} (root {})", info.root);
        }
        println!("  OpenAI API   {}", info.base_url);
        println!("  dashboards   client http://{}/stats, proxy {}, workers {}", info.client_http,
            info.proxy_http.map(|a| format!("http://{a}/stats")).unwrap_or_default(),
            info.worker_http.iter().flatten().map(|a| format!("http://{a}/stats")).collect::<Vec<_>>().join(" "));
        println!("  API key      {}", info.api_key);
        println!("  wallets      {} (client, proxy, worker0…, admin: secret files)", args.dir.join("wallets").display());
        println!();
        println!(
            "curl -s {}/chat/completions -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\\n  -d '{{\"model\":\"{model_name}\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}]}}'",
            info.base_url, info.api_key
        );
        println!();
        println!("network.json written to {}; Ctrl-C stops everything (state stays for the next `cocoon up`).", args.dir.join("network.json").display());
        tokio::signal::ctrl_c().await?;
        eprintln!("stopping…");
        // Commit what was used so far, so the chain matches the ledger after a clean stop.
        let _ = tokio::time::timeout(Duration::from_secs(10), net.client.commit_all()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), cocoon_proxy::save_state_now(&net.proxy.proxy)).await;
        net.stop();
        if let Ok(chain) = net.chain.lock() {
            chain.save()?;
        }
        eprintln!("stopped");
        Ok(())
    })
}

/// Chain and wallet settings every role config shares.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// toncenter v2 API of the chain (e.g. `cocoon chain serve`), or…
    pub chain_api: Option<String>,
    /// …a local chain directory opened in process (only one process may open it), or…
    pub chain_dir: Option<PathBuf>,
    /// …no chain: the reference's fake-TON file (its fake-ton-config.json, rendered), to run
    /// beside reference roles that read the same file (`root` must then name their root).
    pub fake_ton: Option<PathBuf>,
    /// API key for chain_api (also TONCENTER_API_KEY).
    pub chain_api_key: Option<String>,
    /// mainnet, testnet or local.
    #[serde(default = "local")]
    pub network: Network,
    /// Root contract address (default with chain_dir: that local chain's root).
    pub root: Option<String>,
    /// Wallet file (from `cocoon wallet new`).
    pub wallet: PathBuf,
    /// State directory.
    pub dir: PathBuf,
    /// `fake` (fake TDX quotes) or `tdx` (configfs-tsm).
    #[serde(default = "fake")]
    pub tee: String,
    /// Peer attestation policy: fake_tdx or tdx.
    #[serde(default = "fake_tdx")]
    pub policy: String,
}

fn local() -> Network {
    Network::Local
}
fn fake() -> String {
    "fake".into()
}
fn fake_tdx() -> String {
    "fake_tdx".into()
}

impl Common {
    fn chain(&self) -> Result<Arc<dyn ChainClient>> {
        match (&self.chain_api, &self.chain_dir) {
            (Some(url), None) => {
                let key = self
                    .chain_api_key
                    .clone()
                    .or_else(|| std::env::var("TONCENTER_API_KEY").ok());
                Ok(Arc::new(ToncenterClient::new(url, key, self.network)))
            }
            (None, Some(dir)) => crate::chain::open_dir(dir, true).context("chain_dir"),
            _ => bail!("set exactly one of chain_api, chain_dir and fake_ton"),
        }
    }

    /// The fake-TON root, when the config names one instead of a chain.
    fn fake_ton(&self) -> Result<Option<cocoon_chain::fake_ton::FakeTon>> {
        self.fake_ton
            .as_ref()
            .map(|path| cocoon_chain::fake_ton::FakeTon::load(path).context("fake_ton"))
            .transpose()
    }

    fn wallet(&self) -> Result<(cocoon_chain::keys::Keypair, cocoon_chain::wallet::Wallet)> {
        // A secret from the environment beats the file (containers, secret stores).
        if let Ok(words) = std::env::var("COCOON_WALLET_MNEMONIC") {
            let version = cocoon_chain::wallet::WalletVersion::V5r1;
            return cocoon_chain::wallet::open(&words, version, self.network)
                .context("COCOON_WALLET_MNEMONIC");
        }
        let file = cocoon_chain::wallet::WalletFile::read(&self.wallet).context("wallet")?;
        Ok(file.open(self.network)?)
    }

    fn root(&self) -> Result<Address> {
        match (&self.root, &self.chain_dir) {
            (Some(root), _) => root.parse().context("root"),
            // A fake-TON root has no address of its own: nothing reads it.
            (None, None) if self.fake_ton.is_some() => Ok(Address::new([0; 32])),
            (None, Some(dir)) => Ok(crate::chain::read_genesis(dir)
                .context("root: not given, and chain_dir's genesis cannot say it")?
                .root),
            (None, None) => {
                bail!("root: missing (the root contract's address; `cocoon root show`)")
            }
        }
    }

    fn quotes(&self) -> Result<Box<dyn QuoteProvider>> {
        quote_provider(&self.tee)
    }

    fn policy(&self) -> Result<PolicyKind> {
        policy_kind(&self.policy)
    }
}

/// Our own quotes by name: `fake` (FAKE TDX, for local networks) or `tdx` (configfs-tsm).
pub(crate) fn quote_provider(name: &str) -> Result<Box<dyn QuoteProvider>> {
    match name {
        "fake" => Ok(Box::new(FakeTdxProvider::default())),
        "tdx" => Ok(Box::new(ConfigfsTsmProvider::new(
            cocoon_tee::provider::DEFAULT_TSM_REPORT_DIR,
        ))),
        other => bail!("tee: {other:?} is neither fake nor tdx"),
    }
}

/// What a peer must prove, by name: `fake_tdx` (accepts FAKE quotes), `tdx` or `any`.
pub(crate) fn policy_kind(name: &str) -> Result<PolicyKind> {
    match name {
        "fake_tdx" => Ok(PolicyKind::FakeTdx),
        "tdx" => Ok(PolicyKind::Tdx),
        "any" => Ok(PolicyKind::Any),
        other => bail!("policy: {other:?} is not fake_tdx, tdx or any"),
    }
}

/// How a command that dials proxies (`cocoon quote`, `cocoon client close --state`) attests
/// itself and judges them. The defaults are FAKE, for local networks; name `tdx` for a real one.
#[derive(clap::Args, Debug)]
pub struct DialAttestation {
    /// Our quotes: `fake` (FAKE TDX, local networks only) or `tdx` (inside a TD).
    #[arg(long, default_value = "fake")]
    pub tee: String,
    /// What a proxy must prove: `fake_tdx` (accepts FAKE quotes, local only), `tdx` or `any`.
    #[arg(long, default_value = "fake_tdx")]
    pub proxy_policy: String,
}

impl DialAttestation {
    /// The quote provider and the policy named.
    pub fn parse(&self) -> Result<(std::sync::Arc<dyn QuoteProvider>, PolicyKind)> {
        Ok((
            std::sync::Arc::from(quote_provider(&self.tee)?),
            policy_kind(&self.proxy_policy)?,
        ))
    }
}

/// Parses and validates a config file without starting anything.
pub fn check<T: serde::de::DeserializeOwned + Validate>(path: &Path) -> Result<()> {
    read_config::<T>(path).map(drop)
}

/// Checks beyond the TOML shape (addresses, amounts, choices), each error naming its field.
pub trait Validate {
    /// Ok, or what is wrong.
    fn validate(&self) -> Result<()>;
}

impl Common {
    fn validate(&self) -> Result<()> {
        self.root()?;
        self.quotes().context("tee")?;
        let policy = self.policy().context("policy")?;
        if self.network == Network::Mainnet && (self.tee == "fake" || policy != PolicyKind::Tdx) {
            bail!(
                "network = \"mainnet\" needs tee = \"tdx\" and policy = \"tdx\" (got tee = {:?}, policy = {:?}): FAKE attestation proves nothing",
                self.tee,
                self.policy
            );
        }
        let sources = [
            self.chain_api.is_some(),
            self.chain_dir.is_some(),
            self.fake_ton.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            bail!("set exactly one of chain_api, chain_dir and fake_ton");
        }
        if self.fake_ton.is_some() && self.network == Network::Mainnet {
            bail!(
                "fake_ton: a fake-TON root is a test network; network = \"mainnet\" cannot use it"
            );
        }
        self.fake_ton()?;
        Ok(())
    }
}

impl Validate for ProxyToml {
    fn validate(&self) -> Result<()> {
        self.common.validate()
    }
}

impl Validate for WorkerToml {
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        cocoon_chain::parse_ton(&self.payout_threshold_ton).context("payout_threshold_ton")?;
        if self.coefficient == 0 {
            bail!("coefficient: must be positive (thousandths; 1000 = base price)");
        }
        match (&self.model, self.models.is_empty()) {
            (Some(_), false) => {
                bail!("model and [[models]]: give one model, or several in [[models]], not both")
            }
            (None, true) => bail!("model: missing (or list several in [[models]])"),
            (Some(_), true) => {}
            (None, false) => {
                if self.engine_url.is_some() || self.engine_model.is_some() || self.engine_tools {
                    bail!("engine_url / engine_model / engine_tools: with [[models]], give them in each entry");
                }
            }
        }
        let mut identities = std::collections::HashSet::new();
        for (i, m) in self.entries().iter().enumerate() {
            let at = if self.model.is_some() {
                String::new()
            } else {
                format!("models[{i}].")
            };
            if m.engine_model.is_some() && m.engine_url.is_none() {
                bail!("{at}engine_model: names the model an engine_url serves; set engine_url too");
            }
            if m.engine_tools && m.engine_url.is_none() {
                bail!("{at}engine_tools: says an engine_url server calls tools; set engine_url too (the embedded engine always does)");
            }
            if let Some(url) = &m.engine_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("{at}engine_url: {url:?} is not an http(s) URL");
                }
            }
            if m.max_active == Some(0) {
                bail!("{at}max_active: must be at least 1");
            }
            if !identities.insert(m.model.clone()) {
                bail!("{at}model: {:?} is listed twice", m.model);
            }
        }
        Ok(())
    }
}

impl Validate for ClientToml {
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        cocoon_chain::parse_ton(&self.deposit_ton).context("deposit_ton")?;
        cocoon_chain::parse_ton(&self.stake_ton).context("stake_ton")?;
        Ok(())
    }
}

/// Reads a role's config file: TOML of the right shape, then [`Validate`]d, so a role never
/// starts on a value `cocoon config check` would refuse.
fn read_config<T: serde::de::DeserializeOwned + Validate>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let c: T = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    c.validate()
        .with_context(|| format!("{} is not a valid config", path.display()))?;
    Ok(c)
}

/// `proxy.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ProxyToml {
    #[serde(flatten)]
    common: Common,
    worker_listen: SocketAddr,
    client_listen: SocketAddr,
    #[serde(default = "pow")]
    pow_difficulty: u32,
    #[serde(default = "thirty")]
    save_state_interval_secs: u64,
    /// Dashboard, /metrics, /jsonstats, /healthz (default: none).
    http_listen: Option<SocketAddr>,
    /// Requests that may wait per model while every worker is busy.
    #[serde(default = "queue_per_model")]
    queue_per_model: usize,
    /// Connections each listener holds at once.
    #[serde(default = "connections_per_listener")]
    connections_per_listener: usize,
    /// Queries one peer (client or worker) may run at once; one more is refused with 429.
    #[serde(default = "peer_queries_in_flight")]
    peer_queries_in_flight: usize,
    /// MiB waiting to be written to one peer before its connection is closed.
    #[serde(default = "peer_queued_mib")]
    peer_queued_mib: usize,
    /// Earnings paid to the owner's wallet from this many TON ("0": never).
    #[serde(default = "ten")]
    payout_threshold_ton: String,
}

fn peer_queries_in_flight() -> usize {
    cocoon_net::rpc::Limits::default().queries_in_flight
}
fn peer_queued_mib() -> usize {
    cocoon_net::rpc::Limits::default().queued_bytes >> 20
}

fn queue_per_model() -> usize {
    cocoon_proxy::DEFAULT_QUEUE_PER_MODEL
}
fn connections_per_listener() -> usize {
    cocoon_proxy::DEFAULT_CONNECTIONS_PER_LISTENER
}

/// `worker.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WorkerToml {
    #[serde(flatten)]
    common: Common,
    /// Proxies' worker endpoints; empty: those in the root.
    #[serde(default)]
    proxies: Vec<SocketAddr>,
    /// Known model name, GGUF path, or "fake"; with `engine_url`, the model's identity
    /// (name@sha256, a known model, or the weights' path). Or several, in `[[models]]`.
    model: Option<String>,
    /// An OpenAI-compatible server running the model (vLLM, SGLang, llama-server, TGI).
    engine_url: Option<String>,
    /// The name that server serves the model under (default: the one it lists).
    engine_model: Option<String>,
    /// That server calls tools (started for them): announce tool calling.
    #[serde(default)]
    engine_tools: bool,
    /// Several models on this machine, each announced to proxies separately.
    #[serde(default)]
    models: Vec<ModelToml>,
    #[serde(default = "thousand")]
    coefficient: u32,
    #[serde(default = "four")]
    max_active: u32,
    /// Claim on chain from this many TON unclaimed.
    #[serde(default = "one")]
    payout_threshold_ton: String,
    /// Dashboard, /metrics, /jsonstats, /healthz (default: none).
    http_listen: Option<SocketAddr>,
}

/// One `[[models]]` entry of `worker.toml`.
#[derive(serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModelToml {
    /// As the top-level `model`.
    model: String,
    /// As the top-level `engine_url`.
    engine_url: Option<String>,
    /// As the top-level `engine_model`.
    engine_model: Option<String>,
    /// As the top-level `engine_tools`.
    #[serde(default)]
    engine_tools: bool,
    /// Requests at once for this model (default: the top-level `max_active`).
    max_active: Option<u32>,
}

impl WorkerToml {
    /// The models to serve: the top-level one, or each `[[models]]` entry.
    fn entries(&self) -> Vec<ModelToml> {
        match &self.model {
            Some(model) => vec![ModelToml {
                model: model.clone(),
                engine_url: self.engine_url.clone(),
                engine_model: self.engine_model.clone(),
                engine_tools: self.engine_tools,
                max_active: None,
            }],
            None => self.models.clone(),
        }
    }
}

/// `client.toml`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ClientToml {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    proxies: Vec<SocketAddr>,
    listen: SocketAddr,
    /// API key (also COCOON_API_KEY).
    api_key: Option<String>,
    #[serde(default = "ten")]
    deposit_ton: String,
    #[serde(default = "half")]
    stake_ton: String,
}

fn pow() -> u32 {
    20
}
fn thirty() -> u64 {
    30
}
fn thousand() -> u32 {
    1000
}
fn four() -> u32 {
    4
}
fn one() -> String {
    "1".into()
}
fn ten() -> String {
    "10".into()
}
fn half() -> String {
    "0.5".into()
}

/// `cocoon proxy --config FILE`.
pub fn proxy(config: &Path) -> Result<()> {
    let c: ProxyToml = read_config(config)?;
    for (key, v) in [
        ("queue_per_model", c.queue_per_model),
        ("connections_per_listener", c.connections_per_listener),
        ("peer_queries_in_flight", c.peer_queries_in_flight),
        ("peer_queued_mib", c.peer_queued_mib),
    ] {
        anyhow::ensure!(v > 0, "{}: {key} must be at least 1", config.display());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let cfg = cocoon_proxy::ProxyConfig {
            dir: c.common.dir.clone(),
            worker_listen: c.worker_listen,
            client_listen: c.client_listen,
            root: c.common.root()?,
            worker_policy: c.common.policy()?,
            pow_difficulty: c.pow_difficulty,
            save_state_interval: Duration::from_secs(c.save_state_interval_secs.max(1)),
            request_timeout: Duration::from_secs(600),
            queue_per_model: c.queue_per_model,
            connections_per_listener: c.connections_per_listener,
            peer_limits: cocoon_net::rpc::Limits {
                queries_in_flight: c.peer_queries_in_flight,
                queued_bytes: c.peer_queued_mib.saturating_mul(1 << 20),
            },
            http_listen: c.http_listen,
            payout_threshold: cocoon_chain::parse_ton(&c.payout_threshold_ton)
                .context("payout_threshold_ton")?,
        };
        let quotes = std::sync::Arc::from(c.common.quotes()?);
        let running = match c.common.fake_ton()? {
            Some(fake) => {
                cocoon_proxy::Proxy::start_fake_ton(cfg, fake, c.common.wallet()?, quotes).await?
            }
            None => {
                let chain = c.common.chain()?;
                cocoon_proxy::Proxy::start(cfg, chain, c.common.wallet()?, quotes).await?
            }
        };
        println!(
            "proxy contract {} (voucher key {}); workers on {}, clients on {}{}",
            running.proxy.address(),
            hex::encode(running.proxy.public_key()),
            running.worker_addr,
            running.client_addr,
            running
                .http_addr
                .map(|a| format!("; dashboard http://{a}/stats"))
                .unwrap_or_default()
        );
        tokio::signal::ctrl_c().await?;
        let _ = cocoon_proxy::save_state_now(&running.proxy).await;
        running.stop();
        Ok(())
    })
}

/// `cocoon worker --config FILE`.
pub fn worker(config: &Path) -> Result<()> {
    let c: WorkerToml = read_config(config)?;
    let entries = c.entries();
    let several = entries.len() > 1;
    // Each model's engine and identity (an embedded engine loads here, once).
    let mut models: Vec<(Arc<dyn Engine>, String, u32)> = Vec::new();
    for m in &entries {
        let max_active = m.max_active.unwrap_or(c.max_active);
        let (engine, identity): (Arc<dyn Engine>, String) = if let Some(url) = &m.engine_url {
            let (engine, identity) = crate::model::http_engine(
                url,
                m.engine_model.as_deref(),
                &m.model,
                m.engine_tools,
            )?;
            (Arc::new(engine), identity)
        } else if m.model == "fake" {
            (
                Arc::new(FakeEngine::default()),
                cocoon_localnet::fake_model_identity(),
            )
        } else {
            let local = crate::model::resolve(&m.model)?;
            let engine = LlamaEngine::load(LlamaConfig {
                max_sequences: max_active,
                ..LlamaConfig::for_model(&local)
            })?;
            (Arc::new(engine), local.identity.to_string())
        };
        models.push((engine, identity, max_active));
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let quotes: Arc<dyn QuoteProvider> = std::sync::Arc::from(c.common.quotes()?);
        // What the workers run on: the reference's fake-TON root, or the chain (and the proxies'
        // image hashes its root lists).
        let on = match c.common.fake_ton()? {
            Some(fake) => WorkerRoot::FakeTon(fake),
            None => {
                let chain = c.common.chain()?;
                let root =
                    cocoon_chain::client::read_root(chain.as_ref(), &c.common.root()?).await?;
                WorkerRoot::Chain(chain, root.proxy_hashes.clone())
            }
        };
        let mut workers = Vec::new();
        for (i, (engine, identity, max_active)) in models.into_iter().enumerate() {
            // Several models: one worker each, announced separately, with a state directory
            // each; the same wallet, so the proxies pay one owner and only the first claims.
            let dir = match several {
                true => c.common.dir.join(state_dir_name(&identity)),
                false => c.common.dir.clone(),
            };
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
            let payout_threshold = match i {
                0 => cocoon_chain::parse_ton(&c.payout_threshold_ton)?,
                _ => u128::MAX,
            };
            let cfg = cocoon_worker::WorkerConfig {
                dir,
                root: c.common.root()?,
                proxies: c.proxies.clone(),
                model: identity.clone(),
                coefficient: c.coefficient,
                max_active,
                proxy_policy: c.common.policy()?,
                max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
                payout_threshold,
                // One dashboard: the first model's.
                http_listen: c.http_listen.filter(|_| i == 0),
            };
            let worker = match &on {
                WorkerRoot::FakeTon(fake) => cocoon_worker::Worker::new_fake_ton(
                    cfg,
                    fake.clone(),
                    c.common.wallet()?,
                    engine,
                    quotes.clone(),
                )?,
                WorkerRoot::Chain(chain, hashes) => cocoon_worker::Worker::new(
                    cfg,
                    chain.clone(),
                    c.common.wallet()?,
                    engine,
                    quotes.clone(),
                    hashes.clone(),
                )?,
            };
            println!("worker {} serving {identity}", worker.owner());
            workers.push(tokio::spawn(worker.run()));
        }
        tokio::select! {
            _ = async {
                for w in workers {
                    let _ = w.await;
                }
            } => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

/// What a worker config's workers run on.
enum WorkerRoot {
    /// The reference's fake-TON root.
    FakeTon(cocoon_chain::fake_ton::FakeTon),
    /// A chain, and the proxies' image hashes its root lists.
    Chain(Arc<dyn ChainClient>, Vec<[u8; 32]>),
}

/// A model's state directory name under the worker's `dir` when it serves several: the
/// identity's name, with anything but letters, digits, `-`, `_` and `.` made `_`.
fn state_dir_name(identity: &str) -> String {
    cocoon_engine::model::ModelIdentity::name_of(identity)
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "-_.".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect()
}

/// `cocoon client --config FILE`.
pub fn client(config: &Path) -> Result<()> {
    let c: ClientToml = read_config(config)?;
    let api_key = c
        .api_key
        .clone()
        .or_else(|| std::env::var("COCOON_API_KEY").ok())
        .context("api_key: set it in the config or COCOON_API_KEY")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let cfg = cocoon_client::ClientConfig {
            dir: c.common.dir.clone(),
            root: c.common.root()?,
            proxies: c.proxies.clone(),
            deposit: cocoon_chain::parse_ton(&c.deposit_ton)?,
            stake: cocoon_chain::parse_ton(&c.stake_ton)?,
            proxy_policy: c.common.policy()?,
            max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
            max_coefficient: 10_000,
            timeout: Duration::from_secs(600),
        };
        let quotes = std::sync::Arc::from(c.common.quotes()?);
        let client = match c.common.fake_ton()? {
            Some(fake) => {
                cocoon_client::Client::start_fake_ton(cfg, fake, c.common.wallet()?, quotes).await?
            }
            None => {
                let chain = c.common.chain()?;
                cocoon_client::Client::start(cfg, chain, c.common.wallet()?, quotes).await?
            }
        };
        let listener = cocoon_net::listen(c.listen, "the OpenAI API").await?;
        println!(
            "OpenAI API on http://{}/v1 (client {})",
            listener.local_addr()?,
            client.owner()
        );
        tokio::select! {
            r = cocoon_client::server::serve(listener, client.clone(), api_key) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = client.commit_all().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fake_ton` stands instead of a chain, alone, and its file must parse.
    #[test]
    fn a_fake_ton_root_replaces_the_chain_in_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-ton-config.json");
        std::fs::write(
            &fake,
            r#"{"registered_proxies": [{"seqno": 1, "address": "127.0.0.1:1 127.0.0.1:2"}], "price_per_token": 2}"#,
        )
        .unwrap();
        let common = |extra: &str| -> Common {
            toml::from_str(&format!(
                "wallet = \"w.json\"\ndir = \"x\"\nfake_ton = {:?}\n{extra}",
                fake.display().to_string()
            ))
            .unwrap()
        };
        common("").validate().unwrap();
        assert_eq!(common("").fake_ton().unwrap().unwrap().price_per_token, 2);
        let both = common("chain_api = \"http://127.0.0.1:1\"")
            .validate()
            .unwrap_err();
        assert!(
            both.to_string()
                .contains("exactly one of chain_api, chain_dir and fake_ton"),
            "{both}"
        );
        let main = common("network = \"mainnet\"\ntee = \"tdx\"\npolicy = \"tdx\"")
            .validate()
            .unwrap_err();
        assert!(main.to_string().contains("fake_ton"), "{main}");
        std::fs::write(&fake, "{\"price_per_token\": \"two\"}").unwrap();
        let bad = format!("{:#}", common("").validate().unwrap_err());
        assert!(
            bad.contains("fake_ton") && bad.contains("price_per_token"),
            "{bad}"
        );
    }

    /// The wallet comes from COCOON_WALLET_MNEMONIC when it is set, else from the file.
    #[test]
    fn the_wallet_secret_may_come_from_the_environment() {
        let text = format!("root = \"0:{}\"\nwallet = \"/nonexistent/wallet.json\"\ndir = \"x\"\nchain_dir = \"x\"\n", "11".repeat(32));
        let c: Common = toml::from_str(&text).unwrap();
        let err = c.wallet().err().unwrap().to_string();
        assert!(err.starts_with("wallet"), "{err}");
        let m = cocoon_chain::mnemonic::Mnemonic::generate();
        std::env::set_var("COCOON_WALLET_MNEMONIC", m.phrase());
        let (keys, _) = c.wallet().unwrap();
        std::env::remove_var("COCOON_WALLET_MNEMONIC");
        assert_eq!(keys.public_key(), m.keypair().public_key());
    }
}

#[cfg(test)]
mod worker_toml_tests {
    use super::*;

    fn worker(extra: &str) -> Result<WorkerToml> {
        let t: WorkerToml = toml::from_str(&format!(
            "wallet = \"w.json\"\ndir = \"x\"\nchain_api = \"http://127.0.0.1:1\"\nroot = \"0:{}\"\n{extra}", "ab".repeat(32)
        ))?;
        t.validate()?;
        Ok(t)
    }

    /// `engine_tools` says an HTTP engine calls tools: it needs that engine, and it reaches the
    /// model entry (top level or in `[[models]]`).
    #[test]
    fn engine_tools_needs_an_engine_url() {
        let t =
            worker("model = \"m@aa\"\nengine_url = \"http://127.0.0.1:9\"\nengine_tools = true")
                .unwrap();
        assert!(t.entries()[0].engine_tools);
        let e = worker("model = \"smollm2\"\nengine_tools = true").unwrap_err();
        assert!(
            e.to_string()
                .contains("engine_tools: says an engine_url server calls tools"),
            "{e}"
        );
        let t = worker(
            "[[models]]\nmodel = \"m@aa\"\nengine_url = \"http://127.0.0.1:9\"\nengine_tools = true\n[[models]]\nmodel = \"n@bb\"\nengine_url = \"http://127.0.0.1:9\"",
        )
        .unwrap();
        let tools: Vec<bool> = t.entries().iter().map(|m| m.engine_tools).collect();
        assert_eq!(tools, [true, false]);
        let e = worker("engine_tools = true\n[[models]]\nmodel = \"m@aa\"\nengine_url = \"http://127.0.0.1:9\"")
            .unwrap_err();
        assert!(e.to_string().contains("give them in each entry"), "{e}");
    }

    /// The proxy's per-peer limits default to the connection layer's and can be set.
    #[test]
    fn proxy_peer_limits_have_defaults_and_can_be_set() {
        let base = format!(
            "wallet = \"w.json\"\ndir = \"x\"\nchain_api = \"http://127.0.0.1:1\"\nroot = \"0:{}\"\nworker_listen = \"127.0.0.1:1\"\nclient_listen = \"127.0.0.1:2\"\n",
            "ab".repeat(32)
        );
        let t: ProxyToml = toml::from_str(&base).unwrap();
        assert_eq!((t.peer_queries_in_flight, t.peer_queued_mib), (256, 16));
        assert_eq!(t.payout_threshold_ton, "10");
        let t: ProxyToml = toml::from_str(&format!(
            "{base}peer_queries_in_flight = 8\npeer_queued_mib = 2\npayout_threshold_ton = \"0\"\n"
        ))
        .unwrap();
        assert_eq!((t.peer_queries_in_flight, t.peer_queued_mib), (8, 2));
        assert_eq!(t.payout_threshold_ton, "0");
    }
}
