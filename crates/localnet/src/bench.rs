//! `cocoon bench network`: COCOON's benchmark reproduced. The FAKE engine answers streamed
//! chat requests (50 chunks of ~128 bytes, usage 34/11/100/10); the same requests go, at the
//! same concurrency, once straight to the fake engine's HTTP server (the baseline) and once
//! through client → proxy → worker (PoW + mutual RA-TLS, pricing, ledger fsync, vouchers),
//! in one process. Reported: requests per second both ways, their ratio, and p50/p99 latency
//! (request sent → last byte received).

use std::sync::Arc;
use std::time::Instant;

use cocoon_engine::engine::Engine;
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use serde_json::{json, Value};

use crate::{LocalNet, LocalNetConfig, LocalNetError};

struct Run {
    req_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: usize,
}

async fn drive(url: &str, key: Option<&str>, requests: usize, concurrency: usize) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("HTTP client");
    let body = json!({
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body, next) = (http.clone(), url.to_string(), body.clone(), next.clone());
        let key = key.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let t = Instant::now();
                let mut req = http.post(&url).json(&body);
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let ok = match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.bytes().await.unwrap_or_default();
                        let ok = status.is_success() && body.ends_with(b"data: [DONE]\n\n");
                        if !ok && failed == 0 {
                            eprintln!(
                                "benchmark request failed: {status} {}",
                                String::from_utf8_lossy(&body[body.len().saturating_sub(300)..])
                            );
                        }
                        ok
                    }
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("benchmark request failed: {e}");
                        }
                        false
                    }
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("bench task");
        all.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Run {
        req_per_s: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        failed,
    }
}

/// Runs both sides with `requests` requests each at `concurrency`; the one worker runs at most
/// `worker_slots` at once (default: twice the concurrency, so nothing queues); `dir` holds
/// the network's state (a temporary directory is fine).
pub async fn run(
    dir: &std::path::Path,
    requests: usize,
    concurrency: usize,
    worker_slots: Option<u32>,
) -> Result<Value, LocalNetError> {
    let io = |e: std::io::Error| LocalNetError::Other(e.to_string());
    // Baseline: the fake engine's own OpenAI server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io)?;
    let direct_addr = listener.local_addr().map_err(io)?;
    let engine: Arc<dyn Engine> = Arc::new(FakeEngine::default());
    let server = tokio::spawn(cocoon_engine::server::serve(listener, engine));
    let direct_url = format!("http://{direct_addr}/v1/chat/completions");
    drive(&direct_url, None, concurrency, concurrency).await; // warm up
    let direct = drive(&direct_url, None, requests, concurrency).await;
    server.abort();

    // Through the network.
    let slots = worker_slots
        .unwrap_or((concurrency as u32).max(1) * 2)
        .max(1);
    let mut cfg = LocalNetConfig::fake(dir, vec![Arc::new(FakeEngine::default())]);
    cfg.max_active = slots;
    cfg.params.min_client_stake = 100 * cocoon_chain::TON; // a stake that covers the whole run
    let mut net = LocalNet::start(cfg).await?;
    let url = format!("{}/chat/completions", net.info.base_url);
    drive(&url, Some(&net.info.api_key), concurrency, concurrency).await;
    let before = net.proxy.proxy.queue_waits();
    let network = drive(&url, Some(&net.info.api_key), requests, concurrency).await;
    let after = net.proxy.proxy.queue_waits();
    net.stop();
    let waited = after.waited - before.waited;

    Ok(json!({
        "bench": "network",
        "engine": "FAKE (50 chunks x ~128 B, usage 34/11/100/10)",
        "requests": requests,
        "concurrency": concurrency,
        "stream": true,
        "direct": {"req_per_s": direct.req_per_s, "p50_ms": direct.p50_ms, "p99_ms": direct.p99_ms, "failed": direct.failed},
        "network": {"req_per_s": network.req_per_s, "p50_ms": network.p50_ms, "p99_ms": network.p99_ms, "failed": network.failed},
        "worker_slots": slots,
        "queue": {
            "waited": waited,
            "wait_ms_mean": if waited == 0 { 0.0 } else { (after.total_ms - before.total_ms) / waited as f64 },
            "wait_ms_max": after.max_ms,
        },
        "ratio_network_vs_direct": network.req_per_s / direct.req_per_s,
        "added_p50_ms": network.p50_ms - direct.p50_ms,
        "added_p99_ms": network.p99_ms - direct.p99_ms,
        "targets": {"ratio": ">= 0.8", "added_p50_ms": "<= 2"},
    }))
}
