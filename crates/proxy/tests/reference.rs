//! Our proxy in a reference COCOON network: a reference client-runner (dialing it directly,
//! PoW and RA-TLS of its own) and a reference worker-runner (through the reference SOCKS5
//! router, whose fake_tdx policy judges our certificate) serving our FAKE engine, on the
//! reference's fake TON. Passing means our proxy's handshakes with both, the contract
//! addresses it names (the reference roles recompute them from the root's code and refuse
//! others), the payments it signs (a reference worker refuses a proxy whose signature does not
//! check), its relay of the reference worker's answer and its billing of that worker's counts
//! are all what reference peers expect.

use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::fake_ton::FakeTon;
use cocoon_chain::keys::Keypair;
use cocoon_chain::wallet::{Wallet, WalletVersion};
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_proxy::{Proxy, ProxyConfig};
use cocoon_reference::RefNet;
use cocoon_tee::{FakeTdxProvider, PolicyKind};

/// The reference roles `roles` (a client dialing our proxy directly, maybe a worker through the
/// SOCKS5 router, serving our FAKE engine at coefficient 1.0), and our proxy where their
/// fake-TON file says the proxy is.
async fn reference_around_our_proxy(
    roles: &str,
) -> (RefNet, cocoon_proxy::RunningProxy, tempfile::TempDir) {
    // Our proxy's own account of what it refused, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("cocoon_proxy=info")
        .with_test_writer()
        .try_init();
    let engine = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = engine.local_addr().unwrap().to_string();
    tokio::spawn(cocoon_engine::server::serve(
        engine,
        Arc::new(FakeEngine::default()),
    ));
    // Named in their fake-TON file before our proxy binds them.
    let (workers_port, clients_port) = (
        cocoon_reference::port_for_a_later_listener(),
        cocoon_reference::port_for_a_later_listener(),
    );
    let net = RefNet::start(
        roles,
        &[
            "--client-direct",
            // They can only be ready once our proxy runs, which needs their fake-TON file.
            "--no-wait",
            "--proxy-worker-port",
            &workers_port.to_string(),
            "--proxy-client-port",
            &clients_port.to_string(),
            "--backend",
            &backend,
            "--model",
            FAKE_MODEL,
            "--worker-coefficient",
            "1000",
            "--policy",
            "fake_tdx",
            "-v",
            "1",
        ],
    );
    let fake = FakeTon::load(&net.fake_ton_config()).unwrap();
    let root = net.root_address().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let wallet = Wallet::new(
        WalletVersion::V4r2,
        key.public_key(),
        cocoon_chain::Network::Mainnet,
    );
    let running = Proxy::start_fake_ton(
        ProxyConfig {
            dir: dir.path().join("proxy"),
            worker_listen: format!("127.0.0.1:{workers_port}").parse().unwrap(),
            client_listen: format!("127.0.0.1:{clients_port}").parse().unwrap(),
            root,
            worker_policy: PolicyKind::FakeTdx,
            pow_difficulty: 12,
            save_state_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            queue_per_model: cocoon_proxy::DEFAULT_QUEUE_PER_MODEL,
            connections_per_listener: cocoon_proxy::DEFAULT_CONNECTIONS_PER_LISTENER,
            peer_limits: cocoon_net::rpc::Limits::default(),
            http_listen: None,
            payout_threshold: cocoon_proxy::DEFAULT_PAYOUT_THRESHOLD,
        },
        fake,
        (key, wallet),
        Arc::new(FakeTdxProvider::default()),
    )
    .await
    .unwrap();
    (net, running, dir)
}

/// One chat request through the reference client's OpenAI API, and the bills our proxy wrote
/// for it: the worker's adjusted total (34 − 11 prompt, 11 cached, 100 − 10 completion, 10
/// reasoning at coefficient 1.0 = 134), to the client and to the worker, as the reference
/// proxy bills it.
async fn one_request_billed_134(net: &RefNet, running: &cocoon_proxy::RunningProxy) {
    // The reference roles redial every ~10 s; the client lists the model once a worker joined
    // us and it is connected too.
    net.wait_client_lists(FAKE_MODEL, Duration::from_secs(120))
        .await;
    let api = net.info()["client_url"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Listed as a reference proxy lists it: by the base name, without the weights' identity.
    let models: serde_json::Value = http
        .get(format!("{api}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], FAKE_MODEL, "{models}");
    let r = http
        .post(format!("{api}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": FAKE_MODEL,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 200,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", net.logs());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 100);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let totals = running.proxy.totals();
        let clients: Vec<u64> = totals.clients.values().copied().collect();
        let workers: Vec<u64> = totals.workers.values().copied().collect();
        if clients == [134] && workers == [134] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "billed clients {clients:?}, workers {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `run-local` gives the reference client: its `NODE_WALLET_KEY` (base64
/// `gaEatwGNgLGOeFI/TRGfPdJG/K4G8picYHQkDHpLQ9w=`, here in hex) and `OWNER_ADDRESS`.
const REFERENCE_CLIENT_KEY: &str =
    "81a11ab7018d80b18e78523f4d119f3dd246fcae06f2989c6074240c7a4b43dc";
const REFERENCE_OWNER: &str = "UQAuz15H1ZHrZ_psVrAra7HealMIVeFq0wguqlmFno1f3B-m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_client_and_worker_meet_through_our_proxy() {
    let (net, running, _dir) = reference_around_our_proxy("router-socks,worker,client").await;
    one_request_billed_134(&net, &running).await;
    // The reference client is known by its machine wallet (its `CocoonWallet`), the address
    // our `Wallet::cocoon` derives from the same key and owner; and its client contract is the
    // one it reports.
    let machine = Wallet::cocoon(
        Keypair::from_hex(REFERENCE_CLIENT_KEY)
            .unwrap()
            .public_key(),
        REFERENCE_OWNER.parse().unwrap(),
    )
    .address()
    .unwrap();
    let owners: Vec<_> = running.proxy.totals().clients.keys().copied().collect();
    assert_eq!(owners, [machine]);
    let api = net.info()["client_url"].as_str().unwrap().to_string();
    let stats: serde_json::Value = reqwest::get(format!("{api}/jsonstats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["wallet"]["address"]
            .as_str()
            .unwrap()
            .parse::<cocoon_chain::Address>()
            .unwrap(),
        machine,
        "{stats}"
    );
    let fake = FakeTon::load(&net.fake_ton_config()).unwrap();
    let contracts =
        cocoon_chain::reference_contracts::ReferenceContracts::of_fake_ton(&fake).unwrap();
    let expected = contracts
        .client_address(
            &machine,
            &running.proxy.address(),
            &running.proxy.public_key(),
        )
        .unwrap();
    let reported = stats["proxies"][0]["sc_address"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        reported.parse::<cocoon_chain::Address>().ok(),
        Some(expected),
        "{stats}"
    );
    // A request with tools is not served by the reference worker (it announced no tool
    // calling; the reference client-runner refuses the field itself, with a 500): nothing more
    // is billed.
    let api = net.info()["client_url"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": FAKE_MODEL,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        }))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "{}", r.status());
    assert_eq!(running.proxy.totals().charged, 134);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_client_is_served_by_our_proxy_and_our_worker() {
    let (net, running, dir) = reference_around_our_proxy("client").await;
    let key = Keypair::generate();
    let wallet = Wallet::new(
        WalletVersion::V4r2,
        key.public_key(),
        cocoon_chain::Network::Mainnet,
    );
    let worker = cocoon_worker::Worker::new_fake_ton(
        cocoon_worker::WorkerConfig {
            dir: dir.path().join("worker"),
            root: net.root_address().parse().unwrap(),
            proxies: vec![],
            model: FAKE_MODEL.to_string(),
            coefficient: 1000,
            max_active: 16,
            proxy_policy: PolicyKind::FakeTdx,
            max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
            payout_threshold: u128::MAX,
            http_listen: None,
        },
        FakeTon::load(&net.fake_ton_config()).unwrap(),
        (key, wallet),
        Arc::new(FakeEngine::default()),
        Arc::new(FakeTdxProvider::default()),
    )
    .unwrap();
    tokio::spawn(worker.clone().run());
    one_request_billed_134(&net, &running).await;
    worker.kill();
    running.stop();
}
