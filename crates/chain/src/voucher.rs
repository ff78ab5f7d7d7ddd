//! Proxy-signed vouchers: cumulative counters addressed to one contract, signed with Ed25519 over
//! the payload cell's hash, in COCOON's envelope (`op query_id send_excesses_to signature
//! ^payload`: what its proxy signs and its clients and workers check). Layout:
//! `contracts/SPEC.md` § Vouchers.

use tycho_types::cell::{Cell, CellBuilder};

use crate::address::Address;
use crate::cells::{load_address, store_address};
use crate::error::{ChainError, Result};
use crate::keys::{self, Keypair};
use crate::messages::op;

/// What a voucher says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voucher {
    /// The message op it authorizes (`op::CLIENT_CHARGE_SIGNED`, …).
    pub op: u32,
    /// Query id (echoed, not checked).
    pub query_id: u64,
    /// Cumulative tokens (client/worker vouchers); 0 for close.
    pub counter: u64,
    /// The contract this voucher is for.
    pub target: Address,
}

/// A voucher with the proxy's signature, and where the rest of the submitting message's value
/// goes (outside the signature: whoever submits it may put its own wallet there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedVoucher {
    /// The payload.
    pub voucher: Voucher,
    /// Ed25519 signature over the payload cell's hash.
    pub signature: [u8; 64],
    /// The envelope's `send_excesses_to`.
    pub send_excesses_to: Address,
}

/// Why a voucher is not acceptable (the contracts refuse the same ones, with exit codes 102–105, 113).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    /// Signature does not verify with the proxy key (exit 102).
    #[error("voucher signature does not verify with the proxy key")]
    BadSignature,
    /// Addressed to another contract (exit 103).
    #[error("voucher is addressed to {got}, not to {expected}")]
    WrongTarget {
        /// The contract it should name.
        expected: Address,
        /// The contract it names.
        got: Address,
    },
    /// Same counter as already applied (exit 104).
    #[error("voucher replays counter {0} already applied")]
    Replayed(u64),
    /// Counter below the applied one (exit 105).
    #[error("voucher goes backwards: {got} < {applied}")]
    Backwards {
        /// The voucher's counter.
        got: u64,
        /// Already applied.
        applied: u64,
    },
    /// Op differs from the message's (exit 113).
    #[error("voucher op {got:#x} is not the expected {expected:#x}")]
    WrongOp {
        /// The message's op.
        expected: u32,
        /// The voucher's op.
        got: u32,
    },
}

impl Voucher {
    /// The payload cell that is signed.
    pub fn payload(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(self.op)?;
        b.store_u64(self.query_id)?;
        b.store_u64(self.counter)?;
        store_address(&mut b, &self.target)?;
        Ok(b.build()?)
    }

    /// Signs with the proxy key; the rest of the submitting message's value is meant for
    /// `send_excesses_to`.
    pub fn sign(self, key: &Keypair, send_excesses_to: Address) -> Result<SignedVoucher> {
        let hash = self.payload()?.repr_hash().0;
        Ok(SignedVoucher {
            signature: key.sign(&hash),
            voucher: self,
            send_excesses_to,
        })
    }
}

impl SignedVoucher {
    /// The message body that submits it: `op query_id send_excesses_to signature ^payload`,
    /// the envelope's op and query id the payload's.
    pub fn body(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(self.voucher.op)?;
        b.store_u64(self.voucher.query_id)?;
        store_address(&mut b, &self.send_excesses_to)?;
        b.store_raw(&self.signature, 512)?;
        b.store_reference(self.voucher.payload()?)?;
        Ok(b.build()?)
    }

    /// The same voucher with the rest of the value meant for `send_excesses_to` (what a
    /// redeemer does before submitting: the signature does not cover it).
    pub fn redeemed_by(&self, send_excesses_to: Address) -> Self {
        SignedVoucher {
            send_excesses_to,
            ..self.clone()
        }
    }

    /// The body that redeems a voucher a proxy sent as a BOC (a client's charge or refund, a
    /// worker's payout), the rest of the value meant for `redeemer` — what a reference client
    /// or worker does (`repack_signed_pay_message`).
    pub fn redeem(boc: &[u8], redeemer: Address) -> Result<Cell> {
        Self::parse(&crate::cells::from_boc(boc)?)?
            .redeemed_by(redeemer)
            .body()
    }

    /// Parses a body built by [`SignedVoucher::body`] as COCOON's roles parse one: nothing
    /// after the signature but the payload, nothing after the payload's target, and the
    /// envelope's op and query id the payload's.
    pub fn parse(body: &Cell) -> Result<Self> {
        let mut s = body.as_slice()?;
        let op = s.load_u32()?;
        let qid = s.load_u64()?;
        let send_excesses_to = load_address(&mut s)?;
        let mut signature = [0u8; 64];
        s.load_raw(&mut signature, 512)?;
        let payload = s.load_reference_cloned()?;
        if s.size_bits() != 0 || s.size_refs() != 0 {
            return Err(ChainError::layout(
                "voucher",
                "data after the signature and payload",
            ));
        }
        let mut p = payload.as_slice()?;
        let voucher = Voucher {
            op: p.load_u32()?,
            query_id: p.load_u64()?,
            counter: p.load_u64()?,
            target: load_address(&mut p)?,
        };
        if p.size_bits() != 0 || p.size_refs() != 0 {
            return Err(ChainError::layout("voucher", "trailing data in payload"));
        }
        if (voucher.op, voucher.query_id) != (op, qid) {
            return Err(ChainError::layout(
                "voucher",
                "the signed part's op or query id differs from the envelope's",
            ));
        }
        Ok(SignedVoucher {
            voucher,
            signature,
            send_excesses_to,
        })
    }

    /// Checks what does not depend on history: the signature under the proxy key, the op, and
    /// the target contract. Holders of vouchers compare counters themselves.
    pub fn verify(
        &self,
        proxy_public_key: &[u8; 32],
        expected_op: u32,
        target: &Address,
    ) -> Result<(), VoucherError> {
        let hash = self
            .voucher
            .payload()
            .map_err(|_| VoucherError::BadSignature)?
            .repr_hash()
            .0;
        if !keys::verify(proxy_public_key, &hash, &self.signature) {
            return Err(VoucherError::BadSignature);
        }
        if self.voucher.op != expected_op {
            return Err(VoucherError::WrongOp {
                expected: expected_op,
                got: self.voucher.op,
            });
        }
        if &self.voucher.target != target {
            return Err(VoucherError::WrongTarget {
                expected: *target,
                got: self.voucher.target,
            });
        }
        Ok(())
    }

    /// Checks it as the target contract would: [`SignedVoucher::verify`], then a counter above
    /// `applied` (close vouchers carry no counter).
    pub fn check(
        &self,
        proxy_public_key: &[u8; 32],
        expected_op: u32,
        target: &Address,
        applied: u64,
    ) -> Result<(), VoucherError> {
        self.verify(proxy_public_key, expected_op, target)?;
        if matches!(
            expected_op,
            op::PROXY_CLOSE_REQUEST_SIGNED | op::PROXY_CLOSE_COMPLETE_SIGNED
        ) {
            return Ok(());
        }
        let got = self.voucher.counter;
        if got == applied {
            return Err(VoucherError::Replayed(got));
        }
        if got < applied {
            return Err(VoucherError::Backwards { got, applied });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voucher(counter: u64, target: Address) -> Voucher {
        Voucher {
            op: op::CLIENT_CHARGE_SIGNED,
            query_id: 7,
            counter,
            target,
        }
    }

    #[test]
    fn each_bad_voucher_has_its_own_refusal() {
        let key = Keypair::from_seed([9; 32]);
        let other = Keypair::from_seed([8; 32]);
        let me = Address::new([1; 32]);
        let pk = key.public_key();
        let good = voucher(10, me).sign(&key, Address::new([4; 32])).unwrap();
        assert_eq!(good.check(&pk, op::CLIENT_CHARGE_SIGNED, &me, 9), Ok(()));
        assert_eq!(
            good.check(&pk, op::CLIENT_CHARGE_SIGNED, &me, 10),
            Err(VoucherError::Replayed(10))
        );
        assert_eq!(
            good.check(&pk, op::CLIENT_CHARGE_SIGNED, &me, 11),
            Err(VoucherError::Backwards {
                got: 10,
                applied: 11
            })
        );
        assert_eq!(
            good.check(&pk, op::CLIENT_CHARGE_SIGNED, &Address::new([2; 32]), 0),
            Err(VoucherError::WrongTarget {
                expected: Address::new([2; 32]),
                got: me
            })
        );
        assert_eq!(
            good.check(&pk, op::WORKER_PAYOUT_SIGNED, &me, 0),
            Err(VoucherError::WrongOp {
                expected: op::WORKER_PAYOUT_SIGNED,
                got: op::CLIENT_CHARGE_SIGNED
            })
        );
        let forged = voucher(10, me).sign(&other, Address::new([4; 32])).unwrap();
        assert_eq!(
            forged.check(&pk, op::CLIENT_CHARGE_SIGNED, &me, 0),
            Err(VoucherError::BadSignature)
        );
        // A signature moved onto a different counter does not verify.
        let mut tampered = good.clone();
        tampered.voucher.counter = 1_000_000;
        assert_eq!(
            tampered.check(&pk, op::CLIENT_CHARGE_SIGNED, &me, 0),
            Err(VoucherError::BadSignature)
        );
    }

    #[test]
    fn bodies_parse_back() {
        let key = Keypair::from_seed([9; 32]);
        let v = voucher(3, Address::new([1; 32]));
        let signed = v.sign(&key, Address::new([4; 32])).unwrap();
        assert_eq!(
            SignedVoucher::parse(&signed.body().unwrap()).unwrap(),
            signed
        );
        // the redeemer's own wallet in the envelope: the signature still holds
        let mine = signed.redeemed_by(Address::new([6; 32]));
        let back = SignedVoucher::parse(&mine.body().unwrap()).unwrap();
        assert_eq!(back.send_excesses_to, Address::new([6; 32]));
        let pk = key.public_key();
        let target = Address::new([1; 32]);
        assert_eq!(
            back.check(&pk, op::CLIENT_CHARGE_SIGNED, &target, 0),
            Ok(())
        );
    }

    #[test]
    fn an_envelope_that_is_not_the_signed_part_is_refused() {
        let key = Keypair::from_seed([9; 32]);
        let signed = voucher(3, Address::new([1; 32]))
            .sign(&key, Address::new([4; 32]))
            .unwrap();
        let body = signed.body().unwrap();
        let mut s = body.as_slice().unwrap();
        let op = s.load_u32().unwrap();
        s.load_u64().unwrap();
        let mut other_qid = CellBuilder::new();
        other_qid.store_u32(op).unwrap();
        other_qid.store_u64(8).unwrap();
        other_qid.store_slice(s).unwrap();
        let e = SignedVoucher::parse(&other_qid.build().unwrap()).unwrap_err();
        assert!(e.to_string().contains("query id"), "{e}");
        let mut extra = CellBuilder::new();
        extra.store_slice(body.as_slice().unwrap()).unwrap();
        extra.store_bit_one().unwrap();
        let e = SignedVoucher::parse(&extra.build().unwrap()).unwrap_err();
        assert!(e.to_string().contains("after the signature"), "{e}");
    }
}
