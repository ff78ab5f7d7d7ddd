//! An app's request at the network: which proxy runs it (turns over the live ones; the next
//! one on a refusal only that proxy gives), and the models the network serves.

use super::*;

impl Client {
    pub(crate) fn live(&self) -> Vec<Arc<ProxyConn>> {
        self.conns
            .lock()
            .iter()
            .filter(|c| !c.peer.is_closed())
            .cloned()
            .collect()
    }

    /// Sends one OpenAI request (`path` is `/v1/chat/completions` or `/v1/completions`).
    /// Requests take turns over the live proxies (load spreads); one a proxy refuses before
    /// any work (no worker for the model there, all busy, no credit there; nothing billed, no
    /// answer begun) goes to the next. A lost connection is not retried: the request may have
    /// run. It returns once the answer's head arrived; when every proxy refused, the most
    /// telling refusal is the error.
    pub async fn query(
        &self,
        model: &str,
        path: &str,
        body: Vec<u8>,
        max_coefficient: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<QueryStream, ClientError> {
        let conns = self.live();
        if conns.is_empty() {
            return Err(ClientError::NoProxy("no proxy connection is alive".into()));
        }
        // The completion limit the body names, for the proxy's reservation (it reads the body
        // too and takes the smaller).
        let max_tokens = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                ["max_completion_tokens", "max_tokens"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|n| n.as_u64()))
            })
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0);
        // Encoded once; each attempt gets a copy.
        let query = cocoon_wire::encode(&HttpRequest {
            method: b"POST".to_vec(),
            url: path.as_bytes().to_vec(),
            http_version: b"HTTP/1.1".to_vec(),
            headers: vec![cocoon_wire::common::HttpHeader {
                name: b"Content-Type".to_vec(),
                value: b"application/json".to_vec(),
            }],
            payload: body,
        });
        let started = std::time::Instant::now();
        let start = self.next_proxy.fetch_add(1, Ordering::Relaxed) % conns.len();
        let mut refused: Option<ClientError> = None;
        for (i, conn) in conns
            .iter()
            .cycle()
            .skip(start)
            .take(conns.len())
            .enumerate()
        {
            let job = query::Job {
                model: model.to_string(),
                query: query.clone(),
                max_coefficient: max_coefficient.unwrap_or(self.cfg.max_coefficient),
                max_tokens,
                timeout: timeout.unwrap_or(self.cfg.timeout),
            };
            let mut q = query::start(
                &conn.peer,
                &conn.routes,
                job,
                conn.understands_cancel,
                self.metrics.clone(),
            );
            let (e, tokens) = match q.wait_head().await {
                Ok(()) => return Ok(q),
                Err(failure) => failure,
            };
            // A refusal the next proxy gets a chance at is not the app's request failing.
            let last = i + 1 == conns.len();
            if tokens.total_tokens_used == 0 && worth_another_proxy(&e) && !last {
                tracing::debug!("proxy {} refused ({e}); trying the next", conn.addr);
                self.metrics.error("failover");
                refused = Some(match refused {
                    Some(r) => more_telling(r, e),
                    None => e,
                });
                continue;
            }
            // The last proxy's refusal: report the most telling of all of them.
            let e = match refused {
                Some(r) if worth_another_proxy(&e) => more_telling(r, e),
                _ => e,
            };
            self.metrics.request(false, started.elapsed().as_secs_f64());
            self.metrics.error(&format!("http_{}", e.status()));
            return Err(e);
        }
        Err(refused.unwrap_or_else(|| ClientError::NoProxy("no proxy answered".into())))
    }

    /// Models served behind the connected proxies.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let mut out: HashMap<String, ModelInfo> = HashMap::new();
        for c in self.live() {
            let types: WorkerTypesV2 = c
                .peer
                .request(&ClientRequest::GetWorkerTypesV2, Duration::from_secs(10))
                .await
                .map_err(remote)?;
            for t in types.types {
                let id = String::from_utf8_lossy(&t.name).into_owned();
                let entry = out.entry(id.clone()).or_insert(ModelInfo {
                    id,
                    workers: vec![],
                    features: cocoon_engine::Features::default(),
                });
                for w in &t.workers {
                    entry.features.tools |= w.supports_tools.is_some();
                    entry.features.structured_output |= w.supports_structured_output.is_some();
                }
                entry.workers.extend(
                    t.workers
                        .iter()
                        .map(|w| (w.coefficient, w.active_requests, w.max_active_requests)),
                );
            }
        }
        let mut v: Vec<ModelInfo> = out.into_values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
}

/// A refusal another proxy may not give: about this proxy — no worker for the model there, all
/// busy, too many of our requests running there, no credit at its contract, a refunded contract
/// there. A bad request (400) is bad everywhere. A lost connection is never retried: the request
/// may have run and been billed.
pub(crate) fn worth_another_proxy(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Remote {
            status: 402 | 404 | 409 | 429 | 503,
            ..
        }
    )
}

/// Which of two refusals to report when every proxy refused: the one that says most about
/// what to do (no credit, then refunded, then busy, then no worker for the model).
pub(crate) fn more_telling(a: ClientError, b: ClientError) -> ClientError {
    let rank = |e: &ClientError| match e.status() {
        402 => 4,
        409 => 3,
        503 => 2,
        404 => 1,
        _ => 0,
    };
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

/// The worker catalogue of every proxy the root lists (model identity → coefficients of its
/// connected workers), asked without authorizing: what `cocoon quote` prices with. Proxies
/// that cannot be reached are skipped (their error is returned beside the catalogue).
pub async fn catalogue(
    root: &cocoon_chain::contracts::RootData,
    policy: PolicyKind,
    quotes: &dyn QuoteProvider,
) -> Result<(HashMap<String, Vec<u32>>, Vec<String>), ClientError> {
    let mut p = Policy::new(policy);
    p.allowed_image_hashes = root.proxy_hashes.clone();
    let identity = Identity::new(quotes, "cocoon-quote", p).map_err(ClientError::Io)?;
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    let mut errors = Vec::new();
    for proxy in &root.proxies {
        let Some(addr) = proxy.endpoint_client() else {
            continue;
        };
        let conn = match cocoon_net::connect(
            addr,
            identity.client_tls.clone(),
            &identity.verifier,
            28,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("proxy #{} at {addr}: {e}", proxy.seq));
                continue;
            }
        };
        let peer = Peer::spawn(
            conn,
            cocoon_net::rpc::no_queries(),
            Arc::new(|_: &Peer, _: Vec<u8>| {}),
        );
        match peer
            .request::<WorkerTypesV2>(&ClientRequest::GetWorkerTypesV2, Duration::from_secs(10))
            .await
        {
            Ok(types) => {
                for t in types.types {
                    out.entry(String::from_utf8_lossy(&t.name).into_owned())
                        .or_default()
                        .extend(t.workers.iter().map(|w| w.coefficient.max(0) as u32));
                }
            }
            Err(e) => errors.push(format!("proxy #{} at {addr}: {e}", proxy.seq)),
        }
        peer.close();
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_proxys_own_refusals_go_to_the_next_and_the_most_telling_is_reported() {
        let r = |status: u16| ClientError::Remote {
            status,
            message: format!("refused {status}"),
        };
        for status in [402, 404, 409, 503] {
            assert!(worth_another_proxy(&r(status)), "{status}");
        }
        for status in [400, 401, 413, 499, 500, 502, 504] {
            assert!(!worth_another_proxy(&r(status)), "{status}");
        }
        // A lost connection: the request may have run and been billed.
        assert!(!worth_another_proxy(&ClientError::NoProxy("closed".into())));
        let pick = |a: u16, b: u16| more_telling(r(a), r(b)).status();
        assert_eq!(pick(404, 402), 402);
        assert_eq!(pick(402, 404), 402);
        assert_eq!(pick(404, 503), 503);
        assert_eq!(pick(503, 409), 409);
        assert_eq!(pick(404, 404), 404);
    }
}
