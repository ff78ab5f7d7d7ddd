// Gas report: the compute-phase gas of every operation on each contract it reaches, printed and
// written to build/gas.json. Nothing here asserts an amount of gas; it only checks that every
// operation succeeded (a 1-nanoton state update to the proxy contract runs no code: gas 0).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
    ADDR, CODES, KEYS, MIN_FEE, NOW, OP, PARAMS, body, clientData, exitCode, gasUsed, send, setBalance,
    setup, signedBody, stateInitOf,
} from '../lib/cocoon.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const TON = 1_000_000_000n;

it('gas report', async () => {
    const net = await setup({ proxyStake: 0n, deployRoot: false });
    const names = new Map([
        [net.root.address.toRawString(), 'root'],
        [net.proxy.address.toRawString(), 'proxy'],
        [net.client.address.toRawString(), 'client'],
        [net.worker.address.toRawString(), 'worker'],
    ]);
    const opName = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k]));
    const report = [];

    /** Sends a message and records the gas of every contract transaction it caused. */
    async function measure(operation, msg, { expectFail = false } = {}) {
        const res = await send(net, msg);
        for (const tx of res.transactions) {
            const contract = names.get(tx.inMessage.info.dest.toRawString());
            if (!contract) continue; // a user address: nothing runs there
            const bounced = tx.inMessage.info.bounced;
            const code = exitCode(tx);
            // a client contract's state update comes with 1 nanoton: no code runs (exit null)
            const notice = code === null && tx.inMessage.info.value?.coins === 1n;
            if (!expectFail && !notice) assert.equal(code, 0, `${operation} on ${contract}`);
            const b = tx.inMessage.body.beginParse();
            const inOp = bounced ? 'bounced' : (b.remainingBits >= 32 ? opName[b.loadUint(32)] ?? 'unknown' : 'empty body');
            report.push({ operation, contract, message: inOp, exit_code: code, gas_used: Number(gasUsed(tx)) });
        }
    }

    const { root, proxy, client, worker } = net;
    const admin = (name, b) => measure(name, { from: ADDR.rootOwner, to: root.address, value: MIN_FEE, body: b });
    await measure('deploy root (empty body)', { from: ADDR.rootOwner, to: root.address, value: TON, stateInit: root.init });
    await admin('add_worker_type', body.hashOp(OP.add_worker_type, 0, 1n));
    await admin('del_worker_type', body.hashOp(OP.del_worker_type, 0, 1n));
    await admin('add_proxy_type', body.hashOp(OP.add_proxy_type, 0, 1n));
    await admin('del_proxy_type', body.hashOp(OP.del_proxy_type, 0, 1n));
    await admin('add_model_type', body.addModelType(0, 1n, 'qwen3'));
    await admin('del_model_type', body.hashOp(OP.del_model_type, 0, 1n));
    await admin('register_proxy', body.registerProxy(0, proxy.address, '10.0.0.1:8080'));
    await admin('update_proxy', body.updateProxy(0, 0, proxy.address, '10.0.0.2:8080'));
    await admin('unregister_proxy', body.unregisterProxy(0, 0));
    await admin('change_price', body.changePrice(0, PARAMS));
    await admin('upgrade_contracts', body.upgradeContracts(0, CODES));
    await admin('change_owner', body.changeOwner(0, ADDR.rootOwner));

    await measure('ext_proxy_increase_stake', { from: ADDR.proxyOwner, to: proxy.address, value: 2n * TON + MIN_FEE, body: body.increaseStake(0, 2n * TON) });
    await measure('ext_client_top_up (deploys the client)', {
        from: ADDR.clientOwner, to: client.address, value: 3n * TON + MIN_FEE, body: body.topUp(0, 3n * TON, ADDR.clientOwner), stateInit: client.init,
    });
    await measure('ext_client_top_up', { from: ADDR.payer, to: client.address, value: TON + MIN_FEE, body: body.topUp(0, TON, ADDR.payer) });
    const owner = (name, b) => measure(name, { from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: b });
    await owner('owner_client_increase_stake', body.increaseClientStake(0, PARAMS.minClientStake));
    await owner('owner_client_change_secret_hash', body.changeSecretHash(0, 0xabcn));
    await measure('owner_client_change_secret_hash_and_top_up', { from: ADDR.clientOwner, to: client.address, value: TON + MIN_FEE, body: body.changeSecretHashAndTopUp(0, TON, 0xabcn) });
    await owner('owner_client_register', body.register(0, 0x0123456789abcdefn));
    await owner('owner_client_withdraw', body.withdraw(0));
    const voucher = (name, op, counter, target, { stateInit, expectFail = false } = {}) => measure(
        name, { from: ADDR.payer, to: target, value: MIN_FEE, body: signedBody({ op, counter, target }), stateInit }, { expectFail });
    await voucher('ext_client_charge_signed', OP.ext_client_charge_signed, 1000, client.address);
    await owner('owner_client_request_refund', body.requestRefund(0));
    await measure('owner_client_top_up_reopen', { from: ADDR.clientOwner, to: client.address, value: TON + MIN_FEE, body: body.topUpReopen(0, TON, ADDR.clientOwner) });
    await owner('owner_client_request_refund', body.requestRefund(0));
    net.blockchain.now = NOW + PARAMS.clientDelayBeforeClose;
    await owner('owner_client_request_refund (closes after the delay)', body.requestRefund(0));

    // a second client (another owner) for the grant-refund close
    const client2 = stateInitOf(CODES.client, clientData({ owner: ADDR.payer, proxy: proxy.address, publicKey: KEYS.proxy.publicKey }));
    names.set(client2.address.toRawString(), 'client');
    await measure('ext_client_top_up (deploys the client)', {
        from: ADDR.payer, to: client2.address, value: TON + MIN_FEE, body: body.topUp(0, TON, ADDR.payer), stateInit: client2.init,
    });
    await voucher('ext_client_grant_refund_signed', OP.ext_client_grant_refund_signed, 2000, client2.address);

    await voucher('ext_worker_payout_request_signed (deploys the worker)', OP.ext_worker_payout_request_signed, 1000, worker.address, { stateInit: worker.init });
    await voucher('ext_worker_payout_request_signed', OP.ext_worker_payout_request_signed, 2000, worker.address);
    await setBalance(net, proxy.address, 0n);
    await voucher('ext_worker_payout_request_signed (proxy cannot pay: bounce)', OP.ext_worker_payout_request_signed, 3000, worker.address, { expectFail: true });
    await setBalance(net, proxy.address, 10n * TON);
    await voucher('ext_worker_last_payout_request_signed', OP.ext_worker_last_payout_request_signed, 3000, worker.address);

    await measure('proxy_save_state (do_not_process, with value enough to run)', { from: ADDR.proxyOwner, to: proxy.address, value: MIN_FEE, body: body.saveState(0, 1, 0x1234n) });
    await measure('ext_proxy_payout_request (asked by another wallet: the earnings to the owner, the rest back)', { from: ADDR.stranger, to: proxy.address, value: MIN_FEE, body: body.proxyPayout(0, ADDR.stranger) });
    await voucher('ext_proxy_close_request_signed', OP.ext_proxy_close_request_signed, 0, proxy.address);
    net.blockchain.now += PARAMS.proxyDelayBeforeClose;
    await voucher('ext_proxy_close_complete_request_signed', OP.ext_proxy_close_complete_request_signed, 0, proxy.address);

    // the bounce run above: the proxy refused (112), the worker restored
    const bounceRows = report.filter((r) => r.operation.includes('bounce'));
    assert.deepEqual(bounceRows.map((r) => r.exit_code), [0, 112, 0]);

    const unique = [];
    for (const r of report) {
        if (!unique.some((u) => u.operation === r.operation && u.contract === r.contract && u.message === r.message)) unique.push(r);
    }
    fs.writeFileSync(path.join(here, '..', 'build', 'gas.json'), JSON.stringify(unique, null, 2) + '\n');
    const w = Math.max(...unique.map((r) => r.operation.length));
    console.log('\ngas used (compute phase):');
    for (const r of unique) {
        console.log(`  ${r.operation.padEnd(w)}  ${r.contract.padEnd(6)}  ${r.message.padEnd(40)}  ${String(r.gas_used).padStart(6)}${r.exit_code ? `  (exit ${r.exit_code})` : ''}`);
    }
});
