//! `cocoon chain`, `cocoon wallet` and `cocoon root` as a user runs them, against the local
//! chain both in process (`--dir`) and through `cocoon chain serve` (`--api`), including a
//! SIGKILL and restart of the server that must keep every balance.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cocoon_chain::client::{self, ChainClient, ToncenterClient};
use cocoon_chain::{Address, Network};

fn wallet_address(dir: &Path, name: &str) -> Address {
    let text = std::fs::read_to_string(dir.join("wallets").join(format!("{name}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["address"].as_str().unwrap().parse().unwrap()
}

/// Starts `cocoon chain serve` on a free port; returns the child and the API URL.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args([
            "chain",
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL printed")
        .to_string();
    (child, url)
}

fn nanotons(balance_output: &str) -> u128 {
    let start = balance_output.find('(').unwrap() + 1;
    balance_output[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `wallet send` arguments: on the chain `at` (`["--dir", D]` or `["--api", URL]`), from the
/// wallet file `from`, `amount` TON to `to`, then `extra`.
fn send(at: [&str; 2], from: &Path, to: &str, amount: &str, extra: &[&str]) -> Vec<String> {
    let from = from.to_str().unwrap();
    [
        "wallet", "send", at[0], at[1], "--wallet", from, "--to", to, "--amount", amount,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// `wallet balance` arguments for `address` on the chain `at`.
fn balance(at: [&str; 2], address: &cocoon_chain::Address) -> Vec<String> {
    let raw = address.to_raw();
    ["wallet", "balance", at[0], at[1], "--address", &raw]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn init_send_serve_restart_and_root_show() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chain");
    let d = dir.to_str().unwrap();
    let out = ok(&[
        "chain",
        "init",
        "--dir",
        d,
        "--model",
        &format!("{}=qwen3", "ab".repeat(32)),
    ]);
    assert!(out.contains("root contract: EQ"), "{out}");
    assert!(fails(&["chain", "init", "--dir", d]).contains("already holds a chain"));

    // In process: send 2.5 TON client → worker with a comment.
    let client_w = dir.join("wallets/client.json");
    let worker = wallet_address(&dir, "worker");
    let before = nanotons(&ok(&balance(["--dir", d], &worker)));
    let out = ok(&send(
        ["--dir", d],
        &client_w,
        &worker.to_raw(),
        "2.5",
        &["--comment", "thanks"],
    ));
    assert!(out.contains("sent 2.5 TON"), "{out}");
    let after = nanotons(&ok(&balance(["--dir", d], &worker)));
    // The receiving wallet pays its own (small) gas out of what arrives, as on TON.
    let got = after - before;
    assert!(
        got <= 2_500_000_000 && got > 2_500_000_000 - 1_000_000,
        "the worker got {got}"
    );

    // Bad input: each refused with the reason.
    let worker_raw = worker.to_raw();
    for (to, amount, why) in [
        ("0:12", "1", "not 32 bytes"),
        (&worker_raw, "1.0000000001", "at most 9 decimals"),
        (&worker_raw, "5000000", "insufficient funds"),
    ] {
        let e = fails(&send(["--dir", d], &client_w, to, amount, &[]));
        assert!(e.contains(why), "--to {to} --amount {amount}: {e}");
    }
    let e = fails(&[
        "wallet",
        "balance",
        "--dir",
        tmp.path().join("nothing").to_str().unwrap(),
        "--address",
        &worker.to_raw(),
    ]);
    assert!(e.contains("no local chain"), "{e}");

    // Over HTTP: the same client code as for public TON endpoints.
    let (mut server, url) = serve(&dir);
    let out = ok(&send(
        ["--api", &url],
        &client_w,
        &worker.to_raw(),
        "1",
        &[],
    ));
    assert!(out.contains("sent 1 TON"), "{out}");
    let over_http = nanotons(&ok(&balance(["--api", &url], &worker)));
    assert!(over_http <= after + 1_000_000_000 && over_http > after + 1_000_000_000 - 1_000_000);
    let client_addr = wallet_address(&dir, "client");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ToncenterClient::new(&url, None, Network::Local);
    let (seqno, txs, client_balance) = rt.block_on(async {
        (
            client::wallet_seqno(&api, &client_addr).await.unwrap(),
            api.transactions(&client_addr, 10).await.unwrap(),
            api.account(&client_addr).await.unwrap().balance,
        )
    });
    assert_eq!(seqno, 2, "two transfers were sent from the client wallet");
    assert!(
        txs.len() >= 3 && txs.iter().all(|t| t.exit_code == Some(0)),
        "{txs:?}"
    );
    let root_json = ok(&[
        "root",
        "show",
        "--api",
        &url,
        "--root",
        &read_root(&dir),
        "--json",
    ]);
    let root: serde_json::Value = serde_json::from_str(&root_json).unwrap();
    assert_eq!(root["models"]["ab".repeat(32)], "qwen3");

    // SIGKILL the server and start it again: every balance is still there.
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, url) = serve(&dir);
    let api = ToncenterClient::new(&url, None, Network::Local);
    let (w, c) = rt.block_on(async {
        (
            api.account(&worker).await.unwrap().balance,
            api.account(&client_addr).await.unwrap().balance,
        )
    });
    assert_eq!(
        (w, c),
        (over_http, client_balance),
        "balances survive a SIGKILL"
    );
    let text = ok(&["root", "show", "--dir", d]);
    assert!(
        text.contains("qwen3") && text.contains("minimum stakes: proxy 1 TON, client 0.5 TON"),
        "{text}"
    );
    // While the server holds the chain, `--dir` goes through its API: a transfer lands in
    // the chain it serves (a second copy's write would be overwritten at its next save), the
    // clock moves there, and a second server is refused.
    let out = ok(&send(["--dir", d], &client_w, &worker.to_raw(), "1", &[]));
    assert!(out.contains("sent 1 TON"), "{out}");
    let served = rt.block_on(api.account(&worker)).unwrap().balance;
    assert!(
        served > over_http + 1_000_000_000 - 1_000_000,
        "{served} vs {over_http}"
    );
    let before = rt.block_on(api.account(&worker)).unwrap();
    let moved = ok(&["chain", "advance", "--dir", d, "100"]);
    assert!(moved.contains("chain time is now"), "{moved}");
    let e = fails(&["chain", "serve", "--dir", d, "--listen", "127.0.0.1:0"]);
    assert!(
        e.contains(&format!("is run by process {}", server.id())) && e.contains(&url),
        "{e}"
    );
    assert_eq!(
        rt.block_on(api.account(&worker)).unwrap().balance,
        before.balance
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

fn read_root(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("genesis.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["root"].as_str().unwrap().to_string()
}

#[test]
fn wallet_new_and_show_agree_and_never_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("w.json");
    let f = file.to_str().unwrap();
    let out = ok(&["wallet", "new", "--out", f, "--version", "v4r2"]);
    assert!(out.contains("address: UQ"), "{out}");
    let shown = ok(&["wallet", "show", "--wallet", f]);
    let friendly = out.split("address: ").nth(1).unwrap().trim();
    assert!(shown.contains(friendly), "{shown}");
    assert!(fails(&["wallet", "new", "--out", f]).contains("not overwriting"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let e = fails(&["wallet", "show", "--mnemonic", "abandon abandon"]);
    assert!(e.contains("expected 24 words"), "{e}");
}

#[test]
fn config_examples_are_valid_and_bad_files_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = format!("0:{}", "11".repeat(32));
    for role in ["proxy", "worker", "client"] {
        let text = ok(&["config", "example", role])
            .replace("root = \"0:…\"", &format!("root = \"{root}\""));
        let file = tmp.path().join(format!("{role}.toml"));
        std::fs::write(&file, &text).unwrap();
        let out = ok(&["config", "check", role, file.to_str().unwrap()]);
        assert!(out.contains("is a valid config"), "{role}: {out}");
        std::fs::write(&file, format!("{text}colour = 1\n")).unwrap();
        assert!(fails(&["config", "check", role, file.to_str().unwrap()])
            .contains("unknown field `colour`"));
    }
    let worker = tmp.path().join("worker.toml");
    let text = ok(&["config", "example", "worker"])
        .replace("root = \"0:…\"", &format!("root = \"{root}\""));
    std::fs::write(
        &worker,
        text.replace(
            "payout_threshold_ton = \"1\"",
            "payout_threshold_ton = \"-1\"",
        ),
    )
    .unwrap();
    let e = fails(&["config", "check", "worker", worker.to_str().unwrap()]);
    assert!(
        e.contains("payout_threshold_ton") && e.contains("invalid TON amount"),
        "{e}"
    );
    std::fs::write(
        &worker,
        text.replace("policy = \"fake_tdx\"", "policy = \"trust-me\""),
    )
    .unwrap();
    let e = fails(&["config", "check", "worker", worker.to_str().unwrap()]);
    assert!(e.contains("policy") && e.contains("trust-me"), "{e}");
    // FAKE attestation is refused on mainnet.
    std::fs::write(
        &worker,
        text.replace("network = \"local\"", "network = \"mainnet\""),
    )
    .unwrap();
    let e = fails(&["config", "check", "worker", worker.to_str().unwrap()]);
    assert!(e.contains("FAKE attestation proves nothing"), "{e}");
    std::fs::write(
        &worker,
        text.replace("policy = \"fake_tdx\"", "policy = \"trust-me\""),
    )
    .unwrap();
    // Starting the role refuses the same file for the same reason.
    let e = fails(&["worker", "--config", worker.to_str().unwrap()]);
    assert!(
        e.contains("is not a valid config") && e.contains("trust-me"),
        "{e}"
    );
}
