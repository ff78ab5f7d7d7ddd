//! TON wallets v4r2 and v5r1, and COCOON's machine wallet ([`crate::cocoon_wallet`]): code,
//! initial data, addresses and signed transfers.
//!
//! The code cells are the standard ones (the same BOCs `@ton/ton` ships); a wallet's address is
//! the hash of its StateInit, so the same key gives the same address here and in every TON
//! wallet app.

use tycho_types::cell::{Cell, CellBuilder, CellFamily, Store};
use tycho_types::models::{
    CurrencyCollection, ExtInMsgInfo, MessageLayout, MsgInfo, OwnedMessage, OwnedRelaxedMessage,
    RelaxedIntMsgInfo, RelaxedMsgInfo, StateInit,
};
use tycho_types::num::Tokens;

use crate::address::Address;
use crate::cells::{from_boc, from_boc_base64};
use crate::error::{ChainError, Result};
use crate::keys::Keypair;
use crate::Network;

const V4R2_CODE: &str = "te6ccgECFAEAAtQAART/APSkE/S88sgLAQIBIAIDAgFIBAUE+PKDCNcYINMf0x/THwL4I7vyZO1E0NMf0x/T//QE0VFDuvKhUVG68qIF+QFUEGT5EPKj+AAkpMjLH1JAyx9SMMv/UhD0AMntVPgPAdMHIcAAn2xRkyDXSpbTB9QC+wDoMOAhwAHjACHAAuMAAcADkTDjDQOkyMsfEssfy/8QERITAubQAdDTAyFxsJJfBOAi10nBIJJfBOAC0x8hghBwbHVnvSKCEGRzdHK9sJJfBeAD+kAwIPpEAcjKB8v/ydDtRNCBAUDXIfQEMFyBAQj0Cm+hMbOSXwfgBdM/yCWCEHBsdWe6kjgw4w0DghBkc3RyupJfBuMNBgcCASAICQB4AfoA9AQw+CdvIjBQCqEhvvLgUIIQcGx1Z4MesXCAGFAEywUmzxZY+gIZ9ADLaRfLH1Jgyz8gyYBA+wAGAIpQBIEBCPRZMO1E0IEBQNcgyAHPFvQAye1UAXKwjiOCEGRzdHKDHrFwgBhQBcsFUAPPFiP6AhPLassfyz/JgED7AJJfA+ICASAKCwBZvSQrb2omhAgKBrkPoCGEcNQICEekk30pkQzmkD6f+YN4EoAbeBAUiYcVnzGEAgFYDA0AEbjJftRNDXCx+AA9sp37UTQgQFA1yH0BDACyMoHy//J0AGBAQj0Cm+hMYAIBIA4PABmtznaiaEAga5Drhf/AABmvHfaiaEAQa5DrhY/AAG7SB/oA1NQi+QAFyMoHFcv/ydB3dIAYyMsFywIizxZQBfoCFMtrEszMyXP7AMhAFIEBCPRR8qcCAHCBAQjXGPoA0z/IVCBHgQEI9FHyp4IQbm90ZXB0gBjIywXLAlAGzxZQBPoCFMtqEssfyz/Jc/sAAgBsgQEI1xj6ANM/MFIkgQEI9Fnyp4IQZHN0cnB0gBjIywXLAlAFzxZQA/oCE8tqyx8Syz/Jc/sAAAr0AMntVA==";
const V5R1_CODE_HEX: &str = "b5ee9c7241021401000281000114ff00f4a413f4bcf2c80b01020120020d020148030402dcd020d749c120915b8f6320d70b1f2082106578746ebd21821073696e74bdb0925f03e082106578746eba8eb48020d72101d074d721fa4030fa44f828fa443058bd915be0ed44d0810141d721f4058307f40e6fa1319130e18040d721707fdb3ce03120d749810280b99130e070e2100f020120050c020120060902016e07080019adce76a2684020eb90eb85ffc00019af1df6a2684010eb90eb858fc00201480a0b0017b325fb51341c75c875c2c7e00011b262fb513435c280200019be5f0f6a2684080a0eb90fa02c0102f20e011e20d70b1f82107369676ebaf2e08a7f0f01e68ef0eda2edfb218308d722028308d723208020d721d31fd31fd31fed44d0d200d31f20d31fd3ffd70a000af90140ccf9109a28945f0adb31e1f2c087df02b35007b0f2d0845125baf2e0855036baf2e086f823bbf2d0882292f800de01a47fc8ca00cb1f01cf16c9ed542092f80fde70db3cd81003f6eda2edfb02f404216e926c218e4c0221d73930709421c700b38e2d01d72820761e436c20d749c008f2e09320d74ac002f2e09320d71d06c712c2005230b0f2d089d74cd7393001a4e86c128407bbf2e093d74ac000f2e093ed55e2d20001c000915be0ebd72c08142091709601d72c081c12e25210b1e30f20d74a111213009601fa4001fa44f828fa443058baf2e091ed44d0810141d718f405049d7fc8ca0040048307f453f2e08b8e14038307f45bf2e08c22d70a00216e01b3b0f2d090e2c85003cf1612f400c9ed54007230d72c08248e2d21f2e092d200ed44d0d2005113baf2d08f54503091319c01810140d721d70a00f2e08ee2c8ca0058cf16c9ed5493f2c08de20010935bdb31e1d74cd0b4d6c35e";

/// Send mode: pay transfer fees separately from the value.
pub const MODE_PAY_FEES_SEPARATELY: u8 = 1;
/// Send mode: ignore errors in the action phase.
pub const MODE_IGNORE_ERRORS: u8 = 2;

/// Which standard wallet contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalletVersion {
    /// Wallet v4 revision 2 (signature first, up to 4 messages).
    V4r2,
    /// Wallet v5 revision 1 (W5; signature last, out-action list).
    V5r1,
    /// COCOON's machine wallet (signature first, up to 4 messages, an owner who can take it
    /// back): see [`crate::cocoon_wallet`]. Made with [`Wallet::cocoon`], never from a phrase.
    Cocoon,
}

impl std::str::FromStr for WalletVersion {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "v4r2" | "v4" => Ok(WalletVersion::V4r2),
            "v5r1" | "v5" | "w5" => Ok(WalletVersion::V5r1),
            _ => Err(ChainError::Unknown(format!(
                "unknown wallet version {s:?} (v4r2 or v5r1)"
            ))),
        }
    }
}

/// The code cell of a wallet version (decoded once; every transfer needs it for the address).
pub fn wallet_code(version: WalletVersion) -> Cell {
    static V4R2: std::sync::LazyLock<Cell> =
        std::sync::LazyLock::new(|| from_boc_base64(V4R2_CODE).expect("embedded v4r2 code"));
    static V5R1: std::sync::LazyLock<Cell> = std::sync::LazyLock::new(|| {
        from_boc(&hex::decode(V5R1_CODE_HEX).expect("hex")).expect("embedded v5r1 code")
    });
    match version {
        WalletVersion::V4r2 => V4R2.clone(),
        WalletVersion::V5r1 => V5R1.clone(),
        WalletVersion::Cocoon => crate::cocoon_wallet::code(),
    }
}

/// One message a wallet sends.
#[derive(Clone, Debug)]
pub struct OutMessage {
    /// Destination.
    pub to: Address,
    /// Value in nanotons.
    pub value: u128,
    /// Whether the message bounces back if the destination fails.
    pub bounce: bool,
    /// Body (empty when `None`).
    pub body: Option<Cell>,
    /// StateInit that deploys the destination.
    pub init: Option<StateInit>,
    /// Send mode (`MODE_PAY_FEES_SEPARATELY` is the usual one).
    pub mode: u8,
}

impl OutMessage {
    /// A plain transfer that pays its fees separately.
    pub fn transfer(to: Address, value: u128, body: Option<Cell>) -> Self {
        OutMessage {
            to,
            value,
            bounce: true,
            body,
            init: None,
            mode: MODE_PAY_FEES_SEPARATELY,
        }
    }

    /// The message as a `MessageRelaxed` cell (source filled in by the chain).
    pub fn to_cell(&self) -> Result<Cell> {
        let body = self.body.clone().unwrap_or_else(Cell::empty_cell);
        let msg = OwnedRelaxedMessage {
            info: RelaxedMsgInfo::Int(RelaxedIntMsgInfo {
                ihr_disabled: true,
                bounce: self.bounce,
                bounced: false,
                src: None,
                dst: self.to.to_std().into(),
                value: CurrencyCollection::new(self.value),
                extra_flags: Default::default(),
                fwd_fee: Tokens::ZERO,
                created_lt: 0,
                created_at: 0,
            }),
            init: self.init.clone(),
            // Explicit: the automatic layout can pick "plain" for bodies that then overflow.
            layout: Some(MessageLayout {
                init_to_cell: true,
                body_to_cell: body.bit_len() > 0 || body.reference_count() > 0,
            }),
            body: body.into(),
        };
        Ok(CellBuilder::build_from(msg)?)
    }
}

/// A wallet: version, public key and wallet id (which also selects the network for v5r1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    /// Contract version.
    pub version: WalletVersion,
    /// The signing Ed25519 public key.
    pub public_key: [u8; 32],
    /// Wallet id (subwallet); defaults follow the wallet apps (0 for COCOON's wallet).
    pub wallet_id: i32,
    /// COCOON's wallet only: the owner, who can take the wallet back.
    pub owner: Option<Address>,
}

impl Wallet {
    /// The default wallet of a key on a network (workchain 0, subwallet 0).
    pub fn new(version: WalletVersion, public_key: [u8; 32], network: Network) -> Self {
        let wallet_id = match version {
            WalletVersion::V4r2 => 698_983_191,
            // W5 client context: 1 bit flag, workchain 0 (int8), version 0, subwallet 0 (15 bits).
            WalletVersion::V5r1 => network.global_id() ^ (0x8000_0000u32 as i32),
            WalletVersion::Cocoon => 0,
        };
        Wallet {
            version,
            public_key,
            wallet_id,
            owner: None,
        }
    }

    /// COCOON's machine wallet of the machine key `public_key`, owned by `owner` (the
    /// runners' subwallet 0).
    pub fn cocoon(public_key: [u8; 32], owner: Address) -> Self {
        Wallet {
            version: WalletVersion::Cocoon,
            public_key,
            wallet_id: 0,
            owner: Some(owner),
        }
    }

    /// Initial data of the wallet contract (seqno 0, no plugins / extensions).
    pub fn initial_data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        match self.version {
            WalletVersion::V4r2 => {
                b.store_u32(0)?;
                b.store_u32(self.wallet_id as u32)?;
                b.store_raw(&self.public_key, 256)?;
                b.store_bit_zero()?;
            }
            WalletVersion::V5r1 => {
                b.store_bit_one()?; // signature auth allowed
                b.store_u32(0)?;
                b.store_u32(self.wallet_id as u32)?;
                b.store_raw(&self.public_key, 256)?;
                b.store_bit_zero()?;
            }
            WalletVersion::Cocoon => {
                let owner = self.owner.as_ref().ok_or_else(|| {
                    ChainError::InvalidKey("a COCOON wallet needs its owner's address".into())
                })?;
                return crate::cocoon_wallet::initial_data(&self.public_key, owner);
            }
        }
        Ok(b.build()?)
    }

    /// StateInit that deploys the wallet.
    pub fn state_init(&self) -> Result<StateInit> {
        Ok(StateInit {
            split_depth: None,
            special: None,
            code: Some(wallet_code(self.version)),
            data: Some(self.initial_data()?),
            libraries: Default::default(),
        })
    }

    /// The wallet's address (workchain 0).
    pub fn address(&self) -> Result<Address> {
        crate::contracts::address_of(&self.state_init()?)
    }

    /// The signed body of a transfer of up to 4 (v4r2) or 255 (v5r1) messages.
    pub fn transfer_body(
        &self,
        keys: &Keypair,
        seqno: u32,
        valid_until: u32,
        messages: &[OutMessage],
    ) -> Result<Cell> {
        if keys.public_key() != self.public_key {
            return Err(ChainError::InvalidKey(
                "key does not belong to this wallet".into(),
            ));
        }
        let max = match self.version {
            WalletVersion::V4r2 | WalletVersion::Cocoon => 4,
            WalletVersion::V5r1 => 255,
        };
        if messages.len() > max {
            return Err(ChainError::Refused(format!(
                "at most {max} messages per transfer"
            )));
        }
        match self.version {
            WalletVersion::V4r2 | WalletVersion::Cocoon => {
                let mut signing = CellBuilder::new();
                signing.store_u32(self.wallet_id as u32)?;
                signing.store_u32(valid_until)?;
                signing.store_u32(seqno)?;
                if self.version == WalletVersion::V4r2 {
                    signing.store_u8(0)?; // simple send (COCOON's wallet has no such op)
                }
                for m in messages {
                    signing.store_u8(m.mode)?;
                    signing.store_reference(m.to_cell()?)?;
                }
                let signing_cell = signing.clone().build()?;
                let signature = keys.sign(signing_cell.repr_hash().as_slice());
                let mut body = CellBuilder::new();
                body.store_raw(&signature, 512)?;
                body.store_builder(&signing)?;
                Ok(body.build()?)
            }
            WalletVersion::V5r1 => {
                // out_list$_ prev:^OutList action:OutAction; action_send_msg#0ec3c86d mode:uint8 ^msg
                let mut list = Cell::empty_cell();
                for m in messages {
                    let mut b = CellBuilder::new();
                    b.store_reference(list)?;
                    b.store_u32(0x0ec3_c86d)?;
                    b.store_u8(m.mode | MODE_IGNORE_ERRORS)?;
                    b.store_reference(m.to_cell()?)?;
                    list = b.build()?;
                }
                let mut signing = CellBuilder::new();
                signing.store_u32(0x7369_676e)?; // "sign": signed external
                signing.store_u32(self.wallet_id as u32)?;
                signing.store_u32(valid_until)?;
                signing.store_u32(seqno)?;
                if messages.is_empty() {
                    signing.store_bit_zero()?;
                } else {
                    signing.store_bit_one()?;
                    signing.store_reference(list)?;
                }
                signing.store_bit_zero()?; // no extended actions
                let signature = keys.sign(signing.clone().build()?.repr_hash().as_slice());
                signing.store_raw(&signature, 512)?;
                Ok(signing.build()?)
            }
        }
    }

    /// The external message carrying a transfer, with the StateInit when `seqno` is 0 (the
    /// first transfer deploys the wallet).
    pub fn transfer_message(
        &self,
        keys: &Keypair,
        seqno: u32,
        valid_until: u32,
        messages: &[OutMessage],
    ) -> Result<Cell> {
        let body = self.transfer_body(keys, seqno, valid_until, messages)?;
        external_message(
            self.address()?,
            if seqno == 0 {
                Some(self.state_init()?)
            } else {
                None
            },
            body,
        )
    }
}

/// The wallet file `cocoon wallet new` and `cocoon chain init` write: the 24 words (a
/// secret: the file is written readable by its owner only), the version, the address.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct WalletFile {
    /// The 24 words.
    pub mnemonic: String,
    /// Contract version.
    pub version: WalletVersion,
    /// The address (informational; derived again on open).
    pub address: Address,
}

impl WalletFile {
    /// Reads a wallet file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| {
            ChainError::InvalidKey(format!("{} is not a wallet file: {e}", path.display()))
        })
    }

    /// Writes it (0600).
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("wallet file serializes");
        crate::files::write_secret(path, text.as_bytes())
    }

    /// The key pair and the wallet on `network`.
    pub fn open(&self, network: Network) -> Result<(Keypair, Wallet)> {
        open(&self.mnemonic, self.version, network)
    }
}

/// The key pair of a mnemonic and its wallet of `version` on `network`.
pub fn open(phrase: &str, version: WalletVersion, network: Network) -> Result<(Keypair, Wallet)> {
    if version == WalletVersion::Cocoon {
        return Err(ChainError::InvalidKey(
            "a COCOON wallet is its machine's key and its owner's address, not a phrase".into(),
        ));
    }
    let keys = crate::mnemonic::Mnemonic::parse(phrase)?.keypair();
    let wallet = Wallet::new(version, keys.public_key(), network);
    Ok((keys, wallet))
}

/// An inbound external message to `to`.
pub fn external_message(to: Address, init: Option<StateInit>, body: Cell) -> Result<Cell> {
    let msg = OwnedMessage {
        info: MsgInfo::ExtIn(ExtInMsgInfo {
            src: None,
            dst: to.to_std().into(),
            import_fee: Tokens::ZERO,
        }),
        init,
        layout: Some(MessageLayout {
            init_to_cell: true,
            body_to_cell: true,
        }),
        body: body.into(),
    };
    let mut b = CellBuilder::new();
    msg.store_into(&mut b, Cell::empty_context())?;
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mnemonic::Mnemonic;

    const PHRASE: &str =
        "hospital stove relief fringe tongue always charge angry urge sentence again \
        match nerve inquiry senior coconut label tumble carry category beauty bean road solution";

    /// Published mnemonic (@ton/crypto's test vector) → addresses as @ton/ton 16.3.0 derives them.
    #[test]
    fn mnemonic_to_address_matches_ton_wallet_libraries() {
        let keys = Mnemonic::parse(PHRASE).unwrap().keypair();
        let v4 = Wallet::new(WalletVersion::V4r2, keys.public_key(), Network::Mainnet);
        assert_eq!(
            v4.address().unwrap().to_raw(),
            "0:1867eadc85b6872b8214902bdcca5dd5f2ca5c0273bc20144236f4b76ab7be09"
        );
        let v5 = Wallet::new(WalletVersion::V5r1, keys.public_key(), Network::Mainnet);
        assert_eq!(
            v5.address().unwrap().to_raw(),
            "0:d22ce1556a6359cddcb82ee95c95c08110591145e67b5ac70108b030dcf839de"
        );
        let v5t = Wallet::new(WalletVersion::V5r1, keys.public_key(), Network::Testnet);
        assert_eq!(
            v5t.address().unwrap().to_raw(),
            "0:b6c371fea1f9380d2790ca77ebe5f5220dd8958f16288bc3c6cd6f5977b5feb3"
        );
    }

    #[test]
    fn a_transfer_needs_the_wallets_own_key() {
        let w = Wallet::new(
            WalletVersion::V4r2,
            Keypair::from_seed([1; 32]).public_key(),
            Network::Local,
        );
        let err = w
            .transfer_body(&Keypair::from_seed([2; 32]), 0, 0, &[])
            .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// A 608-bit voucher body next to a full internal-message header overflows one cell unless
    /// it goes to a reference (tycho-types' automatic layout picks "plain" for it).
    #[test]
    fn a_voucher_sized_body_goes_to_a_reference() {
        let keys = Keypair::from_seed([1; 32]);
        let w = Wallet::new(WalletVersion::V5r1, keys.public_key(), Network::Local);
        let key = Keypair::from_seed([9; 32]);
        let v = crate::voucher::Voucher {
            op: 1,
            query_id: 1,
            counter: 100,
            target: Address::new([3; 32]),
        }
        .sign(&key, Address::new([4; 32]))
        .unwrap()
        .body()
        .unwrap();
        let m = OutMessage::transfer(Address::new([3; 32]), 50_000_000, Some(v.clone()));
        let cell = m.to_cell().unwrap();
        // No init: the only reference is the body, stored whole.
        assert_eq!(cell.reference_count(), 1);
        assert_eq!(cell.reference(0).unwrap().repr_hash(), v.repr_hash());
        w.transfer_message(&keys, 1, 2, &[m]).unwrap();
    }
}
