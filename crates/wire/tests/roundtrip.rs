//! Property tests: every message encodes and decodes back to itself, and
//! decoding any byte string either succeeds or returns an error (no panic).

use cocoon_wire::client::*;
use cocoon_wire::common::*;
use cocoon_wire::proxy::*;
use cocoon_wire::worker::*;
use cocoon_wire::{decode, decode_packet, encode, TcpPacket};
use proptest::prelude::*;
use tl_proto::{TlRead, TlWrite};

fn bytes() -> impl Strategy<Value = Vec<u8>> + Clone {
    // Crosses the 254-byte boundary where TL switches to the long form.
    prop::collection::vec(any::<u8>(), 0..300)
}
fn time() -> impl Strategy<Value = Double> + Clone {
    any::<u64>()
        .prop_map(|b| Double(f64::from_bits(b)))
        .prop_filter("NaN != NaN", |d| !d.0.is_nan())
}
fn tokens() -> impl Strategy<Value = TokensUsed> + Clone {
    any::<[u64; 5]>().prop_map(|t| TokensUsed {
        prompt_tokens_used: t[0],
        cached_tokens_used: t[1],
        completion_tokens_used: t[2],
        reasoning_tokens_used: t[3],
        total_tokens_used: t[4],
    })
}
fn payment() -> impl Strategy<Value = SignedPayment> {
    prop_oneof![
        Just(SignedPayment::Empty),
        bytes().prop_map(|data| SignedPayment::Signed { data })
    ]
}
fn proxy_params() -> impl Strategy<Value = ProxyParams> {
    (
        any::<[u8; 32]>(),
        bytes(),
        bytes(),
        any::<Option<bool>>(),
        any::<Option<i32>>(),
    )
        .prop_map(|(k, o, s, t, v)| ProxyParams {
            flags: (),
            proxy_public_key: k,
            proxy_owner_address: o,
            proxy_sc_address: s,
            is_test: t,
            proto_version: v,
        })
}
fn worker_params() -> impl Strategy<Value = WorkerParams> {
    (
        bytes(),
        bytes(),
        any::<i32>(),
        any::<Option<(bool, i32, i32)>>(),
        any::<Option<(i32, i32)>>(),
        any::<(bool, bool)>(),
    )
        .prop_map(|(o, m, c, g0, g1, f)| WorkerParams {
            flags: (),
            worker_owner_address: o,
            model: m,
            coefficient: c,
            is_test: g0.map(|g| g.0),
            proxy_cnt: g0.map(|g| g.1),
            max_active_requests: g0.map(|g| g.2),
            min_proto_version: g1.map(|g| g.0),
            max_proto_version: g1.map(|g| g.1),
            supports_tools: f.0.then_some(()),
            supports_structured_output: f.1.then_some(()),
        })
}
fn client_params() -> impl Strategy<Value = ClientParams> {
    (bytes(), any::<Option<bool>>(), any::<Option<(i32, i32)>>()).prop_map(|(o, t, g)| {
        ClientParams {
            flags: (),
            client_owner_address: o,
            is_test: t,
            min_proto_version: g.map(|g| g.0),
            max_proto_version: g.map(|g| g.1),
        }
    })
}
fn proxy_final() -> impl Strategy<Value = Option<ProxyQueryFinalInfo>> {
    proptest::option::of(
        (
            tokens(),
            proptest::option::of(bytes()),
            proptest::option::of((time(), time())),
        )
            .prop_map(|(t, d, g)| ProxyQueryFinalInfo {
                flags: (),
                tokens_used: t,
                worker_debug: d,
                worker_start_time: g.map(|g| g.0),
                worker_end_time: g.map(|g| g.1),
            }),
    )
}
fn client_final() -> impl Strategy<Value = Option<ClientQueryFinalInfo>> {
    proptest::option::of(
        (
            tokens(),
            proptest::option::of((bytes(), bytes())),
            proptest::option::of((time(), time(), time(), time())),
        )
            .prop_map(|(t, d, g)| ClientQueryFinalInfo {
                flags: (),
                tokens_used: t,
                worker_debug: d.as_ref().map(|d| d.0.clone()),
                proxy_debug: d.map(|d| d.1),
                proxy_start_time: g.map(|g| g.0),
                proxy_end_time: g.map(|g| g.1),
                worker_start_time: g.map(|g| g.2),
                worker_end_time: g.map(|g| g.3),
            }),
    )
}
fn headers() -> impl Strategy<Value = Vec<HttpHeader>> {
    prop::collection::vec(
        (bytes(), bytes()).prop_map(|(name, value)| HttpHeader { name, value }),
        0..4,
    )
}

fn tcp_packet() -> impl Strategy<Value = TcpPacket> {
    prop_oneof![
        any::<u64>().prop_map(|id| TcpPacket::Ping { id }),
        any::<u64>().prop_map(|id| TcpPacket::Pong { id }),
        bytes().prop_map(|data| TcpPacket::Packet { data }),
        (any::<u64>(), bytes()).prop_map(|(id, data)| TcpPacket::QueryAnswer { id, data }),
        (any::<u64>(), any::<i32>(), bytes())
            .prop_map(|(id, code, message)| TcpPacket::QueryError { id, code, message }),
        (any::<u64>(), bytes()).prop_map(|(id, data)| TcpPacket::Query { id, data }),
        any::<u64>().prop_map(|id| TcpPacket::Connected { id }),
        any::<u64>().prop_map(|id| TcpPacket::Connect { id }),
    ]
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    let run = (
        bytes(),
        bytes(),
        any::<i32>(),
        any::<i32>(),
        time(),
        any::<[u8; 32]>(),
        any::<i32>(),
    );
    prop_oneof![
        (client_params(), any::<i32>()).prop_map(|(params, min_config_version)| {
            ClientRequest::ConnectToProxy {
                params,
                min_config_version,
            }
        }),
        bytes().prop_map(|data| ClientRequest::AuthorizeWithProxyShort { data }),
        Just(ClientRequest::AuthorizeWithProxyLong),
        run.clone()
            .prop_map(|(m, q, c, t, to, r, v)| ClientRequest::RunQuery {
                model_name: m,
                query: q,
                max_coefficient: c,
                max_tokens: t,
                timeout: to,
                request_id: r,
                min_config_version: v,
            }),
        (run, any::<Option<bool>>()).prop_map(|((m, q, c, t, to, r, v), d)| {
            ClientRequest::RunQueryEx {
                model_name: m,
                query: q,
                max_coefficient: c,
                max_tokens: t,
                timeout: to,
                request_id: r,
                min_config_version: v,
                flags: (),
                enable_debug: d,
            }
        }),
        Just(ClientRequest::RequestRefund),
        Just(ClientRequest::UpdatePaymentStatus),
        Just(ClientRequest::GetWorkerTypes),
        Just(ClientRequest::GetWorkerTypesV2),
    ]
}

fn client_answers() -> impl Strategy<Value = Vec<u8>> {
    let a = (bytes(), any::<bool>(), any::<[u8; 32]>(), tokens());
    let e = (any::<i32>(), bytes(), any::<[u8; 32]>(), tokens());
    prop_oneof![
        a.clone()
            .prop_map(|(answer, is_completed, request_id, request_tokens_used)| {
                rt(ClientQueryAnswer::Answer {
                    answer,
                    is_completed,
                    request_id,
                    request_tokens_used,
                })
            }),
        e.clone()
            .prop_map(|(error_code, error, request_id, request_tokens_used)| {
                rt(ClientQueryAnswer::Error {
                    error_code,
                    error,
                    request_id,
                    request_tokens_used,
                })
            }),
        a.prop_map(|(answer, is_completed, request_id, request_tokens_used)| {
            rt(ClientQueryAnswerPart::Part {
                answer,
                is_completed,
                request_id,
                request_tokens_used,
            })
        }),
        e.prop_map(|(error_code, error, request_id, request_tokens_used)| {
            rt(ClientQueryAnswerPart::Error {
                error_code,
                error,
                request_id,
                request_tokens_used,
            })
        }),
        (any::<[u8; 32]>(), bytes(), client_final()).prop_map(
            |(request_id, answer, final_info)| {
                rt(ClientQueryAnswerEx::Answer {
                    request_id,
                    answer: answer.clone(),
                    flags: (),
                    final_info: final_info.clone(),
                });
                rt(ClientQueryAnswerEx::Part {
                    request_id,
                    answer,
                    flags: (),
                    final_info,
                })
            }
        ),
        (any::<[u8; 32]>(), any::<i32>(), bytes(), client_final()).prop_map(
            |(request_id, error_code, error, final_info)| {
                rt(ClientQueryAnswerEx::Error {
                    request_id,
                    error_code,
                    error,
                    flags: (),
                    final_info,
                })
            }
        ),
        (
            proxy_params(),
            bytes(),
            any::<[u8; 32]>(),
            any::<u64>(),
            payment()
        )
            .prop_map(
                |(params, client_sc_address, secret_hash, nonce, signed_payment)| {
                    rt(ClientConnectedToProxy {
                        params: params.clone(),
                        client_sc_address: client_sc_address.clone(),
                        auth: ProxyConnectionAuth::Short { secret_hash, nonce },
                        signed_payment: signed_payment.clone(),
                    });
                    rt(ClientConnectedToProxy {
                        params,
                        client_sc_address,
                        auth: ProxyConnectionAuth::Long { nonce },
                        signed_payment,
                    })
                }
            ),
        (payment(), any::<u64>(), any::<u64>(), any::<i32>(), bytes()).prop_map(
            |(signed_payment, db, max, error_code, error)| {
                rt(AuthorizationWithProxy::Success {
                    signed_payment: signed_payment.clone(),
                    tokens_committed_to_db: db,
                    max_tokens: max,
                });
                rt(AuthorizationWithProxy::Failed { error_code, error });
                rt(ClientPaymentStatus {
                    signed_payment,
                    db_tokens: db,
                    max_tokens: max,
                })
            }
        ),
        (bytes(), any::<u64>()).prop_map(|(data, active_queries)| {
            rt(Refund::Granted { data });
            rt(Refund::Rejected { active_queries })
        }),
        (bytes(), any::<[i32; 4]>(), any::<[i32; 3]>()).prop_map(|(name, t, w)| {
            rt(WorkerTypes {
                types: vec![WorkerType {
                    name: name.clone(),
                    active_workers: t[0],
                    coefficient_min: t[1],
                    coefficient_bucket50: t[2],
                    coefficient_max: t[3],
                }],
            });
            rt(WorkerTypesV2 {
                types: vec![WorkerTypeV2 {
                    name,
                    workers: vec![WorkerInstanceV2 {
                        flags: (),
                        coefficient: w[0],
                        active_requests: w[1],
                        max_active_requests: w[2],
                        supports_tools: (w[0] % 2 == 0).then_some(()),
                        supports_structured_output: (w[1] % 2 == 0).then_some(()),
                    }],
                }],
            })
        }),
    ]
}

fn proxy_messages() -> impl Strategy<Value = Vec<u8>> {
    let a = (bytes(), any::<bool>(), any::<[u8; 32]>(), tokens());
    let e = (any::<i32>(), bytes(), any::<[u8; 32]>(), tokens());
    prop_oneof![
        a.clone()
            .prop_map(|(answer, is_completed, request_id, tokens_used)| {
                rt(ProxyQueryAnswer::Answer {
                    answer,
                    is_completed,
                    request_id,
                    tokens_used,
                })
            }),
        e.clone()
            .prop_map(|(error_code, error, request_id, tokens_used)| {
                rt(ProxyQueryAnswer::Error {
                    error_code,
                    error,
                    request_id,
                    tokens_used,
                })
            }),
        a.prop_map(|(answer, is_completed, request_id, tokens_used)| {
            rt(ProxyQueryAnswerPart::Part {
                answer,
                is_completed,
                request_id,
                tokens_used,
            })
        }),
        e.prop_map(|(error_code, error, request_id, tokens_used)| {
            rt(ProxyQueryAnswerPart::Error {
                error_code,
                error,
                request_id,
                tokens_used,
            })
        }),
        (any::<[u8; 32]>(), bytes(), proxy_final()).prop_map(|(request_id, answer, final_info)| {
            rt(ProxyQueryAnswerEx::Answer {
                request_id,
                answer: answer.clone(),
                flags: (),
                final_info: final_info.clone(),
            });
            rt(ProxyQueryAnswerEx::Part {
                request_id,
                answer,
                flags: (),
                final_info,
            })
        }),
        (any::<[u8; 32]>(), any::<i32>(), bytes(), proxy_final()).prop_map(
            |(request_id, error_code, error, final_info)| {
                rt(ProxyQueryAnswerEx::Error {
                    request_id,
                    error_code,
                    error,
                    flags: (),
                    final_info,
                })
            }
        ),
        (any::<[u8; 32]>(), payment(), any::<[u64; 3]>(), bytes()).prop_map(
            |(request_id, signed_payment, n, owner)| {
                rt(RequestPayment::Worker {
                    request_id,
                    signed_payment: signed_payment.clone(),
                    db_tokens: n[0],
                    max_tokens: n[1],
                    request_tokens: n[2],
                    request_client_owner: owner,
                });
                rt(RequestPayment::Client {
                    request_id,
                    signed_payment,
                    db_tokens: n[0],
                    max_tokens: n[1],
                    request_tokens: n[2],
                })
            }
        ),
        (
            bytes(),
            payment(),
            any::<i64>(),
            time(),
            any::<[u8; 32]>(),
            any::<Option<bool>>()
        )
            .prop_map(
                |(query, signed_payment, coefficient, timeout, request_id, enable_debug)| {
                    rt(ProxyRequest::RunQuery {
                        query: query.clone(),
                        signed_payment: signed_payment.clone(),
                        coefficient,
                        timeout,
                        request_id,
                    });
                    rt(ProxyRequest::RunQueryEx {
                        query,
                        signed_payment,
                        coefficient,
                        timeout,
                        request_id,
                        flags: (),
                        enable_debug,
                    })
                }
            ),
    ]
}

fn worker_messages() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        worker_params().prop_map(|params| rt(WorkerRequest::ConnectToProxy { params })),
        any::<[u64; 3]>().prop_map(|n| rt(WorkerRequest::CompareBalanceWithProxy {
            tokens_committed_to_blockchain: n[0],
            tokens_committed_to_db: n[1],
            max_tokens: n[2],
        })),
        (any::<u64>(), bytes()).prop_map(|(t, other)| rt(
            WorkerRequest::ExtendedCompareBalanceWithProxy {
                tokens_committed_to_db: t,
                other
            }
        )),
        any::<bool>()
            .prop_map(|is_disabled| rt(WorkerRequest::ProxyHandshakeComplete { is_disabled })),
        Just(()).prop_map(|_| rt(WorkerRequest::UpdatePaymentStatus)),
        (proxy_params(), bytes()).prop_map(|(params, worker_sc_address)| {
            rt(ConnectedToProxy {
                params,
                worker_sc_address,
            })
        }),
        (payment(), any::<u64>(), any::<u64>(), any::<i32>()).prop_map(|(p, db, max, code)| {
            rt(CompareBalanceResult {
                signed_payment: p.clone(),
                tokens_committed_to_db: db,
                max_tokens: max,
                error_code: code,
            });
            rt(WorkerPaymentStatus {
                signed_payment: p,
                db_tokens: db,
                max_tokens: max,
            })
        }),
        any::<i32>().prop_map(|n| {
            rt(ExtendedCompareBalanceResult { error_code: n });
            rt(EnabledDisabled { disabled: n });
            rt(NewCoefficient { new_coefficient: n });
            rt(HandshakeCompleted {})
        }),
    ]
}

fn http_messages() -> impl Strategy<Value = Vec<u8>> {
    (bytes(), bytes(), headers(), bytes(), any::<i32>()).prop_map(
        |(a, b, headers, payload, code)| {
            rt(HttpRequest {
                method: a.clone(),
                url: b.clone(),
                http_version: a.clone(),
                headers: headers.clone(),
                payload: payload.clone(),
            });
            rt(HttpResponse {
                http_version: a,
                status_code: code,
                reason: b,
                headers,
                payload,
            })
        },
    )
}

/// Encodes, decodes, compares; returns the encoding.
fn rt<T>(value: T) -> Vec<u8>
where
    T: TlWrite + for<'a> TlRead<'a> + PartialEq + std::fmt::Debug,
{
    let bytes = encode(&value);
    let back: T = decode(&bytes).expect("decodes what it encoded");
    assert_eq!(back, value);
    // Every proper prefix is refused, never accepted or panicking.
    for cut in [0, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode::<T>(&bytes[..cut]).is_err());
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tcp_packets_round_trip(p in tcp_packet()) {
        let bytes = encode(&p);
        prop_assert_eq!(decode_packet(&bytes).unwrap(), p);
    }

    #[test]
    fn client_requests_round_trip(r in client_request()) { rt(r); }

    #[test]
    fn client_answers_round_trip(_ in client_answers()) {}

    #[test]
    fn proxy_messages_round_trip(_ in proxy_messages()) {}

    #[test]
    fn worker_messages_round_trip(_ in worker_messages()) {}

    #[test]
    fn http_messages_round_trip(_ in http_messages()) {}

    #[test]
    fn tokens_used_round_trip(t in tokens()) { rt(t); }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_packet(&data);
        let _ = decode::<ClientRequest>(&data);
        let _ = decode::<ProxyRequest>(&data);
        let _ = decode::<WorkerRequest>(&data);
        let _ = decode::<ClientQueryAnswerEx>(&data);
        let _ = decode::<ProxyQueryAnswerEx>(&data);
        let _ = decode::<HttpRequest>(&data);
        let _ = decode::<HttpResponse>(&data);
    }
}
