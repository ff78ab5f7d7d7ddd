//! `cocoon root …`: read the root contract's registry, and change it as its owner — images,
//! models, proxies, prices, ownership. Every change is checked against the registry first (the
//! contract treats removing what is absent as a no-op; here it is a clear error), sent from the
//! owner's wallet, and waited for until the root's version moves.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cocoon_chain::client;
use cocoon_chain::contracts::{Params, RegisteredProxy, RootData};
use cocoon_chain::messages::root as msg;
use cocoon_chain::tycho_types::cell::Cell;
use cocoon_chain::wallet::OutMessage;
use cocoon_chain::{format_ton, parse_ton, Address, TON};

use crate::chain::{hash32, root_address, ChainArgs, WalletArgs};

/// The root and its owner's wallet: what every registry change needs.
#[derive(Args)]
pub struct Admin {
    /// Root address; default: the local chain's (DIR/genesis.json).
    #[arg(long)]
    pub root: Option<String>,
    /// The root owner's wallet.
    #[command(flatten)]
    pub wallet: WalletArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// Which role's TEE image a hash is for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ImageRole {
    /// Proxies' images.
    Proxy,
    /// Workers' images.
    Worker,
}

/// `cocoon root …`.
#[derive(Subcommand)]
pub enum RootCommand {
    /// Print the registry: prices, allowed hashes and models, proxies.
    Show {
        /// Root address; default: the local chain's (DIR/genesis.json).
        #[arg(long)]
        root: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Register a proxy, or move a registered one to new endpoints (owner only).
    RegisterProxy {
        /// The proxy contract's address.
        #[arg(long)]
        proxy: String,
        /// Where clients connect, HOST:PORT.
        #[arg(long)]
        clients: std::net::SocketAddr,
        /// Where workers connect, HOST:PORT.
        #[arg(long)]
        workers: std::net::SocketAddr,
        #[command(flatten)]
        admin: Admin,
    },
    /// Remove a registered proxy (owner only); clients and workers stop finding it.
    UnregisterProxy {
        /// The proxy contract's address.
        #[arg(long)]
        proxy: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Allow a model: the hash of its weights under a type name (owner only).
    AddModel {
        /// sha256 of the weights (hex; `cocoon model hash FILE`).
        #[arg(long)]
        hash: String,
        /// Model type name (e.g. qwen3): what quotes and users name.
        #[arg(long = "type")]
        kind: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Stop allowing a model (owner only); proxies refuse workers that serve it.
    DelModel {
        /// sha256 of the weights (hex).
        #[arg(long)]
        hash: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Trust a TEE image for a role (owner only): its image hash (`cocoon attest inspect`).
    AllowImage {
        /// proxy or worker.
        #[arg(long)]
        role: ImageRole,
        /// The image hash (hex).
        #[arg(long)]
        hash: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Stop trusting a TEE image for a role (owner only).
    RevokeImage {
        /// proxy or worker.
        #[arg(long)]
        role: ImageRole,
        /// The image hash (hex).
        #[arg(long)]
        hash: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Change prices, multipliers, close delays or minimum stakes (owner only); what is not
    /// given stays. Proxy contracts deployed afterwards take the new values.
    SetPrices {
        /// What a client pays per adjusted token, nanotons.
        #[arg(long)]
        price_per_token: Option<u128>,
        /// What a worker earns per adjusted token, nanotons (at most the price).
        #[arg(long)]
        worker_fee_per_token: Option<u128>,
        /// Multiplier of uncached prompt tokens, ten-thousandths (10000 = 1.0).
        #[arg(long)]
        prompt_mult: Option<u32>,
        /// Multiplier of cached prompt tokens, ten-thousandths.
        #[arg(long)]
        cached_mult: Option<u32>,
        /// Multiplier of completion tokens, ten-thousandths.
        #[arg(long)]
        completion_mult: Option<u32>,
        /// Multiplier of reasoning tokens, ten-thousandths.
        #[arg(long)]
        reasoning_mult: Option<u32>,
        /// Seconds between a proxy's close request and its completion.
        #[arg(long)]
        proxy_close_delay: Option<u32>,
        /// Seconds a client waits for its stake when its proxy does not answer.
        #[arg(long)]
        client_close_delay: Option<u32>,
        /// Minimum proxy stake, TON.
        #[arg(long)]
        min_proxy_stake: Option<String>,
        /// Minimum client stake, TON.
        #[arg(long)]
        min_client_stake: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Hand the root to another owner (owner only). The new owner's wallet signs from then on.
    ChangeOwner {
        /// The new owner's address.
        #[arg(long)]
        new_owner: String,
        #[command(flatten)]
        admin: Admin,
    },
}

/// Reads the root, builds the owner operation from what it lists (or refuses), sends it from
/// the owner's wallet and waits until the registry version moves.
fn change(admin: &Admin, build: impl FnOnce(&RootData) -> Result<Cell>) -> Result<()> {
    let root = root_address(admin.root.clone(), &admin.chain)?;
    let (keys, w) = admin.wallet.load(admin.chain.network())?;
    let chain = admin.chain.open()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let before = client::read_root(chain.as_ref(), &root).await?;
        if before.owner != w.address()? {
            bail!(
                "this wallet ({}) is not the root's owner ({})",
                w.address()?,
                before.owner
            );
        }
        let body = build(&before)?;
        client::send_transfer(
            chain.as_ref(),
            &w,
            &keys,
            &[OutMessage::transfer(root, TON / 10, Some(body))],
        )
        .await?;
        for _ in 0..300 {
            let now = client::read_root(chain.as_ref(), &root).await?;
            if now.version > before.version {
                println!("root {root} updated to version {}", now.version);
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        bail!("the root did not apply the change within 30 s")
    })
}

fn registered<'a>(root: &'a RootData, proxy: &Address) -> Option<&'a RegisteredProxy> {
    root.proxies.iter().find(|p| p.address == Some(*proxy))
}

/// The new parameters: `current` with the given fields replaced; refused when nothing changes,
/// when workers would earn more than clients pay, or when a multiplier is zero.
#[allow(clippy::too_many_arguments)]
fn new_params(
    current: &Params,
    price_per_token: Option<u128>,
    worker_fee_per_token: Option<u128>,
    mults: [Option<u32>; 4],
    delays: [Option<u32>; 2],
    min_proxy_stake: Option<u128>,
    min_client_stake: Option<u128>,
) -> Result<Params> {
    let mut p = current.clone();
    let [prompt, cached, completion, reasoning] = mults;
    let [proxy_delay, client_delay] = delays;
    p.price_per_token = price_per_token.unwrap_or(p.price_per_token);
    p.worker_fee_per_token = worker_fee_per_token.unwrap_or(p.worker_fee_per_token);
    p.prompt_mult = prompt.unwrap_or(p.prompt_mult);
    p.cached_mult = cached.unwrap_or(p.cached_mult);
    p.completion_mult = completion.unwrap_or(p.completion_mult);
    p.reasoning_mult = reasoning.unwrap_or(p.reasoning_mult);
    p.proxy_delay_before_close = proxy_delay.unwrap_or(p.proxy_delay_before_close);
    p.client_delay_before_close = client_delay.unwrap_or(p.client_delay_before_close);
    p.min_proxy_stake = min_proxy_stake.unwrap_or(p.min_proxy_stake);
    p.min_client_stake = min_client_stake.unwrap_or(p.min_client_stake);
    if p == *current {
        bail!("nothing to change: give at least one new value (see --help)");
    }
    if p.worker_fee_per_token > p.price_per_token {
        bail!(
            "worker fee {} nanoTON/token is more than the price {} nanoTON/token: proxies would pay out more than clients pay",
            p.worker_fee_per_token,
            p.price_per_token
        );
    }
    // TON amounts are 120-bit on chain.
    for (name, v) in [
        ("--price-per-token", p.price_per_token),
        ("--worker-fee-per-token", p.worker_fee_per_token),
        ("--min-proxy-stake", p.min_proxy_stake),
        ("--min-client-stake", p.min_client_stake),
    ] {
        if v >> 120 != 0 {
            bail!("{name} {v} nanotons is more than a TON amount can hold (2^120 - 1)");
        }
    }
    for (name, m) in [
        ("--prompt-mult", p.prompt_mult),
        ("--cached-mult", p.cached_mult),
        ("--completion-mult", p.completion_mult),
        ("--reasoning-mult", p.reasoning_mult),
    ] {
        if m == 0 {
            bail!("{name} 0 would make those tokens free; 10000 is 1.0");
        }
    }
    Ok(p)
}

/// Runs a `root` subcommand.
pub fn run(cmd: RootCommand) -> Result<()> {
    match cmd {
        RootCommand::Show { root, json, chain } => show(root, json, &chain),
        RootCommand::RegisterProxy {
            proxy,
            clients,
            workers,
            admin,
        } => {
            let proxy: Address = proxy.parse().context("--proxy")?;
            let endpoint = RegisteredProxy::endpoint_string(clients, workers);
            change(&admin, |root| {
                Ok(match registered(root, &proxy) {
                    Some(p) => msg::update_proxy(0, p.seq, &proxy, &endpoint)?,
                    None => msg::register_proxy(0, &proxy, &endpoint)?,
                })
            })
        }
        RootCommand::UnregisterProxy { proxy, admin } => {
            let proxy: Address = proxy.parse().context("--proxy")?;
            change(&admin, |root| match registered(root, &proxy) {
                Some(p) => Ok(msg::unregister_proxy(0, p.seq)?),
                None => bail!("proxy {proxy} is not registered in this root"),
            })
        }
        RootCommand::AddModel { hash, kind, admin } => {
            let hash = hash32(&hash, "model hash")?;
            let kind = kind.trim().to_string();
            if kind.is_empty() {
                bail!("--type is empty; name the model's type (e.g. qwen3)");
            }
            change(&admin, |root| match root.models.get(&hash) {
                Some(existing) if *existing == kind => {
                    bail!("the root already lists {} as {kind}", hex::encode(hash))
                }
                _ => Ok(msg::add_model_type(0, &hash, &kind)?),
            })
        }
        RootCommand::DelModel { hash, admin } => {
            let hash = hash32(&hash, "model hash")?;
            change(&admin, |root| {
                if !root.models.contains_key(&hash) {
                    bail!("the root lists no model {}", hex::encode(hash));
                }
                Ok(msg::del_model_type(0, &hash)?)
            })
        }
        RootCommand::AllowImage { role, hash, admin } => image_change(&admin, role, &hash, true),
        RootCommand::RevokeImage { role, hash, admin } => image_change(&admin, role, &hash, false),
        RootCommand::SetPrices {
            price_per_token,
            worker_fee_per_token,
            prompt_mult,
            cached_mult,
            completion_mult,
            reasoning_mult,
            proxy_close_delay,
            client_close_delay,
            min_proxy_stake,
            min_client_stake,
            admin,
        } => {
            let ton = |v: Option<String>, what: &str| -> Result<Option<u128>> {
                v.map(|t| parse_ton(&t).with_context(|| what.to_string()))
                    .transpose()
            };
            let min_proxy = ton(min_proxy_stake, "--min-proxy-stake")?;
            let min_client = ton(min_client_stake, "--min-client-stake")?;
            change(&admin, |root| {
                let p = new_params(
                    &root.params,
                    price_per_token,
                    worker_fee_per_token,
                    [prompt_mult, cached_mult, completion_mult, reasoning_mult],
                    [proxy_close_delay, client_close_delay],
                    min_proxy,
                    min_client,
                )?;
                Ok(msg::change_price(0, &p)?)
            })
        }
        RootCommand::ChangeOwner { new_owner, admin } => {
            let new_owner: Address = new_owner.parse().context("--new-owner")?;
            change(&admin, |root| {
                if root.owner == new_owner {
                    bail!("{new_owner} already owns the root");
                }
                Ok(msg::change_owner(0, &new_owner)?)
            })
        }
    }
}

/// Trusts (`allow`) or stops trusting a role's TEE image; refused when that changes nothing.
fn image_change(admin: &Admin, role: ImageRole, hash: &str, allow: bool) -> Result<()> {
    let hash = hash32(hash, "image hash")?;
    change(admin, |root| {
        let listed = images(root, role).contains(&hash);
        if listed == allow {
            let already = if allow {
                "already trusts"
            } else {
                "does not trust"
            };
            bail!("the root {already} {role:?} image {}", hex::encode(hash));
        }
        Ok(match (role, allow) {
            (ImageRole::Proxy, true) => msg::add_proxy_type(0, &hash)?,
            (ImageRole::Proxy, false) => msg::del_proxy_type(0, &hash)?,
            (ImageRole::Worker, true) => msg::add_worker_type(0, &hash)?,
            (ImageRole::Worker, false) => msg::del_worker_type(0, &hash)?,
        })
    })
}

fn images(root: &RootData, role: ImageRole) -> &Vec<[u8; 32]> {
    match role {
        ImageRole::Proxy => &root.proxy_hashes,
        ImageRole::Worker => &root.worker_hashes,
    }
}

fn show(root: Option<String>, json: bool, chain: &ChainArgs) -> Result<()> {
    let root = root_address(root, chain)?;
    let client = chain.open()?;
    let rt = tokio::runtime::Runtime::new()?;
    let data = rt.block_on(client::read_root(client.as_ref(), &root))?;
    if json {
        let mut v = serde_json::to_value(&data)?;
        v["address"] = serde_json::json!(root.to_raw());
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let p = &data.params;
    println!(
        "root {} (version {}, owner {})",
        root, data.version, data.owner
    );
    println!(
        "prices: {} nanoTON/token from clients, {} nanoTON/token to workers",
        p.price_per_token, p.worker_fee_per_token
    );
    println!(
        "multipliers (1.0 = 10000): prompt {}, cached {}, completion {}, reasoning {}",
        p.prompt_mult, p.cached_mult, p.completion_mult, p.reasoning_mult
    );
    println!(
        "close delays: proxy {} s, client {} s",
        p.proxy_delay_before_close, p.client_delay_before_close
    );
    println!(
        "minimum stakes: proxy {} TON, client {} TON",
        format_ton(p.min_proxy_stake),
        format_ton(p.min_client_stake)
    );
    println!("proxy image hashes ({}):", data.proxy_hashes.len());
    for h in &data.proxy_hashes {
        println!("  {}", hex::encode(h));
    }
    println!("worker image hashes ({}):", data.worker_hashes.len());
    for h in &data.worker_hashes {
        println!("  {}", hex::encode(h));
    }
    println!("models ({}):", data.models.len());
    for (h, name) in &data.models {
        println!("  {}  {}", hex::encode(h), name);
    }
    println!("proxies ({}):", data.proxies.len());
    for p in &data.proxies {
        match &p.address {
            Some(a) => println!("  #{} {a} at {}", p.seq, p.endpoint),
            None => println!("  #{} at {}", p.seq, p.endpoint),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_prices_keep_what_is_not_given_and_refuse_what_cannot_work() {
        let cur = Params::local_default();
        let none = [None; 4];
        let p = new_params(&cur, Some(30), None, none, [None; 2], None, None).unwrap();
        assert_eq!((p.price_per_token, p.worker_fee_per_token), (30, 16));
        assert_eq!(p.min_client_stake, cur.min_client_stake);
        // The worker fee may equal the price (the proxy keeps nothing), never exceed it.
        assert!(new_params(&cur, None, Some(20), none, [None; 2], None, None).is_ok());
        let e = new_params(&cur, None, Some(21), none, [None; 2], None, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("worker fee 21 nanoTON/token is more than the price 20"),
            "{e}"
        );
        let e = new_params(&cur, Some(15), None, none, [None; 2], None, None).unwrap_err();
        assert!(e.to_string().contains("more than the price 15"), "{e}");
        let e = new_params(
            &cur,
            None,
            None,
            [None, Some(0), None, None],
            [None; 2],
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--cached-mult 0"), "{e}");
        // Values equal to the current ones change nothing: refused rather than a no-op fee.
        let e = new_params(&cur, Some(20), None, none, [None; 2], None, None).unwrap_err();
        assert!(e.to_string().contains("nothing to change"), "{e}");
        let most = (1u128 << 120) - 1;
        let p = new_params(
            &cur,
            None,
            None,
            none,
            [Some(60), None],
            Some(0),
            Some(most),
        )
        .unwrap();
        assert_eq!(
            (
                p.proxy_delay_before_close,
                p.min_proxy_stake,
                p.min_client_stake
            ),
            (60, 0, most)
        );
        let e = new_params(&cur, None, None, none, [None; 2], None, Some(most + 1)).unwrap_err();
        assert!(e.to_string().contains("--min-client-stake"), "{e}");
    }
}
