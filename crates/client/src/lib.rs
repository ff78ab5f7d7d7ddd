//! The client runner, usable as a library.
//!
//! [`Client::start`] reads the root contract, and for each proxy: verifies its attestation
//! (RA-TLS, image hash in the root) before sending anything, checks that its contract is
//! registered and holds the voucher key it announces, makes sure our client contract at that
//! proxy exists, is funded and staked and holds the hash of our secret, and authorizes (the
//! short way with the secret, or the long way by registering the proxy's nonce at the contract).
//! [`Client::query`] sends a request to the first live proxy connection (a closed one drops
//! out, so the next takes over; a proxy's refusal is returned, not retried elsewhere) and
//! streams the answer. Every charge voucher the proxy sends is checked and kept; the newest
//! is committed on chain once half the stake is used, and the contract is topped up by one
//! stake when the paid balance minus uncommitted use falls under half the stake.
//! [`server`] puts the OpenAI HTTP API in front of it.

#![forbid(unsafe_code)]

mod funding;
mod query;
pub mod quote;
mod requests;
pub mod server;
mod session;
mod stats;

pub use requests::catalogue;

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
use cocoon_chain::messages::{self, MIN_FEE};
use cocoon_chain::reference_contracts::{self as reference, AnnouncedProxy, FakeRoot};
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
    /// The paying wallet (the person's): it keeps the machine wallet funded.
    wallet: (Keypair, Wallet),
    /// COCOON's machine wallet (the network's code): this client's own key, owned by `wallet`.
    /// It owns our client contracts and sends every message to them, as a reference client's
    /// `CocoonWallet` does.
    machine: cocoon_chain::cocoon_wallet::MachineWallet,
    identity: Arc<cocoon_net::identity::Renewing>,
    secret: [u8; 32],
    conns: Mutex<Vec<Arc<ProxyConn>>>,
    accounts: Mutex<HashMap<Address, Account>>,
    funding: tokio::sync::Mutex<()>,
    /// Prometheus metrics (also drawn by the dashboard).
    pub metrics: Arc<cocoon_observe::Metrics>,
    latency_total: Arc<Mutex<f64>>,
    /// Where the next request starts its turn over the live proxies.
    next_proxy: AtomicUsize,
}

/// A model the network serves, with its workers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// Model identity `name@sha256`.
    pub id: String,
    /// Workers: (coefficient, running, max).
    pub workers: Vec<(i32, i32, i32)>,
    /// What at least one of its workers does beyond text (as the proxies report it).
    pub features: cocoon_engine::Features,
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
        let machine = cocoon_chain::cocoon_wallet::MachineWallet::of_state_dir(
            &cfg.dir,
            wallet.1.address()?,
        )?;
        let client = Arc::new(Client {
            cfg: cfg.clone(),
            chain,
            fake_ton,
            wallet,
            machine,
            identity,
            secret,
            conns: Mutex::new(Vec::new()),
            accounts: Mutex::new(HashMap::new()),
            funding: tokio::sync::Mutex::new(()),
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

    /// The chain, or an error saying there is none (fake-TON mode).
    fn chain(&self) -> Result<&Arc<dyn ChainClient>, ClientError> {
        self.chain.as_ref().ok_or_else(|| {
            ClientError::Refused(
                "this client runs on a fake-TON root: there is no chain to send to or read from"
                    .into(),
            )
        })
    }

    /// Our client contracts' owner: the machine wallet's address (what the proxies know us by).
    pub fn owner(&self) -> Address {
        self.machine.address()
    }

    /// The paying wallet's address (the machine wallet's owner).
    pub fn wallet_address(&self) -> Address {
        self.machine.owner()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
