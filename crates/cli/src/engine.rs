//! `cocoon engine …`: run an inference engine behind an OpenAI-compatible
//! HTTP server on 127.0.0.1 — the embedded llama.cpp engine, or the FAKE
//! benchmark engine.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use cocoon_engine::fake::FakeEngine;
use cocoon_engine::Engine;
use cocoon_llama::{LlamaConfig, LlamaEngine};

/// The `engine` subcommands.
#[derive(Subcommand)]
pub enum EngineCommand {
    /// Serve a GGUF model with the embedded engine.
    Serve {
        /// A known model name (`smollm2`, fetched if needed) or a GGUF path.
        #[arg(long, default_value = "smollm2")]
        model: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Requests decoded together.
        #[arg(long, default_value_t = 8)]
        parallel: u32,
        /// Context tokens per request.
        #[arg(long, default_value_t = 2048)]
        ctx: u32,
    },
    /// Serve the FAKE benchmark engine (fixed answers, no model).
    ServeFake {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: SocketAddr,
    },
}

/// Runs one `engine` subcommand.
pub fn run(cmd: EngineCommand) -> Result<()> {
    let engine: Arc<dyn Engine> = match &cmd {
        EngineCommand::Serve {
            model,
            parallel,
            ctx,
            ..
        } => {
            let local = crate::model::resolve(model)?;
            let engine = LlamaEngine::load(LlamaConfig {
                max_sequences: *parallel,
                n_ctx_per_seq: *ctx,
                ..LlamaConfig::for_model(&local)
            })
            .with_context(|| format!("cannot load {}", local.path.display()))?;
            eprintln!(
                "model {} ({})",
                engine.info().identity,
                engine.info().architecture
            );
            Arc::new(engine)
        }
        EngineCommand::ServeFake { .. } => {
            eprintln!("FAKE engine: fixed answers, no model (for protocol benchmarks only)");
            Arc::new(FakeEngine::default())
        }
    };
    let listen = match cmd {
        EngineCommand::Serve { listen, .. } | EngineCommand::ServeFake { listen } => listen,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!(
            "OpenAI-compatible API on http://{}/v1",
            listener.local_addr()?
        );
        cocoon_engine::server::serve(listener, engine).await?;
        Ok(())
    })
}
