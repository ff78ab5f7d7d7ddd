//! The worker's money: the newest voucher from each proxy, checked as the worker contract
//! will check it and kept on disk, and claimed on chain once enough is unclaimed.

use std::sync::Arc;

use super::*;

/// Least time between two writes of the held vouchers.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

impl Worker {
    /// Accepts a newer voucher from `proxy` (checked like the worker contract will), refuses one
    /// going backwards, and claims on chain when due.
    pub(crate) fn take_voucher(
        self: &Arc<Self>,
        proxy: Address,
        payment: &SignedPayment,
    ) -> Result<(), String> {
        let SignedPayment::Signed { data } = payment else {
            return Ok(());
        };
        // Check it as the worker contract will: the proxy's key, the payout op, our contract.
        let expected = self.proxy_keys.lock().get(&proxy).copied();
        let Some((key, worker_sc)) = expected else {
            return Err("voucher from a proxy not yet checked".into());
        };
        let tokens = reference::check_payment(data, reference::Payee::Worker, &key, &worker_sc)?;
        let mut held = self.held.lock();
        let entry = held.entry(proxy).or_default();
        advance(entry, tokens, data)?;
        let unclaimed = entry.tokens.saturating_sub(entry.claimed) as u128;
        // Written at most once a second, and the newest always within a second (a save is
        // scheduled when this one comes too soon after the last): a voucher lost in a crash is
        // not money lost, since the proxy hands the newest one back at the next handshake
        // (compareBalance), but one kept on disk can be claimed without the proxy.
        let mut last = self.last_save.lock();
        if last.elapsed() >= SAVE_INTERVAL {
            *last = std::time::Instant::now();
            save_held(&self.cfg.dir, &held);
        } else if !self
            .save_scheduled
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let wait = SAVE_INTERVAL.saturating_sub(last.elapsed());
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                me.save_scheduled
                    .store(false, std::sync::atomic::Ordering::Release);
                let held = me.held.lock();
                *me.last_save.lock() = std::time::Instant::now();
                save_held(&me.cfg.dir, &held);
            });
        }
        drop(last);
        drop(held);
        if self.chain.is_none() {
            // Nothing to claim on: a fake-TON payment is only checked and kept.
            return Ok(());
        }
        let fee = self.fee(&proxy).unwrap_or(u128::MAX);
        if unclaimed.saturating_mul(fee) < self.cfg.payout_threshold {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.claim_if_due(proxy, worker_sc).await {
                tracing::warn!("payout claim failed: {e}");
            }
        });
        Ok(())
    }

    /// Claims the newest voucher from `proxy` if the unclaimed amount reaches the threshold.
    pub async fn claim_if_due(
        &self,
        proxy: Address,
        worker_sc: Address,
    ) -> Result<bool, WorkerError> {
        let (tokens, body_hex, claimed) = {
            let held = self.held.lock();
            match held.get(&proxy) {
                Some(h) => (h.tokens, h.body_hex.clone(), h.claimed),
                None => return Ok(false),
            }
        };
        let fee = match self.fee(&proxy) {
            Some(fee) => fee,
            None => {
                chain_client::read_proxy(self.chain()?.as_ref(), &proxy)
                    .await?
                    .params
                    .worker_fee_per_token
            }
        };
        if (tokens.saturating_sub(claimed) as u128).saturating_mul(fee) < self.cfg.payout_threshold
            || tokens <= claimed
        {
            return Ok(false);
        }
        // Claimed already by someone else with this voucher (`cocoon worker payout`, a previous
        // run that crashed before saving): record it instead of paying a fee for a refusal.
        let paid = self.paid_on_chain(&worker_sc).await?;
        if paid >= tokens {
            if let Some(h) = self.held.lock().get_mut(&proxy) {
                h.claimed = h.claimed.max(paid);
            }
            save_held(&self.cfg.dir, &self.held());
            return Ok(false);
        }
        self.claim(proxy, worker_sc, tokens, &body_hex).await?;
        Ok(true)
    }

    /// Tokens our worker contract `worker_sc` has been paid for (0 before it is deployed).
    pub(crate) async fn paid_on_chain(&self, worker_sc: &Address) -> Result<u64, WorkerError> {
        Ok(match self.chain()?.account(worker_sc).await?.data {
            Some(d) => WorkerData::parse(&d)?.tokens_paid,
            None => 0,
        })
    }

    /// Submits the newest voucher from `proxy` now (deploying the worker contract if needed).
    pub async fn claim_now(&self, proxy: Address) -> Result<u64, WorkerError> {
        let (tokens, body_hex) = {
            let held = self.held.lock();
            let h = held
                .get(&proxy)
                .ok_or_else(|| WorkerError::Refused(format!("no voucher from {proxy}")))?;
            (h.tokens, h.body_hex.clone())
        };
        let bytes = hex::decode(&body_hex).map_err(|e| {
            WorkerError::Refused(format!("the voucher held from {proxy} is not hex: {e}"))
        })?;
        let body = cocoon_chain::cells::from_boc(&bytes)?;
        let target = SignedVoucher::parse(&body)?.voucher.target;
        self.claim(proxy, target, tokens, &body_hex).await?;
        Ok(tokens)
    }

    async fn claim(
        &self,
        proxy: Address,
        worker_sc: Address,
        tokens: u64,
        body_hex: &str,
    ) -> Result<(), WorkerError> {
        let _claiming = self.claiming.lock().await;
        if self.held().get(&proxy).is_some_and(|h| h.claimed >= tokens) {
            return Ok(()); // a claim that waited for the lock already covered these tokens
        }
        let chain = self.chain()?;
        let init = match chain.account(&worker_sc).await?.status == "active" {
            true => None,
            false => {
                let data = chain_client::read_proxy(chain.as_ref(), &proxy).await?;
                Some(data.init().worker_state_init(proxy, self.owner())?)
            }
        };
        // From the machine wallet, the rest of the value back to it (the earnings go to the
        // worker contract's owner, our wallet), as a reference worker submits them.
        let msg = payout_message(body_hex, worker_sc, init, self.machine.address())?;
        let funder = (&self.wallet.1, &self.wallet.0);
        self.machine.send(chain.as_ref(), funder, &[msg]).await?;
        if let Some(h) = self.held.lock().get_mut(&proxy) {
            h.claimed = h.claimed.max(tokens);
        }
        save_held(&self.cfg.dir, &self.held());
        tracing::info!("claimed payout voucher for {tokens} tokens from proxy {proxy}");
        Ok(())
    }
}

/// Keeps a payment for `tokens` (its BOC `data`) as the newest held one, unless it promises
/// less than the one held: vouchers are cumulative, so a smaller one is a proxy going backwards.
fn advance(held: &mut HeldVoucher, tokens: u64, data: &[u8]) -> Result<(), String> {
    if tokens < held.tokens {
        return Err(format!(
            "voucher went backwards: {tokens} < {}",
            held.tokens
        ));
    }
    held.tokens = tokens;
    held.body_hex = hex::encode(data);
    Ok(())
}

/// The message that claims a held voucher (`body_hex`, the proxy-signed payout) at our worker
/// contract `worker_sc`, deploying it with `init` when it is not active yet. What the worker
/// sends when a payout is due, and what `cocoon worker payout` sends by hand.
pub fn payout_message(
    body_hex: &str,
    worker_sc: Address,
    init: Option<cocoon_chain::tycho_types::models::StateInit>,
    redeemer: Address,
) -> Result<OutMessage, WorkerError> {
    let bytes = hex::decode(body_hex)
        .map_err(|e| WorkerError::Protocol(format!("the held voucher is not hex: {e}")))?;
    let body = SignedVoucher::redeem(&bytes, redeemer)?;
    let mut msg = OutMessage::transfer(worker_sc, MIN_FEE, Some(body));
    msg.init = init;
    Ok(msg)
}

fn held_path(dir: &std::path::Path) -> PathBuf {
    dir.join("vouchers.json")
}

/// The vouchers a worker's state directory holds, per proxy contract (empty when there is no
/// file yet). A file that does not parse is an error naming it, never read as empty: the next
/// save would overwrite the vouchers it holds.
pub fn held_vouchers(
    dir: &std::path::Path,
) -> Result<HashMap<Address, HeldVoucher>, cocoon_chain::ChainError> {
    Ok(cocoon_chain::files::read_json(&held_path(dir))?.unwrap_or_default())
}

fn save_held(dir: &std::path::Path, held: &HashMap<Address, HeldVoucher>) {
    if let Err(e) = cocoon_chain::files::write_json(&held_path(dir), held) {
        tracing::error!("saving vouchers: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_chain::keys::Keypair;
    use cocoon_chain::messages::op;
    use cocoon_chain::reference_contracts::Payee;
    use cocoon_chain::voucher::Voucher;

    fn payment(key: &Keypair, op: u32, tokens: u64, target: Address) -> Vec<u8> {
        let voucher = Voucher {
            op,
            query_id: tokens,
            counter: tokens,
            target,
        };
        let excesses = Address::new([7; 32]);
        cocoon_chain::cells::to_boc(&voucher.sign(key, excesses).unwrap().body().unwrap())
    }

    #[test]
    fn a_payment_is_accepted_only_from_the_proxys_key_for_our_contract_and_op() {
        let proxy = Keypair::from_seed([1; 32]);
        let ours = Address::new([2; 32]);
        let key = proxy.public_key();
        let good = payment(&proxy, op::WORKER_PAYOUT_SIGNED, 134, ours);
        assert_eq!(
            reference::check_payment(&good, Payee::Worker, &key, &ours),
            Ok(134)
        );

        let forged = payment(
            &Keypair::from_seed([9; 32]),
            op::WORKER_PAYOUT_SIGNED,
            134,
            ours,
        );
        let e = reference::check_payment(&forged, Payee::Worker, &key, &ours).unwrap_err();
        assert!(e.contains("signature"), "{e}");

        let elsewhere = payment(&proxy, op::WORKER_PAYOUT_SIGNED, 134, Address::new([3; 32]));
        let e = reference::check_payment(&elsewhere, Payee::Worker, &key, &ours).unwrap_err();
        assert!(e.contains(&ours.to_string()), "{e}");

        let other_op = payment(&proxy, op::CLIENT_CHARGE_SIGNED, 134, ours);
        assert!(reference::check_payment(&other_op, Payee::Worker, &key, &ours).is_err());

        assert!(reference::check_payment(b"not a boc", Payee::Worker, &key, &ours).is_err());
    }

    #[test]
    fn held_vouchers_only_move_forward() {
        let mut held = HeldVoucher::default();
        advance(&mut held, 0, b"zero").unwrap();
        advance(&mut held, 134, b"a").unwrap();
        // The same total again (a repeated voucher) is fine.
        advance(&mut held, 134, b"b").unwrap();
        assert_eq!(
            advance(&mut held, 133, b"c").unwrap_err(),
            "voucher went backwards: 133 < 134"
        );
        assert_eq!((held.tokens, held.body_hex.as_str()), (134, "62"));
        advance(&mut held, u64::MAX, b"d").unwrap();
        assert_eq!(held.tokens, u64::MAX);
    }
}
