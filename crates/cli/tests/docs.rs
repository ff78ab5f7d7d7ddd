//! The guides' commands, copied from `docs/*.md` and run as written (placeholders filled in),
//! so the guides cannot rot.

mod common;

use common::{eventually_blocking, network_json, paid_request, when, Killed};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The ```sh blocks of `docs/NAME`.
fn sh_blocks(name: &str) -> Vec<String> {
    let path = format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(&path).unwrap();
    guide
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// Runs `script` with bash (`set -euo pipefail`, `cocoon` being this build) in `cwd`; its
/// stdout, after asserting it succeeded.
fn run(script: &str, cwd: &Path) -> String {
    assert!(
        !script.replace("<<'EOF'", "").contains('<'),
        "an unfilled placeholder in the guide:\n{script}"
    );
    let out: Output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\ncocoon() {{ \"{}\" \"$@\"; }}\n{script}",
            env!("CARGO_BIN_EXE_cocoon")
        ))
        .current_dir(cwd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the guide failed:\n{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `cocoon up --fake-engine --dir .cocoon` in `cwd` (ephemeral ports), once it is up; the
/// process and its network.json.
fn cocoon_up(cwd: &Path) -> (Killed, serde_json::Value) {
    let any = "127.0.0.1:0";
    let up = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["up", "--fake-engine", "--dir", ".cocoon"])
        .args(["--listen", any, "--chain-listen", any])
        .args(["--proxy-worker-listen", any, "--proxy-client-listen", any])
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let up = Killed(up);
    (up, network_json(&cwd.join(".cocoon")))
}

/// The proxy's `/jsonstats`.
fn proxy_stats(net: &serde_json::Value) -> serde_json::Value {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::get(format!(
            "http://{}/jsonstats",
            net["proxy_http"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    })
}

#[test]
fn the_network_admin_guide_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let image = "cd".repeat(32);
    let new_owner = format!("0:{}", "33".repeat(32));
    let fill = |block: &str| {
        block
            .replace("<sha256 of the weights>", &"ab".repeat(32))
            .replace("<proxy contract>", &format!("0:{}", "22".repeat(32)))
            .replace("<image hash>", &image)
            .replace("<new owner address>", &new_owner)
            .replace("HOST:PORT", "127.0.0.1:9999")
    };
    let blocks = sh_blocks("network-admin.md");
    assert_eq!(blocks.len(), 3, "set up, change, undo");
    let setup = run(&fill(&blocks[0]), tmp.path());
    assert!(
        setup.contains("updated to version 3") && setup.contains("updated to version 4"),
        "{setup}"
    );
    let shown = run("cocoon root show --dir .chain", tmp.path());
    assert!(
        shown.contains("qwen3") && shown.contains("127.0.0.1:9999"),
        "{shown}"
    );
    let changed = run(&fill(&blocks[1]), tmp.path());
    assert!(changed.contains("updated to version 6"), "{changed}");
    let shown = run("cocoon root show --dir .chain", tmp.path());
    assert!(
        shown.contains("prices: 25 nanoTON/token from clients, 20 nanoTON/token to workers")
            && shown.contains(&image),
        "{shown}"
    );
    // A change the registry cannot take is refused before anything is sent.
    let refused = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["root", "set-prices", "--dir", ".chain"])
        .args([
            "--wallet",
            ".chain/wallets/admin.json",
            "--worker-fee-per-token",
            "26",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && e.contains("more than the price 25"),
        "{e}"
    );

    let undone = run(&fill(&blocks[2]), tmp.path());
    assert!(undone.contains("updated to version 10"), "{undone}");
    let shown = run("cocoon root show --dir .chain --json", tmp.path());
    let root: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(root["version"], 10);
    assert_eq!(root["owner"], new_owner);
    assert_eq!(root["proxies"].as_array().unwrap().len(), 0);
    assert!(root["models"].get("ab".repeat(32)).is_none(), "{root}");
    assert!(!shown.contains(&image), "{shown}");
    // The old owner is no longer the owner.
    let again = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["root", "set-prices", "--dir", ".chain"])
        .args([
            "--wallet",
            ".chain/wallets/admin.json",
            "--price-per-token",
            "30",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && e.contains("is not the root's owner"),
        "{e}"
    );
}

/// The app developer's guide against `cocoon up` in the same directory, as a new user runs it:
/// the quote ("100 000 Qwen requests a day"), then status, top-up, withdraw and close with the
/// wallet file `cocoon up` wrote — while the network runs, through its chain API.
#[test]
fn the_app_developer_guide_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_up, net) = cocoon_up(tmp.path());
    paid_request(&net, "fake-benchmark-model");

    let blocks = sh_blocks("app-developer.md");
    let quote = blocks
        .iter()
        .find(|b| b.contains("cocoon quote"))
        .expect("the guide has a quote");
    let q = run(quote, tmp.path());
    assert!(
        q.contains("100000 requests/day of qwen3")
            && q.contains("no worker serves qwen3 now")
            && q.contains("per day      1 TON"),
        "{q}"
    );
    let money = blocks
        .iter()
        .find(|b| b.contains("cocoon client close"))
        .expect("the guide has the money commands");
    let m = run(money, tmp.path());
    assert!(m.contains("topped up 5 TON"), "{m}");
    assert!(m.contains("withdrew 14.5 TON"), "{m}");
    assert!(
        m.contains("granted the final refund")
            && m.contains("Closed")
            && m.contains("balance 0 TON"),
        "{m}"
    );
    // The owner's hold on the client's machine wallet, as the guide writes it.
    let machine = blocks
        .iter()
        .find(|b| b.contains("cocoon wallet machine"))
        .expect("the guide has the machine wallet commands");
    let w = run(machine, tmp.path());
    // The close already took its money back: 0.01 TON stays, and `withdraw` finds that.
    assert!(
        w.contains(": 0.01 TON, seqno")
            && w.contains("not blocked")
            && w.contains("back to")
            && w.contains("blocked: the machine's key can send nothing"),
        "{w}"
    );
    // The proxy operator's status command, as its guide writes it.
    let operator = sh_blocks("proxy-operator.md");
    let status = operator
        .iter()
        .find(|b| b.contains("cocoon proxy status"))
        .expect("the operator guide has the status command");
    let p = run(status, tmp.path());
    assert!(
        p.contains("stake 1 TON") && p.contains("earnings") && p.contains("client money and fees"),
        "{p}"
    );
    // Its payout line runs: it takes the earnings, or says none are beyond what stays.
    assert!(p.contains("took") || p.contains("nothing to take"), "{p}");
    // The chain the running network holds has it (nothing was written to a second copy).
    let status = run(
        "cocoon client status --dir .cocoon/chain --wallet .cocoon/wallets/client.json --state .cocoon/client",
        tmp.path(),
    );
    assert!(
        status.contains("Closed") && status.contains("machine wallet"),
        "{status}"
    );
}

/// The GPU owner's guide: a stranger's worker joins a running `cocoon up` from the guide's
/// commands (its own wallet, funded by the local admin; a config naming the local chain), is
/// chosen for requests, and sees and claims its earnings with the guide's commands.
#[test]
fn the_gpu_owner_guide_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_up, net) = cocoon_up(tmp.path());
    let blocks = sh_blocks("gpu-owner.md");
    let join = blocks
        .iter()
        .find(|b| b.contains("cat > worker.toml"))
        .expect("the guide has the join commands");
    // The fake-engine network serves the FAKE model (Qwen cannot be downloaded here); the
    // dashboard takes any free port.
    let join = join
        .replace(r#"model = "qwen3-0.6b""#, r#"model = "fake""#)
        .replace("127.0.0.1:8845", "127.0.0.1:0");
    let (setup, start): (Vec<&str>, Vec<&str>) = join
        .lines()
        .partition(|l| !l.starts_with("cocoon worker --config"));
    assert_eq!(start.len(), 1, "one command starts the worker");
    let out = run(&setup.join("\n"), tmp.path());
    assert!(out.contains("sent 10 TON"), "{out}");
    let worker = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["worker", "--config", "worker.toml"])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _worker = Killed(worker);
    eventually_blocking("the new worker joins", Duration::from_secs(60), || {
        let connected = proxy_stats(&net)["figures"]["workers_connected"].clone();
        when(connected == 2, connected)
    });
    // The proxy prefers the idle newcomer (no latency record yet); a few requests reach it.
    for _ in 0..4 {
        paid_request(&net, "fake-benchmark-model");
    }
    let earnings = blocks
        .iter()
        .find(|b| b.contains("cocoon worker payout"))
        .expect("the guide has the earnings commands");
    // The worker writes its newest voucher at most once a second.
    eventually_blocking(
        "a voucher reaches the new worker",
        Duration::from_secs(20),
        || {
            let status = run(earnings.lines().next().unwrap(), tmp.path());
            when(status.contains("held voucher"), status)
        },
    );
    let out = run(earnings, tmp.path());
    assert!(
        out.contains("claimed") && out.contains("tokens paid"),
        "{out}"
    );
}
