//! Claims: what a party states about itself and binds into its quote
//! (report_data = SHA-512 of the serialized claims).
//!
//! COCOON's form, the only one a reference peer reads: the claims are the
//! certificate's 32-byte Ed25519 public key and nothing else (so report_data
//! is SHA-512 of the key). Claims holding only the key are written in that
//! form, and 32 bytes are read as it. Our extensible form below is written
//! only when a claim beyond the key is made, which only our own peers check.
//!
//! Format (version 1), designed so new fields never break old verifiers:
//! one version byte, then entries of `tag: u16 LE, len: u32 LE, value`,
//! tags strictly increasing. Tag 1, the Ed25519 public key of the TLS
//! certificate, must come first. Unknown tags are kept (and are covered by
//! the hash, since the hash is over the bytes as received) but otherwise
//! ignored, so a newer peer can add entries an older verifier skips.

/// The format version written here.
pub const CLAIMS_VERSION: u8 = 1;
/// The most bytes of claims accepted.
pub const MAX_CLAIMS_LEN: usize = 64 * 1024;

/// Length of COCOON's claims: the bare public key.
pub const REFERENCE_CLAIMS_LEN: usize = 32;

/// Tag of the Ed25519 TLS public key (32 bytes, mandatory, first).
pub const TAG_PUBLIC_KEY: u16 = 1;
/// Tag of an X25519 key for end-to-end encryption (32 bytes).
pub const TAG_X25519_KEY: u16 = 2;
/// Tag of the creation time (u64 LE unix seconds).
pub const TAG_CREATED_AT: u16 = 3;
/// Tag of a human-readable name (UTF-8).
pub const TAG_NAME: u16 = 4;
/// Tag of GPU attestation evidence (opaque bytes).
pub const TAG_GPU_EVIDENCE: u16 = 5;

/// Why bytes are not valid claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Empty input.
    #[error("claims are empty")]
    Empty,
    /// A version this code does not know.
    #[error("claims version {0} is not supported (this build reads version {CLAIMS_VERSION})")]
    UnsupportedVersion(u8),
    /// An entry runs past the end.
    #[error("claims entry at byte {0} is truncated")]
    Truncated(usize),
    /// Tags out of order or repeated.
    #[error("claims tag {0} is out of order or repeated")]
    TagOrder(u16),
    /// The public key entry is missing or not first.
    #[error("claims must start with the public key (tag 1)")]
    MissingPublicKey,
    /// A known entry has the wrong size or content.
    #[error("claims entry {tag} is malformed: {reason}")]
    BadEntry {
        /// The tag.
        tag: u16,
        /// Why.
        reason: &'static str,
    },
    /// Over [`MAX_CLAIMS_LEN`].
    #[error("claims are {0} bytes, over the limit of {MAX_CLAIMS_LEN}")]
    TooLong(usize),
}

/// Parsed claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    /// The Ed25519 public key of the certificate these claims belong to.
    pub public_key: [u8; 32],
    /// X25519 key for end-to-end encryption, when offered.
    pub x25519_key: Option<[u8; 32]>,
    /// When the claims were made, unix seconds.
    pub created_at: Option<u64>,
    /// A human-readable name.
    pub name: Option<String>,
    /// GPU attestation evidence.
    pub gpu_evidence: Option<Vec<u8>>,
    /// Entries with tags this build does not know, in order.
    pub unknown: Vec<(u16, Vec<u8>)>,
}

impl Claims {
    /// Claims for a public key, nothing else.
    pub fn new(public_key: [u8; 32]) -> Self {
        Self {
            public_key,
            ..Self::default()
        }
    }

    /// Whether these claims state nothing but the key (COCOON's form).
    pub fn is_key_only(&self) -> bool {
        self.x25519_key.is_none()
            && self.created_at.is_none()
            && self.name.is_none()
            && self.gpu_evidence.is_none()
            && self.unknown.is_empty()
    }

    /// The serialized form: the bare key when [`Claims::is_key_only`] (COCOON's), else ours.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.is_key_only() {
            return self.public_key.to_vec();
        }
        let mut entries: Vec<(u16, Vec<u8>)> = vec![(TAG_PUBLIC_KEY, self.public_key.to_vec())];
        if let Some(k) = self.x25519_key {
            entries.push((TAG_X25519_KEY, k.to_vec()));
        }
        if let Some(t) = self.created_at {
            entries.push((TAG_CREATED_AT, t.to_le_bytes().to_vec()));
        }
        if let Some(n) = &self.name {
            entries.push((TAG_NAME, n.as_bytes().to_vec()));
        }
        if let Some(g) = &self.gpu_evidence {
            entries.push((TAG_GPU_EVIDENCE, g.clone()));
        }
        entries.extend(self.unknown.iter().cloned());
        entries.sort_by_key(|e| e.0);
        let mut out = vec![CLAIMS_VERSION];
        for (tag, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(&value);
        }
        out
    }

    /// Parses the serialized form (see the module docs for the rules).
    pub fn parse(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_CLAIMS_LEN {
            return Err(ClaimsError::TooLong(bytes.len()));
        }
        if let Ok(key) = <[u8; REFERENCE_CLAIMS_LEN]>::try_from(bytes) {
            return Ok(Claims::new(key));
        }
        let (&version, mut rest) = bytes.split_first().ok_or(ClaimsError::Empty)?;
        if version != CLAIMS_VERSION {
            return Err(ClaimsError::UnsupportedVersion(version));
        }
        let mut claims = Claims::default();
        let mut last_tag = 0u16;
        let mut has_key = false;
        while !rest.is_empty() {
            let at = bytes.len() - rest.len();
            let Some((head, tail)) = rest.split_first_chunk::<6>() else {
                return Err(ClaimsError::Truncated(at));
            };
            let tag = u16::from_le_bytes([head[0], head[1]]);
            let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
            if tail.len() < len {
                return Err(ClaimsError::Truncated(at));
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            if tag <= last_tag {
                return Err(ClaimsError::TagOrder(tag));
            }
            if !has_key && tag != TAG_PUBLIC_KEY {
                return Err(ClaimsError::MissingPublicKey);
            }
            last_tag = tag;
            match tag {
                TAG_PUBLIC_KEY => {
                    claims.public_key = fixed(tag, value)?;
                    has_key = true;
                }
                TAG_X25519_KEY => claims.x25519_key = Some(fixed(tag, value)?),
                TAG_CREATED_AT => claims.created_at = Some(u64::from_le_bytes(fixed(tag, value)?)),
                TAG_NAME => {
                    let name = std::str::from_utf8(value).map_err(|_| ClaimsError::BadEntry {
                        tag,
                        reason: "not UTF-8",
                    })?;
                    claims.name = Some(name.to_string());
                }
                TAG_GPU_EVIDENCE => claims.gpu_evidence = Some(value.to_vec()),
                _ => claims.unknown.push((tag, value.to_vec())),
            }
        }
        if !has_key {
            return Err(ClaimsError::MissingPublicKey);
        }
        Ok(claims)
    }
}

fn fixed<const N: usize>(tag: u16, value: &[u8]) -> Result<[u8; N], ClaimsError> {
    value.try_into().map_err(|_| ClaimsError::BadEntry {
        tag,
        reason: "wrong length",
    })
}
