//! Messages of the worker ↔ proxy handshake and its runtime controls.

use tl_proto::{BoxedConstructor, TlRead, TlWrite};

use crate::common::SignedPayment;
use crate::proxy::ProxyParams;

/// `worker.params`: what a worker announces when it connects (embedded
/// bare). Fields sharing a flag bit are set together.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
pub struct WorkerParams {
    /// The flags word.
    #[tl(flags)]
    pub flags: (),
    /// The worker owner's TON address, paid on payouts.
    pub worker_owner_address: Vec<u8>,
    /// The model identity it serves (`name@sha256`).
    pub model: Vec<u8>,
    /// Its price coefficient, thousandths (1000 = base price).
    pub coefficient: i32,
    /// Test network? (flag bit 0, with `proxy_cnt` and `max_active_requests`)
    #[tl(flags_bit = 0)]
    pub is_test: Option<bool>,
    /// How many proxies it connects to (flag bit 0).
    #[tl(flags_bit = 0)]
    pub proxy_cnt: Option<i32>,
    /// Most requests it runs at once (flag bit 0).
    #[tl(flags_bit = 0)]
    pub max_active_requests: Option<i32>,
    /// Lowest protocol version it speaks (flag bit 1, with `max_proto_version`).
    #[tl(flags_bit = 1)]
    pub min_proto_version: Option<i32>,
    /// Highest protocol version it speaks (flag bit 1).
    #[tl(flags_bit = 1)]
    pub max_proto_version: Option<i32>,
    /// This implementation's extension: the worker's engine calls tools (flag bit 20, no
    /// bytes of its own; a reference proxy reads the flags word and ignores the bit).
    #[tl(flags_bit = 20)]
    pub supports_tools: Option<()>,
    /// This implementation's extension: the engine enforces `response_format` (flag bit 21).
    #[tl(flags_bit = 21)]
    pub supports_structured_output: Option<()>,
}

impl BoxedConstructor for WorkerParams {
    const TL_ID: u32 = tl_proto::id!("worker.params", scheme = "cocoon.tl");
}

/// `worker.enabledDisabled`: a worker switching itself off (1) or on (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "worker.enabledDisabled", scheme = "cocoon.tl")]
pub struct EnabledDisabled {
    /// 1 = disabled, 0 = enabled.
    pub disabled: i32,
}

/// `worker.newCoefficient`: a runtime change of the worker's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "worker.newCoefficient", scheme = "cocoon.tl")]
pub struct NewCoefficient {
    /// The new coefficient, thousandths.
    pub new_coefficient: i32,
}

/// `worker.connectedToProxy`: the proxy's answer to `worker.connectToProxy`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "worker.connectedToProxy", scheme = "cocoon.tl")]
pub struct ConnectedToProxy {
    /// The proxy's parameters.
    pub params: ProxyParams,
    /// The worker contract address for this (worker, proxy) pair.
    pub worker_sc_address: Vec<u8>,
}

/// `worker.compareBalanceWithProxyResult`: the proxy's view of what it owes.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(
    boxed,
    id = "worker.compareBalanceWithProxyResult",
    scheme = "cocoon.tl"
)]
pub struct CompareBalanceResult {
    /// The newest voucher for the worker.
    pub signed_payment: SignedPayment,
    /// Tokens the proxy's ledger holds for the worker.
    pub tokens_committed_to_db: u64,
    /// Tokens the voucher covers.
    pub max_tokens: u64,
    /// 0 when the proxy agrees; otherwise why not.
    pub error_code: i32,
}

/// `worker.extendedCompareBalanceWithProxyResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlRead, TlWrite)]
#[tl(
    boxed,
    id = "worker.extendedCompareBalanceWithProxyResult",
    scheme = "cocoon.tl"
)]
pub struct ExtendedCompareBalanceResult {
    /// 0 when the proxy agrees.
    pub error_code: i32,
}

/// `worker.proxyHandshakeCompleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "worker.proxyHandshakeCompleted", scheme = "cocoon.tl")]
pub struct HandshakeCompleted {}

/// `worker.paymentStatus`: the answer to `worker.updatePaymentStatus`.
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, id = "worker.paymentStatus", scheme = "cocoon.tl")]
pub struct WorkerPaymentStatus {
    /// The newest voucher.
    pub signed_payment: SignedPayment,
    /// Tokens in the proxy's ledger.
    pub db_tokens: u64,
    /// Tokens the voucher covers.
    pub max_tokens: u64,
}

/// Requests a worker sends to a proxy (`worker.*` functions).
#[derive(Debug, Clone, PartialEq, Eq, TlRead, TlWrite)]
#[tl(boxed, scheme = "cocoon.tl")]
pub enum WorkerRequest {
    /// Announce itself; answered by [`ConnectedToProxy`].
    #[tl(id = "worker.connectToProxy")]
    ConnectToProxy {
        /// The worker's parameters.
        params: WorkerParams,
    },
    /// Compare totals; answered by [`CompareBalanceResult`]. A worker whose
    /// on-chain total exceeds the proxy's refuses the proxy (a rollback).
    #[tl(id = "worker.compareBalanceWithProxy")]
    CompareBalanceWithProxy {
        /// Tokens already paid out on chain.
        tokens_committed_to_blockchain: u64,
        /// Tokens of the newest voucher the worker holds.
        tokens_committed_to_db: u64,
        /// The most tokens the worker has seen promised.
        max_tokens: u64,
    },
    /// Extended comparison; answered by [`ExtendedCompareBalanceResult`].
    #[tl(id = "worker.extendedCompareBalanceWithProxy")]
    ExtendedCompareBalanceWithProxy {
        /// Tokens of the newest voucher the worker holds.
        tokens_committed_to_db: u64,
        /// Reserved for more evidence.
        other: Vec<u8>,
    },
    /// Finish the handshake; answered by [`HandshakeCompleted`].
    #[tl(id = "worker.proxyHandshakeComplete")]
    ProxyHandshakeComplete {
        /// Whether the worker starts disabled.
        is_disabled: bool,
    },
    /// Ask for the newest voucher; answered by [`WorkerPaymentStatus`].
    #[tl(id = "worker.updatePaymentStatus")]
    UpdatePaymentStatus,
}
