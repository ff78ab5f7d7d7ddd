//! `cocoon wallet machine show|withdraw|block|unblock`: the owner's hold on a role's machine
//! wallet (COCOON's wallet contract, the network's code; a client, a proxy and a worker each
//! have one, its key in the role's state directory). The owner's wallet sends the wallet's own commands
//! (`w`, `b`, `u`) to a machine wallet on chain (the role deploys it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use cocoon_chain::client::{self, ChainClient};
use cocoon_chain::cocoon_wallet::{self, CocoonWalletState, Command, MachineWallet};
use cocoon_chain::keys::Keypair;
use cocoon_chain::messages::MIN_FEE;
use cocoon_chain::wallet::{OutMessage, Wallet};
use cocoon_chain::{format_ton, Address};

use crate::chain::{ChainArgs, WalletArgs};

/// `cocoon wallet machine …`.
#[derive(Subcommand)]
pub enum MachineCommand {
    /// The machine wallet of a role's state directory: address, balance, seqno, owner, blocked.
    Show(MachineArgs),
    /// Everything but 0.01 TON back to the owner's wallet (the wallet's `w`).
    Withdraw(MachineArgs),
    /// Stop the machine's key from sending anything (`b`): the role's own payments stop too.
    Block(MachineArgs),
    /// Let the machine's key send again (`u`).
    Unblock(MachineArgs),
}

/// Which machine wallet, and its owner's wallet.
#[derive(Args)]
pub struct MachineArgs {
    /// The role's state directory (its machine wallet's key), e.g. .cocoon/client or .cocoon/proxy.
    #[arg(long)]
    pub state: PathBuf,
    /// The owner's wallet (the role's configured `wallet`).
    #[command(flatten)]
    pub wallet: WalletArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// The machine wallet at `at`: its balance and, when it is on chain, its state.
fn read(
    chain: &dyn ChainClient,
    rt: &tokio::runtime::Runtime,
    at: &Address,
) -> Result<(u128, Option<CocoonWalletState>)> {
    let acc = rt.block_on(chain.account(at))?;
    let state = acc
        .data
        .as_ref()
        .map(CocoonWalletState::parse)
        .transpose()?;
    Ok((acc.balance, state))
}

/// Sends the owner's `command` from the owner's wallet to the machine wallet `at` and waits
/// (up to 30 s) until it took effect; the wallet's balance before and after. A machine wallet
/// not on chain is refused: its address comes from the key and the owner, so it is either one
/// the role never used or another owner's (a wrong --wallet), and a command to it would only
/// be credited.
pub(crate) fn command_and_wait(
    chain: &dyn ChainClient,
    rt: &tokio::runtime::Runtime,
    (owner, keys): (&Wallet, &Keypair),
    at: Address,
    command: Command,
) -> Result<(u128, u128)> {
    let owner_address = owner.address()?;
    let (before, state) = read(chain, rt, &at)?;
    if state.is_none() {
        bail!(
            "the machine wallet {at} (this state directory's key, owned by {owner_address}) is not on chain: is --wallet the role's wallet, and has the role run?"
        );
    }
    let have = rt.block_on(chain.account(&owner_address))?.balance;
    if have < MIN_FEE * 2 {
        bail!(
            "the owner's wallet {owner_address} holds {} TON; the command takes {} TON and its fees",
            format_ton(have),
            format_ton(MIN_FEE)
        );
    }
    let msg = OutMessage::transfer(at, MIN_FEE, Some(cocoon_wallet::command(command)?));
    rt.block_on(client::send_transfer(chain, owner, keys, &[msg]))?;
    let done = |s: &(u128, Option<CocoonWalletState>)| match (command, &s.1) {
        (Command::WithdrawAll, Some(_)) => s.0 <= cocoon_wallet::WITHDRAW_RESERVE,
        (Command::Block, Some(w)) => w.blocked,
        (Command::Unblock, Some(w)) => !w.blocked,
        (_, None) => false,
    };
    for _ in 0..300 {
        let now = read(chain, rt, &at)?;
        if done(&now) {
            return Ok((before, now.0));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the machine wallet {at} did not take the command within 30 s (look at its transactions)")
}

/// Runs a `wallet machine` command.
pub fn run(cmd: MachineCommand) -> Result<()> {
    let (args, command) = match cmd {
        MachineCommand::Show(a) => (a, None),
        MachineCommand::Withdraw(a) => (a, Some(Command::WithdrawAll)),
        MachineCommand::Block(a) => (a, Some(Command::Block)),
        MachineCommand::Unblock(a) => (a, Some(Command::Unblock)),
    };
    let (keys, owner) = args.wallet.load(args.chain.network())?;
    let owner_address = owner.address()?;
    let at = MachineWallet::existing_in(&args.state, owner_address)?.address();
    let chain = args.chain.open()?;
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(command) = command {
        let (before, after) = command_and_wait(chain.as_ref(), &rt, (&owner, &keys), at, command)?;
        match command {
            Command::WithdrawAll => println!(
                "took {} TON from the machine wallet back to {owner_address}",
                format_ton(before.saturating_sub(after))
            ),
            Command::Block => println!(
                "blocked: the machine's key can send nothing until `cocoon wallet machine unblock`"
            ),
            Command::Unblock => println!("unblocked: the machine's key can send again"),
        }
    }
    match read(chain.as_ref(), &rt, &at)? {
        (balance, Some(s)) => println!(
            "machine wallet {at}: {} TON, seqno {}, owner {}, {}",
            format_ton(balance),
            s.seqno,
            s.owner,
            if s.blocked { "blocked" } else { "not blocked" }
        ),
        (balance, None) => println!(
            "machine wallet {at}: {} TON, not deployed yet (the role deploys it with its first message), owner {owner_address}",
            format_ton(balance)
        ),
    }
    Ok(())
}
