//! The money commands against a running `cocoon up --fake-engine`: `cocoon quote`,
//! `cocoon proxy status`, `cocoon client status|withdraw|close`, `cocoon worker status|payout`.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn mnemonic(dir: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json")).unwrap()).unwrap();
    v["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap()["mnemonic"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The balance of the wallet of `words`, nanotons (`cocoon wallet balance`).
fn balance_of(api: &str, words: &str) -> u128 {
    let out = ok(&["wallet", "balance", "--api", api, "--mnemonic", words]);
    let nanotons = out
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no nanotons in {out}"));
    nanotons.parse().unwrap()
}

#[test]
fn quote_status_withdraw_payout_and_close() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("net");
    let any = "127.0.0.1:0";
    let child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args([
            "up",
            "--fake-engine",
            "--dir",
            d.to_str().unwrap(),
            "--listen",
            any,
            "--chain-listen",
            any,
        ])
        .args(["--proxy-worker-listen", any, "--proxy-client-listen", any])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _up = Killed(child);
    let net = network_json(&d);
    let api = net["chain_api"].as_str().unwrap().to_string();
    let root = net["root"].as_str().unwrap().to_string();
    let proxy = net["proxy_contract"].as_str().unwrap().to_string();
    // `ROLE COMMAND --api API --proxy PROXY --mnemonic WORDS EXTRA…`: every money command.
    let money = |role: &str, command: &str, words: &str, extra: &[&str]| -> Vec<String> {
        [
            role,
            command,
            "--api",
            &api,
            "--proxy",
            &proxy,
            "--mnemonic",
            words,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };

    // Two paid requests.
    for _ in 0..2 {
        paid_request(&net, "fake-benchmark-model");
    }
    // Vouchers travel after the answers and the worker writes the newest to its state directory
    // within a second (at most one write a second): wait for it on disk, which is what
    // `worker status` and `worker payout` below read.
    eventually_blocking(
        "the worker holds a voucher on disk",
        Duration::from_secs(20),
        || {
            let held = cocoon_worker::held_vouchers(&d.join("worker0")).unwrap_or_default();
            let tokens: u64 = held.values().map(|h| h.tokens).sum();
            when(tokens >= 134, tokens)
        },
    );

    // Quote: 100 000 requests a day of 300 + 200 tokens at the live worker's coefficient.
    let q = ok(&[
        "quote",
        "--api",
        &api,
        "--root",
        &root,
        "--model",
        "fake",
        "--requests-per-day",
        "100000",
        "--avg-prompt-tokens",
        "300",
        "--avg-completion-tokens",
        "200",
        "--throughput",
        "100",
        "--json",
    ]);
    let q: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(q["coefficient"], 1000);
    assert_eq!(q["coefficient_source"], "cheapest of 1 live worker(s)");
    assert_eq!(
        q["nanotons"]["per_day"],
        (100_000u128 * 500 * 20).to_string()
    );
    assert_eq!(q["ton"]["per_month"], "30");
    assert_eq!(q["workers_needed"], 7);
    // As the app developer guide writes it: the network's chain directory, no --root;
    // 100 000 requests a day of 300 + 200 tokens.
    let chain_dir = d.join("chain");
    let quote_at_dir = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "quote",
            "--dir",
            chain_dir.to_str().unwrap(),
            "--model",
            model,
        ];
        args.extend(["--requests-per-day", "100000", "--avg-prompt-tokens", "300"]);
        args.extend(["--avg-completion-tokens", "200"]);
        args.extend(extra);
        ok(&args)
    };
    let text = quote_at_dir("fake", &[]);
    assert!(
        text.contains("per day      1 TON") && text.contains("recommended client stake 0.5 TON"),
        "{text}"
    );
    let e = fails(&[
        "quote",
        "--api",
        &api,
        "--root",
        &root,
        "--model",
        "llama",
        "--requests-per-day",
        "1",
        "--avg-prompt-tokens",
        "1",
        "--avg-completion-tokens",
        "1",
    ]);
    assert!(
        e.contains("unknown model \"llama\"; the root knows: fake, qwen3, smollm2"),
        "{e}"
    );
    // The question, as a new user asks it: 100 000 Qwen requests a day of 500 tokens.
    // The root lists Qwen3 (every known model); no worker serves it here, so the base
    // coefficient prices it.
    let qwen = quote_at_dir("Qwen", &["--json"]);
    let qwen: serde_json::Value = serde_json::from_str(&qwen).unwrap();
    assert_eq!(qwen["model_type"], "qwen3");
    assert_eq!(qwen["coefficient"], 1000);
    assert_eq!(
        qwen["coefficient_source"],
        "no worker serves qwen3 now: the base coefficient"
    );
    assert_eq!(qwen["nanotons"]["per_request"], (500u128 * 20).to_string());
    assert_eq!(
        qwen["nanotons"]["per_day"],
        (100_000u128 * 500 * 20).to_string()
    );
    assert_eq!(qwen["ton"]["per_month"], "30");

    let p = ok(&["proxy", "status", "--api", &api, "--proxy", &proxy]);
    assert!(
        p.contains("stake 1 TON") && p.contains("earnings") && p.contains("client money and fees"),
        "{p}"
    );

    let client = mnemonic(&d, "client");
    let client_state = d.join("client");
    let at_client = ["--state", client_state.to_str().unwrap()];
    let s = ok(&money("client", "status", &client, &at_client));
    assert!(
        s.contains("Open") && s.contains("stake 0.5 TON") && s.contains("machine wallet"),
        "{s}"
    );
    // Without the client's state directory there is no machine wallet to name the contract by.
    let elsewhere = tmp.path().join("not-a-client");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let e = fails(&money(
        "client",
        "status",
        &client,
        &["--state", elsewhere.to_str().unwrap()],
    ));
    assert!(e.contains("machine-wallet-key.hex does not exist"), "{e}");
    // COCOON's withdrawal: everything above the stake, then nothing more; through the machine
    // wallet, to the wallet.
    let wallet_before = balance_of(&api, &client);
    let w = ok(&money("client", "withdraw", &client, &at_client));
    assert!(
        w.contains("withdrew 9.5 TON") && w.contains("balance 0.5 TON"),
        "{w}"
    );
    let gained = balance_of(&api, &client) - wallet_before;
    assert!(
        gained > 9 * cocoon_chain::TON && gained < 9_500_000_000,
        "the wallet got the 9.5 TON less fees: {gained}"
    );
    let e = fails(&money("client", "withdraw", &client, &at_client));
    assert!(
        e.contains("nothing to withdraw") && e.contains("stake of 0.5 TON stays"),
        "{e}"
    );

    let worker = mnemonic(&d, "worker0");
    let state = d.join("worker0");
    let s = ok(&money(
        "worker",
        "status",
        &worker,
        &["--state", state.to_str().unwrap()],
    ));
    assert!(
        s.contains("0 tokens paid") && s.contains("held voucher"),
        "{s}"
    );
    let pay = ok(&money(
        "worker",
        "payout",
        &worker,
        &["--state", state.to_str().unwrap()],
    ));
    assert!(pay.contains("claimed"), "{pay}");

    // Close through the proxy's final grant: the contract ends Closed with nothing left, and
    // the machine wallet's money is back in the wallet.
    let c = ok(&money("client", "close", &client, &at_client));
    assert!(
        c.contains("granted the final refund")
            && c.contains("Closed")
            && c.contains("balance 0 TON")
            && c.contains("from the machine wallet"),
        "{c}"
    );
    let s = ok(&money("client", "status", &client, &at_client));
    assert!(s.contains(": 0.01 TON (owns the client contract"), "{s}");
    // The owner's hold on the machine wallet: show, block, unblock; another wallet names another
    // (absent) machine wallet and is refused.
    let machine = |command: &str, words: &str| -> Vec<String> {
        [
            "wallet",
            "machine",
            command,
            "--api",
            &api,
            "--mnemonic",
            words,
            "--state",
            client_state.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let m = ok(&machine("show", &client));
    assert!(m.contains("0.01 TON") && m.contains("not blocked"), "{m}");
    let m = ok(&machine("block", &client));
    assert!(
        m.contains("blocked: the machine's key can send nothing") && m.contains(", blocked"),
        "{m}"
    );
    let m = ok(&machine("unblock", &client));
    assert!(m.contains("not blocked"), "{m}");
    let e = fails(&machine("block", &mnemonic(&d, "worker0")));
    assert!(
        e.contains("is not on chain: is --wallet the role's wallet"),
        "{e}"
    );
    let e = fails(&money("client", "close", &client, &at_client));
    assert!(e.contains("already closed"), "{e}");

    // The proxy's earnings (the price less the worker's fee on the tokens the worker was just
    // paid for) go to its owner, whoever asks: here another wallet; the stake and the clients'
    // money stay; then there is nothing left to take.
    let operator = mnemonic(&d, "proxy");
    let operator_before = balance_of(&api, &operator);
    let t = ok(&money("proxy", "payout", &client, &[]));
    assert!(
        t.contains("took") && t.contains("TON of earnings") && t.contains("(the proxy's owner)"),
        "{t}"
    );
    assert!(
        balance_of(&api, &operator) > operator_before,
        "the owner was paid"
    );
    let t = ok(&money("proxy", "payout", &operator, &[]));
    assert!(t.contains("nothing to take"), "{t}");
    let p = ok(&["proxy", "status", "--api", &api, "--proxy", &proxy]);
    assert!(
        p.contains("stake 1 TON + earnings 0 TON + client money and fees")
            && p.contains("ledger committed on chain"),
        "{p}"
    );
    // (Not asserted here: what a second payout finds, since the running proxy's save_state
    // brings a nanoton at any moment. Zero and one nanoton are proved on the contract:
    // contracts/test/proxy.test.mjs.)

    // The owner closes the proxy contract: the delay starts, a second try before it is over
    // says when, and after it the stake comes back; nobody else can.
    let e = fails(&money("proxy", "close", &client, &[]));
    assert!(e.contains("only the proxy's owner"), "{e}");
    let c = ok(&money("proxy", "close", &operator, &[]));
    assert!(
        c.contains("closing: the stake of 1 TON") && c.contains("run `cocoon proxy close` again"),
        "{c}"
    );
    let e = fails(&money("proxy", "close", &operator, &[]));
    assert!(e.contains("the stake unlocks at unix time"), "{e}");
    let chain_dir = d.join("chain");
    ok(&[
        "chain",
        "advance",
        "--dir",
        chain_dir.to_str().unwrap(),
        "86400",
    ]);
    let c = ok(&money("proxy", "close", &operator, &[]));
    assert!(c.contains("closed: the stake and the earnings"), "{c}");
    let p = ok(&["proxy", "status", "--api", &api, "--proxy", &proxy]);
    assert!(p.contains("Closed") && p.contains("stake 0 TON"), "{p}");
    let e = fails(&money("proxy", "close", &operator, &[]));
    assert!(e.contains("already closed"), "{e}");
}
