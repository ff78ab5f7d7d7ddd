//! rustls configurations for RA-TLS: TLS 1.3 only, both sides present an
//! RA-TLS certificate, no session tickets or resumption (every connection
//! proves its attestation afresh — the verdict cache makes that cheap), and
//! certificate verifiers that run a [`Verifier`]'s policy.
//!
//! Two rustls details matter here. webpki would refuse our certificates
//! (their RA-TLS extensions are critical and unknown to it), so the
//! handshake signature is checked directly against the certificate's
//! public key with `verify_tls13_signature_with_raw_key`. And the key is
//! served through a resolver holding a `CertifiedKey`, which does not ask
//! webpki to parse the certificate either.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{
    verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};

use crate::cert::RaTlsCert;
use crate::error::AttestError;
use crate::policy::{PeerIdentity, Verifier};

/// The server name clients put in their hello; RA-TLS identifies peers by
/// attestation, not by name, so it is the same for every server.
pub const SERVER_NAME: &str = "cocoon.ra-tls.invalid";

/// The crypto provider used everywhere (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config presenting `own` and requiring an attested client.
pub fn server_config(
    own: &RaTlsCert,
    verifier: Arc<Verifier>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = crypto_provider();
    let key = certified_key(own, &provider)?;
    let mut cfg = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::new(verifier, &provider)))
        .with_cert_resolver(Arc::new(FixedCert(key)));
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client config presenting `own` and requiring an attested server.
pub fn client_config(
    own: &RaTlsCert,
    verifier: Arc<Verifier>,
) -> Result<ClientConfig, rustls::Error> {
    let provider = crypto_provider();
    let key = certified_key(own, &provider)?;
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(verifier, &provider)))
        .with_client_cert_resolver(Arc::new(FixedCert(key)));
    cfg.resumption = Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

/// The server name to connect with.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("constant is a valid DNS name")
}

/// The verified identity of the peer of an established connection (a cache
/// hit: the handshake already verified this certificate).
pub fn peer_identity(verifier: &Verifier, conn: &CommonState) -> Result<PeerIdentity, AttestError> {
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(AttestError::NoPeerCertificate)?;
    verifier.verify_cert(cert.as_ref())
}

/// The attestation error behind a failed handshake, if that was the cause
/// (on the side that refused the peer).
pub fn attest_error(err: &std::io::Error) -> Option<&AttestError> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref(),
        _ => None,
    }
}

fn certified_key(
    own: &RaTlsCert,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            own.key_pkcs8.clone(),
        )))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(own.cert_der.clone())],
        key,
    )))
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies the peer's certificate with the policy, both as client and server.
#[derive(Debug)]
struct PeerVerifier {
    verifier: Arc<Verifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(verifier: Arc<Verifier>, provider: &CryptoProvider) -> Self {
        Self {
            verifier,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match self.verifier.verify_cert(end_entity.as_ref()) {
            Ok(identity) => {
                tracing::debug!(tee = %identity.tee, key = %hex::encode(identity.public_key), "peer attested");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer attestation refused");
                Err(refused(e))
            }
        }
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // rustls verifies the certificate before the handshake signature,
        // so this is a cache hit: no second parse or self-signature check.
        let identity = self.verifier.verify_cert(cert.as_ref()).map_err(refused)?;
        let spki = ed25519_spki(&identity.public_key);
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &self.algorithms,
        )
    }
}

fn refused(e: AttestError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): a fixed
/// 12-byte header, then the 32 key bytes.
fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    const HEADER: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut spki = HEADER.to_vec();
    spki.extend_from_slice(key);
    spki
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not supported by RA-TLS peers".into())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn ed25519_spki_matches_the_certificate_encoding() {
        let (cert, claims) = crate::cert::generate_new(
            &crate::FakeTdxProvider::default(),
            &crate::CertOptions::new("t", 1_750_000_000),
        )
        .unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert.cert_der).unwrap();
        assert_eq!(
            super::ed25519_spki(&claims.public_key),
            parsed.public_key().raw
        );
    }
}
