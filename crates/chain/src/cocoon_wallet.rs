//! COCOON's machine wallet (the reference runners' `CocoonWallet`): the wallet a role signs for
//! with a key of its own machine, owned by the person who runs the role. The machine's key can
//! send; the owner can take everything back, block the key, and send through the wallet. Its code
//! is the network's, not ours: the BOC the reference runners embed
//! (`runners/smartcontracts/CocoonWallet.cpp` in TelegramMessenger/cocoon at b75d444, Copyright
//! 2025 Telegram FZ-LLC, Apache-2.0; see `crates/chain/res/NOTICE`), run as is on the local chain.
//!
//! What that code does (read from its disassembly; every point is a test in
//! `crates/chain/tests/cocoon_wallet.rs`):
//! - storage `seqno:32 subwallet:32 public_key:256 status:32 owner:MsgAddress`, bit 0 of
//!   `status` meaning "blocked"; get-methods `seqno`, `get_public_key`, `get_owner_address`;
//! - an external message `signature:512 subwallet:32 valid_until:32 seqno:32 (mode:8 ^message)*`
//!   signed by the machine's key sends each message with its mode; refused (not accepted, no fee)
//!   when expired (1030), blocked (1031), for another seqno (1032) or subwallet (1033), badly
//!   signed (1034), or while the wallet holds less than 2 TON once the message's import fee is
//!   taken (1035);
//! - an internal message with an empty body, a bounce, `excesses`, `payout` or `do_not_process`
//!   is kept, from anyone; anything else only from the owner (1040): `owner_wallet_send_message
//!   query_id:64 mode:8 ^message` sends that message, the text commands `w` (everything but
//!   0.01 TON back to the owner), `b` (block the machine's key) and `u` (unblock); any other 1041.

use std::path::Path;

use tycho_types::cell::{Cell, CellBuilder};

use crate::cells::{from_boc, load_address, load_u256, store_address, store_u256};
use crate::client::{fund_machine_wallet, send_transfer, ChainClient};
use crate::error::{ChainError, Result};
use crate::keys::Keypair;
use crate::wallet::{OutMessage, Wallet};
use crate::Address;

/// The wallet's code as the reference runners embed it (hex BOC).
const CODE_HEX: &str = "b5ee9c724102110100024b000114ff00f4a413f4bcf2c80b010201200210020148030b0202ca040a020120050701f5d3b68bb7edb088831c02456f8007434c0c05c6c2456f83e900c0074c7c86084095964d32e88a08431669f34eeac48a084268491f02eac6497c0f83b513434c7f4c7f4fff4c7fe903454dc31c17cb90409a084271a7cddaea78415d7c1f4cfcc74c1f50c007ec03801b0003cb9044134c1f448301dc8701880b01d60600ea5312b121b1f2e411018e295f07820898968072fb0280777080185410337003c8cb0558cf1601fa02cb6a12cb1fcb07c98306fb00e0378e19350271b101c8cb1f12cb1f13cbff12cb1f01cf16c9ed54db31e0058e1d028210fffffffeb001c8cb1f12cb1f13cbff12cb1f01cf16c9ed54db31e05f05020276080900691cf232c1c044440072c7c7b2c7c732c01402be8094023e8085b2c7c532c7c4b2c7f2c7f2c7f2c7c07e80807e80bd003d003d00326000553434c1c07000fcb8fc34c7f4c7f4c03e803e8034c7f4c7f4c7f4c7f4c7f4c7fe803e803d013d013d010c200049a9f21402b3c5940233c585b2fff2413232c05400fe80807e80b2cfc4b2c7c4b2fff33332600201200c0f0201200d0e0017bb39ced44d0d33f31d70bff80011b8c97ed44d0d70b1f8001bbdfddf6a2684080b06b90fd2018400e0f28308d71820d31fd31fd31f02f823bbf2d406ed44d0d31fd31fd3ffd31ffa40d12171b0f2d4075154baf2e4085162baf2e40906f901541076f910f2e40af8276f2230821077359400b9f2d40bf800029320d74a96d307d402fb00e83001a4c8cb1f14cb1f12cbffcb1f01cf16c9ed545d2b2126";

/// The code cell (decoded once).
pub fn code() -> Cell {
    static CODE: std::sync::LazyLock<Cell> = std::sync::LazyLock::new(|| {
        from_boc(&hex::decode(CODE_HEX).expect("hex")).expect("embedded COCOON wallet code")
    });
    CODE.clone()
}

/// Below this balance (counted after the external message's import fee) the code refuses every
/// external message (exit 1035).
pub const MIN_BALANCE: u128 = 2_000_000_000;
/// What the reference runners wait for before they use the wallet (`min_wallet_balance`).
pub const RUNNER_MIN_BALANCE: u128 = 2_100_000_000;
/// What a role's owner fills its machine wallet up to (above what a transfer needs) when it
/// falls below [`RUNNER_MIN_BALANCE`]: 5 TON, where a reference runner stops warning about it.
pub const FILL: u128 = 5_000_000_000;
/// What `w` leaves in the wallet.
pub const WITHDRAW_RESERVE: u128 = 10_000_000;

/// The code's exit codes, each with what it means.
pub mod exit {
    /// `valid_until` has passed.
    pub const EXPIRED: i32 = 1030;
    /// The owner blocked the machine's key (`b`).
    pub const BLOCKED: i32 = 1031;
    /// The message's seqno is not the wallet's.
    pub const WRONG_SEQNO: i32 = 1032;
    /// The message names another subwallet.
    pub const WRONG_SUBWALLET: i32 = 1033;
    /// The signature is not the machine key's.
    pub const BAD_SIGNATURE: i32 = 1034;
    /// The wallet holds less than 2 TON.
    pub const LOW_BALANCE: i32 = 1035;
    /// An internal message that only the owner may send came from someone else.
    pub const NOT_OWNER: i32 = 1040;
    /// Not a command the wallet knows.
    pub const UNKNOWN_COMMAND: i32 = 1041;

    /// What an exit code of this wallet means, if it is one.
    pub fn meaning(code: i32) -> Option<&'static str> {
        Some(match code {
            EXPIRED => "the message expired (valid_until passed)",
            BLOCKED => "the owner blocked this wallet's machine key",
            WRONG_SUBWALLET => "the message names another subwallet",
            WRONG_SEQNO => "the message's seqno is not the wallet's",
            BAD_SIGNATURE => "the signature is not the machine key's",
            LOW_BALANCE => "the wallet holds less than 2 TON and sends nothing below that",
            NOT_OWNER => "only the wallet's owner may send this",
            UNKNOWN_COMMAND => "not a command the wallet knows",
            _ => return None,
        })
    }
}

/// The file in a role's state directory that holds its machine wallet's key (hex seed).
pub const KEY_FILE: &str = "machine-wallet-key.hex";

/// A role's machine wallet: its key, the wallet, its address and its owner (computed once),
/// and one sender at a time (two that signed for the same seqno would drop one transfer).
pub struct MachineWallet {
    keys: Keypair,
    wallet: Wallet,
    address: Address,
    owner: Address,
    sending: tokio::sync::Mutex<()>,
}

impl MachineWallet {
    /// The machine wallet of key `keys`, owned by `owner`.
    pub fn new(keys: Keypair, owner: Address) -> Result<Self> {
        let wallet = Wallet::cocoon(keys.public_key(), owner);
        Ok(MachineWallet {
            address: wallet.address()?,
            keys,
            wallet,
            owner,
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// A role's machine wallet: the key in `dir` (drawn and written on first use), owned by
    /// `owner`.
    pub fn of_state_dir(dir: &Path, owner: Address) -> Result<Self> {
        let seed = crate::keys::load_or_create_seed(&dir.join(KEY_FILE))?;
        Self::new(Keypair::from_seed(seed), owner)
    }

    /// The machine wallet of a role that already ran with state directory `dir`; an error
    /// naming the file when it has none (never a new key: that would be another wallet).
    pub fn existing_in(dir: &Path, owner: Address) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        if !path.is_file() {
            return Err(ChainError::InvalidKey(format!(
                "{} does not exist: {} is not the state directory of a role that ran (its machine wallet's key is kept there)",
                path.display(),
                dir.display()
            )));
        }
        Self::of_state_dir(dir, owner)
    }

    /// Its address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Its owner (the role's wallet).
    pub fn owner(&self) -> Address {
        self.owner
    }

    /// The wallet (code, data, StateInit, transfers).
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// Sends `messages` from it, four to a transfer (its limit), after the owner's wallet
    /// `funder` made sure it holds their value above its floor
    /// ([`crate::client::fund_machine_wallet`]); one sender at a time.
    pub async fn send(
        &self,
        chain: &dyn ChainClient,
        funder: (&Wallet, &Keypair),
        messages: &[OutMessage],
    ) -> Result<()> {
        let need = messages
            .iter()
            .try_fold(0u128, |sum, m| sum.checked_add(m.value))
            .ok_or_else(|| ChainError::Refused("the amounts to send overflow u128".into()))?;
        let _one = self.sending.lock().await;
        fund_machine_wallet(chain, funder.0, funder.1, &self.address, need).await?;
        for part in messages.chunks(4) {
            send_transfer(chain, &self.wallet, &self.keys, part).await?;
        }
        Ok(())
    }

    /// Funds it (when below its floor) and deploys it with a transfer of nothing when it is
    /// not on chain yet, so its owner can command it from the start.
    pub async fn deploy(&self, chain: &dyn ChainClient, funder: (&Wallet, &Keypair)) -> Result<()> {
        let _one = self.sending.lock().await;
        fund_machine_wallet(chain, funder.0, funder.1, &self.address, 0).await?;
        if chain.account(&self.address).await?.status != "active" {
            send_transfer(chain, &self.wallet, &self.keys, &[]).await?;
        }
        Ok(())
    }
}

/// The wallet's initial data: seqno 0, subwallet 0, the machine's key, not blocked, the owner
/// (`CocoonWallet::init_data_cell`).
pub fn initial_data(public_key: &[u8; 32], owner: &Address) -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_u32(0)?;
    b.store_u32(0)?;
    store_u256(&mut b, public_key)?;
    b.store_u32(0)?;
    store_address(&mut b, owner)?;
    Ok(b.build()?)
}

/// The wallet's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CocoonWalletState {
    /// The seqno the next external message must carry.
    pub seqno: u32,
    /// The subwallet (0 for every wallet the runners make).
    pub subwallet: u32,
    /// The machine's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Whether the owner blocked the machine's key.
    pub blocked: bool,
    /// The owner.
    pub owner: Address,
}

impl CocoonWalletState {
    /// Parses the wallet's data cell; trailing data is an error.
    pub fn parse(data: &Cell) -> Result<Self> {
        let mut s = data.as_slice()?;
        let seqno = s.load_u32()?;
        let subwallet = s.load_u32()?;
        let public_key = load_u256(&mut s)?;
        let status = s.load_u32()?;
        let owner = load_address(&mut s)?;
        if !s.is_empty() {
            return Err(ChainError::Unknown(
                "COCOON wallet data: bits or references after the owner".into(),
            ));
        }
        Ok(CocoonWalletState {
            seqno,
            subwallet,
            public_key,
            blocked: status & 1 == 1,
            owner,
        })
    }
}

/// The owner's commands a wallet takes as text comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `w`: everything but 0.01 TON back to the owner.
    WithdrawAll,
    /// `b`: the machine's key may send nothing more.
    Block,
    /// `u`: the machine's key may send again.
    Unblock,
}

/// The owner's body for `command`: a text comment of its letter.
pub fn command(command: Command) -> Result<Cell> {
    crate::messages::text_comment(match command {
        Command::WithdrawAll => "w",
        Command::Block => "b",
        Command::Unblock => "u",
    })
}

/// The owner's `owner_wallet_send_message query_id mode ^message`: the wallet sends `message`
/// (a `MessageRelaxed` cell, e.g. [`crate::wallet::OutMessage::to_cell`]) with `mode`.
pub fn owner_send_message(query_id: u64, mode: u8, message: Cell) -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_u32(crate::messages::op::OWNER_WALLET_SEND_MESSAGE)?;
    b.store_u64(query_id)?;
    b.store_u8(mode)?;
    b.store_reference(message)?;
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use crate::wallet::Wallet;
    use base64::Engine;

    /// The reference proxy-runner that `shared/reference/run-local` starts (its
    /// `NODE_WALLET_KEY` and `OWNER_ADDRESS`) reports this wallet address in its `/jsonstats`.
    #[test]
    fn the_address_is_the_one_the_reference_runner_reports() {
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode("ml+7xELuOQtfp9q9mSWtHiSWx5aSBV6p3xCfwPmHOwY=")
            .unwrap()
            .try_into()
            .unwrap();
        let owner: Address = "UQAuz15H1ZHrZ_psVrAra7HealMIVeFq0wguqlmFno1f3B-m"
            .parse()
            .unwrap();
        let wallet = Wallet::cocoon(Keypair::from_seed(seed).public_key(), owner);
        let expected: Address = "UQAXGlaBPBoSyvlI0cEGKvS8Ak5e9JFcmKmcBmYsKhNTIdbG"
            .parse()
            .unwrap();
        assert_eq!(wallet.address().unwrap(), expected);
    }

    #[test]
    fn data_round_trips_and_trailing_bits_are_refused() {
        let owner = Address::new([5; 32]);
        let data = initial_data(&[9; 32], &owner).unwrap();
        let s = CocoonWalletState::parse(&data).unwrap();
        assert_eq!((s.seqno, s.subwallet, s.blocked), (0, 0, false));
        assert_eq!((s.public_key, s.owner), ([9; 32], owner));
        let mut b = CellBuilder::new();
        b.store_slice(data.as_slice().unwrap()).unwrap();
        b.store_bit_one().unwrap();
        let e = CocoonWalletState::parse(&b.build().unwrap()).unwrap_err();
        assert!(e.to_string().contains("after the owner"), "{e}");
        for code in 1030..=1041 {
            let known = exit::meaning(code).is_some();
            assert_eq!(known, !(1036..=1039).contains(&code), "{code}");
        }
    }
}
