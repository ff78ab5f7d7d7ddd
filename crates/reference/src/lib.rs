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

/// A port on 127.0.0.1 that is free now and outside the system's range of ephemeral ports, for
/// a listener that must be named before it starts (a reference config lists it before our role
/// binds it): no outbound connection can take it in between, as one can take a port the system
/// handed out for `127.0.0.1:0`. Spread by process and call, so parallel tests do not meet.
pub fn port_for_a_later_listener() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // The ephemeral range starts at its first number (Linux: 32768 unless configured).
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let span = u32::from(high - low);
    let base = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = low + ((base + step * 97) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

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

    /// The fake-TON file the roles read (hand it to our roles as `fake_ton`).
    pub fn fake_ton_config(&self) -> PathBuf {
        PathBuf::from(
            self.info["fake_ton_config"]
                .as_str()
                .unwrap_or_else(|| panic!("run-local reported no fake_ton_config: {}", self.info)),
        )
    }

    /// The root contract address the reference roles are configured with (their rendered
    /// configs' `root_contract_address`); our roles recompute contracts under it as theirs do.
    pub fn root_address(&self) -> String {
        for role in ["proxy", "client", "worker"] {
            let path = self.dir().join(format!("conf/{role}-config.json"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                let conf: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if let Some(root) = conf["root_contract_address"].as_str() {
                    return root.to_string();
                }
            }
        }
        panic!(
            "no rendered config names the root in {}",
            self.dir().display()
        )
    }

    /// Waits until the reference client's OpenAI API lists `model` with its workers (the
    /// reference roles redial every ~10 s, so a network of mixed roles takes a while to meet);
    /// panics after `limit` with what it listed and the runners' logs.
    pub async fn wait_client_lists(&self, model: &str, limit: std::time::Duration) {
        let api = self.addr("client_http");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let listed = http_get(api, "/v1/models").await.unwrap_or_default();
            if listed.contains(model) && listed.contains("coefficient") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reference client never listed {model} within {limit:?}: {listed}\n{}",
                self.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// One HTTP GET of `path` at `addr`: the body (read to its Content-Length, or to the end of the
/// connection when there is none), or `None` when it failed within 10 s.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = tcp.read(&mut buf).await.ok()?;
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
                if n == 0 || length.is_some_and(|len| body.len() >= len) {
                    return Some(body.to_string());
                }
            } else if n == 0 {
                return None;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), get)
        .await
        .ok()
        .flatten()
}

impl RefNet {
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
