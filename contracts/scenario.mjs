// Runs one payment scenario in @ton/sandbox and writes test/scenario.json, a cross-check file for
// another executor (the Rust crate): the fixed keys, addresses and config, then each step's
// inbound message (its inputs, its body and the whole message as BOCs) and what it caused.
//   node scenario.mjs          writes test/scenario.json
//   node scenario.mjs --check  regenerates in memory and fails if the committed file differs
import { beginCell, storeMessage, storeStateInit } from '@ton/core';
import { Blockchain, internal } from '@ton/sandbox';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
    ADDR, CODES, KEYS, MIN_FEE, NOW, OP, PARAMS, ROOT_PARAMS, body, contracts, signedBody,
} from './lib/cocoon.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(here, 'test', 'scenario.json');

const TON = 1_000_000_000n;
const boc = (cell) => cell.toBoc().toString('base64');
const raw = (address) => address.toRawString();
const str = (v) => (typeof v === 'bigint' ? v.toString() : v);

export async function runScenario() {
    const blockchain = await Blockchain.create();
    blockchain.now = NOW;
    const { root, proxy, client, worker } = contracts();

    const accounts = {
        root_owner: ADDR.rootOwner,
        proxy_owner: ADDR.proxyOwner,
        client_owner: ADDR.clientOwner,
        worker_owner: ADDR.workerOwner,
        payer: ADDR.payer,
        root: root.address,
        proxy: proxy.address,
        client: client.address,
        worker: worker.address,
    };
    const nameOf = (address) => Object.keys(accounts).find((k) => accounts[k].equals(address)) ?? raw(address);

    const steps = [];
    async function step(name, input, { from, to, value, body: b, init = null, bounce = true }) {
        const message = internal({ from, to, value, body: b, stateInit: init ?? undefined, bounce });
        const res = await blockchain.sendMessage(message);
        const transactions = res.transactions.map((tx) => {
            const cp = tx.description.computePhase;
            return {
                account: raw(tx.inMessage.info.dest),
                account_name: nameOf(tx.inMessage.info.dest),
                in_bounced: tx.inMessage.info.type === 'internal' ? tx.inMessage.info.bounced : false,
                exit_code: cp.type === 'vm' ? cp.exitCode : null,
                aborted: tx.description.aborted,
                gas_used: cp.type === 'vm' ? cp.gasUsed.toString() : null,
                total_fees: tx.totalFees.coins.toString(),
            };
        });
        const balances = {};
        for (const [k, a] of Object.entries(accounts)) {
            balances[k] = (await blockchain.getContract(a)).balance.toString();
        }
        steps.push({
            name,
            now: blockchain.now,
            input,
            message: {
                from: raw(from),
                to: raw(to),
                value: value.toString(),
                bounce,
                body_boc_base64: boc(b),
                state_init_boc_base64: init ? boc(beginCell().store(storeStateInit(init)).endCell()) : null,
                message_boc_base64: boc(beginCell().store(storeMessage(message)).endCell()),
            },
            transactions,
            balances,
        });
    }

    const voucher = (op, counter, target, { key = 'proxy', queryId = 0 } = {}) => ({
        input: { op, query_id: queryId, counter, target: raw(target), key, send_excesses_to: raw(ADDR.payer) },
        body: signedBody({ op: OP[op], queryId, counter, target, key: KEYS[key], sendExcessesTo: ADDR.payer }),
    });
    const signed = async (name, from, to, v, { init = null, value = MIN_FEE } = {}) =>
        step(name, v.input, { from, to, value, body: v.body, init });

    // the network
    await step('deploy_root', { op: null }, {
        from: ADDR.rootOwner, to: root.address, value: TON, body: beginCell().endCell(), init: root.init,
    });
    await step('deploy_proxy_with_stake', { op: 'ext_proxy_increase_stake', query_id: 1, amount: '2000000000' }, {
        from: ADDR.proxyOwner, to: proxy.address, value: 2n * TON + MIN_FEE, body: body.increaseStake(1, 2n * TON), init: proxy.init,
    });
    await step('proxy_increase_stake', { op: 'ext_proxy_increase_stake', query_id: 2, amount: '1000000000' }, {
        from: ADDR.proxyOwner, to: proxy.address, value: TON + MIN_FEE, body: body.increaseStake(2, TON),
    });

    // a client pays in and uses the service
    await step('client_top_up_deploy', { op: 'ext_client_top_up', query_id: 3, amount: '5000000000', send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: 5n * TON + MIN_FEE,
        body: body.topUp(3, 5n * TON, ADDR.clientOwner), init: client.init,
    });
    await step('client_increase_stake', { op: 'owner_client_increase_stake', query_id: 4, new_stake: '1000000000', send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: body.increaseClientStake(4, TON, ADDR.clientOwner),
    });
    await step('client_change_secret_hash_and_top_up', { op: 'owner_client_change_secret_hash_and_top_up', query_id: 21, amount: '1000000000', secret_hash: '0xfeed', send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: TON + MIN_FEE, body: body.changeSecretHashAndTopUp(21, TON, 0xfeedn, ADDR.clientOwner),
    });
    await signed('charge_1', ADDR.payer, client.address, voucher('ext_client_charge_signed', 10_000, client.address, { queryId: 5 }));
    await signed('charge_2', ADDR.payer, client.address, voucher('ext_client_charge_signed', 25_000, client.address, { queryId: 6 }));
    await signed('charge_replayed', ADDR.payer, client.address, voucher('ext_client_charge_signed', 25_000, client.address, { queryId: 7 }));
    await signed('charge_backwards', ADDR.payer, client.address, voucher('ext_client_charge_signed', 20_000, client.address, { queryId: 8 }));
    await signed('charge_bad_signature', ADDR.payer, client.address, voucher('ext_client_charge_signed', 30_000, client.address, { queryId: 9, key: 'other' }));
    await signed('charge_wrong_target', ADDR.payer, client.address, voucher('ext_client_charge_signed', 30_000, worker.address, { queryId: 10 }));

    // a worker is paid
    await signed('worker_payout_deploy', ADDR.payer, worker.address, voucher('ext_worker_payout_request_signed', 20_000, worker.address, { queryId: 11 }), { init: worker.init });
    await signed('worker_payout_replayed', ADDR.payer, worker.address, voucher('ext_worker_payout_request_signed', 20_000, worker.address, { queryId: 12 }));
    // COCOON's save_state: do_not_process from the owner's wallet with 1 nanoton (no code runs)
    await step('proxy_save_state', { op: 'proxy_save_state', query_id: 13, seqno: 1, state_hash: '0x5eed' }, {
        from: ADDR.proxyOwner, to: proxy.address, value: 1n, body: body.saveState(13, 1, 0x5eedn), bounce: false,
    });

    // the client leaves
    await step('client_withdraw', { op: 'owner_client_withdraw', query_id: 14, send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: body.withdraw(14, ADDR.clientOwner),
    });
    await step('client_request_refund', { op: 'owner_client_request_refund', query_id: 15, send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: body.requestRefund(15, ADDR.clientOwner),
    });
    await step('client_close_too_early', { op: 'owner_client_request_refund', query_id: 16, send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: body.requestRefund(16, ADDR.clientOwner),
    });
    blockchain.now = NOW + PARAMS.clientDelayBeforeClose;
    await step('client_close', { op: 'owner_client_request_refund', query_id: 17, send_excesses_to: raw(ADDR.clientOwner) }, {
        from: ADDR.clientOwner, to: client.address, value: MIN_FEE, body: body.requestRefund(17, ADDR.clientOwner),
    });

    // the proxy closes
    await signed('proxy_close_request', ADDR.payer, proxy.address, voucher('ext_proxy_close_request_signed', 0, proxy.address, { queryId: 18 }));
    await signed('proxy_close_complete_too_early', ADDR.payer, proxy.address, voucher('ext_proxy_close_complete_request_signed', 0, proxy.address, { queryId: 19 }));
    blockchain.now = NOW + PARAMS.clientDelayBeforeClose + PARAMS.proxyDelayBeforeClose;
    await signed('proxy_close_complete', ADDR.payer, proxy.address, voucher('ext_proxy_close_complete_request_signed', 0, proxy.address, { queryId: 20 }));

    const scenario = {
        description: 'Cocoon payment scenario run in @ton/sandbox 0.41.0 with the contracts in build/. ' +
            'Each step sends message_boc_base64 at `now`; transactions are in the order the sandbox ran them; ' +
            'balances (nanotons) are read after the step.',
        start_now: NOW,
        keys: {
            proxy: { seed_hex: KEYS.proxy.seed.toString('hex'), public_key_hex: KEYS.proxy.publicKey.toString('hex') },
            other: { seed_hex: KEYS.other.seed.toString('hex'), public_key_hex: KEYS.other.publicKey.toString('hex') },
        },
        addresses: Object.fromEntries(Object.entries(accounts).map(([k, a]) => [k, raw(a)])),
        code_hashes: Object.fromEntries(Object.entries(CODES).map(([k, c]) => [k, c.hash().toString('hex')])),
        params: Object.fromEntries(Object.entries(PARAMS).map(([k, v]) => [k, str(v)])),
        root_params: ROOT_PARAMS,
        initial_data_boc_base64: {
            root: boc(root.init.data),
            proxy: boc(proxy.init.data),
            client: boc(client.init.data),
            worker: boc(worker.init.data),
        },
        config_boc_base64: blockchain.configBase64,
        steps,
    };
    return JSON.stringify(scenario, null, 2) + '\n';
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    const text = await runScenario();
    if (process.argv.includes('--check')) {
        const old = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf8') : null;
        if (old !== text) {
            console.error('test/scenario.json differs from the scenario run (run: node scenario.mjs)');
            process.exit(1);
        }
        console.log('test/scenario.json is up to date');
    } else {
        fs.writeFileSync(OUT, text);
        console.log(`wrote test/scenario.json (${JSON.parse(text).steps.length} steps)`);
    }
}
