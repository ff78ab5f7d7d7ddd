//! Who runs a local chain directory. A long-running process that keeps a chain in memory
//! (`cocoon chain serve`, `cocoon up`, a role with `chain_dir`) claims its directory: it holds
//! an exclusive lock on `DIR/owner.lock` for as long as it lives, and writes its pid and, when
//! it serves one, its toncenter API to `DIR/owner.json`. A short command that is given the
//! directory then talks to that API instead of opening a second copy of the chain, whose writes
//! the owner would overwrite (and so lose) at its next save.
//!
//! The lock is the truth: the kernel releases it when the owner exits, however it exits
//! (Ctrl-C, SIGTERM, SIGKILL, a crash), so an `owner.json` left behind without a lock holder is
//! stale and ignored, and two processes can never both hold a directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

const LOCK: &str = "owner.lock";
const FILE: &str = "owner.json";
/// How long a held lock may be a spawned child's inherited copy before `claim` believes it.
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// A running process that holds a chain directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// Its toncenter v2 API (`http://127.0.0.1:PORT/api/v2`), when it serves one.
    pub api: Option<String>,
}

/// The claim: the locked file. Dropping it (or the process ending) gives the directory back.
#[derive(Debug)]
pub struct Claim {
    _lock: File,
    path: PathBuf,
}

impl Claim {
    /// Announces the API this process now serves the chain on.
    pub fn set_api(&mut self, api: Option<String>) -> Result<()> {
        write(&self.path, api)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Ours while the lock is held (it is released right after this).
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write(path: &Path, api: Option<String>) -> Result<()> {
    let owner = Owner {
        pid: std::process::id(),
        api,
    };
    crate::files::write_json(path, &owner)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ChainError + '_ {
    move |source| ChainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The live process other than this one that holds `dir`, if any.
pub fn owner_of(dir: &Path) -> Option<Owner> {
    let lock = File::open(dir.join(LOCK)).ok()?;
    match lock.try_lock() {
        // Nobody holds it: no owner (our test lock goes with `lock`).
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(dir.join(FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<Owner>(&t).ok())
                // Locked but not yet described: the owner is starting.
                .unwrap_or(Owner { pid: 0, api: None });
            (owner.pid != std::process::id()).then_some(owner)
        }
        Err(TryLockError::Error(_)) => None,
    }
}

/// Claims `dir` for this process, announcing `api`; refused while another process holds it.
pub fn claim(dir: &Path, api: Option<String>) -> Result<Claim> {
    let lock_path = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // A process that spawns a child shares its open descriptors with the child until the
    // child's `exec` closes them, and a lock goes with the descriptor: a claim just dropped may
    // still be held for that moment. A held lock is only believed once it stays held.
    let deadline = std::time::Instant::now() + RELEASE_GRACE;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                let other = owner_of(dir).unwrap_or(Owner { pid: 0, api: None });
                return Err(ChainError::InUse(in_use(dir, &other)));
            }
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
    }
    let path = dir.join(FILE);
    write(&path, api)?;
    Ok(Claim { _lock: lock, path })
}

/// "the chain in DIR is run by process N (API …)": why a second copy may not be opened.
pub fn in_use(dir: &Path, owner: &Owner) -> String {
    let who = match owner.pid {
        0 => "another process (starting)".to_string(),
        pid => format!("process {pid}"),
    };
    format!(
        "the chain in {} is run by {who}{}",
        dir.display(),
        match &owner.api {
            Some(api) => format!(" (its API: {api})"),
            None => " (which serves no API); stop it first".to_string(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A child spawned by one test inherits every descriptor this process has open until its
    /// `exec` closes them, and a lock goes with the descriptor: the child would hold the other
    /// test's claim for that moment, and "a released claim is free" would see it held (CI saw
    /// this once). The two tests take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn a_held_claim_is_seen_and_exclusive_and_a_released_one_is_free() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(owner_of(dir.path()), None);
        let mut claim = claim(dir.path(), None).unwrap();
        // This process does not see itself as another owner.
        assert_eq!(owner_of(dir.path()), None);
        claim
            .set_api(Some("http://127.0.0.1:3/api/v2".into()))
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("127.0.0.1:3"), "{text}");
        // The lock is exclusive: a second claim (another open file, as another process has)
        // is refused while this one lives.
        let e = super::claim(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("is run by"), "{e}");
        drop(claim);
        assert!(
            !dir.path().join(FILE).exists(),
            "a dropped claim is removed"
        );

        // An owner.json left by a process that died without cleaning up (SIGKILL) names a
        // process, but nobody holds the lock: stale, ignored, and the directory is free.
        let dead = Owner {
            pid: 1,
            api: Some("http://127.0.0.1:2/api/v2".into()),
        };
        crate::files::write_json(&dir.path().join(FILE), &dead).unwrap();
        assert_eq!(owner_of(dir.path()), None);
        let _claim = super::claim(dir.path(), None).unwrap();
    }

    #[test]
    fn another_process_holding_the_lock_is_the_owner() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // A child process holds the lock (flock(2), as `cocoon up` does), then is killed.
        std::fs::write(dir.path().join(LOCK), b"").unwrap();
        let other = Owner {
            pid: 4242,
            api: Some("http://127.0.0.1:9/api/v2".into()),
        };
        crate::files::write_json(&dir.path().join(FILE), &other).unwrap();
        let lock = dir.path().join(LOCK);
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time\nf = open(sys.argv[1], 'r+')\nfcntl.flock(f, fcntl.LOCK_EX)\ntime.sleep(30)",
            ])
            .arg(&lock)
            .spawn()
            .expect("python3");
        let t = std::time::Instant::now();
        while owner_of(dir.path()).is_none() {
            assert!(t.elapsed().as_secs() < 10, "the child never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(owner_of(dir.path()), Some(other));
        let e = claim(dir.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("is run by process 4242 (its API: http://127.0.0.1:9/api/v2)"),
            "{e}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Its end releases the lock, whatever owner.json still says.
        assert_eq!(owner_of(dir.path()), None);
        let _claim = claim(dir.path(), None).unwrap();
    }
}
