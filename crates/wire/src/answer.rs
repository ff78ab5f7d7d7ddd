//! Answer streams as COCOON sends them, the same shape on both hops (worker → proxy with
//! `proxy.queryAnswer*Ex`, proxy → client with `client.queryAnswer*Ex`), each message a one-way
//! `tcp.packet` naming its request:
//!
//! 1. the *head*: a serialized `http.response` (status, headers, and usually an empty body),
//! 2. zero or more *parts*: raw body bytes,
//! 3. the end: `final_info` (the tokens used) on the last message, whichever it is;
//!
//! or, at any point, an *error* (`…ErrorEx`, which carries `final_info` too). The reference
//! proxy also answers some refusals in the older, non-`Ex` form (`client.queryAnswerError`,
//! `client.queryAnswerPartError`); [`decode_client`] reads those as well.
//!
//! [`AnswerMessage`] is one such message as plain data; `decode_*` read one and `*_message`
//! write one, for each hop.

use crate::client::{
    ClientQueryAnswer, ClientQueryAnswerEx, ClientQueryAnswerPart, ClientQueryFinalInfo,
};
use crate::common::{Double, HttpResponse, TokensUsed};
use crate::proxy::{ProxyQueryAnswerEx, ProxyQueryFinalInfo};
use crate::Int256;

/// Timings carried in `final_info` (unix seconds), when known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// When the sender started the request.
    pub start: f64,
    /// When it finished.
    pub end: f64,
}

/// What one message of a client-side answer stream says: its request and the message. `None`
/// when `data` is not an answer message. The reference's older refusal forms read as
/// [`AnswerMessage::Error`].
pub fn decode_client(data: &[u8]) -> Option<(Int256, AnswerMessage)> {
    let end = |f: Option<ClientQueryFinalInfo>| {
        f.map(|f| {
            let t = Timings {
                start: f.proxy_start_time.map_or(0.0, |d| d.0),
                end: f.proxy_end_time.map_or(0.0, |d| d.0),
            };
            (f.tokens_used, t)
        })
    };
    if let Ok(m) = crate::decode::<ClientQueryAnswerEx>(data) {
        return Some(match m {
            ClientQueryAnswerEx::Answer {
                request_id,
                answer,
                final_info,
                ..
            } => (request_id, head(answer, end(final_info))),
            ClientQueryAnswerEx::Part {
                request_id,
                answer,
                final_info,
                ..
            } => (
                request_id,
                AnswerMessage::Part {
                    bytes: answer,
                    end: end(final_info),
                },
            ),
            ClientQueryAnswerEx::Error {
                request_id,
                error_code,
                error,
                final_info,
                ..
            } => (
                request_id,
                AnswerMessage::Error {
                    code: error_code,
                    message: error,
                    end: end(final_info).unwrap_or_default(),
                },
            ),
        });
    }
    // The older forms the reference proxy still uses for its own refusals.
    let old = |code, message, tokens| AnswerMessage::Error {
        code,
        message,
        end: (tokens, Timings::default()),
    };
    match crate::decode::<ClientQueryAnswer>(data) {
        Ok(ClientQueryAnswer::Error {
            error_code,
            error,
            request_id,
            request_tokens_used,
        }) => return Some((request_id, old(error_code, error, request_tokens_used))),
        Ok(ClientQueryAnswer::Answer { .. }) | Err(_) => {}
    }
    match crate::decode::<ClientQueryAnswerPart>(data) {
        Ok(ClientQueryAnswerPart::Error {
            error_code,
            error,
            request_id,
            request_tokens_used,
        }) => Some((request_id, old(error_code, error, request_tokens_used))),
        Ok(ClientQueryAnswerPart::Part { .. }) | Err(_) => None,
    }
}

/// What one message of a worker's answer stream says (see [`decode_client`]).
pub fn decode_proxy(data: &[u8]) -> Option<(Int256, AnswerMessage)> {
    let end = |f: Option<ProxyQueryFinalInfo>| {
        f.map(|f| {
            let t = Timings {
                start: f.worker_start_time.map_or(0.0, |d| d.0),
                end: f.worker_end_time.map_or(0.0, |d| d.0),
            };
            (f.tokens_used, t)
        })
    };
    Some(match crate::decode::<ProxyQueryAnswerEx>(data).ok()? {
        ProxyQueryAnswerEx::Answer {
            request_id,
            answer,
            final_info,
            ..
        } => (request_id, head(answer, end(final_info))),
        ProxyQueryAnswerEx::Part {
            request_id,
            answer,
            final_info,
            ..
        } => (
            request_id,
            AnswerMessage::Part {
                bytes: answer,
                end: end(final_info),
            },
        ),
        ProxyQueryAnswerEx::Error {
            request_id,
            error_code,
            error,
            final_info,
            ..
        } => (
            request_id,
            AnswerMessage::Error {
                code: error_code,
                message: error,
                end: end(final_info).unwrap_or_default(),
            },
        ),
    })
}

fn head(answer: Vec<u8>, end: Option<(TokensUsed, Timings)>) -> AnswerMessage {
    match crate::decode::<HttpResponse>(&answer) {
        Ok(head) => AnswerMessage::Head { head, end },
        Err(e) => AnswerMessage::Error {
            code: 502,
            message: format!("the answer head is not an http.response: {e}").into_bytes(),
            end: end.unwrap_or_default(),
        },
    }
}

/// One message of an answer stream.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerMessage {
    /// The head, ending the answer when `end` is given.
    Head {
        /// Status, headers, first body bytes.
        head: HttpResponse,
        /// Present when this is also the last message.
        end: Option<(TokensUsed, Timings)>,
    },
    /// Body bytes, ending the answer when `end` is given.
    Part {
        /// The bytes.
        bytes: Vec<u8>,
        /// Present on the last message.
        end: Option<(TokensUsed, Timings)>,
    },
    /// The failure that ends the answer.
    Error {
        /// Error code.
        code: i32,
        /// Reason.
        message: Vec<u8>,
        /// Tokens used before it, and timings.
        end: (TokensUsed, Timings),
    },
}

impl AnswerMessage {
    /// What this message ends the answer with (tokens and timings), when it is the last one;
    /// an error always is.
    pub fn end(&self) -> Option<(TokensUsed, Timings)> {
        match self {
            AnswerMessage::Head { end, .. } | AnswerMessage::Part { end, .. } => *end,
            AnswerMessage::Error { end, .. } => Some(*end),
        }
    }

    /// This message as the last of the answer, ending it with `end`.
    pub fn ending(self, end: (TokensUsed, Timings)) -> Self {
        match self {
            AnswerMessage::Head { head, .. } => AnswerMessage::Head {
                head,
                end: Some(end),
            },
            AnswerMessage::Part { bytes, .. } => AnswerMessage::Part {
                bytes,
                end: Some(end),
            },
            AnswerMessage::Error { code, message, .. } => {
                AnswerMessage::Error { code, message, end }
            }
        }
    }
}

/// Encodes `m` for a client (`client.queryAnswer*Ex`); the proxy's own timings are also the
/// worker's when the caller knows no better ones.
pub fn client_message(request_id: Int256, m: AnswerMessage, worker: Option<Timings>) -> Vec<u8> {
    let info = |(tokens, t): (TokensUsed, Timings)| {
        let w = worker.unwrap_or(t);
        ClientQueryFinalInfo {
            flags: (),
            tokens_used: tokens,
            worker_debug: None,
            proxy_debug: None,
            proxy_start_time: Some(Double(t.start)),
            proxy_end_time: Some(Double(t.end)),
            worker_start_time: Some(Double(w.start)),
            worker_end_time: Some(Double(w.end)),
        }
    };
    crate::encode(&match m {
        AnswerMessage::Head { head, end } => ClientQueryAnswerEx::Answer {
            request_id,
            answer: crate::encode(&head),
            flags: (),
            final_info: end.map(info),
        },
        AnswerMessage::Part { bytes, end } => ClientQueryAnswerEx::Part {
            request_id,
            answer: bytes,
            flags: (),
            final_info: end.map(info),
        },
        AnswerMessage::Error { code, message, end } => ClientQueryAnswerEx::Error {
            request_id,
            error_code: code,
            error: message,
            flags: (),
            final_info: Some(info(end)),
        },
    })
}

/// Encodes `m` for a proxy (`proxy.queryAnswer*Ex`, a worker's answer).
pub fn proxy_message(request_id: Int256, m: AnswerMessage) -> Vec<u8> {
    let info = |(tokens, t): (TokensUsed, Timings)| ProxyQueryFinalInfo {
        flags: (),
        tokens_used: tokens,
        worker_debug: None,
        worker_start_time: Some(Double(t.start)),
        worker_end_time: Some(Double(t.end)),
    };
    crate::encode(&match m {
        AnswerMessage::Head { head, end } => ProxyQueryAnswerEx::Answer {
            request_id,
            answer: crate::encode(&head),
            flags: (),
            final_info: end.map(info),
        },
        AnswerMessage::Part { bytes, end } => ProxyQueryAnswerEx::Part {
            request_id,
            answer: bytes,
            flags: (),
            final_info: end.map(info),
        },
        AnswerMessage::Error { code, message, end } => ProxyQueryAnswerEx::Error {
            request_id,
            error_code: code,
            error: message,
            flags: (),
            final_info: Some(info(end)),
        },
    })
}

/// A head for an answer the sender makes itself: `HTTP/1.1 <status>` with these headers.
pub fn http_head(status: u16, reason: &str, headers: &[(&str, &str)]) -> HttpResponse {
    HttpResponse {
        http_version: b"HTTP/1.1".to_vec(),
        status_code: i32::from(status),
        reason: reason.as_bytes().to_vec(),
        headers: headers
            .iter()
            .map(|(n, v)| crate::common::HttpHeader {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(total: u64) -> TokensUsed {
        TokensUsed {
            completion_tokens_used: total,
            total_tokens_used: total,
            ..Default::default()
        }
    }

    #[test]
    fn every_message_decodes_to_what_was_encoded_on_both_hops() {
        let id = [7u8; 32];
        let t = Timings {
            start: 1.0,
            end: 2.0,
        };
        let head = http_head(200, "OK", &[("content-type", "text/event-stream")]);
        let cases = [
            AnswerMessage::Head {
                head: head.clone(),
                end: None,
            },
            AnswerMessage::Head {
                head: head.clone(),
                end: Some((tokens(5), t)),
            },
            AnswerMessage::Part {
                bytes: b"data: x\n\n".to_vec(),
                end: None,
            },
            AnswerMessage::Part {
                bytes: vec![],
                end: Some((tokens(9), t)),
            },
            AnswerMessage::Error {
                code: 503,
                message: b"busy".to_vec(),
                end: (tokens(0), t),
            },
        ];
        for m in cases {
            assert_eq!(
                decode_client(&client_message(id, m.clone(), None)),
                Some((id, m.clone()))
            );
            assert_eq!(decode_proxy(&proxy_message(id, m.clone())), Some((id, m)));
        }
    }

    #[test]
    fn a_message_knows_whether_it_ends_the_answer_and_can_be_made_the_last() {
        let t = Timings {
            start: 1.0,
            end: 2.0,
        };
        let part = AnswerMessage::Part {
            bytes: b"x".to_vec(),
            end: None,
        };
        assert_eq!(part.end(), None);
        let last = part.ending((tokens(7), t));
        assert_eq!(last.end(), Some((tokens(7), t)));
        assert_eq!(
            last,
            AnswerMessage::Part {
                bytes: b"x".to_vec(),
                end: Some((tokens(7), t))
            }
        );
        let error = AnswerMessage::Error {
            code: 500,
            message: vec![],
            end: Default::default(),
        };
        assert_eq!(
            error.clone().ending((tokens(3), t)).end(),
            Some((tokens(3), t))
        );
        assert!(error.end().is_some(), "an error always ends the answer");
    }

    #[test]
    fn the_references_old_refusal_forms_are_read_too() {
        let id = [3u8; 32];
        let old = crate::encode(&ClientQueryAnswer::Error {
            error_code: 404,
            error: b"unknown model".to_vec(),
            request_id: id,
            request_tokens_used: TokensUsed::default(),
        });
        assert_eq!(
            decode_client(&old),
            Some((
                id,
                AnswerMessage::Error {
                    code: 404,
                    message: b"unknown model".to_vec(),
                    end: Default::default()
                }
            ))
        );
        let old_part = crate::encode(&ClientQueryAnswerPart::Error {
            error_code: 621,
            error: b"reserved_tokens depleted".to_vec(),
            request_id: id,
            request_tokens_used: tokens(3),
        });
        assert!(matches!(
            decode_client(&old_part),
            Some((_, AnswerMessage::Error { code: 621, .. }))
        ));
        assert_eq!(decode_client(b"not an answer at all"), None);
        assert_eq!(decode_proxy(b"not an answer at all"), None);
    }

    #[test]
    fn a_head_that_is_not_an_http_response_is_a_failure_not_a_panic() {
        let m = crate::encode(&ClientQueryAnswerEx::Answer {
            request_id: [1; 32],
            answer: vec![1, 2, 3],
            flags: (),
            final_info: None,
        });
        assert!(matches!(
            decode_client(&m),
            Some((_, AnswerMessage::Error { code: 502, .. }))
        ));
    }
}
