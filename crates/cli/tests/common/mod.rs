//! What the CLI tests share: running `cocoon`, and a child process killed when the test ends.

#![allow(dead_code)] // each test file uses a different part

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[allow(unused_imports)] // each test file uses a different part
pub use cocoon_localnet::wait::{eventually_blocking, when};

/// Runs `cocoon ARGS` to completion.
pub fn cocoon<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .output()
        .expect("runs")
}

/// Runs `cocoon ARGS`, which must succeed; its stdout.
pub fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let o = cocoon(args);
    assert!(
        o.status.success(),
        "cocoon {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `cocoon ARGS`, which must fail; its stderr.
pub fn fails<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let o = cocoon(args);
    assert!(
        !o.status.success(),
        "cocoon {args:?} should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cocoon ARGS` and returns it with the first line of its stdout that contains
/// `marker`; the rest of its stdout is read and dropped so that it never blocks on a full pipe.
pub fn spawn_until<S: AsRef<OsStr> + Debug>(args: &[S], marker: &str) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "cocoon {args:?} exited before printing {marker:?}"
        );
        if line.contains(marker) {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (Killed(child), line)
}

/// The address printed after `label` in `line` ("workers on 127.0.0.1:4000,", "API on
/// http://127.0.0.1:80/v1"): how a test learns the port a process bound to `127.0.0.1:0`.
/// Ports chosen by the test ahead of time can be taken by any outbound connection in between.
pub fn addr_after(line: &str, label: &str) -> SocketAddr {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
        + label.len()..];
    let word = rest.split_whitespace().next().unwrap_or_default();
    let word = word.trim_start_matches("http://");
    let word = word.split(['/', ',', ';']).next().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|e| panic!("{word:?} after {label:?} in {line:?}: {e}"))
}

/// One chat request with `body` to a `cocoon up` network (its network.json): the status and
/// the body of the answer.
pub fn post_chat(net: &serde_json::Value, body: &serde_json::Value) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/chat/completions",
                net["base_url"].as_str().unwrap()
            ))
            .bearer_auth(net["api_key"].as_str().unwrap())
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// One paid chat request for `model` to a `cocoon up` network (its network.json), which must
/// be answered 200.
pub fn paid_request(net: &serde_json::Value, model: &str) {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = post_chat(net, &body);
    assert_eq!(status, 200, "{text}");
}

/// The `network.json` a `cocoon up` in `dir` writes once its network answers (waited for, up to
/// a minute: the first start builds a chain and proves work).
pub fn network_json(dir: &std::path::Path) -> serde_json::Value {
    eventually_blocking(
        "cocoon up writes network.json",
        Duration::from_secs(60),
        || {
            let text =
                std::fs::read_to_string(dir.join("network.json")).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        },
    )
}
