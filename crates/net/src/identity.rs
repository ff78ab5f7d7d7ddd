//! A role's attested identity: its RA-TLS certificate, the verifier it applies to peers, and the
//! TLS configs for both directions.

use std::sync::Arc;

use cocoon_tee::cert::{self, CertOptions};
use cocoon_tee::policy::{Policy, Verifier};
use cocoon_tee::{QuoteProvider, RaTlsCert};

/// Everything a role needs to accept and make attested connections.
#[derive(Clone)]
pub struct Identity {
    /// Our certificate (carries our quote).
    pub cert: RaTlsCert,
    /// How we judge peers.
    pub verifier: Arc<Verifier>,
    /// For listeners.
    pub server_tls: Arc<rustls::ServerConfig>,
    /// For dialers.
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl Identity {
    /// A fresh key and certificate from `provider` (fake or real TDX), judging peers by `policy`.
    pub fn new(provider: &dyn QuoteProvider, name: &str, policy: Policy) -> Result<Self, String> {
        let now = cocoon_tee::unix_now();
        let (cert, _claims) = cert::generate_new(provider, &CertOptions::new(name, now))
            .map_err(|e| format!("certificate: {e}"))?;
        let verifier = Arc::new(Verifier::new(policy));
        let server_tls = Arc::new(
            cocoon_tee::tls::server_config(&cert, verifier.clone())
                .map_err(|e| format!("TLS server config: {e}"))?,
        );
        let client_tls = Arc::new(
            cocoon_tee::tls::client_config(&cert, verifier.clone())
                .map_err(|e| format!("TLS client config: {e}"))?,
        );
        Ok(Identity {
            cert,
            verifier,
            server_tls,
            client_tls,
        })
    }
}
