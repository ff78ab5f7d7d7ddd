//! The local chain on disk: one JSON snapshot (`chain.json`) holding the clock, the logical time,
//! every account as a base64 BOC and the recent transactions. Written atomically (temp file,
//! fsync, rename, fsync of the directory) so a crash leaves the old or the new state, never a mix.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use tycho_types::boc::BocRepr;
use tycho_types::models::ShardAccount;

use super::{Clock, TxRecord};
use crate::address::Address;
use crate::error::{ChainError, Result};

const FILE: &str = "chain.json";
const FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    format: u32,
    clock: Clock,
    lt: u64,
    accounts: BTreeMap<String, String>,
    history: BTreeMap<String, Vec<TxRecord>>,
}

pub(super) struct Loaded {
    pub clock: Clock,
    pub lt: u64,
    pub accounts: HashMap<Address, ShardAccount>,
    pub history: HashMap<Address, VecDeque<TxRecord>>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ChainError + '_ {
    move |source| ChainError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn load(dir: &Path) -> Result<Option<Loaded>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let snap: Snapshot = serde_json::from_str(&text)
        .map_err(|e| ChainError::Api(format!("{}: not a chain snapshot: {e}", path.display())))?;
    if snap.format != FORMAT {
        return Err(ChainError::Api(format!(
            "{}: unknown format {}",
            path.display(),
            snap.format
        )));
    }
    let mut accounts = HashMap::new();
    for (addr, boc) in snap.accounts {
        let address: Address = addr.parse()?;
        let account: ShardAccount = BocRepr::decode_base64(&boc)
            .map_err(|e| ChainError::Boc(format!("account {addr}: {e}")))?;
        accounts.insert(address, account);
    }
    let mut history = HashMap::new();
    for (addr, txs) in snap.history {
        history.insert(addr.parse()?, txs.into_iter().collect());
    }
    Ok(Some(Loaded {
        clock: snap.clock,
        lt: snap.lt,
        accounts,
        history,
    }))
}

pub(super) fn save(
    dir: &Path,
    clock: Clock,
    lt: u64,
    accounts: &HashMap<Address, ShardAccount>,
    history: &HashMap<Address, VecDeque<TxRecord>>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut snap = Snapshot {
        format: FORMAT,
        clock,
        lt,
        accounts: BTreeMap::new(),
        history: BTreeMap::new(),
    };
    for (addr, account) in accounts {
        let boc = BocRepr::encode_base64(account).map_err(|e| ChainError::Boc(e.to_string()))?;
        snap.accounts.insert(addr.to_raw(), boc);
    }
    for (addr, txs) in history {
        snap.history
            .insert(addr.to_raw(), txs.iter().cloned().collect());
    }
    let bytes = serde_json::to_vec(&snap).expect("snapshot serializes");
    crate::files::write_atomic(&dir.join(FILE), &bytes)
}
