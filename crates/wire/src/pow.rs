//! Proof of work before TLS: a cheap DoS guard. The server sends a challenge
//! (`cocoon.powSimple#418e1291 difficulty_bits:int salt:int128`); the client
//! finds a nonce such that SHA-256(salt ‖ nonce as 8 little-endian bytes)
//! has at least `difficulty_bits` leading zero bits, and answers
//! `cocoon.powSimpleResponse#01827319 nonce:long`. Only then does the TLS
//! handshake (and its costly quote verification) start.
//!
//! "Leading zero bits" is counted exactly as the reference network does: the
//! first 8 bytes of the hash read as a little-endian u64, then its leading
//! zeros from the most significant bit. The client refuses challenges above
//! its own limit so a hostile server cannot make it burn CPU.

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// TL id of the challenge.
pub const CHALLENGE_ID: u32 = 0x418e_1291;
/// TL id of the response.
pub const RESPONSE_ID: u32 = 0x0182_7319;
/// Challenge size on the wire: id, difficulty, 16-byte salt.
pub const CHALLENGE_LEN: usize = 24;
/// Response size on the wire: id, nonce.
pub const RESPONSE_LEN: usize = 12;
/// The difficulty a server asks for unless configured otherwise.
pub const DEFAULT_SERVER_DIFFICULTY: u32 = 20;
/// The highest difficulty a client accepts unless configured otherwise.
pub const DEFAULT_CLIENT_MAX_DIFFICULTY: u32 = 28;
/// No difficulty above this can be expressed (64 bits are examined).
pub const MAX_DIFFICULTY: u32 = 64;

/// What went wrong in the proof-of-work exchange.
#[derive(Debug, thiserror::Error)]
pub enum PowError {
    /// The server asked for more work than this client accepts.
    #[error(
        "server asked for proof-of-work difficulty {asked}, above this side's limit of {limit}"
    )]
    TooDifficult {
        /// The difficulty in the challenge.
        asked: u32,
        /// The client's limit.
        limit: u32,
    },
    /// The difficulty is negative or above [`MAX_DIFFICULTY`].
    #[error("proof-of-work difficulty {0} is out of range 0..=64")]
    InvalidDifficulty(i32),
    /// The peer sent something other than the expected PoW message.
    #[error("expected proof-of-work message 0x{expected:08x}, got 0x{got:08x}")]
    UnexpectedMessage {
        /// The id that should have arrived.
        expected: u32,
        /// The id that arrived.
        got: u32,
    },
    /// The client's nonce does not meet the difficulty.
    #[error("proof-of-work nonce does not meet difficulty {0}")]
    WrongNonce(u32),
    /// No nonce exists (all 2^64 tried) — only for absurd difficulties.
    #[error("no proof-of-work nonce found")]
    Unsolvable,
    /// The stream failed or closed early.
    #[error("i/o error during proof of work: {0}")]
    Io(#[from] std::io::Error),
}

/// A server's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Required leading zero bits.
    pub difficulty_bits: u32,
    /// Fresh random salt.
    pub salt: [u8; 16],
}

impl Challenge {
    /// A new challenge with a random salt.
    pub fn new(difficulty_bits: u32) -> Result<Self, PowError> {
        if difficulty_bits > MAX_DIFFICULTY {
            return Err(PowError::InvalidDifficulty(difficulty_bits as i32));
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| PowError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Self {
            difficulty_bits,
            salt,
        })
    }

    /// The challenge's wire form.
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0u8; CHALLENGE_LEN];
        out[..4].copy_from_slice(&CHALLENGE_ID.to_le_bytes());
        out[4..8].copy_from_slice(&(self.difficulty_bits as i32).to_le_bytes());
        out[8..].copy_from_slice(&self.salt);
        out
    }

    /// Parses a challenge's wire form.
    pub fn decode(bytes: &[u8; CHALLENGE_LEN]) -> Result<Self, PowError> {
        let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if id != CHALLENGE_ID {
            return Err(PowError::UnexpectedMessage {
                expected: CHALLENGE_ID,
                got: id,
            });
        }
        let difficulty = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if !(0..=MAX_DIFFICULTY as i32).contains(&difficulty) {
            return Err(PowError::InvalidDifficulty(difficulty));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&bytes[8..]);
        Ok(Self {
            difficulty_bits: difficulty as u32,
            salt,
        })
    }

    /// Whether `nonce` solves this challenge.
    pub fn verify(&self, nonce: u64) -> bool {
        leading_zero_bits(&self.hash(nonce)) >= self.difficulty_bits
    }

    /// Finds the smallest nonce that solves the challenge (expected
    /// 2^difficulty hashes).
    pub fn solve(&self) -> Result<u64, PowError> {
        (0..=u64::MAX)
            .find(|&n| self.verify(n))
            .ok_or(PowError::Unsolvable)
    }

    fn hash(&self, nonce: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(nonce.to_le_bytes());
        h.finalize().into()
    }
}

/// Leading zero bits of a hash, counted as the reference network counts
/// them (see the module docs).
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(head).leading_zeros()
}

/// The response's wire form.
pub fn encode_response(nonce: u64) -> [u8; RESPONSE_LEN] {
    let mut out = [0u8; RESPONSE_LEN];
    out[..4].copy_from_slice(&RESPONSE_ID.to_le_bytes());
    out[4..].copy_from_slice(&nonce.to_le_bytes());
    out
}

/// Parses a response's wire form into its nonce.
pub fn decode_response(bytes: &[u8; RESPONSE_LEN]) -> Result<u64, PowError> {
    let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if id != RESPONSE_ID {
        return Err(PowError::UnexpectedMessage {
            expected: RESPONSE_ID,
            got: id,
        });
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&bytes[4..]);
    Ok(u64::from_le_bytes(nonce))
}

/// Server side: sends a challenge of `difficulty_bits` and checks the answer.
/// Callers should bound this with a timeout.
pub async fn server_handshake<S>(stream: &mut S, difficulty_bits: u32) -> Result<(), PowError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let challenge = Challenge::new(difficulty_bits)?;
    stream.write_all(&challenge.encode()).await?;
    stream.flush().await?;
    let mut response = [0u8; RESPONSE_LEN];
    stream.read_exact(&mut response).await?;
    let nonce = decode_response(&response)?;
    if challenge.verify(nonce) {
        Ok(())
    } else {
        Err(PowError::WrongNonce(difficulty_bits))
    }
}

/// Client side: reads the challenge, refuses it above `max_difficulty`,
/// solves it off the async runtime and answers. Returns the difficulty solved.
pub async fn client_handshake<S>(stream: &mut S, max_difficulty: u32) -> Result<u32, PowError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut raw = [0u8; CHALLENGE_LEN];
    stream.read_exact(&mut raw).await?;
    let challenge = Challenge::decode(&raw)?;
    if challenge.difficulty_bits > max_difficulty {
        return Err(PowError::TooDifficult {
            asked: challenge.difficulty_bits,
            limit: max_difficulty,
        });
    }
    let nonce = tokio::task::spawn_blocking(move || challenge.solve())
        .await
        .map_err(|e| PowError::Io(std::io::Error::other(e)))??;
    stream.write_all(&encode_response(nonce)).await?;
    stream.flush().await?;
    Ok(challenge.difficulty_bits)
}
