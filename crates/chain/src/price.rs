//! COCOON's price formula (see `../shared/DESIGN.md` § Price formula). Money is integer
//! nanotons; the one step in floating point is the token adjustment, because the reference
//! computes it so and a peer must bill exactly what the reference bills.

use crate::contracts::Params;

/// Token counts of one answer, as the engine reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// Prompt tokens served from cache.
    pub cached: u64,
    /// Completion tokens, reasoning ones included.
    pub completion: u64,
    /// Completion tokens spent reasoning.
    pub reasoning: u64,
}

/// `n × coef/1000 × mult/10000` exactly as the reference computes it (`adjust_tokens` in its
/// runners/helpers/Ton.h): IEEE-754 doubles multiplied left to right — `n`, times
/// `coef × 0.001`, times `mult`, times `0.0001` — then truncated toward zero. The exact
/// rational result differs in some cases (200 tokens at coefficient 145 are 28 here, as in the
/// reference, not 29), and a peer must bill what the reference bills. Results beyond `u64`
/// saturate.
pub fn adjust(n: u64, coefficient: u32, multiplier: u32) -> u64 {
    let v = n as f64 * (coefficient as f64 * 0.001) * multiplier as f64 * 0.0001;
    // `as` truncates toward zero and saturates (NaN cannot arise from these finite inputs).
    v as u64
}

/// Adjusted tokens for `usage` at a worker's `coefficient` (thousandths). Inconsistent usage
/// (cached > prompt, reasoning > completion) is clamped, never underflows.
pub fn adjusted_tokens(usage: &TokenUsage, coefficient: u32, params: &Params) -> u64 {
    adjusted_parts(usage, coefficient, params)
        .into_iter()
        .fold(0, u64::saturating_add)
}

/// Adjusted (prompt, cached, completion, reasoning) tokens for `usage`: cached is counted out
/// of prompt and reasoning out of completion, clamped so neither underflows (the reference
/// does not clamp; its workers never report such usage).
pub fn adjusted_parts(usage: &TokenUsage, coefficient: u32, params: &Params) -> [u64; 4] {
    let cached = usage.cached.min(usage.prompt);
    let reasoning = usage.reasoning.min(usage.completion);
    [
        adjust(usage.prompt - cached, coefficient, params.prompt_mult),
        adjust(cached, coefficient, params.cached_mult),
        adjust(
            usage.completion - reasoning,
            coefficient,
            params.completion_mult,
        ),
        adjust(reasoning, coefficient, params.reasoning_mult),
    ]
}

/// What a client pays for `tokens` adjusted tokens, nanotons (`None` on overflow).
pub fn client_cost(tokens: u64, params: &Params) -> Option<u128> {
    (tokens as u128).checked_mul(params.price_per_token)
}

/// What a worker earns for `tokens` adjusted tokens, nanotons (`None` on overflow).
pub fn worker_earnings(tokens: u64, params: &Params) -> Option<u128> {
    (tokens as u128).checked_mul(params.worker_fee_per_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_cocoon_at_the_boundaries() {
        let mut p = Params::local_default();
        let usage = TokenUsage {
            prompt: 34,
            cached: 11,
            completion: 100,
            reasoning: 10,
        };
        // coefficient 1.0, multipliers 1.0: the sum of the parts.
        assert_eq!(adjusted_tokens(&usage, 1000, &p), 134);
        // coefficient 1.5: each part rounds down separately (23*1.5=34, 11*1.5=16, 90*1.5=135, 10*1.5=15).
        assert_eq!(adjusted_tokens(&usage, 1500, &p), 34 + 16 + 135 + 15);
        // zero usage, zero coefficient.
        assert_eq!(adjusted_tokens(&TokenUsage::default(), 1000, &p), 0);
        assert_eq!(adjusted_tokens(&usage, 0, &p), 0);
        // cached tokens at a discount, reasoning at a premium.
        p.cached_mult = 1000;
        p.reasoning_mult = 20_000;
        assert_eq!(adjusted_tokens(&usage, 1000, &p), 23 + 1 + 90 + 20);
        // inconsistent usage is clamped.
        let odd = TokenUsage {
            prompt: 5,
            cached: 9,
            completion: 1,
            reasoning: 4,
        };
        assert_eq!(adjusted_tokens(&odd, 1000, &Params::local_default()), 6);
        // one token short of a unit: 999 thousandths of one token is zero.
        assert_eq!(adjust(1, 999, 10_000), 0);
        assert_eq!(adjust(1, 1000, 10_000), 1);
        // the reference's double rounding, not the exact rational: 200 × 0.145 is
        // 28.999999999999996 in doubles, truncated to 28 (exactly 29).
        assert_eq!(adjust(200, 145, 10_000), 28);
        assert_eq!(adjust(200, 1000, 10_000), 200);
        // the reference's worked example: coefficient 1.5, 800/200/400/100 tokens.
        assert_eq!(adjust(800, 1500, 10_000), 1200);
        assert_eq!(adjust(200, 1500, 10_000), 300);
        assert_eq!(adjust(0, 1500, 10_000), 0);
        // overflow saturates instead of wrapping.
        assert_eq!(adjust(u64::MAX, u32::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn money_is_exact_and_overflow_is_refused() {
        let p = Params::local_default();
        assert_eq!(client_cost(0, &p), Some(0));
        assert_eq!(client_cost(134, &p), Some(134 * 20));
        assert_eq!(worker_earnings(134, &p), Some(134 * 16));
        let huge = Params {
            price_per_token: u128::MAX,
            ..p
        };
        assert_eq!(client_cost(2, &huge), None);
    }
}

/// What a daily volume costs and needs (capacity planning, `cocoon quote`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Quote {
    /// Coefficient priced at, thousandths.
    pub coefficient: u32,
    /// Adjusted tokens per request, by part.
    pub tokens_prompt: u64,
    /// Cached prompt part.
    pub tokens_cached: u64,
    /// Completion part (without reasoning).
    pub tokens_completion: u64,
    /// Reasoning part.
    pub tokens_reasoning: u64,
    /// Their sum.
    pub tokens_per_request: u64,
    /// Client cost per request, nanotons.
    pub cost_per_request: u128,
    /// Per day.
    pub cost_per_day: u128,
    /// Per 30-day month.
    pub cost_per_month: u128,
    /// Recommended client stake: 10 minutes at the peak rate (3× the daily average), never
    /// below the root's minimum.
    pub recommended_stake: u128,
    /// What workers earn per day, all together.
    pub worker_earnings_per_day: u128,
    /// What the proxy keeps per day.
    pub proxy_share_per_day: u128,
    /// Workers needed at the peak rate, when a throughput is known.
    pub workers_needed: Option<u64>,
}

/// The peak-to-average ratio capacity is planned for.
pub const PEAK_FACTOR: u64 = 3;

/// Prices `requests_per_day` requests of `avg` usage at `coefficient`; `completion_tokens_per_s`
/// is one worker's measured generation throughput (None: workers not estimated).
pub fn quote(
    params: &Params,
    coefficient: u32,
    avg: &TokenUsage,
    requests_per_day: u64,
    completion_tokens_per_s: Option<f64>,
) -> Option<Quote> {
    let parts = adjusted_parts(avg, coefficient, params);
    let [tokens_prompt, tokens_cached, tokens_completion, tokens_reasoning] = parts;
    let tokens_per_request = parts
        .into_iter()
        .try_fold(0u64, |sum, part| sum.checked_add(part))?;
    let cost_per_request = client_cost(tokens_per_request, params)?;
    let cost_per_day = cost_per_request.checked_mul(requests_per_day as u128)?;
    let cost_per_month = cost_per_day.checked_mul(30)?;
    let ten_minutes_at_peak = cost_per_day.checked_mul(PEAK_FACTOR as u128)? / 144;
    let worker_earnings_per_day =
        worker_earnings(tokens_per_request, params)?.checked_mul(requests_per_day as u128)?;
    let workers_needed = completion_tokens_per_s.filter(|t| *t > 0.0).map(|tps| {
        let per_second_peak =
            (requests_per_day as f64 * avg.completion as f64 / 86_400.0) * PEAK_FACTOR as f64;
        (per_second_peak / tps).ceil().max(1.0) as u64
    });
    Some(Quote {
        coefficient,
        tokens_prompt,
        tokens_cached,
        tokens_completion,
        tokens_reasoning,
        tokens_per_request,
        cost_per_request,
        cost_per_day,
        cost_per_month,
        recommended_stake: ten_minutes_at_peak.max(params.min_client_stake),
        worker_earnings_per_day,
        proxy_share_per_day: cost_per_day.saturating_sub(worker_earnings_per_day),
        workers_needed,
    })
}

#[cfg(test)]
mod quote_tests {
    use super::*;

    #[test]
    fn a_hundred_thousand_requests_of_500_tokens() {
        let p = Params::local_default();
        let avg = TokenUsage {
            prompt: 300,
            cached: 0,
            completion: 200,
            reasoning: 0,
        };
        let q = quote(&p, 1000, &avg, 100_000, Some(100.0)).unwrap();
        assert_eq!(q.tokens_per_request, 500);
        assert_eq!(q.cost_per_request, 500 * 20);
        assert_eq!(q.cost_per_day, 100_000 * 500 * 20);
        assert_eq!(q.cost_per_month, 30 * 100_000 * 500 * 20);
        assert_eq!(q.worker_earnings_per_day, 100_000 * 500 * 16);
        assert_eq!(q.proxy_share_per_day, 100_000 * 500 * 4);
        // 1e9 nanotons a day → 10 minutes at 3× = 1e9 × 3 / 144, but never below 0.5 TON.
        assert_eq!(q.recommended_stake, p.min_client_stake);
        // 100 000 × 200 tokens a day = 231.5 tokens/s average, 694.4 at peak, at 100 tokens/s each.
        assert_eq!(q.workers_needed, Some(7));
        // Zero volume: zero cost, the minimum stake, one worker.
        let zero = quote(&p, 1000, &avg, 0, Some(100.0)).unwrap();
        assert_eq!(
            (
                zero.cost_per_day,
                zero.recommended_stake,
                zero.workers_needed
            ),
            (0, p.min_client_stake, Some(1))
        );
        // Overflow is refused, not wrapped.
        let dear = Params {
            price_per_token: u128::MAX / 2,
            ..p
        };
        assert!(quote(&dear, 1000, &avg, 100_000, None).is_none());
        // So is a token count past u64 (each part saturates; their sum must not wrap).
        let endless = TokenUsage {
            prompt: u64::MAX,
            cached: 0,
            completion: u64::MAX,
            reasoning: 0,
        };
        assert!(quote(&p, 1000, &endless, 1, None).is_none());
    }
}
