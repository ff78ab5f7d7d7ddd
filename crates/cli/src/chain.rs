//! `cocoon chain …`, `cocoon wallet …` and `cocoon root …`: the local chain, TON wallets and the
//! root registry from the command line.
//!
//! Every command that reads or writes the chain takes either `--dir DIR` (the local chain in
//! that directory, opened in process) or `--api URL` (any toncenter-v2 endpoint: `cocoon chain
//! serve`, or a public TON provider with `--network mainnet|testnet`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cocoon_chain::address::FriendlyFlags;
use cocoon_chain::client::{self, ChainClient, LocalClient, ToncenterClient};
use cocoon_chain::contracts::Params;
use cocoon_chain::local::{Clock, Genesis, GenesisSpec, LocalChain};
use cocoon_chain::mnemonic::Mnemonic;
use cocoon_chain::wallet::{OutMessage, Wallet, WalletFile, WalletVersion};
use cocoon_chain::{format_ton, parse_ton, Address, Network, TON};

/// Where a command finds the chain.
#[derive(Args, Clone, Debug)]
pub struct ChainArgs {
    /// A local chain directory (opened in process).
    #[arg(long, conflicts_with = "api")]
    pub dir: Option<PathBuf>,
    /// A toncenter-v2 API base URL, e.g. http://127.0.0.1:8081/api/v2.
    #[arg(long)]
    pub api: Option<String>,
    /// API key for the toncenter endpoint (also `TONCENTER_API_KEY`).
    #[arg(long, env = "TONCENTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Which network `--api` serves: mainnet, testnet or local.
    #[arg(long, default_value = "local")]
    pub network: Network,
}

impl ChainArgs {
    /// Opens the chain client these arguments name.
    pub fn open(&self) -> Result<Arc<dyn ChainClient>> {
        match (&self.dir, &self.api) {
            (Some(dir), None) => open_dir(dir, false),
            (None, Some(url)) => Ok(Arc::new(ToncenterClient::new(
                url,
                self.api_key.clone(),
                self.network,
            ))),
            (None, None) => {
                bail!("say which chain: --dir DIR (local chain) or --api URL (toncenter v2)")
            }
            (Some(_), Some(_)) => bail!("--dir and --api are exclusive"),
        }
    }

    pub fn network(&self) -> Network {
        if self.dir.is_some() {
            Network::Local
        } else {
            self.network
        }
    }
}

/// Opens the local chain in `dir`. A running `cocoon up` / `cocoon chain serve` / role holds it
/// in memory: then this talks to its API instead of opening a second copy, whose writes that
/// process would overwrite. Otherwise the chain opens in this process; with `hold` (a role that
/// keeps it for its whole life) the directory is claimed until this process exits.
pub(crate) fn open_dir(dir: &Path, hold: bool) -> Result<Arc<dyn ChainClient>> {
    if let Some(owner) = cocoon_chain::local::owner::owner_of(dir) {
        let Some(api) = owner.api else {
            bail!("{}", cocoon_chain::local::owner::in_use(dir, &owner));
        };
        return Ok(Arc::new(ToncenterClient::new(&api, None, Network::Local)));
    }
    let chain = LocalChain::open(dir)?.with_context(|| {
        format!(
            "no local chain in {} (run `cocoon chain init --dir {}`)",
            dir.display(),
            dir.display()
        )
    })?;
    if hold {
        // Given back when this process exits: a dead owner's claim is stale.
        std::mem::forget(cocoon_chain::local::owner::claim(dir, None)?);
    }
    Ok(Arc::new(LocalClient::new(Arc::new(Mutex::new(chain)))))
}

/// `cocoon chain …`.
#[derive(Subcommand)]
pub enum ChainCommand {
    /// Create a local chain: funded wallets and a root contract (genesis).
    Init {
        /// Directory for the chain's state, genesis and wallet files.
        #[arg(long)]
        dir: PathBuf,
        /// Extra wallets to create, NAME=TON (admin, proxy, client and worker always exist).
        #[arg(long = "wallet", value_name = "NAME=TON")]
        wallets: Vec<String>,
        /// Allowed proxy image hashes (hex); default: the fake-TDX image.
        #[arg(long = "proxy-hash")]
        proxy_hashes: Vec<String>,
        /// Allowed worker image hashes (hex); default: the fake-TDX image.
        #[arg(long = "worker-hash")]
        worker_hashes: Vec<String>,
        /// Allowed models, HASH=TYPE (hex sha256 of the weights = model type name).
        #[arg(long = "model", value_name = "HASH=TYPE")]
        models: Vec<String>,
        /// Replace an existing chain in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Serve a local chain over the toncenter v2 HTTP API (state kept in DIR across restarts).
    Serve {
        /// The chain directory (from `cocoon chain init`).
        #[arg(long)]
        dir: PathBuf,
        /// Listen address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
    /// Move the local chain's clock forward (to pass close delays).
    Advance {
        /// The chain directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds.
        seconds: u32,
    },
}

/// `cocoon wallet …`.
#[derive(Subcommand)]
pub enum WalletCommand {
    /// Create a wallet: a new 24-word mnemonic, saved to a file (mode 0600).
    New {
        /// Where to write the wallet file.
        #[arg(long)]
        out: PathBuf,
        /// Wallet contract version: v5r1 or v4r2.
        #[arg(long, default_value = "v5r1")]
        version: WalletVersion,
        /// Network the address is for (testnet changes the v5r1 address and the address flags).
        #[arg(long, default_value = "mainnet")]
        network: Network,
    },
    /// Show a wallet's addresses and public key (from a wallet file or a mnemonic).
    Show {
        #[command(flatten)]
        wallet: WalletArgs,
        /// Network the address is for.
        #[arg(long, default_value = "mainnet")]
        network: Network,
    },
    /// Print an address's balance.
    Balance {
        /// Address (raw or friendly); default: the wallet's.
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Send TON from a wallet.
    Send {
        #[command(flatten)]
        wallet: WalletArgs,
        /// Destination: an address (raw or friendly) or a wallet file.
        #[arg(long)]
        to: String,
        /// Amount in TON, e.g. 1.5.
        #[arg(long)]
        amount: String,
        /// Text comment.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// A role's machine wallet (COCOON's wallet, its key in the role's state directory), as
    /// its owner: show it, take its money back, block or unblock the machine's key.
    Machine {
        #[command(subcommand)]
        cmd: crate::machine_wallet::MachineCommand,
    },
}

/// Which wallet a command uses.
#[derive(Args, Clone, Debug)]
pub struct WalletArgs {
    /// A wallet file (from `cocoon wallet new`, or DIR/wallets/NAME.json of a local chain).
    #[arg(long)]
    pub wallet: Option<PathBuf>,
    /// The 24 words instead of a file (also `COCOON_MNEMONIC`).
    #[arg(long, env = "COCOON_MNEMONIC", hide_env_values = true)]
    pub mnemonic: Option<String>,
    /// Wallet version when `--mnemonic` is used.
    #[arg(long = "wallet-version", default_value = "v5r1")]
    pub version: WalletVersion,
}

impl WalletArgs {
    pub fn load(&self, network: Network) -> Result<(cocoon_chain::keys::Keypair, Wallet)> {
        let (phrase, version) = match (&self.wallet, &self.mnemonic) {
            (Some(path), _) => {
                let f = WalletFile::read(path)?;
                (f.mnemonic, f.version)
            }
            (None, Some(m)) => (m.clone(), self.version),
            (None, None) => bail!("say which wallet: --wallet FILE or --mnemonic \"24 words\""),
        };
        Ok(cocoon_chain::wallet::open(&phrase, version, network)?)
    }
}

pub(crate) fn hash32(text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).with_context(|| format!("{what} {text:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} {text:?} is not 32 bytes"))
}

/// The image hash of the fake-TDX measurements every local role uses by default.
pub fn fake_tdx_image_hash() -> [u8; 32] {
    cocoon_tee::quote::Measurements::default().image_hash()
}

/// Reads DIR/genesis.json.
pub fn read_genesis(dir: &Path) -> Result<Genesis> {
    let path = dir.join("genesis.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is this a chain directory?)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a genesis file", path.display()))
}

/// Creates a local chain in `dir` from `spec` and writes genesis.json and wallets/NAME.json.
pub fn init_chain(dir: &Path, spec: &GenesisSpec) -> Result<Genesis> {
    let mut chain = LocalChain::new(Clock::System { offset: 0 })?;
    let genesis = chain.genesis(spec)?;
    chain.persist_in(dir)?;
    genesis.write_files(dir)?;
    Ok(genesis)
}

/// Runs a `chain` subcommand.
pub fn run_chain(cmd: ChainCommand) -> Result<()> {
    match cmd {
        ChainCommand::Init {
            dir,
            wallets,
            proxy_hashes,
            worker_hashes,
            models,
            force,
        } => {
            if dir.join("chain.json").exists() && !force {
                bail!(
                    "{} already holds a chain (use --force to replace it)",
                    dir.display()
                );
            }
            let mut spec = GenesisSpec {
                params: Params::local_default(),
                wallets: ["proxy", "client", "worker"]
                    .iter()
                    .map(|n| (n.to_string(), 1_000 * TON))
                    .collect(),
                proxy_hashes: proxy_hashes
                    .iter()
                    .map(|h| hash32(h, "proxy hash"))
                    .collect::<Result<_>>()?,
                worker_hashes: worker_hashes
                    .iter()
                    .map(|h| hash32(h, "worker hash"))
                    .collect::<Result<_>>()?,
                models: Vec::new(),
            };
            spec.wallets.insert(0, ("admin".into(), 10_000 * TON));
            if spec.proxy_hashes.is_empty() {
                spec.proxy_hashes.push(fake_tdx_image_hash());
            }
            if spec.worker_hashes.is_empty() {
                spec.worker_hashes.push(fake_tdx_image_hash());
            }
            for w in wallets {
                let (name, amount) = w
                    .split_once('=')
                    .with_context(|| format!("--wallet {w:?}: expected NAME=TON"))?;
                spec.wallets.push((name.to_string(), parse_ton(amount)?));
            }
            for m in models {
                let (hash, name) = m
                    .split_once('=')
                    .with_context(|| format!("--model {m:?}: expected HASH=TYPE"))?;
                spec.models
                    .push((hash32(hash, "model hash")?, name.to_string()));
            }
            if force {
                let _ = std::fs::remove_file(dir.join("chain.json"));
            }
            let genesis = init_chain(&dir, &spec)?;
            println!("local chain created in {}", dir.display());
            println!(
                "root contract: {}",
                genesis.root.to_friendly(FriendlyFlags {
                    bounceable: true,
                    testnet: false
                })
            );
            for w in &genesis.wallets {
                println!(
                    "wallet {:<8} {}  ({}/wallets/{}.json)",
                    w.name,
                    w.address.to_friendly(FriendlyFlags {
                        bounceable: false,
                        testnet: false
                    }),
                    dir.display(),
                    w.name
                );
            }
            Ok(())
        }
        ChainCommand::Serve { dir, listen } => {
            let missing = || {
                format!(
                    "no local chain in {} (run `cocoon chain init --dir {}` first)",
                    dir.display(),
                    dir.display()
                )
            };
            if !dir.is_dir() {
                bail!("{}", missing());
            }
            // Held from before the chain is read until the server stops.
            let mut claim = cocoon_chain::local::owner::claim(&dir, None)?;
            let chain = LocalChain::open(&dir)?.with_context(missing)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let listener = cocoon_chain::toncenter::bind(listen, false)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let addr = listener.local_addr()?;
                let api = format!("http://{addr}/api/v2");
                claim.set_api(Some(api.clone()))?;
                println!("local chain API on {api} (state in {})", dir.display());
                let shared = Arc::new(Mutex::new(chain));
                tokio::select! {
                    r = cocoon_chain::toncenter::serve(listener, shared) => r.context("serving")?,
                    _ = tokio::signal::ctrl_c() => println!("stopped"),
                }
                Ok(())
            })
        }
        ChainCommand::Advance { dir, seconds } => {
            if let Some(owner) = cocoon_chain::local::owner::owner_of(&dir) {
                let Some(api) = owner.api else {
                    bail!("{}", cocoon_chain::local::owner::in_use(&dir, &owner));
                };
                let rt = tokio::runtime::Runtime::new()?;
                let now =
                    rt.block_on(ToncenterClient::new(&api, None, Network::Local).advance(seconds))?;
                println!("chain time is now {now}");
                return Ok(());
            }
            let mut chain = LocalChain::open(&dir)?
                .with_context(|| format!("no local chain in {}", dir.display()))?;
            chain.advance(seconds)?;
            println!("chain time is now {}", chain.now());
            Ok(())
        }
    }
}

/// Runs a `wallet` subcommand.
pub fn run_wallet(cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Machine { cmd } => crate::machine_wallet::run(cmd),
        WalletCommand::New {
            out,
            version,
            network,
        } => {
            if out.exists() {
                bail!("{} exists; not overwriting a wallet", out.display());
            }
            let mnemonic = Mnemonic::generate();
            let wallet = Wallet::new(version, mnemonic.keypair().public_key(), network);
            let address = wallet.address()?;
            let file = WalletFile {
                mnemonic: mnemonic.phrase(),
                version,
                address,
            };
            file.write(&out)?;
            println!(
                "new {version:?} wallet written to {} (keep it secret: it holds the 24 words)",
                out.display()
            );
            println!(
                "address: {}",
                address.to_friendly(FriendlyFlags {
                    bounceable: false,
                    testnet: network.is_testnet()
                })
            );
            Ok(())
        }
        WalletCommand::Show { wallet, network } => {
            let (keys, w) = wallet.load(network)?;
            let a = w.address()?;
            let t = network.is_testnet();
            println!("version:         {:?}", w.version);
            println!("raw address:     {}", a.to_raw());
            println!(
                "non-bounceable:  {}",
                a.to_friendly(FriendlyFlags {
                    bounceable: false,
                    testnet: t
                })
            );
            println!(
                "bounceable:      {}",
                a.to_friendly(FriendlyFlags {
                    bounceable: true,
                    testnet: t
                })
            );
            println!("public key:      {}", hex::encode(keys.public_key()));
            Ok(())
        }
        WalletCommand::Balance {
            address,
            wallet,
            chain,
        } => {
            let address = match address {
                Some(a) => a.parse::<Address>()?,
                None => wallet.load(chain.network())?.1.address()?,
            };
            let client = chain.open()?;
            let rt = tokio::runtime::Runtime::new()?;
            let acc = rt.block_on(client.account(&address))?;
            println!(
                "{} TON ({} nanotons), account {}",
                format_ton(acc.balance),
                acc.balance,
                acc.status
            );
            Ok(())
        }
        WalletCommand::Send {
            wallet,
            to,
            amount,
            comment,
            chain,
        } => {
            let (keys, w) = wallet.load(chain.network())?;
            let (to, flags) = match Address::parse_with_flags(&to) {
                Ok(parsed) => parsed,
                // A wallet file names its (new, so not yet deployed: no bounce) address.
                Err(_) if Path::new(&to).is_file() => (
                    WalletFile::read(Path::new(&to))?
                        .open(chain.network())?
                        .1
                        .address()?,
                    None,
                ),
                Err(e) => bail!("--to {to:?} is neither an address ({e}) nor a wallet file"),
            };
            let amount = parse_ton(&amount)?;
            if amount == 0 {
                bail!("--amount must be more than 0");
            }
            let body = comment.map(|c| text_comment(&c)).transpose()?;
            let mut msg = OutMessage::transfer(to, amount, body);
            let client = chain.open()?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                // A friendly address carries the bounce flag (UQ… = non-bounceable, for new
                // wallets); for a raw address, bounce only to a deployed contract, or the money
                // would come straight back from an empty account.
                msg.bounce = match flags {
                    Some(f) => f.bounceable,
                    None => client.account(&to).await?.status == "active",
                };
                let from = w.address()?;
                let balance = client.account(&from).await?.balance;
                if balance < amount {
                    bail!(
                        "insufficient funds: {} has {} TON, sending {} TON",
                        from,
                        format_ton(balance),
                        format_ton(amount)
                    );
                }
                let seqno = client::send_transfer(client.as_ref(), &w, &keys, &[msg]).await?;
                println!(
                    "sent {} TON from {} to {} (seqno {seqno})",
                    format_ton(amount),
                    from,
                    to
                );
                let after = client.account(&from).await?.balance;
                println!("balance now {} TON", format_ton(after));
                Ok(())
            })
        }
    }
}

fn text_comment(text: &str) -> Result<cocoon_chain::tycho_types::cell::Cell> {
    Ok(cocoon_chain::messages::text_comment(text)?)
}

/// The root a command names: `--root`, else the local chain's in `--dir`.
pub(crate) fn root_address(root: Option<String>, chain: &ChainArgs) -> Result<Address> {
    match (root, &chain.dir) {
        (Some(r), _) => Ok(r.parse::<Address>()?),
        (None, Some(dir)) => Ok(read_genesis(dir)?.root),
        (None, None) => bail!("say which root: --root ADDRESS (or --dir DIR of a local chain)"),
    }
}
