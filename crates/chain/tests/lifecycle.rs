//! The whole payment lifecycle on the local chain, running the committed contract code:
//! deploy, stake, top up, charge, pay out, every kind of bad voucher, save_state, withdraw,
//! close by refund and by delay, proxy close. Contract state is checked to the nanoton.

use cocoon_chain::contracts::{
    address_of, ClientData, ContractCodes, ContractState, Params, ProxyData, ProxyInit, RootData,
    WorkerData,
};
use cocoon_chain::keys::Keypair;
use cocoon_chain::local::{Clock, Genesis, GenesisSpec, LocalChain, Trace};
use cocoon_chain::messages::{self, exit, op, MIN_FEE};
use cocoon_chain::voucher::Voucher;
use cocoon_chain::wallet::OutMessage;
use cocoon_chain::{Address, TON};
use tycho_types::cell::Cell;

const T0: u32 = 1_800_000_000;

struct Net {
    chain: LocalChain,
    genesis: Genesis,
    proxy_key: Keypair,
    proxy_init: ProxyInit,
    proxy: Address,
    codes: ContractCodes,
}

impl Net {
    fn new() -> Net {
        let mut chain = LocalChain::new(Clock::Fixed { now: T0 }).unwrap();
        let spec = GenesisSpec {
            params: Params::local_default(),
            wallets: vec![
                ("proxy".into(), 100 * TON),
                ("client".into(), 100 * TON),
                ("worker".into(), 10 * TON),
                ("stranger".into(), 10 * TON),
            ],
            proxy_hashes: vec![[1; 32]],
            worker_hashes: vec![[2; 32]],
            models: vec![([3; 32], "qwen3".into())],
        };
        let genesis = chain.genesis(&spec).unwrap();
        let codes = ContractCodes::embedded();
        let root_acc = chain.account(&genesis.root).unwrap();
        let root = RootData::parse(&root_acc.data.unwrap(), &root_acc.code.unwrap()).unwrap();
        let proxy_key = Keypair::from_seed([42; 32]);
        let proxy_init = ProxyInit {
            owner: genesis.wallet("proxy").unwrap().address,
            proxy_public_key: proxy_key.public_key(),
            root: genesis.root,
            params: root.params.clone(),
            head: root.head,
            client_code: root.codes.client.clone(),
            worker_code: root.codes.worker.clone(),
        };
        let proxy = address_of(&proxy_init.state_init(&root.codes.proxy).unwrap()).unwrap();
        Net {
            chain,
            genesis,
            proxy_key,
            proxy_init,
            proxy,
            codes,
        }
    }

    fn addr(&self, name: &str) -> Address {
        self.genesis.wallet(name).unwrap().address
    }

    fn send(&mut self, from: &str, msg: OutMessage) -> Trace {
        let (keys, wallet) = self.genesis.wallet(from).unwrap().open().unwrap();
        self.chain.wallet_send(&wallet, &keys, &[msg]).unwrap()
    }

    /// Sends `body` to `to` and returns the exit code of `to`'s transaction.
    fn call(&mut self, from: &str, to: Address, value: u128, body: Cell) -> i32 {
        let trace = self.send(from, OutMessage::transfer(to, value, Some(body)));
        trace.exit_code_at(&to).expect("destination ran")
    }

    /// The newest transactions of `at` as a chain API reports them.
    fn txs(&self, at: &Address) -> Vec<cocoon_chain::client::Tx> {
        self.chain
            .transactions(at, 16)
            .iter()
            .map(cocoon_chain::client::Tx::from)
            .collect()
    }

    /// A payout voucher for `tokens` submitted by a stranger to the worker contract, deploying
    /// it on the first one.
    fn pay_worker(&mut self, tokens: u64) -> Trace {
        let worker = self.worker_addr();
        let init = self
            .proxy_init
            .worker(self.proxy, self.addr("worker"))
            .state_init(&self.codes.worker)
            .unwrap();
        let v = self.voucher(op::WORKER_PAYOUT_SIGNED, tokens, worker);
        let msg = OutMessage {
            init: Some(init),
            ..OutMessage::transfer(worker, MIN_FEE, Some(v))
        };
        self.send("stranger", msg)
    }

    /// The client's owner sends `body` to its client contract; the contract's exit code.
    fn client_call(&mut self, body: Cell) -> i32 {
        let to = self.client_addr();
        self.call("client", to, MIN_FEE, body)
    }

    fn client_addr(&self) -> Address {
        let init = self.proxy_init.client(self.proxy, self.addr("client"));
        address_of(&init.state_init(&self.codes.client).unwrap()).unwrap()
    }

    fn worker_addr(&self) -> Address {
        let init = self.proxy_init.worker(self.proxy, self.addr("worker"));
        address_of(&init.state_init(&self.codes.worker).unwrap()).unwrap()
    }

    fn proxy_data(&self) -> ProxyData {
        ProxyData::parse(&self.chain.data(&self.proxy).unwrap()).unwrap()
    }
    fn client_data(&self) -> ClientData {
        ClientData::parse(&self.chain.data(&self.client_addr()).unwrap()).unwrap()
    }
    fn worker_data(&self) -> WorkerData {
        WorkerData::parse(&self.chain.data(&self.worker_addr()).unwrap()).unwrap()
    }

    fn voucher(&self, op: u32, counter: u64, target: Address) -> Cell {
        Voucher {
            op,
            query_id: 1,
            counter,
            target,
        }
        .sign(&self.proxy_key, self.addr("stranger"))
        .unwrap()
        .body()
        .unwrap()
    }

    fn deploy(&mut self) {
        // Proxy: deploy and stake the root's minimum exactly.
        let stake = self.proxy_init.params.min_proxy_stake;
        let init = self.proxy_init.state_init(&self.codes.proxy).unwrap();
        let body = messages::proxy::increase_stake(0, stake).unwrap();
        let msg = OutMessage {
            init: Some(init),
            ..OutMessage::transfer(self.proxy, stake + MIN_FEE, Some(body))
        };
        let t = self.send("proxy", msg);
        assert_eq!(t.exit_code_at(&self.proxy), Some(0), "{t:#?}");
        assert_eq!(self.proxy_data().stake, stake);

        // Client: deploy by topping up 10 TON, then stake exactly the minimum.
        let client = self.client_addr();
        let init = self
            .proxy_init
            .client(self.proxy, self.addr("client"))
            .state_init(&self.codes.client)
            .unwrap();
        let body = messages::client::top_up(0, 10 * TON, &self.addr("client")).unwrap();
        let msg = OutMessage {
            init: Some(init),
            ..OutMessage::transfer(client, 10 * TON + MIN_FEE, Some(body))
        };
        let t = self.send("client", msg);
        assert!(t.all_succeeded(), "{t:#?}");
        assert_eq!(self.client_data().balance, 10 * TON);
        // the money sits in the proxy contract, beside its stake
        let held = self.chain.balance(&self.proxy).unwrap();
        assert_eq!(self.proxy_data().clients_money(held), 10 * TON);
        let min = self.proxy_init.params.min_client_stake;
        assert_eq!(
            self.call(
                "client",
                client,
                MIN_FEE,
                messages::client::increase_stake(0, min - 1, &self.addr("client")).unwrap()
            ),
            exit::STAKE_TOO_LOW
        );
        assert_eq!(
            self.call(
                "client",
                client,
                MIN_FEE,
                messages::client::increase_stake(0, min, &self.addr("client")).unwrap()
            ),
            0
        );
        assert_eq!(self.client_data().stake, min);
    }
}

#[test]
fn root_registry_is_readable_after_genesis() {
    let net = Net::new();
    let acc = net.chain.account(&net.genesis.root).unwrap();
    let root = RootData::parse(&acc.data.unwrap(), &acc.code.unwrap()).unwrap();
    assert_eq!(root.owner, net.addr("admin"));
    assert_eq!(root.proxy_hashes, vec![[1; 32]]);
    assert_eq!(root.worker_hashes, vec![[2; 32]]);
    assert_eq!(root.models.get(&[3; 32]).map(String::as_str), Some("qwen3"));
    assert_eq!(root.params, Params::local_default());
    assert_eq!(root.version, 3, "three admin operations at genesis");
}

#[test]
fn payment_lifecycle_with_every_bad_voucher_refused() {
    let mut net = Net::new();
    net.deploy();
    let client = net.client_addr();
    let price = net.proxy_init.params.price_per_token;
    let fee = net.proxy_init.params.worker_fee_per_token;

    // Two charges: cumulative counters.
    let v = net.voucher(op::CLIENT_CHARGE_SIGNED, 1_000, client);
    assert_eq!(net.call("stranger", client, MIN_FEE, v), 0);
    assert_eq!(net.client_data().balance, 10 * TON - 1_000 * price);
    let v = net.voucher(op::CLIENT_CHARGE_SIGNED, 2_500, client);
    assert_eq!(net.call("proxy", client, MIN_FEE, v), 0);
    let c = net.client_data();
    assert_eq!(
        (c.tokens_used, c.balance),
        (2_500, 10 * TON - 2_500 * price)
    );
    // A charge moves no money: the proxy earns when a worker is paid.
    assert_eq!(net.proxy_data().earnings, 0);

    // Every bad voucher, each with its own exit code, and nothing changes.
    let replayed = net.voucher(op::CLIENT_CHARGE_SIGNED, 2_500, client);
    assert_eq!(net.call("proxy", client, MIN_FEE, replayed), exit::REPLAYED);
    let backwards = net.voucher(op::CLIENT_CHARGE_SIGNED, 2_000, client);
    assert_eq!(
        net.call("proxy", client, MIN_FEE, backwards),
        exit::BACKWARDS
    );
    let elsewhere = net.voucher(op::CLIENT_CHARGE_SIGNED, 3_000, net.addr("stranger"));
    assert_eq!(
        net.call("proxy", client, MIN_FEE, elsewhere),
        exit::WRONG_TARGET
    );
    let forged = Voucher {
        op: op::CLIENT_CHARGE_SIGNED,
        query_id: 1,
        counter: 3_000,
        target: client,
    }
    .sign(&Keypair::from_seed([7; 32]), client)
    .unwrap()
    .body()
    .unwrap();
    assert_eq!(
        net.call("proxy", client, MIN_FEE, forged),
        exit::BAD_SIGNATURE
    );
    let wrong_op = net.voucher(op::WORKER_PAYOUT_SIGNED, 3_000, client);
    let mut b = tycho_types::cell::CellBuilder::new();
    // Re-wrap the worker voucher under the charge op: the payload's op no longer matches.
    let mut s = wrong_op.as_slice().unwrap();
    s.load_u32().unwrap();
    b.store_u32(op::CLIENT_CHARGE_SIGNED).unwrap();
    b.store_slice(s).unwrap();
    assert_eq!(
        net.call("proxy", client, MIN_FEE, b.build().unwrap()),
        exit::WRONG_OP
    );
    assert_eq!(net.client_data().tokens_used, 2_500);

    // Worker: deployed by its first payout voucher; paid tokens × fee to its owner.
    let worker = net.worker_addr();
    let before = net.chain.balance(&net.addr("worker")).unwrap();
    let t = net.pay_worker(2_000);
    assert!(t.all_succeeded(), "{t:#?}");
    assert_eq!(net.worker_data().tokens_paid, 2_000);
    assert_eq!(net.proxy_data().earnings, 2_000 * (price - fee));
    let got = net.chain.balance(&net.addr("worker")).unwrap() - before;
    assert!(got >= 2_000 * fee, "worker got {got}, owed {}", 2_000 * fee);
    assert!(
        got < 2_000 * fee + MIN_FEE,
        "worker got more than the payout plus leftover gas value: {got}"
    );
    let replay = net.voucher(op::WORKER_PAYOUT_SIGNED, 2_000, worker);
    assert_eq!(
        net.call("stranger", worker, MIN_FEE, replay),
        exit::REPLAYED
    );

    // save_state, COCOON's: `do_not_process` from the owner's wallet with 1 nanoton. The
    // contract does not run on it and stores nothing; it is read back from the contract's
    // transactions, the newest first, and only the owner's count.
    use cocoon_chain::client::saved_state_in;
    let saved = |net: &Net, from: &Address| saved_state_in(&net.txs(&net.proxy), from);
    let proxy_sc = net.proxy;
    let state = |seqno: u32, value: u128| OutMessage {
        bounce: false,
        ..OutMessage::transfer(
            proxy_sc,
            value,
            Some(messages::proxy::save_state(seqno.into(), seqno, &[seqno as u8; 32]).unwrap()),
        )
    };
    let (proxy_owner, stranger) = (net.addr("proxy"), net.addr("stranger"));
    let before = net.proxy_data();
    net.send("proxy", state(5, 1));
    assert_eq!(saved(&net, &proxy_owner), Some((5, [5; 32])));
    net.send("proxy", state(6, 1));
    assert_eq!(
        saved(&net, &proxy_owner),
        Some((6, [6; 32])),
        "the newest counts"
    );
    net.send("stranger", state(7, 1));
    assert_eq!(
        saved(&net, &proxy_owner),
        Some((6, [6; 32])),
        "a stranger's does not count"
    );
    assert_eq!(saved(&net, &stranger), Some((7, [7; 32])));
    // With enough value to run, the contract takes it without reading it.
    let t = net.send("proxy", state(8, MIN_FEE));
    assert_eq!(t.exit_code_at(&proxy_sc), Some(0), "{t:#?}");
    assert_eq!(saved(&net, &proxy_owner), Some((8, [8; 32])));
    assert_eq!(
        net.proxy_data(),
        before,
        "the contract stores nothing of it"
    );

    // Withdraw: everything above the stake, to the address named; then nothing is left to take.
    let c = net.client_data();
    let free = c.balance - c.stake;
    let owner = net.addr("client");
    let withdraw = |net: &mut Net, from: &str, to: &Address| {
        net.call(
            from,
            client,
            MIN_FEE,
            messages::client::withdraw(0, to).unwrap(),
        )
    };
    let refund = |net: &mut Net| {
        net.call(
            "client",
            client,
            MIN_FEE,
            messages::client::request_refund(0, &owner).unwrap(),
        )
    };
    let stranger = net.addr("stranger");
    assert_eq!(withdraw(&mut net, "stranger", &stranger), exit::NOT_OWNER);
    let before = net.chain.balance(&owner).unwrap();
    assert_eq!(withdraw(&mut net, "client", &owner), 0);
    assert_eq!(net.client_data().balance, c.stake);
    let after = net.chain.balance(&owner).unwrap();
    assert!(
        after + MIN_FEE > before + free,
        "withdrawn money arrived (minus at most the fee)"
    );
    assert_eq!(withdraw(&mut net, "client", &owner), exit::BELOW_STAKE);

    // Close without the proxy: refund request, too early, then after the delay.
    assert_eq!(refund(&mut net), 0);
    assert_eq!(net.client_data().state, ContractState::Closing);
    assert_eq!(refund(&mut net), exit::TOO_EARLY);
    net.chain
        .advance(net.proxy_init.params.client_delay_before_close - 1)
        .unwrap();
    assert_eq!(refund(&mut net), exit::TOO_EARLY);
    net.chain.advance(1).unwrap();
    let stake = net.client_data().balance;
    let before = net.chain.balance(&net.addr("client")).unwrap();
    assert_eq!(refund(&mut net), 0, "closes after the delay");
    assert_eq!(net.client_data().state, ContractState::Closed);
    assert_eq!(net.client_data().balance, 0);
    assert!(net.chain.balance(&net.addr("client")).unwrap() + MIN_FEE > before + stake);
    // What stays beside the stake and the earnings: the client's charges not yet paid to a
    // worker, and the 1-nanoton state updates.
    let d = net.proxy_data();
    let rest = d.clients_money(net.chain.balance(&net.proxy).unwrap());
    let unpaid = (2_500 - 2_000) * price + 2_000 * fee;
    assert!(
        rest >= unpaid && rest < unpaid + MIN_FEE,
        "all other client money left the proxy contract (the rest is the save_state sent with \
         value enough to run): {rest}"
    );
    // A charge after close is refused.
    let late = net.voucher(op::CLIENT_CHARGE_SIGNED, 9_000, client);
    assert_eq!(net.call("proxy", client, MIN_FEE, late), exit::WRONG_STATE);

    // Proxy close: request, too early, complete after the delay; the owner gets the rest.
    let close = |op: u32, net: &Net| net.voucher(op, 0, net.proxy);
    let body = close(op::PROXY_CLOSE_COMPLETE_SIGNED, &net);
    assert_eq!(
        net.call("proxy", net.proxy, MIN_FEE, body),
        exit::WRONG_STATE
    );
    let body = close(op::PROXY_CLOSE_REQUEST_SIGNED, &net);
    assert_eq!(net.call("proxy", net.proxy, MIN_FEE, body), 0);
    let body = close(op::PROXY_CLOSE_COMPLETE_SIGNED, &net);
    assert_eq!(net.call("proxy", net.proxy, MIN_FEE, body), exit::TOO_EARLY);
    net.chain
        .advance(net.proxy_init.params.proxy_delay_before_close)
        .unwrap();
    let before = net.chain.balance(&net.addr("proxy")).unwrap();
    let owed = net.proxy_data().stake + net.proxy_data().earnings;
    let body = close(op::PROXY_CLOSE_COMPLETE_SIGNED, &net);
    assert_eq!(net.call("stranger", net.proxy, MIN_FEE, body), 0);
    let got = net.chain.balance(&net.addr("proxy")).unwrap() - before;
    assert!(got > owed && got < owed + MIN_FEE, "got {got}, owed {owed}");
    let d = net.proxy_data();
    assert_eq!(
        (d.state, d.stake, d.earnings),
        (ContractState::Closed, 0, 0)
    );
    assert!(
        net.chain.balance(&net.proxy).unwrap() >= rest,
        "the clients' part stays"
    );
}

#[test]
fn grant_refund_charges_then_returns_everything() {
    let mut net = Net::new();
    net.deploy();
    let client = net.client_addr();
    let price = net.proxy_init.params.price_per_token;
    let refund = messages::client::request_refund(0, &net.addr("client")).unwrap();
    assert_eq!(net.client_call(refund), 0);
    let before = net.chain.balance(&net.addr("client")).unwrap();
    let stake = net.client_data().balance;
    let v = net.voucher(op::CLIENT_GRANT_REFUND_SIGNED, 100, client);
    assert_eq!(net.call("proxy", client, MIN_FEE, v), 0);
    let c = net.client_data();
    assert_eq!(
        (c.state, c.balance, c.tokens_used),
        (ContractState::Closed, 0, 100)
    );
    let got = net.chain.balance(&net.addr("client")).unwrap() - before;
    // The refund arrives with what is left of the submitter's MIN_FEE, never less than owed.
    let owed = stake - 100 * price;
    assert!(
        got >= owed && got < owed + MIN_FEE,
        "refund {got}, owed {owed}"
    );
    // What the client paid stays in the proxy contract until a worker is paid for it.
    let d = net.proxy_data();
    let rest = d.clients_money(net.chain.balance(&net.proxy).unwrap());
    assert!(rest >= 100 * price && rest < 100 * price + 100, "{rest}");
}

#[test]
fn state_survives_a_restart_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (client, balance, proxy, proxy_balance) = {
        let mut net = Net::new();
        net.chain.persist_in(dir.path()).unwrap();
        net.deploy();
        let client = net.client_addr();
        let v = net.voucher(op::CLIENT_CHARGE_SIGNED, 77, client);
        assert_eq!(net.call("proxy", client, MIN_FEE, v), 0);
        (
            client,
            net.client_data(),
            net.proxy,
            net.chain.balance(&net.proxy).unwrap(),
        )
    };
    let reopened = LocalChain::open(dir.path())
        .unwrap()
        .expect("chain on disk");
    assert_eq!(
        ClientData::parse(&reopened.data(&client).unwrap()).unwrap(),
        balance
    );
    assert_eq!(
        reopened.balance(&proxy).unwrap(),
        proxy_balance,
        "the proxy contract's balance is restored"
    );
    let last = reopened.transactions(&client, 1);
    assert_eq!(
        last.first().map(|t| t.exit_code),
        Some(Some(0)),
        "the client's history is restored"
    );
    assert_eq!(reopened.now(), T0, "the fixed clock is restored");
}

/// The nonce of the newest `client_proxy_register` among a proxy contract's transactions `txs`,
/// read as COCOON's runner reads them (`ProxyContract::on_transaction`): sent by `client_sc`, a
/// `client_proxy_request` naming `owner`, a state cell of exactly `state:2 balance stake
/// tokens_used:64 secret_hash:256`, nothing after the payload reference.
fn proxy_heard_registration(
    txs: &[cocoon_chain::client::Tx],
    client_sc: &Address,
    owner: &Address,
) -> Option<u64> {
    use cocoon_chain::cells::{load_address, load_coins};
    txs.iter()
        .filter(|t| t.from.as_ref() == Some(client_sc))
        .find_map(|t| {
            let body = t.body.as_ref()?;
            let mut s = body.as_slice().ok()?;
            if s.load_u32().ok()? != op::CLIENT_PROXY_REQUEST {
                return None;
            }
            s.load_u64().ok()?;
            assert_eq!(&load_address(&mut s).ok()?, owner);
            let state = s.load_reference().ok()?;
            let mut st = state.as_slice().ok()?;
            st.load_small_uint(2).ok()?;
            load_coins(&mut st).ok()?;
            load_coins(&mut st).ok()?;
            st.load_u64().ok()?;
            st.skip_first(256, 0).ok()?;
            assert!(st.is_empty(), "the state cell is exactly COCOON's");
            let payload = if s.load_bit().ok()? {
                Some(s.load_reference().ok()?)
            } else {
                None
            };
            assert!(s.is_empty(), "nothing after the payload");
            let mut p = payload?.as_slice().ok()?;
            (p.load_u32().ok()? == op::CLIENT_PROXY_REGISTER).then(|| p.load_u64().ok())?
        })
}

/// Long authorization: the proxy finds the nonce it gave in the client contract's
/// transactions, sent by the owner and taken; anyone else's message, another nonce, another
/// op, or a message the contract refused proves nothing.
#[test]
fn a_long_authorization_is_read_from_the_client_contracts_transactions() {
    use cocoon_chain::client::registered_in;
    let mut net = Net::new();
    net.deploy();
    let client = net.client_addr();
    let (owner, stranger) = (net.addr("client"), net.addr("stranger"));
    let register = |nonce| messages::client::register(3, nonce, &owner).unwrap();
    let seen = |net: &Net, who: &Address, nonce| registered_in(&net.txs(&client), who, nonce);
    assert!(!seen(&net, &owner, 7));
    let before = net.client_data();
    assert_eq!(net.call("client", client, MIN_FEE, register(7)), 0);
    assert!(seen(&net, &owner, 7));
    // Where COCOON's proxy looks: its own contract's transactions, a `client_proxy_request`
    // from the client contract carrying the nonce.
    assert_eq!(
        proxy_heard_registration(&net.txs(&net.proxy), &client, &owner),
        Some(7)
    );
    assert!(!seen(&net, &owner, 8), "another nonce");
    assert!(!seen(&net, &stranger, 7), "another sender");
    let after = net.client_data();
    assert_eq!(
        (after.balance, after.stake, after.secret_hash),
        (before.balance, before.stake, before.secret_hash),
        "registering stores nothing"
    );
    // A stranger's registration is refused by the contract and proves nothing.
    assert_eq!(
        net.call("stranger", client, MIN_FEE, register(9)),
        exit::NOT_OWNER
    );
    assert!(!seen(&net, &stranger, 9) && !seen(&net, &owner, 9));
    // Another op carrying the same bits after its head is not a registration.
    let hash = [0u8; 32];
    assert_eq!(
        net.call(
            "client",
            client,
            MIN_FEE,
            messages::client::change_secret_hash(3, &hash, &owner).unwrap()
        ),
        0
    );
    assert!(!seen(&net, &owner, 0));
    // A closing contract refuses to register (109): no authorization from it.
    let refund = messages::client::request_refund(0, &net.addr("client")).unwrap();
    assert_eq!(net.client_call(refund), 0);
    assert_eq!(
        net.call("client", client, MIN_FEE, register(11)),
        exit::WRONG_STATE
    );
    assert!(!seen(&net, &owner, 11));
}

/// `ProxyData::payout` is what the owner's payout request takes: the earnings (the price less
/// the worker's fee on every token a worker was paid for), nothing of the stake or the
/// clients' money; a second request is refused (112). (The MIN_FEE reserve, to the nanoton,
/// is proved on the contract, whose balance the sandbox can set: contracts/test/proxy.test.mjs.)
#[test]
fn the_earnings_are_what_a_payout_takes() {
    let mut net = Net::new();
    net.deploy();
    let proxy = net.proxy;
    let owner = net.addr("proxy");
    let params = net.proxy_init.params.clone();
    let due = |net: &Net| net.proxy_data().payout(net.chain.balance(&proxy).unwrap());
    let payout = messages::proxy::payout_request(0, &owner).unwrap();
    assert_eq!(due(&net), 0, "nothing earned yet");
    assert_eq!(
        net.call("proxy", proxy, MIN_FEE, payout.clone()),
        exit::NO_FUNDS
    );
    // A worker is paid for 3 000 tokens: the proxy earns the rest of their price.
    assert!(net.pay_worker(3_000).all_succeeded());
    let earned = 3_000 * (params.price_per_token - params.worker_fee_per_token);
    assert_eq!(due(&net), earned);
    let (balance, stake) = (net.chain.balance(&proxy).unwrap(), net.proxy_data().stake);
    let wallet = net.chain.balance(&owner).unwrap();
    assert_eq!(net.call("proxy", proxy, MIN_FEE, payout.clone()), 0);
    assert_eq!(
        net.chain.balance(&proxy).unwrap(),
        balance - earned,
        "the payout took exactly the earnings"
    );
    assert_eq!(net.proxy_data().stake, stake);
    assert!(net.chain.balance(&owner).unwrap() + MIN_FEE > wallet + earned);
    assert_eq!(due(&net), 0);
    assert_eq!(net.call("proxy", proxy, MIN_FEE, payout), exit::NO_FUNDS);

    // Anyone may ask (COCOON's proxy asks from its machine wallet): the earnings still go to
    // the owner, to the nanoton; the asker gets back only the rest of its own value.
    assert!(net.pay_worker(5_000).all_succeeded());
    let earned = 2_000 * (params.price_per_token - params.worker_fee_per_token);
    assert_eq!(due(&net), earned);
    let stranger = net.addr("stranger");
    let stranger_before = net.chain.balance(&stranger).unwrap();
    let trace = net.send(
        "stranger",
        OutMessage::transfer(
            proxy,
            MIN_FEE,
            Some(messages::proxy::payout_request(9, &stranger).unwrap()),
        ),
    );
    assert_eq!(trace.exit_code_at(&proxy), Some(0), "{trace:#?}");
    let to_owner: Vec<u128> = trace
        .transactions
        .iter()
        .filter(|t| t.account == owner && t.from == Some(proxy))
        .map(|t| t.value)
        .collect();
    assert_eq!(to_owner, [earned]);
    assert!(net.chain.balance(&stranger).unwrap() < stranger_before);
    assert_eq!(due(&net), 0);
}

/// COCOON's `owner_proxy_close` (the runner's body: op and address): the owner starts the
/// close; after the delay the same message pays the stake and the earnings; nobody else can.
#[test]
fn the_owner_closes_the_proxy_contract_after_the_delay() {
    let mut net = Net::new();
    net.deploy();
    let proxy = net.proxy;
    let owner = net.addr("proxy");
    let close = || messages::proxy::owner_close(&owner).unwrap();
    assert_eq!(
        net.call("stranger", proxy, MIN_FEE, close()),
        exit::NOT_OWNER
    );
    assert_eq!(net.call("proxy", proxy, MIN_FEE, close()), 0);
    let d = net.proxy_data();
    assert_eq!(d.state, ContractState::Closing);
    assert_eq!(net.call("proxy", proxy, MIN_FEE, close()), exit::TOO_EARLY);
    net.chain
        .advance(net.proxy_init.params.proxy_delay_before_close)
        .unwrap();
    let before = net.chain.balance(&owner).unwrap();
    assert_eq!(net.call("proxy", proxy, MIN_FEE, close()), 0);
    let got = net.chain.balance(&owner).unwrap() + MIN_FEE - before;
    assert!(got > d.stake, "the stake came back: {got}");
    assert_eq!(net.proxy_data().state, ContractState::Closed);
    // The client's 10 TON stay, less a day of the contract's storage fees.
    let left = net.chain.balance(&proxy).unwrap();
    assert!(
        left > 10 * TON - 1_000_000 && left <= 10 * TON,
        "the client's money stays: {left}"
    );
    assert_eq!(
        net.call("proxy", proxy, MIN_FEE, close()),
        exit::WRONG_STATE
    );
}

/// A chain where another sender (a running proxy topping up its machine wallet, say) takes the
/// wallet's seqno just before each of the first `races` transfers lands: it sends its own
/// transfer, signed for the same seqno, first.
struct SharedWallet {
    inner: cocoon_chain::client::LocalClient,
    other: cocoon_chain::wallet::Wallet,
    keys: Keypair,
    races: std::sync::Mutex<u32>,
}

impl cocoon_chain::client::ChainClient for SharedWallet {
    fn network(&self) -> cocoon_chain::Network {
        self.inner.network()
    }
    fn account<'a>(
        &'a self,
        a: &'a Address,
    ) -> cocoon_chain::client::BoxFut<'a, cocoon_chain::client::Account> {
        self.inner.account(a)
    }
    fn run_get_method<'a>(
        &'a self,
        a: &'a Address,
        m: &'a str,
        args: Vec<cocoon_chain::stack::StackItem>,
    ) -> cocoon_chain::client::BoxFut<'a, Vec<cocoon_chain::stack::StackItem>> {
        self.inner.run_get_method(a, m, args)
    }
    fn send_message<'a>(&'a self, message: Cell) -> cocoon_chain::client::BoxFut<'a, ()> {
        Box::pin(async move {
            let race = {
                let mut r = self.races.lock().unwrap();
                *r > 0 && {
                    *r -= 1;
                    true
                }
            };
            if race {
                let addr = self.other.address()?;
                let seqno = cocoon_chain::client::wallet_seqno(&self.inner, &addr).await?;
                let theirs = self.other.transfer_message(
                    &self.keys,
                    seqno,
                    u32::MAX,
                    &[OutMessage::transfer(addr, 1, None)],
                )?;
                self.inner.send_message(theirs).await?;
            }
            self.inner.send_message(message).await
        })
    }
    fn transactions<'a>(
        &'a self,
        a: &'a Address,
        limit: usize,
    ) -> cocoon_chain::client::BoxFut<'a, Vec<cocoon_chain::client::Tx>> {
        self.inner.transactions(a, limit)
    }
}

/// `send_transfer` on a wallet another sender shares: when the other takes the seqno it signed
/// for, it signs again for the next one, so its transfer lands exactly once; when others keep
/// taking it, it gives up saying nothing was sent.
#[test]
fn a_transfer_lands_once_though_another_sender_takes_its_seqno() {
    let net = Net::new();
    let (keys, wallet) = net.genesis.wallet("stranger").unwrap().open().unwrap();
    let from = wallet.address().unwrap();
    let to = net.addr("worker");
    let chain = cocoon_chain::client::LocalClient::new(std::sync::Arc::new(std::sync::Mutex::new(
        net.chain,
    )));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared = |races| SharedWallet {
        inner: chain.clone(),
        other: wallet.clone(),
        keys: keys.clone(),
        races: std::sync::Mutex::new(races),
    };
    let balance = |a: &Address| {
        rt.block_on(cocoon_chain::client::ChainClient::account(&chain, a))
            .unwrap()
            .balance
    };
    let before = balance(&to);
    let send = |c: &SharedWallet| {
        rt.block_on(cocoon_chain::client::send_transfer(
            c,
            &wallet,
            &keys,
            &[OutMessage::transfer(to, TON, None)],
        ))
    };
    let seqno = send(&shared(2)).unwrap();
    // (the receiving wallet's gas comes out of what arrives)
    let landed = balance(&to) - before;
    assert!(
        landed > TON - 1_000_000 && landed <= TON,
        "landed once: {landed}"
    );
    let now = rt
        .block_on(cocoon_chain::client::wallet_seqno(&chain, &from))
        .unwrap();
    assert_eq!(
        (seqno, now),
        (2, 3),
        "two seqnos taken by the other, the third ours"
    );
    let e = send(&shared(5)).unwrap_err().to_string();
    assert!(e.contains("nothing was sent"), "{e}");
    assert_eq!(balance(&to), before + landed, "and nothing more landed");
}
