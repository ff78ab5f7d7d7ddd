//! Bodies of every message the Cocoon contracts accept (`contracts/SPEC.md`). Each function
//! returns the body cell; send it with a wallet ([`crate::wallet::OutMessage`]) or straight
//! into the local chain.

use tycho_types::cell::{Cell, CellBuilder};

use crate::address::Address;
use crate::cells::{snake_string, store_address, store_coins, store_u256};
use crate::contracts::{ContractCodes, Params, MAX_ENDPOINT_LEN};
use crate::error::{ChainError, Result};

/// Op codes (COCOON's where it has the operation).
pub mod op {
    /// Excess value returned.
    pub const EXCESSES: u32 = 0x2565_934c;
    /// Root: allow a worker image hash.
    pub const ROOT_ADD_WORKER_TYPE: u32 = 0xe34b_1c60;
    /// Root: disallow a worker image hash.
    pub const ROOT_DEL_WORKER_TYPE: u32 = 0x8d94_a79a;
    /// Root: allow a proxy image hash.
    pub const ROOT_ADD_PROXY_TYPE: u32 = 0x7186_0e80;
    /// Root: disallow a proxy image hash.
    pub const ROOT_DEL_PROXY_TYPE: u32 = 0x3c41_d0b2;
    /// Root: allow a model hash with its type name (ours).
    pub const ROOT_ADD_MODEL_TYPE: u32 = 0x5d1b_2a31;
    /// Root: disallow a model hash (ours).
    pub const ROOT_DEL_MODEL_TYPE: u32 = 0x6e2c_3b42;
    /// Root: register a proxy.
    pub const ROOT_REGISTER_PROXY: u32 = 0x927c_7cb5;
    /// Root: unregister a proxy.
    pub const ROOT_UNREGISTER_PROXY: u32 = 0x6d49_eaf2;
    /// Root: change a proxy's address or endpoint.
    pub const ROOT_UPDATE_PROXY: u32 = 0x9c79_24ba;
    /// Root: change prices and rules.
    pub const ROOT_CHANGE_PRICE: u32 = 0xc52e_d8d4;
    /// Root: change proxy/client/worker code.
    pub const ROOT_UPGRADE_CONTRACTS: u32 = 0xa237_0f61;
    /// Root: change owner (ours).
    pub const ROOT_CHANGE_OWNER: u32 = 0x7f4a_2c15;
    /// Proxy: add to its stake.
    pub const PROXY_INCREASE_STAKE: u32 = 0x9713_f187;
    /// Proxy: its ledger's seqno and hash, inside a `do_not_process` message (COCOON's
    /// `save_state`, read back from the proxy contract's transactions).
    pub const PROXY_SAVE_STATE: u32 = 0x5310_9c0f;
    /// Any contract: a message to take without reading it (COCOON's).
    pub const DO_NOT_PROCESS: u32 = 0x9a12_47c0;
    /// COCOON's `payout` (the runners' `Opcodes.hpp`): a notice a machine wallet keeps from
    /// anyone (our contracts pay with `excesses`).
    pub const PAYOUT: u32 = 0xc59a_7cd3;
    /// Owner → its machine wallet: send this message ([`crate::cocoon_wallet`]).
    pub const OWNER_WALLET_SEND_MESSAGE: u32 = 0x9c69_f376;
    /// Client contract → proxy: COCOON's envelope of every message (owner, state, payload).
    pub const CLIENT_PROXY_REQUEST: u32 = 0x6544_8ff4;
    /// Payload: funds arrived.
    pub const CLIENT_PROXY_TOP_UP: u32 = 0x5cfc_6b87;
    /// Payload: the long authorization's nonce.
    pub const CLIENT_PROXY_REGISTER: u32 = 0xa35c_b580;
    /// Payload: refund granted.
    pub const CLIENT_PROXY_REFUND_GRANTED: u32 = 0xc68e_bc7b;
    /// Payload: refund after the close delay.
    pub const CLIENT_PROXY_REFUND_FORCE: u32 = 0xf4c3_54c9;
    /// Worker contract → proxy: pay the worker.
    pub const WORKER_PROXY_PAYOUT_REQUEST: u32 = 0x08e7_d036;
    /// Anyone → proxy: pay the earnings to the owner.
    pub const PROXY_PAYOUT_REQUEST: u32 = 0x7610_e6eb;
    /// Proxy owner → proxy: start the close; after the delay, complete it.
    pub const PROXY_OWNER_CLOSE: u32 = 0xb51d_5a01;
    /// Proxy: start closing (signed).
    pub const PROXY_CLOSE_REQUEST_SIGNED: u32 = 0x636a_4391;
    /// Proxy: finish closing (signed).
    pub const PROXY_CLOSE_COMPLETE_SIGNED: u32 = 0xe511_abc7;
    /// Client: top up.
    pub const CLIENT_TOP_UP: u32 = 0xf172_e6c2;
    /// Client owner: top up and reopen a closing contract.
    pub const CLIENT_TOP_UP_REOPEN: u32 = 0x2911_1ceb;
    /// Client owner: raise the stake.
    pub const CLIENT_INCREASE_STAKE: u32 = 0x6a1f_6a60;
    /// Client owner: withdraw above the stake.
    pub const CLIENT_WITHDRAW: u32 = 0xda06_8e78;
    /// Client owner: change the authorization secret hash.
    pub const CLIENT_CHANGE_SECRET_HASH: u32 = 0xa935_7034;
    /// Client owner: top up and change the secret hash in one message.
    pub const CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP: u32 = 0x8473_b408;
    /// Client owner: long authorization, the nonce a proxy gave (COCOON's `owner_client_register`).
    pub const CLIENT_REGISTER: u32 = 0xc45f_9f3b;
    /// Client owner: ask for a refund (start closing).
    pub const CLIENT_REQUEST_REFUND: u32 = 0xfafa_6cc1;
    /// Client: apply a charge voucher (signed).
    pub const CLIENT_CHARGE_SIGNED: u32 = 0xbb63_ff93;
    /// Client: apply the final charge and refund (signed).
    pub const CLIENT_GRANT_REFUND_SIGNED: u32 = 0xefd7_11e1;
    /// Worker: apply a payout voucher (signed).
    pub const WORKER_PAYOUT_SIGNED: u32 = 0xa040_ad28;
    /// Worker: apply the last payout voucher (signed).
    pub const WORKER_LAST_PAYOUT_SIGNED: u32 = 0xf5f2_6a36;
}

/// Exit codes the contracts throw (`contracts/SPEC.md` § Exit codes).
pub mod exit {
    /// Sender is not the owner / expected contract.
    pub const NOT_OWNER: i32 = 101;
    /// Voucher signature invalid.
    pub const BAD_SIGNATURE: i32 = 102;
    /// Voucher for another contract.
    pub const WRONG_TARGET: i32 = 103;
    /// Voucher counter already applied.
    pub const REPLAYED: i32 = 104;
    /// Voucher counter below the applied one.
    pub const BACKWARDS: i32 = 105;
    /// Not enough value attached.
    pub const LOW_VALUE: i32 = 106;
    /// Would leave the balance below the stake.
    pub const BELOW_STAKE: i32 = 107;
    /// Stake below the minimum or below the current one.
    pub const STAKE_TOO_LOW: i32 = 108;
    /// Not allowed in this state.
    pub const WRONG_STATE: i32 = 109;
    /// Close delay not over.
    pub const TOO_EARLY: i32 = 110;
    /// Unknown op.
    pub const UNKNOWN_OP: i32 = 111;
    /// Contract cannot pay this.
    pub const NO_FUNDS: i32 = 112;
    /// Voucher op does not match.
    pub const WRONG_OP: i32 = 113;

    /// A short name for an exit code, for messages to people.
    pub fn name(code: i32) -> &'static str {
        match code {
            0 | 1 => "ok",
            NOT_OWNER => "sender not allowed",
            BAD_SIGNATURE => "bad voucher signature",
            WRONG_TARGET => "voucher for another contract",
            REPLAYED => "voucher replayed",
            BACKWARDS => "voucher goes backwards",
            LOW_VALUE => "not enough value attached",
            BELOW_STAKE => "would leave the balance below the stake",
            STAKE_TOO_LOW => "stake too low",
            WRONG_STATE => "not allowed in the contract's current state",
            TOO_EARLY => "close delay has not passed",
            UNKNOWN_OP => "unknown operation",
            NO_FUNDS => "contract cannot pay this",
            WRONG_OP => "voucher for another operation",
            _ => "TVM error",
        }
    }
}

/// Minimum value an operation that sends further messages must carry beyond the amount it moves.
pub const MIN_FEE: u128 = 50_000_000;

fn head(op: u32, query_id: u64) -> Result<CellBuilder> {
    let mut b = CellBuilder::new();
    b.store_u32(op)?;
    b.store_u64(query_id)?;
    Ok(b)
}

fn with_hash(op: u32, query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
    let mut b = head(op, query_id)?;
    store_u256(&mut b, hash)?;
    Ok(b.build()?)
}

/// `op query_id send_excesses_to`: COCOON's body of every owner request that carries nothing
/// else.
fn head_and_excesses(op: u32, query_id: u64, send_excesses_to: &Address) -> Result<Cell> {
    let mut b = head(op, query_id)?;
    store_address(&mut b, send_excesses_to)?;
    Ok(b.build()?)
}

/// A text comment body (op 0 followed by the UTF-8 text as a snake string), as wallets show it.
pub fn text_comment(text: &str) -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_u32(0)?;
    let tail = snake_string(text.as_bytes())?;
    // The first 123 bytes fit next to the op; the rest continues in references.
    b.store_slice(tail.as_slice()?)?;
    Ok(b.build()?)
}

/// Root admin operations.
pub mod root {
    use super::*;

    /// Allow a worker image hash.
    pub fn add_worker_type(query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
        with_hash(op::ROOT_ADD_WORKER_TYPE, query_id, hash)
    }
    /// Disallow a worker image hash.
    pub fn del_worker_type(query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
        with_hash(op::ROOT_DEL_WORKER_TYPE, query_id, hash)
    }
    /// Allow a proxy image hash.
    pub fn add_proxy_type(query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
        with_hash(op::ROOT_ADD_PROXY_TYPE, query_id, hash)
    }
    /// Disallow a proxy image hash.
    pub fn del_proxy_type(query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
        with_hash(op::ROOT_DEL_PROXY_TYPE, query_id, hash)
    }
    /// Allow a model hash with its type name.
    pub fn add_model_type(query_id: u64, hash: &[u8; 32], name: &str) -> Result<Cell> {
        let mut b = head(op::ROOT_ADD_MODEL_TYPE, query_id)?;
        store_u256(&mut b, hash)?;
        b.store_reference(snake_string(name.as_bytes())?)?;
        Ok(b.build()?)
    }
    /// Disallow a model hash.
    pub fn del_model_type(query_id: u64, hash: &[u8; 32]) -> Result<Cell> {
        with_hash(op::ROOT_DEL_MODEL_TYPE, query_id, hash)
    }
    /// The endpoint as a registry entry takes it: one flat string the root accepts (at most
    /// [`MAX_ENDPOINT_LEN`] bytes); longer is an error naming it, not a refused message.
    fn endpoint_cell(endpoint: &str) -> Result<Cell> {
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(ChainError::layout(
                "proxy endpoint",
                format!(
                    "{endpoint:?} is {} bytes; a registry entry holds at most {MAX_ENDPOINT_LEN}",
                    endpoint.len()
                ),
            ));
        }
        snake_string(endpoint.as_bytes())
    }
    /// Register a proxy contract with its endpoint (COCOON's form: `HOST:PORT` for both, or
    /// where workers connect, a space, where clients do).
    pub fn register_proxy(query_id: u64, proxy: &Address, endpoint: &str) -> Result<Cell> {
        let mut b = head(op::ROOT_REGISTER_PROXY, query_id)?;
        store_address(&mut b, proxy)?;
        b.store_reference(endpoint_cell(endpoint)?)?;
        Ok(b.build()?)
    }
    /// Unregister a proxy by sequence number.
    pub fn unregister_proxy(query_id: u64, seq: u32) -> Result<Cell> {
        let mut b = head(op::ROOT_UNREGISTER_PROXY, query_id)?;
        b.store_u32(seq)?;
        Ok(b.build()?)
    }
    /// Change a registered proxy.
    pub fn update_proxy(query_id: u64, seq: u32, proxy: &Address, endpoint: &str) -> Result<Cell> {
        let mut b = head(op::ROOT_UPDATE_PROXY, query_id)?;
        b.store_u32(seq)?;
        store_address(&mut b, proxy)?;
        b.store_reference(endpoint_cell(endpoint)?)?;
        Ok(b.build()?)
    }
    /// Replace the prices and rules.
    pub fn change_price(query_id: u64, params: &Params) -> Result<Cell> {
        let mut b = head(op::ROOT_CHANGE_PRICE, query_id)?;
        b.store_reference(params.to_cell()?)?;
        Ok(b.build()?)
    }
    /// Replace the proxy/client/worker code.
    pub fn upgrade_contracts(query_id: u64, codes: &ContractCodes) -> Result<Cell> {
        let mut b = head(op::ROOT_UPGRADE_CONTRACTS, query_id)?;
        b.store_reference(crate::contracts::codes_cell(&[
            &codes.proxy,
            &codes.client,
            &codes.worker,
        ])?)?;
        Ok(b.build()?)
    }
    /// Hand the registry to another owner.
    pub fn change_owner(query_id: u64, new_owner: &Address) -> Result<Cell> {
        let mut b = head(op::ROOT_CHANGE_OWNER, query_id)?;
        store_address(&mut b, new_owner)?;
        Ok(b.build()?)
    }
}

/// Proxy contract operations that are not vouchers.
pub mod proxy {
    use super::*;

    /// Add `amount` to the proxy's stake (attach amount + `MIN_FEE`).
    pub fn increase_stake(query_id: u64, amount: u128) -> Result<Cell> {
        let mut b = head(op::PROXY_INCREASE_STAKE, query_id)?;
        store_coins(&mut b, amount)?;
        Ok(b.build()?)
    }
    /// The owner's wallet to its proxy contract: COCOON's `save_state`,
    /// `do_not_process query_id proxy_save_state seqno:uint32 hash:uint256`
    /// (`ProxyContract::create_save_state_message`). The contract takes it without reading it
    /// (COCOON's proxy sends it with 1 nanoton, too little to run any code); it is read back
    /// from the contract's transactions ([`saved_state`]).
    pub fn save_state(query_id: u64, seqno: u32, hash: &[u8; 32]) -> Result<Cell> {
        let mut b = head(op::DO_NOT_PROCESS, query_id)?;
        b.store_u32(op::PROXY_SAVE_STATE)?;
        b.store_u32(seqno)?;
        store_u256(&mut b, hash)?;
        Ok(b.build()?)
    }
    /// The seqno and hash of a [`save_state`] body; None for any other body.
    pub fn saved_state(body: &Cell) -> Option<(u32, [u8; 32])> {
        let mut s = body.as_slice().ok()?;
        if s.load_u32().ok()? != op::DO_NOT_PROCESS {
            return None;
        }
        s.load_u64().ok()?;
        if s.load_u32().ok()? != op::PROXY_SAVE_STATE {
            return None;
        }
        let seqno = s.load_u32().ok()?;
        let hash = crate::cells::load_u256(&mut s).ok()?;
        Some((seqno, hash))
    }
    /// Anyone: pay the proxy's earnings to its owner, the rest of the value to
    /// `send_excesses_to` (COCOON's body, `ProxyContract::create_withdraw_message`; COCOON's
    /// proxy sends it from its machine wallet).
    pub fn payout_request(query_id: u64, send_excesses_to: &Address) -> Result<Cell> {
        head_and_excesses(op::PROXY_PAYOUT_REQUEST, query_id, send_excesses_to)
    }
    /// Owner: start the close (the rest of the value to `send_excesses_to`); once the close
    /// delay is over, the same body completes it and pays the owner the stake and the earnings.
    /// COCOON's body as its runner writes it (`ProxyContract::create_start_close_message`): the
    /// op and the address, no query id.
    pub fn owner_close(send_excesses_to: &Address) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(op::PROXY_OWNER_CLOSE)?;
        store_address(&mut b, send_excesses_to)?;
        Ok(b.build()?)
    }
}

/// Client contract operations that are not vouchers.
pub mod client {
    use super::*;

    fn amount_and_excesses(
        op: u32,
        query_id: u64,
        amount: u128,
        excesses_to: &Address,
    ) -> Result<Cell> {
        let mut b = head(op, query_id)?;
        store_coins(&mut b, amount)?;
        store_address(&mut b, excesses_to)?;
        Ok(b.build()?)
    }

    /// Top up by `amount` (attach amount + `MIN_FEE`).
    pub fn top_up(query_id: u64, amount: u128, excesses_to: &Address) -> Result<Cell> {
        amount_and_excesses(op::CLIENT_TOP_UP, query_id, amount, excesses_to)
    }
    /// Owner: top up a closing contract and reopen it.
    pub fn top_up_reopen(query_id: u64, amount: u128, excesses_to: &Address) -> Result<Cell> {
        amount_and_excesses(op::CLIENT_TOP_UP_REOPEN, query_id, amount, excesses_to)
    }
    /// Owner: raise the stake to `new_stake` (COCOON's body: the rest of the value goes back
    /// to `send_excesses_to`).
    pub fn increase_stake(
        query_id: u64,
        new_stake: u128,
        send_excesses_to: &Address,
    ) -> Result<Cell> {
        amount_and_excesses(
            op::CLIENT_INCREASE_STAKE,
            query_id,
            new_stake,
            send_excesses_to,
        )
    }
    /// Owner: withdraw everything above the stake to `send_excesses_to` (COCOON's body).
    pub fn withdraw(query_id: u64, send_excesses_to: &Address) -> Result<Cell> {
        head_and_excesses(op::CLIENT_WITHDRAW, query_id, send_excesses_to)
    }
    /// Owner: set the authorization secret hash (COCOON's body: the rest of the value goes
    /// back to `send_excesses_to`).
    pub fn change_secret_hash(
        query_id: u64,
        hash: &[u8; 32],
        send_excesses_to: &Address,
    ) -> Result<Cell> {
        let mut b = head(op::CLIENT_CHANGE_SECRET_HASH, query_id)?;
        store_u256(&mut b, hash)?;
        store_address(&mut b, send_excesses_to)?;
        Ok(b.build()?)
    }
    /// Owner: top up by `amount` (attach amount + `MIN_FEE`) and set the authorization secret
    /// hash in one message (COCOON's body); deploys the contract when sent with its StateInit.
    pub fn change_secret_hash_and_top_up(
        query_id: u64,
        amount: u128,
        hash: &[u8; 32],
        send_excesses_to: &Address,
    ) -> Result<Cell> {
        let mut b = head(op::CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP, query_id)?;
        store_coins(&mut b, amount)?;
        store_u256(&mut b, hash)?;
        store_address(&mut b, send_excesses_to)?;
        Ok(b.build()?)
    }
    /// Owner: long authorization with a proxy, proving control of the contract by sending the
    /// `nonce` the proxy gave (COCOON's body: the rest of the value goes back to
    /// `send_excesses_to`).
    pub fn register(query_id: u64, nonce: u64, send_excesses_to: &Address) -> Result<Cell> {
        let mut b = head(op::CLIENT_REGISTER, query_id)?;
        b.store_u64(nonce)?;
        store_address(&mut b, send_excesses_to)?;
        Ok(b.build()?)
    }
    /// The nonce of a [`register`] body; None for any other body.
    pub fn registered_nonce(body: &Cell) -> Option<u64> {
        let mut s = body.as_slice().ok()?;
        if s.load_u32().ok()? != op::CLIENT_REGISTER {
            return None;
        }
        s.load_u64().ok()?;
        s.load_u64().ok()
    }
    /// Owner: ask for a refund (COCOON's body). On an open contract: start closing, everything
    /// above the stake to `send_excesses_to`. On a closing one whose close delay is over: close,
    /// the rest to `send_excesses_to`.
    pub fn request_refund(query_id: u64, send_excesses_to: &Address) -> Result<Cell> {
        head_and_excesses(op::CLIENT_REQUEST_REFUND, query_id, send_excesses_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_code_is_distinct() {
        let all = [
            op::EXCESSES,
            op::ROOT_ADD_WORKER_TYPE,
            op::ROOT_DEL_WORKER_TYPE,
            op::ROOT_ADD_PROXY_TYPE,
            op::ROOT_DEL_PROXY_TYPE,
            op::ROOT_ADD_MODEL_TYPE,
            op::ROOT_DEL_MODEL_TYPE,
            op::ROOT_REGISTER_PROXY,
            op::ROOT_UNREGISTER_PROXY,
            op::ROOT_UPDATE_PROXY,
            op::ROOT_CHANGE_PRICE,
            op::ROOT_UPGRADE_CONTRACTS,
            op::ROOT_CHANGE_OWNER,
            op::PROXY_INCREASE_STAKE,
            op::PROXY_SAVE_STATE,
            op::DO_NOT_PROCESS,
            op::PAYOUT,
            op::OWNER_WALLET_SEND_MESSAGE,
            op::CLIENT_PROXY_TOP_UP,
            op::CLIENT_PROXY_REGISTER,
            op::CLIENT_PROXY_REQUEST,
            op::CLIENT_PROXY_REFUND_GRANTED,
            op::CLIENT_PROXY_REFUND_FORCE,
            op::WORKER_PROXY_PAYOUT_REQUEST,
            op::PROXY_PAYOUT_REQUEST,
            op::PROXY_OWNER_CLOSE,
            op::PROXY_CLOSE_REQUEST_SIGNED,
            op::PROXY_CLOSE_COMPLETE_SIGNED,
            op::CLIENT_TOP_UP,
            op::CLIENT_TOP_UP_REOPEN,
            op::CLIENT_INCREASE_STAKE,
            op::CLIENT_WITHDRAW,
            op::CLIENT_CHANGE_SECRET_HASH,
            op::CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP,
            op::CLIENT_REGISTER,
            op::CLIENT_REQUEST_REFUND,
            op::CLIENT_CHARGE_SIGNED,
            op::CLIENT_GRANT_REFUND_SIGNED,
            op::WORKER_PAYOUT_SIGNED,
            op::WORKER_LAST_PAYOUT_SIGNED,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }
}
