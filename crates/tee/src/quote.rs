//! TDX v4 quotes: layout, parsing, the image hash, and fake quotes.
//!
//! A quote is a 48-byte header, a 584-byte TD report body, then a 4-byte
//! length and the signature data (Intel's ECDSA chain for real quotes).
//! The *image hash* identifies the software in the TD. It is SHA-256 of
//! MRTD ‖ MRCONFIGID ‖ MROWNER ‖ MROWNERCONFIG ‖ RTMR0..3 ‖ 64 zero bytes
//! (report_data zeroed) — the same bytes the reference network hashes, so
//! the hashes listed in the root contract mean the same thing in both.

use sha2::{Digest, Sha256};

/// Size of the quote header.
pub const HEADER_LEN: usize = 48;
/// Size of the TDX 1.0 TD report body.
pub const TD_REPORT_LEN: usize = 584;
/// Offset of the signature-data length field.
pub const SIG_LEN_OFFSET: usize = HEADER_LEN + TD_REPORT_LEN;
/// The header's `tee_type` for TDX.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// The only quote version parsed here.
pub const QUOTE_VERSION_4: u16 = 4;
/// Attestation key type of real quotes (ECDSA-256 with P-256).
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// The QE vendor id that marks a fake quote. Intel's is
/// 939a7233f79c4ca9940a0db3957f0607; nothing real carries this one.
pub const FAKE_QE_VENDOR_ID: [u8; 16] = *b"COCOON-FAKE-TDX!";
/// The whole signature data of a fake quote.
pub const FAKE_SIGNATURE_DATA: &[u8] =
    b"cocoon fake_tdx quote: NOT signed by Intel; accepted only by the fake_tdx policy";
/// Length of COCOON's own fake quote: just the 64 bytes of report data
/// (its `fake_tdx` interface makes and accepts exactly that; every
/// measurement of such a quote is zero).
pub const REFERENCE_FAKE_QUOTE_LEN: usize = 64;
/// Largest signature data accepted (real ones are ~4-5 KiB).
pub const MAX_SIGNATURE_DATA: usize = 64 * 1024;

/// Why bytes are not a TDX v4 quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// Too short for the header, body and length field.
    #[error("quote is {0} bytes, shorter than the {min} bytes of header and TD report", min = SIG_LEN_OFFSET + 4)]
    TooShort(usize),
    /// A version other than 4.
    #[error("quote version {0} is not supported (only 4)")]
    UnsupportedVersion(u16),
    /// Not a TDX quote (an SGX one, say).
    #[error("quote tee_type 0x{0:x} is not TDX (0x81)")]
    NotTdx(u32),
    /// The signature-data length exceeds the bytes present (or the limit).
    #[error("quote signature data length {declared} exceeds the {actual} bytes present or the 64 KiB limit")]
    BadSignatureLength {
        /// The length field.
        declared: usize,
        /// Bytes actually after the field.
        actual: usize,
    },
}

/// The measurement registers that identify a TD's software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurements {
    /// Measurement of the initial TD contents (firmware).
    pub mr_td: [u8; 48],
    /// Software-defined configuration id.
    pub mr_config_id: [u8; 48],
    /// TD owner.
    pub mr_owner: [u8; 48],
    /// Owner-defined configuration.
    pub mr_owner_config: [u8; 48],
    /// Runtime measurement registers 0..3 (kernel, command line, image, app).
    pub rtmr: [[u8; 48]; 4],
}

impl Default for Measurements {
    fn default() -> Self {
        Self {
            mr_td: [0; 48],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
        }
    }
}

impl Measurements {
    /// The image hash (see the module docs).
    pub fn image_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.mr_td);
        h.update(self.mr_config_id);
        h.update(self.mr_owner);
        h.update(self.mr_owner_config);
        for r in &self.rtmr {
            h.update(r);
        }
        h.update([0u8; 64]);
        h.finalize().into()
    }
}

/// A parsed TDX v4 quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote {
    /// Attestation key type (2 for real quotes).
    pub att_key_type: u16,
    /// QE vendor id; [`FAKE_QE_VENDOR_ID`] for fake quotes.
    pub qe_vendor_id: [u8; 16],
    /// TEE TCB security version numbers.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// TD attributes (bit 0: debug).
    pub td_attributes: [u8; 8],
    /// Extended features available.
    pub xfam: [u8; 8],
    /// The software measurements.
    pub measurements: Measurements,
    /// The 64 bytes the TD bound into the quote.
    pub report_data: [u8; 64],
    /// The signature data (Intel's chain, or the fake marker).
    pub signature_data: Vec<u8>,
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

impl TdxQuote {
    /// Parses a TDX v4 quote, or COCOON's 64-byte fake quote (see
    /// [`REFERENCE_FAKE_QUOTE_LEN`]); every size is checked before it is used.
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        if let Ok(report_data) = <[u8; REFERENCE_FAKE_QUOTE_LEN]>::try_from(bytes) {
            return Ok(Self::reference_fake(report_data));
        }
        if bytes.len() < SIG_LEN_OFFSET + 4 {
            return Err(QuoteError::TooShort(bytes.len()));
        }
        let version = u16::from_le_bytes(array(bytes, 0));
        if version != QUOTE_VERSION_4 {
            return Err(QuoteError::UnsupportedVersion(version));
        }
        let tee_type = u32::from_le_bytes(array(bytes, 4));
        if tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::NotTdx(tee_type));
        }
        let declared = u32::from_le_bytes(array(bytes, SIG_LEN_OFFSET)) as usize;
        let actual = bytes.len() - SIG_LEN_OFFSET - 4;
        // Real quotes may carry padding after the signature data.
        if declared > actual || declared > MAX_SIGNATURE_DATA {
            return Err(QuoteError::BadSignatureLength { declared, actual });
        }
        let b = HEADER_LEN;
        Ok(Self {
            att_key_type: u16::from_le_bytes(array(bytes, 2)),
            qe_vendor_id: array(bytes, 12),
            tee_tcb_svn: array(bytes, b),
            mr_seam: array(bytes, b + 16),
            td_attributes: array(bytes, b + 120),
            xfam: array(bytes, b + 128),
            measurements: Measurements {
                mr_td: array(bytes, b + 136),
                mr_config_id: array(bytes, b + 184),
                mr_owner: array(bytes, b + 232),
                mr_owner_config: array(bytes, b + 280),
                rtmr: [
                    array(bytes, b + 328),
                    array(bytes, b + 376),
                    array(bytes, b + 424),
                    array(bytes, b + 472),
                ],
            },
            report_data: array(bytes, b + 520),
            signature_data: bytes[SIG_LEN_OFFSET + 4..SIG_LEN_OFFSET + 4 + declared].to_vec(),
        })
    }

    /// COCOON's fake quote for `report_data`: zero measurements, marked fake.
    fn reference_fake(report_data: [u8; 64]) -> Self {
        Self {
            att_key_type: 0,
            qe_vendor_id: FAKE_QE_VENDOR_ID,
            tee_tcb_svn: [0; 16],
            mr_seam: [0; 48],
            td_attributes: [0; 8],
            xfam: [0; 8],
            measurements: Measurements::default(),
            report_data,
            signature_data: Vec::new(),
        }
    }

    /// Whether this is a fake quote (COCOON's 64-byte form or [`build_fake_quote`]'s).
    pub fn is_fake(&self) -> bool {
        self.qe_vendor_id == FAKE_QE_VENDOR_ID
    }

    /// Whether the TD runs in debug mode (its memory is readable by the host).
    pub fn is_debug(&self) -> bool {
        self.td_attributes[0] & 1 == 1
    }

    /// The image hash of the measured software.
    pub fn image_hash(&self) -> [u8; 32] {
        self.measurements.image_hash()
    }
}

/// Builds a fake TDX v4 quote: the real layout with the measurements and
/// report data given, [`FAKE_QE_VENDOR_ID`] in the header and
/// [`FAKE_SIGNATURE_DATA`] instead of Intel's signature chain.
pub fn build_fake_quote(m: &Measurements, report_data: &[u8; 64]) -> Vec<u8> {
    let mut q = vec![0u8; SIG_LEN_OFFSET];
    q[0..2].copy_from_slice(&QUOTE_VERSION_4.to_le_bytes());
    q[2..4].copy_from_slice(&ATT_KEY_TYPE_ECDSA_P256.to_le_bytes());
    q[4..8].copy_from_slice(&TEE_TYPE_TDX.to_le_bytes());
    q[12..28].copy_from_slice(&FAKE_QE_VENDOR_ID);
    let b = HEADER_LEN;
    q[b + 136..b + 184].copy_from_slice(&m.mr_td);
    q[b + 184..b + 232].copy_from_slice(&m.mr_config_id);
    q[b + 232..b + 280].copy_from_slice(&m.mr_owner);
    q[b + 280..b + 328].copy_from_slice(&m.mr_owner_config);
    for (i, r) in m.rtmr.iter().enumerate() {
        q[b + 328 + 48 * i..b + 376 + 48 * i].copy_from_slice(r);
    }
    q[b + 520..b + 584].copy_from_slice(report_data);
    q.extend_from_slice(&(FAKE_SIGNATURE_DATA.len() as u32).to_le_bytes());
    q.extend_from_slice(FAKE_SIGNATURE_DATA);
    q
}
