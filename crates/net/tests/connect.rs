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
        assert_eq!(conn.peer().claims.name.as_deref(), Some("client"));
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
    assert_eq!(conn.peer().claims.name.as_deref(), Some("server"));
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
