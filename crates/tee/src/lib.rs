//! Attestation: how a party proves it runs approved code inside a TEE, and
//! how its peer checks that proof during the TLS handshake.
//!
//! The pieces, bottom up:
//! - [`quote`] parses TDX v4 quotes and computes the *image hash* (the
//!   identity of the software in the TD); it also builds the recognisably
//!   fake quotes of the `fake_tdx` mode.
//! - [`provider`] obtains quotes: from the kernel's configfs-tsm interface on
//!   a real TDX guest, or fabricated by [`provider::FakeTdxProvider`].
//! - [`dcap`] verifies a real quote's Intel signature chain and TCB status
//!   with `dcap-qvl`, offline, from collateral and a time passed in.
//! - [`claims`] is the versioned, extensible statement a party binds into
//!   its quote (its TLS public key first).
//! - [`cert`] makes and parses RA-TLS certificates: a self-signed Ed25519
//!   certificate carrying the quote and the claims in critical extensions.
//! - [`policy`] decides whether a peer's certificate is acceptable and
//!   yields its verified [`PeerIdentity`]; [`cache`] remembers verdicts.
//! - [`tls`] builds rustls client and server configs (TLS 1.3 only, mutual
//!   authentication, no resumption) whose verifiers run the policy.
//!
//! Architecture invariant: this is the only crate that parses quotes or
//! certificates; the rest of the system sees only [`PeerIdentity`].
#![forbid(unsafe_code)]

pub mod cache;
pub mod cert;
pub mod claims;
pub mod dcap;
pub mod error;
pub mod policy;
pub mod provider;
pub mod quote;
pub mod tls;

pub use cert::{CertOptions, RaTlsCert};
pub use claims::Claims;
pub use error::AttestError;
pub use policy::{PeerIdentity, Policy, PolicyKind, TeeKind, Verifier};
pub use provider::{ConfigfsTsmProvider, FakeTdxProvider, QuoteProvider};
pub use quote::{Measurements, TdxQuote};
pub use rustls;

/// OID of the certificate extension holding the quote.
pub const QUOTE_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 1];
/// OID of the certificate extension holding the serialized claims.
pub const CLAIMS_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 2];

/// The current time in unix seconds (the default clock of a [`Verifier`]).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
