//! Runs the reference COCOON implementation (Telegram's C++ runners, built from source into
//! `shared/reference/`, see its README) as real processes on 127.0.0.1, so that tests can put
//! our roles in one network with theirs. A test against a reference process outranks any test
//! against our own code.
//!
//! [`RefNet::start`] calls the reference's own `run-local` script with the roles asked for,
//! free ports (`--auto-ports`), fake TON and fake TDX, waits until they are ready and reads the
//! addresses they listen on. Dropping the [`RefNet`] stops every process it started (and
//! `--watch-pid` stops them if the test process dies first).
//!
//! Where the reference is not installed, [`reference_dir`] panics with a message saying where
//! it was looked for: interop tests fail loudly, they never skip.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that points at the reference directory (default:
/// `../shared/reference` beside the repository).
pub const REFERENCE_DIR_ENV: &str = "COCOON_REFERENCE_DIR";

/// The directory holding `run-local`, `bin/` and `spec/`; panics naming the places looked at
/// when it is missing.
pub fn reference_dir() -> PathBuf {
    if let Ok(dir) = std::env::var(REFERENCE_DIR_ENV) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("run-local").is_file(),
            "{REFERENCE_DIR_ENV}={} has no run-local: the reference COCOON runners are needed \
             for the interop tests",
            dir.display()
        );
        return dir;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = repo.join("../shared/reference");
    assert!(
        dir.join("run-local").is_file(),
        "the reference COCOON runners are missing: looked for {} (set {REFERENCE_DIR_ENV} to \
         a directory with run-local, bin/ and spec/); the interop tests need them",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// A reference network (some of its roles) running in a temporary directory.
pub struct RefNet {
    dir: tempfile::TempDir,
    info: serde_json::Value,
}

impl RefNet {
    /// Starts `run-local --roles ROLES --auto-ports` plus `extra` arguments and waits until the
    /// roles are ready. Panics with the runners' logs when they do not start.
    pub fn start(roles: &str, extra: &[&str]) -> RefNet {
        let root = reference_dir();
        let dir = tempfile::Builder::new()
            .prefix("cocoon-ref-")
            .tempdir()
            .expect("a temporary directory for the reference network");
        let pid = std::process::id().to_string();
        let out = Command::new("bash")
            .arg(root.join("run-local"))
            .args(["--dir", &dir.path().to_string_lossy()])
            .args(["--roles", roles, "--auto-ports", "--watch-pid", &pid])
            .args(extra)
            .output()
            .expect("run-local runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let info = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        match info {
            Some(info) if out.status.success() => RefNet { dir, info },
            _ => panic!(
                "the reference network ({roles}) did not start: {}\n{stdout}\n{}\nlogs:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                logs(dir.path())
            ),
        }
    }

    /// What `run-local` printed: addresses (`proxy_client_addr`, `proxy_worker_addr`,
    /// `client_url`, …), pids, the fake-TON config's path.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }

    /// An address `run-local` reported, as `host:port`.
    pub fn addr(&self, key: &str) -> std::net::SocketAddr {
        self.info[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("run-local reported no address {key}: {}", self.info))
    }

    /// The network's work directory (configs in `conf/`, logs in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every runner's log, for a failing test's message.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for RefNet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(reference_dir().join("run-local"))
            .args(["--stop", "--dir", &self.dir.path().to_string_lossy()])
            .output();
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last 40 lines)\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}
