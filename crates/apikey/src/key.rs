use std::fmt;

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a whole key in characters.
pub const KEY_LEN: usize = 64;
/// Length of the selector (and of the verifier) in characters.
pub const SELECTOR_LEN: usize = 32;

/// A key's characters: lowercase hex digits.
fn is_key_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

/// Why a string is not an API key. Messages never include the input: it may
/// be a real key with a typo, and errors end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("an API key is {KEY_LEN} characters long, this one has {0}")]
    Length(usize),
    #[error("an API key holds only lowercase hex digits [0-9a-f]; character {position} is not one")]
    NotHex { position: usize },
}

/// A whole API key: selector plus verifier. The verifier is secret, so
/// `Debug` shows only the selector and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    // Invariant: exactly KEY_LEN bytes of [0-9a-f].
    text: String,
}

impl ApiKey {
    /// A new key from the OS CSPRNG: 32 random bytes as lowercase hex.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN / 2];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random source failed");
        Self {
            text: hex::encode(bytes),
        }
    }

    /// Parses a key exactly as presented: no trimming, no case folding, since
    /// the hash is over the exact characters and a lenient parser would let
    /// two spellings of one key exist.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        // Every request through keygate and its Envoy module parses a key:
        // the common case (64 hex bytes) is one pass over the bytes, and
        // characters are counted only to say what is wrong.
        // (A fold, not `all`: no early exit, so the check vectorizes.)
        if input.len() == KEY_LEN && input.bytes().fold(true, |ok, b| ok & is_key_byte(b)) {
            return Ok(Self {
                text: input.to_owned(),
            });
        }
        let chars = input.chars().count();
        if chars != KEY_LEN {
            return Err(ParseError::Length(chars));
        }
        match input.bytes().position(|b| !is_key_byte(b)) {
            Some(position) => Err(ParseError::NotHex { position }),
            // 64 characters in other than 64 bytes: a multibyte one.
            None => Err(ParseError::Length(chars)),
        }
    }

    /// The first 32 characters: the public part, part of the storage path.
    pub fn selector(&self) -> Selector {
        Selector(self.selector_str().to_owned())
    }

    /// The selector, borrowed: for a look-up that needs no [`Selector`] of
    /// its own (a table probe on every request).
    pub fn selector_str(&self) -> &str {
        &self.text[..SELECTOR_LEN]
    }

    /// The last 32 characters. Secret: never log it.
    pub fn verifier(&self) -> &str {
        &self.text[SELECTOR_LEN..]
    }

    /// SHA-256 of the verifier's UTF-8 bytes, the value stored in Vault.
    pub fn verifier_hash(&self) -> VerifierHash {
        VerifierHash::of_verifier(self.verifier())
    }

    /// The whole key, for handing to a client. Secret: never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Constant-time comparison of this key's verifier hash with a stored one.
    pub fn verify(&self, stored: &VerifierHash) -> bool {
        self.verifier_hash().ct_eq(stored)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("selector", &self.selector().as_str())
            .finish_non_exhaustive()
    }
}

/// The public first half of a key; names the Vault secret that holds its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(String);

impl Selector {
    /// A selector as it appears in a storage path: 32 lowercase hex
    /// characters, the first half of a key.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == SELECTOR_LEN && text.bytes().all(is_key_byte)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex SHA-256 of a verifier, as stored in the record's `key` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierHash([u8; 32]);

impl VerifierHash {
    pub fn of_verifier(verifier: &str) -> Self {
        Self(Sha256::digest(verifier.as_bytes()).into())
    }

    /// Parses the stored hex form. Accepts upper case too, since other tools
    /// writing records may use it; the comparison is over bytes.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DOC_EXAMPLE: &str = "57b81d89804a48128f3bf3e73307a3e6c2c90e8ed1b34cd7a3073f3198d406da";

    #[rstest]
    fn a_selector_parses_only_as_32_lowercase_hex() {
        let key = ApiKey::parse(DOC_EXAMPLE).unwrap();
        assert_eq!(Selector::parse(&DOC_EXAMPLE[..32]), Some(key.selector()));
        for bad in [
            "",
            &DOC_EXAMPLE[..31],
            DOC_EXAMPLE,
            "57B81D89804A48128F3BF3E73307A3E6",
            "57b81d89804a48128f3bf3e73307a3eg",
        ] {
            assert_eq!(Selector::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn splits_the_documented_example_in_half() {
        let key = ApiKey::parse(DOC_EXAMPLE).unwrap();
        assert_eq!(key.selector().as_str(), "57b81d89804a48128f3bf3e73307a3e6");
        assert_eq!(key.verifier(), "c2c90e8ed1b34cd7a3073f3198d406da");
    }

    #[test]
    fn hash_is_sha256_of_the_verifier_text() {
        let key = ApiKey::parse(DOC_EXAMPLE).unwrap();
        // printf %s c2c90e8ed1b34cd7a3073f3198d406da | sha256sum
        assert_eq!(
            key.verifier_hash().to_hex(),
            "376da96cbf4e25426b1d88aa19df42b3beccf08f84c08e7e68e5c7f17e1d7ef6"
        );
    }

    #[rstest]
    #[case::empty("", ParseError::Length(0))]
    #[case::short_63(&DOC_EXAMPLE[..63], ParseError::Length(63))]
    #[case::long_65(&format!("{DOC_EXAMPLE}0"), ParseError::Length(65))]
    #[case::upper_hex(&DOC_EXAMPLE.to_uppercase(), ParseError::NotHex { position: 2 })]
    #[case::non_hex(&format!("{}g", &DOC_EXAMPLE[..63]), ParseError::NotHex { position: 63 })]
    #[case::padded(&format!(" {}", &DOC_EXAMPLE[..63]), ParseError::NotHex { position: 0 })]
    #[case::multibyte(&format!("é{}", &DOC_EXAMPLE[..62]), ParseError::Length(63))]
    fn rejects_malformed_keys(#[case] input: &str, #[case] expected: ParseError) {
        assert_eq!(ApiKey::parse(input), Err(expected));
    }

    #[test]
    fn errors_and_debug_never_show_the_verifier() {
        let key = ApiKey::generate();
        assert!(!format!("{key:?}").contains(key.verifier()));
        let mut bad = key.expose().to_owned();
        bad.push('0');
        let err = ApiKey::parse(&bad).unwrap_err().to_string();
        assert!(!err.contains(key.verifier()), "{err}");
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_eq!(ApiKey::parse(a.expose()).unwrap(), a);
        assert_ne!(a, b);
    }

    #[test]
    fn verify_accepts_own_hash_and_rejects_another() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert!(a.verify(&a.verifier_hash()));
        assert!(!a.verify(&b.verifier_hash()));
        let upper = VerifierHash::from_hex(&a.verifier_hash().to_hex().to_uppercase()).unwrap();
        assert!(a.verify(&upper));
    }
}
