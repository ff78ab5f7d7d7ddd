//! The proxy's own money on chain: its balances read every 10 seconds with the root, and the
//! ledger's state hash committed with COCOON's `save_state` (an unsigned `do_not_process`
//! message to the proxy contract) whenever the ledger moved. As a reference proxy does, the
//! proxy sends it from its machine wallet (COCOON's `CocoonWallet`, the network's code: its own
//! key, the owner's to take back), which the owner's wallet keeps above the 2.1 TON a reference
//! runner waits for (the wallet's code sends nothing below 2 TON).

use super::*;
use cocoon_chain::contracts::ContractState;

impl Proxy {
    /// Reads the contract's and the wallets' money from the chain, keeps it for `/jsonstats`
    /// and sets the `balance_nanotons` gauges (`contract`, `stake`, `earnings`, `clients`,
    /// `wallet`, `machine_wallet`).
    pub async fn refresh_money(&self) -> Result<OnChainMoney, ProxyError> {
        let chain = self.chain()?;
        let contract = chain.account(&self.address).await?;
        let data = contract
            .data
            .as_ref()
            .ok_or_else(|| cocoon_chain::ChainError::NotActive(self.address.to_raw()))?;
        let state = cocoon_chain::contracts::ProxyData::parse(data)?;
        let wallet = chain.account(&self.wallet.1.address()?).await?;
        let machine = chain.account(&self.machine.address()).await?;
        let money = OnChainMoney {
            contract_balance: contract.balance,
            stake: state.stake,
            earnings: state.earnings,
            clients: state.clients_money(contract.balance),
            wallet_balance: wallet.balance,
            machine_wallet_balance: machine.balance,
        };
        for (kind, v) in [
            ("contract", money.contract_balance),
            ("stake", money.stake),
            ("earnings", money.earnings),
            ("clients", money.clients),
            ("wallet", money.wallet_balance),
            ("machine_wallet", money.machine_wallet_balance),
        ] {
            self.metrics
                .balances
                .get_or_create(&cocoon_observe::Kind::of(kind))
                .set(v as f64);
        }
        *self.money.lock() = Some(money);
        Ok(money)
    }

    /// Asks the proxy contract, from the machine wallet, to pay its earnings to the owner
    /// (COCOON's `ext_proxy_payout_request`, as a reference proxy sends it; the rest of the
    /// value comes back to the machine wallet) and waits (up to a minute) until it did. Returns
    /// what was paid; None when nothing is payable.
    pub async fn pay_out_earnings(&self) -> Result<Option<u128>, ProxyError> {
        let chain = self.chain()?;
        let account = chain.account(&self.address).await?;
        let data = account
            .data
            .ok_or_else(|| cocoon_chain::ChainError::NotActive(self.address.to_raw()))?;
        let due = cocoon_chain::contracts::ProxyData::parse(&data)?.payout(account.balance);
        if due == 0 {
            return Ok(None);
        }
        *self.last_payout.lock() = Some(Instant::now());
        // A query id of its own, as the reference draws one (here: the time in milliseconds).
        let query_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let body = messages::proxy::payout_request(query_id, &self.machine.address())?;
        self.send_from_machine(&[OutMessage::transfer(self.address, MIN_FEE, Some(body))])
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while chain_client::read_proxy(chain.as_ref(), &self.address)
            .await?
            .earnings
            != 0
        {
            if Instant::now() > deadline {
                return Err(ProxyError::Io(format!(
                    "asked for the earnings of {due} nanotons; the contract still counts them after a minute"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(
            "paid the earnings, {} TON, to the owner",
            cocoon_chain::format_ton(due)
        );
        Ok(Some(due))
    }
}

/// Uncommitted charges from which the proxy submits a client's newest charge voucher itself,
/// from its machine wallet: a reference proxy's `min_client_charge_sum`, 1 TON. (Our client
/// commits its own at half its stake, usually long before.)
pub const CHARGE_AT: u128 = cocoon_chain::TON;

impl Proxy {
    /// Submits, from the machine wallet, the newest charge voucher of every client that owes it
    /// on chain, as a reference proxy does: a client contract that is closing with charges not
    /// yet on it (its stake covers them only until the close delay ends), or one whose
    /// uncommitted charges reach [`CHARGE_AT`]. Returns the client contracts charged.
    pub async fn charge_clients(&self) -> Result<Vec<Address>, ProxyError> {
        let chain = self.chain()?;
        let owed: Vec<(Address, u64)> = {
            let ledger = self.ledger.lock();
            let d = ledger.durable();
            d.clients
                .iter()
                .filter(|(owner, _)| !d.refunded.contains_key(*owner))
                .map(|(o, t)| (*o, *t))
                .collect()
        };
        let machine = self.machine.address();
        let mut due = Vec::new();
        for (owner, tokens) in owed {
            let recent = self.book.lock().submitted.get(&owner).copied();
            if recent.is_some_and(|(t, at)| t >= tokens && at.elapsed() < Duration::from_secs(60)) {
                continue;
            }
            // A contract the last snapshot shows open with everything committed owes nothing;
            // any other is read again (one account read per owing client per round: whether it
            // is closing cannot be known otherwise).
            let known = self.book.lock().onchain.get(&owner).map(|(d, _)| d.clone());
            if known.is_some_and(|d| d.state == ContractState::Open && d.tokens_used >= tokens) {
                continue;
            }
            let target = self.client_contract(owner)?;
            let Some(data) = chain.account(&target).await?.data else {
                continue;
            };
            let d = ClientData::parse(&data)?;
            self.book
                .lock()
                .onchain
                .insert(owner, (d.clone(), Instant::now()));
            if d.state == ContractState::Closed || d.tokens_used >= tokens {
                continue;
            }
            let uncommitted =
                u128::from(tokens - d.tokens_used).saturating_mul(d.init.price_per_token);
            if d.state != ContractState::Closing && uncommitted < CHARGE_AT {
                continue;
            }
            let cocoon_wire::common::SignedPayment::Signed { data: boc } =
                self.client_voucher(owner, tokens)
            else {
                continue;
            };
            let body = cocoon_chain::voucher::SignedVoucher::redeem(&boc, machine)?;
            due.push((
                owner,
                tokens,
                OutMessage::transfer(target, MIN_FEE, Some(body)),
            ));
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let msgs: Vec<OutMessage> = due.iter().map(|(_, _, m)| m.clone()).collect();
        self.send_from_machine(&msgs).await?;
        let mut charged = Vec::new();
        for (owner, tokens, m) in due {
            self.book
                .lock()
                .submitted
                .insert(owner, (tokens, Instant::now()));
            tracing::info!("charged client {owner} {tokens} tokens on chain ({})", m.to);
            charged.push(m.to);
        }
        Ok(charged)
    }

    /// Sends `msgs` from the machine wallet, the owner's wallet funding it first when needed.
    async fn send_from_machine(&self, msgs: &[OutMessage]) -> Result<(), ProxyError> {
        let chain = self.chain()?;
        let funder = (&self.wallet.1, &self.wallet.0);
        self.machine.send(chain.as_ref(), funder, msgs).await?;
        Ok(())
    }
}

/// Every 10 seconds: the proxy's money (first at once, for the dashboard), its earnings paid
/// to the owner once they reach the threshold, then the root; every minute, the charges
/// clients owe on chain ([`Proxy::charge_clients`]).
pub(crate) async fn refresh_chain_loop(proxy: Arc<Proxy>) {
    for round in 0u64.. {
        if round % 6 == 5 {
            if let Err(e) = proxy.charge_clients().await {
                tracing::warn!("charging clients on chain failed: {e}");
            }
        }
        match proxy.refresh_money().await {
            Ok(money) => {
                let threshold = proxy.cfg.payout_threshold;
                let recently = proxy
                    .last_payout
                    .lock()
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if threshold > 0 && money.earnings >= threshold && !recently {
                    if let Err(e) = proxy.pay_out_earnings().await {
                        tracing::warn!("paying the earnings to the owner failed: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("reading the proxy's balances failed: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let Ok(chain) = proxy.chain() else { return };
        match chain_client::read_root(chain.as_ref(), &proxy.cfg.root).await {
            Ok(r) => *proxy.root.lock() = r,
            Err(e) => tracing::warn!("refreshing the root failed: {e}"),
        }
    }
}

/// Commits the ledger hash on chain whenever it changed since the last commit.
pub(crate) async fn save_state_loop(proxy: Arc<Proxy>) {
    let mut committed_seq = proxy.ledger.lock().seq();
    loop {
        tokio::time::sleep(proxy.cfg.save_state_interval).await;
        let rep = proxy.reputation.lock().clone();
        save_reputation(&proxy.cfg.dir, &rep);
        if let Err(e) = save_state_once(&proxy, &mut committed_seq).await {
            tracing::warn!("save_state failed: {e}");
        }
    }
}

/// What a `save_state` message carries: 1 nanoton, as COCOON's proxy sends it.
const SAVE_STATE_VALUE: u128 = 1;

/// One `save_state` commit if the ledger moved (public for tests and shutdown).
pub async fn save_state_now(proxy: &Arc<Proxy>) -> Result<(), ProxyError> {
    if proxy.chain.is_none() {
        return Ok(());
    }
    let mut seq = 0;
    save_state_once(proxy, &mut seq).await
}

async fn save_state_once(proxy: &Arc<Proxy>, committed_seq: &mut u64) -> Result<(), ProxyError> {
    let (seq, hash, seqno) = {
        let l = proxy.ledger.lock();
        (l.seq(), l.state_hash(), l.totals().saved_seqno + 1)
    };
    if seq == *committed_seq {
        return Ok(());
    }
    // Commit on chain only what is on disk.
    proxy.durable(seq).await?;
    // COCOON's save_state: the seqno is 32 bits, the message carries 1 nanoton (too little for
    // the contract to run on it) and is read back from the contract's transactions.
    let seqno32 = u32::try_from(seqno).map_err(|_| {
        ProxyError::Io(format!(
            "save_state seqno {seqno} does not fit COCOON's 32 bits"
        ))
    })?;
    let body = messages::proxy::save_state(seqno, seqno32, &hash)?;
    let msg = OutMessage {
        bounce: false,
        ..OutMessage::transfer(proxy.address, SAVE_STATE_VALUE, Some(body))
    };
    proxy.send_from_machine(&[msg]).await?;
    proxy.ledger.lock().append(Entry::Saved { seqno })?;
    *committed_seq = proxy.ledger.lock().seq();
    tracing::info!("committed ledger state seqno {seqno}");
    Ok(())
}
