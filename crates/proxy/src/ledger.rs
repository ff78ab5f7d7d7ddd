//! The proxy's ledger: an append-only log of signed records, fsync'd before any voucher that
//! depends on a record leaves the proxy.
//!
//! Each record is one JSON line carrying its sequence number, the hash of the previous record
//! and the proxy key's Ed25519 signature over its own hash, so a truncated, edited or reordered
//! log is detected on open. A torn last line (a crash mid-write) is dropped: its voucher never
//! left, because vouchers are sent only after the fsync. The hash of the last record is the
//! ledger's state hash, which the proxy commits on chain with `save_state`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use cocoon_chain::keys::{self, Keypair};
use cocoon_chain::Address;
use sha2::{Digest, Sha256};

/// What a ledger record says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A finished request: `tokens` adjusted tokens charged to `client`, earned by `worker`.
    Charge {
        /// Request id (hex).
        request: String,
        /// Client owner address.
        client: Address,
        /// Worker owner address.
        worker: Address,
        /// Adjusted tokens of this request.
        tokens: u64,
    },
    /// A final refund voucher was granted to `client` at `tokens`.
    Refund {
        /// Client owner address.
        client: Address,
        /// The client's total at the grant.
        tokens: u64,
    },
    /// The state hash committed on chain with this seqno.
    Saved {
        /// The on-chain seqno.
        seqno: u64,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    seq: u64,
    prev: String,
    #[serde(flatten)]
    entry: Entry,
    sig: String,
}

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading or writing the file.
    #[error("ledger {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was altered (bad signature, broken chain, bad sequence, garbage line).
    #[error("ledger {path} is corrupt at line {line}: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Totals derived from the records.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Adjusted tokens charged per client owner.
    pub clients: HashMap<Address, u64>,
    /// Adjusted tokens earned per worker owner.
    pub workers: HashMap<Address, u64>,
    /// Clients granted their final refund (no more queries).
    pub refunded: HashMap<Address, u64>,
    /// Highest seqno committed on chain.
    pub saved_seqno: u64,
}

/// The open ledger.
pub struct Ledger {
    path: PathBuf,
    file: File,
    key: Keypair,
    seq: u64,
    last_hash: [u8; 32],
    totals: Totals,
}

fn record_hash(seq: u64, prev: &str, entry: &Entry) -> [u8; 32] {
    let body = serde_json::to_vec(&(seq, prev, entry)).expect("entry serializes");
    Sha256::digest(&body).into()
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`, checking every record against `key`.
    pub fn open(path: &Path, key: Keypair) -> Result<Self, LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut totals = Totals::default();
        let mut seq = 0;
        let mut last_hash = [0u8; 32];
        let mut good_len: u64 = 0;
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            let lines: Vec<String> = reader.lines().collect::<Result<_, _>>().map_err(io)?;
            let n = lines.len();
            let raw = std::fs::read(path).map_err(io)?;
            let complete_last = raw.last() == Some(&b'\n');
            for (i, text) in lines.iter().enumerate() {
                let corrupt = |why: String| LedgerError::Corrupt {
                    path: path.display().to_string(),
                    line: i + 1,
                    why,
                };
                let line: Line = match serde_json::from_str(text) {
                    Ok(l) => l,
                    // A torn final line from a crash mid-append: drop it.
                    Err(_) if i + 1 == n && !complete_last => break,
                    Err(e) => return Err(corrupt(format!("not a record: {e}"))),
                };
                if line.seq != seq + 1 {
                    return Err(corrupt(format!("sequence {} after {seq}", line.seq)));
                }
                if line.prev != hex::encode(last_hash) {
                    return Err(corrupt("previous-hash chain broken".into()));
                }
                let hash = record_hash(line.seq, &line.prev, &line.entry);
                let sig: [u8; 64] = hex::decode(&line.sig)
                    .ok()
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| corrupt("signature is not 64 hex bytes".into()))?;
                if !keys::verify(&key.public_key(), &hash, &sig) {
                    return Err(corrupt(
                        "signature does not verify with the proxy key".into(),
                    ));
                }
                apply(&mut totals, &line.entry);
                seq = line.seq;
                last_hash = hash;
                good_len += text.len() as u64 + 1;
            }
            if good_len < raw.len() as u64 {
                tracing::warn!("ledger {}: dropping a torn last record", path.display());
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        file.set_len(good_len).map_err(io)?;
        Ok(Ledger {
            path: path.to_path_buf(),
            file,
            key,
            seq,
            last_hash,
            totals,
        })
    }

    /// Appends a record and fsyncs it. Only after this returns may a voucher reflecting it leave.
    pub fn append(&mut self, entry: Entry) -> Result<(), LedgerError> {
        let seq = self.seq + 1;
        let prev = hex::encode(self.last_hash);
        let hash = record_hash(seq, &prev, &entry);
        let line = Line {
            seq,
            prev,
            entry: entry.clone(),
            sig: hex::encode(self.key.sign(&hash)),
        };
        let mut text = serde_json::to_string(&line).expect("record serializes");
        text.push('\n');
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.seq = seq;
        self.last_hash = hash;
        apply(&mut self.totals, &entry);
        Ok(())
    }

    /// Totals so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Number of records.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The state hash (hash of the last record; zero when empty).
    pub fn state_hash(&self) -> [u8; 32] {
        self.last_hash
    }
}

fn apply(t: &mut Totals, e: &Entry) {
    match e {
        Entry::Charge {
            client,
            worker,
            tokens,
            ..
        } => {
            *t.clients.entry(*client).or_default() += tokens;
            *t.workers.entry(*worker).or_default() += tokens;
        }
        Entry::Refund { client, tokens } => {
            t.refunded.insert(*client, *tokens);
        }
        Entry::Saved { seqno } => t.saved_seqno = t.saved_seqno.max(*seqno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(n: u64) -> Entry {
        Entry::Charge {
            request: format!("{n:064x}"),
            client: Address::new([1; 32]),
            worker: Address::new([2; 32]),
            tokens: n,
        }
    }

    #[test]
    fn totals_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let key = Keypair::from_seed([3; 32]);
        {
            let mut l = Ledger::open(&path, key.clone()).unwrap();
            l.append(charge(10)).unwrap();
            l.append(charge(5)).unwrap();
        }
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"prev\":\"ab").unwrap();
        drop(f);
        let mut l = Ledger::open(&path, key.clone()).unwrap();
        assert_eq!(l.totals().clients[&Address::new([1; 32])], 15);
        assert_eq!(l.seq(), 2);
        l.append(charge(1)).unwrap();
        let l = Ledger::open(&path, key).unwrap();
        assert_eq!(l.totals().workers[&Address::new([2; 32])], 16);
        assert_eq!(l.seq(), 3);
    }

    #[test]
    fn an_edited_or_foreign_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let key = Keypair::from_seed([3; 32]);
        {
            let mut l = Ledger::open(&path, key.clone()).unwrap();
            l.append(charge(10)).unwrap();
            l.append(charge(5)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"tokens\":10", "\"tokens\":1", 1)).unwrap();
        let err = Ledger::open(&path, key.clone()).err().unwrap().to_string();
        assert!(err.contains("signature does not verify"), "{err}");
        std::fs::write(&path, &text).unwrap();
        let err = Ledger::open(&path, Keypair::from_seed([4; 32]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("signature"), "{err}");
        // Dropping a record in the middle breaks the chain.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[1])).unwrap();
        let err = Ledger::open(&path, key).err().unwrap().to_string();
        assert!(err.contains("sequence"), "{err}");
    }
}
