//! A client of two proxies: requests take turns over them; one a proxy refuses before any work
//! (here: no worker for the model behind it) is served by the other, billed once; when both
//! refuse, the app gets the refusal.

use std::sync::Arc;
use std::time::Duration;

use cocoon_client::{Client, ClientError};
use cocoon_engine::engine::Engine;
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_localnet::wait::{eventually, when};
use cocoon_localnet::{LocalNet, LocalNetConfig};

fn body(model: &str) -> Vec<u8> {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
        .into_bytes()
}

async fn ask(client: &Client, model: &str) -> Result<u64, ClientError> {
    let q = client
        .query(model, "/v1/chat/completions", body(model), None, None)
        .await?;
    Ok(q.answer().await?.tokens.total_tokens_used)
}

/// Tokens billed to anyone in a proxy's ledger.
fn billed(proxy: &cocoon_proxy::RunningProxy) -> u64 {
    proxy.proxy.totals().clients.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_take_turns_and_a_refusal_goes_to_the_other_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(FakeEngine::default());
    let cfg = LocalNetConfig::fake(dir.path(), vec![engine.clone()]);
    let mut net = LocalNet::start(cfg).await.expect("network starts");
    // A second operator's proxy, with no worker behind it yet (a name in use is refused).
    let e = net
        .add_proxy("proxy")
        .await
        .err()
        .expect("the first proxy's name");
    assert!(
        e.to_string()
            .contains("a participant named \"proxy\" exists already"),
        "{e}"
    );
    let second = net.add_proxy("proxy2").await.unwrap();
    let client = net
        .add_client("client2", vec![second.client_addr, net.proxy.client_addr])
        .await
        .unwrap();

    // Every request is answered; those that start at the empty proxy are refused there (404,
    // nothing billed) and served by the first.
    let mut total = 0;
    for _ in 0..4 {
        total += ask(&client, FAKE_MODEL).await.unwrap();
    }
    let failovers = client
        .metrics
        .errors
        .get_or_create(&cocoon_observe::Kind::of("failover"))
        .get();
    assert_eq!(
        failovers, 2,
        "two of four requests started at the empty proxy"
    );
    // The client counts a request once its stream has ended, just after the answer reached us.
    let ok = || {
        client
            .metrics
            .requests
            .get_or_create(&cocoon_observe::Kind::of("ok"))
            .get()
    };
    eventually("the app saw four answers", Duration::from_secs(10), || {
        when(ok() == 4, ok())
    })
    .await;
    let errors = client
        .metrics
        .requests
        .get_or_create(&cocoon_observe::Kind::of("error"))
        .get();
    assert_eq!(errors, 0, "and no failure");
    assert_eq!(billed(&second), 0);
    // Durable before each answer's end left the proxy: no waiting.
    assert_eq!(billed(&net.proxy), total, "each answer billed once");

    // A worker joins the second proxy: the turns now land on both.
    net.add_worker("worker-b", vec![second.worker_addr], engine)
        .unwrap();
    eventually(
        "the worker joins the second proxy",
        Duration::from_secs(30),
        || when(!second.proxy.workers().is_empty(), ()),
    )
    .await;
    let before = billed(&net.proxy);
    for _ in 0..4 {
        ask(&client, FAKE_MODEL).await.unwrap();
    }
    assert!(
        billed(&second) > 0 && billed(&net.proxy) > before,
        "load did not spread: {} / {}",
        billed(&second),
        billed(&net.proxy) - before
    );

    // Nobody serves this model: each proxy refuses, and the app gets the refusal.
    match ask(&client, "no-such-model").await {
        Err(e) => {
            assert_eq!(e.status(), 404, "{e}");
            assert!(
                e.to_string()
                    .contains("no worker serves model no-such-model"),
                "{e}"
            );
        }
        Ok(t) => panic!("an unknown model was answered ({t} tokens)"),
    }
}
