//! A client's credit at this proxy: what its contract on chain allows (stake beyond what is
//! committed, never beyond its balance), less what the ledger and running requests already use;
//! and the reservation a request holds while it runs.

use std::time::{Duration, Instant};

use cocoon_chain::contracts::{ClientData, ContractState};
use cocoon_chain::price::adjust;
use cocoon_chain::Address;
use cocoon_net::rpc::RpcError;
use sha2::{Digest, Sha256};

use crate::clients::err;
use crate::Proxy;

/// How long an on-chain snapshot of a client contract is trusted.
const ONCHAIN_TTL: Duration = Duration::from_secs(3);

/// A client contract as a reference proxy imagines it on a fake-TON root: open, a million TON
/// paid and staked, nothing charged on chain, and the secret hash SHA-256 of nothing (so the
/// reference's clients authorize with an empty secret, or the long way).
fn fake_ton_client(proxy: &Proxy, owner: Address) -> ClientData {
    let million = 1_000_000 * cocoon_chain::TON;
    ClientData {
        state: ContractState::Open,
        balance: million,
        stake: million,
        tokens_used: 0,
        unlock_ts: 0,
        secret_hash: Sha256::digest([]).into(),
        init: cocoon_chain::contracts::ClientInitView {
            owner,
            proxy: proxy.address(),
            price_per_token: proxy.params().price_per_token,
            client_delay_before_close: proxy.params().client_delay_before_close,
            min_client_stake: proxy.params().min_client_stake,
        },
    }
}

/// The client contract of `owner` on chain (a snapshot at most [`ONCHAIN_TTL`] old unless
/// `fresh`), `None` when it is not deployed; on a fake-TON root, the reference's fake one.
pub(crate) async fn onchain(
    proxy: &Proxy,
    owner: Address,
    fresh: bool,
) -> Result<Option<ClientData>, RpcError> {
    if !fresh {
        if let Some((d, at)) = proxy.book.lock().onchain.get(&owner) {
            if at.elapsed() < ONCHAIN_TTL {
                return Ok(Some(d.clone()));
            }
        }
    }
    let Some(chain) = &proxy.chain else {
        return Ok(Some(fake_ton_client(proxy, owner)));
    };
    let address = proxy
        .client_contract(owner)
        .map_err(|e| err(500, e.to_string()))?;
    let acc = chain
        .account(&address)
        .await
        .map_err(|e| err(503, format!("chain unavailable: {e}")))?;
    let Some(data) = acc.data else {
        return Ok(None);
    };
    let data = ClientData::parse(&data).map_err(|e| err(500, e.to_string()))?;
    proxy
        .book
        .lock()
        .onchain
        .insert(owner, (data.clone(), Instant::now()));
    Ok(Some(data))
}

/// The most a request can cost, in adjusted tokens: (max_tokens + body bytes) at the client's
/// coefficient limit and the dearest multiplier.
pub fn reservation(
    max_tokens: u64,
    body_bytes: u64,
    max_coefficient: u32,
    params: &cocoon_chain::contracts::Params,
) -> u64 {
    let mult = params
        .prompt_mult
        .max(params.cached_mult)
        .max(params.completion_mult)
        .max(params.reasoning_mult);
    adjust(max_tokens.saturating_add(body_bytes), max_coefficient, mult)
}

/// Tokens a client may still use: up to its stake beyond what is committed on chain, never
/// beyond its balance, minus what the ledger and running requests already use.
pub fn credit(onchain: &ClientData, ledger_total: u64, reserved: u64) -> u64 {
    let price = onchain.init.price_per_token.max(1);
    let allowed =
        (onchain.tokens_used as u128).saturating_add(onchain.balance.min(onchain.stake) / price);
    let allowed = allowed.min(u64::MAX as u128) as u64;
    allowed
        .saturating_sub(ledger_total.max(onchain.tokens_used))
        .saturating_sub(reserved)
}

/// Tokens of a client's credit held by one running request, given back when dropped.
pub(crate) struct Reservation<'a> {
    proxy: &'a Proxy,
    owner: Address,
    tokens: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.proxy.metrics.active.dec();
        let mut book = self.proxy.book.lock();
        if let Some(r) = book.reserved.get_mut(&self.owner) {
            *r = r.saturating_sub(self.tokens);
        }
        if let Some(a) = book.active.get_mut(&self.owner) {
            *a = a.saturating_sub(1);
        }
    }
}

/// Reserves `reserve` tokens of `owner`'s credit (re-reading its contract once if the cached
/// snapshot says no). The check and the reservation happen under one lock, so two requests
/// cannot both spend the same credit.
pub(crate) async fn reserve_credit(
    proxy: &Proxy,
    owner: Address,
    reserve: u64,
) -> Result<Reservation<'_>, RpcError> {
    let mut fresh = false;
    loop {
        let Some(c) = onchain(proxy, owner, fresh).await? else {
            return Err(err(402, "no client contract on chain"));
        };
        let available = {
            let mut book = proxy.book.lock();
            let reserved = book.reserved.get(&owner).copied().unwrap_or(0);
            let used = proxy
                .ledger
                .lock()
                .totals()
                .clients
                .get(&owner)
                .copied()
                .unwrap_or(0);
            let available = credit(&c, used, reserved);
            if available >= reserve {
                let r = book.reserved.entry(owner).or_default();
                *r = r.saturating_add(reserve);
                *book.active.entry(owner).or_default() += 1;
                proxy.metrics.active.inc();
            }
            available
        };
        if available >= reserve {
            return Ok(Reservation {
                proxy,
                owner,
                tokens: reserve,
            });
        }
        if fresh {
            return Err(err(
                402,
                format!(
                    "insufficient credit: {available} tokens available, this request may cost up to {reserve}; \
                     top up the client contract, raise its stake, or commit the newest charge"
                ),
            ));
        }
        fresh = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_chain::contracts::{ClientInitView, Params};

    fn client(balance: u128, stake: u128, used: u64) -> ClientData {
        ClientData {
            state: ContractState::Open,
            balance,
            stake,
            tokens_used: used,
            unlock_ts: 0,
            secret_hash: [0; 32],
            init: ClientInitView {
                owner: Address::new([1; 32]),
                proxy: Address::new([2; 32]),
                price_per_token: 20,
                client_delay_before_close: 0,
                min_client_stake: 0,
            },
        }
    }

    #[test]
    fn credit_is_stake_beyond_the_onchain_charges_at_most_the_balance() {
        // Stake 1000 nanotons at 20/token = 50 tokens beyond the 100 committed on chain.
        assert_eq!(credit(&client(10_000, 1_000, 100), 100, 0), 50);
        // Uncommitted ledger usage and running reservations use it up.
        assert_eq!(credit(&client(10_000, 1_000, 100), 130, 15), 5);
        assert_eq!(credit(&client(10_000, 1_000, 100), 150, 0), 0);
        assert_eq!(
            credit(&client(10_000, 1_000, 100), 160, 0),
            0,
            "never negative"
        );
        // A balance below the stake caps it (one token short of the stake).
        assert_eq!(credit(&client(980, 1_000, 0), 0, 0), 49);
        // Zero everything.
        assert_eq!(credit(&client(0, 0, 0), 0, 0), 0);
    }

    #[test]
    fn reservation_covers_the_body_and_the_dearest_multiplier() {
        let mut p = Params::local_default();
        assert_eq!(reservation(100, 50, 1000, &p), 150);
        assert_eq!(reservation(100, 50, 2000, &p), 300);
        p.reasoning_mult = 30_000;
        assert_eq!(reservation(100, 50, 1000, &p), 450);
        assert_eq!(reservation(u64::MAX, 1, 1000, &p), u64::MAX, "saturates");
    }
}
