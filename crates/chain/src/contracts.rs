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

    /// Serializes as the `Params` cell (COCOON's struct version 3 layout of these fields).
    pub fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        self.store(&mut b, MAX_STRUCT_VERSION)?;
        Ok(b.build()?)
    }

    /// Writes these fields as COCOON's params cell of `struct_version` lays them out:
    /// multipliers for prompt and completion from version 3, for cached and reasoning from 2,
    /// stakes from 1.
    fn store(&self, b: &mut CellBuilder, struct_version: u8) -> Result<()> {
        let v = struct_version;
        store_coins(b, self.price_per_token)?;
        store_coins(b, self.worker_fee_per_token)?;
        if v >= 3 {
            b.store_u32(self.prompt_mult)?;
        }
        if v >= 2 {
            b.store_u32(self.cached_mult)?;
        }
        if v >= 3 {
            b.store_u32(self.completion_mult)?;
        }
        if v >= 2 {
            b.store_u32(self.reasoning_mult)?;
        }
        b.store_u32(self.proxy_delay_before_close)?;
        b.store_u32(self.client_delay_before_close)?;
        if v >= 1 {
            store_coins(b, self.min_proxy_stake)?;
            store_coins(b, self.min_client_stake)?;
        }
        Ok(())
    }

    /// Reads them as COCOON reads a params cell of `struct_version`: what the layout lacks
    /// takes the reference's default (multipliers 1.0, stakes of 1 TON).
    fn load(s: &mut CellSlice<'_>, struct_version: u8) -> Result<Self> {
        let v = struct_version;
        let price_per_token = load_coins(s)?;
        let worker_fee_per_token = load_coins(s)?;
        let mult = |since: u8, s: &mut CellSlice<'_>| -> Result<u32> {
            Ok(if v >= since { s.load_u32()? } else { 10_000 })
        };
        let prompt_mult = mult(3, s)?;
        let cached_mult = mult(2, s)?;
        let completion_mult = mult(3, s)?;
        let reasoning_mult = mult(2, s)?;
        let proxy_delay_before_close = s.load_u32()?;
        let client_delay_before_close = s.load_u32()?;
        let (min_proxy_stake, min_client_stake) = if v >= 1 {
            (load_coins(s)?, load_coins(s)?)
        } else {
            (crate::TON, crate::TON)
        };
        Ok(Params {
            price_per_token,
            worker_fee_per_token,
            prompt_mult,
            cached_mult,
            completion_mult,
            reasoning_mult,
            proxy_delay_before_close,
            client_delay_before_close,
            min_proxy_stake,
            min_client_stake,
        })
    }
}

/// COCOON's params cell: what its root keeps beside the registry and every contract's initial
/// data copies, with the code its `mask` names. Struct versions 0 to 3 are read as the
/// reference reads them (multipliers appear in version 2 and 3, stakes in 1); we write 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootParams {
    /// Layout version, params version, network id, test mode.
    pub head: ParamsHead,
    /// Prices and rules.
    pub params: Params,
    /// Proxy contract code.
    pub proxy_code: Option<Cell>,
    /// Worker contract code.
    pub worker_code: Option<Cell>,
    /// Client contract code.
    pub client_code: Option<Cell>,
}

/// What COCOON's params cell holds before the prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParamsHead {
    /// Layout version of the cell (0–3).
    pub struct_version: u8,
    /// Bumped by every change of prices or code (contracts made after differ in address).
    pub params_version: u32,
    /// The network's id.
    pub unique_id: u32,
    /// COCOON's test mode: roles on both ends of a connection must agree on it.
    pub is_test: bool,
}

/// Which code a params cell carries ([`RootParams::to_cell`]): COCOON's root keeps all three,
/// a proxy contract the worker's and client's, worker and client contracts none.
pub mod params_code {
    /// The proxy contract's code.
    pub const PROXY: u8 = 1;
    /// The worker contract's code.
    pub const WORKER: u8 = 2;
    /// The client contract's code.
    pub const CLIENT: u8 = 4;
    /// All three (the root's own params).
    pub const ALL: u8 = 7;
}

/// The highest params layout COCOON reads.
const MAX_STRUCT_VERSION: u8 = 3;

impl RootParams {
    /// Serializes as COCOON's params cell with the code `mask` names ([`params_code`]).
    pub fn to_cell(&self, mask: u8) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u8(self.head.struct_version)?;
        b.store_u32(self.head.params_version)?;
        b.store_u32(self.head.unique_id)?;
        b.store_bit(self.head.is_test)?;
        self.params.store(&mut b, self.head.struct_version)?;
        for (bit, code) in [
            (params_code::PROXY, &self.proxy_code),
            (params_code::WORKER, &self.worker_code),
            (params_code::CLIENT, &self.client_code),
        ] {
            match code.as_ref().filter(|_| mask & bit != 0) {
                Some(c) => {
                    b.store_bit_one()?;
                    b.store_reference(c.clone())?;
                }
                None => b.store_bit_zero()?,
            }
        }
        Ok(b.build()?)
    }

    /// Parses COCOON's params cell as its runners do: what an older layout lacks takes the
    /// reference's defaults (multipliers 1.0, stakes of 1 TON); a newer layout than 3 or data
    /// left over is an error naming it.
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = cell.as_slice()?;
        let v = s.load_u8()?;
        if v > MAX_STRUCT_VERSION {
            return Err(ChainError::layout(
                "root params",
                format!("struct version {v} is newer than {MAX_STRUCT_VERSION}, the newest COCOON reads"),
            ));
        }
        let head = ParamsHead {
            struct_version: v,
            params_version: s.load_u32()?,
            unique_id: s.load_u32()?,
            is_test: s.load_bit()?,
        };
        let params = Params::load(&mut s, v)?;
        let code = |s: &mut CellSlice<'_>| -> Result<Option<Cell>> {
            Ok(if s.load_bit()? {
                Some(s.load_reference_cloned()?)
            } else {
                None
            })
        };
        let proxy_code = code(&mut s)?;
        let worker_code = code(&mut s)?;
        let client_code = code(&mut s)?;
        if !s.is_data_empty() || !s.is_refs_empty() {
            return Err(ChainError::layout(
                "root params",
                "data after the client code",
            ));
        }
        Ok(RootParams {
            head,
            params,
            proxy_code,
            worker_code,
            client_code,
        })
    }

    /// `code` (one of this cell's), which the holder `whose` must have: an error naming it.
    fn required(whose: &'static str, what: &str, code: Option<Cell>) -> Result<Cell> {
        code.ok_or_else(|| ChainError::layout(whose, format!("no {what} contract code")))
    }
}

/// A proxy as the root lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RegisteredProxy {
    /// Registry sequence number (from 1).
    pub seq: u32,
    /// The proxy contract's address (ours: kept in a reference of the entry, which COCOON's
    /// runners do not read; `None` in a registry that does not keep it).
    pub address: Option<Address>,
    /// Where workers and clients connect, as COCOON writes it: `HOST:PORT` for both, or
    /// `WORKERS_HOST:PORT CLIENTS_HOST:PORT`.
    pub endpoint: String,
}

/// The longest endpoint a registry entry holds (it must fit in a dictionary leaf).
pub const MAX_ENDPOINT_LEN: usize = 121;

impl RegisteredProxy {
    /// The endpoint string a proxy registers: where workers connect, then where clients do
    /// (COCOON's form; one address when both are the same).
    pub fn endpoint_string(clients: std::net::SocketAddr, workers: std::net::SocketAddr) -> String {
        if clients == workers {
            workers.to_string()
        } else {
            format!("{workers} {clients}")
        }
    }

    fn part(&self, index: usize) -> Option<std::net::SocketAddr> {
        let parts: Vec<&str> = self.endpoint.split(' ').filter(|p| !p.is_empty()).collect();
        let part = match parts.as_slice() {
            [both] => both,
            [workers, clients] => [workers, clients][index],
            _ => return None,
        };
        part.parse().ok()
    }

    /// Where clients connect.
    pub fn endpoint_client(&self) -> Option<std::net::SocketAddr> {
        self.part(1)
    }

    /// Where workers connect.
    pub fn endpoint_worker(&self) -> Option<std::net::SocketAddr> {
        self.part(0)
    }
}

/// Everything the root contract stores, read as COCOON's runners read it
/// (`runners/smartcontracts/RootContractConfig.cpp`).
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
    /// Allowed model hashes → model type name (empty where the registry keeps no name).
    #[serde(serialize_with = "hex_map")]
    pub models: BTreeMap<[u8; 32], String>,
    /// Registered proxies.
    pub proxies: Vec<RegisteredProxy>,
    /// The last proxy sequence number given out.
    pub last_proxy_seqno: u32,
    /// Prices and rules.
    pub params: Params,
    /// The rest of COCOON's params cell: its layout and params version, network id, test mode.
    pub head: ParamsHead,
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
    /// The network's id.
    pub unique_id: u32,
    /// COCOON's test mode (every network but the main one).
    pub is_test: bool,
}

/// The registry, empty: proxy hashes, proxies, last proxy seqno 0, worker hashes, models.
fn empty_registry() -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_bit_zero()?;
    b.store_bit_zero()?;
    b.store_u32(0)?;
    b.store_bit_zero()?;
    b.store_bit_zero()?;
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
    /// The params it starts with: struct version 3, params version 1, all three codes.
    pub fn root_params(&self) -> RootParams {
        RootParams {
            head: ParamsHead {
                struct_version: MAX_STRUCT_VERSION,
                params_version: 1,
                unique_id: self.unique_id,
                is_test: self.is_test,
            },
            params: self.params.clone(),
            proxy_code: Some(self.codes.proxy.clone()),
            worker_code: Some(self.codes.worker.clone()),
            client_code: Some(self.codes.client.clone()),
        }
    }

    /// Initial data, as COCOON lays a root out: `owner ^registry ^params version:uint32`,
    /// the registry empty and the version 0.
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        b.store_reference(empty_registry()?)?;
        b.store_reference(self.root_params().to_cell(params_code::ALL)?)?;
        b.store_u32(0)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the root.
    pub fn state_init(&self) -> Result<StateInit> {
        Ok(state_init(&self.codes.root, self.data()?))
    }
}

impl RootData {
    /// Parses the root's data cell as COCOON's runners do; `root_code` fills `codes.root`.
    /// Data left over anywhere is an error, as there; a registry without one of the three
    /// contract codes is an error naming it (our roles deploy from them).
    pub fn parse(data: &Cell, root_code: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let owner = load_address(&mut s)?;
        let registry = s.load_reference_cloned()?;
        let rp = RootParams::from_cell(&s.load_reference_cloned()?)?;
        let version = s.load_u32()?;
        if !s.is_data_empty() || !s.is_refs_empty() {
            return Err(ChainError::layout("root", "data after the version"));
        }
        let codes = ContractCodes {
            root: root_code.clone(),
            proxy: RootParams::required("root params", "proxy", rp.proxy_code)?,
            client: RootParams::required("root params", "client", rp.client_code)?,
            worker: RootParams::required("root params", "worker", rp.worker_code)?,
        };
        let mut r = registry.as_slice()?;
        let proxy_hashes = hash_set(&mut r)?;
        let proxies_dict = Dict::<u32, CellSlice<'_>>::load_from(&mut r)?;
        let mut proxies = Vec::new();
        for entry in proxies_dict.iter() {
            let (seq, value) = entry?;
            if let Some(p) = registered_proxy(seq, value)? {
                proxies.push(p);
            }
        }
        let last_proxy_seqno = r.load_u32()?;
        let worker_hashes = hash_set(&mut r)?;
        let models_dict = Dict::<HashBytes, CellSlice<'_>>::load_from(&mut r)?;
        let mut models = BTreeMap::new();
        for entry in models_dict.iter() {
            let (hash, value) = entry?;
            // our value is the type name in a reference; COCOON keeps nothing there
            let name = match value.get_reference_cloned(0) {
                Ok(cell) => String::from_utf8(read_snake_string(&cell)?)
                    .map_err(|_| ChainError::layout("root", "model type name is not UTF-8"))?,
                Err(_) => String::new(),
            };
            models.insert(hash.0, name);
        }
        if !r.is_data_empty() || !r.is_refs_empty() {
            return Err(ChainError::layout("root", "data after the model hashes"));
        }
        Ok(RootData {
            owner,
            version,
            proxy_hashes,
            worker_hashes,
            models,
            proxies,
            last_proxy_seqno,
            params: rp.params,
            head: rp.head,
            codes,
        })
    }
}

/// One proxy entry: `kind:1 len:7 bytes`, then (ours) a reference holding the proxy contract's
/// address. COCOON skips entries of another kind; so do we.
fn registered_proxy(seq: u32, mut v: CellSlice<'_>) -> Result<Option<RegisteredProxy>> {
    if v.load_bit()? {
        return Ok(None);
    }
    let len = v.load_small_uint(7)? as usize;
    let mut bytes = vec![0u8; len];
    v.load_raw(&mut bytes, (len * 8) as u16)?;
    let endpoint = String::from_utf8(bytes)
        .map_err(|_| ChainError::layout("root", format!("proxy #{seq}: endpoint is not UTF-8")))?;
    let address = match v.get_reference_cloned(0) {
        Ok(cell) => Some(load_address(&mut cell.as_slice()?)?),
        Err(_) => None,
    };
    Ok(Some(RegisteredProxy {
        seq,
        address,
        endpoint,
    }))
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
    /// The rest of the root's params cell at deploy time.
    pub head: ParamsHead,
    /// Client contract code (from the root).
    pub client_code: Cell,
    /// Worker contract code (from the root).
    pub worker_code: Cell,
}

impl ProxyInit {
    /// COCOON's params cell as this proxy contract keeps it: with the worker's and client's
    /// code (serialize it with [`params_code::WORKER`] | [`params_code::CLIENT`]).
    pub fn root_params(&self) -> RootParams {
        RootParams {
            head: self.head,
            params: self.params.clone(),
            proxy_code: None,
            worker_code: Some(self.worker_code.clone()),
            client_code: Some(self.client_code.clone()),
        }
    }

    /// Initial data, COCOON's (`ProxyContract::init_data_cell`): owner, key, root, state 0,
    /// balance 0, stake 0, unlock time 0, the params cell with the worker's and client's code.
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        store_u256(&mut b, &self.proxy_public_key)?;
        store_address(&mut b, &self.root)?;
        b.store_small_uint(0, 2)?; // state
        store_coins(&mut b, 0)?; // balance (earnings)
        store_coins(&mut b, 0)?; // stake
        b.store_u32(0)?; // unlock_ts
        b.store_reference(
            self.root_params()
                .to_cell(params_code::WORKER | params_code::CLIENT)?,
        )?;
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
            params: self.root_params(),
        }
    }

    /// The worker contract of `owner` at this proxy.
    pub fn worker(&self, proxy_address: Address, owner: Address) -> WorkerInit {
        WorkerInit {
            owner,
            proxy: proxy_address,
            proxy_public_key: self.proxy_public_key,
            params: self.root_params(),
        }
    }
}

/// Initial state of a client contract (one per client × proxy contract), laid out as COCOON's
/// client runner builds it (`ClientContract::init_data_cell`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInit {
    /// The client's wallet.
    pub owner: Address,
    /// The proxy contract.
    pub proxy: Address,
    /// The proxy's voucher key.
    pub proxy_public_key: [u8; 32],
    /// The proxy's params (kept without code).
    pub params: RootParams,
}

impl ClientInit {
    /// Initial data: state 0 (2 bits), balance 0, stake = the minimum client stake, tokens 0
    /// (64), unlock 0 (32), secret hash 0 (256); ^(owner, proxy, key); ^params without code.
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_small_uint(0, 2)?;
        store_coins(&mut b, 0)?;
        store_coins(&mut b, self.params.params.min_client_stake)?;
        b.store_u64(0)?;
        b.store_u32(0)?;
        store_u256(&mut b, &[0; 32])?;
        let mut c = CellBuilder::new();
        store_address(&mut c, &self.owner)?;
        store_address(&mut c, &self.proxy)?;
        store_u256(&mut c, &self.proxy_public_key)?;
        b.store_reference(c.build()?)?;
        b.store_reference(self.params.to_cell(0)?)?;
        Ok(b.build()?)
    }

    /// StateInit deploying the client contract with `code`.
    pub fn state_init(&self, code: &Cell) -> Result<StateInit> {
        Ok(state_init(code, self.data()?))
    }
}

/// Initial state of a worker contract (one per worker × proxy contract), laid out as COCOON's
/// worker runner builds it (`WorkerContract::init_data_cell`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInit {
    /// The worker owner's wallet (receives payouts).
    pub owner: Address,
    /// The proxy contract.
    pub proxy: Address,
    /// The proxy's voucher key.
    pub proxy_public_key: [u8; 32],
    /// The proxy's params (kept without code).
    pub params: RootParams,
}

impl WorkerInit {
    /// Initial data: owner, proxy, key, state 0 (2 bits), tokens 0 (64 bits), ^params without
    /// code.
    pub fn data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        store_address(&mut b, &self.proxy)?;
        store_u256(&mut b, &self.proxy_public_key)?;
        b.store_small_uint(0, 2)?;
        b.store_u64(0)?;
        b.store_reference(self.params.to_cell(0)?)?;
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
    /// The root.
    pub root: Address,
    /// Lifecycle state.
    pub state: ContractState,
    /// The proxy's earnings, ready for its owner (COCOON's `balance`), nanotons: the price less
    /// the worker's fee on every token a worker was paid for, less what the owner took.
    pub earnings: u128,
    /// The proxy's own stake, nanotons.
    pub stake: u128,
    /// When a requested close may complete.
    pub close_unlock_ts: u32,
    /// Prices and rules fixed at deploy time.
    pub params: Params,
    /// The rest of the params cell fixed at deploy time.
    pub head: ParamsHead,
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
        let root = load_address(&mut s)?;
        let state = ContractState::from_bits(s.load_small_uint(2)?, "proxy")?;
        let earnings = load_coins(&mut s)?;
        let stake = load_coins(&mut s)?;
        let close_unlock_ts = s.load_u32()?;
        let rp = RootParams::from_cell(&s.load_reference_cloned()?)?;
        let client_code = RootParams::required("proxy params", "client", rp.client_code)?;
        let worker_code = RootParams::required("proxy params", "worker", rp.worker_code)?;
        let (params, head) = (rp.params, rp.head);
        Ok(ProxyData {
            owner,
            proxy_public_key,
            root,
            state,
            earnings,
            stake,
            close_unlock_ts,
            params,
            head,
            client_code,
            worker_code,
        })
    }

    /// What `ext_proxy_payout_request` pays the owner out of a contract balance of
    /// `contract_balance` (before the request's own value): the earnings, when the contract
    /// holds them beyond a MIN_FEE reserve; else 0 (the contract refuses, 112).
    pub fn payout(&self, contract_balance: u128) -> u128 {
        let reserve = self.earnings.saturating_add(crate::messages::MIN_FEE);
        if self.earnings > 0 && contract_balance >= reserve {
            self.earnings
        } else {
            0
        }
    }

    /// The part of a contract balance of `contract_balance` that is neither stake nor
    /// earnings: the clients' money (each client contract counts its own share) and what is
    /// left of the fees messages brought.
    pub fn clients_money(&self, contract_balance: u128) -> u128 {
        contract_balance.saturating_sub(self.stake.saturating_add(self.earnings))
    }

    /// The initial state this proxy contract was deployed with (to derive its client and
    /// worker contracts exactly as it does).
    pub fn init(&self) -> ProxyInit {
        ProxyInit {
            owner: self.owner,
            proxy_public_key: self.proxy_public_key,
            root: self.root,
            params: self.params.clone(),
            head: self.head,
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
    /// Parses a client contract's data cell, in the order COCOON's client runner reads it
    /// (`ClientContract::on_state_update`), then the owner, proxy and params.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let state = ContractState::from_bits(s.load_small_uint(2)?, "client")?;
        let balance = load_coins(&mut s)?;
        let stake = load_coins(&mut s)?;
        let tokens_used = s.load_u64()?;
        let unlock_ts = s.load_u32()?;
        let secret_hash = load_u256(&mut s)?;
        let c = s.load_reference_cloned()?;
        let mut c = c.as_slice()?;
        let owner = load_address(&mut c)?;
        let proxy = load_address(&mut c)?;
        let _key = load_u256(&mut c)?;
        let p = RootParams::from_cell(&s.load_reference_cloned()?)?.params;
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
                price_per_token: p.price_per_token,
                client_delay_before_close: p.client_delay_before_close,
                min_client_stake: p.min_client_stake,
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
    /// Parses a worker contract's data cell, in the order COCOON's worker runner reads it
    /// (`WorkerContract::on_state_update`): owner, proxy, key, state, tokens, ^params.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let owner = load_address(&mut s)?;
        let proxy = load_address(&mut s)?;
        let _key = load_u256(&mut s)?;
        let state = ContractState::from_bits(s.load_small_uint(2)?, "worker")?;
        let tokens_paid = s.load_u64()?;
        let params = RootParams::from_cell(&s.load_reference_cloned()?)?;
        Ok(WorkerData {
            state,
            tokens_paid,
            worker_fee_per_token: params.params.worker_fee_per_token,
            owner,
            proxy,
        })
    }
}

#[cfg(test)]
mod root_layout_tests {
    //! The root as COCOON's runners read it (`RootContractConfig::load_from_state`): params of
    //! every struct version, proxy entries with and without our address, leftovers refused.
    use super::*;
    use tycho_types::cell::{CellFamily, Store};

    fn code(byte: u8) -> Cell {
        let mut b = CellBuilder::new();
        b.store_u8(byte).unwrap();
        b.build().unwrap()
    }

    fn params_v3() -> RootParams {
        RootParams {
            head: ParamsHead {
                struct_version: 3,
                params_version: 4,
                unique_id: 42,
                is_test: false,
            },
            params: Params {
                cached_mult: 1_000,
                reasoning_mult: 40_000,
                ..Params::local_default()
            },
            proxy_code: Some(code(1)),
            worker_code: Some(code(2)),
            client_code: Some(code(3)),
        }
    }

    #[test]
    fn params_round_trip_and_masks_drop_code() {
        let p = params_v3();
        assert_eq!(
            RootParams::from_cell(&p.to_cell(params_code::ALL).unwrap()).unwrap(),
            p
        );
        let bare = RootParams::from_cell(&p.to_cell(0).unwrap()).unwrap();
        assert_eq!(
            (bare.proxy_code, bare.worker_code, bare.client_code),
            (None, None, None)
        );
        let proxy = RootParams::from_cell(
            &p.to_cell(params_code::WORKER | params_code::CLIENT)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(proxy.proxy_code, None);
        assert_eq!(proxy.worker_code, Some(code(2)));
    }

    #[test]
    fn older_struct_versions_read_with_the_reference_defaults() {
        for v in 0..=2u8 {
            let mut p = params_v3();
            p.head.struct_version = v;
            let read = RootParams::from_cell(&p.to_cell(params_code::ALL).unwrap()).unwrap();
            // version 2 has the cached and reasoning multipliers, not prompt and completion
            assert_eq!(read.params.prompt_mult, 10_000, "v{v}");
            assert_eq!(read.params.completion_mult, 10_000, "v{v}");
            let (cached, reasoning) = if v == 2 {
                (1_000, 40_000)
            } else {
                (10_000, 10_000)
            };
            assert_eq!(
                (read.params.cached_mult, read.params.reasoning_mult),
                (cached, reasoning),
                "v{v}"
            );
            // stakes appear in version 1; before, 1 TON each
            let stakes = if v >= 1 {
                (crate::TON, crate::TON / 2)
            } else {
                (crate::TON, crate::TON)
            };
            assert_eq!(
                (read.params.min_proxy_stake, read.params.min_client_stake),
                stakes,
                "v{v}"
            );
            assert_eq!(read.params.price_per_token, 20, "v{v}");
            assert_eq!(read.worker_code, Some(code(2)), "v{v}");
        }
    }

    #[test]
    fn a_newer_struct_version_or_leftover_data_is_refused_by_name() {
        let mut b = CellBuilder::new();
        b.store_u8(4).unwrap();
        b.store_u32(0).unwrap();
        let err = RootParams::from_cell(&b.build().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("struct version 4"), "{err}");

        let mut b = CellBuilder::new();
        b.store_slice(params_v3().to_cell(0).unwrap().as_slice().unwrap())
            .unwrap();
        b.store_bit_one().unwrap();
        let err = RootParams::from_cell(&b.build().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("data after the client code"), "{err}");
    }

    /// A registry as the main network's root would hold it (no addresses of ours, a proxy entry
    /// of a kind COCOON skips) and as ours holds it.
    #[test]
    fn registry_entries_with_and_without_our_address() {
        let entry = |kind: bool, text: &str, ours: Option<Address>| {
            let mut b = CellBuilder::new();
            b.store_bit(kind).unwrap();
            b.store_small_uint(text.len() as u8, 7).unwrap();
            b.store_raw(text.as_bytes(), (text.len() * 8) as u16)
                .unwrap();
            if let Some(a) = ours {
                let mut r = CellBuilder::new();
                store_address(&mut r, &a).unwrap();
                b.store_reference(r.build().unwrap()).unwrap();
            }
            b.build().unwrap()
        };
        let mut proxies = Dict::<u32, CellSlice<'_>>::new();
        let theirs = entry(false, "10.0.0.1:5000 10.0.0.1:5001", None);
        let ours = entry(false, "127.0.0.1:9000", Some(Address::new([7; 32])));
        let other_kind = entry(true, "whatever", None);
        proxies.set(1, theirs.as_slice().unwrap()).unwrap();
        proxies.set(2, ours.as_slice().unwrap()).unwrap();
        proxies.set(3, other_kind.as_slice().unwrap()).unwrap();
        let mut reg = CellBuilder::new();
        reg.store_bit_zero().unwrap();
        proxies.store_into(&mut reg, Cell::empty_context()).unwrap();
        reg.store_u32(3).unwrap();
        reg.store_bit_zero().unwrap();
        reg.store_bit_zero().unwrap();
        let mut data = CellBuilder::new();
        store_address(&mut data, &Address::new([1; 32])).unwrap();
        data.store_reference(reg.build().unwrap()).unwrap();
        data.store_reference(params_v3().to_cell(params_code::ALL).unwrap())
            .unwrap();
        data.store_u32(9).unwrap();
        let root = RootData::parse(&data.build().unwrap(), &code(0)).unwrap();
        assert_eq!(
            (root.version, root.last_proxy_seqno, root.head.unique_id),
            (9, 3, 42)
        );
        assert_eq!(
            root.proxies.len(),
            2,
            "the entry of another kind is skipped"
        );
        let (a, b) = (&root.proxies[0], &root.proxies[1]);
        assert_eq!((a.seq, a.address), (1, None));
        assert_eq!(a.endpoint_worker(), Some("10.0.0.1:5000".parse().unwrap()));
        assert_eq!(a.endpoint_client(), Some("10.0.0.1:5001".parse().unwrap()));
        assert_eq!((b.seq, b.address), (2, Some(Address::new([7; 32]))));
        assert_eq!(b.endpoint_worker(), b.endpoint_client());
        assert_eq!(root.codes.client, code(3));
    }

    #[test]
    fn endpoint_strings_are_cocoons() {
        let w: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let c: std::net::SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(
            RegisteredProxy::endpoint_string(c, w),
            "127.0.0.1:1 127.0.0.1:2"
        );
        assert_eq!(RegisteredProxy::endpoint_string(w, w), "127.0.0.1:1");
        let bad = RegisteredProxy {
            seq: 1,
            address: None,
            endpoint: "a b c".into(),
        };
        assert_eq!(bad.endpoint_client(), None);
    }
}
