//! Genesis of a local network: funded wallets and a root contract whose registry is filled by
//! real admin transfers from the admin's wallet.

use crate::address::Address;
use crate::contracts::{ContractCodes, Params, RootInit};
use crate::error::{ChainError, Result};
use crate::keys::Keypair;
use crate::messages;
use crate::mnemonic::Mnemonic;
use crate::wallet::{OutMessage, Wallet, WalletVersion};
use crate::Network;
use std::path::Path;

use super::LocalChain;

/// The network id a local root starts with (COCOON's `unique_id`; its fake-TON root uses 13).
pub const LOCAL_UNIQUE_ID: u32 = 1;

/// The faucet pseudo-address genesis funds come from.
pub const FAUCET: Address = Address {
    workchain: 0,
    hash: [0xfa; 32],
};

/// What a new local network starts with.
#[derive(Clone, Debug)]
pub struct GenesisSpec {
    /// Root prices and rules.
    pub params: Params,
    /// Named wallets and their initial balances, nanotons ("admin" owns the root).
    pub wallets: Vec<(String, u128)>,
    /// Allowed proxy image hashes.
    pub proxy_hashes: Vec<[u8; 32]>,
    /// Allowed worker image hashes.
    pub worker_hashes: Vec<[u8; 32]>,
    /// Allowed models: hash and type name.
    pub models: Vec<([u8; 32], String)>,
}

/// A wallet created at genesis (a local development key: kept in the chain directory).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GenesisWallet {
    /// Its name.
    pub name: String,
    /// The 24 words.
    pub mnemonic: String,
    /// Wallet contract version.
    pub version: WalletVersion,
    /// Its address.
    pub address: Address,
}

impl GenesisWallet {
    /// Key pair and wallet.
    pub fn open(&self) -> Result<(Keypair, Wallet)> {
        crate::wallet::open(&self.mnemonic, self.version, Network::Local)
    }
}

/// What genesis produced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Genesis {
    /// The root contract.
    pub root: Address,
    /// The wallets, "admin" first.
    pub wallets: Vec<GenesisWallet>,
}

impl Genesis {
    /// A wallet by name.
    pub fn wallet(&self, name: &str) -> Result<&GenesisWallet> {
        self.wallets
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| ChainError::Api(format!("genesis has no wallet named {name:?}")))
    }

    /// Writes `dir/genesis.json` and `dir/wallets/NAME.json` for every wallet (all secret
    /// files: they hold the words), so every wallet command can name its wallet file.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("plain data serializes");
        crate::files::write_secret(&dir.join("genesis.json"), text.as_bytes())?;
        for w in &self.wallets {
            let file = crate::wallet::WalletFile {
                mnemonic: w.mnemonic.clone(),
                version: w.version,
                address: w.address,
            };
            file.write(&dir.join("wallets").join(format!("{}.json", w.name)))?;
        }
        Ok(())
    }
}

impl LocalChain {
    /// Creates the wallets and the root, and registers hashes and models through the admin
    /// wallet. Fails if any of those transactions fails.
    pub fn genesis(&mut self, spec: &GenesisSpec) -> Result<Genesis> {
        let mut wallets = Vec::new();
        let mut names: Vec<(String, u128)> = spec.wallets.clone();
        if !names.iter().any(|(n, _)| n == "admin") {
            names.insert(0, ("admin".into(), 1_000 * crate::TON));
        }
        for (name, balance) in &names {
            let (w, init) = new_wallet(name);
            let trace =
                self.send_internal(FAUCET, w.address, *balance, false, None, Some(init?))?;
            expect_ok(&trace, "deploy wallet")?;
            wallets.push(w);
        }
        let admin = wallets
            .iter()
            .find(|w| w.name == "admin")
            .expect("admin added above")
            .clone();
        let (keys, wallet) = admin.open()?;
        let init = RootInit {
            owner: admin.address,
            params: spec.params.clone(),
            codes: ContractCodes::embedded(),
            unique_id: LOCAL_UNIQUE_ID,
            is_test: true,
        };
        let root_init = init.state_init()?;
        let root = crate::contracts::address_of(&root_init)?;
        let mut ops = vec![OutMessage {
            init: Some(root_init),
            ..OutMessage::transfer(root, crate::TON, None)
        }];
        for h in &spec.proxy_hashes {
            ops.push(OutMessage::transfer(
                root,
                crate::TON / 10,
                Some(messages::root::add_proxy_type(0, h)?),
            ));
        }
        for h in &spec.worker_hashes {
            ops.push(OutMessage::transfer(
                root,
                crate::TON / 10,
                Some(messages::root::add_worker_type(0, h)?),
            ));
        }
        for (h, name) in &spec.models {
            ops.push(OutMessage::transfer(
                root,
                crate::TON / 10,
                Some(messages::root::add_model_type(0, h, name)?),
            ));
        }
        for chunk in ops.chunks(200) {
            let trace = self.wallet_send(&wallet, &keys, chunk)?;
            expect_ok(&trace, "root registry")?;
        }
        Ok(Genesis { root, wallets })
    }

    /// Adds a wallet to a running network, funded by `funder` (the admin's keys and wallet,
    /// opened once by the caller) with `amount`; it deploys itself on its first transfer. Fails
    /// if `name` exists.
    pub fn add_wallet(
        &mut self,
        genesis: &mut Genesis,
        funder: &(Keypair, Wallet),
        name: &str,
        amount: u128,
    ) -> Result<Address> {
        if genesis.wallet(name).is_ok() {
            return Err(ChainError::Refused(format!(
                "genesis already has a wallet named {name:?}"
            )));
        }
        let (w, _) = new_wallet(name);
        let mut fund = OutMessage::transfer(w.address, amount, None);
        fund.bounce = false;
        expect_ok(
            &self.wallet_send(&funder.1, &funder.0, &[fund])?,
            "fund wallet",
        )?;
        let address = w.address;
        genesis.wallets.push(w);
        Ok(address)
    }

    /// Signs and executes a transfer from a wallet on this chain; fails if any transaction it
    /// causes fails.
    pub fn wallet_send(
        &mut self,
        wallet: &Wallet,
        keys: &Keypair,
        messages: &[OutMessage],
    ) -> Result<super::Trace> {
        let address = wallet.address()?;
        let seqno = match self.account(&address)?.status {
            "active" => crate::client::seqno_from_stack(&self.get(&address, "seqno", vec![])?)?,
            _ => 0,
        };
        let msg = wallet.transfer_message(keys, seqno, self.now().saturating_add(600), messages)?;
        self.send_external(msg)
    }
}

/// A fresh v5r1 wallet named `name` and the StateInit that deploys it.
fn new_wallet(name: &str) -> (GenesisWallet, Result<tycho_types::models::StateInit>) {
    let mnemonic = Mnemonic::generate();
    let wallet = Wallet::new(
        WalletVersion::V5r1,
        mnemonic.keypair().public_key(),
        Network::Local,
    );
    let address = wallet
        .address()
        .expect("a wallet's StateInit always builds");
    let w = GenesisWallet {
        name: name.to_string(),
        mnemonic: mnemonic.phrase(),
        version: WalletVersion::V5r1,
        address,
    };
    (w, wallet.state_init())
}

fn expect_ok(trace: &super::Trace, what: &str) -> Result<()> {
    match trace.first_failure() {
        None => Ok(()),
        Some(t) => Err(ChainError::Refused(format!(
            "{what}: transaction on {} failed with exit code {:?}",
            t.account, t.exit_code
        ))),
    }
}
