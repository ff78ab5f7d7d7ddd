//! Messages of the client ↔ proxy protocol: connecting and authorizing,
//! running queries and receiving their (streamed) answers, refunds, payment
//! status and the catalogue of worker types.

use tl_proto::{BoxedConstructor, TlRead, TlWrite};

use crate::common::{Double, SignedPayment, TokensUsed};
use crate::proxy::ProxyParams;
use crate::Int256;

/// `client.params`: what a client announces when it connects (embedded bare).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct ClientParams {
    /// The flags word.
    #[tl(flags)]
    pub flags: (),
    /// The client owner's TON address.
    pub client_owner_address: Vec<u8>,
    /// Test network? (flag bit 0)
    #[tl(flags_bit = 0)]
    pub is_test: Option<bool>,
    /// Lowest protocol version spoken (flag bit 1, with `max_proto_version`).
    #[tl(flags_bit = 1)]
    pub min_proto_version: Option<i32>,
    /// Highest protocol version spoken (flag bit 1).
    #[tl(flags_bit = 1)]
    pub max_proto_version: Option<i32>,
}

impl BoxedConstructor for ClientParams {
    const TL_ID: u32 = tl_proto::id!("client.params", scheme = "cocoon.tl");
}

/// `client.ProxyConnectionAuth`: how the proxy wants the client to prove it
/// owns its contract.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ProxyConnectionAuth {
    /// Prove knowledge of the secret whose hash is registered.
    #[tl(id = "client.proxyConnectionAuthShort")]
    Short {
        /// SHA-256 of the client's secret.
        secret_hash: Int256,
        /// Fresh nonce to bind the proof to this connection.
        nonce: u64,
    },
    /// Prove ownership by an on-chain registration carrying the nonce.
    #[tl(id = "client.proxyConnectionAuthLong")]
    Long {
        /// Nonce to put in the registration message.
        nonce: u64,
    },
}

/// `client.AuthorizationWithProxy`: the outcome of authorizing.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum AuthorizationWithProxy {
    /// Authorized; the client's current voucher and totals.
    #[tl(id = "client.authorizationWithProxySuccess")]
    Success {
        /// The newest voucher charging this client.
        signed_payment: SignedPayment,
        /// Tokens in the proxy's ledger for this client.
        tokens_committed_to_db: u64,
        /// Tokens the voucher covers.
        max_tokens: u64,
    },
    /// Refused.
    #[tl(id = "client.authorizationWithProxyFailed")]
    Failed {
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
    },
}

/// `client.connectedToProxy`: the proxy's answer to `client.connectToProxy`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "client.connectedToProxy", scheme = "cocoon.tl")]
pub struct ClientConnectedToProxy {
    /// The proxy's parameters.
    pub params: ProxyParams,
    /// The client contract for this (client, proxy) pair.
    pub client_sc_address: Vec<u8>,
    /// How to authorize.
    pub auth: ProxyConnectionAuth,
    /// The newest voucher charging this client.
    pub signed_payment: SignedPayment,
}

/// `client.QueryAnswer`: the answer to `client.runQuery`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ClientQueryAnswer {
    /// The answer or its first part.
    #[tl(id = "client.queryAnswer")]
    Answer {
        /// Serialized `http.response` or a body chunk.
        answer: Vec<u8>,
        /// False when parts follow.
        is_completed: bool,
        /// The request this answers.
        request_id: Int256,
        /// Tokens billed so far.
        request_tokens_used: TokensUsed,
    },
    /// The query failed.
    #[tl(id = "client.queryAnswerError")]
    Error {
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
        /// The request this answers.
        request_id: Int256,
        /// Tokens billed before the failure.
        request_tokens_used: TokensUsed,
    },
}

/// `client.QueryAnswerPart`: a further part of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ClientQueryAnswerPart {
    /// One more chunk.
    #[tl(id = "client.queryAnswerPart")]
    Part {
        /// The chunk.
        answer: Vec<u8>,
        /// True for the last part.
        is_completed: bool,
        /// The request this continues.
        request_id: Int256,
        /// Tokens billed so far.
        request_tokens_used: TokensUsed,
    },
    /// The stream failed.
    #[tl(id = "client.queryAnswerPartError")]
    Error {
        /// Error code.
        error_code: i32,
        /// Reason, UTF-8 text.
        error: Vec<u8>,
        /// The request this ends.
        request_id: Int256,
        /// Tokens billed before the failure.
        request_tokens_used: TokensUsed,
    },
}

/// `client.queryFinalInfo`: closing statistics of a query (embedded bare).
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
pub struct ClientQueryFinalInfo {
    /// The flags word.
    #[tl(flags)]
    pub flags: (),
    /// Final billed tokens.
    pub tokens_used: TokensUsed,
    /// Worker debug text (flag bit 0, with `proxy_debug`).
    #[tl(flags_bit = 0)]
    pub worker_debug: Option<Vec<u8>>,
    /// Proxy debug text (flag bit 0).
    #[tl(flags_bit = 0)]
    pub proxy_debug: Option<Vec<u8>>,
    /// Timings, unix seconds (flag bit 1: all four together).
    #[tl(flags_bit = 1)]
    pub proxy_start_time: Option<Double>,
    /// See `proxy_start_time`.
    #[tl(flags_bit = 1)]
    pub proxy_end_time: Option<Double>,
    /// See `proxy_start_time`.
    #[tl(flags_bit = 1)]
    pub worker_start_time: Option<Double>,
    /// See `proxy_start_time`.
    #[tl(flags_bit = 1)]
    pub worker_end_time: Option<Double>,
}

/// `client.QueryAnswerEx`: the answer stream of `client.runQueryEx`.
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ClientQueryAnswerEx {
    /// The first (or only) part.
    #[tl(id = "client.queryAnswerEx")]
    Answer {
        /// The request this answers.
        request_id: Int256,
        /// Serialized `http.response`.
        answer: Vec<u8>,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Present on the last message.
        #[tl(flags_bit = 0)]
        final_info: Option<ClientQueryFinalInfo>,
    },
    /// The query failed.
    #[tl(id = "client.queryAnswerErrorEx")]
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
        final_info: Option<ClientQueryFinalInfo>,
    },
    /// A further body chunk.
    #[tl(id = "client.queryAnswerPartEx")]
    Part {
        /// The request this continues.
        request_id: Int256,
        /// The chunk.
        answer: Vec<u8>,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Present on the last message.
        #[tl(flags_bit = 0)]
        final_info: Option<ClientQueryFinalInfo>,
    },
}

/// `client.Refund`: the answer to `client.requestRefund`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum Refund {
    /// The proxy-signed refund grant (a serialized message for the contract).
    #[tl(id = "client.refund")]
    Granted {
        /// The signed grant.
        data: Vec<u8>,
    },
    /// Refused while queries still run.
    #[tl(id = "client.refundRejected")]
    Rejected {
        /// How many queries are running.
        active_queries: u64,
    },
}

/// `client.workerType`: a model served by the proxy, summarized (bare).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct WorkerType {
    /// Model identity.
    pub name: Vec<u8>,
    /// Connected, enabled workers.
    pub active_workers: i32,
    /// Cheapest coefficient.
    pub coefficient_min: i32,
    /// Median coefficient.
    pub coefficient_bucket50: i32,
    /// Dearest coefficient.
    pub coefficient_max: i32,
}

/// `client.workerTypes`: the answer to `client.getWorkerTypes`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "client.workerTypes", scheme = "cocoon.tl")]
pub struct WorkerTypes {
    /// One entry per model.
    pub types: Vec<WorkerType>,
}

/// `client.workerInstanceV2`: one worker as a client sees it (bare).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct WorkerInstanceV2 {
    /// The flags word (COCOON defines no optional fields).
    #[tl(flags)]
    pub flags: (),
    /// Its coefficient, thousandths.
    pub coefficient: i32,
    /// Requests it is running.
    pub active_requests: i32,
    /// Its capacity.
    pub max_active_requests: i32,
    /// This implementation's extension, sent only to clients of our protocol version: the
    /// worker calls tools (flag bit 20, no bytes of its own), as it announced.
    #[tl(flags_bit = 20)]
    pub supports_tools: Option<()>,
    /// Our extension: the worker enforces `response_format` (flag bit 21).
    #[tl(flags_bit = 21)]
    pub supports_structured_output: Option<()>,
}

/// `client.workerTypeV2`: a model and each of its workers (bare).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct WorkerTypeV2 {
    /// Model identity.
    pub name: Vec<u8>,
    /// Its workers.
    pub workers: Vec<WorkerInstanceV2>,
}

/// `client.workerTypesV2`: the answer to `client.getWorkerTypesV2`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "client.workerTypesV2", scheme = "cocoon.tl")]
pub struct WorkerTypesV2 {
    /// One entry per model.
    pub types: Vec<WorkerTypeV2>,
}

/// `client.paymentStatus`: the answer to `client.updatePaymentStatus`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "client.paymentStatus", scheme = "cocoon.tl")]
pub struct ClientPaymentStatus {
    /// The newest voucher.
    pub signed_payment: SignedPayment,
    /// Tokens in the proxy's ledger.
    pub db_tokens: u64,
    /// Tokens the voucher covers.
    pub max_tokens: u64,
}

/// Requests a client sends to a proxy (`client.*` functions).
#[derive(Debug, Clone, PartialEq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum ClientRequest {
    /// Announce itself; answered by [`ClientConnectedToProxy`].
    #[tl(id = "client.connectToProxy")]
    ConnectToProxy {
        /// The client's parameters.
        params: ClientParams,
        /// The lowest root-contract config version the client accepts.
        min_config_version: i32,
    },
    /// Authorize with the secret; answered by [`AuthorizationWithProxy`].
    #[tl(id = "client.authorizeWithProxyShort")]
    AuthorizeWithProxyShort {
        /// The secret.
        data: Vec<u8>,
    },
    /// Authorize by on-chain registration; answered by [`AuthorizationWithProxy`].
    #[tl(id = "client.authorizeWithProxyLong")]
    AuthorizeWithProxyLong,
    /// Run a query; answered by [`ClientQueryAnswer`] and parts.
    #[tl(id = "client.runQuery")]
    RunQuery {
        /// The model identity wanted.
        model_name: Vec<u8>,
        /// Serialized `http.request`.
        query: Vec<u8>,
        /// The dearest coefficient accepted, thousandths.
        max_coefficient: i32,
        /// Most completion tokens.
        max_tokens: i32,
        /// Seconds the client waits.
        timeout: Double,
        /// Unique request id.
        request_id: Int256,
        /// Lowest root config version accepted.
        min_config_version: i32,
    },
    /// Like `RunQuery`, answered by [`ClientQueryAnswerEx`].
    #[tl(id = "client.runQueryEx")]
    RunQueryEx {
        /// The model identity wanted.
        model_name: Vec<u8>,
        /// Serialized `http.request`.
        query: Vec<u8>,
        /// The dearest coefficient accepted, thousandths.
        max_coefficient: i32,
        /// Most completion tokens.
        max_tokens: i32,
        /// Seconds the client waits.
        timeout: Double,
        /// Unique request id.
        request_id: Int256,
        /// Lowest root config version accepted.
        min_config_version: i32,
        /// The flags word.
        #[tl(flags)]
        flags: (),
        /// Ask for debug information.
        #[tl(flags_bit = 0)]
        enable_debug: Option<bool>,
    },
    /// Ask for a refund; answered by [`Refund`].
    #[tl(id = "client.requestRefund")]
    RequestRefund,
    /// Ask for the newest voucher; answered by [`ClientPaymentStatus`].
    #[tl(id = "client.updatePaymentStatus")]
    UpdatePaymentStatus,
    /// Ask for the model catalogue; answered by [`WorkerTypes`].
    #[tl(id = "client.getWorkerTypes")]
    GetWorkerTypes,
    /// Ask for the detailed catalogue; answered by [`WorkerTypesV2`].
    #[tl(id = "client.getWorkerTypesV2")]
    GetWorkerTypesV2,
}
