//! Policies: which peers are acceptable, and the [`Verifier`] that applies
//! one to a certificate and yields the peer's verified [`PeerIdentity`].
//!
//! - `any`: no attestation required. The certificate must still be a
//!   well-formed RA-TLS certificate within its validity, with claims bound to
//!   its key; a quote, if present, must be bound to the claims but is not
//!   otherwise checked. Allow-lists are ignored. For development only.
//! - `fake_tdx`: a quote is required; fake quotes are accepted (they are the
//!   local network's attestation), real ones are DCAP-verified; allow-lists
//!   apply.
//! - `tdx`: a real, DCAP-verified quote with an accepted TCB status from an
//!   allowed Intel root; fake quotes are refused; allow-lists apply.

use std::str::FromStr;
use std::sync::Arc;

use dcap_qvl::QuoteCollateralV3;

use crate::cache::AttestationCache;
use crate::cert::{parse_cert, report_data_for};
use crate::claims::Claims;
use crate::dcap::{self, DcapReport, INTEL_ROOT_CA_DER};
use crate::error::AttestError;
use crate::quote::{Measurements, TdxQuote};

/// The three policies (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// No attestation required.
    Any,
    /// Fake or real TDX quotes.
    FakeTdx,
    /// Real, verified TDX quotes only.
    Tdx,
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Self::Any),
            "fake_tdx" => Ok(Self::FakeTdx),
            "tdx" => Ok(Self::Tdx),
            other => Err(format!(
                "unknown policy {other:?}: expected any, fake_tdx or tdx"
            )),
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::FakeTdx => "fake_tdx",
            Self::Tdx => "tdx",
        })
    }
}

/// What kind of TEE evidence a peer presented, as far as it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeKind {
    /// No quote at all (only under `any`).
    None,
    /// A fake quote (local networks and tests).
    FakeTdx,
    /// A real quote that was not verified (only under `any`).
    UnverifiedTdx,
    /// A real quote verified against Intel's chain.
    Tdx,
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::FakeTdx => "fake_tdx",
            Self::UnverifiedTdx => "tdx (unverified)",
            Self::Tdx => "tdx",
        })
    }
}

/// TCB statuses accepted unless the policy says otherwise.
pub const DEFAULT_TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
];

/// A policy and its allow-lists. An empty allow-list allows everything.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Which policy.
    pub kind: PolicyKind,
    /// Allowed MRTD values.
    pub allowed_mrtd: Vec<[u8; 48]>,
    /// Allowed RTMR0..3 sets (all four must match one set).
    pub allowed_rtmrs: Vec<[[u8; 48]; 4]>,
    /// Allowed image hashes.
    pub allowed_image_hashes: Vec<[u8; 32]>,
    /// Allowed Intel root key ids (SHA-384 of the root CA public key).
    pub allowed_root_key_ids: Vec<[u8; 48]>,
    /// Accepted TCB statuses of real quotes.
    pub allowed_tcb_statuses: Vec<String>,
    /// DCAP collateral for real quotes.
    pub collateral: Option<QuoteCollateralV3>,
    /// The trust anchor for real quotes (Intel's root CA by default).
    pub root_ca_der: Vec<u8>,
    /// Accept debug TDs (never in production).
    pub allow_debug: bool,
}

impl Policy {
    /// A policy of `kind` with empty allow-lists and Intel's root.
    pub fn new(kind: PolicyKind) -> Self {
        Self {
            kind,
            allowed_mrtd: Vec::new(),
            allowed_rtmrs: Vec::new(),
            allowed_image_hashes: Vec::new(),
            allowed_root_key_ids: Vec::new(),
            allowed_tcb_statuses: DEFAULT_TCB_STATUSES.iter().map(|s| s.to_string()).collect(),
            collateral: None,
            root_ca_der: INTEL_ROOT_CA_DER.to_vec(),
            allow_debug: false,
        }
    }
}

/// Who the peer is, as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The evidence kind.
    pub tee: TeeKind,
    /// The peer's Ed25519 TLS key.
    pub public_key: [u8; 32],
    /// The image hash, when a quote was present.
    pub image_hash: Option<[u8; 32]>,
    /// The measurements, when a quote was present.
    pub measurements: Option<Measurements>,
    /// The peer's claims.
    pub claims: Claims,
    /// Certificate notBefore, unix seconds.
    pub not_before: u64,
    /// Certificate notAfter, unix seconds.
    pub not_after: u64,
    /// TCB status of a verified real quote.
    pub tcb_status: Option<String>,
    /// Root key id of a verified real quote.
    pub root_key_id: Option<[u8; 48]>,
}

/// The current time in unix seconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Applies a [`Policy`] to certificates, with a cache of verdicts.
pub struct Verifier {
    policy: Policy,
    clock: Clock,
    cache: AttestationCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("policy", &self.policy.kind)
            .finish()
    }
}

impl Verifier {
    /// A verifier on the system clock.
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, Arc::new(crate::unix_now))
    }

    /// A verifier on the given clock.
    pub fn with_clock(policy: Policy, clock: Clock) -> Self {
        Self {
            policy,
            clock,
            cache: AttestationCache::default(),
        }
    }

    /// A verifier whose time stands still at `now` (tests, `--now`).
    pub fn at_time(policy: Policy, now: u64) -> Self {
        Self::with_clock(policy, Arc::new(move || now))
    }

    /// The policy applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The verdict cache.
    pub fn cache(&self) -> &AttestationCache {
        &self.cache
    }

    /// The verifier's current time.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Verifies a certificate, answering from the cache when this exact
    /// certificate was accepted before and is still within its validity.
    pub fn verify_cert(&self, der: &[u8]) -> Result<PeerIdentity, AttestError> {
        let now = self.now();
        let key = AttestationCache::key(der);
        if let Some(identity) = self.cache.get(&key, now) {
            return Ok(identity);
        }
        let identity = self.verify_cert_uncached(der, now)?;
        self.cache.insert(key, identity.clone(), now);
        Ok(identity)
    }

    /// Verifies a certificate from scratch at time `now`.
    pub fn verify_cert_uncached(&self, der: &[u8], now: u64) -> Result<PeerIdentity, AttestError> {
        let cert = parse_cert(der)?;
        if now < cert.not_before {
            return Err(AttestError::CertNotYetValid {
                not_before: cert.not_before,
                now,
            });
        }
        if now > cert.not_after {
            return Err(AttestError::CertExpired {
                not_after: cert.not_after,
                now,
            });
        }
        let mut identity = PeerIdentity {
            tee: TeeKind::None,
            public_key: cert.public_key,
            image_hash: None,
            measurements: None,
            claims: cert.claims.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            tcb_status: None,
            root_key_id: None,
        };
        let Some(quote_raw) = &cert.quote_raw else {
            return match self.policy.kind {
                PolicyKind::Any => Ok(identity),
                _ => Err(AttestError::NoQuote),
            };
        };
        let quote = TdxQuote::parse(quote_raw)?;
        if quote.report_data != report_data_for(&cert.claims_raw) {
            return Err(AttestError::QuoteNotBound);
        }
        identity.image_hash = Some(quote.image_hash());
        identity.measurements = Some(quote.measurements);
        let report = self.check_quote(&quote, quote_raw, now)?;
        identity.tee = match (&report, quote.is_fake()) {
            (Some(_), _) => TeeKind::Tdx,
            (None, true) => TeeKind::FakeTdx,
            (None, false) => TeeKind::UnverifiedTdx,
        };
        if let Some(r) = report {
            identity.tcb_status = Some(r.tcb_status);
            identity.root_key_id = Some(r.root_key_id);
        }
        Ok(identity)
    }

    /// Applies the policy to a quote already bound to the peer's claims.
    /// Returns the DCAP report when the quote was verified as real.
    pub fn check_quote(
        &self,
        quote: &TdxQuote,
        quote_raw: &[u8],
        now: u64,
    ) -> Result<Option<DcapReport>, AttestError> {
        let p = &self.policy;
        let report = match (p.kind, quote.is_fake()) {
            (PolicyKind::Any, _) => return Ok(None),
            (PolicyKind::Tdx, true) => return Err(AttestError::FakeQuoteRejected),
            (PolicyKind::FakeTdx, true) => None,
            (_, false) => Some(self.verify_real(quote_raw, now)?),
        };
        if quote.is_debug() && !p.allow_debug {
            return Err(AttestError::DebugTd);
        }
        let m = &quote.measurements;
        if !p.allowed_mrtd.is_empty() && !p.allowed_mrtd.contains(&m.mr_td) {
            return Err(AttestError::MrtdNotAllowed(hex::encode(m.mr_td)));
        }
        if !p.allowed_rtmrs.is_empty() && !p.allowed_rtmrs.contains(&m.rtmr) {
            return Err(AttestError::RtmrNotAllowed);
        }
        let image_hash = quote.image_hash();
        if !p.allowed_image_hashes.is_empty() && !p.allowed_image_hashes.contains(&image_hash) {
            return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
        }
        Ok(report)
    }

    fn verify_real(&self, quote_raw: &[u8], now: u64) -> Result<DcapReport, AttestError> {
        let p = &self.policy;
        let collateral = p
            .collateral
            .as_ref()
            .ok_or(AttestError::MissingCollateral)?;
        let report = dcap::verify_quote(quote_raw, collateral, now, &p.root_ca_der)?;
        if !p.allowed_tcb_statuses.contains(&report.tcb_status) {
            return Err(AttestError::TcbStatusNotAllowed(report.tcb_status));
        }
        if !p.allowed_root_key_ids.is_empty()
            && !p.allowed_root_key_ids.contains(&report.root_key_id)
        {
            return Err(AttestError::RootKeyIdNotAllowed(hex::encode(
                report.root_key_id,
            )));
        }
        Ok(report)
    }
}
