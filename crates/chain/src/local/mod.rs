//! The embedded local chain: `tycho-executor` runs the real contract code on accounts kept in
//! memory (and on disk), with internal-message routing, bounces, logical time and a clock that
//! tests can move.
//!
//! It is one shard of workchain 0 without blocks: every inbound message is executed at once,
//! then every internal message it produced, breadth first, until the queue is empty. The
//! network configuration is @ton/sandbox's default (so gas and fees match it), with workchain 0
//! described as tycho-executor needs it.

mod genesis;
pub mod owner;
mod store;

pub use genesis::{Genesis, GenesisSpec, GenesisWallet, FAUCET};

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use tycho_executor::{Executor, ExecutorParams, ParsedConfig};
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Lazy, Load};
use tycho_types::dict::Dict;
use tycho_types::models::{
    AccountState, BlockchainConfig, BlockchainConfigParams, ComputePhase, CurrencyCollection,
    IntAddr, IntMsgInfo, MsgInfo, OptionalAccount, OwnedMessage, ShardAccount, StateInit, TxInfo,
    WorkchainDescription, WorkchainFormat, WorkchainFormatBasic,
};
use tycho_types::num::Tokens;

use crate::address::Address;
use crate::cells::from_boc;
use crate::error::{ChainError, Result};
use crate::stack::StackItem;

const SANDBOX_CONFIG: &[u8] = include_bytes!("../../res/sandbox-config.boc");
/// How many transactions per account are kept (and served by `getTransactions`).
pub const TX_HISTORY: usize = 64;
/// Safety valve: a message cascade longer than this is cut (a contract loop).
const MAX_CASCADE: usize = 10_000;

/// The chain's notion of "now".
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Clock {
    /// Wall-clock time plus an offset (seconds) that [`LocalChain::advance`] grows.
    System {
        /// Seconds added to the wall clock.
        offset: u64,
    },
    /// A fixed time that only [`LocalChain::advance`] / [`LocalChain::set_now`] move (tests).
    Fixed {
        /// Unix time.
        now: u32,
    },
}

/// One executed transaction, summarized.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxRecord {
    /// The account.
    pub account: Address,
    /// Logical time.
    pub lt: u64,
    /// Transaction hash (hex).
    pub hash: String,
    /// Unix time.
    pub now: u32,
    /// Sender (None for external messages).
    pub from: Option<Address>,
    /// Value carried in, nanotons.
    pub value: u128,
    /// Whether the inbound message was a bounce.
    pub bounced: bool,
    /// First 32 bits of the body, if any.
    pub op: Option<u32>,
    /// Compute-phase exit code (None when skipped, e.g. no code / no funds).
    pub exit_code: Option<i32>,
    /// Compute gas used.
    pub gas_used: u64,
    /// Whether the transaction was aborted (state not changed).
    pub aborted: bool,
    /// Action-phase result code (0 = ok), if it ran.
    pub action_result: Option<i32>,
    /// Fees paid, nanotons.
    pub total_fees: u128,
    /// Balance after the transaction, nanotons.
    pub balance_after: u128,
    /// Internal messages it sent.
    pub out_msgs: usize,
    /// The transaction as a base64 BOC.
    pub boc: String,
    /// The inbound message as a base64 BOC.
    pub in_msg_boc: String,
}

impl TxRecord {
    /// Whether the contract accepted the message (compute exit 0/1 and not aborted).
    pub fn succeeded(&self) -> bool {
        !self.aborted && matches!(self.exit_code, Some(0) | Some(1))
    }
}

/// What one inbound message caused: its transactions in execution order.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Transactions, the inbound message's first.
    pub transactions: Vec<TxRecord>,
}

impl Trace {
    /// The first transaction (on the message's destination).
    pub fn first(&self) -> &TxRecord {
        &self.transactions[0]
    }

    /// Exit code of the first transaction on `account`.
    pub fn exit_code_at(&self, account: &Address) -> Option<i32> {
        self.transactions
            .iter()
            .find(|t| &t.account == account)
            .and_then(|t| t.exit_code)
    }

    /// Whether every transaction succeeded (see [`Trace::first_failure`]).
    pub fn all_succeeded(&self) -> bool {
        self.first_failure().is_none()
    }

    /// The first failed transaction, if any: a compute phase that threw, or an aborted
    /// transaction that ran code. (Value arriving at an account without code skips the compute
    /// phase and reports "aborted": the value is credited, nothing failed.)
    pub fn first_failure(&self) -> Option<&TxRecord> {
        self.transactions.iter().find(|t| match t.exit_code {
            None => false,
            Some(code) => t.aborted || (code != 0 && code != 1),
        })
    }
}

/// A read-only view of an account.
#[derive(Clone, Debug)]
pub struct AccountInfo {
    /// Balance, nanotons.
    pub balance: u128,
    /// `active`, `uninit`, `frozen` or `nonexist`.
    pub status: &'static str,
    /// Code, when active.
    pub code: Option<Cell>,
    /// Data, when active.
    pub data: Option<Cell>,
    /// Last transaction's logical time and hash.
    pub last_tx: Option<(u64, String)>,
}

/// The local chain.
pub struct LocalChain {
    config: ParsedConfig,
    config_params: BlockchainConfigParams,
    accounts: HashMap<Address, ShardAccount>,
    history: HashMap<Address, VecDeque<TxRecord>>,
    clock: Clock,
    lt: u64,
    dir: Option<PathBuf>,
}

/// The network configuration: sandbox's default, with workchain 0 as tycho-executor expects.
pub fn default_config() -> Result<BlockchainConfig> {
    let root = from_boc(SANDBOX_CONFIG)?;
    let mut params = BlockchainConfigParams::from_raw(root);
    let address = params
        .get::<tycho_types::models::ConfigParam0>()?
        .unwrap_or(HashBytes::ZERO);
    let mut workchains = Dict::<i32, WorkchainDescription>::new();
    workchains.set(
        0,
        WorkchainDescription {
            enabled_since: 0,
            actual_min_split: 0,
            min_split: 0,
            max_split: 0,
            active: true,
            accept_msgs: true,
            zerostate_root_hash: HashBytes::ZERO,
            zerostate_file_hash: HashBytes::ZERO,
            version: 0,
            format: WorkchainFormat::Basic(WorkchainFormatBasic {
                vm_mode: 0,
                vm_version: 0,
            }),
        },
    )?;
    params.set_workchains(&workchains)?;
    params.remove(43)?;
    Ok(BlockchainConfig { address, params })
}

fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalChain {
    /// An empty in-memory chain with the given clock.
    pub fn new(clock: Clock) -> Result<Self> {
        let config = default_config()?;
        let config_params = config.params.clone();
        let config = ParsedConfig::parse(config, u32::MAX)
            .map_err(|e| ChainError::Executor(format!("config: {e}")))?;
        Ok(LocalChain {
            config,
            config_params,
            accounts: HashMap::new(),
            history: HashMap::new(),
            clock,
            lt: 1_000_000,
            dir: None,
        })
    }

    /// Opens the chain stored in `dir`, or `None` when `dir` holds no chain yet.
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        let Some(saved) = store::load(dir)? else {
            return Ok(None);
        };
        let mut chain = LocalChain::new(saved.clock)?;
        chain.lt = saved.lt;
        chain.accounts = saved.accounts;
        chain.history = saved.history;
        chain.dir = Some(dir.to_path_buf());
        Ok(Some(chain))
    }

    /// Makes the chain persist itself in `dir` after every message (and writes it now).
    pub fn persist_in(&mut self, dir: &Path) -> Result<()> {
        self.dir = Some(dir.to_path_buf());
        self.save()
    }

    /// Writes the state to its directory (atomically: temp file, fsync, rename).
    pub fn save(&self) -> Result<()> {
        match &self.dir {
            Some(dir) => store::save(dir, self.clock, self.lt, &self.accounts, &self.history),
            None => Ok(()),
        }
    }

    /// Current unix time of the chain.
    pub fn now(&self) -> u32 {
        match self.clock {
            Clock::System { offset } => {
                u32::try_from(system_now().saturating_add(offset)).unwrap_or(u32::MAX)
            }
            Clock::Fixed { now } => now,
        }
    }

    /// The clock setting.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Moves time forward by `seconds` (how tests pass a close delay).
    pub fn advance(&mut self, seconds: u32) -> Result<()> {
        let now = self.now();
        if now.checked_add(seconds).is_none() {
            return Err(ChainError::Refused(format!(
                "advancing the clock at {now} by {seconds} s passes the year 2106 (u32 unix time)"
            )));
        }
        match &mut self.clock {
            Clock::System { offset } => *offset += u64::from(seconds),
            Clock::Fixed { now } => *now += seconds,
        }
        self.save()
    }

    /// Sets a fixed time (and saves it, like `advance`).
    pub fn set_now(&mut self, now: u32) -> Result<()> {
        self.clock = Clock::Fixed { now };
        self.save()
    }

    /// Current logical time.
    pub fn lt(&self) -> u64 {
        self.lt
    }

    /// Number of accounts that exist.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// An account's state.
    pub fn account(&self, address: &Address) -> Result<AccountInfo> {
        let none = AccountInfo {
            balance: 0,
            status: "nonexist",
            code: None,
            data: None,
            last_tx: None,
        };
        let Some(shard) = self.accounts.get(address) else {
            return Ok(none);
        };
        let Some(acc) = shard.load_account()? else {
            return Ok(none);
        };
        let last_tx = (shard.last_trans_lt != 0)
            .then(|| (shard.last_trans_lt, hex::encode(shard.last_trans_hash.0)));
        let (status, code, data) = match &acc.state {
            AccountState::Active(init) => ("active", init.code.clone(), init.data.clone()),
            AccountState::Uninit => ("uninit", None, None),
            AccountState::Frozen(_) => ("frozen", None, None),
        };
        Ok(AccountInfo {
            balance: acc.balance.tokens.into_inner(),
            status,
            code,
            data,
            last_tx,
        })
    }

    /// An account's balance (0 when it does not exist).
    pub fn balance(&self, address: &Address) -> Result<u128> {
        Ok(self.account(address)?.balance)
    }

    /// The data cell of an active account.
    pub fn data(&self, address: &Address) -> Result<Cell> {
        self.account(address)?
            .data
            .ok_or_else(|| ChainError::NotActive(address.to_raw()))
    }

    /// The most recent transactions of an account, newest first.
    pub fn transactions(&self, address: &Address, limit: usize) -> Vec<TxRecord> {
        self.history
            .get(address)
            .map(|h| h.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Executes a message arriving from outside the shard: an external inbound message (a wallet
    /// transfer) or, as the cross-check replays sandbox's messages, an internal one whose value
    /// is minted. A message the destination does not accept is refused with an error and
    /// changes nothing, as on TON.
    pub fn send_external(&mut self, message: Cell) -> Result<Trace> {
        let trace = self.run(message)?;
        self.save()?;
        Ok(trace)
    }

    /// Injects an internal message from any address with freshly minted value — the local
    /// chain's faucet and genesis tool (and how the cross-check scenario sends messages).
    pub fn send_internal(
        &mut self,
        from: Address,
        to: Address,
        value: u128,
        bounce: bool,
        body: Option<Cell>,
        init: Option<StateInit>,
    ) -> Result<Trace> {
        let msg = OwnedMessage {
            info: MsgInfo::Int(IntMsgInfo {
                ihr_disabled: true,
                bounce,
                bounced: false,
                src: from.to_std().into(),
                dst: to.to_std().into(),
                value: CurrencyCollection::new(value),
                extra_flags: Default::default(),
                fwd_fee: Tokens::ZERO,
                created_lt: self.lt,
                created_at: self.now(),
            }),
            init,
            body: body.unwrap_or_else(Cell::empty_cell).into(),
            layout: None,
        };
        let cell = CellBuilder::build_from(msg)?;
        let trace = self.run(cell)?;
        self.save()?;
        Ok(trace)
    }

    /// Executes a message and everything it causes.
    fn run(&mut self, first: Cell) -> Result<Trace> {
        let now = self.now();
        let params = ExecutorParams {
            block_unixtime: now,
            block_lt: self.lt,
            full_body_in_bounced: false,
            strict_extra_currency: true,
            ..Default::default()
        };
        let mut queue = VecDeque::from([first]);
        let mut trace = Trace::default();
        while let Some(msg) = queue.pop_front() {
            if trace.transactions.len() >= MAX_CASCADE {
                tracing::warn!("message cascade cut after {MAX_CASCADE} transactions");
                break;
            }
            let is_first = trace.transactions.is_empty();
            let (is_external, dst) = match msg.parse::<MsgInfo>()? {
                MsgInfo::Int(info) => (false, Some(info.dst)),
                MsgInfo::ExtIn(info) => (true, Some(info.dst)),
                MsgInfo::ExtOut(_) => (false, None),
            };
            let Some(IntAddr::Std(dst)) = dst else {
                if is_first {
                    return Err(ChainError::Refused(
                        "the message has no standard destination (an outbound external message or a var address); nothing to execute".into(),
                    ));
                }
                continue;
            };
            let address = Address::from_std(&dst);
            let empty;
            let state = match self.accounts.get(&address) {
                Some(s) => s,
                None => {
                    empty = ShardAccount {
                        account: Lazy::new(&OptionalAccount::EMPTY)?,
                        last_trans_hash: HashBytes::ZERO,
                        last_trans_lt: 0,
                    };
                    &empty
                }
            };
            let executed = Executor::new(&params, &self.config)
                .with_min_lt(self.lt)
                .begin_ordinary(&dst, is_external, msg.clone(), state);
            let uncommitted = match executed {
                Ok(u) => u,
                Err(e) if is_first && is_external => {
                    // As a lite server does, name the exit code that refused it (run again up
                    // to where the contract accepts, with an inspector).
                    let mut inspector = tycho_executor::ExecutorInspector::default();
                    let _ = Executor::new(&params, &self.config).check_ordinary_ext(
                        &dst,
                        msg.clone(),
                        state,
                        Some(&mut inspector),
                    );
                    let why = match inspector.exit_code {
                        Some(code) => match self.wallet_refusal(&address, &msg, code) {
                            Some(meaning) => format!("exit code {code} ({meaning})"),
                            None => format!("exit code {code}"),
                        },
                        None => format!("{e:?}"),
                    };
                    return Err(ChainError::Refused(format!(
                        "external message not accepted by {address}: {why}"
                    )));
                }
                Err(e) => {
                    tracing::warn!("message to {address} not executed: {e:?}");
                    continue;
                }
            };
            let output = uncommitted
                .commit()
                .map_err(|e| ChainError::Executor(e.to_string()))?;
            self.lt = self.lt.max(output.transaction_meta.next_lt);
            let tx_cell = output.transaction.inner().clone();
            let record = summarize(&address, &tx_cell, &msg, &output.new_state)?;
            for out in &output.transaction_meta.out_msgs {
                queue.push_back(out.inner().clone());
            }
            self.accounts.insert(address, output.new_state);
            let history = self.history.entry(address).or_default();
            history.push_back(record.clone());
            while history.len() > TX_HISTORY {
                history.pop_front();
            }
            trace.transactions.push(record);
        }
        Ok(trace)
    }

    /// What exit `code` means when the contract that refused a message to `address` is COCOON's
    /// machine wallet (its code on chain, or in the StateInit `msg` deploys it with).
    fn wallet_refusal(&self, address: &Address, msg: &Cell, code: i32) -> Option<&'static str> {
        let deployed = self.account(address).ok().and_then(|a| a.code);
        let code_cell = deployed.or_else(|| {
            msg.parse::<OwnedMessage>()
                .ok()
                .and_then(|m| m.init)
                .and_then(|i| i.code)
        })?;
        (code_cell.repr_hash() == crate::cocoon_wallet::code().repr_hash())
            .then(|| crate::cocoon_wallet::exit::meaning(code))
            .flatten()
    }

    /// Runs a get-method on an active account.
    pub fn run_get_method(
        &self,
        address: &Address,
        method: &str,
        args: Vec<StackItem>,
    ) -> Result<GetMethodOutput> {
        let shard = self
            .accounts
            .get(address)
            .ok_or_else(|| ChainError::NotActive(address.to_raw()))?;
        let account = shard
            .load_account()?
            .ok_or_else(|| ChainError::NotActive(address.to_raw()))?;
        let caller = tycho_vm::VmCaller {
            libraries: Default::default(),
            behaviour_modifiers: Default::default(),
            config: self.config_params.clone(),
        };
        let mut vm_args = tycho_vm::VmGetterArgs::default();
        vm_args.now = self.now();
        let stack = args
            .iter()
            .map(StackItem::to_vm)
            .collect::<Result<Vec<_>>>()?;
        let out = caller
            .call_getter_ext(&account, method, stack, &vm_args, None)
            .map_err(|e| ChainError::Executor(e.to_string()))?;
        let stack = out
            .stack
            .iter()
            .map(|v| StackItem::from_vm(v.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(GetMethodOutput {
            exit_code: out.exit_code,
            gas_used: out.gas_used,
            stack,
        })
    }

    /// Runs a get-method and fails unless it exits with 0 or 1.
    pub fn get(
        &self,
        address: &Address,
        method: &str,
        args: Vec<StackItem>,
    ) -> Result<Vec<StackItem>> {
        let out = self.run_get_method(address, method, args)?;
        if out.exit_code != 0 && out.exit_code != 1 {
            return Err(ChainError::GetMethod {
                method: method.to_string(),
                exit_code: out.exit_code,
            });
        }
        Ok(out.stack)
    }
}

/// A get-method's result.
#[derive(Clone, Debug)]
pub struct GetMethodOutput {
    /// TVM exit code (0 or 1 on success).
    pub exit_code: i32,
    /// Gas used.
    pub gas_used: u64,
    /// Result stack, bottom first.
    pub stack: Vec<StackItem>,
}

fn summarize(
    account: &Address,
    tx_cell: &Cell,
    in_msg: &Cell,
    state: &ShardAccount,
) -> Result<TxRecord> {
    let tx = tycho_types::models::Transaction::load_from(&mut tx_cell.as_slice()?)?;
    let info = tx.load_info()?;
    let (exit_code, gas_used, aborted, action_result) = match &info {
        TxInfo::Ordinary(o) => {
            let (code, gas) = match &o.compute_phase {
                ComputePhase::Executed(e) => (Some(e.exit_code), e.gas_used.into_inner()),
                ComputePhase::Skipped(_) => (None, 0),
            };
            (
                code,
                gas,
                o.aborted,
                o.action_phase.as_ref().map(|a| a.result_code),
            )
        }
        TxInfo::TickTock(_) => (None, 0, false, None),
    };
    let (from, value, bounced) = match in_msg.parse::<MsgInfo>()? {
        MsgInfo::Int(i) => {
            let from = match &i.src {
                IntAddr::Std(a) => Some(Address::from_std(a)),
                _ => None,
            };
            (from, i.value.tokens.into_inner(), i.bounced)
        }
        _ => (None, 0, false),
    };
    let op = in_msg
        .parse::<tycho_types::models::Message<'_>>()
        .ok()
        .and_then(|m| {
            let mut body = m.body;
            body.load_u32().ok()
        });
    let balance_after = state
        .load_account()?
        .map(|a| a.balance.tokens.into_inner())
        .unwrap_or(0);
    Ok(TxRecord {
        account: *account,
        lt: tx.lt,
        hash: hex::encode(tx_cell.repr_hash().0),
        now: tx.now,
        from,
        value,
        bounced,
        op,
        exit_code,
        gas_used,
        aborted,
        action_result,
        total_fees: tx.total_fees.tokens.into_inner(),
        balance_after,
        out_msgs: tx.out_msg_count.into_inner() as usize,
        boc: crate::cells::to_boc_base64(tx_cell),
        in_msg_boc: crate::cells::to_boc_base64(in_msg),
    })
}
