//! API key secrets. A secret exists only at the edge: it is generated (or imported) there,
//! shown once to whoever created it, and only its SHA-256 ([`SecretHash`]) and a short
//! public prefix enter the replicated state. `Debug` never prints a secret.

use crate::error::ValidationError;
use crate::limits::{MAX_IMPORTED_SECRET_LEN, MIN_IMPORTED_SECRET_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The recognisable prefix of generated secrets, so that leaked keys are easy to spot in
/// code and logs (and by secret scanners).
pub const GENERATED_PREFIX: &str = "qdk_";
/// Random characters after the prefix: 44 base-62 characters carry 261 bits of entropy.
pub const GENERATED_RANDOM_CHARS: usize = 44;
/// Characters of a generated secret shown publicly (the prefix plus four random ones).
pub const PUBLIC_PREFIX_LEN: usize = 8;
/// Characters of an imported secret shown publicly.
pub const IMPORTED_PUBLIC_PREFIX_LEN: usize = 4;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A plaintext API key secret. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Could not read the operating system's random source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct EntropyError(String);

impl Secret {
    /// A fresh secret from the operating system's random source: `qdk_` and 44 base-62
    /// characters, drawn by rejection sampling so every character is uniform.
    pub fn generate() -> Result<Secret, EntropyError> {
        let mut out = String::with_capacity(GENERATED_PREFIX.len() + GENERATED_RANDOM_CHARS);
        out.push_str(GENERATED_PREFIX);
        let mut buf = [0u8; 64];
        while out.len() < GENERATED_PREFIX.len() + GENERATED_RANDOM_CHARS {
            getrandom::fill(&mut buf).map_err(|e| EntropyError(e.to_string()))?;
            for &b in &buf {
                // 248 = 4 * 62: rejecting larger bytes keeps the choice uniform.
                if b < 248 && out.len() < GENERATED_PREFIX.len() + GENERATED_RANDOM_CHARS {
                    out.push(ALPHABET[usize::from(b % 62)] as char);
                }
            }
        }
        Ok(Secret(out))
    }

    /// A secret supplied by the caller (an import): 20 to 128 printable ASCII characters
    /// without spaces.
    pub fn import(value: &str) -> Result<Secret, ValidationError> {
        if value.len() < MIN_IMPORTED_SECRET_LEN {
            return Err(ValidationError::out_of_range(
                "value",
                format!("{} bytes long", value.len()),
                MIN_IMPORTED_SECRET_LEN,
                MAX_IMPORTED_SECRET_LEN,
            ));
        }
        if value.len() > MAX_IMPORTED_SECRET_LEN {
            return Err(ValidationError::too_long(
                "value",
                value.len(),
                MAX_IMPORTED_SECRET_LEN,
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::invalid(
                "value",
                "an API key may only contain printable ASCII characters without spaces",
            ));
        }
        Ok(Secret(value.to_owned()))
    }

    /// The secret's text, to show once to the caller who created it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret: what the state stores and looks keys up by.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }

    /// The part of the secret that may be shown in listings.
    pub fn public_prefix(&self) -> String {
        let n = if self.0.starts_with(GENERATED_PREFIX) {
            PUBLIC_PREFIX_LEN
        } else {
            IMPORTED_PUBLIC_PREFIX_LEN
        };
        self.0.chars().take(n).collect()
    }
}

/// The SHA-256 of a secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Hash presented bytes (a secret as a gateway received it).
    pub fn of(bytes: &[u8]) -> SecretHash {
        SecretHash(Sha256::digest(bytes).into())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but eight hex digits are enough to tell keys apart.
        write!(f, "SecretHash({}..)", &self.to_hex()[..8])
    }
}

/// Compare two byte strings in time that depends only on their lengths, for tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: generated secrets are well formed, distinct, and never shown by Debug.
    // Set-up: generate a few hundred secrets. Pass: prefix, length, alphabet, uniqueness,
    // and the Debug output holds no part of the random text.
    #[test]
    fn generated_secrets() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let s = Secret::generate().unwrap();
            assert!(s.expose().starts_with(GENERATED_PREFIX));
            assert_eq!(s.expose().len(), 48);
            assert!(s.expose()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(seen.insert(s.expose().to_owned()));
            let debug = format!("{s:?}");
            assert!(!debug.contains(&s.expose()[4..12]), "{debug}");
            assert_eq!(s.public_prefix().len(), PUBLIC_PREFIX_LEN);
        }
    }

    #[test]
    fn imported_secrets_are_checked() {
        assert_eq!(Secret::import("short").unwrap_err().field(), "value");
        assert_eq!(
            Secret::import(&"x".repeat(129)).unwrap_err().field(),
            "value"
        );
        assert!(Secret::import("has a space in it......").is_err());
        let s = Secret::import("abcdefghijklmnopqrstuvwxyz").unwrap();
        assert_eq!(s.public_prefix(), "abcd");
        assert_eq!(
            s.hash().to_hex(),
            "71c480df93d6ae2f1efad1447c66c9525e316218cf51fc8d9ed832f2daf18b73"
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
