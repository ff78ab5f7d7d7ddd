//! PoW + RA-TLS + frames end to end on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use cocoon_net::{accept, connect, NetError};
use cocoon_tee::cert::{generate_new, CertOptions};
use cocoon_tee::policy::{Policy, PolicyKind, TeeKind, Verifier};
use cocoon_tee::{tls, AttestError, FakeTdxProvider};
use cocoon_wire::pow::PowError;
use cocoon_wire::TcpPacket;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(20);

fn setup(
    kind: PolicyKind,
) -> (
    Arc<Verifier>,
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
) {
    let now = cocoon_tee::unix_now();
    let (server_cert, _) = generate_new(
        &FakeTdxProvider::default(),
        &CertOptions::new("server", now),
    )
    .unwrap();
    let (client_cert, _) = generate_new(
        &FakeTdxProvider::default(),
        &CertOptions::new("client", now),
    )
    .unwrap();
    let v = Arc::new(Verifier::new(Policy::new(kind)));
    let s = Arc::new(tls::server_config(&server_cert, v.clone()).unwrap());
    let c = Arc::new(tls::client_config(&client_cert, v.clone()).unwrap());
    (v, s, c)
}

#[tokio::test]
async fn ping_pong_over_an_attested_connection() {
    let (v, s, c) = setup(PolicyKind::FakeTdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sv = v.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = accept(tcp, s, &sv, 8, T).await.unwrap();
        assert!(
            conn.peer().claims.is_key_only(),
            "COCOON's claims: the bare key"
        );
        match conn.recv().await.unwrap() {
            Some(TcpPacket::Ping { id }) => conn.send(&TcpPacket::Pong { id }).await.unwrap(),
            other => panic!("expected ping, got {other:?}"),
        }
        assert!(
            conn.recv().await.unwrap().is_none(),
            "client closes cleanly"
        );
    });
    let mut conn = connect(addr, c, &v, 28, T).await.unwrap();
    assert_eq!(conn.peer().tee, TeeKind::FakeTdx);
    assert_eq!(conn.peer().claims.public_key, conn.peer().public_key);
    conn.send(&TcpPacket::Ping { id: 42 }).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(TcpPacket::Pong { id: 42 }));
    conn.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn client_refuses_excessive_proof_of_work() {
    let (v, s, c) = setup(PolicyKind::FakeTdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sv = v.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, s, &sv, 40, T).await.map(|_| ())
    });
    let err = connect(addr, c, &v, 28, T).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Pow(PowError::TooDifficult {
                asked: 40,
                limit: 28
            })
        ),
        "{err}"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn tdx_client_refuses_a_fake_server_before_sending_anything() {
    let (_, s, _) = setup(PolicyKind::FakeTdx);
    let (tdx, _, c) = setup(PolicyKind::Tdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let v = Verifier::new(Policy::new(PolicyKind::Any));
        accept(tcp, s, &v, 4, T).await.map(|_| ())
    });
    let err = connect(addr, c, &tdx, 28, T).await.unwrap_err();
    assert!(
        matches!(err, NetError::Attestation(AttestError::FakeQuoteRejected)),
        "{err}"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let (v, s, _) = setup(PolicyKind::Any);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let err = accept(tcp, s, &v, 8, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Timeout(_)), "{err}");
}

/// A listener/dialer pair over 127.0.0.1 with the given keepalive timers on each side.
async fn linked(
    listener_keepalive: cocoon_net::Keepalive,
    dialer_keepalive: cocoon_net::Keepalive,
) -> (cocoon_net::rpc::Peer, cocoon_net::rpc::Peer) {
    use cocoon_net::rpc::{no_queries, Peer};
    let (v, s, c) = setup(PolicyKind::FakeTdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sv = v.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, s, &sv, 4, T).await.unwrap()
    });
    let dialer = connect(addr, c, &v, 28, T).await.unwrap();
    let listener_side = server.await.unwrap();
    let echo: cocoon_net::rpc::QueryHandler =
        Arc::new(|_: Peer, data: Vec<u8>| -> cocoon_net::rpc::AnswerFuture {
            Box::pin(async move { Ok(data) })
        });
    let ignore: cocoon_net::rpc::PacketHandler = Arc::new(|_: &Peer, _| {});
    let l = Peer::spawn(
        listener_side.with_keepalive(listener_keepalive),
        echo,
        ignore.clone(),
    );
    let d = Peer::spawn(
        dialer.with_keepalive(dialer_keepalive),
        no_queries(),
        ignore,
    );
    (l, d)
}

#[tokio::test]
async fn the_dialers_pings_keep_an_idle_link_alive() {
    let short = cocoon_net::Keepalive {
        ping_after: None,
        fail_after: Duration::from_millis(600),
    };
    let pinging = cocoon_net::Keepalive {
        ping_after: Some(Duration::from_millis(100)),
        fail_after: Duration::from_millis(600),
    };
    let (listener, dialer) = linked(short, pinging).await;
    // Idle for several of the listener's silence limits: pings and pongs carry it over.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!listener.is_closed() && !dialer.is_closed());
    assert_eq!(
        dialer.query(b"still here".to_vec(), T).await.unwrap(),
        b"still here"
    );
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_keepalive_limit() {
    let short = cocoon_net::Keepalive {
        ping_after: None,
        fail_after: Duration::from_millis(300),
    };
    let never_pings = cocoon_net::Keepalive {
        ping_after: None,
        fail_after: Duration::from_secs(60),
    };
    let (listener, dialer) = linked(short, never_pings).await;
    tokio::time::timeout(Duration::from_secs(10), listener.closed())
        .await
        .expect("the listener drops a link silent past its limit");
    tokio::time::timeout(Duration::from_secs(10), dialer.closed())
        .await
        .expect("the dialer sees the link end");
}

#[tokio::test]
async fn a_listener_refuses_a_dialer_that_skips_the_opening() {
    // A raw TLS dialer that sends a ping where tcp.connect must come first.
    let (v, s, c) = setup(PolicyKind::FakeTdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sv = v.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, s, &sv, 4, T).await.map(|_| ())
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    cocoon_wire::pow::client_handshake(&mut tcp, 28)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(c)
        .connect(tls::server_name(), tcp)
        .await
        .unwrap();
    let mut framed = tokio_util::codec::Framed::new(tls, cocoon_wire::FrameCodec::default());
    use futures_util::SinkExt;
    framed
        .send(cocoon_wire::encode(&TcpPacket::Ping { id: 1 }))
        .await
        .unwrap();
    let err = server.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, NetError::Opening(m) if m.contains("expected tcp.connect, got tcp.ping")),
        "{err}"
    );
}
