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
        assert.equal(d.earnings, 0n);
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

    // The proxy earns the price less the worker's fee on every token a worker is paid for.
    const MARGIN = PARAMS.pricePerToken - PARAMS.workerFeePerToken;
    const earn = async (tokens) => {
        const res = await toProxy(net.worker.address, internalBody.payout(0, 0, tokens, ADDR.workerOwner, 0n));
        expectExit(res, proxy(), 0);
        return BigInt(tokens) * MARGIN;
    };

    describe('ext_proxy_payout_request', () => {
        it('pays the earnings to the owner and the rest of the value to send_excesses_to; keeps the stake and the clients\' money', async () => {
            const held = 300_000_000n;
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            const earnings = await earn(1234);
            assert.equal((await proxyData_(net)).earnings, earnings);
            const before = await balanceOf(net, proxy());
            const res = await toProxy(ADDR.proxyOwner, body.proxyPayout(3, ADDR.payer));
            const tx = expectExit(res, proxy(), 0);
            const [toOwner, rest] = outMessages(tx);
            assert.ok(toOwner.to.equals(ADDR.proxyOwner));
            assert.equal(toOwner.value, earnings, 'exactly the earnings, the forward fee paid apart');
            assert.deepEqual(opOf(toOwner.body), { op: OP.excesses, queryId: 3n });
            assert.ok(rest.to.equals(ADDR.payer));
            assert.deepEqual(opOf(rest.body), { op: OP.excesses, queryId: 3n });
            assert.ok(rest.value > 0n && rest.value < MIN_FEE, `${rest.value}`);
            // the contract keeps exactly what it held, less the earnings: the fees came out of
            // the asker's value
            assert.equal(await balanceOf(net, proxy()), before - earnings);
            assert.equal((await proxyData_(net)).earnings, 0n);
            assert.equal((await proxyData_(net)).stake, STAKE);
            // nothing more to take (112)
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(4, ADDR.payer)), proxy(), ERR.NO_FUNDS);
        });

        it('sends one message when the owner names itself: the earnings plus the rest of the value', async () => {
            const earnings = await earn(1234);
            const before = await balanceOf(net, proxy());
            const tx = expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(5, ADDR.proxyOwner)), proxy(), 0);
            const [out, ...more] = outMessages(tx);
            assert.equal(more.length, 0);
            assert.ok(out.to.equals(ADDR.proxyOwner));
            assert.equal(out.value, earnings + MIN_FEE - tx.description.computePhase.gasFees - out.fwdFee
                - tx.description.actionPhase.totalActionFees);
            assert.equal(await balanceOf(net, proxy()), before - earnings);
        });

        it('pays earnings the contract holds beyond a MIN_FEE reserve, and refuses one nanoton less (112)', async () => {
            const earnings = await earn(10);
            await setBalance(net, proxy(), earnings + MIN_FEE - 1n);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1)), proxy(), ERR.NO_FUNDS);
            assert.equal((await proxyData_(net)).earnings, earnings);
            await setBalance(net, proxy(), earnings + MIN_FEE);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(2)), proxy(), 0);
            assert.equal(await balanceOf(net, proxy()), MIN_FEE);
        });

        it('refuses when nothing is earned, whatever the contract holds (112)', async () => {
            await setBalance(net, proxy(), STAKE + 10n * MIN_FEE);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1)), proxy(), ERR.NO_FUNDS);
        });

        it('takes a request from anyone (as COCOON\'s proxy asks from its machine wallet), and pays the earnings only to the owner', async () => {
            const earnings = await earn(100);
            const res = await toProxy(ADDR.stranger, body.proxyPayout(7, ADDR.stranger));
            const tx = expectExit(res, proxy(), 0);
            const [toOwner, rest] = outMessages(tx);
            // exactly the earnings to the owner, its forward fee paid apart
            assert.ok(toOwner.to.equals(ADDR.proxyOwner));
            assert.equal(toOwner.value, earnings);
            assert.deepEqual(opOf(toOwner.body), { op: OP.excesses, queryId: 7n });
            // the rest of the asker's value back to where it said
            assert.ok(rest.to.equals(ADDR.stranger));
            assert.deepEqual(opOf(rest.body), { op: OP.excesses, queryId: 7n });
            assert.ok(rest.value > 0n && rest.value < MIN_FEE, `${rest.value}`);
            assert.equal((await proxyData_(net)).earnings, 0n);
            assert.equal((await proxyData_(net)).stake, STAKE);
        });

        it('refuses a value under MIN_FEE (106)', async () => {
            await earn(100);
            expectExit(await toProxy(ADDR.stranger, body.proxyPayout(1), MIN_FEE - 1n), proxy(), ERR.LOW_VALUE);
            expectExit(await toProxy(ADDR.proxyOwner, body.proxyPayout(1), MIN_FEE - 1n), proxy(), ERR.LOW_VALUE);
            // our old body, without the address, is refused
            expectExit(await toProxy(ADDR.proxyOwner, body.bare(OP.ext_proxy_payout_request, 1)), proxy(), 9);
        });
    });

    describe('client_proxy_request (COCOON\'s envelope) and worker_proxy_payout_request', () => {
        it('keeps a top-up, pays refunds from the clients\' money, and leaves the earnings and the stake alone', async () => {
            const held = 1_000_000_000n;
            let res = await toProxy(net.client.address, internalBody.topUp(1, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE);
            let tx = expectExit(res, proxy(), 0);
            assert.equal(await balanceOf(net, proxy()), STAKE + held);
            expectExcess(tx, ADDR.payer, 1);

            for (const op of [OP.client_proxy_refund_granted, OP.client_proxy_refund_force]) {
                const before = await balanceOf(net, proxy());
                res = await toProxy(net.client.address, internalBody.refund(op, 3, ADDR.clientOwner, 200n, ADDR.stranger));
                tx = expectExit(res, proxy(), 0);
                const [out] = outMessages(tx);
                assert.ok(out.to.equals(ADDR.stranger));
                assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 3n });
                assert.equal(await balanceOf(net, proxy()), before - 200n);
            }
            const d = await proxyData_(net);
            assert.equal(d.earnings, 0n);
            assert.equal(d.stake, STAKE);
        });

        it('takes a state update and a registration from the client contract without moving money', async () => {
            for (const b of [
                internalBody.clientRequest(2, ADDR.clientOwner, null, { balance: 5n, tokensUsed: 7n }),
                internalBody.register(3, ADDR.clientOwner, 0xfeedn),
            ]) {
                const before = await balanceOf(net, proxy());
                // with 1 nanoton, as our client contract sends them, no code runs
                let tx = txOn(await send(net, { from: net.client.address, to: proxy(), value: 1n, body: b, bounce: false }), proxy());
                assert.equal(exitCode(tx), null, 'compute skipped');
                // with value, the sender is checked and nothing is sent
                tx = expectExit(await toProxy(net.client.address, b), proxy(), 0);
                assert.equal(outMessages(tx).length, 0);
                assert.ok(await balanceOf(net, proxy()) >= before);
                expectExit(await toProxy(ADDR.stranger, b), proxy(), ERR.NOT_OWNER);
            }
        });

        it('pays a refund of all the contract holds, and refuses one nanoton more (112)', async () => {
            await setBalance(net, proxy(), 1_000n);
            const refund = (amount) => toProxy(net.client.address, internalBody.refund(OP.client_proxy_refund_granted, 1, ADDR.clientOwner, amount, ADDR.stranger));
            expectExit(await refund(1_001n), proxy(), ERR.NO_FUNDS);
            expectExit(await refund(1_000n), proxy(), 0);
        });

        it('refuses them from any other sender (101), and bodies of our old layout (9)', async () => {
            const cases = [
                internalBody.topUp(1, ADDR.clientOwner, 0n, ADDR.payer),
                internalBody.clientRequest(1, ADDR.clientOwner),
                internalBody.refund(OP.client_proxy_refund_granted, 1, ADDR.clientOwner, 0n, ADDR.stranger),
                internalBody.refund(OP.client_proxy_refund_force, 1, ADDR.clientOwner, 0n, ADDR.stranger),
                internalBody.payout(1, 0, 1, ADDR.workerOwner, 0n),
            ];
            for (const b of cases) {
                expectExit(await toProxy(ADDR.stranger, b), proxy(), ERR.NOT_OWNER);
            }
            // the right contract claiming another owner
            expectExit(await toProxy(net.client.address, internalBody.clientRequest(1, ADDR.stranger)), proxy(), ERR.NOT_OWNER);
            expectExit(await toProxy(net.worker.address, internalBody.payout(1, 0, 1, ADDR.stranger, 0n)), proxy(), ERR.NOT_OWNER);
            // a worker contract is not a client contract and the other way round
            expectExit(await toProxy(net.worker.address, internalBody.clientRequest(1, ADDR.workerOwner)), proxy(), ERR.NOT_OWNER);
            expectExit(await toProxy(net.client.address, internalBody.payout(1, 0, 1, ADDR.clientOwner, 0n)), proxy(), ERR.NOT_OWNER);
            // our old charge notice (`client_proxy_request qid owner amount`) is not COCOON's envelope
            const old = body.bare(OP.client_proxy_request, 1);
            expectExit(await toProxy(net.client.address, old), proxy(), 9);
        });

        it('pays a worker its amount and credits the proxy the price less the fee per token', async () => {
            const tx = expectExit(await toProxy(net.worker.address, internalBody.payout(4, 10, 20, ADDR.workerOwner, 150_000n)), proxy(), 0);
            const [out] = outMessages(tx);
            assert.ok(out.to.equals(ADDR.workerOwner));
            assert.equal(out.bounce, false);
            assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 4n });
            const d = await proxyData_(net);
            assert.equal(d.earnings, 10n * MARGIN);
            assert.equal(d.stake, STAKE);
            assert.equal(await balanceOf(net, proxy()), STAKE - 150_000n);
        });

        it('pays a worker all the contract holds beyond a MIN_FEE reserve and refuses one nanoton more (112, bounced)', async () => {
            const all = STAKE - MIN_FEE;
            const res = await toProxy(net.worker.address, internalBody.payout(4, 0, 1, ADDR.workerOwner, all + 1n));
            expectExit(res, proxy(), ERR.NO_FUNDS);
            assert.equal((await proxyData_(net)).earnings, 0n);
            expectExit(await toProxy(net.worker.address, internalBody.payout(4, 0, 1, ADDR.workerOwner, all)), proxy(), 0);
            assert.equal(await balanceOf(net, proxy()), MIN_FEE);
        });

        it('credits nothing when the worker\'s fee is the whole price', async () => {
            net = await setup({ proxyStake: STAKE, params: { ...PARAMS, workerFeePerToken: PARAMS.pricePerToken } });
            expectExit(await toProxy(net.worker.address, internalBody.payout(4, 0, 100, ADDR.workerOwner, 0n)), proxy(), 0);
            assert.equal((await proxyData_(net)).earnings, 0n);
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

        it('completion: not before a request (109), not before the delay (110); then the stake and the earnings to the owner, the clients\' money stays for their refunds', async () => {
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.WRONG_STATE);
            const held = 250_000_000n;
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            const earnings = await earn(1000);
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), 0);

            net.blockchain.now = unlock - 1;
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.TOO_EARLY);
            net.blockchain.now = unlock;

            const before = await balanceOf(net, proxy());
            const res = await toProxy(ADDR.payer, complete({ queryId: 8 }));
            const tx = expectExit(res, proxy(), 0);
            const [out] = outMessages(tx);
            assert.ok(out.to.equals(ADDR.proxyOwner));
            assert.deepEqual(opOf(out.body), { op: OP.excesses, queryId: 8n });
            assert.equal(out.value, STAKE + earnings + MIN_FEE - tx.description.computePhase.gasFees
                - out.fwdFee - tx.description.actionPhase.totalActionFees);
            assert.equal(await balanceOf(net, proxy()), before - STAKE - earnings - storageFee(tx));
            const d = await proxyData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.stake, 0n);
            assert.equal(d.earnings, 0n);
            expectExit(await toProxy(ADDR.payer, complete()), proxy(), ERR.WRONG_STATE);
            expectExit(await toProxy(ADDR.payer, closeReq()), proxy(), ERR.WRONG_STATE);

            // a client closing later still gets its money back (what it was not charged: the
            // proxy earned its share of the charge, the worker here was paid nothing)
            const left = held - earnings;
            const res2 = await toProxy(net.client.address, internalBody.refund(OP.client_proxy_refund_force, 9, ADDR.clientOwner, left, ADDR.clientOwner));
            const refund = expectExcess(expectExit(res2, proxy(), 0), ADDR.clientOwner, 9);
            assert.ok(refund.value > left);
        });
    });

    describe('owner_proxy_close (COCOON\'s body: op and address, no query id)', () => {
        const unlock = NOW + PARAMS.proxyDelayBeforeClose;
        const close = (from = ADDR.proxyOwner, value = MIN_FEE) => toProxy(from, body.ownerProxyClose(ADDR.payer), value);

        it('the owner starts the delay (the rest of the value back); after it the same message pays the stake and the earnings', async () => {
            const held = 1_000_000_000n;
            expectExit(await toProxy(net.client.address, internalBody.topUp(0, ADDR.clientOwner, held, ADDR.payer), held + MIN_FEE), proxy(), 0);
            const earnings = await earn(100);
            const before = await balanceOf(net, proxy());
            const tx = expectExit(await close(), proxy(), 0);
            expectExcess(tx, ADDR.payer, 0);
            assert.equal(await balanceOf(net, proxy()), before);
            let d = await proxyData_(net);
            assert.equal(d.state, 1);
            assert.equal(d.closeUnlockTs, unlock);
            net.blockchain.now = unlock - 1;
            expectExit(await close(), proxy(), ERR.TOO_EARLY);
            net.blockchain.now = unlock;
            const done = expectExit(await close(), proxy(), 0);
            const [out] = outMessages(done);
            assert.ok(out.to.equals(ADDR.proxyOwner));
            assert.equal(out.value, STAKE + earnings + MIN_FEE - done.description.computePhase.gasFees
                - out.fwdFee - done.description.actionPhase.totalActionFees);
            d = await proxyData_(net);
            assert.equal(d.state, 2);
            assert.equal(d.stake + d.earnings, 0n);
            expectExit(await close(), proxy(), ERR.WRONG_STATE);
        });

        it('refuses anyone but the owner (101), a value one nanoton under MIN_FEE (106), a body with a query id (9)', async () => {
            expectExit(await close(ADDR.stranger), proxy(), ERR.NOT_OWNER);
            expectExit(await close(ADDR.proxyOwner, MIN_FEE - 1n), proxy(), ERR.LOW_VALUE);
            const withQueryId = body.bare(OP.owner_proxy_close, 1);
            expectExit(await toProxy(ADDR.proxyOwner, withQueryId), proxy(), 9);
            assert.equal((await proxyData_(net)).state, 0);
        });

        it('when fees took part of the stake, the completion pays what the contract holds', async () => {
            expectExit(await close(), proxy(), 0);
            await setBalance(net, proxy(), STAKE - 1_000n);
            net.blockchain.now = unlock;
            const done = expectExit(await close(), proxy(), 0);
            const [out] = outMessages(done);
            // (the storage fee of the delay comes out first)
            assert.equal(out.value, STAKE - 1_000n - storageFee(done) + MIN_FEE - done.description.computePhase.gasFees
                - out.fwdFee - done.description.actionPhase.totalActionFees);
            assert.equal(await balanceOf(net, proxy()), 0n);
            assert.equal((await proxyData_(net)).state, 2);
        });

        it('a signed close request and the owner\'s completion meet', async () => {
            const req = signedBody({ op: OP.ext_proxy_close_request_signed, counter: 0, target: net.proxy.address });
            expectExit(await toProxy(ADDR.payer, req), proxy(), 0);
            net.blockchain.now = unlock;
            expectExit(await close(), proxy(), 0);
            assert.equal((await proxyData_(net)).state, 2);
        });
    });

    it('refuses an unknown op (111) and accepts a plain transfer', async () => {
        expectExit(await toProxy(ADDR.stranger, body.bare(0x12345678, 0)), proxy(), ERR.UNKNOWN_OP);
        const res = await send(net, { from: ADDR.stranger, to: proxy(), value: 1_000_000_000n });
        const tx = expectExit(res, proxy(), 0);
        assert.equal(await balanceOf(net, proxy()), STAKE + 1_000_000_000n - tx.description.computePhase.gasFees);
    });
});
