//! `cocoon quote`: what a daily volume of requests costs and needs, from the root's prices and
//! the live coefficients of the workers behind its proxies.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use cocoon_chain::format_ton;
use cocoon_chain::price::{quote, TokenUsage};
use cocoon_client::quote as policy;
use serde_json::json;

use crate::chain::ChainArgs;

/// `cocoon quote` arguments.
#[derive(Args)]
pub struct QuoteArgs {
    /// Model type (as the root lists it, e.g. qwen3) or model name.
    #[arg(long)]
    pub model: String,
    /// Requests per day.
    #[arg(long)]
    pub requests_per_day: u64,
    /// Average prompt tokens per request (cached ones included).
    #[arg(long)]
    pub avg_prompt_tokens: u64,
    /// Average completion tokens per request (reasoning included).
    #[arg(long)]
    pub avg_completion_tokens: u64,
    /// Average reasoning tokens per request.
    #[arg(long, default_value_t = 0)]
    pub avg_reasoning_tokens: u64,
    /// Average cached prompt tokens per request.
    #[arg(long, default_value_t = 0)]
    pub avg_cached_tokens: u64,
    /// The dearest coefficient accepted, thousandths (default: any).
    #[arg(long)]
    pub max_coefficient: Option<u32>,
    /// One worker's generation throughput, tokens/s (for the number of workers needed).
    #[arg(long)]
    pub throughput: Option<f64>,
    /// Or: the JSON of `cocoon bench engine` (its best aggregate tokens/s is used).
    #[arg(long, conflicts_with = "throughput")]
    pub bench_json: Option<PathBuf>,
    /// Root address; default: the local chain's.
    #[arg(long)]
    pub root: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub attestation: crate::network::DialAttestation,
}

fn throughput_from_bench(path: &PathBuf) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let best = best_generation_rate(&v);
    if best <= 0.0 {
        bail!(
            "{}: no tokens-per-second figure found (expected `cocoon bench engine` JSON)",
            path.display()
        );
    }
    Ok(best)
}

/// One worker's generation throughput in `cocoon bench engine` JSON: the best
/// `aggregate_tok_s` over the measured concurrencies (decode only; prefill rates are not
/// generation), else the baseline's `decode_tok_s`.
fn best_generation_rate(v: &serde_json::Value) -> f64 {
    fn walk(v: &serde_json::Value, key: &str, best: &mut f64) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == key {
                        *best = best.max(x.as_f64().unwrap_or(0.0));
                    }
                    walk(x, key, best);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, key, best)),
            _ => {}
        }
    }
    let mut best = 0.0;
    walk(v, "aggregate_tok_s", &mut best);
    if best <= 0.0 {
        walk(v, "decode_tok_s", &mut best);
    }
    best
}

/// Runs `cocoon quote`.
pub fn run(a: QuoteArgs) -> Result<()> {
    if a.avg_cached_tokens > a.avg_prompt_tokens {
        bail!(
            "--avg-cached-tokens ({}) is more than --avg-prompt-tokens ({})",
            a.avg_cached_tokens,
            a.avg_prompt_tokens
        );
    }
    if a.avg_reasoning_tokens > a.avg_completion_tokens {
        bail!(
            "--avg-reasoning-tokens ({}) is more than --avg-completion-tokens ({})",
            a.avg_reasoning_tokens,
            a.avg_completion_tokens
        );
    }
    let throughput = match (&a.throughput, &a.bench_json) {
        (Some(t), _) => Some(*t),
        (None, Some(p)) => Some(throughput_from_bench(p)?),
        (None, None) => None,
    };
    let root = crate::chain::root_address(a.root.clone(), &a.chain)?;
    let client = a.chain.open()?;
    let rt = tokio::runtime::Runtime::new()?;
    let data = rt.block_on(cocoon_chain::client::read_root(client.as_ref(), &root))?;
    // Which type, and so which model hashes, the name stands for.
    let types: Vec<String> = data.models.values().map(|t| t.to_lowercase()).collect();
    let kind = policy::type_named(&a.model, &types)?;
    let wanted = a.model.to_lowercase();
    let hashes: Vec<String> = data
        .models
        .iter()
        .filter(|(_, t)| kind.as_deref() == Some(t.to_lowercase().as_str()))
        .map(|(h, _)| hex::encode(h))
        .collect();
    let (quotes, policy) = a.attestation.parse()?;
    let (catalogue, unreachable) =
        rt.block_on(cocoon_client::catalogue(&data, policy, quotes.as_ref()))?;
    let coefficients: Vec<u32> = catalogue
        .iter()
        .filter(|(identity, _)| {
            let by_hash = cocoon_engine::model::ModelIdentity::parse(identity)
                .is_some_and(|id| hashes.contains(&hex::encode(id.sha256)));
            by_hash
                || cocoon_engine::model::ModelIdentity::name_of(identity).to_lowercase() == wanted
        })
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    if hashes.is_empty() && coefficients.is_empty() {
        return Err(policy::QuoteError::Unknown {
            asked: a.model.clone(),
            known: policy::known_list(&types),
        }
        .into());
    }
    let shown = kind.clone().unwrap_or_else(|| a.model.clone());
    let (coefficient, source) =
        policy::choose_coefficient(&shown, &coefficients, a.max_coefficient)?;
    let avg = TokenUsage {
        prompt: a.avg_prompt_tokens,
        cached: a.avg_cached_tokens,
        completion: a.avg_completion_tokens,
        reasoning: a.avg_reasoning_tokens,
    };
    let q = quote(
        &data.params,
        coefficient,
        &avg,
        a.requests_per_day,
        throughput,
    )
    .context("the amounts overflow")?;
    if a.json {
        let v = json!({
            "model": a.model,
            "model_type": kind,
            "requests_per_day": a.requests_per_day,
            "coefficient": coefficient,
            "coefficient_source": source,
            "price_per_token": data.params.price_per_token.to_string(),
            "worker_fee_per_token": data.params.worker_fee_per_token.to_string(),
            "multipliers": {"prompt": data.params.prompt_mult, "cached": data.params.cached_mult, "completion": data.params.completion_mult, "reasoning": data.params.reasoning_mult},
            "tokens": {"prompt": q.tokens_prompt, "cached": q.tokens_cached, "completion": q.tokens_completion, "reasoning": q.tokens_reasoning, "per_request": q.tokens_per_request},
            "nanotons": {
                "per_request": q.cost_per_request.to_string(),
                "per_day": q.cost_per_day.to_string(),
                "per_month": q.cost_per_month.to_string(),
                "recommended_stake": q.recommended_stake.to_string(),
                "worker_earnings_per_day": q.worker_earnings_per_day.to_string(),
                "proxy_share_per_day": q.proxy_share_per_day.to_string(),
            },
            "ton": {
                "per_request": format_ton(q.cost_per_request),
                "per_day": format_ton(q.cost_per_day),
                "per_month": format_ton(q.cost_per_month),
                "recommended_stake": format_ton(q.recommended_stake),
                "worker_earnings_per_day": format_ton(q.worker_earnings_per_day),
            },
            "throughput_tokens_per_s": throughput,
            "workers_needed": q.workers_needed,
            "peak_factor": cocoon_chain::price::PEAK_FACTOR,
            "unreachable_proxies": unreachable,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let p = &data.params;
    println!(
        "{} requests/day of {shown}: {} prompt ({} cached) + {} completion ({} reasoning) tokens",
        a.requests_per_day, avg.prompt, avg.cached, avg.completion, avg.reasoning
    );
    println!("coefficient {coefficient} ({source})");
    println!(
        "tokens per request = {} prompt + {} cached + {} completion + {} reasoning = {} (× coef/1000 × multipliers {}/{}/{}/{} per 10000)",
        q.tokens_prompt, q.tokens_cached, q.tokens_completion, q.tokens_reasoning, q.tokens_per_request, p.prompt_mult, p.cached_mult, p.completion_mult, p.reasoning_mult
    );
    println!("price {} nanoTON/token", p.price_per_token);
    println!("  per request  {} TON", format_ton(q.cost_per_request));
    println!("  per day      {} TON", format_ton(q.cost_per_day));
    println!(
        "  per month    {} TON (30 days)",
        format_ton(q.cost_per_month)
    );
    println!("recommended client stake {} TON (10 minutes at {}× the average rate, at least the root's minimum {} TON)", format_ton(q.recommended_stake), cocoon_chain::price::PEAK_FACTOR, format_ton(p.min_client_stake));
    println!(
        "GPU owners earn {} TON/day together ({} nanoTON/token); proxies keep {} TON/day",
        format_ton(q.worker_earnings_per_day),
        p.worker_fee_per_token,
        format_ton(q.proxy_share_per_day)
    );
    match (q.workers_needed, throughput) {
        (Some(n), Some(t)) => println!("workers needed: {n} at {t:.0} tokens/s each (peak {}× average)", cocoon_chain::price::PEAK_FACTOR),
        _ => println!("workers needed: give --throughput TOKENS_PER_S or --bench-json FILE (from `cocoon bench engine`)"),
    }
    if coefficients.is_empty() {
        // The known models the root lists under this type: what a GPU owner can bring.
        let fetchable: Vec<&str> = cocoon_engine::model::KNOWN_MODELS
            .iter()
            .filter(|m| hashes.iter().any(|h| h == m.sha256))
            .map(|m| m.short)
            .collect();
        if !fetchable.is_empty() {
            println!(
                "to serve it: `cocoon model fetch {}` gets a model the root lists, then run a worker on it",
                fetchable.join("` or `cocoon model fetch ")
            );
        }
    }
    for e in unreachable {
        eprintln!("note: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_engine_json_gives_the_best_aggregate_rate() {
        let v = serde_json::json!({
            "baseline": {"prefill_tok_s": 900.0, "decode_tok_s": 120.0},
            "levels": [{"concurrency": 1, "aggregate_tok_s": 110.0, "prefill_tok_s": 800.0},
                       {"concurrency": 8, "aggregate_tok_s": 190.0}]
        });
        assert_eq!(super::best_generation_rate(&v), 190.0);
        assert_eq!(
            super::best_generation_rate(&serde_json::json!({"baseline": {"decode_tok_s": 120.0}})),
            120.0
        );
        assert_eq!(super::best_generation_rate(&serde_json::json!({})), 0.0);
    }
}
