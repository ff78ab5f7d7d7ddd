//! Every reason a peer's attestation is refused, precise enough to test for.

use crate::claims::ClaimsError;
use crate::dcap::DcapError;
use crate::quote::QuoteError;

/// Why a certificate (and so a peer) was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// Not a parseable X.509 certificate.
    #[error("certificate does not parse: {0}")]
    CertParse(String),
    /// The key or signature algorithm is not Ed25519.
    #[error("certificate key or signature is not Ed25519")]
    NotEd25519,
    /// The self-signature does not verify (the certificate was altered).
    #[error("certificate self-signature does not verify: it was altered or forged")]
    BadCertSignature,
    /// Past its notAfter.
    #[error("certificate expired at {not_after} (now {now})")]
    CertExpired {
        /// notAfter, unix seconds.
        not_after: u64,
        /// The verifier's time.
        now: u64,
    },
    /// Before its notBefore.
    #[error("certificate is not valid before {not_before} (now {now})")]
    CertNotYetValid {
        /// notBefore, unix seconds.
        not_before: u64,
        /// The verifier's time.
        now: u64,
    },
    /// A critical extension this verifier does not understand.
    #[error("certificate has an unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// The peer presented no certificate at all.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// An RA-TLS extension appears twice.
    #[error("certificate has the {0} extension twice")]
    DuplicateExtension(&'static str),
    /// The claims do not parse.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The claims name another key than the certificate's.
    #[error("claims are for another public key than the certificate's")]
    ClaimsKeyMismatch,
    /// The quote's report_data is not SHA-512 of these claims: the quote was
    /// made for another key (a replayed quote).
    #[error(
        "quote is bound to another key: report_data is not SHA-512 of the certificate's claims"
    )]
    QuoteNotBound,
    /// The quote does not parse.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The policy needs a quote and the certificate has none.
    #[error("certificate carries no quote, and the policy requires one")]
    NoQuote,
    /// A fake quote under the `tdx` policy.
    #[error("fake TDX quote refused: the tdx policy accepts only Intel-signed quotes")]
    FakeQuoteRejected,
    /// A real quote, but no collateral to verify it with.
    #[error("no DCAP collateral configured to verify a real TDX quote")]
    MissingCollateral,
    /// DCAP verification failed.
    #[error(transparent)]
    Dcap(#[from] DcapError),
    /// The TCB status is not in the accepted list.
    #[error("TCB status {0} is not accepted by the policy")]
    TcbStatusNotAllowed(String),
    /// A debug TD (the host can read its memory).
    #[error("quote is from a debug TD, whose memory the host can read")]
    DebugTd,
    /// MRTD not in the allow-list.
    #[error("MRTD {0} is not in the allow-list")]
    MrtdNotAllowed(String),
    /// RTMR0..3 not an allowed set.
    #[error("RTMR set is not in the allow-list")]
    RtmrNotAllowed,
    /// Image hash not in the allow-list.
    #[error("image hash {0} is not in the allow-list")]
    ImageHashNotAllowed(String),
    /// Intel root key id not in the allow-list.
    #[error("Intel root key id {0} is not in the allow-list")]
    RootKeyIdNotAllowed(String),
}
