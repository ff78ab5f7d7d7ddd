//! One connection to a proxy: dial, check the proxy (registered in the root, its key, its
//! contract for us, that its ledger knows every token we hold), announce ourselves, and serve
//! its packets until the connection ends.

use std::sync::Arc;

use super::*;

impl Worker {
    /// One session with the proxy at `addr`: connect, check the proxy (its contract, its key,
    /// that it knows every token we hold or were paid), then serve its queries until the
    /// connection ends. Returns why the proxy was refused, or `Ok` when it closed.
    pub async fn session(self: Arc<Self>, addr: SocketAddr) -> Result<(), WorkerError> {
        let identity = self.identity.get();
        let conn = cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            self.cfg.max_pow_difficulty,
            cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
        )
        .await?;
        let proxy_contract: Arc<Mutex<Option<Address>>> = Arc::new(Mutex::new(None));
        let me = self.clone();
        let pc = proxy_contract.clone();
        // As in COCOON, every request and every answer is a one-way packet.
        let on_packet = Arc::new(move |peer: &Peer, data: Vec<u8>| {
            if let Ok(request) = cocoon_wire::decode::<ProxyRequest>(&data) {
                let proxy = *pc.lock();
                let peer = peer.clone();
                let out = move |packet| peer.send(packet).is_ok();
                tokio::spawn(me.clone().run_query(out, proxy, request));
            } else if let Ok(CancelQuery { request_id }) = cocoon_wire::decode::<CancelQuery>(&data)
            {
                if let Some(stop) = me.running.lock().remove(&request_id) {
                    let _ = stop.send(());
                }
            } else if let Ok(RequestPayment::Worker { signed_payment, .. }) =
                cocoon_wire::decode::<RequestPayment>(&data)
            {
                let proxy = *pc.lock();
                if let Some(proxy) = proxy {
                    if let Err(e) = me.take_voucher(proxy, &signed_payment) {
                        tracing::error!("proxy {proxy} sent a bad voucher: {e}; disconnecting");
                        peer.close();
                    }
                }
            }
        });
        let peer = Peer::spawn(conn, cocoon_net::rpc::no_queries(), on_packet);
        let t = Duration::from_secs(30);

        // 1. Announce.
        let c = *self.controls.borrow();
        let features = self.engine.features();
        let params = WorkerParams {
            flags: (),
            worker_owner_address: self.owner().to_raw().into_bytes(),
            model: self.cfg.model.clone().into_bytes(),
            coefficient: c.coefficient as i32,
            is_test: Some(chain_client::is_test(self.chain.as_deref())),
            proxy_cnt: Some(1),
            max_active_requests: Some(self.cfg.max_active as i32),
            // 1 and 2 are COCOON's; 3 is 2 plus `proxy.cancelQuery`, which a proxy sends only
            // to a worker that announced it (a reference proxy settles on 2).
            min_proto_version: Some(1),
            max_proto_version: Some(cocoon_wire::PROTO_WITH_CANCEL),
            supports_tools: features.tools.then_some(()),
            supports_structured_output: features.structured_output.then_some(()),
        };
        let connected: ConnectedToProxy = peer
            .request(&WorkerRequest::ConnectToProxy { params }, t)
            .await?;
        chain_client::check_test_mode(
            chain_client::is_test(self.chain.as_deref()),
            connected.params.is_test,
        )
        .map_err(WorkerError::Refused)?;
        let (proxy, worker_sc) = match &self.fake_ton {
            None => self.check_proxy(&connected).await?,
            Some(fake) => self.fake_ton_proxy(fake, &connected)?,
        };
        *proxy_contract.lock() = Some(proxy);

        // 2. Compare balances: the proxy must know every token we were promised or paid.
        let onchain_paid = match self.chain {
            Some(_) => self.paid_on_chain(&worker_sc).await?,
            None => 0,
        };
        let held = self.held.lock().get(&proxy).map(|h| h.tokens).unwrap_or(0);
        let request = WorkerRequest::CompareBalanceWithProxy {
            tokens_committed_to_blockchain: onchain_paid,
            tokens_committed_to_db: held,
            max_tokens: held.max(onchain_paid),
        };
        let result: CompareBalanceResult = peer.request(&request, t).await?;
        if result.error_code != 0 || result.tokens_committed_to_db < held.max(onchain_paid) {
            peer.close();
            return Err(WorkerError::Refused(format!(
                "proxy {proxy} rolled back: it knows {} tokens, we hold {held} and were paid {onchain_paid} on chain",
                result.tokens_committed_to_db
            )));
        }
        self.take_voucher(proxy, &result.signed_payment)
            .map_err(WorkerError::Refused)?;

        // 3. Ready.
        let is_disabled = !self.controls.borrow().serving();
        let _: cocoon_wire::worker::HandshakeCompleted = peer
            .request(&WorkerRequest::ProxyHandshakeComplete { is_disabled }, t)
            .await?;
        self.connected.lock().insert(proxy, addr);
        let _counted = self.metrics.peer("proxy");
        tracing::info!("serving proxy {proxy} at {addr}");

        // Forward control changes until the connection ends.
        let mut controls = self.controls.subscribe();
        let mut last = *controls.borrow();
        let mut stopped = self.stopped.subscribe();
        loop {
            tokio::select! {
                _ = peer.closed() => break,
                _ = stopped.wait_for(|s| *s) => {
                    peer.close();
                    break;
                }
                changed = controls.changed() => {
                    if changed.is_err() { break; }
                    let now = *controls.borrow();
                    if now.serving() != last.serving() {
                        let _ = peer.send(cocoon_wire::encode(&EnabledDisabled { disabled: i32::from(!now.serving()) }));
                    }
                    if now.coefficient != last.coefficient {
                        let _ = peer.send(cocoon_wire::encode(&NewCoefficient { new_coefficient: now.coefficient as i32 }));
                    }
                    last = now;
                }
            }
        }
        self.connected.lock().remove(&proxy);
        Ok(())
    }

    /// The chain, or an error saying there is none (fake-TON mode).
    pub(crate) fn chain(&self) -> Result<&Arc<dyn ChainClient>, WorkerError> {
        self.chain.as_ref().ok_or_else(|| {
            WorkerError::Refused(
                "this worker runs on a fake-TON root: there is no chain to read or claim on".into(),
            )
        })
    }

    pub(crate) async fn read_root(&self) -> Result<cocoon_chain::contracts::RootData, WorkerError> {
        Ok(chain_client::read_root(self.chain()?.as_ref(), &self.cfg.root).await?)
    }

    /// On a fake-TON root there is no chain to read a proxy's contract from; as a reference
    /// worker does, we recompute the contracts from the root's code instead: our worker contract
    /// at the proxy it names (always), and its proxy contract from its owner and key under our
    /// root (when the config names the root the reference roles use). A proxy naming other
    /// contracts is refused. Billing counts tokens with the root's params (the file's prices,
    /// the reference's multipliers of 1.0).
    fn fake_ton_proxy(
        &self,
        fake: &FakeRoot,
        c: &ConnectedToProxy,
    ) -> Result<(Address, Address), WorkerError> {
        let announced = AnnouncedProxy {
            owner: &c.params.proxy_owner_address,
            contract: &c.params.proxy_sc_address,
            public_key: &c.params.proxy_public_key,
            is_test: c.params.is_test,
            ours: &c.worker_sc_address,
        };
        let (proxy, worker_sc) = fake
            .check_proxy(announced, true, &self.owner(), &self.cfg.root)
            .map_err(WorkerError::Refused)?;
        self.proxy_keys
            .lock()
            .insert(proxy, (c.params.proxy_public_key, worker_sc));
        self.proxy_params
            .lock()
            .insert(proxy, fake.contracts.params_view());
        Ok((proxy, worker_sc))
    }

    /// Checks the proxy's claims against the chain: its contract is registered in the root,
    /// holds the voucher key it announced, and our worker contract is where it says.
    async fn check_proxy(&self, c: &ConnectedToProxy) -> Result<(Address, Address), WorkerError> {
        let chain_client::VerifiedProxy {
            address: proxy,
            data,
            ours: worker_sc,
        } = chain_client::verify_proxy(
            self.chain()?.as_ref(),
            &self.cfg.root,
            &c.params.proxy_sc_address,
            &c.params.proxy_public_key,
            chain_client::Party::Worker,
            self.owner(),
            &c.worker_sc_address,
        )
        .await
        .map_err(WorkerError::Refused)?;
        self.proxy_keys
            .lock()
            .insert(proxy, (data.proxy_public_key, worker_sc));
        self.proxy_params.lock().insert(proxy, data.params.clone());
        Ok((proxy, worker_sc))
    }
}
