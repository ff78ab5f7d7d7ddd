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

/// Two attested connections over 127.0.0.1, before either side runs a [`Peer`]: (listener
/// side, dialer side).
async fn raw_pair() -> (cocoon_net::Connection, cocoon_net::Connection) {
    let (v, s, c) = setup(PolicyKind::FakeTdx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sv = v.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, s, &sv, 4, T).await.unwrap()
    });
    let dialer = connect(addr, c, &v, 28, T).await.unwrap();
    (server.await.unwrap(), dialer)
}

/// A query handler that answers with the query's own bytes.
fn echo() -> cocoon_net::rpc::QueryHandler {
    Arc::new(
        |_: cocoon_net::rpc::Peer, data: Vec<u8>| -> cocoon_net::rpc::AnswerFuture {
            Box::pin(async move { Ok(data) })
        },
    )
}

/// A listener/dialer pair over 127.0.0.1 with the given keepalive timers on each side; the
/// listener echoes queries.
async fn linked(
    listener_keepalive: cocoon_net::Keepalive,
    dialer_keepalive: cocoon_net::Keepalive,
) -> (cocoon_net::rpc::Peer, cocoon_net::rpc::Peer) {
    use cocoon_net::rpc::{no_queries, Peer};
    let (listener_side, dialer) = raw_pair().await;
    let ignore: cocoon_net::rpc::PacketHandler = Arc::new(|_: &Peer, _| {});
    let l = Peer::spawn(
        listener_side.with_keepalive(listener_keepalive),
        echo(),
        ignore.clone(),
    );
    let d = Peer::spawn(
        dialer.with_keepalive(dialer_keepalive),
        no_queries(),
        ignore,
    );
    (l, d)
}

/// A handler's one-way packets (streamed parts) reach the peer before its answer, in order.
#[tokio::test]
async fn a_queries_parts_arrive_before_its_answer_and_in_order() {
    use cocoon_net::rpc::{no_queries, Peer};
    let (l, d) = raw_pair().await;
    let streaming: cocoon_net::rpc::QueryHandler = Arc::new(
        |peer: Peer, data: Vec<u8>| -> cocoon_net::rpc::AnswerFuture {
            Box::pin(async move {
                for i in 0u32..200 {
                    peer.send(i.to_le_bytes().to_vec()).unwrap();
                }
                Ok(data)
            })
        },
    );
    let _listener = Peer::spawn(l, streaming, Arc::new(|_: &Peer, _| {}));
    let parts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = parts.clone();
    let dialer = Peer::spawn(
        d,
        no_queries(),
        Arc::new(move |_: &Peer, data: Vec<u8>| seen.lock().push(data)),
    );
    assert_eq!(dialer.query(b"go".to_vec(), T).await.unwrap(), b"go");
    let parts = parts.lock().clone();
    let expected: Vec<Vec<u8>> = (0u32..200).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(parts, expected, "every part, in order, before the answer");
}

/// A peer over its cap of queries in flight gets 429 at once for the extra one; the others
/// run on, and the slot comes back when one ends.
#[tokio::test]
async fn queries_beyond_a_connections_cap_are_refused_with_429() {
    use cocoon_net::rpc::{no_queries, Limits, Peer};
    let (l, d) = raw_pair().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    let held: cocoon_net::rpc::QueryHandler = Arc::new(
        move |_: Peer, data: Vec<u8>| -> cocoon_net::rpc::AnswerFuture {
            let (g, e) = (g.clone(), e.clone());
            Box::pin(async move {
                e.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                Ok(data)
            })
        },
    );
    let limits = Limits {
        queries_in_flight: 2,
        ..Limits::default()
    };
    let _listener = Peer::spawn_with(l, held, Arc::new(|_: &Peer, _| {}), limits);
    let dialer = Peer::spawn(d, no_queries(), Arc::new(|_: &Peer, _| {}));
    let (a, b) = (dialer.clone(), dialer.clone());
    let first = tokio::spawn(async move { a.query(b"1".to_vec(), T).await });
    let second = tokio::spawn(async move { b.query(b"2".to_vec(), T).await });
    let t = std::time::Instant::now();
    while entered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(t.elapsed() < T, "the first two queries never ran");
        tokio::task::yield_now().await;
    }
    // Both run: the third is refused at once.
    let refused = match dialer.query(b"3".to_vec(), T).await {
        Err(cocoon_net::rpc::RpcError::Remote { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused.0, 429);
    assert!(
        refused.1.contains("2 of this connection's queries"),
        "{}",
        refused.1
    );
    gate.add_permits(3);
    assert_eq!(first.await.unwrap().unwrap(), b"1");
    assert_eq!(second.await.unwrap().unwrap(), b"2");
    assert_eq!(dialer.query(b"4".to_vec(), T).await.unwrap(), b"4");
}

/// A peer that sends queries but never reads the answers: the bytes waiting for it pass the
/// cap and its connection is closed; the process is unharmed.
#[tokio::test]
async fn a_peer_that_does_not_read_loses_its_connection() {
    use cocoon_net::rpc::{Limits, Peer};
    let (l, mut hostile) = raw_pair().await;
    let limits = Limits {
        queued_bytes: 1 << 20,
        ..Limits::default()
    };
    let listener = Peer::spawn_with(l, echo(), Arc::new(|_: &Peer, _| {}), limits);
    let big = vec![7u8; 64 << 10];
    let flood = tokio::spawn(async move {
        // 64 MiB of queries, answers never read: far past the socket buffers and the cap.
        for id in 0..1024u64 {
            let q = TcpPacket::Query {
                id,
                data: big.clone(),
            };
            if hostile.send(&q).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    tokio::time::timeout(Duration::from_secs(30), listener.closed())
        .await
        .expect("the connection that does not read is closed");
    assert!(listener.queued_bytes() <= 1 << 20);
    flood.abort();
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
