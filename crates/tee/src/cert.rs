//! RA-TLS certificates: self-signed Ed25519 certificates that carry a quote
//! (OID 1.3.6.1.4.1.12345.1) and the claims it binds (…12345.2), both in
//! *critical* extensions so that a verifier unaware of RA-TLS refuses them
//! instead of trusting them as ordinary certificates.
//!
//! The binding: the claims start with the certificate's public key, and the
//! quote's report_data is SHA-512 of the claims' bytes. A quote copied into
//! another certificate therefore names the wrong key.
//!
//! The encoding is COCOON's: each extension's value is the raw bytes (the
//! quote as the TD produced it; the claims as [`Claims::to_bytes`] writes
//! them, the bare key in COCOON's form). A certificate without either
//! extension is a plain self-signed one, as reference clients present: its
//! claims are its key, and only the `any` policy accepts it.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PKCS_ED25519};
use sha2::{Digest, Sha512};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::claims::Claims;
use crate::error::AttestError;
use crate::provider::{ProviderError, QuoteProvider};
use crate::{CLAIMS_EXTENSION_OID, QUOTE_EXTENSION_OID};

/// Default validity of a certificate: one day.
pub const DEFAULT_VALIDITY_SECS: u64 = 24 * 60 * 60;

/// Critical extensions a verifier understands besides the two RA-TLS ones.
const KNOWN_CRITICAL: &[&str] = &["2.5.29.19", "2.5.29.15", "2.5.29.37"];
const ED25519_OID: &str = "1.3.101.112";

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The key is not Ed25519.
    #[error("RA-TLS certificates need an Ed25519 key")]
    KeyNotEd25519,
    /// The claims name another key.
    #[error("claims are for another public key than the certificate's key")]
    ClaimsKeyMismatch,
    /// The quote provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A time out of range.
    #[error("time {0} is out of range for a certificate")]
    BadTime(u64),
    /// Certificate building failed.
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    /// PEM files unusable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// How to make a certificate.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Subject common name (informational).
    pub common_name: String,
    /// Start of validity, unix seconds.
    pub not_before: u64,
    /// Length of validity in seconds.
    pub validity_secs: u64,
    /// More extensions `(oid, raw content, critical)`: for forward
    /// compatibility and for tests of how verifiers treat them.
    pub extra_extensions: Vec<(Vec<u64>, Vec<u8>, bool)>,
}

impl CertOptions {
    /// One day from `now`, named `name`.
    pub fn new(name: &str, now: u64) -> Self {
        Self {
            common_name: name.to_string(),
            not_before: now,
            validity_secs: DEFAULT_VALIDITY_SECS,
            extra_extensions: Vec::new(),
        }
    }
}

/// A certificate and its private key (PKCS#8 DER).
#[derive(Clone)]
pub struct RaTlsCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The Ed25519 private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for RaTlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsCert")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key_pkcs8", &"<secret>")
            .finish()
    }
}

/// A fresh Ed25519 key.
pub fn generate_key() -> Result<KeyPair, CertError> {
    Ok(KeyPair::generate_for(&PKCS_ED25519)?)
}

/// Makes an RA-TLS certificate for `key` carrying `claims` and a quote over
/// them from `provider`. Refuses claims for another key.
pub fn generate(
    key: &KeyPair,
    claims: &Claims,
    provider: &dyn QuoteProvider,
    opts: &CertOptions,
) -> Result<RaTlsCert, CertError> {
    if key.algorithm() != &PKCS_ED25519 {
        return Err(CertError::KeyNotEd25519);
    }
    if key.public_key_raw() != claims.public_key {
        return Err(CertError::ClaimsKeyMismatch);
    }
    let claims_bytes = claims.to_bytes();
    let report_data: [u8; 64] = Sha512::digest(&claims_bytes).into();
    let quote = provider.quote(&report_data)?;

    let mut params = reference_params(opts)?;
    for (oid, content) in [
        (QUOTE_EXTENSION_OID, quote),
        (CLAIMS_EXTENSION_OID, claims_bytes),
    ] {
        let mut ext = CustomExtension::from_oid_content(oid, content);
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
    }
    for (oid, content, critical) in &opts.extra_extensions {
        let mut ext = CustomExtension::from_oid_content(oid, content.clone());
        ext.set_criticality(*critical);
        params.custom_extensions.push(ext);
    }
    let cert = params.self_signed(key)?;
    Ok(RaTlsCert {
        cert_der: cert.der().to_vec(),
        key_pkcs8: key.serialize_der(),
    })
}

/// Certificate parameters for `opts` (name, validity) with the subject alternative names every
/// reference certificate carries (`localhost`, `127.0.0.1` as a DNS name, `::1`): a reference
/// TLS client checks the peer's certificate against the host name "127.0.0.1" whatever it
/// dials, so a certificate without that name is refused by every reference role.
fn reference_params(opts: &CertOptions) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, opts.common_name.as_str());
    params.distinguished_name = dn;
    params.not_before = to_time(opts.not_before)?;
    params.not_after = to_time(opts.not_before.saturating_add(opts.validity_secs))?;
    // Both as DNS names (the reference writes "127.0.0.1" as one, and checks it as one).
    for name in ["localhost", "127.0.0.1"] {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName(name.try_into()?));
    }
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V6(
            std::net::Ipv6Addr::LOCALHOST,
        )));
    Ok(params)
}

/// A plain self-signed certificate for a new key, without RA-TLS extensions: what a reference
/// client presents (it runs outside a TEE). Only the `any` policy accepts it.
pub fn generate_plain(opts: &CertOptions) -> Result<RaTlsCert, CertError> {
    let key = generate_key()?;
    let cert = reference_params(opts)?.self_signed(&key)?;
    Ok(RaTlsCert {
        cert_der: cert.der().to_vec(),
        key_pkcs8: key.serialize_der(),
    })
}

/// A new key, claims of just that key (COCOON's form), and a certificate
/// made with `opts`.
pub fn generate_new(
    provider: &dyn QuoteProvider,
    opts: &CertOptions,
) -> Result<(RaTlsCert, Claims), CertError> {
    let key = generate_key()?;
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(key.public_key_raw());
    // Key-only claims: COCOON's form, which a reference peer can check.
    let claims = Claims::new(public_key);
    let cert = generate(&key, &claims, provider, opts)?;
    Ok((cert, claims))
}

fn to_time(unix: u64) -> Result<time::OffsetDateTime, CertError> {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or(CertError::BadTime(unix))
}

impl RaTlsCert {
    /// The certificate and key as PEM text.
    pub fn to_pem(&self) -> (String, String) {
        let cert = pem_encode("CERTIFICATE", &self.cert_der);
        let key = pem_encode("PRIVATE KEY", &self.key_pkcs8);
        (cert, key)
    }

    /// Writes `DIR/NAME.cert.pem` and `DIR/NAME.key.pem` (the key readable by
    /// the owner only); returns their paths.
    pub fn write_pem(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = self.to_pem();
        let cert_path = dir.join(format!("{name}.cert.pem"));
        let key_path = dir.join(format!("{name}.key.pem"));
        std::fs::write(&cert_path, cert)?;
        write_private(&key_path, key.as_bytes())?;
        Ok((cert_path, key_path))
    }

    /// Loads a certificate and key written by [`RaTlsCert::write_pem`].
    pub fn load_pem(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
        let cert_der = read_pem(cert_path, "CERTIFICATE")?;
        let key_pkcs8 = read_pem(key_path, "PRIVATE KEY")?;
        Ok(Self {
            cert_der,
            key_pkcs8,
        })
    }
}

/// Reads the certificate (DER) from a PEM file, without its key.
pub fn read_cert_pem(path: &Path) -> Result<Vec<u8>, CertError> {
    read_pem(path, "CERTIFICATE")
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, CertError> {
    let err = |reason: String| CertError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
        .map_err(|e| err(format!("not a PEM file ({e})")))?;
    if pem.label != label {
        return Err(err(format!(
            "expected a {label} PEM block, found {}",
            pem.label
        )));
    }
    Ok(pem.contents)
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

/// A structurally valid RA-TLS certificate: parsed, self-signature checked,
/// extensions understood, claims bound to its key. Nothing about time or
/// policy has been decided yet.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// notBefore, unix seconds.
    pub not_before: u64,
    /// notAfter, unix seconds.
    pub not_after: u64,
    /// The parsed claims.
    pub claims: Claims,
    /// The claims as carried (what report_data hashes).
    pub claims_raw: Vec<u8>,
    /// The quote, if the certificate has one.
    pub quote_raw: Option<Vec<u8>>,
}

/// Parses and checks the structure of an RA-TLS certificate.
pub fn parse_cert(der: &[u8]) -> Result<ParsedCert, AttestError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| AttestError::CertParse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AttestError::CertParse(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let spki = cert.public_key();
    if cert.signature_algorithm.algorithm.to_id_string() != ED25519_OID
        || spki.algorithm.algorithm.to_id_string() != ED25519_OID
    {
        return Err(AttestError::NotEd25519);
    }
    let public_key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| AttestError::NotEd25519)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| AttestError::BadCertSignature)?;

    let quote_oid = oid_string(QUOTE_EXTENSION_OID);
    let claims_oid = oid_string(CLAIMS_EXTENSION_OID);
    let mut quote_raw = None;
    let mut claims_raw = None;
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == quote_oid {
            if quote_raw.is_some() {
                return Err(AttestError::DuplicateExtension("quote"));
            }
            quote_raw = Some(ext.value.to_vec());
        } else if oid == claims_oid {
            if claims_raw.is_some() {
                return Err(AttestError::DuplicateExtension("claims"));
            }
            claims_raw = Some(ext.value.to_vec());
        } else if ext.critical && !KNOWN_CRITICAL.contains(&oid.as_str()) {
            return Err(AttestError::UnknownCriticalExtension(oid));
        }
    }
    // No claims extension (a plain certificate): the claims are the key, as COCOON reads them.
    let claims_raw = claims_raw.unwrap_or_else(|| public_key.to_vec());
    let claims = Claims::parse(&claims_raw)?;
    if claims.public_key != public_key {
        return Err(AttestError::ClaimsKeyMismatch);
    }
    let validity = cert.validity();
    Ok(ParsedCert {
        public_key,
        not_before: validity.not_before.timestamp().max(0) as u64,
        not_after: validity.not_after.timestamp().max(0) as u64,
        claims,
        claims_raw,
        quote_raw,
    })
}

fn oid_string(oid: &[u64]) -> String {
    oid.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// The report_data a quote must carry for these claims: SHA-512 of them.
pub fn report_data_for(claims_raw: &[u8]) -> [u8; 64] {
    Sha512::digest(claims_raw).into()
}
