//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong in the TON layer, each with the thing that was wrong.
#[derive(Debug, Error)]
pub enum ChainError {
    /// A cell could not be built or parsed (layout mismatch, overflow of 1023 bits / 4 refs).
    #[error("cell error: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// Bytes that should have been a BOC were not.
    #[error("invalid BOC: {0}")]
    Boc(String),
    /// An address string that is neither raw (`0:<64 hex>`) nor user-friendly.
    #[error("invalid address {0:?}: {1}")]
    InvalidAddress(String, &'static str),
    /// A TON amount that is not a non-negative decimal with at most 9 decimals.
    #[error("invalid TON amount {0:?} (expected e.g. 1.5, at most 9 decimals)")]
    InvalidAmount(String),
    /// A choice that is not one of the known values (network, wallet version, …).
    #[error("{0}")]
    Unknown(String),
    /// A mnemonic that is not 24 known words with a valid TON checksum.
    #[error("invalid mnemonic: {0}")]
    InvalidMnemonic(String),
    /// A key that is not 32 bytes of hex / a valid Ed25519 seed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Contract data that does not have the layout of `contracts/SPEC.md`.
    #[error("unexpected {what} layout: {detail}")]
    Layout {
        /// Which data was being parsed.
        what: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// A message the local chain refused before executing it.
    #[error("message refused: {0}")]
    Refused(String),
    /// The transaction executor failed (not a contract exit code: those are results).
    #[error("executor: {0}")]
    Executor(String),
    /// A get-method that failed, with its exit code.
    #[error("get-method {method} failed with exit code {exit_code}")]
    GetMethod {
        /// Method name.
        method: String,
        /// TVM exit code.
        exit_code: i32,
    },
    /// The account does not exist or has no code.
    #[error("account {0} is not active")]
    NotActive(String),
    /// Reading or writing the chain's state on disk.
    #[error("chain state {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A local chain directory another process runs (see `local::owner`).
    #[error("{0}")]
    InUse(String),
    /// A remote chain API (toncenter) answered with an error or garbage.
    #[error("chain API: {0}")]
    Api(String),
}

impl ChainError {
    pub(crate) fn layout(what: &'static str, detail: impl std::fmt::Display) -> Self {
        ChainError::Layout {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;
