//! The TON layer of Cocoon.
//!
//! - [`cells`], [`address`]: small helpers over `tycho-types` cells and TON addresses
//!   (raw `0:…` and user-friendly, bounceable / non-bounceable / testnet).
//! - [`keys`], [`mnemonic`], [`wallet`]: Ed25519 keys, TON's 24-word mnemonics, wallets v4r2 and v5r1.
//! - [`cocoon_wallet`]: COCOON's machine wallet, run on the network's own code.
//! - [`contracts`], [`messages`], [`voucher`]: the Cocoon payment contracts (root, proxy,
//!   client, worker): their committed code, initial data and addresses, every message body they
//!   accept, and the proxy-signed vouchers. Layouts are in `contracts/SPEC.md`.
//! - [`price`]: COCOON's price formula in integer arithmetic.
//! - [`local`]: the embedded local chain (tycho-executor running the real contract code).
//! - [`stack`], [`client`]: get-method stacks and the [`client::ChainClient`] trait with its
//!   implementations (in-process local chain, toncenter v2 HTTP).
//! - [`toncenter`]: a toncenter-v2-compatible HTTP server over the local chain.
//!
//! Money is integer nanotons (`u128`) everywhere.

pub mod address;
pub mod bench;
pub mod cells;
pub mod client;
pub mod cocoon_wallet;
pub mod contracts;
pub mod error;
pub mod fake_ton;
pub mod files;
pub mod keys;
pub mod local;
pub mod messages;
pub mod mnemonic;
pub mod price;
pub mod reference_contracts;
pub mod stack;
pub mod toncenter;
pub mod voucher;
pub mod wallet;

pub use address::Address;
pub use error::ChainError;
/// Re-exported so users of this crate name cells with the same types.
pub use tycho_types;

/// One TON in nanotons.
pub const TON: u128 = 1_000_000_000;

/// Formats nanotons as a decimal TON amount (`1.5`, `0.000000001`), exactly.
pub fn format_ton(nanotons: u128) -> String {
    let whole = nanotons / TON;
    let frac = nanotons % TON;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Parses a decimal TON amount (`"1.5"`) into nanotons, refusing more than 9 decimals,
/// signs, and overflow.
pub fn parse_ton(text: &str) -> Result<u128, ChainError> {
    let bad = || ChainError::InvalidAmount(text.to_string());
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 9 {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| bad())? * 10u128.pow(9 - frac.len() as u32)
    };
    whole
        .checked_mul(TON)
        .and_then(|w| w.checked_add(frac_val))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ton_amounts_round_trip_exactly() {
        assert_eq!(parse_ton("1").unwrap(), TON);
        assert_eq!(parse_ton("0.000000001").unwrap(), 1);
        assert_eq!(parse_ton("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_ton(".5").unwrap(), 500_000_000);
        assert_eq!(parse_ton("0").unwrap(), 0);
        assert_eq!(format_ton(1_500_000_000), "1.5");
        assert_eq!(format_ton(1), "0.000000001");
        assert_eq!(format_ton(0), "0");
        for bad in [
            "",
            ".",
            "-1",
            "1.0000000001",
            "1e9",
            "abc",
            "1.2.3",
            "340282366920938463463374607431768211456",
        ] {
            assert!(parse_ton(bad).is_err(), "{bad} accepted");
        }
    }
}

/// Which TON network a component talks to. Only configuration differs between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// TON mainnet.
    Mainnet,
    /// TON testnet.
    Testnet,
    /// The embedded local chain (`cocoon chain serve`).
    Local,
}

impl Network {
    /// The network's global id (what wallet v5r1 mixes into its wallet id). The local chain
    /// uses mainnet's, so keys show the same addresses as in wallet apps.
    pub fn global_id(self) -> i32 {
        match self {
            Network::Testnet => -3,
            Network::Mainnet | Network::Local => -239,
        }
    }

    /// Whether user-friendly addresses carry the testnet flag.
    pub fn is_testnet(self) -> bool {
        self == Network::Testnet
    }
}

impl std::str::FromStr for Network {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self, ChainError> {
        match s {
            "mainnet" => Ok(Network::Mainnet),
            "testnet" => Ok(Network::Testnet),
            "local" => Ok(Network::Local),
            _ => Err(ChainError::Unknown(format!(
                "unknown network {s:?} (mainnet, testnet or local)"
            ))),
        }
    }
}
