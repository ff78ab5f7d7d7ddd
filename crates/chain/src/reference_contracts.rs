//! The reference network's own contracts, as its runners address them: the proxy, worker and
//! client contract code comes from the root (on a fake-TON root: the file's hex), and each
//! contract's address is the hash of the StateInit the reference builds — its code and initial
//! data laid out exactly as `runners/smartcontracts/*Contract.cpp` lay them out. A reference
//! client or worker recomputes these addresses and refuses a proxy that names others, so our
//! roles derive them the same way (and check a reference proxy's by them).
//!
//! Initial data, field by field (addresses are `addr_std`, 267 bits; coins are VarUInteger 16):
//! - proxy: owner, proxy public key (256), root, state 0 (2 bits), balance 0, stake 0,
//!   unlock_ts 0 (32); ref: the params cell with the worker and client code;
//! - worker: owner, proxy contract, proxy public key, state 0 (2 bits), tokens 0 (64); ref:
//!   the params cell without code;
//! - client: state 0 (2 bits), balance 0, stake = the minimum client stake, tokens_used 0
//!   (64), unlock_ts 0 (32), secret hash 0 (256); refs: (owner, proxy contract, proxy public
//!   key), then the params cell without code.
//!
//! (Our own client and worker contracts keep the same layouts: [`crate::contracts::ClientInit`]
//! and [`crate::contracts::WorkerInit`] build both.)
//!
//! The params cell on a fake-TON root (struct version 1, as the reference fills it): version
//! 1 (8), params_version (32), unique id 13 (32), is_test (1 bit), price per token, worker fee
//! per token, proxy close delay 600 (32), client close delay 300 (32), minimum proxy and client
//! stakes of 1 TON, then a maybe-ref each for the proxy, worker and client code.

use tycho_types::cell::{Cell, CellFamily};

use crate::contracts::{ClientInit, ContractCodes, ParamsHead, ProxyInit, RootParams, WorkerInit};
use crate::fake_ton::FakeTon;
use crate::messages::op;
use crate::voucher::{SignedVoucher, VoucherError};
use crate::{Address, ChainError};

/// What a proxy on a fake-TON root announces about itself and about our contract there.
#[derive(Debug, Clone, Copy)]
pub struct AnnouncedProxy<'a> {
    /// `proxy.params.proxy_owner_address`.
    pub owner: &'a [u8],
    /// `proxy.params.proxy_sc_address`.
    pub contract: &'a [u8],
    /// `proxy.params.proxy_public_key`.
    pub public_key: &'a [u8; 32],
    /// `proxy.params.is_test`.
    pub is_test: Option<bool>,
    /// Our contract there (`client_sc_address` or `worker_sc_address`).
    pub ours: &'a [u8],
}

/// A fake-TON root as our roles run on it: the file, and its contracts decoded once.
#[derive(Debug, Clone)]
pub struct FakeRoot {
    /// What the file states.
    pub file: FakeTon,
    /// Its contract code and params, ready to derive addresses.
    pub contracts: ReferenceContracts,
}

impl FakeRoot {
    /// Decodes `file`'s contracts; an error names the code that is missing or broken.
    pub fn new(file: FakeTon) -> Result<Self, ChainError> {
        let contracts = ReferenceContracts::of_fake_ton(&file)?;
        Ok(FakeRoot { file, contracts })
    }

    /// [`ReferenceContracts::check_proxy`] as a role configured with `root` runs it: the zero
    /// address means no root was named, so the proxy's own contract is not recomputed.
    pub fn check_proxy(
        &self,
        p: AnnouncedProxy<'_>,
        worker: bool,
        owner: &Address,
        root: &Address,
    ) -> Result<(Address, Address), String> {
        let root = (*root != Address::new([0; 32])).then_some(root);
        self.contracts.check_proxy(p, worker, owner, root)
    }
}

/// The reference contracts of one root: their code and the params every contract holds.
#[derive(Debug, Clone)]
pub struct ReferenceContracts {
    /// The root's params cell (its prices and rules, its head, all three codes): the one source
    /// of every contract's params and of [`Self::params_view`], [`Self::codes`].
    root_params: RootParams,
    /// The same code, as [`Self::codes`] hands it out (the root's own code unknown: empty).
    codes: ContractCodes,
}

impl ReferenceContracts {
    /// The contracts a fake-TON root names (its code, its prices, the reference's fixed
    /// values for the rest: struct version 1, unique id 13, test mode, close delays of 600 and
    /// 300 s, stakes of 1 TON, multipliers 1.0). Missing code is an error naming it.
    pub fn of_fake_ton(fake: &FakeTon) -> Result<Self, ChainError> {
        let code = |what: &'static str, boc: &[u8]| -> Result<Cell, ChainError> {
            if boc.is_empty() {
                return Err(ChainError::layout(
                    what,
                    "the fake-TON root has no such code",
                ));
            }
            crate::cells::from_boc(boc)
        };
        let (proxy_code, worker_code, client_code) = (
            code("proxy_sc_code", &fake.proxy_sc_code)?,
            code("worker_sc_code", &fake.worker_sc_code)?,
            code("client_sc_code", &fake.client_sc_code)?,
        );
        Ok(ReferenceContracts {
            root_params: RootParams {
                head: ParamsHead {
                    struct_version: 1,
                    params_version: fake.params_version,
                    unique_id: 13,
                    is_test: true,
                },
                params: crate::contracts::Params {
                    price_per_token: fake.price_per_token,
                    worker_fee_per_token: fake.worker_fee_per_token,
                    prompt_mult: 10_000,
                    cached_mult: 10_000,
                    completion_mult: 10_000,
                    reasoning_mult: 10_000,
                    proxy_delay_before_close: 600,
                    client_delay_before_close: 300,
                    min_proxy_stake: crate::TON,
                    min_client_stake: crate::TON,
                },
                proxy_code: Some(proxy_code.clone()),
                worker_code: Some(worker_code.clone()),
                client_code: Some(client_code.clone()),
            },
            codes: ContractCodes {
                root: Cell::empty_cell(),
                proxy: proxy_code,
                client: client_code,
                worker: worker_code,
            },
        })
    }

    /// The root's params as the reference fills them on a fake-TON root.
    pub fn root_params(&self) -> &RootParams {
        &self.root_params
    }

    /// The proxy contract of `owner` with voucher key `public_key` under `root`.
    pub fn proxy_address(
        &self,
        owner: &Address,
        public_key: &[u8; 32],
        root: &Address,
    ) -> Result<Address, ChainError> {
        // our proxy contract keeps the reference's layout: one builder for both
        let rp = &self.root_params;
        let init = ProxyInit {
            owner: *owner,
            proxy_public_key: *public_key,
            root: *root,
            params: rp.params.clone(),
            head: rp.head,
            client_code: self.codes.client.clone(),
            worker_code: self.codes.worker.clone(),
        };
        address(&self.codes.proxy, init.data()?)
    }

    /// The worker contract of `owner` at proxy contract `proxy` (voucher key `public_key`).
    pub fn worker_address(
        &self,
        owner: &Address,
        proxy: &Address,
        public_key: &[u8; 32],
    ) -> Result<Address, ChainError> {
        // our worker contract keeps the reference's layout: one builder for both
        let init = WorkerInit {
            owner: *owner,
            proxy: *proxy,
            proxy_public_key: *public_key,
            params: self.root_params.clone(),
        };
        address(&self.codes.worker, init.data()?)
    }

    /// The client contract of `owner` at proxy contract `proxy` (voucher key `public_key`).
    pub fn client_address(
        &self,
        owner: &Address,
        proxy: &Address,
        public_key: &[u8; 32],
    ) -> Result<Address, ChainError> {
        // our client contract keeps the reference's layout: one builder for both
        let init = ClientInit {
            owner: *owner,
            proxy: *proxy,
            proxy_public_key: *public_key,
            params: self.root_params.clone(),
        };
        address(&self.codes.client, init.data()?)
    }

    /// The prices and rules these contracts hold, as this crate's [`crate::contracts::Params`].
    pub fn params_view(&self) -> crate::contracts::Params {
        self.root_params.params.clone()
    }

    /// The contract code, as the root holds it.
    pub fn codes(&self) -> ContractCodes {
        self.codes.clone()
    }

    /// Checks what a proxy announces as a reference client (`worker`: false) or worker checks
    /// it: a test network; our contract at the proxy it names is the one the root's code makes
    /// for `owner`; and, when `root` is known, its own contract is the one the code makes for
    /// its owner and key under that root. Returns the proxy's contract and ours; the error says
    /// which address differs from which.
    pub fn check_proxy(
        &self,
        p: AnnouncedProxy<'_>,
        worker: bool,
        owner: &Address,
        root: Option<&Address>,
    ) -> Result<(Address, Address), String> {
        let parse = |what: &str, raw: &[u8]| -> Result<Address, String> {
            let text = String::from_utf8_lossy(raw);
            text.parse()
                .map_err(|e| format!("the proxy's {what} {text:?}: {e}"))
        };
        let role = if worker { "worker" } else { "client" };
        let proxy = parse("contract address", p.contract)?;
        let said = parse(&format!("{role} contract address"), p.ours)?;
        if p.is_test != Some(true) {
            return Err(
                "a proxy on a fake-TON root must say it is a test network (is_test)".into(),
            );
        }
        let made = if worker {
            self.worker_address(owner, &proxy, p.public_key)
        } else {
            self.client_address(owner, &proxy, p.public_key)
        }
        .map_err(|e| e.to_string())?;
        if made != said {
            return Err(format!(
                "the proxy says our {role} contract is {said}, the root's code makes it {made}"
            ));
        }
        if let Some(root) = root {
            let proxy_owner = parse("owner address", p.owner)?;
            let expected = self
                .proxy_address(&proxy_owner, p.public_key, root)
                .map_err(|e| e.to_string())?;
            if expected != proxy {
                return Err(format!(
                    "the proxy says its contract is {proxy}, the root's code makes it {expected} \
                     (owner {proxy_owner}, root {root})"
                ));
            }
        }
        Ok((proxy, said))
    }
}

/// Who a proxy's signed payment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payee {
    /// A client: the charge its client contract accepts.
    Client,
    /// A worker: the payout its worker contract accepts.
    Worker,
}

/// The tokens a proxy's signed payment (`data`, a BOC: a [`crate::voucher`] in COCOON's
/// envelope, on a fake-TON root and on ours alike) promises, checked as the `payee`'s contract
/// and a reference client or worker (`check_signed_pay_message`) check it: exactly the envelope
/// and the signed part with the same op and query id, the payee's op, for `target` (our
/// contract), signed by the proxy's voucher `key`. The error says what did not hold.
pub fn check_payment(
    data: &[u8],
    payee: Payee,
    key: &[u8; 32],
    target: &Address,
) -> Result<u64, String> {
    let op = match payee {
        Payee::Client => op::CLIENT_CHARGE_SIGNED,
        Payee::Worker => op::WORKER_PAYOUT_SIGNED,
    };
    let signed = crate::cells::from_boc(data)
        .and_then(|outer| SignedVoucher::parse(&outer))
        .map_err(|e| format!("not a signed payment: {e}"))?;
    match signed.verify(key, op, target) {
        Ok(()) => Ok(signed.voucher.counter),
        Err(VoucherError::WrongTarget { got, .. }) => Err(format!(
            "the payment is for {got}, not for our contract {target}"
        )),
        Err(e) => Err(format!("signed payment refused: {e}")),
    }
}

/// Workchain 0 and the hash of the StateInit (no split depth, not special, code, data, no
/// libraries).
fn address(code: &Cell, data: Cell) -> Result<Address, ChainError> {
    crate::contracts::address_of(&tycho_types::models::StateInit {
        split_depth: None,
        special: None,
        code: Some(code.clone()),
        data: Some(data),
        libraries: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voucher::Voucher;
    use tycho_types::cell::CellBuilder;

    fn code(n: u8) -> Vec<u8> {
        let mut b = CellBuilder::new();
        b.store_u8(n).unwrap();
        crate::cells::to_boc(&b.build().unwrap())
    }

    #[test]
    fn every_input_moves_the_address_and_missing_code_is_named() {
        let fake = FakeTon {
            proxy_sc_code: code(1),
            worker_sc_code: code(2),
            client_sc_code: code(3),
            price_per_token: 2,
            worker_fee_per_token: 1,
            params_version: 1,
            ..FakeTon::default()
        };
        let c = ReferenceContracts::of_fake_ton(&fake).unwrap();
        let (a, b, root) = (
            Address::new([1; 32]),
            Address::new([2; 32]),
            Address::new([9; 32]),
        );
        let p = c.proxy_address(&a, &[5; 32], &root).unwrap();
        assert_ne!(p, c.proxy_address(&b, &[5; 32], &root).unwrap(), "owner");
        assert_ne!(p, c.proxy_address(&a, &[6; 32], &root).unwrap(), "key");
        assert_ne!(p, c.proxy_address(&a, &[5; 32], &b).unwrap(), "root");
        let w = c.worker_address(&a, &p, &[5; 32]).unwrap();
        let cl = c.client_address(&a, &p, &[5; 32]).unwrap();
        assert_ne!(w, cl, "different code");
        assert_ne!(
            cl,
            c.client_address(&b, &p, &[5; 32]).unwrap(),
            "client owner"
        );
        let pricier = ReferenceContracts::of_fake_ton(&FakeTon {
            price_per_token: 3,
            ..fake.clone()
        })
        .unwrap();
        assert_ne!(
            cl,
            pricier.client_address(&a, &p, &[5; 32]).unwrap(),
            "params"
        );
        let e = ReferenceContracts::of_fake_ton(&FakeTon {
            client_sc_code: vec![],
            ..fake
        })
        .unwrap_err();
        assert!(e.to_string().contains("client_sc_code"), "{e}");
    }

    #[test]
    fn a_signed_payment_checks_as_the_reference_checks_it_and_every_forgery_is_named() {
        let key = crate::keys::Keypair::generate();
        let (ours, other, excesses) = (
            Address::new([1; 32]),
            Address::new([2; 32]),
            Address::new([3; 32]),
        );
        let signed = |k: &crate::keys::Keypair, target: &Address| {
            let v = Voucher {
                op: op::WORKER_PAYOUT_SIGNED,
                query_id: 9,
                counter: 134,
                target: *target,
            };
            v.sign(k, excesses).unwrap().body().unwrap()
        };
        let boc =
            |k: &crate::keys::Keypair, target: &Address| crate::cells::to_boc(&signed(k, target));
        let pk = key.public_key();
        let good = boc(&key, &ours);
        assert_eq!(check_payment(&good, Payee::Worker, &pk, &ours), Ok(134));
        let refused = |b: &[u8], payee: Payee, needle: &str| {
            let e = check_payment(b, payee, &pk, &ours).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        refused(&good, Payee::Client, "expected");
        refused(
            &boc(&crate::keys::Keypair::generate(), &ours),
            Payee::Worker,
            "signature",
        );
        refused(&boc(&key, &other), Payee::Worker, "not for our contract");
        refused(b"garbage", Payee::Worker, "not a signed payment");
        // The envelope's query id must be the signed one's.
        let inner = signed(&key, &ours);
        let mut s = inner.as_slice().unwrap();
        let (op, _qid) = (s.load_u32().unwrap(), s.load_u64().unwrap());
        let mut b = CellBuilder::new();
        b.store_u32(op).unwrap();
        b.store_u64(10).unwrap();
        b.store_slice(s).unwrap();
        refused(
            &crate::cells::to_boc(&b.build().unwrap()),
            Payee::Worker,
            "query id",
        );
    }
}
