//! The roles as separate processes from TOML configs, talking to `cocoon chain serve`:
//! a proxy SIGKILLed again and again under concurrent streamed load keeps its ledger intact,
//! bills every answer an app received complete exactly once and nothing twice, and its workers
//! and clients come back by themselves.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cocoon_chain::client::{ChainClient, ToncenterClient};
use cocoon_chain::contracts::ClientData;
use cocoon_chain::{Address, Network};

fn json_field(path: &Path, field: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[field].as_str().unwrap().to_string()
}

/// What the proxy's ledger has durably charged `owner` and credited `worker`, read from a copy
/// (opening the live file would cut the tail the running proxy has not sealed yet). An answer's
/// end leaves the proxy only once its charge is durable, so this needs no waiting.
fn charged(
    dir: &Path,
    key: &cocoon_chain::keys::Keypair,
    owner: &Address,
    worker: &Address,
) -> (u64, u64) {
    let copy = dir.join("ledger-copy.jsonl");
    std::fs::copy(dir.join("proxy/ledger.jsonl"), &copy).unwrap();
    let ledger = cocoon_proxy::Ledger::open(&copy, key.clone()).unwrap();
    let t = ledger.totals();
    (
        t.clients.get(owner).copied().unwrap_or(0),
        t.workers.get(worker).copied().unwrap_or(0),
    )
}

/// The client whose state directory is `state` and whose wallet is `wallet` is known to
/// proxies by its machine wallet (its key in the state directory).
fn machine_wallet_of(state: &Path, wallet: Address) -> Address {
    cocoon_chain::cocoon_wallet::MachineWallet::existing_in(state, wallet)
        .unwrap()
        .address()
}

/// What a load generator saw: answers received complete (`[DONE]`), and the others.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    complete: u64,
    cut: u64,
}

/// Streamed requests from `clients` tasks at once until `stop`: what each request got.
fn load(
    url: String,
    key: &str,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    let key = key.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients {
                let (url, stop, key) = (url.clone(), stop.clone(), key.clone());
                tasks.spawn(async move {
                    let http = reqwest::Client::new();
                    let body = serde_json::json!({"model": "fake-benchmark-model", "stream": true,
                        "messages": [{"role": "user", "content": "hi"}]});
                    let mut seen = Seen::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let got = async {
                            let r = http.post(&url).bearer_auth(&key).json(&body).send().await?;
                            let ok = r.status().is_success();
                            let text = r.bytes().await?;
                            Ok::<_, reqwest::Error>((ok, text))
                        }
                        .await;
                        match got {
                            Ok((true, text)) if text.ends_with(b"data: [DONE]\n\n") => {
                                seen.complete += 1
                            }
                            // A refusal before any work (no proxy, proxy starting) or a cut answer.
                            _ => {
                                seen.cut += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    seen
                });
            }
            let mut all = Seen::default();
            while let Some(s) = tasks.join_next().await {
                let s = s.unwrap();
                all.complete += s.complete;
                all.cut += s.cut;
            }
            all
        })
    })
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

/// The four roles as processes (chain, proxy, worker, client) in `d`, the client's API on
/// `http`.
struct Procs {
    chain: Killed,
    proxy: Killed,
    worker: Killed,
    client: Killed,
    api: String,
    proxy_sc: String,
    http: SocketAddr,
    /// `cocoon proxy --config …`, to restart it.
    proxy_args: Vec<String>,
    /// The proxy's voucher key (to read its ledger).
    key: cocoon_chain::keys::Keypair,
    client_owner: Address,
    worker_owner: Address,
}

/// Starts the network as separate processes; the worker's TOML ends with `worker_models` (its
/// model lines: `model = "fake"` when empty), and the root lists the FAKE model and `also`
/// (identities `name@sha256`).
fn start_processes(d: &Path, worker_models: &str, also: &[&str]) -> Procs {
    let chain_dir = d.join("chain");
    let fake = cocoon_localnet::fake_model_identity();
    let mut init = vec!["chain".to_string(), "init".into(), "--dir".into()];
    init.push(chain_dir.to_str().unwrap().into());
    for identity in std::iter::once(fake.as_str()).chain(also.iter().copied()) {
        let (name, hash) = identity.split_once('@').unwrap();
        init.push("--model".into());
        init.push(format!(
            "{hash}={}",
            if identity == fake { "fake" } else { name }
        ));
    }
    ok(&init);
    let worker_models = match worker_models {
        "" => "model = \"fake\"\n",
        lines => lines,
    };
    let (chain, line) = spawn_until(
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
    // Every process binds port 0 and prints what it got; the proxy's restarts reuse its ports.
    let proxy_toml = |wp: &str, cp: &str| {
        std::fs::write(
            d.join("proxy.toml"),
            format!("{}worker_listen = \"{wp}\"\nclient_listen = \"{cp}\"\npow_difficulty = 4\nsave_state_interval_secs = 1\n", common("proxy")),
        )
        .unwrap()
    };
    proxy_toml("127.0.0.1:0", "127.0.0.1:0");
    let proxy_args =
        ["proxy", "--config", d.join("proxy.toml").to_str().unwrap()].map(str::to_string);
    let (proxy, line) = spawn_until(&proxy_args, "proxy contract");
    let proxy_sc = line.split_whitespace().nth(2).unwrap().to_string();
    let (wp, cp) = (
        addr_after(&line, "workers on"),
        addr_after(&line, "clients on"),
    );
    proxy_toml(&wp.to_string(), &cp.to_string());
    std::fs::write(
        d.join("worker.toml"),
        format!("{}proxies = [\"{wp}\"]\n{worker_models}", common("worker")),
    )
    .unwrap();
    std::fs::write(
        d.join("client.toml"),
        format!(
            "{}proxies = [\"{cp}\"]\nlisten = \"127.0.0.1:0\"\napi_key = \"k-123\"\n",
            common("client")
        ),
    )
    .unwrap();
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
    let (worker, _) = spawn_until(
        &[
            "worker",
            "--config",
            d.join("worker.toml").to_str().unwrap(),
        ],
        "worker",
    );
    let (client, line) = spawn_until(
        &[
            "client",
            "--config",
            d.join("client.toml").to_str().unwrap(),
        ],
        "OpenAI API on",
    );
    let http = addr_after(&line, "OpenAI API on");

    let key = cocoon_chain::keys::Keypair::from_hex(
        &std::fs::read_to_string(d.join("proxy/voucher-key.hex")).unwrap(),
    )
    .unwrap();
    let owner = |name: &str| -> Address {
        json_field(&chain_dir.join(format!("wallets/{name}.json")), "address")
            .parse()
            .unwrap()
    };
    Procs {
        chain,
        proxy,
        worker,
        client,
        api,
        proxy_sc,
        http,
        proxy_args: proxy_args.to_vec(),
        key,
        client_owner: machine_wallet_of(&d.join("client"), owner("client")),
        worker_owner: owner("worker"),
    }
}

#[test]
fn a_sigkilled_proxy_restarts_with_its_ledger_and_nothing_is_charged_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Procs {
        chain: _chain,
        proxy,
        worker: _worker,
        client,
        api,
        proxy_sc,
        http,
        proxy_args,
        key,
        client_owner,
        worker_owner,
    } = start_processes(d, "", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{http}/v1/chat/completions");
    // `n` answered requests, retrying refusals while the network (re)connects.
    let until_ok = |n: usize| {
        for _ in 0..n {
            eventually_blocking("a request is answered", Duration::from_secs(60), || {
                let status = chat(&rt, &url, "k-123");
                when(status == reqwest::StatusCode::OK, status)
            });
        }
    };
    until_ok(3);
    assert_eq!(
        charged(d, &key, &client_owner, &worker_owner),
        (3 * 134, 3 * 134)
    );

    // Eight streams at once while the proxy is SIGKILLed three times at random moments (no
    // chance to flush anything but what was fsync'd) and restarted; the worker and the client
    // reconnect on their own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = load(url.clone(), "k-123", 8, stop.clone());
    let mut proxy = proxy;
    for round in 0..3u64 {
        // A random moment into this run of the proxy.
        std::thread::sleep(random_moment(round));
        proxy.0.kill().unwrap();
        proxy.0.wait().unwrap();
        let (c, w) = {
            let ledger =
                cocoon_proxy::Ledger::open(&d.join("proxy/ledger.jsonl"), key.clone()).unwrap();
            let t = ledger.totals();
            (t.clients[&client_owner], t.workers[&worker_owner])
        };
        assert_eq!(
            c, w,
            "round {round}: the worker is credited what the client is charged"
        );
        proxy = spawn_until(&proxy_args, "proxy contract").0;
    }
    // Let the last restart serve a while, then stop the load.
    until_ok(3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = loader.join().unwrap();
    let (billed, earned) = charged(d, &key, &client_owner, &worker_owner);
    eprintln!("load under three SIGKILLs: {seen:?}; billed {billed} tokens");
    assert!(seen.complete > 0, "the load got nothing through: {seen:?}");
    assert_eq!(
        billed, earned,
        "the worker is credited exactly what the client is charged"
    );
    assert_eq!(billed % 134, 0, "only whole answers are billed: {billed}");
    // Every answer received complete is billed; beyond that, at most the answers a SIGKILL cut
    // after their charge was on disk but before their end reached the app (all their parts had).
    let answers = billed / 134 - 6;
    assert!(
        answers >= seen.complete && answers <= seen.complete + 3 * 8,
        "billed {answers} answers; the app received {} complete, {} not",
        seen.complete,
        seen.cut
    );
    let total = billed;

    // The client commits its newest charge when it stops: the chain shows exactly six requests.
    let mut client = client;
    let _ = Command::new("kill")
        .args(["-INT", &client.0.id().to_string()])
        .status();
    eventually_blocking(
        "the client stops on SIGINT",
        Duration::from_secs(30),
        || when(client.0.try_wait().unwrap().is_some(), ()),
    );
    let chain = ToncenterClient::new(&api, None, Network::Local);
    eventually_blocking(
        "the chain shows every billed token",
        Duration::from_secs(20),
        || {
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
            when(used == total, used)
        },
    );
}

/// A process's peak resident memory (VmHWM), MiB.
fn peak_rss_mib(child: &Killed) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// COCOON's load shape at scale: 1 000 streamed requests at once through client → proxy →
/// worker (one worker, 16 slots, FAKE engine), as separate processes. Every request is answered
/// (the rest wait in the proxy's queue) or refused as queue-full, counted; the money is exact to
/// the token; each role's peak memory is reported and bounded.
#[test]
fn a_thousand_concurrent_streams_complete_with_exact_money_and_bounded_memory() {
    // The test itself holds a thousand sockets (the roles raise their own limit).
    let mut nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    nofile.current = nofile.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, nofile);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = start_processes(d, "model = \"fake\"\nmax_active = 16\n", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/v1/chat/completions", p.http);
    eventually_blocking("the network answers", Duration::from_secs(60), || {
        let status = chat(&rt, &url, "k-123");
        when(status == reqwest::StatusCode::OK, status)
    });
    let (before, _) = charged(d, &p.key, &p.client_owner, &p.worker_owner);

    // A thousand, unless this machine's open-file limit (the test holds one socket per stream,
    // the client one per request and one per proxy stream) cannot take them: then as many as fit.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let streams: usize = 1000
        .min(usize::try_from(limit.saturating_sub(256) / 2).unwrap_or(1000))
        .max(16);
    let started = std::time::Instant::now();
    let outcomes: Vec<(u16, bool, String)> = rt.block_on(async {
        let http = reqwest::Client::new();
        let body = serde_json::json!({"model": "fake-benchmark-model", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..streams {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tasks.spawn(async move {
                match http
                    .post(&url)
                    .bearer_auth("k-123")
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = r.bytes().await.unwrap_or_default();
                        let done = text.ends_with(b"data: [DONE]\n\n");
                        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(200)..])
                            .into_owned();
                        (status, done, tail)
                    }
                    Err(e) => (0, false, e.to_string()),
                }
            });
        }
        let mut all = Vec::new();
        while let Some(o) = tasks.join_next().await {
            all.push(o.unwrap());
        }
        all
    });
    let took = started.elapsed();
    let is_complete = |(s, done, _): &&(u16, bool, String)| *s == 200 && *done;
    let is_queue_full =
        |(s, _, tail): &&(u16, bool, String)| *s == 503 && tail.contains("queue is full");
    let complete = outcomes.iter().filter(is_complete).count() as u64;
    let queue_full = outcomes.iter().filter(is_queue_full).count() as u64;
    let other: Vec<_> = outcomes
        .iter()
        .filter(|o| !is_complete(o) && !is_queue_full(o))
        .take(3)
        .collect();
    assert!(
        other.is_empty(),
        "failures other than queue-full: {other:?}"
    );
    let (billed, earned) = charged(d, &p.key, &p.client_owner, &p.worker_owner);
    assert_eq!(
        billed - before,
        134 * complete,
        "each complete answer billed once, exactly"
    );
    assert_eq!(
        earned, billed,
        "the worker is credited what the client is charged"
    );
    let rss = [
        ("chain", peak_rss_mib(&p.chain)),
        ("proxy", peak_rss_mib(&p.proxy)),
        ("worker", peak_rss_mib(&p.worker)),
        ("client", peak_rss_mib(&p.client)),
    ];
    eprintln!(
        "soak: {streams} streams in {took:?}: {complete} complete, {queue_full} queue-full; \
         billed {} tokens; peak RSS MiB {rss:?}",
        billed - before
    );
    for (role, mib) in rss {
        assert!(mib < 512, "the {role}'s memory peaked at {mib} MiB");
    }
}

/// A moment 0.3 to 1.5 s away, different each round and each run.
fn random_moment(round: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(300 + (nanos / (round + 1) + round * 7919) % 1200)
}

/// `cocoon up` as a whole (chain, proxy, worker, client in one process) SIGKILLed under eight
/// concurrent streams, twice, and started again on the same directory: every answer the app
/// received complete is billed once, and at most the answers a kill cut after their charge was
/// on disk beyond that.
#[test]
fn a_sigkilled_cocoon_up_resumes_and_bills_every_complete_answer_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("net");
    let any = "127.0.0.1:0";
    let up = || {
        let _ = std::fs::remove_file(d.join("network.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(["up", "--fake-engine", "--dir", d.to_str().unwrap()])
            .args(["--listen", any, "--chain-listen", any])
            .args(["--proxy-worker-listen", any, "--proxy-client-listen", any])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = Killed(child);
        let net = network_json(&d);
        let url = format!("{}/chat/completions", net["base_url"].as_str().unwrap());
        (child, url, net["api_key"].as_str().unwrap().to_string())
    };
    let mut seen = Seen::default();
    let kills = 2;
    for round in 0..kills {
        let (mut child, url, key) = up();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loader = load(url, &key, 8, stop.clone());
        std::thread::sleep(random_moment(round));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let s = loader.join().unwrap();
        seen.complete += s.complete;
        seen.cut += s.cut;
    }
    // Started once more: it resumes, and serves.
    let (_child, url, key) = up();
    let rt = tokio::runtime::Runtime::new().unwrap();
    eventually_blocking(
        "the resumed network answers",
        Duration::from_secs(60),
        || {
            let status = chat(&rt, &url, &key);
            when(status == reqwest::StatusCode::OK, status)
        },
    );
    seen.complete += 1;
    let key = cocoon_chain::keys::Keypair::from_hex(
        &std::fs::read_to_string(d.join("proxy/voucher-key.hex")).unwrap(),
    )
    .unwrap();
    let wallet = |name: &str| -> Address {
        json_field(&d.join(format!("wallets/{name}.json")), "address")
            .parse()
            .unwrap()
    };
    let client = machine_wallet_of(&d.join("client"), wallet("client"));
    let (billed, earned) = charged(&d, &key, &client, &wallet("worker0"));
    eprintln!("cocoon up under {kills} SIGKILLs: {seen:?}; billed {billed} tokens");
    assert!(seen.complete > 1, "the load got nothing through: {seen:?}");
    assert_eq!(
        earned, billed,
        "the worker is credited what the client is charged"
    );
    assert_eq!(billed % 134, 0, "only whole answers are billed: {billed}");
    let answers = billed / 134;
    assert!(
        answers >= seen.complete && answers <= seen.complete + kills * 8,
        "billed {answers} answers; the app received {} complete, {} not",
        seen.complete,
        seen.cut
    );
}

/// One worker machine serving two models (here the FAKE engine in process and a second
/// identity behind `cocoon engine serve-fake` over HTTP): each is announced to the proxy
/// separately, requests for each reach its engine, and the owner is paid for both.
#[test]
fn one_worker_serves_several_models_each_announced_separately() {
    let (_engine, line) = spawn_until(
        &["engine", "serve-fake", "--listen", "127.0.0.1:0"],
        "API on",
    );
    let engine_addr = addr_after(&line, "API on");
    let second = format!("second-model@{}", "5e".repeat(32));
    let models = format!(
        "[[models]]\nmodel = \"fake\"\n\n[[models]]\nmodel = \"{second}\"\nengine_url = \"http://{engine_addr}\"\nengine_model = \"fake-benchmark-model\"\nmax_active = 2\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = start_processes(d, &models, &[&second]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/v1/chat/completions", p.http);
    let ask = |model: &str| {
        rt.block_on(async {
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            let r = reqwest::Client::new().post(&url).bearer_auth("k-123").json(&body).send().await;
            match r {
                Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
                Err(e) => (reqwest::StatusCode::BAD_GATEWAY, e.to_string()),
            }
        })
    };
    for model in ["fake-benchmark-model", "second-model"] {
        eventually_blocking(
            &format!("{model} is served"),
            Duration::from_secs(60),
            || {
                let (status, body) = ask(model);
                when(status == reqwest::StatusCode::OK, (status, body))
            },
        );
    }
    // Both answers billed to the client and credited to the one owner.
    let (billed, earned) = charged(d, &p.key, &p.client_owner, &p.worker_owner);
    assert_eq!(billed, 2 * 134);
    assert_eq!(earned, billed);
    // Each model kept its state apart.
    assert!(d.join("worker/fake-benchmark-model").is_dir());
    assert!(d.join("worker/second-model").is_dir());
}
