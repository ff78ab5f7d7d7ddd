//! What a proxy shows about itself: the `/jsonstats` document its dashboard draws, and the
//! queue waits it counts.

use super::*;

impl Proxy {
    /// The `/jsonstats` document: figures and the worker table the dashboard draws.
    pub fn jsonstats(&self) -> serde_json::Value {
        let totals = self.totals();
        let money = self.money();
        let workers = self.workers();
        let queue = self.queue_waits();
        let (requests, errors) = self.metrics.outcomes();
        let billed: u64 = totals.clients.values().sum();
        let rows: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "owner": w.owner.to_raw(),
                    "model": w.model,
                    "coefficient": w.coefficient,
                    "active": w.active,
                    "max_active": w.max_active,
                    "enabled": w.enabled,
                    "served": w.served,
                    "mean_latency_ms": (w.mean_latency_ms * 10.0).round() / 10.0,
                })
            })
            .collect();
        let clients: Vec<serde_json::Value> = totals
            .clients
            .iter()
            .map(|(owner, tokens)| serde_json::json!({"client": owner.to_raw(), "tokens_charged": tokens}))
            .collect();
        let latency: f64 = {
            let served: u64 = workers.iter().map(|w| w.served).sum();
            if served == 0 {
                0.0
            } else {
                workers
                    .iter()
                    .map(|w| w.mean_latency_ms * w.served as f64)
                    .sum::<f64>()
                    / served as f64
            }
        };
        let reputation: Vec<serde_json::Value> = self
            .reputation
            .lock()
            .iter()
            .map(|(owner, r)| {
                serde_json::json!({
                    "worker": owner.to_raw(),
                    "served": r.served,
                    "failed": r.failed,
                    "success_rate": if r.served + r.failed == 0 { 1.0 } else { r.served as f64 / (r.served + r.failed) as f64 },
                    "mean_latency_ms": (r.mean_latency_ms * 10.0).round() / 10.0,
                })
            })
            .collect();
        serde_json::json!({
            "role": "proxy",
            "subtitle": format!("contract {} · voucher key {} · machine wallet {}", self.address, hex::encode(self.voucher_key.public_key()), self.machine_wallet_address()),
            "figures": {
                "requests": requests,
                "errors": errors,
                "active_requests": self.metrics.active.get(),
                "workers_connected": workers.len(),
                "tokens_billed": billed,
                "tokens_earned_by_workers": totals.workers.values().sum::<u64>(),
                "price_per_token": self.init.params.price_per_token.to_string(),
                "ledger_records": self.ledger.lock().seq(),
                "queued_requests": self.metrics.queued.get(),
                "queue_waited": queue.waited,
                // Whole microseconds: integers read the same in every JSON reader.
                "queue_wait_us_mean": if queue.waited == 0 { 0 } else { (queue.total_ms * 1000.0 / queue.waited as f64).round() as u64 },
                "queue_wait_us_max": (queue.max_ms * 1000.0).round() as u64,
                "committed_seqno": totals.saved_seqno,
                "contract_balance_ton": money.map(|m| cocoon_chain::format_ton(m.contract_balance)),
                "stake_ton": money.map(|m| cocoon_chain::format_ton(m.stake)),
                "earnings_ton": money.map(|m| cocoon_chain::format_ton(m.earnings)),
                "clients_money_ton": money.map(|m| cocoon_chain::format_ton(m.clients)),
                "wallet_balance_ton": money.map(|m| cocoon_chain::format_ton(m.wallet_balance)),
                "machine_wallet_balance_ton": money.map(|m| cocoon_chain::format_ton(m.machine_wallet_balance)),
            },
            "latency_ms_mean": latency,
            "tables": {"workers": rows, "reputation": reputation, "clients": clients},
        })
    }

    /// Requests that waited for a worker so far.
    pub fn queue_waits(&self) -> QueueWaits {
        *self.queue_waits.lock()
    }

    /// Counts one request's wait in the queue (on `/metrics` and in [`Proxy::queue_waits`]).
    pub(crate) fn note_queue_wait(&self, waited: Duration) {
        self.metrics.queue_wait.observe(waited.as_secs_f64());
        let ms = waited.as_secs_f64() * 1000.0;
        let mut q = self.queue_waits.lock();
        q.waited += 1;
        q.total_ms += ms;
        q.max_ms = q.max_ms.max(ms);
    }
}
