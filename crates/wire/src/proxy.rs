//! Messages the proxy sends: its handshake parameters, the queries it runs
//! on workers, their answers as relayed back, and payment notices.

use tl_proto::{BoxedConstructor, TlRead, TlWrite};

use crate::common::{Double, SignedPayment, TokensUsed};
use crate::Int256;

/// `proxy.params`: what a proxy tells a connecting client or worker about
/// itself (embedded bare). Fields sharing a flag bit are set together.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct ProxyParams {
    /// The flags word; computed from which optional fields are set.
    #[tl(flags)]
    pub flags: (),
    /// The proxy's Ed25519 key that signs vouchers.
    pub proxy_public_key: Int256,
    /// The proxy owner's TON address (text form).
    pub proxy_owner_address: Vec<u8>,
    /// The proxy contract's TON address (text form).
    pub proxy_sc_address: Vec<u8>,
    /// Whether this is a test network (flag bit 0).
    #[tl(flags_bit = 0)]
    pub is_test: Option<bool>,
    /// The protocol version the proxy speaks (flag bit 1).
    #[tl(flags_bit = 1)]
    pub proto_version: Option<i32>,
}

impl BoxedConstructor for ProxyParams {
    const TL_ID: u32 = tl_proto::id!("proxy.params", scheme = "cocoon.tl");
}

/// `proxy.QueryAnswer`: the complete answer of a worker to `proxy.runQuery`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ProxyQueryAnswer {
    /// The answer (or its first part, when `is_completed` is false).
    #[tl(id = "proxy.queryAnswer")]
    Answer {
        /// Serialized `http.response` or a chunk of its body.
        answer: Vec<u8>,
        /// False when more parts follow as `proxy.queryAnswerPart`.
        is_completed: bool,
        /// The request this answers.
        request_id: Int256,
        /// Tokens used so far.
        tokens_used: TokensUsed,
    },
    /// The query failed on the worker.
    #[tl(id = "proxy.queryAnswerError")]
    Error {
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
        /// The request this answers.
        request_id: Int256,
        /// Tokens used before the failure (billed).
        tokens_used: TokensUsed,
    },
}

/// `proxy.QueryAnswerPart`: a further part of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ProxyQueryAnswerPart {
    /// One more chunk.
    #[tl(id = "proxy.queryAnswerPart")]
    Part {
        /// The chunk.
        answer: Vec<u8>,
        /// True for the last part.
        is_completed: bool,
        /// The request this continues.
        request_id: Int256,
        /// Tokens used so far.
        tokens_used: TokensUsed,
    },
    /// The stream failed after some parts.
    #[tl(id = "proxy.queryAnswerPartError")]
    Error {
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
        /// The request this ends.
        request_id: Int256,
        /// Tokens used before the failure.
        tokens_used: TokensUsed,
    },
}

/// `proxy.queryFinalInfo`: the worker's closing statistics (embedded bare).
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
pub struct ProxyQueryFinalInfo {
    /// The flags word.
    #[tl(flags)]
    pub flags: (),
    /// Final token counts.
    pub tokens_used: TokensUsed,
    /// Worker debug text (flag bit 0).
    #[tl(flags_bit = 0)]
    pub worker_debug: Option<Vec<u8>>,
    /// When the worker started, unix seconds (flag bit 1, set with `worker_end_time`).
    #[tl(flags_bit = 1)]
    pub worker_start_time: Option<Double>,
    /// When the worker finished, unix seconds (flag bit 1).
    #[tl(flags_bit = 1)]
    pub worker_end_time: Option<Double>,
}

/// `proxy.QueryAnswerEx`: the answer stream of `proxy.runQueryEx`.
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ProxyQueryAnswerEx {
    /// The first (or only) part of the answer.
    #[tl(id = "proxy.queryAnswerEx")]
    Answer {
        /// The request this answers.
        request_id: Int256,
        /// Serialized `http.response`.
        answer: Vec<u8>,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Present on the last message of the stream.
        #[tl(flags_bit = 0)]
        final_info: Option<ProxyQueryFinalInfo>,
    },
    /// The query failed.
    #[tl(id = "proxy.queryAnswerErrorEx")]
    Error {
        /// The request this answers.
        request_id: Int256,
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Final statistics.
        #[tl(flags_bit = 0)]
        final_info: Option<ProxyQueryFinalInfo>,
    },
    /// A further chunk of the answer body.
    #[tl(id = "proxy.queryAnswerPartEx")]
    Part {
        /// The request this continues.
        request_id: Int256,
        /// The chunk.
        answer: Vec<u8>,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Present on the last message of the stream.
        #[tl(flags_bit = 0)]
        final_info: Option<ProxyQueryFinalInfo>,
    },
}

/// `proxy.WorkerRequestPayment`: the proxy's notice of what a finished
/// request paid, with the newest cumulative voucher.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum RequestPayment {
    /// Sent to a worker: its earnings for the request.
    #[tl(id = "proxy.workerRequestPayment")]
    Worker {
        /// The request paid for.
        request_id: Int256,
        /// The newest voucher for this worker.
        signed_payment: SignedPayment,
        /// Tokens the proxy has committed to its ledger for this worker.
        db_tokens: u64,
        /// Tokens the voucher covers.
        max_tokens: u64,
        /// Tokens of this request.
        request_tokens: u64,
        /// The owner address of the client that paid.
        request_client_owner: Vec<u8>,
    },
    /// Sent to a client: its charge for the request.
    #[tl(id = "proxy.clientRequestPayment")]
    Client {
        /// The request charged.
        request_id: Int256,
        /// The newest voucher for this client.
        signed_payment: SignedPayment,
        /// Tokens committed to the ledger for this client.
        db_tokens: u64,
        /// Tokens the voucher covers.
        max_tokens: u64,
        /// Tokens of this request.
        request_tokens: u64,
    },
}

/// `proxy.cancelQuery` (ours, not in COCOON): a one-way notice that the client of a request went
/// away, so the worker stops generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "proxy.cancelQuery", scheme = "cocoon.tl")]
pub struct CancelQuery {
    /// The request to stop.
    pub request_id: Int256,
}

/// Requests a proxy sends to a worker (`proxy.runQuery*` functions).
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ProxyRequest {
    /// Run one inference query; answered by [`ProxyQueryAnswer`] and parts.
    #[tl(id = "proxy.runQuery")]
    RunQuery {
        /// Serialized `http.request`.
        query: Vec<u8>,
        /// The worker's newest voucher.
        signed_payment: SignedPayment,
        /// The coefficient the client is billed at, thousandths.
        coefficient: i64,
        /// Seconds the worker may spend.
        timeout: Double,
        /// Unique request id.
        request_id: Int256,
    },
    /// Like `RunQuery`, answered by [`ProxyQueryAnswerEx`].
    #[tl(id = "proxy.runQueryEx")]
    RunQueryEx {
        /// Serialized `http.request`.
        query: Vec<u8>,
        /// The worker's newest voucher.
        signed_payment: SignedPayment,
        /// The coefficient, thousandths.
        coefficient: i64,
        /// Seconds the worker may spend.
        timeout: Double,
        /// Unique request id.
        request_id: Int256,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Ask for debug information in the final info.
        #[tl(flags_bit = 0)]
        enable_debug: Option<bool>,
    },
}
