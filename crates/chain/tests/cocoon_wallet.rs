//! COCOON's machine wallet, its real code (the network's, as the reference runners embed it)
//! running on the local chain: every rule `cocoon_chain::cocoon_wallet` describes, each way it
//! refuses, and the owner's powers over the machine's key.

use cocoon_chain::cocoon_wallet::{self, exit, CocoonWalletState, Command, MachineWallet};
use cocoon_chain::keys::Keypair;
use cocoon_chain::local::{Clock, Genesis, GenesisSpec, LocalChain, Trace};
use cocoon_chain::messages::{self, op};
use cocoon_chain::wallet::{OutMessage, Wallet, WalletVersion};
use cocoon_chain::{Address, ChainError, TON};
use tycho_types::cell::{Cell, CellBuilder};

const T0: u32 = 1_800_000_000;

struct Net {
    chain: LocalChain,
    genesis: Genesis,
    machine: Keypair,
    wallet: Wallet,
}

impl Net {
    /// A chain with an `owner` and a `stranger`, and the machine wallet of a fresh key owned by
    /// `owner`, funded with `funds` (not yet deployed: its first external message deploys it).
    fn new(funds: u128) -> Net {
        let mut chain = LocalChain::new(Clock::Fixed { now: T0 }).unwrap();
        let spec = GenesisSpec {
            params: cocoon_chain::contracts::Params::local_default(),
            wallets: vec![("owner".into(), 100 * TON), ("stranger".into(), 10 * TON)],
            proxy_hashes: vec![],
            worker_hashes: vec![],
            models: vec![],
        };
        let genesis = chain.genesis(&spec).unwrap();
        let machine = Keypair::from_seed([7; 32]);
        let owner = genesis.wallet("owner").unwrap().address;
        let wallet = Wallet::cocoon(machine.public_key(), owner);
        let mut net = Net {
            chain,
            genesis,
            machine,
            wallet,
        };
        if funds > 0 {
            let to = net.address();
            let t = net.send_from(
                "owner",
                OutMessage {
                    bounce: false,
                    ..OutMessage::transfer(to, funds, None)
                },
            );
            assert!(t.all_succeeded(), "{t:#?}");
        }
        net
    }

    fn address(&self) -> Address {
        self.wallet.address().unwrap()
    }

    fn addr(&self, name: &str) -> Address {
        self.genesis.wallet(name).unwrap().address
    }

    fn send_from(&mut self, name: &str, msg: OutMessage) -> Trace {
        let (keys, wallet) = self.genesis.wallet(name).unwrap().open().unwrap();
        self.chain.wallet_send(&wallet, &keys, &[msg]).unwrap()
    }

    /// `name` sends `body` to the machine wallet; the wallet's exit code.
    fn tell(&mut self, name: &str, body: Cell) -> i32 {
        let to = self.address();
        let t = self.send_from(name, OutMessage::transfer(to, TON / 10, Some(body)));
        t.exit_code_at(&to).expect("the wallet ran")
    }

    /// The machine key's external message (seqno, validity and key as given).
    fn external(
        &self,
        keys: &Keypair,
        seqno: u32,
        valid_until: u32,
        messages: &[OutMessage],
    ) -> Cell {
        // Sign with `keys` for the wallet of the machine's key (the wallet refuses a stranger's
        // signature itself; our builder would refuse to sign at all).
        let as_signer = Wallet {
            public_key: keys.public_key(),
            ..self.wallet.clone()
        };
        let body = as_signer
            .transfer_body(keys, seqno, valid_until, messages)
            .unwrap();
        let init = (seqno == 0).then(|| self.wallet.state_init().unwrap());
        cocoon_chain::wallet::external_message(self.address(), init, body).unwrap()
    }

    fn machine_sends(&mut self, seqno: u32, messages: &[OutMessage]) -> Result<Trace, ChainError> {
        let m = self.external(&self.machine.clone(), seqno, T0 + 600, messages);
        self.chain.send_external(m)
    }

    fn state(&self) -> CocoonWalletState {
        CocoonWalletState::parse(&self.chain.data(&self.address()).unwrap()).unwrap()
    }

    /// A transfer to the stranger, fees paid apart (mode 1), so it arrives whole.
    fn pay_stranger(&self, value: u128) -> OutMessage {
        OutMessage::transfer(self.addr("stranger"), value, None)
    }
}

/// The values `trace` carried from `from` into `to`.
fn paid(trace: &Trace, from: &Address, to: &Address) -> Vec<u128> {
    trace
        .transactions
        .iter()
        .filter(|t| &t.account == to && t.from.as_ref() == Some(from))
        .map(|t| t.value)
        .collect()
}

/// A [`Net`] behind a `ChainClient`, for the functions that take one: the chain (still
/// readable here), the client, a runtime to drive them, the owner's wallet and the machine
/// wallet as the roles hold it.
struct OnClient {
    chain: std::sync::Arc<std::sync::Mutex<LocalChain>>,
    client: cocoon_chain::client::LocalClient,
    rt: tokio::runtime::Runtime,
    owner: (Keypair, Wallet),
    machine: MachineWallet,
}

impl OnClient {
    fn of(net: Net) -> OnClient {
        let owner = net.genesis.wallet("owner").unwrap().open().unwrap();
        let machine = MachineWallet::new(net.machine.clone(), owner.1.address().unwrap()).unwrap();
        let chain = std::sync::Arc::new(std::sync::Mutex::new(net.chain));
        OnClient {
            client: cocoon_chain::client::LocalClient::new(chain.clone()),
            chain,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
            owner,
            machine,
        }
    }

    fn balance(&self, at: &Address) -> u128 {
        self.chain.lock().unwrap().balance(at).unwrap()
    }

    fn fund(&self, need: u128) -> Result<u128, ChainError> {
        let (keys, wallet) = &self.owner;
        self.rt.block_on(cocoon_chain::client::fund_machine_wallet(
            &self.client,
            wallet,
            keys,
            &self.machine.address(),
            need,
        ))
    }

    fn send(&self, messages: &[OutMessage]) -> Result<(), ChainError> {
        let (keys, wallet) = &self.owner;
        self.rt
            .block_on(self.machine.send(&self.client, (wallet, keys), messages))
    }
}

/// The exit code a refused external message names.
fn refused_with(r: Result<Trace, ChainError>, code: i32) {
    let e = r.expect_err("the wallet must refuse").to_string();
    assert!(e.contains(&format!("exit code {code}")), "{code}: {e}");
}

#[test]
fn the_machine_key_deploys_the_wallet_and_sends_once_per_seqno() {
    let mut net = Net::new(3 * TON);
    let stranger = net.addr("stranger");
    let at = net.address();
    let pay = net.pay_stranger(TON / 2);
    let t = net.machine_sends(0, std::slice::from_ref(&pay)).unwrap();
    assert!(t.all_succeeded(), "{t:#?}");
    assert_eq!(paid(&t, &at, &stranger), [TON / 2]);
    let s = net.state();
    assert_eq!(
        s,
        CocoonWalletState {
            seqno: 1,
            subwallet: 0,
            public_key: net.machine.public_key(),
            blocked: false,
            owner: net.addr("owner"),
        }
    );
    // The get-methods the runners and explorers read.
    let seqno = net.chain.get(&at, "seqno", vec![]).unwrap();
    assert_eq!(seqno[0].as_u128().unwrap(), 1);
    let key = net.chain.get(&at, "get_public_key", vec![]).unwrap();
    assert_eq!(key[0].as_u256().unwrap(), net.machine.public_key());
    let owner = net.chain.get(&at, "get_owner_address", vec![]).unwrap();
    assert_eq!(owner[0].as_address().unwrap(), net.addr("owner"));

    // The same message again, an old seqno, a future one: refused, nothing paid.
    let again = net.external(
        &net.machine.clone(),
        0,
        T0 + 600,
        std::slice::from_ref(&pay),
    );
    refused_with(net.chain.send_external(again), exit::WRONG_SEQNO);
    refused_with(
        net.machine_sends(2, std::slice::from_ref(&pay)),
        exit::WRONG_SEQNO,
    );
    assert_eq!(net.state().seqno, 1);
    // Up to four messages at once, each with its own mode (mode 0: the fees come out of the
    // value, as the runners send anything above one nanoton).
    let mode0 = OutMessage {
        mode: 0,
        ..pay.clone()
    };
    let t = net
        .machine_sends(1, &[pay.clone(), pay.clone(), pay.clone(), mode0])
        .unwrap();
    assert!(t.all_succeeded(), "{t:#?}");
    let got = paid(&t, &at, &stranger);
    assert_eq!(got.len(), 4);
    assert_eq!(&got[..3], [TON / 2; 3]);
    assert!(got[3] < TON / 2, "{got:?}");
    assert_eq!(net.state().seqno, 2);
    // A fifth does not fit one cell: our builder says so before signing.
    let e = net
        .wallet
        .transfer_body(&net.machine, 2, T0 + 600, &vec![pay; 5])
        .unwrap_err();
    assert!(e.to_string().contains("at most 4"), "{e}");
}

#[test]
fn a_stranger_key_an_expired_message_and_another_subwallet_are_refused() {
    let mut net = Net::new(3 * TON);
    let pay = net.pay_stranger(TON / 10);
    let stranger_key = Keypair::from_seed([8; 32]);
    let forged = net.external(&stranger_key, 0, T0 + 600, std::slice::from_ref(&pay));
    // Before the wallet exists the StateInit deploys it with the machine's key; the forged
    // signature is still refused.
    refused_with(net.chain.send_external(forged), exit::BAD_SIGNATURE);
    net.machine_sends(0, &[]).unwrap();

    // valid_until is checked against now: now itself is too late.
    let expired = net.external(&net.machine.clone(), 1, T0, std::slice::from_ref(&pay));
    refused_with(net.chain.send_external(expired), exit::EXPIRED);
    let in_time = net.external(&net.machine.clone(), 1, T0 + 1, std::slice::from_ref(&pay));
    net.chain.send_external(in_time).unwrap();

    let other = Wallet {
        wallet_id: 1,
        ..net.wallet.clone()
    };
    let body = other
        .transfer_body(&net.machine, 2, T0 + 600, &[pay])
        .unwrap();
    let m = cocoon_chain::wallet::external_message(net.address(), None, body).unwrap();
    refused_with(net.chain.send_external(m), exit::WRONG_SUBWALLET);
    assert_eq!(net.state().seqno, 2);
}

#[test]
fn below_two_ton_the_machine_key_sends_nothing() {
    // Exactly 2 TON: the external message's import fee takes it below (so the runners wait
    // for 2.1).
    let mut net = Net::new(cocoon_wallet::MIN_BALANCE);
    let pay = net.pay_stranger(1);
    refused_with(
        net.machine_sends(0, std::slice::from_ref(&pay)),
        exit::LOW_BALANCE,
    );
    // 0.01 TON more covers it: accepted.
    let to = net.address();
    net.chain
        .send_internal(net.addr("owner"), to, TON / 100, false, None, None)
        .unwrap();
    let t = net.machine_sends(0, std::slice::from_ref(&pay)).unwrap();
    assert!(t.all_succeeded(), "{t:#?}");
    // A message that takes the wallet below 2 TON is still sent (the check is before it);
    // after it, nothing more.
    let t = net
        .machine_sends(1, &[net.pay_stranger(TON / 100)])
        .unwrap();
    assert!(t.all_succeeded(), "{t:#?}");
    assert!(net.chain.balance(&to).unwrap() < cocoon_wallet::MIN_BALANCE);
    refused_with(net.machine_sends(2, &[pay]), exit::LOW_BALANCE);
}

#[test]
fn the_owner_blocks_unblocks_sends_through_and_takes_everything_back() {
    let mut net = Net::new(5 * TON);
    net.machine_sends(0, &[]).unwrap();
    let block = cocoon_wallet::command(Command::Block).unwrap();
    let unblock = cocoon_wallet::command(Command::Unblock).unwrap();
    let withdraw = cocoon_wallet::command(Command::WithdrawAll).unwrap();

    // Only the owner commands it.
    for body in [&block, &unblock, &withdraw] {
        assert_eq!(net.tell("stranger", body.clone()), exit::NOT_OWNER);
    }
    assert!(!net.state().blocked);

    // Blocked: the machine's key sends nothing; unblocked: it sends again.
    assert_eq!(net.tell("owner", block.clone()), 0);
    assert!(net.state().blocked);
    let e = net
        .machine_sends(1, &[net.pay_stranger(1)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exit code 1031 (the owner blocked this wallet's machine key)"),
        "the local chain names the wallet's refusal: {e}"
    );
    assert_eq!(net.tell("owner", unblock), 0);
    assert!(!net.state().blocked);
    net.machine_sends(1, &[net.pay_stranger(1)]).unwrap();

    // A command it does not know, and a text longer than one letter.
    let x = messages::text_comment("x").unwrap();
    assert_eq!(net.tell("owner", x), exit::UNKNOWN_COMMAND);
    let long = messages::text_comment("wb").unwrap();
    assert_ne!(net.tell("owner", long), 0);

    // owner_wallet_send_message: the wallet sends what its owner gives it, with its mode.
    let stranger = net.addr("stranger");
    let before = net.chain.balance(&stranger).unwrap();
    let msg = net.pay_stranger(TON).to_cell().unwrap();
    assert_eq!(before, net.chain.balance(&stranger).unwrap());
    let forward = cocoon_wallet::owner_send_message(5, 1, msg).unwrap();
    assert_eq!(net.tell("stranger", forward.clone()), exit::NOT_OWNER);
    assert!(
        net.chain.balance(&stranger).unwrap() < before,
        "nothing was sent for a stranger"
    );
    let at = net.address();
    let (keys, owner_wallet) = net.genesis.wallet("owner").unwrap().open().unwrap();
    let t = net
        .chain
        .wallet_send(
            &owner_wallet,
            &keys,
            &[OutMessage::transfer(at, TON / 10, Some(forward))],
        )
        .unwrap();
    assert_eq!(t.exit_code_at(&at), Some(0));
    assert_eq!(paid(&t, &at, &stranger), [TON]);

    // w: everything but 0.01 TON goes back to the owner, as a comment "w".
    let owner = net.addr("owner");
    let owner_before = net.chain.balance(&owner).unwrap();
    let held = net.chain.balance(&net.address()).unwrap();
    assert_eq!(net.tell("owner", withdraw), 0);
    assert_eq!(
        net.chain.balance(&net.address()).unwrap(),
        cocoon_wallet::WITHDRAW_RESERVE
    );
    let back = net.chain.balance(&owner).unwrap() + TON / 10;
    assert!(
        back > owner_before + held - TON / 10,
        "{back} {owner_before} {held}"
    );
    // And the machine's key, with 0.01 TON left, sends nothing.
    refused_with(
        net.machine_sends(2, &[net.pay_stranger(1)]),
        exit::LOW_BALANCE,
    );
}

#[test]
fn anyone_may_hand_it_money_and_notices() {
    let mut net = Net::new(3 * TON);
    net.machine_sends(0, &[]).unwrap();
    let head = |op: u32| {
        let mut b = CellBuilder::new();
        b.store_u32(op).unwrap();
        b.store_u64(1).unwrap();
        b.build().unwrap()
    };
    for o in [op::EXCESSES, op::PAYOUT, op::DO_NOT_PROCESS] {
        assert_eq!(net.tell("stranger", head(o)), 0, "op {o:#x}");
    }
    // An empty body is a plain transfer.
    let to = net.address();
    let t = net.send_from("stranger", OutMessage::transfer(to, TON, None));
    assert_eq!(t.exit_code_at(&to), Some(0));
    // Any other op from a stranger is refused (and bounces back).
    assert_eq!(
        net.tell("stranger", head(op::CLIENT_TOP_UP)),
        exit::NOT_OWNER
    );
    // The wallet file form is refused by name: this wallet has no phrase.
    let e = cocoon_chain::wallet::open(
        &net.genesis.wallet("owner").unwrap().mnemonic,
        WalletVersion::Cocoon,
        cocoon_chain::Network::Local,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a phrase"), "{e}");
}

#[test]
fn a_saved_state_counts_from_the_owner_or_a_machine_wallet_of_the_owners() {
    use cocoon_chain::client::{last_saved_state, SavedState};
    let mut net = Net::new(3 * TON);
    let proxy = Address::new([0x77; 32]);
    let save = |seqno: u32| OutMessage {
        bounce: false,
        ..OutMessage::transfer(
            proxy,
            1,
            Some(messages::proxy::save_state(1, seqno, &[seqno as u8; 32]).unwrap()),
        )
    };
    let owner = net.addr("owner");
    let stranger = net.addr("stranger");
    // The owner's machine wallet: counts.
    net.machine_sends(0, &[save(1)]).unwrap();
    // A stranger's machine wallet (owned by the stranger), and the stranger's own wallet: not.
    let strangers_key = Keypair::from_seed([8; 32]);
    let strangers_machine = Wallet::cocoon(strangers_key.public_key(), stranger);
    let at = strangers_machine.address().unwrap();
    net.send_from(
        "stranger",
        OutMessage {
            bounce: false,
            ..OutMessage::transfer(at, 3 * TON, None)
        },
    );
    let m = strangers_machine
        .transfer_message(&strangers_key, 0, T0 + 600, &[save(2)])
        .unwrap();
    net.chain.send_external(m).unwrap();
    net.send_from("stranger", save(3));

    let on = OnClient::of(net);
    let newest = || {
        on.rt
            .block_on(last_saved_state(&on.client, &proxy, &owner, 16))
            .unwrap()
    };
    assert_eq!(
        newest(),
        Some(SavedState {
            seqno: 1,
            hash: [1; 32],
            from: on.machine.address()
        })
    );
    // The owner's own wallet: counts, and the newest wins.
    let (keys, wallet) = &on.owner;
    on.chain
        .lock()
        .unwrap()
        .wallet_send(wallet, keys, &[save(4)])
        .unwrap();
    assert_eq!(newest().map(|s| (s.seqno, s.from)), Some((4, owner)));
    // For a proxy owned by the stranger, the stranger's machine wallet and wallet count.
    let theirs = on
        .rt
        .block_on(last_saved_state(&on.client, &proxy, &stranger, 16))
        .unwrap();
    assert_eq!(theirs.map(|s| s.seqno), Some(3));
}

#[test]
fn a_wallet_too_poor_to_fund_its_machine_wallet_is_named_and_nothing_is_sent() {
    let on = OnClient::of(Net::new(0));
    let machine = on.machine.address();
    // About 100 TON in the owner's wallet: 125 TON cannot be sent.
    let e = on.fund(120 * TON).unwrap_err().to_string();
    let owner = on.machine.owner().to_string();
    assert!(e.contains("holds only 99.9") && e.contains(&owner), "{e}");
    assert_eq!(on.balance(&machine), 0);
    // Within its means: the machine wallet gets the amount and 5 TON above the floor, once.
    let sent = on.fund(10 * TON).unwrap();
    assert_eq!(sent, 10 * TON + cocoon_wallet::FILL);
    assert_eq!(on.balance(&machine), sent);
    assert_eq!(on.fund(10 * TON).unwrap(), 0, "enough is there");
}

#[test]
fn more_than_four_messages_go_in_transfers_of_four() {
    let net = Net::new(0);
    let stranger = net.addr("stranger");
    let on = OnClient::of(net);
    let at = on.machine.address();
    let before = on.chain.lock().unwrap().transactions(&stranger, 16).len();
    on.send(&vec![OutMessage::transfer(stranger, TON / 10, None); 6])
        .unwrap();
    let c = on.chain.lock().unwrap();
    let state = CocoonWalletState::parse(&c.data(&at).unwrap()).unwrap();
    assert_eq!(state.seqno, 2, "two transfers: four messages, then two");
    let arrived: Vec<u128> = c
        .transactions(&stranger, 16)
        .iter()
        .filter(|t| t.from == Some(at))
        .map(|t| t.value)
        .collect();
    assert_eq!(arrived, [TON / 10; 6]);
    assert_eq!(c.transactions(&stranger, 16).len(), before + 6);
}

#[test]
fn funding_a_machine_wallet_at_its_boundaries() {
    use cocoon_wallet::{FILL, RUNNER_MIN_BALANCE};
    let need = TON;
    // Exactly the floor above what is needed: nothing is sent.
    let on = OnClient::of(Net::new(need + RUNNER_MIN_BALANCE));
    let machine = on.machine.address();
    assert_eq!(on.fund(need).unwrap(), 0);
    // Nothing needed: the floor alone is enough.
    assert_eq!(on.fund(0).unwrap(), 0);
    // One nanoton more needed than it holds above the floor: filled up to need + FILL.
    let held = on.balance(&machine);
    assert_eq!(on.fund(need + 1).unwrap(), need + 1 + FILL - held);
    assert_eq!(on.balance(&machine), need + 1 + FILL);
    // An amount that overflows with the floor is refused by name, nothing sent; so are
    // messages whose values overflow together.
    let e = on.fund(u128::MAX).unwrap_err().to_string();
    assert!(e.contains("overflow"), "{e}");
    let huge = OutMessage::transfer(machine, u128::MAX / 2 + 1, None);
    let e = on.send(&[huge.clone(), huge]).unwrap_err().to_string();
    assert!(e.contains("overflow u128"), "{e}");
    assert_eq!(on.balance(&machine), need + 1 + FILL);
}
