//! `cocoon bench …`: measurements printed as JSON, each against a baseline
//! run in the same process.
//!
//! `bench attest` measures what the attestation cache saves: certificate
//! verification from scratch (the baseline) against a cache hit, and a full
//! PoW + mutual RA-TLS handshake on 127.0.0.1 with a cold verifier (every
//! certificate verified) against a warm one (a reconnect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Subcommand;
use cocoon_tee::cert::{self, CertOptions};
use cocoon_tee::policy::{Policy, PolicyKind, Verifier};
use cocoon_tee::{FakeTdxProvider, RaTlsCert};
use serde_json::json;

/// The `bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The embedded engine against a plain llama.cpp loop, at several
    /// concurrencies.
    Engine {
        /// A known model name (`smollm2`) or a GGUF path.
        #[arg(long, default_value = "smollm2")]
        model: String,
        /// Concurrency levels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        concurrency: Vec<usize>,
        /// Tokens generated per request.
        #[arg(long, default_value_t = 200)]
        tokens: u32,
        /// CPU threads (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
    },
    /// The local chain: transactions per second of plain transfers (baseline), signed wallet
    /// transfers and payment vouchers.
    Chain {
        /// Messages per workload.
        #[arg(long, default_value_t = 5000)]
        messages: usize,
    },
    /// The network, COCOON's benchmark: streamed chat requests on the FAKE engine through
    /// client → proxy → worker against the same requests sent straight to the engine.
    Network {
        /// Requests per side.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 30)]
        concurrency: usize,
        /// Requests the one worker runs at once (default: twice the concurrency, so nothing
        /// waits); fewer than the concurrency makes the rest wait in the proxy's queue.
        #[arg(long)]
        worker_slots: Option<u32>,
    },
    /// Attestation: certificate verification and handshakes, cold vs cached.
    Attest {
        /// Certificate verifications per measurement.
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
        /// Handshakes per measurement.
        #[arg(long, default_value_t = 50)]
        handshakes: u32,
    },
}

/// Runs one `bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Network {
            requests,
            concurrency,
            worker_slots,
        } => {
            let dir = tempfile_dir()?;
            let rt = tokio::runtime::Runtime::new()?;
            let report = rt.block_on(cocoon_localnet::bench::run(
                &dir,
                requests.max(1),
                concurrency.max(1),
                worker_slots,
            ));
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", serde_json::to_string_pretty(&report?)?);
            Ok(())
        }
        BenchCommand::Chain { messages } => {
            let report = cocoon_chain::bench::run(messages)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Attest {
            iterations,
            handshakes,
        } => attest(iterations.max(1), handshakes.max(1)),
        BenchCommand::Engine {
            model,
            concurrency,
            tokens,
            threads,
        } => {
            let model = crate::model::resolve(&model)?;
            let report = cocoon_llama::bench::run(&model, &concurrency, tokens.max(1), threads)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cocoon-bench-network-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn per_op(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

fn attest(iterations: u32, handshakes: u32) -> Result<()> {
    let now = cocoon_tee::unix_now();
    let provider = FakeTdxProvider::default();
    let (server_cert, _) = cert::generate_new(&provider, &CertOptions::new("bench-server", now))?;
    let (client_cert, _) = cert::generate_new(&provider, &CertOptions::new("bench-client", now))?;
    let policy = Policy::new(PolicyKind::FakeTdx);

    let verifier = Verifier::new(policy.clone());
    let started = Instant::now();
    for _ in 0..iterations {
        verifier.verify_cert_uncached(&server_cert.cert_der, now)?;
    }
    let uncached_us = per_op(started.elapsed(), iterations);
    verifier.verify_cert(&server_cert.cert_der)?;
    let started = Instant::now();
    for _ in 0..iterations {
        verifier.verify_cert(&server_cert.cert_der)?;
    }
    let cached_us = per_op(started.elapsed(), iterations);

    let rt = tokio::runtime::Runtime::new()?;
    let cold_us = rt.block_on(handshakes_us(
        &server_cert,
        &client_cert,
        &policy,
        handshakes,
        false,
    ))?;
    let warm_us = rt.block_on(handshakes_us(
        &server_cert,
        &client_cert,
        &policy,
        handshakes,
        true,
    ))?;

    let report = json!({
        "bench": "attest",
        "policy": "fake_tdx",
        "iterations": iterations,
        "handshakes": handshakes,
        "verify_cert_uncached_us": uncached_us,
        "verify_cert_cached_us": cached_us,
        "cache_speedup": uncached_us / cached_us,
        "handshake_cold_verifier_us": cold_us,
        "handshake_warm_verifier_us": warm_us,
        "handshake_speedup": cold_us / warm_us,
        "note": "PoW difficulty 0 so the handshake cost is TLS + attestation only; fake quotes skip DCAP, which a real quote adds to the cold path",
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Mean µs of a full accept/connect pair; with `warm`, both sides keep one
/// verifier (and so its cache) across connections.
async fn handshakes_us(
    server: &RaTlsCert,
    client: &RaTlsCert,
    policy: &Policy,
    n: u32,
    warm: bool,
) -> Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Verifier::new(policy.clone()));
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let (sv, cv) = if warm {
            (shared.clone(), shared.clone())
        } else {
            (
                Arc::new(Verifier::new(policy.clone())),
                Arc::new(Verifier::new(policy.clone())),
            )
        };
        let server_tls = Arc::new(cocoon_tee::tls::server_config(server, sv.clone())?);
        let client_tls = Arc::new(cocoon_tee::tls::client_config(client, cv.clone())?);
        let started = Instant::now();
        let accept = async {
            let (tcp, _) = listener.accept().await?;
            anyhow::Ok(
                cocoon_net::accept(
                    tcp,
                    server_tls,
                    &sv,
                    0,
                    cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
                )
                .await?,
            )
        };
        let connect = async {
            anyhow::Ok(
                cocoon_net::connect(
                    addr,
                    client_tls,
                    &cv,
                    0,
                    cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
                )
                .await?,
            )
        };
        let (a, c) = tokio::join!(accept, connect);
        total += started.elapsed();
        drop((a?, c?));
    }
    Ok(per_op(total, n))
}
