//! One proxy connection: dial it (proof of work, RA-TLS), check it (registered in the root,
//! its key, our contract at it; or the reference's fake-TON root), authorize with our secret,
//! and keep it: a lost connection is dialed again with backoff.

use super::*;

impl Client {
    /// Reconnects lost proxy connections (backoff 1 s doubling to 30 s, per proxy) for as long
    /// as the client lives.
    pub(crate) async fn reconnect_loop(client: std::sync::Weak<Self>, targets: Vec<SocketAddr>) {
        let mut wait: HashMap<SocketAddr, (std::time::Instant, Duration)> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            // The loop ends when the client is dropped.
            let Some(me) = client.upgrade() else { return };
            for addr in &targets {
                let alive = me
                    .conns
                    .lock()
                    .iter()
                    .any(|c| c.addr == *addr && !c.peer.is_closed());
                if alive {
                    wait.remove(addr);
                    continue;
                }
                let (next, backoff) = *wait
                    .entry(*addr)
                    .or_insert((std::time::Instant::now(), Duration::from_secs(1)));
                if std::time::Instant::now() < next {
                    continue;
                }
                match me.clone().connect(*addr).await {
                    Ok(()) => {
                        wait.remove(addr);
                    }
                    Err(e) => {
                        tracing::warn!("reconnecting to proxy {addr}: {e}");
                        wait.insert(
                            *addr,
                            (
                                std::time::Instant::now() + backoff,
                                (backoff * 2).min(Duration::from_secs(30)),
                            ),
                        );
                    }
                }
            }
        }
    }

    pub(crate) async fn connect(self: Arc<Self>, addr: SocketAddr) -> Result<(), ClientError> {
        let identity = self.identity.get();
        let conn = cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            self.cfg.max_pow_difficulty,
            cocoon_net::DEFAULT_HANDSHAKE_TIMEOUT,
        )
        .await
        .map_err(|e| ClientError::NoProxy(e.to_string()))?;
        let routes: query::Routes = Arc::default();
        let payments: Arc<Mutex<Option<Address>>> = Arc::default();
        let (r, me, pay) = (routes.clone(), self.clone(), payments.clone());
        let on_packet = Arc::new(move |_: &Peer, data: Vec<u8>| {
            if let Some((rid, message)) = cocoon_wire::answer::decode_client(&data) {
                if let Some(route) = r.lock().get(&rid) {
                    let _ = route.send(message);
                }
            } else if let Ok(RequestPayment::Client { signed_payment, .. }) =
                cocoon_wire::decode::<RequestPayment>(&data)
            {
                let proxy = *pay.lock();
                if let Some(proxy) = proxy {
                    if let Err(e) = me.take_voucher(proxy, &signed_payment) {
                        tracing::error!("proxy {proxy} sent a bad charge voucher: {e}");
                    }
                }
            }
        });
        let peer = Peer::spawn(conn, cocoon_net::rpc::no_queries(), on_packet);
        let t = Duration::from_secs(30);
        let params = ClientParams {
            flags: (),
            client_owner_address: self.owner().to_raw().into_bytes(),
            is_test: Some(chain_client::is_test(self.chain.as_deref())),
            // 1 and 2 are COCOON's; 3 is 2 plus `proxy.cancelQuery`, which only a proxy that
            // settles on 3 gets (a reference proxy settles on 2).
            min_proto_version: Some(1),
            max_proto_version: Some(cocoon_wire::PROTO_WITH_CANCEL),
        };
        let connected: ClientConnectedToProxy = peer
            .request(
                &ClientRequest::ConnectToProxy {
                    params,
                    min_config_version: self.fake_ton.as_ref().map_or(0, |f| f.file.version as i32),
                },
                t,
            )
            .await
            .map_err(remote)?;
        chain_client::check_test_mode(
            chain_client::is_test(self.chain.as_deref()),
            connected.params.is_test,
        )
        .map_err(ClientError::Refused)?;
        let understands_cancel =
            connected.params.proto_version.unwrap_or(0) >= cocoon_wire::PROTO_WITH_CANCEL;
        let (proxy, client_sc) = match &self.fake_ton {
            None => {
                let (proxy, client_sc, init) = self.check_proxy(&connected).await?;
                self.ensure_contract(proxy, client_sc, &init).await?;
                (proxy, client_sc)
            }
            Some(fake) => self.fake_ton_proxy(fake, &connected)?,
        };
        *payments.lock() = Some(proxy);
        let auth: AuthorizationWithProxy = peer
            .request(
                &self.authorization(&connected.auth, client_sc).await?,
                Duration::from_secs(300),
            )
            .await
            .map_err(remote)?;
        match auth {
            AuthorizationWithProxy::Success { signed_payment, .. } => {
                self.take_voucher(proxy, &signed_payment)
                    .map_err(ClientError::Refused)?;
            }
            AuthorizationWithProxy::Failed { error_code, error } => {
                return Err(ClientError::from_proxy(
                    error_code,
                    String::from_utf8_lossy(&error),
                ))
            }
        }
        let mut conns = self.conns.lock();
        conns.retain(|c| c.addr != addr);
        conns.push(Arc::new(ProxyConn {
            addr,
            proxy,
            peer,
            client_sc,
            routes,
            understands_cancel,
        }));
        tracing::info!("connected to proxy {proxy} at {addr}");
        Ok(())
    }

    /// How to authorize, given what the proxy offers (COCOON's rule): the short way with our
    /// secret when the proxy holds its hash; otherwise the long way. On chain the long way first
    /// registers the proxy's nonce at our client contract (`owner_client_register`, from our
    /// wallet), which the proxy watches for. On a fake-TON root, where every client's hash is
    /// SHA-256 of nothing (the reference's), the short way with nothing, else the long way
    /// with nothing to register (the reference grants it at once there).
    async fn authorization(
        &self,
        offered: &cocoon_wire::client::ProxyConnectionAuth,
        client_sc: Address,
    ) -> Result<ClientRequest, ClientError> {
        use cocoon_wire::client::ProxyConnectionAuth as Auth;
        let ours: [u8; 32] = Sha256::digest(self.secret).into();
        let nothing: [u8; 32] = Sha256::digest([]).into();
        Ok(match (offered, self.fake_ton.is_some()) {
            (Auth::Short { secret_hash, .. }, _) if *secret_hash == ours => {
                ClientRequest::AuthorizeWithProxyShort {
                    data: self.secret.to_vec(),
                }
            }
            (Auth::Short { secret_hash, .. }, true) if *secret_hash == nothing => {
                ClientRequest::AuthorizeWithProxyShort { data: Vec::new() }
            }
            (_, true) => ClientRequest::AuthorizeWithProxyLong,
            (Auth::Short { nonce, .. } | Auth::Long { nonce }, false) => {
                tracing::info!(
                    "registering at client contract {client_sc} for the proxy (long authorization)"
                );
                let body = messages::client::register(0, *nonce, &self.owner())?;
                self.send(&[OutMessage::transfer(client_sc, MIN_FEE, Some(body))])
                    .await?;
                ClientRequest::AuthorizeWithProxyLong
            }
        })
    }

    /// On a fake-TON root there is no chain to read a proxy's contract from; as a reference
    /// client does, we recompute the contracts from the root's code instead: our client contract
    /// at the proxy it names (always), and its proxy contract from its owner and key under our
    /// root (when the config names the root the reference roles use). A proxy naming other
    /// contracts is refused. Its account is kept for the figures.
    fn fake_ton_proxy(
        &self,
        fake: &FakeRoot,
        c: &ClientConnectedToProxy,
    ) -> Result<(Address, Address), ClientError> {
        let announced = AnnouncedProxy {
            owner: &c.params.proxy_owner_address,
            contract: &c.params.proxy_sc_address,
            public_key: &c.params.proxy_public_key,
            is_test: c.params.is_test,
            ours: &c.client_sc_address,
        };
        let (proxy, client_sc) = fake
            .check_proxy(announced, false, &self.owner(), &self.cfg.root)
            .map_err(ClientError::Refused)?;
        let mut accounts = self.accounts.lock();
        let a = accounts.entry(proxy).or_default();
        a.proxy = proxy;
        a.client_contract = client_sc;
        a.price_per_token = fake.file.price_per_token;
        a.proxy_key = c.params.proxy_public_key;
        Ok((proxy, client_sc))
    }

    /// The proxy's contract must be registered in the root and hold the announced voucher key;
    /// our client contract must be where the proxy says.
    async fn check_proxy(
        &self,
        c: &ClientConnectedToProxy,
    ) -> Result<(Address, Address, ProxyInit), ClientError> {
        let p = chain_client::verify_proxy(
            self.chain()?.as_ref(),
            &self.cfg.root,
            &c.params.proxy_sc_address,
            &c.params.proxy_public_key,
            chain_client::Party::Client,
            self.owner(),
            &c.client_sc_address,
        )
        .await
        .map_err(ClientError::Refused)?;
        Ok((p.address, p.ours, p.data.init()))
    }
}
