//! The proxy's own money on chain: its balances read every 10 seconds with the root, and the
//! ledger's state hash committed with `save_state` whenever the ledger moved.

use super::*;

impl Proxy {
    /// Reads the contract's and the wallet's money from the chain, keeps it for `/jsonstats`
    /// and sets the `balance_nanotons` gauges (`contract`, `stake`, `clients_held`, `wallet`).
    pub async fn refresh_money(&self) -> Result<OnChainMoney, ProxyError> {
        let chain = self.chain()?;
        let contract = chain.account(&self.address).await?;
        let data = contract
            .data
            .as_ref()
            .ok_or_else(|| cocoon_chain::ChainError::NotActive(self.address.to_raw()))?;
        let state = cocoon_chain::contracts::ProxyData::parse(data)?;
        let wallet = chain.account(&self.wallet.1.address()?).await?;
        let money = OnChainMoney {
            contract_balance: contract.balance,
            stake: state.stake,
            clients_held: state.clients_held,
            wallet_balance: wallet.balance,
        };
        for (kind, v) in [
            ("contract", money.contract_balance),
            ("stake", money.stake),
            ("clients_held", money.clients_held),
            ("wallet", money.wallet_balance),
        ] {
            self.metrics
                .balances
                .get_or_create(&cocoon_observe::Kind::of(kind))
                .set(v as f64);
        }
        *self.money.lock() = Some(money);
        Ok(money)
    }
}

/// Every 10 seconds: the proxy's money (first at once, for the dashboard), then the root.
pub(crate) async fn refresh_chain_loop(proxy: Arc<Proxy>) {
    loop {
        if let Err(e) = proxy.refresh_money().await {
            tracing::warn!("reading the proxy's balances failed: {e}");
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
    let chain = proxy.chain()?;
    let on_chain = chain_client::read_proxy(chain.as_ref(), &proxy.address)
        .await?
        .saved_seqno;
    let seqno = seqno.max(on_chain + 1);
    let body = Voucher {
        op: op::PROXY_SAVE_STATE,
        query_id: seqno,
        counter: seqno,
        target: proxy.address,
        state_hash: Some(hash),
    }
    .sign(&proxy.voucher_key, proxy.init.owner)?
    .body()?;
    chain_client::send_transfer(
        chain.as_ref(),
        &proxy.wallet.1,
        &proxy.wallet.0,
        &[OutMessage::transfer(proxy.address, MIN_FEE, Some(body))],
    )
    .await?;
    proxy.ledger.lock().append(Entry::Saved { seqno })?;
    *committed_seq = proxy.ledger.lock().seq();
    tracing::info!("committed ledger state seqno {seqno}");
    Ok(())
}
