//! Messages every role uses: token usage, signed payments (vouchers) and
//! HTTP requests tunnelled over the protocol.

use tl_proto::{BoxedConstructor, TlRead, TlWrite};

/// `tokensUsed`: the token counts of one request or a running total. Always
/// embedded bare (without its id) in other messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, TlRead, TlWrite)]
#[tl(size_hint = 40)]
pub struct TokensUsed {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens_used: u64,
    /// Prompt tokens served from a prefix cache.
    pub cached_tokens_used: u64,
    /// Completion tokens, reasoning ones included.
    pub completion_tokens_used: u64,
    /// Completion tokens spent inside `<think>` blocks.
    pub reasoning_tokens_used: u64,
    /// The billed total after coefficients and multipliers.
    pub total_tokens_used: u64,
}

impl BoxedConstructor for TokensUsed {
    const TL_ID: u32 = tl_proto::id!("tokensUsed", scheme = "cocoon.tl");
}

/// `proxy.SignedPayment`: a proxy-signed cumulative voucher (a serialized
/// cell, see the chain crate), or nothing yet.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum SignedPayment {
    /// A voucher: the bag of cells holding the signed payment message.
    #[tl(id = "proxy.signedPayment")]
    Signed {
        /// The serialized voucher.
        data: Vec<u8>,
    },
    /// No voucher has been signed for this party yet.
    #[tl(id = "proxy.signedPaymentEmpty")]
    Empty,
}

/// `http.header`: one HTTP header (embedded bare in vectors).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct HttpHeader {
    /// Header name.
    pub name: Vec<u8>,
    /// Header value.
    pub value: Vec<u8>,
}

/// `http.request`: an HTTP request forwarded to an inference engine.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "http.request", scheme = "cocoon.tl")]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: Vec<u8>,
    /// The path and query, e.g. `/v1/chat/completions`.
    pub url: Vec<u8>,
    /// e.g. `HTTP/1.1`.
    pub http_version: Vec<u8>,
    /// Request headers.
    pub headers: Vec<HttpHeader>,
    /// Request body.
    pub payload: Vec<u8>,
}

/// `http.response`: the answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "http.response", scheme = "cocoon.tl")]
pub struct HttpResponse {
    /// e.g. `HTTP/1.1`.
    pub http_version: Vec<u8>,
    /// e.g. 200.
    pub status_code: i32,
    /// e.g. `OK`.
    pub reason: Vec<u8>,
    /// Response headers.
    pub headers: Vec<HttpHeader>,
    /// Response body (or its first part when streamed).
    pub payload: Vec<u8>,
}

/// TL `double`: an IEEE-754 binary64 as its 8 little-endian bytes, as the
/// reference network writes it. (tl-proto's own `f64` encoding rewrites the
/// bits for hashing, so it would not interoperate; this type replaces it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Double(pub f64);

impl From<f64> for Double {
    fn from(v: f64) -> Self {
        Double(v)
    }
}

impl Double {
    /// A timeout in seconds from the wire, kept within 1 s and `limit`; NaN means `limit`
    /// (a peer must not be able to make `Duration` panic).
    pub fn as_timeout(self, limit: std::time::Duration) -> std::time::Duration {
        let limit = limit.max(std::time::Duration::from_secs(1));
        if self.0.is_nan() {
            return limit;
        }
        std::time::Duration::from_secs_f64(self.0.clamp(1.0, limit.as_secs_f64()))
    }
}

impl TlWrite for Double {
    type Repr = tl_proto::Bare;

    fn max_size_hint(&self) -> usize {
        8
    }

    fn write_to<P: tl_proto::TlPacket>(&self, packet: &mut P) {
        packet.write_u64(self.0.to_bits());
    }
}

impl TlRead<'_> for Double {
    type Repr = tl_proto::Bare;

    fn read_from(packet: &mut &[u8]) -> tl_proto::TlResult<Self> {
        u64::read_from(packet).map(|bits| Double(f64::from_bits(bits)))
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::Double;
    use std::time::Duration;

    #[test]
    fn a_timeout_from_the_wire_is_kept_within_bounds() {
        let limit = Duration::from_secs(300);
        let t = |v: f64| Double(v).as_timeout(limit);
        assert_eq!(t(f64::NAN), limit);
        assert_eq!(t(f64::INFINITY), limit);
        assert_eq!(t(-5.0), Duration::from_secs(1));
        assert_eq!(t(0.2), Duration::from_secs(1));
        assert_eq!(t(42.0), Duration::from_secs(42));
        assert_eq!(t(1e12), limit);
        // A limit under a second still gives a valid range.
        assert_eq!(
            Double(10.0).as_timeout(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
    }
}
