//! A GPU owner's engine over HTTP, as processes: an OpenAI-compatible server (here `cocoon
//! engine serve-fake`, a stand-in; CI also runs a real llama-server, see
//! `scripts/llama_server_check.sh`), checked with `cocoon engine check`, then behind
//! `cocoon up --engine-url`. When the server dies the worker withdraws (the proxy sees it
//! disabled and refuses cleanly); when it is back the worker rejoins by itself.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `cocoon engine serve-fake` on `listen` (`127.0.0.1:0` for any port), and where it listens.
fn engine_on(listen: &str) -> (Killed, SocketAddr) {
    let (child, line) = spawn_until(&["engine", "serve-fake", "--listen", listen], "API on");
    (child, addr_after(&line, "API on"))
}

/// One streamed chat request to the network: its status and body.
fn ask(net: &serde_json::Value) -> (u16, String) {
    let body = serde_json::json!({"model": "fake-benchmark-model", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    post_chat(net, &body)
}

/// Whether the proxy lists the worker as enabled (its `/jsonstats`).
fn worker_enabled(net: &serde_json::Value) -> Option<bool> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stats: serde_json::Value = rt.block_on(async {
        reqwest::get(format!(
            "http://{}/jsonstats",
            net["proxy_http"].as_str().unwrap()
        ))
        .await
        .ok()?
        .json()
        .await
        .ok()
    })?;
    stats["tables"]["workers"][0]["enabled"].as_bool()
}

#[test]
fn an_http_engine_is_checked_served_withdrawn_when_it_dies_and_rejoins() {
    let (engine, addr) = engine_on("127.0.0.1:0");
    let url = format!("http://{addr}");

    // The owner's check before joining.
    let report = ok(&["engine", "check", &url, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["fit"], true, "{report}");
    assert_eq!(report["usage"]["completion"], 100, "{report}");
    let down = fails(&["engine", "check", "http://127.0.0.1:9"]);
    assert!(
        down.contains("is not fit") && down.contains("no model list"),
        "{down}"
    );

    // Behind a worker: the identity the owner names, the name the server serves.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("net");
    let any = "127.0.0.1:0";
    let identity = cocoon_localnet::fake_model_identity();
    let up = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["up", "--dir", d.to_str().unwrap(), "--engine-url", &url])
        .args(["--model", &identity, "--parallel", "8"])
        .args(["--listen", any, "--chain-listen", any])
        .args(["--proxy-worker-listen", any, "--proxy-client-listen", any])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _up = Killed(up);
    let net = network_json(&d);
    let (status, body) = ask(&net);
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    // The server dies: the worker withdraws, and requests are refused cleanly.
    drop(engine);
    eventually_blocking(
        "the proxy sees the worker withdrawn",
        Duration::from_secs(30),
        || {
            let enabled = worker_enabled(&net);
            when(enabled == Some(false), enabled)
        },
    );
    let (status, body) = ask(&net);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("switched off"), "{body}");

    // Back on the same address: the worker rejoins by itself.
    let _engine = engine_on(&addr.to_string());
    eventually_blocking("the worker rejoins", Duration::from_secs(30), || {
        let enabled = worker_enabled(&net);
        when(enabled == Some(true), enabled)
    });
    let (status, body) = ask(&net);
    assert_eq!(status, 200, "{body}");
}
