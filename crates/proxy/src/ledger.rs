//! The proxy's ledger: an append-only log of signed records, fsync'd before any voucher that
//! depends on a record leaves the proxy.
//!
//! Each record is one JSON line carrying its sequence number and the hash of the previous
//! record, so the records form a hash chain. Every group commit first writes a *seal* line: the
//! proxy key's Ed25519 signature over the chain head, then fsyncs. So every record is covered by
//! a signature (through the chain), and an edited, reordered, truncated-in-the-middle or foreign
//! log is refused on open. Records after the last seal (a crash before their fsync) are dropped:
//! no voucher promising them ever left, because vouchers are sent only after the fsync. The
//! hash of the last record is the ledger's state hash, which the proxy commits on chain with
//! `save_state`. (One signature per group commit instead of per record: measured, signing every
//! record cost ~10 % of the network benchmark's CPU.)

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
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
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Seal {
    seal: u64,
    hash: String,
    sig: String,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum AnyLine {
    Seal(Seal),
    Record(Line),
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
    /// A write, a seal or an fsync failed earlier (disk full, out of file descriptors, an I/O
    /// error). Linux may drop the pages it could not write and report success on the next
    /// fsync, and a half-written line must never be sealed, so nothing written since the last
    /// good commit is trusted: no more records are made durable until the proxy restarts and
    /// replays the file, which drops the unsealed tail (those answers' ends never left).
    #[error(
        "ledger {path}: an earlier write failed ({why}); restart the proxy to replay the file"
    )]
    Poisoned {
        /// The file.
        path: String,
        /// The failure.
        why: String,
    },
}

/// Totals derived from the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Adjusted tokens charged per client owner.
    pub clients: HashMap<Address, u64>,
    /// Adjusted tokens earned per worker owner.
    pub workers: HashMap<Address, u64>,
    /// Clients granted their final refund (no more queries).
    pub refunded: HashMap<Address, u64>,
    /// Highest seqno committed on chain.
    pub saved_seqno: u64,
    /// Adjusted tokens charged in all (the sum over clients, and over workers).
    pub charged: u64,
}

/// The open ledger.
pub struct Ledger {
    path: PathBuf,
    file: File,
    key: Keypair,
    seq: u64,
    last_hash: [u8; 32],
    totals: Totals,
    durable_seq: u64,
    durable: Totals,
    /// Records written but not yet covered by a finished fsync, oldest first: a group commit
    /// moves them into `durable` (work in the records committed, not in the parties known).
    pending: std::collections::VecDeque<(u64, Entry)>,
    sealed_seq: u64,
    /// Why an fsync failed, once one did (see [`LedgerError::Poisoned`]).
    poisoned: Option<String>,
}

/// What a group commit needs: a handle on the file and the state it will make durable.
pub struct SyncPoint {
    file: File,
    seq: u64,
    path: PathBuf,
}

impl SyncPoint {
    /// fsyncs the file (outside any lock); returns the sequence number now on disk, for
    /// [`Ledger::mark_durable`].
    pub fn sync(self) -> Result<u64, LedgerError> {
        self.file.sync_data().map_err(|source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok(self.seq)
    }
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
        // A file without any seal yet is started afresh (its lines were never vouched for).
        'replay: {
            if !path.exists() {
                break 'replay;
            }
            let raw = std::fs::read(path).map_err(io)?;
            let text = String::from_utf8_lossy(&raw);
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            // Lines after the last well-formed seal are the unsealed tail a crash may leave.
            let last_seal = lines.iter().rposition(|l| {
                l.ends_with('\n')
                    && matches!(serde_json::from_str::<AnyLine>(l), Ok(AnyLine::Seal(_)))
            });
            let Some(last_seal) = last_seal else {
                if !lines.is_empty() {
                    tracing::warn!(
                        "ledger {}: no seal yet, dropping {} unsealed lines",
                        path.display(),
                        lines.len()
                    );
                }
                break 'replay;
            };
            let mut pending: Vec<Entry> = Vec::new();
            let mut tentative_hash = last_hash;
            let mut tentative_seq = seq;
            let mut offset: u64 = 0;
            for (i, text) in lines.iter().enumerate().take(last_seal + 1) {
                let corrupt = |why: String| LedgerError::Corrupt {
                    path: path.display().to_string(),
                    line: i + 1,
                    why,
                };
                offset += text.len() as u64;
                match serde_json::from_str::<AnyLine>(text) {
                    Ok(AnyLine::Record(line)) => {
                        if line.seq != tentative_seq + 1 {
                            return Err(corrupt(format!(
                                "sequence {} after {tentative_seq}",
                                line.seq
                            )));
                        }
                        if line.prev != hex::encode(tentative_hash) {
                            return Err(corrupt("previous-hash chain broken".into()));
                        }
                        tentative_hash = record_hash(line.seq, &line.prev, &line.entry);
                        tentative_seq = line.seq;
                        pending.push(line.entry);
                    }
                    Ok(AnyLine::Seal(seal)) => {
                        if seal.seal != tentative_seq || seal.hash != hex::encode(tentative_hash) {
                            return Err(corrupt(
                                "the seal does not match the records before it".into(),
                            ));
                        }
                        let sig: [u8; 64] = hex::decode(&seal.sig)
                            .ok()
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| corrupt("signature is not 64 hex bytes".into()))?;
                        if !keys::verify(&key.public_key(), &tentative_hash, &sig) {
                            return Err(corrupt(
                                "signature does not verify with the proxy key".into(),
                            ));
                        }
                        for e in pending.drain(..) {
                            apply(&mut totals, &e);
                        }
                        seq = tentative_seq;
                        last_hash = tentative_hash;
                        good_len = offset;
                    }
                    Err(e) => return Err(corrupt(format!("not a record: {e}"))),
                }
            }
            if good_len < raw.len() as u64 {
                tracing::warn!(
                    "ledger {}: dropping {} unsealed bytes at the end",
                    path.display(),
                    raw.len() as u64 - good_len
                );
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
            durable: totals.clone(),
            durable_seq: seq,
            pending: Default::default(),
            sealed_seq: seq,
            poisoned: None,
            totals,
        })
    }

    /// Appends a record and fsyncs it. Only after this returns may a voucher reflecting it leave.
    pub fn append(&mut self, entry: Entry) -> Result<(), LedgerError> {
        self.append_unsynced(entry)?;
        let seq = self.sync_point()?.sync()?;
        self.mark_durable(seq);
        debug_assert!(self.durable_seq >= seq);
        Ok(())
    }

    /// Writes a record without waiting for the disk; returns its sequence number. It counts
    /// in [`Ledger::totals`] at once but in [`Ledger::durable`] only after a group commit
    /// ([`Ledger::sync_point`], [`SyncPoint::sync`], [`Ledger::mark_durable`]) covers it.
    pub fn append_unsynced(&mut self, entry: Entry) -> Result<u64, LedgerError> {
        self.check_poisoned()?;
        let seq = self.seq + 1;
        let prev = hex::encode(self.last_hash);
        let hash = record_hash(seq, &prev, &entry);
        let line = Line {
            seq,
            prev,
            entry: entry.clone(),
        };
        let mut text = serde_json::to_string(&line).expect("record serializes");
        text.push('\n');
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            // Part of the line may be in the file: it must never be sealed.
            let e = io(e);
            self.poison(&e);
            return Err(e);
        }
        self.seq = seq;
        self.last_hash = hash;
        apply(&mut self.totals, &entry);
        self.pending.push_back((seq, entry));
        Ok(seq)
    }

    /// Seals everything written so far (one signature over the chain head) and returns what one
    /// fsync will make durable (group commit).
    /// Any failure poisons the ledger (see [`LedgerError::Poisoned`]).
    pub fn sync_point(&mut self) -> Result<SyncPoint, LedgerError> {
        self.check_poisoned()?;
        self.seal_and_point().inspect_err(|e| self.poison(e))
    }

    fn seal_and_point(&mut self) -> Result<SyncPoint, LedgerError> {
        // The second handle first: out of file descriptors, nothing is sealed.
        let file = self.file.try_clone().map_err(|source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        if self.seq > self.sealed_seq {
            let seal = Seal {
                seal: self.seq,
                hash: hex::encode(self.last_hash),
                sig: hex::encode(self.key.sign(&self.last_hash)),
            };
            let mut text = serde_json::to_string(&seal).expect("seal serializes");
            text.push('\n');
            self.file
                .write_all(text.as_bytes())
                .map_err(|source| LedgerError::Io {
                    path: self.path.display().to_string(),
                    source,
                })?;
            self.sealed_seq = self.seq;
        }
        Ok(SyncPoint {
            file,
            seq: self.seq,
            path: self.path.clone(),
        })
    }

    /// Records that a write or an fsync failed: from now on nothing more becomes durable (see
    /// [`LedgerError::Poisoned`]).
    pub fn poison(&mut self, why: &LedgerError) {
        self.poisoned.get_or_insert_with(|| why.to_string());
    }

    /// The refusal every write gets once the ledger is poisoned.
    pub fn check_poisoned(&self) -> Result<(), LedgerError> {
        match &self.poisoned {
            Some(why) => Err(LedgerError::Poisoned {
                path: self.path.display().to_string(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Publishes what a finished [`SyncPoint::sync`] made durable: the records up to `seq`.
    pub fn mark_durable(&mut self, seq: u64) {
        if self.poisoned.is_some() {
            return;
        }
        let covered = self.pending.partition_point(|(s, _)| *s <= seq);
        for (_, entry) in self.pending.drain(..covered) {
            apply(&mut self.durable, &entry);
        }
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// The highest sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Totals of the records known to be on disk: what vouchers may promise.
    pub fn durable(&self) -> &Totals {
        &self.durable
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
            // Saturating: a total at u64::MAX is already more than any contract can hold.
            let c = t.clients.entry(*client).or_default();
            *c = c.saturating_add(*tokens);
            let w = t.workers.entry(*worker).or_default();
            *w = w.saturating_add(*tokens);
            t.charged = t.charged.saturating_add(*tokens);
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

    /// A ledger at `path` holding one charge of each of `tokens`, closed again.
    fn written(path: &Path, key: &Keypair, tokens: &[u64]) {
        let mut l = Ledger::open(path, key.clone()).unwrap();
        for t in tokens {
            l.append(charge(*t)).unwrap();
        }
    }

    #[test]
    fn durable_totals_move_only_as_far_as_a_finished_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(
            &dir.path().join("ledger.jsonl"),
            Keypair::from_seed([3; 32]),
        )
        .unwrap();
        let client = Address::new([1; 32]);
        let durable = |l: &Ledger| l.durable().clients.get(&client).copied().unwrap_or(0);
        l.append_unsynced(charge(10)).unwrap();
        l.append_unsynced(charge(5)).unwrap();
        let point = l.sync_point().unwrap();
        // Written after the point: not covered by its fsync.
        l.append_unsynced(charge(1)).unwrap();
        assert_eq!((durable(&l), l.totals().clients[&client]), (0, 16));
        let synced = point.sync().unwrap();
        assert_eq!(synced, 2);
        l.mark_durable(synced);
        assert_eq!((durable(&l), l.durable_seq()), (15, 2));
        let point = l.sync_point().unwrap();
        l.mark_durable(point.sync().unwrap());
        assert_eq!((durable(&l), l.durable_seq()), (16, 3));
        // An older point finishing late changes nothing.
        l.mark_durable(2);
        assert_eq!((durable(&l), l.durable_seq()), (16, 3));
        assert_eq!(l.durable(), l.totals());

        // After a failed fsync nothing more becomes durable: the kernel may have dropped the
        // pages, and a later fsync's success would not prove them written.
        l.append_unsynced(charge(4)).unwrap();
        let point = l.sync_point().unwrap();
        l.poison(&LedgerError::Io {
            path: "ledger".into(),
            source: std::io::Error::other("EIO"),
        });
        l.mark_durable(point.sync().unwrap());
        assert_eq!((durable(&l), l.durable_seq()), (16, 3));
        let e = l
            .sync_point()
            .err()
            .expect("a poisoned ledger refuses")
            .to_string();
        assert!(
            e.contains("an earlier write failed (ledger ledger: EIO)"),
            "{e}"
        );
    }

    #[test]
    fn totals_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let key = Keypair::from_seed([3; 32]);
        written(&path, &key, &[10, 5]);
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
        written(&path, &key, &[10, 5]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"tokens\":10", "\"tokens\":1", 1)).unwrap();
        let err = Ledger::open(&path, key.clone()).err().unwrap().to_string();
        assert!(err.contains("the seal does not match"), "{err}");
        std::fs::write(&path, &text).unwrap();
        let err = Ledger::open(&path, Keypair::from_seed([4; 32]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("signature"), "{err}");
        // Dropping the first record (and its seal) breaks the chain.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "record, seal, record, seal");
        std::fs::write(&path, format!("{}\n{}\n", lines[2], lines[3])).unwrap();
        let err = Ledger::open(&path, key).err().unwrap().to_string();
        assert!(err.contains("sequence"), "{err}");
    }

    #[test]
    fn a_poisoned_ledger_refuses_new_records_and_reopening_drops_the_unsealed_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let key = Keypair::from_seed([3; 32]);
        let mut l = Ledger::open(&path, key.clone()).unwrap();
        l.append(charge(10)).unwrap();
        l.append_unsynced(charge(5)).unwrap();
        l.poison(&LedgerError::Io {
            path: "ledger".into(),
            source: std::io::Error::other("ENOSPC"),
        });
        assert!(matches!(
            l.append_unsynced(charge(1)),
            Err(LedgerError::Poisoned { .. })
        ));
        assert!(matches!(l.sync_point(), Err(LedgerError::Poisoned { .. })));
        assert!(l.check_poisoned().is_err());
        drop(l);
        // The record written before the failure was never sealed: gone on reopening.
        let l = Ledger::open(&path, key).unwrap();
        assert_eq!(l.totals().charged, 10);
        assert!(l.check_poisoned().is_ok());
    }
}
