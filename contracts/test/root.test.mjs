// Root: deployment, every admin op, the refusals and the get-methods.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { beginCell } from '@ton/core';
import {
    ADDR, CODES, ERR, MIN_FEE, OP, PARAMS, body, expectExcess, expectExit, getter, opOf,
    parseRegistry, send, setup, stringCell, balanceOf, rootParamsCell, ROOT_PARAMS,
} from '../lib/cocoon.mjs';

const H1 = 0x1111n;
const H2 = 0x2222n;

describe('root', () => {
    let net;
    beforeEach(async () => {
        net = await setup();
    });

    const root = () => net.root.address;
    const version = async () => (await getter(net, root(), 'get_version')).readNumber();
    const registry = async () => parseRegistry((await getter(net, root(), 'get_registry')).readCell());
    const hashValid = async (method, h) => (await getter(net, root(), method, [{ type: 'int', value: h }])).readBoolean();
    const modelType = async (h) => (await getter(net, root(), 'get_model_type', [{ type: 'int', value: h }])).readCellOpt();

    /** Sends an admin op from the owner; checks success, the version bump and the excesses. */
    async function admin(b, { from = ADDR.rootOwner, value = MIN_FEE } = {}) {
        const before = await version();
        const balance = await balanceOf(net, root());
        const res = await send(net, { from, to: root(), value, body: b });
        const tx = expectExit(res, root(), 0);
        assert.equal(await version(), before + 1);
        expectExcess(tx, from, opOf(b).queryId);
        // the rest of the value went back: the root's balance is exactly what it was
        assert.equal(await balanceOf(net, root()), balance);
        return res;
    }

    it('deploys with the owner, version 0, the params, the codes and an empty registry', async () => {
        assert.equal(await version(), 0);
        assert.ok((await getter(net, root(), 'get_owner')).readAddress().equals(ADDR.rootOwner));
        const p = await getter(net, root(), 'get_params');
        assert.deepEqual(
            [p.readBigNumber(), p.readBigNumber(), p.readNumber(), p.readNumber(), p.readNumber(), p.readNumber(),
                p.readNumber(), p.readNumber(), p.readBigNumber(), p.readBigNumber()],
            [PARAMS.pricePerToken, PARAMS.workerFeePerToken, PARAMS.promptMult, PARAMS.cachedMult,
                PARAMS.completionMult, PARAMS.reasoningMult, PARAMS.proxyDelayBeforeClose,
                PARAMS.clientDelayBeforeClose, PARAMS.minProxyStake, PARAMS.minClientStake]);
        const c = await getter(net, root(), 'get_codes');
        assert.ok(c.readCell().equals(CODES.proxy));
        assert.ok(c.readCell().equals(CODES.client));
        assert.ok(c.readCell().equals(CODES.worker));
        const reg = await registry();
        assert.equal(reg.proxyHashes.size + reg.workerHashes.size + reg.models.size + reg.proxies.size, 0);
        assert.equal(reg.lastProxySeqno, 0);
        assert.equal(await hashValid('is_proxy_hash_valid', H1), false);
        assert.equal(await hashValid('is_worker_hash_valid', H1), false);
        assert.equal(await modelType(H1), null);
    });

    it('adds and deletes worker types', async () => {
        await admin(body.hashOp(OP.add_worker_type, 1, H1));
        assert.equal(await hashValid('is_worker_hash_valid', H1), true);
        assert.equal(await hashValid('is_proxy_hash_valid', H1), false);
        const reg = await registry();
        assert.deepEqual(reg.workerHashes.keys(), [H1]);
        await admin(body.hashOp(OP.del_worker_type, 2, H1));
        assert.equal(await hashValid('is_worker_hash_valid', H1), false);
        // deleting something absent is a no-op (the version still moves)
        await admin(body.hashOp(OP.del_worker_type, 3, H2));
        assert.equal(await version(), 3);
    });

    it('adds and deletes proxy types', async () => {
        await admin(body.hashOp(OP.add_proxy_type, 1, H1));
        await admin(body.hashOp(OP.add_proxy_type, 2, H2));
        assert.equal(await hashValid('is_proxy_hash_valid', H1), true);
        assert.equal(await hashValid('is_proxy_hash_valid', H2), true);
        assert.equal(await hashValid('is_worker_hash_valid', H1), false);
        await admin(body.hashOp(OP.del_proxy_type, 3, H1));
        assert.equal(await hashValid('is_proxy_hash_valid', H1), false);
        assert.equal(await hashValid('is_proxy_hash_valid', H2), true);
        await admin(body.hashOp(OP.del_proxy_type, 4, H1));
    });

    it('adds and deletes model types', async () => {
        await admin(body.addModelType(1, H1, 'qwen3'));
        const name = await modelType(H1);
        assert.equal(name.beginParse().loadStringTail(), 'qwen3');
        assert.ok((await registry()).models.get(H1).equals(stringCell('qwen3')));
        await admin(body.hashOp(OP.del_model_type, 2, H1));
        assert.equal(await modelType(H1), null);
        await admin(body.hashOp(OP.del_model_type, 3, H1));
    });

    it('registers, updates and unregisters proxies, as COCOON reads them', async () => {
        await admin(body.registerProxy(1, ADDR.proxyOwner, '10.0.0.1:8080 10.0.0.1:8081'));
        await admin(body.registerProxy(2, ADDR.stranger, '10.0.0.2:8080'));
        let reg = await registry();
        // seqnos count from 1; the last one given is kept (COCOON's last_proxy_seqno)
        assert.equal(reg.lastProxySeqno, 2);
        const entry = (seq) => {
            const e = reg.proxies.get(seq);
            return [e.kind, e.proxy.toRawString(), e.endpoint];
        };
        assert.deepEqual(entry(1), [false, ADDR.proxyOwner.toRawString(), '10.0.0.1:8080 10.0.0.1:8081']);
        assert.deepEqual(entry(2), [false, ADDR.stranger.toRawString(), '10.0.0.2:8080']);

        await admin(body.updateProxy(3, 1, ADDR.payer, '10.0.0.3:9090'));
        reg = await registry();
        assert.deepEqual(entry(1), [false, ADDR.payer.toRawString(), '10.0.0.3:9090']);
        // updating an unknown seq changes nothing
        await admin(body.updateProxy(4, 7, ADDR.payer, 'x:1'));
        reg = await registry();
        assert.deepEqual(reg.proxies.keys(), [1, 2]);

        await admin(body.unregisterProxy(5, 1));
        reg = await registry();
        assert.deepEqual(reg.proxies.keys(), [2]);
        // unregistering an unknown seq is a no-op; seqs are never reused
        await admin(body.unregisterProxy(6, 1));
        await admin(body.registerProxy(7, ADDR.proxyOwner, 'h:1'));
        reg = await registry();
        assert.deepEqual(reg.proxies.keys(), [2, 3]);
        assert.equal(reg.lastProxySeqno, 3);
    });

    it('refuses an endpoint COCOON cannot read (115): over 121 bytes, or not one flat string', async () => {
        const long = 'a'.repeat(122);
        let res = await send(net, { from: ADDR.rootOwner, to: root(), value: MIN_FEE, body: body.registerProxy(1, ADDR.proxyOwner, long) });
        expectExit(res, root(), ERR.BAD_ENDPOINT);
        const snake = beginCell().storeBuffer(Buffer.from('10.0.0.1:')).storeRef(stringCell('80')).endCell();
        const b = beginCell().storeUint(OP.register_proxy, 32).storeUint(2, 64).storeAddress(ADDR.proxyOwner).storeRef(snake).endCell();
        res = await send(net, { from: ADDR.rootOwner, to: root(), value: MIN_FEE, body: b });
        expectExit(res, root(), ERR.BAD_ENDPOINT);
        assert.equal(await version(), 0);
        // exactly 121 bytes is the longest that fits in a leaf of the dictionary
        await admin(body.registerProxy(3, ADDR.proxyOwner, 'a'.repeat(121)));
        assert.equal((await registry()).proxies.get(1).endpoint.length, 121);
    });

    it('keeps its data in the layout COCOON parses: owner ^registry ^params version', async () => {
        await admin(body.hashOp(OP.add_proxy_type, 1, H1));
        const data = (await net.blockchain.getContract(root())).accountState.state.data;
        const s = data.beginParse();
        assert.ok(s.loadAddress().equals(ADDR.rootOwner));
        const reg = parseRegistry(s.loadRef());
        assert.deepEqual(reg.proxyHashes.keys(), [H1]);
        assert.ok(s.loadRef().equals(rootParamsCell()));
        assert.equal(s.loadUint(32), 1);
        s.endParse();
    });

    it('changes the params; their version moves, the rest of the params stays', async () => {
        const params = { ...PARAMS, pricePerToken: 1n, minClientStake: 0n, reasoningMult: 12_345 };
        await admin(body.changePrice(1, params));
        const p = await getter(net, root(), 'get_params');
        assert.equal(p.readBigNumber(), 1n);
        p.skip(4);
        assert.equal(p.readNumber(), 12_345);
        p.skip(3);
        assert.equal(p.readBigNumber(), 0n);
        const data = (await net.blockchain.getContract(root())).accountState.state.data.beginParse();
        data.loadAddress();
        data.loadRef();
        assert.ok(data.loadRef().equals(rootParamsCell({ params, head: { ...ROOT_PARAMS, paramsVersion: 2 } })));
    });

    it('upgrades the contract codes', async () => {
        const a = beginCell().storeUint(1, 8).endCell();
        const b = beginCell().storeUint(2, 8).endCell();
        const c = beginCell().storeUint(3, 8).endCell();
        await admin(body.upgradeContracts(1, { proxy: a, client: b, worker: c }));
        const r = await getter(net, root(), 'get_codes');
        assert.ok(r.readCell().equals(a));
        assert.ok(r.readCell().equals(b));
        assert.ok(r.readCell().equals(c));
        const data = (await net.blockchain.getContract(root())).accountState.state.data.beginParse();
        data.loadAddress();
        data.loadRef();
        const codes = { proxy: a, client: b, worker: c };
        assert.ok(data.loadRef().equals(rootParamsCell({ codes, head: { ...ROOT_PARAMS, paramsVersion: 2 } })));
    });

    it('changes the owner; the old one is refused after', async () => {
        await admin(body.changeOwner(1, ADDR.stranger));
        assert.ok((await getter(net, root(), 'get_owner')).readAddress().equals(ADDR.stranger));
        const res = await send(net, { from: ADDR.rootOwner, to: root(), value: MIN_FEE, body: body.hashOp(OP.add_worker_type, 2, H1) });
        expectExit(res, root(), ERR.NOT_OWNER);
        await admin(body.hashOp(OP.add_worker_type, 3, H1), { from: ADDR.stranger });
    });

    it('refuses every admin op from anyone but the owner (101)', async () => {
        const bodies = [
            body.hashOp(OP.add_worker_type, 1, H1), body.hashOp(OP.del_worker_type, 1, H1),
            body.hashOp(OP.add_proxy_type, 1, H1), body.hashOp(OP.del_proxy_type, 1, H1),
            body.addModelType(1, H1, 'm'), body.hashOp(OP.del_model_type, 1, H1),
            body.registerProxy(1, ADDR.stranger, 'h:1'), body.unregisterProxy(1, 0),
            body.updateProxy(1, 0, ADDR.stranger, 'h:1'), body.changePrice(1, PARAMS),
            body.upgradeContracts(1, CODES), body.changeOwner(1, ADDR.stranger),
        ];
        for (const b of bodies) {
            const res = await send(net, { from: ADDR.stranger, to: root(), value: MIN_FEE, body: b });
            expectExit(res, root(), ERR.NOT_OWNER);
        }
        assert.equal(await version(), 0);
    });

    it('refuses a value one nanoton under MIN_FEE (106) and takes exactly MIN_FEE', async () => {
        const b = body.hashOp(OP.add_worker_type, 1, H1);
        const res = await send(net, { from: ADDR.rootOwner, to: root(), value: MIN_FEE - 1n, body: b });
        expectExit(res, root(), ERR.LOW_VALUE);
        assert.equal(await version(), 0);
        await admin(b, { value: MIN_FEE });
    });

    it('refuses an unknown op (111) and accepts a plain transfer', async () => {
        let res = await send(net, { from: ADDR.rootOwner, to: root(), value: MIN_FEE, body: body.bare(0xdeadbeef, 1) });
        expectExit(res, root(), ERR.UNKNOWN_OP);
        const before = await balanceOf(net, root());
        res = await send(net, { from: ADDR.stranger, to: root(), value: 1_000_000_000n });
        const tx = expectExit(res, root(), 0);
        assert.equal(await balanceOf(net, root()), before + 1_000_000_000n - tx.description.computePhase.gasFees);
        assert.equal(await version(), 0);
    });
});
