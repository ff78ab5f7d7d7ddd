//! A cache of accepted certificates, so a reconnecting peer with an
//! unchanged certificate is not re-verified (quote verification costs
//! milliseconds; a cache hit costs a hash).
//!
//! Keyed by SHA-256 of the certificate's DER; an entry is used only while
//! the certificate is within its validity (at most a day), and only
//! acceptances are cached, so a refused certificate is always re-examined.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::policy::PeerIdentity;

/// Entries kept before expired ones are purged (and, if still full, all).
pub const DEFAULT_CAPACITY: usize = 4096;

/// Accepted certificates by hash.
#[derive(Debug)]
pub struct AttestationCache {
    entries: Mutex<HashMap<[u8; 32], PeerIdentity>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for AttestationCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl AttestationCache {
    /// A cache holding at most `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache key of a certificate.
    pub fn key(cert_der: &[u8]) -> [u8; 32] {
        Sha256::digest(cert_der).into()
    }

    /// The identity verified earlier for this certificate, if still valid.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<PeerIdentity> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some(id) if id.not_before <= now && now <= id.not_after => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(id.clone())
            }
            Some(_) => {
                entries.remove(key);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Remembers an accepted certificate (`now` is the verifier's clock,
    /// used to purge expired entries when full).
    pub fn insert(&self, key: [u8; 32], identity: PeerIdentity, now: u64) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, id| id.not_after >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, identity);
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
