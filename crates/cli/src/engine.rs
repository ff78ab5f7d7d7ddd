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
    /// Whether an OpenAI-compatible server (vLLM, SGLang, llama-server, TGI) is fit to serve
    /// behind a worker: it lists its models, answers, streams and reports usage; also its first
    /// token, tokens/s, cached and reasoning token reporting, optional fields. Exits 1 when unfit.
    Check {
        /// The server's base URL, e.g. http://127.0.0.1:8000.
        url: String,
        /// The model to name in requests (default: the one it lists).
        #[arg(long)]
        model: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `cocoon engine check`: prints the report; an error when the server is not fit.
fn check(url: &str, model: Option<&str>, json: bool) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let r = rt.block_on(cocoon_engine::check::check(url, model));
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!("engine {}", r.url);
        println!(
            "  models        {}",
            if r.models.is_empty() {
                "-".into()
            } else {
                r.models.join(", ")
            }
        );
        println!("  model used    {}", r.model.as_deref().unwrap_or("-"));
        println!("  answers       {}", yes(r.answers));
        println!("  streams       {}", yes(r.streams));
        println!(
            "  usage         {}",
            match r.usage {
                Some(u) => format!(
                    "prompt {} (cached {}), completion {} (reasoning {})",
                    u.prompt, u.cached, u.completion, u.reasoning
                ),
                None => "none in the stream".into(),
            }
        );
        println!(
            "  cached tokens {}",
            if r.reports_cached_tokens {
                "reported"
            } else {
                "not seen (no prefix cache, or not reported)"
            }
        );
        println!(
            "  reasoning     {}",
            if r.reports_reasoning_tokens {
                "reported"
            } else {
                "not seen"
            }
        );
        if let Some(ms) = r.first_token_ms {
            println!("  first token   {ms} ms");
        }
        if let Some(t) = r.tokens_per_s {
            println!("  tokens/s      {t:.1} (one stream)");
        }
        for f in &r.optional_fields {
            println!(
                "  {:<13} {}",
                f.field,
                if f.accepted {
                    "accepted".to_string()
                } else {
                    format!("refused ({})", f.status)
                }
            );
        }
        for p in &r.problems {
            println!("  problem: {p}");
        }
        println!(
            "{}",
            if r.fit {
                "fit to serve behind a worker"
            } else {
                "NOT fit to serve behind a worker"
            }
        );
    }
    anyhow::ensure!(r.fit, "{} is not fit: {}", r.url, r.problems.join("; "));
    Ok(())
}

/// Runs one `engine` subcommand.
pub fn run(cmd: EngineCommand) -> Result<()> {
    match cmd {
        EngineCommand::Check { url, model, json } => check(&url, model.as_deref(), json),
        EngineCommand::Serve {
            model,
            parallel,
            ctx,
            listen,
        } => {
            let local = crate::model::resolve(&model)?;
            let engine = LlamaEngine::load(LlamaConfig {
                max_sequences: parallel,
                n_ctx_per_seq: ctx,
                ..LlamaConfig::for_model(&local)
            })
            .with_context(|| format!("cannot load {}", local.path.display()))?;
            eprintln!(
                "model {} ({})",
                engine.info().identity,
                engine.info().architecture
            );
            serve(Arc::new(engine), listen)
        }
        EngineCommand::ServeFake { listen } => {
            eprintln!("FAKE engine: fixed answers, no model (for protocol benchmarks only)");
            serve(Arc::new(FakeEngine::default()), listen)
        }
    }
}

/// Serves `engine`'s OpenAI API on `listen` until the process ends.
fn serve(engine: Arc<dyn Engine>, listen: SocketAddr) -> Result<()> {
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
