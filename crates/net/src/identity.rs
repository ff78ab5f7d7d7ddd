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
        Self::with_cert(cert, policy)
    }

    /// A fresh key with a plain certificate (no quote, as a reference client presents),
    /// judging peers by `policy`.
    pub fn plain(name: &str, policy: Policy) -> Result<Self, String> {
        let now = cocoon_tee::unix_now();
        let cert = cert::generate_plain(&CertOptions::new(name, now))
            .map_err(|e| format!("certificate: {e}"))?;
        Self::with_cert(cert, policy)
    }

    fn with_cert(cert: RaTlsCert, policy: Policy) -> Result<Self, String> {
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

/// An [`Identity`] that renews its certificate (and quote) before the one-day validity runs
/// out, for roles that run for days. Connections take the current one with [`Renewing::get`].
pub struct Renewing {
    current: parking_lot::RwLock<Identity>,
    quotes: Arc<dyn QuoteProvider>,
    name: String,
    policy: Policy,
}

impl Renewing {
    /// How often certificates are replaced (well inside their one-day validity).
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

    /// A first identity, renewed every [`Renewing::EVERY`] by a background task for as long as
    /// the returned handle lives.
    pub fn start(
        quotes: Arc<dyn QuoteProvider>,
        name: &str,
        policy: Policy,
    ) -> Result<Arc<Self>, String> {
        let first = Identity::new(quotes.as_ref(), name, policy.clone())?;
        let me = Arc::new(Renewing {
            current: parking_lot::RwLock::new(first),
            quotes,
            name: name.to_string(),
            policy,
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Self::EVERY).await;
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.renew() {
                    tracing::error!("renewing the {} certificate failed: {e}", me.name);
                }
            }
        });
        Ok(me)
    }

    /// The current identity.
    pub fn get(&self) -> Identity {
        self.current.read().clone()
    }

    /// Replaces the certificate now.
    pub fn renew(&self) -> Result<(), String> {
        let fresh = Identity::new(self.quotes.as_ref(), &self.name, self.policy.clone())?;
        *self.current.write() = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_tee::{FakeTdxProvider, PolicyKind};

    #[tokio::test]
    async fn renewal_replaces_the_certificate() {
        let r = Renewing::start(
            Arc::new(FakeTdxProvider::default()),
            "role",
            Policy::new(PolicyKind::FakeTdx),
        )
        .unwrap();
        let before = r.get().cert.cert_der;
        r.renew().unwrap();
        assert_ne!(r.get().cert.cert_der, before, "a fresh key and certificate");
    }
}
