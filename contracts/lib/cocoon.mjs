// Test and scenario helpers: the SPEC.md layouts written from the JS side (storage cells,
// message bodies, vouchers), fixed keys and addresses, and a small sandbox harness.
// Everything here is deterministic: fixed seeds, fixed addresses, fixed blockchain time.
import { Address, beginCell, Cell, contractAddress, Dictionary } from '@ton/core';
import { keyPairFromSeed, sign } from '@ton/crypto';
import { Blockchain, internal } from '@ton/sandbox';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/* Codes: the committed build outputs (`node build.mjs --check` keeps them equal to the source). */

export function loadCode(name) {
    return Cell.fromBoc(fs.readFileSync(path.join(here, '..', 'build', `${name}.boc`)))[0];
}

export const CODES = {
    root: loadCode('root'),
    proxy: loadCode('proxy'),
    client: loadCode('client'),
    worker: loadCode('worker'),
};

/* Constants of SPEC.md. */

export const MIN_FEE = 50_000_000n;

export const ERR = {
    NOT_OWNER: 101,
    BAD_SIGNATURE: 102,
    WRONG_TARGET: 103,
    REPLAYED: 104,
    BACKWARDS: 105,
    LOW_VALUE: 106,
    BELOW_STAKE: 107,
    STAKE_TOO_LOW: 108,
    WRONG_STATE: 109,
    TOO_EARLY: 110,
    UNKNOWN_OP: 111,
    NO_FUNDS: 112,
    WRONG_OP: 113,
    BAD_ENDPOINT: 115,
};

export const OP = {
    excesses: 0x2565934c,
    // root
    add_worker_type: 0xe34b1c60,
    del_worker_type: 0x8d94a79a,
    add_proxy_type: 0x71860e80,
    del_proxy_type: 0x3c41d0b2,
    add_model_type: 0x5d1b2a31,
    del_model_type: 0x6e2c3b42,
    register_proxy: 0x927c7cb5,
    unregister_proxy: 0x6d49eaf2,
    update_proxy: 0x9c7924ba,
    change_price: 0xc52ed8d4,
    upgrade_contracts: 0xa2370f61,
    change_owner: 0x7f4a2c15,
    // proxy
    ext_proxy_increase_stake: 0x9713f187,
    proxy_save_state: 0x53109c0f,
    do_not_process: 0x9a1247c0,
    client_proxy_top_up: 0x5cfc6b87,
    client_proxy_register: 0xa35cb580,
    client_proxy_request: 0x65448ff4,
    client_proxy_refund_granted: 0xc68ebc7b,
    client_proxy_refund_force: 0xf4c354c9,
    worker_proxy_payout_request: 0x08e7d036,
    ext_proxy_payout_request: 0x7610e6eb,
    owner_proxy_close: 0xb51d5a01,
    ext_proxy_close_request_signed: 0x636a4391,
    ext_proxy_close_complete_request_signed: 0xe511abc7,
    // client
    ext_client_top_up: 0xf172e6c2,
    owner_client_top_up_reopen: 0x29111ceb,
    owner_client_increase_stake: 0x6a1f6a60,
    owner_client_withdraw: 0xda068e78,
    owner_client_change_secret_hash: 0xa9357034,
    owner_client_change_secret_hash_and_top_up: 0x8473b408,
    owner_client_register: 0xc45f9f3b,
    owner_client_request_refund: 0xfafa6cc1,
    ext_client_charge_signed: 0xbb63ff93,
    ext_client_grant_refund_signed: 0xefd711e1,
    // worker
    ext_worker_payout_request_signed: 0xa040ad28,
    ext_worker_last_payout_request_signed: 0xf5f26a36,
};

/* Fixed keys and addresses. */

export const NOW = 1_800_000_000;

/** An Ed25519 key pair from a 32-byte seed made of one repeated byte. */
export function seedKey(byte) {
    const seed = Buffer.alloc(32, byte);
    return { seed, ...keyPairFromSeed(seed) };
}

/** A fixed basechain address whose hash is one repeated byte. */
export function fixedAddress(byte) {
    return new Address(0, Buffer.alloc(32, byte));
}

export const KEYS = {
    proxy: seedKey(0x01), // the proxy key that signs vouchers
    other: seedKey(0x02), // a key nobody trusts
};

export const ADDR = {
    rootOwner: fixedAddress(0xa1),
    proxyOwner: fixedAddress(0xa2),
    clientOwner: fixedAddress(0xa3),
    workerOwner: fixedAddress(0xa4),
    stranger: fixedAddress(0xa5),
    payer: fixedAddress(0xa6), // pays for top-ups and vouchers on someone else's behalf
};

export const PARAMS = {
    pricePerToken: 20_000n,
    workerFeePerToken: 15_000n,
    promptMult: 10_000,
    cachedMult: 1_000,
    completionMult: 40_000,
    reasoningMult: 40_000,
    proxyDelayBeforeClose: 7_200,
    clientDelayBeforeClose: 3_600,
    minProxyStake: 1_000_000_000n,
    minClientStake: 500_000_000n,
};

/* Storage layouts. */

export function paramsCell(p) {
    return beginCell()
        .storeCoins(p.pricePerToken)
        .storeCoins(p.workerFeePerToken)
        .storeUint(p.promptMult, 32)
        .storeUint(p.cachedMult, 32)
        .storeUint(p.completionMult, 32)
        .storeUint(p.reasoningMult, 32)
        .storeUint(p.proxyDelayBeforeClose, 32)
        .storeUint(p.clientDelayBeforeClose, 32)
        .storeCoins(p.minProxyStake)
        .storeCoins(p.minClientStake)
        .endCell();
}

export function rootCodesCell(codes = CODES) {
    return beginCell().storeRef(codes.proxy).storeRef(codes.client).storeRef(codes.worker).endCell();
}

/** The registry, empty: proxy hashes, proxies, last proxy seqno, worker hashes, models. */
export function emptyRegistryCell() {
    return beginCell().storeBit(0).storeBit(0).storeUint(0, 32).storeBit(0).storeBit(0).endCell();
}

/** What the root keeps beside the registry: the params in COCOON's layout (struct version 3). */
export const ROOT_PARAMS = { structVersion: 3, paramsVersion: 1, uniqueId: 7, isTest: true };

/** COCOON's params cell: struct version 3, the prices and rules, a maybe-ref per code. */
export function rootParamsCell({ params = PARAMS, codes = CODES, head = ROOT_PARAMS } = {}) {
    return beginCell()
        .storeUint(head.structVersion, 8)
        .storeUint(head.paramsVersion, 32)
        .storeUint(head.uniqueId, 32)
        .storeBit(head.isTest)
        // in struct version 3 the prices and rules are `Params`, field for field
        .storeSlice(paramsCell(params).beginParse())
        .storeMaybeRef(codes.proxy)
        .storeMaybeRef(codes.worker)
        .storeMaybeRef(codes.client)
        .endCell();
}

/** The root's data as COCOON's runners parse it: `owner ^registry ^params version:uint32`. */
export function rootData({ owner, params = PARAMS, codes = CODES }) {
    return beginCell()
        .storeAddress(owner)
        .storeRef(emptyRegistryCell())
        .storeRef(rootParamsCell({ params, codes }))
        .storeUint(0, 32)
        .endCell();
}

export function proxyData({ owner, publicKey, root, params = PARAMS, codes = CODES }) {
    return beginCell()
        .storeAddress(owner)
        .storeBuffer(publicKey, 32)
        .storeAddress(root)
        .storeUint(0, 2)
        .storeCoins(0n)
        .storeCoins(0n)
        .storeUint(0, 32)
        // COCOON's params cell with the worker's and client's code, as its proxy contract keeps it
        .storeRef(rootParamsCell({ params, codes: { proxy: null, worker: codes.worker, client: codes.client } }))
        .endCell();
}

/**
 * COCOON's client contract data (ClientContract.cpp): state 0, balance 0, stake = the minimum
 * client stake, tokens 0, unlock 0, secret hash 0, ^(owner proxy key), ^params without code.
 */
export function clientData({ owner, proxy, publicKey, params = PARAMS }) {
    return beginCell()
        .storeUint(0, 2)
        .storeCoins(0n)
        .storeCoins(params.minClientStake)
        .storeUint(0, 64)
        .storeUint(0, 32)
        .storeUint(0, 256)
        .storeRef(beginCell().storeAddress(owner).storeAddress(proxy).storeBuffer(publicKey, 32).endCell())
        .storeRef(rootParamsCell({ params, codes: {} }))
        .endCell();
}

/** COCOON's worker contract data (WorkerContract.cpp): owner, proxy, key, state 0, tokens 0, ^params without code. */
export function workerData({ owner, proxy, publicKey, params = PARAMS }) {
    return beginCell()
        .storeAddress(owner)
        .storeAddress(proxy)
        .storeBuffer(publicKey, 32)
        .storeUint(0, 2)
        .storeUint(0, 64)
        .storeRef(rootParamsCell({ params, codes: {} }))
        .endCell();
}

/** StateInit and address of a contract: code + data, workchain 0. */
export function stateInitOf(code, data) {
    const init = { code, data };
    return { init, address: contractAddress(0, init) };
}

/* Message bodies. */

const head = (op, queryId) => beginCell().storeUint(op, 32).storeUint(queryId, 64);

export const body = {
    // root
    hashOp: (op, queryId, hash) => head(op, queryId).storeUint(hash, 256).endCell(),
    addModelType: (queryId, hash, name) =>
        head(OP.add_model_type, queryId).storeUint(hash, 256).storeRef(stringCell(name)).endCell(),
    registerProxy: (queryId, proxy, endpoint) =>
        head(OP.register_proxy, queryId).storeAddress(proxy).storeRef(stringCell(endpoint)).endCell(),
    unregisterProxy: (queryId, seq) => head(OP.unregister_proxy, queryId).storeUint(seq, 32).endCell(),
    updateProxy: (queryId, seq, proxy, endpoint) =>
        head(OP.update_proxy, queryId).storeUint(seq, 32).storeAddress(proxy).storeRef(stringCell(endpoint)).endCell(),
    changePrice: (queryId, params) => head(OP.change_price, queryId).storeRef(paramsCell(params)).endCell(),
    upgradeContracts: (queryId, codes) => head(OP.upgrade_contracts, queryId).storeRef(rootCodesCell(codes)).endCell(),
    changeOwner: (queryId, owner) => head(OP.change_owner, queryId).storeAddress(owner).endCell(),
    // proxy
    increaseStake: (queryId, amount) => head(OP.ext_proxy_increase_stake, queryId).storeCoins(amount).endCell(),
    // COCOON's save_state: do_not_process query_id proxy_save_state seqno:uint32 hash:uint256
    saveState: (queryId, seqno, hash) => head(OP.do_not_process, queryId)
        .storeUint(OP.proxy_save_state, 32).storeUint(seqno, 32).storeUint(hash, 256).endCell(),
    /** COCOON's runner writes it without a query id: `op send_excesses_to`. */
    ownerProxyClose: (sendExcessesTo = ADDR.proxyOwner) =>
        beginCell().storeUint(OP.owner_proxy_close, 32).storeAddress(sendExcessesTo).endCell(),
    proxyPayout: (queryId, sendExcessesTo = ADDR.proxyOwner) =>
        head(OP.ext_proxy_payout_request, queryId).storeAddress(sendExcessesTo).endCell(),
    // client
    topUp: (queryId, amount, sendExcessesTo) =>
        head(OP.ext_client_top_up, queryId).storeCoins(amount).storeAddress(sendExcessesTo).endCell(),
    changeSecretHashAndTopUp: (queryId, amount, hash, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_change_secret_hash_and_top_up, queryId).storeCoins(amount).storeUint(hash, 256)
            .storeAddress(sendExcessesTo).endCell(),
    topUpReopen: (queryId, amount, sendExcessesTo) =>
        head(OP.owner_client_top_up_reopen, queryId).storeCoins(amount).storeAddress(sendExcessesTo).endCell(),
    increaseClientStake: (queryId, newStake, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_increase_stake, queryId).storeCoins(newStake).storeAddress(sendExcessesTo).endCell(),
    withdraw: (queryId, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_withdraw, queryId).storeAddress(sendExcessesTo).endCell(),
    changeSecretHash: (queryId, hash, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_change_secret_hash, queryId).storeUint(hash, 256).storeAddress(sendExcessesTo).endCell(),
    register: (queryId, nonce, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_register, queryId).storeUint(nonce, 64).storeAddress(sendExcessesTo).endCell(),
    requestRefund: (queryId, sendExcessesTo = ADDR.clientOwner) =>
        head(OP.owner_client_request_refund, queryId).storeAddress(sendExcessesTo).endCell(),
    // any op with nothing after query_id
    bare: (op, queryId) => head(op, queryId).endCell(),
};

/** A snake string: bytes in the first cell's data (at most 127 bytes here). */
export function stringCell(text) {
    const bytes = Buffer.from(text, 'utf8');
    if (bytes.length > 127) throw new Error('stringCell: keep test strings short');
    return beginCell().storeBuffer(bytes).endCell();
}

/** The voucher payload: `op query_id counter:uint64 target:address`. */
export function voucherPayload({ op, queryId = 0, counter, target }) {
    return beginCell().storeUint(op, 32).storeUint(queryId, 64).storeUint(counter, 64).storeAddress(target).endCell();
}

/**
 * A signed message in COCOON's form, `op query_id send_excesses_to:address signature:bits512
 * payload:^Cell`. `payloadOp` and `payloadQueryId` default to the message's (set them to forge a
 * voucher of another op or query); `key` defaults to the proxy key; `sendExcessesTo` is outside
 * the signature.
 */
export function signedBody({
    op, queryId = 0, counter, target, key = KEYS.proxy, payloadOp = op,
    payloadQueryId = queryId, sendExcessesTo = ADDR.payer,
}) {
    const payload = voucherPayload({ op: payloadOp, queryId: payloadQueryId, counter, target });
    const signature = sign(payload.hash(), key.secretKey);
    return beginCell().storeUint(op, 32).storeUint(queryId, 64).storeAddress(sendExcessesTo)
        .storeBuffer(signature).storeRef(payload).endCell();
}

/* Registry dictionaries as @ton/core sees them. */

export const emptyValue = {
    serialize: () => {},
    parse: () => true,
};

export const refValue = {
    serialize: (v, b) => b.storeRef(v),
    parse: (s) => s.loadRef(),
};

/** A proxy entry as COCOON reads it (`0:1 len:7 bytes`), and ours after it (^address). */
export const proxyEntryValue = {
    serialize: () => { throw new Error('read only'); },
    parse: (s) => {
        const kind = s.loadBit();
        const len = s.loadUint(7);
        const endpoint = s.loadBuffer(len).toString('utf8');
        const proxy = s.loadRef().beginParse().loadAddress();
        s.endParse();
        return { kind, endpoint, proxy };
    },
};

/** The registry in the order COCOON's runners read it. */
export function parseRegistry(cell) {
    const s = cell.beginParse();
    const proxyHashes = s.loadDict(Dictionary.Keys.BigUint(256), emptyValue);
    const proxies = s.loadDict(Dictionary.Keys.Uint(32), proxyEntryValue);
    const lastProxySeqno = s.loadUint(32);
    const workerHashes = s.loadDict(Dictionary.Keys.BigUint(256), emptyValue);
    const models = s.loadDict(Dictionary.Keys.BigUint(256), refValue);
    s.endParse();
    return { proxyHashes, workerHashes, models, proxies, lastProxySeqno };
}

/* Sandbox harness. */

/**
 * The fixed network's contracts (state init and address of each): the root of the fixed
 * owner, the proxy of the fixed proxy owner and key, and the client and worker contracts of
 * the fixed client and worker owners at that proxy.
 */
export function contracts(params = PARAMS) {
    const publicKey = KEYS.proxy.publicKey;
    const root = stateInitOf(CODES.root, rootData({ owner: ADDR.rootOwner, params }));
    const proxy = stateInitOf(CODES.proxy, proxyData({ owner: ADDR.proxyOwner, publicKey, root: root.address, params }));
    const client = stateInitOf(CODES.client, clientData({ owner: ADDR.clientOwner, proxy: proxy.address, publicKey, params }));
    const worker = stateInitOf(CODES.worker, workerData({ owner: ADDR.workerOwner, proxy: proxy.address, publicKey, params }));
    return { root, proxy, client, worker };
}

/**
 * A blockchain at the fixed time with the whole network deployed from the fixed owners:
 * root, a proxy contract with a stake, and the addresses (not yet deployed) of the client and
 * worker contracts of the fixed client and worker owners.
 */
export async function setup({ proxyStake = 0n, deployRoot = true, params = PARAMS } = {}) {
    const blockchain = await Blockchain.create();
    blockchain.now = NOW;
    const net = { blockchain, ...contracts(params) };
    const { root, proxy } = net;
    if (deployRoot) {
        await send(net, { from: ADDR.rootOwner, to: root.address, value: 1_000_000_000n, stateInit: root.init });
    }
    // the proxy contract is deployed by its first message: an increase of the stake
    await send(net, {
        from: ADDR.proxyOwner, to: proxy.address, value: proxyStake + MIN_FEE,
        body: body.increaseStake(0, proxyStake), stateInit: proxy.init,
    });
    return net;
}

/** Sends one internal message (bounceable unless said) and returns the sandbox result. */
export async function send(net, { from, to, value, body: b = beginCell().endCell(), stateInit, bounce = true }) {
    return net.blockchain.sendMessage(internal({ from, to, value, body: b, stateInit, bounce }));
}

/** The transaction on `address` (the first one when the message chain visits it twice). */
export function txOn(res, address, nth = 0) {
    const all = res.transactions.filter((t) => t.inMessage?.info.dest?.equals?.(address));
    if (!all[nth]) throw new Error(`no transaction #${nth} on ${address}`);
    return all[nth];
}

/** Compute phase exit code of a transaction (null when skipped). */
export function exitCode(tx) {
    const cp = tx.description.computePhase;
    return cp.type === 'vm' ? cp.exitCode : null;
}

export function gasUsed(tx) {
    const cp = tx.description.computePhase;
    return cp.type === 'vm' ? cp.gasUsed : 0n;
}

/** Internal messages a transaction sent: [{ to, value, body, bounce }]. */
export function outMessages(tx) {
    return [...tx.outMessages.values()]
        .filter((m) => m.info.type === 'internal')
        .map((m) => ({ to: m.info.dest, value: m.info.value.coins, body: m.body, bounce: m.info.bounce, fwdFee: m.info.forwardFee }));
}

export async function balanceOf(net, address) {
    return (await net.blockchain.getContract(address)).balance;
}

/** Runs a get-method and returns its TupleReader. */
export async function getter(net, address, method, args = []) {
    const res = await net.blockchain.runGetMethod(address, method, args);
    if (res.exitCode !== 0) throw new Error(`${method} exited with ${res.exitCode}`);
    return res.stackReader;
}

export async function proxyData_(net) {
    const r = await getter(net, net.proxy.address, 'get_proxy_data');
    return {
        owner: r.readAddress(),
        publicKey: r.readBigNumber(),
        root: r.readAddress(),
        state: r.readNumber(),
        earnings: r.readBigNumber(),
        stake: r.readBigNumber(),
        closeUnlockTs: r.readNumber(),
    };
}

/**
 * COCOON's `client_proxy_request` as a test reads it: the client owner, the client's state and
 * the payload's op (null without one) with the slice after it.
 */
export function parseClientRequest(cell) {
    const s = cell.beginParse();
    const op = s.loadUint(32);
    const queryId = s.loadUintBig(64);
    const owner = s.loadAddress();
    const st = s.loadRef().beginParse();
    const state = {
        state: st.loadUint(2),
        balance: st.loadCoins(),
        stake: st.loadCoins(),
        tokensUsed: st.loadUintBig(64),
        secretHash: st.loadUintBig(256),
    };
    if (st.remainingBits !== 0 || st.remainingRefs !== 0) throw new Error('state cell longer than COCOON reads');
    const payload = s.loadMaybeRef();
    if (s.remainingBits !== 0 || s.remainingRefs !== 0) throw new Error('envelope longer than COCOON reads');
    let inner = null;
    if (payload) {
        const p = payload.beginParse();
        inner = { op: p.loadUint(32), rest: p };
    }
    return { op, queryId, owner, state, payload: inner };
}

export async function clientData_(net, address = net.client.address) {
    const r = await getter(net, address, 'get_client_data');
    return {
        state: r.readNumber(),
        balance: r.readBigNumber(),
        stake: r.readBigNumber(),
        tokensUsed: r.readBigNumber(),
        unlockTs: r.readNumber(),
        secretHash: r.readBigNumber(),
        owner: r.readAddress(),
        proxy: r.readAddress(),
        publicKey: r.readBigNumber(),
        pricePerToken: r.readBigNumber(),
        clientDelay: r.readNumber(),
        minClientStake: r.readBigNumber(),
    };
}

export async function workerData_(net, address = net.worker.address) {
    const r = await getter(net, address, 'get_worker_data');
    return {
        state: r.readNumber(),
        tokensPaid: r.readBigNumber(),
        workerFeePerToken: r.readBigNumber(),
        owner: r.readAddress(),
        proxy: r.readAddress(),
        publicKey: r.readBigNumber(),
    };
}

export const bigKey = (buf) => BigInt('0x' + buf.toString('hex'));

/** Storage fee a transaction paid (0 while the time stands still). */
export function storageFee(tx) {
    return tx.description.storagePhase?.storageFeesCollected ?? 0n;
}

/**
 * Asserts the compute exit code of the (first) transaction on `address` and returns it.
 * For a refusal the transaction is aborted and, for a bounceable message, bounced.
 */
export function expectExit(res, address, code, nth = 0) {
    const tx = txOn(res, address, nth);
    const got = exitCode(tx);
    if (got !== code) {
        throw new Error(`expected exit ${code} on ${address}, got ${got}`);
    }
    if ((code === 0) === tx.description.aborted) {
        throw new Error(`exit ${code} on ${address} but aborted = ${tx.description.aborted}`);
    }
    return tx;
}

/** The message `tx` sent to `to`, an `excesses` with `queryId` (the rest of a value handed back). */
export function expectExcess(tx, to, queryId) {
    const excess = outMessages(tx).find((m) => m.to.equals(to));
    if (!excess?.to.equals(to)) throw new Error(`expected the excesses to go to ${to}, got ${excess?.to}`);
    const got = opOf(excess.body);
    if (got.op !== OP.excesses || got.queryId !== BigInt(queryId)) {
        throw new Error(`expected excesses#${OP.excesses.toString(16)} with query ${queryId}, got ${got.op.toString(16)} with ${got.queryId}`);
    }
    return excess;
}

/** The op and query_id of a message body. */
export function opOf(cell) {
    const s = cell.beginParse();
    return { op: s.loadUint(32), queryId: s.loadUintBig(64) };
}

/* Bodies of the contract-to-contract messages (to drive the proxy directly in tests). */

export const internalBody = {
    /** COCOON's client state cell. */
    clientState: ({ state = 0, balance = 0n, stake = 0n, tokensUsed = 0n, secretHash = 0n } = {}) =>
        beginCell().storeUint(state, 2).storeCoins(balance).storeCoins(stake).storeUint(tokensUsed, 64)
            .storeUint(secretHash, 256).endCell(),
    /** `client_proxy_request` with `payload` (a cell, or null for a state update). */
    clientRequest: (queryId, clientOwner, payload = null, state = {}) =>
        head(OP.client_proxy_request, queryId).storeAddress(clientOwner)
            .storeRef(internalBody.clientState(state)).storeMaybeRef(payload).endCell(),
    topUp: (queryId, clientOwner, amount, sendExcessesTo) =>
        internalBody.clientRequest(queryId, clientOwner,
            beginCell().storeUint(OP.client_proxy_top_up, 32).storeCoins(amount).storeAddress(sendExcessesTo).endCell()),
    register: (queryId, clientOwner, nonce) =>
        internalBody.clientRequest(queryId, clientOwner,
            beginCell().storeUint(OP.client_proxy_register, 32).storeUint(nonce, 64).endCell()),
    refund: (op, queryId, clientOwner, amount, sendTo) =>
        internalBody.clientRequest(queryId, clientOwner,
            beginCell().storeUint(op, 32).storeCoins(amount).storeAddress(sendTo).endCell()),
    payout: (queryId, oldTokens, newTokens, workerOwner, amount) =>
        head(OP.worker_proxy_payout_request, queryId).storeUint(oldTokens, 64).storeUint(newTokens, 64)
            .storeAddress(workerOwner).storeCoins(amount).endCell(),
};

/** Sets an account's balance (to put the proxy in an exact money position). */
export async function setBalance(net, address, value) {
    const c = await net.blockchain.getContract(address);
    c.balance = value;
}

/** Deploys the client contract of the fixed client owner by a top-up of `amount`. */
export async function deployClient(net, amount, { from = ADDR.clientOwner } = {}) {
    const res = await send(net, {
        from, to: net.client.address, value: amount + MIN_FEE,
        body: body.topUp(0, amount, from), stateInit: net.client.init,
    });
    expectExit(res, net.client.address, 0);
    expectExit(res, net.proxy.address, 0);
    return res;
}
