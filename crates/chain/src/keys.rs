//! Ed25519 keys as TON uses them: a 32-byte seed, a 32-byte public key, signatures over cell hashes.

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use crate::error::ChainError;

/// An Ed25519 key pair that remembers its seed (so it can be saved and reloaded).
pub struct Keypair {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl Keypair {
    /// From a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
        Keypair { seed, pair }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("OS random number generator");
        Self::from_seed(seed)
    }

    /// From 64 hex digits of seed.
    pub fn from_hex(text: &str) -> Result<Self, ChainError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| ChainError::InvalidKey("seed is not hex".into()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ChainError::InvalidKey("seed is not 32 bytes".into()))?;
        Ok(Self::from_seed(seed))
    }

    /// The seed (the secret).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("ed25519 public keys are 32 bytes")
    }

    /// Signs a message (for TON: a 32-byte cell hash).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair
            .sign(message)
            .as_ref()
            .try_into()
            .expect("ed25519 signatures are 64 bytes")
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self::from_seed(self.seed)
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair(public {})", hex::encode(self.public_key()))
    }
}

/// A 32-byte secret kept in `path` as hex: read if the file exists, else drawn at random and
/// written with [`crate::files::write_secret`].
pub fn load_or_create_seed(path: &std::path::Path) -> Result<[u8; 32], ChainError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(*Keypair::from_hex(&text)
            .map_err(|e| ChainError::InvalidKey(format!("{}: {e}", path.display())))?
            .seed()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate();
            crate::files::write_secret(path, hex::encode(key.seed()).as_bytes())?;
            Ok(*key.seed())
        }
        Err(source) => Err(ChainError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Checks an Ed25519 signature.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}
