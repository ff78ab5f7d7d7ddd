//! Our client in a reference COCOON network: our client → the reference router → the reference
//! proxy-runner → the reference router → the reference worker-runner → our FAKE engine over
//! HTTP, on the reference's fake TON (its own fake-ton-config.json) and fake TDX. Passing means
//! our handshake (connect, authorization), `client.runQueryEx` as a packet, and our reading of
//! the reference's answers (head, parts, final info) and of its token counts all match.

use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::fake_ton::FakeTon;
use cocoon_chain::keys::Keypair;
use cocoon_chain::wallet::{Wallet, WalletVersion};
use cocoon_client::{Client, ClientConfig};
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_reference::RefNet;
use cocoon_tee::{FakeTdxProvider, PolicyKind};

/// A reference network whose worker serves our FAKE engine at coefficient 1.0, and our client
/// started on its fake-TON file.
async fn setup(dir: &std::path::Path) -> (RefNet, Arc<Client>) {
    let engine = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = engine.local_addr().unwrap().to_string();
    tokio::spawn(cocoon_engine::server::serve(
        engine,
        Arc::new(FakeEngine::default()),
    ));
    let net = RefNet::start(
        "proxy,router,worker",
        &[
            "--backend",
            &backend,
            "--model",
            FAKE_MODEL,
            "--router-cert",
            "fake_tdx",
            "--worker-coefficient",
            "1000",
            "--pow-difficulty",
            "12",
            "-v",
            "1",
        ],
    );
    let fake = FakeTon::load(&net.fake_ton_config()).unwrap();
    let client = our_client(dir, fake, net.root_address().parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("our client did not connect: {e}\n{}", net.logs()));
    // The reference worker joins the proxy on its own schedule (it retries every ~10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let models = client.models().await.unwrap_or_default();
        if models
            .iter()
            .any(|m| m.id.starts_with(FAKE_MODEL) && !m.workers.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reference worker never joined: {models:?}\n{}",
            net.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (net, client)
}

/// Our client on a fake-TON file, recomputing the proxy's contract under `root` (the root the
/// reference roles were configured with, as theirs do).
async fn our_client(
    dir: &std::path::Path,
    fake: FakeTon,
    root: cocoon_chain::Address,
) -> Result<Arc<Client>, cocoon_client::ClientError> {
    let key = Keypair::generate();
    let wallet = Wallet::new(
        WalletVersion::V4r2,
        key.public_key(),
        cocoon_chain::Network::Testnet,
    );
    let cfg = ClientConfig {
        dir: dir.to_path_buf(),
        root,
        proxies: vec![],
        deposit: 0,
        stake: 0,
        proxy_policy: PolicyKind::FakeTdx,
        max_pow_difficulty: cocoon_net::DEFAULT_MAX_POW_DIFFICULTY,
        max_coefficient: 4000,
        timeout: Duration::from_secs(60),
    };
    Client::start_fake_ton(
        cfg,
        fake,
        (key, wallet),
        Arc::new(FakeTdxProvider::default()),
    )
    .await
}

fn chat(stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 200,
        "stream": stream,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_is_answered_by_a_reference_proxy_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (net, client) = setup(dir.path()).await;

    // Not streamed: the reference worker re-serializes the engine's JSON and counts its usage.
    let q = client
        .query(FAKE_MODEL, "/v1/chat/completions", chat(false), None, None)
        .await
        .unwrap_or_else(|e| panic!("query: {e}\n{}", net.logs()));
    assert_eq!(q.status(), 200);
    let a = q.answer().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("fake chunk"));
    // The FAKE engine's usage: prompt 34 (11 cached), completion 100 (10 reasoning). At
    // coefficient 1.0 and every multiplier 1.0 the reference worker bills the parts' sum.
    assert_eq!(body["usage"]["prompt_tokens"], 34);
    assert_eq!(a.tokens.prompt_tokens_used, 23, "prompt minus cached");
    assert_eq!(a.tokens.cached_tokens_used, 11);
    assert_eq!(
        a.tokens.completion_tokens_used, 90,
        "completion minus reasoning"
    );
    assert_eq!(a.tokens.reasoning_tokens_used, 10);
    assert_eq!(a.tokens.total_tokens_used, 134);
    // And it added the cost at the fake root's price (2 nanotons per token).
    assert_eq!(body["usage"]["total_cost"], 134 * 2);

    // Streamed: SSE frames through, ending with [DONE].
    let q = client
        .query(FAKE_MODEL, "/v1/chat/completions", chat(true), None, None)
        .await
        .unwrap();
    assert_eq!(q.status(), 200);
    let a = q.answer().await.unwrap();
    let text = String::from_utf8(a.body).unwrap();
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_proxys_refusal_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (net, client) = setup(dir.path()).await;
    // Under another root the reference proxy's contract is not the one it names: refused, as
    // a reference client refuses it (so the check in setup really ran, and matched).
    let fake = FakeTon::load(&net.fake_ton_config()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let e = our_client(other.path(), fake, cocoon_chain::Address::new([7; 32]))
        .await
        .err()
        .expect("a proxy contract that the root's code does not make is refused");
    assert!(e.to_string().contains("the root's code makes it"), "{e}");
    // A model nobody serves: the reference proxy refuses it in its older error form.
    let body = serde_json::json!({"model": "no-such-model", "messages": []}).to_string();
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        client.query(
            "no-such-model",
            "/v1/chat/completions",
            body.into_bytes(),
            None,
            None,
        ),
    )
    .await
    .expect("answered, not hung")
    .err()
    .expect("refused");
    // The reference proxy's own words, in its older refusal form.
    assert!(e.to_string().contains("unknown model no-such-model"), "{e}");
    // A request the reference worker's whitelist refuses: its error comes back, named.
    let body = serde_json::json!({"model": FAKE_MODEL, "messages": [], "foo": 1}).to_string();
    let e = client
        .query(
            FAKE_MODEL,
            "/v1/chat/completions",
            body.into_bytes(),
            None,
            None,
        )
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("foo"), "{e}");
}
