//! `cocoon config example ROLE` (a commented TOML file with every field and its default) and
//! `cocoon config check ROLE FILE` (parse and validate without starting anything).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

/// A role with a config file.
#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    /// `cocoon proxy --config`.
    Proxy,
    /// `cocoon worker --config`.
    Worker,
    /// `cocoon client --config`.
    Client,
}

/// `cocoon config …`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example config.
    Example {
        /// Which role.
        role: Role,
    },
    /// Check a config file: every field known and valid.
    Check {
        /// Which role.
        role: Role,
        /// The file.
        file: PathBuf,
    },
}

const COMMON: &str = r#"# --- the chain (exactly one of chain_api / chain_dir / fake_ton) ---
chain_api = "http://127.0.0.1:8081/api/v2"   # any toncenter v2 API: `cocoon chain serve`, or TON's
# chain_dir = ".chain"                       # a local chain: through the API of the process that runs it
#                                            # (`cocoon up`, `cocoon chain serve`), else opened here
# fake_ton = "fake-ton-config.json"          # no chain: the reference COCOON's fake-TON file, to run
#                                            # beside reference roles that read it (set root to theirs)
# chain_api_key = "…"                        # or the TONCENTER_API_KEY environment variable
network = "local"                            # local | testnet | mainnet
root = "0:…"                                 # the root contract (`cocoon root show`; with chain_dir: its own)
# --- who pays / is paid ---
wallet = ".chain/wallets/NAME.json"          # from `cocoon wallet new`; or COCOON_WALLET_MNEMONIC
dir = "state/NAME"                           # state directory (keys, ledger, vouchers), with the role's
#                                            # machine wallet key (COCOON's wallet, owned by `wallet`)
# --- attestation ---
tee = "fake"                                 # fake (no TDX here; named fake everywhere) | tdx (configfs-tsm)
policy = "fake_tdx"                          # how peers are judged: fake_tdx | tdx | any
"#;

/// The example for `role`.
pub fn example(role: Role) -> String {
    let (name, specific) = match role {
        Role::Proxy => (
            "proxy",
            r#"# --- proxy ---
worker_listen = "0.0.0.0:8842"               # workers connect here
client_listen = "0.0.0.0:8843"               # clients connect here
pow_difficulty = 20                          # proof-of-work bits asked of every dialer (default 20)
save_state_interval_secs = 30                # how often the ledger hash is committed on chain (default 30)
http_listen = "127.0.0.1:8844"               # dashboard, /metrics, /jsonstats, /healthz (default: off)
queue_per_model = 1024                       # requests that wait per model while every worker is busy (default 1024)
connections_per_listener = 4096              # connections each listener holds at once (default 4096)
peer_queries_in_flight = 256                 # queries one client or worker may run at once; one more: 429 (default 256)
peer_queued_mib = 16                         # MiB waiting to be written to one peer before it is cut off (default 16)
payout_threshold_ton = "10"                  # earnings paid to the owner's wallet from this much (default 10 TON; "0": never)
"#,
        ),
        Role::Worker => (
            "worker",
            r#"# --- worker ---
proxies = ["127.0.0.1:8842"]                 # proxies' worker endpoints (default: those in the root)
model = "smollm2"                            # a known model, a GGUF path, or "fake" (protocol tests only)
# engine_url = "http://127.0.0.1:8000"       # or: the model runs in this OpenAI-compatible server (vLLM, SGLang,
#                                            #   llama-server, TGI); `model` is then its identity: name@sha256, a
#                                            #   known model, or the weights' path (file or directory) to hash
# engine_model = "Qwen/Qwen3-8B"             # the name that server serves it under (default: the one it lists)
# engine_tools = true                        # that server calls tools (vLLM --enable-auto-tool-choice, llama-server
#                                            #   --jinja): announce it, so requests with tools come here (default false)
# Several models on this machine instead of `model`: one [[models]] entry each (model, engine_url, engine_tools,
# engine_model, max_active), each announced to proxies separately; state in dir/<model name>.
coefficient = 1000                           # price coefficient, thousandths (default 1000 = base price)
max_active = 4                               # requests at once (default 4; with engine_url, the server's concurrency)
payout_threshold_ton = "1"                   # claim on chain from this much unclaimed (default 1 TON)
http_listen = "127.0.0.1:8845"               # dashboard, /metrics, /jsonstats, /healthz (default: off)
"#,
        ),
        Role::Client => (
            "client",
            r#"# --- client ---
proxies = ["127.0.0.1:8843"]                 # proxies' client endpoints (default: those in the root)
listen = "127.0.0.1:8040"                    # the OpenAI API (and the dashboard at /stats)
api_key = "change-me"                        # or the COCOON_API_KEY environment variable
deposit_ton = "10"                           # first top-up of a new client contract (default 10)
stake_ton = "0.5"                            # stake: ~10 minutes of use (`cocoon quote`), ≥ the root's minimum
"#,
        ),
    };
    format!(
        "# cocoon {name} --config FILE: every field, with its default.\n{}{}",
        COMMON.replace("NAME", name),
        specific
    )
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Example { role } => {
            print!("{}", example(role));
            Ok(())
        }
        ConfigCommand::Check { role, file } => {
            match role {
                Role::Proxy => crate::network::check::<crate::network::ProxyToml>(&file)?,
                Role::Worker => crate::network::check::<crate::network::WorkerToml>(&file)?,
                Role::Client => crate::network::check::<crate::network::ClientToml>(&file)?,
            }
            println!("{} is a valid config", file.display());
            Ok(())
        }
    }
}
