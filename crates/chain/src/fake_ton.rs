//! The reference's "fake TON": a root contract's state read from a JSON file instead of the
//! chain (`--disable-ton FILE` in COCOON's runners; its `spec/fake-ton/fake-ton-config.json`,
//! rendered). With it a network runs without any chain — no deposits, no vouchers redeemed —
//! and our roles can run beside reference roles that read the same file.
//!
//! The fields are those of the reference's TL `rootConfig.pseudo`; keys the reference ignores
//! (`model_names`, a proxy's `proxy_hash`) are ignored here too, and a missing field reads as
//! empty or zero, as there. Hashes are base64, contract codes hex bags of cells.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;

use crate::{Address, ChainError};

/// A proxy the fake root lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProxy {
    /// Its registration number.
    pub seqno: u32,
    /// Where workers dial it.
    pub workers: SocketAddr,
    /// Where clients dial it.
    pub clients: SocketAddr,
}

/// The root's state as the fake-TON file states it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakeTon {
    /// Allowed proxy image hashes.
    pub proxy_hashes: Vec<[u8; 32]>,
    /// Allowed worker image hashes.
    pub worker_hashes: Vec<[u8; 32]>,
    /// Registered proxies.
    pub proxies: Vec<FakeProxy>,
    /// What a client pays per adjusted token, nanotons.
    pub price_per_token: u128,
    /// What a worker earns per adjusted token, nanotons.
    pub worker_fee_per_token: u128,
    /// The root config's version (clients send it as `min_config_version`).
    pub version: u32,
    /// The parameters' version.
    pub params_version: u32,
    /// The proxy, worker and client contract code, as bags of cells (empty when absent).
    pub proxy_sc_code: Vec<u8>,
    /// See `proxy_sc_code`.
    pub worker_sc_code: Vec<u8>,
    /// See `proxy_sc_code`.
    pub client_sc_code: Vec<u8>,
    /// The root's owner.
    pub root_owner: Option<Address>,
}

impl FakeTon {
    /// Reads and parses `path`; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self, ChainError> {
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| ChainError::Layout {
            what: "fake-TON config",
            detail: format!("{}: {e}", path.display()),
        })
    }

    /// Parses the JSON text of a fake-TON file; the error names the field that is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let num = |k: &str| -> Result<u64, String> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(0),
                Some(x) => x
                    .as_u64()
                    .ok_or_else(|| format!("{k} must be a non-negative integer, got {x}")),
            }
        };
        let u32_of = |k: &str| -> Result<u32, String> {
            u32::try_from(num(k)?).map_err(|_| format!("{k} is out of range"))
        };
        let hashes = |k: &str| -> Result<Vec<[u8; 32]>, String> {
            let Some(list) = obj.get(k) else {
                return Ok(Vec::new());
            };
            let list = list
                .as_array()
                .ok_or_else(|| format!("{k} must be a list"))?;
            list.iter()
                .map(|h| {
                    let s = h
                        .as_str()
                        .ok_or_else(|| format!("{k}: {h} is not a string"))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| format!("{k}: {s:?} is not base64: {e}"))?;
                    <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| format!("{k}: {s:?} is not 32 bytes"))
                })
                .collect()
        };
        let code = |k: &str| -> Result<Vec<u8>, String> {
            match obj.get(k).and_then(|c| c.as_str()) {
                None | Some("") => Ok(Vec::new()),
                Some(hex_text) => hex::decode(hex_text).map_err(|e| format!("{k} is not hex: {e}")),
            }
        };
        let mut proxies = Vec::new();
        if let Some(list) = obj.get("registered_proxies") {
            let list = list.as_array().ok_or("registered_proxies must be a list")?;
            for (i, p) in list.iter().enumerate() {
                let seqno = p.get("seqno").and_then(|s| s.as_u64()).unwrap_or(0);
                let address = p
                    .get("address")
                    .and_then(|a| a.as_str())
                    .ok_or_else(|| format!("registered_proxies[{i}].address is missing"))?;
                // "<address for workers> <address for clients>", as the reference registers it.
                let mut parts = address.split_whitespace();
                let mut next = |what: &str| -> Result<SocketAddr, String> {
                    parts
                        .next()
                        .ok_or_else(|| {
                            format!(
                                "registered_proxies[{i}].address {address:?} has no {what} address"
                            )
                        })?
                        .parse()
                        .map_err(|e| format!("registered_proxies[{i}].address {address:?}: {e}"))
                };
                let workers = next("worker")?;
                let clients = next("client")?;
                proxies.push(FakeProxy {
                    seqno: u32::try_from(seqno)
                        .map_err(|_| format!("registered_proxies[{i}].seqno is out of range"))?,
                    workers,
                    clients,
                });
            }
        }
        let root_owner = match obj.get("root_owner_address").and_then(|a| a.as_str()) {
            None | Some("") => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|e| format!("root_owner_address {a:?}: {e}"))?,
            ),
        };
        Ok(FakeTon {
            proxy_hashes: hashes("proxy_hashes")?,
            worker_hashes: hashes("worker_hashes")?,
            proxies,
            price_per_token: u128::from(num("price_per_token")?),
            worker_fee_per_token: u128::from(num("worker_fee_per_token")?),
            version: u32_of("version")?,
            params_version: u32_of("params_version")?,
            proxy_sc_code: code("proxy_sc_code")?,
            worker_sc_code: code("worker_sc_code")?,
            client_sc_code: code("client_sc_code")?,
            root_owner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "proxy_hashes" : [ "ProxyProxyProxyProxyProxyProxyProxyProxyPro=" ],
      "worker_hashes" : [ "WorkerWorkerWorkerWorkerWorkerWorkerWorkerU=" ],
      "model_names" : [ "Qwen/Qwen3-8B" ],
      "registered_proxies" : [
        { "seqno" : 1, "address" : "127.0.0.1:11001 127.0.0.1:11002", "proxy_hash" : "ProxyProxyProxyProxyProxyProxyProxyProxyPro=" }
      ],
      "price_per_token" : 2,
      "worker_fee_per_token" : 1,
      "last_proxy_seqno" : 1,
      "version" : 3,
      "params_version" : 1,
      "proxy_sc_code" : "b5ee9c72",
      "root_owner_address" : "0QBgPMq7ye2WRcudRHK_-yjHwMXjeN-UCzAuoo06TR6hmgHV"
    }"#;

    #[test]
    fn the_references_fake_ton_file_reads_as_it_means_it() {
        let f = FakeTon::parse(SAMPLE).unwrap();
        assert_eq!(
            f.proxies,
            vec![FakeProxy {
                seqno: 1,
                workers: "127.0.0.1:11001".parse().unwrap(),
                clients: "127.0.0.1:11002".parse().unwrap(),
            }]
        );
        assert_eq!(
            (
                f.price_per_token,
                f.worker_fee_per_token,
                f.version,
                f.params_version
            ),
            (2, 1, 3, 1)
        );
        assert_eq!(f.proxy_hashes.len(), 1);
        assert_eq!(f.proxy_sc_code, vec![0xb5, 0xee, 0x9c, 0x72]);
        assert!(f.client_sc_code.is_empty());
        assert!(f.root_owner.is_some());
    }

    #[test]
    fn a_wrong_field_is_named() {
        let bad = |text: &str, needle: &str| {
            let e = FakeTon::parse(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        bad("[]", "not a JSON object");
        bad(r#"{"price_per_token": -1}"#, "price_per_token");
        bad(r#"{"proxy_hashes": ["abc"]}"#, "proxy_hashes");
        bad(
            r#"{"registered_proxies": [{"address": "127.0.0.1:1"}]}"#,
            "no client address",
        );
        bad(
            r#"{"registered_proxies": [{"address": "nowhere x"}]}"#,
            "registered_proxies[0]",
        );
        bad(r#"{"worker_sc_code": "zz"}"#, "worker_sc_code");
        assert_eq!(FakeTon::parse("{}").unwrap(), FakeTon::default());
    }
}
