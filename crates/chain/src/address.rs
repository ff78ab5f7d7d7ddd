//! TON addresses: raw form `0:<hex>` and the user-friendly base64 form with its flags.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

use crate::error::ChainError;

/// A standard (`addr_std`) TON address: workchain and 256-bit account id.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// Workchain id (0 for basechain, −1 for masterchain).
    pub workchain: i8,
    /// Account id (the hash of the contract's initial state).
    pub hash: [u8; 32],
}

/// How a user-friendly address string is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FriendlyFlags {
    /// Bounceable (`EQ…`) or not (`UQ…`): whether wallets should send bounceable messages.
    pub bounceable: bool,
    /// Testnet-only address (`kQ…` / `0Q…`).
    pub testnet: bool,
}

impl Address {
    /// Address in workchain 0.
    pub fn new(hash: [u8; 32]) -> Self {
        Address { workchain: 0, hash }
    }

    /// From `tycho-types`' `StdAddr` (anycast is dropped; nothing here uses it).
    pub fn from_std(addr: &StdAddr) -> Self {
        Address {
            workchain: addr.workchain,
            hash: addr.address.0,
        }
    }

    /// To `tycho-types`' `StdAddr`.
    pub fn to_std(&self) -> StdAddr {
        StdAddr::new(self.workchain, HashBytes(self.hash))
    }

    /// Raw form `wc:hex`.
    pub fn to_raw(&self) -> String {
        format!("{}:{}", self.workchain, hex::encode(self.hash))
    }

    /// User-friendly url-safe base64 form (48 characters).
    pub fn to_friendly(&self, flags: FriendlyFlags) -> String {
        let mut buf = [0u8; 36];
        let mut tag = if flags.bounceable { 0x11 } else { 0x51 };
        if flags.testnet {
            tag |= 0x80;
        }
        buf[0] = tag;
        buf[1] = self.workchain as u8;
        buf[2..34].copy_from_slice(&self.hash);
        let crc = crc16_xmodem(&buf[..34]);
        buf[34..].copy_from_slice(&crc.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE.encode(buf)
    }

    /// Parses raw or user-friendly (url-safe or standard base64) forms, returning the flags of
    /// a friendly form.
    pub fn parse_with_flags(text: &str) -> Result<(Self, Option<FriendlyFlags>), ChainError> {
        let text = text.trim();
        let bad = |why| ChainError::InvalidAddress(text.to_string(), why);
        if let Some((wc, hash)) = text.split_once(':') {
            let workchain: i8 = wc
                .parse()
                .map_err(|_| bad("workchain is not a small integer"))?;
            let bytes = hex::decode(hash).map_err(|_| bad("account id is not hex"))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("account id is not 32 bytes"))?;
            return Ok((Address { workchain, hash }, None));
        }
        if text.len() != 48 {
            return Err(bad(
                "expected 0:<64 hex digits> or a 48-character friendly address",
            ));
        }
        let normalized = text.replace('+', "-").replace('/', "_");
        let buf = base64::engine::general_purpose::URL_SAFE
            .decode(normalized)
            .map_err(|_| bad("not base64"))?;
        if buf.len() != 36 {
            return Err(bad("decodes to the wrong length"));
        }
        let crc = u16::from_be_bytes([buf[34], buf[35]]);
        if crc16_xmodem(&buf[..34]) != crc {
            return Err(bad("checksum mismatch (a typo?)"));
        }
        let tag = buf[0];
        let testnet = tag & 0x80 != 0;
        let bounceable = match tag & 0x7f {
            0x11 => true,
            0x51 => false,
            _ => return Err(bad("unknown flags byte")),
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&buf[2..34]);
        Ok((
            Address {
                workchain: buf[1] as i8,
                hash,
            },
            Some(FriendlyFlags {
                bounceable,
                testnet,
            }),
        ))
    }
}

impl FromStr for Address {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self, ChainError> {
        Address::parse_with_flags(s).map(|(a, _)| a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_raw())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_raw())
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_raw())
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// CRC-16/XMODEM, the checksum of user-friendly addresses.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector computed by @ton/core 0.63.1 (`Address.toString`) for a v4r2 wallet.
    const RAW: &str = "0:1867eadc85b6872b8214902bdcca5dd5f2ca5c0273bc20144236f4b76ab7be09";

    #[test]
    fn friendly_forms_match_ton_core() {
        let a: Address = RAW.parse().unwrap();
        let f = |bounceable, testnet| {
            a.to_friendly(FriendlyFlags {
                bounceable,
                testnet,
            })
        };
        assert_eq!(
            f(true, false),
            "EQAYZ-rchbaHK4IUkCvcyl3V8spcAnO8IBRCNvS3are-CeFV"
        );
        assert_eq!(
            f(false, false),
            "UQAYZ-rchbaHK4IUkCvcyl3V8spcAnO8IBRCNvS3are-CbyQ"
        );
        assert_eq!(
            f(true, true),
            "kQAYZ-rchbaHK4IUkCvcyl3V8spcAnO8IBRCNvS3are-CVrf"
        );
        for s in [
            f(true, false),
            f(false, false),
            f(true, true),
            RAW.to_string(),
        ] {
            assert_eq!(s.parse::<Address>().unwrap(), a);
        }
        let (_, flags) = Address::parse_with_flags(&f(false, true)).unwrap();
        assert_eq!(
            flags,
            Some(FriendlyFlags {
                bounceable: false,
                testnet: true
            })
        );
        // Standard base64 alphabet is accepted too.
        assert_eq!(
            "EQAYZ+rchbaHK4IUkCvcyl3V8spcAnO8IBRCNvS3are+CeFV"
                .parse::<Address>()
                .unwrap(),
            a
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let cases = [
            ("0:1234", "not 32 bytes"),
            (
                "x:1867eadc85b6872b8214902bdcca5dd5f2ca5c0273bc20144236f4b76ab7be09",
                "workchain",
            ),
            (
                "0:zz67eadc85b6872b8214902bdcca5dd5f2ca5c0273bc20144236f4b76ab7be09",
                "not hex",
            ),
            (
                "EQAYZ-rchbaHK4IUkCvcyl3V8spcAnO8IBRCNvS3are-CeFW",
                "checksum",
            ),
            ("hello", "expected"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }
}
