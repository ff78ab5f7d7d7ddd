//! Our dialer against the reference COCOON: the reference reverse router (PoW, RA-TLS under its
//! `fake_tdx` policy) in front of a reference proxy-runner (fake TON). Passing means our proof of
//! work, our certificate, the reference's certificate, the seqno framing and the
//! `tcp.connect`/`tcp.connected` opening all match, and a TL query is answered.

use std::time::Duration;

use cocoon_net::identity::Identity;
use cocoon_net::rpc::{no_queries, Peer, RpcError};
use cocoon_net::{connect, NetError, DEFAULT_MAX_POW_DIFFICULTY};
use cocoon_reference::RefNet;
use cocoon_tee::policy::{Policy, PolicyKind, TeeKind};
use cocoon_tee::FakeTdxProvider;
use cocoon_wire::client::{ClientConnectedToProxy, ClientParams, ClientRequest};

const T: Duration = Duration::from_secs(30);

fn connect_to_proxy() -> ClientRequest {
    ClientRequest::ConnectToProxy {
        params: ClientParams {
            flags: (),
            client_owner_address: b"UQAuz15H1ZHrZ_psVrAra7HealMIVeFq0wguqlmFno1f3B-m".to_vec(),
            is_test: Some(true),
            min_proto_version: Some(0),
            max_proto_version: Some(1),
        },
        min_config_version: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dialer_is_served_by_a_reference_proxy_behind_its_router() {
    let net = RefNet::start(
        "proxy,router-rev",
        &["--policy", "fake_tdx", "--pow-difficulty", "12"],
    );
    let me = Identity::new(
        &FakeTdxProvider::default(),
        "client",
        Policy::new(PolicyKind::FakeTdx),
    )
    .unwrap();
    let conn = connect(
        net.addr("proxy_client_addr"),
        me.client_tls.clone(),
        &me.verifier,
        DEFAULT_MAX_POW_DIFFICULTY,
        T,
    )
    .await
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", net.logs()));
    // The router's certificate: made by the reference's gen-cert with a fake quote.
    assert_eq!(conn.peer().tee, TeeKind::FakeTdx);
    let peer = Peer::spawn(conn, no_queries(), std::sync::Arc::new(|_: &Peer, _| {}));
    let answer: ClientConnectedToProxy = peer
        .request(&connect_to_proxy(), T)
        .await
        .unwrap_or_else(|e| panic!("client.connectToProxy: {e}\n{}", net.logs()));
    assert_eq!(
        answer.params.is_test,
        Some(true),
        "fake TON is a test network"
    );
    assert!(!answer.client_sc_address.is_empty());

    // A second query on the same link: seqnos keep counting on both sides.
    let again = peer
        .request::<ClientConnectedToProxy>(&connect_to_proxy(), T)
        .await;
    assert!(
        matches!(again, Err(RpcError::Remote { .. })),
        "the reference refuses a second connectToProxy on one link: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_router_refusing_our_certificate_is_a_clear_error() {
    let net = RefNet::start(
        "proxy,router-rev",
        &["--policy", "fake_tdx", "--pow-difficulty", "12"],
    );
    // No quote at all: the router's fake_tdx policy refuses it during the handshake.
    let me = Identity::plain("plain", Policy::new(PolicyKind::FakeTdx)).unwrap();
    let err = connect(
        net.addr("proxy_client_addr"),
        me.client_tls.clone(),
        &me.verifier,
        DEFAULT_MAX_POW_DIFFICULTY,
        T,
    )
    .await
    .expect_err("the router's fake_tdx policy refuses a certificate without a quote");
    assert!(
        matches!(&err, NetError::Opening(m) if m.contains("may have refused our certificate")),
        "a clear refusal, not a hang: {err}"
    );
}
