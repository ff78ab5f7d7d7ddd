//! The whole network in process with the FAKE engine: OpenAI requests through client → proxy →
//! worker, streamed and not; refusals; and the money on chain, to the nanoton.

use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::contracts::{ClientData, ProxyData, WorkerData};
use cocoon_chain::price::{adjusted_tokens, TokenUsage};
use cocoon_chain::Address;
use cocoon_engine::engine::Engine;
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_localnet::wait::{eventually, when};
use cocoon_localnet::{LocalNet, LocalNetConfig};

async fn start(dir: &std::path::Path, workers: usize) -> LocalNet {
    let engines: Vec<Arc<dyn Engine>> = (0..workers)
        .map(|_| Arc::new(FakeEngine::default()) as Arc<dyn Engine>)
        .collect();
    let cfg = LocalNetConfig::fake(dir, engines);
    LocalNet::start(cfg).await.expect("network starts")
}

/// POSTs `body` to the network's chat completions endpoint with API key `key`.
async fn post_chat(net: &LocalNet, key: &str, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", net.info.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn chat(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_flow_and_every_token_is_paid_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 2).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", net.info.base_url);
    let key = &net.info.api_key;

    // Non-streamed.
    let r = post_chat(&net, key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], 34);
    assert_eq!(v["usage"]["completion_tokens"], 100);
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            >= 50 * 100
    );

    // Streamed: many SSE frames, a usage chunk, then [DONE].
    let r = post_chat(&net, key, &chat(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| f.starts_with("data: "))
        .collect();
    assert!(frames.len() >= 50, "{} frames", frames.len());
    assert_eq!(*frames.last().unwrap(), "data: [DONE]");
    let usage: serde_json::Value =
        serde_json::from_str(frames[frames.len() - 2].trim_start_matches("data: ")).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 100);

    // Six more, concurrently.
    let mut handles = Vec::new();
    for i in 0..6 {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            let r = http
                .post(&url)
                .bearer_auth(&key)
                .json(&chat(i % 2 == 0))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }

    // Money: 8 requests of usage 34/11/100/10 at coefficient 1000.
    let usage = TokenUsage {
        prompt: 34,
        cached: 11,
        completion: 100,
        reasoning: 10,
    };
    let root_params = cocoon_chain::contracts::Params::local_default();
    let per_request = adjusted_tokens(&usage, 1000, &root_params);
    assert_eq!(per_request, 134);
    let owner = net.client.owner();
    // An answer's end leaves the proxy only once its charge is durable: every answer the app
    // got is already in the durable totals, no waiting.
    let params = net.proxy.proxy.totals();
    assert_eq!(
        params.clients[&owner],
        8 * per_request,
        "ledger charged the client exactly"
    );
    let earned: u64 = params.workers.values().sum();
    assert_eq!(
        earned,
        8 * per_request,
        "ledger credits the workers exactly"
    );

    // Commit on chain: the client's newest charge, and each worker's payout.
    let accounts = net.client.accounts();
    let client_sc = accounts[0].client_contract;
    let proxy_sc = net.proxy.proxy.address();
    let (earned_before, client_before) = {
        let c = net.chain.lock().unwrap();
        (
            ProxyData::parse(&c.data(&proxy_sc).unwrap())
                .unwrap()
                .earnings,
            ClientData::parse(&c.data(&client_sc).unwrap())
                .unwrap()
                .balance,
        )
    };
    // Vouchers travel as packets right after each answer: wait until both sides hold the newest.
    eventually(
        "both sides hold the newest vouchers",
        Duration::from_secs(10),
        || {
            let client_has = net.client.accounts()[0].voucher_tokens;
            let workers_have: u64 = net
                .workers
                .iter()
                .flat_map(|w| w.held().into_values())
                .map(|h| h.tokens)
                .sum();
            when(
                client_has == 8 * per_request && workers_have == 8 * per_request,
                (client_has, workers_have),
            )
        },
    )
    .await;
    // And on each worker's disk within a second, though no later voucher comes to carry them.
    eventually(
        "the workers' disks hold the newest vouchers",
        Duration::from_secs(5),
        || {
            let on_disk: u64 = (0..net.workers.len())
                .flat_map(|i| {
                    cocoon_worker::held_vouchers(&dir.path().join(format!("worker{i}")))
                        .unwrap_or_default()
                        .into_values()
                })
                .map(|h| h.tokens)
                .sum();
            when(on_disk == 8 * per_request, on_disk)
        },
    )
    .await;
    net.client.commit_all().await.unwrap();
    for w in &net.workers {
        if !w.held().is_empty() {
            w.claim_now(proxy_sc).await.unwrap();
        }
    }
    // The workers' dashboards show what they earned and claimed, at the contract's fee.
    let worker_pages = |field: &str| -> u128 {
        net.workers
            .iter()
            .map(|w| {
                let page = w.jsonstats();
                let ton = page["figures"][field].as_str().unwrap().to_string();
                cocoon_chain::parse_ton(&ton).unwrap()
            })
            .sum()
    };
    let earned_nanotons = 8 * per_request as u128 * root_params.worker_fee_per_token;
    assert_eq!(worker_pages("earned_ton"), earned_nanotons);
    assert_eq!(worker_pages("claimed_ton"), earned_nanotons);
    // The proxy's gauges and dashboard read its money from the chain.
    let money = net.proxy.proxy.refresh_money().await.unwrap();
    let page = net.proxy.proxy.jsonstats();
    assert_eq!(
        page["figures"]["earnings_ton"],
        cocoon_chain::format_ton(money.earnings)
    );
    assert_eq!(
        page["figures"]["clients_money_ton"],
        cocoon_chain::format_ton(money.clients)
    );
    assert!(net.proxy.proxy.metrics.render().contains(&format!(
        "cocoon_proxy_balance_nanotons{{kind=\"earnings\"}} {}",
        money.earnings as f64
    )));
    assert_eq!(
        money.contract_balance,
        money.stake + money.earnings + money.clients
    );
    {
        let c = net.chain.lock().unwrap();
        let client = ClientData::parse(&c.data(&client_sc).unwrap()).unwrap();
        assert_eq!(
            client.tokens_used,
            8 * per_request,
            "client contract charged exactly the ledger"
        );
        assert_eq!(
            client_before - client.balance,
            8 * per_request as u128 * root_params.price_per_token,
            "the client paid to the nanoton"
        );
        // The proxy earns the price less the worker's fee on every token a worker was paid for.
        let earned_after = ProxyData::parse(&c.data(&proxy_sc).unwrap())
            .unwrap()
            .earnings;
        assert_eq!(money.earnings, earned_after);
        assert_eq!(
            earned_after - earned_before,
            8 * per_request as u128
                * (root_params.price_per_token - root_params.worker_fee_per_token),
            "the proxy earned to the nanoton"
        );
        let mut paid = 0;
        for (i, _) in net.workers.iter().enumerate() {
            let owner = net.genesis.wallet(&format!("worker{i}")).unwrap().address;
            let init = cocoon_proxy::proxy_init(
                &cocoon_chain::contracts::RootData::parse(
                    &c.data(&net.genesis.root).unwrap(),
                    &c.account(&net.genesis.root).unwrap().code.unwrap(),
                )
                .unwrap(),
                net.genesis.root,
                net.genesis.wallet("proxy").unwrap().address,
                &net.proxy.proxy.public_key(),
            );
            let sc = init.worker_address(proxy_sc, owner).unwrap();
            if let Ok(d) = c.data(&sc) {
                let d = WorkerData::parse(&d).unwrap();
                paid += d.tokens_paid;
                // Submitted from the worker's machine wallet, as a reference worker does; the
                // earnings went to the owner.
                let machine = net.workers[i].machine_wallet_address();
                assert!(
                    c.transactions(&sc, 8)
                        .iter()
                        .any(|t| t.from == Some(machine)
                            && t.op == Some(cocoon_chain::messages::op::WORKER_PAYOUT_SIGNED)),
                    "worker {i}'s claims come from its machine wallet"
                );
            }
        }
        assert_eq!(
            paid,
            8 * per_request,
            "workers paid on chain exactly what they earned"
        );
    }

    // The ledger is committed on chain from the proxy's machine wallet (COCOON's own wallet
    // code), owned by the proxy's owner and kept funded by the owner's wallet.
    cocoon_proxy::save_state_now(&net.proxy.proxy)
        .await
        .unwrap();
    let machine = net.proxy.proxy.machine_wallet_address();
    let account = {
        let c = net.chain.lock().unwrap();
        let txs: Vec<cocoon_chain::client::Tx> = c
            .transactions(&proxy_sc, 16)
            .iter()
            .map(cocoon_chain::client::Tx::from)
            .collect();
        let (seqno, _) = cocoon_chain::client::saved_state_in(&txs, &machine)
            .expect("a save_state from the machine wallet");
        assert_eq!(u64::from(seqno), net.proxy.proxy.totals().saved_seqno);
        let operator = net.genesis.wallet("proxy").unwrap().address;
        assert_eq!(cocoon_chain::client::saved_state_in(&txs, &operator), None);
        let account = c.account(&machine).unwrap();
        assert_eq!(
            account.code.as_ref().unwrap().repr_hash(),
            cocoon_chain::cocoon_wallet::code().repr_hash()
        );
        let state =
            cocoon_chain::cocoon_wallet::CocoonWalletState::parse(account.data.as_ref().unwrap())
                .unwrap();
        assert_eq!(state.owner, operator);
        assert!(state.seqno >= 1 && !state.blocked, "{state:?}");
        assert!(account.balance >= cocoon_chain::cocoon_wallet::MIN_BALANCE);
        account
    };
    let money = net.proxy.proxy.refresh_money().await.unwrap();
    assert_eq!(money.machine_wallet_balance, account.balance);
    assert_eq!(
        net.proxy.proxy.jsonstats()["figures"]["machine_wallet_balance_ton"],
        cocoon_chain::format_ton(account.balance)
    );

    // The earnings, asked for from the machine wallet as a reference proxy asks (at 10 TON; here
    // now): exactly they reach the operator's wallet, and nothing is left to ask for.
    let earned = money.earnings;
    assert!(earned > 0);
    assert_eq!(
        net.proxy.proxy.pay_out_earnings().await.unwrap(),
        Some(earned)
    );
    let operator = net.genesis.wallet("proxy").unwrap().address;
    let paid = net
        .chain
        .lock()
        .unwrap()
        .transactions(&operator, 4)
        .iter()
        .find(|t| t.from == Some(proxy_sc))
        .map(|t| t.value);
    assert_eq!(
        paid,
        Some(earned),
        "the newest message from the proxy contract"
    );
    assert_eq!(net.proxy.proxy.refresh_money().await.unwrap().earnings, 0);
    assert_eq!(net.proxy.proxy.pay_out_earnings().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let http = reqwest::Client::new();
    let key = &net.info.api_key;
    let r = post_chat(&net, "wrong", &chat(false)).await;
    assert_eq!(r.status(), 401);
    // A chat request with `field` set to `value`: the status and the body's text.
    let with = |field: &'static str, value: serde_json::Value| {
        let mut body = chat(false);
        body[field] = value;
        let net = &net;
        async move {
            let r = post_chat(net, key, &body).await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = with("model", "no-such-model".into()).await;
    assert_eq!(status, 404);
    assert!(
        text.contains("no worker serves model no-such-model"),
        "{text}"
    );
    let (status, text) = with("max_coefficient", 500.into()).await;
    assert_eq!(status, 402);
    assert!(
        text.contains("cheapest worker's coefficient 1000"),
        "{text}"
    );
    let (status, _) = with("frequency_penalty_x", 1.into()).await;
    assert_eq!(status, 400, "the worker's whitelist refuses unknown fields");
    let r = http
        .get(format!("{}/models", net.info.base_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["id"], FAKE_MODEL);
    assert_eq!(v["data"][0]["workers"][0]["coefficient"], 1000);
}

async fn start_slow(dir: &std::path::Path) -> LocalNet {
    // 50 chunks, 200 ms apart: ten seconds per answer, time enough to walk away mid-stream
    // and to tell a stopped generation from a finished one on a slow machine.
    let slow = FakeEngine {
        chunk_delay: Duration::from_millis(200),
    };
    let cfg = LocalNetConfig::fake(dir, vec![Arc::new(slow) as Arc<dyn Engine>]);
    LocalNet::start(cfg).await.expect("network starts")
}

/// Waits until no request runs at the worker (the generation stopped).
async fn wait_idle(net: &LocalNet) {
    eventually(
        "the request stops running at the worker",
        Duration::from_secs(5),
        || {
            let active: u32 = net.proxy.proxy.workers().iter().map(|w| w.active).sum();
            when(active == 0, active)
        },
    )
    .await;
}

/// What the proxy has durably charged this network's client, once it charged anything.
async fn charged_something(net: &LocalNet) -> u64 {
    eventually(
        "the proxy records a charge",
        Duration::from_secs(10),
        || match net.proxy.proxy.totals().clients.get(&net.client.owner()) {
            Some(&n) if n > 0 => Ok(n),
            other => Err(other.copied()),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_the_generation_and_pays_only_what_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let net = start_slow(dir.path()).await;
    let mut r = post_chat(&net, &net.info.api_key, &chat(true)).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(r); // the app hangs up after the first part
             // The answer takes 10 s (50 parts 200 ms apart); the worker must stop within 5.
    wait_idle(&net).await;
    // The parts delivered before the hang-up are billed (at least the first), not the answer.
    let charged = charged_something(&net).await;
    assert!(
        charged < 20,
        "charged {charged} tokens for a few delivered parts (a full answer is 134)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_mid_stream_gives_a_clean_error_and_bills_only_delivered_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let net = start_slow(dir.path()).await;
    let mut r = post_chat(&net, &net.info.api_key, &chat(true)).await;
    assert_eq!(r.status(), 200);
    let mut body = Vec::new();
    body.extend_from_slice(&r.chunk().await.unwrap().unwrap());
    net.workers[0].kill();
    while let Some(c) = r.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("\"error\""),
        "the stream ends with an error frame: {}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        !text.contains("[DONE]"),
        "a cut answer is not presented as complete"
    );
    let delivered = text.matches("chat.completion.chunk").count() as u64;
    let charged = charged_something(&net).await;
    assert!(
        charged <= delivered,
        "charged {charged} tokens, delivered {delivered} parts"
    );
    // Non-streamed requests now fail cleanly too: no worker left.
    let r = post_chat(&net, &net.info.api_key, &chat(false)).await;
    assert!(r.status() == 404 || r.status() == 503, "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_network_resumes_with_the_same_balances() {
    let dir = tempfile::tempdir().unwrap();
    let (client_owner, charged) = {
        let mut net = start(dir.path(), 1).await;
        let r = post_chat(&net, &net.info.api_key, &chat(false)).await;
        assert_eq!(r.status(), 200);
        let owner = net.client.owner();
        // Durable before the answer's end left the proxy.
        let charged = net.proxy.proxy.totals().clients[&owner];
        net.stop();
        (owner, charged)
    };
    let net = start(dir.path(), 1).await;
    assert_eq!(net.client.owner(), client_owner, "same wallets");
    let worker_owner = net.genesis.wallet("worker0").unwrap().address;
    assert_eq!(
        net.proxy.proxy.reputation()[&worker_owner].served,
        1,
        "the worker's record survived the restart"
    );
    assert_eq!(
        net.proxy.proxy.totals().clients[&client_owner],
        charged,
        "the ledger resumed"
    );
    let r = post_chat(&net, &net.info.api_key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        net.proxy.proxy.totals().clients[&client_owner],
        2 * charged,
        "continues, nothing charged twice"
    );
}

/// An attested connection to the proxy's client port as any stranger can open one, and the
/// packets it receives.
async fn stranger(
    net: &LocalNet,
) -> (
    cocoon_net::rpc::Peer,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    use cocoon_net::rpc::Peer;
    let identity = cocoon_net::identity::Identity::new(
        &cocoon_tee::FakeTdxProvider::default(),
        "stranger",
        cocoon_tee::Policy::new(cocoon_tee::PolicyKind::Any),
    )
    .unwrap();
    let conn = cocoon_net::connect(
        net.info.proxy_clients,
        identity.client_tls.clone(),
        &identity.verifier,
        28,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (answers_tx, answers) = tokio::sync::mpsc::unbounded_channel();
    let peer = Peer::spawn(
        conn,
        cocoon_net::rpc::no_queries(),
        Arc::new(move |_: &Peer, data: Vec<u8>| {
            let _ = answers_tx.send(data);
        }),
    );
    (peer, answers)
}

/// `client.params` for `owner`, on protocol 1–2, in test mode `is_test`.
fn client_params(owner: Address, is_test: bool) -> cocoon_wire::client::ClientParams {
    cocoon_wire::client::ClientParams {
        flags: (),
        client_owner_address: owner.to_raw().into_bytes(),
        is_test: Some(is_test),
        min_proto_version: Some(1),
        max_proto_version: Some(2),
    }
}

/// As every COCOON role does, the proxy refuses a client whose test mode is not its own (a
/// local chain is a test network): the handshake fails, naming both sides' modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_another_test_mode_is_refused_at_the_handshake() {
    use cocoon_wire::client::ClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let (peer, _answers) = stranger(&net).await;
    let refused = peer
        .query(
            cocoon_wire::encode(&ClientRequest::ConnectToProxy {
                params: client_params(net.client.owner(), false),
                min_config_version: 0,
            }),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("test mode mismatch"), "{refused}");
    assert!(refused.contains("is_test false"), "{refused}");
    // the same stranger in the network's own mode gets through the handshake
    let (peer, _answers) = stranger(&net).await;
    peer.query(
        cocoon_wire::encode(&ClientRequest::ConnectToProxy {
            params: client_params(net.client.owner(), true),
            min_config_version: 0,
        }),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

/// A stranger who names another client's wallet cannot spend its balance: without the secret
/// whose hash the victim's contract holds, authorization fails and queries are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_balance_cannot_be_used_without_its_secret() {
    use cocoon_wire::client::{AuthorizationWithProxy, ClientRequest};
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let (peer, mut answers) = stranger(&net).await;
    let t = Duration::from_secs(10);
    let victim = net.client.owner();
    let params = client_params(victim, true);
    peer.query(
        cocoon_wire::encode(&ClientRequest::ConnectToProxy {
            params,
            min_config_version: 0,
        }),
        t,
    )
    .await
    .unwrap();
    let answer = peer
        .query(
            cocoon_wire::encode(&ClientRequest::AuthorizeWithProxyShort { data: vec![7; 32] }),
            t,
        )
        .await
        .unwrap();
    match cocoon_wire::decode::<AuthorizationWithProxy>(&answer).unwrap() {
        AuthorizationWithProxy::Failed { error_code, error } => {
            assert_eq!(error_code, 401);
            assert!(String::from_utf8_lossy(&error).contains("secret does not match"));
        }
        other => panic!("a wrong secret was accepted: {other:?}"),
    }
    // As COCOON sends it: a one-way packet, answered by a packet naming the request.
    let run = ClientRequest::RunQueryEx {
        model_name: FAKE_MODEL.as_bytes().to_vec(),
        query: vec![],
        max_coefficient: 1000,
        max_tokens: 10,
        timeout: cocoon_wire::common::Double(10.0),
        request_id: [1; 32],
        min_config_version: 0,
        flags: (),
        enable_debug: Some(false),
    };
    peer.send(cocoon_wire::encode(&run)).unwrap();
    let answer = tokio::time::timeout(t, answers.recv())
        .await
        .unwrap()
        .unwrap();
    match cocoon_wire::answer::decode_client(&answer) {
        Some((id, cocoon_wire::answer::AnswerMessage::Error { code, end, .. })) => {
            assert_eq!(id, [1; 32]);
            assert_eq!(code, 401);
            assert_eq!(end.0.total_tokens_used, 0);
        }
        other => panic!("an unauthorized query was not refused: {other:?}"),
    }
    assert!(
        !net.proxy.proxy.totals().clients.contains_key(&victim),
        "nothing was charged to the victim"
    );
}

/// A worker whose image is not in the root is refused at the handshake and never chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_an_unlisted_image_is_never_selected() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let measurements = cocoon_tee::quote::Measurements {
        mr_td: [0x66; 48],
        ..Default::default()
    };
    let rogue = cocoon_worker::Worker::new(
        cocoon_worker::WorkerConfig {
            dir: dir.path().join("rogue"),
            root: net.info.root,
            proxies: vec![net.info.proxy_workers],
            model: cocoon_localnet::fake_model_identity(),
            coefficient: 1, // cheaper than anyone: it would be chosen first if admitted
            max_active: 8,
            proxy_policy: cocoon_tee::PolicyKind::FakeTdx,
            max_pow_difficulty: 28,
            payout_threshold: u128::MAX,
            http_listen: None,
        },
        net.chain_client.clone(),
        net.genesis.wallet("worker0").unwrap().open().unwrap(),
        Arc::new(FakeEngine::default()),
        Arc::new(cocoon_tee::FakeTdxProvider { measurements }),
        vec![],
    )
    .unwrap();
    let task = tokio::spawn(rogue.clone().run());
    eventually(
        "the rogue worker is refused",
        Duration::from_secs(10),
        || when(net.proxy.proxy.metrics.attestation_failures.get() > 0, ()),
    )
    .await;
    assert_eq!(
        net.proxy.proxy.workers().len(),
        1,
        "only the listed worker is in the pool"
    );
    assert!(net
        .proxy
        .proxy
        .workers()
        .iter()
        .all(|w| w.coefficient == 1000));
    task.abort();
}

/// A worker changes its price and switches itself off and on at run time; the proxy follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_changes_its_coefficient_and_availability_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let ask = || async {
        post_chat(&net, &net.info.api_key, &chat(false))
            .await
            .status()
    };
    let worker = || net.proxy.proxy.workers()[0].clone();
    let ten = Duration::from_secs(10);
    net.workers[0].set_coefficient(1500);
    eventually("the proxy sees the new coefficient", ten, || {
        when(worker().coefficient == 1500, worker().coefficient)
    })
    .await;
    net.workers[0].set_enabled(false);
    eventually("the proxy sees the worker off", ten, || {
        when(!worker().enabled, ())
    })
    .await;
    assert_eq!(
        ask().await,
        503,
        "a disabled worker is not chosen, nor waited for"
    );
    net.workers[0].set_enabled(true);
    eventually("the proxy sees the worker on", ten, || {
        when(worker().enabled, ())
    })
    .await;
    assert_eq!(ask().await, 200);
}

/// One worker with two slots and twelve requests at once: the ten that find it busy wait in the
/// proxy's queue and are served in turn; none is refused, and each is billed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_workers_slots_wait_in_the_queue_and_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalNetConfig::fake(
        dir.path(),
        vec![Arc::new(FakeEngine {
            chunk_delay: Duration::from_millis(5),
        }) as Arc<dyn Engine>],
    );
    cfg.max_active = 2;
    let net = LocalNet::start(cfg).await.expect("network starts");
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let url = format!("{}/chat/completions", net.info.base_url);
        let key = net.info.api_key.clone();
        asks.spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&chat(i % 2 == 0))
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        });
    }
    while let Some(done) = asks.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let waits = net.proxy.proxy.queue_waits();
    assert!(waits.waited >= 1, "nobody waited: {waits:?}");
    let charged = net.proxy.proxy.totals().clients[&net.client.owner()];
    assert_eq!(charged, 12 * 134, "each answer billed once");
    let metrics = net.proxy.proxy.metrics.render();
    assert!(metrics.contains("queue_wait_seconds_count"), "{metrics}");
    // Series per role, never per party: a public proxy's clients are unbounded.
    assert!(
        !metrics.contains(&net.client.owner().to_raw()),
        "a client address is a metric label: {metrics}"
    );
    eventually("vouchers show per role", Duration::from_secs(10), || {
        let m = net.proxy.proxy.metrics.render();
        when(m.contains("voucher_tokens{kind=\"client\"} 1608"), m)
    })
    .await;
}

/// An app written for OpenAI sends fields about itself (`user`, `metadata`, `store`, …): the
/// network answers them as OpenAI does, through client, proxy and worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_openai_fields_pass_through_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let mut body = chat(true);
    for (k, v) in [
        ("user", serde_json::json!("end-user-42")),
        ("metadata", serde_json::json!({"app": "demo"})),
        ("store", serde_json::json!(false)),
        ("service_tier", serde_json::json!("auto")),
        ("parallel_tool_calls", serde_json::json!(true)),
    ] {
        body[k] = v;
    }
    let r = post_chat(&net, &net.info.api_key, &body).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    body["n"] = serde_json::json!(3);
    let r = post_chat(&net, &net.info.api_key, &body).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("field `n` must be 1"), "{text}");
}

/// As COCOON's proxy does, ours offers a client it does not know yet (no contract with a
/// secret hash) the long way: the client registers the proxy's nonce at its contract from its
/// wallet, the proxy sees it there and lets it in. Once its contract holds the hash of its
/// secret, the proxy offers the short way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_authorizes_the_long_way_and_later_the_short_way() {
    use cocoon_chain::messages::client::registered_nonce;
    use cocoon_wire::client::{ClientConnectedToProxy, ClientRequest, ProxyConnectionAuth};
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let proxy_sc = net.proxy.proxy.address();
    let p = cocoon_chain::client::read_proxy(net.chain_client.as_ref(), &proxy_sc)
        .await
        .unwrap();
    let owner = net.client.owner();
    let client_sc = p.init().client_address(proxy_sc, owner).unwrap();
    let registrations = net
        .chain_client
        .transactions(&client_sc, 64)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.from == Some(owner) && t.body.as_ref().and_then(registered_nonce).is_some())
        .count();
    assert_eq!(
        registrations, 1,
        "the first connection registered its nonce once"
    );
    // The client is in: a request is answered and paid.
    let r = post_chat(&net, &net.info.api_key, &chat(false)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Now its contract holds the hash of its secret: the short way is offered.
    let secret = std::fs::read_to_string(dir.path().join("client/secret.hex")).unwrap();
    let hash: [u8; 32] = sha2::Sha256::digest(hex::decode(secret.trim()).unwrap()).into();
    // What the proxy offers a stranger's connection naming `who`.
    let offered = |who: Address| {
        let net = &net;
        async move {
            let (peer, _answers) = stranger(net).await;
            let connect = ClientRequest::ConnectToProxy {
                params: client_params(who, true),
                min_config_version: 0,
            };
            let answer = peer
                .query(cocoon_wire::encode(&connect), Duration::from_secs(10))
                .await
                .unwrap();
            cocoon_wire::decode::<ClientConnectedToProxy>(&answer).unwrap()
        }
    };
    let offered_owner = offered(owner).await;
    assert!(
        matches!(offered_owner.auth, ProxyConnectionAuth::Short { secret_hash, .. } if secret_hash == hash),
        "{:?}",
        offered_owner.auth
    );
    // A wallet without a contract at this proxy is offered the long way.
    let nobody: Address = format!("0:{}", "ab".repeat(32)).parse().unwrap();
    let offered = offered(nobody).await;
    assert!(
        matches!(offered.auth, ProxyConnectionAuth::Long { .. }),
        "{:?}",
        offered.auth
    );
}

/// The operator blocks the proxy's machine wallet (a comment `b` from the owner's wallet, as
/// COCOON's wallet takes it): the proxy's `save_state` fails with an error that says so and
/// records nothing; unblocked (`u`), the same commit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_machine_wallet_is_named_and_unblocking_resumes() {
    use cocoon_chain::cocoon_wallet::{command, Command};
    use cocoon_chain::wallet::OutMessage;
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let r = post_chat(&net, &net.info.api_key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    // The proxy deployed its machine wallet at start: the owner can command it at once.
    let machine = net.proxy.proxy.machine_wallet_address();
    let owner_says = |c: Command| {
        let (keys, wallet) = net.genesis.wallet("proxy").unwrap().open().unwrap();
        let msg = OutMessage::transfer(
            machine,
            cocoon_chain::messages::MIN_FEE,
            Some(command(c).unwrap()),
        );
        let t = net
            .chain
            .lock()
            .unwrap()
            .wallet_send(&wallet, &keys, &[msg])
            .unwrap();
        assert_eq!(t.exit_code_at(&machine), Some(0), "{t:#?}");
    };
    let saved = || net.proxy.proxy.totals().saved_seqno;
    let before = saved();
    owner_says(Command::Block);
    let e = cocoon_proxy::save_state_now(&net.proxy.proxy)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the owner blocked this wallet's machine key"),
        "{e}"
    );
    assert_eq!(saved(), before, "nothing recorded as committed");
    owner_says(Command::Unblock);
    cocoon_proxy::save_state_now(&net.proxy.proxy)
        .await
        .unwrap();
    assert_eq!(saved(), before + 1);
}

/// One answered request from the network's client, once its charge is on the proxy's disk;
/// the client's owner (its machine wallet).
async fn one_charged_request(net: &LocalNet) -> Address {
    let r = post_chat(net, &net.info.api_key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    let owner = net.client.owner();
    let proxy = net.proxy.proxy.clone();
    eventually(
        "the charge is on the proxy's disk",
        Duration::from_secs(10),
        || {
            let t = proxy.client_total(&owner);
            when(t > 0, t)
        },
    )
    .await;
    owner
}

/// A client asks for its refund on chain with charges it never committed: during the close
/// delay the proxy submits the newest charge itself, from its machine wallet (as a reference
/// proxy does), so the stake that comes back is what the client does not owe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_client_is_charged_by_the_proxy_before_its_stake_comes_back() {
    use cocoon_chain::wallet::OutMessage;
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let owner = one_charged_request(&net).await;
    let proxy = net.proxy.proxy.clone();
    let tokens = proxy.client_total(&owner);
    let client_sc = net.client.accounts()[0].client_contract;
    let data = || ClientData::parse(&net.chain.lock().unwrap().data(&client_sc).unwrap()).unwrap();
    let before = data();
    assert!(before.tokens_used < tokens, "nothing of it committed yet");

    // The client's machine wallet asks for the refund (COCOON's owner_client_request_refund).
    let machine = cocoon_chain::cocoon_wallet::MachineWallet::existing_in(
        &dir.path().join("client"),
        net.client.wallet_address(),
    )
    .unwrap();
    let (keys, wallet) = net.genesis.wallet("client").unwrap().open().unwrap();
    let body =
        cocoon_chain::messages::client::request_refund(0, &net.client.wallet_address()).unwrap();
    let msg = OutMessage::transfer(client_sc, cocoon_chain::messages::MIN_FEE, Some(body));
    machine
        .send(net.chain_client.as_ref(), (&wallet, &keys), &[msg])
        .await
        .unwrap();
    let closing = data();
    assert_eq!(
        closing.state,
        cocoon_chain::contracts::ContractState::Closing
    );

    assert_eq!(proxy.charge_clients().await.unwrap(), [client_sc]);
    let after = data();
    assert_eq!(after.tokens_used, tokens);
    assert_eq!(
        closing.balance - after.balance,
        u128::from(tokens - before.tokens_used) * after.init.price_per_token,
        "charged exactly the uncommitted tokens"
    );
    // Nothing more is owed: nothing more is sent.
    assert_eq!(proxy.charge_clients().await.unwrap(), Vec::<Address>::new());
}

/// An open client owing less than 1 TON (a reference proxy's `min_client_charge_sum`) is left
/// to commit its own charges: the proxy sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_client_owing_under_a_ton_commits_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path(), 1).await;
    let owner = one_charged_request(&net).await;
    let proxy = net.proxy.proxy.clone();
    let client_sc = net.client.accounts()[0].client_contract;
    let used = || {
        ClientData::parse(&net.chain.lock().unwrap().data(&client_sc).unwrap())
            .unwrap()
            .tokens_used
    };
    let before = used();
    assert!(before < proxy.client_total(&owner));
    assert_eq!(proxy.charge_clients().await.unwrap(), Vec::<Address>::new());
    assert_eq!(used(), before);
}
