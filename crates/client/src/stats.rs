//! What a client shows about itself: the `/jsonstats` document its dashboard draws.

use super::*;

impl Client {
    /// The `/jsonstats` document: money at each proxy and request figures.
    pub fn jsonstats(&self) -> serde_json::Value {
        let accounts = self.accounts();
        let (ok, failed) = self.metrics.outcomes();
        let spent: u128 = accounts
            .iter()
            .map(|a| a.voucher_tokens as u128 * a.price_per_token)
            .sum();
        let committed: u128 = accounts
            .iter()
            .map(|a| a.committed_tokens as u128 * a.price_per_token)
            .sum();
        let balance: u128 = accounts.iter().map(|a| a.balance).sum();
        let stake: u128 = accounts.iter().map(|a| a.stake).sum();
        for a in &accounts {
            let k = cocoon_observe::Kind::of(&a.client_contract.to_raw());
            self.metrics
                .balances
                .get_or_create(&k)
                .set(a.balance as f64);
            self.metrics
                .vouchers
                .get_or_create(&k)
                .set(a.voucher_tokens as i64);
        }
        let secs = *self.latency_total.lock();
        let rows: Vec<serde_json::Value> = accounts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "proxy": a.proxy.to_raw(),
                    "client_contract": a.client_contract.to_raw(),
                    "balance_ton": cocoon_chain::format_ton(a.balance),
                    "stake_ton": cocoon_chain::format_ton(a.stake),
                    "tokens_charged": a.voucher_tokens,
                    "tokens_committed": a.committed_tokens,
                })
            })
            .collect();
        serde_json::json!({
            "role": "client",
            "subtitle": format!("machine wallet {} · owned by {}", self.owner(), self.wallet_address()),
            "figures": {
                "requests": ok,
                "errors": failed,
                "active_requests": self.metrics.active.get(),
                "tokens_billed": self.metrics.tokens.get_or_create(&cocoon_observe::Kind::of("billed")).get(),
                "spent_ton": cocoon_chain::format_ton(spent),
                "committed_ton": cocoon_chain::format_ton(committed),
                "balance_ton": cocoon_chain::format_ton(balance),
                "stake_ton": cocoon_chain::format_ton(stake),
                "proxies_connected": self.connected(),
            },
            "latency_ms_mean": if ok == 0 { 0.0 } else { secs * 1000.0 / ok as f64 },
            "tables": {"accounts": rows},
        })
    }
}
