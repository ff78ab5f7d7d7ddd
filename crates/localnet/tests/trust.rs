//! What a client or worker checks before it trusts a proxy, each refusal named: the proxy's
//! contract must be registered in the root and hold the key the proxy announced, the contract
//! it names as ours must be ours, and it must know every token we hold (a proxy whose ledger
//! was rolled back is refused).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon_chain::client::{verify_proxy, Party};
use cocoon_chain::Address;
use cocoon_engine::engine::Engine;
use cocoon_engine::fake::FakeEngine;
use cocoon_localnet::{LocalNet, LocalNetConfig};
use cocoon_worker::{HeldVoucher, Worker, WorkerConfig, WorkerError};

async fn start(dir: &std::path::Path) -> LocalNet {
    let cfg = LocalNetConfig::fake(
        dir,
        vec![Arc::new(FakeEngine::default()) as Arc<dyn Engine>],
    );
    LocalNet::start(cfg).await.expect("network starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proxy_accepts_the_registered_proxy_and_names_each_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path()).await;
    let chain = net.chain_client.as_ref();
    let root = net.info.root;
    let proxy = net.proxy.proxy.address();
    let key = net.proxy.proxy.public_key();
    let owner = net.client.owner();
    let ours = net.client.accounts()[0].client_contract;
    let raw = |a: &Address| a.to_raw().into_bytes();
    let check = |proxy: Vec<u8>, key: [u8; 32], party: Party, claimed: Vec<u8>| async move {
        verify_proxy(chain, &root, &proxy, &key, party, owner, &claimed).await
    };

    let ok = check(raw(&proxy), key, Party::Client, raw(&ours))
        .await
        .unwrap();
    assert_eq!((ok.address, ok.ours), (proxy, ours));

    let e = check(b"not an address".to_vec(), key, Party::Client, raw(&ours))
        .await
        .unwrap_err();
    assert!(e.starts_with("proxy_sc_address:"), "{e}");

    let stranger = Address::new([0x42; 32]);
    let e = check(raw(&stranger), key, Party::Client, raw(&ours))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        format!("proxy contract {stranger} is not registered in the root")
    );

    let e = check(raw(&proxy), [7; 32], Party::Client, raw(&ours))
        .await
        .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "the proxy announced voucher key {} but its contract holds",
            hex::encode([7u8; 32])
        )),
        "{e}"
    );

    // Our client contract is not our worker contract: a proxy naming the wrong one is refused.
    let e = check(raw(&proxy), key, Party::Worker, raw(&ours))
        .await
        .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "the proxy names worker contract {ours}, but ours at it is"
        )),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_proxy_that_knows_fewer_tokens_than_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let net = start(dir.path()).await;
    let proxy = net.proxy.proxy.address();
    // The same owner as the network's worker, whose state says the proxy promised it more
    // than the proxy's ledger now knows: as if the ledger had been rolled back.
    let state = dir.path().join("rolled-back");
    std::fs::create_dir_all(&state).unwrap();
    let known = net
        .proxy
        .proxy
        .worker_total(&net.genesis.wallet("worker0").unwrap().address);
    let held = HashMap::from([(
        proxy,
        HeldVoucher {
            tokens: known + 1000,
            body_hex: String::new(),
            claimed: 0,
        },
    )]);
    cocoon_chain::files::write_json(&state.join("vouchers.json"), &held).unwrap();
    let worker = Worker::new(
        WorkerConfig {
            dir: state,
            root: net.info.root,
            proxies: vec![net.info.proxy_workers],
            model: cocoon_localnet::fake_model_identity(),
            coefficient: 1000,
            max_active: 8,
            proxy_policy: cocoon_tee::PolicyKind::FakeTdx,
            max_pow_difficulty: 28,
            payout_threshold: u128::MAX,
            http_listen: None,
        },
        net.chain_client.clone(),
        net.genesis.wallet("worker0").unwrap().open().unwrap(),
        Arc::new(FakeEngine::default()),
        Arc::new(cocoon_tee::FakeTdxProvider::default()),
        vec![],
    )
    .unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        worker.session(net.info.proxy_workers),
    )
    .await
    .expect("the handshake ends");
    match ended {
        Err(WorkerError::Refused(why)) => assert!(
            why.contains(&format!(
                "proxy {proxy} rolled back: it knows {known} tokens"
            )) && why.contains(&format!("we hold {}", known + 1000)),
            "{why}"
        ),
        other => panic!("a rolled-back proxy was not refused: {other:?}"),
    }
    assert_eq!(
        net.proxy.proxy.workers().len(),
        1,
        "only the honest worker serves"
    );
}
