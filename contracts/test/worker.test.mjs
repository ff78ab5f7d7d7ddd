// Worker contract: payouts through the proxy, the last payout, every voucher refusal and the
// bounce that restores tokens_paid when the proxy cannot pay.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { beginCell } from '@ton/core';
import { internal } from '@ton/sandbox';
import {
    ADDR, ERR, KEYS, MIN_FEE, OP, PARAMS, balanceOf, bigKey, body, expectExit, opOf, outMessages,
    proxyData_, send, setBalance, setup, signedBody, txOn, workerData_, rootParamsCell,
} from '../lib/cocoon.mjs';

const STAKE = 2_000_000_000n;
const FEE = PARAMS.workerFeePerToken;

describe('worker', () => {
    let net;
    beforeEach(async () => {
        net = await setup({ proxyStake: STAKE });
    });
    const worker = () => net.worker.address;
    const proxy = () => net.proxy.address;
    const payout = (counter, opts = {}) => signedBody({ op: OP.ext_worker_payout_request_signed, counter, target: net.worker.address, ...opts });
    const last = (counter, opts = {}) => signedBody({ op: OP.ext_worker_last_payout_request_signed, counter, target: net.worker.address, ...opts });
    const toWorker = (b, value = MIN_FEE, stateInit = undefined) => send(net, { from: ADDR.payer, to: worker(), value, body: b, stateInit });
    const deploy = (b) => toWorker(b, MIN_FEE, net.worker.init);

    it('keeps its data as COCOON\'s worker runner reads it: owner, proxy, key, state, tokens, ^params', async () => {
        expectExit(await deploy(payout(1000)), worker(), 0);
        const data = (await net.blockchain.getContract(worker())).accountState.state.data;
        const s = data.beginParse();
        assert.ok(s.loadAddress().equals(ADDR.workerOwner));
        assert.ok(s.loadAddress().equals(proxy()));
        assert.equal(s.loadUintBig(256), bigKey(KEYS.proxy.publicKey));
        assert.equal(s.loadUint(2), 0);
        assert.equal(s.loadUintBig(64), 1000n);
        // COCOON's params cell without code (its `serialize_worker_params_cell`)
        assert.ok(s.loadRef().equals(rootParamsCell({ codes: {} })));
        s.endParse();
    });

    it('deploys with a payout voucher and pays (tokens - tokens_paid) x fee to the owner through the proxy', async () => {
        const res = await deploy(payout(1000, { queryId: 5 }));
        const wtx = expectExit(res, worker(), 0);
        const [req] = outMessages(wtx);
        assert.equal(req.bounce, true);
        assert.equal(opOf(req.body).op, OP.worker_proxy_payout_request);
        const ptx = expectExit(res, proxy(), 0);
        const [out] = outMessages(ptx);
        assert.ok(out.to.equals(ADDR.workerOwner));
        assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 5n });
        assert.ok(out.value > 1000n * FEE);
        // the proxy paid exactly the amount and earned the price less the fee on each token;
        // its stake is a figure, not a purse: it does not move
        assert.equal(await balanceOf(net, proxy()), STAKE - 1000n * FEE);
        assert.equal((await proxyData_(net)).stake, STAKE);
        assert.equal((await proxyData_(net)).earnings, 1000n * (PARAMS.pricePerToken - FEE));
        const d = await workerData_(net);
        assert.equal(d.state, 0);
        assert.equal(d.tokensPaid, 1000n);
        assert.equal(d.workerFeePerToken, FEE);
        assert.ok(d.owner.equals(ADDR.workerOwner));
        assert.ok(d.proxy.equals(proxy()));
        assert.equal(d.publicKey, bigKey(KEYS.proxy.publicKey));

        expectExit(await toWorker(payout(1001)), worker(), 0);
        assert.equal((await workerData_(net)).tokensPaid, 1001n);
        assert.equal(await balanceOf(net, proxy()), STAKE - 1001n * FEE);
    });

    it('refuses a replay (104), a lower counter (105)', async () => {
        expectExit(await deploy(payout(10)), worker(), 0);
        expectExit(await toWorker(payout(10)), worker(), ERR.REPLAYED);
        expectExit(await toWorker(payout(9)), worker(), ERR.BACKWARDS);
        expectExit(await toWorker(last(10)), worker(), ERR.REPLAYED);
        assert.equal((await workerData_(net)).tokensPaid, 10n);
    });

    it('refuses a bad signature (102), another op or query id (113), another target (103), a short value (106)', async () => {
        expectExit(await deploy(payout(10, { key: KEYS.other })), worker(), ERR.BAD_SIGNATURE);
        expectExit(await deploy(payout(10, { payloadOp: OP.ext_worker_last_payout_request_signed })), worker(), ERR.WRONG_OP);
        expectExit(await deploy(payout(10, { payloadOp: OP.ext_client_charge_signed })), worker(), ERR.WRONG_OP);
        // the signed part's query id must be the message's (as COCOON's roles check it)
        expectExit(await deploy(payout(10, { queryId: 4, payloadQueryId: 5 })), worker(), ERR.WRONG_OP);
        expectExit(await deploy(payout(10, { target: net.client.address })), worker(), ERR.WRONG_TARGET);
        expectExit(await toWorker(payout(10), MIN_FEE - 1n, net.worker.init), worker(), ERR.LOW_VALUE);
        expectExit(await deploy(payout(10)), worker(), 0);
    });

    it('the last payout pays and closes; nothing after it (109)', async () => {
        expectExit(await deploy(payout(10)), worker(), 0);
        expectExit(await toWorker(last(30)), worker(), 0);
        const d = await workerData_(net);
        assert.equal(d.state, 2);
        assert.equal(d.tokensPaid, 30n);
        assert.equal(await balanceOf(net, proxy()), STAKE - 30n * FEE);
        expectExit(await toWorker(payout(40)), worker(), ERR.WRONG_STATE);
        expectExit(await toWorker(last(40)), worker(), ERR.WRONG_STATE);
    });

    it('when the proxy cannot pay (112) the bounce restores tokens_paid; one token less is paid', async () => {
        expectExit(await deploy(payout(10)), worker(), 0);
        // the proxy pays what it holds beyond a MIN_FEE reserve
        await setBalance(net, proxy(), STAKE);
        const covered = 10 + Number((STAKE - MIN_FEE) / FEE);
        const res = await toWorker(payout(covered + 1, { queryId: 3 }));
        expectExit(res, worker(), 0);
        expectExit(res, proxy(), ERR.NO_FUNDS);
        const bounce = txOn(res, worker(), 1);
        assert.equal(bounce.inMessage.info.bounced, true);
        assert.equal(bounce.description.computePhase.exitCode, 0);
        assert.equal((await workerData_(net)).tokensPaid, 10n);
        assert.equal(await balanceOf(net, proxy()), STAKE);

        expectExit(await toWorker(payout(covered)), proxy(), 0);
        assert.equal((await workerData_(net)).tokensPaid, BigInt(covered));
        const paid = BigInt(covered - 10) * FEE;
        assert.equal(await balanceOf(net, proxy()), STAKE - paid);
    });

    it('a bounced last payout reopens the contract', async () => {
        expectExit(await deploy(payout(10)), worker(), 0);
        await setBalance(net, proxy(), 0n);
        const res = await toWorker(last(20));
        expectExit(res, proxy(), ERR.NO_FUNDS);
        const d = await workerData_(net);
        assert.equal(d.state, 0);
        assert.equal(d.tokensPaid, 10n);
        await setBalance(net, proxy(), STAKE);
        expectExit(await toWorker(last(20)), proxy(), 0);
        assert.equal((await workerData_(net)).state, 2);
    });

    it('ignores a bounce that no longer matches tokens_paid, and other bounces', async () => {
        expectExit(await deploy(payout(10)), worker(), 0);
        // a forged bounce of an older request: new_tokens (5) != tokens_paid (10)
        const bounced = (op, oldT, newT) => beginCell().storeUint(0xffffffff, 32).storeUint(op, 32).storeUint(0, 64)
            .storeUint(oldT, 64).storeUint(newT, 64).endCell();
        let res = await net.blockchain.sendMessage(internal({ from: proxy(), to: worker(), value: MIN_FEE, bounced: true, bounce: false, body: bounced(OP.worker_proxy_payout_request, 0, 5) }));
        expectExit(res, worker(), 0);
        assert.equal((await workerData_(net)).tokensPaid, 10n);
        res = await net.blockchain.sendMessage(internal({ from: proxy(), to: worker(), value: MIN_FEE, bounced: true, bounce: false, body: bounced(0x12345678, 0, 10) }));
        expectExit(res, worker(), 0);
        assert.equal((await workerData_(net)).tokensPaid, 10n);
    });

    it('refuses an unknown op (111) and accepts a plain transfer', async () => {
        expectExit(await deploy(payout(1)), worker(), 0);
        expectExit(await toWorker(body.bare(0x0badc0de, 0)), worker(), ERR.UNKNOWN_OP);
        const before = await balanceOf(net, worker());
        const res = await send(net, { from: ADDR.stranger, to: worker(), value: 100_000_000n });
        const tx = expectExit(res, worker(), 0);
        assert.equal(await balanceOf(net, worker()), before + 100_000_000n - tx.description.computePhase.gasFees);
    });
});
