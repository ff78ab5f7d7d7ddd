//! The client's money at each proxy: its contract deployed and topped up, the proxy's
//! vouchers checked and kept, the newest charge committed on chain when due, and the refund.

use super::*;

impl Client {
    /// Sends `messages` from our machine wallet (four to a signed transfer, its limit), after
    /// the paying wallet made sure it holds their value above the wallet's floor.
    pub(crate) async fn send(&self, messages: &[OutMessage]) -> Result<(), ClientError> {
        let chain = self.chain()?;
        let funder = (&self.wallet.1, &self.wallet.0);
        self.machine.send(chain.as_ref(), funder, messages).await?;
        Ok(())
    }

    /// Deploys, funds, stakes and sets the secret hash of our client contract as needed.
    pub(crate) async fn ensure_contract(
        &self,
        proxy: Address,
        client_sc: Address,
        init: &ProxyInit,
    ) -> Result<(), ClientError> {
        let secret_hash: [u8; 32] = Sha256::digest(self.secret).into();
        let stake = self.cfg.stake.max(init.params.min_client_stake);
        let current = self.client_data(&client_sc).await?;
        let mut msgs = Vec::new();
        match &current {
            None => {
                let deposit = self.cfg.deposit.max(stake);
                let si = init.client_state_init(proxy, self.owner())?;
                // Deployed, funded and given our secret's hash by one message.
                let body = messages::client::change_secret_hash_and_top_up(
                    0,
                    deposit,
                    &secret_hash,
                    &self.owner(),
                )?;
                msgs.push(OutMessage {
                    init: Some(si),
                    ..OutMessage::transfer(client_sc, deposit.saturating_add(MIN_FEE), Some(body))
                });
                msgs.push(OutMessage::transfer(
                    client_sc,
                    MIN_FEE,
                    Some(messages::client::increase_stake(0, stake, &self.owner())?),
                ));
            }
            Some(c) => {
                if c.state != ContractState::Open {
                    return Err(ClientError::Refused(format!(
                        "our client contract {client_sc} is {:?}; reopen it with a top-up or use a new wallet",
                        c.state
                    )));
                }
                if c.stake < stake && c.balance >= stake {
                    msgs.push(OutMessage::transfer(
                        client_sc,
                        MIN_FEE,
                        Some(messages::client::increase_stake(0, stake, &self.owner())?),
                    ));
                }
                if c.secret_hash != secret_hash {
                    msgs.push(OutMessage::transfer(
                        client_sc,
                        MIN_FEE,
                        Some(messages::client::change_secret_hash(
                            0,
                            &secret_hash,
                            &self.owner(),
                        )?),
                    ));
                }
            }
        }
        if !msgs.is_empty() {
            tracing::info!(
                "preparing client contract {client_sc} ({} messages)",
                msgs.len()
            );
            self.send(&msgs).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(c) = self.client_data(&client_sc).await? {
                    if c.secret_hash == secret_hash && c.stake >= stake.min(c.balance) {
                        break;
                    }
                }
                if std::time::Instant::now() > deadline {
                    return Err(ClientError::Refused(format!(
                        "client contract {client_sc} not ready after 60 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let c = self.client_data(&client_sc).await?.ok_or_else(|| {
            ClientError::Refused(format!(
                "client contract {client_sc} has no state after deployment"
            ))
        })?;
        let mut accounts = self.accounts.lock();
        let a = accounts.entry(proxy).or_default();
        a.proxy = proxy;
        a.client_contract = client_sc;
        a.committed_tokens = c.tokens_used;
        a.balance = c.balance;
        a.stake = c.stake;
        a.price_per_token = c.init.price_per_token;
        a.proxy_key = init.proxy_public_key;
        Ok(())
    }

    async fn client_data(&self, client_sc: &Address) -> Result<Option<ClientData>, ClientError> {
        Ok(match self.chain()?.account(client_sc).await?.data {
            Some(d) => Some(ClientData::parse(&d)?),
            None => None,
        })
    }

    /// Checks a charge voucher like the client contract will and keeps it if newer.
    pub(crate) fn take_voucher(
        self: &Arc<Self>,
        proxy: Address,
        payment: &SignedPayment,
    ) -> Result<(), String> {
        let SignedPayment::Signed { data } = payment else {
            return Ok(());
        };
        let mut accounts = self.accounts.lock();
        let a = accounts
            .get_mut(&proxy)
            .ok_or("voucher from an unknown proxy")?;
        // As the client contract will check it: the proxy's key, the charge op, our contract.
        let tokens = reference::check_payment(
            data,
            reference::Payee::Client,
            &a.proxy_key,
            &a.client_contract,
        )?;
        if tokens < a.voucher_tokens {
            return Err(format!(
                "charge went backwards: {tokens} < {}",
                a.voucher_tokens
            ));
        }
        a.voucher_tokens = tokens;
        a.voucher_body = Some(data.clone());
        // Only go to the chain when the cached state says something is due.
        let due = Funding::of(
            a.voucher_tokens,
            a.committed_tokens,
            a.price_per_token,
            a.balance,
            a.stake,
        );
        drop(accounts);
        // Nothing to commit or top up without a chain (a fake-TON root).
        if !(due.commit || due.top_up) || self.chain.is_none() {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.keep_funded(proxy).await {
                tracing::warn!("keeping the client contract funded failed: {e}");
            }
        });
        Ok(())
    }

    /// Commits the newest charge once half the stake is used; tops up by one stake when the
    /// paid balance minus uncommitted use falls under half the stake.
    pub async fn keep_funded(&self, proxy: Address) -> Result<(), ClientError> {
        let _guard = self.funding.lock().await;
        let a = match self.accounts.lock().get(&proxy) {
            Some(a) => a.clone(),
            None => return Ok(()),
        };
        let Some(c) = self.client_data(&a.client_contract).await? else {
            return Ok(());
        };
        let due = Funding::of(
            a.voucher_tokens,
            c.tokens_used,
            c.init.price_per_token,
            c.balance,
            c.stake,
        );
        let mut msgs = Vec::new();
        if due.commit {
            if let Some(body) = &a.voucher_body {
                msgs.push(signed_body(a.client_contract, body, self.owner())?);
            }
        }
        if due.top_up {
            msgs.push(OutMessage::transfer(
                a.client_contract,
                c.stake.saturating_add(MIN_FEE),
                Some(messages::client::top_up(0, c.stake, &self.owner())?),
            ));
        }
        if !msgs.is_empty() {
            self.send(&msgs).await?;
        }
        if let Some(c) = self.client_data(&a.client_contract).await? {
            if let Some(acc) = self.accounts.lock().get_mut(&proxy) {
                acc.committed_tokens = c.tokens_used;
                acc.balance = c.balance;
                acc.stake = c.stake;
            }
        }
        Ok(())
    }

    /// Commits the newest charge voucher at every proxy now.
    pub async fn commit_all(self: &Arc<Self>) -> Result<(), ClientError> {
        // Ask each proxy for its newest voucher first (the last ones may still be in flight).
        for c in self.live() {
            let status: cocoon_wire::client::ClientPaymentStatus = c
                .peer
                .request(&ClientRequest::UpdatePaymentStatus, Duration::from_secs(10))
                .await
                .map_err(remote)?;
            if let Err(e) = self.take_voucher(c.proxy, &status.signed_payment) {
                tracing::warn!("proxy {} payment status: {e}", c.proxy);
            }
        }
        let accounts = self.accounts();
        for a in accounts {
            if let Some(body) = &a.voucher_body {
                if a.voucher_tokens > a.committed_tokens {
                    self.send(&[signed_body(a.client_contract, body, self.owner())?])
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Asks every proxy for the final refund voucher and submits it: the contract charges the
    /// last use and returns everything else to its owner, our machine wallet. Returns the
    /// contracts closed.
    pub async fn refund_all(&self) -> Result<Vec<Address>, ClientError> {
        let mut closed = Vec::new();
        for c in self.live() {
            let refund: Refund = c
                .peer
                .request(&ClientRequest::RequestRefund, Duration::from_secs(30))
                .await
                .map_err(remote)?;
            match refund {
                Refund::Granted { data } => {
                    self.send(&[signed_body(c.client_sc, &data, self.owner())?])
                        .await?;
                    closed.push(c.client_sc);
                }
                Refund::Rejected { active_queries } => {
                    return Err(ClientError::Remote {
                        status: 409,
                        message: format!(
                            "proxy {} refused the refund: {active_queries} queries still running",
                            c.proxy
                        ),
                    })
                }
            }
        }
        Ok(closed)
    }
}

/// What keeping a client contract funded calls for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Funding {
    /// Uncommitted charges reach half the stake: commit the newest voucher.
    commit: bool,
    /// The balance left after them falls under half the stake: top up by a stake.
    top_up: bool,
}

impl Funding {
    /// Judges `voucher_tokens` charged against `committed` on chain at `price`, with the
    /// contract's `balance` and `stake` (nanotons); saturating, never overflowing.
    fn of(voucher_tokens: u64, committed: u64, price: u128, balance: u128, stake: u128) -> Self {
        let uncommitted = (voucher_tokens.saturating_sub(committed) as u128).saturating_mul(price);
        Funding {
            commit: uncommitted > 0 && uncommitted.saturating_mul(2) >= stake,
            top_up: balance.saturating_sub(uncommitted).saturating_mul(2) < stake,
        }
    }
}

/// The message that submits a body the proxy signed (a voucher or a refund, as a BOC) to our
/// client contract, the rest of its value meant for `redeemer` (our machine wallet; outside the
/// signature).
pub(crate) fn signed_body(
    client_sc: Address,
    boc: &[u8],
    redeemer: Address,
) -> Result<OutMessage, ClientError> {
    let body = cocoon_chain::voucher::SignedVoucher::redeem(boc, redeemer)?;
    Ok(OutMessage::transfer(client_sc, MIN_FEE, Some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funding_is_due_at_half_the_stake() {
        let f = |tokens, balance| Funding::of(tokens, 0, 10, balance, 1_000);
        // Nothing charged, balance at the stake: nothing to do.
        assert_eq!(
            f(0, 1_000),
            Funding {
                commit: false,
                top_up: false
            }
        );
        // One token short of half the stake, then exactly half.
        assert!(!f(49, 10_000).commit);
        assert!(f(50, 10_000).commit);
        // The balance after charges: exactly half the stake is enough, one nanoton less is not.
        assert!(!f(50, 1_000).top_up);
        assert!(Funding::of(50, 0, 10, 999, 1_000).top_up);
        // Extreme values saturate instead of overflowing.
        let huge = Funding::of(u64::MAX, 0, u128::MAX, u128::MAX, u128::MAX);
        assert!(huge.commit && huge.top_up);
    }
}
