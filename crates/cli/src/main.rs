//! `cocoon`: the command-line front door of the network.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line, sets up logging and dispatches.
#![forbid(unsafe_code)]

mod attest;
mod bench;
mod chain;
mod config;
mod engine;
mod lifecycle;
mod machine_wallet;
mod model;
mod network;
mod quote;
mod root;

use clap::{Parser, Subcommand};

/// Cocoon in Rust: confidential, attested AI inference paid on TON.
#[derive(Parser)]
#[command(name = "cocoon", version, about)]
struct Cli {
    /// Log filter (e.g. `info`, `cocoon_tee=debug`); also `RUST_LOG`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    /// Log format: pretty (default; colours on a terminal) or json (one object per line).
    #[arg(long, global = true, default_value = "pretty")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// RA-TLS attestation: make, inspect and verify certificates; try a
    /// mutual attested handshake.
    #[command(subcommand)]
    Attest(Box<attest::AttestCommand>),
    /// Models: fetch the bundled one, list, hash into an identity.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Run an inference engine behind an OpenAI-compatible API.
    #[command(subcommand)]
    Engine(engine::EngineCommand),
    /// The local chain: create it, serve it over the toncenter v2 API, move its clock.
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// TON wallets (v4r2, v5r1): create, show, balance, send.
    #[command(subcommand)]
    Wallet(chain::WalletCommand),
    /// The root contract's registry.
    #[command(subcommand)]
    Root(root::RootCommand),
    /// Bring up a whole local network (chain, proxy, workers, client) and serve the OpenAI API.
    Up(network::UpArgs),
    /// Run a proxy from a TOML config; or its money commands (`status`, `payout`, `close`).
    #[command(args_conflicts_with_subcommands = true)]
    Proxy {
        /// The config file (runs the proxy).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        cmd: Option<lifecycle::ProxyCommand>,
    },
    /// Run a worker from a TOML config; or its money commands.
    #[command(args_conflicts_with_subcommands = true)]
    Worker {
        /// The config file (runs the worker).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        cmd: Option<lifecycle::WorkerCommand>,
    },
    /// Run a client (OpenAI API) from a TOML config; or its money commands.
    #[command(args_conflicts_with_subcommands = true)]
    Client {
        /// The config file (runs the client).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        cmd: Option<lifecycle::ClientCommand>,
    },
    /// What a daily volume of requests costs (and needs in workers), from the root's prices and
    /// live worker coefficients.
    Quote(Box<quote::QuoteArgs>),
    /// Config files: a commented example per role, or check one.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Benchmarks that print JSON, each against an in-process baseline.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Raises this process's soft limit on open files to its hard limit: a proxy holds thousands of
/// connections and many systems start processes at a soft limit of 1024. Failing to is only
/// logged (the roles still run, and refuse connections past the limit cleanly).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let from = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(
                "open-file limit raised from {from:?} to {:?}",
                limit.maximum
            ),
            Err(e) => tracing::warn!("could not raise the open-file limit from {from:?}: {e}"),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    // Logs carry counts, ids and reasons only: no role ever logs a prompt or an answer.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
    raise_open_file_limit();
    let result = match cli.command {
        Command::Attest(cmd) => attest::run(*cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Model(cmd) => model::run(cmd),
        Command::Engine(cmd) => engine::run(cmd),
        Command::Chain(cmd) => chain::run_chain(cmd),
        Command::Up(args) => network::up(args),
        Command::Config(cmd) => config::run(cmd),
        Command::Quote(args) => quote::run(*args),
        Command::Proxy {
            config: Some(c), ..
        } => network::proxy(&c),
        Command::Proxy { cmd: Some(cmd), .. } => lifecycle::proxy(cmd),
        Command::Worker {
            config: Some(c), ..
        } => network::worker(&c),
        Command::Worker { cmd: Some(cmd), .. } => lifecycle::worker(cmd),
        Command::Client {
            config: Some(c), ..
        } => network::client(&c),
        Command::Client { cmd: Some(cmd), .. } => lifecycle::client(cmd),
        Command::Proxy { .. } | Command::Worker { .. } | Command::Client { .. } => Err(
            anyhow::anyhow!("give --config FILE to run the role, or a subcommand (see --help)"),
        ),
        Command::Wallet(cmd) => chain::run_wallet(cmd),
        Command::Root(cmd) => root::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
