//! Mutual RA-TLS handshakes over loopback TCP: success with identities on
//! both sides, the cache on reconnect, and each way a peer can be refused.

use std::sync::Arc;

use cocoon_tee::cert::{self, CertOptions};
use cocoon_tee::policy::{Policy, PolicyKind, TeeKind, Verifier};
use cocoon_tee::tls::{self, attest_error};
use cocoon_tee::{AttestError, Claims, FakeTdxProvider, Measurements, PeerIdentity, RaTlsCert};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const NOW: u64 = 1_750_000_000;

fn fake_cert(seed: u8, not_before: u64) -> RaTlsCert {
    let provider = FakeTdxProvider {
        measurements: Measurements {
            mr_td: [seed; 48],
            ..Measurements::default()
        },
    };
    let key = cert::generate_key().unwrap();
    let claims = Claims::new(key.public_key_raw().try_into().unwrap());
    cert::generate(&key, &claims, &provider, &CertOptions::new("t", not_before)).unwrap()
}

fn verifier(kind: PolicyKind) -> Arc<Verifier> {
    Arc::new(Verifier::at_time(Policy::new(kind), NOW + 60))
}

type Outcome = Result<PeerIdentity, std::io::Error>;

/// Runs one handshake; returns what the server and the client concluded.
async fn handshake(
    server_cfg: rustls::ServerConfig,
    server_v: Arc<Verifier>,
    client_cfg: rustls::ClientConfig,
    client_v: Arc<Verifier>,
) -> (Outcome, Outcome) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(Arc::new(server_cfg)).accept(tcp).await?;
        let id = tls::peer_identity(&server_v, tls.get_ref().1).map_err(std::io::Error::other)?;
        tls.write_all(b"hi").await?;
        tls.shutdown().await?;
        Ok(id)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = async {
        let mut tls = TlsConnector::from(Arc::new(client_cfg))
            .connect(tls::server_name(), tcp)
            .await?;
        let id = tls::peer_identity(&client_v, tls.get_ref().1).map_err(std::io::Error::other)?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        assert_eq!(buf, b"hi");
        Ok(id)
    };
    let client_outcome = client.await;
    (server.await.unwrap(), client_outcome)
}

async fn pair(
    server: &RaTlsCert,
    server_policy: Arc<Verifier>,
    client: &RaTlsCert,
    client_policy: Arc<Verifier>,
) -> (Outcome, Outcome) {
    handshake(
        tls::server_config(server, server_policy.clone()).unwrap(),
        server_policy,
        tls::client_config(client, client_policy.clone()).unwrap(),
        client_policy,
    )
    .await
}

#[tokio::test]
async fn mutual_handshake_exposes_both_identities_and_caches() {
    let (s, c) = (fake_cert(1, NOW), fake_cert(2, NOW));
    let (sv, cv) = (verifier(PolicyKind::FakeTdx), verifier(PolicyKind::FakeTdx));
    let (server_saw, client_saw) = pair(&s, sv.clone(), &c, cv.clone()).await;
    let server_saw = server_saw.unwrap();
    let client_saw = client_saw.unwrap();
    assert_eq!(server_saw.tee, TeeKind::FakeTdx);
    assert_eq!(
        server_saw.public_key,
        cert::parse_cert(&c.cert_der).unwrap().public_key
    );
    assert_eq!(
        client_saw.public_key,
        cert::parse_cert(&s.cert_der).unwrap().public_key
    );
    assert_eq!(
        client_saw.image_hash,
        Some(
            Measurements {
                mr_td: [1; 48],
                ..Measurements::default()
            }
            .image_hash()
        )
    );
    // First connection: one miss (the certificate check), then hits for
    // the handshake signature (its key) and for peer_identity.
    assert_eq!(sv.cache().stats(), (2, 1));
    // Reconnect: the unchanged certificate is not verified again.
    let (a, b) = pair(&s, sv.clone(), &c, cv).await;
    a.unwrap();
    b.unwrap();
    assert_eq!(sv.cache().stats(), (5, 1));
}

#[tokio::test]
async fn server_refuses_a_client_outside_the_allow_list() {
    let (s, c) = (fake_cert(1, NOW), fake_cert(2, NOW));
    let only_1 = Policy {
        allowed_image_hashes: vec![Measurements {
            mr_td: [1; 48],
            ..Measurements::default()
        }
        .image_hash()],
        ..Policy::new(PolicyKind::FakeTdx)
    };
    let sv = Arc::new(Verifier::at_time(only_1, NOW));
    let (server, client) = pair(&s, sv, &c, verifier(PolicyKind::FakeTdx)).await;
    let err = server.unwrap_err();
    assert!(
        matches!(
            attest_error(&err),
            Some(AttestError::ImageHashNotAllowed(_))
        ),
        "{err}"
    );
    assert!(client.is_err());
}

#[tokio::test]
async fn client_refuses_an_expired_server_cert() {
    let (s, c) = (fake_cert(1, NOW - 3 * 86_400), fake_cert(2, NOW));
    let (_, client) = pair(
        &s,
        verifier(PolicyKind::FakeTdx),
        &c,
        verifier(PolicyKind::FakeTdx),
    )
    .await;
    let err = client.unwrap_err();
    assert!(
        matches!(attest_error(&err), Some(AttestError::CertExpired { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn tdx_client_refuses_a_fake_server() {
    let (s, c) = (fake_cert(1, NOW), fake_cert(2, NOW));
    let (server, client) = pair(
        &s,
        verifier(PolicyKind::FakeTdx),
        &c,
        verifier(PolicyKind::Tdx),
    )
    .await;
    let err = client.unwrap_err();
    assert_eq!(
        attest_error(&err),
        Some(&AttestError::FakeQuoteRejected),
        "{err}"
    );
    // The server learns only that its certificate was refused.
    let err = server.unwrap_err();
    assert!(err.to_string().contains("CertificateUnknown"), "{err}");
}

#[derive(Debug)]
struct AcceptAnything;
impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

fn plain_client(versions: &[&'static rustls::SupportedProtocolVersion]) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_no_client_auth()
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate() {
    let s = fake_cert(1, NOW);
    let sv = verifier(PolicyKind::Any);
    let (server, _) = handshake(
        tls::server_config(&s, sv.clone()).unwrap(),
        sv.clone(),
        plain_client(&[&rustls::version::TLS13]),
        sv,
    )
    .await;
    let err = server.unwrap_err();
    let tls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        tls_err,
        Some(&rustls::Error::NoCertificatesPresented),
        "{err}"
    );
}

#[tokio::test]
async fn server_refuses_tls_1_2() {
    let s = fake_cert(1, NOW);
    let sv = verifier(PolicyKind::Any);
    let (server, client) = handshake(
        tls::server_config(&s, sv.clone()).unwrap(),
        sv.clone(),
        plain_client(&[&rustls::version::TLS12]),
        sv,
    )
    .await;
    let err = server.unwrap_err();
    let tls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        tls_err,
        Some(&rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
        )),
        "{err}"
    );
    assert!(client.is_err());
}

#[test]
fn configs_offer_only_tls13_and_no_resumption() {
    let s = fake_cert(1, NOW);
    let v = verifier(PolicyKind::Any);
    let server = tls::server_config(&s, v.clone()).unwrap();
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(!server.session_storage.can_cache());
    let client = tls::client_config(&s, v).unwrap();
    assert!(!client.enable_early_data);
}
