//! One query on the engine, answered as COCOON answers it: the head, the body in parts, and
//! the adjusted token counts on the last message.

use std::sync::Arc;

use super::*;

impl Worker {
    /// Runs one `proxy.runQuery(Ex)` packet on the engine and answers as COCOON does, in
    /// one-way packets naming the request: the `http.response` head, the body in parts as the
    /// engine produces them (ready text coalesced), and the adjusted token counts on the last
    /// part; or an error, which always carries the tokens used before it. Each packet goes to
    /// `out` (the proxy's connection), which says whether the proxy still listens.
    pub(crate) async fn run_query(
        self: Arc<Self>,
        out: impl Fn(Vec<u8>) -> bool + Send,
        proxy: Option<Address>,
        request: ProxyRequest,
    ) {
        let (query, coefficient, timeout, request_id) = match request {
            ProxyRequest::RunQuery {
                query,
                coefficient,
                timeout,
                request_id,
                ..
            }
            | ProxyRequest::RunQueryEx {
                query,
                coefficient,
                timeout,
                request_id,
                ..
            } => (query, coefficient, timeout, request_id),
        };
        let started = unix_now();
        let send = |m: AnswerMessage| out(answer::proxy_message(request_id, m));
        let timings = move || Timings {
            start: started,
            end: unix_now(),
        };
        let fail = |e: EngineError, tokens: TokensUsed| AnswerMessage::Error {
            code: e.http_status() as i32,
            message: cocoon_engine::openai::error_json(&e)
                .to_string()
                .into_bytes(),
            end: (tokens, timings()),
        };
        // Billing counts adjusted tokens: the coefficient the proxy runs us at, the root's
        // multipliers (as its contract states them).
        let coefficient = u32::try_from(coefficient.max(0)).unwrap_or(u32::MAX);
        let params = proxy
            .and_then(|p| self.proxy_params.lock().get(&p).cloned())
            .unwrap_or_else(Params::local_default);
        let adjusted = |usage: &TokenUsage| tokens_used(usage, coefficient, &params);
        let refuse = |code: u16, why: String| AnswerMessage::Error {
            code: i32::from(code),
            message: cocoon_engine::openai::error_body(code, &why)
                .to_string()
                .into_bytes(),
            end: (TokensUsed::default(), timings()),
        };
        let running = self.running.lock().len();
        if running >= self.cfg.max_active as usize {
            send(fail(
                EngineError::Overloaded(running),
                TokensUsed::default(),
            ));
            return;
        }
        let http = match cocoon_wire::decode::<HttpRequest>(&query) {
            Ok(h) => h,
            Err(e) => {
                send(refuse(
                    400,
                    format!("the query is not an http.request: {e}"),
                ));
                return;
            }
        };
        let url = String::from_utf8_lossy(&http.url).into_owned();
        let parsed = match url.split('?').next().unwrap_or("") {
            "/v1/chat/completions" => EngineRequest::parse_chat(&http.payload),
            "/v1/completions" => EngineRequest::parse_completion(&http.payload),
            other => {
                send(refuse(404, format!("unsupported endpoint {other}")));
                return;
            }
        };
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                send(fail(EngineError::Request(e), TokensUsed::default()));
                return;
            }
        };
        let mut fmt = Formatter::new(&request);
        let content_type = if fmt.is_stream() {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut generation = match self.engine.generate(request) {
            Ok(g) => g,
            Err(e) => {
                send(fail(e, TokensUsed::default()));
                return;
            }
        };
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        self.running.lock().insert(request_id, stop_tx);
        let clock = std::time::Instant::now();
        self.metrics.active.inc();
        // As the reference worker's head: the body follows in parts, so its length is not
        // known yet (an HTTP peer downstream relays it chunked).
        let start = format!("{started:.6}");
        let head = answer::http_head(
            200,
            "OK",
            &[
                ("Content-Type", content_type),
                ("X-Cocoon-Worker-Start", &start),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        let mut alive = send(AnswerMessage::Head { head, end: None });
        let limit = timeout.as_timeout(Duration::from_secs(3600));
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut parts: u64 = 0;
        // What a cut-off generation used: the text parts already sent, one completion token
        // each (the engine's own count arrives only with its end).
        let delivered = |parts: u64| {
            adjusted(&TokenUsage {
                completion: parts,
                ..Default::default()
            })
        };
        let mut finished: Option<TokenUsage> = None;
        // An event taken off the engine while coalescing text, handled on the next turn.
        let mut pending = None;
        while alive {
            let event = match pending.take() {
                Some(event) => event,
                None => tokio::select! {
                    event = generation.next() => event,
                    _ = &mut stop_rx => break,
                    _ = &mut deadline => {
                        send(fail(EngineError::Timeout(limit), delivered(parts)));
                        break;
                    }
                },
            };
            match event {
                Some(Ok(Event::Done {
                    usage,
                    finish_reason,
                })) => {
                    // The end: the body's tail with the adjusted counts on it.
                    let tail = fmt.done(&usage, finish_reason);
                    let u = engine_usage(&usage);
                    send(AnswerMessage::Part {
                        bytes: tail,
                        end: Some((adjusted(&u), timings())),
                    });
                    finished = Some(u);
                    break;
                }
                Some(Ok(first)) => {
                    // Send what is ready now as one part: text (and calls) the engine already
                    // produced travel together (no waiting for more, so no added latency).
                    let mut bytes = Vec::new();
                    let mut next = Some(first);
                    while let Some(event) = next.take() {
                        // Text and calls count toward what a cut-off answer used.
                        parts += u64::from(matches!(event, Event::Text(_) | Event::ToolCall(_)));
                        bytes.extend(fmt.event(event).unwrap_or_default());
                        if bytes.len() >= 64 * 1024 {
                            break;
                        }
                        match futures_util::FutureExt::now_or_never(generation.next()) {
                            Some(Some(Ok(e))) if !matches!(e, Event::Done { .. }) => next = Some(e),
                            Some(other) => pending = Some(other),
                            None => {}
                        }
                    }
                    if !bytes.is_empty() {
                        alive = send(AnswerMessage::Part { bytes, end: None });
                    }
                }
                Some(Err(e)) => {
                    send(fail(e, delivered(parts)));
                    break;
                }
                None => {
                    send(fail(
                        EngineError::Internal("engine ended without usage".into()),
                        delivered(parts),
                    ));
                    break;
                }
            }
        }
        self.running.lock().remove(&request_id);
        // Dropping the generation here cancels it at the engine.
        drop(generation);
        self.metrics.active.dec();
        let secs = clock.elapsed().as_secs_f64();
        self.metrics.request(finished.is_some(), secs);
        match finished {
            Some(u) => {
                self.metrics.add_tokens("prompt", u.prompt);
                self.metrics.add_tokens("completion", u.completion);
                *self.latency_sum.lock() += secs;
            }
            None => self.metrics.error("request_failed"),
        }
    }
}

/// The engine's usage as the price formula's counts.
fn engine_usage(usage: &cocoon_engine::engine::Usage) -> TokenUsage {
    TokenUsage {
        prompt: usage.prompt_tokens,
        cached: usage.cached_tokens,
        completion: usage.completion_tokens,
        reasoning: usage.reasoning_tokens,
    }
}

/// The `tokensUsed` a worker reports, as the reference worker counts it: each category adjusted
/// by the coefficient and its multiplier separately, and their sum as the billed total.
pub fn tokens_used(usage: &TokenUsage, coefficient: u32, params: &Params) -> TokensUsed {
    let [prompt, cached, completion, reasoning] = adjusted_parts(usage, coefficient, params);
    TokensUsed {
        prompt_tokens_used: prompt,
        cached_tokens_used: cached,
        completion_tokens_used: completion,
        reasoning_tokens_used: reasoning,
        total_tokens_used: prompt
            .saturating_add(cached)
            .saturating_add(completion)
            .saturating_add(reasoning),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_chain::wallet::WalletVersion;
    use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
    use cocoon_wire::common::Double;

    /// A worker on the FAKE engine with no chain and no proxy (queries are run directly).
    fn worker(dir: &std::path::Path, max_active: u32) -> Arc<Worker> {
        let key = Keypair::from_seed([5; 32]);
        let wallet = Wallet::new(
            WalletVersion::V5r1,
            key.public_key(),
            cocoon_chain::Network::Local,
        );
        let cfg = WorkerConfig {
            dir: dir.to_path_buf(),
            root: Address::new([1; 32]),
            proxies: vec![],
            model: FAKE_MODEL.into(),
            coefficient: 1000,
            max_active,
            proxy_policy: PolicyKind::FakeTdx,
            max_pow_difficulty: 20,
            payout_threshold: u128::MAX,
            http_listen: None,
        };
        let engine: Arc<dyn Engine> = Arc::new(FakeEngine::default());
        let quotes = Arc::new(cocoon_tee::FakeTdxProvider::default());
        Worker::build(cfg, None, None, (key, wallet), engine, quotes, vec![]).unwrap()
    }

    fn query(url: &str, body: serde_json::Value, coefficient: i64) -> ProxyRequest {
        let http = HttpRequest {
            method: b"POST".to_vec(),
            url: url.as_bytes().to_vec(),
            http_version: b"HTTP/1.1".to_vec(),
            headers: vec![],
            payload: body.to_string().into_bytes(),
        };
        ProxyRequest::RunQueryEx {
            query: cocoon_wire::encode(&http),
            signed_payment: SignedPayment::Empty,
            coefficient,
            timeout: Double(30.0),
            request_id: [7; 32],
            flags: (),
            enable_debug: None,
        }
    }

    /// Runs `request` and returns the answer messages the proxy would get, in order.
    async fn run(worker: &Arc<Worker>, request: ProxyRequest) -> Vec<AnswerMessage> {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let out = move |packet: Vec<u8>| {
            s.lock().push(packet);
            true
        };
        worker.clone().run_query(out, None, request).await;
        let packets = sent.lock().clone();
        packets
            .iter()
            .map(|p| {
                let (id, m) = answer::decode_proxy(p).expect("an answer packet");
                assert_eq!(id, [7; 32], "every packet names the request");
                m
            })
            .collect()
    }

    fn chat(stream: bool) -> serde_json::Value {
        serde_json::json!({"model": FAKE_MODEL, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
    }

    #[tokio::test]
    async fn an_answer_is_a_head_then_parts_then_the_adjusted_counts_on_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 4);
        for stream in [true, false] {
            let messages = run(&w, query("/v1/chat/completions", chat(stream), 1000)).await;
            let (first, rest) = messages.split_first().unwrap();
            assert!(
                matches!(first, AnswerMessage::Head { end: None, .. }),
                "{first:?}"
            );
            let (last, middle) = rest.split_last().unwrap();
            assert!(middle
                .iter()
                .all(|m| matches!(m, AnswerMessage::Part { end: None, .. })));
            let (tokens, _) = last.end().expect("the last message carries the counts");
            // The FAKE engine's usage 34/11/100/10 at coefficient 1000, local multipliers.
            assert_eq!(tokens.total_tokens_used, 134, "{tokens:?}");
            let body: Vec<u8> = rest
                .iter()
                .flat_map(|m| match m {
                    AnswerMessage::Part { bytes, .. } => bytes.clone(),
                    _ => vec![],
                })
                .collect();
            let body = String::from_utf8(body).unwrap();
            match stream {
                true => assert!(body.ends_with("data: [DONE]\n\n"), "{body}"),
                false => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["usage"]["completion_tokens"], 100, "{v}");
                }
            }
        }
        // Twice the coefficient, twice the tokens billed.
        let messages = run(&w, query("/v1/chat/completions", chat(true), 2000)).await;
        assert_eq!(
            messages.last().unwrap().end().unwrap().0.total_tokens_used,
            268
        );
    }

    #[tokio::test]
    async fn bad_queries_are_refused_before_any_work_with_nothing_billed() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 4);
        let refused = |messages: Vec<AnswerMessage>| match messages.as_slice() {
            [AnswerMessage::Error { code, message, end }] => {
                assert_eq!(end.0.total_tokens_used, 0);
                (*code, String::from_utf8_lossy(message).into_owned())
            }
            other => panic!("expected one error, got {other:?}"),
        };
        let (code, why) = refused(run(&w, query("/v1/embeddings", chat(false), 1000)).await);
        assert_eq!(code, 404);
        assert!(why.contains("unsupported endpoint /v1/embeddings"), "{why}");
        let bad = serde_json::json!({"model": FAKE_MODEL, "messages": "not a list"});
        let (code, _) = refused(run(&w, query("/v1/chat/completions", bad, 1000)).await);
        assert_eq!(code, 400);
        let mut garbage = query("/v1/chat/completions", chat(false), 1000);
        if let ProxyRequest::RunQueryEx { query, .. } = &mut garbage {
            *query = b"not tl".to_vec();
        }
        let (code, why) = refused(run(&w, garbage).await);
        assert_eq!(code, 400);
        assert!(why.contains("not an http.request"), "{why}");
    }

    #[tokio::test]
    async fn a_worker_at_its_limit_refuses_more_without_running_them() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 0);
        let messages = run(&w, query("/v1/chat/completions", chat(false), 1000)).await;
        match messages.as_slice() {
            [AnswerMessage::Error { code, end, .. }] => {
                assert_eq!(*code, 503);
                assert_eq!(end.0.total_tokens_used, 0);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_proxy_that_stops_listening_stops_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 4);
        let sent = Arc::new(Mutex::new(0usize));
        let s = sent.clone();
        // The proxy takes the head and goes away.
        let out = move |_: Vec<u8>| {
            let mut n = s.lock();
            *n += 1;
            *n < 2
        };
        w.clone()
            .run_query(out, None, query("/v1/chat/completions", chat(true), 1000))
            .await;
        assert_eq!(
            *sent.lock(),
            2,
            "nothing more is sent to a proxy that went away"
        );
        assert!(w.running.lock().is_empty());
    }
}
