//! TON's 24-word mnemonics (tonlib's scheme, not BIP-39 seeds): the words are an HMAC-SHA512
//! key; a valid phrase's PBKDF2 "seed version" hash starts with a zero byte; the wallet key
//! is the first 32 bytes of PBKDF2-HMAC-SHA512(entropy, "TON default seed", 100 000).

use std::num::NonZeroU32;

use ring::{hmac, pbkdf2};

use crate::error::ChainError;
use crate::keys::Keypair;

const WORDLIST: &str = include_str!("../res/bip39-english.txt");
const PBKDF_ITERATIONS: u32 = 100_000;
/// Number of words in a phrase.
pub const WORDS: usize = 24;

fn wordlist() -> impl Iterator<Item = &'static str> {
    WORDLIST.lines()
}

/// A checked 24-word mnemonic.
#[derive(Clone, PartialEq, Eq)]
pub struct Mnemonic {
    words: Vec<String>,
}

impl std::fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mnemonic(24 words, hidden)")
    }
}

impl Mnemonic {
    /// A new random phrase (draws words until the TON checksum holds; ~256 tries).
    pub fn generate() -> Self {
        let list: Vec<&str> = wordlist().collect();
        loop {
            let mut raw = [0u8; WORDS * 2];
            getrandom::fill(&mut raw).expect("OS random number generator");
            let words: Vec<String> = raw
                .chunks(2)
                .map(|c| list[(u16::from_le_bytes([c[0], c[1]]) as usize) % 2048].to_string())
                .collect();
            if is_basic_seed(&entropy(&words)) {
                return Mnemonic { words };
            }
        }
    }

    /// Parses space-separated words (case and extra spaces ignored), checking each word and the
    /// checksum.
    pub fn parse(phrase: &str) -> Result<Self, ChainError> {
        let words: Vec<String> = phrase
            .split_whitespace()
            .map(|w| w.to_lowercase())
            .collect();
        if words.len() != WORDS {
            return Err(ChainError::InvalidMnemonic(format!(
                "expected {WORDS} words, got {}",
                words.len()
            )));
        }
        for (i, w) in words.iter().enumerate() {
            if !wordlist().any(|known| known == w) {
                return Err(ChainError::InvalidMnemonic(format!(
                    "word {} ({w:?}) is not in the word list",
                    i + 1
                )));
            }
        }
        if !is_basic_seed(&entropy(&words)) {
            return Err(ChainError::InvalidMnemonic(
                "checksum does not match (a word is wrong or out of order)".into(),
            ));
        }
        Ok(Mnemonic { words })
    }

    /// The words, space-separated.
    pub fn phrase(&self) -> String {
        self.words.join(" ")
    }

    /// The wallet key pair this phrase stands for.
    pub fn keypair(&self) -> Keypair {
        let mut seed = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(PBKDF_ITERATIONS).unwrap(),
            b"TON default seed",
            &entropy(&self.words),
            &mut seed,
        );
        Keypair::from_seed(seed[..32].try_into().unwrap())
    }
}

fn entropy(words: &[String]) -> [u8; 64] {
    let key = hmac::Key::new(hmac::HMAC_SHA512, words.join(" ").as_bytes());
    hmac::sign(&key, b"").as_ref().try_into().unwrap()
}

fn is_basic_seed(entropy: &[u8; 64]) -> bool {
    let mut out = [0u8; 64];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new((PBKDF_ITERATIONS / 256).max(1)).unwrap(),
        b"TON seed version",
        entropy,
        &mut out,
    );
    out[0] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vector from @ton/crypto 3.3.0's `mnemonic.spec` (secret key = seed ‖ public).
    const PHRASE: &str =
        "hospital stove relief fringe tongue always charge angry urge sentence again \
        match nerve inquiry senior coconut label tumble carry category beauty bean road solution";
    const SECRET: &str = "9d659a6c2234db7f6e4f977e6e8653b9f5946d557163f31034011375d8f3f97d\
        f6c450a16bb1c514e22f1977e390a3025599aa1e7b00068a6aacf2119484c1bd";

    #[test]
    fn published_vector_gives_the_published_key() {
        let keys = Mnemonic::parse(PHRASE).unwrap().keypair();
        assert_eq!(hex::encode(keys.seed()), &SECRET[..64]);
        assert_eq!(hex::encode(keys.public_key()), &SECRET[64..]);
    }

    #[test]
    fn generated_phrases_parse_back() {
        let m = Mnemonic::generate();
        assert_eq!(Mnemonic::parse(&m.phrase()).unwrap(), m);
    }

    #[test]
    fn wrong_phrases_are_refused_with_the_reason() {
        let swapped = PHRASE.replacen("hospital stove", "stove hospital", 1);
        let cases = [
            ("hospital stove", "expected 24 words, got 2"),
            (
                &*PHRASE.replace("hospital", "hospitals"),
                "word 1 (\"hospitals\")",
            ),
            (&*swapped, "checksum"),
        ];
        for (phrase, why) in cases {
            let err = Mnemonic::parse(phrase).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
