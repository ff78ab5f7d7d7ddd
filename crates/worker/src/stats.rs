//! What a worker shows about itself: the `/jsonstats` document its dashboard draws.

use super::*;

impl Worker {
    /// The `/jsonstats` document.
    pub fn jsonstats(&self) -> serde_json::Value {
        let held = self.held();
        let worth = |tokens: fn(&HeldVoucher) -> u64| -> u128 {
            held.iter()
                .map(|(p, h)| (tokens(h) as u128).saturating_mul(self.fee(p).unwrap_or(0)))
                .fold(0, u128::saturating_add)
        };
        let earned = worth(|h| h.tokens);
        let claimed = worth(|h| h.claimed);
        let c = *self.controls.borrow();
        let proxies: Vec<serde_json::Value> = self
            .connected
            .lock()
            .iter()
            .map(|(p, a)| {
                let h = held.get(p).cloned().unwrap_or_default();
                serde_json::json!({"proxy": p.to_raw(), "address": a.to_string(), "voucher_tokens": h.tokens, "claimed_tokens": h.claimed})
            })
            .collect();
        let (ok, failed) = self.metrics.outcomes();
        let secs = self.metrics_latency_sum();
        serde_json::json!({
            "role": "worker",
            "subtitle": format!("owner {} · machine wallet {} · model {}", self.owner(), self.machine_wallet_address(), self.cfg.model),
            "figures": {
                "requests": ok,
                "errors": failed,
                "active_requests": self.metrics.active.get(),
                "tokens_served": self.metrics.tokens.get_or_create(&cocoon_observe::Kind::of("completion")).get(),
                "proxies_connected": proxies.len(),
                "coefficient": c.coefficient,
                "enabled": c.enabled,
                "engine_up": c.engine_up,
                "earned_ton": cocoon_chain::format_ton(earned),
                "claimed_ton": cocoon_chain::format_ton(claimed),
            },
            "latency_ms_mean": if ok == 0 { 0.0 } else { secs * 1000.0 / ok as f64 },
            "tables": {"proxies": proxies},
        })
    }

    fn metrics_latency_sum(&self) -> f64 {
        *self.latency_sum.lock()
    }
}
