//! What every role shows about itself on its HTTP port:
//! - `/healthz`: `ok` while the role runs;
//! - `/metrics`: Prometheus text (OpenMetrics) from `prometheus-client` — requests, errors by
//!   kind, tokens by kind, latency histograms, active requests, connected peers, balances and
//!   voucher totals, attestation failures;
//! - `/jsonstats`: the role's own figures as JSON (what the dashboard draws);
//! - `/stats` (and `/`): the dashboard, one self-contained HTML page (no CDN) that polls
//!   `/jsonstats` and plots throughput and latency over time.
//!
//! Nothing here ever sees a prompt or an answer: roles record counts and durations only.

#![forbid(unsafe_code)]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

const DASHBOARD: &str = include_str!("dashboard.html");

/// A label with one `kind` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// What is counted (an error kind, a token kind, a peer kind, an account).
    pub kind: String,
}

impl Kind {
    /// The label for `kind`.
    pub fn of(kind: &str) -> Self {
        Kind {
            kind: kind.to_string(),
        }
    }
}

/// The metrics every role keeps (each role fills the ones that apply to it).
pub struct Metrics {
    registry: Registry,
    /// Requests finished, by outcome (`ok`, `error`).
    pub requests: Family<Kind, Counter>,
    /// Errors by kind (`no_worker`, `insufficient_credit`, `worker_failed`, `cancelled`, …).
    pub errors: Family<Kind, Counter>,
    /// Tokens by kind (`prompt`, `cached`, `completion`, `reasoning`, `billed`).
    pub tokens: Family<Kind, Counter>,
    /// Request latency, seconds.
    pub latency: Histogram,
    /// Requests running now.
    pub active: Gauge,
    /// Requests waiting in a queue for a free worker (the proxy's).
    pub queued: Gauge,
    /// How long requests waited in that queue, seconds (those that got a worker or gave up).
    pub queue_wait: Histogram,
    /// Connected peers by kind (`worker`, `client`, `proxy`).
    pub peers: Family<Kind, Gauge>,
    /// Balances by account, nanotons (as f64: a gauge; exact values are in /jsonstats).
    pub balances: Family<Kind, Gauge<f64, AtomicU64>>,
    /// Cumulative voucher totals by role (`client`, `worker`) or, at a client, by its contract at
    /// each proxy (as many as the root lists proxies), tokens.
    pub vouchers: Family<Kind, Gauge>,
    /// Peers refused for their attestation.
    pub attestation_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("cocoon")
    }
}

impl Metrics {
    /// Metrics under the `prefix` namespace (e.g. `cocoon_proxy`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let m = Metrics {
            requests: Family::default(),
            errors: Family::default(),
            tokens: Family::default(),
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            active: Gauge::default(),
            queued: Gauge::default(),
            queue_wait: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            peers: Family::default(),
            balances: Family::default(),
            vouchers: Family::default(),
            attestation_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests finished, by outcome",
            m.requests.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register("tokens", "Tokens by kind", m.tokens.clone());
        registry.register(
            "request_duration_seconds",
            "Request latency",
            m.latency.clone(),
        );
        registry.register("active_requests", "Requests running now", m.active.clone());
        registry.register(
            "queued_requests",
            "Requests waiting for a free worker",
            m.queued.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time requests waited for a free worker",
            m.queue_wait.clone(),
        );
        registry.register(
            "connected_peers",
            "Connected peers by kind",
            m.peers.clone(),
        );
        registry.register(
            "balance_nanotons",
            "Balances by account",
            m.balances.clone(),
        );
        registry.register(
            "voucher_tokens",
            "Cumulative voucher totals, tokens",
            m.vouchers.clone(),
        );
        registry.register(
            "attestation_failures",
            "Peers refused for their attestation",
            m.attestation_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one finished request: its outcome, latency and (when known) tokens.
    pub fn request(&self, ok: bool, seconds: f64) {
        self.requests
            .get_or_create(&Kind::of(if ok { "ok" } else { "error" }))
            .inc();
        self.latency.observe(seconds);
    }

    /// Requests finished so far: (answered, failed), as [`Metrics::request`] counted them.
    pub fn outcomes(&self) -> (u64, u64) {
        let count = |k| self.requests.get_or_create(&Kind::of(k)).get();
        (count("ok"), count("error"))
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&Kind::of(kind)).inc();
    }

    /// Adds tokens of `kind`.
    pub fn add_tokens(&self, kind: &str, n: u64) {
        self.tokens.get_or_create(&Kind::of(kind)).inc_by(n);
    }

    /// Counts one connected peer of `kind` (`worker`, `client`, `proxy`) until the returned
    /// guard is dropped, however the connection's task ends.
    pub fn peer(&self, kind: &str) -> PeerCount {
        let gauge = self.peers.get_or_create(&Kind::of(kind)).clone();
        gauge.inc();
        PeerCount(gauge)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One connected peer in the `connected_peers` gauge, for as long as this lives.
pub struct PeerCount(Gauge);

impl Drop for PeerCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Produces the role's `/jsonstats` document.
pub type JsonStats = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The routes `/healthz`, `/metrics`, `/jsonstats`, `/stats` and `/`.
pub fn router(metrics: Arc<Metrics>, stats: JsonStats) -> Router {
    let m = metrics.clone();
    let s = stats.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/jsonstats",
            get(move || {
                let s = s.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        s().to_string(),
                    )
                }
            }),
        )
        .route("/stats", get(dashboard))
        .route("/", get(dashboard))
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
}

/// Serves `router` on `listener` until dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = Metrics::new("cocoon_test");
        m.request(true, 0.003);
        m.error("no_worker");
        m.add_tokens("completion", 100);
        m.peers.get_or_create(&Kind::of("worker")).set(2);
        let text = m.render();
        assert!(
            text.contains("cocoon_test_requests_total{kind=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cocoon_test_errors_total{kind=\"no_worker\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cocoon_test_tokens_total{kind=\"completion\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("cocoon_test_connected_peers{kind=\"worker\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cocoon_test_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
