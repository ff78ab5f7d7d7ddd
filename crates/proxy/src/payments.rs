//! The proxy's payments: signed vouchers (ours, or the reference's form on a fake-TON root)
//! for clients' charges and workers' payouts, queued as queries finish and sent in small
//! batches carrying each party's newest durable total.

use super::*;

impl Proxy {
    /// Queues the newest vouchers for a finished request's client and worker. A background
    /// task sends them within [`VOUCHER_BATCH`]: vouchers are cumulative, so one signature
    /// covers every request of the batch.
    pub(crate) fn queue_vouchers(
        &self,
        client_owner: Address,
        client: Peer,
        worker_owner: Address,
        worker: Peer,
        request_id: [u8; 32],
    ) {
        let mut q = self.vouchers.lock();
        q.clients.insert(client_owner, (client, request_id));
        q.workers
            .insert(worker_owner, (worker, request_id, client_owner));
        drop(q);
        self.voucher_wake.notify_one();
    }

    pub(crate) fn signed_payment(
        &self,
        op: u32,
        counter: u64,
        target: Address,
    ) -> cocoon_wire::common::SignedPayment {
        // COCOON's signed form on every root; the rest of a submitting message's value is
        // meant for our wallet (the proxy's owner, not recomputed per signature).
        let body = Voucher {
            op,
            query_id: counter,
            counter,
            target,
        }
        .sign(&self.voucher_key, self.init.owner)
        .and_then(|v| v.body());
        match body {
            Ok(cell) => cocoon_wire::common::SignedPayment::Signed {
                data: cocoon_chain::cells::to_boc(&cell),
            },
            Err(e) => {
                tracing::error!("signing a voucher failed: {e}");
                cocoon_wire::common::SignedPayment::Empty
            }
        }
    }

    /// Shows on `/metrics` what the vouchers sent so far promise in all, per role (one series
    /// per role, not per party: a public proxy's parties are unbounded; each party's figure is
    /// in `/jsonstats`).
    fn note_vouchers(&self, charged: u64) {
        let charged = i64::try_from(charged).unwrap_or(i64::MAX);
        for role in ["client", "worker"] {
            self.metrics
                .vouchers
                .get_or_create(&cocoon_observe::Kind::of(role))
                .set(charged);
        }
    }

    pub(crate) fn worker_voucher(
        &self,
        owner: Address,
        tokens: u64,
    ) -> cocoon_wire::common::SignedPayment {
        match self.worker_contract(owner) {
            // A reference worker wants a signed payment even for nothing yet.
            Ok(target) if tokens > 0 || self.reference.is_some() => {
                self.signed_payment(op::WORKER_PAYOUT_SIGNED, tokens, target)
            }
            _ => cocoon_wire::common::SignedPayment::Empty,
        }
    }

    pub(crate) fn client_voucher(
        &self,
        owner: Address,
        tokens: u64,
    ) -> cocoon_wire::common::SignedPayment {
        match self.client_contract(owner) {
            Ok(target) if tokens > 0 => {
                self.signed_payment(op::CLIENT_CHARGE_SIGNED, tokens, target)
            }
            _ => cocoon_wire::common::SignedPayment::Empty,
        }
    }
}

/// Sends queued vouchers: the newest durable totals, in ledger order, one per party.
pub(crate) async fn voucher_loop(proxy: Arc<Proxy>) {
    loop {
        proxy.voucher_wake.notified().await;
        tokio::time::sleep(VOUCHER_BATCH).await;
        let q = std::mem::take(&mut *proxy.vouchers.lock());
        let _order = proxy.sending.lock();
        // The durable totals of the parties in this batch (not a copy of every party's).
        let (clients, workers) = {
            let ledger = proxy.ledger.lock();
            let d = ledger.durable();
            proxy.note_vouchers(d.charged);
            let of =
                |m: &HashMap<Address, u64>, owner: &Address| m.get(owner).copied().unwrap_or(0);
            (
                q.clients
                    .into_iter()
                    .map(|(owner, v)| (owner, v, of(&d.clients, &owner)))
                    .collect::<Vec<_>>(),
                q.workers
                    .into_iter()
                    .map(|(owner, v)| (owner, v, of(&d.workers, &owner)))
                    .collect::<Vec<_>>(),
            )
        };
        for (owner, (peer, request_id), total) in clients {
            let _ = peer.send(cocoon_wire::encode(
                &cocoon_wire::proxy::RequestPayment::Client {
                    request_id,
                    signed_payment: proxy.client_voucher(owner, total),
                    db_tokens: total,
                    max_tokens: total,
                    request_tokens: 0,
                },
            ));
        }
        for (owner, (peer, request_id, client_owner), total) in workers {
            let _ = peer.send(cocoon_wire::encode(
                &cocoon_wire::proxy::RequestPayment::Worker {
                    request_id,
                    signed_payment: proxy.worker_voucher(owner, total),
                    db_tokens: total,
                    max_tokens: total,
                    request_tokens: 0,
                    request_client_owner: client_owner.to_raw().into_bytes(),
                },
            ));
        }
    }
}
