// Proxy contract: stake, save_state, payouts to the owner and to workers, the messages of its
// client and worker contracts (and impostors), the close request and completion.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
    ADDR, ERR, KEYS, MIN_FEE, NOW, OP, PARAMS, balanceOf, bigKey, body, expectExcess, expectExit, internalBody,
    exitCode, opOf, outMessages, proxyData_, send, setBalance, setup, signedBody, storageFee, txOn,
} from '../lib/cocoon.mjs';

const STAKE = 2_000_000_000n;

describe('proxy', () => {
    let net;
    beforeEach(async () => {
        net = await setup({ proxyStake: STAKE });
    });
    const proxy = () => net.proxy.address;
    const toProxy = (from, b, value = MIN_FEE) => send(net, { from, to: proxy(), value, body: b });

    it('deploys from its initial data with the first stake; the rest of the value goes back', async () => {
        const d = await proxyData_(net);
        assert.ok(d.owner.equals(ADDR.proxyOwner));
        assert.equal(d.publicKey, bigKey(KEYS.proxy.publicKey));
        assert.equal(d.state, 0);
        assert.equal(d.stake, STAKE);
        assert.equal(d.clientsHeld, 0n);
        assert.equal(d.closeUnlockTs, 0);
        assert.ok(d.root.equals(net.root.address));
        assert.equal(await balanceOf(net, proxy()), STAKE);
    });

    describe('ext_proxy_increase_stake', () => {
        it('adds the amount to the stake and keeps exactly it; anyone may pay', async () => {
            const amount = 1_234_567_891n;
            const res = await toProxy(ADDR.stranger, body.increaseStake(9, amount), amount + MIN_FEE);
            const tx = expectExit(res, proxy(), 0);
            assert.equal((await proxyData_(net)).stake, STAKE + amount);
            assert.equal(await balanceOf(net, proxy()), STAKE + amount);
            expectExcess(tx, ADDR.stranger, 9);
        });

        it('takes a zero amount', async () => {
            expectExit(await toProxy(ADDR.proxyOwner, body.increaseStake(1, 0n)), proxy(), 0);
            assert.equal((await proxyData_(net)).stake, STAKE);
            assert.equal(await balanceOf(net, proxy()), STAKE);
        });

        it('refuses a value one nanoton short of amount + MIN_FEE (106)', async () => {
            const amount = 1_000_000_000n;
            const res = await toProxy(ADDR.proxyOwner, body.increaseStake(1, amount), amount + MIN_FEE - 1n);
            expectExit(res, proxy(), ERR.LOW_VALUE);
            assert.equal((await proxyData_(net)).stake, STAKE);
        });
    });

    describe('save_state (COCOON\'s: do_not_process)', () => {
        const data = async () => (await net.blockchain.getContract(proxy())).accountState.state.data;

        it('with 1 nanoton, as COCOON\'s proxy sends it: no code runs, nothing is stored, the message stays readable', async () => {
            const before = await data();
            const res = await send(net, { from: ADDR.proxyOwner, to: proxy(), value: 1n, body: body.saveState(7, 5, 0xabcdefn), bounce: false });
            const tx = txOn(res, proxy());
            assert.equal(exitCode(tx), null, 'compute skipped');
            assert.ok(tx.inMessage.body.equals(body.saveState(7, 5, 0xabcdefn)));
            assert.ok((await data()).equals(before));
        });

        it('with value enough to run: taken without being read (exit 0), from anyone, nothing stored, no message out', async () => {
            const before = await data();
            for (const from of [ADDR.proxyOwner, ADDR.stranger]) {
                const tx = expectExit(await toProxy(from, body.saveState(8, 6, 7n)), proxy(), 0);
                assert.equal(outMessages(tx).length, 0);
            }
            // whatever follows the op is not read either
            expectExit(await toProxy(ADDR.stranger, body.bare(OP.do_not_process, 9)), proxy(), 0);
            assert.ok((await data()).equals(before));
        });

        it('our old signed save_state is refused as an unknown op', async () => {
            const old = signedBody({ op: OP.proxy_save_state, counter: 5, target: net.proxy.address });
            expectExit(await toProxy(ADDR.payer, old), proxy(), ERR.UNKNOWN_OP);
        });
    });

    describe('ext_proxy_payout_request', () => {
        it('sends the free balance to send_excesses_to and keeps stake + clients_held + MIN_FEE', async () => {
            const held = 300_000_000n;
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            const free = 777_000_001n;
            await setBalance(net, proxy(), STAKE + held + MIN_FEE + free);
            const res = await toProxy(ADDR.proxyOwner, body.proxyPayout(3, ADDR.payer));
            const tx = expectExit(res, proxy(), 0);
            const [out] = outMessages(tx);
            assert.ok(out.to.equals(ADDR.payer));
            assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 3n });
            // the free balance plus the rest of the incoming value, less the forward fee
            assert.equal(out.value, free + MIN_FEE - tx.description.computePhase.gasFees - out.fwdFee
                - tx.description.actionPhase.totalActionFees);
            assert.equal(await balanceOf(net, proxy()), STAKE + held + MIN_FEE);
        });

        it('pays a free balance of one nanoton and refuses zero (112)', async () => {
            await setBalance(net, proxy(), STAKE + MIN_FEE);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1)), proxy(), ERR.NO_FUNDS);
            await setBalance(net, proxy(), STAKE + MIN_FEE + 1n);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(2)), proxy(), 0);
            assert.equal(await balanceOf(net, proxy()), STAKE + MIN_FEE);
        });

        it('refuses when the balance is only the stake (112)', async () => {
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1)), proxy(), ERR.NO_FUNDS);
        });

        it('refuses anyone but the owner (101) and a value under MIN_FEE (106)', async () => {
            await setBalance(net, proxy(), STAKE + 2n * MIN_FEE);
            expectExit(await toProxy(ADDR.stranger, body.proxyPayout(1)), proxy(), ERR.NOT_OWNER);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1), MIN_FEE - 1n), proxy(), ERR.LOW_VALUE);
            // our old body, without the address, is refused
            expectExit(await toProxy(ADDR.proxyOwner, body.bare(OP.ext_proxy_payout_request, 1)), proxy(), 9);
        });
    });

    describe('messages of client and worker contracts', () => {
        it('takes them from the contract addresses derived from the carried owner', async () => {
            const held = 1_000_000_000n;
            let res = await toProxy(net.client.address, internalBody.topUp(1, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE);
            let tx = expectExit(res, proxy(), 0);
            assert.equal((await proxyData_(net)).clientsHeld, held);
            assert.equal(await balanceOf(net, proxy()), STAKE + held);
            expectExcess(tx, ADDR.payer, 1);

            res = await toProxy(net.client.address, internalBody.charge(2, ADDR.clientOwner, 100n));
            expectExit(res, proxy(), 0);
            assert.equal((await proxyData_(net)).clientsHeld, held - 100n);

            for (const op of [OP.client_proxy_refund_granted, OP.client_proxy_refund_force]) {
                const before = await balanceOf(net, proxy());
                res = await toProxy(net.client.address, internalBody.refund(op, 3, ADDR.clientOwner, 200n, ADDR.stranger));
                tx = expectExit(res, proxy(), 0);
                const [out] = outMessages(tx);
                assert.ok(out.to.equals(ADDR.stranger));
                assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 3n });
                assert.equal(await balanceOf(net, proxy()), before - 200n);
            }
            assert.equal((await proxyData_(net)).clientsHeld, held - 500n);
        });

        it('refuses them from any other sender (101)', async () => {
            const cases = [
                internalBody.topUp(1, ADDR.clientOwner, 0n, ADDR.payer),
                internalBody.charge(1, ADDR.clientOwner, 0n),
                internalBody.refund(OP.client_proxy_refund_granted, 1, ADDR.clientOwner, 0n, ADDR.stranger),
                internalBody.refund(OP.client_proxy_refund_force, 1, ADDR.clientOwner, 0n, ADDR.stranger),
                internalBody.payout(1, 0, 1, ADDR.workerOwner, 0n),
            ];
            for (const b of cases) {
                // a stranger, and the right contract claiming another owner
                expectExit(await toProxy(ADDR.stranger, b), proxy(), ERR.NOT_OWNER);
            }
            expectExit(await toProxy(net.client.address, internalBody.charge(1, ADDR.stranger, 0n)), proxy(), ERR.NOT_OWNER);
            expectExit(await toProxy(net.worker.address, internalBody.payout(1, 0, 1, ADDR.stranger, 0n)), proxy(), ERR.NOT_OWNER);
            // a worker contract is not a client contract and the other way round
            expectExit(await toProxy(net.worker.address, internalBody.charge(1, ADDR.workerOwner, 0n)), proxy(), ERR.NOT_OWNER);
            expectExit(await toProxy(net.client.address, internalBody.payout(1, 0, 1, ADDR.clientOwner, 0n)), proxy(), ERR.NOT_OWNER);
        });
    });

    describe('worker_proxy_payout_request', () => {
        const held = 500_000_000n;
        const free = 100_000_000n;
        beforeEach(async () => {
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            await setBalance(net, proxy(), STAKE + held + MIN_FEE + free);
        });
        const payout = (amount) => toProxy(net.worker.address, internalBody.payout(4, 10, 20, ADDR.workerOwner, amount));

        it('pays from the free balance without touching the stake', async () => {
            const tx = expectExit(await payout(free), proxy(), 0);
            const [out] = outMessages(tx);
            assert.ok(out.to.equals(ADDR.workerOwner));
            assert.equal(out.bounce, false);
            assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 4n });
            assert.equal((await proxyData_(net)).stake, STAKE);
            assert.equal(await balanceOf(net, proxy()), STAKE + held + MIN_FEE);
        });

        it('takes the shortfall from the stake', async () => {
            expectExit(await payout(free + 123n), proxy(), 0);
            assert.equal((await proxyData_(net)).stake, STAKE - 123n);
            assert.equal(await balanceOf(net, proxy()), STAKE - 123n + held + MIN_FEE);
        });

        it('pays exactly free + stake and refuses one nanoton more (112)', async () => {
            expectExit(await payout(free + STAKE + 1n), proxy(), ERR.NO_FUNDS);
            expectExit(await payout(free + STAKE), proxy(), 0);
            assert.equal((await proxyData_(net)).stake, 0n);
            assert.equal(await balanceOf(net, proxy()), held + MIN_FEE);
            assert.equal((await proxyData_(net)).clientsHeld, held);
        });

        it('pays a zero amount', async () => {
            expectExit(await payout(0n), proxy(), 0);
            assert.equal(await balanceOf(net, proxy()), STAKE + held + MIN_FEE + free);
        });
    });

    describe('close', () => {
        const closeReq = (opts = {}) => signedBody({ op: OP.ext_proxy_close_request_signed, counter: 0, target: net.proxy.address, ...opts });
        const complete = (opts = {}) => signedBody({ op: OP.ext_proxy_close_complete_request_signed, counter: 0, target: net.proxy.address, ...opts });
        const unlock = NOW + PARAMS.proxyDelayBeforeClose;

        it('a close request starts the delay; a second one is refused (109)', async () => {
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), 0);
            const d = await proxyData_(net);
            assert.equal(d.state, 1);
            assert.equal(d.closeUnlockTs, unlock);
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), ERR.WRONG_STATE);
        });

        it('refuses close vouchers with a bad signature (102), another op (113), another target (103)', async () => {
            expectExit(await toProxy(ADDR.payer, closeReq({ key: KEYS.other })), proxy(), ERR.BAD_SIGNATURE);
            expectExit(await toProxy(ADDR.payer, closeReq({ payloadOp: OP.ext_proxy_close_complete_request_signed })), proxy(), ERR.WRONG_OP);
            expectExit(await toProxy(ADDR.payer, closeReq({ target: net.worker.address })), proxy(), ERR.WRONG_TARGET);
            expectExit(await toProxy(ADDR.payer, complete({ key: KEYS.other })), proxy(), ERR.BAD_SIGNATURE);
            expectExit(await toProxy(ADDR.payer, complete({ payloadOp: OP.ext_proxy_close_request_signed })), proxy(), ERR.WRONG_OP);
            expectExit(await toProxy(ADDR.payer, complete({ target: net.root.address })), proxy(), ERR.WRONG_TARGET);
            assert.equal((await proxyData_(net)).state, 0);
        });

        it('completion: not before a request (109), not before the delay (110), not while clients hold money (114), then all to the owner', async () => {
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.WRONG_STATE);
            const held = 250_000_000n;
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), 0);

            net.blockchain.now = unlock - 1;
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.TOO_EARLY);
            net.blockchain.now = unlock;
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.NOT_SETTLED);

            // the client takes its money back (a refund is still paid while closing)
            expectExit(await toProxy(net.client.address, internalBody.refund(OP.client_proxy_refund_force, 0, ADDR.clientOwner, held, ADDR.clientOwner)), proxy(), 0);
            assert.equal((await proxyData_(net)).clientsHeld, 0n);

            const before = await balanceOf(net, proxy());
            const res = await toProxy(ADDR.payer, complete({ queryId: 8 }));
            const tx = expectExit(res, proxy(), 0);
            const [out] = outMessages(tx);
            assert.ok(out.to.equals(ADDR.proxyOwner));
            assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 8n });
            assert.equal(out.value, before + MIN_FEE - storageFee(tx) - tx.description.computePhase.gasFees
                - out.fwdFee - tx.description.actionPhase.totalActionFees);
            assert.equal(await balanceOf(net, proxy()), 0n);
            const d = await proxyData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.stake, 0n);
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.WRONG_STATE);
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), ERR.WRONG_STATE);
        });
    });

    it('refuses an unknown op (111) and accepts a plain transfer', async () => {
        expectExit(await toProxy(ADDR.stranger, body.bare(0x12345678, 0)), proxy(), ERR.UNKNOWN_OP);
        const res = await send(net, { from: ADDR.stranger, to: proxy(), value: 1_000_000_000n });
        const tx = expectExit(res, proxy(), 0);
        assert.equal(await balanceOf(net, proxy()), STAKE + 1_000_000_000n - tx.description.computePhase.gasFees);
    });
});
