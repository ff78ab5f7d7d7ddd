//! Verification of real TDX quotes with `dcap-qvl`, offline: the collateral
//! (Intel's TCB info, QE identity, CRLs and their chains, as JSON) and the
//! current time are passed in, so verification is reproducible and never
//! touches the network.

use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;
use sha2::{Digest, Sha384};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Intel's SGX/TDX root CA certificate (DER), the default trust anchor.
pub const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// Why a quote failed DCAP verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcapError {
    /// The collateral JSON does not parse.
    #[error("collateral is not valid JSON collateral: {0}")]
    BadCollateral(String),
    /// The root CA certificate does not parse.
    #[error("root CA certificate does not parse: {0}")]
    BadRootCa(String),
    /// dcap-qvl rejected the quote (signature, chain, CRL, expiry, ...).
    #[error("DCAP verification failed: {0}")]
    Rejected(String),
}

/// Parses collateral from its JSON form (as dcap-qvl and Intel's PCCS write it).
pub fn parse_collateral(json: &str) -> Result<QuoteCollateralV3, DcapError> {
    serde_json::from_str(json).map_err(|e| DcapError::BadCollateral(e.to_string()))
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcapReport {
    /// The platform's TCB status (`UpToDate`, `SWHardeningNeeded`, ...).
    pub tcb_status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// The id of the root key the chain ends in: SHA-384 of its public key.
    pub root_key_id: [u8; 48],
}

/// Verifies a real quote against a root CA (Intel's by default).
pub fn verify_quote(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix: u64,
    root_ca_der: &[u8],
) -> Result<DcapReport, DcapError> {
    let report = QuoteVerifier::new(root_ca_der.to_vec())
        .verify(quote, collateral, now_unix)
        .map_err(|e| DcapError::Rejected(format!("{e:#}")))?;
    Ok(DcapReport {
        tcb_status: report.status,
        advisory_ids: report.advisory_ids,
        root_key_id: root_key_id(root_ca_der)?,
    })
}

/// SHA-384 of a CA certificate's public key: the id allow-lists name.
pub fn root_key_id(ca_der: &[u8]) -> Result<[u8; 48], DcapError> {
    let (_, cert) =
        X509Certificate::from_der(ca_der).map_err(|e| DcapError::BadRootCa(e.to_string()))?;
    Ok(Sha384::digest(&cert.public_key().subject_public_key.data).into())
}
