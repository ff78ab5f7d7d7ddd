// Client contract: top-ups, stake, withdrawals, charges, refunds and every close path, with the
// money checked in the client's account and in the proxy contract that holds it, and every
// message to the proxy contract checked as COCOON's `client_proxy_request` with the new state.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { beginCell } from '@ton/core';
import {
    ADDR, ERR, KEYS, MIN_FEE, NOW, OP, PARAMS, balanceOf, bigKey, body, rootParamsCell,
    clientData_, deployClient, expectExcess, expectExit, opOf, outMessages, parseClientRequest, send, setup,
    signedBody, storageFee, txOn, exitCode,
} from '../lib/cocoon.mjs';

const STAKE = 2_000_000_000n;
const DEPOSIT = 3_000_000_000n;
const PRICE = PARAMS.pricePerToken;

describe('client', () => {
    let net;
    beforeEach(async () => {
        net = await setup({ proxyStake: STAKE });
    });
    const client = () => net.client.address;
    const proxy = () => net.proxy.address;
    const toClient = (from, b, value = MIN_FEE) => send(net, { from, to: client(), value, body: b });
    const charge = (counter, opts = {}) => signedBody({ op: OP.ext_client_charge_signed, counter, target: net.client.address, ...opts });
    const grant = (counter, opts = {}) => signedBody({ op: OP.ext_client_grant_refund_signed, counter, target: net.client.address, ...opts });

    /**
     * The `client_proxy_request` the client contract sent in this result, as COCOON's proxy reads
     * it: the owner and exactly the state now stored; with its value and payload op.
     */
    async function request(res) {
        const m = outMessages(txOn(res, client())).find((o) => o.to.equals(proxy()));
        assert.ok(m, 'the client contract sent nothing to the proxy contract');
        assert.equal(m.bounce, false);
        const r = parseClientRequest(m.body);
        assert.equal(r.op, OP.client_proxy_request);
        assert.ok(r.owner.equals(ADDR.clientOwner));
        const d = await clientData_(net);
        assert.deepEqual(r.state, { state: d.state, balance: d.balance, stake: d.stake, tokensUsed: d.tokensUsed, secretHash: d.secretHash });
        return { queryId: r.queryId, value: m.value, payloadOp: r.payload?.op ?? null, rest: r.payload?.rest };
    }

    /** A state update: 1 nanoton, no payload (or the given one), the rest back as excesses. */
    async function notified(res, payloadOp = null) {
        const r = await request(res);
        assert.equal(r.value, 1n);
        assert.equal(r.payloadOp, payloadOp);
        return r;
    }

    /** The message the proxy sent to `to` in this result (refunds and excesses). */
    function paidTo(res, to) {
        const tx = txOn(res, proxy(), res.transactions.filter((t) => t.inMessage?.info.dest?.equals?.(proxy())).length - 1);
        const m = outMessages(tx).find((o) => o.to.equals(to));
        assert.ok(m, 'the proxy sent nothing to ' + to);
        assert.equal(opOf(m.body).op, OP.excesses);
        return m;
    }

    it('keeps its data as COCOON\'s client runner reads it: state, balance, stake, tokens, unlock, secret hash, ^consts, ^params', async () => {
        expectExit(await send(net, {
            from: ADDR.payer, to: client(), value: DEPOSIT + MIN_FEE,
            body: body.topUp(1, DEPOSIT, ADDR.payer), stateInit: net.client.init,
        }), client(), 0);
        const s = (await net.blockchain.getContract(client())).accountState.state.data.beginParse();
        assert.equal(s.loadUint(2), 0);
        assert.equal(s.loadCoins(), DEPOSIT);
        assert.equal(s.loadCoins(), PARAMS.minClientStake);
        assert.equal(s.loadUintBig(64), 0n);
        assert.equal(s.loadUint(32), 0);
        assert.equal(s.loadUintBig(256), 0n);
        const c = s.loadRef().beginParse();
        assert.ok(c.loadAddress().equals(ADDR.clientOwner));
        assert.ok(c.loadAddress().equals(proxy()));
        assert.equal(c.loadUintBig(256), bigKey(KEYS.proxy.publicKey));
        c.endParse();
        // COCOON's params cell without code (its `serialize_client_params_cell`)
        assert.ok(s.loadRef().equals(rootParamsCell({ codes: {} })));
        s.endParse();
    });

    describe('ext_client_top_up', () => {
        it('deploys the contract, credits the amount and moves exactly it into the proxy; excesses to send_excesses_to', async () => {
            const res = await send(net, {
                from: ADDR.payer, to: client(), value: DEPOSIT + MIN_FEE + 7n,
                body: body.topUp(11, DEPOSIT, ADDR.stranger), stateInit: net.client.init,
            });
            expectExit(res, client(), 0);
            const ptx = expectExit(res, proxy(), 0);
            expectExcess(ptx, ADDR.stranger, 11);
            const d = await clientData_(net);
            assert.equal(d.state, 0);
            assert.equal(d.balance, DEPOSIT);
            // COCOON's initial data: the stake starts at the minimum client stake
            assert.equal(d.stake, PARAMS.minClientStake);
            assert.ok(d.owner.equals(ADDR.clientOwner));
            assert.ok(d.proxy.equals(proxy()));
            assert.equal(d.publicKey, bigKey(KEYS.proxy.publicKey));
            assert.equal(d.pricePerToken, PRICE);
            assert.equal(d.clientDelay, PARAMS.clientDelayBeforeClose);
            assert.equal(d.minClientStake, PARAMS.minClientStake);
            const r = await request(res);
            assert.equal(r.payloadOp, OP.client_proxy_top_up);
            assert.equal(r.queryId, 11n);
            assert.equal(r.rest.loadCoins(), DEPOSIT);
            assert.equal(await balanceOf(net, proxy()), STAKE + DEPOSIT);
            // the client contract keeps nothing of the value
            assert.equal(await balanceOf(net, client()), 0n);
        });

        it('takes a zero amount and exactly amount + MIN_FEE; refuses one nanoton less (106)', async () => {
            await deployClient(net, 0n);
            assert.equal((await clientData_(net)).balance, 0n);
            expectExit(await toClient(ADDR.payer, body.topUp(1, 5n, ADDR.payer), 5n + MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            expectExit(await toClient(ADDR.payer, body.topUp(1, 5n, ADDR.payer), 5n + MIN_FEE), client(), 0);
            assert.equal((await clientData_(net)).balance, 5n);
            assert.equal(await balanceOf(net, proxy()), STAKE + 5n);
        });

        it('is refused while closing (109)', async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(1)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.topUp(2, 1n, ADDR.clientOwner), 1n + MIN_FEE), client(), ERR.WRONG_STATE);
        });
    });

    describe('owner_client_change_secret_hash_and_top_up', () => {
        it('tops up and sets the hash in one message, also as the deploying one; keeps exactly the amount', async () => {
            const amount = 2_000_000_000n;
            const res = await send(net, {
                from: ADDR.clientOwner, to: client(), value: amount + MIN_FEE,
                body: body.changeSecretHashAndTopUp(3, amount, 0xfeedn, ADDR.payer), stateInit: net.client.init,
            });
            expectExit(res, client(), 0);
            const d = await clientData_(net);
            assert.equal(d.balance, amount);
            assert.equal(d.secretHash, 0xfeedn);
            assert.equal((await request(res)).payloadOp, OP.client_proxy_top_up);
            assert.equal(await balanceOf(net, proxy()), STAKE + amount);
            expectExcess(expectExit(res, proxy(), 0), ADDR.payer, 3);
        });

        it('refuses anyone but the owner (101), one nanoton short of amount + MIN_FEE (106), a closing contract (109)', async () => {
            await deployClient(net, DEPOSIT);
            const call = (from, value, amount = 1n) => toClient(from, body.changeSecretHashAndTopUp(1, amount, 7n), value);
            expectExit(await call(ADDR.stranger, 1n + MIN_FEE), client(), ERR.NOT_OWNER);
            expectExit(await call(ADDR.clientOwner, 1n + MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            expectExit(await call(ADDR.clientOwner, 1n + MIN_FEE), client(), ERR.WRONG_STATE);
            const d = await clientData_(net);
            assert.notEqual(d.secretHash, 7n);
        });
    });

    describe('owner_client_top_up_reopen', () => {
        beforeEach(async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.increaseClientStake(1, PARAMS.minClientStake)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
        });

        it('reopens a closing contract and tops it up', async () => {
            assert.equal((await clientData_(net)).state, 1);
            const amount = 1_000_000_000n;
            const res = await toClient(ADDR.clientOwner, body.topUpReopen(3, amount, ADDR.clientOwner), amount + MIN_FEE);
            expectExit(res, client(), 0);
            const d = await clientData_(net);
            assert.equal(d.state, 0);
            assert.equal(d.unlockTs, 0);
            assert.equal(d.balance, PARAMS.minClientStake + amount);
            assert.equal((await request(res)).payloadOp, OP.client_proxy_top_up);
        });

        it('refuses anyone but the owner (101), a short value (106), a closed contract (109)', async () => {
            expectExit(await toClient(ADDR.stranger, body.topUpReopen(3, 1n, ADDR.stranger), 1n + MIN_FEE), client(), ERR.NOT_OWNER);
            expectExit(await toClient(ADDR.clientOwner, body.topUpReopen(3, 1n, ADDR.clientOwner), MIN_FEE), client(), ERR.LOW_VALUE);
            net.blockchain.now = NOW + PARAMS.clientDelayBeforeClose;
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(4)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.topUpReopen(5, 1n, ADDR.clientOwner), 1n + MIN_FEE), client(), ERR.WRONG_STATE);
        });
    });

    describe('owner_client_increase_stake', () => {
        beforeEach(async () => {
            await deployClient(net, DEPOSIT);
        });
        const stake = (v, from = ADDR.clientOwner) => toClient(from, body.increaseClientStake(1, v));

        it('takes the minimum stake and up to the whole balance', async () => {
            expectExit(await stake(PARAMS.minClientStake), client(), 0);
            assert.equal((await clientData_(net)).stake, PARAMS.minClientStake);
            const proxyBefore = await balanceOf(net, proxy());
            const res = await stake(DEPOSIT);
            expectExit(res, client(), 0);
            assert.equal((await clientData_(net)).stake, DEPOSIT);
            // the money does not move: the proxy is told the state with 1 nanoton
            await notified(res);
            assert.equal(await balanceOf(net, proxy()), proxyBefore + 1n);
        });

        it('refuses one nanoton under the minimum or under the current stake (108), above the balance (107)', async () => {
            expectExit(await stake(PARAMS.minClientStake - 1n), client(), ERR.STAKE_TOO_LOW);
            expectExit(await stake(DEPOSIT + 1n), client(), ERR.BELOW_STAKE);
            expectExit(await stake(PARAMS.minClientStake + 10n), client(), 0);
            expectExit(await stake(PARAMS.minClientStake + 9n), client(), ERR.STAKE_TOO_LOW);
            assert.equal((await clientData_(net)).stake, PARAMS.minClientStake + 10n);
        });

        it('takes COCOON\'s body and gives the rest of the value back to send_excesses_to', async () => {
            const before = await balanceOf(net, client());
            const res = await toClient(ADDR.clientOwner, body.increaseClientStake(6, PARAMS.minClientStake, ADDR.stranger));
            expectExcess(expectExit(res, client(), 0), ADDR.stranger, 6);
            assert.equal(await balanceOf(net, client()), before);
            // our old body, without the address, is refused
            const old = beginCell().storeUint(OP.owner_client_increase_stake, 32).storeUint(7, 64).storeCoins(PARAMS.minClientStake).endCell();
            expectExit(await toClient(ADDR.clientOwner, old), client(), 9);
        });

        it('refuses anyone but the owner (101) and a closing contract (109)', async () => {
            expectExit(await stake(PARAMS.minClientStake, ADDR.stranger), client(), ERR.NOT_OWNER);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(1)), client(), 0);
            expectExit(await stake(PARAMS.minClientStake), client(), ERR.WRONG_STATE);
        });
    });

    describe('owner_client_withdraw', () => {
        const stakeValue = PARAMS.minClientStake;
        beforeEach(async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.increaseClientStake(1, stakeValue)), client(), 0);
        });
        const withdraw = (from = ADDR.clientOwner, value = MIN_FEE, sendTo = ADDR.clientOwner) => toClient(from, body.withdraw(7, sendTo), value);

        it('pays everything above the stake out of the proxy to send_excesses_to, leaving exactly the stake', async () => {
            const res = await withdraw(ADDR.clientOwner, MIN_FEE, ADDR.payer);
            expectExit(res, client(), 0);
            const out = paidTo(res, ADDR.payer);
            assert.ok(out.value > DEPOSIT - stakeValue);
            assert.equal((await clientData_(net)).balance, stakeValue);
            const r = await request(res);
            assert.equal(r.payloadOp, OP.client_proxy_refund_granted);
            assert.equal(r.rest.loadCoins(), DEPOSIT - stakeValue);
            assert.ok(r.rest.loadAddress().equals(ADDR.payer));
            assert.equal(await balanceOf(net, proxy()), STAKE + stakeValue + 1n);
        });

        it('pays one nanoton above the stake; refuses when nothing is above it (107)', async () => {
            expectExit(await withdraw(), client(), 0);
            expectExit(await withdraw(), client(), ERR.BELOW_STAKE);
            expectExit(await toClient(ADDR.payer, body.topUp(8, 1n, ADDR.payer), 1n + MIN_FEE), client(), 0);
            const res = await withdraw();
            expectExit(res, client(), 0);
            const out = paidTo(res, ADDR.clientOwner);
            assert.ok(out.value > 1n);
            assert.equal((await clientData_(net)).balance, stakeValue);
            assert.equal(await balanceOf(net, proxy()), STAKE + stakeValue + 1n);
        });

        it('refuses anyone but the owner (101), a short value (106), a closing contract (109), our old body with an amount', async () => {
            expectExit(await withdraw(ADDR.stranger), client(), ERR.NOT_OWNER);
            expectExit(await withdraw(ADDR.clientOwner, MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            const old = beginCell().storeUint(OP.owner_client_withdraw, 32).storeUint(7, 64).storeCoins(1n).endCell();
            expectExit(await toClient(ADDR.clientOwner, old), client(), 9);
            assert.equal((await clientData_(net)).balance, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(1)), client(), 0);
            expectExit(await withdraw(), client(), ERR.WRONG_STATE);
        });
    });

    describe('owner_client_change_secret_hash', () => {
        it('stores the hash (in any state); refuses anyone but the owner (101)', async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.changeSecretHash(1, 0xfeedn)), client(), 0);
            assert.equal((await clientData_(net)).secretHash, 0xfeedn);
            expectExit(await toClient(ADDR.stranger, body.changeSecretHash(1, 1n)), client(), ERR.NOT_OWNER);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.changeSecretHash(3, 0xbeefn)), client(), 0);
            assert.equal((await clientData_(net)).secretHash, 0xbeefn);
        });

        it('takes COCOON\'s body and gives the rest of the value back to send_excesses_to; keeps nothing', async () => {
            await deployClient(net, DEPOSIT);
            const before = await balanceOf(net, client());
            const res = await toClient(ADDR.clientOwner, body.changeSecretHash(4, 0xcafen, ADDR.stranger));
            const tx = expectExit(res, client(), 0);
            expectExcess(tx, ADDR.stranger, 4);
            assert.equal((await notified(res)).queryId, 4n);
            assert.equal(await balanceOf(net, client()), before);
            // our old body, without the address, is refused
            const old = beginCell().storeUint(OP.owner_client_change_secret_hash, 32).storeUint(5, 64).storeUint(1n, 256).endCell();
            expectExit(await toClient(ADDR.clientOwner, old), client(), 9);
        });
    });

    describe('owner_client_register', () => {
        it('takes COCOON\'s body from the owner of an open contract, tells the proxy contract the nonce, stores nothing, gives the rest back', async () => {
            await deployClient(net, DEPOSIT);
            const data = (await net.blockchain.getContract(client())).accountState.state.data;
            const before = await balanceOf(net, client());
            const res = await toClient(ADDR.clientOwner, body.register(7, 0x0123456789abcdefn, ADDR.stranger));
            const tx = expectExit(res, client(), 0);
            expectExcess(tx, ADDR.stranger, 7);
            // COCOON's client_proxy_register: the nonce and nothing after it
            const r = await notified(res, OP.client_proxy_register);
            assert.equal(r.rest.loadUintBig(64), 0x0123456789abcdefn);
            r.rest.endParse();
            // 1 nanoton runs no code at the proxy contract; the transaction is there to be read
            assert.equal(exitCode(txOn(res, proxy())), null);
            assert.equal(await balanceOf(net, client()), before);
            assert.ok((await net.blockchain.getContract(client())).accountState.state.data.equals(data));
        });

        it('refuses anyone but the owner (101) and a contract that is not open (109)', async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.stranger, body.register(1, 5n)), client(), ERR.NOT_OWNER);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.register(3, 5n)), client(), ERR.WRONG_STATE);
        });
    });

    describe('ext_client_charge_signed', () => {
        beforeEach(async () => {
            await deployClient(net, DEPOSIT);
        });

        it('charges (tokens - tokens_used) x price; the proxy is told the state, the rest goes to send_excesses_to', async () => {
            const res = await toClient(ADDR.payer, charge(1000, { queryId: 5, sendExcessesTo: ADDR.stranger }));
            const tx = expectExit(res, client(), 0);
            let d = await clientData_(net);
            assert.equal(d.tokensUsed, 1000n);
            assert.equal(d.balance, DEPOSIT - 1000n * PRICE);
            assert.equal((await notified(res)).queryId, 5n);
            expectExcess(tx, ADDR.stranger, 5);

            expectExit(await toClient(ADDR.payer, charge(1001)), client(), 0);
            d = await clientData_(net);
            assert.equal(d.tokensUsed, 1001n);
            assert.equal(d.balance, DEPOSIT - 1001n * PRICE);
        });

        it('charges at most the balance: one token more than it covers takes all of it', async () => {
            const covered = DEPOSIT / PRICE; // 150_000 tokens
            expectExit(await toClient(ADDR.payer, charge(Number(covered) - 1)), client(), 0);
            assert.equal((await clientData_(net)).balance, PRICE);
            expectExit(await toClient(ADDR.payer, charge(Number(covered) + 1)), client(), 0);
            const d = await clientData_(net);
            assert.equal(d.balance, 0n);
            assert.equal(d.tokensUsed, covered + 1n);
        });

        it('refuses a replay (104), a lower counter (105)', async () => {
            expectExit(await toClient(ADDR.payer, charge(10)), client(), 0);
            expectExit(await toClient(ADDR.payer, charge(10)), client(), ERR.REPLAYED);
            expectExit(await toClient(ADDR.payer, charge(9)), client(), ERR.BACKWARDS);
            assert.equal((await clientData_(net)).tokensUsed, 10n);
        });

        it('refuses a bad signature (102), another op or query id (113), another target (103), a short value (106)', async () => {
            expectExit(await toClient(ADDR.payer, charge(10, { key: KEYS.other })), client(), ERR.BAD_SIGNATURE);
            expectExit(await toClient(ADDR.payer, charge(10, { payloadOp: OP.ext_client_grant_refund_signed })), client(), ERR.WRONG_OP);
            expectExit(await toClient(ADDR.payer, charge(10, { queryId: 1, payloadQueryId: 2 })), client(), ERR.WRONG_OP);
            expectExit(await toClient(ADDR.payer, charge(10, { target: net.worker.address })), client(), ERR.WRONG_TARGET);
            expectExit(await toClient(ADDR.payer, charge(10), MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            assert.equal((await clientData_(net)).tokensUsed, 0n);
        });

        it('still charges while closing (the stake), not once closed (109)', async () => {
            expectExit(await toClient(ADDR.clientOwner, body.increaseClientStake(1, PARAMS.minClientStake)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            expectExit(await toClient(ADDR.payer, charge(100)), client(), 0);
            assert.equal((await clientData_(net)).balance, PARAMS.minClientStake - 100n * PRICE);
            net.blockchain.now = NOW + PARAMS.clientDelayBeforeClose;
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(3)), client(), 0);
            expectExit(await toClient(ADDR.payer, charge(200)), client(), ERR.WRONG_STATE);
        });
    });

    describe('close paths', () => {
        const stakeValue = PARAMS.minClientStake;
        beforeEach(async () => {
            await deployClient(net, DEPOSIT);
            expectExit(await toClient(ADDR.clientOwner, body.increaseClientStake(1, stakeValue)), client(), 0);
        });

        it('request_refund pays what is above the stake to send_excesses_to at once and starts the delay', async () => {
            const res = await toClient(ADDR.clientOwner, body.requestRefund(5, ADDR.payer));
            expectExit(res, client(), 0);
            const out = paidTo(res, ADDR.payer);
            assert.ok(out.value > DEPOSIT - stakeValue);
            const d = await clientData_(net);
            assert.equal(d.state, 1);
            assert.equal(d.balance, stakeValue);
            assert.equal(d.unlockTs, NOW + PARAMS.clientDelayBeforeClose);
            assert.equal((await request(res)).payloadOp, OP.client_proxy_refund_granted);
            assert.equal(await balanceOf(net, proxy()), STAKE + stakeValue + 1n);
        });

        it('request_refund with nothing above the stake only tells the proxy the new state', async () => {
            expectExit(await toClient(ADDR.clientOwner, body.withdraw(4)), client(), 0);
            const res = await toClient(ADDR.clientOwner, body.requestRefund(5, ADDR.payer));
            expectExcess(expectExit(res, client(), 0), ADDR.payer, 5);
            assert.equal((await notified(res)).queryId, 5n);
            assert.equal((await clientData_(net)).state, 1);
        });

        it('request_refund refuses anyone but the owner (101), a short value (106), our old body without the address', async () => {
            expectExit(await toClient(ADDR.stranger, body.requestRefund(1)), client(), ERR.NOT_OWNER);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(1), MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            expectExit(await toClient(ADDR.clientOwner, body.bare(OP.owner_client_request_refund, 1)), client(), 9);
            assert.equal((await clientData_(net)).state, 0);
        });

        it('request_refund again while closing: refused before the delay (110); after it the stake goes to send_excesses_to and it closes', async () => {
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            const unlock = NOW + PARAMS.clientDelayBeforeClose;
            net.blockchain.now = unlock - 1;
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(3)), client(), ERR.TOO_EARLY);
            expectExit(await toClient(ADDR.stranger, body.requestRefund(3)), client(), ERR.NOT_OWNER);
            net.blockchain.now = unlock;
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(3), MIN_FEE - 1n), client(), ERR.LOW_VALUE);

            const before = await balanceOf(net, proxy());
            const res = await toClient(ADDR.clientOwner, body.requestRefund(4, ADDR.payer));
            expectExit(res, client(), 0);
            const ptx = expectExit(res, proxy(), 0);
            assert.equal((await request(res)).payloadOp, OP.client_proxy_refund_force);
            const out = paidTo(res, ADDR.payer);
            assert.ok(out.value > stakeValue);
            assert.equal(await balanceOf(net, proxy()), before - stakeValue - storageFee(ptx));
            const d = await clientData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.balance, 0n);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(5)), client(), ERR.WRONG_STATE);
        });

        it('grant_refund charges the voucher, refunds the rest to the owner and closes', async () => {
            expectExit(await toClient(ADDR.payer, charge(100)), client(), 0);
            await send(net, { from: ADDR.stranger, to: client(), value: 10_000_000n }); // some balance of its own
            const own = await balanceOf(net, client());
            const res = await toClient(ADDR.payer, grant(300, { queryId: 9 }));
            expectExit(res, client(), 0);
            // one message: the final state (closed, tokens charged) with the refund
            const r = await request(res);
            assert.equal(r.payloadOp, OP.client_proxy_refund_granted);
            assert.equal(r.rest.loadCoins(), DEPOSIT - 300n * PRICE);
            assert.ok(r.rest.loadAddress().equals(ADDR.clientOwner));
            // the client contract's own balance is untouched
            assert.equal(await balanceOf(net, client()), own);
            const expectedRefund = DEPOSIT - 300n * PRICE;
            const out = paidTo(res, ADDR.clientOwner);
            assert.ok(out.value > expectedRefund);
            const d = await clientData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.balance, 0n);
            assert.equal(d.tokensUsed, 300n);
            expectExit(await toClient(ADDR.payer, grant(400)), client(), ERR.WRONG_STATE);
        });

        it('grant_refund with the counter already charged only refunds; while closing too', async () => {
            expectExit(await toClient(ADDR.payer, charge(100)), client(), 0);
            expectExit(await toClient(ADDR.clientOwner, body.requestRefund(2)), client(), 0);
            expectExit(await toClient(ADDR.payer, grant(100)), client(), 0);
            const d = await clientData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.tokensUsed, 100n);
            assert.equal(await balanceOf(net, proxy()) >= STAKE + 100n * PRICE, true);
        });

        it('grant_refund refuses a lower counter (105), a bad signature (102), another op (113), another target (103), a short value (106)', async () => {
            expectExit(await toClient(ADDR.payer, charge(100)), client(), 0);
            expectExit(await toClient(ADDR.payer, grant(99)), client(), ERR.BACKWARDS);
            expectExit(await toClient(ADDR.payer, grant(200, { key: KEYS.other })), client(), ERR.BAD_SIGNATURE);
            expectExit(await toClient(ADDR.payer, grant(200, { payloadOp: OP.ext_client_charge_signed })), client(), ERR.WRONG_OP);
            expectExit(await toClient(ADDR.payer, grant(200, { target: net.proxy.address })), client(), ERR.WRONG_TARGET);
            expectExit(await toClient(ADDR.payer, grant(200), MIN_FEE - 1n), client(), ERR.LOW_VALUE);
            assert.equal((await clientData_(net)).state, 0);
        });
    });

    it('refuses an unknown op (111) and accepts a plain transfer', async () => {
        await deployClient(net, DEPOSIT);
        expectExit(await toClient(ADDR.stranger, body.bare(0x0badc0de, 0)), client(), ERR.UNKNOWN_OP);
        const res = await send(net, { from: ADDR.stranger, to: client(), value: 100_000_000n });
        const tx = expectExit(res, client(), 0);
        assert.equal(await balanceOf(net, client()), 100_000_000n - tx.description.computePhase.gasFees);
    });
});
