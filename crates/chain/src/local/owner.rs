//! Who runs a local chain directory. A long-running process that keeps a chain in memory
//! (`cocoon chain serve`, `cocoon up`) claims its directory in `DIR/owner.json` with its pid
//! and, when it serves one, its toncenter API. A short command that is given the directory
//! then talks to that API instead of opening a second copy of the chain, whose writes the
//! owner would overwrite (and so lose) at its next save.
//!
//! Liveness is the owner's pid in `/proc`; a claim left by a dead process is taken over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

const FILE: &str = "owner.json";

/// A running process that holds a chain directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// Its toncenter v2 API (`http://127.0.0.1:PORT/api/v2`), when it serves one.
    pub api: Option<String>,
}

/// The claim; dropping it gives the directory back.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Claim {
    /// Announces the API this process now serves the chain on.
    pub fn set_api(&mut self, api: Option<String>) -> Result<()> {
        let owner = Owner {
            pid: std::process::id(),
            api,
        };
        crate::files::write_json(&self.path, &owner)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Only our own claim is removed (a successor may have taken over a stale one).
        if read(&self.path).is_some_and(|o| o.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read(path: &Path) -> Option<Owner> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The live process other than this one that holds `dir`, if any.
pub fn owner_of(dir: &Path) -> Option<Owner> {
    read(&dir.join(FILE)).filter(|o| o.pid != std::process::id() && alive(o.pid))
}

/// Claims `dir` for this process, announcing `api`; refused while another live process
/// holds it.
pub fn claim(dir: &Path, api: Option<String>) -> Result<Claim> {
    if let Some(other) = owner_of(dir) {
        return Err(ChainError::Refused(in_use(dir, &other)));
    }
    let path = dir.join(FILE);
    let owner = Owner {
        pid: std::process::id(),
        api,
    };
    crate::files::write_json(&path, &owner)?;
    Ok(Claim { path })
}

/// "the chain in DIR is run by process N (API …)": why a second copy may not be opened.
pub fn in_use(dir: &Path, owner: &Owner) -> String {
    format!(
        "the chain in {} is run by process {}{}",
        dir.display(),
        owner.pid,
        match &owner.api {
            Some(api) => format!(" (its API: {api})"),
            None => " (which serves no API); stop it first".to_string(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_claim_is_seen_by_others_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(owner_of(dir.path()), None);
        {
            let _claim = claim(dir.path(), Some("http://127.0.0.1:1/api/v2".into())).unwrap();
            // This process does not see itself as another owner, and may claim again.
            assert_eq!(owner_of(dir.path()), None);
            assert!(dir.path().join(FILE).exists());
            let mut claim = _claim;
            claim
                .set_api(Some("http://127.0.0.1:3/api/v2".into()))
                .unwrap();
            let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
            assert!(text.contains("127.0.0.1:3"), "{text}");
        }
        assert!(
            !dir.path().join(FILE).exists(),
            "a dropped claim is removed"
        );

        // Another live process (pid 1 always is) holds it: seen, and a claim is refused.
        let other = Owner {
            pid: 1,
            api: Some("http://127.0.0.1:2/api/v2".into()),
        };
        crate::files::write_json(&dir.path().join(FILE), &other).unwrap();
        assert_eq!(owner_of(dir.path()), Some(other));
        let e = claim(dir.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("is run by process 1 (its API: http://127.0.0.1:2/api/v2)"),
            "{e}"
        );

        // A claim whose process is gone is stale: taken over.
        let dead = Owner {
            pid: u32::MAX - 1,
            api: None,
        };
        crate::files::write_json(&dir.path().join(FILE), &dead).unwrap();
        assert_eq!(owner_of(dir.path()), None);
        let _claim = claim(dir.path(), None).unwrap();
        assert_eq!(
            read(&dir.path().join(FILE)).unwrap().pid,
            std::process::id()
        );
    }
}
