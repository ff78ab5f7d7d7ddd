//! Money commands on one party's contracts: `cocoon client topup|withdraw|close|status`,
//! `cocoon worker status|payout`, `cocoon proxy status`. Each prints what it did and the
//! resulting on-chain state; every refusal is one sentence naming the reason.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use cocoon_chain::client::{self as chain_client, ChainClient};
use cocoon_chain::cocoon_wallet::MachineWallet;
use cocoon_chain::contracts::{address_of, ClientData, ContractState, ProxyData, WorkerData};
use cocoon_chain::messages::{self, MIN_FEE};
use cocoon_chain::wallet::OutMessage;
use cocoon_chain::{format_ton, parse_ton, Address};

use crate::chain::{ChainArgs, WalletArgs};

/// `cocoon client …` money commands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// The client contract at a proxy: state, balance, stake, tokens charged; and the client's
    /// machine wallet.
    Status(ClientParty),
    /// Add TON to the client contract (deploys it the first time).
    Topup {
        #[command(flatten)]
        party: ClientParty,
        /// TON to add.
        #[arg(long)]
        amount: String,
    },
    /// Take TON back from the contract to the wallet, keeping the stake.
    Withdraw {
        #[command(flatten)]
        party: ClientParty,
    },
    /// Close the contract and take everything back: through the proxy's final grant when the
    /// proxy answers (then the machine wallet's money too); otherwise on chain (the part above
    /// the stake at once, the stake after the close delay: run it again then).
    Close {
        #[command(flatten)]
        party: ClientParty,
        /// Close on chain without asking the proxy for its final grant.
        #[arg(long)]
        on_chain: bool,
        #[command(flatten)]
        attestation: crate::network::DialAttestation,
    },
}

/// A client's party: the paying wallet, the proxy, the chain, and the client's state directory,
/// which holds the key of its machine wallet (COCOON's `CocoonWallet`, owned by the wallet): the
/// owner of its client contracts. Every message to the contract goes through it
/// (`owner_wallet_send_message` from the wallet).
#[derive(clap::Args)]
pub struct ClientParty {
    #[command(flatten)]
    pub party: Party,
    /// The client's state directory (its machine wallet's key and its secret), e.g. .cocoon/client.
    #[arg(long)]
    pub state: PathBuf,
}

impl ClientParty {
    fn open(&self) -> Result<Ctx> {
        let mut c = self.party.open()?;
        c.machine = Some(MachineWallet::existing_in(&self.state, c.owner)?);
        Ok(c)
    }
}

/// `cocoon worker status|payout`.
#[derive(Subcommand)]
pub enum WorkerCommand {
    /// The worker contract at a proxy: tokens paid; and the unclaimed voucher held.
    Status {
        #[command(flatten)]
        party: Party,
        /// The worker's state directory (its vouchers), e.g. .cocoon/worker0.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Claim the newest held voucher now.
    Payout {
        #[command(flatten)]
        party: Party,
        /// The worker's state directory.
        #[arg(long)]
        state: PathBuf,
    },
}

/// `cocoon proxy status|payout|close`.
#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Take the proxy's earnings (the price less the worker's fee on every token a worker was
    /// paid for) to the owner's wallet (COCOON's `ext_proxy_payout_request`). Any wallet may
    /// ask; the earnings go to the owner only.
    Payout {
        #[command(flatten)]
        party: Party,
    },
    /// Close the proxy contract (owner only, COCOON's `owner_proxy_close`): the first run starts
    /// the close delay; run it again once the delay is over to take the stake and the earnings.
    /// The clients' money stays in the contract for their refunds.
    Close {
        #[command(flatten)]
        party: Party,
    },
    /// The proxy contract: state, stake, earnings, client money, committed ledger state.
    Status {
        #[command(flatten)]
        at: ProxyChoice,
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// Which proxy contract: named, or the one the root lists.
#[derive(clap::Args)]
pub struct ProxyChoice {
    /// The proxy contract's address (default: the only proxy the root lists).
    #[arg(long)]
    pub proxy: Option<String>,
    /// The root, to find the proxy in (default with --dir: the local chain's).
    #[arg(long)]
    pub root: Option<String>,
}

impl ProxyChoice {
    /// The named proxy, or else the one registered in the root; several or none is an error
    /// that lists them.
    fn resolve(
        &self,
        chain_args: &ChainArgs,
        chain: &dyn ChainClient,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Address> {
        if let Some(p) = &self.proxy {
            return Ok(p.parse()?);
        }
        let root = crate::chain::root_address(self.root.clone(), chain_args)
            .context("no --proxy given, and the root to look it up in is unknown")?;
        let data = rt.block_on(chain_client::read_root(chain, &root))?;
        // entries without a contract address (a registry as COCOON's own root keeps it) cannot
        // be named here
        let known: Vec<Address> = data.proxies.iter().filter_map(|p| p.address).collect();
        match known.as_slice() {
            [one] => Ok(*one),
            [] => bail!("the root {root} lists no proxy contract; name one with --proxy"),
            several => bail!(
                "the root lists {} proxies; name one with --proxy: {}",
                several.len(),
                several
                    .iter()
                    .map(|a| a.to_raw())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A wallet, a proxy contract and a chain.
#[derive(clap::Args)]
pub struct Party {
    #[command(flatten)]
    pub at: ProxyChoice,
    #[command(flatten)]
    pub wallet: WalletArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
}

struct Ctx {
    chain: Arc<dyn ChainClient>,
    keys: cocoon_chain::keys::Keypair,
    wallet: cocoon_chain::wallet::Wallet,
    owner: Address,
    /// A client's machine wallet (owned by `wallet`): the owner of its client contract, through
    /// which messages to that contract go.
    machine: Option<MachineWallet>,
    proxy: Address,
    proxy_data: ProxyData,
    rt: tokio::runtime::Runtime,
}

impl Party {
    fn open(&self) -> Result<Ctx> {
        let (keys, wallet) = self.wallet.load(self.chain.network())?;
        let chain = self.chain.open()?;
        let rt = tokio::runtime::Runtime::new()?;
        let proxy = self.at.resolve(&self.chain, chain.as_ref(), &rt)?;
        let proxy_data = rt
            .block_on(chain_client::read_proxy(chain.as_ref(), &proxy))
            .with_context(|| format!("{proxy} is not a proxy contract on this chain"))?;
        let owner = wallet.address()?;
        Ok(Ctx {
            chain,
            keys,
            wallet,
            owner,
            machine: None,
            proxy,
            proxy_data,
            rt,
        })
    }
}

impl Ctx {
    /// Who owns our contracts: the machine wallet when there is one, else the wallet.
    fn contract_owner(&self) -> Result<Address> {
        Ok(self
            .machine
            .as_ref()
            .map_or(self.owner, MachineWallet::address))
    }

    /// Our client contract at this proxy (owned by our machine wallet), and the StateInit that
    /// deploys it.
    fn client_contract(&self) -> Result<(Address, cocoon_chain::tycho_types::models::StateInit)> {
        let si = self
            .proxy_data
            .init()
            .client_state_init(self.proxy, self.contract_owner()?)?;
        Ok((address_of(&si)?, si))
    }

    /// Sends `msgs` to our contracts: from the wallet, or through the machine wallet when there
    /// is one (each wrapped in `owner_wallet_send_message`, with the value it carries and a fee
    /// more; the first deploys the machine wallet when it is not on chain yet).
    fn send_to_contract(&self, msgs: &[OutMessage]) -> Result<()> {
        let Some(machine) = &self.machine else {
            return self.send(msgs);
        };
        let at = machine.address();
        let mut deploy = self.rt.block_on(self.chain.account(&at))?.status != "active";
        let mut wrapped = Vec::with_capacity(msgs.len());
        for m in msgs {
            let body = cocoon_chain::cocoon_wallet::owner_send_message(0, m.mode, m.to_cell()?)?;
            let value = m
                .value
                .checked_add(MIN_FEE)
                .context("the amount to send overflows u128 nanotons")?;
            wrapped.push(OutMessage {
                init: if std::mem::take(&mut deploy) {
                    Some(machine.wallet().state_init()?)
                } else {
                    None
                },
                ..OutMessage::transfer(at, value, Some(body))
            });
        }
        self.send(&wrapped)
    }

    /// Takes everything but 0.01 TON from the machine wallet back to the wallet (its owner's
    /// `w`); how much came back, or None when there is no machine wallet on chain.
    fn sweep_machine_wallet(&self) -> Result<Option<u128>> {
        let Some(machine) = &self.machine else {
            return Ok(None);
        };
        let at = machine.address();
        if self.rt.block_on(self.chain.account(&at))?.status != "active" {
            return Ok(None);
        }
        let (before, after) = crate::machine_wallet::command_and_wait(
            self.chain.as_ref(),
            &self.rt,
            (&self.wallet, &self.keys),
            at,
            cocoon_chain::cocoon_wallet::Command::WithdrawAll,
        )?;
        Ok(Some(before.saturating_sub(after)))
    }

    fn client_data(&self, at: &Address) -> Result<Option<ClientData>> {
        Ok(match self.rt.block_on(self.chain.account(at))?.data {
            Some(d) => Some(ClientData::parse(&d)?),
            None => None,
        })
    }

    fn send(&self, msgs: &[OutMessage]) -> Result<()> {
        let need = msgs
            .iter()
            .try_fold(MIN_FEE, |sum, m| sum.checked_add(m.value))
            .context("the amounts to send overflow u128 nanotons")?;
        let have = self.rt.block_on(self.chain.account(&self.owner))?.balance;
        if have < need {
            bail!(
                "insufficient funds: wallet {} has {} TON, this needs {} TON",
                self.owner,
                format_ton(have),
                format_ton(need)
            );
        }
        self.rt.block_on(chain_client::send_transfer(
            self.chain.as_ref(),
            &self.wallet,
            &self.keys,
            msgs,
        ))?;
        Ok(())
    }

    /// Waits (up to 30 s) until `check` holds on the client contract's data.
    fn wait_client(&self, at: &Address, check: impl Fn(&ClientData) -> bool) -> Result<ClientData> {
        for _ in 0..300 {
            if let Some(d) = self.client_data(at)? {
                if check(&d) {
                    return Ok(d);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the contract did not change within 30 s (look at `cocoon wallet balance` and the chain's transactions)")
    }

    /// The proxy contract's data, when this wallet is its owner; else an error naming both
    /// wallets and what only the owner can `do_what`.
    fn proxy_owner_only(&self, do_what: &str) -> Result<&ProxyData> {
        let d = &self.proxy_data;
        if self.owner != d.owner {
            bail!(
                "only the proxy's owner {} can {do_what}; this wallet is {}",
                d.owner,
                self.owner
            );
        }
        Ok(d)
    }

    /// Sends `body` to the contract `at` with MIN_FEE and waits up to 30 s for `done` to return
    /// something. A refusal names its exit code; one for the close delay (exit 110) is the error
    /// `too_early` when given.
    fn send_and_wait<T>(
        &self,
        at: &Address,
        body: cocoon_chain::tycho_types::cell::Cell,
        done: impl Fn(&Self) -> Result<Option<T>>,
        too_early: Option<&str>,
    ) -> Result<T> {
        let newest = |c: &Self| -> Result<Option<cocoon_chain::client::Tx>> {
            Ok(c.rt
                .block_on(c.chain.transactions(at, 1))?
                .into_iter()
                .next())
        };
        let last_lt = newest(self)?.map(|t| t.lt).unwrap_or(0);
        self.send_to_contract(&[OutMessage::transfer(*at, MIN_FEE, Some(body))])?;
        for _ in 0..300 {
            if let Some(v) = done(self)? {
                return Ok(v);
            }
            // A transaction newer than our send that failed: the contract refused.
            let refused = newest(self)?
                .filter(|t| t.lt > last_lt)
                .and_then(|t| t.exit_code)
                .filter(|code| !matches!(code, 0 | 1));
            match (refused, too_early) {
                (None, _) => {}
                (Some(messages::exit::TOO_EARLY), Some(why)) => bail!("{why}"),
                (Some(code), _) => bail!(
                    "the contract {at} refused the message: exit code {code} ({})",
                    messages::exit::name(code)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the contract did not change within 30 s (look at `cocoon wallet balance` and the chain's transactions)")
    }
}

fn print_client(at: &Address, d: &ClientData) {
    println!(
        "client contract {at}: {:?}, balance {} TON, stake {} TON, {} tokens charged ({} TON), price {} nanoTON/token{}",
        d.state,
        format_ton(d.balance),
        format_ton(d.stake),
        d.tokens_used,
        format_ton(d.tokens_used as u128 * d.init.price_per_token),
        d.init.price_per_token,
        if d.state == ContractState::Closing { format!(", stake unlocks at unix time {}", d.unlock_ts) } else { String::new() }
    );
}

/// Runs a `client` money command.
pub fn client(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Status(p) => {
            let c = p.open()?;
            let (at, _) = c.client_contract()?;
            match c.client_data(&at)? {
                Some(d) => print_client(&at, &d),
                None => println!("client contract {at}: not deployed (top it up to open it)"),
            }
            let machine = c.contract_owner()?;
            println!(
                "machine wallet {machine}: {} TON (owns the client contract; the wallet keeps it funded and can take it back)",
                format_ton(c.rt.block_on(c.chain.account(&machine))?.balance)
            );
            println!(
                "wallet {}: {} TON",
                c.owner,
                format_ton(c.rt.block_on(c.chain.account(&c.owner))?.balance)
            );
            Ok(())
        }
        ClientCommand::Topup { party, amount } => {
            let c = party.open()?;
            let amount = parse_ton(&amount)?;
            if amount == 0 {
                bail!("--amount must be more than 0");
            }
            let (at, init) = c.client_contract()?;
            let before = c.client_data(&at)?;
            if let Some(d) = &before {
                if d.state == ContractState::Closed {
                    bail!("the client contract {at} is closed; a closed contract takes no money");
                }
            }
            let body = if before
                .as_ref()
                .is_some_and(|d| d.state == ContractState::Closing)
            {
                messages::client::top_up_reopen(0, amount, &c.owner)?
            } else {
                messages::client::top_up(0, amount, &c.owner)?
            };
            let value = amount
                .checked_add(MIN_FEE)
                .with_context(|| format!("{} TON plus the fee overflows", format_ton(amount)))?;
            let mut msg = OutMessage::transfer(at, value, Some(body));
            if before.is_none() {
                msg.init = Some(init);
            }
            c.send_to_contract(&[msg])?;
            let old = before.map(|d| d.balance).unwrap_or(0);
            let d = c.wait_client(&at, |d| d.balance >= old.saturating_add(amount))?;
            println!("topped up {} TON", format_ton(amount));
            print_client(&at, &d);
            Ok(())
        }
        ClientCommand::Withdraw { party } => {
            let c = party.open()?;
            let (at, _) = c.client_contract()?;
            let d = c
                .client_data(&at)?
                .with_context(|| format!("no client contract {at} at this proxy"))?;
            if d.state != ContractState::Open {
                bail!(
                    "the client contract is {:?}; only an open contract allows withdrawals",
                    d.state
                );
            }
            // COCOON's withdrawal takes everything above the stake; the stake stays.
            let Some(amount) = d.balance.checked_sub(d.stake).filter(|a| *a > 0) else {
                bail!(
                    "nothing to withdraw: the balance is {} TON and the stake of {} TON stays (`cocoon client close` takes the stake back)",
                    format_ton(d.balance),
                    format_ton(d.stake)
                );
            };
            c.send_to_contract(&[OutMessage::transfer(
                at,
                MIN_FEE,
                Some(messages::client::withdraw(0, &c.owner)?),
            )])?;
            let d = c.wait_client(&at, |x| x.balance + amount <= d.balance)?;
            println!("withdrew {} TON to {}", format_ton(amount), c.owner);
            print_client(&at, &d);
            Ok(())
        }
        ClientCommand::Close {
            party,
            on_chain,
            attestation,
        } => close(party, on_chain, &attestation),
    }
}

fn close(
    party: ClientParty,
    on_chain: bool,
    attestation: &crate::network::DialAttestation,
) -> Result<()> {
    let c = party.open()?;
    let state = (!on_chain).then(|| party.state.clone());
    let (at, _) = c.client_contract()?;
    let d = c
        .client_data(&at)?
        .with_context(|| format!("no client contract {at} at this proxy: nothing to close"))?;
    if d.state == ContractState::Closed {
        bail!("the client contract {at} is already closed");
    }
    // The cooperative path: the proxy signs the final charge; everything else comes back now.
    if let (Some(state), ContractState::Open) = (state, d.state) {
        let root = c.proxy_data.root;
        // Only this proxy: connecting to others could open (and fund) contracts there.
        let registry =
            c.rt.block_on(chain_client::read_root(c.chain.as_ref(), &root))?;
        let endpoint = registry
            .proxies
            .iter()
            .find(|p| p.address == Some(c.proxy))
            .and_then(|p| p.endpoint_client())
            .with_context(|| format!("proxy {} is not registered in the root; close on chain with `cocoon client close` without --state", c.proxy))?;
        let (quotes, policy) = attestation.parse()?;
        let cfg = cocoon_client::ClientConfig {
            dir: state,
            root,
            proxies: vec![endpoint],
            deposit: 0,
            stake: 0,
            proxy_policy: policy,
            max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
            max_coefficient: 1000,
            timeout: Duration::from_secs(60),
        };
        let started = c.rt.block_on(cocoon_client::Client::start(
            cfg,
            c.chain.clone(),
            (c.keys.clone(), c.wallet.clone()),
            quotes,
        ));
        match started {
            Ok(client) => {
                let closed = c.rt.block_on(client.refund_all())?;
                if closed.contains(&at) {
                    let d = c.wait_client(&at, |d| d.state == ContractState::Closed)?;
                    // The refund went to the contract's owner, the machine wallet: take it.
                    let back = c.sweep_machine_wallet()?.unwrap_or(0);
                    println!(
                        "the proxy granted the final refund; everything but the last charge is back in {} ({} TON from the machine wallet)",
                        c.owner,
                        format_ton(back)
                    );
                    print_client(&at, &d);
                    return Ok(());
                }
            }
            Err(e) => eprintln!("the proxy did not grant a refund ({e}); closing on chain instead"),
        }
    }
    match d.state {
        ContractState::Open => {
            c.send_to_contract(&[OutMessage::transfer(
                at,
                MIN_FEE,
                Some(messages::client::request_refund(0, &c.owner)?),
            )])?;
            let d = c.wait_client(&at, |d| d.state == ContractState::Closing)?;
            println!(
                "refund requested: the balance above the stake is back in {}; the stake of {} TON unlocks after the close delay (unix time {}); run `cocoon client close` again then",
                c.owner,
                format_ton(d.stake.min(d.balance)),
                d.unlock_ts
            );
            print_client(&at, &d);
            Ok(())
        }
        ContractState::Closing => {
            let d = c.send_and_wait(
                &at,
                messages::client::request_refund(0, &c.owner)?,
                |c| {
                    Ok(c.client_data(&at)?
                        .filter(|d| d.state == ContractState::Closed))
                },
                Some(&format!(
                    "the stake unlocks at unix time {}; run `cocoon client close` again then",
                    d.unlock_ts
                )),
            )?;
            println!("closed: the stake is back in {}", c.owner);
            print_client(&at, &d);
            Ok(())
        }
        ContractState::Closed => unreachable!("checked above"),
    }
}

/// Runs a `worker` money command.
pub fn worker(cmd: WorkerCommand) -> Result<()> {
    let (party, state, payout) = match cmd {
        WorkerCommand::Status { party, state } => (party, state, false),
        WorkerCommand::Payout { party, state } => (party, Some(state), true),
    };
    let c = party.open()?;
    let init = c.proxy_data.init().worker_state_init(c.proxy, c.owner)?;
    let at = address_of(&init)?;
    let paid = match c.rt.block_on(c.chain.account(&at))?.data {
        Some(d) => WorkerData::parse(&d)?.tokens_paid,
        None => 0,
    };
    let fee = c.proxy_data.params.worker_fee_per_token;
    let held: Option<cocoon_worker::HeldVoucher> = match &state {
        Some(dir) => cocoon_worker::held_vouchers(dir)?.remove(&c.proxy),
        None => None,
    };
    if payout {
        let h = held
            .filter(|h| h.tokens > paid)
            .context("no unclaimed voucher from this proxy in the state directory")?;
        let deploy = paid == 0 && c.rt.block_on(c.chain.account(&at))?.status != "active";
        let msg =
            cocoon_worker::payout_message(&h.body_hex, at, deploy.then(|| init.clone()), c.owner)?;
        c.send(&[msg])?;
        for _ in 0..300 {
            if let Some(d) = c.rt.block_on(c.chain.account(&at))?.data {
                if WorkerData::parse(&d)?.tokens_paid >= h.tokens {
                    println!(
                        "claimed {} tokens = {} TON to {}",
                        h.tokens - paid,
                        format_ton((h.tokens - paid) as u128 * fee),
                        c.owner
                    );
                    println!("worker contract {at}: {} tokens paid", h.tokens);
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the claim was not applied within 30 s");
    }
    println!(
        "worker contract {at}: {paid} tokens paid ({} TON at {fee} nanoTON/token)",
        format_ton(paid as u128 * fee)
    );
    if let Some(h) = held {
        let unclaimed = h.tokens.saturating_sub(paid);
        println!(
            "held voucher: {} tokens; unclaimed {unclaimed} tokens = {} TON",
            h.tokens,
            format_ton(unclaimed as u128 * fee)
        );
    }
    println!(
        "wallet {}: {} TON",
        c.owner,
        format_ton(c.rt.block_on(c.chain.account(&c.owner))?.balance)
    );
    Ok(())
}

/// How many of a proxy contract's newest transactions `cocoon proxy status` reads for its
/// newest `save_state`.
const SAVED_STATE_LOOKBACK: usize = 64;

/// Runs a `proxy` status command.
pub fn proxy(cmd: ProxyCommand) -> Result<()> {
    match cmd {
        ProxyCommand::Payout { party } => {
            // Anyone may ask (COCOON's proxy asks from its machine wallet): the earnings only
            // ever go to the proxy's owner; the rest of the asker's value comes back to it.
            let c = party.open()?;
            let d = &c.proxy_data;
            let balance = c.rt.block_on(c.chain.account(&c.proxy))?.balance;
            let due = d.payout(balance);
            if due == 0 {
                // Not an error: nothing has been earned (or the contract cannot pay it yet).
                println!(
                    "nothing to take: earnings {} TON (the proxy earns when a worker is paid); the contract holds {} TON = stake {} TON + client money and fees {} TON",
                    format_ton(d.earnings),
                    format_ton(balance),
                    format_ton(d.stake),
                    format_ton(d.clients_money(balance))
                );
                return Ok(());
            }
            let before = c.rt.block_on(c.chain.account(&d.owner))?.balance;
            let now = c.send_and_wait(
                &c.proxy,
                messages::proxy::payout_request(0, &c.owner)?,
                |c| {
                    let now = c.rt.block_on(c.chain.account(&c.proxy))?.balance;
                    Ok((now < balance).then_some(now))
                },
                None,
            )?;
            let wallet = c.rt.block_on(c.chain.account(&d.owner))?.balance;
            let whose = if d.owner == c.owner {
                "this wallet"
            } else {
                "the proxy's owner"
            };
            println!(
                "took {} TON of earnings to {} ({whose})",
                format_ton(due),
                d.owner
            );
            println!(
                "proxy contract {}: balance {} TON; owner's wallet {} TON (was {} TON)",
                c.proxy,
                format_ton(now),
                format_ton(wallet),
                format_ton(before)
            );
            Ok(())
        }
        ProxyCommand::Close { party } => {
            let c = party.open()?;
            let d = c.proxy_owner_only("close its contract")?;
            fn in_state(c: &Ctx, state: ContractState) -> Result<Option<ProxyData>> {
                let d =
                    c.rt.block_on(chain_client::read_proxy(c.chain.as_ref(), &c.proxy))?;
                Ok(Some(d).filter(|d| d.state == state))
            }
            let body = messages::proxy::owner_close(&c.owner)?;
            match d.state {
                ContractState::Closed => bail!("the proxy contract {} is already closed", c.proxy),
                ContractState::Open => {
                    let d = c.send_and_wait(
                        &c.proxy,
                        body,
                        |c| in_state(c, ContractState::Closing),
                        None,
                    )?;
                    println!(
                        "closing: the stake of {} TON and earnings of {} TON unlock at unix time {}; run `cocoon proxy close` again then",
                        format_ton(d.stake),
                        format_ton(d.earnings),
                        d.close_unlock_ts
                    );
                }
                ContractState::Closing => {
                    let owed = d.stake + d.earnings;
                    c.send_and_wait(
                        &c.proxy,
                        body,
                        |c| in_state(c, ContractState::Closed),
                        Some(&format!("the stake unlocks at unix time {}; run `cocoon proxy close` again then", d.close_unlock_ts)),
                    )?;
                    println!("closed: the stake and the earnings, {} TON, are in {}; the clients' money stays in {} for their refunds", format_ton(owed), c.owner, c.proxy);
                }
            }
            Ok(())
        }
        ProxyCommand::Status { at, chain } => {
            let client = chain.open()?;
            let rt = tokio::runtime::Runtime::new()?;
            let proxy = at.resolve(&chain, client.as_ref(), &rt)?;
            let d = rt
                .block_on(chain_client::read_proxy(client.as_ref(), &proxy))
                .with_context(|| format!("{proxy} is not a proxy contract on this chain"))?;
            let balance = rt.block_on(client.account(&proxy))?.balance;
            println!("proxy contract {proxy}: {:?}, owner {}", d.state, d.owner);
            println!(
                "  balance {} TON = stake {} TON + earnings {} TON + client money and fees {} TON",
                format_ton(balance),
                format_ton(d.stake),
                format_ton(d.earnings),
                format_ton(d.clients_money(balance))
            );
            // COCOON's save_state is a message the contract does not read: find the newest.
            let saved = rt.block_on(chain_client::last_saved_state(
                client.as_ref(),
                &proxy,
                &d.owner,
                SAVED_STATE_LOOKBACK,
            ))?;
            match saved {
                Some(s) => println!(
                    "  ledger committed on chain: seqno {}, state hash {} (sent by {}{})",
                    s.seqno,
                    hex::encode(s.hash),
                    s.from,
                    if s.from == d.owner { ", the owner's wallet" } else { ", a machine wallet of the owner's" }
                ),
                None => println!(
                    "  ledger committed on chain: no save_state among the contract's last {SAVED_STATE_LOOKBACK} transactions"
                ),
            }
            println!(
                "  voucher key {}; prices {} / {} nanoTON per token (client / worker)",
                hex::encode(d.proxy_public_key),
                d.params.price_per_token,
                d.params.worker_fee_per_token
            );
            Ok(())
        }
    }
}
