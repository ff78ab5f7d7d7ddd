//! Our worker behind a reference COCOON proxy, asked by a reference client: the reference
//! client-runner (OpenAI HTTP API) → the reference router → the reference proxy-runner → the
//! reference router (its fake_tdx policy judging our worker's certificate) → our worker → our
//! FAKE engine, on the reference's fake TON. Passing means our worker's handshake
//! (connectToProxy, compareBalance, handshake complete), its reading of `proxy.runQueryEx`
//! packets and its answers (head, parts, token counts) are what a reference proxy expects.
//! The worker announces every feature (our flag bits in `worker.params`), so passing also
//! means a reference proxy accepts a worker that sets them.

use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::fake_ton::FakeTon;
use cocoon_chain::keys::Keypair;
use cocoon_chain::wallet::{Wallet, WalletVersion};
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_reference::RefNet;
use cocoon_tee::{FakeTdxProvider, PolicyKind};
use cocoon_worker::{Worker, WorkerConfig};

/// The FAKE engine, claiming every feature so the worker sets all our flag bits (the reference
/// proxy never sends it a request that uses one).
struct AnnouncesEverything(FakeEngine);

impl cocoon_engine::Engine for AnnouncesEverything {
    fn models(&self) -> Vec<String> {
        self.0.models()
    }

    fn generate(
        &self,
        request: cocoon_engine::EngineRequest,
    ) -> Result<cocoon_engine::Generation, cocoon_engine::EngineError> {
        self.0.generate(request)
    }

    fn features(&self) -> cocoon_engine::Features {
        cocoon_engine::Features::ALL
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_client_is_answered_by_our_worker_behind_a_reference_proxy() {
    let net = RefNet::start(
        "proxy,router,client",
        &[
            "--model",
            FAKE_MODEL,
            "--policy",
            "fake_tdx",
            "--pow-difficulty",
            "12",
            "-v",
            "1",
        ],
    );
    let fake = FakeTon::load(&net.fake_ton_config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let wallet = Wallet::new(
        WalletVersion::V4r2,
        key.public_key(),
        cocoon_chain::Network::Testnet,
    );
    let worker = Worker::new_fake_ton(
        WorkerConfig {
            dir: dir.path().to_path_buf(),
            // The root the reference roles were configured with: our role recomputes the
            // proxy's contract under it, as theirs do.
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
        fake,
        (key, wallet),
        Arc::new(AnnouncesEverything(FakeEngine::default())),
        Arc::new(FakeTdxProvider::default()),
    )
    .unwrap();
    tokio::spawn(worker.clone().run());

    // The reference client lists the model once our worker has joined its proxy.
    net.wait_client_lists(FAKE_MODEL, Duration::from_secs(90))
        .await;
    let api = net.info()["client_url"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    for stream in [false, true] {
        let r = http
            .post(format!("{api}/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": FAKE_MODEL,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 200,
                "stream": stream,
            }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the reference client: {e}\n{}", net.logs()));
        assert_eq!(r.status(), 200, "{}", net.logs());
        let text = r.text().await.unwrap();
        if stream {
            assert!(text.contains("chat.completion.chunk"), "{text}");
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["object"], "chat.completion", "{text}");
            assert!(body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("fake chunk"));
            assert_eq!(body["usage"]["completion_tokens"], 100);
        }
    }
    // What the reference proxy billed for our worker's two answers, by its own statistics:
    // our worker's adjusted counts as given (prompt 34 − 11 cached, 100 − 10 reasoning, at
    // coefficient 1.0), twice.
    let stats: serde_json::Value = http
        .get(format!(
            "http://{}/jsonstats",
            net.info()["proxy_http"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = |k: &str| stats["stats"][k][0].as_f64().unwrap_or(-1.0);
    assert_eq!(total("total_adjusted_tokens_used"), 268.0, "{stats}");
    assert_eq!(total("prompt_adjusted_tokens_used"), 46.0, "{stats}");
    assert_eq!(total("cached_adjusted_tokens_used"), 22.0, "{stats}");
    assert_eq!(total("completion_adjusted_tokens_used"), 180.0, "{stats}");
    assert_eq!(total("reasoning_adjusted_tokens_used"), 20.0, "{stats}");
    // The reference proxy's signed payments were checked as a reference worker checks them
    // (a bad one ends the connection) and the newest kept: never more than it billed.
    let held = worker.held();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held.values()
            .all(|h| h.tokens <= 268 && !h.body_hex.is_empty()),
        "{held:?}"
    );
    worker.kill();
}
