//! The guides' commands, copied from `docs/*.md` and run as written (placeholders filled in),
//! so the guides cannot rot.

mod common;

use common::Killed;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
        !script.contains('<'),
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

#[test]
fn the_network_admin_guide_runs_as_written() {
    let blocks = sh_blocks("network-admin.md");
    let script = blocks[0]
        .replace("<sha256 of the weights>", &"ab".repeat(32))
        .replace("<proxy contract>", &format!("0:{}", "22".repeat(32)))
        .replace("HOST:PORT", "127.0.0.1:9999");
    let tmp = tempfile::tempdir().unwrap();
    let stdout = run(&script, tmp.path());
    assert!(
        stdout.contains("updated to version 3") && stdout.contains("updated to version 4"),
        "{stdout}"
    );
    let shown = run("cocoon root show --dir .chain", tmp.path());
    assert!(
        shown.contains("qwen3") && shown.contains("127.0.0.1:9999"),
        "{shown}"
    );
}

/// The app developer's guide against `cocoon up` in the same directory, as a new user runs it:
/// the quote ("100 000 Qwen requests a day"), then status, top-up, withdraw and close with the
/// wallet file `cocoon up` wrote — while the network runs, through its chain API.
#[test]
fn the_app_developer_guide_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0";
    let up = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["up", "--fake-engine", "--dir", ".cocoon"])
        .args(["--listen", any, "--chain-listen", any])
        .args(["--proxy-worker-listen", any, "--proxy-client-listen", any])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _up = Killed(up);
    let info = tmp.path().join(".cocoon/network.json");
    let t = Instant::now();
    while !info.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "cocoon up did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    // One paid request, so there is something to settle.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let body = serde_json::json!({"model": "fake-benchmark-model", "messages": [{"role": "user", "content": "hi"}]});
        let r = reqwest::Client::new()
            .post(format!("{}/chat/completions", net["base_url"].as_str().unwrap()))
            .bearer_auth(net["api_key"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });

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
    assert!(m.contains("withdrew 2 TON"), "{m}");
    assert!(
        m.contains("granted the final refund")
            && m.contains("Closed")
            && m.contains("balance 0 TON"),
        "{m}"
    );
    // The chain the running network holds has it (nothing was written to a second copy).
    let status = run(
        "cocoon client status --dir .cocoon/chain --wallet .cocoon/wallets/client.json",
        tmp.path(),
    );
    assert!(status.contains("Closed"), "{status}");
}
