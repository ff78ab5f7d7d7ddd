//! The roles as separate processes from TOML configs, talking to `cocoon chain serve`:
//! a proxy killed with SIGKILL and restarted keeps its ledger intact, charges nothing twice,
//! and its workers and clients come back by themselves.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_chain::client::{ChainClient, ToncenterClient};
use cocoon_chain::contracts::ClientData;
use cocoon_chain::{Address, Network};

fn cocoon_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
}

/// Spawns and returns the first stdout line containing `marker`.
fn spawn_until(args: &[&str], marker: &str) -> (Killed, String) {
    let mut child = cocoon_cmd()
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

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn json_field(path: &Path, field: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[field].as_str().unwrap().to_string()
}

/// What the proxy's ledger has durably charged `owner`, read from a copy (opening the live file
/// would cut the tail the running proxy has not sealed yet), once it reaches `want` or after
/// 10 s: an answer leaves before its group commit, which follows within milliseconds.
fn charged(dir: &Path, key: &cocoon_chain::keys::Keypair, owner: &Address, want: u64) -> u64 {
    let t = Instant::now();
    loop {
        let copy = dir.join("ledger-copy.jsonl");
        std::fs::copy(dir.join("proxy/ledger.jsonl"), &copy).unwrap();
        let ledger = cocoon_proxy::Ledger::open(&copy, key.clone()).unwrap();
        let total = ledger.totals().clients.get(owner).copied().unwrap_or(0);
        if total == want || t.elapsed() > Duration::from_secs(10) {
            return total;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chat(rt: &tokio::runtime::Runtime, url: &str, key: &str) -> reqwest::StatusCode {
    rt.block_on(async {
        let body = serde_json::json!({"model": "fake-benchmark-model", "messages": [{"role": "user", "content": "hi"}]});
        match reqwest::Client::new().post(url).bearer_auth(key).json(&body).send().await {
            Ok(r) => {
                let s = r.status();
                let _ = r.text().await;
                s
            }
            Err(_) => reqwest::StatusCode::BAD_GATEWAY,
        }
    })
}

#[test]
fn a_sigkilled_proxy_restarts_with_its_ledger_and_nothing_is_charged_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let chain_dir = d.join("chain");
    let fake = cocoon_localnet::fake_model_identity();
    let hash = fake.split('@').nth(1).unwrap();
    ok(&[
        "chain",
        "init",
        "--dir",
        chain_dir.to_str().unwrap(),
        "--model",
        &format!("{hash}=fake"),
    ]);
    let (_chain, line) = spawn_until(
        &[
            "chain",
            "serve",
            "--dir",
            chain_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "local chain API",
    );
    let api = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let root = json_field(&chain_dir.join("genesis.json"), "root");
    let (wp, cp, http) = (free_port(), free_port(), free_port());
    let wallet = |n: &str| {
        chain_dir
            .join("wallets")
            .join(format!("{n}.json"))
            .display()
            .to_string()
    };
    let common = |name: &str| {
        format!(
            "chain_api = \"{api}\"\nroot = \"{root}\"\nwallet = \"{}\"\ndir = \"{}\"\n",
            wallet(name),
            d.join(name).display()
        )
    };
    std::fs::write(
        d.join("proxy.toml"),
        format!("{}worker_listen = \"{wp}\"\nclient_listen = \"{cp}\"\npow_difficulty = 4\nsave_state_interval_secs = 1\n", common("proxy")),
    )
    .unwrap();
    std::fs::write(
        d.join("worker.toml"),
        format!(
            "{}proxies = [\"{wp}\"]\nmodel = \"fake\"\n",
            common("worker")
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("client.toml"),
        format!(
            "{}proxies = [\"{cp}\"]\nlisten = \"{http}\"\napi_key = \"k-123\"\n",
            common("client")
        ),
    )
    .unwrap();
    let proxy_args =
        ["proxy", "--config", d.join("proxy.toml").to_str().unwrap()].map(str::to_string);
    let proxy_args: Vec<&str> = proxy_args.iter().map(String::as_str).collect();
    let (proxy, line) = spawn_until(&proxy_args, "proxy contract");
    let proxy_sc = line.split_whitespace().nth(2).unwrap().to_string();
    ok(&[
        "root",
        "register-proxy",
        "--api",
        &api,
        "--root",
        &root,
        "--proxy",
        &proxy_sc,
        "--clients",
        &cp.to_string(),
        "--workers",
        &wp.to_string(),
        "--wallet",
        &wallet("admin"),
    ]);
    let (_worker, _) = spawn_until(
        &[
            "worker",
            "--config",
            d.join("worker.toml").to_str().unwrap(),
        ],
        "worker",
    );
    std::thread::sleep(Duration::from_millis(500));
    let (client, _) = spawn_until(
        &[
            "client",
            "--config",
            d.join("client.toml").to_str().unwrap(),
        ],
        "OpenAI API on",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{http}/v1/chat/completions");
    let until_ok = |n: usize| {
        let mut done = 0;
        let t = Instant::now();
        while done < n {
            if chat(&rt, &url, "k-123") == reqwest::StatusCode::OK {
                done += 1;
            } else {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "requests keep failing"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    until_ok(3);
    let key = cocoon_chain::keys::Keypair::from_hex(
        &std::fs::read_to_string(d.join("proxy/voucher-key.hex")).unwrap(),
    )
    .unwrap();
    let client_owner: Address = json_field(&chain_dir.join("wallets/client.json"), "address")
        .parse()
        .unwrap();
    assert_eq!(charged(d, &key, &client_owner, 3 * 134), 3 * 134);

    // SIGKILL: no chance to flush anything but what was fsync'd.
    let mut proxy = proxy;
    proxy.0.kill().unwrap();
    proxy.0.wait().unwrap();
    {
        let ledger =
            cocoon_proxy::Ledger::open(&d.join("proxy/ledger.jsonl"), key.clone()).unwrap();
        assert_eq!(
            ledger.totals().clients[&client_owner],
            3 * 134,
            "the ledger survived the SIGKILL intact"
        );
    }

    // Restart: the worker and the client reconnect on their own, and requests continue.
    let (_proxy, _) = spawn_until(&proxy_args, "proxy contract");
    until_ok(3);
    assert_eq!(
        charged(d, &key, &client_owner, 6 * 134),
        6 * 134,
        "six requests, each charged once"
    );

    // The client commits its newest charge when it stops: the chain shows exactly six requests.
    let mut client = client;
    let _ = Command::new("kill")
        .args(["-INT", &client.0.id().to_string()])
        .status();
    let t = Instant::now();
    while client.0.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the client did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let chain = ToncenterClient::new(&api, None, Network::Local);
    let t = Instant::now();
    loop {
        let used = rt.block_on(async {
            let p = cocoon_chain::client::read_proxy(&chain, &proxy_sc.parse().unwrap())
                .await
                .unwrap();
            let init = p.init();
            let sc = init
                .client_address(proxy_sc.parse().unwrap(), client_owner)
                .unwrap();
            let acc = chain.account(&sc).await.unwrap();
            ClientData::parse(&acc.data.unwrap()).unwrap().tokens_used
        });
        if used == 6 * 134 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "on chain: {used} tokens charged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
