//! The Cocoon payment contracts as data: committed code, initial data, addresses, and parsers
//! of their stored state. Layouts: `contracts/SPEC.md`.

use std::collections::BTreeMap;

use tycho_types::cell::{Cell, CellBuilder, CellSlice, HashBytes, Load};
use tycho_types::dict::Dict;
use tycho_types::models::StateInit;

use crate::address::Address;
use crate::cells::*;
use crate::error::{ChainError, Result};

const ROOT_BOC: &[u8] = include_bytes!("../../../contracts/build/root.boc");
const PROXY_BOC: &[u8] = include_bytes!("../../../contracts/build/proxy.boc");
const CLIENT_BOC: &[u8] = include_bytes!("../../../contracts/build/client.boc");
const WORKER_BOC: &[u8] = include_bytes!("../../../contracts/build/worker.boc");

/// The compiled code of the four contracts.
#[derive(Clone, Debug)]
pub struct ContractCodes {
    /// Root (registry) code.
    pub root: Cell,
    /// Proxy contract code.
    pub proxy: Cell,
    /// Client contract code.
    pub client: Cell,
    /// Worker contract code.
    pub worker: Cell,
}

impl ContractCodes {
    /// The code committed in `contracts/build/` (compiled from `contracts/src/` by Tolk).
    pub fn embedded() -> Self {
        let load = |b: &[u8]| from_boc(b).expect("committed contract BOC");
        ContractCodes {
            root: load(ROOT_BOC),
            proxy: load(PROXY_BOC),
            client: load(CLIENT_BOC),
            worker: load(WORKER_BOC),
        }
    }
}

/// The address of a contract with this StateInit in workchain 0.
pub fn address_of(init: &StateInit) -> Result<Address> {
    Ok(Address::new(CellBuilder::build_from(init)?.repr_hash().0))
}

fn state_init(code: &Cell, data: Cell) -> StateInit {
    StateInit {
        split_depth: None,
        special: None,
        code: Some(code.clone()),
        data: Some(data),
        libraries: Default::default(),
    }
}

/// Network-wide prices and rules, as the root stores them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// What a client pays per (adjusted) token, nanotons.
    pub price_per_token: u128,
    /// What a worker earns per (adjusted) token, nanotons.
    pub worker_fee_per_token: u128,
    /// Multiplier of uncached prompt tokens, ten-thousandths.
    pub prompt_mult: u32,
    /// Multiplier of cached prompt tokens.
    pub cached_mult: u32,
    /// Multiplier of completion (non-reasoning) tokens.
    pub completion_mult: u32,
    /// Multiplier of reasoning tokens.
    pub reasoning_mult: u32,
    /// Seconds between a proxy's close request and its completion.
    pub proxy_delay_before_close: u32,
    /// Seconds a client waits for its stake when the proxy does not answer a refund.
    pub client_delay_before_close: u32,
    /// Minimum proxy stake, nanotons.
    pub min_proxy_stake: u128,
    /// Minimum client stake, nanotons.
    pub min_client_stake: u128,
}

impl Params {
    /// Defaults for a local network: 20 nanotons per token from clients, 16 to workers, all
    /// multipliers 1.0, one day of close delay, stakes of 1 TON (proxy) and 0.5 TON (client).
    pub fn local_default() -> Self {
        Params {
            price_per_token: 20,
            worker_fee_per_token: 16,
            prompt_mult: 10_000,
            cached_mult: 10_000,
            completion_mult: 10_000,
            reasoning_mult: 10_000,
            proxy_delay_before_close: 86_400,
            client_delay_before_close: 86_400,
            min_proxy_stake: crate::TON,
            min_client_stake: crate::TON / 2,
        }
    }

    /// Serializes as the `Params` cell.
    pub fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_coins(&mut b, self.price_per_token)?;
        store_coins(&mut b, self.worker_fee_per_token)?;
        for m in [
            self.prompt_mult,
            self.cached_mult,
            self.completion_mult,
            self.reasoning_mult,
        ] {
            b.store_u32(m)?;
        }
        b.store_u32(self.proxy_delay_before_close)?;
        b.store_u32(self.client_delay_before_close)?;
        store_coins(&mut b, self.min_proxy_stake)?;
        store_coins(&mut b, self.min_client_stake)?;
        Ok(b.build()?)
    }

    /// Parses a `Params` cell.
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = cell.as_slice()?;
        Ok(Params {
            price_per_token: load_coins(&mut s)?,
            worker_fee_per_token: load_coins(&mut s)?,
            prompt_mult: s.load_u32()?,
            cached_mult: s.load_u32()?,
            completion_mult: s.load_u32()?,
            reasoning_mult: s.load_u32()?,
            proxy_delay_before_close: s.load_u32()?,
            client_delay_before_close: s.load_u32()?,
            min_proxy_stake: load_coins(&mut s)?,
            min_client_stake: load_coins(&mut s)?,
        })
    }
}

/// A proxy as the root lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegisteredProxy {
    /// Registry sequence number.
    pub seq: u32,
    /// The proxy contract's address.
    pub address: Address,
    /// Where clients and workers connect (`host:port`).
    pub endpoint: String,
}

impl RegisteredProxy {
    /// The endpoint string a proxy registers: where clients and workers connect.
    pub fn endpoint_string(clients: std::net::SocketAddr, workers: std::net::SocketAddr) -> String {
        format!("clients={clients};workers={workers}")
    }

    fn part(&self, key: &str) -> Option<std::net::SocketAddr> {
        self.endpoint
            .split(';')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Where clients connect (from `clients=HOST:PORT` in the endpoint).
    pub fn endpoint_client(&self) -> Option<std::net::SocketAddr> {
        self.part("clients")
    }

    /// Where workers connect (from `workers=HOST:PORT` in the endpoint).
    pub fn endpoint_worker(&self) -> Option<std::net::SocketAddr> {
        self.part("workers")
    }
}

/// Everything the root contract stores.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RootData {
    /// Who may change the registry.
    pub owner: Address,
    /// Bumped by every admin operation.
    pub version: u32,
    /// Allowed proxy image hashes (hex).
    #[serde(serialize_with = "hex_list")]
    pub proxy_hashes: Vec<[u8; 32]>,
    /// Allowed worker image hashes.
    #[serde(serialize_with = "hex_list")]
    pub worker_hashes: Vec<[u8; 32]>,
    /// Allowed model hashes → model type name.
    #[serde(serialize_with = "hex_map")]
    pub models: BTreeMap<[u8; 32], String>,
    /// Registered proxies.
    pub proxies: Vec<RegisteredProxy>,
    /// Prices and rules.
    pub params: Params,
    /// Code of the proxy, client and worker contracts.
    #[serde(skip)]
    pub codes: ContractCodes,
}

fn hex_list<S: serde::Serializer>(v: &[[u8; 32]], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

fn hex_map<S: serde::Serializer>(
    v: &BTreeMap<[u8; 32], String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, n)| (hex::encode(k), n)))
}

/// Initial state of a root contract.
#[derive(Clone, Debug)]
pub struct RootInit {
    /// Admin.
    pub owner: Address,
    /// Initial prices.
    pub params: Params,
    /// Code to register (root code is taken from here too).
    pub codes: ContractCodes,
}

fn empty_registry() -> Result<Cell> {
    let mut b = CellBuilder::new();
    for _ in 0..4 {
        b.store_bit_zero()?; // empty HashmapE
    }
    b.store_u32(0)?;
    Ok(b.build()?)
}

/// A cell referencing each code in `codes`, in order (how the root and proxy keep them).
pub(crate) fn codes_cell(codes: &[&Cell]) -> Result<Cell> {
    let mut b = CellBuilder::new();
    for c in codes {
        b.store_reference((*c).clone())?;
    }
    Ok(b.build()?)
}

impl RootInit {
    /// Initial data: version 0, empty registry.
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        b.store_u32(0)?;
        b.store_reference(empty_registry()?)?;
        b.store_reference(self.params.to_cell()?)?;
        b.store_reference(codes_cell(&[
            &self.codes.proxy,
            &self.codes.client,
            &self.codes.worker,
        ])?)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the root.
    pub fn state_init(&self) -> Result<StateInit> {
        Ok(state_init(&self.codes.root, self.data()?))
    }
}

impl RootData {
    /// Parses the root's data cell; `root_code` fills `codes.root`.
    pub fn parse(data: &Cell, root_code: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let owner = load_address(&mut s)?;
        let version = s.load_u32()?;
        let registry = s.load_reference_cloned()?;
        let params = Params::from_cell(&s.load_reference_cloned()?)?;
        let codes = s.load_reference_cloned()?;
        let mut cs = codes.as_slice()?;
        let codes = ContractCodes {
            root: root_code.clone(),
            proxy: cs.load_reference_cloned()?,
            client: cs.load_reference_cloned()?,
            worker: cs.load_reference_cloned()?,
        };
        let mut r = registry.as_slice()?;
        let proxy_hashes = hash_set(&mut r)?;
        let worker_hashes = hash_set(&mut r)?;
        let models_dict = Dict::<HashBytes, Cell>::load_from(&mut r)?;
        let mut models = BTreeMap::new();
        for entry in models_dict.iter() {
            let (hash, name) = entry?;
            let name = String::from_utf8(read_snake_string(&name)?)
                .map_err(|_| ChainError::layout("root", "model type name is not UTF-8"))?;
            models.insert(hash.0, name);
        }
        let proxies_dict = Dict::<u32, Cell>::load_from(&mut r)?;
        let mut proxies = Vec::new();
        for entry in proxies_dict.iter() {
            let (seq, cell) = entry?;
            let mut p = cell.as_slice()?;
            let address = load_address(&mut p)?;
            let endpoint = String::from_utf8(read_snake_string(&p.load_reference_cloned()?)?)
                .map_err(|_| ChainError::layout("root", "proxy endpoint is not UTF-8"))?;
            proxies.push(RegisteredProxy {
                seq,
                address,
                endpoint,
            });
        }
        Ok(RootData {
            owner,
            version,
            proxy_hashes,
            worker_hashes,
            models,
            proxies,
            params,
            codes,
        })
    }
}

fn hash_set(s: &mut CellSlice<'_>) -> Result<Vec<[u8; 32]>> {
    let dict = Dict::<HashBytes, ()>::load_from(s)?;
    dict.keys().map(|k| Ok(k?.0)).collect()
}

/// Initial state of a proxy contract (one per proxy instance).
#[derive(Clone, Debug)]
pub struct ProxyInit {
    /// Who receives the proxy's earnings and stake on close.
    pub owner: Address,
    /// The proxy's voucher key (inside its TEE).
    pub proxy_public_key: [u8; 32],
    /// The root this proxy belongs to.
    pub root: Address,
    /// Prices and rules copied from the root at deploy time.
    pub params: Params,
    /// Client contract code (from the root).
    pub client_code: Cell,
    /// Worker contract code (from the root).
    pub worker_code: Cell,
}

impl ProxyInit {
    /// Initial data (state zero).
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        store_u256(&mut b, &self.proxy_public_key)?;
        b.store_small_uint(0, 2)?;
        store_coins(&mut b, 0)?;
        store_coins(&mut b, 0)?;
        b.store_u64(0)?;
        b.store_u32(0)?;
        let mut extra = CellBuilder::new();
        store_address(&mut extra, &self.root)?;
        store_u256(&mut extra, &[0; 32])?;
        b.store_reference(extra.build()?)?;
        b.store_reference(self.params.to_cell()?)?;
        b.store_reference(codes_cell(&[&self.client_code, &self.worker_code])?)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the proxy contract with `code`.
    pub fn state_init(&self, code: &Cell) -> Result<StateInit> {
        Ok(state_init(code, self.data()?))
    }

    /// StateInit of `owner`'s client contract at the proxy contract `proxy_address`, with the
    /// client code this proxy contract was deployed with.
    pub fn client_state_init(&self, proxy_address: Address, owner: Address) -> Result<StateInit> {
        self.client(proxy_address, owner)
            .state_init(&self.client_code)
    }

    /// Address of `owner`'s client contract at `proxy_address` (as the proxy contract derives it).
    pub fn client_address(&self, proxy_address: Address, owner: Address) -> Result<Address> {
        address_of(&self.client_state_init(proxy_address, owner)?)
    }

    /// StateInit of `owner`'s worker contract at `proxy_address`.
    pub fn worker_state_init(&self, proxy_address: Address, owner: Address) -> Result<StateInit> {
        self.worker(proxy_address, owner)
            .state_init(&self.worker_code)
    }

    /// Address of `owner`'s worker contract at `proxy_address`.
    pub fn worker_address(&self, proxy_address: Address, owner: Address) -> Result<Address> {
        address_of(&self.worker_state_init(proxy_address, owner)?)
    }

    /// The client contract of `owner` at this proxy.
    pub fn client(&self, proxy_address: Address, owner: Address) -> ClientInit {
        ClientInit {
            owner,
            proxy: proxy_address,
            proxy_public_key: self.proxy_public_key,
            price_per_token: self.params.price_per_token,
            client_delay_before_close: self.params.client_delay_before_close,
            min_client_stake: self.params.min_client_stake,
        }
    }

    /// The worker contract of `owner` at this proxy.
    pub fn worker(&self, proxy_address: Address, owner: Address) -> WorkerInit {
        WorkerInit {
            owner,
            proxy: proxy_address,
            proxy_public_key: self.proxy_public_key,
            worker_fee_per_token: self.params.worker_fee_per_token,
        }
    }
}

/// Initial state of a client contract (one per client × proxy contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInit {
    /// The client's wallet.
    pub owner: Address,
    /// The proxy contract.
    pub proxy: Address,
    /// The proxy's voucher key.
    pub proxy_public_key: [u8; 32],
    /// Price per token, from the proxy's params.
    pub price_per_token: u128,
    /// Close delay, from the proxy's params.
    pub client_delay_before_close: u32,
    /// Minimum stake, from the proxy's params.
    pub min_client_stake: u128,
}

impl ClientInit {
    /// Initial data (state zero).
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_small_uint(0, 2)?;
        store_coins(&mut b, 0)?;
        store_coins(&mut b, 0)?;
        b.store_u64(0)?;
        b.store_u32(0)?;
        store_u256(&mut b, &[0; 32])?;
        store_address(&mut b, &self.owner)?;
        let mut c = CellBuilder::new();
        store_address(&mut c, &self.proxy)?;
        store_u256(&mut c, &self.proxy_public_key)?;
        store_coins(&mut c, self.price_per_token)?;
        c.store_u32(self.client_delay_before_close)?;
        store_coins(&mut c, self.min_client_stake)?;
        b.store_reference(c.build()?)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the client contract with `code`.
    pub fn state_init(&self, code: &Cell) -> Result<StateInit> {
        Ok(state_init(code, self.data()?))
    }
}

/// Initial state of a worker contract (one per worker × proxy contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInit {
    /// The worker owner's wallet (receives payouts).
    pub owner: Address,
    /// The proxy contract.
    pub proxy: Address,
    /// The proxy's voucher key.
    pub proxy_public_key: [u8; 32],
    /// Fee per token, from the proxy's params.
    pub worker_fee_per_token: u128,
}

impl WorkerInit {
    /// Initial data (nothing paid yet).
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_small_uint(0, 2)?;
        b.store_u64(0)?;
        store_coins(&mut b, self.worker_fee_per_token)?;
        store_address(&mut b, &self.owner)?;
        store_address(&mut b, &self.proxy)?;
        store_u256(&mut b, &self.proxy_public_key)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the worker contract with `code`.
    pub fn state_init(&self, code: &Cell) -> Result<StateInit> {
        Ok(state_init(code, self.data()?))
    }
}

/// Lifecycle state of a proxy or client contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractState {
    /// Working normally.
    Open,
    /// Close requested; waiting for the delay or the proxy's grant.
    Closing,
    /// Closed; no more operations.
    Closed,
}

impl ContractState {
    fn from_bits(v: u8, what: &'static str) -> Result<Self> {
        match v {
            0 => Ok(ContractState::Open),
            1 => Ok(ContractState::Closing),
            2 => Ok(ContractState::Closed),
            _ => Err(ChainError::layout(what, format!("unknown state {v}"))),
        }
    }
}

/// A proxy contract's stored state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProxyData {
    /// Owner wallet.
    pub owner: Address,
    /// Voucher key (hex in JSON).
    #[serde(serialize_with = "hex32")]
    pub proxy_public_key: [u8; 32],
    /// Lifecycle state.
    pub state: ContractState,
    /// The proxy's own stake, nanotons.
    pub stake: u128,
    /// Client money held and not yet charged, nanotons.
    pub clients_held: u128,
    /// Last committed ledger seqno.
    pub saved_seqno: u64,
    /// When a requested close may complete.
    pub close_unlock_ts: u32,
    /// The root.
    pub root: Address,
    /// Last committed ledger hash.
    #[serde(serialize_with = "hex32")]
    pub state_hash: [u8; 32],
    /// Prices and rules fixed at deploy time.
    pub params: Params,
    /// Client contract code fixed at deploy time.
    #[serde(skip)]
    pub client_code: Cell,
    /// Worker contract code fixed at deploy time.
    #[serde(skip)]
    pub worker_code: Cell,
}

fn hex32<S: serde::Serializer>(v: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl ProxyData {
    /// Parses a proxy contract's data cell.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let owner = load_address(&mut s)?;
        let proxy_public_key = load_u256(&mut s)?;
        let state = ContractState::from_bits(s.load_small_uint(2)?, "proxy")?;
        let stake = load_coins(&mut s)?;
        let clients_held = load_coins(&mut s)?;
        let saved_seqno = s.load_u64()?;
        let close_unlock_ts = s.load_u32()?;
        let extra = s.load_reference_cloned()?;
        let params = Params::from_cell(&s.load_reference_cloned()?)?;
        let codes = s.load_reference_cloned()?;
        let mut c = codes.as_slice()?;
        let client_code = c.load_reference_cloned()?;
        let worker_code = c.load_reference_cloned()?;
        let mut e = extra.as_slice()?;
        let root = load_address(&mut e)?;
        let state_hash = load_u256(&mut e)?;
        Ok(ProxyData {
            owner,
            proxy_public_key,
            state,
            stake,
            clients_held,
            saved_seqno,
            close_unlock_ts,
            root,
            state_hash,
            params,
            client_code,
            worker_code,
        })
    }

    /// The initial state this proxy contract was deployed with (to derive its client and
    /// worker contracts exactly as it does).
    pub fn init(&self) -> ProxyInit {
        ProxyInit {
            owner: self.owner,
            proxy_public_key: self.proxy_public_key,
            root: self.root,
            params: self.params.clone(),
            client_code: self.client_code.clone(),
            worker_code: self.worker_code.clone(),
        }
    }
}

/// A client contract's stored state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClientData {
    /// Lifecycle state.
    pub state: ContractState,
    /// Paid in and not yet charged or refunded, nanotons.
    pub balance: u128,
    /// Stake, nanotons (part of the balance).
    pub stake: u128,
    /// Tokens charged so far (cumulative voucher counter).
    pub tokens_used: u64,
    /// When a forced close may complete.
    pub unlock_ts: u32,
    /// Authorization secret hash (hex in JSON).
    #[serde(serialize_with = "hex32")]
    pub secret_hash: [u8; 32],
    /// Constant part.
    #[serde(flatten)]
    pub init: ClientInitView,
}

/// The constant part of a client contract, for JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClientInitView {
    /// Owner wallet.
    pub owner: Address,
    /// Proxy contract.
    pub proxy: Address,
    /// Price per token, nanotons.
    pub price_per_token: u128,
    /// Close delay, seconds.
    pub client_delay_before_close: u32,
    /// Minimum stake, nanotons.
    pub min_client_stake: u128,
}

impl ClientData {
    /// Parses a client contract's data cell.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let state = ContractState::from_bits(s.load_small_uint(2)?, "client")?;
        let balance = load_coins(&mut s)?;
        let stake = load_coins(&mut s)?;
        let tokens_used = s.load_u64()?;
        let unlock_ts = s.load_u32()?;
        let secret_hash = load_u256(&mut s)?;
        let owner = load_address(&mut s)?;
        let c = s.load_reference_cloned()?;
        let mut c = c.as_slice()?;
        let proxy = load_address(&mut c)?;
        let _key = load_u256(&mut c)?;
        let price_per_token = load_coins(&mut c)?;
        let client_delay_before_close = c.load_u32()?;
        let min_client_stake = load_coins(&mut c)?;
        Ok(ClientData {
            state,
            balance,
            stake,
            tokens_used,
            unlock_ts,
            secret_hash,
            init: ClientInitView {
                owner,
                proxy,
                price_per_token,
                client_delay_before_close,
                min_client_stake,
            },
        })
    }
}

/// A worker contract's stored state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerData {
    /// Lifecycle state (closed after the last payout).
    pub state: ContractState,
    /// Tokens paid so far (cumulative voucher counter).
    pub tokens_paid: u64,
    /// Fee per token, nanotons.
    pub worker_fee_per_token: u128,
    /// Owner wallet.
    pub owner: Address,
    /// Proxy contract.
    pub proxy: Address,
}

impl WorkerData {
    /// Parses a worker contract's data cell.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        Ok(WorkerData {
            state: ContractState::from_bits(s.load_small_uint(2)?, "worker")?,
            tokens_paid: s.load_u64()?,
            worker_fee_per_token: load_coins(&mut s)?,
            owner: load_address(&mut s)?,
            proxy: load_address(&mut s)?,
        })
    }
}
