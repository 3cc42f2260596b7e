//! API keys as a type: `sk-sntl-` + 43 URL-safe characters (256 random bits). Only the
//! SHA-256 of the whole secret is ever stored; the public id and a short prefix identify it in
//! listings and audit records.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::store::hex;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "sk-sntl-";
/// Random bytes per key (256 bits; SPEC asks for at least 192).
const RANDOM_BYTES: usize = 32;
/// Characters of the secret shown as its prefix (`sk-sntl-` + 4).
const SHOWN: usize = KEY_PREFIX.len() + 4;

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the API key does not start with sk-sntl-")]
    Prefix,
    #[error("the API key has the wrong length or characters")]
    Body,
}

/// A key presented by a client, checked for shape and hashed; the secret itself is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    hash: [u8; 32],
}

impl PresentedKey {
    /// Checks the shape of `raw` and hashes it.
    pub fn parse(raw: &str) -> Result<Self, KeyFormatError> {
        let body = raw.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        let valid = (32..=128).contains(&body.len())
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(KeyFormatError::Body);
        }
        Ok(Self { hash: hash(raw) })
    }

    /// SHA-256 of the whole key.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
}

/// A freshly minted key: the secret (shown once) and what is stored about it.
#[derive(Debug)]
pub struct NewKey {
    pub secret: Secret,
    pub id: String,
    pub prefix: String,
    pub hash_hex: String,
}

/// Mints a key from the operating system's random source.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    from_secret(&secret)
}

/// Describes an existing secret (bootstrap keys from `key_env`).
pub fn from_secret(secret: &str) -> NewKey {
    let digest = hash(secret);
    let mut id_bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut id_bytes);
    NewKey {
        secret: Secret::new(secret),
        id: format!("key_{}", hex(&id_bytes)),
        prefix: secret.chars().take(SHOWN).collect(),
        hash_hex: hex(&digest),
    }
}

/// SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_consistently() {
        let k = generate();
        let secret = k.secret.expose();
        assert!(secret.starts_with(KEY_PREFIX));
        assert_eq!(secret.len(), KEY_PREFIX.len() + 43);
        assert_eq!(k.prefix.len(), 12);
        assert!(k.id.starts_with("key_") && k.id.len() == 20);
        let presented = PresentedKey::parse(secret).unwrap();
        assert_eq!(hex(presented.hash()), k.hash_hex);
        assert_ne!(generate().hash_hex, k.hash_hex);
        assert!(
            !format!("{k:?}").contains(&secret[10..]),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn malformed_keys_are_refused_before_lookup() {
        assert_eq!(
            PresentedKey::parse("sk-other-abc"),
            Err(KeyFormatError::Prefix)
        );
        assert_eq!(
            PresentedKey::parse("sk-sntl-short"),
            Err(KeyFormatError::Body)
        );
        assert_eq!(
            PresentedKey::parse(&format!("sk-sntl-{}!", "a".repeat(40))),
            Err(KeyFormatError::Body)
        );
        assert!(PresentedKey::parse(&format!("sk-sntl-{}", "a".repeat(40))).is_ok());
    }
}
