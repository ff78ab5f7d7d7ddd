//! COCOON's price formula, in integer arithmetic (see `../shared/DESIGN.md` § Price formula).

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

/// `n × coef / 1000 × mult / 10000`, rounding down at each step as COCOON does.
pub fn adjust(n: u64, coefficient: u32, multiplier: u32) -> u64 {
    let v = n as u128 * coefficient as u128 / 1000 * multiplier as u128 / 10_000;
    v.min(u64::MAX as u128) as u64
}

/// Adjusted tokens for `usage` at a worker's `coefficient` (thousandths). Inconsistent usage
/// (cached > prompt, reasoning > completion) is clamped, never underflows.
pub fn adjusted_tokens(usage: &TokenUsage, coefficient: u32, params: &Params) -> u64 {
    let cached = usage.cached.min(usage.prompt);
    let reasoning = usage.reasoning.min(usage.completion);
    adjust(usage.prompt - cached, coefficient, params.prompt_mult)
        .saturating_add(adjust(cached, coefficient, params.cached_mult))
        .saturating_add(adjust(
            usage.completion - reasoning,
            coefficient,
            params.completion_mult,
        ))
        .saturating_add(adjust(reasoning, coefficient, params.reasoning_mult))
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
