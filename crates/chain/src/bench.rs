//! Throughput of the local chain (`cocoon bench chain`, or without building the whole CLI:
//! `cargo run --release -p cocoon-chain --example bench_chain`).
//!
//! Three workloads on one in-memory chain, every message built and signed before the clock
//! starts: plain value transfers into one wallet (the baseline: one cheap transaction each),
//! signed wallet-to-wallet transfers (an external message and the transfer it sends), and
//! payment vouchers (a client contract's charge and the proxy contract's bookkeeping).

use std::time::Instant;

use serde_json::{json, Value};

use crate::contracts::{address_of, ContractCodes, Params, ProxyInit, RootData};
use crate::error::Result;
use crate::keys::Keypair;
use crate::local::{Clock, GenesisSpec, LocalChain, FAUCET};
use crate::messages::{self, op, MIN_FEE};
use crate::voucher::Voucher;
use crate::wallet::OutMessage;
use crate::TON;

fn rate(txs: usize, secs: f64) -> f64 {
    txs as f64 / secs
}

/// Runs the three workloads with `n` messages each and reports transactions per second.
pub fn run(n: usize) -> Result<Value> {
    let n = n.max(1);
    let mut chain = LocalChain::new(Clock::Fixed { now: 1_800_000_000 })?;
    let spec = GenesisSpec {
        params: Params::local_default(),
        wallets: vec![
            ("proxy".into(), 1_000 * TON),
            ("client".into(), 1_000_000 * TON),
            ("sink".into(), TON),
        ],
        proxy_hashes: vec![],
        worker_hashes: vec![],
        models: vec![],
    };
    let genesis = chain.genesis(&spec)?;
    let sink = genesis.wallet("sink")?.address;

    // Baseline: plain transfers (one transaction each).
    let started = Instant::now();
    let mut txs = 0;
    for _ in 0..n {
        txs += chain
            .send_internal(FAUCET, sink, 1, false, None, None)?
            .transactions
            .len();
    }
    let baseline = rate(txs, started.elapsed().as_secs_f64());

    // Signed wallet transfers: pre-sign n transfers with consecutive seqnos.
    let (keys, wallet) = genesis.wallet("client")?.open()?;
    let seqno0 = chain.get(&wallet.address()?, "seqno", vec![])?[0].as_u128()? as u32;
    let valid_until = chain.now() + 3600;
    let transfers = (0..n as u32)
        .map(|i| {
            wallet.transfer_message(
                &keys,
                seqno0 + i,
                valid_until,
                &[OutMessage::transfer(sink, 1, None)],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut wallet_txs = 0;
    for m in transfers {
        wallet_txs += chain.send_external(m)?.transactions.len();
    }
    let wallet_rate = rate(wallet_txs, started.elapsed().as_secs_f64());

    // Payment vouchers: deploy a proxy and a client contract, then charge one token at a time.
    let codes = ContractCodes::embedded();
    let root = chain.account(&genesis.root)?;
    let root = RootData::parse(root.data.as_ref().unwrap(), root.code.as_ref().unwrap())?;
    let proxy_key = Keypair::from_seed([7; 32]);
    let proxy_init = ProxyInit {
        owner: genesis.wallet("proxy")?.address,
        proxy_public_key: proxy_key.public_key(),
        root: genesis.root,
        params: root.params.clone(),
        head: root.head,
        client_code: codes.client.clone(),
        worker_code: codes.worker.clone(),
    };
    let proxy = address_of(&proxy_init.state_init(&codes.proxy)?)?;
    let client_owner = genesis.wallet("client")?.address;
    let client_init = proxy_init.client_state_init(proxy, client_owner)?;
    let client = address_of(&client_init)?;
    let stake = messages::proxy::increase_stake(0, TON)?;
    chain.send_internal(
        proxy_init.owner,
        proxy,
        TON + MIN_FEE,
        false,
        Some(stake),
        Some(proxy_init.state_init(&codes.proxy)?),
    )?;
    let top_up = messages::client::top_up(0, 100_000 * TON, &client_owner)?;
    chain.send_internal(
        client_owner,
        client,
        100_000 * TON + MIN_FEE,
        false,
        Some(top_up),
        Some(client_init),
    )?;
    let vouchers = (1..=n as u64)
        .map(|i| {
            Voucher {
                op: op::CLIENT_CHARGE_SIGNED,
                query_id: i,
                counter: i,
                target: client,
            }
            .sign(&proxy_key, client_owner)?
            .body()
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut payment_txs = 0;
    for body in vouchers {
        let trace = chain.send_internal(client_owner, client, MIN_FEE, true, Some(body), None)?;
        debug_assert!(trace.all_succeeded());
        payment_txs += trace.transactions.len();
    }
    let payment_rate = rate(payment_txs, started.elapsed().as_secs_f64());
    let charged = crate::contracts::ClientData::parse(&chain.data(&client)?)?.tokens_used;
    assert_eq!(charged, n as u64, "every voucher was applied");

    Ok(json!({
        "bench": "chain",
        "messages_per_workload": n,
        "baseline_plain_transfer_tx_per_s": baseline,
        "wallet_transfer_tx_per_s": wallet_rate,
        "payment_voucher_tx_per_s": payment_rate,
        "wallet_vs_baseline": wallet_rate / baseline,
        "payment_vs_baseline": payment_rate / baseline,
        "target_tx_per_s": 10_000,
        "note": "in-memory chain, one thread; every transaction is fully executed by tycho-executor and recorded (hash, summary, BOC)",
    }))
}
